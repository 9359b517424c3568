/*
 * The dashboard's endpoints (docs/server.md has the JSON):
 *
 *   GET /v1/kv/map      every KV block as a cell (kvl_engine_kv_map, built
 *                       only when asked: one pass under the engine's lock)
 *   GET /v1/kv/history  a ring of SRV_HISTORY one-second samples, kept by
 *                       the dispatcher thread (?since=T: only t > T)
 *   GET /v1/plan        "what if": would a prompt of N tokens fit now, and
 *                       how many sequences of C positions the pool holds,
 *                       from the planner's block arithmetic and the live
 *                       free-block count
 *
 * Nothing here carries prompt or completion text: ids, counts and times.
 *
 * The history: the dispatcher (dispatch.c) reports each routed TOKEN
 * (srv_dash_token: sample 0's inter-token gap, or its time to first token)
 * and calls srv_dash_tick every pass (at least every 100 ms); when a second
 * is up, the tick takes kvl_engine_get_stats (the end of the last step)
 * and closes the interval into the ring. dash.mu is a leaf lock; the
 * engine's stats are read before it is taken.
 */
#include "core/core.h"
#include "plan/planner.h"
#include "server/openai.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void srv_dash_init(kvl_server *s) {
    srv_dash *d = &s->dash;
    d->mu_ok = pthread_mutex_init(&d->mu, NULL) == 0;
    d->t0 = d->t_prev = kvl_now();
    d->t_next = d->t0 + 1.0;
    kvl_engine_stats st;
    kvl_engine_get_stats(s->e, &st);
    d->steps_prev = st.n_steps;
    d->tokens_prev = st.tokens_prefilled + st.tokens_decoded;
}

void srv_dash_free(kvl_server *s) {
    if (s->dash.mu_ok)
        pthread_mutex_destroy(&s->dash.mu);
    s->dash.mu_ok = false;
}

void srv_dash_token(kvl_server *s, double gap_s, double ttft_s) {
    srv_dash *d = &s->dash;
    pthread_mutex_lock(&d->mu);
    d->n_tokens++;
    if (gap_s >= 0) {
        d->gap_sum += gap_s;
        d->n_gap++;
    }
    if (ttft_s >= 0) {
        d->ttft_sum += ttft_s;
        d->n_ttft++;
    }
    pthread_mutex_unlock(&d->mu);
}

void srv_dash_tick(kvl_server *s, double now) {
    srv_dash *d = &s->dash;
    if (now < d->t_next) /* only the dispatcher writes t_next */
        return;
    kvl_engine_stats st;
    kvl_engine_get_stats(s->e, &st);
    int64_t tokens = st.tokens_prefilled + st.tokens_decoded;
    srv_sample x = {.t = round((now - d->t0) * 1e3) / 1e3, /* as printed: since=T compares equal */
                    .occupancy = st.kv.occupancy,
                    .blocks_used = st.kv.n_blocks_used,
                    .blocks_cached = st.prefix_cached_blocks,
                    .blocks_free = st.kv.n_blocks_free,
                    .running = st.n_running,
                    .waiting = st.n_waiting,
                    .swapped = st.n_swapped,
                    .batch_tokens = st.n_steps > d->steps_prev
                                        ? (double)(tokens - d->tokens_prev) /
                                              (double)(st.n_steps - d->steps_prev)
                                        : NAN,
                    .prefix_hit_rate = st.prefix_hit_rate,
                    .prefix_tokens_saved = st.prefix_hit_tokens + st.prefix_hit_tokens_self,
                    .swap_used = st.n_swap_blocks_used,
                    .tier_blocks = st.prefix_tier_blocks,
                    .preemptions = st.n_preemptions};
    pthread_mutex_lock(&d->mu);
    x.tpot_ms = d->n_gap ? 1e3 * d->gap_sum / (double)d->n_gap : NAN;
    x.ttft_ms = d->n_ttft ? 1e3 * d->ttft_sum / (double)d->n_ttft : NAN;
    x.tokens_per_s = (double)d->n_tokens / (now - d->t_prev);
    d->gap_sum = d->ttft_sum = 0;
    d->n_gap = d->n_ttft = d->n_tokens = 0;
    d->ring[(d->head + d->n) % SRV_HISTORY] = x;
    if (d->n == SRV_HISTORY)
        d->head = (d->head + 1) % SRV_HISTORY;
    else
        d->n++;
    pthread_mutex_unlock(&d->mu);
    d->t_prev = now;
    d->steps_prev = st.n_steps;
    d->tokens_prev = tokens;
    d->t_next += 1.0;
    if (d->t_next <= now) /* the dispatcher was held up: no catching up */
        d->t_next = now + 1.0;
}

/* ---- JSON helpers: numbers written directly (a map has one per block) ---- */

static bool num_or_null(srv_buf *b, const char *key, double v) {
    return isfinite(v) ? srv_buf_printf(b, ",\"%s\":%.6g", key, v)
                       : srv_buf_printf(b, ",\"%s\":null", key);
}

/* ---- GET /v1/kv/map ---- */

static bool map_cells(const kvl_kv_map *m, srv_buf *b) {
    bool ok = srv_buf_str(b, ",\"cells\":[");
    for (uint32_t i = 0; ok && i < m->n_blocks; i++) {
        const kvl_kv_block_info *c = &m->blocks[i];
        int v = c->state == KVL_KV_BLOCK_USED     ? c->holder
                : c->state == KVL_KV_BLOCK_CACHED ? -2
                                                  : -1;
        ok = srv_buf_printf(b, i ? ",%d" : "%d", v);
    }
    ok = ok && srv_buf_str(b, "],\"shared\":[");
    bool first = true;
    for (uint32_t i = 0; ok && i < m->n_blocks; i++)
        if (m->blocks[i].refcount > 1) {
            ok = srv_buf_printf(b, first ? "%u" : ",%u", i);
            first = false;
        }
    return ok && srv_buf_str(b, "]");
}

static bool map_holders(const kvl_kv_map *m, srv_buf *b) {
    bool ok = srv_buf_str(b, ",\"holders\":[");
    for (uint32_t i = 0; ok && i < m->n_holders; i++) {
        const kvl_kv_holder *h = &m->holders[i];
        ok = srv_buf_printf(b,
                            "%s{\"request\":%llu,\"session\":%llu,\"state\":\"%s\",\"n\":%d,"
                            "\"blocks\":%u,\"shared\":%u,\"swap_blocks\":%u,\"tokens\":%lld}",
                            i ? "," : "", (unsigned long long)h->request,
                            (unsigned long long)h->session, srv_state_name(h->state), h->n_samples,
                            h->n_blocks, h->n_blocks_shared, h->n_swap_blocks,
                            (long long)h->n_tokens);
    }
    ok = ok && srv_buf_printf(b,
                              "],\"swap\":{\"n_blocks\":%u,\"n_free\":%u,\"n_tier\":%u,"
                              "\"n_held\":%u,\"cells\":[",
                              m->n_swap_blocks, m->n_swap_free, m->n_swap_tier, m->n_swap_held);
    for (uint32_t i = 0; ok && i < m->n_swap_blocks; i++) {
        const kvl_kv_swap_info *c = &m->swap[i];
        int v = c->state == KVL_KV_SWAP_HELD ? c->holder : c->state == KVL_KV_SWAP_TIER ? -3 : -1;
        ok = srv_buf_printf(b, i ? ",%d" : "%d", v);
    }
    return ok && srv_buf_str(b, "]}");
}

static bool map_json(const kvl_kv_map *m, double t, srv_buf *b) {
    return srv_buf_printf(b,
                          "{\"t\":%.3f,\"block_size\":%d,\"block_bytes\":%zu,\"n_blocks\":%u,"
                          "\"occupancy\":%.17g,\"n_used\":%u,\"n_cached\":%u,\"n_free\":%u,"
                          "\"n_shared\":%u,\"running\":%d,\"waiting\":%d,\"swapped\":%d,"
                          "\"steps\":%lld,\"in_step\":%s",
                          t, m->kv.block_size, m->kv.block_bytes, m->n_blocks, m->kv.occupancy,
                          m->n_used, m->n_cached, m->n_free, m->n_shared, m->n_running,
                          m->n_waiting, m->n_swapped, (long long)m->n_steps,
                          m->in_step ? "true" : "false") &&
           map_cells(m, b) && map_holders(m, b) && srv_buf_str(b, "}");
}

unsigned srv_dash_map(kvl_server *s, srv_buf *b) {
    uint32_t nb, ns, nh;
    kvl_engine_kv_map_size(s->e, &nb, &ns, &nh);
    kvl_kv_map m = {.blocks = malloc(((size_t)nb + 1) * sizeof *m.blocks),
                    .cap_blocks = nb,
                    .swap = malloc(((size_t)ns + 1) * sizeof *m.swap),
                    .cap_swap = ns,
                    .holders = malloc(((size_t)nh + 1) * sizeof *m.holders),
                    .cap_holders = nh};
    kvl_error err = {.msg = "out of memory"};
    kvl_status st =
        m.blocks && m.swap && m.holders ? kvl_engine_kv_map(s->e, &m, &err) : KVL_E_NOMEM;
    unsigned code = 200;
    if (st == KVL_E_UNSUPPORTED) { /* the contiguous layout */
        code = 501;
        oai_error(b, "server_error", NULL, "unsupported", "%s", err.msg);
    } else if (st != KVL_OK || !map_json(&m, kvl_now() - s->dash.t0, b)) {
        code = 500;
        oai_error(b, "server_error", NULL, NULL, "%s", st ? err.msg : "out of memory");
    }
    free(m.blocks);
    free(m.swap);
    free(m.holders);
    return code;
}

/* ---- GET /v1/kv/history ---- */

static bool sample_json(srv_buf *b, const srv_sample *x, bool first) {
    return srv_buf_printf(
               b,
               "%s{\"t\":%.3f,\"occupancy\":%.6g,\"blocks_used\":%u,\"blocks_cached\":%u,"
               "\"blocks_free\":%u,\"running\":%d,\"waiting\":%d,\"swapped\":%d",
               first ? "" : ",", x->t, x->occupancy, x->blocks_used, x->blocks_cached,
               x->blocks_free, x->running, x->waiting, x->swapped) &&
           num_or_null(b, "batch_tokens", x->batch_tokens) &&
           num_or_null(b, "tpot_ms", x->tpot_ms) && num_or_null(b, "ttft_ms", x->ttft_ms) &&
           srv_buf_printf(b,
                          ",\"prefix_hit_rate\":%.6g,\"prefix_tokens_saved\":%lld,"
                          "\"tokens_per_s\":%.6g,\"swap_blocks_used\":%u,\"tier_blocks\":%u,"
                          "\"preemptions\":%lld}",
                          x->prefix_hit_rate, (long long)x->prefix_tokens_saved, x->tokens_per_s,
                          x->swap_used, x->tier_blocks, (long long)x->preemptions);
}

/* A query parameter as a finite double in [lo, hi]; 0 when absent (*v
 * unchanged), 1 when read, -1 (400 written into b) when bad. */
static int arg_double(struct MHD_Connection *conn, const char *name, double lo, double hi,
                      double *v, srv_buf *b) {
    const char *a = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    if (!a)
        return 0;
    char *end;
    errno = 0;
    double x = strtod(a, &end);
    if (!*a || *end || errno || !isfinite(x) || x < lo || x > hi) {
        oai_error(b, "invalid_request_error", name, "invalid_value",
                  "%s: '%.40s' is not a number in [%g, %g]", name, a, lo, hi);
        return -1;
    }
    *v = x;
    return 1;
}

/* The same for an integer in [lo, hi]. */
static int arg_int(struct MHD_Connection *conn, const char *name, long long lo, long long hi,
                   long long *v, srv_buf *b) {
    const char *a = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    if (!a)
        return 0;
    char *end;
    errno = 0;
    long long x = strtoll(a, &end, 10);
    if (!*a || *end || errno || x < lo || x > hi) {
        oai_error(b, "invalid_request_error", name, "invalid_value",
                  "%s: '%.40s' is not an integer in [%lld, %lld]", name, a, lo, hi);
        return -1;
    }
    *v = x;
    return 1;
}

unsigned srv_dash_history(kvl_server *s, struct MHD_Connection *conn, srv_buf *b) {
    double since = -1;
    if (arg_double(conn, "since", 0, 1e12, &since, b) < 0)
        return 400;
    srv_dash *d = &s->dash;
    srv_sample *copy = malloc(sizeof d->ring);
    if (!copy)
        return oai_error(b, "server_error", NULL, NULL, "out of memory"), 500;
    int n = 0;
    pthread_mutex_lock(&d->mu);
    for (int i = 0; i < d->n; i++) {
        const srv_sample *x = &d->ring[(d->head + i) % SRV_HISTORY];
        if (x->t > since)
            copy[n++] = *x;
    }
    pthread_mutex_unlock(&d->mu);
    bool ok = srv_buf_printf(b, "{\"interval_s\":1.0,\"capacity\":%d,\"t\":%.3f,\"samples\":[",
                             SRV_HISTORY, kvl_now() - d->t0);
    for (int i = 0; ok && i < n; i++)
        ok = sample_json(b, &copy[i], i == 0);
    free(copy);
    if (!(ok && srv_buf_str(b, "]}")))
        return oai_error(b, "server_error", NULL, NULL, "out of memory"), 500;
    return 200;
}

/* ---- GET /v1/plan ---- */

#define PLAN_MAX_TOKENS 2147483647LL

static bool plan_prompt(kvl_server *s, const kvl_engine_stats *st, long long n, srv_buf *b) {
    const kvl_engine_config *c = &s->cfg;
    size_t need = kvl_plan_blocks_for_tokens((size_t)n, c->block_size);
    uint32_t avail = st->kv.n_blocks_free;
    bool ctx_ok = n <= c->max_ctx, pool_ok = need <= c->n_blocks;
    bool now = ctx_ok && pool_ok && need <= avail;
    char reason[256] = "";
    if (!ctx_ok)
        snprintf(reason, sizeof reason,
                 "%lld tokens are more than the context of %d positions per sequence", n,
                 c->max_ctx);
    else if (!pool_ok)
        snprintf(reason, sizeof reason, "it needs %zu blocks; the whole pool holds %u", need,
                 c->n_blocks);
    else if (!now)
        snprintf(reason, sizeof reason,
                 "it needs %zu blocks and %u are free now: it would wait for blocks or preempt",
                 need, avail);
    bool ok = srv_buf_printf(b,
                             "\"prompt_tokens\":%lld,\"fits_now\":%s,\"blocks_needed\":%zu,"
                             "\"blocks_available\":%u,\"fits_ever\":%s,\"kv_bytes_needed\":%zu,",
                             n, now ? "true" : "false", need, avail,
                             ctx_ok && pool_ok ? "true" : "false", need * st->kv.block_bytes);
    if (ok && reason[0]) {
        cJSON *r = cJSON_CreateString(reason);
        char *txt = r ? cJSON_PrintUnformatted(r) : NULL;
        ok = txt && srv_buf_printf(b, "\"reason\":%s,", txt);
        free(txt);
        cJSON_Delete(r);
    }
    return ok;
}

unsigned srv_dash_plan(kvl_server *s, struct MHD_Connection *conn, srv_buf *b) {
    const kvl_engine_config *c = &s->cfg;
    long long n = 0, ctx = c->max_ctx;
    int has_n = arg_int(conn, "prompt_tokens", 1, PLAN_MAX_TOKENS, &n, b);
    if (has_n < 0 || arg_int(conn, "context", 1, PLAN_MAX_TOKENS, &ctx, b) < 0)
        return 400;
    kvl_engine_stats st;
    kvl_engine_get_stats(s->e, &st);
    kvl_plan_capacity cap = {.block_size = c->block_size,
                             .block_bytes = st.kv.block_bytes,
                             .kv_budget = c->kv_mem,
                             .n_blocks = c->n_blocks,
                             .n_tokens = (size_t)c->capacity_tokens};
    size_t per_seq = kvl_plan_blocks_for_tokens((size_t)ctx, c->block_size);
    size_t seq_bytes = 0;
    kvl_plan_kv_bytes_for(st.kv.block_bytes, c->block_size, 1, (size_t)ctx, &seq_bytes, NULL);
    bool ok = srv_buf_str(b, "{") && (has_n == 0 || plan_prompt(s, &st, n, b)) &&
              srv_buf_printf(b,
                             "\"context\":%lld,\"context_fits\":%s,\"blocks_per_user\":%zu,"
                             "\"kv_bytes_per_user\":%zu,\"users_at_context\":%zu,"
                             "\"users_now\":%zu,\"max_seqs\":%d,\"max_ctx\":%d,"
                             "\"block_size\":%d,\"n_blocks\":%u,\"blocks_free\":%u,"
                             "\"bytes_per_token\":%zu,\"kv_type_k\":\"%s\",\"kv_type_v\":\"%s\"}",
                             ctx, ctx <= c->max_ctx ? "true" : "false", per_seq, seq_bytes,
                             kvl_plan_max_seqs(&cap, (size_t)ctx),
                             per_seq ? st.kv.n_blocks_free / per_seq : 0, c->max_seqs, c->max_ctx,
                             c->block_size, c->n_blocks, st.kv.n_blocks_free, c->bytes_per_token,
                             c->kv_type_k, c->kv_type_v);
    if (!ok)
        return oai_error(b, "server_error", NULL, NULL, "out of memory"), 500;
    return 200;
}
