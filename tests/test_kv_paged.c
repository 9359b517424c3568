/*
 * The paged KV store: bit-identical attention to the contiguous store for
 * scrambled block placements (MHA, GQA, MQA; several block sizes and
 * sequences; positions across many blocks); fork and copy-on-write with the
 * exact free queue and reference counts after every step (a pool of 11
 * blocks of 16); exhaustion and bad arguments leave everything unchanged;
 * every test ends with zero referenced blocks.
 */
#include "kv/kv_contig.h"
#include "kv/kv_paged.h"

#include "kvt_pool.h"
#include "testutil.h"

#include <stdlib.h>

static kvl_hparams shape(int64_t n_layers, int64_t n_heads, int64_t n_kv_heads, int64_t hd) {
    kvl_hparams hp = {0};
    hp.n_layers = n_layers;
    hp.n_heads = n_heads;
    hp.n_kv_heads = n_kv_heads;
    hp.head_dim = hd;
    hp.dim = n_heads * hd;
    hp.ctx_len = 256;
    return hp;
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd_u32(void) { return (uint32_t)(kvt_xorshift64(&rng) >> 32); }
static float rnd(void) { return (float)(rnd_u32() >> 8) / (float)(1 << 24) * 2.0f - 1.0f; }

/* Deterministic K/V for (tag, layer, pos): tag tells branches apart. */
static void gen_kv(const kvl_hparams *hp, uint32_t tag, int32_t layer, int32_t pos, float *k,
                   float *v) {
    uint64_t s =
        ((uint64_t)tag << 40) ^ ((uint64_t)layer << 24) ^ (uint64_t)pos ^ 0x9e3779b97f4a7c15ull;
    int64_t n = hp->n_kv_heads * hp->head_dim;
    for (int64_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        k[i] = (float)(int32_t)(s >> 40 & 0xffffff) / (float)(1 << 23) - 1.0f;
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        v[i] = (float)(int32_t)(s >> 40 & 0xffffff) / (float)(1 << 23) - 1.0f;
    }
}

/* Store positions [p0, p1) of every layer, as the forward pass would. */
static void feed(const kvl_hparams *hp, const kvl_kv_iface *kv, int32_t seq, uint32_t tag,
                 int32_t p0, int32_t p1) {
    int64_t n = hp->n_kv_heads * hp->head_dim;
    float *k = malloc(sizeof(float) * (size_t)n), *v = malloc(sizeof(float) * (size_t)n);
    for (int32_t l = 0; l < hp->n_layers; l++)
        for (int32_t p = p0; p < p1; p++) {
            gen_kv(hp, tag, l, p, k, v);
            kv->store(kv->ctx, l, seq, p, k, v);
        }
    free(k);
    free(v);
}

/* Attention of (seq_a in a) and (seq_b in b) over n_ctx positions, every
 * layer, a random q, heads split in two ranges: identical bits? */
static bool same_attention(const kvl_hparams *hp, const kvl_kv_iface *a, int32_t seq_a,
                           const kvl_kv_iface *b, int32_t seq_b, int32_t n_ctx) {
    int64_t qd = hp->n_heads * hp->head_dim;
    float *q = malloc(sizeof(float) * (size_t)qd);
    float *oa = malloc(sizeof(float) * (size_t)qd), *ob = malloc(sizeof(float) * (size_t)qd);
    float *scratch = malloc(sizeof(float) * (size_t)(n_ctx + 1));
    float scale = 1.0f / sqrtf((float)hp->head_dim);
    int32_t mid = (int32_t)(hp->n_heads / 2 + 1 > hp->n_heads ? hp->n_heads : hp->n_heads / 2 + 1);
    bool ok = true;
    for (int32_t l = 0; l < hp->n_layers; l++) {
        for (int64_t i = 0; i < qd; i++)
            q[i] = rnd() * 2.0f;
        a->attend(a->ctx, l, seq_a, n_ctx, q, oa, 0, (int32_t)hp->n_heads, scale, scratch);
        b->attend(b->ctx, l, seq_b, n_ctx, q, ob, 0, mid, scale, scratch);
        b->attend(b->ctx, l, seq_b, n_ctx, q, ob, mid, (int32_t)hp->n_heads, scale, scratch);
        ok = ok && memcmp(oa, ob, sizeof(float) * (size_t)qd) == 0;
        /* not trivially equal: the output depends on the data */
        bool nonzero = false;
        for (int64_t i = 0; i < qd; i++)
            nonzero = nonzero || oa[i] != 0.0f;
        ok = ok && nonzero;
    }
    free(q);
    free(oa);
    free(ob);
    free(scratch);
    return ok;
}

/* ---- everything observable about a paged store, for all-or-nothing checks ---- */

#define MAXB 64
#define MAXS 4
typedef struct snap {
    uint32_t ref[MAXB], fill[MAXB], order[MAXB + 1], n_order;
    uint32_t ids[MAXS][MAXB], n_blocks[MAXS];
    int32_t n_tokens[MAXS];
    int64_t st[8];
} snap;

static void take(kvl_kv_paged *kv, snap *s) {
    memset(s, 0, sizeof *s);
    kvl_block_pool *p = kvl_kv_paged_pool(kv);
    uint32_t nb = kvl_block_pool_n_blocks(p);
    for (uint32_t i = 0; i < nb && i < MAXB; i++) {
        s->ref[i] = kvl_block_pool_refcount(p, i);
        s->fill[i] = kvl_block_pool_fill(p, i);
    }
    s->n_order = kvl_block_pool_free_order(p, s->order, MAXB + 1);
    for (int32_t q = 0; q < kvl_kv_paged_max_seqs(kv) && q < MAXS; q++) {
        const kvl_block_table *t = kvl_kv_paged_table(kv, q);
        s->n_blocks[q] = t->n_blocks;
        s->n_tokens[q] = t->n_tokens;
        memcpy(s->ids[q], t->ids, sizeof(uint32_t) * t->n_blocks);
    }
    kvl_kv_paged_stats ps;
    kvl_kv_paged_stats_get(kv, &ps);
    int64_t v[8] = {ps.pool.n_blocks_free,
                    ps.pool.n_blocks_shared,
                    ps.pool.n_slots_filled,
                    ps.n_seqs_active,
                    ps.n_tokens,
                    ps.n_blocks_logical,
                    (int64_t)ps.bytes_saved,
                    ps.n_blocks_copied};
    memcpy(s->st, v, sizeof v);
}

static bool same(const snap *a, const snap *b) { return memcmp(a, b, sizeof *a) == 0; }

#define QUEUE(kv, ...) KVT_QUEUE(kvl_kv_paged_pool(kv), __VA_ARGS__)
#define QUEUE_EMPTY(kv) KVT_QUEUE_EMPTY(kvl_kv_paged_pool(kv))
/* Reference counts of blocks 0..10 (the 11-block pool). */
#define REFS(kv, ...) KVT_REFS(kvl_kv_paged_pool(kv), 11, __VA_ARGS__)

/* The block table of seq is exactly the given ids. */
#define TABLE(kv, seq, ...)                                                                        \
    do {                                                                                           \
        const uint32_t _w[] = {__VA_ARGS__};                                                       \
        const kvl_block_table *_t = kvl_kv_paged_table(kv, seq);                                   \
        uint32_t _n = (uint32_t)(sizeof _w / sizeof _w[0]);                                        \
        CHECK_EQ_INT(_t->n_blocks, _n);                                                            \
        CHECK(_t->n_blocks == _n && memcmp(_t->ids, _w, sizeof _w) == 0);                          \
    } while (0)

static void expect_idle(kvl_kv_paged *kv) {
    kvl_kv_paged_stats s;
    kvl_kv_paged_stats_get(kv, &s);
    CHECK_EQ_INT(s.pool.n_blocks_used, 0);
    CHECK_EQ_INT(s.pool.n_blocks_shared, 0);
    CHECK_EQ_INT(s.pool.n_slots_filled, 0);
    CHECK_EQ_INT(s.n_tokens, 0);
    kvl_error err;
    CHECK_EQ_INT(kvl_block_pool_check(kvl_kv_paged_pool(kv), &err), KVL_OK);
}

static void release_all(kvl_kv_paged *kv) {
    kvl_error err;
    for (int32_t s = 0; s < kvl_kv_paged_max_seqs(kv); s++)
        CHECK_EQ_INT(kvl_kv_paged_release(kv, s, &err), KVL_OK);
    expect_idle(kv);
}

/* An 11-block pool of 16 positions for this shape. */
static kvl_kv_paged *make_11x16(const kvl_hparams *hp, int32_t max_seqs) {
    kvl_block_layout lay;
    kvl_error err;
    CHECK_EQ_INT(kvl_block_layout_init(hp, 16, &lay, &err), KVL_OK);
    kvl_kv_paged_params pp = {
        .budget = 11 * lay.block_bytes, .block_size = 16, .max_seqs = max_seqs, .max_ctx = 176};
    kvl_kv_paged *kv = NULL;
    CHECK_EQ_INT(kvl_kv_paged_init(hp, &pp, &kv, &err), KVL_OK);
    return kv;
}

/* ---- paged == contiguous, bit for bit, for scrambled placements ---- */

static void test_bit_identical(kvl_hparams hp, int32_t bs) {
    kvl_error err;
    const int32_t n_seqs = 3, max_ctx = 80, n_blocks = 3 * ((max_ctx + bs - 1) / bs) + 4;
    kvl_block_layout lay;
    CHECK_EQ_INT(kvl_block_layout_init(&hp, bs, &lay, &err), KVL_OK);
    kvl_kv_paged_params pp = {.budget = (size_t)n_blocks * lay.block_bytes,
                              .block_size = bs,
                              .max_seqs = n_seqs,
                              .max_ctx = max_ctx};
    kvl_kv_paged *kv = NULL;
    kvl_kv_contig *c = NULL;
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &kv, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_contig_init(&hp, n_seqs, max_ctx, &c, &err), KVL_OK);
    if (!kv || !c)
        return;
    kvl_kv_iface ip = kvl_kv_paged_iface(kv), ic = kvl_kv_contig_iface(c);

    /* scramble the free queue: take every block, give them back shuffled */
    kvl_block_pool *pool = kvl_kv_paged_pool(kv);
    uint32_t *ids = malloc(sizeof(uint32_t) * (size_t)n_blocks);
    uint32_t *order = malloc(sizeof(uint32_t) * (size_t)n_blocks);
    CHECK_EQ_INT(kvl_block_pool_alloc(pool, (uint32_t)n_blocks, ids, &err), KVL_OK);
    for (int32_t i = n_blocks - 1; i > 0; i--) {
        int32_t j = (int32_t)(rnd_u32() % (uint32_t)(i + 1));
        uint32_t t = ids[i];
        ids[i] = ids[j];
        ids[j] = t;
    }
    kvl_block_pool_decref(pool, ids, (uint32_t)n_blocks);
    CHECK_EQ_INT(kvl_block_pool_free_order(pool, order, (uint32_t)n_blocks), n_blocks);
    CHECK(memcmp(order, ids, sizeof(uint32_t) * (size_t)n_blocks) == 0);
    free(ids);
    free(order);

    /* prompts in interleaved chunks, then decode steps for all three */
    const int32_t seqs[3] = {0, 1, 2}, one[3] = {1, 1, 1};
    struct {
        int32_t seq, n;
    } chunks[] = {{0, 10}, {1, 20}, {0, 27}, {2, 31}, {2, 22}};
    int32_t len[3] = {0, 0, 0};
    for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
        int32_t s = chunks[i].seq, n = chunks[i].n;
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, s, n, &err), KVL_OK);
        feed(&hp, &ip, s, 100 + (uint32_t)s, len[s], len[s] + n);
        feed(&hp, &ic, s, 100 + (uint32_t)s, len[s], len[s] + n);
        len[s] += n;
    }
    for (int step = 0; step < 12; step++) {
        CHECK_EQ_INT(kvl_kv_paged_reserve_batch(kv, 3, seqs, one, &err), KVL_OK);
        for (int32_t s = 0; s < 3; s++) {
            feed(&hp, &ip, s, 100 + (uint32_t)s, len[s], len[s] + 1);
            feed(&hp, &ic, s, 100 + (uint32_t)s, len[s], len[s] + 1);
            len[s]++;
        }
    }
    CHECK_EQ_INT(kvl_kv_paged_len(kv, 0), 49);
    CHECK_EQ_INT(kvl_kv_paged_len(kv, 1), 32);
    CHECK_EQ_INT(kvl_kv_paged_len(kv, 2), 65);

    /* placement really is scrambled: some table goes down somewhere */
    bool non_monotonic = false;
    for (int32_t s = 0; s < 3; s++) {
        const kvl_block_table *t = kvl_kv_paged_table(kv, s);
        CHECK_EQ_INT(t->n_blocks, (uint32_t)((len[s] + bs - 1) / bs));
        for (uint32_t b = 1; b < t->n_blocks; b++)
            non_monotonic = non_monotonic || t->ids[b] < t->ids[b - 1];
    }
    CHECK(non_monotonic);

    for (int32_t s = 0; s < 3; s++) {
        int32_t cuts[] = {1, bs - 1, bs, bs + 1, 2 * bs + 3, len[s] - 1, len[s]};
        for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
            int32_t n_ctx = cuts[i];
            if (n_ctx < 1 || n_ctx > len[s])
                continue;
            bool ok = same_attention(&hp, &ic, s, &ip, s, n_ctx);
            CHECK(ok);
            if (!ok)
                fprintf(stderr, "  shape %lld/%lld/%lld/%lld bs %d seq %d n_ctx %d differs\n",
                        (long long)hp.n_layers, (long long)hp.n_heads, (long long)hp.n_kv_heads,
                        (long long)hp.head_dim, (int)bs, (int)s, (int)n_ctx);
        }
    }

    /* accounting: no sharing, fragmentation is each last block's free tail */
    kvl_kv_paged_stats st;
    kvl_kv_paged_stats_get(kv, &st);
    int64_t used = 0, frag = 0;
    for (int32_t s = 0; s < 3; s++) {
        kvl_kv_seq_stats ss;
        CHECK_EQ_INT(kvl_kv_paged_seq_stats_get(kv, s, &ss, &err), KVL_OK);
        CHECK_EQ_INT(ss.n_tokens, len[s]);
        CHECK_EQ_INT(ss.n_blocks_shared, 0);
        CHECK_EQ_INT(ss.n_blocks_own, ss.n_blocks);
        CHECK_EQ_INT(ss.bytes, ss.n_blocks * lay.block_bytes);
        CHECK_EQ_INT(ss.n_slots_frag, (int64_t)ss.n_blocks * bs - len[s]);
        used += ss.n_blocks;
        frag += ss.n_slots_frag;
    }
    CHECK_EQ_INT(st.pool.n_blocks_used, used);
    CHECK_EQ_INT(st.pool.n_slots_frag, frag);
    CHECK_EQ_INT(st.n_tokens, 49 + 32 + 65);
    CHECK_EQ_INT(st.n_seqs_active, 3);
    CHECK_EQ_INT(st.bytes_saved, 0);

    release_all(kv);
    kvl_kv_paged_free(kv);
    kvl_kv_contig_free(c);
}

/* ---- fork and copy-on-write, exact queue and counts ---- */

/* All chunks of one block, concatenated (layer, K/V, head order). */
static void gather_block(const kvl_block_pool *p, uint32_t id, uint8_t *out) {
    const kvl_block_layout *lay = kvl_block_pool_layout(p);
    for (int32_t l = 0; l < lay->n_layers; l++)
        for (int v = 0; v < 2; v++)
            for (int32_t h = 0; h < lay->n_kv_heads; h++) {
                size_t n = v ? lay->v_head_bytes : lay->k_head_bytes;
                memcpy(out, kvl_block_pool_chunk(p, id, l, v, h), n);
                out += n;
            }
}

static void test_cow(void) {
    kvl_hparams hp = shape(2, 4, 2, 8);
    kvl_error err;
    kvl_kv_paged *kv = make_11x16(&hp, 4);
    kvl_kv_contig *c = NULL;
    CHECK_EQ_INT(kvl_kv_contig_init(&hp, 4, 176, &c, &err), KVL_OK);
    if (!kv || !c)
        return;
    kvl_kv_iface ip = kvl_kv_paged_iface(kv), ic = kvl_kv_contig_iface(c);
    const kvl_block_layout *lay = kvl_block_pool_layout(kvl_kv_paged_pool(kv));
    kvl_kv_paged_stats st;
    kvl_kv_seq_stats ss;

    /* seq 0: a 20-token prompt -> blocks 0 (full) and 1 (4 of 16) */
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 20, &err), KVL_OK);
    feed(&hp, &ip, 0, 1, 0, 20);
    feed(&hp, &ic, 0, 1, 0, 20);
    TABLE(kv, 0, 0, 1);
    QUEUE(kv, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    REFS(kv, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    CHECK_EQ_INT(kvl_block_pool_fill(kvl_kv_paged_pool(kv), 1), 4);

    /* fork mid-block: seq 1 shares both blocks, nothing taken */
    CHECK_EQ_INT(kvl_kv_paged_fork(kv, 0, 1, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_contig_copy(c, 0, 1, 20, &err), KVL_OK);
    TABLE(kv, 1, 0, 1);
    QUEUE(kv, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    REFS(kv, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    kvl_kv_paged_stats_get(kv, &st);
    CHECK_EQ_INT(st.pool.n_blocks_used, 2);
    CHECK_EQ_INT(st.pool.n_blocks_shared, 2);
    CHECK_EQ_INT(st.n_blocks_logical, 4);
    CHECK_EQ_INT(st.bytes_saved, 2 * lay->block_bytes);
    CHECK_EQ_INT(st.pool.n_slots_filled, 20);
    CHECK_EQ_INT(kvl_kv_paged_seq_stats_get(kv, 1, &ss, &err), KVL_OK);
    CHECK_EQ_INT(ss.n_blocks_shared, 2);
    CHECK_EQ_INT(ss.n_blocks_own, 0);
    CHECK_EQ_INT(ss.bytes_shared, 2 * lay->block_bytes);

    /* seq 1 writes first: block 1 is copied (to block 2), block 0 is not */
    uint8_t *saved = malloc(lay->block_bytes), *now = malloc(lay->block_bytes);
    gather_block(kvl_kv_paged_pool(kv), 1, saved);
    CHECK_EQ_INT(kvl_kv_paged_blocks_needed(kv, 1, 1), 1);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 1, 1, &err), KVL_OK);
    feed(&hp, &ip, 1, 2, 20, 21);
    feed(&hp, &ic, 1, 2, 20, 21);
    TABLE(kv, 0, 0, 1);
    TABLE(kv, 1, 0, 2);
    QUEUE(kv, 3, 4, 5, 6, 7, 8, 9, 10);
    REFS(kv, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    gather_block(kvl_kv_paged_pool(kv), 1, now);
    CHECK(memcmp(saved, now, lay->block_bytes) == 0);
    kvl_kv_paged_stats_get(kv, &st);
    CHECK_EQ_INT(st.n_blocks_copied, 1);
    CHECK_EQ_INT(st.pool.n_blocks_shared, 1);
    CHECK_EQ_INT(st.pool.n_slots_filled, 16 + 4 + 5);

    /* seq 0 writes next: its block 1 is its own now, no copy */
    CHECK_EQ_INT(kvl_kv_paged_blocks_needed(kv, 0, 1), 0);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 1, &err), KVL_OK);
    feed(&hp, &ip, 0, 3, 20, 21);
    feed(&hp, &ic, 0, 3, 20, 21);
    TABLE(kv, 0, 0, 1);
    QUEUE(kv, 3, 4, 5, 6, 7, 8, 9, 10);
    REFS(kv, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    kvl_kv_paged_stats_get(kv, &st);
    CHECK_EQ_INT(st.n_blocks_copied, 1);

    /* both branches read their own data, the shared prefix once */
    for (int32_t n_ctx = 1; n_ctx <= 21; n_ctx += 4) {
        CHECK(same_attention(&hp, &ic, 0, &ip, 0, n_ctx));
        CHECK(same_attention(&hp, &ic, 1, &ip, 1, n_ctx));
    }
    CHECK(same_attention(&hp, &ic, 0, &ip, 0, 21));
    CHECK(same_attention(&hp, &ic, 1, &ip, 1, 21));
    CHECK(!same_attention(&hp, &ic, 0, &ip, 1, 21)); /* position 20 differs */
    CHECK(same_attention(&hp, &ic, 0, &ip, 1, 20));  /* the prompt does not */

    /* fork at a block boundary copies nothing */
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 11, &err), KVL_OK); /* 21 -> 32 */
    feed(&hp, &ip, 0, 3, 21, 32);
    feed(&hp, &ic, 0, 3, 21, 32);
    TABLE(kv, 0, 0, 1);
    CHECK_EQ_INT(kvl_kv_paged_fork(kv, 0, 2, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_contig_copy(c, 0, 2, 32, &err), KVL_OK);
    TABLE(kv, 2, 0, 1);
    REFS(kv, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    CHECK_EQ_INT(kvl_kv_paged_blocks_needed(kv, 2, 1), 1);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 2, 1, &err), KVL_OK);
    feed(&hp, &ip, 2, 4, 32, 33);
    feed(&hp, &ic, 2, 4, 32, 33);
    TABLE(kv, 2, 0, 1, 3);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 1, &err), KVL_OK);
    feed(&hp, &ip, 0, 3, 32, 33);
    feed(&hp, &ic, 0, 3, 32, 33);
    TABLE(kv, 0, 0, 1, 4);
    QUEUE(kv, 5, 6, 7, 8, 9, 10);
    REFS(kv, 3, 2, 1, 1, 1, 0, 0, 0, 0, 0, 0);
    kvl_kv_paged_stats_get(kv, &st);
    CHECK_EQ_INT(st.n_blocks_copied, 1);
    CHECK(same_attention(&hp, &ic, 0, &ip, 0, 33));
    CHECK(same_attention(&hp, &ic, 1, &ip, 1, 21));
    CHECK(same_attention(&hp, &ic, 2, &ip, 2, 33));

    /* release: each sequence's blocks go back last block first */
    CHECK_EQ_INT(kvl_kv_paged_release(kv, 1, &err), KVL_OK); /* [0, 2] */
    QUEUE(kv, 5, 6, 7, 8, 9, 10, 2);
    REFS(kv, 2, 2, 0, 1, 1, 0, 0, 0, 0, 0, 0);
    CHECK_EQ_INT(kvl_kv_paged_release(kv, 0, &err), KVL_OK); /* [0, 1, 4] */
    QUEUE(kv, 5, 6, 7, 8, 9, 10, 2, 4);
    REFS(kv, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 0);
    CHECK_EQ_INT(kvl_kv_paged_release(kv, 2, &err), KVL_OK); /* [0, 1, 3] */
    QUEUE(kv, 5, 6, 7, 8, 9, 10, 2, 4, 3, 1, 0);
    REFS(kv, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    expect_idle(kv);
    free(saved);
    free(now);
    kvl_kv_paged_free(kv);
    kvl_kv_contig_free(c);
}

/* ---- shortage, batches and bad arguments: all or nothing ---- */

static void test_exhaustion(void) {
    kvl_hparams hp = shape(1, 2, 1, 4);
    kvl_error err;
    kvl_kv_paged *kv = make_11x16(&hp, 4);
    if (!kv)
        return;
    kvl_kv_iface ip = kvl_kv_paged_iface(kv);
    snap before, after;

    /* seq 0: 100 tokens = 6 full blocks + 4; seq 1 shares them all */
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 100, &err), KVL_OK);
    feed(&hp, &ip, 0, 1, 0, 100);
    CHECK_EQ_INT(kvl_kv_paged_fork(kv, 0, 1, &err), KVL_OK);
    TABLE(kv, 1, 0, 1, 2, 3, 4, 5, 6);
    QUEUE(kv, 7, 8, 9, 10);
    REFS(kv, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0);

    /* 64 more for seq 1: 4 new blocks + 1 copy > 4 free */
    take(kv, &before);
    CHECK_EQ_INT(kvl_kv_paged_blocks_needed(kv, 1, 64), 5);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 1, 64, &err), KVL_E_NO_KV);
    CHECK_CONTAINS(err.msg, "seq 1: 100 + 64 tokens needs 5 blocks, free 4 of 11");
    take(kv, &after);
    CHECK(same(&before, &after));
    /* 60 fits exactly: 3 new + 1 copy */
    CHECK_EQ_INT(kvl_kv_paged_blocks_needed(kv, 1, 60), 4);

    /* a batch: both grow by 1 out of the same shared block 6 (count 2):
     * exactly one copy, the last of them keeps the original */
    const int32_t s01[2] = {0, 1}, ones[3] = {1, 1, 1};
    CHECK_EQ_INT(kvl_kv_paged_reserve_batch(kv, 2, s01, ones, &err), KVL_OK);
    feed(&hp, &ip, 0, 2, 100, 101);
    feed(&hp, &ip, 1, 3, 100, 101);
    TABLE(kv, 0, 0, 1, 2, 3, 4, 5, 7);
    TABLE(kv, 1, 0, 1, 2, 3, 4, 5, 6);
    QUEUE(kv, 8, 9, 10);
    REFS(kv, 2, 2, 2, 2, 2, 2, 1, 1, 0, 0, 0);

    /* three sharers of block 7 (count 3) need 2 copies, not 3 */
    CHECK_EQ_INT(kvl_kv_paged_fork(kv, 0, 2, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_paged_fork(kv, 0, 3, &err), KVL_OK);
    uint32_t held;
    CHECK_EQ_INT(kvl_block_pool_alloc(kvl_kv_paged_pool(kv), 1, &held, &err), KVL_OK);
    CHECK_EQ_INT(held, 8);
    QUEUE(kv, 9, 10);
    const int32_t s023[3] = {0, 2, 3};
    CHECK_EQ_INT(kvl_kv_paged_reserve_batch(kv, 3, s023, ones, &err), KVL_OK);
    TABLE(kv, 0, 0, 1, 2, 3, 4, 5, 9);
    TABLE(kv, 2, 0, 1, 2, 3, 4, 5, 10);
    TABLE(kv, 3, 0, 1, 2, 3, 4, 5, 7);
    QUEUE_EMPTY(kv);
    REFS(kv, 4, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1);
    kvl_kv_paged_stats st;
    kvl_kv_paged_stats_get(kv, &st);
    CHECK_EQ_INT(st.n_blocks_copied, 3);

    /* no free block: growing inside an own block still works ... */
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 10, &err), KVL_OK); /* 102 -> 112 */
    /* ... one more position needs a block: refused, nothing changes */
    take(kv, &before);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 1, &err), KVL_E_NO_KV);
    CHECK_CONTAINS(err.msg, "free 0 of 11");
    take(kv, &after);
    CHECK(same(&before, &after));
    /* a batch where one member cannot grow: nobody grows */
    const int32_t s12[2] = {1, 2};
    const int32_t n12[2] = {1, 15};
    CHECK_EQ_INT(kvl_kv_paged_reserve_batch(kv, 2, s12, n12, &err), KVL_E_NO_KV);
    CHECK_CONTAINS(err.msg, "2 seqs need 1 blocks, free 0 of 11");
    take(kv, &after);
    CHECK(same(&before, &after));

    /* bad arguments */
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 4, 1, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "seq 4 not in [0, 4)");
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, -1, 1, &err), KVL_E_INVALID);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 1, -1, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "n_new -1 < 0");
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 1, 76, &err), KVL_E_LIMIT);
    CHECK_CONTAINS(err.msg, "seq 1: 101 tokens + 76 new > max_ctx 176");
    const int32_t dup[2] = {1, 1};
    CHECK_EQ_INT(kvl_kv_paged_reserve_batch(kv, 2, dup, ones, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "seq 1 appears twice");
    CHECK_EQ_INT(kvl_kv_paged_fork(kv, 0, 1, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "dst seq 1 holds 101 tokens");
    CHECK_EQ_INT(kvl_kv_paged_fork(kv, 2, 2, &err), KVL_E_INVALID);
    CHECK_EQ_INT(kvl_kv_paged_fork(kv, 0, 7, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "fork dst: seq 7");
    CHECK_EQ_INT(kvl_kv_paged_truncate(kv, 0, 113, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "truncate to 113 not in [0, 112]");
    CHECK_EQ_INT(kvl_kv_paged_release(kv, 9, &err), KVL_E_INVALID);
    take(kv, &after);
    CHECK(same(&before, &after));

    /* truncate: seq 0 to 40 positions drops its blocks 6, 5, 4, 3 (last
     * first); blocks 3..5 stay with their other users, 9 is freed */
    CHECK_EQ_INT(kvl_kv_paged_truncate(kv, 0, 40, &err), KVL_OK);
    TABLE(kv, 0, 0, 1, 2);
    QUEUE(kv, 9);
    REFS(kv, 4, 4, 4, 3, 3, 3, 1, 1, 1, 0, 1);
    /* block 2 is shared and cut in the middle: growing copies it */
    CHECK_EQ_INT(kvl_kv_paged_blocks_needed(kv, 0, 1), 1);
    CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 0, 1, &err), KVL_OK);
    TABLE(kv, 0, 0, 1, 9);
    REFS(kv, 4, 4, 3, 3, 3, 3, 1, 1, 1, 1, 1);

    kvl_block_pool_decref(kvl_kv_paged_pool(kv), &held, 1);
    release_all(kv);
    kvl_kv_paged_free(kv);
}

static void test_init_errors(void) {
    kvl_hparams hp = shape(1, 2, 1, 4);
    kvl_block_layout lay;
    kvl_error err;
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, &lay, &err), KVL_OK);
    kvl_kv_paged *kv = NULL;
    kvl_kv_paged_params pp = {
        .budget = 11 * lay.block_bytes, .block_size = 16, .max_seqs = 2, .max_ctx = 177};
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &kv, &err), KVL_E_NO_KV);
    CHECK_CONTAINS(err.msg, "holds 11 blocks of 16 positions");
    CHECK_CONTAINS(err.msg, "ctx 177 needs 12 blocks");
    CHECK(kv == NULL);
    pp.max_ctx = 176;
    pp.max_seqs = 0;
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &kv, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "max_seqs 0");
    pp.max_seqs = 2;
    pp.block_size = -3;
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &kv, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "block_size -3");
    pp.block_size = 0; /* the default, 16 */
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &kv, &err), KVL_OK);
    if (kv) {
        CHECK_EQ_INT(kvl_block_pool_layout(kvl_kv_paged_pool(kv))->block_size, 16);
        CHECK_EQ_INT(kvl_block_pool_n_blocks(kvl_kv_paged_pool(kv)), 11);
        /* freeing with sequences still held releases them */
        CHECK_EQ_INT(kvl_kv_paged_reserve(kv, 1, 50, &err), KVL_OK);
    }
    kvl_kv_paged_free(kv);
    kvl_kv_paged_free(NULL);
}

int main(void) {
    test_bit_identical(shape(2, 4, 4, 16), 16); /* MHA */
    test_bit_identical(shape(2, 8, 2, 12), 16); /* GQA */
    test_bit_identical(shape(2, 8, 2, 12), 5);  /* GQA, odd block size */
    test_bit_identical(shape(1, 6, 1, 8), 7);   /* MQA */
    test_bit_identical(shape(3, 4, 4, 64), 1);  /* one position per block */
    test_cow();
    test_exhaustion();
    test_init_errors();
    return kvt_finish("test_kv_paged");
}
