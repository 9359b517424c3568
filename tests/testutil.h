/*
 * A tiny test harness: CHECK-style assertions that count failures and keep
 * going, plus helpers to find shared/ files and write temporary files.
 * Each test program returns non-zero when any check failed.
 */
#ifndef KVL_TESTUTIL_H
#define KVL_TESTUTIL_H

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "model/gguf.h"
#include "model/mkmodel.h"
#include "model/tokenizer.h"

extern int kvt_failures;
extern int kvt_checks;

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        kvt_checks++;                                                                              \
        if (!(c)) {                                                                                \
            kvt_failures++;                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);                  \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long _a = (long long)(a), _b = (long long)(b);                                        \
        kvt_checks++;                                                                              \
        if (_a != _b) {                                                                            \
            kvt_failures++;                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__,  \
                    #a, #b, _a, _b);                                                               \
        }                                                                                          \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
    do {                                                                                           \
        double _a = (double)(a), _b = (double)(b);                                                 \
        kvt_checks++;                                                                              \
        if (!(fabs(_a - _b) <= (tol))) {                                                           \
            kvt_failures++;                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: |%s - %s| <= %g (%.9g vs %.9g)\n", __FILE__,     \
                    __LINE__, #a, #b, (double)(tol), _a, _b);                                      \
        }                                                                                          \
    } while (0)

/* Check that a message contains a substring. */
#define CHECK_CONTAINS(hay, needle)                                                                \
    do {                                                                                           \
        kvt_checks++;                                                                              \
        if (!strstr((hay), (needle))) {                                                            \
            kvt_failures++;                                                                        \
            fprintf(stderr, "%s:%d: CHECK failed: \"%s\" does not contain \"%s\"\n", __FILE__,     \
                    __LINE__, (hay), (needle));                                                    \
        }                                                                                          \
    } while (0)

/* Path of a file under shared/ (KVL_SHARED env or ../shared); static buffer. */
const char *kvt_shared(const char *rel);
/* A fresh path under the test temp dir (KVL_TMP or /tmp); static buffer. */
const char *kvt_tmp(const char *name);
/* Write bytes to a file; false on failure. */
bool kvt_write_file(const char *path, const void *data, size_t n);
/* Read a whole file into a malloc'd buffer; NULL on failure. */
void *kvt_read_file(const char *path, size_t *n);
/* In-memory GGUF metadata for tokenizer tests: a kvl_str of a C string, and
 * one key set to a string, a UINT32, a BOOL, or an array of n elements of
 * type elem (data: kvl_str strings for STRING, the packed values
 * otherwise). The key and data are not copied. */
kvl_str kvt_str(const char *c);
void kvt_kv_str(kvl_gguf_kv *kv, const char *key, const char *v);
void kvt_kv_u32(kvl_gguf_kv *kv, const char *key, uint32_t v);
void kvt_kv_bool(kvl_gguf_kv *kv, const char *key, bool v);
void kvt_kv_arr(kvl_gguf_kv *kv, const char *key, uint32_t elem, uint64_t n, const void *data);

/* ids decoded (kvl_tokenizer_piece, the first after prev) into a malloc'd,
 * NUL-terminated buffer; *len gets the byte count. The caller frees it. */
char *kvt_decode(const kvl_tokenizer *t, int32_t prev, const int32_t *ids, size_t n, size_t *len);

/* The dimensions of a small test model, set on hp by kvt_set_dims:
 * head_dim 0 means dim / n_heads; rope_dim becomes head_dim. The other
 * fields of hp (arch, rope base, eps) are left as they are. */
typedef struct kvt_dims {
    int64_t dim, n_heads, n_kv_heads, head_dim, ffn_dim, n_layers, n_vocab, ctx_len;
} kvt_dims;
void kvt_set_dims(kvl_hparams *hp, kvt_dims d);
/* Write spec with a synthesized vocabulary of its n_vocab pieces to the
 * temp file `name`: the path (kvt_tmp's static buffer), or NULL after a
 * failed CHECK and the writer's message on stderr. */
const char *kvt_mkmodel_file(const kvl_mkmodel_spec *spec, const char *name);

/* One step of Marsaglia's xorshift64 (13, 7, 17) on *state; returns the new
 * state. Each test keeps its own seeded state and takes the bits it wants. */
uint64_t kvt_xorshift64(uint64_t *state);

/* A prompt of n token ids: BOS (1), then a fixed pattern in 3..502 that
 * differs by `which` (no BOS or EOS inside): the engine tests' prompts. */
void kvt_pattern_prompt(int32_t *t, int32_t n, int which);

/* A greedy request (temperature 0) for n samples of max_tokens each after
 * the n_prompt ids at toks; every other field is kvl_request_defaults'. */
kvl_request_params kvt_greedy_request(const int32_t *toks, int32_t n_prompt, int32_t max_tokens,
                                      int32_t n);

int kvt_finish(const char *name);

#endif
