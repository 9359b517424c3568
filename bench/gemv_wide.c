/*
 * gemv_wide: the AVX-512 decode product of Q8_0 / Q4_0 rows with the
 * activation scales read from the row layout (dx, corr: 3 bytes per column
 * with qs) against the compact ones (dc, cc: 1.25 bytes per column), on the
 * same memory in the same process, alternating, 15 pairs of best-of-3
 * timings over 16 copies of the matrix (so it streams from memory). The two
 * give the same bits (checked first); kvl_gemv_q_wide_cols picks the way.
 *
 * Build (not part of the CMake targets):
 *   cc -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/gemv_wide.c \
 *      build/libkvl_kernels.a build/libkvl_core.a -lpthread -lm -o gemv_wide
 * Run: ./gemv_wide [ROWS [COLS [q8_0|q4_0]]]   (default 2048 5632 q8_0: FFN down)
 */
#include "kernels/kernels_impl.h"
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
    const int64_t rows = argc > 1 ? atol(argv[1]) : 2048, cols = argc > 2 ? atol(argv[2]) : 5632;
    const kvl_type t = argc > 3 && !strcmp(argv[3], "q4_0") ? KVL_TYPE_Q4_0 : KVL_TYPE_Q8_0;
    const int reps = 15, ncp = 16, inner = 3;
    const size_t rb = kvl_row_bytes(t, cols), mb = rb * rows;
    uint8_t *A = halloc(mb * ncp);
    float *row = malloc(4 * cols);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t k = 0; k < cols; k++) row[k] = (float)((r * 131 + k * 7) % 1000) / 500.0f - 1.0f;
        kvl_quantize_row(t, row, A + r * rb, cols);
    }
    for (int c = 1; c < ncp; c++) memcpy(A + c * mb, A, mb);
    float *X = malloc(4 * cols), *Y = malloc(4 * rows), *Y2 = malloc(4 * rows);
    for (int64_t i = 0; i < cols; i++) X[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    void *scratch = aligned_alloc(64, kvl_matmul_scratch_size(t, cols, 1) + 64);
    kvl_pool *pool; kvl_error err; kvl_pool_init(2, &pool, &err);
    kvl_gemv_q_wide_cols = 1 << 30; kvl_matmul(pool, Y, A, t, rows, cols, X, 1, scratch);
    kvl_gemv_q_wide_cols = 0; kvl_matmul(pool, Y2, A, t, rows, cols, X, 1, scratch);
    printf("bit-identical: %s\n", memcmp(Y, Y2, 4 * rows) ? "NO" : "yes");
    double ratio[reps], ta[reps], tb[reps];
    for (int rep = 0; rep < reps; rep++) {
        double tt[2];
        for (int v0 = 0; v0 < 2; v0++) {
            int v = rep % 2 ? 1 - v0 : v0;
            kvl_gemv_q_wide_cols = v ? 0 : (1 << 30);
            double best = 1e30;
            for (int k = 0; k < inner; k++) {
                double t0 = kvl_now();
                for (int c = 0; c < ncp; c++) kvl_matmul(pool, Y, A + c * mb, t, rows, cols, X, 1, scratch);
                double dt = kvl_now() - t0; best = dt < best ? dt : best;
            }
            tt[v] = best;
        }
        ratio[rep] = tt[0] / tt[1]; ta[rep] = tt[0]; tb[rep] = tt[1];
    }
    qsort(ratio, reps, sizeof(double), cmpd); qsort(ta, reps, sizeof(double), cmpd); qsort(tb, reps, sizeof(double), cmpd);
    printf("%s %lldx%lld decode: row-layout scales %.1f GB/s, compact %.1f GB/s (medians); compact/row speed median %.3f [%.3f..%.3f]\n",
           t == KVL_TYPE_Q8_0 ? "Q8_0" : "Q4_0", (long long)rows, (long long)cols, mb * ncp / ta[reps / 2] / 1e9, mb * ncp / tb[reps / 2] / 1e9,
           ratio[reps / 2], ratio[0], ratio[reps - 1]);
    return 0;
}
