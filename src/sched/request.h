/*
 * A request as the scheduler sees it: n samples (sequences) sharing one
 * prompt, each with its token history and its KV slot, and the request's
 * place in one of the scheduler's three lists (waiting, running, swapped).
 * The engine keeps its own per-request state (samplers, stop strings,
 * timings) beside this and points back through owner.
 *
 * Token regions of one sample (hist holds prompt then generated tokens):
 *
 *   | prompt (n_prompt)        | generated (n_gen)      |
 *   |<------------- len ---------------------------->|
 *   |<---- n_kv: KV stored ---->|<- to feed ->|
 *
 * len - n_kv tokens are fed before the next sampling: the whole prompt
 * after admission, one token per decode step, everything again after a
 * recompute preemption (n_kv back to 0). Logits are needed only when a
 * chunk reaches len.
 */
#ifndef KVL_REQUEST_H
#define KVL_REQUEST_H

#include "core/core.h"
#include "kv/kv_policy.h"
#include "kv/prefix_cache.h"

typedef struct kvl_seq {
    int32_t slot;   /* KV cache slot, -1 when none */
    int32_t len;    /* tokens in hist */
    int32_t n_kv;   /* positions with KV stored or reserved */
    int32_t n_drop; /* of those, evicted by the request's KV policy from its
                       current cache: the cache holds n_kv - n_drop, and the
                       next token is written at that position */
    int32_t n_gen;  /* tokens generated */
    bool done;
    kvl_finish_reason reason;
    int32_t *hist;      /* (hist_cap) prompt then generated tokens */
    uint32_t *swap_ids; /* (max blocks of one sequence) while swapped */
    uint32_t n_swap;
    uint8_t *swap_res; /* residual state while swapped (NULL if none) */
    uint32_t n_hashed; /* leading full blocks registered in the prefix cache */
    kvl_hash128 chain; /* the hash of block n_hashed - 1 ({0, 0} before any) */
} kvl_seq;

typedef struct kvl_request {
    uint64_t id;
    uint64_t arrival; /* submit order: ties in priority go to the older */
    int32_t priority; /* higher first */
    kvl_request_state state;
    int32_t n_prompt, max_tokens, hist_cap;
    int32_t n_samples, n_alive;
    bool forked; /* every alive sample holds its own table (true with one alive) */
    int32_t n_preempt;
    int64_t recomputed;    /* positions computed again after recompute preemptions */
    int64_t to_recompute;  /* positions lost by the last preemption, not yet recomputed */
    uint64_t ns;           /* prefix-cache namespace (cache salt, KV format) */
    int64_t cached_tokens; /* prompt positions found in the prefix cache at first admission */
    int64_t cached_tier;   /* of those, promoted from the second tier */
    int64_t cached_again;  /* positions found on re-admissions and swap-ins after a preemption */
    bool ever_run;
    uint64_t session;                /* the owner's session id (0: none), recorded on the blocks it
                             fills for the tier hook (scheduler.h), with */
    int32_t session_slot;            /* the owner's hint where that session's record is */
    kvl_kv_policy policy;            /* its KV policy (docs/eviction.md); set on its slot at
                                        admission */
    int32_t chunk_cap;               /* most tokens fed per step (0: no cap): what make_room
                                        can always fit under the policy's budget */
    int64_t n_evicted_blocks;        /* blocks its policy evicted (all admissions) */
    int64_t n_evicted_tokens;        /* the same in positions */
    kvl_seq *seqs;                   /* (n_samples) */
    struct kvl_request *prev, *next; /* in its state's list */
    void *owner;                     /* the engine's record */
} kvl_request;

#endif
