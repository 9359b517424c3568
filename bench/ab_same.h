/*
 * ab_same: two variants of one product timed on the same memory in one
 * process, alternating (A B, then B A, ...): for each of `reps` pairs, each
 * variant's best of `inner` runs. set(v, ctx) switches the memory or the
 * code to variant v (0 or 1) outside the timing; run(ctx) is the timed work.
 * Memory placement on the shared VMs changes bandwidth by up to ~1.7x
 * between buffers and processes, so only such same-memory pairs compare
 * layouts or kernels of a memory-bound product. Header-only, for bench/.
 */
#ifndef KVL_BENCH_AB_SAME_H
#define KVL_BENCH_AB_SAME_H

#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    double med[2];              /* median seconds of variant 0 and 1 */
    double r_med, r_min, r_max; /* time of 0 / time of 1: speed of 1 over 0 */
} ab_same_result;

static int ab_same_cmp(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static ab_same_result ab_same_run(int reps, int inner, void (*set)(int v, void *ctx),
                                  void (*run)(void *ctx), void *ctx) {
    double *t[2] = {calloc((size_t)reps, sizeof(double)), calloc((size_t)reps, sizeof(double))};
    double *ratio = calloc((size_t)reps, sizeof(double));
    ab_same_result res = {{0, 0}, 0, 0, 0};
    if (!t[0] || !t[1] || !ratio) {
        fprintf(stderr, "ab_same: out of memory\n");
        goto out;
    }
    for (int rep = 0; rep < reps; rep++) {
        for (int k = 0; k < 2; k++) {
            const int v = rep % 2 ? 1 - k : k;
            set(v, ctx);
            double best = 1e30;
            for (int i = 0; i < inner; i++) {
                const double t0 = kvl_now();
                run(ctx);
                const double dt = kvl_now() - t0;
                best = dt < best ? dt : best;
            }
            t[v][rep] = best;
        }
        ratio[rep] = t[0][rep] / t[1][rep];
    }
    for (int v = 0; v < 2; v++) {
        qsort(t[v], (size_t)reps, sizeof(double), ab_same_cmp);
        res.med[v] = t[v][reps / 2];
    }
    qsort(ratio, (size_t)reps, sizeof(double), ab_same_cmp);
    res.r_med = ratio[reps / 2];
    res.r_min = ratio[0];
    res.r_max = ratio[reps - 1];
out:
    free(t[0]);
    free(t[1]);
    free(ratio);
    return res;
}

#endif
