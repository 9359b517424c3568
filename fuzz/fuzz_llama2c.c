/*
 * fuzz_llama2c: libFuzzer target for the llama2.c checkpoint loader. Any
 * byte string is a candidate checkpoint: kvl_llama2c_parse must either fail
 * with a message (and no model), or return a model whose every weight lies
 * inside the input, which a one-token forward pass then reads end to end
 * under ASan. The input is copied so that reads past its end are caught.
 */
#include "kv/kv_contig.h"
#include "model/forward.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    kvl_model *m = NULL;
    kvl_error err = {0};
    kvl_status st = kvl_llama2c_parse(buf, size, &m, &err);
    if (st != KVL_OK) {
        if (m || !err.msg[0])
            __builtin_trap();
        free(buf);
        return 0;
    }
    /* keep the pass small: the fuzzer may find headers that are valid but big */
    const kvl_hparams *hp = &m->hp;
    if (hp->dim * hp->n_vocab <= (1 << 20) && hp->ffn_dim * hp->dim <= (1 << 20)) {
        kvl_forward *f = NULL;
        kvl_kv_contig *kc = NULL;
        int32_t ctx = hp->ctx_len < 2 ? (int32_t)hp->ctx_len : 2;
        if (kvl_forward_init(m, 2, ctx, NULL, &f, &err) == KVL_OK &&
            kvl_kv_contig_init(hp, 1, ctx, &kc, &err) == KVL_OK) {
            kvl_kv_iface kv = kvl_kv_contig_iface(kc);
            int32_t tok[2] = {0, (int32_t)(hp->n_vocab - 1)}, seq[2] = {0, 0}, pos[2] = {0, 1};
            kvl_batch b = {.n_tokens = ctx, .tokens = tok, .seq = seq, .pos = pos};
            const float *lg;
            int32_t n_out;
            if (kvl_forward_run(f, &b, &kv, &lg, &n_out, &err) != KVL_OK || n_out != 1)
                __builtin_trap();
        }
        kvl_kv_contig_free(kc);
        kvl_forward_free(f);
    }
    kvl_model_free(m);
    free(buf);
    return 0;
}
