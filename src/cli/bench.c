/*
 * kvllm bench: throughput of the forward pass on one model, in the manner of
 * llama.cpp's llama-bench, so the two can be run side by side on one file.
 *
 *   ppN        N random tokens of one sequence in one batch (prompt
 *              processing), after D tokens of untimed prefill (ppN@dD)
 *   tgN        N tokens decoded one step at a time, each step one token per
 *              sequence with logits for every token (generation), starting
 *              at depth D (tgN@dD)
 *   bB tgN     the same with B sequences decoding together in one batch
 *              (aggregate tokens/s over all B sequences)
 *
 * Token ids come from a fixed-seed generator (the text does not matter to
 * the speed; no sampling is timed, as in llama-bench). Each test is prefilled
 * to its depth once, warmed with one untimed step, then timed -r times; the
 * depth's KV stays and every repetition rewrites the same positions after it.
 *
 * Besides tokens/s it reports the bytes one decoded token reads (the weights
 * of one forward pass divided by the sequences that share it, plus the KV of
 * its own sequence over the mean context of the test), so that
 * bytes/token / memory bandwidth gives the decode roofline.
 *
 * Everything is allocated before the first timed step; the timed loops only
 * call kvl_executor_run_cache (reserve the step's KV positions, as a server
 * does, then the forward pass). It never writes files.
 */
#include "cli/cli.h"
#include "cli/common.h"
#include "core/pool.h"
#include "kernels/kernels.h"
#include "engine/executor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LIST 16
#define MAX_REPS 1000
#define MAX_TESTS (MAX_LIST * MAX_LIST * MAX_LIST * 2)
#define DEPTH_CHUNK 512 /* tokens per untimed prefill batch */
#define SEED 0x6b766c6c6d62656eULL

typedef enum { OUT_TEXT, OUT_JSON, OUT_CSV } out_fmt;
typedef enum { TEST_PP, TEST_TG } test_kind;

typedef struct {
    long long v[MAX_LIST];
    int n;
} int_list;

typedef struct {
    test_kind kind;
    int32_t n_tok; /* tokens per sequence that are timed */
    int32_t depth; /* positions already in the KV before the timed tokens */
    int32_t n_seq; /* sequences decoding together (tg), 1 for pp */
    char name[64];
} test_spec;

typedef struct {
    double mean, sd, median, min, max;
    double weight_bytes_tok; /* weight bytes read per token (one step / n_seq) */
    double kv_bytes_tok;     /* KV bytes read per token (mean context of the test) */
    double fill_s;           /* seconds the untimed depth prefill took */
    bool roof;               /* --roofline figures below (tg tests) */
    double read_med;         /* median over the repetitions of the weights' read, GB/s */
    double roof_frac;        /* median over the repetitions of bytes read per second by
                                decode / that repetition's read of the weights */
    kvl_kv_cache_params kv;  /* the KV cache measured: layout, formats, block size */
} test_stats;

static void usage(FILE *f) {
    fprintf(f,
            "usage: kvllm bench [-m MODEL] [flags]\n"
            "\n"
            "Tokens/s of prompt processing (pp) and generation (tg), like llama-bench.\n"
            "Lists are comma-separated and every combination is run.\n"
            "\n"
            "  -m, --model PATH     GGUF or llama2.c checkpoint (default: shipped stories260K)\n"
            "  -p, --n-prompt N,..  prompt tokens in one batch, 0..65536, 0 = no pp test\n"
            "                       (default 512)\n"
            "  -n, --n-gen N,..     tokens generated one step at a time, 0..65536,\n"
            "                       0 = no tg test (default 128)\n"
            "  -d, --depth D,..     positions prefilled (untimed) before each test,\n"
            "                       0..%d (default 0); depth + tokens must fit the\n"
            "                       model's context\n"
            "  -b, --batch B,..     sequences generating together in tg tests, 1..256\n"
            "                       (default 1)\n"
            "  -r, --reps N         timed repetitions of each test, 1..%d (default 5)\n"
            "  -t, --threads N      worker threads, 1..%d (default: one per core)\n"
            "  -o, --output FMT     text (markdown table), json or csv (default text)\n"
            "      --gate           before each timed repetition print 'ready TEST REP' to\n"
            "                       stderr and wait for a line on stdin; after it print\n"
            "                       'done TEST REP T/S' (lets a driver interleave engines)\n"
            "      --roofline       before each timed tg repetition read the model's own\n"
            "                       memory with the same threads (best of 3 passes) and\n"
            "                       report decode's bytes/s as a fraction of that read\n"
            "                       (json: weights_read_gbs, roofline_frac; text: "
            "stderr)\n" KVL_CLI_LOAD_USAGE KVL_CLI_CHECK_USAGE "  -h, --help\n"
            "\nKV cache (each test gets a cache of exactly its sequences and positions;\n"
            "--kv-check runs once, before the first test):\n",
            KVL_MAX_CTX, MAX_REPS, KVL_POOL_MAX_THREADS);
    kvl_cli_kv_usage(f);
    fprintf(f, "\n"
               "Columns: kv is the KV cache measured (layout, K/V formats, block size);\n"
               "t/s is mean +- standard deviation over the repetitions (tg: all\n"
               "sequences together); W/tok and KV/tok are the bytes one generated token\n"
               "reads from weights and from the KV cache (in its format). Every decode step\n"
               "reserves its KV positions first, as a server does, and that is timed.\n"
               "\n"
               "examples:\n"
               "  kvllm bench -m tl-q8_0.gguf -p 512 -n 128 -d 0,1024 -r 3\n"
               "  kvllm bench -m tl-q8_0.gguf -p 0 -n 32 -b 1,4,16 -o json --kv-type int8\n");
}

/* "512" or "0,2048": each element checked by kvl_cli_int. */
static bool parse_list(const char *flag, const char *s, long long lo, long long hi, int_list *out) {
    out->n = 0;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char buf[32];
        if (len == 0 || len >= sizeof buf) {
            fprintf(stderr, "kvllm bench: %s: '%s' is not a comma-separated list of integers\n",
                    flag, s);
            return false;
        }
        if (out->n == MAX_LIST) {
            fprintf(stderr, "kvllm bench: %s: '%s' has more than %d values\n", flag, s, MAX_LIST);
            return false;
        }
        memcpy(buf, p, len);
        buf[len] = '\0';
        if (!kvl_cli_int("bench", flag, buf, lo, hi, &out->v[out->n]))
            return false;
        out->n++;
        if (!comma)
            return true;
        p = comma + 1;
    }
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void random_tokens(uint64_t *state, int32_t *out, int32_t n, int64_t n_vocab) {
    for (int32_t i = 0; i < n; i++)
        out[i] = (int32_t)(splitmix64(state) % (uint64_t)n_vocab);
}

static size_t weight_bytes(const kvl_weight *w) {
    return kvl_row_bytes(w->type, w->ne0) * (size_t)w->ne1;
}

/* Bytes of weights one forward step reads for n_seq tokens: every layer
 * matrix and norm, the output norm and classifier, and n_seq embedding
 * rows. */
static size_t step_weight_bytes(const kvl_model *m, int32_t n_seq) {
    size_t b = weight_bytes(&m->output) + weight_bytes(&m->output_norm);
    for (int64_t l = 0; l < m->hp.n_layers; l++) {
        const kvl_layer_weights *L = &m->layers[l];
        const kvl_weight *ws[] = {&L->attn_norm, &L->wq,     &L->wk,     &L->wv,  &L->wo,
                                  &L->ffn_norm,  &L->w_gate, &L->w_down, &L->w_up};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            b += weight_bytes(ws[i]);
    }
    b += (size_t)n_seq * kvl_row_bytes(m->tok_embd.type, m->tok_embd.ne0);
    return b;
}

static int64_t count_params(const kvl_model *m) {
    int64_t n = m->tok_embd.ne0 * m->tok_embd.ne1 + m->output_norm.ne0 * m->output_norm.ne1;
    if (m->output.data != m->tok_embd.data)
        n += m->output.ne0 * m->output.ne1;
    for (int64_t l = 0; l < m->hp.n_layers; l++) {
        const kvl_layer_weights *L = &m->layers[l];
        const kvl_weight *ws[] = {&L->attn_norm, &L->wq,     &L->wk,     &L->wv,  &L->wo,
                                  &L->ffn_norm,  &L->w_gate, &L->w_down, &L->w_up};
        for (size_t i = 0; i < sizeof ws / sizeof ws[0]; i++)
            n += ws[i]->ne0 * ws[i]->ne1;
    }
    return n;
}

static const char *type_name(kvl_type t) {
    size_t blck, ts;
    const char *name = "?";
    if (!kvl_type_info((uint32_t)t, &blck, &ts, &name))
        return "?";
    return name;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void stats_of(const double *ts, int n, double *sorted, test_stats *st) {
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += ts[i];
    st->mean = sum / n;
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (ts[i] - st->mean) * (ts[i] - st->mean);
    st->sd = n > 1 ? sqrt(ss / (n - 1)) : 0.0;
    memcpy(sorted, ts, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_double);
    st->median = n % 2 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    st->min = sorted[0];
    st->max = sorted[n - 1];
}

/* Everything a test needs, allocated once for the largest test. */
typedef struct {
    const kvl_model *m;
    kvl_executor *fw;
    int32_t max_tokens;
    int32_t *tok; /* (max_tokens) */
    int32_t *seq; /* (max_tokens) */
    int32_t *pos; /* (max_tokens) */
    bool *want;   /* (max_tokens) logits wanted */
    uint64_t rng;
    bool gate;     /* --gate: wait for a line on stdin before each repetition */
    bool roofline; /* --roofline: read the weights' memory before each tg repetition */
    kvl_pool *pool;
    double *read_gbs;    /* (reps) that read, GB/s */
    uint64_t *read_sink; /* (threads * 8) its per-thread results */
    const kvl_cli_kv_opts *kvo;
    kvl_progress pr; /* the running test: depth prefilled + repetitions, in tokens;
                        drawn between timed repetitions, never inside one */
    uint64_t pr_total;
    int test_i, n_tests;
} bench_ctx;

/* Reserve the batch's positions, then run it (kvl_executor_run_cache). */
static kvl_status run_batch(bench_ctx *c, kvl_kv_cache *kvc, int32_t n, bool all_logits,
                            kvl_error *err) {
    for (int32_t i = 0; i < n; i++)
        c->want[i] = all_logits || i == n - 1;
    kvl_batch b = {
        .n_tokens = n, .tokens = c->tok, .seq = c->seq, .pos = c->pos, .logits = c->want};
    const float *logits;
    int32_t n_out;
    return kvl_executor_run_cache(c->fw, kvc, &b, &logits, &n_out, err);
}

/* Prefill positions [0, depth) of sequence 0 in chunks, then copy them into
 * every other sequence. */
static kvl_status fill_depth(bench_ctx *c, kvl_kv_cache *kvc, int32_t depth, int32_t n_seq,
                             kvl_error *err) {
    int32_t chunk = c->max_tokens < DEPTH_CHUNK ? c->max_tokens : DEPTH_CHUNK;
    for (int32_t p0 = 0; p0 < depth; p0 += chunk) {
        int32_t n = depth - p0 < chunk ? depth - p0 : chunk;
        random_tokens(&c->rng, c->tok, n, c->m->hp.n_vocab);
        for (int32_t i = 0; i < n; i++) {
            c->seq[i] = 0;
            c->pos[i] = p0 + i;
        }
        kvl_status st = run_batch(c, kvc, n, false, err);
        if (st != KVL_OK)
            return st;
        kvl_progress_update(&c->pr, (uint64_t)(p0 + n), c->pr_total);
    }
    for (int32_t s = 1; s < n_seq && depth > 0; s++) {
        kvl_status st = kvl_kv_cache_fork(kvc, 0, s, err);
        if (st != KVL_OK)
            return st;
    }
    return KVL_OK;
}

/* One timed repetition: its seconds in *sec. */
/* Back to the depth: every sequence drops the positions a repetition wrote. */
static kvl_status rewind_to(kvl_kv_cache *kvc, const test_spec *t, kvl_error *err) {
    for (int32_t s = 0; s < t->n_seq; s++) {
        int32_t len = kvl_kv_cache_len(kvc, s);
        kvl_status st = len > t->depth   ? kvl_kv_cache_truncate(kvc, s, t->depth, err)
                        : len < t->depth ? kvl_kv_cache_reserve(kvc, s, t->depth - len, err)
                                         : KVL_OK;
        if (st != KVL_OK)
            return st;
    }
    return KVL_OK;
}

static kvl_status time_rep(bench_ctx *c, const test_spec *t, kvl_kv_cache *kvc, double *sec,
                           kvl_error *err) {
    kvl_status st = rewind_to(kvc, t, err);
    if (st != KVL_OK)
        return st;
    if (t->kind == TEST_PP) {
        random_tokens(&c->rng, c->tok, t->n_tok, c->m->hp.n_vocab);
        for (int32_t i = 0; i < t->n_tok; i++) {
            c->seq[i] = 0;
            c->pos[i] = t->depth + i;
        }
        double t0 = kvl_now();
        st = run_batch(c, kvc, t->n_tok, false, err);
        *sec = kvl_now() - t0;
        return st;
    }
    double t0 = kvl_now();
    for (int32_t step = 0; step < t->n_tok && st == KVL_OK; step++) {
        random_tokens(&c->rng, c->tok, t->n_seq, c->m->hp.n_vocab);
        for (int32_t s = 0; s < t->n_seq; s++) {
            c->seq[s] = s;
            c->pos[s] = t->depth + step;
        }
        st = run_batch(c, kvc, t->n_seq, true, err);
    }
    *sec = kvl_now() - t0;
    return st;
}

/*
 * --roofline: the read bandwidth of the model's own memory (the file's bytes
 * as loaded: the private copy or the mapping), by the bench's threads, best
 * of 3 passes, just before each timed tg repetition. On these VMs a fresh
 * buffer (bench/stream) reads at ~30-35 or ~50-60 GB/s depending on where
 * it lands, and the level can differ from that of the pages holding the
 * weights for the whole life of a process; this measures the very pages
 * decode reads, at the same moment.
 */
typedef struct {
    const uint8_t *p;
    size_t n;
    uint64_t *sink; /* (threads * 8): one line per thread */
} wread_task;

static void wread_fn(void *arg, int ith, int nth) {
    const wread_task *w = arg;
    int64_t lo, hi; /* in 64-byte lines */
    kvl_split((int64_t)(w->n / 64), ith, nth, &lo, &hi);
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (int64_t i = lo; i < hi; i++) {
        uint64_t v[8];
        memcpy(v, w->p + (size_t)i * 64, 64);
        a0 += v[0] + v[4];
        a1 += v[1] + v[5];
        a2 += v[2] + v[6];
        a3 += v[3] + v[7];
    }
    w->sink[(size_t)ith * 8] = a0 ^ a1 ^ a2 ^ a3;
}

static double weights_read_gbs(bench_ctx *c) {
    const kvl_mapped_file *mf = c->m->gguf ? &c->m->gguf->map : &c->m->map;
    wread_task w = {.p = mf->data, .n = mf->size, .sink = c->read_sink};
    double best = 0;
    for (int k = 0; k < 3; k++) {
        const double t0 = kvl_now();
        kvl_pool_run(c->pool, wread_fn, &w);
        const double dt = kvl_now() - t0;
        const double gbs = (double)(w.n / 64 * 64) / (dt > 0 ? dt : 1e-9) / 1e9;
        best = gbs > best ? gbs : best;
    }
    return best;
}

static kvl_status run_test(bench_ctx *c, const test_spec *t, int reps, double *ts, test_stats *st,
                           kvl_error *err) {
    int32_t max_ctx = t->depth + t->n_tok + 1;
    kvl_kv_cache *kvc = NULL;
    kvl_kv_cache_params kp;
    if (!kvl_cli_kv_params("bench", c->kvo, c->m, t->n_seq, max_ctx, max_ctx, NULL, &kp))
        return kvl_errorf(err, KVL_E_INVALID, "bad KV cache options");
    kvl_status s = kvl_kv_cache_init(&c->m->hp, &kp, &kvc, err);
    if (s != KVL_OK)
        return s;
    st->kv = *kvl_kv_cache_params_of(kvc);
    char label[96];
    snprintf(label, sizeof label, "bench %s (%d of %d)", t->name, c->test_i + 1, c->n_tests);
    if (c->gate) /* stderr carries the gate's protocol */
        kvl_progress_begin_to(&c->pr, NULL, label);
    else
        kvl_progress_begin(&c->pr, label);
    c->pr_total = (uint64_t)t->depth + (uint64_t)reps * (uint64_t)t->n_tok;
    double t_fill = kvl_now();
    s = fill_depth(c, kvc, t->depth, t->n_seq, err);
    t_fill = kvl_now() - t_fill;
    if (s == KVL_OK) { /* warm-up: one step at the first timed position */
        random_tokens(&c->rng, c->tok, t->n_seq, c->m->hp.n_vocab);
        for (int32_t i = 0; i < t->n_seq; i++) {
            c->seq[i] = i;
            c->pos[i] = t->depth;
        }
        s = run_batch(c, kvc, t->n_seq, true, err);
    }
    for (int r = 0; r < reps && s == KVL_OK; r++) {
        if (c->gate) { /* the other engine runs while this one waits here */
            char line[64];
            fprintf(stderr, "ready %s %d\n", t->name, r + 1);
            fflush(stderr);
            if (!fgets(line, sizeof line, stdin)) {
                s = kvl_errorf(err, KVL_E_IO, "--gate: stdin closed before repetition %d", r + 1);
                break;
            }
        }
        if (c->roofline && t->kind == TEST_TG)
            c->read_gbs[r] = weights_read_gbs(c);
        double sec = 0;
        s = time_rep(c, t, kvc, &sec, err);
        ts[r] = (double)t->n_tok * t->n_seq / (sec > 0 ? sec : 1e-9);
        kvl_progress_update(&c->pr, (uint64_t)t->depth + (uint64_t)(r + 1) * (uint64_t)t->n_tok,
                            c->pr_total);
        if (c->gate) {
            fprintf(stderr, "done %s %d %.4f\n", t->name, r + 1, ts[r]);
            fflush(stderr);
        }
    }
    if (s == KVL_OK) {
        double sorted[MAX_REPS];
        stats_of(ts, reps, sorted, st);
        size_t w = step_weight_bytes(c->m, t->n_seq);
        /* timed tokens sit at depth..depth+n-1 and read pos+1 positions each */
        double mean_ctx = t->depth + (t->n_tok + 1) / 2.0;
        st->weight_bytes_tok = (double)w / t->n_seq;
        kvl_kv_stats ks;
        kvl_kv_cache_stats(kvc, &ks);
        st->kv_bytes_tok = mean_ctx * (double)ks.bytes_per_token;
        st->fill_s = t_fill;
        if (c->roofline && t->kind == TEST_TG) {
            /* one step reads the weights once and every sequence's KV */
            double fr[MAX_REPS], sorted2[MAX_REPS];
            for (int r = 0; r < reps; r++)
                fr[r] = ts[r] / t->n_seq * ((double)w + t->n_seq * st->kv_bytes_tok) / 1e9 /
                        c->read_gbs[r];
            test_stats a, b;
            stats_of(fr, reps, sorted2, &a);
            stats_of(c->read_gbs, reps, sorted2, &b);
            st->roof = true;
            st->roof_frac = a.median;
            st->read_med = b.median;
        }
    }
    kvl_progress_end(&c->pr);
    kvl_kv_cache_free(kvc);
    return s;
}

static void print_header(out_fmt fmt) {
    if (fmt == OUT_TEXT) {
        printf("| model | size | params | type | isa | threads | kv | test | t/s | median t/s "
               "| W/tok | KV/tok |\n");
        printf(
            "| --- | ---: | ---: | --- | --- | ---: | --- | --- | ---: | ---: | ---: | ---: |\n");
    } else if (fmt == OUT_CSV) {
        printf("model,model_type,model_size,n_params,isa,threads,kv_layout,kv_type_k,kv_type_v,"
               "kv_block_size,test,kind,n_tokens,depth,"
               "n_seq,reps,avg_ts,stddev_ts,median_ts,min_ts,max_ts,weight_bytes_per_token,"
               "kv_bytes_per_token,depth_fill_s,samples_ts\n");
    } else {
        printf("[");
    }
}

/* weights_private: the weights were copied into private memory (--load
 * huge/auto) rather than mapped; huge_bytes: anonymous memory in 2 MiB pages
 * right after loading (-1 unknown). */
static void print_row(out_fmt fmt, bool first, const kvl_model *m, int threads, const test_spec *t,
                      int reps, const double *ts, const test_stats *st, const double *read_gbs,
                      bool weights_private, long long huge_bytes) {
    const char *type = type_name(m->layers[0].wq.type);
    const char *isa = kvl_isa_name(kvl_isa_active());
    int64_t params = count_params(m);
    const bool paged = st->kv.layout == KVL_KV_LAYOUT_PAGED;
    const char *layout = paged ? "paged" : "contiguous";
    const char *kf = kvl_kv_format_get(st->kv.k_fmt)->name;
    const char *vf = kvl_kv_format_get(st->kv.v_fmt)->name;
    char kv[96], bs[16] = "";
    if (paged)
        snprintf(bs, sizeof bs, "%d", (int)st->kv.block_size);
    snprintf(kv, sizeof kv, "%s K %s V %s%s%s", layout, kf, vf, paged ? " block " : "", bs);
    if (fmt == OUT_TEXT) {
        printf("| %s | %.2f GiB | %.2f B | %s | %s | %d | %s | %s | %.2f ± %.2f | %.2f | %.1f MB | "
               "%.1f MB |\n",
               m->name, (double)m->weight_bytes / (1024.0 * 1024 * 1024), (double)params / 1e9,
               type, isa, threads, kv, t->name, st->mean, st->sd, st->median,
               st->weight_bytes_tok / 1e6, st->kv_bytes_tok / 1e6);
    } else if (fmt == OUT_CSV) {
        printf("\"%s\",%s,%zu,%lld,%s,%d,%s,%s,%s,%s,\"%s\",%s,%d,%d,%d,%d,%.4f,%.4f,%.4f,%.4f,"
               "%.4f,%.0f,%.0f,%.3f,\"",
               m->name, type, m->weight_bytes, (long long)params, isa, threads, layout, kf, vf, bs,
               t->name, t->kind == TEST_PP ? "pp" : "tg", (int)t->n_tok, (int)t->depth,
               (int)t->n_seq, reps, st->mean, st->sd, st->median, st->min, st->max,
               st->weight_bytes_tok, st->kv_bytes_tok, st->fill_s);
        for (int r = 0; r < reps; r++)
            printf("%s%.4f", r ? ";" : "", ts[r]);
        printf("\"\n");
    } else {
        printf("%s\n  {\"model\": \"%s\", \"model_type\": \"%s\", \"model_size\": %zu, "
               "\"n_params\": %lld, \"isa\": \"%s\", \"threads\": %d,\n"
               "   \"kv\": \"%s\", \"kv_layout\": \"%s\", \"kv_type_k\": \"%s\", "
               "\"kv_type_v\": \"%s\", \"kv_block_size\": %s,\n"
               "   \"test\": \"%s\", \"kind\": \"%s\", \"n_tokens\": %d, \"depth\": %d, "
               "\"n_seq\": %d, \"reps\": %d,\n"
               "   \"avg_ts\": %.4f, \"stddev_ts\": %.4f, \"median_ts\": %.4f, \"min_ts\": %.4f, "
               "\"max_ts\": %.4f,\n"
               "   \"weight_bytes_per_token\": %.0f, \"kv_bytes_per_token\": %.0f, "
               "\"depth_fill_s\": %.3f, \"weights_mem\": \"%s\", \"huge_page_bytes\": %lld,\n"
               "   \"samples_ts\": [",
               first ? "" : ",", m->name, type, m->weight_bytes, (long long)params, isa, threads,
               kv, layout, kf, vf, paged ? bs : "null", t->name, t->kind == TEST_PP ? "pp" : "tg",
               (int)t->n_tok, (int)t->depth, (int)t->n_seq, reps, st->mean, st->sd, st->median,
               st->min, st->max, st->weight_bytes_tok, st->kv_bytes_tok, st->fill_s,
               weights_private ? "private copy" : "file mapping", huge_bytes);
        for (int r = 0; r < reps; r++)
            printf("%s%.4f", r ? ", " : "", ts[r]);
        printf("]");
        if (st->roof) {
            printf(",\n   \"weights_read_gbs\": [");
            for (int r = 0; r < reps; r++)
                printf("%s%.2f", r ? ", " : "", read_gbs[r]);
            printf("], \"roofline_frac\": %.4f", st->roof_frac);
        }
        printf("}");
    }
    if (st->roof && fmt == OUT_TEXT)
        fprintf(stderr,
                "%s: the weights' memory read at %.1f GB/s (median); decode reached %.0f%% "
                "of it (median over repetitions)\n",
                t->name, st->read_med, 100 * st->roof_frac);
    fflush(stdout);
}

static void name_test(test_spec *t) {
    char depth[24] = "";
    if (t->depth > 0)
        snprintf(depth, sizeof depth, "@d%d", (int)t->depth);
    if (t->kind == TEST_PP)
        snprintf(t->name, sizeof t->name, "pp%d%s", (int)t->n_tok, depth);
    else if (t->n_seq == 1)
        snprintf(t->name, sizeof t->name, "tg%d%s", (int)t->n_tok, depth);
    else
        snprintf(t->name, sizeof t->name, "b%d tg%d%s", (int)t->n_seq, (int)t->n_tok, depth);
}

typedef struct bench_opts {
    kvl_cli_common com; /* -m, -t, --load, the KV flags */
    int_list lp, ln, ld, lb;
    long long reps;
    out_fmt fmt;
    bool gate, roofline;
} bench_opts;

/* 0 parsed, 1 help printed, 2 usage error (message printed). */
static int parse_args(int argc, char **argv, bench_opts *o) {
    const char *cmd = "bench";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        int r = kvl_cli_common_flag(cmd, argc, argv, &i, &o->com);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        if (!strcmp(a, "--gate") || !strcmp(a, "--roofline")) {
            *(a[2] == 'g' ? &o->gate : &o->roofline) = true;
            continue;
        }
        static const char *const known[] = {"-p",      "--n-prompt", "-n",      "--n-gen", "-d",
                                            "--depth", "-b",         "--batch", "-r",      "--reps",
                                            "-o",      "--output",   NULL};
        if (!kvl_cli_flag_value(cmd, known, NULL, argc, argv, &i, &v))
            return 2;
        bool ok = true;
        if (!strcmp(a, "-p") || !strcmp(a, "--n-prompt"))
            ok = parse_list(a, v, 0, 65536, &o->lp);
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-gen"))
            ok = parse_list(a, v, 0, 65536, &o->ln);
        else if (!strcmp(a, "-d") || !strcmp(a, "--depth"))
            ok = parse_list(a, v, 0, KVL_MAX_CTX, &o->ld);
        else if (!strcmp(a, "-b") || !strcmp(a, "--batch"))
            ok = parse_list(a, v, 1, 256, &o->lb);
        else if (!strcmp(a, "-r") || !strcmp(a, "--reps"))
            ok = kvl_cli_int(cmd, a, v, 1, MAX_REPS, &o->reps);
        else if (!strcmp(v, "text") || !strcmp(v, "md")) /* -o */
            o->fmt = OUT_TEXT;
        else if (!strcmp(v, "json"))
            o->fmt = OUT_JSON;
        else if (!strcmp(v, "csv"))
            o->fmt = OUT_CSV;
        else {
            fprintf(stderr, "kvllm bench: %s: '%s' is not one of text, json, csv\n", a, v);
            ok = false;
        }
        if (!ok)
            return 2;
    }
    return 0;
}

/* The tests, in llama-bench's order (per depth, pp then tg), and the
 * largest batch and context they need. 0, or 2 with a message. */
static int make_tests(const bench_opts *o, test_spec *tests, int *n_out, int32_t *max_tok_out,
                      int32_t *max_ctx_out) {
    const int_list lp = o->lp, ln = o->ln, ld = o->ld, lb = o->lb;
    /* the tests, in llama-bench's order: per depth, pp then tg */
    int n_tests = 0;
    int32_t max_tokens = 1, max_ctx = 1;
    for (int di = 0; di < ld.n; di++) {
        for (int pi = 0; pi < lp.n; pi++)
            if (lp.v[pi] > 0)
                tests[n_tests++] =
                    (test_spec){TEST_PP, (int32_t)lp.v[pi], (int32_t)ld.v[di], 1, ""};
        for (int bi = 0; bi < lb.n; bi++)
            for (int ni = 0; ni < ln.n; ni++)
                if (ln.v[ni] > 0)
                    tests[n_tests++] = (test_spec){TEST_TG, (int32_t)ln.v[ni], (int32_t)ld.v[di],
                                                   (int32_t)lb.v[bi], ""};
    }
    if (n_tests == 0) {
        fprintf(stderr, "kvllm bench: nothing to run: -p and -n are both 0\n");
        return 2;
    }
    for (int i = 0; i < n_tests; i++) {
        test_spec *t = &tests[i];
        long long ctx = (long long)t->depth + t->n_tok + 1;
        if (ctx > KVL_MAX_CTX) {
            fprintf(stderr,
                    "kvllm bench: -d %d with %d tokens needs %lld positions; the limit is %d\n",
                    (int)t->depth, (int)t->n_tok, ctx, KVL_MAX_CTX);
            return 2;
        }
        int32_t need = t->kind == TEST_PP ? t->n_tok : t->n_seq;
        if (t->depth > 0 && need < DEPTH_CHUNK)
            need = t->depth < DEPTH_CHUNK ? t->depth : DEPTH_CHUNK;
        if (need > max_tokens)
            max_tokens = need;
        if (ctx > max_ctx)
            max_ctx = (int32_t)ctx;
        name_test(t);
    }
    *n_out = n_tests;
    *max_tok_out = max_tokens;
    *max_ctx_out = max_ctx;
    return 0;
}

/* Refuse, before any prefill (a deep one takes minutes), a test that needs
 * more positions than the model's context. */
static bool tests_fit(const test_spec *tests, int n_tests, const kvl_model *m) {
    for (int i = 0; i < n_tests; i++) {
        const test_spec *t = &tests[i];
        if ((int64_t)t->depth + t->n_tok > m->hp.ctx_len) {
            fprintf(stderr,
                    "kvllm bench: %s: -d %d with %d tokens needs %lld positions; the model's "
                    "context is %lld\n",
                    t->name, (int)t->depth, (int)t->n_tok, (long long)t->depth + t->n_tok,
                    (long long)m->hp.ctx_len);
            return false;
        }
    }
    return true;
}

int kvl_cli_bench(int argc, char **argv) {
    const char *cmd = "bench";
    bench_opts o = {.lp = {.v = {512}, .n = 1},
                    .ln = {.v = {128}, .n = 1},
                    .ld = {.v = {0}, .n = 1},
                    .lb = {.v = {1}, .n = 1},
                    .reps = 5,
                    .fmt = OUT_TEXT};
    kvl_cli_common_defaults(&o.com);
    int pa = parse_args(argc, argv, &o);
    if (pa)
        return pa == 1 ? 0 : 2;
    static test_spec tests[MAX_TESTS];
    int n_tests = 0;
    int32_t max_tokens = 1, max_ctx = 1;
    if (make_tests(&o, tests, &n_tests, &max_tokens, &max_ctx))
        return 2;
    const char *model_path = kvl_cli_model_path(cmd, &o.com);
    if (!model_path)
        return 2;
    const long long reps = o.reps;
    const out_fmt fmt = o.fmt;
    int rc = 1;
    kvl_error err = {0};
    kvl_model *m = NULL;
    kvl_pool *pool = NULL;
    bench_ctx c = {.rng = SEED, .gate = o.gate, .roofline = o.roofline, .kvo = &o.com.kvo};
    double *ts = NULL;
    kvl_model_params mp = {.tokenizer_path = o.com.tokenizer,
                           .load = o.com.load,
                           .check_tensors = o.com.check_tensors};
    if (kvl_model_load(model_path, &mp, &m, &err) != KVL_OK) {
        fprintf(stderr, "kvllm bench: %s\n", err.msg);
        return 1;
    }
    if (!tests_fit(tests, n_tests, m)) {
        rc = 2;
        goto done;
    }
    const long long huge_bytes = kvl_proc_kb("/proc/self/smaps_rollup", "AnonHugePages");
    const bool weights_private = (m->gguf ? m->gguf->map.anon_len : m->map.anon_len) > 0;
    c.m = m;
    c.max_tokens = max_tokens;
    if (kvl_pool_init((int)o.com.threads, &pool, &err) ||
        kvl_executor_cpu_init(m, pool, max_tokens, max_ctx, &c.fw, &err)) {
        fprintf(stderr, "kvllm bench: %s\n", err.msg);
        goto done;
    }
    c.tok = calloc((size_t)max_tokens, sizeof *c.tok);
    c.seq = calloc((size_t)max_tokens, sizeof *c.seq);
    c.pos = calloc((size_t)max_tokens, sizeof *c.pos);
    c.want = calloc((size_t)max_tokens, sizeof *c.want);
    ts = calloc((size_t)reps, sizeof *ts);
    c.read_gbs = calloc((size_t)reps, sizeof *c.read_gbs);
    c.read_sink = calloc((size_t)kvl_pool_size(pool) * 8, sizeof *c.read_sink);
    c.pool = pool;
    if (!c.tok || !c.seq || !c.pos || !c.want || !ts || !c.read_gbs || !c.read_sink) {
        fprintf(stderr, "kvllm bench: out of memory\n");
        goto done;
    }
    if (!kvl_cli_kv_check(cmd, &o.com.kvo, m, pool))
        goto done;
    int n_threads = kvl_pool_size(pool);
    print_header(fmt);
    for (int i = 0; i < n_tests; i++) {
        test_stats st = {0};
        c.test_i = i;
        c.n_tests = n_tests;
        if (run_test(&c, &tests[i], (int)reps, ts, &st, &err) != KVL_OK) {
            if (fmt == OUT_JSON)
                printf("\n]\n");
            fprintf(stderr, "kvllm bench: %s: %s\n", tests[i].name, err.msg);
            goto done;
        }
        print_row(fmt, i == 0, m, n_threads, &tests[i], (int)reps, ts, &st, c.read_gbs,
                  weights_private, huge_bytes);
        if (fmt == OUT_JSON && i == n_tests - 1)
            printf("\n]\n");
    }
    rc = 0;
done:
    free(ts);
    free(c.read_gbs);
    free(c.read_sink);
    free(c.tok);
    free(c.seq);
    free(c.pos);
    free(c.want);
    kvl_executor_free(c.fw);
    kvl_pool_free(pool);
    kvl_model_free(m);
    return rc;
}
