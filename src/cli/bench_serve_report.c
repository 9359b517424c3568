/*
 * kvllm bench serve's report: latency distributions in vllm bench serve's
 * definitions (mean, median, std, p50/p90/p99 by linear interpolation, as
 * numpy computes them), and the text, JSON and SVG outputs. Reads the run,
 * never the engine's internals (only kvl_engine_get_stats).
 */
#include "cli/bench_serve.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const CMD = KVL_SERVE_CMD;

/* ---- statistics ------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* v (seconds) is sorted in place. */
static dist dist_of(double *v, size_t n) {
    dist d = {.n = n};
    if (n == 0)
        return d;
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    d.mean = sum / (double)n;
    for (size_t i = 0; i < n; i++)
        sq += (v[i] - d.mean) * (v[i] - d.mean);
    d.std = sqrt(sq / (double)n) * 1e3;
    d.mean *= 1e3;
    d.median = d.p50 = kvl_quantile(v, n, 0.50) * 1e3;
    d.p90 = kvl_quantile(v, n, 0.90) * 1e3;
    d.p99 = kvl_quantile(v, n, 0.99) * 1e3;
    return d;
}

/* The engine's counters less what the warm-up request counted (base: zero
 * without one), so the report covers the measured requests only. */
static void take_off_warmup(kvl_engine_stats *st, const kvl_engine_stats *b) {
#define SUB(f) st->f -= b->f
    SUB(n_steps), SUB(n_requests_accepted), SUB(n_requests_finished), SUB(n_preemptions);
    SUB(n_preempt_recompute), SUB(n_preempt_swap), SUB(tokens_recomputed);
    SUB(n_blocks_swapped_out), SUB(n_blocks_swapped_in), SUB(bytes_swapped_out);
    SUB(bytes_swapped_in), SUB(tokens_prefilled), SUB(tokens_decoded), SUB(prefix_lookup_tokens);
    SUB(prefix_hit_tokens), SUB(prefix_hit_tokens_self), SUB(prefix_hit_tokens_pool);
    SUB(prefix_hit_tokens_tier), SUB(prefix_hit_free_blocks), SUB(prefix_swapin_hit_blocks);
    SUB(prefix_evicted_blocks), SUB(prefix_evicted_unused), SUB(prefix_demoted_blocks);
    SUB(prefix_promoted_blocks), SUB(prefix_tier_dropped), SUB(prefix_tier_dropped_swap);
    SUB(prefix_tier_seconds), SUB(prefill_s_saved);
#undef SUB
    st->prefix_hit_rate = st->prefix_lookup_tokens > 0
                              ? (double)(st->prefix_hit_tokens + st->prefix_hit_tokens_self) /
                                    (double)st->prefix_lookup_tokens
                              : 0;
}

bool kvl_serve_summarize(serve_run *sr, serve_report *rep) {
    memset(rep, 0, sizeof *rep);
    double *ttft = malloc((sr->n + 1) * sizeof *ttft), *tpot = malloc((sr->n + 1) * sizeof *tpot),
           *e2el = malloc((sr->n + 1) * sizeof *e2el);
    if (!ttft || !tpot || !e2el) {
        free(ttft);
        free(tpot);
        free(e2el);
        fprintf(stderr, "kvllm %s: out of memory\n", CMD);
        return false;
    }
    size_t n_ttft = 0, n_tpot = 0, n_e2el = 0;
    for (size_t i = 0; i < sr->n; i++) {
        const sreq *r = &sr->rq[i];
        if (!r->done || r->failed)
            continue;
        rep->completed++;
        rep->n_stop += r->reason == KVL_FINISH_STOP;
        rep->n_length += r->reason == KVL_FINISH_LENGTH;
        rep->in_tokens += r->in_len;
        rep->out_tokens += r->n_out;
        rep->requested_out += r->out_len;
        double lat = r->t_end - r->t_arrival;
        e2el[n_e2el++] = lat;
        if (r->n_out >= 1)
            ttft[n_ttft++] = r->t_first - r->t_arrival;
        if (r->n_out > 1)
            tpot[n_tpot++] = (lat - (r->t_first - r->t_arrival)) / (double)(r->n_out - 1);
    }
    rep->ttft = dist_of(ttft, n_ttft);
    rep->tpot = dist_of(tpot, n_tpot);
    rep->e2el = dist_of(e2el, n_e2el);
    rep->itl = dist_of(sr->itl, sr->n_itl);
    kvl_engine_get_stats(sr->e, &rep->st);
    take_off_warmup(&rep->st, &sr->base);
    free(ttft);
    free(tpot);
    free(e2el);
    return true;
}

/* ---- output ----------------------------------------------------------------- */

static void rule(const char *title, char c) {
    int n = 50, len = (int)strlen(title), left = (n - len) / 2, right = n - len - left;
    for (int i = 0; i < left; i++)
        putchar(c);
    fputs(title, stdout);
    for (int i = 0; i < right; i++)
        putchar(c);
    putchar('\n');
}

static void line_i(const char *name, long long v) { printf("%-40s %-10lld\n", name, v); }
static void line_f(const char *name, double v) { printf("%-40s %-10.2f\n", name, v); }

static void text_dist(const char *title, const char *metric, const dist *d) {
    rule(title, '-');
    char name[64];
    snprintf(name, sizeof name, "Mean %s (ms):", metric);
    line_f(name, d->mean);
    snprintf(name, sizeof name, "Median %s (ms):", metric);
    line_f(name, d->median);
    const double ps[3] = {d->p50, d->p90, d->p99};
    const int pw[3] = {50, 90, 99};
    for (int k = 0; k < 3; k++) {
        snprintf(name, sizeof name, "P%d %s (ms):", pw[k], metric);
        line_f(name, ps[k]);
    }
}

void kvl_serve_print_text(const serve_run *sr, const serve_report *rep) {
    const kvl_engine_stats *st = &rep->st;
    double dur = sr->duration > 0 ? sr->duration : 1e-9;
    char buf[64];
    rule(" Serving Benchmark Result ", '=');
    line_i("Successful requests:", (long long)rep->completed);
    line_i("Failed requests:", (long long)sr->n_failed);
    if (isfinite(sr->o->rate))
        line_f("Request rate configured (RPS):", sr->o->rate);
    else
        printf("%-40s %-10s\n", "Request rate configured (RPS):", "inf");
    if (sr->o->max_conc)
        line_i("Maximum request concurrency:", sr->o->max_conc);
    line_f("Benchmark duration (s):", sr->duration);
    line_i("Total input tokens:", (long long)rep->in_tokens);
    line_i("Total generated tokens:", (long long)rep->out_tokens);
    line_f("Request throughput (req/s):", (double)rep->completed / dur);
    line_f("Output token throughput (tok/s):", (double)rep->out_tokens / dur);
    line_f("Total Token throughput (tok/s):", (double)(rep->in_tokens + rep->out_tokens) / dur);
    line_i("Peak concurrent requests:", (long long)sr->peak_open);
    snprintf(buf, sizeof buf, "%zu stop / %zu length", rep->n_stop, rep->n_length);
    printf("%-40s %s\n", "Finish reasons:", buf);
    text_dist("Time to First Token", "TTFT", &rep->ttft);
    text_dist("Time per Output Token (excl. 1st token)", "TPOT", &rep->tpot);
    text_dist("Inter-token Latency", "ITL", &rep->itl);
    text_dist("End-to-end Latency", "E2EL", &rep->e2el);
    rule("Preemption and swap", '-');
    snprintf(buf, sizeof buf, "%lld (%lld / %lld)", (long long)st->n_preemptions,
             (long long)st->n_preempt_recompute, (long long)st->n_preempt_swap);
    printf("%-40s %s\n", "Preemptions (recompute / swap):", buf);
    line_i("Tokens recomputed:", (long long)st->tokens_recomputed);
    snprintf(buf, sizeof buf, "%lld of %lld (%.1f%%), %.2f s saved",
             (long long)st->prefix_hit_tokens, (long long)st->prefix_lookup_tokens,
             st->prefix_lookup_tokens
                 ? 100.0 * (double)st->prefix_hit_tokens / (double)st->prefix_lookup_tokens
                 : 0.0,
             st->prefill_s_saved);
    printf("%-40s %s\n", "Prefix-cache hits (prompt tokens):", buf);
    snprintf(buf, sizeof buf, "%lld pool / %lld tier (%s)", (long long)st->prefix_hit_tokens_pool,
             (long long)st->prefix_hit_tokens_tier, kvl_prefix_tier_str(sr->cfg.prefix_tier));
    printf("%-40s %s\n", "Prefix hits by where (pool / tier):", buf);
    snprintf(buf, sizeof buf, "%lld / %lld / %lld", (long long)st->prefix_demoted_blocks,
             (long long)st->prefix_promoted_blocks, (long long)st->prefix_evicted_unused);
    printf("%-40s %s\n", "Tier demoted / promoted / lost unused:", buf);
    snprintf(buf, sizeof buf, "%lld / %zu", (long long)st->n_blocks_swapped_out,
             st->bytes_swapped_out);
    printf("%-40s %s\n", "Swapped out (blocks / bytes):", buf);
    snprintf(buf, sizeof buf, "%lld / %zu", (long long)st->n_blocks_swapped_in,
             st->bytes_swapped_in);
    printf("%-40s %s\n", "Swapped in (blocks / bytes):", buf);
    rule("Batch size vs TPOT (decode-only steps)", '-');
    printf("%-10s %-10s %-16s %s\n", "Batch", "Steps", "Mean TPOT (ms)", "Output tok/s");
    for (int32_t b = 1; b < sr->n_buckets; b++) {
        const step_bucket *k = &sr->decode[b];
        if (k->n_steps)
            printf("%-10d %-10lld %-16.2f %.1f\n", b, (long long)k->n_steps,
                   1e3 * k->sum_s / (double)k->n_steps, (double)b * (double)k->n_steps / k->sum_s);
    }
    snprintf(buf, sizeof buf, "%lld, mean %.2f ms", (long long)sr->mixed.n_steps,
             sr->mixed.n_steps ? 1e3 * sr->mixed.sum_s / (double)sr->mixed.n_steps : 0.0);
    printf("%-40s %s\n", "Steps with prefill:", buf);
    rule("", '=');
}

/* s as a JSON string (quotes, backslashes and controls escaped). */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

/* s as SVG text (&, < and > escaped). */
static void xml_text(FILE *f, const char *s) {
    for (; *s; s++)
        if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else
            fputc(*s, f);
}

static void json_dist(const char *key, const dist *d) {
    printf(", \"mean_%s_ms\": %.4f, \"median_%s_ms\": %.4f, \"std_%s_ms\": %.4f, "
           "\"p50_%s_ms\": %.4f, \"p90_%s_ms\": %.4f, \"p99_%s_ms\": %.4f, \"n_%s\": %zu",
           key, d->mean, key, d->median, key, d->std, key, d->p50, key, d->p90, key, d->p99, key,
           d->n);
}

void kvl_serve_print_json(const serve_run *sr, const serve_report *rep) {
    const kvl_engine_stats *st = &rep->st;
    const kvl_engine_config *c = &sr->cfg;
    double dur = sr->duration > 0 ? sr->duration : 1e-9;
    printf("{\"backend\": \"kvllm\", \"model\": ");
    json_str(stdout, sr->mi.name);
    printf(", \"num_prompts\": %zu", sr->n);
    if (isfinite(sr->o->rate))
        printf(", \"request_rate\": %.6g", sr->o->rate);
    else
        printf(", \"request_rate\": \"inf\"");
    printf(", \"burstiness\": %.6g, \"max_concurrency\": %lld", sr->o->burstiness, sr->o->max_conc);
    printf(", \"duration\": %.6f, \"completed\": %zu, \"failed\": %zu", sr->duration,
           rep->completed, sr->n_failed);
    printf(", \"total_input_tokens\": %lld, \"total_output_tokens\": %lld, "
           "\"requested_output_tokens\": %lld, \"token_events\": %lld",
           (long long)rep->in_tokens, (long long)rep->out_tokens, (long long)rep->requested_out,
           (long long)sr->n_token_events);
    printf(", \"request_throughput\": %.6f, \"output_throughput\": %.6f, "
           "\"total_token_throughput\": %.6f, \"max_concurrent_requests\": %zu",
           (double)rep->completed / dur, (double)rep->out_tokens / dur,
           (double)(rep->in_tokens + rep->out_tokens) / dur, sr->peak_open);
    printf(", \"finish_stop\": %zu, \"finish_length\": %zu", rep->n_stop, rep->n_length);
    json_dist("ttft", &rep->ttft);
    json_dist("tpot", &rep->tpot);
    json_dist("itl", &rep->itl);
    json_dist("e2el", &rep->e2el);
    printf(", \"preemptions\": %lld, \"preemptions_recompute\": %lld, \"preemptions_swap\": %lld"
           ", \"tokens_recomputed\": %lld, \"swap_out_blocks\": %lld, \"swap_out_bytes\": %zu"
           ", \"swap_in_blocks\": %lld, \"swap_in_bytes\": %zu, \"engine_steps\": %lld",
           (long long)st->n_preemptions, (long long)st->n_preempt_recompute,
           (long long)st->n_preempt_swap, (long long)st->tokens_recomputed,
           (long long)st->n_blocks_swapped_out, st->bytes_swapped_out,
           (long long)st->n_blocks_swapped_in, st->bytes_swapped_in, (long long)st->n_steps);
    printf(", \"prefix_lookup_tokens\": %lld, \"prefix_hit_tokens\": %lld, "
           "\"prefix_hit_tokens_self\": %lld, \"prefix_evicted_blocks\": %lld, "
           "\"prefill_s_saved\": %.6f",
           (long long)st->prefix_lookup_tokens, (long long)st->prefix_hit_tokens,
           (long long)st->prefix_hit_tokens_self, (long long)st->prefix_evicted_blocks,
           st->prefill_s_saved);
    printf(", \"prefix_hit_tokens_pool\": %lld, \"prefix_hit_tokens_tier\": %lld, "
           "\"prefix_hit_rate\": %.6f, \"prefix_evicted_unused\": %lld, "
           "\"prefix_demoted_blocks\": %lld, \"prefix_promoted_blocks\": %lld, "
           "\"prefix_tier_dropped\": %lld, \"prefix_tier_seconds\": %.6f, \"prefix_tier\": \"%s\", "
           "\"prefix_swapin_hit_blocks\": %lld",
           (long long)st->prefix_hit_tokens_pool, (long long)st->prefix_hit_tokens_tier,
           st->prefix_hit_rate, (long long)st->prefix_evicted_unused,
           (long long)st->prefix_demoted_blocks, (long long)st->prefix_promoted_blocks,
           (long long)st->prefix_tier_dropped, st->prefix_tier_seconds,
           kvl_prefix_tier_str(c->prefix_tier), (long long)st->prefix_swapin_hit_blocks);
    kvl_serve_print_turns_json(sr);
    printf(", \"engine\": {\"threads\": %d, \"max_seqs\": %d, \"max_batch_tokens\": %d, "
           "\"max_ctx\": %d, \"kv_type_k\": \"%s\", \"kv_type_v\": \"%s\", \"block_size\": %d, "
           "\"kv_blocks\": %u, \"kv_mem\": %zu, \"capacity_tokens\": %lld, \"swap_mem\": %zu, "
           "\"preempt\": \"%s\"}",
           c->n_threads, c->max_seqs, c->max_batch_tokens, c->max_ctx, c->kv_type_k, c->kv_type_v,
           c->block_size, c->n_blocks, c->kv_mem, (long long)c->capacity_tokens, c->swap_mem,
           kvl_preempt_mode_str(c->preempt));
    printf(", \"batch_tpot\": [");
    bool first = true;
    for (int32_t b = 1; b < sr->n_buckets; b++) {
        const step_bucket *k = &sr->decode[b];
        if (!k->n_steps)
            continue;
        printf("%s{\"batch_size\": %d, \"steps\": %lld, \"mean_tpot_ms\": %.4f}", first ? "" : ", ",
               b, (long long)k->n_steps, 1e3 * k->sum_s / (double)k->n_steps);
        first = false;
    }
    printf("], \"mixed_steps\": %lld, \"mixed_step_mean_ms\": %.4f", (long long)sr->mixed.n_steps,
           sr->mixed.n_steps ? 1e3 * sr->mixed.sum_s / (double)sr->mixed.n_steps : 0.0);
    printf(", \"input_lens\": [");
    bool any = false;
    for (size_t i = 0; i < sr->n; i++)
        if (sr->rq[i].done && !sr->rq[i].failed) {
            printf("%s%d", any ? ", " : "", sr->rq[i].in_len);
            any = true;
        }
    printf("], \"output_lens\": [");
    any = false;
    for (size_t i = 0; i < sr->n; i++)
        if (sr->rq[i].done && !sr->rq[i].failed) {
            printf("%s%lld", any ? ", " : "", (long long)sr->rq[i].n_out);
            any = true;
        }
    printf("], \"ttfts\": [");
    any = false;
    for (size_t i = 0; i < sr->n; i++)
        if (sr->rq[i].done && !sr->rq[i].failed && sr->rq[i].n_out >= 1) {
            printf("%s%.6f", any ? ", " : "", sr->rq[i].t_first - sr->rq[i].t_arrival);
            any = true;
        }
    printf("], \"errors\": [");
    if (sr->n_failed)
        json_str(stdout, sr->first_error);
    printf("]}\n");
}

/* y-axis step: 1, 2 or 5 times a power of ten, about 5 ticks up to top. */
static double nice_step(double top) {
    double raw = top / 5, p = pow(10, floor(log10(raw))), m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

/* The batch size vs TPOT chart, hand-written SVG. false when the file
 * cannot be written. */
bool kvl_serve_write_svg(const serve_run *sr, const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "kvllm %s: --svg: cannot open '%s': %s\n", CMD, path, strerror(errno));
        return false;
    }
    const double W = 640, H = 400, L = 70, R = 20, T = 40, B = 60;
    int32_t bmax = 1;
    double ymax = 0;
    for (int32_t b = 1; b < sr->n_buckets; b++)
        if (sr->decode[b].n_steps) {
            bmax = b;
            double y = 1e3 * sr->decode[b].sum_s / (double)sr->decode[b].n_steps;
            ymax = y > ymax ? y : ymax;
        }
    double ystep = nice_step(ymax > 0 ? ymax * 1.1 : 1),
           ytop = ystep * ceil((ymax > 0 ? ymax * 1.1 : 1) / ystep);
    int32_t xstep = bmax <= 16 ? 1 : bmax <= 64 ? 4 : bmax <= 256 ? 16 : 64;
#define XS(b) (L + ((double)(b)-0.5) / ((double)bmax) * (W - L - R))
#define YS(y) (H - B - (y) / ytop * (H - T - B))
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n",
            W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f,
            "<text x=\"%.0f\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">kvllm bench "
            "serve: ",
            W / 2);
    xml_text(f, sr->mi.name);
    fprintf(f, ", batch size vs TPOT (decode-only steps)</text>\n");
    for (double y = 0; y <= ytop + 1e-9; y += ystep) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L,
                YS(y), W - R, YS(y));
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", L - 6, YS(y) + 4,
                y);
    }
    for (int32_t b = 1; b <= bmax; b += (b == 1 && xstep > 1) ? xstep - 1 : xstep)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d</text>\n", XS(b),
                H - B + 16, b);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", L,
            H - B, W - R, H - B);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n", L, T,
            L, H - B);
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">sequences decoding in the "
            "step (batch size)</text>\n",
            (L + W - R) / 2, H - 20);
    fprintf(f,
            "<text transform=\"translate(18 %.0f) rotate(-90)\" text-anchor=\"middle\">TPOT: "
            "step time (ms)</text>\n",
            (T + H - B) / 2);
    fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"");
    for (int32_t b = 1; b < sr->n_buckets; b++)
        if (sr->decode[b].n_steps)
            fprintf(f, "%.1f,%.1f ", XS(b),
                    YS(1e3 * sr->decode[b].sum_s / (double)sr->decode[b].n_steps));
    fprintf(f, "\"/>\n");
    for (int32_t b = 1; b < sr->n_buckets; b++)
        if (sr->decode[b].n_steps)
            fprintf(f,
                    "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#1f77b4\"><title>batch %d: "
                    "%.2f ms, %lld steps</title></circle>\n",
                    XS(b), YS(1e3 * sr->decode[b].sum_s / (double)sr->decode[b].n_steps), b,
                    1e3 * sr->decode[b].sum_s / (double)sr->decode[b].n_steps,
                    (long long)sr->decode[b].n_steps);
    int32_t n_points = 0;
    for (int32_t b = 1; b < sr->n_buckets; b++)
        n_points += sr->decode[b].n_steps > 0;
    for (int32_t b = 1; b < sr->n_buckets && n_points <= 24; b++)
        if (sr->decode[b].n_steps)
            fprintf(f,
                    "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\" font-size=\"10\" "
                    "fill=\"#555\">%lld</text>\n",
                    XS(b), YS(1e3 * sr->decode[b].sum_s / (double)sr->decode[b].n_steps) - 8,
                    (long long)sr->decode[b].n_steps);
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\" font-size=\"10\" fill=\"#555\">"
            "labels: steps measured</text>\n",
            W - R, T - 6);
    if (ymax == 0)
        fprintf(f,
                "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">no decode-only steps"
                "</text>\n",
                W / 2, H / 2);
    fprintf(f, "</svg>\n");
#undef XS
#undef YS
    bool ok = !ferror(f);
    if (fclose(f) || !ok) {
        fprintf(stderr, "kvllm %s: --svg: write to '%s' failed\n", CMD, path);
        return false;
    }
    return true;
}

/* ---- chat workloads: per turn ---------------------------------------------- */

typedef struct turn_row {
    int32_t n;
    double ttft_ms, prompt, cached;
} turn_row;

static turn_row turn_of(const serve_run *sr, size_t t) {
    turn_row w = {0};
    size_t ns = (size_t)sr->o->chat_sessions;
    for (size_t i = t * ns; i < (t + 1) * ns && i < sr->n; i++) {
        const sreq *r = &sr->rq[i];
        if (!r->done || r->failed || r->n_times == 0)
            continue;
        w.n++;
        w.ttft_ms += 1e3 * (r->t_first - r->t_arrival);
        w.prompt += r->in_len;
        w.cached += (double)r->cached;
    }
    if (w.n) {
        w.ttft_ms /= w.n;
        w.prompt /= w.n;
        w.cached /= w.n;
    }
    return w;
}

void kvl_serve_print_turns_text(const serve_run *sr) {
    if (!sr->o->chat_sessions)
        return;
    rule("Multi-turn chat: per turn (means over sessions)", '-');
    printf("%-6s %-10s %-14s %-14s %s\n", "Turn", "Sessions", "Prompt tokens", "Cached tokens",
           "TTFT (ms)");
    for (size_t t = 0; t < (size_t)sr->o->chat_turns; t++) {
        turn_row w = turn_of(sr, t);
        printf("%-6zu %-10d %-14.1f %-14.1f %.2f\n", t + 1, w.n, w.prompt, w.cached, w.ttft_ms);
    }
    rule("", '=');
}

void kvl_serve_print_turns_json(const serve_run *sr) {
    if (!sr->o->chat_sessions)
        return;
    printf(", \"chat_sessions\": %lld, \"chat_turns\": [", sr->o->chat_sessions);
    for (size_t t = 0; t < (size_t)sr->o->chat_turns; t++) {
        turn_row w = turn_of(sr, t);
        printf("%s{\"turn\": %zu, \"n\": %d, \"prompt_tokens\": %.1f, \"cached_tokens\": %.1f, "
               "\"ttft_ms\": %.3f, \"ttft_ms_by_session\": [",
               t ? ", " : "", t + 1, w.n, w.prompt, w.cached, w.ttft_ms);
        size_t ns = (size_t)sr->o->chat_sessions;
        for (size_t i = t * ns; i < (t + 1) * ns && i < sr->n; i++) {
            const sreq *r = &sr->rq[i];
            bool ok = r->done && !r->failed && r->n_times > 0;
            printf("%s%.3f", i > t * ns ? ", " : "", ok ? 1e3 * (r->t_first - r->t_arrival) : -1.0);
        }
        printf("]}");
    }
    printf("]");
}
