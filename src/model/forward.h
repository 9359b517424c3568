/*
 * The llama forward pass over a flattened batch: tokens of several
 * sequences, each with its sequence id and position, processed together so
 * that the prompt runs as matrix-matrix products and many decoding sequences
 * share one pass over the weights.
 *
 * Attention reads and writes K/V only through kvl_kv_iface, so the KV store
 * (contiguous, paged, quantized) can change without touching this file.
 */
#ifndef KVL_FORWARD_H
#define KVL_FORWARD_H

#include "core/pool.h"
#include "model/model.h"

/*
 * The KV-cache seam. Within one forward call, for each layer, store() is
 * called for every token of the batch before attend() is called for any of
 * them, so a prompt chunk sees its own earlier positions.
 */
typedef struct kvl_kv_iface {
    void *ctx;
    /* Store this token's keys and values: k and v are (n_kv_heads, head_dim)
     * floats, already rotated (k). */
    void (*store)(void *ctx, int32_t layer, int32_t seq, int32_t pos, const float *k,
                  const float *v);
    /* For query heads [h0, h1): out[h] = sum_p softmax_p(q[h].K[p] * scale) V[p]
     * over positions p in [0, n_ctx) of seq, where K/V come from KV head
     * h / (n_heads / n_kv_heads). q and out are (n_heads, head_dim) floats;
     * scratch holds at least n_ctx floats. Called concurrently from several
     * threads with disjoint head ranges or tokens: it must not mutate
     * shared state. */
    void (*attend)(void *ctx, int32_t layer, int32_t seq, int32_t n_ctx, const float *q, float *out,
                   int32_t h0, int32_t h1, float scale, float *scratch);
} kvl_kv_iface;

/* One flattened batch. */
typedef struct kvl_batch {
    int32_t n_tokens;
    const int32_t *tokens; /* (n_tokens) */
    const int32_t *seq;    /* (n_tokens) sequence id of each token */
    const int32_t *pos;    /* (n_tokens) position of each token in its sequence */
    const bool *logits;    /* (n_tokens) whether to compute logits; NULL = last only */
} kvl_batch;

typedef struct kvl_forward kvl_forward;

/* Allocate every buffer for batches of up to max_tokens tokens with up to
 * max_ctx positions per sequence. pool may be NULL. */
kvl_status kvl_forward_init(const kvl_model *m, int32_t max_tokens, int32_t max_ctx, kvl_pool *pool,
                            kvl_forward **out, kvl_error *err);
void kvl_forward_free(kvl_forward *f);

/*
 * Run the batch. Logits of the tokens that asked for them are written in
 * batch order to *logits_out, (n_out, n_vocab) floats owned by f and valid
 * until the next call. Fails with KVL_E_INVALID (nothing run) on a token id
 * or position out of range or a batch over max_tokens.
 */
kvl_status kvl_forward_run(kvl_forward *f, const kvl_batch *b, const kvl_kv_iface *kv,
                           const float **logits_out, int32_t *n_out, kvl_error *err);

#endif
