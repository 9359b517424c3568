/*
 * kv_check: the KV quality guard (protocol and warning rule in kv_check.h).
 *
 * Invariants: every run uses its own paged store of one sequence, sized
 * for the check's positions; the model is only read. The f32 reference is
 * the greedy decode itself (its logits at each step), so the compared
 * sequence is the model's own output.
 *
 * Must not: print (kvl_kv_check_print is separate; the only output is
 * core's progress line, on a terminal), change the model,
 * or leave anything allocated on any path.
 */
#include "engine/kv_check.h"

#include "kv/kv_paged.h"
#include "engine/executor.h"

#include <math.h>
#include <stdlib.h>

#define CHUNK 64 /* prefill positions per forward call */

/* log of the softmax denominator of n logits (log-sum-exp); NaN when a
 * logit is NaN */
static double log_sum_exp(const float *x, int64_t n) {
    double mx = x[0];
    bool nan = isnan(x[0]);
    for (int64_t i = 1; i < n; i++) {
        mx = x[i] > mx ? x[i] : mx;
        nan |= isnan(x[i]);
    }
    if (nan)
        return NAN;
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += exp((double)x[i] - mx);
    return log(s) + mx;
}

static int64_t argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++)
        b = x[i] > x[b] ? i : b;
    return b;
}

double kvl_logits_kl(const float *p, const float *q, int64_t n, bool *top1_agree) {
    const double lp = log_sum_exp(p, n), lq = log_sum_exp(q, n);
    double kl = 0;
    if (!isnan(lp) && !isnan(lq))
        for (int64_t j = 0; j < n; j++) {
            const double a = (double)p[j] - lp, b = (double)q[j] - lq;
            kl += exp(a) * (a - b);
        }
    /* NaN first: the clamp below would turn it into a perfect 0 */
    if (isnan(lp) || isnan(lq) || isnan(kl)) {
        *top1_agree = false;
        return INFINITY; /* a NaN distribution is as bad as it gets */
    }
    *top1_agree = argmax(p, n) == argmax(q, n);
    return kl > 0 ? kl : 0; /* rounding */
}

static bool row_has_nan(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (isnan(x[i]))
            return true;
    return false;
}

typedef struct {
    const kvl_model *m;
    kvl_executor *fw;
    int32_t n;       /* positions */
    int32_t *toks;   /* (n + 1) */
    float *ref;      /* (n, V) f32 logits: position i predicts toks[i + 1] */
    float *f16;      /* (n, V) f16 logits */
    bool *want;      /* (CHUNK) all true */
    kvl_progress pr; /* positions run so far, of pr_total */
    int64_t pr_done, pr_total;
} ctx;

static void advance(ctx *c, int32_t n) {
    c->pr_done += n;
    kvl_progress_update(&c->pr, (uint64_t)c->pr_done, (uint64_t)c->pr_total);
}

static kvl_status make_store(const ctx *c, kvl_kv_format k, kvl_kv_format v, kvl_kv_paged **out,
                             kvl_error *err) {
    int32_t bs = kvl_kv_block_size(0, k, v);
    kvl_block_layout lay;
    kvl_status st = kvl_block_layout_init_fmt(&c->m->hp, bs, k, v, &lay, err);
    if (st)
        return st;
    size_t nb = (size_t)(c->n + bs - 1) / (size_t)bs;
    kvl_kv_paged_params pp = {.budget = nb * lay.block_bytes,
                              .block_size = bs,
                              .max_seqs = 1,
                              .max_ctx = c->n,
                              .k_fmt = k,
                              .v_fmt = v};
    return kvl_kv_paged_init(&c->m->hp, &pp, out, err);
}

/* Teacher-force toks[0..n) through formats (k, v); logits into dst (n, V). */
static kvl_status run_forced(ctx *c, kvl_kv_format k, kvl_kv_format v, float *dst, kvl_error *err) {
    const int64_t V = c->m->hp.n_vocab;
    kvl_kv_paged *kv = NULL;
    kvl_status st = make_store(c, k, v, &kv, err);
    if (st)
        return st;
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    int32_t seq[CHUNK] = {0}, pos[CHUNK];
    for (int32_t p0 = 0; p0 < c->n && st == KVL_OK; p0 += CHUNK) {
        int32_t nt = c->n - p0 < CHUNK ? c->n - p0 : CHUNK;
        for (int32_t i = 0; i < nt; i++)
            pos[i] = p0 + i;
        kvl_batch b = {
            .n_tokens = nt, .tokens = c->toks + p0, .seq = seq, .pos = pos, .logits = c->want};
        const float *lg;
        int32_t n_out = 0;
        if ((st = kvl_kv_paged_reserve(kv, 0, nt, err)) ||
            (st = kvl_executor_run(c->fw, &b, &it, &lg, &n_out, err)))
            break;
        KVL_ASSERT(n_out == nt);
        memcpy(dst + (size_t)p0 * V, lg, (size_t)nt * V * sizeof(float));
        advance(c, nt);
    }
    kvl_kv_paged_free(kv);
    return st;
}

/* Mean and max KL(p_a || p_b) over positions, and top-1 agreement. */
static void compare(ctx *c, const float *a, const float *b, double *kl_mean, double *kl_max,
                    double *top1) {
    const int64_t V = c->m->hp.n_vocab;
    double sum = 0, mx = 0;
    int32_t agree = 0;
    for (int32_t i = 0; i < c->n; i++) {
        bool same;
        const double kl = kvl_logits_kl(a + (size_t)i * V, b + (size_t)i * V, V, &same);
        sum += kl;
        mx = kl > mx ? kl : mx;
        agree += same;
    }
    *kl_mean = sum / c->n;
    *kl_max = mx;
    *top1 = (double)agree / c->n;
}

/* The next, less aggressive format for a role. */
static kvl_kv_format step_up(kvl_kv_format f) {
    switch (f) {
    case KVL_KV_FMT_INT4: return KVL_KV_FMT_INT8;
    case KVL_KV_FMT_FP8_E5M2: return KVL_KV_FMT_FP8_E4M3;
    case KVL_KV_FMT_FP8_E4M3:
    case KVL_KV_FMT_INT8:
    case KVL_KV_FMT_BF16: return KVL_KV_FMT_F16;
    default: return KVL_KV_FMT_F32;
    }
}

kvl_status kvl_kv_check(const kvl_model *m, kvl_kv_format k, kvl_kv_format v, kvl_pool *pool,
                        kvl_kv_check_report *out, kvl_error *err) {
    if (!kvl_kv_format_get(k))
        return kvl_errorf(err, KVL_E_INVALID, "kv check: k format %d not in [0, %d) (%s)", (int)k,
                          KVL_KV_FMT_COUNT, kvl_kv_format_names());
    if (!kvl_kv_format_get(v))
        return kvl_errorf(err, KVL_E_INVALID, "kv check: v format %d not in [0, %d) (%s)", (int)v,
                          KVL_KV_FMT_COUNT, kvl_kv_format_names());
    const int64_t V = m->hp.n_vocab;
    ctx c = {.m = m};
    c.n = m->hp.ctx_len < KVL_KV_CHECK_TOKENS ? (int32_t)m->hp.ctx_len : KVL_KV_CHECK_TOKENS;
    c.n -= 1; /* the last token is predicted, never fed */
    if (c.n < 8)
        return kvl_errorf(err, KVL_E_INVALID, "kv check: context %lld < 9 positions",
                          (long long)m->hp.ctx_len);
    kvl_kv_check_report r = {
        .k_fmt = k, .v_fmt = v, .n_tokens = c.n, .block_size = kvl_kv_block_size(0, k, v)};
    c.toks = calloc((size_t)c.n + 1, sizeof(int32_t));
    c.ref = malloc((size_t)c.n * V * sizeof(float));
    c.f16 = malloc((size_t)c.n * V * sizeof(float));
    float *q = malloc((size_t)c.n * V * sizeof(float));
    c.want = malloc(CHUNK * sizeof(bool));
    kvl_status st = KVL_OK;
    kvl_kv_paged *kv = NULL;
    if (!c.toks || !c.ref || !c.f16 || !q || !c.want) {
        st = kvl_errorf(err, KVL_E_NOMEM, "kv check: cannot allocate logits of %d x %lld", (int)c.n,
                        (long long)V);
        goto done;
    }
    for (int i = 0; i < CHUNK; i++)
        c.want[i] = true;
    if ((st = kvl_executor_cpu_init(m, pool, CHUNK, c.n, &c.fw, err)))
        goto done;
    /* the f32 decode, f16, the chosen formats, and (counted in advance,
     * skipped without a warning) the K-only and V-only runs */
    kvl_progress_begin(&c.pr, "kv check");
    c.pr_total = (3 + (k > KVL_KV_FMT_F16) + (v > KVL_KV_FMT_F16)) * (int64_t)c.n;

    /* 1. the f32 greedy continuation of a fixed prompt; its logits are the
     * reference */
    const int32_t prompt[] = {1, 13, 17, 42, 7};
    const int32_t n_prompt = (int32_t)(sizeof prompt / sizeof prompt[0]);
    for (int32_t i = 0; i < n_prompt; i++)
        c.toks[i] = prompt[i] % (int32_t)V;
    if ((st = make_store(&c, KVL_KV_FMT_F32, KVL_KV_FMT_F32, &kv, err)))
        goto done;
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    for (int32_t p = 0; p < c.n; p++) {
        int32_t s0 = 0;
        kvl_batch b = {.n_tokens = 1, .tokens = &c.toks[p], .seq = &s0, .pos = &p};
        const float *lg;
        int32_t n_out;
        if ((st = kvl_kv_paged_reserve(kv, 0, 1, err)) ||
            (st = kvl_executor_run(c.fw, &b, &it, &lg, &n_out, err)))
            goto done;
        memcpy(c.ref + (size_t)p * V, lg, (size_t)V * sizeof(float));
        if (p + 1 >= n_prompt)
            c.toks[p + 1] = (int32_t)argmax(lg, V);
        advance(&c, 1);
    }

    /* 2. f16 (the yardstick) and the chosen formats, teacher-forced */
    double dummy;
    if ((st = run_forced(&c, KVL_KV_FMT_F16, KVL_KV_FMT_F16, c.f16, err)) ||
        (st = run_forced(&c, k, v, q, err)))
        goto done;
    compare(&c, c.ref, c.f16, &r.f16_kl_mean, &r.f16_kl_max, &r.f16_top1);
    compare(&c, c.ref, q, &r.kl_mean, &r.kl_max, &r.top1);
    compare(&c, c.f16, q, &r.kl_mean_vs_f16, &dummy, &dummy);

    /* 3. the verdict (NaN logits fail it: their KL is +inf) */
    r.warn = !(r.kl_mean <= KVL_KV_CHECK_KL_WARN) || r.top1 < KVL_KV_CHECK_TOP1_WARN;
    int32_t n_nan = 0;
    for (int32_t i = 0; i < c.n; i++)
        n_nan += row_has_nan(c.ref + (size_t)i * V, V);
    if (n_nan) { /* no KV format can be judged against a broken reference */
        snprintf(r.message, sizeof r.message,
                 "kv check: the f32-KV reference logits hold NaN at %d of %d positions: the "
                 "model itself computes NaN, so no KV format can be judged",
                 (int)n_nan, (int)c.n);
        goto done;
    }
    if (!r.warn) {
        snprintf(r.message, sizeof r.message,
                 "kv check: K %s V %s ok (mean KL %.4g nats <= %.3g, top-1 %.1f%% >= %.0f%%)",
                 kvl_kv_format_get(k)->name, kvl_kv_format_get(v)->name, r.kl_mean,
                 KVL_KV_CHECK_KL_WARN, 100 * r.top1, 100 * KVL_KV_CHECK_TOP1_WARN);
        goto done;
    }
    double t1;
    r.kl_mean_k_only = r.kl_mean_v_only = 0;
    if (k > KVL_KV_FMT_F16 && ((st = run_forced(&c, k, KVL_KV_FMT_F16, q, err)) == KVL_OK))
        compare(&c, c.ref, q, &r.kl_mean_k_only, &dummy, &t1);
    if (st == KVL_OK && v > KVL_KV_FMT_F16 &&
        ((st = run_forced(&c, KVL_KV_FMT_F16, v, q, err)) == KVL_OK))
        compare(&c, c.ref, q, &r.kl_mean_v_only, &dummy, &t1);
    if (st)
        goto done;
    const bool blame_k = !(r.kl_mean_k_only < r.kl_mean_v_only);
    const kvl_kv_format bad = blame_k ? k : v;
    snprintf(r.message, sizeof r.message,
             "kv check: K %s V %s: mean KL %.4g nats vs f32 KV (limit %.3g; f16 KV: %.4g), "
             "top-1 %.1f%%; %s alone gives %.4g: use --kv-type-%c %s",
             kvl_kv_format_get(k)->name, kvl_kv_format_get(v)->name, r.kl_mean,
             KVL_KV_CHECK_KL_WARN, r.f16_kl_mean, 100 * r.top1, blame_k ? "K" : "V",
             blame_k ? r.kl_mean_k_only : r.kl_mean_v_only, blame_k ? 'k' : 'v',
             kvl_kv_format_get(step_up(bad))->name);

done:
    if (st == KVL_OK) /* the K-only and V-only runs were skipped or done */
        kvl_progress_update(&c.pr, 1, 1);
    kvl_progress_end(&c.pr);
    kvl_kv_paged_free(kv);
    kvl_executor_free(c.fw);
    free(c.toks);
    free(c.ref);
    free(c.f16);
    free(q);
    free(c.want);
    if (st == KVL_OK)
        *out = r;
    return st;
}

void kvl_kv_check_print(const kvl_kv_check_report *r, FILE *f) {
    fprintf(f,
            "kv check: K %s V %s (block %d), %d positions: mean KL %.5f max %.5f nats, top-1 "
            "%.1f%% vs f32 KV; f16 KV: mean KL %.5f, top-1 %.1f%%\n",
            kvl_kv_format_get(r->k_fmt)->name, kvl_kv_format_get(r->v_fmt)->name,
            (int)r->block_size, (int)r->n_tokens, r->kl_mean, r->kl_max, 100 * r->top1,
            r->f16_kl_mean, 100 * r->f16_top1);
    fprintf(f, "%s%s\n", r->warn ? "warning: " : "", r->message);
}
