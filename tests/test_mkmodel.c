/*
 * Tests of the GGUF writer and of the random-model generator (kvllm
 * mkmodel): every metadata type written and read back exactly (through the
 * project's GGUF reader), the writer's argument and I/O errors (no file left
 * behind), and generated models read back key by key and tensor by tensor,
 * each tensor's bytes compared with a fresh run of the generator.
 */
#include "kernels/kernels.h"
#include "model/mkmodel.h"
#include "plan/catalog.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "testutil.h"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static bool file_exists(const char *p) { return access(p, F_OK) == 0; }

/* The writer's temporary file for path: "<dir>/.<name>.tmp-XXXXXX". */
static bool tmp_exists(const char *path) {
    char dir[4096], prefix[512];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    snprintf(prefix, sizeof prefix, ".%s.tmp-", slash ? slash + 1 : path);
    DIR *d = opendir(dir);
    if (!d)
        return false;
    bool found = false;
    for (struct dirent *e; !found && (e = readdir(d));)
        found = !strncmp(e->d_name, prefix, strlen(prefix));
    closedir(d);
    return found;
}

static const kvl_gguf_kv *key(const kvl_gguf *g, const char *k, uint32_t type) {
    const kvl_gguf_kv *kv = kvl_gguf_find_key(g, k);
    CHECK(kv != NULL);
    if (kv && kv->type != type) {
        fprintf(stderr, "key %s: type %u, expected %u\n", k, kv->type, type);
        CHECK(kv->type == type);
        return NULL;
    }
    return kv;
}

static bool str_is(kvl_str s, const char *c, size_t n) {
    return s.len == n && !memcmp(s.ptr, c, n);
}

/* ------------------------------------------------------------------------ */

static void test_writer_types(void) {
    char path[4096];
    snprintf(path, sizeof path, "%s", kvt_tmp("mk_types.gguf"));
    remove(path);
    kvl_error err;
    kvl_gguf_writer *w = NULL;
    CHECK(kvl_gguf_writer_init(&w, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_set_alignment(w, 64, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_u8(w, "t.u8", 200, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_i8(w, "t.i8", -100, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_u16(w, "t.u16", 65535, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_i16(w, "t.i16", -32768, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_u32(w, "t.u32", 4000000000u, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_i32(w, "t.i32", -2000000000, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_u64(w, "t.u64", 0xFEDCBA9876543210ull, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_i64(w, "t.i64", INT64_MIN + 5, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_f32(w, "t.f32", 1e-5f, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_f64(w, "t.f64", -3.141592653589793, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_bool(w, "t.true", true, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_bool(w, "t.false", false, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_str(w, "t.str", "hello \xE2\x96\x81world", &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_str(w, "t.empty", "", &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_strn(w, "t.nul", "a\0b", 3, &err) == KVL_OK);

    const uint8_t a_u8[3] = {0, 7, 255};
    const int8_t a_i8[3] = {-128, 0, 127};
    const uint16_t a_u16[2] = {1, 65535};
    const int16_t a_i16[2] = {-32768, 32767};
    const uint32_t a_u32[2] = {0, 0xFFFFFFFFu};
    const int32_t a_i32[4] = {-1, 2, -3, 2147483647};
    const uint64_t a_u64[2] = {1, UINT64_MAX};
    const int64_t a_i64[2] = {INT64_MIN, INT64_MAX};
    const float a_f32[3] = {0.5f, -2.25f, 1e30f};
    const double a_f64[2] = {1e-300, 2.5};
    const uint8_t a_bool[3] = {1, 0, 1};
    CHECK(kvl_gguf_writer_add_arr(w, "a.u8", KVL_GGUF_UINT8, a_u8, 3, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.i8", KVL_GGUF_INT8, a_i8, 3, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.u16", KVL_GGUF_UINT16, a_u16, 2, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.i16", KVL_GGUF_INT16, a_i16, 2, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.u32", KVL_GGUF_UINT32, a_u32, 2, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.i32", KVL_GGUF_INT32, a_i32, 4, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.u64", KVL_GGUF_UINT64, a_u64, 2, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.i64", KVL_GGUF_INT64, a_i64, 2, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.f32", KVL_GGUF_FLOAT32, a_f32, 3, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.f64", KVL_GGUF_FLOAT64, a_f64, 2, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.bool", KVL_GGUF_BOOL, a_bool, 3, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_arr(w, "a.none", KVL_GGUF_INT32, NULL, 0, &err) == KVL_OK);
    const char *strs[4] = {"a", "", "h\xC3\xA9llo", "x y"};
    CHECK(kvl_gguf_writer_add_arr_str(w, "a.str", strs, NULL, 4, &err) == KVL_OK);
    const size_t lens[2] = {2, 0};
    const char *strs2[2] = {"ab-ignored", NULL};
    CHECK(kvl_gguf_writer_add_arr_str(w, "a.strn", strs2, lens, 2, &err) == KVL_OK);

    /* tensors: 2-D F32, 1-D F16, 2-D Q8_0, 4-D F32 */
    const int64_t ne_a[2] = {3, 2}, ne_b[1] = {5}, ne_c[2] = {64, 2}, ne_d[4] = {1, 2, 3, 4};
    CHECK(kvl_gguf_writer_add_tensor(w, "a", 2, ne_a, KVL_TYPE_F32, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_tensor(w, "b", 1, ne_b, KVL_TYPE_F16, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_tensor(w, "c", 2, ne_c, KVL_TYPE_Q8_0, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_tensor(w, "d", 4, ne_d, KVL_TYPE_F32, &err) == KVL_OK);
    const size_t nb[4] = {24, 10, 2 * 2 * sizeof(kvl_block_q8_0), 96};
    size_t total = nb[0] + nb[1] + nb[2] + nb[3];
    uint8_t *data = malloc(total);
    for (size_t i = 0; i < total; i++)
        data[i] = (uint8_t)(i * 37 + 11);
    uint64_t expect_size = kvl_gguf_writer_file_size(w);
    CHECK(expect_size > 0);
    CHECK(kvl_gguf_writer_begin(w, path, &err) == KVL_OK);
    for (size_t off = 0; off < total; off += 7) /* chunks spanning tensors */
        CHECK(kvl_gguf_writer_write(w, data + off, total - off < 7 ? total - off : 7, &err) ==
              KVL_OK);
    CHECK(!file_exists(path));
    CHECK(kvl_gguf_writer_finish(w, &err) == KVL_OK);
    kvl_gguf_writer_free(w);
    CHECK(file_exists(path));
    CHECK(!tmp_exists(path));

    kvl_gguf *g = NULL;
    kvl_status st = kvl_gguf_open(path, &g, &err);
    CHECK(st == KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "open: %s\n", err.msg);
        free(data);
        return;
    }
    CHECK_EQ_INT(g->size, expect_size);
    CHECK_EQ_INT(g->version, 3);
    CHECK_EQ_INT(g->n_kv, 15 + 14 + 1);
    CHECK_EQ_INT(g->alignment, 64);
    CHECK_EQ_INT(g->data_offset % 64, 0);
    const kvl_gguf_kv *kv;
    if ((kv = key(g, "general.alignment", KVL_GGUF_UINT32)))
        CHECK_EQ_INT(kv->v.u64, 64);
    if ((kv = key(g, "t.u8", KVL_GGUF_UINT8)))
        CHECK_EQ_INT(kv->v.u64, 200);
    if ((kv = key(g, "t.i8", KVL_GGUF_INT8)))
        CHECK_EQ_INT(kv->v.i64, -100);
    if ((kv = key(g, "t.u16", KVL_GGUF_UINT16)))
        CHECK_EQ_INT(kv->v.u64, 65535);
    if ((kv = key(g, "t.i16", KVL_GGUF_INT16)))
        CHECK_EQ_INT(kv->v.i64, -32768);
    if ((kv = key(g, "t.u32", KVL_GGUF_UINT32)))
        CHECK_EQ_INT(kv->v.u64, 4000000000u);
    if ((kv = key(g, "t.i32", KVL_GGUF_INT32)))
        CHECK_EQ_INT(kv->v.i64, -2000000000);
    if ((kv = key(g, "t.u64", KVL_GGUF_UINT64)))
        CHECK(kv->v.u64 == 0xFEDCBA9876543210ull);
    if ((kv = key(g, "t.i64", KVL_GGUF_INT64)))
        CHECK(kv->v.i64 == INT64_MIN + 5);
    if ((kv = key(g, "t.f32", KVL_GGUF_FLOAT32)))
        CHECK(kv->v.f64 == (double)1e-5f);
    if ((kv = key(g, "t.f64", KVL_GGUF_FLOAT64)))
        CHECK(kv->v.f64 == -3.141592653589793);
    if ((kv = key(g, "t.true", KVL_GGUF_BOOL)))
        CHECK_EQ_INT(kv->v.u64, 1);
    if ((kv = key(g, "t.false", KVL_GGUF_BOOL)))
        CHECK_EQ_INT(kv->v.u64, 0);
    if ((kv = key(g, "t.str", KVL_GGUF_STRING)))
        CHECK(str_is(kv->v.str, "hello \xE2\x96\x81world", 14));
    if ((kv = key(g, "t.empty", KVL_GGUF_STRING)))
        CHECK_EQ_INT(kv->v.str.len, 0);
    if ((kv = key(g, "t.nul", KVL_GGUF_STRING)))
        CHECK(str_is(kv->v.str, "a\0b", 3));

    const struct {
        const char *k;
        uint32_t type;
        const void *p;
        uint64_t n;
        size_t es;
    } arrs[] = {
        {"a.u8", KVL_GGUF_UINT8, a_u8, 3, 1},     {"a.i8", KVL_GGUF_INT8, a_i8, 3, 1},
        {"a.u16", KVL_GGUF_UINT16, a_u16, 2, 2},  {"a.i16", KVL_GGUF_INT16, a_i16, 2, 2},
        {"a.u32", KVL_GGUF_UINT32, a_u32, 2, 4},  {"a.i32", KVL_GGUF_INT32, a_i32, 4, 4},
        {"a.u64", KVL_GGUF_UINT64, a_u64, 2, 8},  {"a.i64", KVL_GGUF_INT64, a_i64, 2, 8},
        {"a.f32", KVL_GGUF_FLOAT32, a_f32, 3, 4}, {"a.f64", KVL_GGUF_FLOAT64, a_f64, 2, 8},
        {"a.bool", KVL_GGUF_BOOL, a_bool, 3, 1},  {"a.none", KVL_GGUF_INT32, NULL, 0, 4},
    };
    for (size_t i = 0; i < sizeof arrs / sizeof arrs[0]; i++) {
        if (!(kv = key(g, arrs[i].k, KVL_GGUF_ARRAY)))
            continue;
        CHECK_EQ_INT(kv->v.arr.type, arrs[i].type);
        CHECK_EQ_INT(kv->v.arr.n, arrs[i].n);
        if (arrs[i].n && kv->v.arr.n == arrs[i].n)
            CHECK(!memcmp(kv->v.arr.data, arrs[i].p, arrs[i].n * arrs[i].es));
    }
    if ((kv = key(g, "a.str", KVL_GGUF_ARRAY))) {
        CHECK_EQ_INT(kv->v.arr.type, KVL_GGUF_STRING);
        CHECK_EQ_INT(kv->v.arr.n, 4);
        if (kv->v.arr.n == 4 && kv->v.arr.strs)
            for (int i = 0; i < 4; i++)
                CHECK(str_is(kv->v.arr.strs[i], strs[i], strlen(strs[i])));
    }
    if ((kv = key(g, "a.strn", KVL_GGUF_ARRAY))) {
        CHECK_EQ_INT(kv->v.arr.n, 2);
        if (kv->v.arr.n == 2 && kv->v.arr.strs) {
            CHECK(str_is(kv->v.arr.strs[0], "ab", 2));
            CHECK_EQ_INT(kv->v.arr.strs[1].len, 0);
        }
    }

    CHECK_EQ_INT(g->n_tensors, 4);
    const char *names[4] = {"a", "b", "c", "d"};
    const uint32_t types[4] = {KVL_TYPE_F32, KVL_TYPE_F16, KVL_TYPE_Q8_0, KVL_TYPE_F32};
    const uint32_t ndims[4] = {2, 1, 2, 4};
    const int64_t *nes[4] = {ne_a, ne_b, ne_c, ne_d};
    size_t off = 0;
    for (int i = 0; i < 4; i++) {
        const kvl_gguf_tensor *t = kvl_gguf_find_tensor(g, names[i]);
        CHECK(t != NULL);
        if (!t)
            continue;
        CHECK_EQ_INT(t->n_dims, ndims[i]);
        CHECK_EQ_INT(t->type, types[i]);
        for (uint32_t d = 0; d < 4; d++)
            CHECK_EQ_INT(t->ne[d], d < ndims[i] ? nes[i][d] : 1);
        CHECK_EQ_INT(t->offset % 64, 0);
        CHECK_EQ_INT(t->nbytes, nb[i]);
        if (t->nbytes == nb[i])
            CHECK(!memcmp(t->data, data + off, nb[i]));
        off += nb[i];
    }
    kvl_gguf_free(g);
    free(data);

    /* an empty file (no keys, no tensors) is valid too */
    CHECK(kvl_gguf_writer_init(&w, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_begin(w, path, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_finish(w, &err) == KVL_OK);
    kvl_gguf_writer_free(w);
    g = NULL;
    CHECK(kvl_gguf_open(path, &g, &err) == KVL_OK);
    if (g) {
        CHECK_EQ_INT(g->n_tensors, 0);
        CHECK_EQ_INT(g->n_kv, 1);
    }
    kvl_gguf_free(g);
    remove(path);
}

/* A writer with one F32 tensor of n floats, begun on path. */
static kvl_gguf_writer *begin_one(const char *path, int64_t n, kvl_error *err) {
    kvl_gguf_writer *w = NULL;
    if (kvl_gguf_writer_init(&w, err) != KVL_OK)
        return NULL;
    kvl_gguf_writer_add_tensor(w, "x", 1, &n, KVL_TYPE_F32, err);
    kvl_gguf_writer_begin(w, path, err);
    return w;
}

static void test_writer_errors(void) {
    char path[4096]; /* kvt_tmp's buffer is reused below */
    snprintf(path, sizeof path, "%s", kvt_tmp("mk_err.gguf"));
    remove(path);
    kvl_error err;
    kvl_gguf_writer *w = NULL;

    /* argument errors, each sticky */
    CHECK(kvl_gguf_writer_init(&w, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_add_u32(w, "", 1, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "empty key");
    memset(&err, 0, sizeof err);
    CHECK(kvl_gguf_writer_add_u32(w, "fine", 1, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "empty key");
    CHECK(kvl_gguf_writer_begin(w, path, &err) == KVL_E_INVALID);
    CHECK(kvl_gguf_writer_file_size(w) == 0);
    kvl_gguf_writer_free(w);
    CHECK(!file_exists(path));

    struct {
        const char *what, *msg;
        int step;
    } cases[] = {
        {"duplicate key", "duplicate key 'k'", 0},
        {"reserved key", "general.alignment", 1},
        {"alignment 3", "not a power of two", 2},
        {"alignment 0", "not a power of two", 3},
        {"alignment after tensor", "before the first tensor", 4},
        {"ne 0", "ne[1] = 0 < 1", 5},
        {"ne -1", "ne[0] = -1 < 1", 6},
        {"n_dims 0", "n_dims 0 not in [1, 4]", 7},
        {"n_dims 5", "n_dims 5 not in [1, 4]", 8},
        {"q8_0 ne0 33", "not a multiple of Q8_0's block size 32", 9},
        {"long name", "name of 64 bytes > 63", 10},
        {"duplicate tensor", "duplicate tensor 'x'", 11},
        {"type 99", "type 99 unknown", 12},
        {"string array via add_arr", "not a number", 13},
        {"overflowing size", "overflows", 14},
        {"key after begin", "after begin", 15},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(kvl_gguf_writer_init(&w, &err) == KVL_OK);
        kvl_status st = KVL_OK;
        int64_t ne2[2] = {32, 0}, ne1[1] = {-1}, ne4[4] = {1, 1, 1, 1}, ne33[1] = {33};
        int64_t ok1[1] = {4}, big[4] = {INT64_MAX, INT64_MAX, 2, 2};
        char longname[65];
        memset(longname, 'n', 64);
        longname[64] = 0;
        switch (cases[i].step) {
        case 0:
            kvl_gguf_writer_add_u8(w, "k", 1, &err);
            st = kvl_gguf_writer_add_str(w, "k", "x", &err);
            break;
        case 1: st = kvl_gguf_writer_add_u32(w, "general.alignment", 32, &err); break;
        case 2: st = kvl_gguf_writer_set_alignment(w, 3, &err); break;
        case 3: st = kvl_gguf_writer_set_alignment(w, 0, &err); break;
        case 4:
            kvl_gguf_writer_add_tensor(w, "x", 1, ok1, KVL_TYPE_F32, &err);
            st = kvl_gguf_writer_set_alignment(w, 64, &err);
            break;
        case 5: st = kvl_gguf_writer_add_tensor(w, "x", 2, ne2, KVL_TYPE_F32, &err); break;
        case 6: st = kvl_gguf_writer_add_tensor(w, "x", 1, ne1, KVL_TYPE_F32, &err); break;
        case 7: st = kvl_gguf_writer_add_tensor(w, "x", 0, ne4, KVL_TYPE_F32, &err); break;
        case 8: st = kvl_gguf_writer_add_tensor(w, "x", 5, ne4, KVL_TYPE_F32, &err); break;
        case 9: st = kvl_gguf_writer_add_tensor(w, "x", 1, ne33, KVL_TYPE_Q8_0, &err); break;
        case 10: st = kvl_gguf_writer_add_tensor(w, longname, 1, ok1, KVL_TYPE_F32, &err); break;
        case 11:
            kvl_gguf_writer_add_tensor(w, "x", 1, ok1, KVL_TYPE_F32, &err);
            st = kvl_gguf_writer_add_tensor(w, "x", 1, ok1, KVL_TYPE_F32, &err);
            break;
        case 12: st = kvl_gguf_writer_add_tensor(w, "x", 1, ok1, (kvl_type)99, &err); break;
        case 13: st = kvl_gguf_writer_add_arr(w, "s", KVL_GGUF_STRING, "abc", 1, &err); break;
        case 14: st = kvl_gguf_writer_add_tensor(w, "x", 4, big, KVL_TYPE_F32, &err); break;
        case 15:
            kvl_gguf_writer_begin(w, path, &err);
            st = kvl_gguf_writer_add_u8(w, "late", 1, &err);
            break;
        }
        if (st == KVL_OK) {
            fprintf(stderr, "case '%s' was accepted\n", cases[i].what);
            CHECK(st != KVL_OK);
        } else {
            CHECK_CONTAINS(err.msg, cases[i].msg);
        }
        CHECK(kvl_gguf_writer_finish(w, &err) != KVL_OK);
        kvl_gguf_writer_free(w);
        CHECK(!file_exists(path));
        CHECK(!tmp_exists(path));
    }

    /* data errors: too many bytes; too few; freed before finish */
    float buf[16] = {0};
    w = begin_one(path, 8, &err);
    CHECK(w && kvl_gguf_writer_write(w, buf, 8 * 4, &err) == KVL_OK);
    CHECK(kvl_gguf_writer_write(w, buf, 1, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "past the last tensor");
    CHECK(kvl_gguf_writer_finish(w, &err) == KVL_E_INVALID);
    kvl_gguf_writer_free(w);
    CHECK(!file_exists(path) && !tmp_exists(path));

    w = begin_one(path, 8, &err);
    CHECK(w && kvl_gguf_writer_write(w, buf, 5 * 4, &err) == KVL_OK);
    CHECK(tmp_exists(path));
    CHECK(kvl_gguf_writer_finish(w, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "tensor 'x': 20 of 32 bytes written");
    kvl_gguf_writer_free(w);
    CHECK(!file_exists(path) && !tmp_exists(path));

    w = begin_one(path, 8, &err);
    CHECK(w && kvl_gguf_writer_write(w, buf, 3, &err) == KVL_OK);
    kvl_gguf_writer_free(w);
    CHECK(!file_exists(path) && !tmp_exists(path));

    /* an existing file survives a failed write */
    CHECK(kvt_write_file(path, "old", 3));
    w = begin_one(path, 8, &err);
    CHECK(kvl_gguf_writer_finish(w, &err) == KVL_E_INVALID);
    kvl_gguf_writer_free(w);
    size_t n = 0;
    char *old = kvt_read_file(path, &n);
    CHECK(old && n == 3 && !memcmp(old, "old", 3));
    free(old);
    remove(path);

    /* a directory that does not exist */
    w = begin_one(kvt_tmp("no/such/dir/x.gguf"), 8, &err);
    CHECK(w && kvl_gguf_writer_write(w, buf, 4, &err) == KVL_E_IO);
    CHECK_CONTAINS(err.msg, "cannot create");
    kvl_gguf_writer_free(w);

    /* disk full, simulated by a file size limit: the write fails with
     * KVL_E_IO and no partial file stays behind */
    struct rlimit old_lim;
    CHECK(getrlimit(RLIMIT_FSIZE, &old_lim) == 0);
    void (*old_sig)(int) = signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old_lim;
    lim.rlim_cur = 64 * 1024;
    CHECK(setrlimit(RLIMIT_FSIZE, &lim) == 0);
    const int64_t big_n = 1 << 20; /* 4 MiB of floats */
    w = begin_one(path, big_n, &err);
    kvl_status st = KVL_OK;
    for (int64_t i = 0; i < big_n / 16 && st == KVL_OK; i++)
        st = kvl_gguf_writer_write(w, buf, sizeof buf, &err);
    if (st == KVL_OK)
        st = kvl_gguf_writer_finish(w, &err);
    CHECK(setrlimit(RLIMIT_FSIZE, &old_lim) == 0);
    signal(SIGXFSZ, old_sig);
    CHECK(st == KVL_E_IO);
    CHECK_CONTAINS(err.msg, "writing '");
    kvl_gguf_writer_free(w);
    CHECK(!file_exists(path) && !tmp_exists(path));
}

/* Writes one 8-float tensor to path; the status of the whole write. */
static kvl_status write_one(const char *path, kvl_error *err) {
    float buf[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    kvl_gguf_writer *w = begin_one(path, 8, err);
    kvl_status st = w ? kvl_gguf_writer_write(w, buf, sizeof buf, err) : KVL_E_NOMEM;
    if (st == KVL_OK)
        st = kvl_gguf_writer_finish(w, err);
    kvl_gguf_writer_free(w);
    return st;
}

static bool file_is(const char *path, const char *text) {
    size_t n = 0;
    char *got = kvt_read_file(path, &n);
    bool same = got && n == strlen(text) && !memcmp(got, text, n);
    free(got);
    return same;
}

/* The attacks of issue 13: a symbolic link planted at the temporary name
 * the writer used to pick ("<path>.tmp-<pid>") made it overwrite the link's
 * target; an output path that is a device (run as root, -o /dev/full) was
 * replaced by a regular file. */
static void test_writer_attacks(void) {
    char path[4096], victim[4096], planted[4200], fifo[4096], dir[4096], link[4096];
    snprintf(path, sizeof path, "%s", kvt_tmp("mk_attack.gguf"));
    snprintf(victim, sizeof victim, "%s", kvt_tmp("mk_victim.txt"));
    snprintf(fifo, sizeof fifo, "%s", kvt_tmp("mk_fifo"));
    snprintf(dir, sizeof dir, "%s", kvt_tmp("mk_dir"));
    snprintf(link, sizeof link, "%s", kvt_tmp("mk_link.gguf"));
    snprintf(planted, sizeof planted, "%s.tmp-%ld", path, (long)getpid());
    remove(path);
    remove(planted);
    CHECK(kvt_write_file(victim, "precious", 8));
    kvl_error err;

    /* a planted symbolic link at the old predictable name is never followed */
    CHECK(symlink(victim, planted) == 0);
    CHECK_EQ_INT(write_one(path, &err), KVL_OK);
    CHECK(file_is(victim, "precious"));
    struct stat st;
    CHECK(lstat(planted, &st) == 0 && S_ISLNK(st.st_mode)); /* left as it was */
    CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 32);
    CHECK(!tmp_exists(path));
    remove(planted);

    /* an existing regular file is replaced as before */
    CHECK(kvt_write_file(path, "old", 3));
    CHECK_EQ_INT(write_one(path, &err), KVL_OK);
    CHECK(!file_is(path, "old"));

    /* a path that exists and is not a regular file is refused, untouched */
    remove(fifo);
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK_EQ_INT(write_one(fifo, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "is a FIFO, not a regular file: refusing to replace it");
    CHECK(lstat(fifo, &st) == 0 && S_ISFIFO(st.st_mode));
    CHECK(!tmp_exists(fifo));
    remove(fifo);

    rmdir(dir);
    CHECK(mkdir(dir, 0700) == 0);
    CHECK_EQ_INT(write_one(dir, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "is a directory");
    CHECK(lstat(dir, &st) == 0 && S_ISDIR(st.st_mode));
    rmdir(dir);

    remove(link);
    CHECK(symlink(victim, link) == 0);
    CHECK_EQ_INT(write_one(link, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "is a symbolic link");
    CHECK(lstat(link, &st) == 0 && S_ISLNK(st.st_mode));
    CHECK(file_is(victim, "precious"));
    remove(link);

    /* a character device (as root: a private copy of /dev/full's node, so a
     * regression replaces that copy and never the real one) */
    char dev[4096];
    snprintf(dev, sizeof dev, "%s", kvt_tmp("mk_full"));
    remove(dev);
    if (geteuid() == 0 && mknod(dev, S_IFCHR | 0600, makedev(1, 7)) == 0) {
        CHECK_EQ_INT(write_one(dev, &err), KVL_E_INVALID);
        CHECK_CONTAINS(err.msg, "exists and is a character device");
        CHECK(lstat(dev, &st) == 0 && S_ISCHR(st.st_mode));
        remove(dev);
    }
    remove(path);
    remove(victim);
}

/* ------------------------------------------------------------------------ */

static void test_rng(void) {
    kvl_mkmodel_spec s;
    CHECK((kvl_catalog_mkmodel_spec("stories260K", &s, NULL) == KVL_OK));
    enum { N = 200000 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    kvl_mkmodel_row(&s, "blk.0.attn_q.weight", 3, x, N);
    double sum = 0, sq = 0, mx = 0;
    for (int i = 0; i < N; i++) {
        sum += x[i];
        sq += (double)x[i] * x[i];
        mx = fabs(x[i]) > mx ? fabs(x[i]) : mx;
    }
    double mean = sum / N, sd = sqrt(sq / N - mean * mean);
    CHECK_NEAR(mean, 0.0, 3e-4);
    CHECK_NEAR(sd, KVL_MKMODEL_STD, 3e-4);
    CHECK(mx <= 2 * 1.7320508075688772 * KVL_MKMODEL_STD + 1e-6);
    CHECK(mx > 2.5 * KVL_MKMODEL_STD); /* bell-shaped, with tails */
    /* deterministic; differs by row, tensor and seed */
    kvl_mkmodel_row(&s, "blk.0.attn_q.weight", 3, y, N);
    CHECK(!memcmp(x, y, N * sizeof *x));
    kvl_mkmodel_row(&s, "blk.0.attn_q.weight", 4, y, 64);
    CHECK(memcmp(x, y, 64 * sizeof *x) != 0);
    kvl_mkmodel_row(&s, "blk.0.attn_k.weight", 3, y, 64);
    CHECK(memcmp(x, y, 64 * sizeof *x) != 0);
    s.seed = 1;
    kvl_mkmodel_row(&s, "blk.0.attn_q.weight", 3, y, 64);
    CHECK(memcmp(x, y, 64 * sizeof *x) != 0);
    /* a prefix of a row is the same whatever its length */
    kvl_mkmodel_row(&s, "output.weight", 0, x, 100);
    kvl_mkmodel_row(&s, "output.weight", 0, y, 10);
    CHECK(!memcmp(x, y, 10 * sizeof *x));
    kvl_mkmodel_row(&s, "blk.2.ffn_norm.weight", 0, x, 5);
    for (int i = 0; i < 5; i++)
        CHECK(x[i] == 1.0f);
    free(x);
    free(y);
}

static void test_check(void) {
    static const struct {
        const char *field;
        int64_t v;
        const char *msg;
    } bad[] = {
        {"heads", 7, "--heads 7 does not divide --dim 64"},
        {"kv_heads", 3, "--kv-heads 3 does not divide --heads 8"},
        {"kv_heads", 16, "--kv-heads 16 does not divide --heads 8"},
        {"heads", 32, "head_dim = --dim 64 / --heads 32 = 2"}, /* fine: 2 is even */
        {"heads", 64, "is odd"},
        {"layers", 0, "--layers 0 is outside [1, 1024]"},
        {"dim", -5, "--dim -5 is outside"},
        {"vocab", 2, "--vocab-size 2 is outside"},
        {"ctx", 0, "--ctx 0 is outside"},
        {"ffn", 0, "--ffn 0 is outside"},
        {"type", 5, "--type id 5"},
        {"alignment", 24, "--alignment 24 is not a power of two"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kvl_mkmodel_spec s;
        kvl_catalog_mkmodel_spec("stories260K", &s, NULL);
        const char *f = bad[i].field;
        if (!strcmp(f, "heads"))
            s.shape.hp.n_heads = bad[i].v;
        if (!strcmp(f, "heads") && bad[i].v == 32)
            s.shape.hp.n_kv_heads = 4;
        if (!strcmp(f, "kv_heads"))
            s.shape.hp.n_kv_heads = bad[i].v;
        if (!strcmp(f, "layers"))
            s.shape.hp.n_layers = bad[i].v;
        if (!strcmp(f, "dim"))
            s.shape.hp.dim = bad[i].v;
        if (!strcmp(f, "vocab"))
            s.shape.hp.n_vocab = bad[i].v;
        if (!strcmp(f, "ctx"))
            s.shape.hp.ctx_len = bad[i].v;
        if (!strcmp(f, "ffn"))
            s.shape.hp.ffn_dim = bad[i].v;
        if (!strcmp(f, "type"))
            s.type = (kvl_type)bad[i].v;
        if (!strcmp(f, "alignment"))
            s.alignment = (size_t)bad[i].v;
        kvl_error err = {0};
        kvl_status st = kvl_mkmodel_check(&s, &err);
        if (bad[i].v == 32 && !strcmp(f, "heads")) {
            CHECK(st == KVL_OK);
            continue;
        }
        CHECK(st == KVL_E_INVALID);
        CHECK_CONTAINS(err.msg, bad[i].msg);
    }
    const char *names[] = {"stories260K", "tinyllama-1.1b", "llama-3-8b", "llama-2-7b"};
    for (int i = 0; i < 4; i++) {
        kvl_mkmodel_spec s;
        CHECK((kvl_catalog_mkmodel_spec(names[i], &s, NULL) == KVL_OK));
        CHECK(kvl_mkmodel_check(&s, NULL) == KVL_OK);
    }
    kvl_mkmodel_spec s;
    kvl_error err;
    CHECK(kvl_catalog_mkmodel_spec("llama-9", &s, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "'llama-9' is not one of");
    CHECK_CONTAINS(err.msg, "stories260K");
    /* catalogue shapes mkmodel cannot write: OPT; qwen2 with its biases it can */
    CHECK(kvl_catalog_mkmodel_spec("opt-13b", &s, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "llama, qwen2 and qwen3");
    CHECK(kvl_catalog_mkmodel_spec("Qwen2.5-7B", &s, &err) == KVL_OK);
    /* names match case-insensitively; general.name is the name as given and
     * the output is untied unless asked (the files stay what they were) */
    CHECK(kvl_catalog_mkmodel_spec("LLAMA-2-7B", &s, NULL) == KVL_OK);
    CHECK(!strcmp(s.shape.name, "LLAMA-2-7B"));
    CHECK(!s.shape.tied_embd && s.type == KVL_TYPE_F16 && s.seed == 0);
    CHECK(kvl_catalog_mkmodel_spec("stories260K", &s, NULL) == KVL_OK);
    CHECK(!s.shape.tied_embd);
    CHECK((kvl_catalog_mkmodel_spec("llama-3-8b", &s, NULL) == KVL_OK));
    CHECK_EQ_INT(s.shape.hp.dim, 4096);
    CHECK_EQ_INT(s.shape.hp.n_kv_heads, 8);
    CHECK_EQ_INT(s.shape.hp.ffn_dim, 14336);
    CHECK_EQ_INT(s.shape.hp.n_vocab, 128256);
    CHECK(s.shape.hp.rope_base == 500000.0f);
    CHECK((kvl_catalog_mkmodel_spec("tinyllama-1.1b", &s, NULL) == KVL_OK));
    CHECK_EQ_INT(s.shape.hp.n_layers, 22);
    CHECK_EQ_INT(s.shape.hp.ffn_dim, 5632);
    CHECK(kvl_mkmodel_weight_type(&s, 172) == KVL_TYPE_F16);
    s.type = KVL_TYPE_Q4_0;
    CHECK(kvl_mkmodel_weight_type(&s, 172) == KVL_TYPE_F16);
    CHECK(kvl_mkmodel_weight_type(&s, 2048) == KVL_TYPE_Q4_0);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_vocab(void) {
    kvl_error err;
    kvl_mkmodel_vocab v;
    CHECK(kvl_mkmodel_vocab_synth(258, &v, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "--vocab-size 258");
    CHECK(kvl_mkmodel_vocab_synth(20000, &v, &err) == KVL_OK);
    CHECK_EQ_INT(v.n, 20000);
    CHECK(!strcmp(v.pieces[0], "<unk>") && !strcmp(v.pieces[1], "<s>") &&
          !strcmp(v.pieces[2], "</s>"));
    CHECK_EQ_INT(v.types[0], KVL_TOK_UNKNOWN);
    CHECK_EQ_INT(v.types[1], KVL_TOK_CONTROL);
    CHECK_EQ_INT(v.types[2], KVL_TOK_CONTROL);
    CHECK(!strcmp(v.pieces[3], "<0x00>") && !strcmp(v.pieces[3 + 0x0A], "<0x0A>") &&
          !strcmp(v.pieces[258], "<0xFF>"));
    for (int i = 3; i < 259; i++)
        CHECK_EQ_INT(v.types[i], KVL_TOK_BYTE);
    CHECK(!strcmp(v.pieces[259], "\xE2\x96\x81"));
    CHECK(!strcmp(v.pieces[260], "a") && !strcmp(v.pieces[285], "z"));
    CHECK(!strcmp(v.pieces[286], "\xE2\x96\x81"
                                 "a") &&
          !strcmp(v.pieces[311], "\xE2\x96\x81"
                                 "z"));
    CHECK(!strcmp(v.pieces[312], "aa") && !strcmp(v.pieces[313], "ab"));
    CHECK(!strcmp(v.pieces[312 + 676], "\xE2\x96\x81"
                                       "aa"));
    CHECK(!strcmp(v.pieces[312 + 2 * 676], "aaa"));
    for (int i = 259; i < v.n; i++) {
        CHECK_EQ_INT(v.types[i], KVL_TOK_NORMAL);
        if (i > 259 && !(v.scores[i] < v.scores[i - 1])) {
            CHECK(v.scores[i] < v.scores[i - 1]);
            break;
        }
    }
    char **sorted = malloc((size_t)v.n * sizeof *sorted);
    memcpy(sorted, v.pieces, (size_t)v.n * sizeof *sorted);
    qsort(sorted, (size_t)v.n, sizeof *sorted, cmp_str);
    int dups = 0;
    for (int i = 1; i < v.n; i++)
        dups += !strcmp(sorted[i - 1], sorted[i]);
    CHECK_EQ_INT(dups, 0);
    free(sorted);
    kvl_mkmodel_vocab_free(&v);
    kvl_mkmodel_vocab_free(&v); /* twice: harmless */

    const char *tok512 = kvt_shared("models/tok512.bin");
    char tokpath[4096];
    snprintf(tokpath, sizeof tokpath, "%s", tok512);
    if (!file_exists(tokpath)) {
        fprintf(stderr, "test_mkmodel: %s not found, skipping llama2.c vocab checks\n", tokpath);
        return;
    }
    int32_t n = 0;
    CHECK(kvl_mkmodel_vocab_count(tokpath, &n, &err) == KVL_OK);
    CHECK_EQ_INT(n, 512);
    CHECK(kvl_mkmodel_vocab_load(tokpath, 1000, &v, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "holds 512 pieces");
    CHECK(kvl_mkmodel_vocab_load(tokpath, 0, &v, &err) == KVL_OK);
    CHECK_EQ_INT(v.n, 512);
    /* the same tokens, scores and types as llama.cpp's conversion of the
     * same vocabulary in stories260K.gguf */
    kvl_gguf *g = NULL;
    if (kvl_gguf_open(kvt_shared("models/stories260K.gguf"), &g, &err) == KVL_OK) {
        const kvl_gguf_kv *toks = key(g, "tokenizer.ggml.tokens", KVL_GGUF_ARRAY);
        const kvl_gguf_kv *sc = key(g, "tokenizer.ggml.scores", KVL_GGUF_ARRAY);
        const kvl_gguf_kv *ty = key(g, "tokenizer.ggml.token_type", KVL_GGUF_ARRAY);
        if (toks && sc && ty && toks->v.arr.n == 512 && sc->v.arr.n == 512 && ty->v.arr.n == 512 &&
            toks->v.arr.strs) {
            int bad = 0;
            for (int i = 0; i < 512; i++) {
                float f;
                int32_t t;
                memcpy(&f, sc->v.arr.data + 4 * i, 4);
                memcpy(&t, ty->v.arr.data + 4 * i, 4);
                if (!str_is(toks->v.arr.strs[i], v.pieces[i], strlen(v.pieces[i])) ||
                    f != v.scores[i] || t != v.types[i]) {
                    if (bad++ < 3)
                        fprintf(stderr, "token %d: '%s' %g %d vs file '%.*s' %g %d\n", i,
                                v.pieces[i], (double)v.scores[i], v.types[i],
                                (int)toks->v.arr.strs[i].len, toks->v.arr.strs[i].ptr, (double)f,
                                t);
                }
            }
            CHECK_EQ_INT(bad, 0);
        } else {
            CHECK(!"stories260K.gguf tokenizer arrays");
        }
        kvl_gguf_free(g);
    }
    kvl_mkmodel_vocab_free(&v);

    /* malformed llama2.c tokenizers */
    char bad[4096];
    snprintf(bad, sizeof bad, "%s", kvt_tmp("mk_badtok.bin"));
    uint8_t img[16] = {7, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 'a', 'b'};
    CHECK(kvt_write_file(bad, img, sizeof img - 2));
    CHECK(kvl_mkmodel_vocab_count(bad, &n, &err) == KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "length 100 past the end");
    CHECK(kvt_write_file(bad, img, 2));
    CHECK(kvl_mkmodel_vocab_count(bad, &n, &err) == KVL_E_FORMAT);
    CHECK(kvl_mkmodel_vocab_load(kvt_tmp("mk_missing.bin"), 0, &v, &err) == KVL_E_IO);
    remove(bad);
}

/* ------------------------------------------------------------------------ */

typedef struct exp_tensor {
    char name[64];
    uint32_t n_dims;
    int64_t ne0, ne1;
} exp_tensor;

/* The expected tensor list, written independently of the generator's. */
static int expected_tensors(const kvl_mkmodel_spec *s, exp_tensor *t) {
    int n = 0;
    int64_t hd = s->shape.hp.dim / s->shape.hp.n_heads;
#define T(nd, a, b, ...)                                                                           \
    do {                                                                                           \
        snprintf(t[n].name, sizeof t[n].name, __VA_ARGS__);                                        \
        t[n].n_dims = nd;                                                                          \
        t[n].ne0 = a;                                                                              \
        t[n].ne1 = b;                                                                              \
        n++;                                                                                       \
    } while (0)
    T(2, s->shape.hp.dim, s->shape.hp.n_vocab, "token_embd.weight");
    T(1, s->shape.hp.dim, 1, "output_norm.weight");
    if (!s->shape.tied_embd)
        T(2, s->shape.hp.dim, s->shape.hp.n_vocab, "output.weight");
    for (int l = 0; l < s->shape.hp.n_layers; l++) {
        T(1, s->shape.hp.dim, 1, "blk.%d.attn_norm.weight", l);
        T(2, s->shape.hp.dim, s->shape.hp.n_heads * hd, "blk.%d.attn_q.weight", l);
        T(2, s->shape.hp.dim, s->shape.hp.n_kv_heads * hd, "blk.%d.attn_k.weight", l);
        T(2, s->shape.hp.dim, s->shape.hp.n_kv_heads * hd, "blk.%d.attn_v.weight", l);
        T(2, s->shape.hp.n_heads * hd, s->shape.hp.dim, "blk.%d.attn_output.weight", l);
        T(1, s->shape.hp.dim, 1, "blk.%d.ffn_norm.weight", l);
        T(2, s->shape.hp.dim, s->shape.hp.ffn_dim, "blk.%d.ffn_gate.weight", l);
        T(2, s->shape.hp.dim, s->shape.hp.ffn_dim, "blk.%d.ffn_up.weight", l);
        T(2, s->shape.hp.ffn_dim, s->shape.hp.dim, "blk.%d.ffn_down.weight", l);
    }
#undef T
    return n;
}

/* The type of tensor `name` (n_dims, ne0 columns) under spec s, written
 * independently of the generator's rule. k_m: llama.cpp's Q4_K_M / Q5_K_M mix,
 * Q6_K for the classifier (token_embd when tied) and for attn_v and
 * ffn_down of the layers that llama-quant.cpp's use_more_bits picks. */
static kvl_type expected_type(const kvl_mkmodel_spec *s, const char *name, uint32_t n_dims,
                              int64_t ne0) {
    if (n_dims == 1)
        return KVL_TYPE_F32;
    if (s->type == KVL_TYPE_F32 || s->type == KVL_TYPE_BF16 || s->type == KVL_TYPE_F16)
        return s->type;
    const int64_t blk = s->type == KVL_TYPE_Q2_K || s->type == KVL_TYPE_Q4_K ||
                                s->type == KVL_TYPE_Q5_K || s->type == KVL_TYPE_Q6_K
                            ? 256
                            : 32;
    if (ne0 % blk)
        return KVL_TYPE_F16;
    if (!s->k_m)
        return s->type;
    if (!strcmp(name, "output.weight") ||
        (s->shape.tied_embd && !strcmp(name, "token_embd.weight")))
        return KVL_TYPE_Q6_K;
    int layer = -1;
    char role[32] = "";
    if (sscanf(name, "blk.%d.%31[a-z_]", &layer, role) == 2 &&
        (!strcmp(role, "attn_v") || !strcmp(role, "ffn_down"))) {
        const int n = (int)s->shape.hp.n_layers;
        if (layer < n / 8 || layer >= 7 * n / 8 || (layer - n / 8) % 3 == 2)
            return KVL_TYPE_Q6_K;
    }
    return s->type;
}

static void check_u32(const kvl_gguf *g, const char *k, uint64_t v) {
    const kvl_gguf_kv *kv = key(g, k, KVL_GGUF_UINT32);
    if (kv && kv->v.u64 != v) {
        fprintf(stderr, "%s = %llu, expected %llu\n", k, (unsigned long long)kv->v.u64,
                (unsigned long long)v);
        CHECK(kv->v.u64 == v);
    }
}

/* Write s (+ v) to path, read it back, check everything. */
static void roundtrip(const kvl_mkmodel_spec *s, const kvl_mkmodel_vocab *v, const char *path) {
    kvl_error err;
    kvl_mkmodel_stats stats;
    remove(path);
    kvl_status st = kvl_mkmodel_write(s, v, path, NULL, NULL, &stats, &err);
    CHECK(st == KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "mkmodel_write: %s\n", err.msg);
        return;
    }
    kvl_gguf *g = NULL;
    st = kvl_gguf_open(path, &g, &err);
    CHECK(st == KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "gguf_open: %s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(g->size, stats.file_bytes);
    CHECK_EQ_INT(g->alignment, s->alignment ? s->alignment : 32);
    const kvl_gguf_kv *kv;
    if ((kv = key(g, "general.architecture", KVL_GGUF_STRING)))
        CHECK(kvl_str_eq(kv->v.str, "llama"));
    if ((kv = key(g, "general.name", KVL_GGUF_STRING)))
        CHECK(kvl_str_eq(kv->v.str, s->shape.name));
    check_u32(g, "general.file_type", kvl_mkmodel_file_type(s->type));
    if ((kv = key(g, "kvllm.mkmodel.seed", KVL_GGUF_UINT64)))
        CHECK(kv->v.u64 == s->seed);
    check_u32(g, "llama.context_length", (uint64_t)s->shape.hp.ctx_len);
    check_u32(g, "llama.embedding_length", (uint64_t)s->shape.hp.dim);
    check_u32(g, "llama.block_count", (uint64_t)s->shape.hp.n_layers);
    check_u32(g, "llama.feed_forward_length", (uint64_t)s->shape.hp.ffn_dim);
    check_u32(g, "llama.attention.head_count", (uint64_t)s->shape.hp.n_heads);
    check_u32(g, "llama.attention.head_count_kv", (uint64_t)s->shape.hp.n_kv_heads);
    check_u32(g, "llama.rope.dimension_count", (uint64_t)(s->shape.hp.dim / s->shape.hp.n_heads));
    check_u32(g, "llama.vocab_size", (uint64_t)s->shape.hp.n_vocab);
    if ((kv = key(g, "llama.rope.freq_base", KVL_GGUF_FLOAT32)))
        CHECK(kv->v.f64 == (double)s->shape.hp.rope_base);
    if ((kv = key(g, "llama.attention.layer_norm_rms_epsilon", KVL_GGUF_FLOAT32)))
        CHECK(kv->v.f64 == (double)s->shape.hp.rms_eps);
    if ((kv = key(g, "tokenizer.ggml.model", KVL_GGUF_STRING)))
        CHECK(kvl_str_eq(kv->v.str, "llama"));
    check_u32(g, "tokenizer.ggml.unknown_token_id", 0);
    check_u32(g, "tokenizer.ggml.bos_token_id", 1);
    check_u32(g, "tokenizer.ggml.eos_token_id", 2);
    if ((kv = key(g, "tokenizer.ggml.add_bos_token", KVL_GGUF_BOOL)))
        CHECK(kv->v.u64 == 1);
    if ((kv = key(g, "tokenizer.ggml.tokens", KVL_GGUF_ARRAY))) {
        CHECK_EQ_INT(kv->v.arr.n, v->n);
        if (kv->v.arr.n == (uint64_t)v->n && kv->v.arr.strs) {
            int bad = 0;
            for (int i = 0; i < v->n; i++)
                bad += !str_is(kv->v.arr.strs[i], v->pieces[i], strlen(v->pieces[i]));
            CHECK_EQ_INT(bad, 0);
        }
    }
    if ((kv = key(g, "tokenizer.ggml.scores", KVL_GGUF_ARRAY))) {
        CHECK_EQ_INT(kv->v.arr.type, KVL_GGUF_FLOAT32);
        CHECK(kv->v.arr.n == (uint64_t)v->n &&
              !memcmp(kv->v.arr.data, v->scores, (size_t)v->n * 4));
    }
    if ((kv = key(g, "tokenizer.ggml.token_type", KVL_GGUF_ARRAY))) {
        CHECK_EQ_INT(kv->v.arr.type, KVL_GGUF_INT32);
        CHECK(kv->v.arr.n == (uint64_t)v->n && !memcmp(kv->v.arr.data, v->types, (size_t)v->n * 4));
    }
    kvl_tokenizer *tk = NULL;
    if (kvl_tokenizer_from_gguf(g, &tk, &err) == KVL_OK) {
        CHECK_EQ_INT(kvl_tokenizer_n_vocab(tk), v->n);
        CHECK_EQ_INT(kvl_tokenizer_bos(tk), 1);
        CHECK_EQ_INT(kvl_tokenizer_eos(tk), 2);
        int32_t ids[64];
        size_t n_ids = 0;
        CHECK(kvl_tokenizer_encode(tk, "hello world", 11, true, ids, 64, &n_ids, &err) == KVL_OK);
        CHECK(n_ids >= 2 && ids[0] == 1);
        kvl_tokenizer_free(tk);
    } else {
        fprintf(stderr, "tokenizer_from_gguf: %s\n", err.msg);
        CHECK(!"tokenizer loads from the written file");
    }

    exp_tensor *et = calloc((size_t)(3 + 9 * s->shape.hp.n_layers), sizeof *et);
    int n = expected_tensors(s, et);
    CHECK_EQ_INT(g->n_tensors, n);
    CHECK_EQ_INT(stats.n_tensors, n);
    uint64_t params = 0;
    int64_t max0 = 0;
    for (int i = 0; i < n; i++)
        max0 = et[i].ne0 > max0 ? et[i].ne0 : max0;
    float *row = malloc((size_t)max0 * sizeof *row);
    uint8_t *q = malloc((size_t)max0 * 4);
    int bad_bytes = 0;
    for (int i = 0; i < n; i++) {
        const kvl_gguf_tensor *t = kvl_gguf_find_tensor(g, et[i].name);
        if (!t) {
            fprintf(stderr, "missing tensor %s\n", et[i].name);
            CHECK(t != NULL);
            continue;
        }
        params += (uint64_t)(et[i].ne0 * et[i].ne1);
        CHECK_EQ_INT(t->n_dims, et[i].n_dims);
        CHECK_EQ_INT(t->ne[0], et[i].ne0);
        CHECK_EQ_INT(t->ne[1], et[i].ne1);
        kvl_type want = expected_type(s, et[i].name, et[i].n_dims, et[i].ne0);
        CHECK_EQ_INT(t->type, want);
        size_t rb = kvl_row_bytes((kvl_type)t->type, t->ne[0]);
        CHECK_EQ_INT(t->nbytes, rb * (size_t)et[i].ne1);
        if (t->type != (uint32_t)want || t->nbytes != rb * (size_t)et[i].ne1)
            continue;
        for (int64_t r = 0; r < et[i].ne1; r++) {
            kvl_mkmodel_row(s, et[i].name, r, row, et[i].ne0);
            kvl_quantize_row(want, row, q, et[i].ne0);
            if (memcmp(q, (const uint8_t *)t->data + (size_t)r * rb, rb)) {
                if (bad_bytes++ < 3)
                    fprintf(stderr, "tensor %s row %lld differs from the generator\n", et[i].name,
                            (long long)r);
            }
        }
        /* stored values are close to the generator's floats */
        if (et[i].n_dims == 2) {
            float *back = malloc((size_t)et[i].ne0 * sizeof *back);
            kvl_mkmodel_row(s, et[i].name, 0, row, et[i].ne0);
            kvl_dequantize_row(want, t->data, back, et[i].ne0);
            double tol = want == KVL_TYPE_Q2_K                            ? 0.05
                         : want == KVL_TYPE_Q3_K                          ? 0.025
                         : want == KVL_TYPE_Q4_0 || want == KVL_TYPE_Q4_K ? 0.0125
                         : want == KVL_TYPE_Q5_0 || want == KVL_TYPE_Q5_1 ? 6e-3
                         : want == KVL_TYPE_Q5_K                          ? 5e-3
                         : want == KVL_TYPE_Q6_K                          ? 2.5e-3
                         : want == KVL_TYPE_Q8_0                          ? 6e-4
                                                                          : 4e-4;
            double worst = 0;
            for (int64_t c = 0; c < et[i].ne0; c++)
                worst = fmax(worst, fabs((double)back[c] - row[c]));
            CHECK(worst <= tol);
            free(back);
        } else {
            const float *f = t->data;
            CHECK(f[0] == 1.0f && f[et[i].ne0 - 1] == 1.0f);
        }
    }
    CHECK_EQ_INT(bad_bytes, 0);
    CHECK_EQ_INT(stats.n_params, params);
    free(row);
    free(q);
    free(et);
    kvl_gguf_free(g);

    /* kvllm's model loader accepts it, with the same hyperparameters */
    kvl_model *m = NULL;
    st = kvl_model_load(path, NULL, &m, &err);
    CHECK(st == KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "model_load: %s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(m->hp.dim, s->shape.hp.dim);
    CHECK_EQ_INT(m->hp.n_layers, s->shape.hp.n_layers);
    CHECK_EQ_INT(m->hp.n_heads, s->shape.hp.n_heads);
    CHECK_EQ_INT(m->hp.n_kv_heads, s->shape.hp.n_kv_heads);
    CHECK_EQ_INT(m->hp.head_dim, s->shape.hp.dim / s->shape.hp.n_heads);
    CHECK_EQ_INT(m->hp.ffn_dim, s->shape.hp.ffn_dim);
    CHECK_EQ_INT(m->hp.n_vocab, s->shape.hp.n_vocab);
    CHECK_EQ_INT(m->hp.ctx_len, s->shape.hp.ctx_len);
    CHECK(m->hp.rope_base == s->shape.hp.rope_base);
    CHECK(m->hp.rms_eps == s->shape.hp.rms_eps);
    CHECK(m->layers && m->layers[0].w_down.type ==
                           expected_type(s, "blk.0.ffn_down.weight", 2, s->shape.hp.ffn_dim));
    CHECK(s->shape.tied_embd ? m->output.data == m->tok_embd.data
                             : m->output.data != m->tok_embd.data);
    kvl_model_free(m);
}

static bool same_file(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *pa = kvt_read_file(a, &na), *pb = kvt_read_file(b, &nb);
    bool same = pa && pb && na == nb && !memcmp(pa, pb, na);
    free(pa);
    free(pb);
    return same;
}

static void test_models(void) {
    kvl_error err;
    kvl_mkmodel_vocab tok512 = {0}, synth512 = {0};
    bool have512 =
        kvl_mkmodel_vocab_load(kvt_shared("models/tok512.bin"), 512, &tok512, &err) == KVL_OK;
    CHECK(kvl_mkmodel_vocab_synth(512, &synth512, &err) == KVL_OK);
    const kvl_type types[7] = {KVL_TYPE_F32,  KVL_TYPE_F16,  KVL_TYPE_BF16, KVL_TYPE_Q8_0,
                               KVL_TYPE_Q4_0, KVL_TYPE_Q5_0, KVL_TYPE_Q5_1};
    for (int i = 0; i < 7; i++) {
        kvl_mkmodel_spec s;
        kvl_catalog_mkmodel_spec("stories260K", &s, NULL);
        s.type = types[i];
        s.seed = 42 + (uint64_t)i;
        char name[64];
        snprintf(name, sizeof name, "mk_s260k_%d.gguf", i);
        char path[4096];
        snprintf(path, sizeof path, "%s", kvt_tmp(name));
        roundtrip(&s, have512 ? &tok512 : &synth512, path);
        remove(path);
    }

    /* K-quants need rows of 256: q4_k, q6_k, the q4_k_m mix untied and
     * tied, q5_k and q5_k_m, q2_k, q3_k, on 8 layers (use_more_bits picks layers
     * 0, 3, 6 and 7) */
    for (int i = 0; i < 8; i++) {
        kvl_mkmodel_spec s;
        kvl_catalog_mkmodel_spec("stories260K", &s, NULL);
        s.shape.hp.dim = 256;
        s.shape.hp.ffn_dim = 512;
        s.shape.hp.n_heads = 4;
        s.shape.hp.n_kv_heads = 2;
        s.shape.hp.n_layers = 8;
        s.type = i == 1   ? KVL_TYPE_Q6_K
                 : i == 6 ? KVL_TYPE_Q2_K
                 : i == 7 ? KVL_TYPE_Q3_K
                 : i >= 4 ? KVL_TYPE_Q5_K
                          : KVL_TYPE_Q4_K;
        s.k_m = i == 2 || i == 3 || i == 5;
        s.shape.tied_embd = i == 3;
        s.seed = 7 + (uint64_t)i;
        char name[64];
        snprintf(name, sizeof name, "mk_kq_%d.gguf", i);
        char path[4096];
        snprintf(path, sizeof path, "%s", kvt_tmp(name));
        roundtrip(&s, have512 ? &tok512 : &synth512, path);
        if (s.k_m) {
            const int64_t more[8] = {1, 0, 0, 1, 0, 0, 1, 1};
            for (int64_t l = 0; l < 8; l++) {
                CHECK_EQ_INT(kvl_mkmodel_tensor_type(&s, KVL_MK_FFN_DOWN, l, 512),
                             more[l] ? KVL_TYPE_Q6_K : s.type);
                CHECK_EQ_INT(kvl_mkmodel_tensor_type(&s, KVL_MK_ATTN_V, l, 256),
                             more[l] ? KVL_TYPE_Q6_K : s.type);
            }
        }
        remove(path);
    }
    {
        /* TinyLlama's 22 layers: Q6_K ffn_down in layers 0, 1, 4, 7, 10,
         * 13, 16, 19, 20, 21 (as in published TinyLlama Q4_K_M files) */
        kvl_mkmodel_spec s;
        kvl_catalog_mkmodel_spec("tinyllama-1.1b", &s, NULL);
        s.type = KVL_TYPE_Q4_K;
        s.k_m = true;
        int64_t n6 = 0, mask = 0;
        for (int64_t l = 0; l < 22; l++)
            if (kvl_mkmodel_tensor_type(&s, KVL_MK_FFN_DOWN, l, 5632) == KVL_TYPE_Q6_K) {
                n6++;
                mask |= (int64_t)1 << l;
            }
        CHECK_EQ_INT(n6, 10);
        CHECK_EQ_INT(mask, (1 << 0) | (1 << 1) | (1 << 4) | (1 << 7) | (1 << 10) | (1 << 13) |
                               (1 << 16) | (1 << 19) | (1 << 20) | (1 << 21));
        CHECK_EQ_INT(kvl_mkmodel_tensor_type(&s, KVL_MK_OUTPUT, 0, 2048), KVL_TYPE_Q6_K);
        CHECK_EQ_INT(kvl_mkmodel_tensor_type(&s, KVL_MK_TOKEN_EMBD, 0, 2048), KVL_TYPE_Q4_K);
        CHECK_EQ_INT(kvl_mkmodel_tensor_type(&s, KVL_MK_OTHER, 5, 2048), KVL_TYPE_Q4_K);
        /* a mix of another type is refused */
        kvl_error e;
        s.type = KVL_TYPE_Q8_0;
        CHECK(kvl_mkmodel_check(&s, &e) == KVL_E_INVALID);
        CHECK_CONTAINS(e.msg, "_k_m mix needs type q4_k or q5_k");
    }

    /* a tiny custom shape: MQA, tied output, Q4_0, alignment 64 */
    kvl_mkmodel_spec s;
    kvl_catalog_mkmodel_spec("stories260K", &s, NULL);
    snprintf(s.shape.name, sizeof s.shape.name, "tiny-custom");
    kvt_set_dims(&s.shape.hp, (kvt_dims){.dim = 32,
                                         .n_heads = 4,
                                         .n_kv_heads = 1,
                                         .ffn_dim = 96,
                                         .n_layers = 2,
                                         .n_vocab = 300,
                                         .ctx_len = 128});
    s.shape.hp.rope_base = 500000.0f;
    s.shape.hp.rms_eps = 1e-6f;
    s.type = KVL_TYPE_Q4_0;
    s.shape.tied_embd = true;
    s.alignment = 64;
    s.seed = 0xDEADBEEFull;
    kvl_mkmodel_vocab v300;
    CHECK(kvl_mkmodel_vocab_synth(300, &v300, &err) == KVL_OK);
    char p1[4096], p2[4096], p3[4096];
    snprintf(p1, sizeof p1, "%s", kvt_tmp("mk_tiny1.gguf"));
    snprintf(p2, sizeof p2, "%s", kvt_tmp("mk_tiny2.gguf"));
    snprintf(p3, sizeof p3, "%s", kvt_tmp("mk_tiny3.gguf"));
    roundtrip(&s, &v300, p1);

    /* determinism: same seed, same bytes; another seed, other bytes */
    CHECK(kvl_mkmodel_write(&s, &v300, p2, NULL, NULL, NULL, &err) == KVL_OK);
    CHECK(same_file(p1, p2));
    s.seed++;
    CHECK(kvl_mkmodel_write(&s, &v300, p3, NULL, NULL, NULL, &err) == KVL_OK);
    CHECK(!same_file(p1, p3));

    /* vocabulary size mismatch and bad specs write nothing */
    remove(p3);
    CHECK(kvl_mkmodel_write(&s, &synth512, p3, NULL, NULL, NULL, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "512 pieces but --vocab-size is 300");
    s.shape.hp.n_heads = 5;
    CHECK(kvl_mkmodel_write(&s, &v300, p3, NULL, NULL, NULL, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "--heads 5");
    CHECK(!file_exists(p3));
    remove(p1);
    remove(p2);

    kvl_mkmodel_vocab_free(&v300);
    kvl_mkmodel_vocab_free(&tok512);
    kvl_mkmodel_vocab_free(&synth512);
}

int main(void) {
    test_writer_types();
    test_writer_errors();
    test_writer_attacks();
    test_rng();
    test_check();
    test_vocab();
    test_models();
    return kvt_finish("test_mkmodel");
}
