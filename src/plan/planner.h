/*
 * Memory planner: pure functions from a model's shape, the weight type, the
 * K and V cache formats, the block size and the device memory to capacity
 * (tokens, sequences, context), and the reverse (memory needed for N
 * sequences of C tokens, and what would make it fit).
 *
 * With the KV format table of core/dtype.h (bits and scale bytes), the
 * functions here are THE definition of how many bytes each cache format
 * takes, scales included; the KV pool, the codecs and the engine's start-up
 * report use them so that every number kvllm prints agrees.
 *
 * Contract of the primitive, kvl_plan_kv_block_bytes: one KV block holds
 * block_size token positions of K and V for EVERY layer and every KV head:
 *
 *   block_bytes = n_layers * n_kv_heads * (head_block(K) + head_block(V))
 *   head_block  = ceil(block_size * head_dim * elem_bits / 8)   data
 *               + scale_head_block                                per head per block
 *               + block_size * scale_token                        per token per head
 *               + head_dim   * scale_channel                      per channel per head per block
 *
 * A budget of B bytes gives floor(B / block_bytes) blocks and block_size
 * times as many token positions; a sequence of C tokens takes
 * ceil(C / block_size) blocks. A pool split per layer (L pools of budget B/L)
 * holds exactly as many blocks, since floor(floor(B/L)/x) == floor(B/(L*x)).
 *
 * Example (the engine's start-up report):
 *
 *     kvl_plan_capacity cap;
 *     if (kvl_plan_capacity_for(&shape, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16, kv_mem, &cap, &err))
 *         return err.status;
 *     printf("%zu blocks, %zu tokens\n", cap.n_blocks, cap.n_tokens);
 */
#ifndef KVL_PLANNER_H
#define KVL_PLANNER_H

#include "core/core.h"
#include "core/dtype.h"
#include "model/model.h"

#include <stdio.h>

/* KV cache formats (kvl_kv_format, their bits and scale bytes, the default
 * block size) are in core/dtype.h. */

/* ---- model shapes ------------------------------------------------------ */

/* Shapes are kvl_model_shape (model/model.h); the named ones and the
 * devices are in plan/catalog.h. */

/* Check a shape's fields are positive and within core/dtype.h's limits. */
kvl_status kvl_plan_shape_validate(const kvl_model_shape *s, kvl_error *err);
/* Read a llama-family shape from a parsed GGUF (llama.* keys; vocab from
 * tokenizer.ggml.tokens, else token_embd.weight) and the sum of its tensor
 * bytes. name comes from general.name when present, else stays as the
 * caller set it in *out (e.g. the file name). *out is written only on success. */
kvl_status kvl_plan_shape_from_gguf(const kvl_gguf *g, kvl_model_shape *out, size_t *weight_bytes,
                                    kvl_error *err);

/* ---- weights ----------------------------------------------------------- */

/* Parameters of the shape: embedding, output (unless tied), per layer q k v o
 * (+ q/k/v bias), gate/up/down, two norms, and the final norm. */
kvl_status kvl_plan_n_params(const kvl_model_shape *s, size_t *out, kvl_error *err);
/* Bytes of all weights stored as wtype (F32, F16, BF16, Q8_0 or Q4_0).
 * Matrices take wtype; norm vectors and biases stay F32 (as GGUF stores
 * them). Q8_0 is 34 B and Q4_0 18 B per 32 weights, rounded up to whole
 * blocks per row. */
kvl_status kvl_plan_weight_bytes(const kvl_model_shape *s, kvl_type wtype, size_t *out,
                                 kvl_error *err);
/* The same for llama.cpp's _K_M mix of wtype (Q4_K_M, Q5_K_M: wtype Q4_K or
 * Q5_K): every matrix gets the type mkmodel writes for it
 * (kvl_mkmodel_tensor_type: Q6_K for the classifier and for attn_v /
 * ffn_down of some layers, F16 where a row is not whole 256-blocks), so a
 * plan sizes exactly the file mkmodel makes. Without k_m:
 * kvl_plan_weight_bytes. KVL_E_INVALID for a mix of another type or of OPT. */
kvl_status kvl_plan_weight_bytes_mix(const kvl_model_shape *s, kvl_type wtype, bool k_m,
                                     size_t *out, kvl_error *err);
/* A weight-type name as --weights and mkmodel --type take it: one of
 * kvl_type_names(), or q4_k_m / q5_k_m (*k_m set). false when neither. */
bool kvl_plan_parse_weights(const char *s, kvl_type *t, bool *k_m);
#define KVL_PLAN_WEIGHT_NAMES                                                                      \
    "f32, f16, bf16, q8_0, q4_0, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, q4_k_m, q5_k_m"

/* ---- KV bytes and capacity --------------------------------------------- */

/* Bytes of one (head, block) of format f in role r (formula above). */
kvl_status kvl_plan_kv_head_block_bytes(kvl_kv_format f, kvl_kv_role r, int64_t head_dim,
                                        int block_size, size_t *out, kvl_error *err);
/* THE primitive: bytes of one block (block_size tokens, all layers, K and V). */
kvl_status kvl_plan_kv_block_bytes(const kvl_model_shape *s, kvl_kv_format k, kvl_kv_format v,
                                   int block_size, size_t *out, kvl_error *err);
/* block_bytes / block_size (exact for f32/f16/bf16; scales per block make the
 * quantized formats fractional). */
kvl_status kvl_plan_kv_token_bytes(const kvl_model_shape *s, kvl_kv_format k, kvl_kv_format v,
                                   int block_size, double *out, kvl_error *err);
/* ceil(n_tokens / block_size); block_size >= 1. */
size_t kvl_plan_blocks_for_tokens(size_t n_tokens, int block_size);

typedef struct kvl_plan_capacity {
    int block_size;
    size_t block_bytes; /* kvl_plan_kv_block_bytes */
    size_t kv_budget;   /* bytes given */
    size_t n_blocks;    /* floor(kv_budget / block_bytes) */
    size_t n_tokens;    /* n_blocks * block_size */
} kvl_plan_capacity;

/* Blocks and tokens a KV budget holds. What the KV pool allocates for the
 * same budget and block size must equal n_blocks. */
kvl_status kvl_plan_capacity_for(const kvl_model_shape *s, kvl_kv_format k, kvl_kv_format v,
                                 int block_size, size_t kv_budget, kvl_plan_capacity *out,
                                 kvl_error *err);
/* Sequences of `context` tokens that fit at once: n_blocks / ceil(context/B).
 * context 0 counts as 1 token. */
size_t kvl_plan_max_seqs(const kvl_plan_capacity *c, size_t context);
/* Longest context each of n_seqs sequences can reach at once:
 * floor(n_blocks / n_seqs) * block_size; 0 when n_seqs is 0. */
size_t kvl_plan_max_context(const kvl_plan_capacity *c, size_t n_seqs);
/* KV bytes of n_seqs sequences of context tokens: n_seqs * ceil(C/B) * block_bytes. */
kvl_status kvl_plan_kv_bytes_for(size_t block_bytes, int block_size, size_t n_seqs, size_t context,
                                 size_t *out, kvl_error *err);

/* ---- a whole plan ------------------------------------------------------ */

#define KVL_PLAN_MAX_DEVICES 64

typedef struct kvl_plan_request {
    kvl_model_shape shape;
    size_t weight_bytes; /* kvl_plan_weight_bytes or the file's */
    kvl_kv_format k_fmt, v_fmt;
    int block_size;
    size_t dev_bytes[KVL_PLAN_MAX_DEVICES]; /* memory of each device */
    int n_devices;
    /* Reserve for activations and runtime, per device: reserve_frac of its
     * memory (floored to a byte) plus reserve_bytes. */
    double reserve_frac;
    size_t reserve_bytes;
} kvl_plan_request;

typedef struct kvl_plan_result {
    size_t mem_total;     /* sum of dev_bytes */
    size_t reserve_total; /* sum of per-device reserves */
    size_t usable;        /* mem_total - reserve_total */
    bool weights_fit;     /* weight_bytes <= usable */
    size_t kv_budget;     /* usable - weight_bytes, or 0 */
    kvl_plan_capacity cap;
} kvl_plan_result;

/* Reserve of one device of `bytes` under r's reserve settings. */
size_t kvl_plan_device_reserve(const kvl_plan_request *r, size_t bytes);
/* Check r (shape, block size, formats, devices, reserve below each device). */
kvl_status kvl_plan_request_validate(const kvl_plan_request *r, kvl_error *err);
kvl_status kvl_plan_compute(const kvl_plan_request *r, kvl_plan_result *out, kvl_error *err);

/* The reverse question: n_seqs sequences of context tokens. */
typedef struct kvl_plan_need {
    size_t n_seqs, context;
    size_t kv_bytes;    /* kvl_plan_kv_bytes_for */
    size_t total_bytes; /* weights + kv + reserve of the given devices */
    bool fits;          /* weights + kv <= usable */
    size_t short_by;    /* weights + kv - usable when it does not fit */
    size_t max_seqs;    /* at this context with the given settings */
    size_t max_context; /* for this many sequences with the given settings */
    int devices_needed; /* of the smallest given device: ceil((W+KV)/(dev - reserve));
                           -1 when that is over KVL_PLAN_MAX_DEVICES */
} kvl_plan_need;

kvl_status kvl_plan_need_for(const kvl_plan_request *r, size_t n_seqs, size_t context,
                             kvl_plan_need *out, kvl_error *err);

/* The KV format pairs the planner suggests, least aggressive first:
 * f16/f16, int8/int8, fp8_e4m3/fp8_e4m3, int4/int8, int4/int4. */
#define KVL_PLAN_N_LADDER 5
void kvl_plan_format_ladder(int i, kvl_kv_format *k, kvl_kv_format *v);
/* The first pair of the ladder, taking fewer bytes per block than r's own
 * formats, with which n_seqs x context fits; false when none does. */
bool kvl_plan_suggest_format(const kvl_plan_request *r, size_t n_seqs, size_t context,
                             kvl_kv_format *k, kvl_kv_format *v);

/* ---- formatting (shared by the text, JSON and SVG outputs) ------------- */

/* "1,234,567" */
const char *kvl_plan_fmt_int(size_t v, char *buf, size_t n);
/* "14.96 GiB" (two decimals, bytes / 2^30) */
const char *kvl_plan_fmt_gib(size_t v, char *buf, size_t n);

/* ---- SVG --------------------------------------------------------------- */

#define KVL_PLAN_SVG_MAX_BATCH 8

typedef struct kvl_plan_svg {
    const kvl_plan_request *req;
    const kvl_plan_result *res;
    const char *title;
    size_t batch[KVL_PLAN_SVG_MAX_BATCH]; /* batch sizes drawn as lines */
    int n_batch;
    size_t ctx_max;           /* x axis: 0 .. ctx_max tokens */
    size_t kv_bar;            /* KV bytes shown in the stacked bar */
    const char *kv_bar_label; /* "KV 64 x 8192" */
} kvl_plan_svg;

/* Write the chart as a standalone SVG document. Every number in its labels is
 * formatted by kvl_plan_fmt_* so it reads as in the text output. */
kvl_status kvl_plan_svg_write(FILE *f, const kvl_plan_svg *s, kvl_error *err);

#endif
