/*
 * kernels: ISA selection and the element-wise kernels of the forward pass
 * (RMSNorm, RoPE, softmax, SwiGLU, dot, axpy).
 *
 * The ISA level is detected once from CPUID and XCR0 (the OS must save the
 * wide registers; <cpuid.h> rather than __builtin_cpu_supports so that gcc
 * and clang agree) and capped by KVL_ISA=scalar|avx2|avx512; kvl_isa_set
 * overrides it for tests. AVX2 means AVX2+FMA+F16C; AVX-512 means
 * F/BW/VL/DQ/VNNI on top of that.
 *
 * The element-wise kernels follow llama2.c's float formulation (powf, cosf,
 * sinf, expf in float, 1/sqrtf for the norm) so that logits stay within 1e-4
 * of its golden outputs; only the sums are vectorised.
 *
 * Must not: allocate, or run code for an ISA level above the detected one.
 */
#include "kernels/kernels_impl.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

static _Atomic int g_isa = -1; /* kvl_isa in use; -1 until first use */

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* CPUID feature bits plus the OS's XCR0 (the OS must save the registers). */
static kvl_isa detect_x86(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return KVL_ISA_SCALAR;
    const bool osxsave = c & (1u << 27), avx = c & (1u << 28), fma = c & (1u << 12),
               f16c = c & (1u << 29);
    if (!osxsave || !avx)
        return KVL_ISA_SCALAR;
    const uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* SSE and AVX state */
        return KVL_ISA_SCALAR;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return KVL_ISA_SCALAR;
    const bool avx2 = b & (1u << 5);
    if (!avx2 || !fma || !f16c)
        return KVL_ISA_SCALAR;
    const bool f = b & (1u << 16), dq = b & (1u << 17), bw = b & (1u << 30), vl = b & (1u << 31),
               vnni = c & (1u << 11);
    const bool zmm_state = (xcr0 & 0xe6) == 0xe6; /* opmask, ZMM0-15 high, ZMM16-31 */
    if (f && dq && bw && vl && vnni && zmm_state)
        return KVL_ISA_AVX512;
    return KVL_ISA_AVX2;
}
#endif

static kvl_isa isa_hw(void) {
    static _Atomic int hw = -1;
    int v = atomic_load(&hw);
    if (v >= 0)
        return (kvl_isa)v;
    kvl_isa r = KVL_ISA_SCALAR;
#if defined(__x86_64__) || defined(__i386__)
    r = detect_x86();
#endif
    atomic_store(&hw, (int)r);
    return r;
}

kvl_isa kvl_isa_active(void) {
    int v = atomic_load(&g_isa);
    if (v >= 0)
        return (kvl_isa)v;
    kvl_isa r = isa_hw();
    const char *env = getenv("KVL_ISA");
    if (env) {
        kvl_isa cap = r;
        if (!strcmp(env, "scalar"))
            cap = KVL_ISA_SCALAR;
        else if (!strcmp(env, "avx2"))
            cap = KVL_ISA_AVX2;
        else if (!strcmp(env, "avx512"))
            cap = KVL_ISA_AVX512;
        if (cap < r)
            r = cap;
    }
    atomic_store(&g_isa, (int)r);
    return r;
}

const char *kvl_isa_name(kvl_isa isa) {
    switch (isa) {
    case KVL_ISA_SCALAR: return "scalar";
    case KVL_ISA_AVX2: return "avx2";
    case KVL_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

kvl_isa kvl_isa_set(kvl_isa isa) {
    kvl_isa hw = isa_hw();
    if (isa > hw)
        isa = hw;
    if (isa < KVL_ISA_SCALAR)
        isa = KVL_ISA_SCALAR;
    atomic_store(&g_isa, (int)isa);
    return isa;
}

float kvl_dot_f32(const float *a, const float *b, int64_t n) {
    switch (kvl_isa_active()) {
    case KVL_ISA_AVX512: return kvl_dot_f32_avx512(a, b, n);
    case KVL_ISA_AVX2: return kvl_dot_f32_avx2(a, b, n);
    default: break;
    }
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void kvl_axpy_f32(float *y, float a, const float *x, int64_t n) {
    switch (kvl_isa_active()) {
    case KVL_ISA_AVX512: kvl_axpy_f32_avx512(y, a, x, n); return;
    case KVL_ISA_AVX2: kvl_axpy_f32_avx2(y, a, x, n); return;
    default: break;
    }
    for (int64_t i = 0; i < n; i++)
        y[i] += a * x[i];
}

void kvl_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps) {
    float ss = kvl_dot_f32(x, x, n);
    ss /= (float)n;
    ss += eps;
    ss = 1.0f / sqrtf(ss);
    for (int64_t i = 0; i < n; i++)
        out[i] = w[i] * (ss * x[i]);
}

void kvl_rope(float *x, int64_t n_heads, int64_t head_dim, int64_t rot_dim, int32_t pos,
              float base) {
    if (rot_dim > head_dim)
        rot_dim = head_dim;
    for (int64_t j = 0; j + 1 < rot_dim; j += 2) {
        const float freq = 1.0f / powf(base, (float)j / (float)rot_dim);
        const float val = (float)pos * freq;
        const float fcr = cosf(val);
        const float fci = sinf(val);
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = x + h * head_dim + j;
            const float v0 = v[0], v1 = v[1];
            v[0] = v0 * fcr - v1 * fci;
            v[1] = v0 * fci + v1 * fcr;
        }
    }
}

void kvl_softmax(float *x, int64_t n) {
    if (n <= 0)
        return;
    float max = x[0];
    for (int64_t i = 1; i < n; i++)
        max = x[i] > max ? x[i] : max;
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    for (int64_t i = 0; i < n; i++)
        x[i] /= sum;
}

float kvl_exp_shift_sum(float *x, int64_t n, float shift) {
    if (kvl_isa_active() == KVL_ISA_AVX512)
        return kvl_exp_shift_sum_avx512(x, n, shift);
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - shift);
        sum += x[i];
    }
    return sum;
}

void kvl_swiglu(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = gate[i];
        v *= 1.0f / (1.0f + expf(-v));
        gate[i] = v * up[i];
    }
}
