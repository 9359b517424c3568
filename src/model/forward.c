/*
 * The llama forward pass over a flattened batch (see forward.h).
 *
 * Per layer, for the T tokens of the batch:
 *
 *   xb  = rmsnorm(x) * attn_norm                  (T, dim)
 *   q,k,v = xb Wq^T, xb Wk^T, xb Wv^T              (T, H*hd), (T, KV*hd) x2
 *   prepare_qk: the architecture's extras (q/k/v biases, per-head q/k
 *     RMSNorm), then rotary at each token's position (pairs (2i, 2i+1) or,
 *     NeoX style, (i, i + rope_dim/2); frequencies base^(-2i/rope_dim)
 *     divided by rope_freqs[i] and the linear scale when the file has them)
 *   kv.store(k, v) for every token, then kv.attend(q) for every token
 *   x  += attn Wo^T
 *   xb  = rmsnorm(x) * ffn_norm
 *   x  += (silu(xb Wg^T) * (xb Wu^T)) Wd^T
 *
 * then rmsnorm(x) * output_norm and the classifier for the rows that want
 * logits. Every buffer is allocated once in kvl_forward_init for the largest
 * batch; kvl_forward_run never allocates. It never touches KV memory except
 * through the kvl_kv_iface it is given.
 */
#include "model/forward.h"

#include "kernels/kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct kvl_forward {
    const kvl_model *m;
    kvl_pool *pool;
    int32_t max_tokens, max_ctx;
    float *x;           /* (max_tokens, dim) residual stream */
    float *xb;          /* (max_tokens, max(dim, H*hd)) normed input / attention output */
    float *xb2;         /* (max_tokens, dim) projection output */
    float *q;           /* (max_tokens, H*hd) */
    float *k;           /* (max_tokens, KV*hd) */
    float *v;           /* (max_tokens, KV*hd) */
    float *hb;          /* (max_tokens, ffn) */
    float *hb2;         /* (max_tokens, ffn) */
    float *logits;      /* (max_tokens, vocab) */
    int32_t *out_rows;  /* (max_tokens) batch index of each logits row */
    float *rope_freq;   /* (rope_dim/2) rotary frequency of each pair */
    float *rope_cs;     /* (rope_dim/2, 2) cos, sin of one position */
    float *att_scratch; /* (n_threads, max_ctx) attention scores per thread */
    void *mm_scratch;   /* matmul activation scratch, 64-byte aligned */
};

void kvl_forward_free(kvl_forward *f) {
    if (!f)
        return;
    free(f->x);
    free(f->xb);
    free(f->xb2);
    free(f->q);
    free(f->k);
    free(f->v);
    free(f->hb);
    free(f->hb2);
    free(f->logits);
    free(f->out_rows);
    free(f->rope_freq);
    free(f->rope_cs);
    free(f->att_scratch);
    free(f->mm_scratch);
    free(f);
}

static float *alloc_f(int64_t rows, int64_t cols, bool *ok) {
    size_t n;
    if (kvl_mul_overflow((size_t)rows, (size_t)cols, &n) ||
        kvl_mul_overflow(n, sizeof(float), &n)) {
        *ok = false;
        return NULL;
    }
    float *p = calloc(1, n ? n : 1);
    if (!p)
        *ok = false;
    return p;
}

static size_t mm_need(const kvl_weight *w, int64_t n_tok) {
    return kvl_matmul_scratch_size(w->type, w->ne0, n_tok);
}

kvl_status kvl_forward_init(const kvl_model *m, int32_t max_tokens, int32_t max_ctx, kvl_pool *pool,
                            kvl_forward **out, kvl_error *err) {
    const kvl_hparams *hp = &m->hp;
    if (max_tokens < 1 || max_tokens > 65536)
        return kvl_errorf(err, KVL_E_INVALID, "forward: max_tokens %d outside [1, 65536]",
                          max_tokens);
    if (max_ctx < 1 || max_ctx > KVL_MAX_CTX)
        return kvl_errorf(err, KVL_E_INVALID, "forward: max_ctx %d outside [1, %d]", max_ctx,
                          KVL_MAX_CTX);
    kvl_forward *f = calloc(1, sizeof *f);
    if (!f)
        return kvl_errorf(err, KVL_E_NOMEM, "forward: out of memory");
    f->m = m;
    f->pool = pool;
    f->max_tokens = max_tokens;
    f->max_ctx = max_ctx;
    int64_t T = max_tokens, qd = hp->n_heads * hp->head_dim, kvd = hp->n_kv_heads * hp->head_dim;
    bool ok = true;
    f->x = alloc_f(T, hp->dim, &ok);
    f->xb = alloc_f(T, hp->dim > qd ? hp->dim : qd, &ok);
    f->xb2 = alloc_f(T, hp->dim, &ok);
    f->q = alloc_f(T, qd, &ok);
    f->k = alloc_f(T, kvd, &ok);
    f->v = alloc_f(T, kvd, &ok);
    f->hb = alloc_f(T, hp->ffn_dim, &ok);
    f->hb2 = alloc_f(T, hp->ffn_dim, &ok);
    f->logits = alloc_f(T, hp->n_vocab, &ok);
    f->out_rows = calloc((size_t)T, sizeof(int32_t));
    f->rope_freq = alloc_f(1, hp->rope_dim / 2, &ok);
    f->rope_cs = alloc_f(2, hp->rope_dim / 2, &ok);
    if (f->rope_freq) {
        /* the same float expression as kvl_rope, so plain llama is unchanged */
        for (int64_t i = 0; i < hp->rope_dim / 2; i++) {
            float freq = 1.0f / powf(hp->rope_base, (float)(2 * i) / (float)hp->rope_dim);
            if (m->rope_freqs.data) {
                float div;
                memcpy(&div, (const float *)m->rope_freqs.data + i, sizeof div);
                freq /= div;
            }
            if (hp->rope_scale > 0.0f && hp->rope_scale != 1.0f)
                freq /= hp->rope_scale;
            f->rope_freq[i] = freq;
        }
    }
    f->att_scratch = alloc_f(kvl_pool_size(pool), max_ctx, &ok);
    size_t need = mm_need(&m->output, T);
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const kvl_layer_weights *L = &m->layers[l];
        const kvl_weight *ws[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_down, &L->w_up};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++) {
            size_t s = mm_need(ws[i], T);
            if (s > need)
                need = s;
        }
    }
    size_t aligned;
    if (kvl_align_up(need ? need : 64, 64, &aligned))
        ok = false;
    else
        f->mm_scratch = aligned_alloc(64, aligned);
    if (!ok || !f->out_rows || !f->mm_scratch) {
        kvl_forward_free(f);
        return kvl_errorf(err, KVL_E_NOMEM, "forward: cannot allocate activations for %d tokens",
                          max_tokens);
    }
    *out = f;
    return KVL_OK;
}

static void mm(kvl_forward *f, float *Y, const kvl_weight *w, const float *X, int64_t n_tok) {
    kvl_matmul(f->pool, Y, w->data, w->type, w->ne1, w->ne0, X, n_tok, f->mm_scratch);
}

/* Y[i] = X w[i]^T for n matrices with the same input: one grouped product
 * when they share type and width (as Q/K/V and gate/up do in every file we
 * know), else one at a time. */
static void mm_n(kvl_forward *f, float *const *Y, const kvl_weight *const *w, int n, const float *X,
                 int64_t n_tok) {
    kvl_mm_out outs[KVL_MM_MAX_OUT];
    bool same = n <= KVL_MM_MAX_OUT;
    for (int i = 0; i < n && same; i++) {
        same = w[i]->type == w[0]->type && w[i]->ne0 == w[0]->ne0;
        outs[i] = (kvl_mm_out){.Y = Y[i], .W = w[i]->data, .n_rows = w[i]->ne1};
    }
    if (same) {
        kvl_matmul_multi(f->pool, outs, n, w[0]->type, w[0]->ne0, X, n_tok, f->mm_scratch);
        return;
    }
    for (int i = 0; i < n; i++)
        mm(f, Y[i], w[i], X, n_tok);
}

/* Rotate n_heads heads of x (head_dim apart) by the angles in f->rope_cs. */
static void rope_heads(const kvl_forward *f, float *x, int64_t n_heads, bool neox) {
    const kvl_hparams *hp = &f->m->hp;
    int64_t half = hp->rope_dim / 2;
    int64_t step = neox ? 1 : 2, other = neox ? half : 1; /* pair i: (i*step, i*step + other) */
    for (int64_t h = 0; h < n_heads; h++) {
        float *v = x + h * hp->head_dim;
        for (int64_t i = 0; i < half; i++) {
            float c = f->rope_cs[2 * i], s = f->rope_cs[2 * i + 1];
            float v0 = v[i * step], v1 = v[i * step + other];
            v[i * step] = v0 * c - v1 * s;
            v[i * step + other] = v0 * s + v1 * c;
        }
    }
}

/*
 * Between the Q/K/V projections and attention, for token t: everything the
 * architectures do differently (kvl_arch_info) happens here and only here.
 *   qkv_bias:  q += bq, k += bk, v += bv
 *   qk_norm:   each head of q and of k: rmsnorm(head) * q_norm / k_norm
 *   rotary:    q and k at position pos, NeoX pairs when rope_neox
 */
static void prepare_qk(kvl_forward *f, const kvl_layer_weights *L, int64_t t, int32_t pos) {
    const kvl_hparams *hp = &f->m->hp;
    const kvl_arch_info *ai = kvl_arch_get(hp->arch);
    int64_t hd = hp->head_dim, H = hp->n_heads, KV = hp->n_kv_heads;
    float *q = f->q + t * H * hd, *k = f->k + t * KV * hd, *v = f->v + t * KV * hd;
    if (L->bq.data) {
        const float *bq = L->bq.data, *bk = L->bk.data, *bv = L->bv.data;
        for (int64_t i = 0; i < H * hd; i++)
            q[i] += bq[i];
        for (int64_t i = 0; i < KV * hd; i++) {
            k[i] += bk[i];
            v[i] += bv[i];
        }
    }
    if (L->q_norm.data) {
        for (int64_t h = 0; h < H; h++)
            kvl_rmsnorm(q + h * hd, q + h * hd, L->q_norm.data, hd, hp->rms_eps);
        for (int64_t h = 0; h < KV; h++)
            kvl_rmsnorm(k + h * hd, k + h * hd, L->k_norm.data, hd, hp->rms_eps);
    }
    for (int64_t i = 0; i < hp->rope_dim / 2; i++) {
        const float val = (float)pos * f->rope_freq[i];
        f->rope_cs[2 * i] = cosf(val);
        f->rope_cs[2 * i + 1] = sinf(val);
    }
    rope_heads(f, q, H, ai->rope_neox);
    rope_heads(f, k, KV, ai->rope_neox);
}

typedef struct {
    kvl_forward *f;
    const kvl_batch *b;
    const kvl_kv_iface *kv;
    int32_t layer;
    float scale;
} attn_job;

/* Units are (token, head) pairs, split evenly over the threads. */
static void attn_worker(void *arg, int ith, int nth) {
    attn_job *j = arg;
    const kvl_hparams *hp = &j->f->m->hp;
    int64_t H = hp->n_heads, hd = hp->head_dim;
    int64_t lo, hi;
    kvl_split((int64_t)j->b->n_tokens * H, ith, nth, &lo, &hi);
    float *scratch = j->f->att_scratch + (size_t)ith * (size_t)j->f->max_ctx;
    while (lo < hi) {
        int64_t t = lo / H, h0 = lo % H;
        int64_t h1 = H;
        if ((t + 1) * H > hi)
            h1 = hi - t * H;
        j->kv->attend(j->kv->ctx, j->layer, j->b->seq[t], j->b->pos[t] + 1, j->f->q + t * H * hd,
                      j->f->xb + t * H * hd, (int32_t)h0, (int32_t)h1, j->scale, scratch);
        lo = t * H + h1;
    }
}

kvl_status kvl_forward_run(kvl_forward *f, const kvl_batch *b, const kvl_kv_iface *kv,
                           const float **logits_out, int32_t *n_out, kvl_error *err) {
    const kvl_model *m = f->m;
    const kvl_hparams *hp = &m->hp;
    int64_t T = b->n_tokens;
    if (T < 1 || T > f->max_tokens)
        return kvl_errorf(err, KVL_E_INVALID, "forward: batch of %lld tokens outside [1, %d]",
                          (long long)T, f->max_tokens);
    int32_t n_logits = 0;
    for (int64_t t = 0; t < T; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= hp->n_vocab)
            return kvl_errorf(err, KVL_E_INVALID,
                              "forward: token %d at batch index %lld outside [0, %lld)",
                              b->tokens[t], (long long)t, (long long)hp->n_vocab);
        if (b->pos[t] < 0 || b->pos[t] >= f->max_ctx)
            return kvl_errorf(err, KVL_E_INVALID,
                              "forward: position %d at batch index %lld outside [0, %d)", b->pos[t],
                              (long long)t, f->max_ctx);
        if (b->seq[t] < 0)
            return kvl_errorf(err, KVL_E_INVALID,
                              "forward: sequence id %d at batch index %lld is negative", b->seq[t],
                              (long long)t);
        if (b->logits ? b->logits[t] : t == T - 1)
            f->out_rows[n_logits++] = (int32_t)t;
    }

    int64_t D = hp->dim, H = hp->n_heads, KV = hp->n_kv_heads, hd = hp->head_dim;
    int64_t kvd = KV * hd, F = hp->ffn_dim;
    size_t emb_row = kvl_row_bytes(m->tok_embd.type, D);
    for (int64_t t = 0; t < T; t++)
        kvl_dequantize_row(m->tok_embd.type,
                           (const uint8_t *)m->tok_embd.data + (size_t)b->tokens[t] * emb_row,
                           f->x + t * D, D);

    attn_job job = {.f = f, .b = b, .kv = kv, .scale = 1.0f / sqrtf((float)hd)};
    /* attention work this batch: positions attended, over all tokens and heads;
     * small batches run on the caller thread (a pool round trip costs more) */
    int64_t attn_work = 0;
    for (int64_t t = 0; t < T; t++)
        attn_work += ((int64_t)b->pos[t] + 1) * H * hd;
    bool attn_par = attn_work >= (1 << 16);
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const kvl_layer_weights *L = &m->layers[l];
        for (int64_t t = 0; t < T; t++)
            kvl_rmsnorm(f->xb + t * D, f->x + t * D, L->attn_norm.data, D, hp->rms_eps);
        float *const qkv_y[] = {f->q, f->k, f->v};
        const kvl_weight *const qkv_w[] = {&L->wq, &L->wk, &L->wv};
        mm_n(f, qkv_y, qkv_w, 3, f->xb, T);
        for (int64_t t = 0; t < T; t++) {
            prepare_qk(f, L, t, b->pos[t]);
            kv->store(kv->ctx, (int32_t)l, b->seq[t], b->pos[t], f->k + t * kvd, f->v + t * kvd);
        }
        job.layer = (int32_t)l;
        if (attn_par)
            kvl_pool_run(f->pool, attn_worker, &job);
        else
            attn_worker(&job, 0, 1);
        mm(f, f->xb2, &L->wo, f->xb, T);
        for (int64_t i = 0; i < T * D; i++)
            f->x[i] += f->xb2[i];
        for (int64_t t = 0; t < T; t++)
            kvl_rmsnorm(f->xb + t * D, f->x + t * D, L->ffn_norm.data, D, hp->rms_eps);
        float *const gu_y[] = {f->hb, f->hb2};
        const kvl_weight *const gu_w[] = {&L->w_gate, &L->w_up};
        mm_n(f, gu_y, gu_w, 2, f->xb, T);
        kvl_swiglu(f->hb, f->hb2, T * F);
        mm(f, f->xb2, &L->w_down, f->hb, T);
        for (int64_t i = 0; i < T * D; i++)
            f->x[i] += f->xb2[i];
    }
    /* gather the rows that want logits, normalise, classify */
    for (int32_t i = 0; i < n_logits; i++)
        kvl_rmsnorm(f->xb + (int64_t)i * D, f->x + (int64_t)f->out_rows[i] * D, m->output_norm.data,
                    D, hp->rms_eps);
    if (n_logits > 0)
        mm(f, f->logits, &m->output, f->xb, n_logits);
    *logits_out = f->logits;
    *n_out = n_logits;
    return KVL_OK;
}
