/*
 * GET /metrics (Prometheus text format 0.0.4, names after vLLM's with a
 * kvllm: prefix) and GET /v1/kv (the KV ledger as JSON).
 *
 * The server's own counters (responses by status, finished requests by
 * reason, tokens, latency histograms) live under met.mu and are updated by
 * the HTTP threads (a response) and the dispatcher (a FINAL). Engine
 * figures come from kvl_engine_get_stats (a snapshot taken at the end of
 * the last step: a scrape never waits for a step), the per-request rows of
 * the ledger from kvl_engine_request_info over the server's registry, the
 * per-session rows from kvl_engine_session_info. Work per scrape: the
 * registry once, at most SRV_SESSIONS sessions.
 */
#include "server/server_impl.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

const unsigned srv_status_codes[SRV_N_STATUS] = {200, 400, 401, 404, 405, 413,
                                                 429, 431, 500, 503, 0,   0};

/* vLLM's buckets */
static const double b_ttft[] = {0.001, 0.005, 0.01, 0.02,  0.04,  0.06,  0.08, 0.1,
                                0.25,  0.5,   0.75, 1.0,   2.5,   5.0,   7.5,  10.0,
                                20.0,  40.0,  80.0, 160.0, 640.0, 2560.0};
static const double b_tpot[] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,  0.3,  0.4, 0.5,
                                0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
static const double b_e2e[] = {0.3,  0.5,   0.8,   1.0,   1.5,   2.0,    2.5,
                               5.0,  10.0,  15.0,  20.0,  30.0,  40.0,   50.0,
                               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};
#define NB(a) ((int)(sizeof a / sizeof a[0]))

void srv_metrics_init(srv_metrics *m) {
    memset(m, 0, sizeof *m);
    pthread_mutex_init(&m->mu, NULL);
    m->ttft = (srv_hist){.bounds = b_ttft, .n = NB(b_ttft)};
    m->tpot = (srv_hist){.bounds = b_tpot, .n = NB(b_tpot)};
    m->itl = (srv_hist){.bounds = b_tpot, .n = NB(b_tpot)};
    m->e2e = (srv_hist){.bounds = b_e2e, .n = NB(b_e2e)};
    m->queue = (srv_hist){.bounds = b_e2e, .n = NB(b_e2e)};
}

void srv_metrics_free(srv_metrics *m) { pthread_mutex_destroy(&m->mu); }

static void hist_add(srv_hist *h, double v) {
    int i = 0;
    while (i < h->n && v > h->bounds[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum += v;
}

void srv_metrics_http(srv_metrics *m, unsigned status) {
    int i = 0;
    while (i < SRV_N_STATUS - 2 && srv_status_codes[i] != status)
        i++;
    pthread_mutex_lock(&m->mu);
    m->http[i]++; /* SRV_N_STATUS - 2: any other status */
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_final(srv_metrics *m, const kvl_event *ev) {
    const kvl_usage *u = &ev->usage;
    pthread_mutex_lock(&m->mu);
    if ((unsigned)ev->reason < 5)
        m->finished[ev->reason]++;
    m->prompt_tokens += (uint64_t)u->prompt_tokens;
    m->generation_tokens += (uint64_t)u->completion_tokens;
    m->cached_tokens += (uint64_t)u->cached_tokens;
    if (u->completion_tokens > 0)
        hist_add(&m->ttft, u->ttft_s);
    if (u->completion_tokens > 1)
        hist_add(&m->tpot, u->tpot_s);
    hist_add(&m->e2e, u->e2e_s);
    hist_add(&m->queue, u->queue_s);
    pthread_mutex_unlock(&m->mu);
}

void srv_metrics_itl(srv_metrics *m, double gap_s) {
    pthread_mutex_lock(&m->mu);
    hist_add(&m->itl, gap_s);
    pthread_mutex_unlock(&m->mu);
}

static bool head(srv_buf *b, const char *name, const char *type, const char *help) {
    return srv_buf_printf(b, "# HELP kvllm:%s %s\n# TYPE kvllm:%s %s\n", name, help, name, type);
}

static bool metric(srv_buf *b, const char *name, const char *type, const char *help, double v) {
    return head(b, name, type, help) && srv_buf_printf(b, "kvllm:%s %.17g\n", name, v);
}

static bool hist(srv_buf *b, const char *name, const char *help, const srv_hist *h) {
    bool ok = head(b, name, "histogram", help);
    uint64_t cum = 0;
    for (int i = 0; ok && i <= h->n; i++) {
        cum += h->counts[i];
        if (i < h->n)
            ok = srv_buf_printf(b, "kvllm:%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[i],
                                (unsigned long long)cum);
        else
            ok = srv_buf_printf(b, "kvllm:%s_bucket{le=\"+Inf\"} %llu\n", name,
                                (unsigned long long)cum);
    }
    return ok && srv_buf_printf(b, "kvllm:%s_sum %.17g\nkvllm:%s_count %llu\n", name, h->sum, name,
                                (unsigned long long)h->count);
}

bool srv_metrics_text(kvl_server *s, srv_buf *b) {
    kvl_engine_stats st;
    kvl_engine_get_stats(s->e, &st);
    srv_metrics m;
    pthread_mutex_lock(&s->met.mu);
    m = s->met;
    pthread_mutex_unlock(&s->met.mu);
    static const char *const reasons[5] = {"none", "stop", "length", "abort", "error"};
    const kvl_kv_stats *kv = &st.kv;
    bool ok =
        metric(b, "num_requests_running", "gauge",
               "Requests holding KV blocks (prefill or decode).", st.n_running) &&
        metric(b, "num_requests_waiting", "gauge", "Requests waiting to be admitted.",
               st.n_waiting) &&
        metric(b, "num_requests_swapped", "gauge", "Requests whose KV is in the swap area.",
               st.n_swapped) &&
        metric(b, "waiting_prompt_tokens", "gauge", "Prompt tokens of the waiting requests.",
               (double)st.waiting_prompt_tokens) &&
        metric(b, "kv_cache_usage_perc", "gauge", "Fraction of KV blocks in use (1 = full).",
               kv->n_blocks_total ? (double)kv->n_blocks_used / kv->n_blocks_total : 0) &&
        metric(b, "kv_blocks_capacity", "gauge", "KV blocks in the pool.", kv->n_blocks_total) &&
        metric(b, "kv_blocks_free", "gauge", "KV blocks free.", kv->n_blocks_free) &&
        metric(b, "kv_blocks_used", "gauge", "KV blocks held by sequences.", kv->n_blocks_used) &&
        metric(b, "kv_blocks_shared", "gauge", "KV blocks held by more than one sequence.",
               kv->n_blocks_shared) &&
        metric(b, "kv_capacity_tokens", "gauge", "Token positions the KV pool holds.",
               (double)st.capacity_tokens) &&
        metric(b, "kv_free_tokens", "gauge", "Token positions in free KV blocks.",
               (double)st.free_tokens) &&
        metric(b, "kv_bytes_capacity", "gauge", "Bytes of the KV pool.", (double)kv->bytes_total) &&
        metric(b, "kv_bytes_used", "gauge", "Bytes of KV blocks in use.", (double)kv->bytes_used) &&
        metric(b, "swap_blocks_capacity", "gauge", "Blocks of the swap area.",
               st.n_swap_blocks_total) &&
        metric(b, "swap_blocks_used", "gauge", "Blocks of the swap area in use.",
               st.n_swap_blocks_used) &&
        metric(b, "num_preemptions_total", "counter", "Preemptions (recompute and swap).",
               (double)st.n_preemptions) &&
        metric(b, "num_preemptions_recompute_total", "counter", "Preemptions by recompute.",
               (double)st.n_preempt_recompute) &&
        metric(b, "num_preemptions_swap_total", "counter", "Preemptions by swap.",
               (double)st.n_preempt_swap) &&
        metric(b, "swap_out_bytes_total", "counter", "Bytes copied to the swap area.",
               (double)st.bytes_swapped_out) &&
        metric(b, "swap_in_bytes_total", "counter", "Bytes copied back from the swap area.",
               (double)st.bytes_swapped_in) &&
        metric(b, "recomputed_tokens_total", "counter",
               "Positions computed again after preemption.", (double)st.tokens_recomputed) &&
        metric(b, "engine_steps_total", "counter", "Engine steps run.", (double)st.n_steps) &&
        metric(b, "prompt_tokens_total", "counter", "Prompt tokens of finished requests.",
               (double)m.prompt_tokens) &&
        metric(b, "generation_tokens_total", "counter", "Tokens generated by finished requests.",
               (double)m.generation_tokens) &&
        metric(b, "prompt_tokens_cached_total", "counter", "Prompt tokens whose KV was reused.",
               (double)m.cached_tokens) &&
        metric(b, "prefix_cache_queries_total", "counter",
               "Prompt tokens looked up in the prefix cache.", (double)st.prefix_lookup_tokens) &&
        metric(b, "prefix_cache_hits_total", "counter",
               "Prompt tokens served from cached blocks (first admissions).",
               (double)st.prefix_hit_tokens) &&
        metric(b, "prefix_cache_hits_readmission_total", "counter",
               "Positions a preempted request found cached again.",
               (double)st.prefix_hit_tokens_self) &&
        metric(b, "prefix_cache_blocks", "gauge", "KV blocks with a prefix-cache hash.",
               st.prefix_cached_blocks) &&
        metric(b, "prefix_cache_evicted_blocks_total", "counter",
               "Cached blocks handed out for new data.", (double)st.prefix_evicted_blocks) &&
        metric(b, "prefix_cache_seconds_saved_total", "counter",
               "Prefill time the hits saved, at the measured prefill rate.", st.prefill_s_saved) &&
        metric(b, "prefix_cache_hits_tier_total", "counter",
               "Hit positions promoted from the second tier.", (double)st.prefix_hit_tokens_tier) &&
        metric(b, "prefix_cache_demoted_blocks_total", "counter",
               "Cached blocks demoted to the second tier.", (double)st.prefix_demoted_blocks) &&
        metric(b, "prefix_cache_tier_blocks", "gauge", "Blocks in the second tier.",
               st.prefix_tier_blocks) &&
        metric(b, "prefix_cache_evicted_unused_total", "counter",
               "Cached blocks that left the cache without a hit.",
               (double)st.prefix_evicted_unused) &&
        metric(b, "kv_evicted_blocks_total", "counter",
               "KV blocks that requests' eviction policies (kv_policy) took out of their caches.",
               (double)st.kv.n_blocks_evicted) &&
        metric(b, "kv_evicted_tokens_total", "counter", "Positions those evictions dropped.",
               (double)st.kv.n_tokens_evicted) &&
        metric(b, "client_disconnects_total", "counter",
               "Requests cancelled because the client hung up.", (double)m.disconnects) &&
        metric(b, "http_connections", "gauge", "Open HTTP connections.", srv_n_conns(s)) &&
        metric(b, "http_connections_refused_total", "counter",
               "Requests answered 503 because the connection was past --max-connections.",
               (double)m.conn_refused);
    static const char *const phases[3] = {"idle", "headers", "body"};
    ok = ok && head(b, "http_deadline_closed_total", "counter",
                    "Connections closed at a read deadline, by what they were waiting for.");
    for (int i = 0; ok && i < 3; i++)
        ok = srv_buf_printf(b, "kvllm:http_deadline_closed_total{phase=\"%s\"} %llu\n", phases[i],
                            (unsigned long long)m.deadline_cut[i]);
    ok = ok && head(b, "request_success_total", "counter", "Finished requests by finish reason.");
    for (int i = 1; ok && i < 5; i++)
        ok = srv_buf_printf(b, "kvllm:request_success_total{finished_reason=\"%s\"} %llu\n",
                            reasons[i], (unsigned long long)m.finished[i]);
    ok = ok && head(b, "request_rejected_total", "counter", "Requests refused at submission.") &&
         srv_buf_printf(b,
                        "kvllm:request_rejected_total{reason=\"busy\"} %llu\n"
                        "kvllm:request_rejected_total{reason=\"invalid\"} %llu\n"
                        "kvllm:request_rejected_total{reason=\"limit\"} %llu\n",
                        (unsigned long long)m.rejected_busy, (unsigned long long)m.rejected_invalid,
                        (unsigned long long)m.rejected_limit);
    ok = ok && head(b, "http_responses_total", "counter", "HTTP responses by status code.");
    for (int i = 0; ok && i < SRV_N_STATUS - 1; i++) {
        if (i == SRV_N_STATUS - 2)
            ok = srv_buf_printf(b, "kvllm:http_responses_total{status=\"other\"} %llu\n",
                                (unsigned long long)m.http[i]);
        else if (srv_status_codes[i])
            ok = srv_buf_printf(b, "kvllm:http_responses_total{status=\"%u\"} %llu\n",
                                srv_status_codes[i], (unsigned long long)m.http[i]);
    }
    return ok && hist(b, "time_to_first_token_seconds", "Submission to first token.", &m.ttft) &&
           hist(b, "time_per_output_token_seconds", "Mean time per output token after the first.",
                &m.tpot) &&
           hist(b, "inter_token_latency_seconds",
                "Gap between two tokens of a request's first sample, as the server routes them.",
                &m.itl) &&
           hist(b, "e2e_request_latency_seconds", "Submission to the final event.", &m.e2e) &&
           hist(b, "request_queue_time_seconds", "Submission to first scheduled.", &m.queue);
}

/* ---- the ledger ---- */

const char *srv_state_name(kvl_request_state st) {
    switch (st) {
    case KVL_REQ_WAITING: return "waiting";
    case KVL_REQ_RUNNING: return "running";
    case KVL_REQ_SWAPPED: return "swapped";
    default: return "finished";
    }
}

static bool add_num(cJSON *o, const char *k, double v) { return cJSON_AddNumberToObject(o, k, v); }

static cJSON *pool_json(kvl_server *s) {
    kvl_engine_stats st;
    kvl_engine_get_stats(s->e, &st);
    const kvl_kv_stats *kv = &st.kv;
    cJSON *p = cJSON_CreateObject();
    bool ok = p &&
              cJSON_AddStringToObject(p, "layout",
                                      kv->layout == KVL_KV_LAYOUT_PAGED ? "paged" : "contiguous") &&
              cJSON_AddStringToObject(p, "kv_type_k", s->cfg.kv_type_k) &&
              cJSON_AddStringToObject(p, "kv_type_v", s->cfg.kv_type_v) &&
              add_num(p, "block_size", kv->block_size) &&
              add_num(p, "bytes_per_token", (double)kv->bytes_per_token) &&
              add_num(p, "block_bytes", (double)kv->block_bytes) &&
              add_num(p, "blocks_total", kv->n_blocks_total) &&
              add_num(p, "blocks_free", kv->n_blocks_free) &&
              add_num(p, "blocks_used", kv->n_blocks_used) &&
              add_num(p, "blocks_shared", kv->n_blocks_shared) &&
              add_num(p, "blocks_cached", st.prefix_cached_blocks) &&
              add_num(p, "occupancy", kv->occupancy) && add_num(p, "steps", (double)st.n_steps) &&
              add_num(p, "bytes_total", (double)kv->bytes_total) &&
              add_num(p, "bytes_used", (double)kv->bytes_used) &&
              add_num(p, "bytes_shared", (double)kv->bytes_shared) &&
              add_num(p, "tokens_capacity", (double)st.capacity_tokens) &&
              add_num(p, "tokens_free", (double)st.free_tokens) &&
              add_num(p, "tokens_stored", (double)kv->n_tokens) &&
              add_num(p, "sequences", kv->n_seqs) &&
              add_num(p, "swap_blocks_total", st.n_swap_blocks_total) &&
              add_num(p, "swap_blocks_used", st.n_swap_blocks_used) &&
              add_num(p, "requests_running", st.n_running) &&
              add_num(p, "requests_waiting", st.n_waiting) &&
              add_num(p, "requests_swapped", st.n_swapped);
    if (!ok) {
        cJSON_Delete(p);
        return NULL;
    }
    return p;
}

static cJSON *request_json(const kvl_request_info *ri) {
    cJSON *o = cJSON_CreateObject();
    bool ok = o && add_num(o, "id", (double)ri->id) &&
              cJSON_AddStringToObject(o, "state", srv_state_name(ri->state)) &&
              add_num(o, "session", (double)ri->session) && add_num(o, "priority", ri->priority) &&
              add_num(o, "n", ri->n_samples) && add_num(o, "blocks", ri->n_blocks) &&
              add_num(o, "blocks_shared", ri->n_blocks_shared) &&
              add_num(o, "swap_blocks", ri->n_swap_blocks) &&
              add_num(o, "kv_bytes", (double)ri->kv_bytes) &&
              add_num(o, "prompt_tokens", (double)ri->prompt_tokens) &&
              add_num(o, "computed_tokens", (double)ri->computed_tokens) &&
              add_num(o, "generated_tokens", (double)ri->generated_tokens) &&
              add_num(o, "preemptions", ri->n_preemptions) && add_num(o, "age_s", ri->age_s);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

static cJSON *session_json(const kvl_session_info *si, const char *user) {
    cJSON *o = cJSON_CreateObject(), *turns = NULL;
    bool ok = o && add_num(o, "session", (double)si->session) &&
              cJSON_AddStringToObject(o, "user", user) &&
              add_num(o, "requests", (double)si->n_requests) && add_num(o, "open", si->n_open) &&
              add_num(o, "blocks", si->n_blocks) && add_num(o, "kv_bytes", (double)si->kv_bytes) &&
              add_num(o, "blocks_shared", si->n_blocks_shared) &&
              add_num(o, "blocks_demoted", (double)si->n_blocks_demoted) &&
              add_num(o, "blocks_promoted", (double)si->n_blocks_promoted) &&
              (turns = cJSON_AddArrayToObject(o, "turns"));
    for (int32_t i = 0; ok && i < si->n_turns; i++) {
        const kvl_session_turn *t = &si->turns[i];
        cJSON *j = cJSON_CreateObject();
        ok = j && cJSON_AddItemToArray(turns, j) &&
             add_num(j, "request_id", (double)t->request_id) &&
             add_num(j, "prompt_tokens", (double)t->prompt_tokens) &&
             add_num(j, "completion_tokens", (double)t->completion_tokens) &&
             add_num(j, "cached_tokens", (double)t->cached_tokens) &&
             add_num(j, "cached_tokens_tier", (double)t->cached_tokens_tier) &&
             add_num(j, "blocks", t->n_blocks) && add_num(j, "kv_bytes", (double)t->kv_bytes) &&
             cJSON_AddStringToObject(j, "finish_reason", kvl_finish_reason_str(t->reason));
    }
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

bool srv_kv_json(kvl_server *s, srv_buf *b) {
    cJSON *root = cJSON_CreateObject(), *reqs = NULL, *sess = NULL, *pool = pool_json(s);
    bool ok = root && pool && cJSON_AddItemToObject(root, "pool", pool);
    if (!ok)
        cJSON_Delete(pool);
    ok = ok && (reqs = cJSON_AddArrayToObject(root, "requests")) &&
         (sess = cJSON_AddArrayToObject(root, "sessions"));
    /* ids first (under reg_mu), then the engine's rows (its own lock) */
    uint64_t *ids = NULL;
    size_t n = 0;
    if (ok) {
        pthread_mutex_lock(&s->reg_mu);
        ids = malloc(((size_t)s->n_open + 1) * sizeof *ids);
        for (srv_req *r = s->head; ids && r; r = r->next)
            ids[n++] = r->id;
        pthread_mutex_unlock(&s->reg_mu);
        ok = ids != NULL;
    }
    for (size_t i = 0; ok && i < n; i++) {
        kvl_request_info ri;
        if (kvl_engine_request_info(s->e, ids[i], &ri) != KVL_OK)
            continue; /* it ended meanwhile */
        cJSON *j = request_json(&ri);
        ok = j && cJSON_AddItemToArray(reqs, j);
    }
    free(ids);
    if (ok) {
        uint64_t sid[SRV_SESSIONS];
        char(*users)[SRV_USER_MAX] = malloc(sizeof s->ses_user);
        int ns = 0;
        ok = users != NULL;
        if (ok) {
            pthread_mutex_lock(&s->ses_mu);
            ns = s->n_ses;
            memcpy(sid, s->ses_id, sizeof sid);
            memcpy(users, s->ses_user, sizeof s->ses_user);
            pthread_mutex_unlock(&s->ses_mu);
        }
        for (int i = 0; ok && i < ns; i++) {
            kvl_session_info *si = malloc(sizeof *si);
            if (!si) {
                ok = false;
                break;
            }
            if (kvl_engine_session_info(s->e, sid[i], si) == KVL_OK) {
                cJSON *j = session_json(si, users[i]);
                ok = j && cJSON_AddItemToArray(sess, j);
            }
            free(si);
        }
        free(users);
    }
    char *txt = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    ok = txt && srv_buf_str(b, txt);
    free(txt);
    return ok;
}
