/*
 * kvllm run: generate text from a model, a thin front end over the engine
 * API (kvllm.h). The prompt becomes one request with --parallel samples;
 * the engine prefills it (in chunks of --max-batch-tokens), forks the
 * samples onto the prompt's blocks and decodes them in one batch per step.
 * Text streams to stdout (one sample) or prints per sample (--parallel);
 * timing goes to stderr; -o json prints one JSON object instead.
 *
 * Exit status: 0 when the request ended by stop or length, 1 when it ended
 * with an error (or could not start), 2 on a usage error.
 */
#include "cli/cli.h"
#include "cli/common.h"
#include "engine/engine_debug.h"
#include "core/pool.h"
#include "engine/sampler.h"
#include "kv/kv_policy.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct run_opts {
    kvl_cli_common com; /* -m, --tokenizer, -t, --load, the KV flags */
    const char *prompt, *prompt_file, *dump, *out_fmt;
    const char *stops[KVL_MAX_STOPS];
    int32_t n_stops;
    long long n_predict, ctx, parallel, batch_tokens;
    kvl_sampler_params sp;
    kvl_preempt_mode preempt;
    uint64_t swap_mem;
    const char *swap_file;
    bool batch_invariant, no_prefix_cache, ignore_eos;
} run_opts;

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: kvllm run [-m MODEL] [-p PROMPT | -f FILE] [-n N] [flags]\n"
        "\n"
        "  -m, --model PATH      GGUF or llama2.c checkpoint (default: shipped stories260K.gguf)\n"
        "      --tokenizer PATH  llama2.c tokenizer (default: tok<vocab>.bin or tokenizer.bin "
        "beside the model)\n"
        "  -p, --prompt TEXT     prompt (default: empty, i.e. BOS only)\n"
        "  -f, --file FILE       read the prompt from FILE ('-': standard input)\n"
        "  -n, --n-predict N     tokens to generate, 0..1000000 (default 256; cut to what the\n"
        "                        context leaves, with a notice)\n"
        "  -c, --ctx N           context length, at most the model's (default: the "
        "model's)\n" KVL_CLI_SAMPLER_USAGE
        "      --stop TEXT       stop when TEXT is generated (repeatable, up to %d)\n"
        "      --parallel N      N samples from one prompt, 1..%d (default 1)\n"
        "  -t, --threads N       worker threads, 1..%d (default: one per core)\n"
        "  -o, --output FMT      text (default) or json (text, tokens, usage, timings)\n"
        "      --dump-logits F   write every logits row computed (float32, n_vocab each,\n"
        "                        in batch order) to file F, for exact "
        "comparisons\n" KVL_CLI_LOAD_USAGE KVL_CLI_CHECK_USAGE
        "\nScheduling (the engine's; see docs/engine.md):\n"
        "      --max-batch-tokens N  tokens per step: prefill chunks and decodes (default:\n"
        "                        the prompt's length, at least 256, at most 4096)\n"
        "      --preempt MODE    auto (default), recompute or swap, when the KV pool runs dry\n"
        "      --swap-mem SIZE   swap area for preempted sequences (default 0: none)\n"
        "      --swap-file PATH  back the swap area with a file\n"
        "      --no-prefix-cache do not look prompts up in the prefix cache (for comparison)\n"
        "      --batch-invariant every product takes one kernel path whatever the batch\n"
        "                        (a request's greedy tokens never depend on the others;\n"
        "                        slower decode)\n"
        "      --ignore-eos      generate -n tokens whatever the model samples\n"
        "  -h, --help\n"
        "\nKV cache:\n",
        KVL_MAX_STOPS, KVL_MAX_SAMPLES, KVL_POOL_MAX_THREADS);
    kvl_cli_kv_usage(f);
    kvl_cli_kv_policy_usage(f);
    fprintf(f, "                        (run: any but full lets -n pass the context; snapkv\n"
               "                        prefills a longer prompt whole, then cuts it)\n");
}

/* Flags with no value; 1 consumed, 0 not one of them. */
static int parse_value_flag(run_opts *o, const char *a, const char *v) {
    const char *cmd = "run";
    long long iv;
    kvl_sampler_params *sp = &o->sp;
#define INT_FLAG(lo, hi, dst)                                                                      \
    do {                                                                                           \
        if (!kvl_cli_int(cmd, a, v, lo, hi, &iv))                                                  \
            return -1;                                                                             \
        dst = iv;                                                                                  \
    } while (0)
    int sr = kvl_cli_sampler_flag(cmd, a, v, sp);
    if (sr != 0)
        return sr;
    if (!strcmp(a, "--dump-logits"))
        o->dump = v;
    else if (!strcmp(a, "-p") || !strcmp(a, "--prompt"))
        o->prompt = v;
    else if (!strcmp(a, "-f") || !strcmp(a, "--file"))
        o->prompt_file = v;
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
        if (strcmp(v, "text") && strcmp(v, "json")) {
            fprintf(stderr, "kvllm run: %s: '%s' is not text or json\n", a, v);
            return -1;
        }
        o->out_fmt = v;
    } else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict"))
        INT_FLAG(0, 1000000, o->n_predict);
    else if (!strcmp(a, "-c") || !strcmp(a, "--ctx"))
        INT_FLAG(1, KVL_MAX_CTX, o->ctx);
    else if (!strcmp(a, "--parallel"))
        INT_FLAG(1, KVL_MAX_SAMPLES, o->parallel);
    else if (!strcmp(a, "--max-batch-tokens"))
        INT_FLAG(1, 65536, o->batch_tokens);
    else if (!strcmp(a, "--swap-file"))
        o->swap_file = v;
    else if (!strcmp(a, "--swap-mem")) {
        if (!kvl_cli_bytes(cmd, a, v, &o->swap_mem))
            return -1;
    } else if (!strcmp(a, "--preempt")) {
        if (!kvl_preempt_mode_parse(v, &o->preempt)) {
            fprintf(stderr, "kvllm run: --preempt: '%s' is not auto, recompute or swap\n", v);
            return -1;
        }
    } else if (!strcmp(a, "--stop")) {
        if (o->n_stops == KVL_MAX_STOPS || !*v || strlen(v) > KVL_MAX_STOP_LEN) {
            fprintf(stderr, "kvllm run: --stop: at most %d stop strings of 1..%d bytes\n",
                    KVL_MAX_STOPS, KVL_MAX_STOP_LEN);
            return -1;
        }
        o->stops[o->n_stops++] = v;
    } else
        return 0;
    return 1;
#undef INT_FLAG
}

static const char *const value_flags[] = {"--dump-logits",
                                          "-p",
                                          "--prompt",
                                          "-f",
                                          "--file",
                                          "-o",
                                          "--output",
                                          "-n",
                                          "--n-predict",
                                          "-c",
                                          "--ctx",
                                          KVL_CLI_SAMPLER_FLAGS,
                                          "--parallel",
                                          "--max-batch-tokens",
                                          "--swap-file",
                                          "--swap-mem",
                                          "--preempt",
                                          "--stop",
                                          NULL};

/* 0 parsed, 1 help printed, 2 usage error (message printed). */
static int parse_args(int argc, char **argv, run_opts *o) {
    const char *cmd = "run";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--batch-invariant") || !strcmp(a, "--no-prefix-cache")) {
            *(a[2] == 'b' ? &o->batch_invariant : &o->no_prefix_cache) = true;
            continue;
        }
        if (!strcmp(a, "--ignore-eos")) {
            o->ignore_eos = true;
            continue;
        }
        int r = kvl_cli_common_flag(cmd, argc, argv, &i, &o->com);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        if (!kvl_cli_flag_value(cmd, value_flags, "the prompt goes after -p", argc, argv, &i, &v) ||
            parse_value_flag(o, a, v) < 0)
            return 2;
    }
    if (o->prompt_file && o->prompt[0]) {
        fprintf(stderr, "kvllm run: -p and -f both give a prompt; use one\n");
        return 2;
    }
    return 0;
}

static void dump_tap(void *user, const float *logits, int32_t n_rows, int32_t n_vocab) {
    fwrite(logits, sizeof(float), (size_t)n_rows * (size_t)n_vocab, user);
}

/* What the samples produced, collected from events. */
typedef struct sample_text {
    char *text;
    size_t len, cap;
    kvl_finish_reason reason;
    int32_t *toks;
    int32_t n_toks;
} sample_text;

static bool put_text(sample_text *s, const char *t, size_t n) {
    if (s->len + n + 1 > s->cap) {
        size_t c = s->cap ? s->cap * 2 : 256;
        while (c < s->len + n + 1)
            c *= 2;
        char *x = realloc(s->text, c);
        if (!x)
            return false;
        s->text = x;
        s->cap = c;
    }
    memcpy(s->text + s->len, t, n);
    s->len += n;
    s->text[s->len] = '\0';
    return true;
}

static void json_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

typedef struct run_state {
    const run_opts *o;
    kvl_engine *e;
    sample_text *out; /* (parallel) */
    int32_t n_samples;
    bool stream, json;
    kvl_event final; /* the request's final (merged over split requests) */
    uint64_t ids[KVL_MAX_SAMPLES];
    int32_t n_reqs, n_finals; /* one request with n samples, or n requests */
    bool done;
    size_t peak_bytes;
} run_state;

/* Fold one request's final event into rs->final (split mode: sums and
 * worst cases over the samples' requests). */
static void merge_final(run_state *rs, const kvl_event *ev) {
    if (rs->n_finals++ == 0) {
        rs->final = *ev;
        return;
    }
    kvl_usage *u = &rs->final.usage;
    u->completion_tokens += ev->usage.completion_tokens;
    u->recomputed_tokens += ev->usage.recomputed_tokens;
    u->n_preemptions += ev->usage.n_preemptions;
    u->ttft_s = ev->usage.ttft_s < u->ttft_s ? ev->usage.ttft_s : u->ttft_s;
    u->e2e_s = ev->usage.e2e_s > u->e2e_s ? ev->usage.e2e_s : u->e2e_s;
    if (ev->reason == KVL_FINISH_ERROR || rs->final.reason == KVL_FINISH_STOP)
        rs->final.reason = ev->reason;
}

static bool on_event(run_state *rs, const kvl_event *ev) {
    int32_t si = ev->index;
    if (rs->n_reqs > 1)
        for (si = 0; si < rs->n_reqs && rs->ids[si] != ev->id; si++)
            ;
    if (si >= rs->n_samples)
        return true;
    sample_text *s = &rs->out[si];
    if (ev->type == KVL_EV_TOKEN && s->n_toks < (int32_t)rs->o->n_predict)
        s->toks[s->n_toks++] = ev->token;
    if (ev->type == KVL_EV_SAMPLE_END)
        s->reason = ev->reason;
    if (ev->type == KVL_EV_FINAL) {
        merge_final(rs, ev);
        rs->done = rs->n_finals == rs->n_reqs;
        if (rs->n_reqs > 1 || rs->n_samples == 1)
            s->reason = ev->reason;
    }
    if (rs->stream && !rs->json) {
        fwrite(ev->text, 1, ev->text_len, stdout);
        fflush(stdout);
        return true;
    }
    return put_text(s, ev->text, ev->text_len);
}

/* Step and poll until the request's final event. */
static int drive(run_state *rs) {
    kvl_event ev[64];
    kvl_error err;
    while (!rs->done) {
        if (kvl_engine_step(rs->e, NULL, &err)) {
            fprintf(stderr, "kvllm run: %s\n", err.msg);
            return 1;
        }
        kvl_engine_stats st;
        kvl_engine_get_stats(rs->e, &st);
        if (st.kv.bytes_used > rs->peak_bytes)
            rs->peak_bytes = st.kv.bytes_used;
        int n;
        while ((n = kvl_engine_poll(rs->e, ev, 64, 0)) > 0)
            for (int i = 0; i < n; i++)
                if (!on_event(rs, &ev[i])) {
                    fprintf(stderr, "kvllm run: out of memory\n");
                    return 1;
                }
    }
    return 0;
}

static kvl_engine_params engine_params(const run_opts *o, size_t n_prompt) {
    kvl_engine_params ep = kvl_engine_defaults();
    kvl_cli_engine_kv(&o->com, &ep);
    /* the pool and the buffers are sized by the request, not the model's
     * context (a file may claim 16M positions) */
    ep.max_ctx = (int32_t)((long long)n_prompt + o->n_predict);
    const kvl_kv_policy *pol = &o->com.kvo.policy;
    if (kvl_kv_policy_evicts(pol)) { /* the cache holds the budget, not the stream */
        long long c =
            (long long)n_prompt > pol->budget_tokens ? (long long)n_prompt : pol->budget_tokens;
        ep.max_ctx = (int32_t)(c < o->ctx ? c : o->ctx);
    }
    ep.max_seqs = (int32_t)o->parallel;
    long long bt = o->batch_tokens;
    if (bt == 0) /* the whole prompt in one pass when it is not huge */
        bt = n_prompt < 256 ? 256 : n_prompt > 4096 ? 4096 : (long long)n_prompt;
    ep.max_batch_tokens = (int32_t)(bt < o->parallel ? o->parallel : bt);
    ep.preempt = o->preempt;
    ep.swap_mem = o->swap_mem;
    ep.swap_file = o->swap_file;
    ep.prefix_tier = o->com.kvo.prefix_tier;
    ep.batch_invariant = o->batch_invariant;
    ep.prefix_cache = !o->no_prefix_cache;
    return ep;
}

static void print_json(const run_state *rs, const kvl_usage *u, double t_load) {
    printf("{\"samples\": [");
    for (int32_t s = 0; s < rs->n_samples; s++) {
        const sample_text *t = &rs->out[s];
        printf("%s{\"text\": ", s ? ", " : "");
        json_str(stdout, t->text ? t->text : "", t->len);
        printf(", \"finish_reason\": \"%s\", \"tokens\": [", kvl_finish_reason_str(t->reason));
        for (int32_t i = 0; i < t->n_toks; i++)
            printf("%s%d", i ? ", " : "", t->toks[i]);
        printf("]}");
    }
    printf("], \"finish_reason\": \"%s\", \"usage\": {\"prompt_tokens\": %lld, "
           "\"completion_tokens\": %lld, \"total_tokens\": %lld}, \"timings\": {\"load_s\": %.6f, "
           "\"ttft_s\": %.6f, \"tpot_s\": %.6f, \"e2e_s\": %.6f}}\n",
           kvl_finish_reason_str(rs->final.reason), (long long)u->prompt_tokens,
           (long long)u->completion_tokens, (long long)(u->prompt_tokens + u->completion_tokens),
           t_load, u->ttft_s, u->tpot_s, u->e2e_s);
}

static void print_report(const run_state *rs, const kvl_model *m, double t_load, size_t n_prompt) {
    const kvl_usage *u = &rs->final.usage;
    kvl_model_info mi;
    kvl_model_get_info(m, &mi);
    kvl_engine_config cfg;
    kvl_engine_get_config(rs->e, &cfg);
    double t_gen = u->e2e_s - u->ttft_s;
    fprintf(stderr,
            "\nkvllm: model %s (%s), %.3f s load\n"
            "kvllm: prompt %zu tokens in %.3f s (%.1f tokens/s)\n"
            "kvllm: generated %lld tokens in %.3f s (%.1f tokens/s), %d sequence%s, %d threads\n",
            mi.name, mi.container, t_load, n_prompt, u->ttft_s,
            u->ttft_s > 0 ? (double)n_prompt / u->ttft_s : 0.0, (long long)u->completion_tokens,
            t_gen, t_gen > 0 ? (double)u->completion_tokens / t_gen : 0.0, rs->n_samples,
            rs->n_samples == 1 ? "" : "s", cfg.n_threads);
    if (u->kv_policy != KVL_KV_POLICY_FULL)
        fprintf(stderr, "kvllm: kv policy %s: %lld blocks (%lld positions) evicted\n",
                kvl_kv_policy_str(u->kv_policy), (long long)u->evicted_blocks,
                (long long)u->evicted_tokens);
    if (u->n_preemptions)
        fprintf(stderr, "kvllm: preempted %d times, %lld positions computed again\n",
                u->n_preemptions, (long long)u->recomputed_tokens);
    if (rs->n_samples > 1 && rs->n_reqs == 1) {
        /* after the fork: the prompt's KV stored once, against n copies */
        bool paged = cfg.kv_layout == KVL_KV_LAYOUT_PAGED;
        size_t block_bytes = (size_t)cfg.block_size * cfg.bytes_per_token;
        size_t one =
            paged ? (n_prompt + (size_t)cfg.block_size - 1) / (size_t)cfg.block_size * block_bytes
                  : n_prompt * cfg.bytes_per_token;
        size_t copies = (size_t)rs->n_samples * one, held = paged ? one : copies;
        fprintf(stderr,
                "kvllm: prompt KV after forking %d sequences: %zu bytes held (%s) vs %zu bytes "
                "for %d independent copies (%.2fx)\n",
                rs->n_samples, held, paged ? "shared blocks" : "copied", copies, rs->n_samples,
                held ? (double)copies / (double)held : 0.0);
        kvl_engine_stats st;
        kvl_engine_get_stats(rs->e, &st);
        fprintf(stderr, "kvllm: peak KV in use %zu bytes; %lld copy-on-write block copies\n",
                rs->peak_bytes, (long long)st.kv.n_blocks_copied);
    }
}

/* Submit the prompt as one request with --parallel samples; when the pool
 * cannot hold every sample at its longest at once, as one request per
 * sample instead (they queue and preempt one another; sample i keeps the
 * seed it would have had). */
static kvl_status submit_all(run_state *rs, const int32_t *toks, size_t n_prompt, kvl_error *err) {
    const run_opts *o = rs->o;
    kvl_engine *e = rs->e;
    kvl_request_params rp = kvl_request_defaults();
    rp.prompt_tokens = toks;
    rp.n_prompt_tokens = n_prompt;
    rp.max_tokens = (int32_t)o->n_predict;
    rp.n = rs->n_samples;
    rp.temperature = o->sp.temperature;
    rp.top_k = o->sp.top_k;
    rp.top_p = o->sp.top_p;
    rp.min_p = o->sp.min_p;
    rp.repeat_penalty = o->sp.repeat_penalty;
    rp.repeat_last_n = o->sp.repeat_last_n;
    rp.presence_penalty = o->sp.presence_penalty;
    rp.frequency_penalty = o->sp.frequency_penalty;
    rp.seed = o->sp.seed;
    rp.stop = o->stops;
    rp.n_stop = o->n_stops;
    rp.kv_policy = o->com.kvo.policy;
    rp.ignore_eos = o->ignore_eos;
    rs->n_reqs = 1;
    kvl_status sst = kvl_engine_submit(e, &rp, &rs->ids[0], err);
    if (sst == KVL_E_LIMIT && rp.n > 1) {
        /* the pool cannot hold every sample at its longest at once: run the
         * samples as separate requests that queue and preempt one another */
        fprintf(stderr, "kvllm run: %s; running the %d samples as separate requests instead\n",
                err->msg, rp.n);
        rs->n_reqs = rp.n;
        rp.n = 1;
        uint64_t seed = rp.seed;
        for (int32_t s = 0; s < rs->n_reqs && sst != KVL_E_NOMEM; s++) {
            rp.seed = seed + (uint64_t)s;
            sst = kvl_engine_submit(e, &rp, &rs->ids[s], err);
            if (sst)
                break;
        }
    }
    return sst;
}

/* Load, submit, drive, print. Returns the exit status. */
static int run_request(run_opts *o) {
    kvl_error err = {0};
    kvl_model *m = NULL;
    kvl_engine *e = NULL;
    run_state rs = {.o = o, .n_samples = (int32_t)o->parallel, .json = !strcmp(o->out_fmt, "json")};
    int32_t *toks = NULL;
    FILE *dump_f = NULL;
    int rc = 1;
    double t0 = kvl_now();
    kvl_model_params mp = {.tokenizer_path = o->com.tokenizer,
                           .load = o->com.load,
                           .check_tensors = o->com.check_tensors};
    if (kvl_model_load(o->com.model, &mp, &m, &err) != KVL_OK) {
        fprintf(stderr, "kvllm run: %s\n", err.msg);
        return 1;
    }
    double t_load = kvl_now() - t0;
    if (o->ctx == 0)
        o->ctx = m->hp.ctx_len;
    size_t plen = strlen(o->prompt), n_prompt = 0;
    if (o->ctx > m->hp.ctx_len) {
        fprintf(stderr, "kvllm run: --ctx: %lld is larger than the model's context %lld\n", o->ctx,
                (long long)m->hp.ctx_len);
        rc = 2;
        goto done;
    }
    toks = malloc((plen + 3) * sizeof *toks);
    if (!toks || kvl_tokenize(m, o->prompt, plen, true, toks, plen + 3, &n_prompt, &err)) {
        fprintf(stderr, "kvllm run: tokenizing the prompt: %s\n", toks ? err.msg : "out of memory");
        goto done;
    }
    if ((long long)n_prompt >= o->ctx) {
        fprintf(stderr, "kvllm run: the prompt has %zu tokens; the context holds %lld\n", n_prompt,
                o->ctx);
        rc = 2;
        goto done;
    }
    bool evicts = kvl_kv_policy_evicts(&o->com.kvo.policy);
    if (evicts && o->com.kvo.policy.budget_tokens == 0) {
        fprintf(stderr, "kvllm run: --kv-policy %s needs --kv-budget-tokens N\n",
                kvl_kv_policy_str(o->com.kvo.policy.kind));
        rc = 2;
        goto done;
    }
    long long room = o->ctx - (long long)n_prompt;
    if (o->n_predict > room && !evicts) {
        fprintf(stderr,
                "kvllm run: -n %lld: the %zu-token prompt leaves %lld of the context's %lld "
                "positions; generating at most %lld tokens\n",
                o->n_predict, n_prompt, room, o->ctx, room);
        o->n_predict = room;
    }
    rs.stream = rs.n_samples == 1;
    if (rs.stream && !rs.json) { /* echo the prompt as the model sees it */
        size_t n = 0;
        kvl_detokenize(m, toks, n_prompt, NULL, 0, &n, NULL);
        char *echo = malloc(n + 1);
        if (echo && kvl_detokenize(m, toks, n_prompt, echo, n + 1, &n, NULL) == KVL_OK)
            fwrite(echo, 1, n, stdout);
        free(echo);
        fflush(stdout);
    }
    if (o->n_predict == 0) { /* nothing to generate */
        if (!rs.json)
            printf("\n");
        rc = 0;
        goto done;
    }
    kvl_engine_params ep = engine_params(o, n_prompt);
    if (kvl_engine_init(m, &ep, &e, &err)) {
        fprintf(stderr, "kvllm run: %s\n", err.msg);
        rc = err.status == KVL_E_NO_KV || err.status == KVL_E_UNSUPPORTED ||
                     err.status == KVL_E_INVALID
                 ? 2
                 : 1;
        goto done;
    }
    rs.e = e;
    if (!o->com.kvo.p.budget && o->com.kvo.mem_fraction == 0) {
        kvl_engine_config cfg;
        kvl_engine_get_config(e, &cfg);
        fprintf(stderr, "kvllm run: KV budget %zu bytes: %s (the request; the context is %lld)\n",
                cfg.kv_mem, cfg.budget_reason, o->ctx);
    }
    kvl_engine_kv_report(e, stderr);
    if (o->com.kvo.check) {
        kvl_pool *pool = NULL;
        bool ok = kvl_pool_init((int)o->com.threads, &pool, &err) == KVL_OK &&
                  kvl_cli_kv_check("run", &o->com.kvo, m, pool);
        kvl_pool_free(pool);
        if (!ok)
            goto done;
    }
    if (o->dump) {
        if (!(dump_f = fopen(o->dump, "wb"))) {
            fprintf(stderr, "kvllm run: --dump-logits: cannot open '%s'\n", o->dump);
            goto done;
        }
        kvl_engine_set_logits_tap(e, dump_tap, dump_f);
    }
    rs.out = calloc((size_t)rs.n_samples, sizeof *rs.out);
    for (int32_t s = 0; rs.out && s < rs.n_samples; s++)
        if (!(rs.out[s].toks = malloc((size_t)o->n_predict * sizeof(int32_t)))) {
            fprintf(stderr, "kvllm run: out of memory\n");
            goto done;
        }
    kvl_status sst = rs.out ? submit_all(&rs, toks, n_prompt, &err) : KVL_E_NOMEM;
    if (sst) {
        fprintf(stderr, "kvllm run: %s\n", rs.out ? err.msg : "out of memory");
        rc = rs.out && err.status != KVL_E_NOMEM ? 2 : 1;
        goto done;
    }
    if (drive(&rs))
        goto done;
    if (rs.json) {
        print_json(&rs, &rs.final.usage, t_load);
    } else if (rs.stream) {
        printf("\n");
    } else {
        for (int32_t s = 0; s < rs.n_samples; s++)
            printf("--- sample %d (%s) ---\n%s%s\n", s, kvl_finish_reason_str(rs.out[s].reason),
                   o->prompt, rs.out[s].text ? rs.out[s].text : "");
    }
    fflush(stdout);
    print_report(&rs, m, t_load, n_prompt);
    if (rs.final.reason == KVL_FINISH_ERROR)
        fprintf(stderr, "kvllm run: the request failed: %s\n", rs.final.message);
    rc = rs.final.reason == KVL_FINISH_ERROR ? 1 : 0;
done:
    if (rs.out)
        for (int32_t s = 0; s < rs.n_samples; s++) {
            free(rs.out[s].text);
            free(rs.out[s].toks);
        }
    free(rs.out);
    free(toks);
    kvl_engine_free(e);
    if (dump_f && fclose(dump_f) != 0) {
        fprintf(stderr, "kvllm run: --dump-logits: write to '%s' failed\n", o->dump);
        rc = 1;
    }
    kvl_model_free(m);
    return rc;
}

int kvl_cli_run(int argc, char **argv) {
    run_opts o = {.prompt = "",
                  .out_fmt = "text",
                  .n_predict = 256,
                  .parallel = 1,
                  .sp = kvl_sampler_defaults()};
    kvl_cli_common_defaults(&o.com);
    o.com.kvo.tier_ok = true;
    o.com.kvo.policy_ok = true;
    int pr = parse_args(argc, argv, &o);
    if (pr)
        return pr == 1 ? 0 : 2;
    if (!(o.com.model = kvl_cli_model_path("run", &o.com)))
        return 2;
    char *file_prompt = NULL;
    if (o.prompt_file) {
        if (!(file_prompt = kvl_cli_read_text("run", o.prompt_file, NULL)))
            return 2;
        o.prompt = file_prompt;
    }
    int rc = run_request(&o);
    free(file_prompt);
    return rc;
}
