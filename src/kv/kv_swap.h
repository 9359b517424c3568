/*
 * The swap area: the engine's second KV tier. A fixed number of swap
 * blocks, each the size of one pool block, in anonymous memory or in a
 * file (a tier larger than RAM), allocated once. A preempted sequence's
 * blocks are copied here and its pool blocks freed; later they are copied
 * back into newly reserved pool blocks.
 *
 *     kvl_kv_swap *sw;
 *     kvl_kv_swap_init(block_bytes, 1ull << 30, NULL, &sw, &err);
 *     uint32_t ids[8];
 *     if (kvl_kv_swap_alloc(sw, 8, ids, &err) == KVL_E_NO_KV) ... // nothing changed
 *     memcpy(kvl_kv_swap_block(sw, ids[0]), ..., block_bytes);
 *     kvl_kv_swap_release(sw, ids, 8);
 *
 * Invariant: every id is either on the free stack or held by exactly one
 * caller; n_free + held = n_blocks.
 */
#ifndef KVL_KV_SWAP_H
#define KVL_KV_SWAP_H

#include "core/core.h"

typedef struct kvl_kv_swap kvl_kv_swap;

/* budget / block_bytes blocks (0 blocks is allowed: swap disabled). path
 * NULL: anonymous memory; else the file is created (or truncated) and
 * mapped shared. KVL_E_IO names the file and the call that failed. */
kvl_status kvl_kv_swap_init(size_t block_bytes, size_t budget, const char *path, kvl_kv_swap **out,
                            kvl_error *err);
/* The same ledger without bytes, for a metadata-only KV cache (kvllm sim):
 * blocks are counted, kvl_kv_swap_block returns NULL. */
kvl_status kvl_kv_swap_init_meta(size_t block_bytes, size_t budget, kvl_kv_swap **out,
                                 kvl_error *err);
void kvl_kv_swap_free(kvl_kv_swap *sw);

uint32_t kvl_kv_swap_n_blocks(const kvl_kv_swap *sw); /* 0 for NULL */
uint32_t kvl_kv_swap_n_free(const kvl_kv_swap *sw);   /* 0 for NULL */
size_t kvl_kv_swap_block_bytes(const kvl_kv_swap *sw);

/* Take n blocks, all or nothing (KVL_E_NO_KV with the numbers). */
kvl_status kvl_kv_swap_alloc(kvl_kv_swap *sw, uint32_t n, uint32_t *ids, kvl_error *err);
void kvl_kv_swap_release(kvl_kv_swap *sw, const uint32_t *ids, uint32_t n);
uint8_t *kvl_kv_swap_block(kvl_kv_swap *sw, uint32_t id); /* NULL without bytes */

#endif
