/*
 * KV eviction policies (module-private half; the types and names are public
 * in kvllm.h): which whole blocks a sequence gives up so that its cache
 * stays within the policy's budget. Pure functions over lengths; the paged
 * store applies the answer (kvl_kv_paged_make_room). docs/eviction.md.
 *
 * A sequence of n_tokens positions in blocks of bs, about to grow by n_new:
 *
 *   logical block   0 .. ns-1     ns ...                          last
 *                 | sinks       | oldest window blocks -> victims | recent window |
 *
 * window has ns = 0; sinks has ns = ceil(sinks / bs). Victims are the
 * oldest full blocks after the sinks, as many as bring n_tokens + n_new
 * to at most budget_tokens; a block that is partly filled or about to be
 * written is never a victim.
 */
#ifndef KVL_KV_POLICY_H
#define KVL_KV_POLICY_H

#include "core/core.h"
#include "kvllm.h"

/* Check a policy against a store's block size and context: KVL_E_INVALID
 * naming the field, its value and the limit (kind out of range; window or
 * sinks with budget_tokens < sink blocks + 2 blocks, or > max_ctx; sinks
 * < 0). full accepts any budget and sinks (they are unused). */
kvl_status kvl_kv_policy_check(const kvl_kv_policy *p, int32_t block_size, int32_t max_ctx,
                               kvl_error *err);

/* Leading blocks the policy never evicts: ceil(sinks / bs) for sinks, else 0. */
int32_t kvl_kv_policy_sink_blocks(const kvl_kv_policy *p, int32_t block_size);

/* Whether the policy ever evicts (window or sinks). */
bool kvl_kv_policy_evicts(const kvl_kv_policy *p);

/*
 * The victims for growing a sequence of n_tokens by n_new: logical blocks
 * [*first, *first + *n) (n may be 0). full never evicts (*n = 0). KVL_E_LIMIT
 * (message with the numbers) when even evicting every full window block
 * cannot fit n_new within the budget: the caller feeds smaller chunks.
 */
kvl_status kvl_kv_policy_victims(const kvl_kv_policy *p, int32_t block_size, int32_t n_tokens,
                                 int32_t n_new, uint32_t *first, uint32_t *n, kvl_error *err);

#endif
