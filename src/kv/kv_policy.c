/*
 * kv_policy: the window and sinks eviction rules (kv_policy.h). Nothing
 * here touches a pool or a table; the paged store evicts the blocks named.
 *
 * Invariants: victims are full blocks at or after the sink blocks and
 * before the block of position n_tokens (the one the next write goes to),
 * so a policy never evicts a sink block or the block being filled, and
 * after evicting them n_tokens + n_new <= budget_tokens.
 */
#include "kv/kv_policy.h"

#include <string.h>

static const char *const policy_names[] = {"full", "window", "sinks"};
#define N_POLICIES ((int)(sizeof policy_names / sizeof policy_names[0]))

const char *kvl_kv_policy_str(kvl_kv_policy_kind k) {
    return (int)k >= 0 && (int)k < N_POLICIES ? policy_names[k] : NULL;
}

bool kvl_kv_policy_parse(const char *s, kvl_kv_policy_kind *out) {
    for (int i = 0; s && i < N_POLICIES; i++)
        if (!strcmp(s, policy_names[i])) {
            *out = (kvl_kv_policy_kind)i;
            return true;
        }
    return false;
}

bool kvl_kv_policy_evicts(const kvl_kv_policy *p) {
    return p->kind == KVL_KV_POLICY_WINDOW || p->kind == KVL_KV_POLICY_SINKS;
}

int32_t kvl_kv_policy_sink_blocks(const kvl_kv_policy *p, int32_t block_size) {
    if (p->kind != KVL_KV_POLICY_SINKS || p->sinks <= 0)
        return 0;
    return (int32_t)(((int64_t)p->sinks + block_size - 1) / block_size);
}

kvl_status kvl_kv_policy_check(const kvl_kv_policy *p, int32_t block_size, int32_t max_ctx,
                               kvl_error *err) {
    if (!kvl_kv_policy_str(p->kind))
        return kvl_errorf(err, KVL_E_INVALID, "kv policy: kind %d not in [0, %d)", (int)p->kind,
                          N_POLICIES);
    if (!kvl_kv_policy_evicts(p))
        return KVL_OK;
    if (p->sinks < 0 || p->sinks > max_ctx)
        return kvl_errorf(err, KVL_E_INVALID, "kv policy %s: sinks %d not in [0, %d]",
                          kvl_kv_policy_str(p->kind), (int)p->sinks, (int)max_ctx);
    const int64_t lo = ((int64_t)kvl_kv_policy_sink_blocks(p, block_size) + 2) * block_size;
    if (p->budget_tokens < lo || p->budget_tokens > max_ctx)
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv policy %s: budget_tokens %d not in [%lld, max_ctx %d] (sink "
                          "blocks + 2 blocks of %d)",
                          kvl_kv_policy_str(p->kind), (int)p->budget_tokens, (long long)lo,
                          (int)max_ctx, (int)block_size);
    return KVL_OK;
}

kvl_status kvl_kv_policy_victims(const kvl_kv_policy *p, int32_t block_size, int32_t n_tokens,
                                 int32_t n_new, uint32_t *first, uint32_t *n, kvl_error *err) {
    *first = 0;
    *n = 0;
    if (!kvl_kv_policy_evicts(p))
        return KVL_OK;
    const int64_t over = (int64_t)n_tokens + n_new - p->budget_tokens;
    if (over <= 0)
        return KVL_OK;
    const int64_t want = (over + block_size - 1) / block_size;
    const int32_t ns = kvl_kv_policy_sink_blocks(p, block_size);
    const int64_t evictable = (int64_t)(n_tokens / block_size) - ns;
    if (want > evictable)
        return kvl_errorf(err, KVL_E_LIMIT,
                          "kv policy %s: %d tokens + %d new > budget_tokens %d, and only %lld "
                          "full window blocks of %d can leave (need %lld): feed fewer new tokens",
                          kvl_kv_policy_str(p->kind), (int)n_tokens, (int)n_new,
                          (int)p->budget_tokens, (long long)(evictable > 0 ? evictable : 0),
                          (int)block_size, (long long)want);
    *first = (uint32_t)ns;
    *n = (uint32_t)want;
    return KVL_OK;
}
