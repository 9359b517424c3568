/*
 * The KV codecs: from a cache format (core/dtype.h's kvl_kv_format) and a role
 * (K or V) to the chunk codec of src/kernels/kv_kern.h, and the encoders
 * that write floats into a chunk with their scales.
 *
 *     kvl_kvq_codec c = kvl_kv_codec_for(KVL_KV_FMT_INT4, KVL_KV_ROLE_K);  // I4C
 *     if (kvl_kv_codec_deferred(c))   // scale from a whole block: keep the
 *         ...                         // newest block in the f32 residual, then
 *     kvl_kv_encode_block(c, chunk, bs, hd, rows, bs);   // quantize it once
 *     else
 *         kvl_kv_encode_row(c, chunk, bs, hd, slot, x);   // per token, at store
 *
 * Non-finite input (defined, never UB):
 *   - f32 stores it as is; f16 and bf16 keep NaN and inf and clamp finite
 *     values past their range to the largest finite value (65504, 3.39e38);
 *   - the scaled formats give a group (fp8: the block; int8 and int4 V: the
 *     row; int4 K: the channel over the block) that holds a NaN or an inf a
 *     NaN scale, so the whole group reads back as NaN and attention that
 *     reads it outputs NaN, as f32 attention does with a NaN key or value.
 *   - all-zero and constant groups decode exactly (scale 0 or zero point =
 *     the constant when bf16 holds it; otherwise within half a step).
 */
#ifndef KVL_KV_CODEC_H
#define KVL_KV_CODEC_H

#include "core/dtype.h"
#include "kernels/kv_kern.h"

/* The chunk codec storing format f in role r (f valid). */
kvl_kvq_codec kvl_kv_codec_for(kvl_kv_format f, kvl_kv_role r);
/* True for the codecs whose scale covers several tokens or that KIVI keeps
 * in full precision until their block is full: fp8 (scale per block), int4
 * K (per channel over the block) and int4 V (KIVI's residual). */
bool kvl_kv_codec_deferred(kvl_kvq_codec c);

/* Encode hd floats x as row r of the chunk. Only for codecs that are not
 * deferred (f32, f16, bf16, int8); KVL_ASSERT otherwise. */
void kvl_kv_encode_row(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd, int32_t r,
                       const float *x);
/* Encode n rows (n <= bs; (n, hd) floats) as rows 0..n-1 of the chunk,
 * computing block scales from those n rows; rows n..bs-1 are zeroed. Any
 * codec. */
void kvl_kv_encode_block(kvl_kvq_codec c, uint8_t *chunk, int32_t bs, int32_t hd, const float *rows,
                         int32_t n);

/* Largest error |decode(encode(x)) - x| the codec allows for a finite
 * element of a group whose values lie in [lo, hi] (lo <= x <= hi), from the
 * format's step: half a step of the grid plus the scale's own rounding.
 * For tests and the docs. */
double kvl_kv_codec_bound(kvl_kvq_codec c, double lo, double hi, double x);

#endif
