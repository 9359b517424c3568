/*
 * The KV cache facade: routes every call to the paged store or to the
 * contiguous baseline, keeps the per-sequence lengths the contiguous store
 * does not track itself, and turns both stores' accounting into the one
 * public kvl_kv_stats. It owns no KV memory of its own and adds nothing to
 * the decode path but one indirect call.
 */
#include "kv/kv_cache.h"

#include "kv/kv_contig.h"
#include "kv/kv_paged.h"

#include <stdlib.h>

struct kvl_kv_cache {
    kvl_kv_cache_params p;
    kvl_hparams hp;
    kvl_kv_paged *paged;   /* layout paged */
    kvl_kv_contig *contig; /* layout contiguous */
    int32_t *len;          /* (max_seqs) contiguous: positions held per slot */
    kvl_kv_capacity cap;   /* paged: what the budget holds */
};

kvl_kv_cache_params kvl_kv_cache_defaults(void) {
    return (kvl_kv_cache_params){.layout = KVL_KV_LAYOUT_PAGED,
                                 .budget = 0,
                                 .block_size = 0,
                                 .max_seqs = 1,
                                 .max_ctx = 0,
                                 .k_fmt = KVL_KV_FMT_F32,
                                 .v_fmt = KVL_KV_FMT_F32};
}

static kvl_status check_params(const kvl_kv_cache_params *p, kvl_error *err) {
    if (p->layout != KVL_KV_LAYOUT_PAGED && p->layout != KVL_KV_LAYOUT_CONTIGUOUS)
        return kvl_errorf(err, KVL_E_INVALID, "kv cache: layout %d is not paged or contiguous",
                          (int)p->layout);
    if (p->max_seqs < 1 || p->max_seqs > KVL_KV_MAX_SEQS)
        return kvl_errorf(err, KVL_E_INVALID, "kv cache: max_seqs %d outside [1, %d]", p->max_seqs,
                          KVL_KV_MAX_SEQS);
    if (p->max_ctx < 1)
        return kvl_errorf(err, KVL_E_INVALID, "kv cache: max_ctx %d < 1", p->max_ctx);
    if (p->layout == KVL_KV_LAYOUT_PAGED &&
        (p->block_size < 0 || p->block_size > KVL_KV_MAX_BLOCK_SIZE))
        return kvl_errorf(err, KVL_E_INVALID, "kv cache: block_size %d outside [1, %d]",
                          p->block_size, KVL_KV_MAX_BLOCK_SIZE);
    if (!kvl_kv_format_get(p->k_fmt) || !kvl_kv_format_get(p->v_fmt))
        return kvl_errorf(err, KVL_E_INVALID, "kv cache: format id %d/%d out of range",
                          (int)p->k_fmt, (int)p->v_fmt);
    if (p->layout == KVL_KV_LAYOUT_CONTIGUOUS && p->metadata_only)
        return kvl_errorf(err, KVL_E_UNSUPPORTED,
                          "kv cache: metadata_only needs the paged layout (contiguous asked)");
    if (p->layout == KVL_KV_LAYOUT_CONTIGUOUS &&
        (p->k_fmt != KVL_KV_FMT_F32 || p->v_fmt != KVL_KV_FMT_F32))
        return kvl_errorf(err, KVL_E_UNSUPPORTED,
                          "kv cache: the contiguous layout stores f32 only (K %s, V %s asked); "
                          "use --kv-layout paged",
                          kvl_kv_format_get(p->k_fmt)->name, kvl_kv_format_get(p->v_fmt)->name);
    return KVL_OK;
}

static kvl_status plan_shape(const kvl_hparams *hp, kvl_model_shape *s) {
    memset(s, 0, sizeof *s);
    s->hp = *hp;
    return KVL_OK;
}

/* Contiguous store: f32 K and V of one position over all layers (the
 * shape limits keep this and its product with max_ctx far from overflow). */
static size_t contig_token_bytes(const kvl_hparams *hp) {
    return 2 * (size_t)hp->n_layers * (size_t)hp->n_kv_heads * (size_t)hp->head_dim * sizeof(float);
}

static int32_t block_size_of(const kvl_kv_cache_params *p) {
    return kvl_kv_block_size(p->block_size, p->k_fmt, p->v_fmt);
}

kvl_status kvl_kv_cache_default_budget(const kvl_hparams *hp, const kvl_kv_cache_params *p_in,
                                       size_t *out, kvl_error *err) {
    kvl_status st = check_params(p_in, err);
    if (st)
        return st;
    kvl_kv_cache_params q = *p_in;
    q.block_size = block_size_of(&q);
    const kvl_kv_cache_params *p = &q;
    kvl_model_shape s;
    plan_shape(hp, &s);
    if (p->layout == KVL_KV_LAYOUT_CONTIGUOUS) {
        size_t per_tok = contig_token_bytes(hp);
        size_t b;
        if (kvl_mul_overflow(per_tok, (size_t)p->max_ctx, &b) ||
            kvl_mul_overflow(b, (size_t)p->max_seqs, &b))
            return kvl_errorf(err, KVL_E_LIMIT, "kv cache: %d x %d positions overflow", p->max_seqs,
                              p->max_ctx);
        *out = b;
        return KVL_OK;
    }
    size_t block_bytes;
    if ((st = kvl_plan_kv_block_bytes(&s, p->k_fmt, p->v_fmt, p->block_size, &block_bytes, err)))
        return st;
    return kvl_plan_kv_bytes_for(block_bytes, p->block_size, (size_t)p->max_seqs,
                                 (size_t)p->max_ctx, out, err);
}

kvl_status kvl_kv_cache_init(const kvl_hparams *hp, const kvl_kv_cache_params *p,
                             kvl_kv_cache **out, kvl_error *err) {
    kvl_status st = check_params(p, err);
    if (st)
        return st;
    kvl_kv_cache_params q = *p;
    if (q.layout == KVL_KV_LAYOUT_PAGED)
        q.block_size = block_size_of(&q);
    if (q.budget == 0 && (st = kvl_kv_cache_default_budget(hp, &q, &q.budget, err)))
        return st;
    kvl_kv_cache *c = calloc(1, sizeof *c);
    if (!c)
        return kvl_errorf(err, KVL_E_NOMEM, "kv cache: out of memory");
    c->p = q;
    c->hp = *hp;
    if (q.layout == KVL_KV_LAYOUT_PAGED) {
        if ((st = kvl_kv_capacity_compute_fmt(hp, q.block_size, q.k_fmt, q.v_fmt, q.budget,
                                              q.max_ctx, &c->cap, err)))
            goto fail;
        kvl_kv_paged_params pp = {.budget = q.budget,
                                  .block_size = q.block_size,
                                  .max_seqs = q.max_seqs,
                                  .max_ctx = q.max_ctx,
                                  .k_fmt = q.k_fmt,
                                  .v_fmt = q.v_fmt,
                                  .metadata_only = q.metadata_only};
        if ((st = kvl_kv_paged_init(hp, &pp, &c->paged, err)))
            goto fail;
    } else {
        size_t seq_bytes = contig_token_bytes(hp) * (size_t)q.max_ctx;
        if (q.budget / seq_bytes < (size_t)q.max_seqs) {
            st = kvl_errorf(err, KVL_E_NO_KV,
                            "kv cache: contiguous layout: %d sequences of %d positions need %zu "
                            "bytes each (%zu in all) but the budget is %zu bytes (%zu sequences)",
                            q.max_seqs, q.max_ctx, seq_bytes, seq_bytes * (size_t)q.max_seqs,
                            q.budget, q.budget / seq_bytes);
            goto fail;
        }
        c->len = calloc((size_t)q.max_seqs, sizeof *c->len);
        if (!c->len) {
            st = kvl_errorf(err, KVL_E_NOMEM, "kv cache: out of memory");
            goto fail;
        }
        if ((st = kvl_kv_contig_init(hp, q.max_seqs, q.max_ctx, &c->contig, err)))
            goto fail;
    }
    *out = c;
    return KVL_OK;
fail:
    kvl_kv_cache_free(c);
    return st;
}

void kvl_kv_cache_free(kvl_kv_cache *c) {
    if (!c)
        return;
    kvl_kv_paged_free(c->paged);
    kvl_kv_contig_free(c->contig);
    free(c->len);
    free(c);
}

kvl_kv_iface kvl_kv_cache_iface(kvl_kv_cache *c) {
    return c->paged ? kvl_kv_paged_iface(c->paged) : kvl_kv_contig_iface(c->contig);
}

const kvl_kv_cache_params *kvl_kv_cache_params_of(const kvl_kv_cache *c) { return &c->p; }

static kvl_status check_seq(const kvl_kv_cache *c, int32_t seq, kvl_error *err) {
    if (seq < 0 || seq >= c->p.max_seqs)
        return kvl_errorf(err, KVL_E_INVALID, "kv cache: sequence %d outside [0, %d)", seq,
                          c->p.max_seqs);
    return KVL_OK;
}

kvl_status kvl_kv_cache_reserve_batch(kvl_kv_cache *c, int32_t n, const int32_t *seqs,
                                      const int32_t *n_new, kvl_error *err) {
    if (c->paged)
        return kvl_kv_paged_reserve_batch(c->paged, n, seqs, n_new, err);
    for (int32_t i = 0; i < n; i++) { /* check all, then grow */
        kvl_status st = check_seq(c, seqs[i], err);
        if (st)
            return st;
        if (n_new[i] < 0 || (int64_t)c->len[seqs[i]] + n_new[i] > c->p.max_ctx)
            return kvl_errorf(err, KVL_E_LIMIT,
                              "kv cache: sequence %d at %d positions cannot grow by %d past %d",
                              seqs[i], c->len[seqs[i]], n_new[i], c->p.max_ctx);
        for (int32_t j = 0; j < i; j++)
            if (seqs[j] == seqs[i])
                return kvl_errorf(err, KVL_E_INVALID, "kv cache: sequence %d twice in one batch",
                                  seqs[i]);
    }
    for (int32_t i = 0; i < n; i++)
        c->len[seqs[i]] += n_new[i];
    return KVL_OK;
}

kvl_status kvl_kv_cache_reserve(kvl_kv_cache *c, int32_t seq, int32_t n_new, kvl_error *err) {
    return kvl_kv_cache_reserve_batch(c, 1, &seq, &n_new, err);
}

kvl_status kvl_kv_cache_fork(kvl_kv_cache *c, int32_t src, int32_t dst, kvl_error *err) {
    if (c->paged)
        return kvl_kv_paged_fork(c->paged, src, dst, err);
    kvl_status st;
    if ((st = check_seq(c, src, err)) || (st = check_seq(c, dst, err)))
        return st;
    if (c->len[dst] != 0)
        return kvl_errorf(err, KVL_E_INVALID, "kv cache: fork target %d holds %d positions", dst,
                          c->len[dst]);
    if (src != dst && c->len[src] > 0 &&
        (st = kvl_kv_contig_copy(c->contig, src, dst, c->len[src], err)))
        return st;
    c->len[dst] = c->len[src];
    return KVL_OK;
}

kvl_status kvl_kv_cache_truncate(kvl_kv_cache *c, int32_t seq, int32_t n, kvl_error *err) {
    if (c->paged)
        return kvl_kv_paged_truncate(c->paged, seq, n, err);
    kvl_status st = check_seq(c, seq, err);
    if (st)
        return st;
    if (n < 0 || n > c->len[seq])
        return kvl_errorf(err, KVL_E_INVALID,
                          "kv cache: truncate sequence %d to %d outside [0, %d]", seq, n,
                          c->len[seq]);
    c->len[seq] = n;
    return KVL_OK;
}

kvl_status kvl_kv_cache_set_policy(kvl_kv_cache *c, int32_t seq, const kvl_kv_policy *p,
                                   kvl_error *err) {
    if (c->paged)
        return kvl_kv_paged_set_policy(c->paged, seq, p, err);
    kvl_status st = check_seq(c, seq, err);
    if (st == KVL_OK && p->kind != KVL_KV_POLICY_FULL)
        st = kvl_errorf(err, KVL_E_UNSUPPORTED,
                        "kv cache: policy %s needs the paged layout (blocks leave a table)",
                        kvl_kv_policy_str(p->kind) ? kvl_kv_policy_str(p->kind) : "unknown");
    return st;
}

kvl_status kvl_kv_cache_make_room(kvl_kv_cache *c, int32_t seq, int32_t n_new, int32_t *n_evicted,
                                  kvl_error *err) {
    if (c->paged)
        return kvl_kv_paged_make_room(c->paged, seq, n_new, n_evicted, err);
    if (n_evicted)
        *n_evicted = 0;
    return check_seq(c, seq, err);
}

void kvl_kv_cache_rope_divide(kvl_kv_cache *c, const void *div) {
    if (c->paged)
        kvl_kv_paged_rope_divide(c->paged, div);
}

kvl_status kvl_kv_cache_release(kvl_kv_cache *c, int32_t seq, kvl_error *err) {
    if (c->paged)
        return kvl_kv_paged_release(c->paged, seq, err);
    kvl_status st = check_seq(c, seq, err);
    if (st)
        return st;
    c->len[seq] = 0;
    return KVL_OK;
}

struct kvl_kv_paged *kvl_kv_cache_paged(kvl_kv_cache *c) {
    return c->paged;
}

uint32_t kvl_kv_cache_blocks_needed(const kvl_kv_cache *c, int32_t seq, int32_t n_new) {
    return c->paged ? kvl_kv_paged_blocks_needed(c->paged, seq, n_new) : 0;
}

int32_t kvl_kv_cache_len(const kvl_kv_cache *c, int32_t seq) {
    if (c->paged)
        return kvl_kv_paged_len(c->paged, seq);
    return (seq < 0 || seq >= c->p.max_seqs) ? -1 : c->len[seq];
}

void kvl_kv_cache_stats(const kvl_kv_cache *c, kvl_kv_stats *o) {
    memset(o, 0, sizeof *o);
    o->layout = c->p.layout;
    if (c->paged) {
        kvl_kv_paged_stats s;
        kvl_kv_paged_stats_get(c->paged, &s);
        o->block_size = c->p.block_size;
        o->bytes_per_token = c->cap.bytes_per_token;
        o->block_bytes = s.pool.block_bytes;
        o->n_blocks_total = s.pool.n_blocks_total;
        o->n_blocks_free = s.pool.n_blocks_free;
        o->n_blocks_used = s.pool.n_blocks_used;
        o->n_blocks_shared = s.pool.n_blocks_shared;
        o->bytes_total = s.pool.bytes_total;
        o->bytes_used = s.pool.bytes_used;
        o->bytes_shared = s.pool.bytes_shared;
        o->bytes_logical = s.bytes_logical;
        o->n_seqs = s.n_seqs_active;
        o->n_tokens = s.n_tokens;
        o->n_slots_reserved = s.pool.n_slots_used;
        o->n_slots_frag = s.pool.n_slots_frag;
        o->n_blocks_copied = s.n_blocks_copied;
        o->bytes_residual = s.residual_bytes;
        o->n_blocks_evicted = s.n_blocks_evicted;
        o->n_tokens_evicted = s.n_blocks_evicted * c->p.block_size;
    } else {
        size_t per_tok = kvl_kv_contig_bytes_per_token(c->contig);
        size_t seq_bytes = kvl_kv_contig_seq_bytes(c->contig);
        o->block_size = c->p.max_ctx;
        o->bytes_per_token = per_tok;
        o->block_bytes = seq_bytes;
        o->n_blocks_total = (uint32_t)c->p.max_seqs;
        for (int32_t s = 0; s < c->p.max_seqs; s++)
            if (c->len[s] > 0) {
                o->n_seqs++;
                o->n_tokens += c->len[s];
            }
        o->n_blocks_used = (uint32_t)o->n_seqs;
        o->n_blocks_free = o->n_blocks_total - o->n_blocks_used;
        o->bytes_total = kvl_kv_contig_bytes(c->contig);
        o->bytes_used = (size_t)o->n_seqs * seq_bytes;
        o->bytes_logical = o->bytes_used;
        o->n_slots_reserved = (int64_t)o->n_seqs * c->p.max_ctx;
        o->n_slots_frag = o->n_slots_reserved - o->n_tokens;
    }
    o->occupancy = o->bytes_total ? (double)o->bytes_used / (double)o->bytes_total : 0.0;
    o->utilization = o->n_slots_reserved ? (double)(o->n_slots_reserved - o->n_slots_frag) /
                                               (double)o->n_slots_reserved
                                         : 1.0;
}

void kvl_kv_cache_report(const kvl_kv_cache *c, FILE *f) {
    const kvl_kv_cache_params *p = &c->p;
    kvl_kv_stats s;
    kvl_kv_cache_stats(c, &s);
    if (c->paged) {
        fprintf(f,
                "kv cache: paged, K %s, V %s, %zu bytes per token, blocks of %d positions "
                "(%zu bytes)\n"
                "kv cache: budget %zu bytes -> %u blocks = %lld token positions; %lld "
                "sequence%s of the full %d-token context fit%s\n",
                kvl_kv_format_get(p->k_fmt)->name, kvl_kv_format_get(p->v_fmt)->name,
                c->cap.bytes_per_token, p->block_size, c->cap.block_bytes, p->budget,
                c->cap.n_blocks, (long long)c->cap.token_capacity, (long long)c->cap.full_ctx_seqs,
                c->cap.full_ctx_seqs == 1 ? "" : "s", p->max_ctx, "");
        if (s.bytes_residual)
            fprintf(f,
                    "kv cache: plus %zu bytes of full-precision residual (the newest partly "
                    "filled block of each of %d sequence slots)\n",
                    s.bytes_residual, p->max_seqs);
    } else {
        fprintf(f,
                "kv cache: contiguous, f32, %zu bytes per token, %d slots of %d positions "
                "(%zu bytes each, %zu in all)\n",
                s.bytes_per_token, p->max_seqs, p->max_ctx, s.block_bytes, s.bytes_total);
    }
}
