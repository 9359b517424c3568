/*
 * kv_kern.c: chunk sizes, the reference decoder and the scalar reference of
 * the fused KV attention kernels for every storage format (layouts in
 * kv_kern.h), and the dispatch to the AVX2 / AVX-512 paths.
 *
 * Invariants:
 *   - the reference decodes each element with exactly the formula in
 *     kv_kern.h; the SIMD paths decode to the same floats, so reference and
 *     fast path differ only in summation order (tests bound that);
 *   - a row is decoded once per call into a stack row of at most
 *     KVL_MAX_HEAD_DIM floats and used for every head of the group.
 *
 * Must not: allocate, write anything but S / acc, or read past the chunk.
 */
#include "kernels/kv_kern.h"

#include "kernels/kernels.h"
#include "model/model.h"

#include <math.h>

static const char *const k_names[KVL_KVQ_COUNT] = {"f32",  "f16", "bf16", "e4m3",
                                                   "e5m2", "i8",  "i4c",  "i4t"};

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
    case KVL_KVQ_I8: return d + 2 * (size_t)bs;
    case KVL_KVQ_I4C: return d + 4 * (size_t)hd;
    case KVL_KVQ_I4T: return d + 4 * (size_t)bs;
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

void kvl_kvq_decode_row(kvl_kvq_codec c, const uint8_t *chunk, int32_t bs, int32_t hd,
                        int32_t r, float *out) {
    const size_t db = kvl_kvq_data_bytes(c, bs, hd);
    const size_t e0 = (size_t)r * (size_t)hd;
    switch (c) {
    case KVL_KVQ_F32:
        memcpy(out, chunk + e0 * 4, (size_t)hd * 4);
        break;
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
    case KVL_KVQ_I4C:
    case KVL_KVQ_I4T: {
        const uint8_t *sc = chunk + db;
        const size_t n_sc = c == KVL_KVQ_I4C ? (size_t)hd : (size_t)bs;
        for (int32_t d = 0; d < hd; d++) {
            size_t e = e0 + (size_t)d;
            uint8_t b = chunk[e >> 1];
            float n = (float)((e & 1) ? b >> 4 : b & 0x0f);
            size_t j = c == KVL_KVQ_I4C ? (size_t)d : (size_t)r;
            float s = kvl_bf16_to_f32(kvl_kvq_rd_u16(sc + j * 2));
            float z = kvl_bf16_to_f32(kvl_kvq_rd_u16(sc + (n_sc + j) * 2));
            out[d] = fmaf(s, n, z);
        }
        break;
    }
    default:
        KVL_ASSERT(!"kv_kern: bad codec");
    }
}

/* ---- scalar reference kernels ------------------------------------------ */

#define DEF_REF(codec, tag)                                                                    \
    static void scores_ref_##tag(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0,    \
                                 int32_t r1, const float *q, int32_t n_q, float *S,           \
                                 int32_t s_stride) {                                           \
        float row[KVL_MAX_HEAD_DIM];                                                           \
        for (int32_t i = r0; i < r1; i++) {                                                    \
            kvl_kvq_decode_row(codec, chunk, bs, hd, i, row);                                  \
            for (int32_t g = 0; g < n_q; g++) {                                                \
                const float *qg = q + (int64_t)g * hd;                                         \
                float acc = 0.0f;                                                              \
                for (int32_t d = 0; d < hd; d++)                                               \
                    acc += qg[d] * row[d];                                                     \
                S[(int64_t)g * s_stride + (i - r0)] = acc;                                     \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
    static void accum_ref_##tag(const uint8_t *chunk, int32_t bs, int32_t hd, int32_t r0,     \
                                int32_t r1, const float *W, int32_t w_stride, int32_t n_q,    \
                                float *acc) {                                                  \
        float row[KVL_MAX_HEAD_DIM];                                                           \
        for (int32_t i = r0; i < r1; i++) {                                                    \
            kvl_kvq_decode_row(codec, chunk, bs, hd, i, row);                                  \
            for (int32_t g = 0; g < n_q; g++) {                                                \
                const float w = W[(int64_t)g * w_stride + (i - r0)];                           \
                float *ag = acc + (int64_t)g * hd;                                             \
                for (int32_t d = 0; d < hd; d++)                                               \
                    ag[d] += w * row[d];                                                       \
            }                                                                                  \
        }                                                                                      \
    }

DEF_REF(KVL_KVQ_F32, f32)
DEF_REF(KVL_KVQ_F16, f16)
DEF_REF(KVL_KVQ_BF16, bf16)
DEF_REF(KVL_KVQ_E4M3, e4m3)
DEF_REF(KVL_KVQ_E5M2, e5m2)
DEF_REF(KVL_KVQ_I8, i8)
DEF_REF(KVL_KVQ_I4C, i4c)
DEF_REF(KVL_KVQ_I4T, i4t)
#undef DEF_REF

kvl_kvq_ops kvl_kvq_ops_ref(kvl_kvq_codec c) {
    static const kvl_kvq_ops t[KVL_KVQ_COUNT] = {
        {scores_ref_f32, accum_ref_f32},   {scores_ref_f16, accum_ref_f16},
        {scores_ref_bf16, accum_ref_bf16}, {scores_ref_e4m3, accum_ref_e4m3},
        {scores_ref_e5m2, accum_ref_e5m2}, {scores_ref_i8, accum_ref_i8},
        {scores_ref_i4c, accum_ref_i4c},   {scores_ref_i4t, accum_ref_i4t},
    };
    KVL_ASSERT((int)c >= 0 && c < KVL_KVQ_COUNT);
    return t[c];
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
    default:
        break;
    }
#else
    (void)hd;
#endif
    if (f.scores)
        r.scores = f.scores;
    if (f.accum)
        r.accum = f.accum;
    return r;
}
