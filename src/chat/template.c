/*
 * Chat templates: a fixed set of conversation markups, each rendered by C
 * code that reproduces, byte for byte, what the model's published Jinja
 * template renders (docs/chat.md names each source; the expected strings
 * are in tests/test_chat_template.c). A model file's tokenizer.chat_template
 * is only searched for markers (kvl_chat_template_detect), never executed.
 *
 * Rendering writes through a counting writer: every byte is counted, bytes
 * are stored only while they fit, so one pass gives both the text and the
 * length a caller needs. Invalid messages are refused before anything is
 * written (validate()), so a failed call leaves buf as it was.
 *
 * Python's str.strip() (Jinja's trim, Llama 2's .strip()) is reproduced for
 * the whitespace Python knows: ASCII \t \n \v \f \r, space, \x1c-\x1f and the
 * Unicode spaces U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029,
 * U+202F, U+205F and U+3000.
 */
#include "core/core.h"

#include <stdlib.h>
#include <string.h>

typedef enum role { R_SYSTEM, R_USER, R_ASSISTANT } role;

static const char *const k_names[] = {"none",   "llama2", "llama3", "chatml", "mistral",
                                      "zephyr", "phi3",   "gemma",  "plain"};
#define N_NAMES (sizeof k_names / sizeof k_names[0])

const char *kvl_chat_template_name(kvl_chat_template t) {
    return (unsigned)t < N_NAMES ? k_names[t] : "?";
}

kvl_status kvl_chat_template_parse(const char *name, kvl_chat_template *out, kvl_error *err) {
    for (unsigned i = 1; name && i < N_NAMES; i++)
        if (!strcmp(name, k_names[i])) {
            *out = (kvl_chat_template)i;
            return KVL_OK;
        }
    return kvl_errorf(err, KVL_E_INVALID,
                      "chat template '%.64s' is not one of llama2, llama3, chatml, mistral, "
                      "zephyr, phi3, gemma, plain",
                      name ? name : "(null)");
}

kvl_chat_params kvl_chat_defaults(kvl_chat_template tmpl) {
    kvl_chat_params p = {.tmpl = tmpl, .add_generation_prompt = true};
    const char *bos = "<s>", *eos = "</s>";
    if (tmpl == KVL_CHAT_LLAMA3) {
        bos = "<|begin_of_text|>";
        eos = "<|eot_id|>";
    } else if (tmpl == KVL_CHAT_CHATML) {
        bos = "";
        eos = "<|im_end|>";
    } else if (tmpl == KVL_CHAT_PHI3) {
        eos = "<|endoftext|>";
    } else if (tmpl == KVL_CHAT_GEMMA) {
        bos = "<bos>";
        eos = "<eos>";
    }
    snprintf(p.bos_token, sizeof p.bos_token, "%s", bos);
    snprintf(p.eos_token, sizeof p.eos_token, "%s", eos);
    return p;
}

/* ---- detection ---- */

static bool has(const char *s, size_t n, const char *marker) {
    return memmem(s, n, marker, strlen(marker)) != NULL;
}

kvl_chat_template kvl_chat_template_detect(const char *j, size_t n) {
    if (!j || !n)
        return KVL_CHAT_NONE;
    if (has(j, n, "<|start_header_id|>") && has(j, n, "<|end_header_id|>"))
        return KVL_CHAT_LLAMA3;
    if (has(j, n, "<|im_start|>"))
        /* Phi-4 writes <|im_start|>role<|im_sep|>: another markup */
        return has(j, n, "<|im_sep|>") ? KVL_CHAT_NONE : KVL_CHAT_CHATML;
    if (has(j, n, "<start_of_turn>"))
        return KVL_CHAT_GEMMA;
    if (has(j, n, "<|user|>") && has(j, n, "<|assistant|>"))
        return has(j, n, "<|end|>") ? KVL_CHAT_PHI3 : KVL_CHAT_ZEPHYR;
    if (has(j, n, "[INST]"))
        return has(j, n, "<<SYS>>") ? KVL_CHAT_LLAMA2 : KVL_CHAT_MISTRAL;
    return KVL_CHAT_NONE;
}

/* ---- Python's strip() ---- */

/* Bytes of the whitespace code point at s[0..n) (forward), or 0. */
static size_t ws_fwd(const unsigned char *s, size_t n) {
    if (n == 0)
        return 0;
    unsigned c = s[0];
    if (c == ' ' || (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x1f))
        return 1;
    if (c == 0xc2 && n >= 2 && (s[1] == 0x85 || s[1] == 0xa0))
        return 2;
    if (n < 3)
        return 0;
    unsigned cp = ((c & 0x0fu) << 12) | ((s[1] & 0x3fu) << 6) | (s[2] & 0x3fu);
    if ((c & 0xf0) != 0xe0 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80)
        return 0;
    bool ws = cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 ||
              cp == 0x202f || cp == 0x205f || cp == 0x3000;
    return ws ? 3 : 0;
}

/* Bytes of the whitespace code point ending at s[n), or 0. */
static size_t ws_back(const unsigned char *s, size_t n) {
    for (size_t k = 1; k <= 3 && k <= n; k++)
        if (ws_fwd(s + n - k, k) == k)
            return k;
    return 0;
}

typedef struct span {
    const char *p;
    size_t n;
} span;

static span rtrim(span s) {
    size_t k;
    while ((k = ws_back((const unsigned char *)s.p, s.n)))
        s.n -= k;
    return s;
}

static span trim(span s) {
    size_t k;
    while ((k = ws_fwd((const unsigned char *)s.p, s.n))) {
        s.p += k;
        s.n -= k;
    }
    return rtrim(s);
}

/* ---- the counting writer ---- */

typedef struct writer {
    char *buf;
    size_t cap, len;
    bool over; /* passed KVL_CHAT_MAX_BYTES */
} writer;

static void put(writer *w, const char *s, size_t n) {
    if (w->over || n > KVL_CHAT_MAX_BYTES - w->len) {
        w->over = true;
        return;
    }
    if (w->buf && w->len + n <= w->cap)
        memcpy(w->buf + w->len, s, n);
    w->len += n;
}
static void puts_(writer *w, const char *s) { put(w, s, strlen(s)); }
static void put_span(writer *w, span s) { put(w, s.p, s.n); }

/* ---- messages ---- */

typedef struct msg {
    role r;
    span c;
} msg;

static span content(const kvl_chat_message *m) {
    return (span){m->content ? m->content : "", m->content ? strlen(m->content) : 0};
}

static const char *role_name(role r) {
    return r == R_SYSTEM ? "system" : r == R_USER ? "user" : "assistant";
}

/* Roles known, and for the templates that insist, the order: an optional
 * first system message, then user and assistant alternating from user. */
static kvl_status validate(kvl_chat_template t, const kvl_chat_message *m, size_t n, role *roles,
                           kvl_error *err) {
    for (size_t i = 0; i < n; i++) {
        const char *r = m[i].role;
        if (!r)
            return kvl_errorf(err, KVL_E_INVALID, "messages[%zu].role is missing", i);
        if (!strcmp(r, "system") || !strcmp(r, "developer"))
            roles[i] = R_SYSTEM;
        else if (!strcmp(r, "user"))
            roles[i] = R_USER;
        else if (!strcmp(r, "assistant"))
            roles[i] = R_ASSISTANT;
        else
            return kvl_errorf(err, KVL_E_INVALID,
                              "messages[%zu].role '%.32s' is not system, developer, user or "
                              "assistant",
                              i, r);
    }
    if (t != KVL_CHAT_LLAMA2 && t != KVL_CHAT_MISTRAL && t != KVL_CHAT_GEMMA)
        return KVL_OK;
    size_t first = n > 0 && roles[0] == R_SYSTEM ? 1 : 0;
    for (size_t i = first; i < n; i++) {
        role want = (i - first) % 2 == 0 ? R_USER : R_ASSISTANT;
        if (roles[i] != want)
            return kvl_errorf(err, KVL_E_INVALID,
                              "messages[%zu].role is %s; the %s template takes an optional first "
                              "system message, then user and assistant turns alternating from "
                              "user (here: %s)",
                              i, role_name(roles[i]), kvl_chat_template_name(t), role_name(want));
    }
    return KVL_OK;
}

/* ---- the templates (msgs validated; sys: index 0 is a system message) ---- */

/* meta-llama/Llama-2-7b-chat-hf: the system block joins the first user
 * turn, and that joined text is stripped as a whole. */
static void r_llama2(writer *w, const kvl_chat_params *p, const msg *m, size_t n) {
    size_t first = n && m[0].r == R_SYSTEM ? 1 : 0;
    for (size_t i = first; i < n; i++) {
        if (m[i].r == R_USER) {
            puts_(w, p->bos_token);
            puts_(w, "[INST] ");
            if (i == first && first) {
                puts_(w, "<<SYS>>\n");
                put_span(w, m[0].c);
                span u = rtrim(m[i].c);
                puts_(w, u.n ? "\n<</SYS>>\n\n" : "\n<</SYS>>");
                put_span(w, u);
            } else {
                put_span(w, trim(m[i].c));
            }
            puts_(w, " [/INST]");
        } else {
            puts_(w, " ");
            put_span(w, trim(m[i].c));
            puts_(w, " ");
            puts_(w, p->eos_token);
        }
    }
}

/* meta-llama/Meta-Llama-3-8B-Instruct */
static void r_llama3(writer *w, const kvl_chat_params *p, const msg *m, size_t n) {
    puts_(w, p->bos_token);
    for (size_t i = 0; i < n; i++) {
        puts_(w, "<|start_header_id|>");
        puts_(w, role_name(m[i].r));
        puts_(w, "<|end_header_id|>\n\n");
        put_span(w, trim(m[i].c));
        puts_(w, "<|eot_id|>");
    }
    if (p->add_generation_prompt)
        puts_(w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Qwen/Qwen2-7B-Instruct (with a system message; without one Qwen adds its
 * own default system message, pure ChatML does not) */
static void r_chatml(writer *w, const kvl_chat_params *p, const msg *m, size_t n) {
    for (size_t i = 0; i < n; i++) {
        puts_(w, "<|im_start|>");
        puts_(w, role_name(m[i].r));
        puts_(w, "\n");
        put_span(w, m[i].c);
        puts_(w, "<|im_end|>\n");
    }
    if (p->add_generation_prompt)
        puts_(w, "<|im_start|>assistant\n");
}

/* mistralai/Mistral-7B-Instruct-v0.3: the system message goes into the
 * last message when that is a user turn (and is dropped otherwise). */
static void r_mistral(writer *w, const kvl_chat_params *p, const msg *m, size_t n) {
    size_t first = n && m[0].r == R_SYSTEM ? 1 : 0;
    puts_(w, p->bos_token);
    for (size_t i = first; i < n; i++) {
        if (m[i].r == R_USER) {
            puts_(w, "[INST] ");
            if (first && i == n - 1) {
                put_span(w, m[0].c);
                puts_(w, "\n\n");
            }
            put_span(w, m[i].c);
            puts_(w, "[/INST]");
        } else {
            puts_(w, " ");
            put_span(w, trim(m[i].c));
            puts_(w, p->eos_token);
        }
    }
}

/* HuggingFaceH4/zephyr-7b-beta (Jinja with trim_blocks: each message's
 * line keeps its newline) */
static void r_zephyr(writer *w, const kvl_chat_params *p, const msg *m, size_t n) {
    for (size_t i = 0; i < n; i++) {
        puts_(w, m[i].r == R_SYSTEM ? "<|system|>\n"
                 : m[i].r == R_USER ? "<|user|>\n"
                                    : "<|assistant|>\n");
        put_span(w, m[i].c);
        puts_(w, p->eos_token);
        puts_(w, "\n");
    }
    if (n && p->add_generation_prompt)
        puts_(w, "<|assistant|>\n");
}

/* microsoft/Phi-3.5-mini-instruct: an empty system message is skipped;
 * without a generation prompt the text ends with EOS. */
static void r_phi3(writer *w, const kvl_chat_params *p, const msg *m, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (m[i].r == R_SYSTEM && m[i].c.n == 0)
            continue;
        puts_(w, m[i].r == R_SYSTEM ? "<|system|>\n"
                 : m[i].r == R_USER ? "<|user|>\n"
                                    : "<|assistant|>\n");
        put_span(w, m[i].c);
        puts_(w, "<|end|>\n");
    }
    puts_(w, p->add_generation_prompt ? "<|assistant|>\n" : p->eos_token);
}

/* google/gemma-3-1b-it: a system message becomes a prefix of the first
 * turn (Gemma 1 and 2 refuse one; without it they render the same). */
static void r_gemma(writer *w, const kvl_chat_params *p, const msg *m, size_t n) {
    size_t first = n && m[0].r == R_SYSTEM ? 1 : 0;
    puts_(w, p->bos_token);
    for (size_t i = first; i < n; i++) {
        puts_(w, m[i].r == R_USER ? "<start_of_turn>user\n" : "<start_of_turn>model\n");
        if (first && i == first) {
            put_span(w, m[0].c);
            puts_(w, "\n\n");
        }
        put_span(w, trim(m[i].c));
        puts_(w, "<end_of_turn>\n");
    }
    if (p->add_generation_prompt)
        puts_(w, "<start_of_turn>model\n");
}

/* kvllm's own, for models without a template: BOS, each text and "\n". */
static void r_plain(writer *w, const kvl_chat_params *p, const msg *m, size_t n) {
    puts_(w, p->bos_token);
    for (size_t i = 0; i < n; i++) {
        put_span(w, m[i].c);
        puts_(w, "\n");
    }
}

typedef void (*render_fn)(writer *, const kvl_chat_params *, const msg *, size_t);
static const render_fn k_render[] = {NULL,     r_llama2, r_llama3, r_chatml, r_mistral,
                                     r_zephyr, r_phi3,   r_gemma,  r_plain};

kvl_status kvl_chat_apply(const kvl_chat_params *p, const kvl_chat_message *msgs, size_t n,
                          char *buf, size_t cap, size_t *len_out, kvl_error *err) {
    if (!p || (unsigned)p->tmpl >= N_NAMES || p->tmpl == KVL_CHAT_NONE)
        return kvl_errorf(err, KVL_E_INVALID, "chat: no template chosen (tmpl %d)",
                          p ? (int)p->tmpl : -1);
    if (n == 0 || !msgs)
        return kvl_errorf(err, KVL_E_INVALID, "messages: empty (at least one message)");
    if (n > KVL_CHAT_MAX_MESSAGES)
        return kvl_errorf(err, KVL_E_LIMIT, "messages: %zu messages > %d", n,
                          KVL_CHAT_MAX_MESSAGES);
    if (!memchr(p->bos_token, 0, sizeof p->bos_token) ||
        !memchr(p->eos_token, 0, sizeof p->eos_token))
        return kvl_errorf(err, KVL_E_INVALID, "chat: bos_token or eos_token not terminated");
    msg *m = malloc(n * sizeof *m);
    role *roles = malloc(n * sizeof *roles);
    kvl_status st = m && roles ? validate(p->tmpl, msgs, n, roles, err)
                               : kvl_errorf(err, KVL_E_NOMEM, "chat: out of memory");
    for (size_t i = 0; st == KVL_OK && i < n; i++)
        m[i] = (msg){roles[i], content(&msgs[i])};
    writer w = {0};
    if (st == KVL_OK) { /* count first, so that a failure leaves buf untouched */
        k_render[p->tmpl](&w, p, m, n);
        if (w.over)
            st = kvl_errorf(err, KVL_E_LIMIT,
                            "messages: the rendered conversation is over %zu "
                            "bytes",
                            KVL_CHAT_MAX_BYTES);
        else if (len_out)
            *len_out = w.len;
    }
    if (st == KVL_OK && buf && w.len <= cap) {
        writer out = {.buf = buf, .cap = cap};
        k_render[p->tmpl](&out, p, m, n);
        if (out.len < cap)
            buf[out.len] = '\0';
    } else if (st == KVL_OK) {
        st = kvl_errorf(err, KVL_E_LIMIT,
                        "chat: the rendered conversation is %zu bytes; the "
                        "buffer holds %zu",
                        w.len, cap);
    }
    free(m);
    free(roles);
    return st;
}
