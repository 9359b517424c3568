/*
 * Sampling. Order of operations (as llama.cpp's default chain): repetition
 * penalty, then top-k, temperature, softmax, top-p, min-p, draw. Candidates
 * live in a buffer allocated at init; a partial selection keeps top-k
 * cheap, and without top-k (the OpenAI API's default) neither top-p nor
 * the draw needs a sort (cut_mass, draw_unsorted). The generator is xoshiro256** seeded by splitmix64, so a seed gives
 * the same tokens on every machine.
 */
#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>

typedef struct {
    float logit;
    int32_t id;
} cand;

struct kvl_sampler {
    kvl_sampler_params p;
    int32_t n_vocab;
    cand *c;         /* (n_vocab) */
    float *m;        /* (n_vocab) probability mass beside c, for draw_unsorted */
    uint64_t rng[4]; /* xoshiro256** state */
};

kvl_sampler_params kvl_sampler_defaults(void) {
    return (kvl_sampler_params){.temperature = 0.8f,
                                .top_k = 40,
                                .top_p = 0.95f,
                                .min_p = 0.05f,
                                .repeat_penalty = 1.0f,
                                .repeat_last_n = 64,
                                .seed = 0x6b766c6c6dULL};
}

kvl_status kvl_sampler_params_validate(const kvl_sampler_params *p, kvl_error *err) {
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f))
        return kvl_errorf(err, KVL_E_INVALID, "sampler: temperature %g outside [0, 100]",
                          (double)p->temperature);
    if (p->top_k < 0)
        return kvl_errorf(err, KVL_E_INVALID, "sampler: top_k %d is negative", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return kvl_errorf(err, KVL_E_INVALID, "sampler: top_p %g outside (0, 1]", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return kvl_errorf(err, KVL_E_INVALID, "sampler: min_p %g outside [0, 1]", (double)p->min_p);
    if (!(p->repeat_penalty > 0.0f && p->repeat_penalty <= 10.0f))
        return kvl_errorf(err, KVL_E_INVALID, "sampler: repeat_penalty %g outside (0, 10]",
                          (double)p->repeat_penalty);
    if (p->repeat_last_n < 0 || p->repeat_last_n > 1 << 20)
        return kvl_errorf(err, KVL_E_INVALID, "sampler: repeat_last_n %d outside [0, %d]",
                          p->repeat_last_n, 1 << 20);
    if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f))
        return kvl_errorf(err, KVL_E_INVALID, "sampler: presence_penalty %g outside [-2, 2]",
                          (double)p->presence_penalty);
    if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f))
        return kvl_errorf(err, KVL_E_INVALID, "sampler: frequency_penalty %g outside [-2, 2]",
                          (double)p->frequency_penalty);
    return KVL_OK;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t s[4]) {
    uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* uniform in [0, 1) with 53 bits */
static double next_unit(uint64_t s[4]) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }

kvl_status kvl_sampler_init(const kvl_sampler_params *p, int32_t n_vocab, kvl_sampler **out,
                            kvl_error *err) {
    kvl_status st = kvl_sampler_params_validate(p, err);
    if (st)
        return st;
    if (n_vocab < 1)
        return kvl_errorf(err, KVL_E_INVALID, "sampler: n_vocab %d < 1", n_vocab);
    kvl_sampler *s = calloc(1, sizeof *s);
    cand *c = calloc((size_t)n_vocab, sizeof *c);
    float *m = calloc((size_t)n_vocab, sizeof *m);
    if (!s || !c || !m) {
        free(s);
        free(c);
        free(m);
        return kvl_errorf(err, KVL_E_NOMEM, "sampler: cannot allocate %d candidates", n_vocab);
    }
    s->p = *p;
    s->n_vocab = n_vocab;
    s->c = c;
    s->m = m;
    uint64_t x = p->seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    *out = s;
    return KVL_OK;
}

void kvl_sampler_free(kvl_sampler *s) {
    if (!s)
        return;
    free(s->c);
    free(s->m);
    free(s);
}

int32_t kvl_argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

/* a comes before b: larger logit first, then smaller id */
static bool before(cand a, cand b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

/* In-place heapsort into descending order (glibc's qsort may allocate, and
 * sampling must not). */
static void sift(cand *c, int32_t i, int32_t n) {
    for (;;) {
        int32_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < n && before(c[w], c[l]))
            w = l;
        if (r < n && before(c[w], c[r]))
            w = r;
        if (w == i)
            return;
        cand t = c[i];
        c[i] = c[w];
        c[w] = t;
        i = w;
    }
}

static void sort_desc(cand *c, int32_t n) {
    /* a heap with the "last" element on top, popped to the back */
    for (int32_t i = n / 2 - 1; i >= 0; i--)
        sift(c, i, n);
    for (int32_t e = n - 1; e > 0; e--) {
        cand t = c[0];
        c[0] = c[e];
        c[e] = t;
        sift(c, 0, e);
    }
}

/* Move the k largest candidates to the front, sorted (quickselect then sort). */
static void select_top(cand *c, int32_t n, int32_t k) {
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = c[(lo + hi) / 2].logit;
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (c[i].logit > pivot)
                i++;
            while (c[j].logit < pivot)
                j--;
            if (i <= j) {
                cand t = c[i];
                c[i] = c[j];
                c[j] = t;
                i++;
                j--;
            }
        }
        if (k - 1 <= j)
            hi = j;
        else if (k - 1 >= i)
            lo = i;
        else
            break;
    }
    sort_desc(c, k);
}

static void swap2(cand *c, float *m, int32_t i, int32_t j) {
    cand t = c[i];
    c[i] = c[j];
    c[j] = t;
    float u = m[i];
    m[i] = m[j];
    m[j] = u;
}

/* The token the sorted walk (below, in kvl_sampler_sample) would draw for
 * r in [0, total mass), found without sorting: c[0..n) and their masses
 * m[0..n) in any order. Each pass partitions the range around a pivot by
 * the walk's order (before: larger logit, then smaller id; a total order),
 * sums the mass ahead of the pivot, and keeps the side where the walk's
 * running sum crosses r. Expected O(n) against the sort's O(n log n); the
 * answer is the walk's except when r falls within rounding of a boundary
 * (the sums run in another order), about 1e-13 of draws. */
static int32_t draw_unsorted(cand *c, float *m, int32_t n, double r) {
    int32_t lo = 0, hi = n; /* the answer is in [lo, hi); r counts from lo */
    while (hi - lo > 1) {
        swap2(c, m, lo + (hi - lo) / 2, hi - 1);
        const cand pv = c[hi - 1];
        int32_t s = lo;
        double ahead = 0;
        for (int32_t i = lo; i < hi - 1; i++)
            if (before(c[i], pv)) {
                ahead += m[i];
                swap2(c, m, i, s++);
            }
        if (r < ahead) { /* [lo, s): everything the walk meets before the pivot */
            hi = s;
            continue;
        }
        r -= ahead;
        if (r < m[hi - 1] || s == hi - 1)
            return pv.id; /* the pivot, or the last candidate */
        r -= m[hi - 1];
        lo = s, hi = hi - 1; /* [s, hi - 1): after the pivot */
    }
    return c[lo].id;
}

/* top-p without a sort: arrange c/m (in any order) so that [0, keep) is the
 * smallest prefix of the walk's order whose mass reaches target, and return
 * keep (n when the whole row falls short). The same partitioning as
 * draw_unsorted, keeping what lies ahead of the crossing in front. */
static int32_t cut_mass(cand *c, float *m, int32_t n, double target) {
    int32_t lo = 0, hi = n; /* [0, lo) is kept, its mass acc < target */
    double acc = 0;
    while (lo < hi) {
        swap2(c, m, lo + (hi - lo) / 2, hi - 1);
        const cand pv = c[hi - 1];
        int32_t s = lo;
        double ahead = 0;
        for (int32_t i = lo; i < hi - 1; i++)
            if (before(c[i], pv)) {
                ahead += m[i];
                swap2(c, m, i, s++);
            }
        swap2(c, m, s, hi - 1);      /* the pivot after what precedes it */
        if (acc + ahead >= target) { /* the crossing is ahead of the pivot */
            hi = s;
            continue;
        }
        acc += ahead + m[s];
        if (acc >= target)
            return s + 1;
        lo = s + 1;
    }
    return lo;
}

void kvl_sampler_penalize_output(kvl_sampler *s, float *logits, const int32_t *gen, int32_t n_gen) {
    float pres = s->p.presence_penalty, freq = s->p.frequency_penalty;
    if ((pres == 0.0f && freq == 0.0f) || !gen)
        return;
    /* The candidate buffer is scratch until sampling refills it: its id
     * field marks the tokens already given the presence penalty. */
    cand *c = s->c;
    for (int32_t i = 0; i < n_gen; i++)
        if (gen[i] >= 0 && gen[i] < s->n_vocab)
            c[gen[i]].id = 0;
    for (int32_t i = 0; i < n_gen; i++) {
        int32_t t = gen[i];
        if (t < 0 || t >= s->n_vocab)
            continue;
        logits[t] -= freq;
        if (c[t].id == 0) {
            logits[t] -= pres;
            c[t].id = 1;
        }
    }
}

int32_t kvl_sampler_sample(kvl_sampler *s, float *logits, const int32_t *recent, int32_t n_recent) {
    const kvl_sampler_params *p = &s->p;
    int32_t n = s->n_vocab;
    if (p->repeat_penalty != 1.0f && recent) {
        int32_t from = n_recent > p->repeat_last_n ? n_recent - p->repeat_last_n : 0;
        for (int32_t i = from; i < n_recent; i++) {
            int32_t t = recent[i];
            if (t < 0 || t >= n)
                continue;
            /* penalise each distinct token once: skip if seen later in the window */
            bool again = false;
            for (int32_t j = i + 1; j < n_recent && !again; j++)
                again = recent[j] == t;
            if (again)
                continue;
            logits[t] =
                logits[t] > 0 ? logits[t] / p->repeat_penalty : logits[t] * p->repeat_penalty;
        }
    }
    /* NaN logits never win: treat them as -inf */
    for (int32_t i = 0; i < n; i++)
        if (isnan(logits[i]))
            logits[i] = -INFINITY;
    if (p->temperature == 0.0f)
        return kvl_argmax(logits, n);

    cand *c = s->c;
    if (p->top_k == 0) { /* no top-k: min-p filters, top-p and the draw select */
        float mx = logits[0];
        for (int32_t i = 1; i < n; i++)
            mx = logits[i] > mx ? logits[i] : mx;
        /* min-p keeps p >= min_p * p_max, where p_max's mass is expf(0) = 1 */
        int32_t keep = 0;
        double sum = 0, keep_sum = 0;
        for (int32_t i = 0; i < n; i++) {
            float e = expf((logits[i] - mx) / p->temperature);
            sum += e;
            if (p->min_p > 0.0f && e < p->min_p)
                continue;
            c[keep] = (cand){logits[i], i};
            s->m[keep++] = e;
            keep_sum += e;
        }
        if (p->top_p < 1.0f) {
            keep = cut_mass(c, s->m, keep, (double)p->top_p * sum);
            keep = keep > 0 ? keep : 1;
            keep_sum = 0;
            for (int32_t i = 0; i < keep; i++)
                keep_sum += s->m[i];
        }
        return draw_unsorted(c, s->m, keep, next_unit(s->rng) * keep_sum);
    }
    for (int32_t i = 0; i < n; i++)
        c[i] = (cand){logits[i], i};
    int32_t k = (p->top_k > 0 && p->top_k < n) ? p->top_k : n;
    select_top(c, n, k);
    /* softmax over the k survivors at temperature */
    float mx = c[0].logit;
    double sum = 0;
    for (int32_t i = 0; i < k; i++) {
        float e = expf((c[i].logit - mx) / p->temperature);
        c[i].logit = e; /* reuse as probability mass */
        sum += e;
    }
    /* top-p: the smallest prefix whose mass reaches top_p; min-p: drop
     * candidates under min_p times the best one's probability */
    double cum = 0, keep_sum = 0;
    int32_t keep = 0;
    float pmax = c[0].logit;
    for (int32_t i = 0; i < k; i++) {
        if (p->min_p > 0.0f && c[i].logit < p->min_p * pmax)
            break;
        keep_sum += c[i].logit;
        keep = i + 1;
        cum += c[i].logit / sum;
        if (cum >= p->top_p)
            break;
    }
    if (keep == 0) {
        keep = 1;
        keep_sum = c[0].logit;
    }
    double r = next_unit(s->rng) * keep_sum;
    double acc = 0;
    for (int32_t i = 0; i < keep; i++) {
        acc += c[i].logit;
        if (r < acc)
            return c[i].id;
    }
    return c[keep - 1].id;
}
