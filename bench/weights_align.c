/*
 * weights_align: does it matter for decode that a model's tensors start 32
 * bytes off a cache line? (GGUF aligns tensors to 32; in the TinyLlama files
 * `kvllm mkmodel` writes, every tensor sits at 32 mod 64, so a 64-byte load
 * of a row spans two lines.) kvl_matmul decode on the same memory with the
 * weights 64-byte aligned and moved 32 bytes on (memmove between),
 * alternating, 13 pairs of best-of-3 timings over 12 copies.
 *
 * Build (not part of the CMake targets):
 *   cc -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/weights_align.c \
 *      build/libkvl_kernels.a build/libkvl_core.a -lpthread -lm -o weights_align
 * Run: ./weights_align [f16|q8_0 [ROWS [COLS]]]
 */
#include "kernels/kernels.h"
#include "core/pool.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
static void *halloc(size_t n) {
    size_t a = (n + (2u << 20) - 1) & ~(size_t)((2u << 20) - 1);
    void *p = aligned_alloc(2u << 20, a); madvise(p, a, MADV_HUGEPAGE); memset(p, 0, a); return p;
}
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
int main(int argc, char **argv) {
    const kvl_type t = argc > 1 && !strcmp(argv[1], "q8_0") ? KVL_TYPE_Q8_0 : KVL_TYPE_F16;
    const int64_t rows = argc > 2 ? atol(argv[2]) : 5632, cols = argc > 3 ? atol(argv[3]) : 2048;
    const int reps = 13, ncp = 12, inner = 3;
    const size_t rb = kvl_row_bytes(t, cols), mb = rb * rows;
    uint8_t *A = halloc(mb * ncp + 64);
    float *row = malloc(4 * cols);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t k = 0; k < cols; k++) row[k] = (float)((r * 131 + k * 7) % 1000) / 500.0f - 1.0f;
        kvl_quantize_row(t, row, A + r * rb, cols);
    }
    for (int c = 1; c < ncp; c++) memcpy(A + c * mb, A, mb);
    float *X = malloc(4 * cols), *Y = malloc(4 * rows);
    for (int64_t i = 0; i < cols; i++) X[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    void *scratch = aligned_alloc(64, kvl_matmul_scratch_size(t, cols, 1) + 64);
    kvl_pool *pool; kvl_error err; kvl_pool_init(2, &pool, &err);
    double ratio[reps], ta[reps], tb[reps];
    size_t off = 0;
    for (int rep = 0; rep < reps; rep++) {
        double tt[2];
        for (int v0 = 0; v0 < 2; v0++) {
            int v = rep % 2 ? 1 - v0 : v0; /* v = 1: 32 off */
            size_t want = v ? 32 : 0;
            if (want != off) { memmove(A + want, A + off, mb * ncp); off = want; }
            double best = 1e30;
            for (int k = 0; k < inner; k++) {
                double t0 = kvl_now();
                for (int c = 0; c < ncp; c++) kvl_matmul(pool, Y, A + off + c * mb, t, rows, cols, X, 1, scratch);
                double dt = kvl_now() - t0; best = dt < best ? dt : best;
            }
            tt[v] = best;
        }
        ratio[rep] = tt[1] / tt[0]; ta[rep] = tt[0]; tb[rep] = tt[1];
    }
    qsort(ratio, reps, sizeof(double), cmpd); qsort(ta, reps, sizeof(double), cmpd); qsort(tb, reps, sizeof(double), cmpd);
    printf("%s %lldx%lld decode, same memory: aligned %.1f GB/s, 32 off %.1f GB/s (medians); aligned/off speed median %.3f [%.3f..%.3f]\n",
           t == KVL_TYPE_F16 ? "F16" : "Q8_0", (long long)rows, (long long)cols, mb * ncp / ta[reps / 2] / 1e9, mb * ncp / tb[reps / 2] / 1e9,
           ratio[reps / 2], ratio[0], ratio[reps - 1]);
    return 0;
}
