/*
 * kv_kern_avx2.c: the fused KV attention kernels (kv_kern.h) with 8 f32
 * lanes (AVX2 + FMA + F16C). Called only when kvl_isa_active() is at least
 * AVX2 and head_dim % 8 == 0. Same structure as kv_kern_avx512.c, with
 * NG = 4 heads per pass (16 ymm registers).
 *
 * Each 8-element piece of a row is decoded in a register with the formula
 * of kv_kern.h (same floats as the reference), then used for up to NG = 4
 * query heads of one GQA group:
 *
 *   scores: for each row i: 4 accumulators += piece(i, j) * q_g[j], then
 *           one horizontal sum per head;
 *   accum:  for each 8-column piece j: 4 accumulators (acc_g[j]) stay in
 *           registers while rows r0..r1 stream past: acc_g += w_g,i * piece.
 *
 * A pass over fewer than 4 heads repeats head 0 in the spare lanes of the
 * unrolled loop and discards them (reads only; nothing is stored for them).
 *
 * Must not: allocate; read outside the chunk; store to heads >= n_q.
 */
#if defined(__x86_64__)
#include "kernels/kv_kern.h"

#include <immintrin.h>
#include <math.h>

#define NG 4

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
    __m256 s, z;
} row_ctx;

static inline row_ctx row_init(kvl_kvq_codec c, const dec_ctx *x, int32_t i) {
    row_ctx r = {_mm256_set1_ps(x->s), _mm256_setzero_ps()};
    if (c == KVL_KVQ_I8) {
        r.s = _mm256_set1_ps(bf(x->sc + (size_t)i * 2));
    } else if (c == KVL_KVQ_I4T) {
        r.s = _mm256_set1_ps(bf(x->sc + (size_t)i * 2));
        r.z = _mm256_set1_ps((float)(int8_t)x->sc[(size_t)x->bs * 2 + (size_t)i]);
    }
    return r;
}

static inline __m256 bf16x8(const uint8_t *p) {
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* 8 nibbles starting at even element e: 4 bytes, low nibble first. */
static inline __m256 nib8(const uint8_t *data, size_t e) {
    int32_t w;
    memcpy(&w, data + e / 2, 4);
    __m128i b = _mm_cvtsi32_si128(w);
    __m128i m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(b, m);
    __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), m);
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)));
}

/* 8 int8 at p as floats. */
static inline __m256 i8x8(const uint8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

static inline __m128i fp8x8(const uint8_t *p) {
    return _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p));
}

static inline float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_movehdup_ps(a));
    return _mm_cvtss_f32(a);
}

/* Columns [8j, 8j + 8) of row i. */
static inline __m256 piece(kvl_kvq_codec c, const dec_ctx *x, const row_ctx *r, int32_t i,
                           int32_t j) {
    const size_t e = (size_t)i * (size_t)x->hd + (size_t)j * 8;
    switch (c) {
    case KVL_KVQ_F32: return _mm256_loadu_ps((const float *)(x->data + e * 4));
    case KVL_KVQ_F16: return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x->data + e * 2)));
    case KVL_KVQ_BF16: return bf16x8(x->data + e * 2);
    case KVL_KVQ_E5M2:
        return _mm256_mul_ps(_mm256_cvtph_ps(_mm_slli_epi16(fp8x8(x->data + e), 8)), r->s);
    case KVL_KVQ_E5M2C:
        return _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_slli_epi16(fp8x8(x->data + e), 8)), r->s,
                               bf16x8(x->sc + 4 + (size_t)j * 16));
    case KVL_KVQ_E4M3:
    case KVL_KVQ_E4M3C: {
        __m128i h = fp8x8(x->data + e);
        __m128i mag = _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7f)), 7);
        __m128i sgn = _mm_slli_epi16(_mm_and_si128(h, _mm_set1_epi16(0x80)), 8);
        __m256 v = _mm256_cvtph_ps(_mm_or_si128(mag, sgn));
        if (c == KVL_KVQ_E4M3C)
            return _mm256_fmadd_ps(v, r->s, bf16x8(x->sc + 4 + (size_t)j * 16));
        return _mm256_mul_ps(v, r->s);
    }
    case KVL_KVQ_I8: {
        __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(x->data + e)));
        return _mm256_mul_ps(_mm256_cvtepi32_ps(v), r->s);
    }
    case KVL_KVQ_I4C: {
        __m256 s = bf16x8(x->sc + (size_t)j * 8 * 2);
        __m256 z = i8x8(x->sc + (size_t)x->hd * 2 + (size_t)j * 8);
        return _mm256_mul_ps(_mm256_add_ps(nib8(x->data, e), z), s);
    }
    case KVL_KVQ_I4T: return _mm256_mul_ps(_mm256_add_ps(nib8(x->data, e), r->z), r->s);
    default: return _mm256_setzero_ps();
    }
}

static inline __attribute__((always_inline)) void scores_pass(kvl_kvq_codec c, const dec_ctx *x,
                                                              int32_t r0, int32_t r1,
                                                              const float *q, int32_t n_q, float *S,
                                                              int32_t s_stride, int ng) {
    const int32_t hd = x->hd, nj = hd / 8;
    for (int32_t i = r0; i < r1; i++) {
        row_ctx r = row_init(c, x, i);
        __m256 acc[NG];
        for (int g = 0; g < ng; g++)
            acc[g] = _mm256_setzero_ps();
        for (int32_t j = 0; j < nj; j++) {
            __m256 p = piece(c, x, &r, i, j);
            for (int g = 0; g < ng; g++) {
                const int gi = g < n_q ? g : 0;
                acc[g] = _mm256_fmadd_ps(p, _mm256_loadu_ps(q + (int64_t)gi * hd + j * 8), acc[g]);
            }
        }
        for (int g = 0; g < ng; g++)
            if (g < n_q)
                S[(int64_t)g * s_stride + (i - r0)] = hsum8(acc[g]);
    }
}

static inline __attribute__((always_inline)) void
scores_tpl(kvl_kvq_codec c, const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1,
           const float *q, int32_t n_q, float *S, int32_t s_stride) {
    dec_ctx x = dec_init(c, chunk, bs, hd);
    for (int32_t g0 = 0; g0 < n_q;) {
        int32_t rem = n_q - g0;
        const float *qg = q + (int64_t)g0 * hd;
        float *Sg = S + (int64_t)g0 * s_stride;
        if (rem >= 2) {
            scores_pass(c, &x, r0, r1, qg, rem < NG ? rem : NG, Sg, s_stride, NG);
            g0 += rem < NG ? rem : NG;
        } else {
            scores_pass(c, &x, r0, r1, qg, 1, Sg, s_stride, 1);
            g0 += 1;
        }
    }
}

static inline __attribute__((always_inline)) void accum_pass(kvl_kvq_codec c, const dec_ctx *x,
                                                             int32_t r0, int32_t r1, const float *W,
                                                             int32_t w_stride, int32_t n_q,
                                                             float *acc_out, int ng) {
    const int32_t hd = x->hd, nj = hd / 8;
    for (int32_t j = 0; j < nj; j++) {
        __m256 acc[NG];
        for (int g = 0; g < ng; g++) {
            const int gi = g < n_q ? g : 0;
            acc[g] = _mm256_loadu_ps(acc_out + (int64_t)gi * hd + j * 8);
        }
        for (int32_t i = r0; i < r1; i++) {
            row_ctx r = row_init(c, x, i);
            __m256 p = piece(c, x, &r, i, j);
            for (int g = 0; g < ng; g++) {
                const int gi = g < n_q ? g : 0;
                acc[g] = _mm256_fmadd_ps(_mm256_set1_ps(W[(int64_t)gi * w_stride + (i - r0)]), p,
                                         acc[g]);
            }
        }
        for (int g = 0; g < ng; g++)
            if (g < n_q)
                _mm256_storeu_ps(acc_out + (int64_t)g * hd + j * 8, acc[g]);
    }
}

static inline __attribute__((always_inline)) void
accum_tpl(kvl_kvq_codec c, const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1,
          const float *W, int32_t w_stride, int32_t n_q, float *acc) {
    dec_ctx x = dec_init(c, chunk, bs, hd);
    for (int32_t g0 = 0; g0 < n_q;) {
        int32_t rem = n_q - g0;
        const float *Wg = W + (int64_t)g0 * w_stride;
        float *ag = acc + (int64_t)g0 * hd;
        if (rem >= 2) {
            accum_pass(c, &x, r0, r1, Wg, w_stride, rem < NG ? rem : NG, ag, NG);
            g0 += rem < NG ? rem : NG;
        } else {
            accum_pass(c, &x, r0, r1, Wg, w_stride, 1, ag, 1);
            g0 += 1;
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
DEF_ACCUM(KVL_KVQ_I8, i8)

/* I8 keys read the quantized query (kv_kern.h): exact int32 dot products of
 * sign-extended codes, so the result is the reference's bits. */
static inline __m128i dot_i8(const uint8_t *k, const int8_t *c, int32_t hd) {
    __m256i acc = _mm256_setzero_si256();
    int32_t d = 0;
    for (; d + 16 <= hd; d += 16) {
        __m256i kk = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(k + d)));
        __m256i qq = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(c + d)));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(kk, qq));
    }
    __m128i a = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    if (d < hd) { /* hd % 16 == 8 */
        __m128i kk = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(k + d)));
        __m128i qq = _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)(c + d)));
        a = _mm_add_epi32(a, _mm_madd_epi16(kk, qq));
    }
    a = _mm_add_epi32(a, _mm_shuffle_epi32(a, 0x4e));
    return _mm_add_epi32(a, _mm_shuffle_epi32(a, 0xb1));
}

static void scores_i8q(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1,
                       const void *qp, int32_t n_q, float *S, int32_t s_stride) {
    const kvl_kvq_i8q_c v = kvl_kvq_i8q_view(qp, n_q, hd);
    const float *sq = v.s;
    const int8_t *ch = v.h, *cl = v.l;
    const uint8_t *sc = chunk + kvl_kvq_data_bytes(KVL_KVQ_I8, bs, hd);
    for (int32_t i = r0; i < r1; i++) {
        const uint8_t *k = chunk + (size_t)i * (size_t)hd;
        const float s_row = bf(sc + (size_t)i * 2);
        for (int32_t g = 0; g < n_q; g++) {
            const int32_t H = _mm_cvtsi128_si32(dot_i8(k, ch + (int64_t)g * hd, hd));
            const int32_t L = _mm_cvtsi128_si32(dot_i8(k, cl + (int64_t)g * hd, hd));
            S[(int64_t)g * s_stride + (i - r0)] =
                fmaf((float)L, 1.0f / 254.0f, (float)H) * (sq[g] * s_row);
        }
    }
}
DEF(KVL_KVQ_I4C, i4c)
DEF(KVL_KVQ_I4T, i4t)
DEF(KVL_KVQ_E4M3C, e4m3c)
DEF(KVL_KVQ_E5M2C, e5m2c)
#undef DEF
#undef DEF_ACCUM

kvl_kvq_ops kvl_kvq_ops_avx2(kvl_kvq_codec c) {
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
