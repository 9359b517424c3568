/*
 * Model loading: tells GGUF from llama2.c by the magic, reads the
 * hyperparameters, checks every tensor's type and shape against them and
 * only then forms weight views into the read-only mapping. The weights are
 * never copied. A failed load frees everything it made and leaves *out as
 * it was.
 */
#include "model/model.h"

#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>

void kvl_model_free(kvl_model *m) {
    if (!m)
        return;
    kvl_tokenizer_free(m->tok);
    free(m->layers);
    kvl_gguf_free(m->gguf);
    kvl_unmap_file(&m->map);
    free(m);
}

/* Find a tensor, check its type is one kvllm computes with (F32 only when
 * f32_only) and that its shape is exactly (ne0, ne1). */
static kvl_status bind(const kvl_gguf *g, const char *name, int64_t ne0, int64_t ne1,
                       bool f32_only, bool required, kvl_weight *w, kvl_error *err) {
    const kvl_gguf_tensor *t = kvl_gguf_find_tensor(g, name);
    if (!t) {
        if (!required) {
            w->data = NULL;
            return KVL_OK;
        }
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: tensor '%s' is missing", name);
    }
    bool ok_type = t->type == KVL_TYPE_F32 ||
                   (!f32_only && (t->type == KVL_TYPE_F16 || t->type == KVL_TYPE_BF16 ||
                                  t->type == KVL_TYPE_Q8_0 || t->type == KVL_TYPE_Q4_0 ||
                                  t->type == KVL_TYPE_Q2_K || t->type == KVL_TYPE_Q4_K ||
                                  t->type == KVL_TYPE_Q5_K ||
                                  t->type == KVL_TYPE_Q6_K));
    if (!ok_type) {
        const char *tn = "?";
        size_t b, s;
        kvl_type_info(t->type, &b, &s, &tn);
        return kvl_errorf(err, KVL_E_UNSUPPORTED, "gguf: tensor '%s': type %s (%u) not supported%s",
                          name, tn, t->type, f32_only ? " (norm weights must be F32)" : "");
    }
    int64_t want1 = ne1 == 1 ? 1 : ne1;
    bool shape_ok = t->ne[0] == ne0 && t->ne[1] == want1 && t->ne[2] == 1 && t->ne[3] == 1 &&
                    (ne1 == 1 ? t->n_dims == 1 : t->n_dims <= 2);
    if (!shape_ok)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "gguf: tensor '%s': shape {%lld, %lld, %lld, %lld} but the "
                          "hyperparameters need {%lld, %lld}",
                          name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
                          (long long)t->ne[3], (long long)ne0, (long long)ne1);
    if (kvl_row_bytes((kvl_type)t->type, ne0) == 0)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: tensor '%s': row of %lld is not whole blocks",
                          name, (long long)ne0);
    w->data = t->data;
    w->type = (kvl_type)t->type;
    w->ne0 = ne0;
    w->ne1 = ne1;
    return KVL_OK;
}

kvl_status kvl_model_from_gguf(kvl_gguf *g, kvl_model **out, kvl_error *err) {
    kvl_hparams hp;
    kvl_status st = kvl_hparams_from_gguf(g, &hp, err);
    if (st)
        return st;

    kvl_model *m = calloc(1, sizeof *m);
    kvl_layer_weights *L = calloc((size_t)hp.n_layers, sizeof *L);
    if (!m || !L) {
        free(m);
        free(L);
        return kvl_errorf(err, KVL_E_NOMEM, "model: cannot allocate %lld layers",
                          (long long)hp.n_layers);
    }
    m->format = KVL_MODEL_GGUF;
    m->hp = hp;
    m->layers = L;
    int64_t qd = hp.n_heads * hp.head_dim, kvd = hp.n_kv_heads * hp.head_dim;
    if ((st = bind(g, "token_embd.weight", hp.dim, hp.n_vocab, false, true, &m->tok_embd, err)) ||
        (st = bind(g, "output_norm.weight", hp.dim, 1, true, true, &m->output_norm, err)) ||
        (st = bind(g, "output.weight", hp.dim, hp.n_vocab, false, false, &m->output, err)))
        goto fail;
    if (!m->output.data)
        m->output = m->tok_embd; /* tied classifier */
    for (int64_t l = 0; l < hp.n_layers; l++) {
        char nm[96];
#define B(field, suffix, n0, n1, f32)                                                      \
    snprintf(nm, sizeof nm, "blk.%lld." suffix, (long long)l);                             \
    if ((st = bind(g, nm, n0, n1, f32, true, &L[l].field, err)))                           \
        goto fail;
        B(attn_norm, "attn_norm.weight", hp.dim, 1, true)
        B(wq, "attn_q.weight", hp.dim, qd, false)
        B(wk, "attn_k.weight", hp.dim, kvd, false)
        B(wv, "attn_v.weight", hp.dim, kvd, false)
        B(wo, "attn_output.weight", qd, hp.dim, false)
        B(ffn_norm, "ffn_norm.weight", hp.dim, 1, true)
        B(w_gate, "ffn_gate.weight", hp.dim, hp.ffn_dim, false)
        B(w_down, "ffn_down.weight", hp.ffn_dim, hp.dim, false)
        B(w_up, "ffn_up.weight", hp.dim, hp.ffn_dim, false)
#undef B
    }
    if ((st = kvl_tokenizer_from_gguf(g, &m->tok, err)))
        goto fail;
    if (kvl_tokenizer_n_vocab(m->tok) != hp.n_vocab) {
        st = kvl_errorf(err, KVL_E_FORMAT,
                        "gguf: tokenizer.ggml.tokens has %d entries but token_embd.weight has "
                        "%lld rows",
                        kvl_tokenizer_n_vocab(m->tok), (long long)hp.n_vocab);
        goto fail;
    }
    for (uint64_t i = 0; i < g->n_tensors; i++)
        m->weight_bytes += g->tensors[i].nbytes;
    kvl_str name;
    kvl_error ignore;
    if (kvl_gguf_get_str(g, "general.name", &name, &ignore) == KVL_OK)
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.len > 63 ? 63 : name.len), name.ptr);
    else
        snprintf(m->name, sizeof m->name, "llama");
    *out = m;
    return KVL_OK;
fail:
    kvl_tokenizer_free(m->tok);
    free(L);
    free(m);
    return st;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* llama2.c checkpoints carry no tokenizer: use the given path, else a file
 * beside the checkpoint chosen by vocabulary size. */
static kvl_status find_llama2c_tokenizer(const char *model_path, int64_t n_vocab,
                                         const kvl_model_params *p, kvl_tokenizer **out,
                                         kvl_error *err) {
    if (p && p->tokenizer_path)
        return kvl_tokenizer_load_llama2c(p->tokenizer_path, (int32_t)n_vocab, out, err);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", model_path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[1] = '\0';
    else
        dir[0] = '\0';
    char cand[2][4200];
    snprintf(cand[0], sizeof cand[0], "%stok%lld.bin", dir, (long long)n_vocab);
    snprintf(cand[1], sizeof cand[1], "%stokenizer.bin", dir);
    for (int i = 0; i < 2; i++) {
        kvl_error e2;
        kvl_status st = kvl_tokenizer_load_llama2c(cand[i], (int32_t)n_vocab, out, &e2);
        if (st == KVL_OK)
            return KVL_OK;
        if (st != KVL_E_IO) {
            if (err)
                *err = e2;
            return st;
        }
    }
    return kvl_errorf(err, KVL_E_IO,
                      "%s: llama2.c checkpoint needs a tokenizer: none given and neither %s nor "
                      "%s exists",
                      model_path, cand[0], cand[1]);
}

kvl_status kvl_model_load(const char *path, const kvl_model_params *p, kvl_model **out,
                          kvl_error *err) {
    kvl_mapped_file mf;
    kvl_status st =
        kvl_load_file(path, p ? p->load : KVL_LOAD_AUTO, "loading model", &mf, err);
    if (st)
        return st;
    kvl_prefault_with_progress(&mf, "loading model");
    kvl_model *m = NULL;
    if (mf.size >= 4 && memcmp(mf.data, "GGUF", 4) == 0) {
        kvl_gguf *g = NULL;
        st = kvl_gguf_parse(mf.data, mf.size, &g, err);
        if (st) {
            kvl_unmap_file(&mf);
            return st;
        }
        g->map = mf; /* the gguf now owns the mapping */
        st = kvl_model_from_gguf(g, &m, err);
        if (st) {
            kvl_gguf_free(g);
            return st;
        }
        m->gguf = g;
    } else {
        st = kvl_llama2c_parse(mf.data, mf.size, &m, err);
        if (st) {
            kvl_unmap_file(&mf);
            return st;
        }
        m->map = mf;
        st = find_llama2c_tokenizer(path, m->hp.n_vocab, p, &m->tok, err);
        if (st) {
            kvl_model_free(m);
            return st;
        }
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        snprintf(m->name, sizeof m->name, "%s", base);
        if (has_suffix(m->name, ".bin"))
            m->name[strlen(m->name) - 4] = '\0';
    }
    *out = m;
    return KVL_OK;
}
