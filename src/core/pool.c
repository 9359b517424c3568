/*
 * pool: a fixed set of worker threads for data-parallel kernels.
 *
 * kvl_pool_run publishes (fn, arg), bumps a generation counter and runs
 * fn(arg, 0, n) on the calling thread; each worker i runs fn(arg, i, n) once
 * per generation and decrements `pending`. The caller returns when pending
 * reaches zero. Waiting is two-phase: spin on the atomic for a short while
 * (a decode step issues hundreds of runs back to back), then sleep on a
 * futex. Sleepers announce themselves (n_sleep / caller_sleep) so the
 * waker issues a futex syscall only when someone actually sleeps; the
 * announce-then-recheck and publish-then-check pairs are both seq_cst, so a
 * wake-up cannot be lost (Dekker's argument).
 *
 * Invariants: one run at a time per pool (the pool is owned by one thread);
 * `pending` is zero whenever no run is in progress; workers never touch fn/arg
 * outside the generation they observed.
 * Must not: allocate after init, call fn re-entrantly, or be run from inside
 * fn (nested runs deadlock).
 */
#include "core/pool.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define KVL_CPU_RELAX() _mm_pause()
#else
#define KVL_CPU_RELAX() ((void)0)
#endif

#define KVL_POOL_MAX_THREADS 512
/* Spin iterations (one pause each, ~25 ns on the EPYC we measured) before
 * sleeping on the futex: ~50 us covers the gaps between the matmuls of a
 * decode step. With more threads than online cores a spinner would steal
 * the core of the thread it waits for, so it barely spins. */
#define KVL_POOL_SPIN 2000
#define KVL_POOL_SPIN_OVERSUBSCRIBED 16

typedef struct kvl_worker {
    struct kvl_pool *pool;
    int ith;
} kvl_worker;

struct kvl_pool {
    int n_threads;         /* including the caller */
    int n_started;         /* workers successfully created */
    int spin;              /* spin iterations before sleeping */
    pthread_t *threads;    /* (n_threads - 1) */
    kvl_worker *workers;   /* (n_threads - 1) */
    void (*fn)(void *arg, int ith, int nth);
    void *arg;
    _Atomic uint32_t gen;     /* bumped once per run (and at shutdown) */
    _Atomic uint32_t pending; /* workers still inside the current run */
    _Atomic int n_sleep;      /* workers asleep (or about to be) on gen */
    _Atomic int caller_sleep; /* caller asleep (or about to be) on pending */
    _Atomic int stop;
};

static void futex_wait(_Atomic uint32_t *addr, uint32_t val) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr, int n) {
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/* Wait until *addr != val; sleeping announces itself through *sleepers. */
static void wait_change(_Atomic uint32_t *addr, uint32_t val, _Atomic int *sleepers, int spin) {
    for (int i = 0; i < spin; i++) {
        if (atomic_load_explicit(addr, memory_order_acquire) != val)
            return;
        KVL_CPU_RELAX();
    }
    while (atomic_load(addr) == val) {
        atomic_fetch_add(sleepers, 1);
        if (atomic_load(addr) == val)
            futex_wait(addr, val);
        atomic_fetch_sub(sleepers, 1);
    }
}

static void *worker_main(void *p) {
    kvl_worker *w = p;
    kvl_pool *pool = w->pool;
    uint32_t seen = 0;
    for (;;) {
        wait_change(&pool->gen, seen, &pool->n_sleep, pool->spin);
        seen = atomic_load_explicit(&pool->gen, memory_order_acquire);
        if (atomic_load(&pool->stop))
            return NULL;
        pool->fn(pool->arg, w->ith, pool->n_threads);
        if (atomic_fetch_sub(&pool->pending, 1) == 1 && atomic_load(&pool->caller_sleep))
            futex_wake(&pool->pending, 1);
    }
}

static void shutdown_workers(kvl_pool *p) {
    atomic_store(&p->stop, 1);
    atomic_fetch_add(&p->gen, 1);
    futex_wake(&p->gen, INT_MAX);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->threads[i], NULL);
    p->n_started = 0;
}

kvl_status kvl_pool_init(int n_threads, kvl_pool **out, kvl_error *err) {
    *out = NULL;
    long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (n_cpu < 1)
        n_cpu = 1;
    if (n_threads <= 0)
        n_threads = (int)(n_cpu < KVL_POOL_MAX_THREADS ? n_cpu : KVL_POOL_MAX_THREADS);
    if (n_threads > KVL_POOL_MAX_THREADS)
        return kvl_errorf(err, KVL_E_LIMIT, "pool: n_threads %d > %d", n_threads,
                          KVL_POOL_MAX_THREADS);
    kvl_pool *p = calloc(1, sizeof *p);
    if (!p)
        return kvl_errorf(err, KVL_E_NOMEM, "pool: out of memory");
    p->n_threads = n_threads;
    p->spin = n_threads > n_cpu ? KVL_POOL_SPIN_OVERSUBSCRIBED : KVL_POOL_SPIN;
    int n_workers = n_threads - 1;
    if (n_workers > 0) {
        p->threads = calloc((size_t)n_workers, sizeof *p->threads);
        p->workers = calloc((size_t)n_workers, sizeof *p->workers);
        if (!p->threads || !p->workers) {
            kvl_pool_free(p);
            return kvl_errorf(err, KVL_E_NOMEM, "pool: out of memory for %d threads",
                              n_threads);
        }
    }
    for (int i = 0; i < n_workers; i++) {
        p->workers[i].pool = p;
        p->workers[i].ith = i + 1;
        int rc = pthread_create(&p->threads[i], NULL, worker_main, &p->workers[i]);
        if (rc != 0) {
            kvl_pool_free(p);
            return kvl_errorf(err, KVL_E_NOMEM, "pool: pthread_create for thread %d of %d: %s",
                              i + 1, n_threads, strerror(rc));
        }
        p->n_started = i + 1;
    }
    *out = p;
    return KVL_OK;
}

void kvl_pool_free(kvl_pool *p) {
    if (!p)
        return;
    shutdown_workers(p);
    free(p->threads);
    free(p->workers);
    free(p);
}

int kvl_pool_size(const kvl_pool *p) { return p ? p->n_threads : 1; }

void kvl_pool_run(kvl_pool *p, void (*fn)(void *arg, int ith, int nth), void *arg) {
    if (!p || p->n_threads == 1) {
        fn(arg, 0, 1);
        return;
    }
    KVL_ASSERT(atomic_load(&p->pending) == 0);
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, (uint32_t)(p->n_threads - 1));
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->n_sleep) > 0)
        futex_wake(&p->gen, INT_MAX);
    fn(arg, 0, p->n_threads);
    /* wait for pending == 0: wait_change waits for "not equal to v" */
    for (;;) {
        uint32_t v = atomic_load_explicit(&p->pending, memory_order_acquire);
        if (v == 0)
            break;
        wait_change(&p->pending, v, &p->caller_sleep, p->spin);
    }
}
