/*
 * gemv_l2: the arithmetic speed of kvllm's decode product (one token), with
 * the weights in L2 instead of memory: a small matrix (ROWS x COLS, default 2048 columns and
 * 256 rows: 544 KiB of Q8_0, 1 MiB of F16) multiplied over and over on one
 * thread. Decode from memory cannot be faster than this; when it is close to
 * the memory bandwidth per thread, the kernel's arithmetic, not memory,
 * decides how much of the roofline decode reaches.
 *
 * Build (not part of the CMake targets):
 *   cc -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/gemv_l2.c \
 *      build/libkvl_kernels.a build/libkvl_core.a -lpthread -lm -o gemv_l2
 * Run: ./gemv_l2 [q8_0|q4_0|f16|bf16|f32 [ROWS [COLS]]]
 * Prints the best of 20 timings of 200 products, as weight GB/s.
 */
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        kvl_type t;
    } types[] = {{"q8_0", KVL_TYPE_Q8_0},
                 {"q4_0", KVL_TYPE_Q4_0},
                 {"f16", KVL_TYPE_F16},
                 {"bf16", KVL_TYPE_BF16},
                 {"f32", KVL_TYPE_F32}};
    const char *tn = argc > 1 ? argv[1] : "q8_0";
    int ti = -1;
    for (int i = 0; i < (int)(sizeof types / sizeof types[0]); i++)
        if (!strcmp(tn, types[i].name))
            ti = i;
    const long rows = argc > 2 ? strtol(argv[2], NULL, 10) : 256;
    const int64_t cols = argc > 3 ? strtol(argv[3], NULL, 10) : 2048;
    if (ti < 0 || rows < 1 || rows > 65536 || cols < 32 || cols > 65536 || cols % 32) {
        fprintf(stderr, "usage: gemv_l2 [q8_0|q4_0|f16|bf16|f32 [ROWS 1..65536 [COLS 32..65536, "
                        "multiple of 32]]]\n");
        return 2;
    }
    const kvl_type t = types[ti].t;
    const size_t rb = kvl_row_bytes(t, cols);
    uint8_t *W = aligned_alloc(64, (rb * (size_t)rows + 63) / 64 * 64);
    float *row = malloc(sizeof(float) * cols), *X = malloc(sizeof(float) * cols);
    float *Y = malloc(sizeof(float) * (size_t)rows);
    void *scratch = aligned_alloc(64, kvl_matmul_scratch_size(t, cols, 1) + 64);
    if (!W || !row || !X || !Y || !scratch) {
        fprintf(stderr, "gemv_l2: out of memory\n");
        return 1;
    }
    for (long r = 0; r < rows; r++) {
        for (int64_t k = 0; k < cols; k++)
            row[k] = (float)((r * 31 + k * 7) % 100) / 50.0f - 1.0f;
        kvl_quantize_row(t, row, W + (size_t)r * rb, cols);
    }
    for (int64_t k = 0; k < cols; k++)
        X[k] = (float)(k % 13) / 6.0f - 1.0f;
    double best = 1e30;
    for (int rep = 0; rep < 20; rep++) {
        const double t0 = kvl_now();
        for (int i = 0; i < 200; i++)
            kvl_matmul(NULL, Y, W, t, rows, cols, X, 1, scratch);
        const double dt = (kvl_now() - t0) / 200;
        best = dt < best ? dt : best;
    }
    printf("%s %ld x %lld (%.0f KiB), %s, one thread: %.2f us per product, %.1f GB/s\n", tn, rows,
           (long long)cols, (double)rb * (double)rows / 1024.0, kvl_isa_name(kvl_isa_active()),
           best * 1e6, (double)rb * (double)rows / best / 1e9);
    free(W);
    free(row);
    free(X);
    free(Y);
    free(scratch);
    return 0;
}
