/*
 * The second tier (kv_tier.h). The map from hash to swap block is a
 * prefix-cache map over swap ids (the same open addressing, keyed by the
 * same hashes); the LRU order is a doubly linked list over swap ids with a
 * sentinel. Invariants: an id is in the map exactly when it is in the list;
 * every listed id is held from the swap area by the tier. Must not touch
 * swap blocks it does not hold.
 */
#include "kv/kv_tier.h"

#include <stdlib.h>

#define NONE UINT32_MAX

struct kvl_kv_tier {
    kvl_kv_swap *sw;
    kvl_prefix_cache *map; /* hash -> swap id */
    uint32_t n;            /* swap blocks; the list sentinel is n */
    uint32_t *prev, *next; /* (n + 1) */
    kvl_kv_tier_stats st;
};

kvl_status kvl_kv_tier_init(kvl_kv_swap *sw, kvl_kv_tier **out, kvl_error *err) {
    uint32_t n = kvl_kv_swap_n_blocks(sw);
    if (n == 0)
        return kvl_errorf(err, KVL_E_INVALID, "prefix tier: the swap area holds no block");
    kvl_kv_tier *t = calloc(1, sizeof *t);
    if (!t)
        return kvl_errorf(err, KVL_E_NOMEM, "prefix tier: out of memory");
    kvl_status st = kvl_prefix_cache_init(n, 1, 1, &t->map, err);
    if (st) {
        free(t);
        return st;
    }
    t->prev = malloc(((size_t)n + 1) * sizeof *t->prev);
    t->next = malloc(((size_t)n + 1) * sizeof *t->next);
    if (!t->prev || !t->next) {
        kvl_kv_tier_free(t);
        return kvl_errorf(err, KVL_E_NOMEM, "prefix tier: out of memory for %u blocks", n);
    }
    t->sw = sw;
    t->n = n;
    t->prev[n] = t->next[n] = n;
    *out = t;
    return KVL_OK;
}

void kvl_kv_tier_free(kvl_kv_tier *t) {
    if (!t)
        return;
    kvl_prefix_cache_free(t->map);
    free(t->prev);
    free(t->next);
    free(t);
}

static void unlink_id(kvl_kv_tier *t, uint32_t id) {
    t->next[t->prev[id]] = t->next[id];
    t->prev[t->next[id]] = t->prev[id];
}

static void push_tail(kvl_kv_tier *t, uint32_t id) {
    t->prev[id] = t->prev[t->n];
    t->next[id] = t->n;
    t->next[t->prev[t->n]] = id;
    t->prev[t->n] = id;
}

/* Remove entry id from the map and the list; the caller keeps its block. */
static void forget(kvl_kv_tier *t, uint32_t id) {
    unlink_id(t, id);
    kvl_prefix_cache_evict(t->map, id);
    t->st.n_entries--;
}

/* Drop the oldest entry, its block back to the swap area's free stack;
 * false when the tier is empty. */
static bool drop_oldest(kvl_kv_tier *t, bool for_swap) {
    uint32_t id = t->next[t->n];
    if (id == t->n)
        return false;
    t->st.n_dropped_unhit += !kvl_prefix_cache_was_hit(t->map, id);
    forget(t, id);
    kvl_kv_swap_release(t->sw, &id, 1);
    t->st.n_dropped++;
    t->st.n_dropped_swap += for_swap;
    return true;
}

uint8_t *kvl_kv_tier_put(kvl_kv_tier *t, kvl_hash128 h, bool was_hit) {
    uint32_t id = kvl_prefix_cache_find(t->map, h);
    if (id != NONE) { /* already here (computed again, not promoted): newest now */
        unlink_id(t, id);
        push_tail(t, id);
        if (was_hit)
            kvl_prefix_cache_mark_hit(t->map, id);
        return NULL;
    }
    if (kvl_kv_swap_n_free(t->sw) == 0 && !drop_oldest(t, false))
        return NULL;
    kvl_status st = kvl_kv_swap_alloc(t->sw, 1, &id, NULL);
    KVL_ASSERT(st == KVL_OK);
    bool ok = kvl_prefix_cache_insert(t->map, h, id);
    KVL_ASSERT(ok);
    if (was_hit)
        kvl_prefix_cache_mark_hit(t->map, id);
    push_tail(t, id);
    t->st.n_entries++;
    t->st.n_put++;
    return kvl_kv_swap_block(t->sw, id);
}

uint32_t kvl_kv_tier_find(const kvl_kv_tier *t, kvl_hash128 h) {
    return kvl_prefix_cache_find(t->map, h);
}

uint32_t kvl_kv_tier_take(kvl_kv_tier *t, kvl_hash128 h) {
    uint32_t id = kvl_prefix_cache_find(t->map, h);
    if (id == NONE)
        return NONE;
    forget(t, id);
    t->st.n_taken++;
    return id;
}

bool kvl_kv_tier_make_room(kvl_kv_tier *t, uint32_t n) {
    while (kvl_kv_swap_n_free(t->sw) < n)
        if (!drop_oldest(t, true))
            return false;
    return true;
}

uint32_t kvl_kv_tier_n_entries(const kvl_kv_tier *t) { return t ? t->st.n_entries : 0; }

bool kvl_kv_tier_holds(const kvl_kv_tier *t, uint32_t id) {
    return t && kvl_prefix_cache_has(t->map, id);
}

uint32_t kvl_kv_tier_order(const kvl_kv_tier *t, uint32_t *ids, uint32_t cap) {
    uint32_t k = 0;
    for (uint32_t id = t->next[t->n]; id != t->n; id = t->next[id], k++)
        if (k < cap)
            ids[k] = id;
    return k;
}

void kvl_kv_tier_stats_get(const kvl_kv_tier *t, kvl_kv_tier_stats *out) { *out = t->st; }
