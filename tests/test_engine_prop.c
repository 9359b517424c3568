/*
 * Randomized property test of the serving engine on stories260K: for each
 * seed a random engine (pool of 12..40 blocks of 4, 1..6 slots, a token
 * budget of 4..64, a preemption mode, a swap area or none, paged or
 * contiguous) and a random workload (requests arriving at random steps
 * with random prompt and output lengths, 1..3 samples, priorities, random
 * cancellations, prompts that often share a prefix, three cache salts,
 * the prefix cache on or off, its second tier off, in host memory or in a
 * swap file). After every step the engine's own invariants hold
 * (kvl_engine_check: lists and states agree, slots and blocks accounted,
 * the pool's free queue intact). At the end:
 *   - every accepted request got exactly one final event, its last;
 *   - idle: every block free with no reference, the swap area holding only
 *     the prefix tier's blocks;
 *   - nothing starved: the workload finished within the stated bound of
 *     steps, 64 + 4 x (the tokens of all accepted requests, every sample's
 *     prompt and outputs counted).
 * Seeds: KVL_PROP_SEEDS (default 1000).
 */
#include "engine/engine_debug.h"
#include "testutil.h"

#include <stdlib.h>

#define BLOCK 5120
#define MAX_REQ 16

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) { /* splitmix64, uniform enough for tests */
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)((z ^ (z >> 31)) % n);
}

typedef struct pending {
    int32_t at_step, n_prompt, max_tokens, n, prio, cancel_at;
    kvl_kv_policy policy; /* a third of the requests: window, sinks, h2o or snapkv */
    float temp;
    uint64_t id;
    bool accepted;
    int n_final, n_after;
    int64_t tokens;
} pending;

static int64_t total_hits, total_self_hits, total_preemptions; /* the paths were exercised */
static int64_t total_promoted, total_demoted, total_tier_swap_drops;
static int64_t total_policy_done, total_evicted; /* policy requests finished, blocks evicted */
static int64_t total_kind[5], total_snap_over;   /* per policy; snapkv prompts cut after prefill */

static int one_seed(const kvl_model *m, uint64_t seed) {
    rng_state = seed * 7919 + 1;
    int fails_before = kvt_failures;
    kvl_engine_params p = kvl_engine_defaults();
    p.n_threads = 1;
    p.block_size = 4;
    p.kv_type_k = p.kv_type_v = "f32";
    uint32_t n_blocks = 12 + rnd(29);
    p.max_seqs = 1 + (int32_t)rnd(6);
    p.max_batch_tokens = 4 + (int32_t)rnd(61);
    p.preempt = (kvl_preempt_mode)rnd(3);
    p.swap_mem = rnd(2) ? (size_t)rnd(24) * BLOCK : 0;
    p.max_queue = 4 + (int32_t)rnd(16);
    p.kv_layout = rnd(6) == 0 ? KVL_KV_LAYOUT_CONTIGUOUS : KVL_KV_LAYOUT_PAGED;
    p.prefix_cache = rnd(4) != 0;
    p.max_ctx = (int32_t)n_blocks * 4;
    p.kv_mem = (size_t)n_blocks * BLOCK;
    uint32_t tier = rnd(4); /* 0, 1: off; 2: host; 3: file */
    if (p.kv_layout == KVL_KV_LAYOUT_CONTIGUOUS) {
        p.max_ctx = 48;
        p.kv_mem = (size_t)p.max_seqs * 48 * 1280;
        p.swap_mem = 0;
    }
    if (tier >= 2 && p.swap_mem && p.prefix_cache) {
        p.prefix_tier = tier == 2 ? KVL_PREFIX_TIER_HOST : KVL_PREFIX_TIER_FILE;
        p.swap_file = tier == 3 ? kvt_tmp("prop_swap.bin") : NULL;
    }
    kvl_engine *e = NULL;
    kvl_error err;
    if (kvl_engine_init(m, &p, &e, &err)) {
        fprintf(stderr, "seed %llu: init: %s\n", (unsigned long long)seed, err.msg);
        CHECK(!"init");
        return 1;
    }
    pending req[MAX_REQ];
    int32_t n_req = 1 + (int32_t)rnd(MAX_REQ);
    int64_t work = 0;
    for (int32_t i = 0; i < n_req; i++) {
        pending *q = &req[i];
        memset(q, 0, sizeof *q);
        q->at_step = (int32_t)rnd(30);
        q->n_prompt = 1 + (int32_t)rnd((uint32_t)(p.max_ctx / 2));
        q->max_tokens = 1 + (int32_t)rnd((uint32_t)(p.max_ctx - q->n_prompt));
        q->n = 1 + (int32_t)rnd(3);
        q->prio = (int32_t)rnd(5) - 2;
        q->cancel_at = rnd(5) == 0 ? q->at_step + (int32_t)rnd(20) : -1;
        q->temp = rnd(2) ? 0.0f : 0.9f;
        if (rnd(3) == 0) { /* an evicting stream: n 1, may run past the context */
            q->policy.kind = (kvl_kv_policy_kind)(KVL_KV_POLICY_WINDOW + (int)rnd(4));
            q->policy.sinks = (int32_t)rnd(9); /* 0: the default 4 */
            /* 2..5 blocks past the sinks' block; 1 in 10 below the bound */
            q->policy.budget_tokens = rnd(10) ? 12 + 4 * (int32_t)rnd(4) : 4;
            q->policy.heavy = rnd(4) ? 0.0f : 0.1f + 0.2f * (float)rnd(5); /* 0: 0.5 */
            q->policy.obs_window = 1 + (int32_t)rnd(8); /* snapkv: budget >= its bound + w */
            if (q->policy.kind == KVL_KV_POLICY_SNAPKV && rnd(10))
                q->policy.budget_tokens += q->policy.obs_window;
            if (rnd(20) == 0) /* out of range: refused naming the field */
                q->policy.heavy = 1.5f, q->policy.obs_window = -3;
            q->n = rnd(8) ? 1 : 2; /* 2: refused */
            q->max_tokens = 1 + (int32_t)rnd((uint32_t)(2 * p.max_ctx));
        }
    }
    int32_t toks[256], base[256]; /* prompts often share a prefix of base */
    base[0] = 1;
    for (int k = 1; k < 256; k++)
        base[k] = 3 + (int32_t)rnd(500);
    static const char *const salts[] = {NULL, "tenant-a", "tenant-b"};
    int64_t bound = 64, steps = 0;
    kvl_event ev[64];
    for (;;) {
        for (int32_t i = 0; i < n_req; i++) {
            pending *q = &req[i];
            if (q->at_step == steps) {
                toks[0] = 1;
                int32_t shared = rnd(2) ? (int32_t)rnd((uint32_t)q->n_prompt + 1) : 0;
                for (int32_t k = 1; k < q->n_prompt; k++)
                    toks[k] = k < shared ? base[k] : 3 + (int32_t)rnd(500);
                kvl_request_params rp = kvl_request_defaults();
                rp.prompt_tokens = toks;
                rp.n_prompt_tokens = (size_t)q->n_prompt;
                rp.max_tokens = q->max_tokens;
                rp.n = q->n;
                rp.priority = q->prio;
                rp.temperature = q->temp;
                rp.seed = seed;
                rp.cache_salt = salts[rnd(3)];
                rp.kv_policy = q->policy;
                kvl_status st = kvl_engine_submit(e, &rp, &q->id, &err);
                q->accepted = st == KVL_OK;
                CHECK(st == KVL_OK || st == KVL_E_LIMIT || st == KVL_E_BUSY ||
                      st == KVL_E_INVALID ||
                      (st == KVL_E_UNSUPPORTED && q->policy.kind != KVL_KV_POLICY_FULL));
                if (q->accepted) {
                    work += q->n_prompt + (int64_t)q->n * (q->n_prompt + q->max_tokens);
                    bound = 64 + 4 * work + steps;
                }
            }
            if (q->accepted && q->cancel_at == steps && !q->n_final)
                kvl_engine_cancel(e, q->id);
        }
        CHECK(kvl_engine_step(e, NULL, &err) == KVL_OK);
        kvl_status cst = kvl_engine_check(e, &err);
        if (cst) {
            fprintf(stderr, "seed %llu step %lld: %s\n", (unsigned long long)seed, (long long)steps,
                    err.msg);
            CHECK(!"engine invariants");
            break;
        }
        int n;
        while ((n = kvl_engine_poll(e, ev, 64, 0)) > 0)
            for (int k = 0; k < n; k++)
                for (int32_t i = 0; i < n_req; i++)
                    if (req[i].accepted && req[i].id == ev[k].id) {
                        req[i].n_after += req[i].n_final;
                        req[i].n_final += ev[k].type == KVL_EV_FINAL;
                        req[i].tokens += ev[k].type == KVL_EV_TOKEN;
                    }
        steps++;
        bool arrivals_left = false;
        for (int32_t i = 0; i < n_req; i++)
            arrivals_left |= req[i].at_step >= steps;
        if (!arrivals_left && kvl_engine_idle(e))
            break;
        if (steps > bound) {
            fprintf(stderr, "seed %llu: not idle after %lld steps (bound %lld)\n",
                    (unsigned long long)seed, (long long)steps, (long long)bound);
            CHECK(!"starvation bound");
            break;
        }
    }
    for (int32_t i = 0; i < n_req; i++) {
        if (!req[i].accepted)
            continue;
        CHECK_EQ_INT(req[i].n_final, 1);
        CHECK_EQ_INT(req[i].n_after, 0);
        CHECK(req[i].tokens <= (int64_t)req[i].n * req[i].max_tokens);
        total_policy_done += req[i].policy.kind != KVL_KV_POLICY_FULL;
        total_kind[req[i].policy.kind]++;
        total_snap_over += req[i].policy.kind == KVL_KV_POLICY_SNAPKV &&
                           req[i].n_prompt > req[i].policy.budget_tokens;
    }
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    CHECK_EQ_INT(st.kv.n_blocks_used, 0);
    CHECK_EQ_INT(st.n_swap_blocks_used, st.prefix_tier_blocks);
    CHECK(st.prefix_tier_blocks <= st.n_swap_blocks_total);
    CHECK_EQ_INT(st.n_waiting + st.n_running + st.n_swapped, 0);
    total_hits += st.prefix_hit_tokens;
    total_self_hits += st.prefix_hit_tokens_self;
    total_preemptions += st.n_preemptions;
    total_promoted += st.prefix_promoted_blocks;
    total_demoted += st.prefix_demoted_blocks;
    total_tier_swap_drops += st.prefix_tier_dropped_swap;
    total_evicted += st.kv.n_blocks_evicted;
    CHECK(kvl_engine_check(e, &err) == KVL_OK);
    kvl_engine_free(e);
    if (kvt_failures != fails_before)
        fprintf(stderr, "seed %llu failed\n", (unsigned long long)seed);
    return kvt_failures != fails_before;
}

int main(void) {
    kvl_model *m = NULL;
    kvl_error err;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const char *env = getenv("KVL_PROP_SEEDS");
    long n_seeds = env ? atol(env) : 1000;
    int bad = 0;
    for (long s = 0; s < n_seeds && bad < 5; s++)
        bad += one_seed(m, (uint64_t)s);
    printf("test_engine_prop: %ld seeds, %lld preemptions, %lld prefix-hit tokens (%lld on "
           "re-admission)\n",
           n_seeds, (long long)total_preemptions, (long long)total_hits,
           (long long)total_self_hits);
    printf("test_engine_prop: prefix tier: %lld blocks demoted, %lld promoted, %lld dropped for "
           "swapped requests\n",
           (long long)total_demoted, (long long)total_promoted, (long long)total_tier_swap_drops);
    printf("test_engine_prop: %lld evicting requests accepted (%lld h2o, %lld snapkv, %lld "
           "snapkv prompts over the budget), %lld blocks evicted\n",
           (long long)total_policy_done, (long long)total_kind[KVL_KV_POLICY_H2O],
           (long long)total_kind[KVL_KV_POLICY_SNAPKV], (long long)total_snap_over,
           (long long)total_evicted);
    if (n_seeds >= 100) {
        CHECK(total_preemptions > 0);
        CHECK(total_hits > 0);
        CHECK(total_self_hits > 0);
        CHECK(total_demoted > 0);
        CHECK(total_promoted > 0);
        CHECK(total_policy_done > 0);
        CHECK(total_evicted > 0);
        CHECK(total_kind[KVL_KV_POLICY_H2O] > 0 && total_kind[KVL_KV_POLICY_SNAPKV] > 0);
        CHECK(total_snap_over > 0);
    }
    kvl_model_free(m);
    return kvt_finish("test_engine_prop");
}
