/*
 * The simulated executor: behind the same seam as the CPU executor
 * (executor.h), it prices a batch with a roofline cost model instead of
 * computing it, so that the real scheduler and KV ledger can be studied at
 * data-centre scale (`kvllm sim`, docs/sim.md).
 *
 *   step_s = max(FLOPs / (flops x mfu), bytes / (bandwidth x mbu))
 *          + all-reduce time (tensor parallel) + step_overhead_s
 *
 * (the sum of the two terms instead of their max for a serial device: a
 * calibrated CPU, whose weight matmuls are priced from measured products of
 * 1 to 64 tokens (kvl_sim_mm_tokens), and whose attention, per-token kernels, per-row
 * sampling and dispatches have measured terms of their own when its file
 * gives them (kvl_sim_device; docs/sim.md has the formula and the
 * measurements that chose it))
 *
 * counted per device of a tensor-parallel group of tp devices:
 *
 *   FLOPs = 2 x P_lin x n_tokens + 2 x P_head x n_logits           (matmuls)
 *         + 4 x n_layers x n_heads x head_dim x sum over tokens of (pos + 1)
 *   bytes = W_lin + W_head (when any logits) + embedding rows
 *         + (1 + paged_penalty) x kv_token_bytes x n_layers-wide KV read:
 *             sum over the batch's sequence runs of (last pos + 1)
 *         + kv_token_bytes x n_tokens                                (KV written)
 *
 * P_lin: the per-layer projection and FFN weights times n_layers; P_head:
 * dim x n_vocab; W_*: their bytes in the weight type; kv_token_bytes from
 * the planner (plan/planner.h, the formula the pool uses). A run is the
 * batch's consecutive tokens of one sequence (the scheduler emits each
 * sequence's chunk as one run); its KV is read once per step, as a fused
 * paged-attention kernel does. Activations are not counted.
 *
 * The executor's run() returns one logits row of one value (0) per token
 * that asked for logits: the simulator never samples (it forces lengths).
 *
 *     kvl_sim_cost c;
 *     kvl_sim_cost_init(&shape, KVL_TYPE_F16, kv_token_bytes, &dev, 1, true, &c, &err);
 *     kvl_sim_step s;
 *     kvl_sim_cost_batch(&c, &batch, &s);      // s.seconds
 *     kvl_executor *x;
 *     kvl_executor_sim_init(&c, max_tokens, &x, &err);
 *     kvl_executor_run(x, &batch, NULL, &logits, &n_out, &err);
 *     kvl_executor_sim_last(x)->seconds;
 */
#ifndef KVL_EXECUTOR_SIM_H
#define KVL_EXECUTOR_SIM_H

#include "engine/executor.h"
#include "plan/catalog.h"

/* The token counts a calibrated CPU's product points are measured at. */
#define KVL_SIM_MM_POINTS 8
extern const int32_t kvl_sim_mm_tokens[KVL_SIM_MM_POINTS]; /* 1, 2, 3, 4, 8, 16, 32, 64 */

/* A device as the cost model sees it. */
typedef struct kvl_sim_device {
    char name[64];
    size_t bytes;           /* memory of one device */
    double bandwidth;       /* bytes/s, peak (datasheet) or measured */
    double flops;           /* FLOP/s, peak dense bf16 (datasheet) or measured */
    double mbu, mfu;        /* fraction of bandwidth / FLOP/s reached (docs/sim.md table) */
    double step_overhead_s; /* fixed cost of one step (launches, scheduling) */
    double link_bandwidth;  /* device-to-device bytes/s per direction (all-reduce); 0 = none */
    double link_latency_s;  /* per all-reduce */
    double host_bandwidth;  /* host <-> device bytes/s per direction (swap copies) */
    bool serial;            /* compute and memory time add instead of overlapping (a
                               CPU: the same cores load, dequantize and multiply) */
    /* Measured matmul seconds per weight byte for products of
     * kvl_sim_mm_tokens[i] tokens (1, 2, 3, 4, 8, 16, 32, 64; a calibrated
     * CPU; 0 = not measured). When the 1-token point is set, the weight
     * matmuls are priced from the points that are (interpolated linearly in
     * tokens between neighbours, proportional to tokens past the last)
     * instead of the two rates. Files before the 2, 3, 8 and 32 points have
     * only 1, 4, 16 and 64. */
    double mm_s_per_byte[KVL_SIM_MM_POINTS];
    /* Tokens the CPU product kernel takes in one group from 16 tokens up
     * (kvllm's AVX-512 Q8_0 / K-quant token-lane layout: 16; the slots past
     * the last token of the last group are computed as zeros), so a product
     * of n such tokens costs what ceil(n / group) * group tokens cost: 65
     * tokens are priced as 80. 0 = no grouping (other ISAs, old files). */
    double mm_token_group;
    /* A calibrated CPU's work outside the weight products, as the served
     * engine does it (each 0 = not measured, the term is left out; used
     * only with mm_s_per_byte, so the GPU devices never see them):
     *   attn_s_per_pos: seconds per (layer x query head x attended
     *     position) of the engine's attention kernel (f16 KV, the pool's
     *     split), for heads of attn_head_dim; scaled by head_dim /
     *     attn_head_dim. When set, attention is priced with it instead of
     *     FLOPs at the 64-token product rate, and the KV read bytes leave
     *     the bandwidth term (the kernel's time includes its reads).
     *   tok_s_per_layer: seconds per (token x layer) of the per-token work
     *     around the products: norms, rotary, KV store, residual adds,
     *     SwiGLU and the attention call itself (context-independent part).
     *   row_s_per_vocab: seconds per (logits row x vocabulary entry) of the
     *     engine's per-row work after the forward: the row copied, sampled
     *     at temperature 1 over the whole vocabulary, its log-probability.
     * step_overhead_s above is the fixed part of a step. */
    double attn_s_per_pos, attn_head_dim, tok_s_per_layer, row_s_per_vocab;
    const char *source; /* where the numbers come from */
} kvl_sim_device;

/* The constants of the model, each with its source (docs/sim.md prints
 * this table). */
typedef struct kvl_sim_constant {
    const char *name;
    double value;
    const char *source;
} kvl_sim_constant;
const kvl_sim_constant *kvl_sim_constants(size_t *n);
double kvl_sim_constant_get(const char *name); /* 0 when unknown */

/* A catalogue device (plan/catalog.h) with the constants above and its
 * link figures. KVL_E_INVALID naming the devices when unknown. */
kvl_status kvl_sim_device_from_catalog(const char *name, kvl_sim_device *out, kvl_error *err);

/* Read a calibration file written by `kvllm sim calibrate` (key value
 * lines: bandwidth, flops, step_overhead_s, serial, bytes (default 16 GiB),
 * mm_s_per_byte_N for N in kvl_sim_mm_tokens, attn_s_per_pos, attn_head_dim, tok_s_per_layer,
 * row_s_per_vocab, threads, name; a value outside its key's range is
 * refused naming the key and the range). mbu = mfu = 1:
 * the measured rates are what this machine reaches. KVL_E_IO / KVL_E_FORMAT
 * naming the file, line and key. */
kvl_status kvl_sim_device_from_file(const char *path, kvl_sim_device *out, kvl_error *err);

typedef struct kvl_sim_cost {
    kvl_model_shape shape;
    kvl_type wtype;
    double kv_token_bytes; /* whole model, all layers, K+V */
    kvl_sim_device dev;
    int32_t tp;           /* devices in the tensor-parallel group */
    bool paged;           /* the paged-attention penalty applies */
    double paged_penalty; /* kvl_sim_constant "paged_attention_penalty" */
    double lin_params;    /* P_lin */
    double head_params;   /* P_head */
    double lin_bytes, head_bytes, embd_row_bytes;
} kvl_sim_cost;

/* One priced step. */
typedef struct kvl_sim_step {
    int32_t n_tokens, n_logits, n_runs;
    double flops, bytes;  /* per device */
    double kv_read_bytes; /* per device, before the paged penalty */
    double t_compute, t_memory, t_comm;
    /* parts of t_compute, on a calibrated CPU only (0 otherwise): attention,
     * and the per-token and per-row work */
    double t_attn, t_other;
    double seconds; /* the step's time */
} kvl_sim_step;

/* KVL_E_INVALID on a bad shape, weight type, tp (1..64, dividing n_heads and
 * n_kv_heads) or device figure. */
kvl_status kvl_sim_cost_init(const kvl_model_shape *shape, kvl_type wtype, double kv_token_bytes,
                             const kvl_sim_device *dev, int32_t tp, bool paged, kvl_sim_cost *out,
                             kvl_error *err);
/* Price batch b. This function can't fail and never allocates. */
void kvl_sim_cost_batch(const kvl_sim_cost *c, const kvl_batch *b, kvl_sim_step *out);
/* Seconds to copy bytes one way over the host link. */
double kvl_sim_cost_swap_seconds(const kvl_sim_cost *c, double bytes);

/* The simulated executor over c (copied). max_tokens bounds a batch. */
kvl_status kvl_executor_sim_init(const kvl_sim_cost *c, int32_t max_tokens, kvl_executor **out,
                                 kvl_error *err);
/* The last run's price (zeros before the first run). */
const kvl_sim_step *kvl_executor_sim_last(const kvl_executor *x);

#endif
