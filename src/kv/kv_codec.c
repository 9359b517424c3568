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
 *   int4  z = bf16 rounded DOWN of min(group), s = bf16 rounded up of
 *         (max - z) / 15 (computed in double: max - min may overflow f32);
 *         n = rint((x - z) / s) clamped to [0, 15]; decode fmaf(s, n, z).
 * Rounding the scale up and the zero down keeps every code inside its range
 * so clamping only ever moves a value by less than half a step.
 *
 * Invariants: no float -> int conversion sees NaN, inf or an out-of-range
 * value (each is clamped first: UBSan-clean); a group with a non-finite
 * value gets a NaN scale (kv_codec.h).
 *
 * Must not: allocate; read or write outside the chunk and the given rows.
 */
#include "kv/kv_codec.h"

#include <float.h>
#include <math.h>

#define BF16_NAN ((uint16_t)0x7fc0)
#define BF16_MAX_BITS ((uint16_t)0x7f7f)

kvl_kvq_codec kvl_kv_codec_for(kvl_kv_format f, kvl_kv_role r) {
    switch (f) {
    case KVL_KV_FMT_F32: return KVL_KVQ_F32;
    case KVL_KV_FMT_F16: return KVL_KVQ_F16;
    case KVL_KV_FMT_BF16: return KVL_KVQ_BF16;
    case KVL_KV_FMT_FP8_E4M3: return KVL_KVQ_E4M3;
    case KVL_KV_FMT_FP8_E5M2: return KVL_KVQ_E5M2;
    case KVL_KV_FMT_INT8: return KVL_KVQ_I8;
    case KVL_KV_FMT_INT4: return r == KVL_KV_ROLE_K ? KVL_KVQ_I4C : KVL_KVQ_I4T;
    default: KVL_ASSERT(!"kv codec: bad format"); return KVL_KVQ_F32;
    }
}

bool kvl_kv_codec_deferred(kvl_kvq_codec c) {
    return c == KVL_KVQ_E4M3 || c == KVL_KVQ_E5M2 || c == KVL_KVQ_I4C || c == KVL_KVQ_I4T;
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

static void encode_fp8(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd,
                       const float *rows, int32_t n) {
    const bool e4 = c == KVL_KVQ_E4M3;
    const double fmax = e4 ? 448.0 : 57344.0;
    const size_t ne = (size_t)n * (size_t)hd, db = kvl_kvq_data_bytes(c, bs, hd);
    double amax = 0.0;
    bool bad = false;
    for (size_t i = 0; i < ne; i++) {
        if (!isfinite(rows[i]))
            bad = true;
        else if (fabs((double)rows[i]) > amax)
            amax = fabs((double)rows[i]);
    }
    memset(chunk, 0, db);
    if (bad) {
        wr_f32(chunk + db, NAN);
        return;
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
        chunk[i] = fp8_encode((double)rows[i] / (double)s, e4 ? 3 : 2, e4 ? 7 : 15, fmax);
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

/* Scale and zero of a group with values in [lo, hi] (finite). */
static void i4_params(double lo, double hi, uint16_t *sb, uint16_t *zb) {
    uint16_t z = kvl_kvq_bf16_down((float)lo);
    if ((z & 0x7fff) == 0x7f80) /* lo below -bf16 max */
        z = (uint16_t)(0x8000 | BF16_MAX_BITS);
    double zf = kvl_bf16_to_f32(z);
    double range = hi - zf;
    *zb = z;
    float sf = (float)(range / 15.0);
    if (sf == 0.0f && range > 0.0) /* a range of a few denormals */
        sf = FLT_TRUE_MIN;
    *sb = range <= 0.0 ? 0 : kvl_kvq_bf16_up(sf);
}

/* Highest code whose decode fmaf(s, n, z) stays finite: 15 except for
 * groups reaching FLT_MAX, where s (rounded up) * 15 + z can pass it. */
static inline double i4_top(double s, double z) {
    if (!(s > 0.0) || z + 15.0 * s <= (double)FLT_MAX)
        return 15.0;
    return floor(((double)FLT_MAX - z) / s);
}

static inline uint8_t i4_code(double x, double s, double z, double top) {
    if (!(s > 0.0))
        return 0;
    double v = (x - z) / s;
    v = v > top ? top : v < 0.0 ? 0.0 : v;
    return (uint8_t)(int)nearbyint(v);
}

static inline void put_nib(uint8_t *data, size_t e, uint8_t n) {
    uint8_t *b = data + (e >> 1);
    *b = (e & 1) ? (uint8_t)((*b & 0x0f) | (n << 4)) : (uint8_t)((*b & 0xf0) | n);
}

static void encode_i4(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd,
                      const float *rows, int32_t n) {
    const size_t db = kvl_kvq_data_bytes(c, bs, hd);
    memset(chunk, 0, kvl_kvq_chunk_bytes(c, bs, hd));
    uint8_t *sc = chunk + db;
    const bool per_channel = c == KVL_KVQ_I4C;
    /* a group is channel d over rows [0, n) (I4C) or row r over its hd
     * channels (I4T) */
    const int32_t n_groups = per_channel ? hd : n, n_in = per_channel ? n : hd;
    const size_t n_sc = per_channel ? (size_t)hd : (size_t)bs;
    for (int32_t g = 0; g < n_groups; g++) {
        double lo = INFINITY, hi = -INFINITY;
        bool bad = false;
        for (int32_t k = 0; k < n_in; k++) {
            float v = per_channel ? rows[(size_t)k * hd + g] : rows[(size_t)g * hd + k];
            if (!isfinite(v)) {
                bad = true;
                continue;
            }
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        uint16_t sb = BF16_NAN, zb = 0;
        if (!bad)
            i4_params(lo, hi, &sb, &zb);
        wr_u16(sc + (size_t)g * 2, sb);
        wr_u16(sc + (n_sc + (size_t)g) * 2, zb);
        if (bad)
            continue;
        double s = kvl_bf16_to_f32(sb), z = kvl_bf16_to_f32(zb), top = i4_top(s, z);
        for (int32_t k = 0; k < n_in; k++) {
            size_t idx = per_channel ? (size_t)k * hd + g : (size_t)g * hd + k;
            put_nib(chunk, idx, i4_code(rows[idx], s, z, top));
        }
    }
    if (!per_channel) /* rows n..bs-1: scale 0 and zero 0 decode to 0 */
        return;
    /* I4C rows n..bs-1 are already zero codes: they decode to z, unused */
}

/* ---- entry points ------------------------------------------------------ */

void kvl_kv_encode_row(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd, int32_t r,
                       const float *x) {
    KVL_ASSERT(r >= 0 && r < bs);
    const size_t e0 = (size_t)r * (size_t)hd;
    switch (c) {
    case KVL_KVQ_F32:
        memcpy(chunk + e0 * 4, x, (size_t)hd * 4);
        break;
    case KVL_KVQ_F16:
        for (int32_t d = 0; d < hd; d++)
            wr_u16(chunk + (e0 + (size_t)d) * 2, f16_sat(x[d]));
        break;
    case KVL_KVQ_BF16:
        for (int32_t d = 0; d < hd; d++)
            wr_u16(chunk + (e0 + (size_t)d) * 2, bf16_sat(x[d]));
        break;
    case KVL_KVQ_I8:
        encode_i8_row(chunk, bs, hd, r, x);
        break;
    default:
        KVL_ASSERT(!"kv codec: deferred codec encoded by row");
    }
}

void kvl_kv_encode_block(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd,
                         const float *rows, int32_t n) {
    KVL_ASSERT(n >= 0 && n <= bs);
    switch (c) {
    case KVL_KVQ_E4M3:
    case KVL_KVQ_E5M2:
        encode_fp8(c, chunk, bs, hd, rows, n);
        break;
    case KVL_KVQ_I4C:
    case KVL_KVQ_I4T:
        encode_i4(c, chunk, bs, hd, rows, n);
        break;
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
    case KVL_KVQ_I8: {
        /* the encoder's own scale: a denormal amax gets a coarse scale */
        double s = kvl_bf16_to_f32(kvl_kvq_bf16_up((float)amax / 127.0f));
        return (s == 0.0 ? amax : s / 2.0) + slack;
    }
    case KVL_KVQ_I4C:
    case KVL_KVQ_I4T: {
        uint16_t zb = kvl_kvq_bf16_down((float)lo);
        if ((zb & 0x7fff) == 0x7f80)
            zb = 0xff7f;
        double z = kvl_bf16_to_f32(zb);
        float sf = (float)((hi - z) / 15.0);
        if (sf == 0.0f && hi > z)
            sf = FLT_TRUE_MIN;
        double s = kvl_bf16_to_f32(kvl_kvq_bf16_up(sf));
        double clamp = z > lo ? z - lo : 0.0;
        if (z + 15.0 * s > (double)FLT_MAX) /* top code held back from inf: one step */
            clamp = fmax(clamp, s);
        return fmax(s / 2.0, clamp) + slack + (hi - lo) * 1e-6;
    }
    default: return 0.0;
    }
}
