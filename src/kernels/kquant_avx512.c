/*
 * kquant_avx512: the AVX-512 (F/BW/VL + VNNI) products of K-quant weights
 * and the quantizer of their activation rows (only called when
 * kvl_isa_active() == KVL_ISA_AVX512).
 *
 * One 512-bit register holds 64 weights that meet 64 consecutive
 * activations:
 *   Q4_K: the 32 bytes of a 64-value chunk broadcast to both halves, the
 *         upper half shifted right by 4 (vpsrlvw), masked to nibbles:
 *         [sub-block 2k | sub-block 2k+1], in the activations' order.
 *   Q5_K: as Q4_K, with bit 4 from the broadcast qh (bit 2k / 2k+1 per half).
 *   Q6_K: 64 bytes of ql give the low nibbles of values 0..63 of a half
 *         (and the high nibbles those of 64..127); the 32 qh bytes,
 *         broadcast and shifted per half (vpsllvw / vpsrlvw), give bits 4-5.
 *   Q2_K, Q3_K: the 32 qs bytes of a half broadcast and shifted per half
 *         give 64 values in order (Q3_K: bit 2 from the broadcast hmask).
 * maddubs(w, x) gives exact int16 pair sums (<= 2 * 63 * 127) and vpdpwssd
 * multiplies them by the int16 sub-block scales (vpermw from the block's
 * scales) and accumulates in int32. The offsets (Q4_K mins, Q6_K's -32)
 * come from the activation sums per 16, as in kquant_avx2.c. Tiles are R
 * rows x T tokens: 4 x 1 in decode, 2 x 1..4 otherwise. Q5_0 / Q5_1
 * (32-blocks, Q8_0's activation rows) before the activation quantizer.
 *
 * Must not: allocate, or read weights past their row.
 */
#include "kernels/kquant.h"

#include <immintrin.h>
#include <math.h>

#define AI static inline __attribute__((always_inline))

/* The 8 scales and 8 mins of a Q4_K block as bytes 0..7 and 8..15, from
 * its 12 packed bytes (s[12..15], the first bytes of qs, are read and
 * ignored). Dwords of the packed bytes A0 A1 A2 and of the result:
 *   sc 0..3 = A0 & 0x3f..           sc 4..7 = (A2 & 0x0f..) | (A0 >> 6 & 3..) << 4
 *   m  0..3 = A1 & 0x3f..           m  4..7 = (A2 >> 4 & 0x0f..) | (A1 >> 6 & 3..) << 4 */
AI __m128i q4k_scales(const uint8_t *s) {
    const __m128i a = _mm_loadu_si128((const __m128i *)s);
    const __m128i x =
        _mm_srlv_epi32(_mm_shuffle_epi32(a, 0x98 /* 0 2 1 2 */), _mm_setr_epi32(0, 0, 0, 4));
    const __m128i lo =
        _mm_and_si128(x, _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    const __m128i y = _mm_srli_epi32(_mm_shuffle_epi32(a, 0x50 /* 0 0 1 1 */), 2);
    const __m128i hi = _mm_and_si128(y, _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
    return _mm_or_si128(lo, hi);
}

/* int16 lanes 0..15 = a, 16..31 = b */
AI __m512i halves16(int a, int b) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)a)),
                              _mm256_set1_epi16((short)b), 1);
}

/* int16 lane i = base + i / 8 */
/* Q5_K: bit 2k (lanes 0..31) / 2k+1 (lanes 32..63) of the broadcast qh,
 * moved to bit 4 of each byte */
AI __m512i q5k_bit4(__m512i qh, int k) {
    const __m512i b = _mm512_and_si512(
        _mm512_srlv_epi16(
            qh, _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)(2 * k))),
                                   _mm256_set1_epi16((short)(2 * k + 1)), 1)),
        _mm512_set1_epi8(1));
    return _mm512_slli_epi16(b, 4);
}

AI __m512i quarters16(int base) {
    const int v0 = (base + 0) * 0x10001, v1 = (base + 1) * 0x10001, v2 = (base + 2) * 0x10001,
              v3 = (base + 3) * 0x10001;
    return _mm512_set_epi32(v3, v3, v3, v3, v2, v2, v2, v2, v1, v1, v1, v1, v0, v0, v0, v0);
}

/* The int16 scales of a Q2_K (sc & 15; mins in *m16) or Q3_K (sc - 32)
 * block, and its d (Q2_K: also *dmin). */
AI __m256i lo23_scales(const uint8_t *blk, __m256i *m16, float *d, float *dmin, const kvl_type ty) {
    if (ty == KVL_TYPE_Q2_K) {
        const kvl_block_q2_k *b = (const kvl_block_q2_k *)blk;
        const __m128i raw = _mm_loadu_si128((const __m128i *)b->scales);
        const __m128i m4 = _mm_set1_epi8(0x0f);
        *m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
        *d = _cvtsh_ss(b->d);
        *dmin = _cvtsh_ss(b->dmin);
        return _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
    }
    const kvl_block_q3_k *b = (const kvl_block_q3_k *)blk;
    int8_t sc[16];
    kvl_q3k_scales(b->scales, sc);
    *m16 = _mm256_setzero_si256();
    *d = _cvtsh_ss(b->d);
    *dmin = 0.0f;
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
}

/* q of values 128 n + 64 k + (0..63) of a Q2_K / Q3_K block: the 32 qs
 * bytes of half n broadcast, the halves shifted by 4k and 4k + 2 (bits
 * 2j of j = 2k, 2k + 1); Q3_K's bit 2 from bits 4n + 2k, 4n + 2k + 1 of
 * the broadcast hmask. */
AI __m512i lo23_weights(__m512i q, __m512i hm, int n, int k, const kvl_type ty) {
    __m512i w =
        _mm512_and_si512(_mm512_srlv_epi16(q, halves16(4 * k, 4 * k + 2)), _mm512_set1_epi8(3));
    if (ty == KVL_TYPE_Q3_K) {
        const __m512i hb = _mm512_and_si512(
            _mm512_srlv_epi16(hm, halves16(4 * n + 2 * k, 4 * n + 2 * k + 1)), _mm512_set1_epi8(1));
        w = _mm512_or_si512(w, _mm512_slli_epi16(hb, 2));
    }
    return w;
}

/* One Q2_K or Q3_K super-block of one row against T tokens, into acc[j]
 * (kquant_avx2.c's lo23_sb, 64 values per register). */
AI void lo23_sb(const uint8_t *blk, int64_t s, const int T, const int8_t *const *qx,
                const float *const *dx, const int16_t *const *bs, __m512 *acc, const kvl_type ty) {
    __m256i m16;
    float d, dmin;
    const __m256i sc16 = lo23_scales(blk, &m16, &d, &dmin, ty);
    const __m512i sz = _mm512_zextsi256_si512(sc16);
    __m512i iacc[4];
#pragma GCC unroll 4
    for (int j = 0; j < T; j++) {
        const __m256i sums = _mm256_loadu_si256((const __m256i *)(bs[j] + s * 16));
        if (ty == KVL_TYPE_Q2_K) {
            const __m256i mins = _mm256_madd_epi16(m16, sums);
            acc[j] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(mins)),
                                      _mm512_set1_ps(dmin * dx[j][s]), acc[j]);
            iacc[j] = _mm512_setzero_si512();
        } else {
            const __m256i off = _mm256_madd_epi16(sc16, sums);
            iacc[j] = _mm512_zextsi256_si512(
                _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 2)));
        }
    }
    const uint8_t *qs =
        ty == KVL_TYPE_Q2_K ? ((const kvl_block_q2_k *)blk)->qs : ((const kvl_block_q3_k *)blk)->qs;
    const __m512i hm = ty == KVL_TYPE_Q3_K
                           ? _mm512_broadcast_i64x4(_mm256_loadu_si256(
                                 (const __m256i *)((const kvl_block_q3_k *)blk)->hmask))
                           : _mm512_setzero_si512();
#pragma GCC unroll 2
    for (int n = 0; n < 2; n++) {
        const __m512i q =
            _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * n)));
#pragma GCC unroll 2
        for (int k = 0; k < 2; k++) {
            const __m512i w = lo23_weights(q, hm, n, k, ty);
            const __m512i scv = _mm512_permutexvar_epi16(quarters16(8 * n + 4 * k), sz);
#pragma GCC unroll 4
            for (int j = 0; j < T; j++) {
                const __m512i x = _mm512_loadu_si512(qx[j] + s * KVL_QK_K + 128 * n + 64 * k);
                iacc[j] = _mm512_dpwssd_epi32(iacc[j], _mm512_maddubs_epi16(w, x), scv);
            }
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < T; j++)
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[j]), _mm512_set1_ps(d * dx[j][s]), acc[j]);
}

AI void tile_kq(const kvl_mm_ctx *c, int64_t r, int64_t tok, const int R, const int T,
                const kvl_type ty) {
    const int64_t ns = c->n_cols / KVL_QK_K;
    kvl_tile_in in;
    kvl_tile_in_init(&in, c, r, R, tok, T);
    const uint8_t *const *row = in.row;
    const int8_t *const *qx = in.qx;
    const float *const *dx = in.dx;
    const int16_t *const *bs = in.bsums;
    __m512 acc[4][4];
    KVL_TILE_EACH(R, T, acc[i][j] = _mm512_setzero_ps());
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int64_t s = 0; s < ns; s++) {
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m512i iacc[4];
            if (ty == KVL_TYPE_Q4_K || ty == KVL_TYPE_Q5_K) {
                /* Q5_K: Q4_K's header (d, dmin, scales), then qh and qs */
                const uint8_t *blk = row[i] + (size_t)s * kvl_kq_block_bytes(ty);
                const kvl_block_q4_k *b = (const kvl_block_q4_k *)blk;
                const uint8_t *qs = ty == KVL_TYPE_Q4_K ? b->qs : ((const kvl_block_q5_k *)blk)->qs;
                const __m512i qh = ty == KVL_TYPE_Q5_K
                                       ? _mm512_broadcast_i64x4(_mm256_loadu_si256(
                                             (const __m256i *)((const kvl_block_q5_k *)blk)->qh))
                                       : _mm512_setzero_si512();
                const __m128i scm = q4k_scales(b->scales);
                const __m512i scz = _mm512_zextsi256_si512(_mm256_cvtepu8_epi16(scm));
                const __m256i mdup = _mm256_cvtepu8_epi16(
                    _mm_shuffle_epi8(scm, _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
                                                        14, 14, 15, 15)));
                const float d = _cvtsh_ss(b->d), dmin = _cvtsh_ss(b->dmin);
                const __m512i sh = halves16(0, 4);
#pragma GCC unroll 4
                for (int j = 0; j < T; j++) {
                    const __m256i mins = _mm256_madd_epi16(
                        mdup, _mm256_loadu_si256((const __m256i *)(bs[j] + s * 16)));
                    acc[i][j] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(mins)),
                                                 _mm512_set1_ps(dmin * dx[j][s]), acc[i][j]);
                    iacc[j] = _mm512_setzero_si512();
                }
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    const __m512i q =
                        _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * k)));
                    __m512i w = _mm512_and_si512(_mm512_srlv_epi16(q, sh), m4);
                    if (ty == KVL_TYPE_Q5_K)
                        w = _mm512_or_si512(w, q5k_bit4(qh, k));
                    const __m512i scv = _mm512_permutexvar_epi16(halves16(2 * k, 2 * k + 1), scz);
#pragma GCC unroll 4
                    for (int j = 0; j < T; j++) {
                        const __m512i x = _mm512_loadu_si512(qx[j] + s * KVL_QK_K + 64 * k);
                        iacc[j] = _mm512_dpwssd_epi32(iacc[j], _mm512_maddubs_epi16(w, x), scv);
                    }
                }
#pragma GCC unroll 4
                for (int j = 0; j < T; j++)
                    acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[j]),
                                                _mm512_set1_ps(d * dx[j][s]), acc[i][j]);
            } else if (ty == KVL_TYPE_Q2_K || ty == KVL_TYPE_Q3_K) {
                lo23_sb(row[i] + (size_t)s * kvl_kq_block_bytes(ty), s, T, qx, dx, bs, acc[i], ty);
            } else {
                const kvl_block_q6_k *b = (const kvl_block_q6_k *)row[i] + s;
                const __m256i s16 =
                    _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
                const __m512i sz = _mm512_zextsi256_si512(s16);
                const float d = _cvtsh_ss(b->d);
                const __m512i m30 = _mm512_set1_epi8(0x30);
                const __m512i shA = halves16(4, 2), shB = halves16(0, 2);
#pragma GCC unroll 4
                for (int j = 0; j < T; j++) {
                    const __m256i off = _mm256_madd_epi16(
                        s16, _mm256_loadu_si256((const __m256i *)(bs[j] + s * 16)));
                    iacc[j] = _mm512_zextsi256_si512(
                        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5)));
                }
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    const __m512i L = _mm512_loadu_si512(b->ql + 64 * h);
                    const __m512i H = _mm512_broadcast_i64x4(
                        _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
                    const __m512i wA = _mm512_or_si512(
                        _mm512_and_si512(L, m4), _mm512_and_si512(_mm512_sllv_epi16(H, shA), m30));
                    const __m512i wB =
                        _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                                        _mm512_and_si512(_mm512_srlv_epi16(H, shB), m30));
                    const __m512i scA = _mm512_permutexvar_epi16(quarters16(8 * h), sz);
                    const __m512i scB = _mm512_permutexvar_epi16(quarters16(8 * h + 4), sz);
#pragma GCC unroll 4
                    for (int j = 0; j < T; j++) {
                        const int8_t *x = qx[j] + s * KVL_QK_K + 128 * h;
                        iacc[j] = _mm512_dpwssd_epi32(
                            iacc[j], _mm512_maddubs_epi16(wA, _mm512_loadu_si512(x)), scA);
                        iacc[j] = _mm512_dpwssd_epi32(
                            iacc[j], _mm512_maddubs_epi16(wB, _mm512_loadu_si512(x + 64)), scB);
                    }
                }
#pragma GCC unroll 4
                for (int j = 0; j < T; j++)
                    acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[j]),
                                                _mm512_set1_ps(d * dx[j][s]), acc[i][j]);
            }
        }
    }
    KVL_TILE_EACH(R, T, c->Y[(tok + j) * c->n_rows + r + i] = _mm512_reduce_add_ps(acc[i][j]));
}

KVL_TILES(kq, KVL_TYPE_Q4_K, q4k, 2)
KVL_TILES(kq, KVL_TYPE_Q5_K, q5k, 2)
KVL_TILES(kq, KVL_TYPE_Q6_K, q6k, 2)
KVL_TILES(kq, KVL_TYPE_Q4_K, q4k_dec, 4)
KVL_TILES(kq, KVL_TYPE_Q5_K, q5k_dec, 4)
KVL_TILES(kq, KVL_TYPE_Q6_K, q6k_dec, 4)

KVL_TILES(kq, KVL_TYPE_Q2_K, q2k, 2)
KVL_TILES(kq, KVL_TYPE_Q3_K, q3k, 2)
KVL_TILES(kq, KVL_TYPE_Q2_K, q2k_dec, 4)
KVL_TILES(kq, KVL_TYPE_Q3_K, q3k_dec, 4)

/* Drive tname's tiles: 4 rows x 1 token for decode (_dec), else 2 x 4. */
#define DRIVE(tname)                                                                               \
    kvl_mm_drive(c, r0, r1, dec ? 4 : 2, dec ? 1 : 4, dec ? big_##tname##_dec : big_##tname,       \
                 dec ? one_##tname##_dec : one_##tname)

void kvl_kq_rows_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const bool dec = c->n_tok == 1;
    switch (c->t) {
    case KVL_TYPE_Q2_K: DRIVE(q2k); break;
    case KVL_TYPE_Q3_K: DRIVE(q3k); break;
    case KVL_TYPE_Q4_K: DRIVE(q4k); break;
    case KVL_TYPE_Q5_K: DRIVE(q5k); break;
    default: DRIVE(q6k); break;
    }
}

/*
 * Q5_0 / Q5_1, activations in the Q8_0 row layout: two 32-value blocks per
 * register (a pair's dx, 8 copies per block, and corr lanes load as they
 * are). The 32 bits of each block's qh become bytes of 0x10 by a mask
 * register (bit i of qh selects byte i) or'ed into the nibbles; vpdpbusd
 * gives exact int32 sums of 4 products. Q5_0 adds the corr lane (-16 *
 * sum(q_x)) before the scale d_w * d_x; Q5_1 subtracts corr * d_x (corr =
 * -sum(q_x)) times each row's m. An odd last block runs with the upper
 * half zero.
 */
AI __m256i q5_weights(const uint8_t *qh, const uint8_t *qs) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m256i nib =
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
    return _mm256_mask_add_epi8(nib, (__mmask32)h, nib, _mm256_set1_epi8(0x10));
}

AI void tile_q5(const kvl_mm_ctx *c, int64_t r, int64_t tok, const int R, const int T,
                const kvl_type ty) {
    const int64_t nb = c->n_cols / 32;
    const bool q50 = ty == KVL_TYPE_Q5_0;
    const size_t bb = q50 ? sizeof(kvl_block_q5_0) : sizeof(kvl_block_q5_1);
    kvl_tile_in in;
    kvl_tile_in_init(&in, c, r, R, tok, T);
    __m512 acc[4][4];
    KVL_TILE_EACH(R, T, acc[i][j] = _mm512_setzero_ps());
    for (int64_t b = 0; b < nb; b += 2) {
        const bool two = b + 1 < nb;
        __m512i w[4];
        __m512 dw[4], mw[4];
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = in.row[i] + (size_t)b * bb;
            uint16_t h0[2] = {0, 0}, h1[2] = {0, 0};
            memcpy(h0, blk, q50 ? 2 : 4);
            __m256i w1 = _mm256_setzero_si256();
            if (two) {
                memcpy(h1, blk + bb, q50 ? 2 : 4);
                w1 = q5_weights(blk + bb + (q50 ? 2 : 4), blk + bb + (q50 ? 6 : 8));
            }
            w[i] = _mm512_inserti64x4(
                _mm512_castsi256_si512(q5_weights(blk + (q50 ? 2 : 4), blk + (q50 ? 6 : 8))), w1,
                1);
            dw[i] = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(h0[0])),
                                       _mm256_set1_ps(_cvtsh_ss(h1[0])), 1);
            if (!q50)
                mw[i] = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(h0[1])),
                                           _mm256_set1_ps(_cvtsh_ss(h1[1])), 1);
        }
        const __mmask16 mk = two ? 0xffff : 0x00ff;
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            const __m512i x =
                _mm512_maskz_loadu_epi8(two ? ~0ull : 0xffffffffull, in.qx[j] + b * 32);
            const __m512 s = _mm512_maskz_loadu_ps(mk, in.dx[j] + b * 8);
            const __m512i cr = _mm512_maskz_loadu_epi32(mk, in.corr[j] + b * 8);
            const __m512 crs = _mm512_mul_ps(_mm512_cvtepi32_ps(cr), s);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++) {
                __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[i], x);
                if (q50)
                    p = _mm512_add_epi32(p, cr);
                acc[i][j] =
                    _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw[i], s), acc[i][j]);
                if (!q50)
                    acc[i][j] = _mm512_fnmadd_ps(crs, mw[i], acc[i][j]);
            }
        }
    }
    KVL_TILE_EACH(R, T, c->Y[(tok + j) * c->n_rows + r + i] = _mm512_reduce_add_ps(acc[i][j]));
}

KVL_TILES(q5, KVL_TYPE_Q5_0, q50, 2)
KVL_TILES(q5, KVL_TYPE_Q5_1, q51, 2)
KVL_TILES(q5, KVL_TYPE_Q5_0, q50_dec, 4)
KVL_TILES(q5, KVL_TYPE_Q5_1, q51_dec, 4)

void kvl_q5_rows_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const bool dec = c->n_tok == 1;
    if (c->t == KVL_TYPE_Q5_0)
        DRIVE(q50);
    else
        DRIVE(q51);
}

void kvl_kq_quantize_act_avx512(const float *x, int64_t n_cols, int64_t s0, int64_t s1,
                                uint8_t *dst) {
    int8_t *qs = (int8_t *)dst;
    float *dx = (float *)(dst + n_cols);
    int16_t *bsum = (int16_t *)(dx + n_cols / KVL_QK_K);
    const __m512 lim = _mm512_set1_ps(127.0f), nlim = _mm512_set1_ps(-127.0f);
    for (int64_t s = s0; s < s1; s++) {
        const float *xb = x + s * KVL_QK_K;
        __m512 m = _mm512_setzero_ps();
        for (int g = 0; g < 16; g++)
            m = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(xb + 16 * g)), m); /* NaN: keeps m */
        const float amax = _mm512_reduce_max_ps(m);
        const float d = amax / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        for (int g = 0; g < 16; g++) {
            /* min/max return the bound for NaN, like the scalar clamp */
            const __m512 v = _mm512_max_ps(
                _mm512_min_ps(_mm512_mul_ps(_mm512_loadu_ps(xb + 16 * g), vid), lim), nlim);
            const __m512i q =
                _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm_storeu_si128((__m128i *)(qs + s * KVL_QK_K + 16 * g), _mm512_cvtsepi32_epi8(q));
            bsum[s * 16 + g] = (int16_t)_mm512_reduce_add_epi32(q);
        }
        dx[s] = d;
    }
}

/*
 * K-quant products of KVL_TL_MIN_TOK or more tokens, activations in the
 * token-lane layout of Q8_0 (kernels_impl.h: per 32 columns and 16 tokens,
 * 4 columns per token in each dword, a d and -128 * sum(q) per token).
 * Each row's super-block is first unpacked into 256 unsigned bytes in
 * value order (Q4_K: nibbles 0..15, Q6_K: q 0..63); then one dword of it,
 * broadcast, meets 16 tokens' 4 activations in one vpdpbusd. Per token:
 *   Q4_K, sub-block j = one block of 32:
 *     w . x = dx * (d sc * dot + dmin m / 128 * corr)
 *   Q6_K, sub-blocks a, b = the two halves of a block:
 *     w . x = dx * d * (sc_a * (dot_a - 32 S_a) + sc_b * (dot_b - 32 S_b))
 *     with S_a = sum(q_x) over the first half (vpdpbusd with bytes of 1,
 *     once per block for all rows) and S_b = -corr / 128 - S_a.
 * The activations keep Q8_0's scale per 32 (finer than the 256 of the row
 * layout). Tiles are R = 4 rows x TV = 2 token groups, as Q8_0's.
 */
AI uint32_t load_u32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* The 256 q of a super-block in value order. */
AI void unpack_sb(const uint8_t *blk, uint8_t *out, const kvl_type ty) {
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    if (ty == KVL_TYPE_Q4_K || ty == KVL_TYPE_Q5_K) {
        const uint8_t *qs = ty == KVL_TYPE_Q4_K ? ((const kvl_block_q4_k *)blk)->qs
                                                : ((const kvl_block_q5_k *)blk)->qs;
        const __m512i qh = ty == KVL_TYPE_Q5_K
                               ? _mm512_broadcast_i64x4(_mm256_loadu_si256(
                                     (const __m256i *)((const kvl_block_q5_k *)blk)->qh))
                               : _mm512_setzero_si512();
        const __m512i sh = halves16(0, 4);
        for (int k = 0; k < 4; k++) {
            const __m512i q =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * k)));
            __m512i w = _mm512_and_si512(_mm512_srlv_epi16(q, sh), m4);
            if (ty == KVL_TYPE_Q5_K)
                w = _mm512_or_si512(w, q5k_bit4(qh, k));
            _mm512_store_si512(out + 64 * k, w);
        }
    } else if (ty == KVL_TYPE_Q2_K || ty == KVL_TYPE_Q3_K) {
        const uint8_t *qs = ty == KVL_TYPE_Q2_K ? ((const kvl_block_q2_k *)blk)->qs
                                                : ((const kvl_block_q3_k *)blk)->qs;
        const __m512i hm = ty == KVL_TYPE_Q3_K
                               ? _mm512_broadcast_i64x4(_mm256_loadu_si256(
                                     (const __m256i *)((const kvl_block_q3_k *)blk)->hmask))
                               : _mm512_setzero_si512();
        for (int n = 0; n < 2; n++) {
            const __m512i q =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(qs + 32 * n)));
            for (int k = 0; k < 2; k++)
                _mm512_store_si512(out + 128 * n + 64 * k, lo23_weights(q, hm, n, k, ty));
        }
    } else {
        const kvl_block_q6_k *b = (const kvl_block_q6_k *)blk;
        const __m512i m30 = _mm512_set1_epi8(0x30);
        const __m512i shA = halves16(4, 2), shB = halves16(0, 2);
        for (int h = 0; h < 2; h++) {
            const __m512i L = _mm512_loadu_si512(b->ql + 64 * h);
            const __m512i H =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
            _mm512_store_si512(out + 128 * h,
                               _mm512_or_si512(_mm512_and_si512(L, m4),
                                               _mm512_and_si512(_mm512_sllv_epi16(H, shA), m30)));
            _mm512_store_si512(out + 128 * h + 64,
                               _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                                               _mm512_and_si512(_mm512_srlv_epi16(H, shB), m30)));
        }
    }
}

AI void kq_tl_tile(const kvl_mm_ctx *c, int64_t r, int64_t g0, const int R, const int TV,
                   const kvl_type ty) {
    const int64_t ns = c->n_cols / KVL_QK_K;
    const size_t bb = kvl_kq_block_bytes(ty);
    const uint8_t *row[4];
    const uint8_t *grp[2];
    __m512 acc[4][2];
    uint8_t wq[4][KVL_QK_K] __attribute__((aligned(64)));
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
    const __m512i ones = _mm512_set1_epi8(1);
    /* sub-blocks of 16: two per block of 32 columns */
    const bool s16 = ty == KVL_TYPE_Q2_K || ty == KVL_TYPE_Q3_K || ty == KVL_TYPE_Q6_K;
    for (int64_t s = 0; s < ns; s++) {
        /* per row and sub-block: Q4_K d * sc and dmin * m / 128; Q6_K d * sc */
        /* Q2_K: d * sc and dmin * m per sub-block of 16; Q3_K: d * sc */
        float fs[4][16] __attribute__((aligned(64))), fm[4][16] __attribute__((aligned(64)));
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = row[i] + (size_t)s * bb;
            unpack_sb(blk, wq[i], ty);
            if (ty == KVL_TYPE_Q2_K || ty == KVL_TYPE_Q3_K) {
                __m256i m16;
                float d, dmin;
                const __m256i sc16 = lo23_scales(blk, &m16, &d, &dmin, ty);
                _mm512_store_ps(fs[i],
                                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(sc16)),
                                              _mm512_set1_ps(d)));
                _mm512_store_ps(fm[i], _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi16_epi32(m16)),
                                                     _mm512_set1_ps(dmin)));
            } else if (!s16) { /* Q4_K, Q5_K: the same header */
                const kvl_block_q4_k *b = (const kvl_block_q4_k *)blk;
                const __m128i scm = q4k_scales(b->scales); /* sc bytes 0..7, m bytes 8..15 */
                _mm256_store_ps(fs[i], _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(scm)),
                                                     _mm256_set1_ps(_cvtsh_ss(b->d))));
                _mm256_store_ps(
                    fm[i],
                    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(scm, 8))),
                                  _mm256_set1_ps(_cvtsh_ss(b->dmin) / 128.0f)));
            } else {
                const kvl_block_q6_k *b = (const kvl_block_q6_k *)blk;
                _mm512_store_ps(fs[i],
                                _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                                  _mm_loadu_si128((const __m128i *)b->scales))),
                                              _mm512_set1_ps(_cvtsh_ss(b->d))));
            }
        }
        for (int j = 0; j < 8; j++) {
            const int64_t blk = s * 8 + j; /* the block of 32 columns */
            __m512i p[4][2], pb[4][2], sa[2];
#pragma GCC unroll 4
            for (int i = 0; i < R; i++)
#pragma GCC unroll 2
                for (int v = 0; v < TV; v++)
                    p[i][v] = pb[i][v] = _mm512_setzero_si512();
#pragma GCC unroll 2
            for (int v = 0; v < TV; v++)
                sa[v] = _mm512_setzero_si512();
#pragma GCC unroll 8
            for (int g = 0; g < 8; g++) {
                __m512i x[2];
#pragma GCC unroll 2
                for (int v = 0; v < TV; v++) {
                    x[v] = _mm512_load_si512(grp[v] + (size_t)blk * KVL_TL_REC + g * 64);
                    if (s16 && g < 4)
                        sa[v] = _mm512_dpbusd_epi32(sa[v], ones, x[v]);
                }
#pragma GCC unroll 4
                for (int i = 0; i < R; i++) {
                    const __m512i w = _mm512_set1_epi32((int)load_u32(wq[i] + 32 * j + 4 * g));
#pragma GCC unroll 2
                    for (int v = 0; v < TV; v++) {
                        if (s16 && g >= 4)
                            pb[i][v] = _mm512_dpbusd_epi32(pb[i][v], w, x[v]);
                        else
                            p[i][v] = _mm512_dpbusd_epi32(p[i][v], w, x[v]);
                    }
                }
            }
#pragma GCC unroll 2
            for (int v = 0; v < TV; v++) {
                const uint8_t *rec = grp[v] + (size_t)blk * KVL_TL_REC;
                const __m512 dx = _mm512_load_ps((const float *)(rec + 512));
                const __m512i corr = _mm512_load_si512(rec + 576);
                if (!s16) {
                    const __m512 cf = _mm512_cvtepi32_ps(corr);
#pragma GCC unroll 4
                    for (int i = 0; i < R; i++) {
                        __m512 t =
                            _mm512_mul_ps(_mm512_cvtepi32_ps(p[i][v]), _mm512_set1_ps(fs[i][j]));
                        t = _mm512_fmadd_ps(cf, _mm512_set1_ps(fm[i][j]), t);
                        acc[i][v] = _mm512_fmadd_ps(t, dx, acc[i][v]);
                    }
                } else {
                    /* S_a, and S_b = sum - S_a with sum = -corr / 128; Q6_K
                     * and Q3_K subtract 32 S or 4 S in the integer sums,
                     * Q2_K its mins times S in float */
                    const __m512i sum =
                        _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_srai_epi32(corr, 7));
                    const __m512i sb = _mm512_sub_epi32(sum, sa[v]);
                    const int sh = ty == KVL_TYPE_Q6_K ? 5 : 2;
                    const __m512i oa = _mm512_slli_epi32(sa[v], sh), ob = _mm512_slli_epi32(sb, sh);
                    const __m512 fa = _mm512_cvtepi32_ps(sa[v]), fb = _mm512_cvtepi32_ps(sb);
#pragma GCC unroll 4
                    for (int i = 0; i < R; i++) {
                        __m512i pa = p[i][v], pbb = pb[i][v];
                        if (ty != KVL_TYPE_Q2_K) {
                            pa = _mm512_sub_epi32(pa, oa);
                            pbb = _mm512_sub_epi32(pbb, ob);
                        }
                        __m512 t =
                            _mm512_mul_ps(_mm512_cvtepi32_ps(pa), _mm512_set1_ps(fs[i][2 * j]));
                        t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pbb),
                                            _mm512_set1_ps(fs[i][2 * j + 1]), t);
                        if (ty == KVL_TYPE_Q2_K) {
                            t = _mm512_fnmadd_ps(fa, _mm512_set1_ps(fm[i][2 * j]), t);
                            t = _mm512_fnmadd_ps(fb, _mm512_set1_ps(fm[i][2 * j + 1]), t);
                        }
                        acc[i][v] = _mm512_fmadd_ps(t, dx, acc[i][v]);
                    }
                }
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
        const __mmask16 mk = (__mmask16)((1u << nt) - 1);
#pragma GCC unroll 4
        for (int i = 0; i < R; i++)
            _mm512_mask_i32scatter_ps(c->Y + t0 * c->n_rows + r + i, mk, idx, acc[i][v], 4);
    }
}

typedef void (*kq_tl_fn)(const kvl_mm_ctx *c, int64_t r, int64_t g0);
#define KQ_TL(tname, ty)                                                                           \
    static void tl_##tname##_4x2(const kvl_mm_ctx *c, int64_t r, int64_t g0) {                     \
        kq_tl_tile(c, r, g0, 4, 2, ty);                                                            \
    }                                                                                              \
    static void tl_##tname##_4x1(const kvl_mm_ctx *c, int64_t r, int64_t g0) {                     \
        kq_tl_tile(c, r, g0, 4, 1, ty);                                                            \
    }                                                                                              \
    static void tl_##tname##_1x2(const kvl_mm_ctx *c, int64_t r, int64_t g0) {                     \
        kq_tl_tile(c, r, g0, 1, 2, ty);                                                            \
    }                                                                                              \
    static void tl_##tname##_1x1(const kvl_mm_ctx *c, int64_t r, int64_t g0) {                     \
        kq_tl_tile(c, r, g0, 1, 1, ty);                                                            \
    }                                                                                              \
    static const kq_tl_fn tl_##tname[4] = {tl_##tname##_4x2, tl_##tname##_4x1, tl_##tname##_1x2,   \
                                           tl_##tname##_1x1};
KQ_TL(q4k, KVL_TYPE_Q4_K)
KQ_TL(q5k, KVL_TYPE_Q5_K)
KQ_TL(q6k, KVL_TYPE_Q6_K)
KQ_TL(q2k, KVL_TYPE_Q2_K)
KQ_TL(q3k, KVL_TYPE_Q3_K)

/* Token groups per chunk: their activations stay in L2 while the rows pass. */
#define KQ_TL_CHUNK 4

void kvl_kq_rows_tl_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const kq_tl_fn *f = c->t == KVL_TYPE_Q2_K   ? tl_q2k
                        : c->t == KVL_TYPE_Q3_K ? tl_q3k
                        : c->t == KVL_TYPE_Q4_K ? tl_q4k
                        : c->t == KVL_TYPE_Q5_K ? tl_q5k
                                                : tl_q6k;
    const int64_t n_groups = (c->n_tok + 15) / 16;
    for (int64_t c0 = 0; c0 < n_groups; c0 += KQ_TL_CHUNK) {
        const int64_t c1 = n_groups - c0 < KQ_TL_CHUNK ? n_groups : c0 + KQ_TL_CHUNK;
        for (int64_t r = r0; r < r1;) {
            const bool full = r1 - r >= 4;
            int64_t g = c0;
            for (; g + 2 <= c1; g += 2)
                f[full ? 0 : 2](c, r, g);
            if (g < c1)
                f[full ? 1 : 3](c, r, g);
            r += full ? 4 : 1;
        }
    }
}
