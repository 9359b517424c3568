/*
 * kvllm bench serve, shared between the workload driver (bench_serve.c)
 * and its report (bench_serve_report.c: statistics, text, JSON, SVG).
 * Private to the command line.
 */
#ifndef KVL_CLI_BENCH_SERVE_H
#define KVL_CLI_BENCH_SERVE_H

#include "cli/cli.h"
#include "cli/common.h"

#include <stdio.h>

#define KVL_SERVE_CMD "bench serve"

/* A length flag: N, or A:B drawn uniformly. */
typedef struct len_range {
    long long lo, hi; /* inclusive; fixed when lo == hi */
} len_range;

/* The command line, parsed and range-checked. */
typedef struct serve_opts {
    const char *model, *dataset, *svg, *swap_file;
    bool json;
    long long n_prompts; /* 0: the dataset's lines, else 16 */
    long long threads, max_seqs, batch_tokens, max_conc, ctx;
    double rate;       /* requests/s; INFINITY: all at t = 0 */
    double burstiness; /* gamma shape; 1 = Poisson */
    double temp;
    long long seed;
    len_range in, out;
    kvl_cli_kv_opts kvo;
    kvl_load_mode load;
    kvl_preempt_mode preempt;
    uint64_t swap_mem;
    long long shared_prefix; /* every prompt starts with the same this many tokens */
    bool ignore_eos, no_prefix_cache;
    bool no_warmup;    /* --no-warmup: no test request before the run */
    const char *dump;  /* --dump-workload: write the requests as JSONL instead of running */
    const char *steps; /* --steps: one line per engine step that ran tokens */
    long long chat_sessions, chat_turns; /* multi-turn chat (bench_workload.h); 0: off */
} serve_opts;

/* One request of the workload: what was asked, what came back, when. */
typedef struct sreq {
    int32_t in_len, out_len; /* prompt tokens; max_tokens */
    int32_t user_len;        /* chat: the new user message's tokens */
    int32_t *answer;         /* chat: (out_len) the generated tokens */
    int32_t n_answer;
    int64_t cached;   /* usage.cached_tokens */
    double t_arrival; /* scheduled, seconds after t0 */
    double t_first, t_last, t_end;
    int64_t n_out;   /* the engine's completion_tokens */
    int32_t n_times; /* output tokens that have a time so far */
    int32_t n_preempt;
    int64_t recomputed;
    kvl_finish_reason reason;
    bool submitted, done, failed;
} sreq;

/* Steps of one kind and their summed wall time. */
typedef struct step_bucket {
    int64_t n_steps;
    double sum_s;
} step_bucket;

/* One benchmark run: the engine, the workload and the measurements. */
typedef struct serve_run {
    const serve_opts *o;
    kvl_engine *e;
    kvl_model_info mi;
    kvl_engine_config cfg;
    sreq *rq;
    size_t n;
    double *itl; /* (itl_cap) gaps between a request's tokens, seconds */
    size_t n_itl, itl_cap;
    step_bucket *decode; /* (max_seqs + 1): pure-decode steps by sequences decoding */
    step_bucket mixed;   /* steps that also prefilled */
    int64_t n_token_events;
    int32_t n_buckets; /* max_seqs + 1 */
    size_t n_done, n_failed, n_open, peak_open;
    int32_t **hist;  /* chat: (sessions) each session's last prompt, growing */
    int32_t *n_hist; /* (sessions) */
    double duration;
    FILE *steps;           /* --steps, open while driving */
    kvl_engine_stats base; /* after the warm-up request: taken off the report */
    char first_error[640];
} serve_run;

/* In milliseconds; percentiles interpolate linearly between order
 * statistics (numpy's default, which vllm bench serve uses). */
typedef struct dist {
    size_t n;
    double mean, std, median, p50, p90, p99;
} dist;

/* What the report prints: the successful requests' totals and
 * distributions, and the engine's counters at the end. */
typedef struct serve_report {
    size_t completed, n_stop, n_length;
    int64_t in_tokens, out_tokens, requested_out;
    dist ttft, tpot, itl, e2el;
    kvl_engine_stats st;
} serve_report;

/* Chat workloads: mean TTFT, prompt and cached tokens per turn (text and
 * JSON); nothing otherwise. */
void kvl_serve_print_turns_text(const serve_run *sr);
void kvl_serve_print_turns_json(const serve_run *sr);

/* Summarize the finished run (sorts sr->itl in place). false, with a
 * message, when out of memory. */
bool kvl_serve_summarize(serve_run *sr, serve_report *rep);
/* vllm bench serve's report, then kvllm's preemption and batch sections. */
void kvl_serve_print_text(const serve_run *sr, const serve_report *rep);
/* One JSON object with vllm bench serve's keys and kvllm's. */
void kvl_serve_print_json(const serve_run *sr, const serve_report *rep);
/* The batch size vs TPOT chart. false, with a message, when the file
 * cannot be written. */
bool kvl_serve_write_svg(const serve_run *sr, const char *path);

#endif
