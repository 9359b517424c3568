/*
 * matmul_avx512: the AVX-512 (F/BW/VL/DQ + VNNI) kernels, compiled with the
 * AVX-512 flags and only called when kvl_isa_active() == KVL_ISA_AVX512.
 *
 * Quantized weights: two 32-value blocks per 512-bit register, 16 int32
 * lanes (0..7 block b, 8..15 block b + 1). vpdpbusd multiplies unsigned
 * weights by signed activations, so weights are made non-negative first:
 *   Q8_0: w ^ 0x80 = w + 128;  Q4_0: the nibbles 0..15 as they are,
 * and the dot product starts from the activation row's corr vector
 * (-128 * sum(x) or -8 * sum(x) in the first lane of each block), which
 * removes the offset exactly in int32. Then one FMA per register scales by
 * d_w * d_x (pre-broadcast per block in both operands) into float
 * accumulators that are summed across lanes once per output. A single
 * trailing block uses the same code with the upper half masked to zero.
 * Float weights (F32, F16, BF16) widen to float and FMA over 16 columns,
 * the column tail by masked loads.
 * Tiles are R rows x T tokens with indices fixed at compile time so the
 * accumulators live in registers: quantized R <= 4, T <= 4 (16), float
 * R <= FT_R = 6, T <= 4 (24; see FT_R for why 6).
 *
 * One token (decode) takes another path, gemv_*: the product is bound by
 * the weight bytes read, so each row is read start to end as one linear
 * stream (rows one after another: a thread's range is one sequential
 * stream that the hardware prefetcher follows at full speed; a tile of 4
 * interleaved 2 KiB row streams retrains it every tile and measured ~40%
 * slower), with GV_U independent accumulators per row (GV_U block pairs or
 * GV_U x 16 columns per iteration) for enough loads in flight. Float rows
 * longer than GW_COLS go GW_R rows at a time instead (gemv_fw: the f32
 * activations no longer stay in L1 under the weight stream). The
 * summation order per output depends only on n_cols, never on the rows a
 * thread is given, so any split gives the same bits.
 *
 * Q8_0 / Q4_0 with 2 .. KVL_SB_MAX_TOK tokens (Q8_0: up to 15; from 16 it
 * takes the token-lane path) take kvl_mm_rows_sb_avx512: activations in
 * the small-batch layout (kernels_impl.h: 4 tokens share each 512-bit
 * vector, one per dword slot of each 128-bit lane), rows streamed one at a
 * time like gemv_q with a software prefetch SB_PF bytes ahead, and each
 * block pair's weights decoded once and shuffled (vpshufd) so that one
 * vpdpbusd serves 4 tokens. Measured on the TinyLlama FFN up shape (5632 x
 * 2048, 2 threads, Zen 4 VM, bench_matmul, medians of alternating runs)
 * against the 4 x 4 tiles it replaces: Q8_0 2 tokens 0.39 ms (was 0.82),
 * 4: 0.42 (1.02), 8: 0.75 (1.50), 12: 1.2-1.4 (1.9); Q4_0 2: 0.29 (0.73),
 * 4: 0.38 (1.11), 8: 0.55 (1.72), 16: 1.64 (2.49), 64: 6.4-6.6 (7.7-8.0);
 * one token (gemv_q) takes 0.24-0.36 ms.
 * Prefetching 3 KiB ahead took 8 tokens from 1.07-1.16 ms to 0.75-0.84;
 * without it the reads stalled behind the compute. From 12 tokens the
 * activations (1.5 bytes per column and token) no longer stay in L1 over a
 * row and the cost per token rises.
 *
 * Must not: allocate, or touch weight bytes past a row's end (masked loads
 * suppress faults on the masked-off part).
 */
#include "kernels/kernels_impl.h"

#include <immintrin.h>
#include <string.h>

#define AI static inline __attribute__((always_inline))

float kvl_dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
    }
    for (; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

void kvl_axpy_f32_avx512(float *y, float a, const float *x, int64_t n) {
    const __m512 va = _mm512_set1_ps(a);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 r =
            _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, r);
    }
}

void kvl_quantize_act_avx512(const float *x, int64_t n_cols, int64_t b0, int64_t b1, int32_t k_corr,
                             uint8_t *dst) {
    int8_t *qs = (int8_t *)dst;
    float *dx = (float *)(dst + n_cols);
    int32_t *corr = (int32_t *)(dst + 2 * n_cols);
    float *dc = (float *)(dst + 3 * n_cols);
    int32_t *cc = (int32_t *)(dc + n_cols / 32);
    const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    for (int64_t b = b0; b < b1; b++) {
        const __m512 v0 = _mm512_loadu_ps(x + b * 32);
        const __m512 v1 = _mm512_loadu_ps(x + b * 32 + 16);
        const float amax =
            _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        /* min/max return the bound for NaN, like the scalar clamp */
        const __m512i q0 =
            _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(v0, vid), lim), nlim));
        const __m512i q1 =
            _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(v1, vid), lim), nlim));
        const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        _mm_storeu_si128((__m128i *)(qs + b * 32), _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(qs + b * 32 + 16), _mm512_cvtsepi32_epi8(q1));
        _mm256_storeu_ps(dx + b * 8, _mm256_set1_ps(d));
        _mm256_storeu_si256((__m256i *)(corr + b * 8),
                            _mm256_setr_epi32(-k_corr * sum, 0, 0, 0, 0, 0, 0, 0));
        dc[b] = d;
        cc[b] = -k_corr * sum;
    }
}

void kvl_quantize_act_tl_avx512(const float *x, int64_t b0, int64_t b1, int slot, uint8_t *grp) {
    const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    const __m256i gidx = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
    for (int64_t b = b0; b < b1; b++) {
        uint8_t *rec = grp + (size_t)b * KVL_TL_REC;
        const __m512 v0 = _mm512_loadu_ps(x + b * 32);
        const __m512 v1 = _mm512_loadu_ps(x + b * 32 + 16);
        const float amax =
            _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        const __m512i q0 =
            _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(v0, vid), lim), nlim));
        const __m512i q1 =
            _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(v1, vid), lim), nlim));
        const int32_t sum = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
        const __m256i q = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm512_cvtsepi32_epi8(q0)),
                                                  _mm512_cvtsepi32_epi8(q1), 1);
        /* dword g (columns 4g..4g+3) to vector g, this token's slot */
        _mm256_i32scatter_epi32(rec + slot * 4, gidx, q, 4);
        memcpy(rec + 512 + slot * 4, &d, 4);
        const int32_t corr = -128 * sum;
        memcpy(rec + 576 + slot * 4, &corr, 4);
    }
}

/* ---- quantized tiles ---- */

/* Weights of blocks b (and b + 1 when two) of one row as non-negative bytes,
 * and their scales broadcast over each block's 8 lanes. */
AI void load_wq(const uint8_t *row, int64_t b, const bool two, const kvl_type t, __m512i *w,
                __m512 *dw) {
    uint16_t d0, d1;
    if (t == KVL_TYPE_Q8_0) {
        const kvl_block_q8_0 *blk = (const kvl_block_q8_0 *)row + b;
        __m512i v = _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)blk[0].qs));
        if (two)
            v = _mm512_inserti64x4(v, _mm256_loadu_si256((const __m256i *)blk[1].qs), 1);
        *w = _mm512_xor_si512(v, _mm512_set1_epi8((char)0x80));
        d0 = blk[0].d;
        d1 = two ? blk[1].d : 0;
    } else {
        const kvl_block_q4_0 *blk = (const kvl_block_q4_0 *)row + b;
        __m256i q = _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i *)blk[0].qs));
        if (two)
            q = _mm256_inserti128_si256(q, _mm_loadu_si128((const __m128i *)blk[1].qs), 1);
        /* qwords [b0 b0 b1 b1]: low nibbles in 128-bit lanes 0 and 2, high in 1 and 3 */
        const __m512i z = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3),
                                                   _mm512_castsi256_si512(q));
        const __m512i nib = _mm512_mask_blend_epi64(0xcc, z, _mm512_srli_epi16(z, 4));
        *w = _mm512_and_si512(nib, _mm512_set1_epi8(0x0f));
        d0 = blk[0].d;
        d1 = two ? blk[1].d : 0;
    }
    /* 16 halves [d0 x8, d1 x8] (two broadcasts) widened to float */
    const __m256i h = _mm256_mask_set1_epi16(_mm256_set1_epi16((short)d0), 0xff00, (short)d1);
    *dw = _mm512_cvtph_ps(h);
}

AI void qstep(__m512 acc[4][4], const uint8_t *const *row, const int8_t *const *qx,
              const float *const *dx, const int32_t *const *cr, int64_t b, const bool two,
              const int R, const int T, const kvl_type t) {
    __m512i w[4];
    __m512 dw[4];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
        load_wq(row[i], b, two, t, &w[i], &dw[i]);
    const __mmask64 mb = two ? ~(__mmask64)0 : (__mmask64)0xffffffffu;
    const __mmask16 mw = two ? (__mmask16)0xffff : (__mmask16)0x00ff;
#pragma GCC unroll 4
    for (int j = 0; j < T; j++) {
        const __m512i x = _mm512_maskz_loadu_epi8(mb, qx[j] + b * 32);
        const __m512 s = _mm512_maskz_loadu_ps(mw, dx[j] + b * 8);
        const __m512i c0 = _mm512_maskz_loadu_epi32(mw, cr[j] + b * 8);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            const __m512i p = _mm512_dpbusd_epi32(c0, w[i], x);
            acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw[i], s), acc[i][j]);
        }
    }
}

AI void tile_q(const kvl_mm_ctx *c, int64_t r, int64_t tok, const int R, const int T,
               const kvl_type t) {
    const int64_t nb = c->n_cols / 32;
    kvl_tile_in in;
    kvl_tile_in_init(&in, c, r, R, tok, T);
    const uint8_t *const *row = in.row;
    const int8_t *const *qx = in.qx;
    const float *const *dx = in.dx;
    const int32_t *const *cr = in.corr;
    __m512 acc[4][4];
    KVL_TILE_EACH(R, T, acc[i][j] = _mm512_setzero_ps());
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2)
        qstep(acc, row, qx, dx, cr, b, true, R, T, t);
    if (b < nb)
        qstep(acc, row, qx, dx, cr, b, false, R, T, t);
    KVL_TILE_EACH(R, T, c->Y[(tok + j) * c->n_rows + r + i] = _mm512_reduce_add_ps(acc[i][j]));
}

/* Decode, quantized: rows [r0, r1) x token 0, one row at a time (two rows
 * interleaved measured 2.8x slower from memory), GV_U block pairs per
 * step; accumulator u takes pairs u, u + GV_U, ...; the tail (pairs, then
 * a single block) goes on into accumulators 0, 1, ... in order. */
#define GV_U 4
AI void gemv_q(const kvl_mm_ctx *c, int64_t r0, int64_t r1, const kvl_type t, const bool WIDE) {
    const int64_t nb = c->n_cols / 32;
    const int8_t *qx = kvl_act_qs(c, 0);
    const float *dx = kvl_act_dx(c, 0);
    const int32_t *cr = kvl_act_corr(c, 0);
    const float *dc = kvl_act_dc(c, 0);
    const int32_t *cc = kvl_act_cc(c, 0);
    const __m512i lanes = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = c->W + (size_t)r * c->w_row_bytes;
        __m512 acc[GV_U];
#pragma GCC unroll 4
        for (int u = 0; u < GV_U; u++)
            acc[u] = _mm512_setzero_ps();
        int64_t b = 0;
        for (; b + 2 * GV_U <= nb; b += 2 * GV_U) {
#pragma GCC unroll 4
            for (int u = 0; u < GV_U; u++) {
                const int64_t bu = b + 2 * u;
                __m512i w;
                __m512 dw;
                load_wq(row, bu, true, t, &w, &dw);
                const __m512i x = _mm512_loadu_si512(qx + bu * 32);
                __m512 s;
                __m512i c0;
                if (WIDE) { /* the same numbers spread from 8-byte loads */
                    const __m128 d2 = _mm_castpd_ps(_mm_load_sd((const double *)(dc + bu)));
                    const __m128i c2 = _mm_loadl_epi64((const __m128i *)(cc + bu));
                    s = _mm512_permutexvar_ps(lanes, _mm512_castps128_ps512(d2));
                    c0 = _mm512_maskz_permutexvar_epi32(0x0101, lanes, _mm512_castsi128_si512(c2));
                } else {
                    s = _mm512_loadu_ps(dx + bu * 8);
                    c0 = _mm512_loadu_si512(cr + bu * 8);
                }
                const __m512i p = _mm512_dpbusd_epi32(c0, w, x);
                acc[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, s), acc[u]);
            }
        }
        for (int u = 0; b < nb; b += 2, u++) {
            const bool two = b + 2 <= nb;
            const __mmask64 mb = two ? ~(__mmask64)0 : (__mmask64)0xffffffffu;
            const __mmask16 mw = two ? (__mmask16)0xffff : (__mmask16)0x00ff;
            __m512i w;
            __m512 dw;
            load_wq(row, b, two, t, &w, &dw);
            const __m512i x = _mm512_maskz_loadu_epi8(mb, qx + b * 32);
            const __m512 s = _mm512_maskz_loadu_ps(mw, dx + b * 8);
            const __m512i p = _mm512_dpbusd_epi32(_mm512_maskz_loadu_epi32(mw, cr + b * 8), w, x);
            acc[u] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw, s), acc[u]);
        }
        const __m512 a01 = _mm512_add_ps(acc[0], acc[1]), a23 = _mm512_add_ps(acc[2], acc[3]);
        c->Y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a01, a23));
    }
}

/* Rows longer than this take gemv_q's WIDE loads of the activation scales
 * and corrections (kvl_act_dc / kvl_act_cc, 8 bytes per block pair instead
 * of 128): the row layout's 3 bytes per column no longer stay in L1 under
 * the weight stream there (TinyLlama's FFN down, 5632 columns: 16.5 KiB),
 * and decode of those rows ran at 0.6-0.8x the speed of 2048-column rows.
 * Same numbers either way: bit-identical. Variable for tests. */
int64_t kvl_gemv_q_wide_cols = 4096;

/* ---- Q8_0 / Q4_0, few tokens: the small-batch layout ----
 *
 * Rows [r0, r1) one at a time like gemv_q, so a thread's range is one
 * sequential weight stream. Per block pair of a row the weights are made
 * unsigned and their scales widened once, shuffled into the G dword
 * patterns of each group width (kernels_impl.h), and then serve every
 * token: a group of 4 tokens costs 4 vpdpbusd starting from its corr
 * vector, one conversion and one FMA into its accumulator (16 lanes, each
 * one token's half block). Up to SB_NG groups (16 tokens) per pass over
 * the row; more tokens take more passes (the row is in L1 by then).
 * Accumulators per group and their use follow gemv_q (GV_U of them, pair
 * p of the main loop into p % GV_U, the tail pairs into 0, 1, ...), then
 * the lanes of each token are summed in a fixed order: the operations on
 * an output depend on n_cols and on the token's group width only. */
#define SB_NG 4
#ifndef SB_PF
#define SB_PF 3072
#endif

AI void sb_group(__m512 *acc, const uint8_t *rec, const __m512i *wk, const int G, __m512 dw) {
    __m512i s = _mm512_loadu_si512(rec + 64 * G);
#pragma GCC unroll 4
    for (int k = 0; k < G; k++)
        s = _mm512_dpbusd_epi32(s, wk[k], _mm512_loadu_si512(rec + 64 * k));
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
                           _mm512_mul_ps(dw, _mm512_loadu_ps((const float *)(rec + 64 * (G + 1)))),
                           *acc);
}

/* Block pair p of one row for NF groups of width 4 and one of width RW
 * (0: none), into accumulator u of each. */
AI void sb_step(__m512 acc[SB_NG][GV_U], const int u, const uint8_t *row, int64_t p, const bool two,
                const uint8_t *const *grp, const int NF, const int RW, const kvl_type t) {
    __m512i w, w4[4], w2[2];
    __m512 dw;
    if (SB_PF > 0)
        _mm_prefetch(
            (const char *)row +
                (size_t)p * 2 *
                    (t == KVL_TYPE_Q8_0 ? sizeof(kvl_block_q8_0) : sizeof(kvl_block_q4_0)) +
                SB_PF,
            _MM_HINT_T0);
    load_wq(row, 2 * p, two, t, &w, &dw);
    if (NF > 0 || RW == 4) {
        w4[0] = _mm512_shuffle_epi32(w, (_MM_PERM_ENUM)0x00);
        w4[1] = _mm512_shuffle_epi32(w, (_MM_PERM_ENUM)0x55);
        w4[2] = _mm512_shuffle_epi32(w, (_MM_PERM_ENUM)0xaa);
        w4[3] = _mm512_shuffle_epi32(w, (_MM_PERM_ENUM)0xff);
    }
    if (RW == 2) {
        w2[0] = _mm512_shuffle_epi32(w, (_MM_PERM_ENUM)0xa0); /* dwords 0 0 2 2 */
        w2[1] = _mm512_shuffle_epi32(w, (_MM_PERM_ENUM)0xf5); /* dwords 1 1 3 3 */
    }
#pragma GCC unroll 4
    for (int g = 0; g < NF; g++)
        sb_group(&acc[g][u], grp[g] + (size_t)p * kvl_sb_rec(4), w4, 4, dw);
    if (RW > 0)
        sb_group(&acc[NF][u], grp[NF] + (size_t)p * kvl_sb_rec(RW),
                 RW == 4   ? w4
                 : RW == 2 ? w2
                           : &w,
                 RW, dw);
}

/* One pass over a row for groups g0 .. g0 + NF (+ 1 when RW). */
AI void sb_pass(const kvl_mm_ctx *c, const uint8_t *row, int64_t r, int64_t g0, const int NF,
                const int RW, const kvl_type t) {
    const int64_t nb = c->n_cols / 32, np = (nb + 1) / 2;
    const int NG = NF + (RW > 0);
    const uint8_t *grp[SB_NG];
    __m512 acc[SB_NG][GV_U];
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++) {
        grp[g] = c->act + kvl_sb_group_off(c->n_cols, g0 + g);
#pragma GCC unroll 4
        for (int u = 0; u < GV_U; u++)
            acc[g][u] = _mm512_setzero_ps();
    }
    int64_t p = 0;
    for (; p + GV_U <= nb / 2; p += GV_U) {
#pragma GCC unroll 4
        for (int u = 0; u < GV_U; u++)
            sb_step(acc, u, row, p + u, true, grp, NF, RW, t);
    }
    for (int u = 0; p < np; p++, u++)
        sb_step(acc, u, row, p, 2 * p + 2 <= nb, grp, NF, RW, t);
#pragma GCC unroll 4
    for (int g = 0; g < NG; g++) {
        const int G = g < NF ? 4 : RW;
        const int64_t tok = 4 * (g0 + g);
        __m512 a =
            _mm512_add_ps(_mm512_add_ps(acc[g][0], acc[g][1]), _mm512_add_ps(acc[g][2], acc[g][3]));
        if (G == 1) {
            c->Y[tok * c->n_rows + r] = _mm512_reduce_add_ps(a);
            continue;
        }
        /* sum the four 128-bit lanes, then (width 2) the two slots of a token */
        a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, 0x4e));
        a = _mm512_add_ps(a, _mm512_shuffle_f32x4(a, a, 0xb1));
        __m128 v = _mm512_castps512_ps128(a);
        if (G == 2)
            v = _mm_add_ps(v, _mm_permute_ps(v, 0x4e));
        float y[4];
        _mm_storeu_ps(y, v);
        const int64_t nt = c->n_tok - tok < G ? c->n_tok - tok : G;
        for (int64_t j = 0; j < nt; j++)
            c->Y[(tok + j) * c->n_rows + r] = y[j];
    }
}

typedef void (*sb_pass_fn)(const kvl_mm_ctx *c, const uint8_t *row, int64_t r, int64_t g0);
#define SB_PASS(tname, ty, NF, RW)                                                                 \
    static void sb_##tname##_##NF##_##RW(const kvl_mm_ctx *c, const uint8_t *row, int64_t r,       \
                                         int64_t g0) {                                             \
        sb_pass(c, row, r, g0, NF, RW, ty);                                                        \
    }
/* a list of passes, one row per RW code, kept as written */
// clang-format off
#define SB_PASSES(tname, ty)                                                                       \
    SB_PASS(tname, ty, 1, 0) SB_PASS(tname, ty, 2, 0)                                              \
    SB_PASS(tname, ty, 3, 0) SB_PASS(tname, ty, 4, 0)                                              \
    SB_PASS(tname, ty, 0, 1) SB_PASS(tname, ty, 1, 1)                                              \
    SB_PASS(tname, ty, 2, 1) SB_PASS(tname, ty, 3, 1)                                              \
    SB_PASS(tname, ty, 0, 2) SB_PASS(tname, ty, 1, 2)                                              \
    SB_PASS(tname, ty, 2, 2) SB_PASS(tname, ty, 3, 2)                                              \
    /* [RW code 0 / 1 / 2][NF] */                                                                  \
    static const sb_pass_fn sb_##tname[3][SB_NG + 1] = {                                           \
        {NULL, sb_##tname##_1_0, sb_##tname##_2_0, sb_##tname##_3_0, sb_##tname##_4_0},            \
        {sb_##tname##_0_1, sb_##tname##_1_1, sb_##tname##_2_1, sb_##tname##_3_1, NULL},            \
        {sb_##tname##_0_2, sb_##tname##_1_2, sb_##tname##_2_2, sb_##tname##_3_2, NULL}};
// clang-format on
SB_PASSES(q8_0, KVL_TYPE_Q8_0)
SB_PASSES(q4_0, KVL_TYPE_Q4_0)

void kvl_mm_rows_sb_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const int64_t n_groups = (c->n_tok + 3) / 4;
    const int last = kvl_sb_width(c->n_tok, n_groups - 1);
    /* groups of width 4 (a padded last one included), then one of width rw */
    const int64_t n_four = last == 4 ? n_groups : n_groups - 1;
    const int rw = last == 4 ? 0 : last;
    const int64_t n_first = n_four + (rw > 0) > SB_NG ? (n_four + (rw > 0) - 1) / SB_NG * SB_NG : 0;
    const sb_pass_fn(*fns)[SB_NG + 1] = c->t == KVL_TYPE_Q8_0 ? sb_q8_0 : sb_q4_0;
    const sb_pass_fn full = fns[0][SB_NG], final = fns[rw][n_four - n_first];
    KVL_ASSERT((c->t == KVL_TYPE_Q8_0 || c->t == KVL_TYPE_Q4_0) && final != NULL);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = c->W + (size_t)r * c->w_row_bytes;
        for (int64_t g = 0; g < n_first; g += SB_NG)
            full(c, row, r, g);
        final(c, row, r, n_first);
    }
}

/* One block of 32 activations as the row layout's quantizer makes it. */
AI void quant_block(const float *x, __m512i *q0, __m512i *q1, float *d, int32_t *sum) {
    const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    const __m512 v0 = _mm512_loadu_ps(x);
    const __m512 v1 = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
    *d = amax / 127.0f;
    const float id = *d != 0.0f ? 1.0f / *d : 0.0f;
    const __m512 vid = _mm512_set1_ps(id);
    *q0 = _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(v0, vid), lim), nlim));
    *q1 = _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(v1, vid), lim), nlim));
    *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(*q0, *q1));
}

void kvl_quantize_act_sb_avx512(const float *x, int64_t n_cols, int64_t b0, int64_t b1,
                                int32_t k_corr, int64_t tok, int64_t n_tok, uint8_t *act) {
    const int G = kvl_sb_width(n_tok, tok / 4);
    const int j = (int)(tok % 4);
    uint8_t *grp = act + kvl_sb_group_off(n_cols, tok / 4);
    for (int64_t b = b0; b < b1; b++) {
        __m512i q0, q1;
        float d;
        int32_t sum;
        quant_block(x + b * 32, &q0, &q1, &d, &sum);
        int8_t qb[32];
        _mm_storeu_si128((__m128i *)qb, _mm512_cvtsepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(qb + 16), _mm512_cvtsepi32_epi8(q1));
        const int32_t corr = -k_corr * sum, zero = 0;
        uint8_t *rec = grp + (size_t)(b / 2) * kvl_sb_rec(G);
        for (int h = 0; h < 2; h++) {
            const int L = 2 * (int)(b % 2) + h;
            for (int i = 0; i < 4; i++) /* dword i of the half: m = i / G, k = i % G */
                memcpy(rec + 64 * (i % G) + 16 * L + 4 * ((i / G) * G + j), qb + 16 * h + 4 * i, 4);
            for (int m = 0; m < 4 / G; m++) {
                const int sl = 16 * L + 4 * (m * G + j);
                memcpy(rec + 64 * G + sl, h == 0 && m == 0 ? &corr : &zero, 4);
                memcpy(rec + 64 * (G + 1) + sl, &d, 4);
            }
        }
    }
}

/* ---- Q8_0, many tokens: tokens in lanes ----
 *
 * A tile is R rows x TV token groups (16 tokens each). Per block of 32
 * columns: the int32 accumulators start at the tokens' corr, then for each
 * 4-column group g one broadcast dword of each row's weights (made
 * unsigned, ^0x80) is multiplied by vector g of each token group (vpdpbusd,
 * 64 multiply-adds); the block's exact int32 sums then become float and are
 * scaled by d_w * d_x into the float accumulators with one FMA. Each lane is
 * one (row, token) output with its own sequence of operations, so neither
 * the tile shape nor the row split changes a bit. */
AI uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

AI void tl_tile(const kvl_mm_ctx *c, int64_t r, int64_t g0, const int R, const int TV) {
    const int64_t nb = c->n_cols / 32;
    const uint8_t *row[4];
    const uint8_t *grp[2];
    __m512 acc[4][2];
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
        row[i] = c->W + (size_t)(r + i) * c->w_row_bytes;
#pragma GCC unroll 2
    for (int v = 0; v < TV; v++) {
        grp[v] = kvl_tl_group(c->act, c->n_cols, g0 + v);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
            acc[i][v] = _mm512_setzero_ps();
    }
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int64_t b = 0; b < nb; b++) {
        __m512i p[4][2];
#pragma GCC unroll 2
        for (int v = 0; v < TV; v++) {
            const __m512i corr = _mm512_load_si512(grp[v] + (size_t)b * KVL_TL_REC + 576);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++)
                p[i][v] = corr;
        }
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            __m512i x[2];
#pragma GCC unroll 2
            for (int v = 0; v < TV; v++)
                x[v] = _mm512_load_si512(grp[v] + (size_t)b * KVL_TL_REC + g * 64);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++) {
                const kvl_block_q8_0 *blk = (const kvl_block_q8_0 *)row[i] + b;
                const __m512i w = _mm512_xor_si512(
                    _mm512_set1_epi32((int)load_u32((const uint8_t *)blk->qs + 4 * g)), bias);
#pragma GCC unroll 2
                for (int v = 0; v < TV; v++)
                    p[i][v] = _mm512_dpbusd_epi32(p[i][v], w, x[v]);
            }
        }
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            const kvl_block_q8_0 *blk = (const kvl_block_q8_0 *)row[i] + b;
            const __m512 dw = _mm512_cvtph_ps(_mm256_set1_epi16((short)blk->d));
#pragma GCC unroll 2
            for (int v = 0; v < TV; v++) {
                const __m512 s =
                    _mm512_load_ps((const float *)(grp[v] + (size_t)b * KVL_TL_REC + 512));
                acc[i][v] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(p[i][v]), _mm512_mul_ps(dw, s), acc[i][v]);
            }
        }
    }
    /* lane t of acc[i][v] is Y[token 16 (g0 + v) + t][row r + i] */
    const __m512i idx =
        _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                           _mm512_set1_epi32((int)c->n_rows));
#pragma GCC unroll 2
    for (int v = 0; v < TV; v++) {
        const int64_t t0 = (g0 + v) * 16;
        const int64_t nt = c->n_tok - t0 < 16 ? c->n_tok - t0 : 16;
        const __mmask16 m = (__mmask16)((1u << nt) - 1);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
            _mm512_mask_i32scatter_ps(c->Y + t0 * c->n_rows + r + i, m, idx, acc[i][v], 4);
    }
}

static void tl_4x2(const kvl_mm_ctx *c, int64_t r, int64_t g0) { tl_tile(c, r, g0, 4, 2); }
static void tl_4x1(const kvl_mm_ctx *c, int64_t r, int64_t g0) { tl_tile(c, r, g0, 4, 1); }
static void tl_1x2(const kvl_mm_ctx *c, int64_t r, int64_t g0) { tl_tile(c, r, g0, 1, 2); }
static void tl_1x1(const kvl_mm_ctx *c, int64_t r, int64_t g0) { tl_tile(c, r, g0, 1, 1); }

/* Token groups per chunk: the chunk's activations (4 x 16 tokens, 1.25
 * bytes per column each) stay in L2 while the rows pass over them. */
#define TL_CHUNK 4

void kvl_mm_rows_tl_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const int64_t n_groups = (c->n_tok + 15) / 16;
    for (int64_t c0 = 0; c0 < n_groups; c0 += TL_CHUNK) {
        const int64_t c1 = n_groups - c0 < TL_CHUNK ? n_groups : c0 + TL_CHUNK;
        for (int64_t r = r0; r < r1;) {
            const bool full = r1 - r >= 4;
            int64_t g = c0;
            for (; g + 2 <= c1; g += 2)
                (full ? tl_4x2 : tl_1x2)(c, r, g);
            if (g < c1)
                (full ? tl_4x1 : tl_1x1)(c, r, g);
            r += full ? 4 : 1;
        }
    }
}

/* ---- float tiles ---- */

AI __m512 load16(const uint8_t *row, int64_t k, __mmask16 m, const kvl_type t) {
    if (t == KVL_TYPE_F32)
        return _mm512_maskz_loadu_ps(m, (const float *)row + k);
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + k);
    if (t == KVL_TYPE_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Float tiles are FT_R = 6 rows x up to 4 tokens: 24 accumulators, and per
 * 16 columns 6 weight loads (16-bit ones 32 bytes, converted), 4 activation
 * loads (64 bytes) and 24 FMAs. Zen 4 loads two 32-byte halves per cycle,
 * so loads, not FMAs, bound 4 x 4: in L1 one core ran 4 x 4 at 70% of its
 * FMA peak, 5 x 4 at 97%. In the product itself (2 threads, 64 tokens,
 * TinyLlama shapes, F16), against 5 x 4, interleaved: 4 x 4 took
 * 1.04-1.06x the time, 6 x 4 0.97x. */
#define FT_R 6

AI void fstep(__m512 acc[FT_R][4], const uint8_t *const *row, const float *const *x, int64_t k,
              __mmask16 m, const int R, const int T, const kvl_type t) {
    __m512 w[FT_R];
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
        w[i] = load16(row[i], k, m, t);
#pragma GCC unroll 4
    for (int j = 0; j < T; j++) {
        const __m512 xv = _mm512_maskz_loadu_ps(m, x[j] + k);
#pragma GCC unroll 6
        for (int i = 0; i < R; i++)
            acc[i][j] = _mm512_fmadd_ps(w[i], xv, acc[i][j]);
    }
}

AI void tile_f(const kvl_mm_ctx *c, int64_t r, int64_t tok, const int R, const int T,
               const kvl_type t) {
    const int64_t n = c->n_cols;
    const uint8_t *row[FT_R];
    const float *x[4];
    __m512 acc[FT_R][4];
#pragma GCC unroll 6
    for (int i = 0; i < R; i++)
        row[i] = c->W + (size_t)(r + i) * c->w_row_bytes;
#pragma GCC unroll 4
    for (int j = 0; j < T; j++) {
        x[j] = c->X + (tok + j) * n;
#pragma GCC unroll 6
        for (int i = 0; i < R; i++)
            acc[i][j] = _mm512_setzero_ps();
    }
    int64_t k = 0;
    /* The first token group of a chunk reads this tile's rows from memory:
     * it also prefetches the next tile's rows, one line per row every 64
     * bytes of columns, so that they are in L1 when that tile starts. */
    if (R == FT_R && tok % KVL_MM_TOK_CHUNK == 0 && r + 2 * R <= c->n_rows) {
        const size_t es = t == KVL_TYPE_F32 ? 4 : 2, rb = c->w_row_bytes;
        const uint8_t *next = c->W + (size_t)(r + R) * rb;
        for (; k + 16 <= n; k += 16) {
            if (((size_t)k * es & 63) == 0) {
#pragma GCC unroll 6
                for (int i = 0; i < R; i++)
                    _mm_prefetch((const char *)(next + i * rb + (size_t)k * es), _MM_HINT_T0);
            }
            fstep(acc, row, x, k, (__mmask16)0xffff, R, T, t);
        }
    }
    for (; k + 16 <= n; k += 16)
        fstep(acc, row, x, k, (__mmask16)0xffff, R, T, t);
    if (k < n)
        fstep(acc, row, x, k, (__mmask16)((1u << (n - k)) - 1), R, T, t);
#pragma GCC unroll 4
    for (int j = 0; j < T; j++)
#pragma GCC unroll 6
        for (int i = 0; i < R; i++)
            c->Y[(tok + j) * c->n_rows + r + i] = _mm512_reduce_add_ps(acc[i][j]);
}

/* Weights k..k+31 of a 16-bit (F16 / BF16) row as two float vectors, from
 * one 64-byte load. Converting straight from memory (vcvtph2ps zmm, m256:
 * two loads per cache line) streamed F16 rows from DRAM at ~20 GB/s on one
 * Zen 4 thread against ~30 GB/s for this form, though both run at the same
 * speed from L2. */
AI void load32(const uint8_t *row, int64_t k, const kvl_type t, __m512 *w0, __m512 *w1) {
    const __m512i h = _mm512_loadu_si512(row + k * 2);
    const __m256i h0 = _mm512_castsi512_si256(h), h1 = _mm512_extracti64x4_epi64(h, 1);
    if (t == KVL_TYPE_F16) {
        *w0 = _mm512_cvtph_ps(h0);
        *w1 = _mm512_cvtph_ps(h1);
    } else {
        *w0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h0), 16));
        *w1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h1), 16));
    }
}

/* Decode, float weights: rows [r0, r1) x token 0, GV_U x 16 columns per
 * step; accumulator u takes columns [16u, 16u + 16) of each step; the
 * column tail (16 at a time, the last masked) goes into accumulator 0.
 * One row at a time: two F16 rows interleaved (4 KiB apart at dim 2048)
 * measured 2x slower on one thread; software prefetch (512 B to 8 KiB
 * ahead, or the next rows' first lines) measured no gain. */
AI void gemv_f(const kvl_mm_ctx *c, int64_t r0, int64_t r1, const kvl_type t) {
    const int64_t n = c->n_cols;
    const float *x = c->X;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = c->W + (size_t)r * c->w_row_bytes;
        __m512 acc[GV_U];
#pragma GCC unroll 4
        for (int u = 0; u < GV_U; u++)
            acc[u] = _mm512_setzero_ps();
        int64_t k = 0;
        for (; k + 16 * GV_U <= n; k += 16 * GV_U) {
            if (t != KVL_TYPE_F32) {
#pragma GCC unroll 2
                for (int u = 0; u < GV_U; u += 2) {
                    __m512 w0, w1;
                    load32(row, k + 16 * u, t, &w0, &w1);
                    acc[u] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + k + 16 * u), acc[u]);
                    acc[u + 1] =
                        _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + k + 16 * u + 16), acc[u + 1]);
                }
                continue;
            }
#pragma GCC unroll 4
            for (int u = 0; u < GV_U; u++)
                acc[u] = _mm512_fmadd_ps(load16(row, k + 16 * u, (__mmask16)0xffff, t),
                                         _mm512_loadu_ps(x + k + 16 * u), acc[u]);
        }
        for (; k < n; k += 16) {
            const __mmask16 m = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1);
            acc[0] = _mm512_fmadd_ps(load16(row, k, m, t), _mm512_maskz_loadu_ps(m, x + k), acc[0]);
        }
        const __m512 a01 = _mm512_add_ps(acc[0], acc[1]), a23 = _mm512_add_ps(acc[2], acc[3]);
        c->Y[r] = _mm512_reduce_add_ps(_mm512_add_ps(a01, a23));
    }
}

/* Decode, float weights, rows longer than GW_COLS columns: R rows at a time
 * (GW_R, then one at a time for the rest), 32 columns per step in two
 * accumulators per row ([k, k + 16) and [k + 16, k + 32)), the column tail
 * 16 at a time into the first. Each row's summation order is the same in a
 * group of GW_R and alone, so any split gives the same bits.
 * Why: at 5632 columns the f32 activation row (22.5 KiB) no longer stays
 * in L1 while weights stream through it, and one row at a time reloads all
 * of it per row from L2; R rows share each activation load. Measured with
 * two threads on the TinyLlama down projection (2048 x 5632 F16): 1.37x
 * gemv_f's bandwidth (8 rows), 1.22x (4 rows), 1.09x (16 rows). For
 * 2048-column rows gemv_f is faster: there several row streams 4 KiB apart
 * measured 0.8x. */
#define GW_COLS 4096
#define GW_R 8
AI void gemv_fw_rows(const kvl_mm_ctx *c, int64_t r, const int R, const kvl_type t) {
    const int64_t n = c->n_cols;
    const float *x = c->X;
    const uint8_t *row[GW_R];
    __m512 a0[GW_R], a1[GW_R];
#pragma GCC unroll 8
    for (int i = 0; i < R; i++) {
        row[i] = c->W + (size_t)(r + i) * c->w_row_bytes;
        a0[i] = _mm512_setzero_ps();
        a1[i] = _mm512_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 32 <= n; k += 32) {
        const __m512 x0 = _mm512_loadu_ps(x + k), x1 = _mm512_loadu_ps(x + k + 16);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++) {
            a0[i] = _mm512_fmadd_ps(load16(row[i], k, (__mmask16)0xffff, t), x0, a0[i]);
            a1[i] = _mm512_fmadd_ps(load16(row[i], k + 16, (__mmask16)0xffff, t), x1, a1[i]);
        }
    }
    for (; k < n; k += 16) {
        const __mmask16 m = n - k >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - k)) - 1);
        const __m512 xk = _mm512_maskz_loadu_ps(m, x + k);
#pragma GCC unroll 8
        for (int i = 0; i < R; i++)
            a0[i] = _mm512_fmadd_ps(load16(row[i], k, m, t), xk, a0[i]);
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; i++)
        c->Y[r + i] = _mm512_reduce_add_ps(_mm512_add_ps(a0[i], a1[i]));
}

AI void gemv_fw(const kvl_mm_ctx *c, int64_t r0, int64_t r1, const kvl_type t) {
    int64_t r = r0;
    for (; r + GW_R <= r1; r += GW_R)
        gemv_fw_rows(c, r, GW_R, t);
    for (; r < r1; r++)
        gemv_fw_rows(c, r, 1, t);
}

AI void gemv_float(const kvl_mm_ctx *c, int64_t r0, int64_t r1, const kvl_type t) {
    if (c->n_cols > GW_COLS)
        gemv_fw(c, r0, r1, t);
    else
        gemv_f(c, r0, r1, t);
}

KVL_TILES(q, KVL_TYPE_Q8_0, q8_0, 4)
KVL_TILES(q, KVL_TYPE_Q4_0, q4_0, 4)
_Static_assert(FT_R == 6, "the float tiles below are FT_R rows");
KVL_TILES(f, KVL_TYPE_F32, f32, 6)
KVL_TILES(f, KVL_TYPE_F16, f16, 6)
KVL_TILES(f, KVL_TYPE_BF16, bf16, 6)

void kvl_mm_rows_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const bool one = c->n_tok == 1 && !kvl_mm_batch_invariant;
    switch (c->t) {
    case KVL_TYPE_Q8_0:
        if (one && c->n_cols > kvl_gemv_q_wide_cols)
            gemv_q(c, r0, r1, KVL_TYPE_Q8_0, true);
        else if (one)
            gemv_q(c, r0, r1, KVL_TYPE_Q8_0, false);
        else
            kvl_mm_drive(c, r0, r1, 4, 4, big_q8_0, one_q8_0);
        break;
    case KVL_TYPE_Q4_0:
        if (one && c->n_cols > kvl_gemv_q_wide_cols)
            gemv_q(c, r0, r1, KVL_TYPE_Q4_0, true);
        else if (one)
            gemv_q(c, r0, r1, KVL_TYPE_Q4_0, false);
        else
            kvl_mm_drive(c, r0, r1, 4, 4, big_q4_0, one_q4_0);
        break;
    case KVL_TYPE_F32:
        if (one)
            gemv_float(c, r0, r1, KVL_TYPE_F32);
        else
            kvl_mm_drive(c, r0, r1, FT_R, 4, big_f32, one_f32);
        break;
    case KVL_TYPE_F16:
        if (one)
            gemv_float(c, r0, r1, KVL_TYPE_F16);
        else
            kvl_mm_drive(c, r0, r1, FT_R, 4, big_f16, one_f16);
        break;
    case KVL_TYPE_BF16:
        if (one)
            gemv_float(c, r0, r1, KVL_TYPE_BF16);
        else
            kvl_mm_drive(c, r0, r1, FT_R, 4, big_bf16, one_bf16);
        break;
    default: KVL_ASSERT(!"kvl_mm_rows_avx512: unsupported type");
    }
}
