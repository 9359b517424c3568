/*
 * Workloads for the simulator: arrival times (Poisson, gamma, a burst) and
 * request lengths (ShareGPT-like, Alpaca-like, fixed, uniform, a trace).
 *
 * The synthetic length laws (docs/sim.md): prompt and output lengths are
 * independent lognormals, rounded to integers, then filtered as vLLM's
 * benchmark sampler filters ShareGPT (a pair is drawn again when prompt
 * < 4, output < 4, prompt > max_prompt or prompt + output > max_total).
 * The lognormals' mu are fitted at start (a fixed-seed fixed-point
 * iteration over 65536 filtered draws) so that the filtered means are the
 * targets: ShareGPT 161 / 338 (sigma 1.0 / 1.0), Alpaca 19 / 58 (sigma
 * 0.8 / 0.9). The means are those the PagedAttention paper gives for its
 * two traces (sec. 6.1, Fig. 11); the sigmas are our choice of tail.
 *
 * Must not: depend on anything but the seed (no clock, no global state).
 */
#include "sim/sim.h"

#include <math.h>
#include <stdlib.h>

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_u64(rng *r) { /* xoshiro256** */
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* Uniform in (0, 1). */
static double rng_unit(rng *r) { return ((double)(rng_u64(r) >> 11) + 0.5) / 9007199254740992.0; }

static double rng_normal(rng *r) { /* Box-Muller, one value per call */
    double u = rng_unit(r), v = rng_unit(r);
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* Gamma(k, 1): Marsaglia and Tsang (2000); k < 1 through k + 1. */
static double rng_gamma(rng *r, double k) {
    if (k < 1)
        return rng_gamma(r, k + 1) * pow(rng_unit(r), 1 / k);
    double d = k - 1.0 / 3, c = 1 / sqrt(9 * d);
    for (;;) {
        double x = rng_normal(r), v = 1 + c * x;
        if (v <= 0)
            continue;
        v = v * v * v;
        double u = rng_unit(r);
        if (log(u) < 0.5 * x * x + d - d * v + d * log(v))
            return d * v;
    }
}

kvl_sim_workload kvl_sim_workload_defaults(void) {
    return (kvl_sim_workload){.lengths = KVL_SIM_LEN_SHAREGPT,
                              .arrivals = KVL_SIM_ARR_POISSON,
                              .rate = 1,
                              .cv = 1,
                              .duration_s = 600,
                              .prompt_lo = 128,
                              .prompt_hi = 128,
                              .output_lo = 128,
                              .output_hi = 128,
                              .max_prompt = 1024,
                              .max_total = 2048,
                              .seed = 1};
}

/* ---- lognormal lengths ---------------------------------------------------- */

typedef struct lognorm2 {
    double mu_p, sg_p, mu_o, sg_o;
    int32_t max_prompt, max_total;
} lognorm2;

static int32_t round_len(double x) { return x > 1e8 ? 100000000 : (int32_t)lround(x); }

static void draw_pair(rng *r, const lognorm2 *m, int32_t *p, int32_t *o) {
    for (;;) {
        int32_t a = round_len(exp(m->mu_p + m->sg_p * rng_normal(r)));
        int32_t b = round_len(exp(m->mu_o + m->sg_o * rng_normal(r)));
        if (a >= 4 && b >= 4 && a <= m->max_prompt && (int64_t)a + b <= m->max_total) {
            *p = a;
            *o = b;
            return;
        }
    }
}

/* Fit mu so that the filtered means are the targets (fixed seed: the same
 * every run). */
static void fit(lognorm2 *m, double want_p, double want_o) {
    m->mu_p = log(want_p) - m->sg_p * m->sg_p / 2;
    m->mu_o = log(want_o) - m->sg_o * m->sg_o / 2;
    for (int it = 0; it < 12; it++) {
        rng r;
        rng_seed(&r, 12345);
        double sp = 0, so = 0;
        const int n = 65536;
        for (int i = 0; i < n; i++) {
            int32_t p, o;
            draw_pair(&r, m, &p, &o);
            sp += p;
            so += o;
        }
        m->mu_p += log(want_p / (sp / n));
        m->mu_o += log(want_o / (so / n));
    }
}

/* ---- traces --------------------------------------------------------------- */

/* One trace row: "arrival prompt output [prefix_id [prefix_len]]". */
static kvl_status parse_row(const char *line, const char *path, int64_t ln, int32_t prefix_len,
                            kvl_sim_request *q, kvl_error *err) {
    double t;
    long long p, o, id = -1, k = -1;
    int end = 0,
        got = sscanf(line, "%lf %lld %lld%n %lld%n %lld%n", &t, &p, &o, &end, &id, &end, &k, &end);
    while (got >= 3 && (line[end] == ' ' || line[end] == '\t' || line[end] == '\r'))
        end++;
    if (got < 3 || (line[end] && line[end] != '\n') || !(t >= 0) || t > 1e9 || p < 1 || o < 1 ||
        p > KVL_MAX_CTX || o > KVL_MAX_CTX)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "sim: trace %s line %lld: want 'arrival_s prompt output [prefix_id "
                          "[prefix_len]]' with arrival in [0, 1e9] and lengths in [1, %d]",
                          path, (long long)ln, KVL_MAX_CTX);
    if (got >= 4 && (id < 0 || id >= (1ll << 48)))
        return kvl_errorf(err, KVL_E_FORMAT,
                          "sim: trace %s line %lld: prefix_id %lld not in [0, 2^48)", path,
                          (long long)ln, id);
    if (got == 5 && (k < 0 || k > p))
        return kvl_errorf(err, KVL_E_FORMAT,
                          "sim: trace %s line %lld: prefix_len %lld not in [0, prompt %lld]", path,
                          (long long)ln, k, p);
    if (got == 4 && prefix_len <= 0)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "sim: trace %s line %lld: prefix_id %lld without a prefix_len: give a "
                          "fifth column or --prefix-len",
                          path, (long long)ln, id);
    *q = (kvl_sim_request){
        .arrival = t, .n_prompt = (int32_t)p, .n_output = (int32_t)o, .next_turn = -1};
    if (got >= 4) {
        q->key = KVL_SIM_KEY_PREFIX | (uint64_t)id;
        q->n_keyed = got == 5 ? (int32_t)k : prefix_len < p ? prefix_len : (int32_t)p;
    }
    return KVL_OK;
}

static kvl_status read_trace(const char *path, int32_t prefix_len, kvl_sim_request **out,
                             int64_t *n_out, kvl_error *err) {
    FILE *f = fopen(path, "r");
    if (!f)
        return kvl_errorf(err, KVL_E_IO, "sim: trace %s: cannot open", path);
    int64_t n = 0, cap = 1024;
    kvl_sim_request *v = malloc((size_t)cap * sizeof *v);
    char line[512];
    int64_t ln = 0;
    kvl_status st = v ? KVL_OK : kvl_errorf(err, KVL_E_NOMEM, "sim: trace: out of memory");
    double last = 0;
    while (st == KVL_OK && fgets(line, sizeof line, f)) {
        ln++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        kvl_sim_request q;
        if ((st = parse_row(line, path, ln, prefix_len, &q, err)))
            break;
        if (q.arrival < last) {
            st = kvl_errorf(err, KVL_E_FORMAT,
                            "sim: trace %s line %lld: arrival %g before the previous row's %g",
                            path, (long long)ln, q.arrival, last);
            break;
        }
        last = q.arrival;
        if (n == cap) {
            if (cap >= 100000000) {
                st = kvl_errorf(err, KVL_E_LIMIT, "sim: trace %s: more than 10^8 rows", path);
                break;
            }
            kvl_sim_request *g = realloc(v, (size_t)cap * 2 * sizeof *v);
            if (!g) {
                st = kvl_errorf(err, KVL_E_NOMEM, "sim: trace: out of memory");
                break;
            }
            v = g;
            cap *= 2;
        }
        v[n++] = q;
    }
    fclose(f);
    if (st) {
        free(v);
        return st;
    }
    *out = v;
    *n_out = n;
    return KVL_OK;
}

/* One (prompt, output) pair from w's length law. */
static void draw_lengths(const kvl_sim_workload *w, const lognorm2 *m, rng *rl, int32_t *p,
                         int32_t *o) {
    switch (w->lengths) {
    case KVL_SIM_LEN_FIXED:
        *p = w->prompt_lo;
        *o = w->output_lo;
        break;
    case KVL_SIM_LEN_UNIFORM:
        *p = w->prompt_lo + (int32_t)(rng_u64(rl) % (uint64_t)(w->prompt_hi - w->prompt_lo + 1));
        *o = w->output_lo + (int32_t)(rng_u64(rl) % (uint64_t)(w->output_hi - w->output_lo + 1));
        break;
    default: draw_pair(rl, m, p, o);
    }
}

/* ---- generation ----------------------------------------------------------- */

kvl_status kvl_sim_workload_make(const kvl_sim_workload *w, kvl_sim_request **out, int64_t *n_out,
                                 kvl_error *err) {
    if (w->lengths == KVL_SIM_LEN_TRACE && w->turns > 1)
        return kvl_errorf(err, KVL_E_INVALID,
                          "sim: sessions (turns %d) need a synthetic "
                          "workload, not a trace",
                          (int)w->turns);
    if (w->lengths == KVL_SIM_LEN_TRACE)
        return read_trace(w->trace_path, w->prefix_len, out, n_out, err);
    if (w->arrivals != KVL_SIM_ARR_BURST && !(w->rate > 0 && w->rate <= 1e6))
        return kvl_errorf(err, KVL_E_INVALID, "sim: rate %g not in (0, 1e6] requests/s", w->rate);
    if (w->arrivals == KVL_SIM_ARR_GAMMA && !(w->cv > 0 && w->cv <= 100))
        return kvl_errorf(err, KVL_E_INVALID, "sim: gamma cv %g not in (0, 100]", w->cv);
    if (w->n_requests <= 0 && !(w->duration_s > 0 && w->duration_s <= 1e7))
        return kvl_errorf(err, KVL_E_INVALID, "sim: duration %g s not in (0, 1e7]", w->duration_s);
    if (w->arrivals == KVL_SIM_ARR_BURST && w->n_requests <= 0)
        return kvl_errorf(err, KVL_E_INVALID, "sim: a burst needs a request count (--requests)");
    if (w->prompt_lo < 1 || w->prompt_hi < w->prompt_lo || w->output_lo < 1 ||
        w->output_hi < w->output_lo || w->prompt_hi > KVL_MAX_CTX || w->output_hi > KVL_MAX_CTX)
        return kvl_errorf(err, KVL_E_INVALID,
                          "sim: lengths prompt [%d, %d], output [%d, %d] must be 1 <= lo <= hi "
                          "<= %d",
                          w->prompt_lo, w->prompt_hi, w->output_lo, w->output_hi, KVL_MAX_CTX);
    if (w->turns < 0 || w->turns > 1000 || !(w->think_s >= 0 && w->think_s <= 1e6))
        return kvl_errorf(err, KVL_E_INVALID,
                          "sim: turns %d not in [0, 1000] or think %g s not in [0, 1e6]",
                          (int)w->turns, w->think_s);
    if (w->max_prompt < 4 || w->max_total < 8)
        return kvl_errorf(err, KVL_E_INVALID, "sim: max_prompt %d >= 4 and max_total %d >= 8",
                          w->max_prompt, w->max_total);
    double mean_gap = w->arrivals == KVL_SIM_ARR_BURST ? 0 : 1 / w->rate;
    int64_t cap =
        w->n_requests > 0 ? w->n_requests : (int64_t)(w->duration_s / mean_gap * 1.5) + 1024;
    if (cap > 100000000)
        return kvl_errorf(err, KVL_E_LIMIT, "sim: about %lld requests > 10^8", (long long)cap);
    lognorm2 m = {.max_prompt = w->max_prompt, .max_total = w->max_total};
    if (w->lengths == KVL_SIM_LEN_SHAREGPT) {
        m.sg_p = m.sg_o = 1.0;
        fit(&m, 161, 338);
    } else if (w->lengths == KVL_SIM_LEN_ALPACA) {
        m.sg_p = 0.8;
        m.sg_o = 0.9;
        fit(&m, 19, 58);
    }
    int32_t turns = w->turns > 1 ? w->turns : 1;
    if ((double)cap * turns > 1e8)
        return kvl_errorf(err, KVL_E_LIMIT, "sim: about %lld sessions x %d turns > 10^8 requests",
                          (long long)cap, (int)turns);
    kvl_sim_request *v = malloc((size_t)cap * (size_t)turns * sizeof *v);
    if (!v)
        return kvl_errorf(err, KVL_E_NOMEM, "sim: %lld requests: out of memory",
                          (long long)cap * turns);
    rng ra, rl, rt;
    rng_seed(&ra, w->seed * 2 + 1); /* arrivals and lengths from separate streams, */
    rng_seed(&rl, w->seed * 2 + 2); /* so a rate sweep keeps the same lengths */
    rng_seed(&rt, w->seed * 2 + 3 + ((uint64_t)1 << 40)); /* think times */
    double t = 0, k = 1 / (w->cv * w->cv);
    int64_t n = 0, n_sess = 0;
    for (;;) {
        if (w->arrivals == KVL_SIM_ARR_POISSON)
            t += -log(rng_unit(&ra)) * mean_gap;
        else if (w->arrivals == KVL_SIM_ARR_GAMMA)
            t += rng_gamma(&ra, k) / k * mean_gap;
        if (w->n_requests > 0 ? n_sess >= w->n_requests : (t >= w->duration_s || n_sess >= cap))
            break;
        kvl_sim_request q = {.arrival = t, .next_turn = -1};
        draw_lengths(w, &m, &rl, &q.n_prompt, &q.n_output);
        if (turns > 1) {
            q.key = KVL_SIM_KEY_SESSION | (uint64_t)n_sess;
            q.n_keyed = q.n_prompt + q.n_output;
        }
        v[n++] = q;
        n_sess++;
        for (int32_t j = 1; j < turns; j++) { /* the session's later turns */
            kvl_sim_request *prev = &v[n - 1];
            int32_t msg, ans;
            draw_lengths(w, &m, &rl, &msg, &ans);
            double think = w->think_s > 0 ? -log(rng_unit(&rt)) * w->think_s : 0;
            int64_t np = (int64_t)prev->n_prompt + prev->n_output + msg;
            if (np + ans > w->max_total)
                break;
            prev->next_turn = n;
            v[n++] = (kvl_sim_request){.n_prompt = (int32_t)np,
                                       .n_output = ans,
                                       .key = prev->key,
                                       .n_keyed = (int32_t)np + ans,
                                       .turn = j,
                                       .think_s = think,
                                       .next_turn = -1};
        }
    }
    *out = v;
    *n_out = n;
    return KVL_OK;
}
