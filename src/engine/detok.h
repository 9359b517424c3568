/*
 * Streaming detokenization with stop strings. Each generated token's text
 * is appended to a pending buffer; the longest suffix of it that could
 * still grow into a stop string is held back, the rest is final and goes
 * out in the token's event. A stop string never reaches the output: the
 * text before it is released and the sample ends.
 *
 * Why holding back only a suffix is enough: a stop string that started in
 * text already released would have made that text a prefix of it, which
 * would have been held. The buffer never grows past the longest stop
 * string plus one token's piece, so nothing allocates.
 */
#ifndef KVL_DETOK_H
#define KVL_DETOK_H

#include "core/core.h"

#define KVL_DETOK_PIECE_MAX (KVL_EVENT_TEXT_MAX - KVL_MAX_STOP_LEN)

typedef struct kvl_detok {
    char pend[KVL_EVENT_TEXT_MAX];
    size_t n_pend;
} kvl_detok;

/* Append piece (at most KVL_DETOK_PIECE_MAX bytes); copy the text now
 * final into out (KVL_EVENT_TEXT_MAX bytes) and its length into *n_out.
 * Returns true when a stop string matched (out then ends before it). */
bool kvl_detok_push(kvl_detok *d, const char *piece, size_t n, const char *const *stops,
                    int32_t n_stops, char *out, size_t *n_out);
/* The held-back text, released at the end of the sample. */
void kvl_detok_flush(kvl_detok *d, char *out, size_t *n_out);

#endif
