/*
 * A fixed thread pool for data-parallel kernels. kvl_pool_run calls
 * fn(arg, ith, nth) once on each of nth threads (the caller is thread 0) and
 * returns when all have finished. No allocation after init.
 */
#ifndef KVL_POOL_H
#define KVL_POOL_H

#include "core/core.h"

typedef struct kvl_pool kvl_pool;

/* n_threads <= 0 means one per online core. */
kvl_status kvl_pool_init(int n_threads, kvl_pool **out, kvl_error *err);
void kvl_pool_free(kvl_pool *p);
int kvl_pool_size(const kvl_pool *p); /* 1 for NULL */
void kvl_pool_run(kvl_pool *p, void (*fn)(void *arg, int ith, int nth), void *arg);

/* Split [0, n) into nth near-equal parts; part ith is [*lo, *hi). */
static inline void kvl_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t q = n / nth, r = n % nth;
    *lo = ith * q + (ith < r ? ith : r);
    *hi = *lo + q + (ith < r ? 1 : 0);
}

#endif
