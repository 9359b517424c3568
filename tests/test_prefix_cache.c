/*
 * The prefix cache's map: insert, find and evict against a plain array
 * model over thousands of random operations (including forced collisions:
 * hashes built to share their home slot), the chain and namespace rules,
 * and refusals (a hash or a block cached twice).
 */
#include "kv/prefix_cache.h"
#include "testutil.h"

#include <stdlib.h>

#define NB 64

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
    kvl_prefix_cache_free(pc);
    CHECK(kvl_prefix_cache_init(0, 4, 1, &pc, &err) == KVL_E_INVALID);
    return kvt_finish("test_prefix_cache");
}
