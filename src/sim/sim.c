/*
 * The simulation loop (sim.h): a discrete-event clock over the real
 * scheduler and a metadata-only KV ledger.
 *
 *   t = 0
 *   loop:  queue every request with arrival <= t (refuse what can never fit)
 *          idle?  t = next arrival
 *          plan = kvl_sched_schedule()          the engine's scheduler, unchanged
 *          dt   = simulated executor's price of plan->batch
 *          t   += dt;  kvl_sched_after_run()
 *          every item that asked for logits gets one token (hist += 1, n_gen++);
 *          a request with n_gen == its output length ends (kvl_sched_remove)
 *
 * as the engine's step does (engine_step.c: the last token is appended but
 * never fed). Requests arriving during a step wait for the next one.
 *
 * Invariants: no wall clock in any result; every queued request finishes
 * (the scheduler guarantees progress for one that fits the pool alone).
 * Must not: call the KV store's store/attend (the ledger has no bytes).
 */
#include "sim/sim.h"

#include "kv/kv_paged.h"
#include "kv/prefix_cache.h"
#include "sim/buddy.h"

#include <math.h>
#include <stdlib.h>
#include <strings.h>

kvl_sim_params kvl_sim_defaults(void) {
    return (kvl_sim_params){.kv_fmt = KVL_KV_FMT_F16,
                            .block_size = 16,
                            .max_seqs = 256,
                            .max_batch_tokens = 2048,
                            .policy = KVL_RESERVE_PAGED,
                            .buddy = true,
                            .slo_ttft = 1.0,
                            .slo_tpot = 0.1,
                            .preempt = KVL_PREEMPT_RECOMPUTE};
}

static const char *const k_policy[] = {"paged", "max", "oracle", "pow2"};

const char *kvl_sim_policy_name(kvl_sched_reserve p) { return (unsigned)p < 4 ? k_policy[p] : "?"; }

bool kvl_sim_policy_parse(const char *s, kvl_sched_reserve *out) {
    for (int i = 0; i < 4; i++)
        if (!strcasecmp(s, k_policy[i])) {
            *out = (kvl_sched_reserve)i;
            return true;
        }
    return false;
}

/* One request in flight: the scheduler's record and the simulator's times. */
typedef struct sim_req {
    kvl_request r;
    kvl_seq seq;
    int64_t idx;
    double t_first;
    int64_t buddy_off; /* its run in the buddy allocator, or -1 */
    int32_t buddy_order;
} sim_req;

/* Later turns waiting for their arrival: a binary min-heap on (arrival,
 * index). */
typedef struct turn_heap {
    int64_t *v;
    int64_t n;
} turn_heap;

typedef struct sim_state {
    const kvl_sim_params *p;
    kvl_sim_request *reqs;
    int64_t n_reqs;
    double *ttft, *tpot, *norm; /* (n_reqs) of finished requests, in finish order */
    int64_t n_done, n_good;
    double e2e_sum, norm_sum;
    kvl_buddy *buddy; /* NULL: no contiguous placement */
    int64_t prompt_tokens, output_tokens;
    double t_last_finish;
    turn_heap later; /* sessions' next turns, arrival known */
} sim_state;

static bool turn_before(const kvl_sim_request *r, int64_t a, int64_t b) {
    return r[a].arrival < r[b].arrival || (r[a].arrival == r[b].arrival && a < b);
}

static void heap_push(sim_state *S, int64_t idx) {
    int64_t *v = S->later.v, i = S->later.n++;
    for (; i > 0 && turn_before(S->reqs, idx, v[(i - 1) / 2]); i = (i - 1) / 2)
        v[i] = v[(i - 1) / 2];
    v[i] = idx;
}

static int64_t heap_pop(sim_state *S) {
    int64_t *v = S->later.v, top = v[0], last = v[--S->later.n], n = S->later.n, i = 0;
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && turn_before(S->reqs, v[c + 1], v[c]))
            c++;
        if (!turn_before(S->reqs, v[c], last))
            break;
        v[i] = v[c];
        i = c;
    }
    if (n > 0)
        v[i] = last;
    return top;
}

/* Position j of the token stream of key (a request's index, or a prefix
 * id or session with its KVL_SIM_KEY_* bits), never below 2^20, so it
 * never equals a shared-prefix id (1 + j). splitmix64's finalizer. */
static int32_t token_of(uint64_t key, int32_t j) {
    uint64_t z = key * 0x9e3779b97f4a7c15ull + (uint64_t)j + 1;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (int32_t)((1u << 20) + (z % (0x7fffffffu - (1u << 20))));
}

/* block_size: for the swap ids a swapped-out sequence holds; rank: its
 * place in the scheduler's arrival order. */
static sim_req *req_new(const kvl_sim_request *q, int64_t idx, int32_t shared_prefix,
                        int32_t block_size, uint64_t rank) {
    sim_req *s = calloc(1, sizeof *s);
    size_t n_tok = (size_t)q->n_prompt + (size_t)q->n_output;
    int32_t *hist = calloc(n_tok, sizeof *hist);
    uint32_t *swap_ids = calloc(n_tok / (size_t)block_size + 2, sizeof *swap_ids);
    if (!s || !hist || !swap_ids) {
        free(s);
        free(hist);
        free(swap_ids);
        return NULL;
    }
    for (int32_t j = 0; j < q->n_prompt + q->n_output; j++)
        hist[j] = j < shared_prefix && j < q->n_prompt ? 1 + j
                  : j < q->n_keyed                     ? token_of(q->key, j)
                                                       : token_of((uint64_t)idx, j);
    s->idx = idx;
    s->buddy_off = -1;
    s->seq = (kvl_seq){.slot = -1, .len = q->n_prompt, .hist = hist, .swap_ids = swap_ids};
    s->r = (kvl_request){.id = (uint64_t)idx,
                         .arrival = rank,
                         .n_prompt = q->n_prompt,
                         .max_tokens = q->n_output,
                         .hist_cap = q->n_prompt + q->n_output,
                         .n_samples = 1,
                         .n_alive = 1,
                         .seqs = &s->seq,
                         .owner = s};
    return s;
}

static void req_free(sim_req *s) {
    if (s) {
        free(s->seq.hist);
        free(s->seq.swap_ids);
        free(s);
    }
}

/* The token of one item that asked for logits. */
static void emit(sim_state *st, kvl_sched *sched, sim_req *q, double t) {
    kvl_seq *s = &q->seq;
    s->n_gen++;
    s->len++; /* its id was drawn in req_new */
    if (s->n_gen == 1)
        q->t_first = t;
    if (s->n_gen < q->r.max_tokens)
        return;
    kvl_sched_end_sample(sched, &q->r, 0);
    kvl_sched_remove(sched, &q->r);
    if (q->buddy_off >= 0)
        kvl_buddy_release(st->buddy, (uint32_t)q->buddy_off, q->buddy_order);
    const kvl_sim_request *w = &st->reqs[q->idx];
    if (w->next_turn >= 0) { /* the session's next turn arrives after its think time */
        st->reqs[w->next_turn].arrival = t + st->reqs[w->next_turn].think_s;
        heap_push(st, w->next_turn);
    }
    double e2e = t - w->arrival;
    int64_t k = st->n_done++;
    st->ttft[k] = q->t_first - w->arrival;
    st->tpot[k] = w->n_output > 1 ? (t - q->t_first) / (w->n_output - 1) : 0;
    st->n_good += st->ttft[k] <= st->p->slo_ttft && st->tpot[k] <= st->p->slo_tpot;
    st->norm[k] = e2e / w->n_output;
    st->e2e_sum += e2e;
    st->norm_sum += e2e / w->n_output;
    st->prompt_tokens += w->n_prompt;
    st->output_tokens += w->n_output;
    st->t_last_finish = t;
    req_free(q);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static kvl_status make_ledger(const kvl_sim_params *p, kvl_kv_cache **kv, kvl_kv_swap **sw,
                              kvl_sched **sched, kvl_error *err) {
    kvl_kv_cache_params kp = kvl_kv_cache_defaults();
    kp.layout = KVL_KV_LAYOUT_PAGED;
    kp.budget = p->kv_budget;
    kp.block_size = p->block_size;
    kp.max_seqs = p->max_seqs;
    kp.max_ctx = p->max_ctx > 0 ? p->max_ctx : (int32_t)p->cost.shape.hp.ctx_len;
    kp.k_fmt = kp.v_fmt = p->kv_fmt;
    kp.metadata_only = true;
    kvl_status st = kvl_kv_cache_init(&p->cost.shape.hp, &kp, kv, err);
    if (st)
        return st;
    kvl_sched_params sp = {.max_seqs = p->max_seqs,
                           .max_batch_tokens = p->max_batch_tokens,
                           .preempt = p->preempt,
                           .reserve = p->policy};
    if (p->swap_mem > 0)
        st = kvl_kv_swap_init_meta(kvl_kv_paged_layout(kvl_kv_cache_paged(*kv))->block_bytes,
                                   p->swap_mem, sw, err);
    if (st || (st = kvl_sched_init(*kv, *sw, &sp, sched, err))) {
        kvl_kv_swap_free(*sw);
        kvl_kv_cache_free(*kv);
        *sw = NULL;
        *kv = NULL;
    }
    return st;
}

/* KV accounting of one step, added with weight dt. */
typedef struct kv_acc {
    double occ, tok, frag, res, round, free_, t;
} kv_acc;

static void kv_sample(kvl_kv_cache *kv, kvl_sched *sched, const kvl_buddy *b, double dt, kv_acc *a,
                      kvl_sim_kv *now) {
    kvl_kv_paged_stats s;
    kvl_kv_paged_stats_get(kvl_kv_cache_paged(kv), &s);
    double bs = (double)kvl_sched_block_size(sched);
    double slots = (double)s.pool.n_blocks_total * bs;
    double res = (double)kvl_sched_reserved_unused(sched) * bs;
    double tok = (double)s.pool.n_slots_filled, frag = (double)s.pool.n_slots_frag;
    double placed = b ? (double)b->used * bs : 0, round = placed - tok - frag - res;
    round = round > 0 ? round : 0;
    *now = (kvl_sim_kv){.occupancy = s.pool.occupancy,
                        .tokens = tok / slots,
                        .frag = frag / slots,
                        .reserved = res / slots,
                        .rounding = round / slots,
                        .free_ = (slots - tok - frag - res - round) / slots};
    a->occ += dt * now->occupancy;
    a->tok += dt * now->tokens;
    a->frag += dt * now->frag;
    a->res += dt * now->reserved;
    a->round += dt * now->rounding;
    a->free_ += dt * now->free_;
    a->t += dt;
}

/* The scheduler's cost rule weighs a recompute (prefill tokens/s) against
 * a swap (bytes/s); give it the simulated device's rates: one full prefill
 * chunk from position 0, and the host link. */
static kvl_status set_rates(const kvl_sim_params *p, const kvl_sim_cost *c, kvl_sched *sched,
                            kvl_error *err) {
    int32_t n = p->max_batch_tokens;
    int32_t *a = malloc((size_t)n * 3 * sizeof *a);
    if (!a)
        return kvl_errorf(err, KVL_E_NOMEM, "sim: out of memory for %d tokens", n);
    for (int32_t i = 0; i < n; i++)
        a[i] = 1, a[n + i] = 0, a[2 * n + i] = i;
    kvl_batch b = {.n_tokens = n, .tokens = a, .seq = a + n, .pos = a + 2 * n};
    kvl_sim_step s;
    kvl_sim_cost_batch(c, &b, &s);
    kvl_sched_set_rates(sched, s.seconds > 0 ? n / s.seconds : 0, c->dev.host_bandwidth);
    free(a);
    return KVL_OK;
}

/* The blocks request q reserves under the policy (0: paged). */
static uint64_t resv_blocks(const kvl_sched *sched, const kvl_sim_request *q) {
    kvl_request tmp = {.n_prompt = q->n_prompt, .max_tokens = q->n_output, .n_alive = 1};
    return kvl_sched_reserve_blocks(sched, &tmp);
}

/* Under the buddy allocator, q is queued only once its reservation has a
 * run (false: it stays in the arrival FIFO, and so does everyone after it). */
static bool place(sim_state *S, const kvl_sched *sched, sim_req *sr) {
    if (!S->buddy)
        return true;
    int32_t k = kvl_buddy_order(S->buddy, resv_blocks(sched, &S->reqs[sr->idx]));
    int64_t off = kvl_buddy_alloc(S->buddy, k);
    if (off < 0)
        return false;
    sr->buddy_off = off;
    sr->buddy_order = k;
    return true;
}

/* Scratch for pricing a mixed step as two (kvl_sim_params.split_prefill):
 * one allocation, four arrays of max_batch_tokens per part. */
typedef struct split_buf {
    int32_t *tok;
    int32_t cap;
} split_buf;

static bool split_buf_init(split_buf *b, int32_t cap) {
    b->cap = cap;
    b->tok = malloc((size_t)cap * 2 * (3 * sizeof(int32_t) + sizeof(bool)));
    return b->tok != NULL;
}

/* Price plan pl as vLLM's 2023 scheduler ran such a batch: a step of its
 * prompt chunks, then a step of its decodes (an item of one token at the
 * end of a sequence that has generated), each with the device's per-step
 * overhead. *out: the sum (seconds, times, FLOPs and bytes); *dec_s: the
 * decode step's seconds. */
static void price_split(const kvl_sim_cost *c, const kvl_sched_plan *pl, split_buf *b,
                        kvl_sim_step *out, double *dec_s) {
    int32_t *tok[2], *seq[2], *pos[2], n[2] = {0, 0};
    bool *want[2];
    for (int k = 0; k < 2; k++) {
        tok[k] = b->tok + (size_t)k * 3 * (size_t)b->cap;
        seq[k] = tok[k] + b->cap;
        pos[k] = seq[k] + b->cap;
        want[k] = (bool *)(b->tok + (size_t)6 * (size_t)b->cap) + (size_t)k * (size_t)b->cap;
    }
    for (int32_t i = 0, at = 0; i < pl->n_items; at += pl->items[i++].n_tokens) {
        const kvl_sched_item *it = &pl->items[i];
        const kvl_seq *q = &it->r->seqs[it->si];
        int k = it->n_tokens == 1 && it->pos0 + 1 == q->len && q->n_gen > 0; /* 1: decode */
        for (int32_t j = at; j < at + it->n_tokens; j++, n[k]++) {
            tok[k][n[k]] = pl->batch.tokens[j];
            seq[k][n[k]] = pl->batch.seq[j];
            pos[k][n[k]] = pl->batch.pos[j];
            want[k][n[k]] = pl->batch.logits[j];
        }
    }
    kvl_sim_step part[2];
    for (int k = 0; k < 2; k++) {
        kvl_batch bk = {
            .n_tokens = n[k], .tokens = tok[k], .seq = seq[k], .pos = pos[k], .logits = want[k]};
        kvl_sim_cost_batch(c, &bk, &part[k]);
    }
    kvl_sim_step s = part[0];
    s.n_tokens += part[1].n_tokens;
    s.n_logits += part[1].n_logits;
    s.n_runs += part[1].n_runs;
    s.flops += part[1].flops;
    s.bytes += part[1].bytes;
    s.kv_read_bytes += part[1].kv_read_bytes;
    s.t_compute += part[1].t_compute;
    s.t_memory += part[1].t_memory;
    s.t_comm += part[1].t_comm;
    s.seconds += part[1].seconds;
    *out = s;
    *dec_s = part[1].seconds;
}

/* The earliest arrival not yet taken: a first turn (reqs[*next], skipping
 * later turns, which arrive through the heap) or a later turn whose turn
 * before it has ended; INFINITY when none is known. */
static double next_arrival(sim_state *S, int64_t *next) {
    while (*next < S->n_reqs && S->reqs[*next].turn > 0)
        (*next)++;
    double a = *next < S->n_reqs ? S->reqs[*next].arrival : INFINITY;
    double b = S->later.n ? S->reqs[S->later.v[0]].arrival : INFINITY;
    return a < b ? a : b;
}

/* Take that arrival (after next_arrival). */
static int64_t take_arrival(sim_state *S, int64_t *next) {
    if (S->later.n && (*next >= S->n_reqs || turn_before(S->reqs, S->later.v[0], *next)))
        return heap_pop(S);
    return (*next)++;
}

kvl_status kvl_sim_run(const kvl_sim_params *p, const kvl_sim_workload *w, kvl_sim_result *out,
                       kvl_error *err) {
    kvl_sim_request *reqs = NULL;
    int64_t n = 0;
    kvl_status st = kvl_sim_workload_make(w, &reqs, &n, err);
    if (st)
        return st;
    kvl_kv_cache *kv = NULL;
    kvl_sched *sched = NULL;
    kvl_kv_swap *sw = NULL;
    kvl_executor *x = NULL;
    sim_state S = {.p = p, .reqs = reqs, .n_reqs = n};
    S.ttft = malloc(((size_t)n + 1) * sizeof(double));
    S.tpot = malloc(((size_t)n + 1) * sizeof(double));
    S.norm = malloc(((size_t)n + 1) * sizeof(double));
    int64_t *fifo = malloc(((size_t)n + 1) * sizeof *fifo); /* arrived, not yet queued */
    S.later.v = malloc(((size_t)n + 1) * sizeof *S.later.v);
    split_buf sb = {0};
    if (p->split_prefill && !split_buf_init(&sb, p->max_batch_tokens))
        st = kvl_errorf(err, KVL_E_NOMEM, "sim: out of memory for the split steps");
    kvl_sim_cost cost = p->cost;
    cost.paged = p->policy == KVL_RESERVE_PAGED; /* reservations are contiguous kernels */
    kvl_buddy buddy = {0};
    kvl_prefix_cache *pc = NULL;
    uint64_t ns = 0;
    if (!S.ttft || !S.tpot || !S.norm || !fifo || !S.later.v)
        st = kvl_errorf(err, KVL_E_NOMEM, "sim: out of memory for %lld requests", (long long)n);
    if (!st)
        st = make_ledger(p, &kv, &sw, &sched, err);
    if (!st)
        st = set_rates(p, &cost, sched, err);
    if (!st && p->buddy && p->policy != KVL_RESERVE_PAGED &&
        !(st = kvl_buddy_init(&buddy, kvl_sched_n_blocks(sched), err)))
        S.buddy = &buddy;
    if (!st && (p->prefix_cache || p->shared_prefix > 0) &&
        !(st = kvl_prefix_cache_init(kvl_sched_n_blocks(sched), kvl_sched_block_size(sched),
                                     0x5157ull, &pc, err))) {
        kvl_sched_set_prefix_cache(sched, pc);
        ns = kvl_prefix_namespace(pc, NULL, p->kv_fmt, p->kv_fmt);
    }
    if (!st)
        st = kvl_executor_sim_init(&cost, p->max_batch_tokens, &x, err);
    if (st)
        goto done;
    kvl_sim_result R;
    memset(&R, 0, sizeof R);
    R.policy = kvl_sim_policy_name(p->policy);
    R.rate = w->lengths == KVL_SIM_LEN_TRACE || w->arrivals == KVL_SIM_ARR_BURST ? 0 : w->rate;
    R.n_requests = n;
    R.kv_blocks = kvl_sched_n_blocks(sched);
    R.block_size = kvl_sched_block_size(sched);
    const int32_t max_ctx = kvl_kv_cache_params_of(kv)->max_ctx;
    kv_acc acc = {0};
    double t = 0, batch_sum = 0, tok_sum = 0, step_sum = 0, dec_sum = 0, swapped = 0, run_sum = 0;
    int64_t next = 0, n_dec = 0, in_flight = 0, n_fifo = 0, head = 0;
    for (;;) {
        for (int64_t i; next_arrival(&S, &next) <= t;) {
            i = take_arrival(&S, &next);
            const kvl_sim_request *q = &reqs[i];
            if ((int64_t)q->n_prompt + q->n_output > max_ctx ||
                kvl_sched_blocks_worst(sched, q->n_prompt, q->n_output, 1) > R.kv_blocks ||
                (S.buddy && kvl_buddy_order(S.buddy, resv_blocks(sched, q)) < 0)) {
                for (int64_t k = i; k >= 0; k = reqs[k].next_turn) /* and its later turns */
                    R.n_refused++;
                continue;
            }
            fifo[n_fifo++] = i;
        }
        /* The scheduler's waiting list is topped up to max_seqs + 1 from the
         * arrival FIFO: a step admits at most max_seqs (its slots), in rank
         * order, and everything in the FIFO ranks after everything queued
         * (later arrivals), so the steps are those of queueing everything at
         * once, without the list's O(n) insertion over a long backlog. */
        for (; head < n_fifo && kvl_sched_count(sched, KVL_REQ_WAITING) <= p->max_seqs; head++) {
            sim_req *sr = req_new(&reqs[fifo[head]], fifo[head], p->shared_prefix, R.block_size,
                                  (uint64_t)head);
            if (!sr) {
                st = kvl_errorf(err, KVL_E_NOMEM, "sim: out of memory at request %lld",
                                (long long)fifo[head]);
                goto done;
            }
            if (!place(&S, sched, sr)) {
                req_free(sr);
                break;
            }
            sr->r.ns = ns;
            kvl_sched_add(sched, &sr->r);
            in_flight++;
        }
        double t_next = next_arrival(&S, &next);
        if (in_flight == S.n_done && head == n_fifo && t_next == INFINITY)
            break;
        kvl_sched_plan *pl;
        kvl_sched_schedule(sched, INT32_MAX, &pl);
        /* swap copies the scheduler made this step, priced at the host link */
        const kvl_sched_counters *sc = kvl_sched_counters_get(sched);
        double bytes = (double)sc->bytes_swapped_out + (double)sc->bytes_swapped_in - swapped;
        double swap_s = kvl_sim_cost_swap_seconds(&cost, bytes);
        swapped += bytes;
        R.swap_s += swap_s;
        t += swap_s;
        if (pl->batch.n_tokens == 0) {
            if (t_next == INFINITY || head < n_fifo) { /* nothing runs, nothing comes: a bug */
                st = kvl_errorf(err, KVL_E_INVALID,
                                "sim: stalled at t=%.3f s with %lld requests queued", t,
                                (long long)(in_flight - S.n_done + n_fifo - head));
                goto done;
            }
            t = t_next; /* idle until the next arrival */
            continue;
        }
        const float *logits;
        int32_t n_out;
        kvl_kv_iface none = {0};
        if ((st = kvl_executor_run(x, &pl->batch, &none, &logits, &n_out, err)))
            goto done;
        const kvl_sim_step *c = kvl_executor_sim_last(x);
        kvl_sim_step two;
        double dec_part = 0; /* split: the decode step's seconds */
        bool split = p->split_prefill && pl->n_prefill > 0 && pl->n_decode > 0;
        if (split) {
            price_split(&cost, pl, &sb, &two, &dec_part);
            c = &two;
        }
        kvl_sim_kv kvnow;
        double dt = c->seconds + swap_s;
        kv_sample(kv, sched, S.buddy, dt, &acc, &kvnow); /* the KV held while the step runs */
        run_sum += dt * kvl_sched_count(sched, KVL_REQ_RUNNING);
        t += c->seconds;
        kvl_sched_after_run(sched, pl);
        R.n_steps += 1 + split;
        batch_sum += pl->n_items;
        tok_sum += pl->batch.n_tokens;
        step_sum += dt;
        if (pl->n_prefill == 0 || split) {
            dec_sum += split ? dec_part : dt;
            n_dec++;
        }
        R.n_prefill_fed += pl->n_prefill;
        R.n_decode_fed += pl->n_decode;
        if (p->on_step)
            p->on_step(p->user, pl, c, &kvnow, t);
        for (int32_t i = 0; i < pl->n_items; i++)
            if (pl->items[i].logit_row >= 0)
                emit(&S, sched, pl->items[i].r->owner, t);
    }
    const kvl_sched_counters *sc = kvl_sched_counters_get(sched);
    R.n_done = S.n_done;
    R.n_prompt_tokens = S.prompt_tokens;
    R.n_output_tokens = S.output_tokens;
    R.makespan_s = n > 0 ? S.t_last_finish - reqs[0].arrival : 0;
    if (R.makespan_s > 0) {
        R.throughput_rps = (double)R.n_done / R.makespan_s;
        R.throughput_tps = (double)R.n_output_tokens / R.makespan_s;
    }
    if (S.n_done) {
        R.norm_latency = S.norm_sum / (double)S.n_done;
        R.e2e_mean = S.e2e_sum / (double)S.n_done;
        for (int64_t i = 0; i < S.n_done; i++)
            R.ttft_mean += S.ttft[i] / (double)S.n_done;
        qsort(S.ttft, (size_t)S.n_done, sizeof(double), cmp_double);
        qsort(S.tpot, (size_t)S.n_done, sizeof(double), cmp_double);
        R.ttft_p50 = kvl_quantile(S.ttft, (size_t)S.n_done, 0.5);
        R.ttft_p99 = kvl_quantile(S.ttft, (size_t)S.n_done, 0.99);
        R.tpot_p50 = kvl_quantile(S.tpot, (size_t)S.n_done, 0.5);
        R.tpot_p99 = kvl_quantile(S.tpot, (size_t)S.n_done, 0.99);
    }
    if (R.n_steps) {
        R.mean_batch = batch_sum / (double)R.n_steps;
        R.mean_batch_tokens = tok_sum / (double)R.n_steps;
        R.mean_step_s = step_sum / (double)R.n_steps;
    }
    R.mean_decode_step_s = n_dec ? dec_sum / (double)n_dec : 0;
    R.mean_running = step_sum > 0 ? run_sum / step_sum : 0;
    if (acc.t > 0) {
        R.kv_occupancy = acc.occ / acc.t;
        R.kv_tokens = acc.tok / acc.t;
        R.kv_frag = acc.frag / acc.t;
        R.kv_reserved = acc.res / acc.t;
        R.kv_rounding = acc.round / acc.t;
        R.kv_free = acc.free_ / acc.t;
    }
    R.n_good = S.n_good;
    R.slo_ttft = p->slo_ttft;
    R.slo_tpot = p->slo_tpot;
    if (R.makespan_s > 0)
        R.goodput_rps = (double)S.n_good / R.makespan_s;
    R.n_preemptions = sc->n_preemptions;
    R.tokens_recomputed = sc->tokens_recomputed;
    R.prefix_hit_tokens = sc->prefix_hit_tokens + sc->prefix_hit_tokens_self;
    R.prefix_lookup_tokens = sc->prefix_lookup_tokens;
    if (R.prefix_lookup_tokens > 0)
        R.prefix_hit_rate = (double)R.prefix_hit_tokens / (double)R.prefix_lookup_tokens;
    for (int64_t i = 0; i < n; i++)
        R.n_sessions += reqs[i].turn == 0 && (reqs[i].key >> 62) == (KVL_SIM_KEY_SESSION >> 62);
    R.n_preempt_swap = sc->n_preempt_swap;
    R.swap_bytes = swapped;
    *out = R;
done:
    /* requests still held (only after an error) */
    for (int st_i = KVL_REQ_WAITING; sched && st_i <= KVL_REQ_SWAPPED; st_i++)
        while (kvl_sched_first(sched, (kvl_request_state)st_i)) {
            kvl_request *r = kvl_sched_first(sched, (kvl_request_state)st_i);
            kvl_sched_remove(sched, r);
            req_free(r->owner);
        }
    kvl_buddy_free_all(&buddy);
    kvl_executor_free(x);
    kvl_sched_free(sched);
    kvl_kv_swap_free(sw);
    kvl_kv_cache_free(kv);
    kvl_prefix_cache_free(pc); /* after the pool, whose evict hook points at it */
    free(S.ttft);
    free(S.tpot);
    free(S.norm);
    free(fifo);
    free(S.later.v);
    free(sb.tok);
    free(reqs);
    return st;
}

/* ---- reports -------------------------------------------------------------- */

void kvl_sim_result_text(const kvl_sim_result *r, FILE *f) {
    fprintf(f,
            "policy %s, rate %.3f %s: %lld requests (%lld refused), %lld steps, %.1f s "
            "simulated\n"
            "  throughput      %.3f req/s, %.1f output tokens/s\n"
            "  goodput         %.3f req/s (%lld requests with TTFT <= %.3g s and TPOT <= %.3g s)\n"
            "  latency         normalized %.4f s/token, end-to-end mean %.3f s\n"
            "  TTFT            p50 %.4f s, p99 %.4f s\n"
            "  TPOT            p50 %.4f s, p99 %.4f s\n"
            "  batch           %.2f requests, %.1f tokens per step; step %.4f s (decode-only "
            "%.4f s); %.2f running (time-weighted)\n"
            "  KV              %u blocks of %d; occupancy %.3f; of the slots: tokens %.3f, "
            "fragmentation %.3f, reserved %.3f, rounding %.3f, free %.3f\n"
            "  preemptions     %lld (%lld by swap: %.3g GB over the host link, %.3f s; %lld "
            "tokens recomputed)\n"
            "  prefix cache    %lld of %lld prompt positions looked up were hits (rate %.3f), "
            "not computed; %lld sessions\n",
            r->policy, r->rate, r->n_sessions ? "sessions/s" : "req/s", (long long)r->n_done,
            (long long)r->n_refused, (long long)r->n_steps, r->makespan_s, r->throughput_rps,
            r->throughput_tps, r->goodput_rps, (long long)r->n_good, r->slo_ttft, r->slo_tpot,
            r->norm_latency, r->e2e_mean, r->ttft_p50, r->ttft_p99, r->tpot_p50, r->tpot_p99,
            r->mean_batch, r->mean_batch_tokens, r->mean_step_s, r->mean_decode_step_s,
            r->mean_running, r->kv_blocks, r->block_size, r->kv_occupancy, r->kv_tokens, r->kv_frag,
            r->kv_reserved, r->kv_rounding, r->kv_free, (long long)r->n_preemptions,
            (long long)r->n_preempt_swap, r->swap_bytes / 1e9, r->swap_s,
            (long long)r->tokens_recomputed, (long long)r->prefix_hit_tokens,
            (long long)r->prefix_lookup_tokens, r->prefix_hit_rate, (long long)r->n_sessions);
}

void kvl_sim_result_row(const kvl_sim_result *r, bool header, FILE *f) {
    if (header)
        fprintf(f, "%-7s %7s %7s %9s %9s %9s %8s %8s %8s %8s %7s %6s %6s %6s %6s %6s %7s\n",
                "policy", "rate", "done", "req/s", "good/s", "norm_lat", "ttft50", "ttft99",
                "tpot50", "tpot99", "batch", "kvtok", "frag", "resv", "round", "free", "preempt");
    fprintf(f,
            "%-7s %7.3f %7lld %9.3f %9.3f %9.4f %8.3f %8.3f %8.4f %8.4f %7.2f %6.3f %6.3f "
            "%6.3f %6.3f %6.3f %7lld\n",
            r->policy, r->rate, (long long)r->n_done, r->throughput_rps, r->goodput_rps,
            r->norm_latency, r->ttft_p50, r->ttft_p99, r->tpot_p50, r->tpot_p99, r->mean_batch,
            r->kv_tokens, r->kv_frag, r->kv_reserved, r->kv_rounding, r->kv_free,
            (long long)r->n_preemptions);
}

void kvl_sim_result_json(const kvl_sim_result *r, FILE *f) {
    fprintf(f,
            "{\"policy\": \"%s\", \"rate\": %.6g, \"requests\": %lld, \"done\": %lld, "
            "\"refused\": %lld, \"steps\": %lld, \"makespan_s\": %.6f, "
            "\"throughput_rps\": %.6f, \"throughput_tps\": %.6f, \"goodput_rps\": %.6f, "
            "\"good\": %lld, \"slo_ttft\": %.6g, \"slo_tpot\": %.6g, \"norm_latency\": %.6f, "
            "\"e2e_mean\": %.6f, \"ttft_p50\": %.6f, \"ttft_p99\": %.6f, \"ttft_mean\": %.6f, "
            "\"tpot_p50\": %.6f, "
            "\"tpot_p99\": %.6f, \"mean_batch\": %.4f, \"mean_batch_tokens\": %.4f, "
            "\"mean_step_s\": %.6f, \"mean_decode_step_s\": %.6f, \"prefill_fed\": %lld, "
            "\"decode_fed\": %lld, \"kv_blocks\": %u, \"block_size\": %d, "
            "\"kv_occupancy\": %.6f, \"kv_tokens\": %.6f, \"kv_frag\": %.6f, "
            "\"kv_reserved\": %.6f, \"kv_rounding\": %.6f, \"kv_free\": %.6f, "
            "\"preemptions\": %lld, \"preempt_swap\": %lld, \"swap_bytes\": %.0f, "
            "\"swap_s\": %.6f, \"tokens_recomputed\": %lld, \"prefix_hit_tokens\": %lld, "
            "\"prefix_lookup_tokens\": %lld, \"prefix_hit_rate\": %.6f, \"sessions\": %lld, "
            "\"mean_running\": %.4f}",
            r->policy, r->rate, (long long)r->n_requests, (long long)r->n_done,
            (long long)r->n_refused, (long long)r->n_steps, r->makespan_s, r->throughput_rps,
            r->throughput_tps, r->goodput_rps, (long long)r->n_good, r->slo_ttft, r->slo_tpot,
            r->norm_latency, r->e2e_mean, r->ttft_p50, r->ttft_p99, r->ttft_mean, r->tpot_p50,
            r->tpot_p99, r->mean_batch, r->mean_batch_tokens, r->mean_step_s, r->mean_decode_step_s,
            (long long)r->n_prefill_fed, (long long)r->n_decode_fed, r->kv_blocks, r->block_size,
            r->kv_occupancy, r->kv_tokens, r->kv_frag, r->kv_reserved, r->kv_rounding, r->kv_free,
            (long long)r->n_preemptions, (long long)r->n_preempt_swap, r->swap_bytes, r->swap_s,
            (long long)r->tokens_recomputed, (long long)r->prefix_hit_tokens,
            (long long)r->prefix_lookup_tokens, r->prefix_hit_rate, (long long)r->n_sessions,
            r->mean_running);
}

void kvl_sim_result_csv(const kvl_sim_result *r, bool header, FILE *f) {
    if (header)
        fprintf(f, "policy,rate,done,throughput_rps,goodput_rps,norm_latency,ttft_p50,ttft_p99,"
                   "tpot_p50,tpot_p99,mean_batch,mean_step_s,kv_tokens,kv_frag,kv_reserved,"
                   "kv_rounding,kv_free,preemptions,prefix_hit_tokens,prefix_lookup_tokens,"
                   "prefix_hit_rate\n");
    fprintf(f,
            "%s,%.6g,%lld,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,%.4f,%.6f,%.6f,%.6f,%.6f,%.6f,%.6f,"
            "%lld,%lld,%lld,%.6f\n",
            r->policy, r->rate, (long long)r->n_done, r->throughput_rps, r->goodput_rps,
            r->norm_latency, r->ttft_p50, r->ttft_p99, r->tpot_p50, r->tpot_p99, r->mean_batch,
            r->mean_step_s, r->kv_tokens, r->kv_frag, r->kv_reserved, r->kv_rounding, r->kv_free,
            (long long)r->n_preemptions, (long long)r->prefix_hit_tokens,
            (long long)r->prefix_lookup_tokens, r->prefix_hit_rate);
}
