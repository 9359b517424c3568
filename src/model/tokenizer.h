/*
 * SentencePiece-style BPE tokenizer with byte fallback (the llama / llama2.c
 * scheme): the text is split into UTF-8 characters (each invalid byte on its
 * own), each character becomes its vocabulary token or, failing that, one
 * byte token per byte (<0xHH>); then the adjacent pair whose merged piece has
 * the highest score is merged, repeatedly, until no pair merges.
 * A leading space is added to non-empty text (the "dummy prefix").
 *
 * Pieces are stored with real spaces (GGUF's U+2581 is converted at load).
 * Loaded vocabularies are untrusted: lengths, ids and array sizes are checked.
 */
#ifndef KVL_TOKENIZER_H
#define KVL_TOKENIZER_H

#include "model/gguf.h"

typedef struct kvl_tokenizer kvl_tokenizer;

/* Token types (GGUF tokenizer.ggml.token_type values). */
enum {
    KVL_TOK_NORMAL = 1,
    KVL_TOK_UNKNOWN = 2,
    KVL_TOK_CONTROL = 3,
    KVL_TOK_USER_DEFINED = 4,
    KVL_TOK_UNUSED = 5,
    KVL_TOK_BYTE = 6,
};

/* From GGUF keys tokenizer.ggml.{model,tokens,scores,token_type,
 * bos_token_id,eos_token_id,unknown_token_id}; model must be "llama". */
kvl_status kvl_tokenizer_from_gguf(const kvl_gguf *g, kvl_tokenizer **out, kvl_error *err);
/* From a llama2.c tokenizer image: int32 max_token_length, then vocab_size
 * records of [float32 score][int32 len][len bytes]. BOS=1, EOS=2, UNK=0;
 * pieces "<0xHH>" are byte tokens; ids 0..2 are control tokens. */
kvl_status kvl_tokenizer_from_llama2c(const uint8_t *buf, size_t size, int32_t vocab_size,
                                      kvl_tokenizer **out, kvl_error *err);
kvl_status kvl_tokenizer_load_llama2c(const char *path, int32_t vocab_size,
                                      kvl_tokenizer **out, kvl_error *err);
void kvl_tokenizer_free(kvl_tokenizer *t);

int32_t kvl_tokenizer_n_vocab(const kvl_tokenizer *t);
int32_t kvl_tokenizer_bos(const kvl_tokenizer *t);
int32_t kvl_tokenizer_eos(const kvl_tokenizer *t);

/* Encode len bytes of text (any bytes; need not be valid UTF-8 or
 * NUL-terminated). Writes at most cap ids to out and the count needed to
 * *n_out; KVL_E_LIMIT (out untouched beyond cap) when cap is too small.
 * len + 3 ids always suffice. */
kvl_status kvl_tokenizer_encode(const kvl_tokenizer *t, const char *text, size_t len,
                                bool add_bos, int32_t *out, size_t cap, size_t *n_out,
                                kvl_error *err);

/* The bytes token `tok` stands for when it follows `prev`: byte tokens give
 * their byte, control tokens give nothing, and the space that starts a piece
 * right after BOS is dropped (the dummy prefix). Out-of-range ids give
 * nothing. The returned pointer stays valid while t lives. */
const char *kvl_tokenizer_piece(const kvl_tokenizer *t, int32_t prev, int32_t tok, size_t *len);

/* Raw vocabulary entry (for writers and tests): piece with real spaces. */
kvl_status kvl_tokenizer_get(const kvl_tokenizer *t, int32_t id, const char **piece,
                             size_t *len, float *score, int32_t *type);

#endif
