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
    free(x);
}

static const kvl_executor_ops cpu_ops = {.name = "cpu", .run = cpu_run, .destroy = cpu_destroy};

kvl_status kvl_executor_cpu_init(const kvl_model *m, kvl_pool *pool, int32_t max_tokens,
                                 int32_t max_ctx, kvl_executor **out, kvl_error *err) {
    kvl_executor *x = calloc(1, sizeof *x);
    if (!x)
        return kvl_errorf(err, KVL_E_NOMEM, "executor: out of memory");
    kvl_forward *f;
    kvl_status st = kvl_forward_init(m, max_tokens, max_ctx, pool, &f, err);
    if (st) {
        free(x);
        return st;
    }
    *x = (kvl_executor){.ops = &cpu_ops,
                        .impl = f,
                        .max_tokens = max_tokens,
                        .n_vocab = (int32_t)m->hp.n_vocab};
    *out = x;
    return KVL_OK;
}
