/*
 * Tokenizer tests: exact encodings of the Llama 2 vocabulary (llama2.c's
 * test.c expectations) and of tok512 (the golden prompts), lossless round
 * trips of random bytes, the merge rules on a tiny hand-made vocabulary, and
 * malformed llama2.c files and GGUF tokenizer sections, each of which must
 * give a clear error and leave *out untouched.
 */
#include "model/tokenizer.h"

#include "testutil.h"

#include <stdlib.h>

static kvl_tokenizer *const SENTINEL = (kvl_tokenizer *)&kvt_checks;

/* Encode into a malloc'd array; *n gets the count. */
static int32_t *enc(const kvl_tokenizer *t, const char *s, size_t len, bool bos, size_t *n) {
    size_t cap = len + 3;
    int32_t *ids = malloc(cap * sizeof *ids);
    kvl_error err = {0};
    kvl_status st = kvl_tokenizer_encode(t, s, len, bos, ids, cap, n, &err);
    CHECK_EQ_INT(st, KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "encode: %s\n", err.msg);
        *n = 0;
    }
    return ids;
}

static bool ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

static void expect_ids(const kvl_tokenizer *t, const char *s, const int32_t *want, size_t n_want) {
    size_t n;
    int32_t *got = enc(t, s, strlen(s), true, &n);
    bool ok = ids_equal(got, n, want, n_want);
    CHECK(ok);
    if (!ok) {
        fprintf(stderr, "  text \"%s\": got", s);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", (int)got[i]);
        fprintf(stderr, "\n");
    }
    free(got);
}

/* decode(encode(s)) == s with BOS (which drops the dummy prefix) and
 * " " + s without it. */
static bool round_trip(const kvl_tokenizer *t, const char *s, size_t len) {
    size_t n, dl;
    int32_t *ids = enc(t, s, len, true, &n);
    char *d = kvt_decode(t, -1, ids, n, &dl);
    bool ok = dl == len && memcmp(d, s, len) == 0;
    free(d);
    free(ids);
    ids = enc(t, s, len, false, &n);
    d = kvt_decode(t, -1, ids, n, &dl);
    if (len == 0)
        ok = ok && n == 0 && dl == 0;
    else
        ok = ok && dl == len + 1 && d[0] == ' ' && memcmp(d + 1, s, len) == 0;
    free(d);
    free(ids);
    return ok;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static void random_round_trips(const kvl_tokenizer *t, const char *name) {
    static const char *alphabet[] = {"a",
                                     "b",
                                     "e",
                                     " ",
                                     "  ",
                                     "the",
                                     "\n",
                                     "\xc3\xa9",
                                     "\xe2\x96\x81",
                                     "\xf0\x9f\x98\x80",
                                     "\xff",
                                     "\x80",
                                     "\xed\xa0\x80",
                                     "\xc0\xaf",
                                     "<0x0A>",
                                     "\0",
                                     "\xe4\xb8"};
    const size_t n_alpha = sizeof alphabet / sizeof alphabet[0];
    char buf[256];
    int bad = 0;
    for (int iter = 0; iter < 400; iter++) {
        size_t len = 0, want = rnd() % 64;
        bool raw = iter % 2 == 0;
        while (len < want) {
            if (raw) {
                buf[len++] = (char)(rnd() & 0xFF);
            } else {
                const char *a = alphabet[rnd() % n_alpha];
                size_t al = a[0] ? strlen(a) : 1;
                if (len + al > sizeof buf)
                    break;
                memcpy(buf + len, a, al);
                len += al;
            }
        }
        if (!round_trip(t, buf, len))
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    if (bad)
        fprintf(stderr, "  %s: %d round trips failed\n", name, bad);
}

static void test_llama2_vocab(void) {
    kvl_tokenizer *t = NULL;
    kvl_error err = {0};
    kvl_status st = kvl_tokenizer_load_llama2c(kvt_shared("models/tokenizer.bin"), 32000, &t, &err);
    CHECK_EQ_INT(st, KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(kvl_tokenizer_n_vocab(t), 32000);
    CHECK_EQ_INT(kvl_tokenizer_bos(t), 1);
    CHECK_EQ_INT(kvl_tokenizer_eos(t), 2);

    /* llama2.c test.c */
    static const int32_t e0[] = {1};
    expect_ids(t, "", e0, 1);
    static const int32_t e1[] = {1, 306, 4658, 278, 6593, 310, 2834, 338};
    expect_ids(t, "I believe the meaning of life is", e1, 8);
    static const int32_t e2[] = {1,   3439,  17632, 1925, 29892, 278,  6368,
                                 310, 14215, 537,   5922, 393,   29871};
    expect_ids(t, "Simply put, the theory of relativity states that ", e2, 13);
    static const int32_t e3[] = {1,     319,   11473, 2643, 378,   629, 271, 18099, 278,
                                 3815,  373,   278,   6826, 29901, 13,  13,  4706,  6324,
                                 14332, 29892, 13,    13,   4706,  306, 925, 29871};
    expect_ids(t,
               "A brief message congratulating the team on the launch:\n\n        Hi "
               "everyone,\n\n        I just ",
               e3, 26);
    static const int32_t e4[] = {1,     4103, 9632, 4223, 304,   5176, 29901, 13,   13,   4706,
                                 7205,  4932, 357,  1149, 301,   449,  276,   316,  2778, 13,
                                 4706,  1236, 407,  837,  524,   1149, 6042,  354,  772,  440,
                                 29878, 1318, 13,   4706, 715,   1878, 330,   3055, 1725, 1149,
                                 330,   3055, 1725, 4639, 28754, 13,   4706,  923,  968,  1149};
    expect_ids(t,
               "Translate English to French:\n\n        sea otter => loutre de mer\n        "
               "peppermint => menthe poivr\xc3\xa9"
               "e\n        plush girafe => girafe "
               "peluche\n        cheese =>",
               e4, 50);
    /* " ab" (633, score -374) then "cd" (2252): the pieces say so */
    static const int32_t e5[] = {1, 633, 2252};
    expect_ids(t, "abcd", e5, 3);
    const char *p;
    size_t pl;
    CHECK_EQ_INT(kvl_tokenizer_get(t, 633, &p, &pl, NULL, NULL), KVL_OK);
    CHECK(pl == 3 && memcmp(p, " ab", 3) == 0);
    CHECK_EQ_INT(kvl_tokenizer_get(t, 2252, &p, &pl, NULL, NULL), KVL_OK);
    CHECK(pl == 2 && memcmp(p, "cd", 2) == 0);

    /* decode: BOS drops the dummy space; control tokens and bad ids are empty */
    p = kvl_tokenizer_piece(t, 1, 306, &pl);
    CHECK(pl == 1 && p[0] == 'I');
    p = kvl_tokenizer_piece(t, 306, 4658, &pl);
    CHECK(pl == 8 && memcmp(p, " believe", 8) == 0);
    p = kvl_tokenizer_piece(t, 5, 13, &pl);
    CHECK(pl == 1 && p[0] == '\n');
    kvl_tokenizer_piece(t, 5, 1, &pl);
    CHECK_EQ_INT(pl, 0);
    kvl_tokenizer_piece(t, 5, 2, &pl);
    CHECK_EQ_INT(pl, 0);
    kvl_tokenizer_piece(t, 5, 0, &pl);
    CHECK_EQ_INT(pl, 0);
    kvl_tokenizer_piece(t, 5, 32000, &pl);
    CHECK_EQ_INT(pl, 0);
    kvl_tokenizer_piece(t, 5, -1, &pl);
    CHECK_EQ_INT(pl, 0);
    int32_t type = 0;
    CHECK_EQ_INT(kvl_tokenizer_get(t, 0, NULL, NULL, NULL, &type), KVL_OK);
    CHECK_EQ_INT(type, KVL_TOK_UNKNOWN);
    CHECK_EQ_INT(kvl_tokenizer_get(t, 1, NULL, NULL, NULL, &type), KVL_OK);
    CHECK_EQ_INT(type, KVL_TOK_CONTROL);
    CHECK_EQ_INT(kvl_tokenizer_get(t, 13, NULL, NULL, NULL, &type), KVL_OK);
    CHECK_EQ_INT(type, KVL_TOK_BYTE);
    CHECK_EQ_INT(kvl_tokenizer_get(t, 32000, NULL, NULL, NULL, &type), KVL_E_INVALID);

    /* a control piece in the text stays text */
    CHECK(round_trip(t, "<s>\n</s>\n<unk><0x0A>", 20));
    random_round_trips(t, "tokenizer.bin");

    /* a long text: exact round trip (and it must be quick; not timed here) */
    size_t n_alice = 0;
    char *alice = kvt_read_file(kvt_shared("models/alice29.txt"), &n_alice);
    CHECK(alice != NULL);
    if (alice) {
        CHECK(round_trip(t, alice, n_alice));
        free(alice);
    }
    kvl_tokenizer_free(t);
}

/* tok512 against the golden prompts; returns the tokenizer (or NULL). */
static kvl_tokenizer *test_tok512(void) {
    kvl_tokenizer *t = NULL;
    kvl_error err = {0};
    kvl_status st = kvl_tokenizer_load_llama2c(kvt_shared("models/tok512.bin"), 512, &t, &err);
    CHECK_EQ_INT(st, KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    size_t n_tsv = 0;
    char *tsv = kvt_read_file(kvt_shared("golden/stories260K_greedy.tsv"), &n_tsv);
    CHECK(tsv != NULL);
    int lines = 0;
    for (char *line = tsv, *next; tsv && line < tsv + n_tsv && *line; line = next) {
        char *nl = memchr(line, '\n', (size_t)(tsv + n_tsv - line));
        next = nl ? nl + 1 : tsv + n_tsv;
        if (nl)
            *nl = '\0';
        char *tab1 = strchr(line, '\t');
        char *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        CHECK(tab2 != NULL);
        if (!tab2)
            continue;
        *tab1 = '\0';
        int32_t golden[1024];
        size_t n_golden = 0;
        for (char *q = tab2 + 1; *q && n_golden < 1024;) {
            char *end;
            long v = strtol(q, &end, 10);
            if (end == q)
                break;
            golden[n_golden++] = (int32_t)v;
            q = end;
        }
        size_t n;
        int32_t *ids = enc(t, line, strlen(line), true, &n);
        CHECK(n >= 2 && n <= n_golden);
        CHECK(n <= n_golden && ids_equal(ids, n, golden, n));
        /* and the whole golden sequence decodes to text starting with the prompt */
        size_t dl;
        char *d = kvt_decode(t, -1, golden, n_golden, &dl);
        CHECK(dl > strlen(line) && memcmp(d, line, strlen(line)) == 0);
        if (lines == 0)
            CHECK(strstr(d, "Once upon a time, there was a little girl named Lily.") == d);
        free(d);
        free(ids);
        lines++;
    }
    CHECK_EQ_INT(lines, 3);
    free(tsv);

    random_round_trips(t, "tok512.bin");
    size_t n_ts = 0;
    char *ts = kvt_read_file(kvt_shared("models/TinyStories-valid-reduced.txt"), &n_ts);
    CHECK(ts != NULL);
    if (ts) {
        CHECK(round_trip(t, ts, n_ts));
        free(ts);
    }
    return t;
}

static void test_encode_args(const kvl_tokenizer *t) {
    kvl_error err = {0};
    int32_t out[8];
    size_t n = 0;
    for (int i = 0; i < 8; i++)
        out[i] = -7;
    /* "Once upon a time" is BOS + 4 tokens with tok512 */
    const char *s = "Once upon a time";
    CHECK_EQ_INT(kvl_tokenizer_encode(t, s, strlen(s), true, out, 8, &n, &err), KVL_OK);
    size_t need = n;
    CHECK(need >= 2 && need < 8);
    for (int i = 0; i < 8; i++)
        out[i] = -7;
    CHECK_EQ_INT(kvl_tokenizer_encode(t, s, strlen(s), true, out, need - 1, &n, &err), KVL_E_LIMIT);
    CHECK_EQ_INT(n, need);
    CHECK_EQ_INT(out[0], 1);
    CHECK_EQ_INT(out[need - 1], -7);
    CHECK_CONTAINS(err.msg, "cap");
    CHECK_EQ_INT(kvl_tokenizer_encode(t, s, strlen(s), true, NULL, 0, &n, &err), KVL_E_LIMIT);
    CHECK_EQ_INT(n, need);
    CHECK_EQ_INT(kvl_tokenizer_encode(t, "", 0, false, NULL, 0, &n, &err), KVL_OK);
    CHECK_EQ_INT(n, 0);
    CHECK_EQ_INT(kvl_tokenizer_encode(t, NULL, 0, true, out, 8, &n, &err), KVL_OK);
    CHECK_EQ_INT(n, 1);
    CHECK_EQ_INT(kvl_tokenizer_encode(t, NULL, 3, true, out, 8, &n, &err), KVL_E_INVALID);
    CHECK_EQ_INT(kvl_tokenizer_encode(t, s, 3, true, out, 8, NULL, &err), KVL_E_INVALID);
    /* NUL bytes are text, not terminators: len + 3 ids suffice for any bytes */
    char z[5] = {'a', 0, 'b', 0, (char)0xFF};
    CHECK_EQ_INT(kvl_tokenizer_encode(t, z, 5, true, out, 8, &n, &err), KVL_OK);
    CHECK(n <= 8);
    CHECK(round_trip(t, z, 5));
}

/* --- a tiny hand-made llama2.c vocabulary --------------------------------- */

typedef struct image {
    uint8_t d[8192];
    size_t n;
} image;

static void put_i32(image *b, int32_t v) {
    memcpy(b->d + b->n, &v, 4);
    b->n += 4;
}

static void put_rec(image *b, float score, const char *piece) {
    memcpy(b->d + b->n, &score, 4);
    b->n += 4;
    put_i32(b, (int32_t)strlen(piece));
    memcpy(b->d + b->n, piece, strlen(piece));
    b->n += strlen(piece);
}

/* ids: 0..2 specials, 3..258 bytes, then the pieces below */
enum {
    T_SP = 259,
    T_A,
    T_B,
    T_C,
    T_AB,
    T_BC,
    T_SPA,
    T_ABC,
    T_DUP,
    T_LOW,
    T_E,
    T_NL,
    T_X,
    T_Y,
    T_Z,
    T_XY,
    T_YZ,
    T_END
};
static void make_vocab(image *b) {
    b->n = 0;
    put_i32(b, 8);
    put_rec(b, 0, "<unk>");
    put_rec(b, 0, "\n<s>\n");
    put_rec(b, 0, "\n</s>\n");
    for (int i = 0; i < 256; i++) {
        char p[8];
        snprintf(p, sizeof p, "<0x%02X>", i);
        put_rec(b, 0, p);
    }
    put_rec(b, -100, " ");
    put_rec(b, -100, "a");
    put_rec(b, -100, "b");
    put_rec(b, -100, "c");
    put_rec(b, -5, "ab");
    put_rec(b, -6, "bc");
    put_rec(b, -50, " a");
    put_rec(b, -1, "abc");
    put_rec(b, 10, "ab");         /* a duplicate: the first id (T_AB) wins */
    put_rec(b, -2e10f, "cc");     /* below llama2.c's -1e10 floor: never merged */
    put_rec(b, -100, "\xc3\xa9"); /* é */
    put_rec(b, -1, "\n<");        /* would start "\n<s>\n" */
    put_rec(b, -100, "x");
    put_rec(b, -100, "y");
    put_rec(b, -100, "z");
    put_rec(b, -7, "xy");
    put_rec(b, -7, "yz"); /* ties with "xy": the leftmost pair wins */
}

static void test_small_vocab(void) {
    image b;
    make_vocab(&b);
    const int32_t nv = T_END;
    kvl_tokenizer *t = NULL;
    kvl_error err = {0};
    CHECK_EQ_INT(kvl_tokenizer_from_llama2c(b.d, b.n, nv, &t, &err), KVL_OK);
    if (!t)
        return;
    /* " abc": " ","a","b","c"; "ab" (-5) beats "bc" (-6) and " a" (-50);
     * then "abc" (-1) */
    static const int32_t w1[] = {1, T_SP, T_ABC};
    expect_ids(t, "abc", w1, 3);
    /* " bca": "bc" merges; nothing else */
    static const int32_t w2[] = {1, T_SP, T_BC, T_A};
    expect_ids(t, "bca", w2, 4);
    /* "cc" is in the vocabulary but under the floor */
    static const int32_t w3[] = {1, T_SP, T_C, T_C};
    expect_ids(t, "cc", w3, 4);
    /* é is a piece; ü (C3 BC) is not: two byte tokens */
    static const int32_t w4[] = {1, T_SP, T_E, 3 + 0xC3, 3 + 0xBC};
    expect_ids(t, "\xc3\xa9\xc3\xbc", w4, 5);
    /* invalid UTF-8: each byte alone, even where a lead byte is followed by
     * continuation bytes of a malformed character (overlong, surrogate) */
    static const int32_t w5[] = {1, T_SP, 3 + 0xC0, 3 + 0xAF, 3 + 0xED, 3 + 0xA0, 3 + 0x80, T_A};
    expect_ids(t,
               "\xc0\xaf\xed\xa0\x80"
               "a",
               w5, 8);
    /* "\n<s>\n" never becomes the control token */
    size_t n;
    int32_t *ids = enc(t, "\n<s>\n", 5, false, &n);
    for (size_t i = 0; i < n; i++)
        CHECK(ids[i] != 1);
    free(ids);
    CHECK(round_trip(t, "\n<s>\n", 5));
    /* the first of two equal pieces keeps the lookup */
    const char *p;
    size_t pl;
    float score;
    CHECK_EQ_INT(kvl_tokenizer_get(t, T_DUP, &p, &pl, &score, NULL), KVL_OK);
    CHECK(pl == 2 && memcmp(p, "ab", 2) == 0 && score == 10.0f);
    static const int32_t w6[] = {1, T_SP, T_AB, T_SP};
    expect_ids(t, "ab ", w6, 4);
    /* a tie: "xy" and "yz" both -7, the leftmost merges first */
    static const int32_t w7[] = {1, T_SP, T_XY, T_Z};
    expect_ids(t, "xyz", w7, 4);
    static const int32_t w8[] = {1, T_SP, T_XY, T_XY, T_Z};
    expect_ids(t, "xyxyz", w8, 5);
    /* " a" only when "ab" cannot take the a */
    static const int32_t w9[] = {1, T_SPA, T_C};
    expect_ids(t, "ac", w9, 3);
    random_round_trips(t, "small vocab");
    kvl_tokenizer_free(t);
}

static void expect_l2c_error(const uint8_t *d, size_t n, int32_t nv, kvl_status want,
                             const char *needle) {
    kvl_tokenizer *t = SENTINEL;
    kvl_error err = {0};
    kvl_status st = kvl_tokenizer_from_llama2c(d, n, nv, &t, &err);
    CHECK_EQ_INT(st, want);
    CHECK(t == SENTINEL);
    if (needle)
        CHECK_CONTAINS(err.msg, needle);
    if (t != SENTINEL)
        kvl_tokenizer_free(t);
}

static void test_malformed_llama2c(void) {
    image b;
    make_vocab(&b);
    const int32_t nv = T_END;
    /* every truncation is an error; the full file loads */
    int bad = 0;
    for (size_t len = 0; len < b.n; len++) {
        kvl_tokenizer *t = SENTINEL;
        kvl_error err = {0};
        kvl_status st = kvl_tokenizer_from_llama2c(b.d, len, nv, &t, &err);
        if (st != KVL_E_FORMAT || t != SENTINEL || !strstr(err.msg, "llama2.c tokenizer"))
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    expect_l2c_error(b.d, 3, nv, KVL_E_FORMAT, "max_token_length");
    expect_l2c_error(b.d, b.n - 1, nv, KVL_E_FORMAT, "record 275: len 2 > 1 bytes left");
    expect_l2c_error(b.d, b.n, nv + 1, KVL_E_FORMAT, "record 276 of vocab_size 277");
    expect_l2c_error(b.d, b.n, 2, KVL_E_FORMAT, "vocab_size 2 < 3");
    expect_l2c_error(b.d, b.n, 0, KVL_E_FORMAT, "vocab_size 0");
    expect_l2c_error(b.d, b.n, -5, KVL_E_FORMAT, "vocab_size -5");
    expect_l2c_error(b.d, b.n, 1 << 30, KVL_E_LIMIT, "vocab_size 1073741824 >");
    /* trailing bytes are fine */
    kvl_tokenizer *t = NULL;
    CHECK_EQ_INT(kvl_tokenizer_from_llama2c(b.d, b.n, nv - 2, &t, NULL), KVL_OK);
    kvl_tokenizer_free(t);
    /* record 3's length field: negative, huge */
    size_t off = 4;
    for (int i = 0; i < 3; i++) { /* skip <unk>, <s>, </s> */
        int32_t l;
        memcpy(&l, b.d + off + 4, 4);
        off += 8 + (size_t)l;
    }
    int32_t saved;
    memcpy(&saved, b.d + off + 4, 4);
    int32_t v = -1;
    memcpy(b.d + off + 4, &v, 4);
    expect_l2c_error(b.d, b.n, nv, KVL_E_FORMAT, "record 3: len -1 < 0");
    v = INT32_MAX;
    memcpy(b.d + off + 4, &v, 4);
    expect_l2c_error(b.d, b.n, nv, KVL_E_FORMAT, "record 3: len 2147483647 >");
    v = INT32_MIN;
    memcpy(b.d + off + 4, &v, 4);
    expect_l2c_error(b.d, b.n, nv, KVL_E_FORMAT, "len -2147483648 < 0");
    memcpy(b.d + off + 4, &saved, 4);
    /* files */
    kvl_error err = {0};
    t = SENTINEL;
    CHECK_EQ_INT(kvl_tokenizer_load_llama2c(kvt_tmp("no/such/tokenizer.bin"), 512, &t, &err),
                 KVL_E_IO);
    CHECK(t == SENTINEL);
    t = SENTINEL;
    const char *path = kvt_tmp("test_tokenizer_trunc.bin");
    CHECK(kvt_write_file(path, b.d, 100));
    CHECK_EQ_INT(kvl_tokenizer_load_llama2c(path, nv, &t, &err), KVL_E_FORMAT);
    CHECK(t == SENTINEL);
    CHECK_CONTAINS(err.msg, "test_tokenizer_trunc.bin");
    CHECK_CONTAINS(err.msg, "record 7 of vocab_size 276");
    /* the real file with a vocab_size larger than its records */
    CHECK_EQ_INT(kvl_tokenizer_load_llama2c(kvt_shared("models/tok512.bin"), 513, &t, &err),
                 KVL_E_FORMAT);
    CHECK(t == SENTINEL);
    CHECK_CONTAINS(err.msg, "record 512 of vocab_size 513");
}

/* --- GGUF tokenizer sections built by hand --------------------------------- */

#define G_N 8
typedef struct fake_gguf {
    kvl_gguf g;
    kvl_gguf_kv kv[8];
    kvl_str strs[G_N];
    float scores[G_N];
    int32_t types[G_N];
} fake_gguf;

/* <unk> <s> </s> <0x41> ▁ a ▁a ▁b ; keys in order: model, tokens, scores,
 * token_type, bos, eos, unk */
static void make_gguf(fake_gguf *f) {
    memset(f, 0, sizeof *f);
    static const char *pieces[G_N] = {"<unk>",
                                      "<s>",
                                      "</s>",
                                      "<0x41>",
                                      "\xe2\x96\x81",
                                      "a",
                                      "\xe2\x96\x81"
                                      "a",
                                      "\xe2\x96\x81"
                                      "b"};
    static const int32_t types[G_N] = {2, 3, 3, 6, 1, 1, 1, 1};
    for (int i = 0; i < G_N; i++) {
        f->strs[i] = kvt_str(pieces[i]);
        f->scores[i] = -(float)i;
        f->types[i] = types[i];
    }
    kvl_gguf_kv *kv = f->kv;
    kvt_kv_str(&kv[0], "tokenizer.ggml.model", "llama");
    kvt_kv_arr(&kv[1], "tokenizer.ggml.tokens", KVL_GGUF_STRING, G_N, f->strs);
    kvt_kv_arr(&kv[2], "tokenizer.ggml.scores", KVL_GGUF_FLOAT32, G_N, f->scores);
    kvt_kv_arr(&kv[3], "tokenizer.ggml.token_type", KVL_GGUF_INT32, G_N, f->types);
    kvt_kv_u32(&kv[4], "tokenizer.ggml.bos_token_id", 1);
    kvt_kv_u32(&kv[5], "tokenizer.ggml.eos_token_id", 2);
    kvt_kv_u32(&kv[6], "tokenizer.ggml.unknown_token_id", 0);
    f->g.version = 3;
    f->g.n_kv = 7;
    f->g.kv = f->kv;
}

/* Loads (a fault llama.cpp tolerates), with note in kvl_tokenizer_note ("":
 * none) and these BOS and EOS ids. */
static void expect_tolerated(const fake_gguf *f, const char *note, int32_t bos, int32_t eos) {
    kvl_tokenizer *t = NULL;
    kvl_error err = {0};
    CHECK_EQ_INT(kvl_tokenizer_from_gguf(&f->g, &t, &err), KVL_OK);
    if (!t)
        return;
    CHECK_CONTAINS(kvl_tokenizer_note(t), note);
    if (!note[0])
        CHECK_EQ_INT(strlen(kvl_tokenizer_note(t)), 0);
    CHECK_EQ_INT(kvl_tokenizer_bos(t), bos);
    CHECK_EQ_INT(kvl_tokenizer_eos(t), eos);
    kvl_tokenizer_free(t);
}

static void expect_gguf_error(const fake_gguf *f, kvl_status want, const char *n1, const char *n2) {
    kvl_tokenizer *t = SENTINEL;
    kvl_error err = {0};
    CHECK_EQ_INT(kvl_tokenizer_from_gguf(&f->g, &t, &err), want);
    CHECK(t == SENTINEL);
    if (n1)
        CHECK_CONTAINS(err.msg, n1);
    if (n2)
        CHECK_CONTAINS(err.msg, n2);
    if (t != SENTINEL)
        kvl_tokenizer_free(t);
}

/* tokenizer.ggml.add_bos_token / add_eos_token / add_space_prefix (as
 * llama.cpp reads them for SentencePiece) and the end-of-generation set */
static void test_gguf_flags(void) {
    fake_gguf f;
    kvl_tokenizer *t = NULL;
    kvl_error err = {0};
    int32_t ids[8];
    size_t n = 0;
    static const struct {
        const char *key;
        bool v;
        int32_t want[4];
        size_t n_want;
    } cases[] = {
        {"tokenizer.ggml.add_bos_token", false, {6}, 1},       /* " a" */
        {"tokenizer.ggml.add_eos_token", true, {1, 6, 2}, 3},  /* <s> " a" </s> */
        {"tokenizer.ggml.add_space_prefix", false, {1, 5}, 2}, /* <s> "a" */
        {"tokenizer.ggml.add_space_prefix", true, {1, 6}, 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        make_gguf(&f);
        f.kv[7].key = kvt_str(cases[c].key);
        f.kv[7].type = KVL_GGUF_BOOL;
        f.kv[7].v.u64 = cases[c].v;
        f.g.n_kv = 8;
        t = NULL;
        CHECK_EQ_INT(kvl_tokenizer_from_gguf(&f.g, &t, &err), KVL_OK);
        if (!t)
            continue;
        CHECK_EQ_INT(kvl_tokenizer_tokenize(t, "a", 1, KVL_TOKENIZE_ADD_SPECIAL, ids, 8, &n, &err),
                     KVL_OK);
        CHECK(n == cases[c].n_want && memcmp(ids, cases[c].want, n * sizeof *ids) == 0);
        /* without the dummy prefix, decoding after BOS keeps a leading space */
        size_t pl;
        const char *p = kvl_tokenizer_piece(t, 1, 6, &pl);
        CHECK(pl == (cases[c].v || c != 2 ? 1u : 2u) && p[pl - 1] == 'a');
        kvl_tokenizer_free(t);
    }
    make_gguf(&f);
    f.kv[7].key = kvt_str("tokenizer.ggml.add_bos_token");
    f.kv[7].type = KVL_GGUF_UINT8;
    f.g.n_kv = 8;
    expect_gguf_error(&f, KVL_E_FORMAT, "tokenizer.ggml.add_bos_token", "BOOL");
    /* special tokens in the text: user-defined always, control with
     * PARSE_SPECIAL; the dummy prefix goes before the text and again after
     * each special token (llama.cpp) */
    make_gguf(&f);
    f.strs[7] = kvt_str("<u>");
    f.types[7] = KVL_TOK_USER_DEFINED;
    t = NULL;
    CHECK_EQ_INT(kvl_tokenizer_from_gguf(&f.g, &t, &err), KVL_OK);
    if (t) {
        static const int32_t w1[] = {6, 7, 6};
        CHECK_EQ_INT(kvl_tokenizer_tokenize(t, "a<u>a", 5, 0, ids, 8, &n, &err), KVL_OK);
        CHECK(n == 3 && memcmp(ids, w1, sizeof w1) == 0);
        static const int32_t w2[] = {1, 6, 2, 6, 7};
        CHECK_EQ_INT(kvl_tokenizer_tokenize(t, "a</s>a<u>", 9,
                                            KVL_TOKENIZE_PARSE_SPECIAL | KVL_TOKENIZE_ADD_SPECIAL,
                                            ids, 8, &n, &err),
                     KVL_OK);
        CHECK(n == 5 && memcmp(ids, w2, sizeof w2) == 0);
        /* without PARSE_SPECIAL "</s>" is text: no EOS id */
        CHECK_EQ_INT(kvl_tokenizer_tokenize(t, "a</s>a", 6, 0, ids, 8, &n, &err), KVL_OK);
        for (size_t i = 0; i < n; i++)
            CHECK(ids[i] != 2);
        /* cap too small: the count, the first cap ids */
        int32_t two[2];
        CHECK_EQ_INT(kvl_tokenizer_tokenize(t, "a<u>a", 5, 0, two, 2, &n, &err), KVL_E_LIMIT);
        CHECK(n == 3 && two[0] == 6 && two[1] == 7);
        kvl_tokenizer_free(t);
    }
    /* end of generation: EOS, and control tokens named like <|im_end|> */
    make_gguf(&f);
    f.strs[7] = kvt_str("<|im_end|>");
    f.types[7] = KVL_TOK_CONTROL;
    t = NULL;
    CHECK_EQ_INT(kvl_tokenizer_from_gguf(&f.g, &t, &err), KVL_OK);
    if (t) {
        CHECK(kvl_tokenizer_is_eog(t, 2));
        CHECK(kvl_tokenizer_is_eog(t, 7));
        CHECK(!kvl_tokenizer_is_eog(t, 1));
        CHECK(!kvl_tokenizer_is_eog(t, 6));
        CHECK(!kvl_tokenizer_is_eog(t, 8));
        CHECK(!kvl_tokenizer_is_eog(t, -1));
        CHECK(strcmp(kvl_tokenizer_model(t), "llama") == 0);
        kvl_tokenizer_free(t);
    }
}

static void test_gguf_fake(void) {
    fake_gguf f;
    make_gguf(&f);
    kvl_tokenizer *t = NULL;
    kvl_error err = {0};
    CHECK_EQ_INT(kvl_tokenizer_from_gguf(&f.g, &t, &err), KVL_OK);
    if (t) {
        const char *p;
        size_t pl;
        int32_t type;
        CHECK_EQ_INT(kvl_tokenizer_get(t, 6, &p, &pl, NULL, &type), KVL_OK);
        CHECK(pl == 2 && memcmp(p, " a", 2) == 0 && type == KVL_TOK_NORMAL);
        CHECK_EQ_INT(kvl_tokenizer_get(t, 3, &p, &pl, NULL, &type), KVL_OK);
        CHECK(type == KVL_TOK_BYTE);
        /* " a" merges; "A" falls back to <0x41>; "b" (below) has no piece
         * and no byte token: <unk> */
        static const int32_t w[] = {1, 6, 4, 3};
        expect_ids(t, "a A", w, 4);
        p = kvl_tokenizer_piece(t, 1, 6, &pl);
        CHECK(pl == 1 && p[0] == 'a');
        p = kvl_tokenizer_piece(t, 5, 3, &pl);
        CHECK(pl == 1 && p[0] == 'A');
        kvl_tokenizer_piece(t, 5, 1, &pl);
        CHECK_EQ_INT(pl, 0);
        kvl_tokenizer_piece(t, 5, 0, &pl);
        CHECK_EQ_INT(pl, 0);
        size_t n;
        int32_t *ids = enc(t, "ab", 2, true, &n);
        CHECK(n == 3 && ids[1] == 6 && ids[2] == 0);
        free(ids);
        kvl_tokenizer_free(t);
    }
    /* ids default to 1/2/0 when absent */
    f.g.n_kv = 4;
    t = NULL;
    CHECK_EQ_INT(kvl_tokenizer_from_gguf(&f.g, &t, &err), KVL_OK);
    CHECK_EQ_INT(kvl_tokenizer_bos(t), 1);
    CHECK_EQ_INT(kvl_tokenizer_eos(t), 2);
    kvl_tokenizer_free(t);

    make_gguf(&f);
    f.kv[0].v.str = kvt_str("bert");
    expect_gguf_error(&f, KVL_E_UNSUPPORTED, "tokenizer.ggml.model", "'bert'");
    /* "gpt2" goes to the byte-level BPE (tests/test_bpe.c), which needs merges */
    make_gguf(&f);
    f.kv[0].v.str = kvt_str("gpt2");
    expect_gguf_error(&f, KVL_E_FORMAT, "tokenizer.ggml.merges", NULL);
    make_gguf(&f);
    f.kv[0].type = KVL_GGUF_UINT32;
    expect_gguf_error(&f, KVL_E_FORMAT, "tokenizer.ggml.model", "STRING");
    make_gguf(&f);
    f.kv[0].key = kvt_str("tokenizer.ggml.modelx");
    expect_gguf_error(&f, KVL_E_FORMAT, "missing key tokenizer.ggml.model", NULL);
    make_gguf(&f);
    f.kv[2].v.arr.n = G_N - 1;
    expect_gguf_error(&f, KVL_E_FORMAT, "scores has 7 entries", "tokens has 8");
    make_gguf(&f);
    f.kv[3].v.arr.n = G_N + 1;
    expect_gguf_error(&f, KVL_E_FORMAT, "token_type has 9 entries", "tokens has 8");
    make_gguf(&f);
    f.kv[1].v.arr.n = 0;
    f.kv[2].v.arr.n = 0;
    f.kv[3].v.arr.n = 0;
    expect_gguf_error(&f, KVL_E_FORMAT, "empty", NULL);
    /* special ids out of range: llama.cpp warns and keeps its default;
     * so does kvllm, saying so in kvl_tokenizer_note */
    make_gguf(&f);
    f.kv[4].v.u64 = G_N;
    expect_tolerated(&f,
                     "tokenizer.ggml.bos_token_id 8 is not in [0, n_vocab 8): the default 1 "
                     "is used",
                     1, 2);
    make_gguf(&f);
    f.kv[5].v.u64 = 1ull << 40;
    expect_tolerated(&f, "eos_token_id 1099511627776 is not in [0, n_vocab 8): the default 2", 1,
                     2);
    make_gguf(&f);
    f.kv[6].type = KVL_GGUF_INT32;
    f.kv[6].v.i64 = -1;
    expect_tolerated(&f, "unknown_token_id -1 is not in [0, n_vocab 8)", 1, 2);
    make_gguf(&f);
    expect_tolerated(&f, "", 1, 2);
    /* no scores and no token_type (llama.cpp: score 0, every token normal) */
    make_gguf(&f);
    f.kv[2] = f.kv[4];
    f.kv[3] = f.kv[5];
    f.kv[4] = f.kv[6];
    f.g.n_kv = 5;
    {
        kvl_tokenizer *plain = NULL;
        CHECK_EQ_INT(kvl_tokenizer_from_gguf(&f.g, &plain, &err), KVL_OK);
        int32_t type = -1;
        float score = -1;
        CHECK_EQ_INT(kvl_tokenizer_get(plain, 4, NULL, NULL, &score, &type), KVL_OK);
        CHECK(type == KVL_TOK_NORMAL && score == 0.0f);
        kvl_tokenizer_free(plain);
    }
    make_gguf(&f);
    f.kv[6].type = KVL_GGUF_STRING;
    expect_gguf_error(&f, KVL_E_FORMAT, "tokenizer.ggml.unknown_token_id': type STRING", NULL);
    make_gguf(&f);
    f.g.n_kv = 4;
    f.kv[1].v.arr.n = f.kv[2].v.arr.n = f.kv[3].v.arr.n = 2; /* default EOS 2 missing */
    expect_gguf_error(&f, KVL_E_FORMAT, "EOS id 2 >= n_vocab 2", NULL);
    make_gguf(&f);
    f.kv[2].v.arr.type = KVL_GGUF_FLOAT64;
    expect_gguf_error(&f, KVL_E_FORMAT, "tokenizer.ggml.scores", "FLOAT32");
    make_gguf(&f);
    f.kv[3].type = KVL_GGUF_INT32;
    expect_gguf_error(&f, KVL_E_FORMAT, "tokenizer.ggml.token_type", "INT32");
    make_gguf(&f);
    f.kv[1].v.arr.strs = NULL;
    expect_gguf_error(&f, KVL_E_FORMAT, "tokenizer.ggml.tokens", "no data");
    make_gguf(&f);
    f.types[5] = 9;
    expect_gguf_error(&f, KVL_E_FORMAT, "token_type[5] = 9", NULL);
    make_gguf(&f);
    f.types[5] = KVL_TOK_BYTE;
    expect_gguf_error(&f, KVL_E_FORMAT, "token 5 has type BYTE", NULL);
    make_gguf(&f);
    f.strs[7].len = 1ull << 40;
    expect_gguf_error(&f, KVL_E_LIMIT, "tokens[7] length 1099511627776", NULL);
}

/* stories260K.gguf carries tok512's vocabulary: same pieces, scores, types
 * and encodings. */
static void test_gguf_file(const kvl_tokenizer *t512) {
    kvl_gguf *g = NULL;
    kvl_error err = {0};
    kvl_status st = kvl_gguf_open(kvt_shared("models/stories260K.gguf"), &g, &err);
    CHECK_EQ_INT(st, KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    kvl_tokenizer *t = NULL;
    st = kvl_tokenizer_from_gguf(g, &t, &err);
    kvl_gguf_free(g); /* the tokenizer keeps no pointer into the file */
    CHECK_EQ_INT(st, KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    CHECK_EQ_INT(kvl_tokenizer_n_vocab(t), 512);
    CHECK_EQ_INT(kvl_tokenizer_bos(t), 1);
    CHECK_EQ_INT(kvl_tokenizer_eos(t), 2);
    int diff = 0;
    for (int32_t id = 0; id < 512; id++) {
        const char *p1, *p2;
        size_t l1, l2;
        float s1, s2;
        int32_t ty1, ty2;
        kvl_tokenizer_get(t, id, &p1, &l1, &s1, &ty1);
        kvl_tokenizer_get(t512, id, &p2, &l2, &s2, &ty2);
        /* ids 1 and 2 read "<s>" / "</s>" in GGUF, "\n<s>\n" / "\n</s>\n" in llama2.c */
        bool same_piece = id == 1 || id == 2 || (l1 == l2 && memcmp(p1, p2, l1) == 0);
        if (!same_piece || s1 != s2 || ty1 != ty2)
            diff++;
    }
    CHECK_EQ_INT(diff, 0);
    const char *texts[] = {"Once upon a time", "Tom and his dog", "The sun was shining",
                           "  Lily's \"big\" red ball\n\nwent \xc3\xa9 \xff\x80 away.", ""};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        size_t n1, n2;
        int32_t *a = enc(t, texts[i], strlen(texts[i]), true, &n1);
        int32_t *b = enc(t512, texts[i], strlen(texts[i]), true, &n2);
        CHECK(ids_equal(a, n1, b, n2));
        free(a);
        free(b);
    }
    char buf[64];
    int bad = 0;
    for (int iter = 0; iter < 200; iter++) {
        size_t len = rnd() % sizeof buf;
        for (size_t i = 0; i < len; i++)
            buf[i] = iter % 2 ? (char)(rnd() & 0xFF) : "ab ethTo.\n"[rnd() % 10];
        size_t n1, n2;
        int32_t *a = enc(t, buf, len, true, &n1);
        int32_t *b = enc(t512, buf, len, true, &n2);
        if (!ids_equal(a, n1, b, n2))
            bad++;
        free(a);
        free(b);
    }
    CHECK_EQ_INT(bad, 0);
    random_round_trips(t, "stories260K.gguf");
    kvl_tokenizer_free(t);
}

int main(void) {
    test_llama2_vocab();
    kvl_tokenizer *t512 = test_tok512();
    if (t512) {
        test_encode_args(t512);
        test_gguf_file(t512);
        kvl_tokenizer_free(t512);
    }
    test_small_vocab();
    test_malformed_llama2c();
    test_gguf_fake();
    test_gguf_flags();
    return kvt_finish("test_tokenizer");
}
