/* Tests of the kernels and the thread pool: every fast matmul path against
 * the scalar reference, pool sizes against one thread, storage quantization
 * against hand-computed bytes, half/bfloat16 edge cases, element-wise ops
 * against hand-computed values. */
#include "kernels/kernels.h"
#include "kernels/kernels_impl.h" /* kvl_gemv_q_wide_cols */
#include "kernels/kquant.h"       /* K-quant block layouts */
#include "testutil.h"

#include <float.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- deterministic data ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static float frand(void) { /* uniform in [-1, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

static void *xaligned(size_t n) {
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 64) != 0)
        return NULL;
    return p;
}

/* n bytes that end where an inaccessible page begins: a kernel that reads
 * past the end of the last weight row faults, so the test crashes instead
 * of passing. Released with guard_free. */
typedef struct {
    void *map;
    size_t len;
} guard_map;

static void *guard_alloc(size_t n, guard_map *g) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t body = (n + page - 1) / page * page;
    g->len = body + page;
    g->map = mmap(NULL, g->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (g->map == MAP_FAILED) {
        g->map = NULL;
        return NULL;
    }
    if (mprotect((uint8_t *)g->map + body, page, PROT_NONE) != 0) {
        munmap(g->map, g->len);
        g->map = NULL;
        return NULL;
    }
    return (uint8_t *)g->map + body - n;
}

static void guard_free(guard_map *g) {
    if (g->map)
        munmap(g->map, g->len);
}

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* ---- pool ---- */

typedef struct {
    _Atomic int calls[64];
    _Atomic int bad_nth;
    int expect_nth;
    _Atomic long covered; /* sum over split parts of [0, 1000) */
} pool_probe;

static void probe_fn(void *arg, int ith, int nth) {
    pool_probe *p = arg;
    if (nth != p->expect_nth || ith < 0 || ith >= nth)
        atomic_fetch_add(&p->bad_nth, 1);
    else
        atomic_fetch_add(&p->calls[ith], 1);
    int64_t lo, hi;
    kvl_split(1000, ith, nth, &lo, &hi);
    atomic_fetch_add(&p->covered, (long)(hi - lo));
}

static void test_pool(void) {
    pool_probe pr;
    memset(&pr, 0, sizeof pr);
    pr.expect_nth = 1;
    kvl_pool_run(NULL, probe_fn, &pr);
    CHECK_EQ_INT(pr.calls[0], 1);
    CHECK_EQ_INT(pr.bad_nth, 0);
    CHECK_EQ_INT(kvl_pool_size(NULL), 1);
    kvl_pool_free(NULL);

    for (int n = 1; n <= 3; n++) {
        kvl_pool *pool = NULL;
        kvl_error err;
        CHECK_EQ_INT(kvl_pool_init(n, &pool, &err), KVL_OK);
        if (!pool)
            continue;
        CHECK_EQ_INT(kvl_pool_size(pool), n);
        memset(&pr, 0, sizeof pr);
        pr.expect_nth = n;
        const int runs = 3000;
        for (int r = 0; r < runs; r++)
            kvl_pool_run(pool, probe_fn, &pr);
        for (int i = 0; i < n; i++)
            CHECK_EQ_INT(pr.calls[i], runs);
        CHECK_EQ_INT(pr.bad_nth, 0);
        CHECK_EQ_INT(pr.covered, 1000L * runs);
        /* more items than threads, one item, none: every item exactly once
         * per run, whichever thread takes it */
        const int items[] = {64, 5, 1, 0};
        for (int k = 0; k < 4; k++) {
            memset(&pr, 0, sizeof pr);
            pr.expect_nth = items[k];
            for (int r = 0; r < 500; r++)
                kvl_pool_run_n(pool, items[k], probe_fn, &pr);
            for (int i = 0; i < items[k]; i++)
                CHECK_EQ_INT(pr.calls[i], 500);
            CHECK_EQ_INT(pr.bad_nth, 0);
            CHECK_EQ_INT(pr.covered, items[k] ? 1000L * 500 : 0);
        }
        kvl_pool_free(pool);
    }
    memset(&pr, 0, sizeof pr);
    pr.expect_nth = 3;
    kvl_pool_run_n(NULL, 3, probe_fn, &pr);
    CHECK(pr.calls[0] == 1 && pr.calls[1] == 1 && pr.calls[2] == 1);
    kvl_pool *pool = NULL;
    kvl_error err;
    CHECK_EQ_INT(kvl_pool_init(100000, &pool, &err), KVL_E_LIMIT);
    CHECK(pool == NULL);
    CHECK_CONTAINS(err.msg, "n_threads");

    int64_t lo, hi;
    kvl_split(10, 2, 3, &lo, &hi);
    CHECK_EQ_INT(lo, 7);
    CHECK_EQ_INT(hi, 10);
}

/* ---- sizes and ISA ---- */

static void test_sizes(void) {
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_F32, 3), 12);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_F16, 3), 6);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_BF16, 5), 10);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q8_0, 64), 68);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q4_0, 64), 36);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q8_0, 33), 0);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q4_0, 16), 0);
    CHECK_EQ_INT(kvl_row_bytes((kvl_type)3, 64), 0);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_F32, -1), 0);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_F32, INT64_MAX), 0);
    CHECK_EQ_INT(sizeof(kvl_block_q8_0), 34);
    CHECK_EQ_INT(sizeof(kvl_block_q4_0), 18);
    CHECK_EQ_INT(kvl_matmul_scratch_size(KVL_TYPE_F32, 64, 4), 0);
    CHECK(kvl_matmul_scratch_size(KVL_TYPE_Q8_0, 64, 4) >= 4 * (64 + 2 * 4 + 2 * 4));
    CHECK_EQ_INT(kvl_matmul_scratch_size(KVL_TYPE_Q8_0, INT64_MAX / 2, INT64_MAX / 2), 0);

    kvl_isa hw = kvl_isa_set(KVL_ISA_AVX512);
    CHECK(hw >= KVL_ISA_SCALAR && hw <= KVL_ISA_AVX512);
    CHECK_EQ_INT(kvl_isa_active(), hw);
    CHECK_EQ_INT(kvl_isa_set(KVL_ISA_SCALAR), KVL_ISA_SCALAR);
    CHECK_EQ_INT(kvl_isa_active(), KVL_ISA_SCALAR);
    CHECK(!strcmp(kvl_isa_name(KVL_ISA_AVX2), "avx2"));
    CHECK(!strcmp(kvl_isa_name(KVL_ISA_AVX512), "avx512"));
    CHECK(!strcmp(kvl_isa_name(KVL_ISA_SCALAR), "scalar"));
    kvl_isa_set(hw);
    fprintf(stderr, "test_kernels: CPU ISA level %s\n", kvl_isa_name(hw));
}

/* ---- half precision ---- */

static void test_half(void) {
    const float inf = INFINITY;
    /* fp16 encoding */
    CHECK_EQ_INT(kvl_f32_to_fp16(0.0f), 0x0000);
    CHECK_EQ_INT(kvl_f32_to_fp16(-0.0f), 0x8000);
    CHECK_EQ_INT(kvl_f32_to_fp16(1.0f), 0x3c00);
    CHECK_EQ_INT(kvl_f32_to_fp16(-2.0f), 0xc000);
    CHECK_EQ_INT(kvl_f32_to_fp16(inf), 0x7c00);
    CHECK_EQ_INT(kvl_f32_to_fp16(-inf), 0xfc00);
    CHECK_EQ_INT(kvl_f32_to_fp16(65504.0f), 0x7bff);                 /* max */
    CHECK_EQ_INT(kvl_f32_to_fp16(65519.0f), 0x7bff);                 /* rounds down to max */
    CHECK_EQ_INT(kvl_f32_to_fp16(65520.0f), 0x7c00);                 /* rounds up to inf */
    CHECK_EQ_INT(kvl_f32_to_fp16(ldexpf(1.0f, -24)), 0x0001);        /* smallest subnormal */
    CHECK_EQ_INT(kvl_f32_to_fp16(ldexpf(1.0f, -25)), 0x0000);        /* tie to even: 0 */
    CHECK_EQ_INT(kvl_f32_to_fp16(ldexpf(3.0f, -25)), 0x0002);        /* tie to even: 2 */
    CHECK_EQ_INT(kvl_f32_to_fp16(ldexpf(1023.0f, -24)), 0x03ff);     /* largest subnormal */
    CHECK_EQ_INT(kvl_f32_to_fp16(ldexpf(1.0f, -14)), 0x0400);        /* smallest normal */
    CHECK_EQ_INT(kvl_f32_to_fp16(1.0f + ldexpf(1.0f, -11)), 0x3c00); /* tie to even */
    CHECK_EQ_INT(kvl_f32_to_fp16(1.0f + ldexpf(3.0f, -11)), 0x3c02);
    uint16_t hn = kvl_f32_to_fp16(NAN);
    CHECK((hn & 0x7c00) == 0x7c00 && (hn & 0x03ff) != 0);
    /* fp16 decoding */
    CHECK_EQ_INT(f2u(kvl_fp16_to_f32(0x8000)), 0x80000000u);
    CHECK(kvl_fp16_to_f32(0x7c00) == inf);
    CHECK(kvl_fp16_to_f32(0xfc00) == -inf);
    CHECK(isnan(kvl_fp16_to_f32(0x7e00)));
    CHECK(kvl_fp16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(kvl_fp16_to_f32(0x83ff) == -ldexpf(1023.0f, -24));
    CHECK(kvl_fp16_to_f32(0x7bff) == 65504.0f);
    /* bf16 */
    CHECK_EQ_INT(kvl_f32_to_bf16(0.0f), 0x0000);
    CHECK_EQ_INT(kvl_f32_to_bf16(-0.0f), 0x8000);
    CHECK_EQ_INT(kvl_f32_to_bf16(1.0f), 0x3f80);
    CHECK_EQ_INT(kvl_f32_to_bf16(inf), 0x7f80);
    CHECK_EQ_INT(kvl_f32_to_bf16(-inf), 0xff80);
    CHECK_EQ_INT(kvl_f32_to_bf16(1.0f + ldexpf(1.0f, -8)), 0x3f80); /* tie to even */
    CHECK_EQ_INT(kvl_f32_to_bf16(1.0f + ldexpf(3.0f, -8)), 0x3f82);
    CHECK_EQ_INT(kvl_f32_to_bf16(3.3895313892515355e38f), 0x7f7f); /* max */
    CHECK_EQ_INT(kvl_f32_to_bf16(FLT_MAX), 0x7f80);                /* rounds to inf */
    CHECK_EQ_INT(kvl_f32_to_bf16(ldexpf(1.0f, -133)), 0x0001);     /* subnormal */
    uint16_t bn = kvl_f32_to_bf16(NAN);
    CHECK((bn & 0x7f80) == 0x7f80 && (bn & 0x007f) != 0);
    CHECK(kvl_bf16_to_f32(0x0001) == ldexpf(1.0f, -133));
    /* rows through kvl_quantize_row / kvl_dequantize_row */
    const float vals[8] = {0.0f, -0.0f, inf, -inf, 65504.0f, ldexpf(1.0f, -24), 1.5f, -3.25f};
    uint16_t h[8];
    float back[8];
    kvl_quantize_row(KVL_TYPE_F16, vals, h, 8);
    kvl_dequantize_row(KVL_TYPE_F16, h, back, 8);
    for (int i = 0; i < 8; i++)
        CHECK_EQ_INT(f2u(back[i]), f2u(vals[i]));
    kvl_quantize_row(KVL_TYPE_BF16, vals, h, 8);
    kvl_dequantize_row(KVL_TYPE_BF16, h, back, 8);
    CHECK_EQ_INT(f2u(back[1]), 0x80000000u);
    CHECK(back[2] == inf && back[3] == -inf && back[6] == 1.5f && back[7] == -3.25f);
    CHECK(back[4] == 65536.0f); /* 65504 rounds to 2^16 in bf16 */
}

/* ---- storage quantization, hand-computed blocks ---- */

static void test_quant_blocks(void) {
    /* Q8_0, block 0: amax 127 gives d = 1 exactly, so q = round(x) with
     * ties away from zero; block 1 all zero gives d = 0, q = 0. */
    float x[64] = {127.0f, 2.5f, -2.5f, 0.49f, -0.5f};
    for (int i = 5; i < 32; i++)
        x[i] = (float)(i - 20);
    kvl_block_q8_0 q8[2];
    kvl_quantize_row(KVL_TYPE_Q8_0, x, q8, 64);
    const int8_t want8[32] = {127, 3,  -3, 0,  -1, -15, -14, -13, -12, -11, -10,
                              -9,  -8, -7, -6, -5, -4,  -3,  -2,  -1,  0,   1,
                              2,   3,  4,  5,  6,  7,   8,   9,   10,  11};
    const uint8_t *bytes = (const uint8_t *)q8;
    CHECK_EQ_INT(bytes[0], 0x00); /* d = fp16(1.0) = 0x3c00, little endian */
    CHECK_EQ_INT(bytes[1], 0x3c);
    for (int i = 0; i < 32; i++)
        CHECK_EQ_INT(q8[0].qs[i], want8[i]);
    CHECK_EQ_INT(q8[1].d, 0);
    for (int i = 0; i < 32; i++)
        CHECK_EQ_INT(q8[1].qs[i], 0);
    float y[64];
    kvl_dequantize_row(KVL_TYPE_Q8_0, q8, y, 64);
    CHECK(y[0] == 127.0f && y[1] == 3.0f && y[4] == -1.0f && y[31] == 11.0f && y[40] == 0.0f);

    /* Q8_0 with a scale that fp16 cannot hold: the q use the float d. amax
     * 1: d = 1/127, x = 0.5 -> 63.5 -> 64 (ties away), x = -0.25 -> -31.75
     * -> -32. fp16(1/127) = 0x2008 (0.0078735...). */
    float x1[32] = {1.0f, 0.5f, -0.25f};
    kvl_block_q8_0 q1;
    kvl_quantize_row(KVL_TYPE_Q8_0, x1, &q1, 32);
    CHECK_EQ_INT(q1.d, 0x2008);
    CHECK_EQ_INT(q1.qs[0], 127);
    CHECK_EQ_INT(q1.qs[1], 64);
    CHECK_EQ_INT(q1.qs[2], -32);
    CHECK_EQ_INT(q1.qs[3], 0);

    /* Q4_0: the largest magnitude is -16 (negative), so d = -16 / -8 = 2,
     * id = 0.5, q = min(15, trunc(x/2 + 8.5)). Low nibbles (x[0..15]) and
     * high nibbles (x[16..31] = -8..7) worked out by hand:
     *   lo: 8 9 8 10 7 0 15 15 9 7 11 6 8 8 12 5
     *   hi: 4 5 5 6 6 7 7 8 8 9 9 10 10 11 11 12 */
    const float x4[32] = {0.0f,  1.0f,  -1.0f, 3.0f,  -3.0f, -16.0f, 14.0f, 15.9f,
                          2.0f,  -2.0f, 5.0f,  -5.0f, 0.9f,  -0.9f,  7.0f,  -7.0f,
                          -8.0f, -7.0f, -6.0f, -5.0f, -4.0f, -3.0f,  -2.0f, -1.0f,
                          0.0f,  1.0f,  2.0f,  3.0f,  4.0f,  5.0f,   6.0f,  7.0f};
    const uint8_t want4[16] = {0x48, 0x59, 0x58, 0x6a, 0x67, 0x70, 0x7f, 0x8f,
                               0x89, 0x97, 0x9b, 0xa6, 0xa8, 0xb8, 0xbc, 0xc5};
    kvl_block_q4_0 q4;
    kvl_quantize_row(KVL_TYPE_Q4_0, x4, &q4, 32);
    bytes = (const uint8_t *)&q4;
    CHECK_EQ_INT(bytes[0], 0x00); /* d = fp16(2.0) = 0x4000 */
    CHECK_EQ_INT(bytes[1], 0x40);
    for (int j = 0; j < 16; j++)
        CHECK_EQ_INT(q4.qs[j], want4[j]);
    float y4[32];
    kvl_dequantize_row(KVL_TYPE_Q4_0, &q4, y4, 32);
    CHECK(y4[5] == -16.0f && y4[6] == 14.0f && y4[7] == 14.0f && y4[16] == -8.0f &&
          y4[31] == 8.0f && y4[0] == 0.0f);

    /* Q4_0 with a positive largest magnitude: d = -16 / 8 = -2, so the
     * largest value maps to nibble 0 and -16 to min(15, 16) = 15. */
    float xp[32] = {16.0f, -16.0f, 2.0f};
    kvl_quantize_row(KVL_TYPE_Q4_0, xp, &q4, 32);
    CHECK_EQ_INT(q4.d, 0xc000);
    CHECK_EQ_INT(q4.qs[0] & 0x0f, 0);
    CHECK_EQ_INT(q4.qs[1] & 0x0f, 15);
    CHECK_EQ_INT(q4.qs[2] & 0x0f, 7); /* 2 * -0.5 + 8.5 = 7.5 */
    CHECK_EQ_INT(q4.qs[3] & 0x0f, 8);

    /* Round trips on random rows stay within half a step of the scale. */
    float r[256], back[256];
    for (int i = 0; i < 256; i++)
        r[i] = frand() * 3.0f;
    kvl_block_q8_0 rq8[8];
    kvl_quantize_row(KVL_TYPE_Q8_0, r, rq8, 256);
    kvl_dequantize_row(KVL_TYPE_Q8_0, rq8, back, 256);
    int bad = 0;
    for (int i = 0; i < 256; i++) {
        float d = kvl_fp16_to_f32(rq8[i / 32].d);
        /* error: half a step plus the fp16 rounding of d times |q| <= 127 */
        if (fabsf(back[i] - r[i]) > 0.5f * d + 127.0f * d * ldexpf(1.0f, -11) * 1.01f)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    kvl_block_q4_0 rq4[8];
    kvl_quantize_row(KVL_TYPE_Q4_0, r, rq4, 256);
    kvl_dequantize_row(KVL_TYPE_Q4_0, rq4, back, 256);
    bad = 0;
    for (int i = 0; i < 256; i++) {
        /* a full step: values near -max land on nibble 16, capped at 15 */
        float d = fabsf(kvl_fp16_to_f32(rq4[i / 32].d));
        if (fabsf(back[i] - r[i]) > d + 8.0f * d * ldexpf(1.0f, -11) * 1.01f + 1e-6f)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

/* ---- matmul ---- */

/*
 * Bound for a fast path against kvl_matmul_ref.
 * Float weights: only the summation order differs, |err| <= ~n * 2^-24 *
 * sum|w x| in the worst case and far less in practice; 1e-5 * sum|w x| is
 * the stated ~1e-5 relative target.
 * Q8_0 / Q4_0: the fast paths quantize each block of 32 activations (256
 * for the K-quants) to q = round(x / d), d = amax / 127, so each x moves
 * by at most d / 2 = amax_block / 254; the integer dot products are exact, so
 * |err| <= sum_i |w_i| * amax_block(i) / 254 (+ the float rounding term).
 * The factor 1.01 covers 1/d being rounded.
 */
/* Weight types whose products quantize the activations. */
static bool quant_act(kvl_type t) {
    return t == KVL_TYPE_Q8_0 || t == KVL_TYPE_Q4_0 || kvl_is_q5(t) || kvl_is_kquant(t);
}

static double mm_bound(const float *wrow, const float *x, int64_t n, kvl_type t) {
    const bool q = quant_act(t);
    const int64_t qb = kvl_is_kquant(t) ? 256 : 32; /* values per activation scale */
    double s_abs = 0.0, q_err = 0.0;
    float amax = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        s_abs += fabs((double)wrow[k] * x[k]);
        if (q && k % qb == 0) {
            amax = 0.0f;
            for (int64_t i = k; i < k + qb; i++)
                amax = fmaxf(amax, fabsf(x[i]));
        }
        if (q)
            q_err += fabs((double)wrow[k]) * amax / 254.0;
    }
    return 1.01 * q_err + 1e-5 * s_abs + 1e-30;
}

static int check_mm(const char *what, const float *Y, const float *Yref, const double *bound,
                    int64_t n_rows, int64_t n_tok) {
    int bad = 0;
    for (int64_t tok = 0; tok < n_tok; tok++)
        for (int64_t r = 0; r < n_rows; r++) {
            double e = fabs((double)Y[tok * n_rows + r] - Yref[tok * n_rows + r]);
            double b = bound[tok * n_rows + r];
            if (!(e <= b)) {
                if (bad < 3)
                    fprintf(stderr, "%s: row %lld tok %lld: %.9g vs ref %.9g (bound %.3g)\n", what,
                            (long long)r, (long long)tok, Y[tok * n_rows + r],
                            Yref[tok * n_rows + r], b);
                bad++;
            }
        }
    return bad;
}

/* Pools of 1, 2 and 3 threads (a failed one stays NULL and is skipped). */
static void pools_init(kvl_pool *pools[3]) {
    kvl_error err;
    for (int p = 0; p < 3; p++) {
        pools[p] = NULL;
        CHECK_EQ_INT(kvl_pool_init(p + 1, &pools[p], &err), KVL_OK);
    }
}

#define N_ALL_TYPES 7
static const kvl_type all_types[N_ALL_TYPES] = {KVL_TYPE_F32,  KVL_TYPE_F16,  KVL_TYPE_BF16,
                                                KVL_TYPE_Q8_0, KVL_TYPE_Q4_0, KVL_TYPE_Q5_0,
                                                KVL_TYPE_Q5_1};

static void test_matmul_shape(kvl_pool *pools[3], kvl_type t, int64_t n_rows, int64_t n_cols,
                              int64_t n_tok) {
    const size_t rb = kvl_row_bytes(t, n_cols);
    guard_map wmap = {0};
    uint8_t *W = guard_alloc(rb * (size_t)n_rows, &wmap); /* no reading past the last row */
    float *Wf = malloc(sizeof(float) * (size_t)(n_rows * n_cols));
    float *X = malloc(sizeof(float) * (size_t)(n_tok * n_cols));
    float *Yref = malloc(sizeof(float) * (size_t)(n_tok * n_rows));
    float *Y = malloc(sizeof(float) * (size_t)(n_tok * n_rows));
    float *Y1 = malloc(sizeof(float) * (size_t)(n_tok * n_rows));
    double *bound = malloc(sizeof(double) * (size_t)(n_tok * n_rows));
    size_t ss = kvl_matmul_scratch_size(t, n_cols, n_tok);
    void *scratch = xaligned(ss);
    if (!W || !Wf || !X || !Yref || !Y || !Y1 || !bound || !scratch) {
        CHECK(!"out of memory");
        goto out;
    }
    for (int64_t i = 0; i < n_rows * n_cols; i++)
        Wf[i] = frand();
    for (int64_t r = 0; r < n_rows; r++) {
        kvl_quantize_row(t, Wf + r * n_cols, W + (size_t)r * rb, n_cols);
        kvl_dequantize_row(t, W + (size_t)r * rb, Wf + r * n_cols, n_cols); /* what W holds */
    }
    for (int64_t i = 0; i < n_tok * n_cols; i++)
        X[i] = frand() * (i % 7 == 0 ? 4.0f : 1.0f);
    kvl_matmul_ref(Yref, W, t, n_rows, n_cols, X, n_tok);

    /* the reference against double precision on the same data */
    int bad_ref = 0;
    for (int64_t tok = 0; tok < n_tok; tok++)
        for (int64_t r = 0; r < n_rows; r++) {
            double s = 0.0, sa = 0.0;
            for (int64_t k = 0; k < n_cols; k++) {
                s += (double)Wf[r * n_cols + k] * X[tok * n_cols + k];
                sa += fabs((double)Wf[r * n_cols + k] * X[tok * n_cols + k]);
            }
            if (!(fabs(s - Yref[tok * n_rows + r]) <= 1e-5 * sa + 1e-30))
                bad_ref++;
            bound[tok * n_rows + r] = mm_bound(Wf + r * n_cols, X + tok * n_cols, n_cols, t);
        }
    CHECK_EQ_INT(bad_ref, 0);

    kvl_isa hw = kvl_isa_set(KVL_ISA_AVX512);
    for (int isa = KVL_ISA_SCALAR; isa <= (int)hw; isa++) {
        kvl_isa_set((kvl_isa)isa);
        char what[128];
        snprintf(what, sizeof what, "matmul %s type %d %lldx%lld tok %lld",
                 kvl_isa_name((kvl_isa)isa), (int)t, (long long)n_rows, (long long)n_cols,
                 (long long)n_tok);
        memset(Y1, 0xff, sizeof(float) * (size_t)(n_tok * n_rows));
        kvl_matmul(NULL, Y1, W, t, n_rows, n_cols, X, n_tok, scratch);
        int bad = check_mm(what, Y1, Yref, bound, n_rows, n_tok);
        if (bad)
            fprintf(stderr, "%s: %d outputs out of bound\n", what, bad);
        CHECK_EQ_INT(bad, 0);
        for (int p = 0; p < 3; p++) {
            if (!pools[p])
                continue;
            memset(Y, 0xff, sizeof(float) * (size_t)(n_tok * n_rows));
            kvl_matmul(pools[p], Y, W, t, n_rows, n_cols, X, n_tok, scratch);
            /* same arithmetic per output whatever the split: bit-identical */
            int diff = memcmp(Y, Y1, sizeof(float) * (size_t)(n_tok * n_rows)) != 0;
            if (diff)
                fprintf(stderr, "%s: pool of %d differs from one thread\n", what,
                        kvl_pool_size(pools[p]));
            CHECK_EQ_INT(diff, 0);
        }
    }
    kvl_isa_set(hw);
out:
    guard_free(&wmap);
    free(Wf);
    free(X);
    free(Yref);
    free(Y);
    free(Y1);
    free(bound);
    free(scratch);
}

static void test_matmul(void) {
    kvl_pool *pools[3];
    pools_init(pools);
    const kvl_type *types = all_types;
    /* rows: 1, below a tile, tiles plus a tail; cols: 1, 3 and 8 blocks
     * (odd block counts exercise the AVX-512 single-block tail), 33 and 100
     * for float types (column tails); tokens 1, 3, 17, 64 */
    const int64_t rows[] = {1, 7, 13, 67};
    const int64_t qcols[] = {32, 96, 256};
    const int64_t fcols[] = {1, 33, 100, 256};
    const int64_t toks[] = {1, 3, 17, 64};
    for (int ti = 0; ti < N_ALL_TYPES; ti++) {
        const kvl_type t = types[ti];
        const bool q = quant_act(t);
        const int64_t *cols = q ? qcols : fcols;
        const int n_cols_cases = q ? 3 : 4;
        for (int ri = 0; ri < 4; ri++)
            for (int ci = 0; ci < n_cols_cases; ci++)
                for (int k = 0; k < 4; k++) {
                    if (rows[ri] * cols[ci] * toks[k] > 67 * 256 * 17 && rows[ri] != 67)
                        continue;
                    test_matmul_shape(pools, t, rows[ri], cols[ci], toks[k]);
                }
    }
    /* decode of rows past kvl_gemv_q_wide_cols (AVX-512: compact
     * activation scales): 5632 columns (176 blocks, the TinyLlama FFN down
     * row) and 4128 (129 blocks: a single last block); then every
     * quantized decode shape above once more with the compact loads forced
     * on: the bound, and the same bits as the row-layout loads */
    test_matmul_shape(pools, KVL_TYPE_Q8_0, 37, 5632, 1);
    test_matmul_shape(pools, KVL_TYPE_Q4_0, 37, 5632, 1);
    test_matmul_shape(pools, KVL_TYPE_Q8_0, 21, 4128, 1);
    test_matmul_shape(pools, KVL_TYPE_Q4_0, 21, 4128, 1);
    {
        const int64_t wide_cols[] = {32, 96, 256, 416, 544};
        const kvl_type qt[2] = {KVL_TYPE_Q8_0, KVL_TYPE_Q4_0};
        const int64_t saved = kvl_gemv_q_wide_cols;
        for (int ti = 0; ti < 2; ti++)
            for (size_t ci = 0; ci < sizeof wide_cols / sizeof wide_cols[0]; ci++) {
                const int64_t n = wide_cols[ci], nr = 67;
                const size_t rb = kvl_row_bytes(qt[ti], n);
                uint8_t *W = malloc(rb * (size_t)nr);
                float *row = malloc(sizeof(float) * (size_t)n);
                float *X = malloc(sizeof(float) * (size_t)n);
                float *Ya = malloc(sizeof(float) * (size_t)nr);
                float *Yb = malloc(sizeof(float) * (size_t)nr);
                void *scratch = xaligned(kvl_matmul_scratch_size(qt[ti], n, 1) + 64);
                for (int64_t r = 0; r < nr; r++) {
                    for (int64_t k = 0; k < n; k++)
                        row[k] = frand();
                    kvl_quantize_row(qt[ti], row, W + (size_t)r * rb, n);
                }
                for (int64_t k = 0; k < n; k++)
                    X[k] = frand() * (k % 5 == 0 ? 3.0f : 1.0f);
                kvl_gemv_q_wide_cols = INT64_MAX;
                kvl_matmul(pools[1], Ya, W, qt[ti], nr, n, X, 1, scratch);
                kvl_gemv_q_wide_cols = 0;
                kvl_matmul(pools[1], Yb, W, qt[ti], nr, n, X, 1, scratch);
                CHECK(memcmp(Ya, Yb, sizeof(float) * (size_t)nr) == 0);
                test_matmul_shape(pools, qt[ti], nr, n, 1);
                kvl_gemv_q_wide_cols = saved;
                free(W);
                free(row);
                free(X);
                free(Ya);
                free(Yb);
                free(scratch);
            }
    }
    /* a decode-sized case split over threads: 2 x 1000 rows */
    test_matmul_shape(pools, KVL_TYPE_Q8_0, 2003, 512, 1);
    test_matmul_shape(pools, KVL_TYPE_Q4_0, 2003, 512, 1);
    test_matmul_shape(pools, KVL_TYPE_Q5_0, 2003, 512, 1);
    test_matmul_shape(pools, KVL_TYPE_Q5_1, 2003, 512, 1);
    /* Q5_0 / Q5_1: TinyLlama's decode rows, a 13-block row (AVX-512: an
     * odd last block), a prefill-sized batch */
    for (int t5 = 0; t5 < 2; t5++) {
        const kvl_type t = t5 ? KVL_TYPE_Q5_1 : KVL_TYPE_Q5_0;
        test_matmul_shape(pools, t, 37, 5632, 1);
        test_matmul_shape(pools, t, 37, 416, 1);
        test_matmul_shape(pools, t, 70, 416, 100);
    }
    /* 13 blocks: a full decode step of 8 blocks, two pairs and a single */
    test_matmul_shape(pools, KVL_TYPE_Q8_0, 37, 416, 1);
    test_matmul_shape(pools, KVL_TYPE_Q4_0, 37, 416, 1);
    test_matmul_shape(pools, KVL_TYPE_BF16, 37, 200, 1);
    test_matmul_shape(pools, KVL_TYPE_F16, 515, 515, 2);
    /* decode split into many pool items (256 KiB of weights each) with a
     * partial last item: 8 items of 132 rows (F16), 5 of 68 (F32) */
    test_matmul_shape(pools, KVL_TYPE_F16, 1001, 1000, 1);
    test_matmul_shape(pools, KVL_TYPE_F32, 333, 1000, 1);
    /* decode rows longer than 4096 columns go 8 rows at a time: items of
     * 12 rows (24000-byte rows) end in the middle of an 8-row group, so the
     * bit-identical check across pools compares rows summed in a group with
     * the same rows summed alone; 12013 and 6007 columns end in a full and
     * a masked 16-column step */
    test_matmul_shape(pools, KVL_TYPE_F16, 29, 12013, 1);
    test_matmul_shape(pools, KVL_TYPE_BF16, 29, 12013, 1);
    test_matmul_shape(pools, KVL_TYPE_F32, 45, 6007, 1);
    /* many tokens: more than one 64-token chunk with a tail, rows past
     * the last full tile, 600 columns (several K blocks for a blocked
     * kernel): 70 rows x 600 columns x 100 tokens */
    test_matmul_shape(pools, KVL_TYPE_F16, 70, 600, 100);
    test_matmul_shape(pools, KVL_TYPE_BF16, 70, 600, 100);
    test_matmul_shape(pools, KVL_TYPE_F32, 70, 600, 100);
    for (int p = 0; p < 3; p++)
        kvl_pool_free(pools[p]);
}

/* ---- matmul, small batches (Q8_0 / Q4_0, 2 .. 64 tokens) ----
 *
 * AVX-512 takes these through the small-batch layout: tokens in groups of
 * 4 with a last group of width 1, 2 or 4 (3 tokens, one slot empty), up to
 * 4 groups per pass over a row. The shapes cover each last-group width
 * (n_tok % 4 = 0..3), one pass and several (Q4_0 past 16 tokens; Q8_0
 * takes the token-lane path there), an odd block count (a half-empty last
 * block pair: 13 blocks, 1 block, 3 blocks), odd row counts, and products
 * big enough (n_rows * n_cols * n_tok >= 2^18) for the pools to split them
 * into items, which must give the same bits as one thread. */
static void test_matmul_small_batch(void) {
    kvl_pool *pools[3];
    pools_init(pools);
    const kvl_type types[2] = {KVL_TYPE_Q8_0, KVL_TYPE_Q4_0};
    const int64_t toks[] = {2, 3, 5, 6, 7, 8, 9, 15};
    for (int ti = 0; ti < 2; ti++) {
        for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
            test_matmul_shape(pools, types[ti], 37, 416, toks[k]);
            test_matmul_shape(pools, types[ti], 5, 32, toks[k]);
        }
        test_matmul_shape(pools, types[ti], 1001, 416, 2);
        test_matmul_shape(pools, types[ti], 331, 416, 15);
        test_matmul_shape(pools, types[ti], 203, 2048, 5);
        test_matmul_shape(pools, types[ti], 77, 96, 8);
    }
    /* Q4_0 past one pass: 19 = 4 + a 3-token group (5 groups), 33 = 8 +
     * 1 (9 groups), 64 (16 groups, four full passes) */
    test_matmul_shape(pools, KVL_TYPE_Q4_0, 67, 416, 19);
    test_matmul_shape(pools, KVL_TYPE_Q4_0, 67, 416, 33);
    test_matmul_shape(pools, KVL_TYPE_Q4_0, 67, 96, 64);
    for (int p = 0; p < 3; p++)
        kvl_pool_free(pools[p]);
}

/* ---- grouped products (kvl_matmul_multi) ----
 *
 * Q/K/V- and gate/up-like groups (a large matrix beside small ones, an
 * empty one, sizes that are not multiples of a tile or a pool item) for
 * every type, decode, a small batch and a prefill-sized batch, every ISA
 * and pool: each Y must be bit-identical to kvl_matmul on its matrix
 * alone, which test_matmul checks against the reference. */
static void test_matmul_multi(void) {
    kvl_pool *pools[3];
    pools_init(pools);
    const kvl_type *types = all_types;
    const int64_t groups[3][3] = {{1030, 130, 130}, {701, 0, 33}, {5, 517, 3}};
    const int64_t toks[] = {1, 3, 20};
    const kvl_type kq_types[5] = {KVL_TYPE_Q4_K, KVL_TYPE_Q5_K, KVL_TYPE_Q6_K, KVL_TYPE_Q2_K,
                                  KVL_TYPE_Q3_K};
    for (int ti = 0; ti < N_ALL_TYPES + 5; ti++) {
        const kvl_type t = ti < N_ALL_TYPES ? types[ti] : kq_types[ti - N_ALL_TYPES];
        const int64_t n_cols = kvl_is_kquant(t) ? 768 : 544; /* 3 super-blocks, 17 blocks */
        const size_t rb = kvl_row_bytes(t, n_cols);
        float *row = malloc(sizeof(float) * (size_t)n_cols);
        float *X = malloc(sizeof(float) * (size_t)(20 * n_cols));
        void *scratch = xaligned(kvl_matmul_scratch_size(t, n_cols, 20) + 64);
        uint8_t *W[3];
        float *Ya[3], *Yb[3];
        for (int o = 0; o < 3; o++) {
            W[o] = malloc(rb * 1030);
            Ya[o] = malloc(sizeof(float) * (1030 * 20 + 1));
            Yb[o] = malloc(sizeof(float) * (1030 * 20 + 1));
        }
        for (int o = 0; o < 3; o++)
            for (int64_t r = 0; r < 1030; r++) {
                for (int64_t k = 0; k < n_cols; k++)
                    row[k] = frand();
                kvl_quantize_row(t, row, W[o] + (size_t)r * rb, n_cols);
            }
        for (int64_t i = 0; i < 20 * n_cols; i++)
            X[i] = frand();
        kvl_isa hw = kvl_isa_set(KVL_ISA_AVX512);
        for (int isa = KVL_ISA_SCALAR; isa <= (int)hw; isa++) {
            kvl_isa_set((kvl_isa)isa);
            for (int gi = 0; gi < 3; gi++)
                for (int k = 0; k < 3; k++)
                    for (int p = -1; p < 3; p++) {
                        kvl_pool *pool = p < 0 ? NULL : pools[p];
                        if (p >= 0 && !pool)
                            continue;
                        const int64_t nt = toks[k];
                        kvl_mm_out outs[3];
                        for (int o = 0; o < 3; o++) {
                            const size_t ny = sizeof(float) * (size_t)(groups[gi][o] * nt);
                            memset(Ya[o], 0xff, ny + 4);
                            memset(Yb[o], 0xee, ny + 4);
                            kvl_matmul(pool, Ya[o], W[o], t, groups[gi][o], n_cols, X, nt, scratch);
                            outs[o] = (kvl_mm_out){.Y = Yb[o], .W = W[o], .n_rows = groups[gi][o]};
                        }
                        kvl_matmul_multi(pool, outs, 3, t, n_cols, X, nt, scratch);
                        for (int o = 0; o < 3; o++) {
                            const size_t ny = sizeof(float) * (size_t)(groups[gi][o] * nt);
                            int diff = memcmp(Ya[o], Yb[o], ny) != 0;
                            /* nothing written past the output */
                            uint32_t past;
                            memcpy(&past, (uint8_t *)Yb[o] + ny, 4);
                            if (diff || past != 0xeeeeeeeeu)
                                fprintf(stderr,
                                        "matmul_multi %s type %d group %d out %d tok %lld "
                                        "pool %d: %s\n",
                                        kvl_isa_name((kvl_isa)isa), (int)t, gi, o, (long long)nt,
                                        p + 1, diff ? "differs from kvl_matmul" : "wrote past Y");
                            CHECK_EQ_INT(diff, 0);
                            CHECK_EQ_INT(past, 0xeeeeeeeeu);
                        }
                    }
        }
        kvl_isa_set(hw);
        for (int o = 0; o < 3; o++) {
            free(W[o]);
            free(Ya[o]);
            free(Yb[o]);
        }
        free(row);
        free(X);
        free(scratch);
    }
    for (int p = 0; p < 3; p++)
        kvl_pool_free(pools[p]);
}

/* ---- K-quants (Q2_K, Q4_K, Q5_K, Q6_K) ----
 *
 * Layouts: blocks built by hand (scale packing worked out below) must
 * dequantize to ggml's formulas. Round trips of kvllm's quantizer: random
 * rows within a stated relative RMS error, and adversarial rows (zeros,
 * constants, huge values, NaN and infinities) to finite values. Products:
 * every ISA and pool split against kvl_matmul_ref, as for Q8_0 / Q4_0. */
static void test_kquant_layout(void) {
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q4_K, 512), 288);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q6_K, 512), 420);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q4_K, 32), 0);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q6_K, 300), 0);

    /* Q4_K: scales sc = 1 2 3 4 17 33 49 63, mins m = 5 6 7 8 20 40 60 1.
     * Bytes 0..3: sc[j] | (sc[j+4] >> 4) << 6; 4..7: m[j] | (m[j+4] >> 4)
     * << 6; 8..11: (sc[j+4] & 15) | (m[j+4] & 15) << 4. */
    kvl_block_q4_k b4;
    const uint8_t packed[12] = {0x41, 0x82, 0xc3, 0xc4, 0x45, 0x86,
                                0xc7, 0x08, 0x41, 0x81, 0xc1, 0x1f};
    const uint8_t want_sc[8] = {1, 2, 3, 4, 17, 33, 49, 63},
                  want_m[8] = {5, 6, 7, 8, 20, 40, 60, 1};
    memcpy(b4.scales, packed, 12);
    b4.d = 0x3c00;    /* 1.0 */
    b4.dmin = 0x3800; /* 0.5 */
    for (int j = 0; j < 4; j++)
        for (int l = 0; l < 32; l++)
            b4.qs[32 * j + l] = (uint8_t)((l % 16) | ((15 - l % 16) << 4));
    uint8_t sc[8], m[8];
    kvl_q4k_scales(b4.scales, sc, m);
    for (int j = 0; j < 8; j++) {
        CHECK_EQ_INT(sc[j], want_sc[j]);
        CHECK_EQ_INT(m[j], want_m[j]);
    }
    float y[256];
    kvl_dequantize_row(KVL_TYPE_Q4_K, &b4, y, 256);
    /* value 64 j + 32 h + l: nibble h of qs[32 j + l], sub-block 2 j + h */
    CHECK(y[0] == -2.5f);    /* sb 0: 1 * 0 - 0.5 * 5 */
    CHECK(y[33] == 25.0f);   /* sb 1, l 1, high nibble 14: 2 * 14 - 3 */
    CHECK(y[165] == 310.0f); /* sb 5, l 5, high nibble 10: 33 * 10 - 20 */
    CHECK(y[200] == 362.0f); /* sb 6, l 8, low nibble 8: 49 * 8 - 30 */
    CHECK(y[255] == -0.5f);  /* sb 7, l 31, high nibble 0: 0 - 0.5 */
    int bad = 0;
    for (int v = 0; v < 256; v++) {
        const int j = v / 64, h = (v / 32) % 2, l = v % 32;
        const int q = h ? 15 - l % 16 : l % 16;
        if (y[v] != (float)want_sc[2 * j + h] * (float)q - 0.5f * (float)want_m[2 * j + h])
            bad++;
    }
    CHECK_EQ_INT(bad, 0);

    /* Q5_K: Q4_K's block above plus qh[l] = 37 l (mod 256); bit v / 32 of
     * qh[v % 32] adds 16. v 165 (sb 5, l 5): qh[5] = 185 = 0b10111001, bit
     * 5 set: q = 10 + 16, 33 * 26 - 20 = 838; v 200: qh[8] = 40, bit 6
     * clear: 362 as in Q4_K. */
    kvl_block_q5_k b5;
    b5.d = b4.d;
    b5.dmin = b4.dmin;
    memcpy(b5.scales, b4.scales, 12);
    memcpy(b5.qs, b4.qs, 128);
    for (int l = 0; l < 32; l++)
        b5.qh[l] = (uint8_t)(37 * l);
    kvl_dequantize_row(KVL_TYPE_Q5_K, &b5, y, 256);
    CHECK(y[165] == 838.0f);
    CHECK(y[200] == 362.0f);
    bad = 0;
    for (int v = 0; v < 256; v++) {
        const int j = v / 64, h = (v / 32) % 2, l = v % 32;
        const int q = (h ? 15 - l % 16 : l % 16) + (((37 * l) & 255) >> (v / 32) & 1) * 16;
        if (y[v] != (float)want_sc[2 * j + h] * (float)q - 0.5f * (float)want_m[2 * j + h])
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q5_K, 512), 352);

    /* Q2_K: scales[g] = (g + 1) | (g % 4) << 4 (scale low nibble, min high),
     * qs[i] = 7 i (mod 256), d = 1, dmin = 0.5. Value 128 n + 32 j + 16 h +
     * l is bits 2j of qs[32 n + 16 h + l]. v 150 (n 1, j 0, h 1, l 6):
     * qs[54] = 122, bits 0-1 = 2, sub-block 9: 10 * 2 - 0.5 * 1 = 19.5;
     * v 255: qs[63] = 185, bits 6-7 = 2, sub-block 15: scale 0, min 3. */
    kvl_block_q2_k b2;
    for (int g = 0; g < 16; g++)
        b2.scales[g] = (uint8_t)((g + 1) | ((g % 4) << 4));
    for (int i = 0; i < 64; i++)
        b2.qs[i] = (uint8_t)(7 * i);
    b2.d = 0x3c00;
    b2.dmin = 0x3800;
    kvl_dequantize_row(KVL_TYPE_Q2_K, &b2, y, 256);
    CHECK(y[150] == 19.5f);
    CHECK(y[255] == -1.5f);
    bad = 0;
    for (int v = 0; v < 256; v++) {
        const int n = v / 128, j = (v % 128) / 32, h = (v % 32) / 16, l = v % 16;
        const int q = ((7 * (32 * n + 16 * h + l)) & 255) >> (2 * j) & 3;
        const int g = v / 16, sc2 = (g + 1) & 15, m2 = g % 4;
        if (y[v] != (float)sc2 * (float)q - 0.5f * (float)m2)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q2_K, 512), 168);

    /* Q6_K: ql[i] = i, qh[i] = 3 i, scales[g] = g - 8, d = 0.25. Value
     * 128 h + 32 k + l: low 4 bits from nibble k / 2 of ql[64 h + 32 (k %
     * 2) + l], high 2 bits from bits 2k of qh[32 h + l], scale v / 16. */
    kvl_block_q6_k b6;
    for (int i = 0; i < 128; i++)
        b6.ql[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        b6.qh[i] = (uint8_t)(3 * i);
    for (int g = 0; g < 16; g++)
        b6.scales[g] = (int8_t)(g - 8);
    b6.d = 0x3400; /* 0.25 */
    kvl_dequantize_row(KVL_TYPE_Q6_K, &b6, y, 256);
    /* v 0: ql 0 low 0, qh 0 -> q 0: 0.25 * -8 * -32 = 64 */
    CHECK(y[0] == 64.0f);
    /* v 45 (h 0, k 1, l 13): ql[45] = 0x2d low 13, qh[13] = 39 = 0b100111
     * bits 2-3 = 01 -> q 29: 0.25 * (2 - 8) * (29 - 32) = 4.5 */
    CHECK(y[45] == 4.5f);
    /* v 200 (h 1, k 2, l 8): ql[72] = 0x48 high 4, qh[40] = 120 =
     * 0b01111000 bits 4-5 = 11 -> q 52: 0.25 * (12 - 8) * 20 = 20 */
    CHECK(y[200] == 20.0f);
    bad = 0;
    for (int v = 0; v < 256; v++) {
        const int h = v / 128, k = (v % 128) / 32, l = v % 32;
        const int lo = (b6.ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 15;
        const int hi = (b6.qh[32 * h + l] >> (2 * k)) & 3;
        if (y[v] != 0.25f * (float)(v / 16 - 8) * (float)((lo | hi << 4) - 32))
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
}

/* Q3_K, Q5_0, Q5_1: blocks built by hand against ggml's formulas. */
static void test_q3k_q5_layout(void) {
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q3_K, 512), 220);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q3_K, 300), 0);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q5_0, 64), 44);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q5_1, 64), 48);
    CHECK_EQ_INT(kvl_row_bytes(KVL_TYPE_Q5_0, 48), 0);

    /* Q3_K: 6-bit scales u_i = 4 i + 3 (stored minus 32: 4 i - 29). Low
     * nibbles: bytes 0..7 hold u_k & 15 (low) and u_{k+8} & 15 (high):
     * 0x33 0x77 0xbb 0xff twice; bytes 8..11 hold the top 2 bits of u_m,
     * u_{m+4}, u_{m+8}, u_{m+12} (0, 1, 2, 3) at bits 0, 2, 4, 6: 0xe4.
     * qs[i] = 7 i, hmask[i] = 29 i (mod 256), d = 0.5. */
    kvl_block_q3_k b3;
    const uint8_t packed[12] = {0x33, 0x77, 0xbb, 0xff, 0x33, 0x77,
                                0xbb, 0xff, 0xe4, 0xe4, 0xe4, 0xe4};
    memcpy(b3.scales, packed, 12);
    for (int i = 0; i < 64; i++)
        b3.qs[i] = (uint8_t)(7 * i);
    for (int i = 0; i < 32; i++)
        b3.hmask[i] = (uint8_t)(29 * i);
    b3.d = 0x3800;
    int8_t sc[16];
    kvl_q3k_scales(b3.scales, sc);
    for (int i = 0; i < 16; i++)
        CHECK_EQ_INT(sc[i], 4 * i - 29);
    float y[256];
    kvl_dequantize_row(KVL_TYPE_Q3_K, &b3, y, 256);
    /* v 5: qs[5] = 35 bits 0-1 = 3, hmask[5] = 145 bit 0 set: q - 4 = 3,
     * 0.5 * -29 * 3 */
    CHECK(y[5] == -43.5f);
    /* v 150 (n 1, j 0, h 1, l 6): qs[54] = 122 bits 0-1 = 2, hmask[22] =
     * 126 bit 4 set: 2; sub-block 9: 0.5 * 7 * 2 */
    CHECK(y[150] == 7.0f);
    /* v 255: qs[63] = 185 bits 6-7 = 2, hmask[31] = 131 bit 7 set: 0.5 * 31 * 2 */
    CHECK(y[255] == 31.0f);
    int bad = 0;
    for (int v = 0; v < 256; v++) {
        const int n = v / 128, j = (v % 128) / 32, h = (v % 32) / 16, l = v % 16;
        const int lo = ((7 * (32 * n + 16 * h + l)) & 255) >> (2 * j) & 3;
        const int hb = ((29 * (16 * h + l)) & 255) >> (4 * n + j) & 1;
        if (y[v] != 0.5f * (float)(4 * (v / 16) - 29) * (float)(lo - (hb ? 0 : 4)))
            bad++;
    }
    CHECK_EQ_INT(bad, 0);

    /* Q5_0: d = 2, qh = 0x0f 0xf0 0x55 0x00 (bits 0-3, 12-15, 16, 18, 20,
     * 22), qs[j] = j | (15 - j) << 4: value i < 16 has nibble i, value
     * i >= 16 nibble 31 - i; x = d * (q - 16). */
    kvl_block_q5_0 b50;
    kvl_block_q5_1 b51;
    const uint8_t qh[4] = {0x0f, 0xf0, 0x55, 0x00};
    b50.d = 0x4000;
    b51.d = 0x3800; /* 0.5 */
    b51.m = 0xbc00; /* -1 */
    memcpy(b50.qh, qh, 4);
    memcpy(b51.qh, qh, 4);
    for (int j = 0; j < 16; j++)
        b50.qs[j] = b51.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    float y5[32], y51[32];
    kvl_dequantize_row(KVL_TYPE_Q5_0, &b50, y5, 32);
    kvl_dequantize_row(KVL_TYPE_Q5_1, &b51, y51, 32);
    CHECK(y5[0] == 0.0f && y5[5] == -22.0f && y5[13] == 26.0f);
    CHECK(y5[16] == 30.0f && y5[17] == -4.0f && y5[31] == -32.0f);
    CHECK(y51[16] == 14.5f && y51[31] == -1.0f && y51[13] == 13.5f);
    bad = 0;
    for (int i = 0; i < 32; i++) {
        const uint32_t bits = 0x0055f00fu;
        const int q = (i < 16 ? i : 31 - i) | (int)((bits >> i) & 1) << 4;
        bad += y5[i] != 2.0f * (float)(q - 16);
        bad += y51[i] != 0.5f * (float)q - 1.0f;
    }
    CHECK_EQ_INT(bad, 0);

    /* Q5_0 quantizer: largest magnitude -16 gives d = 1, q = round(x) + 16
     * clamped to 0..31 (15.9 -> 31); stored nibbles and fifth bits. */
    float x[32] = {-16.0f, 15.0f, 0.4f, 0.6f, 15.9f, -3.2f};
    kvl_quantize_row(KVL_TYPE_Q5_0, x, &b50, 32);
    CHECK_EQ_INT(b50.d, 0x3c00);
    const int want[6] = {0, 31, 16, 17, 31, 13};
    for (int i = 0; i < 6; i++)
        CHECK_EQ_INT(kvl_q5_at(b50.qh, b50.qs, i), want[i]);
    CHECK_EQ_INT(kvl_q5_at(b50.qh, b50.qs, 20), 16);
    /* Q5_1: min -16, max 15.9: d = 31.9 / 31, m = -16 */
    kvl_quantize_row(KVL_TYPE_Q5_1, x, &b51, 32);
    CHECK_EQ_INT(b51.m, 0xcc00);
    CHECK_EQ_INT(kvl_q5_at(b51.qh, b51.qs, 0), 0);
    CHECK_EQ_INT(kvl_q5_at(b51.qh, b51.qs, 4), 31);
}

/* sqrt(mean((back - x)^2)) / sqrt(mean(x^2)) over n values */
static double rel_rms(const float *x, const float *back, int n) {
    double e = 0.0, s = 0.0;
    for (int i = 0; i < n; i++) {
        e += ((double)back[i] - x[i]) * ((double)back[i] - x[i]);
        s += (double)x[i] * x[i];
    }
    return s > 0 ? sqrt(e / s) : sqrt(e);
}

static void test_kquant_roundtrip(void) {
    const kvl_type types[7] = {KVL_TYPE_Q4_K, KVL_TYPE_Q5_K, KVL_TYPE_Q6_K, KVL_TYPE_Q2_K,
                               KVL_TYPE_Q3_K, KVL_TYPE_Q5_0, KVL_TYPE_Q5_1};
    /* 4-, 5-, 6-, 2- and 3-bit grids on bell-shaped data: ~0.07, ~0.035,
     * ~0.02, ~0.26, ~0.14; 5-bit per 32: ~0.041, ~0.035 */
    const double max_rms[7] = {0.10, 0.05, 0.03, 0.40, 0.18, 0.05, 0.045};
    enum { N = 1024 };
    static float x[N], back[N];
    static uint8_t q[N];
    for (int ti = 0; ti < 7; ti++) {
        const kvl_type t = types[ti];
        for (int i = 0; i < N; i++)
            x[i] = (frand() + frand() + frand()) * (i < 512 ? 0.02f : 3.0f);
        kvl_quantize_row(t, x, q, N);
        kvl_dequantize_row(t, q, back, N);
        const double e = rel_rms(x, back, N);
        if (!(e <= max_rms[ti]))
            fprintf(stderr, "kquant round trip type %d: rel rms %.4f > %.2f\n", (int)t, e,
                    max_rms[ti]);
        CHECK(e <= max_rms[ti]);
        /* the other half of the row does not leak into the first */
        CHECK(rel_rms(x, back, 256) <= max_rms[ti]);

        /* zeros stay exactly zero */
        for (int i = 0; i < 256; i++)
            x[i] = 0.0f;
        kvl_quantize_row(t, x, q, 256);
        kvl_dequantize_row(t, q, back, 256);
        {
            int bad = 0;
            for (int i = 0; i < 256; i++)
                bad += back[i] != 0.0f;
            CHECK_EQ_INT(bad, 0);
        }
        /* constants: positive, negative, and a one-hot block */
        const float consts[3] = {0.75f, -1.5f, 0.0f};
        for (int c = 0; c < 3; c++) {
            for (int i = 0; i < 256; i++)
                x[i] = consts[c];
            if (c == 2)
                x[77] = 5.0f;
            kvl_quantize_row(t, x, q, 256);
            kvl_dequantize_row(t, q, back, 256);
            int bad = 0;
            for (int i = 0; i < 256; i++)
                bad += !(fabsf(back[i] - x[i]) <= 0.01f * fabsf(x[i]) + 1e-6f);
            if (bad)
                fprintf(stderr, "kquant type %d constant %d: %d values off (e.g. %g for %g)\n",
                        (int)t, c, bad, back[1], x[1]);
            CHECK_EQ_INT(bad, 0);
        }
        /* huge values, NaN and infinities: defined, finite output */
        for (int i = 0; i < 256; i++)
            x[i] = frand() * 1e30f;
        x[3] = NAN;
        x[4] = INFINITY;
        x[5] = -INFINITY;
        x[6] = FLT_MAX;
        kvl_quantize_row(t, x, q, 256);
        kvl_dequantize_row(t, q, back, 256);
        int bad = 0;
        for (int i = 0; i < 256; i++)
            bad += !isfinite(back[i]);
        CHECK_EQ_INT(bad, 0);
    }
}

static void test_matmul_kquant(void) {
    kvl_pool *pools[3];
    pools_init(pools);
    const kvl_type types[5] = {KVL_TYPE_Q4_K, KVL_TYPE_Q5_K, KVL_TYPE_Q6_K, KVL_TYPE_Q2_K,
                               KVL_TYPE_Q3_K};
    /* rows: 1, below a tile (4 in decode, 2 otherwise), tails; columns: 1,
     * 2 and 3 super-blocks; tokens: decode, each tile width, more than a
     * 64-token chunk */
    const int64_t rows[] = {1, 3, 7, 67};
    const int64_t cols[] = {256, 512, 768};
    const int64_t toks[] = {1, 2, 3, 4, 5, 17, 70};
    for (int ti = 0; ti < 5; ti++) {
        for (size_t ri = 0; ri < sizeof rows / sizeof rows[0]; ri++)
            for (size_t ci = 0; ci < sizeof cols / sizeof cols[0]; ci++)
                for (size_t k = 0; k < sizeof toks / sizeof toks[0]; k++) {
                    if (rows[ri] * cols[ci] * toks[k] > 67 * 256 * 17 && rows[ri] != 67)
                        continue;
                    test_matmul_shape(pools, types[ti], rows[ri], cols[ci], toks[k]);
                }
        /* TinyLlama's decode rows (2048 and 5632 columns) split into pool
         * items, and a prefill-sized batch */
        test_matmul_shape(pools, types[ti], 1001, 2048, 1);
        test_matmul_shape(pools, types[ti], 37, 5632, 1);
        test_matmul_shape(pools, types[ti], 130, 2048, 9);
    }
    for (int p = 0; p < 3; p++)
        kvl_pool_free(pools[p]);
}

/* ---- element-wise ---- */

static void test_rope(void) {
    /* head_dim 4, rot_dim 4, pos 3, base 10000: pair 0 turns by 3 rad,
     * pair 1 by 3 * 10000^(-2/4) = 0.03 rad.
     *   cos 3 = -0.98999250, sin 3 = 0.14112001
     *   cos .03 = 0.99955003, sin .03 = 0.02999550
     * head 0 (1 2 3 4):
     *   1 cos3 - 2 sin3 = -1.27223252   1 sin3 + 2 cos3 = -1.83886499
     *   3 cos.03 - 4 sin.03 = 2.87866810   3 sin.03 + 4 cos.03 = 4.08818664 */
    float x[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    kvl_rope(x, 2, 4, 4, 3, 10000.0f);
    CHECK_NEAR(x[0], -1.27223252, 1e-5);
    CHECK_NEAR(x[1], -1.83886499, 1e-5);
    CHECK_NEAR(x[2], 2.87866810, 1e-5);
    CHECK_NEAR(x[3], 4.08818664, 1e-5);
    /* head 1 (5 6 7 8): 5 cos3 - 6 sin3 = -5.79668253, 5 sin3 + 6 cos3 = -5.23435495 */
    CHECK_NEAR(x[4], -5.79668253, 1e-5);
    CHECK_NEAR(x[5], -5.23435495, 1e-5);
    /* partial rotation: head_dim 6, rot_dim 4 leaves x[4], x[5] alone and
     * uses rot_dim for the frequencies */
    float y[6] = {1, 2, 3, 4, 5, 6};
    kvl_rope(y, 1, 6, 4, 3, 10000.0f);
    CHECK_NEAR(y[2], 2.87866810, 1e-5);
    CHECK(y[4] == 5.0f && y[5] == 6.0f);
    /* pos 0 is the identity */
    float z[4] = {1, 2, 3, 4};
    kvl_rope(z, 1, 4, 4, 0, 10000.0f);
    CHECK(z[0] == 1.0f && z[1] == 2.0f && z[2] == 3.0f && z[3] == 4.0f);
}

static void test_elementwise(void) {
    /* softmax of large values: no overflow, matches the shifted values */
    float s[3] = {1000.0f, 1001.0f, 1002.0f};
    kvl_softmax(s, 3);
    double den = 1.0 + exp(-1.0) + exp(-2.0);
    CHECK_NEAR(s[0], exp(-2.0) / den, 1e-6);
    CHECK_NEAR(s[1], exp(-1.0) / den, 1e-6);
    CHECK_NEAR(s[2], 1.0 / den, 1e-6);
    float s2[4] = {-1e30f, 0.0f, 3e38f, 3e38f};
    kvl_softmax(s2, 4);
    CHECK(s2[0] == 0.0f && s2[1] == 0.0f);
    CHECK_NEAR(s2[2], 0.5, 1e-7);
    float s1[1] = {-5.0f};
    kvl_softmax(s1, 1);
    CHECK(s1[0] == 1.0f);

    /* swiglu: silu(x) * up */
    float g[4] = {0.0f, 1.0f, -2.0f, -200.0f};
    const float u[4] = {3.0f, 2.0f, 1.0f, 1.0f};
    kvl_swiglu(g, u, 4);
    CHECK(g[0] == 0.0f);
    CHECK_NEAR(g[1], 2.0 / (1.0 + exp(-1.0)), 1e-6);
    CHECK_NEAR(g[2], -2.0 / (1.0 + exp(2.0)), 1e-6);
    CHECK(g[3] == 0.0f && !isnan(g[3]));

    /* rmsnorm: x = (3, 4), mean square 12.5 */
    float x[2] = {3.0f, 4.0f};
    const float w[2] = {1.0f, 2.0f};
    float o[2];
    kvl_rmsnorm(o, x, w, 2, 1e-5f);
    CHECK_NEAR(o[0], 3.0 / sqrt(12.5 + 1e-5), 1e-6);
    CHECK_NEAR(o[1], 8.0 / sqrt(12.5 + 1e-5), 1e-6);
    kvl_rmsnorm(x, x, w, 2, 1e-5f); /* in place */
    CHECK(x[0] == o[0] && x[1] == o[1]);

    /* dot and axpy on odd lengths at every ISA level */
    float a[301], b[301], y0[301], y1[301];
    for (int i = 0; i < 301; i++) {
        a[i] = frand();
        b[i] = frand();
        y0[i] = frand();
    }
    kvl_isa hw = kvl_isa_set(KVL_ISA_AVX512);
    const int ns[] = {0, 1, 7, 15, 16, 17, 31, 33, 301};
    for (int isa = KVL_ISA_SCALAR; isa <= (int)hw; isa++) {
        kvl_isa_set((kvl_isa)isa);
        for (size_t k = 0; k < sizeof ns / sizeof ns[0]; k++) {
            const int n = ns[k];
            double ref = 0.0, sa = 0.0;
            for (int i = 0; i < n; i++) {
                ref += (double)a[i] * b[i];
                sa += fabs((double)a[i] * b[i]);
            }
            CHECK_NEAR(kvl_dot_f32(a, b, n), ref, 1e-6 * sa + 1e-30);
            memcpy(y1, y0, sizeof y1);
            kvl_axpy_f32(y1, 0.75f, a, n);
            int bad = 0;
            for (int i = 0; i < 301; i++) {
                double want = i < n ? y0[i] + 0.75 * a[i] : y0[i];
                if (fabs(y1[i] - want) > 1e-6)
                    bad++;
            }
            CHECK_EQ_INT(bad, 0);
        }
    }
    kvl_isa_set(hw);
}

/* The softmax exp: every ISA against expf, within 3 ulp-ish (4e-7
 * relative); sums within float rounding of the reference's; NaN stays NaN,
 * -inf and very negative arguments give 0, lengths around the 16-lane tail. */
static void test_exp_shift_sum(void) {
    kvl_isa top = kvl_isa_set(KVL_ISA_AVX512);
    for (int lvl = KVL_ISA_SCALAR; lvl <= (int)top; lvl++) {
        kvl_isa_set((kvl_isa)lvl);
        for (int n = 1; n <= 70; n++) {
            float x[70], ref[70];
            uint64_t st = 0x1234u + (uint64_t)n;
            for (int i = 0; i < n; i++) {
                st = st * 6364136223846793005ULL + 1442695040888963407ULL;
                x[i] = -60.0f * (float)((st >> 40) & 0xffffff) / 16777216.0f + 3.0f;
            }
            float shift = 2.5f, sref = 0.0f;
            for (int i = 0; i < n; i++) {
                ref[i] = expf(x[i] - shift);
                sref += ref[i];
            }
            float sum = kvl_exp_shift_sum(x, n, shift);
            double worst = 0;
            for (int i = 0; i < n; i++) {
                double rel = fabs((double)x[i] - ref[i]) / (ref[i] > 1e-30f ? ref[i] : 1e-30);
                if (ref[i] > 1e-30f && rel > worst)
                    worst = rel;
            }
            CHECK(worst < 4e-7);
            CHECK_NEAR(sum, sref, 1e-6 * sref + 1e-30);
        }
        float sp[5] = {NAN, -INFINITY, -200.0f, 0.0f, -1e30f};
        float s = kvl_exp_shift_sum(sp, 5, 0.0f);
        CHECK(isnan(sp[0]));
        CHECK(sp[1] == 0.0f && sp[2] == 0.0f && sp[4] == 0.0f);
        CHECK(sp[3] == 1.0f);
        CHECK(isnan(s));
    }
    kvl_isa_set(top);
}

int main(int argc, char **argv) {
    /* `test_kernels quant`: only the storage round trips and layouts (the
     * adversarial rows of every quantizer; quick under a sanitizer) */
    if (argc > 1 && !strcmp(argv[1], "quant")) {
        test_quant_blocks();
        test_kquant_layout();
        test_q3k_q5_layout();
        test_kquant_roundtrip();
        return kvt_finish("test_kernels quant");
    }
    /* KVL_ISA caps the level picked on first use (run with KVL_ISA=scalar
     * or avx2 to see it); kvl_isa_set below overrides it */
    const char *env = getenv("KVL_ISA");
    const kvl_isa first = kvl_isa_active();
    if (env && !strcmp(env, "scalar"))
        CHECK_EQ_INT(first, KVL_ISA_SCALAR);
    if (env && !strcmp(env, "avx2"))
        CHECK(first <= KVL_ISA_AVX2);
    test_pool();
    test_sizes();
    test_half();
    test_quant_blocks();
    test_rope();
    test_elementwise();
    test_exp_shift_sum();
    test_matmul();
    test_matmul_small_batch();
    test_matmul_multi();
    test_kquant_layout();
    test_q3k_q5_layout();
    test_kquant_roundtrip();
    test_matmul_kquant();
    return kvt_finish("test_kernels");
}
