/*
 * kvllm bench serve: a serving workload generator that drives the engine
 * in-process through the public API only (kvllm.h), and reports what a
 * user of `vllm bench serve` reads, under the same names.
 *
 * The loop is caller-driven (kvl_engine_step, then kvl_engine_poll until
 * the queue is empty), not the engine thread: it sees every step, so it can
 * time each step and read how many sequences decoded in it (the batch size
 * vs TPOT curve), which a poll loop beside kvl_engine_start could not.
 *
 *     t0 ---- a0 --- a1 -- a2 ------------ a3 ...   arrivals (Poisson, gamma, or all at 0)
 *     loop: submit every request whose arrival time has passed
 *           (KVL_E_BUSY: it stays pending and is tried again after the step)
 *           when nothing is open, sleep until the next arrival
 *           step; every event polled is stamped with the time the step ended
 *
 * Latencies are measured from the request's scheduled arrival, as a client
 * would see them: a request that arrives during a step waits for it. Under
 * --max-concurrency (and for chat turns) the arrival is when a client sends
 * it, not when it was generated.
 * TTFT = first token - arrival; TPOT = (E2EL - TTFT) / (output tokens - 1);
 * ITL = the gaps between a request's successive tokens; E2EL = final event
 * - arrival. Output tokens are the engine's completion_tokens, which count
 * a sampled end-of-sequence token as vLLM does; the EOS comes with the final
 * event (same step), so every output token has a time.
 *
 * Outputs are forced to their length only as far as the engine allows: it
 * ends a sequence at EOS, and the public API has no ignore_eos. Requests
 * sample at --temp (default 1.0, no top-k/top-p/min-p cut) with seed
 * --seed + i; early stops are counted and the actual output tokens are
 * reported and used in every rate.
 *
 * Prompts are random token ids (BOS first, then ids drawn uniformly from
 * the vocabulary, never BOS or EOS), one seeded stream per request.
 *
 * Nothing here calls exit(): every error returns a status to main.
 */
#include "cli/bench_serve.h"
#include "cli/bench_workload.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- options -------------------------------------------------------------- */

static const char *const CMD = KVL_SERVE_CMD;

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: kvllm bench serve [-m MODEL] [--num-prompts N] [--request-rate R]\n"
        "                         [--input-len N|A:B] [--output-len N|A:B] [--dataset FILE]\n"
        "                         [engine flags] [-o text|json] [--svg FILE]\n"
        "\n"
        "Drives the serving engine in-process with a generated workload and reports\n"
        "throughput and latency percentiles under the names `vllm bench serve` uses.\n"
        "Steps run on this thread (kvl_engine_step); each step that only decoded is\n"
        "timed for the batch size vs TPOT curve.\n"
        "\n"
        "Workload:\n"
        "  -m, --model PATH        GGUF or llama2.c checkpoint (default: shipped "
        "stories260K.gguf)\n"
        "      --num-prompts N     requests, 1..1000000 (default 16; with --dataset, its lines)\n"
        "      --request-rate R    arrivals per second, (0, 1e6], or inf: all at t = 0\n"
        "                          (default inf)\n"
        "      --burstiness B      gamma shape of the arrival gaps, [0.01, 100]: 1 = Poisson\n"
        "                          (default), < 1 burstier, > 1 more regular\n"
        "      --max-concurrency N at most N requests submitted and not finished, 1..1000000;\n"
        "                          a request's latencies count from when it is submitted\n"
        "                          (default: no limit)\n"
        "      --input-len L       prompt tokens (BOS + random ids): N, or A:B uniform\n"
        "                          (default 128)\n"
        "      --output-len L      max_tokens of each request: N, or A:B uniform (default 64)\n"
        "      --dataset FILE      lines of \"prompt_len output_len\" ('#' comments), used in\n"
        "                          order and cycled; replaces --input-len/--output-len\n"
        "      --shared-prefix N   every prompt starts with the same N tokens (a system\n"
        "                          prompt: what the prefix cache serves)\n"
        "      --chat-sessions S   multi-turn chat: S sessions of --chat-turns T turns each,\n"
        "      --chat-turns T      interleaved turn by turn; every turn resends the session's\n"
        "                          history (system prompt, earlier turns and the model's\n"
        "                          answers) plus --input-len new tokens; a turn is sent when\n"
        "                          its previous answer ends. Per-turn TTFT is reported\n"
        "      --ignore-eos        every output runs to its length\n"
        "      --no-prefix-cache   the engine without its prefix cache, for comparison\n"
        "      --no-warmup         no test request before the run (by default one random\n"
        "                          64-token prompt, 2 tokens out, runs first, as vllm bench\n"
        "                          serve's initial test prompt; it touches no prefix cache\n"
        "                          and its steps are not reported)\n"
        "      --dump-workload FILE  write the requests as JSON lines (arrival_s, prompt ids,\n"
        "                          text, max_tokens) for bench/serve_load and exit\n"
        "      --temp T            sampling temperature, [0, 100] (default 1.0; outputs end\n"
        "                          early when the model samples EOS: reported)\n"
        "  -s, --seed N            seed of arrivals, lengths, prompts and sampling (default 0)\n"
        "  -o, --output FMT        text (default) or json\n"
        "      --svg FILE          write the batch size vs TPOT chart\n"
        "      --steps FILE        one line per step that ran tokens, the columns of\n"
        "                          `kvllm sim --steps`: end_s step_s running tokens prefill\n"
        "                          decode (running: sequences running after the step)\n"
        "\n"
        "Engine:\n"
        "  -t, --threads N         worker threads, 1..512 (default: one per core)\n"
        "  -c, --ctx N             positions per sequence (default: the model's context)\n"
        "      --max-seqs N        sequences decoding at once, 1..%d (default 16)\n"
        "      --max-batch-tokens N  tokens per step, 1..65536 (default 256)\n"
        "      --preempt MODE      auto (default), recompute or swap\n"
        "      --swap-mem SIZE     swap area for preempted sequences (default 0: none)\n"
        "      --swap-file PATH    back the swap area with a file\n" KVL_CLI_LOAD_USAGE
        "  -h, --help\n"
        "\nKV cache:\n",
        KVL_KV_MAX_SEQS);
    kvl_cli_kv_usage(f);
}

/* "N" or "A:B" with lo <= A <= B <= hi. */
static bool parse_len(const char *flag, const char *v, long long lo, long long hi, len_range *out) {
    const char *colon = strchr(v, ':');
    if (!colon) {
        if (!kvl_cli_int(CMD, flag, v, lo, hi, &out->lo))
            return false;
        out->hi = out->lo;
        return true;
    }
    char a[32];
    size_t n = (size_t)(colon - v);
    if (n >= sizeof a) {
        fprintf(stderr, "kvllm %s: %s: '%s' is not N or A:B\n", CMD, flag, v);
        return false;
    }
    memcpy(a, v, n);
    a[n] = '\0';
    if (!kvl_cli_int(CMD, flag, a, lo, hi, &out->lo) ||
        !kvl_cli_int(CMD, flag, colon + 1, lo, hi, &out->hi))
        return false;
    if (out->lo > out->hi) {
        fprintf(stderr, "kvllm %s: %s: '%s': %lld > %lld (A:B needs A <= B)\n", CMD, flag, v,
                out->lo, out->hi);
        return false;
    }
    return true;
}

/* 1 consumed, 0 not one of ours, -1 bad value (message printed). */
static int parse_flag(serve_opts *o, const char *a, const char *v) {
    long long iv;
    double fv;
#define INT_FLAG(lo, hi, dst)                                                                      \
    do {                                                                                           \
        if (!kvl_cli_int(CMD, a, v, lo, hi, &iv))                                                  \
            return -1;                                                                             \
        dst = iv;                                                                                  \
    } while (0)
    if (!strcmp(a, "-m") || !strcmp(a, "--model"))
        o->model = v;
    else if (!strcmp(a, "--dataset"))
        o->dataset = v;
    else if (!strcmp(a, "--svg"))
        o->svg = v;
    else if (!strcmp(a, "--dump-workload"))
        o->dump = v;
    else if (!strcmp(a, "--steps"))
        o->steps = v;
    else if (!strcmp(a, "--swap-file"))
        o->swap_file = v;
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
        if (strcmp(v, "text") && strcmp(v, "json")) {
            fprintf(stderr, "kvllm %s: %s: '%s' is not text or json\n", CMD, a, v);
            return -1;
        }
        o->json = !strcmp(v, "json");
    } else if (!strcmp(a, "--num-prompts"))
        INT_FLAG(1, 1000000, o->n_prompts);
    else if (!strcmp(a, "--max-concurrency"))
        INT_FLAG(1, 1000000, o->max_conc);
    else if (!strcmp(a, "-t") || !strcmp(a, "--threads"))
        INT_FLAG(1, 512, o->threads);
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
        INT_FLAG(1, KVL_MAX_CTX, o->ctx);
    else if (!strcmp(a, "--shared-prefix"))
        INT_FLAG(0, KVL_MAX_CTX, o->shared_prefix);
    else if (!strcmp(a, "--chat-sessions"))
        INT_FLAG(1, 4096, o->chat_sessions);
    else if (!strcmp(a, "--chat-turns"))
        INT_FLAG(1, 4096, o->chat_turns);
    else if (!strcmp(a, "--max-seqs"))
        INT_FLAG(1, KVL_KV_MAX_SEQS, o->max_seqs);
    else if (!strcmp(a, "--max-batch-tokens"))
        INT_FLAG(1, 65536, o->batch_tokens);
    else if (!strcmp(a, "-s") || !strcmp(a, "--seed"))
        INT_FLAG(0, INT64_MAX, o->seed);
    else if (!strcmp(a, "--input-len")) {
        if (!parse_len(a, v, 1, KVL_MAX_CTX, &o->in))
            return -1;
    } else if (!strcmp(a, "--output-len")) {
        if (!parse_len(a, v, 1, KVL_MAX_CTX, &o->out))
            return -1;
    } else if (!strcmp(a, "--request-rate")) {
        if (!strcmp(v, "inf"))
            o->rate = INFINITY;
        else if (!kvl_cli_float(CMD, a, v, 1e-6, 1e6, &o->rate))
            return -1;
    } else if (!strcmp(a, "--burstiness")) {
        if (!kvl_cli_float(CMD, a, v, 0.01, 100, &o->burstiness))
            return -1;
    } else if (!strcmp(a, "--temp")) {
        if (!kvl_cli_float(CMD, a, v, 0, 100, &fv))
            return -1;
        o->temp = fv;
    } else if (!strcmp(a, "--swap-mem")) {
        if (!kvl_cli_bytes(CMD, a, v, &o->swap_mem))
            return -1;
    } else if (!strcmp(a, "--preempt")) {
        if (!kvl_preempt_mode_parse(v, &o->preempt)) {
            fprintf(stderr, "kvllm %s: --preempt: '%s' is not auto, recompute or swap\n", CMD, v);
            return -1;
        }
    } else
        return 0;
    return 1;
#undef INT_FLAG
}

static const char *const value_flags[] = {"-m",
                                          "--model",
                                          "--dataset",
                                          "--svg",
                                          "--swap-file",
                                          "-o",
                                          "--output",
                                          "--num-prompts",
                                          "--max-concurrency",
                                          "-t",
                                          "--threads",
                                          "-c",
                                          "--ctx",
                                          "--max-seqs",
                                          "--max-batch-tokens",
                                          "-s",
                                          "--seed",
                                          "--input-len",
                                          "--output-len",
                                          "--request-rate",
                                          "--burstiness",
                                          "--temp",
                                          "--shared-prefix",
                                          "--swap-mem",
                                          "--preempt",
                                          "--chat-sessions",
                                          "--chat-turns",
                                          "--dump-workload",
                                          "--steps"};

/* 0 parsed, 1 help printed, 2 usage error (message printed). */
static int parse_args(int argc, char **argv, serve_opts *o) {
    bool len_set = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--ignore-eos") || !strcmp(a, "--no-prefix-cache")) {
            *(a[2] == 'i' ? &o->ignore_eos : &o->no_prefix_cache) = true;
            continue;
        }
        if (!strcmp(a, "--no-warmup")) {
            o->no_warmup = true;
            continue;
        }
        if (!strcmp(a, "--kv-check")) {
            fprintf(stderr,
                    "kvllm %s: --kv-check is not supported here (use kvllm run "
                    "--kv-check)\n",
                    CMD);
            return 2;
        }
        int r = kvl_cli_load_flag(CMD, argc, argv, &i, &o->load);
        if (r == 0)
            r = kvl_cli_kv_flag(CMD, argc, argv, &i, &o->kvo);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        bool known = false;
        for (size_t k = 0; k < sizeof value_flags / sizeof value_flags[0] && !known; k++)
            known = !strcmp(a, value_flags[k]);
        if (!known) {
            if (a[0] == '-' && a[1])
                fprintf(stderr, "kvllm %s: unknown flag '%s' (see kvllm bench serve --help)\n", CMD,
                        a);
            else
                fprintf(stderr, "kvllm %s: unexpected argument '%s'\n", CMD, a);
            return 2;
        }
        if (!kvl_cli_value(CMD, argc, argv, &i, &v) || parse_flag(o, a, v) < 0)
            return 2;
        len_set |= !strcmp(a, "--input-len") || !strcmp(a, "--output-len");
    }
    if ((o->chat_sessions > 0) != (o->chat_turns > 0) ||
        (o->chat_sessions && (o->dataset || o->n_prompts || isfinite(o->rate)))) {
        fprintf(stderr,
                "kvllm %s: --chat-sessions and --chat-turns go together, and replace --dataset, "
                "--num-prompts and --request-rate (turns are sent as answers come)\n",
                CMD);
        return 2;
    }
    if (o->chat_sessions && o->dump) {
        fprintf(stderr,
                "kvllm %s: --dump-workload cannot write a chat workload (each turn holds "
                "the answers before it); bench/serve_load.py --turns builds chats itself\n",
                CMD);
        return 2;
    }
    if (o->dataset && len_set) {
        fprintf(stderr, "kvllm %s: --dataset gives the lengths; drop --input-len/--output-len\n",
                CMD);
        return 2;
    }
    return 0;
}

/* ---- random numbers: splitmix64 ------------------------------------------- */

static uint64_t rng_next(uint64_t *s) { return kvl_wl_rng_next(s); }

/* Uniform in (0, 1]. */
static double rng_unit(uint64_t *s) {
    return ((double)(rng_next(s) >> 11) + 1.0) / 9007199254740992.0;
}

static long long rng_range(uint64_t *s, long long lo, long long hi) {
    return kvl_wl_rng_range(s, lo, hi);
}

static double rng_normal(uint64_t *s) {
    return sqrt(-2.0 * log(rng_unit(s))) * cos(6.283185307179586 * rng_unit(s));
}

/* Gamma(shape k, scale 1): Marsaglia and Tsang; k < 1 by boosting. */
static double rng_gamma(uint64_t *s, double k) {
    if (k < 1)
        return rng_gamma(s, k + 1) * pow(rng_unit(s), 1.0 / k);
    double d = k - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = rng_normal(s), v = 1 + c * x;
        if (v <= 0)
            continue;
        v = v * v * v;
        double u = rng_unit(s);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return d * v;
    }
}

/* ---- the workload ----------------------------------------------------------- */

typedef struct dataset {
    int32_t *pairs; /* (n, 2) */
    size_t n;
} dataset;

/* Read "prompt_len output_len" lines. Errors name the file and line. */
static bool read_dataset(const char *path, dataset *d) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "kvllm %s: --dataset: cannot open '%s': %s\n", CMD, path, strerror(errno));
        return false;
    }
    size_t cap = 0;
    char line[256];
    long lineno = 0;
    bool ok = true;
    while (ok && fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            fprintf(stderr, "kvllm %s: --dataset: %s:%ld: line longer than %zu bytes\n", CMD, path,
                    lineno, sizeof line - 2);
            ok = false;
            break;
        }
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || !*p)
            continue;
        char *e1, *e2;
        errno = 0;
        long long a = strtoll(p, &e1, 10), b = e1 != p ? strtoll(e1, &e2, 10) : 0;
        if (e1 == p || e2 == e1 || errno)
            ok = false;
        else
            while (*e2 == ' ' || *e2 == '\t' || *e2 == '\r' || *e2 == '\n')
                e2++;
        if (!ok || *e2) {
            fprintf(stderr, "kvllm %s: --dataset: %s:%ld: not \"prompt_len output_len\"\n", CMD,
                    path, lineno);
            ok = false;
            break;
        }
        if (a < 1 || a > KVL_MAX_CTX || b < 1 || b > KVL_MAX_CTX) {
            fprintf(stderr, "kvllm %s: --dataset: %s:%ld: lengths %lld %lld outside [1, %d]\n", CMD,
                    path, lineno, a, b, KVL_MAX_CTX);
            ok = false;
            break;
        }
        if (d->n == 1000000) {
            fprintf(stderr, "kvllm %s: --dataset: %s: more than 1000000 pairs\n", CMD, path);
            ok = false;
            break;
        }
        if (d->n == cap) {
            cap = cap ? cap * 2 : 256;
            int32_t *t = realloc(d->pairs, cap * 2 * sizeof *t);
            if (!t) {
                fprintf(stderr, "kvllm %s: out of memory\n", CMD);
                ok = false;
                break;
            }
            d->pairs = t;
        }
        d->pairs[2 * d->n] = (int32_t)a;
        d->pairs[2 * d->n + 1] = (int32_t)b;
        d->n++;
    }
    if (ok && ferror(f)) {
        fprintf(stderr, "kvllm %s: --dataset: read error on '%s'\n", CMD, path);
        ok = false;
    }
    if (ok && d->n == 0) {
        fprintf(stderr, "kvllm %s: --dataset: '%s' has no \"prompt_len output_len\" line\n", CMD,
                path);
        ok = false;
    }
    fclose(f);
    return ok;
}

/* Lengths and arrival times of every request, from one seeded stream.
 * Returns 2 (usage) when a request cannot fit the context. */
static int make_workload(const serve_opts *o, const dataset *d, int32_t max_ctx, sreq *rq,
                         size_t n) {
    uint64_t s = (uint64_t)o->seed ^ 0x5e12e5e12eull;
    double t = 0;
    for (size_t i = 0; i < n; i++) {
        sreq *r = &rq[i];
        if (d->n) {
            r->in_len = d->pairs[2 * (i % d->n)];
            r->out_len = d->pairs[2 * (i % d->n) + 1];
        } else {
            r->in_len = (int32_t)rng_range(&s, o->in.lo, o->in.hi);
            r->out_len = (int32_t)rng_range(&s, o->out.lo, o->out.hi);
        }
        if ((long long)r->in_len + r->out_len > max_ctx) {
            fprintf(stderr,
                    "kvllm %s: request %zu: input %d + output %d = %lld tokens > the context %d "
                    "(%s)\n",
                    CMD, i, r->in_len, r->out_len, (long long)r->in_len + r->out_len, max_ctx,
                    d->n ? "--dataset" : "--input-len, --output-len");
            return 2;
        }
        r->user_len = r->in_len;
        r->t_arrival = t;
        if (isfinite(o->rate)) /* gamma gaps of mean 1/rate; shape 1 is Poisson */
            t += rng_gamma(&s, o->burstiness) / (o->burstiness * o->rate);
    }
    return 0;
}

/* Chat: each session's whole conversation must fit the context. */
static int check_chat(const serve_opts *o, const sreq *rq, size_t n, int32_t max_ctx) {
    for (size_t ses = 0; ses < (size_t)o->chat_sessions; ses++) {
        int64_t user = 0, ans = 0;
        for (size_t i = ses; i < n; i += (size_t)o->chat_sessions) {
            user += rq[i].user_len;
            ans += rq[i].out_len;
        }
        int64_t len = kvl_wl_chat_len(o->shared_prefix, user, ans);
        if (len > max_ctx) {
            fprintf(stderr,
                    "kvllm %s: chat session %zu: 1 + system %lld + user %lld + answers %lld = %lld "
                    "tokens > the context %d (--chat-turns, --input-len, --output-len, -c)\n",
                    CMD, ses, o->shared_prefix, (long long)user, (long long)ans, (long long)len,
                    max_ctx);
            return 2;
        }
    }
    return 0;
}

/* Request i's prompt into toks (the buffer of max_prompt tokens); its
 * length. Chat turns extend their session's history (bench_workload.h). */
static int32_t build_prompt(serve_run *sr, size_t i, int32_t *toks) {
    const serve_opts *o = sr->o;
    sreq *r = &sr->rq[i];
    if (!o->chat_sessions) {
        kvl_wl_prompt((uint64_t)o->seed, o->shared_prefix, &sr->mi, i, toks, r->in_len);
        return r->in_len;
    }
    size_t ses = i % (size_t)o->chat_sessions;
    const sreq *prev = i >= (size_t)o->chat_sessions ? &sr->rq[i - (size_t)o->chat_sessions] : NULL;
    int32_t n = kvl_wl_chat_prompt((uint64_t)o->seed, o->shared_prefix, &sr->mi, i, sr->hist[ses],
                                   sr->n_hist[ses], prev ? prev->answer : NULL,
                                   prev ? prev->n_answer : 0, r->user_len);
    sr->n_hist[ses] = n;
    memcpy(toks, sr->hist[ses], (size_t)n * sizeof *toks);
    r->in_len = n;
    return n;
}

/* A chat turn can go once its session's previous turn ended. */
static bool ready(const serve_run *sr, size_t i) {
    size_t s = (size_t)sr->o->chat_sessions;
    return !s || i < s || sr->rq[i - s].done;
}

/* --dump-workload: one JSON object per request, in arrival order: what
 * bench/serve_load replays against an HTTP server. "text" is the prompt
 * after BOS, detokenized, with bytes outside printable ASCII as spaces
 * (a string any server accepts; for workloads sent as text). */
static int dump_workload(const serve_opts *o, const kvl_model *m, const kvl_model_info *mi,
                         const sreq *rq, size_t n) {
    FILE *f = fopen(o->dump, "w");
    if (!f) {
        fprintf(stderr, "kvllm %s: --dump-workload: cannot open '%s': %s\n", CMD, o->dump,
                strerror(errno));
        return 1;
    }
    int32_t *toks = malloc(KVL_MAX_CTX * sizeof *toks);
    char *text = malloc((size_t)KVL_MAX_CTX * 64 + 1);
    int rc = toks && text ? 0 : 1;
    for (size_t i = 0; !rc && i < n; i++) {
        kvl_wl_prompt((uint64_t)o->seed, o->shared_prefix, mi, i, toks, rq[i].in_len);
        size_t len = 0;
        kvl_error err;
        if (kvl_detokenize(m, toks + 1, (size_t)rq[i].in_len - 1, text, (size_t)KVL_MAX_CTX * 64,
                           &len, &err) != KVL_OK) {
            fprintf(stderr, "kvllm %s: --dump-workload: %s\n", CMD, err.msg);
            rc = 1;
            break;
        }
        fprintf(f, "{\"arrival_s\":%.6f,\"max_tokens\":%d,\"prompt\":[", rq[i].t_arrival,
                rq[i].out_len);
        for (int32_t k = 0; k < rq[i].in_len; k++)
            fprintf(f, "%s%d", k ? "," : "", toks[k]);
        fputs("],\"text\":\"", f);
        for (size_t k = 0; k < len; k++) {
            unsigned char c = (unsigned char)text[k];
            if (c == '"' || c == '\\')
                fputc('\\', f);
            fputc(c >= 0x20 && c < 0x7f ? c : ' ', f);
        }
        fputs("\"}\n", f);
    }
    free(toks);
    free(text);
    if (fclose(f) != 0 && !rc) {
        fprintf(stderr, "kvllm %s: --dump-workload: write error on '%s'\n", CMD, o->dump);
        rc = 1;
    }
    return rc;
}

/* ---- measurement ------------------------------------------------------------ */

/* Give request r one more output token at time t (seconds after t0). */
static void stamp(serve_run *sr, sreq *r, double t) {
    if (r->n_times == 0)
        r->t_first = t;
    else if (sr->n_itl < sr->itl_cap)
        sr->itl[sr->n_itl++] = t - r->t_last;
    r->t_last = t;
    r->n_times++;
}

static void on_event(serve_run *sr, const kvl_event *ev, double t) {
    if (ev->tag >= sr->n)
        return; /* not ours: every request is submitted with its index as tag */
    sreq *r = &sr->rq[ev->tag];
    if (ev->type == KVL_EV_TOKEN) {
        sr->n_token_events++;
        stamp(sr, r, t);
        if (r->answer && r->n_answer < r->out_len)
            r->answer[r->n_answer++] = ev->token;
        return;
    }
    if (ev->type != KVL_EV_FINAL)
        return;
    r->n_out = ev->usage.completion_tokens;
    while (r->n_times < r->n_out) /* a sampled EOS: no token event, counted in the usage */
        stamp(sr, r, t);
    r->t_end = t;
    r->reason = ev->reason;
    r->n_preempt = ev->usage.n_preemptions;
    r->recomputed = ev->usage.recomputed_tokens;
    r->cached = ev->usage.cached_tokens;
    r->done = true;
    if (ev->reason == KVL_FINISH_ERROR || ev->reason == KVL_FINISH_CANCELLED) {
        r->failed = true;
        if (!sr->n_failed++)
            snprintf(sr->first_error, sizeof sr->first_error, "request %llu: %s: %s",
                     (unsigned long long)ev->tag, kvl_finish_reason_str(ev->reason), ev->message);
    }
    sr->n_done++;
    sr->n_open--;
}

/* Submit request i. 0 accepted, 1 busy (retry later), -1 refused (counted
 * as failed and done). */
static int submit_one(serve_run *sr, size_t i, int32_t *toks) {
    sreq *r = &sr->rq[i];
    int32_t n_prompt = build_prompt(sr, i, toks);
    kvl_request_params rp = kvl_request_defaults();
    rp.prompt_tokens = toks;
    rp.n_prompt_tokens = (size_t)n_prompt;
    rp.session = sr->o->chat_sessions ? 1 + i % (size_t)sr->o->chat_sessions : 0;
    rp.max_tokens = r->out_len;
    rp.temperature = (float)sr->o->temp;
    rp.top_k = 0;
    rp.top_p = 1;
    rp.min_p = 0;
    rp.seed = (uint64_t)sr->o->seed + i;
    rp.tag = i;
    rp.ignore_eos = sr->o->ignore_eos;
    uint64_t id;
    kvl_error err = {0};
    kvl_status st = kvl_engine_submit(sr->e, &rp, &id, &err);
    if (st == KVL_E_BUSY)
        return 1;
    r->submitted = true;
    if (st) {
        r->done = r->failed = true;
        sr->n_done++;
        if (!sr->n_failed++)
            snprintf(sr->first_error, sizeof sr->first_error, "request %zu refused: %s", i,
                     err.msg);
        return -1;
    }
    sr->n_open++;
    if (sr->n_open > sr->peak_open)
        sr->peak_open = sr->n_open;
    return 0;
}

static void sleep_s(double s) {
    if (s <= 0)
        return;
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/* vllm bench serve sends one test prompt before its run; so does this, to
 * take the cold start (the first touches of the weights, scratch buffers
 * and KV pages, the pool's first runs) out of the first request's TTFT. A
 * random prompt of another seed, 2 tokens out; on the paged layout under
 * the window policy with a budget past its length (nothing evicted), so it
 * takes no prefix-cache hits and publishes no blocks. The engine steps and
 * prefix lookups it counts are taken off the report (sr->base). */
static bool warm_up(serve_run *sr) {
    int32_t toks[64];
    int32_t n = sr->cfg.max_ctx - 2 < 64 ? sr->cfg.max_ctx - 2 : 64;
    if (n < 1)
        n = 1;
    kvl_wl_prompt((uint64_t)sr->o->seed ^ 0x5741524d55500000ull, 0, &sr->mi, 0, toks, n);
    kvl_request_params rp = kvl_request_defaults();
    rp.prompt_tokens = toks;
    rp.n_prompt_tokens = (size_t)n;
    rp.max_tokens = 2;
    rp.ignore_eos = true;
    if (sr->cfg.kv_layout == KVL_KV_LAYOUT_PAGED) {
        rp.kv_policy.kind = KVL_KV_POLICY_WINDOW;
        rp.kv_policy.budget_tokens = sr->cfg.max_ctx;
    }
    uint64_t id;
    kvl_error err = {0};
    if (kvl_engine_submit(sr->e, &rp, &id, &err)) {
        fprintf(stderr, "kvllm %s: warm-up request refused: %s\n", CMD, err.msg);
        return false;
    }
    kvl_event ev[8];
    bool done = false;
    for (int step = 0; !done && step < 1000; step++) {
        int32_t nt = 0;
        if (kvl_engine_step(sr->e, &nt, &err)) {
            fprintf(stderr, "kvllm %s: warm-up: %s\n", CMD, err.msg);
            return false;
        }
        int k;
        while ((k = kvl_engine_poll(sr->e, ev, 8, 0)) > 0)
            for (int j = 0; j < k; j++)
                done = done || ev[j].type == KVL_EV_FINAL;
    }
    if (!done) {
        fprintf(stderr, "kvllm %s: warm-up request did not end in 1000 steps\n", CMD);
        return false;
    }
    kvl_engine_get_stats(sr->e, &sr->base);
    return true;
}

/* One step, timed, and its events. false on an engine failure. */
static bool step_once(serve_run *sr, double t0, kvl_engine_stats *prev, kvl_event *ev, int max_ev,
                      bool *progress) {
    kvl_error err = {0};
    int32_t nt = 0;
    double ts = kvl_now();
    if (kvl_engine_step(sr->e, &nt, &err)) {
        fprintf(stderr, "kvllm %s: %s\n", CMD, err.msg);
        return false;
    }
    double te = kvl_now();
    kvl_engine_stats st;
    kvl_engine_get_stats(sr->e, &st);
    if (nt > 0) {
        int64_t dec = st.tokens_decoded - prev->tokens_decoded;
        int64_t pre = st.tokens_prefilled - prev->tokens_prefilled;
        step_bucket *b = pre == 0 && dec > 0 && dec < sr->n_buckets ? &sr->decode[dec] : &sr->mixed;
        b->n_steps++;
        b->sum_s += te - ts;
        if (sr->steps)
            fprintf(sr->steps, "%.6f %.6f %d %lld %lld %lld\n", te - t0, te - ts, (int)st.n_running,
                    (long long)(pre + dec), (long long)pre, (long long)dec);
    }
    *prev = st;
    *progress = nt > 0;
    int k;
    while ((k = kvl_engine_poll(sr->e, ev, max_ev, 0)) > 0) {
        *progress = true;
        for (int j = 0; j < k; j++)
            on_event(sr, &ev[j], te - t0);
    }
    return true;
}

/* Submit on schedule, step, poll, until every request is done.
 * Returns 0, or 1 on an engine failure or no progress. */
static int drive(serve_run *sr) {
    const serve_opts *o = sr->o;
    int32_t max_in = o->chat_sessions ? sr->cfg.max_ctx : 1;
    for (size_t i = 0; i < sr->n; i++)
        max_in = sr->rq[i].in_len > max_in ? sr->rq[i].in_len : max_in;
    enum { MAX_EV = 256 };
    int32_t *toks = malloc((size_t)max_in * sizeof *toks);
    kvl_event *ev = malloc(MAX_EV * sizeof *ev);
    if (!toks || !ev) {
        free(toks);
        free(ev);
        fprintf(stderr, "kvllm %s: out of memory\n", CMD);
        return 1;
    }
    if (!o->no_warmup && !warm_up(sr)) {
        free(toks);
        free(ev);
        return 1;
    }
    kvl_engine_stats prev;
    kvl_engine_get_stats(sr->e, &prev);
    size_t next = 0;
    int64_t stalled = 0;
    int rc = 0;
    double t0 = kvl_now();
    while (sr->n_done < sr->n && rc == 0) {
        double now = kvl_now() - t0;
        bool busy = false;
        while (next < sr->n && sr->rq[next].t_arrival <= now && ready(sr, next) &&
               (o->max_conc == 0 || sr->n_open < (size_t)o->max_conc)) {
            /* a chat turn is sent when it can run (after its previous answer), and
             * under --max-concurrency a request when a client is free: its
             * latencies count from then, as vllm bench serve times them */
            if (o->chat_sessions || o->max_conc)
                sr->rq[next].t_arrival = now;
            if (submit_one(sr, next, toks) == 1) {
                busy = true;
                break;
            }
            next++;
        }
        if (sr->n_open == 0) {
            if (busy || next == sr->n) {
                fprintf(stderr, "kvllm %s: the engine refuses work with nothing open\n", CMD);
                rc = 1;
            } else {
                sleep_s(sr->rq[next].t_arrival - (kvl_now() - t0));
            }
            continue;
        }
        bool progress = false;
        if (!step_once(sr, t0, &prev, ev, MAX_EV, &progress))
            rc = 1;
        stalled = progress ? 0 : stalled + 1;
        if (stalled > 100000) {
            fprintf(stderr, "kvllm %s: no progress in %lld steps with %zu requests open\n", CMD,
                    (long long)stalled, sr->n_open);
            rc = 1;
        }
    }
    for (size_t i = 0; i < sr->n; i++)
        if (sr->rq[i].done && !sr->rq[i].failed && sr->rq[i].t_end > sr->duration)
            sr->duration = sr->rq[i].t_end;
    free(toks);
    free(ev);
    return rc;
}

/* ---- the command ------------------------------------------------------------ */

static kvl_engine_params engine_params(const serve_opts *o) {
    kvl_engine_params ep = kvl_engine_defaults();
    kvl_cli_engine_kv_opts(&o->kvo, o->threads, &ep);
    ep.max_ctx = (int32_t)o->ctx;
    if (o->max_seqs)
        ep.max_seqs = (int32_t)o->max_seqs;
    if (o->batch_tokens)
        ep.max_batch_tokens = (int32_t)o->batch_tokens;
    ep.preempt = o->preempt;
    ep.swap_mem = o->swap_mem;
    ep.swap_file = o->swap_file;
    ep.prefix_tier = o->kvo.prefix_tier;
    ep.prefix_cache = !o->no_prefix_cache;
    return ep;
}

/* The workload's arrays, sized up front. false on out of memory. */
static bool alloc_run(serve_run *sr) {
    sr->rq = calloc(sr->n, sizeof *sr->rq);
    sr->n_buckets = sr->cfg.max_seqs + 1;
    sr->decode = calloc((size_t)sr->n_buckets, sizeof *sr->decode);
    if (!sr->rq || !sr->decode) {
        fprintf(stderr, "kvllm %s: out of memory for %zu requests\n", CMD, sr->n);
        return false;
    }
    return true;
}

/* Chat: each session's history and each request's answer. */
static bool alloc_chat(serve_run *sr) {
    size_t ns = (size_t)sr->o->chat_sessions;
    if (!ns)
        return true;
    sr->hist = calloc(ns, sizeof *sr->hist);
    sr->n_hist = calloc(ns, sizeof *sr->n_hist);
    bool ok = sr->hist && sr->n_hist;
    for (size_t k = 0; ok && k < ns; k++)
        ok = (sr->hist[k] = malloc((size_t)sr->cfg.max_ctx * sizeof **sr->hist)) != NULL;
    for (size_t i = 0; ok && i < sr->n; i++)
        ok = (sr->rq[i].answer = malloc((size_t)sr->rq[i].out_len * sizeof(int32_t))) != NULL;
    if (!ok)
        fprintf(stderr, "kvllm %s: out of memory for %zu chat sessions\n", CMD, ns);
    return ok;
}

static void free_chat(serve_run *sr) {
    for (size_t k = 0; sr->hist && k < (size_t)sr->o->chat_sessions; k++)
        free(sr->hist[k]);
    for (size_t i = 0; sr->rq && i < sr->n; i++)
        free(sr->rq[i].answer);
    free(sr->hist);
    free(sr->n_hist);
}

static bool alloc_itl(serve_run *sr) {
    size_t cap = 1;
    for (size_t i = 0; i < sr->n; i++)
        cap += (size_t)sr->rq[i].out_len;
    sr->itl_cap = cap;
    if (!(sr->itl = malloc(cap * sizeof *sr->itl))) {
        fprintf(stderr, "kvllm %s: out of memory for %zu token times\n", CMD, cap);
        return false;
    }
    return true;
}

static void print_setup(const serve_run *sr) {
    const kvl_engine_config *c = &sr->cfg;
    fprintf(stderr,
            "kvllm bench serve: model %s (%s), %d threads; KV %s/%s, %u blocks of %d positions "
            "(%lld tokens, %zu bytes; %s); max_seqs %d, max_batch_tokens %d, preempt %s, swap "
            "%zu bytes\n",
            sr->mi.name, sr->mi.weight_type, c->n_threads, c->kv_type_k, c->kv_type_v, c->n_blocks,
            c->block_size, (long long)c->capacity_tokens, c->kv_mem, c->budget_reason, c->max_seqs,
            c->max_batch_tokens, kvl_preempt_mode_str(c->preempt), c->swap_mem);
    if (isfinite(sr->o->rate))
        fprintf(stderr, "kvllm bench serve: %zu requests at %g/s (burstiness %g)\n", sr->n,
                sr->o->rate, sr->o->burstiness);
    else
        fprintf(stderr, "kvllm bench serve: %zu requests, all at t = 0\n", sr->n);
}

static int bench_serve(const serve_opts *o, const dataset *d) {
    kvl_error err = {0};
    kvl_model *m = NULL;
    serve_run sr = {.o = o};
    int rc = 1;
    kvl_model_params mp = {.load = o->load};
    if (kvl_model_load(o->model, &mp, &m, &err)) {
        fprintf(stderr, "kvllm %s: %s\n", CMD, err.msg);
        return 1;
    }
    kvl_model_get_info(m, &sr.mi);
    if (o->ctx > sr.mi.ctx_len) {
        fprintf(stderr, "kvllm %s: --ctx: %lld is larger than the model's context %lld\n", CMD,
                o->ctx, (long long)sr.mi.ctx_len);
        rc = 2;
        goto done;
    }
    kvl_engine_params ep = engine_params(o);
    if (kvl_engine_init(m, &ep, &sr.e, &err)) {
        fprintf(stderr, "kvllm %s: %s\n", CMD, err.msg);
        rc = err.status == KVL_E_NOMEM || err.status == KVL_E_IO ? 1 : 2;
        goto done;
    }
    kvl_engine_get_config(sr.e, &sr.cfg);
    sr.n = (size_t)(o->chat_sessions ? o->chat_sessions * o->chat_turns
                    : o->n_prompts   ? o->n_prompts
                    : d->n           ? (long long)d->n
                                     : 16);
    if (!alloc_run(&sr))
        goto done;
    if ((rc = make_workload(o, d, sr.cfg.max_ctx, sr.rq, sr.n)) != 0 ||
        (o->chat_sessions && (rc = check_chat(o, sr.rq, sr.n, sr.cfg.max_ctx)) != 0) ||
        !alloc_chat(&sr) || !alloc_itl(&sr)) {
        rc = rc ? rc : 1;
        goto done;
    }
    if (o->dump) {
        rc = dump_workload(o, m, &sr.mi, sr.rq, sr.n);
        goto done;
    }
    if (o->steps && !(sr.steps = fopen(o->steps, "w"))) {
        fprintf(stderr, "kvllm %s: --steps: cannot write '%s': %s\n", CMD, o->steps,
                strerror(errno));
        rc = 1;
        goto done;
    }
    print_setup(&sr);
    rc = drive(&sr);
    if (sr.steps && fclose(sr.steps) != 0 && !rc) {
        fprintf(stderr, "kvllm %s: --steps: writing '%s' failed\n", CMD, o->steps);
        rc = 1;
    }
    sr.steps = NULL;
    serve_report rep;
    if (!kvl_serve_summarize(&sr, &rep))
        rc = 1;
    else if (o->json)
        kvl_serve_print_json(&sr, &rep);
    else {
        kvl_serve_print_text(&sr, &rep);
        kvl_serve_print_turns_text(&sr);
    }
    fflush(stdout);
    if (o->svg && !kvl_serve_write_svg(&sr, o->svg))
        rc = 1;
    if (sr.n_failed) {
        fprintf(stderr, "kvllm %s: %zu of %zu requests failed; first: %s\n", CMD, sr.n_failed, sr.n,
                sr.first_error);
        rc = 1;
    }
done:
    kvl_engine_free(sr.e);
    kvl_model_free(m);
    free_chat(&sr);
    free(sr.rq);
    free(sr.decode);
    free(sr.itl);
    return rc;
}

int kvl_cli_bench_serve(int argc, char **argv) {
    serve_opts o = {.n_prompts = 0,
                    .rate = INFINITY,
                    .burstiness = 1.0,
                    .temp = 1.0,
                    .in = {128, 128},
                    .out = {64, 64},
                    .load = KVL_LOAD_AUTO};
    kvl_cli_kv_defaults(&o.kvo);
    o.kvo.tier_ok = true;
    int pr = parse_args(argc, argv, &o);
    if (pr)
        return pr == 1 ? 0 : 2;
    if (!o.model && !(o.model = kvl_cli_default_model())) {
        fprintf(stderr,
                "kvllm %s: no -m given and the shipped model "
                "(../shared/models/stories260K.gguf) was not found; set KVL_SHARED\n",
                CMD);
        return 2;
    }
    dataset d = {0};
    if (o.dataset && !read_dataset(o.dataset, &d)) {
        free(d.pairs);
        return 2;
    }
    int rc = bench_serve(&o, &d);
    free(d.pairs);
    return rc;
}
