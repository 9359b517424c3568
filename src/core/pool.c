/*
 * pool: a fixed set of worker threads for data-parallel kernels.
 *
 * A run is n_items work items, fn(arg, i, n_items) for i in [0, n_items),
 * each called exactly once, by whichever thread claims it: the items are
 * split into one contiguous segment per thread (the caller is thread 0);
 * a thread takes its own segment's items front to back (one linear stream
 * of memory, which the hardware prefetcher follows), then takes items from
 * the back of other segments. So a thread that is slow to start (a sleeping
 * worker, or one whose core another process holds) delays a run by at most
 * the item it has claimed, never by its wake-up: the others do its share.
 *
 *   seg[s]  (gen << 32) | (lo << 16) | hi: segment s's unclaimed items
 *           [lo, hi) in run gen; an item is taken by compare-and-swap,
 *           which fails once the run is over or replaced
 *   left    items not finished yet; the caller returns when it reaches 0
 *   gen     bumped once per run (and at shutdown); workers wait on it
 *
 * A worker reads fn / arg / n_items after seeing gen change and uses them
 * only if a claim in that generation then succeeds: the caller rewrites
 * them only after every item of the previous run was claimed and finished,
 * so a successful claim proves they belong to the claimed run (all of these
 * accesses are seq_cst).
 *
 * Waiting is two-phase: spin on the atomic for a short while (a decode step
 * issues hundreds of runs back to back), then sleep on a futex. Sleepers
 * announce themselves (n_sleep / caller_sleep) so the waker issues a futex
 * syscall only when someone actually sleeps; the announce-then-recheck and
 * publish-then-check pairs are both seq_cst, so a wake-up cannot be lost
 * (Dekker's argument).
 *
 * Invariants: one run at a time per pool (the pool is owned by one thread);
 * `left` is zero whenever no run is in progress; an item runs only under a
 * claim of the run it belongs to; n_items <= KVL_POOL_MAX_ITEMS.
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

/* One claim word per thread, each on its own cache line. */
typedef struct kvl_pool_seg {
    _Alignas(64) _Atomic uint64_t w; /* (gen << 32) | (lo << 16) | hi */
} kvl_pool_seg;

struct kvl_pool {
    int n_threads;           /* including the caller */
    int n_started;           /* workers successfully created */
    int spin;                /* spin iterations before sleeping */
    pthread_t *threads;      /* (n_threads - 1) */
    kvl_worker *workers;     /* (n_threads - 1) */
    _Atomic(kvl_pool_fn) fn; /* the current run's */
    _Atomic(void *) arg;
    _Atomic int n_items;
    kvl_pool_seg *seg;        /* (n_threads) */
    _Atomic uint32_t gen;     /* bumped once per run (and at shutdown) */
    _Atomic uint32_t left;    /* items of the current run not finished */
    _Atomic int n_sleep;      /* workers asleep (or about to be) on gen */
    _Atomic int caller_sleep; /* caller asleep (or about to be) on left */
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

/* Next item of run g for thread t, or -1 when none is left: the front of
 * its own segment, else the back of another's. */
static int claim(kvl_pool *p, int t, uint32_t g) {
    for (int k = 0; k < p->n_threads; k++) {
        const int s = t + k < p->n_threads ? t + k : t + k - p->n_threads;
        _Atomic uint64_t *w = &p->seg[s].w;
        uint64_t c = atomic_load(w);
        for (;;) {
            const uint32_t lo = (uint32_t)(c >> 16) & 0xffff, hi = (uint32_t)c & 0xffff;
            if ((uint32_t)(c >> 32) != g || lo >= hi)
                break;
            /* own segment: take lo (lo += 1); another's: take hi - 1 */
            const uint64_t next = k == 0 ? c + ((uint64_t)1 << 16) : c - 1;
            if (atomic_compare_exchange_weak(w, &c, next))
                return (int)(k == 0 ? lo : hi - 1);
        }
    }
    return -1;
}

/* Thread t claims and runs items of generation g until none is left. */
static void run_items(kvl_pool *p, int t, uint32_t g) {
    const kvl_pool_fn fn = atomic_load(&p->fn);
    void *const arg = atomic_load(&p->arg);
    const int n = atomic_load(&p->n_items);
    for (int i; (i = claim(p, t, g)) >= 0;) {
        fn(arg, i, n);
        if (atomic_fetch_sub(&p->left, 1) == 1 && atomic_load(&p->caller_sleep))
            futex_wake(&p->left, 1);
    }
}

static void *worker_main(void *arg) {
    kvl_worker *w = arg;
    kvl_pool *p = w->pool;
    uint32_t seen = 0;
    for (;;) {
        wait_change(&p->gen, seen, &p->n_sleep, p->spin);
        seen = atomic_load(&p->gen);
        if (atomic_load(&p->stop))
            return NULL;
        run_items(p, w->ith, seen);
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
        p->seg = aligned_alloc(64, sizeof *p->seg * (size_t)n_threads);
        if (!p->threads || !p->workers || !p->seg) {
            kvl_pool_free(p);
            return kvl_errorf(err, KVL_E_NOMEM, "pool: out of memory for %d threads", n_threads);
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
    free(p->seg);
    free(p);
}

int kvl_pool_size(const kvl_pool *p) { return p ? p->n_threads : 1; }

void kvl_pool_run_n(kvl_pool *p, int n_items, kvl_pool_fn fn, void *arg) {
    if (n_items <= 0)
        return;
    if (!p || p->n_threads == 1 || n_items == 1) {
        for (int i = 0; i < n_items; i++)
            fn(arg, i, n_items);
        return;
    }
    KVL_ASSERT(atomic_load(&p->left) == 0);
    KVL_ASSERT(n_items <= KVL_POOL_MAX_ITEMS);
    const uint32_t g = atomic_load(&p->gen) + 1;
    atomic_store(&p->fn, fn);
    atomic_store(&p->arg, arg);
    atomic_store(&p->n_items, n_items);
    atomic_store(&p->left, (uint32_t)n_items);
    for (int s = 0; s < p->n_threads; s++) {
        int64_t lo, hi;
        kvl_split(n_items, s, p->n_threads, &lo, &hi);
        atomic_store(&p->seg[s].w, (uint64_t)g << 32 | (uint64_t)lo << 16 | (uint64_t)hi);
    }
    atomic_store(&p->gen, g);
    if (atomic_load(&p->n_sleep) > 0)
        futex_wake(&p->gen, n_items - 1 < p->n_threads - 1 ? n_items - 1 : p->n_threads - 1);
    run_items(p, 0, g);
    /* wait for left == 0: wait_change waits for "not equal to v" */
    for (;;) {
        uint32_t v = atomic_load(&p->left);
        if (v == 0)
            break;
        wait_change(&p->left, v, &p->caller_sleep, p->spin);
    }
}

void kvl_pool_run(kvl_pool *p, kvl_pool_fn fn, void *arg) {
    kvl_pool_run_n(p, kvl_pool_size(p), fn, arg);
}
