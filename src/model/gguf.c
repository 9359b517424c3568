/*
 * gguf: reader for GGUF v2 and v3 model files (little-endian only).
 *
 * The whole file is one untrusted byte buffer:
 *
 *   offset 0                                                            size
 *   +------+-----+---------+-----+----------+---------------+-----+---------+
 *   |"GGUF"| ver |n_tensors|n_kv | n_kv x   | n_tensors x   | pad | tensor  |
 *   |  4 B | u32 |   u64   | u64 | key/value| tensor info   |     | data    |
 *   +------+-----+---------+-----+----------+---------------+-----+---------+
 *                                                                  ^ data_offset
 *   string      = u64 len, len bytes (no NUL)
 *   key/value   = string key, u32 value type, value
 *   array value = u32 element type, u64 n, n values (strings: n strings)
 *   tensor info = string name, u32 n_dims, n_dims x i64 ne, u32 type,
 *                 u64 offset (from data_offset, a multiple of the alignment)
 *   data_offset = end of the tensor infos rounded up to general.alignment
 *
 * Invariants of a parsed kvl_gguf: keys and tensor names are non-empty and
 * unique; every string, array and tensor lies inside buf; tensor ranges are
 * aligned and do not overlap; nbytes matches ne and the type's block layout;
 * unused ne[] are 1; arrays of strings own a kvl_str index (the only heap
 * memory besides the kv and tensor arrays).
 *
 * It must not: write to or copy from buf beyond reading headers, trust a
 * count, length, type id or offset before checking it against the bytes
 * that remain, allocate more than a small multiple of the file size, or
 * exit/abort/assert on anything that came from the file. Failure frees
 * everything and leaves *out untouched.
 */
#include "model/gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define GGUF_DEFAULT_ALIGNMENT 32
/* Smallest encodings, used to bound counts before anything is allocated. */
#define GGUF_MIN_STR_BYTES 8    /* u64 length, empty string */
#define GGUF_MIN_KV_BYTES 14    /* u64 len + 1-byte key + u32 type + 1-byte value */
#define GGUF_MIN_TINFO_BYTES 33 /* u64 len + 1-byte name + u32 + i64 + u32 + u64 */
#define SHOW_MAX 48             /* bytes of a name quoted in a message */

static const char *const k_vtype_names[KVL_GGUF_VTYPE_COUNT] = {
    "UINT8", "INT8",   "UINT16", "INT16",  "UINT32", "INT32",   "FLOAT32",
    "BOOL",  "STRING", "ARRAY",  "UINT64", "INT64",  "FLOAT64",
};
static const uint8_t k_vtype_sizes[KVL_GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *kvl_gguf_vtype_name(uint32_t vtype) {
    return vtype < KVL_GGUF_VTYPE_COUNT ? k_vtype_names[vtype] : "?";
}

size_t kvl_gguf_vtype_size(uint32_t vtype) {
    return vtype < KVL_GGUF_VTYPE_COUNT ? k_vtype_sizes[vtype] : 0;
}

bool kvl_str_eq(kvl_str s, const char *c) {
    size_t n = strlen(c);
    return s.len == n && (n == 0 || memcmp(s.ptr, c, n) == 0);
}

/* ---- little-endian decoding ------------------------------------------ */

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | ((uint64_t)le32(p + 4) << 32); }

/* Two's-complement reinterpretation without implementation-defined casts. */
static int64_t as_i64(uint64_t u) { return u <= INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1; }
static int64_t sext(uint64_t u, unsigned bits) {
    uint64_t sign = (uint64_t)1 << (bits - 1);
    uint64_t mask = bits == 64 ? ~(uint64_t)0 : (sign << 1) - 1;
    u &= mask;
    return (u & sign) ? as_i64(u | ~mask) : (int64_t)u;
}
static double f32_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static double f64_bits(uint64_t u) {
    double d;
    memcpy(&d, &u, 8);
    return d;
}

/* Quote a name for a message: printable ASCII only, at most SHOW_MAX bytes. */
static const char *show(kvl_str s, char out[SHOW_MAX + 4]) {
    size_t n = s.len < SHOW_MAX ? (size_t)s.len : SHOW_MAX;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        out[i] = (c >= 0x20 && c < 0x7f && c != '\'') ? (char)c : '?';
    }
    if (s.len > SHOW_MAX) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

/* ---- bounded reader ----------------------------------------------------- */

typedef struct reader {
    const uint8_t *buf; /* (size) */
    size_t size;
    size_t pos; /* <= size */
    kvl_error *err;
    char ctx[96]; /* what is being read: "header", "kv 3", "key 'a.b'", ... */
} reader;

static size_t left(const reader *r) { return r->size - r->pos; }

/* The rd_* helpers always write their output (NULL / 0 on failure). */
static kvl_status rd_bytes(reader *r, const char *field, size_t n, const uint8_t **p) {
    *p = NULL;
    if (n > left(r))
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: %s: %s needs %zu bytes at offset %zu, only %zu left "
                          "(file size %zu)",
                          r->ctx, field, n, r->pos, left(r), r->size);
    *p = r->buf + r->pos;
    r->pos += n;
    return KVL_OK;
}

static kvl_status rd_u32(reader *r, const char *field, uint32_t *v) {
    const uint8_t *p;
    kvl_status st = rd_bytes(r, field, 4, &p);
    *v = st == KVL_OK ? le32(p) : 0;
    return st;
}

static kvl_status rd_u64(reader *r, const char *field, uint64_t *v) {
    const uint8_t *p;
    kvl_status st = rd_bytes(r, field, 8, &p);
    *v = st == KVL_OK ? le64(p) : 0;
    return st;
}

static kvl_status rd_str(reader *r, const char *field, kvl_str *s) {
    char what[64];
    snprintf(what, sizeof what, "%s length", field);
    uint64_t len;
    kvl_status st = rd_u64(r, what, &len);
    if (st != KVL_OK)
        return st;
    if (len > left(r))
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: %s: %s length %" PRIu64 " > %zu bytes left in the file "
                          "(offset %zu, file size %zu)",
                          r->ctx, field, len, left(r), r->pos, r->size);
    s->ptr = (const char *)(r->buf + r->pos);
    s->len = len;
    r->pos += (size_t)len;
    return KVL_OK;
}

/* Message for a 32-bit id out of range, showing its int32 reading too. */
static kvl_status bad_id(reader *r, kvl_status st, const char *field, uint32_t v,
                         const char *limit) {
    if (v > INT32_MAX)
        return kvl_errorf(r->err, st, "gguf: %s: %s %" PRIu32 " (%" PRId64 " as int32) %s", r->ctx,
                          field, v, (int64_t)v - ((int64_t)1 << 32), limit);
    return kvl_errorf(r->err, st, "gguf: %s: %s %" PRIu32 " %s", r->ctx, field, v, limit);
}

/* ---- key/value pairs ---------------------------------------------------- */

/* Decode one scalar of type t at p into kv->v. BOOL must be 0 or 1. r may be
 * NULL (no message) when re-decoding already validated array elements. */
static kvl_status decode_scalar(reader *r, uint32_t t, const uint8_t *p, kvl_gguf_kv *kv) {
    switch (t) {
    case KVL_GGUF_UINT8: kv->v.u64 = p[0]; break;
    case KVL_GGUF_INT8: kv->v.i64 = sext(p[0], 8); break;
    case KVL_GGUF_UINT16: kv->v.u64 = le16(p); break;
    case KVL_GGUF_INT16: kv->v.i64 = sext(le16(p), 16); break;
    case KVL_GGUF_UINT32: kv->v.u64 = le32(p); break;
    case KVL_GGUF_INT32: kv->v.i64 = sext(le32(p), 32); break;
    case KVL_GGUF_UINT64: kv->v.u64 = le64(p); break;
    case KVL_GGUF_INT64: kv->v.i64 = as_i64(le64(p)); break;
    case KVL_GGUF_FLOAT32: kv->v.f64 = f32_bits(le32(p)); break;
    case KVL_GGUF_FLOAT64: kv->v.f64 = f64_bits(le64(p)); break;
    case KVL_GGUF_BOOL:
        if (p[0] > 1)
            return r ? kvl_errorf(r->err, KVL_E_FORMAT, "gguf: %s: BOOL value %u is not 0 or 1",
                                  r->ctx, p[0])
                     : KVL_E_FORMAT;
        kv->v.u64 = p[0];
        break;
    default: KVL_ASSERT(0 && "decode_scalar: not a scalar type");
    }
    return KVL_OK;
}

static kvl_status rd_array(reader *r, kvl_gguf_kv *kv) {
    uint32_t et;
    uint64_t n;
    kvl_status st = rd_u32(r, "array element type", &et);
    if (st != KVL_OK)
        return st;
    if (et >= KVL_GGUF_VTYPE_COUNT)
        return bad_id(r, KVL_E_FORMAT, "array element type", et, "out of range [0, 12]");
    if (et == KVL_GGUF_ARRAY)
        return kvl_errorf(r->err, KVL_E_UNSUPPORTED,
                          "gguf: %s: nested arrays are not supported (array element type 9 = "
                          "ARRAY)",
                          r->ctx);
    if ((st = rd_u64(r, "array length", &n)) != KVL_OK)
        return st;
    kv->v.arr.type = et;
    kv->v.arr.n = n;
    kv->v.arr.data = r->buf + r->pos;
    if (et == KVL_GGUF_STRING) {
        if (n > left(r) / GGUF_MIN_STR_BYTES)
            return kvl_errorf(r->err, KVL_E_FORMAT,
                              "gguf: %s: array length %" PRIu64 " > %zu, the most strings "
                              "the %zu bytes left could hold (8 bytes each at least)",
                              r->ctx, n, left(r) / GGUF_MIN_STR_BYTES, left(r));
        if (n == 0)
            return KVL_OK;
        kvl_str *strs = calloc((size_t)n, sizeof *strs);
        if (!strs)
            return kvl_errorf(r->err, KVL_E_NOMEM, "gguf: %s: no memory for %" PRIu64 " strings",
                              r->ctx, n);
        kv->v.arr.strs = strs; /* owned by kv from here on, freed with it */
        for (uint64_t i = 0; i < n; i++) {
            /* the common case without formatting a name (a Llama 3 vocabulary
             * has 400,000 strings); rd_str words any error */
            if (left(r) >= 8 && le64(r->buf + r->pos) <= left(r) - 8) {
                strs[i].len = le64(r->buf + r->pos);
                strs[i].ptr = (const char *)(r->buf + r->pos + 8);
                r->pos += 8 + (size_t)strs[i].len;
                continue;
            }
            char field[48];
            snprintf(field, sizeof field, "element %" PRIu64, i);
            if ((st = rd_str(r, field, &strs[i])) != KVL_OK)
                return st;
        }
        return KVL_OK;
    }
    size_t es = k_vtype_sizes[et], bytes;
    if (n > SIZE_MAX || kvl_mul_overflow((size_t)n, es, &bytes))
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: %s: array length %" PRIu64 " x %zu-byte %s overflows size_t",
                          r->ctx, n, es, k_vtype_names[et]);
    if (bytes > left(r))
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: %s: array of %" PRIu64 " %s (%zu bytes) > %zu bytes left in "
                          "the file (offset %zu)",
                          r->ctx, n, k_vtype_names[et], bytes, left(r), r->pos);
    if (et == KVL_GGUF_BOOL) {
        for (size_t i = 0; i < bytes; i++)
            if (r->buf[r->pos + i] > 1)
                return kvl_errorf(r->err, KVL_E_FORMAT,
                                  "gguf: %s: BOOL element %zu value %u is not 0 or 1", r->ctx, i,
                                  r->buf[r->pos + i]);
    }
    r->pos += bytes;
    return KVL_OK;
}

static kvl_status rd_kv(reader *r, uint64_t i, kvl_gguf_kv *kv) {
    char name[SHOW_MAX + 4];
    snprintf(r->ctx, sizeof r->ctx, "kv %" PRIu64, i);
    kvl_status st = rd_str(r, "key", &kv->key);
    if (st != KVL_OK)
        return st;
    if (kv->key.len == 0)
        return kvl_errorf(r->err, KVL_E_FORMAT, "gguf: kv %" PRIu64 ": empty key (length 0)", i);
    snprintf(r->ctx, sizeof r->ctx, "key '%s'", show(kv->key, name));
    uint32_t t;
    if ((st = rd_u32(r, "value type", &t)) != KVL_OK)
        return st;
    if (t >= KVL_GGUF_VTYPE_COUNT)
        return bad_id(r, KVL_E_FORMAT, "value type", t, "out of range [0, 12]");
    kv->type = t;
    if (t == KVL_GGUF_STRING)
        return rd_str(r, "value", &kv->v.str);
    if (t == KVL_GGUF_ARRAY)
        return rd_array(r, kv);
    const uint8_t *p;
    if ((st = rd_bytes(r, "value", k_vtype_sizes[t], &p)) != KVL_OK)
        return st;
    return decode_scalar(r, t, p, kv);
}

/* ---- tensor infos ------------------------------------------------------- */

static kvl_status rd_tensor_info(reader *r, uint64_t i, kvl_gguf_tensor *t) {
    char name[SHOW_MAX + 4];
    snprintf(r->ctx, sizeof r->ctx, "tensor %" PRIu64, i);
    kvl_status st = rd_str(r, "name", &t->name);
    if (st != KVL_OK)
        return st;
    if (t->name.len == 0)
        return kvl_errorf(r->err, KVL_E_FORMAT, "gguf: tensor %" PRIu64 ": empty name (length 0)",
                          i);
    /* GGML_MAX_NAME: llama.cpp refuses longer names, and a name cut there
     * could become another tensor's (a renamed output.weight) */
    if (t->name.len >= KVL_GGUF_MAX_NAME)
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: tensor %" PRIu64 " '%s': name of %" PRIu64
                          " bytes > %d (GGUF's limit)",
                          i, show(t->name, name), t->name.len, KVL_GGUF_MAX_NAME - 1);
    snprintf(r->ctx, sizeof r->ctx, "tensor '%s'", show(t->name, name));
    if ((st = rd_u32(r, "n_dims", &t->n_dims)) != KVL_OK)
        return st;
    if (t->n_dims == 0)
        return kvl_errorf(r->err, KVL_E_FORMAT, "gguf: %s: n_dims 0 < 1", r->ctx);
    if (t->n_dims > KVL_GGUF_MAX_DIMS)
        return kvl_errorf(r->err, KVL_E_FORMAT, "gguf: %s: n_dims %" PRIu32 " > %d", r->ctx,
                          t->n_dims, KVL_GGUF_MAX_DIMS);
    for (uint32_t d = 0; d < KVL_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        char field[16];
        uint64_t u;
        snprintf(field, sizeof field, "ne[%" PRIu32 "]", d);
        if ((st = rd_u64(r, field, &u)) != KVL_OK)
            return st;
        t->ne[d] = as_i64(u);
        if (t->ne[d] <= 0)
            return kvl_errorf(r->err, KVL_E_FORMAT, "gguf: %s: ne[%" PRIu32 "] = %" PRId64 " <= 0",
                              r->ctx, d, t->ne[d]);
    }
    if ((st = rd_u32(r, "type", &t->type)) != KVL_OK)
        return st;
    size_t blck, tsize;
    const char *tname;
    if (!kvl_type_info(t->type, &blck, &tsize, &tname))
        return bad_id(r, KVL_E_FORMAT, "type", t->type,
                      "is not a ggml type id with a known block layout (0..39)");
    if (t->ne[0] % (int64_t)blck != 0)
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: %s: ne[0] = %" PRId64
                          " is not a multiple of the %s block size %zu",
                          r->ctx, t->ne[0], tname, blck);
    int64_t nel = t->ne[0];
    bool ovf = false;
    for (int d = 1; d < KVL_GGUF_MAX_DIMS; d++)
        ovf |= __builtin_mul_overflow(nel, t->ne[d], &nel);
    if (ovf)
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: %s: element count %" PRId64 " x %" PRId64 " x %" PRId64
                          " x %" PRId64 " overflows int64",
                          r->ctx, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    size_t nb;
    ovf = kvl_mul_overflow((size_t)(t->ne[0] / (int64_t)blck), tsize, &nb);
    for (int d = 1; d < KVL_GGUF_MAX_DIMS; d++)
        ovf = ovf || (uint64_t)t->ne[d] > SIZE_MAX || kvl_mul_overflow(nb, (size_t)t->ne[d], &nb);
    if (ovf)
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: %s: byte size (%" PRId64 " x %" PRId64 " x %" PRId64 " x %" PRId64
                          " %s, %zu bytes per %zu) overflows size_t",
                          r->ctx, t->ne[0], t->ne[1], t->ne[2], t->ne[3], tname, tsize, blck);
    t->nbytes = nb;
    return rd_u64(r, "offset", &t->offset);
}

/* ---- duplicate and overlap checks --------------------------------------- */

static int cmp_str(kvl_str a, kvl_str b) {
    size_t n = a.len < b.len ? (size_t)a.len : (size_t)b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    if (c)
        return c;
    return (a.len > b.len) - (a.len < b.len);
}

static int cmp_kv_key(const void *pa, const void *pb) {
    const kvl_gguf_kv *a = *(const kvl_gguf_kv *const *)pa, *b = *(const kvl_gguf_kv *const *)pb;
    int c = cmp_str(a->key, b->key);
    return c ? c : (a > b) - (a < b);
}

static int cmp_tensor_name(const void *pa, const void *pb) {
    const kvl_gguf_tensor *a = *(const kvl_gguf_tensor *const *)pa;
    const kvl_gguf_tensor *b = *(const kvl_gguf_tensor *const *)pb;
    int c = cmp_str(a->name, b->name);
    return c ? c : (a > b) - (a < b);
}

static int cmp_tensor_offset(const void *pa, const void *pb) {
    const kvl_gguf_tensor *a = *(const kvl_gguf_tensor *const *)pa;
    const kvl_gguf_tensor *b = *(const kvl_gguf_tensor *const *)pb;
    if (a->offset != b->offset)
        return (a->offset > b->offset) - (a->offset < b->offset);
    return (a > b) - (a < b);
}

/* scratch holds max(n_kv, n_tensors) pointers. */
static kvl_status check_unique_keys(const kvl_gguf *g, const void **scratch, kvl_error *err) {
    const kvl_gguf_kv **p = (const kvl_gguf_kv **)scratch;
    for (uint64_t i = 0; i < g->n_kv; i++)
        p[i] = &g->kv[i];
    if (g->n_kv > 1)
        qsort(p, (size_t)g->n_kv, sizeof *p, cmp_kv_key);
    for (uint64_t i = 1; i < g->n_kv; i++) {
        if (cmp_str(p[i - 1]->key, p[i]->key) == 0) {
            char name[SHOW_MAX + 4];
            return kvl_errorf(err, KVL_E_FORMAT,
                              "gguf: key '%s' appears twice (kv %td and kv %td); keys must be "
                              "unique",
                              show(p[i]->key, name), p[i - 1] - g->kv, p[i] - g->kv);
        }
    }
    return KVL_OK;
}

static kvl_status check_tensor_layout(const kvl_gguf *g, const void **scratch, kvl_error *err) {
    const kvl_gguf_tensor **p = (const kvl_gguf_tensor **)scratch;
    char a[SHOW_MAX + 4], b[SHOW_MAX + 4];
    for (uint64_t i = 0; i < g->n_tensors; i++)
        p[i] = &g->tensors[i];
    if (g->n_tensors > 1)
        qsort(p, (size_t)g->n_tensors, sizeof *p, cmp_tensor_name);
    for (uint64_t i = 1; i < g->n_tensors; i++)
        if (cmp_str(p[i - 1]->name, p[i]->name) == 0)
            return kvl_errorf(err, KVL_E_FORMAT,
                              "gguf: tensor name '%s' appears twice (tensor %td and tensor %td); "
                              "names must be unique",
                              show(p[i]->name, a), p[i - 1] - g->tensors, p[i] - g->tensors);
    if (g->n_tensors > 1)
        qsort(p, (size_t)g->n_tensors, sizeof *p, cmp_tensor_offset);
    for (uint64_t i = 1; i < g->n_tensors; i++) {
        const kvl_gguf_tensor *x = p[i - 1], *y = p[i];
        /* both ranges were checked to lie inside the data section: no overflow */
        if (x->offset + x->nbytes > y->offset)
            return kvl_errorf(err, KVL_E_FORMAT,
                              "gguf: tensor '%s': data [%" PRIu64 ", %" PRIu64
                              ") overlaps tensor '%s' [%" PRIu64 ", %" PRIu64 ")",
                              show(y->name, a), y->offset, y->offset + y->nbytes, show(x->name, b),
                              x->offset, x->offset + x->nbytes);
    }
    return KVL_OK;
}

/* ---- parse -------------------------------------------------------------- */

static kvl_status rd_header(reader *r, uint32_t *version, uint64_t *n_tensors, uint64_t *n_kv) {
    const uint8_t *magic;
    kvl_status st = rd_bytes(r, "magic", 4, &magic);
    if (st != KVL_OK)
        return st;
    if (memcmp(magic, "GGUF", 4) != 0) {
        char shown[8];
        for (int i = 0; i < 4; i++)
            shown[i] = (magic[i] >= 0x20 && magic[i] < 0x7f) ? (char)magic[i] : '?';
        shown[4] = '\0';
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: bad magic 0x%08" PRIx32 " ('%s'), expected 'GGUF' (0x%08" PRIx32
                          ")",
                          le32(magic), shown, le32((const uint8_t *)"GGUF"));
    }
    uint32_t v;
    if ((st = rd_u32(r, "version", &v)) != KVL_OK)
        return st;
    uint32_t swapped = __builtin_bswap32(v);
    if (v > 3 && swapped >= 1 && swapped <= 3)
        return kvl_errorf(r->err, KVL_E_UNSUPPORTED,
                          "gguf: version field 0x%08" PRIx32 " reads as big-endian version %" PRIu32
                          "; big-endian files are not supported (2 or 3, little-endian)",
                          v, swapped);
    if (v == 1)
        return kvl_errorf(r->err, KVL_E_UNSUPPORTED,
                          "gguf: version 1 is not supported (obsolete GGUF v1; 2 or 3 expected)");
    if (v != 2 && v != 3)
        return kvl_errorf(r->err, KVL_E_UNSUPPORTED,
                          "gguf: version %" PRIu32 " is not supported (2 or 3 expected)", v);
    *version = v;
    if ((st = rd_u64(r, "n_tensors", n_tensors)) != KVL_OK ||
        (st = rd_u64(r, "n_kv", n_kv)) != KVL_OK)
        return st;
    size_t max_t = left(r) / GGUF_MIN_TINFO_BYTES;
    if (*n_tensors > max_t)
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: n_tensors %" PRIu64 " > %zu, the most tensor infos the %zu bytes "
                          "after the header could hold (%d bytes each at least)",
                          *n_tensors, max_t, left(r), GGUF_MIN_TINFO_BYTES);
    size_t rest = left(r) - (size_t)*n_tensors * GGUF_MIN_TINFO_BYTES;
    size_t max_kv = rest / GGUF_MIN_KV_BYTES;
    if (*n_kv > max_kv)
        return kvl_errorf(r->err, KVL_E_FORMAT,
                          "gguf: n_kv %" PRIu64 " > %zu, the most key/value pairs the %zu bytes "
                          "after the header and %" PRIu64 " tensor infos could hold (%d bytes "
                          "each at least)",
                          *n_kv, max_kv, rest, *n_tensors, GGUF_MIN_KV_BYTES);
    return KVL_OK;
}

static kvl_status rd_alignment(kvl_gguf *g, kvl_error *err) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const kvl_gguf_kv *a = kvl_gguf_find_key(g, "general.alignment");
    if (!a)
        return KVL_OK;
    if (a->type != KVL_GGUF_UINT32)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "gguf: key 'general.alignment': type %s, expected UINT32",
                          kvl_gguf_vtype_name(a->type));
    uint64_t v = a->v.u64;
    if (v == 0 || (v & (v - 1)) != 0)
        return kvl_errorf(
            err, KVL_E_FORMAT,
            "gguf: key 'general.alignment': %" PRIu64 " is not a nonzero power of two", v);
    if (v > KVL_GGUF_MAX_ALIGNMENT)
        return kvl_errorf(err, KVL_E_LIMIT,
                          "gguf: key 'general.alignment': %" PRIu64
                          " > %u (KVL_GGUF_MAX_ALIGNMENT)",
                          v, (unsigned)KVL_GGUF_MAX_ALIGNMENT);
    g->alignment = (size_t)v;
    return KVL_OK;
}

/* Place the data section and every tensor in it. */
static kvl_status place_tensors(kvl_gguf *g, size_t infos_end, kvl_error *err) {
    size_t doff;
    bool ovf = kvl_align_up(infos_end, g->alignment, &doff);
    if (ovf || doff > g->size) {
        if (g->n_tensors > 0)
            return kvl_errorf(err, KVL_E_FORMAT,
                              "gguf: data section: tensor infos end at offset %zu; aligned to %zu "
                              "the data starts at %zu, past the end of the file (size %zu)",
                              infos_end, g->alignment, ovf ? SIZE_MAX : doff, g->size);
        doff = g->size; /* no tensors: the trailing padding may be missing */
    }
    g->data_offset = doff;
    size_t data_size = g->size - doff;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        kvl_gguf_tensor *t = &g->tensors[i];
        char name[SHOW_MAX + 4];
        if (t->offset % g->alignment != 0)
            return kvl_errorf(err, KVL_E_FORMAT,
                              "gguf: tensor '%s': offset %" PRIu64
                              " is not a multiple of the alignment %zu",
                              show(t->name, name), t->offset, g->alignment);
        if (t->offset > data_size || t->nbytes > data_size - (size_t)t->offset)
            return kvl_errorf(err, KVL_E_FORMAT,
                              "gguf: tensor '%s': offset %" PRIu64 " + %zu bytes > %zu-byte data "
                              "section (file size %zu, data starts at %zu): truncated data",
                              show(t->name, name), t->offset, t->nbytes, data_size, g->size, doff);
        t->data = g->buf + doff + (size_t)t->offset;
    }
    return KVL_OK;
}

kvl_status kvl_gguf_parse(const uint8_t *buf, size_t size, kvl_gguf **out, kvl_error *err) {
    if (!out || (!buf && size > 0))
        return kvl_errorf(err, KVL_E_INVALID, "gguf: parse: %s is NULL", out ? "buf" : "out");
    reader r = {.buf = buf, .size = size, .pos = 0, .err = err};
    snprintf(r.ctx, sizeof r.ctx, "header");
    uint32_t version = 0;
    uint64_t n_tensors = 0, n_kv = 0;
    kvl_status st = rd_header(&r, &version, &n_tensors, &n_kv);
    if (st != KVL_OK)
        return st;

    kvl_gguf *g = calloc(1, sizeof *g);
    const void **scratch = NULL;
    if (!g)
        return kvl_errorf(err, KVL_E_NOMEM, "gguf: no memory for the file header");
    g->version = version;
    g->buf = buf;
    g->size = size;
    /* counts were bounded by the file size above, so these products fit */
    if (n_kv && !(g->kv = calloc((size_t)n_kv, sizeof *g->kv))) {
        st = kvl_errorf(err, KVL_E_NOMEM, "gguf: no memory for %" PRIu64 " key/value pairs", n_kv);
        goto fail;
    }
    g->n_kv = n_kv; /* set after the allocation: kvl_gguf_free walks kv[0, n_kv) */
    if (n_tensors && !(g->tensors = calloc((size_t)n_tensors, sizeof *g->tensors))) {
        st =
            kvl_errorf(err, KVL_E_NOMEM, "gguf: no memory for %" PRIu64 " tensor infos", n_tensors);
        goto fail;
    }
    g->n_tensors = n_tensors;
    size_t n_scratch = (size_t)(n_kv > n_tensors ? n_kv : n_tensors);
    if (n_scratch && !(scratch = calloc(n_scratch, sizeof *scratch))) {
        st = kvl_errorf(err, KVL_E_NOMEM, "gguf: no memory for %zu index entries", n_scratch);
        goto fail;
    }

    for (uint64_t i = 0; i < n_kv; i++)
        if ((st = rd_kv(&r, i, &g->kv[i])) != KVL_OK)
            goto fail;
    if ((st = check_unique_keys(g, scratch, err)) != KVL_OK ||
        (st = rd_alignment(g, err)) != KVL_OK)
        goto fail;
    for (uint64_t i = 0; i < n_tensors; i++)
        if ((st = rd_tensor_info(&r, i, &g->tensors[i])) != KVL_OK)
            goto fail;
    if ((st = place_tensors(g, r.pos, err)) != KVL_OK ||
        (st = check_tensor_layout(g, scratch, err)) != KVL_OK)
        goto fail;
    free(scratch);
    *out = g;
    return KVL_OK;

fail:
    free(scratch);
    kvl_gguf_free(g);
    return st;
}

kvl_status kvl_gguf_open(const char *path, kvl_gguf **out, kvl_error *err) {
    if (!path || !out)
        return kvl_errorf(err, KVL_E_INVALID, "gguf: open: %s is NULL", path ? "out" : "path");
    kvl_mapped_file m;
    kvl_status st = kvl_map_file(path, &m, err);
    if (st != KVL_OK)
        return st;
    kvl_error perr = {0};
    kvl_gguf *g = NULL;
    st = kvl_gguf_parse(m.data, m.size, &g, &perr);
    if (st != KVL_OK) {
        kvl_unmap_file(&m);
        return kvl_errorf(err, st, "%s: %s", path, perr.msg);
    }
    g->map = m;
    *out = g;
    return KVL_OK;
}

void kvl_gguf_free(kvl_gguf *g) {
    if (!g)
        return;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].type == KVL_GGUF_ARRAY)
            free(g->kv[i].v.arr.strs);
    free(g->kv);
    free(g->tensors);
    kvl_unmap_file(&g->map);
    free(g);
}

/* ---- lookup and typed getters ------------------------------------------ */

const kvl_gguf_kv *kvl_gguf_find_key(const kvl_gguf *g, const char *key) {
    if (!g || !key)
        return NULL;
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (kvl_str_eq(g->kv[i].key, key))
            return &g->kv[i];
    return NULL;
}

const kvl_gguf_tensor *kvl_gguf_find_tensor(const kvl_gguf *g, const char *name) {
    if (!g || !name)
        return NULL;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (kvl_str_eq(g->tensors[i].name, name))
            return &g->tensors[i];
    return NULL;
}

static bool is_unsigned_type(uint32_t t) {
    return t == KVL_GGUF_UINT8 || t == KVL_GGUF_UINT16 || t == KVL_GGUF_UINT32 ||
           t == KVL_GGUF_UINT64;
}
static bool is_signed_type(uint32_t t) {
    return t == KVL_GGUF_INT8 || t == KVL_GGUF_INT16 || t == KVL_GGUF_INT32 || t == KVL_GGUF_INT64;
}

static kvl_status find_typed(const kvl_gguf *g, const char *key, const kvl_gguf_kv **kv,
                             kvl_error *err) {
    if (!key)
        return kvl_errorf(err, KVL_E_INVALID, "gguf: key is NULL");
    *kv = kvl_gguf_find_key(g, key);
    if (!*kv)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s' not found", key);
    return KVL_OK;
}

kvl_status kvl_gguf_get_u64(const kvl_gguf *g, const char *key, uint64_t *out, kvl_error *err) {
    const kvl_gguf_kv *kv;
    kvl_status st = find_typed(g, key, &kv, err);
    if (st != KVL_OK)
        return st;
    if (is_unsigned_type(kv->type)) {
        *out = kv->v.u64;
        return KVL_OK;
    }
    if (is_signed_type(kv->type)) {
        if (kv->v.i64 < 0)
            return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s': value %" PRId64 " < 0", key,
                              kv->v.i64);
        *out = (uint64_t)kv->v.i64;
        return KVL_OK;
    }
    return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s': type %s, expected an integer", key,
                      kvl_gguf_vtype_name(kv->type));
}

kvl_status kvl_gguf_get_i64(const kvl_gguf *g, const char *key, int64_t *out, kvl_error *err) {
    const kvl_gguf_kv *kv;
    kvl_status st = find_typed(g, key, &kv, err);
    if (st != KVL_OK)
        return st;
    if (is_signed_type(kv->type)) {
        *out = kv->v.i64;
        return KVL_OK;
    }
    if (is_unsigned_type(kv->type)) {
        if (kv->v.u64 > INT64_MAX)
            return kvl_errorf(err, KVL_E_FORMAT,
                              "gguf: key '%s': value %" PRIu64 " > %" PRId64 " (INT64_MAX)", key,
                              kv->v.u64, INT64_MAX);
        *out = (int64_t)kv->v.u64;
        return KVL_OK;
    }
    return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s': type %s, expected an integer", key,
                      kvl_gguf_vtype_name(kv->type));
}

kvl_status kvl_gguf_get_f64(const kvl_gguf *g, const char *key, double *out, kvl_error *err) {
    const kvl_gguf_kv *kv;
    kvl_status st = find_typed(g, key, &kv, err);
    if (st != KVL_OK)
        return st;
    if (kv->type != KVL_GGUF_FLOAT32 && kv->type != KVL_GGUF_FLOAT64)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s': type %s, expected FLOAT32 or FLOAT64",
                          key, kvl_gguf_vtype_name(kv->type));
    *out = kv->v.f64;
    return KVL_OK;
}

kvl_status kvl_gguf_get_str(const kvl_gguf *g, const char *key, kvl_str *out, kvl_error *err) {
    const kvl_gguf_kv *kv;
    kvl_status st = find_typed(g, key, &kv, err);
    if (st != KVL_OK)
        return st;
    if (kv->type != KVL_GGUF_STRING)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s': type %s, expected STRING", key,
                          kvl_gguf_vtype_name(kv->type));
    *out = kv->v.str;
    return KVL_OK;
}

kvl_status kvl_gguf_get_arr(const kvl_gguf *g, const char *key, uint32_t elem_type,
                            const kvl_gguf_kv **out, kvl_error *err) {
    const kvl_gguf_kv *kv;
    kvl_status st = find_typed(g, key, &kv, err);
    if (st != KVL_OK)
        return st;
    if (kv->type != KVL_GGUF_ARRAY)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s': type %s, expected ARRAY", key,
                          kvl_gguf_vtype_name(kv->type));
    if (elem_type < KVL_GGUF_VTYPE_COUNT && kv->v.arr.type != elem_type)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf: key '%s': array of %s, expected an array of %s",
                          key, kvl_gguf_vtype_name(kv->v.arr.type), kvl_gguf_vtype_name(elem_type));
    *out = kv;
    return KVL_OK;
}

/* Decode numeric array element i into a scratch kv; false if not numeric. */
static bool arr_elem(const kvl_gguf_kv *kv, uint64_t i, kvl_gguf_kv *e) {
    if (!kv || kv->type != KVL_GGUF_ARRAY || i >= kv->v.arr.n)
        return false;
    uint32_t t = kv->v.arr.type;
    size_t es = kvl_gguf_vtype_size(t);
    if (es == 0)
        return false;
    e->type = t;
    /* i < n and n * es was checked to fit in the file */
    return decode_scalar(NULL, t, kv->v.arr.data + (size_t)i * es, e) == KVL_OK;
}

bool kvl_gguf_arr_f64(const kvl_gguf_kv *kv, uint64_t i, double *out) {
    kvl_gguf_kv e;
    if (!arr_elem(kv, i, &e))
        return false;
    if (is_signed_type(e.type))
        *out = (double)e.v.i64;
    else if (e.type == KVL_GGUF_FLOAT32 || e.type == KVL_GGUF_FLOAT64)
        *out = e.v.f64;
    else
        *out = (double)e.v.u64;
    return true;
}

bool kvl_gguf_arr_i64(const kvl_gguf_kv *kv, uint64_t i, int64_t *out) {
    kvl_gguf_kv e;
    if (!arr_elem(kv, i, &e))
        return false;
    if (is_signed_type(e.type)) {
        *out = e.v.i64;
        return true;
    }
    if (is_unsigned_type(e.type) || e.type == KVL_GGUF_BOOL) {
        if (e.v.u64 > INT64_MAX)
            return false;
        *out = (int64_t)e.v.u64;
        return true;
    }
    return false;
}
