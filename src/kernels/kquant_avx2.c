/*
 * kquant_avx2: the AVX2 products of K-quant weights (compiled with -mavx2
 * -mfma -mf16c; only called when kvl_isa_active() >= KVL_ISA_AVX2).
 *
 * One super-block of 256 values at a time, per row and token an int32
 * vector accumulator of sub-block-scaled dot products:
 *   Q4_K: 32 nibbles (one sub-block) per register; maddubs(nibbles, x)
 *         gives exact int16 pair sums (<= 2 * 15 * 127), madd with the
 *         sub-block scale broadcast as int16 widens and scales them. The
 *         mins come from the activation sums: madd(min of each 32 twice,
 *         bsums), one per super-block.
 *   Q5_K: as Q4_K, with bit 4 of each q from qh or'ed into the nibbles.
 *   Q6_K: low nibbles | high bits << 4 give q in 0..63 (maddubs pairs
 *         <= 2 * 63 * 127); madd with [scale 2g x 8 | scale 2g+1 x 8]
 *         (a register covers two sub-blocks of 16, one per 128-bit lane);
 *         the -32 offset is -32 * madd(scales, bsums).
 *   Q2_K, Q3_K: 2 bits of 32 consecutive values per byte position of qs
 *         (Q3_K: bit 2 from hmask), scales per 16 as Q6_K's; Q2_K's mins
 *         as Q4_K's, Q3_K's -4 offset as Q6_K's -32 (lo23_sb).
 * Q5_0 / Q5_1 (32-blocks, Q8_0's activation rows) at the end of the file.
 * Each super-block's int32 sums become float and are accumulated with the
 * scales d_w * d_x by FMA. All of it is exact integer arithmetic until the
 * float conversion, so the result matches kvl_kq_rows_scalar up to the
 * order of the float sums. Tiles are 1 row x T tokens (T <= 4): the weight
 * unpacking is done once for the T tokens.
 *
 * Must not: allocate, read weights past their row, or use AVX-512.
 */
#include "kernels/kquant.h"

#include <immintrin.h>

#define AI static inline __attribute__((always_inline))

AI float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* The 8 scales and 8 mins of a Q4_K block as two 64-bit words (byte j =
 * sub-block j), by the same unpacking as kvl_q4k_scales on 32-bit words. */
AI void q4k_scales64(const uint8_t *s, uint64_t *sc, uint64_t *m) {
    uint32_t a0, a1, a2;
    memcpy(&a0, s, 4);
    memcpy(&a1, s + 4, 4);
    memcpy(&a2, s + 8, 4);
    const uint32_t k6 = 0x3f3f3f3fu, k4 = 0x0f0f0f0fu, k2 = 0x03030303u;
    const uint32_t sc_lo = a0 & k6, m_lo = a1 & k6;
    const uint32_t sc_hi = (a2 & k4) | (((a0 >> 6) & k2) << 4);
    const uint32_t m_hi = ((a2 >> 4) & k4) | (((a1 >> 6) & k2) << 4);
    *sc = sc_lo | ((uint64_t)sc_hi << 32);
    *m = m_lo | ((uint64_t)m_hi << 32);
}

/* [scale 2g x 8 | scale 2g+1 x 8] of 16 int16 scales: the factors of one
 * register of maddubs pairs covering sub-blocks 2g and 2g + 1. */
AI __m256i pair_scales(__m256i sc16, int g) {
    const __m256i pair = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2,
                                          3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
    return _mm256_shuffle_epi8(_mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(g)), pair);
}

/* One Q2_K or Q3_K super-block of one row against T tokens, into acc[j].
 * 32 bytes of qs hold bits 2j..2j+1 of values 128 n + 32 j + (0..31):
 * shifted and masked they are in value order, one register per j; Q3_K's
 * bit 2 is bit 4n + j of the 32 hmask bytes. Q2_K: the mins times the
 * activation sums (madd) become float once; Q3_K: the -4 offset is
 * -4 * madd(scales, sums), in the integer sum. */
AI void lo23_sb(const uint8_t *blk, int64_t s, const int T, const int8_t *const *qx,
                const float *const *dx, const int16_t *const *bs, __m256 *acc, const kvl_type ty) {
    __m256i sc16, hm = _mm256_setzero_si256(), iacc[4];
    const uint8_t *qs;
    float d;
    if (ty == KVL_TYPE_Q2_K) {
        const kvl_block_q2_k *b = (const kvl_block_q2_k *)blk;
        const __m128i raw = _mm_loadu_si128((const __m128i *)b->scales);
        const __m128i m4 = _mm_set1_epi8(0x0f);
        sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
        const __m256i m16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
        d = _cvtsh_ss(b->d);
        const float dmin = _cvtsh_ss(b->dmin);
        qs = b->qs;
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            const __m256i mins =
                _mm256_madd_epi16(m16, _mm256_loadu_si256((const __m256i *)(bs[j] + s * 16)));
            acc[j] =
                _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_set1_ps(dmin * dx[j][s]), acc[j]);
            iacc[j] = _mm256_setzero_si256();
        }
    } else {
        const kvl_block_q3_k *b = (const kvl_block_q3_k *)blk;
        int8_t sc[16];
        kvl_q3k_scales(b->scales, sc);
        sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        hm = _mm256_loadu_si256((const __m256i *)b->hmask);
        d = _cvtsh_ss(b->d);
        qs = b->qs;
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            const __m256i off =
                _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)(bs[j] + s * 16)));
            iacc[j] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 2));
        }
    }
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
#pragma GCC unroll 2
    for (int n = 0; n < 2; n++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * n));
#pragma GCC unroll 4
        for (int k = 0; k < 4; k++) {
            __m256i w = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3);
            if (ty == KVL_TYPE_Q3_K)
                w = _mm256_or_si256(
                    w,
                    _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * n + k), one), 2));
            const __m256i scv = pair_scales(sc16, 4 * n + k);
#pragma GCC unroll 4
            for (int j = 0; j < T; j++) {
                const __m256i x =
                    _mm256_loadu_si256((const __m256i *)(qx[j] + s * KVL_QK_K + 128 * n + 32 * k));
                iacc[j] =
                    _mm256_add_epi32(iacc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), scv));
            }
        }
    }
#pragma GCC unroll 4
    for (int j = 0; j < T; j++)
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[j]), _mm256_set1_ps(d * dx[j][s]), acc[j]);
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
    __m256 acc[4][4];
    KVL_TILE_EACH(R, T, acc[i][j] = _mm256_setzero_ps());
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int64_t s = 0; s < ns; s++) {
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            __m256i iacc[4];
            if (ty == KVL_TYPE_Q4_K || ty == KVL_TYPE_Q5_K) {
                /* Q5_K: Q4_K's header (d, dmin, scales), then qh and qs */
                const uint8_t *blk = row[i] + (size_t)s * kvl_kq_block_bytes(ty);
                const kvl_block_q4_k *b = (const kvl_block_q4_k *)blk;
                const uint8_t *qs = ty == KVL_TYPE_Q4_K ? b->qs : ((const kvl_block_q5_k *)blk)->qs;
                const __m256i qh =
                    ty == KVL_TYPE_Q5_K
                        ? _mm256_loadu_si256((const __m256i *)((const kvl_block_q5_k *)blk)->qh)
                        : _mm256_setzero_si256();
                uint64_t sc8, m8;
                q4k_scales64(b->scales, &sc8, &m8);
                const __m256i sc16 = _mm256_broadcastsi128_si256(
                    _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc8)));
                const __m128i mv = _mm_cvtsi64_si128((long long)m8);
                const __m256i mdup = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(mv, mv));
                const float d = _cvtsh_ss(b->d), dmin = _cvtsh_ss(b->dmin);
#pragma GCC unroll 4
                for (int j = 0; j < T; j++) {
                    const __m256i mins = _mm256_madd_epi16(
                        mdup, _mm256_loadu_si256((const __m256i *)(bs[j] + s * 16)));
                    acc[i][j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins),
                                                 _mm256_set1_ps(dmin * dx[j][s]), acc[i][j]);
                    iacc[j] = _mm256_setzero_si256();
                }
#pragma GCC unroll 4
                for (int k = 0; k < 4; k++) {
                    const __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * k));
                    __m256i lo = _mm256_and_si256(q, m4);
                    __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
                    if (ty == KVL_TYPE_Q5_K) { /* bit 2k / 2k+1 of qh -> 16 */
                        const __m256i one = _mm256_set1_epi8(1);
                        lo = _mm256_or_si256(
                            lo, _mm256_slli_epi16(
                                    _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), one), 4));
                        hi = _mm256_or_si256(
                            hi, _mm256_slli_epi16(
                                    _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k + 1), one), 4));
                    }
                    const __m256i s_lo = _mm256_shuffle_epi8(
                        sc16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * k))));
                    const __m256i s_hi = _mm256_shuffle_epi8(
                        sc16, _mm256_set1_epi16((short)(0x0100 + 0x0202 * (2 * k + 1))));
#pragma GCC unroll 4
                    for (int j = 0; j < T; j++) {
                        const int8_t *x = qx[j] + s * KVL_QK_K + 64 * k;
                        const __m256i p_lo = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)x)), s_lo);
                        const __m256i p_hi = _mm256_madd_epi16(
                            _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(x + 32))),
                            s_hi);
                        iacc[j] = _mm256_add_epi32(iacc[j], _mm256_add_epi32(p_lo, p_hi));
                    }
                }
#pragma GCC unroll 4
                for (int j = 0; j < T; j++)
                    acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[j]),
                                                _mm256_set1_ps(d * dx[j][s]), acc[i][j]);
            } else if (ty == KVL_TYPE_Q2_K || ty == KVL_TYPE_Q3_K) {
                lo23_sb(row[i] + (size_t)s * kvl_kq_block_bytes(ty), s, T, qx, dx, bs, acc[i], ty);
            } else {
                const kvl_block_q6_k *b = (const kvl_block_q6_k *)row[i] + s;
                const __m256i sc16 =
                    _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
                const float d = _cvtsh_ss(b->d);
                const __m256i m30 = _mm256_set1_epi8(0x30);
                const __m256i pair =
                    _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2,
                                     3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
#pragma GCC unroll 4
                for (int j = 0; j < T; j++) {
                    const __m256i off = _mm256_madd_epi16(
                        sc16, _mm256_loadu_si256((const __m256i *)(bs[j] + s * 16)));
                    iacc[j] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 5));
                }
#pragma GCC unroll 2
                for (int h = 0; h < 2; h++) {
                    const __m256i L0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
                    const __m256i L1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
                    const __m256i H = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
                    __m256i w[4];
                    w[0] = _mm256_or_si256(_mm256_and_si256(L0, m4),
                                           _mm256_and_si256(_mm256_slli_epi16(H, 4), m30));
                    w[1] = _mm256_or_si256(_mm256_and_si256(L1, m4),
                                           _mm256_and_si256(_mm256_slli_epi16(H, 2), m30));
                    w[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4),
                                           _mm256_and_si256(H, m30));
                    w[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), m4),
                                           _mm256_and_si256(_mm256_srli_epi16(H, 2), m30));
#pragma GCC unroll 4
                    for (int k = 0; k < 4; k++) {
                        const __m256i scv = _mm256_shuffle_epi8(
                            _mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32(4 * h + k)), pair);
#pragma GCC unroll 4
                        for (int j = 0; j < T; j++) {
                            const __m256i x = _mm256_loadu_si256(
                                (const __m256i *)(qx[j] + s * KVL_QK_K + 128 * h + 32 * k));
                            iacc[j] = _mm256_add_epi32(
                                iacc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(w[k], x), scv));
                        }
                    }
                }
#pragma GCC unroll 4
                for (int j = 0; j < T; j++)
                    acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[j]),
                                                _mm256_set1_ps(d * dx[j][s]), acc[i][j]);
            }
        }
    }
    KVL_TILE_EACH(R, T, c->Y[(tok + j) * c->n_rows + r + i] = hsum8(acc[i][j]));
}

KVL_TILES(kq, KVL_TYPE_Q4_K, q4k, 2)
KVL_TILES(kq, KVL_TYPE_Q5_K, q5k, 2)
KVL_TILES(kq, KVL_TYPE_Q6_K, q6k, 2)

KVL_TILES(kq, KVL_TYPE_Q2_K, q2k, 2)
KVL_TILES(kq, KVL_TYPE_Q3_K, q3k, 2)

void kvl_kq_rows_avx2(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    if (c->t == KVL_TYPE_Q2_K)
        kvl_mm_drive(c, r0, r1, 2, 4, big_q2k, one_q2k);
    else if (c->t == KVL_TYPE_Q3_K)
        kvl_mm_drive(c, r0, r1, 2, 4, big_q3k, one_q3k);
    else if (c->t == KVL_TYPE_Q4_K)
        kvl_mm_drive(c, r0, r1, 2, 4, big_q4k, one_q4k);
    else if (c->t == KVL_TYPE_Q5_K)
        kvl_mm_drive(c, r0, r1, 2, 4, big_q5k, one_q5k);
    else
        kvl_mm_drive(c, r0, r1, 2, 4, big_q6k, one_q6k);
}

/*
 * Q5_0 / Q5_1, activations in the Q8_0 row layout: one 32-value block per
 * register. The 32 bits of qh become bytes of 0x10 (each byte of qh spread
 * over 8 bytes, tested against its own bit) or'ed into the nibbles; q in
 * 0..31 meets x in maddubs (pairs <= 2 * 31 * 127), madd with ones widens.
 * Q5_0 adds the corr lane (-16 * sum(q_x)) before the scale d_w * d_x;
 * Q5_1 subtracts corr * d_x (corr = -sum(q_x)) times each row's m.
 */
AI __m256i q5_hbits(const uint8_t *qh) {
    uint32_t h;
    memcpy(&h, qh, 4);
    const __m256i spread =
        _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                            _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                             2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit),
                            _mm256_set1_epi8(0x10));
}

/* q (0..31) of the 32 values of a Q5_0 / Q5_1 block, in value order. */
AI __m256i q5_weights(const uint8_t *qh, const uint8_t *qs) {
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m256i nib =
        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
    return _mm256_or_si256(nib, q5_hbits(qh));
}

AI void tile_q5(const kvl_mm_ctx *c, int64_t r, int64_t tok, const int R, const int T,
                const kvl_type ty) {
    const int64_t nb = c->n_cols / 32;
    const bool q50 = ty == KVL_TYPE_Q5_0;
    const size_t bb = q50 ? sizeof(kvl_block_q5_0) : sizeof(kvl_block_q5_1);
    kvl_tile_in in;
    kvl_tile_in_init(&in, c, r, R, tok, T);
    __m256 acc[4][4];
    KVL_TILE_EACH(R, T, acc[i][j] = _mm256_setzero_ps());
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < nb; b++) {
        __m256i w[4];
        float dw[4], mw[4];
#pragma GCC unroll 4
        for (int i = 0; i < R; i++) {
            const uint8_t *blk = in.row[i] + (size_t)b * bb;
            uint16_t h[2];
            memcpy(h, blk, q50 ? 2 : 4);
            dw[i] = _cvtsh_ss(h[0]);
            mw[i] = q50 ? 0.0f : _cvtsh_ss(h[1]);
            w[i] = q5_weights(blk + (q50 ? 2 : 4), blk + (q50 ? 6 : 8));
        }
#pragma GCC unroll 4
        for (int j = 0; j < T; j++) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(in.qx[j] + b * 32));
            const __m256 s = _mm256_loadu_ps(in.dx[j] + b * 8);
            const __m256i cr = _mm256_loadu_si256((const __m256i *)(in.corr[j] + b * 8));
            const __m256 crs = _mm256_mul_ps(_mm256_cvtepi32_ps(cr), s);
#pragma GCC unroll 4
            for (int i = 0; i < R; i++) {
                __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(w[i], x), ones);
                if (q50)
                    p = _mm256_add_epi32(p, cr);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                            _mm256_mul_ps(_mm256_set1_ps(dw[i]), s), acc[i][j]);
                if (!q50)
                    acc[i][j] = _mm256_fnmadd_ps(crs, _mm256_set1_ps(mw[i]), acc[i][j]);
            }
        }
    }
    KVL_TILE_EACH(R, T, c->Y[(tok + j) * c->n_rows + r + i] = hsum8(acc[i][j]));
}

KVL_TILES(q5, KVL_TYPE_Q5_0, q50, 4)
KVL_TILES(q5, KVL_TYPE_Q5_1, q51, 4)

void kvl_q5_rows_avx2(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    if (c->t == KVL_TYPE_Q5_0)
        kvl_mm_drive(c, r0, r1, 4, 4, big_q50, one_q50);
    else
        kvl_mm_drive(c, r0, r1, 4, 4, big_q51, one_q51);
}
