/*
 * GGUF v3 writer. See gguf_write.h for the file layout.
 *
 * Invariants:
 *   - Tensor offsets are fixed when a tensor is added (each one the previous
 *     end rounded up to the alignment), so the header can be written before
 *     any data and the data streamed afterwards; `pos` (bytes of the data
 *     section written) never passes the declared end of tensor `cur`.
 *   - The first error is kept (status + message) and returned by every later
 *     call; after an error the temporary file is closed and removed.
 *   - The target path is only ever created by rename() of a complete file
 *     that this writer created exclusively (a fresh random name in the
 *     target's folder), and only when the target is absent or a regular
 *     file (checked at begin and again just before the rename).
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
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
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

static kvl_status gw_fail(kvl_gguf_writer *w, kvl_error *err, kvl_status st, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kvl_status gw_fail(kvl_gguf_writer *w, kvl_error *err, kvl_status st, const char *fmt, ...) {
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
/* the target and the temporary file */

static const char *file_kind(mode_t m) {
    return S_ISDIR(m)    ? "a directory"
           : S_ISLNK(m)  ? "a symbolic link"
           : S_ISCHR(m)  ? "a character device"
           : S_ISBLK(m)  ? "a block device"
           : S_ISFIFO(m) ? "a FIFO"
           : S_ISSOCK(m) ? "a socket"
                         : "not a regular file";
}

/* KVL_OK when path is absent or a regular file (not a link to one). */
static kvl_status gw_check_target(kvl_gguf_writer *w, const char *path, kvl_error *err) {
    struct stat st;
    if (lstat(path, &st) != 0 || S_ISREG(st.st_mode))
        return KVL_OK; /* absent (or unreadable: creating the file will say why) */
    return gw_fail(w, err, KVL_E_INVALID,
                   "gguf_write: '%s' exists and is %s, not a regular file: refusing to replace it",
                   path, file_kind(st.st_mode));
}

/* Create "<dir>/.<name>.tmp-XXXXXX" exclusively, XXXXXX random; the open
 * file in w->f, its name in w->tmp_path (set only once the file is ours). */
static kvl_status gw_create_tmp(kvl_gguf_writer *w, const char *path, kvl_error *err) {
    static const char digits[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    const char *slash = strrchr(path, '/');
    const int dir_len = slash ? (int)(slash - path + 1) : 0;
    const char *name = slash ? slash + 1 : path;
    const size_t cap = strlen(path) + 16;
    char *tmp = malloc(cap);
    if (!tmp)
        return gw_fail(w, err, KVL_E_NOMEM, "gguf_write: out of memory");
    int e = EEXIST;
    for (int attempt = 0; attempt < 64 && e == EEXIST; attempt++) {
        uint8_t rnd[6];
        if (getrandom(rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd) {
            /* no entropy yet: the name only needs to be unlikely, O_EXCL
             * makes it safe */
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t x = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid() ^
                         ((uint64_t)attempt << 40);
            memcpy(rnd, &x, sizeof rnd);
        }
        char suf[7];
        for (int k = 0; k < 6; k++)
            suf[k] = digits[rnd[k] % (sizeof digits - 1)];
        suf[6] = '\0';
        snprintf(tmp, cap, "%.*s.%s.tmp-%s", dir_len, path, name, suf);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
        if (fd < 0) {
            e = errno;
            continue;
        }
        w->f = fdopen(fd, "wb");
        if (!w->f) {
            e = errno;
            close(fd);
            remove(tmp);
            break;
        }
        w->tmp_path = tmp;
        return KVL_OK;
    }
    kvl_status st = gw_fail(w, err, KVL_E_IO, "gguf_write: cannot create a temporary file '%s': %s",
                            tmp, strerror(e));
    free(tmp);
    return st;
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
    case KVL_GGUF_UINT8:
    case KVL_GGUF_INT8:
    case KVL_GGUF_BOOL: return 1;
    case KVL_GGUF_UINT16:
    case KVL_GGUF_INT16: return 2;
    case KVL_GGUF_UINT32:
    case KVL_GGUF_INT32:
    case KVL_GGUF_FLOAT32: return 4;
    case KVL_GGUF_UINT64:
    case KVL_GGUF_INT64:
    case KVL_GGUF_FLOAT64: return 8;
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
kvl_status kvl_gguf_writer_add_i16(kvl_gguf_writer *w, const char *key, int16_t v, kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_INT16, &v, err);
}
kvl_status kvl_gguf_writer_add_u32(kvl_gguf_writer *w, const char *key, uint32_t v,
                                   kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_UINT32, &v, err);
}
kvl_status kvl_gguf_writer_add_i32(kvl_gguf_writer *w, const char *key, int32_t v, kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_INT32, &v, err);
}
kvl_status kvl_gguf_writer_add_u64(kvl_gguf_writer *w, const char *key, uint64_t v,
                                   kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_UINT64, &v, err);
}
kvl_status kvl_gguf_writer_add_i64(kvl_gguf_writer *w, const char *key, int64_t v, kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_INT64, &v, err);
}
kvl_status kvl_gguf_writer_add_f32(kvl_gguf_writer *w, const char *key, float v, kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_FLOAT32, &v, err);
}
kvl_status kvl_gguf_writer_add_f64(kvl_gguf_writer *w, const char *key, double v, kvl_error *err) {
    return gw_scalar(w, key, KVL_GGUF_FLOAT64, &v, err);
}
kvl_status kvl_gguf_writer_add_bool(kvl_gguf_writer *w, const char *key, bool v, kvl_error *err) {
    uint8_t b = v ? 1 : 0;
    return gw_scalar(w, key, KVL_GGUF_BOOL, &b, err);
}

kvl_status kvl_gguf_writer_add_strn(kvl_gguf_writer *w, const char *key, const char *v, size_t len,
                                    kvl_error *err) {
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

kvl_status kvl_gguf_writer_add_arr_str(kvl_gguf_writer *w, const char *key, const char *const *strs,
                                       const size_t *lens, uint64_t n, kvl_error *err) {
    if (w->st != KVL_OK)
        return gw_sticky(w, err);
    const char *k = key ? key : "(null)";
    if (!strs && n)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: key '%s': NULL string array", k);
    size_t more = 4 + 8;
    for (uint64_t i = 0; i < n; i++) {
        size_t l = lens ? lens[i] : (strs[i] ? strlen(strs[i]) : 0);
        if (!strs[i] && l)
            return gw_fail(w, err, KVL_E_INVALID, "gguf_write: key '%s': string %llu is NULL", k,
                           (unsigned long long)i);
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
        return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: tensor '%s': name of %zu bytes > %d", name,
                       nlen, GW_MAX_NAME - 1);
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name))
            return gw_fail(w, err, KVL_E_INVALID, "gguf_write: duplicate tensor '%s'", name);
    if (n_dims < 1 || n_dims > KVL_GGUF_MAX_DIMS || !ne)
        return gw_fail(w, err, KVL_E_INVALID, "gguf_write: tensor '%s': n_dims %u not in [1, %d]",
                       name, n_dims, KVL_GGUF_MAX_DIMS);
    size_t blck = 0, tsize = 0;
    const char *tname = NULL;
    if (!kvl_type_info((uint32_t)type, &blck, &tsize, &tname) || blck == 0)
        return gw_fail(w, err, KVL_E_UNSUPPORTED, "gguf_write: tensor '%s': type %d unknown", name,
                       (int)type);
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
            return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: tensor '%s': ne[%u] too large", name,
                           d);
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
    w->path = strdup(path);
    if (!w->path)
        return gw_fail(w, err, KVL_E_NOMEM, "gguf_write: out of memory");
    kvl_status cst = gw_check_target(w, path, err);
    if (cst != KVL_OK)
        return cst;

    size_t hlen = gw_header_len(w), hpad;
    if (kvl_align_up(hlen, w->alignment, &hpad))
        return gw_fail(w, err, KVL_E_LIMIT, "gguf_write: header size overflows");
    uint8_t *h = malloc(hlen);
    if (!h)
        return gw_fail(w, err, KVL_E_NOMEM, "gguf_write: header of %zu bytes: out of memory", hlen);
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

    if ((cst = gw_create_tmp(w, path, err)) != KVL_OK) {
        free(h);
        return cst;
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
    if ((st = gw_check_target(w, w->path, err)) != KVL_OK)
        return st; /* it changed since begin */
    if (rename(w->tmp_path, w->path) != 0) {
        int e = errno;
        return gw_fail(w, err, KVL_E_IO, "gguf_write: renaming '%s' to '%s': %s", w->tmp_path,
                       w->path, strerror(e));
    }
    w->finished = true;
    return KVL_OK;
}
