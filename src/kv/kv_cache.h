/*
 * The KV cache as the rest of kvllm sees it: one object over either the
 * paged store (blocks, tables, copy-on-write) or the contiguous baseline
 * (one max_ctx region per sequence slot), so that every comparison runs
 * side by side in one binary (--kv-layout). The engine reserves positions
 * before each forward pass; store() never allocates; a shortage is the
 * recoverable KVL_E_NO_KV with nothing changed.
 *
 *     kvl_kv_cache_params p = kvl_kv_cache_defaults();
 *     p.budget = 1ull << 30; p.max_seqs = 4; p.max_ctx = 2048;
 *     kvl_kv_cache *c;
 *     if (kvl_kv_cache_init(&model->hp, &p, &c, &err)) ...
 *     kvl_kv_iface kv = kvl_kv_cache_iface(c);
 *     kvl_kv_cache_reserve(c, 0, n_prompt, &err);   // then kvl_forward_run(..., &kv, ...)
 *     kvl_kv_cache_fork(c, 0, 1, &err);             // seq 1 shares seq 0's prompt
 *     kvl_kv_cache_release(c, 1, &err);
 */
#ifndef KVL_KV_CACHE_H
#define KVL_KV_CACHE_H

#include "kv/block_pool.h"
#include "kv/kv_attn.h"
#include "model/forward.h"
#include "plan/planner.h"

typedef struct kvl_kv_cache_params {
    kvl_kv_layout layout;       /* default paged */
    size_t budget;              /* bytes; 0 = exactly max_seqs full contexts */
    int32_t block_size;         /* paged: positions per block; 0 (default) = the formats'
                              default: 32 when K is int4, else 16 */
    int32_t max_seqs;           /* sequence slots */
    int32_t max_ctx;            /* positions per sequence */
    kvl_kv_format k_fmt, v_fmt; /* default f32; contiguous supports f32 only */
    bool metadata_only;         /* paged only: the ledger without KV bytes (kvllm sim);
                              the iface's store/attend must not be called */
} kvl_kv_cache_params;

typedef struct kvl_kv_cache kvl_kv_cache;

kvl_kv_cache_params kvl_kv_cache_defaults(void);

/* Bytes that max_seqs full contexts need in this configuration (the default
 * budget): max_seqs * ceil(max_ctx / block_size) * block_bytes (paged), or
 * max_seqs * max_ctx * bytes_per_token (contiguous). */
kvl_status kvl_kv_cache_default_budget(const kvl_hparams *hp, const kvl_kv_cache_params *p,
                                       size_t *out, kvl_error *err);

/* Allocate the whole budget. Refuses (KVL_E_NO_KV, with the numbers) a
 * budget that cannot hold one sequence of max_ctx positions, and for the
 * contiguous layout one that cannot hold max_seqs of them. */
kvl_status kvl_kv_cache_init(const kvl_hparams *hp, const kvl_kv_cache_params *p,
                             kvl_kv_cache **out, kvl_error *err);
void kvl_kv_cache_free(kvl_kv_cache *c);

kvl_kv_iface kvl_kv_cache_iface(kvl_kv_cache *c);
const kvl_kv_cache_params *kvl_kv_cache_params_of(const kvl_kv_cache *c);

/* Grow sequences before a forward pass writes their next positions; all or
 * nothing over the whole batch (seqs distinct). */
kvl_status kvl_kv_cache_reserve_batch(kvl_kv_cache *c, int32_t n, const int32_t *seqs,
                                      const int32_t *n_new, kvl_error *err);
kvl_status kvl_kv_cache_reserve(kvl_kv_cache *c, int32_t seq, int32_t n_new, kvl_error *err);
/* dst (empty) continues from src: paged shares src's blocks, contiguous
 * copies src's positions into dst's region. */
kvl_status kvl_kv_cache_fork(kvl_kv_cache *c, int32_t src, int32_t dst, kvl_error *err);
/* Shorten seq to n positions (the rest released; a later reserve writes
 * them again). */
kvl_status kvl_kv_cache_truncate(kvl_kv_cache *c, int32_t seq, int32_t n, kvl_error *err);
/* Eviction (kv_paged.h: kvl_kv_paged_set_policy / make_room). The
 * contiguous layout takes full only (KVL_E_UNSUPPORTED otherwise) and
 * make_room does nothing there. */
kvl_status kvl_kv_cache_set_policy(kvl_kv_cache *c, int32_t seq, const kvl_kv_policy *p,
                                   kvl_error *err);
kvl_status kvl_kv_cache_make_room(kvl_kv_cache *c, int32_t seq, int32_t n_new, int32_t *n_evicted,
                                  kvl_error *err);
/* The model's rope_freqs divisors (kvl_kv_paged_rope_divide); the
 * contiguous layout ignores them. */
void kvl_kv_cache_rope_divide(kvl_kv_cache *c, const void *div);
/* The sequence ends: its positions are released. */
kvl_status kvl_kv_cache_release(kvl_kv_cache *c, int32_t seq, kvl_error *err);
int32_t kvl_kv_cache_len(const kvl_kv_cache *c, int32_t seq);

/* The paged store behind c, or NULL for the contiguous layout (the engine's
 * swap and ledger queries go to it directly). */
struct kvl_kv_paged *kvl_kv_cache_paged(kvl_kv_cache *c);
/* Blocks a reserve of n_new positions for seq would take now (paged), or 0
 * (contiguous: every slot holds max_ctx positions from the start). */
uint32_t kvl_kv_cache_blocks_needed(const kvl_kv_cache *c, int32_t seq, int32_t n_new);

/* The whole cache's accounting (kvl_kv_stats, public in kvllm.h). */
void kvl_kv_cache_stats(const kvl_kv_cache *c, kvl_kv_stats *out);

/* One line per fact, for the start-up report: layout, formats, bytes per
 * token, blocks, token capacity, full-context sequences that fit. */
void kvl_kv_cache_report(const kvl_kv_cache *c, FILE *f);

#endif
