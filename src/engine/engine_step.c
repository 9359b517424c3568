/*
 * One engine step: handle cancellations, let the scheduler plan the batch,
 * run it through the executor (outside the lock), then sample every row,
 * turn tokens into text and events, and end what is finished.
 *
 * No allocation here in the steady state: records are built at submit,
 * the batch arrays belong to the scheduler, sampling scratch to the
 * engine. Ending a request frees its record.
 *
 * Events per step are bounded: a request scheduled with a alive samples
 * can emit at most 2a + 1 (a token and a sample end each, one final), and
 * the scheduler is given only as many requests as the ring's room allows.
 */
#include "engine/engine_impl.h"

#include <math.h>
#include <stdio.h>

/* log of the sum of exp over the row (the softmax's normaliser). */
static double log_sum_exp(const float *row, int32_t n) {
    float mx = row[0];
    for (int32_t i = 1; i < n; i++)
        mx = row[i] > mx ? row[i] : mx;
    double sum = 0;
    for (int32_t i = 0; i < n; i++)
        sum += exp((double)(row[i] - mx));
    return (double)mx + log(sum);
}

/* The k most likely tokens of row into ev->top, best first, ties by the
 * lower id: an insertion into the short sorted list. */
static void top_logprobs(kvl_event *ev, const float *row, int32_t n, int32_t k, double lse) {
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        float v = row[i];
        if (m == k && !(v > row[ev->top[m - 1].token]))
            continue;
        int32_t j = m < k ? m++ : k - 1;
        while (j > 0 && v > row[ev->top[j - 1].token]) {
            ev->top[j] = ev->top[j - 1];
            j--;
        }
        ev->top[j].token = i;
    }
    for (int32_t j = 0; j < m; j++)
        ev->top[j].logprob = (float)((double)row[ev->top[j].token] - lse);
    ev->n_top = m;
}

static void sample_end(kvl_engine *e, eng_req *q, int32_t si, kvl_finish_reason why) {
    kvl_seq *s = &q->r.seqs[si];
    s->reason = why;
    if (q->session && q->end_blocks == 0) { /* the footprint, for the session ledger */
        kvl_request_info ri;
        kvl_engine_req_info(e, q, &ri);
        q->end_blocks = ri.n_blocks - (ri.n_blocks_shared - ri.n_blocks_shared / q->r.n_alive);
        q->end_bytes = (size_t)q->end_blocks * (ri.n_blocks ? ri.kv_bytes / ri.n_blocks : 0);
    }
    if (q->r.n_samples > 1) {
        kvl_event *ev = &e->scratch;
        memset(ev, 0, offsetof(kvl_event, text));
        ev->type = KVL_EV_SAMPLE_END;
        ev->id = q->r.id;
        ev->tag = q->tag;
        ev->index = si;
        ev->reason = why;
        kvl_detok_flush(&q->detok[si], ev->text, &ev->text_len);
        kvl_engine_push(e, ev);
    }
    kvl_sched_end_sample(e->sched, &q->r, si);
}

/* The request's overall reason: the first sample's (one sample), else
 * length when any sample ran out of room, else stop. */
static kvl_finish_reason overall(const eng_req *q) {
    if (q->r.n_samples == 1)
        return q->r.seqs[0].reason;
    for (int32_t i = 0; i < q->r.n_samples; i++)
        if (q->r.seqs[i].reason == KVL_FINISH_LENGTH)
            return KVL_FINISH_LENGTH;
    return KVL_FINISH_STOP;
}

/* Sample the next token of sample si from row; emit it; end the sample
 * when it is done. */
static void sample_one(kvl_engine *e, eng_req *q, int32_t si, const float *row, double now) {
    kvl_seq *s = &q->r.seqs[si];
    int32_t nv = (int32_t)e->m->hp.n_vocab;
    memcpy(e->work, row, (size_t)nv * sizeof *e->work);
    kvl_sampler_penalize_output(q->samplers[si], e->work, s->hist + s->len - s->n_gen, s->n_gen);
    int32_t next = kvl_sampler_sample(q->samplers[si], e->work, s->hist, s->len);
    s->n_gen++;
    q->n_completion++;
    if (q->t_first == 0)
        q->t_first = now;
    q->t_last = now;
    bool eog = next == e->eos || kvl_tokenizer_is_eog(e->m->tok, next);
    if (!q->ignore_eos && (eog || next == e->bos)) {
        sample_end(e, q, si, KVL_FINISH_STOP);
        return;
    }
    s->hist[s->len++] = next;
    size_t n;
    const char *piece = kvl_tokenizer_piece(e->m->tok, q->last[si], next, &n);
    q->last[si] = next;
    kvl_event *ev = &e->scratch;
    memset(ev, 0, offsetof(kvl_event, text));
    ev->type = KVL_EV_TOKEN;
    ev->id = q->r.id;
    ev->tag = q->tag;
    ev->index = si;
    ev->token = next;
    double lse = log_sum_exp(row, nv);
    ev->logprob = (float)((double)row[next] - lse);
    if (q->top_logprobs)
        top_logprobs(ev, row, nv, q->top_logprobs, lse);
    bool stopped = kvl_detok_push(&q->detok[si], piece, n, (const char *const *)q->stops, q->n_stop,
                                  ev->text, &ev->text_len);
    kvl_engine_push(e, ev);
    if (stopped)
        sample_end(e, q, si, KVL_FINISH_STOP);
    else if (s->n_gen >= q->r.max_tokens ||
             (s->len >= e->cfg.p.max_ctx && !kvl_kv_policy_evicts(&q->r.policy)))
        sample_end(e, q, si, KVL_FINISH_LENGTH);
}

/* The items of one request are adjacent in a plan: the index of the next
 * request's first item (finishing a request frees it, so it is visited
 * once). */
static int32_t next_request(const kvl_sched_plan *pl, int32_t i) {
    const kvl_request *r = pl->items[i].r;
    while (i < pl->n_items && pl->items[i].r == r)
        i++;
    return i;
}

static void handle_cancels(kvl_engine *e) {
    int32_t cap = e->cfg.p.event_capacity;
    for (eng_req *q = e->all_head, *nx; q && e->ring_n < cap; q = nx) {
        nx = q->all_next;
        if (q->cancel)
            kvl_engine_finish(e, q, KVL_FINISH_CANCELLED, KVL_E_CANCELLED, "cancelled");
    }
}

void kvl_engine_snapshot(kvl_engine *e) {
    kvl_engine_stats *st = &e->stats;
    kvl_kv_cache_stats(e->kv, &st->kv);
    st->capacity_tokens = (int64_t)kvl_sched_n_blocks(e->sched) * kvl_sched_block_size(e->sched);
    st->free_tokens = (int64_t)st->kv.n_blocks_free * kvl_sched_block_size(e->sched);
    st->n_waiting = kvl_sched_count(e->sched, KVL_REQ_WAITING);
    st->n_running = kvl_sched_count(e->sched, KVL_REQ_RUNNING);
    st->n_swapped = kvl_sched_count(e->sched, KVL_REQ_SWAPPED);
    st->waiting_prompt_tokens = kvl_sched_waiting_tokens(e->sched);
    st->n_swap_blocks_total = kvl_kv_swap_n_blocks(e->swap);
    st->n_swap_blocks_used = st->n_swap_blocks_total - kvl_kv_swap_n_free(e->swap);
    st->n_steps = e->n_steps;
    st->n_requests_accepted = e->n_accepted;
    st->n_requests_refused = e->n_refused;
    st->n_requests_finished = e->n_finished;
    const kvl_sched_counters *c = kvl_sched_counters_get(e->sched);
    st->n_preemptions = c->n_preemptions;
    st->n_preempt_recompute = c->n_preempt_recompute;
    st->n_preempt_swap = c->n_preempt_swap;
    st->tokens_recomputed = c->tokens_recomputed;
    st->n_blocks_swapped_out = c->n_blocks_swapped_out;
    st->n_blocks_swapped_in = c->n_blocks_swapped_in;
    st->bytes_swapped_out = c->bytes_swapped_out;
    st->bytes_swapped_in = c->bytes_swapped_in;
    st->tokens_prefilled = e->tok_prefill;
    st->tokens_decoded = e->tok_decode;
    st->prefill_tok_s = e->prefill_rate;
    st->prefix_lookup_tokens = c->prefix_lookup_tokens;
    st->prefix_hit_tokens = c->prefix_hit_tokens;
    st->prefix_hit_tokens_self = c->prefix_hit_tokens_self;
    st->prefix_hit_free_blocks = c->prefix_hit_free_blocks;
    st->prefix_hit_tokens_tier = c->prefix_hit_tokens_tier;
    st->prefix_hit_tokens_pool =
        c->prefix_hit_tokens + c->prefix_hit_tokens_self - c->prefix_hit_tokens_tier;
    st->prefix_hit_rate = c->prefix_lookup_tokens > 0
                              ? (double)(c->prefix_hit_tokens + c->prefix_hit_tokens_self) /
                                    (double)c->prefix_lookup_tokens
                              : 0;
    st->prefix_swapin_hit_blocks = c->prefix_swapin_hit_blocks;
    st->prefix_evicted_unused = c->prefix_evicted_unused;
    st->prefix_tier_seconds = c->prefix_tier_seconds;
    if (e->pc) {
        kvl_prefix_cache_stats ps;
        kvl_prefix_cache_stats_get(e->pc, &ps);
        st->prefix_cached_blocks = ps.n_entries;
        st->prefix_evicted_blocks = ps.n_evicted;
    }
    if (e->tier) {
        kvl_kv_tier_stats ts;
        kvl_kv_tier_stats_get(e->tier, &ts);
        st->prefix_tier_blocks = ts.n_entries;
        st->prefix_demoted_blocks = ts.n_put;
        st->prefix_promoted_blocks = ts.n_taken;
        st->prefix_tier_dropped = ts.n_dropped;
        st->prefix_tier_dropped_swap = ts.n_dropped_swap;
        st->prefix_evicted_unused += ts.n_dropped_unhit;
    }
    st->prefill_s_saved =
        e->prefill_rate > 0
            ? (double)(c->prefix_hit_tokens + c->prefix_hit_tokens_self) / e->prefill_rate
            : 0;
    st->swap_bytes_s = e->swap_rate;
}

/* After a batch: the rates the cost rule weighs, as moving averages. */
static void update_rates(kvl_engine *e, const kvl_sched_plan *pl, double dt) {
    if (pl->n_prefill >= 16 && pl->n_prefill >= 4 * pl->n_decode && dt > 0) {
        double r = (double)pl->n_prefill / dt; /* decodes ride along nearly free */
        e->prefill_rate = e->prefill_rate > 0 ? 0.8 * e->prefill_rate + 0.2 * r : r;
    }
    const kvl_sched_counters *c = kvl_sched_counters_get(e->sched);
    size_t bytes = c->bytes_swapped_out + c->bytes_swapped_in;
    if (c->swap_seconds > 0 && bytes > ((size_t)1 << 20))
        e->swap_rate = (double)bytes / c->swap_seconds;
    kvl_sched_set_rates(e->sched, e->prefill_rate, e->swap_rate);
}

kvl_status kvl_engine_step_impl(kvl_engine *e, int32_t *n_tokens, kvl_error *err) {
    (void)err;
    if (n_tokens)
        *n_tokens = 0;
    pthread_mutex_lock(&e->mu);
    e->stepping = true;
    handle_cancels(e);
    int32_t room = e->cfg.p.event_capacity - e->ring_n;
    int32_t per_req = 2 * e->cfg.p.max_seqs + 1; /* bound on one request's events */
    if (per_req > 2 * KVL_MAX_SAMPLES + 1)
        per_req = 2 * KVL_MAX_SAMPLES + 1;
    kvl_sched_plan *pl;
    kvl_sched_schedule(e->sched, room / per_req, &pl);
    double now = kvl_now();
    for (int32_t i = 0; i < pl->n_items; i++) {
        eng_req *q = pl->items[i].r->owner;
        if (q->t_sched == 0)
            q->t_sched = now;
    }
    pthread_mutex_unlock(&e->mu);

    kvl_status st = KVL_OK;
    const float *logits = NULL;
    int32_t n_out = 0;
    kvl_error xerr = {0};
    double t0 = kvl_now(), dt = 0;
    if (pl->batch.n_tokens > 0) {
        kvl_kv_iface kv = kvl_kv_cache_iface(e->kv);
        st = kvl_executor_run(e->x, &pl->batch, &kv, &logits, &n_out, &xerr);
        dt = kvl_now() - t0;
    }

    pthread_mutex_lock(&e->mu);
    now = kvl_now();
    if (st) { /* the batch failed: every request in it ends with the error */
        for (int32_t i = 0; i < pl->n_items; i = next_request(pl, i))
            kvl_engine_finish(e, pl->items[i].r->owner, KVL_FINISH_ERROR, st, xerr.msg);
    } else {
        kvl_sched_after_run(e->sched, pl);
        int32_t nv = (int32_t)e->m->hp.n_vocab;
        for (int32_t i = 0; i < pl->n_items; i++) {
            kvl_sched_item *it = &pl->items[i];
            eng_req *q = it->r->owner;
            if (it->logit_row < 0)
                continue;
            const float *row = logits + (size_t)it->logit_row * (size_t)nv;
            if (it->fork_after) { /* every sample starts from the prompt's logits */
                for (int32_t k = 0; k < q->r.n_samples; k++)
                    if (!q->r.seqs[k].done)
                        sample_one(e, q, k, row, now);
            } else {
                sample_one(e, q, it->si, row, now);
            }
        }
        /* end requests whose samples all ended (each once) */
        for (int32_t i = 0; i < pl->n_items; i = next_request(pl, i)) {
            kvl_request *r = pl->items[i].r;
            if (r->n_alive == 0)
                kvl_engine_finish(e, r->owner, overall(r->owner), KVL_OK, NULL);
        }
        e->tok_prefill += pl->n_prefill;
        e->tok_decode += pl->n_decode;
        update_rates(e, pl, dt);
    }
    if (pl->batch.n_tokens > 0)
        e->n_steps++;
    if (n_tokens)
        *n_tokens = pl->batch.n_tokens;
    kvl_engine_snapshot(e);
    e->stepping = false;
    pthread_mutex_unlock(&e->mu);
    return KVL_OK;
}
