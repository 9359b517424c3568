/*
 * The scheduler: one step at a time it decides which requests run, which
 * tokens of each are fed, who is admitted and who is preempted, and
 * describes the step as a flattened batch (kvl_sched_plan) for the
 * executor. It reserves the step's KV positions through the KV cache's
 * all-or-nothing calls before the plan is returned, so the forward pass
 * never runs short. It never calls the forward pass and never samples.
 *
 * Ranking: a ranks before b when a.priority > b.priority, or equal
 * priorities and a arrived first. Lists are kept in rank order.
 *
 * One step (docs/engine.md draws it):
 *   1. swapped requests, best rank first, come back while their blocks,
 *      slots and the watermark fit;
 *   2. running requests, best rank first, get their tokens under the token
 *      budget: one per decoding sample, a prefill chunk otherwise; when the
 *      pool is short, the worst-ranked running request ranked after this
 *      one is preempted (swap or recompute, by the cost rule); with no such
 *      victim this request itself is preempted. The best-ranked request is
 *      therefore never preempted for a worse one: progress is guaranteed;
 *   3. waiting requests, best rank first, are admitted while slots, budget
 *      and blocks (plus the watermark) allow; the first that does not fit
 *      stops admission (no overtaking within the queue).
 *
 * Work per step is bounded by max_seqs items and max_batch_tokens tokens;
 * the list walks are O(requests in the lists).
 */
#ifndef KVL_SCHEDULER_H
#define KVL_SCHEDULER_H

#include "kv/kv_cache.h"
#include "kv/kv_swap.h"
#include "kv/kv_tier.h"
#include "sched/request.h"

/* KV allocation policy (paged layout only; the simulator's baselines, so
 * that only the memory policy differs between them). The reserving
 * policies keep, for every running sample, a reservation of R blocks taken
 * at admission: its blocks not yet held still count as taken when others
 * are admitted (the contiguous reservations of Orca, PagedAttention paper
 * section 6.2), so a running request never needs a block the pool lacks. */
typedef enum kvl_sched_reserve {
    KVL_RESERVE_PAGED = 0,  /* on demand, block by block (kvllm; default) */
    KVL_RESERVE_MAX = 1,    /* R = the KV cache's max_ctx ("Orca Max") */
    KVL_RESERVE_ORACLE = 2, /* R = prompt + max_tokens ("Orca Oracle": the sim
                               sets max_tokens to the true output length) */
    KVL_RESERVE_POW2 = 3,   /* R = prompt + max_tokens rounded up to a power
                               of two ("Orca Pow2": at most 2x over), <= max_ctx */
} kvl_sched_reserve;

typedef struct kvl_sched_params {
    int32_t max_seqs;         /* KV slots (sequences in flight) */
    int32_t max_batch_tokens; /* tokens per step */
    kvl_preempt_mode preempt;
    kvl_sched_reserve reserve; /* default paged */
} kvl_sched_params;

/* One sample's share of a step: n_tokens of hist from position pos0. */
typedef struct kvl_sched_item {
    kvl_request *r;
    int32_t si; /* sample index */
    int32_t pos0, n_tokens;
    int32_t logit_row; /* row of the step's logits, or -1 */
    bool fork_after;   /* lead of unforked samples reaches the prompt's end */
} kvl_sched_item;

typedef struct kvl_sched_plan {
    int32_t n_items;
    kvl_sched_item *items;       /* (max_seqs) */
    kvl_batch batch;             /* over the arrays below */
    int32_t n_prefill, n_decode; /* tokens of each kind */
} kvl_sched_plan;

typedef struct kvl_sched_counters {
    int64_t n_preemptions, n_preempt_recompute, n_preempt_swap, tokens_recomputed;
    int64_t n_blocks_swapped_out, n_blocks_swapped_in;
    size_t bytes_swapped_out, bytes_swapped_in;
    double swap_seconds;              /* time spent copying to and from the swap area */
    int64_t prefix_lookup_tokens;     /* prompt positions looked up at admission */
    int64_t prefix_hit_tokens;        /* of those, found cached (first admissions) */
    int64_t prefix_hit_tokens_self;   /* found on re-admission after a preemption */
    int64_t prefix_hit_free_blocks;   /* hits on blocks that were free but still cached */
    int64_t prefix_hit_tokens_tier;   /* of hit + self, promoted from the second tier */
    int64_t prefix_swapin_hit_blocks; /* swap-in blocks attached from the pool, not copied */
    int64_t prefix_evicted_unused; /* cached blocks dropped by the pool (not demoted) never hit */
    double prefix_tier_seconds;    /* demotion and promotion copies */
} kvl_sched_counters;

typedef struct kvl_sched kvl_sched;

/* kv and swap (may be NULL) must outlive the scheduler. */
kvl_status kvl_sched_init(kvl_kv_cache *kv, kvl_kv_swap *swap, const kvl_sched_params *p,
                          kvl_sched **out, kvl_error *err);
void kvl_sched_free(kvl_sched *s);

/* Use pc (may be NULL: no prefix caching) for admission lookups and to
 * register full blocks after each step; the pool's evict hook is set to it.
 * Paged layout only. */
void kvl_sched_set_prefix_cache(kvl_sched *s, kvl_prefix_cache *pc);
/* Demote cached blocks the pool evicts into tier (NULL: drop them) and
 * promote them back on admission hits. tier must sit on the swap area
 * given to kvl_sched_init and outlive the scheduler; needs a prefix cache.
 * Swapped-out requests come first: preemption by swap drops the tier's
 * oldest blocks for room. */
void kvl_sched_set_prefix_tier(kvl_sched *s, kvl_kv_tier *tier);
/* Called (during scheduling) for each block the pool demotes to the tier,
 * with the session of the request that filled it (demoted 1), and for each
 * admission that promotes blocks back, with the admitted request's session
 * (promoted n); only for sessions other than 0. A promoted block belongs to
 * the promoting request's session from then on. */
typedef void (*kvl_sched_tier_hook)(void *ctx, uint64_t session, int32_t session_slot,
                                    int32_t demoted, int32_t promoted);
void kvl_sched_set_tier_hook(kvl_sched *s, kvl_sched_tier_hook fn, void *ctx);

/* Queue r (state WAITING, nothing held). This function can't fail. */
void kvl_sched_add(kvl_sched *s, kvl_request *r);
/* Take r out of its list and release everything it holds (slots, blocks,
 * swap blocks); state FINISHED. This function can't fail. */
void kvl_sched_remove(kvl_sched *s, kvl_request *r);
/* Sample si ended: release its slot and KV. This function can't fail. */
void kvl_sched_end_sample(kvl_sched *s, kvl_request *r, int32_t si);

/* Plan one step (see above). max_requests bounds how many requests it may
 * schedule (the engine's room for their events). The KV positions of every
 * item are reserved and n_kv advanced. This function can't fail: a request
 * that cannot get blocks waits or is preempted. */
void kvl_sched_schedule(kvl_sched *s, int32_t max_requests, kvl_sched_plan **out);
/* Preempt running request r now (mode RECOMPUTE or SWAP; AUTO applies the
 * cost rule). SWAP falls back to recompute when the swap area cannot take
 * it. For tests and operators. KVL_E_INVALID when r is not running. */
kvl_status kvl_sched_preempt(kvl_sched *s, kvl_request *r, kvl_preempt_mode mode, kvl_error *err);
/* After the batch ran: fork the samples whose lead reached the prompt's end
 * (fork takes no block). This function can't fail. */
void kvl_sched_after_run(kvl_sched *s, kvl_sched_plan *plan);

/* The measured rates the cost rule weighs (tokens/s of prefill, bytes/s of
 * swap copies); the engine updates them. */
void kvl_sched_set_rates(kvl_sched *s, double prefill_tok_s, double swap_bytes_s);

/* Walk the lists (for stats and tests): each in rank order. */
kvl_request *kvl_sched_first(const kvl_sched *s, kvl_request_state st);
int32_t kvl_sched_count(const kvl_sched *s, kvl_request_state st);
int64_t kvl_sched_waiting_tokens(const kvl_sched *s);
const kvl_sched_counters *kvl_sched_counters_get(const kvl_sched *s);
int32_t kvl_sched_free_slots(const kvl_sched *s);
/* Blocks the worst case of a request needs alone: shared full prompt blocks
 * once plus every sample's own rest (the submit-time "could it ever fit"). */
uint64_t kvl_sched_blocks_worst(const kvl_sched *s, int32_t n_prompt, int32_t max_tokens,
                                int32_t n_samples);
uint32_t kvl_sched_n_blocks(const kvl_sched *s); /* the pool's blocks (contiguous: slots) */
/* Blocks the reserving policy reserves for each alive sample of r (0 under
 * KVL_RESERVE_PAGED or the contiguous layout); r need not be queued. */
uint64_t kvl_sched_reserve_blocks(const kvl_sched *s, const kvl_request *r);
/* Blocks the reserving policy holds for running requests beyond the blocks
 * they have taken (0 under KVL_RESERVE_PAGED). O(running requests). */
uint64_t kvl_sched_reserved_unused(const kvl_sched *s);
int32_t kvl_sched_block_size(const kvl_sched *s);

/* Evicting KV policies (docs/eviction.md, "In the engine"). The largest
 * chunk make_room can always fit under p's budget (h2o's tail and snapkv's
 * observation window are protected: their cap accounts for them). */
int32_t kvl_sched_chunk_cap(const kvl_kv_policy *p, int32_t block_size);
/* The most blocks a request under evicting policy p holds at once: its
 * budget's, or for snapkv the prompt's when that is longer (the prompt is
 * prefilled whole, reserved past the budget, then cut). */
uint64_t kvl_sched_policy_blocks(const kvl_kv_policy *p, int32_t n_prompt, int32_t block_size);
/* Whether sample q of r may hold more than its budget now: snapkv while
 * its prompt is prefilled (the cut follows the prompt's last chunk). */
bool kvl_sched_over_budget_ok(const kvl_request *r, const kvl_seq *q);

#endif
