/*
 * Private to src/kernels: the K-quant weight types (super-blocks of 256
 * values with sub-block scales, ggml's layouts) and their activation rows,
 * and the 5-bit types of 32-blocks (Q5_0, Q5_1; their products take the
 * Q8_0 activation rows of kernels_impl.h).
 *
 * Block layouts (byte-exact with ggml; all little endian, d/dmin fp16):
 *
 *   Q4_K (144 bytes): d | dmin | scales[12] | qs[128]
 *     8 sub-blocks of 32, each with a 6-bit scale sc and 6-bit min m packed
 *     in scales[12] (see kvl_q4k_scales); value v = 64 j + 32 h + l
 *     (j < 4, h < 2, l < 32) is nibble h of qs[32 j + l] (h = 0: low) and
 *     belongs to sub-block s = v / 32:   x = d * sc[s] * q - dmin * m[s].
 *
 *   Q5_K (176 bytes): d | dmin | scales[12] | qh[32] | qs[128]
 *     as Q4_K, plus a fifth bit: bit (v / 32) of qh[v % 32] adds 16 to q.
 *
 *   Q2_K (84 bytes): scales[16] | qs[64] | d | dmin
 *     16 sub-blocks of 16; value v = 128 n + 32 j + 16 h + l (n < 2, j < 4,
 *     h < 2, l < 16) is bits 2j..2j+1 of qs[32 n + 16 h + l]; scales[v / 16]
 *     holds the sub-block's scale (low 4 bits) and min (high 4 bits):
 *     x = d * sc * q - dmin * m.
 *
 *   Q3_K (110 bytes): hmask[32] | qs[64] | scales[12] | d
 *     16 sub-blocks of 16; value v = 128 n + 32 j + 16 h + l as in Q2_K:
 *     bits 2j..2j+1 of qs[32 n + 16 h + l] are q's low bits, bit 4n + j
 *     of hmask[16 h + l] its bit 2 (q in 0..7); 16 6-bit scales
 *     (kvl_q3k_scales): x = d * (sc[v / 16] - 32) * (q - 4).
 *
 *   Q5_0 (22 bytes, 32 values): d | qh[4] | qs[16]
 *     value i < 16 is the low nibble of qs[i], i >= 16 the high nibble of
 *     qs[i - 16]; bit i of qh (little-endian 32 bits) adds 16:
 *     x = d * (q - 16), q in 0..31.
 *   Q5_1 (24 bytes): d | m | qh[4] | qs[16], the same q: x = d * q + m.
 *
 *   Q6_K (210 bytes): ql[128] | qh[64] | scales[16] (int8) | d
 *     16 sub-blocks of 16; value v = 128 h + 32 k + l (h < 2, k < 4,
 *     l < 32) has its low 4 bits in nibble (k / 2) of ql[64 h + 32 (k % 2)
 *     + l] and its high 2 bits at bits 2k..2k+1 of qh[32 h + l]:
 *     x = d * scales[v / 16] * (q - 32), q in 0..63.
 *
 * Activation row of the K-quant products (one per token, kvl_kq_act_stride
 * bytes apart, ns = n_cols / 256 super-blocks; ggml's Q8_K without its
 * 292-byte record):
 *
 *   +------------------+-----------+--------------------------+
 *   | qs int8[n_cols]  | d f[ns]   | bsums int16[n_cols / 16] |
 *   +------------------+-----------+--------------------------+
 *     q = round(x / d)   amax / 127  sum of q over each 16 values
 *
 * The bsums turn the weights' offsets (Q4_K's mins, Q6_K's -32) into one
 * product of 16 sums per super-block instead of a term per value.
 */
#ifndef KVL_KQUANT_H
#define KVL_KQUANT_H

#include "kernels/kernels_impl.h"

#define KVL_QK_K 256

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[KVL_QK_K / 2];
} kvl_block_q4_k;

typedef struct {
    uint8_t scales[KVL_QK_K / 16];
    uint8_t qs[KVL_QK_K / 4];
    uint16_t d, dmin;
} kvl_block_q2_k;

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[KVL_QK_K / 8];
    uint8_t qs[KVL_QK_K / 2];
} kvl_block_q5_k;

typedef struct {
    uint8_t hmask[KVL_QK_K / 8];
    uint8_t qs[KVL_QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} kvl_block_q3_k;

typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[16];
} kvl_block_q5_0;

typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[16];
} kvl_block_q5_1;

typedef struct {
    uint8_t ql[KVL_QK_K / 2];
    uint8_t qh[KVL_QK_K / 4];
    int8_t scales[KVL_QK_K / 16];
    uint16_t d;
} kvl_block_q6_k;

_Static_assert(sizeof(kvl_block_q4_k) == 144, "Q4_K block is 144 bytes");
_Static_assert(sizeof(kvl_block_q2_k) == 84, "Q2_K block is 84 bytes");
_Static_assert(sizeof(kvl_block_q5_k) == 176, "Q5_K block is 176 bytes");
_Static_assert(sizeof(kvl_block_q6_k) == 210, "Q6_K block is 210 bytes");
_Static_assert(sizeof(kvl_block_q3_k) == 110, "Q3_K block is 110 bytes");
_Static_assert(sizeof(kvl_block_q5_0) == 22, "Q5_0 block is 22 bytes");
_Static_assert(sizeof(kvl_block_q5_1) == 24, "Q5_1 block is 24 bytes");

/* Bytes of one super-block of a K-quant type. */
static inline size_t kvl_kq_block_bytes(kvl_type t) {
    return t == KVL_TYPE_Q2_K   ? sizeof(kvl_block_q2_k)
           : t == KVL_TYPE_Q3_K ? sizeof(kvl_block_q3_k)
           : t == KVL_TYPE_Q4_K ? sizeof(kvl_block_q4_k)
           : t == KVL_TYPE_Q5_K ? sizeof(kvl_block_q5_k)
                                : sizeof(kvl_block_q6_k);
}

/* True for the weight types whose products use the activation row above. */
static inline bool kvl_is_kquant(kvl_type t) {
    return t == KVL_TYPE_Q2_K || t == KVL_TYPE_Q3_K || t == KVL_TYPE_Q4_K || t == KVL_TYPE_Q5_K ||
           t == KVL_TYPE_Q6_K;
}

/* True for Q5_0 / Q5_1 (32-blocks, Q8_0's activation rows). */
static inline bool kvl_is_q5(kvl_type t) { return t == KVL_TYPE_Q5_0 || t == KVL_TYPE_Q5_1; }

/* True for the K-quant types with an AVX-512 token-lane product
 * (kvl_kq_rows_tl_avx512): all of them. */
static inline bool kvl_kq_has_tl(kvl_type t) { return kvl_is_kquant(t); }

/* Bytes of one K-quant activation row (a multiple of 64; at most
 * kvl_act_stride(n_cols), so the scratch size formula covers it). */
static inline size_t kvl_kq_act_stride(int64_t n_cols) {
    return ((size_t)n_cols + (size_t)(n_cols / 256) * 4 + (size_t)(n_cols / 16) * 2 + 63) &
           ~(size_t)63;
}
static inline const float *kvl_kq_act_d(const kvl_mm_ctx *c, int64_t tok) {
    return (const float *)(c->act + (size_t)tok * c->act_stride + (size_t)c->n_cols);
}
static inline const int16_t *kvl_kq_act_bsums(const kvl_mm_ctx *c, int64_t tok) {
    return (const int16_t *)(c->act + (size_t)tok * c->act_stride + (size_t)c->n_cols +
                             (size_t)(c->n_cols / 256) * 4);
}

/* The 8 scales and 8 mins (each 0..63) of a Q4_K block, as bytes. */
static inline void kvl_q4k_scales(const uint8_t s[12], uint8_t sc[8], uint8_t m[8]) {
    for (int j = 0; j < 4; j++) {
        sc[j] = s[j] & 63;
        m[j] = s[j + 4] & 63;
        sc[j + 4] = (uint8_t)((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
        m[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

/* The 16 scales of a Q3_K block minus 32 (-32..31). Scale i has its low 4
 * bits in nibble i / 8 of s[i % 8] and its high 2 bits at bits
 * 2 (i / 4)..+1 of s[8 + i % 4]. */
static inline void kvl_q3k_scales(const uint8_t s[12], int8_t sc[16]) {
    for (int i = 0; i < 16; i++)
        sc[i] = (int8_t)((((s[i % 8] >> (4 * (i / 8))) & 0x0f) |
                          (((s[8 + i % 4] >> (2 * (i / 4))) & 3) << 4)) -
                         32);
}

/* q (0..31) of value i of a Q5_0 / Q5_1 block. */
static inline int kvl_q5_at(const uint8_t qh[4], const uint8_t qs[16], int i) {
    const int nib = i < 16 ? qs[i] & 0x0f : qs[i - 16] >> 4;
    return nib | (((qh[i / 8] >> (i % 8)) & 1) << 4);
}

/* Row conversion of a Q5_0 / Q5_1 row (n a multiple of 32). */
void kvl_q5_quantize_row(kvl_type t, const float *src, void *dst, int64_t n);
void kvl_q5_dequantize_row(kvl_type t, const void *src, float *dst, int64_t n);
/* Y rows [r0, r1) for every token, Q5_0 / Q5_1 weights, activations in
 * the Q8_0 row layout (k_corr 16 for Q5_0, 1 for Q5_1). */
void kvl_q5_rows_scalar(const kvl_mm_ctx *c, int64_t r0, int64_t r1);
void kvl_q5_rows_avx2(const kvl_mm_ctx *c, int64_t r0, int64_t r1);
void kvl_q5_rows_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1);

/* Row conversion of a K-quant type (n a multiple of 256). */
void kvl_kq_quantize_row(kvl_type t, const float *src, void *dst, int64_t n);
void kvl_kq_dequantize_row(kvl_type t, const void *src, float *dst, int64_t n);

/* Quantize super-blocks [s0, s1) of one activation row x into dst. */
void kvl_kq_quantize_act_scalar(const float *x, int64_t n_cols, int64_t s0, int64_t s1,
                                uint8_t *dst);
void kvl_kq_quantize_act_avx512(const float *x, int64_t n_cols, int64_t s0, int64_t s1,
                                uint8_t *dst);

/* Y rows [r0, r1) for every token, K-quant weights. */
void kvl_kq_rows_scalar(const kvl_mm_ctx *c, int64_t r0, int64_t r1);
void kvl_kq_rows_avx2(const kvl_mm_ctx *c, int64_t r0, int64_t r1);
void kvl_kq_rows_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1);
/* Y rows [r0, r1) for every token, K-quant weights, activations in the
 * token-lane layout (kernels_impl.h; products of KVL_TL_MIN_TOK or more
 * tokens on AVX-512). */
void kvl_kq_rows_tl_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1);

#endif
