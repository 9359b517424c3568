/*
 * What one KV block map (kvl_engine_kv_map) costs the engine: the time it
 * holds the engine's lock, against the time of one decode step, on pools
 * of increasing size. stories260K, f32 KV in blocks of 4 positions (5120
 * bytes a block), 16 sequences decoding with 512-token contexts (half of
 * each prompt shared, so the map has shared and cached blocks). Steps and
 * maps alternate in one loop, so both see the same machine state; medians
 * and the 10th-90th percentile spread are printed.
 *
 *     bench/kv_map_cost.sh [BUILD_DIR] [ROUNDS]
 */
#include <kvllm.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* p-th percentile of v[0..n) (sorts v). */
static double pct(double *v, int n, double p) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    return v[(int)(p * (n - 1) + 0.5)];
}

static int run(const kvl_model *m, uint32_t n_blocks, int rounds) {
    kvl_engine_params p = kvl_engine_defaults();
    p.n_threads = 1;
    p.block_size = 4;
    p.kv_type_k = p.kv_type_v = "f32";
    p.kv_mem = (size_t)n_blocks * 5120;
    p.max_seqs = 16;
    p.max_ctx = 1024;
    p.max_batch_tokens = 1024;
    kvl_engine *e = NULL;
    kvl_error err;
    if (kvl_engine_init(m, &p, &e, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    int32_t toks[512];
    for (int r = 0; r < 16; r++) {
        toks[0] = 1;
        for (int i = 1; i < 512; i++)
            toks[i] = 3 + (i < 256 ? i % 400 : (i * 7 + r * 131) % 400);
        kvl_request_params rp = kvl_request_defaults();
        rp.prompt_tokens = toks;
        rp.n_prompt_tokens = 512;
        rp.max_tokens = 500;
        rp.temperature = 0;
        rp.ignore_eos = true;
        uint64_t id;
        if (kvl_engine_submit(e, &rp, &id, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    }
    kvl_event ev[64];
    for (int i = 0; i < 24; i++) { /* prefill everything */
        kvl_engine_step(e, NULL, &err);
        while (kvl_engine_poll(e, ev, 64, 0) > 0) {
        }
    }
    uint32_t nb, ns, nh;
    kvl_engine_kv_map_size(e, &nb, &ns, &nh);
    kvl_kv_map mp = {.blocks = malloc(nb * sizeof *mp.blocks),
                     .cap_blocks = nb,
                     .swap = NULL,
                     .cap_swap = ns,
                     .holders = malloc(nh * sizeof *mp.holders),
                     .cap_holders = nh};
    double *t_map = malloc((size_t)rounds * sizeof *t_map);
    double *t_step = malloc((size_t)rounds * sizeof *t_step);
    for (int i = 0; i < rounds; i++) {
        double t0 = now();
        int32_t n = 0;
        kvl_engine_step(e, &n, &err);
        t_step[i] = now() - t0;
        while (kvl_engine_poll(e, ev, 64, 0) > 0) {
        }
        t0 = now();
        if (kvl_engine_kv_map(e, &mp, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        t_map[i] = now() - t0;
    }
    kvl_engine_stats st;
    kvl_engine_get_stats(e, &st);
    double m50 = pct(t_map, rounds, 0.5), m10 = pct(t_map, rounds, 0.1),
           m90 = pct(t_map, rounds, 0.9);
    double s50 = pct(t_step, rounds, 0.5);
    printf("| %6u | %u | %u | %u | %.1f (%.1f-%.1f) | %.2f | %.3f | %.4f%% |\n", nb, mp.n_used,
           mp.n_shared, mp.n_holders, m50 * 1e6, m10 * 1e6, m90 * 1e6, s50 * 1e3, m50 / s50,
           100.0 * 4 * m50);
    free(t_map);
    free(t_step);
    free(mp.blocks);
    free(mp.holders);
    kvl_engine_free(e);
    return 0;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "../shared/models/stories260K.gguf";
    int rounds = argc > 2 ? atoi(argv[2]) : 101;
    kvl_model *m = NULL;
    kvl_error err;
    if (kvl_model_load(path, NULL, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    printf("| pool blocks | used | shared | holders | map us, median (p10-p90) | decode step ms, "
           "median | map / step | lock time at 4 maps/s |\n");
    printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    static const uint32_t sizes[] = {4096, 16384, 65536};
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++)
        rc = run(m, sizes[i], rounds);
    kvl_model_free(m);
    return rc;
}
