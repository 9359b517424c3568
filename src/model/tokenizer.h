/*
 * The tokenizer interface, over two models chosen by GGUF's
 * tokenizer.ggml.model: "gpt2", byte-level BPE (tokenizer_bpe.c: Llama 3,
 * Qwen2/3, SmolLM; see there), and "llama" (and llama2.c files), described
 * here.
 *
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
 * bos_token_id,eos_token_id,unknown_token_id}; model "llama", or "gpt2" with
 * tokenizer.ggml.{merges,pre,add_bos_token,add_eos_token,eot_token_id,...}
 * (tokenizer_bpe.h). Another model is KVL_E_UNSUPPORTED naming it. */
kvl_status kvl_tokenizer_from_gguf(const kvl_gguf *g, kvl_tokenizer **out, kvl_error *err);
/* What the loaded file got wrong that was tolerated as llama.cpp tolerates
 * it (a special-token id out of range: the default id is kept); "" when
 * nothing. Callers print it as a warning. */
const char *kvl_tokenizer_note(const kvl_tokenizer *t);
/* Optional token-id key (for both models): *id is set when the key is
 * present and in [0, n_vocab); out of range keeps *id (llama.cpp keeps its
 * default) and says so in note when note is empty; a key that is not an
 * integer is KVL_E_FORMAT naming it. */
kvl_status kvl_tokenizer_opt_id(const kvl_gguf *g, const char *key, int32_t n_vocab, int32_t *id,
                                char *note, size_t note_cap, kvl_error *err);

/* From a llama2.c tokenizer image: int32 max_token_length, then vocab_size
 * records of [float32 score][int32 len][len bytes]. BOS=1, EOS=2, UNK=0;
 * pieces "<0xHH>" are byte tokens; ids 0..2 are control tokens. */
kvl_status kvl_tokenizer_from_llama2c(const uint8_t *buf, size_t size, int32_t vocab_size,
                                      kvl_tokenizer **out, kvl_error *err);
kvl_status kvl_tokenizer_load_llama2c(const char *path, int32_t vocab_size, kvl_tokenizer **out,
                                      kvl_error *err);
void kvl_tokenizer_free(kvl_tokenizer *t);

int32_t kvl_tokenizer_n_vocab(const kvl_tokenizer *t);
int32_t kvl_tokenizer_bos(const kvl_tokenizer *t); /* -1: none */
int32_t kvl_tokenizer_eos(const kvl_tokenizer *t); /* -1: none */
/* What KVL_TOKENIZE_ADD_SPECIAL adds: BOS first, EOS last
 * (tokenizer.ggml.add_bos_token / add_eos_token; llama2.c: BOS only). */
bool kvl_tokenizer_add_bos(const kvl_tokenizer *t);
bool kvl_tokenizer_add_eos(const kvl_tokenizer *t);
/* "llama": a space is put before the text (tokenizer.ggml.add_space_prefix,
 * default true) and dropped again when decoding right after BOS. Always
 * false for "gpt2". */
bool kvl_tokenizer_add_space_prefix(const kvl_tokenizer *t);
/* "llama" (SentencePiece, llama2.c) or "gpt2" (byte-level BPE). */
const char *kvl_tokenizer_model(const kvl_tokenizer *t);
/* End of generation: EOS, EOT/EOM ids from the file, and tokens named
 * <|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>, <|eom_id|>,
 * <|end_of_text|>, <EOT>. Generation stops on any of them. */
bool kvl_tokenizer_is_eog(const kvl_tokenizer *t, int32_t id);

/* Whether p[0..n) is the text of a token that ends generation whatever
 * the file says (as llama.cpp: <|eot_id|>, <|im_end|>, <|end|>,
 * <end_of_turn>, <|endoftext|>, </s>, <|eom_id|>, <|end_of_text|>, <EOT>,
 * _<EOT>). Both models make such a token a control token, as llama.cpp
 * does (Qwen2's vocabulary stores "</s>" as a normal token). */
bool kvl_tokenizer_eog_name(const char *p, size_t n);

/* The well-formed UTF-8 character at p[0..n) (n > 0): its length in bytes,
 * and its code point in *cp; 0 (and *cp unset) when p[0] does not start one
 * (Unicode Table 3-7: no overlong forms, surrogates or values past
 * U+10FFFF). Shared by both tokenizers. */
size_t kvl_utf8_decode(const uint8_t *p, size_t n, uint32_t *cp);

/* Flags of kvl_tokenizer_tokenize (llama.cpp's add_special, parse_special). */
enum {
    /* BOS (and EOS) as the vocabulary asks: always BOS for "llama";
     * tokenizer.ggml.add_bos_token / add_eos_token for "gpt2" */
    KVL_TOKENIZE_ADD_SPECIAL = 1u << 0,
    /* control tokens written in the text (<|im_start|>, </s>) become their
     * id; without it they are tokenized as text. User-defined (added) tokens
     * are always kept whole. ("llama": the dummy prefix goes before the
     * text and again after each special token, as in llama.cpp.) */
    KVL_TOKENIZE_PARSE_SPECIAL = 1u << 1,
};

/* Encode len bytes of text with KVL_TOKENIZE_* flags. Writes at most cap ids
 * to out and the count needed to *n_out; KVL_E_LIMIT when cap is too small
 * (out holds the first cap ids). len + 3 ids suffice, and 2 * len + 3
 * always (a "llama" vocabulary with one-byte special tokens: each one
 * brings a dummy-prefix space back). */
kvl_status kvl_tokenizer_tokenize(const kvl_tokenizer *t, const char *text, size_t len,
                                  unsigned flags, int32_t *out, size_t cap, size_t *n_out,
                                  kvl_error *err);

/* kvl_tokenizer_tokenize with KVL_TOKENIZE_ADD_SPECIAL when add_bos (for
 * "gpt2" that adds BOS only when the vocabulary asks for it).
 * Encode len bytes of text (any bytes; need not be valid UTF-8 or
 * NUL-terminated). Writes at most cap ids to out and the count needed to
 * *n_out; KVL_E_LIMIT (out untouched beyond cap) when cap is too small.
 * The same bound on the count. */
kvl_status kvl_tokenizer_encode(const kvl_tokenizer *t, const char *text, size_t len, bool add_bos,
                                int32_t *out, size_t cap, size_t *n_out, kvl_error *err);

/* The bytes token `tok` stands for when it follows `prev`: byte tokens give
 * their byte, control tokens give nothing, and ("llama" only) the space that
 * starts a piece right after BOS is dropped (the dummy prefix). "gpt2":
 * pieces are the bytes the byte-level text spells; end-of-generation tokens
 * give nothing. Out-of-range ids give nothing. The returned pointer stays
 * valid while t lives. */
const char *kvl_tokenizer_piece(const kvl_tokenizer *t, int32_t prev, int32_t tok, size_t *len);

/* The bytes of token tok on its own, as llama.cpp's token_to_piece gives
 * them with special = true (what llama-tokenize prints): normal and
 * user-defined tokens their text, byte tokens their byte, control and
 * unknown tokens their text (e.g. "<s>"), unused tokens nothing. No
 * dummy-prefix space is dropped. Out-of-range ids give nothing. The pointer
 * stays valid while t lives. */
const char *kvl_tokenizer_piece_special(const kvl_tokenizer *t, int32_t tok, size_t *len);

/* Raw vocabulary entry (for writers and tests): "llama": piece with real
 * spaces; "gpt2": the piece as stored (byte-level spelling). */
kvl_status kvl_tokenizer_get(const kvl_tokenizer *t, int32_t id, const char **piece, size_t *len,
                             float *score, int32_t *type);

#endif
