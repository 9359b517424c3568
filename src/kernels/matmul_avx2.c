/*
 * matmul_avx2: the AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma
 * -mf16c; only called when kvl_isa_active() >= KVL_ISA_AVX2).
 *
 * Quantized weights: one 32-value block per 256-bit register.
 *   Q8_0: maddubs(|w|, sign(x, w)) gives exact int16 pair sums (each at most
 *         2 * 128 * 127 < 32767), madd with ones widens to int32.
 *   Q4_0: the nibbles (0..15) are already unsigned: maddubs(n, x) then
 *         madd, plus the activation row's corr lane (-8 * sum(x)).
 *   Each block's int32 sums become float and are accumulated with the scale
 *   d_w * d_x by one FMA; the 8 lanes are summed once per output.
 * Float weights (F32, F16, BF16) widen to float and FMA over 8 columns.
 * Tiles are R rows x T tokens, R <= 4, T <= 4, all indices fixed at compile
 * time so the accumulators live in registers. One token (decode) streams
 * rows one at a time instead (gemv_q, gemv_f below).
 *
 * Must not: allocate, read weights past their row, or use AVX-512.
 */
#include "kernels/kernels_impl.h"

#include <immintrin.h>
#include <math.h>

#define AI static inline __attribute__((always_inline))

AI float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AI int32_t hsum8i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

float kvl_dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(s0, s1));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void kvl_axpy_f32_avx2(float *y, float a, const float *x, int64_t n) {
    const __m256 va = _mm256_set1_ps(a);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++)
        y[i] += a * x[i];
}

void kvl_quantize_act_avx2(const float *x, int64_t n_cols, int64_t b0, int64_t b1, int32_t k_corr,
                           uint8_t *dst) {
    int8_t *qs = (int8_t *)dst;
    float *dx = (float *)(dst + n_cols);
    int32_t *corr = (int32_t *)(dst + 2 * n_cols);
    float *dc = (float *)(dst + 3 * n_cols);
    int32_t *cc = (int32_t *)(dc + n_cols / 32);
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 lim = _mm256_set1_ps(127.0f), nlim = _mm256_set1_ps(-127.0f);
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = b0; b < b1; b++) {
        const float *xb = x + b * 32;
        __m256 v[4];
        for (int i = 0; i < 4; i++)
            v[i] = _mm256_loadu_ps(xb + 8 * i);
        __m256 m = _mm256_max_ps(
            _mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
            _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        const float amax = _mm_cvtss_f32(h);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        for (int i = 0; i < 4; i++) {
            /* min/max return the bound for NaN, like the scalar clamp */
            __m256 s = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(v[i], vid), lim), nlim);
            q[i] = _mm256_cvtps_epi32(s);
        }
        const int32_t sum =
            hsum8i(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
        __m256i p16a = _mm256_packs_epi32(q[0], q[1]);
        __m256i p16b = _mm256_packs_epi32(q[2], q[3]);
        __m256i p8 = _mm256_packs_epi16(p16a, p16b);
        p8 = _mm256_permutevar8x32_epi32(p8, perm);
        _mm256_storeu_si256((__m256i *)(qs + b * 32), p8);
        _mm256_storeu_ps(dx + b * 8, _mm256_set1_ps(d));
        _mm256_storeu_si256((__m256i *)(corr + b * 8),
                            _mm256_setr_epi32(-k_corr * sum, 0, 0, 0, 0, 0, 0, 0));
        dc[b] = d;
        cc[b] = -k_corr * sum;
    }
}

/* ---- quantized tiles ---- */

AI void tile_q(const kvl_mm_ctx *c, int64_t r, int64_t tok, const int R, const int T,
               const kvl_type t) {
    const int64_t nb = c->n_cols / 32;
    kvl_tile_in in;
    kvl_tile_in_init(&in, c, r, R, tok, T);
    const uint8_t *const *row = in.row;
    const int8_t *const *qx = in.qx;
    const float *const *dx = in.dx;
    const int32_t *const *cr = in.corr;
    __m256 acc[4][4];
    KVL_TILE_EACH(R, T, acc[i][j] = _mm256_setzero_ps());
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t b = 0; b < nb; b++) {
        __m256i w[4], aw[4];
        __m256 dw[4];
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            if (t == KVL_TYPE_Q8_0) {
                const kvl_block_q8_0 *blk = (const kvl_block_q8_0 *)row[i] + b;
                w[i] = _mm256_loadu_si256((const __m256i *)blk->qs);
                aw[i] = _mm256_abs_epi8(w[i]);
                dw[i] = _mm256_set1_ps(_cvtsh_ss(blk->d));
            } else {
                const kvl_block_q4_0 *blk = (const kvl_block_q4_0 *)row[i] + b;
                __m128i q = _mm_loadu_si128((const __m128i *)blk->qs);
                __m256i qq = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
                w[i] = _mm256_and_si256(qq, m4);
                aw[i] = w[i];
                dw[i] = _mm256_set1_ps(_cvtsh_ss(blk->d));
            }
        }
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(qx[j] + b * 32));
            const __m256 s = _mm256_loadu_ps(dx[j] + b * 8);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++) {
                __m256i p;
                if (t == KVL_TYPE_Q8_0) {
                    p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[i], _mm256_sign_epi8(x, w[i])),
                                          ones);
                } else {
                    p = _mm256_madd_epi16(_mm256_maddubs_epi16(w[i], x), ones);
                    p = _mm256_add_epi32(p, _mm256_loadu_si256((const __m256i *)(cr[j] + b * 8)));
                }
                acc[i][j] =
                    _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw[i], s), acc[i][j]);
            }
        }
    }
    KVL_TILE_EACH(R, T, c->Y[(tok + j) * c->n_rows + r + i] = hsum8(acc[i][j]));
}

/* ---- float tiles ---- */

AI __m256 load8(const uint8_t *row, int64_t k, const kvl_type t) {
    if (t == KVL_TYPE_F32)
        return _mm256_loadu_ps((const float *)row + k);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)row + k));
    if (t == KVL_TYPE_F16)
        return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

AI float scalar_w(const uint8_t *row, int64_t k, const kvl_type t) {
    if (t == KVL_TYPE_F32)
        return ((const float *)row)[k];
    uint16_t h = ((const uint16_t *)row)[k];
    return t == KVL_TYPE_F16 ? _cvtsh_ss(h) : kvl_bf16_to_f32(h);
}

AI void tile_f(const kvl_mm_ctx *c, int64_t r, int64_t tok, const int R, const int T,
               const kvl_type t) {
    const int64_t n = c->n_cols;
    const uint8_t *row[4];
    const float *x[4];
    __m256 acc[4][4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
        row[i] = c->W + (size_t)(r + i) * c->w_row_bytes;
#pragma GCC unroll 4
    for (int j = 0; j < T; j++) {
        x[j] = c->X + (tok + j) * n;
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
            acc[i][j] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        __m256 w[4];
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
            w[i] = load8(row[i], k, t);
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            const __m256 xv = _mm256_loadu_ps(x[j] + k);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++)
                acc[i][j] = _mm256_fmadd_ps(w[i], xv, acc[i][j]);
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < T; j++)
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            float s = hsum8(acc[i][j]);
            for (int64_t kk = k; kk < n; kk++)
                s += scalar_w(row[i], kk, t) * x[j][kk];
            c->Y[(tok + j) * c->n_rows + r + i] = s;
        }
}

/* ---- one token (decode) ----
 *
 * The product is bound by the weight bytes read, so each row is read start
 * to end as one stream, rows one after another (the AVX-512 file's header
 * says why: interleaved row streams of a 4-row tile retrain the hardware
 * prefetcher every tile), with 4 independent accumulators per row so that
 * the FMA latency does not bound it. Every output's summation order
 * depends only on n_cols, so any row split gives the same bits. */

/* Block b of a quantized row against the activation row: acc + sum of the
 * block's products, scaled (the same arithmetic as tile_q). */
AI __m256 qblock(__m256 acc, const uint8_t *row, int64_t b, const int8_t *qx, const float *dc,
                 const int32_t *cc, const kvl_type t) {
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i x = _mm256_loadu_si256((const __m256i *)(qx + b * 32));
    const __m256 s = _mm256_broadcast_ss(dc + b);
    __m256i p;
    float d;
    if (t == KVL_TYPE_Q8_0) {
        const kvl_block_q8_0 *blk = (const kvl_block_q8_0 *)row + b;
        const __m256i w = _mm256_loadu_si256((const __m256i *)blk->qs);
        p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w)),
                              ones);
        d = _cvtsh_ss(blk->d);
    } else {
        const kvl_block_q4_0 *blk = (const kvl_block_q4_0 *)row + b;
        const __m128i q = _mm_loadu_si128((const __m128i *)blk->qs);
        const __m256i w =
            _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
        p = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(w, x), ones),
                             _mm256_zextsi128_si256(_mm_cvtsi32_si128(cc[b])));
        d = _cvtsh_ss(blk->d);
    }
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(_mm256_set1_ps(d), s), acc);
}

/* Quantized rows [r0, r1) x token 0: block b goes to accumulator b % 4. */
AI void gemv_q(const kvl_mm_ctx *c, int64_t r0, int64_t r1, const kvl_type t) {
    const int64_t nb = c->n_cols / 32;
    const int8_t *qx = kvl_act_qs(c, 0);
    const float *dc = kvl_act_dc(c, 0); /* compact: the row stays in L1 */
    const int32_t *cc = kvl_act_cc(c, 0);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = c->W + (size_t)r * c->w_row_bytes;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
                         _mm256_setzero_ps()};
        int64_t b = 0;
        for (; b + 4 <= nb; b += 4) {
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++)
                acc[u] = qblock(acc[u], row, b + u, qx, dc, cc, t);
        }
        for (int u = 0; b < nb; b++, u++)
            acc[u] = qblock(acc[u], row, b, qx, dc, cc, t);
        c->Y[r] =
            hsum8(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    }
}

/* Float rows: R rows at a time (1 or GF_R), C accumulators of 8 columns per
 * row (column j of a step goes to accumulator j / 8), the tail of fewer than
 * 8 columns added in scalar after the sum, as tile_f does. Rows of up to
 * GF_COLS columns go one at a time with 4 accumulators; longer rows GF_R at
 * a time with 2, sharing each activation load: their f32 activations no
 * longer stay in L1 under the weight stream (see gemv_fw in the AVX-512
 * file), and 16 ymm registers hold 4 rows x 2 accumulators. A row's
 * arithmetic is the same in a group and alone. 16-bit weights are
 * converted 16 bytes at a time: one 32-byte load converted in two halves
 * decoded F16 at 0.90x this speed (Zen 4, KVL_ISA=avx2, interleaved). */
#define GF_COLS 4096
#define GF_R 4
AI void gemv_f_rows(const kvl_mm_ctx *c, int64_t r, const int R, const int C, const kvl_type t) {
    const int64_t n = c->n_cols;
    const float *x = c->X;
    const uint8_t *row[GF_R];
    __m256 acc[GF_R][4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        row[i] = c->W + (size_t)(r + i) * c->w_row_bytes;
#pragma GCC unroll 4
        for (int u = 0; u < C; u++)
            acc[i][u] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 8 * C <= n; k += 8 * C) {
#pragma GCC unroll 4
        for (int u = 0; u < C; u++) {
            const __m256 xv = _mm256_loadu_ps(x + k + 8 * u);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++)
                acc[i][u] = _mm256_fmadd_ps(load8(row[i], k + 8 * u, t), xv, acc[i][u]);
        }
    }
    for (; k + 8 <= n; k += 8) {
        const __m256 xv = _mm256_loadu_ps(x + k);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
            acc[i][0] = _mm256_fmadd_ps(load8(row[i], k, t), xv, acc[i][0]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < R; i++) {
        __m256 sum = acc[i][0];
#pragma GCC unroll 4
        for (int u = 1; u < C; u++)
            sum = _mm256_add_ps(sum, acc[i][u]);
        float s = hsum8(sum);
        for (int64_t kk = k; kk < n; kk++)
            s += scalar_w(row[i], kk, t) * x[kk];
        c->Y[r + i] = s;
    }
}

AI void gemv_f(const kvl_mm_ctx *c, int64_t r0, int64_t r1, const kvl_type t) {
    int64_t r = r0;
    if (c->n_cols <= GF_COLS) {
        for (; r < r1; r++)
            gemv_f_rows(c, r, 1, 4, t);
        return;
    }
    for (; r + GF_R <= r1; r += GF_R)
        gemv_f_rows(c, r, GF_R, 2, t);
    for (; r < r1; r++)
        gemv_f_rows(c, r, 1, 2, t);
}

KVL_TILES(q, KVL_TYPE_Q8_0, q8_0, 4)
KVL_TILES(q, KVL_TYPE_Q4_0, q4_0, 4)
/* Float tiles are 3 rows x 4 tokens: 12 accumulators, 3 weights and one
 * activation fill the 16 ymm registers; 4 x 4 needs 21 and spills. */
KVL_TILES(f, KVL_TYPE_F32, f32, 3)
KVL_TILES(f, KVL_TYPE_F16, f16, 3)
KVL_TILES(f, KVL_TYPE_BF16, bf16, 3)

void kvl_mm_rows_avx2(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const bool one = c->n_tok == 1 && !kvl_mm_batch_invariant;
    switch (c->t) {
    case KVL_TYPE_Q8_0:
        if (one)
            gemv_q(c, r0, r1, KVL_TYPE_Q8_0);
        else
            kvl_mm_drive(c, r0, r1, 4, 4, big_q8_0, one_q8_0);
        break;
    case KVL_TYPE_Q4_0:
        if (one)
            gemv_q(c, r0, r1, KVL_TYPE_Q4_0);
        else
            kvl_mm_drive(c, r0, r1, 4, 4, big_q4_0, one_q4_0);
        break;
    case KVL_TYPE_F32:
        if (one)
            gemv_f(c, r0, r1, KVL_TYPE_F32);
        else
            kvl_mm_drive(c, r0, r1, 3, 4, big_f32, one_f32);
        break;
    case KVL_TYPE_F16:
        if (one)
            gemv_f(c, r0, r1, KVL_TYPE_F16);
        else
            kvl_mm_drive(c, r0, r1, 3, 4, big_f16, one_f16);
        break;
    case KVL_TYPE_BF16:
        if (one)
            gemv_f(c, r0, r1, KVL_TYPE_BF16);
        else
            kvl_mm_drive(c, r0, r1, 3, 4, big_bf16, one_bf16);
        break;
    default: KVL_ASSERT(!"kvl_mm_rows_avx2: unsupported type");
    }
}
