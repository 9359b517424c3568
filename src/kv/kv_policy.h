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
 * window has ns = 0; sinks, h2o and snapkv have ns = ceil(sinks / bs).
 * For window and sinks the victims are the oldest full blocks after the
 * sinks, as many as bring n_tokens + n_new to at most budget_tokens; a
 * block that is partly filled or about to be written is never a victim.
 *
 * h2o and snapkv (scored policies) choose among the same full blocks after
 * the sinks, less a protected tail, those with the least attention mass
 * (kvl_kv_policy_victims_scored; ties go to the oldest):
 *
 *   logical block   0 .. ns-1   ns ...               tail ...       last
 *                 | sinks     | candidates: by mass | protected tail      |
 *
 *   h2o:    B = budget / bs blocks, H = heavy * (B - ns) (at least 1, at
 *           most B - ns - 1) heavy-hitter blocks, and the tail is the last
 *           R = B - ns - H blocks of the table once grown by n_new (the
 *           recent window, the blocks being written included);
 *   snapkv: the tail is the blocks holding the last obs_window positions.
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

/* Leading blocks the policy never evicts: ceil(sinks / bs) for sinks, h2o
 * and snapkv, else 0. */
int32_t kvl_kv_policy_sink_blocks(const kvl_kv_policy *p, int32_t block_size);

/* Whether the policy ever evicts (all but full). */
bool kvl_kv_policy_evicts(const kvl_kv_policy *p);

/* Whether it chooses victims by attention mass (h2o, snapkv). */
bool kvl_kv_policy_scored(const kvl_kv_policy *p);

/* h2o's heavy share and snapkv's observation window, defaults applied. */
float kvl_kv_policy_heavy(const kvl_kv_policy *p);
int32_t kvl_kv_policy_obs_window(const kvl_kv_policy *p);

/* h2o's score (KVL_KV_SCORE_SUM or _MEAN; snapkv: SUM) and mass stride
 * (snapkv, others: 1), snapkv's pool (others: 1), defaults applied. */
int32_t kvl_kv_policy_score(const kvl_kv_policy *p);
int32_t kvl_kv_policy_mass_stride(const kvl_kv_policy *p);
int32_t kvl_kv_policy_pool(const kvl_kv_policy *p);

/*
 * The rank of each of nb blocks for kvl_kv_policy_victims_scored (least
 * ranked leave first), from mass[b], the attention mass accumulated into
 * block b, and count[b], the number of queries that added to it (count may
 * be NULL for SUM): h2o SUM: mass; h2o MEAN: mass / count (a block no
 * query has added to yet ranks highest: nothing is known against it);
 * snapkv: the largest mass among the pool blocks centred on b (those that
 * exist). out[] holds nb entries.
 */
void kvl_kv_policy_rank(const kvl_kv_policy *p, const uint64_t *mass, const uint32_t *count,
                        uint32_t nb, uint64_t *out);

/*
 * Whether attention of a query that sees n_ctx positions of a sequence of
 * n_tokens (reserved) positions adds to the blocks' mass: always for h2o;
 * h2o's queries at a position (n_ctx - 1) that is a multiple of its mass
 * stride; for snapkv only while a prompt longer than the budget is
 * prefilled and only for its last obs_window queries; never for the others.
 */
bool kvl_kv_policy_accumulates(const kvl_kv_policy *p, int32_t n_tokens, int32_t n_ctx);

/* First logical block of the protected tail of a scored policy for a
 * table of n_tokens positions about to grow by n_new; the table's block
 * count for the others. h2o's recent window is the last R blocks of the
 * grown table (the blocks the new positions go to count), so that after
 * the eviction the table holds sinks + H heavy + R recent blocks. */
uint32_t kvl_kv_policy_tail(const kvl_kv_policy *p, int32_t block_size, int32_t n_tokens,
                            int32_t n_new);

/* Scratch of kvl_kv_policy_victims_scored: one per candidate block. */
typedef struct kvl_kv_cand {
    uint64_t mass;
    uint32_t block;
} kvl_kv_cand;

/*
 * The victims for growing a sequence of n_tokens by n_new: logical blocks
 * [*first, *first + *n) (n may be 0). full never evicts (*n = 0). KVL_E_LIMIT
 * (message with the numbers) when even evicting every full window block
 * cannot fit n_new within the budget: the caller feeds smaller chunks.
 */
kvl_status kvl_kv_policy_victims(const kvl_kv_policy *p, int32_t block_size, int32_t n_tokens,
                                 int32_t n_new, uint32_t *first, uint32_t *n, kvl_error *err);

/*
 * The victims of a scored policy (or of any policy: mass NULL counts as
 * all equal, so the oldest candidates go) for growing n_tokens by n_new
 * (n_new 0: just bring the sequence within its budget, snapkv's
 * compression after a prefill): *n logical blocks, ascending, in out[];
 * mass[b] is block b's accumulated mass. cand and out hold at least
 * ceil(n_tokens / block_size) entries. KVL_E_LIMIT (message with the
 * numbers, nothing written that matters) when the candidates are fewer
 * than needed: sinks and the protected tail are never victims.
 */
kvl_status kvl_kv_policy_victims_scored(const kvl_kv_policy *p, int32_t block_size,
                                        int32_t n_tokens, int32_t n_new, const uint64_t *mass,
                                        kvl_kv_cand *cand, uint32_t *out, uint32_t *n,
                                        kvl_error *err);

#endif
