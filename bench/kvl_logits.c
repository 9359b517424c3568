/*
 * kvl_logits: the logits kvllm computes for the token sequence of
 * bench/llama_logits.c (tokens (37 i + 11) mod n_vocab at positions
 * 0..N-1, one batch, every position), written as N x n_vocab float32.
 *
 *   kvl_logits MODEL.gguf N OUT.f32 [--drop-rope-freqs]
 *
 * --drop-rope-freqs runs without the file's rope_freqs.weight, to show how
 * much the comparison would see if kvllm ignored it.
 * Built by bench/arch_vs_llamacpp.sh against build/'s static libraries.
 */
#include "kv/kv_contig.h"
#include "model/forward.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 4 && !(argc == 5 && !strcmp(argv[4], "--drop-rope-freqs"))) {
        fprintf(stderr, "usage: kvl_logits MODEL.gguf N OUT.f32 [--drop-rope-freqs]\n");
        return 2;
    }
    int n = atoi(argv[2]);
    kvl_error err = {0};
    kvl_model *m = NULL;
    kvl_forward *fw = NULL;
    kvl_kv_contig *kc = NULL;
    if (n >= 1 && kvl_model_load(argv[1], NULL, &m, &err) == KVL_OK && argc == 5)
        m->rope_freqs.data = NULL;
    if (n < 1 || !m || kvl_forward_init(m, n, n, NULL, &fw, &err) ||
        kvl_kv_contig_init(&m->hp, 1, n, &kc, &err)) {
        fprintf(stderr, "kvl_logits: %s\n", n < 1 ? "N must be > 0" : err.msg);
        return 1;
    }
    int32_t *tok = malloc((size_t)n * sizeof *tok), *seq = calloc((size_t)n, sizeof *seq);
    int32_t *pos = malloc((size_t)n * sizeof *pos);
    bool *want = malloc((size_t)n);
    for (int i = 0; i < n; i++) {
        tok[i] = (int32_t)((37 * (int64_t)i + 11) % m->hp.n_vocab);
        pos[i] = i;
        want[i] = true;
    }
    kvl_kv_iface kv = kvl_kv_contig_iface(kc);
    kvl_batch b = {n, tok, seq, pos, want};
    const float *lg;
    int32_t n_out;
    if (kvl_forward_run(fw, &b, &kv, &lg, &n_out, &err)) {
        fprintf(stderr, "kvl_logits: %s\n", err.msg);
        return 1;
    }
    FILE *f = fopen(argv[3], "wb");
    if (!f ||
        fwrite(lg, sizeof(float), (size_t)n * (size_t)m->hp.n_vocab, f) !=
            (size_t)n * (size_t)m->hp.n_vocab ||
        fclose(f) != 0) {
        fprintf(stderr, "kvl_logits: cannot write %s\n", argv[3]);
        return 1;
    }
    free(tok), free(seq), free(pos), free(want);
    kvl_kv_contig_free(kc);
    kvl_forward_free(fw);
    kvl_model_free(m);
    return 0;
}
