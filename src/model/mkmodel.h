/*
 * Random llama models (`kvllm mkmodel`), written with the GGUF writer.
 *
 * Weights are deterministic functions of (seed, tensor name, row): each row
 * gets its own splitmix64 stream, seeded from the seed, the FNV-1a hash of the
 * tensor name and the row index. Each value takes one 64-bit draw, whose four
 * 16-bit parts are summed (Irwin-Hall, n = 4: bell-shaped, mean 0, bounded at
 * +-2*sqrt(3) std) and scaled to std 0.02. Norm weights are 1.0.
 * Pure integer and double arithmetic: the same seed gives the same file.
 */
#ifndef KVL_MKMODEL_H
#define KVL_MKMODEL_H

#include "model/gguf_write.h"
#include "model/model.h"

#define KVL_MKMODEL_STD 0.02

/* What to write. shape.hp.arch is the architecture written (llama, qwen2
 * with its q/k/v biases, which shape.qkv_bias must say, or qwen3 with its
 * per-head q/k norms); shape.arch must be llama (the planner's family).
 * head_dim is dim / n_heads, except for qwen3, where a non-zero
 * shape.hp.head_dim is used (and written as key_length / value_length);
 * RoPE turns the whole head, so shape.hp.rope_dim is not read. shape.name
 * is general.name; shape.tied_embd leaves out output.weight;
 * shape.rope_freqs (llama) writes Llama 3.1's rope_freqs.weight (factor 32,
 * low 1, high 4, original context 8192). Named presets come from the
 * catalogue (plan/catalog.h: kvl_catalog_mkmodel_spec). */
typedef struct kvl_mkmodel_spec {
    kvl_model_shape shape;
    kvl_type type; /* of the 2-D weights: a computed type (core/dtype.h) */
    uint64_t seed;
    size_t alignment; /* 0 = default 32 */
    bool k_m;         /* llama.cpp's _K_M mix of type (Q4_K_M, Q5_K_M: type Q4_K
                       or Q5_K): Q6_K for the classifier and for attn_v /
                       ffn_down of some layers */
} kvl_mkmodel_spec;

/* Validate a spec: KVL_E_INVALID naming the field (by its CLI flag), the
 * value and the limit: "--heads 7 does not divide --dim 64". */
kvl_status kvl_mkmodel_check(const kvl_mkmodel_spec *s, kvl_error *err);

/* The type a 2-D weight of ne0 columns gets: s->type, or F16 when ne0 is not
 * a multiple of the type's block (llama.cpp's quantize falls back the same
 * way; stories260K's ffn_down has 172 columns). */
kvl_type kvl_mkmodel_weight_type(const kvl_mkmodel_spec *s, int64_t ne0);

/* Roles of the 2-D weights that a mix (q4_k_m, q5_k_m) tells apart. */
typedef enum kvl_mkmodel_role {
    KVL_MK_TOKEN_EMBD,
    KVL_MK_OUTPUT,
    KVL_MK_ATTN_V,
    KVL_MK_FFN_DOWN,
    KVL_MK_OTHER,
} kvl_mkmodel_role;

/* The type of the 2-D weight of `role` in layer `layer` with ne0 columns.
 * Without a mix: kvl_mkmodel_weight_type. With k_m, llama.cpp's rule
 * (llama-quant.cpp, llama_tensor_get_type, LLAMA_FTYPE_MOSTLY_Q4_K_M and
 * _Q5_K_M): Q6_K for output.weight (token_embd when tied), for attn_v and
 * ffn_down of layer i of n when i < n/8, i >= 7n/8 or (i - n/8) % 3 == 2,
 * s->type (Q4_K / Q5_K) for the rest; F16 where ne0 is not a multiple of
 * 256 (llama.cpp falls back to Q5_0 / Q5_1 / Q8_0 there, which kvllm does
 * not write). */
kvl_type kvl_mkmodel_tensor_type(const kvl_mkmodel_spec *s, kvl_mkmodel_role role, int64_t layer,
                                 int64_t ne0);

/* The float values of row `row` (n values) of tensor `name`, before
 * conversion to the stored type. Norm weights ("*_norm.weight") are 1.0,
 * except the per-head attn_q_norm / attn_k_norm, 1.0 plus ten times the
 * random values (so a test can tell them apart); rope_freqs.weight holds
 * Llama 3.1's factors for the spec's rope base and head_dim. */
void kvl_mkmodel_row(const kvl_mkmodel_spec *s, const char *name, int64_t row, float *out,
                     int64_t n);

/* A GGUF "llama" vocabulary: pieces as GGUF stores them (U+2581 for space);
 * or (src set, pieces NULL) the tokenizer.* keys of another GGUF, copied. */
typedef struct kvl_mkmodel_vocab {
    int32_t n;
    char **pieces;  /* (n) NUL-terminated */
    float *scores;  /* (n) */
    int32_t *types; /* (n) KVL_TOK_* */
    kvl_gguf *src;  /* owned: the GGUF whose tokenizer.* keys are written */
} kvl_mkmodel_vocab;

/* The vocabulary of a GGUF file (a model or a vocabulary-only file such as
 * llama.cpp's ggml-vocab-*.gguf; any tokenizer kvllm loads: "llama" or
 * "gpt2"): its tokenizer.* keys are written as they are
 * (mkmodel_vocab.c). out->n is its token count. On error nothing is held. */
kvl_status kvl_mkmodel_vocab_from_gguf(const char *path, kvl_mkmodel_vocab *out, kvl_error *err);
/* Write the tokenizer.* keys of v->src (v from kvl_mkmodel_vocab_from_gguf). */
kvl_status kvl_mkmodel_vocab_write_keys(kvl_gguf_writer *w, const kvl_mkmodel_vocab *v,
                                        kvl_error *err);

/* From a llama2.c tokenizer file. n_vocab = 0: as many records as the file
 * holds; otherwise the file must hold exactly n_vocab records. */
kvl_status kvl_mkmodel_vocab_load(const char *path, int32_t n_vocab, kvl_mkmodel_vocab *out,
                                  kvl_error *err);
/* Count the records of a llama2.c tokenizer file (KVL_E_FORMAT if it is not
 * one). */
kvl_status kvl_mkmodel_vocab_count(const char *path, int32_t *n, kvl_error *err);
/* Synthesize n (>= 259) entries: <unk>, <s>, </s>, <0x00>..<0xFF>, then
 * "▁", a..z, ▁a..▁z, aa..zz, ▁aa.. with decreasing scores. */
kvl_status kvl_mkmodel_vocab_synth(int32_t n, kvl_mkmodel_vocab *out, kvl_error *err);
void kvl_mkmodel_vocab_free(kvl_mkmodel_vocab *v);

/* Progress callback: bytes of tensor data written of total. */
typedef void (*kvl_mkmodel_progress_fn)(void *ud, uint64_t done, uint64_t total);

typedef struct kvl_mkmodel_stats {
    uint64_t file_bytes;
    uint64_t n_params;
    uint64_t n_tensors;
} kvl_mkmodel_stats;

/* Write the model to path. v->n must equal s->n_vocab. progress may be NULL;
 * stats may be NULL. On failure nothing is left at path (an existing file
 * there is kept). */
kvl_status kvl_mkmodel_write(const kvl_mkmodel_spec *s, const kvl_mkmodel_vocab *v,
                             const char *path, kvl_mkmodel_progress_fn progress, void *ud,
                             kvl_mkmodel_stats *stats, kvl_error *err);

/* llama.cpp's general.file_type for a weight type (ALL_F32 = 0,
 * MOSTLY_F16 = 1, MOSTLY_Q4_0 = 2, MOSTLY_Q8_0 = 7, MOSTLY_BF16 = 32). */
uint32_t kvl_mkmodel_file_type(kvl_type t);

#endif
