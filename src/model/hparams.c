/*
 * Hyperparameters: read from GGUF llama.* keys (the one reader, used by the
 * model loader and the planner) and checked, for every loader, to be within
 * kvllm's limits and consistent with each other, so that the forward pass
 * can size its buffers from them without overflow. Says nothing about
 * tensors beyond the vocabulary size; the loaders check every tensor's
 * shape against these values.
 */
#include "model/model.h"

#include <math.h>
#include <stdio.h>

static kvl_status range(kvl_error *err, const char *field, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
        return kvl_errorf(err, KVL_E_FORMAT, "hparams: %s %lld outside [%lld, %lld]", field,
                          (long long)v, (long long)lo, (long long)hi);
    return KVL_OK;
}

kvl_status kvl_hparams_validate(const kvl_hparams *hp, kvl_error *err) {
    kvl_status st;
    if ((st = range(err, "n_vocab", hp->n_vocab, 1, KVL_MAX_VOCAB)) ||
        (st = range(err, "dim", hp->dim, 1, KVL_MAX_DIM)) ||
        (st = range(err, "n_layers", hp->n_layers, 1, KVL_MAX_LAYERS)) ||
        (st = range(err, "n_heads", hp->n_heads, 1, KVL_MAX_HEADS)) ||
        (st = range(err, "n_kv_heads", hp->n_kv_heads, 1, hp->n_heads)) ||
        (st = range(err, "head_dim", hp->head_dim, 1, KVL_MAX_HEAD_DIM)) ||
        (st = range(err, "ffn_dim", hp->ffn_dim, 1, 4 * (int64_t)KVL_MAX_DIM)) ||
        (st = range(err, "ctx_len", hp->ctx_len, 1, KVL_MAX_CTX)) ||
        (st = range(err, "rope_dim", hp->rope_dim, 0, hp->head_dim)))
        return st;
    if (hp->n_heads % hp->n_kv_heads != 0)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "hparams: n_heads %lld is not a multiple of n_kv_heads %lld",
                          (long long)hp->n_heads, (long long)hp->n_kv_heads);
    if (hp->n_heads * hp->head_dim > 4 * (int64_t)KVL_MAX_DIM)
        return kvl_errorf(err, KVL_E_FORMAT, "hparams: n_heads*head_dim %lld > %lld",
                          (long long)(hp->n_heads * hp->head_dim), 4 * (long long)KVL_MAX_DIM);
    if (hp->rope_dim % 2 != 0)
        return kvl_errorf(err, KVL_E_FORMAT, "hparams: rope_dim %lld is odd",
                          (long long)hp->rope_dim);
    if (!(hp->rms_eps > 0.0f && hp->rms_eps < 1.0f))
        return kvl_errorf(err, KVL_E_FORMAT, "hparams: rms_eps %g outside (0, 1)",
                          (double)hp->rms_eps);
    if (!(hp->rope_base > 1.0f && hp->rope_base < 1e12f))
        return kvl_errorf(err, KVL_E_FORMAT, "hparams: rope_base %g outside (1, 1e12)",
                          (double)hp->rope_base);
    return KVL_OK;
}

static kvl_status get_i64(const kvl_gguf *g, const char *key, bool required, int64_t dflt,
                          int64_t *out, kvl_error *err) {
    if (!kvl_gguf_find_key(g, key)) {
        if (required)
            return kvl_errorf(err, KVL_E_FORMAT, "gguf: required key '%s' is missing", key);
        *out = dflt;
        return KVL_OK;
    }
    uint64_t v;
    kvl_status st = kvl_gguf_get_u64(g, key, &v, err);
    if (st)
        return st;
    if (v > (uint64_t)INT32_MAX)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s' value %llu > %d", key,
                          (unsigned long long)v, INT32_MAX);
    *out = (int64_t)v;
    return KVL_OK;
}

static kvl_status get_f32(const kvl_gguf *g, const char *key, float dflt, float *out,
                          kvl_error *err) {
    if (!kvl_gguf_find_key(g, key)) {
        *out = dflt;
        return KVL_OK;
    }
    double v;
    kvl_status st = kvl_gguf_get_f64(g, key, &v, err);
    if (st)
        return st;
    *out = (float)v;
    return KVL_OK;
}

/* The architectures, indexed by kvl_arch (model.h says what each column
 * means). Shapes come from the same <arch>.* keys for all of them. */
static const kvl_arch_info k_arch[KVL_ARCH_COUNT] = {
    /*                  name     computed neox   bias   qk_norm rope_freqs */
    [KVL_ARCH_LLAMA] = {"llama", true, false, false, false, true},
    [KVL_ARCH_OPT] = {"opt", false, false, true, false, false},
    [KVL_ARCH_QWEN2] = {"qwen2", true, true, true, false, false},
    [KVL_ARCH_QWEN3] = {"qwen3", true, true, false, true, false},
};

const kvl_arch_info *kvl_arch_get(kvl_arch a) {
    KVL_ASSERT(a >= 0 && a < KVL_ARCH_COUNT);
    return &k_arch[a];
}

/* Keys (after "<arch>.") that change the math in ways kvllm does not
 * implement; present with a value other than `neutral` they are refused.
 * NaN: refused whatever the value. */
static const struct {
    const char *suffix;
    double neutral;
    const char *what;
} k_refused[] = {
    {"attention.sliding_window", 0, "sliding-window attention"},
    {"attention.sliding_window_pattern", NAN, "sliding-window attention"},
    {"rope.dimension_sections", NAN, "multi-section (M-RoPE) rotary"},
    {"rope.scaling.attn_factor", 1, "rotary attention-factor scaling (YaRN)"},
    {"rope.scaling.yarn_log_multiplier", NAN, "YaRN rotary scaling"},
    {"rope.scaling.yarn_ext_factor", NAN, "YaRN rotary scaling"},
    {"rope.scaling.yarn_attn_factor", NAN, "YaRN rotary scaling"},
    {"rope.scaling.yarn_beta_fast", NAN, "YaRN rotary scaling"},
    {"rope.scaling.yarn_beta_slow", NAN, "YaRN rotary scaling"},
    {"attention.layer_norm_epsilon", NAN, "LayerNorm (kvllm has RMSNorm only)"},
    {"attention.clamp_kqv", NAN, "clamped Q/K/V"},
    {"attention.max_alibi_bias", 0, "ALiBi"},
    {"attention.causal", 1, "non-causal attention"},
    {"attention.scale", NAN, "a custom attention scale"},
    {"attn_logit_softcapping", NAN, "attention logit soft-capping"},
    {"final_logit_softcapping", NAN, "final logit soft-capping"},
    {"expert_count", 0, "mixture of experts"},
    {"embedding_scale", NAN, "embedding scaling"},
    {"residual_scale", NAN, "residual scaling"},
    {"logit_scale", NAN, "logit scaling"},
};

/* A key's value as a number for k_refused: numbers and bools as such,
 * anything else (strings, arrays) as NaN (never neutral). */
static double key_number(const kvl_gguf_kv *kv) {
    switch (kv->type) {
    case KVL_GGUF_UINT8:
    case KVL_GGUF_UINT16:
    case KVL_GGUF_UINT32:
    case KVL_GGUF_UINT64:
    case KVL_GGUF_BOOL: return (double)kv->v.u64;
    case KVL_GGUF_INT8:
    case KVL_GGUF_INT16:
    case KVL_GGUF_INT32:
    case KVL_GGUF_INT64: return (double)kv->v.i64;
    case KVL_GGUF_FLOAT32:
    case KVL_GGUF_FLOAT64: return kv->v.f64;
    default: return NAN;
    }
}

static kvl_status check_refused(const kvl_gguf *g, const char *arch, kvl_error *err) {
    char key[128];
    for (size_t i = 0; i < sizeof k_refused / sizeof k_refused[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, k_refused[i].suffix);
        const kvl_gguf_kv *kv = kvl_gguf_find_key(g, key);
        if (!kv)
            continue;
        double v = key_number(kv);
        if (v == k_refused[i].neutral)
            continue;
        if (isnan(v))
            return kvl_errorf(err, KVL_E_UNSUPPORTED,
                              "gguf: key '%s' (%s, type %s) asks for %s, which kvllm does not "
                              "implement",
                              key, kv->type == KVL_GGUF_ARRAY ? "an array" : "set",
                              kvl_gguf_vtype_name(kv->type), k_refused[i].what);
        return kvl_errorf(err, KVL_E_UNSUPPORTED,
                          "gguf: key '%s' = %g asks for %s, which kvllm does not implement", key, v,
                          k_refused[i].what);
    }
    /* rotary scaling: none or linear (a factor dividing positions) */
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    const kvl_gguf_kv *kv = kvl_gguf_find_key(g, key);
    if (kv) {
        if (kv->type != KVL_GGUF_STRING)
            return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s': type %s, expected STRING", key,
                              kvl_gguf_vtype_name(kv->type));
        if (!kvl_str_eq(kv->v.str, "none") && !kvl_str_eq(kv->v.str, "linear"))
            return kvl_errorf(err, KVL_E_UNSUPPORTED,
                              "gguf: key '%s' = '%.*s' is not supported (only 'none' and "
                              "'linear'; Llama 3.1's scaling comes as rope_freqs.weight)",
                              key, (int)(kv->v.str.len > 64 ? 64 : kv->v.str.len),
                              kv->v.str.ptr ? kv->v.str.ptr : "");
    }
    return KVL_OK;
}

kvl_status kvl_hparams_from_gguf(const kvl_gguf *g, kvl_hparams *out, kvl_error *err) {
    kvl_str arch;
    kvl_status st = kvl_gguf_get_str(g, "general.architecture", &arch, err);
    if (st)
        return st;
    kvl_hparams hp = {0};
    const kvl_arch_info *ai = NULL;
    for (int a = 0; a < KVL_ARCH_COUNT; a++)
        if (k_arch[a].computed && kvl_str_eq(arch, k_arch[a].name)) {
            hp.arch = (kvl_arch)a;
            ai = &k_arch[a];
        }
    if (!ai)
        return kvl_errorf(err, KVL_E_UNSUPPORTED,
                          "gguf: general.architecture '%.*s' is not supported (supported: llama, "
                          "qwen2, qwen3)",
                          (int)(arch.len > 64 ? 64 : arch.len), arch.ptr ? arch.ptr : "");
    if ((st = check_refused(g, ai->name, err)))
        return st;
    char k[13][96];
#define KEY(i, suffix) (snprintf(k[i], sizeof k[i], "%s." suffix, ai->name), k[i])
    if ((st = get_i64(g, KEY(0, "embedding_length"), true, 0, &hp.dim, err)) ||
        (st = get_i64(g, KEY(1, "block_count"), true, 0, &hp.n_layers, err)) ||
        (st = get_i64(g, KEY(2, "attention.head_count"), true, 0, &hp.n_heads, err)) ||
        (st = get_i64(g, KEY(3, "attention.head_count_kv"), false, hp.n_heads, &hp.n_kv_heads,
                      err)) ||
        (st = get_i64(g, KEY(4, "feed_forward_length"), true, 0, &hp.ffn_dim, err)) ||
        (st = get_i64(g, KEY(5, "context_length"), true, 0, &hp.ctx_len, err)) ||
        (st = get_f32(g, KEY(6, "attention.layer_norm_rms_epsilon"), 1e-5f, &hp.rms_eps, err)) ||
        (st = get_f32(g, KEY(7, "rope.freq_base"), 10000.0f, &hp.rope_base, err)) ||
        (st = get_f32(g, KEY(8, "rope.scale_linear"), 0.0f, &hp.rope_scale, err)) ||
        (st = get_f32(g, KEY(9, "rope.scaling.factor"), hp.rope_scale, &hp.rope_scale, err)))
        return st;
    if (hp.n_heads <= 0)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: %s is 0", k[2]);
    int64_t v_len;
    if ((st = get_i64(g, KEY(10, "attention.key_length"), false, hp.dim / hp.n_heads, &hp.head_dim,
                      err)) ||
        (st = get_i64(g, KEY(11, "attention.value_length"), false, hp.head_dim, &v_len, err)) ||
        (st = get_i64(g, KEY(12, "rope.dimension_count"), false, hp.head_dim, &hp.rope_dim, err)))
        return st;
#undef KEY
    if (v_len != hp.head_dim)
        return kvl_errorf(err, KVL_E_UNSUPPORTED,
                          "gguf: %s %lld differs from %s %lld (kvllm needs equal key and value "
                          "head sizes)",
                          k[11], (long long)v_len, k[10], (long long)hp.head_dim);
    if (hp.rope_scale != 0.0f && !(hp.rope_scale >= 1e-3f && hp.rope_scale <= 1e3f))
        return kvl_errorf(err, KVL_E_FORMAT,
                          "gguf: %s.rope.scaling.factor %g outside [0.001, 1000]", ai->name,
                          (double)hp.rope_scale);
    const kvl_gguf_tensor *emb = kvl_gguf_find_tensor(g, "token_embd.weight");
    if (!emb)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: tensor 'token_embd.weight' is missing");
    hp.n_vocab = emb->ne[1];
    if ((st = kvl_hparams_validate(&hp, err)))
        return st;
    *out = hp;
    return KVL_OK;
}
