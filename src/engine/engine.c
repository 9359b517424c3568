/*
 * The engine's public calls (kvllm.h): init and free, submit and cancel,
 * the event queue, stats, and the optional engine thread. The step itself
 * is in engine_step.c. Locking is described in engine_impl.h.
 *
 * Invariants: every accepted request is on the all list until its final
 * event is pushed, and then it is freed; n_open counts that list. The ring
 * never overflows: a step schedules only what its free room can report,
 * and cancellations are handled only while room for their final remains.
 */
#include "engine/engine_impl.h"

#include "engine/engine_debug.h"
#include "kernels/kernels.h"
#include "kv/kv_paged.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

const char *kvl_finish_reason_str(kvl_finish_reason r) {
    switch (r) {
    case KVL_FINISH_NONE: return "none";
    case KVL_FINISH_STOP: return "stop";
    case KVL_FINISH_LENGTH: return "length";
    case KVL_FINISH_CANCELLED: return "cancelled";
    case KVL_FINISH_ERROR: return "error";
    }
    return "unknown";
}

/* The scheduler's tier hook: count a session's demoted and promoted
 * blocks. The slot is where the session's record was when its request was
 * submitted; a session forgotten since is looked up again (O(sessions)),
 * and one no longer tracked is not counted. Caller holds mu. */
static void session_tier_hook(void *ctx, uint64_t session, int32_t slot, int32_t demoted,
                              int32_t promoted) {
    kvl_engine *e = ctx;
    eng_session *ss = slot >= 0 && slot < KVL_MAX_SESSIONS && e->sessions[slot].id == session
                          ? &e->sessions[slot]
                          : kvl_engine_session(e, session, false);
    if (ss) {
        ss->n_demoted += demoted;
        ss->n_promoted += promoted;
    }
}

/* ---- init / free ---------------------------------------------------------- */

/* Pieces must fit an event beside the held-back text. */
static kvl_status check_pieces(const kvl_model *m, kvl_error *err) {
    int32_t nv = kvl_tokenizer_n_vocab(m->tok);
    for (int32_t t = 0; t < nv; t++) {
        size_t n;
        kvl_tokenizer_piece(m->tok, -1, t, &n);
        if (n > KVL_DETOK_PIECE_MAX)
            return kvl_errorf(err, KVL_E_UNSUPPORTED,
                              "engine: token %d is %zu bytes long; pieces of more than %d bytes "
                              "are not supported",
                              t, n, KVL_DETOK_PIECE_MAX);
    }
    return KVL_OK;
}

/* Copy speed of this machine for the cost rule, measured once (8 MiB). */
static double measure_copy_rate(void) {
    size_t n = 8u << 20;
    char *a = malloc(n), *b = malloc(n);
    double rate = 4e9;
    if (a && b) {
        memset(a, 1, n);
        memset(b, 2, n);
        double best = 1e9;
        for (int i = 0; i < 3; i++) {
            double t0 = kvl_now();
            memcpy(b, a, n);
            double dt = kvl_now() - t0;
            best = dt < best ? dt : best;
        }
        if (best > 0)
            rate = (double)n / best;
    }
    free(a);
    free(b);
    return rate;
}

kvl_status kvl_engine_init(const kvl_model *m, const kvl_engine_params *p, kvl_engine **out,
                           kvl_error *err) {
    kvl_engine_resolved cfg;
    kvl_status st = kvl_engine_resolve(m, p, &cfg, err);
    if (st || (st = check_pieces(m, err)))
        return st;
    kvl_engine *e = calloc(1, sizeof *e);
    if (!e)
        return kvl_errorf(err, KVL_E_NOMEM, "engine: out of memory");
    e->m = m;
    e->cfg = cfg;
    e->next_id = 1;
    e->bos = kvl_tokenizer_bos(m->tok);
    e->eos = kvl_tokenizer_eos(m->tok);
    const kvl_engine_params *ep = &e->cfg.p;
    e->ring = calloc((size_t)ep->event_capacity, sizeof *e->ring);
    e->sessions = calloc(KVL_MAX_SESSIONS, sizeof *e->sessions);
    e->work = malloc((size_t)m->hp.n_vocab * sizeof *e->work);
    if (!e->ring || !e->work || !e->sessions) {
        st =
            kvl_errorf(err, KVL_E_NOMEM, "engine: out of memory for %d events", ep->event_capacity);
        goto fail;
    }
    if ((st = kvl_pool_init(ep->n_threads, &e->pool, err)) ||
        (st = kvl_kv_cache_init(&m->hp, &e->cfg.kv, &e->kv, err)) ||
        (st = kvl_executor_cpu_init(m, e->pool, ep->max_batch_tokens, ep->max_ctx, &e->x, err)))
        goto fail;
    kvl_kv_paged *pg = kvl_kv_cache_paged(e->kv);
    int32_t bs = pg ? kvl_kv_paged_layout(pg)->block_size : ep->max_ctx;
    e->max_blocks_per_seq = (ep->max_ctx + bs - 1) / bs;
    if (pg && ep->swap_mem) {
        e->res_state_bytes = kvl_kv_paged_residual_state_bytes(pg);
        if ((st = kvl_kv_swap_init(kvl_kv_paged_layout(pg)->block_bytes, ep->swap_mem,
                                   ep->swap_file, &e->swap, err)))
            goto fail;
    } else if (ep->swap_mem && ep->kv_layout == KVL_KV_LAYOUT_CONTIGUOUS) {
        st = kvl_errorf(err, KVL_E_UNSUPPORTED,
                        "engine: swap_mem needs the paged KV layout (contiguous preempts by "
                        "recompute)");
        goto fail;
    }
    kvl_sched_params sp = {
        .max_seqs = ep->max_seqs, .max_batch_tokens = ep->max_batch_tokens, .preempt = ep->preempt};
    if ((st = kvl_sched_init(e->kv, e->swap, &sp, &e->sched, err)))
        goto fail;
    if (pg && ep->prefix_cache) {
        if ((st = kvl_prefix_cache_init(kvl_sched_n_blocks(e->sched), bs, 0, &e->pc, err)))
            goto fail;
        kvl_sched_set_prefix_cache(e->sched, e->pc);
        if (ep->prefix_tier != KVL_PREFIX_TIER_OFF && e->swap) {
            if ((st = kvl_kv_tier_init(e->swap, &e->tier, err)))
                goto fail;
            kvl_sched_set_prefix_tier(e->sched, e->tier);
            kvl_sched_set_tier_hook(e->sched, session_tier_hook, e);
        }
    }
    if (ep->batch_invariant)
        kvl_matmul_set_batch_invariant(true);
    e->swap_rate = measure_copy_rate();
    e->prefill_rate = 0;
    kvl_sched_set_rates(e->sched, 0, e->swap_rate);
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->ev_cond, NULL);
    pthread_cond_init(&e->space_cond, NULL);
    pthread_cond_init(&e->work_cond, NULL);
    kvl_engine_snapshot(e); /* stats are whole before the first step */
    *out = e;
    return KVL_OK;
fail:
    kvl_sched_free(e->sched);
    kvl_kv_tier_free(e->tier);
    kvl_prefix_cache_free(e->pc);
    kvl_kv_swap_free(e->swap);
    kvl_executor_free(e->x);
    kvl_kv_cache_free(e->kv);
    kvl_pool_free(e->pool);
    free(e->ring);
    free(e->work);
    free(e->sessions);
    free(e);
    return st;
}

void kvl_engine_free(kvl_engine *e) {
    if (!e)
        return;
    kvl_engine_stop(e);
    pthread_mutex_lock(&e->mu);
    while (e->all_head) {
        eng_req *q = e->all_head;
        kvl_sched_remove(e->sched, &q->r);
        /* the queue dies with the engine: the final event is not kept */
        e->all_head = q->all_next;
        kvl_engine_req_free(q);
    }
    pthread_mutex_unlock(&e->mu);
    kvl_sched_free(e->sched);
    kvl_kv_tier_free(e->tier);
    kvl_prefix_cache_free(e->pc);
    kvl_kv_swap_free(e->swap);
    kvl_executor_free(e->x);
    kvl_kv_cache_free(e->kv);
    kvl_pool_free(e->pool);
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->ev_cond);
    pthread_cond_destroy(&e->space_cond);
    pthread_cond_destroy(&e->work_cond);
    free(e->ring);
    free(e->work);
    free(e->sessions);
    free(e);
}

void kvl_engine_get_config(const kvl_engine *e, kvl_engine_config *o) {
    memset(o, 0, sizeof *o);
    const kvl_engine_params *p = &e->cfg.p;
    const kvl_kv_cache_params *kp = kvl_kv_cache_params_of(e->kv);
    snprintf(o->kv_type_k, sizeof o->kv_type_k, "%s", kvl_kv_format_get(kp->k_fmt)->name);
    snprintf(o->kv_type_v, sizeof o->kv_type_v, "%s", kvl_kv_format_get(kp->v_fmt)->name);
    o->kv_layout = kp->layout;
    o->block_size = kvl_sched_block_size(e->sched);
    o->max_ctx = p->max_ctx;
    o->max_seqs = p->max_seqs;
    o->max_batch_tokens = p->max_batch_tokens;
    o->max_queue = p->max_queue;
    o->max_queue_tokens = p->max_queue_tokens;
    o->kv_mem = kp->budget;
    o->swap_mem = (size_t)kvl_kv_swap_n_blocks(e->swap) * kvl_kv_swap_block_bytes(e->swap);
    o->n_blocks = kvl_sched_n_blocks(e->sched);
    o->capacity_tokens = (int64_t)o->n_blocks * o->block_size;
    o->bytes_per_token = e->stats.kv.bytes_per_token;
    o->n_threads = kvl_pool_size(e->pool);
    o->preempt = p->preempt;
    o->prefix_tier = e->tier ? p->prefix_tier : KVL_PREFIX_TIER_OFF;
    snprintf(o->budget_reason, sizeof o->budget_reason, "%s", e->cfg.budget_reason);
}

/* ---- requests ------------------------------------------------------------- */

void kvl_engine_req_free(eng_req *q) {
    if (!q)
        return;
    for (int32_t i = 0; i < q->r.n_samples; i++) {
        if (q->samplers)
            kvl_sampler_free(q->samplers[i]);
        if (q->r.seqs) {
            free(q->r.seqs[i].hist);
            free(q->r.seqs[i].swap_ids);
            free(q->r.seqs[i].swap_res);
        }
    }
    for (int32_t i = 0; i < q->n_stop; i++)
        free(q->stops[i]);
    free(q->stops);
    free(q->samplers);
    free(q->detok);
    free(q->last);
    free(q->r.seqs);
    free(q);
}

/* Tokenize and check everything that does not depend on the engine's
 * state; allocate the record. Runs without the lock. */
static kvl_status req_build(kvl_engine *e, const kvl_request_params *p, eng_req **out,
                            kvl_error *err) {
    const kvl_engine_params *ep = &e->cfg.p;
    if (p->n < 1 || p->n > KVL_MAX_SAMPLES || p->n > ep->max_seqs)
        return kvl_errorf(err, KVL_E_INVALID, "submit: n %d outside [1, %d]", p->n,
                          ep->max_seqs < KVL_MAX_SAMPLES ? ep->max_seqs : KVL_MAX_SAMPLES);
    bool evicts = kvl_kv_policy_evicts(&p->kv_policy);
    int32_t max_out = evicts ? KVL_MAX_STREAM_TOKENS : ep->max_ctx;
    if (p->max_tokens < 1 || p->max_tokens > max_out)
        return kvl_errorf(err, KVL_E_INVALID, "submit: max_tokens %d outside [1, %d]%s",
                          p->max_tokens, max_out, evicts ? " (kv_policy evicts)" : "");
    if (p->n_stop < 0 || p->n_stop > KVL_MAX_STOPS || (p->n_stop && !p->stop))
        return kvl_errorf(err, KVL_E_INVALID, "submit: n_stop %d outside [0, %d]", p->n_stop,
                          KVL_MAX_STOPS);
    for (int32_t i = 0; i < p->n_stop; i++) {
        size_t l = p->stop[i] ? strlen(p->stop[i]) : 0;
        if (l < 1 || l > KVL_MAX_STOP_LEN)
            return kvl_errorf(err, KVL_E_INVALID, "submit: stop[%d] is %zu bytes, not in [1, %d]",
                              i, l, KVL_MAX_STOP_LEN);
    }
    kvl_sampler_params sp = {.temperature = p->temperature,
                             .top_k = p->top_k,
                             .top_p = p->top_p,
                             .min_p = p->min_p,
                             .repeat_penalty = p->repeat_penalty,
                             .repeat_last_n = p->repeat_last_n,
                             .presence_penalty = p->presence_penalty,
                             .frequency_penalty = p->frequency_penalty,
                             .seed = p->seed};
    kvl_status st = kvl_sampler_params_validate(&sp, err);
    if (st)
        return st;
    if (p->top_logprobs < 0 || p->top_logprobs > KVL_MAX_TOP_LOGPROBS)
        return kvl_errorf(err, KVL_E_INVALID, "submit: top_logprobs %d outside [0, %d]",
                          p->top_logprobs, KVL_MAX_TOP_LOGPROBS);
    /* the prompt */
    int32_t nv = (int32_t)e->m->hp.n_vocab;
    size_t n_prompt = 0;
    int32_t *toks = NULL;
    if (p->prompt_tokens) {
        if (p->n_prompt_tokens < 1 || p->n_prompt_tokens > (size_t)ep->max_ctx)
            return kvl_errorf(err, KVL_E_LIMIT, "submit: %zu prompt tokens outside [1, %d]",
                              p->n_prompt_tokens, ep->max_ctx);
        for (size_t i = 0; i < p->n_prompt_tokens; i++)
            if (p->prompt_tokens[i] < 0 || p->prompt_tokens[i] >= nv)
                return kvl_errorf(err, KVL_E_INVALID,
                                  "submit: prompt_tokens[%zu] = %d outside [0, %d)", i,
                                  p->prompt_tokens[i], nv);
        n_prompt = p->n_prompt_tokens;
    } else {
        const char *text = p->prompt ? p->prompt : "";
        size_t len = strlen(text);
        if (len > (size_t)64 << 20)
            return kvl_errorf(err, KVL_E_LIMIT, "submit: prompt of %zu bytes > %d", len, 64 << 20);
        toks = malloc((len + 3) * sizeof *toks);
        if (!toks)
            return kvl_errorf(err, KVL_E_NOMEM, "submit: out of memory");
        if ((st =
                 kvl_tokenizer_encode(e->m->tok, text, len, true, toks, len + 3, &n_prompt, err))) {
            free(toks);
            return st;
        }
    }
    if (evicts && n_prompt > (size_t)ep->max_ctx) {
        free(toks);
        return kvl_errorf(err, KVL_E_LIMIT, "submit: prompt %zu tokens > the context %d", n_prompt,
                          ep->max_ctx);
    }
    if (!evicts && n_prompt + (size_t)p->max_tokens > (size_t)ep->max_ctx) {
        free(toks);
        return kvl_errorf(err, KVL_E_LIMIT,
                          "submit: prompt %zu tokens + max_tokens %d = %zu > the context %d",
                          n_prompt, p->max_tokens, n_prompt + (size_t)p->max_tokens, ep->max_ctx);
    }
    uint64_t worst = kvl_sched_blocks_worst(e->sched, (int32_t)n_prompt, p->max_tokens, p->n);
    uint64_t bs = (uint64_t)kvl_sched_block_size(e->sched);
    uint64_t cap = kvl_sched_policy_blocks(&p->kv_policy, (int32_t)n_prompt, (int32_t)bs);
    if (evicts && worst > cap) /* admitted on its budget (snapkv: or its prompt) */
        worst = cap;
    if (worst > kvl_sched_n_blocks(e->sched)) {
        free(toks);
        return kvl_errorf(err, KVL_E_LIMIT,
                          "submit: prompt %zu tokens + max_tokens %d x n %d needs %llu KV blocks; "
                          "the whole pool holds %u",
                          n_prompt, p->max_tokens, p->n, (unsigned long long)worst,
                          kvl_sched_n_blocks(e->sched));
    }
    eng_req *q = calloc(1, sizeof *q);
    int32_t ns = p->n;
    bool ok = q && (q->r.seqs = calloc((size_t)ns, sizeof *q->r.seqs)) &&
              (q->samplers = calloc((size_t)ns, sizeof *q->samplers)) &&
              (q->detok = calloc((size_t)ns, sizeof *q->detok)) &&
              (q->last = calloc((size_t)ns, sizeof *q->last)) &&
              (q->stops = calloc((size_t)(p->n_stop ? p->n_stop : 1), sizeof *q->stops));
    if (q && q->r.seqs)
        q->r.n_samples = ns;
    int32_t hist_cap = (int32_t)n_prompt + p->max_tokens;
    for (int32_t i = 0; ok && i < ns; i++) {
        kvl_seq *s = &q->r.seqs[i];
        s->slot = -1;
        ok = (s->hist = malloc((size_t)hist_cap * sizeof *s->hist)) &&
             (!e->swap ||
              (s->swap_ids = malloc((size_t)e->max_blocks_per_seq * sizeof(uint32_t)))) &&
             (!e->swap || !e->res_state_bytes || (s->swap_res = malloc(e->res_state_bytes)));
        if (ok) {
            memcpy(s->hist, toks ? toks : p->prompt_tokens, n_prompt * sizeof *s->hist);
            s->len = (int32_t)n_prompt;
            q->last[i] = s->hist[n_prompt - 1];
            kvl_sampler_params si = sp;
            si.seed = sp.seed + (uint64_t)i;
            ok = kvl_sampler_init(&si, nv, &q->samplers[i], err) == KVL_OK;
        }
    }
    for (int32_t i = 0; ok && i < p->n_stop; i++) {
        ok = (q->stops[i] = strdup(p->stop[i])) != NULL;
        q->n_stop = i + 1;
    }
    free(toks);
    if (!ok) {
        kvl_engine_req_free(q);
        return kvl_errorf(err, KVL_E_NOMEM, "submit: out of memory for a %d-token request",
                          hist_cap);
    }
    q->r.n_prompt = (int32_t)n_prompt;
    q->r.max_tokens = p->max_tokens;
    q->r.hist_cap = hist_cap;
    q->r.n_alive = ns;
    q->r.priority = p->priority;
    q->r.owner = q;
    q->r.policy = p->kv_policy;
    if (evicts) /* the largest chunk make_room can always fit (docs/eviction.md) */
        q->r.chunk_cap = kvl_sched_chunk_cap(&p->kv_policy, (int32_t)bs);
    if (e->pc) {
        const kvl_kv_cache_params *kp = kvl_kv_cache_params_of(e->kv);
        q->r.ns = kvl_prefix_namespace(e->pc, p->cache_salt, (int)kp->k_fmt, (int)kp->v_fmt);
    }
    q->tag = p->tag;
    q->top_logprobs = p->top_logprobs;
    q->session = p->session;
    q->ignore_eos = p->ignore_eos;
    *out = q;
    return KVL_OK;
}

/* The request's KV policy (docs/eviction.md): full, or window / sinks /
 * h2o / snapkv within the engine's restrictions. *out is p with the
 * defaults of sinks, heavy and obs_window applied. */
static kvl_status policy_check(kvl_engine *e, const kvl_request_params *p, kvl_request_params *out,
                               kvl_error *err) {
    *out = *p;
    kvl_kv_policy *pol = &out->kv_policy;
    const char *name = kvl_kv_policy_str(pol->kind);
    if (!name)
        return kvl_errorf(err, KVL_E_INVALID, "submit: kv_policy.kind %d is not a policy",
                          (int)pol->kind);
    if (pol->kind == KVL_KV_POLICY_FULL)
        return KVL_OK;
    kvl_kv_paged *pg = kvl_kv_cache_paged(e->kv);
    if (!pg)
        return kvl_errorf(err, KVL_E_UNSUPPORTED,
                          "submit: kv_policy.kind %s needs the paged KV layout", name);
    if (p->n != 1)
        return kvl_errorf(err, KVL_E_UNSUPPORTED, "submit: n %d with kv_policy.kind %s: must be 1",
                          p->n, name);
    if (pol->kind == KVL_KV_POLICY_SINKS && pol->sinks == 0) /* h2o, snapkv: none */
        pol->sinks = KVL_KV_POLICY_DEFAULT_SINKS;
    if (pol->kind == KVL_KV_POLICY_H2O && pol->heavy == 0.0f)
        pol->heavy = KVL_KV_POLICY_DEFAULT_HEAVY;
    if (pol->kind == KVL_KV_POLICY_SNAPKV && pol->obs_window == 0)
        pol->obs_window = KVL_KV_POLICY_DEFAULT_OBS_WINDOW;
    kvl_error e2;
    if (kvl_kv_policy_check(pol, kvl_kv_paged_layout(pg)->block_size, kvl_kv_paged_max_ctx(pg),
                            &e2))
        return kvl_errorf(err, KVL_E_INVALID, "submit: kv_policy: %s", e2.msg);
    return KVL_OK;
}

kvl_status kvl_engine_submit(kvl_engine *e, const kvl_request_params *p, uint64_t *id,
                             kvl_error *err) {
    if (!p)
        return kvl_errorf(err, KVL_E_INVALID, "submit: params is NULL");
    kvl_request_params pp;
    kvl_status st = policy_check(e, p, &pp, err);
    if (st)
        return st;
    eng_req *q = NULL;
    if ((st = req_build(e, &pp, &q, err)))
        q = NULL;
    pthread_mutex_lock(&e->mu);
    if (!st) {
        const kvl_engine_params *ep = &e->cfg.p;
        int32_t nw = kvl_sched_count(e->sched, KVL_REQ_WAITING);
        int64_t wt = kvl_sched_waiting_tokens(e->sched);
        if (nw >= ep->max_queue)
            st = kvl_errorf(err, KVL_E_BUSY, "submit: %d requests waiting, the queue holds %d", nw,
                            ep->max_queue);
        else if (wt + q->r.n_prompt > ep->max_queue_tokens)
            st = kvl_errorf(err, KVL_E_BUSY,
                            "submit: %lld prompt tokens waiting + %d > the queue's %lld",
                            (long long)wt, q->r.n_prompt, (long long)ep->max_queue_tokens);
    }
    if (st) {
        e->n_refused++;
        pthread_mutex_unlock(&e->mu);
        kvl_engine_req_free(q); /* NULL when req_build failed */
        return st;
    }
    q->r.id = e->next_id++;
    q->r.arrival = q->r.id;
    eng_session *ss = q->session ? kvl_engine_session(e, q->session, true) : NULL;
    if (ss) {
        ss->n_requests++;
        ss->n_open++;
        q->r.session = q->session;
        q->r.session_slot = (int32_t)(ss - e->sessions);
    }
    q->t_submit = kvl_now();
    q->all_next = e->all_head;
    if (e->all_head)
        e->all_head->all_prev = q;
    e->all_head = q;
    e->n_open++;
    e->n_accepted++;
    kvl_sched_add(e->sched, &q->r);
    *id = q->r.id;
    pthread_cond_signal(&e->work_cond);
    pthread_mutex_unlock(&e->mu);
    return KVL_OK;
}

static eng_req *find(kvl_engine *e, uint64_t id) {
    for (eng_req *q = e->all_head; q; q = q->all_next)
        if (q->r.id == id)
            return q;
    return NULL;
}

kvl_status kvl_engine_cancel(kvl_engine *e, uint64_t id) {
    pthread_mutex_lock(&e->mu);
    eng_req *q = find(e, id);
    if (q) {
        q->cancel = true;
        pthread_cond_signal(&e->work_cond);
    }
    pthread_mutex_unlock(&e->mu);
    return q ? KVL_OK : KVL_E_NOT_FOUND;
}

/* ---- events --------------------------------------------------------------- */

void kvl_engine_push(kvl_engine *e, const kvl_event *ev) {
    int32_t cap = e->cfg.p.event_capacity;
    KVL_ASSERT(e->ring_n < cap);
    e->ring[(e->ring_head + e->ring_n) % cap] = *ev;
    e->ring_n++;
    pthread_cond_broadcast(&e->ev_cond);
}

void kvl_engine_finish(kvl_engine *e, eng_req *q, kvl_finish_reason reason, kvl_status st,
                       const char *msg) {
    double now = kvl_now();
    kvl_event *ev = &e->scratch;
    memset(ev, 0, offsetof(kvl_event, text));
    ev->type = KVL_EV_FINAL;
    ev->id = q->r.id;
    ev->tag = q->tag;
    ev->reason = reason;
    ev->status = st;
    ev->text_len = 0;
    ev->message[0] = '\0';
    if (msg)
        snprintf(ev->message, sizeof ev->message, "%s", msg);
    /* a single sample's held-back text goes out with the final event */
    if (q->r.n_samples == 1 && reason != KVL_FINISH_CANCELLED && reason != KVL_FINISH_ERROR)
        kvl_detok_flush(&q->detok[0], ev->text, &ev->text_len);
    kvl_usage *u = &ev->usage;
    u->prompt_tokens = q->r.n_prompt;
    u->completion_tokens = q->n_completion;
    u->cached_tokens = q->r.cached_tokens;
    u->cached_tokens_tier = q->r.cached_tier;
    u->recomputed_tokens = q->r.recomputed;
    u->n_preemptions = q->r.n_preempt;
    u->queue_s = q->t_sched > 0 ? q->t_sched - q->t_submit : now - q->t_submit;
    u->ttft_s = q->t_first > 0 ? q->t_first - q->t_submit : 0;
    u->tpot_s = q->n_completion > 1 ? (q->t_last - q->t_first) / (double)(q->n_completion - 1) : 0;
    u->e2e_s = now - q->t_submit;
    u->kv_policy = q->r.policy.kind;
    u->evicted_blocks = q->r.n_evicted_blocks;
    u->evicted_tokens = q->r.n_evicted_tokens;
    eng_session *ss = q->session ? kvl_engine_session(e, q->session, false) : NULL;
    if (ss) {
        kvl_session_turn *t = &ss->turns[(ss->turn_head + ss->n_turns) % KVL_SESSION_TURNS];
        if (ss->n_turns == KVL_SESSION_TURNS)
            ss->turn_head = (ss->turn_head + 1) % KVL_SESSION_TURNS;
        else
            ss->n_turns++;
        *t = (kvl_session_turn){.request_id = q->r.id,
                                .prompt_tokens = q->r.n_prompt,
                                .completion_tokens = q->n_completion,
                                .cached_tokens = q->r.cached_tokens,
                                .cached_tokens_tier = q->r.cached_tier,
                                .n_blocks = q->end_blocks,
                                .kv_bytes = q->end_bytes,
                                .reason = reason};
        ss->n_open--;
        ss->last_use = ++e->session_clock;
    }
    kvl_sched_remove(e->sched, &q->r);
    if (q->all_prev)
        q->all_prev->all_next = q->all_next;
    else
        e->all_head = q->all_next;
    if (q->all_next)
        q->all_next->all_prev = q->all_prev;
    e->n_open--;
    e->n_finished++;
    kvl_engine_push(e, ev);
    kvl_engine_req_free(q);
}

int kvl_engine_poll(kvl_engine *e, kvl_event *out, int max, double timeout_s) {
    pthread_mutex_lock(&e->mu);
    if (e->ring_n == 0 && timeout_s > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + ts.tv_nsec * 1e-9 + timeout_s;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        while (e->ring_n == 0)
            if (pthread_cond_timedwait(&e->ev_cond, &e->mu, &ts) == ETIMEDOUT)
                break;
    }
    int n = 0, cap = e->cfg.p.event_capacity;
    while (n < max && e->ring_n > 0) {
        out[n++] = e->ring[e->ring_head];
        e->ring_head = (e->ring_head + 1) % cap;
        e->ring_n--;
    }
    if (n)
        pthread_cond_broadcast(&e->space_cond);
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* ---- stats ---------------------------------------------------------------- */

void kvl_engine_get_stats(kvl_engine *e, kvl_engine_stats *out) {
    pthread_mutex_lock(&e->mu);
    *out = e->stats;
    pthread_mutex_unlock(&e->mu);
}

bool kvl_engine_idle(kvl_engine *e) {
    pthread_mutex_lock(&e->mu);
    bool idle = e->n_open == 0;
    pthread_mutex_unlock(&e->mu);
    return idle;
}

/* Fill o from q's record and its block tables. Caller holds mu (block
 * tables and counts change only under it). */
void kvl_engine_req_info(kvl_engine *e, const eng_req *q, kvl_request_info *o) {
    memset(o, 0, sizeof *o);
    o->id = q->r.id;
    o->tag = q->tag;
    o->session = q->session;
    o->state = q->r.state;
    o->priority = q->r.priority;
    o->n_samples = q->r.n_samples;
    o->prompt_tokens = q->r.n_prompt;
    o->generated_tokens = q->n_completion;
    o->n_preemptions = q->r.n_preempt;
    o->cached_tokens = q->r.cached_tokens;
    o->cached_tokens_tier = q->r.cached_tier;
    o->cached_again = q->r.cached_again;
    o->kv_policy = q->r.policy.kind;
    o->evicted_blocks = q->r.n_evicted_blocks;
    o->evicted_tokens = q->r.n_evicted_tokens;
    double now = kvl_now();
    o->age_s = now - q->t_submit;
    o->queue_s = (q->t_sched > 0 ? q->t_sched : now) - q->t_submit;
    kvl_kv_paged *pg = kvl_kv_cache_paged(e->kv);
    for (int32_t i = 0; i < q->r.n_samples; i++) {
        const kvl_seq *s = &q->r.seqs[i];
        o->computed_tokens += s->n_kv;
        o->n_swap_blocks += s->n_swap;
        if (s->slot < 0 || !pg)
            continue;
        const kvl_block_table *t = kvl_kv_paged_table(pg, s->slot);
        const kvl_block_pool *bp = kvl_kv_paged_pool(pg);
        o->n_blocks += t->n_blocks;
        for (uint32_t j = 0; j < t->n_blocks; j++)
            o->n_blocks_shared += kvl_block_pool_refcount(bp, t->ids[j]) > 1;
        o->kv_bytes += (size_t)t->n_blocks * kvl_kv_paged_layout(pg)->block_bytes;
    }
}

kvl_status kvl_engine_request_info(kvl_engine *e, uint64_t id, kvl_request_info *o) {
    pthread_mutex_lock(&e->mu);
    eng_req *q = find(e, id);
    if (q)
        kvl_engine_req_info(e, q, o);
    pthread_mutex_unlock(&e->mu);
    return q ? KVL_OK : KVL_E_NOT_FOUND;
}

/* ---- sessions ------------------------------------------------------------- */

eng_session *kvl_engine_session(kvl_engine *e, uint64_t id, bool create) {
    eng_session *empty = NULL, *lru = NULL;
    for (int i = 0; i < KVL_MAX_SESSIONS; i++) {
        eng_session *s = &e->sessions[i];
        if (s->id == id)
            return s;
        if (s->id == 0 && !empty)
            empty = s;
        if (s->id && s->n_open == 0 && (!lru || s->last_use < lru->last_use))
            lru = s;
    }
    if (!create || !(empty || lru))
        return NULL;
    eng_session *s = empty ? empty : lru;
    memset(s, 0, sizeof *s);
    s->id = id;
    s->last_use = ++e->session_clock;
    return s;
}

kvl_status kvl_engine_session_info(kvl_engine *e, uint64_t session, kvl_session_info *o) {
    pthread_mutex_lock(&e->mu);
    eng_session *s = session ? kvl_engine_session(e, session, false) : NULL;
    if (s) {
        memset(o, 0, sizeof *o);
        o->session = s->id;
        o->n_requests = s->n_requests;
        o->n_open = s->n_open;
        o->n_turns = s->n_turns;
        o->n_blocks_demoted = s->n_demoted;
        o->n_blocks_promoted = s->n_promoted;
        for (int32_t i = 0; i < s->n_turns; i++)
            o->turns[i] = s->turns[(s->turn_head + i) % KVL_SESSION_TURNS];
        for (eng_req *q = e->all_head; q; q = q->all_next)
            if (q->session == session) {
                kvl_request_info ri;
                kvl_engine_req_info(e, q, &ri);
                o->n_blocks += ri.n_blocks;
                o->n_blocks_shared += ri.n_blocks_shared;
                o->kv_bytes += ri.kv_bytes;
            }
    }
    pthread_mutex_unlock(&e->mu);
    return s ? KVL_OK : KVL_E_NOT_FOUND;
}

/* ---- stepping ------------------------------------------------------------- */

kvl_status kvl_engine_step(kvl_engine *e, int32_t *n_tokens, kvl_error *err) {
    pthread_mutex_lock(&e->mu);
    bool busy = e->thread_on;
    pthread_mutex_unlock(&e->mu);
    if (busy)
        return kvl_errorf(err, KVL_E_INVALID,
                          "engine: kvl_engine_step while the engine thread runs");
    return kvl_engine_step_impl(e, n_tokens, err);
}

static void *engine_main(void *arg) {
    kvl_engine *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (!e->thread_stop && e->n_open == 0)
            pthread_cond_wait(&e->work_cond, &e->mu);
        bool stop = e->thread_stop;
        pthread_mutex_unlock(&e->mu);
        if (stop)
            break;
        int32_t n = 0;
        kvl_engine_step_impl(e, &n, NULL);
        if (n == 0) { /* nothing could run: wait for room, a submit or a cancel */
            pthread_mutex_lock(&e->mu);
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 5 * 1000 * 1000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            if (!e->thread_stop)
                pthread_cond_timedwait(&e->space_cond, &e->mu, &ts);
            pthread_mutex_unlock(&e->mu);
        }
    }
    return NULL;
}

kvl_status kvl_engine_start(kvl_engine *e, kvl_error *err) {
    pthread_mutex_lock(&e->mu);
    if (e->thread_on) {
        pthread_mutex_unlock(&e->mu);
        return kvl_errorf(err, KVL_E_INVALID, "engine: already started");
    }
    e->thread_stop = false;
    int rc = pthread_create(&e->thread, NULL, engine_main, e);
    e->thread_on = rc == 0;
    pthread_mutex_unlock(&e->mu);
    if (rc)
        return kvl_errorf(err, KVL_E_NOMEM, "engine: pthread_create: %s", strerror(rc));
    return KVL_OK;
}

void kvl_engine_stop(kvl_engine *e) {
    pthread_mutex_lock(&e->mu);
    bool on = e->thread_on;
    e->thread_stop = true;
    pthread_cond_broadcast(&e->work_cond);
    pthread_cond_broadcast(&e->space_cond);
    pthread_mutex_unlock(&e->mu);
    if (on)
        pthread_join(e->thread, NULL);
    pthread_mutex_lock(&e->mu);
    e->thread_on = false;
    pthread_mutex_unlock(&e->mu);
}

/* ---- debug hooks (engine_debug.h) ----------------------------------------- */

void kvl_engine_set_logits_tap(kvl_engine *e, kvl_logits_tap tap, void *user) {
    kvl_executor_set_tap(e->x, tap, user);
}

void kvl_engine_kv_report(kvl_engine *e, FILE *f) { kvl_kv_cache_report(e->kv, f); }

static kvl_status check_locked(kvl_engine *e, kvl_error *err) {
    int32_t held = 0;
    uint32_t swap_held = 0;
    static const char *const names[] = {"waiting", "running", "swapped"};
    for (int st = KVL_REQ_WAITING; st <= KVL_REQ_SWAPPED; st++)
        for (kvl_request *r = kvl_sched_first(e->sched, st); r; r = r->next) {
            if ((int)r->state != st)
                return kvl_errorf(err, KVL_E_INVALID, "request %llu in the %s list has state %d",
                                  (unsigned long long)r->id, names[st], (int)r->state);
            int32_t alive = 0;
            for (int32_t i = 0; i < r->n_samples; i++) {
                const kvl_seq *s = &r->seqs[i];
                alive += !s->done;
                bool slot = s->slot >= 0;
                held += slot;
                swap_held += s->n_swap;
                if (s->done && (slot || s->n_swap))
                    return kvl_errorf(err, KVL_E_INVALID,
                                      "request %llu sample %d ended but holds KV",
                                      (unsigned long long)r->id, i);
                if (st == KVL_REQ_WAITING && (slot || s->n_swap || s->n_kv))
                    return kvl_errorf(err, KVL_E_INVALID,
                                      "waiting request %llu sample %d holds slot %d, %u swap "
                                      "blocks, %d positions",
                                      (unsigned long long)r->id, i, s->slot, s->n_swap, s->n_kv);
                if (st == KVL_REQ_RUNNING && !s->done && !slot)
                    return kvl_errorf(err, KVL_E_INVALID,
                                      "running request %llu sample %d has no slot",
                                      (unsigned long long)r->id, i);
                if (st == KVL_REQ_SWAPPED && slot)
                    return kvl_errorf(err, KVL_E_INVALID,
                                      "swapped request %llu sample %d holds a slot",
                                      (unsigned long long)r->id, i);
                if (slot && kvl_kv_cache_len(e->kv, s->slot) != s->n_kv - s->n_drop)
                    return kvl_errorf(err, KVL_E_INVALID,
                                      "request %llu sample %d: slot %d holds %d positions, n_kv "
                                      "%d - evicted %d",
                                      (unsigned long long)r->id, i, s->slot,
                                      kvl_kv_cache_len(e->kv, s->slot), s->n_kv, s->n_drop);
                if (slot && kvl_kv_policy_evicts(&r->policy) && !kvl_sched_over_budget_ok(r, s) &&
                    kvl_kv_cache_len(e->kv, s->slot) > r->policy.budget_tokens)
                    return kvl_errorf(err, KVL_E_INVALID,
                                      "request %llu sample %d: %d positions > its budget %d",
                                      (unsigned long long)r->id, i,
                                      kvl_kv_cache_len(e->kv, s->slot), r->policy.budget_tokens);
            }
            if (alive != r->n_alive)
                return kvl_errorf(err, KVL_E_INVALID, "request %llu: %d alive samples, n_alive %d",
                                  (unsigned long long)r->id, alive, r->n_alive);
        }
    if (held + kvl_sched_free_slots(e->sched) != e->cfg.p.max_seqs)
        return kvl_errorf(err, KVL_E_INVALID, "slots: %d held + %d free != %d", held,
                          kvl_sched_free_slots(e->sched), e->cfg.p.max_seqs);
    kvl_kv_paged *pg = kvl_kv_cache_paged(e->kv);
    if (pg) {
        kvl_status st = kvl_block_pool_check(kvl_kv_paged_pool(pg), err);
        if (st)
            return st;
    }
    /* the swap area: swapped requests' blocks + the prefix tier's + free */
    uint32_t n_tier = kvl_kv_tier_n_entries(e->tier);
    if (swap_held + n_tier + kvl_kv_swap_n_free(e->swap) != kvl_kv_swap_n_blocks(e->swap))
        return kvl_errorf(err, KVL_E_INVALID, "swap: %u held + %u tier + %u free != %u blocks",
                          swap_held, n_tier, kvl_kv_swap_n_free(e->swap),
                          kvl_kv_swap_n_blocks(e->swap));
    if (e->n_open == 0) { /* idle: every block free, no reference; swap holds the tier only */
        kvl_kv_stats ks;
        kvl_kv_cache_stats(e->kv, &ks);
        if (pg && ks.n_blocks_used != 0)
            return kvl_errorf(err, KVL_E_INVALID, "idle engine: %u blocks still used",
                              ks.n_blocks_used);
        if (swap_held != 0)
            return kvl_errorf(err, KVL_E_INVALID, "idle engine: %u swap blocks still held",
                              swap_held);
    }
    return KVL_OK;
}

kvl_status kvl_engine_check(kvl_engine *e, kvl_error *err) {
    pthread_mutex_lock(&e->mu);
    kvl_status st = check_locked(e, err);
    pthread_mutex_unlock(&e->mu);
    return st;
}

kvl_kv_cache *kvl_engine_kv_cache(kvl_engine *e) { return e->kv; }

int32_t kvl_engine_slot_of(kvl_engine *e, uint64_t id, int32_t si) {
    pthread_mutex_lock(&e->mu);
    eng_req *q = find(e, id);
    int32_t slot = q && si >= 0 && si < q->r.n_samples ? q->r.seqs[si].slot : -1;
    pthread_mutex_unlock(&e->mu);
    return slot;
}

kvl_status kvl_engine_preempt(kvl_engine *e, uint64_t id, kvl_preempt_mode mode) {
    pthread_mutex_lock(&e->mu);
    eng_req *q = find(e, id);
    kvl_status st = q ? kvl_sched_preempt(e->sched, &q->r, mode, NULL) : KVL_E_NOT_FOUND;
    pthread_mutex_unlock(&e->mu);
    return st;
}
