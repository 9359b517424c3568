/*
 * kvllm ppl: teacher-forced negative log-likelihood and perplexity of a text
 * file, with the protocol of shared/golden/README.md: the text is split on
 * lines that read "<|endoftext|>", each story is stripped of surrounding
 * whitespace and encoded with BOS (no EOS), and every token after the first
 * is predicted from the ones before it. A story longer than the context is
 * cut to the context length, as the reference (llama2.c with seq_len 512)
 * does; --long windows scores the rest too, in further windows of the
 * context length (each starts fresh with its first token given, so no
 * position is scored twice). Paragraph mode
 * (--split blank) splits on blank lines instead, after CRLF -> LF.
 *
 * Stream mode (--stream N; docs/eviction.md): the documents, each encoded
 * with BOS as llama2.c's training shards are (--stream-bos first: only the
 * first), are concatenated into one
 * stream of N tokens, which may be many times the context. It is scored
 *   - with --kv-policy full: in fresh windows of the context, one after the
 *     other (the most a full cache can do);
 *   - with window, sinks, h2o or snapkv: as one sequence decoded a token
 *     at a time, the policy evicting blocks at its budget, positions
 *     within the cache; with --prompt P the first P tokens are first
 *     prefilled in one batch (full attention; the cache holds P positions
 *     for that step) and cut to the budget by the policy (snapkv's prompt
 *     compression; window, sinks and h2o make the same cut by their own
 *     rule), and only the predictions made after the cut are scored;
 *   - with --recompute W: every --recompute-stride tokens a fresh sequence
 *     over the W tokens before them (the expensive sliding-window reference:
 *     each scored token sees between W - stride and W - 1 earlier tokens).
 */
#include "cli/cli.h"
#include "cli/common.h"
#include "core/pool.h"
#include "engine/kv_check.h"
#include "engine/executor.h"
#include "kv/kv_policy.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(
        f,
        "usage: kvllm ppl [-m MODEL] -f TEXT [flags]\n"
        "\n"
        "  -m, --model PATH     GGUF or llama2.c checkpoint (default: shipped stories260K.gguf)\n"
        "      --tokenizer PATH llama2.c tokenizer (default: beside the model)\n"
        "  -f, --file PATH      text to score\n"
        "      --split MODE     eot: stories split on <|endoftext|> lines (default);\n"
        "                       blank: paragraphs split on blank lines (CRLF -> LF)\n"
        "  -c, --ctx N          window length (default: the model's context)\n"
        "      --long MODE      documents longer than the window: truncate (default,\n"
        "                       the reference protocol) or windows (score all of it)\n"
        "      --max-docs N     score only the first N documents\n"
        "      --stream N       score the documents as one stream of N tokens (BOS before\n"
        "                        each) with the --kv-policy below (docs/eviction.md)\n"
        "      --stream-skip D  stream mode: start the stream after the first D documents\n"
        "                        (another sample of the same text; default 0)\n"
        "      --stream-bos B   each (default: BOS before every document, as llama2.c\n"
        "                        trains) or first (one BOS, at the stream's start)\n"
        "      --stream-log F   an evicting policy: every 256 tokens append 'index tokens/s\n"
        "                        kv_bytes_used cache_len' to F (the rate since the last line)\n"
        "      --prompt P       stream mode with a policy: prefill the first P tokens in\n"
        "                       one batch, cut the cache to the budget, decode the rest\n"
        "                       and score only the predictions after the cut\n"
        "      --recompute W    stream mode: score by recomputing a fresh window of W\n"
        "                        tokens every --recompute-stride tokens (default 16)\n"
        "      --recompute-stride S\n"
        "      --kl-ref         also run an f32-KV reference in the same pass and report\n"
        "                       the mean KL divergence of next-token distributions\n"
        "                       KL(ref || this) and top-1 agreement (with --stream and a\n"
        "                       policy: full KV of the whole stream, --stream <= -c)\n"
        "  -t, --threads N      worker threads, 1..%d (default: one per core)\n" KVL_CLI_LOAD_USAGE
            KVL_CLI_CHECK_USAGE "  -h, --help\n"
        "\nKV cache:\n",
        KVL_POOL_MAX_THREADS);
    kvl_cli_kv_usage(f);
    kvl_cli_kv_policy_usage(f);
}

/* log-softmax helpers over one logits row */
static double log_sum_exp(const float *row, int64_t n, float *mx_out) {
    float mx = row[0];
    for (int64_t k = 1; k < n; k++)
        if (row[k] > mx)
            mx = row[k];
    double s = 0;
    for (int64_t k = 0; k < n; k++)
        s += exp((double)row[k] - mx);
    *mx_out = mx;
    return log(s);
}

typedef struct {
    const char *p;
    size_t n;
} span;

static bool is_ws(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static span strip(const char *p, size_t n) {
    while (n && is_ws(*p)) {
        p++;
        n--;
    }
    while (n && is_ws(p[n - 1]))
        n--;
    return (span){p, n};
}

/* Next document from text[*at..len). Returns false at the end. */
static bool next_doc(const char *text, size_t len, size_t *at, bool blank_mode, span *doc) {
    while (*at < len) {
        size_t start = *at, i = start, end = len, next = len;
        if (!blank_mode) {
            /* a line equal to <|endoftext|> (after stripping) ends the story */
            static const char eot[] = "<|endoftext|>";
            while (i < len) {
                size_t ls = i;
                while (i < len && text[i] != '\n')
                    i++;
                span line = strip(text + ls, i - ls);
                size_t le = i < len ? i + 1 : i;
                if (line.n == sizeof eot - 1 && memcmp(line.p, eot, line.n) == 0) {
                    end = ls;
                    next = le;
                    break;
                }
                i = le;
            }
        } else {
            /* blank line: "\n" followed by optional spaces and "\n" */
            while (i < len) {
                if (text[i] == '\n') {
                    size_t j = i + 1;
                    while (j < len && (text[j] == ' ' || text[j] == '\t' || text[j] == '\r'))
                        j++;
                    if (j < len && text[j] == '\n') {
                        end = i;
                        next = j + 1;
                        break;
                    }
                }
                i++;
            }
        }
        *at = next;
        span d = strip(text + start, end - start);
        if (d.n) {
            *doc = d;
            return true;
        }
    }
    return false;
}

typedef struct ppl_opts {
    kvl_cli_common com;
    const char *file;
    long long ctx, max_docs;
    long long stream, recompute, stride; /* --stream N, --recompute W, --recompute-stride */
    long long prompt;                    /* --prompt P: prefilled, then cut to the budget */
    long long skip_docs;                 /* --stream-skip D: documents left out first */
    bool blank_mode, windows, kl_ref;
    bool bos_first;         /* --stream-bos first: one BOS, at the start of the stream */
    const char *stream_log; /* --stream-log FILE: rate and KV bytes every 256 tokens */
} ppl_opts;

/* 0 parsed, 1 help printed, 2 usage error (message printed). */
static int parse_args(int argc, char **argv, ppl_opts *o) {
    const char *cmd = "ppl";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--kl-ref")) {
            o->kl_ref = true;
            continue;
        }
        int r = kvl_cli_common_flag(cmd, argc, argv, &i, &o->com);
        if (r < 0)
            return 2;
        if (r > 0)
            continue;
        static const char *const known[] = {
            "-f",           "--file",       "--split",  "--long",        "-c",
            "--ctx",        "--max-docs",   "--stream", "--recompute",   "--recompute-stride",
            "--stream-bos", "--stream-log", "--prompt", "--stream-skip", NULL};
        if (!kvl_cli_flag_value(cmd, known, "the text file goes after -f", argc, argv, &i, &v))
            return 2;
        if (!strcmp(a, "-f") || !strcmp(a, "--file"))
            o->file = v;
        else if (!strcmp(a, "--split")) {
            if (strcmp(v, "eot") && strcmp(v, "blank")) {
                fprintf(stderr, "kvllm ppl: --split: '%s' is not eot or blank\n", v);
                return 2;
            }
            o->blank_mode = !strcmp(v, "blank");
        } else if (!strcmp(a, "--long")) {
            if (strcmp(v, "truncate") && strcmp(v, "windows")) {
                fprintf(stderr, "kvllm ppl: --long: '%s' is not truncate or windows\n", v);
                return 2;
            }
            o->windows = !strcmp(v, "windows");
        } else if (!strcmp(a, "--stream")) {
            if (!kvl_cli_int(cmd, a, v, 2, INT32_MAX, &o->stream))
                return 2;
        } else if (!strcmp(a, "--stream-log")) {
            o->stream_log = v;
        } else if (!strcmp(a, "--stream-bos")) {
            if (strcmp(v, "each") && strcmp(v, "first")) {
                fprintf(stderr, "kvllm ppl: --stream-bos: '%s' is not each or first\n", v);
                return 2;
            }
            o->bos_first = !strcmp(v, "first");
        } else if (!strcmp(a, "--stream-skip")) {
            if (!kvl_cli_int(cmd, a, v, 0, INT32_MAX, &o->skip_docs))
                return 2;
        } else if (!strcmp(a, "--prompt")) {
            if (!kvl_cli_int(cmd, a, v, 1, KVL_MAX_CTX, &o->prompt))
                return 2;
        } else if (!strcmp(a, "--recompute")) {
            if (!kvl_cli_int(cmd, a, v, 2, KVL_MAX_CTX, &o->recompute))
                return 2;
        } else if (!strcmp(a, "--recompute-stride")) {
            if (!kvl_cli_int(cmd, a, v, 1, KVL_MAX_CTX, &o->stride))
                return 2;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            if (!kvl_cli_int(cmd, a, v, 2, KVL_MAX_CTX, &o->ctx))
                return 2;
        } else if (!kvl_cli_int(cmd, a, v, 1, INT32_MAX, &o->max_docs)) /* --max-docs */
            return 2;
    }
    if (!o->file) {
        fprintf(stderr, "kvllm ppl: -f TEXT is required\n");
        return 2;
    }
    const bool evicts = kvl_kv_policy_evicts(&o->com.kvo.policy);
    if ((evicts || o->recompute) && !o->stream) {
        fprintf(stderr, "kvllm ppl: --kv-policy %s / --recompute score a stream: give --stream N\n",
                kvl_kv_policy_str(o->com.kvo.policy.kind));
        return 2;
    }
    if (o->recompute && evicts) {
        fprintf(stderr, "kvllm ppl: --recompute is the full-KV reference: drop --kv-policy %s\n",
                kvl_kv_policy_str(o->com.kvo.policy.kind));
        return 2;
    }
    if (o->skip_docs && !o->stream) {
        fprintf(stderr, "kvllm ppl: --stream-skip %lld applies to a stream: give --stream N\n",
                o->skip_docs);
        return 2;
    }
    if (o->stream && o->kl_ref && (!evicts || o->ctx == 0 || o->stream > o->ctx)) {
        fprintf(stderr, "kvllm ppl: --kl-ref with --stream compares an evicting policy "
                        "to full KV: give --kv-policy and -c N with --stream <= N\n");
        return 2;
    }
    if (o->prompt && (!evicts || o->prompt + 1 >= o->stream)) {
        fprintf(stderr,
                "kvllm ppl: --prompt %lld needs --kv-policy other than full and --stream > "
                "prompt + 1 (stream %lld)\n",
                o->prompt, o->stream);
        return 2;
    }
    if (o->stride > o->recompute - 1 && o->recompute) {
        fprintf(stderr, "kvllm ppl: --recompute-stride %lld must be < --recompute %lld\n",
                o->stride, o->recompute);
        return 2;
    }
    return 0;
}

/* What is summed over the scored positions. */
typedef struct ppl_acc {
    double nll, kl_sum;
    long long n_pred, n_docs, n_windows, n_cut, n_agree, n_nan;
    double nll_late; /* stream: predictions of tokens at index >= the context */
    long long n_late;
    long long n_evicted;  /* stream: positions evicted */
    int32_t max_len;      /* stream: most positions the sequence held */
    long long n_bad_loss; /* positions whose loss is NaN or Inf */
} ppl_acc;

/* Everything the scoring loop uses, set up once. */
typedef struct ppl_run {
    kvl_model *m;
    kvl_executor *fw, *fwr; /* the measured KV, and the f32 reference (--kl-ref) */
    kvl_kv_cache *kvc, *kvr;
    int32_t *toks, *seq, *pos; /* (cap), (ctx), (ctx) */
    bool *want;                /* (ctx) every row's logits */
    size_t cap;
    int32_t *stream; /* (--stream) the concatenated documents */
    size_t n_stream;
    size_t late_from; /* stream index from which a prediction also counts as late */
} ppl_run;

/* -log p(next) from one logits row. */
static double row_nll(const float *row, int64_t nv, int32_t next) {
    float mx;
    double lse = log_sum_exp(row, nv, &mx);
    return -((double)row[next] - mx - lse);
}

/* Count the prediction of the token at stream index idx. */
static void acc_add(ppl_acc *acc, const ppl_run *pr, double nll, size_t idx) {
    acc->n_pred++;
    if (!isfinite(nll)) { /* counted, reported and failed on, never summed */
        acc->n_bad_loss++;
        return;
    }
    acc->nll += nll;
    if (idx >= pr->late_from) {
        acc->nll_late += nll;
        acc->n_late++;
    }
}

/* Score one window of wn tokens from toks (a fresh sequence 0), toks[0]
 * being stream index base. Predictions from score_from on are counted. */
static bool score_window(ppl_run *pr, const int32_t *toks, size_t wn, size_t base,
                         size_t score_from, ppl_acc *acc) {
    const int64_t nv = pr->m->hp.n_vocab;
    kvl_error err;
    kvl_batch b = {.n_tokens = (int32_t)wn,
                   .tokens = toks,
                   .seq = pr->seq,
                   .pos = pr->pos,
                   .logits = pr->want};
    const float *lg, *lr = NULL;
    int32_t n_out;
    kvl_kv_cache_release(pr->kvc, 0, &err);
    if (kvl_executor_run_cache(pr->fw, pr->kvc, &b, &lg, &n_out, &err)) {
        fprintf(stderr, "kvllm ppl: %s\n", err.msg);
        return false;
    }
    if (pr->kvr) {
        kvl_kv_cache_release(pr->kvr, 0, &err);
        if (kvl_executor_run_cache(pr->fwr, pr->kvr, &b, &lr, &n_out, &err)) {
            fprintf(stderr, "kvllm ppl: reference: %s\n", err.msg);
            return false;
        }
    }
    acc->n_windows++;
    for (size_t i = score_from; i + 1 < wn; i++) {
        const float *row = lg + i * (size_t)nv;
        acc_add(acc, pr, row_nll(row, nv, toks[i + 1]), base + i + 1);
        if (lr) {
            bool same;
            const double kl = kvl_logits_kl(lr + i * (size_t)nv, row, nv, &same);
            acc->kl_sum += kl;
            acc->n_agree += same;
            acc->n_nan += isinf(kl);
        }
    }
    return true;
}

/* Load the model, size the buffers by the longest document, make the
 * caches and executors. Returns 0, or the exit status. */
static int setup(const ppl_opts *o, const char *text, size_t len, long long *ctx, kvl_pool **pool,
                 ppl_run *pr, kvl_kv_cache_params *kvp) {
    const char *cmd = "ppl";
    kvl_error err = {0};
    kvl_model *m = NULL;
    const char *path = kvl_cli_model_path(cmd, &o->com);
    if (!path)
        return 2;
    kvl_model_params mp = {.tokenizer_path = o->com.tokenizer,
                           .load = o->com.load,
                           .check_tensors = o->com.check_tensors};
    if (kvl_model_load(path, &mp, &m, &err)) {
        fprintf(stderr, "kvllm ppl: %s\n", err.msg);
        return 1;
    }
    pr->m = m;
    const kvl_hparams *hp = &m->hp;
    if (*ctx == 0)
        *ctx = hp->ctx_len;
    if (*ctx > hp->ctx_len) {
        fprintf(stderr, "kvllm ppl: --ctx: %lld is larger than the model's context %lld\n", *ctx,
                (long long)hp->ctx_len);
        return 2;
    }
    size_t max_doc = 0, at = 0;
    span d;
    while (next_doc(text, len, &at, o->blank_mode, &d))
        max_doc = d.n > max_doc ? d.n : max_doc;
    pr->cap = max_doc + 3;
    pr->toks = malloc(pr->cap * sizeof *pr->toks);
    pr->seq = calloc((size_t)*ctx, sizeof *pr->seq);
    pr->pos = malloc((size_t)*ctx * sizeof *pr->pos);
    pr->want = malloc((size_t)*ctx * sizeof *pr->want);
    if (!pr->toks || !pr->seq || !pr->pos || !pr->want) {
        fprintf(stderr, "kvllm ppl: out of memory\n");
        return 1;
    }
    for (long long i = 0; i < *ctx; i++) {
        pr->pos[i] = (int32_t)i;
        pr->want[i] = true;
    }
    int32_t c32 = (int32_t)*ctx;
    if (!kvl_cli_kv_params(cmd, &o->com.kvo, m, 1, c32, c32, NULL, kvp))
        return 2;
    kvl_kv_cache_params refp = *kvp;
    refp.k_fmt = refp.v_fmt = KVL_KV_FMT_F32;
    refp.budget = 0;
    if (kvl_pool_init((int)o->com.threads, pool, &err) ||
        kvl_executor_cpu_init(m, *pool, c32, c32, &pr->fw, &err) ||
        kvl_kv_cache_init(hp, kvp, &pr->kvc, &err) ||
        (o->kl_ref && (kvl_executor_cpu_init(m, *pool, c32, c32, &pr->fwr, &err) ||
                       kvl_kv_cache_init(hp, &refp, &pr->kvr, &err)))) {
        fprintf(stderr, "kvllm ppl: %s\n", err.msg);
        return err.status == KVL_E_NO_KV || err.status == KVL_E_UNSUPPORTED ? 2 : 1;
    }
    kvl_kv_cache_rope_divide(pr->kvc, m->rope_freqs.data);
    kvl_kv_cache_report(pr->kvc, stderr);
    return kvl_cli_kv_check(cmd, &o->com.kvo, m, *pool) ? 0 : 1;
}

/* Every document: windows of up to ctx tokens, each predicting its tokens
 * 1..len-1. false on an error (message printed). */
static bool score_all(const ppl_opts *o, const char *text, size_t len, long long ctx, ppl_run *pr,
                      ppl_acc *acc) {
    kvl_progress prog = {0};
    kvl_progress_begin(&prog, "ppl");
    size_t at = 0;
    span d;
    bool ok = true;
    while (ok && (o->max_docs <= 0 || acc->n_docs < o->max_docs) &&
           next_doc(text, len, &at, o->blank_mode, &d)) {
        size_t n = 0;
        kvl_error err;
        if (kvl_tokenizer_encode(pr->m->tok, d.p, d.n, true, pr->toks, pr->cap, &n, &err)) {
            fprintf(stderr, "kvllm ppl: %s\n", err.msg);
            ok = false;
            break;
        }
        acc->n_docs++;
        for (size_t w0 = 0; ok && w0 + 1 < n; w0 += (size_t)ctx - 1) {
            size_t wn = n - w0 < (size_t)ctx ? n - w0 : (size_t)ctx;
            ok = score_window(pr, pr->toks + w0, wn, 0, 0, acc);
            if (w0 + wn >= n)
                break;
            if (!o->windows) {
                acc->n_cut++;
                break;
            }
        }
        if (o->max_docs > 0)
            kvl_progress_update(&prog, (uint64_t)acc->n_docs, (uint64_t)o->max_docs);
        else
            kvl_progress_update(&prog, at, len);
    }
    kvl_progress_end(&prog);
    return ok;
}

/* The documents, each encoded with BOS, concatenated into pr->stream up to
 * n tokens. false (message printed) when the text holds fewer. */
static bool build_stream(const ppl_opts *o, const char *text, size_t len, ppl_run *pr,
                         ppl_acc *acc) {
    const size_t n = (size_t)o->stream;
    pr->stream = malloc(n * sizeof *pr->stream);
    if (!pr->stream) {
        fprintf(stderr, "kvllm ppl: --stream: cannot allocate %zu tokens\n", n);
        return false;
    }
    size_t at = 0;
    span d;
    for (long long k = 0; k < o->skip_docs; k++)
        if (!next_doc(text, len, &at, o->blank_mode, &d)) {
            fprintf(stderr, "kvllm ppl: --stream-skip %lld: %s holds only %lld documents\n",
                    o->skip_docs, o->file, k);
            return false;
        }
    while (pr->n_stream < n && next_doc(text, len, &at, o->blank_mode, &d)) {
        size_t k = 0;
        kvl_error err;
        const bool bos = !o->bos_first || pr->n_stream == 0;
        if (kvl_tokenizer_encode(pr->m->tok, d.p, d.n, bos, pr->toks, pr->cap, &k, &err)) {
            fprintf(stderr, "kvllm ppl: %s\n", err.msg);
            return false;
        }
        k = k < n - pr->n_stream ? k : n - pr->n_stream;
        memcpy(pr->stream + pr->n_stream, pr->toks, k * sizeof *pr->toks);
        pr->n_stream += k;
        acc->n_docs++;
    }
    if (pr->n_stream < n) {
        fprintf(stderr, "kvllm ppl: --stream %zu: %s holds only %zu tokens\n", n, o->file,
                pr->n_stream);
        return false;
    }
    return true;
}

/* --kl-ref in stream mode: the full-KV f32 reference decodes stream token
 * i at position i; KL(reference || policy) of the next-token distribution. */
static bool kl_step(ppl_run *pr, size_t i, const float *lg, ppl_acc *acc) {
    kvl_error err;
    int32_t seq = 0, pos = (int32_t)i;
    const bool want = true;
    kvl_batch b = {
        .n_tokens = 1, .tokens = pr->stream + i, .seq = &seq, .pos = &pos, .logits = &want};
    const float *lr;
    int32_t n_out;
    if (i == 0) /* (with --prompt the reference was prefilled) */
        kvl_kv_cache_release(pr->kvr, 0, &err);
    if (kvl_executor_run_cache(pr->fwr, pr->kvr, &b, &lr, &n_out, &err)) {
        fprintf(stderr, "kvllm ppl: reference: %s\n", err.msg);
        return false;
    }
    bool same;
    const double kl = kvl_logits_kl(lr, lg, pr->m->hp.n_vocab, &same);
    acc->kl_sum += kl;
    acc->n_agree += same;
    acc->n_nan += isinf(kl);
    return true;
}

static bool evict_step(ppl_run *pr, size_t i, ppl_acc *acc, const bool *want);

/* --prompt P: stream tokens [0, P) in one batch into the measured cache
 * (and the reference), then the policy cuts the measured one to its
 * budget (make_room(0): snapkv's compression). */
static bool prefill_prompt(ppl_run *pr, long long n_prompt, ppl_acc *acc) {
    kvl_error err;
    kvl_batch b = {.n_tokens = (int32_t)n_prompt,
                   .tokens = pr->stream,
                   .seq = pr->seq,
                   .pos = pr->pos,
                   .logits = NULL};
    const float *lg;
    int32_t n_out, ev = 0;
    if (kvl_executor_run_cache(pr->fw, pr->kvc, &b, &lg, &n_out, &err) ||
        kvl_kv_cache_make_room(pr->kvc, 0, 0, &ev, &err)) {
        fprintf(stderr, "kvllm ppl: --prompt: %s\n", err.msg);
        return false;
    }
    acc->n_evicted += ev;
    if (pr->kvr) {
        kvl_kv_cache_release(pr->kvr, 0, &err);
        if (kvl_executor_run_cache(pr->fwr, pr->kvr, &b, &lg, &n_out, &err)) {
            fprintf(stderr, "kvllm ppl: reference: %s\n", err.msg);
            return false;
        }
    }
    return true;
}

/* One --stream-log line; returns the time it was written. */
static double log_line(FILE *log, const kvl_kv_cache *kvc, size_t i, double t_last) {
    const double t = kvl_now();
    kvl_kv_stats ks;
    kvl_kv_cache_stats(kvc, &ks);
    fprintf(log, "%zu %.1f %zu %lld\n", i, t > t_last ? 256.0 / (t - t_last) : 0.0, ks.bytes_used,
            (long long)ks.n_tokens);
    fflush(log); /* a long stream can be watched */
    return kvl_now();
}

/* An evicting policy: one sequence, a token at a time, at its place in
 * the cache, the policy making room before each (after the --prompt). */
static bool score_stream_evict(const ppl_opts *o, ppl_run *pr, ppl_acc *acc) {
    kvl_error err;
    kvl_kv_cache_release(pr->kvc, 0, &err);
    if (kvl_kv_cache_set_policy(pr->kvc, 0, &o->com.kvo.policy, &err)) {
        fprintf(stderr, "kvllm ppl: --kv-policy: %s\n", err.msg);
        return false;
    }
    FILE *log = NULL;
    if (o->stream_log && !(log = fopen(o->stream_log, "w"))) {
        fprintf(stderr, "kvllm ppl: --stream-log: cannot open %s\n", o->stream_log);
        return false;
    }
    kvl_progress prog = {0};
    kvl_progress_begin(&prog, "ppl stream");
    const bool want = true;
    double t_last = kvl_now();
    bool ok = !o->prompt || prefill_prompt(pr, o->prompt, acc);
    for (size_t i = (size_t)o->prompt; ok && i + 1 < pr->n_stream; i++) {
        if (log && i % 256 == 0 && i > 0)
            t_last = log_line(log, pr->kvc, i, t_last);
        ok = evict_step(pr, i, acc, &want);
        if ((i & 255) == 0)
            kvl_progress_update(&prog, i, pr->n_stream);
    }
    kvl_progress_end(&prog);
    if (log)
        fclose(log);
    acc->n_windows = 1;
    return ok;
}

/* One token of the stream under the policy. */
static bool evict_step(ppl_run *pr, size_t i, ppl_acc *acc, const bool *want) {
    const int64_t nv = pr->m->hp.n_vocab;
    kvl_error err;
    int32_t ev = 0, seq = 0;
    if (kvl_kv_cache_make_room(pr->kvc, 0, 1, &ev, &err)) {
        fprintf(stderr, "kvllm ppl: %s\n", err.msg);
        return false;
    }
    acc->n_evicted += ev;
    int32_t pos = kvl_kv_cache_len(pr->kvc, 0);
    kvl_batch b = {
        .n_tokens = 1, .tokens = pr->stream + i, .seq = &seq, .pos = &pos, .logits = want};
    const float *lg;
    int32_t n_out;
    if (kvl_executor_run_cache(pr->fw, pr->kvc, &b, &lg, &n_out, &err)) {
        fprintf(stderr, "kvllm ppl: %s\n", err.msg);
        return false;
    }
    if (pos + 1 > acc->max_len)
        acc->max_len = pos + 1;
    acc_add(acc, pr, row_nll(lg, nv, pr->stream[i + 1]), i + 1);
    return !pr->kvr || kl_step(pr, i, lg, acc);
}

/* full: fresh windows of ctx, one after the other; --recompute W: a fresh
 * window of W tokens ending at every stride-th token, scoring the last
 * stride predictions (the first window scores all of its own). */
static bool score_stream_windows(const ppl_opts *o, long long ctx, ppl_run *pr, ppl_acc *acc) {
    const size_t n = pr->n_stream;
    kvl_progress prog = {0};
    kvl_progress_begin(&prog, "ppl stream");
    bool ok = true;
    if (!o->recompute) {
        for (size_t w0 = 0; ok && w0 + 1 < n; w0 += (size_t)ctx) {
            size_t wn = n - w0 < (size_t)ctx ? n - w0 : (size_t)ctx;
            ok = score_window(pr, pr->stream + w0, wn, w0, 0, acc);
            /* each window's first token is given, not predicted */
            kvl_progress_update(&prog, w0, n);
        }
    } else {
        const size_t W = (size_t)o->recompute, st = (size_t)(o->stride ? o->stride : 16);
        ok = score_window(pr, pr->stream, W < n ? W : n, 0, 0, acc);
        for (size_t e = W; ok && e < n; e += st) {
            size_t end = e + st < n ? e + st : n; /* predict tokens [e, end) */
            size_t w0 = end - W;
            ok = score_window(pr, pr->stream + w0, W, w0, W - 1 - (end - e), acc);
            kvl_progress_update(&prog, e, n);
        }
    }
    kvl_progress_end(&prog);
    return ok;
}

int kvl_cli_ppl(int argc, char **argv) {
    ppl_opts o = {.max_docs = -1};
    kvl_cli_common_defaults(&o.com);
    o.com.kvo.policy_ok = true;
    int pa = parse_args(argc, argv, &o);
    if (pa)
        return pa == 1 ? 0 : 2;
    kvl_error err = {0};
    kvl_mapped_file tf = {0};
    if (kvl_map_file(o.file, &tf, &err)) {
        fprintf(stderr, "kvllm ppl: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    kvl_pool *pool = NULL;
    ppl_run pr = {0};
    ppl_acc acc = {0};
    kvl_kv_cache_params kvp;
    long long ctx = o.ctx;
    /* a private copy of the text; paragraph mode drops CR bytes */
    char *text = malloc(tf.size + 1);
    size_t len = 0;
    for (size_t i = 0; text && i < tf.size; i++)
        if (!(o.blank_mode && tf.data[i] == '\r' && i + 1 < tf.size && tf.data[i + 1] == '\n'))
            text[len++] = (char)tf.data[i];
    if (!text)
        fprintf(stderr, "kvllm ppl: out of memory\n");
    else if ((rc = setup(&o, text, len, &ctx, &pool, &pr, &kvp)) == 0) {
        rc = 1;
        double t0 = kvl_now();
        pr.late_from = o.stream ? (size_t)ctx : SIZE_MAX;
        if (o.stream) {
            if (!build_stream(&o, text, len, &pr, &acc) ||
                !(kvl_kv_policy_evicts(&o.com.kvo.policy)
                      ? score_stream_evict(&o, &pr, &acc)
                      : score_stream_windows(&o, ctx, &pr, &acc)))
                goto done;
        } else if (!score_all(&o, text, len, ctx, &pr, &acc))
            goto done;
        double dt = kvl_now() - t0;
        if (acc.n_pred == 0) {
            fprintf(stderr, "kvllm ppl: %s has no tokens to predict\n", o.file);
            goto done;
        }
        const long long n_ok = acc.n_pred - acc.n_bad_loss;
        double mean = n_ok > 0 ? acc.nll / (double)n_ok : NAN;
        printf("documents %lld\ntruncated %lld\npredicted_tokens %lld\nwindows %lld\nnll %.6f\n"
               "ppl %.6f\n",
               acc.n_docs, acc.n_cut, acc.n_pred, acc.n_windows, mean, exp(mean));
        printf("kv_type_k %s\nkv_type_v %s\n", kvl_kv_format_get(kvp.k_fmt)->name,
               kvl_kv_format_get(kvp.v_fmt)->name);
        if (o.stream) {
            const kvl_kv_policy *kp = &o.com.kvo.policy;
            printf("stream_tokens %zu\nkv_policy %s\n", pr.n_stream,
                   o.recompute ? "recompute" : kvl_kv_policy_str(kp->kind));
            if (kvl_kv_policy_evicts(kp))
                printf("kv_budget_tokens %d\nkv_sinks %d\nevicted_tokens %lld\nmax_cache_len %d\n",
                       (int)kp->budget_tokens,
                       kvl_kv_policy_sink_blocks(kp, kvp.block_size ? kvp.block_size : 1) > 0
                           ? (int)kp->sinks
                           : 0,
                       acc.n_evicted, (int)acc.max_len);
            if (kp->kind == KVL_KV_POLICY_H2O)
                printf("kv_heavy %g\nkv_score %s\nkv_mass_stride %d\n",
                       (double)kvl_kv_policy_heavy(kp),
                       kvl_kv_policy_score(kp) == KVL_KV_SCORE_SUM ? "sum" : "mean",
                       (int)kvl_kv_policy_mass_stride(kp));
            if (kp->kind == KVL_KV_POLICY_SNAPKV)
                printf("kv_obs_window %d\nkv_pool %d\n", (int)kvl_kv_policy_obs_window(kp),
                       (int)kvl_kv_policy_pool(kp));
            if (o.skip_docs)
                printf("stream_skip %lld\n", o.skip_docs);
            if (o.prompt)
                printf("prompt_tokens %lld\n", o.prompt);
            if (o.recompute)
                printf("recompute_window %lld\nrecompute_stride %lld\n", o.recompute,
                       o.stride ? o.stride : 16);
            if (acc.n_late)
                printf("ppl_past_ctx %.6f\n", exp(acc.nll_late / (double)acc.n_late));
        }
        if (pr.kvr)
            printf("kl_mean %.6g\ntop1_agree %.6f\n", acc.kl_sum / (double)acc.n_pred,
                   (double)acc.n_agree / (double)acc.n_pred);
        fprintf(stderr, "kvllm ppl: %lld tokens in %.2f s (%.1f tokens/s)\n", acc.n_pred, dt,
                dt > 0 ? (double)acc.n_pred / dt : 0.0);
        if (acc.n_bad_loss) { /* a NaN perplexity is a failure, never a result */
            fprintf(stderr,
                    "kvllm ppl: the loss is NaN or Inf at %lld of %lld positions (left out of "
                    "nll above): the model computes non-finite logits; --check-tensors finds "
                    "damaged weights\n",
                    acc.n_bad_loss, acc.n_pred);
        }
        if (acc.n_nan) { /* a quality gate fails on NaN */
            fprintf(stderr,
                    "kvllm ppl: --kl-ref: %lld of %lld positions have NaN logits (KL inf)\n",
                    acc.n_nan, acc.n_pred);
        }
        if (acc.n_bad_loss || acc.n_nan)
            goto done;
        rc = 0;
    }
done:
    free(text);
    free(pr.toks);
    free(pr.seq);
    free(pr.pos);
    free(pr.want);
    free(pr.stream);
    kvl_kv_cache_free(pr.kvc);
    kvl_kv_cache_free(pr.kvr);
    kvl_executor_free(pr.fwr);
    kvl_executor_free(pr.fw);
    kvl_pool_free(pool);
    kvl_model_free(pr.m);
    kvl_unmap_file(&tf);
    return rc;
}
