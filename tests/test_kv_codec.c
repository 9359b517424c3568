/*
 * The KV codecs and fused attention kernels, format by format:
 *   - chunk sizes equal the planner's table for every format, role, odd sizes;
 *   - round trip within kvl_kv_codec_bound (half a step of the format's grid
 *     plus the scale's rounding) on random data and on adversarial groups:
 *     zeros, constants, 1e30, FLT_MAX, denormals; NaN/inf give NaN groups;
 *   - the AVX2 and AVX-512 kernels against the scalar reference (I8 keys:
 *     bit for bit), and a row's score independent of the rows in its call;
 *   - prep_q (the int8 query of I8 keys) on zeros, huge, tiny, NaN, inf;
 *   - kvl_kv_attend_q against double-precision attention over the decoded
 *     values (so every format is within its codec bound of f32 attention
 *     plus this kernel error), including huge magnitudes and NaN.
 */
#include "kernels/kernels.h"
#include "kv/kv_attn.h"
#include "kv/kv_codec.h"
#include "plan/planner.h"

#include "testutil.h"

#include <float.h>
#include <stdlib.h>

static uint64_t g_rng = 88172645463325252ull;
static double urand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (double)(g_rng >> 11) / 9007199254740992.0;
}
static float nrand(void) { return (float)((urand() + urand() + urand() - 1.5) * 2.0); }

static const kvl_kv_format k_all[KVL_KV_FMT_COUNT] = {
    KVL_KV_FMT_F32,      KVL_KV_FMT_F16,  KVL_KV_FMT_BF16, KVL_KV_FMT_FP8_E4M3,
    KVL_KV_FMT_FP8_E5M2, KVL_KV_FMT_INT8, KVL_KV_FMT_INT4};

static void test_sizes(void) {
    const int32_t hds[] = {1, 3, 8, 64, 128, 1024};
    const int32_t bss[] = {1, 5, 16, 64, 4096};
    for (int f = 0; f < KVL_KV_FMT_COUNT; f++)
        for (int r = 0; r < 2; r++)
            for (size_t i = 0; i < sizeof hds / sizeof hds[0]; i++)
                for (size_t j = 0; j < sizeof bss / sizeof bss[0]; j++) {
                    size_t want = 0;
                    CHECK_EQ_INT(kvl_plan_kv_head_block_bytes(k_all[f], (kvl_kv_role)r, hds[i],
                                                              bss[j], &want, NULL),
                                 KVL_OK);
                    kvl_kvq_codec c = kvl_kv_codec_for(k_all[f], (kvl_kv_role)r);
                    CHECK_EQ_INT(kvl_kvq_chunk_bytes(c, bss[j], hds[i]), want);
                }
}

/* Encode n rows (block or row path), decode, check each element's bound.
 * Groups: fp8 the block; i8/i4t a row; i4c a channel. */
static int check_roundtrip(kvl_kvq_codec c, int32_t bs, int32_t hd, const float *x, int32_t n,
                           bool by_row) {
    size_t cb = kvl_kvq_chunk_bytes(c, bs, hd);
    uint8_t *chunk = malloc(cb);
    float *row = malloc((size_t)hd * sizeof(float));
    memset(chunk, 0xa5, cb);
    if (by_row) {
        memset(chunk, 0, cb);
        for (int32_t r = 0; r < n; r++)
            kvl_kv_encode_row(c, chunk, bs, hd, r, x + (size_t)r * hd);
    } else {
        kvl_kv_encode_block(c, chunk, bs, hd, x, n);
    }
    int bad = 0;
    for (int32_t r = 0; r < n; r++) {
        kvl_kvq_decode_row(c, chunk, bs, hd, r, row);
        for (int32_t d = 0; d < hd; d++) {
            double lo = INFINITY, hi = -INFINITY;
            bool nonfinite = false;
            int32_t a0 = 0, a1 = n, b0 = 0, b1 = hd; /* group rows, cols */
            if (c == KVL_KVQ_I8 || c == KVL_KVQ_I4T) {
                a0 = r;
                a1 = r + 1;
            } else if (c == KVL_KVQ_I4C) {
                b0 = d;
                b1 = d + 1;
            } else if (c == KVL_KVQ_F32 || c == KVL_KVQ_F16 || c == KVL_KVQ_BF16) {
                a0 = r, a1 = r + 1, b0 = d, b1 = d + 1;
            }
            for (int32_t a = a0; a < a1; a++)
                for (int32_t b = b0; b < b1; b++) {
                    float v = x[(size_t)a * hd + b];
                    if (!isfinite(v)) {
                        nonfinite = true;
                        continue;
                    }
                    lo = v < lo ? v : lo;
                    hi = v > hi ? v : hi;
                }
            float xv = x[(size_t)r * hd + d], y = row[d];
            bool ok;
            if (c == KVL_KVQ_F32 || c == KVL_KVQ_F16 || c == KVL_KVQ_BF16) {
                ok = isnan(xv)   ? isnan(y)
                     : isinf(xv) ? y == xv
                                 : fabs((double)y - xv) <= kvl_kv_codec_bound(c, xv, xv, xv);
            } else if (nonfinite) {
                ok = isnan(y);
            } else {
                ok = isfinite(y) && fabs((double)y - xv) <= kvl_kv_codec_bound(c, lo, hi, xv);
            }
            if (!ok && bad++ < 3)
                fprintf(stderr, "  %s bs %d hd %d row %d col %d: x %.9g -> %.9g (bound %.3g)\n",
                        kvl_kvq_codec_name(c), bs, hd, r, d, xv, y,
                        kvl_kv_codec_bound(c, lo, hi, xv));
        }
    }
    free(chunk);
    free(row);
    return bad;
}

static void fill(float *x, size_t n, int kind) {
    for (size_t i = 0; i < n; i++) {
        switch (kind) {
        case 0: x[i] = nrand(); break;         /* ordinary */
        case 1: x[i] = 0.0f; break;            /* zeros */
        case 2: x[i] = 3.25f; break;           /* constant, exact in bf16 */
        case 3: x[i] = -1234.567f; break;      /* constant, not exact */
        case 4: x[i] = nrand() * 1e30f; break; /* huge */
        case 5: x[i] = (i % 3 == 0) ? FLT_MAX : -FLT_MAX * (float)urand(); break;
        case 6: x[i] = nrand() * 1e-40f; break;                      /* denormals */
        case 7: x[i] = nrand() * (i % 7 == 0 ? 40.0f : 0.5f); break; /* outlier channels */
        case 8: x[i] = (float)((i % 5) - 2) * FLT_TRUE_MIN; break;   /* smallest denormals */
        }
    }
}

static void test_roundtrip(void) {
    const int32_t shapes[][3] = {{16, 64, 16}, {64, 64, 64}, {5, 3, 4}, {16, 8, 1}, {32, 128, 32}};
    for (int c = 0; c < KVL_KVQ_COUNT; c++)
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int kind = 0; kind <= 8; kind++) {
                int32_t bs = shapes[s][0], hd = shapes[s][1], n = shapes[s][2];
                float *x = malloc((size_t)n * hd * sizeof(float));
                fill(x, (size_t)n * hd, kind);
                int bad = check_roundtrip((kvl_kvq_codec)c, bs, hd, x, n, false);
                if (!kvl_kv_codec_deferred((kvl_kvq_codec)c))
                    bad += check_roundtrip((kvl_kvq_codec)c, bs, hd, x, n, true);
                if (bad)
                    fprintf(stderr, "roundtrip %s kind %d shape %zu: %d bad\n",
                            kvl_kvq_codec_name((kvl_kvq_codec)c), kind, s, bad);
                CHECK_EQ_INT(bad, 0);
                free(x);
            }
    /* zeros decode exactly in every scaled format; a constant that bf16
     * holds decodes exactly in int4 (it becomes the zero point) */
    for (int c = KVL_KVQ_E4M3; c < KVL_KVQ_COUNT; c++) {
        float x[16 * 8];
        fill(x, 16 * 8, 2);
        uint8_t chunk[1024];
        float row[8];
        kvl_kv_encode_block((kvl_kvq_codec)c, chunk, 16, 8, x, 16);
        kvl_kvq_decode_row((kvl_kvq_codec)c, chunk, 16, 8, 7, row);
        for (int d = 0; d < 8; d++)
            CHECK(row[d] == 3.25f || (c != KVL_KVQ_I4C && c != KVL_KVQ_I4T));
        fill(x, 16 * 8, 1);
        kvl_kv_encode_block((kvl_kvq_codec)c, chunk, 16, 8, x, 16);
        kvl_kvq_decode_row((kvl_kvq_codec)c, chunk, 16, 8, 3, row);
        for (int d = 0; d < 8; d++)
            CHECK(row[d] == 0.0f);
    }
}

/* NaN and inf: the group becomes NaN, others stay exact within bound. */
static void test_nonfinite(void) {
    const int32_t bs = 16, hd = 16;
    float x[16 * 16];
    for (int c = 0; c < KVL_KVQ_COUNT; c++) {
        for (int which = 0; which < 2; which++) {
            fill(x, (size_t)bs * hd, 0);
            x[5 * hd + 3] = which ? INFINITY : NAN;
            CHECK_EQ_INT(check_roundtrip((kvl_kvq_codec)c, bs, hd, x, bs, false), 0);
            if (!kvl_kv_codec_deferred((kvl_kvq_codec)c))
                CHECK_EQ_INT(check_roundtrip((kvl_kvq_codec)c, bs, hd, x, bs, true), 0);
        }
    }
}

/* ---- kernels: fast path against the reference -------------------------- */

static void rand_chunk(kvl_kvq_codec c, int32_t bs, int32_t hd, uint8_t *chunk) {
    float *x = malloc((size_t)bs * hd * sizeof(float));
    fill(x, (size_t)bs * hd, 7);
    kvl_kv_encode_block(c, chunk, bs, hd, x, bs);
    free(x);
}

static void test_kernels_isa(kvl_isa isa) {
    if (kvl_isa_set(isa) != isa)
        return;
    const int32_t hds[] = {8, 16, 64, 128, 24};
    const int32_t nqs[] = {1, 2, 3, 4, 5, 8, 11, 16};
    for (int c = 0; c < KVL_KVQ_COUNT; c++)
        for (size_t a = 0; a < sizeof hds / sizeof hds[0]; a++) {
            const int32_t hd = hds[a], bs = 16;
            uint8_t *chunk = malloc(kvl_kvq_chunk_bytes((kvl_kvq_codec)c, bs, hd));
            rand_chunk((kvl_kvq_codec)c, bs, hd, chunk);
            kvl_kvq_ops ref = kvl_kvq_ops_ref((kvl_kvq_codec)c);
            kvl_kvq_ops fast = kvl_kvq_ops_get((kvl_kvq_codec)c, hd);
            CHECK(fast.prep_q == ref.prep_q);
            for (size_t b = 0; b < sizeof nqs / sizeof nqs[0]; b++) {
                const int32_t nq = nqs[b];
                float q[16 * 128], W[16 * 16], S0[16 * 16], S1[16 * 16];
                float A0[16 * 128], A1[16 * 128];
                _Alignas(64) uint8_t qp[KVL_KVQ_QP_BYTES(16, 128)];
                for (int i = 0; i < nq * hd; i++)
                    q[i] = nrand();
                for (int i = 0; i < 16 * 16; i++)
                    W[i] = (float)urand();
                for (int i = 0; i < nq * hd; i++)
                    A0[i] = A1[i] = nrand();
                const void *qq = q;
                if (ref.prep_q) {
                    ref.prep_q(q, nq, hd, qp);
                    qq = qp;
                }
                /* rows 3..14 in one call, and as 3..5 + 5..14 (a row's score
                 * must not depend on the rows beside it in the call) */
                float S2[16 * 16];
                ref.scores(chunk, bs, hd, 3, 14, qq, nq, S0, 16);
                fast.scores(chunk, bs, hd, 3, 14, qq, nq, S1, 16);
                fast.scores(chunk, bs, hd, 3, 5, qq, nq, S2, 16);
                fast.scores(chunk, bs, hd, 5, 14, qq, nq, S2 + 2, 16);
                ref.accum(chunk, bs, hd, 2, 16, W, 16, nq, A0);
                fast.accum(chunk, bs, hd, 2, 16, W, 16, nq, A1);
                int bad = 0;
                for (int g = 0; g < nq; g++)
                    for (int i = 0; i < 11; i++) {
                        float s0 = S0[g * 16 + i], s1 = S1[g * 16 + i];
                        bad += memcmp(&S1[g * 16 + i], &S2[g * 16 + i], 4) != 0;
                        if (ref.prep_q) /* integer dot products: the same bits */
                            bad += memcmp(&s0, &s1, 4) != 0;
                        else
                            bad += !(fabsf(s0 - s1) <= 1e-4f * (1.0f + fabsf(s0)) * (float)hd);
                    }
                for (int i = 0; i < nq * hd; i++)
                    bad += !(fabsf(A0[i] - A1[i]) <= 1e-5f * (1.0f + fabsf(A0[i])) * 16);
                if (bad)
                    fprintf(stderr, "kernels %s %s hd %d nq %d: %d mismatches\n", kvl_isa_name(isa),
                            kvl_kvq_codec_name((kvl_kvq_codec)c), hd, nq, bad);
                CHECK_EQ_INT(bad, 0);
            }
            free(chunk);
        }
}

/* ---- the prepared query (I8 keys) ---------------------------------------- */

/* The query the K format reads, as floats (kv_kern.h): for I8 keys each
 * head quantized to 127 steps of its max |q|; others q itself. Written
 * here from the formula, not by calling prep_q. */
static void q_as_read(kvl_kvq_codec kc, const float *q, int32_t n_q, int32_t hd, float *out) {
    for (int32_t g = 0; g < n_q; g++) {
        const float *qg = q + (size_t)g * hd;
        float *og = out + (size_t)g * hd;
        if (kc != KVL_KVQ_I8) {
            memcpy(og, qg, (size_t)hd * sizeof(float));
            continue;
        }
        double a = 0;
        bool finite = true;
        for (int32_t d = 0; d < hd; d++) {
            finite = finite && isfinite(qg[d]);
            a = fmax(a, fabs((double)qg[d]));
        }
        for (int32_t d = 0; d < hd; d++) {
            if (!finite) {
                og[d] = NAN;
            } else if (a < 1e-36) {
                og[d] = 0.0f;
            } else {
                const double t = qg[d] * (127.0f / (float)a), h = rint(t);
                og[d] = (float)((h + rint((t - h) * 254.0) / 254.0) * (a / 127.0));
            }
        }
    }
}

/* prep_q on adversarial queries, the prepared bytes checked field by field,
 * and the scores of every path bit-identical to the reference's. */
static void test_prep_q(void) {
    const int32_t hd = 64, bs = 16, nq = 8;
    kvl_kvq_ops ref = kvl_kvq_ops_ref(KVL_KVQ_I8);
    CHECK(ref.prep_q != NULL);
    for (int c = 0; c < KVL_KVQ_COUNT; c++)
        CHECK((kvl_kvq_ops_ref((kvl_kvq_codec)c).prep_q != NULL) == (c == KVL_KVQ_I8));
    uint8_t chunk[16 * 64 + 32];
    rand_chunk(KVL_KVQ_I8, bs, hd, chunk);
    for (int kind = 0; kind < 9; kind++) {
        float q[8 * 64];
        for (int i = 0; i < nq * hd; i++) {
            switch (kind) {
            case 0: q[i] = nrand(); break;
            case 1: q[i] = 0.0f; break;                                      /* all zero */
            case 2: q[i] = nrand() * 1e30f; break;                           /* huge */
            case 3: q[i] = (i % 5 == 0) ? FLT_MAX : -FLT_MAX; break;         /* the largest */
            case 4: q[i] = nrand() * 1e-38f; break;                          /* below 1e-36: zero */
            case 5: q[i] = nrand() * 1e-30f; break;                          /* tiny, kept */
            case 6: q[i] = (i == 70) ? NAN : nrand(); break;                 /* NaN in head 1 */
            case 7: q[i] = (i == 200) ? -INFINITY : nrand(); break;          /* inf in head 3 */
            case 8: q[i] = (i % 64 == 5) ? 1000.0f : nrand() * 1e-3f; break; /* one outlier */
            }
        }
        _Alignas(64) uint8_t qp[KVL_KVQ_QP_BYTES(8, 64)];
        memset(qp, 0xa5, sizeof qp);
        ref.prep_q(q, nq, hd, qp);
        float qe[8 * 64];
        q_as_read(KVL_KVQ_I8, q, nq, hd, qe);
        int bad = 0;
        for (int32_t g = 0; g < nq; g++) {
            float sq;
            int32_t sum_h, sum_l, sh = 0, sl = 0;
            memcpy(&sq, qp + 4 * g, 4);
            memcpy(&sum_h, qp + 4 * nq + 4 * g, 4);
            memcpy(&sum_l, qp + 8 * nq + 4 * g, 4);
            const int8_t *hg = (const int8_t *)qp + 12 * nq + g * hd;
            const int8_t *lg = hg + nq * hd;
            for (int32_t d = 0; d < hd; d++) {
                sh += hg[d];
                sl += lg[d];
                bad += hg[d] < -127 || lg[d] < -127;
                const double v = ((double)hg[d] + lg[d] / 254.0) * sq, want = qe[g * hd + d];
                /* the test's q and this differ only in float roundings */
                bad += isnan(want) ? !isnan(sq) || hg[d] || lg[d]
                                   : !(fabs(v - want) <= 1e-6 * fabs(want) + 1e-45);
            }
            bad += sh != sum_h || sl != sum_l;
            /* the two terms hold q to about 1 / (127 * 254) of max |q| */
            double a = 0, e = 0;
            for (int32_t d = 0; d < hd; d++) {
                a = fmax(a, fabs((double)q[g * hd + d]));
                e = fmax(e, fabs(((double)hg[d] + lg[d] / 254.0) * sq - q[g * hd + d]));
            }
            bad += isfinite(a) && a >= 1e-36 && !(e <= a / 127.0 / 254.0 * 0.51 + a * 1e-6);
        }
        if (bad)
            fprintf(stderr, "prep_q kind %d: %d bad\n", kind, bad);
        CHECK_EQ_INT(bad, 0);
        /* scores: every ISA gives the reference's bits; a NaN or inf query
         * head scores NaN, the others finite */
        float S0[8 * 16], S1[8 * 16];
        ref.scores(chunk, bs, hd, 0, 16, qp, nq, S0, 16);
        kvl_isa hw = kvl_isa_active();
        const kvl_isa isas[] = {KVL_ISA_SCALAR, KVL_ISA_AVX2, KVL_ISA_AVX512};
        for (size_t k = 0; k < 3; k++) {
            if (kvl_isa_set(isas[k]) != isas[k])
                continue;
            kvl_kvq_ops fast = kvl_kvq_ops_get(KVL_KVQ_I8, hd);
            fast.scores(chunk, bs, hd, 0, 16, qp, nq, S1, 16);
            CHECK(memcmp(S0, S1, sizeof S0) == 0);
        }
        kvl_isa_set(hw);
        for (int32_t g = 0; g < nq; g++)
            for (int32_t i = 0; i < 16; i++) {
                const bool want_nan = (kind == 6 && g == 1) || (kind == 7 && g == 3);
                /* FLT_MAX queries may overflow to inf, as the true scores do */
                CHECK(want_nan    ? isnan(S0[g * 16 + i])
                      : kind == 3 ? !isnan(S0[g * 16 + i])
                                  : isfinite(S0[g * 16 + i]));
                if (kind == 1 || kind == 4)
                    CHECK(S0[g * 16 + i] == 0.0f);
            }
    }
}

/* ---- fused attention ---------------------------------------------------- */

/* A pool of nb scrambled blocks of one layer, all heads; K and V encoded
 * with the given codecs; the decoded values kept for the reference. */
typedef struct {
    kvl_kvq_view v;
    uint8_t *kbuf, *vbuf;
    float *kd, *vd; /* decoded (n_kv, n_ctx, hd) */
    uint32_t blocks[64];
} att_fix;

static void att_build(att_fix *f, kvl_kvq_codec kc, kvl_kvq_codec vc, int32_t n_heads, int32_t n_kv,
                      int32_t hd, int32_t bs, int32_t n_ctx, int kind) {
    const int32_t nlb = (n_ctx + bs - 1) / bs, nb = nlb + 3;
    memset(f, 0, sizeof *f);
    f->v.k_codec = kc;
    f->v.v_codec = vc;
    f->v.k_chunk = kvl_kvq_chunk_bytes(kc, bs, hd);
    f->v.v_chunk = kvl_kvq_chunk_bytes(vc, bs, hd);
    f->v.k_head_stride = f->v.k_chunk * (size_t)nb;
    f->v.v_head_stride = f->v.v_chunk * (size_t)nb;
    f->v.block_size = bs;
    f->v.n_heads = n_heads;
    f->v.n_kv_heads = n_kv;
    f->v.head_dim = hd;
    f->v.res_block = -1;
    f->kbuf = calloc(f->v.k_head_stride * (size_t)n_kv, 1);
    f->vbuf = calloc(f->v.v_head_stride * (size_t)n_kv, 1);
    f->kd = calloc((size_t)n_kv * nlb * bs * hd, sizeof(float));
    f->vd = calloc((size_t)n_kv * nlb * bs * hd, sizeof(float));
    for (int32_t i = 0; i < nlb; i++)
        f->blocks[i] = (uint32_t)(nb - 1 - i); /* reversed, with free blocks below */
    f->v.blocks = f->blocks;
    f->v.k = f->kbuf;
    f->v.v = f->vbuf;
    float *x = malloc((size_t)bs * hd * sizeof(float));
    for (int32_t h = 0; h < n_kv; h++)
        for (int32_t lb = 0; lb < nlb; lb++)
            for (int role = 0; role < 2; role++) {
                kvl_kvq_codec c = role ? vc : kc;
                fill(x, (size_t)bs * hd, kind);
                uint8_t *chunk = (role ? f->vbuf : f->kbuf) +
                                 (size_t)h * (role ? f->v.v_head_stride : f->v.k_head_stride) +
                                 (size_t)f->blocks[lb] * (role ? f->v.v_chunk : f->v.k_chunk);
                kvl_kv_encode_block(c, chunk, bs, hd, x, bs);
                float *dd = (role ? f->vd : f->kd) + ((size_t)h * nlb * bs + (size_t)lb * bs) * hd;
                for (int32_t r = 0; r < bs; r++)
                    kvl_kvq_decode_row(c, chunk, bs, hd, r, dd + (size_t)r * hd);
            }
    free(x);
}

static void att_free(att_fix *f) {
    free(f->kbuf);
    free(f->vbuf);
    free(f->kd);
    free(f->vd);
}

/* double-precision attention over the decoded values; tol (optional) gets
 * each output's tolerance for f32 arithmetic: 1e-4 relative, plus the
 * score rounding (1e-6 of the largest sum of |q_d k_d| * scale) carried
 * through the weights onto sum_p w_p |v_p| (outlier values cancel) */
static void att_ref(const att_fix *f, int32_t n_ctx, const float *q, double *out, float scale,
                    double *tol) {
    const int32_t hd = f->v.head_dim, bs = f->v.block_size, grp = f->v.n_heads / f->v.n_kv_heads;
    const int32_t nlb = (n_ctx + bs - 1) / bs;
    double *s = malloc((size_t)n_ctx * sizeof(double));
    for (int32_t h = 0; h < f->v.n_heads; h++) {
        const int32_t kh = h / grp;
        const float *K = f->kd + (size_t)kh * nlb * bs * hd,
                    *V = f->vd + (size_t)kh * nlb * bs * hd;
        double mx = -INFINITY, sum = 0, smag = 0;
        for (int32_t p = 0; p < n_ctx; p++) {
            double a = 0, m = 0;
            for (int32_t d = 0; d < hd; d++) {
                a += (double)q[h * hd + d] * K[(size_t)p * hd + d];
                m += fabs((double)q[h * hd + d] * K[(size_t)p * hd + d]);
            }
            s[p] = a * scale;
            smag = fmax(smag, m * scale);
            mx = s[p] > mx ? s[p] : mx;
        }
        for (int32_t p = 0; p < n_ctx; p++)
            sum += (s[p] = exp(s[p] - mx));
        for (int32_t d = 0; d < hd; d++) {
            double a = 0, vmag = 0;
            for (int32_t p = 0; p < n_ctx; p++) {
                a += s[p] / sum * V[(size_t)p * hd + d];
                vmag += s[p] / sum * fabs((double)V[(size_t)p * hd + d]);
            }
            out[h * hd + d] = a;
            if (tol)
                tol[h * hd + d] = 1e-4 * (1 + fabs(a)) + 1e-6 * smag * vmag;
        }
    }
    free(s);
}

static void test_attend(void) {
    const int32_t H = 8, KV = 2, hd = 64, bs = 16;
    const int32_t ctxs[] = {1, 15, 16, 17, 100, 200};
    float q[8 * 64], qe[8 * 64], out[8 * 64], outr[8 * 64];
    double ref[8 * 64], tol[8 * 64];
    for (int kc = 0; kc < KVL_KVQ_COUNT; kc++)
        for (int vc = 0; vc < KVL_KVQ_COUNT; vc++) {
            if (kc != vc && vc != KVL_KVQ_I8 && kc != KVL_KVQ_I4C)
                continue;
            for (size_t ci = 0; ci < sizeof ctxs / sizeof ctxs[0]; ci++) {
                const int32_t n_ctx = ctxs[ci];
                att_fix f;
                att_build(&f, (kvl_kvq_codec)kc, (kvl_kvq_codec)vc, H, KV, hd, bs, n_ctx, 7);
                for (int i = 0; i < H * hd; i++)
                    q[i] = nrand();
                q_as_read((kvl_kvq_codec)kc, q, H, hd, qe);
                att_ref(&f, n_ctx, qe, ref, 0.125f, tol);
                kvl_kv_attend_q(&f.v, n_ctx, q, out, 0, H, 0.125f, false);
                kvl_kv_attend_q(&f.v, n_ctx, q, outr, 1, 7, 0.125f, true);
                int bad = 0;
                for (int i = 0; i < H * hd; i++) {
                    bad += !(fabs(out[i] - ref[i]) <= tol[i]);
                    if (i >= hd && i < 7 * hd)
                        bad += !(fabs(outr[i] - ref[i]) <= tol[i]);
                }
                if (bad)
                    fprintf(stderr, "attend K %s V %s ctx %d: %d bad\n",
                            kvl_kvq_codec_name((kvl_kvq_codec)kc),
                            kvl_kvq_codec_name((kvl_kvq_codec)vc), n_ctx, bad);
                CHECK_EQ_INT(bad, 0);
                att_free(&f);
            }
        }
    /* huge magnitudes: finite, and within relative 1e-4 of the reference;
     * q small so that the scores stay finite in f32 */
    for (int c = KVL_KVQ_E4M3; c < KVL_KVQ_COUNT; c++) {
        att_fix f;
        kvl_kvq_codec vcod = c == KVL_KVQ_I4C ? KVL_KVQ_I4T : (kvl_kvq_codec)c;
        att_build(&f, (kvl_kvq_codec)c, vcod, H, KV, hd, bs, 40, 4);
        for (int i = 0; i < H * hd; i++)
            q[i] = nrand() * 1e-30f;
        q_as_read((kvl_kvq_codec)c, q, H, hd, qe);
        att_ref(&f, 40, qe, ref, 0.125f, NULL);
        kvl_kv_attend_q(&f.v, 40, q, out, 0, H, 0.125f, false);
        int bad = 0;
        for (int i = 0; i < H * hd; i++)
            bad += !(isfinite(out[i]) && fabs(out[i] - ref[i]) <= 1e-4 * fabs(ref[i]) + 1e26);
        CHECK_EQ_INT(bad, 0);
        att_free(&f);
    }
    /* adversarial queries, every K format: an all-zero head attends
     * uniformly (the mean of V); a head holding NaN gives NaN, only there */
    for (int c = 0; c < KVL_KVQ_COUNT; c++) {
        att_fix f;
        kvl_kvq_codec vcod = c == KVL_KVQ_I4C ? KVL_KVQ_I4T : (kvl_kvq_codec)c;
        att_build(&f, (kvl_kvq_codec)c, vcod, H, KV, hd, bs, 40, 0);
        for (int i = 0; i < H * hd; i++)
            q[i] = nrand();
        memset(q + 2 * hd, 0, (size_t)hd * sizeof(float)); /* head 2: zeros */
        q[5 * hd + 7] = NAN;                               /* head 5: one NaN */
        kvl_kv_attend_q(&f.v, 40, q, out, 0, H, 0.125f, false);
        kvl_kv_attend_q(&f.v, 40, q, outr, 0, H, 0.125f, true);
        int bad = 0;
        for (int h = 0; h < H; h++)
            for (int d = 0; d < hd; d++) {
                const float o = out[h * hd + d], r = outr[h * hd + d];
                if (h == 5) {
                    bad += !isnan(o) || !isnan(r);
                    continue;
                }
                bad += !isfinite(o) || !isfinite(r);
                if (h == 2) { /* KV head 0: the mean of its 40 value rows */
                    double mean = 0;
                    for (int p = 0; p < 40; p++)
                        mean += f.vd[(size_t)p * hd + d] / 40.0;
                    bad += !(fabs(o - mean) <= 1e-5 * (1 + fabs(mean)));
                    bad += !(fabs(r - mean) <= 1e-5 * (1 + fabs(mean)));
                }
            }
        if (bad)
            fprintf(stderr, "attend adversarial q, K %s: %d bad\n",
                    kvl_kvq_codec_name((kvl_kvq_codec)c), bad);
        CHECK_EQ_INT(bad, 0);
        att_free(&f);
    }
    /* NaN in one key or value: the heads reading that KV head give NaN,
     * the others do not */
    for (int c = 0; c < KVL_KVQ_COUNT; c++)
        for (int role = 0; role < 2; role++) {
            att_fix f;
            kvl_kvq_codec cc = (kvl_kvq_codec)c;
            if (cc == KVL_KVQ_I4C && role == 1)
                cc = KVL_KVQ_I4T;
            att_build(&f, cc, cc, H, KV, hd, bs, 40, 0);
            float x[16 * 64];
            fill(x, 16 * 64, 0);
            x[3 * 64 + 9] = NAN;
            uint8_t *chunk =
                (role ? f.vbuf : f.kbuf) + (size_t)f.blocks[1] * (role ? f.v.v_chunk : f.v.k_chunk);
            kvl_kv_encode_block(cc, chunk, bs, hd, x, bs);
            for (int i = 0; i < H * hd; i++)
                q[i] = nrand();
            kvl_kv_attend_q(&f.v, 40, q, out, 0, H, 0.125f, false);
            int nan_lo = 0, nan_hi = 0;
            for (int i = 0; i < H * hd; i++) {
                if (i < 4 * hd)
                    nan_lo += isnan(out[i]) != 0;
                else
                    nan_hi += isnan(out[i]) != 0;
            }
            CHECK(nan_lo > 0);
            CHECK_EQ_INT(nan_hi, 0);
            att_free(&f);
        }
}

int main(void) {
    test_sizes();
    test_roundtrip();
    test_nonfinite();
    kvl_isa hw = kvl_isa_active();
    test_kernels_isa(KVL_ISA_AVX2);
    test_kernels_isa(KVL_ISA_AVX512);
    kvl_isa_set(hw);
    test_prep_q();
    test_attend();
    return kvt_finish("test_kv_codec");
}
