/* Test harness support: counters, shared/ and temp paths, file helpers. */
#include "testutil.h"

#include <stdlib.h>

int kvt_failures = 0;
int kvt_checks = 0;

const char *kvt_shared(const char *rel) {
    static char buf[4096];
    const char *root = getenv("KVL_SHARED");
    if (!root || !*root)
        root = "../shared";
    snprintf(buf, sizeof buf, "%s/%s", root, rel);
    return buf;
}

const char *kvt_tmp(const char *name) {
    static char buf[4096];
    const char *root = getenv("KVL_TMP");
    if (!root || !*root)
        root = "/tmp";
    snprintf(buf, sizeof buf, "%s/%s", root, name);
    return buf;
}

bool kvt_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = fwrite(data, 1, n, f) == n;
    ok = (fclose(f) == 0) && ok;
    return ok;
}

void *kvt_read_file(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (sz < 0) {
        fclose(f);
        return NULL;
    }
    void *p = malloc((size_t)sz + 1);
    if (p && fread(p, 1, (size_t)sz, f) != (size_t)sz) {
        free(p);
        p = NULL;
    }
    fclose(f);
    if (p)
        *n = (size_t)sz;
    return p;
}

void kvt_set_dims(kvl_hparams *hp, kvt_dims d) {
    hp->dim = d.dim;
    hp->n_heads = d.n_heads;
    hp->n_kv_heads = d.n_kv_heads;
    hp->head_dim = d.head_dim ? d.head_dim : d.dim / d.n_heads;
    hp->rope_dim = hp->head_dim;
    hp->ffn_dim = d.ffn_dim;
    hp->n_layers = d.n_layers;
    hp->n_vocab = d.n_vocab;
    hp->ctx_len = d.ctx_len;
}

const char *kvt_mkmodel_file(const kvl_mkmodel_spec *spec, const char *name) {
    kvl_error err = {0};
    kvl_mkmodel_vocab voc;
    const char *path = kvt_tmp(name);
    kvl_status st = kvl_mkmodel_vocab_synth((int32_t)spec->shape.hp.n_vocab, &voc, &err);
    if (st == KVL_OK) {
        st = kvl_mkmodel_write(spec, &voc, path, NULL, NULL, NULL, &err);
        kvl_mkmodel_vocab_free(&voc);
    }
    CHECK_EQ_INT(st, KVL_OK);
    if (st)
        fprintf(stderr, "%s: %s\n", name, err.msg);
    return st ? NULL : path;
}

int kvt_finish(const char *name) {
    printf("%s: %d passed, %d failed\n", name, kvt_checks - kvt_failures, kvt_failures);
    return kvt_failures ? 1 : 0;
}

kvl_str kvt_str(const char *c) {
    kvl_str s = {c, strlen(c)};
    return s;
}

void kvt_kv_str(kvl_gguf_kv *kv, const char *key, const char *v) {
    kv->key = kvt_str(key);
    kv->type = KVL_GGUF_STRING;
    kv->v.str = kvt_str(v);
}

void kvt_kv_u32(kvl_gguf_kv *kv, const char *key, uint32_t v) {
    kv->key = kvt_str(key);
    kv->type = KVL_GGUF_UINT32;
    kv->v.u64 = v;
}

void kvt_kv_bool(kvl_gguf_kv *kv, const char *key, bool v) {
    kv->key = kvt_str(key);
    kv->type = KVL_GGUF_BOOL;
    kv->v.u64 = v;
}

void kvt_kv_arr(kvl_gguf_kv *kv, const char *key, uint32_t elem, uint64_t n, const void *data) {
    kv->key = kvt_str(key);
    kv->type = KVL_GGUF_ARRAY;
    kv->v.arr.type = elem;
    kv->v.arr.n = n;
    kv->v.arr.strs = elem == KVL_GGUF_STRING ? (kvl_str *)(uintptr_t)data : NULL;
    kv->v.arr.data = elem == KVL_GGUF_STRING ? NULL : (const uint8_t *)data;
}

char *kvt_decode(const kvl_tokenizer *t, int32_t prev, const int32_t *ids, size_t n, size_t *len) {
    size_t cap = 64, o = 0;
    char *buf = malloc(cap);
    for (size_t i = 0; buf && i < n; i++) {
        size_t pl;
        const char *p = kvl_tokenizer_piece(t, prev, ids[i], &pl);
        while (buf && o + pl + 1 > cap) {
            cap *= 2;
            char *nb = realloc(buf, cap);
            if (!nb)
                free(buf);
            buf = nb;
        }
        if (buf)
            memcpy(buf + o, p, pl);
        o += pl;
        prev = ids[i];
    }
    if (!buf) {
        fprintf(stderr, "kvt_decode: out of memory\n");
        exit(2);
    }
    buf[o] = '\0';
    *len = o;
    return buf;
}

void kvt_pattern_prompt(int32_t *t, int32_t n, int which) {
    t[0] = 1;
    for (int32_t i = 1; i < n; i++)
        t[i] = 3 + (int32_t)((i * 37 + which * 101) % 500);
}

kvl_request_params kvt_greedy_request(const int32_t *toks, int32_t n_prompt, int32_t max_tokens,
                                      int32_t n) {
    kvl_request_params rp = kvl_request_defaults();
    rp.prompt_tokens = toks;
    rp.n_prompt_tokens = (size_t)n_prompt;
    rp.max_tokens = max_tokens;
    rp.n = n;
    rp.temperature = 0;
    return rp;
}

uint64_t kvt_xorshift64(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}
