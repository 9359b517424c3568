/*
 * The prefix cache's second tier: cached KV blocks evicted from the pool,
 * kept in the engine's swap area (host memory, or the --swap-file tier)
 * under their prefix-cache hash, in LRU order, until a prefix hit copies
 * one back into the pool (a promotion) or a newer block or a swapped-out
 * request needs its swap block.
 *
 *     kvl_kv_tier *t;
 *     kvl_kv_tier_init(sw, &t, &err);
 *     uint8_t *dst = kvl_kv_tier_put(t, h, was_hit); // NULL: not kept
 *     if (dst) ...copy the pool block's bytes into dst...
 *     uint32_t sid = kvl_kv_tier_take(t, h);        // UINT32_MAX: absent
 *     ...copy kvl_kv_swap_block(sw, sid) into a pool block...
 *     kvl_kv_swap_release(sw, &sid, 1);
 *
 * Budget: the tier takes only free swap blocks; swapped-out requests come
 * first (kvl_kv_tier_make_room drops the tier's oldest entries for them).
 * So at any moment tier entries + swapped requests' blocks + free swap
 * blocks == the swap area's blocks. The hash already holds the namespace
 * (cache salt, KV format), so the tier is namespaced as the pool is.
 *
 * LRU: put and touch move an entry to the tail; room is made from the
 * head (the least recently demoted or touched first). Nothing allocates
 * after init.
 */
#ifndef KVL_KV_TIER_H
#define KVL_KV_TIER_H

#include "kv/kv_swap.h"
#include "kv/prefix_cache.h"

typedef struct kvl_kv_tier kvl_kv_tier;

typedef struct kvl_kv_tier_stats {
    uint32_t n_entries;      /* blocks held now */
    int64_t n_put;           /* demotions kept */
    int64_t n_taken;         /* promotions (entries taken back out) */
    int64_t n_dropped;       /* entries dropped for newer ones or for swap */
    int64_t n_dropped_swap;  /* of those, for swapped-out requests */
    int64_t n_dropped_unhit; /* of those, never reused since first cached */
} kvl_kv_tier_stats;

/* A tier over sw's blocks (sw must outlive it and have at least one
 * block). KVL_E_INVALID without blocks, KVL_E_NOMEM. */
kvl_status kvl_kv_tier_init(kvl_kv_swap *sw, kvl_kv_tier **out, kvl_error *err);
void kvl_kv_tier_free(kvl_kv_tier *t);

/* Keep a block cached under h: the swap block to copy its bytes into, a
 * free one or the oldest entry's. NULL when h is held already (the entry
 * is touched instead) or no swap block can be had (everything is held by
 * swapped-out requests). was_hit: the block was reused while cached. */
uint8_t *kvl_kv_tier_put(kvl_kv_tier *t, kvl_hash128 h, bool was_hit);
/* The swap block holding h, or UINT32_MAX. Does not change the order. */
uint32_t kvl_kv_tier_find(const kvl_kv_tier *t, kvl_hash128 h);
/* Remove h's entry and hand its swap block to the caller (who releases it
 * to the swap area after copying). UINT32_MAX when h is not held. */
uint32_t kvl_kv_tier_take(kvl_kv_tier *t, kvl_hash128 h);
/* Drop the oldest entries until the swap area has n free blocks; false
 * (after dropping everything) when the tier's blocks are not enough. */
bool kvl_kv_tier_make_room(kvl_kv_tier *t, uint32_t n);
uint32_t kvl_kv_tier_n_entries(const kvl_kv_tier *t); /* 0 for NULL */
/* True when swap block id holds a tier entry (false for NULL). O(1). */
bool kvl_kv_tier_holds(const kvl_kv_tier *t, uint32_t id);
/* Write up to cap swap ids, oldest first; returns the number of entries. */
uint32_t kvl_kv_tier_order(const kvl_kv_tier *t, uint32_t *ids, uint32_t cap);
void kvl_kv_tier_stats_get(const kvl_kv_tier *t, kvl_kv_tier_stats *out);

#endif
