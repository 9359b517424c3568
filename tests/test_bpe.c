/*
 * Byte-level BPE tokenizer tests.
 *
 *  1. A hand-made byte-level vocabulary (built here, in memory): exact ids
 *     for merges, ranks and ties, each pre-tokenizer's splits (digits,
 *     contractions, spaces, newlines), special and added tokens, BOS/EOS,
 *     end-of-generation ids, decoding, lossless round trips of random bytes
 *     (invalid UTF-8 included), and malformed vocabularies refused with the
 *     key named and *out untouched.
 *  2. Conformance with llama.cpp: its vocabulary-only files
 *     ggml-vocab-{llama-bpe,qwen2,gpt-2,starcoder,refact}.gguf (and the
 *     SentencePiece ones, llama-spm and phi-3, through the same interface)
 *     and their
 *     .inp/.out cases (strings and the ids llama.cpp's test-tokenizer-0
 *     expects, add_special and parse_special off), from the llama.cpp source
 *     that the npm package node-llama-cpp ships. They are not stored here:
 *     scripts/fetch_llamacpp_vocab.sh extracts them to build/llamacpp-vocab
 *     (or set KVL_LLAMACPP_VOCAB to a folder holding them). Without them
 *     this part says so and is skipped.
 */
#include "model/gguf.h"
#include "model/tokenizer.h"

#include "testutil.h"

#include <stdlib.h>

static kvl_tokenizer *const SENTINEL = (kvl_tokenizer *)&kvt_checks;

/* --- the byte map, written independently of the tokenizer -------------------- */

/* UTF-8 of the code point spelling byte b (GPT-2's bytes_to_unicode). */
static void byte_spelling(int b, char *out) {
    int printable[256] = {0};
    for (int i = '!'; i <= '~'; i++)
        printable[i] = 1;
    for (int i = 0xA1; i <= 0xAC; i++)
        printable[i] = 1;
    for (int i = 0xAE; i <= 0xFF; i++)
        printable[i] = 1;
    unsigned cp = (unsigned)b;
    if (!printable[b]) {
        cp = 256;
        for (int i = 0; i < b; i++)
            cp += !printable[i];
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

/* Spell the bytes s in the byte-level alphabet (static buffer). */
static const char *spell(const char *s) {
    static char buf[8][256];
    static int k;
    char *o = buf[k++ & 7];
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char c[4];
        byte_spelling(*p, c);
        size_t l = strlen(c);
        memcpy(o + n, c, l);
        n += l;
    }
    o[n] = 0;
    return o;
}

/* --- a hand-made vocabulary ------------------------------------------------- */

/*
 * ids 0..255: the 256 single bytes (id = byte value)
 * 256.. : merged pieces, then specials. Merges in rank order.
 */
static const char *const k_merges[][2] = {
    {" ", "t"},   /* 0: " t" */
    {"h", "e"},   /* 1: "he" */
    {" t", "he"}, /* 2: " the" */
    {"a", "b"},   /* 3: "ab" */
    {"b", "c"},   /* 4: "bc" (loses to "ab" in "abc") */
    {"1", "2"},   /* 5: "12" */
    {"12", "3"},  /* 6: "123" */
    {"'", "s"},   /* 7: "'s" */
    {" ", " "},   /* 8: "  " */
    {"\n", "\n"}, /* 9: "\n\n" */
    {"x", "x"},   /* 10: "xx" */
};
#define N_MERGES (sizeof k_merges / sizeof k_merges[0])
#define ID_T 256 /* " t" */
#define ID_HE 257
#define ID_THE 258
#define ID_AB 259
#define ID_BC 260
#define ID_12 261
#define ID_123 262
#define ID_S 263
#define ID_SP2 264
#define ID_NL2 265
#define ID_XX 266
/* specials after the merged pieces */
#define ID_BOS 267   /* <|begin|> control */
#define ID_EOS 268   /* <|end|> control, also EOG by name */
#define ID_IMEND 269 /* <|im_end|> control, EOG by name */
#define ID_ADDED 270 /* "xx!" user-defined: always whole */
#define ID_ADDSP 271 /* "a b" user-defined with a raw space */
#define N_TOK 272

typedef struct fake {
    kvl_gguf g;
    kvl_gguf_kv kv[12];
    kvl_str tok[N_TOK];
    int32_t type[N_TOK];
    kvl_str merge[N_MERGES + 1];
    char text[N_TOK][24];
    char mtext[N_MERGES + 1][24];
} fake;

/* keys: 0 model, 1 pre, 2 tokens, 3 token_type, 4 merges, 5 bos, 6 eos,
 * 7 add_bos; n_kv = 8 */
static void make_fake(fake *f, const char *pre) {
    memset(f, 0, sizeof *f);
    for (int i = 0; i < 256; i++) {
        byte_spelling(i, f->text[i]);
        f->type[i] = KVL_TOK_NORMAL;
    }
    for (size_t m = 0; m < N_MERGES; m++) {
        snprintf(f->text[256 + m], sizeof f->text[0], "%s%s", spell(k_merges[m][0]),
                 spell(k_merges[m][1]));
        f->type[256 + m] = KVL_TOK_NORMAL;
        snprintf(f->mtext[m], sizeof f->mtext[0], "%s %s", spell(k_merges[m][0]),
                 spell(k_merges[m][1]));
        f->merge[m] = kvt_str(f->mtext[m]);
    }
    strcpy(f->text[ID_BOS], "<|begin|>");
    strcpy(f->text[ID_EOS], "<|end|>");
    strcpy(f->text[ID_IMEND], "<|im_end|>");
    strcpy(f->text[ID_ADDED], "xx!");
    strcpy(f->text[ID_ADDSP], "a b");
    f->type[ID_BOS] = f->type[ID_EOS] = f->type[ID_IMEND] = KVL_TOK_CONTROL;
    f->type[ID_ADDED] = f->type[ID_ADDSP] = KVL_TOK_USER_DEFINED;
    for (int i = 0; i < N_TOK; i++)
        f->tok[i] = kvt_str(f->text[i]);
    kvl_gguf_kv *kv = f->kv;
    kvt_kv_str(&kv[0], "tokenizer.ggml.model", "gpt2");
    kvt_kv_str(&kv[1], "tokenizer.ggml.pre", pre);
    kvt_kv_arr(&kv[2], "tokenizer.ggml.tokens", KVL_GGUF_STRING, N_TOK, f->tok);
    kvt_kv_arr(&kv[3], "tokenizer.ggml.token_type", KVL_GGUF_INT32, N_TOK, f->type);
    kvt_kv_arr(&kv[4], "tokenizer.ggml.merges", KVL_GGUF_STRING, N_MERGES, f->merge);
    kvt_kv_u32(&kv[5], "tokenizer.ggml.bos_token_id", ID_BOS);
    kvt_kv_u32(&kv[6], "tokenizer.ggml.eos_token_id", ID_EOS);
    kvt_kv_bool(&kv[7], "tokenizer.ggml.add_bos_token", false);
    f->g.version = 3;
    f->g.n_kv = 8;
    f->g.kv = f->kv;
}

static kvl_tokenizer *load_fake(const fake *f) {
    kvl_tokenizer *t = NULL;
    kvl_error err = {0};
    kvl_status st = kvl_tokenizer_from_gguf(&f->g, &t, &err);
    CHECK_EQ_INT(st, KVL_OK);
    if (st != KVL_OK)
        fprintf(stderr, "load: %s\n", err.msg);
    return t;
}

static size_t tokenize(const kvl_tokenizer *t, const char *s, size_t len, unsigned flags,
                       int32_t *ids, size_t cap) {
    size_t n = 0;
    kvl_error err = {0};
    kvl_status st = kvl_tokenizer_tokenize(t, s, len, flags, ids, cap, &n, &err);
    CHECK_EQ_INT(st, KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "tokenize: %s\n", err.msg);
        return 0;
    }
    return n;
}

/* want: ids terminated by -1 */
static void expect(const kvl_tokenizer *t, const char *s, unsigned flags, const int32_t *want) {
    int32_t ids[256];
    size_t n = tokenize(t, s, strlen(s), flags, ids, 256);
    size_t nw = 0;
    while (want[nw] >= 0)
        nw++;
    bool ok = n == nw && memcmp(ids, want, n * sizeof *ids) == 0;
    CHECK(ok);
    if (!ok) {
        fprintf(stderr, "  text \"%s\": got", s);
        for (size_t i = 0; i < n; i++)
            fprintf(stderr, " %d", (int)ids[i]);
        fprintf(stderr, ", want");
        for (size_t i = 0; i < nw; i++)
            fprintf(stderr, " %d", (int)want[i]);
        fprintf(stderr, "\n");
    }
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__, -1})

static void test_merges_and_splits(void) {
    fake f;
    make_fake(&f, "gpt-2");
    kvl_tokenizer *t = load_fake(&f);
    if (!t)
        return;
    CHECK(strcmp(kvl_tokenizer_model(t), "gpt2") == 0);
    CHECK_EQ_INT(kvl_tokenizer_n_vocab(t), N_TOK);
    CHECK_EQ_INT(kvl_tokenizer_bos(t), ID_BOS);
    CHECK_EQ_INT(kvl_tokenizer_eos(t), ID_EOS);
    /* " the" merges by rank: " t"(0), "he"(1), then " the"(2) */
    expect(t, " the", 0, IDS(ID_THE));
    /* gpt-2 splits "the the": [the][ the]; "the" has no "th" merge */
    expect(t, "the the", 0, IDS('t', ID_HE, ID_THE));
    /* lowest rank first: "abc" -> ab(3) + c, not a + bc(4) */
    expect(t, "abc", 0, IDS(ID_AB, 'c'));
    /* gpt-2 takes digit runs whole: "1234" -> 123 + 4 */
    expect(t, "1234", 0, IDS(ID_123, '4'));
    /* contraction split off: "it's" -> [it]['s] */
    expect(t, "it's", 0, IDS('i', 't', ID_S));
    /* "\s+(?!\S)": of three spaces before a word, two stand alone, the last
     * joins the word: [  ][ the] */
    expect(t, "   the", 0, IDS(ID_SP2, ID_THE));
    /* trailing spaces stay together */
    expect(t, "a  ", 0, IDS('a', ID_SP2));
    expect(t, "\n\n", 0, IDS(ID_NL2));
    /* empty text: nothing, even with ADD_SPECIAL (add_bos_token false) */
    int32_t ids[8];
    CHECK_EQ_INT(tokenize(t, "", 0, KVL_TOKENIZE_ADD_SPECIAL, ids, 8), 0);
    /* two-byte UTF-8 'é' becomes its two byte tokens; decoding gives it back */
    expect(t, "\xc3\xa9", 0, IDS(0xC3, 0xA9));
    size_t dl;
    int32_t e2[2] = {0xC3, 0xA9};
    char *d2 = kvt_decode(t, -1, e2, 2, &dl);
    CHECK(strcmp(d2, "\xc3\xa9") == 0);
    free(d2);
    kvl_tokenizer_free(t);
}

static void test_pre_tokenizers(void) {
    fake f;
    /* smollm: every digit alone first */
    make_fake(&f, "smollm");
    kvl_tokenizer *t = load_fake(&f);
    if (t) {
        expect(t, "1234", 0, IDS('1', '2', '3', '4'));
        expect(t, "x 12", 0, IDS('x', ' ', '1', '2'));
        kvl_tokenizer_free(t);
    }
    /* qwen2: digits one by one, letters with one leading non-letter */
    make_fake(&f, "qwen2");
    t = load_fake(&f);
    if (t) {
        expect(t, "123", 0, IDS('1', '2', '3'));
        /* "'S" is a contraction case-insensitively: ['S] */
        expect(t, "it'S", 0, IDS('i', 't', '\'', 'S'));
        kvl_tokenizer_free(t);
    }
    /* llama-bpe: digits in threes, and ignore_merges: a chunk that is a
     * token is taken whole even where the merges would not build it */
    make_fake(&f, "llama-bpe");
    f.kv[7].v.u64 = true; /* add_bos_token */
    t = load_fake(&f);
    if (t) {
        expect(t, "1234", 0, IDS(ID_123, '4'));
        expect(t, "1234", KVL_TOKENIZE_ADD_SPECIAL, IDS(ID_BOS, ID_123, '4'));
        /* "\s*[\r\n]+" keeps spaces with the newline: [ \n\n] -> " " + "\n\n" */
        expect(t, "a \n\nb", 0, IDS('a', ' ', ID_NL2, 'b'));
        kvl_tokenizer_free(t);
    }
    /* default: punctuation runs split first, digits in threes */
    make_fake(&f, "default");
    t = load_fake(&f);
    if (t) {
        expect(t, "1234567", 0, IDS(ID_123, '4', '5', '6', '7'));
        kvl_tokenizer_free(t);
    }
}

static void test_specials(void) {
    fake f;
    make_fake(&f, "gpt-2");
    f.kv[7].v.u64 = true; /* add_bos_token */
    kvt_kv_bool(&f.kv[8], "tokenizer.ggml.add_eos_token", true);
    f.g.n_kv = 9;
    kvl_tokenizer *t = load_fake(&f);
    if (!t)
        return;
    /* control tokens in text are text unless PARSE_SPECIAL */
    const char *s = "ab<|end|>ab";
    int32_t ids[64];
    size_t n = tokenize(t, s, strlen(s), 0, ids, 64);
    CHECK(n > 3);
    CHECK(ids[0] == ID_AB && ids[n - 1] == ID_AB);
    for (size_t i = 0; i < n; i++)
        CHECK(ids[i] != ID_EOS);
    expect(t, s, KVL_TOKENIZE_PARSE_SPECIAL, IDS(ID_AB, ID_EOS, ID_AB));
    expect(t, s, KVL_TOKENIZE_PARSE_SPECIAL | KVL_TOKENIZE_ADD_SPECIAL,
           IDS(ID_BOS, ID_AB, ID_EOS, ID_AB, ID_EOS));
    /* user-defined tokens are kept whole, even without PARSE_SPECIAL, even
     * where the pre-tokenizer would cut them ("a b" has a space) */
    expect(t, "xxxx!", 0, IDS(ID_XX, ID_ADDED));
    expect(t, "ca bc", 0, IDS('c', ID_ADDSP, 'c'));
    /* the longest special text wins where two overlap */
    expect(t, "<|im_end|>", KVL_TOKENIZE_PARSE_SPECIAL, IDS(ID_IMEND));
    /* end of generation: EOS and <|im_end|> by name */
    CHECK(kvl_tokenizer_is_eog(t, ID_EOS));
    CHECK(kvl_tokenizer_is_eog(t, ID_IMEND));
    CHECK(!kvl_tokenizer_is_eog(t, ID_BOS));
    CHECK(!kvl_tokenizer_is_eog(t, ID_AB));
    CHECK(!kvl_tokenizer_is_eog(t, -1));
    CHECK(!kvl_tokenizer_is_eog(t, N_TOK));
    /* decoding: control tokens give nothing, user-defined their text */
    int32_t d[] = {ID_BOS, ID_THE, ID_ADDSP, ID_IMEND, ID_EOS, 0x0A, N_TOK, -5};
    size_t dl;
    char *d8 = kvt_decode(t, -1, d, 8, &dl);
    CHECK(strcmp(d8, " thea b\n") == 0);
    free(d8);
    /* the raw entry is the piece as stored */
    const char *p;
    size_t pl;
    int32_t type;
    CHECK_EQ_INT(kvl_tokenizer_get(t, ID_T, &p, &pl, NULL, &type), KVL_OK);
    CHECK(pl == strlen(spell(" t")) && memcmp(p, spell(" t"), pl) == 0);
    CHECK_EQ_INT(type, KVL_TOK_NORMAL);
    CHECK_EQ_INT(kvl_tokenizer_get(t, N_TOK, &p, &pl, NULL, &type), KVL_E_INVALID);
    /* cap too small: KVL_E_LIMIT, the count needed, the first cap ids */
    size_t need = 0;
    kvl_error err = {0};
    int32_t small[2] = {-7, -7};
    CHECK_EQ_INT(kvl_tokenizer_tokenize(t, "the the", 7, 0, small, 2, &need, &err), KVL_E_LIMIT);
    CHECK_EQ_INT(need, 3);
    CHECK(small[0] == 't' && small[1] == ID_HE);
    CHECK_EQ_INT(kvl_tokenizer_tokenize(t, NULL, 3, 0, small, 2, &need, &err), KVL_E_INVALID);
    kvl_tokenizer_free(t);
}

static uint64_t rng = 0x243F6A8885A308D3ull;
static uint32_t rnd(void) { return (uint32_t)(kvt_xorshift64(&rng) >> 11); }

/* decode(encode(s)) == s for random bytes, for every pre-tokenizer */
static void test_round_trips(void) {
    static const char *pres[] = {"gpt-2", "llama-bpe", "qwen2", "smollm", "default"};
    static const char alphabet[] = "ab c1 23\n\t 'sxx!<|end|>\xc3\xa9\xe4\xb8\xad\xf0\x9f\xa6\x99";
    for (size_t p = 0; p < sizeof pres / sizeof pres[0]; p++) {
        fake f;
        make_fake(&f, pres[p]);
        kvl_tokenizer *t = load_fake(&f);
        if (!t)
            continue;
        int bad = 0;
        for (int iter = 0; iter < 300; iter++) {
            char s[96];
            size_t len = rnd() % sizeof s;
            for (size_t i = 0; i < len; i++)
                s[i] = (iter & 1) ? (char)rnd() : alphabet[rnd() % (sizeof alphabet - 1)];
            int32_t ids[200];
            size_t n = tokenize(t, s, len, 0, ids, 200);
            size_t dl;
            char *d = kvt_decode(t, -1, ids, n, &dl);
            if (dl != len || memcmp(d, s, len) != 0)
                bad++;
            free(d);
        }
        CHECK_EQ_INT(bad, 0);
        kvl_tokenizer_free(t);
    }
}

static void expect_load_error(const fake *f, kvl_status want, const char *n1, const char *n2) {
    kvl_tokenizer *t = SENTINEL;
    kvl_error err = {0};
    kvl_status st = kvl_tokenizer_from_gguf(&f->g, &t, &err);
    CHECK_EQ_INT(st, want);
    CHECK(t == SENTINEL);
    if (n1)
        CHECK_CONTAINS(err.msg, n1);
    if (n2)
        CHECK_CONTAINS(err.msg, n2);
    if (st == KVL_OK && t != SENTINEL)
        kvl_tokenizer_free(t);
}

static void test_malformed(void) {
    fake f;
    make_fake(&f, "no-such-pre");
    expect_load_error(&f, KVL_E_UNSUPPORTED, "tokenizer.ggml.pre", "'no-such-pre'");
    make_fake(&f, "gpt-2");
    f.kv[4].key = kvt_str("tokenizer.ggml.merges_x");
    expect_load_error(&f, KVL_E_FORMAT, "tokenizer.ggml.merges", NULL);
    make_fake(&f, "gpt-2");
    f.merge[3] = kvt_str("nospace");
    expect_load_error(&f, KVL_E_FORMAT, "tokenizer.ggml.merges[3]", "no space");
    make_fake(&f, "gpt-2");
    f.kv[4].v.arr.type = KVL_GGUF_INT32;
    expect_load_error(&f, KVL_E_FORMAT, "tokenizer.ggml.merges", NULL);
    make_fake(&f, "gpt-2");
    f.type[7] = 9;
    expect_load_error(&f, KVL_E_FORMAT, "tokenizer.ggml.token_type[7]", "9");
    make_fake(&f, "gpt-2");
    f.kv[3].v.arr.n = 5;
    expect_load_error(&f, KVL_E_FORMAT, "tokenizer.ggml.token_type", "5");
    /* a special id out of range keeps the default (none), as llama.cpp */
    make_fake(&f, "gpt-2");
    f.kv[5].v.u64 = N_TOK;
    {
        kvl_tokenizer *t = load_fake(&f);
        CHECK(t != NULL);
        if (t) {
            CHECK_EQ_INT(kvl_tokenizer_bos(t), -1);
            CHECK_CONTAINS(kvl_tokenizer_note(t), "tokenizer.ggml.bos_token_id 272 is not in [0, "
                                                  "n_vocab 272): the default -1 is used");
            kvl_tokenizer_free(t);
        }
    }
    make_fake(&f, "gpt-2");
    f.kv[5].key = kvt_str("tokenizer.ggml.bos_token_idx");
    f.kv[7].v.u64 = true;
    expect_load_error(&f, KVL_E_FORMAT, "add_bos_token", "bos_token_id");
    make_fake(&f, "gpt-2");
    f.kv[7].type = KVL_GGUF_UINT8;
    expect_load_error(&f, KVL_E_FORMAT, "tokenizer.ggml.add_bos_token", "BOOL");
    make_fake(&f, "gpt-2");
    f.kv[1].type = KVL_GGUF_UINT32;
    expect_load_error(&f, KVL_E_FORMAT, "tokenizer.ggml.pre", NULL);
    make_fake(&f, "gpt-2");
    f.kv[2].v.arr.n = 0;
    f.kv[3].v.arr.n = 0;
    expect_load_error(&f, KVL_E_FORMAT, "tokenizer.ggml.tokens", "empty");
    make_fake(&f, "gpt-2");
    f.kv[0].v.str = kvt_str("bert");
    expect_load_error(&f, KVL_E_UNSUPPORTED, "tokenizer.ggml.model", "'bert'");
    /* tolerated as llama.cpp does: no token_type (all normal), no pre
     * ("default"), merges whose pieces are not byte-level text (dropped) */
    make_fake(&f, "gpt-2");
    f.kv[3] = f.kv[7];
    f.kv[1] = f.kv[6];
    f.g.n_kv = 6;
    f.merge[0] = kvt_str("\xe4\xb8\xad x");
    kvl_tokenizer *t = load_fake(&f);
    if (t) {
        expect(t, "he", 0, IDS(ID_HE));
        kvl_tokenizer_free(t);
    }
}

/* --- conformance with llama.cpp's vocabulary tests ---------------------------- */

static char *vocab_dir(void) {
    static char dir[4096];
    const char *env = getenv("KVL_LLAMACPP_VOCAB");
    if (env && *env) {
        snprintf(dir, sizeof dir, "%s", env);
    } else {
        const char *tmp = getenv("KVL_TMP");
        snprintf(dir, sizeof dir, "%s/../llamacpp-vocab", tmp && *tmp ? tmp : "build/tmp");
    }
    return dir;
}

/* Run one ggml-vocab-NAME.gguf with its .inp/.out; returns false when the
 * files are missing. */
static bool conform(const char *name) {
    char path[4200];
    const char *dir = vocab_dir();
    snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf.inp", dir, name);
    size_t n_inp, n_out;
    char *inp = kvt_read_file(path, &n_inp);
    snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf.out", dir, name);
    char *outs = kvt_read_file(path, &n_out);
    snprintf(path, sizeof path, "%s/ggml-vocab-%s.gguf", dir, name);
    kvl_gguf *g = NULL;
    kvl_error err = {0};
    if (!inp || !outs || kvl_gguf_open(path, &g, &err) != KVL_OK) {
        free(inp);
        free(outs);
        return false;
    }
    kvl_tokenizer *t = NULL;
    kvl_status st = kvl_tokenizer_from_gguf(g, &t, &err);
    CHECK_EQ_INT(st, KVL_OK);
    if (st != KVL_OK) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        goto out;
    }
    /* .inp: cases separated by "\n__ggml_vocab_test__\n"; .out: one line
     * of ids per case */
    bool spm = strcmp(kvl_tokenizer_model(t), "llama") == 0;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const size_t sl = sizeof sep - 1;
    inp = realloc(inp, n_inp + 1);
    outs = realloc(outs, n_out + 1);
    inp[n_inp] = 0;
    outs[n_out] = 0;
    char *ip = inp, *op = outs;
    int cases = 0, fails = 0;
    while (ip < inp + n_inp) {
        char *end = memmem(ip, (size_t)(inp + n_inp - ip), sep, sl);
        size_t len = end ? (size_t)(end - ip) : (size_t)(inp + n_inp - ip);
        char *eol = strchr(op, '\n');
        if (!eol)
            break;
        *eol = 0;
        int32_t want[1024], got[4096];
        size_t nw = 0;
        for (char *q = op; *q;) {
            char *e;
            long v = strtol(q, &e, 10);
            if (e == q)
                break;
            if (nw < 1024)
                want[nw++] = (int32_t)v;
            q = e;
        }
        size_t n = 0;
        st = kvl_tokenizer_tokenize(t, ip, len, 0, got, 4096, &n, &err);
        bool ok = st == KVL_OK && n == nw && memcmp(got, want, n * sizeof *got) == 0;
        /* and the ids decode back to the text (every case is valid UTF-8);
         * SentencePiece ("llama") keeps its dummy-prefix space without BOS */
        size_t dl, pre = spm && len > 0;
        char *d = kvt_decode(t, -1, got, n, &dl);
        ok = ok && dl == len + pre && (!pre || d[0] == ' ') && memcmp(d + pre, ip, len) == 0;
        free(d);
        cases++;
        if (!ok) {
            fails++;
            fprintf(stderr, "%s case %d \"%.*s\": got", name, cases, (int)len, ip);
            for (size_t i = 0; i < n && i < 64; i++)
                fprintf(stderr, " %d", (int)got[i]);
            fprintf(stderr, "\n  want %s\n", op);
        }
        op = eol + 1;
        if (!end)
            break;
        ip = end + sl;
    }
    CHECK(cases > 10);
    CHECK_EQ_INT(fails, 0);
    fprintf(stderr, "llama.cpp ggml-vocab-%s: %d cases, %d differ\n", name, cases, fails);
out:
    kvl_tokenizer_free(t);
    kvl_gguf_free(g);
    free(inp);
    free(outs);
    return true;
}

static void test_llamacpp_conformance(void) {
    static const char *names[] = {"llama-bpe", "qwen2",     "gpt-2", "starcoder",
                                  "refact",    "llama-spm", "phi-3"};
    int found = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        found += conform(names[i]);
    if (!found)
        fprintf(stderr,
                "SKIPPED llama.cpp conformance: no ggml-vocab-*.gguf in %s (run "
                "scripts/fetch_llamacpp_vocab.sh)\n",
                vocab_dir());
}

int main(void) {
    test_merges_and_splits();
    test_pre_tokenizers();
    test_specials();
    test_round_trips();
    test_malformed();
    test_llamacpp_conformance();
    return kvt_finish("test_bpe");
}
