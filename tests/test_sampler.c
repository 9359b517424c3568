/*
 * Sampling: greedy is argmax; top-k 1 is greedy at any temperature; top-p
 * and min-p cut exactly the candidates they should; the repetition penalty
 * divides positive and multiplies negative logits once per distinct token;
 * a seed gives the same draws, draws follow the softmax; without top-k the
 * unsorted top-p and draw give the sorted walk's token; NaN logits never
 * win; bad parameters are refused with the field named.
 */
#include "engine/sampler.h"
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

static kvl_sampler *make(kvl_sampler_params p, int32_t n) {
    kvl_sampler *s = NULL;
    kvl_error err;
    CHECK(kvl_sampler_init(&p, n, &s, &err) == KVL_OK);
    return s;
}

static int32_t draw(kvl_sampler *s, const float *logits, int32_t n) {
    float w[16];
    memcpy(w, logits, (size_t)n * sizeof *w);
    return kvl_sampler_sample(s, w, NULL, 0);
}

int main(void) {
    const float L[8] = {1.0f, 3.0f, 2.5f, -1.0f, 0.0f, 2.9f, -5.0f, 0.5f};
    kvl_sampler_params p = kvl_sampler_defaults();

    /* greedy */
    p.temperature = 0;
    kvl_sampler *s = make(p, 8);
    CHECK_EQ_INT(draw(s, L, 8), 1);
    kvl_sampler_free(s);
    CHECK_EQ_INT(kvl_argmax(L, 8), 1);
    float ties[3] = {2, 5, 5};
    CHECK_EQ_INT(kvl_argmax(ties, 3), 1); /* the first on ties */

    /* top-k 1 at a high temperature is still the argmax */
    p = kvl_sampler_defaults();
    p.temperature = 5;
    p.top_k = 1;
    p.top_p = 1;
    p.min_p = 0;
    s = make(p, 8);
    for (int i = 0; i < 200; i++)
        CHECK_EQ_INT(draw(s, L, 8), 1);
    kvl_sampler_free(s);

    /* top-k 3: only ids 1, 5, 2 ever appear */
    p.top_k = 3;
    p.temperature = 1;
    s = make(p, 8);
    int seen[8] = {0};
    for (int i = 0; i < 3000; i++)
        seen[draw(s, L, 8)]++;
    CHECK(seen[1] > 0 && seen[5] > 0 && seen[2] > 0);
    CHECK_EQ_INT(seen[0] + seen[3] + seen[4] + seen[6] + seen[7], 0);
    kvl_sampler_free(s);

    /* frequencies follow the softmax at temperature 1 (no cuts): with 20000
     * draws each probability is within 0.02 */
    p.top_k = 0;
    s = make(p, 8);
    double z = 0, prob[8];
    for (int i = 0; i < 8; i++)
        z += exp(L[i]);
    for (int i = 0; i < 8; i++)
        prob[i] = exp(L[i]) / z;
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 20000; i++)
        seen[draw(s, L, 8)]++;
    for (int i = 0; i < 8; i++)
        CHECK_NEAR(seen[i] / 20000.0, prob[i], 0.02);
    kvl_sampler_free(s);

    /* top-p: the smallest prefix reaching p. Probabilities sorted: id1 .3797,
     * id5 .3436, id2 .2303 ... top_p 0.5 keeps ids 1 and 5 only */
    p.top_p = 0.5f;
    s = make(p, 8);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 2000; i++)
        seen[draw(s, L, 8)]++;
    CHECK(seen[1] > 0 && seen[5] > 0);
    CHECK_EQ_INT(seen[0] + seen[2] + seen[3] + seen[4] + seen[6] + seen[7], 0);
    kvl_sampler_free(s);

    /* min-p 0.7: keeps candidates with p >= 0.7 * p_max: id 5 (.905 of max)
     * stays, id 2 (.607 of max) goes */
    p.top_p = 1;
    p.min_p = 0.7f;
    s = make(p, 8);
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < 2000; i++)
        seen[draw(s, L, 8)]++;
    CHECK(seen[1] > 0 && seen[5] > 0);
    CHECK_EQ_INT(seen[2], 0);
    kvl_sampler_free(s);

    /* the same seed gives the same draws; another seed differs */
    p = kvl_sampler_defaults();
    p.top_k = 0;
    p.min_p = 0;
    p.top_p = 1;
    p.temperature = 1.5f;
    p.seed = 42;
    kvl_sampler *a = make(p, 8), *b = make(p, 8);
    p.seed = 43;
    kvl_sampler *c = make(p, 8);
    int same_ab = 0, same_ac = 0;
    for (int i = 0; i < 100; i++) {
        int32_t x = draw(a, L, 8), y = draw(b, L, 8), w = draw(c, L, 8);
        same_ab += x == y;
        same_ac += x == w;
    }
    CHECK_EQ_INT(same_ab, 100);
    CHECK(same_ac < 100);
    kvl_sampler_free(a);
    kvl_sampler_free(b);
    kvl_sampler_free(c);

    /* repetition penalty 2 over recent {1, 1, 3}: logit 3.0 -> 1.5 (once,
     * not twice), -1.0 -> -2.0; greedy then picks id 5 (2.9) */
    p = kvl_sampler_defaults();
    p.temperature = 0;
    p.repeat_penalty = 2;
    p.repeat_last_n = 64;
    s = make(p, 8);
    float w[8];
    memcpy(w, L, sizeof w);
    int32_t recent[3] = {1, 1, 3};
    CHECK_EQ_INT(kvl_sampler_sample(s, w, recent, 3), 5);
    CHECK_NEAR(w[1], 1.5, 1e-6);
    CHECK_NEAR(w[3], -2.0, 1e-6);
    /* only the last repeat_last_n tokens count */
    kvl_sampler_free(s);
    p.repeat_last_n = 1;
    s = make(p, 8);
    memcpy(w, L, sizeof w);
    CHECK_EQ_INT(kvl_sampler_sample(s, w, recent, 3), 1);
    kvl_sampler_free(s);

    /* presence and frequency penalties over the generated tokens {1, 1, 3}:
     * id 1 loses 2 x 0.5 + 0.25, id 3 loses 0.5 + 0.25; others untouched;
     * the candidate scratch they use does not disturb the next draw */
    kvl_error err0;
    p = kvl_sampler_defaults();
    p.temperature = 0;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    s = make(p, 8);
    memcpy(w, L, sizeof w);
    kvl_sampler_penalize_output(s, w, recent, 3);
    CHECK_NEAR(w[1], L[1] - 1.25f, 1e-6);
    CHECK_NEAR(w[3], L[3] - 0.75f, 1e-6);
    for (int i = 0; i < 8; i++)
        if (i != 1 && i != 3)
            CHECK_NEAR(w[i], L[i], 0);
    kvl_sampler_penalize_output(s, w, recent, 3); /* again: the marks were reset */
    CHECK_NEAR(w[1], L[1] - 2.5f, 1e-6);
    CHECK_EQ_INT(kvl_sampler_sample(s, w, NULL, 0), kvl_argmax(w, 8));
    /* negative values reward; a token id out of range is ignored */
    kvl_sampler_free(s);
    p.frequency_penalty = -1;
    p.presence_penalty = 0;
    s = make(p, 8);
    memcpy(w, L, sizeof w);
    int32_t odd[2] = {7, 99};
    kvl_sampler_penalize_output(s, w, odd, 2);
    CHECK_NEAR(w[7], L[7] + 1, 1e-6);
    kvl_sampler_free(s);
    p.frequency_penalty = 2.5f;
    CHECK(kvl_sampler_init(&p, 8, &s, &err0) == KVL_E_INVALID);
    CHECK_CONTAINS(err0.msg, "frequency_penalty");

    /* NaN never wins, at any temperature */
    float nanl[4] = {NAN, 1.0f, NAN, 0.5f};
    p = kvl_sampler_defaults();
    p.temperature = 0;
    s = make(p, 4);
    CHECK_EQ_INT(draw(s, nanl, 4), 1);
    kvl_sampler_free(s);
    p.temperature = 1;
    p.top_k = 0;
    s = make(p, 4);
    for (int i = 0; i < 200; i++) {
        int32_t t = draw(s, nanl, 4);
        CHECK(t == 1 || t == 3);
    }
    kvl_sampler_free(s);

    /* without top-k, top-p and the draw skip the sort: they must give the
     * token the sorted walk gives for the same seed. top_k = n_vocab keeps
     * the sort, so the two samplers are compared draw by draw, over spread,
     * tied (logits on a coarse grid: the id breaks the tie) and masked (-inf)
     * rows, at several temperatures, min-p and top-p cuts. */
    {
        static const int32_t sizes[] = {1, 2, 7, 100, 1000, 32000};
        static const float temps[] = {0.5f, 1.0f, 2.0f};
        static const float minps[] = {0.0f, 0.05f, 0.3f};
        static const float topps[] = {1.0f, 0.95f, 0.5f};
        float *row = malloc(32000 * sizeof *row), *w1 = malloc(32000 * sizeof *w1),
              *w2 = malloc(32000 * sizeof *w2);
        uint64_t x = 0x9e3779b97f4a7c15ull;
        int64_t draws = 0, differ = 0;
        for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
            for (int kind = 0; kind < 3; kind++) {
                int32_t n = sizes[si];
                for (int32_t i = 0; i < n; i++) {
                    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
                    float u = (float)(x >> 40) / 16777216.0f; /* [0, 1) */
                    row[i] = kind == 1 ? floorf(u * 8.0f)     /* 8 values: ties */
                                       : 12.0f * u - 6.0f;
                    if (kind == 2 && (x >> 20) % 3 == 0)
                        row[i] = -INFINITY;
                }
                if (kind == 2)
                    row[n / 2] = 1.0f; /* at least one finite */
                for (size_t ti = 0; ti < sizeof temps / sizeof *temps; ti++)
                    for (size_t mi = 0; mi < 9; mi++) {
                        kvl_sampler_params q = kvl_sampler_defaults();
                        q.temperature = temps[ti];
                        q.min_p = minps[mi % 3];
                        q.top_p = topps[mi / 3];
                        q.seed = 7 + si * 100 + (uint64_t)kind * 10 + ti * 3 + mi;
                        q.top_k = 0;
                        kvl_sampler *fast = make(q, n);
                        q.top_k = n;
                        kvl_sampler *sorted = make(q, n);
                        for (int d = 0; d < 60; d++) {
                            memcpy(w1, row, (size_t)n * sizeof *w1);
                            memcpy(w2, row, (size_t)n * sizeof *w2);
                            int32_t a1 = kvl_sampler_sample(fast, w1, NULL, 0);
                            int32_t a2 = kvl_sampler_sample(sorted, w2, NULL, 0);
                            CHECK(a1 >= 0 && a1 < n && row[a1] > -INFINITY);
                            draws++;
                            differ += a1 != a2;
                        }
                        kvl_sampler_free(fast);
                        kvl_sampler_free(sorted);
                    }
            }
        CHECK_EQ_INT(differ, 0);
        CHECK(draws == 6 * 3 * 3 * 9 * 60);
        free(row);
        free(w1);
        free(w2);
    }

    /* bad parameters name the field */
    kvl_error err;
    kvl_sampler *none = NULL;
    p = kvl_sampler_defaults();
    p.top_p = 0;
    CHECK(kvl_sampler_init(&p, 8, &none, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "top_p");
    p = kvl_sampler_defaults();
    p.temperature = -1;
    CHECK(kvl_sampler_init(&p, 8, &none, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "temperature");
    p = kvl_sampler_defaults();
    p.min_p = NAN;
    CHECK(kvl_sampler_init(&p, 8, &none, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "min_p");
    p = kvl_sampler_defaults();
    CHECK(kvl_sampler_init(&p, 0, &none, &err) == KVL_E_INVALID);
    CHECK(none == NULL);
    return kvt_finish("test_sampler");
}
