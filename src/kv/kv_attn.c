/*
 * kv_attn: scaled dot-product attention over K/V that live in blocks (see
 * kv_attn.h for the addressing). kvl_kv_attend_f32 is used by the contiguous
 * and the paged f32 stores alike; kvl_kv_attend_q reads every other format
 * through the fused kernels (kernels/kv_kern.h) with an online softmax:
 *
 *   per GQA group (up to 16 query heads), per block, per tile of <= 64 rows:
 *     S[g][i]  = scale * q_g . K_i           (kernel: each K row decoded once)
 *     m_g'     = max(m_g, max_i S[g][i]);  out_g *= exp(m_g - m_g'); l_g *= same
 *     S[g][i]  = exp(S[g][i] - m_g');      l_g += sum_i S[g][i]
 *     out_g   += sum_i S[g][i] V_i          (kernel: each V row decoded once)
 *   out_g /= l_g
 *
 * (kvl_kv_attend_q's invariants: no allocation, the 4 KiB score tile on the
 * stack; a NaN score or value reaches the output.)
 *
 * Invariants:
 *   - The arithmetic for a position depends only on q, that position's K and
 *     V rows and its index p, never on how positions are split into blocks:
 *     scores are one dot product per row, the softmax runs over the scratch
 *     array of all n_ctx scores, and the output accumulates V rows in order
 *     p = 0, 1, ..., n_ctx-1. Hence any block placement gives the same bits.
 *
 * Must not:
 *   - write anything but out[h0..h1) and scratch (callers run it from several
 *     threads at once on the same store);
 *   - allocate;
 *   - do arithmetic of its own: dot, softmax and axpy are the kernels' (SIMD
 *     picked at run time), one call per row, so every store that routes
 *     through here shares not just the order but the very instructions.
 */
#include "kv/kv_attn.h"

#include "kernels/kernels.h"

#include <math.h>


/* Start fetching row i of the next block while row i of this one is used:
 * the hardware prefetcher follows a stream within a page but loses it at the
 * jump to another block. No effect on the arithmetic. */
static inline void prefetch_row(const float *next_block, int32_t i, int32_t hd) {
    if (!next_block)
        return;
    const float *r = next_block + (int64_t)i * hd;
    for (int32_t d = 0; d < hd; d += 16)
        __builtin_prefetch(r + d, 0, 3);
}

/* Base of logical block lb + 1 for this head, or NULL past n_ctx. */
static inline const float *next_base(const kvl_kv_view *view, const float *arr, int32_t lb,
                                     int32_t p0, int32_t n_ctx, int64_t head_off) {
    if (p0 + view->block_size >= n_ctx)
        return NULL;
    return arr + (int64_t)view->blocks[lb + 1] * view->block_stride + head_off;
}

void kvl_kv_attend_f32(const kvl_kv_view *view, int32_t n_ctx, const float *q, float *out,
                       int32_t h0, int32_t h1, float scale, float *scratch) {
    const int32_t hd = view->head_dim;
    const int32_t bs = view->block_size;
    const int32_t group = view->n_heads / view->n_kv_heads;
    for (int32_t h = h0; h < h1; h++) {
        float *oh = out + (int64_t)h * hd;
        for (int32_t d = 0; d < hd; d++)
            oh[d] = 0.0f;
        if (n_ctx <= 0)
            continue;
        const float *qh = q + (int64_t)h * hd;
        const int64_t head_off = (int64_t)(h / group) * view->head_stride;

        /* scores, block by block */
        for (int32_t p0 = 0, lb = 0; p0 < n_ctx; p0 += bs, lb++) {
            const float *kb = view->k + (int64_t)view->blocks[lb] * view->block_stride + head_off;
            const float *kn = next_base(view, view->k, lb, p0, n_ctx, head_off);
            int32_t n = n_ctx - p0 < bs ? n_ctx - p0 : bs;
            for (int32_t i = 0; i < n; i++) {
                prefetch_row(kn, i, hd);
                scratch[p0 + i] = kvl_dot_f32(qh, kb + (int64_t)i * hd, hd) * scale;
            }
        }

        /* softmax over all n_ctx scores at once */
        kvl_softmax(scratch, n_ctx);

        /* weighted sum of V rows in position order */
        for (int32_t p0 = 0, lb = 0; p0 < n_ctx; p0 += bs, lb++) {
            const float *vb = view->v + (int64_t)view->blocks[lb] * view->block_stride + head_off;
            const float *vn = next_base(view, view->v, lb, p0, n_ctx, head_off);
            int32_t n = n_ctx - p0 < bs ? n_ctx - p0 : bs;
            for (int32_t i = 0; i < n; i++) {
                prefetch_row(vn, i, hd);
                kvl_axpy_f32(oh, scratch[p0 + i], vb + (int64_t)i * hd, hd);
            }
        }
    }
}

/* ---- any format: fused, online softmax -------------------------------- */

#define ATT_GT 16 /* query heads per pass */
#define ATT_RT 64 /* rows per tile */

void kvl_kv_attend_q(const kvl_kvq_view *vw, int32_t n_ctx, const float *q, float *out,
                     int32_t h0, int32_t h1, float scale, bool ref) {
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
    float m[ATT_GT], l[ATT_GT];
    for (int32_t h = h0; h < h1;) {
        const int32_t kh = h / group;
        int32_t hend = (kh + 1) * group;
        hend = hend < h1 ? hend : h1;
        hend = hend < h + ATT_GT ? hend : h + ATT_GT;
        const int32_t ng = hend - h;
        const float *qh = q + (int64_t)h * hd;
        float *oh = out + (int64_t)h * hd;
        for (int32_t g = 0; g < ng; g++) {
            m[g] = -INFINITY;
            l[g] = 0.0f;
        }
        for (int32_t p0 = 0, lb = 0; p0 < n_ctx; p0 += bs, lb++) {
            const int32_t n = n_ctx - p0 < bs ? n_ctx - p0 : bs;
            const bool res = lb == vw->res_block;
            const uint8_t *kc, *vc;
            kvl_kvq_ops kop = ko, vop = vo;
            if (res && vw->k_res) {
                kc = (const uint8_t *)(vw->k_res + (int64_t)kh * bs * hd);
                kop = fo;
            } else {
                kc = vw->k + (size_t)kh * vw->k_head_stride + (size_t)vw->blocks[lb] * vw->k_chunk;
            }
            if (res && vw->v_res) {
                vc = (const uint8_t *)(vw->v_res + (int64_t)kh * bs * hd);
                vop = fo;
            } else {
                vc = vw->v + (size_t)kh * vw->v_head_stride + (size_t)vw->blocks[lb] * vw->v_chunk;
            }
            for (int32_t r0 = 0; r0 < n; r0 += ATT_RT) {
                const int32_t r1 = n - r0 < ATT_RT ? n : r0 + ATT_RT;
                kop.scores(kc, bs, hd, r0, r1, qh, ng, S, ATT_RT);
                for (int32_t g = 0; g < ng; g++) {
                    float *Sg = S + g * ATT_RT;
                    float mt = -INFINITY;
                    for (int32_t i = 0; i < r1 - r0; i++) {
                        Sg[i] *= scale;
                        mt = Sg[i] > mt ? Sg[i] : mt;
                    }
                    const float mnew = mt > m[g] ? mt : m[g];
                    if (mnew != m[g]) {
                        const float corr = expf(m[g] - mnew);
                        l[g] *= corr;
                        float *og = oh + (int64_t)g * hd;
                        for (int32_t d = 0; d < hd; d++)
                            og[d] *= corr;
                        m[g] = mnew;
                    }
                    float sum = 0.0f;
                    for (int32_t i = 0; i < r1 - r0; i++) {
                        Sg[i] = expf(Sg[i] - mnew);
                        sum += Sg[i];
                    }
                    l[g] += sum;
                }
                vop.accum(vc, bs, hd, r0, r1, S, ATT_RT, ng, oh);
            }
        }
        for (int32_t g = 0; g < ng; g++) {
            const float inv = 1.0f / l[g];
            float *og = oh + (int64_t)g * hd;
            for (int32_t d = 0; d < hd; d++)
                og[d] *= inv;
        }
        h = hend;
    }
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
        return kvl_errorf(err, KVL_E_INVALID, "%s: n_kv_heads %lld not in [1, n_heads %lld]",
                          who, (long long)hp->n_kv_heads, (long long)hp->n_heads);
    if (hp->n_heads % hp->n_kv_heads != 0)
        return kvl_errorf(err, KVL_E_INVALID, "%s: n_kv_heads %lld does not divide n_heads %lld",
                          who, (long long)hp->n_kv_heads, (long long)hp->n_heads);
    if (hp->head_dim < 1 || hp->head_dim > KVL_MAX_HEAD_DIM)
        return kvl_errorf(err, KVL_E_INVALID, "%s: head_dim %lld not in [1, %d]", who,
                          (long long)hp->head_dim, KVL_MAX_HEAD_DIM);
    return KVL_OK;
}
