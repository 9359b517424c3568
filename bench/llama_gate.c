/*
 * llama_gate: llama.cpp's own benchmark loop (what llama-bench times) with
 * the --gate protocol of `kvllm bench`, so that bench/interleave.py can
 * alternate its timed repetitions with kvllm's one by one.
 *
 * Why not llama-bench itself: it cannot pause between repetitions, and whole
 * processes run back to back are seconds apart, while memory bandwidth on
 * these machines moves between ~30 and ~50 GB/s within seconds (pairs of
 * llama-bench and kvllm processes gave ratios from 0.79 to 1.53 in one run).
 * Why not node-llama-cpp: its generation loop samples every token and costs
 * ~12% of decode speed (issue 5). This file times what llama-bench times:
 *   ppN  N random tokens through llama_decode in batches of n_batch (2048)
 *   tgN  N steps of llama_decode on one random token, llama_synchronize
 *        after each, no sampling (llama-bench's test_gen)
 *   bB   (-b B,B,...) B sequences in one llama_batch per step (llama-batched-bench's
 *        shape; llama-bench has no parallel sequences)
 * with llama-bench's context settings: n_batch 2048, n_ubatch 512, F16 KV,
 * flash attention auto, a ggml threadpool with poll 50, one warm-up.
 * A depth D is filled once, untimed; after each repetition the timed
 * positions are removed again (llama_memory_seq_rm), as kvllm bench does.
 *
 * Not built by CMake and never part of CI: it needs llama.cpp's headers and
 * libraries. node-llama-cpp ships the source it was built from as a git
 * bundle; bench/RESULTS.md section 2 has the commands that build llama.cpp
 * from it and this file against it (bench/run_bench.sh --llama-dir does
 * both steps' last part).
 *
 * Output (-o json, the default): a JSON array, one object per test, with
 * the keys of kvllm bench's output that bench/summarize.py reads.
 */
#include "ggml-cpu.h"
#include "llama.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_REPS 1000
#ifndef LG_LLAMA_VERSION
#define LG_LLAMA_VERSION "unknown" /* -DLG_LLAMA_VERSION='"commit"' */
#endif

typedef struct {
    const char *model;
    int p, n, d, r, t;
    int b[8], n_b; /* -b B,B,... */
    int gate;
} opts;

static int parse_int(const char *flag, const char *s, long lo, long hi, int *out) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) {
        fprintf(stderr, "llama_gate: %s: '%s' is not an integer\n", flag, s);
        return -1;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "llama_gate: %s: %ld is outside [%ld, %ld]\n", flag, v, lo, hi);
        return -1;
    }
    *out = (int)v;
    return 0;
}

static int parse_args(int argc, char **argv, opts *o) {
    *o = (opts){.p = 512, .n = 128, .d = 0, .b = {1}, .n_b = 1, .r = 5, .t = 2};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--gate")) {
            o->gate = 1;
            continue;
        }
        if (!strcmp(a, "-o")) {
            if (i + 1 >= argc || strcmp(argv[i + 1], "json")) {
                fprintf(stderr, "llama_gate: -o: only json is written\n");
                return -1;
            }
            i++;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "llama_gate: %s needs a value\n", a);
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(a, "-m"))
            o->model = v;
        else if (!strcmp(a, "-p"))
            rc = parse_int(a, v, 0, 65536, &o->p);
        else if (!strcmp(a, "-n"))
            rc = parse_int(a, v, 0, 65536, &o->n);
        else if (!strcmp(a, "-d"))
            rc = parse_int(a, v, 0, 1 << 20, &o->d);
        else if (!strcmp(a, "-b")) {
            char buf[128];
            snprintf(buf, sizeof buf, "%s", v);
            o->n_b = 0;
            for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok && !rc;
                 tok = strtok_r(NULL, ",", &save)) {
                if (o->n_b == 8) {
                    fprintf(stderr, "llama_gate: -b: more than 8 values\n");
                    return -1;
                }
                rc = parse_int(a, tok, 1, 256, &o->b[o->n_b++]);
            }
            if (!rc && o->n_b == 0) {
                fprintf(stderr, "llama_gate: -b: no value\n");
                return -1;
            }
        } else if (!strcmp(a, "-r"))
            rc = parse_int(a, v, 1, MAX_REPS, &o->r);
        else if (!strcmp(a, "-t"))
            rc = parse_int(a, v, 1, 1024, &o->t);
        else {
            fprintf(stderr,
                    "llama_gate: unknown flag '%s' (flags: -m -p -n -d -b -r -t --gate -o json)\n",
                    a);
            return -1;
        }
        if (rc)
            return -1;
    }
    if (!o->model) {
        fprintf(stderr, "llama_gate: -m MODEL is required\n");
        return -1;
    }
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* splitmix64: random token ids from a fixed seed */
static uint64_t rng_state = 0x6c6c616d61676174ull;
static llama_token rand_token(int n_vocab) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (llama_token)(z % (uint64_t)n_vocab);
}

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

/* Tokens [pos, pos + n) of sequence seq through llama_decode, n_batch at a
 * time; only the last token asks for logits. */
static int decode_run(struct llama_context *ctx, struct llama_batch *bt, int n_batch, int seq,
                      int pos, int n, int n_vocab) {
    for (int done = 0; done < n;) {
        int k = n - done < n_batch ? n - done : n_batch;
        bt->n_tokens = k;
        for (int i = 0; i < k; i++) {
            bt->token[i] = rand_token(n_vocab);
            bt->pos[i] = pos + done + i;
            bt->n_seq_id[i] = 1;
            bt->seq_id[i][0] = seq;
            bt->logits[i] = i == k - 1;
        }
        int rc = llama_decode(ctx, *bt);
        if (rc) {
            fprintf(stderr, "llama_gate: llama_decode returned %d\n", rc);
            return -1;
        }
        done += k;
    }
    llama_synchronize(ctx);
    return 0;
}

/* One decode step: one new token for each of nb sequences at position pos. */
static int decode_step(struct llama_context *ctx, struct llama_batch *bt, int nb, int pos,
                       int n_vocab) {
    bt->n_tokens = nb;
    for (int s = 0; s < nb; s++) {
        bt->token[s] = rand_token(n_vocab);
        bt->pos[s] = pos;
        bt->n_seq_id[s] = 1;
        bt->seq_id[s][0] = s;
        bt->logits[s] = 1;
    }
    int rc = llama_decode(ctx, *bt);
    if (rc) {
        fprintf(stderr, "llama_gate: llama_decode returned %d\n", rc);
        return -1;
    }
    llama_synchronize(ctx);
    return 0;
}

static int wait_gate(const char *name, int rep) {
    char line[256];
    fprintf(stderr, "ready %s %d\n", name, rep);
    fflush(stderr);
    if (!fgets(line, sizeof line, stdin)) {
        fprintf(stderr, "llama_gate: --gate: stdin closed before repetition %d\n", rep);
        return -1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void print_result(const char *name, const char *kind, int n_tok, int depth, int nb,
                         int threads, const double *ts, int reps, int first) {
    double sorted[MAX_REPS], sum = 0, sd = 0;
    for (int i = 0; i < reps; i++) {
        sorted[i] = ts[i];
        sum += ts[i];
    }
    qsort(sorted, (size_t)reps, sizeof sorted[0], cmp_double);
    const double mean = sum / reps;
    for (int i = 0; i < reps; i++)
        sd += (ts[i] - mean) * (ts[i] - mean);
    sd = reps > 1 ? sqrt(sd / (reps - 1)) : 0.0;
    const double med = reps % 2 ? sorted[reps / 2] : (sorted[reps / 2 - 1] + sorted[reps / 2]) / 2;
    printf("%s  {\"engine\": \"llama.cpp\", \"loop\": \"llama_decode (llama-bench)\", "
           "\"llama_cpp\": \"%s\", "
           "\"test\": \"%s\", \"kind\": \"%s\", \"n_tokens\": %d, \"depth\": %d, \"n_seq\": %d, "
           "\"threads\": %d, "
           "\"reps\": %d, \"avg_ts\": %.4f, \"stddev_ts\": %.4f, \"median_ts\": %.4f, \"min_ts\": "
           "%.4f, "
           "\"max_ts\": %.4f, \"samples_ts\": [",
           first ? "[\n" : ",\n", LG_LLAMA_VERSION, name, kind, n_tok, depth, nb, threads, reps,
           mean, sd, med, sorted[0], sorted[reps - 1]);
    for (int i = 0; i < reps; i++)
        printf("%s%.4f", i ? ", " : "", ts[i]);
    printf("]}");
}

int main(int argc, char **argv) {
    opts o;
    if (parse_args(argc, argv, &o))
        return 2;
    llama_log_set(quiet_log, NULL);
    llama_backend_init();

    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(o.model, mp);
    if (!model) {
        fprintf(stderr, "llama_gate: cannot load '%s'\n", o.model);
        return 1;
    }
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct ggml_threadpool_params tpp = ggml_threadpool_params_default(o.t);
    tpp.poll = 50;
    struct ggml_threadpool *tp = ggml_threadpool_new(&tpp);
    if (!tp) {
        fprintf(stderr, "llama_gate: threadpool of %d threads failed\n", o.t);
        return 1;
    }

    /* tests in kvllm bench's order: pp, then tg */
    struct {
        const char *kind;
        int n, nb;
    } tests[9];
    int n_tests = 0;
    if (o.p > 0)
        tests[n_tests++] = (typeof(tests[0])){"pp", o.p, 1};
    for (int i = 0; i < o.n_b && o.n > 0; i++)
        tests[n_tests++] = (typeof(tests[0])){"tg", o.n, o.b[i]};
    int first = 1, status = 0;
    for (int ti = 0; ti < n_tests && !status; ti++) {
        const int n = tests[ti].n, nb = tests[ti].nb, is_pp = tests[ti].kind[0] == 'p';
        char name[64];
        const char *dsuf = o.d > 0 ? "@d" : "";
        char dnum[16] = "";
        if (o.d > 0)
            snprintf(dnum, sizeof dnum, "%d", o.d);
        if (is_pp)
            snprintf(name, sizeof name, "pp%d%s%s", n, dsuf, dnum);
        else if (nb == 1)
            snprintf(name, sizeof name, "tg%d%s%s", n, dsuf, dnum);
        else
            snprintf(name, sizeof name, "b%d tg%d%s%s", nb, n, dsuf, dnum);

        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = (uint32_t)((o.d + n + 8) * nb);
        cp.n_batch = 2048;
        cp.n_ubatch = 512;
        cp.n_seq_max = (uint32_t)nb;
        cp.n_threads = cp.n_threads_batch = o.t;
        cp.type_k = cp.type_v = GGML_TYPE_F16;
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_AUTO;
        cp.no_perf = true;
        struct llama_context *ctx = llama_init_from_model(model, cp);
        if (!ctx) {
            fprintf(stderr, "llama_gate: context for %s failed\n", name);
            status = 1;
            break;
        }
        llama_attach_threadpool(ctx, tp, NULL);
        llama_memory_t mem = llama_get_memory(ctx);
        const int cap = nb > 2048 ? nb : 2048;
        struct llama_batch bt = llama_batch_init(cap, 0, nb);
        double ts[MAX_REPS];
        /* depth (untimed) for every sequence, then one warm-up step */
        for (int s = 0; s < nb && !status; s++)
            status = o.d > 0 ? decode_run(ctx, &bt, 2048, s, 0, o.d, n_vocab) : 0;
        if (!status)
            status = is_pp ? decode_run(ctx, &bt, 2048, 0, o.d, n < 32 ? n : 32, n_vocab)
                           : decode_step(ctx, &bt, nb, o.d, n_vocab);
        for (int s = 0; s < nb; s++)
            llama_memory_seq_rm(mem, s, o.d, -1);
        for (int r = 0; r < o.r && !status; r++) {
            if (o.gate && wait_gate(name, r + 1)) {
                status = 1;
                break;
            }
            const double t0 = now_s();
            if (is_pp) {
                status = decode_run(ctx, &bt, 2048, 0, o.d, n, n_vocab);
            } else {
                for (int i = 0; i < n && !status; i++)
                    status = decode_step(ctx, &bt, nb, o.d + i, n_vocab);
            }
            const double sec = now_s() - t0;
            ts[r] = (double)n * nb / sec;
            if (o.gate) {
                fprintf(stderr, "done %s %d %.4f\n", name, r + 1, ts[r]);
                fflush(stderr);
            }
            for (int s = 0; s < nb; s++)
                llama_memory_seq_rm(mem, s, o.d, -1);
        }
        if (!status) {
            print_result(name, tests[ti].kind, n, o.d, nb, o.t, ts, o.r, first);
            first = 0;
        }
        llama_batch_free(bt);
        llama_free(ctx);
    }
    if (!first)
        printf("\n]\n");
    ggml_threadpool_free(tp);
    llama_model_free(model);
    llama_backend_free();
    return status;
}
