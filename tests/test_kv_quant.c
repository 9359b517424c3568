/*
 * The paged store with quantized formats:
 *   - the pool allocates exactly the blocks the planner promises, for every
 *     K/V format pair and block size (accounting parity);
 *   - fork + copy-on-write per format: a forked branch (mid-block, so the
 *     shared block and the f32 residual are copied) gives bit for bit the
 *     attention of a cache where the same tokens were written without
 *     sharing;
 *   - attention stays close to f32 KV (loose per-format sanity bounds; the
 *     derived per-element bounds are test_kv_codec's);
 *   - truncate into an already quantized block, then grow again;
 *   - the residual is counted in the stats;
 *   - through kvl_forward on stories260K: logits of every format close to
 *     f32 KV, teacher-forcing the f32 greedy continuation.
 */
#include "engine/kv_check.h"
#include "kv/kv_paged.h"
#include "model/forward.h"

#include "testutil.h"

#include <float.h>
#include <stdlib.h>

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float nrand(void) {
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 4.0 - 2.0);
}

typedef struct {
    kvl_kv_format k, v;
    int32_t bs;
    double tol; /* max |out - out_f32| / max|V| */
} pair;

static const pair k_pairs[] = {
    {KVL_KV_FMT_F32, KVL_KV_FMT_F32, 16, 0.0},
    {KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16, 2e-3},
    {KVL_KV_FMT_BF16, KVL_KV_FMT_BF16, 16, 2e-2},
    {KVL_KV_FMT_FP8_E4M3, KVL_KV_FMT_FP8_E4M3, 16, 0.15},
    {KVL_KV_FMT_FP8_E5M2, KVL_KV_FMT_FP8_E5M2, 16, 0.3},
    {KVL_KV_FMT_INT8, KVL_KV_FMT_INT8, 16, 0.08},
    {KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, 16, 0.5},
    {KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, 0, 0.5}, /* default block: 64 */
    {KVL_KV_FMT_INT4, KVL_KV_FMT_INT8, 16, 0.5},
    {KVL_KV_FMT_INT8, KVL_KV_FMT_INT4, 16, 0.5},
    {KVL_KV_FMT_F16, KVL_KV_FMT_FP8_E4M3, 5, 0.15},
};
#define N_PAIRS (sizeof k_pairs / sizeof k_pairs[0])

static kvl_hparams small_hp(void) {
    kvl_hparams hp = {0};
    hp.n_layers = 2;
    hp.n_heads = 4;
    hp.n_kv_heads = 2;
    hp.head_dim = 16;
    hp.dim = 64;
    return hp;
}

static void test_parity(void) {
    kvl_hparams hp = small_hp();
    kvl_model_shape ps = {0};
    snprintf(ps.name, sizeof ps.name, "small");
    ps.hp = hp;
    ps.hp.dim = 64;
    ps.hp.ffn_dim = 64;
    ps.hp.n_vocab = 32;
    ps.hp.ctx_len = 64;
    const int32_t sizes[] = {1, 5, 16, 64};
    const size_t budgets[] = {100000, 1 << 20, 12345678};
    for (int k = 0; k < KVL_KV_FMT_COUNT; k++)
        for (int v = 0; v < KVL_KV_FMT_COUNT; v++)
            for (size_t b = 0; b < sizeof sizes / sizeof sizes[0]; b++)
                for (size_t j = 0; j < sizeof budgets / sizeof budgets[0]; j++) {
                    kvl_plan_capacity pc;
                    kvl_kv_capacity kc;
                    CHECK_EQ_INT(kvl_plan_capacity_for(&ps, (kvl_kv_format)k, (kvl_kv_format)v,
                                                       sizes[b], budgets[j], &pc, NULL),
                                 KVL_OK);
                    kvl_status st =
                        kvl_kv_capacity_compute_fmt(&hp, sizes[b], (kvl_kv_format)k,
                                                    (kvl_kv_format)v, budgets[j], 1, &kc, NULL);
                    CHECK(st == KVL_OK || st == KVL_E_NO_KV);
                    CHECK_EQ_INT(kc.n_blocks, pc.n_blocks);
                    CHECK_EQ_INT(kc.block_bytes, pc.block_bytes);
                }
    /* a bad format id is refused with its field named */
    kvl_error err;
    kvl_kv_paged_params pp = {
        .budget = 1 << 20, .max_seqs = 1, .max_ctx = 16, .k_fmt = (kvl_kv_format)99};
    kvl_kv_paged *kv = NULL;
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &kv, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "k_fmt 99");
}

/* Token t's K/V (2 layers, 2 heads, 16 dims), deterministic per (branch, t). */
static void token_kv(int branch, int t, int layer, float *k, float *v) {
    uint64_t save = g_rng;
    g_rng =
        0x1234567ull + (uint64_t)branch * 1000003u + (uint64_t)t * 7919u + (uint64_t)layer * 31u;
    for (int i = 0; i < 4; i++)
        (void)nrand();
    for (int i = 0; i < 32; i++) {
        k[i] = nrand() * (i % 16 == 3 ? 8.0f : 1.0f); /* an outlier channel */
        v[i] = nrand();
    }
    g_rng = save;
}

static void put(kvl_kv_paged *kv, int32_t seq, int branch, int t0, int t1, int32_t pos0) {
    kvl_error err;
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    for (int t = t0; t < t1; t++) {
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, seq, 1, &err), KVL_OK);
        for (int l = 0; l < 2; l++) {
            float k[32], v[32];
            token_kv(branch, t, l, k, v);
            it.store(kv, l, seq, pos0 + (t - t0), k, v);
        }
    }
}

static void attend(kvl_kv_paged *kv, int32_t seq, int layer, const float *q, float *out) {
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    float scratch[256];
    it.attend(kv, layer, seq, kvl_kv_paged_len(kv, seq), q, out, 0, 4, 0.25f, scratch);
}

#define NP 37 /* prompt: mid-block for every block size tested */
#define NB 30 /* branch tokens */

static void test_fork_cow(const pair *pr) {
    kvl_hparams hp = small_hp();
    kvl_error err;
    kvl_kv_paged_params pp = {.budget = 1 << 20,
                              .block_size = pr->bs,
                              .max_seqs = 3,
                              .max_ctx = 128,
                              .k_fmt = pr->k,
                              .v_fmt = pr->v};
    kvl_kv_paged_params pf = pp;
    pf.k_fmt = pf.v_fmt = KVL_KV_FMT_F32;
    kvl_kv_paged *a = NULL, *b = NULL, *f = NULL;
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &a, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &b, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pf, &f, &err), KVL_OK);
    if (!a || !b || !f)
        return;
    /* a: prompt, fork, two branches. b and f: written without sharing */
    put(a, 0, 0, 0, NP, 0);
    CHECK_EQ_INT(kvl_kv_paged_fork(a, 0, 1, &err), KVL_OK);
    put(a, 0, 1, 0, NB, NP);
    put(a, 1, 2, 0, NB, NP);
    for (int s = 0; s < 2; s++) {
        put(b, s, 0, 0, NP, 0);
        put(b, s, 1 + s, 0, NB, NP);
        put(f, s, 0, 0, NP, 0);
        put(f, s, 1 + s, 0, NB, NP);
    }
    kvl_kv_paged_stats st;
    kvl_kv_paged_stats_get(a, &st);
    CHECK(st.n_blocks_copied >= 1);
    const int32_t bs = kvl_kv_paged_layout(a)->block_size;
    const bool def = pr->k == KVL_KV_FMT_INT4 || pr->v == KVL_KV_FMT_INT4 ||
                     pr->k == KVL_KV_FMT_FP8_E4M3 || pr->k == KVL_KV_FMT_FP8_E5M2 ||
                     pr->v == KVL_KV_FMT_FP8_E4M3 || pr->v == KVL_KV_FMT_FP8_E5M2;
    const int n_def =
        (pr->k == KVL_KV_FMT_INT4 || pr->k == KVL_KV_FMT_FP8_E4M3 || pr->k == KVL_KV_FMT_FP8_E5M2) +
        (pr->v == KVL_KV_FMT_INT4 || pr->v == KVL_KV_FMT_FP8_E4M3 || pr->v == KVL_KV_FMT_FP8_E5M2);
    CHECK_EQ_INT(st.residual_bytes, def ? (size_t)3 * 2 * 2 * bs * 16 * 4 * n_def : 0);
    kvl_kv_seq_stats ss;
    CHECK_EQ_INT(kvl_kv_paged_seq_stats_get(a, 0, &ss, &err), KVL_OK);
    CHECK_EQ_INT(ss.n_residual, def ? (NP + NB) % bs : 0);

    float q[64], oa[64], ob[64], of[64];
    for (int i = 0; i < 64; i++)
        q[i] = nrand();
    int bad = 0;
    for (int s = 0; s < 2; s++)
        for (int l = 0; l < 2; l++) {
            attend(a, s, l, q, oa);
            attend(b, s, l, q, ob);
            attend(f, s, l, q, of);
            bad += memcmp(oa, ob, sizeof oa) != 0;
            double md = 0;
            for (int i = 0; i < 64; i++)
                md = fmax(md, fabs((double)oa[i] - of[i]));
            if (md > pr->tol * 2.0) { /* |V| <= 2 */
                fprintf(stderr, "K %s V %s bs %d: |attn - f32| %.4g > %.4g\n",
                        kvl_kv_format_get(pr->k)->name, kvl_kv_format_get(pr->v)->name, bs, md,
                        pr->tol * 2.0);
                bad++;
            }
        }
    CHECK_EQ_INT(bad, 0);

    /* truncate seq 1 into its first block (quantized by now), grow again */
    CHECK_EQ_INT(kvl_kv_paged_truncate(a, 1, 5, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_paged_truncate(f, 1, 5, &err), KVL_OK);
    put(a, 1, 3, 0, bs + 10, 5);
    put(f, 1, 3, 0, bs + 10, 5);
    attend(a, 1, 1, q, oa);
    attend(f, 1, 1, q, of);
    double md = 0;
    for (int i = 0; i < 64; i++)
        md = fmax(md, fabs((double)oa[i] - of[i]));
    CHECK(md <= pr->tol * 2.0 * 1.5);

    for (int s = 0; s < 2; s++) {
        CHECK_EQ_INT(kvl_kv_paged_release(a, s, &err), KVL_OK);
    }
    kvl_kv_paged_stats_get(a, &st);
    CHECK_EQ_INT(st.pool.n_blocks_used, 0);
    CHECK_EQ_INT(kvl_block_pool_check(kvl_kv_paged_pool(a), &err), KVL_OK);
    kvl_kv_paged_free(a);
    kvl_kv_paged_free(b);
    kvl_kv_paged_free(f);
}

/* ---- through the forward pass ------------------------------------------ */

#define FW_PROMPT 24
#define FW_STEPS 72
#define FW_CTX 128

static void test_forward(void) {
    kvl_error err;
    kvl_model *m = NULL;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err) != KVL_OK) {
        fprintf(stderr, "stories260K.gguf: %s\n", err.msg);
        CHECK(!"model loads");
        return;
    }
    const kvl_hparams *hp = &m->hp;
    const int64_t V = hp->n_vocab;
    kvl_forward *fw = NULL;
    CHECK_EQ_INT(kvl_forward_init(m, FW_PROMPT, FW_CTX, NULL, &fw, &err), KVL_OK);
    int32_t toks[FW_PROMPT + FW_STEPS];
    float *ref = malloc((size_t)FW_STEPS * V * sizeof(float));
    for (int i = 0; i < FW_PROMPT; i++)
        toks[i] = 1 + (i * 37) % (int32_t)(V - 1);
    for (size_t pi = 0; pi < N_PAIRS && fw; pi++) {
        const pair *pr = &k_pairs[pi];
        kvl_kv_paged_params pp = {.budget = 4 << 20,
                                  .block_size = pr->bs,
                                  .max_seqs = 1,
                                  .max_ctx = FW_CTX,
                                  .k_fmt = pr->k,
                                  .v_fmt = pr->v};
        kvl_kv_paged *kv = NULL;
        CHECK_EQ_INT(kvl_kv_paged_init(hp, &pp, &kv, &err), KVL_OK);
        if (!kv)
            continue;
        kvl_kv_iface it = kvl_kv_paged_iface(kv);
        int32_t seq[FW_PROMPT] = {0}, pos[FW_PROMPT];
        for (int i = 0; i < FW_PROMPT; i++)
            pos[i] = i;
        const float *lg;
        int32_t n_out;
        kvl_batch b = {.n_tokens = FW_PROMPT, .tokens = toks, .seq = seq, .pos = pos};
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, FW_PROMPT, &err), KVL_OK);
        CHECK_EQ_INT(kvl_forward_run(fw, &b, &it, &lg, &n_out, &err), KVL_OK);
        double maxd = 0;
        int agree = 0;
        for (int s = 0; s < FW_STEPS; s++) {
            if (pi == 0) { /* f32: the greedy continuation, teacher-forced for the others */
                memcpy(ref + (size_t)s * V, lg, (size_t)V * sizeof(float));
                int32_t best = 0;
                for (int64_t i = 1; i < V; i++)
                    best = lg[i] > lg[best] ? (int32_t)i : best;
                toks[FW_PROMPT + s] = best;
            } else {
                int32_t best = 0;
                for (int64_t i = 0; i < V; i++) {
                    maxd = fmax(maxd, fabs((double)lg[i] - ref[(size_t)s * V + i]));
                    best = lg[i] > lg[best] ? (int32_t)i : best;
                }
                agree += best == toks[FW_PROMPT + s];
            }
            int32_t p1 = FW_PROMPT + s, s0 = 0;
            kvl_batch d = {.n_tokens = 1, .tokens = &toks[FW_PROMPT + s], .seq = &s0, .pos = &p1};
            CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 1, &err), KVL_OK);
            CHECK_EQ_INT(kvl_forward_run(fw, &d, &it, &lg, &n_out, &err), KVL_OK);
        }
        if (pi > 0) {
            fprintf(stderr, "forward K %-8s V %-8s bs %2d: max |logit - f32| %.4f, top-1 %d/%d\n",
                    kvl_kv_format_get(pr->k)->name, kvl_kv_format_get(pr->v)->name,
                    kvl_kv_paged_layout(kv)->block_size, maxd, agree, FW_STEPS);
            /* logits of stories260K span about +-15 */
            CHECK(maxd <= pr->tol * 20.0 + 1e-3);
            CHECK(agree >= FW_STEPS * (pr->tol < 0.1 ? 0.9 : 0.75));
        }
        kvl_kv_paged_free(kv);
    }
    free(ref);
    kvl_forward_free(fw);
    kvl_model_free(m);
}

/* The quality guard on stories260K: every format, numbers printed. */
static void test_check(void) {
    kvl_error err;
    kvl_model *m = NULL;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err) != KVL_OK)
        return; /* test_forward reported it */
    kvl_kv_check_report r;
    CHECK_EQ_INT(kvl_kv_check(m, (kvl_kv_format)42, KVL_KV_FMT_F16, NULL, &r, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "k format 42");
    for (size_t i = 1; i < N_PAIRS; i++) {
        CHECK_EQ_INT(kvl_kv_check(m, k_pairs[i].k, k_pairs[i].v, NULL, &r, &err), KVL_OK);
        kvl_kv_check_print(&r, stderr);
        CHECK_EQ_INT(r.n_tokens, 255);
        CHECK(r.f16_kl_mean >= 0 && r.f16_kl_mean < 1e-3);
        CHECK(r.kl_mean >= 0 && r.kl_max >= r.kl_mean);
        CHECK(r.top1 > 0.5);
        CHECK(r.warn == (r.kl_mean > KVL_KV_CHECK_KL_WARN || r.top1 < KVL_KV_CHECK_TOP1_WARN));
        CHECK(!r.warn || strstr(r.message, "use --kv-type-") != NULL);
    }
    kvl_model_free(m);
}

int main(void) {
    test_parity();
    test_check();
    for (size_t i = 0; i < N_PAIRS; i++)
        test_fork_cow(&k_pairs[i]);
    test_forward();
    return kvt_finish("test_kv_quant");
}
