/*
 * The executor seam: the engine hands one flattened batch (prefill chunks
 * and decode tokens of many sequences, kvl_batch) and the KV store's
 * interface to an executor, which either computes it (the CPU executor,
 * over kvl_forward_run and the thread pool) or, behind the same seam,
 * prices it without computing (a simulated executor). The scheduler never
 * calls the forward pass; it only describes the step.
 *
 *     kvl_executor *x;
 *     kvl_executor_cpu_init(model, pool, max_tokens, max_ctx, &x, &err);
 *     kvl_executor_run(x, &batch, &kv, &logits, &n_out, &err);
 *     kvl_executor_free(x);
 *
 * A logits tap (kvl_executor_set_tap) sees every logits row the executor
 * returns, in batch order (kvllm run --dump-logits).
 */
#ifndef KVL_EXECUTOR_H
#define KVL_EXECUTOR_H

#include "kv/kv_cache.h"
#include "model/forward.h"

typedef struct kvl_executor kvl_executor;

/* Called after each run with the rows it returned: (n_rows, n_vocab). */
typedef void (*kvl_logits_tap)(void *user, const float *logits, int32_t n_rows, int32_t n_vocab);

typedef struct kvl_executor_ops {
    const char *name;
    /* Run (or price) the batch; logits of the tokens that asked for them,
     * (n_out, n_vocab) in batch order, owned by the executor until the
     * next call. On failure nothing was run. */
    kvl_status (*run)(kvl_executor *x, const kvl_batch *b, const kvl_kv_iface *kv,
                      const float **logits, int32_t *n_out, kvl_error *err);
    void (*destroy)(kvl_executor *x);
} kvl_executor_ops;

struct kvl_executor {
    const kvl_executor_ops *ops;
    void *impl;
    int32_t max_tokens; /* largest batch run() accepts */
    int32_t n_vocab;
    kvl_logits_tap tap;
    void *tap_user;
    int32_t *rs_seq, *rs_n; /* (max_tokens) run_cache's reservation */
};

/* The CPU executor: a kvl_forward for batches of up to max_tokens tokens and
 * max_ctx positions per sequence, computing on pool (may be NULL). It does
 * not own model or pool. On error nothing is allocated. */
kvl_status kvl_executor_cpu_init(const kvl_model *m, kvl_pool *pool, int32_t max_tokens,
                                 int32_t max_ctx, kvl_executor **out, kvl_error *err);

/* Dispatch through ops, then call the tap. This function never allocates. */
kvl_status kvl_executor_run(kvl_executor *x, const kvl_batch *b, const kvl_kv_iface *kv,
                            const float **logits, int32_t *n_out, kvl_error *err);
/* Reserve, then run: every sequence the batch writes first grows (all or
 * nothing, through kvc) to cover the largest position the batch gives it,
 * then the batch runs on kvc's store. The one "reserve, then forward" of
 * the tools that drive a model directly (ppl, bench, the KV check); the
 * engine's scheduler reserves for itself, since it decides preemptions.
 * KVL_E_NO_KV (nothing changed, nothing run) when the blocks are short.
 * Never allocates. */
kvl_status kvl_executor_run_cache(kvl_executor *x, kvl_kv_cache *kvc, const kvl_batch *b,
                                  const float **logits, int32_t *n_out, kvl_error *err);
void kvl_executor_set_tap(kvl_executor *x, kvl_logits_tap tap, void *user);
void kvl_executor_free(kvl_executor *x);

#endif
