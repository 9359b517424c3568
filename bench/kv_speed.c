/*
 * kv_speed: attention-only decode at depth D on the TinyLlama-1.1B shape
 * (22 layers, 32 query heads, 4 KV heads, head_dim 64), one sequence, one
 * thread, for every KV format: the time of one decode step's attention
 * (all layers, all heads) reading D cached positions through the paged
 * store's kvl_kv_iface.attend, exactly what kvl_forward calls.
 *
 * Formats run round-robin, one step each per round, so that all of them
 * see the same machine state (the 2-core box is shared and noisy); the
 * median over rounds is reported with its ratio to f16.
 *
 *   kv_speed [depth=4096] [rounds=15]
 *
 * Must not: be a test (timing decides nothing here); allocate in the timed
 * loop.
 */
#include "kernels/kernels.h"
#include "kv/kv_paged.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const char *name;
    kvl_kv_format k, v;
    int32_t bs;
} fmt;

static const fmt k_fmts[] = {
    {"f32", KVL_KV_FMT_F32, KVL_KV_FMT_F32, 16},
    {"f16", KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16},
    {"bf16", KVL_KV_FMT_BF16, KVL_KV_FMT_BF16, 16},
    {"fp8_e4m3", KVL_KV_FMT_FP8_E4M3, KVL_KV_FMT_FP8_E4M3, 16},
    {"fp8_e5m2", KVL_KV_FMT_FP8_E5M2, KVL_KV_FMT_FP8_E5M2, 16},
    {"int8", KVL_KV_FMT_INT8, KVL_KV_FMT_INT8, 16},
    {"int4 (bs 32)", KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, 32},
    {"int4K int8V (bs 32)", KVL_KV_FMT_INT4, KVL_KV_FMT_INT8, 32},
};
#define N_FMT (sizeof k_fmts / sizeof k_fmts[0])

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    int32_t depth = argc > 1 ? atoi(argv[1]) : 4096;
    int rounds = argc > 2 ? atoi(argv[2]) : 15;
    if (depth < 1 || depth > 1 << 20 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "usage: kv_speed [depth 1..1048576] [rounds 1..1000]\n");
        return 2;
    }
    kvl_hparams hp = {0};
    hp.n_layers = 22;
    hp.n_heads = 32;
    hp.n_kv_heads = 4;
    hp.head_dim = 64;
    hp.dim = 2048;
    const int32_t L = 22, H = 32, KV = 4, hd = 64;
    kvl_kv_paged *kv[N_FMT];
    size_t bytes[N_FMT];
    float *k = malloc((size_t)KV * hd * sizeof(float)),
          *v = malloc((size_t)KV * hd * sizeof(float));
    float *q = malloc((size_t)H * hd * sizeof(float)),
          *out = malloc((size_t)H * hd * sizeof(float));
    float *scratch = malloc((size_t)(depth + 1) * sizeof(float));
    uint64_t r = 42;
    for (size_t f = 0; f < N_FMT; f++) {
        kvl_error err;
        kvl_block_layout lay;
        if (kvl_block_layout_init_fmt(&hp, k_fmts[f].bs, k_fmts[f].k, k_fmts[f].v, &lay, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        size_t nb = (size_t)(depth + k_fmts[f].bs - 1) / (size_t)k_fmts[f].bs;
        kvl_kv_paged_params pp = {.budget = nb * lay.block_bytes,
                                  .block_size = k_fmts[f].bs,
                                  .max_seqs = 1,
                                  .max_ctx = depth,
                                  .k_fmt = k_fmts[f].k,
                                  .v_fmt = k_fmts[f].v};
        if (kvl_kv_paged_init(&hp, &pp, &kv[f], &err) ||
            kvl_kv_paged_reserve(kv[f], 0, depth, &err)) {
            fprintf(stderr, "%s: %s\n", k_fmts[f].name, err.msg);
            return 1;
        }
        bytes[f] = nb * lay.block_bytes;
        kvl_kv_iface it = kvl_kv_paged_iface(kv[f]);
        r = 42;
        for (int32_t p = 0; p < depth; p++)
            for (int32_t l = 0; l < L; l++) {
                for (int i = 0; i < KV * hd; i++) {
                    r = r * 6364136223846793005ull + 1442695040888963407ull;
                    k[i] = (float)((double)(r >> 40) / 16777216.0 * 4.0 - 2.0);
                    v[i] = (float)((double)((r >> 16) & 0xffffff) / 16777216.0 * 2.0 - 1.0);
                }
                it.store(kv[f], l, 0, p, k, v);
            }
    }
    for (int i = 0; i < H * hd; i++)
        q[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    double *t = malloc((size_t)N_FMT * rounds * sizeof(double));
    volatile float sink = 0;
    for (int rd = -1; rd < rounds; rd++) /* round -1 warms up */
        for (size_t f = 0; f < N_FMT; f++) {
            kvl_kv_iface it = kvl_kv_paged_iface(kv[f]);
            double t0 = kvl_now();
            for (int32_t l = 0; l < L; l++)
                it.attend(kv[f], l, 0, depth, q, out, 0, H, 0.125f, scratch);
            double dt = kvl_now() - t0;
            sink += out[0];
            if (rd >= 0)
                t[f * rounds + rd] = dt;
        }
    printf("attention-only decode step, TinyLlama-1.1B shape, depth %d, 1 thread, ISA %s, "
           "median of %d rounds\n\n",
           depth, kvl_isa_name(kvl_isa_active()), rounds);
    printf("| K/V format | KV bytes at depth | ms / step | GB/s of KV read | vs f16 (time) |\n");
    printf("|---|---:|---:|---:|---:|\n");
    double med[N_FMT];
    for (size_t f = 0; f < N_FMT; f++) {
        qsort(t + f * rounds, (size_t)rounds, sizeof(double), cmp_d);
        med[f] = t[f * rounds + rounds / 2];
    }
    for (size_t f = 0; f < N_FMT; f++)
        printf("| %s | %.1f MiB | %.2f | %.1f | %.2fx |\n", k_fmts[f].name,
               (double)bytes[f] / (1 << 20), med[f] * 1e3, (double)bytes[f] / med[f] / 1e9,
               med[f] / med[1]);
    for (size_t f = 0; f < N_FMT; f++)
        kvl_kv_paged_free(kv[f]);
    free(t);
    free(k);
    free(v);
    free(q);
    free(out);
    free(scratch);
    return sink == 12345.0f;
}
