/*
 * fuzz_tokenizer: libFuzzer target for the tokenizer.
 *
 * The first input byte picks a mode:
 *   0      the rest is a llama2.c tokenizer image; the next two bytes give
 *          vocab_size. When it loads and has all 256 byte tokens, the image
 *          itself is encoded with it and must round-trip.
 *   1      the rest is a GGUF image: kvl_gguf_parse, then
 *          kvl_tokenizer_from_gguf, then the same round trip.
 *   other  the rest is text for the tokenizer built once from tok512.bin
 *          (KVL_SHARED, default ../shared) or, when that file is missing, from
 *          a small built-in vocabulary: encode with and without BOS, check the
 *          ids and the cap contract, and decode; the bytes must come back.
 *
 * Invariant checked: decode(encode(s)) == s for every byte string s, given
 * a vocabulary with all byte tokens. A mismatch calls __builtin_trap().
 * It must not: keep state between inputs beyond the one shared tokenizer.
 */
#include "model/gguf.h"
#include "model/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(c)                                                          \
    do {                                                                       \
        if (!(c))                                                              \
            __builtin_trap();                                                  \
    } while (0)

static void put(uint8_t **p, const void *v, size_t n) {
    memcpy(*p, v, n);
    *p += n;
}

static void put_rec(uint8_t **p, float score, const char *piece) {
    int32_t len = (int32_t)strlen(piece);
    put(p, &score, 4);
    put(p, &len, 4);
    put(p, piece, (size_t)len);
}

/* A llama2.c image: specials, 256 byte tokens and a few merges. */
static kvl_tokenizer *builtin_vocab(void) {
    static const char *merges[] = {" ", "e", "t", "a", "h", " t", "he", " a", "th", "the",
                                   " the", "\xc3\xa9", "  ", "\n", "<", "s>", "ab", "bc"};
    const int n_merges = (int)(sizeof merges / sizeof merges[0]);
    static uint8_t img[8192];
    uint8_t *p = img;
    int32_t max_len = 8;
    put(&p, &max_len, 4);
    put_rec(&p, 0, "<unk>");
    put_rec(&p, 0, "\n<s>\n");
    put_rec(&p, 0, "\n</s>\n");
    for (int i = 0; i < 256; i++) {
        char b[8];
        snprintf(b, sizeof b, "<0x%02X>", i);
        put_rec(&p, 0, b);
    }
    for (int i = 0; i < n_merges; i++)
        put_rec(&p, (float)-i, merges[i]);
    kvl_tokenizer *t = NULL;
    if (kvl_tokenizer_from_llama2c(img, (size_t)(p - img), 259 + n_merges, &t, NULL) != KVL_OK)
        return NULL;
    return t;
}

static kvl_tokenizer *shared_tok(void) {
    static kvl_tokenizer *t;
    static bool tried;
    if (!tried) {
        tried = true;
        const char *root = getenv("KVL_SHARED");
        char path[4096];
        snprintf(path, sizeof path, "%s/models/tok512.bin", root && *root ? root : "../shared");
        if (kvl_tokenizer_load_llama2c(path, 512, &t, NULL) != KVL_OK)
            t = builtin_vocab();
        FUZZ_CHECK(t != NULL);
    }
    return t;
}

static void round_trip(const kvl_tokenizer *t, const uint8_t *s, size_t len, bool bos) {
    size_t cap = len + 3, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    char *back = malloc(4 * cap + 1);
    FUZZ_CHECK(ids && back);
    FUZZ_CHECK(kvl_tokenizer_encode(t, (const char *)s, len, bos, ids, cap, &n, NULL) == KVL_OK);
    FUZZ_CHECK(n <= cap);
    int32_t nv = kvl_tokenizer_n_vocab(t);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < nv);
    if (bos)
        FUZZ_CHECK(n >= 1 && ids[0] == kvl_tokenizer_bos(t));
    /* a smaller cap: KVL_E_LIMIT, the same count and the same prefix */
    if (n > 1) {
        size_t half = n / 2, n2 = 0;
        int32_t *ids2 = malloc(n * sizeof *ids2);
        FUZZ_CHECK(ids2);
        for (size_t i = 0; i < n; i++)
            ids2[i] = -7;
        FUZZ_CHECK(kvl_tokenizer_encode(t, (const char *)s, len, bos, ids2, half, &n2, NULL) ==
                   KVL_E_LIMIT);
        FUZZ_CHECK(n2 == n && memcmp(ids2, ids, half * sizeof *ids) == 0 && ids2[half] == -7);
        free(ids2);
    }
    size_t o = 0;
    int32_t prev = -1;
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = kvl_tokenizer_piece(t, prev, ids[i], &pl);
        /* no piece is longer than its share of the text plus the prefix */
        FUZZ_CHECK(o + pl <= len + 1);
        memcpy(back + o, p, pl);
        o += pl;
        prev = ids[i];
    }
    if (bos || len == 0) {
        FUZZ_CHECK(o == len && (len == 0 || memcmp(back, s, len) == 0));
    } else {
        FUZZ_CHECK(o == len + 1 && back[0] == ' ' && memcmp(back + 1, s, len) == 0);
    }
    free(ids);
    free(back);
}

static bool has_all_bytes(const kvl_tokenizer *t) {
    bool seen[256] = {false};
    int n_seen = 0;
    for (int32_t id = 0; id < kvl_tokenizer_n_vocab(t); id++) {
        int32_t type;
        if (kvl_tokenizer_get(t, id, NULL, NULL, NULL, &type) != KVL_OK ||
            type != KVL_TOK_BYTE)
            continue;
        size_t pl;
        const char *p = kvl_tokenizer_piece(t, -1, id, &pl);
        if (pl == 1 && !seen[(uint8_t)p[0]]) {
            seen[(uint8_t)p[0]] = true;
            n_seen++;
        }
    }
    return n_seen == 256;
}

/* A loaded vocabulary must still be safe to use, and lossless when it has
 * every byte token. */
static void exercise(const kvl_tokenizer *t, const uint8_t *s, size_t len) {
    if (len > 4096)
        len = 4096;
    if (has_all_bytes(t)) {
        round_trip(t, s, len, true);
    } else {
        size_t n;
        int32_t *ids = malloc((len + 3) * sizeof *ids);
        FUZZ_CHECK(ids);
        FUZZ_CHECK(kvl_tokenizer_encode(t, (const char *)s, len, true, ids, len + 3, &n, NULL) ==
                   KVL_OK);
        for (size_t i = 0; i < n; i++) {
            size_t pl;
            kvl_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], &pl);
        }
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    if (mode == 0) {
        if (size < 2)
            return 0;
        int32_t vocab = (int32_t)(data[0] | data[1] << 8) - 8; /* also < 3 */
        kvl_tokenizer *t = NULL;
        kvl_error err;
        if (kvl_tokenizer_from_llama2c(data + 2, size - 2, vocab, &t, &err) == KVL_OK) {
            exercise(t, data, size);
            kvl_tokenizer_free(t);
        } else {
            FUZZ_CHECK(t == NULL && err.msg[0] != '\0');
        }
        return 0;
    }
    if (mode == 1) {
        kvl_gguf *g = NULL;
        if (kvl_gguf_parse(data, size, &g, NULL) != KVL_OK)
            return 0;
        kvl_tokenizer *t = NULL;
        kvl_error err;
        if (kvl_tokenizer_from_gguf(g, &t, &err) == KVL_OK) {
            exercise(t, data, size);
            kvl_tokenizer_free(t);
        } else {
            FUZZ_CHECK(t == NULL && err.msg[0] != '\0');
        }
        kvl_gguf_free(g);
        return 0;
    }
    const kvl_tokenizer *t = shared_tok();
    round_trip(t, data, size, true);
    round_trip(t, data, size, false);
    return 0;
}
