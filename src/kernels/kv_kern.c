/*
 * kv_kern.c: chunk sizes, the reference decoder and the scalar reference of
 * the fused KV attention kernels for every storage format (layouts in
 * kv_kern.h), and the dispatch to the AVX2 / AVX-512 paths.
 *
 * Invariants:
 *   - the reference decodes each element with exactly the formula in
 *     kv_kern.h; the SIMD paths decode to the same floats, so reference and
 *     fast path differ only in summation order (and the I8 accum's folded
 *     scale; tests bound that);
 *   - a row is decoded once per call into a stack row of at most
 *     KVL_MAX_HEAD_DIM floats and used for every head of the group;
 *   - I8 keys score with the quantized query (prep_q_i8) and an exact
 *     integer dot product, the semantics every path shares (kv_kern.h).
 *
 * Must not: allocate, write anything but S / acc, or read past the chunk.
 */
#include "kernels/kv_kern.h"

#include "core/dtype.h"
#include "kernels/kernels.h"

#include <float.h>
#include <math.h>

static const char *const k_names[KVL_KVQ_COUNT] = {"f32", "f16", "bf16", "e4m3",  "e5m2",
                                                   "i8",  "i4c", "i4t",  "e4m3c", "e5m2c"};

const char *kvl_kvq_codec_name(kvl_kvq_codec c) {
    return (int)c >= 0 && c < KVL_KVQ_COUNT ? k_names[c] : "?";
}

size_t kvl_kvq_data_bytes(kvl_kvq_codec c, int32_t bs, int32_t hd) {
    size_t n = (size_t)bs * (size_t)hd;
    switch (c) {
    case KVL_KVQ_F32: return n * 4;
    case KVL_KVQ_F16:
    case KVL_KVQ_BF16: return n * 2;
    case KVL_KVQ_E4M3:
    case KVL_KVQ_E5M2:
    case KVL_KVQ_E4M3C:
    case KVL_KVQ_E5M2C:
    case KVL_KVQ_I8: return n;
    case KVL_KVQ_I4C:
    case KVL_KVQ_I4T: return (n + 1) / 2;
    default: return 0;
    }
}

size_t kvl_kvq_chunk_bytes(kvl_kvq_codec c, int32_t bs, int32_t hd) {
    size_t d = kvl_kvq_data_bytes(c, bs, hd);
    switch (c) {
    case KVL_KVQ_E4M3:
    case KVL_KVQ_E5M2: return d + 4;
    case KVL_KVQ_E4M3C:
    case KVL_KVQ_E5M2C: return d + 4 + 2 * (size_t)hd;
    case KVL_KVQ_I8: return d + 2 * (size_t)bs;
    case KVL_KVQ_I4C: return d + 3 * (size_t)hd;
    case KVL_KVQ_I4T: return d + 3 * (size_t)bs;
    default: return d;
    }
}

uint16_t kvl_kvq_bf16_up(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if (u & 0x80000000u) /* -0 or negative: 0 is >= x */
        return 0;
    if (u & 0xffffu) {
        u = (u >> 16) + 1; /* 0x7f7f + 1 = inf only when x > bf16 max */
        return (uint16_t)u;
    }
    return (uint16_t)(u >> 16);
}

uint16_t kvl_kvq_bf16_down(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if (!(u & 0xffffu))
        return (uint16_t)(u >> 16);
    if (u & 0x80000000u) /* negative: a larger magnitude is smaller */
        return (uint16_t)((u >> 16) + 1);
    return (uint16_t)(u >> 16); /* positive: truncation rounds down */
}

/* ---- reference decoder ------------------------------------------------- */

static inline float e4m3_half(uint8_t b) {
    return kvl_fp16_to_f32((uint16_t)(((b & 0x7fu) << 7) | ((b & 0x80u) << 8)));
}

void kvl_kvq_decode_row(kvl_kvq_codec c, const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r,
                        float *out) {
    const size_t db = kvl_kvq_data_bytes(c, bs, hd);
    const size_t e0 = (size_t)r * (size_t)hd;
    switch (c) {
    case KVL_KVQ_F32: memcpy(out, chunk + e0 * 4, (size_t)hd * 4); break;
    case KVL_KVQ_F16:
        for (int32_t d = 0; d < hd; d++)
            out[d] = kvl_fp16_to_f32(kvl_kvq_rd_u16(chunk + (e0 + (size_t)d) * 2));
        break;
    case KVL_KVQ_BF16:
        for (int32_t d = 0; d < hd; d++)
            out[d] = kvl_bf16_to_f32(kvl_kvq_rd_u16(chunk + (e0 + (size_t)d) * 2));
        break;
    case KVL_KVQ_E4M3: {
        const float s = kvl_kvq_rd_f32(chunk + db) * 256.0f;
        for (int32_t d = 0; d < hd; d++)
            out[d] = e4m3_half(chunk[e0 + (size_t)d]) * s;
        break;
    }
    case KVL_KVQ_E5M2: {
        const float s = kvl_kvq_rd_f32(chunk + db);
        for (int32_t d = 0; d < hd; d++)
            out[d] = kvl_fp16_to_f32((uint16_t)(chunk[e0 + (size_t)d] << 8)) * s;
        break;
    }
    case KVL_KVQ_I8: {
        const float s = kvl_bf16_to_f32(kvl_kvq_rd_u16(chunk + db + (size_t)r * 2));
        for (int32_t d = 0; d < hd; d++)
            out[d] = (float)(int8_t)chunk[e0 + (size_t)d] * s;
        break;
    }
    case KVL_KVQ_E4M3C:
    case KVL_KVQ_E5M2C: {
        const bool e4 = c == KVL_KVQ_E4M3C;
        const float s = kvl_kvq_rd_f32(chunk + db) * (e4 ? 256.0f : 1.0f);
        const uint8_t *mu = chunk + db + 4;
        for (int32_t d = 0; d < hd; d++) {
            const uint8_t b = chunk[e0 + (size_t)d];
            const float h = e4 ? e4m3_half(b) : kvl_fp16_to_f32((uint16_t)(b << 8));
            out[d] = fmaf(h, s, kvl_bf16_to_f32(kvl_kvq_rd_u16(mu + (size_t)d * 2)));
        }
        break;
    }
    case KVL_KVQ_I4C:
    case KVL_KVQ_I4T: {
        const uint8_t *sc = chunk + db;
        const size_t n_sc = c == KVL_KVQ_I4C ? (size_t)hd : (size_t)bs;
        for (int32_t d = 0; d < hd; d++) {
            size_t e = e0 + (size_t)d;
            uint8_t b = chunk[e >> 1];
            int n = (e & 1) ? b >> 4 : b & 0x0f;
            size_t j = c == KVL_KVQ_I4C ? (size_t)d : (size_t)r;
            float s = kvl_bf16_to_f32(kvl_kvq_rd_u16(sc + j * 2));
            int z = (int8_t)sc[n_sc * 2 + j];
            out[d] = (float)(n + z) * s;
        }
        break;
    }
    default: KVL_ASSERT(!"kv_kern: bad codec");
    }
}

/* ---- scalar reference kernels ------------------------------------------ */

#define DEF_REF(codec, tag)                                                                        \
    static void scores_ref_##tag(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0,         \
                                 int32_t r1, const void *qp, int32_t n_q, float *S,                \
                                 int32_t s_stride) {                                               \
        const float *q = qp;                                                                       \
        float row[KVL_MAX_HEAD_DIM];                                                               \
        for (int32_t i = r0; i < r1; i++) {                                                        \
            kvl_kvq_decode_row(codec, chunk, bs, hd, i, row);                                      \
            for (int32_t g = 0; g < n_q; g++) {                                                    \
                const float *qg = q + (int64_t)g * hd;                                             \
                float acc = 0.0f;                                                                  \
                for (int32_t d = 0; d < hd; d++)                                                   \
                    acc += qg[d] * row[d];                                                         \
                S[(int64_t)g * s_stride + (i - r0)] = acc;                                         \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    DEF_REF_ACCUM(codec, tag)

#define DEF_REF_ACCUM(codec, tag)                                                                  \
    static void accum_ref_##tag(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0,          \
                                int32_t r1, const float *W, int32_t w_stride, int32_t n_q,         \
                                float *acc) {                                                      \
        float row[KVL_MAX_HEAD_DIM];                                                               \
        for (int32_t i = r0; i < r1; i++) {                                                        \
            kvl_kvq_decode_row(codec, chunk, bs, hd, i, row);                                      \
            for (int32_t g = 0; g < n_q; g++) {                                                    \
                const float w = W[(int64_t)g * w_stride + (i - r0)];                               \
                float *ag = acc + (int64_t)g * hd;                                                 \
                for (int32_t d = 0; d < hd; d++)                                                   \
                    ag[d] += w * row[d];                                                           \
            }                                                                                      \
        }                                                                                          \
    }

/* rintf for |x| < 2^22 (round half to even, the default rounding mode):
 * adding 1.5 * 2^23 leaves no fraction bits (a -0 comes out +0, the
 * same int8). Inline, unlike libm's rintf on a baseline x86-64 build. */
static inline float rint_small(float x) {
    return (x + 12582912.0f) - 12582912.0f; /* not folded: C keeps float sums */
}

/* I8 keys: the query quantized per head to two int8 terms (kv_kern.h),
 * integer dot products. */
static void prep_q_i8(const float *q, int32_t n_q, int32_t hd, void *qp) {
    const kvl_kvq_i8q at = kvl_kvq_i8q_at(qp, n_q, hd);
    float *sq = at.s;
    uint8_t *sums = at.sums; /* sum h, then sum l */
    int8_t *ch = at.h, *cl = at.l;
    for (int32_t g = 0; g < n_q; g++) {
        const float *qg = q + (int64_t)g * hd;
        int8_t *hg = ch + (int64_t)g * hd, *lg = cl + (int64_t)g * hd;
        float a = 0.0f;
        bool finite = true;
        for (int32_t d = 0; d < hd; d++) {
            const float v = fabsf(qg[d]);
            finite = finite && v <= FLT_MAX;
            a = v > a ? v : a;
        }
        int32_t sh = 0, sl = 0;
        if (!finite || a < 1e-36f) {
            sq[g] = finite ? 0.0f : NAN;
            memset(hg, 0, (size_t)hd);
            memset(lg, 0, (size_t)hd);
        } else {
            const float inv = 127.0f / a;
            sq[g] = a / 127.0f;
            for (int32_t d = 0; d < hd; d++) {
                const float t = qg[d] * inv;
                float h = rint_small(t);
                h = h > 127.0f ? 127.0f : h < -127.0f ? -127.0f : h;
                float l = rint_small((t - h) * 254.0f);
                l = l > 127.0f ? 127.0f : l < -127.0f ? -127.0f : l;
                hg[d] = (int8_t)h;
                lg[d] = (int8_t)l;
                sh += hg[d];
                sl += lg[d];
            }
        }
        memcpy(sums + 4 * (size_t)g, &sh, 4);
        memcpy(sums + 4 * ((size_t)n_q + (size_t)g), &sl, 4);
    }
}

static void scores_ref_i8q(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0, int32_t r1,
                           const void *qp, int32_t n_q, float *S, int32_t s_stride) {
    const kvl_kvq_i8q_c v = kvl_kvq_i8q_view(qp, n_q, hd);
    const float *sq = v.s;
    const int8_t *ch = v.h, *cl = v.l;
    const uint8_t *sc = chunk + kvl_kvq_data_bytes(KVL_KVQ_I8, bs, hd);
    for (int32_t i = r0; i < r1; i++) {
        const int8_t *k = (const int8_t *)chunk + (size_t)i * (size_t)hd;
        const float s_row = kvl_bf16_to_f32(kvl_kvq_rd_u16(sc + (size_t)i * 2));
        for (int32_t g = 0; g < n_q; g++) {
            const int8_t *hg = ch + (int64_t)g * hd, *lg = cl + (int64_t)g * hd;
            int32_t H = 0, L = 0;
            for (int32_t d = 0; d < hd; d++) {
                H += (int32_t)hg[d] * (int32_t)k[d];
                L += (int32_t)lg[d] * (int32_t)k[d];
            }
            S[(int64_t)g * s_stride + (i - r0)] =
                fmaf((float)L, 1.0f / 254.0f, (float)H) * (sq[g] * s_row);
        }
    }
}

DEF_REF(KVL_KVQ_F32, f32)
DEF_REF(KVL_KVQ_F16, f16)
DEF_REF(KVL_KVQ_BF16, bf16)
DEF_REF(KVL_KVQ_E4M3, e4m3)
DEF_REF(KVL_KVQ_E5M2, e5m2)
DEF_REF_ACCUM(KVL_KVQ_I8, i8)
DEF_REF(KVL_KVQ_I4C, i4c)
DEF_REF(KVL_KVQ_I4T, i4t)
DEF_REF(KVL_KVQ_E4M3C, e4m3c)
DEF_REF(KVL_KVQ_E5M2C, e5m2c)
#undef DEF_REF
#undef DEF_REF_ACCUM

kvl_kvq_ops kvl_kvq_ops_ref(kvl_kvq_codec c) {
    static const kvl_kvq_ops t[KVL_KVQ_COUNT] = {
        {NULL, scores_ref_f32, accum_ref_f32},     {NULL, scores_ref_f16, accum_ref_f16},
        {NULL, scores_ref_bf16, accum_ref_bf16},   {NULL, scores_ref_e4m3, accum_ref_e4m3},
        {NULL, scores_ref_e5m2, accum_ref_e5m2},   {prep_q_i8, scores_ref_i8q, accum_ref_i8},
        {NULL, scores_ref_i4c, accum_ref_i4c},     {NULL, scores_ref_i4t, accum_ref_i4t},
        {NULL, scores_ref_e4m3c, accum_ref_e4m3c}, {NULL, scores_ref_e5m2c, accum_ref_e5m2c},
    };
    KVL_ASSERT((int)c >= 0 && c < KVL_KVQ_COUNT);
    return t[c];
}

float kvl_kvq_scale_max(float *x, int32_t n, float scale) {
#if defined(__x86_64__)
    if (kvl_isa_active() == KVL_ISA_AVX512)
        return kvl_kvq_scale_max_avx512(x, n, scale);
#endif
    float m = -INFINITY;
    for (int32_t i = 0; i < n; i++) {
        x[i] *= scale;
        m = x[i] > m ? x[i] : m;
    }
    return m;
}

kvl_kvq_ops kvl_kvq_ops_get(kvl_kvq_codec c, int32_t hd) {
    kvl_kvq_ops r = kvl_kvq_ops_ref(c), f = {0};
#if defined(__x86_64__)
    switch (kvl_isa_active()) {
    case KVL_ISA_AVX512:
        if (hd % 16 == 0) {
            f = kvl_kvq_ops_avx512(c);
            break;
        }
        /* fall through */
    case KVL_ISA_AVX2:
        if (hd % 8 == 0)
            f = kvl_kvq_ops_avx2(c);
        break;
    default: break;
    }
#else
    (void)hd;
#endif
    if (f.scores) /* prep_q stays the reference's: one query format per codec */
        r.scores = f.scores;
    if (f.accum)
        r.accum = f.accum;
    return r;
}
