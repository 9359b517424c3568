/*
 * The scheduler (scheduler.h has the contract and the step). It owns the
 * three request lists, the free KV slots and the step's batch arrays, and
 * talks to the KV store only through kv_cache's ledger calls (reserve,
 * release, fork, blocks_needed), the paged store's swap copies and its
 * eviction calls (set_policy, make_room).
 *
 * Invariants (checked by the engine's tests after every step):
 *   - a request is in exactly one list, the one its state names;
 *   - WAITING: no sample holds a slot or a swap block, n_kv == 0;
 *   - RUNNING: every alive sample holds a slot; unforked, only the lead's
 *     slot holds KV; ended samples hold nothing;
 *   - SWAPPED: no slot; the samples with KV hold swap blocks;
 *   - free slots + held slots == max_seqs;
 *   - a request with an evicting KV policy holds n_kv - n_drop positions,
 *     at most its budget: make_room runs before each of its reservations
 *     (snapkv: its prompt is prefilled whole, past the budget, and cut by
 *     make_room(0) right after the prompt's last chunk), it is never
 *     swapped, and it neither takes nor publishes prefix-cache blocks
 *     (docs/eviction.md, "In the engine");
 *   - snapkv's attention mass comes only from the prompt's last obs_window
 *     queries: a prefill chunk that starts before that window ends at its
 *     start or at the prompt's end, and the mass is zeroed before every
 *     chunk that starts at or before it.
 *
 * Must not: allocate in a step (all arrays are sized at init); preempt a
 * request ranked before the one that needs the blocks.
 */
#include "sched/scheduler.h"

#include "kv/kv_paged.h"

#include <stdlib.h>

/* The session of the request that filled a cached block (0: none). */
typedef struct blk_owner {
    uint64_t session;
    int32_t slot;
} blk_owner;

typedef struct req_list {
    kvl_request *head, *tail;
    int32_t n;
} req_list;

struct kvl_sched {
    kvl_sched_params p;
    kvl_kv_cache *kv;
    kvl_kv_paged *paged; /* NULL for the contiguous layout */
    kvl_kv_swap *swap;
    int32_t block_size;
    uint32_t n_blocks; /* pool blocks; contiguous: max_seqs */
    req_list lists[3]; /* WAITING, RUNNING, SWAPPED */
    int64_t waiting_tokens;
    int32_t *free_slots; /* (max_seqs) stack */
    int32_t n_free_slots;
    kvl_sched_item *items;    /* (max_seqs) */
    int32_t *tok, *seq, *pos; /* (max_batch_tokens) */
    bool *want;               /* (max_batch_tokens) */
    int32_t *rs_seq, *rs_n;   /* (max_seqs) one request's reservation */
    kvl_sched_plan plan;
    kvl_sched_counters c;
    double prefill_tok_s, swap_bytes_s;
    kvl_prefix_cache *pc;  /* NULL: no prefix caching */
    kvl_kv_tier *tier;     /* NULL: evicted cached blocks are dropped */
    uint32_t *hit_ids;     /* (max blocks of one sequence) a lookup: pool ids, */
    uint32_t *hit_swap;    /* (same) tier swap ids, */
    kvl_hash128 *hit_hash; /* (same) and hashes */
    blk_owner *owner;      /* (n_blocks) who filled each cached block, for tier_hook */
    kvl_sched_tier_hook tier_hook;
    void *tier_ctx;
};

/* ---- lists ---------------------------------------------------------------- */

static bool ranks_before(const kvl_request *a, const kvl_request *b) {
    return a->priority != b->priority ? a->priority > b->priority : a->arrival < b->arrival;
}

static void list_insert(req_list *l, kvl_request *r) {
    kvl_request *at = l->head;
    while (at && !ranks_before(r, at))
        at = at->next;
    r->next = at;
    r->prev = at ? at->prev : l->tail;
    if (r->prev)
        r->prev->next = r;
    else
        l->head = r;
    if (at)
        at->prev = r;
    else
        l->tail = r;
    l->n++;
}

static void list_unlink(req_list *l, kvl_request *r) {
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

static void move_to(kvl_sched *s, kvl_request *r, kvl_request_state st) {
    if (r->state == KVL_REQ_WAITING)
        s->waiting_tokens -= r->n_prompt;
    list_unlink(&s->lists[r->state], r);
    r->state = st;
    if (st == KVL_REQ_FINISHED)
        return;
    if (st == KVL_REQ_WAITING)
        s->waiting_tokens += r->n_prompt;
    list_insert(&s->lists[st], r);
}

/* ---- init ----------------------------------------------------------------- */

kvl_status kvl_sched_init(kvl_kv_cache *kv, kvl_kv_swap *swap, const kvl_sched_params *p,
                          kvl_sched **out, kvl_error *err) {
    if (p->max_seqs < 1 || p->max_batch_tokens < 1)
        return kvl_errorf(err, KVL_E_INVALID,
                          "scheduler: max_seqs %d and max_batch_tokens %d must be >= 1",
                          p->max_seqs, p->max_batch_tokens);
    if (kvl_kv_cache_params_of(kv)->max_seqs < p->max_seqs)
        return kvl_errorf(err, KVL_E_INVALID, "scheduler: max_seqs %d > the KV cache's %d slots",
                          p->max_seqs, kvl_kv_cache_params_of(kv)->max_seqs);
    kvl_sched *s = calloc(1, sizeof *s);
    if (!s)
        return kvl_errorf(err, KVL_E_NOMEM, "scheduler: out of memory");
    s->p = *p;
    s->kv = kv;
    s->paged = kvl_kv_cache_paged(kv);
    s->swap = s->paged ? swap : NULL;
    size_t nb = (size_t)p->max_batch_tokens, ns = (size_t)p->max_seqs;
    s->free_slots = malloc(ns * sizeof *s->free_slots);
    s->items = malloc(ns * sizeof *s->items);
    s->rs_seq = malloc(ns * sizeof *s->rs_seq);
    s->rs_n = malloc(ns * sizeof *s->rs_n);
    s->tok = malloc(nb * sizeof *s->tok);
    s->seq = malloc(nb * sizeof *s->seq);
    s->pos = malloc(nb * sizeof *s->pos);
    s->want = malloc(nb * sizeof *s->want);
    if (!s->free_slots || !s->items || !s->rs_seq || !s->rs_n || !s->tok || !s->seq || !s->pos ||
        !s->want) {
        kvl_sched_free(s);
        return kvl_errorf(err, KVL_E_NOMEM, "scheduler: out of memory for %d slots, %d tokens",
                          p->max_seqs, p->max_batch_tokens);
    }
    for (int32_t i = 0; i < p->max_seqs; i++) /* pop order 0, 1, 2, ... */
        s->free_slots[i] = p->max_seqs - 1 - i;
    s->n_free_slots = p->max_seqs;
    if (s->paged) {
        s->block_size = kvl_kv_paged_layout(s->paged)->block_size;
        s->n_blocks = kvl_block_pool_n_blocks(kvl_kv_paged_pool(s->paged));
    } else {
        s->block_size = kvl_kv_cache_params_of(kv)->max_ctx;
        s->n_blocks = (uint32_t)p->max_seqs;
    }
    s->prefill_tok_s = 1000;
    s->swap_bytes_s = 4e9;
    *out = s;
    return KVL_OK;
}

void kvl_sched_free(kvl_sched *s) {
    if (!s)
        return;
    free(s->hit_ids);
    free(s->hit_swap);
    free(s->hit_hash);
    free(s->owner);
    free(s->free_slots);
    free(s->items);
    free(s->rs_seq);
    free(s->rs_n);
    free(s->tok);
    free(s->seq);
    free(s->pos);
    free(s->want);
    free(s);
}

void kvl_sched_set_rates(kvl_sched *s, double prefill_tok_s, double swap_bytes_s) {
    if (prefill_tok_s > 0)
        s->prefill_tok_s = prefill_tok_s;
    if (swap_bytes_s > 0)
        s->swap_bytes_s = swap_bytes_s;
}

/* ---- the prefix cache and its second tier --------------------------------
 *
 *   pool (free queue, LRU)  --evict hook: demote (copy out)-->  tier (LRU)
 *        ^                                                        |
 *        +------------- admission hit: promote (copy in) ---------+
 *
 * A hash is normally in one of the two; a block computed again while its
 * hash waits in the tier is simply in both until one copy goes.
 */

static void evict_hook(void *ctx, uint32_t id) {
    kvl_sched *s = ctx;
    kvl_hash128 h;
    if (!kvl_prefix_cache_hash_of(s->pc, id, &h))
        return;
    bool hit = kvl_prefix_cache_was_hit(s->pc, id);
    uint8_t *dst = s->tier ? kvl_kv_tier_put(s->tier, h, hit) : NULL;
    if (dst) {
        double t0 = kvl_now();
        kvl_kv_paged_block_save_id(s->paged, id, dst);
        s->c.prefix_tier_seconds += kvl_now() - t0;
        const blk_owner *o = &s->owner[id];
        if (s->tier_hook && o->session)
            s->tier_hook(s->tier_ctx, o->session, o->slot, 1, 0);
    } else if (!hit && !(s->tier && kvl_kv_tier_find(s->tier, h) != UINT32_MAX)) {
        s->c.prefix_evicted_unused++;
    }
    kvl_prefix_cache_evict(s->pc, id);
}

void kvl_sched_set_prefix_cache(kvl_sched *s, kvl_prefix_cache *pc) {
    if (!s->paged)
        return;
    if (!s->hit_ids) {
        int32_t mc = kvl_kv_paged_max_ctx(s->paged);
        size_t n = (size_t)mc / (size_t)s->block_size + 1;
        s->hit_ids = malloc(n * sizeof *s->hit_ids);
        s->hit_swap = malloc(n * sizeof *s->hit_swap);
        s->hit_hash = malloc(n * sizeof *s->hit_hash);
        s->owner = calloc(s->n_blocks, sizeof *s->owner);
        if (!s->hit_ids || !s->hit_swap || !s->hit_hash || !s->owner) {
            free(s->hit_ids);
            free(s->hit_swap);
            free(s->hit_hash);
            free(s->owner);
            s->hit_ids = s->hit_swap = NULL;
            s->hit_hash = NULL;
            s->owner = NULL;
            return; /* no caching rather than no engine */
        }
    }
    s->pc = pc;
    if (!pc)
        s->tier = NULL;
    kvl_block_pool_set_evict_hook(kvl_kv_paged_pool(s->paged), pc ? evict_hook : NULL, s);
}

void kvl_sched_set_prefix_tier(kvl_sched *s, kvl_kv_tier *tier) {
    s->tier = s->pc && s->swap ? tier : NULL;
}

void kvl_sched_set_tier_hook(kvl_sched *s, kvl_sched_tier_hook fn, void *ctx) {
    s->tier_hook = fn;
    s->tier_ctx = ctx;
}

static void set_owner(kvl_sched *s, const kvl_request *r, uint32_t id) {
    s->owner[id] = (blk_owner){r->session, r->session_slot};
}

/* The longest cached prefix of sample q's first `limit` positions, in whole
 * blocks, from the pool or (with_tier) the second tier: per block j its
 * pool id (UINT32_MAX when in the tier) in s->hit_ids, its swap block
 * (UINT32_MAX when in the pool) in s->hit_swap and its hash; q's chain
 * advanced over them. *n_tier: how many are in the tier. */
static uint32_t prefix_lookup(kvl_sched *s, const kvl_request *r, kvl_seq *q, int32_t limit,
                              bool with_tier, uint32_t *n_tier) {
    uint32_t n = 0, max_blocks = limit > 0 ? (uint32_t)(limit / s->block_size) : 0;
    kvl_hash128 h = {0, 0};
    *n_tier = 0;
    while (n < max_blocks) {
        kvl_hash128 hn = kvl_prefix_hash(s->pc, h, r->ns, q->hist + (size_t)n * s->block_size);
        uint32_t id = kvl_prefix_cache_find(s->pc, hn), sid = UINT32_MAX;
        if (id == UINT32_MAX && with_tier && s->tier)
            sid = kvl_kv_tier_find(s->tier, hn);
        if (id == UINT32_MAX && sid == UINT32_MAX)
            break;
        s->hit_ids[n] = id;
        s->hit_swap[n] = sid;
        s->hit_hash[n] = hn;
        *n_tier += sid != UINT32_MAX;
        n++;
        h = hn;
    }
    q->n_hashed = n;
    q->chain = h;
    return n;
}

/* Pool hits of the lookup that are free (count 0) but still cached. */
static uint32_t lookup_free_hits(const kvl_sched *s, uint32_t n_hit) {
    uint32_t k = 0;
    for (uint32_t j = 0; j < n_hit; j++)
        k += s->hit_ids[j] != UINT32_MAX &&
             kvl_block_pool_refcount(kvl_kv_paged_pool(s->paged), s->hit_ids[j]) == 0;
    return k;
}

/* Attach the lookup's n_hit blocks to q's empty table, promoting the tier
 * hits first: each takes a fresh pool block, gets its bytes copied back
 * and its hash entered in the pool's map. Order matters: the tier entries
 * are taken out and the pool hits pinned (one reference each) before the
 * fresh blocks are allocated, so the demotions those allocations cause
 * can drop neither. The caller has checked that n_tier + the free pool
 * hits fit in the free blocks. */
static void prefix_attach(kvl_sched *s, const kvl_request *r, kvl_seq *q, uint32_t n_hit,
                          uint32_t n_tier) {
    kvl_block_pool *pool = kvl_kv_paged_pool(s->paged);
    for (uint32_t j = 0; j < n_hit; j++)
        if (s->hit_swap[j] != UINT32_MAX) {
            uint32_t sid = kvl_kv_tier_take(s->tier, s->hit_hash[j]);
            KVL_ASSERT(sid == s->hit_swap[j]);
        } else {
            kvl_block_pool_incref(pool, s->hit_ids[j]);
        }
    kvl_error err;
    double t0 = kvl_now();
    for (uint32_t j = 0; j < n_hit && n_tier; j++) {
        if (s->hit_swap[j] == UINT32_MAX)
            continue;
        kvl_status st = kvl_block_pool_alloc(pool, 1, &s->hit_ids[j], &err);
        KVL_ASSERT(st == KVL_OK);
        kvl_kv_paged_block_load_id(s->paged, s->hit_ids[j],
                                   kvl_kv_swap_block(s->swap, s->hit_swap[j]));
        kvl_kv_swap_release(s->swap, &s->hit_swap[j], 1);
        kvl_prefix_cache_insert(s->pc, s->hit_hash[j], s->hit_ids[j]);
        set_owner(s, r, s->hit_ids[j]);
    }
    if (n_tier)
        s->c.prefix_tier_seconds += kvl_now() - t0;
    kvl_status st = kvl_kv_paged_attach(s->paged, q->slot, s->hit_ids, n_hit, &err);
    KVL_ASSERT(st == KVL_OK);
    kvl_block_pool_decref(pool, s->hit_ids, n_hit); /* the pins and the fresh blocks' own */
    for (uint32_t j = 0; j < n_hit; j++)
        kvl_prefix_cache_mark_hit(s->pc, s->hit_ids[j]);
}

/* Register sample q's full blocks not yet in the cache. */
static void prefix_register(kvl_sched *s, const kvl_request *r, kvl_seq *q) {
    if (!s->pc || q->slot < 0 || kvl_kv_policy_evicts(&r->policy))
        return; /* an evicting request's blocks move: never published */
    const kvl_block_table *t = kvl_kv_paged_table(s->paged, q->slot);
    while ((int64_t)(q->n_hashed + 1) * s->block_size <= q->n_kv) {
        kvl_hash128 h =
            kvl_prefix_hash(s->pc, q->chain, r->ns, q->hist + (size_t)q->n_hashed * s->block_size);
        kvl_prefix_cache_insert(s->pc, h, t->ids[q->n_hashed]);
        set_owner(s, r, t->ids[q->n_hashed]);
        q->chain = h;
        q->n_hashed++;
    }
}

static void prefix_forget(kvl_seq *q) {
    q->n_hashed = 0;
    q->chain = (kvl_hash128){0, 0};
}

/* ---- queries -------------------------------------------------------------- */

kvl_request *kvl_sched_first(const kvl_sched *s, kvl_request_state st) {
    return st <= KVL_REQ_SWAPPED ? s->lists[st].head : NULL;
}
int32_t kvl_sched_count(const kvl_sched *s, kvl_request_state st) {
    return st <= KVL_REQ_SWAPPED ? s->lists[st].n : 0;
}
int64_t kvl_sched_waiting_tokens(const kvl_sched *s) { return s->waiting_tokens; }
const kvl_sched_counters *kvl_sched_counters_get(const kvl_sched *s) { return &s->c; }
int32_t kvl_sched_free_slots(const kvl_sched *s) { return s->n_free_slots; }
uint32_t kvl_sched_n_blocks(const kvl_sched *s) { return s->n_blocks; }
int32_t kvl_sched_block_size(const kvl_sched *s) { return s->block_size; }

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

uint64_t kvl_sched_blocks_worst(const kvl_sched *s, int32_t n_prompt, int32_t max_tokens,
                                int32_t n_samples) {
    if (!s->paged) /* one slot per sample */
        return (uint64_t)n_samples;
    uint64_t bs = (uint64_t)s->block_size, total = (uint64_t)n_prompt + (uint64_t)max_tokens;
    uint64_t shared = (uint64_t)n_prompt / bs;
    return shared + (uint64_t)n_samples * (ceil_div(total, bs) - shared);
}

static uint32_t n_free_blocks(const kvl_sched *s) {
    return s->paged ? kvl_block_pool_n_free(kvl_kv_paged_pool(s->paged)) : UINT32_MAX;
}

/* Blocks kept free when admitting or swapping in while others run, so that
 * running sequences can take their next block without an immediate
 * preemption (vLLM's watermark): 1% of the pool, at least one block. */
static uint32_t watermark(const kvl_sched *s) {
    if (!s->paged || s->lists[KVL_REQ_RUNNING].n == 0)
        return 0;
    uint32_t w = s->n_blocks / 100;
    return w ? w : 1;
}

static int32_t lead_of(const kvl_request *r) {
    for (int32_t i = 0; i < r->n_samples; i++)
        if (!r->seqs[i].done)
            return i;
    return -1;
}

/* ---- reserving KV policies (kvl_sched_reserve) ------------------------------
 *
 * Admission accounting only: blocks are still taken on demand through the
 * ledger, but a request is admitted only when its whole reservation fits
 * beside the unused part of everyone else's:
 *
 *   R(r) + sum over running q of (R(q) - blocks q holds) <= free blocks
 */

/* Blocks policy p reserves for each alive sample of r (0: paged). */
static uint64_t policy_blocks(const kvl_sched *s, const kvl_request *r) {
    if (!s->paged)
        return 0;
    int64_t max_ctx = kvl_kv_cache_params_of(s->kv)->max_ctx;
    int64_t want = (int64_t)r->n_prompt + r->max_tokens, out = r->max_tokens, p2 = 1;
    switch (s->p.reserve) {
    case KVL_RESERVE_MAX: want = max_ctx; break;
    case KVL_RESERVE_POW2: /* the output's room rounded up to a power of two */
        while (p2 < out)
            p2 *= 2;
        want = (int64_t)r->n_prompt + p2;
        break;
    case KVL_RESERVE_ORACLE: break;
    default: return 0;
    }
    if (want > max_ctx)
        want = max_ctx;
    return ceil_div((uint64_t)want, (uint64_t)s->block_size);
}

uint64_t kvl_sched_reserve_blocks(const kvl_sched *s, const kvl_request *r) {
    return policy_blocks(s, r);
}

uint64_t kvl_sched_reserved_unused(const kvl_sched *s) {
    if (!s->paged || s->p.reserve == KVL_RESERVE_PAGED)
        return 0;
    uint64_t u = 0;
    for (const kvl_request *r = s->lists[KVL_REQ_RUNNING].head; r; r = r->next) {
        uint64_t per = policy_blocks(s, r);
        for (int32_t i = 0; i < r->n_samples; i++) {
            const kvl_seq *q = &r->seqs[i];
            if (q->done || q->slot < 0)
                continue;
            uint64_t held = kvl_kv_paged_table(s->paged, q->slot)->n_blocks;
            u += per > held ? per - held : 0;
        }
    }
    return u;
}

/* Whether the reserving policy lets r in now (always under paged). */
static bool policy_admits(const kvl_sched *s, const kvl_request *r) {
    if (!s->paged || s->p.reserve == KVL_RESERVE_PAGED)
        return true;
    uint64_t need = policy_blocks(s, r) * (uint64_t)r->n_alive;
    return need + kvl_sched_reserved_unused(s) <= n_free_blocks(s);
}

/* ---- slots and release ---------------------------------------------------- */

static void slot_put(kvl_sched *s, kvl_seq *q) {
    if (q->slot < 0)
        return;
    kvl_error err;
    kvl_status st = kvl_kv_cache_release(s->kv, q->slot, &err);
    KVL_ASSERT(st == KVL_OK);
    s->free_slots[s->n_free_slots++] = q->slot;
    q->slot = -1;
}

static void swap_put(kvl_sched *s, kvl_seq *q) {
    if (q->n_swap)
        kvl_kv_swap_release(s->swap, q->swap_ids, q->n_swap);
    q->n_swap = 0;
}

void kvl_sched_add(kvl_sched *s, kvl_request *r) {
    r->state = KVL_REQ_WAITING;
    r->forked = r->n_alive <= 1;
    for (int32_t i = 0; i < r->n_samples; i++) {
        r->seqs[i].slot = -1;
        r->seqs[i].n_kv = 0;
        r->seqs[i].n_drop = 0;
        r->seqs[i].n_swap = 0;
        prefix_forget(&r->seqs[i]);
    }
    s->waiting_tokens += r->n_prompt;
    list_insert(&s->lists[KVL_REQ_WAITING], r);
}

void kvl_sched_remove(kvl_sched *s, kvl_request *r) {
    if (r->state == KVL_REQ_FINISHED)
        return;
    for (int32_t i = 0; i < r->n_samples; i++) {
        slot_put(s, &r->seqs[i]);
        swap_put(s, &r->seqs[i]);
        r->seqs[i].n_kv = 0;
        r->seqs[i].n_drop = 0;
    }
    move_to(s, r, KVL_REQ_FINISHED);
}

void kvl_sched_end_sample(kvl_sched *s, kvl_request *r, int32_t si) {
    kvl_seq *q = &r->seqs[si];
    if (q->done)
        return;
    q->done = true;
    r->n_alive--;
    slot_put(s, q);
    swap_put(s, q);
    q->n_kv = 0;
    q->n_drop = 0;
    if (r->n_alive <= 1)
        r->forked = true;
}

/* ---- preemption ----------------------------------------------------------- */

/* Positions of r's KV, the shared prompt counted once. */
static int64_t kv_tokens(const kvl_request *r) {
    int64_t t = 0;
    bool first = true;
    for (int32_t i = 0; i < r->n_samples; i++) {
        const kvl_seq *q = &r->seqs[i];
        if (q->done || q->n_kv == 0)
            continue;
        t += (r->forked && !first && r->n_alive > 1) ? q->n_kv - r->n_prompt : q->n_kv;
        first = false;
    }
    return t;
}

static void preempt_recompute(kvl_sched *s, kvl_request *r) {
    s->c.n_preempt_recompute++;
    r->to_recompute += kv_tokens(r); /* counted when computed again (admit) */
    for (int32_t i = 0; i < r->n_samples; i++) {
        slot_put(s, &r->seqs[i]);
        r->seqs[i].n_kv = 0;
        r->seqs[i].n_drop = 0;
        prefix_forget(&r->seqs[i]);
    }
    r->forked = r->n_alive <= 1;
    move_to(s, r, KVL_REQ_WAITING);
}

/* Swap is offered for requests whose KV is one table (one alive sample, or
 * samples not yet forked): a forked request's shared prompt blocks would
 * come back as copies, which could exceed what it was admitted with. */
static bool swap_possible(const kvl_sched *s, const kvl_request *r, uint32_t *n_blocks) {
    if (!s->swap || (r->forked && r->n_alive > 1) || kvl_kv_policy_evicts(&r->policy))
        return false; /* an evicting request: its table's shifts do not travel */
    int32_t li = lead_of(r);
    const kvl_block_table *t = kvl_kv_paged_table(s->paged, r->seqs[li].slot);
    *n_blocks = t->n_blocks;
    /* the prefix tier's blocks are dropped for it: swapped requests first */
    return t->n_blocks <= kvl_kv_swap_n_free(s->swap) + kvl_kv_tier_n_entries(s->tier);
}

static void preempt_swap(kvl_sched *s, kvl_request *r) {
    int32_t li = lead_of(r);
    kvl_seq *q = &r->seqs[li];
    const kvl_block_table *t = kvl_kv_paged_table(s->paged, q->slot);
    uint32_t n = t->n_blocks;
    kvl_error err;
    double t0 = kvl_now();
    if (s->tier)
        kvl_kv_tier_make_room(s->tier, n);
    kvl_status st = kvl_kv_swap_alloc(s->swap, n, q->swap_ids, &err);
    KVL_ASSERT(st == KVL_OK);
    for (uint32_t j = 0; j < n; j++)
        kvl_kv_paged_block_save(s->paged, q->slot, j, kvl_kv_swap_block(s->swap, q->swap_ids[j]));
    if (q->swap_res)
        kvl_kv_paged_residual_save(s->paged, q->slot, q->swap_res);
    q->n_swap = n;
    s->c.swap_seconds += kvl_now() - t0;
    s->c.n_preempt_swap++;
    s->c.n_blocks_swapped_out += n;
    s->c.bytes_swapped_out += (size_t)n * kvl_kv_swap_block_bytes(s->swap);
    int32_t n_kv = q->n_kv;
    for (int32_t i = 0; i < r->n_samples; i++)
        slot_put(s, &r->seqs[i]);
    q->n_kv = n_kv; /* kept: it comes back */
    move_to(s, r, KVL_REQ_SWAPPED);
}

/* The cost rule: swap when copying the blocks out and back is cheaper than
 * computing their positions again (at the measured rates). */
static void preempt(kvl_sched *s, kvl_request *r) {
    s->c.n_preemptions++;
    r->n_preempt++;
    uint32_t nb = 0;
    bool can_swap = s->p.preempt != KVL_PREEMPT_RECOMPUTE && swap_possible(s, r, &nb);
    if (can_swap && s->p.preempt == KVL_PREEMPT_AUTO) {
        double bytes = 2.0 * (double)nb * (double)kvl_kv_swap_block_bytes(s->swap);
        double swap_s = bytes / s->swap_bytes_s;
        double recompute_s = (double)kv_tokens(r) / s->prefill_tok_s;
        can_swap = swap_s < recompute_s;
    }
    if (can_swap)
        preempt_swap(s, r);
    else
        preempt_recompute(s, r);
}

kvl_status kvl_sched_preempt(kvl_sched *s, kvl_request *r, kvl_preempt_mode mode, kvl_error *err) {
    if (r->state != KVL_REQ_RUNNING)
        return kvl_errorf(err, KVL_E_INVALID, "preempt: request %llu is not running",
                          (unsigned long long)r->id);
    kvl_preempt_mode keep = s->p.preempt;
    s->p.preempt = mode;
    preempt(s, r);
    s->p.preempt = keep;
    return KVL_OK;
}

/* The worst-ranked running request ranked after r (or NULL). */
static kvl_request *victim_for(kvl_sched *s, const kvl_request *r) {
    kvl_request *v = s->lists[KVL_REQ_RUNNING].tail;
    return (v && v != r && ranks_before(r, v)) ? v : NULL;
}

/* ---- KV policies (docs/eviction.md) -------------------------------------- */

/* Give r's slots its policy (a slot keeps the last one set: full requests
 * reset it). Paged layout only. */
static void slot_policy(kvl_sched *s, const kvl_request *r) {
    if (!s->paged)
        return;
    for (int32_t i = 0; i < r->n_samples; i++)
        if (!r->seqs[i].done) {
            kvl_error err;
            kvl_status st = kvl_kv_paged_set_policy(s->paged, r->seqs[i].slot, &r->policy, &err);
            KVL_ASSERT(st == KVL_OK); /* checked at submit */
        }
}

int32_t kvl_sched_chunk_cap(const kvl_kv_policy *p, int32_t block_size) {
    /* after evicting every candidate: the sink blocks, the partly filled
     * last block, and (snapkv) the observation window's positions remain */
    int32_t nsk = kvl_kv_policy_sink_blocks(p, block_size);
    int32_t w = p->kind == KVL_KV_POLICY_SNAPKV ? kvl_kv_policy_obs_window(p) : 0;
    return p->budget_tokens - (nsk + 1) * block_size - w + 1;
}

uint64_t kvl_sched_policy_blocks(const kvl_kv_policy *p, int32_t n_prompt, int32_t block_size) {
    int32_t t = p->budget_tokens;
    if (p->kind == KVL_KV_POLICY_SNAPKV && n_prompt > t)
        t = n_prompt;
    return ceil_div((uint64_t)t, (uint64_t)block_size);
}

bool kvl_sched_over_budget_ok(const kvl_request *r, const kvl_seq *q) {
    return r->policy.kind == KVL_KV_POLICY_SNAPKV && q->n_kv < r->n_prompt; /* n is 1 */
}

/* The chunk of n tokens sample q of r is about to take, cut so that a
 * snapkv prompt chunk that starts before the observation window and does
 * not reach the prompt's end stops at the window's start (its queries
 * would otherwise add mass as if they were the prompt's last). */
static int32_t snap_chunk(const kvl_request *r, const kvl_seq *q, int32_t n) {
    if (!kvl_sched_over_budget_ok(r, q))
        return n;
    int32_t from = r->n_prompt - kvl_kv_policy_obs_window(&r->policy);
    if (q->n_kv < from && q->n_kv + n < r->n_prompt && q->n_kv + n > from)
        return from - q->n_kv;
    return n;
}

/* Evict by r's policy before sample q grows by n positions: the cache
 * stays within the budget. n <= chunk_cap always fits (submit); n == 0
 * cuts a sequence reserved past its budget (snapkv's prompt). A snapkv
 * prompt grows past the budget: nothing is evicted while it is fed. */
static void policy_room(kvl_sched *s, kvl_request *r, kvl_seq *q, int32_t n) {
    if (!s->paged || !kvl_kv_policy_evicts(&r->policy) || (n > 0 && kvl_sched_over_budget_ok(r, q)))
        return;
    int32_t d = 0;
    kvl_error err;
    kvl_status st = kvl_kv_paged_make_room(s->paged, q->slot, n, &d, &err);
    KVL_ASSERT(st == KVL_OK);
    q->n_drop += d;
    r->n_evicted_tokens += d;
    r->n_evicted_blocks += d / s->block_size;
}

/* ---- swap in -------------------------------------------------------------- */

/* A swapped request comes back: its leading full blocks still cached in
 * the pool are attached (shared, not copied); the rest are reserved anew
 * and copied from the swap area. The last block is always copied (a
 * format's residual may cover it). */
static bool swap_in(kvl_sched *s, kvl_request *r) {
    if (s->n_free_slots < r->n_alive)
        return false;
    int32_t li = lead_of(r);
    kvl_seq *q = &r->seqs[li];
    /* its blocks and those of its next chunk: coming back only to be
     * preempted again in the same step would thrash */
    int32_t target = (!r->forked && q->n_kv < r->n_prompt) ? r->n_prompt : q->len;
    int32_t next =
        target - q->n_kv < s->p.max_batch_tokens ? target - q->n_kv : s->p.max_batch_tokens;
    uint32_t n_tier = 0;
    uint32_t n_hit = s->pc ? prefix_lookup(s, r, q, q->n_kv - 1, false, &n_tier) : 0;
    uint32_t n_hit_free = s->pc ? lookup_free_hits(s, n_hit) : 0;
    uint64_t need = ceil_div((uint64_t)(q->n_kv + next), (uint64_t)s->block_size) - n_hit;
    if (need + n_hit_free + watermark(s) > n_free_blocks(s)) {
        prefix_forget(q);
        return false;
    }
    for (int32_t i = 0; i < r->n_samples; i++)
        if (!r->seqs[i].done)
            r->seqs[i].slot = s->free_slots[--s->n_free_slots];
    slot_policy(s, r);
    double t0 = kvl_now();
    kvl_error err;
    if (n_hit)
        prefix_attach(s, r, q, n_hit, 0);
    int32_t hit = (int32_t)n_hit * s->block_size;
    kvl_status st = kvl_kv_cache_reserve(s->kv, q->slot, q->n_kv - hit, &err);
    KVL_ASSERT(st == KVL_OK);
    for (uint32_t j = n_hit; j < q->n_swap; j++)
        kvl_kv_paged_block_load(s->paged, q->slot, j, kvl_kv_swap_block(s->swap, q->swap_ids[j]));
    if (q->swap_res)
        kvl_kv_paged_residual_load(s->paged, q->slot, q->swap_res);
    s->c.swap_seconds += kvl_now() - t0;
    s->c.n_blocks_swapped_in += q->n_swap - n_hit;
    s->c.bytes_swapped_in += (size_t)(q->n_swap - n_hit) * kvl_kv_swap_block_bytes(s->swap);
    s->c.prefix_swapin_hit_blocks += n_hit;
    s->c.prefix_hit_free_blocks += n_hit_free;
    r->cached_again += hit;
    swap_put(s, q);
    move_to(s, r, KVL_REQ_RUNNING);
    return true;
}

/* ---- the step ------------------------------------------------------------- */

/* Tokens sample si of r would feed now (before the budget): up to the
 * prompt's end for the lead of unforked samples, else to len. */
static int32_t want_tokens(const kvl_request *r, int32_t si) {
    const kvl_seq *q = &r->seqs[si];
    int32_t target = (!r->forked && q->n_kv < r->n_prompt) ? r->n_prompt : q->len;
    if (kvl_sched_over_budget_ok(r, q)) /* snapkv's prompt: fed whole, then cut */
        return r->n_prompt - q->n_kv;
    int32_t w = target - q->n_kv;
    return r->chunk_cap > 0 && w > r->chunk_cap ? r->chunk_cap : w;
}

static void add_item(kvl_sched *s, kvl_request *r, int32_t si, int32_t n) {
    kvl_seq *q = &r->seqs[si];
    kvl_sched_plan *pl = &s->plan;
    kvl_sched_item *it = &pl->items[pl->n_items++];
    int32_t at = pl->batch.n_tokens;
    *it = (kvl_sched_item){.r = r, .si = si, .pos0 = q->n_kv, .n_tokens = n, .logit_row = -1};
    for (int32_t k = 0; k < n; k++) {
        s->tok[at + k] = q->hist[q->n_kv + k];
        s->seq[at + k] = q->slot;
        s->pos[at + k] = q->n_kv - q->n_drop + k; /* the place in the cache */
        s->want[at + k] = false;
    }
    bool unforked_lead = !r->forked;
    /* snapkv: the mass of chunks before the observation window is not the window's */
    if (s->paged && kvl_sched_over_budget_ok(r, q) &&
        q->n_kv <= r->n_prompt - kvl_kv_policy_obs_window(&r->policy))
        kvl_kv_paged_mass_reset(s->paged, q->slot);
    if (q->n_kv + n == q->len) { /* the chunk reaches the end: sample after it */
        s->want[at + n - 1] = true;
        it->logit_row = 0; /* numbered below */
    }
    if (unforked_lead && q->n_kv + n == r->n_prompt)
        it->fork_after = true;
    if (n == 1 && q->n_kv + 1 == q->len && q->n_gen > 0)
        pl->n_decode += 1;
    else
        pl->n_prefill += n;
    pl->batch.n_tokens += n;
    q->n_kv += n;
    r->ever_run = true;
}

/* Give running request r its tokens for this step; false when r itself was
 * preempted. budget is decreased by what was scheduled. */
static bool schedule_running(kvl_sched *s, kvl_request *r, int32_t *budget) {
    for (;;) {
        int32_t n = 0, left = *budget;
        for (int32_t i = 0; i < r->n_samples && left > 0; i++) {
            const kvl_seq *q = &r->seqs[i];
            if (q->done || q->slot < 0 || (!r->forked && i != lead_of(r)))
                continue;
            int32_t w = want_tokens(r, i);
            if (w <= 0)
                continue;
            if (w > left)
                w = left;
            w = snap_chunk(r, q, w);
            s->rs_seq[n] = i;
            s->rs_n[n] = w;
            left -= w;
            n++;
        }
        if (n == 0)
            return true;
        int32_t slots[KVL_MAX_SAMPLES];
        for (int32_t k = 0; k < n; k++) {
            slots[k] = r->seqs[s->rs_seq[k]].slot;
            policy_room(s, r, &r->seqs[s->rs_seq[k]], s->rs_n[k]);
        }
        kvl_error err;
        kvl_status st = kvl_kv_cache_reserve_batch(s->kv, n, slots, s->rs_n, &err);
        if (st == KVL_OK) {
            for (int32_t k = 0; k < n; k++)
                add_item(s, r, s->rs_seq[k], s->rs_n[k]);
            *budget = left;
            return true;
        }
        KVL_ASSERT(st == KVL_E_NO_KV);
        if (n == 1 && s->rs_n[0] > 1) {          /* a prefill chunk: take what fits */
            int32_t lo = 0, hi = s->rs_n[0] - 1; /* largest k <= hi whose blocks are free */
            while (lo < hi) {
                int32_t mid = lo + (hi - lo + 1) / 2;
                if (kvl_kv_cache_blocks_needed(s->kv, slots[0], mid) <= n_free_blocks(s))
                    lo = mid;
                else
                    hi = mid - 1;
            }
            lo = snap_chunk(r, &r->seqs[s->rs_seq[0]], lo);
            if (lo >= 1 && kvl_kv_cache_reserve(s->kv, slots[0], lo, &err) == KVL_OK) {
                add_item(s, r, s->rs_seq[0], lo);
                *budget -= lo;
                return true;
            }
        }
        kvl_request *v = victim_for(s, r);
        if (!v) {
            preempt(s, r);
            return false;
        }
        preempt(s, v);
    }
}

/* Count an admission's prefix hits (hit positions, n_tier of its blocks
 * from the tier) against r: a first admission's, or a re-admission's. */
static void count_hits(kvl_sched *s, kvl_request *r, int32_t target, int32_t hit, uint32_t n_tier,
                       uint32_t n_hit_free) {
    int64_t tier = (int64_t)n_tier * s->block_size;
    s->c.prefix_lookup_tokens += target;
    s->c.prefix_hit_free_blocks += n_hit_free;
    s->c.prefix_hit_tokens_tier += tier;
    if (r->ever_run) {
        s->c.prefix_hit_tokens_self += hit;
        r->cached_again += hit;
    } else {
        s->c.prefix_hit_tokens += hit;
        r->cached_tokens = hit;
        r->cached_tier = tier;
    }
    if (n_tier && s->tier_hook && r->session)
        s->tier_hook(s->tier_ctx, r->session, r->session_slot, 0, (int32_t)n_tier);
}

static bool admit(kvl_sched *s, kvl_request *r, int32_t *budget) {
    if (s->n_free_slots < r->n_alive || *budget <= 0)
        return false;
    int32_t li = lead_of(r);
    kvl_seq *q = &r->seqs[li];
    int32_t target = r->forked && !kvl_sched_over_budget_ok(r, q) ? q->len : r->n_prompt;
    /* the prefix cache: whole blocks, at least the target's last position
     * left to compute (its logits, or the fork point's); tier hits need a
     * fresh pool block each, like the blocks of the chunk */
    uint32_t n_tier = 0;
    bool evicts = kvl_kv_policy_evicts(&r->policy), pc = s->pc && !evicts; /* no prefix hits */
    uint32_t n_hit = pc ? prefix_lookup(s, r, q, target - 1, true, &n_tier) : 0;
    uint32_t n_hit_free = pc ? lookup_free_hits(s, n_hit) : 0, n_pool = n_hit - n_tier;
    int32_t hit = (int32_t)n_hit * s->block_size;
    int32_t chunk = target - hit < *budget ? target - hit : *budget;
    if (r->chunk_cap > 0 && chunk > r->chunk_cap && !kvl_sched_over_budget_ok(r, q))
        chunk = r->chunk_cap;
    chunk = snap_chunk(r, q, chunk);
    uint64_t need =
        s->paged ? ceil_div((uint64_t)(hit + chunk), (uint64_t)s->block_size) - n_pool : 0;
    if (r->n_preempt > 0 && s->paged) /* thrash guard: its whole history must fit */
        for (int32_t i = 0; i < r->n_samples; i++)
            if (!r->seqs[i].done) {
                uint64_t b = ceil_div((uint64_t)r->seqs[i].len + 1, (uint64_t)s->block_size);
                uint64_t cap = kvl_sched_policy_blocks(&r->policy, r->n_prompt, s->block_size);
                b = evicts && b > cap ? cap : b; /* its cache never holds more */
                b = b > n_pool ? b - n_pool : 0;
                need = b > need ? b : need;
            }
    if (need + n_hit_free + watermark(s) > n_free_blocks(s) || !policy_admits(s, r)) {
        prefix_forget(q);
        return false;
    }
    for (int32_t i = 0; i < r->n_samples; i++)
        if (!r->seqs[i].done)
            r->seqs[i].slot = s->free_slots[--s->n_free_slots];
    slot_policy(s, r);
    move_to(s, r, KVL_REQ_RUNNING);
    if (n_hit) {
        prefix_attach(s, r, q, n_hit, n_tier);
        q->n_kv = hit;
    }
    if (pc)
        count_hits(s, r, target, hit, n_tier, n_hit_free);
    if (r->to_recompute > 0) { /* what the cache did not give back is computed again */
        int64_t again = r->to_recompute > hit ? r->to_recompute - hit : 0;
        s->c.tokens_recomputed += again;
        r->recomputed += again;
        r->to_recompute = 0;
    }
    kvl_error err;
    kvl_status st = kvl_kv_cache_reserve(s->kv, q->slot, chunk, &err);
    KVL_ASSERT(st == KVL_OK);
    add_item(s, r, li, chunk);
    *budget -= chunk;
    return true;
}

void kvl_sched_schedule(kvl_sched *s, int32_t max_requests, kvl_sched_plan **out) {
    kvl_sched_plan *pl = &s->plan;
    *pl = (kvl_sched_plan){
        .items = s->items,
        .batch = {.tokens = s->tok, .seq = s->seq, .pos = s->pos, .logits = s->want}};
    int32_t budget = s->p.max_batch_tokens, n_req = 0;
    /* 1. swapped requests come back while they fit */
    for (kvl_request *r = s->lists[KVL_REQ_SWAPPED].head, *nx; r; r = nx) {
        nx = r->next;
        if (!swap_in(s, r))
            break;
    }
    /* 2. running requests, best first */
    for (kvl_request *r = s->lists[KVL_REQ_RUNNING].head, *nx; r && budget > 0; r = nx) {
        if (n_req >= max_requests)
            break;
        int32_t before = pl->n_items;
        bool kept = schedule_running(s, r, &budget);
        nx = kept ? r->next : NULL; /* r preempted itself: everything after it is worse */
        n_req += pl->n_items > before;
    }
    /* 3. waiting requests, best first, no overtaking (not even of a swapped
     * request that could not come back: it was running before them) */
    for (kvl_request *r = s->lists[KVL_REQ_SWAPPED].head ? NULL : s->lists[KVL_REQ_WAITING].head,
                     *nx;
         r && budget > 0; r = nx) {
        nx = r->next;
        if (n_req >= max_requests || !admit(s, r, &budget))
            break;
        n_req++;
    }
    int32_t row = 0;
    for (int32_t i = 0; i < pl->n_items; i++)
        if (pl->items[i].logit_row >= 0)
            pl->items[i].logit_row = row++;
    *out = pl;
}

void kvl_sched_after_run(kvl_sched *s, kvl_sched_plan *pl) {
    for (int32_t i = 0; i < pl->n_items; i++) {
        kvl_sched_item *it = &pl->items[i];
        kvl_request *r = it->r;
        if (r->state == KVL_REQ_RUNNING)
            prefix_register(s, r, &r->seqs[it->si]);
        if (r->state == KVL_REQ_RUNNING && it->pos0 < r->n_prompt &&
            it->pos0 + it->n_tokens == r->n_prompt) /* the prompt is in: cut it to the */
            policy_room(s, r, &r->seqs[it->si], 0); /* budget (snapkv; others: no-op) */
        if (!it->fork_after || r->state != KVL_REQ_RUNNING || r->forked)
            continue;
        kvl_seq *lead = &r->seqs[it->si];
        for (int32_t k = 0; k < r->n_samples; k++) {
            kvl_seq *q = &r->seqs[k];
            if (k == it->si || q->done)
                continue;
            kvl_error err;
            kvl_status st = kvl_kv_cache_fork(s->kv, lead->slot, q->slot, &err);
            KVL_ASSERT(st == KVL_OK);
            q->n_kv = lead->n_kv;
            q->n_hashed = lead->n_hashed;
            q->chain = lead->chain;
        }
        r->forked = true;
    }
}
