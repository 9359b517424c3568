/*
 * kv_kern_avx512.c: the fused KV attention kernels (kv_kern.h) with 16 f32
 * lanes. Compiled with AVX-512 (+VNNI) flags; called only when
 * kvl_isa_active() is AVX-512 and head_dim % 16 == 0.
 *
 * Each 16-element piece of a row is decoded in a register with the formula
 * of kv_kern.h (same floats as the reference), then used for up to NG = 8
 * query heads of one GQA group:
 *
 *   scores: 16 rows at a time: their pieces are transposed (16 x 16), so
 *           each lane is one row and the dot products need no horizontal
 *           sums: acc_g += column_d * q_g[d], one FMA chain per lane;
 *           I8 keys: the same transpose on the int8 codes, 4 per dword, and
 *           vpdpbusd against the prepared int8 query (exact integers);
 *   accum:  for each 16-column piece j: the heads' accumulators (acc_g[j])
 *           stay in registers while rows r0..r1 stream past in order:
 *           acc_g += w_g,i * piece (I8: (w_g,i * s_i) * codes).
 *
 *   16 rows of one 16-column piece, transposed:
 *
 *     row 0:  k0,0  k0,1 ... k0,15          col 0:  k0,0  k1,0 ... k15,0
 *     row 1:  k1,0  k1,1 ... k1,15   --->   col 1:  k0,1  k1,1 ... k15,1
 *       ...                                   ...
 *
 * Head counts go in passes of 8, 4, 2, 1 (each a compile-time count, so the
 * accumulators are registers). Rows past r1 in the last 16 are zeros, never
 * read from the chunk and never stored.
 *
 * Must not: allocate; read outside the chunk; store to heads >= n_q or rows
 * outside [r0, r1).
 */
#if defined(__x86_64__)
#include "kernels/kv_kern.h"

#include <immintrin.h>
#include <math.h>

#define NG 8

typedef struct {
    const uint8_t *data;
    const uint8_t *sc; /* scales (and zeros) after the data */
    int32_t bs, hd;
    float s; /* per-chunk scale (fp8; e4m3 with the 256 folded in) */
} dec_ctx;

static inline dec_ctx dec_init(kvl_kvq_codec c, const uint8_t *chunk, int32_t bs, int32_t hd) {
    dec_ctx x = {.data = chunk, .bs = bs, .hd = hd, .s = 1.0f};
    x.sc = chunk + kvl_kvq_data_bytes(c, bs, hd);
    if (c == KVL_KVQ_E4M3 || c == KVL_KVQ_E4M3C)
        x.s = kvl_kvq_rd_f32(x.sc) * 256.0f;
    else if (c == KVL_KVQ_E5M2 || c == KVL_KVQ_E5M2C)
        x.s = kvl_kvq_rd_f32(x.sc);
    return x;
}

static inline float bf(const uint8_t *p) { return kvl_bf16_to_f32(kvl_kvq_rd_u16(p)); }

/* Per-row constants: the row scale and zero (i8, i4t). */
typedef struct {
    __m512 s, z;
} row_ctx;

static inline row_ctx row_init(kvl_kvq_codec c, const dec_ctx *x, int32_t i) {
    row_ctx r = {_mm512_set1_ps(x->s), _mm512_setzero_ps()};
    if (c == KVL_KVQ_I8) {
        r.s = _mm512_set1_ps(bf(x->sc + (size_t)i * 2));
    } else if (c == KVL_KVQ_I4T) {
        r.s = _mm512_set1_ps(bf(x->sc + (size_t)i * 2));
        r.z = _mm512_set1_ps((float)(int8_t)x->sc[(size_t)x->bs * 2 + (size_t)i]);
    }
    return r;
}

/* 16 int8 at p as floats. */
static inline __m512 i8x16(const uint8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

static inline __m512 bf16x16(const uint8_t *p) {
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

/* 16 nibbles starting at even element e: 8 bytes, low nibble first. */
static inline __m512 nib16(const uint8_t *data, size_t e) {
    __m128i b = _mm_loadl_epi64((const __m128i *)(data + e / 2));
    __m128i m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(b, m);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
}

/* Columns [16j, 16j + 16) of row i. */
static inline __m512 piece(kvl_kvq_codec c, const dec_ctx *x, const row_ctx *r, int32_t i,
                           int32_t j) {
    const size_t e = (size_t)i * (size_t)x->hd + (size_t)j * 16;
    switch (c) {
    case KVL_KVQ_F32: return _mm512_loadu_ps((const float *)(x->data + e * 4));
    case KVL_KVQ_F16:
        return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(x->data + e * 2)));
    case KVL_KVQ_BF16: return bf16x16(x->data + e * 2);
    case KVL_KVQ_E5M2: {
        __m256i h = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x->data + e)));
        return _mm512_mul_ps(_mm512_cvtph_ps(_mm256_slli_epi16(h, 8)), r->s);
    }
    case KVL_KVQ_E4M3:
    case KVL_KVQ_E4M3C: {
        __m256i h = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x->data + e)));
        __m256i mag = _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x7f)), 7);
        __m256i sgn = _mm256_slli_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x80)), 8);
        __m512 v = _mm512_cvtph_ps(_mm256_or_si256(mag, sgn));
        if (c == KVL_KVQ_E4M3C)
            return _mm512_fmadd_ps(v, r->s, bf16x16(x->sc + 4 + (size_t)j * 32));
        return _mm512_mul_ps(v, r->s);
    }
    case KVL_KVQ_E5M2C: {
        __m256i h = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(x->data + e)));
        return _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_slli_epi16(h, 8)), r->s,
                               bf16x16(x->sc + 4 + (size_t)j * 32));
    }
    case KVL_KVQ_I8: {
        __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(x->data + e)));
        return _mm512_mul_ps(_mm512_cvtepi32_ps(v), r->s);
    }
    case KVL_KVQ_I4C: {
        __m512 s = bf16x16(x->sc + (size_t)j * 32);
        __m512 z = i8x16(x->sc + (size_t)x->hd * 2 + (size_t)j * 16);
        return _mm512_mul_ps(_mm512_add_ps(nib16(x->data, e), z), s);
    }
    case KVL_KVQ_I4T: return _mm512_mul_ps(_mm512_add_ps(nib16(x->data, e), r->z), r->s);
    default: return _mm512_setzero_ps();
    }
}

/* In-place transpose of a 16 x 16 tile of 32-bit elements: afterwards
 * t[c] holds column c (lane r = element c of row r). */
static inline __attribute__((always_inline)) void transpose16(__m512i t[16]) {
    __m512i u[16];
#pragma GCC unroll 16
    for (int k = 0; k < 8; k++) { /* 2x2 of elements within 128-bit lanes */
        u[2 * k] = _mm512_unpacklo_epi32(t[2 * k], t[2 * k + 1]);
        u[2 * k + 1] = _mm512_unpackhi_epi32(t[2 * k], t[2 * k + 1]);
    }
#pragma GCC unroll 16
    for (int k = 0; k < 4; k++) { /* u[4k + c], 128-bit lane L: column 4L + c of rows 4k..4k+3 */
        t[4 * k] = _mm512_unpacklo_epi64(u[4 * k], u[4 * k + 2]);
        t[4 * k + 1] = _mm512_unpackhi_epi64(u[4 * k], u[4 * k + 2]);
        t[4 * k + 2] = _mm512_unpacklo_epi64(u[4 * k + 1], u[4 * k + 3]);
        t[4 * k + 3] = _mm512_unpackhi_epi64(u[4 * k + 1], u[4 * k + 3]);
    }
#pragma GCC unroll 16
    for (int c = 0; c < 4; c++) { /* gather lane L of t[c], t[4+c], t[8+c], t[12+c] */
        __m512i v0 = _mm512_shuffle_i32x4(t[c], t[4 + c], 0x88);
        __m512i w0 = _mm512_shuffle_i32x4(t[c], t[4 + c], 0xdd);
        __m512i v1 = _mm512_shuffle_i32x4(t[8 + c], t[12 + c], 0x88);
        __m512i w1 = _mm512_shuffle_i32x4(t[8 + c], t[12 + c], 0xdd);
        u[c] = _mm512_shuffle_i32x4(v0, v1, 0x88);
        u[8 + c] = _mm512_shuffle_i32x4(v0, v1, 0xdd);
        u[4 + c] = _mm512_shuffle_i32x4(w0, w1, 0x88);
        u[12 + c] = _mm512_shuffle_i32x4(w0, w1, 0xdd);
    }
#pragma GCC unroll 16
    for (int k = 0; k < 16; k++)
        t[k] = u[k];
}

/*
 * Scores of rows [i0, i0 + n), n <= 16, for NGC heads: the 16 rows are
 * decoded 16 columns at a time and transposed, so that lane r of column
 * vector d is row r's element d; then acc_g += col_d * q_g[d] for d in
 * order. Lane r is row r's dot product, summed in the reference's order
 * (one FMA chain over d), with no horizontal sums; rows past n are zeros
 * and are not stored.
 */
static inline __attribute__((always_inline)) void scores_tile(kvl_kvq_codec c, const dec_ctx *x,
                                                              int32_t i0, int32_t n, const float *q,
                                                              float *S, int32_t s_stride,
                                                              const int NGC) {
    const int32_t hd = x->hd, nj = hd / 16;
    __m512 acc[NG];
#pragma GCC unroll 8
    for (int g = 0; g < NGC; g++)
        acc[g] = _mm512_setzero_ps();
    for (int32_t j = 0; j < nj; j++) {
        __m512i t[16];
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++) {
            if (r < n) {
                row_ctx rc = row_init(c, x, i0 + r);
                t[r] = _mm512_castps_si512(piece(c, x, &rc, i0 + r, j));
            } else {
                t[r] = _mm512_setzero_si512();
            }
        }
        transpose16(t);
        const float *qj = q + j * 16;
#pragma GCC unroll 16
        for (int d = 0; d < 16; d++) {
            const __m512 col = _mm512_castsi512_ps(t[d]);
#pragma GCC unroll 8
            for (int g = 0; g < NGC; g++)
                acc[g] = _mm512_fmadd_ps(col, _mm512_set1_ps(qj[(int64_t)g * hd + d]), acc[g]);
        }
    }
    const __mmask16 m = (__mmask16)((1u << n) - 1);
#pragma GCC unroll 8
    for (int g = 0; g < NGC; g++)
        _mm512_mask_storeu_ps(S + (int64_t)g * s_stride, m, acc[g]);
}

static inline __attribute__((always_inline)) void
scores_tpl(kvl_kvq_codec c, const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1,
           const void *qp, int32_t n_q, float *S, int32_t s_stride) {
    const float *q = qp;
    dec_ctx x = dec_init(c, chunk, bs, hd);
    for (int32_t i0 = r0; i0 < r1; i0 += 16) {
        const int32_t n = r1 - i0 < 16 ? r1 - i0 : 16;
        for (int32_t g0 = 0; g0 < n_q;) {
            const int32_t rem = n_q - g0;
            const float *qg = q + (int64_t)g0 * hd;
            float *Sg = S + (int64_t)g0 * s_stride + (i0 - r0);
            if (rem >= 8) {
                scores_tile(c, &x, i0, n, qg, Sg, s_stride, 8);
                g0 += 8;
            } else if (rem >= 4) {
                scores_tile(c, &x, i0, n, qg, Sg, s_stride, 4);
                g0 += 4;
            } else if (rem >= 2) {
                scores_tile(c, &x, i0, n, qg, Sg, s_stride, 2);
                g0 += 2;
            } else {
                scores_tile(c, &x, i0, n, qg, Sg, s_stride, 1);
                g0 += 1;
            }
        }
    }
}

/*
 * I8 keys, quantized query (kv_kern.h): VNNI. For 16 rows, each 64-byte
 * segment of a row (16 dwords of 4 codes) is biased to unsigned (k ^ 0x80 =
 * k + 128) and the 16 x 16 dwords transposed; then vpdpbusd adds, per lane
 * (row), the 4 products of column dword t with query dword t, for the high
 * and the low query terms. The bias is removed exactly with 128 * sum(h)
 * and 128 * sum(l); H and L are the reference's integers.
 */
static inline __attribute__((always_inline)) void
scores_i8_tile(const uint8_t *data, const uint8_t *sc, int32_t hd, int32_t i0, int32_t n,
               const float *sq, const uint8_t *sums, int32_t sl_off, const int8_t *ch,
               const int8_t *cl, float *S, int32_t s_stride, const int NGC) {
    __m512i ah[NG], al[NG];
#pragma GCC unroll 8
    for (int g = 0; g < NGC; g++) {
        ah[g] = _mm512_setzero_si512();
        al[g] = _mm512_setzero_si512();
    }
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int32_t seg = 0; seg < hd; seg += 64) {
        const int32_t nd = hd - seg < 64 ? (hd - seg) / 4 : 16;
        const __mmask16 dm = (__mmask16)((1u << nd) - 1);
        __m512i t[16];
#pragma GCC unroll 16
        for (int r = 0; r < 16; r++)
            t[r] = r < n ? _mm512_xor_si512(_mm512_maskz_loadu_epi32(
                                                dm, data + (size_t)(i0 + r) * (size_t)hd + seg),
                                            bias)
                         : _mm512_setzero_si512();
        transpose16(t);
#pragma GCC unroll 16
        for (int d = 0; d < 16; d++) {
            if (d < nd) {
#pragma GCC unroll 8
                for (int g = 0; g < NGC; g++) {
                    int32_t qh, ql;
                    memcpy(&qh, ch + (int64_t)g * hd + seg + 4 * d, 4);
                    memcpy(&ql, cl + (int64_t)g * hd + seg + 4 * d, 4);
                    ah[g] = _mm512_dpbusd_epi32(ah[g], t[d], _mm512_set1_epi32(qh));
                    al[g] = _mm512_dpbusd_epi32(al[g], t[d], _mm512_set1_epi32(ql));
                }
            }
        }
    }
    const __mmask16 m = (__mmask16)((1u << n) - 1);
    const __m512 srow = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, sc + (size_t)i0 * 2)), 16));
    const __m512 c254 = _mm512_set1_ps(1.0f / 254.0f);
#pragma GCC unroll 8
    for (int g = 0; g < NGC; g++) {
        int32_t sh, sl;
        memcpy(&sh, sums + 4 * g, 4);
        memcpy(&sl, sums + 4 * (sl_off + g), 4);
        const __m512 H = _mm512_cvtepi32_ps(_mm512_sub_epi32(ah[g], _mm512_set1_epi32(sh * 128)));
        const __m512 L = _mm512_cvtepi32_ps(_mm512_sub_epi32(al[g], _mm512_set1_epi32(sl * 128)));
        const __m512 s = _mm512_mul_ps(_mm512_set1_ps(sq[g]), srow);
        _mm512_mask_storeu_ps(S + (int64_t)g * s_stride, m,
                              _mm512_mul_ps(_mm512_fmadd_ps(L, c254, H), s));
    }
}

static void scores_i8q(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1,
                       const void *qp, int32_t n_q, float *S, int32_t s_stride) {
    const kvl_kvq_i8q_c v = kvl_kvq_i8q_view(qp, n_q, hd);
    const float *sq = v.s;
    const uint8_t *sums = v.sums;
    const int8_t *ch = v.h, *cl = v.l;
    const uint8_t *sc = chunk + kvl_kvq_data_bytes(KVL_KVQ_I8, bs, hd);
    for (int32_t i0 = r0; i0 < r1; i0 += 16) {
        const int32_t n = r1 - i0 < 16 ? r1 - i0 : 16;
        for (int32_t g0 = 0; g0 < n_q;) {
            const int32_t rem = n_q - g0;
            const int8_t *hg = ch + (int64_t)g0 * hd, *lg = cl + (int64_t)g0 * hd;
            const uint8_t *sg = sums + 4 * (size_t)g0;
            float *Sg = S + (int64_t)g0 * s_stride + (i0 - r0);
            if (rem >= 8) {
                scores_i8_tile(chunk, sc, hd, i0, n, sq + g0, sg, n_q, hg, lg, Sg, s_stride, 8);
                g0 += 8;
            } else if (rem >= 4) {
                scores_i8_tile(chunk, sc, hd, i0, n, sq + g0, sg, n_q, hg, lg, Sg, s_stride, 4);
                g0 += 4;
            } else if (rem >= 2) {
                scores_i8_tile(chunk, sc, hd, i0, n, sq + g0, sg, n_q, hg, lg, Sg, s_stride, 2);
                g0 += 2;
            } else {
                scores_i8_tile(chunk, sc, hd, i0, n, sq + g0, sg, n_q, hg, lg, Sg, s_stride, 1);
                g0 += 1;
            }
        }
    }
}

/* Columns [16j, 16j + 16) of the NGC heads' outputs stay in registers
 * while rows r0..r1 stream past, in order: acc_g += w_g,i * piece(i, j).
 * I8 folds the row scale into the weight: acc_g += (w_g,i * s_i) * n_i
 * (W is then the caller's scaled copy). */
static inline __attribute__((always_inline)) void accum_pass(kvl_kvq_codec c, const dec_ctx *x,
                                                             int32_t r0, int32_t r1, const float *W,
                                                             int32_t w_stride, float *acc_out,
                                                             const int NGC) {
    const int32_t hd = x->hd, nj = hd / 16;
    for (int32_t j = 0; j < nj; j++) {
        __m512 acc[NG];
#pragma GCC unroll 8
        for (int g = 0; g < NGC; g++)
            acc[g] = _mm512_loadu_ps(acc_out + (int64_t)g * hd + j * 16);
        for (int32_t i = r0; i < r1; i++) {
            __m512 p;
            if (c == KVL_KVQ_I8) {
                p = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                    (const __m128i *)(x->data + (size_t)i * (size_t)hd + (size_t)j * 16))));
            } else {
                row_ctx r = row_init(c, x, i);
                p = piece(c, x, &r, i, j);
            }
            const float *wi = W + (i - r0);
#pragma GCC unroll 8
            for (int g = 0; g < NGC; g++)
                acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(wi[(int64_t)g * w_stride]), p, acc[g]);
        }
#pragma GCC unroll 8
        for (int g = 0; g < NGC; g++)
            _mm512_storeu_ps(acc_out + (int64_t)g * hd + j * 16, acc[g]);
    }
}

static inline __attribute__((always_inline)) void accum_groups(kvl_kvq_codec c, const dec_ctx *x,
                                                               int32_t r0, int32_t r1,
                                                               const float *W, int32_t w_stride,
                                                               int32_t n_q, float *acc) {
    for (int32_t g0 = 0; g0 < n_q;) {
        const int32_t rem = n_q - g0;
        const float *Wg = W + (int64_t)g0 * w_stride;
        float *ag = acc + (int64_t)g0 * x->hd;
        if (rem >= 8) {
            accum_pass(c, x, r0, r1, Wg, w_stride, ag, 8);
            g0 += 8;
        } else if (rem >= 4) {
            accum_pass(c, x, r0, r1, Wg, w_stride, ag, 4);
            g0 += 4;
        } else if (rem >= 2) {
            accum_pass(c, x, r0, r1, Wg, w_stride, ag, 2);
            g0 += 2;
        } else {
            accum_pass(c, x, r0, r1, Wg, w_stride, ag, 1);
            g0 += 1;
        }
    }
}

static inline __attribute__((always_inline)) void
accum_tpl(kvl_kvq_codec c, const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1,
          const float *W, int32_t w_stride, int32_t n_q, float *acc) {
    dec_ctx x = dec_init(c, chunk, bs, hd);
    accum_groups(c, &x, r0, r1, W, w_stride, n_q, acc);
}

/* I8 values: per 16 rows and 16 heads, the weights times the rows' scales
 * (one vector multiply per head), then the passes read those. */
static void accum_i8(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1,
                     const float *W, int32_t w_stride, int32_t n_q, float *acc) {
    dec_ctx x = dec_init(KVL_KVQ_I8, chunk, bs, hd);
    float Ws[16 * 16]; /* (heads, rows) */
    for (int32_t i0 = r0; i0 < r1; i0 += 16) {
        const int32_t n = r1 - i0 < 16 ? r1 - i0 : 16;
        const __mmask16 m = (__mmask16)((1u << n) - 1);
        const __m512 s = _mm512_castsi512_ps(_mm512_slli_epi32(
            _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x.sc + (size_t)i0 * 2)), 16));
        for (int32_t g0 = 0; g0 < n_q; g0 += 16) {
            const int32_t ng = n_q - g0 < 16 ? n_q - g0 : 16;
            for (int32_t g = 0; g < ng; g++)
                _mm512_storeu_ps(
                    Ws + g * 16,
                    _mm512_mul_ps(
                        _mm512_maskz_loadu_ps(m, W + (int64_t)(g0 + g) * w_stride + (i0 - r0)), s));
            accum_groups(KVL_KVQ_I8, &x, i0, i0 + n, Ws, 16, ng, acc + (int64_t)g0 * hd);
        }
    }
}

#define DEF(codec, tag)                                                                            \
    static void scores_##tag(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1, \
                             const void *q, int32_t n_q, float *S, int32_t s_stride) {             \
        scores_tpl(codec, chunk, bs, hd, r0, r1, q, n_q, S, s_stride);                             \
    }                                                                                              \
    DEF_ACCUM(codec, tag)
#define DEF_ACCUM(codec, tag)                                                                      \
    static void accum_##tag(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1,  \
                            const float *W, int32_t w_stride, int32_t n_q, float *acc) {           \
        accum_tpl(codec, chunk, bs, hd, r0, r1, W, w_stride, n_q, acc);                            \
    }
DEF(KVL_KVQ_F32, f32)
DEF(KVL_KVQ_F16, f16)
DEF(KVL_KVQ_BF16, bf16)
DEF(KVL_KVQ_E4M3, e4m3)
DEF(KVL_KVQ_E5M2, e5m2)
DEF(KVL_KVQ_I4C, i4c)
DEF(KVL_KVQ_I4T, i4t)
DEF(KVL_KVQ_E4M3C, e4m3c)
DEF(KVL_KVQ_E5M2C, e5m2c)
#undef DEF
#undef DEF_ACCUM

float kvl_kvq_scale_max_avx512(float *x, int32_t n, float scale) {
    const __m512 s = _mm512_set1_ps(scale);
    __m512 m = _mm512_set1_ps(-INFINITY);
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + i), s);
        _mm512_storeu_ps(x + i, v);
        m = _mm512_max_ps(v, m); /* a NaN v gives m: NaN ignored, as in the scalar */
    }
    if (i < n) {
        const __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
        const __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), s);
        _mm512_mask_storeu_ps(x + i, k, v);
        m = _mm512_mask_max_ps(m, k, v, m);
    }
    return _mm512_reduce_max_ps(m);
}

kvl_kvq_ops kvl_kvq_ops_avx512(kvl_kvq_codec c) {
    static const kvl_kvq_ops t[KVL_KVQ_COUNT] = {
        {NULL, scores_f32, accum_f32},     {NULL, scores_f16, accum_f16},
        {NULL, scores_bf16, accum_bf16},   {NULL, scores_e4m3, accum_e4m3},
        {NULL, scores_e5m2, accum_e5m2},   {NULL, scores_i8q, accum_i8},
        {NULL, scores_i4c, accum_i4c},     {NULL, scores_i4t, accum_i4t},
        {NULL, scores_e4m3c, accum_e4m3c}, {NULL, scores_e5m2c, accum_e5m2c},
    };
    kvl_kvq_ops none = {0};
    return (int)c >= 0 && c < KVL_KVQ_COUNT ? t[c] : none;
}
#endif
