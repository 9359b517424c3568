/*
 * KV eviction policies (kv_policy.h, kvl_kv_paged_make_room):
 *   - names, parsing and the checks on bad policies (nothing changes);
 *   - randomized streams over every format and several block sizes: the
 *     sequence never holds more than its budget, sink blocks keep their
 *     physical ids, blocks evicted return to the free queue in the same
 *     call, the pool's own check holds after every step, and after the
 *     release every block is free;
 *   - with a budget at least the stream's length, window and sinks give
 *     attention bit-identical to full;
 *   - positions: attention after eviction equals attention over the kept
 *     rows stored with keys rotated at their place in the cache (the
 *     StreamingLLM rule), to f32 rounding;
 *   - a block shared by a fork is never written by a policy: the other
 *     sequence's bytes, counts and attention are unchanged;
 *   - the engine refuses window and sinks requests (not run there yet);
 *   - h2o / snapkv: the mass attention accumulates equals the softmax
 *     weights per block summed over heads (double reference; block sizes
 *     inside, across and below the 64-row tiles), with the output bits
 *     unchanged and nothing accumulated for the other policies; randomized
 *     streams over every format (prompt cut, then decoding) never exceed
 *     the budget and evict exactly the least-mass candidates, never a sink
 *     or protected-tail block; constructed cases: h2o evicts the block
 *     with the least mass, snapkv keeps the highest-scoring blocks plus
 *     its window; a fork under h2o never writes its shared blocks; with a
 *     budget >= the stream both are bit-identical to full.
 */
#include "kernels/kernels.h"
#include "kv/kv_attn.h"
#include "kv/kv_paged.h"
#include "model/model.h"
#include "kv/kv_policy.h"

#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static kvl_hparams shape(int64_t n_layers, int64_t n_heads, int64_t n_kv_heads, int64_t hd) {
    kvl_hparams hp = {0};
    hp.n_layers = n_layers;
    hp.n_heads = n_heads;
    hp.n_kv_heads = n_kv_heads;
    hp.head_dim = hd;
    hp.dim = n_heads * hd;
    hp.ctx_len = 4096;
    hp.rope_dim = hd;
    hp.rope_base = 10000.0f;
    return hp;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd_u32(void) { return (uint32_t)(kvt_xorshift64(&rng) >> 32); }
static float rnd(void) { return (float)(rnd_u32() >> 8) / (float)(1 << 24) * 2.0f - 1.0f; }
static int32_t rnd_in(int32_t lo, int32_t hi) {
    return lo + (int32_t)(rnd_u32() % (uint32_t)(hi - lo + 1));
}

/* K/V of (layer, stream index i), unrotated; deterministic. */
static void gen_kv(const kvl_hparams *hp, int32_t layer, int32_t i, float *k, float *v) {
    uint64_t s = ((uint64_t)layer << 32) ^ (uint64_t)i ^ 0x9e3779b97f4a7c15ull;
    for (int64_t j = 0; j < hp->n_kv_heads * hp->head_dim; j++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        k[j] = (float)(int32_t)(s >> 40 & 0xffffff) / (float)(1 << 23) - 1.0f;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        v[j] = (float)(int32_t)(s >> 40 & 0xffffff) / (float)(1 << 23) - 1.0f;
    }
}

/* Store stream tokens [i0, i0 + n) of every layer at cache positions
 * [pos0, pos0 + n), keys rotated at rot0 + (their offset) as the forward
 * pass does (rot0 == pos0 for a live stream). */
static void feed(const kvl_hparams *hp, kvl_kv_iface *kv, int32_t seq, int32_t i0, int32_t pos0,
                 int32_t rot0, int32_t n) {
    float k[4 * 64], v[4 * 64];
    for (int32_t l = 0; l < hp->n_layers; l++)
        for (int32_t t = 0; t < n; t++) {
            gen_kv(hp, l, i0 + t, k, v);
            kvl_rope(k, hp->n_kv_heads, hp->head_dim, hp->rope_dim, rot0 + t, hp->rope_base);
            kv->store(kv->ctx, l, seq, pos0 + t, k, v);
        }
}

/* out = attention of seq over its n_ctx positions, layer l, for the query
 * q (unrotated) rotated at position qpos. */
static void attend(const kvl_hparams *hp, kvl_kv_iface *kv, int32_t l, int32_t seq, int32_t n_ctx,
                   const float *q0, int32_t qpos, float *out) {
    float q[8 * 64];
    memcpy(q, q0, sizeof(float) * (size_t)(hp->n_heads * hp->head_dim));
    kvl_rope(q, hp->n_heads, hp->head_dim, hp->rope_dim, qpos, hp->rope_base);
    static float scratch[8192]; /* n_ctx floats (h2o / snapkv keep block sums there) */
    CHECK(n_ctx <= 8192);
    kv->attend(kv->ctx, l, seq, n_ctx, q, out, 0, (int32_t)hp->n_heads,
               1.0f / sqrtf((float)hp->head_dim), scratch);
}

static kvl_kv_paged *make(const kvl_hparams *hp, int32_t bs, kvl_kv_format fmt, int32_t n_blocks,
                          int32_t max_ctx, int32_t max_seqs) {
    kvl_kv_paged_params pp = {
        .block_size = bs, .max_seqs = max_seqs, .max_ctx = max_ctx, .k_fmt = fmt, .v_fmt = fmt};
    kvl_block_layout lay;
    kvl_error err;
    CHECK_EQ_INT(
        kvl_block_layout_init_fmt(hp, kvl_kv_block_size(bs, fmt, fmt), fmt, fmt, &lay, &err),
        KVL_OK);
    pp.budget = lay.block_bytes * (size_t)n_blocks;
    kvl_kv_paged *kv = NULL;
    CHECK_EQ_INT(kvl_kv_paged_init(hp, &pp, &kv, &err), KVL_OK);
    return kv;
}

static void test_names_and_checks(void) {
    kvl_kv_policy_kind k = KVL_KV_POLICY_FULL;
    CHECK(kvl_kv_policy_parse("sinks", &k) && k == KVL_KV_POLICY_SINKS);
    CHECK(kvl_kv_policy_parse("window", &k) && k == KVL_KV_POLICY_WINDOW);
    CHECK(kvl_kv_policy_parse("h2o", &k) && k == KVL_KV_POLICY_H2O);
    CHECK(kvl_kv_policy_parse("snapkv", &k) && k == KVL_KV_POLICY_SNAPKV);
    CHECK(!kvl_kv_policy_parse("lru", &k) && k == KVL_KV_POLICY_SNAPKV);
    CHECK(!strcmp(kvl_kv_policy_str(KVL_KV_POLICY_FULL), "full"));
    CHECK(kvl_kv_policy_str((kvl_kv_policy_kind)9) == NULL);
    kvl_error err;
    kvl_kv_policy p = {.kind = KVL_KV_POLICY_SINKS, .budget_tokens = 47, .sinks = 4};
    /* sinks 4 -> 1 block of 16; + 2 blocks = 48 */
    CHECK_EQ_INT(kvl_kv_policy_check(&p, 16, 512, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "budget_tokens 47 not in [48");
    p.budget_tokens = 48;
    CHECK_EQ_INT(kvl_kv_policy_check(&p, 16, 512, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_policy_check(&p, 16, 40, &err), KVL_E_INVALID);
    p.sinks = -1;
    CHECK_EQ_INT(kvl_kv_policy_check(&p, 16, 512, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "sinks -1");
    p.kind = (kvl_kv_policy_kind)7;
    CHECK_EQ_INT(kvl_kv_policy_check(&p, 16, 512, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "kind 7");
    /* window: no sink blocks; victims start at block 0 */
    kvl_kv_policy w = {.kind = KVL_KV_POLICY_WINDOW, .budget_tokens = 64};
    uint32_t first = 9, n = 9;
    CHECK_EQ_INT(kvl_kv_policy_victims(&w, 16, 64, 1, &first, &n, &err), KVL_OK);
    CHECK(first == 0 && n == 1);
    CHECK_EQ_INT(kvl_kv_policy_victims(&w, 16, 63, 1, &first, &n, &err), KVL_OK);
    CHECK(n == 0);
    /* 60 new tokens into 64 with 2 full blocks (40 tokens): needs 3 */
    CHECK_EQ_INT(kvl_kv_policy_victims(&w, 16, 40, 60, &first, &n, &err), KVL_E_LIMIT);
    CHECK_CONTAINS(err.msg, "budget_tokens 64");

    /* a bad policy leaves the slot's policy as it was; bad seq / n_new */
    kvl_hparams hp = shape(1, 2, 1, 8);
    kvl_kv_paged *kv = make(&hp, 16, KVL_KV_FMT_F32, 8, 128, 2);
    kvl_kv_policy bad = {.kind = KVL_KV_POLICY_WINDOW, .budget_tokens = 8};
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 0, &bad, &err), KVL_E_INVALID);
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 5, &w, &err), KVL_E_INVALID);
    int32_t ev = -1;
    CHECK_EQ_INT(kvl_kv_paged_make_room(kv, 0, -1, &ev, &err), KVL_E_INVALID);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 100, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_paged_make_room(kv, 0, 1, &ev, &err), KVL_OK); /* still full */
    CHECK_EQ_INT(ev, 0);
    CHECK_EQ_INT(kvl_kv_paged_len(kv, 0), 100);
    kvl_kv_paged_free(kv);
}

/* One randomized stream; returns false on the first broken invariant. */
/* A random KV format and a block size for it (4, 5, 16 or its default). */
static void pick_format(kvl_kv_format *fmt, int32_t *bs) {
    static const kvl_kv_format fmts[] = {KVL_KV_FMT_F32,      KVL_KV_FMT_F16,  KVL_KV_FMT_BF16,
                                         KVL_KV_FMT_FP8_E4M3, KVL_KV_FMT_INT8, KVL_KV_FMT_INT4};
    *fmt = fmts[rnd_u32() % 6];
    const int32_t bs_pick[] = {4, 5, 16, 0};
    *bs = kvl_kv_block_size(bs_pick[rnd_u32() % 4], *fmt, *fmt);
}

static void random_stream(uint32_t seed) {
    rng = 0x9e3779b97f4a7c15ull * (seed + 1);
    kvl_kv_format fmt;
    int32_t bs;
    pick_format(&fmt, &bs);
    kvl_hparams hp = shape(2, 4, 2, 8);
    const int32_t max_ctx = 40 * bs;
    kvl_kv_paged *kv = make(&hp, bs, fmt, 48, max_ctx, 1);
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    kvl_block_pool *pool = kvl_kv_paged_pool(kv);
    kvl_kv_policy p = {.kind = rnd_u32() % 2 ? KVL_KV_POLICY_SINKS : KVL_KV_POLICY_WINDOW,
                       .sinks = rnd_in(0, 3 * bs)};
    const int32_t ns = kvl_kv_policy_sink_blocks(&p, bs);
    p.budget_tokens = rnd_in((ns + 2) * bs, max_ctx);
    kvl_error err;
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 0, &p, &err), KVL_OK);
    const int32_t total = rnd_in(p.budget_tokens, 5 * max_ctx);
    uint32_t sink_ids[64];
    int32_t fed = 0, pos_check_fails = 0;
    int64_t evicted = 0;
    while (fed < total) {
        int32_t n_new = rnd_in(1, rnd_u32() % 4 ? 3 : 2 * bs);
        n_new = n_new < total - fed ? n_new : total - fed;
        const int32_t len0 = kvl_kv_paged_len(kv, 0);
        const uint32_t free0 = kvl_block_pool_n_free(pool);
        int32_t ev = 0;
        kvl_status st = kvl_kv_paged_make_room(kv, 0, n_new, &ev, &err);
        if (st == KVL_E_LIMIT) { /* too big a chunk: nothing changed */
            CHECK_EQ_INT(kvl_kv_paged_len(kv, 0), len0);
            CHECK_EQ_INT((int)kvl_block_pool_n_free(pool), (int)free0);
            n_new = 1;
            st = kvl_kv_paged_make_room(kv, 0, n_new, &ev, &err);
        }
        CHECK_EQ_INT(st, KVL_OK);
        /* evicted blocks (held only here) are free in the same call */
        CHECK_EQ_INT((int)kvl_block_pool_n_free(pool), (int)(free0 + (uint32_t)(ev / bs)));
        CHECK_EQ_INT(ev % bs, 0);
        evicted += ev;
        const int32_t pos = kvl_kv_paged_len(kv, 0);
        CHECK_EQ_INT(pos, len0 - ev);
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, n_new, &err), KVL_OK);
        feed(&hp, &it, 0, fed, pos, pos, n_new);
        fed += n_new;
        const kvl_block_table *t = kvl_kv_paged_table(kv, 0);
        CHECK(t->n_tokens <= p.budget_tokens);
        CHECK(t->n_blocks == (uint32_t)((t->n_tokens + bs - 1) / bs));
        CHECK_EQ_INT((int)(kvl_block_pool_n_blocks(pool) - kvl_block_pool_n_free(pool)),
                     (int)t->n_blocks);
        CHECK_EQ_INT(kvl_block_pool_check(pool, &err), KVL_OK);
        /* sink blocks: the same physical blocks once written, shift 0 */
        for (int32_t b = 0; b < ns && (b + 1) * bs <= fed; b++) {
            if ((b + 1) * bs > fed - n_new && b * bs < fed) /* just filled */
                sink_ids[b] = t->ids[b];
            pos_check_fails += t->ids[b] != sink_ids[b] || t->shift[b] != 0;
        }
        /* positions kept = fed - evicted, and the shift of the last block
         * is what was evicted after the sinks */
        CHECK_EQ_INT(t->n_tokens, fed - (int32_t)evicted);
    }
    CHECK_EQ_INT(pos_check_fails, 0);
    kvl_kv_seq_stats ss;
    CHECK_EQ_INT(kvl_kv_paged_seq_stats_get(kv, 0, &ss, &err), KVL_OK);
    CHECK(ss.n_evicted_tokens == evicted && ss.policy == p.kind);
    kvl_kv_paged_stats ps;
    kvl_kv_paged_stats_get(kv, &ps);
    CHECK(ps.n_blocks_evicted * bs == evicted);
    CHECK(total <= p.budget_tokens || evicted > 0);
    CHECK_EQ_INT(kvl_kv_paged_release(kv, 0, &err), KVL_OK);
    CHECK_EQ_INT((int)kvl_block_pool_n_free(pool), (int)kvl_block_pool_n_blocks(pool));
    kvl_kv_paged_free(kv);
}

/* Budget >= the stream: window and sinks == full, bit for bit. */
static void test_identical_within_budget(kvl_kv_format fmt) {
    kvl_hparams hp = shape(2, 8, 2, 16);
    const int32_t n = 150;
    kvl_kv_paged *kv = make(&hp, 16, fmt, 64, 256, 5);
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    kvl_error err;
    kvl_kv_policy pol[5] = {
        {.kind = KVL_KV_POLICY_FULL},
        {.kind = KVL_KV_POLICY_WINDOW, .budget_tokens = 160},
        {.kind = KVL_KV_POLICY_SINKS, .budget_tokens = 150, .sinks = 4},
        {.kind = KVL_KV_POLICY_H2O, .budget_tokens = 150, .sinks = 4, .mass_stride = 1},
        {.kind = KVL_KV_POLICY_SNAPKV, .budget_tokens = 150, .sinks = 4}};
    for (int32_t s = 0; s < 5; s++) {
        CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, s, &pol[s], &err), KVL_OK);
        for (int32_t i = 0; i < n; i++) { /* a token at a time, as decode */
            int32_t ev = -1;
            CHECK_EQ_INT(kvl_kv_paged_make_room(kv, s, 1, &ev, &err), KVL_OK);
            CHECK_EQ_INT(ev, 0);
            CHECK_EQ_INT(kvl_kv_paged_reserve(kv, s, 1, &err), KVL_OK);
            feed(&hp, &it, s, i, i, i, 1);
        }
    }
    float q[8 * 16], o[5][8 * 16];
    int mismatches = 0;
    for (int32_t l = 0; l < 2; l++)
        for (int rep = 0; rep < 4; rep++) {
            for (int i = 0; i < 8 * 16; i++)
                q[i] = 3.0f * rnd();
            for (int32_t s = 0; s < 5; s++)
                attend(&hp, &it, l, s, n, q, n - 1, o[s]);
            for (int32_t s = 1; s < 5; s++)
                mismatches += memcmp(o[0], o[s], sizeof o[0]) != 0;
        }
    CHECK_EQ_INT(mismatches, 0);
    /* h2o accumulated (8 heads x 8 queries: mass 64), the others did not */
    const uint64_t *mh = kvl_kv_paged_mass(kv, 3), *mf = kvl_kv_paged_mass(kv, 0);
    double sum_h = 0, sum_f = 0;
    for (uint32_t b = 0; b < 10; b++) {
        sum_h += (double)mh[b] / KVL_KV_MASS_ONE;
        sum_f += (double)mf[b] + (double)kvl_kv_paged_mass(kv, 4)[b];
    }
    CHECK(fabs(sum_h - 64.0) < 1e-3 && sum_f == 0.0);
    kvl_kv_paged_free(kv);
}

/* Attention after eviction == attention over the kept rows with keys
 * rotated at their cache positions (a second, never-evicted sequence). */
static void test_positions(kvl_kv_format fmt, float tol, bool check_off) {
    kvl_hparams hp = shape(1, 4, 2, 16);
    const int32_t bs = 16, n = 200;
    kvl_kv_paged *kv = make(&hp, bs, fmt, 64, 256, 2);
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    kvl_error err;
    kvl_kv_policy p = {.kind = KVL_KV_POLICY_SINKS, .budget_tokens = 96, .sinks = 4};
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 0, &p, &err), KVL_OK);
    for (int32_t i = 0; i < n; i++) {
        CHECK_EQ_INT(kvl_kv_paged_make_room(kv, 0, 1, NULL, &err), KVL_OK);
        int32_t pos = kvl_kv_paged_len(kv, 0);
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 1, &err), KVL_OK);
        feed(&hp, &it, 0, i, pos, pos, 1);
    }
    /* kept: stream 0..15 (sinks) and the last len - 16 tokens */
    const int32_t len = kvl_kv_paged_len(kv, 0), tail = len - bs;
    CHECK(len <= 96 && len > 2 * bs);
    CHECK(kvl_kv_paged_table(kv, 0)->shifted);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 1, len, &err), KVL_OK);
    feed(&hp, &it, 1, 0, 0, 0, bs);
    feed(&hp, &it, 1, n - tail, bs, bs, tail);
    float q[4 * 16], a[4 * 16], b[4 * 16];
    double worst = 0;
    for (int rep = 0; rep < 8; rep++) {
        for (int i = 0; i < 4 * 16; i++)
            q[i] = 4.0f * rnd();
        attend(&hp, &it, 0, 0, len, q, len - 1, a);
        attend(&hp, &it, 0, 1, len, q, len - 1, b);
        for (int i = 0; i < 4 * 16; i++)
            worst = fmax(worst, fabs((double)a[i] - b[i]));
    }
    CHECK(worst < tol);
    if (worst >= tol)
        fprintf(stderr, "  positions, format %d: max |diff| %g >= %g\n", (int)fmt, worst, tol);
    /* and without the shift the result would differ: the rule matters */
    kvl_block_table *t = (kvl_block_table *)kvl_kv_paged_table(kv, 0);
    t->shifted = false;
    attend(&hp, &it, 0, 0, len, q, len - 1, a);
    t->shifted = true;
    double off = 0;
    for (int i = 0; i < 4 * 16; i++)
        off = fmax(off, fabs((double)a[i] - b[i]));
    CHECK(!check_off || off > 100 * tol);
    kvl_kv_paged_free(kv);
}

static void feed_attend(const kvl_hparams *hp, kvl_kv_iface *it, int32_t seq, int32_t i0,
                        int32_t pos0, int32_t n);

/* A forked sequence with a sinks or h2o policy evicts blocks it shares:
 * they are neither written nor freed, the other sequence reads the same
 * bits (h2o: the fork attends, so its victims follow the mass). */
static void test_shared_untouched(kvl_kv_policy_kind kind) {
    kvl_hparams hp = shape(2, 4, 2, 8);
    const int32_t bs = 8;
    kvl_kv_paged *kv = make(&hp, bs, KVL_KV_FMT_INT4, 64, 256, 2);
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    kvl_block_pool *pool = kvl_kv_paged_pool(kv);
    const kvl_block_layout *lay = kvl_kv_paged_layout(kv);
    const int32_t bsz = lay->block_size; /* int4 K: 32 by default when bs 0; here 8 */
    CHECK_EQ_INT(bsz, bs);
    kvl_error err;
    const int32_t n0 = 6 * bs + 3;
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, n0, &err), KVL_OK);
    feed(&hp, &it, 0, 0, 0, 0, n0);
    CHECK_EQ_INT(kvl_kv_paged_fork(kv, 0, 1, &err), KVL_OK);
    const kvl_block_table *t0 = kvl_kv_paged_table(kv, 0);
    /* snapshot of seq 0's blocks and attention */
    const size_t cb = lay->k_head_bytes;
    uint8_t *snap = malloc((size_t)t0->n_blocks * cb);
    for (uint32_t b = 0; b < t0->n_blocks; b++)
        memcpy(snap + b * cb, kvl_block_pool_chunk(pool, t0->ids[b], 1, false, 0), cb);
    float q[4 * 8], before[4 * 8], after[4 * 8];
    for (int i = 0; i < 4 * 8; i++)
        q[i] = rnd();
    attend(&hp, &it, 1, 0, n0, q, n0 - 1, before);
    kvl_kv_policy p = {.kind = kind, .budget_tokens = 4 * bs, .sinks = 1};
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 1, &p, &err), KVL_OK);
    int32_t fed = n0, n_shared_evicted = 0;
    for (int32_t i = 0; i < 5 * bs; i++, fed++) {
        const uint32_t free0 = kvl_block_pool_n_free(pool);
        const kvl_block_table *t1 = kvl_kv_paged_table(kv, 1);
        uint32_t ids[64], own = 0, nb = t1->n_blocks, n_gone = 0;
        memcpy(ids, t1->ids, nb * sizeof(uint32_t));
        int32_t ev = 0;
        CHECK_EQ_INT(kvl_kv_paged_make_room(kv, 1, 1, &ev, &err), KVL_OK);
        /* the victims: shared ones only lose a reference, only those seq 1
         * held alone are freed; never the sink block */
        for (uint32_t j = 0; j < nb; j++) {
            bool kept = false;
            for (uint32_t r = 0; r < t1->n_blocks; r++)
                kept = kept || t1->ids[r] == ids[j];
            if (kept)
                continue;
            CHECK(j > 0);
            n_gone++;
            own += kvl_block_pool_refcount(pool, ids[j]) == 0;
            n_shared_evicted += kvl_block_pool_refcount(pool, ids[j]) == 1;
        }
        CHECK_EQ_INT((int)n_gone * bs, ev);
        CHECK_EQ_INT((int)kvl_block_pool_n_free(pool), (int)(free0 + own));
        int32_t pos = kvl_kv_paged_len(kv, 1);
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 1, 1, &err), KVL_OK);
        if (kind == KVL_KV_POLICY_H2O)
            feed_attend(&hp, &it, 1, fed, pos, 1);
        else
            feed(&hp, &it, 1, fed, pos, pos, 1);
    }
    CHECK(kvl_kv_paged_len(kv, 1) <= 4 * bs);
    /* blocks 1..5 were shared with seq 0 (h2o may keep one as its heavy block) */
    CHECK(n_shared_evicted >= (kind == KVL_KV_POLICY_H2O ? 4 : 5));
    /* the parent (policy full) accumulated nothing; the fork's mass is its own */
    CHECK(kind != KVL_KV_POLICY_H2O || kvl_kv_paged_mass(kv, 0)[0] == 0);
    int changed = 0;
    for (uint32_t b = 0; b < t0->n_blocks; b++) {
        changed +=
            memcmp(snap + b * cb, kvl_block_pool_chunk(pool, t0->ids[b], 1, false, 0), cb) != 0;
        CHECK(kvl_block_pool_refcount(pool, t0->ids[b]) >= 1);
    }
    CHECK_EQ_INT(changed, 0);
    attend(&hp, &it, 1, 0, n0, q, n0 - 1, after);
    CHECK(memcmp(before, after, sizeof before) == 0);
    CHECK_EQ_INT(kvl_block_pool_check(pool, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_paged_release(kv, 1, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_paged_release(kv, 0, &err), KVL_OK);
    CHECK_EQ_INT((int)kvl_block_pool_n_free(pool), (int)kvl_block_pool_n_blocks(pool));
    free(snap);
    kvl_kv_paged_free(kv);
}

/* ---- h2o and snapkv ---------------------------------------------------- */

/* Each block's rank as kvl_kv_policy_rank states it, recomputed here:
 * h2o sum: the mass; h2o mean (score 0 or 2): mass / count, a block never
 * counted ranks highest; snapkv: the largest mass of the pool blocks
 * centred on the block, among the table's nb. */
static uint64_t expected_rank(const kvl_kv_policy *p, const uint64_t *mass, const uint32_t *count,
                              uint32_t nb, uint32_t b) {
    if (p->kind == KVL_KV_POLICY_H2O) {
        if (p->score == KVL_KV_SCORE_SUM)
            return mass[b];
        return count[b] ? mass[b] / count[b] : UINT64_MAX;
    }
    const int32_t half = (p->pool ? p->pool : 1) / 2;
    uint64_t r = 0;
    for (int32_t j = (int32_t)b - half; j <= (int32_t)b + half; j++)
        if (j >= 0 && j < (int32_t)nb && mass[j] > r)
            r = mass[j];
    return r;
}

/* The victims the rule of kv_policy.h names for a table of n_tokens in nb
 * blocks (mass and query counts before) growing by n_new, recomputed here
 * from the rule's statement; *n gets how many, vict[] the logical blocks
 * (any order). */
static void expected_victims(const kvl_kv_policy *p, int32_t bs, int32_t n_tokens, int32_t n_new,
                             const uint64_t *mass, const uint32_t *count, uint32_t nb,
                             uint32_t *vict, uint32_t *n) {
    *n = 0;
    const int32_t over = n_tokens + n_new - p->budget_tokens;
    if (over <= 0)
        return;
    const int32_t want = (over + bs - 1) / bs;
    const int32_t ns = p->sinks > 0 ? (p->sinks + bs - 1) / bs : 0;
    int32_t tail;
    if (p->kind == KVL_KV_POLICY_H2O) {
        const int32_t avail = p->budget_tokens / bs - ns;
        int32_t h = (int32_t)floorf((p->heavy == 0.0f ? 0.5f : p->heavy) * (float)avail);
        h = h < 1 ? 1 : h > avail - 1 ? avail - 1 : h;
        tail = (n_tokens + n_new + bs - 1) / bs - (avail - h); /* the grown table's last R */
    } else {
        const int32_t w = p->obs_window ? p->obs_window : 32;
        tail = n_tokens - w > 0 ? (n_tokens - w) / bs : 0;
    }
    const int32_t end = tail < n_tokens / bs ? tail : n_tokens / bs;
    bool taken[2048] = {false};
    static uint64_t rank[2048];
    for (int32_t b = ns; b < end; b++)
        rank[b] = expected_rank(p, mass, count, nb, (uint32_t)b);
    for (int32_t k = 0; k < want; k++) {
        int32_t best = -1;
        for (int32_t b = ns; b < end; b++)
            if (!taken[b] && (best < 0 || rank[b] < rank[best]))
                best = b;
        if (best < 0)
            return; /* fewer candidates than wanted: *n < want */
        taken[best] = true;
        vict[(*n)++] = (uint32_t)best;
    }
}

/* Make room under a scored policy and check the table against the rule:
 * exactly the expected blocks left, the rest (sinks and the protected
 * tail among them) kept in order with their mass. */
static kvl_kv_policy scored_policy; /* the policy under test */
static uint32_t ref_count[2048];    /* queries that added to each block's mass, kept here */

static kvl_status scored_room(kvl_kv_paged *kv, int32_t seq, int32_t n_new, int32_t *ev) {
    const kvl_block_table *t = kvl_kv_paged_table(kv, seq);
    kvl_error err;
    static uint32_t ids[2048], vict[2048];
    static uint64_t mass[2048];
    const uint32_t nb = t->n_blocks;
    const int32_t len = t->n_tokens, bs = t->block_size;
    memcpy(ids, t->ids, nb * sizeof(uint32_t));
    memcpy(mass, kvl_kv_paged_mass(kv, seq), nb * sizeof(uint64_t));
    int cbad = 0; /* the store counted the queries as this test did */
    for (uint32_t b = 0; b < nb; b++)
        cbad += kvl_kv_paged_mass_count(kv, seq)[b] != ref_count[b];
    CHECK_EQ_INT(cbad, 0);
    kvl_status st = kvl_kv_paged_make_room(kv, seq, n_new, ev, &err);
    if (st != KVL_OK) {
        CHECK_EQ_INT(t->n_tokens, len);
        CHECK(memcmp(ids, t->ids, nb * sizeof(uint32_t)) == 0);
        return st;
    }
    uint32_t n = 0;
    expected_victims(&scored_policy, bs, len, n_new, mass, ref_count, nb, vict, &n);
    CHECK_EQ_INT(*ev, (int32_t)n * bs);
    bool gone[2048] = {false};
    for (uint32_t i = 0; i < n; i++)
        gone[vict[i]] = true;
    uint32_t j = 0;
    int bad = 0;
    for (uint32_t b = 0; b < nb; b++) {
        if (gone[b])
            continue;
        bad += j >= t->n_blocks || t->ids[j] != ids[b] || kvl_kv_paged_mass(kv, seq)[j] != mass[b];
        ref_count[j] = ref_count[b]; /* the counts move with the table */
        j++;
    }
    for (uint32_t b = j; b < nb; b++)
        ref_count[b] = 0;
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT((int)j, (int)t->n_blocks);
    return st;
}

/* Feed stream tokens [i0, i0 + n) at cache positions from pos0 (keys
 * rotated there), then attend every new position in every layer with a
 * random query, as the forward pass would (this accumulates mass). */
static void feed_attend(const kvl_hparams *hp, kvl_kv_iface *it, int32_t seq, int32_t i0,
                        int32_t pos0, int32_t n) {
    feed(hp, it, seq, i0, pos0, pos0, n);
    float q[8 * 64], o[8 * 64];
    const kvl_kv_policy *p = &scored_policy;
    const int32_t bs = kvl_kv_paged_table(it->ctx, seq)->block_size;
    const int32_t len = kvl_kv_paged_len(it->ctx, seq);
    for (int32_t t = 0; t < n; t++) { /* which queries add mass (kv_policy.h), counted */
        const int32_t n_ctx = pos0 + t + 1, w = p->obs_window ? p->obs_window : 32;
        const int32_t dflt = KVL_KV_POLICY_DEFAULT_MASS_STRIDE;
        const int32_t stride = p->mass_stride ? p->mass_stride : bs < dflt ? bs : dflt;
        const bool adds = p->kind == KVL_KV_POLICY_H2O ? (n_ctx - 1) % stride == 0
                                                       : len > p->budget_tokens && n_ctx > len - w;
        for (int32_t b = 0; adds && b < (n_ctx + bs - 1) / bs; b++)
            ref_count[b]++;
    }
    for (int32_t l = 0; l < hp->n_layers; l++)
        for (int32_t t = 0; t < n; t++) {
            for (int64_t i = 0; i < hp->n_heads * hp->head_dim; i++)
                q[i] = 3.0f * rnd();
            attend(hp, it, l, seq, pos0 + t + 1, q, pos0 + t, o);
        }
}

/* Randomized h2o / snapkv streams, every format: a prompt past the budget
 * is cut to it (make_room 0), then decoding never holds more than the
 * budget; every eviction takes exactly the least-mass candidates (ties:
 * the oldest), never a sink block or one of the protected tail, frees its
 * blocks at once, and moves the mass with the table. */
static void random_scored(uint32_t seed) {
    rng = 0x5851f42d4c957f2dull * (seed + 1);
    kvl_kv_format fmt;
    int32_t bs;
    pick_format(&fmt, &bs);
    kvl_hparams hp = shape(2, 4, 2, 8);
    const int32_t max_ctx = 30 * bs;
    kvl_kv_paged *kv = make(&hp, bs, fmt, 32, max_ctx, 1);
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    kvl_block_pool *pool = kvl_kv_paged_pool(kv);
    static const float heavies[] = {0.0f, 0.25f, 0.5f, 0.9f};
    kvl_kv_policy p = {.kind = rnd_u32() % 2 ? KVL_KV_POLICY_H2O : KVL_KV_POLICY_SNAPKV,
                       .sinks = rnd_in(0, 2 * bs),
                       .heavy = heavies[rnd_u32() % 4],
                       .obs_window = rnd_in(1, 2 * bs)};
    if (p.kind == KVL_KV_POLICY_H2O) { /* every score; stride 0 (default) .. bs */
        p.score = rnd_in(0, KVL_KV_SCORE_MEAN);
        p.mass_stride = rnd_in(0, bs);
    } else
        p.pool = 2 * rnd_in(0, 4) - 1; /* -1 -> 0 (default), 1, 3, 5, 7 */
    p.pool = p.pool < 0 ? 0 : p.pool;
    memset(ref_count, 0, sizeof ref_count);
    const int32_t ns = kvl_kv_policy_sink_blocks(&p, bs);
    const int32_t lo = (ns + 2) * bs + (p.kind == KVL_KV_POLICY_SNAPKV ? p.obs_window : 0);
    p.budget_tokens = rnd_in(lo, max_ctx - bs);
    scored_policy = p;
    kvl_error err;
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 0, &p, &err), KVL_OK);
    int32_t fed = 0, ev = 0;
    if (rnd_u32() % 4 != 0) { /* a prompt past the budget, prefilled whole, then cut */
        const int32_t n = rnd_in(p.budget_tokens + 1, max_ctx);
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, n, &err), KVL_OK);
        feed_attend(&hp, &it, 0, 0, 0, n);
        const uint32_t free0 = kvl_block_pool_n_free(pool);
        CHECK_EQ_INT(scored_room(kv, 0, 0, &ev), KVL_OK);
        CHECK_EQ_INT((int)kvl_block_pool_n_free(pool), (int)(free0 + (uint32_t)(ev / bs)));
        CHECK(kvl_kv_paged_len(kv, 0) <= p.budget_tokens && ev > 0);
        fed = n;
    }
    const int32_t total = fed + rnd_in(p.budget_tokens, 3 * max_ctx);
    while (fed < total) {
        int32_t n_new = rnd_u32() % 4 ? 1 : rnd_in(2, bs);
        n_new = n_new < total - fed ? n_new : total - fed;
        const uint32_t free0 = kvl_block_pool_n_free(pool);
        kvl_status st = scored_room(kv, 0, n_new, &ev);
        if (st == KVL_E_LIMIT) { /* too big a chunk for the candidates */
            n_new = 1;
            st = scored_room(kv, 0, n_new, &ev);
        }
        CHECK_EQ_INT(st, KVL_OK);
        CHECK_EQ_INT((int)kvl_block_pool_n_free(pool), (int)(free0 + (uint32_t)(ev / bs)));
        const int32_t pos = kvl_kv_paged_len(kv, 0);
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, n_new, &err), KVL_OK);
        feed_attend(&hp, &it, 0, fed, pos, n_new);
        fed += n_new;
        CHECK(kvl_kv_paged_len(kv, 0) <= p.budget_tokens);
        CHECK_EQ_INT(kvl_block_pool_check(pool, &err), KVL_OK);
    }
    CHECK_EQ_INT(kvl_kv_paged_release(kv, 0, &err), KVL_OK);
    CHECK_EQ_INT((int)kvl_block_pool_n_free(pool), (int)kvl_block_pool_n_blocks(pool));
    for (uint32_t b = 0; b < 30; b++) /* release clears the mass */
        CHECK(kvl_kv_paged_mass(kv, 0)[b] == 0);
    kvl_kv_paged_free(kv);
}

/* The mass attention adds equals, block by block, the softmax weights
 * summed over the heads, computed here in double from the stored f32 keys
 * (no rotary: rope_dim 0), for block sizes that split the 64-row tiles
 * (4, 16), cross them (48) and force one head per pass (1); boost scales
 * the keys after the first tile so that the max passes the first tile's by
 * far more than 60 (the rescaling path). */
static void test_mass_reference(int32_t bs, float boost) {
    kvl_hparams hp = shape(1, 4, 2, 16);
    hp.rope_dim = 0;
    const int32_t n = 150, hd = 16;
    kvl_kv_paged *kv = make(&hp, bs, KVL_KV_FMT_F32, 2 * (256 / bs + 2), 256, 2);
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    kvl_error err;
    kvl_kv_policy h = {.kind = KVL_KV_POLICY_H2O, .budget_tokens = 256 / bs * bs, .mass_stride = 1};
    kvl_kv_policy w = {.kind = KVL_KV_POLICY_WINDOW, .budget_tokens = 256 / bs * bs};
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 0, &h, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 1, &w, &err), KVL_OK);
    float k[2 * 16], v[2 * 16];
    for (int32_t s = 0; s < 2; s++) {
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, s, n, &err), KVL_OK);
        for (int32_t p = 0; p < n; p++) {
            gen_kv(&hp, 0, p, k, v);
            for (int32_t i = 0; i < 2 * 16 && p >= 64; i++)
                k[i] *= boost; /* later tiles' scores far above the first's */
            it.store(it.ctx, 0, s, p, k, v);
        }
    }
    float q[4 * 16], a[4 * 16], b[4 * 16];
    for (int i = 0; i < 4 * 16; i++)
        q[i] = 4.0f * rnd();
    attend(&hp, &it, 0, 0, n, q, n - 1, a); /* h2o: accumulates */
    attend(&hp, &it, 0, 1, n, q, n - 1, b); /* window: does not */
    CHECK(memcmp(a, b, sizeof a) == 0);     /* the same bits either way */
    static double ref[256];
    memset(ref, 0, sizeof ref);
    const double scale = 1.0 / sqrt((double)hd);
    for (int32_t hq = 0; hq < 4; hq++) {
        double sc[150], mx = -1e300, sum = 0;
        for (int32_t p = 0; p < n; p++) {
            gen_kv(&hp, 0, p, k, v);
            double d = 0;
            for (int32_t i = 0; i < hd; i++)
                d += (double)q[hq * hd + i] * k[(hq / 2) * hd + i] * (p >= 64 ? boost : 1.0f);
            sc[p] = d * scale;
            mx = sc[p] > mx ? sc[p] : mx;
        }
        for (int32_t p = 0; p < n; p++)
            sum += exp(sc[p] - mx);
        for (int32_t p = 0; p < n; p++)
            ref[p / bs] += exp(sc[p] - mx) / sum;
    }
    const uint64_t *m = kvl_kv_paged_mass(kv, 0);
    double worst = 0, total = 0;
    for (int32_t blk = 0; blk < (n + bs - 1) / bs; blk++) {
        worst = fmax(worst, fabs((double)m[blk] / KVL_KV_MASS_ONE - ref[blk]));
        total += (double)m[blk] / KVL_KV_MASS_ONE;
    }
    CHECK(worst < 2e-5);
    CHECK(fabs(total - 4.0) < 1e-4);
    if (worst >= 2e-5)
        fprintf(stderr, "  mass, bs %d: max |diff| %g\n", (int)bs, worst);
    for (int32_t blk = 0; blk < 256 / bs; blk++)
        CHECK(kvl_kv_paged_mass(kv, 1)[blk] == 0);
    kvl_kv_paged_free(kv);
}

/* Keys of block b are c[b] * u (one direction u), every query is u: a
 * block's scores, and so its share of the attention, grow with c[b]. */
static void feed_scaled(kvl_kv_iface *it, int32_t seq, int32_t pos0, int32_t n, int32_t bs,
                        const float *c) {
    float k[2 * 8], v[2 * 8];
    for (int32_t t = 0; t < n; t++) {
        for (int32_t i = 0; i < 2 * 8; i++) {
            k[i] = c[(pos0 + t) / bs] * (i % 8 == 0 ? 1.0f : 0.0f);
            v[i] = (float)(pos0 + t);
        }
        it->store(it->ctx, 0, seq, pos0 + t, k, v);
    }
}

static void attend_u(const kvl_hparams *hp, kvl_kv_iface *it, int32_t seq, int32_t n_ctx) {
    float q[2 * 8] = {0}, o[2 * 8];
    q[0] = q[8] = 8.0f;
    attend(hp, it, 0, seq, n_ctx, q, 0, o);
}

/* h2o, constructed: 10 blocks of 4 under a budget of 40 (1 sink block,
 * heavy 0.5: 4 heavy, 5 recent counting the block the next token opens),
 * block 3's keys score lowest: the next token evicts block 3, and only it. */
static void test_h2o_constructed(void) {
    kvl_hparams hp = shape(1, 2, 2, 8);
    hp.rope_dim = 0;
    const int32_t bs = 4;
    kvl_kv_paged *kv = make(&hp, bs, KVL_KV_FMT_F32, 16, 64, 1);
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    kvl_error err;
    kvl_kv_policy p = {.kind = KVL_KV_POLICY_H2O, .budget_tokens = 40, .sinks = 4};
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 0, &p, &err), KVL_OK);
    /* candidates are blocks 1..5; block 3 lowest, then 1 */
    const float c[16] = {1.0f, 0.2f, 1.2f, -1.0f, 0.9f, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (int32_t i = 0; i < 40; i++) {
        CHECK_EQ_INT(kvl_kv_paged_make_room(kv, 0, 1, NULL, &err), KVL_OK);
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 1, &err), KVL_OK);
        feed_scaled(&it, 0, i, 1, bs, c);
        attend_u(&hp, &it, 0, i + 1);
    }
    const kvl_block_table *t = kvl_kv_paged_table(kv, 0);
    uint32_t ids[10];
    memcpy(ids, t->ids, sizeof ids);
    const uint64_t *m = kvl_kv_paged_mass(kv, 0);
    CHECK(m[3] < m[1] && m[1] < m[4] && m[4] < m[2]);
    int32_t ev = 0;
    CHECK_EQ_INT(kvl_kv_paged_make_room(kv, 0, 1, &ev, &err), KVL_OK);
    CHECK_EQ_INT(ev, bs);
    const uint32_t want[9] = {ids[0], ids[1], ids[2], ids[4], ids[5],
                              ids[6], ids[7], ids[8], ids[9]};
    CHECK(t->n_blocks == 9 && memcmp(t->ids, want, sizeof want) == 0);
    /* blocks after the victim moved down one block: their shift grew by 4 */
    CHECK(t->shift[2] == 0 && t->shift[3] == bs && t->shift[8] == bs);
    kvl_kv_paged_free(kv);
}

/* h2o's two scores on one table: an old block that many queries gave a
 * little (mass 100 over 100 queries) and a newer one that few gave more
 * (30 over 10): the sum evicts the newer, the mean the older. 8 blocks of
 * 4, budget 24 (6 blocks, no sinks, heavy 0.5: 3 heavy, 3 recent). */
static void test_h2o_scores(void) {
    const uint64_t mass[8] = {500, 100, 30, 400, 900, 0, 0, 0};
    const uint32_t count[8] = {100, 100, 10, 50, 60, 5, 3, 1};
    uint64_t rank[8];
    kvl_kv_cand cand[8];
    uint32_t out[8], n = 0;
    kvl_error err;
    kvl_kv_policy p = {.kind = KVL_KV_POLICY_H2O, .budget_tokens = 24, .score = KVL_KV_SCORE_SUM};
    kvl_kv_policy_rank(&p, mass, count, 8, rank);
    CHECK(rank[1] == 100 && rank[2] == 30);
    CHECK_EQ_INT(kvl_kv_policy_victims_scored(&p, 4, 24, 1, rank, cand, out, &n, &err), KVL_OK);
    CHECK(n == 1 && out[0] == 2);
    p.score = 0; /* the default: mean */
    kvl_kv_policy_rank(&p, mass, count, 8, rank);
    CHECK(rank[1] == 1 && rank[2] == 3 && rank[0] == 5 && rank[3] == 8);
    CHECK_EQ_INT(kvl_kv_policy_victims_scored(&p, 4, 24, 1, rank, cand, out, &n, &err), KVL_OK);
    CHECK(n == 1 && out[0] == 1);
    const uint32_t none[8] = {0}; /* never counted: ranks highest, kept */
    kvl_kv_policy_rank(&p, mass, none, 8, rank);
    CHECK(rank[0] == UINT64_MAX && rank[7] == UINT64_MAX);
    /* snapkv pool 3: the largest of each block and its two neighbours */
    kvl_kv_policy s = {.kind = KVL_KV_POLICY_SNAPKV, .budget_tokens = 24, .pool = 3};
    kvl_kv_policy_rank(&s, mass, NULL, 8, rank);
    CHECK(rank[0] == 500 && rank[1] == 500 && rank[2] == 400 && rank[5] == 900 && rank[7] == 0);
}

/* snapkv, constructed: a 60-token prompt (15 blocks of 4) under a budget
 * of 24 with a 4-token observation window and 1 sink block: the cut keeps
 * block 0, the 4 blocks among 1..13 whose keys score highest, and block
 * 14 (the window); queries before the window add no mass. */
static void test_snapkv_constructed(void) {
    kvl_hparams hp = shape(1, 2, 2, 8);
    hp.rope_dim = 0;
    const int32_t bs = 4, n = 60;
    kvl_kv_paged *kv = make(&hp, bs, KVL_KV_FMT_F32, 20, 64, 1);
    kvl_kv_iface it = kvl_kv_paged_iface(kv);
    kvl_error err;
    kvl_kv_policy p = {
        .kind = KVL_KV_POLICY_SNAPKV, .budget_tokens = 24, .sinks = 4, .obs_window = 4};
    CHECK_EQ_INT(kvl_kv_paged_set_policy(kv, 0, &p, &err), KVL_OK);
    float c[16];
    for (int32_t b = 0; b < 16; b++)
        c[b] = 0.1f * (float)((b * 7) % 13); /* distinct for blocks 1..13 */
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, n, &err), KVL_OK);
    feed_scaled(&it, 0, 0, n, bs, c);
    for (int32_t i = 0; i < n - 4; i++) /* before the window: no mass */
        attend_u(&hp, &it, 0, i + 1);
    for (uint32_t b = 0; b < 15; b++)
        CHECK(kvl_kv_paged_mass(kv, 0)[b] == 0);
    for (int32_t i = n - 4; i < n; i++)
        attend_u(&hp, &it, 0, i + 1);
    const kvl_block_table *t = kvl_kv_paged_table(kv, 0);
    uint32_t ids[15];
    memcpy(ids, t->ids, sizeof ids);
    int32_t ev = 0;
    CHECK_EQ_INT(kvl_kv_paged_make_room(kv, 0, 0, &ev, &err), KVL_OK);
    CHECK_EQ_INT(ev, 36);
    CHECK_EQ_INT(kvl_kv_paged_len(kv, 0), 24);
    /* the top 4 of c over blocks 1..13, in table order */
    uint32_t keep[6] = {ids[0]}, nk = 1;
    for (int32_t b = 1; b < 14; b++) {
        int32_t above = 0;
        for (int32_t o = 1; o < 14; o++)
            above += c[o] > c[b];
        if (above < 4)
            keep[nk++] = ids[b];
    }
    keep[nk++] = ids[14];
    CHECK_EQ_INT((int)nk, 6);
    CHECK(t->n_blocks == 6 && memcmp(t->ids, keep, sizeof keep) == 0);
    /* decoding past the cut: no more accumulation (the sequence is within
     * its budget), the next eviction is the least-scored kept prompt block */
    uint64_t m1[6];
    memcpy(m1, kvl_kv_paged_mass(kv, 0), sizeof m1);
    attend_u(&hp, &it, 0, 24);
    CHECK(memcmp(m1, kvl_kv_paged_mass(kv, 0), sizeof m1) == 0);
    uint32_t low = 1;
    for (uint32_t b = 2; b < 5; b++)
        low = m1[b] < m1[low] ? b : low;
    const uint32_t gone = keep[low];
    CHECK_EQ_INT(kvl_kv_paged_make_room(kv, 0, 1, &ev, &err), KVL_OK);
    CHECK_EQ_INT(ev, bs);
    for (uint32_t b = 0; b < t->n_blocks; b++)
        CHECK(t->ids[b] != gone);
    kvl_kv_paged_free(kv);
}

/* The engine's request field: sinks and h2o are accepted (the engine runs
 * every policy: tests/test_engine_policy.c), h2o with heavy out of (0, 1)
 * is refused naming the field, an unknown kind is invalid. */
static void test_engine_refuses(void) {
    kvl_model *m = NULL;
    kvl_error err;
    if (kvl_model_load(kvt_shared("models/stories260K.gguf"), NULL, &m, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        CHECK(false);
        return;
    }
    kvl_engine_params ep = kvl_engine_defaults();
    ep.n_threads = 1;
    ep.max_ctx = 256;
    kvl_engine *e = NULL;
    CHECK_EQ_INT(kvl_engine_init(m, &ep, &e, &err), KVL_OK);
    kvl_request_params rp = kvl_request_defaults();
    CHECK_EQ_INT(rp.kv_policy.kind, KVL_KV_POLICY_FULL);
    CHECK_EQ_INT(rp.kv_policy.sinks, KVL_KV_POLICY_DEFAULT_SINKS);
    rp.prompt = "Once upon a time";
    rp.max_tokens = 4;
    rp.kv_policy.kind = KVL_KV_POLICY_SINKS;
    rp.kv_policy.budget_tokens = 64;
    uint64_t id = 0;
    rp.kv_policy.kind = KVL_KV_POLICY_H2O;
    rp.kv_policy.heavy = 1.0f;
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "heavy 1 not in (0, 1)");
    rp.kv_policy.heavy = 0.0f; /* the default */
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_OK);
    rp.kv_policy.kind = KVL_KV_POLICY_SINKS; /* tests/test_engine_policy.c runs it */
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_OK);
    rp.kv_policy.kind = (kvl_kv_policy_kind)9;
    CHECK_EQ_INT(kvl_engine_submit(e, &rp, &id, &err), KVL_E_INVALID);
    kvl_engine_free(e);
    kvl_model_free(m);
}

int main(void) {
    test_engine_refuses();
    test_names_and_checks();
    for (uint32_t seed = 0; seed < 60; seed++)
        random_stream(seed);
    test_identical_within_budget(KVL_KV_FMT_F32);
    test_identical_within_budget(KVL_KV_FMT_INT4);
    test_identical_within_budget(KVL_KV_FMT_FP8_E4M3);
    test_positions(KVL_KV_FMT_F32, 2e-5f, true);
    /* f16: the reference's keys round differently (rotated elsewhere) */
    test_positions(KVL_KV_FMT_F16, 2e-2f, false);
    test_shared_untouched(KVL_KV_POLICY_SINKS);
    test_shared_untouched(KVL_KV_POLICY_H2O);
    for (uint32_t seed = 0; seed < 40; seed++)
        random_scored(seed);
    test_mass_reference(4, 1.0f);
    test_mass_reference(48, 1.0f);
    test_mass_reference(1, 1.0f);
    test_mass_reference(16, 40.0f); /* the reference max moves up */
    test_mass_reference(48, 40.0f);
    test_h2o_constructed();
    test_h2o_scores();
    test_snapkv_constructed();
    return kvt_finish("test_kv_policy");
}
