/*
 * GGUF v3 writer, and the random-weight llama model generator built on it
 * (`kvllm mkmodel`).
 *
 * Writer: collect metadata and tensor infos in memory, then stream the
 * tensor data. Nothing but the header is held in memory, so a multi-GB
 * model is written row by row:
 *
 *     kvl_gguf_writer *w = NULL;
 *     kvl_gguf_writer_init(&w, &err);
 *     kvl_gguf_writer_add_str(w, "general.architecture", "llama", &err);
 *     kvl_gguf_writer_add_u32(w, "llama.block_count", 5, &err);
 *     int64_t ne[2] = {64, 512};                    // ne[0] fastest
 *     kvl_gguf_writer_add_tensor(w, "token_embd.weight", 2, ne, KVL_TYPE_F16, &err);
 *     if (kvl_gguf_writer_begin(w, "out.gguf", &err) != KVL_OK) ...
 *     for each tensor in the order added, for each row:
 *         kvl_gguf_writer_write(w, row_bytes, n_row_bytes, &err);
 *     kvl_gguf_writer_finish(w, &err);   // checks every byte arrived
 *     kvl_gguf_writer_free(w);
 *
 * Errors are sticky: after the first failed call every later call returns
 * the same status and message, so a run of add_* calls can be checked once
 * (at begin). The file is written to "<path>.tmp-<pid>" and renamed to path
 * by finish; on any failure, or when the writer is freed before finish, the
 * temporary file is removed and path is left as it was.
 *
 * File layout written (all little-endian):
 *
 *   "GGUF" u32 version=3 | u64 n_tensors | u64 n_kv
 *   n_kv x  [str key][u32 vtype][value]          str = u64 len + bytes
 *   n_tensors x [str name][u32 n_dims][u64 ne[n_dims]][u32 type][u64 offset]
 *   zero padding to `alignment`                  <- data section starts here
 *   tensor 0 bytes | pad | tensor 1 bytes | pad | ... | last tensor | pad
 *
 * offset is relative to the data section and a multiple of the alignment.
 */
#ifndef KVL_GGUF_WRITE_H
#define KVL_GGUF_WRITE_H

#include "model/gguf.h"

typedef struct kvl_gguf_writer kvl_gguf_writer;

kvl_status kvl_gguf_writer_init(kvl_gguf_writer **out, kvl_error *err);
/* Removes the temporary file unless finish succeeded. NULL does nothing. */
void kvl_gguf_writer_free(kvl_gguf_writer *w);

/* Data alignment (power of two, 1..KVL_GGUF_MAX_ALIGNMENT; default 32).
 * Written as general.alignment (UINT32). Only before the first tensor. */
kvl_status kvl_gguf_writer_set_alignment(kvl_gguf_writer *w, size_t alignment, kvl_error *err);

/* Metadata. Keys must be non-empty and unique ("general.alignment" is
 * reserved: use set_alignment). Strings are (ptr, len) where a len argument
 * exists and NUL-terminated otherwise. */
kvl_status kvl_gguf_writer_add_u8(kvl_gguf_writer *w, const char *key, uint8_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_i8(kvl_gguf_writer *w, const char *key, int8_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_u16(kvl_gguf_writer *w, const char *key, uint16_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_i16(kvl_gguf_writer *w, const char *key, int16_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_u32(kvl_gguf_writer *w, const char *key, uint32_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_i32(kvl_gguf_writer *w, const char *key, int32_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_u64(kvl_gguf_writer *w, const char *key, uint64_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_i64(kvl_gguf_writer *w, const char *key, int64_t v, kvl_error *err);
kvl_status kvl_gguf_writer_add_f32(kvl_gguf_writer *w, const char *key, float v, kvl_error *err);
kvl_status kvl_gguf_writer_add_f64(kvl_gguf_writer *w, const char *key, double v, kvl_error *err);
kvl_status kvl_gguf_writer_add_bool(kvl_gguf_writer *w, const char *key, bool v, kvl_error *err);
kvl_status kvl_gguf_writer_add_str(kvl_gguf_writer *w, const char *key, const char *v,
                                   kvl_error *err);
kvl_status kvl_gguf_writer_add_strn(kvl_gguf_writer *w, const char *key, const char *v,
                                    size_t len, kvl_error *err);
/* Array of n numbers of element type elem (any scalar vtype but STRING and
 * ARRAY; BOOL elements are one byte each), packed in host order, which must
 * be little-endian. */
kvl_status kvl_gguf_writer_add_arr(kvl_gguf_writer *w, const char *key, kvl_gguf_vtype elem,
                                   const void *data, uint64_t n, kvl_error *err);
/* Array of n strings; lens may be NULL (strs are then NUL-terminated). */
kvl_status kvl_gguf_writer_add_arr_str(kvl_gguf_writer *w, const char *key,
                                       const char *const *strs, const size_t *lens, uint64_t n,
                                       kvl_error *err);

/* Tensor info: n_dims 1..4, every ne >= 1, ne[0] a multiple of the type's
 * block size, names non-empty (< 64 bytes, as ggml requires) and unique.
 * The data must later arrive in the order the tensors were added. */
kvl_status kvl_gguf_writer_add_tensor(kvl_gguf_writer *w, const char *name, uint32_t n_dims,
                                      const int64_t *ne, kvl_type type, kvl_error *err);

/* Bytes the finished file will have (header, padding, data). Valid once
 * every tensor has been added; 0 after an error. */
uint64_t kvl_gguf_writer_file_size(const kvl_gguf_writer *w);
/* Bytes of the data section (tensors and their padding). */
uint64_t kvl_gguf_writer_data_size(const kvl_gguf_writer *w);

/* Create the temporary file and write the header and tensor infos. */
kvl_status kvl_gguf_writer_begin(kvl_gguf_writer *w, const char *path, kvl_error *err);
/* Append n bytes of tensor data. Chunks may span tensors; padding between
 * tensors is inserted automatically. More bytes than declared is an error. */
kvl_status kvl_gguf_writer_write(kvl_gguf_writer *w, const void *data, size_t n, kvl_error *err);
/* Bytes of tensor data (padding included) written so far. */
uint64_t kvl_gguf_writer_bytes_written(const kvl_gguf_writer *w);
/* Check every declared byte arrived, flush, close, rename into place. */
kvl_status kvl_gguf_writer_finish(kvl_gguf_writer *w, kvl_error *err);

/* ---------------------------------------------------------------------------
 * Random llama models.
 *
 * Weights are deterministic functions of (seed, tensor name, row): each row
 * gets its own splitmix64 stream, seeded from the seed, the FNV-1a hash of the
 * tensor name and the row index. Each value takes one 64-bit draw, whose four
 * 16-bit parts are summed (Irwin-Hall, n = 4: bell-shaped, mean 0, bounded at
 * +-2*sqrt(3) std) and scaled to std 0.02. Norm weights are 1.0.
 * Pure integer and double arithmetic: the same seed gives the same file.
 */

#define KVL_MKMODEL_STD 0.02

typedef struct kvl_mkmodel_spec {
    char name[64]; /* general.name */
    int64_t dim, ffn_dim, n_layers, n_heads, n_kv_heads, n_vocab, ctx_len;
    float rope_base, rms_eps;
    kvl_type type;  /* of the 2-D weights: F32, F16, BF16, Q8_0, Q4_0 */
    uint64_t seed;
    bool tied;      /* no output.weight (readers use token_embd) */
    size_t alignment; /* 0 = default 32 */
} kvl_mkmodel_spec;

/* Fill *out with a named preset: "stories260K", "tinyllama-1.1b",
 * "llama-3-8b", "llama-2-7b". False when the name is unknown. */
bool kvl_mkmodel_preset(const char *name, kvl_mkmodel_spec *out);
/* The preset names, comma-separated (for messages). */
const char *kvl_mkmodel_preset_names(void);

/* Validate a spec: KVL_E_INVALID naming the field (by its CLI flag), the
 * value and the limit: "--heads 7 does not divide --dim 64". */
kvl_status kvl_mkmodel_check(const kvl_mkmodel_spec *s, kvl_error *err);

/* The type a 2-D weight of ne0 columns gets: s->type, or F16 when ne0 is not
 * a multiple of the type's block (llama.cpp's quantize falls back the same
 * way; stories260K's ffn_down has 172 columns). */
kvl_type kvl_mkmodel_weight_type(const kvl_mkmodel_spec *s, int64_t ne0);

/* The float values of row `row` (n values) of tensor `name`, before
 * conversion to the stored type. Norm weights ("*_norm.weight") are 1.0. */
void kvl_mkmodel_row(const kvl_mkmodel_spec *s, const char *name, int64_t row, float *out,
                     int64_t n);

/* A GGUF "llama" vocabulary: pieces as GGUF stores them (U+2581 for space). */
typedef struct kvl_mkmodel_vocab {
    int32_t n;
    char **pieces;  /* (n) NUL-terminated */
    float *scores;  /* (n) */
    int32_t *types; /* (n) KVL_TOK_* */
} kvl_mkmodel_vocab;

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
