/*
 * Engine configuration: the public kvl_engine_params resolved once against
 * a model into what the KV cache, the scheduler and the executor take.
 * Every default lives here (docs/engine.md gives their reasons):
 *
 *   KV formats   auto: f32 when the attention weights are f32 (the exact
 *                reference) or the layout is contiguous, else f16
 *   block size   the formats' default (kvl_plan_default_block_size)
 *   KV budget    kv_mem; else kv_mem_fraction of MemAvailable; else what
 *                max_seqs full contexts need, capped at half of
 *                MemAvailable (never a surprise 20 GiB for a model that
 *                claims a 16M-token context)
 */
#ifndef KVL_ENGINE_CONFIG_H
#define KVL_ENGINE_CONFIG_H

#include "kv/kv_cache.h"

typedef struct kvl_engine_resolved {
    kvl_engine_params p;    /* with every default filled in */
    kvl_kv_cache_params kv; /* budget, formats, slots, context */
    char budget_reason[128];
} kvl_engine_resolved;

/* The "auto" KV format: f32 when the attention weights are f32 or the
 * layout is contiguous, else f16. This function can't fail. */
kvl_kv_format kvl_engine_default_kv_format(const kvl_model *m, kvl_kv_layout layout);

/* KVL_E_INVALID naming the field and its range on a bad parameter. */
kvl_status kvl_engine_resolve(const kvl_model *m, const kvl_engine_params *p,
                              kvl_engine_resolved *out, kvl_error *err);

#endif
