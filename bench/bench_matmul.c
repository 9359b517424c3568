/*
 * bench_matmul: kvl_matmul throughput on TinyLlama-1.1B shapes (dim 2048,
 * ffn 5632) for each weight type and ISA level, next to the machine's read
 * bandwidth measured in the same run with the same threads (a streaming sum
 * over a buffer larger than the caches), before and after the products. Decode (n_tok = 1) should approach that bandwidth;
 * prefill (n_tok = 64) is compute-bound and reported in GMAC/s.
 *
 * Build (not part of the CMake targets):
 *   cc -O2 -D_GNU_SOURCE -Iinclude -Isrc bench/bench_matmul.c \
 *      build/libkvl_kernels.a build/libkvl_core.a -lpthread -lm -o bench_matmul
 * Run: ./bench_matmul [threads [TYPE [ISA [N_TOK,...]]]]
 *   e.g. ./bench_matmul 1 Q8_0 avx512 1,64   (TYPE / ISA "all" for every one)
 * Prints the best and the median time of the repetitions. Weights and the
 * read buffer sit in 2 MiB transparent huge pages, as kvllm's weights do
 * (--load auto); KVL_BENCH_PAGES=4k in the environment gives 4 KiB pages.
 */
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* bytes, 2 MiB-aligned and advised MADV_HUGEPAGE unless KVL_BENCH_PAGES=4k */
static void *alloc_pages(size_t bytes) {
    const char *e = getenv("KVL_BENCH_PAGES");
    const bool huge = !(e && !strcmp(e, "4k"));
    const size_t align = huge ? (size_t)2 << 20 : 64;
    const size_t n = (bytes + align - 1) / align * align;
    void *p = NULL;
    if (posix_memalign(&p, align, n))
        return NULL;
    if (huge)
        madvise(p, n, MADV_HUGEPAGE);
    return p;
}

typedef struct {
    const float *buf;
    int64_t per_item; /* floats per item */
    float sums[4096];
} read_job;

static void read_item(void *arg, int i, int n) {
    read_job *j = arg;
    (void)n;
    const float *p = j->buf + (size_t)i * (size_t)j->per_item;
    j->sums[i] = kvl_dot_f32(p, p, j->per_item);
}

/* Read bandwidth with the pool's threads, split into items the way a decode
 * matmul is (1 MiB each): a streaming sum over a buffer larger than the
 * caches, the best of 5. */
static double read_bandwidth(kvl_pool *pool, size_t bytes) {
    float *buf = alloc_pages(bytes);
    if (!buf)
        return 0.0;
    for (size_t i = 0; i < bytes / 4; i++)
        buf[i] = (float)(i & 7);
    static read_job j;
    j.buf = buf;
    j.per_item = (1 << 20) / 4;
    const int n_items = (int)(bytes / (1 << 20));
    double best = 0.0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = kvl_now();
        kvl_pool_run_n(pool, n_items, read_item, &j);
        double dt = kvl_now() - t0;
        double gbs = (double)n_items * (1 << 20) / dt / 1e9;
        best = gbs > best ? gbs : best;
    }
    free(buf);
    return best;
}

typedef struct {
    const char *name;
    kvl_type t;
} type_case;

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int n_threads = argc > 1 ? atoi(argv[1]) : 0;
    const char *only_type = argc > 2 && strcmp(argv[2], "all") ? argv[2] : NULL;
    const char *only_isa = argc > 3 && strcmp(argv[3], "all") ? argv[3] : NULL;
    int64_t toks[8] = {1, 64};
    int n_toks = 2;
    if (argc > 4) {
        n_toks = 0;
        for (char *p = argv[4]; *p && n_toks < 8;) {
            toks[n_toks] = strtoll(p, &p, 10);
            if (toks[n_toks] >= 1 && toks[n_toks] <= 512)
                n_toks++;
            if (*p == ',')
                p++;
            else
                break;
        }
    }
    kvl_pool *pool = NULL;
    kvl_error err;
    if (kvl_pool_init(n_threads, &pool, &err) != KVL_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    const double bw = read_bandwidth(pool, (size_t)512 << 20);
    printf("threads %d, read bandwidth (all threads, dot over 512 MiB): %.1f GB/s\n",
           kvl_pool_size(pool), bw);

    const type_case types[] = {
        {"Q8_0", KVL_TYPE_Q8_0}, {"Q4_0", KVL_TYPE_Q4_0}, {"Q5_0", KVL_TYPE_Q5_0},
        {"Q5_1", KVL_TYPE_Q5_1}, {"Q2_K", KVL_TYPE_Q2_K}, {"Q3_K", KVL_TYPE_Q3_K},
        {"Q4_K", KVL_TYPE_Q4_K}, {"Q5_K", KVL_TYPE_Q5_K}, {"Q6_K", KVL_TYPE_Q6_K},
        {"F16", KVL_TYPE_F16},   {"BF16", KVL_TYPE_BF16}, {"F32", KVL_TYPE_F32}};
    /* one layer's worth of FFN weights: up (5632 x 2048); 4 copies so decode
     * reads more than the caches hold */
    const int64_t n_rows = 5632, n_cols = 2048, n_copies = 8;
    kvl_isa hw = kvl_isa_set(KVL_ISA_AVX512);
    float *X = malloc(sizeof(float) * (size_t)(512 * n_cols));
    float *Y = malloc(sizeof(float) * (size_t)(512 * n_rows));
    float *row = malloc(sizeof(float) * (size_t)n_cols);
    for (int64_t i = 0; i < 512 * n_cols; i++)
        X[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const kvl_type t = types[ti].t;
        if (only_type && strcmp(only_type, types[ti].name))
            continue;
        const size_t rb = kvl_row_bytes(t, n_cols);
        const size_t wbytes = rb * (size_t)n_rows;
        uint8_t *W = alloc_pages(wbytes * n_copies);
        void *scratch = NULL;
        if (!W || posix_memalign(&scratch, 64, kvl_matmul_scratch_size(t, n_cols, 512) + 64))
            return 1;
        for (int64_t r = 0; r < n_rows * n_copies; r++) {
            for (int64_t k = 0; k < n_cols; k++)
                row[k] = (float)(((r + 1) * (k + 3)) % 255) / 127.0f - 1.0f;
            kvl_quantize_row(t, row, W + (size_t)r * rb, n_cols);
        }
        for (int isa = KVL_ISA_SCALAR; isa <= (int)hw; isa++) {
            if (only_isa && strcmp(only_isa, kvl_isa_name((kvl_isa)isa)))
                continue;
            kvl_isa_set((kvl_isa)isa);
            for (int k = 0; k < n_toks; k++) {
                const int64_t nt = toks[k];
                if (isa == KVL_ISA_SCALAR && nt > 1)
                    continue;
                enum { MAX_REPS = 64 };
                const int reps = nt == 1 ? MAX_REPS : nt <= 64 ? 8 : 3;
                double dts[MAX_REPS];
                for (int rep = 0; rep < reps; rep++) {
                    const uint8_t *w = W + (size_t)(rep % n_copies) * wbytes;
                    double t0 = kvl_now();
                    kvl_matmul(pool, Y, w, t, n_rows, n_cols, X, nt, scratch);
                    dts[rep] = kvl_now() - t0;
                }
                qsort(dts, (size_t)reps, sizeof dts[0], cmp_double);
                const double best = dts[0], med = dts[reps / 2];
                double gmac = (double)n_rows * n_cols * nt / best / 1e9;
                printf("%-5s %-6s n_tok %3lld: %8.3f ms (median %8.3f)  %6.1f GB/s weights (median "
                       "%5.1f, %3.0f%% of read)  %7.1f GMAC/s\n",
                       types[ti].name, kvl_isa_name((kvl_isa)isa), (long long)nt, best * 1e3,
                       med * 1e3, (double)wbytes / best / 1e9, (double)wbytes / med / 1e9,
                       100.0 * (double)wbytes / med / 1e9 / bw, gmac);
            }
        }
        free(W);
        free(scratch);
    }
    kvl_isa_set(hw);
    printf("read bandwidth after: %.1f GB/s\n", read_bandwidth(pool, (size_t)512 << 20));
    free(X);
    free(Y);
    free(row);
    kvl_pool_free(pool);
    return 0;
}
