/*
 * weights_align: does it matter for decode that a model's tensors start 32
 * bytes off a cache line? (GGUF aligns tensors to 32; in the TinyLlama files
 * `kvllm mkmodel` writes, every tensor sits at 32 mod 64, so a 64-byte load
 * of a row spans two lines.) kvl_matmul decode on the same memory with the
 * weights 64-byte aligned and moved 32 bytes on (memmove between),
 * alternating (bench/ab_same.h), 13 pairs of best-of-3 timings over 12
 * copies.
 *
 * Build (not part of the CMake targets):
 *   cc -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/weights_align.c \
 *      build/libkvl_kernels.a build/libkvl_core.a -lpthread -lm -o weights_align
 * Run: ./weights_align [f16|q8_0 [ROWS [COLS]]]
 */
#include "ab_same.h"
#include "kernels/kernels.h"

#include <string.h>
#include <sys/mman.h>

#define N_COPIES 12

typedef struct {
    kvl_pool *pool;
    kvl_type t;
    int64_t rows, cols;
    size_t mb;    /* bytes of one copy */
    uint8_t *buf; /* the copies start at buf + off */
    size_t off;
    const float *X;
    float *Y;
    void *scratch;
} ctx;

static void set_off(int v, void *arg) {
    ctx *c = arg;
    const size_t want = v ? 32 : 0;
    if (want != c->off)
        memmove(c->buf + want, c->buf + c->off, c->mb * N_COPIES);
    c->off = want;
}

static void run_all(void *arg) {
    const ctx *c = arg;
    for (int k = 0; k < N_COPIES; k++)
        kvl_matmul(c->pool, c->Y, c->buf + c->off + (size_t)k * c->mb, c->t, c->rows, c->cols, c->X,
                   1, c->scratch);
}

int main(int argc, char **argv) {
    ctx c = {.t = argc > 1 && !strcmp(argv[1], "q8_0") ? KVL_TYPE_Q8_0 : KVL_TYPE_F16,
             .rows = argc > 2 ? atol(argv[2]) : 5632,
             .cols = argc > 3 ? atol(argv[3]) : 2048};
    const size_t rb = kvl_row_bytes(c.t, c.cols);
    if (c.rows < 1 || c.rows > 65536 || rb == 0) {
        fprintf(stderr, "usage: weights_align [f16|q8_0 [ROWS 1..65536 [COLS]]]\n");
        return 2;
    }
    c.mb = rb * (size_t)c.rows;
    const size_t huge = (size_t)2 << 20, len = (c.mb * N_COPIES + 64 + huge - 1) / huge * huge;
    c.buf = aligned_alloc(huge, len);
    float *row = malloc(sizeof(float) * (size_t)c.cols),
          *X = malloc(sizeof(float) * (size_t)c.cols);
    c.Y = malloc(sizeof(float) * (size_t)c.rows);
    c.scratch = aligned_alloc(64, (kvl_matmul_scratch_size(c.t, c.cols, 1) + 64) / 64 * 64);
    kvl_error err;
    if (!c.buf || !row || !X || !c.Y || !c.scratch || kvl_pool_init(2, &c.pool, &err) != KVL_OK) {
        fprintf(stderr, "weights_align: out of memory\n");
        return 1;
    }
    madvise(c.buf, len, MADV_HUGEPAGE);
    for (int64_t r = 0; r < c.rows; r++) {
        for (int64_t k = 0; k < c.cols; k++)
            row[k] = (float)((r * 131 + k * 7) % 1000) / 500.0f - 1.0f;
        kvl_quantize_row(c.t, row, c.buf + (size_t)r * rb, c.cols);
    }
    for (int k = 1; k < N_COPIES; k++)
        memcpy(c.buf + (size_t)k * c.mb, c.buf, c.mb);
    for (int64_t i = 0; i < c.cols; i++)
        X[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    c.X = X;
    const ab_same_result r = ab_same_run(13, 3, set_off, run_all, &c);
    const double bytes = (double)c.mb * N_COPIES;
    printf("%s %lldx%lld decode, same memory: aligned %.1f GB/s, 32 off %.1f GB/s (medians); "
           "aligned/off speed median %.3f [%.3f..%.3f]\n",
           c.t == KVL_TYPE_F16 ? "F16" : "Q8_0", (long long)c.rows, (long long)c.cols,
           bytes / r.med[0] / 1e9, bytes / r.med[1] / 1e9, 1.0 / r.r_med, 1.0 / r.r_max,
           1.0 / r.r_min);
    kvl_pool_free(c.pool);
    free(c.buf);
    free(row);
    free(X);
    free(c.Y);
    free(c.scratch);
    return 0;
}
