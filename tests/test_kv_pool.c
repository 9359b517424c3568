/*
 * The KV block pool, vLLM style: a pool of 11 blocks of 16 positions, the
 * whole free-queue order and every reference count checked after each
 * operation; exhaustion leaves the pool exactly as it was; layout and
 * capacity figures against the memory formula in DESIGN.md.
 */
#include "kv/block_pool.h"
#include "plan/planner.h"

#include "kvt_pool.h"
#include "testutil.h"

#define NB 11

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

/* Everything observable about a pool. */
typedef struct snap {
    uint32_t ref[NB], fill[NB], order[NB], n_order;
    int64_t st[12];
} snap;

static void take(const kvl_block_pool *p, snap *s) {
    memset(s, 0, sizeof *s);
    for (uint32_t i = 0; i < NB; i++) {
        s->ref[i] = kvl_block_pool_refcount(p, i);
        s->fill[i] = kvl_block_pool_fill(p, i);
    }
    s->n_order = kvl_block_pool_free_order(p, s->order, NB);
    kvl_block_pool_stats ps;
    kvl_block_pool_stats_get(p, &ps);
    int64_t v[12] = {ps.n_blocks_total,      ps.n_blocks_free,        ps.n_blocks_used,
                     ps.n_blocks_shared,     (int64_t)ps.block_bytes, (int64_t)ps.bytes_total,
                     (int64_t)ps.bytes_free, (int64_t)ps.bytes_used,  (int64_t)ps.bytes_shared,
                     ps.n_slots_used,        ps.n_slots_filled,       ps.n_slots_frag};
    memcpy(s->st, v, sizeof v);
}

static bool same(const snap *a, const snap *b) { return memcmp(a, b, sizeof *a) == 0; }

/* Check the free queue is exactly want[0..n) and the pool's invariants hold. */
#define QUEUE(p, ...) KVT_QUEUE(p, __VA_ARGS__)
#define QUEUE_EMPTY(p) KVT_QUEUE_EMPTY(p)
/* Check every reference count: want[i] for block i. */
#define REFS(p, ...) KVT_REFS(p, NB, __VA_ARGS__)

static kvl_block_pool *make_pool(kvl_block_layout *lay) {
    kvl_hparams hp = shape(1, 2, 1, 4);
    kvl_error err;
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, lay, &err), KVL_OK);
    kvl_block_pool *p = NULL;
    /* a budget that is not a multiple of the block: the remainder is unused */
    CHECK_EQ_INT(kvl_block_pool_init(lay, NB * lay->block_bytes + lay->block_bytes - 1, &p, &err),
                 KVL_OK);
    return p;
}

static void test_queue_order(void) {
    kvl_block_layout lay;
    kvl_block_pool *p = make_pool(&lay);
    if (!p)
        return;
    kvl_error err;
    CHECK_EQ_INT(kvl_block_pool_n_blocks(p), NB);
    QUEUE(p, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10);
    REFS(p, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);

    uint32_t a[4], b[4];
    CHECK_EQ_INT(kvl_block_pool_alloc(p, 3, a, &err), KVL_OK);
    CHECK_EQ_INT(a[0], 0);
    CHECK_EQ_INT(a[1], 1);
    CHECK_EQ_INT(a[2], 2);
    QUEUE(p, 3, 4, 5, 6, 7, 8, 9, 10);
    REFS(p, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);

    CHECK_EQ_INT(kvl_block_pool_alloc(p, 4, b, &err), KVL_OK);
    CHECK(b[0] == 3 && b[1] == 4 && b[2] == 5 && b[3] == 6);
    QUEUE(p, 7, 8, 9, 10);
    REFS(p, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0);

    /* freed blocks go to the tail, in the order given */
    uint32_t f1[] = {1};
    kvl_block_pool_decref(p, f1, 1);
    QUEUE(p, 7, 8, 9, 10, 1);
    REFS(p, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0);

    /* sharing: 1 -> 2 -> 1 references, never in the queue */
    kvl_block_pool_incref(p, 0);
    REFS(p, 2, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0);
    kvl_block_pool_stats s;
    kvl_block_pool_stats_get(p, &s);
    CHECK_EQ_INT(s.n_blocks_shared, 1);
    CHECK_EQ_INT(s.n_blocks_used, 6);
    CHECK_EQ_INT(s.n_blocks_free, 5);
    QUEUE(p, 7, 8, 9, 10, 1);
    uint32_t f0[] = {0};
    kvl_block_pool_decref(p, f0, 1);
    REFS(p, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0);
    QUEUE(p, 7, 8, 9, 10, 1);
    kvl_block_pool_stats_get(p, &s);
    CHECK_EQ_INT(s.n_blocks_shared, 0);

    uint32_t f52[] = {5, 2};
    kvl_block_pool_decref(p, f52, 2);
    QUEUE(p, 7, 8, 9, 10, 1, 5, 2);
    REFS(p, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0);

    /* a free block taken back from the middle of the queue (a prefix-cache
     * hit, later) keeps the rest of the order */
    kvl_block_pool_incref(p, 10);
    QUEUE(p, 7, 8, 9, 1, 5, 2);
    REFS(p, 1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 1);
    kvl_block_pool_incref(p, 2); /* the tail */
    kvl_block_pool_incref(p, 7); /* the head */
    QUEUE(p, 8, 9, 1, 5);
    REFS(p, 1, 0, 1, 1, 1, 0, 1, 1, 0, 0, 1);

    /* allocation resumes from the head */
    uint32_t c[2];
    CHECK_EQ_INT(kvl_block_pool_alloc(p, 2, c, &err), KVL_OK);
    CHECK(c[0] == 8 && c[1] == 9);
    QUEUE(p, 1, 5);
    REFS(p, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1);

    /* release everything in a stated order */
    uint32_t all[] = {10, 0, 9, 3, 8, 4, 7, 6, 2};
    kvl_block_pool_decref(p, all, 9);
    QUEUE(p, 1, 5, 10, 0, 9, 3, 8, 4, 7, 6, 2);
    REFS(p, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    kvl_block_pool_stats_get(p, &s);
    CHECK_EQ_INT(s.n_blocks_used, 0);
    CHECK_EQ_INT(s.n_blocks_free, NB);
    kvl_block_pool_free(p);
}

static void test_exhaustion(void) {
    kvl_block_layout lay;
    kvl_block_pool *p = make_pool(&lay);
    if (!p)
        return;
    kvl_error err;
    uint32_t ids[NB + 1];
    CHECK_EQ_INT(kvl_block_pool_alloc(p, 5, ids, &err), KVL_OK);
    kvl_block_pool_incref(p, ids[1]);
    kvl_block_pool_set_fill(p, ids[0], 16);
    kvl_block_pool_set_fill(p, ids[1], 3);
    uint32_t back[] = {ids[3]};
    kvl_block_pool_decref(p, back, 1);
    QUEUE(p, 5, 6, 7, 8, 9, 10, 3);

    snap before, after;
    take(p, &before);
    uint32_t out[NB + 1];
    for (uint32_t i = 0; i < NB + 1; i++)
        out[i] = 0xdeadbeef;
    CHECK_EQ_INT(kvl_block_pool_alloc(p, 8, out, &err), KVL_E_NO_KV);
    CHECK_CONTAINS(err.msg, "need 8 blocks, free 7 of 11");
    take(p, &after);
    CHECK(same(&before, &after));
    CHECK_EQ_INT(out[0], 0xdeadbeef); /* not even the output was touched */
    CHECK_EQ_INT(kvl_block_pool_alloc(p, NB + 1, out, &err), KVL_E_NO_KV);
    take(p, &after);
    CHECK(same(&before, &after));

    /* exactly the free count succeeds; then even one more fails */
    CHECK_EQ_INT(kvl_block_pool_alloc(p, 7, out, &err), KVL_OK);
    CHECK(out[0] == 5 && out[6] == 3);
    QUEUE_EMPTY(p);
    take(p, &before);
    CHECK_EQ_INT(kvl_block_pool_alloc(p, 1, out + 7, &err), KVL_E_NO_KV);
    CHECK_CONTAINS(err.msg, "need 1 blocks, free 0 of 11");
    take(p, &after);
    CHECK(same(&before, &after));
    CHECK_EQ_INT(kvl_block_pool_alloc(p, 0, out + 7, &err), KVL_OK);

    kvl_block_pool_decref(p, out, 7);
    uint32_t rest[] = {ids[0], ids[1], ids[1], ids[2], ids[4]};
    kvl_block_pool_decref(p, rest, 5);
    QUEUE(p, 5, 6, 7, 8, 9, 10, 3, 0, 1, 2, 4);
    kvl_block_pool_stats s;
    kvl_block_pool_stats_get(p, &s);
    CHECK_EQ_INT(s.n_blocks_used, 0);
    CHECK_EQ_INT(s.n_slots_filled, 0);
    kvl_block_pool_free(p);
}

static void test_accounting(void) {
    kvl_block_layout lay;
    kvl_block_pool *p = make_pool(&lay);
    if (!p)
        return;
    kvl_error err;
    uint32_t ids[3];
    CHECK_EQ_INT(kvl_block_pool_alloc(p, 3, ids, &err), KVL_OK);
    kvl_block_pool_set_fill(p, ids[0], 16);
    kvl_block_pool_set_fill(p, ids[1], 16);
    kvl_block_pool_set_fill(p, ids[2], 5);
    kvl_block_pool_incref(p, ids[0]);
    kvl_block_pool_stats s;
    kvl_block_pool_stats_get(p, &s);
    CHECK_EQ_INT(s.n_blocks_total, 11);
    CHECK_EQ_INT(s.n_blocks_used, 3);
    CHECK_EQ_INT(s.n_blocks_free, 8);
    CHECK_EQ_INT(s.n_blocks_shared, 1);
    CHECK_EQ_INT(s.block_bytes, lay.block_bytes);
    CHECK_EQ_INT(s.bytes_total, 11 * lay.block_bytes);
    CHECK_EQ_INT(s.bytes_used, 3 * lay.block_bytes);
    CHECK_EQ_INT(s.bytes_free, 8 * lay.block_bytes);
    CHECK_EQ_INT(s.bytes_shared, lay.block_bytes);
    CHECK_EQ_INT(s.n_slots_used, 48);
    CHECK_EQ_INT(s.n_slots_filled, 37);
    CHECK_EQ_INT(s.n_slots_frag, 11);
    CHECK_NEAR(s.occupancy, 3.0 / 11.0, 1e-12);
    CHECK_NEAR(s.utilization, 37.0 / 48.0, 1e-12);
    /* fill of a block is cleared when it is freed */
    kvl_block_pool_decref(p, ids + 2, 1);
    CHECK_EQ_INT(kvl_block_pool_fill(p, ids[2]), 0);
    kvl_block_pool_stats_get(p, &s);
    CHECK_EQ_INT(s.n_slots_filled, 32);
    CHECK_EQ_INT(s.n_slots_frag, 0);
    CHECK_EQ_INT(kvl_block_pool_check(p, &err), KVL_OK);
    uint32_t rest[] = {ids[0], ids[0], ids[1]};
    kvl_block_pool_decref(p, rest, 3);
    kvl_block_pool_stats_get(p, &s);
    CHECK_EQ_INT(s.n_blocks_used, 0);
    CHECK_NEAR(s.utilization, 1.0, 0);
    CHECK_EQ_INT(kvl_block_pool_check(p, &err), KVL_OK);

    kvl_block_pool_free(p);
    kvl_block_pool_free(NULL);
}

/* Chunk addresses follow block_pool.h's formula; the chunks of all blocks
 * tile the mapping exactly; copy moves every chunk of one block and
 * nothing else. */
static void test_chunks(void) {
    kvl_hparams hp = shape(3, 4, 2, 8);
    kvl_error err;
    kvl_block_layout lay;
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, &lay, &err), KVL_OK);
    kvl_block_pool *p = NULL;
    CHECK_EQ_INT(kvl_block_pool_init(&lay, NB * lay.block_bytes, &p, &err), KVL_OK);
    if (!p)
        return;
    const size_t ch = 16 * 8 * 4, N = NB;
    CHECK_EQ_INT(lay.k_head_bytes, ch);
    CHECK_EQ_INT(lay.layer_bytes, 2 * 2 * ch);
    uint8_t *base = kvl_block_pool_chunk(p, 0, 0, false, 0);
    CHECK(kvl_block_pool_chunk(p, 3, 0, false, 0) == base + 3 * ch);
    CHECK(kvl_block_pool_chunk(p, 3, 0, false, 1) == base + N * ch + 3 * ch);
    CHECK(kvl_block_pool_chunk(p, 3, 0, true, 0) == base + 2 * N * ch + 3 * ch);
    CHECK(kvl_block_pool_chunk(p, 3, 2, true, 1) ==
          base + 2 * N * lay.layer_bytes + 3 * N * ch + 3 * ch);
    kvl_block_region r = kvl_block_pool_region(p, 1, true);
    CHECK(r.base == base + N * lay.layer_bytes + 2 * N * ch);
    CHECK_EQ_INT(r.head_stride, N * ch);
    CHECK_EQ_INT(r.chunk_bytes, ch);
    /* the last chunk ends exactly at the end of the mapping */
    CHECK(kvl_block_pool_chunk(p, NB - 1, 2, true, 1) + ch == base + NB * lay.block_bytes);

    /* mark every chunk with its block id and place */
    for (uint32_t b = 0; b < NB; b++)
        for (int32_t l = 0; l < 3; l++)
            for (int v = 0; v < 2; v++)
                for (int32_t h = 0; h < 2; h++)
                    memset(kvl_block_pool_chunk(p, b, l, v, h), (int)(b * 16 + l * 4 + v * 2 + h),
                           ch);
    uint32_t ids[2];
    CHECK_EQ_INT(kvl_block_pool_alloc(p, 2, ids, &err), KVL_OK);
    kvl_block_pool_copy(p, 7, ids[1]); /* block 7 is free: copy does not care */
    for (uint32_t b = 0; b < NB; b++)
        for (int32_t l = 0; l < 3; l++)
            for (int v = 0; v < 2; v++)
                for (int32_t h = 0; h < 2; h++) {
                    uint32_t from = b == 7 ? ids[1] : b;
                    const uint8_t *c = kvl_block_pool_chunk(p, b, l, v, h);
                    uint8_t want = (uint8_t)(from * 16 + l * 4 + v * 2 + h);
                    bool ok = true;
                    for (size_t i = 0; i < ch; i++)
                        ok = ok && c[i] == want;
                    CHECK(ok);
                }
    kvl_block_pool_decref(p, ids, 2);
    kvl_block_pool_stats s;
    kvl_block_pool_stats_get(p, &s);
    CHECK_EQ_INT(s.n_blocks_used, 0);
    CHECK_EQ_INT(kvl_block_pool_check(p, &err), KVL_OK);
    kvl_block_pool_free(p);
}

static void test_layout(void) {
    kvl_error err;
    kvl_block_layout lay;
    /* Llama-3-8B shape: 32 layers, 8 KV heads of 128: 2*32*8*128*4 bytes per
     * token in f32 (DESIGN.md gives 128 KiB in f16) */
    kvl_hparams hp = shape(32, 32, 8, 128);
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, &lay, &err), KVL_OK);
    CHECK_EQ_INT(lay.bytes_per_token, 256 * 1024);
    CHECK_EQ_INT(lay.k_head_bytes, 16 * 128 * 4);
    CHECK_EQ_INT(lay.layer_bytes, 2 * 8 * 16 * 128 * 4);
    CHECK_EQ_INT(lay.block_bytes, 16 * 256 * 1024);
    /* Llama-2-7B (MHA): 512 KiB per token in f16 -> 1 MiB in f32 */
    hp = shape(32, 32, 32, 128);
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, &lay, &err), KVL_OK);
    CHECK_EQ_INT(lay.bytes_per_token, 1024 * 1024);
    /* no padding: 1 layer, 1 head of 3, block of 5 = 2*5*3*4 = 120 bytes */
    hp = shape(1, 1, 1, 3);
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 5, &lay, &err), KVL_OK);
    CHECK_EQ_INT(lay.layer_bytes, 120);
    CHECK_EQ_INT(lay.block_bytes, 120);
    CHECK_EQ_INT(lay.bytes_per_token, 24);

    hp = shape(2, 4, 2, 8);
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 0, &lay, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "block_size 0 not in [1, 4096]");
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 4097, &lay, &err), KVL_E_INVALID);
    hp = shape(2, 4, 3, 8);
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, &lay, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "n_kv_heads 3");
    hp = shape(0, 4, 2, 8);
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, &lay, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "n_layers 0");

    /* a budget below one block */
    hp = shape(1, 2, 1, 4);
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, &lay, &err), KVL_OK);
    kvl_block_pool *p = NULL;
    CHECK_EQ_INT(kvl_block_pool_init(&lay, lay.block_bytes - 1, &p, &err), KVL_E_NO_KV);
    CHECK_CONTAINS(err.msg, "511 bytes < one block of 16 positions (512 bytes)");
    CHECK(p == NULL);
}

static void test_capacity(void) {
    kvl_error err;
    kvl_kv_capacity c;
    /* TinyLlama-1.1B shape: 22 layers, 4 KV heads of 64, ctx 2048:
     * 2*22*4*64*4 = 45056 bytes per token in f32 */
    kvl_hparams hp = shape(22, 32, 4, 64);
    CHECK_EQ_INT(kvl_kv_capacity_compute(&hp, 16, (size_t)1 << 30, 2048, &c, &err), KVL_OK);
    CHECK_EQ_INT(c.bytes_per_token, 45056);
    CHECK_EQ_INT(c.block_bytes, 16 * 45056);
    CHECK_EQ_INT(c.n_blocks, ((size_t)1 << 30) / (16 * 45056));
    CHECK_EQ_INT(c.token_capacity, (int64_t)c.n_blocks * 16);
    CHECK_EQ_INT(c.blocks_per_seq, 128);
    CHECK_EQ_INT(c.full_ctx_seqs, c.n_blocks / 128);
    CHECK_EQ_INT(c.bytes_used, (size_t)c.n_blocks * c.block_bytes);
    /* ctx not a multiple of the block size rounds up */
    CHECK_EQ_INT(kvl_kv_capacity_compute(&hp, 16, (size_t)1 << 30, 2047, &c, &err), KVL_OK);
    CHECK_EQ_INT(c.blocks_per_seq, 128);
    CHECK_EQ_INT(kvl_kv_capacity_compute(&hp, 16, (size_t)1 << 30, 2049, &c, &err), KVL_OK);
    CHECK_EQ_INT(c.blocks_per_seq, 129);
    /* 64 MiB holds 93 blocks = 1488 tokens < 2048: refused with the numbers */
    CHECK_EQ_INT(kvl_kv_capacity_compute(&hp, 16, (size_t)64 << 20, 2048, &c, &err), KVL_E_NO_KV);
    CHECK_CONTAINS(err.msg, "holds 93 blocks of 16 positions");
    CHECK_CONTAINS(err.msg, "45056 bytes per token");
    CHECK_CONTAINS(err.msg, "= 1488 tokens");
    CHECK_CONTAINS(err.msg, "ctx 2048 needs 128 blocks");
    CHECK_EQ_INT(c.n_blocks, 93);
    CHECK_EQ_INT(c.full_ctx_seqs, 0);
    CHECK_EQ_INT(kvl_kv_capacity_compute(&hp, 16, (size_t)1 << 30, 0, &c, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "ctx_len 0");
}

/* The pool holds exactly the blocks the planner promises for the same
 * budget (planner.h: "what the KV pool allocates ... must equal n_blocks"). */
static void test_agrees_with_planner(void) {
    const int64_t shapes[][4] = {
        {1, 2, 1, 4}, {22, 32, 4, 64}, {32, 32, 8, 128}, {6, 6, 6, 48}, {3, 5, 5, 7}};
    const int32_t sizes[] = {1, 5, 16, 32, 100};
    const size_t budgets[] = {(size_t)1 << 20, (size_t)123456789, (size_t)3 << 30};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++)
            for (size_t b = 0; b < sizeof budgets / sizeof budgets[0]; b++) {
                kvl_hparams hp = shape(shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3]);
                kvl_model_shape ps = {0};
                snprintf(ps.name, sizeof ps.name, "t%zu", i);
                ps.hp = hp;
                ps.hp.ffn_dim = 4 * hp.dim;
                ps.hp.n_vocab = 256;
                ps.hp.ctx_len = 256;
                kvl_error err;
                kvl_plan_capacity pc;
                kvl_kv_capacity kc;
                kvl_kv_format f32;
                CHECK(kvl_kv_format_parse("f32", &f32));
                kvl_status ps_st =
                    kvl_plan_capacity_for(&ps, f32, f32, sizes[j], budgets[b], &pc, &err);
                CHECK_EQ_INT(ps_st, KVL_OK);
                kvl_status st = kvl_kv_capacity_compute(&hp, sizes[j], budgets[b], 1, &kc, &err);
                if (ps_st != KVL_OK || (st != KVL_OK && st != KVL_E_NO_KV))
                    continue;
                CHECK_EQ_INT(kc.block_bytes, pc.block_bytes);
                CHECK_EQ_INT(kc.n_blocks, pc.n_blocks);
                CHECK_EQ_INT(kc.token_capacity, pc.n_tokens);
            }
}

int main(void) {
    test_queue_order();
    test_exhaustion();
    test_accounting();
    test_chunks();
    test_layout();
    test_capacity();
    test_agrees_with_planner();
    return kvt_finish("test_kv_pool");
}
