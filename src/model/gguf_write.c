/*
 * GGUF v3 writer and the random-weight llama model generator (`kvllm
 * mkmodel`). See gguf_write.h for the file layout and the RNG.
 *
 * Invariants:
 *   - Tensor offsets are fixed when a tensor is added (each one the previous
 *     end rounded up to the alignment), so the header can be written before
 *     any data and the data streamed afterwards; `pos` (bytes of the data
 *     section written) never passes the declared end of tensor `cur`.
 *   - The first error is kept (status + message) and returned by every later
 *     call; after an error the temporary file is closed and removed.
 *   - The target path is only ever created by rename() of a complete file.
 *   - A generated model's bytes depend only on the spec and the vocabulary.
 *
 * Must not:
 *   - hold tensor data in memory beyond one row (multi-GB models stream);
 *   - exit, abort or assert on a caller's bad argument (status + message);
 *   - write anything a GGUF reader could misparse: every count, length and
 *     offset is computed with checked arithmetic before the header is written.
 */
#include "model/gguf_write.h"

#include "kernels/kernels.h"
#include "model/model.h"
#include "model/tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define GW_MAX_NAME 64 /* ggml's GGML_MAX_NAME, NUL included */
#define GW_DEFAULT_ALIGNMENT 32

typedef struct gw_tensor {
    char name[GW_MAX_NAME];
    uint32_t n_dims;
    int64_t ne[KVL_GGUF_MAX_DIMS];
    kvl_type type;
    uint64_t offset; /* from the start of the data section */
    uint64_t nbytes;
} gw_tensor;

struct kvl_gguf_writer {
    kvl_status st; /* sticky: the first error */
    char msg[512];

    uint8_t *kv; /* (kv_len) serialized key/value entries, in order added */
    size_t kv_len, kv_cap;
    uint64_t n_kv;
    char **keys; /* (n_kv) for the duplicate check */
    size_t keys_cap;

    gw_tensor *t; /* (n_t) */
    size_t n_t, t_cap;
    size_t alignment;
    uint64_t data_end; /* end of the last tensor, unpadded */

    FILE *f;
    char *path, *tmp_path;
    uint64_t pos; /* bytes of the data section written, padding included */
    size_t cur;   /* the tensor whose bytes come next */
    bool begun, finished;
};

/* ------------------------------------------------------------------------ */
/* errors */

static void gw_discard(kvl_gguf_writer *w) {
    if (w->f) {
        fclose(w->f);
        w->f = NULL;
    }
    if (w->tmp_path)
        remove(w->tmp_path);
}

static kvl_status gw_fail(kvl_gguf_writer *w, kvl_error *err, kvl_status st, const char *fmt,
                          ...) __attribute__((format(printf, 4, 5)));
static kvl_status gw_fail(kvl_gguf_writer *w, kvl_error *err, kvl_status st, const char *fmt,
                          ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->msg, sizeof w->msg, fmt, ap);
    va_end(ap);
    w->st = st;
    gw_discard(w);
    return kvl_errorf(err, st, "%s", w->msg);
}

static kvl_status gw_sticky(const kvl_gguf_writer *w, kvl_error *err) {
    return kvl_errorf(err, w->st, "%s", w->msg);
}

/* ------------------------------------------------------------------------ */
/* building the header */

kvl_status kvl_gguf_writer_init(kvl_gguf_writer **out, kvl_error *err) {
    const uint16_t one = 1;
    uint8_t lo;
    memcpy(&lo, &one, 1);
    if (lo != 1)
        return kvl_errorf(err, KVL_E_UNSUPPORTED, "gguf_write: big-endian hosts are not supported");
    kvl_gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return kvl_errorf(err, KVL_E_NOMEM, "gguf_write: out of memory");
    w->alignment = GW_DEFAULT_ALIGNMENT;
    *out = w;
    return KVL_OK;
}

void kvl_gguf_writer_free(kvl_gguf_writer *w) {
    if (!w)
        return;
    if (!w->finished)
        gw_discard(w);
    for (uint64_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    free(w->kv);
    free(w->t);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

static bool gw_reserve(uint8_t **buf, size_t *cap, size_t len, size_t more) {
    size_t need;
    if (kvl_add_overflow(len, more, &need))
        return false;
    if (need <= *cap)
        return true;
    size_t c = *cap ? *cap : 256;
    while (c < need) {
        if (kvl_mul_overflow(c, 2, &c))
            return false;
    }
    uint8_t *p = realloc(*buf, c);
    if (!p)
        return false;
    *buf = p;
    *cap = c;
    return true;
}

static void put(uint8_t *buf, size_t *len, const void *p, size_t n) {
    if (n)
        memcpy(buf + *len, p, n);
    *len += n;
}
static void put_u32(uint8_t *buf, size_t *len, uint32_t v) { put(buf, len, &v, 4); }
static void put_u64(uint8_t *buf, size_t *len, uint64_t v) { put(buf, len, &v, 8); }
static void put_str(uint8_t *buf, size_t *len, const char *s, size_t n) {
    put_u64(buf, len, (uint64_t)n);
    put(buf, len, s, n);
}

/* Bytes of one scalar value; 0 for STRING/ARRAY/unknown. */
static size_t vtype_size(uint32_t t) {
    switch (t) {
    case KVL_GGUF_UINT8: case KVL_GGUF_INT8: case KVL_GGUF_BOOL: return 1;
    case KVL_GGUF_UINT16: case KVL_GGUF_INT16: return 2;
    case KVL_GGUF_UINT32: case KVL_GGUF_INT32: case KVL_GGUF_FLOAT32: return 4;
    case KVL_GGUF_UINT64: case KVL_GGUF_INT64: case KVL_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Check the key and the writer's state; reserve room for `more` bytes of
 * value after the key and its type; record the key. On KVL_OK the caller
 * appends exactly the value. */
static kvl_status gw_key(kvl_gguf_writer *w, const char *key, uint32_t vtype, size_t more,
                         kvl_error *err) {
    if (w->st != KVL_OK)
        return gw_sticky(w, err);
    if (w->begun)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: key '%s' added after begin",
                       key ? key : "(null)");
    if (!key || !*key)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: empty key");
    if (!strcmp(key, "general.alignment"))
        return gw_fail(w, err, KVL_E_INVALID,
                       "gguf_write: key 'general.alignment' is set by set_alignment");
    for (uint64_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->keys[i], key))
            return gw_fail(w, err, KVL_E_INVALID, "gguf_write: duplicate key '%s'", key);
    size_t klen = strlen(key), need;
    if (kvl_add_overflow(klen, 8 + 4, &need) || kvl_add_overflow(need, more, &need) ||
        !gw_reserve(&w->kv, &w->kv_cap, w->kv_len, need))
        return gw_fail(w, err, KVL_E_NOMEM, "gguf_write: key '%s': out of memory", key);
    if (w->n_kv == w->keys_cap) {
        size_t c = w->keys_cap ? 2 * w->keys_cap : 32;
        char **k = realloc(w->keys, c * sizeof *k);
        if (!k)
            return gw_fail(w, err, KVL_E_NOMEM, "gguf_write: key '%s': out of memory", key);
        w->keys = k;
        w->keys_cap = c;
    }
    char *copy = strdup(key);
    if (!copy)
        return gw_fail(w, err, KVL_E_NOMEM, "gguf_write: key '%s': out of memory", key);
    w->keys[w->n_kv++] = copy;
    put_str(w->kv, &w->kv_len, key, klen);
    put_u32(w->kv, &w->kv_len, vtype);
    return KVL_OK;
}

static kvl_status gw_scalar(kvl_gguf_writer *w, const char *key, uint32_t vtype, const void *v,
                            kvl_error *err) {
    size_t n = vtype_size(vtype);
    kvl_status st = gw_key(w, key, vtype, n, err);
    if (st == KVL_OK)
        put(w->kv, &w->kv_len, v, n);
    return st;
}

kvl_status kvl_gguf_writer_add_u8(kvl_gguf_writer *w, const char *key, uint8_t v, kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_UINT8, &v, err);
}
kvl_status kvl_gguf_writer_add_i8(kvl_gguf_writer *w, const char *key, int8_t v, kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_INT8, &v, err);
}
kvl_status kvl_gguf_writer_add_u16(kvl_gguf_writer *w, const char *key, uint16_t v,
                                   kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_UINT16, &v, err);
}
kvl_status kvl_gguf_writer_add_i16(kvl_gguf_writer *w, const char *key, int16_t v,
                                   kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_INT16, &v, err);
}
kvl_status kvl_gguf_writer_add_u32(kvl_gguf_writer *w, const char *key, uint32_t v,
                                   kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_UINT32, &v, err);
}
kvl_status kvl_gguf_writer_add_i32(kvl_gguf_writer *w, const char *key, int32_t v,
                                   kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_INT32, &v, err);
}
kvl_status kvl_gguf_writer_add_u64(kvl_gguf_writer *w, const char *key, uint64_t v,
                                   kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_UINT64, &v, err);
}
kvl_status kvl_gguf_writer_add_i64(kvl_gguf_writer *w, const char *key, int64_t v,
                                   kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_INT64, &v, err);
}
kvl_status kvl_gguf_writer_add_f32(kvl_gguf_writer *w, const char *key, float v, kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_FLOAT32, &v, err);
}
kvl_status kvl_gguf_writer_add_f64(kvl_gguf_writer *w, const char *key, double v,
                                   kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_FLOAT64, &v, err);
}
kvl_status kvl_gguf_writer_add_bool(kvl_gguf_writer *w, const char *key, bool v, kvl_error *err) {
    uint8_t b = v ? 1 : 0;
    return gw_scalar(w, key, KVL_GGUF_BOOL, &b, err);
}

kvl_status kvl_gguf_writer_add_strn(kvl_gguf_writer *w, const char *key, const char *v,
                                    size_t len, kvl_error *err) {
    if (!v && len)
        return w->st ? gw_sticky(w, err)
                     : gw_fail(w, err, KVL_E_INVALID, "gguf_write: key '%s': NULL string",
                               key ? key : "(null)");
    size_t more;
    if (kvl_add_overflow(len, 8, &more))
        return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: key '%s': string too long",
                       key ? key : "(null)");
    kvl_status st = gw_key(w, key, KVL_GGUF_STRING, more, err);
    if (st == KVL_OK)
        put_str(w->kv, &w->kv_len, v, len);
    return st;
}

kvl_status kvl_gguf_writer_add_str(kvl_gguf_writer *w, const char *key, const char *v,
                                   kvl_error *err) {
    return kvl_gguf_writer_add_strn(w, key, v, v ? strlen(v) : 0, err);
}

kvl_status kvl_gguf_writer_add_arr(kvl_gguf_writer *w, const char *key, kvl_gguf_vtype elem,
                                   const void *data, uint64_t n, kvl_error *err) {
    if (w->st != KVL_OK)
        return gw_sticky(w, err);
    const char *k = key ? key : "(null)";
    size_t es = vtype_size((uint32_t)elem);
    if (es == 0)
        return gw_fail(w, err, KVL_E_INVALID,
                       "gguf_write: key '%s': array element type %d is not a number "
                       "(use add_arr_str for strings; nested arrays are not allowed)",
                       k, (int)elem);
    if (!data && n)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: key '%s': NULL array data", k);
    size_t bytes, more;
    if (n > SIZE_MAX || kvl_mul_overflow((size_t)n, es, &bytes) ||
        kvl_add_overflow(bytes, 4 + 8, &more))
        return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: key '%s': array of %llu too large", k,
                       (unsigned long long)n);
    kvl_status st = gw_key(w, key, KVL_GGUF_ARRAY, more, err);
    if (st != KVL_OK)
        return st;
    put_u32(w->kv, &w->kv_len, (uint32_t)elem);
    put_u64(w->kv, &w->kv_len, n);
    put(w->kv, &w->kv_len, data, bytes);
    return KVL_OK;
}

kvl_status kvl_gguf_writer_add_arr_str(kvl_gguf_writer *w, const char *key,
                                       const char *const *strs, const size_t *lens, uint64_t n,
                                       kvl_error *err) {
    if (w->st != KVL_OK)
        return gw_sticky(w, err);
    const char *k = key ? key : "(null)";
    if (!strs && n)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: key '%s': NULL string array", k);
    size_t more = 4 + 8;
    for (uint64_t i = 0; i < n; i++) {
        size_t l = lens ? lens[i] : (strs[i] ? strlen(strs[i]) : 0);
        if (!strs[i] && l)
            return gw_fail(w, err, KVL_E_INVALID, "gguf_write: key '%s': string %llu is NULL",
                           k, (unsigned long long)i);
        if (kvl_add_overflow(more, l, &more) || kvl_add_overflow(more, 8, &more))
            return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: key '%s': array too large", k);
    }
    kvl_status st = gw_key(w, key, KVL_GGUF_ARRAY, more, err);
    if (st != KVL_OK)
        return st;
    put_u32(w->kv, &w->kv_len, KVL_GGUF_STRING);
    put_u64(w->kv, &w->kv_len, n);
    for (uint64_t i = 0; i < n; i++) {
        size_t l = lens ? lens[i] : (strs[i] ? strlen(strs[i]) : 0);
        put_str(w->kv, &w->kv_len, strs[i], l);
    }
    return KVL_OK;
}

kvl_status kvl_gguf_writer_set_alignment(kvl_gguf_writer *w, size_t alignment, kvl_error *err) {
    if (w->st != KVL_OK)
        return gw_sticky(w, err);
    if (alignment == 0 || (alignment & (alignment - 1)) || alignment > KVL_GGUF_MAX_ALIGNMENT)
        return gw_fail(w, err, KVL_E_INVALID,
                       "gguf_write: alignment %zu is not a power of two in [1, %u]", alignment,
                       (unsigned)KVL_GGUF_MAX_ALIGNMENT);
    if (w->n_t || w->begun)
        return gw_fail(w, err, KVL_E_INVALID,
                       "gguf_write: alignment must be set before the first tensor");
    w->alignment = alignment;
    return KVL_OK;
}

kvl_status kvl_gguf_writer_add_tensor(kvl_gguf_writer *w, const char *name, uint32_t n_dims,
                                      const int64_t *ne, kvl_type type, kvl_error *err) {
    if (w->st != KVL_OK)
        return gw_sticky(w, err);
    if (w->begun)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: tensor added after begin");
    if (!name || !*name)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: empty tensor name");
    size_t nlen = strlen(name);
    if (nlen >= GW_MAX_NAME)
        return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: tensor '%s': name of %zu bytes > %d",
                       name, nlen, GW_MAX_NAME - 1);
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return gw_fail(w, err, KVL_E_INVALID, "gguf_write: duplicate tensor '%s'", name);
    if (n_dims < 1 || n_dims > KVL_GGUF_MAX_DIMS || !ne)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: tensor '%s': n_dims %u not in [1, %d]",
                       name, n_dims, KVL_GGUF_MAX_DIMS);
    size_t blck = 0, tsize = 0;
    const char *tname = NULL;
    if (!kvl_type_info((uint32_t)type, &blck, &tsize, &tname) || blck == 0)
        return gw_fail(w, err, KVL_E_UNSUPPORTED, "gguf_write: tensor '%s': type %d unknown",
                       name, (int)type);
    gw_tensor t;
    memset(&t, 0, sizeof t);
    memcpy(t.name, name, nlen + 1);
    t.n_dims = n_dims;
    t.type = type;
    for (int d = 0; d < KVL_GGUF_MAX_DIMS; d++)
        t.ne[d] = 1;
    size_t nbytes = 0;
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] < 1)
            return gw_fail(w, err, KVL_E_INVALID, "gguf_write: tensor '%s': ne[%u] = %lld < 1",
                           name, d, (long long)ne[d]);
        if ((uint64_t)ne[d] > SIZE_MAX)
            return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: tensor '%s': ne[%u] too large",
                           name, d);
        t.ne[d] = ne[d];
        if (d == 0) {
            if ((size_t)ne[0] % blck)
                return gw_fail(w, err, KVL_E_INVALID,
                               "gguf_write: tensor '%s': ne[0] = %lld is not a multiple of "
                               "%s's block size %zu",
                               name, (long long)ne[0], tname, blck);
            if (kvl_mul_overflow((size_t)ne[0] / blck, tsize, &nbytes))
                goto too_big;
        } else if (kvl_mul_overflow(nbytes, (size_t)ne[d], &nbytes)) {
            goto too_big;
        }
    }
    size_t offset, end;
    if (kvl_align_up((size_t)w->data_end, w->alignment, &offset) ||
        kvl_add_overflow(offset, nbytes, &end) || end > INT64_MAX)
        goto too_big;
    t.offset = offset;
    t.nbytes = nbytes;
    if (w->n_t == w->t_cap) {
        size_t c = w->t_cap ? 2 * w->t_cap : 64;
        gw_tensor *p = realloc(w->t, c * sizeof *p);
        if (!p)
            return gw_fail(w, err, KVL_E_NOMEM, "gguf_write: tensor '%s': out of memory", name);
        w->t = p;
        w->t_cap = c;
    }
    w->t[w->n_t++] = t;
    w->data_end = end;
    return KVL_OK;
too_big:
    return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: tensor '%s': byte size overflows", name);
}

/* Bytes of the header before the padding: fixed part, general.alignment,
 * the other keys, the tensor infos. */
static size_t gw_header_len(const kvl_gguf_writer *w) {
    size_t n = 4 + 4 + 8 + 8;
    n += 8 + strlen("general.alignment") + 4 + 4;
    n += w->kv_len;
    for (size_t i = 0; i < w->n_t; i++)
        n += 8 + strlen(w->t[i].name) + 4 + 8 * (size_t)w->t[i].n_dims + 4 + 8;
    return n;
}

uint64_t kvl_gguf_writer_file_size(const kvl_gguf_writer *w) {
    if (w->st != KVL_OK)
        return 0;
    size_t h, d;
    if (kvl_align_up(gw_header_len(w), w->alignment, &h) ||
        kvl_align_up((size_t)w->data_end, w->alignment, &d) || kvl_add_overflow(h, d, &h))
        return 0;
    return h;
}

uint64_t kvl_gguf_writer_data_size(const kvl_gguf_writer *w) {
    size_t d;
    if (w->st != KVL_OK || kvl_align_up((size_t)w->data_end, w->alignment, &d))
        return 0;
    return d;
}

/* ------------------------------------------------------------------------ */
/* streaming */

static kvl_status gw_io(kvl_gguf_writer *w, kvl_error *err, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->f) != n) {
        int e = errno;
        return gw_fail(w, err, KVL_E_IO, "gguf_write: writing '%s': %s", w->path,
                       e ? strerror(e) : "short write");
    }
    return KVL_OK;
}

static kvl_status gw_zeros(kvl_gguf_writer *w, kvl_error *err, uint64_t n) {
    static const uint8_t zero[4096];
    while (n) {
        size_t k = n < sizeof zero ? (size_t)n : sizeof zero;
        kvl_status st = gw_io(w, err, zero, k);
        if (st != KVL_OK)
            return st;
        n -= k;
    }
    return KVL_OK;
}

kvl_status kvl_gguf_writer_begin(kvl_gguf_writer *w, const char *path, kvl_error *err) {
    if (w->st != KVL_OK)
        return gw_sticky(w, err);
    if (w->begun)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: begin called twice");
    if (!path || !*path)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: empty output path");
    if (kvl_gguf_writer_file_size(w) == 0)
        return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: file size overflows");
    size_t plen = strlen(path);
    w->path = strdup(path);
    w->tmp_path = malloc(plen + 32);
    if (!w->path || !w->tmp_path)
        return gw_fail(w, err, KVL_E_NOMEM, "gguf_write: out of memory");
    snprintf(w->tmp_path, plen + 32, "%s.tmp-%ld", path, (long)getpid());

    size_t hlen = gw_header_len(w), hpad;
    if (kvl_align_up(hlen, w->alignment, &hpad))
        return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: header size overflows");
    uint8_t *h = malloc(hlen);
    if (!h)
        return gw_fail(w, err, KVL_E_NOMEM, "gguf_write: header of %zu bytes: out of memory",
                       hlen);
    size_t len = 0;
    put(h, &len, "GGUF", 4);
    put_u32(h, &len, 3);
    put_u64(h, &len, (uint64_t)w->n_t);
    put_u64(h, &len, w->n_kv + 1);
    put_str(h, &len, "general.alignment", strlen("general.alignment"));
    put_u32(h, &len, KVL_GGUF_UINT32);
    put_u32(h, &len, (uint32_t)w->alignment);
    put(h, &len, w->kv, w->kv_len);
    for (size_t i = 0; i < w->n_t; i++) {
        const gw_tensor *t = &w->t[i];
        put_str(h, &len, t->name, strlen(t->name));
        put_u32(h, &len, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims; d++)
            put_u64(h, &len, (uint64_t)t->ne[d]);
        put_u32(h, &len, (uint32_t)t->type);
        put_u64(h, &len, t->offset);
    }
    KVL_ASSERT(len == hlen);

    w->f = fopen(w->tmp_path, "wb");
    if (!w->f) {
        int e = errno;
        free(h);
        return gw_fail(w, err, KVL_E_IO, "gguf_write: cannot create '%s': %s", w->tmp_path,
                       strerror(e));
    }
    setvbuf(w->f, NULL, _IOFBF, 1 << 20);
    w->begun = true;
    kvl_status st = gw_io(w, err, h, hlen);
    free(h);
    if (st == KVL_OK)
        st = gw_zeros(w, err, hpad - hlen);
    return st;
}

kvl_status kvl_gguf_writer_write(kvl_gguf_writer *w, const void *data, size_t n, kvl_error *err) {
    if (w->st != KVL_OK)
        return gw_sticky(w, err);
    if (!w->begun || w->finished)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: write outside begin/finish");
    const uint8_t *p = data;
    while (n > 0) {
        if (w->cur >= w->n_t)
            return gw_fail(w, err, KVL_E_INVALID,
                           "gguf_write: %zu bytes written past the last tensor", n);
        const gw_tensor *t = &w->t[w->cur];
        if (w->pos < t->offset) {
            kvl_status st = gw_zeros(w, err, t->offset - w->pos);
            if (st != KVL_OK)
                return st;
            w->pos = t->offset;
        }
        uint64_t end = t->offset + t->nbytes;
        size_t k = (uint64_t)n < end - w->pos ? n : (size_t)(end - w->pos);
        kvl_status st = gw_io(w, err, p, k);
        if (st != KVL_OK)
            return st;
        w->pos += k;
        p += k;
        n -= k;
        if (w->pos == end)
            w->cur++;
    }
    return KVL_OK;
}

uint64_t kvl_gguf_writer_bytes_written(const kvl_gguf_writer *w) { return w->pos; }

kvl_status kvl_gguf_writer_finish(kvl_gguf_writer *w, kvl_error *err) {
    if (w->st != KVL_OK)
        return gw_sticky(w, err);
    if (!w->begun || w->finished)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: finish without begin");
    if (w->cur < w->n_t) {
        const gw_tensor *t = &w->t[w->cur];
        uint64_t got = w->pos > t->offset ? w->pos - t->offset : 0;
        return gw_fail(w, err, KVL_E_INVALID,
                       "gguf_write: tensor '%s': %llu of %llu bytes written (and %zu more "
                       "tensors missing)",
                       t->name, (unsigned long long)got, (unsigned long long)t->nbytes,
                       w->n_t - w->cur - 1);
    }
    size_t end;
    if (kvl_align_up((size_t)w->pos, w->alignment, &end))
        return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: data size overflows");
    kvl_status st = gw_zeros(w, err, end - w->pos);
    if (st != KVL_OK)
        return st;
    w->pos = end;
    if (fflush(w->f) != 0 || ferror(w->f)) {
        int e = errno;
        return gw_fail(w, err, KVL_E_IO, "gguf_write: writing '%s': %s", w->path,
                       e ? strerror(e) : "write error");
    }
    FILE *f = w->f;
    w->f = NULL;
    if (fclose(f) != 0) {
        int e = errno;
        return gw_fail(w, err, KVL_E_IO, "gguf_write: closing '%s': %s", w->path, strerror(e));
    }
    if (rename(w->tmp_path, w->path) != 0) {
        int e = errno;
        return gw_fail(w, err, KVL_E_IO, "gguf_write: renaming '%s' to '%s': %s", w->tmp_path,
                       w->path, strerror(e));
    }
    w->finished = true;
    return KVL_OK;
}

/* ------------------------------------------------------------------------ */
/* random llama models */

static const struct {
    const char *name;
    kvl_mkmodel_spec s;
} presets[] = {
    {"stories260K", {"stories260K", 64, 172, 5, 8, 4, 512, 512, 10000.0f, 1e-5f, KVL_TYPE_F16, 0, false, 0}},
    {"tinyllama-1.1b", {"tinyllama-1.1b", 2048, 5632, 22, 32, 4, 32000, 2048, 10000.0f, 1e-5f, KVL_TYPE_F16, 0, false, 0}},
    {"llama-3-8b", {"llama-3-8b", 4096, 14336, 32, 32, 8, 128256, 8192, 500000.0f, 1e-5f, KVL_TYPE_F16, 0, false, 0}},
    {"llama-2-7b", {"llama-2-7b", 4096, 11008, 32, 32, 32, 32000, 4096, 10000.0f, 1e-5f, KVL_TYPE_F16, 0, false, 0}},
};

bool kvl_mkmodel_preset(const char *name, kvl_mkmodel_spec *out) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (!strcmp(presets[i].name, name)) {
            *out = presets[i].s;
            return true;
        }
    }
    return false;
}

const char *kvl_mkmodel_preset_names(void) {
    return "stories260K, tinyllama-1.1b, llama-3-8b, llama-2-7b";
}

static bool is_weight_type(kvl_type t) {
    return t == KVL_TYPE_F32 || t == KVL_TYPE_F16 || t == KVL_TYPE_BF16 || t == KVL_TYPE_Q8_0 ||
           t == KVL_TYPE_Q4_0;
}

kvl_status kvl_mkmodel_check(const kvl_mkmodel_spec *s, kvl_error *err) {
#define RANGE(field, flag, lo, hi)                                                               \
    do {                                                                                         \
        if (s->field < (lo) || s->field > (hi))                                                  \
            return kvl_errorf(err, KVL_E_INVALID, "%s %lld is outside [%lld, %lld]", flag,       \
                              (long long)s->field, (long long)(lo), (long long)(hi));            \
    } while (0)
    RANGE(dim, "--dim", 1, KVL_MAX_DIM);
    RANGE(n_layers, "--layers", 1, KVL_MAX_LAYERS);
    RANGE(n_heads, "--heads", 1, KVL_MAX_HEADS);
    RANGE(n_kv_heads, "--kv-heads", 1, KVL_MAX_HEADS);
    RANGE(ffn_dim, "--ffn", 1, 4 * (int64_t)KVL_MAX_DIM);
    RANGE(n_vocab, "--vocab-size", 3, KVL_MAX_VOCAB);
    RANGE(ctx_len, "--ctx", 1, KVL_MAX_CTX);
#undef RANGE
    if (s->dim % s->n_heads)
        return kvl_errorf(err, KVL_E_INVALID, "--heads %lld does not divide --dim %lld",
                          (long long)s->n_heads, (long long)s->dim);
    int64_t hd = s->dim / s->n_heads;
    if (hd % 2)
        return kvl_errorf(err, KVL_E_INVALID,
                          "head_dim = --dim %lld / --heads %lld = %lld is odd (RoPE rotates pairs)",
                          (long long)s->dim, (long long)s->n_heads, (long long)hd);
    if (hd > KVL_MAX_HEAD_DIM)
        return kvl_errorf(err, KVL_E_INVALID,
                          "head_dim = --dim %lld / --heads %lld = %lld > %d", (long long)s->dim,
                          (long long)s->n_heads, (long long)hd, KVL_MAX_HEAD_DIM);
    if (s->n_kv_heads > s->n_heads || s->n_heads % s->n_kv_heads)
        return kvl_errorf(err, KVL_E_INVALID, "--kv-heads %lld does not divide --heads %lld",
                          (long long)s->n_kv_heads, (long long)s->n_heads);
    if (!(s->rope_base > 0.0f) || s->rope_base > 1e12f)
        return kvl_errorf(err, KVL_E_INVALID, "--rope-base %g is outside (0, 1e12]",
                          (double)s->rope_base);
    if (!(s->rms_eps > 0.0f) || s->rms_eps > 0.1f)
        return kvl_errorf(err, KVL_E_INVALID, "--eps %g is outside (0, 0.1]", (double)s->rms_eps);
    if (!is_weight_type(s->type))
        return kvl_errorf(err, KVL_E_INVALID,
                          "--type id %d is not one of f32, f16, bf16, q8_0, q4_0", (int)s->type);
    if (s->alignment && ((s->alignment & (s->alignment - 1)) ||
                         s->alignment > KVL_GGUF_MAX_ALIGNMENT))
        return kvl_errorf(err, KVL_E_INVALID,
                          "--alignment %zu is not a power of two in [1, %u]", s->alignment,
                          (unsigned)KVL_GGUF_MAX_ALIGNMENT);
    if (strnlen(s->name, sizeof s->name) == sizeof s->name)
        return kvl_errorf(err, KVL_E_INVALID, "--name is longer than %zu bytes",
                          sizeof s->name - 1);
    return KVL_OK;
}

kvl_type kvl_mkmodel_weight_type(const kvl_mkmodel_spec *s, int64_t ne0) {
    size_t blck = 1, tsize = 0;
    const char *nm = NULL;
    if (!kvl_type_info((uint32_t)s->type, &blck, &tsize, &nm) || blck == 0)
        return KVL_TYPE_F16;
    return ne0 % (int64_t)blck ? KVL_TYPE_F16 : s->type;
}

uint32_t kvl_mkmodel_file_type(kvl_type t) {
    switch (t) {
    case KVL_TYPE_F32: return 0;
    case KVL_TYPE_F16: return 1;
    case KVL_TYPE_Q4_0: return 2;
    case KVL_TYPE_Q8_0: return 7;
    case KVL_TYPE_BF16: return 32;
    default: return 1;
    }
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

static bool is_norm(const char *name) {
    size_t n = strlen(name);
    static const char suf[] = "_norm.weight";
    return n >= sizeof suf - 1 && !strcmp(name + n - (sizeof suf - 1), suf);
}

void kvl_mkmodel_row(const kvl_mkmodel_spec *s, const char *name, int64_t row, float *out,
                     int64_t n) {
    if (is_norm(name)) {
        for (int64_t i = 0; i < n; i++)
            out[i] = 1.0f;
        return;
    }
    uint64_t x = s->seed ^ fnv1a64(name);
    x = splitmix64(&x) ^ (uint64_t)row;
    uint64_t st = splitmix64(&x);
    /* four 16-bit uniforms on 0..65535: sum has mean 131070 and variance
     * 4 * (65536^2 - 1) / 12, i.e. std 65536/sqrt(3) up to 1e-10 */
    const double k = KVL_MKMODEL_STD * 1.7320508075688772 / 65536.0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = splitmix64(&st);
        int64_t sum = (int64_t)(r & 0xffff) + (int64_t)((r >> 16) & 0xffff) +
                      (int64_t)((r >> 32) & 0xffff) + (int64_t)(r >> 48);
        out[i] = (float)((double)(sum - 131070) * k);
    }
}

/* -- vocabulary -- */

void kvl_mkmodel_vocab_free(kvl_mkmodel_vocab *v) {
    if (!v)
        return;
    if (v->pieces)
        for (int32_t i = 0; i < v->n; i++)
            free(v->pieces[i]);
    free(v->pieces);
    free(v->scores);
    free(v->types);
    memset(v, 0, sizeof *v);
}

static kvl_status vocab_alloc(int32_t n, kvl_mkmodel_vocab *v, kvl_error *err) {
    memset(v, 0, sizeof *v);
    v->pieces = calloc((size_t)n, sizeof *v->pieces);
    v->scores = calloc((size_t)n, sizeof *v->scores);
    v->types = calloc((size_t)n, sizeof *v->types);
    if (!v->pieces || !v->scores || !v->types) {
        free(v->pieces);
        free(v->scores);
        free(v->types);
        memset(v, 0, sizeof *v);
        return kvl_errorf(err, KVL_E_NOMEM, "mkmodel: vocabulary of %d: out of memory", n);
    }
    v->n = n;
    return KVL_OK;
}

static bool is_byte_piece(const char *p, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    return len == 6 && !memcmp(p, "<0x", 3) && p[5] == '>' && strchr(hex, p[3]) && p[3] &&
           strchr(hex, p[4]) && p[4];
}

kvl_status kvl_mkmodel_vocab_count(const char *path, int32_t *n, kvl_error *err) {
    kvl_mapped_file f;
    kvl_status st = kvl_map_file(path, &f, err);
    if (st != KVL_OK)
        return st;
    size_t off = 4;
    int64_t count = 0;
    if (f.size < 4) {
        kvl_unmap_file(&f);
        return kvl_errorf(err, KVL_E_FORMAT,
                          "%s: %zu bytes is too short for a llama2.c tokenizer", path, f.size);
    }
    while (off < f.size) {
        int32_t len;
        if (f.size - off < 8) {
            kvl_unmap_file(&f);
            return kvl_errorf(err, KVL_E_FORMAT,
                              "%s: record %lld: header past the end of the file", path,
                              (long long)count);
        }
        memcpy(&len, f.data + off + 4, 4);
        if (len < 0 || (size_t)len > f.size - off - 8) {
            kvl_unmap_file(&f);
            return kvl_errorf(err, KVL_E_FORMAT,
                              "%s: record %lld: length %d past the end of the file", path,
                              (long long)count, len);
        }
        off += 8 + (size_t)len;
        if (++count > KVL_MAX_VOCAB) {
            kvl_unmap_file(&f);
            return kvl_errorf(err, KVL_E_LIMIT, "%s: more than %d records", path,
                              KVL_MAX_VOCAB);
        }
    }
    kvl_unmap_file(&f);
    *n = (int32_t)count;
    return KVL_OK;
}

kvl_status kvl_mkmodel_vocab_load(const char *path, int32_t n_vocab, kvl_mkmodel_vocab *out,
                                  kvl_error *err) {
    int32_t n_file = 0;
    kvl_status st = kvl_mkmodel_vocab_count(path, &n_file, err);
    if (st != KVL_OK)
        return st;
    if (n_vocab && n_file != n_vocab)
        return kvl_errorf(err, KVL_E_INVALID, "%s holds %d pieces, the model's vocab size is %d",
                          path, n_file, n_vocab);
    if (n_file < 3)
        return kvl_errorf(err, KVL_E_FORMAT, "%s holds %d pieces, fewer than 3 (unk, bos, eos)",
                          path, n_file);
    kvl_tokenizer *tk = NULL;
    st = kvl_tokenizer_load_llama2c(path, n_file, &tk, err);
    if (st != KVL_OK)
        return st;
    kvl_mkmodel_vocab v;
    st = vocab_alloc(n_file, &v, err);
    if (st != KVL_OK) {
        kvl_tokenizer_free(tk);
        return st;
    }
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};
    for (int32_t id = 0; id < n_file && st == KVL_OK; id++) {
        const char *p = NULL;
        size_t len = 0;
        float score = 0.0f;
        int32_t type = 0;
        st = kvl_tokenizer_get(tk, id, &p, &len, &score, &type);
        if (st != KVL_OK) {
            st = kvl_errorf(err, st, "%s: piece %d unreadable", path, id);
            break;
        }
        if (id < 3) { /* llama2.c writes "\n<s>\n": GGUF has "<s>" */
            while (len && (*p == '\n' || *p == ' ')) {
                p++;
                len--;
            }
            while (len && (p[len - 1] == '\n' || p[len - 1] == ' '))
                len--;
            if (!len) {
                p = special[id];
                len = strlen(p);
            }
        }
        size_t spaces = 0;
        for (size_t i = 0; i < len; i++)
            spaces += p[i] == ' ';
        char *q = malloc(len + 2 * spaces + 1);
        if (!q) {
            st = kvl_errorf(err, KVL_E_NOMEM, "mkmodel: vocabulary: out of memory");
            break;
        }
        size_t m = 0;
        for (size_t i = 0; i < len; i++) {
            if (p[i] == ' ') {
                memcpy(q + m, "\xE2\x96\x81", 3);
                m += 3;
            } else {
                q[m++] = p[i];
            }
        }
        q[m] = 0;
        v.pieces[id] = q;
        v.scores[id] = score;
        v.types[id] = id == 0   ? KVL_TOK_UNKNOWN
                      : id < 3  ? KVL_TOK_CONTROL
                      : is_byte_piece(p, len) ? KVL_TOK_BYTE
                                              : KVL_TOK_NORMAL;
    }
    kvl_tokenizer_free(tk);
    if (st != KVL_OK) {
        kvl_mkmodel_vocab_free(&v);
        return st;
    }
    *out = v;
    return KVL_OK;
}

kvl_status kvl_mkmodel_vocab_synth(int32_t n, kvl_mkmodel_vocab *out, kvl_error *err) {
    if (n < 259 || n > KVL_MAX_VOCAB)
        return kvl_errorf(err, KVL_E_INVALID,
                          "--vocab-size %d is outside [259, %d] for a synthesized vocabulary "
                          "(3 special + 256 byte tokens)",
                          n, KVL_MAX_VOCAB);
    kvl_mkmodel_vocab v;
    kvl_status st = vocab_alloc(n, &v, err);
    if (st != KVL_OK)
        return st;
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};
    int32_t id = 0;
    char buf[64];
    /* pieces after the bytes: "▁", then for L = 1, 2, ...: the 26^L strings
     * of L letters a..z in order, then the same with a "▁" in front. Every
     * piece's prefix is an earlier piece, so BPE can build each one. */
    int32_t L = 1;
    int64_t k = -1, n_of_len = 26; /* k: index within the 2*26^L pieces of length L */
    while (id < n && st == KVL_OK) {
        const char *p;
        if (id < 3) {
            p = special[id];
            v.types[id] = id == 0 ? KVL_TOK_UNKNOWN : KVL_TOK_CONTROL;
            v.scores[id] = 0.0f;
        } else if (id < 259) {
            snprintf(buf, sizeof buf, "<0x%02X>", (unsigned)(id - 3));
            p = buf;
            v.types[id] = KVL_TOK_BYTE;
            v.scores[id] = 0.0f;
        } else {
            if (id == 259) {
                p = "\xE2\x96\x81";
            } else {
                if (++k == 2 * n_of_len) {
                    L++;
                    n_of_len *= 26;
                    k = 0;
                }
                size_t m = 0;
                if (k >= n_of_len) {
                    memcpy(buf, "\xE2\x96\x81", 3);
                    m = 3;
                }
                int64_t x = k % n_of_len;
                for (int32_t j = L - 1; j >= 0; j--) {
                    buf[m + (size_t)j] = (char)('a' + x % 26);
                    x /= 26;
                }
                buf[m + (size_t)L] = 0;
                p = buf;
            }
            v.types[id] = KVL_TOK_NORMAL;
            v.scores[id] = -(float)(id - 259);
        }
        v.pieces[id] = strdup(p);
        if (!v.pieces[id])
            st = kvl_errorf(err, KVL_E_NOMEM, "mkmodel: vocabulary: out of memory");
        id++;
    }
    if (st != KVL_OK) {
        kvl_mkmodel_vocab_free(&v);
        return st;
    }
    *out = v;
    return KVL_OK;
}

/* -- the model file -- */

typedef struct mk_tensor {
    char name[GW_MAX_NAME];
    uint32_t n_dims;
    int64_t ne0, ne1; /* ne1 rows of ne0 values */
    kvl_type type;
} mk_tensor;

/* The tensors in file order: token_embd, per layer (attn_norm, attn_q,
 * attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down),
 * output_norm, output (unless tied). */
static size_t mk_tensors(const kvl_mkmodel_spec *s, mk_tensor *t) {
    const int64_t hd = s->dim / s->n_heads;
    const int64_t q = s->n_heads * hd, kv = s->n_kv_heads * hd;
    size_t n = 0;
#define ADD(nd, a, b, fmt, ...)                                                                  \
    do {                                                                                         \
        if (t) {                                                                                 \
            snprintf(t[n].name, sizeof t[n].name, fmt, __VA_ARGS__);                            \
            t[n].n_dims = nd;                                                                    \
            t[n].ne0 = a;                                                                        \
            t[n].ne1 = b;                                                                        \
            t[n].type = nd == 1 ? KVL_TYPE_F32 : kvl_mkmodel_weight_type(s, a);                  \
        }                                                                                        \
        n++;                                                                                     \
    } while (0)
    ADD(2, s->dim, s->n_vocab, "%s", "token_embd.weight");
    for (int64_t l = 0; l < s->n_layers; l++) {
        ADD(1, s->dim, 1, "blk.%lld.attn_norm.weight", (long long)l);
        ADD(2, s->dim, q, "blk.%lld.attn_q.weight", (long long)l);
        ADD(2, s->dim, kv, "blk.%lld.attn_k.weight", (long long)l);
        ADD(2, s->dim, kv, "blk.%lld.attn_v.weight", (long long)l);
        ADD(2, q, s->dim, "blk.%lld.attn_output.weight", (long long)l);
        ADD(1, s->dim, 1, "blk.%lld.ffn_norm.weight", (long long)l);
        ADD(2, s->dim, s->ffn_dim, "blk.%lld.ffn_gate.weight", (long long)l);
        ADD(2, s->dim, s->ffn_dim, "blk.%lld.ffn_up.weight", (long long)l);
        ADD(2, s->ffn_dim, s->dim, "blk.%lld.ffn_down.weight", (long long)l);
    }
    ADD(1, s->dim, 1, "%s", "output_norm.weight");
    if (!s->tied)
        ADD(2, s->dim, s->n_vocab, "%s", "output.weight");
#undef ADD
    return n;
}

static kvl_status mk_metadata(kvl_gguf_writer *w, const kvl_mkmodel_spec *s,
                              const kvl_mkmodel_vocab *v, kvl_error *err) {
    const int64_t hd = s->dim / s->n_heads;
    char desc[160];
    snprintf(desc, sizeof desc, "random weights (kvllm mkmodel, seed %llu); not a trained model",
             (unsigned long long)s->seed);
    kvl_gguf_writer_add_str(w, "general.architecture", "llama", NULL);
    kvl_gguf_writer_add_str(w, "general.name", s->name[0] ? s->name : "random-llama", NULL);
    kvl_gguf_writer_add_str(w, "general.description", desc, NULL);
    kvl_gguf_writer_add_u32(w, "general.file_type", kvl_mkmodel_file_type(s->type), NULL);
    kvl_gguf_writer_add_u64(w, "kvllm.mkmodel.seed", s->seed, NULL);
    kvl_gguf_writer_add_u32(w, "llama.context_length", (uint32_t)s->ctx_len, NULL);
    kvl_gguf_writer_add_u32(w, "llama.embedding_length", (uint32_t)s->dim, NULL);
    kvl_gguf_writer_add_u32(w, "llama.block_count", (uint32_t)s->n_layers, NULL);
    kvl_gguf_writer_add_u32(w, "llama.feed_forward_length", (uint32_t)s->ffn_dim, NULL);
    kvl_gguf_writer_add_u32(w, "llama.attention.head_count", (uint32_t)s->n_heads, NULL);
    kvl_gguf_writer_add_u32(w, "llama.attention.head_count_kv", (uint32_t)s->n_kv_heads, NULL);
    kvl_gguf_writer_add_u32(w, "llama.rope.dimension_count", (uint32_t)hd, NULL);
    kvl_gguf_writer_add_f32(w, "llama.rope.freq_base", s->rope_base, NULL);
    kvl_gguf_writer_add_f32(w, "llama.attention.layer_norm_rms_epsilon", s->rms_eps, NULL);
    kvl_gguf_writer_add_u32(w, "llama.vocab_size", (uint32_t)s->n_vocab, NULL);
    kvl_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama", NULL);
    kvl_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->pieces, NULL,
                                (uint64_t)v->n, NULL);
    kvl_gguf_writer_add_arr(w, "tokenizer.ggml.scores", KVL_GGUF_FLOAT32, v->scores,
                            (uint64_t)v->n, NULL);
    kvl_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KVL_GGUF_INT32, v->types,
                            (uint64_t)v->n, NULL);
    kvl_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0, NULL);
    kvl_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1, NULL);
    kvl_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2, NULL);
    kvl_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true, NULL);
    return kvl_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", false, err);
}

kvl_status kvl_mkmodel_write(const kvl_mkmodel_spec *s, const kvl_mkmodel_vocab *v,
                             const char *path, kvl_mkmodel_progress_fn progress, void *ud,
                             kvl_mkmodel_stats *stats, kvl_error *err) {
    kvl_status st = kvl_mkmodel_check(s, err);
    if (st != KVL_OK)
        return st;
    if (!v || v->n != s->n_vocab)
        return kvl_errorf(err, KVL_E_INVALID,
                          "the vocabulary has %d pieces but --vocab-size is %lld",
                          v ? v->n : 0, (long long)s->n_vocab);
    size_t nt = mk_tensors(s, NULL);
    mk_tensor *t = calloc(nt, sizeof *t);
    if (!t)
        return kvl_errorf(err, KVL_E_NOMEM, "mkmodel: out of memory");
    mk_tensors(s, t);

    kvl_gguf_writer *w = NULL;
    float *row = NULL;
    void *qrow = NULL;
    st = kvl_gguf_writer_init(&w, err);
    if (st != KVL_OK)
        goto done;
    if (s->alignment)
        kvl_gguf_writer_set_alignment(w, s->alignment, NULL);
    mk_metadata(w, s, v, NULL);
    int64_t max_cols = 0;
    uint64_t n_params = 0;
    for (size_t i = 0; i < nt; i++) {
        int64_t ne[2] = {t[i].ne0, t[i].ne1};
        kvl_gguf_writer_add_tensor(w, t[i].name, t[i].n_dims, ne, t[i].type, NULL);
        if (t[i].ne0 > max_cols)
            max_cols = t[i].ne0;
        n_params += (uint64_t)t[i].ne0 * (uint64_t)t[i].ne1;
    }
    /* a sticky error from any add above surfaces here */
    st = kvl_gguf_writer_begin(w, path, err);
    if (st != KVL_OK)
        goto done;
    row = malloc((size_t)max_cols * sizeof *row);
    qrow = malloc((size_t)max_cols * sizeof(float));
    if (!row || !qrow) {
        st = kvl_errorf(err, KVL_E_NOMEM, "mkmodel: out of memory");
        goto done;
    }
    /* progress counts file bytes: the header is written, the data follows */
    const uint64_t total = kvl_gguf_writer_file_size(w);
    const uint64_t header = total - kvl_gguf_writer_data_size(w);
    for (size_t i = 0; i < nt && st == KVL_OK; i++) {
        size_t rb = kvl_row_bytes(t[i].type, t[i].ne0);
        KVL_ASSERT(rb > 0 && rb <= (size_t)max_cols * sizeof(float));
        for (int64_t r = 0; r < t[i].ne1; r++) {
            kvl_mkmodel_row(s, t[i].name, r, row, t[i].ne0);
            kvl_quantize_row(t[i].type, row, qrow, t[i].ne0);
            st = kvl_gguf_writer_write(w, qrow, rb, err);
            if (st != KVL_OK)
                break;
            if (progress)
                progress(ud, header + kvl_gguf_writer_bytes_written(w), total);
        }
    }
    if (st == KVL_OK)
        st = kvl_gguf_writer_finish(w, err);
    if (st == KVL_OK && stats) {
        stats->file_bytes = total;
        stats->n_params = n_params;
        stats->n_tensors = nt;
    }
done:
    free(row);
    free(qrow);
    free(t);
    kvl_gguf_writer_free(w);
    return st;
}
