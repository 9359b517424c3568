/*
 * llama2.c checkpoints (the fp32 "version 0" format): seven little-endian
 * int32 header fields (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len; a negative vocab_size means a separate classifier),
 * then the fp32 weights in this order:
 *
 *   token_embedding (vocab, dim) | rms_att (L, dim) | wq (L, H*hd, dim)
 *   wk (L, KV*hd, dim) | wv (L, KV*hd, dim) | wo (L, dim, H*hd)
 *   rms_ffn (L, dim) | w1 (L, ffn, dim) | w2 (L, dim, ffn) | w3 (L, ffn, dim)
 *   rms_final (dim) | freq_cis_real (seq_len, hd/2) | freq_cis_imag (same)
 *   [wcls (vocab, dim) when vocab_size < 0]
 *
 * Every header field is range-checked and the file must be exactly as long
 * as the header implies (no more, no less) before a single weight pointer is formed. Weights point
 * into the caller's buffer.
 */
#include "model/model.h"

#include <stdlib.h>

kvl_status kvl_llama2c_parse(const uint8_t *buf, size_t size, kvl_model **out, kvl_error *err) {
    static const char *names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                   "n_kv_heads", "vocab_size", "seq_len"};
    if (size < 28)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "llama2c: file of %zu bytes is shorter than the 28-byte header", size);
    int32_t h[7];
    memcpy(h, buf, sizeof h);
    for (int i = 0; i < 7; i++) {
        if (i == 5)
            continue;
        if (h[i] <= 0)
            return kvl_errorf(err, KVL_E_FORMAT, "llama2c: header %s %d must be > 0", names[i],
                              h[i]);
    }
    if (h[5] == 0 || h[5] == INT32_MIN)
        return kvl_errorf(err, KVL_E_FORMAT, "llama2c: header vocab_size %d is invalid", h[5]);
    bool shared = h[5] > 0;
    kvl_hparams hp = {
        .dim = h[0],
        .ffn_dim = h[1],
        .n_layers = h[2],
        .n_heads = h[3],
        .n_kv_heads = h[4],
        .n_vocab = shared ? h[5] : -(int64_t)h[5],
        .ctx_len = h[6],
        .rope_base = 10000.0f,
        .rms_eps = 1e-5f,
    };
    if (hp.dim % hp.n_heads != 0)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "llama2c: header dim %lld is not a multiple of n_heads %lld",
                          (long long)hp.dim, (long long)hp.n_heads);
    hp.head_dim = hp.dim / hp.n_heads;
    hp.rope_dim = hp.head_dim;
    kvl_status st = kvl_hparams_validate(&hp, err);
    if (st)
        return st;
    if (hp.head_dim % 2 != 0)
        return kvl_errorf(err, KVL_E_FORMAT, "llama2c: head size %lld is odd",
                          (long long)hp.head_dim);

    /* Element counts of each section; all products are bounded by the
     * validated limits (< 2^62), so the only check needed is the total. */
    int64_t D = hp.dim, F = hp.ffn_dim, L = hp.n_layers, V = hp.n_vocab;
    int64_t qd = hp.n_heads * hp.head_dim, kvd = hp.n_kv_heads * hp.head_dim;
    int64_t sec[] = {
        V * D,                    /* token_embedding */
        L * D,                    /* rms_att */
        L * qd * D,               /* wq */
        L * kvd * D,              /* wk */
        L * kvd * D,              /* wv */
        L * D * qd,               /* wo */
        L * D,                    /* rms_ffn */
        L * F * D,                /* w1 */
        L * D * F,                /* w2 */
        L * F * D,                /* w3 */
        D,                        /* rms_final */
        hp.ctx_len * hp.head_dim, /* freq_cis real + imag */
        shared ? 0 : V * D,       /* wcls */
    };
    size_t total = 28;
    for (size_t i = 0; i < sizeof sec / sizeof sec[0]; i++) {
        size_t bytes;
        if (kvl_mul_overflow((size_t)sec[i], 4, &bytes) || kvl_add_overflow(total, bytes, &total))
            return kvl_errorf(err, KVL_E_FORMAT, "llama2c: weight size overflows");
    }
    /* the format has no count of its own: a file of another size is a
     * header that does not describe it (a smaller vocab_size than the
     * weights were saved with would read every later tensor shifted) */
    if (total != size)
        return kvl_errorf(err, KVL_E_FORMAT,
                          "llama2c: the header (dim %lld, hidden_dim %lld, n_layers %lld, "
                          "n_heads %lld, n_kv_heads %lld, vocab_size %d, seq_len %lld) needs a "
                          "file of %zu bytes but the file has %zu (%s)",
                          (long long)D, (long long)F, (long long)L, (long long)hp.n_heads,
                          (long long)hp.n_kv_heads, (int)h[5], (long long)hp.ctx_len, total, size,
                          total > size ? "too short" : "longer: the header does not match");

    kvl_model *m = calloc(1, sizeof *m);
    kvl_layer_weights *lw = calloc((size_t)L, sizeof *lw);
    if (!m || !lw) {
        free(m);
        free(lw);
        return kvl_errorf(err, KVL_E_NOMEM, "llama2c: cannot allocate %lld layers", (long long)L);
    }
    m->format = KVL_MODEL_LLAMA2C;
    m->hp = hp;
    m->layers = lw;
    const float *p = (const float *)(const void *)(buf + 28);
#define W(ne0_, ne1_) ((kvl_weight){.data = p, .type = KVL_TYPE_F32, .ne0 = (ne0_), .ne1 = (ne1_)})
    m->tok_embd = W(D, V);
    p += V * D;
    for (int64_t l = 0; l < L; l++, p += D)
        lw[l].attn_norm = W(D, 1);
    for (int64_t l = 0; l < L; l++, p += qd * D)
        lw[l].wq = W(D, qd);
    for (int64_t l = 0; l < L; l++, p += kvd * D)
        lw[l].wk = W(D, kvd);
    for (int64_t l = 0; l < L; l++, p += kvd * D)
        lw[l].wv = W(D, kvd);
    for (int64_t l = 0; l < L; l++, p += D * qd)
        lw[l].wo = W(qd, D);
    for (int64_t l = 0; l < L; l++, p += D)
        lw[l].ffn_norm = W(D, 1);
    for (int64_t l = 0; l < L; l++, p += F * D)
        lw[l].w_gate = W(D, F);
    for (int64_t l = 0; l < L; l++, p += D * F)
        lw[l].w_down = W(F, D);
    for (int64_t l = 0; l < L; l++, p += F * D)
        lw[l].w_up = W(D, F);
    m->output_norm = W(D, 1);
    p += D;
    p += hp.ctx_len * hp.head_dim;
    m->output = shared ? m->tok_embd : W(D, V);
#undef W
    m->weight_bytes = total - 28;
    *out = m;
    return KVL_OK;
}
