/*
 * The contiguous KV cache: the pre-paging baseline. Every sequence slot owns
 * one region sized for max_ctx positions, reserved at start-up whether it is
 * used or not. Kept behind the same kvl_kv_iface as the paged cache
 * (--kv-layout contiguous) so every comparison runs side by side in one
 * binary; its attention is bit-identical to the paged cache's.
 *
 *     kvl_kv_contig *c;
 *     if (kvl_kv_contig_init(&model->hp, n_seqs, max_ctx, &c, &err) != KVL_OK) ...
 *     kvl_kv_iface kv = kvl_kv_contig_iface(c);
 *     kvl_forward_run(f, &batch, &kv, ...);       // seq ids in [0, n_seqs)
 *     kvl_kv_contig_copy(c, 0, 1, n_prompt, &err); // fork seq 0 into seq 1
 *     kvl_kv_contig_free(c);
 */
#ifndef KVL_KV_CONTIG_H
#define KVL_KV_CONTIG_H

#include "model/forward.h"

typedef struct kvl_kv_contig kvl_kv_contig;

/* Allocate K and V for n_seqs sequences of max_ctx positions each (f32).
 * KVL_E_INVALID on a bad shape or count, KVL_E_LIMIT when the byte size
 * overflows, KVL_E_NOMEM when the heap refuses. */
kvl_status kvl_kv_contig_init(const kvl_hparams *hp, int32_t n_seqs, int32_t max_ctx,
                              kvl_kv_contig **out, kvl_error *err);
void kvl_kv_contig_free(kvl_kv_contig *c);

/* The store as a kvl_kv_iface (ctx = c). store() and attend() require seq in
 * [0, n_seqs) and pos/n_ctx within max_ctx (checked by KVL_ASSERT: the
 * caller validates batches against max_ctx before the forward pass). */
kvl_kv_iface kvl_kv_contig_iface(kvl_kv_contig *c);

/* Copy positions [0, n_pos) of every layer of sequence src into dst (fork).
 * KVL_E_INVALID (nothing copied) on a bad seq id or n_pos. src == dst is a
 * no-op. */
kvl_status kvl_kv_contig_copy(kvl_kv_contig *c, int32_t src, int32_t dst, int32_t n_pos,
                              kvl_error *err);

int32_t kvl_kv_contig_n_seqs(const kvl_kv_contig *c);
int32_t kvl_kv_contig_max_ctx(const kvl_kv_contig *c);
/* Bytes reserved for one sequence (K and V, all layers, max_ctx positions),
 * and for all of them. */
size_t kvl_kv_contig_seq_bytes(const kvl_kv_contig *c);
size_t kvl_kv_contig_bytes(const kvl_kv_contig *c);
/* Bytes per token position: 2 * n_layers * n_kv_heads * head_dim * 4. */
size_t kvl_kv_contig_bytes_per_token(const kvl_kv_contig *c);

#endif
