/*
 * quant: row conversion between float and the storage types (F32, F16, BF16,
 * Q8_0, Q4_0; the K-quants and Q5_0 / Q5_1 through kquant.c), row sizes, and the scalar quantizer of matmul activations.
 *
 * Storage quantization reproduces llama.cpp's reference rounding exactly for
 * finite inputs (Q8_0: d = amax / 127, q = round(x / d); Q4_0: d = max / -8
 * where max is the element of largest magnitude with its sign,
 * q = min(15, trunc(x / d + 8.5)); d is rounded to fp16 after the q are
 * computed with the float d), so files kvllm writes read the same in
 * llama.cpp. Non-finite inputs are clamped instead of hitting undefined
 * float-to-int casts.
 *
 * Must not: depend on the model library (row sizes are computed here, not
 * through kvl_type_info), allocate, or accept a type it does not know
 * (callers validate types with kvl_row_bytes first; a zero row size there
 * is their signal).
 */
#include "kernels/kquant.h"

#include <math.h>

size_t kvl_row_bytes(kvl_type t, int64_t n_cols) {
    if (n_cols < 0)
        return 0;
    size_t n = (size_t)n_cols, r;
    switch (t) {
    case KVL_TYPE_F32: return kvl_mul_overflow(n, 4, &r) ? 0 : r;
    case KVL_TYPE_F16:
    case KVL_TYPE_BF16: return kvl_mul_overflow(n, 2, &r) ? 0 : r;
    case KVL_TYPE_Q8_0:
        if (n % KVL_QK8_0)
            return 0;
        return kvl_mul_overflow(n / KVL_QK8_0, sizeof(kvl_block_q8_0), &r) ? 0 : r;
    case KVL_TYPE_Q4_0:
        if (n % KVL_QK4_0)
            return 0;
        return kvl_mul_overflow(n / KVL_QK4_0, sizeof(kvl_block_q4_0), &r) ? 0 : r;
    case KVL_TYPE_Q5_0:
    case KVL_TYPE_Q5_1:
        if (n % 32)
            return 0;
        return kvl_mul_overflow(
                   n / 32, t == KVL_TYPE_Q5_0 ? sizeof(kvl_block_q5_0) : sizeof(kvl_block_q5_1), &r)
                   ? 0
                   : r;
    case KVL_TYPE_Q2_K:
    case KVL_TYPE_Q3_K:
    case KVL_TYPE_Q4_K:
    case KVL_TYPE_Q5_K:
    case KVL_TYPE_Q6_K:
        if (n % KVL_QK_K)
            return 0;
        return kvl_mul_overflow(n / KVL_QK_K, kvl_kq_block_bytes(t), &r) ? 0 : r;
    default: return 0;
    }
}

/* round(v) of a value that should lie in [-127, 127]; NaN maps to +127. */
static inline int8_t round_q8(float v) {
    v = fmaxf(-127.0f, fminf(127.0f, v));
    return (int8_t)roundf(v);
}

static void quantize_q8_0(const float *x, kvl_block_q8_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / KVL_QK8_0; b++) {
        const float *xb = x + b * KVL_QK8_0;
        float amax = 0.0f;
        for (int i = 0; i < KVL_QK8_0; i++) {
            float a = fabsf(xb[i]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = kvl_f32_to_fp16(d);
        for (int i = 0; i < KVL_QK8_0; i++)
            y[b].qs[i] = round_q8(xb[i] * id);
    }
}

/* trunc(v + 8.5) capped at 15, as llama.cpp's (int8_t) cast and MIN. */
static inline uint8_t nibble_q4(float v) {
    float u = v + 8.5f;
    if (!(u >= 0.0f))
        u = 0.0f;
    if (u > 15.0f)
        u = 15.0f;
    return (uint8_t)u;
}

static void quantize_q4_0(const float *x, kvl_block_q4_0 *y, int64_t n) {
    for (int64_t b = 0; b < n / KVL_QK4_0; b++) {
        const float *xb = x + b * KVL_QK4_0;
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < KVL_QK4_0; i++) {
            if (amax < fabsf(xb[i])) {
                amax = fabsf(xb[i]);
                max = xb[i];
            }
        }
        const float d = max / -8.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = kvl_f32_to_fp16(d);
        for (int j = 0; j < KVL_QK4_0 / 2; j++) {
            uint8_t lo = nibble_q4(xb[j] * id);
            uint8_t hi = nibble_q4(xb[j + KVL_QK4_0 / 2] * id);
            y[b].qs[j] = (uint8_t)(lo | (hi << 4));
        }
    }
}

void kvl_quantize_row(kvl_type t, const float *src, void *dst, int64_t n) {
    KVL_ASSERT(kvl_row_bytes(t, n) != 0 || n == 0);
    switch (t) {
    case KVL_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case KVL_TYPE_F16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = kvl_f32_to_fp16(src[i]);
        break;
    }
    case KVL_TYPE_BF16: {
        uint16_t *d = dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = kvl_f32_to_bf16(src[i]);
        break;
    }
    case KVL_TYPE_Q8_0: quantize_q8_0(src, dst, n); break;
    case KVL_TYPE_Q4_0: quantize_q4_0(src, dst, n); break;
    case KVL_TYPE_Q5_0:
    case KVL_TYPE_Q5_1: kvl_q5_quantize_row(t, src, dst, n); break;
    case KVL_TYPE_Q2_K:
    case KVL_TYPE_Q3_K:
    case KVL_TYPE_Q4_K:
    case KVL_TYPE_Q5_K:
    case KVL_TYPE_Q6_K: kvl_kq_quantize_row(t, src, dst, n); break;
    default: KVL_ASSERT(!"kvl_quantize_row: unsupported type");
    }
}

void kvl_dequantize_row(kvl_type t, const void *src, float *dst, int64_t n) {
    KVL_ASSERT(kvl_row_bytes(t, n) != 0 || n == 0);
    switch (t) {
    case KVL_TYPE_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case KVL_TYPE_F16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = kvl_fp16_to_f32(s[i]);
        break;
    }
    case KVL_TYPE_BF16: {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = kvl_bf16_to_f32(s[i]);
        break;
    }
    case KVL_TYPE_Q8_0: {
        const kvl_block_q8_0 *b = src;
        for (int64_t k = 0; k < n / KVL_QK8_0; k++) {
            const float d = kvl_fp16_to_f32(b[k].d);
            for (int i = 0; i < KVL_QK8_0; i++)
                dst[k * KVL_QK8_0 + i] = (float)b[k].qs[i] * d;
        }
        break;
    }
    case KVL_TYPE_Q4_0: {
        const kvl_block_q4_0 *b = src;
        for (int64_t k = 0; k < n / KVL_QK4_0; k++) {
            const float d = kvl_fp16_to_f32(b[k].d);
            float *o = dst + k * KVL_QK4_0;
            for (int j = 0; j < KVL_QK4_0 / 2; j++) {
                o[j] = (float)((b[k].qs[j] & 0x0f) - 8) * d;
                o[j + KVL_QK4_0 / 2] = (float)((b[k].qs[j] >> 4) - 8) * d;
            }
        }
        break;
    }
    case KVL_TYPE_Q5_0:
    case KVL_TYPE_Q5_1: kvl_q5_dequantize_row(t, src, dst, n); break;
    case KVL_TYPE_Q2_K:
    case KVL_TYPE_Q3_K:
    case KVL_TYPE_Q4_K:
    case KVL_TYPE_Q5_K:
    case KVL_TYPE_Q6_K: kvl_kq_dequantize_row(t, src, dst, n); break;
    default: KVL_ASSERT(!"kvl_dequantize_row: unsupported type");
    }
}

void kvl_quantize_act_scalar(const float *x, int64_t n_cols, int64_t b0, int64_t b1, int32_t k_corr,
                             uint8_t *dst) {
    int8_t *qs = (int8_t *)dst;
    float *dx = (float *)(dst + n_cols);
    int32_t *corr = (int32_t *)(dst + 2 * n_cols);
    float *dc = (float *)(dst + 3 * n_cols);
    int32_t *cc = (int32_t *)(dc + n_cols / 32);
    for (int64_t b = b0; b < b1; b++) {
        const float *xb = x + b * 32;
        float amax = 0.0f;
        for (int i = 0; i < 32; i++) {
            float a = fabsf(xb[i]);
            amax = amax > a ? amax : a;
        }
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        int32_t sum = 0;
        for (int i = 0; i < 32; i++) {
            int8_t q = round_q8(xb[i] * id);
            qs[b * 32 + i] = q;
            sum += q;
        }
        for (int i = 0; i < 8; i++) {
            dx[b * 8 + i] = d;
            corr[b * 8 + i] = 0;
        }
        corr[b * 8] = -k_corr * sum;
        dc[b] = d;
        cc[b] = -k_corr * sum;
    }
}
