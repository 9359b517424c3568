/*
 * The OpenAI JSON of kvllm serve, parsed and printed with cJSON.
 *
 * Requests: every field is checked for its type and range before anything
 * is submitted; a bad one gets 400 with an OpenAI error object whose param
 * names the field and whose message has the value and the limit. Unknown
 * fields are ignored (clients send many); fields kvllm cannot honour are
 * refused rather than ignored (presence/frequency penalties other than 0,
 * top log-probabilities, echo, suffix, best_of, logit_bias, tools).
 *
 * Prompts are tokenized here, on the HTTP thread, never the engine's.
 * Chat messages go through the model's chat template (or the one
 * --chat-template names; src/chat/, docs/chat.md); a model without a
 * recognised template gets 400 naming the flag.
 *
 * Responses: a non-streamed call accumulates each sample's text (and
 * log-probabilities) until the FINAL; a streamed one renders one SSE chunk
 * per event with text, a chunk with each sample's finish_reason, the usage
 * chunk (stream_options.include_usage) and `data: [DONE]`.
 */
#include "server/openai.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- errors ---- */

bool oai_error(srv_buf *out, const char *type, const char *param, const char *code, const char *fmt,
               ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *root = cJSON_CreateObject(), *e = NULL;
    bool ok = root && (e = cJSON_AddObjectToObject(root, "error")) &&
              cJSON_AddStringToObject(e, "message", msg) &&
              cJSON_AddStringToObject(e, "type", type) &&
              (param ? cJSON_AddStringToObject(e, "param", param) != NULL
                     : cJSON_AddNullToObject(e, "param") != NULL) &&
              (code ? cJSON_AddStringToObject(e, "code", code) != NULL
                    : cJSON_AddNullToObject(e, "code") != NULL);
    char *txt = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    out->n = 0;
    ok = txt && srv_buf_str(out, txt);
    free(txt);
    return ok;
}

#define BAD(param, ...)                                                                            \
    (oai_error(out, "invalid_request_error", param, "invalid_value", __VA_ARGS__), 400u)

#define UTF8_MORE ((size_t)-1)

/* The length of the UTF-8 character at p (n bytes available): 1..4, 0
 * when the bytes cannot start one (or it is overlong, a surrogate, past
 * U+10FFFF), UTF8_MORE when it is cut short by the end of the bytes. */
static size_t utf8_char(const unsigned char *p, size_t n) {
    unsigned c = p[0], cp;
    size_t k;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        k = 1, cp = c & 0x1Fu;
    else if ((c & 0xF0u) == 0xE0)
        k = 2, cp = c & 0x0Fu;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 3, cp = c & 0x07u;
    else
        return 0;
    for (size_t j = 1; j <= k; j++) {
        if (j >= n)
            return UTF8_MORE;
        if ((p[j] & 0xC0u) != 0x80)
            return 0;
        cp = (cp << 6) | (p[j] & 0x3Fu);
    }
    if ((k == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return k + 1;
}

static bool utf8_valid(const unsigned char *p, size_t n) {
    for (size_t i = 0, k; i < n; i += k)
        if ((k = utf8_char(p + i, n - i)) == 0 || k == UTF8_MORE)
            return false;
    return true;
}

/* Parse a JSON object body. 0 with *root, or 400 with the error. */
static unsigned parse_body(const char *body, size_t n, cJSON **root, srv_buf *out) {
    *root = NULL;
    if (!utf8_valid((const unsigned char *)body, n))
        return BAD(NULL, "the request body is not valid UTF-8");
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(body, n, &end, false);
    if (!j) {
        size_t at = end && end >= body ? (size_t)(end - body) : 0;
        return BAD(NULL, "the request body is not valid JSON (error near byte %zu of %zu)", at, n);
    }
    while (end && (size_t)(end - body) < n && strchr(" \t\r\n", *end))
        end++;
    if (end && (size_t)(end - body) < n) {
        cJSON_Delete(j);
        return BAD(NULL, "the request body has bytes after the JSON value (at byte %zu)",
                   (size_t)(end - body));
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return BAD(NULL, "the request body must be a JSON object");
    }
    *root = j;
    return 0;
}

static const cJSON *field(const cJSON *o, const char *name) {
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(o, name);
    return f && !cJSON_IsNull(f) ? f : NULL;
}

/* Integer field in [lo, hi]: 0 (set), 1 (absent), or 400. */
static unsigned get_int(const cJSON *o, const char *name, double lo, double hi, long long *v,
                        srv_buf *out) {
    const cJSON *f = field(o, name);
    if (!f)
        return 1;
    if (!cJSON_IsNumber(f) || f->valuedouble != floor(f->valuedouble))
        return BAD(name, "%s must be an integer", name);
    if (!(f->valuedouble >= lo && f->valuedouble <= hi))
        return BAD(name, "%s %.17g is outside [%.17g, %.17g]", name, f->valuedouble, lo, hi);
    *v = (long long)f->valuedouble;
    return 0;
}

static unsigned get_num(const cJSON *o, const char *name, double lo, double hi, bool lo_open,
                        double *v, srv_buf *out) {
    const cJSON *f = field(o, name);
    if (!f)
        return 1;
    if (!cJSON_IsNumber(f))
        return BAD(name, "%s must be a number", name);
    double x = f->valuedouble;
    if (!(lo_open ? x > lo : x >= lo) || !(x <= hi))
        return BAD(name, "%s %.17g is outside %c%g, %g]", name, x, lo_open ? '(' : '[', lo, hi);
    *v = x;
    return 0;
}

static unsigned get_bool(const cJSON *o, const char *name, bool *v, srv_buf *out) {
    const cJSON *f = field(o, name);
    if (!f)
        return 1;
    if (!cJSON_IsBool(f))
        return BAD(name, "%s must be true or false", name);
    *v = cJSON_IsTrue(f);
    return 0;
}

#define TRY(x)                                                                                     \
    do {                                                                                           \
        unsigned _r = (x);                                                                         \
        if (_r > 1)                                                                                \
            return _r;                                                                             \
    } while (0)

/* Append the tokens of text to o->toks (BOS first when bos). */
static unsigned add_text(kvl_server *s, oai_req *o, const char *text, size_t len, bool bos,
                         const char *param, srv_buf *out) {
    size_t cap = o->n_toks + len + 3;
    int32_t *t = realloc(o->toks, cap * sizeof *t);
    if (!t)
        return oai_error(out, "server_error", NULL, NULL, "out of memory"), 500;
    o->toks = t;
    size_t n = 0;
    kvl_error err = {0};
    if (kvl_tokenize(s->m, text, len, bos, t + o->n_toks, cap - o->n_toks, &n, &err))
        return BAD(param, "%s: %s", param, err.msg);
    o->n_toks += n;
    return 0;
}

static unsigned add_ids(kvl_server *s, oai_req *o, const cJSON *arr, const char *param,
                        srv_buf *out) {
    int n = cJSON_GetArraySize(arr);
    if (n < 1)
        return BAD(param, "%s: an empty token array", param);
    if ((int64_t)n > s->cfg.max_ctx)
        return BAD(param, "%s: %d tokens > the context %d", param, n, s->cfg.max_ctx);
    int32_t *t = realloc(o->toks, (o->n_toks + (size_t)n) * sizeof *t);
    if (!t)
        return oai_error(out, "server_error", NULL, NULL, "out of memory"), 500;
    o->toks = t;
    int i = 0;
    for (const cJSON *x = arr->child; x; x = x->next, i++) {
        if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) || x->valuedouble < 0 ||
            x->valuedouble >= (double)s->mi.n_vocab)
            return BAD(param, "%s[%d] is not a token id in [0, %lld)", param, i,
                       (long long)s->mi.n_vocab);
        t[o->n_toks++] = (int32_t)x->valuedouble;
    }
    return 0;
}

/* completions: prompt is a string, [string], [ids] or [[ids]]. */
static unsigned parse_prompt(kvl_server *s, const cJSON *root, oai_req *o, srv_buf *out) {
    const cJSON *p = field(root, "prompt");
    if (!p)
        return BAD("prompt", "prompt is required");
    if (cJSON_IsString(p))
        return add_text(s, o, p->valuestring, strlen(p->valuestring), true, "prompt", out);
    if (!cJSON_IsArray(p))
        return BAD("prompt", "prompt must be a string or an array of token ids");
    int n = cJSON_GetArraySize(p);
    const cJSON *first = p->child;
    if (first && (cJSON_IsString(first) || cJSON_IsArray(first))) {
        if (n != 1)
            return BAD("prompt",
                       "prompt: %d prompts in one request; kvllm takes 1 (use n for "
                       "several samples of one prompt)",
                       n);
        if (cJSON_IsString(first))
            return add_text(s, o, first->valuestring, strlen(first->valuestring), true, "prompt",
                            out);
        return add_ids(s, o, first, "prompt", out);
    }
    return add_ids(s, o, p, "prompt", out);
}

/* The text of a message's content: a string or an array of text parts. */
static unsigned content_text(const cJSON *c, int i, srv_buf *txt, srv_buf *out) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d].content", i);
    if (!c)
        return 0; /* an empty message */
    if (cJSON_IsString(c))
        return srv_buf_str(txt, c->valuestring) ? 0 : 500;
    if (!cJSON_IsArray(c))
        return BAD(param, "%s must be a string or an array of text parts", param);
    int j = 0;
    for (const cJSON *part = c->child; part; part = part->next, j++) {
        const cJSON *type = field(part, "type"), *t = field(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") || !cJSON_IsString(t))
            return BAD(param,
                       "%s[%d]: only {\"type\": \"text\", \"text\": ...} parts are supported",
                       param, j);
        if (!srv_buf_str(txt, t->valuestring))
            return 500;
    }
    return 0;
}

/* The role and text of each message into msgs (contents point into txt,
 * which must not grow afterwards): the texts are gathered first, with
 * their offsets, then pointed at. */
static unsigned gather_messages(const cJSON *msgs, kvl_chat_message *m, srv_buf *txt,
                                srv_buf *out) {
    size_t *off = malloc((size_t)cJSON_GetArraySize(msgs) * sizeof *off);
    if (!off)
        return oai_error(out, "server_error", NULL, NULL, "out of memory"), 500;
    unsigned r = 0;
    int i = 0;
    for (const cJSON *x = msgs->child; x && !r; x = x->next, i++) {
        const cJSON *role = field(x, "role");
        if (!cJSON_IsObject(x) || !cJSON_IsString(role)) {
            char param[48];
            snprintf(param, sizeof param, "messages[%d].role", i);
            r = BAD(param, "%s must be a string", param);
            break;
        }
        m[i].role = role->valuestring;
        off[i] = txt->n;
        if (!(r = content_text(field(x, "content"), i, txt, out)) && !srv_buf_add(txt, "", 1))
            r = (oai_error(out, "server_error", NULL, NULL, "out of memory"), 500);
    }
    for (int k = 0; k < i && !r; k++)
        m[k].content = txt->p + off[k];
    free(off);
    return r;
}

/* chat: the messages through the model's chat template (or
 * --chat-template's; src/chat/, docs/chat.md) into o->toks. */
static unsigned parse_messages(kvl_server *s, const cJSON *root, oai_req *o, srv_buf *out) {
    const cJSON *msgs = field(root, "messages");
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) < 1)
        return BAD("messages", "messages must be a non-empty array of {role, content}");
    size_t n = (size_t)cJSON_GetArraySize(msgs);
    if (s->chat.tmpl == KVL_CHAT_NONE)
        return oai_error(out, "invalid_request_error", "messages", "chat_template_missing",
                         "%s (kvllm serve --chat-template NAME)", s->chat_err),
               400;
    kvl_chat_message *m = calloc(n, sizeof *m);
    srv_buf txt = {0};
    char *text = NULL;
    kvl_error err = {0};
    unsigned r = m ? gather_messages(msgs, m, &txt, out)
                   : (oai_error(out, "server_error", NULL, NULL, "out of memory"), 500);
    size_t len = SIZE_MAX; /* set by the size query alone */
    kvl_status st = r ? KVL_OK : kvl_chat_apply(&s->chat, m, n, NULL, 0, &len, &err);
    if (!r && !(st == KVL_E_LIMIT && len != SIZE_MAX)) {
        /* refused: the message names the field (messages[i].role, ...) */
        char param[48] = "messages";
        sscanf(err.msg, "%47[^ :]", param);
        r = BAD(strncmp(param, "messages", 8) ? "messages" : param, "%s", err.msg);
    }
    if (!r && strcmp(m[n - 1].role, "user"))
        r = BAD("messages", "the last message must have role user (kvllm writes the "
                            "assistant's next turn)");
    if (!r && !(text = malloc(len + 1)))
        r = (oai_error(out, "server_error", NULL, NULL, "out of memory"), 500);
    if (!r && (st = kvl_chat_apply(&s->chat, m, n, text, len + 1, &len, &err)))
        r = BAD("messages", "%s", err.msg);
    int32_t *t = r ? NULL : realloc(o->toks, (2 * len + 3) * sizeof *t);
    if (!r && !t)
        r = (oai_error(out, "server_error", NULL, NULL, "out of memory"), 500);
    if (t) {
        o->toks = t;
        size_t nt = 0;
        if ((st = kvl_chat_tokenize(s->m, text, len, t, 2 * len + 3, &nt, &err)))
            r = BAD("messages", "messages: %s", err.msg);
        o->n_toks = st ? 0 : nt;
    }
    free(text);
    free(m);
    srv_buf_free(&txt);
    return r;
}

static unsigned parse_stop(const cJSON *root, oai_req *o, srv_buf *out) {
    const cJSON *st = field(root, "stop");
    if (!st)
        return 0;
    const cJSON *one = cJSON_IsString(st) ? st : NULL;
    if (!one && !cJSON_IsArray(st))
        return BAD("stop", "stop must be a string or an array of strings");
    if (!one && cJSON_GetArraySize(st) > KVL_MAX_STOPS)
        return BAD("stop", "stop: %d strings > %d", cJSON_GetArraySize(st), KVL_MAX_STOPS);
    int i = 0;
    for (const cJSON *x = one ? one : st->child; x; x = one ? NULL : x->next, i++) {
        if (!cJSON_IsString(x))
            return BAD("stop", "stop[%d] must be a string", i);
        size_t l = strlen(x->valuestring);
        if (l < 1 || l > KVL_MAX_STOP_LEN)
            return BAD("stop", "stop[%d] is %zu bytes, not in [1, %d]", i, l, KVL_MAX_STOP_LEN);
        if (!(o->stop[o->n_stop] = strdup(x->valuestring)))
            return oai_error(out, "server_error", NULL, NULL, "out of memory"), 500;
        o->n_stop++;
    }
    return 0;
}

/* Fields kvllm cannot honour: refused unless at their neutral value. */
static unsigned refuse_unsupported(const cJSON *root, srv_buf *out) {
    const cJSON *f;
    if ((f = field(root, "echo")) && !cJSON_IsFalse(f))
        return BAD("echo", "echo is not supported");
    if ((f = field(root, "suffix")))
        return BAD("suffix", "suffix is not supported");
    if ((f = field(root, "logit_bias")) && !(cJSON_IsObject(f) && !f->child))
        return BAD("logit_bias", "logit_bias is not supported");
    if ((f = field(root, "best_of")) && !(cJSON_IsNumber(f) && f->valuedouble == 1))
        return BAD("best_of", "best_of is not supported (only 1)");
    if ((f = field(root, "tools")) && !(cJSON_IsArray(f) && !f->child))
        return BAD("tools", "tools are not supported");
    return 0;
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h ? h : 1;
}

/* The kvllm extension "kv_policy": {"kind": "full" | "window" | "sinks" |
 * "h2o" | "snapkv", "budget_tokens": N, "sinks": S, "heavy": F (h2o, in
 * (0, 1)), "score": "mean" | "sum", "mass_stride": K (h2o), "obs_window":
 * W (snapkv, in [1, context]), "pool": P (snapkv, odd)}; 400 naming the
 * nested field and its range. The engine checks the budget's bounds
 * against the block size (and snapkv's window) at submit. */
static unsigned parse_kv_policy(const kvl_server *s, const cJSON *root, oai_req *o, srv_buf *out) {
    const cJSON *kp = field(root, "kv_policy");
    if (!kp)
        return 0;
    if (!cJSON_IsObject(kp))
        return BAD("kv_policy", "kv_policy must be an object: {\"kind\": \"window\", "
                                "\"sinks\", \"h2o\" or \"snapkv\", \"budget_tokens\": N, ...}");
    const cJSON *kind = field(kp, "kind");
    kvl_kv_policy_kind k = KVL_KV_POLICY_FULL;
    if (!kind || !cJSON_IsString(kind) || !kvl_kv_policy_parse(kind->valuestring, &k))
        return BAD("kv_policy.kind", "kv_policy.kind must be \"full\", \"window\", \"sinks\", "
                                     "\"h2o\" or \"snapkv\"");
    o->kv_policy.kind = k;
    long long iv;
    unsigned r = get_int(kp, "budget_tokens", 1, s->cfg.max_ctx, &iv, out);
    if (r > 1 || (r == 1 && k != KVL_KV_POLICY_FULL))
        return BAD("kv_policy.budget_tokens",
                   "kv_policy.budget_tokens must be an integer in [1, %d]", s->cfg.max_ctx);
    if (r == 0)
        o->kv_policy.budget_tokens = (int32_t)iv;
    if ((r = get_int(kp, "sinks", 0, s->cfg.max_ctx, &iv, out)) > 1)
        return BAD("kv_policy.sinks", "kv_policy.sinks must be an integer in [0, %d]",
                   s->cfg.max_ctx);
    if (r == 0)
        o->kv_policy.sinks = (int32_t)iv;
    double dv;
    if ((r = get_num(kp, "heavy", 0, 1, true, &dv, out)) > 1 || (r == 0 && dv >= 1))
        return BAD("kv_policy.heavy", "kv_policy.heavy must be a number in (0, 1)");
    if (r == 0)
        o->kv_policy.heavy = (float)dv;
    if ((r = get_int(kp, "obs_window", 1, s->cfg.max_ctx, &iv, out)) > 1)
        return BAD("kv_policy.obs_window", "kv_policy.obs_window must be an integer in [1, %d]",
                   s->cfg.max_ctx);
    if (r == 0)
        o->kv_policy.obs_window = (int32_t)iv;
    const cJSON *sc = field(kp, "score");
    if (sc && !(cJSON_IsString(sc) &&
                (!strcmp(sc->valuestring, "mean") || !strcmp(sc->valuestring, "sum"))))
        return BAD("kv_policy.score", "kv_policy.score must be \"mean\" or \"sum\"");
    if (sc)
        o->kv_policy.score = !strcmp(sc->valuestring, "sum") ? KVL_KV_SCORE_SUM : KVL_KV_SCORE_MEAN;
    /* the engine checks mass_stride against the block size and pool's
     * oddness (400s naming them) */
    if ((r = get_int(kp, "mass_stride", 1, s->cfg.max_ctx, &iv, out)) > 1)
        return BAD("kv_policy.mass_stride",
                   "kv_policy.mass_stride must be an integer in [1, the block size]");
    if (r == 0)
        o->kv_policy.mass_stride = (int32_t)iv;
    if ((r = get_int(kp, "pool", 1, s->cfg.max_ctx, &iv, out)) > 1)
        return BAD("kv_policy.pool", "kv_policy.pool must be an odd integer in [1, %d]",
                   s->cfg.max_ctx);
    if (r == 0)
        o->kv_policy.pool = (int32_t)iv;
    return 0;
}

unsigned oai_parse(kvl_server *s, bool chat, const char *body, size_t n, oai_req *o, srv_buf *out) {
    memset(o, 0, sizeof *o);
    o->chat = chat;
    cJSON *root = NULL;
    unsigned r = parse_body(body, n, &root, out);
    if (r)
        return r;
#define CHECK(x)                                                                                   \
    do {                                                                                           \
        unsigned _r = (x);                                                                         \
        if (_r > 1) {                                                                              \
            r = _r;                                                                                \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
    const cJSON *model = field(root, "model");
    if (model && !cJSON_IsString(model)) {
        r = BAD("model", "model must be a string");
        goto done;
    }
    if (model && strcmp(model->valuestring, s->model_id)) {
        r = (oai_error(
                 out, "invalid_request_error", "model", "model_not_found",
                 "model '%.200s' is not served here; this server serves '%s' (GET /v1/models)",
                 model->valuestring, s->model_id),
             400);
        goto done;
    }
    CHECK(refuse_unsupported(root, out));
    long long iv;
    double dv;
    bool bv;
    int32_t max_n = s->cfg.max_seqs < KVL_MAX_SAMPLES ? s->cfg.max_seqs : KVL_MAX_SAMPLES;
    o->n = 1;
    if (!(r = get_int(root, "n", 1, max_n, &iv, out)))
        o->n = (int32_t)iv;
    CHECK(r);
    CHECK(parse_kv_policy(s, root, o, out));
    /* an evicting policy's cache holds its budget: the output may pass the context */
    double max_out =
        o->kv_policy.kind != KVL_KV_POLICY_FULL ? KVL_MAX_STREAM_TOKENS : s->cfg.max_ctx;
    o->max_tokens = 0;
    if (!(r = get_int(root, "max_tokens", 1, max_out, &iv, out)))
        o->max_tokens = (int32_t)iv;
    CHECK(r);
    if (!(r = get_int(root, "max_completion_tokens", 1, max_out, &iv, out)))
        o->max_tokens = (int32_t)iv;
    CHECK(r);
    o->temperature = 1.0f;
    if (!(r = get_num(root, "temperature", 0, 2, false, &dv, out)))
        o->temperature = (float)dv;
    CHECK(r);
    o->top_p = 1.0f;
    if (!(r = get_num(root, "top_p", 0, 1, true, &dv, out)))
        o->top_p = (float)dv;
    CHECK(r);
    if (!(r = get_num(root, "min_p", 0, 1, false, &dv, out)))
        o->min_p = (float)dv;
    CHECK(r);
    if (!(r = get_int(root, "top_k", -1, (double)s->mi.n_vocab, &iv, out)))
        o->top_k = iv < 0 ? 0 : (int32_t)iv;
    CHECK(r);
    if (!(r = get_int(root, "seed", -9007199254740991.0, 9007199254740991.0, &iv, out)))
        o->seed = (uint64_t)iv;
    else
        o->seed = atomic_fetch_add(&s->counter, 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t)time(NULL);
    CHECK(r);
    if (!(r = get_int(root, "priority", INT32_MIN, INT32_MAX, &iv, out)))
        o->priority = (int32_t)iv;
    CHECK(r);
    if (!(r = get_bool(root, "stream", &bv, out)))
        o->stream = bv;
    CHECK(r);
    if (!(r = get_bool(root, "ignore_eos", &bv, out))) /* vLLM's extension */
        o->ignore_eos = bv;
    CHECK(r);
    const cJSON *so = field(root, "stream_options");
    if (so) {
        if (!cJSON_IsObject(so)) {
            r = BAD("stream_options", "stream_options must be an object");
            goto done;
        }
        if (!(r = get_bool(so, "include_usage", &bv, out)))
            o->include_usage = bv;
        if (r > 1) { /* name the nested field */
            r = BAD("stream_options.include_usage", "stream_options.include_usage must be true "
                                                    "or false");
            goto done;
        }
    }
    if (chat) {
        if (!(r = get_bool(root, "logprobs", &bv, out)))
            o->logprobs = bv;
        CHECK(r);
        if (!(r = get_int(root, "top_logprobs", 0, KVL_MAX_TOP_LOGPROBS, &iv, out))) {
            if (iv > 0 && !o->logprobs) {
                r = BAD("top_logprobs", "top_logprobs needs logprobs: true");
                goto done;
            }
            o->top_logprobs = (int32_t)iv;
        }
        CHECK(r);
    } else {
        if (!(r = get_int(root, "logprobs", 0, 5, &iv, out))) {
            o->logprobs = true;
            o->top_logprobs = (int32_t)iv;
        }
        CHECK(r);
    }
    if (!(r = get_num(root, "presence_penalty", -2, 2, false, &dv, out)))
        o->presence_penalty = (float)dv;
    CHECK(r);
    if (!(r = get_num(root, "frequency_penalty", -2, 2, false, &dv, out)))
        o->frequency_penalty = (float)dv;
    CHECK(r);
    const cJSON *salt = field(root, "cache_salt"); /* prefix-cache hits stay within a salt */
    if (salt && (!cJSON_IsString(salt) || strlen(salt->valuestring) >= sizeof o->cache_salt)) {
        r = BAD("cache_salt", "cache_salt must be a string of at most %zu bytes",
                sizeof o->cache_salt - 1);
        goto done;
    }
    if (salt) {
        snprintf(o->cache_salt, sizeof o->cache_salt, "%s", salt->valuestring);
        o->has_salt = true;
    }
    const cJSON *user = field(root, "user");
    if (user && !cJSON_IsString(user)) {
        r = BAD("user", "user must be a string");
        goto done;
    }
    if (user && user->valuestring[0]) {
        snprintf(o->user, sizeof o->user, "%s", user->valuestring);
        o->session = fnv1a(user->valuestring);
    }
    if (!(r = get_int(root, "session", 1, 9007199254740991.0, &iv, out)))
        o->session = (uint64_t)iv;
    CHECK(r);
    CHECK(parse_stop(root, o, out));
    CHECK(chat ? parse_messages(s, root, o, out) : parse_prompt(s, root, o, out));
    if ((int64_t)o->n_toks >= s->cfg.max_ctx) {
        r = BAD(chat ? "messages" : "prompt",
                "the prompt has %zu tokens; the context holds %d "
                "(the prompt and at least 1 new token)",
                o->n_toks, s->cfg.max_ctx);
        goto done;
    }
    if (!o->max_tokens) /* completions: OpenAI's 16; chat: the rest of the context */
        o->max_tokens = chat ? (int32_t)(s->cfg.max_ctx - (int64_t)o->n_toks) : 16;
    r = 200;
done:
    cJSON_Delete(root);
    if (r != 200)
        oai_req_free(o);
    return r;
#undef CHECK
}

void oai_req_free(oai_req *o) {
    for (int32_t i = 0; i < o->n_stop; i++)
        free(o->stop[i]);
    o->n_stop = 0;
    free(o->toks);
    o->toks = NULL;
}

/* Guess the field an engine refusal is about, from its message. */
static const char *refusal_param(const oai_req *o, const char *msg) {
    if (strstr(msg, "max_tokens"))
        return "max_tokens";
    if (strstr(msg, "prompt"))
        return o->chat ? "messages" : "prompt";
    if (strstr(msg, "submit: n "))
        return "n";
    if (strstr(msg, "budget_tokens"))
        return "kv_policy.budget_tokens";
    if (strstr(msg, "heavy"))
        return "kv_policy.heavy";
    if (strstr(msg, "obs_window"))
        return "kv_policy.obs_window";
    if (strstr(msg, "mass_stride"))
        return "kv_policy.mass_stride";
    if (strstr(msg, "pool"))
        return "kv_policy.pool";
    if (strstr(msg, "kv_policy"))
        return "kv_policy";
    if (strstr(msg, "stop"))
        return "stop";
    if (strstr(msg, "temperature"))
        return "temperature";
    if (strstr(msg, "top_p"))
        return "top_p";
    if (strstr(msg, "min_p"))
        return "min_p";
    return NULL;
}

unsigned oai_submit(srv_call *c, struct MHD_Connection *conn, srv_buf *out) {
    kvl_server *s = c->s;
    oai_req *o = &c->o;
    kvl_request_params rp = kvl_request_defaults();
    rp.prompt_tokens = o->toks;
    rp.n_prompt_tokens = o->n_toks;
    rp.max_tokens = o->max_tokens;
    rp.n = o->n;
    rp.temperature = o->temperature;
    rp.top_k = o->top_k;
    rp.top_p = o->top_p;
    rp.min_p = o->min_p;
    rp.repeat_penalty = 1.0f;
    rp.presence_penalty = o->presence_penalty;
    rp.frequency_penalty = o->frequency_penalty;
    rp.top_logprobs = o->top_logprobs;
    rp.seed = o->seed;
    rp.stop = (const char *const *)o->stop;
    rp.n_stop = o->n_stop;
    rp.priority = o->priority;
    rp.session = o->session;
    rp.cache_salt = o->has_salt ? o->cache_salt : NULL;
    rp.ignore_eos = o->ignore_eos;
    rp.kv_policy = o->kv_policy;
    if (!(c->smp = calloc((size_t)o->n, sizeof *c->smp)) || !(c->req = srv_req_new()))
        return oai_error(out, "server_error", NULL, NULL, "out of memory"), 500;
    c->req->conn = conn; /* before the submit: the dispatcher may resume it at once */
    kvl_error err = {0};
    kvl_status st = srv_submit(s, &rp, c->req, &err);
    if (st) {
        pthread_mutex_lock(&s->met.mu);
        if (st == KVL_E_BUSY)
            s->met.rejected_busy++;
        else if (st == KVL_E_LIMIT)
            s->met.rejected_limit++;
        else
            s->met.rejected_invalid++;
        pthread_mutex_unlock(&s->met.mu);
    }
    switch (st) {
    case KVL_OK: break;
    case KVL_E_BUSY:
        return oai_error(out, "rate_limit_error", NULL, "queue_full",
                         "the server is busy: %s; retry later", err.msg),
               429;
    case KVL_E_LIMIT:
    case KVL_E_INVALID:
    case KVL_E_UNSUPPORTED: /* e.g. n 2 with a kv_policy */
        return oai_error(out, "invalid_request_error", refusal_param(o, err.msg), "invalid_value",
                         "%s", err.msg),
               400;
    default: return oai_error(out, "server_error", NULL, NULL, "%s", err.msg), 500;
    }
    srv_session_seen(s, o->session, o->user);
    snprintf(c->id, sizeof c->id, "%s-%llu", o->chat ? "chatcmpl" : "cmpl",
             (unsigned long long)c->req->id);
    c->created = (long long)time(NULL);
    atomic_fetch_add(&s->n_calls, 1);
    c->submitted = true;
    return 200;
}

/* ---- responses ---- */

static const char *reason_str(kvl_finish_reason r) {
    switch (r) {
    case KVL_FINISH_STOP: return "stop";
    case KVL_FINISH_LENGTH: return "length";
    case KVL_FINISH_CANCELLED: return "abort";
    case KVL_FINISH_ERROR: return "error";
    default: return NULL;
    }
}

/* A token's text for logprobs, made valid UTF-8 (a lone byte piece becomes
 * U+FFFD; its bytes are in "bytes"). */
static void token_text(kvl_server *s, int32_t tok, char *buf, size_t cap, unsigned char *raw,
                       size_t *n_raw) {
    size_t len = 0;
    if (kvl_detokenize(s->m, &tok, 1, buf, cap, &len, NULL) != KVL_OK || len >= cap)
        len = 0;
    memcpy(raw, buf, len);
    *n_raw = len;
    buf[len] = '\0';
    if (!utf8_valid(raw, len))
        snprintf(buf, cap, "\xEF\xBF\xBD");
}

/* "token", "logprob" and "bytes" of one chat logprobs entry. */
static bool token_entry(cJSON *e, const char *t, float lp, const unsigned char *raw, size_t nr) {
    cJSON *bytes = NULL;
    bool ok = cJSON_AddStringToObject(e, "token", t) && cJSON_AddNumberToObject(e, "logprob", lp) &&
              (bytes = cJSON_AddArrayToObject(e, "bytes"));
    for (size_t k = 0; ok && k < nr; k++)
        ok = cJSON_AddItemToArray(bytes, cJSON_CreateNumber(raw[k]));
    return ok;
}

/* logprobs JSON for tokens [from, to) of sample sm. */
static cJSON *logprobs_json(srv_call *c, const oai_sample *sm, size_t from, size_t to,
                            size_t text_off) {
    kvl_server *s = c->s;
    cJSON *lp = cJSON_CreateObject();
    if (!lp)
        return NULL;
    bool ok = true;
    if (c->o.chat) {
        cJSON *content = cJSON_AddArrayToObject(lp, "content");
        ok = content != NULL;
        for (size_t i = from; ok && i < to; i++) {
            char t[64];
            unsigned char raw[64];
            size_t nr;
            token_text(s, sm->toks[i], t, sizeof t, raw, &nr);
            cJSON *e = cJSON_CreateObject();
            cJSON *top = NULL;
            ok = e && cJSON_AddItemToArray(content, e) && token_entry(e, t, sm->lps[i], raw, nr) &&
                 (top = cJSON_AddArrayToObject(e, "top_logprobs"));
            for (int32_t j = 0; ok && j < c->o.top_logprobs; j++) {
                const kvl_token_logprob *a = &sm->tops[i * (size_t)c->o.top_logprobs + (size_t)j];
                if (a->token < 0)
                    break;
                token_text(s, a->token, t, sizeof t, raw, &nr);
                cJSON *x = cJSON_CreateObject();
                ok = x && cJSON_AddItemToArray(top, x) && token_entry(x, t, a->logprob, raw, nr);
            }
        }
    } else {
        cJSON *toks = cJSON_AddArrayToObject(lp, "tokens"),
              *lps = cJSON_AddArrayToObject(lp, "token_logprobs"),
              *offs = cJSON_AddArrayToObject(lp, "text_offset");
        cJSON *tops = c->o.top_logprobs ? cJSON_AddArrayToObject(lp, "top_logprobs")
                                        : cJSON_AddNullToObject(lp, "top_logprobs");
        ok = toks && lps && offs && tops;
        size_t off = text_off;
        for (size_t i = from; ok && i < to; i++) {
            char t[64];
            unsigned char raw[64];
            size_t nr;
            token_text(s, sm->toks[i], t, sizeof t, raw, &nr);
            ok = cJSON_AddItemToArray(toks, cJSON_CreateString(t)) &&
                 cJSON_AddItemToArray(lps, cJSON_CreateNumber(sm->lps[i])) &&
                 cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
            off += nr;
            cJSON *alt = c->o.top_logprobs ? cJSON_CreateObject() : NULL;
            if (c->o.top_logprobs) /* {text: logprob}; a text seen twice keeps the first */
                ok = ok && alt && cJSON_AddItemToArray(tops, alt);
            for (int32_t j = 0; ok && j < c->o.top_logprobs; j++) {
                const kvl_token_logprob *a = &sm->tops[i * (size_t)c->o.top_logprobs + (size_t)j];
                if (a->token < 0)
                    break;
                unsigned char r2[64];
                size_t n2;
                token_text(s, a->token, t, sizeof t, r2, &n2);
                if (!cJSON_GetObjectItemCaseSensitive(alt, t))
                    ok = cJSON_AddNumberToObject(alt, t, a->logprob) != NULL;
            }
        }
    }
    if (!ok) {
        cJSON_Delete(lp);
        return NULL;
    }
    return lp;
}

static bool add_usage(cJSON *o, const kvl_usage *u) {
    cJSON *us = cJSON_AddObjectToObject(o, "usage"), *d = NULL, *kp = NULL;
    if (us && u->kv_policy != KVL_KV_POLICY_FULL) /* kvllm extension: what the policy dropped */
        if (!(kp = cJSON_AddObjectToObject(us, "kv_policy")) ||
            !cJSON_AddStringToObject(kp, "kind", kvl_kv_policy_str(u->kv_policy)) ||
            !cJSON_AddNumberToObject(kp, "evicted_blocks", (double)u->evicted_blocks) ||
            !cJSON_AddNumberToObject(kp, "evicted_tokens", (double)u->evicted_tokens))
            return false;
    return us && cJSON_AddNumberToObject(us, "prompt_tokens", (double)u->prompt_tokens) &&
           cJSON_AddNumberToObject(us, "completion_tokens", (double)u->completion_tokens) &&
           cJSON_AddNumberToObject(us, "total_tokens",
                                   (double)(u->prompt_tokens + u->completion_tokens)) &&
           (d = cJSON_AddObjectToObject(us, "prompt_tokens_details")) &&
           cJSON_AddNumberToObject(d, "cached_tokens", (double)u->cached_tokens) &&
           cJSON_AddNumberToObject(d, "cached_tokens_tier", (double)u->cached_tokens_tier);
}

static cJSON *envelope(srv_call *c, const char *object) {
    cJSON *o = cJSON_CreateObject();
    if (o && cJSON_AddStringToObject(o, "id", c->id) &&
        cJSON_AddStringToObject(o, "object", object) &&
        cJSON_AddNumberToObject(o, "created", (double)c->created) &&
        cJSON_AddStringToObject(o, "model", c->s->model_id))
        return o;
    cJSON_Delete(o);
    return NULL;
}

static bool sse(srv_call *c, cJSON *o) {
    char *txt = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    bool ok = txt && srv_buf_printf(&c->out, "data: %s\n\n", txt);
    free(txt);
    return ok;
}

/* One streamed chunk for sample i: text (may be empty), the logprobs of its
 * tokens [lp_from, end), and a finish reason (NULL: none yet). */
static bool stream_chunk(srv_call *c, int32_t i, const char *text, size_t len, size_t lp_from,
                         const char *finish) {
    oai_sample *sm = &c->smp[i];
    bool chat = c->o.chat;
    cJSON *o = envelope(c, chat ? "chat.completion.chunk" : "text_completion"), *arr = NULL,
          *ch = NULL;
    bool ok = o && (arr = cJSON_AddArrayToObject(o, "choices")) && (ch = cJSON_CreateObject()) &&
              cJSON_AddItemToArray(arr, ch) && cJSON_AddNumberToObject(ch, "index", i);
    char *t = malloc(len + 1);
    ok = ok && t;
    if (t) {
        memcpy(t, text, len);
        t[len] = '\0';
    }
    if (ok && chat) {
        cJSON *d = cJSON_AddObjectToObject(ch, "delta");
        ok = d != NULL;
        if (ok && !sm->role_sent) {
            ok = cJSON_AddStringToObject(d, "role", "assistant") != NULL;
            sm->role_sent = true;
        }
        if (ok && (len || !finish))
            ok = cJSON_AddStringToObject(d, "content", t) != NULL;
    } else if (ok) {
        ok = cJSON_AddStringToObject(ch, "text", t) != NULL;
    }
    free(t);
    if (ok && c->o.logprobs && lp_from < sm->n_toks) {
        cJSON *lp = logprobs_json(c, sm, lp_from, sm->n_toks, sm->text.n);
        ok = lp && cJSON_AddItemToObject(ch, "logprobs", lp);
    } else if (ok)
        ok = cJSON_AddNullToObject(ch, "logprobs") != NULL;
    ok = ok && (finish ? cJSON_AddStringToObject(ch, "finish_reason", finish) != NULL
                       : cJSON_AddNullToObject(ch, "finish_reason") != NULL);
    if (!ok) {
        cJSON_Delete(o);
        return false;
    }
    return sse(c, o);
}

/* Keep a TOKEN's id, log-probability and k alternatives (k: the request's
 * top_logprobs; entries the engine did not send stay token -1). */
static bool add_token(oai_sample *sm, const srv_mail *m, int32_t k) {
    if (sm->n_toks == sm->cap_toks) {
        size_t cap = sm->cap_toks ? sm->cap_toks * 2 : 64;
        int32_t *t = realloc(sm->toks, cap * sizeof *t);
        if (!t)
            return false;
        sm->toks = t;
        float *l = realloc(sm->lps, cap * sizeof *l);
        if (!l)
            return false;
        sm->lps = l;
        if (k) {
            kvl_token_logprob *tp = realloc(sm->tops, cap * (size_t)k * sizeof *tp);
            if (!tp)
                return false;
            sm->tops = tp;
        }
        sm->cap_toks = cap;
    }
    sm->toks[sm->n_toks] = m->token;
    sm->lps[sm->n_toks] = m->logprob;
    for (int32_t j = 0; j < k; j++)
        sm->tops[sm->n_toks * (size_t)k + (size_t)j] =
            j < m->n_top ? m->top[j] : (kvl_token_logprob){-1, 0};
    sm->n_toks++;
    return true;
}

/* The end of a stream: error event or per-sample finish chunks (n = 1; n > 1
 * had theirs at SAMPLE_END), the usage chunk, [DONE]. */
static bool stream_end(srv_call *c, const srv_mail *m) {
    bool ok = true;
    if (m->reason == KVL_FINISH_ERROR) {
        srv_buf e = {0};
        ok = oai_error(&e, "server_error", NULL, NULL, "the request failed: %s",
                       m->message ? m->message : kvl_status_str(m->status)) &&
             srv_buf_printf(&c->out, "data: %s\n\n", e.p);
        srv_buf_free(&e);
    } else {
        for (int32_t i = 0; ok && i < c->o.n; i++) {
            oai_sample *sm = &c->smp[i];
            if (sm->reason != KVL_FINISH_NONE)
                continue;
            sm->reason = m->reason;
            size_t lp_from = sm->n_toks;
            ok = stream_chunk(c, i, i == 0 && m->text ? m->text : "", i == 0 ? m->text_len : 0,
                              lp_from, reason_str(m->reason));
        }
    }
    if (ok && c->o.include_usage) {
        cJSON *o = envelope(c, c->o.chat ? "chat.completion.chunk" : "text_completion");
        ok = o && cJSON_AddArrayToObject(o, "choices") && add_usage(o, &m->usage);
        if (!ok)
            cJSON_Delete(o);
        ok = ok && sse(c, o);
    }
    ok = ok && srv_buf_str(&c->out, "data: [DONE]\n\n");
    c->stream_done = ok;
    return ok;
}

/* A sample's text as valid UTF-8 while it streams (the engine cuts text
 * between tokens, and a byte-level token can cut a character): the start
 * of a character cut at the end of an event waits in sm->tail for the
 * rest; a byte that cannot start or continue a character becomes U+FFFD;
 * at the sample's end (last) a cut character left over becomes U+FFFD.
 * out gets the clean text; false on OOM. */
static bool utf8_clean(oai_sample *sm, const char *text, size_t n, bool last, srv_buf *out) {
    srv_buf in = {0};
    bool ok = srv_buf_add(&in, sm->tail, sm->n_tail) && srv_buf_add(&in, text, n);
    sm->n_tail = 0;
    const unsigned char *p = (const unsigned char *)in.p;
    for (size_t i = 0, k; ok && i < in.n; i += k) {
        k = utf8_char(p + i, in.n - i);
        if (k == UTF8_MORE && !last) { /* at most 3 bytes */
            sm->n_tail = in.n - i;
            memcpy(sm->tail, p + i, sm->n_tail);
            break;
        }
        if (k == 0 || k == UTF8_MORE) {
            ok = srv_buf_add(out, "\xEF\xBF\xBD", 3);
            k = k ? in.n - i : 1;
        } else
            ok = srv_buf_add(out, p + i, k);
    }
    srv_buf_free(&in);
    return ok;
}

/* One event of sample i, its text (len bytes) already valid UTF-8. */
static bool consume_one(srv_call *c, const srv_mail *m, oai_sample *sm, int32_t i, const char *text,
                        size_t len) {
    size_t lp_from = sm->n_toks;
    if (m->type == KVL_EV_TOKEN && c->o.logprobs && !add_token(sm, m, c->o.top_logprobs))
        return false;
    if (m->type == KVL_EV_FINAL) {
        c->final_seen = true;
        c->reason = m->reason;
        c->status = m->status;
        c->usage = m->usage;
        snprintf(c->message, sizeof c->message, "%s", m->message ? m->message : "");
        if (c->o.stream) {
            srv_mail fin = *m;
            fin.text = (char *)text;
            fin.text_len = (uint32_t)len;
            return stream_end(c, &fin);
        }
        if (c->o.n == 1 && len && !srv_buf_add(&sm->text, text, len))
            return false;
        for (int32_t j = 0; j < c->o.n; j++)
            if (c->smp[j].reason == KVL_FINISH_NONE)
                c->smp[j].reason = m->reason;
        return true;
    }
    if (m->type == KVL_EV_SAMPLE_END)
        sm->reason = m->reason;
    if (c->o.stream) {
        bool any = len || (c->o.logprobs && lp_from < sm->n_toks) || m->type == KVL_EV_SAMPLE_END;
        if (any && !stream_chunk(c, i, text, len, lp_from,
                                 m->type == KVL_EV_SAMPLE_END ? reason_str(m->reason) : NULL))
            return false;
    }
    return !len || srv_buf_add(&sm->text, text, len);
}

bool oai_consume(srv_call *c, const srv_mail *m, size_t n) {
    for (size_t k = 0; k < n; k++, m++) {
        if (c->final_seen)
            continue;
        int32_t i = m->index >= 0 && m->index < c->o.n ? m->index : 0;
        oai_sample *sm = &c->smp[i];
        srv_buf clean = {0};
        bool last = m->type == KVL_EV_SAMPLE_END || m->type == KVL_EV_FINAL;
        bool ok = utf8_clean(sm, m->text ? m->text : "", m->text_len, last, &clean) &&
                  consume_one(c, m, sm, i, clean.p ? clean.p : "", clean.n);
        srv_buf_free(&clean);
        if (!ok)
            return false;
    }
    return true;
}

unsigned oai_final(srv_call *c, srv_buf *out) {
    if (c->reason == KVL_FINISH_ERROR) {
        oai_error(out, "server_error", NULL, NULL, "the request failed: %s",
                  c->message[0] ? c->message : kvl_status_str(c->status));
        return 500;
    }
    bool chat = c->o.chat;
    cJSON *o = envelope(c, chat ? "chat.completion" : "text_completion"), *arr = NULL;
    bool ok = o && (arr = cJSON_AddArrayToObject(o, "choices"));
    for (int32_t i = 0; ok && i < c->o.n; i++) {
        oai_sample *sm = &c->smp[i];
        cJSON *ch = cJSON_CreateObject();
        const char *text = sm->text.p ? sm->text.p : "";
        ok = ch && cJSON_AddItemToArray(arr, ch) && cJSON_AddNumberToObject(ch, "index", i);
        if (ok && chat) {
            cJSON *msg = cJSON_AddObjectToObject(ch, "message");
            ok = msg && cJSON_AddStringToObject(msg, "role", "assistant") &&
                 cJSON_AddStringToObject(msg, "content", text);
        } else if (ok)
            ok = cJSON_AddStringToObject(ch, "text", text) != NULL;
        if (ok && c->o.logprobs) {
            cJSON *lp = logprobs_json(c, sm, 0, sm->n_toks, 0);
            ok = lp && cJSON_AddItemToObject(ch, "logprobs", lp);
        } else if (ok)
            ok = cJSON_AddNullToObject(ch, "logprobs") != NULL;
        const char *fr = reason_str(sm->reason);
        ok = ok && cJSON_AddStringToObject(ch, "finish_reason", fr ? fr : "stop");
    }
    ok = ok && add_usage(o, &c->usage);
    char *txt = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    out->n = 0;
    ok = txt && srv_buf_str(out, txt);
    free(txt);
    if (!ok) {
        oai_error(out, "server_error", NULL, NULL, "out of memory");
        return 500;
    }
    return 200;
}

void oai_call_free(srv_call *c) {
    oai_req_free(&c->o);
    for (int32_t i = 0; c->smp && i < c->o.n; i++) {
        srv_buf_free(&c->smp[i].text);
        free(c->smp[i].toks);
        free(c->smp[i].lps);
        free(c->smp[i].tops);
    }
    free(c->smp);
    srv_buf_free(&c->body);
    srv_buf_free(&c->out);
}

/* ---- models, tokenize, detokenize ---- */

static unsigned print_json(cJSON *o, srv_buf *out) {
    char *txt = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    out->n = 0;
    bool ok = txt && srv_buf_str(out, txt);
    free(txt);
    if (!ok) {
        oai_error(out, "server_error", NULL, NULL, "out of memory");
        return 500;
    }
    return 200;
}

unsigned oai_models(kvl_server *s, srv_buf *out) {
    cJSON *o = cJSON_CreateObject(), *arr = NULL, *m = NULL;
    bool ok = o && cJSON_AddStringToObject(o, "object", "list") &&
              (arr = cJSON_AddArrayToObject(o, "data")) && (m = cJSON_CreateObject()) &&
              cJSON_AddItemToArray(arr, m) && cJSON_AddStringToObject(m, "id", s->model_id) &&
              cJSON_AddStringToObject(m, "object", "model") &&
              cJSON_AddNumberToObject(m, "created", (double)(long long)s->t_start) &&
              cJSON_AddStringToObject(m, "owned_by", "kvllm") &&
              cJSON_AddNumberToObject(m, "max_model_len", s->cfg.max_ctx);
    if (!ok) {
        cJSON_Delete(o);
        o = NULL;
    }
    return print_json(o, out);
}

unsigned oai_tokenize(kvl_server *s, const char *body, size_t n, srv_buf *out) {
    cJSON *root = NULL;
    unsigned r = parse_body(body, n, &root, out);
    if (r)
        return r;
    const cJSON *p = field(root, "prompt");
    if (!p)
        p = field(root, "text");
    bool bos = true;
    if (!cJSON_IsString(p)) {
        cJSON_Delete(root);
        return BAD("prompt", "prompt must be a string");
    }
    if ((r = get_bool(root, "add_special_tokens", &bos, out)) > 1) {
        cJSON_Delete(root);
        return r;
    }
    size_t len = strlen(p->valuestring), nt = 0;
    int32_t *t = malloc((len + 3) * sizeof *t);
    kvl_error err = {0};
    if (!t || kvl_tokenize(s->m, p->valuestring, len, bos, t, len + 3, &nt, &err)) {
        free(t);
        cJSON_Delete(root);
        return t ? BAD("prompt", "prompt: %s", err.msg)
                 : (oai_error(out, "server_error", NULL, NULL, "out of memory"), 500);
    }
    cJSON_Delete(root);
    cJSON *o = cJSON_CreateObject(), *arr = NULL;
    bool ok = o && (arr = cJSON_AddArrayToObject(o, "tokens")) &&
              cJSON_AddNumberToObject(o, "count", (double)nt) &&
              cJSON_AddNumberToObject(o, "max_model_len", s->cfg.max_ctx);
    for (size_t i = 0; ok && i < nt; i++)
        ok = cJSON_AddItemToArray(arr, cJSON_CreateNumber(t[i]));
    free(t);
    if (!ok) {
        cJSON_Delete(o);
        o = NULL;
    }
    return print_json(o, out);
}

unsigned oai_detokenize(kvl_server *s, const char *body, size_t n, srv_buf *out) {
    cJSON *root = NULL;
    unsigned r = parse_body(body, n, &root, out);
    if (r)
        return r;
    const cJSON *tk = field(root, "tokens");
    if (!cJSON_IsArray(tk)) {
        cJSON_Delete(root);
        return BAD("tokens", "tokens must be an array of token ids");
    }
    oai_req tmp = {0};
    if (tk->child && (r = add_ids(s, &tmp, tk, "tokens", out))) {
        cJSON_Delete(root);
        free(tmp.toks);
        return r;
    }
    cJSON_Delete(root);
    size_t len = 0;
    kvl_error err = {0};
    char *txt = NULL;
    char probe[1]; /* sizing call: kvl_detokenize(NULL, 0) offsets a null pointer */
    if (kvl_detokenize(s->m, tmp.toks, tmp.n_toks, probe, sizeof probe, &len, &err) ==
        KVL_E_INVALID) {
        free(tmp.toks);
        return BAD("tokens", "tokens: %s", err.msg);
    }
    if (!(txt = malloc(len + 1)) ||
        kvl_detokenize(s->m, tmp.toks, tmp.n_toks, txt, len + 1, &len, &err)) {
        free(tmp.toks);
        free(txt);
        return oai_error(out, "server_error", NULL, NULL, "detokenize: %s",
                         txt ? err.msg : "out of memory"),
               500;
    }
    free(tmp.toks);
    cJSON *o = cJSON_CreateObject();
    if (!utf8_valid((unsigned char *)txt, len)) /* byte tokens cut mid-character */
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)txt[i] >= 0x80)
                txt[i] = '?';
    bool ok = o && cJSON_AddStringToObject(o, "prompt", txt);
    free(txt);
    if (!ok) {
        cJSON_Delete(o);
        o = NULL;
    }
    return print_json(o, out);
}
