/*
 * eviction_mass_speed: what h2o's attention-mass accumulation costs
 * (docs/eviction.md). One sequence of D cached positions, one thread, the
 * same blocks and data timed two ways:
 *   mass:  policy h2o (budget >= D, so nothing is evicted): attention adds
 *          each block's softmax weight to the sequence's mass;
 *   plain: policy window with the same budget: no accumulation (the path
 *          full, window and sinks take).
 * Times are the process's CPU time (the machine is shared). The policy
 * is switched on the same slot between the two; each round
 * times both, alternating which goes first, and the ratio mass / plain of
 * each round (pair) is collected; the median, quartiles and range are
 * reported, and the ratio of the fastest round of each (the least
 * disturbed by other processes on a shared machine).
 *
 *   decode MODEL D: whole decode steps (kvl_forward_run of one token at
 *       position D over the D cached positions) of a real model;
 *   attention D: attention alone of one decode step on the TinyLlama-1.1B
 *       shape (22 layers, 32 query heads, 4 KV heads, head_dim 64), the
 *       upper bound of the share of a decode step of that model.
 *
 *   eviction_mass_speed ROUNDS STEPS KV_TYPE decode MODEL D [decode MODEL D ...]
 *                                            attention D [...]
 *
 * Step s is at position D - (s % 16) (D - (s % 16) + 1 positions seen),
 * the same on both sides, so that h2o's mass stride (only queries at a
 * position that is a multiple of it accumulate) takes effect as in a
 * stream. With EVICT_BENCH_AA=1 in the environment both sides run window
 * (an A/A run: how far from 1 the method reads when nothing differs);
 * EVICT_BENCH_STRIDE=K sets h2o's mass_stride (default: the policy's).
 *
 * Must not: be a test (timing decides nothing); allocate in the timed loop.
 */
#include "core/pool.h"
#include "kernels/kernels.h"
#include "kv/kv_paged.h"
#include "model/forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU seconds of this process: on a machine shared with other jobs the
 * time this process is descheduled does not count (wall time swings by
 * several times there; memory-bandwidth contention still shows). */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct bench {
    kvl_kv_paged *kv;
    kvl_kv_policy h2o, window;
    int steps;
    /* decode */
    kvl_forward *f;
    int32_t depth;
    /* attention */
    const kvl_hparams *hp;
    float *q, *out, *scratch;
} bench;

static double time_steps(bench *b, bool mass) {
    kvl_error err;
    if (kvl_kv_paged_set_policy(b->kv, 0, mass ? &b->h2o : &b->window, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    kvl_kv_iface it = kvl_kv_paged_iface(b->kv);
    const double t0 = cpu_now();
    for (int s = 0; s < b->steps; s++) {
        if (b->f) {
            const int32_t tok = 1 + s % 7, seq = 0, pos = b->depth - s % 16;
            kvl_batch bt = {.n_tokens = 1, .tokens = &tok, .seq = &seq, .pos = &pos};
            const float *lg;
            int32_t n_out;
            if (kvl_forward_run(b->f, &bt, &it, &lg, &n_out, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                exit(1);
            }
        } else {
            for (int32_t l = 0; l < b->hp->n_layers; l++)
                it.attend(b->kv, l, 0, b->depth - s % 16, b->q, b->out, 0, (int32_t)b->hp->n_heads,
                          0.125f, b->scratch);
        }
    }
    return (cpu_now() - t0) / b->steps;
}

static void run_rounds(bench *b, int rounds, const char *label) {
    double *ta = malloc((size_t)rounds * sizeof(double)),
           *tm = malloc((size_t)rounds * sizeof(double)),
           *rt = malloc((size_t)rounds * sizeof(double));
    for (int rd = -1; rd < rounds; rd++) {
        double a, m;
        if (rd & 1) {
            a = time_steps(b, false);
            m = time_steps(b, true);
        } else {
            m = time_steps(b, true);
            a = time_steps(b, false);
        }
        if (rd >= 0) { /* round -1 warms up */
            ta[rd] = a;
            tm[rd] = m;
            rt[rd] = m / a;
        }
    }
    qsort(ta, (size_t)rounds, sizeof(double), cmp_d);
    qsort(tm, (size_t)rounds, sizeof(double), cmp_d);
    qsort(rt, (size_t)rounds, sizeof(double), cmp_d);
    printf("| %s | %d | %.4f | %.4f | %.4f - %.4f | %.4f - %.4f | %.4f |\n", label, (int)b->depth,
           ta[rounds / 2] * 1e3, rt[rounds / 2], rt[rounds / 4], rt[3 * rounds / 4], rt[0],
           rt[rounds - 1], tm[0] / ta[0]);
    fflush(stdout);
    free(ta);
    free(tm);
    free(rt);
}

static kvl_kv_paged *make_kv(const kvl_hparams *hp, kvl_kv_format fmt, int32_t depth, bench *b) {
    kvl_error err;
    kvl_block_layout lay;
    const int32_t bs = kvl_kv_block_size(0, fmt, fmt);
    if (kvl_block_layout_init_fmt(hp, bs, fmt, fmt, &lay, &err))
        return fprintf(stderr, "%s\n", err.msg), NULL;
    const int32_t ctx = (depth / bs + 2) * bs;
    kvl_kv_paged_params pp = {.budget = (size_t)(ctx / bs) * lay.block_bytes,
                              .block_size = bs,
                              .max_seqs = 1,
                              .max_ctx = ctx,
                              .k_fmt = fmt,
                              .v_fmt = fmt};
    kvl_kv_paged *kv;
    if (kvl_kv_paged_init(hp, &pp, &kv, &err))
        return fprintf(stderr, "%s\n", err.msg), NULL;
    /* EVICT_BENCH_AA=1: both sides plain (window), the method's noise floor */
    const char *aa = getenv("EVICT_BENCH_AA");
    b->h2o = (kvl_kv_policy){.kind = aa && *aa == '1' ? KVL_KV_POLICY_WINDOW : KVL_KV_POLICY_H2O,
                             .budget_tokens = ctx,
                             .sinks = 4};
    const char *stride = getenv("EVICT_BENCH_STRIDE");
    b->h2o.mass_stride = stride ? atoi(stride) : 0;
    b->window = (kvl_kv_policy){.kind = KVL_KV_POLICY_WINDOW, .budget_tokens = ctx};
    /* depth + 1: the decode step writes (and rewrites) position depth */
    if (kvl_kv_paged_reserve(kv, 0, depth + 1, &err))
        return fprintf(stderr, "%s\n", err.msg), kvl_kv_paged_free(kv), NULL;
    return kv;
}

static int bench_decode(const char *path, int32_t depth, kvl_kv_format fmt, int rounds, int steps) {
    kvl_error err;
    kvl_model *m = NULL;
    kvl_pool *pool = NULL;
    kvl_model_params mp = {0};
    if (kvl_model_load(path, &mp, &m, &err) || kvl_pool_init(1, &pool, &err))
        return fprintf(stderr, "%s: %s\n", path, err.msg), 1;
    if (depth + 1 > m->hp.ctx_len)
        return fprintf(stderr, "%s: depth %d >= context %lld\n", path, (int)depth,
                       (long long)m->hp.ctx_len),
               1;
    bench b = {.steps = steps, .depth = depth};
    b.kv = make_kv(&m->hp, fmt, depth, &b);
    if (!b.kv || kvl_forward_init(m, depth, (int32_t)m->hp.ctx_len, pool, &b.f, &err))
        return fprintf(stderr, "%s: %s\n", path, b.kv ? err.msg : "kv"), 1;
    kvl_kv_iface it = kvl_kv_paged_iface(b.kv);
    int32_t *tok = malloc((size_t)depth * sizeof(int32_t)),
            *seq = calloc((size_t)depth, sizeof(int32_t)),
            *pos = malloc((size_t)depth * sizeof(int32_t));
    for (int32_t i = 0; i < depth; i++) {
        tok[i] = 1 + (int32_t)((i * 31) % (m->hp.n_vocab - 1));
        pos[i] = i;
    }
    kvl_batch bt = {.n_tokens = depth, .tokens = tok, .seq = seq, .pos = pos};
    const float *lg;
    int32_t n_out;
    if (kvl_forward_run(b.f, &bt, &it, &lg, &n_out, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    const char *base = strrchr(path, '/');
    char label[160];
    snprintf(label, sizeof label, "decode step, %s (%lld layers, %lld heads)",
             base ? base + 1 : path, (long long)m->hp.n_layers, (long long)m->hp.n_heads);
    run_rounds(&b, rounds, label);
    free(tok);
    free(seq);
    free(pos);
    kvl_forward_free(b.f);
    kvl_kv_paged_free(b.kv);
    kvl_pool_free(pool);
    kvl_model_free(m);
    return 0;
}

static int bench_attention(int32_t depth, kvl_kv_format fmt, int rounds, int steps) {
    kvl_hparams hp = {0};
    hp.n_layers = 22;
    hp.n_heads = 32;
    hp.n_kv_heads = 4;
    hp.head_dim = 64;
    hp.dim = 32 * 64;
    hp.rope_dim = 64;
    hp.rope_base = 10000.0f;
    bench b = {.steps = steps, .depth = depth, .hp = &hp};
    b.kv = make_kv(&hp, fmt, depth, &b);
    if (!b.kv)
        return 1;
    kvl_kv_iface it = kvl_kv_paged_iface(b.kv);
    float k[4 * 64], v[4 * 64];
    uint64_t r = 42;
    for (int32_t p = 0; p <= depth; p++)
        for (int32_t l = 0; l < 22; l++) {
            for (int j = 0; j < 4 * 64; j++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                k[j] = (float)((double)(r >> 40) / 16777216.0 * 4.0 - 2.0);
                v[j] = (float)((double)((r >> 16) & 0xffffff) / 16777216.0 * 2.0 - 1.0);
            }
            it.store(b.kv, l, 0, p, k, v);
        }
    b.q = malloc(32 * 64 * sizeof(float));
    b.out = malloc(32 * 64 * sizeof(float));
    b.scratch = malloc((size_t)(depth + 1) * sizeof(float));
    for (int i = 0; i < 32 * 64; i++)
        b.q[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    run_rounds(&b, rounds, "attention only, TinyLlama-1.1B shape (22 layers, 32 heads)");
    free(b.q);
    free(b.out);
    free(b.scratch);
    kvl_kv_paged_free(b.kv);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: eviction_mass_speed ROUNDS STEPS KV_TYPE (decode MODEL D | "
                        "attention D)...\n");
        return 2;
    }
    const int rounds = atoi(argv[1]), steps = atoi(argv[2]);
    kvl_kv_format fmt;
    if (rounds < 1 || rounds > 1000 || steps < 1 || steps > 100000 ||
        !kvl_kv_format_parse(argv[3], &fmt)) {
        fprintf(stderr, "eviction_mass_speed: ROUNDS 1..1000, STEPS 1..100000, KV_TYPE a format\n");
        return 2;
    }
    printf("h2o mass accumulation on / off (policy h2o / window, nothing evicted), 1 thread, "
           "KV %s, ISA %s, %d rounds of %d steps each way\n\n",
           argv[3], kvl_isa_name(kvl_isa_active()), rounds, steps);
    printf("| what | depth | off: CPU ms / step (median) | on / off: median of pairs | quartiles | "
           "range | min on / min off |\n");
    printf("|---|---:|---:|---:|---|---|---:|\n");
    for (int i = 4; i < argc; i++) {
        int rc;
        if (!strcmp(argv[i], "decode") && i + 2 < argc) {
            rc = bench_decode(argv[i + 1], atoi(argv[i + 2]), fmt, rounds, steps);
            i += 2;
        } else if (!strcmp(argv[i], "attention") && i + 1 < argc) {
            const int32_t d = atoi(argv[i + 1]);
            rc = d >= 16 && d <= 1 << 16 ? bench_attention(d, fmt, rounds, steps) : 2;
            i += 1;
        } else
            rc = 2;
        if (rc)
            return fprintf(stderr, "eviction_mass_speed: bad or failed item '%s'\n", argv[i]), rc;
    }
    return 0;
}
