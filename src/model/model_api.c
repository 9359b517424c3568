/*
 * The public model surface (kvllm.h): facts about a loaded model, and text
 * <-> token ids as the engine sees them. Read-only on the model: safe from
 * any thread.
 */
#include "model/model.h"

#include <stdio.h>
#include <string.h>

void kvl_model_get_info(const kvl_model *m, kvl_model_info *o) {
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", m->name);
    o->container = m->format == KVL_MODEL_GGUF ? "gguf" : "llama2.c";
    o->weight_type = kvl_type_name(m->layers[0].wq.type);
    o->n_vocab = m->hp.n_vocab;
    o->dim = m->hp.dim;
    o->n_layers = m->hp.n_layers;
    o->n_heads = m->hp.n_heads;
    o->n_kv_heads = m->hp.n_kv_heads;
    o->head_dim = m->hp.head_dim;
    o->ffn_dim = m->hp.ffn_dim;
    o->ctx_len = m->hp.ctx_len;
    o->weight_bytes = m->weight_bytes;
    o->bos = kvl_tokenizer_bos(m->tok);
    o->eos = kvl_tokenizer_eos(m->tok);
}

kvl_status kvl_tokenize(const kvl_model *m, const char *text, size_t len, bool add_bos,
                        int32_t *out, size_t cap, size_t *n_out, kvl_error *err) {
    if (!text && len)
        return kvl_errorf(err, KVL_E_INVALID, "tokenize: text is NULL with len %zu", len);
    return kvl_tokenizer_encode(m->tok, text ? text : "", len, add_bos, out, cap, n_out, err);
}

kvl_status kvl_detokenize(const kvl_model *m, const int32_t *ids, size_t n, char *buf, size_t cap,
                          size_t *len_out, kvl_error *err) {
    int32_t nv = kvl_tokenizer_n_vocab(m->tok);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= nv)
            return kvl_errorf(err, KVL_E_INVALID, "detokenize: ids[%zu] = %d outside [0, %d)", i,
                              ids[i], nv);
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        size_t l;
        const char *p = kvl_tokenizer_piece(m->tok, i ? ids[i - 1] : -1, ids[i], &l);
        if (buf && l && total + l <= cap)
            memcpy(buf + total, p, l);
        total += l;
    }
    if (len_out)
        *len_out = total;
    if (buf && total < cap)
        buf[total] = '\0';
    if (total > cap)
        return kvl_errorf(err, KVL_E_LIMIT, "detokenize: %zu bytes do not fit in %zu", total, cap);
    return KVL_OK;
}
