/*
 * Attention over the KV stores (module-private): the one f32 routine shared
 * by every f32 store, and the fused any-format routine (kvl_kv_attend_q).
 *
 * The contiguous cache and the paged cache both describe their K/V memory as
 * a kvl_kv_view: a sequence of blocks, each holding block_size positions of
 * every KV head, found through a table of physical block numbers. The
 * contiguous cache is one block of max_ctx positions (table {0}); the paged
 * cache passes its block table. Because both run this same compiled
 * function, with the same per-position arithmetic in the same order, their
 * outputs are bit-identical (DESIGN.md invariant 3).
 */
#ifndef KVL_KV_ATTN_H
#define KVL_KV_ATTN_H

#include "core/core.h"
#include "kernels/kv_kern.h"
#include "model/model.h"

/* Largest block size and sequence count the KV stores accept. */
#define KVL_KV_MAX_BLOCK_SIZE KVL_MAX_BLOCK_SIZE /* core/dtype.h */
#define KVL_KV_MAX_SEQS 65536

/*
 * Check the shape fields a KV store depends on (n_layers, n_heads,
 * n_kv_heads, head_dim) against the model limits and each other; the
 * message names the field, its value and the limit. who prefixes it.
 */
kvl_status kvl_kv_check_shape(const kvl_hparams *hp, const char *who, kvl_error *err);

/*
 * Element d of KV head h at logical position p lives at
 *
 *     k[blocks[p / block_size] * block_stride + h * head_stride
 *       + (p % block_size) * head_dim + d]
 *
 * and likewise in v. So the head_dim floats of one position are contiguous,
 * and so are the block_size rows of one head within one block.
 */
/*
 * Rotary frequencies of a model, for attention over a table whose blocks
 * were moved by eviction (block_table.h: shift). Keys stay as they were
 * stored (rotated at the position they were written to); the query is
 * rotated further by a block's shift before it meets that block's keys,
 * which gives the scores of keys rotated at their place in the table
 * (rotary scores depend only on the difference of the two angles).
 */
typedef struct kvl_kv_rope {
    const float *freq; /* (rot_dim / 2) angle per position of each pair */
    int32_t rot_dim;   /* rotated dims per head, even, <= head_dim */
    bool neox;         /* pairs (i, i + rot_dim/2), else (2i, 2i+1) */
    /* (n_cs, rot_dim / 2, 2) cos and sin of shift k * cs_step for k < n_cs
     * (a shift is a multiple of the block size and at most the context),
     * so attention computes no sine; NULL: computed from freq */
    const float *cs;
    int32_t cs_step, n_cs;
} kvl_kv_rope;

/* Fill freq (rot_dim/2 floats) from the hyper-parameters as the forward
 * pass does (base^(-2i/rot_dim), divided by the linear rope scale);
 * rope_freqs divisors are applied by kvl_kv_paged_rope_divide. */
void kvl_kv_rope_freqs(const kvl_hparams *hp, float *freq);

/* Attention mass is kept per logical block as fixed point: mass * 2^28
 * (a probability of 1 adds 2^28; 2^64 is reached after 2^36 units, e.g.
 * 97 million tokens of 22 layers x 32 heads all on one block). */
#define KVL_KV_MASS_ONE ((double)(1u << 28))

typedef struct kvl_kv_view {
    const float *k;         /* layer base of K */
    const float *v;         /* layer base of V */
    const uint32_t *blocks; /* (ceil(n_ctx / block_size)) physical block of each logical block */
    int64_t block_stride;   /* floats from one physical block to the next */
    int64_t head_stride;    /* floats from one KV head to the next within a block */
    int32_t block_size;     /* positions per block */
    int32_t n_heads;        /* query heads */
    int32_t n_kv_heads;     /* divides n_heads */
    int32_t head_dim;
    const int32_t *shift;    /* (blocks) or NULL: rotation shift of each logical block */
    const kvl_kv_rope *rope; /* needed when shift is not NULL */
    uint64_t *mass;          /* (blocks) or NULL: attention mass accumulator (kvl_kvq_view) */
    float *mass_tmp;         /* n_ctx floats of scratch when mass is not NULL */
} kvl_kv_view;

/*
 * For query heads [h0, h1): out[h] = sum_p softmax_p(q[h].K[p] * scale) V[p]
 * over p in [0, n_ctx). q and out are (n_heads, head_dim). The softmax is
 * computed online over tiles of 64 positions, each K/V row read once for
 * the whole GQA group, so scratch (the seam's per-thread buffer) is not
 * needed here. Reads only; safe to call concurrently. n_ctx <= 0 writes
 * zeros.
 */
void kvl_kv_attend_f32(const kvl_kv_view *view, int32_t n_ctx, const float *q, float *out,
                       int32_t h0, int32_t h1, float scale, float *scratch);

/*
 * Any storage format (kv_kern.h codecs), K and V each their own. Chunk of
 * (KV head h, logical block lb) of K:
 *
 *     k + h * k_head_stride + blocks[lb] * k_chunk        (bytes)
 *
 * except that logical block res_block, when a role has a residual (k_res /
 * v_res not NULL), is read from the residual instead, as f32 rows:
 *
 *     k_res + (h * block_size + slot) * head_dim           (floats)
 *
 * (the newest, partly filled block of a sequence whose format takes its
 * scale from a whole block; kv_paged.c).
 */
typedef struct kvl_kvq_view {
    const uint8_t *k, *v;                /* layer bases of the K and V chunk arrays */
    size_t k_head_stride, v_head_stride; /* bytes from one KV head to the next */
    size_t k_chunk, v_chunk;             /* bytes of one chunk (one block of one head) */
    kvl_kvq_codec k_codec, v_codec;
    const uint32_t *blocks; /* (ceil(n_ctx / block_size)) */
    int32_t block_size, n_heads, n_kv_heads, head_dim;
    int32_t res_block;          /* logical block held in the residual; -1: none */
    const float *k_res, *v_res; /* (n_kv_heads, block_size, head_dim) or NULL */
    const int32_t *shift;       /* (blocks) or NULL; see kvl_kv_view */
    const kvl_kv_rope *rope;
    /* Attention mass (eviction by h2o / snapkv, docs/eviction.md): when not
     * NULL, each query head's softmax weights over the positions of logical
     * block b, summed over the heads [h0, h1), are added to mass[b] as fixed
     * point (KVL_KV_MASS_ONE per unit: integer adds, so the sum is the same
     * whatever the threads' order) with atomic adds, the only write outside
     * out. mass_tmp: n_ctx floats of the caller's scratch. NULL: nothing is
     * accumulated and the routine runs exactly as without these fields. */
    uint64_t *mass;
    float *mass_tmp;
} kvl_kvq_view;

/*
 * Attention over any format, fused: scores and the weighted sum of V read
 * the chunks through the kv_kern kernels (decoding in registers), with an
 * online softmax per query head (running max and sum, rescaled per tile of
 * rows), and the heads of one GQA group processed together so that each
 * row is decoded once per group. Same contract as kvl_kv_attend_f32 but
 * needs no scratch. A NaN in a score or in V makes that head's output NaN.
 * ref selects the scalar reference kernels (tests).
 */
void kvl_kv_attend_q(const kvl_kvq_view *view, int32_t n_ctx, const float *q, float *out,
                     int32_t h0, int32_t h1, float scale, bool ref);

#endif
