/*
 * Private to src/kernels: the per-ISA entry points that kernels.c dispatches
 * to, and the layout of the quantized activations in matmul scratch.
 *
 * Activation rows for the Q8_0 / Q4_0 paths (one per token, act_stride bytes
 * apart, nb = n_cols / 32 blocks):
 *
 *   +------------------+-------------------+--------------------+-----------+-------------+
 *   | qs int8[n_cols]  | dx float[nb * 8]  | corr int32[nb * 8] | dc f[nb]  | cc i32[nb]  |
 *   +------------------+-------------------+--------------------+-----------+-------------+
 *     q = round(x / d)   d of block b,       lane 0 of block b:   d of      corr of
 *     |q| <= 127         repeated 8 times    -k_corr * sum(q in   block b   block b
 *                                            b), lanes 1..7 zero
 *
 * x ~= d * q per block of 32. dx is pre-broadcast so a 256-bit load gives
 * one block's scale in every lane (and a 512-bit load two blocks'). corr
 * lets unsigned-by-signed dot products (maddubs, dpbusd) run on weights
 * shifted to be non-negative: sum((w + k) * q) - k * sum(q) = sum(w * q);
 * k_corr is 8 for Q4_0 (nibbles 0..15) and 128 for Q8_0 (w ^ 0x80).
 * dc and cc hold the same numbers once per block (1.25 bytes per column
 * with qs instead of 3): the AVX-512 decode product of wide rows reads
 * them, so that its activation row stays in L1 under the weight stream.
 */
#ifndef KVL_KERNELS_IMPL_H
#define KVL_KERNELS_IMPL_H

#include "kernels/kernels.h"

typedef struct kvl_mm_ctx {
    float *Y;         /* (n_tok, n_rows) */
    const uint8_t *W; /* (n_rows, n_cols) of type t, w_row_bytes per row */
    kvl_type t;
    int64_t n_rows, n_cols, n_tok;
    const float *X; /* (n_tok, n_cols) */
    size_t w_row_bytes;
    uint8_t *act; /* (n_tok) activation rows, act_stride bytes each; quantized types only */
    size_t act_stride;
    int32_t k_corr;
} kvl_mm_ctx;

static inline const int8_t *kvl_act_qs(const kvl_mm_ctx *c, int64_t tok) {
    return (const int8_t *)(c->act + (size_t)tok * c->act_stride);
}
static inline const float *kvl_act_dx(const kvl_mm_ctx *c, int64_t tok) {
    return (const float *)(c->act + (size_t)tok * c->act_stride + (size_t)c->n_cols);
}
static inline const int32_t *kvl_act_corr(const kvl_mm_ctx *c, int64_t tok) {
    return (const int32_t *)(c->act + (size_t)tok * c->act_stride + (size_t)c->n_cols * 2);
}

static inline const float *kvl_act_dc(const kvl_mm_ctx *c, int64_t tok) {
    return (const float *)(c->act + (size_t)tok * c->act_stride + (size_t)c->n_cols * 3);
}
static inline const int32_t *kvl_act_cc(const kvl_mm_ctx *c, int64_t tok) {
    return (const int32_t *)(kvl_act_dc(c, tok) + c->n_cols / 32);
}

/*
 * Token-lane layout (AVX-512 Q8_0 products of KVL_TL_MIN_TOK or more
 * tokens): tokens in groups of 16, one 640-byte record per (group, block
 * of 32 columns), records of a group consecutive (nb of them):
 *
 *   offset   0: qs   int8 [8][16][4]  vector g holds columns 4g..4g+3 of
 *                                    tokens 0..15 (one dword per token)
 *   offset 512: dx   float[16]       d of each token for this block
 *   offset 576: corr int32[16]       -128 * sum(q) of each token
 *
 * Slots past the last token of the last group are zero. A token's
 * numbers are the same as in the row layout above.
 */
#define KVL_TL_REC 640
#define KVL_TL_MIN_TOK 16

static inline uint8_t *kvl_tl_group(uint8_t *act, int64_t n_cols, int64_t group) {
    return act + (size_t)group * (size_t)(n_cols / 32) * KVL_TL_REC;
}

/*
 * Small-batch layout (AVX-512 Q8_0 / Q4_0 products of 2 .. KVL_SB_MAX_TOK
 * tokens, besides those that take the token-lane layout): tokens in groups
 * of 4 (the last group of n_tok % 4 tokens: width 1, 2, or 4 when 3, its
 * fourth slot zero), one record per (group, block pair), records of a
 * group consecutive (np = ceil(nb / 2) of them), groups one after another.
 * A record of a width-G group is 64 * (G + 2) bytes, read as 512-bit
 * vectors whose 128-bit lane L = 2e + h stands for the 16 columns
 * 16h .. 16h + 15 of block 2p + e and whose dword slot s = m * G + j
 * (j < G, m < 4 / G) belongs to the group's token j:
 *
 *   vector k < G : qs    slot s of lane L: the token's 4 columns
 *                        16h + 4 (m G + k) .. + 3 of its block
 *   vector G     : corr  int32 -k_corr * sum(q of the block) in slots with
 *                        h = 0 and m = 0, zero in the others
 *   vector G + 1 : dx    float d of the token's block in every slot
 *
 * (width 1 is the row layout's pair of blocks). The weights of a block
 * pair, loaded as lanes [b lo, b hi, b+1 lo, b+1 hi], need one in-lane
 * dword shuffle per k (slot s takes dword (s / G) G + k) for every slot to
 * meet its own token's columns. A block past the last (odd nb) and a slot
 * past the last token are zero.
 */
#define KVL_SB_MAX_TOK 64

static inline int kvl_sb_width(int64_t n_tok, int64_t group) {
    const int64_t left = n_tok - 4 * group;
    return left >= 3 ? 4 : (int)left;
}
static inline size_t kvl_sb_rec(int width) { return (size_t)64 * (size_t)(width + 2); }
/* Byte offset of group `group` (every group before it has width 4). */
static inline size_t kvl_sb_group_off(int64_t n_cols, int64_t group) {
    return (size_t)group * (size_t)((n_cols / 32 + 1) / 2) * kvl_sb_rec(4);
}
/* Bytes of the whole layout. */
static inline size_t kvl_sb_bytes(int64_t n_cols, int64_t n_tok) {
    const int64_t last = (n_tok + 3) / 4 - 1;
    return kvl_sb_group_off(n_cols, last) +
           (size_t)((n_cols / 32 + 1) / 2) * kvl_sb_rec(kvl_sb_width(n_tok, last));
}

/* Bytes of one activation row (a multiple of 64). */
static inline size_t kvl_act_stride(int64_t n_cols) {
    return ((size_t)n_cols * 3 + (size_t)(n_cols / 32) * 8 + 63) & ~(size_t)63;
}

/* A register tile: Y rows [r, r + R) x tokens [tok, tok + T), R and T fixed
 * per function. */
typedef void (*kvl_tile_fn)(const kvl_mm_ctx *c, int64_t r, int64_t tok);

/* The loop nest over a register tile's R x T accumulators (i the row, j
 * the token), each loop fully unrolled: stmt, which sees i and j, zeroes
 * the tile before the blocks or stores its sums after them. */
#define KVL_TILE_EACH(R, T, stmt)                                                                  \
    _Pragma("GCC unroll 4") for (int j = 0; j < (T); j++)                                          \
        _Pragma("GCC unroll 4") for (int i = 0; i < (R); i++) stmt

/* The tile functions of one weight type for kvl_mm_drive: tile_<kind>(c, r,
 * tok, R, T, ty) instantiated as tile_<tname>_<R>x<T> for R rows and for 1
 * row, T = 1..4 tokens each, and the tables big_<tname> (R rows) and
 * one_<tname> (1 row) indexed by T - 1. R must be a literal. */
#define KVL_TILE(kind, ty, tname, R, T)                                                            \
    static void tile_##tname##_##R##x##T(const kvl_mm_ctx *c, int64_t r, int64_t tok) {            \
        tile_##kind(c, r, tok, R, T, ty);                                                          \
    }
#define KVL_TILES(kind, ty, tname, R)                                                              \
    KVL_TILE(kind, ty, tname, R, 1)                                                                \
    KVL_TILE(kind, ty, tname, R, 2)                                                                \
    KVL_TILE(kind, ty, tname, R, 3)                                                                \
    KVL_TILE(kind, ty, tname, R, 4)                                                                \
    KVL_TILE(kind, ty, tname, 1, 1)                                                                \
    KVL_TILE(kind, ty, tname, 1, 2)                                                                \
    KVL_TILE(kind, ty, tname, 1, 3)                                                                \
    KVL_TILE(kind, ty, tname, 1, 4)                                                                \
    static const kvl_tile_fn big_##tname[4] = {tile_##tname##_##R##x1, tile_##tname##_##R##x2,     \
                                               tile_##tname##_##R##x3, tile_##tname##_##R##x4};    \
    static const kvl_tile_fn one_##tname[4] = {tile_##tname##_1x1, tile_##tname##_1x2,             \
                                               tile_##tname##_1x3, tile_##tname##_1x4};

/* The inputs of a register tile, rows [r, r + R) x tokens [tok, tok + T)
 * (R, T <= 4): each row's weights and each token's activation row, its
 * scales (dx: the row layout's per-32 scales, or the K-quant layout's per
 * 256 in kquant.h, both right after qs), and its offset terms: corr in the
 * row layout, bsums in the K-quant layout (pointers only; a kernel reads
 * the one of its layout). */
typedef struct kvl_tile_in {
    const uint8_t *row[4];
    const int8_t *qx[4];
    const float *dx[4];
    const int32_t *corr[4];
    const int16_t *bsums[4];
} kvl_tile_in;

static inline __attribute__((always_inline)) void kvl_tile_in_init(kvl_tile_in *in,
                                                                   const kvl_mm_ctx *c, int64_t r,
                                                                   const int R, int64_t tok,
                                                                   const int T) {
#pragma GCC unroll 4
    for (int i = 0; i < R; i++)
        in->row[i] = c->W + (size_t)(r + i) * c->w_row_bytes;
#pragma GCC unroll 4
    for (int j = 0; j < T; j++) {
        const uint8_t *a = c->act + (size_t)(tok + j) * c->act_stride;
        in->qx[j] = (const int8_t *)a;
        in->dx[j] = (const float *)(a + c->n_cols);
        in->corr[j] = (const int32_t *)(a + 2 * (size_t)c->n_cols);
        in->bsums[j] = (const int16_t *)(a + (size_t)c->n_cols + (size_t)(c->n_cols / 256) * 4);
    }
}

/* Tokens per outer chunk: one chunk of activations stays in L2 while every
 * row tile of the thread's range passes over it; each row tile (rm rows of
 * weights) stays in L1 while the chunk's token tiles pass over it. */
#define KVL_MM_TOK_CHUNK 64

/* Cover rows [r0, r1) x all tokens with tiles: big[T - 1] computes rm rows
 * by T tokens, one[T - 1] one row by T tokens (T = 1..tm). */
static inline void kvl_mm_drive(const kvl_mm_ctx *c, int64_t r0, int64_t r1, int rm, int tm,
                                const kvl_tile_fn *big, const kvl_tile_fn *one) {
    for (int64_t t0 = 0; t0 < c->n_tok; t0 += KVL_MM_TOK_CHUNK) {
        const int64_t t1 = c->n_tok - t0 < KVL_MM_TOK_CHUNK ? c->n_tok : t0 + KVL_MM_TOK_CHUNK;
        int64_t r = r0;
        while (r < r1) {
            const bool full = r1 - r >= rm;
            const kvl_tile_fn *f = full ? big : one;
            for (int64_t tok = t0; tok < t1; tok += tm) {
                const int64_t nt = t1 - tok < tm ? t1 - tok : tm;
                f[nt - 1](c, r, tok);
            }
            r += full ? rm : 1;
        }
    }
}

/* Quantize blocks [b0, b1) of one activation row x (n_cols floats) into the
 * row at dst (laid out as above). */
void kvl_quantize_act_scalar(const float *x, int64_t n_cols, int64_t b0, int64_t b1, int32_t k_corr,
                             uint8_t *dst);
void kvl_quantize_act_avx2(const float *x, int64_t n_cols, int64_t b0, int64_t b1, int32_t k_corr,
                           uint8_t *dst);
void kvl_quantize_act_avx512(const float *x, int64_t n_cols, int64_t b0, int64_t b1, int32_t k_corr,
                             uint8_t *dst);
/* Blocks [b0, b1) of one token into slot `slot` (0..15) of its token group
 * grp (token-lane layout, Q8_0's k_corr of 128). */
void kvl_quantize_act_tl_avx512(const float *x, int64_t b0, int64_t b1, int slot, uint8_t *grp);
/* Blocks [b0, b1) of token `tok` of n_tok into the small-batch layout at
 * act. */
void kvl_quantize_act_sb_avx512(const float *x, int64_t n_cols, int64_t b0, int64_t b1,
                                int32_t k_corr, int64_t tok, int64_t n_tok, uint8_t *act);
/* Y rows [r0, r1) for every token, Q8_0 / Q4_0 weights, activations in the
 * small-batch layout. */
void kvl_mm_rows_sb_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1);
/* Y rows [r0, r1) for every token, Q8_0 weights, activations token-lane. */
void kvl_mm_rows_tl_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1);

/* AVX-512 decode of Q8_0 / Q4_0 rows longer than this many columns reads
 * the compact activation scales (matmul_avx512.c); tests set it to 0 or a
 * large value to compare both ways. */
extern int64_t kvl_gemv_q_wide_cols;

/* kvl_matmul_set_batch_invariant (kernels.h): every token count takes the
 * tile path, so each output's summation order is the same in any batch. */
extern bool kvl_mm_batch_invariant;

/* Y rows [r0, r1) for every token. */
void kvl_mm_rows_scalar(const kvl_mm_ctx *c, int64_t r0, int64_t r1);
void kvl_mm_rows_avx2(const kvl_mm_ctx *c, int64_t r0, int64_t r1);
void kvl_mm_rows_avx512(const kvl_mm_ctx *c, int64_t r0, int64_t r1);

float kvl_dot_f32_avx2(const float *a, const float *b, int64_t n);
float kvl_dot_f32_avx512(const float *a, const float *b, int64_t n);
float kvl_exp_shift_sum_avx512(float *x, int64_t n, float shift);
void kvl_axpy_f32_avx2(float *y, float a, const float *x, int64_t n);
void kvl_axpy_f32_avx512(float *y, float a, const float *x, int64_t n);

#endif
