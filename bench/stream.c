/*
 * stream: main-memory bandwidth, in the manner of McCalpin's STREAM, for the
 * decode roofline (a decoded token reads every weight once: bytes/token
 * divided by this bandwidth is the fastest decode can go).
 *
 * Three arrays of doubles, each far larger than the last-level cache, are
 * split into one contiguous slice per thread; each thread touches its own
 * slice first (so pages land where they are used) and then runs
 *
 *   read   s += a[i]              bytes counted: 1 x 8 per element
 *   copy   c[i] = a[i]            bytes counted: 2 x 8
 *   triad  a[i] = b[i] + q * c[i] bytes counted: 3 x 8
 *
 * (STREAM's counting: write-allocate traffic is not counted.) Each kernel
 * runs --reps times; the best and the median GB/s (1e9 bytes/s) are
 * printed. Read-only is what decode does; copy and triad are the usual
 * figures.
 *
 * Pages: by default the arrays are 2 MiB-aligned and advised MADV_HUGEPAGE
 * (transparent huge pages), as kvllm holds its weights since --load auto
 * copies them into huge pages; --pages 4k uses plain malloc'd 4 KiB pages
 * (what a file mapping, e.g. llama.cpp's default mmap, streams through).
 *
 * Build: cc -O2 -pthread -o stream bench/stream.c   (bench/run_bench.sh does)
 */
#define _GNU_SOURCE

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MAX_THREADS 256
#define MAX_REPS 100

enum { K_READ, K_COPY, K_TRIAD, N_KERNELS };
static const char *const kernel_names[N_KERNELS] = {"read", "copy", "triad"};
static const double kernel_words[N_KERNELS] = {1, 2, 3};

typedef struct {
    double *a, *b, *c;
    size_t lo, hi; /* this thread's slice [lo, hi) */
    int kernel;    /* -1: first touch */
    double sink;   /* read's result, so the loads are not dropped */
} job;

static void *work(void *arg) {
    job *j = arg;
    double *a = j->a, *b = j->b, *c = j->c;
    size_t lo = j->lo, hi = j->hi;
    switch (j->kernel) {
    case -1:
        for (size_t i = lo; i < hi; i++) {
            a[i] = 1.0;
            b[i] = 2.0;
            c[i] = 0.0;
        }
        break;
    case K_READ: {
        /* eight independent sums so the adds never wait on each other */
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        size_t i = lo;
        for (; i + 8 <= hi; i += 8) {
            s0 += a[i];
            s1 += a[i + 1];
            s2 += a[i + 2];
            s3 += a[i + 3];
            s4 += a[i + 4];
            s5 += a[i + 5];
            s6 += a[i + 6];
            s7 += a[i + 7];
        }
        for (; i < hi; i++)
            s0 += a[i];
        j->sink = s0 + s1 + s2 + s3 + s4 + s5 + s6 + s7;
        break;
    }
    case K_COPY:
        for (size_t i = lo; i < hi; i++)
            c[i] = a[i];
        break;
    case K_TRIAD: {
        const double q = 3.0;
        for (size_t i = lo; i < hi; i++)
            a[i] = b[i] + q * c[i];
        break;
    }
    default: break;
    }
    return NULL;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Run one kernel on every thread (the caller runs slice 0); seconds. */
static int run(job *jobs, int n_threads, int kernel, double *sec) {
    pthread_t tid[MAX_THREADS];
    double t0 = now();
    for (int t = 0; t < n_threads; t++)
        jobs[t].kernel = kernel;
    for (int t = 1; t < n_threads; t++)
        if (pthread_create(&tid[t], NULL, work, &jobs[t]) != 0) {
            for (int u = 1; u < t; u++)
                pthread_join(tid[u], NULL);
            return -1;
        }
    work(&jobs[0]);
    for (int t = 1; t < n_threads; t++)
        pthread_join(tid[t], NULL);
    *sec = now() - t0;
    return 0;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static int parse_int(const char *flag, const char *s, long lo, long hi, long *out) {
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno == ERANGE) {
        fprintf(stderr, "stream: %s: '%s' is not an integer\n", flag, s);
        return -1;
    }
    if (v < lo || v > hi) {
        fprintf(stderr, "stream: %s: %ld is outside [%ld, %ld]\n", flag, v, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* n doubles; huge: 2 MiB-aligned and advised MADV_HUGEPAGE (before first
 * touch, so the kernel can back it with huge pages as it faults in). */
static double *alloc_array(size_t n, int huge) {
    if (!huge)
        return malloc(n * sizeof(double));
    const size_t align = (size_t)2 << 20, bytes = (n * sizeof(double) + align - 1) / align * align;
    void *p = NULL;
    if (posix_memalign(&p, align, bytes) != 0)
        return NULL;
    madvise(p, bytes, MADV_HUGEPAGE); /* advice only: 4 KiB pages if refused */
    return p;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: stream [--mib N] [--threads N] [--reps N] [--pages huge|4k] [--json]\n"
            "\n"
            "  --mib N      MiB per array, 1..65536 (default 1024; three arrays)\n"
            "  --threads N  threads, 1..%d (default: online cores)\n"
            "  --reps N     repetitions of each kernel, 1..%d (default 5)\n"
            "  --pages P    huge: 2 MiB transparent huge pages (default); 4k: malloc\n"
            "  --json       one JSON object instead of the table\n",
            MAX_THREADS, MAX_REPS);
}

int main(int argc, char **argv) {
    long mib = 1024, n_threads = sysconf(_SC_NPROCESSORS_ONLN), reps = 5;
    int json = 0, huge = 1;
    if (n_threads < 1)
        n_threads = 1;
    if (n_threads > MAX_THREADS)
        n_threads = MAX_THREADS;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--json")) {
            json = 1;
            continue;
        }
        if (!strcmp(a, "--pages")) {
            if (i + 1 >= argc || (strcmp(argv[i + 1], "huge") && strcmp(argv[i + 1], "4k"))) {
                fprintf(stderr, "stream: --pages needs huge or 4k\n");
                return 2;
            }
            huge = !strcmp(argv[++i], "huge");
            continue;
        }
        long *dst = !strcmp(a, "--mib")       ? &mib
                    : !strcmp(a, "--threads") ? &n_threads
                    : !strcmp(a, "--reps")    ? &reps
                                              : NULL;
        if (!dst) {
            fprintf(stderr, "stream: unknown flag '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "stream: %s needs a value\n", a);
            return 2;
        }
        long hi = dst == &mib ? 65536 : dst == &n_threads ? MAX_THREADS : MAX_REPS;
        if (parse_int(a, argv[++i], 1, hi, dst) != 0)
            return 2;
    }
    size_t n = (size_t)mib * 1024 * 1024 / sizeof(double);
    double *a = alloc_array(n, huge), *b = alloc_array(n, huge), *c = alloc_array(n, huge);
    if (!a || !b || !c) {
        fprintf(stderr, "stream: cannot allocate 3 x %ld MiB\n", mib);
        free(a);
        free(b);
        free(c);
        return 1;
    }
    job jobs[MAX_THREADS];
    for (int t = 0; t < n_threads; t++) {
        size_t q = n / (size_t)n_threads, r = n % (size_t)n_threads, ut = (size_t)t;
        jobs[t] = (job){.a = a, .b = b, .c = c};
        jobs[t].lo = ut * q + (ut < r ? ut : r);
        jobs[t].hi = jobs[t].lo + q + (ut < r ? 1 : 0);
    }
    double sec, gbs[N_KERNELS][MAX_REPS];
    if (run(jobs, (int)n_threads, -1, &sec) != 0) {
        fprintf(stderr, "stream: cannot start %ld threads\n", n_threads);
        return 1;
    }
    /* interleave the kernels rep by rep so a slow phase of the machine hits all */
    for (long r = 0; r < reps; r++)
        for (int k = 0; k < N_KERNELS; k++) {
            if (run(jobs, (int)n_threads, k, &sec) != 0) {
                fprintf(stderr, "stream: cannot start %ld threads\n", n_threads);
                return 1;
            }
            gbs[k][r] = kernel_words[k] * 8.0 * (double)n / sec / 1e9;
        }
    double best[N_KERNELS], median[N_KERNELS];
    for (int k = 0; k < N_KERNELS; k++) {
        qsort(gbs[k], (size_t)reps, sizeof(double), cmp_double);
        best[k] = gbs[k][reps - 1];
        median[k] = reps % 2 ? gbs[k][reps / 2] : 0.5 * (gbs[k][reps / 2 - 1] + gbs[k][reps / 2]);
    }
    double sink = 0;
    for (int t = 0; t < n_threads; t++)
        sink += jobs[t].sink;
    if (json) {
        printf("{\"mib_per_array\": %ld, \"threads\": %ld, \"reps\": %ld, \"pages\": \"%s\"", mib,
               n_threads, reps, huge ? "huge" : "4k");
        for (int k = 0; k < N_KERNELS; k++)
            printf(", \"%s_best_gbs\": %.2f, \"%s_median_gbs\": %.2f", kernel_names[k], best[k],
                   kernel_names[k], median[k]);
        printf("}\n");
    } else {
        printf("stream: 3 arrays x %ld MiB of doubles (%s pages), %ld threads, best and median "
               "of %ld\n",
               mib, huge ? "2 MiB" : "4 KiB", n_threads, reps);
        printf("%-6s %10s %10s\n", "kernel", "best GB/s", "median");
        for (int k = 0; k < N_KERNELS; k++)
            printf("%-6s %10.2f %10.2f\n", kernel_names[k], best[k], median[k]);
    }
    free(a);
    free(b);
    free(c);
    return sink == -1.0 ? 1 : 0; /* never: keeps the read kernel's result live */
}
