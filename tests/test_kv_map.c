/*
 * The KV block map (kvl_engine_kv_map) on stories260K with tiny pools
 * (blocks of 4 positions, f32: 5120 bytes a block).
 *
 * A checker, written against the engine's block tables (read through the
 * debug hooks, not through the map), verifies one map:
 *   - its counts equal the cells' and kvl_engine_get_stats's at the same
 *     moment (used, free + cached, shared, occupancy, queues, the prefix
 *     cache's hashed blocks, the swap area's held and tier blocks);
 *   - a cell is USED exactly when its refcount is > 0, and its refcount
 *     equals the number of table entries naming it over all requests;
 *   - each USED block's holder really holds it and no earlier holder does;
 *   - holders ascend by id, each as kvl_engine_request_info describes it;
 *   - idle: every block FREE or CACHED, no holder, no held swap block.
 * Then: fixed scenarios (sharing, n = 2, swap, the error paths with an
 * unchanged map), a mutation test (each of several corruptions of a good
 * map is caught by the checker), and a randomized property test (seeded
 * random submit / step / cancel / preempt sequences, prefix cache and swap
 * on, the prefix tier sometimes) checking every map after every step.
 * Seeds: KVL_MAP_SEEDS (default 150).
 */
#include "engine/engine_debug.h"
#include "kv/kv_paged.h"
#include "testutil.h"

#include <stdlib.h>

#define BLOCK 5120

typedef struct map_buf {
    kvl_kv_map m;
    uint32_t nb, ns, nh;
} map_buf;

static void map_alloc(kvl_engine *e, map_buf *b) {
    memset(b, 0, sizeof *b);
    kvl_engine_kv_map_size(e, &b->nb, &b->ns, &b->nh);
    b->m.blocks = calloc(b->nb, sizeof *b->m.blocks);
    b->m.swap = calloc(b->ns ? b->ns : 1, sizeof *b->m.swap);
    b->m.holders = calloc(b->nh, sizeof *b->m.holders);
    b->m.cap_blocks = b->nb;
    b->m.cap_swap = b->ns;
    b->m.cap_holders = b->nh;
}

static void map_free(map_buf *b) {
    free(b->m.blocks);
    free(b->m.swap);
    free(b->m.holders);
}

/* Entries naming block id over all of request id's samples' tables. */
static uint32_t entries_of(kvl_engine *e, uint64_t id, int32_t n_samples, uint32_t block) {
    kvl_kv_paged *pg = kvl_kv_cache_paged(kvl_engine_kv_cache(e));
    uint32_t k = 0;
    for (int32_t si = 0; si < n_samples; si++) {
        int32_t slot = kvl_engine_slot_of(e, id, si);
        if (slot < 0)
            continue;
        const kvl_block_table *t = kvl_kv_paged_table(pg, slot);
        for (uint32_t j = 0; j < t->n_blocks; j++)
            k += t->ids[j] == block;
    }
    return k;
}

static char why[640];
#define FAILF(...) (snprintf(why, sizeof why, __VA_ARGS__), false)

static bool check_counts(const kvl_kv_map *m, const kvl_engine_stats *st) {
    uint32_t c[3] = {0}, shared = 0, hashed = 0, sc[3] = {0};
    for (uint32_t b = 0; b < m->n_blocks; b++) {
        c[m->blocks[b].state]++;
        shared += m->blocks[b].refcount > 1;
        hashed += m->blocks[b].hashed;
    }
    for (uint32_t b = 0; b < m->n_swap_blocks; b++)
        sc[m->swap[b].state]++;
    if (m->in_step)
        return FAILF("in_step between steps");
    if (m->n_blocks != st->kv.n_blocks_total || m->n_swap_blocks != st->n_swap_blocks_total)
        return FAILF("sizes %u/%u vs %u/%u", m->n_blocks, m->n_swap_blocks, st->kv.n_blocks_total,
                     st->n_swap_blocks_total);
    if (c[0] != m->n_free || c[1] != m->n_cached || c[2] != m->n_used || shared != m->n_shared)
        return FAILF("cells %u/%u/%u/%u vs counts %u/%u/%u/%u", c[0], c[1], c[2], shared, m->n_free,
                     m->n_cached, m->n_used, m->n_shared);
    if (m->n_used != st->kv.n_blocks_used || m->n_free + m->n_cached != st->kv.n_blocks_free ||
        m->n_shared != st->kv.n_blocks_shared || m->kv.occupancy != st->kv.occupancy ||
        m->kv.n_blocks_used != st->kv.n_blocks_used)
        return FAILF("map used %u free %u cached %u shared %u occ %g; stats used %u free %u "
                     "shared %u occ %g",
                     m->n_used, m->n_free, m->n_cached, m->n_shared, m->kv.occupancy,
                     st->kv.n_blocks_used, st->kv.n_blocks_free, st->kv.n_blocks_shared,
                     st->kv.occupancy);
    if (hashed != st->prefix_cached_blocks)
        return FAILF("%u hashed cells, %u cached blocks in stats", hashed,
                     st->prefix_cached_blocks);
    if (sc[0] != m->n_swap_free || sc[1] != m->n_swap_tier || sc[2] != m->n_swap_held ||
        sc[1] != st->prefix_tier_blocks || sc[1] + sc[2] != st->n_swap_blocks_used)
        return FAILF("swap cells %u/%u/%u, counts %u/%u/%u, stats tier %u used %u", sc[0], sc[1],
                     sc[2], m->n_swap_free, m->n_swap_tier, m->n_swap_held, st->prefix_tier_blocks,
                     st->n_swap_blocks_used);
    if (m->n_waiting != st->n_waiting || m->n_running != st->n_running ||
        m->n_swapped != st->n_swapped)
        return FAILF("queues %d/%d/%d vs %d/%d/%d", m->n_waiting, m->n_running, m->n_swapped,
                     st->n_waiting, st->n_running, st->n_swapped);
    return true;
}

static bool check_holders(kvl_engine *e, const kvl_kv_map *m) {
    uint32_t swap_sum = 0;
    for (uint32_t h = 0; h < m->n_holders; h++) {
        const kvl_kv_holder *k = &m->holders[h];
        kvl_request_info ri;
        if (h && k->request <= m->holders[h - 1].request)
            return FAILF("holders not ascending at %u", h);
        if (kvl_engine_request_info(e, k->request, &ri) != KVL_OK)
            return FAILF("holder %llu unknown", (unsigned long long)k->request);
        if (ri.state != k->state || ri.n_blocks != k->n_blocks ||
            ri.n_swap_blocks != k->n_swap_blocks || ri.n_blocks_shared != k->n_blocks_shared ||
            ri.computed_tokens != k->n_tokens || ri.n_samples != k->n_samples)
            return FAILF("holder %llu disagrees with request_info", (unsigned long long)k->request);
        if (k->n_blocks + k->n_swap_blocks == 0)
            return FAILF("holder %llu holds nothing", (unsigned long long)k->request);
        uint32_t held = 0;
        for (uint32_t b = 0; b < m->n_swap_blocks; b++)
            held += m->swap[b].state == KVL_KV_SWAP_HELD && m->swap[b].holder == (int32_t)h;
        if (held != k->n_swap_blocks)
            return FAILF("holder %u: %u held swap cells, %u swap blocks", h, held,
                         k->n_swap_blocks);
        swap_sum += k->n_swap_blocks;
    }
    if (swap_sum != m->n_swap_held)
        return FAILF("holders' swap blocks %u != held cells %u", swap_sum, m->n_swap_held);
    return true;
}

static bool check_cells(kvl_engine *e, const kvl_kv_map *m) {
    for (uint32_t b = 0; b < m->n_blocks; b++) {
        const kvl_kv_block_info *c = &m->blocks[b];
        kvl_kv_block_state want = c->refcount ? KVL_KV_BLOCK_USED
                                  : c->hashed ? KVL_KV_BLOCK_CACHED
                                              : KVL_KV_BLOCK_FREE;
        if (c->state != want)
            return FAILF("block %u: state %d refcount %u hashed %d", b, (int)c->state, c->refcount,
                         (int)c->hashed);
        if (c->state != KVL_KV_BLOCK_USED) {
            if (c->holder != -1)
                return FAILF("unused block %u has holder %d", b, c->holder);
            continue;
        }
        if (c->holder < 0 || (uint32_t)c->holder >= m->n_holders)
            return FAILF("used block %u: holder %d of %u", b, c->holder, m->n_holders);
        uint32_t refs = 0;
        for (uint32_t h = 0; h < m->n_holders; h++) {
            uint32_t k = entries_of(e, m->holders[h].request, m->holders[h].n_samples, b);
            if (k && (int32_t)h < c->holder)
                return FAILF("block %u: holder %d but earlier holder %u holds it", b, c->holder, h);
            if ((int32_t)h == c->holder && !k)
                return FAILF("block %u: holder %d does not hold it", b, c->holder);
            refs += k;
        }
        if (refs != c->refcount)
            return FAILF("block %u: refcount %u, %u table entries", b, c->refcount, refs);
    }
    for (uint32_t b = 0; b < m->n_swap_blocks; b++) {
        const kvl_kv_swap_info *c = &m->swap[b];
        if ((c->state == KVL_KV_SWAP_HELD) != (c->holder >= 0) ||
            (c->holder >= 0 && (uint32_t)c->holder >= m->n_holders) ||
            (c->holder >= 0 && m->holders[c->holder].state != KVL_REQ_SWAPPED))
            return FAILF("swap block %u: state %d holder %d", b, (int)c->state, c->holder);
    }
    return true;
}

/* The whole check of one map taken between steps. */
static bool check_map(kvl_engine *e, const kvl_kv_map *m) {
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    if (!check_counts(m, &st) || !check_holders(e, m) || !check_cells(e, m))
        return false;
    if (kvl_engine_idle(e) && (m->n_used || m->n_holders || m->n_swap_held))
        return FAILF("idle but %u used, %u holders, %u held swap", m->n_used, m->n_holders,
                     m->n_swap_held);
    return true;
}

static bool take_and_check(kvl_engine *e, map_buf *b) {
    kvl_error err;
    kvl_status st = kvl_engine_kv_map(e, &b->m, &err);
    if (st) {
        snprintf(why, sizeof why, "kv_map: %s", err.msg);
        return false;
    }
    return check_map(e, &b->m);
}

static kvl_engine_params params(uint32_t n_blocks, int32_t max_seqs, uint32_t swap_blocks) {
    kvl_engine_params p = kvl_engine_defaults();
    p.n_threads = 1;
    p.block_size = 4;
    p.kv_type_k = p.kv_type_v = "f32";
    p.kv_mem = (size_t)n_blocks * BLOCK;
    p.max_ctx = (int32_t)n_blocks * 4;
    p.max_seqs = max_seqs;
    p.max_batch_tokens = 64;
    p.swap_mem = (size_t)swap_blocks * BLOCK;
    return p;
}

static uint64_t submit(kvl_engine *e, const int32_t *toks, int32_t n_prompt, int32_t max_tokens,
                       int32_t n) {
    kvl_request_params rp = kvt_greedy_request(toks, n_prompt, max_tokens, n);
    rp.ignore_eos = true;
    uint64_t id = 0;
    kvl_error err;
    if (kvl_engine_submit(e, &rp, &id, &err))
        fprintf(stderr, "submit: %s\n", err.msg);
    return id;
}

static void step_drain(kvl_engine *e) {
    kvl_error err;
    kvl_event ev[64];
    CHECK(kvl_engine_step(e, NULL, &err) == KVL_OK);
    while (kvl_engine_poll(e, ev, 64, 0) > 0) {
    }
}

/* ---- fixed scenarios ---- */

static void test_errors(kvl_engine *e) {
    map_buf b;
    map_alloc(e, &b);
    kvl_error err;
    CHECK(kvl_engine_kv_map(e, NULL, &err) == KVL_E_INVALID);
    kvl_kv_map saved;
    memcpy(&saved, &b.m, sizeof saved);
    b.m.cap_blocks = b.nb - 1;
    CHECK(kvl_engine_kv_map(e, &b.m, &err) == KVL_E_LIMIT);
    char want[64];
    snprintf(want, sizeof want, "the pool has %u blocks", b.nb);
    CHECK_CONTAINS(err.msg, want);
    b.m.cap_blocks = b.nb;
    kvl_kv_block_info *keep = b.m.blocks;
    b.m.blocks = NULL;
    CHECK(kvl_engine_kv_map(e, &b.m, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "NULL");
    b.m.blocks = keep;
    /* two holders, room for one: refused, nothing written */
    int32_t toks[12] = {1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50};
    submit(e, toks, 12, 8, 1);
    toks[1] = 60;
    submit(e, toks, 12, 8, 1);
    step_drain(e);
    b.m.cap_holders = 1;
    memset(b.m.blocks, 0x5a, b.nb * sizeof *b.m.blocks);
    saved.cap_holders = 1;
    CHECK(kvl_engine_kv_map(e, &b.m, &err) == KVL_E_LIMIT);
    CHECK_CONTAINS(err.msg, "cap_holders 1 < the 2 requests");
    CHECK(!memcmp(&saved, &b.m, sizeof saved));
    CHECK(((unsigned char *)b.m.blocks)[0] == 0x5a);
    b.m.cap_holders = b.nh;
    CHECK(take_and_check(e, &b) || (fprintf(stderr, "errors: %s\n", why), 0));
    CHECK_EQ_INT(b.m.n_holders, 2);
    while (!kvl_engine_idle(e))
        step_drain(e);
    map_free(&b);
}

/* Two requests with the same first 8 positions, then one with n = 2:
 * shared blocks go to the lower id; the map agrees with stats throughout;
 * after the end the prompts' full blocks stay CACHED. */
static void test_sharing(kvl_engine *e) {
    map_buf b;
    map_alloc(e, &b);
    int32_t a[10] = {1, 70, 71, 72, 73, 74, 75, 76, 77, 78};
    uint64_t r1 = submit(e, a, 10, 6, 1);
    step_drain(e); /* r1's prompt is in: its two full blocks are cached */
    uint64_t r2 = submit(e, a, 10, 6, 1);
    step_drain(e);
    CHECK(take_and_check(e, &b) || (fprintf(stderr, "sharing: %s\n", why), 0));
    CHECK_EQ_INT(b.m.n_holders, 2);
    CHECK(b.m.holders[0].request == r1 && b.m.holders[1].request == r2);
    CHECK(b.m.n_shared >= 2);
    for (uint32_t i = 0; i < b.m.n_blocks; i++)
        if (b.m.blocks[i].refcount > 1)
            CHECK_EQ_INT(b.m.blocks[i].holder, 0);
    CHECK_EQ_INT(b.m.holders[1].n_blocks_shared, b.m.n_shared);
    CHECK_NEAR(b.m.kv.occupancy, (double)b.m.n_used / b.m.n_blocks, 1e-12);
    while (!kvl_engine_idle(e))
        step_drain(e);
    int32_t c[6] = {1, 90, 91, 92, 93, 94};
    submit(e, c, 6, 8, 2);
    step_drain(e);
    step_drain(e);
    CHECK(take_and_check(e, &b) || (fprintf(stderr, "n=2: %s\n", why), 0));
    CHECK_EQ_INT(b.m.n_holders, 1);
    CHECK(b.m.holders[0].n_samples == 2 && b.m.n_shared >= 1);
    while (!kvl_engine_idle(e))
        step_drain(e);
    CHECK(take_and_check(e, &b) || (fprintf(stderr, "idle: %s\n", why), 0));
    CHECK(b.m.n_cached >= 2 && b.m.n_used == 0 && b.m.n_holders == 0);
    map_free(&b);
}

/* A request swapped out: its swap cells are HELD by it, its state swapped. */
static void test_swap(kvl_engine *e) {
    map_buf b;
    map_alloc(e, &b);
    int32_t a[9] = {1, 200, 201, 202, 203, 204, 205, 206, 207};
    uint64_t id = submit(e, a, 9, 12, 1);
    step_drain(e);
    step_drain(e);
    CHECK(kvl_engine_preempt(e, id, KVL_PREEMPT_SWAP) == KVL_OK);
    /* between steps, by the debug hook: the stats are the last step's, so
     * only the cells and holders are checked here */
    kvl_error err;
    CHECK(kvl_engine_kv_map(e, &b.m, &err) == KVL_OK);
    CHECK(check_holders(e, &b.m) || (fprintf(stderr, "swap: %s\n", why), 0));
    CHECK(check_cells(e, &b.m) || (fprintf(stderr, "swap: %s\n", why), 0));
    CHECK(b.m.n_holders == 1 && b.m.holders[0].state == KVL_REQ_SWAPPED);
    CHECK(b.m.n_swap_held == b.m.holders[0].n_swap_blocks && b.m.n_swap_held >= 2);
    CHECK_EQ_INT(b.m.holders[0].n_blocks, 0);
    for (uint32_t i = 0; i < b.m.n_swap_blocks; i++)
        if (b.m.swap[i].state == KVL_KV_SWAP_HELD)
            CHECK_EQ_INT(b.m.swap[i].holder, 0);
    step_drain(e);
    CHECK(take_and_check(e, &b) || (fprintf(stderr, "swap: %s\n", why), 0));
    while (!kvl_engine_idle(e))
        step_drain(e);
    CHECK(take_and_check(e, &b) || (fprintf(stderr, "swap idle: %s\n", why), 0));
    map_free(&b);
}

/* Each corruption of a good map with shared blocks must fail the checker. */
static void test_mutations(kvl_engine *e) {
    map_buf b;
    map_alloc(e, &b);
    int32_t a[10] = {1, 300, 301, 302, 303, 304, 305, 306, 307, 308};
    submit(e, a, 10, 6, 1);
    step_drain(e);
    submit(e, a, 10, 6, 1);
    a[2] = 333;
    submit(e, a, 10, 6, 1);
    step_drain(e);
    CHECK(take_and_check(e, &b) || (fprintf(stderr, "mutations base: %s\n", why), 0));
    CHECK(b.m.n_holders >= 2 && b.m.n_shared >= 1);
    int32_t used = -1, shared = -1, other = -1;
    for (uint32_t i = 0; i < b.m.n_blocks; i++) {
        if (b.m.blocks[i].refcount > 1 && shared < 0)
            shared = (int32_t)i;
        if (b.m.blocks[i].refcount == 1 && b.m.blocks[i].holder == 1 && other < 0)
            other = (int32_t)i;
        if (b.m.blocks[i].refcount == 1 && used < 0)
            used = (int32_t)i;
    }
    CHECK(used >= 0 && shared >= 0 && other >= 0);
    if (used < 0 || shared < 0 || other < 0) {
        map_free(&b);
        return;
    }
    kvl_kv_block_info *bl = b.m.blocks;
    kvl_kv_holder hs = b.m.holders[0];
    int caught = 0, tried = 0;
#define MUTATE(stmt, undo)                                                                         \
    do {                                                                                           \
        stmt;                                                                                      \
        tried++;                                                                                   \
        caught += !check_map(e, &b.m);                                                             \
        undo;                                                                                      \
        CHECK(check_map(e, &b.m));                                                                 \
    } while (0)
    MUTATE(bl[used].state = KVL_KV_BLOCK_FREE, bl[used].state = KVL_KV_BLOCK_USED);
    int32_t h_used = bl[used].holder;
    MUTATE((bl[used].state = KVL_KV_BLOCK_FREE, bl[used].refcount = 0, bl[used].holder = -1,
            b.m.n_used--, b.m.n_free++),
           (bl[used].state = KVL_KV_BLOCK_USED, bl[used].refcount = 1, bl[used].holder = h_used,
            b.m.n_used++, b.m.n_free--));
    int32_t h_other = bl[other].holder;
    MUTATE(bl[other].holder = 0, bl[other].holder = h_other);
    MUTATE(bl[other].holder = -1, bl[other].holder = h_other);
    MUTATE(bl[shared].holder = 1, bl[shared].holder = 0);
    MUTATE((bl[shared].refcount = 1, b.m.n_shared--), (bl[shared].refcount = 2, b.m.n_shared++));
    MUTATE(bl[shared].refcount = 3, bl[shared].refcount = 2);
    MUTATE(bl[shared].hashed = !bl[shared].hashed, bl[shared].hashed = !bl[shared].hashed);
    MUTATE((b.m.holders[0] = b.m.holders[1], b.m.holders[1] = hs),
           (b.m.holders[1] = b.m.holders[0], b.m.holders[0] = hs));
    MUTATE(b.m.holders[0].n_blocks++, b.m.holders[0].n_blocks--);
    MUTATE(b.m.n_holders--, b.m.n_holders++);
    MUTATE(b.m.kv.occupancy += 1e-9, b.m.kv.occupancy -= 1e-9);
#undef MUTATE
    CHECK_EQ_INT(caught, tried);
    while (!kvl_engine_idle(e))
        step_drain(e);
    map_free(&b);
}

static void test_contiguous(const kvl_model *m) {
    kvl_engine_params p = params(8, 2, 0);
    p.kv_layout = KVL_KV_LAYOUT_CONTIGUOUS;
    p.max_ctx = 32;
    p.kv_mem = 2 * 32 * 1280;
    kvl_engine *e = NULL;
    kvl_error err;
    CHECK(kvl_engine_init(m, &p, &e, &err) == KVL_OK);
    if (!e)
        return;
    kvl_kv_map mp = {0};
    CHECK(kvl_engine_kv_map(e, &mp, &err) == KVL_E_UNSUPPORTED);
    CHECK_CONTAINS(err.msg, "contiguous");
    kvl_engine_free(e);
}

/* ---- the randomized property test ---- */

static uint64_t rs;
static int64_t seen_shared, seen_cached, seen_held, seen_tier, seen_swapped; /* paths exercised */
static uint32_t rnd(uint32_t n) { return (uint32_t)(kvt_xorshift64(&rs) % n); }

static int one_seed(const kvl_model *m, uint64_t seed) {
    rs = seed * 2654435761u + 12345;
    int before = kvt_failures;
    uint32_t n_blocks = 10 + rnd(30);
    kvl_engine_params p = params(n_blocks, 1 + (int32_t)rnd(6), 2 + rnd(20));
    p.max_batch_tokens = 4 + (int32_t)rnd(61);
    p.preempt = (kvl_preempt_mode)rnd(3);
    p.prefix_cache = true;
    p.prefix_tier = rnd(2) ? KVL_PREFIX_TIER_HOST : KVL_PREFIX_TIER_OFF;
    kvl_engine *e = NULL;
    kvl_error err;
    if (kvl_engine_init(m, &p, &e, &err)) {
        fprintf(stderr, "seed %llu: %s\n", (unsigned long long)seed, err.msg);
        CHECK(!"init");
        return 1;
    }
    map_buf b;
    map_alloc(e, &b);
    int32_t base[160], toks[160];
    base[0] = 1;
    for (int i = 1; i < 160; i++)
        base[i] = 3 + (int32_t)rnd(400);
    uint64_t ids[64];
    int n_ids = 0, steps = 0, n_arrivals = 4 + (int)rnd(20);
    while (steps < 2000 && (n_arrivals > 0 || !kvl_engine_idle(e))) {
        if (n_arrivals > 0 && rnd(3) == 0) {
            int32_t np = 1 + (int32_t)rnd((uint32_t)p.max_ctx / 2);
            int32_t shared = rnd(2) ? (int32_t)rnd((uint32_t)np + 1) : 0;
            for (int32_t k = 0; k < np; k++)
                toks[k] = k < shared ? base[k] : 3 + (int32_t)rnd(400);
            toks[0] = 1;
            kvl_request_params rp = kvl_request_defaults();
            rp.prompt_tokens = toks;
            rp.n_prompt_tokens = (size_t)np;
            rp.max_tokens = 1 + (int32_t)rnd((uint32_t)(p.max_ctx - np));
            rp.n = 1 + (int32_t)rnd(3);
            rp.temperature = rnd(2) ? 0.0f : 0.9f;
            rp.seed = seed;
            uint64_t id;
            if (kvl_engine_submit(e, &rp, &id, &err) == KVL_OK && n_ids < 64)
                ids[n_ids++] = id;
            n_arrivals--;
        }
        if (n_ids && rnd(12) == 0)
            kvl_engine_cancel(e, ids[rnd((uint32_t)n_ids)]);
        step_drain(e);
        steps++;
        if (!take_and_check(e, &b)) {
            fprintf(stderr, "seed %llu step %d: %s\n", (unsigned long long)seed, steps, why);
            CHECK(!"map invariants");
            break;
        }
        seen_shared += b.m.n_shared;
        seen_cached += b.m.n_cached;
        seen_held += b.m.n_swap_held;
        seen_tier += b.m.n_swap_tier;
        for (uint32_t h = 0; h < b.m.n_holders; h++)
            seen_swapped += b.m.holders[h].state == KVL_REQ_SWAPPED;
    }
    CHECK(kvl_engine_idle(e));
    CHECK(take_and_check(e, &b));
    CHECK(b.m.n_used == 0 && b.m.n_holders == 0 && b.m.n_free + b.m.n_cached == b.m.n_blocks);
    map_free(&b);
    kvl_engine_free(e);
    return kvt_failures != before;
}

int main(void) {
    kvl_model *m = NULL;
    kvl_error err;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    kvl_engine_params p = params(24, 4, 8);
    kvl_engine *e = NULL;
    CHECK(kvl_engine_init(m, &p, &e, &err) == KVL_OK);
    if (e) {
        map_buf b;
        map_alloc(e, &b);
        CHECK(take_and_check(e, &b) || (fprintf(stderr, "fresh engine: %s\n", why), 0));
        CHECK(b.m.n_free == 24 && b.m.n_holders == 0 && b.m.n_swap_free == 8);
        map_free(&b);
        test_errors(e);
        test_sharing(e);
        test_swap(e);
        test_mutations(e);
        kvl_engine_free(e);
    }
    test_contiguous(m);
    const char *env = getenv("KVL_MAP_SEEDS");
    long n_seeds = env ? atol(env) : 150, bad = 0;
    for (long s = 0; s < n_seeds && bad < 5; s++)
        bad += one_seed(m, (uint64_t)s);
    printf("test_kv_map: %ld seeds; over all maps: %lld shared cells, %lld cached, %lld held swap "
           "cells, %lld tier cells, %lld swapped holders\n",
           n_seeds, (long long)seen_shared, (long long)seen_cached, (long long)seen_held,
           (long long)seen_tier, (long long)seen_swapped);
    if (n_seeds >= 100)
        CHECK(seen_shared > 0 && seen_cached > 0 && seen_held > 0 && seen_tier > 0 &&
              seen_swapped > 0);
    kvl_model_free(m);
    return kvt_finish("test_kv_map");
}
