/*
 * GGUF reader (v2 and v3). The file is untrusted: every count, length, type
 * id, offset and size is checked before use, and every failure is reported
 * as KVL_E_FORMAT (or KVL_E_LIMIT / KVL_E_UNSUPPORTED) with a message naming
 * the field, the value and the limit, e.g.
 *     "gguf: tensor 'blk.3.attn_q.weight': n_dims 7 > 4".
 *
 * Strings and tensor data point into the caller's buffer (usually a
 * read-only mapping of the file); nothing is copied. Strings are NOT
 * NUL-terminated: use (ptr, len).
 */
#ifndef KVL_GGUF_H
#define KVL_GGUF_H

#include "core/core.h"
#include "core/dtype.h"

/* Metadata value types (values as written by llama.cpp). */
typedef enum kvl_gguf_vtype {
    KVL_GGUF_UINT8 = 0,
    KVL_GGUF_INT8 = 1,
    KVL_GGUF_UINT16 = 2,
    KVL_GGUF_INT16 = 3,
    KVL_GGUF_UINT32 = 4,
    KVL_GGUF_INT32 = 5,
    KVL_GGUF_FLOAT32 = 6,
    KVL_GGUF_BOOL = 7,
    KVL_GGUF_STRING = 8,
    KVL_GGUF_ARRAY = 9,
    KVL_GGUF_UINT64 = 10,
    KVL_GGUF_INT64 = 11,
    KVL_GGUF_FLOAT64 = 12,
    KVL_GGUF_VTYPE_COUNT
} kvl_gguf_vtype;

/* Tensor element types (kvl_type, kvl_type_info) and the Q8_0 / Q4_0 block
 * layouts live in core/dtype.h. */

typedef struct kvl_str {
    const char *ptr; /* not NUL-terminated; points into the file buffer */
    uint64_t len;
} kvl_str;

typedef struct kvl_gguf_kv {
    kvl_str key;
    uint32_t type; /* kvl_gguf_vtype */
    union {
        uint64_t u64; /* UINT8..UINT64 and BOOL (zero-extended) */
        int64_t i64;  /* INT8..INT64 (sign-extended) */
        double f64;   /* FLOAT32 and FLOAT64 */
        kvl_str str;  /* STRING */
        struct {
            uint32_t type;       /* element type; never ARRAY (nested arrays are rejected) */
            uint64_t n;          /* element count */
            const uint8_t *data; /* first element in the file (numeric arrays) */
            kvl_str *strs;       /* (n) strings, for arrays of STRING; NULL otherwise */
        } arr;
    } v;
} kvl_gguf_kv;

#define KVL_GGUF_MAX_DIMS 4
typedef struct kvl_gguf_tensor {
    kvl_str name;
    uint32_t n_dims;
    int64_t ne[KVL_GGUF_MAX_DIMS]; /* ne[0] is the fastest-varying; unused dims are 1 */
    uint32_t type;                 /* kvl_type */
    uint64_t offset;               /* from the start of the data section */
    size_t nbytes;
    const void *data; /* points into the buffer */
} kvl_gguf_tensor;

typedef struct kvl_gguf {
    uint32_t version; /* 2 or 3 */
    uint64_t n_kv;
    kvl_gguf_kv *kv; /* (n_kv) */
    uint64_t n_tensors;
    kvl_gguf_tensor *tensors; /* (n_tensors) */
    size_t alignment;         /* general.alignment or 32 */
    size_t data_offset;       /* start of the tensor data section; <= size (a file
                                  without tensors may end before the padding) */
    const uint8_t *buf;       /* (size) the whole file */
    size_t size;
    kvl_mapped_file map; /* set by kvl_gguf_open; unmapped by kvl_gguf_free */
} kvl_gguf;

/* Limits on untrusted counts (beyond "must fit in the file"). */
#define KVL_GGUF_MAX_ALIGNMENT (1u << 20)
/* Tensor names are shorter than this (ggml's GGML_MAX_NAME, with the NUL). */
#define KVL_GGUF_MAX_NAME 64

/* Parse an in-memory GGUF image. buf must outlive the result. */
kvl_status kvl_gguf_parse(const uint8_t *buf, size_t size, kvl_gguf **out, kvl_error *err);
/* Map a file read-only and parse it. */
kvl_status kvl_gguf_open(const char *path, kvl_gguf **out, kvl_error *err);
void kvl_gguf_free(kvl_gguf *g);

/* Lookup by exact name; NULL when absent. */
const kvl_gguf_kv *kvl_gguf_find_key(const kvl_gguf *g, const char *key);
const kvl_gguf_tensor *kvl_gguf_find_tensor(const kvl_gguf *g, const char *name);

/* Typed getters: KVL_OK, or KVL_E_FORMAT naming the key when absent or of
 * the wrong type. Integer getters accept any integer type whose value fits
 * (range-checked); the float getter accepts FLOAT32/FLOAT64. */
kvl_status kvl_gguf_get_u64(const kvl_gguf *g, const char *key, uint64_t *out, kvl_error *err);
kvl_status kvl_gguf_get_f64(const kvl_gguf *g, const char *key, double *out, kvl_error *err);
kvl_status kvl_gguf_get_str(const kvl_gguf *g, const char *key, kvl_str *out, kvl_error *err);

/* Compare a kvl_str with a C string. */
bool kvl_str_eq(kvl_str s, const char *c);

/* --- Additions (gguf.c owner) ------------------------------------------- */

/* Signed counterpart of kvl_gguf_get_u64: any integer type whose value fits
 * in int64_t. */
kvl_status kvl_gguf_get_i64(const kvl_gguf *g, const char *key, int64_t *out, kvl_error *err);
/* The array under key, whose elements have type elem_type (pass
 * KVL_GGUF_VTYPE_COUNT to accept any element type). KVL_E_FORMAT naming the
 * key when absent, not an array, or of another element type. */
kvl_status kvl_gguf_get_arr(const kvl_gguf *g, const char *key, uint32_t elem_type,
                            const kvl_gguf_kv **out, kvl_error *err);
/* Element i of a numeric array (any integer, BOOL or float element type),
 * converted; false when kv is not such an array or i >= n. Unaligned-safe. */
bool kvl_gguf_arr_f64(const kvl_gguf_kv *kv, uint64_t i, double *out);
bool kvl_gguf_arr_i64(const kvl_gguf_kv *kv, uint64_t i, int64_t *out);
/* "UINT8", "STRING", ...; "?" for ids out of range. */
const char *kvl_gguf_vtype_name(uint32_t vtype);
/* Bytes of one scalar value in the file; 0 for STRING, ARRAY and unknown ids. */
size_t kvl_gguf_vtype_size(uint32_t vtype);

#endif
