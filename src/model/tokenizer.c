/*
 * tokenizer: SentencePiece-style BPE with byte fallback, loaded from a
 * llama2.c tokenizer image or from a GGUF file's tokenizer.ggml.* keys.
 *
 * Encoding reproduces llama2.c's encode(): optional BOS, a dummy-prefix
 * space before non-empty text, one symbol per UTF-8 character (its vocabulary
 * token, or one byte token per byte when the character is not a piece), then
 * repeatedly merge the adjacent pair whose concatenation is a piece with the
 * highest score, the leftmost pair winning ties, and only pairs scoring above
 * -1e10 (llama2.c's starting "best score"). The merge order comes from a
 * 4-ary heap keyed on (score, position of the left symbol) with stale
 * entries skipped when popped, so a text of n bytes costs O(n log n) instead
 * of llama2.c's O(n^2) rescans.
 *
 *   padded text   ' ' T h e   c a t          (the dummy prefix, then input)
 *   symbols       [ ][T][h][e][ ][c][a][t]   one per character (or per byte)
 *   after merges  [ The][ cat]               linked list, merged-away
 *                                            symbols have len 0
 *
 * Decoding: byte tokens give their byte; control and unknown tokens, and
 * the BOS and EOS ids whatever their type, give nothing; right after BOS a
 * leading space is dropped (the dummy prefix).
 *
 * Invariants:
 *   - Every piece lives in one arena, NUL-terminated, with real spaces
 *     (GGUF's U+2581 becomes ' ' at load); ids index tok[0..n_vocab).
 *   - The lookup table holds only "text" tokens (normal, user-defined,
 *     unused), never byte, control or unknown tokens nor the BOS, EOS and
 *     UNK ids whatever their type, so encoding can only produce a byte token
 *     through byte fallback and never a control token.
 *     Byte symbols do not merge. This makes decode(encode(s)) == s for any
 *     bytes s whenever the vocabulary has all 256 byte tokens (a missing
 *     one falls back to the UNK id, which is lossy). (llama2.c
 *     looks up every piece, "<0x0A>" included; for the Llama vocabularies the
 *     results are the same.)
 *   - Characters that are not well-formed UTF-8 (Unicode Table 3-7) are
 *     never looked up: each of their bytes becomes its byte token. For valid
 *     UTF-8 this grouping equals llama2.c's lead-byte-plus-continuations one.
 *   - Loading is all-or-nothing: on any error everything is freed and *out is
 *     left untouched.
 *
 * Must not: trust any length, count, id or type from a file; read past the
 * caller's buffer; keep pointers into the caller's buffer or the GGUF
 * mapping after loading (pieces are copied).
 */
#include "model/tokenizer.h"

#include "model/model.h"
#include "model/tokenizer_bpe.h"

#include <stdlib.h>

/* llama2.c starts its search for the best pair at this score (strict >). */
#define MERGE_FLOOR (-1e10f)

typedef struct tok_entry {
    size_t off;   /* piece start in arena */
    uint32_t len; /* piece bytes (without the NUL) */
    float score;
    int32_t type; /* KVL_TOK_* */
    uint8_t byte; /* KVL_TOK_BYTE: the byte it stands for */
    bool eog;     /* ends generation (kvl_tokenizer_is_eog) */
} tok_entry;

struct kvl_tokenizer {
    kvl_bpe *bpe; /* "gpt2": everything below is unused */
    int32_t n_vocab;
    int32_t bos, eos, unk;
    bool add_bos, add_eos; /* what ADD_SPECIAL adds (tokenizer.ggml.add_*_token) */
    bool add_space_prefix; /* the dummy prefix (tokenizer.ggml.add_space_prefix) */
    tok_entry *tok;        /* (n_vocab) */
    char *arena;           /* all pieces, each followed by a NUL */
    int32_t *special;      /* (n_special) control, user-defined and unknown tokens
                             with text, longest first: cut out of the text whole */
    size_t n_special, n_user_defined;
    int32_t *table; /* (table_mask + 1) ids of text pieces; -1 = empty */
    size_t table_mask;
    int32_t byte_id[256]; /* id of the first <0xHH> token per byte; -1 = none */
    char bytes[256];      /* bytes[i] == i: what byte tokens decode to */
    char note[192];       /* what the file got wrong that was tolerated; "" if nothing */
};

/* One vocabulary entry as read from a file, before it is copied. */
typedef struct raw_tok {
    const char *ptr;
    size_t len;
    float score;
    int32_t type; /* -1: infer (llama2.c) */
} raw_tok;

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)p[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* Id of the text piece equal to p[0..n), or -1. */
static int32_t lookup(const kvl_tokenizer *t, const char *p, size_t n) {
    size_t i = (size_t)hash_bytes(p, n) & t->table_mask;
    for (;;) {
        int32_t id = t->table[i];
        if (id < 0)
            return -1;
        const tok_entry *e = &t->tok[id];
        if (e->len == n && memcmp(t->arena + e->off, p, n) == 0)
            return id;
        i = (i + 1) & t->table_mask;
    }
}

/* Insert id unless its piece is already present (the first id wins). */
static void table_insert(kvl_tokenizer *t, int32_t id) {
    const tok_entry *e = &t->tok[id];
    const char *p = t->arena + e->off;
    size_t i = (size_t)hash_bytes(p, e->len) & t->table_mask;
    for (;;) {
        int32_t cur = t->table[i];
        if (cur < 0) {
            t->table[i] = id;
            return;
        }
        const tok_entry *c = &t->tok[cur];
        if (c->len == e->len && memcmp(t->arena + c->off, p, e->len) == 0)
            return;
        i = (i + 1) & t->table_mask;
    }
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* True when p[0..n) is "<0xHH>"; *b gets the byte. */
static bool parse_byte_piece(const char *p, size_t n, uint8_t *b) {
    if (n != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>')
        return false;
    int hi = hex_digit(p[3]), lo = hex_digit(p[4]);
    if (hi < 0 || lo < 0)
        return false;
    *b = (uint8_t)(hi * 16 + lo);
    return true;
}

static bool is_text_type(int32_t type) {
    return type == 0 || type == KVL_TOK_NORMAL || type == KVL_TOK_USER_DEFINED ||
           type == KVL_TOK_UNUSED;
}

/* Copy p[0..n) to dst, turning each U+2581 (E2 96 81) into ' ' when asked;
 * returns the bytes written (<= n). */
static size_t copy_piece(char *dst, const char *p, size_t n, bool convert) {
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (convert && n - i >= 3 && (uint8_t)p[i] == 0xE2 && (uint8_t)p[i + 1] == 0x96 &&
            (uint8_t)p[i + 2] == 0x81) {
            dst[o++] = ' ';
            i += 3;
        } else {
            dst[o++] = p[i++];
        }
    }
    return o;
}

void kvl_tokenizer_free(kvl_tokenizer *t) {
    if (!t)
        return;
    kvl_bpe_free(t->bpe);
    free(t->special);
    free(t->tok);
    free(t->arena);
    free(t->table);
    free(t);
}

/* Longer piece first; by id among equals. */
static int cmp_special(const void *pa, const void *pb, void *ctx) {
    const kvl_tokenizer *t = ctx;
    int32_t x = *(const int32_t *)pa, y = *(const int32_t *)pb;
    uint32_t lx = t->tok[x].len, ly = t->tok[y].len;
    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* Build a tokenizer from n validated-count raw entries. what names the source
 * in messages. Types of -1 are inferred the llama2.c way. */
static kvl_status build(const char *what, const raw_tok *raw, int32_t n, bool convert, int32_t bos,
                        int32_t eos, int32_t unk, kvl_tokenizer **out, kvl_error *err) {
    size_t arena_size = 0;
    for (int32_t i = 0; i < n; i++) {
        if (raw[i].len > UINT32_MAX)
            return kvl_errorf(err, KVL_E_LIMIT, "%s: token %d: piece length %zu > %u", what, (int)i,
                              raw[i].len, (unsigned)UINT32_MAX);
        if (kvl_add_overflow(arena_size, raw[i].len, &arena_size) ||
            kvl_add_overflow(arena_size, 1, &arena_size))
            return kvl_errorf(err, KVL_E_LIMIT, "%s: total piece bytes overflow size_t", what);
    }
    size_t cap = 16;
    while (cap < 2 * (size_t)n) /* n <= KVL_MAX_VOCAB: no overflow */
        cap *= 2;

    kvl_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return kvl_errorf(err, KVL_E_NOMEM, "%s: out of memory", what);
    t->tok = calloc((size_t)n, sizeof *t->tok);
    t->arena = malloc(arena_size);
    t->table = malloc(cap * sizeof *t->table);
    t->special = malloc((size_t)n * sizeof *t->special);
    if (!t->tok || !t->arena || !t->table || !t->special) {
        kvl_tokenizer_free(t);
        return kvl_errorf(err, KVL_E_NOMEM, "%s: out of memory for %d tokens (%zu piece bytes)",
                          what, (int)n, arena_size);
    }
    t->n_vocab = n;
    t->bos = bos;
    t->eos = eos;
    t->unk = unk;
    t->add_bos = true;
    t->add_space_prefix = true;
    t->table_mask = cap - 1;
    for (size_t i = 0; i < cap; i++)
        t->table[i] = -1;
    for (int i = 0; i < 256; i++) {
        t->byte_id[i] = -1;
        t->bytes[i] = (char)i;
    }

    size_t off = 0;
    for (int32_t i = 0; i < n; i++) {
        tok_entry *e = &t->tok[i];
        e->off = off;
        e->len = (uint32_t)copy_piece(t->arena + off, raw[i].ptr, raw[i].len, convert);
        t->arena[off + e->len] = '\0';
        off += (size_t)e->len + 1;
        e->score = raw[i].score;
        const char *p = t->arena + e->off;
        uint8_t b = 0;
        if (raw[i].type < 0) { /* llama2.c: by id and by piece */
            if (i == 0)
                e->type = KVL_TOK_UNKNOWN;
            else if (i <= 2)
                e->type = KVL_TOK_CONTROL;
            else if (parse_byte_piece(p, e->len, &b))
                e->type = KVL_TOK_BYTE;
            else
                e->type = KVL_TOK_NORMAL;
        } else {
            e->type = raw[i].type;
            if (e->type == KVL_TOK_BYTE && !parse_byte_piece(p, e->len, &b)) {
                unsigned plen = e->len;
                kvl_tokenizer_free(t);
                return kvl_errorf(err, KVL_E_FORMAT,
                                  "%s: token %d has type BYTE but its piece (%u bytes) is "
                                  "not <0xHH>",
                                  what, (int)i, plen);
            }
        }
        if (kvl_tokenizer_eog_name(p, e->len)) { /* llama.cpp's override */
            e->eog = true;
            e->type = KVL_TOK_CONTROL;
        }
        e->eog |= i == eos;
        if (e->len > 0 && (e->type == KVL_TOK_CONTROL || e->type == KVL_TOK_USER_DEFINED ||
                           e->type == KVL_TOK_UNKNOWN)) {
            t->special[t->n_special++] = i;
            t->n_user_defined += e->type == KVL_TOK_USER_DEFINED;
        }
        if (e->type == KVL_TOK_BYTE) {
            e->byte = b;
            if (t->byte_id[b] < 0)
                t->byte_id[b] = i;
        } else if (is_text_type(e->type) && e->len > 0 && i != bos && i != eos && i != unk) {
            table_insert(t, i);
        }
    }
    qsort_r(t->special, t->n_special, sizeof *t->special, cmp_special, t);
    *out = t;
    return KVL_OK;
}

static uint32_t rd_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static float rd_f32(const uint8_t *p) {
    uint32_t u = rd_u32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static int32_t rd_i32(const uint8_t *p) {
    uint32_t u = rd_u32(p);
    int32_t v;
    memcpy(&v, &u, sizeof v);
    return v;
}

kvl_status kvl_tokenizer_from_llama2c(const uint8_t *buf, size_t size, int32_t vocab_size,
                                      kvl_tokenizer **out, kvl_error *err) {
    const char *what = "llama2.c tokenizer";
    if ((!buf && size) || !out)
        return kvl_errorf(err, KVL_E_INVALID, "%s: NULL buffer or output", what);
    if (vocab_size < 3)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "%s: vocab_size %d < 3 (ids 0..2 are <unk>, BOS and EOS)", what,
                          (int)vocab_size);
    if (vocab_size > KVL_MAX_VOCAB)
        return kvl_errorf(err, KVL_E_LIMIT, "%s: vocab_size %d > %d", what, (int)vocab_size,
                          KVL_MAX_VOCAB);
    if (size < 4)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "%s: file is %zu bytes, too short for max_token_length (4 bytes)", what,
                          size);
    raw_tok *raw = malloc((size_t)vocab_size * sizeof *raw);
    if (!raw)
        return kvl_errorf(err, KVL_E_NOMEM, "%s: out of memory for %d tokens", what,
                          (int)vocab_size);
    size_t pos = 4; /* after max_token_length, which nothing here needs */
    for (int32_t i = 0; i < vocab_size; i++) {
        if (size - pos < 8) {
            free(raw);
            return kvl_errorf(err, KVL_E_FORMAT,
                              "%s: record %d of vocab_size %d: header at offset %zu needs 8 "
                              "bytes, file has %zu left",
                              what, (int)i, (int)vocab_size, pos, size - pos);
        }
        float score = rd_f32(buf + pos);
        int32_t len = rd_i32(buf + pos + 4);
        pos += 8;
        if (len < 0) {
            free(raw);
            return kvl_errorf(err, KVL_E_FORMAT, "%s: record %d: len %d < 0", what, (int)i,
                              (int)len);
        }
        if ((size_t)len > size - pos) {
            free(raw);
            return kvl_errorf(err, KVL_E_FORMAT,
                              "%s: record %d: len %d > %zu bytes left in the file", what, (int)i,
                              (int)len, size - pos);
        }
        raw[i].ptr = (const char *)buf + pos;
        raw[i].len = (size_t)len;
        raw[i].score = score;
        raw[i].type = -1;
        pos += (size_t)len;
    }
    kvl_status st = build(what, raw, vocab_size, false, 1, 2, 0, out, err);
    free(raw);
    return st;
}

kvl_status kvl_tokenizer_load_llama2c(const char *path, int32_t vocab_size, kvl_tokenizer **out,
                                      kvl_error *err) {
    kvl_mapped_file f;
    kvl_status st = kvl_map_file(path, &f, err);
    if (st != KVL_OK)
        return st;
    st = kvl_tokenizer_from_llama2c(f.data, f.size, vocab_size, out, err);
    if (st != KVL_OK && err) {
        /* prefix the path, keeping the detail */
        char msg[sizeof err->msg];
        memcpy(msg, err->msg, sizeof msg);
        kvl_errorf(err, st, "%s: %s", path, msg);
    }
    kvl_unmap_file(&f);
    return st;
}

/* --- GGUF ------------------------------------------------------------------ */

/* Our own key lookup over g->kv, so the tokenizer needs nothing from the
 * parser beyond its data structures (tests build them by hand). */
static const kvl_gguf_kv *find_kv(const kvl_gguf *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const kvl_gguf_kv *kv = &g->kv[i];
        if (kv->key.len == n && kv->key.ptr && memcmp(kv->key.ptr, key, n) == 0)
            return kv;
    }
    return NULL;
}

static kvl_status find_arr(const kvl_gguf *g, const char *key, uint32_t elem, const char *elem_name,
                           const kvl_gguf_kv **out, kvl_error *err) {
    const kvl_gguf_kv *kv = find_kv(g, key);
    if (!kv)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf tokenizer: missing key %s", key);
    if (kv->type != KVL_GGUF_ARRAY || kv->v.arr.type != elem)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "gguf tokenizer: %s has type %u (element type %u), want ARRAY of %s", key,
                          (unsigned)kv->type,
                          kv->type == KVL_GGUF_ARRAY ? (unsigned)kv->v.arr.type : 0u, elem_name);
    bool have = elem == KVL_GGUF_STRING ? kv->v.arr.strs != NULL : kv->v.arr.data != NULL;
    if (kv->v.arr.n > 0 && !have)
        return kvl_errorf(err, KVL_E_FORMAT, "gguf tokenizer: %s: %llu elements but no data", key,
                          (unsigned long long)kv->v.arr.n);
    *out = kv;
    return KVL_OK;
}

kvl_status kvl_tokenizer_opt_id(const kvl_gguf *g, const char *key, int32_t n_vocab, int32_t *id,
                                char *note, size_t note_cap, kvl_error *err) {
    if (!kvl_gguf_find_key(g, key))
        return KVL_OK;
    int64_t v;
    kvl_status st = kvl_gguf_get_i64(g, key, &v, err);
    if (st != KVL_OK)
        return st;
    if (v >= 0 && v < n_vocab) {
        *id = (int32_t)v;
        return KVL_OK;
    }
    /* llama.cpp: "bad special token", and it keeps its default */
    if (note && note_cap && !note[0])
        snprintf(note, note_cap, "%s %lld is not in [0, n_vocab %d): the default %d is used", key,
                 (long long)v, (int)n_vocab, (int)*id);
    return KVL_OK;
}

kvl_status kvl_tokenizer_from_gguf(const kvl_gguf *g, kvl_tokenizer **out, kvl_error *err) {
    const char *what = "gguf tokenizer";
    if (!g || !out || (g->n_kv && !g->kv))
        return kvl_errorf(err, KVL_E_INVALID, "%s: NULL gguf or output", what);
    const kvl_gguf_kv *model = find_kv(g, "tokenizer.ggml.model");
    if (!model)
        return kvl_errorf(err, KVL_E_FORMAT, "%s: missing key tokenizer.ggml.model", what);
    if (model->type != KVL_GGUF_STRING || (!model->v.str.ptr && model->v.str.len))
        return kvl_errorf(err, KVL_E_FORMAT, "%s: tokenizer.ggml.model has type %u, want STRING",
                          what, (unsigned)model->type);
    if (kvl_str_eq(model->v.str, "gpt2")) {
        kvl_tokenizer *t = calloc(1, sizeof *t);
        if (!t)
            return kvl_errorf(err, KVL_E_NOMEM, "%s: out of memory", what);
        kvl_status st = kvl_bpe_from_gguf(g, &t->bpe, t->note, sizeof t->note, err);
        if (st != KVL_OK) {
            free(t);
            return st;
        }
        *out = t;
        return KVL_OK;
    }
    if (!kvl_str_eq(model->v.str, "llama")) {
        int shown = model->v.str.len > 64 ? 64 : (int)model->v.str.len;
        return kvl_errorf(err, KVL_E_UNSUPPORTED,
                          "%s: tokenizer.ggml.model '%.*s' is not supported (only 'llama' and "
                          "'gpt2')",
                          what, shown, model->v.str.ptr ? model->v.str.ptr : "");
    }
    /* scores and token_type may be absent, as llama.cpp allows: every score
     * 0, every token normal */
    const kvl_gguf_kv *toks, *scores = NULL, *types = NULL;
    kvl_status st = find_arr(g, "tokenizer.ggml.tokens", KVL_GGUF_STRING, "STRING", &toks, err);
    if (st == KVL_OK && find_kv(g, "tokenizer.ggml.scores"))
        st = find_arr(g, "tokenizer.ggml.scores", KVL_GGUF_FLOAT32, "FLOAT32", &scores, err);
    if (st == KVL_OK && find_kv(g, "tokenizer.ggml.token_type"))
        st = find_arr(g, "tokenizer.ggml.token_type", KVL_GGUF_INT32, "INT32", &types, err);
    if (st != KVL_OK)
        return st;
    uint64_t n = toks->v.arr.n;
    if (scores && scores->v.arr.n != n)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "%s: tokenizer.ggml.scores has %llu entries but tokenizer.ggml.tokens "
                          "has %llu",
                          what, (unsigned long long)scores->v.arr.n, (unsigned long long)n);
    if (types && types->v.arr.n != n)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "%s: tokenizer.ggml.token_type has %llu entries but "
                          "tokenizer.ggml.tokens has %llu",
                          what, (unsigned long long)types->v.arr.n, (unsigned long long)n);
    if (n == 0)
        return kvl_errorf(err, KVL_E_FORMAT, "%s: tokenizer.ggml.tokens is empty", what);
    if (n > KVL_MAX_VOCAB)
        return kvl_errorf(err, KVL_E_LIMIT, "%s: %llu tokens > %d", what, (unsigned long long)n,
                          KVL_MAX_VOCAB);
    int32_t nv = (int32_t)n;
    int32_t bos = 1, eos = 2, unk = 0;
    char note[sizeof((kvl_tokenizer *)0)->note] = "";
    st = kvl_tokenizer_opt_id(g, "tokenizer.ggml.bos_token_id", nv, &bos, note, sizeof note, err);
    if (st == KVL_OK)
        st = kvl_tokenizer_opt_id(g, "tokenizer.ggml.eos_token_id", nv, &eos, note, sizeof note,
                                  err);
    if (st == KVL_OK)
        st = kvl_tokenizer_opt_id(g, "tokenizer.ggml.unknown_token_id", nv, &unk, note, sizeof note,
                                  err);
    if (st != KVL_OK)
        return st;
    /* the defaults must also exist */
    int32_t maxid = bos > eos ? bos : eos;
    if (maxid >= nv)
        return kvl_errorf(err, KVL_E_FORMAT, "%s: default BOS/EOS id %d >= n_vocab %d", what,
                          (int)maxid, (int)nv);

    raw_tok *raw = malloc((size_t)n * sizeof *raw);
    if (!raw)
        return kvl_errorf(err, KVL_E_NOMEM, "%s: out of memory for %d tokens", what, (int)nv);
    for (int32_t i = 0; i < nv; i++) {
        kvl_str s = toks->v.arr.strs[i];
        int32_t type = types ? rd_i32(types->v.arr.data + (size_t)i * 4) : KVL_TOK_NORMAL;
        if (s.len > INT32_MAX) {
            free(raw);
            return kvl_errorf(err, KVL_E_LIMIT, "%s: tokenizer.ggml.tokens[%d] length %llu > %d",
                              what, (int)i, (unsigned long long)s.len, INT32_MAX);
        }
        if (!s.ptr && s.len) {
            free(raw);
            return kvl_errorf(err, KVL_E_FORMAT, "%s: tokenizer.ggml.tokens[%d]: no data", what,
                              (int)i);
        }
        if (type < 0 || type > KVL_TOK_BYTE) {
            free(raw);
            return kvl_errorf(err, KVL_E_FORMAT,
                              "%s: tokenizer.ggml.token_type[%d] = %d not in [0, %d]", what, (int)i,
                              (int)type, KVL_TOK_BYTE);
        }
        raw[i].ptr = s.ptr;
        raw[i].len = (size_t)s.len;
        raw[i].score = scores ? rd_f32(scores->v.arr.data + (size_t)i * 4) : 0.0f;
        raw[i].type = type;
    }
    bool flags[3] = {true, false, true};
    static const char *const flag_keys[3] = {"tokenizer.ggml.add_bos_token",
                                             "tokenizer.ggml.add_eos_token",
                                             "tokenizer.ggml.add_space_prefix"};
    for (int k = 0; k < 3; k++) {
        const kvl_gguf_kv *kv = find_kv(g, flag_keys[k]);
        if (kv && kv->type != KVL_GGUF_BOOL) {
            free(raw);
            return kvl_errorf(err, KVL_E_FORMAT, "%s: %s has type %u, want BOOL", what,
                              flag_keys[k], (unsigned)kv->type);
        }
        if (kv)
            flags[k] = kv->v.u64 != 0;
    }
    kvl_tokenizer *t = NULL;
    st = build(what, raw, nv, true, bos, eos, unk, &t, err);
    free(raw);
    if (st != KVL_OK)
        return st;
    t->add_bos = flags[0];
    t->add_eos = flags[1];
    t->add_space_prefix = flags[2];
    memcpy(t->note, note, sizeof note);
    *out = t;
    return KVL_OK;
}

bool kvl_tokenizer_eog_name(const char *p, size_t n) {
    static const char *const names[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>",         "<end_of_turn>", "<|endoftext|>",
        "</s>",       "<|eom_id|>", "<|end_of_text|>", "<EOT>",         "_<EOT>",
    };
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (n == strlen(names[k]) && !memcmp(p, names[k], n))
            return true;
    return false;
}

/* --- queries ---------------------------------------------------------------- */

int32_t kvl_tokenizer_n_vocab(const kvl_tokenizer *t) {
    if (t && t->bpe)
        return kvl_bpe_n_vocab(t->bpe);
    return t ? t->n_vocab : 0;
}

int32_t kvl_tokenizer_bos(const kvl_tokenizer *t) {
    if (t && t->bpe)
        return kvl_bpe_bos(t->bpe);
    return t ? t->bos : -1;
}

int32_t kvl_tokenizer_eos(const kvl_tokenizer *t) {
    if (t && t->bpe)
        return kvl_bpe_eos(t->bpe);
    return t ? t->eos : -1;
}

bool kvl_tokenizer_add_bos(const kvl_tokenizer *t) {
    if (t && t->bpe)
        return kvl_bpe_add_bos(t->bpe);
    return t && t->add_bos;
}

bool kvl_tokenizer_add_eos(const kvl_tokenizer *t) {
    if (t && t->bpe)
        return kvl_bpe_add_eos(t->bpe);
    return t && t->add_eos;
}

bool kvl_tokenizer_add_space_prefix(const kvl_tokenizer *t) {
    return t && !t->bpe && t->add_space_prefix;
}

const char *kvl_tokenizer_note(const kvl_tokenizer *t) { return t ? t->note : ""; }

const char *kvl_tokenizer_model(const kvl_tokenizer *t) { return t && t->bpe ? "gpt2" : "llama"; }

bool kvl_tokenizer_is_eog(const kvl_tokenizer *t, int32_t id) {
    if (t && t->bpe)
        return kvl_bpe_is_eog(t->bpe, id);
    return t && id >= 0 && id < t->n_vocab && t->tok[id].eog;
}

kvl_status kvl_tokenizer_get(const kvl_tokenizer *t, int32_t id, const char **piece, size_t *len,
                             float *score, int32_t *type) {
    if (t && t->bpe)
        return kvl_bpe_get(t->bpe, id, piece, len, score, type);
    if (!t || id < 0 || id >= t->n_vocab)
        return KVL_E_INVALID;
    const tok_entry *e = &t->tok[id];
    if (piece)
        *piece = t->arena + e->off;
    if (len)
        *len = e->len;
    if (score)
        *score = e->score;
    if (type)
        *type = e->type;
    return KVL_OK;
}

const char *kvl_tokenizer_piece(const kvl_tokenizer *t, int32_t prev, int32_t tok, size_t *len) {
    if (t && t->bpe)
        return kvl_bpe_piece(t->bpe, tok, false, len);
    size_t l = 0;
    const char *p = "";
    if (t && tok >= 0 && tok < t->n_vocab) {
        const tok_entry *e = &t->tok[tok];
        if (tok == t->bos || tok == t->eos) {
            /* nothing, whatever the type */
        } else if (e->type == KVL_TOK_BYTE) {
            p = &t->bytes[e->byte];
            l = 1;
        } else if (e->type != KVL_TOK_CONTROL && e->type != KVL_TOK_UNKNOWN) {
            p = t->arena + e->off;
            l = e->len;
        }
        if (t->add_space_prefix && prev == t->bos && l > 0 && p[0] == ' ') {
            p++;
            l--;
        }
    }
    if (len)
        *len = l;
    return p;
}

const char *kvl_tokenizer_piece_special(const kvl_tokenizer *t, int32_t tok, size_t *len) {
    if (t && t->bpe)
        return kvl_bpe_piece(t->bpe, tok, true, len);
    size_t l = 0;
    const char *p = "";
    if (t && tok >= 0 && tok < t->n_vocab) {
        const tok_entry *e = &t->tok[tok];
        if (e->type == KVL_TOK_BYTE) {
            p = &t->bytes[e->byte];
            l = 1;
        } else if (e->type != KVL_TOK_UNUSED) {
            p = t->arena + e->off;
            l = e->len;
        }
    }
    if (len)
        *len = l;
    return p;
}

/* --- encoding --------------------------------------------------------------- */

size_t kvl_utf8_decode(const uint8_t *p, size_t n, uint32_t *cp) {
    uint8_t c = p[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; /* range of the second byte */
    uint32_t v;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
        v = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        v = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        v = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (n < need || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
        v = v << 6 | (p[i] & 0x3F);
    }
    *cp = v;
    return need;
}

/* A run of text: a doubly linked list in text order. len == 0 marks a
 * symbol merged into its left neighbour. Indices are 32-bit (the text is
 * limited to MAX_TEXT bytes) to keep the working set small. */
typedef struct sym {
    uint32_t start, len; /* bytes of the padded text */
    uint32_t prev, next; /* NO_SYM at the ends */
    int32_t id;
    bool text; /* a text token (may merge); false for byte fallback */
} sym;

#define NO_SYM UINT32_MAX
#define MAX_TEXT ((size_t)UINT32_MAX - 1)

/* A candidate merge of symbol left (in key) with its next symbol right into
 * token id. key orders candidates: the score's bits made monotonic in the
 * high half, ~left in the low half, so the largest key is the best score
 * and, among equal scores, the leftmost pair. Valid while left is alive,
 * left.next == right and left.len + right.len == len(id) (pieces equal
 * their text, and symbols only grow). */
typedef struct cand {
    uint64_t key;
    uint32_t right;
    int32_t id;
} cand;

typedef struct encoder {
    const kvl_tokenizer *t;
    const char *text; /* the padded text: ' ' + input */
    sym *s;
    cand *heap;
    size_t n_heap, cap_heap;
} encoder;

/* float -> uint32 with the same order (no NaNs here; -0 counts as +0, as
 * llama2.c's float comparison does) */
static uint32_t score_key(float f) {
    if (f == 0.0f)
        f = 0.0f;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : u | 0x80000000u;
}

/* A 4-ary max-heap on key: four 16-byte children share a cache line, so a
 * pop touches half as many lines as a binary heap's would. */
static void heap_push(encoder *e, cand c) {
    KVL_ASSERT(e->n_heap < e->cap_heap);
    size_t i = e->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 4;
        if (e->heap[parent].key >= c.key)
            break;
        e->heap[i] = e->heap[parent];
        i = parent;
    }
    e->heap[i] = c;
}

static cand heap_pop(encoder *e) {
    cand top = e->heap[0];
    cand last = e->heap[--e->n_heap];
    size_t n = e->n_heap, i = 0;
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n)
            break;
        size_t end = c + 4 < n ? c + 4 : n, best = c;
        for (size_t k = c + 1; k < end; k++)
            if (e->heap[k].key > e->heap[best].key)
                best = k;
        if (e->heap[best].key <= last.key)
            break;
        e->heap[i] = e->heap[best];
        i = best;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

static void try_pair(encoder *e, uint32_t left) {
    if (left == NO_SYM)
        return;
    uint32_t right = e->s[left].next;
    if (right == NO_SYM || !e->s[left].text || !e->s[right].text)
        return;
    size_t len = (size_t)e->s[left].len + e->s[right].len;
    int32_t id = lookup(e->t, e->text + e->s[left].start, len);
    if (id < 0)
        return;
    float score = e->t->tok[id].score;
    if (!(score > MERGE_FLOOR))
        return;
    cand c = {.key = (uint64_t)score_key(score) << 32 | (uint32_t)~left, .right = right, .id = id};
    heap_push(e, c);
}

/* Split the padded text into symbols; returns how many. */
static uint32_t split(encoder *e, uint32_t n_text) {
    const kvl_tokenizer *t = e->t;
    const uint8_t *u = (const uint8_t *)e->text;
    uint32_t n_sym = 0;
    for (uint32_t i = 0; i < n_text;) {
        uint32_t cp, cl = (uint32_t)kvl_utf8_decode(u + i, n_text - i, &cp);
        int32_t id = cl ? lookup(t, e->text + i, cl) : -1;
        uint32_t nb = id >= 0 ? 1 : cl ? cl : 1; /* symbols this character makes */
        for (uint32_t k = 0; k < nb; k++) {
            sym *s = &e->s[n_sym];
            s->prev = n_sym ? n_sym - 1 : NO_SYM;
            s->next = NO_SYM;
            if (n_sym)
                e->s[n_sym - 1].next = n_sym;
            if (id >= 0) {
                s->start = i;
                s->len = cl;
                s->id = id;
                s->text = true;
            } else {
                int32_t b = t->byte_id[u[i + k]];
                s->start = i + k;
                s->len = 1;
                s->id = b >= 0 ? b : t->unk;
                s->text = false;
            }
            n_sym++;
        }
        i += id >= 0 ? cl : nb;
    }
    return n_sym;
}

static void merge_all(encoder *e, uint32_t n_sym) {
    for (uint32_t i = 0; i + 1 < n_sym; i++)
        try_pair(e, i);
    while (e->n_heap > 0) {
        cand c = heap_pop(e);
        uint32_t left = ~(uint32_t)c.key;
        sym *l = &e->s[left];
        sym *r = &e->s[c.right];
        uint32_t len = e->t->tok[c.id].len;
        if (l->len == 0 || l->next != c.right || l->len + r->len != len)
            continue; /* stale */
        l->len = len;
        l->id = c.id;
        l->next = r->next;
        if (r->next != NO_SYM)
            e->s[r->next].prev = left;
        r->len = 0;
        try_pair(e, l->prev);
        try_pair(e, left);
    }
}

kvl_status kvl_tokenizer_encode(const kvl_tokenizer *t, const char *text, size_t len, bool add_bos,
                                int32_t *out, size_t cap, size_t *n_out, kvl_error *err) {
    return kvl_tokenizer_tokenize(t, text, len, add_bos ? KVL_TOKENIZE_ADD_SPECIAL : 0, out, cap,
                                  n_out, err);
}

/* A piece of the text: raw (id < 0) or a special token's id. */
typedef struct frag {
    uint32_t off, len;
    int32_t id;
} frag;

/* Cut the special tokens that apply (user-defined always, control and
 * unknown with parse) out of text[0..len), longest token first, each at its
 * leftmost occurrences in what is still raw (llama.cpp's order). a and b
 * hold 2 * len + 1 fragments each; returns the fragment count, in *res. */
static size_t split_specials(const kvl_tokenizer *t, const char *text, uint32_t len, bool parse,
                             frag *a, frag *b, frag **res) {
    size_t n = 0;
    a[n++] = (frag){0, len, -1};
    for (size_t k = 0; k < t->n_special; k++) {
        const tok_entry *e = &t->tok[t->special[k]];
        if (!parse && e->type != KVL_TOK_USER_DEFINED)
            continue;
        const char *needle = t->arena + e->off;
        size_t m = 0;
        for (size_t f = 0; f < n; f++) {
            frag fr = a[f];
            if (fr.id >= 0 || fr.len < e->len) {
                b[m++] = fr;
                continue;
            }
            uint32_t pos = fr.off, end = fr.off + fr.len;
            const char *hit;
            while ((hit = memmem(text + pos, end - pos, needle, e->len)) != NULL) {
                uint32_t h = (uint32_t)(hit - text);
                if (h > pos)
                    b[m++] = (frag){pos, h - pos, -1};
                b[m++] = (frag){h, e->len, t->special[k]};
                pos = h + e->len;
            }
            if (pos < end)
                b[m++] = (frag){pos, end - pos, -1};
        }
        frag *tmp = a;
        a = b;
        b = tmp;
        n = m;
    }
    *res = a;
    return n;
}

/* SentencePiece BPE of one raw fragment, with the dummy prefix when pre;
 * ids go to out[*count] while *count < cap, all are counted. */
static void encode_fragment(encoder *e, char *padded, const char *text, uint32_t len, bool pre,
                            int32_t *out, size_t cap, size_t *count) {
    uint32_t p = pre ? 1 : 0;
    padded[0] = ' ';
    memcpy(padded + p, text, len);
    e->text = padded;
    e->n_heap = 0;
    uint32_t n_sym = split(e, len + p);
    merge_all(e, n_sym);
    for (uint32_t i = n_sym > 0 ? 0 : NO_SYM; i != NO_SYM; i = e->s[i].next) {
        if (*count < cap)
            out[*count] = e->s[i].id;
        (*count)++;
    }
}

kvl_status kvl_tokenizer_tokenize(const kvl_tokenizer *t, const char *text, size_t len,
                                  unsigned flags, int32_t *out, size_t cap, size_t *n_out,
                                  kvl_error *err) {
    if (t && t->bpe)
        return kvl_bpe_encode(t->bpe, text, len, flags, out, cap, n_out, err);
    if (!t || (!text && len) || (!out && cap) || !n_out)
        return kvl_errorf(err, KVL_E_INVALID, "tokenizer: encode: NULL argument");
    if (len >= MAX_TEXT / 2)
        return kvl_errorf(err, KVL_E_LIMIT, "tokenizer: text of %zu bytes > %zu", len,
                          MAX_TEXT / 2 - 1);
    bool add_bos = (flags & KVL_TOKENIZE_ADD_SPECIAL) && t->add_bos;
    bool add_eos = (flags & KVL_TOKENIZE_ADD_SPECIAL) && t->add_eos;
    bool parse = (flags & KVL_TOKENIZE_PARSE_SPECIAL) != 0;
    bool specials = t->n_special > 0 && (parse || t->n_user_defined > 0);
    uint32_t n_text = len > 0 ? (uint32_t)len + 1 : 0;
    /* symbols <= n_text; live candidates <= symbols - 1 + merges <= 2 * symbols */
    size_t sym_bytes, heap_n = 2 * (size_t)n_text + 1, heap_bytes, frag_bytes = 0;
    if (kvl_mul_overflow(n_text, sizeof(sym), &sym_bytes) ||
        kvl_mul_overflow(heap_n, sizeof(cand), &heap_bytes) ||
        (specials && kvl_mul_overflow(heap_n, sizeof(frag), &frag_bytes)))
        return kvl_errorf(err, KVL_E_LIMIT, "tokenizer: text of %zu bytes is too long", len);

    encoder e = {.t = t, .cap_heap = heap_n};
    char *padded = NULL;
    frag *fa = NULL, *fb = NULL;
    size_t count = 0;
    if (add_bos) {
        if (count < cap)
            out[count] = t->bos;
        count++;
    }
    if (n_text > 0) {
        padded = malloc(n_text);
        e.s = malloc(sym_bytes);
        e.heap = malloc(heap_bytes);
        if (specials) {
            fa = malloc(frag_bytes);
            fb = malloc(frag_bytes);
        }
        if (!padded || !e.s || !e.heap || (specials && (!fa || !fb))) {
            free(padded);
            free(e.s);
            free(e.heap);
            free(fa);
            free(fb);
            return kvl_errorf(err, KVL_E_NOMEM, "tokenizer: out of memory encoding %zu bytes", len);
        }
        if (!specials) {
            encode_fragment(&e, padded, text, (uint32_t)len, t->add_space_prefix, out, cap, &count);
        } else {
            frag *fr;
            size_t nf = split_specials(t, text, (uint32_t)len, parse, fa, fb, &fr);
            bool prev_special = true; /* the prefix goes first and after specials */
            for (size_t f = 0; f < nf; f++) {
                if (fr[f].id >= 0) {
                    if (count < cap)
                        out[count] = fr[f].id;
                    count++;
                    prev_special = true;
                    continue;
                }
                encode_fragment(&e, padded, text + fr[f].off, fr[f].len,
                                t->add_space_prefix && prev_special, out, cap, &count);
                prev_special = false;
            }
        }
    }
    if (add_eos) {
        if (count < cap)
            out[count] = t->eos;
        count++;
    }
    free(padded);
    free(e.s);
    free(e.heap);
    free(fa);
    free(fb);
    *n_out = count;
    if (count > cap)
        return kvl_errorf(err, KVL_E_LIMIT, "tokenizer: %zu tokens do not fit in cap %zu", count,
                          cap);
    return KVL_OK;
}
