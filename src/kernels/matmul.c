/*
 * matmul: Y = X * W^T for every weight type, the scalar reference, the
 * scalar fast path, and the split of the work over the thread pool.
 *
 * For Q8_0 / Q4_0 weights kvl_matmul first quantizes X into the caller's
 * scratch (8-bit blocks of 32 with a float scale, see kernels_impl.h), then
 * each thread computes a contiguous range of output rows for all tokens with
 * integer block dot products. Rows are handed out in multiples of 4 (the
 * register tile height of the SIMD paths). Float weights read X directly.
 * On AVX-512, Q8_0 products of 16 or more tokens quantize X into the
 * token-lane layout and 2 .. KVL_SB_MAX_TOK tokens otherwise into the
 * small-batch layout (kernels_impl.h); small batches, like decode, split
 * the rows into ~256 KiB pool items.
 *
 * K-quant weights (Q2_K .. Q6_K) take X quantized per 256 values with sums
 * per 16 (kquant.h) and their own row kernels (kquant*.c), in the same
 * split; Q5_0 / Q5_1 take the Q8_0 row layout (k_corr 16 and 1) and their
 * own row kernels (kquant*.c); on AVX-512, their products of 16 or more tokens take Q8_0's
 * token-lane layout instead (kquant_avx512.c).
 *
 * kvl_matmul_ref is the definition the fast paths are tested against: float
 * arithmetic on dequantized weights and unquantized X, summed in order.
 *
 * Must not: allocate, expand a quantized weight matrix to float, or read
 * scratch beyond kvl_matmul_scratch_size.
 */
#include "kernels/kquant.h"

static bool is_quant(kvl_type t) {
    return t == KVL_TYPE_Q8_0 || t == KVL_TYPE_Q4_0 || kvl_is_q5(t) || kvl_is_kquant(t);
}

bool kvl_mm_batch_invariant;

void kvl_matmul_set_batch_invariant(bool on) { kvl_mm_batch_invariant = on; }

size_t kvl_matmul_scratch_size(kvl_type t, int64_t n_cols, int64_t n_tok) {
    if (!is_quant(t) || n_cols <= 0 || n_tok <= 0)
        return 0;
    size_t r;
    if (kvl_mul_overflow(kvl_act_stride(n_cols), (size_t)n_tok, &r))
        return 0;
    return r;
}

/* Weight element k of a float-like row. */
static inline float wf(kvl_type t, const uint8_t *row, int64_t k) {
    switch (t) {
    case KVL_TYPE_F32: return ((const float *)row)[k];
    case KVL_TYPE_F16: return kvl_fp16_to_f32(((const uint16_t *)row)[k]);
    default: return kvl_bf16_to_f32(((const uint16_t *)row)[k]);
    }
}

void kvl_matmul_ref(float *Y, const void *W, kvl_type t, int64_t n_rows, int64_t n_cols,
                    const float *X, int64_t n_tok) {
    const size_t rb = kvl_row_bytes(t, n_cols);
    KVL_ASSERT(rb != 0 || n_cols == 0);
    for (int64_t tok = 0; tok < n_tok; tok++) {
        const float *x = X + tok * n_cols;
        for (int64_t r = 0; r < n_rows; r++) {
            const uint8_t *row = (const uint8_t *)W + (size_t)r * rb;
            float s = 0.0f;
            if (t == KVL_TYPE_Q8_0) {
                const kvl_block_q8_0 *b = (const kvl_block_q8_0 *)row;
                for (int64_t k = 0; k < n_cols; k++) {
                    const kvl_block_q8_0 *bk = &b[k / KVL_QK8_0];
                    s += kvl_fp16_to_f32(bk->d) * (float)bk->qs[k % KVL_QK8_0] * x[k];
                }
            } else if (t == KVL_TYPE_Q4_0) {
                const kvl_block_q4_0 *b = (const kvl_block_q4_0 *)row;
                for (int64_t k = 0; k < n_cols; k++) {
                    const kvl_block_q4_0 *bk = &b[k / KVL_QK4_0];
                    int j = (int)(k % KVL_QK4_0);
                    int nib = j < 16 ? (bk->qs[j] & 0x0f) : (bk->qs[j - 16] >> 4);
                    s += kvl_fp16_to_f32(bk->d) * (float)(nib - 8) * x[k];
                }
            } else if (kvl_is_kquant(t) || kvl_is_q5(t)) {
                const int64_t bl = kvl_is_q5(t) ? 32 : KVL_QK_K;
                const size_t sbb = kvl_row_bytes(t, bl);
                float w[KVL_QK_K];
                for (int64_t k0 = 0; k0 < n_cols; k0 += bl) {
                    kvl_dequantize_row(t, row + (size_t)(k0 / bl) * sbb, w, bl);
                    for (int k = 0; k < bl; k++)
                        s += w[k] * x[k0 + k];
                }
            } else {
                for (int64_t k = 0; k < n_cols; k++)
                    s += wf(t, row, k) * x[k];
            }
            Y[tok * n_rows + r] = s;
        }
    }
}

void kvl_mm_rows_scalar(const kvl_mm_ctx *c, int64_t r0, int64_t r1) {
    const int64_t nb = c->n_cols / 32;
    for (int64_t tok = 0; tok < c->n_tok; tok++) {
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = c->W + (size_t)r * c->w_row_bytes;
            float s = 0.0f;
            if (c->t == KVL_TYPE_Q8_0 || c->t == KVL_TYPE_Q4_0) {
                const int8_t *qx = kvl_act_qs(c, tok);
                const float *dx = kvl_act_dx(c, tok);
                for (int64_t b = 0; b < nb; b++) {
                    int32_t isum = 0;
                    float dw;
                    if (c->t == KVL_TYPE_Q8_0) {
                        const kvl_block_q8_0 *w = (const kvl_block_q8_0 *)row + b;
                        for (int i = 0; i < 32; i++)
                            isum += w->qs[i] * qx[b * 32 + i];
                        dw = kvl_fp16_to_f32(w->d);
                    } else {
                        const kvl_block_q4_0 *w = (const kvl_block_q4_0 *)row + b;
                        for (int j = 0; j < 16; j++) {
                            isum += ((w->qs[j] & 0x0f) - 8) * qx[b * 32 + j];
                            isum += ((w->qs[j] >> 4) - 8) * qx[b * 32 + j + 16];
                        }
                        dw = kvl_fp16_to_f32(w->d);
                    }
                    s += (float)isum * (dw * dx[b * 8]);
                }
            } else {
                const float *x = c->X + tok * c->n_cols;
                for (int64_t k = 0; k < c->n_cols; k++)
                    s += wf(c->t, row, k) * x[k];
            }
            c->Y[tok * c->n_rows + r] = s;
        }
    }
}

typedef struct mm_task {
    const kvl_mm_ctx *c;
    kvl_isa isa;
    bool tl;           /* activations in the token-lane layout (AVX-512 Q8_0) */
    bool sb;           /* activations in the small-batch layout (AVX-512 Q8_0 / Q4_0) */
    int64_t item_rows; /* rows per pool item (a multiple of 4); 0: one item per thread */
} mm_task;

static void quant_task(void *arg, int ith, int nth) {
    const mm_task *m = arg;
    const kvl_mm_ctx *c = m->c;
    const bool kq = kvl_is_kquant(c->t) && !m->tl; /* K-quant token-lane: blocks of 32 */
    const int64_t nb = c->n_cols / (kq ? KVL_QK_K : 32);
    int64_t lo, hi;
    kvl_split(c->n_tok * nb, ith, nth, &lo, &hi);
    while (lo < hi) {
        const int64_t tok = lo / nb, b0 = lo % nb;
        const int64_t b1 = (hi - tok * nb) < nb ? (hi - tok * nb) : nb;
        const float *x = c->X + tok * c->n_cols;
        uint8_t *dst = c->act + (size_t)tok * c->act_stride;
        if (kq) {
            if (m->isa == KVL_ISA_AVX512)
                kvl_kq_quantize_act_avx512(x, c->n_cols, b0, b1, dst);
            else
                kvl_kq_quantize_act_scalar(x, c->n_cols, b0, b1, dst);
            lo += b1 - b0;
            continue;
        }
        if (m->sb) {
            kvl_quantize_act_sb_avx512(x, c->n_cols, b0, b1, c->k_corr, tok, c->n_tok, c->act);
            lo += b1 - b0;
            continue;
        }
        if (m->tl) {
            kvl_quantize_act_tl_avx512(x, b0, b1, (int)(tok % 16),
                                       kvl_tl_group(c->act, c->n_cols, tok / 16));
            lo += b1 - b0;
            continue;
        }
        switch (m->isa) {
        case KVL_ISA_AVX512: kvl_quantize_act_avx512(x, c->n_cols, b0, b1, c->k_corr, dst); break;
        case KVL_ISA_AVX2: kvl_quantize_act_avx2(x, c->n_cols, b0, b1, c->k_corr, dst); break;
        default: kvl_quantize_act_scalar(x, c->n_cols, b0, b1, c->k_corr, dst); break;
        }
        lo += b1 - b0;
    }
}

/* Item i of the row work: rows [i * item_rows, (i + 1) * item_rows) when
 * item_rows is set, else part i of an even split (in multiples of 4). */
static void rows_task(void *arg, int ith, int nth) {
    const mm_task *m = arg;
    const kvl_mm_ctx *c = m->c;
    int64_t lo, hi;
    if (m->item_rows > 0) {
        lo = ith * m->item_rows;
        hi = lo + m->item_rows;
    } else {
        kvl_split((c->n_rows + 3) / 4, ith, nth, &lo, &hi);
        lo *= 4;
        hi *= 4;
    }
    if (hi > c->n_rows)
        hi = c->n_rows;
    if (lo >= hi)
        return;
    if (kvl_is_q5(c->t)) {
        if (m->isa == KVL_ISA_AVX512)
            kvl_q5_rows_avx512(c, lo, hi);
        else if (m->isa == KVL_ISA_AVX2)
            kvl_q5_rows_avx2(c, lo, hi);
        else
            kvl_q5_rows_scalar(c, lo, hi);
        return;
    }
    if (kvl_is_kquant(c->t)) {
        if (m->tl)
            kvl_kq_rows_tl_avx512(c, lo, hi);
        else if (m->isa == KVL_ISA_AVX512)
            kvl_kq_rows_avx512(c, lo, hi);
        else if (m->isa == KVL_ISA_AVX2)
            kvl_kq_rows_avx2(c, lo, hi);
        else
            kvl_kq_rows_scalar(c, lo, hi);
        return;
    }
    if (m->tl) {
        kvl_mm_rows_tl_avx512(c, lo, hi);
        return;
    }
    if (m->sb) {
        kvl_mm_rows_sb_avx512(c, lo, hi);
        return;
    }
    switch (m->isa) {
    case KVL_ISA_AVX512: kvl_mm_rows_avx512(c, lo, hi); break;
    case KVL_ISA_AVX2: kvl_mm_rows_avx2(c, lo, hi); break;
    default: kvl_mm_rows_scalar(c, lo, hi); break;
    }
}

/* Below this many activation values, quantizing X on the caller thread is
 * cheaper than a pool round trip. */
#define KVL_QUANT_PAR_MIN 32768
/* Below this many multiply-adds a product runs on the caller thread: a pool
 * round trip costs microseconds, and on a loaded machine far more (a worker
 * that has gone to sleep must be scheduled again), which is more than a
 * small product takes. Results are bit-identical either way. */
#define KVL_MM_PAR_MIN (1 << 18)
/* Weight bytes per pool item in decode: ~10 us of reading, so the claim
 * (one contended compare-and-swap) is noise and the last item is short. */
#define KVL_MM_ITEM_BYTES (256u << 10)

/* Several products sharing X (kvl_matmul_multi): output o's items are
 * [first[o], first[o + 1]) of one pool run. */
typedef struct mm_group {
    mm_task m[KVL_MM_MAX_OUT];
    int first[KVL_MM_MAX_OUT + 1];
} mm_group;

static void group_task(void *arg, int i, int n) {
    const mm_group *g = arg;
    int o = 0;
    while (i >= g->first[o + 1])
        o++;
    (void)n;
    rows_task((void *)&g->m[o], i - g->first[o], g->first[o + 1] - g->first[o]);
}

int32_t kvl_matmul_token_group(kvl_type t) {
    return kvl_isa_active() == KVL_ISA_AVX512 && (t == KVL_TYPE_Q8_0 || kvl_kq_has_tl(t)) &&
                   !kvl_mm_batch_invariant
               ? KVL_TL_MIN_TOK
               : 0;
}

void kvl_matmul(kvl_pool *pool, float *Y, const void *W, kvl_type t, int64_t n_rows, int64_t n_cols,
                const float *X, int64_t n_tok, void *scratch) {
    const kvl_mm_out out = {.Y = Y, .W = W, .n_rows = n_rows};
    kvl_matmul_multi(pool, &out, 1, t, n_cols, X, n_tok, scratch);
}

void kvl_matmul_multi(kvl_pool *pool, const kvl_mm_out *outs, int n_out, kvl_type t, int64_t n_cols,
                      const float *X, int64_t n_tok, void *scratch) {
    const size_t rb = kvl_row_bytes(t, n_cols);
    KVL_ASSERT(rb != 0 || n_cols == 0);
    KVL_ASSERT(n_out >= 1 && n_out <= KVL_MM_MAX_OUT);
    int64_t total_rows = 0;
    for (int o = 0; o < n_out; o++)
        total_rows += outs[o].n_rows > 0 ? outs[o].n_rows : 0;
    if (total_rows == 0 || n_tok <= 0)
        return;
    kvl_mm_ctx c = {
        .t = t,
        .n_cols = n_cols,
        .n_tok = n_tok,
        .X = X,
        .w_row_bytes = rb,
    };
    mm_task m = {.c = &c, .isa = kvl_isa_active()};
    if (is_quant(t)) {
        KVL_ASSERT(scratch != NULL || n_cols == 0);
        c.act = scratch;
        c.k_corr = t == KVL_TYPE_Q4_0 ? 8 : t == KVL_TYPE_Q5_0 ? 16 : t == KVL_TYPE_Q5_1 ? 1 : 128;
        const int32_t group = kvl_matmul_token_group(t);
        m.tl = group > 0 && n_tok >= group;
        c.act_stride =
            kvl_is_kquant(t) && !m.tl ? kvl_kq_act_stride(n_cols) : kvl_act_stride(n_cols);
        if (m.tl) {
            /* the token-lane layout fits in the row layout's scratch:
             * 16 * ceil(n_tok / 16) <= 2 * n_tok tokens of 1.25 * n_cols bytes */
            const int64_t n_groups = (n_tok + 15) / 16;
            KVL_ASSERT((size_t)n_groups * (size_t)(n_cols / 32) * KVL_TL_REC <=
                       kvl_matmul_scratch_size(t, n_cols, n_tok));
            if (n_tok % 16)
                memset(kvl_tl_group(c.act, n_cols, n_groups - 1), 0,
                       (size_t)(n_cols / 32) * KVL_TL_REC);
        }
        m.sb = m.isa == KVL_ISA_AVX512 && !m.tl && !kvl_is_kquant(t) && !kvl_is_q5(t) &&
               n_cols > 0 && n_tok >= 2 && n_tok <= KVL_SB_MAX_TOK && !kvl_mm_batch_invariant;
        if (m.sb) {
            /* the small-batch layout fits in the row layout's scratch:
             * per block pair and token 96 bytes (width 4), 128 (width 2)
             * or 192 (width 1, only after a group of 4), against 192 */
            const size_t rec_pairs = (size_t)((n_cols / 32 + 1) / 2);
            const int64_t last = (n_tok + 3) / 4 - 1;
            KVL_ASSERT(kvl_sb_bytes(n_cols, n_tok) <= kvl_matmul_scratch_size(t, n_cols, n_tok));
            /* slots no token writes: the fourth of a 3-token group, a
             * block past the last */
            if (n_tok % 4 == 3)
                memset(c.act + kvl_sb_group_off(n_cols, last), 0, rec_pairs * kvl_sb_rec(4));
            if ((n_cols / 32) % 2)
                for (int64_t g = 0; g <= last; g++) {
                    const size_t rec = kvl_sb_rec(kvl_sb_width(n_tok, g));
                    memset(c.act + kvl_sb_group_off(n_cols, g) + (rec_pairs - 1) * rec, 0, rec);
                }
        }
        /* quantized once for all the outputs */
        if (n_tok * n_cols >= KVL_QUANT_PAR_MIN)
            kvl_pool_run(pool, quant_task, &m);
        else
            quant_task(&m, 0, 1);
    }
    kvl_mm_ctx cs[KVL_MM_MAX_OUT];
    mm_group g;
    for (int o = 0; o < n_out; o++) {
        cs[o] = c;
        cs[o].Y = outs[o].Y;
        cs[o].W = outs[o].W;
        cs[o].n_rows = outs[o].n_rows > 0 ? outs[o].n_rows : 0;
        g.m[o] = m;
        g.m[o].c = &cs[o];
    }
    const bool serial = total_rows * n_cols * n_tok < KVL_MM_PAR_MIN || kvl_pool_size(pool) == 1;
    if (!serial && (n_tok == 1 || m.sb)) {
        /* decode: many small items, so the threads finish together however
         * late one starts or however often one is descheduled; the items of
         * all the outputs go in one run (one wake-up and one wait, not one
         * per matrix) */
        int64_t ir = ((int64_t)(KVL_MM_ITEM_BYTES / (rb ? rb : 1)) + 3) & ~(int64_t)3;
        ir = ir > 4 ? ir : 4;
        for (;;) {
            int64_t n_items = 0;
            for (int o = 0; o < n_out; o++)
                n_items += (cs[o].n_rows + ir - 1) / ir;
            if (n_items <= KVL_POOL_MAX_ITEMS)
                break;
            ir *= 2;
        }
        g.first[0] = 0;
        for (int o = 0; o < n_out; o++) {
            g.m[o].item_rows = ir;
            g.first[o + 1] = g.first[o] + (int)((cs[o].n_rows + ir - 1) / ir);
        }
        kvl_pool_run_n(pool, g.first[n_out], group_task, &g);
        return;
    }
    for (int o = 0; o < n_out; o++) {
        if (cs[o].n_rows == 0)
            continue;
        if (serial || cs[o].n_rows * n_cols * n_tok < KVL_MM_PAR_MIN)
            rows_task(&g.m[o], 0, 1);
        else
            kvl_pool_run(pool, rows_task, &g.m[o]);
    }
}
