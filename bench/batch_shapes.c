/*
 * batch_shapes: Q8_0 products of 1..16 tokens on the two TinyLlama FFN
 * shapes of equal bytes, 5632 x 2048 (up/gate) and 2048 x 5632 (down), 12
 * copies each (so they stream from memory), 2 threads, best of 10
 * alternating rounds, as weight GB/s. Per byte the two should run alike;
 * where the 5632-column rows are slower, their activations (in the layout
 * of that token count) no longer stay in L1 under the weight stream.
 *
 * Build (not part of the CMake targets):
 *   cc -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/batch_shapes.c \
 *      build/libkvl_kernels.a build/libkvl_core.a -lpthread -lm -o batch_shapes
 * Run: ./batch_shapes [N_TOK,...]   (default 1,2,4,8)
 */
#include "core/pool.h"
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define N_COPIES 12
#define MAX_TOK 16

int main(int argc, char **argv) {
    int toks[8] = {1, 2, 4, 8}, n_toks = 4;
    if (argc > 1) {
        n_toks = 0;
        for (char *p = argv[1]; *p && n_toks < 8;) {
            const long v = strtol(p, &p, 10);
            if (v < 1 || v > MAX_TOK || (*p && *p != ',')) {
                fprintf(stderr, "usage: batch_shapes [N_TOK,... each 1..%d]\n", MAX_TOK);
                return 2;
            }
            toks[n_toks++] = (int)v;
            if (*p == ',')
                p++;
        }
    }
    const int64_t shape[2][2] = {{5632, 2048}, {2048, 5632}};    /* rows, columns */
    const size_t mb = kvl_row_bytes(KVL_TYPE_Q8_0, 2048) * 5632; /* both shapes */
    const size_t huge = (size_t)2 << 20, len = (mb * N_COPIES + huge - 1) / huge * huge;
    uint8_t *W = aligned_alloc(huge, len);
    float *X = malloc(sizeof(float) * 5632 * MAX_TOK), *Y = malloc(sizeof(float) * 5632 * MAX_TOK);
    void *scratch =
        aligned_alloc(64, (kvl_matmul_scratch_size(KVL_TYPE_Q8_0, 5632, MAX_TOK) + 63) / 64 * 64);
    kvl_pool *pool = NULL;
    kvl_error err;
    if (!W || !X || !Y || !scratch || kvl_pool_init(2, &pool, &err) != KVL_OK) {
        fprintf(stderr, "batch_shapes: out of memory\n");
        return 1;
    }
    madvise(W, len, MADV_HUGEPAGE);
    /* blocks of scale fp16 2^-7 and varied quants: both shapes read the same bytes */
    for (size_t b = 0; b < mb * N_COPIES / 34; b++) {
        W[b * 34] = 0x00;
        W[b * 34 + 1] = 0x20;
        for (int k = 2; k < 34; k++)
            W[b * 34 + (size_t)k] = (uint8_t)(b * 7 + (size_t)k);
    }
    for (int i = 0; i < 5632 * MAX_TOK; i++)
        X[i] = (float)(i % 13) - 6.0f;
    for (int ti = 0; ti < n_toks; ti++) {
        double best[2] = {1e30, 1e30};
        for (int round = 0; round < 10; round++)
            for (int s = 0; s < 2; s++) {
                const double t0 = kvl_now();
                for (int k = 0; k < N_COPIES; k++)
                    kvl_matmul(pool, Y, W + (size_t)k * mb, KVL_TYPE_Q8_0, shape[s][0], shape[s][1],
                               X, toks[ti], scratch);
                const double dt = kvl_now() - t0;
                best[s] = dt < best[s] ? dt : best[s];
            }
        printf("Q8_0, %2d tokens: 5632 x 2048 %.1f GB/s, 2048 x 5632 %.1f GB/s (%.2f of it)\n",
               toks[ti], (double)mb * N_COPIES / best[0] / 1e9,
               (double)mb * N_COPIES / best[1] / 1e9, best[0] / best[1]);
    }
    kvl_pool_free(pool);
    free(W);
    free(X);
    free(Y);
    free(scratch);
    return 0;
}
