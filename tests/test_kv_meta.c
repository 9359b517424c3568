/*
 * The KV ledger in metadata-only mode (the simulator's pool): the same
 * operations on a backed store and on a metadata-only store of the same
 * budget give the same block ids, free-queue order, reference counts and
 * stats after every step (including copy-on-write, exhaustion and
 * truncation); a data-centre budget (60 GB of OPT-13B KV) initialises
 * without mapping its bytes; the contiguous layout refuses the mode.
 */
#include "kv/kv_cache.h"
#include "kv/kv_paged.h"
#include "plan/catalog.h"

#include "kvt_pool.h"
#include "testutil.h"

#include <stdlib.h>

static kvl_hparams small_shape(void) {
    kvl_hparams hp = {0};
    hp.n_layers = 2;
    hp.n_heads = 4;
    hp.n_kv_heads = 2;
    hp.head_dim = 8;
    hp.dim = 32;
    hp.ctx_len = 256;
    return hp;
}

/* Both stores agree on everything the ledger shows. */
static void same(kvl_kv_paged *a, kvl_kv_paged *b, int32_t max_seqs, int line) {
    kvl_block_pool *pa = kvl_kv_paged_pool(a), *pb = kvl_kv_paged_pool(b);
    uint32_t qa[KVT_MAX_BLOCKS], qb[KVT_MAX_BLOCKS];
    uint32_t na = kvl_block_pool_free_order(pa, qa, KVT_MAX_BLOCKS);
    uint32_t nb = kvl_block_pool_free_order(pb, qb, KVT_MAX_BLOCKS);
    bool ok = na == nb && memcmp(qa, qb, sizeof(uint32_t) * (na < KVT_MAX_BLOCKS ? na : 0)) == 0;
    for (uint32_t id = 0; ok && id < kvl_block_pool_n_blocks(pa); id++)
        ok = kvl_block_pool_refcount(pa, id) == kvl_block_pool_refcount(pb, id) &&
             kvl_block_pool_fill(pa, id) == kvl_block_pool_fill(pb, id);
    for (int32_t s = 0; ok && s < max_seqs; s++) {
        const kvl_block_table *ta = kvl_kv_paged_table(a, s), *tb = kvl_kv_paged_table(b, s);
        ok = ta->n_tokens == tb->n_tokens && ta->n_blocks == tb->n_blocks &&
             memcmp(ta->ids, tb->ids, sizeof(uint32_t) * ta->n_blocks) == 0;
    }
    kvl_kv_paged_stats sa, sb;
    kvl_kv_paged_stats_get(a, &sa);
    kvl_kv_paged_stats_get(b, &sb);
    ok = ok && sa.pool.n_blocks_used == sb.pool.n_blocks_used &&
         sa.pool.n_blocks_shared == sb.pool.n_blocks_shared &&
         sa.pool.n_slots_frag == sb.pool.n_slots_frag && sa.n_tokens == sb.n_tokens &&
         sa.n_blocks_copied == sb.n_blocks_copied && sa.pool.bytes_total == sb.pool.bytes_total;
    CHECK(ok);
    if (!ok)
        fprintf(stderr, "  line %d: backed and metadata-only stores differ\n", line);
    kvl_error err;
    CHECK_EQ_INT(kvl_block_pool_check(pb, &err), KVL_OK);
}
#define SAME() same(a, b, 4, __LINE__)

static void test_twins(void) {
    kvl_hparams hp = small_shape();
    kvl_block_layout lay;
    kvl_error err;
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, &lay, &err), KVL_OK);
    kvl_kv_paged_params pp = {
        .budget = 11 * lay.block_bytes, .block_size = 16, .max_seqs = 4, .max_ctx = 128};
    kvl_kv_paged *a = NULL, *b = NULL;
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &a, &err), KVL_OK);
    pp.metadata_only = true;
    CHECK_EQ_INT(kvl_kv_paged_init(&hp, &pp, &b, &err), KVL_OK);
    if (!a || !b)
        return;
    CHECK(!kvl_block_pool_is_meta(kvl_kv_paged_pool(a)));
    CHECK(kvl_block_pool_is_meta(kvl_kv_paged_pool(b)));
    CHECK_EQ_INT(kvl_block_pool_n_blocks(kvl_kv_paged_pool(b)), 11);
    kvl_kv_paged *both[2] = {a, b};
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(kvl_kv_paged_reserve(both[i], 0, 40, &err), KVL_OK); /* 3 blocks */
        CHECK_EQ_INT(kvl_kv_paged_fork(both[i], 0, 1, &err), KVL_OK);
    }
    SAME();
    KVT_QUEUE(kvl_kv_paged_pool(b), 3, 4, 5, 6, 7, 8, 9, 10);
    for (int i = 0; i < 2; i++) /* seq 1 writes into the shared partly filled block */
        CHECK_EQ_INT(kvl_kv_paged_reserve(both[i], 1, 1, &err), KVL_OK);
    SAME();
    KVT_QUEUE(kvl_kv_paged_pool(b), 4, 5, 6, 7, 8, 9, 10);
    int32_t seqs[2] = {0, 2}, n_new[2] = {30, 50};
    for (int i = 0; i < 2; i++)
        CHECK_EQ_INT(kvl_kv_paged_reserve_batch(both[i], 2, seqs, n_new, &err), KVL_OK);
    SAME();
    for (int i = 0; i < 2; i++) { /* 7 - 6 = 1 free: 40 more positions for seq 3 do not fit */
        CHECK_EQ_INT(kvl_kv_paged_reserve(both[i], 3, 40, &err), KVL_E_NO_KV);
        CHECK_EQ_INT(kvl_kv_paged_truncate(both[i], 0, 17, &err), KVL_OK);
        CHECK_EQ_INT(kvl_kv_paged_release(both[i], 1, &err), KVL_OK);
    }
    SAME();
    for (int i = 0; i < 2; i++)
        for (int32_t s = 0; s < 4; s++)
            CHECK_EQ_INT(kvl_kv_paged_release(both[i], s, &err), KVL_OK);
    SAME();
    CHECK_EQ_INT(kvl_block_pool_n_free(kvl_kv_paged_pool(b)), 11);
    kvl_kv_paged_free(a);
    kvl_kv_paged_free(b);
}

/* Virtual memory of this process, from /proc/self/status (0 if unknown). */
static long long vm_size_kib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    long long v = 0;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %lld", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static void test_datacentre(void) {
    const kvl_model_shape *opt = kvl_catalog_shape_find("OPT-13B");
    CHECK(opt != NULL);
    if (!opt)
        return;
    kvl_kv_cache_params p = kvl_kv_cache_defaults();
    p.budget = (size_t)60 << 30;
    p.block_size = 16;
    p.max_seqs = 256;
    p.max_ctx = 2048;
    p.k_fmt = p.v_fmt = KVL_KV_FMT_F16;
    p.metadata_only = true;
    long long before = vm_size_kib();
    kvl_kv_cache *c = NULL;
    kvl_error err;
    CHECK_EQ_INT(kvl_kv_cache_init(&opt->hp, &p, &c, &err), KVL_OK);
    if (!c)
        return;
    long long after = vm_size_kib();
    CHECK(after - before < (1 << 20)); /* well under 1 GiB mapped for a 60 GiB budget */
    kvl_plan_capacity cap;
    CHECK_EQ_INT(
        kvl_plan_capacity_for(opt, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16, p.budget, &cap, &err),
        KVL_OK);
    kvl_kv_stats st;
    kvl_kv_cache_stats(c, &st);
    CHECK_EQ_INT(st.n_blocks_total, cap.n_blocks);
    CHECK_EQ_INT(st.bytes_per_token, 819200); /* 2 x 40 x 40 x 128 x 2: 800 KiB */
    CHECK_EQ_INT(st.n_blocks_total, 4915);    /* 60 GiB / 12.5 MiB blocks */
    for (int32_t s = 0; s < 38; s++)          /* 38 full contexts of 128 blocks */
        CHECK_EQ_INT(kvl_kv_cache_reserve(c, s, 2048, &err), KVL_OK);
    CHECK_EQ_INT(kvl_kv_cache_reserve(c, 38, 2048, &err), KVL_E_NO_KV);
    kvl_kv_cache_stats(c, &st);
    CHECK_EQ_INT(st.n_blocks_used, 38 * 128);
    CHECK_EQ_INT(st.n_tokens, 38 * 2048);
    for (int32_t s = 0; s < 38; s++)
        CHECK_EQ_INT(kvl_kv_cache_release(c, s, &err), KVL_OK);
    kvl_kv_cache_stats(c, &st);
    CHECK_EQ_INT(st.n_blocks_used, 0);
    kvl_kv_cache_free(c);

    p.layout = KVL_KV_LAYOUT_CONTIGUOUS;
    p.k_fmt = p.v_fmt = KVL_KV_FMT_F32;
    CHECK_EQ_INT(kvl_kv_cache_init(&opt->hp, &p, &c, &err), KVL_E_UNSUPPORTED);
    CHECK_CONTAINS(err.msg, "metadata_only");
}

int main(void) {
    test_twins();
    test_datacentre();
    return kvt_finish("test_kv_meta");
}
