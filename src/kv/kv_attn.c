/*
 * kv_attn: scaled dot-product attention over K/V that live in blocks (see
 * kv_attn.h for the addressing). kvl_kv_attend_f32 is used by the contiguous
 * and the paged f32 stores alike; kvl_kv_attend_q reads every other format
 * through the fused kernels (kernels/kv_kern.h) with an online softmax:
 *
 *   per GQA group (up to 16 query heads): the query prepared once for the
 *   K format (kv_kern.h prep_q: int8 keys read a two-term int8 query), then per
 *   tile of 64 logical positions (crossing blocks, one block segment at a
 *   time):
 *     S[g][i]  = scale * q_g . K_i           (kernel: each K row decoded once)
 *     m_g'     = max(m_g, max_i S[g][i]);  out_g *= exp(m_g - m_g'); l_g *= same
 *     S[g][i]  = exp(S[g][i] - m_g');      l_g += sum_i S[g][i]
 *     out_g   += sum_i S[g][i] V_i          (kernel: each V row decoded once)
 *   out_g /= l_g
 *
 * (kvl_kv_attend_q's invariants: no allocation, the 4 KiB score tile, the
 * prepared query, at most 32.2 KiB, and the rotated query, 64 KiB, on the
 * stack; a NaN score or value reaches the output.)
 *
 * Eviction (docs/eviction.md): a block whose keys were rotated `shift`
 * positions past its place in the table (view.shift) is scored with the
 * query rotated further by that shift; the rotated query (and its
 * preparation for the K format) is redone only when the shift changes
 * from one block to the next. Without a shift array nothing changes.
 *
 * Attention mass (h2o, snapkv; view.mass not NULL): after each tile's
 * softmax step the weights of each block segment are summed per head (one
 * add per row) and kept per (head, block) against a reference max in the
 * caller's scratch (mass_tmp; a pass then takes at most n_ctx / blocks
 * heads so that they fit; an exp only when a head's max moves); at the end
 * of the pass, with the final max and sum known, each head's weight per
 * block is rounded to fixed point and added to the call's integer totals
 * (head by head, so the sums do not depend on how a query's heads are
 * split between calls or threads), and at the end of the call to
 * view.mass[block] by one atomic integer add. The output
 * arithmetic is untouched, so out has the same bits with and without it;
 * with view.mass NULL the only extra work is a NULL test per tile.
 *
 * kvl_kv_attend_f32 is that same routine over f32 rows: it describes its
 * view as F32 chunks (one per head and block, at the view's strides) and
 * calls kvl_kv_attend_q.
 *
 * Invariants:
 *   - The arithmetic for a position depends only on q, that position's K and
 *     V rows and its index p, never on how positions are split into blocks:
 *     the tiles are fixed ranges of logical positions (a tile crossing
 *     blocks is computed one block segment at a time, and the kernels' per
 *     row arithmetic does not depend on the segment: one dot product per
 *     row, V rows accumulated in order with the partial sums stored and
 *     reloaded exactly between segments). Hence any block placement gives
 *     the same bits, and the contiguous and paged f32 stores, which both
 *     call kvl_kv_attend_f32, agree bit for bit.
 *   - A query head's arithmetic does not depend on which other heads share
 *     its pass, so any split of heads over threads gives the same bits.
 *
 * Must not:
 *   - write anything but out[h0..h1), and view.mass (atomic adds) and
 *     mass_tmp when given (callers run it from several threads at once on
 *     the same store);
 *   - allocate (the score tile, 4 KiB, is on the stack).
 */
#include "kv/kv_attn.h"

#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

#define ATT_GT 16 /* query heads per pass */
#define ATT_RT 64 /* rows per tile */

/* One tile of the online softmax for the ng query heads of a GQA group:
 * S holds n raw scores per head (row stride `stride`); they are scaled,
 * the running max m and sum l of each head advance, the head's partial
 * output oh (ng, hd) is rescaled when the max grows, and S is left holding
 * exp(score - max) for the weighted sum of V. */
static inline void online_softmax(float *S, int32_t stride, int32_t ng, int32_t n, float scale,
                                  float *m, float *l, float *oh, int32_t hd) {
    for (int32_t g = 0; g < ng; g++) {
        float *Sg = S + g * stride;
        const float mt = kvl_kvq_scale_max(Sg, n, scale);
        const float mnew = mt > m[g] ? mt : m[g];
        if (mnew != m[g]) {
            const float corr = expf(m[g] - mnew);
            l[g] *= corr;
            float *og = oh + (int64_t)g * hd;
            for (int32_t d = 0; d < hd; d++)
                og[d] *= corr;
            m[g] = mnew;
        }
        l[g] += kvl_exp_shift_sum(Sg, n, mnew);
    }
}

/* ---- attention mass (h2o / snapkv) ------------------------------------ */

/* Sum of x[0..n) in 8 independent lanes (the compiler vectorizes it; a
 * single running sum would be a chain of dependent adds, one per row). */
static inline float lane_sum(const float *x, int32_t n) {
    float a[8] = {0};
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int32_t j = 0; j < 8; j++)
            a[j] += x[i + j];
    float r = 0.0f;
    for (; i < n; i++)
        r += x[i];
    return ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + r;
}

/* After online_softmax of tile [t0, t1): S holds exp(score - m[g]) for
 * the ng heads. pend[g * nb + b] accumulates the weights of block b's
 * positions as exp(score - R[g]), R[g] a reference per head: the first
 * tile's max, raised (and the earlier sums rescaled) only when the max
 * passes it by more than 60; f[g] = exp(m[g] - R[g]) is recomputed only
 * when the max moved (mp[g]: the max it was computed at), so a tile costs
 * an exp only where the softmax itself rescales, and a block crossing
 * tiles simply adds. */
static void mass_tile(const float *S, int32_t t0, int32_t t1, int32_t bs, int32_t ng,
                      const float *m, float *R, float *f, float *mp, float *pend, int32_t nb) {
    for (int32_t g = 0; g < ng; g++) {
        if (t0 == 0) {
            R[g] = mp[g] = m[g];
            f[g] = 1.0f;
        }
        if (m[g] == mp[g]) /* the max did not move: f[g] = exp(m - R) still */
            continue;
        if (m[g] - R[g] > 60.0f) { /* rare: keep the sums in range */
            const float c = expf(R[g] - m[g]);
            for (int32_t b = 0; b < (t0 + bs - 1) / bs; b++)
                pend[(int64_t)g * nb + b] *= c;
            R[g] = m[g];
        }
        f[g] = expf(m[g] - R[g]);
        mp[g] = m[g];
    }
    for (int32_t p = t0; p < t1;) {
        const int32_t lb = p / bs, i0 = p % bs;
        const int32_t e = t1 - p < bs - i0 ? t1 : p + (bs - i0);
        for (int32_t g = 0; g < ng; g++) {
            const float sum = lane_sum(S + g * ATT_RT + (p - t0), e - p);
            float *x = pend + (int64_t)g * nb + lb;
            *x = i0 == 0 ? sum * f[g] : *x + sum * f[g];
        }
        p = e;
    }
}

/* A weight as fixed point (kv_attn.h). */
static inline uint64_t mass_fixed(float x) { return (uint64_t)((double)x * KVL_KV_MASS_ONE + 0.5); }

/* Each block's softmax weight for each of the ng heads of a pass (final
 * max m and sum l), rounded to fixed point head by head, so that how a
 * query's heads are split between passes, calls or threads cannot change
 * the sums: added to the call's integer totals tot, or, without them, to
 * mass by one atomic add per head and block (the order of integer adds
 * does not change the sum). */
static void mass_add(uint64_t *mass, uint64_t *tot, const float *pend, int32_t nb, int32_t ng,
                     const float *m, const float *l, const float *R) {
    for (int32_t g = 0; g < ng; g++) {
        const float c = expf(R[g] - m[g]) / l[g];
        const float *row = pend + (int64_t)g * nb;
        if (tot) {
            for (int32_t b = 0; b < nb; b++)
                tot[b] += mass_fixed(row[b] * c);
        } else {
            for (int32_t b = 0; b < nb; b++) {
                const uint64_t v = mass_fixed(row[b] * c);
                if (v)
                    __atomic_fetch_add(&mass[b], v, __ATOMIC_RELAXED);
            }
        }
    }
}

void kvl_kv_attend_f32(const kvl_kv_view *view, int32_t n_ctx, const float *q, float *out,
                       int32_t h0, int32_t h1, float scale, float *scratch) {
    (void)scratch;
    /* f32 rows are the F32 codec's chunks: the same fused routine, with
     * one chunk per (head, block) at the view's strides and no residual */
    const kvl_kvq_view qv = {
        .k = (const uint8_t *)view->k,
        .v = (const uint8_t *)view->v,
        .k_head_stride = (size_t)view->head_stride * sizeof(float),
        .v_head_stride = (size_t)view->head_stride * sizeof(float),
        .k_chunk = (size_t)view->block_stride * sizeof(float),
        .v_chunk = (size_t)view->block_stride * sizeof(float),
        .k_codec = KVL_KVQ_F32,
        .v_codec = KVL_KVQ_F32,
        .blocks = view->blocks,
        .block_size = view->block_size,
        .n_heads = view->n_heads,
        .n_kv_heads = view->n_kv_heads,
        .head_dim = view->head_dim,
        .res_block = -1,
        .shift = view->shift,
        .rope = view->rope,
        .mass = view->mass,
        .mass_tmp = view->mass_tmp,
    };
    kvl_kv_attend_q(&qv, n_ctx, q, out, h0, h1, scale, false);
}

void kvl_kv_rope_freqs(const kvl_hparams *hp, float *freq) {
    for (int64_t i = 0; i < hp->rope_dim / 2; i++) {
        float f = 1.0f / powf(hp->rope_base, (float)(2 * i) / (float)hp->rope_dim);
        if (hp->rope_scale > 0.0f && hp->rope_scale != 1.0f)
            f /= hp->rope_scale;
        freq[i] = f;
    }
}

/* dst = the ng heads of src (hd apart) rotated further by d positions. */
static void rotate_heads(const kvl_kv_rope *r, int32_t d, const float *src, float *dst, int32_t ng,
                         int32_t hd) {
    const int32_t half = r->rot_dim / 2;
    const int32_t step = r->neox ? 1 : 2, other = r->neox ? half : 1;
    const float *cs = NULL;
    if (r->cs && d % r->cs_step == 0 && d / r->cs_step < r->n_cs)
        cs = r->cs + (size_t)(d / r->cs_step) * (size_t)r->rot_dim;
    memcpy(dst, src, (size_t)ng * (size_t)hd * sizeof(float));
    for (int32_t i = 0; i < half; i++) {
        const float a = (float)d * r->freq[i];
        const float c = cs ? cs[2 * i] : cosf(a), s = cs ? cs[2 * i + 1] : sinf(a);
        for (int32_t g = 0; g < ng; g++) {
            float *v = dst + (int64_t)g * hd;
            const float v0 = v[i * step], v1 = v[i * step + other];
            v[i * step] = v0 * c - v1 * s;
            v[i * step + other] = v0 * s + v1 * c;
        }
    }
}

/* ---- any format: fused, online softmax -------------------------------- */

void kvl_kv_attend_q(const kvl_kvq_view *vw, int32_t n_ctx, const float *q, float *out, int32_t h0,
                     int32_t h1, float scale, bool ref) {
    const int32_t hd = vw->head_dim, bs = vw->block_size;
    const int32_t group = vw->n_heads / vw->n_kv_heads;
    const kvl_kvq_ops ko = ref ? kvl_kvq_ops_ref(vw->k_codec) : kvl_kvq_ops_get(vw->k_codec, hd);
    const kvl_kvq_ops vo = ref ? kvl_kvq_ops_ref(vw->v_codec) : kvl_kvq_ops_get(vw->v_codec, hd);
    const kvl_kvq_ops fo = ref ? kvl_kvq_ops_ref(KVL_KVQ_F32) : kvl_kvq_ops_get(KVL_KVQ_F32, hd);
    for (int64_t i = (int64_t)h0 * hd; i < (int64_t)h1 * hd; i++)
        out[i] = 0.0f;
    if (n_ctx <= 0)
        return;
    float S[ATT_GT * ATT_RT];
    float m[ATT_GT], l[ATT_GT], R[ATT_GT], F[ATT_GT], MP[ATT_GT]; /* R, F, MP: mass_tile */
    const int32_t nb = (n_ctx + bs - 1) / bs;                     /* logical blocks seen */
    /* mass_tmp (n_ctx floats): the call's integer totals per block (two
     * floats' room each, 8-byte aligned, when there is room for them and
     * one head's sums: one atomic add per block per call), then the
     * pass's sums per (head, block) in the rest (room floats) */
    uint64_t *tot = NULL;
    float *pend = vw->mass_tmp;
    int32_t room = n_ctx;
    if (vw->mass) {
        const int32_t skew = ((uintptr_t)vw->mass_tmp & 7) ? 1 : 0;
        if (n_ctx - skew >= 3 * nb) {
            tot = (uint64_t *)(void *)(vw->mass_tmp + skew);
            pend = vw->mass_tmp + skew + 2 * nb;
            room = n_ctx - skew - 2 * nb;
            for (int32_t b = 0; b < nb; b++)
                tot[b] = 0;
        }
    }
    _Alignas(64) uint8_t qp[KVL_KVQ_QP_BYTES(ATT_GT, KVL_MAX_HEAD_DIM)];
    _Alignas(64) float qrot[ATT_GT * KVL_MAX_HEAD_DIM]; /* query rotated by a block's shift */
    for (int32_t h = h0; h < h1;) {
        const int32_t kh = h / group;
        int32_t hend = (kh + 1) * group;
        hend = hend < h1 ? hend : h1;
        hend = hend < h + ATT_GT ? hend : h + ATT_GT;
        if (vw->mass) { /* the block sums of the pass's heads fit mass_tmp */
            const int32_t lim = room / nb > 1 ? room / nb : 1;
            hend = hend < h + lim ? hend : h + lim;
        }
        const int32_t ng = hend - h;
        const float *qh = q + (int64_t)h * hd;
        float *oh = out + (int64_t)h * hd;
        const void *kq = qh;  /* the query as the K format reads it */
        const float *qf = qh; /* the query as f32 (the residual reads it) */
        int32_t q_shift = 0;  /* the rotation qf and kq carry past q's */
        if (ko.prep_q) {
            ko.prep_q(qh, ng, hd, qp);
            kq = qp;
        }
        for (int32_t g = 0; g < ng; g++) {
            m[g] = -INFINITY;
            l[g] = 0.0f;
        }
        for (int32_t t0 = 0; t0 < n_ctx; t0 += ATT_RT) {
            const int32_t t1 = n_ctx - t0 < ATT_RT ? n_ctx : t0 + ATT_RT;
            /* scores of the tile, one block segment at a time */
            for (int32_t p = t0; p < t1;) {
                const int32_t lb = p / bs, i0 = p % bs;
                const int32_t e = t1 - p < bs - i0 ? t1 : p + (bs - i0);
                if (vw->shift && vw->shift[lb] != q_shift) { /* evicted before this block */
                    q_shift = vw->shift[lb];
                    rotate_heads(vw->rope, q_shift, qh, qrot, ng, hd);
                    qf = qrot;
                    kq = qrot;
                    if (ko.prep_q) {
                        ko.prep_q(qrot, ng, hd, qp);
                        kq = qp;
                    }
                }
                if (lb == vw->res_block && vw->k_res)
                    fo.scores((const uint8_t *)(vw->k_res + (int64_t)kh * bs * hd), bs, hd, i0,
                              i0 + (e - p), qf, ng, S + (p - t0), ATT_RT);
                else
                    ko.scores(vw->k + (size_t)kh * vw->k_head_stride +
                                  (size_t)vw->blocks[lb] * vw->k_chunk,
                              bs, hd, i0, i0 + (e - p), kq, ng, S + (p - t0), ATT_RT);
                p = e;
            }
            online_softmax(S, ATT_RT, ng, t1 - t0, scale, m, l, oh, hd);
            if (vw->mass)
                mass_tile(S, t0, t1, bs, ng, m, R, F, MP, pend, nb);
            /* weighted sum of V rows, in position order */
            for (int32_t p = t0; p < t1;) {
                const int32_t lb = p / bs, i0 = p % bs;
                const int32_t e = t1 - p < bs - i0 ? t1 : p + (bs - i0);
                if (lb == vw->res_block && vw->v_res)
                    fo.accum((const uint8_t *)(vw->v_res + (int64_t)kh * bs * hd), bs, hd, i0,
                             i0 + (e - p), S + (p - t0), ATT_RT, ng, oh);
                else
                    vo.accum(vw->v + (size_t)kh * vw->v_head_stride +
                                 (size_t)vw->blocks[lb] * vw->v_chunk,
                             bs, hd, i0, i0 + (e - p), S + (p - t0), ATT_RT, ng, oh);
                p = e;
            }
        }
        if (vw->mass)
            mass_add(vw->mass, tot, pend, nb, ng, m, l, R);
        for (int32_t g = 0; g < ng; g++) {
            const float inv = 1.0f / l[g];
            float *og = oh + (int64_t)g * hd;
            for (int32_t d = 0; d < hd; d++)
                og[d] *= inv;
        }
        h = hend;
    }
    for (int32_t b = 0; tot && b < nb; b++)
        if (tot[b])
            __atomic_fetch_add(&vw->mass[b], tot[b], __ATOMIC_RELAXED);
}

kvl_status kvl_kv_check_shape(const kvl_hparams *hp, const char *who, kvl_error *err) {
    if (!hp)
        return kvl_errorf(err, KVL_E_INVALID, "%s: hparams is NULL", who);
    if (hp->n_layers < 1 || hp->n_layers > KVL_MAX_LAYERS)
        return kvl_errorf(err, KVL_E_INVALID, "%s: n_layers %lld not in [1, %d]", who,
                          (long long)hp->n_layers, KVL_MAX_LAYERS);
    if (hp->n_heads < 1 || hp->n_heads > KVL_MAX_HEADS)
        return kvl_errorf(err, KVL_E_INVALID, "%s: n_heads %lld not in [1, %d]", who,
                          (long long)hp->n_heads, KVL_MAX_HEADS);
    if (hp->n_kv_heads < 1 || hp->n_kv_heads > hp->n_heads)
        return kvl_errorf(err, KVL_E_INVALID, "%s: n_kv_heads %lld not in [1, n_heads %lld]", who,
                          (long long)hp->n_kv_heads, (long long)hp->n_heads);
    if (hp->n_heads % hp->n_kv_heads != 0)
        return kvl_errorf(err, KVL_E_INVALID, "%s: n_kv_heads %lld does not divide n_heads %lld",
                          who, (long long)hp->n_kv_heads, (long long)hp->n_heads);
    if (hp->head_dim < 1 || hp->head_dim > KVL_MAX_HEAD_DIM)
        return kvl_errorf(err, KVL_E_INVALID, "%s: head_dim %lld not in [1, %d]", who,
                          (long long)hp->head_dim, KVL_MAX_HEAD_DIM);
    return KVL_OK;
}
