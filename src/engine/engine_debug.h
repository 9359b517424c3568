/*
 * Hooks into an engine for kvllm's own front ends and tests, outside the
 * public API: the logits tap (--dump-logits), the KV cache's report, and
 * the internal state checks the property tests run after every step.
 */
#ifndef KVL_ENGINE_DEBUG_H
#define KVL_ENGINE_DEBUG_H

#include "engine/executor.h"
#include "kv/kv_cache.h"

/* Every logits row the executor returns, in batch order. Set before the
 * first step. */
void kvl_engine_set_logits_tap(kvl_engine *e, kvl_logits_tap tap, void *user);
/* The start-up report of the KV cache (kvl_kv_cache_report). */
void kvl_engine_kv_report(kvl_engine *e, FILE *f);
/* Verify the scheduler's and the pool's invariants (docs/engine.md);
 * KVL_E_INVALID with the first broken one. Takes the lock; O(requests +
 * blocks). */
kvl_status kvl_engine_check(kvl_engine *e, kvl_error *err);
/* Preempt request id now, between steps (sched's kvl_sched_preempt). */
kvl_status kvl_engine_preempt(kvl_engine *e, uint64_t id, kvl_preempt_mode mode);
/* The engine's KV cache, for tests that assert exact block ids. Read it
 * only between steps, from the stepping thread. */
kvl_kv_cache *kvl_engine_kv_cache(kvl_engine *e);
/* Slot of sample si of request id (-1 when it holds none or is unknown). */
int32_t kvl_engine_slot_of(kvl_engine *e, uint64_t id, int32_t si);

#endif
