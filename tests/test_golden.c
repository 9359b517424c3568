/*
 * Golden outputs from an independent implementation (llama2.c run.c, fp32):
 * every greedy sequence of shared/golden/stories260K_greedy.tsv token for
 * token, and the teacher-forced logits of the first case within 1e-4, from
 * both stories260K.bin (+ tok512.bin) and stories260K.gguf. Also: the
 * prompt prefilled as one batch and fed one token at a time give the same
 * greedy tokens, and two sequences decoded in one batch match each alone.
 */
#include "core/pool.h"
#include "engine/sampler.h"
#include "kv/kv_contig.h"
#include "model/forward.h"
#include "testutil.h"

#include <stdlib.h>

#define MAXTOK 1024

typedef struct {
    char prompt[512];
    int budget;
    int n;
    int32_t toks[MAXTOK];
} golden_case;

static int load_cases(golden_case *cs, int max) {
    size_t n;
    char *txt = kvt_read_file(kvt_shared("golden/stories260K_greedy.tsv"), &n);
    if (!txt)
        return 0;
    txt[n] = '\0';
    int k = 0;
    char *save = NULL;
    for (char *line = strtok_r(txt, "\n", &save); line && k < max;
         line = strtok_r(NULL, "\n", &save)) {
        char *t1 = strchr(line, '\t');
        if (!t1)
            continue;
        char *t2 = strchr(t1 + 1, '\t');
        if (!t2)
            continue;
        golden_case *c = &cs[k];
        snprintf(c->prompt, sizeof c->prompt, "%.*s", (int)(t1 - line), line);
        c->budget = atoi(t1 + 1);
        c->n = 0;
        char *p = t2 + 1, *end;
        while (c->n < MAXTOK) {
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            c->toks[c->n++] = (int32_t)v;
            p = end;
        }
        k++;
    }
    free(txt);
    return k;
}

/* Greedy generation llama2.c-style: positions 0..budget-1 are fed; stops
 * when the model predicts BOS. prefill_batch feeds the prompt at once. */
static int generate(const kvl_model *m, kvl_pool *pool, const int32_t *prompt, int n_prompt,
                    int budget, bool prefill_batch, int32_t *out) {
    kvl_error err;
    kvl_forward *f = NULL;
    kvl_kv_contig *kc = NULL;
    if (kvl_forward_init(m, n_prompt, budget, pool, &f, &err) ||
        kvl_kv_contig_init(&m->hp, 1, budget, &kc, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        kvl_forward_free(f);
        return -1;
    }
    kvl_kv_iface kv = kvl_kv_contig_iface(kc);
    int n = 0;
    for (int i = 0; i < n_prompt; i++)
        out[n++] = prompt[i];
    int32_t seq[MAXTOK] = {0}, pos[MAXTOK];
    for (int i = 0; i < MAXTOK; i++)
        pos[i] = i;
    const float *lg;
    int32_t n_out;
    int fed = 0;
    if (prefill_batch) {
        kvl_batch b = {.n_tokens = n_prompt, .tokens = out, .seq = seq, .pos = pos};
        CHECK(kvl_forward_run(f, &b, &kv, &lg, &n_out, &err) == KVL_OK);
        fed = n_prompt;
    } else {
        for (fed = 0; fed < n_prompt; fed++) {
            kvl_batch b = {.n_tokens = 1, .tokens = out + fed, .seq = seq, .pos = pos + fed};
            CHECK(kvl_forward_run(f, &b, &kv, &lg, &n_out, &err) == KVL_OK);
        }
    }
    for (;;) {
        int32_t next = kvl_argmax(lg, (int32_t)m->hp.n_vocab);
        if (next == 1)
            break;
        out[n++] = next;
        if (fed >= budget)
            break;
        kvl_batch b = {.n_tokens = 1, .tokens = out + fed, .seq = seq, .pos = pos + fed};
        CHECK(kvl_forward_run(f, &b, &kv, &lg, &n_out, &err) == KVL_OK);
        fed++;
    }
    kvl_forward_free(f);
    kvl_kv_contig_free(kc);
    return n;
}

static void check_model(const char *path, golden_case *cs, int n_cases, kvl_pool *pool) {
    kvl_error err;
    kvl_model *m = NULL;
    if (kvl_model_load(path, NULL, &m, &err) != KVL_OK) {
        fprintf(stderr, "%s: %s\n", path, err.msg);
        CHECK(!"model loads");
        return;
    }
    int32_t *gen = malloc(MAXTOK * sizeof *gen);
    int32_t prompt[MAXTOK];
    for (int c = 0; c < n_cases; c++) {
        size_t np = 0;
        CHECK(kvl_tokenizer_encode(m->tok, cs[c].prompt, strlen(cs[c].prompt), true, prompt, MAXTOK,
                                   &np, &err) == KVL_OK);
        int n = generate(m, pool, prompt, (int)np, cs[c].budget, c % 2 == 0, gen);
        bool same = n == cs[c].n && memcmp(gen, cs[c].toks, (size_t)n * sizeof *gen) == 0;
        if (!same) {
            int at = 0;
            while (at < n && at < cs[c].n && gen[at] == cs[c].toks[at])
                at++;
            fprintf(stderr, "%s: case '%s': %d tokens vs golden %d, first difference at %d\n", path,
                    cs[c].prompt, n, cs[c].n, at);
        }
        CHECK(same);
    }
    /* one case prefilled token by token must equal the batched prefill */
    size_t np = 0;
    kvl_tokenizer_encode(m->tok, cs[0].prompt, strlen(cs[0].prompt), true, prompt, MAXTOK, &np,
                         &err);
    int32_t *gen2 = malloc(MAXTOK * sizeof *gen2);
    int n1 = generate(m, pool, prompt, (int)np, 64, true, gen);
    int n2 = generate(m, pool, prompt, (int)np, 64, false, gen2);
    CHECK(n1 == n2 && memcmp(gen, gen2, (size_t)n1 * sizeof *gen) == 0);
    free(gen2);

    /* teacher-forced logits of case 0 at positions 0..63 */
    size_t lb;
    float *ref = kvt_read_file(kvt_shared("golden/stories260K_once_logits.f32"), &lb);
    CHECK(ref && lb == 64 * 512 * sizeof(float));
    if (ref && cs[0].n >= 64) {
        kvl_forward *f = NULL;
        kvl_kv_contig *kc = NULL;
        CHECK(kvl_forward_init(m, 64, 64, pool, &f, &err) == KVL_OK);
        CHECK(kvl_kv_contig_init(&m->hp, 1, 64, &kc, &err) == KVL_OK);
        kvl_kv_iface kv = kvl_kv_contig_iface(kc);
        int32_t seq[64] = {0}, pos[64];
        bool want[64];
        for (int i = 0; i < 64; i++) {
            pos[i] = i;
            want[i] = true;
        }
        kvl_batch b = {
            .n_tokens = 64, .tokens = cs[0].toks, .seq = seq, .pos = pos, .logits = want};
        const float *lg;
        int32_t n_out;
        CHECK(kvl_forward_run(f, &b, &kv, &lg, &n_out, &err) == KVL_OK);
        CHECK_EQ_INT(n_out, 64);
        double worst = 0;
        for (int i = 0; i < 64 * 512; i++) {
            double d = fabs((double)lg[i] - (double)ref[i]);
            if (d > worst)
                worst = d;
        }
        printf("%s: max |logit - golden| = %.3g\n", path, worst);
        CHECK(worst < 1e-4);
        kvl_forward_free(f);
        kvl_kv_contig_free(kc);
    }
    free(ref);

    /* two sequences in one decode batch equal each decoded alone */
    {
        kvl_forward *f = NULL;
        kvl_kv_contig *kc = NULL;
        CHECK(kvl_forward_init(m, 8, 32, pool, &f, &err) == KVL_OK);
        CHECK(kvl_kv_contig_init(&m->hp, 2, 32, &kc, &err) == KVL_OK);
        kvl_kv_iface kv = kvl_kv_contig_iface(kc);
        int32_t a[4] = {1, 403, 407, 261}, bt[3] = {1, 274, 287};
        int32_t z[4] = {0, 0, 0, 0}, one[3] = {1, 1, 1}, p[4] = {0, 1, 2, 3};
        const float *lg;
        int32_t n_out;
        kvl_batch b1 = {.n_tokens = 4, .tokens = a, .seq = z, .pos = p};
        kvl_forward_run(f, &b1, &kv, &lg, &n_out, &err);
        int32_t na = kvl_argmax(lg, 512);
        kvl_batch b2 = {.n_tokens = 3, .tokens = bt, .seq = one, .pos = p};
        kvl_forward_run(f, &b2, &kv, &lg, &n_out, &err);
        int32_t nb = kvl_argmax(lg, 512);
        float alone_a[512], alone_b[512];
        /* alone: each sequence's next step by itself */
        kvl_batch s1 = {.n_tokens = 1, .tokens = &na, .seq = z, .pos = &p[3] + 1 - 0};
        int32_t pa = 4, pb = 3;
        s1.pos = &pa;
        kvl_forward_run(f, &s1, &kv, &lg, &n_out, &err);
        memcpy(alone_a, lg, sizeof alone_a);
        kvl_batch s2 = {.n_tokens = 1, .tokens = &nb, .seq = one, .pos = &pb};
        kvl_forward_run(f, &s2, &kv, &lg, &n_out, &err);
        memcpy(alone_b, lg, sizeof alone_b);
        /* together (re-storing the same K/V at the same positions) */
        int32_t tt[2] = {na, nb}, ts[2] = {0, 1}, tp[2] = {4, 3};
        bool w2[2] = {true, true};
        kvl_batch bb = {.n_tokens = 2, .tokens = tt, .seq = ts, .pos = tp, .logits = w2};
        CHECK(kvl_forward_run(f, &bb, &kv, &lg, &n_out, &err) == KVL_OK);
        CHECK_EQ_INT(n_out, 2);
        double worst = 0;
        for (int i = 0; i < 512; i++) {
            worst = fmax(worst, fabs(lg[i] - alone_a[i]));
            worst = fmax(worst, fabs(lg[512 + i] - alone_b[i]));
        }
        CHECK(worst < 1e-5);
        kvl_forward_free(f);
        kvl_kv_contig_free(kc);
    }
    free(gen);
    kvl_model_free(m);
}

int main(void) {
    static golden_case cs[64];
    int n = load_cases(cs, 64);
    CHECK(n >= 1);
    printf("%d golden cases\n", n);
    kvl_pool *pool = NULL;
    kvl_error err;
    CHECK(kvl_pool_init(2, &pool, &err) == KVL_OK);
    char bin[4096], gguf[4096];
    snprintf(bin, sizeof bin, "%s", kvt_shared("models/stories260K.bin"));
    snprintf(gguf, sizeof gguf, "%s", kvt_shared("models/stories260K.gguf"));
    check_model(bin, cs, n, pool);
    check_model(gguf, cs, n, pool);
    check_model(bin, cs, 2, NULL); /* single-threaded path too */
    kvl_pool_free(pool);
    return kvt_finish("test_golden");
}
