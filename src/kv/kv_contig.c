/*
 * kv_contig: the contiguous f32 KV cache, one max_ctx region per sequence.
 *
 * Layout (K and V are two separate arrays of the same shape):
 *
 *     k: (n_seqs, n_layers, n_kv_heads, max_ctx, head_dim)
 *
 *     seq s, layer l:
 *     +-------------------------------+-------------------------------+----
 *     | kv head 0                     | kv head 1                     | ...
 *     | pos 0 | pos 1 | ... | pos M-1 | pos 0 | pos 1 | ... | pos M-1 |
 *     +-------------------------------+-------------------------------+----
 *       each "pos" cell is head_dim floats; M = max_ctx
 *
 * Heads outermost within a layer so that attention for one head reads its
 * rows front to back. To kv_attn this region is a single block of max_ctx
 * positions (block table {0}), which is what makes it bit-identical to the
 * paged store.
 *
 * Invariants: sizes were checked for overflow at init; seq < n_seqs and
 * pos < max_ctx on every access (KVL_ASSERT, the caller's contract).
 *
 * Must not: allocate after init; write from attend().
 */
#include "kv/kv_contig.h"

#include "kv/kv_attn.h"

#include <stdlib.h>
#include <sys/mman.h>

struct kvl_kv_contig {
    int32_t n_seqs, max_ctx;
    int32_t n_layers, n_heads, n_kv_heads, head_dim;
    size_t seq_floats;   /* floats of K for one sequence: n_layers*n_kv_heads*max_ctx*head_dim */
    size_t layer_floats; /* n_kv_heads*max_ctx*head_dim */
    size_t map_bytes;    /* bytes of each of k and v */
    float *k;            /* (n_seqs, n_layers, n_kv_heads, max_ctx, head_dim) */
    float *v;            /* (n_seqs, n_layers, n_kv_heads, max_ctx, head_dim) */
};

/* Zeroed, lazily committed memory with transparent huge pages advised: the
 * same treatment as the block pool, so comparisons are like for like. */
static float *contig_map(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, bytes, MADV_HUGEPAGE);
#endif
    return p;
}

/* The one-entry block table of every contiguous region. */
static const uint32_t contig_block0[1] = {0};

kvl_status kvl_kv_contig_init(const kvl_hparams *hp, int32_t n_seqs, int32_t max_ctx,
                              kvl_kv_contig **out, kvl_error *err) {
    kvl_status st = kvl_kv_check_shape(hp, "kv contiguous", err);
    if (st != KVL_OK)
        return st;
    if (n_seqs < 1 || n_seqs > KVL_KV_MAX_SEQS)
        return kvl_errorf(err, KVL_E_INVALID, "kv contiguous: n_seqs %d not in [1, %d]",
                          (int)n_seqs, KVL_KV_MAX_SEQS);
    if (max_ctx < 1 || max_ctx > KVL_MAX_CTX)
        return kvl_errorf(err, KVL_E_INVALID, "kv contiguous: max_ctx %d not in [1, %d]",
                          (int)max_ctx, KVL_MAX_CTX);
    size_t layer_floats, seq_floats, all_floats, all_bytes;
    if (kvl_mul_overflow((size_t)hp->n_kv_heads * (size_t)hp->head_dim, (size_t)max_ctx,
                         &layer_floats) ||
        kvl_mul_overflow(layer_floats, (size_t)hp->n_layers, &seq_floats) ||
        kvl_mul_overflow(seq_floats, (size_t)n_seqs, &all_floats) ||
        kvl_mul_overflow(all_floats, sizeof(float), &all_bytes))
        return kvl_errorf(err, KVL_E_LIMIT,
                          "kv contiguous: %d seqs x %d positions overflows size_t bytes",
                          (int)n_seqs, (int)max_ctx);
    kvl_kv_contig *c = calloc(1, sizeof *c);
    if (!c)
        return kvl_errorf(err, KVL_E_NOMEM, "kv contiguous: cannot allocate the handle");
    c->map_bytes = all_bytes;
    c->k = contig_map(all_bytes);
    c->v = contig_map(all_bytes);
    if (!c->k || !c->v) {
        if (c->k)
            munmap(c->k, all_bytes);
        if (c->v)
            munmap(c->v, all_bytes);
        free(c);
        return kvl_errorf(err, KVL_E_NOMEM,
                          "kv contiguous: cannot allocate 2 x %zu bytes for %d seqs x %d "
                          "positions",
                          all_bytes, (int)n_seqs, (int)max_ctx);
    }
    c->n_seqs = n_seqs;
    c->max_ctx = max_ctx;
    c->n_layers = (int32_t)hp->n_layers;
    c->n_heads = (int32_t)hp->n_heads;
    c->n_kv_heads = (int32_t)hp->n_kv_heads;
    c->head_dim = (int32_t)hp->head_dim;
    c->layer_floats = layer_floats;
    c->seq_floats = seq_floats;
    *out = c;
    return KVL_OK;
}

void kvl_kv_contig_free(kvl_kv_contig *c) {
    if (!c)
        return;
    munmap(c->k, c->map_bytes);
    munmap(c->v, c->map_bytes);
    free(c);
}

static size_t contig_base(const kvl_kv_contig *c, int32_t layer, int32_t seq) {
    return (size_t)seq * c->seq_floats + (size_t)layer * c->layer_floats;
}

static void contig_store(void *ctx, int32_t layer, int32_t seq, int32_t pos, const float *k,
                         const float *v) {
    kvl_kv_contig *c = ctx;
    KVL_ASSERT(layer >= 0 && layer < c->n_layers);
    KVL_ASSERT(seq >= 0 && seq < c->n_seqs);
    KVL_ASSERT(pos >= 0 && pos < c->max_ctx);
    const size_t hd = (size_t)c->head_dim;
    const size_t head_stride = (size_t)c->max_ctx * hd;
    size_t off = contig_base(c, layer, seq) + (size_t)pos * hd;
    for (int32_t h = 0; h < c->n_kv_heads; h++) {
        memcpy(c->k + off + (size_t)h * head_stride, k + (size_t)h * hd, hd * sizeof(float));
        memcpy(c->v + off + (size_t)h * head_stride, v + (size_t)h * hd, hd * sizeof(float));
    }
}

static void contig_attend(void *ctx, int32_t layer, int32_t seq, int32_t n_ctx, const float *q,
                          float *out, int32_t h0, int32_t h1, float scale, float *scratch) {
    const kvl_kv_contig *c = ctx;
    KVL_ASSERT(layer >= 0 && layer < c->n_layers);
    KVL_ASSERT(seq >= 0 && seq < c->n_seqs);
    KVL_ASSERT(n_ctx <= c->max_ctx);
    KVL_ASSERT(h0 >= 0 && h0 <= h1 && h1 <= c->n_heads);
    size_t base = contig_base(c, layer, seq);
    kvl_kv_view view = {
        .k = c->k + base,
        .v = c->v + base,
        .blocks = contig_block0,
        .block_stride = 0,
        .head_stride = (int64_t)c->max_ctx * c->head_dim,
        .block_size = c->max_ctx,
        .n_heads = c->n_heads,
        .n_kv_heads = c->n_kv_heads,
        .head_dim = c->head_dim,
    };
    kvl_kv_attend_f32(&view, n_ctx, q, out, h0, h1, scale, scratch);
}

kvl_kv_iface kvl_kv_contig_iface(kvl_kv_contig *c) {
    kvl_kv_iface it = {.ctx = c, .store = contig_store, .attend = contig_attend};
    return it;
}

kvl_status kvl_kv_contig_copy(kvl_kv_contig *c, int32_t src, int32_t dst, int32_t n_pos,
                              kvl_error *err) {
    if (src < 0 || src >= c->n_seqs)
        return kvl_errorf(err, KVL_E_INVALID, "kv contiguous copy: src seq %d not in [0, %d)",
                          (int)src, (int)c->n_seqs);
    if (dst < 0 || dst >= c->n_seqs)
        return kvl_errorf(err, KVL_E_INVALID, "kv contiguous copy: dst seq %d not in [0, %d)",
                          (int)dst, (int)c->n_seqs);
    if (n_pos < 0 || n_pos > c->max_ctx)
        return kvl_errorf(err, KVL_E_INVALID, "kv contiguous copy: n_pos %d not in [0, %d]",
                          (int)n_pos, (int)c->max_ctx);
    if (src == dst || n_pos == 0)
        return KVL_OK;
    const size_t head_stride = (size_t)c->max_ctx * (size_t)c->head_dim;
    const size_t n_bytes = (size_t)n_pos * (size_t)c->head_dim * sizeof(float);
    for (int32_t l = 0; l < c->n_layers; l++) {
        size_t s = contig_base(c, l, src), d = contig_base(c, l, dst);
        for (int32_t h = 0; h < c->n_kv_heads; h++) {
            size_t o = (size_t)h * head_stride;
            memcpy(c->k + d + o, c->k + s + o, n_bytes);
            memcpy(c->v + d + o, c->v + s + o, n_bytes);
        }
    }
    return KVL_OK;
}

int32_t kvl_kv_contig_n_seqs(const kvl_kv_contig *c) { return c->n_seqs; }
int32_t kvl_kv_contig_max_ctx(const kvl_kv_contig *c) { return c->max_ctx; }

size_t kvl_kv_contig_seq_bytes(const kvl_kv_contig *c) { return 2 * c->seq_floats * sizeof(float); }

size_t kvl_kv_contig_bytes(const kvl_kv_contig *c) {
    return (size_t)c->n_seqs * kvl_kv_contig_seq_bytes(c);
}

size_t kvl_kv_contig_bytes_per_token(const kvl_kv_contig *c) {
    return 2 * (size_t)c->n_layers * (size_t)c->n_kv_heads * (size_t)c->head_dim * sizeof(float);
}
