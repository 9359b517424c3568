/*
 * The KV quality guard (--kv-check): before serving with a quantized KV
 * cache, measure on the loaded model what the chosen K/V formats cost.
 *
 *     kvl_kv_check_report r;
 *     if (kvl_kv_check(model, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, pool, &r, &err)) ...
 *     kvl_kv_check_print(&r, stderr);
 *     if (r.warn) fprintf(stderr, "warning: %s\n", r.message);
 *
 * Protocol: the model greedily continues a fixed prompt (BOS then a few
 * fixed token ids) with f32 KV, token by token, for up to
 * KVL_KV_CHECK_TOKENS positions (fewer when the context is shorter); that
 * sequence is then teacher-forced through f16 KV and through the chosen
 * formats (paged, the formats' default block size). At every position the
 * next-token distributions are compared: KL(p_f32 || p_fmt) in nats and
 * top-1 agreement. Cost: that many decode steps plus a few prefills.
 *
 * Warning rule (documented in docs/kv_formats.md): warn when the mean KL
 * against f32 exceeds KVL_KV_CHECK_KL_WARN, or exceeds 4x the f16 yardstick
 * plus 0.002 nats... see kv_check.c; or when top-1 agreement falls below
 * KVL_KV_CHECK_TOP1_WARN. Then K-only and V-only runs decide which role is
 * to blame and the message names the setting to change
 * ("use --kv-type-k int8").
 */
#ifndef KVL_KV_CHECK_H
#define KVL_KV_CHECK_H

#include "core/pool.h"
#include "model/model.h"
#include "plan/planner.h"

#include <stdio.h>

#define KVL_KV_CHECK_TOKENS 256
#define KVL_KV_CHECK_KL_WARN 0.01   /* nats, mean over positions */
#define KVL_KV_CHECK_TOP1_WARN 0.90 /* fraction of positions */

typedef struct kvl_kv_check_report {
    kvl_kv_format k_fmt, v_fmt;
    int32_t block_size;                       /* the block size the check ran with */
    int32_t n_tokens;                         /* positions compared */
    double kl_mean, kl_max;                   /* chosen vs f32 KV (nats) */
    double top1;                              /* fraction of positions whose argmax equals f32's */
    double kl_mean_vs_f16;                    /* chosen vs f16 KV (nats) */
    double f16_kl_mean, f16_kl_max, f16_top1; /* the yardstick: f16 vs f32 */
    bool warn;
    double kl_mean_k_only, kl_mean_v_only; /* set when warn: (k, f16) and (f16, v) runs */
    char message[256]; /* one line: the verdict, and the setting to change on a warning */
} kvl_kv_check_report;

/*
 * Run the check. KVL_E_INVALID on a bad format id (message names it);
 * KVL_E_NOMEM when the buffers cannot be allocated. pool may be NULL.
 */
kvl_status kvl_kv_check(const kvl_model *m, kvl_kv_format k, kvl_kv_format v, kvl_pool *pool,
                        kvl_kv_check_report *out, kvl_error *err);

/*
 * KL(p || q) in nats between the softmax distributions of two logits rows
 * of n >= 1 floats, and in *top1_agree whether their argmaxes agree. A row
 * holding a NaN gives +inf and no agreement, so a quality gate fails on it
 * (never "KL 0, top-1 100%"); rounding below 0 gives 0. This function can't
 * fail.
 */
double kvl_logits_kl(const float *p, const float *q, int64_t n, bool *top1_agree);

/* Two lines: the numbers, then the message. */
void kvl_kv_check_print(const kvl_kv_check_report *r, FILE *f);

#endif
