/*
 * kquant_conform: kvllm's K-quant weights against llama.cpp's, three ways.
 *
 *   kquant_conform quantize IN OUT [KIND] (KINDS below; default q4_k_m)
 *       llama.cpp's own quantizer (llama_model_quantize, the code behind
 *       llama-quantize) turns a kvllm mkmodel F16 file into OUT.
 *   kquant_conform dequant FILE
 *       every tensor of FILE of a type kvllm computes with, row by row:
 *       ggml's dequantizer (type_traits->to_float) against kvllm's
 *       kvl_dequantize_row; prints per type the values compared, how many
 *       differ in any bit, and the largest difference.
 *   kquant_conform logits REF QUANT [-n N] [-t T]
 *       N tokens (fixed pseudo-random ids) as one prompt through both
 *       engines on QUANT and on REF (the F16 file QUANT was made from), all
 *       logits kept; prints the RMS of each engine's QUANT logits against
 *       REF's (kvllm's F16 logits and llama.cpp's F16 logits), the RMS
 *       between the two engines on the same file, and top-1 agreements.
 *
 * Not built by CMake and never part of CI: it links llama.cpp's libraries
 * (built by bench/build_llamacpp.sh or any llama.cpp build) and kvllm's
 * static libraries. bench/kquant_conform.sh builds and runs it.
 */
#include "ggml.h"
#include "llama.h"

#include "kernels/kernels.h"
#include "kv/kv_contig.h"
#include "model/forward.h"
#include "model/gguf.h"
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_log(enum ggml_log_level level, const char *text, void *user) {
    (void)user;
    if (level == GGML_LOG_LEVEL_ERROR)
        fputs(text, stderr);
}

#define KINDS "q4_k_m|q4_k_s|q5_k_m|q6_k|q2_k|q3_k_s|q3_k_m|q3_k_l|q5_0|q5_1"

static int cmd_quantize(const char *in, const char *out, const char *kind) {
    struct llama_model_quantize_params qp = llama_model_quantize_default_params();
    qp.nthread = 2;
    static const struct {
        const char *name;
        enum llama_ftype ftype;
    } kinds[] = {
        {"q4_k_m", LLAMA_FTYPE_MOSTLY_Q4_K_M}, {"q4_k_s", LLAMA_FTYPE_MOSTLY_Q4_K_S},
        {"q5_k_m", LLAMA_FTYPE_MOSTLY_Q5_K_M}, {"q6_k", LLAMA_FTYPE_MOSTLY_Q6_K},
        {"q2_k", LLAMA_FTYPE_MOSTLY_Q2_K},     {"q3_k_s", LLAMA_FTYPE_MOSTLY_Q3_K_S},
        {"q3_k_m", LLAMA_FTYPE_MOSTLY_Q3_K_M}, {"q3_k_l", LLAMA_FTYPE_MOSTLY_Q3_K_L},
        {"q5_0", LLAMA_FTYPE_MOSTLY_Q5_0},     {"q5_1", LLAMA_FTYPE_MOSTLY_Q5_1},
    };
    size_t k = 0;
    while (k < sizeof kinds / sizeof kinds[0] && strcmp(kind, kinds[k].name))
        k++;
    if (k == sizeof kinds / sizeof kinds[0]) {
        fprintf(stderr, "kquant_conform: quantize: '%s' is not one of " KINDS "\n", kind);
        return 2;
    }
    qp.ftype = kinds[k].ftype;
    uint32_t rc = llama_model_quantize(in, out, &qp);
    if (rc) {
        fprintf(stderr, "kquant_conform: llama_model_quantize returned %u\n", rc);
        return 1;
    }
    return 0;
}

static int cmd_dequant(const char *path) {
    kvl_gguf *g = NULL;
    kvl_error err;
    if (kvl_gguf_open(path, &g, &err) != KVL_OK) {
        fprintf(stderr, "kquant_conform: %s\n", err.msg);
        return 1;
    }
    struct {
        uint64_t n, n_diff, n_tensors;
        double max_diff;
    } st[KVL_TYPE_COUNT] = {0};
    int64_t max_cols = 0;
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].ne[0] > max_cols)
            max_cols = g->tensors[i].ne[0];
    float *a = malloc(sizeof(float) * (size_t)max_cols);
    float *b = malloc(sizeof(float) * (size_t)max_cols);
    int status = 0;
    for (uint64_t i = 0; i < g->n_tensors && a && b; i++) {
        const kvl_gguf_tensor *t = &g->tensors[i];
        const size_t rb = kvl_row_bytes((kvl_type)t->type, t->ne[0]);
        if (rb == 0) {
            const char *nm = "?";
            kvl_type_info(t->type, NULL, NULL, &nm);
            fprintf(stderr, "tensor %.*s: type %s is not one kvllm computes with\n",
                    (int)t->name.len, t->name.ptr, nm);
            status = 1;
            continue;
        }
        const struct ggml_type_traits *tr = ggml_get_type_traits((enum ggml_type)t->type);
        const int64_t n_rows = (int64_t)(t->nbytes / rb);
        st[t->type].n_tensors++;
        for (int64_t r = 0; r < n_rows; r++) {
            const uint8_t *row = (const uint8_t *)t->data + (size_t)r * rb;
            if (t->type == KVL_TYPE_F32)
                memcpy(a, row, rb);
            else
                tr->to_float(row, a, t->ne[0]);
            kvl_dequantize_row((kvl_type)t->type, row, b, t->ne[0]);
            for (int64_t k = 0; k < t->ne[0]; k++) {
                st[t->type].n++;
                if (memcmp(&a[k], &b[k], 4)) {
                    st[t->type].n_diff++;
                    double d = fabs((double)a[k] - b[k]);
                    if (!(d <= st[t->type].max_diff))
                        st[t->type].max_diff = d;
                }
            }
        }
    }
    printf("| type | tensors | values | differing bits | max abs diff |\n|---|---|---|---|---|\n");
    for (int ty = 0; ty < KVL_TYPE_COUNT; ty++) {
        if (!st[ty].n)
            continue;
        const char *nm = "?";
        kvl_type_info((uint32_t)ty, NULL, NULL, &nm);
        printf("| %s | %llu | %llu | %llu | %.3g |\n", nm, (unsigned long long)st[ty].n_tensors,
               (unsigned long long)st[ty].n, (unsigned long long)st[ty].n_diff, st[ty].max_diff);
        if (st[ty].n_diff)
            status = 1;
    }
    free(a);
    free(b);
    kvl_gguf_free(g);
    return status;
}

/* All n positions' logits of tokens tok through kvllm: (n, n_vocab). */
static float *kvllm_logits(const char *path, const int32_t *tok, int n, int n_threads,
                           int *n_vocab) {
    kvl_error err;
    kvl_model *m = NULL;
    kvl_pool *pool = NULL;
    kvl_forward *f = NULL;
    kvl_kv_contig *kc = NULL;
    float *out = NULL;
    int32_t *seq = calloc((size_t)n, sizeof *seq), *pos = malloc(sizeof(int32_t) * (size_t)n);
    bool *want = malloc((size_t)n);
    if (kvl_model_load(path, NULL, &m, &err) || kvl_pool_init(n_threads, &pool, &err) ||
        kvl_forward_init(m, n, n, pool, &f, &err) || kvl_kv_contig_init(&m->hp, 1, n, &kc, &err)) {
        fprintf(stderr, "kquant_conform: kvllm: %s\n", err.msg);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        want[i] = true;
    }
    kvl_kv_iface kv = kvl_kv_contig_iface(kc);
    kvl_batch bt = {.n_tokens = n, .tokens = tok, .seq = seq, .pos = pos, .logits = want};
    const float *lg;
    int32_t n_out;
    if (kvl_forward_run(f, &bt, &kv, &lg, &n_out, &err) || n_out != n) {
        fprintf(stderr, "kquant_conform: kvllm forward: %s\n", err.msg);
        goto done;
    }
    *n_vocab = (int)m->hp.n_vocab;
    out = malloc(sizeof(float) * (size_t)n * (size_t)*n_vocab);
    if (out)
        memcpy(out, lg, sizeof(float) * (size_t)n * (size_t)*n_vocab);
done:
    kvl_kv_contig_free(kc);
    kvl_forward_free(f);
    kvl_pool_free(pool);
    kvl_model_free(m);
    free(seq);
    free(pos);
    free(want);
    return out;
}

static float *llama_logits(const char *path, const int32_t *tok, int n, int n_threads,
                           int *n_vocab) {
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(path, mp);
    if (!model) {
        fprintf(stderr, "kquant_conform: llama.cpp cannot load '%s'\n", path);
        return NULL;
    }
    *n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n + 8;
    cp.n_batch = cp.n_ubatch = (uint32_t)n;
    cp.n_threads = cp.n_threads_batch = n_threads;
    cp.type_k = cp.type_v = GGML_TYPE_F32;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    float *out = NULL;
    if (!ctx) {
        fprintf(stderr, "kquant_conform: llama.cpp context failed\n");
        llama_model_free(model);
        return NULL;
    }
    struct llama_batch bt = llama_batch_init(n, 0, 1);
    bt.n_tokens = n;
    for (int i = 0; i < n; i++) {
        bt.token[i] = tok[i];
        bt.pos[i] = i;
        bt.n_seq_id[i] = 1;
        bt.seq_id[i][0] = 0;
        bt.logits[i] = 1;
    }
    if (llama_decode(ctx, bt) == 0) {
        out = malloc(sizeof(float) * (size_t)n * (size_t)*n_vocab);
        for (int i = 0; out && i < n; i++)
            memcpy(out + (size_t)i * (size_t)*n_vocab, llama_get_logits_ith(ctx, i),
                   sizeof(float) * (size_t)*n_vocab);
    } else {
        fprintf(stderr, "kquant_conform: llama_decode failed\n");
    }
    llama_batch_free(bt);
    llama_free(ctx);
    llama_model_free(model);
    return out;
}

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

/* RMS of a - b over all n x v values, relative to the RMS of b. */
static double rel_rms(const float *a, const float *b, size_t nv) {
    double e = 0, s = 0;
    for (size_t i = 0; i < nv; i++) {
        e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        s += (double)b[i] * b[i];
    }
    return sqrt(e / (s > 0 ? s : 1));
}

/* Positions where argmax(a) == argmax(b), of those whose top-2 margin in b
 * is at least `margin` (near-ties are not counted). */
static void top1(const float *a, const float *b, int n, int v, double margin, int *agree,
                 int *counted) {
    *agree = *counted = 0;
    for (int i = 0; i < n; i++) {
        const float *pa = a + (size_t)i * v, *pb = b + (size_t)i * v;
        const int ib = argmax(pb, v);
        float second = -INFINITY;
        for (int k = 0; k < v; k++)
            if (k != ib && pb[k] > second)
                second = pb[k];
        if (pb[ib] - second < margin)
            continue;
        (*counted)++;
        *agree += argmax(pa, v) == ib;
    }
}

static int cmd_logits(const char *ref, const char *quant, int n, int t) {
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    uint64_t x = 0x243f6a8885a308d3ull;
    int v_kr = 0, v_kq = 0, v_lr = 0, v_lq = 0;
    /* token ids: BOS then pseudo-random ids past the control tokens */
    float *kr = NULL, *kq = NULL, *lr = NULL, *lq = NULL;
    kr = kvllm_logits(ref, (int32_t[]){1}, 1, t, &v_kr); /* vocab size */
    if (!kr || !tok)
        return 1;
    free(kr);
    tok[0] = 1;
    for (int i = 1; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        tok[i] = 3 + (int32_t)((x >> 33) % (uint64_t)(v_kr - 3));
    }
    kr = kvllm_logits(ref, tok, n, t, &v_kr);
    kq = kvllm_logits(quant, tok, n, t, &v_kq);
    lr = llama_logits(ref, tok, n, t, &v_lr);
    lq = llama_logits(quant, tok, n, t, &v_lq);
    if (!kr || !kq || !lr || !lq || v_kr != v_kq || v_kr != v_lr || v_kr != v_lq) {
        fprintf(stderr, "kquant_conform: logits failed or vocabularies differ\n");
        return 1;
    }
    const size_t nv = (size_t)n * (size_t)v_kr;
    const int v = v_kr;
    double sd = 0;
    for (size_t i = 0; i < nv; i++)
        sd += (double)kr[i] * kr[i];
    sd = sqrt(sd / (double)nv);
    const double margin = 0.01 * sd; /* near-ties: top-2 gap under 1% of the logits' RMS */
    int a1, c1, a2, c2, a3, c3, a4, c4;
    printf("%d positions, vocabulary %d, F16 logits RMS %.4g; rel RMS = RMS(a - b) / RMS(b)\n", n,
           v, sd);
    printf("| a | b | rel RMS | top-1 agreement (margin >= %.2g) |\n|---|---|---|---|\n", margin);
    top1(kr, lr, n, v, margin, &a1, &c1);
    printf("| kvllm F16 | llama.cpp F16 | %.3g | %d / %d |\n", rel_rms(kr, lr, nv), a1, c1);
    top1(kq, lq, n, v, margin, &a2, &c2);
    printf("| kvllm Q | llama.cpp Q | %.3g | %d / %d |\n", rel_rms(kq, lq, nv), a2, c2);
    top1(kq, kr, n, v, margin, &a3, &c3);
    printf("| kvllm Q | kvllm F16 | %.3g | %d / %d |\n", rel_rms(kq, kr, nv), a3, c3);
    top1(lq, kr, n, v, margin, &a4, &c4);
    printf("| llama.cpp Q | kvllm F16 | %.3g | %d / %d |\n", rel_rms(lq, kr, nv), a4, c4);
    int a5, c5;
    top1(lq, lr, n, v, margin, &a5, &c5);
    printf("| llama.cpp Q | llama.cpp F16 | %.3g | %d / %d |\n", rel_rms(lq, lr, nv), a5, c5);
    free(kr);
    free(kq);
    free(lr);
    free(lq);
    free(tok);
    return 0;
}

int main(int argc, char **argv) {
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    if (argc >= 4 && !strcmp(argv[1], "quantize"))
        return cmd_quantize(argv[2], argv[3], argc >= 5 ? argv[4] : "q4_k_m");
    if (argc == 3 && !strcmp(argv[1], "dequant"))
        return cmd_dequant(argv[2]);
    if (argc >= 4 && !strcmp(argv[1], "logits")) {
        int n = 256, t = 2;
        for (int i = 4; i + 1 < argc; i += 2) {
            if (!strcmp(argv[i], "-n"))
                n = atoi(argv[i + 1]);
            else if (!strcmp(argv[i], "-t"))
                t = atoi(argv[i + 1]);
        }
        if (n < 2 || n > 4096 || t < 1 || t > 64) {
            fprintf(stderr, "kquant_conform: -n 2..4096, -t 1..64\n");
            return 2;
        }
        return cmd_logits(argv[2], argv[3], n, t);
    }
    fprintf(stderr, "usage: kquant_conform quantize IN OUT [" KINDS "]\n"
                    "       kquant_conform dequant FILE\n"
                    "       kquant_conform logits REF QUANT [-n N] [-t T]\n");
    return 2;
}
