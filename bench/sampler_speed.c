/*
 * sampler_speed: what one draw costs the engine's sampler on a row the size
 * of a real vocabulary, per cut (docs/api.md's sampling parameters):
 *   none:  temperature 1, no top-k, no top-p (the OpenAI API's defaults;
 *          the draw without a sort),
 *   sorted: the same distribution through the sorted walk (top_k = n_vocab:
 *          every candidate kept, so the same token),
 *   top-k 40, top-p 0.95 (no top-k: the sort), the CLI's defaults.
 * Rows of Gaussian-like logits (sd 2, as a small trained model's), a fresh
 * row per round; every configuration runs in each round, the order rotated,
 * and the median and quartiles of its microseconds per draw are reported,
 * with the ratio sorted / none per round.
 *
 *   sampler_speed [n_vocab=32000] [rounds=41]
 *
 * Must not: be a test (timing decides nothing).
 */
#include "core/core.h"
#include "engine/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void quart(double *v, int n, double q[3]) {
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    q[0] = v[n / 4], q[1] = v[n / 2], q[2] = v[(3 * n) / 4];
}

int main(int argc, char **argv) {
    int32_t n = argc > 1 ? atoi(argv[1]) : 32000;
    int rounds = argc > 2 ? atoi(argv[2]) : 41;
    if (n < 1 || rounds < 1 || rounds > 10000) {
        fprintf(stderr, "usage: sampler_speed [n_vocab>=1] [rounds 1..10000]\n");
        return 2;
    }
    enum { NC = 4, DRAWS = 20 };
    const char *names[NC] = {"none (no sort)", "sorted walk", "top-k 40", "top-p 0.95"};
    kvl_sampler *s[NC];
    for (int c = 0; c < NC; c++) {
        kvl_sampler_params p = kvl_sampler_defaults();
        p.temperature = 1, p.min_p = 0, p.top_p = 1, p.top_k = 0;
        if (c == 1)
            p.top_k = n;
        if (c == 2)
            p.top_k = 40;
        if (c == 3)
            p.top_p = 0.95f;
        kvl_error err;
        if (kvl_sampler_init(&p, n, &s[c], &err)) {
            fprintf(stderr, "sampler_speed: %s\n", err.msg);
            return 1;
        }
    }
    float *row = malloc((size_t)n * sizeof *row), *w = malloc((size_t)n * sizeof *w);
    double *us = malloc((size_t)rounds * NC * sizeof *us),
           *ratio = malloc((size_t)rounds * sizeof *ratio);
    if (!row || !w || !us || !ratio)
        return 1;
    uint64_t x = 0x2545f4914f6cdd1dull;
    long sink = 0;
    for (int r = 0; r < rounds; r++) {
        for (int32_t i = 0; i < n; i++) { /* sum of 4 uniforms: roughly normal, sd 2 */
            double a = 0;
            for (int k = 0; k < 4; k++) {
                x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                a += (double)(x >> 11) * 0x1.0p-53 - 0.5;
            }
            row[i] = (float)(a * 2.0 * sqrt(3.0));
        }
        for (int j = 0; j < NC; j++) {
            int c = (j + r) % NC;
            double t0 = kvl_now();
            for (int d = 0; d < DRAWS; d++) {
                memcpy(w, row, (size_t)n * sizeof *w);
                sink += kvl_sampler_sample(s[c], w, NULL, 0);
            }
            us[c * rounds + r] = (kvl_now() - t0) / DRAWS * 1e6;
        }
        ratio[r] = us[1 * rounds + r] / us[0 * rounds + r];
    }
    printf("sampler_speed: n_vocab %d, %d rounds of %d draws (sink %ld)\n", (int)n, rounds, DRAWS,
           sink % 2);
    printf("| cut | us per draw: p25 | median | p75 |\n|---|---:|---:|---:|\n");
    for (int c = 0; c < NC; c++) {
        double q[3];
        quart(us + (size_t)c * rounds, rounds, q);
        printf("| %s | %.1f | %.1f | %.1f |\n", names[c], q[0], q[1], q[2]);
    }
    double q[3];
    quart(ratio, rounds, q);
    printf("sorted walk / no sort, per round: median %.1f (quartiles %.1f-%.1f)\n", q[1], q[0],
           q[2]);
    for (int c = 0; c < NC; c++)
        kvl_sampler_free(s[c]);
    free(row), free(w), free(us), free(ratio);
    return 0;
}
