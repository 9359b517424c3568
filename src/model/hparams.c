/*
 * Hyperparameters: read from GGUF llama.* keys (the one reader, used by the
 * model loader and the planner) and checked, for every loader, to be within
 * kvllm's limits and consistent with each other, so that the forward pass
 * can size its buffers from them without overflow. Says nothing about
 * tensors beyond the vocabulary size; the loaders check every tensor's
 * shape against these values.
 */
#include "model/model.h"

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

kvl_status kvl_hparams_from_gguf(const kvl_gguf *g, kvl_hparams *out, kvl_error *err) {
    kvl_str arch;
    kvl_status st = kvl_gguf_get_str(g, "general.architecture", &arch, err);
    if (st)
        return st;
    if (!kvl_str_eq(arch, "llama"))
        return kvl_errorf(err, KVL_E_UNSUPPORTED,
                          "gguf: general.architecture '%.*s' is not supported (only 'llama')",
                          (int)(arch.len > 64 ? 64 : arch.len), arch.ptr);
    kvl_hparams hp = {0};
    if ((st = get_i64(g, "llama.embedding_length", true, 0, &hp.dim, err)) ||
        (st = get_i64(g, "llama.block_count", true, 0, &hp.n_layers, err)) ||
        (st = get_i64(g, "llama.attention.head_count", true, 0, &hp.n_heads, err)) ||
        (st = get_i64(g, "llama.attention.head_count_kv", false, hp.n_heads, &hp.n_kv_heads,
                      err)) ||
        (st = get_i64(g, "llama.feed_forward_length", true, 0, &hp.ffn_dim, err)) ||
        (st = get_i64(g, "llama.context_length", true, 0, &hp.ctx_len, err)) ||
        (st = get_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f, &hp.rms_eps, err)) ||
        (st = get_f32(g, "llama.rope.freq_base", 10000.0f, &hp.rope_base, err)))
        return st;
    if (hp.n_heads <= 0)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: llama.attention.head_count is 0");
    if ((st = get_i64(g, "llama.attention.key_length", false, hp.dim / hp.n_heads, &hp.head_dim,
                      err)) ||
        (st = get_i64(g, "llama.rope.dimension_count", false, hp.head_dim, &hp.rope_dim, err)))
        return st;
    const kvl_gguf_tensor *emb = kvl_gguf_find_tensor(g, "token_embd.weight");
    if (!emb)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: tensor 'token_embd.weight' is missing");
    hp.n_vocab = emb->ne[1];
    if ((st = kvl_hparams_validate(&hp, err)))
        return st;
    *out = hp;
    return KVL_OK;
}
