/*
 * A buddy allocator over the KV pool's blocks, the contiguous allocator
 * the PagedAttention paper gives its Orca baselines (Kwon et al., SOSP'23,
 * sec. 6.1: "we assume the system uses the buddy allocation algorithm to
 * determine the memory address to store KV cache"). The simulator puts it
 * in front of the scheduler's queue under the reserving policies: a request
 * is queued only once a power-of-two run of blocks covering its
 * reservation is found, so rounding (internal) and split free space
 * (external fragmentation) cost what they cost a contiguous allocator.
 *
 * The arena of n blocks is cut into aligned power-of-two chunks, largest
 * first (983 = 512 + 256 + 128 + 64 + 16 + 4 + 2 + 1); a free run merges
 * with its buddy (offset ^ size) when that is free at the same order.
 * Deterministic: the lowest free offset of the smallest fitting order wins.
 * O(free runs) per call; the arena is at most a few thousand blocks.
 */
#ifndef KVL_SIM_BUDDY_H
#define KVL_SIM_BUDDY_H

#include "core/core.h"

#define KVL_BUDDY_ORDERS 32

typedef struct kvl_buddy {
    uint32_t n_blocks;
    uint32_t *free_[KVL_BUDDY_ORDERS]; /* free run offsets per order, unsorted */
    uint32_t n_free[KVL_BUDDY_ORDERS];
    uint32_t top;  /* the largest order of the arena */
    uint64_t used; /* blocks handed out (sum of runs) */
} kvl_buddy;

kvl_status kvl_buddy_init(kvl_buddy *b, uint32_t n_blocks, kvl_error *err);
void kvl_buddy_free_all(kvl_buddy *b);
/* The order whose run covers n blocks (n >= 1), or -1 past the arena's
 * largest run (such a request can never be placed). */
int32_t kvl_buddy_order(const kvl_buddy *b, uint64_t n);
/* Take a run of 2^order blocks: its offset, or -1 when no run is free. */
int64_t kvl_buddy_alloc(kvl_buddy *b, int32_t order);
/* Give back the run at off of that order (as kvl_buddy_alloc returned). */
void kvl_buddy_release(kvl_buddy *b, uint32_t off, int32_t order);

#endif
