/*
 * test_gguf: the GGUF reader against files built byte by byte in memory.
 *
 * One small valid file (5 keys, 5 tensors of the five computed types) is the
 * base; every malformed case patches one field of it at a recorded position,
 * parses, and checks the status and that the message names the field, the
 * value and the limit. Positive cases read back every scalar and array type
 * exactly, check tensor data pointers, custom alignments and v2. Finally the
 * shared stories260K.gguf is parsed. With KVL_GGUF_SEEDS=<dir> it also
 * writes the fuzz seeds (fuzz/seeds/fuzz_gguf) it builds.
 */
#include "model/gguf.h"
#include "testutil.h"

#include <stdlib.h>

/* ---- byte builder ------------------------------------------------------- */

typedef struct wbuf {
    uint8_t *p; /* (n) bytes written, (cap) allocated */
    size_t n, cap;
} wbuf;

static void put(wbuf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            fprintf(stderr, "test_gguf: out of memory\n");
            exit(2);
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u8(wbuf *b, uint8_t v) { put(b, &v, 1); }
static void put_u16(wbuf *b, uint16_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(b, x, 2);
}
static void put_u32(wbuf *b, uint32_t v) {
    uint8_t x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    put(b, x, 4);
}
static void put_u64(wbuf *b, uint64_t v) {
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}
static void put_f32(wbuf *b, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    put_u32(b, u);
}
static void put_f64(wbuf *b, double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    put_u64(b, u);
}
static void put_str(wbuf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void pad_to(wbuf *b, size_t align) {
    while (b->n % align)
        put_u8(b, 0);
}
static void patch_u32(uint8_t *p, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[at + i] = (uint8_t)(v >> (8 * i));
}
static void patch_u64(uint8_t *p, size_t at, uint64_t v) {
    patch_u32(p, at, (uint32_t)v);
    patch_u32(p, at + 4, (uint32_t)(v >> 32));
}

/* ---- the base file ------------------------------------------------------ */

#define N_BASE_KV 5
#define N_BASE_T 5

typedef struct base_opts {
    uint32_t version;
    bool with_align; /* add general.alignment */
    uint32_t align_type;
    uint64_t align_value;
    size_t align; /* alignment the builder lays the data out with */
} base_opts;

/* Positions of the fields the malformed cases patch. */
typedef struct base_pos {
    size_t version, n_tensors, n_kv;
    size_t kv_key_len[N_BASE_KV + 1], kv_type[N_BASE_KV + 1];
    size_t str_val_len;        /* kv "k.name" value length */
    size_t key_two;            /* first byte of "k.two" */
    size_t arr_etype, arr_n;   /* "k.ints" (INT32 x 3) */
    size_t sarr_n, sarr_elem1; /* "k.strs" (STRING x 3), length of element 1 */
    size_t t_name_len[N_BASE_T], t_name[N_BASE_T], t_ndims[N_BASE_T];
    size_t t_ne[N_BASE_T][4], t_type[N_BASE_T], t_offset[N_BASE_T];
    size_t data_offset;
    uint64_t offset[N_BASE_T];
} base_pos;

static const struct {
    const char *name;
    uint32_t type, n_dims;
    int64_t ne[4];
    size_t nbytes;
} k_base_t[N_BASE_T] = {
    {"a", KVL_TYPE_F32, 2, {8, 2, 1, 1}, 64},  {"b", KVL_TYPE_Q8_0, 2, {32, 3, 1, 1}, 102},
    {"c", KVL_TYPE_F16, 1, {4, 1, 1, 1}, 8},   {"d", KVL_TYPE_Q4_0, 4, {64, 1, 1, 2}, 72},
    {"e", KVL_TYPE_BF16, 2, {3, 5, 1, 1}, 30},
};

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* kvs: k.name STRING, k.one UINT32, k.two UINT32, k.ints INT32[3],
 * k.strs STRING[3], optionally general.alignment; then 5 tensors. */
static wbuf build_base(const base_opts *o, base_pos *pos) {
    wbuf b = {0};
    base_pos ps;
    memset(&ps, 0, sizeof ps);
    size_t align = o->align ? o->align : 32;
    put(&b, "GGUF", 4);
    ps.version = b.n;
    put_u32(&b, o->version ? o->version : 3);
    ps.n_tensors = b.n;
    put_u64(&b, N_BASE_T);
    ps.n_kv = b.n;
    put_u64(&b, N_BASE_KV + (o->with_align ? 1 : 0));
    int k = 0;
    ps.kv_key_len[k] = b.n;
    put_str(&b, "k.name");
    ps.kv_type[k++] = b.n;
    put_u32(&b, KVL_GGUF_STRING);
    ps.str_val_len = b.n;
    put_str(&b, "tiny");
    ps.kv_key_len[k] = b.n;
    put_str(&b, "k.one");
    ps.kv_type[k++] = b.n;
    put_u32(&b, KVL_GGUF_UINT32);
    put_u32(&b, 1);
    ps.kv_key_len[k] = b.n;
    ps.key_two = b.n + 8;
    put_str(&b, "k.two");
    ps.kv_type[k++] = b.n;
    put_u32(&b, KVL_GGUF_UINT32);
    put_u32(&b, 2);
    ps.kv_key_len[k] = b.n;
    put_str(&b, "k.ints");
    ps.kv_type[k++] = b.n;
    put_u32(&b, KVL_GGUF_ARRAY);
    ps.arr_etype = b.n;
    put_u32(&b, KVL_GGUF_INT32);
    ps.arr_n = b.n;
    put_u64(&b, 3);
    put_u32(&b, 1);
    put_u32(&b, (uint32_t)-2);
    put_u32(&b, 3);
    ps.kv_key_len[k] = b.n;
    put_str(&b, "k.strs");
    ps.kv_type[k++] = b.n;
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_STRING);
    ps.sarr_n = b.n;
    put_u64(&b, 3);
    put_str(&b, "x");
    ps.sarr_elem1 = b.n;
    put_str(&b, "yz");
    put_str(&b, "");
    if (o->with_align) {
        ps.kv_key_len[k] = b.n;
        put_str(&b, "general.alignment");
        ps.kv_type[k++] = b.n;
        put_u32(&b, o->align_type);
        size_t sz = kvl_gguf_vtype_size(o->align_type);
        if (sz == 8)
            put_u64(&b, o->align_value);
        else if (sz == 4)
            put_u32(&b, (uint32_t)o->align_value);
        else if (sz == 2)
            put_u16(&b, (uint16_t)o->align_value);
        else
            put_u8(&b, (uint8_t)o->align_value);
    }
    uint64_t off = 0;
    for (int t = 0; t < N_BASE_T; t++) {
        ps.t_name_len[t] = b.n;
        ps.t_name[t] = b.n + 8;
        put_str(&b, k_base_t[t].name);
        ps.t_ndims[t] = b.n;
        put_u32(&b, k_base_t[t].n_dims);
        for (uint32_t d = 0; d < k_base_t[t].n_dims; d++) {
            ps.t_ne[t][d] = b.n;
            put_u64(&b, (uint64_t)k_base_t[t].ne[d]);
        }
        ps.t_type[t] = b.n;
        put_u32(&b, k_base_t[t].type);
        ps.t_offset[t] = b.n;
        off = round_up(off, align);
        ps.offset[t] = off;
        put_u64(&b, off);
        off += k_base_t[t].nbytes;
    }
    pad_to(&b, align);
    ps.data_offset = b.n;
    for (int t = 0; t < N_BASE_T; t++) {
        while (b.n < ps.data_offset + ps.offset[t])
            put_u8(&b, 0xee);
        for (size_t i = 0; i < k_base_t[t].nbytes; i++)
            put_u8(&b, (uint8_t)(t * 16 + i));
    }
    if (pos)
        *pos = ps;
    return b;
}

static wbuf base_default(base_pos *pos) {
    base_opts o = {.version = 3};
    return build_base(&o, pos);
}

/* Parse buf; expect failure with status st and every needle in the message.
 * On an unexpected success the result is freed. */
static void expect_fail_at(int line, const uint8_t *p, size_t n, kvl_status st, const char *n1,
                           const char *n2, const char *n3) {
    kvl_gguf *g = (kvl_gguf *)(uintptr_t)0x1; /* must stay untouched */
    kvl_error err = {0};
    kvl_status got = kvl_gguf_parse(p, n, &g, &err);
    kvt_checks++;
    if (got != st) {
        kvt_failures++;
        fprintf(stderr, "test_gguf.c:%d: status %d (%s), expected %d: %s\n", line, (int)got,
                kvl_status_str(got), (int)st, err.msg);
        if (got == KVL_OK)
            kvl_gguf_free(g);
        return;
    }
    CHECK(g == (kvl_gguf *)(uintptr_t)0x1);
    if (getenv("KVL_TEST_VERBOSE"))
        printf("  line %d: %s\n", line, err.msg);
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++) {
        if (!needles[i])
            continue;
        kvt_checks++;
        if (!strstr(err.msg, needles[i])) {
            kvt_failures++;
            fprintf(stderr, "test_gguf.c:%d: message \"%s\" lacks \"%s\"\n", line, err.msg,
                    needles[i]);
        }
    }
}
#define EXPECT_FAIL(p, n, st, a, b, c) expect_fail_at(__LINE__, p, n, st, a, b, c)

/* A copy of the base file with one u32/u64 patched, parsed, expected to fail. */
static void patched_u32_at(int line, size_t at, uint32_t v, kvl_status st, const char *n1,
                           const char *n2, const char *n3) {
    wbuf b = base_default(NULL);
    patch_u32(b.p, at, v);
    expect_fail_at(line, b.p, b.n, st, n1, n2, n3);
    free(b.p);
}
static void patched_u64_at(int line, size_t at, uint64_t v, kvl_status st, const char *n1,
                           const char *n2, const char *n3) {
    wbuf b = base_default(NULL);
    patch_u64(b.p, at, v);
    expect_fail_at(line, b.p, b.n, st, n1, n2, n3);
    free(b.p);
}
#define FAIL_U32(at, v, st, a, b, c) patched_u32_at(__LINE__, at, v, st, a, b, c)
#define FAIL_U64(at, v, st, a, b, c) patched_u64_at(__LINE__, at, v, st, a, b, c)

/* ---- positive cases ----------------------------------------------------- */

static void check_base(const kvl_gguf *g, const base_pos *ps, const uint8_t *buf, size_t align,
                       bool with_align) {
    CHECK_EQ_INT(g->n_kv, N_BASE_KV + (with_align ? 1 : 0));
    CHECK_EQ_INT(g->n_tensors, N_BASE_T);
    CHECK_EQ_INT(g->alignment, align);
    CHECK_EQ_INT(g->data_offset, ps->data_offset);
    CHECK_EQ_INT(g->data_offset % align, 0);
    for (int t = 0; t < N_BASE_T; t++) {
        const kvl_gguf_tensor *x = kvl_gguf_find_tensor(g, k_base_t[t].name);
        CHECK(x == &g->tensors[t]);
        if (!x)
            continue;
        CHECK_EQ_INT(x->type, k_base_t[t].type);
        CHECK_EQ_INT(x->n_dims, k_base_t[t].n_dims);
        for (int d = 0; d < 4; d++)
            CHECK_EQ_INT(x->ne[d], k_base_t[t].ne[d]);
        CHECK_EQ_INT(x->nbytes, k_base_t[t].nbytes);
        CHECK_EQ_INT(x->offset, ps->offset[t]);
        CHECK(x->data == buf + ps->data_offset + ps->offset[t]);
        const uint8_t *d = x->data;
        CHECK_EQ_INT(d[0], t * 16);
        CHECK_EQ_INT(d[x->nbytes - 1], (uint8_t)(t * 16 + x->nbytes - 1));
    }
    CHECK(kvl_gguf_find_tensor(g, "f") == NULL);
    CHECK(kvl_gguf_find_tensor(g, "") == NULL);
    kvl_str s;
    kvl_error err;
    CHECK_EQ_INT(kvl_gguf_get_str(g, "k.name", &s, &err), KVL_OK);
    CHECK(kvl_str_eq(s, "tiny"));
    const kvl_gguf_kv *a = NULL;
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "k.strs", KVL_GGUF_STRING, &a, &err), KVL_OK);
    if (a) {
        CHECK_EQ_INT(a->v.arr.n, 3);
        CHECK(kvl_str_eq(a->v.arr.strs[0], "x"));
        CHECK(kvl_str_eq(a->v.arr.strs[1], "yz"));
        CHECK(kvl_str_eq(a->v.arr.strs[2], ""));
    }
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "k.ints", KVL_GGUF_INT32, &a, &err), KVL_OK);
    int64_t i64 = 0;
    CHECK(kvl_gguf_arr_i64(a, 1, &i64));
    CHECK_EQ_INT(i64, -2);
    CHECK(!kvl_gguf_arr_i64(a, 3, &i64));
}

static void test_base_and_alignment(void) {
    base_pos ps;
    wbuf b = base_default(&ps);
    kvl_gguf *g = NULL;
    kvl_error err = {0};
    CHECK_EQ_INT(kvl_gguf_parse(b.p, b.n, &g, &err), KVL_OK);
    if (g) {
        CHECK_EQ_INT(g->version, 3);
        check_base(g, &ps, b.p, 32, false);
        CHECK(kvl_gguf_find_key(g, "general.alignment") == NULL);
        kvl_gguf_free(g);
    }
    free(b.p);

    const size_t aligns[] = {1, 8, 64, 4096};
    for (size_t i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        base_opts o = {.version = 3,
                       .with_align = true,
                       .align_type = KVL_GGUF_UINT32,
                       .align_value = aligns[i],
                       .align = aligns[i]};
        b = build_base(&o, &ps);
        g = NULL;
        CHECK_EQ_INT(kvl_gguf_parse(b.p, b.n, &g, &err), KVL_OK);
        if (g) {
            check_base(g, &ps, b.p, aligns[i], true);
            kvl_gguf_free(g);
        }
        free(b.p);
    }
    kvl_gguf_free(NULL);
}

/* Every scalar type, arrays of several types, v2 and v3. */
/* A file without tensors holding every scalar type and arrays of several. */
static wbuf build_values(uint32_t version) {
    wbuf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, version);
    put_u64(&b, 0);  /* n_tensors */
    put_u64(&b, 20); /* n_kv */
    put_str(&b, "u8");
    put_u32(&b, KVL_GGUF_UINT8);
    put_u8(&b, 200);
    put_str(&b, "i8");
    put_u32(&b, KVL_GGUF_INT8);
    put_u8(&b, (uint8_t)-100);
    put_str(&b, "u16");
    put_u32(&b, KVL_GGUF_UINT16);
    put_u16(&b, 60000);
    put_str(&b, "i16");
    put_u32(&b, KVL_GGUF_INT16);
    put_u16(&b, (uint16_t)-30000);
    put_str(&b, "u32");
    put_u32(&b, KVL_GGUF_UINT32);
    put_u32(&b, 4000000000u);
    put_str(&b, "i32");
    put_u32(&b, KVL_GGUF_INT32);
    put_u32(&b, (uint32_t)INT32_MIN);
    put_str(&b, "f32");
    put_u32(&b, KVL_GGUF_FLOAT32);
    put_f32(&b, -1.5e-3f);
    put_str(&b, "bool");
    put_u32(&b, KVL_GGUF_BOOL);
    put_u8(&b, 1);
    put_str(&b, "str");
    put_u32(&b, KVL_GGUF_STRING);
    put_str(&b, "hello, gguf");
    put_str(&b, "u64");
    put_u32(&b, KVL_GGUF_UINT64);
    put_u64(&b, UINT64_MAX - 6);
    put_str(&b, "i64");
    put_u32(&b, KVL_GGUF_INT64);
    put_u64(&b, (uint64_t)INT64_MIN + 3);
    put_str(&b, "f64");
    put_u32(&b, KVL_GGUF_FLOAT64);
    put_f64(&b, 3.25e300);
    put_str(&b, "a.u8");
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_UINT8);
    put_u64(&b, 3);
    put_u8(&b, 0);
    put_u8(&b, 7);
    put_u8(&b, 255);
    put_str(&b, "a.i16");
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_INT16);
    put_u64(&b, 2);
    put_u16(&b, (uint16_t)-5);
    put_u16(&b, 32767);
    put_str(&b, "a.f32");
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_FLOAT32);
    put_u64(&b, 3);
    put_f32(&b, 0.25f);
    put_f32(&b, -2.0f);
    put_f32(&b, 1e30f);
    put_str(&b, "a.bool");
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_BOOL);
    put_u64(&b, 2);
    put_u8(&b, 1);
    put_u8(&b, 0);
    put_str(&b, "a.u64");
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_UINT64);
    put_u64(&b, 2);
    put_u64(&b, UINT64_MAX);
    put_u64(&b, 42);
    put_str(&b, "a.f64");
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_FLOAT64);
    put_u64(&b, 1);
    put_f64(&b, -0.1);
    put_str(&b, "a.str");
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_STRING);
    put_u64(&b, 4);
    put_str(&b, "<s>");
    put_str(&b, "");
    put_str(&b, "\xe2\x96\x81the");
    put_str(&b, "z");
    put_str(&b, "a.empty");
    put_u32(&b, KVL_GGUF_ARRAY);
    put_u32(&b, KVL_GGUF_STRING);
    put_u64(&b, 0);
    return b;
}

static void test_all_value_types(uint32_t version) {
    wbuf b = build_values(version);
    kvl_gguf *g = NULL;
    kvl_error err = {0};
    CHECK_EQ_INT(kvl_gguf_parse(b.p, b.n, &g, &err), KVL_OK);
    if (!g) {
        fprintf(stderr, "  %s\n", err.msg);
        free(b.p);
        return;
    }
    CHECK_EQ_INT(g->version, version);
    CHECK_EQ_INT(g->n_kv, 20);
    CHECK_EQ_INT(g->n_tensors, 0);
    CHECK_EQ_INT(g->data_offset, b.n); /* no tensors, no trailing padding */
    uint64_t u = 0;
    int64_t i = 0;
    double f = 0;
    kvl_str s = {0};
    CHECK_EQ_INT(kvl_gguf_get_u64(g, "u8", &u, &err), KVL_OK);
    CHECK_EQ_INT(u, 200);
    CHECK_EQ_INT(kvl_gguf_get_i64(g, "i8", &i, &err), KVL_OK);
    CHECK_EQ_INT(i, -100);
    CHECK_EQ_INT(kvl_gguf_get_u64(g, "u16", &u, &err), KVL_OK);
    CHECK_EQ_INT(u, 60000);
    CHECK_EQ_INT(kvl_gguf_get_i64(g, "i16", &i, &err), KVL_OK);
    CHECK_EQ_INT(i, -30000);
    CHECK_EQ_INT(kvl_gguf_get_u64(g, "u32", &u, &err), KVL_OK);
    CHECK_EQ_INT(u, 4000000000u);
    CHECK_EQ_INT(kvl_gguf_get_i64(g, "i32", &i, &err), KVL_OK);
    CHECK_EQ_INT(i, INT32_MIN);
    CHECK_EQ_INT(kvl_gguf_get_f64(g, "f32", &f, &err), KVL_OK);
    CHECK(f == (double)-1.5e-3f);
    const kvl_gguf_kv *kv = kvl_gguf_find_key(g, "bool");
    CHECK(kv && kv->type == KVL_GGUF_BOOL && kv->v.u64 == 1);
    CHECK_EQ_INT(kvl_gguf_get_str(g, "str", &s, &err), KVL_OK);
    CHECK(kvl_str_eq(s, "hello, gguf"));
    CHECK(!kvl_str_eq(s, "hello, ggu"));
    CHECK_EQ_INT(kvl_gguf_get_u64(g, "u64", &u, &err), KVL_OK);
    CHECK(u == UINT64_MAX - 6);
    CHECK_EQ_INT(kvl_gguf_get_i64(g, "i64", &i, &err), KVL_OK);
    CHECK(i == INT64_MIN + 3);
    CHECK_EQ_INT(kvl_gguf_get_f64(g, "f64", &f, &err), KVL_OK);
    CHECK(f == 3.25e300);

    /* getters: wrong type, out of range, missing */
    CHECK_EQ_INT(kvl_gguf_get_u64(g, "i8", &u, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "'i8'");
    CHECK_CONTAINS(err.msg, "-100 < 0");
    CHECK_EQ_INT(kvl_gguf_get_i64(g, "u64", &i, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "18446744073709551609 > 9223372036854775807");
    CHECK_EQ_INT(kvl_gguf_get_u64(g, "str", &u, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "type STRING, expected an integer");
    CHECK_EQ_INT(kvl_gguf_get_u64(g, "bool", &u, &err), KVL_E_FORMAT);
    CHECK_EQ_INT(kvl_gguf_get_f64(g, "u8", &f, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "type UINT8, expected FLOAT32 or FLOAT64");
    CHECK_EQ_INT(kvl_gguf_get_str(g, "u8", &s, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "expected STRING");
    CHECK_EQ_INT(kvl_gguf_get_u64(g, "nope", &u, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "key 'nope' not found");
    CHECK(kvl_gguf_find_key(g, "u") == NULL);
    CHECK(kvl_gguf_find_key(g, "u88") == NULL);
    const kvl_gguf_kv *arr = NULL;
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "a.u8", KVL_GGUF_INT8, &arr, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "array of UINT8, expected an array of INT8");
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "u8", KVL_GGUF_VTYPE_COUNT, &arr, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "expected ARRAY");

    /* arrays */
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "a.u8", KVL_GGUF_UINT8, &arr, &err), KVL_OK);
    CHECK(arr && arr->v.arr.n == 3 && arr->v.arr.strs == NULL);
    CHECK(kvl_gguf_arr_i64(arr, 2, &i) && i == 255);
    CHECK(kvl_gguf_arr_f64(arr, 1, &f) && f == 7.0);
    CHECK(!kvl_gguf_arr_f64(arr, 3, &f));
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "a.i16", KVL_GGUF_INT16, &arr, &err), KVL_OK);
    CHECK(kvl_gguf_arr_i64(arr, 0, &i) && i == -5);
    CHECK(kvl_gguf_arr_i64(arr, 1, &i) && i == 32767);
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "a.f32", KVL_GGUF_FLOAT32, &arr, &err), KVL_OK);
    CHECK(kvl_gguf_arr_f64(arr, 0, &f) && f == 0.25);
    CHECK(kvl_gguf_arr_f64(arr, 1, &f) && f == -2.0);
    CHECK(kvl_gguf_arr_f64(arr, 2, &f) && f == (double)1e30f);
    CHECK(!kvl_gguf_arr_i64(arr, 0, &i)); /* floats are not integers */
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "a.bool", KVL_GGUF_BOOL, &arr, &err), KVL_OK);
    CHECK(kvl_gguf_arr_i64(arr, 0, &i) && i == 1);
    CHECK(kvl_gguf_arr_i64(arr, 1, &i) && i == 0);
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "a.u64", KVL_GGUF_UINT64, &arr, &err), KVL_OK);
    CHECK(!kvl_gguf_arr_i64(arr, 0, &i)); /* > INT64_MAX */
    CHECK(kvl_gguf_arr_i64(arr, 1, &i) && i == 42);
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "a.f64", KVL_GGUF_FLOAT64, &arr, &err), KVL_OK);
    CHECK(kvl_gguf_arr_f64(arr, 0, &f) && f == -0.1);
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "a.str", KVL_GGUF_STRING, &arr, &err), KVL_OK);
    if (arr && arr->v.arr.strs) {
        CHECK_EQ_INT(arr->v.arr.n, 4);
        CHECK(kvl_str_eq(arr->v.arr.strs[0], "<s>"));
        CHECK(kvl_str_eq(arr->v.arr.strs[1], ""));
        CHECK(kvl_str_eq(arr->v.arr.strs[2], "\xe2\x96\x81the"));
        CHECK(kvl_str_eq(arr->v.arr.strs[3], "z"));
        CHECK(!kvl_gguf_arr_f64(arr, 0, &f));
    } else {
        CHECK(0 && "a.str has no string index");
    }
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "a.empty", KVL_GGUF_VTYPE_COUNT, &arr, &err), KVL_OK);
    CHECK(arr && arr->v.arr.n == 0 && arr->v.arr.type == KVL_GGUF_STRING);
    kvl_gguf_free(g);

    /* every proper prefix of it fails cleanly */
    for (size_t n = 0; n < b.n; n++) {
        g = NULL;
        kvl_status st = kvl_gguf_parse(b.p, n, &g, &err);
        kvt_checks++;
        if (st == KVL_OK || g != NULL || err.msg[0] == '\0') {
            kvt_failures++;
            fprintf(stderr, "value-type file prefix %zu: status %d\n", n, (int)st);
            kvl_gguf_free(g);
        }
    }
    free(b.p);
}

static void test_type_info(void) {
    size_t blck = 0, ts = 0;
    const char *name = NULL;
    CHECK(kvl_type_info(KVL_TYPE_F32, &blck, &ts, &name) && blck == 1 && ts == 4);
    CHECK(strcmp(name, "F32") == 0);
    CHECK(kvl_type_info(KVL_TYPE_F16, &blck, &ts, &name) && blck == 1 && ts == 2);
    CHECK(kvl_type_info(KVL_TYPE_BF16, &blck, &ts, &name) && blck == 1 && ts == 2);
    CHECK(strcmp(name, "BF16") == 0);
    CHECK(kvl_type_info(KVL_TYPE_Q8_0, &blck, &ts, &name) && blck == 32 && ts == 34);
    CHECK(ts == sizeof(kvl_block_q8_0));
    CHECK(kvl_type_info(KVL_TYPE_Q4_0, &blck, &ts, &name) && blck == 32 && ts == 18);
    CHECK(ts == sizeof(kvl_block_q4_0));
    CHECK(kvl_type_info(14, &blck, &ts, NULL) && blck == 256 && ts == 210); /* Q6_K */
    CHECK(!kvl_type_info(4, NULL, NULL, NULL));                             /* removed Q4_2 */
    CHECK(!kvl_type_info(5, NULL, NULL, NULL));
    CHECK(!kvl_type_info(31, NULL, NULL, NULL));
    CHECK(!kvl_type_info(KVL_TYPE_COUNT, NULL, NULL, NULL));
    CHECK(!kvl_type_info(UINT32_MAX, NULL, NULL, NULL));
    CHECK(strcmp(kvl_gguf_vtype_name(KVL_GGUF_FLOAT64), "FLOAT64") == 0);
    CHECK(strcmp(kvl_gguf_vtype_name(99), "?") == 0);
    CHECK_EQ_INT(kvl_gguf_vtype_size(KVL_GGUF_UINT64), 8);
    CHECK_EQ_INT(kvl_gguf_vtype_size(KVL_GGUF_STRING), 0);
}

/* ---- malformed files ---------------------------------------------------- */

static void test_header(void) {
    base_pos ps;
    wbuf b = base_default(&ps);
    uint8_t *c = malloc(b.n);
    memcpy(c, b.p, b.n);
    memcpy(c, "GGUG", 4);
    EXPECT_FAIL(c, b.n, KVL_E_FORMAT, "bad magic", "'GGUG'", "expected 'GGUF'");
    memcpy(c, "\0\0\0\0", 4);
    EXPECT_FAIL(c, b.n, KVL_E_FORMAT, "bad magic 0x00000000", "'?\?\?\?'", "GGUF");
    free(c);
    EXPECT_FAIL(b.p, 0, KVL_E_FORMAT, "header", "magic needs 4 bytes", "file size 0");
    EXPECT_FAIL(NULL, 0, KVL_E_FORMAT, "magic", NULL, NULL);
    free(b.p);

    FAIL_U32(ps.version, 0, KVL_E_UNSUPPORTED, "version 0 is not supported", "2 or 3", NULL);
    FAIL_U32(ps.version, 1, KVL_E_UNSUPPORTED, "version 1 is not supported", "v1", NULL);
    FAIL_U32(ps.version, 4, KVL_E_UNSUPPORTED, "version 4 is not supported", "2 or 3", NULL);
    FAIL_U32(ps.version, UINT32_MAX, KVL_E_UNSUPPORTED, "version 4294967295", "2 or 3", NULL);
    FAIL_U32(ps.version, 0x03000000u, KVL_E_UNSUPPORTED, "0x03000000", "big-endian version 3",
             "not supported");
    FAIL_U32(ps.version, 0x02000000u, KVL_E_UNSUPPORTED, "big-endian version 2", NULL, NULL);

    FAIL_U64(ps.n_kv, (uint64_t)1 << 62, KVL_E_FORMAT, "n_kv 4611686018427387904 >",
             "the most key/value pairs", NULL);
    FAIL_U64(ps.n_kv, UINT64_MAX, KVL_E_FORMAT, "n_kv 18446744073709551615 >", NULL, NULL);
    FAIL_U64(ps.n_tensors, (uint64_t)1 << 62, KVL_E_FORMAT, "n_tensors 4611686018427387904 >",
             "the most tensor infos", NULL);
    FAIL_U64(ps.n_tensors, UINT64_MAX, KVL_E_FORMAT, "n_tensors 18446744073709551615", NULL, NULL);
    /* a count that fits the bound but not the data: runs into the tensor infos */
    FAIL_U64(ps.n_kv, 6, KVL_E_FORMAT, NULL, NULL, NULL);
}

static void test_kv_errors(void) {
    base_pos ps;
    wbuf b = base_default(&ps);
    free(b.p);
    /* string lengths past the end */
    FAIL_U64(ps.kv_key_len[0], (uint64_t)1 << 63, KVL_E_FORMAT, "kv 0",
             "key length 9223372036854775808 >", "bytes left");
    FAIL_U64(ps.kv_key_len[2], UINT64_MAX, KVL_E_FORMAT, "kv 2",
             "key length 18446744073709551615 >", NULL);
    FAIL_U64(ps.str_val_len, 100000, KVL_E_FORMAT, "key 'k.name'", "value length 100000 >",
             "bytes left");
    FAIL_U64(ps.sarr_elem1, 1u << 20, KVL_E_FORMAT, "key 'k.strs'", "element 1 length 1048576 >",
             NULL);
    /* empty and duplicate keys */
    FAIL_U64(ps.kv_key_len[1], 0, KVL_E_FORMAT, "kv 1: empty key", NULL, NULL);
    {
        wbuf c = base_default(NULL);
        memcpy(c.p + ps.key_two, "k.one", 5);
        EXPECT_FAIL(c.p, c.n, KVL_E_FORMAT, "key 'k.one' appears twice", "kv 1 and kv 2", NULL);
        free(c.p);
    }
    /* value type ids */
    FAIL_U32(ps.kv_type[1], 13, KVL_E_FORMAT, "key 'k.one'", "value type 13 out of range",
             "[0, 12]");
    FAIL_U32(ps.kv_type[1], UINT32_MAX, KVL_E_FORMAT, "value type 4294967295 (-1 as int32)",
             "out of range", NULL);
    FAIL_U32(ps.kv_type[1], 0x80000000u, KVL_E_FORMAT, "(-2147483648 as int32)", NULL, NULL);
    /* arrays: nested, bad element type, lengths past the end and overflowing */
    FAIL_U32(ps.arr_etype, KVL_GGUF_ARRAY, KVL_E_UNSUPPORTED, "key 'k.ints'", "nested arrays",
             NULL);
    FAIL_U32(ps.arr_etype, 13, KVL_E_FORMAT, "key 'k.ints'", "array element type 13",
             "out of range [0, 12]");
    FAIL_U32(ps.arr_etype, 0xfffffff0u, KVL_E_FORMAT, "(-16 as int32)", NULL, NULL);
    FAIL_U64(ps.arr_n, 1000, KVL_E_FORMAT, "array of 1000 INT32 (4000 bytes) >", "bytes left",
             NULL);
    FAIL_U64(ps.arr_n, (uint64_t)1 << 62, KVL_E_FORMAT,
             "array length 4611686018427387904 x 4-byte INT32 overflows", NULL, NULL);
    FAIL_U64(ps.arr_n, UINT64_MAX, KVL_E_FORMAT, "overflows", NULL, NULL);
    FAIL_U64(ps.sarr_n, (uint64_t)1 << 40, KVL_E_FORMAT, "key 'k.strs'",
             "array length 1099511627776 >", "the most strings");
    FAIL_U64(ps.sarr_n, 5, KVL_E_FORMAT, "key 'k.strs'", NULL, NULL);
    /* a BOOL that is neither 0 nor 1 */
    {
        wbuf c = base_default(NULL);
        patch_u32(c.p, ps.kv_type[1], KVL_GGUF_BOOL);
        c.p[ps.kv_type[1] + 4] = 2; /* the low byte of the UINT32 value */
        /* the remaining 3 bytes of the old value now misparse; the bool fails first */
        EXPECT_FAIL(c.p, c.n, KVL_E_FORMAT, "key 'k.one'", "BOOL value 2 is not 0 or 1", NULL);
        free(c.p);
    }
}

static void test_alignment_errors(void) {
    struct {
        uint32_t type;
        uint64_t value;
        kvl_status st;
        const char *n1, *n2;
    } cases[] = {
        {KVL_GGUF_UINT32, 0, KVL_E_FORMAT, "general.alignment': 0", "nonzero power of two"},
        {KVL_GGUF_UINT32, 3, KVL_E_FORMAT, "general.alignment': 3", "power of two"},
        {KVL_GGUF_UINT32, 48, KVL_E_FORMAT, "48 is not a nonzero power of two", NULL},
        {KVL_GGUF_UINT32, 1u << 21, KVL_E_LIMIT, "2097152 > 1048576", "KVL_GGUF_MAX_ALIGNMENT"},
        {KVL_GGUF_UINT32, 1u << 31, KVL_E_LIMIT, "2147483648 > 1048576", NULL},
        {KVL_GGUF_INT32, 32, KVL_E_FORMAT, "type INT32, expected UINT32", NULL},
        {KVL_GGUF_UINT64, 32, KVL_E_FORMAT, "type UINT64, expected UINT32", NULL},
        {KVL_GGUF_UINT8, 32, KVL_E_FORMAT, "type UINT8, expected UINT32", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        base_opts o = {.version = 3,
                       .with_align = true,
                       .align_type = cases[i].type,
                       .align_value = cases[i].value,
                       .align = 32};
        wbuf b = build_base(&o, NULL);
        EXPECT_FAIL(b.p, b.n, cases[i].st, cases[i].n1, cases[i].n2, NULL);
        free(b.p);
    }
    /* a file laid out for 32 but declaring 64: offset 32*k misaligned */
    base_opts o = {.version = 3,
                   .with_align = true,
                   .align_type = KVL_GGUF_UINT32,
                   .align_value = 64,
                   .align = 32};
    wbuf b = build_base(&o, NULL);
    EXPECT_FAIL(b.p, b.n, KVL_E_FORMAT, "not a multiple of the alignment 64", NULL, NULL);
    free(b.p);
}

static void test_tensor_errors(void) {
    base_pos ps;
    wbuf b = base_default(&ps);
    /* names */
    FAIL_U64(ps.t_name_len[2], 0, KVL_E_FORMAT, "tensor 2: empty name", NULL, NULL);
    FAIL_U64(ps.t_name_len[1], (uint64_t)1 << 50, KVL_E_FORMAT, "tensor 1",
             "name length 1125899906842624 >", "bytes left");
    {
        uint8_t *c = malloc(b.n);
        memcpy(c, b.p, b.n);
        c[ps.t_name[3]] = 'b';
        EXPECT_FAIL(c, b.n, KVL_E_FORMAT, "tensor name 'b' appears twice", "tensor 1 and tensor 3",
                    NULL);
        free(c);
    }
    /* n_dims */
    FAIL_U32(ps.t_ndims[0], 0, KVL_E_FORMAT, "tensor 'a'", "n_dims 0 < 1", NULL);
    FAIL_U32(ps.t_ndims[0], 5, KVL_E_FORMAT, "tensor 'a'", "n_dims 5 > 4", NULL);
    FAIL_U32(ps.t_ndims[1], 7, KVL_E_FORMAT, "tensor 'b': n_dims 7 > 4", NULL, NULL);
    FAIL_U32(ps.t_ndims[1], UINT32_MAX, KVL_E_FORMAT, "n_dims 4294967295 > 4", NULL, NULL);
    /* dims */
    FAIL_U64(ps.t_ne[0][1], 0, KVL_E_FORMAT, "tensor 'a'", "ne[1] = 0 <= 0", NULL);
    FAIL_U64(ps.t_ne[0][0], (uint64_t)-3, KVL_E_FORMAT, "tensor 'a'", "ne[0] = -3 <= 0", NULL);
    FAIL_U64(ps.t_ne[3][3], (uint64_t)1 << 63, KVL_E_FORMAT, "tensor 'd'",
             "ne[3] = -9223372036854775808 <= 0", NULL);
    FAIL_U64(ps.t_ne[1][0], 33, KVL_E_FORMAT, "tensor 'b'",
             "ne[0] = 33 is not a multiple of the Q8_0 block size 32", NULL);
    FAIL_U64(ps.t_ne[3][0], 48, KVL_E_FORMAT, "Q4_0 block size 32", NULL, NULL);
    /* element count and byte size overflow */
    {
        uint8_t *c = malloc(b.n);
        memcpy(c, b.p, b.n);
        patch_u64(c, ps.t_ne[0][0], (uint64_t)1 << 40);
        patch_u64(c, ps.t_ne[0][1], (uint64_t)1 << 40);
        EXPECT_FAIL(c, b.n, KVL_E_FORMAT, "tensor 'a'",
                    "element count 1099511627776 x 1099511627776 x 1 x 1 overflows int64", NULL);
        memcpy(c, b.p, b.n);
        patch_u64(c, ps.t_ne[0][0], (uint64_t)1 << 62);
        patch_u64(c, ps.t_ne[0][1], 1);
        EXPECT_FAIL(c, b.n, KVL_E_FORMAT, "tensor 'a'", "byte size", "overflows size_t");
        memcpy(c, b.p, b.n);
        patch_u64(c, ps.t_ne[3][0], (uint64_t)1 << 40);
        patch_u64(c, ps.t_ne[3][3], (uint64_t)1 << 30);
        EXPECT_FAIL(c, b.n, KVL_E_FORMAT, "tensor 'd'", "x 1073741824 overflows int64", NULL);
        memcpy(c, b.p, b.n);
        patch_u64(c, ps.t_ne[0][0], (uint64_t)1 << 40); /* 4 TiB: fits, but past the end */
        EXPECT_FAIL(c, b.n, KVL_E_FORMAT, "tensor 'a'", "+ 8796093022208 bytes >", "truncated");
        free(c);
    }
    /* tensor type ids */
    FAIL_U32(ps.t_type[0], 4, KVL_E_FORMAT, "tensor 'a'", "type 4 is not a ggml type id",
             "(0..39)");
    FAIL_U32(ps.t_type[0], 40, KVL_E_FORMAT, "tensor 'a'", "type 40 is not", NULL);
    FAIL_U32(ps.t_type[0], UINT32_MAX, KVL_E_FORMAT, "type 4294967295 (-1 as int32)", NULL, NULL);
    FAIL_U32(ps.t_type[4], 0x80000000u, KVL_E_FORMAT, "tensor 'e'", "(-2147483648 as int32)", NULL);
    /* offsets: misaligned, overlapping, past the end */
    FAIL_U64(ps.t_offset[1], 80, KVL_E_FORMAT, "tensor 'b'",
             "offset 80 is not a multiple of the alignment 32", NULL);
    FAIL_U64(ps.t_offset[1], 1, KVL_E_FORMAT, "offset 1 is not a multiple", NULL, NULL);
    FAIL_U64(ps.t_offset[1], 32, KVL_E_FORMAT, "tensor 'b': data [32, 134)",
             "overlaps tensor 'a' [0, 64)", NULL);
    FAIL_U64(ps.t_offset[2], ps.offset[0], KVL_E_FORMAT, "overlaps", NULL, NULL);
    FAIL_U64(ps.t_offset[4], (uint64_t)1 << 40, KVL_E_FORMAT, "tensor 'e'",
             "offset 1099511627776 + 30 bytes >", "data section");
    FAIL_U64(ps.t_offset[4], UINT64_MAX - 31, KVL_E_FORMAT, "tensor 'e'",
             "offset 18446744073709551584 + 30 bytes >", NULL);
    /* truncated tensor data: one byte short, and no data at all */
    EXPECT_FAIL(b.p, b.n - 1, KVL_E_FORMAT, "tensor 'e'", "truncated", NULL);
    EXPECT_FAIL(b.p, ps.data_offset, KVL_E_FORMAT, "0-byte data section", "truncated", NULL);
    /* infos ending right at EOF with tensors: the data section starts past it */
    CHECK((ps.t_offset[4] + 8) % 32 != 0);
    EXPECT_FAIL(b.p, ps.t_offset[4] + 8, KVL_E_FORMAT, "data section", "past the end of the file",
                NULL);
    free(b.p);
}

/* Every proper prefix of the base file must fail, cleanly. */
static void test_truncation(void) {
    wbuf b = base_default(NULL);
    int ok = 0;
    for (size_t n = 0; n < b.n; n++) {
        uint8_t *c = malloc(n ? n : 1); /* exact-size copy: ASan sees any overread */
        memcpy(c, b.p, n);
        kvl_gguf *g = NULL;
        kvl_error err = {0};
        kvl_status st = kvl_gguf_parse(c, n, &g, &err);
        if (st == KVL_OK) {
            ok++;
            kvl_gguf_free(g);
        } else if (g != NULL || err.msg[0] == '\0' || strncmp(err.msg, "gguf: ", 6) != 0) {
            ok++;
        }
        free(c);
    }
    CHECK_EQ_INT(ok, 0);
    free(b.p);
}

/* ---- files on disk ------------------------------------------------------ */

static void test_open(void) {
    wbuf b = base_default(NULL);
    const char *path = kvt_tmp("test_gguf_base.gguf");
    CHECK(kvt_write_file(path, b.p, b.n));
    kvl_gguf *g = NULL;
    kvl_error err = {0};
    CHECK_EQ_INT(kvl_gguf_open(path, &g, &err), KVL_OK);
    if (g) {
        CHECK(g->map.data != NULL && g->map.size == b.n);
        CHECK(g->buf == g->map.data);
        const kvl_gguf_tensor *t = kvl_gguf_find_tensor(g, "c");
        CHECK(t && memcmp(t->data, b.p + ((const uint8_t *)t->data - g->buf), t->nbytes) == 0);
        kvl_gguf_free(g);
    }
    CHECK(kvt_write_file(path, b.p, 40));
    g = (kvl_gguf *)(uintptr_t)0x1;
    CHECK_EQ_INT(kvl_gguf_open(path, &g, &err), KVL_E_FORMAT);
    CHECK(g == (kvl_gguf *)(uintptr_t)0x1);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, ": gguf: ");
    CHECK_EQ_INT(kvl_gguf_open(kvt_tmp("test_gguf_no_such_file.gguf"), &g, &err), KVL_E_IO);
    free(b.p);
}

static void test_stories(void) {
    kvl_gguf *g = NULL;
    kvl_error err = {0};
    kvl_status st = kvl_gguf_open(kvt_shared("models/stories260K.gguf"), &g, &err);
    CHECK_EQ_INT(st, KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "  %s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(g->version, 3);
    CHECK_EQ_INT(g->n_tensors, 48);
    uint64_t n_layer = 0;
    CHECK_EQ_INT(kvl_gguf_get_u64(g, "llama.block_count", &n_layer, &err), KVL_OK);
    CHECK_EQ_INT(n_layer, 5);
    kvl_str arch = {0};
    CHECK_EQ_INT(kvl_gguf_get_str(g, "general.architecture", &arch, &err), KVL_OK);
    CHECK(kvl_str_eq(arch, "llama"));
    const kvl_gguf_kv *tok = NULL;
    CHECK_EQ_INT(kvl_gguf_get_arr(g, "tokenizer.ggml.tokens", KVL_GGUF_STRING, &tok, &err), KVL_OK);
    if (tok) {
        CHECK_EQ_INT(tok->v.arr.n, 512);
        CHECK(tok->v.arr.strs != NULL);
    }
    const kvl_gguf_tensor *t = kvl_gguf_find_tensor(g, "token_embd.weight");
    CHECK(t != NULL);
    if (t) {
        CHECK_EQ_INT(t->type, KVL_TYPE_F32);
        CHECK_EQ_INT(t->n_dims, 2);
        CHECK_EQ_INT(t->ne[0], 64);
        CHECK_EQ_INT(t->ne[1], 512);
        CHECK_EQ_INT(t->nbytes, 64 * 512 * 4);
        CHECK_EQ_INT(((const uint8_t *)t->data - g->buf) % g->alignment, 0);
    }
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        char name[128];
        kvl_str s = g->tensors[i].name;
        CHECK(s.len < sizeof name);
        if (s.len >= sizeof name)
            continue;
        memcpy(name, s.ptr, s.len);
        name[s.len] = '\0';
        CHECK(kvl_gguf_find_tensor(g, name) == &g->tensors[i]);
    }
    kvl_gguf_free(g);
}

/* Write the seeds for fuzz/seeds/fuzz_gguf when KVL_GGUF_SEEDS names a dir. */
static void write_seeds(void) {
    const char *dir = getenv("KVL_GGUF_SEEDS");
    if (!dir || !*dir)
        return;
    char path[4096];
    wbuf b = base_default(NULL);
    snprintf(path, sizeof path, "%s/base_v3.gguf", dir);
    CHECK(kvt_write_file(path, b.p, b.n));
    patch_u32(b.p, 4, 2);
    snprintf(path, sizeof path, "%s/base_v2.gguf", dir);
    CHECK(kvt_write_file(path, b.p, b.n));
    free(b.p);
    b = build_values(3);
    snprintf(path, sizeof path, "%s/values_v3.gguf", dir);
    CHECK(kvt_write_file(path, b.p, b.n));
    free(b.p);
    base_opts o = {.version = 3,
                   .with_align = true,
                   .align_type = KVL_GGUF_UINT32,
                   .align_value = 8,
                   .align = 8};
    b = build_base(&o, NULL);
    snprintf(path, sizeof path, "%s/align8.gguf", dir);
    CHECK(kvt_write_file(path, b.p, b.n));
    free(b.p);
}

/* A file of one F32 tensor {4} named by a run of 'n' of name_len bytes. */
static wbuf one_tensor(size_t name_len) {
    wbuf b = {0};
    char name[128];
    memset(name, 'n', name_len);
    name[name_len] = '\0';
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 1); /* n_tensors */
    put_u64(&b, 0); /* n_kv */
    put_str(&b, name);
    put_u32(&b, 1);
    put_u64(&b, 4);
    put_u32(&b, KVL_TYPE_F32);
    put_u64(&b, 0);
    pad_to(&b, 32);
    for (int i = 0; i < 4; i++)
        put_f32(&b, 1.0f);
    return b;
}

/* GGUF's tensor names are shorter than 64 bytes (llama.cpp refuses longer
 * ones; a name cut at 64 could read as another tensor's) */
static void test_name_limit(void) {
    wbuf b = one_tensor(63);
    kvl_gguf *g = NULL;
    kvl_error err = {0};
    CHECK_EQ_INT(kvl_gguf_parse(b.p, b.n, &g, &err), KVL_OK);
    CHECK(g && g->n_tensors == 1 && g->tensors[0].name.len == 63);
    kvl_gguf_free(g);
    free(b.p);
    b = one_tensor(64);
    EXPECT_FAIL(b.p, b.n, KVL_E_FORMAT, "tensor 0 'nnnn", "name of 64 bytes > 63 (GGUF's limit)",
                NULL);
    free(b.p);
    b = one_tensor(100);
    EXPECT_FAIL(b.p, b.n, KVL_E_FORMAT, "name of 100 bytes > 63", NULL, NULL);
    free(b.p);
}

int main(void) {
    test_type_info();
    test_name_limit();
    test_base_and_alignment();
    test_all_value_types(3);
    test_all_value_types(2);
    test_header();
    test_kv_errors();
    test_alignment_errors();
    test_tensor_errors();
    test_truncation();
    test_open();
    test_stories();
    write_seeds();
    return kvt_finish("test_gguf");
}
