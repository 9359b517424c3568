/*
 * kv_waste: how much of the reserved KV memory holds real tokens, paged
 * against contiguous, at the same budget, on a realistic workload.
 *
 * Workload: each request has a prompt and an output length drawn from
 * log-normal distributions whose means are the ShareGPT figures published
 * with vLLM (mean prompt 161 tokens, mean output 338 tokens); the spreads
 * (sigma 1.0 for prompts, 0.8 for outputs) are our assumption, not a fit.
 * Lengths are clamped to [1, max_ctx] in total. Seeded, so every run sees
 * the same requests.
 *
 * Two snapshots, each with the real kvllm KV cache (kv_cache.c over the
 * block pool or the contiguous store; no model compute, only reservations):
 *   final: sequences admitted in arrival order at their final length until
 *          the next one does not fit;
 *   mid:   the same, but each sequence is caught at a uniformly random point
 *          of its generation (what a running server holds at an instant).
 * Reported per layout: sequences that fit, token positions stored, bytes
 * reserved, and the fraction of reserved bytes holding tokens.
 *
 * Usage: kv_waste [-m MODEL.gguf] [--budget BYTES] [--ctx N] [--block-size N]
 *        [--requests N] [--seed S]   (defaults: TinyLlama-1.1B-like shape
 *        without a file; 2 GiB; ctx 2048; block 16; 4096 requests)
 */
#include "kv/kv_cache.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static double unit(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return ((double)(rng_state >> 11) + 0.5) * 0x1.0p-53;
}
static double normal(void) { return sqrt(-2.0 * log(unit())) * cos(6.283185307179586 * unit()); }
/* log-normal with the given mean and log-space sigma */
static int64_t lognormal(double mean, double sigma) {
    double mu = log(mean) - 0.5 * sigma * sigma;
    return (int64_t)llround(exp(mu + sigma * normal()));
}

typedef struct {
    int32_t n_seqs;
    int64_t tokens;
    size_t bytes_reserved;
    double util;
} result;

static result fill(const kvl_hparams *hp, kvl_kv_layout layout, size_t budget, int32_t ctx,
                   int32_t bs, const int32_t *len, int32_t n_req) {
    kvl_kv_cache_params p = kvl_kv_cache_defaults();
    p.layout = layout;
    p.budget = budget;
    p.block_size = bs;
    p.max_ctx = ctx;
    size_t seq_bytes =
        2 * (size_t)hp->n_layers * (size_t)hp->n_kv_heads * (size_t)hp->head_dim * 4 * (size_t)ctx;
    /* contiguous: as many slots as the budget holds; paged: a slot per request */
    p.max_seqs = layout == KVL_KV_LAYOUT_CONTIGUOUS ? (int32_t)(budget / seq_bytes) : n_req;
    result r = {0};
    if (p.max_seqs < 1)
        return r;
    kvl_kv_cache *c;
    kvl_error err;
    if (kvl_kv_cache_init(hp, &p, &c, &err)) {
        fprintf(stderr, "kv_waste: %s\n", err.msg);
        exit(1);
    }
    for (int32_t i = 0; i < n_req && i < p.max_seqs; i++) {
        if (kvl_kv_cache_reserve(c, i, len[i], &err) != KVL_OK)
            break; /* the next request does not fit */
    }
    kvl_kv_stats st;
    kvl_kv_cache_stats(c, &st);
    r.n_seqs = st.n_seqs;
    r.tokens = st.n_tokens;
    r.bytes_reserved = st.bytes_used;
    r.util = st.bytes_used
                 ? (double)st.n_tokens * (double)st.bytes_per_token / (double)st.bytes_used
                 : 0;
    for (int32_t i = 0; i < p.max_seqs; i++)
        kvl_kv_cache_release(c, i, &err);
    kvl_kv_cache_stats(c, &st);
    if (st.n_blocks_used != 0) {
        fprintf(stderr, "kv_waste: %u blocks still used after release\n", st.n_blocks_used);
        exit(1);
    }
    kvl_kv_cache_free(c);
    return r;
}

int main(int argc, char **argv) {
    /* TinyLlama-1.1B shape (22 layers, 4 KV heads of 64) unless -m is given */
    kvl_hparams hp = {.n_vocab = 32000,
                      .dim = 2048,
                      .n_layers = 22,
                      .n_heads = 32,
                      .n_kv_heads = 4,
                      .head_dim = 64,
                      .ffn_dim = 5632,
                      .ctx_len = 2048,
                      .rope_dim = 64,
                      .rope_base = 10000.0f,
                      .rms_eps = 1e-5f};
    size_t budget = (size_t)2 << 30;
    int32_t ctx = 2048, bs = 16, n_req = 4096;
    const char *name = "TinyLlama-1.1B shape";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--budget"))
            budget = (size_t)strtoull(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--ctx"))
            ctx = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--block-size"))
            bs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--requests"))
            n_req = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--seed"))
            rng_state = strtoull(argv[i + 1], NULL, 10) | 1;
        else {
            fprintf(stderr, "kv_waste: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    int32_t *fin = malloc((size_t)n_req * sizeof *fin), *mid = malloc((size_t)n_req * sizeof *mid);
    double sum_p = 0, sum_o = 0;
    for (int32_t i = 0; i < n_req; i++) {
        int64_t pl = lognormal(161, 1.0), ol = lognormal(338, 0.8);
        if (pl < 1)
            pl = 1;
        if (ol < 1)
            ol = 1;
        if (pl > ctx - 1)
            pl = ctx - 1;
        if (pl + ol > ctx)
            ol = ctx - pl;
        sum_p += (double)pl;
        sum_o += (double)ol;
        fin[i] = (int32_t)(pl + ol);
        mid[i] = (int32_t)(pl + (int64_t)(unit() * (double)ol));
        if (mid[i] < 1)
            mid[i] = 1;
    }
    printf("model: %s (%lld layers, %lld KV heads x %lld, f32 KV); budget %zu bytes; ctx %d; "
           "block %d\n",
           name, (long long)hp.n_layers, (long long)hp.n_kv_heads, (long long)hp.head_dim, budget,
           ctx, bs);
    printf("workload: %d requests, prompt log-normal(mean 161, sigma 1.0), output "
           "log-normal(mean 338, sigma 0.8), clamped to ctx; drawn means: prompt %.1f, output "
           "%.1f\n\n",
           n_req, sum_p / n_req, sum_o / n_req);
    printf("| snapshot | layout | sequences that fit | tokens stored | bytes reserved | "
           "reserved bytes holding tokens | waste |\n|---|---|---:|---:|---:|---:|---:|\n");
    const char *snap[2] = {"final lengths", "mid-generation"};
    const int32_t *lens[2] = {fin, mid};
    for (int s = 0; s < 2; s++) {
        result pg = fill(&hp, KVL_KV_LAYOUT_PAGED, budget, ctx, bs, lens[s], n_req);
        result ct = fill(&hp, KVL_KV_LAYOUT_CONTIGUOUS, budget, ctx, bs, lens[s], n_req);
        printf("| %s | paged (block %d) | %d | %lld | %zu | %.2f%% | %.2f%% |\n", snap[s], bs,
               pg.n_seqs, (long long)pg.tokens, pg.bytes_reserved, 100 * pg.util,
               100 * (1 - pg.util));
        printf("| %s | contiguous | %d | %lld | %zu | %.2f%% | %.2f%% |\n", snap[s], ct.n_seqs,
               (long long)ct.tokens, ct.bytes_reserved, 100 * ct.util, 100 * (1 - ct.util));
        printf("| %s | paged / contiguous | %.2fx | %.2fx | | | |\n", snap[s],
               ct.n_seqs ? (double)pg.n_seqs / ct.n_seqs : 0,
               ct.tokens ? (double)pg.tokens / (double)ct.tokens : 0);
    }
    free(fin);
    free(mid);
    return 0;
}
