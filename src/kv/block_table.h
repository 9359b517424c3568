/*
 * A block table: one sequence's map from logical positions to physical KV
 * blocks, and the operations that change it against a block pool: growth
 * (with copy-on-write of a shared, partly filled last block), truncation,
 * release and fork. Position p lives in block ids[p / block_size], slot
 * p % block_size.
 *
 * Invariant: n_blocks == ceil(n_tokens / block_size), each id holds one
 * reference in the pool, and a block this table will write next (the block
 * of position n_tokens, when partly filled) has count 1 after a grow.
 */
#ifndef KVL_BLOCK_TABLE_H
#define KVL_BLOCK_TABLE_H

#include "kv/block_pool.h"

typedef struct kvl_block_table {
    uint32_t *ids;     /* (cap) physical block of each logical block */
    int32_t *shift;    /* (cap) positions the keys of each logical block were rotated
                          past their place in the table: blocks evicted before it since
                          it was written, times block_size (0 without eviction) */
    bool shifted;      /* some entry of shift is non-zero */
    uint32_t n_blocks; /* blocks in use */
    uint32_t cap;      /* ceil(max_ctx / block_size) */
    int32_t n_tokens;  /* positions in use (stored, or reserved for this step) */
    int32_t max_ctx;   /* most positions the table can map */
    int32_t block_size;
} kvl_block_table;

/* Allocate the id array for max_ctx positions (all the table will ever
 * need, so growth never allocates). */
kvl_status kvl_block_table_init(kvl_block_table *t, int32_t max_ctx, int32_t block_size,
                                kvl_error *err);
/* Free the id array; the table must hold no blocks (release it first). */
void kvl_block_table_free(kvl_block_table *t);

/* Pool blocks that growing by n_new positions would take now: new blocks,
 * plus 1 if the partly filled last block is shared and must be copied. */
uint32_t kvl_block_table_blocks_needed(const kvl_block_table *t, const kvl_block_pool *p,
                                       int32_t n_new);

/*
 * Make positions [n_tokens, n_tokens + n_new) writable, all or nothing.
 * KVL_E_LIMIT past max_ctx, KVL_E_NO_KV when the pool is short; either way
 * nothing changes. *n_copied (may be NULL) gets the blocks copied (0 or 1).
 */
kvl_status kvl_block_table_grow(kvl_block_table *t, kvl_block_pool *p, int32_t n_new,
                                int32_t *n_copied, kvl_error *err);

/* Keep only positions [0, n_tokens); blocks past them are released, last
 * block first. KVL_E_INVALID (nothing changes) unless 0 <= n_tokens <= the
 * current length. A shared block cut in the middle keeps its fill (it
 * counts its longest user). */
kvl_status kvl_block_table_truncate(kvl_block_table *t, kvl_block_pool *p, int32_t n_tokens,
                                    kvl_error *err);

/* Release every block, last logical block first (so the pool reuses a
 * sequence's tail before its prefix), and empty the table. */
/* An empty table takes n full blocks (a prefix-cache hit): each gains a
 * reference (a free, cached block leaves the free queue) and holds
 * block_size positions. KVL_E_INVALID when the table is not empty or n
 * blocks pass max_ctx; nothing changes then. */
kvl_status kvl_block_table_attach(kvl_block_table *t, kvl_block_pool *p, const uint32_t *ids,
                                  uint32_t n, kvl_error *err);
void kvl_block_table_release(kvl_block_table *t, kvl_block_pool *p);

/* Evict logical blocks [first, first + n) (an eviction policy's victims,
 * kv_policy.h): each loses this table's reference (a block shared with
 * another table or the prefix cache keeps its bytes and its other users;
 * one held only here returns to the free queue at once), the later blocks
 * move down n places with shift += n * block_size, and n_tokens drops by
 * n * block_size. The victims must be full blocks before the block of
 * position n_tokens: KVL_E_INVALID otherwise, nothing changed. */
kvl_status kvl_block_table_evict(kvl_block_table *t, kvl_block_pool *p, uint32_t first, uint32_t n,
                                 kvl_error *err);

/* The same for any set of full blocks: logical blocks victims[0..n),
 * strictly ascending (a scored policy's choice, kv_policy.h). Each later
 * block moves down by the victims before it, its shift growing by as many
 * blocks. KVL_E_INVALID (nothing changed) when the list is not ascending
 * or names a block that is not full. */
kvl_status kvl_block_table_evict_list(kvl_block_table *t, kvl_block_pool *p,
                                      const uint32_t *victims, uint32_t n, kvl_error *err);

/* Make dst share all of src's blocks (count + 1 each) and its length. dst
 * must be empty and have src's block size and at least its blocks;
 * KVL_E_INVALID otherwise (nothing changes). Takes no new block. */
kvl_status kvl_block_table_fork(kvl_block_table *dst, const kvl_block_table *src, kvl_block_pool *p,
                                kvl_error *err);

#endif
