/*
 * llama_logits: the logits llama.cpp computes for a fixed token sequence,
 * for bench/arch_vs_llamacpp.sh (the kvllm side is bench/kvl_logits.c).
 *
 *   llama_logits MODEL.gguf N OUT.f32
 *
 * Tokens t_i = (37 i + 11) mod n_vocab, i < N, at positions 0..N-1 of one
 * sequence, one batch, logits for every position; F32 K/V cache and no
 * flash attention so that only the model math differs. Writes N x n_vocab
 * float32 values (row per position). Not built by CMake: it needs
 * llama.cpp's headers and libraries (bench/build_llamacpp.sh).
 */
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: llama_logits MODEL.gguf N OUT.f32\n");
        return 2;
    }
    int n = atoi(argv[2]);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) {
        fprintf(stderr, "llama_logits: cannot load %s\n", argv[1]);
        return 1;
    }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n;
    cp.n_batch = (uint32_t)n;
    cp.n_ubatch = (uint32_t)n;
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) {
        fprintf(stderr, "llama_logits: cannot make a context\n");
        return 1;
    }
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    int n_vocab = llama_vocab_n_tokens(vocab);
    struct llama_batch b = llama_batch_init(n, 0, 1);
    for (int i = 0; i < n; i++) {
        b.token[i] = (llama_token)((37 * i + 11) % n_vocab);
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = n;
    if (llama_decode(ctx, b) != 0) {
        fprintf(stderr, "llama_logits: llama_decode failed\n");
        return 1;
    }
    FILE *f = fopen(argv[3], "wb");
    for (int i = 0; i < n && f; i++)
        fwrite(llama_get_logits_ith(ctx, i), sizeof(float), (size_t)n_vocab, f);
    if (!f || fclose(f) != 0) {
        fprintf(stderr, "llama_logits: cannot write %s\n", argv[3]);
        return 1;
    }
    llama_batch_free(b);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
