/*
 * kv_paged: the paged KV store, every format. A block pool (block_pool.c)
 * plus one block table per sequence slot (block_table.c), exposed as
 * kvl_kv_iface; quantized formats are encoded by kv_codec.c and read by the
 * fused kernels through kvl_kv_attend_q; f32/f32 keeps kvl_kv_attend_f32
 * (bit-identical to the contiguous store).
 *
 * Where a value lives: K element d of KV head h, layer l, position p of
 * sequence s is at
 *
 *     region(l, K).base                        (block_pool.h's layout)
 *          + h * region.head_stride            (the head's array of chunks)
 *          + ids_s[p / bs] * k_head_bytes      (the block's chunk)
 *          + ((p % bs) * head_dim + d) * 4     (the slot, the element)
 *
 * which is kv_attn's addressing with k = region(l, K).base, block_stride =
 * k_head_bytes / 4, head_stride = region.head_stride / 4. Attention passes
 * the table itself as the block list: no gather, no copy.
 *
 * With a residual (kv_paged.h), K of head h, layer l, slot i of the newest
 * block of seq s lives instead at
 *
 *     res_k + (((s * n_layers + l) * n_kv_heads + h) * bs + i) * head_dim
 *
 * Invariants:
 *   - every table satisfies block_table.h's invariant against the one pool;
 *   - res_start[s][l] is a multiple of bs; the blocks below it hold
 *     quantized data (flushed), the block at it lives in the residual for
 *     the deferred roles, and every stored position p of s in layer l has
 *     p < res_start + bs (stores of a block come in order; KVL_ASSERT);
 *   - store() writes only blocks with count 1 (KVL_ASSERT): a shared block
 *     is never written in place, which is what copy-on-write guarantees;
 *   - n_copied counts the copies made by reserve;
 *   - eviction (make_room, docs/eviction.md) removes only full blocks below
 *     every layer's res_start, never writes a block, and moves res_start
 *     down with the table; a table's shift[b] is a multiple of bs and at
 *     most max_ctx, so rope_cs covers every shift attention meets;
 *   - with mass allocated, mass[seq][b] and mass_n[seq][b] are 0 for b >=
 *     the table's blocks, attend() writes them (atomic adds) only for a
 *     slot whose policy accumulates, and mass_n[seq][b] counts the queries
 *     whose attention added to mass[seq][b] (the layer-0 call that starts
 *     at head 0 counts each query once); both move with the table on
 *     eviction.
 *
 * Must not: allocate or take blocks in store()/attend(); mutate anything
 * in attend() (it runs on several threads) but the mass above; change anything on a failed
 * reserve, fork, truncate or release.
 */
#include "kv/kv_paged.h"

#include "kv/kv_attn.h"
#include "kv/kv_codec.h"
#include "kv/kv_policy.h"

#include <math.h>
#include <stdlib.h>

struct kvl_kv_paged {
    kvl_block_pool *pool;
    kvl_block_layout lay;
    kvl_block_region *regions; /* (n_layers, 2): K and V chunk arrays of each layer */
    int32_t n_heads;
    int32_t max_seqs, max_ctx;
    kvl_block_table *tables; /* (max_seqs) */
    int64_t n_copied;
    kvl_kvq_codec k_codec, v_codec;
    bool k_def, v_def;     /* role kept in the residual until its block is full */
    float *res_k, *res_v;  /* (max_seqs, n_layers, n_kv_heads, bs, head_dim) or NULL */
    int32_t *res_start;    /* (max_seqs, n_layers) first position in the residual */
    size_t res_seq_floats; /* floats of one role's residual of one slot */
    size_t residual_bytes;
    bool meta; /* metadata only: no bytes, no regions, no residual */
    /* eviction (kv_policy.h, docs/eviction.md) */
    kvl_kv_policy *policy;     /* (max_seqs) each slot's; full by default */
    int64_t *n_evicted_blocks; /* (max_seqs) since the slot's last release */
    int64_t n_evicted_total;   /* blocks, since init */
    float *rope_freq;          /* (rope_dim / 2) */
    float *rope_cs;            /* (max_ctx / bs + 1, rope_dim) kvl_kv_rope.cs; made by the
                                  first set_policy that evicts */
    kvl_kv_rope rope;
    /* scored policies (h2o, snapkv); made by the first set_policy of one */
    uint64_t *mass;    /* (max_seqs, cap) attention mass of each logical block,
                            fixed point (kv_attn.h); 0 past a table's blocks */
    uint32_t *mass_n;  /* (max_seqs, cap) queries that added to each mass */
    uint64_t *rank;    /* (cap) kvl_kv_policy_rank's answer, victim scratch */
    kvl_kv_cand *cand; /* (cap) victim selection scratch */
    uint32_t *victims; /* (cap) */
    uint32_t cap;      /* logical blocks of a table */
};

static float *res_ptr(const kvl_kv_paged *kv, float *base, int32_t seq, int32_t layer, int32_t h) {
    const size_t bs = (size_t)kv->lay.block_size, hd = (size_t)kv->lay.head_dim;
    return base +
           (((size_t)seq * (size_t)kv->lay.n_layers + (size_t)layer) * (size_t)kv->lay.n_kv_heads +
            (size_t)h) *
               bs * hd;
}

kvl_status kvl_kv_paged_init(const kvl_hparams *hp, const kvl_kv_paged_params *params,
                             kvl_kv_paged **out, kvl_error *err) {
    if (!params)
        return kvl_errorf(err, KVL_E_INVALID, "kv paged: params is NULL");
    if (!kvl_kv_format_get(params->k_fmt) || !kvl_kv_format_get(params->v_fmt))
        return kvl_errorf(
            err, KVL_E_INVALID, "kv paged: k_fmt %d / v_fmt %d: a format id is not in [0, %d) (%s)",
            (int)params->k_fmt, (int)params->v_fmt, KVL_KV_FMT_COUNT, kvl_kv_format_names());
    int32_t bs = kvl_kv_block_size(params->block_size, params->k_fmt, params->v_fmt);
    if (params->max_seqs < 1 || params->max_seqs > KVL_KV_MAX_SEQS)
        return kvl_errorf(err, KVL_E_INVALID, "kv paged: max_seqs %d not in [1, %d]",
                          (int)params->max_seqs, KVL_KV_MAX_SEQS);
    if (params->max_ctx < 1 || params->max_ctx > KVL_MAX_CTX)
        return kvl_errorf(err, KVL_E_INVALID, "kv paged: max_ctx %d not in [1, %d]",
                          (int)params->max_ctx, KVL_MAX_CTX);
    kvl_kv_capacity cap;
    kvl_status st = kvl_kv_capacity_compute_fmt(hp, bs, params->k_fmt, params->v_fmt,
                                                params->budget, params->max_ctx, &cap, err);
    if (st != KVL_OK)
        return st;
    kvl_block_layout lay;
    st = kvl_block_layout_init_fmt(hp, bs, params->k_fmt, params->v_fmt, &lay, err);
    if (st != KVL_OK)
        return st;
    const kvl_kvq_codec kc = kvl_kv_codec_for(params->k_fmt, KVL_KV_ROLE_K);
    const kvl_kvq_codec vc = kvl_kv_codec_for(params->v_fmt, KVL_KV_ROLE_V);
    const bool meta = params->metadata_only;
    const bool k_def = !meta && kvl_kv_codec_deferred(kc);
    const bool v_def = !meta && kvl_kv_codec_deferred(vc);
    size_t res_floats = 0, res_all = 0, res_bytes = 0;
    if (k_def || v_def) {
        /* bounded by the shape limits per slot; the slot count makes it big */
        res_floats =
            (size_t)lay.n_layers * (size_t)lay.n_kv_heads * (size_t)bs * (size_t)lay.head_dim;
        if (kvl_mul_overflow(res_floats, (size_t)params->max_seqs, &res_all) ||
            kvl_mul_overflow(res_all, sizeof(float) * (size_t)(k_def + v_def), &res_bytes))
            return kvl_errorf(err, KVL_E_LIMIT,
                              "kv paged: residual of %d slots x %zu floats overflows size_t",
                              (int)params->max_seqs, res_floats);
    }

    kvl_kv_paged *kv = calloc(1, sizeof *kv);
    if (!kv)
        return kvl_errorf(err, KVL_E_NOMEM, "kv paged: cannot allocate the handle");
    kv->lay = lay;
    kv->k_codec = kc;
    kv->v_codec = vc;
    kv->k_def = k_def;
    kv->v_def = v_def;
    kv->res_seq_floats = res_floats;
    kv->residual_bytes = res_bytes;
    kv->meta = meta;
    kv->n_heads = (int32_t)hp->n_heads;
    kv->max_seqs = params->max_seqs;
    kv->max_ctx = params->max_ctx;
    kv->tables = calloc((size_t)params->max_seqs, sizeof(kvl_block_table));
    if (!kv->tables) {
        free(kv);
        return kvl_errorf(err, KVL_E_NOMEM, "kv paged: cannot allocate %d block tables",
                          (int)params->max_seqs);
    }
    st = meta ? kvl_block_pool_init_meta(&lay, params->budget, &kv->pool, err)
              : kvl_block_pool_init(&lay, params->budget, &kv->pool, err);
    for (int32_t s = 0; st == KVL_OK && s < kv->max_seqs; s++)
        st = kvl_block_table_init(&kv->tables[s], kv->max_ctx, bs, err);
    kv->cap = st == KVL_OK ? kv->tables[0].cap : 0;
    if (st != KVL_OK) {
        kvl_kv_paged_free(kv);
        return st;
    }
    kv->policy = calloc((size_t)kv->max_seqs, sizeof *kv->policy);
    kv->n_evicted_blocks = calloc((size_t)kv->max_seqs, sizeof *kv->n_evicted_blocks);
    kv->rope_freq = calloc((size_t)(hp->rope_dim / 2 + 1), sizeof(float));
    if (!kv->policy || !kv->n_evicted_blocks || !kv->rope_freq) {
        kvl_kv_paged_free(kv);
        return kvl_errorf(err, KVL_E_NOMEM, "kv paged: cannot allocate %d policy slots",
                          (int)params->max_seqs);
    }
    kvl_kv_rope_freqs(hp, kv->rope_freq);
    kv->rope = (kvl_kv_rope){.freq = kv->rope_freq,
                             .rot_dim = (int32_t)hp->rope_dim,
                             .neox = kvl_arch_get(hp->arch)->rope_neox};
    kv->regions = calloc((size_t)lay.n_layers * 2, sizeof(kvl_block_region));
    if (!kv->regions) {
        kvl_kv_paged_free(kv);
        return kvl_errorf(err, KVL_E_NOMEM, "kv paged: cannot allocate %d layer regions",
                          (int)lay.n_layers);
    }
    for (int32_t l = 0; l < lay.n_layers && !meta; l++)
        for (int v = 0; v < 2; v++)
            kv->regions[l * 2 + v] = kvl_block_pool_region(kv->pool, l, v == 1);
    if (k_def || v_def) {
        kv->res_start = calloc((size_t)kv->max_seqs * (size_t)lay.n_layers, sizeof(int32_t));
        if (k_def)
            kv->res_k = calloc(res_all, sizeof(float));
        if (v_def)
            kv->res_v = calloc(res_all, sizeof(float));
        if (!kv->res_start || (k_def && !kv->res_k) || (v_def && !kv->res_v)) {
            kvl_kv_paged_free(kv);
            return kvl_errorf(err, KVL_E_NOMEM,
                              "kv paged: cannot allocate the f32 residual: %zu bytes for %d "
                              "slots of block_size %d",
                              res_bytes, (int)params->max_seqs, (int)bs);
        }
    }
    *out = kv;
    return KVL_OK;
}

void kvl_kv_paged_free(kvl_kv_paged *kv) {
    if (!kv)
        return;
    for (int32_t s = 0; s < kv->max_seqs; s++) {
        if (kv->pool && kv->tables[s].ids)
            kvl_block_table_release(&kv->tables[s], kv->pool);
        kvl_block_table_free(&kv->tables[s]);
    }
    free(kv->tables);
    free(kv->regions);
    free(kv->res_k);
    free(kv->res_v);
    free(kv->res_start);
    free(kv->policy);
    free(kv->n_evicted_blocks);
    free(kv->rope_freq);
    free(kv->rope_cs);
    free(kv->mass);
    free(kv->mass_n);
    free(kv->rank);
    free(kv->cand);
    free(kv->victims);
    kvl_block_pool_free(kv->pool);
    free(kv);
}

/* ---- the forward-pass seam ---- */

static void paged_store(void *ctx, int32_t layer, int32_t seq, int32_t pos, const float *k,
                        const float *v) {
    kvl_kv_paged *kv = ctx;
    KVL_ASSERT(!kv->meta);
    KVL_ASSERT(seq >= 0 && seq < kv->max_seqs);
    KVL_ASSERT(layer >= 0 && layer < kv->lay.n_layers);
    const kvl_block_table *t = &kv->tables[seq];
    KVL_ASSERT(pos >= 0 && pos < t->n_tokens);
    const int32_t bs = kv->lay.block_size, hd = kv->lay.head_dim, H = kv->lay.n_kv_heads;
    uint32_t id = t->ids[pos / bs];
    KVL_ASSERT(kvl_block_pool_refcount(kv->pool, id) == 1);
    const kvl_block_region *rk = &kv->regions[layer * 2], *rv = &kv->regions[layer * 2 + 1];
    const int32_t slot = pos % bs;
    if (kv->k_codec == KVL_KVQ_F32 && kv->v_codec == KVL_KVQ_F32) {
        size_t off = (size_t)slot * (size_t)hd * sizeof(float);
        size_t row = (size_t)hd * sizeof(float);
        uint8_t *kc = rk->base + (size_t)id * rk->chunk_bytes + off;
        uint8_t *vc = rv->base + (size_t)id * rv->chunk_bytes + off;
        for (int32_t h = 0; h < H; h++) {
            memcpy(kc + (size_t)h * rk->head_stride, k + (size_t)h * hd, row);
            memcpy(vc + (size_t)h * rv->head_stride, v + (size_t)h * hd, row);
        }
        return;
    }
    int32_t *rs = kv->res_start ? &kv->res_start[(size_t)seq * kv->lay.n_layers + layer] : NULL;
    if (rs) /* positions of a block arrive in order (kv_paged.h) */
        KVL_ASSERT(pos >= *rs && pos - *rs < bs);
    for (int32_t h = 0; h < H; h++) {
        uint8_t *kc = rk->base + (size_t)h * rk->head_stride + (size_t)id * rk->chunk_bytes;
        uint8_t *vc = rv->base + (size_t)h * rv->head_stride + (size_t)id * rv->chunk_bytes;
        if (kv->k_def)
            memcpy(res_ptr(kv, kv->res_k, seq, layer, h) + (size_t)slot * hd, k + (size_t)h * hd,
                   (size_t)hd * sizeof(float));
        else
            kvl_kv_encode_row(kv->k_codec, kc, bs, hd, slot, k + (size_t)h * hd);
        if (kv->v_def)
            memcpy(res_ptr(kv, kv->res_v, seq, layer, h) + (size_t)slot * hd, v + (size_t)h * hd,
                   (size_t)hd * sizeof(float));
        else
            kvl_kv_encode_row(kv->v_codec, vc, bs, hd, slot, v + (size_t)h * hd);
    }
    if (rs && slot == bs - 1) { /* the block is full: quantize it once */
        for (int32_t h = 0; h < H; h++) {
            if (kv->k_def)
                kvl_kv_encode_block(kv->k_codec,
                                    rk->base + (size_t)h * rk->head_stride +
                                        (size_t)id * rk->chunk_bytes,
                                    bs, hd, res_ptr(kv, kv->res_k, seq, layer, h), bs);
            if (kv->v_def)
                kvl_kv_encode_block(kv->v_codec,
                                    rv->base + (size_t)h * rv->head_stride +
                                        (size_t)id * rv->chunk_bytes,
                                    bs, hd, res_ptr(kv, kv->res_v, seq, layer, h), bs);
        }
        *rs += bs;
    }
}

static void paged_attend(void *ctx, int32_t layer, int32_t seq, int32_t n_ctx, const float *q,
                         float *out, int32_t h0, int32_t h1, float scale, float *scratch) {
    const kvl_kv_paged *kv = ctx;
    KVL_ASSERT(!kv->meta);
    KVL_ASSERT(seq >= 0 && seq < kv->max_seqs);
    KVL_ASSERT(layer >= 0 && layer < kv->lay.n_layers);
    KVL_ASSERT(h0 >= 0 && h0 <= h1 && h1 <= kv->n_heads);
    const kvl_block_table *t = &kv->tables[seq];
    KVL_ASSERT(n_ctx <= t->n_tokens);
    const kvl_block_region *rk = &kv->regions[layer * 2], *rv = &kv->regions[layer * 2 + 1];
    /* h2o / snapkv: this query's attention adds to the blocks' mass */
    uint64_t *mass = kv->mass && kvl_kv_policy_accumulates(&kv->policy[seq], t->n_tokens, n_ctx)
                         ? kv->mass + (size_t)seq * kv->cap
                         : NULL;
    if (mass && layer == 0 && h0 == 0) /* one count per query for every block it sees */
        for (int32_t b = 0, nb = (n_ctx + kv->lay.block_size - 1) / kv->lay.block_size; b < nb; b++)
            __atomic_fetch_add(&kv->mass_n[(size_t)seq * kv->cap + b], 1u, __ATOMIC_RELAXED);
    if (kv->k_codec == KVL_KVQ_F32 && kv->v_codec == KVL_KVQ_F32) {
        /* f32: K and V chunks and arrays have the same sizes */
        kvl_kv_view view = {
            .k = (const float *)rk->base,
            .v = (const float *)rv->base,
            .blocks = t->ids,
            .block_stride = (int64_t)(rk->chunk_bytes / sizeof(float)),
            .head_stride = (int64_t)(rk->head_stride / sizeof(float)),
            .block_size = kv->lay.block_size,
            .n_heads = kv->n_heads,
            .n_kv_heads = kv->lay.n_kv_heads,
            .head_dim = kv->lay.head_dim,
            .shift = t->shifted ? t->shift : NULL,
            .rope = &kv->rope,
            .mass = mass,
            .mass_tmp = scratch,
        };
        kvl_kv_attend_f32(&view, n_ctx, q, out, h0, h1, scale, scratch);
        return;
    }
    kvl_kvq_view view = {
        .k = rk->base,
        .v = rv->base,
        .k_head_stride = rk->head_stride,
        .v_head_stride = rv->head_stride,
        .k_chunk = rk->chunk_bytes,
        .v_chunk = rv->chunk_bytes,
        .k_codec = kv->k_codec,
        .v_codec = kv->v_codec,
        .blocks = t->ids,
        .block_size = kv->lay.block_size,
        .n_heads = kv->n_heads,
        .n_kv_heads = kv->lay.n_kv_heads,
        .head_dim = kv->lay.head_dim,
        .res_block = -1,
        .shift = t->shifted ? t->shift : NULL,
        .rope = &kv->rope,
        .mass = mass,
        .mass_tmp = scratch,
    };
    if (kv->res_start) {
        int32_t rs = kv->res_start[(size_t)seq * kv->lay.n_layers + layer];
        KVL_ASSERT(n_ctx - rs <= kv->lay.block_size);
        if (n_ctx > rs) {
            view.res_block = rs / kv->lay.block_size;
            view.k_res = kv->k_def ? res_ptr(kv, kv->res_k, seq, layer, 0) : NULL;
            view.v_res = kv->v_def ? res_ptr(kv, kv->res_v, seq, layer, 0) : NULL;
        }
    }
    kvl_kv_attend_q(&view, n_ctx, q, out, h0, h1, scale, false);
}

kvl_kv_iface kvl_kv_paged_iface(kvl_kv_paged *kv) {
    kvl_kv_iface it = {.ctx = kv, .store = paged_store, .attend = paged_attend};
    return it;
}

/* ---- sequence operations ---- */

static kvl_status check_seq(const kvl_kv_paged *kv, const char *what, int32_t seq, kvl_error *err) {
    if (seq < 0 || seq >= kv->max_seqs)
        return kvl_errorf(err, KVL_E_INVALID, "kv paged %s: seq %d not in [0, %d)", what, (int)seq,
                          (int)kv->max_seqs);
    return KVL_OK;
}

/* The partly filled shared last block that growing t would copy, or
 * UINT32_MAX when there is none. */
static uint32_t cow_block(const kvl_kv_paged *kv, const kvl_block_table *t, int32_t n_new) {
    if (n_new <= 0 || t->n_tokens % t->block_size == 0)
        return UINT32_MAX;
    uint32_t id = t->ids[t->n_blocks - 1];
    return kvl_block_pool_refcount(kv->pool, id) > 1 ? id : UINT32_MAX;
}

kvl_status kvl_kv_paged_reserve_batch(kvl_kv_paged *kv, int32_t n, const int32_t *seqs,
                                      const int32_t *n_new, kvl_error *err) {
    if (n < 0)
        return kvl_errorf(err, KVL_E_INVALID, "kv paged reserve: n %d < 0", (int)n);
    /* 1. every argument */
    for (int32_t i = 0; i < n; i++) {
        kvl_status st = check_seq(kv, "reserve", seqs[i], err);
        if (st != KVL_OK)
            return st;
        const kvl_block_table *t = &kv->tables[seqs[i]];
        if (n_new[i] < 0)
            return kvl_errorf(err, KVL_E_INVALID, "kv paged reserve: seq %d: n_new %d < 0",
                              (int)seqs[i], (int)n_new[i]);
        if (n_new[i] > kv->max_ctx - t->n_tokens)
            return kvl_errorf(err, KVL_E_LIMIT,
                              "kv paged reserve: seq %d: %d tokens + %d new > max_ctx %d",
                              (int)seqs[i], (int)t->n_tokens, (int)n_new[i], (int)kv->max_ctx);
        for (int32_t j = 0; j < i; j++)
            if (seqs[j] == seqs[i])
                return kvl_errorf(err, KVL_E_INVALID,
                                  "kv paged reserve: seq %d appears twice (entries %d and %d)",
                                  (int)seqs[i], (int)j, (int)i);
    }
    /* 2. exact block count: new blocks, plus copies. k sequences growing out
     * of one shared block of count r make min(k, r - 1) copies. */
    uint64_t need = 0;
    for (int32_t i = 0; i < n; i++) {
        const kvl_block_table *t = &kv->tables[seqs[i]];
        need += kvl_block_table_blocks_needed(t, kv->pool, n_new[i]);
        uint32_t x = cow_block(kv, t, n_new[i]);
        if (x == UINT32_MAX)
            continue;
        need -= 1; /* counted per block below */
        bool first = true;
        for (int32_t j = 0; j < i && first; j++)
            first = cow_block(kv, &kv->tables[seqs[j]], n_new[j]) != x;
        if (!first)
            continue;
        uint32_t k = 0, r = kvl_block_pool_refcount(kv->pool, x);
        for (int32_t j = i; j < n; j++)
            k += cow_block(kv, &kv->tables[seqs[j]], n_new[j]) == x;
        need += k < r ? k : r - 1;
    }
    uint32_t n_free = kvl_block_pool_n_free(kv->pool);
    if (need > n_free) {
        if (n == 1)
            return kvl_errorf(err, KVL_E_NO_KV,
                              "kv paged reserve: seq %d: %d + %d tokens needs %llu blocks, "
                              "free %u of %u",
                              (int)seqs[0], (int)kv->tables[seqs[0]].n_tokens, (int)n_new[0],
                              (unsigned long long)need, n_free, kvl_block_pool_n_blocks(kv->pool));
        return kvl_errorf(err, KVL_E_NO_KV,
                          "kv paged reserve: %d seqs need %llu blocks, free %u of %u", (int)n,
                          (unsigned long long)need, n_free, kvl_block_pool_n_blocks(kv->pool));
    }
    /* 3. mutate; nothing below can fail */
    for (int32_t i = 0; i < n; i++) {
        int32_t copied = 0;
        kvl_status st =
            kvl_block_table_grow(&kv->tables[seqs[i]], kv->pool, n_new[i], &copied, err);
        KVL_ASSERT(st == KVL_OK);
        kv->n_copied += copied;
    }
    return KVL_OK;
}

kvl_status kvl_kv_paged_reserve(kvl_kv_paged *kv, int32_t seq, int32_t n_new, kvl_error *err) {
    return kvl_kv_paged_reserve_batch(kv, 1, &seq, &n_new, err);
}

uint32_t kvl_kv_paged_blocks_needed(const kvl_kv_paged *kv, int32_t seq, int32_t n_new) {
    if (seq < 0 || seq >= kv->max_seqs || n_new < 0 ||
        n_new > kv->max_ctx - kv->tables[seq].n_tokens)
        return 0;
    return kvl_block_table_blocks_needed(&kv->tables[seq], kv->pool, n_new);
}

kvl_status kvl_kv_paged_fork(kvl_kv_paged *kv, int32_t src, int32_t dst, kvl_error *err) {
    kvl_status st = check_seq(kv, "fork src", src, err);
    if (st == KVL_OK)
        st = check_seq(kv, "fork dst", dst, err);
    if (st != KVL_OK)
        return st;
    if (src == dst)
        return kvl_errorf(err, KVL_E_INVALID, "kv paged fork: src and dst are both seq %d",
                          (int)src);
    if (kv->tables[dst].n_tokens != 0)
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv paged fork: dst seq %d holds %d tokens, not 0 (release it first)",
                          (int)dst, (int)kv->tables[dst].n_tokens);
    st = kvl_block_table_fork(&kv->tables[dst], &kv->tables[src], kv->pool, err);
    if (st == KVL_OK && kv->mass) {
        memcpy(kv->mass + (size_t)dst * kv->cap, kv->mass + (size_t)src * kv->cap,
               kv->cap * sizeof(uint64_t));
        memcpy(kv->mass_n + (size_t)dst * kv->cap, kv->mass_n + (size_t)src * kv->cap,
               kv->cap * sizeof(uint32_t));
    }
    if (st != KVL_OK || !kv->res_start)
        return st;
    const size_t L = (size_t)kv->lay.n_layers;
    memcpy(&kv->res_start[(size_t)dst * L], &kv->res_start[(size_t)src * L], L * sizeof(int32_t));
    if (kv->res_k)
        memcpy(res_ptr(kv, kv->res_k, dst, 0, 0), res_ptr(kv, kv->res_k, src, 0, 0),
               kv->res_seq_floats * sizeof(float));
    if (kv->res_v)
        memcpy(res_ptr(kv, kv->res_v, dst, 0, 0), res_ptr(kv, kv->res_v, src, 0, 0),
               kv->res_seq_floats * sizeof(float));
    return KVL_OK;
}

/* Zero seq's attention mass and its counts from logical block `from` on. */
static void mass_clear(kvl_kv_paged *kv, int32_t seq, uint32_t from) {
    if (!kv->mass || from >= kv->cap)
        return;
    memset(kv->mass + (size_t)seq * kv->cap + from, 0, (kv->cap - from) * sizeof(uint64_t));
    memset(kv->mass_n + (size_t)seq * kv->cap + from, 0, (kv->cap - from) * sizeof(uint32_t));
}

/* After truncating seq to n tokens: the residual starts at the block of n;
 * if that block was already quantized, its kept rows are decoded back into
 * the residual (they were rounded once already; the next flush rounds them
 * again with the new block's scale). */
static void residual_truncate(kvl_kv_paged *kv, int32_t seq, int32_t n) {
    const int32_t bs = kv->lay.block_size, hd = kv->lay.head_dim;
    const int32_t nb = n / bs * bs;
    const kvl_block_table *t = &kv->tables[seq];
    for (int32_t l = 0; l < kv->lay.n_layers; l++) {
        int32_t *rs = &kv->res_start[(size_t)seq * kv->lay.n_layers + l];
        if (*rs <= nb)
            continue;
        *rs = nb;
        if (n == nb)
            continue;
        uint32_t id = t->ids[nb / bs];
        for (int32_t h = 0; h < kv->lay.n_kv_heads; h++)
            for (int32_t r = 0; r < n - nb; r++) {
                if (kv->k_def)
                    kvl_kvq_decode_row(kv->k_codec, kvl_block_pool_chunk(kv->pool, id, l, false, h),
                                       bs, hd, r,
                                       res_ptr(kv, kv->res_k, seq, l, h) + (size_t)r * hd);
                if (kv->v_def)
                    kvl_kvq_decode_row(kv->v_codec, kvl_block_pool_chunk(kv->pool, id, l, true, h),
                                       bs, hd, r,
                                       res_ptr(kv, kv->res_v, seq, l, h) + (size_t)r * hd);
            }
    }
}

kvl_status kvl_kv_paged_truncate(kvl_kv_paged *kv, int32_t seq, int32_t n_tokens, kvl_error *err) {
    kvl_status st = check_seq(kv, "truncate", seq, err);
    if (st != KVL_OK)
        return st;
    st = kvl_block_table_truncate(&kv->tables[seq], kv->pool, n_tokens, err);
    if (st == KVL_OK && kv->res_start)
        residual_truncate(kv, seq, n_tokens);
    if (st == KVL_OK)
        mass_clear(kv, seq, kv->tables[seq].n_blocks);
    return st;
}

kvl_status kvl_kv_paged_attach(kvl_kv_paged *kv, int32_t seq, const uint32_t *ids, uint32_t n,
                               kvl_error *err) {
    kvl_status st = check_seq(kv, "attach", seq, err);
    if (st == KVL_OK)
        st = kvl_block_table_attach(&kv->tables[seq], kv->pool, ids, n, err);
    if (st == KVL_OK && kv->res_start)
        for (int32_t l = 0; l < kv->lay.n_layers; l++)
            kv->res_start[(size_t)seq * kv->lay.n_layers + l] = kv->tables[seq].n_tokens;
    return st;
}

kvl_status kvl_kv_paged_release(kvl_kv_paged *kv, int32_t seq, kvl_error *err) {
    kvl_status st = check_seq(kv, "release", seq, err);
    if (st != KVL_OK)
        return st;
    kvl_block_table_release(&kv->tables[seq], kv->pool);
    mass_clear(kv, seq, 0);
    if (kv->res_start)
        for (int32_t l = 0; l < kv->lay.n_layers; l++)
            kv->res_start[(size_t)seq * kv->lay.n_layers + l] = 0;
    kv->n_evicted_blocks[seq] = 0;
    return KVL_OK;
}

/* ---- eviction ---- */

static void fill_rope_table(kvl_kv_paged *kv) {
    const int32_t half = kv->rope.rot_dim / 2;
    for (int32_t k = 0; k < kv->rope.n_cs; k++)
        for (int32_t i = 0; i < half; i++) {
            const float a = (float)(k * kv->rope.cs_step) * kv->rope_freq[i];
            kv->rope_cs[((size_t)k * (size_t)half + (size_t)i) * 2] = cosf(a);
            kv->rope_cs[((size_t)k * (size_t)half + (size_t)i) * 2 + 1] = sinf(a);
        }
}

/* cos and sin of every shift a table can carry (multiples of the block
 * size up to max_ctx), so that attention computes no sine. */
static kvl_status rope_table(kvl_kv_paged *kv, kvl_error *err) {
    const int32_t n = kv->max_ctx / kv->lay.block_size + 1;
    kv->rope_cs = malloc((size_t)n * (size_t)kv->rope.rot_dim * sizeof(float));
    if (!kv->rope_cs)
        return kvl_errorf(err, KVL_E_NOMEM,
                          "kv paged set_policy: cannot allocate %d x %d rotary "
                          "cos/sin",
                          (int)n, (int)kv->rope.rot_dim);
    kv->rope.cs = kv->rope_cs;
    kv->rope.cs_step = kv->lay.block_size;
    kv->rope.n_cs = n;
    fill_rope_table(kv);
    return KVL_OK;
}

kvl_status kvl_kv_paged_set_policy(kvl_kv_paged *kv, int32_t seq, const kvl_kv_policy *p,
                                   kvl_error *err) {
    kvl_status st = check_seq(kv, "set_policy", seq, err);
    if (st == KVL_OK)
        st = kvl_kv_policy_check(p, kv->lay.block_size, kv->max_ctx, err);
    if (st != KVL_OK)
        return st;
    if (kvl_kv_policy_evicts(p) && !kv->rope_cs && kv->rope.rot_dim > 0) {
        st = rope_table(kv, err);
        if (st != KVL_OK)
            return st;
    }
    if (kvl_kv_policy_scored(p) && !kv->mass) {
        kv->mass = calloc((size_t)kv->max_seqs * kv->cap, sizeof(uint64_t));
        kv->mass_n = calloc((size_t)kv->max_seqs * kv->cap, sizeof(uint32_t));
        kv->rank = malloc(kv->cap * sizeof(uint64_t));
        kv->cand = malloc(kv->cap * sizeof(kvl_kv_cand));
        kv->victims = malloc(kv->cap * sizeof(uint32_t));
        if (!kv->mass || !kv->mass_n || !kv->rank || !kv->cand || !kv->victims) {
            free(kv->mass);
            free(kv->mass_n);
            free(kv->rank);
            free(kv->cand);
            free(kv->victims);
            kv->mass = NULL;
            kv->mass_n = NULL;
            kv->rank = NULL;
            kv->cand = NULL;
            kv->victims = NULL;
            return kvl_errorf(err, KVL_E_NOMEM,
                              "kv paged set_policy: cannot allocate the attention mass of %d "
                              "slots x %u blocks",
                              (int)kv->max_seqs, kv->cap);
        }
    }
    kv->policy[seq] = *p;
    /* h2o's default stride, at most the block size (so that every full
     * block has been seen by a query that adds mass) */
    if (p->kind == KVL_KV_POLICY_H2O && p->mass_stride == 0 &&
        kvl_kv_policy_mass_stride(p) > kv->lay.block_size)
        kv->policy[seq].mass_stride = kv->lay.block_size;
    return KVL_OK;
}

/* Drop the evicted blocks' mass: victims (ascending) of a table that had
 * n_blocks; the later entries move down, the freed tail is zeroed. */
static void mass_evict(kvl_kv_paged *kv, int32_t seq, uint32_t n_blocks, const uint32_t *victims,
                       uint32_t n) {
    if (!kv->mass || n == 0)
        return;
    uint64_t *m = kv->mass + (size_t)seq * kv->cap;
    uint32_t *c = kv->mass_n + (size_t)seq * kv->cap;
    uint32_t dst = victims[0], k = 0;
    for (uint32_t b = victims[0]; b < n_blocks; b++) {
        if (k < n && victims[k] == b)
            k++;
        else {
            c[dst] = c[b];
            m[dst++] = m[b];
        }
    }
    mass_clear(kv, seq, dst);
}

/* The victims of seq's policy for growing by n_new, evicted from its
 * table: *n blocks, the last of them *last. */
static kvl_status evict_victims(kvl_kv_paged *kv, int32_t seq, int32_t n_new, uint32_t *n,
                                uint32_t *last, kvl_error *err) {
    kvl_block_table *t = &kv->tables[seq];
    const kvl_kv_policy *p = &kv->policy[seq];
    const int32_t bs = kv->lay.block_size;
    kvl_status st;
    *n = 0;
    if (kvl_kv_policy_scored(p) && kv->mass) {
        const uint32_t nb = t->n_blocks;
        kvl_kv_policy_rank(p, kv->mass + (size_t)seq * kv->cap, kv->mass_n + (size_t)seq * kv->cap,
                           nb, kv->rank);
        st = kvl_kv_policy_victims_scored(p, bs, t->n_tokens, n_new, kv->rank, kv->cand,
                                          kv->victims, n, err);
        if (st != KVL_OK || *n == 0)
            return st;
        st = kvl_block_table_evict_list(t, kv->pool, kv->victims, *n, err);
        KVL_ASSERT(st == KVL_OK); /* ascending full blocks */
        mass_evict(kv, seq, nb, kv->victims, *n);
        *last = kv->victims[*n - 1];
        return KVL_OK;
    }
    uint32_t first;
    st = kvl_kv_policy_victims(p, bs, t->n_tokens, n_new, &first, n, err);
    if (st != KVL_OK || *n == 0)
        return st;
    st = kvl_block_table_evict(t, kv->pool, first, *n, err);
    KVL_ASSERT(st == KVL_OK); /* the victims are full blocks before n_tokens */
    *last = first + *n - 1;
    return KVL_OK;
}

void kvl_kv_paged_rope_divide(kvl_kv_paged *kv, const void *div) {
    for (int32_t i = 0; div && i < kv->rope.rot_dim / 2; i++) {
        float d;
        memcpy(&d, (const float *)div + i, sizeof d);
        kv->rope_freq[i] /= d;
    }
    if (kv->rope_cs)
        fill_rope_table(kv);
}

kvl_status kvl_kv_paged_make_room(kvl_kv_paged *kv, int32_t seq, int32_t n_new, int32_t *n_evicted,
                                  kvl_error *err) {
    if (n_evicted)
        *n_evicted = 0;
    kvl_status st = check_seq(kv, "make_room", seq, err);
    if (st != KVL_OK)
        return st;
    if (n_new < 0)
        return kvl_errorf(err, KVL_E_INVALID, "kv paged make_room: seq %d: n_new %d < 0", (int)seq,
                          (int)n_new);
    uint32_t n, last = 0;
    st = evict_victims(kv, seq, n_new, &n, &last, err);
    if (st != KVL_OK || n == 0)
        return st;
    const int32_t d = (int32_t)n * kv->lay.block_size;
    if (kv->res_start) /* every victim lies below the residual's block */
        for (int32_t l = 0; l < kv->lay.n_layers; l++) {
            int32_t *rs = &kv->res_start[(size_t)seq * kv->lay.n_layers + l];
            KVL_ASSERT(*rs >= (int32_t)(last + 1) * kv->lay.block_size);
            *rs -= d;
        }
    kv->n_evicted_blocks[seq] += n;
    kv->n_evicted_total += n;
    if (n_evicted)
        *n_evicted = d;
    return KVL_OK;
}

const uint64_t *kvl_kv_paged_mass(const kvl_kv_paged *kv, int32_t seq) {
    return kv->mass && seq >= 0 && seq < kv->max_seqs ? kv->mass + (size_t)seq * kv->cap : NULL;
}

const uint32_t *kvl_kv_paged_mass_count(const kvl_kv_paged *kv, int32_t seq) {
    return kv->mass && seq >= 0 && seq < kv->max_seqs ? kv->mass_n + (size_t)seq * kv->cap : NULL;
}

void kvl_kv_paged_mass_reset(kvl_kv_paged *kv, int32_t seq) {
    if (seq >= 0 && seq < kv->max_seqs)
        mass_clear(kv, seq, 0);
}

int32_t kvl_kv_paged_len(const kvl_kv_paged *kv, int32_t seq) {
    return seq >= 0 && seq < kv->max_seqs ? kv->tables[seq].n_tokens : -1;
}
int32_t kvl_kv_paged_max_seqs(const kvl_kv_paged *kv) { return kv->max_seqs; }
int32_t kvl_kv_paged_max_ctx(const kvl_kv_paged *kv) { return kv->max_ctx; }

const kvl_block_table *kvl_kv_paged_table(const kvl_kv_paged *kv, int32_t seq) {
    return seq >= 0 && seq < kv->max_seqs ? &kv->tables[seq] : NULL;
}

kvl_block_pool *kvl_kv_paged_pool(kvl_kv_paged *kv) { return kv->pool; }
const kvl_block_layout *kvl_kv_paged_layout(const kvl_kv_paged *kv) { return &kv->lay; }

/* ---- accounting ---- */

kvl_status kvl_kv_paged_seq_stats_get(const kvl_kv_paged *kv, int32_t seq, kvl_kv_seq_stats *out,
                                      kvl_error *err) {
    kvl_status st = check_seq(kv, "stats", seq, err);
    if (st != KVL_OK)
        return st;
    const kvl_block_table *t = &kv->tables[seq];
    kvl_kv_seq_stats s = {0};
    s.n_tokens = t->n_tokens;
    s.n_blocks = t->n_blocks;
    for (uint32_t b = 0; b < t->n_blocks; b++)
        s.n_blocks_shared += kvl_block_pool_refcount(kv->pool, t->ids[b]) > 1;
    s.n_blocks_own = s.n_blocks - s.n_blocks_shared;
    size_t bb = kv->lay.block_bytes;
    s.bytes = (size_t)s.n_blocks * bb;
    s.bytes_own = (size_t)s.n_blocks_own * bb;
    s.bytes_shared = (size_t)s.n_blocks_shared * bb;
    s.n_slots_frag = (int64_t)s.n_blocks * kv->lay.block_size - s.n_tokens;
    s.residual_bytes = kv->max_seqs ? kv->residual_bytes / (size_t)kv->max_seqs : 0;
    if (kv->res_start) {
        int32_t r = t->n_tokens - kv->res_start[(size_t)seq * kv->lay.n_layers];
        s.n_residual = r > 0 ? r : 0;
    }
    s.policy = kv->policy[seq].kind;
    s.n_evicted_blocks = kv->n_evicted_blocks[seq];
    s.n_evicted_tokens = s.n_evicted_blocks * kv->lay.block_size;
    *out = s;
    return KVL_OK;
}

void kvl_kv_paged_stats_get(const kvl_kv_paged *kv, kvl_kv_paged_stats *out) {
    kvl_kv_paged_stats s = {0};
    kvl_block_pool_stats_get(kv->pool, &s.pool);
    for (int32_t i = 0; i < kv->max_seqs; i++) {
        const kvl_block_table *t = &kv->tables[i];
        s.n_seqs_active += t->n_tokens > 0;
        s.n_tokens += t->n_tokens;
        s.n_blocks_logical += t->n_blocks;
    }
    s.bytes_logical = (size_t)s.n_blocks_logical * kv->lay.block_bytes;
    s.bytes_saved = s.bytes_logical - s.pool.bytes_used;
    s.n_blocks_copied = kv->n_copied;
    s.residual_bytes = kv->residual_bytes;
    s.n_blocks_evicted = kv->n_evicted_total;
    *out = s;
}

/* ---- swap: a sequence's blocks and residual out of the pool and back ---- */

static void block_copy(const kvl_kv_paged *kv, uint32_t id, uint8_t *buf, bool save) {
    if (kv->meta) /* a ledger's swap moves no bytes (kvllm sim prices them) */
        return;
    for (int32_t l = 0; l < kv->lay.n_layers; l++)
        for (int v = 0; v < 2; v++) {
            size_t cb = v ? kv->lay.v_head_bytes : kv->lay.k_head_bytes;
            for (int32_t h = 0; h < kv->lay.n_kv_heads; h++) {
                uint8_t *chunk = kvl_block_pool_chunk(kv->pool, id, l, v, h);
                if (save)
                    memcpy(buf, chunk, cb);
                else
                    memcpy(chunk, buf, cb);
                buf += cb;
            }
        }
}

size_t kvl_kv_paged_residual_state_bytes(const kvl_kv_paged *kv) {
    if (!kv->res_start)
        return 0;
    return kv->res_seq_floats * sizeof(float) *
               (size_t)((kv->res_k != NULL) + (kv->res_v != NULL)) +
           (size_t)kv->lay.n_layers * sizeof(int32_t);
}

void kvl_kv_paged_block_save(const kvl_kv_paged *kv, int32_t seq, uint32_t j, uint8_t *dst) {
    KVL_ASSERT(seq >= 0 && seq < kv->max_seqs && j < kv->tables[seq].n_blocks);
    block_copy(kv, kv->tables[seq].ids[j], dst, true);
}

void kvl_kv_paged_block_load(kvl_kv_paged *kv, int32_t seq, uint32_t j, const uint8_t *src) {
    KVL_ASSERT(seq >= 0 && seq < kv->max_seqs && j < kv->tables[seq].n_blocks);
    uint32_t id = kv->tables[seq].ids[j];
    KVL_ASSERT(kvl_block_pool_refcount(kv->pool, id) == 1);
    block_copy(kv, id, (uint8_t *)src, false);
}

void kvl_kv_paged_block_save_id(const kvl_kv_paged *kv, uint32_t id, uint8_t *dst) {
    block_copy(kv, id, dst, true);
}

void kvl_kv_paged_block_load_id(kvl_kv_paged *kv, uint32_t id, const uint8_t *src) {
    KVL_ASSERT(kvl_block_pool_refcount(kv->pool, id) == 1);
    block_copy(kv, id, (uint8_t *)src, false);
}

static void residual_copy(const kvl_kv_paged *kv, int32_t seq, uint8_t *buf, bool save) {
    if (!kv->res_start)
        return;
    const size_t L = (size_t)kv->lay.n_layers, fb = kv->res_seq_floats * sizeof(float);
    float *roles[2] = {kv->res_k, kv->res_v};
    for (int r = 0; r < 2; r++) {
        if (!roles[r])
            continue;
        float *p = res_ptr(kv, roles[r], seq, 0, 0);
        if (save)
            memcpy(buf, p, fb);
        else
            memcpy(p, buf, fb);
        buf += fb;
    }
    if (save)
        memcpy(buf, &kv->res_start[(size_t)seq * L], L * sizeof(int32_t));
    else
        memcpy(&kv->res_start[(size_t)seq * L], buf, L * sizeof(int32_t));
}

void kvl_kv_paged_residual_save(const kvl_kv_paged *kv, int32_t seq, uint8_t *dst) {
    residual_copy(kv, seq, dst, true);
}

void kvl_kv_paged_residual_load(kvl_kv_paged *kv, int32_t seq, const uint8_t *src) {
    residual_copy(kv, seq, (uint8_t *)src, false);
}
