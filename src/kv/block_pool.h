/*
 * The KV block pool: the whole KV budget, allocated once, cut into blocks of
 * block_size token positions (all layers, all KV heads, K and V), with
 * reference counts and a free queue in LRU order.
 *
 *     kvl_block_layout lay;
 *     kvl_block_layout_init(&model->hp, 16, &lay, &err);
 *     kvl_block_pool *p;
 *     kvl_block_pool_init(&lay, kv_mem_bytes, &p, &err);
 *     uint32_t ids[4];
 *     if (kvl_block_pool_alloc(p, 4, ids, &err) == KVL_E_NO_KV) ... // nothing changed
 *     kvl_block_pool_decref(p, ids, 4);
 *     kvl_block_pool_free(p);
 *
 * Free-queue order (tested exactly):
 *   - at init the queue is 0, 1, ..., n_blocks-1 (head to tail);
 *   - alloc takes blocks from the head, in queue order;
 *   - a block whose count drops to 0 goes to the tail, in the order the ids
 *     were passed to decref. The least recently freed block is reused first.
 *   - incref of a free block (a future prefix-cache hit) takes it out of the
 *     queue wherever it is, in O(1).
 */
#ifndef KVL_BLOCK_POOL_H
#define KVL_BLOCK_POOL_H

#include "core/core.h"
#include "model/model.h"
#include "plan/planner.h"

/*
 * Where a block's bytes live. A block is one index into 2 * n_layers *
 * n_kv_heads arrays of chunks; each array holds one (layer, K or V, KV head)
 * for all n_blocks blocks, and one chunk is block_size rows of head_dim:
 *
 *   pool data (n_blocks * block_bytes bytes, one mapping; N = n_blocks)
 *   +-- layer 0 ------------------------------------------------------------+
 *   | K head 0   | [blk 0][blk 1][blk 2] ... [blk N-1]   chunks of k_head_bytes
 *   | K head 1   | [blk 0][blk 1][blk 2] ... [blk N-1]
 *   | ...        |
 *   | K head H-1 | ...
 *   | V head 0   | [blk 0][blk 1][blk 2] ... [blk N-1]   chunks of v_head_bytes
 *   | ...        |
 *   +-- layer 1 ------------------------------------------------------------+
 *   | ...
 *
 *   one chunk, f32: (block_size, head_dim)
 *   | slot 0: head_dim floats | slot 1 | ... | slot block_size-1 |
 *
 *   one chunk, quantized (src/kernels/kv_kern.h draws every format):
 *   | slot 0 codes | slot 1 codes | ... | slot bs-1 codes | that chunk's scales |
 *
 * Slot i of logical block j holds position j * block_size + i. Block b's
 * chunk of (layer l, K, head h) starts at
 *     l * N * layer_bytes + h * N * k_head_bytes + b * k_head_bytes
 * and V adds n_kv_heads * N * k_head_bytes before its own h and b terms
 * (kvl_block_pool_region computes this).
 *
 * Why this order: attention for one (layer, KV head) reads, per block, one
 * contiguous chunk of keys and one of values, with no gather, and the chunks
 * of consecutive blocks are adjacent, so a sequence whose blocks were taken
 * in order reads exactly like a contiguous cache. The obvious alternative,
 * each block one contiguous range holding all layers, puts the chunks of
 * one head block_bytes apart: a large power of two, so every chunk of a
 * sequence lands in the same few cache sets and the re-reads of a GQA group
 * miss. The price is that copy-on-write copies 2 * n_layers * n_kv_heads
 * chunks instead of one range (once per fork, not per token). Every layer
 * of a position shares one block id, so the block table is per sequence.
 * A KV format only changes the size of a chunk (data, then that head's
 * scales; kernels/kv_kern.h), so k_head_bytes and v_head_bytes are the only
 * per-format numbers.
 */
typedef struct kvl_block_layout {
    int32_t block_size; /* token positions per block */
    int32_t n_layers, n_kv_heads, head_dim;
    size_t k_head_bytes;        /* one chunk of K: (block_size, head_dim) */
    size_t v_head_bytes;        /* one chunk of V: (block_size, head_dim) */
    size_t layer_bytes;         /* one block's bytes in one layer: n_kv_heads * (k + v chunk) */
    size_t block_bytes;         /* n_layers * layer_bytes (the planner's kvl_plan_kv_block_bytes) */
    size_t bytes_per_token;     /* block_bytes / block_size rounded up (exact for
                               f32/f16/bf16: 2 * n_layers * n_kv_heads * head_dim * 4
                               for f32); the planner's kvl_plan_kv_token_bytes
                               gives the fraction */
    kvl_kv_format k_fmt, v_fmt; /* storage formats of K and V */
} kvl_block_layout;

/* Fill the layout for this model shape and block size (1..KVL_KV_MAX_BLOCK_SIZE);
 * f32 K and V. KVL_E_INVALID on a bad shape or block size, KVL_E_LIMIT on
 * byte-size overflow. */
kvl_status kvl_block_layout_init(const kvl_hparams *hp, int32_t block_size, kvl_block_layout *out,
                                 kvl_error *err);
/* The same with K stored as k_fmt and V as v_fmt (KVL_E_INVALID, naming
 * the field, on a format id out of range). */
kvl_status kvl_block_layout_init_fmt(const kvl_hparams *hp, int32_t block_size, kvl_kv_format k_fmt,
                                     kvl_kv_format v_fmt, kvl_block_layout *out, kvl_error *err);

/* What a KV budget holds for a model (the start-up capacity report). */
typedef struct kvl_kv_capacity {
    size_t bytes_per_token; /* K+V, all layers */
    size_t block_bytes;
    int32_t block_size;
    uint32_t n_blocks;      /* budget / block_bytes */
    size_t bytes_used;      /* n_blocks * block_bytes (<= budget) */
    int64_t token_capacity; /* n_blocks * block_size */
    int64_t ctx_len;        /* the context the next two refer to */
    int64_t blocks_per_seq; /* ceil(ctx_len / block_size) */
    int64_t full_ctx_seqs;  /* n_blocks / blocks_per_seq */
} kvl_kv_capacity;

/*
 * Compute the capacity of budget bytes for this model shape, block size and
 * context length (the model's ctx_len or --ctx). Fails with KVL_E_NO_KV, the
 * numbers in the message and *out still filled, when not even one sequence
 * of ctx_len positions fits; KVL_E_INVALID / KVL_E_LIMIT on bad arguments.
 */
kvl_status kvl_kv_capacity_compute(const kvl_hparams *hp, int32_t block_size, size_t budget,
                                   int64_t ctx_len, kvl_kv_capacity *out, kvl_error *err);
/* The same for K stored as k_fmt and V as v_fmt. */
kvl_status kvl_kv_capacity_compute_fmt(const kvl_hparams *hp, int32_t block_size,
                                       kvl_kv_format k_fmt, kvl_kv_format v_fmt, size_t budget,
                                       int64_t ctx_len, kvl_kv_capacity *out, kvl_error *err);

typedef struct kvl_block_pool kvl_block_pool;

/* Pool accounting at one moment: total = free + used; shared counts used
 * blocks with more than one reference. Slots are token positions; filled
 * slots are those reserved for a stored token; fragmentation is the
 * unfilled slots of used blocks. */
typedef struct kvl_block_pool_stats {
    uint32_t n_blocks_total, n_blocks_free, n_blocks_used, n_blocks_shared;
    size_t block_bytes;
    size_t bytes_total, bytes_free, bytes_used, bytes_shared;
    int64_t n_slots_used;   /* n_blocks_used * block_size */
    int64_t n_slots_filled; /* sum of fill over used blocks */
    int64_t n_slots_frag;   /* n_slots_used - n_slots_filled (internal fragmentation) */
    double occupancy;       /* n_blocks_used / n_blocks_total */
    double utilization;     /* n_slots_filled / n_slots_used (1 when none used) */
} kvl_block_pool_stats;

/* Allocate budget / layout->block_bytes blocks in one mapping. KVL_E_NO_KV
 * when the budget holds no block (the message gives both sizes), KVL_E_LIMIT
 * over UINT32_MAX - 1 blocks, KVL_E_NOMEM when memory is refused. */
kvl_status kvl_block_pool_init(const kvl_block_layout *layout, size_t budget, kvl_block_pool **out,
                               kvl_error *err);
/* The same ledger with no KV bytes behind it (metadata-only mode, for the
 * simulator: an 80 GB device's pool costs its counts and links, 16 bytes a
 * block). Allocation, reference counts, fill, the free queue and the stats
 * behave exactly as in a backed pool of the same budget; copy() does
 * nothing; region() and chunk() must not be called (KVL_ASSERT). */
kvl_status kvl_block_pool_init_meta(const kvl_block_layout *layout, size_t budget,
                                    kvl_block_pool **out, kvl_error *err);
bool kvl_block_pool_is_meta(const kvl_block_pool *p);
void kvl_block_pool_free(kvl_block_pool *p);

const kvl_block_layout *kvl_block_pool_layout(const kvl_block_pool *p);
uint32_t kvl_block_pool_n_blocks(const kvl_block_pool *p);
uint32_t kvl_block_pool_n_free(const kvl_block_pool *p);

/* Take n blocks from the head of the free queue, each with count 1 and fill
 * 0, ids written to ids[0..n) in queue order. All or nothing: on shortage
 * KVL_E_NO_KV ("need n, free f of t") and the pool is unchanged. */
kvl_status kvl_block_pool_alloc(kvl_block_pool *p, uint32_t n, uint32_t *ids, kvl_error *err);

/* Add a reference. A free block (count 0) leaves the free queue. */
void kvl_block_pool_incref(kvl_block_pool *p, uint32_t id);
/* Called by alloc for every block it takes from the free queue, before it
 * is handed out (the prefix cache forgets the block's old contents). */
typedef void (*kvl_block_evict_fn)(void *ctx, uint32_t id);
void kvl_block_pool_set_evict_hook(kvl_block_pool *p, kvl_block_evict_fn fn, void *ctx);
/* Drop one reference from each of ids[0..n), in order; blocks reaching 0 go
 * to the free-queue tail in that order and their fill is cleared. A count
 * already 0 is an internal bug (KVL_ASSERT). */
void kvl_block_pool_decref(kvl_block_pool *p, const uint32_t *ids, uint32_t n);
uint32_t kvl_block_pool_refcount(const kvl_block_pool *p, uint32_t id);

/* Token slots of a used block that hold (or are reserved for) tokens. */
void kvl_block_pool_set_fill(kvl_block_pool *p, uint32_t id, uint32_t fill);
uint32_t kvl_block_pool_fill(const kvl_block_pool *p, uint32_t id);

/* Copy every chunk of block src over block dst (copy-on-write). */
void kvl_block_pool_copy(kvl_block_pool *p, uint32_t dst, uint32_t src);

/* The chunks of one layer's K (is_v false) or V: the chunk of KV head h in
 * block b starts at base + h * head_stride + b * chunk_bytes. */
typedef struct kvl_block_region {
    uint8_t *base;
    size_t head_stride; /* n_blocks * chunk_bytes */
    size_t chunk_bytes; /* k_head_bytes or v_head_bytes */
} kvl_block_region;
kvl_block_region kvl_block_pool_region(const kvl_block_pool *p, int32_t layer, bool is_v);
/* Start of chunk (layer, K or V, head) of block id. */
uint8_t *kvl_block_pool_chunk(const kvl_block_pool *p, uint32_t id, int32_t layer, bool is_v,
                              int32_t head);

void kvl_block_pool_stats_get(const kvl_block_pool *p, kvl_block_pool_stats *s);

/* Write up to cap ids of the free queue, head first; returns the queue
 * length. For tests and debugging. */
uint32_t kvl_block_pool_free_order(const kvl_block_pool *p, uint32_t *ids, uint32_t cap);

/* Verify every internal invariant (queue links, counts, counters); KVL_OK or
 * KVL_E_INVALID with the first broken one. O(n_blocks); for tests. */
kvl_status kvl_block_pool_check(const kvl_block_pool *p, kvl_error *err);

#endif
