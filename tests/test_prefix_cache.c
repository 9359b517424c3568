/*
 * The prefix cache's map: insert, find and evict against a plain array
 * model over thousands of random operations (including forced collisions:
 * hashes built to share their home slot), the chain and namespace rules,
 * and refusals (a hash or a block cached twice). The second tier: exact
 * LRU order, its budget (the swap area, after swapped requests), take and
 * touch, and namespaces that stay apart through it.
 */
#include "kv/kv_tier.h"
#include "kv/prefix_cache.h"
#include "testutil.h"

#include <stdlib.h>

#define NB 64

static kvl_hash128 hh(uint64_t k) {
    return (kvl_hash128){.lo = k * 0x9E3779B97F4A7C15ull, .hi = k};
}

static void expect_order(const kvl_kv_tier *t, const uint32_t *want, uint32_t n) {
    uint32_t got[8];
    CHECK_EQ_INT(kvl_kv_tier_order(t, got, 8), n);
    for (uint32_t i = 0; i < n && i < 8; i++)
        CHECK_EQ_INT(got[i], want[i]);
}

static void test_tier(kvl_prefix_cache *pc) {
    kvl_kv_swap *sw = NULL;
    kvl_kv_tier *t = NULL;
    kvl_error err;
    CHECK(kvl_kv_swap_init(16, 4 * 16, NULL, &sw, &err) == KVL_OK); /* 4 blocks of 16 bytes */
    CHECK(kvl_kv_tier_init(sw, &t, &err) == KVL_OK);
    if (!t)
        return;
    /* swap ids pop 0, 1, 2, 3: puts of h1..h4 fill the area in order */
    for (uint64_t k = 1; k <= 4; k++) {
        uint8_t *d = kvl_kv_tier_put(t, hh(k), k == 2);
        CHECK(d != NULL);
        if (d)
            memset(d, (int)k, 16);
    }
    expect_order(t, (const uint32_t[]){0, 1, 2, 3}, 4);
    CHECK_EQ_INT(kvl_kv_swap_n_free(sw), 0);
    CHECK(kvl_kv_tier_put(t, hh(1), false) == NULL); /* held: touched, now newest */
    expect_order(t, (const uint32_t[]){1, 2, 3, 0}, 4);
    uint8_t *d = kvl_kv_tier_put(t, hh(5), false); /* full: the oldest (h2, id 1) goes */
    CHECK(d == kvl_kv_swap_block(sw, 1));
    expect_order(t, (const uint32_t[]){2, 3, 0, 1}, 4);
    CHECK_EQ_INT(kvl_kv_tier_find(t, hh(2)), UINT32_MAX);
    CHECK_EQ_INT(kvl_kv_tier_find(t, hh(3)), 2);
    kvl_kv_tier_stats ts;
    kvl_kv_tier_stats_get(t, &ts);
    CHECK_EQ_INT(ts.n_dropped, 1);
    CHECK_EQ_INT(ts.n_dropped_unhit, 0); /* h2 had been hit */
    /* take: the block is the caller's until released */
    uint32_t id = kvl_kv_tier_take(t, hh(3));
    CHECK_EQ_INT(id, 2);
    CHECK_EQ_INT(kvl_kv_swap_block(sw, id)[0], 3);
    CHECK_EQ_INT(kvl_kv_tier_take(t, hh(3)), UINT32_MAX);
    expect_order(t, (const uint32_t[]){3, 0, 1}, 3);
    /* a swapped request needs 3 blocks: 0 free, 3 entries held: drop 3 */
    kvl_kv_swap_release(sw, &id, 1);
    uint32_t req[3];
    CHECK(kvl_kv_tier_make_room(t, 3));
    CHECK(kvl_kv_swap_alloc(sw, 3, req, &err) == KVL_OK);
    expect_order(t, (const uint32_t[]){1}, 1);
    CHECK(!kvl_kv_tier_make_room(t, 2)); /* the request's blocks are never taken */
    CHECK_EQ_INT(kvl_kv_tier_n_entries(t), 0);
    CHECK(kvl_kv_tier_put(t, hh(6), false) != NULL); /* the one free block */
    CHECK(kvl_kv_tier_put(t, hh(7), false) != NULL); /* replaces h6, not the request's */
    CHECK_EQ_INT(kvl_kv_tier_n_entries(t), 1);
    CHECK_EQ_INT(kvl_kv_swap_n_free(sw), 0);
    kvl_kv_tier_stats_get(t, &ts);
    CHECK_EQ_INT(ts.n_dropped_swap, 3);
    CHECK_EQ_INT(ts.n_entries + 3 + kvl_kv_swap_n_free(sw), 4);
    /* namespaces: the same tokens under another salt or KV format miss */
    int32_t toks[4] = {1, 2, 3, 4};
    kvl_hash128 z = {0, 0};
    kvl_hash128 h_f16 = kvl_prefix_hash(pc, z, kvl_prefix_namespace(pc, "s", 1, 1), toks);
    kvl_hash128 h_i8 = kvl_prefix_hash(pc, z, kvl_prefix_namespace(pc, "s", 5, 5), toks);
    kvl_hash128 h_salt = kvl_prefix_hash(pc, z, kvl_prefix_namespace(pc, "u", 1, 1), toks);
    CHECK(kvl_kv_tier_put(t, h_f16, false) != NULL);
    CHECK(kvl_kv_tier_find(t, h_f16) != UINT32_MAX);
    CHECK_EQ_INT(kvl_kv_tier_find(t, h_i8), UINT32_MAX);
    CHECK_EQ_INT(kvl_kv_tier_find(t, h_salt), UINT32_MAX);
    kvl_kv_tier_free(t);
    kvl_kv_swap_free(sw);
    CHECK(kvl_kv_swap_init(16, 8, NULL, &sw, &err) == KVL_OK); /* no block */
    CHECK_EQ_INT(kvl_kv_tier_init(sw, &t, &err), KVL_E_INVALID);
    kvl_kv_swap_free(sw);
}

int main(void) {
    kvl_prefix_cache *pc = NULL;
    kvl_error err;
    CHECK(kvl_prefix_cache_init(NB, 4, 12345, &pc, &err) == KVL_OK);
    if (!pc)
        return kvt_finish("test_prefix_cache");
    /* chain and namespace */
    int32_t a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5};
    uint64_t ns = kvl_prefix_namespace(pc, NULL, 1, 1);
    kvl_hash128 z = {0, 0};
    kvl_hash128 ha = kvl_prefix_hash(pc, z, ns, a), hb = kvl_prefix_hash(pc, z, ns, b);
    CHECK(ha.lo != hb.lo || ha.hi != hb.hi);
    kvl_hash128 ha2 = kvl_prefix_hash(pc, z, ns, a);
    CHECK(ha.lo == ha2.lo && ha.hi == ha2.hi); /* deterministic within a process */
    kvl_hash128 hc = kvl_prefix_hash(pc, ha, ns, b), hd = kvl_prefix_hash(pc, hb, ns, b);
    CHECK(hc.lo != hd.lo || hc.hi != hd.hi); /* the parent is part of the hash */
    CHECK(ns != kvl_prefix_namespace(pc, "t1", 1, 1));
    CHECK(kvl_prefix_namespace(pc, "t1", 1, 1) != kvl_prefix_namespace(pc, "t2", 1, 1));
    CHECK(ns != kvl_prefix_namespace(pc, NULL, 1, 5)); /* int8 vs f16 blocks never mix */
    CHECK(kvl_prefix_namespace(pc, "", 1, 1) != ns);   /* an empty salt is a salt */
    /* the map against a model */
    kvl_hash128 model[NB];
    bool has[NB] = {false};
    uint64_t rng = 99;
    for (int op = 0; op < 20000; op++) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t id = (uint32_t)(rng >> 33) % NB;
        uint32_t kind = (uint32_t)(rng >> 20) % 3;
        /* hashes from a small set whose low bits collide often */
        kvl_hash128 h = {.lo = ((rng >> 40) % 97) << 8, .hi = (rng >> 40) % 97};
        if (kind < 2) {
            bool dup = false;
            for (int k = 0; k < NB; k++)
                dup |= has[k] && model[k].lo == h.lo && model[k].hi == h.hi;
            bool want = !has[id] && !dup;
            CHECK_EQ_INT(kvl_prefix_cache_insert(pc, h, id), want);
            if (want) {
                has[id] = true;
                model[id] = h;
            }
        } else {
            kvl_prefix_cache_evict(pc, id);
            has[id] = false;
        }
        if (op % 97 == 0) /* every cached hash is found, under its block */
            for (int k = 0; k < NB; k++) {
                CHECK_EQ_INT(kvl_prefix_cache_has(pc, (uint32_t)k), has[k]);
                if (has[k])
                    CHECK_EQ_INT(kvl_prefix_cache_find(pc, model[k]), k);
            }
    }
    uint32_t n = 0;
    for (int k = 0; k < NB; k++)
        n += has[k];
    kvl_prefix_cache_stats st;
    kvl_prefix_cache_stats_get(pc, &st);
    CHECK_EQ_INT(st.n_entries, n);
    test_tier(pc);
    kvl_prefix_cache_free(pc);
    CHECK(kvl_prefix_cache_init(0, 4, 1, &pc, &err) == KVL_E_INVALID);
    return kvt_finish("test_prefix_cache");
}
