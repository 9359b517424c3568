/*
 * kv_evict_speed: what the position rule of eviction costs attention
 * (docs/eviction.md). TinyLlama-1.1B shape (22 layers, 32 query heads, 4
 * KV heads, head_dim 64), one thread, per KV format: one decode step's
 * attention over the D cached positions of a sequence under sinks (budget
 * D) that streamed D + 5 blocks, so its window blocks carry a shift and
 * the query is rotated once per GQA group before them, timed
 *   shifted: as attention runs it, but with the store's rotary
 *            frequencies set to 0 (every rotation is by angle 0), so that
 *            the scores, and with them the online softmax's rescaling,
 *            are exactly plain's;
 *   plain:   the same table and blocks with the shift ignored: attention
 *            without the rotation.
 * Both run in each round, alternating which goes first; the ratio
 * shifted / plain of each round is collected and its median and range
 * quartiles and range reported. The plain column is also the cost of a never-evicted sequence
 * of D positions.
 *
 *   kv_evict_speed [depth=1024] [rounds=21]
 *
 * Must not: be a test (timing decides nothing); allocate in the timed loop.
 */
#include "kernels/kernels.h"
#include "kv/kv_paged.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const char *name;
    kvl_kv_format f;
    int32_t bs;
} fmt;

static const fmt k_fmts[] = {
    {"f32", KVL_KV_FMT_F32, 16},           {"f16", KVL_KV_FMT_F16, 16},
    {"fp8_e4m3", KVL_KV_FMT_FP8_E4M3, 16}, {"int8", KVL_KV_FMT_INT8, 16},
    {"int4 (bs 32)", KVL_KV_FMT_INT4, 32},
};
#define N_FMT (sizeof k_fmts / sizeof k_fmts[0])
enum { L = 22, H = 32, KV = 4, HD = 64 };

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Stream n tokens into seq (making room first when it has a policy). */
static int fill(kvl_kv_paged *kv, int32_t seq, int32_t n, float *k, float *v) {
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    kvl_error err;
    uint64_t r = 42;
    for (int32_t i = 0; i < n; i++) {
        if (kvl_kv_paged_make_room(kv, seq, 1, NULL, &err) ||
            kvl_kv_paged_reserve(kv, seq, 1, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        int32_t p = kvl_kv_paged_len(kv, seq) - 1;
        for (int32_t l = 0; l < L; l++) {
            for (int j = 0; j < KV * HD; j++) {
                r = r * 6364136223846793005ull + 1442695040888963407ull;
                k[j] = (float)((double)(r >> 40) / 16777216.0 * 4.0 - 2.0);
                v[j] = (float)((double)((r >> 16) & 0xffffff) / 16777216.0 * 2.0 - 1.0);
            }
            it.store(kv, l, seq, p, k, v);
        }
    }
    return 0;
}

static double step(kvl_kv_paged *kv, int32_t seq, bool shifted, const float *q, float *out,
                   float *scratch) {
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    ((kvl_block_table *)kvl_kv_paged_table(kv, seq))->shifted = shifted;
    int32_t n = kvl_kv_paged_len(kv, seq);
    double t0 = kvl_now();
    for (int32_t l = 0; l < L; l++)
        it.attend(kv, l, seq, n, q, out, 0, H, 0.125f, scratch);
    double dt = kvl_now() - t0;
    ((kvl_block_table *)kvl_kv_paged_table(kv, seq))->shifted = true;
    return dt;
}

int main(int argc, char **argv) {
    int32_t depth = argc > 1 ? atoi(argv[1]) : 1024;
    int rounds = argc > 2 ? atoi(argv[2]) : 21;
    if (depth < 128 || depth > 1 << 16 || rounds < 1 || rounds > 1000) {
        fprintf(stderr, "usage: kv_evict_speed [depth 128..65536] [rounds 1..1000]\n");
        return 2;
    }
    kvl_hparams hp = {0};
    hp.n_layers = L;
    hp.n_heads = H;
    hp.n_kv_heads = KV;
    hp.head_dim = HD;
    hp.dim = H * HD;
    hp.rope_dim = HD;
    hp.rope_base = 10000.0f;
    float k[KV * HD], v[KV * HD], q[H * HD], out[H * HD];
    float *scratch = malloc((size_t)(depth + 1) * sizeof(float));
    for (int i = 0; i < H * HD; i++)
        q[i] = (float)((i * 37) % 101) / 50.0f - 1.0f;
    printf("attention of one decode step, TinyLlama-1.1B shape, depth %d, 1 thread, ISA %s; "
           "shifted / plain (shift ignored), %d rounds\n\n",
           depth, kvl_isa_name(kvl_isa_active()), rounds);
    printf("| K/V format | plain ms / step (median) | ratio median | ratio quartiles | ratio range "
           "|\n");
    printf("|---|---:|---:|---|---|\n");
    double *ta = malloc((size_t)rounds * sizeof(double)),
           *rt = malloc((size_t)rounds * sizeof(double));
    for (size_t f = 0; f < N_FMT; f++) {
        const int32_t bs = k_fmts[f].bs;
        kvl_error err;
        kvl_block_layout lay;
        if (kvl_block_layout_init_fmt(&hp, bs, k_fmts[f].f, k_fmts[f].f, &lay, &err))
            return fprintf(stderr, "%s\n", err.msg), 1;
        const int32_t len = depth / bs * bs;
        kvl_kv_paged_params pp = {.budget = (size_t)(len / bs + 4) * lay.block_bytes,
                                  .block_size = bs,
                                  .max_seqs = 2,
                                  .max_ctx = len + bs,
                                  .k_fmt = k_fmts[f].f,
                                  .v_fmt = k_fmts[f].f};
        kvl_kv_paged *kv;
        kvl_kv_policy pol = {.kind = KVL_KV_POLICY_SINKS, .budget_tokens = len, .sinks = 4};
        if (kvl_kv_paged_init(&hp, &pp, &kv, &err) || kvl_kv_paged_set_policy(kv, 1, &pol, &err))
            return fprintf(stderr, "%s: %s\n", k_fmts[f].name, err.msg), 1;
        if (fill(kv, 1, len + 5 * bs, k, v))
            return 1;
        float inf[HD / 2];
        for (int i = 0; i < HD / 2; i++)
            inf[i] = 1.0f / 0.0f;
        kvl_kv_paged_rope_divide(kv, inf); /* angle 0: same scores, same work */
        volatile float sink = 0;
        for (int rd = -1; rd < rounds; rd++) {
            double a, b;
            if (rd & 1) {
                a = step(kv, 1, false, q, out, scratch);
                b = step(kv, 1, true, q, out, scratch);
            } else {
                b = step(kv, 1, true, q, out, scratch);
                a = step(kv, 1, false, q, out, scratch);
            }
            sink += out[0];
            if (rd >= 0) {
                ta[rd] = a;
                rt[rd] = b / a;
            }
        }
        qsort(ta, (size_t)rounds, sizeof(double), cmp_d);
        qsort(rt, (size_t)rounds, sizeof(double), cmp_d);
        printf("| %s | %.3f | %.3f | %.3f - %.3f | %.3f - %.3f |\n", k_fmts[f].name,
               ta[rounds / 2] * 1e3, rt[rounds / 2], rt[rounds / 4], rt[3 * rounds / 4], rt[0],
               rt[rounds - 1]);
        kvl_kv_paged_free(kv);
        (void)sink;
    }
    free(ta);
    free(rt);
    free(scratch);
    return 0;
}
