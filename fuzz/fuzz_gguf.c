/*
 * fuzz_gguf: libFuzzer target for the GGUF reader. Any byte string is a
 * candidate file: kvl_gguf_parse must either fail with a message or return
 * a result whose every key, string, array element and tensor byte can be
 * read without leaving the input (ASan checks the reads). It must not keep
 * state between inputs or write to the input.
 */
#include "model/gguf.h"

#include <stdlib.h>

/* Copy a kvl_str into a NUL-terminated heap string for the lookups; NULL
 * when it holds a NUL (a C-string lookup could not name it). */
static char *cstr(kvl_str s) {
    if (memchr(s.ptr, '\0', (size_t)s.len))
        return NULL;
    char *c = malloc((size_t)s.len + 1);
    if (!c)
        return NULL;
    memcpy(c, s.ptr, (size_t)s.len);
    c[s.len] = '\0';
    return c;
}

static volatile uint64_t g_sink;

static void touch_bytes(const void *p, size_t n) {
    const uint8_t *b = p;
    uint64_t h = 0;
    for (size_t i = 0; i < n; i++)
        h = h * 31 + b[i];
    g_sink += h;
}

static void touch_kv(const kvl_gguf *g, const kvl_gguf_kv *kv) {
    char *k = cstr(kv->key);
    if (k) {
        /* keys are unique, so the lookup must land on this very entry */
        if (kvl_gguf_find_key(g, k) != kv)
            abort();
        uint64_t u;
        int64_t i;
        double f;
        kvl_str s;
        const kvl_gguf_kv *a;
        (void)kvl_gguf_get_u64(g, k, &u, NULL);
        (void)kvl_gguf_get_i64(g, k, &i, NULL);
        (void)kvl_gguf_get_f64(g, k, &f, NULL);
        (void)kvl_gguf_get_str(g, k, &s, NULL);
        (void)kvl_gguf_get_arr(g, k, KVL_GGUF_VTYPE_COUNT, &a, NULL);
        free(k);
    }
    touch_bytes(kv->key.ptr, (size_t)kv->key.len);
    if (kv->type == KVL_GGUF_STRING) {
        touch_bytes(kv->v.str.ptr, (size_t)kv->v.str.len);
    } else if (kv->type == KVL_GGUF_ARRAY) {
        if (kv->v.arr.type == KVL_GGUF_STRING) {
            for (uint64_t j = 0; j < kv->v.arr.n; j++)
                touch_bytes(kv->v.arr.strs[j].ptr, (size_t)kv->v.arr.strs[j].len);
        } else {
            touch_bytes(kv->v.arr.data, (size_t)kv->v.arr.n * kvl_gguf_vtype_size(kv->v.arr.type));
            for (uint64_t j = 0; j < kv->v.arr.n && j < 64; j++) {
                double f;
                int64_t i;
                if (!kvl_gguf_arr_f64(kv, j, &f))
                    abort();
                (void)kvl_gguf_arr_i64(kv, j, &i);
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kvl_gguf *g = NULL;
    kvl_error err = {0};
    kvl_status st = kvl_gguf_parse(data, size, &g, &err);
    if (st != KVL_OK) {
        if (g != NULL || err.msg[0] == '\0')
            abort();
        return 0;
    }
    for (uint64_t i = 0; i < g->n_kv; i++)
        touch_kv(g, &g->kv[i]);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const kvl_gguf_tensor *t = &g->tensors[i];
        char *name = cstr(t->name);
        if (name) {
            if (kvl_gguf_find_tensor(g, name) != t)
                abort();
            free(name);
        }
        touch_bytes(t->name.ptr, (size_t)t->name.len);
        if (t->nbytes > 0) {
            const uint8_t *d = t->data;
            touch_bytes(d, 1);
            touch_bytes(d + t->nbytes - 1, 1);
        }
    }
    kvl_gguf_free(g);
    return 0;
}
