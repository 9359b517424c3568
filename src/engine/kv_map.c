/*
 * The KV block map (kvllm.h, kvl_engine_kv_map): every pool block and swap
 * block with its state and first holder, and the requests that hold them,
 * taken in one pass under the engine's lock.
 *
 * How a cell gets its holder:
 *
 *   pool blocks      refcount > 0 -> USED, else hashed -> CACHED, else FREE
 *   requests         the all list walked from its tail (ascending id);
 *                    a request is a holder when one of its samples' tables
 *                    holds a block or it has swap blocks
 *   table entries    each block id in a holder's tables: the first holder
 *                    to reach a block keeps it (the lowest request id)
 *   swap blocks      FREE, then TIER where the prefix tier holds it, then
 *                    HELD by the swapped request whose swap_ids name it
 *
 * Invariants: reads only; never allocates; work is O(pool blocks + swap
 * blocks + open requests + table entries). The counts are taken from the
 * cells, and kv from the pool at the same moment, so a caller can check
 * one against the other.
 */
#include "engine/engine_impl.h"

#include "kv/kv_paged.h"
#include "kv/kv_tier.h"

void kvl_engine_kv_map_size(kvl_engine *e, uint32_t *n_blocks, uint32_t *n_swap_blocks,
                            uint32_t *max_holders) {
    kvl_kv_paged *pg = kvl_kv_cache_paged(e->kv);
    uint32_t nb = pg ? kvl_block_pool_n_blocks(kvl_kv_paged_pool(pg)) : 0;
    uint32_t ns = kvl_kv_swap_n_blocks(e->swap);
    *n_blocks = nb;
    *n_swap_blocks = ns;
    *max_holders = (uint32_t)e->cfg.p.max_seqs + ns;
}

/* The oldest open request (the all list is newest first). */
static eng_req *oldest(kvl_engine *e) {
    eng_req *q = e->all_head;
    while (q && q->all_next)
        q = q->all_next;
    return q;
}

static bool holds_kv(kvl_engine *e, const eng_req *q) {
    kvl_kv_paged *pg = kvl_kv_cache_paged(e->kv);
    for (int32_t i = 0; i < q->r.n_samples; i++) {
        const kvl_seq *s = &q->r.seqs[i];
        if (s->n_swap > 0 || (s->slot >= 0 && kvl_kv_paged_table(pg, s->slot)->n_blocks > 0))
            return true;
    }
    return false;
}

/* Give every block of q's tables and swap ids without a holder yet to
 * holder index h. */
static void claim(kvl_engine *e, const eng_req *q, int32_t h, kvl_kv_map *m) {
    kvl_kv_paged *pg = kvl_kv_cache_paged(e->kv);
    for (int32_t i = 0; i < q->r.n_samples; i++) {
        const kvl_seq *s = &q->r.seqs[i];
        if (s->slot >= 0) {
            const kvl_block_table *t = kvl_kv_paged_table(pg, s->slot);
            for (uint32_t j = 0; j < t->n_blocks; j++)
                if (m->blocks[t->ids[j]].holder < 0)
                    m->blocks[t->ids[j]].holder = h;
        }
        for (uint32_t j = 0; j < s->n_swap; j++) {
            kvl_kv_swap_info *c = &m->swap[s->swap_ids[j]];
            c->state = KVL_KV_SWAP_HELD;
            if (c->holder < 0)
                c->holder = h;
        }
    }
}

static void fill_pool(kvl_engine *e, kvl_kv_map *m, uint32_t nb) {
    const kvl_block_pool *bp = kvl_kv_paged_pool(kvl_kv_cache_paged(e->kv));
    m->n_free = m->n_cached = m->n_used = m->n_shared = 0;
    for (uint32_t b = 0; b < nb; b++) {
        kvl_kv_block_info *c = &m->blocks[b];
        c->refcount = kvl_block_pool_refcount(bp, b);
        c->hashed = e->pc && kvl_prefix_cache_has(e->pc, b);
        c->holder = -1;
        c->state = c->refcount ? KVL_KV_BLOCK_USED
                   : c->hashed ? KVL_KV_BLOCK_CACHED
                               : KVL_KV_BLOCK_FREE;
        m->n_used += c->refcount > 0;
        m->n_shared += c->refcount > 1;
        m->n_cached += c->state == KVL_KV_BLOCK_CACHED;
        m->n_free += c->state == KVL_KV_BLOCK_FREE;
    }
}

static void fill_locked(kvl_engine *e, kvl_kv_map *m, uint32_t nb, uint32_t ns) {
    fill_pool(e, m, nb);
    for (uint32_t b = 0; b < ns; b++)
        m->swap[b] = (kvl_kv_swap_info){.state = kvl_kv_tier_holds(e->tier, b) ? KVL_KV_SWAP_TIER
                                                                               : KVL_KV_SWAP_FREE,
                                        .holder = -1};
    uint32_t nh = 0;
    for (eng_req *q = oldest(e); q; q = q->all_prev) {
        if (!holds_kv(e, q))
            continue;
        kvl_request_info ri;
        kvl_engine_req_info(e, q, &ri);
        m->holders[nh] = (kvl_kv_holder){.request = ri.id,
                                         .session = ri.session,
                                         .state = ri.state,
                                         .n_samples = ri.n_samples,
                                         .n_blocks = ri.n_blocks,
                                         .n_blocks_shared = ri.n_blocks_shared,
                                         .n_swap_blocks = ri.n_swap_blocks,
                                         .n_tokens = ri.computed_tokens};
        claim(e, q, (int32_t)nh, m);
        nh++;
    }
    m->n_swap_free = m->n_swap_tier = m->n_swap_held = 0;
    for (uint32_t b = 0; b < ns; b++) {
        m->n_swap_free += m->swap[b].state == KVL_KV_SWAP_FREE;
        m->n_swap_tier += m->swap[b].state == KVL_KV_SWAP_TIER;
        m->n_swap_held += m->swap[b].state == KVL_KV_SWAP_HELD;
    }
    m->n_blocks = nb;
    m->n_swap_blocks = ns;
    m->n_holders = nh;
    kvl_kv_cache_stats(e->kv, &m->kv);
    m->n_waiting = kvl_sched_count(e->sched, KVL_REQ_WAITING);
    m->n_running = kvl_sched_count(e->sched, KVL_REQ_RUNNING);
    m->n_swapped = kvl_sched_count(e->sched, KVL_REQ_SWAPPED);
    m->n_steps = e->n_steps;
    m->in_step = e->stepping;
}

kvl_status kvl_engine_kv_map(kvl_engine *e, kvl_kv_map *m, kvl_error *err) {
    if (!m)
        return kvl_errorf(err, KVL_E_INVALID, "kv map: m is NULL");
    if ((m->cap_blocks && !m->blocks) || (m->cap_swap && !m->swap) ||
        (m->cap_holders && !m->holders))
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv map: an array is NULL with a non-zero length (blocks %u, swap %u, "
                          "holders %u)",
                          m->cap_blocks, m->cap_swap, m->cap_holders);
    if (!kvl_kv_cache_paged(e->kv))
        return kvl_errorf(err, KVL_E_UNSUPPORTED,
                          "kv map: the contiguous KV layout has no blocks to map");
    uint32_t nb, ns, max_h;
    kvl_engine_kv_map_size(e, &nb, &ns, &max_h);
    if (m->cap_blocks < nb || m->cap_swap < ns)
        return kvl_errorf(err, KVL_E_LIMIT,
                          "kv map: cap_blocks %u and cap_swap %u; the pool has %u blocks and the "
                          "swap area %u",
                          m->cap_blocks, m->cap_swap, nb, ns);
    pthread_mutex_lock(&e->mu);
    uint32_t nh = 0;
    for (eng_req *q = e->all_head; q; q = q->all_next)
        nh += holds_kv(e, q);
    if (m->cap_holders < nh) {
        pthread_mutex_unlock(&e->mu);
        return kvl_errorf(err, KVL_E_LIMIT,
                          "kv map: cap_holders %u < the %u requests holding blocks now (%u "
                          "always suffice)",
                          m->cap_holders, nh, max_h);
    }
    fill_locked(e, m, nb, ns);
    pthread_mutex_unlock(&e->mu);
    return KVL_OK;
}
