/*
 * dtype: the element types kvllm knows, in one place.
 *
 *   - weight types (ggml type ids, as GGUF stores them) and their block
 *     layouts; the five kvllm computes with have a CLI name;
 *   - KV cache formats (bits per element, scale bytes per role, the block
 *     size used when none is given);
 *   - the hard size limits on model shapes and KV blocks.
 *
 * Every module from kernels up takes these from here, so kernels never
 * reach up to model/ or plan/ for a type or a limit. Each kind has one
 * name function and one parse function:
 *
 *     kvl_type t;
 *     if (kvl_type_parse("q8_0", &t))      // t == KVL_TYPE_Q8_0
 *         puts(kvl_type_name(t));          // "q8_0"
 *     kvl_kv_format k;
 *     kvl_kv_format_parse("int4", &k);
 *     int bs = kvl_kv_block_size(0, k, k); // 32: the default for int4 K
 *
 * Everything here is pure: tables and lookups, no state, no allocation.
 */
#ifndef KVL_DTYPE_H
#define KVL_DTYPE_H

#include "core/core.h"

/* ---- size limits ------------------------------------------------------- */

/* Hard limits on hyperparameters from files and flags (far above any real
 * model). */
#define KVL_MAX_LAYERS 1024
#define KVL_MAX_HEADS 1024
#define KVL_MAX_HEAD_DIM 1024
#define KVL_MAX_DIM (1 << 17)
#define KVL_MAX_VOCAB (1 << 22)
#define KVL_MAX_CTX (1 << 24)
/* Token positions in one KV block. */
#define KVL_MAX_BLOCK_SIZE 4096

/* ---- weight types ------------------------------------------------------ */

/* Tensor element types (ggml type ids). Only those kvllm computes with are
 * named; kvl_gguf_parse accepts any id < KVL_TYPE_COUNT whose block layout
 * kvl_type_info knows and rejects the rest. */
typedef enum kvl_type {
    KVL_TYPE_F32 = 0,
    KVL_TYPE_F16 = 1,
    KVL_TYPE_Q4_0 = 2,
    KVL_TYPE_Q5_0 = 6,
    KVL_TYPE_Q5_1 = 7,
    KVL_TYPE_Q8_0 = 8,
    KVL_TYPE_Q2_K = 10,
    KVL_TYPE_Q3_K = 11,
    KVL_TYPE_Q4_K = 12,
    KVL_TYPE_Q5_K = 13,
    KVL_TYPE_Q6_K = 14,
    KVL_TYPE_BF16 = 30,
    KVL_TYPE_COUNT = 40
} kvl_type;

/* Block layout of a ggml type id: blck elements take type_size bytes; name
 * as ggml spells it ("F32", "Q8_0", "IQ2_XXS"; static). Each out pointer may
 * be NULL. Returns false for unknown or removed ids. */
bool kvl_type_info(uint32_t type, size_t *blck, size_t *type_size, const char **name);
/* True for the types kvllm computes with: F32, F16, BF16, Q8_0, Q4_0, Q5_0,
 * Q5_1 and the K-quants Q2_K..Q6_K. */
bool kvl_type_computed(kvl_type t);
/* The CLI name of a computed type ("f32", "q8_0"); "?" for any other id. */
const char *kvl_type_name(kvl_type t);
/* Parse a computed type's name, case-insensitive, plus "fp32" and "fp16".
 * False (and *out untouched) for anything else. */
bool kvl_type_parse(const char *s, kvl_type *out);
/* "f32, f16, bf16, q8_0, q4_0, ..." (static; for messages and --help). */
const char *kvl_type_names(void);

/* Q8_0: 32 values = fp16 scale d + 32 int8; x = d * q. */
#define KVL_QK8_0 32
typedef struct {
    uint16_t d;
    int8_t qs[KVL_QK8_0];
} kvl_block_q8_0;
/* Q4_0: 32 values = fp16 scale d + 16 bytes; byte j holds element j in its
 * low nibble and element j+16 in its high nibble; x = d * (nibble - 8). */
#define KVL_QK4_0 32
typedef struct {
    uint16_t d;
    uint8_t qs[KVL_QK4_0 / 2];
} kvl_block_q4_0;

/* ---- KV cache formats -------------------------------------------------- */

typedef enum kvl_kv_format {
    KVL_KV_FMT_F32 = 0,
    KVL_KV_FMT_F16,
    KVL_KV_FMT_BF16,
    KVL_KV_FMT_FP8_E4M3, /* 1 B/elem + one f32 scale per (head, block) */
    KVL_KV_FMT_FP8_E5M2, /* 1 B/elem + one f32 scale per (head, block) */
    KVL_KV_FMT_INT8,     /* 1 B/elem + one bf16 scale per (token, head), symmetric */
    KVL_KV_FMT_INT4,     /* 0.5 B/elem, KIVI: K bf16 scale+zero per (channel, head, block),
                            V bf16 scale+zero per (token, head) */
    KVL_KV_FMT_COUNT
} kvl_kv_format;

typedef enum kvl_kv_role { KVL_KV_ROLE_K = 0, KVL_KV_ROLE_V = 1 } kvl_kv_role;

/* Scale bytes a format adds, for one role (K or V). */
typedef struct kvl_kv_overhead {
    uint32_t head_block; /* bytes per (head, block) */
    uint32_t token;      /* bytes per (token, head) */
    uint32_t channel;    /* bytes per (channel, head, block) */
} kvl_kv_overhead;

typedef struct kvl_kv_format_info {
    kvl_kv_format fmt;
    const char *name;       /* canonical CLI name: "f16", "fp8_e4m3", "int4" */
    uint32_t elem_bits;     /* 32, 16, 8 or 4 */
    kvl_kv_overhead ovh[2]; /* [KVL_KV_ROLE_K], [KVL_KV_ROLE_V] */
    const char *scales;     /* one line describing the scales, for docs/--help */
} kvl_kv_format_info;

/* The row for f; NULL when f is out of range. */
const kvl_kv_format_info *kvl_kv_format_get(kvl_kv_format f);
/* The canonical name of f; "?" when f is out of range. */
const char *kvl_kv_format_name(kvl_kv_format f);
/* Parse a format name (canonical names, plus "fp32", "fp16", "e4m3", "fp8"
 * = fp8_e4m3, "e5m2", "q8"/"q8_0" = int8, "q4" = int4; case-insensitive).
 * False (and *out untouched) for anything else. */
bool kvl_kv_format_parse(const char *s, kvl_kv_format *out);
/* "f32, f16, bf16, fp8_e4m3, fp8_e5m2, int8, int4" (static string). */
const char *kvl_kv_format_names(void);

/* THE block-size rule: `requested` when it is not 0, else the default for
 * the pair: 32 when K is int4 (its per-channel scale and zero are per
 * block, so small blocks pay them often: at head_dim 64 int4/int4 saves
 * 3.51x against f16 at block 32, 3.66x at block 64, 3.20x at block 16; 32
 * is the smallest block past 3.5x, and smaller key groups keep more
 * precision), else 16. Does not check `requested` against
 * KVL_MAX_BLOCK_SIZE; the stores and the planner do, with a message. */
int kvl_kv_block_size(int requested, kvl_kv_format k, kvl_kv_format v);

#endif
