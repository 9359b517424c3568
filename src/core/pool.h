/*
 * A fixed thread pool for data-parallel kernels. kvl_pool_run_n calls
 * fn(arg, i, n_items) once for each work item i in [0, n_items), spread over
 * the caller and the workers (whoever is free takes the next item; which
 * thread runs an item is not fixed), and returns when all have finished.
 * kvl_pool_run is kvl_pool_run_n with one item per thread. Items of one run
 * may run concurrently, so per-item state is indexed by i. Each thread
 * starts on its own contiguous share of the items, in order, so items next
 * to each other should touch memory next to each other. No allocation
 * after init.
 */
#ifndef KVL_POOL_H
#define KVL_POOL_H

#include "core/core.h"

typedef struct kvl_pool kvl_pool;
typedef void (*kvl_pool_fn)(void *arg, int i, int n_items);

/* Most items one kvl_pool_run_n may have. */
#define KVL_POOL_MAX_ITEMS 65535

/* Most threads a pool may have (the caller included); the command-line
 * -t ranges are 1..this. */
#define KVL_POOL_MAX_THREADS 512

/* n_threads <= 0 means one per online core (at most KVL_POOL_MAX_THREADS);
 * KVL_E_LIMIT above KVL_POOL_MAX_THREADS. */
kvl_status kvl_pool_init(int n_threads, kvl_pool **out, kvl_error *err);
void kvl_pool_free(kvl_pool *p);
int kvl_pool_size(const kvl_pool *p); /* 1 for NULL */
void kvl_pool_run(kvl_pool *p, kvl_pool_fn fn, void *arg);
void kvl_pool_run_n(kvl_pool *p, int n_items, kvl_pool_fn fn, void *arg);

/* Split [0, n) into nth near-equal parts; part ith is [*lo, *hi). */
static inline void kvl_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t q = n / nth, r = n % nth;
    *lo = ith * q + (ith < r ? ith : r);
    *hi = *lo + q + (ith < r ? 1 : 0);
}

#endif
