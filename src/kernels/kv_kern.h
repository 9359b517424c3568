/*
 * kv_kern: the bytes of one KV chunk in every storage format, and the fused
 * attention kernels that read them (dequantizing in registers; no
 * dequantized copy of the cache is ever made).
 *
 * A chunk is one (layer, K or V, KV head, block): bs token rows of hd
 * elements, then that chunk's scales. Its size is exactly the planner's
 * kvl_plan_kv_head_block_bytes for the matching format and role (tested).
 *
 *   F32   | bs*hd f32                                                     |
 *   F16   | bs*hd f16 (IEEE half)                                         |
 *   BF16  | bs*hd bf16                                                    |
 *   E4M3  | bs*hd fp8 e4m3 codes                     | f32 s (unaligned)  |
 *   E5M2  | bs*hd fp8 e5m2 codes                     | f32 s              |
 *   E4M3C | bs*hd fp8 e4m3 codes        | f32 s | hd bf16 channel means  |   keys
 *   E5M2C | bs*hd fp8 e5m2 codes        | f32 s | hd bf16 channel means  |   keys
 *   I8    | bs*hd int8 codes                         | bs bf16 scales     |
 *   I4C   | ceil(bs*hd/2) nibbles  | hd bf16 scales | hd int8 zero points |   keys, per channel
 *   I4T   | ceil(bs*hd/2) nibbles  | bs bf16 scales | bs int8 zero points |   values, per token
 *
 *   element e = row * hd + d; int4 element e is the low nibble of byte e/2
 *   when e is even, the high nibble when odd (packed across rows, so odd hd
 *   wastes nothing and the size is the planner's ceil(bs*hd*bits/8)).
 *
 * What one element decodes to (the SAME float in the scalar reference and
 * in every SIMD path, so they differ only in the order of the sums; one
 * exception: the AVX-512 accum of I8 values multiplies the row scale into
 * the weight, (w * s_row) * n, one rounding apart from w * (n * s_row)):
 *
 *   F16   fp16(h)                       BF16  bf16(h)
 *   E5M2  fp16(b << 8) * s              (e5m2 is the top byte of a half)
 *   E4M3  fp16(((b & 0x7f) << 7) | ((b & 0x80) << 8)) * (s * 256)
 *         (e4m3 moved into a half's bits is the value / 256; the code
 *          0x7f / 0xff, NaN in the OCP spec, is never written and reads 480)
 *   E5M2C fmaf(fp16(b << 8), s, mu_d)   (channel d's block mean added back)
 *   E4M3C fmaf(fp16(e4m3 bits as above), s * 256, mu_d)
 *   I8    (float)n * s_row              (n in [-127, 127])
 *   I4C   (float)(n + z_d) * s_d        (n in [0, 15], z_d int8, channel d)
 *   I4T   (float)(n + z_row) * s_row
 *
 * Keys have channels with large offsets that persist over many tokens, so
 * the key codecs spend their precision on what varies: fp8 keys store each
 * channel's block mean and quantize the difference (E4M3C, E5M2C); int4
 * keys take a scale and zero point per channel over the block (KIVI). The
 * int4 zero point is an integer on the scale's grid (one byte, not two), so
 * that at block 32 int4 K+V costs 73 B per token per head of 64, 3.51x less
 * than f16.
 *
 * A NaN scale (what the encoder writes for a group holding NaN or inf)
 * makes the group decode to NaN.
 *
 * The query. Every format but I8 keys reads q as f32. I8 keys read a query
 * quantized once per attention call (prep_q) to two int8 terms, high and
 * low, so that the scores are exact integer dot products (VNNI in the
 * AVX-512 path) with a query as precise as 16 bits:
 *
 *   per query head g:  a = max_d |q_d|
 *     a not finite (NaN or inf in q):  s_q = NaN, every h_d = l_d = 0
 *     a < 1e-36 (zero or nearly):      s_q = 0,   every h_d = l_d = 0
 *     otherwise:  s_q = a / 127,  t_d = q_d * (127 / a),
 *                 h_d = rint(t_d),  l_d = rint((t_d - h_d) * 254)  (both in [-127, 127])
 *   H = sum_d h_d * n_d,  L = sum_d l_d * n_d       (exact, int32)
 *   score(g, row) = fmaf((float)L, 1 / 254.0f, (float)H) * (s_q * s_row)
 *
 *   so q_d ~ s_q * (h_d + l_d / 254); the reference and the SIMD paths give
 *   the same bits (H and L are exact; their conversions are exact for
 *   hd <= 1024). Prepared bytes for n_q heads (KVL_KVQ_QP_BYTES):
 *
 *   | n_q f32 s_q | n_q i32 sum h | n_q i32 sum l | n_q*hd int8 h | n_q*hd int8 l |
 *                                                   (head-major)    (head-major)
 */
#ifndef KVL_KV_KERN_H
#define KVL_KV_KERN_H

#include "core/core.h"

typedef enum kvl_kvq_codec {
    KVL_KVQ_F32 = 0,
    KVL_KVQ_F16,
    KVL_KVQ_BF16,
    KVL_KVQ_E4M3,
    KVL_KVQ_E5M2,
    KVL_KVQ_I8,
    KVL_KVQ_I4C,   /* int4, scale + zero per channel over the chunk's rows (keys) */
    KVL_KVQ_I4T,   /* int4, scale + zero per row (values) */
    KVL_KVQ_E4M3C, /* e4m3 around per-channel block means (keys) */
    KVL_KVQ_E5M2C, /* e5m2 around per-channel block means (keys) */
    KVL_KVQ_COUNT
} kvl_kvq_codec;

const char *kvl_kvq_codec_name(kvl_kvq_codec c);
/* Bytes of the element data of one chunk (before its scales). */
size_t kvl_kvq_data_bytes(kvl_kvq_codec c, int32_t bs, int32_t hd);
/* Bytes of one whole chunk. */
size_t kvl_kvq_chunk_bytes(kvl_kvq_codec c, int32_t bs, int32_t hd);

/* Decode row r of a chunk into hd floats (the reference decoder). */
void kvl_kvq_decode_row(kvl_kvq_codec c, const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r,
                        float *out);

/*
 * The two fused kernels, for n_q query heads that share one KV head:
 *
 *   scores: S[g * s_stride + (i - r0)] = dot(q_g, row i)
 *   accum:  acc[g * hd + d] += sum_i W[g * w_stride + (i - r0)] * row_i[d]
 *
 * for rows i in [r0, r1) of the chunk. Each row is decoded once (in
 * registers in the SIMD paths) and used for all n_q heads: a GQA group
 * pays the decode once. A row's score and its accumulation do not depend on
 * r0, r1 or which rows share a call (the SIMD paths work on 16 rows at a
 * time, but each lane's arithmetic is its own row's, in a fixed order).
 *
 * qp is the query as the format reads it: when prep_q is NULL the f32 q
 * itself, (n_q, hd); otherwise the bytes prep_q wrote from q (the I8
 * layout above; qp 4-byte aligned). prep_q is called once per GQA group
 * per attention call.
 */
typedef void (*kvl_kvq_prep_fn)(const float *q, int32_t n_q, int32_t hd, void *qp);
typedef void (*kvl_kvq_scores_fn)(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0,
                                  int32_t r1, const void *qp, int32_t n_q, float *S,
                                  int32_t s_stride);
typedef void (*kvl_kvq_accum_fn)(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0,
                                 int32_t r1, const float *W, int32_t w_stride, int32_t n_q,
                                 float *acc);

/* Where the parts of a prepared I8 query lie (the layout above); qp as
 * prep_q wrote it. Read-only users take the const view. */
typedef struct kvl_kvq_i8q {
    float *s;      /* n_q s_q */
    uint8_t *sums; /* n_q i32 sum h, then n_q i32 sum l (memcpy: no aliasing) */
    int8_t *h, *l; /* n_q * hd each, head-major */
} kvl_kvq_i8q;

static inline kvl_kvq_i8q kvl_kvq_i8q_at(void *qp, int32_t n_q, int32_t hd) {
    uint8_t *b = qp;
    kvl_kvq_i8q v = {(float *)qp, b + 4 * (size_t)n_q, (int8_t *)(b + 12 * (size_t)n_q),
                     (int8_t *)(b + 12 * (size_t)n_q) + (size_t)n_q * (size_t)hd};
    return v;
}

typedef struct kvl_kvq_i8q_c {
    const float *s;
    const uint8_t *sums;
    const int8_t *h, *l;
} kvl_kvq_i8q_c;

static inline kvl_kvq_i8q_c kvl_kvq_i8q_view(const void *qp, int32_t n_q, int32_t hd) {
    const uint8_t *b = qp;
    kvl_kvq_i8q_c v = {(const float *)qp, b + 4 * (size_t)n_q,
                       (const int8_t *)(b + 12 * (size_t)n_q),
                       (const int8_t *)(b + 12 * (size_t)n_q) + (size_t)n_q * (size_t)hd};
    return v;
}

/* Bytes prep_q may write for n_q heads of hd elements (any format). */
#define KVL_KVQ_QP_BYTES(n_q, hd) ((size_t)(n_q) * (2 * (size_t)(hd) + 12))

typedef struct kvl_kvq_ops {
    kvl_kvq_prep_fn prep_q; /* NULL: the scores kernel reads the f32 q */
    kvl_kvq_scores_fn scores;
    kvl_kvq_accum_fn accum;
} kvl_kvq_ops;

/* The scalar reference. */
kvl_kvq_ops kvl_kvq_ops_ref(kvl_kvq_codec c);
/* The fastest kernels for the active ISA (kvl_isa_active) and this head_dim
 * (SIMD paths need hd % 8 == 0 for AVX2, hd % 16 == 0 for AVX-512; other
 * head sizes get the reference). */
kvl_kvq_ops kvl_kvq_ops_get(kvl_kvq_codec c, int32_t hd);

/* ISA entry points (kv_kern_avx2.c, kv_kern_avx512.c); NULL members where a
 * codec has no fast path. prep_q is the same function on every path (the
 * reference's), so a fast path only replaces scores and accum. */
kvl_kvq_ops kvl_kvq_ops_avx2(kvl_kvq_codec c);
kvl_kvq_ops kvl_kvq_ops_avx512(kvl_kvq_codec c);

/* x[i] *= scale for i < n, and the largest of the results, ignoring NaN
 * (-inf when n == 0 or all are NaN): the first step of the attention's
 * online softmax. Every path gives the same bits (one multiply per element;
 * the max is exact). */
float kvl_kvq_scale_max(float *x, int32_t n, float scale);
float kvl_kvq_scale_max_avx512(float *x, int32_t n, float scale);

/* bf16 bits of the smallest bf16 >= x (x finite, >= 0), and of the largest
 * bf16 <= x (x finite). Used by the encoders so that the stored scale and
 * zero point bracket the data. */
uint16_t kvl_kvq_bf16_up(float x);
uint16_t kvl_kvq_bf16_down(float x);

static inline float kvl_kvq_rd_f32(const uint8_t *p) {
    float f;
    memcpy(&f, p, 4);
    return f;
}
static inline uint16_t kvl_kvq_rd_u16(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return h;
}

#endif
