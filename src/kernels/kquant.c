/*
 * kquant: the K-quant weight types (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) and Q5_0 / Q5_1
 * (layouts in kquant.h):
 * kvllm's own quantizer, the dequantizer, the scalar quantizer of their
 * activation rows, and the scalar integer product the SIMD paths match.
 *
 * Quantizer (kvllm's, not llama.cpp's; any file it writes reads the same
 * in llama.cpp because the block layout is ggml's):
 *   Q4_K: per sub-block of 32 a few candidate grids x ~ a * L + b
 *         (L in 0..15, Q5_K 0..31, b <= 0), each refitted by least squares, the one
 *         with the least squared error kept; the 8 scales a and mins -b are
 *         then stored as 6-bit multiples of d = max a / 63 and
 *         dmin = max(-b) / 63, and L recomputed against the stored values.
 *   Q2_K: the same per sub-block of 16 (L in 0..3), 4-bit scales and mins
 *         against d = max a / 15, dmin = max(-b) / 15.
 *   Q6_K: per sub-block of 16 candidate grids x ~ s * L (L in -32..31)
 *         refitted the same way; the 16 s are stored as int8 multiples of
 *         d = s_max / -128 and L recomputed.
 *   Q3_K: as Q6_K with L in -4..3 and 6-bit s against d = s_max / -32.
 *   Q5_0 / Q5_1: one scale (and Q5_1 a min) per 32 from the block's
 *         extremes (quantize_q5 below).
 * Inputs are first made finite (NaN -> 0, |x| capped at 4e6, where Q4_K's
 * dmin would leave fp16), so every float-to-int conversion is defined and
 * every stored scale finite.
 *
 * Must not: allocate, or read or write outside the rows it is given.
 */
#include "kernels/kquant.h"

#include <math.h>

#define KQ_XMAX 4e6f  /* Q4_K: dmin = max min / 63 must stay below fp16's 65504 */
#define KQ2_XMAX 9e5f /* Q2_K: dmin = max min / 15, the same */

/* round(v) clamped to [lo, hi]; NaN gives lo. */
static inline int iround(float v, int lo, int hi) {
    if (!(v > (float)lo))
        return lo;
    if (v >= (float)hi)
        return hi;
    return (int)lrintf(v);
}

static void sanitize_to(const float *x, float *y, int n, float xmax) {
    for (int i = 0; i < n; i++) {
        float v = x[i];
        y[i] = v != v ? 0.0f : v > xmax ? xmax : v < -xmax ? -xmax : v;
    }
}
static void sanitize(const float *x, float *y, int n) { sanitize_to(x, y, n, KQ_XMAX); }

/* x (n values) ~ a * L + b with L in 0..nmax and b <= 0: the best of a few
 * grids, each refitted by least squares. */
static void fit_scale_min(const float *x, int n, int nmax, float *a_out, float *b_out) {
    float lo = 0.0f, hi = x[0];
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    if (!(hi > lo)) {
        *a_out = 0.0f;
        *b_out = lo;
        return;
    }
    float best_a = (hi - lo) / (float)nmax, best_b = lo, best_e = INFINITY;
    for (int k = -4; k <= 6; k++) {
        const float is = ((float)nmax + 0.1f * (float)k) / (hi - lo);
        double sl = 0, sl2 = 0, sx = 0, sxl = 0;
        for (int i = 0; i < n; i++) {
            const int l = iround((x[i] - lo) * is, 0, nmax);
            sl += l;
            sl2 += (double)l * l;
            sx += x[i];
            sxl += (double)x[i] * l;
        }
        const double det = n * sl2 - sl * sl;
        double a, b;
        if (det > 0) {
            a = (n * sxl - sl * sx) / det;
            b = (sl2 * sx - sl * sxl) / det;
        } else {
            a = 0;
            b = sx / n;
        }
        if (b > 0) { /* a positive offset is not storable: refit a alone */
            b = 0;
            a = sl2 > 0 ? sxl / sl2 : 0;
        }
        if (a < 0)
            a = 0;
        double e = 0;
        for (int i = 0; i < n; i++) {
            const int l = a > 0 ? iround((float)((x[i] - b) / a), 0, nmax) : 0;
            const double r = a * l + b - x[i];
            e += r * r;
        }
        if (e < best_e) {
            best_e = (float)e;
            best_a = (float)a;
            best_b = (float)b;
        }
    }
    *a_out = best_a;
    *b_out = best_b;
}

/* Q4_K (nmax 15) or Q5_K (nmax 31): the same scales, mins and packing;
 * Q5_K keeps bit 4 of each q in qh. */
static void quantize_q45_k(const float *src, void *dst, int64_t n, int nmax) {
    float x[KVL_QK_K];
    for (int64_t s = 0; s < n / KVL_QK_K; s++) {
        sanitize(src + s * KVL_QK_K, x, KVL_QK_K);
        float a[8], mn[8], amax = 0.0f, mmax = 0.0f;
        for (int j = 0; j < 8; j++) {
            float b;
            fit_scale_min(x + 32 * j, 32, nmax, &a[j], &b);
            mn[j] = -b;
            amax = fmaxf(amax, a[j]);
            mmax = fmaxf(mmax, mn[j]);
        }
        const float d = amax / 63.0f, dmin = mmax / 63.0f;
        uint8_t sc[8], m[8];
        for (int j = 0; j < 8; j++) {
            sc[j] = (uint8_t)(d > 0 ? iround(a[j] / d, 0, 63) : 0);
            m[j] = (uint8_t)(dmin > 0 ? iround(mn[j] / dmin, 0, 63) : 0);
        }
        /* Q4_K and Q5_K share d, dmin and scales[12] at the start */
        kvl_block_q4_k *b4 = nmax == 15 ? (kvl_block_q4_k *)dst + s : NULL;
        kvl_block_q5_k *b5 = nmax == 31 ? (kvl_block_q5_k *)dst + s : NULL;
        uint16_t *d16 = b4 ? &b4->d : &b5->d, *dm16 = b4 ? &b4->dmin : &b5->dmin;
        uint8_t *scales = b4 ? b4->scales : b5->scales, *qs = b4 ? b4->qs : b5->qs;
        *d16 = kvl_f32_to_fp16(d);
        *dm16 = kvl_f32_to_fp16(dmin);
        for (int j = 0; j < 4; j++) {
            scales[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
            scales[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
            scales[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4));
        }
        const float df = kvl_fp16_to_f32(*d16), dmf = kvl_fp16_to_f32(*dm16);
        memset(qs, 0, KVL_QK_K / 2);
        if (b5)
            memset(b5->qh, 0, sizeof b5->qh);
        for (int v = 0; v < KVL_QK_K; v++) {
            const int j = v / 32;
            const float ds = df * sc[j], dm = dmf * m[j];
            const int l = ds > 0 ? iround((x[v] + dm) / ds, 0, nmax) : 0;
            qs[32 * (v / 64) + v % 32] |= (uint8_t)((l & 0x0f) << (4 * (j % 2)));
            if (b5)
                b5->qh[v % 32] |= (uint8_t)((l >> 4) << j);
        }
    }
}

static void quantize_q2_k(const float *src, kvl_block_q2_k *y, int64_t n) {
    float x[KVL_QK_K];
    for (int64_t s = 0; s < n / KVL_QK_K; s++) {
        sanitize_to(src + s * KVL_QK_K, x, KVL_QK_K, KQ2_XMAX);
        float a[16], mn[16], amax = 0.0f, mmax = 0.0f;
        for (int g = 0; g < 16; g++) {
            float b;
            fit_scale_min(x + 16 * g, 16, 3, &a[g], &b);
            mn[g] = -b;
            amax = fmaxf(amax, a[g]);
            mmax = fmaxf(mmax, mn[g]);
        }
        kvl_block_q2_k *b = &y[s];
        const float d = amax / 15.0f, dmin = mmax / 15.0f;
        b->d = kvl_f32_to_fp16(d);
        b->dmin = kvl_f32_to_fp16(dmin);
        const float df = kvl_fp16_to_f32(b->d), dmf = kvl_fp16_to_f32(b->dmin);
        memset(b->qs, 0, sizeof b->qs);
        for (int g = 0; g < 16; g++) {
            const int sc = d > 0 ? iround(a[g] / d, 0, 15) : 0;
            const int m = dmin > 0 ? iround(mn[g] / dmin, 0, 15) : 0;
            b->scales[g] = (uint8_t)(sc | (m << 4));
            const float ds = df * (float)sc, dm = dmf * (float)m;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
                const int l = ds > 0 ? iround((x[i] + dm) / ds, 0, 3) : 0;
                b->qs[32 * (i / 128) + 16 * ((i / 16) % 2) + i % 16] |=
                    (uint8_t)(l << (2 * ((i % 128) / 32)));
            }
        }
    }
}

/* q (0..3) of value v of a Q2_K block. */
static inline int q2k_at(const kvl_block_q2_k *b, int v) {
    return (b->qs[32 * (v / 128) + 16 * ((v / 16) % 2) + v % 16] >> (2 * ((v % 128) / 32))) & 3;
}

static void dequantize_q2_k(const kvl_block_q2_k *b, float *y, int64_t n) {
    for (int64_t s = 0; s < n / KVL_QK_K; s++, b++) {
        const float d = kvl_fp16_to_f32(b->d), dmin = kvl_fp16_to_f32(b->dmin);
        for (int v = 0; v < KVL_QK_K; v++) {
            const uint8_t sc = b->scales[v / 16];
            y[s * KVL_QK_K + v] =
                d * (float)(sc & 0x0f) * (float)q2k_at(b, v) - dmin * (float)(sc >> 4);
        }
    }
}

static void dequantize_q5_k(const kvl_block_q5_k *b, float *y, int64_t n) {
    for (int64_t s = 0; s < n / KVL_QK_K; s++, b++) {
        uint8_t sc[8], m[8];
        kvl_q4k_scales(b->scales, sc, m);
        const float d = kvl_fp16_to_f32(b->d), dmin = kvl_fp16_to_f32(b->dmin);
        for (int v = 0; v < KVL_QK_K; v++) {
            const int j = v / 32;
            const int q = ((b->qs[32 * (v / 64) + v % 32] >> (4 * (j % 2))) & 0x0f) |
                          (((b->qh[v % 32] >> j) & 1) << 4);
            y[s * KVL_QK_K + v] = d * sc[j] * (float)q - dmin * m[j];
        }
    }
}

static void dequantize_q4_k(const kvl_block_q4_k *b, float *y, int64_t n) {
    for (int64_t s = 0; s < n / KVL_QK_K; s++, b++) {
        uint8_t sc[8], m[8];
        kvl_q4k_scales(b->scales, sc, m);
        const float d = kvl_fp16_to_f32(b->d), dmin = kvl_fp16_to_f32(b->dmin);
        for (int v = 0; v < KVL_QK_K; v++) {
            const int j = v / 32;
            const int q = (b->qs[32 * (v / 64) + v % 32] >> (4 * (j % 2))) & 0x0f;
            y[s * KVL_QK_K + v] = d * sc[j] * (float)q - dmin * m[j];
        }
    }
}

/* x (n values) ~ s * L with L in nmin..nmax (nmin < 0 < nmax): the best of
 * a few grids (inverse scales around nmin / x_max, step apart), each
 * refitted by least squares. */
static float fit_scale_sym(const float *x, int n, int nmin, int nmax, float step) {
    float mx = 0.0f, amax = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            mx = x[i];
        }
    if (amax == 0.0f)
        return 0.0f;
    float best_s = mx / (float)nmin, best_e = INFINITY;
    for (int k = -4; k <= 4; k++) {
        const float is = ((float)nmin + step * (float)k) / mx;
        double sxl = 0, sl2 = 0;
        for (int i = 0; i < n; i++) {
            const int l = iround(x[i] * is, nmin, nmax);
            sxl += (double)x[i] * l;
            sl2 += (double)l * l;
        }
        if (!(sl2 > 0))
            continue;
        const double s = sxl / sl2;
        double e = 0;
        for (int i = 0; i < n; i++) {
            const int l = iround((float)(x[i] / s), nmin, nmax);
            const double r = s * l - x[i];
            e += r * r;
        }
        if (e < best_e) {
            best_e = (float)e;
            best_s = (float)s;
        }
    }
    return best_s;
}

/* The 16 groups' symmetric scales of a 256-value block (fit_scale_sym with
 * levels nmin..nmax, grids `step` apart) into sg; returns the one of
 * largest magnitude (the first of equal ones). */
static inline __attribute__((always_inline)) float
group_scales_sym(const float *x, int nmin, int nmax, float step, float sg[16]) {
    float smax = 0.0f;
    for (int g = 0; g < 16; g++) {
        sg[g] = fit_scale_sym(x + 16 * g, 16, nmin, nmax, step);
        if (fabsf(sg[g]) > fabsf(smax))
            smax = sg[g];
    }
    return smax;
}

static void quantize_q6_k(const float *src, kvl_block_q6_k *y, int64_t n) {
    float x[KVL_QK_K];
    for (int64_t s = 0; s < n / KVL_QK_K; s++) {
        sanitize(src + s * KVL_QK_K, x, KVL_QK_K);
        float sg[16];
        const float smax = group_scales_sym(x, -32, 31, 0.25f, sg);
        kvl_block_q6_k *b = &y[s];
        const float d = smax / -128.0f;
        for (int g = 0; g < 16; g++)
            b->scales[g] = (int8_t)(d != 0.0f ? iround(sg[g] / d, -128, 127) : 0);
        b->d = kvl_f32_to_fp16(d);
        const float df = kvl_fp16_to_f32(b->d);
        memset(b->ql, 0, sizeof b->ql);
        memset(b->qh, 0, sizeof b->qh);
        for (int v = 0; v < KVL_QK_K; v++) {
            const float ds = df * b->scales[v / 16];
            const int q = (ds != 0.0f ? iround(x[v] / ds, -32, 31) : 0) + 32;
            const int h = v / 128, k = (v % 128) / 32, l = v % 32;
            b->ql[64 * h + 32 * (k % 2) + l] |= (uint8_t)((q & 0x0f) << (4 * (k / 2)));
            b->qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
        }
    }
}

/* q (0..63) of value v of a Q6_K block. */
static inline int q6k_at(const kvl_block_q6_k *b, int v) {
    const int h = v / 128, k = (v % 128) / 32, l = v % 32;
    const int lo = (b->ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0f;
    const int hi = (b->qh[32 * h + l] >> (2 * k)) & 3;
    return lo | (hi << 4);
}

static void dequantize_q6_k(const kvl_block_q6_k *b, float *y, int64_t n) {
    for (int64_t s = 0; s < n / KVL_QK_K; s++, b++) {
        const float d = kvl_fp16_to_f32(b->d);
        for (int v = 0; v < KVL_QK_K; v++)
            y[s * KVL_QK_K + v] = d * (float)b->scales[v / 16] * (float)(q6k_at(b, v) - 32);
    }
}

/* Q3_K: as Q6_K with L in -4..3 and 6-bit scales sc - 32 against
 * d = s_max / -32. */
static void quantize_q3_k(const float *src, kvl_block_q3_k *y, int64_t n) {
    float x[KVL_QK_K];
    for (int64_t s = 0; s < n / KVL_QK_K; s++) {
        sanitize(src + s * KVL_QK_K, x, KVL_QK_K);
        float sg[16];
        const float smax = group_scales_sym(x, -4, 3, 0.1f, sg);
        kvl_block_q3_k *b = &y[s];
        const float d = smax / -32.0f;
        int sc[16];
        memset(b->scales, 0, sizeof b->scales);
        for (int g = 0; g < 16; g++) {
            sc[g] = d != 0.0f ? iround(sg[g] / d, -32, 31) : 0;
            const int u = sc[g] + 32;
            b->scales[g % 8] |= (uint8_t)((u & 0x0f) << (4 * (g / 8)));
            b->scales[8 + g % 4] |= (uint8_t)((u >> 4) << (2 * (g / 4)));
        }
        b->d = kvl_f32_to_fp16(d);
        const float df = kvl_fp16_to_f32(b->d);
        memset(b->qs, 0, sizeof b->qs);
        memset(b->hmask, 0, sizeof b->hmask);
        for (int v = 0; v < KVL_QK_K; v++) {
            const float ds = df * (float)sc[v / 16];
            const int q = (ds != 0.0f ? iround(x[v] / ds, -4, 3) : 0) + 4;
            const int nn = v / 128, j = (v % 128) / 32, hl = v % 32;
            b->qs[32 * nn + hl] |= (uint8_t)((q & 3) << (2 * j));
            b->hmask[hl] |= (uint8_t)((q >> 2) << (4 * nn + j));
        }
    }
}

/* q (0..7) of value v of a Q3_K block. */
static inline int q3k_at(const kvl_block_q3_k *b, int v) {
    const int nn = v / 128, j = (v % 128) / 32, hl = v % 32;
    return ((b->qs[32 * nn + hl] >> (2 * j)) & 3) | (((b->hmask[hl] >> (4 * nn + j)) & 1) << 2);
}

static void dequantize_q3_k(const kvl_block_q3_k *b, float *y, int64_t n) {
    for (int64_t s = 0; s < n / KVL_QK_K; s++, b++) {
        int8_t sc[16];
        kvl_q3k_scales(b->scales, sc);
        const float d = kvl_fp16_to_f32(b->d);
        for (int v = 0; v < KVL_QK_K; v++)
            y[s * KVL_QK_K + v] = d * (float)sc[v / 16] * (float)(q3k_at(b, v) - 4);
    }
}

void kvl_kq_quantize_row(kvl_type t, const float *src, void *dst, int64_t n) {
    switch (t) {
    case KVL_TYPE_Q2_K: quantize_q2_k(src, dst, n); break;
    case KVL_TYPE_Q3_K: quantize_q3_k(src, dst, n); break;
    case KVL_TYPE_Q4_K: quantize_q45_k(src, dst, n, 15); break;
    case KVL_TYPE_Q5_K: quantize_q45_k(src, dst, n, 31); break;
    case KVL_TYPE_Q6_K: quantize_q6_k(src, dst, n); break;
    default: KVL_ASSERT(!"kvl_kq_quantize_row: not a K-quant type");
    }
}

void kvl_kq_dequantize_row(kvl_type t, const void *src, float *dst, int64_t n) {
    switch (t) {
    case KVL_TYPE_Q2_K: dequantize_q2_k(src, dst, n); break;
    case KVL_TYPE_Q3_K: dequantize_q3_k(src, dst, n); break;
    case KVL_TYPE_Q4_K: dequantize_q4_k(src, dst, n); break;
    case KVL_TYPE_Q5_K: dequantize_q5_k(src, dst, n); break;
    case KVL_TYPE_Q6_K: dequantize_q6_k(src, dst, n); break;
    default: KVL_ASSERT(!"kvl_kq_dequantize_row: not a K-quant type");
    }
}

/* round(v) of a value that should lie in [-127, 127]; NaN maps to +127
 * (as the Q8_0 activation quantizer). */
static inline int8_t round_q8(float v) {
    v = fmaxf(-127.0f, fminf(127.0f, v));
    return (int8_t)roundf(v);
}

void kvl_kq_quantize_act_scalar(const float *x, int64_t n_cols, int64_t s0, int64_t s1,
                                uint8_t *dst) {
    int8_t *qs = (int8_t *)dst;
    float *dx = (float *)(dst + n_cols);
    int16_t *bs = (int16_t *)(dx + n_cols / KVL_QK_K);
    for (int64_t s = s0; s < s1; s++) {
        const float *xb = x + s * KVL_QK_K;
        float amax = 0.0f;
        for (int i = 0; i < KVL_QK_K; i++)
            amax = fmaxf(amax, fabsf(xb[i]));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int g = 0; g < 16; g++) {
            int sum = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
                const int8_t q = round_q8(xb[i] * id);
                qs[s * KVL_QK_K + i] = q;
                sum += q;
            }
            bs[s * 16 + g] = (int16_t)sum;
        }
        dx[s] = d;
    }
}

/* The integer part of one super-block product and its float factors:
 * w . x = dx * (d * isum - dmin * imin). */
static float dot_sb(kvl_type t, const uint8_t *blk, const int8_t *q, const int16_t *bs, float dx) {
    if (t == KVL_TYPE_Q2_K) {
        const kvl_block_q2_k *b = (const kvl_block_q2_k *)blk;
        int32_t isum = 0, imin = 0;
        for (int g = 0; g < 16; g++) {
            int32_t s = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++)
                s += q2k_at(b, i) * q[i];
            isum += (b->scales[g] & 0x0f) * s;
            imin += (b->scales[g] >> 4) * bs[g];
        }
        return (float)isum * (kvl_fp16_to_f32(b->d) * dx) -
               (float)imin * (kvl_fp16_to_f32(b->dmin) * dx);
    }
    if (t == KVL_TYPE_Q4_K || t == KVL_TYPE_Q5_K) {
        /* the same header: d, dmin, scales */
        const kvl_block_q4_k *b = (const kvl_block_q4_k *)blk;
        const uint8_t *qs = t == KVL_TYPE_Q4_K ? b->qs : ((const kvl_block_q5_k *)blk)->qs;
        const uint8_t *qh = t == KVL_TYPE_Q5_K ? ((const kvl_block_q5_k *)blk)->qh : NULL;
        uint8_t sc[8], m[8];
        kvl_q4k_scales(b->scales, sc, m);
        int32_t isum = 0, imin = 0;
        for (int j = 0; j < 8; j++) {
            int32_t s = 0;
            for (int l = 0; l < 32; l++) {
                int w = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 0x0f;
                if (qh)
                    w |= ((qh[l] >> j) & 1) << 4;
                s += w * q[32 * j + l];
            }
            isum += sc[j] * s;
            imin += m[j] * (bs[2 * j] + bs[2 * j + 1]);
        }
        return (float)isum * (kvl_fp16_to_f32(b->d) * dx) -
               (float)imin * (kvl_fp16_to_f32(b->dmin) * dx);
    }
    if (t == KVL_TYPE_Q3_K) {
        const kvl_block_q3_k *b = (const kvl_block_q3_k *)blk;
        int8_t sc[16];
        kvl_q3k_scales(b->scales, sc);
        int32_t isum = 0;
        for (int g = 0; g < 16; g++) {
            int32_t s = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++)
                s += q3k_at(b, i) * q[i];
            isum += sc[g] * (s - 4 * bs[g]);
        }
        return (float)isum * (kvl_fp16_to_f32(b->d) * dx);
    }
    const kvl_block_q6_k *b = (const kvl_block_q6_k *)blk;
    int32_t isum = 0;
    for (int g = 0; g < 16; g++) {
        int32_t s = 0;
        for (int i = 16 * g; i < 16 * g + 16; i++)
            s += q6k_at(b, i) * q[i];
        isum += b->scales[g] * (s - 32 * bs[g]);
    }
    return (float)isum * (kvl_fp16_to_f32(b->d) * dx);
}

void kvl_kq_rows_scalar(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const int64_t ns = c->n_cols / KVL_QK_K;
    const size_t bb = kvl_kq_block_bytes(c->t);
    for (int64_t tok = 0; tok < c->n_tok; tok++) {
        const int8_t *q = kvl_act_qs(c, tok);
        const float *dx = kvl_kq_act_d(c, tok);
        const int16_t *bs = kvl_kq_act_bsums(c, tok);
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = c->W + (size_t)r * c->w_row_bytes;
            float s = 0.0f;
            for (int64_t k = 0; k < ns; k++)
                s += dot_sb(c->t, row + (size_t)k * bb, q + k * KVL_QK_K, bs + k * 16, dx[k]);
            c->Y[tok * c->n_rows + r] = s;
        }
    }
}

/* ---- Q5_0, Q5_1 ---- */

#define Q5_0_XMAX 1e6f   /* d = max / -16 stays below fp16's 65504 */
#define Q5_1_XMAX 6.5e4f /* m = min is itself an fp16 */

/* Q5_0: d = x_max / -16 (x_max the value of largest magnitude, with its
 * sign), q = round(x / d) + 16 against the stored d, clamped to 0..31.
 * Q5_1: d = (max - min) / 31, m = min, q = round((x - m) / d), against the
 * stored d and m. */
static void quantize_q5(kvl_type t, const float *src, void *dst, int64_t n) {
    float x[32];
    for (int64_t k = 0; k < n / 32; k++) {
        sanitize_to(src + k * 32, x, 32, t == KVL_TYPE_Q5_0 ? Q5_0_XMAX : Q5_1_XMAX);
        uint8_t *qh, *qs;
        float df, mf = 0.0f;
        if (t == KVL_TYPE_Q5_0) {
            kvl_block_q5_0 *b = (kvl_block_q5_0 *)dst + k;
            float mx = 0.0f;
            for (int i = 0; i < 32; i++)
                if (fabsf(x[i]) > fabsf(mx))
                    mx = x[i];
            b->d = kvl_f32_to_fp16(mx / -16.0f);
            df = kvl_fp16_to_f32(b->d);
            qh = b->qh;
            qs = b->qs;
        } else {
            kvl_block_q5_1 *b = (kvl_block_q5_1 *)dst + k;
            float lo = x[0], hi = x[0];
            for (int i = 1; i < 32; i++) {
                lo = fminf(lo, x[i]);
                hi = fmaxf(hi, x[i]);
            }
            b->d = kvl_f32_to_fp16((hi - lo) / 31.0f);
            b->m = kvl_f32_to_fp16(lo);
            df = kvl_fp16_to_f32(b->d);
            mf = kvl_fp16_to_f32(b->m);
            qh = b->qh;
            qs = b->qs;
        }
        memset(qh, 0, 4);
        memset(qs, 0, 16);
        for (int i = 0; i < 32; i++) {
            int q;
            if (t == KVL_TYPE_Q5_0)
                q = df != 0.0f ? iround(x[i] / df + 16.0f, 0, 31) : 16;
            else
                q = df != 0.0f ? iround((x[i] - mf) / df, 0, 31) : 0;
            qs[i % 16] |= (uint8_t)((q & 0x0f) << (4 * (i / 16)));
            qh[i / 8] |= (uint8_t)((q >> 4) << (i % 8));
        }
    }
}

void kvl_q5_quantize_row(kvl_type t, const float *src, void *dst, int64_t n) {
    KVL_ASSERT(kvl_is_q5(t));
    quantize_q5(t, src, dst, n);
}

void kvl_q5_dequantize_row(kvl_type t, const void *src, float *dst, int64_t n) {
    KVL_ASSERT(kvl_is_q5(t));
    for (int64_t k = 0; k < n / 32; k++) {
        const uint8_t *qh, *qs;
        float d, m;
        if (t == KVL_TYPE_Q5_0) {
            const kvl_block_q5_0 *b = (const kvl_block_q5_0 *)src + k;
            d = kvl_fp16_to_f32(b->d);
            m = -16.0f * d;
            qh = b->qh;
            qs = b->qs;
        } else {
            const kvl_block_q5_1 *b = (const kvl_block_q5_1 *)src + k;
            d = kvl_fp16_to_f32(b->d);
            m = kvl_fp16_to_f32(b->m);
            qh = b->qh;
            qs = b->qs;
        }
        for (int i = 0; i < 32; i++) {
            const int q = kvl_q5_at(qh, qs, i);
            dst[k * 32 + i] = t == KVL_TYPE_Q5_0 ? d * (float)(q - 16) : d * (float)q + m;
        }
    }
}

void kvl_q5_rows_scalar(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const int64_t nb = c->n_cols / 32;
    const bool q50 = c->t == KVL_TYPE_Q5_0;
    const size_t bb = q50 ? sizeof(kvl_block_q5_0) : sizeof(kvl_block_q5_1);
    for (int64_t tok = 0; tok < c->n_tok; tok++) {
        const int8_t *qx = kvl_act_qs(c, tok);
        const float *dx = kvl_act_dx(c, tok);
        const int32_t *corr = kvl_act_corr(c, tok);
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = c->W + (size_t)r * c->w_row_bytes;
            float s = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                const uint8_t *blk = row + (size_t)b * bb;
                /* Q5_1 has m between d and qh */
                const uint8_t *qh = blk + (q50 ? 2 : 4), *qs = qh + 4;
                uint16_t d16, m16 = 0;
                memcpy(&d16, blk, 2);
                if (!q50)
                    memcpy(&m16, blk + 2, 2);
                int32_t isum = 0;
                for (int i = 0; i < 32; i++)
                    isum += kvl_q5_at(qh, qs, i) * qx[b * 32 + i];
                /* corr = -k_corr * sum(q_x): Q5_0 -16 sum, Q5_1 -sum */
                if (q50)
                    s += (float)(isum + corr[b * 8]) * (kvl_fp16_to_f32(d16) * dx[b * 8]);
                else
                    s += (float)isum * (kvl_fp16_to_f32(d16) * dx[b * 8]) -
                         (float)corr[b * 8] * (kvl_fp16_to_f32(m16) * dx[b * 8]);
            }
            c->Y[tok * c->n_rows + r] = s;
        }
    }
}
