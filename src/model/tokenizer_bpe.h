/*
 * Byte-level BPE (GGUF tokenizer.ggml.model = "gpt2"), private to the model
 * module: kvl_tokenizer (tokenizer.h) holds one of these and forwards its
 * calls here, so callers see one tokenizer interface for both models.
 */
#ifndef KVL_TOKENIZER_BPE_H
#define KVL_TOKENIZER_BPE_H

#include "model/gguf.h"

typedef struct kvl_bpe kvl_bpe;

/* From a GGUF file's tokenizer.ggml.* keys (model "gpt2"). On error *out is
 * untouched and nothing is allocated. What was tolerated (a special-token id
 * out of range) is written to note (note_cap bytes) when it is empty. */
kvl_status kvl_bpe_from_gguf(const kvl_gguf *g, kvl_bpe **out, char *note, size_t note_cap,
                             kvl_error *err);
void kvl_bpe_free(kvl_bpe *b);

int32_t kvl_bpe_n_vocab(const kvl_bpe *b);
int32_t kvl_bpe_bos(const kvl_bpe *b); /* -1: none */
int32_t kvl_bpe_eos(const kvl_bpe *b); /* -1: none */
bool kvl_bpe_add_bos(const kvl_bpe *b);
bool kvl_bpe_add_eos(const kvl_bpe *b);
bool kvl_bpe_is_eog(const kvl_bpe *b, int32_t id);
const char *kvl_bpe_pre(const kvl_bpe *b);

/* flags: KVL_TOKENIZE_* (tokenizer.h). Same contract as
 * kvl_tokenizer_tokenize. */
kvl_status kvl_bpe_encode(const kvl_bpe *b, const char *text, size_t len, unsigned flags,
                          int32_t *out, size_t cap, size_t *n_out, kvl_error *err);

/* The bytes token id stands for; control, unknown and unused tokens give
 * nothing unless special is true. Never fails (out of range gives ""). */
const char *kvl_bpe_piece(const kvl_bpe *b, int32_t id, bool special, size_t *len);

/* Raw vocabulary entry: the piece as stored in the file. */
kvl_status kvl_bpe_get(const kvl_bpe *b, int32_t id, const char **piece, size_t *len, float *score,
                       int32_t *type);

#endif
