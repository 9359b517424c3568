/*
 * The prefix cache: full KV blocks found again by the tokens they hold.
 *
 * Every full block of a sequence gets a 128-bit hash chained from its
 * parent block's hash, a namespace and its token ids:
 *
 *     h_0 = XXH3_128(seed; 0 || ns || tokens[0, bs))
 *     h_j = XXH3_128(seed; h_{j-1} || ns || tokens[j*bs, (j+1)*bs))
 *
 * so equal hashes mean equal whole prefixes (up to a 2^-128 collision).
 * ns separates what must never be shared: the request's cache salt (a
 * tenant) and the KV storage format. The seed is drawn once per process
 * (getrandom), so hashes cannot be predicted from outside.
 *
 * The map holds at most one hash per block id and one id per hash. A block
 * keeps its hash while it is in use and after its count drops to zero (it
 * waits in the pool's free queue, still cached, in LRU order); when the pool
 * hands it out again the pool's evict hook calls kvl_prefix_cache_evict and
 * the hash goes. Lookups never change the map.
 *
 * Storage: open addressing with linear probing over 2^k >= 2 x n_blocks
 * slots and backward-shift deletion; everything allocated at init.
 */
#ifndef KVL_PREFIX_CACHE_H
#define KVL_PREFIX_CACHE_H

#include "core/core.h"

typedef struct kvl_hash128 {
    uint64_t lo, hi;
} kvl_hash128;

typedef struct kvl_prefix_cache kvl_prefix_cache;

typedef struct kvl_prefix_cache_stats {
    uint32_t n_entries; /* blocks with a hash now */
    int64_t n_inserted; /* hashes registered since init */
    int64_t n_evicted;  /* cached blocks handed out for new data */
} kvl_prefix_cache_stats;

/* seed 0 draws one from getrandom. KVL_E_NOMEM on allocation failure. */
kvl_status kvl_prefix_cache_init(uint32_t n_blocks, int32_t block_size, uint64_t seed,
                                 kvl_prefix_cache **out, kvl_error *err);
void kvl_prefix_cache_free(kvl_prefix_cache *pc);

/* The namespace of a salt (may be NULL) and a KV format pair. */
uint64_t kvl_prefix_namespace(const kvl_prefix_cache *pc, const char *salt, int k_fmt, int v_fmt);
/* Hash of the block holding tokens (block_size of them) after parent (the
 * previous block's hash; {0, 0} for the first block). */
kvl_hash128 kvl_prefix_hash(const kvl_prefix_cache *pc, kvl_hash128 parent, uint64_t ns,
                            const int32_t *tokens);

/* The block cached under h, or UINT32_MAX. */
uint32_t kvl_prefix_cache_find(const kvl_prefix_cache *pc, kvl_hash128 h);
/* Cache block id under h. false (nothing changed) when h is already cached
 * (under any block) or id already has a hash. */
bool kvl_prefix_cache_insert(kvl_prefix_cache *pc, kvl_hash128 h, uint32_t id);
/* Forget id's hash (if any): the block is about to hold other data. */
void kvl_prefix_cache_evict(kvl_prefix_cache *pc, uint32_t id);
/* True when id has a hash. */
bool kvl_prefix_cache_has(const kvl_prefix_cache *pc, uint32_t id);
/* id's hash into *out; false (nothing written) when id has none. */
bool kvl_prefix_cache_hash_of(const kvl_prefix_cache *pc, uint32_t id, kvl_hash128 *out);
/* Record that id's cached contents were reused (a hit); cleared when id is
 * inserted again. was_hit is false for an id with no hash. */
void kvl_prefix_cache_mark_hit(kvl_prefix_cache *pc, uint32_t id);
bool kvl_prefix_cache_was_hit(const kvl_prefix_cache *pc, uint32_t id);
void kvl_prefix_cache_stats_get(const kvl_prefix_cache *pc, kvl_prefix_cache_stats *out);

#endif
