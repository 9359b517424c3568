/*
 * kernels: the arithmetic of the forward pass. Each fast kernel has a scalar
 * reference (kvl_*_ref) and a test comparing them. Fast paths (AVX2,
 * AVX-512) are picked at run time from CPUID; KVL_ISA=scalar|avx2|avx512 in
 * the environment forces a lower level (for tests and benchmarks).
 *
 * Weights are row-major matrices of n_rows rows, each of n_cols elements of
 * one kvl_type (ggml layout: ne[0] = n_cols is the fastest dimension; for
 * quantized types a row is n_cols/32 blocks). Activations are float rows.
 */
#ifndef KVL_KERNELS_H
#define KVL_KERNELS_H

#include "core/core.h"
#include "core/dtype.h"
#include "core/pool.h"

typedef enum kvl_isa {
    KVL_ISA_SCALAR = 0,
    KVL_ISA_AVX2 = 1,
    KVL_ISA_AVX512 = 2,
} kvl_isa;

/* The ISA in use (detected once; capped by KVL_ISA). */
kvl_isa kvl_isa_active(void);
const char *kvl_isa_name(kvl_isa isa);
/* Force an ISA level (tests); returns the level actually set (never above
 * what the CPU supports). */
kvl_isa kvl_isa_set(kvl_isa isa);

/* Bytes of one row of n_cols elements of type t (n_cols a multiple of the
 * block size); 0 when t is unknown or n_cols is not a multiple. */
size_t kvl_row_bytes(kvl_type t, int64_t n_cols);

/* Convert one row between float and a storage type (F32, F16, BF16, Q8_0,
 * Q4_0). n must be a multiple of the type's block size. Quantization follows
 * llama.cpp's reference rounding so files written by kvllm read the same
 * in llama.cpp. */
void kvl_quantize_row(kvl_type t, const float *src, void *dst, int64_t n);
void kvl_dequantize_row(kvl_type t, const void *src, float *dst, int64_t n);

/* Scratch bytes that kvl_matmul needs for these shapes. */
size_t kvl_matmul_scratch_size(kvl_type t, int64_t n_cols, int64_t n_tok);
/* Tokens a product of type t takes in one group once it has at least that
 * many (the AVX-512 token-lane layout of Q8_0 and the K-quants: 16; the
 * last group is padded with zero tokens, so 65 tokens cost what 80 do), or
 * 0 when products of t on the active ISA are not grouped (the sim's CPU
 * cost model rounds up to it). This function can't fail. */
int32_t kvl_matmul_token_group(kvl_type t);

/*
 * Y = X * W^T.
 *   W: (n_rows, n_cols) of type t
 *   X: (n_tok, n_cols) floats, row-major
 *   Y: (n_tok, n_rows) floats, row-major
 * scratch: at least kvl_matmul_scratch_size(t, n_cols, n_tok) bytes, 64-byte
 * aligned (for quantized types the activations are quantized into it).
 * pool may be NULL (single thread). No allocation.
 */
/* Batch-invariant products: when on, one token, a few and many all take
 * the tile kernels, whose summation order per output depends only on the
 * row length, so a token's result is the same bits whatever else is in its
 * batch (at the price of the decode and small-batch paths; docs/engine.md
 * has the measured cost). Process-wide; set it before products run. */
void kvl_matmul_set_batch_invariant(bool on);

void kvl_matmul(kvl_pool *pool, float *Y, const void *W, kvl_type t, int64_t n_rows, int64_t n_cols,
                const float *X, int64_t n_tok, void *scratch);
/* One output of kvl_matmul_multi: Y (n_tok, n_rows) = X * W^T. */
typedef struct kvl_mm_out {
    float *Y;
    const void *W;
    int64_t n_rows;
} kvl_mm_out;
#define KVL_MM_MAX_OUT 4

/* kvl_matmul for 1..KVL_MM_MAX_OUT weight matrices of one type and width
 * with the same X (Q, K and V; gate and up): X is quantized once, and in
 * decode and small batches the rows of all of them are one pool run, so a
 * layer waits for the threads three times fewer. Every Y is bit-identical
 * to kvl_matmul's. scratch as for kvl_matmul. No allocation. */
void kvl_matmul_multi(kvl_pool *pool, const kvl_mm_out *outs, int n_out, kvl_type t, int64_t n_cols,
                      const float *X, int64_t n_tok, void *scratch);
/* Scalar reference: same contract, straightforward loops, no pool. */
void kvl_matmul_ref(float *Y, const void *W, kvl_type t, int64_t n_rows, int64_t n_cols,
                    const float *X, int64_t n_tok);

/* out = x / sqrt(mean(x^2) + eps) * w, n elements. out may alias x. */
void kvl_rmsnorm(float *out, const float *x, const float *w, int64_t n, float eps);

/* Rotate adjacent pairs (x[2i], x[2i+1]) of each head by pos * base^(-2i/rot_dim)
 * for 2i < rot_dim (llama.cpp's "normal" RoPE, llama2.c's layout). x holds
 * n_heads heads of head_dim floats. */
void kvl_rope(float *x, int64_t n_heads, int64_t head_dim, int64_t rot_dim, int32_t pos,
              float base);

/* In-place softmax over n values (max-subtracted). */
void kvl_softmax(float *x, int64_t n);

/* gate[i] = silu(gate[i]) * up[i] */
void kvl_swiglu(float *gate, const float *up, int64_t n);

/* x[i] = exp(x[i] - shift) for n floats; returns the sum. The AVX-512
 * path uses a polynomial exp within ~2 ulp of expf (the scalar reference);
 * NaN stays NaN, very negative arguments give 0. */
float kvl_exp_shift_sum(float *x, int64_t n, float shift);

/* dot product and y += a*x, float */
float kvl_dot_f32(const float *a, const float *b, int64_t n);
void kvl_axpy_f32(float *y, float a, const float *x, int64_t n);

#endif
