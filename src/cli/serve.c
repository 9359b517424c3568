/*
 * kvllm serve: the OpenAI-compatible HTTP server (src/server/, docs/server.md)
 * as a subcommand. Parses the flags, binds the port (every endpoint answers
 * 503 "loading" meanwhile), loads the model, creates the engine, prints the
 * start-up report on stderr, serves until SIGINT or SIGTERM, then shuts
 * down cleanly: stop accepting, let open requests finish for --grace
 * seconds, cancel the rest (each client still gets its final response),
 * exit 0.
 *
 * Exit status: 0 after a clean shutdown, 1 when it could not start (port,
 * model, engine), 2 on a usage error.
 */
#include "cli/cli.h"
#include "cli/common.h"
#include "core/pool.h"
#include "server/server.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct serve_opts {
    kvl_cli_common com; /* -m, --tokenizer, -t, --load, the KV flags */
    kvl_server_params sp;
    long long ctx, max_seqs, batch_tokens, max_queue, max_queue_tokens;
    kvl_preempt_mode preempt;
    uint64_t swap_mem;
    const char *swap_file;
    double grace;
    char model_id[128];
} serve_opts;

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: kvllm serve [-m MODEL] [--host ADDR] [--port N] [flags]\n"
        "\n"
        "An OpenAI-compatible HTTP server (docs/server.md): POST /v1/completions,\n"
        "/v1/chat/completions, /tokenize, /detokenize; GET /v1/models, /health,\n"
        "/metrics (Prometheus), /v1/kv (the KV ledger), /v1/kv/map (every block),\n"
        "/v1/kv/history (the last 10 minutes), /v1/plan?prompt_tokens=N&context=C,\n"
        "and / (a web page: chat, the block map live). SIGINT/SIGTERM shut it down.\n"
        "\n"
        "  -m, --model PATH      GGUF or llama2.c checkpoint (default: shipped stories260K.gguf)\n"
        "      --tokenizer PATH  llama2.c tokenizer (default: beside the model)\n"
        "      --model-name NAME the id clients use (default: the file name without "
        "extension)\n" KVL_CLI_CHAT_TEMPLATE_USAGE
        "      --host ADDR       IPv4 address to listen on (default 127.0.0.1)\n"
        "      --port N          TCP port, 0 = any free one (default 8080)\n"
        "      --api-key KEY     require \"Authorization: Bearer KEY\" on the /v1 endpoints,\n"
        "                        /tokenize and /detokenize (401 otherwise; /health and /metrics\n"
        "                        stay open)\n"
        "      --http-threads N  HTTP threads (epoll, event-driven), 1..64 (default 2)\n"
        "      --max-connections N  open connections, 1..65536 (default 512)\n"
        "      --max-body SIZE   request body limit, 413 beyond (default 1MiB)\n"
        "      --timeout S       inactivity limit per connection (no byte moved), 1..3600 s\n"
        "                        (default 30)\n"
        "      --keepalive-timeout S  idle connection, from accept or the last response to\n"
        "                        the next request line, 1..3600 s (default 10)\n"
        "      --header-timeout S  request line to the end of the headers, 1..3600 s (default 10)\n"
        "      --body-timeout S  end of the headers to the end of the body, 1..3600 s (default "
        "30)\n"
        "      --grace S         at shutdown, seconds open requests may finish before they\n"
        "                        are cancelled, 0..3600 (default 5)\n"
        "  -c, --ctx N           context per sequence, at most the model's (default: the model's)\n"
        "  -t, --threads N       worker threads (default: one per core)\n" KVL_CLI_LOAD_USAGE
            KVL_CLI_CHECK_USAGE "\nScheduling (the engine's; see docs/engine.md):\n"
        "      --max-seqs N      sequences decoding at once, 1..4096 (default 16)\n"
        "      --max-batch-tokens N  tokens per step (default 256)\n"
        "      --max-queue N     waiting requests; beyond it 429 (default 1024)\n"
        "      --max-queue-tokens N  prompt tokens waiting; beyond it 429 (default 1048576)\n"
        "      --preempt MODE    auto (default), recompute or swap\n"
        "      --swap-mem SIZE   swap area for preempted sequences (default 0: none)\n"
        "      --swap-file PATH  back the swap area with a file\n"
        "  -h, --help\n"
        "\nKV cache:\n");
    kvl_cli_kv_usage(f);
}

static const char *const value_flags[] = {"--host",
                                          "--port",
                                          "--http-threads",
                                          "--max-connections",
                                          "--max-body",
                                          "--timeout",
                                          "--keepalive-timeout",
                                          "--header-timeout",
                                          "--body-timeout",
                                          "--grace",
                                          "-c",
                                          "--ctx",
                                          "--max-seqs",
                                          "--max-batch-tokens",
                                          "--max-queue",
                                          "--max-queue-tokens",
                                          "--preempt",
                                          "--swap-mem",
                                          "--swap-file",
                                          "--model-name",
                                          "--api-key",
                                          NULL};

/* 1 consumed, -1 bad value. */
static int parse_value_flag(serve_opts *o, const char *a, const char *v) {
    const char *cmd = "serve";
    long long iv;
    double fv;
    uint64_t bv;
#define INT_FLAG(lo, hi, dst)                                                                      \
    do {                                                                                           \
        if (!kvl_cli_int(cmd, a, v, lo, hi, &iv))                                                  \
            return -1;                                                                             \
        dst = iv;                                                                                  \
    } while (0)
    if (!strcmp(a, "--host"))
        o->sp.host = v;
    else if (!strcmp(a, "--api-key")) {
        if (!*v) {
            fprintf(stderr, "kvllm serve: --api-key: empty\n");
            return -1;
        }
        o->sp.api_key = v;
    } else if (!strcmp(a, "--model-name")) {
        if (!*v || strlen(v) >= sizeof o->model_id) {
            fprintf(stderr, "kvllm serve: --model-name: 1..%zu bytes\n", sizeof o->model_id - 1);
            return -1;
        }
        snprintf(o->model_id, sizeof o->model_id, "%s", v);
    } else if (!strcmp(a, "--port"))
        INT_FLAG(0, 65535, o->sp.port);
    else if (!strcmp(a, "--http-threads"))
        INT_FLAG(1, 64, o->sp.http_threads);
    else if (!strcmp(a, "--max-connections"))
        INT_FLAG(1, 65536, o->sp.max_connections);
    else if (!strcmp(a, "--timeout"))
        INT_FLAG(1, 3600, o->sp.timeout_s);
    else if (!strcmp(a, "--keepalive-timeout"))
        INT_FLAG(1, 3600, o->sp.keepalive_s);
    else if (!strcmp(a, "--header-timeout"))
        INT_FLAG(1, 3600, o->sp.header_s);
    else if (!strcmp(a, "--body-timeout"))
        INT_FLAG(1, 3600, o->sp.body_s);
    else if (!strcmp(a, "--grace")) {
        if (!kvl_cli_float(cmd, a, v, 0, 3600, &fv))
            return -1;
        o->grace = fv;
    } else if (!strcmp(a, "--max-body")) {
        if (!kvl_cli_bytes(cmd, a, v, &bv))
            return -1;
        if (bv < 1024 || bv > (64u << 20)) {
            fprintf(stderr, "kvllm serve: --max-body: %llu outside [1KiB, 64MiB]\n",
                    (unsigned long long)bv);
            return -1;
        }
        o->sp.max_body = (size_t)bv;
    } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
        INT_FLAG(1, KVL_MAX_CTX, o->ctx);
    else if (!strcmp(a, "--max-seqs"))
        INT_FLAG(1, 4096, o->max_seqs);
    else if (!strcmp(a, "--max-batch-tokens"))
        INT_FLAG(1, 65536, o->batch_tokens);
    else if (!strcmp(a, "--max-queue"))
        INT_FLAG(1, 1 << 24, o->max_queue);
    else if (!strcmp(a, "--max-queue-tokens"))
        INT_FLAG(1, 1ll << 40, o->max_queue_tokens);
    else if (!strcmp(a, "--swap-file"))
        o->swap_file = v;
    else if (!strcmp(a, "--swap-mem")) {
        if (!kvl_cli_bytes(cmd, a, v, &o->swap_mem))
            return -1;
    } else if (!strcmp(a, "--preempt")) {
        if (!kvl_preempt_mode_parse(v, &o->preempt)) {
            fprintf(stderr, "kvllm serve: --preempt: '%s' is not auto, recompute or swap\n", v);
            return -1;
        }
    } else
        return 0;
    return 1;
#undef INT_FLAG
}

/* 0 parsed, 1 help printed, 2 usage error (message printed). */
static int parse_args(int argc, char **argv, serve_opts *o) {
    const char *cmd = "serve";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        int r = kvl_cli_common_flag(cmd, argc, argv, &i, &o->com);
        if (r == 0)
            r = kvl_cli_chat_template_flag(cmd, argc, argv, &i, &o->sp.chat_template);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        if (!kvl_cli_flag_value(cmd, value_flags, NULL, argc, argv, &i, &v) ||
            parse_value_flag(o, a, v) <= 0)
            return 2;
    }
    return 0;
}

static kvl_engine_params engine_params(const serve_opts *o) {
    kvl_engine_params ep = kvl_engine_defaults();
    kvl_cli_engine_kv(&o->com, &ep);
    ep.max_ctx = (int32_t)o->ctx;
    if (o->max_seqs)
        ep.max_seqs = (int32_t)o->max_seqs;
    if (o->batch_tokens)
        ep.max_batch_tokens = (int32_t)o->batch_tokens;
    if (o->max_queue)
        ep.max_queue = (int32_t)o->max_queue;
    if (o->max_queue_tokens)
        ep.max_queue_tokens = o->max_queue_tokens;
    ep.preempt = o->preempt;
    ep.swap_mem = o->swap_mem;
    ep.swap_file = o->swap_file;
    ep.prefix_tier = o->com.kvo.prefix_tier;
    return ep;
}

static void report(const serve_opts *o, const kvl_model *m, kvl_engine *e) {
    kvl_model_info mi;
    kvl_engine_config c;
    kvl_model_get_info(m, &mi);
    kvl_engine_get_config(e, &c);
    fprintf(stderr,
            "kvllm serve: model %s (%s, %s weights, %lld layers, %lld/%lld heads, context %lld) "
            "as '%s'\n"
            "kvllm serve: KV %s, %s/%s, block %d, %u blocks = %lld tokens = %lld full-context "
            "sequences of %d (%zu bytes per token, %zu bytes: %s)\n"
            "kvllm serve: up to %d sequences, %d tokens per step, queue %d requests / %lld "
            "tokens, preempt %s, swap %zu bytes, %d threads\n"
            "kvllm serve: connections %d, body %zu bytes, deadlines: keep-alive %d s, headers "
            "%d s, body %d s, inactivity %d s; shutdown grace %g s\n",
            mi.name, mi.container, mi.weight_type, (long long)mi.n_layers, (long long)mi.n_heads,
            (long long)mi.n_kv_heads, (long long)mi.ctx_len, o->model_id,
            c.kv_layout == KVL_KV_LAYOUT_PAGED ? "paged" : "contiguous", c.kv_type_k, c.kv_type_v,
            c.block_size, c.n_blocks, (long long)c.capacity_tokens,
            c.max_ctx ? (long long)(c.capacity_tokens / c.max_ctx) : 0LL, c.max_ctx,
            c.bytes_per_token, c.kv_mem, c.budget_reason, c.max_seqs, c.max_batch_tokens,
            c.max_queue, (long long)c.max_queue_tokens, kvl_preempt_mode_str(c.preempt), c.swap_mem,
            c.n_threads, o->sp.max_connections, o->sp.max_body, o->sp.keepalive_s, o->sp.header_s,
            o->sp.body_s, o->sp.timeout_s, o->grace);
}

/* The id clients name: the file name without directory and extension. */
static void default_model_id(const char *path, char *out, size_t cap) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(out, cap, "%s", b);
    char *dot = strrchr(out, '.');
    if (dot && dot != out)
        *dot = '\0';
}

/* The model loads on its own thread so that SIGINT/SIGTERM stop the server
 * at once even while a large file is still being read: the main thread
 * waits for a signal, and the loader sends SIGUSR1 when it is done. */
typedef struct model_loader {
    const char *path;
    kvl_model_params mp;
    kvl_model *m;
    kvl_error err;
    kvl_status st;
} model_loader;

static void *load_model(void *arg) {
    model_loader *l = arg;
    l->st = kvl_model_load(l->path, &l->mp, &l->m, &l->err);
    kill(getpid(), SIGUSR1);
    return NULL;
}

/* Waits for the model or a stop signal: true with *out when it loaded; false
 * when it failed (message printed, *rc set) or a signal came first (the
 * loader is left to the process's exit; *rc 0). */
static bool await_model(serve_opts *o, const sigset_t *sigs, kvl_model **out, int *rc) {
    static model_loader loader; /* static: a loader left running at a stop stays reachable */
    model_loader *l = &loader;
    pthread_t t;
    l->path = o->com.model;
    l->mp = (kvl_model_params){.tokenizer_path = o->com.tokenizer,
                               .load = o->com.load,
                               .check_tensors = o->com.check_tensors};
    if (pthread_create(&t, NULL, load_model, l)) {
        fprintf(stderr, "kvllm serve: cannot start the loading thread\n");
        return false;
    }
    int sig = 0;
    sigwait(sigs, &sig);
    if (sig != SIGUSR1) { /* stopped while loading: the loader dies with the process */
        pthread_detach(t);
        fprintf(stderr, "kvllm serve: %s while loading: stopped\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
        *rc = 0;
        return false;
    }
    pthread_join(t, NULL);
    bool ok = l->st == KVL_OK;
    if (!ok)
        fprintf(stderr, "kvllm serve: %s\n", l->err.msg);
    *out = l->m;
    return ok;
}

static int serve(serve_opts *o) {
    kvl_error err = {0};
    kvl_server *srv = NULL;
    kvl_model *m = NULL;
    kvl_engine *e = NULL;
    int rc = 1;
    /* every thread inherits this mask; the main thread takes the signals */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGUSR1); /* the model loader's "done" */
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (!o->model_id[0])
        default_model_id(o->com.model, o->model_id, sizeof o->model_id);
    o->sp.model_id = o->model_id;
    if (kvl_server_init(&o->sp, &srv, &err)) {
        fprintf(stderr, "kvllm serve: %s\n", err.msg);
        return err.status == KVL_E_INVALID ? 2 : 1;
    }
    fprintf(stderr,
            "kvllm serve: listening on http://%s:%d; loading %s (/health: 503 until ready)\n",
            o->sp.host, kvl_server_port(srv), o->com.model);
    if (!await_model(o, &sigs, &m, &rc))
        goto done;
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    if (o->ctx > mi.ctx_len) {
        fprintf(stderr, "kvllm serve: --ctx: %lld is larger than the model's context %lld\n",
                o->ctx, (long long)mi.ctx_len);
        rc = 2;
        goto done;
    }
    kvl_engine_params ep = engine_params(o);
    if (kvl_engine_init(m, &ep, &e, &err)) {
        fprintf(stderr, "kvllm serve: %s\n", err.msg);
        rc = err.status == KVL_E_INVALID || err.status == KVL_E_NO_KV ? 2 : 1;
        goto done;
    }
    report(o, m, e);
    if (kvl_server_attach(srv, m, e, &err)) {
        fprintf(stderr, "kvllm serve: %s\n", err.msg);
        goto done;
    }
    kvl_chat_params cp;
    if (kvl_chat_params_for_model(m, o->sp.chat_template, &cp, &err))
        fprintf(stderr, "kvllm serve: %s; /v1/chat/completions answers 400\n", err.msg);
    else
        fprintf(stderr, "kvllm serve: chat template %s (%s)\n", kvl_chat_template_name(cp.tmpl),
                o->sp.chat_template ? "--chat-template" : "the model file's");
    fprintf(stderr, "kvllm serve: ready\n");
    int sig = SIGUSR1;
    while (sig == SIGUSR1)
        sigwait(&sigs, &sig);
    fprintf(stderr, "kvllm serve: %s: shutting down\n", sig == SIGINT ? "SIGINT" : "SIGTERM");
    kvl_server_shutdown(srv, o->grace, stderr);
    fprintf(stderr, "kvllm serve: stopped\n");
    rc = 0;
done:
    kvl_server_free(srv); /* stops the HTTP threads and the engine thread first */
    kvl_engine_free(e);
    kvl_model_free(m);
    return rc;
}

int kvl_cli_serve(int argc, char **argv) {
    serve_opts o = {.sp = kvl_server_defaults(), .grace = 5};
    kvl_cli_common_defaults(&o.com);
    o.com.kvo.tier_ok = true;
    int pr = parse_args(argc, argv, &o);
    if (pr)
        return pr == 1 ? 0 : 2;
    if (!(o.com.model = kvl_cli_model_path("serve", &o.com)))
        return 2;
    return serve(&o);
}
