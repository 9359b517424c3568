/*
 * kvllm sim calibrate: measure this CPU for `kvllm sim --device cpu` with
 * kvllm's own kernels and thread pool, and write the calibration file the
 * sim reads (kvl_sim_device_from_file; docs/sim.md, "This CPU").
 *
 * Every figure is the median of interleaved repetitions (a change of load
 * hits all alike):
 *   - products: Q8_0 weight 8192 x 16384 times 1, 4, 16, 64 tokens
 *     (mm_s_per_byte_*), the GEMV's bytes/s (bandwidth), the 64-token
 *     FLOP rate (flops), a plain read (stream_read, for people); with -m,
 *     the product points are instead the model's own: a real forward pass
 *     of 1, 2, 3, 4, 8, 16, 32 and 64 tokens less what the sim prices
 *     outside the products, per linear byte (the products alone, every
 *     layer's back to back, kept as a comment);
 *   - the served step's work outside the products, on a model shape (-m
 *     FILE.gguf's, default TinyLlama-1.1B's) as the engine runs it:
 *     attention over a real f16 paged KV cache, one pool run per layer
 *     with the (token, head) units split over the threads as forward.c
 *     does, at two context lengths: the slope is attn_s_per_pos, the
 *     intercept goes into tok_s_per_layer with the per-token kernels
 *     around the products (norms, rotary, KV store, residual adds,
 *     SwiGLU); the engine's per-row work (the row copied, sampled at
 *     temperature 1 over the whole vocabulary, its log-sum-exp) gives
 *     row_s_per_vocab; an empty pool run times the dispatches of a step
 *     (step_overhead_s: one per product, attention and the classifier).
 */
#include "cli/sim_calib.h"

#include "cli/cli.h"
#include "core/pool.h"
#include "engine/executor_sim.h"
#include "engine/sampler.h"
#include "kernels/kernels.h"
#include "kv/kv_cache.h"
#include "model/gguf.h"
#include "model/model.h"
#include "plan/catalog.h"
#include "plan/planner.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v (sorted in place; v[0] is then the minimum). */
/* This thread's CPU seconds: what a single-threaded kernel costs when the
 * machine is shared (time spent descheduled is not counted). */
static double thread_cpu_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[n / 2];
}

/* ---- products and bandwidth ---------------------------------------------- */

typedef struct read_arg {
    const double *a;
    size_t n;
    double sum[64];
} read_arg;

static void read_fn(void *p, int ti, int nt) {
    read_arg *r = p;
    size_t lo = r->n * (size_t)ti / (size_t)nt, hi = r->n * (size_t)(ti + 1) / (size_t)nt;
    double s[8] = {0}; /* eight chains: the adds' latency must not bound the read */
    size_t i = lo;
    for (; i + 8 <= hi; i += 8)
        for (int k = 0; k < 8; k++)
            s[k] += r->a[i + k];
    for (; i < hi; i++)
        s[0] += r->a[i];
    r->sum[ti % 64] = s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

enum { REPS = 7 };

typedef struct mm_figs {
    double bw_read, bw_gemv, flops, s_per_byte[4];
} mm_figs;

/* The product points and the two rates. false on out of memory. */
static bool measure_products(kvl_pool *pool, mm_figs *o) {
    size_t nd = (size_t)32 << 20; /* 256 MiB of doubles */
    const int64_t rows = 8192, cols = 16384, ntok = 64;
    size_t row_bytes = (size_t)cols / 32 * 34;
    double *a = malloc(nd * sizeof *a);
    uint8_t *W = malloc((size_t)rows * row_bytes);
    float *X = malloc((size_t)(ntok * cols) * sizeof *X),
          *Y = malloc((size_t)(ntok * rows) * sizeof *Y), *tmp = malloc((size_t)cols * sizeof *tmp);
    void *scratch =
        aligned_alloc(64, (kvl_matmul_scratch_size(KVL_TYPE_Q8_0, cols, ntok) + 63) / 64 * 64);
    bool ok = a && W && X && Y && tmp && scratch;
    if (ok) {
        uint64_t s = 88172645463325252ull;
        for (size_t i = 0; i < nd; i++)
            a[i] = (double)(i & 1023);
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t c = 0; c < cols; c++) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                tmp[c] = (float)(int32_t)(s >> 40 & 0xffff) / 32768.0f - 1.0f;
            }
            kvl_quantize_row(KVL_TYPE_Q8_0, tmp, W + (size_t)r * row_bytes, cols);
        }
        for (int64_t i = 0; i < ntok * cols; i++)
            X[i] = (float)(i % 97) / 97.0f - 0.5f;
        static const int64_t k_ntok[4] = {1, 4, 16, 64};
        double t_read[REPS], t_mm[4][REPS];
        read_arg ra = {.a = a, .n = nd};
        for (int k = 0; k < REPS; k++) {
            double t0 = kvl_now();
            kvl_pool_run(pool, read_fn, &ra);
            t_read[k] = kvl_now() - t0;
            for (int j = 0; j < 4; j++) {
                t0 = kvl_now();
                kvl_matmul(pool, Y, W, KVL_TYPE_Q8_0, rows, cols, X, k_ntok[j], scratch);
                t_mm[j][k] = kvl_now() - t0;
            }
        }
        const double wbytes = (double)((size_t)rows * row_bytes);
        for (int j = 0; j < 4; j++)
            o->s_per_byte[j] = median(t_mm[j], REPS) / wbytes;
        o->bw_read = (double)(nd * sizeof *a) / median(t_read, REPS);
        o->bw_gemv = 1 / o->s_per_byte[0];
        o->flops = 2.0 * (double)cols * (double)ntok / o->s_per_byte[3] / (double)row_bytes;
    }
    free(a);
    free(W);
    free(X);
    free(Y);
    free(tmp);
    free(scratch);
    return ok;
}

/* ---- the served step's other work ---------------------------------------- */

typedef struct eng_figs {
    double attn_s_per_pos, attn_head_dim, tok_s_per_layer, row_s_per_vocab, step_overhead_s;
    double attn_call_s, tok_kernels_s, row_s, dispatch_s; /* for the log */
    /* quiet-machine estimates: the attention slope and the dispatch from the
     * fastest repetition, the single-threaded kernels' thread CPU time */
    double min_attn_s_per_pos, cpu_tok_kernels_s, cpu_row_s, min_dispatch_s;
} eng_figs;

enum { ATT_SEQS = 8, ATT_LO = 32, ATT_HI = 256, ATT_REPS = 15 };

/* One layer's decode attention for ATT_SEQS tokens (one per sequence, each
 * at n_ctx positions), split over the pool as forward.c's attn_worker
 * splits (token, head) units. */
typedef struct att_job {
    kvl_kv_iface kv;
    const kvl_hparams *hp;
    int32_t layer, n_ctx;
    const float *q;
    float *out, *scratch; /* scratch: ATT_HI floats per thread */
} att_job;

static void att_fn(void *arg, int ith, int nth) {
    att_job *j = arg;
    int64_t H = j->hp->n_heads, hd = j->hp->head_dim, lo, hi;
    kvl_split(ATT_SEQS * H, ith, nth, &lo, &hi);
    while (lo < hi) {
        int64_t t = lo / H, h1 = (t + 1) * H > hi ? hi - t * H : H;
        j->kv.attend(j->kv.ctx, j->layer, (int32_t)t, j->n_ctx, j->q + t * H * hd,
                     j->out + t * H * hd, (int32_t)(lo % H), (int32_t)h1, 1.0f / sqrtf((float)hd),
                     j->scratch + (size_t)ith * ATT_HI);
        lo = t * H + h1;
    }
}

static void empty_fn(void *arg, int ith, int nth) { (void)arg, (void)ith, (void)nth; }

/* Seconds per (layer x head x position) and per (token x layer) call, from
 * the median step at ATT_LO and ATT_HI positions; and the dispatch. */
static kvl_status measure_attention(kvl_pool *pool, const kvl_hparams *hp, float *buf, eng_figs *o,
                                    kvl_error *err) {
    kvl_kv_cache_params kp = kvl_kv_cache_defaults();
    kp.max_seqs = ATT_SEQS;
    kp.max_ctx = ATT_HI;
    kp.k_fmt = kp.v_fmt = KVL_KV_FMT_F16;
    kvl_kv_cache *kvc;
    kvl_status st = kvl_kv_cache_init(hp, &kp, &kvc, err);
    if (st)
        return st;
    int64_t kvd = hp->n_kv_heads * hp->head_dim, qd = hp->n_heads * hp->head_dim;
    float *k = buf, *q = buf + kvd, *out = q + ATT_SEQS * qd, *scratch = out + ATT_SEQS * qd;
    for (int32_t s = 0; s < ATT_SEQS && !st; s++)
        st = kvl_kv_cache_reserve(kvc, s, ATT_HI, err);
    kvl_kv_iface kv = kvl_kv_cache_iface(kvc);
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (int32_t s = 0; s < ATT_SEQS && !st; s++)
        for (int32_t p = 0; p < ATT_HI; p++)
            for (int32_t l = 0; l < hp->n_layers; l++) {
                for (int64_t i = 0; i < kvd; i++) {
                    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                    k[i] = (float)(int32_t)(x >> 40 & 0xffff) / 32768.0f - 1.0f;
                }
                kv.store(kv.ctx, l, s, p, k, k);
            }
    for (int64_t i = 0; i < ATT_SEQS * qd; i++)
        q[i] = (float)(i % 61) / 61.0f - 0.5f;
    att_job j = {.kv = kv, .hp = hp, .q = q, .out = out, .scratch = scratch};
    double t[2][ATT_REPS], td[ATT_REPS];
    for (int r = 0; r < ATT_REPS && !st; r++) {
        for (int c = 0; c < 2; c++) {
            j.n_ctx = c ? ATT_HI : ATT_LO;
            double t0 = kvl_now();
            for (j.layer = 0; j.layer < hp->n_layers; j.layer++)
                kvl_pool_run(pool, att_fn, &j);
            t[c][r] = kvl_now() - t0;
        }
        double t0 = kvl_now();
        for (int i = 0; i < 100; i++)
            kvl_pool_run(pool, empty_fn, NULL);
        td[r] = (kvl_now() - t0) / 100;
    }
    kvl_kv_cache_free(kvc);
    if (st)
        return st;
    double lo = median(t[0], ATT_REPS), hi = median(t[1], ATT_REPS);
    double units = (double)hp->n_layers * (double)hp->n_heads * ATT_SEQS;
    o->attn_s_per_pos = hi > lo ? (hi - lo) / (units * (ATT_HI - ATT_LO)) : 0;
    o->min_attn_s_per_pos =
        t[1][0] > t[0][0] ? (t[1][0] - t[0][0]) / (units * (ATT_HI - ATT_LO)) : 0;
    o->attn_head_dim = (double)hp->head_dim;
    o->attn_call_s =
        lo / ((double)hp->n_layers * ATT_SEQS) - o->attn_s_per_pos * (double)hp->n_heads * ATT_LO;
    if (o->attn_call_s < 0)
        o->attn_call_s = 0;
    o->dispatch_s = median(td, ATT_REPS);
    o->min_dispatch_s = td[0];
    return KVL_OK;
}

/* One token's per-layer kernels around the products, on the caller thread
 * as forward.c runs them: two RMS norms and two residual adds over dim,
 * rotary on the query and key heads, SwiGLU over the FFN width (the KV
 * store is in the attention's cache above, timed here with a row copy of
 * its size). */
static double measure_token_kernels(const kvl_hparams *hp, float *buf, double *cpu) {
    int64_t D = hp->dim, F = hp->ffn_dim, qd = hp->n_heads * hp->head_dim,
            kvd = hp->n_kv_heads * hp->head_dim;
    float *x = buf, *y = x + D, *w = y + D, *q = w + D, *k = q + qd, *g = k + kvd, *u = g + F,
          *kc = u + F;
    for (int64_t i = 0; i < D; i++)
        x[i] = (float)(i % 13) / 13.0f, w[i] = 1.0f;
    for (int64_t i = 0; i < F; i++)
        g[i] = (float)(i % 7) / 7.0f - 0.5f, u[i] = 0.25f;
    for (int64_t i = 0; i < qd; i++)
        q[i] = 0.1f;
    for (int64_t i = 0; i < kvd; i++)
        k[i] = 0.2f;
    enum { N = 200 };
    double t[ATT_REPS], tc[ATT_REPS];
    for (int r = 0; r < ATT_REPS; r++) {
        double t0 = kvl_now(), c0 = thread_cpu_s();
        for (int n = 0; n < N; n++) {
            kvl_rmsnorm(y, x, w, D, 1e-5f);
            kvl_rope(q, hp->n_heads, hp->head_dim, hp->rope_dim, n, hp->rope_base);
            kvl_rope(k, hp->n_kv_heads, hp->head_dim, hp->rope_dim, n, hp->rope_base);
            memcpy(kc, k, (size_t)kvd * sizeof *k);
            kvl_axpy_f32(x, 1e-3f, y, D);
            kvl_rmsnorm(y, x, w, D, 1e-5f);
            kvl_swiglu(g, u, F);
            kvl_axpy_f32(x, 1e-3f, y, D);
        }
        t[r] = (kvl_now() - t0) / N;
        tc[r] = (thread_cpu_s() - c0) / N;
    }
    *cpu = median(tc, ATT_REPS);
    return median(t, ATT_REPS);
}

/* The engine's work on one logits row after the forward (engine_step.c's
 * sample_one with bench serve's request: temperature 1, no top-k/top-p/
 * min-p): copy the row, the output penalties (none), sample, and the
 * log-sum-exp for the token's logprob. Seconds per row. */
static kvl_status measure_row(int32_t n_vocab, float *buf, double *out, double *cpu,
                              kvl_error *err) {
    kvl_sampler_params sp = kvl_sampler_defaults();
    sp.temperature = 1, sp.top_k = 0, sp.top_p = 1, sp.min_p = 0;
    kvl_sampler *sm;
    kvl_status st = kvl_sampler_init(&sp, n_vocab, &sm, err);
    if (st)
        return st;
    float *row = buf, *work = buf + n_vocab;
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (int32_t i = 0; i < n_vocab; i++) { /* a spread like a random model's logits */
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        row[i] = 4.0f * ((float)(int32_t)(x >> 40 & 0xffff) / 32768.0f - 1.0f);
    }
    int32_t hist[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    enum { ROW_REPS = 31 }; /* one row each: a short interval, rarely preempted */
    double t[ROW_REPS], tc[ROW_REPS], sink = 0;
    for (int r = 0; r < ROW_REPS; r++) {
        double t0 = kvl_now(), c0 = thread_cpu_s();
        memcpy(work, row, (size_t)n_vocab * sizeof *work);
        kvl_sampler_penalize_output(sm, work, hist, 8);
        int32_t tok = kvl_sampler_sample(sm, work, hist, 8);
        float mx = row[0]; /* log-sum-exp in double, as the engine's logprob */
        for (int32_t i = 1; i < n_vocab; i++)
            mx = row[i] > mx ? row[i] : mx;
        double sum = 0;
        for (int32_t i = 0; i < n_vocab; i++)
            sum += exp((double)(row[i] - mx));
        sink += (double)row[tok] - (double)mx - log(sum);
        t[r] = kvl_now() - t0;
        tc[r] = thread_cpu_s() - c0;
    }
    *out = median(t, ROW_REPS) + (sink == 1e300 ? 1 : 0); /* keep sink live */
    *cpu = median(tc, ROW_REPS);
    kvl_sampler_free(sm);
    return KVL_OK;
}

/* ---- the model's own products (-m) ---------------------------------------- */

/* With -m, the product points are the model's, at 1, 2, 3, 4, 8, 16, 32
 * and 64 tokens (kvl_sim_mm_tokens: the one-token GEMV, the small-batch
 * kernel and the token-lane groups each get points), REPS interleaved
 * sweeps after an untimed one, each timing a real forward pass of that
 * many tokens and every layer's products back to back as forward.c runs
 * them (Q/K/V and gate/up grouped, then output and down); seconds per byte
 * of those weights (what `kvllm sim` multiplies by the model's linear
 * bytes), from the forwards (derive_fwd_points) or, until then and in
 * the #loop comment, from the products alone. The large-matrix points are kept in the file as
 * comments for comparison. A different shape prices differently: at 64
 * tokens the model's narrow K/V and wide FFN run at another rate than one
 * 8192 x 16384 matrix. */
typedef struct model_mm {
    double s_per_byte[KVL_SIM_MM_POINTS];      /* at kvl_sim_mm_tokens */
    double fwd_s[KVL_SIM_MM_POINTS];           /* a real forward pass of that many tokens */
    double loop_s_per_byte[KVL_SIM_MM_POINTS]; /* the products alone, back to back */
    bool from_fwd;                             /* s_per_byte derived from fwd_s */
    bool kept_loop[KVL_SIM_MM_POINTS];         /* remainder <= 0: the loop's value kept */
    double lin_bytes;
    kvl_type type;
} model_mm;

/* The real forward pass (engine/executor.h, as the served engine runs it)
 * of one sequence's first n tokens, from an empty cache, logits for the
 * last token only: seconds. */
typedef struct fwd_rig {
    kvl_executor *x;
    kvl_kv_cache *kvc;
    int32_t tok[64], seq[64], pos[64];
    bool want[64];
} fwd_rig;

static kvl_status fwd_rig_init(const kvl_model *m, kvl_pool *pool, fwd_rig *r, kvl_error *err) {
    memset(r, 0, sizeof *r);
    kvl_kv_cache_params kp = kvl_kv_cache_defaults();
    kp.layout = KVL_KV_LAYOUT_PAGED;
    kp.max_seqs = 1;
    kp.max_ctx = 64;
    kp.budget = 0; /* one full context */
    kp.k_fmt = kp.v_fmt = KVL_KV_FMT_F16;
    kvl_status st = kvl_kv_cache_init(&m->hp, &kp, &r->kvc, err);
    if (st)
        return st;
    if ((st = kvl_executor_cpu_init(m, pool, 64, 64, &r->x, err))) {
        kvl_kv_cache_free(r->kvc);
        r->kvc = NULL;
        return st;
    }
    for (int i = 0; i < 64; i++)
        r->tok[i] = (int32_t)((7919u * (unsigned)i + 13u) % (unsigned)m->hp.n_vocab);
    return KVL_OK;
}

static kvl_status fwd_time(fwd_rig *r, int32_t n, double *sec, kvl_error *err) {
    if (kvl_kv_cache_len(r->kvc, 0) > 0) {
        kvl_status st = kvl_kv_cache_truncate(r->kvc, 0, 0, err);
        if (st)
            return st;
    }
    for (int32_t i = 0; i < n; i++) {
        r->seq[i] = 0;
        r->pos[i] = i;
        r->want[i] = i == n - 1;
    }
    kvl_batch b = {
        .n_tokens = n, .tokens = r->tok, .seq = r->seq, .pos = r->pos, .logits = r->want};
    const float *logits;
    int32_t n_out;
    double t0 = kvl_now();
    kvl_status st = kvl_executor_run_cache(r->x, r->kvc, &b, &logits, &n_out, err);
    *sec = kvl_now() - t0;
    return st;
}

static void fwd_rig_free(fwd_rig *r) {
    if (r->x)
        kvl_executor_free(r->x);
    if (r->kvc)
        kvl_kv_cache_free(r->kvc);
}

/* forward.c's mm_n: one grouped product when the weights share type and
 * width, else one product each. */
static void mm_group(kvl_pool *pool, float *const *Y, const kvl_weight *const *w, int n,
                     const float *X, int64_t n_tok, void *scratch) {
    kvl_mm_out outs[KVL_MM_MAX_OUT];
    bool same = n <= KVL_MM_MAX_OUT;
    for (int i = 0; i < n && same; i++) {
        same = w[i]->type == w[0]->type && w[i]->ne0 == w[0]->ne0;
        outs[i] = (kvl_mm_out){.Y = Y[i], .W = w[i]->data, .n_rows = w[i]->ne1};
    }
    if (same) {
        kvl_matmul_multi(pool, outs, n, w[0]->type, w[0]->ne0, X, n_tok, scratch);
        return;
    }
    for (int i = 0; i < n; i++)
        kvl_matmul(pool, Y[i], w[i]->data, w[i]->type, w[i]->ne1, w[i]->ne0, X, n_tok, scratch);
}

static kvl_status measure_model_products(kvl_pool *pool, const char *path, model_mm *o,
                                         kvl_error *err) {
    kvl_model *m = NULL;
    kvl_model_params mp = {.load = KVL_LOAD_AUTO};
    kvl_status st = kvl_model_load(path, &mp, &m, err);
    if (st)
        return st;
    const kvl_hparams *hp = &m->hp;
    const int64_t T = 64, qd = hp->n_heads * hp->head_dim, kvd = hp->n_kv_heads * hp->head_dim;
    const int64_t wide = hp->ffn_dim > hp->dim ? hp->ffn_dim : hp->dim;
    const int64_t in = qd > wide ? qd : wide;
    size_t scr = 0;
    o->lin_bytes = 0;
    o->type = m->layers[0].wq.type;
    for (int64_t l = 0; l < hp->n_layers; l++) {
        const kvl_layer_weights *L = &m->layers[l];
        const kvl_weight *ws[7] = {&L->wq,     &L->wk,   &L->wv,    &L->wo,
                                   &L->w_gate, &L->w_up, &L->w_down};
        for (int k = 0; k < 7; k++) {
            size_t need = kvl_matmul_scratch_size(ws[k]->type, ws[k]->ne0, T);
            scr = need > scr ? need : scr;
            o->lin_bytes += (double)kvl_row_bytes(ws[k]->type, ws[k]->ne0) * (double)ws[k]->ne1;
        }
    }
    float *X = malloc((size_t)(T * in) * sizeof *X);
    float *Yq = malloc((size_t)(T * qd) * sizeof *Yq), *Yk = malloc((size_t)(T * kvd) * sizeof *Yk),
          *Yv = malloc((size_t)(T * kvd) * sizeof *Yv);
    float *Yg = malloc((size_t)(T * wide) * sizeof *Yg),
          *Yu = malloc((size_t)(T * wide) * sizeof *Yu);
    void *scratch = aligned_alloc(64, (scr + 64) / 64 * 64);
    fwd_rig rig;
    if (!X || !Yq || !Yk || !Yv || !Yg || !Yu || !scratch) {
        st = kvl_errorf(err, KVL_E_NOMEM, "sim calibrate: out of memory for the model's products");
        memset(&rig, 0, sizeof rig);
    } else if ((st = fwd_rig_init(m, pool, &rig, err))) {
        memset(&rig, 0, sizeof rig);
    } else {
        for (int64_t i = 0; i < T * in; i++)
            X[i] = (float)(i % 89) / 89.0f - 0.5f;
        double t[KVL_SIM_MM_POINTS][REPS], tf[KVL_SIM_MM_POINTS][REPS];
        for (int r = -1; r < REPS && !st; r++) /* r = -1: untimed, touches every page */
            for (int j = 0; j < KVL_SIM_MM_POINTS && !st; j++) {
                const int64_t n = kvl_sim_mm_tokens[j];
                double tfj;
                if ((st = fwd_time(&rig, (int32_t)n, &tfj, err)))
                    break;
                if (r >= 0)
                    tf[j][r] = tfj;
                double t0 = kvl_now();
                for (int64_t l = 0; l < hp->n_layers; l++) {
                    const kvl_layer_weights *L = &m->layers[l];
                    const kvl_weight *qkv[3] = {&L->wq, &L->wk, &L->wv};
                    const kvl_weight *gu[2] = {&L->w_gate, &L->w_up};
                    float *yqkv[3] = {Yq, Yk, Yv}, *ygu[2] = {Yg, Yu};
                    mm_group(pool, yqkv, qkv, 3, X, n, scratch);
                    mm_group(pool, &Yg, (const kvl_weight *[]){&L->wo}, 1, X, n, scratch);
                    mm_group(pool, ygu, gu, 2, X, n, scratch);
                    mm_group(pool, &Yu, (const kvl_weight *[]){&L->w_down}, 1, X, n, scratch);
                }
                if (r >= 0)
                    t[j][r] = kvl_now() - t0;
            }
        for (int j = 0; j < KVL_SIM_MM_POINTS && !st; j++) {
            o->s_per_byte[j] = median(t[j], REPS) / o->lin_bytes;
            o->fwd_s[j] = median(tf[j], REPS);
        }
    }
    fwd_rig_free(&rig);
    free(X), free(Yq), free(Yk), free(Yv), free(Yg), free(Yu), free(scratch);
    kvl_model_free(m);
    return st;
}

/* The shape the engine terms are measured on. */
static bool calib_shape(const char *path, kvl_model_shape *sh) {
    if (!path) {
        *sh = *kvl_catalog_shape_find("TinyLlama-1.1B");
        return true;
    }
    kvl_error err;
    kvl_gguf *g = NULL;
    size_t wb;
    memset(sh, 0, sizeof *sh);
    snprintf(sh->name, sizeof sh->name, "%s", path);
    kvl_status st = kvl_gguf_open(path, &g, &err);
    if (!st)
        st = kvl_plan_shape_from_gguf(g, sh, &wb, &err);
    kvl_gguf_free(g);
    if (st)
        fprintf(stderr, "kvllm sim calibrate: -m %s: %s\n", path, err.msg);
    return st == KVL_OK;
}

static kvl_status measure_engine(kvl_pool *pool, const kvl_model_shape *sh, eng_figs *o,
                                 kvl_error *err) {
    const kvl_hparams *hp = &sh->hp;
    int64_t qd = hp->n_heads * hp->head_dim, kvd = hp->n_kv_heads * hp->head_dim;
    size_t n = (size_t)(kvd + 2 * ATT_SEQS * qd + 64 * ATT_HI) +
               (size_t)(3 * hp->dim + qd + 2 * kvd) + (size_t)(2 * hp->ffn_dim) +
               (size_t)(2 * hp->n_vocab);
    float *buf = malloc(n * sizeof *buf);
    if (!buf)
        return kvl_errorf(err, KVL_E_NOMEM, "sim calibrate: out of memory");
    kvl_status st = measure_attention(pool, hp, buf, o, err);
    if (!st)
        st = measure_row((int32_t)hp->n_vocab, buf, &o->row_s, &o->cpu_row_s, err);
    if (!st) {
        o->tok_kernels_s = measure_token_kernels(hp, buf, &o->cpu_tok_kernels_s);
        o->tok_s_per_layer = o->attn_call_s + o->tok_kernels_s;
        o->row_s_per_vocab = o->row_s / (double)hp->n_vocab;
        /* per step: q/k/v, o, gate/up, down, attention per layer; the classifier */
        o->step_overhead_s = o->dispatch_s * (5.0 * (double)hp->n_layers + 1);
    }
    free(buf);
    return st;
}

/* With -m: the product points from the real forward passes. A forward of
 * n prompt tokens is priced by the sim's own cost function
 * (kvl_sim_cost_batch) from the file just written; what that price puts
 * outside the products (attention, per-token kernels, the classifier, the
 * dispatches, the KV written; not the per-row sampling, which the engine
 * does after the forward) is taken from the measured forward, and the rest,
 * per linear byte, is the point. With the back-to-back points the price
 * of a served lone prefill was 8% under its time; how far the two sets of
 * points differ varies by size and run (docs/sim.md). A point whose
 * remainder is not positive keeps its back-to-back value. */
static kvl_status derive_fwd_points(const char *path, const kvl_model_shape *sh, model_mm *mm,
                                    kvl_error *err) {
    kvl_sim_device d;
    kvl_status st = kvl_sim_device_from_file(path, &d, err);
    if (st)
        return st;
    double kv_tok;
    if ((st = kvl_plan_kv_token_bytes(sh, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16, &kv_tok, err)))
        return st;
    kvl_sim_cost c;
    if ((st = kvl_sim_cost_init(sh, mm->type, kv_tok, &d, 1, true, &c, err)))
        return st;
    int32_t tok[64] = {0}, seq[64], pos[64];
    bool want[64];
    for (int j = 0; j < KVL_SIM_MM_POINTS; j++) {
        const int32_t n = kvl_sim_mm_tokens[j];
        for (int32_t i = 0; i < n; i++)
            seq[i] = 0, pos[i] = i, want[i] = i == n - 1;
        kvl_batch b = {.n_tokens = n, .tokens = tok, .seq = seq, .pos = pos, .logits = want};
        kvl_sim_step s;
        kvl_sim_cost_batch(&c, &b, &s);
        /* the classifier's one row is priced at the 1-token point: solved
         * with it at j = 0, at the derived one after */
        const double bytes = c.lin_bytes + (j == 0 ? c.head_bytes : 0);
        const double other = s.seconds - bytes * c.dev.mm_s_per_byte[j] -
                             d.row_s_per_vocab * (double)s.n_logits * (double)sh->hp.n_vocab;
        const double v = (mm->fwd_s[j] - other) / bytes;
        mm->loop_s_per_byte[j] = mm->s_per_byte[j];
        mm->kept_loop[j] = !(v > 0);
        mm->s_per_byte[j] = v > 0 ? v : mm->s_per_byte[j];
        if (j == 0)
            c.dev.mm_s_per_byte[0] = mm->s_per_byte[0];
    }
    mm->from_fwd = true;
    return KVL_OK;
}

/* ---- the command ---------------------------------------------------------- */

static void write_file(FILE *f, long long threads, const mm_figs *m, const model_mm *mm,
                       const kvl_model_shape *sh, const eng_figs *e) {
    fprintf(f,
            "# kvllm sim calibrate: medians of interleaved runs, %lld threads\n"
            "# bandwidth: bytes/s a Q8_0 GEMV of 8192 x 16384 streams (what decode reads)\n"
            "# flops: FLOP/s of a Q8_0 product of 64 tokens over the same weight (prefill)\n"
            "# stream_read: bytes/s of a 256 MiB sum (for reference; not used)\n"
            "name cpu-%lldt\nthreads %lld\nbandwidth %.6g\nflops %.6g\nstream_read %.6g\n"
            "# serial: compute and memory time add (the same cores do both)\n"
            "serial 1\n"
            "# bytes: this machine's physical memory (the device's memory for the KV budget)\n"
            "bytes %.0f\n"
            "# seconds per weight byte of products of N tokens (mm_s_per_byte_N): %s\n",
            threads, threads, threads, m->bw_gemv, m->flops, m->bw_read,
            (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE),
            mm ? "every layer's products of the model (-m), as forward.c groups them"
               : "one Q8_0 weight of 8192 x 16384");
    static const int k_matrix_pts[4] = {0, 3, 5, 7}; /* 1, 4, 16, 64 tokens */
    if (mm)
        for (int j = 0; j < KVL_SIM_MM_POINTS; j++)
            fprintf(f, "mm_s_per_byte_%d %.6g\n", (int)kvl_sim_mm_tokens[j], mm->s_per_byte[j]);
    else
        for (int j = 0; j < 4; j++)
            fprintf(f, "mm_s_per_byte_%d %.6g\n", (int)kvl_sim_mm_tokens[k_matrix_pts[j]],
                    m->s_per_byte[j]);
    fprintf(f,
            "# mm_token_group: tokens the Q8_0 product takes per group from 16 tokens up on\n"
            "#   this ISA (a partial group costs a whole one: 65 tokens as 80); 0 = none\n"
            "mm_token_group %d\n",
            (int)kvl_matmul_token_group(KVL_TYPE_Q8_0));
    if (mm && mm->from_fwd) {
        fprintf(f,
                "# from real forward passes of one sequence's first N tokens (seconds):\n#fwd_s");
        for (int j = 0; j < KVL_SIM_MM_POINTS; j++)
            fprintf(f, " %d:%.6g", (int)kvl_sim_mm_tokens[j], mm->fwd_s[j]);
        fprintf(f, "\n# less what the sim prices outside the products, per linear byte; the\n"
                   "#   products alone, back to back (not read):\n#loop");
        for (int j = 0; j < KVL_SIM_MM_POINTS; j++)
            fprintf(f, " mm_s_per_byte_%d %.6g", (int)kvl_sim_mm_tokens[j], mm->loop_s_per_byte[j]);
        fprintf(f, "\n");
        bool any = false;
        for (int j = 0; j < KVL_SIM_MM_POINTS; j++)
            any |= mm->kept_loop[j];
        if (any) { /* a small model on a loaded machine: the rest was not positive */
            fprintf(f, "# points whose forward was not above the rest of its price (the\n"
                       "#   back-to-back value kept):\n#kept_loop");
            for (int j = 0; j < KVL_SIM_MM_POINTS; j++)
                if (mm->kept_loop[j])
                    fprintf(f, " %d", (int)kvl_sim_mm_tokens[j]);
            fprintf(f, "\n");
        }
    }
    if (mm)
        fprintf(f,
                "# the model's products: %s weights, %.0f bytes of linear layers; the one\n"
                "#   8192 x 16384 Q8_0 weight's points, for comparison (not read):\n"
                "#matrix mm_s_per_byte_1 %.6g mm_s_per_byte_4 %.6g mm_s_per_byte_16 %.6g "
                "mm_s_per_byte_64 %.6g\n",
                kvl_type_name(mm->type), mm->lin_bytes, m->s_per_byte[0], m->s_per_byte[1],
                m->s_per_byte[2], m->s_per_byte[3]);
    fprintf(f,
            "# the served step's work outside the products, measured on %s's shape\n"
            "# attn_s_per_pos: seconds per (layer x query head x attended position) of decode\n"
            "#   attention over an f16 paged KV cache, %d sequences at %d and %d positions,\n"
            "#   one pool run per layer (the slope); for heads of attn_head_dim\n"
            "attn_s_per_pos %.6g\nattn_head_dim %.0f\n"
            "# tok_s_per_layer: seconds per (token x layer) of the work around the products:\n"
            "#   the attention call at no context (the intercept, %.3g) + norms, rotary, KV\n"
            "#   row, residual adds, SwiGLU (%.3g)\n"
            "tok_s_per_layer %.6g\n"
            "# row_s_per_vocab: seconds per (logits row x vocabulary entry) of the engine's\n"
            "#   per-row work: copy, sample at temperature 1 over all %lld, log-sum-exp\n"
            "#   (%.3g s per row)\n"
            "row_s_per_vocab %.6g\n"
            "# step_overhead_s: the pool dispatches of a step, %.3g s each x (5 x %lld layers\n"
            "#   + 1): the products, attention, the classifier\n"
            "step_overhead_s %.6g\n"
            "# quiet-machine estimates of the same terms (not read by the sim): the\n"
            "# attention slope and the dispatch from the fastest repetition, the single-\n"
            "# threaded kernels (per token, per row) by this thread's CPU time (medians):\n"
            "#quiet attn_s_per_pos %.6g tok_s_per_layer %.6g row_s_per_vocab %.6g "
            "step_overhead_s %.6g\n",
            sh->name, ATT_SEQS, ATT_LO, ATT_HI, e->attn_s_per_pos, e->attn_head_dim, e->attn_call_s,
            e->tok_kernels_s, e->tok_s_per_layer, (long long)sh->hp.n_vocab, e->row_s,
            e->row_s_per_vocab, e->dispatch_s, (long long)sh->hp.n_layers, e->step_overhead_s,
            e->min_attn_s_per_pos, e->attn_call_s + e->cpu_tok_kernels_s,
            e->cpu_row_s / (double)sh->hp.n_vocab,
            e->min_dispatch_s * (5.0 * (double)sh->hp.n_layers + 1));
}

/* write_file to path; false (said on stderr) when it cannot be created or written. */
static bool save_file(const char *path, long long threads, const mm_figs *m, const model_mm *mm,
                      const kvl_model_shape *sh, const eng_figs *e) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kvllm sim calibrate: -o %s: cannot create\n", path);
        return false;
    }
    write_file(f, threads, m, mm, sh, e);
    if (fclose(f)) {
        fprintf(stderr, "kvllm sim calibrate: -o %s: write failed\n", path);
        return false;
    }
    return true;
}

int kvl_cli_sim_calibrate(int argc, char **argv) {
    const char *out = NULL, *model = NULL;
    long long threads = 2;
    for (int i = 1; i < argc; i++) {
        const char *v;
        if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--out")) {
            if (!kvl_cli_value("sim calibrate", argc, argv, &i, &out))
                return 2;
        } else if (!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) {
            if (!kvl_cli_value("sim calibrate", argc, argv, &i, &model))
                return 2;
        } else if (!strcmp(argv[i], "-t") || !strcmp(argv[i], "--threads")) {
            if (!kvl_cli_value("sim calibrate", argc, argv, &i, &v) ||
                !kvl_cli_int("sim calibrate", "-t", v, 1, 64, &threads))
                return 2;
        } else {
            kvl_cli_unknown("sim calibrate", argv[i], "flags: -o FILE, -t THREADS, -m FILE.gguf");
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "kvllm sim calibrate: -o FILE is required\n");
        return 2;
    }
    kvl_model_shape sh;
    if (!calib_shape(model, &sh))
        return 1;
    kvl_error err;
    kvl_pool *pool = NULL;
    if (kvl_pool_init((int)threads, &pool, &err)) {
        fprintf(stderr, "kvllm sim calibrate: %s\n", err.msg);
        return 1;
    }
    mm_figs m;
    model_mm mm;
    eng_figs e;
    memset(&e, 0, sizeof e);
    int rc = 0;
    if (!measure_products(pool, &m)) {
        fprintf(stderr, "kvllm sim calibrate: out of memory\n");
        rc = 1;
    } else if (model && measure_model_products(pool, model, &mm, &err)) {
        fprintf(stderr, "kvllm sim calibrate: -m %s: %s\n", model, err.msg);
        rc = 1;
    } else if (measure_engine(pool, &sh, &e, &err)) {
        fprintf(stderr, "kvllm %s\n", err.msg);
        rc = 1;
    }
    kvl_pool_free(pool);
    if (rc)
        return rc;
    if (!save_file(out, threads, &m, model ? &mm : NULL, &sh, &e))
        return 1;
    if (model) { /* the points from the forward passes, priced from the file */
        if (derive_fwd_points(out, &sh, &mm, &err)) {
            fprintf(stderr, "kvllm sim calibrate: %s\n", err.msg);
            return 1;
        }
        if (!save_file(out, threads, &m, &mm, &sh, &e))
            return 1;
    }
    printf("calibrated %lld threads: GEMV stream %.2f GB/s, Q8_0 x64 %.2f GFLOP/s, read %.2f "
           "GB/s; attention %.3g s/pos, %.3g s/token-layer, %.3g s/row, %.3g s/step -> %s\n",
           threads, m.bw_gemv / 1e9, m.flops / 1e9, m.bw_read / 1e9, e.attn_s_per_pos,
           e.tok_s_per_layer, e.row_s, e.step_overhead_s, out);
    return 0;
}
