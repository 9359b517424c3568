/*
 * gemv_wide: the AVX-512 decode product of Q8_0 / Q4_0 rows with the
 * activation scales read from the row layout (dx, corr: 3 bytes per column
 * with qs) against the compact ones (dc, cc: 1.25 bytes per column), on the
 * same memory in the same process, alternating (bench/ab_same.h), 15 pairs
 * of best-of-3 timings over 16 copies of the matrix (so it streams from
 * memory). The two give the same bits (checked first); kvl_gemv_q_wide_cols
 * picks the way.
 *
 * Build (not part of the CMake targets):
 *   cc -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/gemv_wide.c \
 *      build/libkvl_kernels.a build/libkvl_core.a -lpthread -lm -o gemv_wide
 * Run: ./gemv_wide [ROWS [COLS [q8_0|q4_0]]]   (default 2048 5632 q8_0: FFN down)
 */
#include "ab_same.h"
#include "kernels/kernels_impl.h"

#include <string.h>
#include <sys/mman.h>

#define N_COPIES 16

typedef struct {
    kvl_pool *pool;
    kvl_type t;
    int64_t rows, cols;
    size_t mb; /* bytes of one copy */
    const uint8_t *W;
    const float *X;
    float *Y;
    void *scratch;
} ctx;

static void set_way(int v, void *arg) {
    (void)arg;
    kvl_gemv_q_wide_cols = v ? 0 : INT64_MAX; /* 1: compact for every width */
}

static void run_all(void *arg) {
    const ctx *c = arg;
    for (int k = 0; k < N_COPIES; k++)
        kvl_matmul(c->pool, c->Y, c->W + (size_t)k * c->mb, c->t, c->rows, c->cols, c->X, 1,
                   c->scratch);
}

int main(int argc, char **argv) {
    ctx c = {.rows = argc > 1 ? atol(argv[1]) : 2048, .cols = argc > 2 ? atol(argv[2]) : 5632};
    c.t = argc > 3 && !strcmp(argv[3], "q4_0") ? KVL_TYPE_Q4_0 : KVL_TYPE_Q8_0;
    const size_t rb = kvl_row_bytes(c.t, c.cols);
    if (c.rows < 1 || c.rows > 65536 || rb == 0) {
        fprintf(stderr, "usage: gemv_wide [ROWS 1..65536 [COLS, a multiple of 32 [q8_0|q4_0]]]\n");
        return 2;
    }
    c.mb = rb * (size_t)c.rows;
    const size_t huge = (size_t)2 << 20, len = (c.mb * N_COPIES + huge - 1) / huge * huge;
    uint8_t *W = aligned_alloc(huge, len);
    float *row = malloc(sizeof(float) * (size_t)c.cols),
          *X = malloc(sizeof(float) * (size_t)c.cols);
    float *Y = malloc(sizeof(float) * (size_t)c.rows), *Y2 = malloc(sizeof(float) * (size_t)c.rows);
    c.scratch = aligned_alloc(64, (kvl_matmul_scratch_size(c.t, c.cols, 1) + 63) / 64 * 64);
    kvl_error err;
    if (!W || !row || !X || !Y || !Y2 || !c.scratch || kvl_pool_init(2, &c.pool, &err) != KVL_OK) {
        fprintf(stderr, "gemv_wide: out of memory\n");
        return 1;
    }
    madvise(W, len, MADV_HUGEPAGE);
    for (int64_t r = 0; r < c.rows; r++) {
        for (int64_t k = 0; k < c.cols; k++)
            row[k] = (float)((r * 131 + k * 7) % 1000) / 500.0f - 1.0f;
        kvl_quantize_row(c.t, row, W + (size_t)r * rb, c.cols);
    }
    for (int k = 1; k < N_COPIES; k++)
        memcpy(W + (size_t)k * c.mb, W, c.mb);
    for (int64_t i = 0; i < c.cols; i++)
        X[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    c.W = W;
    c.X = X;
    c.Y = Y;
    set_way(0, NULL);
    kvl_matmul(c.pool, Y, W, c.t, c.rows, c.cols, X, 1, c.scratch);
    set_way(1, NULL);
    kvl_matmul(c.pool, Y2, W, c.t, c.rows, c.cols, X, 1, c.scratch);
    printf("bit-identical: %s\n", memcmp(Y, Y2, sizeof(float) * (size_t)c.rows) ? "NO" : "yes");
    const ab_same_result r = ab_same_run(15, 3, set_way, run_all, &c);
    const double bytes = (double)c.mb * N_COPIES;
    printf("%s %lldx%lld decode: row-layout scales %.1f GB/s, compact %.1f GB/s (medians); "
           "compact/row speed median %.3f [%.3f..%.3f]\n",
           c.t == KVL_TYPE_Q8_0 ? "Q8_0" : "Q4_0", (long long)c.rows, (long long)c.cols,
           bytes / r.med[0] / 1e9, bytes / r.med[1] / 1e9, r.r_med, r.r_min, r.r_max);
    kvl_pool_free(c.pool);
    free(W);
    free(row);
    free(X);
    free(Y);
    free(Y2);
    free(c.scratch);
    return 0;
}
