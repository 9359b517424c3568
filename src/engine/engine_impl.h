/*
 * The engine's private state, shared by engine.c (public calls, locking,
 * events) and engine_step.c (one step). Not part of the API.
 *
 * Locking: mu guards everything below except what the forward pass
 * touches (the KV data and the executor's buffers), which only the
 * stepping thread uses, outside mu. Submit and cancel take mu briefly;
 * a step holds it while it schedules and while it samples, never while
 * the batch computes.
 */
#ifndef KVL_ENGINE_IMPL_H
#define KVL_ENGINE_IMPL_H

#include "core/pool.h"
#include "engine/config.h"
#include "engine/detok.h"
#include "engine/executor.h"
#include "engine/sampler.h"
#include "kv/kv_swap.h"
#include "kv/prefix_cache.h"
#include "sched/scheduler.h"

#include <pthread.h>

/* The engine's record of one request; r is what the scheduler sees. */
typedef struct eng_req {
    kvl_request r;
    uint64_t tag, session;
    bool cancel; /* kvl_engine_cancel asked; handled at the next step */
    bool ignore_eos;
    int32_t top_logprobs;   /* alternatives per TOKEN event */
    kvl_sampler **samplers; /* (n_samples) */
    kvl_detok *detok;       /* (n_samples) */
    int32_t *last;          /* (n_samples) previous token, for pieces */
    char **stops;           /* (n_stop) copies */
    int32_t n_stop;
    double t_submit, t_sched, t_first, t_last;
    int64_t n_completion;
    uint32_t end_blocks; /* blocks held when its first sample ended (the ledger) */
    size_t end_bytes;
    struct eng_req *all_prev, *all_next; /* every open request */
} eng_req;

/* One session's ledger (kvl_session_info without the live block count). */
typedef struct eng_session {
    uint64_t id; /* 0: the entry is empty */
    int64_t n_requests;
    int32_t n_open;
    int32_t n_turns, turn_head; /* ring of the newest turns */
    kvl_session_turn turns[KVL_SESSION_TURNS];
    uint64_t last_use; /* for forgetting the least recently used idle one */
} eng_session;

struct kvl_engine {
    const kvl_model *m;
    kvl_engine_resolved cfg;
    kvl_pool *pool;
    kvl_executor *x;
    kvl_kv_cache *kv;
    kvl_kv_swap *swap;
    kvl_sched *sched;
    kvl_prefix_cache *pc; /* NULL when off or with the contiguous layout */
    kvl_kv_tier *tier;    /* the prefix cache's second tier in swap; NULL when off */
    int32_t max_blocks_per_seq;
    size_t res_state_bytes;
    float *work; /* (n_vocab) sampling scratch */
    int32_t bos, eos;

    pthread_mutex_t mu;
    pthread_cond_t ev_cond;    /* an event was pushed */
    pthread_cond_t space_cond; /* events were taken */
    pthread_cond_t work_cond;  /* a submit, cancel or stop */
    kvl_event *ring;           /* (event_capacity) */
    int32_t ring_head, ring_n;
    eng_req *all_head;
    int32_t n_open;
    uint64_t next_id;
    bool stepping; /* a step is running (on any thread) */
    bool thread_on, thread_stop;
    pthread_t thread;
    kvl_engine_stats stats; /* snapshot at the end of the last step */
    int64_t n_accepted, n_refused, n_finished, n_steps, tok_prefill, tok_decode;
    double prefill_rate, swap_rate;
    kvl_event scratch;     /* the event being built */
    eng_session *sessions; /* (KVL_MAX_SESSIONS), linear scan: the count is bounded */
    uint64_t session_clock;
};

/* The session's entry, created when create and there is room (forgetting
 * the least recently used idle session if needed); NULL otherwise. */
eng_session *kvl_engine_session(kvl_engine *e, uint64_t id, bool create);

/* Push ev (the ring has room: steps check first). Caller holds mu. */
void kvl_engine_push(kvl_engine *e, const kvl_event *ev);
/* End r: its final event with reason (and message), release and free.
 * Caller holds mu. */
void kvl_engine_finish(kvl_engine *e, eng_req *q, kvl_finish_reason reason, kvl_status st,
                       const char *msg);
void kvl_engine_req_free(eng_req *q);
/* Fill o from q's record and block tables. Caller holds mu. */
void kvl_engine_req_info(kvl_engine *e, const eng_req *q, kvl_request_info *o);
/* Take the stats snapshot (kvl_engine_get_stats) from the live state: at
 * init and at the end of every step. Caller holds mu (or owns e alone). */
void kvl_engine_snapshot(kvl_engine *e);
/* One step; caller holds no lock. */
kvl_status kvl_engine_step_impl(kvl_engine *e, int32_t *n_tokens, kvl_error *err);

#endif
