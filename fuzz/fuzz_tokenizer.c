/*
 * fuzz_tokenizer: libFuzzer target for the tokenizer.
 *
 * The first input byte picks a mode:
 *   0      the rest is a llama2.c tokenizer image; the next two bytes give
 *          vocab_size. When it loads and has all 256 byte tokens, the image
 *          itself is encoded with it and must round-trip.
 *   1      the rest is a GGUF image: kvl_gguf_parse, then
 *          kvl_tokenizer_from_gguf, then the same round trip ("llama"), or
 *          for a byte-level BPE ("gpt2", seed gguf_bpe) encoding with and
 *          without special tokens, the ids in range and decoding safe.
 *   2      the rest is text for a built-in byte-level BPE vocabulary (256
 *          bytes, merges, added and control tokens) under each
 *          pre-tokenizer; decode(encode(s)) == s without PARSE_SPECIAL,
 *          ids in range and the cap contract with it.
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

#define FUZZ_CHECK(c)                                                                              \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
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
    static const char *merges[] = {" ",   "e",    "t",        "a",  "h",  " t", "he", " a", "th",
                                   "the", " the", "\xc3\xa9", "  ", "\n", "<",  "s>", "ab", "bc"};
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

/* --- byte-level BPE --------------------------------------------------------- */

/* GPT-2's byte spelling of b, as UTF-8 */
static void byte_spelling(int b, char *out) {
    bool keep = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    unsigned cp = (unsigned)b;
    if (!keep) {
        cp = 256;
        for (int i = 0; i < b; i++)
            cp += !((i >= '!' && i <= '~') || (i >= 0xA1 && i <= 0xAC) || i >= 0xAE);
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        out[2] = 0;
    }
}

#define BPE_N 264
static kvl_tokenizer *bpe_vocab(int pre) {
    static const char *const pres[] = {"gpt-2", "llama-bpe", "qwen2", "smollm", "default"};
    static kvl_tokenizer *t[5];
    static char text[BPE_N][16], mtext[5][16];
    static kvl_str toks[BPE_N], merges[5];
    static int32_t types[BPE_N];
    static kvl_gguf_kv kv[6];
    if (t[pre])
        return t[pre];
    for (int i = 0; i < 256; i++) {
        byte_spelling(i, text[i]);
        types[i] = KVL_TOK_NORMAL;
    }
    /* merges: "Ġ t", "h e", "Ġt he", "1 2", "Ċ Ċ" */
    static const char *const m[5][2] = {
        {"\xc4\xa0", "t"}, {"h", "e"}, {"\xc4\xa0t", "he"}, {"1", "2"}, {"\xc4\x8a", "\xc4\x8a"}};
    for (int i = 0; i < 5; i++) {
        snprintf(text[256 + i], sizeof text[0], "%s%s", m[i][0], m[i][1]);
        snprintf(mtext[i], sizeof mtext[0], "%s %s", m[i][0], m[i][1]);
        types[256 + i] = KVL_TOK_NORMAL;
        merges[i] = (kvl_str){mtext[i], strlen(mtext[i])};
    }
    strcpy(text[261], "<|end|>");
    types[261] = KVL_TOK_CONTROL;
    strcpy(text[262], "xy z");
    types[262] = KVL_TOK_USER_DEFINED;
    strcpy(text[263], "<s>");
    types[263] = KVL_TOK_CONTROL;
    for (int i = 0; i < BPE_N; i++)
        toks[i] = (kvl_str){text[i], strlen(text[i])};
    kv[0] = (kvl_gguf_kv){.key = {"tokenizer.ggml.model", 20}, .type = KVL_GGUF_STRING};
    kv[0].v.str = (kvl_str){"gpt2", 4};
    kv[1] = (kvl_gguf_kv){.key = {"tokenizer.ggml.pre", 18}, .type = KVL_GGUF_STRING};
    kv[1].v.str = (kvl_str){pres[pre], strlen(pres[pre])};
    kv[2] = (kvl_gguf_kv){.key = {"tokenizer.ggml.tokens", 21}, .type = KVL_GGUF_ARRAY};
    kv[2].v.arr.type = KVL_GGUF_STRING;
    kv[2].v.arr.n = BPE_N;
    kv[2].v.arr.strs = toks;
    kv[3] = (kvl_gguf_kv){.key = {"tokenizer.ggml.token_type", 25}, .type = KVL_GGUF_ARRAY};
    kv[3].v.arr.type = KVL_GGUF_INT32;
    kv[3].v.arr.n = BPE_N;
    kv[3].v.arr.data = (const uint8_t *)types;
    kv[4] = (kvl_gguf_kv){.key = {"tokenizer.ggml.merges", 21}, .type = KVL_GGUF_ARRAY};
    kv[4].v.arr.type = KVL_GGUF_STRING;
    kv[4].v.arr.n = 5;
    kv[4].v.arr.strs = merges;
    kv[5] = (kvl_gguf_kv){.key = {"tokenizer.ggml.bos_token_id", 27}, .type = KVL_GGUF_UINT32};
    kv[5].v.u64 = 263;
    kvl_gguf g = {.version = 3, .n_kv = 6, .kv = kv};
    FUZZ_CHECK(kvl_tokenizer_from_gguf(&g, &t[pre], NULL) == KVL_OK);
    return t[pre];
}

/* Encode with flags; ids in range, the cap contract; returns the ids
 * (malloc'd) and their count. */
static int32_t *bpe_encode(const kvl_tokenizer *t, const uint8_t *s, size_t len, unsigned flags,
                           size_t *n_out) {
    size_t cap = len + 3, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    FUZZ_CHECK(ids);
    FUZZ_CHECK(kvl_tokenizer_tokenize(t, (const char *)s, len, flags, ids, cap, &n, NULL) ==
               KVL_OK);
    FUZZ_CHECK(n <= cap);
    for (size_t i = 0; i < n; i++)
        FUZZ_CHECK(ids[i] >= 0 && ids[i] < kvl_tokenizer_n_vocab(t));
    if (n > 1) {
        size_t half = n / 2, n2 = 0;
        int32_t *ids2 = malloc(n * sizeof *ids2);
        FUZZ_CHECK(ids2);
        for (size_t i = 0; i < n; i++)
            ids2[i] = -7;
        FUZZ_CHECK(kvl_tokenizer_tokenize(t, (const char *)s, len, flags, ids2, half, &n2, NULL) ==
                   KVL_E_LIMIT);
        FUZZ_CHECK(n2 == n && memcmp(ids2, ids, half * sizeof *ids) == 0 && ids2[half] == -7);
        free(ids2);
    }
    *n_out = n;
    return ids;
}

/* Decoded bytes of ids (malloc'd); *len gets the size. */
static char *bpe_decode(const kvl_tokenizer *t, const int32_t *ids, size_t n, size_t *len) {
    size_t cap = 64, o = 0;
    char *buf = malloc(cap);
    FUZZ_CHECK(buf);
    for (size_t i = 0; i < n; i++) {
        size_t pl;
        const char *p = kvl_tokenizer_piece(t, i ? ids[i - 1] : -1, ids[i], &pl);
        while (o + pl > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            FUZZ_CHECK(buf);
        }
        memcpy(buf + o, p, pl);
        o += pl;
    }
    *len = o;
    return buf;
}

static void bpe_exercise(const kvl_tokenizer *t, const uint8_t *s, size_t len, bool lossless) {
    static const unsigned flags[] = {0, KVL_TOKENIZE_PARSE_SPECIAL, KVL_TOKENIZE_ADD_SPECIAL};
    for (int f = 0; f < 3; f++) {
        size_t n, dl;
        int32_t *ids = bpe_encode(t, s, len, flags[f], &n);
        char *d = bpe_decode(t, ids, n, &dl);
        if (lossless && flags[f] == 0)
            FUZZ_CHECK(dl == len && (len == 0 || memcmp(d, s, len) == 0));
        free(ids);
        free(d);
    }
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
    /* what the vocabulary asks for (tokenizer.ggml.add_*): BOS, EOS, the
     * dummy prefix */
    bool add_bos = bos && kvl_tokenizer_add_bos(t), add_eos = bos && kvl_tokenizer_add_eos(t);
    size_t pre = kvl_tokenizer_add_space_prefix(t) && len > 0;
    if (add_bos)
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
    (void)add_eos; /* EOS decodes to nothing */
    if (add_bos || !pre) {
        FUZZ_CHECK(o == len && (len == 0 || memcmp(back, s, len) == 0));
    } else {
        FUZZ_CHECK(o == len + 1 && back[0] == ' ' && memcmp(back + 1, s, len) == 0);
    }
    free(ids);
    free(back);
}

/* All 256 byte tokens and no user-defined token (those are cut out of the
 * text whole and bring the dummy-prefix space back after them, as in
 * llama.cpp: no longer an exact round trip). */
static bool has_all_bytes(const kvl_tokenizer *t) {
    bool seen[256] = {false};
    int n_seen = 0;
    for (int32_t id = 0; id < kvl_tokenizer_n_vocab(t); id++) {
        int32_t type;
        if (kvl_tokenizer_get(t, id, NULL, NULL, NULL, &type) != KVL_OK)
            continue;
        if (type == KVL_TOK_USER_DEFINED)
            return false;
        if (type != KVL_TOK_BYTE)
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
    if (!strcmp(kvl_tokenizer_model(t), "gpt2")) {
        bpe_exercise(t, s, len, false);
    } else if (has_all_bytes(t)) {
        round_trip(t, s, len, true);
    } else {
        size_t n;
        int32_t *ids = malloc((2 * len + 3) * sizeof *ids);
        FUZZ_CHECK(ids);
        FUZZ_CHECK(kvl_tokenizer_encode(t, (const char *)s, len, true, ids, 2 * len + 3, &n,
                                        NULL) == KVL_OK);
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
    if (mode == 2) {
        for (int pre = 0; pre < 5; pre++)
            bpe_exercise(bpe_vocab(pre), data, size > 4096 ? 4096 : size, true);
        return 0;
    }
    const kvl_tokenizer *t = shared_tok();
    round_trip(t, data, size, true);
    round_trip(t, data, size, false);
    return 0;
}
