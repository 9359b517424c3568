/* Engine defaults and their resolution against a model (config.h). */
#include "engine/config.h"

#include <stdio.h>
#include <string.h>

static const char *const k_preempt[] = {"auto", "recompute", "swap"};
static const char *const k_tier[] = {"off", "host", "file"};

/* The index of s in names[0..n), or -1. */
static int name_index(const char *const *names, int n, const char *s) {
    for (int k = 0; s && k < n; k++)
        if (!strcmp(s, names[k]))
            return k;
    return -1;
}

const char *kvl_preempt_mode_str(kvl_preempt_mode m) {
    return (unsigned)m < 3 ? k_preempt[m] : "?";
}

bool kvl_preempt_mode_parse(const char *s, kvl_preempt_mode *out) {
    int k = name_index(k_preempt, 3, s);
    if (k >= 0)
        *out = (kvl_preempt_mode)k;
    return k >= 0;
}

const char *kvl_prefix_tier_str(kvl_prefix_tier_mode m) {
    return (unsigned)m < 3 ? k_tier[m] : "?";
}

bool kvl_prefix_tier_parse(const char *s, kvl_prefix_tier_mode *out) {
    int k = name_index(k_tier, 3, s);
    if (k >= 0)
        *out = (kvl_prefix_tier_mode)k;
    return k >= 0;
}

kvl_engine_params kvl_engine_defaults(void) {
    return (kvl_engine_params){.n_threads = 0,
                               .kv_layout = KVL_KV_LAYOUT_PAGED,
                               .max_seqs = 16,
                               .max_batch_tokens = 256,
                               .max_queue = 1024,
                               .max_queue_tokens = 1 << 20,
                               .preempt = KVL_PREEMPT_AUTO,
                               .event_capacity = 4096,
                               .prefix_cache = true};
}

kvl_request_params kvl_request_defaults(void) {
    return (kvl_request_params){.max_tokens = 256,
                                .n = 1,
                                .temperature = 0.8f,
                                .top_k = 40,
                                .top_p = 0.95f,
                                .min_p = 0.05f,
                                .repeat_penalty = 1.0f,
                                .repeat_last_n = 64,
                                .kv_policy = {.sinks = KVL_KV_POLICY_DEFAULT_SINKS}};
}

kvl_kv_format kvl_engine_default_kv_format(const kvl_model *m, kvl_kv_layout layout) {
    return m->layers[0].wq.type == KVL_TYPE_F32 || layout == KVL_KV_LAYOUT_CONTIGUOUS
               ? KVL_KV_FMT_F32
               : KVL_KV_FMT_F16;
}

static kvl_status format_of(const char *name, const char *field, kvl_kv_format dflt,
                            kvl_kv_format *out, kvl_error *err) {
    if (!name) {
        *out = dflt;
        return KVL_OK;
    }
    if (!kvl_kv_format_parse(name, out))
        return kvl_errorf(err, KVL_E_INVALID, "engine: %s '%s' is not a KV format (%s)", field,
                          name, kvl_kv_format_names());
    return KVL_OK;
}

static kvl_status range(const char *field, long long v, long long lo, long long hi,
                        kvl_error *err) {
    if (v < lo || v > hi)
        return kvl_errorf(err, KVL_E_INVALID, "engine: %s %lld outside [%lld, %lld]", field, v, lo,
                          hi);
    return KVL_OK;
}

kvl_status kvl_engine_resolve(const kvl_model *m, const kvl_engine_params *in,
                              kvl_engine_resolved *out, kvl_error *err) {
    kvl_engine_resolved r = {.p = in ? *in : kvl_engine_defaults()};
    kvl_engine_params *p = &r.p;
    const kvl_hparams *hp = &m->hp;
    if (p->max_ctx == 0)
        p->max_ctx = (int32_t)(hp->ctx_len < KVL_MAX_CTX ? hp->ctx_len : KVL_MAX_CTX);
    kvl_status st;
    if ((st = range("n_threads", p->n_threads, 0, 512, err)) ||
        (st = range("max_ctx", p->max_ctx, 1, hp->ctx_len, err)) ||
        (st = range("max_seqs", p->max_seqs, 1, KVL_KV_MAX_SEQS, err)) ||
        (st = range("max_batch_tokens", p->max_batch_tokens, 1, 65536, err)) ||
        (st = range("max_queue", p->max_queue, 0, 1 << 24, err)) ||
        (st = range("max_queue_tokens", p->max_queue_tokens, 0, (long long)1 << 40, err)) ||
        (st = range("block_size", p->block_size, 0, KVL_KV_MAX_BLOCK_SIZE, err)) ||
        (st = range("event_capacity", p->event_capacity, 16, 1 << 22, err)) ||
        (st = range("preempt", p->preempt, KVL_PREEMPT_AUTO, KVL_PREEMPT_SWAP, err)) ||
        (st = range("prefix_tier", p->prefix_tier, KVL_PREFIX_TIER_OFF, KVL_PREFIX_TIER_FILE,
                    err)) ||
        (st = range("kv_layout", p->kv_layout, KVL_KV_LAYOUT_PAGED, KVL_KV_LAYOUT_CONTIGUOUS, err)))
        return st;
    if (p->prefix_tier == KVL_PREFIX_TIER_HOST && (!p->swap_mem || p->swap_file))
        return kvl_errorf(err, KVL_E_INVALID,
                          "engine: prefix_tier host lives in the swap area in memory: it needs "
                          "swap_mem > 0 (is %zu) and no swap_file (is %s)",
                          p->swap_mem, p->swap_file ? p->swap_file : "none");
    if (p->prefix_tier == KVL_PREFIX_TIER_FILE && (!p->swap_mem || !p->swap_file))
        return kvl_errorf(err, KVL_E_INVALID,
                          "engine: prefix_tier file lives in the swap file: it needs swap_mem > 0 "
                          "(is %zu) and a swap_file (is none)",
                          p->swap_mem);
    if (!(p->kv_mem_fraction >= 0 && p->kv_mem_fraction <= 1))
        return kvl_errorf(err, KVL_E_INVALID, "engine: kv_mem_fraction %g outside [0, 1]",
                          p->kv_mem_fraction);
    kvl_kv_format dflt = kvl_engine_default_kv_format(m, p->kv_layout);
    kvl_kv_cache_params kv = kvl_kv_cache_defaults();
    kv.layout = p->kv_layout;
    kv.block_size = p->block_size;
    kv.max_seqs = p->max_seqs;
    kv.max_ctx = p->max_ctx;
    if ((st = format_of(p->kv_type_k, "kv_type_k", dflt, &kv.k_fmt, err)) ||
        (st = format_of(p->kv_type_v, "kv_type_v", dflt, &kv.v_fmt, err)))
        return st;
    long long avail = kvl_proc_kb("/proc/meminfo", "MemAvailable");
    if (p->kv_mem) {
        kv.budget = p->kv_mem;
        snprintf(r.budget_reason, sizeof r.budget_reason, "kv_mem as given");
    } else if (p->kv_mem_fraction > 0) {
        if (avail <= 0)
            return kvl_errorf(
                err, KVL_E_IO,
                "engine: kv_mem_fraction: cannot read MemAvailable from /proc/meminfo");
        kv.budget = (size_t)((double)avail * p->kv_mem_fraction);
        snprintf(r.budget_reason, sizeof r.budget_reason, "%.0f%% of MemAvailable (%lld MiB)",
                 100 * p->kv_mem_fraction, avail >> 20);
    } else {
        size_t need;
        if ((st = kvl_kv_cache_default_budget(hp, &kv, &need, err)))
            return st;
        kv.budget = need;
        snprintf(r.budget_reason, sizeof r.budget_reason, "what %d sequence%s of %d positions need",
                 p->max_seqs, p->max_seqs == 1 ? "" : "s", p->max_ctx);
        if (avail > 0 && need > (size_t)avail / 2) {
            kv.budget = (size_t)avail / 2;
            snprintf(r.budget_reason, sizeof r.budget_reason,
                     "half of MemAvailable (%lld MiB); %d full contexts would need %zu MiB",
                     avail >> 20, p->max_seqs, need >> 20);
        }
    }
    r.kv = kv;
    *out = r;
    return KVL_OK;
}
