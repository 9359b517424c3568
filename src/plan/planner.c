/*
 * planner.c: the capacity arithmetic of the memory planner: weight bytes of
 * a shape, KV bytes per block, capacity, and the reverse question (see
 * planner.h for the formulas and the contract the KV pool relies on). The
 * named shapes and devices are in catalog.c, the KV format table in
 * core/dtype.c.
 *
 * Invariants: every function is pure (no globals written, no I/O, no heap)
 * apart from kvl_plan_shape_from_gguf, which only reads the parsed file.
 * Every product or sum of sizes that comes from input goes through
 * kvl_mul_overflow / kvl_add_overflow and fails with KVL_E_LIMIT naming the
 * quantity; nothing here rounds a byte count down except the documented
 * floor(budget / block_bytes).
 *
 * Must not: print, exit, or assert on input; keep any state between calls.
 */
#include "plan/planner.h"

#include "model/mkmodel.h"
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* ---- shapes ------------------------------------------------------------ */

kvl_status kvl_plan_shape_validate(const kvl_model_shape *s, kvl_error *err) {
    const struct {
        const char *field;
        int64_t v, hi;
    } f[] = {
        {"n_layers", s->hp.n_layers, KVL_MAX_LAYERS},
        {"n_heads", s->hp.n_heads, KVL_MAX_HEADS},
        {"n_kv_heads", s->hp.n_kv_heads, KVL_MAX_HEADS},
        {"head_dim", s->hp.head_dim, KVL_MAX_HEAD_DIM},
        {"dim", s->hp.dim, KVL_MAX_DIM},
        {"ffn_dim", s->hp.ffn_dim, 16 * (int64_t)KVL_MAX_DIM},
        {"n_vocab", s->hp.n_vocab, KVL_MAX_VOCAB},
        {"ctx_len", s->hp.ctx_len, KVL_MAX_CTX},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        if (f[i].v < 1 || f[i].v > f[i].hi)
            return kvl_errorf(err, KVL_E_INVALID, "plan: shape '%s': %s %lld outside [1, %lld]",
                              s->name, f[i].field, (long long)f[i].v, (long long)f[i].hi);
    }
    if (s->arch != KVL_ARCH_LLAMA && s->arch != KVL_ARCH_OPT)
        return kvl_errorf(err, KVL_E_INVALID,
                          "plan: shape '%s': arch id %d is not llama (0) or opt (1)", s->name,
                          (int)s->arch);
    if (s->hp.n_heads % s->hp.n_kv_heads != 0)
        return kvl_errorf(err, KVL_E_INVALID,
                          "plan: shape '%s': n_heads %lld is not a multiple of n_kv_heads %lld",
                          s->name, (long long)s->hp.n_heads, (long long)s->hp.n_kv_heads);
    return KVL_OK;
}

/* ---- weights ----------------------------------------------------------- */

/* acc += a * b, with overflow reported through *bad. */
static void mac(size_t *acc, size_t a, size_t b, bool *bad) {
    size_t p;
    if (kvl_mul_overflow(a, b, &p) || kvl_add_overflow(*acc, p, acc))
        *bad = true;
}

/* The matrices of one shape as (rows, row length) pairs, plus the count of
 * f32 vector elements (norms, biases). */
typedef struct {
    size_t rows, cols, times; /* `times` copies of a (rows, cols) matrix */
} mat;

static int shape_mats(const kvl_model_shape *s, mat m[9], size_t *n_vec) {
    const kvl_hparams *hp = &s->hp;
    size_t L = (size_t)hp->n_layers, D = (size_t)hp->dim, q = (size_t)(hp->n_heads * hp->head_dim),
           kv = (size_t)(hp->n_kv_heads * hp->head_dim), F = (size_t)hp->ffn_dim,
           V = (size_t)hp->n_vocab;
    int n = 0;
    m[n++] = (mat){V, D, s->tied_embd ? 1 : 2}; /* token_embd (+ output) */
    m[n++] = (mat){q, D, L};                    /* wq */
    m[n++] = (mat){kv, D, 2 * L};               /* wk, wv */
    m[n++] = (mat){D, q, L};                    /* wo */
    if (s->arch == KVL_ARCH_OPT) {
        /* learned positions (OPT offsets them by 2), fc1, fc2; every
         * projection has a bias; two LayerNorms (weight and bias) per layer
         * and a final one */
        m[n++] = (mat){(size_t)hp->ctx_len + 2, D, 1};
        m[n++] = (mat){F, D, L}; /* fc1 */
        m[n++] = (mat){D, F, L}; /* fc2 */
        *n_vec = L * (q + 2 * kv + D + F + D + 4 * D) + 2 * D;
        return n;
    }
    m[n++] = (mat){F, D, 2 * L}; /* w_gate, w_up */
    m[n++] = (mat){D, F, L};     /* w_down */
    /* attn_norm + ffn_norm per layer, output_norm, q/k/v biases */
    *n_vec = 2 * L * D + D + (s->qkv_bias ? L * (q + 2 * kv) : 0);
    return n;
}

kvl_status kvl_plan_n_params(const kvl_model_shape *s, size_t *out, kvl_error *err) {
    kvl_status st = kvl_plan_shape_validate(s, err);
    if (st)
        return st;
    mat m[9];
    size_t n_vec, total = 0;
    bool bad = false;
    int n = shape_mats(s, m, &n_vec);
    for (int i = 0; i < n; i++) {
        size_t per;
        if (kvl_mul_overflow(m[i].rows, m[i].cols, &per))
            bad = true;
        else
            mac(&total, per, m[i].times, &bad);
    }
    mac(&total, n_vec, 1, &bad);
    if (bad)
        return kvl_errorf(err, KVL_E_LIMIT, "plan: shape '%s': parameter count overflows size_t",
                          s->name);
    *out = total;
    return KVL_OK;
}

kvl_status kvl_plan_weight_bytes(const kvl_model_shape *s, kvl_type wtype, size_t *out,
                                 kvl_error *err) {
    kvl_status st = kvl_plan_shape_validate(s, err);
    if (st)
        return st;
    size_t blck, bb;
    if (!kvl_type_computed(wtype) || !kvl_type_info((uint32_t)wtype, &blck, &bb, NULL))
        return kvl_errorf(err, KVL_E_INVALID, "plan: weight type id %d is not one of %s",
                          (int)wtype, kvl_type_names());
    mat m[9];
    size_t n_vec, total = 0;
    bool bad = false;
    int n = shape_mats(s, m, &n_vec);
    for (int i = 0; i < n; i++) {
        size_t row = (m[i].cols + blck - 1) / blck * bb, per;
        if (kvl_mul_overflow(m[i].rows, row, &per))
            bad = true;
        else
            mac(&total, per, m[i].times, &bad);
    }
    mac(&total, n_vec, 4, &bad);
    if (bad)
        return kvl_errorf(err, KVL_E_LIMIT, "plan: shape '%s': weight bytes overflow size_t",
                          s->name);
    *out = total;
    return KVL_OK;
}

bool kvl_plan_parse_weights(const char *s, kvl_type *t, bool *k_m) {
    size_t n = strlen(s);
    char base[16];
    *k_m = n > 2 && n < sizeof base && !strcasecmp(s + n - 2, "_m");
    snprintf(base, sizeof base, "%.*s", (int)(*k_m ? n - 2 : n), s);
    if (!kvl_type_parse(base, t))
        return false;
    return !*k_m || *t == KVL_TYPE_Q4_K || *t == KVL_TYPE_Q5_K;
}

/* Bytes of rows x cols stored as t; false on overflow. */
static bool mat_bytes(kvl_type t, size_t rows, size_t cols, size_t *out) {
    size_t blck = 1, bb = 4;
    kvl_type_info((uint32_t)t, &blck, &bb, NULL);
    return !kvl_mul_overflow(rows, (cols + blck - 1) / blck * bb, out);
}

kvl_status kvl_plan_weight_bytes_mix(const kvl_model_shape *s, kvl_type wtype, bool k_m,
                                     size_t *out, kvl_error *err) {
    if (!k_m)
        return kvl_plan_weight_bytes(s, wtype, out, err);
    kvl_status st = kvl_plan_shape_validate(s, err);
    if (st)
        return st;
    if ((wtype != KVL_TYPE_Q4_K && wtype != KVL_TYPE_Q5_K) || s->arch == KVL_ARCH_OPT)
        return kvl_errorf(err, KVL_E_INVALID,
                          "plan: the _k_m mix is of q4_k or q5_k weights of a llama-like shape "
                          "(not %s, shape '%s')",
                          kvl_type_name(wtype), s->name);
    const kvl_mkmodel_spec spec = {.shape = *s, .type = wtype, .k_m = true};
    const kvl_hparams *hp = &s->hp;
    size_t D = (size_t)hp->dim, q = (size_t)(hp->n_heads * hp->head_dim),
           kv = (size_t)(hp->n_kv_heads * hp->head_dim), F = (size_t)hp->ffn_dim,
           V = (size_t)hp->n_vocab, L = (size_t)hp->n_layers;
    /* one layer's matrices: role, rows, columns (ne0) */
    const struct {
        kvl_mkmodel_role role;
        size_t rows, cols;
    } mats[] = {
        {KVL_MK_OTHER, q, D}, {KVL_MK_OTHER, kv, D}, {KVL_MK_ATTN_V, kv, D},  {KVL_MK_OTHER, D, q},
        {KVL_MK_OTHER, F, D}, {KVL_MK_OTHER, F, D},  {KVL_MK_FFN_DOWN, D, F},
    };
    size_t total = 0, b;
    bool bad =
        !mat_bytes(kvl_mkmodel_tensor_type(&spec, KVL_MK_TOKEN_EMBD, 0, (int64_t)D), V, D, &b);
    mac(&total, b, 1, &bad);
    if (!s->tied_embd) {
        bad |= !mat_bytes(kvl_mkmodel_tensor_type(&spec, KVL_MK_OUTPUT, 0, (int64_t)D), V, D, &b);
        mac(&total, b, 1, &bad);
    }
    for (size_t l = 0; l < L && !bad; l++)
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            kvl_type t =
                kvl_mkmodel_tensor_type(&spec, mats[i].role, (int64_t)l, (int64_t)mats[i].cols);
            bad |= !mat_bytes(t, mats[i].rows, mats[i].cols, &b);
            mac(&total, b, 1, &bad);
        }
    size_t n_vec = 2 * L * D + D + (s->qkv_bias ? L * (q + 2 * kv) : 0);
    mac(&total, n_vec, 4, &bad);
    if (bad)
        return kvl_errorf(err, KVL_E_LIMIT, "plan: shape '%s': weight bytes overflow size_t",
                          s->name);
    *out = total;
    return KVL_OK;
}

/* ---- GGUF shapes ------------------------------------------------------- */

kvl_status kvl_plan_shape_from_gguf(const kvl_gguf *g, kvl_model_shape *out, size_t *weight_bytes,
                                    kvl_error *err) {
    kvl_model_shape s = *out;
    kvl_hparams hp;
    kvl_status st = kvl_hparams_from_gguf(g, &hp, err);
    if (st)
        return st;
    s.hp = hp;
    s.arch = KVL_ARCH_LLAMA;
    kvl_str gname;
    const kvl_gguf_kv *nk = kvl_gguf_find_key(g, "general.name");
    if (nk && nk->type == KVL_GGUF_STRING &&
        kvl_gguf_get_str(g, "general.name", &gname, NULL) == KVL_OK && gname.len > 0) {
        size_t n = gname.len < sizeof s.name - 1 ? (size_t)gname.len : sizeof s.name - 1;
        memcpy(s.name, gname.ptr, n);
        s.name[n] = 0;
    }
    s.tied_embd = kvl_gguf_find_tensor(g, "output.weight") == NULL;
    s.qkv_bias = kvl_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    s.source = NULL;
    if ((st = kvl_plan_shape_validate(&s, err)))
        return st;
    size_t total = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (kvl_add_overflow(total, g->tensors[i].nbytes, &total))
            return kvl_errorf(err, KVL_E_FORMAT, "plan: gguf: tensor bytes overflow size_t");
    *out = s;
    *weight_bytes = total;
    return KVL_OK;
}

/* ---- KV bytes and capacity --------------------------------------------- */

kvl_status kvl_plan_kv_head_block_bytes(kvl_kv_format f, kvl_kv_role r, int64_t head_dim,
                                        int block_size, size_t *out, kvl_error *err) {
    const kvl_kv_format_info *fi = kvl_kv_format_get(f);
    if (!fi)
        return kvl_errorf(err, KVL_E_INVALID, "plan: KV format id %d outside [0, %d)", (int)f,
                          KVL_KV_FMT_COUNT);
    if (r != KVL_KV_ROLE_K && r != KVL_KV_ROLE_V)
        return kvl_errorf(err, KVL_E_INVALID, "plan: KV role %d is neither K (0) nor V (1)",
                          (int)r);
    if (block_size < 1 || block_size > KVL_MAX_BLOCK_SIZE)
        return kvl_errorf(err, KVL_E_INVALID, "plan: block_size %d outside [1, %d]", block_size,
                          KVL_MAX_BLOCK_SIZE);
    if (head_dim < 1 || head_dim > KVL_MAX_HEAD_DIM)
        return kvl_errorf(err, KVL_E_INVALID, "plan: head_dim %lld outside [1, %d]",
                          (long long)head_dim, KVL_MAX_HEAD_DIM);
    /* both bounded above, so no overflow: 4096 * 1024 * 32 bits */
    size_t B = (size_t)block_size, D = (size_t)head_dim;
    const kvl_kv_overhead *o = &fi->ovh[r];
    *out = (B * D * fi->elem_bits + 7) / 8 + o->head_block + B * o->token + D * o->channel;
    return KVL_OK;
}

kvl_status kvl_plan_kv_block_bytes(const kvl_model_shape *s, kvl_kv_format k, kvl_kv_format v,
                                   int block_size, size_t *out, kvl_error *err) {
    kvl_status st = kvl_plan_shape_validate(s, err);
    size_t hk, hv;
    if (st ||
        (st = kvl_plan_kv_head_block_bytes(k, KVL_KV_ROLE_K, s->hp.head_dim, block_size, &hk,
                                           err)) ||
        (st = kvl_plan_kv_head_block_bytes(v, KVL_KV_ROLE_V, s->hp.head_dim, block_size, &hv, err)))
        return st;
    size_t per_head = hk + hv, r;
    if (kvl_mul_overflow(per_head, (size_t)s->hp.n_kv_heads, &r) ||
        kvl_mul_overflow(r, (size_t)s->hp.n_layers, &r))
        return kvl_errorf(err, KVL_E_LIMIT, "plan: shape '%s': KV block bytes overflow size_t",
                          s->name);
    *out = r;
    return KVL_OK;
}

kvl_status kvl_plan_kv_token_bytes(const kvl_model_shape *s, kvl_kv_format k, kvl_kv_format v,
                                   int block_size, double *out, kvl_error *err) {
    size_t bb;
    kvl_status st = kvl_plan_kv_block_bytes(s, k, v, block_size, &bb, err);
    if (st)
        return st;
    *out = (double)bb / (double)block_size;
    return KVL_OK;
}

size_t kvl_plan_blocks_for_tokens(size_t n_tokens, int block_size) {
    KVL_ASSERT(block_size >= 1);
    size_t B = (size_t)block_size;
    return n_tokens / B + (n_tokens % B != 0);
}

kvl_status kvl_plan_capacity_for(const kvl_model_shape *s, kvl_kv_format k, kvl_kv_format v,
                                 int block_size, size_t kv_budget, kvl_plan_capacity *out,
                                 kvl_error *err) {
    size_t bb;
    kvl_status st = kvl_plan_kv_block_bytes(s, k, v, block_size, &bb, err);
    if (st)
        return st;
    kvl_plan_capacity c = {.block_size = block_size, .block_bytes = bb, .kv_budget = kv_budget};
    c.n_blocks = kv_budget / bb;
    /* n_blocks <= budget / 1 and block_size <= 4096: check anyway */
    if (kvl_mul_overflow(c.n_blocks, (size_t)block_size, &c.n_tokens))
        return kvl_errorf(err, KVL_E_LIMIT, "plan: %zu blocks x %d tokens overflows size_t",
                          c.n_blocks, block_size);
    *out = c;
    return KVL_OK;
}

size_t kvl_plan_max_seqs(const kvl_plan_capacity *c, size_t context) {
    size_t per = kvl_plan_blocks_for_tokens(context ? context : 1, c->block_size);
    return c->n_blocks / per;
}

size_t kvl_plan_max_context(const kvl_plan_capacity *c, size_t n_seqs) {
    if (n_seqs == 0)
        return 0;
    return c->n_blocks / n_seqs * (size_t)c->block_size;
}

kvl_status kvl_plan_kv_bytes_for(size_t block_bytes, int block_size, size_t n_seqs, size_t context,
                                 size_t *out, kvl_error *err) {
    if (block_size < 1 || block_size > KVL_MAX_BLOCK_SIZE)
        return kvl_errorf(err, KVL_E_INVALID, "plan: block_size %d outside [1, %d]", block_size,
                          KVL_MAX_BLOCK_SIZE);
    size_t r;
    if (kvl_mul_overflow(kvl_plan_blocks_for_tokens(context, block_size), n_seqs, &r) ||
        kvl_mul_overflow(r, block_bytes, &r))
        return kvl_errorf(err, KVL_E_LIMIT,
                          "plan: %zu sequences x %zu tokens: KV bytes overflow size_t", n_seqs,
                          context);
    *out = r;
    return KVL_OK;
}

/* ---- a whole plan ------------------------------------------------------ */

size_t kvl_plan_device_reserve(const kvl_plan_request *r, size_t bytes) {
    double f = floor((double)bytes * r->reserve_frac);
    size_t rf = f <= 0 ? 0 : f >= (double)bytes ? bytes : (size_t)f;
    size_t t;
    if (kvl_add_overflow(rf, r->reserve_bytes, &t))
        return SIZE_MAX;
    return t;
}

kvl_status kvl_plan_request_validate(const kvl_plan_request *r, kvl_error *err) {
    kvl_status st = kvl_plan_shape_validate(&r->shape, err);
    if (st)
        return st;
    if (!kvl_kv_format_get(r->k_fmt) || !kvl_kv_format_get(r->v_fmt))
        return kvl_errorf(err, KVL_E_INVALID, "plan: KV format ids %d/%d outside [0, %d)",
                          (int)r->k_fmt, (int)r->v_fmt, KVL_KV_FMT_COUNT);
    if (r->block_size < 1 || r->block_size > KVL_MAX_BLOCK_SIZE)
        return kvl_errorf(err, KVL_E_INVALID, "plan: block_size %d outside [1, %d]", r->block_size,
                          KVL_MAX_BLOCK_SIZE);
    if (r->n_devices < 1 || r->n_devices > KVL_PLAN_MAX_DEVICES)
        return kvl_errorf(err, KVL_E_INVALID, "plan: %d devices outside [1, %d]", r->n_devices,
                          KVL_PLAN_MAX_DEVICES);
    if (!(r->reserve_frac >= 0.0 && r->reserve_frac < 1.0))
        return kvl_errorf(err, KVL_E_INVALID, "plan: reserve fraction %g outside [0, 1)",
                          r->reserve_frac);
    size_t total = 0;
    for (int i = 0; i < r->n_devices; i++) {
        size_t b = r->dev_bytes[i];
        if (b == 0)
            return kvl_errorf(err, KVL_E_INVALID, "plan: device %d has 0 bytes of memory", i);
        size_t res = kvl_plan_device_reserve(r, b);
        if (res >= b)
            return kvl_errorf(err, KVL_E_INVALID,
                              "plan: reserve %zu B >= device %d memory %zu B: nothing left", res, i,
                              b);
        if (kvl_add_overflow(total, b, &total))
            return kvl_errorf(err, KVL_E_LIMIT, "plan: total device memory overflows size_t");
    }
    return KVL_OK;
}

kvl_status kvl_plan_compute(const kvl_plan_request *r, kvl_plan_result *out, kvl_error *err) {
    kvl_status st = kvl_plan_request_validate(r, err);
    if (st)
        return st;
    kvl_plan_result res = {0};
    for (int i = 0; i < r->n_devices; i++) {
        res.mem_total += r->dev_bytes[i]; /* checked in validate */
        res.reserve_total += kvl_plan_device_reserve(r, r->dev_bytes[i]);
    }
    res.usable = res.mem_total - res.reserve_total;
    res.weights_fit = r->weight_bytes <= res.usable;
    res.kv_budget = res.weights_fit ? res.usable - r->weight_bytes : 0;
    st = kvl_plan_capacity_for(&r->shape, r->k_fmt, r->v_fmt, r->block_size, res.kv_budget,
                               &res.cap, err);
    if (st)
        return st;
    *out = res;
    return KVL_OK;
}

kvl_status kvl_plan_need_for(const kvl_plan_request *r, size_t n_seqs, size_t context,
                             kvl_plan_need *out, kvl_error *err) {
    kvl_plan_result res;
    kvl_status st = kvl_plan_compute(r, &res, err);
    if (st)
        return st;
    kvl_plan_need n = {.n_seqs = n_seqs, .context = context};
    if ((st = kvl_plan_kv_bytes_for(res.cap.block_bytes, r->block_size, n_seqs, context,
                                    &n.kv_bytes, err)))
        return st;
    size_t wk;
    if (kvl_add_overflow(r->weight_bytes, n.kv_bytes, &wk) ||
        kvl_add_overflow(wk, res.reserve_total, &n.total_bytes))
        return kvl_errorf(err, KVL_E_LIMIT, "plan: weights + KV + reserve overflow size_t");
    n.fits = wk <= res.usable;
    n.short_by = n.fits ? 0 : wk - res.usable;
    n.max_seqs = kvl_plan_max_seqs(&res.cap, context);
    n.max_context = kvl_plan_max_context(&res.cap, n_seqs);
    /* devices of the smallest kind given, each keeping its own reserve */
    size_t dmin = r->dev_bytes[0];
    for (int i = 1; i < r->n_devices; i++)
        if (r->dev_bytes[i] < dmin)
            dmin = r->dev_bytes[i];
    size_t use = dmin - kvl_plan_device_reserve(r, dmin); /* > 0 by validate */
    size_t nd = wk / use + (wk % use != 0);
    if (nd == 0)
        nd = 1;
    n.devices_needed = nd > KVL_PLAN_MAX_DEVICES ? -1 : (int)nd;
    *out = n;
    return KVL_OK;
}

void kvl_plan_format_ladder(int i, kvl_kv_format *k, kvl_kv_format *v) {
    static const kvl_kv_format lk[KVL_PLAN_N_LADDER] = {
        KVL_KV_FMT_F16, KVL_KV_FMT_INT8, KVL_KV_FMT_FP8_E4M3, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4};
    static const kvl_kv_format lv[KVL_PLAN_N_LADDER] = {
        KVL_KV_FMT_F16, KVL_KV_FMT_INT8, KVL_KV_FMT_FP8_E4M3, KVL_KV_FMT_INT8, KVL_KV_FMT_INT4};
    KVL_ASSERT(i >= 0 && i < KVL_PLAN_N_LADDER);
    *k = lk[i];
    *v = lv[i];
}

bool kvl_plan_suggest_format(const kvl_plan_request *r, size_t n_seqs, size_t context,
                             kvl_kv_format *k, kvl_kv_format *v) {
    size_t own;
    if (kvl_plan_kv_block_bytes(&r->shape, r->k_fmt, r->v_fmt, r->block_size, &own, NULL))
        return false;
    for (int i = 0; i < KVL_PLAN_N_LADDER; i++) {
        kvl_plan_request q = *r;
        kvl_plan_format_ladder(i, &q.k_fmt, &q.v_fmt);
        size_t bb;
        kvl_plan_need n;
        if (kvl_plan_kv_block_bytes(&q.shape, q.k_fmt, q.v_fmt, q.block_size, &bb, NULL) ||
            bb >= own || kvl_plan_need_for(&q, n_seqs, context, &n, NULL))
            continue;
        if (n.fits) {
            *k = q.k_fmt;
            *v = q.v_fmt;
            return true;
        }
    }
    return false;
}

/* ---- formatting -------------------------------------------------------- */

const char *kvl_plan_fmt_int(size_t v, char *buf, size_t n) {
    char tmp[32];
    int len = snprintf(tmp, sizeof tmp, "%zu", v), o = 0;
    char out[48];
    for (int i = 0; i < len; i++) {
        if (i > 0 && (len - i) % 3 == 0)
            out[o++] = ',';
        out[o++] = tmp[i];
    }
    out[o] = 0;
    snprintf(buf, n, "%s", out);
    return buf;
}

const char *kvl_plan_fmt_gib(size_t v, char *buf, size_t n) {
    snprintf(buf, n, "%.2f GiB", (double)v / 1073741824.0);
    return buf;
}
