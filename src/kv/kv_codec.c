/*
 * kv_codec.c: the encoders of every KV storage format (chunk layouts in
 * src/kernels/kv_kern.h; the decoders and fused attention kernels live
 * there too, so kernels never depend on this module).
 *
 * How scales are chosen (amax-based, from the data, never a fixed 1.0):
 *   fp8   s = amax(block) / fmax (448 e4m3, 57344 e5m2), f32, nudged down
 *         one ulp if fmax * s would overflow; y = x / s rounded to nearest
 *         even on the fp8 grid and saturated to +-fmax.
 *   int8  s = bf16 rounded UP of amax(row) / 127, so |x / s| <= 127 and the
 *         stored scale is the one used for rounding; n = rint(x / s).
 *   fp8 K (E4M3C, E5M2C): first mu_d = bf16 of the mean of channel d over
 *         the block's rows; then the differences x - mu_d (mu as stored)
 *         are coded as above, and decode adds mu_d back. Keys carry
 *         channels with large offsets that persist across tokens; fp8's
 *         error is relative to the magnitude, so coding the differences
 *         spends the 3 mantissa bits on what varies (stories260K: +2.4% ->
 *         +0.2% perplexity, bench/RESULTS.md).
 *   int4  an integer grid: x ~ (n + z) * s with n in [0, 15] and z an int8
 *         zero point. For a range [lo, hi]: s = bf16 rounded up of
 *         max((hi - lo) / 15, -lo / 128, lo / 127.99), then z = floor(lo /
 *         s), and s grows one bf16 step at a time until (z + 15) * s >= hi
 *         (at most (hi - lo) / 14: a few steps). A constant c becomes
 *         s = bf16_up(|c|), z = +-1, exact when bf16 holds c.
 *         Values (I4T, per token) use the row's min and max. Keys (I4C, per
 *         channel over the block) search clipped ranges lo + 4a% and
 *         hi - 4b% of the range, a, b in [0, 6], for the least squared error
 *         over the group: a with b = 0, then b, then a again (19 ranges;
 *         min/max first, so never worse than min/max); n = rint(x / s - z)
 *         clamped to the codes whose decode is finite.
 * The int8 scale is rounded up so that no code saturates; fp8 and int4
 * scales come from the data with the same care (denormal and FLT_MAX
 * groups included, tests/test_kv_codec.c).
 *
 * Invariants: no float -> int conversion sees NaN, inf or an out-of-range
 * value (each is clamped first: UBSan-clean); a group with a non-finite
 * value gets a NaN scale (kv_codec.h).
 *
 * Must not: allocate; read or write outside the chunk and the given rows.
 */
#include "kv/kv_codec.h"

#include "core/dtype.h"

#include <float.h>
#include <math.h>

#define BF16_NAN ((uint16_t)0x7fc0)
#define BF16_MAX_BITS ((uint16_t)0x7f7f)

kvl_kvq_codec kvl_kv_codec_for(kvl_kv_format f, kvl_kv_role r) {
    switch (f) {
    case KVL_KV_FMT_F32: return KVL_KVQ_F32;
    case KVL_KV_FMT_F16: return KVL_KVQ_F16;
    case KVL_KV_FMT_BF16: return KVL_KVQ_BF16;
    case KVL_KV_FMT_FP8_E4M3: return r == KVL_KV_ROLE_K ? KVL_KVQ_E4M3C : KVL_KVQ_E4M3;
    case KVL_KV_FMT_FP8_E5M2: return r == KVL_KV_ROLE_K ? KVL_KVQ_E5M2C : KVL_KVQ_E5M2;
    case KVL_KV_FMT_INT8: return KVL_KVQ_I8;
    case KVL_KV_FMT_INT4: return r == KVL_KV_ROLE_K ? KVL_KVQ_I4C : KVL_KVQ_I4T;
    default: KVL_ASSERT(!"kv codec: bad format"); return KVL_KVQ_F32;
    }
}

bool kvl_kv_codec_deferred(kvl_kvq_codec c) {
    return c == KVL_KVQ_E4M3 || c == KVL_KVQ_E5M2 || c == KVL_KVQ_E4M3C || c == KVL_KVQ_E5M2C ||
           c == KVL_KVQ_I4C || c == KVL_KVQ_I4T;
}

static inline void wr_u16(uint8_t *p, uint16_t h) { memcpy(p, &h, 2); }
static inline void wr_f32(uint8_t *p, float f) { memcpy(p, &f, 4); }

static uint16_t f16_sat(float x) {
    if (isfinite(x) && fabsf(x) > 65504.0f)
        x = x > 0 ? 65504.0f : -65504.0f;
    return kvl_f32_to_fp16(x);
}

static uint16_t bf16_sat(float x) {
    uint16_t h = kvl_f32_to_bf16(x);
    if (isfinite(x) && (h & 0x7fff) == 0x7f80) /* a finite value rounded to inf */
        h = (uint16_t)((h & 0x8000) | BF16_MAX_BITS);
    return h;
}

/* ---- fp8 --------------------------------------------------------------- */

/* Round y (finite) to nearest even on the fp8 grid with mbits mantissa bits
 * and exponent bias `bias`, saturating at fmax; return the code. */
static uint8_t fp8_encode(double y, int mbits, int bias, double fmax) {
    uint8_t sign = y < 0 ? 0x80 : 0;
    double a = fabs(y);
    if (a > fmax)
        a = fmax;
    if (a == 0.0)
        return sign;
    int e;
    (void)frexp(a, &e);
    int E = e - 1 < 1 - bias ? 1 - bias : e - 1; /* subnormals share the lowest quantum */
    double quantum = ldexp(1.0, E - mbits);
    double r = nearbyint(a / quantum) * quantum;
    if (r > fmax)
        r = fmax;
    if (r == 0.0)
        return sign;
    (void)frexp(r, &e);
    E = e - 1;
    int field, m;
    if (E < 1 - bias) {
        field = 0;
        m = (int)(r / ldexp(1.0, 1 - bias - mbits));
    } else {
        field = E + bias;
        m = (int)(r / ldexp(1.0, E - mbits)) - (1 << mbits);
    }
    return (uint8_t)(sign | (field << mbits) | m);
}

static void encode_fp8(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd, const float *rows,
                       int32_t n) {
    const bool e4 = c == KVL_KVQ_E4M3 || c == KVL_KVQ_E4M3C;
    const bool centered = c == KVL_KVQ_E4M3C || c == KVL_KVQ_E5M2C;
    const double fmax = e4 ? 448.0 : 57344.0;
    const size_t ne = (size_t)n * (size_t)hd, db = kvl_kvq_data_bytes(c, bs, hd);
    memset(chunk, 0, kvl_kvq_chunk_bytes(c, bs, hd));
    bool bad = false;
    for (size_t i = 0; i < ne; i++)
        bad |= !isfinite(rows[i]);
    if (bad) {
        wr_f32(chunk + db, NAN);
        return;
    }
    /* channel means (bf16; 0 for the plain codecs), in double: no overflow */
    float mu[KVL_MAX_HEAD_DIM];
    for (int32_t d = 0; d < hd; d++) {
        mu[d] = 0.0f;
        if (!centered || n == 0)
            continue;
        double sum = 0.0;
        for (int32_t r = 0; r < n; r++)
            sum += rows[(size_t)r * hd + d];
        uint16_t h = bf16_sat((float)(sum / n));
        wr_u16(chunk + db + 4 + (size_t)d * 2, h);
        mu[d] = kvl_bf16_to_f32(h);
    }
    double amax = 0.0;
    for (size_t i = 0; i < ne; i++) {
        double y = fabs((double)rows[i] - mu[i % (size_t)hd]);
        amax = y > amax ? y : amax;
    }
    float s = amax == 0.0 ? 1.0f : (float)(amax / fmax);
    if (s == 0.0f)
        s = FLT_TRUE_MIN;
    /* a denormal scale has few bits: round it up until amax fits (no
     * saturation), but never so far that fmax * s overflows */
    while ((double)s * fmax < amax && (double)s * fmax <= (double)FLT_MAX)
        s = nextafterf(s, INFINITY);
    while ((double)s * fmax > (double)FLT_MAX)
        s = nextafterf(s, 0.0f);
    wr_f32(chunk + db, s);
    for (size_t i = 0; i < ne; i++)
        chunk[i] = fp8_encode(((double)rows[i] - mu[i % (size_t)hd]) / (double)s, e4 ? 3 : 2,
                              e4 ? 7 : 15, fmax);
    if (!centered)
        return;
    /* near FLT_MAX, difference + mean can round past it: step such codes
     * one grid point toward zero until the decode is finite. A decode is at
     * most |mu| + amax rounded up by a quarter (more than e5m2's half step),
     * so ordinary blocks skip this pass. */
    double mumax = 0.0;
    for (int32_t d = 0; d < hd; d++)
        mumax = fabs((double)mu[d]) > mumax ? fabs((double)mu[d]) : mumax;
    if (mumax + amax * 1.25 <= (double)FLT_MAX)
        return;
    float out[KVL_MAX_HEAD_DIM];
    for (int32_t r = 0; r < n; r++) {
        for (int it = 0; it < 4; it++) {
            kvl_kvq_decode_row(c, chunk, bs, hd, r, out);
            bool again = false;
            for (int32_t d = 0; d < hd; d++) {
                uint8_t *b = &chunk[(size_t)r * hd + d];
                if (isinf(out[d]) && (*b & 0x7f) != 0) {
                    *b = (uint8_t)((*b & 0x80) | ((*b & 0x7f) - 1));
                    again = true;
                }
            }
            if (!again)
                break;
        }
    }
}

/* ---- int8 -------------------------------------------------------------- */

static void encode_i8_row(uint8_t *chunk, int32_t bs, int32_t hd, int32_t r, const float *x) {
    const size_t db = kvl_kvq_data_bytes(KVL_KVQ_I8, bs, hd);
    int8_t *q = (int8_t *)chunk + (size_t)r * (size_t)hd;
    uint8_t *sp = chunk + db + (size_t)r * 2;
    float amax = 0.0f;
    bool bad = false;
    for (int32_t d = 0; d < hd; d++) {
        if (!isfinite(x[d]))
            bad = true;
        else if (fabsf(x[d]) > amax)
            amax = fabsf(x[d]);
    }
    uint16_t sb = bad ? BF16_NAN : kvl_kvq_bf16_up(amax / 127.0f);
    float s = kvl_bf16_to_f32(sb);
    wr_u16(sp, sb);
    for (int32_t d = 0; d < hd; d++) {
        float v = 0.0f;
        if (!bad && s > 0.0f) {
            v = x[d] / s;
            v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
            v = rintf(v);
        }
        q[d] = (int8_t)(int)v;
    }
}

/* ---- int4 -------------------------------------------------------------- */

/* The int4 grid (n + z) * s, n in [0, 15], for a target range [lo, hi]
 * (finite, lo <= hi): see the header comment. Computed in double; the
 * scale is a bf16 (as stored). */
typedef struct {
    uint16_t sb;  /* bf16 scale */
    int z;        /* int8 zero point */
    double s;     /* the scale as a double */
    double inv;   /* 1 / s (0 when s is 0) */
    int nlo, nhi; /* codes whose decode (n + z) * s is finite in f32 */
} i4_grid;

static double bf16_up_d(double x) {
    if (x > 3.3895313892515355e38)
        x = 3.3895313892515355e38;
    float f = (float)x;
    if ((double)f < x)
        f = nextafterf(f, INFINITY);
    return kvl_bf16_to_f32(kvl_kvq_bf16_up(f));
}

static double bf16_next(double s) {
    uint16_t h = kvl_kvq_bf16_up((float)s);
    if (h >= BF16_MAX_BITS)
        return kvl_bf16_to_f32(BF16_MAX_BITS);
    return kvl_bf16_to_f32((uint16_t)(h + 1));
}

static i4_grid i4_fit(double lo, double hi) {
    i4_grid g = {0, 0, 0.0, 0.0, 0, 15};
    if (lo == 0.0 && hi == 0.0)
        return g;
    double s;
    if (lo == hi) { /* a constant: one step of |c| from zero */
        s = bf16_up_d(fabs(lo));
        g.z = lo > 0 ? 1 : -1;
    } else {
        s = (hi - lo) / 15.0;
        s = fmax(s, -lo / 128.0);
        s = fmax(s, lo / 127.99);
        s = bf16_up_d(s);
        if (s == 0.0) /* a range of a few denormals */
            s = kvl_bf16_to_f32(1);
        /* grow s until [z, z + 15] * s reaches hi: jump to hi / (z + 15)
         * when that is larger (z can only fall as s grows, so a few rounds
         * do), else one bf16 step */
        for (int it = 0; it < 64; it++) {
            double z = floor(lo / s);
            z = z < -128.0 ? -128.0 : z > 127.0 ? 127.0 : z;
            g.z = (int)z;
            if ((z + 15.0) * s >= hi)
                break;
            double s2 = z + 15.0 > 0.0 ? bf16_up_d(hi / (z + 15.0)) : s;
            if (!(s2 > s))
                s2 = bf16_next(s);
            if (s2 == s)
                break;
            s = s2;
        }
    }
    g.s = s;
    g.inv = s > 0.0 ? 1.0 / s : 0.0;
    g.sb = kvl_kvq_bf16_up((float)s);
    /* FLT_MAX-sized groups: keep the decode finite */
    while (g.nhi > 0 && (double)(g.nhi + g.z) * s > (double)FLT_MAX)
        g.nhi--;
    while (g.nlo < g.nhi && (double)(g.nlo + g.z) * s < -(double)FLT_MAX)
        g.nlo++;
    return g;
}

/* The nearest code (x finite): clamped first (also catches x far outside
 * a clipped range), then rounded to nearest even by the 1.5 * 2^52 sum,
 * exact for |v| < 2^51 (no libm call: this runs 49 x 32 times per key
 * channel per block). */
static inline int i4_code(double x, const i4_grid *g) {
    if (!(g->s > 0.0))
        return 0;
    double v = x * g->inv - g->z;
    v = v > g->nhi ? g->nhi : v < g->nlo ? g->nlo : v;
    v = (v + 6755399441055744.0) - 6755399441055744.0;
    return (int)v;
}

static inline void put_nib(uint8_t *data, size_t e, uint8_t n) {
    uint8_t *b = data + (e >> 1);
    *b = (e & 1) ? (uint8_t)((*b & 0x0f) | (n << 4)) : (uint8_t)((*b & 0xf0) | n);
}

/* Squared error of coding the k values x[i * stride] on grid g. */
static double i4_sse(const float *x, int32_t k, size_t stride, const i4_grid *g) {
    double e = 0.0;
    for (int32_t i = 0; i < k; i++) {
        double v = x[(size_t)i * stride];
        double y = (double)(i4_code(v, g) + g->z) * g->s;
        e += (y - v) * (y - v);
    }
    return e;
}

#define I4_CLIP_STEPS 6   /* clip candidates per side (keys) */
#define I4_CLIP_STEP 0.04 /* of the range per candidate */

static void encode_i4(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd, const float *rows,
                      int32_t n) {
    const size_t db = kvl_kvq_data_bytes(c, bs, hd);
    memset(chunk, 0, kvl_kvq_chunk_bytes(c, bs, hd));
    uint8_t *sc = chunk + db;
    const bool per_channel = c == KVL_KVQ_I4C;
    /* a group is channel d over rows [0, n) (I4C) or row r over its hd
     * channels (I4T) */
    const int32_t n_groups = per_channel ? hd : n, n_in = per_channel ? n : hd;
    const size_t n_sc = per_channel ? (size_t)hd : (size_t)bs;
    const size_t stride = per_channel ? (size_t)hd : 1;
    for (int32_t g = 0; g < n_groups; g++) {
        const float *x = per_channel ? rows + g : rows + (size_t)g * hd;
        double lo = INFINITY, hi = -INFINITY;
        bool bad = false;
        for (int32_t k = 0; k < n_in; k++) {
            float v = x[(size_t)k * stride];
            if (!isfinite(v)) {
                bad = true;
                continue;
            }
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        if (bad) {
            wr_u16(sc + (size_t)g * 2, BF16_NAN);
            continue;
        }
        i4_grid best = i4_fit(lo, hi);
        if (per_channel && hi > lo) {
            /* coordinate search: the low clip (high at the max), the high
             * clip at the best low, the low again at the best high: 19
             * candidates instead of the 49 of the full grid, with the same
             * perplexity on stories260K (3.5054 against 3.5058) */
            double best_e = i4_sse(x, n_in, stride, &best), r = hi - lo;
            int ab[2] = {0, 0}; /* best low and high clip steps */
            for (int pass = 0; pass < 3; pass++) {
                const int side = pass & 1, keep = ab[side];
                for (int k = 0; k <= I4_CLIP_STEPS; k++) {
                    if (k == keep)
                        continue;
                    const int a = side ? ab[0] : k, b = side ? k : ab[1];
                    i4_grid t = i4_fit(lo + r * a * I4_CLIP_STEP, hi - r * b * I4_CLIP_STEP);
                    double e = i4_sse(x, n_in, stride, &t);
                    if (e < best_e) {
                        best_e = e;
                        best = t;
                        ab[side] = k;
                    }
                }
            }
        }
        wr_u16(sc + (size_t)g * 2, best.sb);
        sc[n_sc * 2 + (size_t)g] = (uint8_t)(int8_t)best.z;
        for (int32_t k = 0; k < n_in; k++) {
            size_t idx = per_channel ? (size_t)k * hd + g : (size_t)g * hd + k;
            put_nib(chunk, idx, (uint8_t)i4_code(rows[idx], &best));
        }
    }
    /* I4C rows n..bs-1 keep code 0: they decode to z * s, never read */
}

/* ---- entry points ------------------------------------------------------ */

void kvl_kv_encode_row(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd, int32_t r,
                       const float *x) {
    KVL_ASSERT(r >= 0 && r < bs);
    const size_t e0 = (size_t)r * (size_t)hd;
    switch (c) {
    case KVL_KVQ_F32: memcpy(chunk + e0 * 4, x, (size_t)hd * 4); break;
    case KVL_KVQ_F16:
        for (int32_t d = 0; d < hd; d++)
            wr_u16(chunk + (e0 + (size_t)d) * 2, f16_sat(x[d]));
        break;
    case KVL_KVQ_BF16:
        for (int32_t d = 0; d < hd; d++)
            wr_u16(chunk + (e0 + (size_t)d) * 2, bf16_sat(x[d]));
        break;
    case KVL_KVQ_I8: encode_i8_row(chunk, bs, hd, r, x); break;
    default: KVL_ASSERT(!"kv codec: deferred codec encoded by row");
    }
}

void kvl_kv_encode_block(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd, const float *rows,
                         int32_t n) {
    KVL_ASSERT(n >= 0 && n <= bs);
    switch (c) {
    case KVL_KVQ_E4M3:
    case KVL_KVQ_E5M2:
    case KVL_KVQ_E4M3C:
    case KVL_KVQ_E5M2C: encode_fp8(c, chunk, bs, hd, rows, n); break;
    case KVL_KVQ_I4C:
    case KVL_KVQ_I4T: encode_i4(c, chunk, bs, hd, rows, n); break;
    default:
        memset(chunk, 0, kvl_kvq_chunk_bytes(c, bs, hd));
        for (int32_t r = 0; r < n; r++)
            kvl_kv_encode_row(c, chunk, bs, hd, r, rows + (size_t)r * hd);
        break;
    }
}

double kvl_kv_codec_bound(kvl_kvq_codec c, double lo, double hi, double x) {
    const double ax = fabs(x), amax = fmax(fabs(lo), fabs(hi));
    const double slack = amax * 1e-6;
    switch (c) {
    case KVL_KVQ_F32: return 0.0;
    case KVL_KVQ_F16:
        if (ax > 65504.0)
            return ax - 65504.0 + slack;
        return fmax(ax * ldexp(1.0, -11), ldexp(1.0, -25));
    case KVL_KVQ_BF16: {
        const double bmax = 3.3895313892515355e38;
        if (ax > bmax)
            return ax - bmax + slack;
        return fmax(ax * ldexp(1.0, -8), ldexp(1.0, -134));
    }
    case KVL_KVQ_E4M3:
    case KVL_KVQ_E5M2: {
        const bool e4 = c == KVL_KVQ_E4M3;
        double s = amax / (e4 ? 448.0 : 57344.0) + FLT_TRUE_MIN;
        return fmax(ax * ldexp(1.0, e4 ? -4 : -3), s * ldexp(1.0, e4 ? -10 : -17)) + slack;
    }
    case KVL_KVQ_E4M3C:
    case KVL_KVQ_E5M2C: {
        /* the coded difference x - mu (mu a bf16 inside [lo, hi] up to its
         * rounding) is at most the range plus mu's rounding; the decode's
         * final fma rounds once more */
        const bool e4 = c == KVL_KVQ_E4M3C;
        const double dmax = (hi - lo) + amax * ldexp(1.0, -8);
        double s = dmax / (e4 ? 448.0 : 57344.0) + FLT_TRUE_MIN;
        double top = ax > (double)FLT_MAX / 2 ? dmax * ldexp(1.0, e4 ? -3 : -2) : 0.0;
        return dmax * ldexp(1.0, e4 ? -4 : -3) + s * ldexp(1.0, e4 ? -10 : -17) + top +
               ax * ldexp(1.0, -24) + slack;
    }
    case KVL_KVQ_I8: {
        /* the encoder's own scale: a denormal amax gets a coarse scale */
        double s = kvl_bf16_to_f32(kvl_kvq_bf16_up((float)amax / 127.0f));
        return (s == 0.0 ? amax : s / 2.0) + slack;
    }
    case KVL_KVQ_I4C:
    case KVL_KVQ_I4T: {
        /* half a step of the min/max grid, or of a clipped grid (keys) plus
         * the clip, or the codes held back from inf near FLT_MAX */
        i4_grid g = i4_fit(lo, hi);
        double e = g.s / 2.0;
        if ((double)(g.nhi + g.z) * g.s < hi || (double)(g.nlo + g.z) * g.s > lo)
            e = fmax(
                e, g.s + fmax((double)(g.nlo + g.z) * g.s - lo, hi - (double)(g.nhi + g.z) * g.s));
        if (c == KVL_KVQ_I4C) /* a clipped grid: its own step, plus the clip */
            e = fmax(e, g.s) + (hi - lo) * I4_CLIP_STEP * I4_CLIP_STEPS;
        return e + ax * ldexp(1.0, -24) + slack + (hi - lo) * 1e-6;
    }
    default: return 0.0;
    }
}
