/*
 * Executors: the dispatch shared by all of them and the CPU executor, a
 * thin owner of one kvl_forward. Nothing here allocates after init.
 */
#include "engine/executor.h"

#include <stdlib.h>

kvl_status kvl_executor_run(kvl_executor *x, const kvl_batch *b, const kvl_kv_iface *kv,
                            const float **logits, int32_t *n_out, kvl_error *err) {
    kvl_status st = x->ops->run(x, b, kv, logits, n_out, err);
    if (st == KVL_OK && x->tap && *n_out > 0)
        x->tap(x->tap_user, *logits, *n_out, x->n_vocab);
    return st;
}

kvl_status kvl_executor_run_cache(kvl_executor *x, kvl_kv_cache *kvc, const kvl_batch *b,
                                  const float **logits, int32_t *n_out, kvl_error *err) {
    int32_t n = 0;
    for (int32_t i = 0; i < b->n_tokens; i++) {
        int32_t k = 0;
        while (k < n && x->rs_seq[k] != b->seq[i])
            k++;
        if (k == n) {
            x->rs_seq[n] = b->seq[i];
            x->rs_n[n++] = 0;
        }
        int32_t need = b->pos[i] + 1 - kvl_kv_cache_len(kvc, b->seq[i]);
        if (need > x->rs_n[k])
            x->rs_n[k] = need;
    }
    kvl_status st = kvl_kv_cache_reserve_batch(kvc, n, x->rs_seq, x->rs_n, err);
    if (st)
        return st;
    kvl_kv_iface kv = kvl_kv_cache_iface(kvc);
    return kvl_executor_run(x, b, &kv, logits, n_out, err);
}

void kvl_executor_set_tap(kvl_executor *x, kvl_logits_tap tap, void *user) {
    x->tap = tap;
    x->tap_user = user;
}

void kvl_executor_free(kvl_executor *x) {
    if (x)
        x->ops->destroy(x);
}

static kvl_status cpu_run(kvl_executor *x, const kvl_batch *b, const kvl_kv_iface *kv,
                          const float **logits, int32_t *n_out, kvl_error *err) {
    return kvl_forward_run(x->impl, b, kv, logits, n_out, err);
}

static void cpu_destroy(kvl_executor *x) {
    kvl_forward_free(x->impl);
    free(x->rs_seq);
    free(x->rs_n);
    free(x);
}

static const kvl_executor_ops cpu_ops = {.name = "cpu", .run = cpu_run, .destroy = cpu_destroy};

kvl_status kvl_executor_cpu_init(const kvl_model *m, kvl_pool *pool, int32_t max_tokens,
                                 int32_t max_ctx, kvl_executor **out, kvl_error *err) {
    kvl_executor *x = calloc(1, sizeof *x);
    int32_t *rs_seq = malloc((size_t)(max_tokens > 0 ? max_tokens : 1) * sizeof *rs_seq);
    int32_t *rs_n = malloc((size_t)(max_tokens > 0 ? max_tokens : 1) * sizeof *rs_n);
    if (!x || !rs_seq || !rs_n) {
        free(x);
        free(rs_seq);
        free(rs_n);
        return kvl_errorf(err, KVL_E_NOMEM, "executor: out of memory");
    }
    kvl_forward *f;
    kvl_status st = kvl_forward_init(m, max_tokens, max_ctx, pool, &f, err);
    if (st) {
        free(x);
        free(rs_seq);
        free(rs_n);
        return st;
    }
    *x = (kvl_executor){.ops = &cpu_ops,
                        .impl = f,
                        .max_tokens = max_tokens,
                        .n_vocab = (int32_t)m->hp.n_vocab,
                        .rs_seq = rs_seq,
                        .rs_n = rs_n};
    *out = x;
    return KVL_OK;
}
