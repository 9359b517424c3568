/*
 * Hyperparameter checks shared by every loader: each value within kvllm's
 * limits and consistent with the others, so that the forward pass can size
 * its buffers from them without overflow. Says nothing about tensors; the
 * loaders check every tensor's shape against these values.
 */
#include "model/model.h"

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
