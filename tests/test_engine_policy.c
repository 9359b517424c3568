/*
 * Per-request KV policies in the serving engine (docs/eviction.md,
 * "Where it runs"), on stories260K with f32 KV in blocks of 4 positions:
 *   - a budget that holds the whole request: window and sinks give the
 *     same tokens and log-probabilities (bits) as full at temperature 0;
 *   - a small budget: at every step the request's table holds at most
 *     ceil(budget / 4) blocks, the sink block stays (sinks, h2o, snapkv) or
 *     moves (window), generation runs past the engine's context to
 *     max_tokens, and the usage counts the evicted blocks and positions;
 *   - a mixed batch of full, window, sinks, h2o and snapkv requests gives
 *     each the tokens it gets alone (batch-invariant kernels);
 *   - an evicting request preempted by recompute finishes with max_tokens
 *     (snapkv also when preempted in the middle of its chunked prefill);
 *   - the engine's window stream equals the KV layer's own streaming path
 *     (what `kvllm ppl --stream` runs: make_room before each token, the
 *     token at its place in the cache) driven by hand with argmax; for h2o
 *     and snapkv the same, and the cache (every full block's bytes, shifts
 *     and attention mass) equal after every step; snapkv with a prompt over
 *     its budget prefilled in one batch and in chunks of 7, 13 and 16;
 *   - snapkv within its budget gives sinks' tokens;
 *   - a slot reused by a second h2o request starts from zero mass;
 *   - the attention mass with 1, 2 and 3 engine threads (bounded rounding
 *     when a query's heads are split between threads);
 *   - refusals name the field: n, heavy, obs_window, the budget's bounds,
 *     the layout.
 * kvl_engine_check runs after every step (it asserts the budget too); at
 * the end every block is free.
 */
#include "core/pool.h"
#include "engine/engine_debug.h"
#include "engine/executor.h"
#include "kv/kv_cache.h"
#include "kv/kv_paged.h"
#include "testutil.h"

#include <stdlib.h>

#define BLOCK 5120
#define MAXT 512

typedef struct rlog {
    int32_t toks[MAXT];
    float lp[MAXT];
    int32_t n, n_final;
    kvl_finish_reason reason;
    kvl_usage usage;
} rlog;

static rlog logs[8];

static int32_t g_threads = 1, g_mbt = 64; /* the next engines' threads and max_batch_tokens */

static void drain(kvl_engine *e) {
    kvl_event ev[64];
    int n;
    while ((n = kvl_engine_poll(e, ev, 64, 0)) > 0)
        for (int i = 0; i < n; i++) {
            if (ev[i].id >= 8)
                continue;
            rlog *l = &logs[ev[i].id];
            if (ev[i].type == KVL_EV_TOKEN && l->n < MAXT) {
                l->toks[l->n] = ev[i].token;
                l->lp[l->n++] = ev[i].logprob;
            } else if (ev[i].type == KVL_EV_FINAL) {
                l->n_final++;
                l->reason = ev[i].reason;
                l->usage = ev[i].usage;
            }
        }
}

static kvl_engine *mk(const kvl_model *m, uint32_t n_blocks, int32_t max_seqs, int32_t max_ctx,
                      bool contiguous) {
    kvl_engine_params p = kvl_engine_defaults();
    p.n_threads = g_threads;
    p.block_size = 4;
    p.kv_type_k = p.kv_type_v = "f32";
    p.kv_mem = (size_t)n_blocks * BLOCK;
    p.max_seqs = max_seqs;
    p.max_batch_tokens = g_mbt;
    p.max_ctx = max_ctx;
    p.batch_invariant = true;
    p.preempt = KVL_PREEMPT_RECOMPUTE;
    if (contiguous) {
        p.kv_layout = KVL_KV_LAYOUT_CONTIGUOUS;
        p.kv_mem = (size_t)max_seqs * (size_t)max_ctx * 1280;
    }
    kvl_engine *e = NULL;
    kvl_error err;
    if (kvl_engine_init(m, &p, &e, &err))
        fprintf(stderr, "engine init: %s\n", err.msg);
    memset(logs, 0, sizeof logs);
    return e;
}

static int32_t prompt[8][128];
static float g_heavy;     /* h2o's heavy share for the next submits (0: default) */
static int32_t g_obs = 4; /* snapkv's observation window for the next submits */

static kvl_status submit(kvl_engine *e, int which, int32_t n_prompt, int32_t max_tokens,
                         kvl_kv_policy_kind kind, int32_t budget, int32_t n, uint64_t *id,
                         kvl_error *err) {
    int32_t *t = prompt[which];
    kvt_pattern_prompt(t, n_prompt, which);
    kvl_request_params rp = kvt_greedy_request(t, n_prompt, max_tokens, n);
    rp.repeat_penalty = 1.0f; /* greedy = the argmax (test_against_stream) */
    rp.ignore_eos = true;
    rp.kv_policy.kind = kind;
    rp.kv_policy.budget_tokens = budget;
    rp.kv_policy.heavy = g_heavy;
    rp.kv_policy.obs_window = g_obs;
    return kvl_engine_submit(e, &rp, id, err);
}

static uint64_t submit_ok(kvl_engine *e, int which, int32_t n_prompt, int32_t max_tokens,
                          kvl_kv_policy_kind kind, int32_t budget) {
    uint64_t id = 0;
    kvl_error err;
    if (submit(e, which, n_prompt, max_tokens, kind, budget, 1, &id, &err)) {
        fprintf(stderr, "submit: %s\n", err.msg);
        CHECK(!"submit");
    }
    return id;
}

static void step(kvl_engine *e) {
    kvl_error err;
    CHECK(kvl_engine_step(e, NULL, &err) == KVL_OK);
    if (kvl_engine_check(e, &err) != KVL_OK) {
        fprintf(stderr, "check: %s\n", err.msg);
        CHECK(!"engine check");
    }
    drain(e);
}

static void run_to_idle(kvl_engine *e, int max_steps) {
    for (int s = 0; !kvl_engine_idle(e) && s < max_steps; s++)
        step(e);
    CHECK(kvl_engine_idle(e));
}

static void check_idle(kvl_engine *e) {
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.kv.n_blocks_used, 0);
}

static bool same(const rlog *a, const rlog *b) {
    if (a->n != b->n)
        return false;
    for (int32_t i = 0; i < a->n; i++)
        if (a->toks[i] != b->toks[i] || memcmp(&a->lp[i], &b->lp[i], sizeof(float)))
            return false;
    return true;
}

/* FNV-1a over n bytes, continuing h. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* What slot seq of pg holds: its length, its full blocks' bytes (every
 * layer's K and V), their rotation shifts and their attention mass. */
static uint64_t cache_hash(const kvl_kv_paged *pg, int32_t seq) {
    const kvl_block_table *t = kvl_kv_paged_table(pg, seq);
    const kvl_block_layout *lay = kvl_kv_paged_layout(pg);
    uint8_t *buf = malloc(lay->block_bytes);
    uint64_t h = fnv(0xcbf29ce484222325ull, &t->n_tokens, sizeof t->n_tokens);
    for (int32_t j = 0; buf && j < t->n_tokens / lay->block_size; j++) {
        kvl_kv_paged_block_save(pg, seq, (uint32_t)j, buf);
        h = fnv(h, buf, lay->block_bytes);
        int32_t sh = t->shifted ? t->shift[j] : 0;
        h = fnv(h, &sh, sizeof sh);
    }
    free(buf);
    /* the mass of a scored policy's slot (others have none to speak of,
     * though the array exists once any slot had h2o or snapkv) */
    kvl_kv_seq_stats st;
    kvl_error err;
    const uint64_t *ms = kvl_kv_paged_mass(pg, seq);
    bool scored = kvl_kv_paged_seq_stats_get(pg, seq, &st, &err) == KVL_OK &&
                  (st.policy == KVL_KV_POLICY_H2O || st.policy == KVL_KV_POLICY_SNAPKV);
    return ms && scored ? fnv(h, ms, t->n_blocks * sizeof *ms) : h;
}

/* After a step: the cache of request id's slot when it has just produced
 * a token (not its last: the request ends in that step), in hash[n - 1]. */
static void track(kvl_engine *e, uint64_t id, int32_t *seen, uint64_t *hash) {
    if (logs[id].n != *seen && !logs[id].n_final) {
        const kvl_kv_paged *pg = kvl_kv_cache_paged(kvl_engine_kv_cache(e));
        hash[logs[id].n - 1] = cache_hash(pg, kvl_engine_slot_of(e, id, 0));
    }
    *seen = logs[id].n;
}

/* Budget 64 >= prompt 20 + 40 outputs: nothing is evicted, bits equal. */
static void test_identical(const kvl_model *m) {
    rlog ref;
    kvl_kv_policy_kind kinds[] = {KVL_KV_POLICY_FULL, KVL_KV_POLICY_WINDOW, KVL_KV_POLICY_SINKS};
    for (int k = 0; k < 3; k++) {
        kvl_engine *e = mk(m, 40, 2, 128, false);
        uint64_t id = submit_ok(e, 0, 20, 40, kinds[k], 64);
        run_to_idle(e, 200);
        CHECK_EQ_INT(logs[id].n, 40);
        CHECK_EQ_INT(logs[id].usage.evicted_blocks, 0);
        CHECK_EQ_INT(logs[id].usage.kv_policy, kinds[k]);
        if (k == 0)
            ref = logs[id];
        else
            CHECK(same(&logs[id], &ref));
        check_idle(e);
        kvl_engine_free(e);
    }
}

/* Budget 16 (4 blocks), prompt 10, 150 outputs on an engine of context 48:
 * bounded table at every step, past the context, counted evictions. */
static void test_small_budget(const kvl_model *m, kvl_kv_policy_kind kind) {
    kvl_engine *e = mk(m, 24, 2, 48, false);
    uint64_t id = submit_ok(e, 0, 10, 150, kind, 16);
    uint32_t first = UINT32_MAX;
    bool first_moved = false;
    int64_t max_blocks = 0;
    for (int s = 0; s < 400 && !kvl_engine_idle(e); s++) {
        step(e);
        kvl_request_info ri;
        if (kvl_engine_request_info(e, id, &ri) != KVL_OK)
            break;
        CHECK(ri.n_blocks <= 4);
        CHECK_EQ_INT(ri.kv_policy, kind);
        max_blocks = ri.n_blocks > max_blocks ? ri.n_blocks : max_blocks;
        int32_t slot = kvl_engine_slot_of(e, id, 0);
        const kvl_block_table *t =
            kvl_kv_paged_table(kvl_kv_cache_paged(kvl_engine_kv_cache(e)), slot);
        if (t && t->n_blocks) {
            if (first == UINT32_MAX)
                first = t->ids[0];
            first_moved |= t->ids[0] != first;
        }
    }
    CHECK_EQ_INT(max_blocks, 4);
    CHECK_EQ_INT(logs[id].n_final, 1);
    CHECK_EQ_INT(logs[id].n, 150);
    CHECK_EQ_INT(logs[id].reason, KVL_FINISH_LENGTH);
    const kvl_usage *u = &logs[id].usage;
    CHECK_EQ_INT(u->kv_policy, kind);
    /* fed: 10 + 149 positions; at most 16 remain */
    CHECK(u->evicted_tokens >= 159 - 16 && u->evicted_tokens <= 159);
    CHECK_EQ_INT(u->evicted_tokens, u->evicted_blocks * 4);
    CHECK(kind == KVL_KV_POLICY_WINDOW ? first_moved : !first_moved); /* the sink block stays */
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.kv.n_blocks_evicted, u->evicted_blocks);
    check_idle(e);
    kvl_engine_free(e);
}

/* Full and evicting requests together (snapkv with a prompt over its
 * budget, prefilled in the same steps as the others' chunks and decodes):
 * each gets its tokens alone and the same cache after each of its steps
 * (each slot's mass is its own), and each evicting one holds at most its
 * budget once decoding. */
static void test_mixed(const kvl_model *m) {
    enum { NK = 5 };
    rlog alone[NK];
    kvl_kv_policy_kind kinds[NK] = {KVL_KV_POLICY_FULL, KVL_KV_POLICY_WINDOW, KVL_KV_POLICY_SINKS,
                                    KVL_KV_POLICY_H2O, KVL_KV_POLICY_SNAPKV};
    int32_t budgets[NK] = {0, 16, 20, 16, 20}, prompts[NK] = {12, 12, 12, 12, 30};
    static uint64_t h_alone[NK][32], h_mixed[NK][32];
    int32_t seen[NK] = {0};
    for (int k = 0; k < NK; k++) {
        kvl_engine *e = mk(m, 64, NK, 64, false);
        uint64_t id = submit_ok(e, k, prompts[k], 30, kinds[k], budgets[k]);
        for (int s = 0; s < 200 && !kvl_engine_idle(e); s++) {
            step(e);
            track(e, id, &seen[k], h_alone[k]);
        }
        alone[k] = logs[id];
        CHECK_EQ_INT(alone[k].n, 30);
        kvl_engine_free(e);
    }
    kvl_engine *e = mk(m, 64, NK, 64, false);
    uint64_t ids[NK];
    for (int k = 0; k < NK; k++) {
        ids[k] = submit_ok(e, k, prompts[k], 30, kinds[k], budgets[k]);
        seen[k] = 0;
    }
    for (int s = 0; s < 200 && !kvl_engine_idle(e); s++) {
        step(e);
        for (int k = 0; k < NK; k++)
            track(e, ids[k], &seen[k], h_mixed[k]);
        for (int k = 1; k < NK; k++) {
            kvl_request_info ri;
            if (logs[ids[k]].n > 0 && !logs[ids[k]].n_final &&
                kvl_engine_request_info(e, ids[k], &ri) == KVL_OK)
                CHECK((int32_t)ri.n_blocks <= (budgets[k] + 3) / 4);
        }
    }
    CHECK(kvl_engine_idle(e));
    for (int k = 0; k < NK; k++) {
        CHECK(same(&logs[ids[k]], &alone[k]));
        /* and the same cache (bytes, shifts, mass) after each of its steps */
        CHECK(!memcmp(h_mixed[k], h_alone[k], 29 * sizeof h_alone[k][0]));
    }
    for (int k = 1; k < NK; k++)
        CHECK(logs[ids[k]].usage.evicted_blocks > 0);
    CHECK_EQ_INT(logs[ids[0]].usage.evicted_blocks, 0);
    check_idle(e);
    kvl_engine_free(e);
}

/* An evicting request preempted (recompute) after `after` steps still
 * finishes; snapkv with a prompt of 30 over its budget of 20 in chunks of
 * 8, preempted in its prefill (after 2) and after its cut (after 30). */
static void test_preempt(const kvl_model *m, kvl_kv_policy_kind kind, int after) {
    bool snap = kind == KVL_KV_POLICY_SNAPKV;
    g_mbt = snap ? 8 : 64;
    kvl_engine *e = mk(m, 24, 2, 48, false);
    uint64_t id = submit_ok(e, 0, snap ? 30 : 10, 60, kind, snap ? 20 : 16);
    for (int s = 0; s < after; s++)
        step(e);
    g_mbt = 64;
    CHECK(kvl_engine_preempt(e, id, KVL_PREEMPT_SWAP) == KVL_OK); /* falls back to recompute */
    kvl_request_info ri;
    CHECK(kvl_engine_request_info(e, id, &ri) == KVL_OK);
    CHECK_EQ_INT(ri.state, KVL_REQ_WAITING);
    run_to_idle(e, 300);
    CHECK_EQ_INT(logs[id].n, 60);
    CHECK_EQ_INT(logs[id].usage.n_preemptions, 1);
    check_idle(e);
    kvl_engine_free(e);
}

/* The index of the largest logit (the first of ties). */
static int32_t argmax(const float *row, int32_t n) {
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        b = row[i] > row[b] ? i : b;
    return b;
}

/* A request's run: its tokens, and what its cache held after the step
 * that produced each of them (before the next is fed). */
typedef struct run_log {
    int32_t toks[MAXT], n;
    uint64_t hash[MAXT];
    int64_t evicted;
    int32_t max_len_after_prompt; /* the most positions held once decoding */
} run_log;

/*
 * The KV layer driven by hand as `kvllm ppl --stream` drives it, greedy:
 * set_policy; the prompt in chunks of `chunk` positions, make_room(c)
 * before each (chunk 0: in one batch, reserved past the budget, ppl's
 * --prompt), then make_room(0) (the cut; snapkv's compression); then per
 * token make_room(1) and the token at its place in the cache.
 */
static void ref_run(const kvl_model *m, const kvl_kv_policy *pol, const int32_t *prompt_toks,
                    int32_t n_prompt, int32_t chunk, int32_t max_tokens, int32_t max_ctx,
                    run_log *o) {
    memset(o, 0, sizeof *o);
    kvl_error err;
    kvl_pool *pool = NULL;
    kvl_executor *x = NULL;
    kvl_kv_cache *kvc = NULL;
    kvl_kv_cache_params kp = kvl_kv_cache_defaults();
    kp.block_size = 4;
    kp.max_seqs = 1;
    kp.max_ctx = max_ctx;
    if (kvl_pool_init(1, &pool, &err) || kvl_executor_cpu_init(m, pool, 128, max_ctx, &x, &err) ||
        kvl_kv_cache_init(&m->hp, &kp, &kvc, &err) || kvl_kv_cache_set_policy(kvc, 0, pol, &err)) {
        fprintf(stderr, "reference: %s\n", err.msg);
        CHECK(!"reference setup");
        return;
    }
    const kvl_kv_paged *pg = kvl_kv_cache_paged(kvc);
    int32_t nv = (int32_t)m->hp.n_vocab, seq[128] = {0}, pos[128], n_out = 0, ev = 0;
    bool want[128] = {false};
    const float *lg = NULL;
    bool ok = true;
    for (int32_t at = 0; ok && at < n_prompt;) {
        int32_t c = chunk > 0 && n_prompt - at > chunk ? chunk : n_prompt - at;
        ok = kvl_kv_cache_make_room(kvc, 0, chunk > 0 ? c : 0, &ev, &err) == KVL_OK;
        o->evicted += ev;
        for (int32_t k = 0; k < c; k++)
            pos[k] = kvl_kv_cache_len(kvc, 0) + k;
        want[c - 1] = at + c == n_prompt;
        kvl_batch b = {.n_tokens = c,
                       .tokens = (int32_t *)prompt_toks + at,
                       .seq = seq,
                       .pos = pos,
                       .logits = want};
        ok = ok && kvl_executor_run_cache(x, kvc, &b, &lg, &n_out, &err) == KVL_OK;
        want[c - 1] = false;
        at += c;
    }
    ok = ok && kvl_kv_cache_make_room(kvc, 0, 0, &ev, &err) == KVL_OK;
    o->evicted += ev;
    for (; ok && o->n < max_tokens; o->n++) {
        int32_t t = argmax(lg, nv), len = kvl_kv_cache_len(kvc, 0);
        o->toks[o->n] = t;
        o->hash[o->n] = cache_hash(pg, 0);
        o->max_len_after_prompt = len > o->max_len_after_prompt ? len : o->max_len_after_prompt;
        if (o->n + 1 == max_tokens) /* the engine feeds no token after the last */
            continue;
        ok = kvl_kv_cache_make_room(kvc, 0, 1, &ev, &err) == KVL_OK;
        o->evicted += ev;
        pos[0] = kvl_kv_cache_len(kvc, 0);
        bool w1 = true;
        kvl_batch b = {.n_tokens = 1, .tokens = &t, .seq = seq, .pos = pos, .logits = &w1};
        ok = ok && kvl_executor_run_cache(x, kvc, &b, &lg, &n_out, &err) == KVL_OK;
    }
    if (!ok)
        fprintf(stderr, "reference: %s\n", err.msg);
    CHECK(ok);
    kvl_kv_cache_free(kvc);
    kvl_executor_free(x);
    kvl_pool_free(pool);
}

/* The engine's run of request `which` under pol, step by step: tokens and
 * the cache after each step that produced one (all but the last: the
 * request ends in that step). */
static void engine_run(const kvl_model *m, const kvl_kv_policy *pol, int which, int32_t n_prompt,
                       int32_t max_tokens, int32_t max_ctx, run_log *o) {
    memset(o, 0, sizeof *o);
    kvl_engine *e = mk(m, 64, 2, max_ctx, false);
    int32_t *t = prompt[which];
    kvt_pattern_prompt(t, n_prompt, which);
    kvl_request_params rp = kvt_greedy_request(t, n_prompt, max_tokens, 1);
    rp.repeat_penalty = 1.0f;
    rp.ignore_eos = true;
    rp.kv_policy = *pol;
    uint64_t id = 0;
    kvl_error err;
    if (kvl_engine_submit(e, &rp, &id, &err)) {
        fprintf(stderr, "submit: %s\n", err.msg);
        CHECK(!"submit");
        kvl_engine_free(e);
        return;
    }
    const kvl_kv_paged *pg = kvl_kv_cache_paged(kvl_engine_kv_cache(e));
    for (int s = 0; s < 1000 && !kvl_engine_idle(e); s++) {
        int32_t before = logs[id].n;
        step(e);
        if (logs[id].n == before || logs[id].n_final)
            continue;
        CHECK_EQ_INT(logs[id].n, before + 1);
        int32_t slot = kvl_engine_slot_of(e, id, 0), len = kvl_kv_paged_len(pg, slot);
        o->hash[before] = cache_hash(pg, slot);
        o->max_len_after_prompt = len > o->max_len_after_prompt ? len : o->max_len_after_prompt;
    }
    CHECK(kvl_engine_idle(e));
    o->n = logs[id].n;
    memcpy(o->toks, logs[id].toks, sizeof o->toks);
    o->evicted = logs[id].usage.evicted_tokens;
    CHECK_EQ_INT(logs[id].usage.evicted_tokens, logs[id].usage.evicted_blocks * 4);
    check_idle(e);
    kvl_engine_free(e);
}

/* The engine (threads, max_batch_tokens as set) against the hand-driven
 * loop feeding the prompt in chunks of ref_chunk (0: whole): the same
 * tokens, the same cache after every step, the same evictions, and the
 * cache within the budget once the prompt is in. */
static void against_ref(const kvl_model *m, const kvl_kv_policy *pol, int which, int32_t n_prompt,
                        int32_t max_tokens, int32_t max_ctx, int32_t ref_chunk) {
    static run_log ref, eng;
    kvt_pattern_prompt(prompt[which], n_prompt, which);
    ref_run(m, pol, prompt[which], n_prompt, ref_chunk, max_tokens, max_ctx, &ref);
    engine_run(m, pol, which, n_prompt, max_tokens, max_ctx, &eng);
    CHECK_EQ_INT(eng.n, max_tokens);
    CHECK_EQ_INT(ref.n, max_tokens);
    int32_t same_tok = 0, same_kv = 0;
    for (int32_t k = 0; k < max_tokens && k < eng.n; k++) {
        same_tok += eng.toks[k] == ref.toks[k];
        same_kv += k + 1 == max_tokens || eng.hash[k] == ref.hash[k];
    }
    if (same_tok != max_tokens || same_kv != max_tokens)
        fprintf(stderr,
                "%s budget %d prompt %d threads %d batch %d: %d/%d tokens and %d caches agree\n",
                kvl_kv_policy_str(pol->kind), pol->budget_tokens, n_prompt, g_threads, g_mbt,
                same_tok, max_tokens, same_kv);
    CHECK_EQ_INT(same_tok, max_tokens);
    CHECK_EQ_INT(same_kv, max_tokens);
    CHECK_EQ_INT(eng.evicted, ref.evicted);
    CHECK(ref.evicted > 0);
    CHECK(eng.max_len_after_prompt <= pol->budget_tokens);
}

/* window 16 over prompt 12 + 60 outputs: the engine's tokens and cache
 * equal those of a direct make_room / forward loop on one sequence. */
static void test_against_stream(const kvl_model *m) {
    kvl_kv_policy window = {.kind = KVL_KV_POLICY_WINDOW, .budget_tokens = 16};
    against_ref(m, &window, 0, 12, 60, 48, 0);
}

/* h2o and snapkv against the hand-driven loop; snapkv's prompt over its
 * budget in one batch and in chunks (one cut short at its observation
 * window), and prefills long enough for the forward pass's attention
 * to run on the pool (one thread here: test_mass_threads has more). */
static void test_scored_against_ref(const kvl_model *m) {
    /* prompt within the budget: ppl --stream --prompt 12 */
    kvl_kv_policy h2o = {.kind = KVL_KV_POLICY_H2O, .budget_tokens = 20, .sinks = 4, .heavy = 0.5f};
    against_ref(m, &h2o, 0, 12, 60, 48, 0);
    /* prompt over the budget: chunks of chunk_cap = 20 - 2 * 4 + 1 with make_room before each */
    against_ref(m, &h2o, 1, 40, 40, 48, 13);
    kvl_kv_policy snap = {
        .kind = KVL_KV_POLICY_SNAPKV, .budget_tokens = 20, .sinks = 4, .obs_window = 4};
    int32_t batches[] = {64, 13, 16, 7};
    for (int k = 0; k < 4; k++) {
        g_mbt = batches[k];
        against_ref(m, &snap, 2, 40, 40, 48, 0);
    }
    g_mbt = 64;
    against_ref(m, &snap, 3, 12, 40, 48, 0); /* within the budget: decodes as sinks */
    /* large prefills run attention on several threads */
    kvl_kv_policy h2o64 = {
        .kind = KVL_KV_POLICY_H2O, .budget_tokens = 64, .sinks = 4, .heavy = 0.25f};
    kvl_kv_policy snap64 = {
        .kind = KVL_KV_POLICY_SNAPKV, .budget_tokens = 64, .sinks = 4, .obs_window = 24};
    g_mbt = 128;
    against_ref(m, &h2o64, 4, 100, 30, 128, 64 - 8 + 1);
    against_ref(m, &snap64, 5, 100, 30, 128, 0);
    g_mbt = 64;
}

/*
 * The attention mass of a 100-position h2o prefill (one step, nothing
 * evicted yet) with 1, 2 and 3 engine threads against the hand-driven
 * loop's on one thread. The threads split the batch's (token, head) units
 * evenly, so with 3 threads some queries have their heads on two threads;
 * the kernel rounds each head's block weights to fixed point on its own
 * and adds integers (kv_attn.c, mass_add), so the mass must be the same
 * bits whatever the split.
 */
static void test_mass_threads(const kvl_model *m) {
    kvl_kv_policy pol = {.kind = KVL_KV_POLICY_H2O,
                         .budget_tokens = 120,
                         .sinks = 4,
                         .heavy = 0.5f,
                         .mass_stride = 1}; /* every query adds: the split ones too */
    kvt_pattern_prompt(prompt[6], 100, 6);
    static run_log ref;
    uint64_t ref_mass[32] = {0};
    ref_run(m, &pol, prompt[6], 100, 0, 1, 128, &ref);
    g_mbt = 128;
    for (g_threads = 1; g_threads <= 3; g_threads++) {
        kvl_engine *e = mk(m, 64, 2, 128, false);
        kvl_request_params rp = kvt_greedy_request(prompt[6], 100, 2, 1);
        rp.ignore_eos = true;
        rp.kv_policy = pol;
        uint64_t id = 0;
        kvl_error err;
        CHECK(kvl_engine_submit(e, &rp, &id, &err) == KVL_OK);
        step(e);
        const kvl_kv_paged *pg = kvl_kv_cache_paged(kvl_engine_kv_cache(e));
        int32_t slot = kvl_engine_slot_of(e, id, 0);
        const uint64_t *ms = kvl_kv_paged_mass(pg, slot);
        CHECK(ms != NULL && kvl_kv_paged_len(pg, slot) == 100);
        if (!ms) {
            kvl_engine_free(e);
            continue;
        }
        if (g_threads == 1) {
            memcpy(ref_mass, ms, 25 * sizeof *ms);
            CHECK_EQ_INT((int64_t)cache_hash(pg, slot), (int64_t)ref.hash[0]); /* bit-exact */
        }
        int64_t n_diff = 0;
        uint64_t tot1 = 0;
        for (int32_t b = 0; b < 25; b++) {
            n_diff += ms[b] != ref_mass[b];
            tot1 += ref_mass[b];
        }
        fprintf(stderr, "mass with %d threads: %lld of 25 blocks differ from 1 thread's\n",
                g_threads, (long long)n_diff);
        CHECK_EQ_INT(n_diff, 0);
        CHECK(tot1 > (uint64_t)100 << 28); /* every query adds about n_layers x n_heads */
        run_to_idle(e, 10);
        check_idle(e);
        kvl_engine_free(e);
    }
    g_threads = 1;
    g_mbt = 64;
}

/* One slot used by an h2o request, then by another (or by a preempted
 * request's replay): the second starts from zero mass and gets the tokens
 * and caches it gets on a fresh engine (release clears the slot's mass). */
static void test_slot_reuse(const kvl_model *m) {
    static uint64_t h_fresh[64], h_reused[64];
    int32_t seen = 0;
    kvl_engine *e = mk(m, 24, 1, 48, false);
    uint64_t b = submit_ok(e, 1, 12, 50, KVL_KV_POLICY_H2O, 16);
    for (int s = 0; s < 200 && !kvl_engine_idle(e); s++) {
        step(e);
        track(e, b, &seen, h_fresh);
    }
    rlog fresh = logs[b];
    kvl_engine_free(e);
    e = mk(m, 24, 1, 48, false);
    uint64_t a = submit_ok(e, 0, 10, 40, KVL_KV_POLICY_H2O, 16);
    run_to_idle(e, 200);
    CHECK_EQ_INT(logs[a].n, 40);
    b = submit_ok(e, 1, 12, 50, KVL_KV_POLICY_H2O, 16);
    CHECK(b != a);
    seen = 0;
    for (int s = 0; s < 200 && !kvl_engine_idle(e); s++) {
        step(e);
        track(e, b, &seen, h_reused);
    }
    CHECK(same(&logs[b], &fresh));
    CHECK(!memcmp(h_reused, h_fresh, 49 * sizeof h_fresh[0]));
    check_idle(e);
    kvl_engine_free(e);
}

/* snapkv within its budget keeps what sinks keeps (no mass: the oldest
 * candidates go): the same tokens. */
static void test_snapkv_as_sinks(const kvl_model *m) {
    g_obs = 4;
    kvl_engine *e = mk(m, 24, 2, 48, false);
    uint64_t a = submit_ok(e, 0, 10, 80, KVL_KV_POLICY_SINKS, 20);
    run_to_idle(e, 300);
    uint64_t b = submit_ok(e, 0, 10, 80, KVL_KV_POLICY_SNAPKV, 20);
    run_to_idle(e, 300);
    CHECK(same(&logs[a], &logs[b]));
    CHECK(logs[b].usage.evicted_blocks > 0);
    CHECK_EQ_INT(logs[b].usage.kv_policy, KVL_KV_POLICY_SNAPKV);
    check_idle(e);
    kvl_engine_free(e);
}

static void refused(kvl_engine *e, int32_t max_tokens, kvl_kv_policy_kind kind, int32_t budget,
                    int32_t n, kvl_status want, const char *field) {
    uint64_t id = 0;
    kvl_error err = {0};
    kvl_status st = submit(e, 0, 10, max_tokens, kind, budget, n, &id, &err);
    CHECK_EQ_INT(st, want);
    if (!strstr(err.msg, field)) {
        fprintf(stderr, "message without '%s': %s\n", field, err.msg);
        CHECK(!"field named");
    }
}

static void test_refusals(const kvl_model *m) {
    kvl_engine *e = mk(m, 24, 2, 48, false);
    refused(e, 20, KVL_KV_POLICY_WINDOW, 16, 2, KVL_E_UNSUPPORTED, "n 2");
    refused(e, 20, KVL_KV_POLICY_H2O, 16, 2, KVL_E_UNSUPPORTED, "n 2");
    refused(e, 20, KVL_KV_POLICY_SNAPKV, 16, 2, KVL_E_UNSUPPORTED, "n 2");
    g_heavy = 1.5f;
    refused(e, 20, KVL_KV_POLICY_H2O, 16, 1, KVL_E_INVALID, "heavy 1.5 not in (0, 1)");
    g_heavy = -0.25f;
    refused(e, 20, KVL_KV_POLICY_H2O, 16, 1, KVL_E_INVALID, "heavy -0.25");
    g_heavy = 0.0f;
    g_obs = -1;
    refused(e, 20, KVL_KV_POLICY_SNAPKV, 16, 1, KVL_E_INVALID, "obs_window -1 not in [1, 48]");
    g_obs = 49;
    refused(e, 20, KVL_KV_POLICY_SNAPKV, 16, 1, KVL_E_INVALID, "obs_window 49");
    g_obs = 0; /* the default 32: the budget must hold 1 + 2 blocks + 32 */
    refused(e, 20, KVL_KV_POLICY_SNAPKV, 16, 1, KVL_E_INVALID, "budget_tokens 16 not in [44");
    g_obs = 4;
    refused(e, 20, KVL_KV_POLICY_H2O, 8, 1, KVL_E_INVALID, "budget_tokens 8");
    refused(e, 20, (kvl_kv_policy_kind)9, 16, 1, KVL_E_INVALID, "kv_policy.kind");
    refused(e, 20, KVL_KV_POLICY_WINDOW, 4, 1, KVL_E_INVALID, "budget_tokens 4");
    refused(e, 20, KVL_KV_POLICY_SINKS, 8, 1, KVL_E_INVALID, "budget_tokens 8"); /* 1 + 2 blocks */
    refused(e, 20, KVL_KV_POLICY_WINDOW, 49, 1, KVL_E_INVALID, "max_ctx 48");
    refused(e, 100, KVL_KV_POLICY_FULL, 0, 1, KVL_E_INVALID, "max_tokens 100"); /* full: context */
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.n_requests_accepted, 0);
    kvl_engine_free(e);
    e = mk(m, 24, 2, 48, true);
    refused(e, 20, KVL_KV_POLICY_WINDOW, 16, 1, KVL_E_UNSUPPORTED, "paged");
    refused(e, 20, KVL_KV_POLICY_H2O, 16, 1, KVL_E_UNSUPPORTED, "paged");
    refused(e, 20, KVL_KV_POLICY_SNAPKV, 16, 1, KVL_E_UNSUPPORTED, "paged");
    kvl_engine_free(e);
}

int main(void) {
    kvl_model *m = NULL;
    kvl_error err;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_identical(m);
    test_small_budget(m, KVL_KV_POLICY_WINDOW);
    test_small_budget(m, KVL_KV_POLICY_SINKS);
    test_small_budget(m, KVL_KV_POLICY_H2O);
    test_small_budget(m, KVL_KV_POLICY_SNAPKV); /* obs_window 4: 1 + 2 blocks + 4 <= 16 */
    test_mixed(m);
    test_preempt(m, KVL_KV_POLICY_WINDOW, 30);
    test_preempt(m, KVL_KV_POLICY_H2O, 30);
    test_preempt(m, KVL_KV_POLICY_SNAPKV, 2);
    test_preempt(m, KVL_KV_POLICY_SNAPKV, 30);
    test_against_stream(m);
    test_scored_against_ref(m);
    test_snapkv_as_sinks(m);
    test_slot_reuse(m);
    test_mass_threads(m);
    test_refusals(m);
    kvl_model_free(m);
    return kvt_finish("test_engine_policy");
}
