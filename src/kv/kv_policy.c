/*
 * kv_policy: the eviction rules (kv_policy.h). Nothing here touches a pool
 * or a table; the paged store evicts the blocks named and keeps the mass.
 *
 * Invariants: victims are full blocks at or after the sink blocks and
 * before the block of position n_tokens (the one the next write goes to),
 * so a policy never evicts a sink block or the block being filled, and
 * after evicting them n_tokens + n_new <= budget_tokens; a scored policy
 * never evicts a block of its protected tail either.
 */
#include "kv/kv_policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const policy_names[] = {"full", "window", "sinks", "h2o", "snapkv"};
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
    return p->kind != KVL_KV_POLICY_FULL && kvl_kv_policy_str(p->kind);
}

bool kvl_kv_policy_scored(const kvl_kv_policy *p) {
    return p->kind == KVL_KV_POLICY_H2O || p->kind == KVL_KV_POLICY_SNAPKV;
}

float kvl_kv_policy_heavy(const kvl_kv_policy *p) {
    return p->heavy == 0.0f ? KVL_KV_POLICY_DEFAULT_HEAVY : p->heavy;
}

int32_t kvl_kv_policy_obs_window(const kvl_kv_policy *p) {
    return p->obs_window == 0 ? KVL_KV_POLICY_DEFAULT_OBS_WINDOW : p->obs_window;
}

int32_t kvl_kv_policy_score(const kvl_kv_policy *p) {
    if (p->kind != KVL_KV_POLICY_H2O)
        return KVL_KV_SCORE_SUM;
    return p->score == 0 ? KVL_KV_SCORE_MEAN : p->score;
}

int32_t kvl_kv_policy_mass_stride(const kvl_kv_policy *p) {
    if (p->kind != KVL_KV_POLICY_H2O)
        return 1;
    return p->mass_stride == 0 ? KVL_KV_POLICY_DEFAULT_MASS_STRIDE : p->mass_stride;
}

int32_t kvl_kv_policy_pool(const kvl_kv_policy *p) {
    if (p->kind != KVL_KV_POLICY_SNAPKV)
        return 1;
    return p->pool == 0 ? KVL_KV_POLICY_DEFAULT_POOL : p->pool;
}

void kvl_kv_policy_rank(const kvl_kv_policy *p, const uint64_t *mass, const uint32_t *count,
                        uint32_t nb, uint64_t *out) {
    const bool mean = kvl_kv_policy_score(p) == KVL_KV_SCORE_MEAN && count;
    const uint32_t half = (uint32_t)(kvl_kv_policy_pool(p) / 2);
    for (uint32_t b = 0; b < nb; b++) {
        if (mean) {
            out[b] = count[b] ? mass[b] / count[b] : UINT64_MAX;
            continue;
        }
        uint64_t r = mass[b];
        const uint32_t lo = b > half ? b - half : 0, hi = b + half < nb ? b + half : nb - 1;
        for (uint32_t j = lo; j <= hi; j++)
            r = mass[j] > r ? mass[j] : r;
        out[b] = r;
    }
}

bool kvl_kv_policy_accumulates(const kvl_kv_policy *p, int32_t n_tokens, int32_t n_ctx) {
    if (p->kind == KVL_KV_POLICY_H2O)
        return (n_ctx - 1) % kvl_kv_policy_mass_stride(p) == 0;
    return p->kind == KVL_KV_POLICY_SNAPKV && n_tokens > p->budget_tokens &&
           n_ctx > n_tokens - kvl_kv_policy_obs_window(p);
}

int32_t kvl_kv_policy_sink_blocks(const kvl_kv_policy *p, int32_t block_size) {
    if (p->kind == KVL_KV_POLICY_FULL || p->kind == KVL_KV_POLICY_WINDOW || p->sinks <= 0)
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
    const float heavy = p->heavy;
    if (p->kind == KVL_KV_POLICY_H2O && !(heavy == 0.0f || (heavy > 0.0f && heavy < 1.0f)))
        return kvl_errorf(err, KVL_E_INVALID, "kv policy h2o: heavy %g not in (0, 1) (0: %g)",
                          (double)heavy, (double)KVL_KV_POLICY_DEFAULT_HEAVY);
    if (p->kind == KVL_KV_POLICY_H2O && p->score != 0 && p->score != KVL_KV_SCORE_SUM &&
        p->score != KVL_KV_SCORE_MEAN)
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv policy h2o: score %d is not 0 (default), %d (sum) or %d (mean)",
                          (int)p->score, KVL_KV_SCORE_SUM, KVL_KV_SCORE_MEAN);
    if (p->kind == KVL_KV_POLICY_H2O && (p->mass_stride < 0 || p->mass_stride > block_size))
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv policy h2o: mass_stride %d not in [0, block size %d] (0: %d)",
                          (int)p->mass_stride, (int)block_size, KVL_KV_POLICY_DEFAULT_MASS_STRIDE);
    if (p->kind == KVL_KV_POLICY_SNAPKV &&
        (p->pool < 0 || (p->pool > 0 && p->pool % 2 == 0) || p->pool > max_ctx / block_size + 1))
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv policy snapkv: pool %d is not 0 (default %d) or an odd number of "
                          "blocks in [1, %d]",
                          (int)p->pool, KVL_KV_POLICY_DEFAULT_POOL,
                          (int)(max_ctx / block_size + 1));
    const int32_t w = kvl_kv_policy_obs_window(p);
    if (p->kind == KVL_KV_POLICY_SNAPKV && (w < 1 || w > max_ctx))
        return kvl_errorf(err, KVL_E_INVALID, "kv policy snapkv: obs_window %d not in [1, %d]",
                          (int)p->obs_window, (int)max_ctx);
    int64_t lo = ((int64_t)kvl_kv_policy_sink_blocks(p, block_size) + 2) * block_size;
    if (p->kind == KVL_KV_POLICY_SNAPKV)
        lo += w;
    if (p->budget_tokens < lo || p->budget_tokens > max_ctx)
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv policy %s: budget_tokens %d not in [%lld, max_ctx %d] (sink "
                          "blocks + 2 blocks of %d%s)",
                          kvl_kv_policy_str(p->kind), (int)p->budget_tokens, (long long)lo,
                          (int)max_ctx, (int)block_size,
                          p->kind == KVL_KV_POLICY_SNAPKV ? " + obs_window" : "");
    return KVL_OK;
}

uint32_t kvl_kv_policy_tail(const kvl_kv_policy *p, int32_t block_size, int32_t n_tokens,
                            int32_t n_new) {
    const uint32_t nb = (uint32_t)(((int64_t)n_tokens + block_size - 1) / block_size);
    /* h2o's window counts the blocks the n_new positions will be written to */
    const uint32_t nb_grown = (uint32_t)(((int64_t)n_tokens + n_new + block_size - 1) / block_size);
    if (p->kind == KVL_KV_POLICY_H2O) {
        const int32_t ns = kvl_kv_policy_sink_blocks(p, block_size);
        const int32_t avail = p->budget_tokens / block_size - ns; /* >= 2 (checked) */
        int32_t h = (int32_t)floorf(kvl_kv_policy_heavy(p) * (float)avail);
        h = h < 1 ? 1 : h > avail - 1 ? avail - 1 : h;
        const uint32_t r = (uint32_t)(avail - h);
        return nb_grown > r ? nb_grown - r : 0;
    }
    if (p->kind == KVL_KV_POLICY_SNAPKV) {
        const int32_t from = n_tokens - kvl_kv_policy_obs_window(p);
        return from > 0 ? (uint32_t)(from / block_size) : 0;
    }
    return nb;
}

/* Blocks that must leave for n_tokens + n_new to fit the budget (0: none,
 * or the policy never evicts). */
static int64_t blocks_over(const kvl_kv_policy *p, int32_t block_size, int32_t n_tokens,
                           int32_t n_new) {
    const int64_t over = (int64_t)n_tokens + n_new - p->budget_tokens;
    if (!kvl_kv_policy_evicts(p) || over <= 0)
        return 0;
    return (over + block_size - 1) / block_size;
}

kvl_status kvl_kv_policy_victims(const kvl_kv_policy *p, int32_t block_size, int32_t n_tokens,
                                 int32_t n_new, uint32_t *first, uint32_t *n, kvl_error *err) {
    *first = 0;
    *n = 0;
    const int64_t want = blocks_over(p, block_size, n_tokens, n_new);
    if (want == 0)
        return KVL_OK;
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

static int cand_cmp(const void *a, const void *b) {
    const kvl_kv_cand *x = a, *y = b;
    if (x->mass != y->mass)
        return x->mass < y->mass ? -1 : 1;
    return x->block < y->block ? -1 : x->block > y->block;
}

static int u32_cmp(const void *a, const void *b) {
    const uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

kvl_status kvl_kv_policy_victims_scored(const kvl_kv_policy *p, int32_t block_size,
                                        int32_t n_tokens, int32_t n_new, const uint64_t *mass,
                                        kvl_kv_cand *cand, uint32_t *out, uint32_t *n,
                                        kvl_error *err) {
    *n = 0;
    const int64_t want = blocks_over(p, block_size, n_tokens, n_new);
    if (want == 0)
        return KVL_OK;
    const uint32_t ns = (uint32_t)kvl_kv_policy_sink_blocks(p, block_size);
    const uint32_t n_full = (uint32_t)(n_tokens / block_size);
    const uint32_t tail = kvl_kv_policy_tail(p, block_size, n_tokens, n_new);
    const uint32_t end = tail < n_full ? tail : n_full;
    uint32_t nc = 0;
    for (uint32_t b = ns; b < end; b++)
        cand[nc++] = (kvl_kv_cand){.mass = mass ? mass[b] : 0, .block = b};
    if (want > nc)
        return kvl_errorf(err, KVL_E_LIMIT,
                          "kv policy %s: %d tokens + %d new > budget_tokens %d, and only %u "
                          "blocks of %d between the %u sink blocks and the %u kept last ones "
                          "can leave (need %lld): feed fewer new tokens",
                          kvl_kv_policy_str(p->kind), (int)n_tokens, (int)n_new,
                          (int)p->budget_tokens, nc, (int)block_size, ns,
                          (uint32_t)((n_tokens + block_size - 1) / block_size) - end,
                          (long long)want);
    qsort(cand, nc, sizeof *cand, cand_cmp);
    for (int64_t i = 0; i < want; i++)
        out[i] = cand[i].block;
    qsort(out, (size_t)want, sizeof *out, u32_cmp);
    *n = (uint32_t)want;
    return KVL_OK;
}
