/*
 * The simulator (`kvllm sim`, docs/sim.md): the real scheduler
 * (src/sched) over a metadata-only KV ledger (src/kv), fed by a synthetic
 * or recorded workload, each step priced by the simulated executor
 * (engine/executor_sim.h) on a discrete-event virtual clock. Nothing is
 * computed and nothing is sampled: a request's output length is forced
 * (max_tokens = its length, end-of-sequence never drawn).
 *
 *     kvl_sim_workload w = kvl_sim_workload_defaults();   // ShareGPT-like, Poisson
 *     w.rate = 2; w.duration_s = 3600;
 *     kvl_sim_params p = kvl_sim_defaults();
 *     p.cost = cost;  p.kv_budget = 12ull << 30;  p.policy = KVL_RESERVE_PAGED;
 *     kvl_sim_result r;
 *     kvl_sim_run(&p, &w, &r, &err);
 *     kvl_sim_result_text(&r, stdout);
 *
 * Deterministic: the same parameters and seed give the same result, to the
 * bit (no wall clock enters it; sorting is total).
 */
#ifndef KVL_SIM_H
#define KVL_SIM_H

#include "engine/executor_sim.h"
#include "sched/scheduler.h"

#include <stdio.h>

/* ---- workloads ------------------------------------------------------------ */

typedef enum kvl_sim_lengths {
    KVL_SIM_LEN_SHAREGPT = 0, /* lognormal, truncated as vLLM's sampler filters (docs/sim.md) */
    KVL_SIM_LEN_ALPACA = 1,
    KVL_SIM_LEN_FIXED = 2,   /* prompt_lo / output_lo */
    KVL_SIM_LEN_UNIFORM = 3, /* [prompt_lo, prompt_hi] x [output_lo, output_hi] */
    KVL_SIM_LEN_TRACE = 4,   /* rows of a trace file */
} kvl_sim_lengths;

typedef enum kvl_sim_arrivals {
    KVL_SIM_ARR_POISSON = 0, /* exponential gaps of mean 1/rate */
    KVL_SIM_ARR_GAMMA = 1,   /* gamma gaps of mean 1/rate and coefficient of variation cv */
    KVL_SIM_ARR_BURST = 2,   /* every request at time 0 */
} kvl_sim_arrivals;

/* One request. Token identity (what the prefix cache can match): the first
 * n_keyed positions are the token stream of `key` (the same positions of
 * every request with that key are the same tokens), the rest unique to the
 * request. A session's turns share their session's key over every
 * position, so turn k's prompt (all earlier prompts and answers, then a
 * new message) starts with turn k-1's whole history; rows of a trace with
 * the same prefix id share theirs over their first prefix_len tokens. */
typedef struct kvl_sim_request {
    double arrival;    /* seconds; a later turn's is set when the turn before it ends */
    int32_t n_prompt;  /* >= 1 */
    int32_t n_output;  /* >= 1 */
    uint64_t key;      /* KVL_SIM_KEY_* | id; 0: none */
    int32_t n_keyed;   /* positions drawn from key's stream (<= n_prompt + n_output) */
    int32_t turn;      /* 0: a first turn (arrives at `arrival`); k: the session's k+1-th */
    double think_s;    /* a later turn: seconds after the turn before it ends */
    int64_t next_turn; /* index of the session's next turn, or -1 */
} kvl_sim_request;

#define KVL_SIM_KEY_PREFIX (1ull << 62)  /* | prefix id of a trace row */
#define KVL_SIM_KEY_SESSION (2ull << 62) /* | session number */

typedef struct kvl_sim_workload {
    kvl_sim_lengths lengths;
    kvl_sim_arrivals arrivals;
    double rate;        /* requests per second (Poisson, gamma) */
    double cv;          /* gamma's coefficient of variation (1 = Poisson) */
    double duration_s;  /* arrivals in [0, duration_s) ... */
    int64_t n_requests; /* ... or exactly this many (when > 0) */
    int32_t prompt_lo, prompt_hi, output_lo, output_hi;
    int32_t max_prompt, max_total; /* filters (ShareGPT-like: 1024, 2048) */
    const char *trace_path;        /* KVL_SIM_LEN_TRACE: "arrival_s prompt output
                                      [prefix_id [prefix_len]]" rows (docs/sim.md) */
    int32_t prefix_len;            /* a trace row's shared length when it gives an id only */
    /* Multi-turn sessions (turns > 1): arrivals start sessions (rate is
     * sessions per second); each turn draws a new message (a prompt length)
     * and an answer (an output length) from the length law, its prompt is
     * the whole conversation so far plus the message, and the next turn
     * arrives think seconds (exponential, mean think_s) after it ends. A
     * session stops early when the next turn's prompt + output would pass
     * max_total. Not with a trace. */
    int32_t turns;
    double think_s;
    uint64_t seed;
} kvl_sim_workload;

kvl_sim_workload kvl_sim_workload_defaults(void);

/* Generate the requests (first turns in arrival order; a session's later
 * turns follow its first, linked by next_turn); *out is malloc'd, the
 * caller frees it. KVL_E_INVALID naming the field on bad settings, KVL_E_IO / FORMAT
 * naming the line for a bad trace, KVL_E_LIMIT past 10^8 requests. */
kvl_status kvl_sim_workload_make(const kvl_sim_workload *w, kvl_sim_request **out, int64_t *n,
                                 kvl_error *err);

/* ---- the run -------------------------------------------------------------- */

/* The KV pool during one step, as fractions of its token slots (see
 * kvl_sim_result for the terms). */
typedef struct kvl_sim_kv {
    double occupancy, tokens, frag, reserved, rounding, free_;
} kvl_sim_kv;

typedef struct kvl_sim_params {
    kvl_sim_cost cost;        /* model, device, weight type (kvl_sim_cost_init) */
    kvl_kv_format kv_fmt;     /* K and V */
    size_t kv_budget;         /* bytes of KV (per tensor-parallel group) */
    int32_t block_size;       /* 16 */
    int32_t max_seqs;         /* 256 */
    int32_t max_batch_tokens; /* 2048 */
    int32_t max_ctx;          /* 0 = the model's context */
    kvl_sched_reserve policy;
    /* Reserving policies: place each reservation in a buddy allocator over
     * the pool's blocks before queueing (the paper's Orca baselines; default
     * true); false: only the block count limits them. */
    bool buddy;
    double slo_ttft, slo_tpot; /* goodput's SLOs, seconds (defaults 1 and 0.1) */
    /* The engine's prefix cache on the scheduler (paged only; default off,
     * as in the paper's vLLM; on with shared_prefix > 0). Prompts get
     * token ids: the first min(shared_prefix, prompt) are the same for
     * every request, then a request's keyed positions (a session's or a
     * prefix id's stream, kvl_sim_request), the rest unique to the
     * request. */
    bool prefix_cache;
    int32_t shared_prefix;
    /* Preemption (paged): the scheduler's mode (default recompute) and a
     * host swap area of swap_mem bytes (0: none; swap falls back to
     * recompute). Swap copies are priced at the device's host link and
     * added to the step that makes them. */
    kvl_preempt_mode preempt;
    size_t swap_mem;
    /* Price a step that mixes prompt chunks and decodes as two steps, the
     * prompt chunks' then the decodes', each with the per-step overhead:
     * how vLLM's scheduler of 2023 ran them (prompt-only steps). The
     * batches are still kvl_sched's (chunked, at most max_batch_tokens);
     * every token of the pair is emitted at the end of the second. Mean
     * batch counts the two as two steps. Default false. */
    bool split_prefill;
    /* Called after every step (NULL: none): the plan as scheduled, its
     * price, the KV held while it ran, the virtual time at its end. For
     * tests, step logs and the KV-over-time chart. */
    void (*on_step)(void *user, const kvl_sched_plan *pl, const kvl_sim_step *cost,
                    const struct kvl_sim_kv *kv, double t_end);
    void *user;
} kvl_sim_params;

kvl_sim_params kvl_sim_defaults(void);

typedef struct kvl_sim_result {
    const char *policy;
    double rate;
    int64_t n_requests, n_done, n_refused, n_steps;
    int64_t n_prompt_tokens, n_output_tokens; /* of finished requests */
    int64_t n_prefill_fed, n_decode_fed;      /* tokens run (recompute included) */
    double makespan_s;                        /* first arrival to last finish */
    double throughput_rps, throughput_tps;    /* finished requests (output tokens) per second */
    double norm_latency; /* mean over requests of e2e latency / output tokens, s/token */
    double e2e_mean;
    double ttft_p50, ttft_p99, tpot_p50, tpot_p99;
    double ttft_mean;
    double mean_batch;   /* requests per step, mean over steps */
    double mean_running; /* requests running (admitted, not preempted), time-weighted */
    double mean_batch_tokens;
    double mean_step_s, mean_decode_step_s; /* decode: steps with no prefill token */
    /* KV, time-weighted means as fractions of the pool's token slots:
     * tokens (stored or reserved this step), internal fragmentation (unfilled
     * slots of used blocks), reservation (blocks reserved, not yet taken),
     * rounding (buddy runs beyond tokens, fragmentation and reservations:
     * power-of-two rounding, and runs of requests queued but not yet
     * admitted), free (the rest; under the buddy allocator it includes the
     * external fragmentation). occupancy = blocks taken / all. */
    double kv_occupancy, kv_tokens, kv_frag, kv_reserved, kv_rounding, kv_free;
    uint32_t kv_blocks;
    int32_t block_size;
    int64_t n_preemptions, tokens_recomputed;
    int64_t n_good;               /* finished with TTFT <= slo_ttft and TPOT <= slo_tpot */
    double slo_ttft, slo_tpot;    /* the SLOs used */
    double goodput_rps;           /* n_good per second of the makespan */
    int64_t prefix_hit_tokens;    /* prompt positions served from the prefix cache
                                  (first admissions and re-admissions): tokens
                                  not computed */
    int64_t prefix_lookup_tokens; /* prompt positions looked up (admissions) */
    double prefix_hit_rate;       /* hit / lookup (0 without lookups) */
    int64_t n_sessions;           /* sessions (multi-turn workloads; else 0) */
    int64_t n_preempt_swap;       /* of n_preemptions, by swap */
    double swap_bytes;            /* copied out and in over the host link */
    double swap_s;                /* their price, inside the steps' time */
} kvl_sim_result;

/* Run w through the scheduler under p. KVL_E_INVALID / KVL_E_NO_KV with the
 * numbers when the pool cannot hold one max_ctx sequence; requests that
 * could never fit are refused and counted, not queued. */
kvl_status kvl_sim_run(const kvl_sim_params *p, const kvl_sim_workload *w, kvl_sim_result *out,
                       kvl_error *err);

const char *kvl_sim_policy_name(kvl_sched_reserve p);
bool kvl_sim_policy_parse(const char *s, kvl_sched_reserve *out);

/* Reports. text: one block per result; rows: one line per result (a sweep
 * table, with a header when header is true); json: one object. */
void kvl_sim_result_text(const kvl_sim_result *r, FILE *f);
void kvl_sim_result_row(const kvl_sim_result *r, bool header, FILE *f);
void kvl_sim_result_json(const kvl_sim_result *r, FILE *f);
void kvl_sim_result_csv(const kvl_sim_result *r, bool header, FILE *f);

#endif
