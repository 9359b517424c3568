/*
 * block_table: logical -> physical block maps and their growth, with
 * copy-on-write.
 *
 * Growth by n_new positions (block_size 4, n_tokens 6, n_new 7):
 *
 *   logical block      0             1              2                3
 *               | 0  1  2  3 | 4  5 [6  7 | 8  9  10  11 | 12] -- -- -- |
 *                 stored ------->  new positions 6..12 ------>
 *
 *   block 1 is partly filled and about to be written. If another sequence
 *   shares it (count > 1), it is copied first: a fresh block takes its bytes,
 *   this table points at the copy, the original loses one reference and
 *   stays with its other users, unchanged. Blocks 2 and 3 are new.
 *   Pool blocks needed = ceil(13 / 4) - 2 + (copy ? 1 : 0).
 *
 * Fully filled shared blocks are never written (writes only go to positions
 * >= n_tokens), so they are never copied; forking at a block boundary
 * copies nothing.
 *
 * Invariants: see block_table.h; fills of blocks this table writes are kept
 * in the pool so that pool accounting sees reserved-but-unfilled slots.
 *
 * Must not: allocate outside init; leave a partial change on any error
 * (every check precedes the first mutation).
 */
#include "kv/block_table.h"

#include <stdlib.h>
#include <string.h>

static uint32_t blocks_for(int64_t n_tokens, int32_t block_size) {
    return (uint32_t)((n_tokens + block_size - 1) / block_size);
}

kvl_status kvl_block_table_init(kvl_block_table *t, int32_t max_ctx, int32_t block_size,
                                kvl_error *err) {
    if (block_size < 1)
        return kvl_errorf(err, KVL_E_INVALID, "kv table: block_size %d < 1", (int)block_size);
    if (max_ctx < 1 || max_ctx > KVL_MAX_CTX)
        return kvl_errorf(err, KVL_E_INVALID, "kv table: max_ctx %d not in [1, %d]", (int)max_ctx,
                          KVL_MAX_CTX);
    uint32_t cap = blocks_for(max_ctx, block_size);
    uint32_t *ids = calloc(cap, sizeof(uint32_t));
    int32_t *shift = calloc(cap, sizeof(int32_t));
    if (!ids || !shift) {
        free(ids);
        free(shift);
        return kvl_errorf(err, KVL_E_NOMEM, "kv table: cannot allocate %u block ids", cap);
    }
    t->ids = ids;
    t->shift = shift;
    t->shifted = false;
    t->n_blocks = 0;
    t->cap = cap;
    t->n_tokens = 0;
    t->max_ctx = max_ctx;
    t->block_size = block_size;
    return KVL_OK;
}

void kvl_block_table_free(kvl_block_table *t) {
    if (!t)
        return;
    KVL_ASSERT(t->n_blocks == 0);
    free(t->ids);
    free(t->shift);
    t->ids = NULL;
    t->shift = NULL;
    t->cap = 0;
}

/* Whether growing must first copy the last block. */
static bool needs_copy(const kvl_block_table *t, const kvl_block_pool *p, int32_t n_new) {
    return n_new > 0 && t->n_tokens % t->block_size != 0 &&
           kvl_block_pool_refcount(p, t->ids[t->n_blocks - 1]) > 1;
}

uint32_t kvl_block_table_blocks_needed(const kvl_block_table *t, const kvl_block_pool *p,
                                       int32_t n_new) {
    if (n_new <= 0)
        return 0;
    uint32_t want = blocks_for((int64_t)t->n_tokens + n_new, t->block_size);
    return want - t->n_blocks + (needs_copy(t, p, n_new) ? 1u : 0u);
}

kvl_status kvl_block_table_grow(kvl_block_table *t, kvl_block_pool *p, int32_t n_new,
                                int32_t *n_copied, kvl_error *err) {
    KVL_ASSERT(kvl_block_pool_layout(p)->block_size == t->block_size);
    if (n_copied)
        *n_copied = 0;
    if (n_new < 0)
        return kvl_errorf(err, KVL_E_INVALID, "kv table: n_new %d < 0", (int)n_new);
    if (n_new > t->max_ctx - t->n_tokens)
        return kvl_errorf(err, KVL_E_LIMIT, "kv table: n_tokens %d + n_new %d > max_ctx %d",
                          (int)t->n_tokens, (int)n_new, (int)t->max_ctx);
    if (n_new == 0)
        return KVL_OK;
    const int32_t bs = t->block_size;
    const int32_t new_len = t->n_tokens + n_new;
    const uint32_t want = blocks_for(new_len, bs);
    const uint32_t n_add = want - t->n_blocks;
    const bool copy = needs_copy(t, p, n_new);
    const uint32_t need = n_add + (copy ? 1u : 0u);
    const uint32_t n_free = kvl_block_pool_n_free(p);
    if (need > n_free)
        return kvl_errorf(err, KVL_E_NO_KV,
                          "kv table: growing %d -> %d positions needs %u blocks (%u new%s), "
                          "free %u of %u",
                          (int)t->n_tokens, (int)new_len, need, n_add, copy ? " + 1 copy" : "",
                          n_free, kvl_block_pool_n_blocks(p));

    /* Checked: from here on nothing fails. */
    uint32_t first_new = t->n_blocks;
    if (copy) {
        uint32_t old = t->ids[t->n_blocks - 1], fresh;
        kvl_status st = kvl_block_pool_alloc(p, 1, &fresh, err);
        KVL_ASSERT(st == KVL_OK);
        kvl_block_pool_copy(p, fresh, old);
        kvl_block_pool_set_fill(p, fresh, kvl_block_pool_fill(p, old));
        kvl_block_pool_decref(p, &old, 1);
        t->ids[t->n_blocks - 1] = fresh;
        if (n_copied)
            *n_copied = 1;
    }
    if (n_add > 0) {
        kvl_status st = kvl_block_pool_alloc(p, n_add, t->ids + t->n_blocks, err);
        KVL_ASSERT(st == KVL_OK);
        memset(t->shift + t->n_blocks, 0, n_add * sizeof(int32_t));
        t->n_blocks = want;
    }
    /* fills: the partly filled block we now own, then the new ones */
    uint32_t from = (t->n_tokens % bs != 0) ? first_new - 1 : first_new;
    for (uint32_t b = from; b < want; b++) {
        int64_t end = (int64_t)(b + 1) * bs;
        uint32_t f = end <= new_len ? (uint32_t)bs : (uint32_t)(new_len - (int64_t)b * bs);
        kvl_block_pool_set_fill(p, t->ids[b], f);
    }
    t->n_tokens = new_len;
    return KVL_OK;
}

/* Drop logical blocks [keep, n_blocks), last first. */
static void drop_tail(kvl_block_table *t, kvl_block_pool *p, uint32_t keep) {
    while (t->n_blocks > keep) {
        t->n_blocks--;
        kvl_block_pool_decref(p, &t->ids[t->n_blocks], 1);
    }
}

kvl_status kvl_block_table_truncate(kvl_block_table *t, kvl_block_pool *p, int32_t n_tokens,
                                    kvl_error *err) {
    if (n_tokens < 0 || n_tokens > t->n_tokens)
        return kvl_errorf(err, KVL_E_INVALID, "kv table: truncate to %d not in [0, %d]",
                          (int)n_tokens, (int)t->n_tokens);
    uint32_t keep = blocks_for(n_tokens, t->block_size);
    drop_tail(t, p, keep);
    int32_t part = n_tokens % t->block_size;
    if (part != 0 && kvl_block_pool_refcount(p, t->ids[keep - 1]) == 1)
        kvl_block_pool_set_fill(p, t->ids[keep - 1], (uint32_t)part);
    t->n_tokens = n_tokens;
    return KVL_OK;
}

kvl_status kvl_block_table_attach(kvl_block_table *t, kvl_block_pool *p, const uint32_t *ids,
                                  uint32_t n, kvl_error *err) {
    if (t->n_blocks != 0 || n > t->cap)
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv table: attach %u blocks to a table of %u (cap %u)", n, t->n_blocks,
                          t->cap);
    for (uint32_t j = 0; j < n; j++) {
        kvl_block_pool_incref(p, ids[j]);
        kvl_block_pool_set_fill(p, ids[j], (uint32_t)t->block_size);
        t->ids[j] = ids[j];
        t->shift[j] = 0;
    }
    t->shifted = false;
    t->n_blocks = n;
    t->n_tokens = (int32_t)n * t->block_size;
    return KVL_OK;
}

void kvl_block_table_release(kvl_block_table *t, kvl_block_pool *p) {
    drop_tail(t, p, 0);
    t->n_tokens = 0;
    t->shifted = false;
}

kvl_status kvl_block_table_evict(kvl_block_table *t, kvl_block_pool *p, uint32_t first, uint32_t n,
                                 kvl_error *err) {
    const uint32_t n_full = (uint32_t)(t->n_tokens / t->block_size);
    if (first > n_full || n > n_full - first)
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv table: evict blocks [%u, %u + %u): only blocks [0, %u) are full "
                          "(%d tokens)",
                          first, first, n, n_full, (int)t->n_tokens);
    if (n == 0)
        return KVL_OK;
    /* drop references oldest first: a block held only here goes to the free
     * queue's tail now, in table order */
    kvl_block_pool_decref(p, t->ids + first, n);
    const int32_t d = (int32_t)n * t->block_size;
    for (uint32_t b = first; b + n < t->n_blocks; b++) {
        t->ids[b] = t->ids[b + n];
        t->shift[b] = t->shift[b + n] + d;
    }
    t->n_blocks -= n;
    t->n_tokens -= d;
    t->shifted = t->shifted || first < t->n_blocks;
    return KVL_OK;
}

kvl_status kvl_block_table_evict_list(kvl_block_table *t, kvl_block_pool *p,
                                      const uint32_t *victims, uint32_t n, kvl_error *err) {
    const uint32_t n_full = (uint32_t)(t->n_tokens / t->block_size);
    for (uint32_t i = 0; i < n; i++)
        if (victims[i] >= n_full || (i > 0 && victims[i] <= victims[i - 1]))
            return kvl_errorf(err, KVL_E_INVALID,
                              "kv table: evict list entry %u: block %u not ascending or not "
                              "in the full blocks [0, %u)",
                              i, victims[i], n_full);
    if (n == 0)
        return KVL_OK;
    const int32_t bs = t->block_size;
    uint32_t dst = victims[0], k = 0; /* k: victims passed so far */
    for (uint32_t b = victims[0]; b < t->n_blocks; b++) {
        if (k < n && victims[k] == b) {
            kvl_block_pool_decref(p, &t->ids[b], 1); /* oldest first */
            k++;
            continue;
        }
        t->ids[dst] = t->ids[b];
        t->shift[dst] = t->shift[b] + (int32_t)k * bs;
        dst++;
    }
    t->shifted = t->shifted || victims[0] < dst;
    t->n_blocks -= n;
    t->n_tokens -= (int32_t)n * bs;
    return KVL_OK;
}

kvl_status kvl_block_table_fork(kvl_block_table *dst, const kvl_block_table *src, kvl_block_pool *p,
                                kvl_error *err) {
    if (dst == src)
        return kvl_errorf(err, KVL_E_INVALID, "kv table: fork into itself");
    if (dst->n_blocks != 0)
        return kvl_errorf(err, KVL_E_INVALID, "kv table: fork target holds %u blocks, not 0",
                          dst->n_blocks);
    if (dst->block_size != src->block_size || dst->max_ctx < src->n_tokens)
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv table: fork target block_size %d / max_ctx %d cannot take "
                          "block_size %d / %d tokens",
                          (int)dst->block_size, (int)dst->max_ctx, (int)src->block_size,
                          (int)src->n_tokens);
    for (uint32_t b = 0; b < src->n_blocks; b++) {
        kvl_block_pool_incref(p, src->ids[b]);
        dst->ids[b] = src->ids[b];
        dst->shift[b] = src->shift[b];
    }
    dst->shifted = src->shifted;
    dst->n_blocks = src->n_blocks;
    dst->n_tokens = src->n_tokens;
    return KVL_OK;
}
