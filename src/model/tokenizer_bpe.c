/*
 * tokenizer_bpe: byte-level BPE, the GPT-2 scheme that Llama 3, Qwen2/3 and
 * SmolLM files name with tokenizer.ggml.model = "gpt2".
 *
 * Encoding, in four stages (llama.cpp's order, so ids agree with it):
 *
 *   text  "Hi<|im_end|> 42 there"
 *   1 special tokens    [Hi] <|im_end|> [ 42 there]   user-defined tokens
 *                        always, control tokens only with PARSE_SPECIAL;
 *                        longest token text first, each splitting every
 *                        raw fragment at its leftmost occurrences
 *   2 pre-tokenizer     [Hi] | [ ][4][2] [ there]      the regexes of
 *                        tokenizer.ggml.pre (table k_pre), applied in turn,
 *                        each to every chunk the previous one left; the text
 *                        between matches is kept as chunks of its own
 *   3 BPE per chunk     symbols start as single bytes; repeatedly merge the
 *                        adjacent pair with the lowest merge rank (leftmost
 *                        on ties); with ignore_merges (llama-bpe) a chunk
 *                        that is a token is taken whole
 *   4 ids               each symbol's bytes -> token id
 *
 * Byte-level: the vocabulary and the merges spell bytes as printable code
 * points (GPT-2's bytes_to_unicode: '!'..'~', U+00A1..U+00AC, U+00AE..U+00FF
 * stand for themselves, the other 68 bytes for U+0100.. in order). At load
 * every piece is mapped back to the bytes it stands for, so BPE runs on the
 * raw text and decoding is a copy.
 *
 * The regexes run in PCRE2 with UTF and UCP (Unicode general categories for
 * \p{L}, \p{N}, \p{P} from the library's tables, not ours). Whitespace is
 * spelled as the class [\t-\r\x{85}\p{Z}], which is exactly Unicode's
 * White_Space property (PCRE2's \s with UCP also takes U+180E). Text that is
 * not valid UTF-8 is accepted: each run of invalid bytes is cut out before
 * the regexes (which then only see valid UTF-8, unchecked) and becomes a
 * chunk of its own, so decode(encode(s)) == s for any bytes (llama.cpp
 * turns them into U+FFFD instead).
 *
 * Invariants:
 *   - tok[i].text is the piece as stored in the file, tok[i].bytes what it
 *     decodes to (the byte map applied where the piece spells bytes); both
 *     live in one arena. The bytes -> id table that BPE's output comes from
 *     holds the normal (and byte, and untyped) tokens spelled entirely in
 *     byte-map code points that are not end-of-generation tokens, so every
 *     id BPE emits decodes to exactly its bytes: decode(encode(s)) == s
 *     whenever the vocabulary has the 256 single bytes (and no added token
 *     is an end-of-generation one). llama.cpp also looks up control and
 *     added tokens there; merges never build those in real vocabularies.
 *     A later id with the same bytes replaces an earlier one, as in
 *     llama.cpp's token_to_id.
 *   - A merge is stored as the bytes of left+right with the length of left;
 *     the first of duplicate merges keeps its rank. Merges whose pieces are
 *     not byte-map text can never apply and are dropped.
 *   - Loading is all-or-nothing.
 *
 * Must not: trust any count, id, type or string from the file; keep
 * pointers into the GGUF buffer after loading; exit or assert on input.
 * Encoding allocates (it is not part of the decode step).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/tokenizer_bpe.h"

#include "model/model.h"
#include "model/tokenizer.h"

#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>

/* Whitespace (White_Space property) for use inside a character class. */
#define WSC "\\t-\\r\\x{85}\\p{Z}"
#define WS "[" WSC "]"
#define NWS "[^" WSC "]"

#define RE_LLAMA3                                                                                  \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"                                    \
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^" WSC "\\p{L}\\p{N}]+[\\r\\n]*"                \
    "|" WS "*[\\r\\n]+|" WS "+(?!" NWS ")|" WS "+"
#define RE_QWEN2                                                                                   \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"                                    \
    "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^" WSC "\\p{L}\\p{N}]+[\\r\\n]*"                     \
    "|" WS "*[\\r\\n]+|" WS "+(?!" NWS ")|" WS "+"
#define RE_GPT2                                                                                    \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WSC "\\p{L}\\p{N}]+|" WS "+(?!" NWS ")"

#define MAX_RE 4

/* The pre-tokenizers: each tokenizer.ggml.pre name maps to the regexes that
 * llama.cpp's llama-vocab.cpp applies for it (docs/tokenizer.md). */
typedef struct pre_rule {
    const char *names[4]; /* tokenizer.ggml.pre values; NULL-terminated */
    const char *re[MAX_RE];
    bool ignore_merges; /* a chunk that is a whole token is not split */
    bool add_bos;       /* default of tokenizer.ggml.add_bos_token */
} pre_rule;

static const pre_rule k_pre[] = {
    {{"llama-bpe", "llama3", "llama-v3", NULL}, {RE_LLAMA3}, true, true},
    {{"qwen2", "deepseek-r1-qwen", "megrez", NULL}, {RE_QWEN2}, false, false},
    {{"smollm", "starcoder", "refact", NULL}, {"\\p{N}", RE_GPT2}, false, false},
    {{"gpt-2", "phi-2", NULL}, {RE_GPT2}, false, false},
    {{"default", NULL},
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"},
     false,
     false},
};
#define N_PRE (sizeof k_pre / sizeof k_pre[0])

typedef struct bpe_tok {
    size_t text_off, bytes_off; /* in arena */
    uint32_t text_len, bytes_len;
    float score;
    int32_t type; /* KVL_TOK_* (0: undefined) */
    bool eog;
} bpe_tok;

typedef struct bpe_merge {
    size_t off;        /* bytes of left+right in arena */
    uint32_t len;      /* bytes of left+right */
    uint32_t left_len; /* bytes of left */
} bpe_merge;

struct kvl_bpe {
    int32_t n_vocab;
    int32_t bos, eos; /* -1: none */
    bool add_bos, add_eos;
    const pre_rule *pre;
    const char *pre_name;
    pcre2_code *re[MAX_RE];
    int n_re;

    bpe_tok *tok; /* (n_vocab) */
    char *arena;
    int32_t *table; /* (table_mask + 1) token ids by bytes; -1 empty */
    size_t table_mask;

    bpe_merge *merge; /* (n_merge), index = rank */
    uint32_t n_merge;
    int32_t *mtable; /* (mtable_mask + 1) merge ranks; -1 empty */
    size_t mtable_mask;

    int32_t *special; /* (n_special) ids matched in text, longest text first */
    size_t n_special;
};

/* --- byte map ---------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: the code point that spells byte b. */
static uint32_t byte_cp(int b) {
    if ((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF))
        return (uint32_t)b;
    /* the others, in byte order, from U+0100 */
    uint32_t n = 0;
    for (int i = 0; i < b; i++)
        if (!((i >= 0x21 && i <= 0x7E) || (i >= 0xA1 && i <= 0xAC) || (i >= 0xAE && i <= 0xFF)))
            n++;
    return 0x100 + n;
}

#define CP_MAP_N 0x144 /* code points below this may spell a byte */

/* Map the piece p[0..n) back to bytes in dst (room for n bytes): code
 * points of the byte map become their byte, anything else is copied.
 * Returns the bytes written; *all_mapped tells whether every character
 * was in the map. */
static size_t unmap_piece(const int16_t *cp_byte, const char *p, size_t n, char *dst,
                          bool *all_mapped) {
    const uint8_t *u = (const uint8_t *)p;
    size_t o = 0;
    *all_mapped = true;
    for (size_t i = 0; i < n;) {
        uint32_t cp = 0;
        size_t cl = kvl_utf8_decode(u + i, n - i, &cp);
        if (cl > 0 && cp < CP_MAP_N && cp_byte[cp] >= 0) {
            dst[o++] = (char)cp_byte[cp];
            i += cl;
        } else {
            size_t k = cl ? cl : 1;
            memcpy(dst + o, p + i, k);
            o += k;
            i += k;
            *all_mapped = false;
        }
    }
    return o;
}

/* --- hash tables ------------------------------------------------------------- */

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static size_t table_cap(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) /* n <= KVL_MAX_VOCAB or UINT32_MAX merges: no overflow */
        cap *= 2;
    return cap;
}

/* Token whose bytes are p[0..n), or -1. */
static int32_t find_token(const kvl_bpe *b, const char *p, size_t n) {
    size_t i = (size_t)hash_bytes(p, n) & b->table_mask;
    for (;;) {
        int32_t id = b->table[i];
        if (id < 0)
            return -1;
        const bpe_tok *t = &b->tok[id];
        if (t->bytes_len == n && memcmp(b->arena + t->bytes_off, p, n) == 0)
            return id;
        i = (i + 1) & b->table_mask;
    }
}

/* Insert id; an earlier id with the same bytes is replaced. */
static void insert_token(kvl_bpe *b, int32_t id) {
    const bpe_tok *t = &b->tok[id];
    const char *p = b->arena + t->bytes_off;
    size_t i = (size_t)hash_bytes(p, t->bytes_len) & b->table_mask;
    for (;;) {
        int32_t cur = b->table[i];
        if (cur < 0 || (b->tok[cur].bytes_len == t->bytes_len &&
                        memcmp(b->arena + b->tok[cur].bytes_off, p, t->bytes_len) == 0)) {
            b->table[i] = id;
            return;
        }
        i = (i + 1) & b->table_mask;
    }
}

static uint64_t merge_hash(const char *p, size_t n, size_t left_len) {
    return hash_bytes(p, n) ^ ((uint64_t)left_len * 0x9E3779B97F4A7C15ull);
}

/* Rank of the merge of p[0..left_len) with p[left_len..n), or -1. */
static int32_t find_merge(const kvl_bpe *b, const char *p, size_t n, size_t left_len) {
    size_t i = (size_t)merge_hash(p, n, left_len) & b->mtable_mask;
    for (;;) {
        int32_t r = b->mtable[i];
        if (r < 0)
            return -1;
        const bpe_merge *m = &b->merge[r];
        if (m->len == n && m->left_len == left_len && memcmp(b->arena + m->off, p, n) == 0)
            return r;
        i = (i + 1) & b->mtable_mask;
    }
}

/* Insert rank r unless the same merge is there (the first rank wins). */
static void insert_merge(kvl_bpe *b, int32_t r) {
    const bpe_merge *m = &b->merge[r];
    const char *p = b->arena + m->off;
    size_t i = (size_t)merge_hash(p, m->len, m->left_len) & b->mtable_mask;
    for (;;) {
        int32_t cur = b->mtable[i];
        if (cur < 0) {
            b->mtable[i] = r;
            return;
        }
        const bpe_merge *c = &b->merge[cur];
        if (c->len == m->len && c->left_len == m->left_len &&
            memcmp(b->arena + c->off, p, m->len) == 0)
            return;
        i = (i + 1) & b->mtable_mask;
    }
}

/* --- loading ------------------------------------------------------------------ */

void kvl_bpe_free(kvl_bpe *b) {
    if (!b)
        return;
    for (int i = 0; i < MAX_RE; i++)
        pcre2_code_free(b->re[i]);
    free(b->tok);
    free(b->arena);
    free(b->table);
    free(b->merge);
    free(b->mtable);
    free(b->special);
    free(b);
}

static int show_len(uint64_t n) { return n > 64 ? 64 : (int)n; }

static kvl_status opt_bool(const kvl_gguf *g, const char *key, bool *v, kvl_error *err) {
    const kvl_gguf_kv *kv = kvl_gguf_find_key(g, key);
    if (!kv)
        return KVL_OK;
    if (kv->type != KVL_GGUF_BOOL)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf tokenizer: %s has type %s, want BOOL", key,
                          kvl_gguf_vtype_name(kv->type));
    *v = kv->v.u64 != 0;
    return KVL_OK;
}

/* The pre-tokenizer named by tokenizer.ggml.pre ("default" when absent). */
static kvl_status find_pre(const kvl_gguf *g, const pre_rule **rule, const char **name,
                           kvl_error *err) {
    const kvl_gguf_kv *kv = kvl_gguf_find_key(g, "tokenizer.ggml.pre");
    kvl_str s = {"default", 7};
    if (kv) {
        if (kv->type != KVL_GGUF_STRING || (!kv->v.str.ptr && kv->v.str.len))
            return kvl_errorf(err, KVL_E_FORMAT,
                              "gguf tokenizer: tokenizer.ggml.pre has type %s, want STRING",
                              kvl_gguf_vtype_name(kv->type));
        s = kv->v.str;
    }
    for (size_t r = 0; r < N_PRE; r++)
        for (const char *const *n = k_pre[r].names; *n; n++)
            if (kvl_str_eq(s, *n)) {
                *rule = &k_pre[r];
                *name = *n;
                return KVL_OK;
            }
    return kvl_errorf(err, KVL_E_UNSUPPORTED,
                      "gguf tokenizer: tokenizer.ggml.pre '%.*s' is not supported (supported: "
                      "llama-bpe, llama3, llama-v3, qwen2, deepseek-r1-qwen, megrez, smollm, "
                      "starcoder, refact, gpt-2, phi-2, default)",
                      show_len(s.len), s.ptr ? s.ptr : "");
}

static kvl_status compile_re(kvl_bpe *b, kvl_error *err) {
    for (int i = 0; i < MAX_RE && b->pre->re[i]; i++) {
        int ec;
        PCRE2_SIZE eo;
        b->re[i] = pcre2_compile((PCRE2_SPTR)b->pre->re[i], PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        if (!b->re[i]) {
            /* our own pattern: a library without Unicode support, or OOM */
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(ec, msg, sizeof msg);
            return kvl_errorf(err, KVL_E_UNSUPPORTED,
                              "gguf tokenizer: pre-tokenizer '%s' regex %d: PCRE2 error at %zu: "
                              "%s",
                              b->pre_name, i, (size_t)eo, (const char *)msg);
        }
        b->n_re = i + 1;
    }
    return KVL_OK;
}

static int cmp_special(const void *pa, const void *pb, void *ctx) {
    const kvl_bpe *b = ctx;
    int32_t x = *(const int32_t *)pa, y = *(const int32_t *)pb;
    uint32_t lx = b->tok[x].text_len, ly = b->tok[y].text_len;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Copy tokens into the arena and build the tables. */
static kvl_status load_tokens(kvl_bpe *b, const kvl_gguf_kv *toks, const kvl_gguf_kv *types,
                              const kvl_gguf_kv *scores, const kvl_gguf_kv *merges,
                              const int16_t *cp_byte, const int32_t eog_ids[3], kvl_error *err) {
    const char *what = "gguf tokenizer";
    int32_t n = b->n_vocab;
    uint64_t nm = merges->v.arr.n;
    /* arena: text + bytes of each token, bytes of each merge */
    size_t arena = 0;
    for (int32_t i = 0; i < n; i++) {
        kvl_str s = toks->v.arr.strs[i];
        if (s.len > UINT32_MAX / 2)
            return kvl_errorf(err, KVL_E_LIMIT, "%s: tokenizer.ggml.tokens[%d] length %llu > %u",
                              what, (int)i, (unsigned long long)s.len, UINT32_MAX / 2);
        if (!s.ptr && s.len)
            return kvl_errorf(err, KVL_E_FORMAT, "%s: tokenizer.ggml.tokens[%d]: no data", what,
                              (int)i);
        if (kvl_add_overflow(arena, 2 * (size_t)s.len, &arena))
            return kvl_errorf(err, KVL_E_LIMIT, "%s: piece bytes overflow size_t", what);
    }
    for (uint64_t i = 0; i < nm; i++) {
        kvl_str s = merges->v.arr.strs[i];
        if (!s.ptr && s.len)
            return kvl_errorf(err, KVL_E_FORMAT, "%s: tokenizer.ggml.merges[%llu]: no data", what,
                              (unsigned long long)i);
        if (s.len > UINT32_MAX / 2)
            return kvl_errorf(err, KVL_E_LIMIT, "%s: tokenizer.ggml.merges[%llu] length %llu > %u",
                              what, (unsigned long long)i, (unsigned long long)s.len,
                              UINT32_MAX / 2);
        if (kvl_add_overflow(arena, (size_t)s.len, &arena))
            return kvl_errorf(err, KVL_E_LIMIT, "%s: merge bytes overflow size_t", what);
    }
    size_t cap = table_cap((size_t)n), mcap = table_cap((size_t)nm);
    b->tok = calloc((size_t)n, sizeof *b->tok);
    b->arena = malloc(arena ? arena : 1);
    b->table = malloc(cap * sizeof *b->table);
    b->merge = calloc(nm ? (size_t)nm : 1, sizeof *b->merge);
    b->mtable = malloc(mcap * sizeof *b->mtable);
    b->special = malloc((size_t)n * sizeof *b->special);
    if (!b->tok || !b->arena || !b->table || !b->merge || !b->mtable || !b->special)
        return kvl_errorf(err, KVL_E_NOMEM,
                          "%s: out of memory for %d tokens and %llu merges (%zu bytes)", what,
                          (int)n, (unsigned long long)nm, arena);
    b->table_mask = cap - 1;
    b->mtable_mask = mcap - 1;
    for (size_t i = 0; i < cap; i++)
        b->table[i] = -1;
    for (size_t i = 0; i < mcap; i++)
        b->mtable[i] = -1;

    size_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        kvl_str s = toks->v.arr.strs[i];
        bpe_tok *t = &b->tok[i];
        int32_t type = KVL_TOK_NORMAL;
        if (types) {
            uint32_t u;
            memcpy(&u, types->v.arr.data + (size_t)i * 4, 4);
            memcpy(&type, &u, 4);
            if (type < 0 || type > KVL_TOK_BYTE)
                return kvl_errorf(err, KVL_E_FORMAT,
                                  "%s: tokenizer.ggml.token_type[%d] = %d not in [0, %d]", what,
                                  (int)i, (int)type, KVL_TOK_BYTE);
        }
        /* end of generation by name, made a control token whatever the
         * file says (llama.cpp's override: Qwen2's normal "</s>") */
        t->eog = kvl_tokenizer_eog_name(s.ptr, s.len);
        if (t->eog)
            type = KVL_TOK_CONTROL;
        t->type = type;
        if (scores)
            memcpy(&t->score, scores->v.arr.data + (size_t)i * 4, 4);
        t->text_off = off;
        t->text_len = (uint32_t)s.len;
        if (s.len)
            memcpy(b->arena + off, s.ptr, s.len);
        off += s.len;
        bool all_mapped;
        t->bytes_off = off;
        t->bytes_len = (uint32_t)unmap_piece(cp_byte, s.ptr, s.len, b->arena + off, &all_mapped);
        off += t->bytes_len;
        t->eog = t->eog || i == eog_ids[0] || i == eog_ids[1] || i == eog_ids[2];
        /* BPE's output: tokens that decode to the bytes they stand for (so
         * decode(encode(s)) == s), never end-of-generation ones */
        if (all_mapped && t->bytes_len > 0 && !t->eog &&
            (type == KVL_TOK_NORMAL || type == KVL_TOK_BYTE || type == 0))
            insert_token(b, i);
        if (t->text_len > 0 &&
            (type == KVL_TOK_CONTROL || type == KVL_TOK_USER_DEFINED || type == KVL_TOK_UNKNOWN))
            b->special[b->n_special++] = i;
    }
    qsort_r(b->special, b->n_special, sizeof *b->special, cmp_special, b);

    for (uint64_t i = 0; i < nm; i++) {
        kvl_str s = merges->v.arr.strs[i];
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp)
            return kvl_errorf(err, KVL_E_FORMAT,
                              "%s: tokenizer.ggml.merges[%llu] ('%.*s') has no space "
                              "separating two pieces",
                              what, (unsigned long long)i, show_len(s.len), s.ptr ? s.ptr : "");
        size_t ll = (size_t)(sp - s.ptr), rl = s.len - ll - 1;
        bool m1, m2;
        bpe_merge *m = &b->merge[b->n_merge];
        m->off = off;
        m->left_len = (uint32_t)unmap_piece(cp_byte, s.ptr, ll, b->arena + off, &m1);
        m->len = m->left_len +
                 (uint32_t)unmap_piece(cp_byte, sp + 1, rl, b->arena + off + m->left_len, &m2);
        if (!m1 || !m2 || rl == 0)
            continue; /* can never apply to byte-level text: dropped */
        /* ranks only order merges, so dropped ones leave no gap */
        off += m->len;
        insert_merge(b, (int32_t)b->n_merge++);
    }
    return KVL_OK;
}

kvl_status kvl_bpe_from_gguf(const kvl_gguf *g, kvl_bpe **out, char *note, size_t note_cap,
                             kvl_error *err) {
    const char *what = "gguf tokenizer";
    if (!g || !out)
        return kvl_errorf(err, KVL_E_INVALID, "%s: NULL gguf or output", what);
    const pre_rule *rule = NULL;
    const char *pre_name = NULL;
    kvl_status st = find_pre(g, &rule, &pre_name, err);
    if (st != KVL_OK)
        return st;
    const kvl_gguf_kv *toks, *merges, *types = NULL, *scores = NULL;
    if ((st = kvl_gguf_get_arr(g, "tokenizer.ggml.tokens", KVL_GGUF_STRING, &toks, err)) ||
        (st = kvl_gguf_get_arr(g, "tokenizer.ggml.merges", KVL_GGUF_STRING, &merges, err)))
        return st;
    uint64_t n = toks->v.arr.n;
    if (n == 0)
        return kvl_errorf(err, KVL_E_FORMAT, "%s: tokenizer.ggml.tokens is empty", what);
    if (n > KVL_MAX_VOCAB)
        return kvl_errorf(err, KVL_E_LIMIT, "%s: tokenizer.ggml.tokens has %llu entries > %d", what,
                          (unsigned long long)n, KVL_MAX_VOCAB);
    if (merges->v.arr.n > (uint64_t)INT32_MAX)
        return kvl_errorf(err, KVL_E_LIMIT, "%s: tokenizer.ggml.merges has %llu entries > %d", what,
                          (unsigned long long)merges->v.arr.n, INT32_MAX);
    if ((toks->v.arr.n && !toks->v.arr.strs) || (merges->v.arr.n && !merges->v.arr.strs))
        return kvl_errorf(err, KVL_E_FORMAT, "%s: string array without strings", what);
    if (kvl_gguf_find_key(g, "tokenizer.ggml.token_type")) {
        if ((st = kvl_gguf_get_arr(g, "tokenizer.ggml.token_type", KVL_GGUF_INT32, &types, err)))
            return st;
        if (types->v.arr.n != n || !types->v.arr.data)
            return kvl_errorf(err, KVL_E_FORMAT,
                              "%s: tokenizer.ggml.token_type has %llu entries but "
                              "tokenizer.ggml.tokens has %llu",
                              what, (unsigned long long)types->v.arr.n, (unsigned long long)n);
    }
    if (kvl_gguf_find_key(g, "tokenizer.ggml.scores")) {
        if ((st = kvl_gguf_get_arr(g, "tokenizer.ggml.scores", KVL_GGUF_FLOAT32, &scores, err)))
            return st;
        if (scores->v.arr.n != n || !scores->v.arr.data)
            return kvl_errorf(err, KVL_E_FORMAT,
                              "%s: tokenizer.ggml.scores has %llu entries but "
                              "tokenizer.ggml.tokens has %llu",
                              what, (unsigned long long)scores->v.arr.n, (unsigned long long)n);
    }
    int32_t nv = (int32_t)n, bos = -1, eos = -1, eot = -1, eom = -1;
    bool add_bos = rule->add_bos, add_eos = false;
    if ((st = kvl_tokenizer_opt_id(g, "tokenizer.ggml.bos_token_id", nv, &bos, note, note_cap,
                                   err)) ||
        (st = kvl_tokenizer_opt_id(g, "tokenizer.ggml.eos_token_id", nv, &eos, note, note_cap,
                                   err)) ||
        (st = kvl_tokenizer_opt_id(g, "tokenizer.ggml.eot_token_id", nv, &eot, note, note_cap,
                                   err)) ||
        (st = kvl_tokenizer_opt_id(g, "tokenizer.ggml.eom_token_id", nv, &eom, note, note_cap,
                                   err)) ||
        (st = opt_bool(g, "tokenizer.ggml.add_bos_token", &add_bos, err)) ||
        (st = opt_bool(g, "tokenizer.ggml.add_eos_token", &add_eos, err)))
        return st;
    if (add_bos && bos < 0)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "%s: tokenizer.ggml.add_bos_token is true (or implied by pre '%s') "
                          "but tokenizer.ggml.bos_token_id is missing",
                          what, pre_name);
    if (add_eos && eos < 0)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "%s: tokenizer.ggml.add_eos_token is true but "
                          "tokenizer.ggml.eos_token_id is missing",
                          what);

    const int32_t eog_ids[3] = {eos, eot, eom};
    int16_t cp_byte[CP_MAP_N];
    for (int i = 0; i < CP_MAP_N; i++)
        cp_byte[i] = -1;
    for (int i = 0; i < 256; i++)
        cp_byte[byte_cp(i)] = (int16_t)i;

    kvl_bpe *b = calloc(1, sizeof *b);
    if (!b)
        return kvl_errorf(err, KVL_E_NOMEM, "%s: out of memory", what);
    b->n_vocab = nv;
    b->bos = bos;
    b->eos = eos;
    b->add_bos = add_bos;
    b->add_eos = add_eos;
    b->pre = rule;
    b->pre_name = pre_name;
    if ((st = compile_re(b, err)) ||
        (st = load_tokens(b, toks, types, scores, merges, cp_byte, eog_ids, err))) {
        kvl_bpe_free(b);
        return st;
    }
    *out = b;
    return KVL_OK;
}

/* --- queries ------------------------------------------------------------------- */

int32_t kvl_bpe_n_vocab(const kvl_bpe *b) { return b ? b->n_vocab : 0; }

int32_t kvl_bpe_bos(const kvl_bpe *b) { return b ? b->bos : -1; }

int32_t kvl_bpe_eos(const kvl_bpe *b) { return b ? b->eos : -1; }

bool kvl_bpe_add_bos(const kvl_bpe *b) { return b && b->add_bos; }

bool kvl_bpe_add_eos(const kvl_bpe *b) { return b && b->add_eos; }

bool kvl_bpe_is_eog(const kvl_bpe *b, int32_t id) {
    return b && id >= 0 && id < b->n_vocab && b->tok[id].eog;
}

const char *kvl_bpe_pre(const kvl_bpe *b) { return b ? b->pre_name : ""; }

kvl_status kvl_bpe_get(const kvl_bpe *b, int32_t id, const char **piece, size_t *len, float *score,
                       int32_t *type) {
    if (!b || id < 0 || id >= b->n_vocab)
        return KVL_E_INVALID;
    const bpe_tok *t = &b->tok[id];
    if (piece)
        *piece = b->arena + t->text_off;
    if (len)
        *len = t->text_len;
    if (score)
        *score = t->score;
    if (type)
        *type = t->type;
    return KVL_OK;
}

const char *kvl_bpe_piece(const kvl_bpe *b, int32_t id, bool special, size_t *len) {
    const char *p = "";
    size_t l = 0;
    if (b && id >= 0 && id < b->n_vocab) {
        const bpe_tok *t = &b->tok[id];
        bool hidden = t->type == KVL_TOK_CONTROL || t->type == KVL_TOK_UNKNOWN || t->eog;
        if (t->type == KVL_TOK_NORMAL || t->type == KVL_TOK_BYTE) {
            p = b->arena + t->bytes_off;
            l = t->bytes_len;
        } else if (t->type == KVL_TOK_USER_DEFINED || (hidden && special)) {
            p = b->arena + t->text_off;
            l = t->text_len;
        }
        if (hidden && !special)
            l = 0;
    }
    if (len)
        *len = l;
    return p;
}

/* --- encoding ------------------------------------------------------------------ */

/* A piece of the text: raw text (id < 0) or a special token. */
typedef struct span {
    uint32_t off, len;
    int32_t id; /* >= 0: special token; SPAN_TEXT; SPAN_INVALID: a run of
                   bytes that are not UTF-8 (no regex sees them) */
} span;

#define SPAN_TEXT (-1)
#define SPAN_INVALID (-2)

typedef struct spans {
    span *v;
    size_t n, cap;
} spans;

static bool spans_push(spans *s, uint32_t off, uint32_t len, int32_t id) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        span *v = realloc(s->v, cap * sizeof *v);
        if (!v)
            return false;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (span){off, len, id};
    return true;
}

/* Symbols of one chunk, a linked list in text order; len 0 = merged away. */
typedef struct bsym {
    uint32_t start, len;
    uint32_t prev, next;
} bsym;

#define NO_SYM UINT32_MAX

typedef struct bcand {
    uint64_t key; /* rank << 32 | left: the smallest is the next merge */
    uint32_t right, len;
} bcand;

typedef struct benc {
    const kvl_bpe *b;
    const char *text;
    bsym *s;     /* (longest chunk) */
    bcand *heap; /* (3 * longest chunk) */
    size_t n_heap;
    int32_t *out;
    size_t cap, n; /* ids written: min(n, cap); n counts them all */
    pcre2_match_data *md;
} benc;

static void emit(benc *e, int32_t id) {
    if (e->n < e->cap)
        e->out[e->n] = id;
    e->n++;
}

static void heap_push(benc *e, bcand c) {
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (e->heap[p].key <= c.key)
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = c;
}

static bcand heap_pop(benc *e) {
    bcand top = e->heap[0], last = e->heap[--e->n_heap];
    size_t n = e->n_heap, i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && e->heap[c + 1].key < e->heap[c].key)
            c++;
        if (e->heap[c].key >= last.key)
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

static void try_pair(benc *e, uint32_t left) {
    if (left == NO_SYM)
        return;
    uint32_t right = e->s[left].next;
    if (right == NO_SYM)
        return;
    const bsym *l = &e->s[left], *r = &e->s[right];
    int32_t rank = find_merge(e->b, e->text + l->start, (size_t)l->len + r->len, l->len);
    if (rank < 0)
        return;
    heap_push(e, (bcand){(uint64_t)(uint32_t)rank << 32 | left, right, l->len + r->len});
}

/* BPE over the chunk text[off, off + len), ids to e. */
static void bpe_chunk(benc *e, uint32_t off, uint32_t len) {
    const kvl_bpe *b = e->b;
    if (b->pre->ignore_merges) {
        int32_t id = find_token(b, e->text + off, len);
        if (id >= 0) {
            emit(e, id);
            return;
        }
    }
    for (uint32_t i = 0; i < len; i++)
        e->s[i] = (bsym){off + i, 1, i ? i - 1 : NO_SYM, i + 1 < len ? i + 1 : NO_SYM};
    e->n_heap = 0;
    for (uint32_t i = 0; i + 1 < len; i++)
        try_pair(e, i);
    while (e->n_heap > 0) {
        bcand c = heap_pop(e);
        uint32_t left = (uint32_t)c.key;
        bsym *l = &e->s[left], *r = &e->s[c.right];
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->len + r->len != c.len)
            continue; /* stale */
        l->len = c.len;
        l->next = r->next;
        if (r->next != NO_SYM)
            e->s[r->next].prev = left;
        r->len = 0;
        try_pair(e, l->prev);
        try_pair(e, left);
    }
    /* symbols are relative to the chunk: s[0] is always alive */
    for (uint32_t i = 0; i != NO_SYM; i = e->s[i].next) {
        const bsym *s = &e->s[i];
        int32_t id = find_token(b, e->text + s->start, s->len);
        if (id >= 0) {
            emit(e, id);
            continue;
        }
        for (uint32_t k = 0; k < s->len; k++) { /* a merge the vocabulary lacks */
            int32_t bid = find_token(b, e->text + s->start + k, 1);
            if (bid >= 0)
                emit(e, bid);
        }
    }
}

/* Split each raw span of in by regex re into out (matches and the text
 * between them, in order). */
static kvl_status regex_split(benc *e, const pcre2_code *re, const spans *in, spans *out,
                              kvl_error *err) {
    out->n = 0;
    for (size_t k = 0; k < in->n; k++) {
        span sp = in->v[k];
        if (sp.id == SPAN_INVALID) { /* not UTF-8: never matched, kept whole */
            if (!spans_push(out, sp.off, sp.len, sp.id))
                return kvl_errorf(err, KVL_E_NOMEM, "tokenizer: out of memory splitting text");
            continue;
        }
        const PCRE2_SPTR subj = (PCRE2_SPTR)(e->text + sp.off);
        size_t pos = 0, gap = 0;
        while (pos < sp.len) {
            int rc = pcre2_match(re, subj, sp.len, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0) {
                PCRE2_UCHAR msg[128];
                pcre2_get_error_message(rc, msg, sizeof msg);
                return kvl_errorf(err, KVL_E_LIMIT,
                                  "tokenizer: pre-tokenizer '%s' on a chunk of %u bytes at "
                                  "offset %u: PCRE2: %s",
                                  e->b->pre_name, sp.len, sp.off, (const char *)msg);
            }
            const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
            size_t ms = ov[0], me = ov[1];
            if (me <= ms) { /* empty match (none of our patterns has one): step
                               over one character (the span is valid UTF-8) */
                uint32_t cp;
                size_t cl = kvl_utf8_decode(subj + ms, sp.len - ms, &cp);
                pos = ms + (cl ? cl : 1);
                continue;
            }
            if ((ms > gap && !spans_push(out, sp.off + (uint32_t)gap, (uint32_t)(ms - gap), -1)) ||
                !spans_push(out, sp.off + (uint32_t)ms, (uint32_t)(me - ms), -1))
                return kvl_errorf(err, KVL_E_NOMEM, "tokenizer: out of memory splitting text");
            pos = gap = me;
        }
        if (gap < sp.len && !spans_push(out, sp.off + (uint32_t)gap, sp.len - (uint32_t)gap, -1))
            return kvl_errorf(err, KVL_E_NOMEM, "tokenizer: out of memory splitting text");
    }
    return KVL_OK;
}

/* Split the text span sp into runs of well-formed UTF-8 (SPAN_TEXT) and
 * runs of bytes that are not (SPAN_INVALID), so that PCRE2 only ever sees
 * valid UTF-8 (and need not check it: a check per match would cost the
 * rest of the text each time). */
static bool split_invalid(const char *text, span sp, spans *out) {
    const uint8_t *u = (const uint8_t *)text;
    uint32_t i = sp.off, end = sp.off + sp.len, run = sp.off;
    int32_t kind = SPAN_TEXT;
    while (i < end) {
        uint32_t cp;
        size_t cl = kvl_utf8_decode(u + i, end - i, &cp);
        int32_t k = cl ? SPAN_TEXT : SPAN_INVALID;
        if (k != kind) {
            if (i > run && !spans_push(out, run, i - run, kind))
                return false;
            run = i;
            kind = k;
        }
        i += cl ? (uint32_t)cl : 1;
    }
    return end == run || spans_push(out, run, end - run, kind);
}

/* Stage 1: split raw spans of cur at occurrences of special token id. */
static bool split_special(const kvl_bpe *b, const char *text, int32_t id, const spans *in,
                          spans *out) {
    const bpe_tok *t = &b->tok[id];
    const char *needle = b->arena + t->text_off;
    out->n = 0;
    for (size_t k = 0; k < in->n; k++) {
        span sp = in->v[k];
        if (sp.id >= 0 || sp.len < t->text_len) {
            if (!spans_push(out, sp.off, sp.len, sp.id))
                return false;
            continue;
        }
        uint32_t pos = sp.off, end = sp.off + sp.len;
        for (;;) {
            const char *hit = memmem(text + pos, end - pos, needle, t->text_len);
            if (!hit)
                break;
            uint32_t h = (uint32_t)(hit - text);
            if ((h > pos && !spans_push(out, pos, h - pos, -1)) || !spans_push(out, h, 0, id))
                return false;
            pos = h + t->text_len;
        }
        if (pos < end && !spans_push(out, pos, end - pos, -1))
            return false;
    }
    return true;
}

kvl_status kvl_bpe_encode(const kvl_bpe *b, const char *text, size_t len, unsigned flags,
                          int32_t *out, size_t cap, size_t *n_out, kvl_error *err) {
    if (!b || (!text && len) || (!out && cap) || !n_out)
        return kvl_errorf(err, KVL_E_INVALID, "tokenizer: encode: NULL argument");
    if (len >= UINT32_MAX / 4)
        return kvl_errorf(err, KVL_E_LIMIT, "tokenizer: text of %zu bytes > %u", len,
                          UINT32_MAX / 4 - 1);
    benc e = {.b = b, .text = text, .out = out, .cap = cap};
    spans a = {0}, c = {0};
    kvl_status st = KVL_OK;
    bool add = (flags & KVL_TOKENIZE_ADD_SPECIAL) != 0;
    bool parse = (flags & KVL_TOKENIZE_PARSE_SPECIAL) != 0;
    if (add && b->add_bos)
        emit(&e, b->bos);
    if (len > 0) {
        e.s = malloc(len * sizeof *e.s);
        e.heap = malloc(3 * len * sizeof *e.heap);
        e.md = pcre2_match_data_create(1, NULL);
        if (!e.s || !e.heap || !e.md || !spans_push(&a, 0, (uint32_t)len, -1)) {
            st = kvl_errorf(err, KVL_E_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
            goto done;
        }
        for (size_t k = 0; k < b->n_special; k++) {
            int32_t id = b->special[k];
            int32_t type = b->tok[id].type;
            if (!parse && type != KVL_TOK_USER_DEFINED)
                continue;
            if (!split_special(b, text, id, &a, &c)) {
                st = kvl_errorf(err, KVL_E_NOMEM, "tokenizer: out of memory splitting text");
                goto done;
            }
            spans t = a;
            a = c;
            c = t;
        }
        spans frag = a; /* stage 2 works on one fragment at a time */
        a = (spans){0};
        for (size_t f = 0; f < frag.n && st == KVL_OK; f++) {
            if (frag.v[f].id >= 0) {
                emit(&e, frag.v[f].id);
                continue;
            }
            a.n = 0;
            if (!split_invalid(text, frag.v[f], &a)) {
                st = kvl_errorf(err, KVL_E_NOMEM, "tokenizer: out of memory splitting text");
                break;
            }
            for (int r = 0; r < b->n_re && st == KVL_OK; r++) {
                st = regex_split(&e, b->re[r], &a, &c, err);
                spans t = a;
                a = c;
                c = t;
            }
            for (size_t k = 0; k < a.n && st == KVL_OK; k++)
                bpe_chunk(&e, a.v[k].off, a.v[k].len);
        }
        free(frag.v);
    }
    if (st == KVL_OK && add && b->add_eos)
        emit(&e, b->eos);
done:
    free(a.v);
    free(c.v);
    free(e.s);
    free(e.heap);
    pcre2_match_data_free(e.md);
    if (st != KVL_OK)
        return st;
    *n_out = e.n;
    if (e.n > cap)
        return kvl_errorf(err, KVL_E_LIMIT, "tokenizer: %zu tokens do not fit in cap %zu", e.n,
                          cap);
    return KVL_OK;
}
