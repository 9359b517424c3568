/*
 * The serving engine on the real stories260K model with tiny KV pools
 * (blocks of 4 positions), every scheduler path forced on purpose:
 * admission blocked then granted, chunked prefill split points, the
 * victim of a preemption in each mode, swap out and back with identical
 * tokens and log-probabilities, refusal at submit with the numbers, the
 * queue bound, cancellation in every state, and batch invariance. Exact
 * block ids and states are asserted.
 *
 * f32 KV of stories260K: 2 * 5 layers * 4 KV heads * 8 dims * 4 bytes =
 * 1280 bytes per position, 5120 bytes per block of 4.
 */
#include "engine/engine_debug.h"
#include "kv/kv_paged.h"
#include "testutil.h"

#include <stdlib.h>

#define BLOCK 5120
#define MAXR 64

typedef struct rlog {
    int32_t toks[4][256];
    float lp[4][256];
    int32_t n[4];
    int n_final, n_after_final;
    kvl_finish_reason reason;
    kvl_usage usage;
    char msg[192];
} rlog;

static rlog logs[MAXR + 1];

static void drain(kvl_engine *e) {
    kvl_event ev[64];
    int n;
    while ((n = kvl_engine_poll(e, ev, 64, 0)) > 0)
        for (int i = 0; i < n; i++) {
            if (ev[i].id > MAXR)
                continue;
            rlog *l = &logs[ev[i].id];
            if (l->n_final)
                l->n_after_final++;
            if (ev[i].type == KVL_EV_TOKEN) {
                int32_t k = ev[i].index;
                l->toks[k][l->n[k]] = ev[i].token;
                l->lp[k][l->n[k]++] = ev[i].logprob;
            } else if (ev[i].type == KVL_EV_FINAL) {
                l->n_final++;
                l->reason = ev[i].reason;
                l->usage = ev[i].usage;
                snprintf(l->msg, sizeof l->msg, "%s", ev[i].message);
            }
        }
}

static void step(kvl_engine *e) {
    kvl_error err;
    CHECK(kvl_engine_step(e, NULL, &err) == KVL_OK);
    CHECK(kvl_engine_check(e, &err) == KVL_OK);
    drain(e);
}

static int run_to_idle(kvl_engine *e, int max_steps) {
    int s = 0;
    while (!kvl_engine_idle(e) && s < max_steps) {
        step(e);
        s++;
    }
    return s;
}

static kvl_engine_params mk_params(uint32_t n_blocks, int32_t max_seqs, int32_t batch,
                                   kvl_preempt_mode pm, uint32_t swap_blocks) {
    kvl_engine_params p = kvl_engine_defaults();
    p.n_threads = 1;
    p.block_size = 4;
    p.kv_type_k = p.kv_type_v = "f32";
    p.kv_mem = (size_t)n_blocks * BLOCK;
    p.max_seqs = max_seqs;
    p.max_batch_tokens = batch;
    p.max_ctx = n_blocks * 4 < 2048 ? (int32_t)n_blocks * 4 : 2048; /* the pool holds one */
    p.preempt = pm;
    p.swap_mem = (size_t)swap_blocks * BLOCK;
    return p;
}

static kvl_engine *mk_from(const kvl_model *m, const kvl_engine_params *p) {
    kvl_engine *e = NULL;
    kvl_error err;
    if (kvl_engine_init(m, p, &e, &err))
        fprintf(stderr, "engine init: %s\n", err.msg);
    memset(logs, 0, sizeof logs);
    return e;
}

static kvl_engine *mk(const kvl_model *m, uint32_t n_blocks, int32_t max_seqs, int32_t batch,
                      kvl_preempt_mode pm, uint32_t swap_blocks) {
    kvl_engine_params p = mk_params(n_blocks, max_seqs, batch, pm, swap_blocks);
    return mk_from(m, &p);
}

/* Prompt of n tokens: BOS then ids from a fixed pattern (no BOS/EOS). */
static int32_t prompt_buf[8][512];
static uint64_t submit_full(kvl_engine *e, int which, int32_t n_prompt, int32_t max_tokens,
                            int32_t n, int32_t prio, const char *salt, uint64_t session) {
    int32_t *t = prompt_buf[which];
    kvt_pattern_prompt(t, n_prompt, which);
    kvl_request_params rp = kvt_greedy_request(t, n_prompt, max_tokens, n);
    rp.priority = prio;
    rp.cache_salt = salt;
    rp.session = session;
    uint64_t id = 0;
    kvl_error err;
    kvl_status st = kvl_engine_submit(e, &rp, &id, &err);
    if (st)
        fprintf(stderr, "submit: %s\n", err.msg);
    return st ? 0 : id;
}

static uint64_t submit_salt(kvl_engine *e, int which, int32_t n_prompt, int32_t max_tokens,
                            int32_t n, int32_t prio, const char *salt) {
    return submit_full(e, which, n_prompt, max_tokens, n, prio, salt, 0);
}

static uint64_t submit(kvl_engine *e, int which, int32_t n_prompt, int32_t max_tokens, int32_t n,
                       int32_t prio) {
    return submit_salt(e, which, n_prompt, max_tokens, n, prio, NULL);
}

static kvl_request_state state_of(kvl_engine *e, uint64_t id) {
    kvl_request_info ri;
    return kvl_engine_request_info(e, id, &ri) == KVL_OK ? ri.state : KVL_REQ_FINISHED;
}

static const uint32_t *table_of(kvl_engine *e, uint64_t id, int32_t si, uint32_t *n) {
    int32_t slot = kvl_engine_slot_of(e, id, si);
    kvl_kv_paged *pg = kvl_kv_cache_paged(kvl_engine_kv_cache(e));
    const kvl_block_table *t = slot >= 0 ? kvl_kv_paged_table(pg, slot) : NULL;
    *n = t ? t->n_blocks : 0;
    return t ? t->ids : NULL;
}

static uint32_t n_free(kvl_engine *e) {
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    return st.kv.n_blocks_free;
}

/* 11 blocks: A (prompt 16 = 4 blocks) and B (prompt 24 = 6 blocks) fit
 * together only with the watermark (1 block) left; C (prompt 8) waits
 * until A finishes, then takes A's freed blocks. */
static void test_admission(const kvl_model *m) {
    kvl_engine *e = mk(m, 11, 4, 64, KVL_PREEMPT_RECOMPUTE, 0);
    uint64_t a = submit(e, 0, 16, 3, 1, 0), b = submit(e, 1, 20, 3, 1, 0),
             c = submit(e, 2, 8, 3, 1, 0);
    step(e);
    uint32_t n;
    const uint32_t *ta = table_of(e, a, 0, &n);
    CHECK_EQ_INT(n, 4);
    CHECK(ta && ta[0] == 0 && ta[3] == 3);
    const uint32_t *tb = table_of(e, b, 0, &n);
    CHECK_EQ_INT(n, 5);
    CHECK(tb && tb[0] == 4 && tb[4] == 8);
    /* 2 free: C needs 2 + the watermark 1: it waits */
    CHECK_EQ_INT(state_of(e, c), KVL_REQ_WAITING);
    CHECK_EQ_INT(n_free(e), 2);
    run_to_idle(e, 50);
    CHECK(logs[a].n_final == 1 && logs[b].n_final == 1 && logs[c].n_final == 1);
    CHECK_EQ_INT(logs[c].reason, KVL_FINISH_LENGTH);
    CHECK(logs[c].usage.queue_s >= logs[a].usage.queue_s);
    CHECK_EQ_INT(n_free(e), 11);
    kvl_engine_free(e);
}

/* A 20-token prompt under an 8-token budget: chunks of 8, 8, 4; the first
 * token comes with the last chunk. */
static void test_chunks(const kvl_model *m) {
    kvl_engine *e = mk(m, 32, 2, 8, KVL_PREEMPT_RECOMPUTE, 0);
    uint64_t a = submit(e, 0, 20, 4, 1, 0);
    int32_t want[] = {8, 16, 20};
    for (int k = 0; k < 3; k++) {
        int32_t nt = 0;
        kvl_error err;
        CHECK(kvl_engine_step(e, &nt, &err) == KVL_OK);
        drain(e);
        CHECK_EQ_INT(nt, want[k] - (k ? want[k - 1] : 0));
        kvl_request_info ri;
        CHECK(kvl_engine_request_info(e, a, &ri) == KVL_OK);
        CHECK_EQ_INT(ri.computed_tokens, want[k]);
        CHECK_EQ_INT(logs[a].n[0], k == 2 ? 1 : 0);
    }
    run_to_idle(e, 20);
    CHECK_EQ_INT(logs[a].n[0], 4);
    kvl_engine_free(e);
}

/* Three requests filling the pool; the worst ranked (lowest priority, then
 * newest) is the victim, whatever the order of submission. */
static void test_victim(const kvl_model *m, kvl_preempt_mode pm) {
    kvl_engine *e = mk(m, 12, 4, 64, pm, pm == KVL_PREEMPT_SWAP ? 16 : 0);
    /* prompts of 12 (3 blocks) and 40 new tokens each: 13 blocks alone */
    uint64_t lo = submit(e, 0, 12, 32, 1, -1);
    uint64_t hi1 = submit(e, 1, 12, 32, 1, 5);
    uint64_t hi2 = submit(e, 2, 12, 32, 1, 5);
    step(e);
    CHECK_EQ_INT(state_of(e, hi1), KVL_REQ_RUNNING);
    CHECK_EQ_INT(state_of(e, hi2), KVL_REQ_RUNNING);
    CHECK_EQ_INT(state_of(e, lo), KVL_REQ_RUNNING);
    int guard = 0;
    while (state_of(e, lo) == KVL_REQ_RUNNING && guard++ < 100)
        step(e);
    kvl_request_state want = pm == KVL_PREEMPT_SWAP ? KVL_REQ_SWAPPED : KVL_REQ_WAITING;
    CHECK_EQ_INT(state_of(e, lo), want);
    CHECK_EQ_INT(state_of(e, hi1), KVL_REQ_RUNNING);
    CHECK_EQ_INT(state_of(e, hi2), KVL_REQ_RUNNING);
    kvl_request_info ri;
    CHECK(kvl_engine_request_info(e, lo, &ri) == KVL_OK && ri.n_preemptions == 1);
    if (pm == KVL_PREEMPT_SWAP)
        CHECK(ri.n_swap_blocks > 0 && ri.n_blocks == 0);
    run_to_idle(e, 400);
    CHECK(logs[lo].n_final == 1 && logs[hi1].n_final == 1 && logs[hi2].n_final == 1);
    CHECK_EQ_INT(logs[lo].n[0], 32);
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK(st.n_preemptions >= 1);
    CHECK(pm == KVL_PREEMPT_SWAP ? st.n_preempt_swap >= 1 : st.n_preempt_recompute >= 1);
    CHECK_EQ_INT(st.n_swap_blocks_used, 0);
    kvl_engine_free(e);
}

/* A request alone, then the same request alone but swapped out after its
 * 10th token and back in: the same tokens and log-probabilities, bit for
 * bit (every batch is the same; only the blocks moved). */
static void test_swap_exact(const kvl_model *m, const char *fmt) {
    rlog runs[2];
    for (int forced = 0; forced < 2; forced++) {
        kvl_engine_params p = kvl_engine_defaults();
        p.n_threads = 1;
        p.block_size = 4;
        p.kv_type_k = p.kv_type_v = fmt;
        p.kv_mem = 1 << 20;
        p.max_ctx = 256;
        p.swap_mem = 1 << 20;
        p.preempt = KVL_PREEMPT_SWAP;
        kvl_engine *e = NULL;
        kvl_error err;
        CHECK(kvl_engine_init(m, &p, &e, &err) == KVL_OK);
        memset(logs, 0, sizeof logs);
        uint64_t a = submit(e, 0, 14, 30, 1, 0);
        while (logs[a].n[0] < 10)
            step(e);
        if (forced) {
            CHECK(kvl_engine_preempt(e, a, KVL_PREEMPT_SWAP) == KVL_OK);
            CHECK_EQ_INT(state_of(e, a), KVL_REQ_SWAPPED);
            CHECK(kvl_engine_check(e, &err) == KVL_OK);
            kvl_request_info ri;
            CHECK(kvl_engine_request_info(e, a, &ri) == KVL_OK);
            CHECK_EQ_INT(ri.n_blocks, 0);
            CHECK_EQ_INT(ri.n_swap_blocks, 6);
        }
        run_to_idle(e, 100);
        runs[forced] = logs[a];
        kvl_engine_stats st;
        kvl_engine_get_stats(e, &st);
        CHECK_EQ_INT(st.n_preempt_swap, forced);
        /* its first 5 blocks were still cached in the pool: attached, not
         * copied; the last (partly filled) one is copied back */
        CHECK_EQ_INT(st.n_blocks_swapped_in, forced ? 1 : 0);
        CHECK_EQ_INT(st.prefix_swapin_hit_blocks, forced ? 5 : 0);
        kvl_engine_free(e);
    }
    CHECK_EQ_INT(runs[0].n[0], 30);
    CHECK_EQ_INT(runs[1].n[0], 30);
    CHECK(memcmp(runs[0].toks[0], runs[1].toks[0], 30 * sizeof(int32_t)) == 0);
    CHECK(memcmp(runs[0].lp[0], runs[1].lp[0], 30 * sizeof(float)) == 0);
    CHECK_EQ_INT(runs[1].usage.n_preemptions, 1);
    CHECK_EQ_INT(runs[1].usage.recomputed_tokens, 0);
}

/* A request alone, then the same request preempted among others (swap,
 * recompute): the same tokens (greedy). */
static void test_preempt_identical(const kvl_model *m, kvl_preempt_mode pm) {
    kvl_engine *e = mk(m, 64, 4, 64, pm, 64);
    uint64_t a = submit(e, 0, 12, 32, 1, 0);
    run_to_idle(e, 100);
    rlog alone = logs[a];
    kvl_engine_free(e);
    e = mk(m, 12, 4, 64, pm, 16);
    uint64_t lo = submit(e, 0, 12, 32, 1, -1);
    submit(e, 1, 12, 32, 1, 5);
    submit(e, 2, 12, 32, 1, 5);
    run_to_idle(e, 400);
    CHECK(logs[lo].usage.n_preemptions >= 1);
    CHECK_EQ_INT(logs[lo].n[0], alone.n[0]);
    CHECK(memcmp(logs[lo].toks[0], alone.toks[0], sizeof(int32_t) * (size_t)alone.n[0]) == 0);
    kvl_engine_free(e);
}

static void test_refusals(const kvl_model *m) {
    kvl_engine *e = mk(m, 11, 4, 64, KVL_PREEMPT_RECOMPUTE, 0);
    int32_t t[600];
    for (int i = 0; i < 600; i++)
        t[i] = 3 + i % 400;
    kvl_request_params rp = kvl_request_defaults();
    rp.prompt_tokens = t;
    rp.n_prompt_tokens = 40;
    rp.max_tokens = 10;
    uint64_t id;
    kvl_error err;
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_E_LIMIT);
    CHECK_CONTAINS(err.msg, "prompt 40 tokens + max_tokens 10 = 50 > the context 44");
    kvl_engine_free(e);
    e = mk(m, 11, 4, 64, KVL_PREEMPT_RECOMPUTE, 0);
    kvl_engine_free(e);
    kvl_engine_params sp = kvl_engine_defaults();
    sp.n_threads = 1;
    sp.block_size = 4;
    sp.kv_type_k = sp.kv_type_v = "f32";
    sp.kv_mem = 11 * BLOCK;
    sp.max_ctx = 44;
    sp.max_seqs = 4;
    sp.kv_layout = KVL_KV_LAYOUT_PAGED;
    CHECK(kvl_engine_init(m, &sp, &e, &err) == KVL_OK);
    rp.n_prompt_tokens = 20; /* 20 + 8 = 7 blocks; n 2: 5 shared + 2 x 2 = 9 fits */
    rp.max_tokens = 8;
    rp.n = 2;
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_OK);
    rp.n = 3; /* 5 + 3 x 2 = 11 fits */
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_OK);
    rp.n = 4; /* 5 + 4 x 2 = 13 > 11 */
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_E_LIMIT);
    CHECK_CONTAINS(err.msg, "13 KV blocks");
    CHECK_CONTAINS(err.msg, "holds 11");
    rp.n = 1;
    rp.n_prompt_tokens = 8;
    rp.max_tokens = 8;
    rp.n = 65;
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_E_INVALID);
    rp.n = 1;
    t[3] = 100000;
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "prompt_tokens[3] = 100000");
    t[3] = 5;
    const char *stops[] = {""};
    rp.stop = stops;
    rp.n_stop = 1;
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_E_INVALID);
    rp.n_stop = 0;
    rp.temperature = -1;
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_E_INVALID);
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.n_requests_refused, 0); /* the snapshot is of the last step */
    memset(logs, 0, sizeof logs);
    run_to_idle(e, 50);
    CHECK(logs[1].n_final == 1 && logs[2].n_final == 1);
    kvl_engine_free(e);

    /* the queue bound: two waiting, the third is BUSY, nothing lost */
    kvl_engine_params qp = kvl_engine_defaults();
    qp.n_threads = 1;
    qp.max_queue = 2;
    qp.kv_mem = 64 * BLOCK;
    qp.max_ctx = 256;
    qp.block_size = 4;
    qp.kv_type_k = qp.kv_type_v = "f32";
    CHECK(kvl_engine_init(m, &qp, &e, &err) == KVL_OK);
    memset(logs, 0, sizeof logs);
    uint64_t a = submit(e, 0, 8, 2, 1, 0), b = submit(e, 1, 8, 2, 1, 0);
    CHECK(a && b);
    rp = kvl_request_defaults();
    rp.prompt = "Once upon a time";
    rp.max_tokens = 2;
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_E_BUSY);
    CHECK_CONTAINS(err.msg, "2 requests waiting");
    run_to_idle(e, 20);
    CHECK(logs[a].n_final == 1 && logs[b].n_final == 1);
    kvl_engine_free(e);
}

/* Cancel in every state: waiting, prefilling, decoding, swapped. */
static void test_cancel(const kvl_model *m) {
    kvl_engine *e = mk(m, 12, 4, 8, KVL_PREEMPT_SWAP, 16);
    uint64_t w = submit(e, 0, 12, 20, 1, -5);  /* waits behind the others */
    uint64_t pre = submit(e, 1, 20, 20, 1, 9); /* prefilling in chunks of 8 */
    step(e);
    CHECK_EQ_INT(state_of(e, pre), KVL_REQ_RUNNING);
    CHECK_EQ_INT(state_of(e, w), KVL_REQ_WAITING);
    CHECK(kvl_engine_cancel(e, w) == KVL_OK);
    CHECK(kvl_engine_cancel(e, pre) == KVL_OK);
    step(e);
    CHECK_EQ_INT(logs[w].n_final, 1);
    CHECK_EQ_INT(logs[w].reason, KVL_FINISH_CANCELLED);
    CHECK_EQ_INT(logs[pre].n_final, 1);
    CHECK_EQ_INT(logs[pre].reason, KVL_FINISH_CANCELLED);
    CHECK_EQ_INT(kvl_engine_cancel(e, w), KVL_E_NOT_FOUND);
    /* decoding, and swapped */
    uint64_t lo = submit(e, 2, 12, 32, 1, -1);
    uint64_t h1 = submit(e, 3, 12, 32, 1, 5), h2 = submit(e, 4, 12, 32, 1, 5);
    int guard = 0;
    while (state_of(e, lo) != KVL_REQ_SWAPPED && guard++ < 200)
        step(e);
    CHECK_EQ_INT(state_of(e, lo), KVL_REQ_SWAPPED);
    CHECK_EQ_INT(state_of(e, h1), KVL_REQ_RUNNING);
    CHECK(kvl_engine_cancel(e, lo) == KVL_OK);
    CHECK(kvl_engine_cancel(e, h1) == KVL_OK);
    step(e);
    CHECK_EQ_INT(logs[lo].reason, KVL_FINISH_CANCELLED);
    CHECK_EQ_INT(logs[h1].reason, KVL_FINISH_CANCELLED);
    run_to_idle(e, 200);
    CHECK_EQ_INT(logs[h2].n_final, 1);
    CHECK_EQ_INT(logs[h2].reason, KVL_FINISH_LENGTH);
    for (uint64_t i = 1; i <= h2; i++)
        CHECK_EQ_INT(logs[i].n_after_final, 0);
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.kv.n_blocks_used, 0);
    CHECK_EQ_INT(st.n_swap_blocks_used, 0);
    kvl_engine_free(e);
}

/* n samples share the prompt's blocks: after the fork every full prompt
 * block has count n. */
static void test_samples_share(const kvl_model *m) {
    kvl_engine *e = mk(m, 40, 4, 64, KVL_PREEMPT_RECOMPUTE, 0);
    uint64_t a = submit(e, 0, 16, 6, 3, 0);
    step(e);
    uint32_t n0, n1;
    const uint32_t *t0 = table_of(e, a, 0, &n0), *t1 = table_of(e, a, 1, &n1);
    CHECK(t0 && t1 && n0 == 4 && n1 == 4);
    for (uint32_t j = 0; t0 && t1 && j < 4; j++)
        CHECK_EQ_INT(t0[j], t1[j]);
    kvl_request_info ri;
    CHECK(kvl_engine_request_info(e, a, &ri) == KVL_OK);
    CHECK_EQ_INT(ri.n_blocks_shared, 12);
    CHECK_EQ_INT(n_free(e), 36);
    run_to_idle(e, 20);
    CHECK_EQ_INT(logs[a].n_final, 1);
    CHECK_EQ_INT(logs[a].usage.completion_tokens, 18);
    /* greedy samples agree */
    CHECK(memcmp(logs[a].toks[0], logs[a].toks[2], 6 * sizeof(int32_t)) == 0);
    kvl_engine_free(e);
}

static bool invariant;
static kvl_engine *mk_big(const kvl_model *m, int32_t batch) {
    kvl_engine_params p = kvl_engine_defaults();
    p.batch_invariant = invariant;
    p.n_threads = 2;
    p.max_ctx = 256;
    p.max_seqs = 8;
    p.kv_mem = 8 * 256 * 2 * (size_t)m->hp.n_layers * (size_t)m->hp.n_kv_heads *
               (size_t)m->hp.head_dim * 4;
    p.max_batch_tokens = batch;
    kvl_engine *e = NULL;
    kvl_error err;
    if (kvl_engine_init(m, &p, &e, &err))
        fprintf(stderr, "engine init: %s\n", err.msg);
    memset(logs, 0, sizeof logs);
    return e;
}

/* Temperature 0: each request's tokens equal those it produces alone,
 * whatever else shares its batches (prefill chunks beside decodes). */
static void test_batch_invariance(const kvl_model *m) {
    rlog alone[4];
    for (int k = 0; k < 4; k++) {
        kvl_engine *e = mk_big(m, 64);
        uint64_t id = submit(e, k, 10 + 7 * k, 30, 1, 0);
        run_to_idle(e, 200);
        alone[k] = logs[id];
        kvl_engine_free(e);
    }
    kvl_engine *e = mk_big(m, 24);
    uint64_t ids[4];
    for (int k = 0; k < 4; k++) {
        ids[k] = submit(e, k, 10 + 7 * k, 30, 1, 0);
        step(e); /* staggered: prefill chunks meet decodes */
    }
    run_to_idle(e, 400);
    for (int k = 0; k < 4; k++) {
        CHECK_EQ_INT(logs[ids[k]].n[0], alone[k].n[0]);
        CHECK(memcmp(logs[ids[k]].toks[0], alone[k].toks[0],
                     sizeof(int32_t) * (size_t)alone[k].n[0]) == 0);
    }
    kvl_engine_free(e);
}

/* Overload: 10x more requests than the pool holds at once. Each is either
 * refused at submit with the limit status or completes; the KV pool and the
 * swap area never hold more than their budgets. */
static void test_overload(const kvl_model *m) {
    kvl_engine_params p = kvl_engine_defaults();
    p.n_threads = 1;
    p.block_size = 4;
    p.kv_type_k = p.kv_type_v = "f32";
    p.kv_mem = 12 * BLOCK;
    p.max_ctx = 48;
    p.max_seqs = 4;
    p.max_batch_tokens = 32;
    p.max_queue = 40;
    p.swap_mem = 8 * BLOCK;
    kvl_engine *e = NULL;
    kvl_error err;
    CHECK(kvl_engine_init(m, &p, &e, &err) == KVL_OK);
    memset(logs, 0, sizeof logs);
    int accepted = 0, busy = 0, other = 0;
    uint64_t ids[60];
    for (int i = 0; i < 60; i++) { /* each holds 3..8 blocks at its longest: 12 fit ~2 */
        int32_t t[48];
        t[0] = 1;
        for (int k = 1; k < 48; k++)
            t[k] = 3 + (i * 13 + k * 7) % 400;
        kvl_request_params rp = kvl_request_defaults();
        rp.prompt_tokens = t;
        rp.n_prompt_tokens = (size_t)(8 + i % 8);
        rp.max_tokens = 4 + i % 16;
        rp.temperature = 0.5f;
        kvl_status st = kvl_engine_submit(e, &rp, &ids[i], &err);
        if (st == KVL_OK)
            ids[accepted++] = ids[i];
        else if (st == KVL_E_BUSY)
            busy++;
        else
            other++;
        if (i % 5 == 4) /* arrivals interleaved with steps */
            step(e);
    }
    CHECK(accepted >= 40);
    CHECK(busy > 0);
    CHECK_EQ_INT(other, 0);
    int guard = 0;
    while (!kvl_engine_idle(e) && guard++ < 5000) {
        step(e);
        kvl_engine_stats st;
        kvl_engine_get_stats(e, &st);
        CHECK(st.kv.bytes_used <= st.kv.bytes_total && st.kv.bytes_total <= p.kv_mem);
        CHECK(st.n_swap_blocks_used <= st.n_swap_blocks_total && st.n_swap_blocks_total == 8);
    }
    int finals = 0;
    for (int i = 0; i < accepted; i++)
        finals +=
            ids[i] <= MAXR && logs[ids[i]].n_final == 1 && logs[ids[i]].reason != KVL_FINISH_ERROR;
    CHECK_EQ_INT(finals, accepted > MAXR ? MAXR : accepted);
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK(st.n_preemptions > 0);
    CHECK_EQ_INT(st.n_requests_finished, accepted);
    kvl_engine_free(e);
}

/* A conversation: three turns of one session, each resending the history
 * and more; the ledger shows every turn and the footprint growing. */
static void test_session(const kvl_model *m) {
    kvl_engine *e = mk(m, 40, 4, 64, KVL_PREEMPT_RECOMPUTE, 0);
    kvl_error err;
    int32_t t[128];
    t[0] = 1;
    for (int k = 1; k < 128; k++)
        t[k] = 3 + (k * 29) % 400;
    uint64_t ids[3];
    for (int turn = 0; turn < 3; turn++) {
        kvl_request_params rp = kvl_request_defaults();
        rp.prompt_tokens = t;
        rp.n_prompt_tokens = (size_t)(12 + 16 * turn);
        rp.max_tokens = 8;
        rp.temperature = 0;
        rp.session = 77;
        CHECK(kvl_engine_submit(e, &rp, &ids[turn], &err) == KVL_OK);
        kvl_session_info si;
        CHECK(kvl_engine_session_info(e, 77, &si) == KVL_OK);
        CHECK_EQ_INT(si.n_open, 1);
        CHECK_EQ_INT(si.n_requests, turn + 1);
        step(e);
        CHECK(kvl_engine_session_info(e, 77, &si) == KVL_OK);
        CHECK_EQ_INT(si.n_blocks, (12 + 16 * turn + 3) / 4); /* prompt blocks held now */
        run_to_idle(e, 50);
    }
    kvl_session_info si;
    CHECK(kvl_engine_session_info(e, 77, &si) == KVL_OK);
    CHECK_EQ_INT(si.n_open, 0);
    CHECK_EQ_INT(si.n_blocks, 0);
    CHECK_EQ_INT(si.n_turns, 3);
    for (int turn = 0; turn < 3; turn++) {
        CHECK_EQ_INT(si.turns[turn].request_id, ids[turn]);
        CHECK_EQ_INT(si.turns[turn].prompt_tokens, 12 + 16 * turn);
        CHECK_EQ_INT(si.turns[turn].completion_tokens, 8);
        /* at its end a turn held prompt + 7 fed tokens */
        CHECK_EQ_INT(si.turns[turn].n_blocks, (12 + 16 * turn + 7 + 3) / 4);
        CHECK_EQ_INT(si.turns[turn].kv_bytes, (size_t)si.turns[turn].n_blocks * BLOCK);
    }
    CHECK(si.turns[2].kv_bytes > si.turns[0].kv_bytes);
    CHECK_EQ_INT(kvl_engine_session_info(e, 78, &si), KVL_E_NOT_FOUND);
    kvl_engine_free(e);
}

/* A prefix-cache hit gives the tokens of a miss (greedy), for a prompt that
 * ends mid-block (22: 5 blocks hit) and one that ends on a boundary (20: 4
 * blocks hit, the last position is always computed); from blocks in use
 * (submitted together: the first request's blocks register as they fill)
 * and from free but cached blocks; per format. */
static void test_prefix_hits(const kvl_model *m, const char *fmt) {
    for (int plen = 20; plen <= 22; plen += 2) {
        kvl_engine_params p = kvl_engine_defaults();
        p.n_threads = 1;
        p.block_size = 4;
        p.kv_type_k = p.kv_type_v = fmt;
        p.kv_mem = 1 << 20;
        p.max_ctx = 128;
        p.max_batch_tokens = 8; /* the prompt fills in chunks: blocks register as they fill */
        kvl_engine *e = NULL;
        kvl_error err;
        CHECK(kvl_engine_init(m, &p, &e, &err) == KVL_OK);
        memset(logs, 0, sizeof logs);
        uint64_t a = submit(e, 0, plen, 24, 1, 0); /* the miss */
        run_to_idle(e, 100);
        uint64_t b = submit(e, 0, plen, 24, 1, 0); /* hit on free, cached blocks */
        run_to_idle(e, 100);
        int32_t want_hit = (plen - 1) / 4 * 4;
        CHECK_EQ_INT(logs[a].usage.cached_tokens, 0);
        CHECK_EQ_INT(logs[b].usage.cached_tokens, want_hit);
        CHECK_EQ_INT(logs[b].n[0], logs[a].n[0]);
        CHECK(memcmp(logs[a].toks[0], logs[b].toks[0], sizeof(int32_t) * (size_t)logs[a].n[0]) ==
              0);
        kvl_engine_stats st;
        kvl_engine_get_stats(e, &st);
        CHECK_EQ_INT(st.prefix_hit_free_blocks, want_hit / 4);
        /* together: c's first chunk registers 2 blocks; d, admitted a step
         * later, shares them while c still holds them */
        uint64_t c = submit(e, 1, plen, 8, 1, 0);
        step(e);
        uint64_t d = submit(e, 1, plen, 8, 1, 0);
        int guard = 0;
        while (state_of(e, d) == KVL_REQ_WAITING && guard++ < 10)
            step(e); /* c's chunks of 8 take the budget until its last */
        kvl_request_info ri;
        CHECK(kvl_engine_request_info(e, d, &ri) == KVL_OK);
        CHECK_EQ_INT(ri.n_blocks_shared, 4); /* c's 4 full prompt blocks, still c's too */
        CHECK_EQ_INT(state_of(e, c), KVL_REQ_RUNNING);
        run_to_idle(e, 100);
        CHECK_EQ_INT(logs[d].usage.cached_tokens, 16);
        CHECK(memcmp(logs[c].toks[0], logs[d].toks[0], sizeof(int32_t) * 8) == 0);
        /* another salt never hits */
        kvl_request_params rp = kvl_request_defaults();
        rp.prompt_tokens = prompt_buf[0];
        rp.n_prompt_tokens = (size_t)plen;
        rp.max_tokens = 4;
        rp.temperature = 0;
        rp.cache_salt = "tenant-x";
        uint64_t x;
        CHECK(kvl_engine_submit(e, &rp, &x, &err) == KVL_OK);
        run_to_idle(e, 100);
        CHECK_EQ_INT(logs[x].usage.cached_tokens, 0);
        CHECK(kvl_engine_check(e, &err) == KVL_OK);
        kvl_engine_free(e);
    }
}

/* Eviction order, exactly. 12 blocks, free queue 0..11 at start.
 *   A: prompt 24 + 3 fed = 27 positions: blocks 0..6, 0..5 full and cached.
 *      It ends; its blocks go to the queue's tail, its tail first:
 *      7 8 9 10 11 | 6 5 4 3 2 1 0
 *   B: 19 positions, 5 blocks: takes 7..11 (never cached): nothing evicted.
 *      It ends: 6 5 4 3 2 1 0 | 11 10 9 8 7
 *   D: 19 positions, 5 blocks: takes 6 (A's partial, no hash) and 5 4 3 2:
 *      four of A's cached blocks are evicted, A's head (0, 1) stays.
 *   C: A's prompt again: finds blocks 0 and 1, 8 positions. */
static void test_prefix_eviction(const kvl_model *m) {
    kvl_engine *e = mk(m, 12, 2, 64, KVL_PREEMPT_RECOMPUTE, 0);
    kvl_error err;
    submit(e, 0, 24, 4, 1, 0);
    run_to_idle(e, 50);
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.prefix_cached_blocks, 6);
    CHECK_EQ_INT(st.kv.n_blocks_free, 12);
    submit(e, 1, 16, 4, 1, 0);
    run_to_idle(e, 50);
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.prefix_evicted_blocks, 0);
    CHECK_EQ_INT(st.prefix_cached_blocks, 10);
    submit(e, 2, 16, 4, 1, 0);
    run_to_idle(e, 50);
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.prefix_evicted_blocks, 4);
    CHECK_EQ_INT(st.prefix_cached_blocks, 10); /* 2 of A + 4 of B + 4 of D */
    uint64_t c = submit(e, 0, 24, 4, 1, 0);
    run_to_idle(e, 50);
    CHECK_EQ_INT(logs[c].usage.cached_tokens, 8);
    CHECK(kvl_engine_check(e, &err) == KVL_OK);
    kvl_engine_free(e);
}

static double penalty_of(const kvl_request_params *rp, const int32_t *gen, int32_t n_gen,
                         int32_t tok) {
    int32_t count = 0;
    for (int32_t g = 0; g < n_gen; g++)
        count += gen[g] == tok;
    return count * (double)rp->frequency_penalty + (count ? rp->presence_penalty : 0);
}

/* top_logprobs: the k best tokens of the model's distribution, best first;
 * greedy picks the first. Presence and frequency penalties: the token picked
 * is the best after subtracting them from what was generated so far. */
static void test_logprobs_penalties(const kvl_model *m) {
    for (int pen = 0; pen < 2; pen++) {
        kvl_engine *e = mk(m, 64, 4, 64, KVL_PREEMPT_RECOMPUTE, 0);
        int32_t prompt[3] = {1, 403, 2};
        kvl_request_params rp = kvl_request_defaults();
        rp.prompt_tokens = prompt;
        rp.n_prompt_tokens = 3;
        rp.max_tokens = 40;
        rp.temperature = 0;
        rp.ignore_eos = true;
        rp.top_logprobs = KVL_MAX_TOP_LOGPROBS;
        rp.frequency_penalty = pen ? 1.5f : 0;
        rp.presence_penalty = pen ? 0.5f : 0;
        uint64_t id;
        kvl_error err;
        CHECK(kvl_engine_submit(e, &rp, &id, &err) == KVL_OK);
        int32_t gen[64], n_gen = 0, n_not_first = 0;
        kvl_event ev[8];
        while (!kvl_engine_idle(e)) {
            CHECK(kvl_engine_step(e, NULL, &err) == KVL_OK);
            int n;
            while ((n = kvl_engine_poll(e, ev, 8, 0)) > 0)
                for (int i = 0; i < n; i++) {
                    if (ev[i].type != KVL_EV_TOKEN)
                        continue;
                    const kvl_event *t = &ev[i];
                    CHECK_EQ_INT(t->n_top, KVL_MAX_TOP_LOGPROBS);
                    double mass = 0, best = -1e30;
                    for (int j = 0; j < t->n_top; j++) {
                        mass += exp(t->top[j].logprob);
                        CHECK(t->top[j].logprob <= 0);
                        if (j)
                            CHECK(t->top[j].logprob <= t->top[j - 1].logprob);
                        double sc =
                            t->top[j].logprob - penalty_of(&rp, gen, n_gen, t->top[j].token);
                        best = sc > best ? sc : best;
                    }
                    CHECK(mass <= 1.0 + 1e-4);
                    /* the pick is at least as good as every top entry after penalties */
                    CHECK(t->logprob - penalty_of(&rp, gen, n_gen, t->token) >= best - 1e-5);
                    if (!pen) /* greedy without penalties: the first entry */
                        CHECK_NEAR(t->top[0].logprob, t->logprob, 1e-6);
                    n_not_first += t->top[0].token != t->token;
                    if (n_gen < 64)
                        gen[n_gen++] = t->token;
                }
        }
        CHECK_EQ_INT(n_gen, 40);
        if (pen)
            CHECK(n_not_first > 0); /* the penalties changed some picks */
        else
            CHECK_EQ_INT(n_not_first, 0);
        rp.top_logprobs = KVL_MAX_TOP_LOGPROBS + 1;
        CHECK(kvl_engine_submit(e, &rp, &id, &err) == KVL_E_INVALID);
        CHECK_CONTAINS(err.msg, "top_logprobs");
        kvl_engine_free(e);
    }
}

/* ---- the prefix cache's second tier ------------------------------------- */

/* Demotion order, exactly: the eviction scenario above with the tier in a
 * 3-block swap area. D evicts A's blocks 5, 4, 3, 2 (pool queue order)
 * and each is demoted in that order; the fourth drops the oldest (A5,
 * never hit: evicted before reuse). C, A's prompt again, finds A0 and A1
 * in the pool and promotes A2, A3, A4 from the tier: 20 positions cached,
 * 12 of them from the tier, and A's tokens exactly. */
static void test_tier_order(const kvl_model *m) {
    kvl_engine_params p = mk_params(12, 2, 64, KVL_PREEMPT_RECOMPUTE, 3);
    p.prefix_tier = KVL_PREFIX_TIER_HOST;
    kvl_engine *e = mk_from(m, &p);
    kvl_error err;
    uint64_t a = submit(e, 0, 24, 4, 1, 0);
    run_to_idle(e, 50);
    submit(e, 1, 16, 4, 1, 0);
    run_to_idle(e, 50);
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.prefix_demoted_blocks, 0);
    submit(e, 2, 16, 4, 1, 0);
    run_to_idle(e, 50);
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.prefix_evicted_blocks, 4);
    CHECK_EQ_INT(st.prefix_demoted_blocks, 4);
    CHECK_EQ_INT(st.prefix_tier_dropped, 1);
    CHECK_EQ_INT(st.prefix_tier_blocks, 3);
    CHECK_EQ_INT(st.prefix_evicted_unused, 1);
    CHECK_EQ_INT(st.n_swap_blocks_used, 3); /* the tier's, accounted in the swap area */
    uint64_t c = submit(e, 0, 24, 4, 1, 0);
    run_to_idle(e, 50);
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(logs[c].usage.cached_tokens, 20);
    CHECK_EQ_INT(logs[c].usage.cached_tokens_tier, 12); /* the pool's share: 8 */
    CHECK_EQ_INT(logs[a].usage.cached_tokens_tier, 0);
    CHECK_EQ_INT(st.prefix_hit_tokens_tier, 12);
    CHECK_EQ_INT(st.prefix_hit_tokens_pool, 8);
    CHECK_EQ_INT(st.prefix_promoted_blocks, 3);
    CHECK_EQ_INT(logs[c].n[0], logs[a].n[0]);
    CHECK(memcmp(logs[a].toks[0], logs[c].toks[0], sizeof(int32_t) * 4) == 0);
    CHECK(kvl_engine_check(e, &err) == KVL_OK);
    kvl_engine_free(e);
}

/* A request's blocks leave the pool (two other prompts take all of it);
 * the same prompt again: with the tier it is served from the tier (a copy)
 * and gives exactly the miss's tokens (greedy); without the tier it is a
 * miss. Prompts ending mid-block (22) and on a boundary (20); per format.
 * Salts stay apart through the tier: a second tenant's identical prompt
 * finds nothing, and leaves the first tenant's tier blocks usable. */
static void test_tier_hits(const kvl_model *m, const char *fmt) {
    kvl_kv_format f;
    kvl_block_layout lay;
    kvl_error err;
    CHECK(kvl_kv_format_parse(fmt, &f));
    CHECK(kvl_block_layout_init_fmt(&m->hp, 4, f, f, &lay, &err) == KVL_OK);
    for (int tier = 0; tier < 2; tier++)
        for (int plen = 20; plen <= 22; plen += 2) {
            kvl_engine_params p = kvl_engine_defaults();
            p.n_threads = 1;
            p.block_size = 4;
            p.kv_type_k = p.kv_type_v = fmt;
            p.kv_mem = 12 * lay.block_bytes;
            p.max_ctx = 48;
            p.max_batch_tokens = 8;
            p.swap_mem = 64 * lay.block_bytes;
            p.prefix_tier = tier ? KVL_PREFIX_TIER_HOST : KVL_PREFIX_TIER_OFF;
            kvl_engine *e = mk_from(m, &p);
            CHECK(e != NULL);
            if (!e)
                return;
            uint64_t a = submit_salt(e, 0, plen, 8, 1, 0, "t1"); /* the miss */
            run_to_idle(e, 100);
            submit(e, 3, 36, 4, 1, 0); /* 10 blocks each: A's blocks all leave */
            run_to_idle(e, 100);
            submit(e, 4, 36, 4, 1, 0);
            run_to_idle(e, 100);
            kvl_engine_stats st0, st;
            kvl_engine_get_stats(e, &st0);
            uint64_t x = submit_salt(e, 0, plen, 8, 1, 0, "t2"); /* another tenant */
            run_to_idle(e, 100);
            uint64_t b = submit_salt(e, 0, plen, 8, 1, 0, "t1");
            run_to_idle(e, 100);
            kvl_engine_get_stats(e, &st);
            int32_t want_hit = (plen - 1) / 4 * 4;
            CHECK_EQ_INT(logs[a].usage.cached_tokens, 0);
            CHECK_EQ_INT(logs[x].usage.cached_tokens, 0);
            CHECK_EQ_INT(logs[b].usage.cached_tokens, tier ? want_hit : 0);
            CHECK_EQ_INT(logs[b].usage.cached_tokens_tier, tier ? want_hit : 0);
            CHECK_EQ_INT(logs[x].usage.cached_tokens_tier, 0);
            CHECK_EQ_INT(st.prefix_hit_tokens_tier - st0.prefix_hit_tokens_tier,
                         tier ? want_hit : 0);
            CHECK_EQ_INT(st.prefix_promoted_blocks - st0.prefix_promoted_blocks,
                         tier ? want_hit / 4 : 0);
            CHECK_EQ_INT(logs[b].n[0], logs[a].n[0]);
            CHECK(memcmp(logs[a].toks[0], logs[b].toks[0],
                         sizeof(int32_t) * (size_t)logs[a].n[0]) == 0);
            CHECK(memcmp(logs[a].toks[0], logs[x].toks[0],
                         sizeof(int32_t) * (size_t)logs[a].n[0]) == 0);
            CHECK(kvl_engine_check(e, &err) == KVL_OK);
            kvl_engine_free(e);
        }
}

/* Swapped-out requests come before the tier: with the swap area full of
 * tier blocks, a swap preemption drops the tier's oldest for room and the
 * request comes back with its tokens intact. request_info reports the
 * cached tokens of a running request, tier share included. */
static void test_tier_swap_first(const kvl_model *m) {
    kvl_engine_params p = mk_params(12, 2, 64, KVL_PREEMPT_SWAP, 8);
    p.prefix_tier = KVL_PREFIX_TIER_HOST;
    kvl_engine *e = mk_from(m, &p);
    kvl_error err;
    uint64_t a = submit(e, 0, 24, 4, 1, 0); /* 6 cached blocks */
    run_to_idle(e, 50);
    submit(e, 1, 36, 4, 1, 0); /* 10 blocks: demotes A's (4 fit the tier) */
    run_to_idle(e, 50);
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.prefix_tier_blocks, 4);
    CHECK_EQ_INT(st.n_swap_blocks_used, 4);
    uint64_t c = submit(e, 0, 24, 12, 1, 0); /* A's prompt: hits, partly from the tier */
    step(e);
    kvl_request_info ri;
    CHECK(kvl_engine_request_info(e, c, &ri) == KVL_OK);
    CHECK_EQ_INT(ri.cached_tokens, 20);
    CHECK(ri.cached_tokens_tier > 0);
    int64_t c_tier = ri.cached_tokens_tier;
    while (logs[c].n[0] < 2)
        step(e);
    kvl_engine_get_stats(e, &st);
    uint32_t tier_before = st.prefix_tier_blocks;
    CHECK(tier_before > 0);
    CHECK(kvl_engine_preempt(e, c, KVL_PREEMPT_SWAP) == KVL_OK);
    CHECK_EQ_INT(state_of(e, c), KVL_REQ_SWAPPED);
    CHECK(kvl_engine_check(e, &err) == KVL_OK);
    run_to_idle(e, 50);
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.n_preempt_swap, 1);
    CHECK(st.prefix_tier_dropped_swap > 0);
    CHECK_EQ_INT(logs[c].n[0], 12);
    CHECK_EQ_INT(logs[c].usage.cached_tokens_tier, c_tier); /* the first admission's */
    CHECK(memcmp(logs[a].toks[0], logs[c].toks[0], 4 * sizeof(int32_t)) == 0);
    CHECK(kvl_engine_check(e, &err) == KVL_OK);
    kvl_engine_free(e);
}

static kvl_session_info sinfo(kvl_engine *e, uint64_t session) {
    kvl_session_info si;
    memset(&si, 0, sizeof si);
    CHECK(kvl_engine_session_info(e, session, &si) == KVL_OK);
    return si;
}

/* Per-session tier accounting, on test_tier_order's scenario with every
 * request in a session: A's (session 1) four demoted blocks are its own,
 * B's and D's sessions demoted nothing; C (session 4, A's prompt) promotes
 * three and its usage and turn say 12 of its 20 cached tokens came from the
 * tier. The promoted blocks are session 4's from then on: evicted again by
 * E, each demotion counts for the session that filled or promoted the
 * block, and the sessions' counts add up to the engine's. */
static void test_tier_sessions(const kvl_model *m) {
    kvl_engine_params p = mk_params(12, 2, 64, KVL_PREEMPT_RECOMPUTE, 3);
    p.prefix_tier = KVL_PREFIX_TIER_HOST;
    kvl_engine *e = mk_from(m, &p);
    submit_full(e, 0, 24, 4, 1, 0, NULL, 1);
    run_to_idle(e, 50);
    submit_full(e, 1, 16, 4, 1, 0, NULL, 2);
    run_to_idle(e, 50);
    submit_full(e, 2, 16, 4, 1, 0, NULL, 3);
    run_to_idle(e, 50);
    CHECK_EQ_INT(sinfo(e, 1).n_blocks_demoted, 4);
    CHECK_EQ_INT(sinfo(e, 1).n_blocks_promoted, 0);
    CHECK_EQ_INT(sinfo(e, 2).n_blocks_demoted, 0);
    CHECK_EQ_INT(sinfo(e, 3).n_blocks_demoted, 0);
    uint64_t c = submit_full(e, 0, 24, 4, 1, 0, NULL, 4);
    run_to_idle(e, 50);
    kvl_session_info s4 = sinfo(e, 4);
    CHECK_EQ_INT(s4.n_blocks_promoted, 3);
    CHECK_EQ_INT(s4.n_blocks_demoted, 0);
    CHECK_EQ_INT(sinfo(e, 1).n_blocks_promoted, 0);
    CHECK_EQ_INT(logs[c].usage.cached_tokens, 20);
    CHECK_EQ_INT(logs[c].usage.cached_tokens_tier, 12);
    CHECK_EQ_INT(s4.n_turns, 1);
    CHECK_EQ_INT(s4.turns[0].cached_tokens, 20);
    CHECK_EQ_INT(s4.turns[0].cached_tokens_tier, 12);
    CHECK_EQ_INT(sinfo(e, 1).turns[0].cached_tokens, 0);
    /* E takes the whole pool: C's blocks (A0, A1 filled by session 1, the
     * three it promoted, its own last ones) leave it */
    submit_full(e, 3, 40, 4, 1, 0, NULL, 5);
    run_to_idle(e, 50);
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    int64_t dem = 0, pro = 0;
    for (uint64_t k = 1; k <= 5; k++) {
        dem += sinfo(e, k).n_blocks_demoted;
        pro += sinfo(e, k).n_blocks_promoted;
    }
    CHECK_EQ_INT(dem, st.prefix_demoted_blocks);
    CHECK_EQ_INT(pro, st.prefix_promoted_blocks);
    CHECK(sinfo(e, 4).n_blocks_demoted >= 3); /* the promoted ones are its own now */
    CHECK(sinfo(e, 1).n_blocks_demoted > 4);  /* A0, A1 */
    /* n = 2 samples share the prompt's blocks: the session's shared count is
     * its request's */
    uint64_t f = submit_full(e, 4, 12, 8, 2, 0, NULL, 6);
    while (logs[f].n[1] < 2 && !kvl_engine_idle(e))
        step(e);
    kvl_request_info ri;
    CHECK(kvl_engine_request_info(e, f, &ri) == KVL_OK);
    CHECK(ri.n_blocks_shared > 0);
    CHECK_EQ_INT(sinfo(e, 6).n_blocks_shared, ri.n_blocks_shared);
    run_to_idle(e, 50);
    kvl_error err;
    CHECK(kvl_engine_check(e, &err) == KVL_OK);
    kvl_engine_free(e);
}

/* The tier's parameters are checked against the swap area. */
static void test_tier_params(const kvl_model *m) {
    kvl_engine_params p = mk_params(12, 2, 64, KVL_PREEMPT_AUTO, 0);
    kvl_engine *e = NULL;
    kvl_error err;
    p.prefix_tier = KVL_PREFIX_TIER_HOST; /* no swap area */
    CHECK_EQ_INT(kvl_engine_init(m, &p, &e, &err), KVL_E_INVALID);
    CHECK(strstr(err.msg, "swap_mem") != NULL);
    p.swap_mem = 4 * BLOCK;
    p.prefix_tier = KVL_PREFIX_TIER_FILE; /* no file */
    CHECK_EQ_INT(kvl_engine_init(m, &p, &e, &err), KVL_E_INVALID);
    CHECK(strstr(err.msg, "swap_file") != NULL);
    p.prefix_tier = (kvl_prefix_tier_mode)7;
    CHECK_EQ_INT(kvl_engine_init(m, &p, &e, &err), KVL_E_INVALID);
    CHECK(strstr(err.msg, "prefix_tier") != NULL);
    p.prefix_tier = KVL_PREFIX_TIER_FILE;
    p.swap_file = kvt_tmp("tier_swap.bin");
    CHECK_EQ_INT(kvl_engine_init(m, &p, &e, &err), KVL_OK);
    kvl_engine_config c;
    kvl_engine_get_config(e, &c);
    CHECK_EQ_INT(c.prefix_tier, KVL_PREFIX_TIER_FILE);
    kvl_engine_free(e);
    kvl_prefix_tier_mode t;
    CHECK(kvl_prefix_tier_parse("host", &t) && t == KVL_PREFIX_TIER_HOST);
    CHECK(!kvl_prefix_tier_parse("disk", &t));
    CHECK(!strcmp(kvl_prefix_tier_str(KVL_PREFIX_TIER_OFF), "off"));
}

int main(void) {
    kvl_model *m = NULL;
    kvl_error err;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    test_admission(m);
    test_chunks(m);
    test_victim(m, KVL_PREEMPT_RECOMPUTE);
    test_victim(m, KVL_PREEMPT_SWAP);
    test_preempt_identical(m, KVL_PREEMPT_SWAP);
    test_preempt_identical(m, KVL_PREEMPT_RECOMPUTE);
    test_swap_exact(m, "f32");
    test_swap_exact(m, "int4"); /* blocks plus the f32 residual */
    test_refusals(m);
    test_cancel(m);
    test_samples_share(m);
    test_logprobs_penalties(m);
    test_overload(m);
    test_session(m);
    test_prefix_hits(m, "f32");
    test_prefix_hits(m, "f16");
    test_prefix_hits(m, "int8");
    test_prefix_eviction(m);
    test_tier_order(m);
    test_tier_hits(m, "f16");
    test_tier_hits(m, "int8");
    test_tier_swap_first(m);
    test_tier_sessions(m);
    test_tier_params(m);
    test_batch_invariance(m);
    kvl_model_free(m);
    /* the same on a TinyLlama-shaped Q8_0 model (2 layers, random weights) */
    const char *bin = getenv("KVL_BIN");
    const char *q8 = kvt_tmp("engine_q8.gguf");
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "%s mkmodel --preset tinyllama-1.1b --layers 2 --dim 512 --heads 8 --kv-heads 2 "
             "--ffn 1408 --type q8_0 --seed 5 -o %s >/dev/null 2>&1",
             bin ? bin : "kvllm", q8);
    CHECK(system(cmd) == 0);
    if (kvl_model_load(q8, NULL, &m, &err) == KVL_OK) {
        test_prefix_hits(m, "f16"); /* before batch invariance is switched on */
        test_prefix_hits(m, "int8");
        test_tier_hits(m, "f16");
        test_tier_hits(m, "int8");
        invariant = true; /* Q8_0's decode and small-batch kernels sum in other orders */
        test_batch_invariance(m);
        kvl_model_free(m);
    } else {
        fprintf(stderr, "%s\n", err.msg);
        CHECK(!"q8_0 model");
    }
    return kvt_finish("test_engine");
}
