/*
 * The paged KV cache (PagedAttention): a block pool shared by up to max_seqs
 * sequence slots, each with a block table. Implements kvl_kv_iface; its
 * attention reads K/V through the block table in place and is bit-identical
 * to kvl_kv_contig's.
 *
 * Each step, before the forward pass, the caller reserves the positions it
 * is about to write; reserve takes blocks (and copies a shared partly filled
 * block) all or nothing, so store() never allocates and never fails:
 *
 *     kvl_kv_paged_params pp = {.budget = 2ull << 30, .block_size = 16,
 *                               .max_seqs = 8, .max_ctx = hp->ctx_len};
 *     kvl_kv_paged *kv;
 *     kvl_kv_paged_init(&model->hp, &pp, &kv, &err);
 *     kvl_kv_iface it = kvl_kv_paged_iface(kv);
 *     // prompt of n tokens into seq 0 at positions 0..n-1:
 *     if (kvl_kv_paged_reserve(kv, 0, n, &err) == KVL_E_NO_KV) ... // nothing changed
 *     kvl_forward_run(f, &batch, &it, ...);
 *     kvl_kv_paged_fork(kv, 0, 1, &err);  // seq 1 shares seq 0's blocks
 *     // each decode step: reserve 1 for every sequence in the batch, run
 *     kvl_kv_paged_release(kv, 1, &err);  // sequence finished
 *
 * Sequence ids are slots in [0, max_seqs); a slot is empty at length 0.
 *
 * Quantized formats (k_fmt, v_fmt; docs/kv_formats.md). Formats whose
 * scale covers a whole block (fp8, int4 K) and int4 V (KIVI) keep the
 * newest, partly filled block of each sequence in an f32 residual, one per
 * sequence slot, allocated at init (residual_bytes in the stats, outside
 * the block budget); when store() writes the block's last slot, the block
 * is quantized once, with scales from its data, into its pool chunk:
 *
 *   seq s, layer l:  positions [0, res_start)   in pool blocks (quantized)
 *                    positions [res_start, len) in the residual (f32),
 *                    res_start a multiple of block_size, len - res_start <= block_size
 *
 * store() must therefore see the positions of one block in increasing
 * order (the forward pass does: batch order within a sequence). f32, f16,
 * bf16 and int8 are written in place, token by token, with no residual.
 * fork() copies the residual with the table; truncate() into a block that
 * was already quantized decodes its kept rows back into the residual.
 */
#ifndef KVL_KV_PAGED_H
#define KVL_KV_PAGED_H

#include "kv/block_pool.h"
#include "kv/block_table.h"
#include "kv/kv_policy.h"
#include "model/forward.h"

typedef struct kvl_kv_paged_params {
    size_t budget;              /* bytes of KV memory (--kv-mem) */
    int32_t block_size;         /* positions per block (--block-size); 0 means
                           kvl_kv_block_size(0, k_fmt, v_fmt): 32 for
                           int4 K, else 16 */
    int32_t max_seqs;           /* sequence slots */
    int32_t max_ctx;            /* most positions of one sequence */
    kvl_kv_format k_fmt, v_fmt; /* storage formats (--kv-type-k/-v); 0 = f32 */
    bool metadata_only;         /* blocks, tables and counts without KV bytes (the
                           simulator): reserve/fork/truncate/release and the
                           stats work; no residual; store(), attend() and the
                           swap copies must not be called (KVL_ASSERT) */
} kvl_kv_paged_params;

typedef struct kvl_kv_paged kvl_kv_paged;

/* One sequence's share of the cache. */
typedef struct kvl_kv_seq_stats {
    int32_t n_tokens;
    uint32_t n_blocks;                     /* blocks in its table */
    uint32_t n_blocks_own;                 /* count 1: only this sequence uses them */
    uint32_t n_blocks_shared;              /* count > 1 */
    size_t bytes, bytes_own, bytes_shared; /* the same, times block_bytes */
    int64_t n_slots_frag;                  /* n_blocks * block_size - n_tokens */
    size_t residual_bytes;                 /* this slot's f32 residual (fixed; 0 without one) */
    int32_t n_residual;                    /* positions of layer 0 now held in the residual */
    kvl_kv_policy_kind policy;             /* its eviction policy */
    int64_t n_evicted_blocks;              /* evicted since the slot was last released */
    int64_t n_evicted_tokens;              /* the same in positions */
} kvl_kv_seq_stats;

/* The whole cache. */
typedef struct kvl_kv_paged_stats {
    kvl_block_pool_stats pool;
    int32_t n_seqs_active;    /* slots with n_tokens > 0 */
    int64_t n_tokens;         /* sum of sequence lengths */
    int64_t n_blocks_logical; /* sum of table lengths: blocks used if nothing were shared */
    size_t bytes_logical;     /* n_blocks_logical * block_bytes (N independent copies) */
    size_t bytes_saved;       /* bytes_logical - pool.bytes_used */
    int64_t n_blocks_copied;  /* copy-on-write copies since init */
    size_t residual_bytes;    /* f32 residuals of all max_seqs slots (allocated at init,
                                outside the block budget); 0 when no format needs one */
    int64_t n_blocks_evicted; /* blocks that left a table by a policy since init */
} kvl_kv_paged_stats;

/* Create the pool (budget / block_bytes blocks) and max_seqs empty tables.
 * KVL_E_INVALID on a bad shape or parameter; KVL_E_NO_KV when not even one
 * sequence of max_ctx positions fits (the message has the numbers). */
kvl_status kvl_kv_paged_init(const kvl_hparams *hp, const kvl_kv_paged_params *params,
                             kvl_kv_paged **out, kvl_error *err);
/* Frees everything, releasing any sequences still held. */
void kvl_kv_paged_free(kvl_kv_paged *kv);

/* store(): pos must be reserved (pos < length of seq); attend(): n_ctx <=
 * length. Both are KVL_ASSERTed: the caller's contract, not input. */
kvl_kv_iface kvl_kv_paged_iface(kvl_kv_paged *kv);

/* Grow seq by n_new positions (the next forward call writes them), taking
 * blocks and copying a shared partly filled last block as needed. All or
 * nothing: KVL_E_NO_KV on shortage, KVL_E_LIMIT past max_ctx,
 * KVL_E_INVALID on a bad seq or n_new. */
kvl_status kvl_kv_paged_reserve(kvl_kv_paged *kv, int32_t seq, int32_t n_new, kvl_error *err);
/* The same for n sequences at once (distinct ids): either all grow or none
 * does. The block count is exact, including sequences that share one
 * partly filled block (the last of them to grow keeps the original). */
kvl_status kvl_kv_paged_reserve_batch(kvl_kv_paged *kv, int32_t n, const int32_t *seqs,
                                      const int32_t *n_new, kvl_error *err);
/* Pool blocks that reserving n_new for seq would take now (0 for a bad seq). */
uint32_t kvl_kv_paged_blocks_needed(const kvl_kv_paged *kv, int32_t seq, int32_t n_new);

/* dst (empty) shares all of src's blocks and takes its length. No block is
 * taken; a later write into a shared partly filled block copies it. */
kvl_status kvl_kv_paged_fork(kvl_kv_paged *kv, int32_t src, int32_t dst, kvl_error *err);
/* Shorten seq to n_tokens, releasing the blocks past it. */
kvl_status kvl_kv_paged_truncate(kvl_kv_paged *kv, int32_t seq, int32_t n_tokens, kvl_error *err);
/* Empty seq takes n full cached blocks as its first n * block_size
 * positions (a prefix-cache hit; kvl_block_table_attach). Formats with a
 * residual start it after them. */
kvl_status kvl_kv_paged_attach(kvl_kv_paged *kv, int32_t seq, const uint32_t *ids, uint32_t n,
                               kvl_error *err);
/* Release all of seq's blocks (the slot becomes empty). */
kvl_status kvl_kv_paged_release(kvl_kv_paged *kv, int32_t seq, kvl_error *err);

/*
 * Eviction (docs/eviction.md). set_policy gives slot seq a policy (checked
 * by kvl_kv_policy_check); it stays until changed, release
 * does not reset it. make_room evicts the policy's victims before seq grows
 * by n_new (call it before reserve): their table entries go, blocks held
 * only by seq return to the free queue at once, shared ones only lose
 * seq's reference and are never written; seq's length drops by the
 * evicted positions (*n_evicted, may be NULL), so the next position to
 * write is kvl_kv_paged_len. KVL_E_LIMIT (nothing changed) when n_new
 * cannot fit the budget even after evicting every window block.
 *
 * h2o and snapkv choose their victims by the attention mass of each
 * logical block (kv_policy.h), which attend() accumulates for seq while
 * its policy asks for it (kvl_kv_policy_accumulates; never for full,
 * window or sinks): per sequence slot, summed over layers and heads,
 * moved with the table on eviction, copied by fork, cleared by truncate
 * and release. make_room(seq, 0) brings a sequence that was reserved
 * past its budget (a prompt prefilled whole) back within it: snapkv's
 * compression after the prefill, and the same cut for the others.
 */
kvl_status kvl_kv_paged_set_policy(kvl_kv_paged *kv, int32_t seq, const kvl_kv_policy *p,
                                   kvl_error *err);
/* The model's rope_freqs divisors ((rope_dim / 2) f32, maybe unaligned;
 * NULL: none), which the forward pass applies and a shifted query must
 * too: call once after init for a model that carries them. */
void kvl_kv_paged_rope_divide(kvl_kv_paged *kv, const void *div);
kvl_status kvl_kv_paged_make_room(kvl_kv_paged *kv, int32_t seq, int32_t n_new, int32_t *n_evicted,
                                  kvl_error *err);

/* seq's attention mass per logical block (fixed point, kv_attn.h), read
 * only; NULL for a bad seq or before any set_policy of h2o / snapkv. */
const uint64_t *kvl_kv_paged_mass(const kvl_kv_paged *kv, int32_t seq);
/* The number of queries whose attention added to each block's mass
 * (h2o's mean score divides by it), as kvl_kv_paged_mass. */
const uint32_t *kvl_kv_paged_mass_count(const kvl_kv_paged *kv, int32_t seq);
/* Zero seq's attention mass (nothing for a bad seq or without mass): the
 * engine's snapkv starts its observation window with it when a prompt is
 * prefilled in chunks (docs/eviction.md, "In the engine"). */
void kvl_kv_paged_mass_reset(kvl_kv_paged *kv, int32_t seq);

int32_t kvl_kv_paged_len(const kvl_kv_paged *kv, int32_t seq); /* -1 for a bad seq */
int32_t kvl_kv_paged_max_seqs(const kvl_kv_paged *kv);
int32_t kvl_kv_paged_max_ctx(const kvl_kv_paged *kv);
/* The block table of seq (read only; NULL for a bad seq). */
const kvl_block_table *kvl_kv_paged_table(const kvl_kv_paged *kv, int32_t seq);
kvl_block_pool *kvl_kv_paged_pool(kvl_kv_paged *kv);
const kvl_block_layout *kvl_kv_paged_layout(const kvl_kv_paged *kv);

/*
 * Swap (the engine's second tier). A sequence's KV leaves the pool as its
 * logical blocks, each saved as block_bytes bytes (every chunk of the
 * block, layer by layer, K heads then V heads), plus its residual state
 * (residual_state_bytes: the f32 residuals and their start positions; 0
 * when no format keeps one). To come back, the slot is reserved again to
 * the same length (new block ids), each block is loaded, then the
 * residual. Neither call checks its arguments beyond KVL_ASSERTs: the
 * engine owns both sides.
 */
size_t kvl_kv_paged_residual_state_bytes(const kvl_kv_paged *kv);
void kvl_kv_paged_block_save(const kvl_kv_paged *kv, int32_t seq, uint32_t j, uint8_t *dst);
/* Block j of seq must be held by seq alone (count 1). */
void kvl_kv_paged_block_load(kvl_kv_paged *kv, int32_t seq, uint32_t j, const uint8_t *src);
/* The same copies by pool block id (the prefix cache's second tier:
 * kv/kv_tier.h). load_id's block must be held by the caller alone. */
void kvl_kv_paged_block_save_id(const kvl_kv_paged *kv, uint32_t id, uint8_t *dst);
void kvl_kv_paged_block_load_id(kvl_kv_paged *kv, uint32_t id, const uint8_t *src);
void kvl_kv_paged_residual_save(const kvl_kv_paged *kv, int32_t seq, uint8_t *dst);
void kvl_kv_paged_residual_load(kvl_kv_paged *kv, int32_t seq, const uint8_t *src);

kvl_status kvl_kv_paged_seq_stats_get(const kvl_kv_paged *kv, int32_t seq, kvl_kv_seq_stats *out,
                                      kvl_error *err);
void kvl_kv_paged_stats_get(const kvl_kv_paged *kv, kvl_kv_paged_stats *out);

#endif
