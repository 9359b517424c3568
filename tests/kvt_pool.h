/*
 * Shared checks for tests of the block pool and of the stores built on it
 * (test_kv_pool.c, test_kv_paged.c): the exact free-queue order and every
 * reference count, with the pool's own consistency check after each.
 *
 *     KVT_QUEUE(pool, 3, 4, 5);      // free queue is exactly 3 4 5, in order
 *     KVT_QUEUE_EMPTY(pool);
 *     KVT_REFS(pool, 11, 1, 0, 2, ...);  // refcounts of blocks 0..10
 */
#ifndef KVT_POOL_H
#define KVT_POOL_H

#include "kv/block_pool.h"

#include "testutil.h"

#include <stdio.h>
#include <string.h>

#define KVT_MAX_BLOCKS 256 /* largest pool these checks read */

static inline void kvt_expect_queue(const kvl_block_pool *p, const uint32_t *want, uint32_t n,
                                    int line) {
    uint32_t got[KVT_MAX_BLOCKS + 1];
    uint32_t len = kvl_block_pool_free_order(p, got, KVT_MAX_BLOCKS + 1);
    bool ok = len == n && (n == 0 || memcmp(got, want, sizeof(uint32_t) * n) == 0);
    CHECK(ok);
    if (!ok) {
        fprintf(stderr, "  line %d: free queue", line);
        for (uint32_t i = 0; i < len && i <= KVT_MAX_BLOCKS; i++)
            fprintf(stderr, " %u", got[i]);
        fprintf(stderr, " (want");
        for (uint32_t i = 0; i < n; i++)
            fprintf(stderr, " %u", want[i]);
        fprintf(stderr, ")\n");
    }
    kvl_error err;
    CHECK_EQ_INT(kvl_block_pool_check(p, &err), KVL_OK);
}

#define KVT_QUEUE(p, ...)                                                                          \
    do {                                                                                           \
        const uint32_t _w[] = {__VA_ARGS__};                                                       \
        kvt_expect_queue(p, _w, (uint32_t)(sizeof _w / sizeof _w[0]), __LINE__);                   \
    } while (0)
#define KVT_QUEUE_EMPTY(p) kvt_expect_queue(p, NULL, 0, __LINE__)

/* Reference counts of blocks 0..nb-1: want[i] for block i. */
#define KVT_REFS(p, nb, ...)                                                                       \
    do {                                                                                           \
        const uint32_t _w[nb] = {__VA_ARGS__};                                                     \
        for (uint32_t _i = 0; _i < (nb); _i++)                                                     \
            CHECK_EQ_INT(kvl_block_pool_refcount(p, _i), _w[_i]);                                  \
    } while (0)

#endif
