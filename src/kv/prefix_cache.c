/*
 * The prefix cache's map (prefix_cache.h). Invariants: slot_of[id] is the
 * slot holding id, or UINT32_MAX when id has no hash; every occupied slot s
 * holds an id whose hash probes to s without crossing an empty slot. Must
 * not allocate after init.
 */
#include "kv/prefix_cache.h"

#include "core/dtype.h"

#include <stdlib.h>
#include <sys/random.h>
#include <xxhash.h>

#define EMPTY UINT32_MAX

struct kvl_prefix_cache {
    uint64_t seed;
    int32_t block_size;
    uint32_t n_blocks, mask; /* mask + 1 slots */
    uint32_t *slots;         /* (mask + 1) block ids or EMPTY */
    uint32_t *slot_of;       /* (n_blocks) */
    kvl_hash128 *hash;       /* (n_blocks) valid where slot_of != EMPTY */
    bool *hit;               /* (n_blocks) reused since inserted */
    kvl_prefix_cache_stats st;
};

kvl_status kvl_prefix_cache_init(uint32_t n_blocks, int32_t block_size, uint64_t seed,
                                 kvl_prefix_cache **out, kvl_error *err) {
    if (n_blocks == 0 || n_blocks > (1u << 30) || block_size < 1 || block_size > KVL_MAX_BLOCK_SIZE)
        return kvl_errorf(err, KVL_E_INVALID, "prefix cache: %u blocks of %d positions", n_blocks,
                          block_size);
    uint32_t cap = 16;
    while (cap < 2 * n_blocks)
        cap *= 2;
    kvl_prefix_cache *pc = calloc(1, sizeof *pc);
    if (pc) {
        pc->slots = malloc((size_t)cap * sizeof *pc->slots);
        pc->slot_of = malloc((size_t)n_blocks * sizeof *pc->slot_of);
        pc->hash = calloc(n_blocks, sizeof *pc->hash);
        pc->hit = calloc(n_blocks, sizeof *pc->hit);
    }
    if (!pc || !pc->slots || !pc->slot_of || !pc->hash || !pc->hit) {
        kvl_prefix_cache_free(pc);
        return kvl_errorf(err, KVL_E_NOMEM, "prefix cache: out of memory for %u blocks", n_blocks);
    }
    for (uint32_t i = 0; i < cap; i++)
        pc->slots[i] = EMPTY;
    for (uint32_t i = 0; i < n_blocks; i++)
        pc->slot_of[i] = EMPTY;
    if (seed == 0 && getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
        seed = (uint64_t)(kvl_now() * 1e9); /* no entropy source: the clock */
    pc->seed = seed;
    pc->block_size = block_size;
    pc->n_blocks = n_blocks;
    pc->mask = cap - 1;
    *out = pc;
    return KVL_OK;
}

void kvl_prefix_cache_free(kvl_prefix_cache *pc) {
    if (!pc)
        return;
    free(pc->slots);
    free(pc->slot_of);
    free(pc->hash);
    free(pc->hit);
    free(pc);
}

uint64_t kvl_prefix_namespace(const kvl_prefix_cache *pc, const char *salt, int k_fmt, int v_fmt) {
    uint64_t fmt = (uint64_t)(uint32_t)k_fmt << 32 | (uint32_t)v_fmt;
    uint64_t s = salt ? XXH3_64bits_withSeed(salt, strlen(salt), pc->seed) : 0;
    return XXH3_64bits_withSeed(&fmt, sizeof fmt, s ^ pc->seed ^ (salt ? 1 : 0));
}

kvl_hash128 kvl_prefix_hash(const kvl_prefix_cache *pc, kvl_hash128 parent, uint64_t ns,
                            const int32_t *tokens) {
    uint8_t buf[sizeof parent + sizeof ns + KVL_MAX_BLOCK_SIZE * sizeof(int32_t)];
    size_t tb = (size_t)pc->block_size * sizeof *tokens;
    memcpy(buf, &parent, sizeof parent);
    memcpy(buf + sizeof parent, &ns, sizeof ns);
    memcpy(buf + sizeof parent + sizeof ns, tokens, tb);
    XXH128_hash_t h = XXH3_128bits_withSeed(buf, sizeof parent + sizeof ns + tb, pc->seed);
    return (kvl_hash128){.lo = h.low64, .hi = h.high64};
}

static bool eq(kvl_hash128 a, kvl_hash128 b) { return a.lo == b.lo && a.hi == b.hi; }

static uint32_t home(const kvl_prefix_cache *pc, kvl_hash128 h) {
    return (uint32_t)(h.lo ^ h.hi) & pc->mask;
}

uint32_t kvl_prefix_cache_find(const kvl_prefix_cache *pc, kvl_hash128 h) {
    for (uint32_t s = home(pc, h);; s = (s + 1) & pc->mask) {
        uint32_t id = pc->slots[s];
        if (id == EMPTY)
            return EMPTY;
        if (eq(pc->hash[id], h))
            return id;
    }
}

bool kvl_prefix_cache_insert(kvl_prefix_cache *pc, kvl_hash128 h, uint32_t id) {
    KVL_ASSERT(id < pc->n_blocks);
    if (pc->slot_of[id] != EMPTY || kvl_prefix_cache_find(pc, h) != EMPTY)
        return false;
    uint32_t s = home(pc, h);
    while (pc->slots[s] != EMPTY) /* at most n_blocks of 2 x n_blocks slots are full */
        s = (s + 1) & pc->mask;
    pc->slots[s] = id;
    pc->slot_of[id] = s;
    pc->hash[id] = h;
    pc->hit[id] = false;
    pc->st.n_entries++;
    pc->st.n_inserted++;
    return true;
}

void kvl_prefix_cache_evict(kvl_prefix_cache *pc, uint32_t id) {
    KVL_ASSERT(id < pc->n_blocks);
    uint32_t s = pc->slot_of[id];
    if (s == EMPTY)
        return;
    pc->slot_of[id] = EMPTY;
    pc->st.n_entries--;
    pc->st.n_evicted++;
    /* backward shift: pull later entries of the run into the gap when their
     * home does not lie cyclically in (gap, their slot] */
    uint32_t gap = s;
    for (uint32_t j = (s + 1) & pc->mask; pc->slots[j] != EMPTY; j = (j + 1) & pc->mask) {
        uint32_t h = home(pc, pc->hash[pc->slots[j]]);
        bool stays = gap <= j ? (gap < h && h <= j) : (gap < h || h <= j);
        if (stays)
            continue;
        pc->slots[gap] = pc->slots[j];
        pc->slot_of[pc->slots[gap]] = gap;
        gap = j;
    }
    pc->slots[gap] = EMPTY;
}

bool kvl_prefix_cache_has(const kvl_prefix_cache *pc, uint32_t id) {
    return id < pc->n_blocks && pc->slot_of[id] != EMPTY;
}

void kvl_prefix_cache_stats_get(const kvl_prefix_cache *pc, kvl_prefix_cache_stats *out) {
    *out = pc->st;
}

bool kvl_prefix_cache_hash_of(const kvl_prefix_cache *pc, uint32_t id, kvl_hash128 *out) {
    if (!kvl_prefix_cache_has(pc, id))
        return false;
    *out = pc->hash[id];
    return true;
}

void kvl_prefix_cache_mark_hit(kvl_prefix_cache *pc, uint32_t id) {
    if (kvl_prefix_cache_has(pc, id))
        pc->hit[id] = true;
}

bool kvl_prefix_cache_was_hit(const kvl_prefix_cache *pc, uint32_t id) {
    return kvl_prefix_cache_has(pc, id) && pc->hit[id];
}
