/*
 * kvllm chat: an interactive terminal chat over the engine (kvllm.h). Each
 * line read is a user turn; the conversation so far goes through the chat
 * template (the model file's, --chat-template's, or plain for a model file
 * without one) and is submitted as one request of one session, and the
 * answer streams to stdout as its tokens arrive.
 *
 * Multi-turn through the prefix cache: the prompt of turn k+1 starts with
 * the tokens of turn k's prompt and answer, unchanged, so its full blocks
 * are found in the cache and only the new text is computed:
 *
 *   turn k    | prompt k (tokens)            | answer k (sampled tokens) |
 *   turn k+1  | prompt k          | answer k  | rest of the rendered text | answer k+1
 *             '-- cached blocks (block granular) -'-- computed -----------'
 *
 * The rest is what the template renders after the answer (its end-of-turn
 * markup and the new user turn), tokenized on its own, as llama.cpp's chat
 * mode appends a turn. When the rendered text does not start with the
 * previous prompt and answer (a template that trims the answer, or moves
 * the system message as Mistral's does), the whole text is tokenized again
 * and the cache still serves whatever blocks are unchanged.
 *
 * Commands: /stats (the session's turns: prompt, cached and answer tokens,
 * KV blocks and bytes; docs/chat.md), /reset (a new conversation, the same
 * system message), /quit. End of input or Ctrl-C at the prompt exits 0;
 * Ctrl-C while an answer streams cancels that answer, which is kept as far
 * as it came.
 *
 * Exit status: 0 at the end of input or on Ctrl-C, 1 when the model or the
 * engine could not start, 2 on a usage error.
 */
#include "cli/cli.h"
#include "cli/common.h"
#include "model/model.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct chat_opts {
    kvl_cli_common com; /* -m, --tokenizer, -t, --load, the KV flags */
    const char *system, *tmpl_name;
    long long n_predict, ctx, batch_tokens;
    kvl_sampler_params sp;
    bool no_prefix_cache;
} chat_opts;

#define CHAT_LINE_MAX (1 << 20) /* bytes of one input line */

static volatile sig_atomic_t g_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    g_interrupted = 1;
}

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: kvllm chat [-m MODEL] [--system TEXT] [--chat-template NAME] [flags]\n"
        "\n"
        "An interactive chat on the terminal (docs/chat.md): each line is a user turn, the\n"
        "answer streams back. /stats shows the session's KV footprint and cached tokens turn\n"
        "by turn, /reset starts again, /quit (or end of input, or Ctrl-C at the prompt)\n"
        "ends; Ctrl-C during an answer stops that answer.\n"
        "\n"
        "  -m, --model PATH      GGUF or llama2.c checkpoint (default: shipped stories260K.gguf)\n"
        "      --tokenizer PATH  llama2.c tokenizer (default: beside the model)\n"
        "      --system TEXT     the system message (default: none)\n" KVL_CLI_CHAT_TEMPLATE_USAGE
        "                        (a file without one: plain, with a notice)\n"
        "  -n, --n-predict N     tokens per answer at most, 1..1000000 (default 256; cut to\n"
        "                        what the context leaves)\n"
        "  -c, --ctx N           context of the conversation, at most the model's (default:\n"
        "                        the model's)\n" KVL_CLI_SAMPLER_USAGE
        "  -t, --threads N       worker threads, 1..%d (default: one per core)\n"
        "      --max-batch-tokens N  tokens per step (default 512)\n"
        "      --no-prefix-cache every turn computes its whole prompt (for comparison)\n"
        "  -h, --help\n" KVL_CLI_LOAD_USAGE "\nKV cache:\n",
        KVL_POOL_MAX_THREADS);
    kvl_cli_kv_usage(f);
}

static const char *const value_flags[] = {
    "--system", "-n", "--n-predict", "-c", "--ctx", "--max-batch-tokens", KVL_CLI_SAMPLER_FLAGS,
    NULL};

/* 1 consumed, -1 bad value. */
static int parse_value_flag(chat_opts *o, const char *a, const char *v) {
    int r = kvl_cli_sampler_flag("chat", a, v, &o->sp);
    if (r != 0)
        return r;
    if (!strcmp(a, "--system")) {
        o->system = v;
        return 1;
    }
    bool n = !strcmp(a, "-n") || !strcmp(a, "--n-predict"),
         c = !strcmp(a, "-c") || !strcmp(a, "--ctx");
    long long *dst = n ? &o->n_predict : c ? &o->ctx : &o->batch_tokens;
    long long hi = n ? 1000000 : c ? KVL_MAX_CTX : 65536;
    return kvl_cli_int("chat", a, v, 1, hi, dst) ? 1 : -1;
}

/* 0 parsed, 1 help printed, 2 usage error (message printed). */
static int parse_args(int argc, char **argv, chat_opts *o) {
    const char *cmd = "chat";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--no-prefix-cache")) {
            o->no_prefix_cache = true;
            continue;
        }
        int r = kvl_cli_common_flag(cmd, argc, argv, &i, &o->com);
        if (r == 0)
            r = kvl_cli_chat_template_flag(cmd, argc, argv, &i, &o->tmpl_name);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        if (!kvl_cli_flag_value(cmd, value_flags, "a message is typed after start-up", argc, argv,
                                &i, &v) ||
            parse_value_flag(o, a, v) < 0)
            return 2;
    }
    return 0;
}

/* ---- the conversation ---- */

typedef struct chat {
    const chat_opts *o;
    kvl_model *m;
    kvl_engine *e;
    kvl_chat_params cp;
    int32_t ctx;
    kvl_chat_message *msgs; /* (n_msgs) contents malloc'd; roles static */
    size_t n_msgs, cap_msgs;
    char *hist_text; /* the last turn's rendered prompt and its answer */
    size_t hist_len;
    int32_t *hist; /* (n_hist) their tokens: the prompt's, then the answer's */
    size_t n_hist, cap_hist;
    uint64_t session;
    int32_t turn;
    kvl_session_turn *turns; /* (turn) this session's, from each answer's final usage */
    size_t cap_turns;
} chat;

static bool push_msg(chat *c, const char *role, const char *text, size_t len) {
    if (c->n_msgs == c->cap_msgs) {
        size_t cap = c->cap_msgs ? 2 * c->cap_msgs : 16;
        kvl_chat_message *m = realloc(c->msgs, cap * sizeof *m);
        if (!m)
            return false;
        c->msgs = m;
        c->cap_msgs = cap;
    }
    char *t = malloc(len + 1);
    if (!t)
        return false;
    memcpy(t, text, len);
    t[len] = '\0';
    c->msgs[c->n_msgs++] = (kvl_chat_message){role, t};
    return true;
}

static void pop_msg(chat *c) { free((char *)c->msgs[--c->n_msgs].content); }

/* A new conversation: only the system message stays; a new session. */
static void reset(chat *c) {
    while (c->n_msgs > (c->o->system ? 1u : 0u))
        pop_msg(c);
    free(c->hist_text);
    c->hist_text = NULL;
    c->hist_len = c->n_hist = 0;
    c->session++;
    c->turn = 0;
}

static bool hist_put(chat *c, const int32_t *t, size_t n) {
    if (c->n_hist + n > c->cap_hist) {
        size_t cap = c->cap_hist ? c->cap_hist : 256;
        while (cap < c->n_hist + n)
            cap *= 2;
        int32_t *h = realloc(c->hist, cap * sizeof *h);
        if (!h)
            return false;
        c->hist = h;
        c->cap_hist = cap;
    }
    memcpy(c->hist + c->n_hist, t, n * sizeof *t);
    c->n_hist += n;
    return true;
}

/* Tokenize text (malloc'd into *out); false with a message. */
static bool tokenize(chat *c, const char *text, size_t len, int32_t **out, size_t *n) {
    kvl_error err;
    *out = malloc((2 * len + 3) * sizeof **out);
    if (!*out || kvl_chat_tokenize(c->m, text, len, *out, 2 * len + 3, n, &err)) {
        fprintf(stderr, "kvllm chat: %s\n", *out ? err.msg : "out of memory");
        free(*out);
        return false;
    }
    return true;
}

/* The conversation rendered (malloc'd, *len), or NULL with a message. */
static char *render(chat *c, size_t *len) {
    kvl_error err;
    *len = SIZE_MAX;
    kvl_status st = kvl_chat_apply(&c->cp, c->msgs, c->n_msgs, NULL, 0, len, &err);
    char *text = st == KVL_E_LIMIT && *len != SIZE_MAX ? malloc(*len + 1) : NULL;
    if (!text || kvl_chat_apply(&c->cp, c->msgs, c->n_msgs, text, *len + 1, len, &err)) {
        fprintf(stderr, "kvllm chat: %s\n", text || *len == SIZE_MAX ? err.msg : "out of memory");
        free(text);
        return NULL;
    }
    return text;
}

/* The next prompt: the last turn's tokens and the rest of the rendered text
 * tokenized, when the text continues that turn; else all of it tokenized.
 * Replaces c->hist and c->hist_text (the answer is appended later). */
static bool build_prompt(chat *c) {
    size_t len, n_rest = 0;
    char *text = render(c, &len);
    if (!text)
        return false;
    bool cont = c->hist_text && len >= c->hist_len && !memcmp(text, c->hist_text, c->hist_len);
    size_t from = cont ? c->hist_len : 0;
    int32_t *rest = NULL;
    if (!tokenize(c, text + from, len - from, &rest, &n_rest)) {
        free(text);
        return false;
    }
    if (!cont)
        c->n_hist = 0;
    bool ok = hist_put(c, rest, n_rest);
    free(rest);
    free(c->hist_text);
    c->hist_text = text;
    c->hist_len = len;
    if (!ok)
        fprintf(stderr, "kvllm chat: out of memory\n");
    return ok;
}

/* What one answer brought back. */
typedef struct answer {
    char *text;
    size_t len, cap;
    kvl_event final;
    bool done, oom;
} answer;

static void on_event(chat *c, answer *a, const kvl_event *ev) {
    if (ev->type == KVL_EV_FINAL) {
        a->final = *ev;
        a->done = true;
    }
    if (ev->type == KVL_EV_TOKEN && !hist_put(c, &ev->token, 1))
        a->oom = true;
    if (!ev->text_len)
        return;
    fwrite(ev->text, 1, ev->text_len, stdout);
    fflush(stdout);
    if (a->len + ev->text_len + 1 > a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 1024;
        while (cap < a->len + ev->text_len + 1)
            cap *= 2;
        char *t = realloc(a->text, cap);
        if (!t) {
            a->oom = true;
            return;
        }
        a->text = t;
        a->cap = cap;
    }
    memcpy(a->text + a->len, ev->text, ev->text_len);
    a->len += ev->text_len;
}

/* Step and stream until the request's final event; Ctrl-C cancels it. */
static bool drive(chat *c, uint64_t id, answer *a) {
    kvl_event ev[32];
    kvl_error err;
    bool cancelled = false;
    while (!a->done) {
        if (g_interrupted && !cancelled) {
            kvl_engine_cancel(c->e, id);
            cancelled = true;
            g_interrupted = 0;
        }
        if (kvl_engine_step(c->e, NULL, &err)) {
            fprintf(stderr, "\nkvllm chat: %s\n", err.msg);
            return false;
        }
        int n;
        while ((n = kvl_engine_poll(c->e, ev, 32, 0)) > 0)
            for (int i = 0; i < n; i++)
                on_event(c, a, &ev[i]);
    }
    return true;
}

static kvl_status submit(chat *c, uint64_t *id, kvl_error *err) {
    kvl_request_params rp = kvl_request_defaults();
    rp.prompt_tokens = c->hist;
    rp.n_prompt_tokens = c->n_hist;
    long long room = (long long)c->ctx - (long long)c->n_hist;
    rp.max_tokens = (int32_t)(c->o->n_predict < room ? c->o->n_predict : room);
    rp.temperature = c->o->sp.temperature;
    rp.top_k = c->o->sp.top_k;
    rp.top_p = c->o->sp.top_p;
    rp.min_p = c->o->sp.min_p;
    rp.repeat_penalty = c->o->sp.repeat_penalty;
    rp.repeat_last_n = c->o->sp.repeat_last_n;
    rp.presence_penalty = c->o->sp.presence_penalty;
    rp.frequency_penalty = c->o->sp.frequency_penalty;
    rp.seed = c->o->sp.seed + (uint64_t)c->turn;
    rp.session = c->session;
    return kvl_engine_submit(c->e, &rp, id, err);
}

/* Drop the user message just added; the next turn tokenizes its whole
 * text again (the cache still serves what is unchanged). */
static void forget_turn(chat *c) {
    pop_msg(c);
    free(c->hist_text);
    c->hist_text = NULL;
    c->hist_len = c->n_hist = 0;
}

/* Keep the answer in the conversation and in the history text. */
static bool keep_answer(chat *c, const answer *a) {
    const char *t = a->text ? a->text : "";
    char *h = realloc(c->hist_text, c->hist_len + a->len + 1);
    if (!h || !push_msg(c, "assistant", t, a->len)) {
        if (h)
            c->hist_text = h;
        return false;
    }
    memcpy(h + c->hist_len, t, a->len);
    c->hist_text = h;
    c->hist_len += a->len;
    const kvl_usage *u = &a->final.usage;
    if ((size_t)c->turn == c->cap_turns) {
        size_t cap = c->cap_turns ? 2 * c->cap_turns : 16;
        kvl_session_turn *tt = realloc(c->turns, cap * sizeof *tt);
        if (!tt)
            return false;
        c->turns = tt;
        c->cap_turns = cap;
    }
    c->turns[c->turn] = (kvl_session_turn){.request_id = a->final.id,
                                           .prompt_tokens = u->prompt_tokens,
                                           .completion_tokens = u->completion_tokens,
                                           .cached_tokens = u->cached_tokens,
                                           .reason = a->final.reason};
    c->turn++;
    fprintf(stderr,
            "[turn %d: %lld prompt tokens, %lld cached; %lld answer tokens; first token after "
            "%.3f s%s]\n",
            c->turn, (long long)u->prompt_tokens, (long long)u->cached_tokens,
            (long long)u->completion_tokens, u->ttft_s,
            a->final.reason == KVL_FINISH_CANCELLED ? "; stopped" : "");
    return true;
}

/* One user turn: prompt, stream the answer, keep it in the conversation.
 * false only when the engine cannot go on. */
static bool user_turn(chat *c, const char *line, size_t len) {
    if (!push_msg(c, "user", line, len)) {
        fprintf(stderr, "kvllm chat: out of memory\n");
        return false;
    }
    uint64_t id;
    kvl_error err;
    if (!build_prompt(c)) {
        forget_turn(c);
        return true;
    }
    if ((long long)c->n_hist >= c->ctx) {
        fprintf(stderr,
                "kvllm chat: the conversation is %zu tokens; the context holds %d: /reset "
                "starts again\n",
                c->n_hist, (int)c->ctx);
        forget_turn(c);
        return true;
    }
    if (submit(c, &id, &err)) {
        fprintf(stderr, "kvllm chat: %s\n", err.msg);
        forget_turn(c);
        return true;
    }
    answer a = {0};
    bool ok = drive(c, id, &a);
    printf("\n");
    fflush(stdout);
    if (ok && a.final.reason == KVL_FINISH_ERROR)
        fprintf(stderr, "kvllm chat: the answer failed: %s\n", a.final.message);
    if (ok && (a.final.reason == KVL_FINISH_ERROR || a.oom || !keep_answer(c, &a))) {
        if (a.oom)
            fprintf(stderr, "kvllm chat: out of memory\n");
        forget_turn(c);
    }
    free(a.text);
    return ok;
}

/* /stats: the session's turns; prompt, cached and answer tokens from each
 * answer's usage, the KV it held when it ended from the engine's ledger
 * (which keeps the newest KVL_SESSION_TURNS). */
static void print_stats(chat *c) {
    kvl_session_info si = {0};
    kvl_engine_config cfg;
    kvl_engine_stats st;
    kvl_engine_get_config(c->e, &cfg);
    kvl_engine_get_stats(c->e, &st);
    if (c->turn == 0 || kvl_engine_session_info(c->e, c->session, &si)) {
        printf("session %llu: no turns yet\n", (unsigned long long)c->session);
        return;
    }
    printf("session %llu: %d turns, %u KV blocks held now; block %d positions, %zu bytes per "
           "token\n",
           (unsigned long long)c->session, (int)c->turn, si.n_blocks, cfg.block_size,
           cfg.bytes_per_token);
    printf("turn  prompt  cached  answer  blocks  kv_bytes\n");
    for (int32_t i = 0; i < c->turn; i++) {
        const kvl_session_turn *t = &c->turns[i], *k = NULL;
        for (int32_t j = 0; j < si.n_turns && !k; j++)
            k = si.turns[j].request_id == t->request_id ? &si.turns[j] : NULL;
        printf("%4d  %6lld  %6lld  %6lld", i + 1, (long long)t->prompt_tokens,
               (long long)t->cached_tokens, (long long)t->completion_tokens);
        if (k)
            printf("  %6u  %8zu\n", k->n_blocks, k->kv_bytes);
        else
            printf("       -         -\n");
    }
    printf("prefix cache: %lld of %lld prompt tokens served from cached blocks (%.3f s of "
           "prefill saved)\n",
           (long long)st.prefix_hit_tokens, (long long)st.prefix_lookup_tokens, st.prefill_s_saved);
    fflush(stdout);
}

/* One line from stdin without its newline (malloc'd by getline into *buf),
 * or -1 at the end of input or on Ctrl-C. */
static ssize_t read_line(char **buf, size_t *cap, bool tty) {
    if (tty) {
        printf("> ");
        fflush(stdout);
    }
    g_interrupted = 0;
    errno = 0;
    ssize_t n = getline(buf, cap, stdin);
    if (n < 0)
        return -1;
    while (n > 0 && ((*buf)[n - 1] == '\n' || (*buf)[n - 1] == '\r'))
        (*buf)[--n] = '\0';
    return n;
}

/* The loop: lines until the end of input, /quit or Ctrl-C at the prompt. */
static int converse(chat *c) {
    bool tty = isatty(STDIN_FILENO);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int rc = 0;
    while ((n = read_line(&line, &cap, tty)) >= 0) {
        if (n == 0)
            continue;
        if (n > CHAT_LINE_MAX) {
            fprintf(stderr, "kvllm chat: a line of %zd bytes; at most %d\n", n, CHAT_LINE_MAX);
            continue;
        }
        if (!strcmp(line, "/quit") || !strcmp(line, "/exit"))
            break;
        if (!strcmp(line, "/stats")) {
            print_stats(c);
        } else if (!strcmp(line, "/reset")) {
            reset(c);
            printf("(a new conversation: session %llu)\n", (unsigned long long)c->session);
        } else if (line[0] == '/' && !strchr(line, ' ')) {
            fprintf(stderr, "kvllm chat: '%s': the commands are /stats, /reset and /quit\n", line);
        } else if (!user_turn(c, line, (size_t)n)) {
            rc = 1;
            break;
        }
    }
    if (tty && n < 0)
        printf("\n");
    free(line);
    return rc;
}

/* The template: --chat-template's, the file's, or plain when the file has
 * none (a base model: the text continues). false with a message when the
 * file's template is not recognised. */
static bool choose_template(chat *c) {
    kvl_error err;
    kvl_status st = kvl_chat_params_for_model(c->m, c->o->tmpl_name, &c->cp, &err);
    if (st == KVL_E_NOT_FOUND) {
        fprintf(stderr, "kvllm chat: %s; using plain\n", err.msg);
        st = kvl_chat_params_for_model(c->m, "plain", &c->cp, &err);
    }
    if (st)
        fprintf(stderr, "kvllm chat: %s\n", err.msg);
    return st == KVL_OK;
}

static kvl_engine_params engine_params(const chat_opts *o, int32_t ctx) {
    kvl_engine_params ep = kvl_engine_defaults();
    kvl_cli_engine_kv(&o->com, &ep);
    ep.max_ctx = ctx;
    ep.max_seqs = 1; /* one conversation: its earlier turns stay cached in the pool */
    ep.max_batch_tokens = (int32_t)(o->batch_tokens ? o->batch_tokens : 512);
    ep.prefix_cache = !o->no_prefix_cache;
    return ep;
}

/* Load, start, converse, free. Returns the exit status. */
static int run_chat(const chat_opts *o) {
    chat c = {.o = o, .session = 1};
    kvl_error err;
    kvl_model_params mp = {.tokenizer_path = o->com.tokenizer, .load = o->com.load};
    if (kvl_model_load(o->com.model, &mp, &c.m, &err)) {
        fprintf(stderr, "kvllm chat: %s\n", err.msg);
        return 1;
    }
    int rc = 2;
    kvl_model_info mi;
    kvl_model_get_info(c.m, &mi);
    if (o->ctx > mi.ctx_len) {
        fprintf(stderr, "kvllm chat: --ctx: %lld is larger than the model's context %lld\n", o->ctx,
                (long long)mi.ctx_len);
        goto done;
    }
    c.ctx = (int32_t)(o->ctx ? o->ctx : mi.ctx_len);
    if (!choose_template(&c))
        goto done;
    kvl_engine_params ep = engine_params(o, c.ctx);
    if (kvl_engine_init(c.m, &ep, &c.e, &err)) {
        fprintf(stderr, "kvllm chat: %s\n", err.msg);
        rc = err.status == KVL_E_NO_KV || err.status == KVL_E_INVALID ? 2 : 1;
        goto done;
    }
    if (o->system && !push_msg(&c, "system", o->system, strlen(o->system))) {
        rc = 1;
        goto done;
    }
    fprintf(stderr,
            "kvllm chat: model %s, template %s, context %d%s; /stats, /reset, /quit; Ctrl-D "
            "or Ctrl-C at the prompt ends\n",
            mi.name, kvl_chat_template_name(c.cp.tmpl), (int)c.ctx,
            o->no_prefix_cache ? ", no prefix cache" : "");
    rc = converse(&c);
done:
    while (c.n_msgs)
        pop_msg(&c);
    free(c.msgs);
    free(c.hist);
    free(c.hist_text);
    free(c.turns);
    kvl_engine_free(c.e);
    kvl_model_free(c.m);
    return rc;
}

int kvl_cli_chat(int argc, char **argv) {
    chat_opts o = {.n_predict = 256, .sp = kvl_sampler_defaults()};
    kvl_cli_common_defaults(&o.com);
    int pr = parse_args(argc, argv, &o);
    if (pr)
        return pr == 1 ? 0 : 2;
    if (!(o.com.model = kvl_cli_model_path("chat", &o.com)))
        return 2;
    /* no SA_RESTART: Ctrl-C at the prompt ends the blocked read */
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    return run_chat(&o);
}
