/*
 * block_pool: fixed-size KV blocks in one mapping, reference counts, and the
 * free queue (see block_pool.h for the block layout and the queue order).
 *
 * The free queue is an intrusive doubly linked circular list threaded
 * through two index arrays, with one sentinel node whose id is n_blocks:
 *
 *     next[S] = head                       prev[S] = tail
 *
 *        +--> S --> 4 --> 7 --> 2 --+        (free queue 4, 7, 2)
 *        +--------------------------+
 *
 * so taking the head, appending at the tail and unlinking a block from the
 * middle (incref of a free block) are O(1) with no branch for an empty list.
 *
 * Invariants (kvl_block_pool_check verifies them all):
 *   - a block is in the queue iff its count is 0; n_free is the queue length;
 *   - n_shared = number of blocks with count > 1;
 *   - fill[id] <= block_size, fill[id] = 0 for free blocks, and
 *     n_filled = sum of fill over all blocks.
 *
 * Must not: allocate after init (alloc/decref only move links); change
 * anything on a failed alloc; know anything about sequences.
 */
#include "kv/block_pool.h"

#include "kv/kv_attn.h"
#include "kv/kv_codec.h"

#include <stdlib.h>
#include <sys/mman.h>

struct kvl_block_pool {
    kvl_block_layout lay;
    uint32_t n_blocks;
    uint32_t n_free;
    uint32_t n_shared;
    int64_t n_filled;
    uint32_t *ref;  /* (n_blocks) reference counts */
    uint32_t *fill; /* (n_blocks) filled slots */
    uint32_t *next; /* (n_blocks + 1) free-queue links; [n_blocks] is the sentinel */
    uint32_t *prev; /* (n_blocks + 1) */
    uint8_t *data;  /* n_blocks * block_bytes, arranged as in block_pool.h; NULL
                       in metadata-only mode */
    size_t data_bytes;
    kvl_block_evict_fn evict; /* may be NULL */
    void *evict_ctx;
    bool meta; /* metadata only: counts and queue, no KV bytes (the simulator) */
};

void kvl_block_pool_set_evict_hook(kvl_block_pool *p, kvl_block_evict_fn fn, void *ctx) {
    p->evict = fn;
    p->evict_ctx = ctx;
}

kvl_status kvl_block_layout_init(const kvl_hparams *hp, int32_t block_size, kvl_block_layout *out,
                                 kvl_error *err) {
    return kvl_block_layout_init_fmt(hp, block_size, KVL_KV_FMT_F32, KVL_KV_FMT_F32, out, err);
}

kvl_status kvl_block_layout_init_fmt(const kvl_hparams *hp, int32_t block_size, kvl_kv_format k_fmt,
                                     kvl_kv_format v_fmt, kvl_block_layout *out, kvl_error *err) {
    kvl_status st = kvl_kv_check_shape(hp, "kv layout", err);
    if (st != KVL_OK)
        return st;
    if (block_size < 1 || block_size > KVL_KV_MAX_BLOCK_SIZE)
        return kvl_errorf(err, KVL_E_INVALID, "kv layout: block_size %d not in [1, %d]",
                          (int)block_size, KVL_KV_MAX_BLOCK_SIZE);
    if (!kvl_kv_format_get(k_fmt))
        return kvl_errorf(err, KVL_E_INVALID, "kv layout: k_fmt %d not in [0, %d) (%s)", (int)k_fmt,
                          KVL_KV_FMT_COUNT, kvl_kv_format_names());
    if (!kvl_kv_format_get(v_fmt))
        return kvl_errorf(err, KVL_E_INVALID, "kv layout: v_fmt %d not in [0, %d) (%s)", (int)v_fmt,
                          KVL_KV_FMT_COUNT, kvl_kv_format_names());
    /* The shape limits (head_dim <= 1024, block_size <= 4096) bound each
     * chunk under 2^24 bytes; the products below are checked anyway. */
    const int32_t hd = (int32_t)hp->head_dim;
    /* The sizes come from the planner, the one definition of bytes per
     * format, so the start-up report, `kvllm plan` and the pool agree by
     * construction; the codecs lay out exactly that many bytes. */
    size_t kh, vh;
    if ((st = kvl_plan_kv_head_block_bytes(k_fmt, KVL_KV_ROLE_K, hd, block_size, &kh, err)) ||
        (st = kvl_plan_kv_head_block_bytes(v_fmt, KVL_KV_ROLE_V, hd, block_size, &vh, err)))
        return st;
    KVL_ASSERT(kh == kvl_kvq_chunk_bytes(kvl_kv_codec_for(k_fmt, KVL_KV_ROLE_K), block_size, hd));
    KVL_ASSERT(vh == kvl_kvq_chunk_bytes(kvl_kv_codec_for(v_fmt, KVL_KV_ROLE_V), block_size, hd));
    size_t layer_bytes, block_bytes;
    if (kvl_mul_overflow(kh + vh, (size_t)hp->n_kv_heads, &layer_bytes) ||
        kvl_mul_overflow(layer_bytes, (size_t)hp->n_layers, &block_bytes))
        return kvl_errorf(err, KVL_E_LIMIT, "kv layout: block of %d positions overflows size_t",
                          (int)block_size);
    kvl_block_layout l = {0};
    l.block_size = block_size;
    l.n_layers = (int32_t)hp->n_layers;
    l.n_kv_heads = (int32_t)hp->n_kv_heads;
    l.head_dim = hd;
    l.k_head_bytes = kh;
    l.v_head_bytes = vh;
    l.layer_bytes = layer_bytes;
    l.block_bytes = block_bytes;
    l.bytes_per_token = (block_bytes + (size_t)block_size - 1) / (size_t)block_size;
    l.k_fmt = k_fmt;
    l.v_fmt = v_fmt;
    *out = l;
    return KVL_OK;
}

kvl_status kvl_kv_capacity_compute(const kvl_hparams *hp, int32_t block_size, size_t budget,
                                   int64_t ctx_len, kvl_kv_capacity *out, kvl_error *err) {
    return kvl_kv_capacity_compute_fmt(hp, block_size, KVL_KV_FMT_F32, KVL_KV_FMT_F32, budget,
                                       ctx_len, out, err);
}

kvl_status kvl_kv_capacity_compute_fmt(const kvl_hparams *hp, int32_t block_size,
                                       kvl_kv_format k_fmt, kvl_kv_format v_fmt, size_t budget,
                                       int64_t ctx_len, kvl_kv_capacity *out, kvl_error *err) {
    kvl_block_layout lay;
    kvl_status st = kvl_block_layout_init_fmt(hp, block_size, k_fmt, v_fmt, &lay, err);
    if (st != KVL_OK)
        return st;
    if (ctx_len < 1 || ctx_len > KVL_MAX_CTX)
        return kvl_errorf(err, KVL_E_INVALID, "kv capacity: ctx_len %lld not in [1, %d]",
                          (long long)ctx_len, KVL_MAX_CTX);
    size_t nb = budget / lay.block_bytes;
    if (nb > UINT32_MAX - 1)
        nb = UINT32_MAX - 1;
    kvl_kv_capacity c = {0};
    c.bytes_per_token = lay.bytes_per_token;
    c.block_bytes = lay.block_bytes;
    c.block_size = block_size;
    c.n_blocks = (uint32_t)nb;
    c.bytes_used = nb * lay.block_bytes;
    c.token_capacity = (int64_t)nb * block_size;
    c.ctx_len = ctx_len;
    c.blocks_per_seq = (ctx_len + block_size - 1) / block_size;
    c.full_ctx_seqs = (int64_t)nb / c.blocks_per_seq;
    *out = c;
    if (c.full_ctx_seqs < 1)
        return kvl_errorf(err, KVL_E_NO_KV,
                          "kv capacity: kv-mem %zu bytes holds %u blocks of %d positions "
                          "(%zu bytes each, %zu bytes per token) = %lld tokens, but one "
                          "sequence of ctx %lld needs %lld blocks (%zu bytes)",
                          budget, c.n_blocks, (int)block_size, c.block_bytes, c.bytes_per_token,
                          (long long)c.token_capacity, (long long)ctx_len,
                          (long long)c.blocks_per_seq, (size_t)c.blocks_per_seq * c.block_bytes);
    return KVL_OK;
}

/* ---- free queue ---- */

static void queue_push_tail(kvl_block_pool *p, uint32_t id) {
    uint32_t s = p->n_blocks, t = p->prev[s];
    p->next[t] = id;
    p->prev[id] = t;
    p->next[id] = s;
    p->prev[s] = id;
}

static void queue_unlink(kvl_block_pool *p, uint32_t id) {
    uint32_t a = p->prev[id], b = p->next[id];
    p->next[a] = b;
    p->prev[b] = a;
    p->next[id] = p->prev[id] = id; /* self-linked while out of the queue */
}

static kvl_status pool_init(const kvl_block_layout *layout, size_t budget, bool meta,
                            kvl_block_pool **out, kvl_error *err) {
    if (!layout || layout->block_bytes == 0 || layout->block_size < 1)
        return kvl_errorf(err, KVL_E_INVALID, "kv pool: layout is missing or empty");
    size_t nb = budget / layout->block_bytes;
    if (nb < 1)
        return kvl_errorf(err, KVL_E_NO_KV,
                          "kv pool: kv-mem %zu bytes < one block of %d positions (%zu bytes)",
                          budget, (int)layout->block_size, layout->block_bytes);
    if (nb > UINT32_MAX - 1)
        return kvl_errorf(err, KVL_E_LIMIT, "kv pool: %zu blocks > limit %u", nb,
                          (unsigned)(UINT32_MAX - 1));
    kvl_block_pool *p = calloc(1, sizeof *p);
    if (!p)
        return kvl_errorf(err, KVL_E_NOMEM, "kv pool: cannot allocate the handle");
    p->lay = *layout;
    p->meta = meta;
    p->n_blocks = (uint32_t)nb;
    p->data_bytes = nb * layout->block_bytes; /* <= budget, no overflow */
    p->ref = calloc(nb, sizeof(uint32_t));
    p->fill = calloc(nb, sizeof(uint32_t));
    p->next = calloc(nb + 1, sizeof(uint32_t));
    p->prev = calloc(nb + 1, sizeof(uint32_t));
    if (!meta) {
        void *d =
            mmap(NULL, p->data_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p->data = d == MAP_FAILED ? NULL : d;
#ifdef MADV_HUGEPAGE
        /* Attention jumps from chunk to chunk; 2 MiB pages keep those jumps
         * out of the TLB's way. Advice only: failure changes nothing. */
        if (p->data)
            (void)madvise(p->data, p->data_bytes, MADV_HUGEPAGE);
#endif
    }
    if (!p->ref || !p->fill || !p->next || !p->prev || (!meta && !p->data)) {
        kvl_block_pool_free(p);
        return kvl_errorf(err, KVL_E_NOMEM, "kv pool: cannot map %zu bytes for %zu blocks",
                          nb * layout->block_bytes, nb);
    }
    uint32_t s = p->n_blocks;
    p->next[s] = p->prev[s] = s;
    for (uint32_t i = 0; i < p->n_blocks; i++)
        queue_push_tail(p, i);
    p->n_free = p->n_blocks;
    *out = p;
    return KVL_OK;
}

kvl_status kvl_block_pool_init(const kvl_block_layout *layout, size_t budget, kvl_block_pool **out,
                               kvl_error *err) {
    return pool_init(layout, budget, false, out, err);
}

kvl_status kvl_block_pool_init_meta(const kvl_block_layout *layout, size_t budget,
                                    kvl_block_pool **out, kvl_error *err) {
    return pool_init(layout, budget, true, out, err);
}

bool kvl_block_pool_is_meta(const kvl_block_pool *p) { return p->meta; }

void kvl_block_pool_free(kvl_block_pool *p) {
    if (!p)
        return;
    if (p->data)
        munmap(p->data, p->data_bytes);
    free(p->ref);
    free(p->fill);
    free(p->next);
    free(p->prev);
    free(p);
}

const kvl_block_layout *kvl_block_pool_layout(const kvl_block_pool *p) { return &p->lay; }
uint32_t kvl_block_pool_n_blocks(const kvl_block_pool *p) { return p->n_blocks; }
uint32_t kvl_block_pool_n_free(const kvl_block_pool *p) { return p->n_free; }

kvl_status kvl_block_pool_alloc(kvl_block_pool *p, uint32_t n, uint32_t *ids, kvl_error *err) {
    if (n > p->n_free)
        return kvl_errorf(err, KVL_E_NO_KV, "kv pool: need %u blocks, free %u of %u", n, p->n_free,
                          p->n_blocks);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = p->next[p->n_blocks];
        KVL_ASSERT(id < p->n_blocks && p->ref[id] == 0);
        queue_unlink(p, id);
        p->ref[id] = 1;
        ids[i] = id;
        if (p->evict)
            p->evict(p->evict_ctx, id);
    }
    p->n_free -= n;
    return KVL_OK;
}

void kvl_block_pool_incref(kvl_block_pool *p, uint32_t id) {
    KVL_ASSERT(id < p->n_blocks);
    uint32_t r = p->ref[id];
    KVL_ASSERT(r < UINT32_MAX);
    if (r == 0) {
        queue_unlink(p, id);
        p->n_free--;
    } else if (r == 1) {
        p->n_shared++;
    }
    p->ref[id] = r + 1;
}

void kvl_block_pool_decref(kvl_block_pool *p, const uint32_t *ids, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = ids[i];
        KVL_ASSERT(id < p->n_blocks && p->ref[id] > 0);
        uint32_t r = --p->ref[id];
        if (r == 1) {
            p->n_shared--;
        } else if (r == 0) {
            p->n_filled -= p->fill[id];
            p->fill[id] = 0;
            queue_push_tail(p, id);
            p->n_free++;
        }
    }
}

uint32_t kvl_block_pool_refcount(const kvl_block_pool *p, uint32_t id) {
    KVL_ASSERT(id < p->n_blocks);
    return p->ref[id];
}

void kvl_block_pool_set_fill(kvl_block_pool *p, uint32_t id, uint32_t fill) {
    KVL_ASSERT(id < p->n_blocks && p->ref[id] > 0);
    KVL_ASSERT(fill <= (uint32_t)p->lay.block_size);
    p->n_filled += (int64_t)fill - (int64_t)p->fill[id];
    p->fill[id] = fill;
}

uint32_t kvl_block_pool_fill(const kvl_block_pool *p, uint32_t id) {
    KVL_ASSERT(id < p->n_blocks);
    return p->fill[id];
}

kvl_block_region kvl_block_pool_region(const kvl_block_pool *p, int32_t layer, bool is_v) {
    KVL_ASSERT(layer >= 0 && layer < p->lay.n_layers);
    KVL_ASSERT(!p->meta); /* no bytes to point at */
    const size_t n = p->n_blocks;
    kvl_block_region r;
    /* all offsets are below n_blocks * block_bytes <= budget: no overflow */
    r.base = p->data + (size_t)layer * n * p->lay.layer_bytes;
    if (is_v)
        r.base += (size_t)p->lay.n_kv_heads * n * p->lay.k_head_bytes;
    r.chunk_bytes = is_v ? p->lay.v_head_bytes : p->lay.k_head_bytes;
    r.head_stride = n * r.chunk_bytes;
    return r;
}

uint8_t *kvl_block_pool_chunk(const kvl_block_pool *p, uint32_t id, int32_t layer, bool is_v,
                              int32_t head) {
    KVL_ASSERT(id < p->n_blocks && head >= 0 && head < p->lay.n_kv_heads);
    kvl_block_region r = kvl_block_pool_region(p, layer, is_v);
    return r.base + (size_t)head * r.head_stride + (size_t)id * r.chunk_bytes;
}

void kvl_block_pool_copy(kvl_block_pool *p, uint32_t dst, uint32_t src) {
    KVL_ASSERT(dst < p->n_blocks && src < p->n_blocks && dst != src);
    if (p->meta) /* copy-on-write of metadata: the new block is taken, no bytes move */
        return;
    for (int32_t l = 0; l < p->lay.n_layers; l++)
        for (int kv = 0; kv < 2; kv++) {
            kvl_block_region r = kvl_block_pool_region(p, l, kv == 1);
            for (int32_t h = 0; h < p->lay.n_kv_heads; h++) {
                uint8_t *head = r.base + (size_t)h * r.head_stride;
                memcpy(head + (size_t)dst * r.chunk_bytes, head + (size_t)src * r.chunk_bytes,
                       r.chunk_bytes);
            }
        }
}

void kvl_block_pool_stats_get(const kvl_block_pool *p, kvl_block_pool_stats *s) {
    size_t bb = p->lay.block_bytes;
    kvl_block_pool_stats r = {0};
    r.n_blocks_total = p->n_blocks;
    r.n_blocks_free = p->n_free;
    r.n_blocks_used = p->n_blocks - p->n_free;
    r.n_blocks_shared = p->n_shared;
    r.block_bytes = bb;
    r.bytes_total = (size_t)r.n_blocks_total * bb;
    r.bytes_free = (size_t)r.n_blocks_free * bb;
    r.bytes_used = (size_t)r.n_blocks_used * bb;
    r.bytes_shared = (size_t)r.n_blocks_shared * bb;
    r.n_slots_used = (int64_t)r.n_blocks_used * p->lay.block_size;
    r.n_slots_filled = p->n_filled;
    r.n_slots_frag = r.n_slots_used - r.n_slots_filled;
    r.occupancy = (double)r.n_blocks_used / (double)r.n_blocks_total;
    r.utilization = r.n_slots_used ? (double)r.n_slots_filled / (double)r.n_slots_used : 1.0;
    *s = r;
}

uint32_t kvl_block_pool_free_order(const kvl_block_pool *p, uint32_t *ids, uint32_t cap) {
    uint32_t n = 0, s = p->n_blocks;
    for (uint32_t id = p->next[s]; id != s && n <= p->n_blocks; id = p->next[id]) {
        if (n < cap)
            ids[n] = id;
        n++;
    }
    return n;
}

kvl_status kvl_block_pool_check(const kvl_block_pool *p, kvl_error *err) {
    uint32_t s = p->n_blocks, n = 0;
    for (uint32_t id = p->next[s]; id != s; id = p->next[id]) {
        if (id > s)
            return kvl_errorf(err, KVL_E_INVALID, "kv pool: queue link %u > sentinel %u", id, s);
        if (p->next[p->prev[id]] != id || p->prev[p->next[id]] != id)
            return kvl_errorf(err, KVL_E_INVALID, "kv pool: block %u: broken queue links", id);
        if (p->ref[id] != 0)
            return kvl_errorf(err, KVL_E_INVALID, "kv pool: block %u in free queue with count %u",
                              id, p->ref[id]);
        if (++n > p->n_blocks)
            return kvl_errorf(err, KVL_E_INVALID, "kv pool: free queue has a cycle");
    }
    if (n != p->n_free)
        return kvl_errorf(err, KVL_E_INVALID, "kv pool: queue length %u != n_free %u", n,
                          p->n_free);
    uint32_t n_zero = 0, n_shared = 0;
    int64_t filled = 0;
    for (uint32_t id = 0; id < p->n_blocks; id++) {
        n_zero += p->ref[id] == 0;
        n_shared += p->ref[id] > 1;
        if (p->fill[id] > (uint32_t)p->lay.block_size || (p->ref[id] == 0 && p->fill[id] != 0))
            return kvl_errorf(err, KVL_E_INVALID, "kv pool: block %u: fill %u with count %u", id,
                              p->fill[id], p->ref[id]);
        filled += p->fill[id];
    }
    if (n_zero != p->n_free)
        return kvl_errorf(err, KVL_E_INVALID, "kv pool: %u blocks at count 0 != n_free %u", n_zero,
                          p->n_free);
    if (n_shared != p->n_shared)
        return kvl_errorf(err, KVL_E_INVALID, "kv pool: %u shared blocks != n_shared %u", n_shared,
                          p->n_shared);
    if (filled != p->n_filled)
        return kvl_errorf(err, KVL_E_INVALID, "kv pool: fill sum %lld != n_filled %lld",
                          (long long)filled, (long long)p->n_filled);
    return KVL_OK;
}
