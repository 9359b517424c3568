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
 */
#include "cli/cli.h"
#include "cli/common.h"
#include "core/pool.h"
#include "engine/kv_check.h"
#include "engine/executor.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f, "usage: kvllm ppl [-m MODEL] -f TEXT [flags]\n"
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
               "      --kl-ref         also run an f32-KV reference in the same pass and report\n"
               "                       the mean KL divergence of next-token distributions\n"
               "                       KL(ref || this) and top-1 agreement\n"
               "  -t, --threads N      worker threads, 1..%d (default: one per core)\n"
               KVL_CLI_LOAD_USAGE
               "  -h, --help\n"
               "\nKV cache:\n", KVL_POOL_MAX_THREADS);
    kvl_cli_kv_usage(f);
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

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

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

int kvl_cli_ppl(int argc, char **argv) {
    const char *cmd = "ppl", *model_path = NULL, *tok_path = NULL, *file = NULL;
    long long ctx = 0, threads = 0, max_docs = -1;
    bool blank_mode = false, windows = false, kl_ref = false;
    kvl_cli_kv_opts kvo;
    kvl_cli_kv_defaults(&kvo);
    kvl_load_mode load = KVL_LOAD_AUTO;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(a, "--kl-ref")) {
            kl_ref = true;
            continue;
        }
        int ldf = kvl_cli_load_flag(cmd, argc, argv, &i, &load);
        if (ldf < 0)
            return 2;
        if (ldf > 0)
            continue;
        int kvf = kvl_cli_kv_flag(cmd, argc, argv, &i, &kvo);
        if (kvf < 0)
            return 2;
        if (kvf > 0)
            continue;
        static const char *const known[] = {
            "-m", "--model", "--tokenizer", "-f", "--file", "--split", "--long", "-c", "--ctx",
            "--max-docs", "-t", "--threads", NULL};
        if (!kvl_cli_flag_value(cmd, known, "the text file goes after -f", argc, argv, &i, &v))
            return 2;
        if (!strcmp(a, "-m") || !strcmp(a, "--model"))
            model_path = v;
        else if (!strcmp(a, "--tokenizer"))
            tok_path = v;
        else if (!strcmp(a, "-f") || !strcmp(a, "--file"))
            file = v;
        else if (!strcmp(a, "--split")) {
            if (!strcmp(v, "eot"))
                blank_mode = false;
            else if (!strcmp(v, "blank"))
                blank_mode = true;
            else {
                fprintf(stderr, "kvllm ppl: --split: '%s' is not eot or blank\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--long")) {
            if (!strcmp(v, "truncate"))
                windows = false;
            else if (!strcmp(v, "windows"))
                windows = true;
            else {
                fprintf(stderr, "kvllm ppl: --long: '%s' is not truncate or windows\n", v);
                return 2;
            }
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            if (!kvl_cli_int(cmd, a, v, 2, KVL_MAX_CTX, &ctx))
                return 2;
        } else if (!strcmp(a, "--max-docs")) {
            if (!kvl_cli_int(cmd, a, v, 1, INT32_MAX, &max_docs))
                return 2;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (!kvl_cli_int(cmd, a, v, 1, KVL_POOL_MAX_THREADS, &threads))
                return 2;
        } else {
            fprintf(stderr, "kvllm ppl: unknown flag '%s' (see kvllm ppl --help)\n", a);
            return 2;
        }
    }
    if (!file) {
        fprintf(stderr, "kvllm ppl: -f TEXT is required\n");
        return 2;
    }
    if (!model_path && !(model_path = kvl_cli_default_model())) {
        fprintf(stderr, "kvllm ppl: no -m given and the shipped model was not found; set KVL_SHARED\n");
        return 2;
    }
    kvl_error err = {0};
    kvl_mapped_file tf = {0};
    if (kvl_map_file(file, &tf, &err)) {
        fprintf(stderr, "kvllm ppl: %s\n", err.msg);
        return 1;
    }
    int rc = 1;
    kvl_progress pr = {0}; /* quiet until begun */
    kvl_model *m = NULL;
    kvl_pool *pool = NULL;
    kvl_executor *fw = NULL;
    kvl_kv_cache *kvc = NULL, *kvr = NULL;
    kvl_executor *fwr = NULL;
    int32_t *toks = NULL, *seq = NULL, *pos = NULL;
    char *text = NULL;
    kvl_model_params mp = {.tokenizer_path = tok_path, .load = load};
    if (kvl_model_load(model_path, &mp, &m, &err)) {
        fprintf(stderr, "kvllm ppl: %s\n", err.msg);
        goto done;
    }
    const kvl_hparams *hp = &m->hp;
    if (ctx == 0)
        ctx = hp->ctx_len;
    if (ctx > hp->ctx_len) {
        fprintf(stderr, "kvllm ppl: --ctx: %lld is larger than the model's context %lld\n", ctx,
                (long long)hp->ctx_len);
        rc = 2;
        goto done;
    }
    /* a private copy of the text; paragraph mode drops CR bytes */
    text = malloc(tf.size + 1);
    if (!text) {
        fprintf(stderr, "kvllm ppl: out of memory\n");
        goto done;
    }
    size_t len = 0;
    for (size_t i = 0; i < tf.size; i++)
        if (!(blank_mode && tf.data[i] == '\r' && i + 1 < tf.size && tf.data[i + 1] == '\n'))
            text[len++] = (char)tf.data[i];
    size_t max_doc = 0, at = 0;
    span d;
    while (next_doc(text, len, &at, blank_mode, &d))
        if (d.n > max_doc)
            max_doc = d.n;
    size_t cap = max_doc + 3;
    toks = malloc(cap * sizeof *toks);
    seq = calloc((size_t)ctx, sizeof *seq);
    pos = malloc((size_t)ctx * sizeof *pos);
    bool *want = malloc((size_t)ctx * sizeof *want);
    if (!toks || !seq || !pos || !want) {
        free(want);
        fprintf(stderr, "kvllm ppl: out of memory\n");
        goto done;
    }
    for (long long i = 0; i < ctx; i++) {
        pos[i] = (int32_t)i;
        want[i] = true;
    }
    kvl_kv_cache_params kvp, refp;
    if (!kvl_cli_kv_params(cmd, &kvo, m, 1, (int32_t)ctx, (int32_t)ctx, NULL, &kvp)) {
        free(want);
        rc = 2;
        goto done;
    }
    refp = kvp;
    refp.k_fmt = refp.v_fmt = KVL_KV_FMT_F32;
    refp.budget = 0;
    if (kvl_pool_init((int)threads, &pool, &err) ||
        kvl_executor_cpu_init(m, pool, (int32_t)ctx, (int32_t)ctx, &fw, &err) ||
        kvl_kv_cache_init(hp, &kvp, &kvc, &err) ||
        (kl_ref && (kvl_executor_cpu_init(m, pool, (int32_t)ctx, (int32_t)ctx, &fwr, &err) ||
                    kvl_kv_cache_init(hp, &refp, &kvr, &err)))) {
        free(want);
        fprintf(stderr, "kvllm ppl: %s\n", err.msg);
        rc = err.status == KVL_E_NO_KV || err.status == KVL_E_UNSUPPORTED ? 2 : 1;
        goto done;
    }
    kvl_kv_cache_report(kvc, stderr);
    if (!kvl_cli_kv_check(cmd, &kvo, m, pool))
        goto done;
    double nll = 0, kl_sum = 0;
    long long n_pred = 0, n_docs = 0, n_windows = 0, n_cut = 0, n_agree = 0, n_nan = 0;
    double t0 = kvl_now();
    kvl_progress_begin(&pr, "ppl");
    at = 0;
    while ((max_docs < 0 || n_docs < max_docs) && next_doc(text, len, &at, blank_mode, &d)) {
        size_t n = 0;
        if (kvl_tokenizer_encode(m->tok, d.p, d.n, true, toks, cap, &n, &err)) {
            free(want);
            fprintf(stderr, "kvllm ppl: %s\n", err.msg);
            goto done;
        }
        n_docs++;
        /* windows of up to ctx tokens; each predicts its tokens 1..len-1 */
        for (size_t w0 = 0; w0 + 1 < n; w0 += (size_t)ctx - 1) {
            size_t wn = n - w0 < (size_t)ctx ? n - w0 : (size_t)ctx;
            kvl_batch b = {.n_tokens = (int32_t)wn, .tokens = toks + w0, .seq = seq, .pos = pos,
                           .logits = want};
            const float *lg, *lr = NULL;
            int32_t n_out;
            /* each window is a fresh sequence 0 */
            kvl_kv_cache_release(kvc, 0, &err);
            if (kvl_executor_run_cache(fw, kvc, &b, &lg, &n_out, &err)) {
                free(want);
                fprintf(stderr, "kvllm ppl: %s\n", err.msg);
                goto done;
            }
            if (kvr) {
                kvl_kv_cache_release(kvr, 0, &err);
                if (kvl_executor_run_cache(fwr, kvr, &b, &lr, &n_out, &err)) {
                    free(want);
                    fprintf(stderr, "kvllm ppl: reference: %s\n", err.msg);
                    goto done;
                }
            }
            n_windows++;
            for (size_t i = 0; i + 1 < wn; i++) {
                const float *row = lg + i * (size_t)hp->n_vocab;
                float mx;
                double lse = log_sum_exp(row, hp->n_vocab, &mx);
                nll += -((double)row[toks[w0 + i + 1]] - mx - lse);
                n_pred++;
                if (lr) {
                    const float *rr = lr + i * (size_t)hp->n_vocab;
                    bool same;
                    const double kl = kvl_logits_kl(rr, row, hp->n_vocab, &same);
                    kl_sum += kl;
                    n_agree += same;
                    n_nan += isinf(kl);
                }
            }
            if (w0 + wn >= n)
                break;
            if (!windows) {
                n_cut++;
                break;
            }
        }
        if (max_docs > 0)
            kvl_progress_update(&pr, (uint64_t)n_docs, (uint64_t)max_docs);
        else
            kvl_progress_update(&pr, at, len);
    }
    kvl_progress_end(&pr);
    free(want);
    double dt = kvl_now() - t0;
    if (n_pred == 0) {
        fprintf(stderr, "kvllm ppl: %s has no tokens to predict\n", file);
        goto done;
    }
    double mean = nll / (double)n_pred;
    printf("documents %lld\ntruncated %lld\npredicted_tokens %lld\nwindows %lld\nnll %.6f\nppl %.6f\n",
           n_docs, n_cut, n_pred, n_windows, mean, exp(mean));
    printf("kv_type_k %s\nkv_type_v %s\n", kvl_kv_format_get(kvp.k_fmt)->name,
           kvl_kv_format_get(kvp.v_fmt)->name);
    if (kvr)
        printf("kl_mean %.6g\ntop1_agree %.6f\n", kl_sum / (double)n_pred,
               (double)n_agree / (double)n_pred);
    fprintf(stderr, "kvllm ppl: %lld tokens in %.2f s (%.1f tokens/s)\n", n_pred, dt,
            dt > 0 ? (double)n_pred / dt : 0.0);
    if (n_nan) { /* a quality gate fails on NaN */
        fprintf(stderr, "kvllm ppl: --kl-ref: %lld of %lld positions have NaN logits (KL inf)\n",
                n_nan, n_pred);
        goto done;
    }
    rc = 0;
done:
    kvl_progress_end(&pr);
    free(text);
    free(toks);
    free(seq);
    free(pos);
    kvl_kv_cache_free(kvc);
    kvl_kv_cache_free(kvr);
    kvl_executor_free(fwr);
    kvl_executor_free(fw);
    kvl_pool_free(pool);
    kvl_model_free(m);
    kvl_unmap_file(&tf);
    return rc;
}
