/*
 * Model loading: tells GGUF from llama2.c by the magic, reads the
 * hyperparameters, checks every tensor's type and shape against them and
 * only then forms weight views into the read-only mapping. The weights are
 * never copied. A failed load frees everything it made and leaves *out as
 * it was.
 */
#include "model/model.h"

#include "kernels/kernels.h"
#include "model/mkmodel.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

void kvl_model_free(kvl_model *m) {
    if (!m)
        return;
    kvl_tokenizer_free(m->tok);
    for (size_t i = 0; i < m->n_owned; i++)
        free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    kvl_gguf_free(m->gguf);
    kvl_unmap_file(&m->map);
    free(m);
}

/* Binding state: which of the file's tensors the architecture uses. */
typedef struct binder {
    const kvl_gguf *g;
    bool *used;   /* (g->n_tensors) */
    kvl_model *m; /* owns the F32 copies of 16-bit norms */
} binder;

/* A norm or bias stored as F16 or BF16 (llama.cpp accepts them): an F32
 * copy owned by the model, since the forward pass reads these as F32. */
static kvl_status widen_to_f32(binder *bd, const char *name, kvl_weight *w, kvl_error *err) {
    size_t n = (size_t)(w->ne0 * w->ne1);
    float *buf = malloc(n * sizeof *buf);
    float **list = realloc(bd->m->owned, (bd->m->n_owned + 1) * sizeof *list);
    if (list)
        bd->m->owned = list;
    if (!buf || !list) {
        free(buf);
        return kvl_errorf(err, KVL_E_NOMEM, "gguf: tensor '%s': no memory for an F32 copy", name);
    }
    kvl_dequantize_row(w->type, w->data, buf, (int64_t)n);
    list[bd->m->n_owned++] = buf;
    w->data = buf;
    w->type = KVL_TYPE_F32;
    return KVL_OK;
}

/* Find a tensor, check its type is one kvllm computes with (F32 only when
 * f32_only) and that its extents are exactly (ne0, ne1) (trailing 1s are
 * extents too: {64, 1} is a vector of 64, as llama.cpp reads it). */
static kvl_status bind(binder *bd, const char *name, int64_t ne0, int64_t ne1, bool f32_only,
                       bool required, kvl_weight *w, kvl_error *err) {
    const kvl_gguf_tensor *t = kvl_gguf_find_tensor(bd->g, name);
    if (!t) {
        if (!required) {
            w->data = NULL;
            return KVL_OK;
        }
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: tensor '%s' is missing", name);
    }
    bd->used[t - bd->g->tensors] = true;
    bool wide16 = t->type == KVL_TYPE_F16 || t->type == KVL_TYPE_BF16;
    bool ok_type = t->type == KVL_TYPE_F32 || (f32_only && wide16) ||
                   (!f32_only && kvl_type_computed((kvl_type)t->type));
    if (!ok_type) {
        const char *tn = "?";
        size_t b, s;
        kvl_type_info(t->type, &b, &s, &tn);
        return kvl_errorf(err, KVL_E_UNSUPPORTED, "gguf: tensor '%s': type %s (%u) not supported%s",
                          name, tn, t->type,
                          f32_only ? " (norms and biases: F32, F16 or BF16)" : "");
    }
    if (t->ne[0] != ne0 || t->ne[1] != ne1 || t->ne[2] != 1 || t->ne[3] != 1)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "gguf: tensor '%s': extents {%lld, %lld, %lld, %lld} but the "
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
    return f32_only && wide16 ? widen_to_f32(bd, name, w, err) : KVL_OK;
}

/* Bind one block's tensors; which optional ones exist is the
 * architecture's row (kvl_arch_info). */
static kvl_status bind_layer(binder *bd, const kvl_hparams *hp, int64_t l, kvl_layer_weights *L,
                             kvl_error *err) {
    const kvl_arch_info *ai = kvl_arch_get(hp->arch);
    int64_t qd = hp->n_heads * hp->head_dim, kvd = hp->n_kv_heads * hp->head_dim;
    char nm[96];
    kvl_status st;
#define B(field, suffix, n0, n1, f32)                                                              \
    snprintf(nm, sizeof nm, "blk.%lld." suffix, (long long)l);                                     \
    if ((st = bind(bd, nm, n0, n1, f32, true, &L->field, err)))                                    \
        return st;
    B(attn_norm, "attn_norm.weight", hp->dim, 1, true)
    B(wq, "attn_q.weight", hp->dim, qd, false)
    B(wk, "attn_k.weight", hp->dim, kvd, false)
    B(wv, "attn_v.weight", hp->dim, kvd, false)
    B(wo, "attn_output.weight", qd, hp->dim, false)
    B(ffn_norm, "ffn_norm.weight", hp->dim, 1, true)
    B(w_gate, "ffn_gate.weight", hp->dim, hp->ffn_dim, false)
    B(w_down, "ffn_down.weight", hp->ffn_dim, hp->dim, false)
    B(w_up, "ffn_up.weight", hp->dim, hp->ffn_dim, false)
    if (ai->qkv_bias) {
        B(bq, "attn_q.bias", qd, 1, true)
        B(bk, "attn_k.bias", kvd, 1, true)
        B(bv, "attn_v.bias", kvd, 1, true)
    }
    if (ai->qk_norm) {
        B(q_norm, "attn_q_norm.weight", hp->head_dim, 1, true)
        B(k_norm, "attn_k_norm.weight", hp->head_dim, 1, true)
    }
#undef B
    return KVL_OK;
}

kvl_status kvl_model_from_gguf(kvl_gguf *g, kvl_model **out, kvl_error *err) {
    kvl_hparams hp;
    kvl_status st = kvl_hparams_from_gguf(g, &hp, err);
    if (st)
        return st;
    const kvl_arch_info *ai = kvl_arch_get(hp.arch);

    kvl_model *m = calloc(1, sizeof *m);
    kvl_layer_weights *L = calloc((size_t)hp.n_layers, sizeof *L);
    binder bd = {g, calloc(g->n_tensors ? (size_t)g->n_tensors : 1, sizeof(bool)), m};
    if (!m || !L || !bd.used) {
        free(m);
        free(L);
        free(bd.used);
        return kvl_errorf(err, KVL_E_NOMEM, "model: cannot allocate %lld layers",
                          (long long)hp.n_layers);
    }
    m->format = KVL_MODEL_GGUF;
    m->hp = hp;
    m->layers = L;
    if ((st = bind(&bd, "token_embd.weight", hp.dim, hp.n_vocab, false, true, &m->tok_embd, err)) ||
        (st = bind(&bd, "output_norm.weight", hp.dim, 1, true, true, &m->output_norm, err)) ||
        (st = bind(&bd, "output.weight", hp.dim, hp.n_vocab, false, false, &m->output, err)))
        goto fail;
    if (!m->output.data)
        m->output = m->tok_embd; /* tied classifier */
    if (ai->rope_freqs &&
        (st = bind(&bd, "rope_freqs.weight", hp.rope_dim / 2, 1, true, false, &m->rope_freqs, err)))
        goto fail;
    for (int64_t i = 0; m->rope_freqs.data && i < hp.rope_dim / 2; i++) {
        float d;
        memcpy(&d, (const float *)m->rope_freqs.data + i, sizeof d);
        if (!(d >= 1e-6f && d <= 1e6f)) {
            st = kvl_errorf(err, KVL_E_FORMAT,
                            "gguf: tensor 'rope_freqs.weight'[%lld] = %g outside [1e-6, 1e6]",
                            (long long)i, (double)d);
            goto fail;
        }
    }
    for (int64_t l = 0; l < hp.n_layers; l++)
        if ((st = bind_layer(&bd, &hp, l, &L[l], err)))
            goto fail;
    /* a tensor the architecture does not use would be silently ignored: a
     * file that means another model (llama.cpp: "wrong number of tensors") */
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!bd.used[i]) {
            const kvl_str *n = &g->tensors[i].name;
            st = kvl_errorf(err, KVL_E_UNSUPPORTED,
                            "gguf: tensor '%.*s' is not used by architecture '%s' with %lld "
                            "blocks (refused: it would be silently ignored)",
                            (int)(n->len > 64 ? 64 : n->len), n->ptr ? n->ptr : "", ai->name,
                            (long long)hp.n_layers);
            goto fail;
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
    free(bd.used);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        m->weight_bytes += g->tensors[i].nbytes;
    kvl_str name;
    kvl_error ignore;
    if (kvl_gguf_get_str(g, "general.name", &name, &ignore) == KVL_OK)
        snprintf(m->name, sizeof m->name, "%.*s", (int)(name.len > 63 ? 63 : name.len), name.ptr);
    else
        snprintf(m->name, sizeof m->name, "%s", ai->name);
    *out = m;
    return KVL_OK;
fail:
    free(bd.used);
    kvl_model_free(m); /* its tokenizer, F32 copies and layers (L) */
    return st;
}

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* A llama2.c tokenizer file of exactly n_vocab pieces (the format has no
 * count: a file of another size would otherwise be read in part and print
 * gibberish). KVL_E_IO when the file cannot be read. */
static kvl_status load_llama2c_tokenizer(const char *path, int64_t n_vocab, kvl_tokenizer **out,
                                         kvl_error *err) {
    int32_t n_file = 0;
    kvl_status st = kvl_mkmodel_vocab_count(path, &n_file, err);
    if (st != KVL_OK)
        return st;
    if (n_file != n_vocab)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "%s: the tokenizer holds %d pieces but the model's vocab_size is %lld "
                          "(use the tokenizer the model was trained with)",
                          path, (int)n_file, (long long)n_vocab);
    return kvl_tokenizer_load_llama2c(path, (int32_t)n_vocab, out, err);
}

/* llama2.c checkpoints carry no tokenizer: use the given path, else a file
 * beside the checkpoint chosen by vocabulary size. */
static kvl_status find_llama2c_tokenizer(const char *model_path, int64_t n_vocab,
                                         const kvl_model_params *p, kvl_tokenizer **out,
                                         kvl_error *err) {
    if (p && p->tokenizer_path)
        return load_llama2c_tokenizer(p->tokenizer_path, n_vocab, out, err);
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
        kvl_status st = load_llama2c_tokenizer(cand[i], n_vocab, out, &e2);
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

/* Neither container: say so, keeping the llama2.c parser's reason. */
static void not_a_model(const char *path, const kvl_mapped_file *mf, kvl_error *err) {
    char head[20] = "";
    size_t n = 0;
    for (size_t i = 0; i < 4 && i < mf->size; i++) {
        const uint8_t c = mf->data[i];
        n += (size_t)snprintf(head + n, sizeof head - n,
                              c >= 0x20 && c < 0x7f && c != '\'' ? "%c" : "\\x%02x", c);
    }
    char why[sizeof err->msg];
    memcpy(why, err->msg, sizeof why);
    why[sizeof why - 1] = '\0';
    if (mf->size == 0) {
        kvl_errorf(err, err->status, "%s: not a model file: it is empty (0 bytes)", path);
        return;
    }
    kvl_errorf(err, err->status,
               "%s: not a model file: it is not GGUF (it starts with '%s', not 'GGUF') and not "
               "a llama2.c checkpoint (%.300s)",
               path, head, why);
}

/* Every row of w dequantized (row: room for w->ne0 floats) and checked
 * finite; KVL_E_FORMAT naming the tensor, row and column of the first
 * value that is not. */
static kvl_status check_weight(const char *name, const kvl_weight *w, float *row, kvl_error *err) {
    if (!w->data)
        return KVL_OK;
    const size_t rb = kvl_row_bytes(w->type, w->ne0);
    for (int64_t r = 0; r < w->ne1; r++) {
        kvl_dequantize_row(w->type, (const uint8_t *)w->data + (size_t)r * rb, row, w->ne0);
        for (int64_t c = 0; c < w->ne0; c++)
            if (!isfinite(row[c]))
                return kvl_errorf(err, KVL_E_FORMAT,
                                  "check tensors: '%s' row %lld column %lld is %s (the file's "
                                  "weights are damaged; every output would be garbage)",
                                  name, (long long)r, (long long)c, isnan(row[c]) ? "NaN" : "Inf");
    }
    return KVL_OK;
}

kvl_status kvl_model_check_tensors(const kvl_model *m, kvl_error *err) {
    static const struct {
        const char *suffix;
        size_t off;
    } k_layer[] = {
        {"attn_norm.weight", offsetof(kvl_layer_weights, attn_norm)},
        {"attn_q.weight", offsetof(kvl_layer_weights, wq)},
        {"attn_k.weight", offsetof(kvl_layer_weights, wk)},
        {"attn_v.weight", offsetof(kvl_layer_weights, wv)},
        {"attn_q.bias", offsetof(kvl_layer_weights, bq)},
        {"attn_k.bias", offsetof(kvl_layer_weights, bk)},
        {"attn_v.bias", offsetof(kvl_layer_weights, bv)},
        {"attn_q_norm.weight", offsetof(kvl_layer_weights, q_norm)},
        {"attn_k_norm.weight", offsetof(kvl_layer_weights, k_norm)},
        {"attn_output.weight", offsetof(kvl_layer_weights, wo)},
        {"ffn_norm.weight", offsetof(kvl_layer_weights, ffn_norm)},
        {"ffn_gate.weight", offsetof(kvl_layer_weights, w_gate)},
        {"ffn_down.weight", offsetof(kvl_layer_weights, w_down)},
        {"ffn_up.weight", offsetof(kvl_layer_weights, w_up)},
    };
    const kvl_hparams *hp = &m->hp;
    int64_t widest = hp->dim > hp->ffn_dim ? hp->dim : hp->ffn_dim;
    if (hp->n_heads * hp->head_dim > widest)
        widest = hp->n_heads * hp->head_dim;
    float *row = malloc((size_t)widest * sizeof *row);
    if (!row)
        return kvl_errorf(err, KVL_E_NOMEM, "check tensors: no memory for a row of %lld",
                          (long long)widest);
    kvl_status st;
    if ((st = check_weight("token_embd.weight", &m->tok_embd, row, err)) ||
        (st = check_weight("output_norm.weight", &m->output_norm, row, err)) ||
        (m->output.data != m->tok_embd.data &&
         (st = check_weight("output.weight", &m->output, row, err))) ||
        (st = check_weight("rope_freqs.weight", &m->rope_freqs, row, err)))
        goto out;
    for (int64_t l = 0; l < hp->n_layers; l++)
        for (size_t k = 0; k < sizeof k_layer / sizeof k_layer[0]; k++) {
            char name[96];
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, k_layer[k].suffix);
            const kvl_weight *w =
                (const kvl_weight *)(const void *)((const char *)&m->layers[l] + k_layer[k].off);
            if ((st = check_weight(name, w, row, err)))
                goto out;
        }
out:
    free(row);
    return st;
}

kvl_status kvl_model_load(const char *path, const kvl_model_params *p, kvl_model **out,
                          kvl_error *err) {
    kvl_mapped_file mf;
    kvl_status st = kvl_load_file(path, p ? p->load : KVL_LOAD_AUTO, "loading model", &mf, err);
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
            if (st != KVL_E_NOMEM && err)
                not_a_model(path, &mf, err);
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
    if (p && p->check_tensors && (st = kvl_model_check_tensors(m, err))) {
        kvl_model_free(m);
        return st;
    }
    *out = m;
    return KVL_OK;
}

kvl_status kvl_model_load_tokenizer(const char *path, const kvl_model_params *p,
                                    kvl_tokenizer **out, kvl_error *err) {
    kvl_mapped_file mf;
    kvl_status st = kvl_load_file(path, KVL_LOAD_MMAP, NULL, &mf, err);
    if (st)
        return st;
    if (!(mf.size >= 4 && memcmp(mf.data, "GGUF", 4) == 0)) {
        kvl_unmap_file(&mf);
        kvl_model *m = NULL;
        if ((st = kvl_model_load(path, p, &m, err)))
            return st;
        *out = m->tok;
        m->tok = NULL;
        kvl_model_free(m);
        return KVL_OK;
    }
    kvl_gguf *g = NULL;
    st = kvl_gguf_parse(mf.data, mf.size, &g, err);
    if (st == KVL_OK)
        st = kvl_tokenizer_from_gguf(g, out, err); /* copies what it keeps */
    kvl_gguf_free(g);
    kvl_unmap_file(&mf);
    return st;
}
