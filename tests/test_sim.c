/*
 * kvllm sim: the cost model's counts on hand-computed batches; the exact
 * batch sequence of a small scenario (3 requests, a pool of 12 blocks of
 * 4) under the paged and the max-reservation policies (with and without
 * the buddy allocator); the buddy allocator's invariants under random
 * traffic; the same seed gives byte-identical reports; reserving policies
 * never preempt; goodput counts the SLOs; workload lengths obey their
 * filters and means; p50/p99 by interpolation (kvl_quantile).
 */
#include "core/core.h"
#include "plan/catalog.h"
#include "plan/planner.h"
#include "sim/buddy.h"
#include "sim/sim.h"

#include "testutil.h"

#include <math.h>
#include <stdlib.h>

/* ---- the cost model ------------------------------------------------------- */

/* The calibrated CPU's terms for the served step's other work, on the
 * serial device d of test_cost (products 1e-9, 2e-9, 4e-9, 8e-9 s/byte):
 * each moves the step by exactly what its formula says, and a GPU-style
 * device (not serial) ignores them. */
static void test_cost_cpu_terms(const kvl_model_shape *sh, kvl_sim_device *d) {
    kvl_sim_cost c;
    kvl_error err;
    kvl_sim_step s0, s1;
    /* three decodes at positions 4, 9, 19 (contexts 5, 10, 20), logits on
     * all three; weights: 163840 B at the 3-token rate 1e-9 + 2/3 x 1e-9 */
    int32_t tok[3] = {0}, seq[3] = {0, 1, 2}, pos[3] = {4, 9, 19};
    bool lg[3] = {true, true, true};
    kvl_batch b = {.n_tokens = 3, .tokens = tok, .seq = seq, .pos = pos, .logits = lg};
    CHECK_EQ_INT(kvl_sim_cost_init(sh, KVL_TYPE_F16, 512, d, 1, true, &c, &err), KVL_OK);
    kvl_sim_cost_batch(&c, &b, &s0);
    d->attn_s_per_pos = 1e-6;
    d->attn_head_dim = 8; /* the shape's heads are 16 wide: twice the rate */
    d->tok_s_per_layer = 1e-4;
    d->row_s_per_vocab = 1e-5;
    d->step_overhead_s = 0.25;
    CHECK_EQ_INT(kvl_sim_cost_init(sh, KVL_TYPE_F16, 512, d, 1, true, &c, &err), KVL_OK);
    kvl_sim_cost_batch(&c, &b, &s1);
    /* by hand: 2 layers x 4 heads x (5 + 10 + 20) positions x 1e-6 x 16/8 */
    double attn = 1e-6 * 2 * 2 * 4 * 35, other = 1e-4 * 3 * 2 + 1e-5 * 3 * 100;
    double w = 163840.0 * (1e-9 + 2.0 / 3 * 1e-9) + 12800.0 * (1e-9 + 2.0 / 3 * 1e-9);
    double mem = (3 * 512.0 + 3 * 128.0) / 1e9; /* KV written, embedding rows; no KV read */
    CHECK_NEAR(s1.t_attn, attn, 1e-15);
    CHECK_NEAR(s1.t_other, other, 1e-15);
    CHECK_NEAR(s1.t_compute, w + attn + other, 1e-15);
    CHECK_NEAR(s1.t_memory, mem, 1e-18);
    CHECK_NEAR(s1.seconds, w + attn + other + mem + 0.25, 1e-12);
    /* against the step without the terms: attention was FLOPs at 1e9 and the
     * KV read (35 positions x 512 B x 1.2 paged) at the bandwidth */
    double attn0 = 4.0 * 2 * 64 * 35 / 1e9, kv0 = 35 * 512.0 * 1.2 / 1e9;
    CHECK_NEAR(s0.seconds, w + attn0 + mem + kv0 + 0.5, 1e-12);
    CHECK_NEAR(s1.seconds - s0.seconds, attn - attn0 + other - kv0 - 0.25, 1e-12);
    /* a GPU-style device: the terms are not part of its model */
    kvl_sim_device g = *d;
    g.serial = false;
    kvl_sim_device g0 = g;
    g0.attn_s_per_pos = g0.tok_s_per_layer = g0.row_s_per_vocab = 0;
    CHECK_EQ_INT(kvl_sim_cost_init(sh, KVL_TYPE_F16, 512, &g, 1, true, &c, &err), KVL_OK);
    kvl_sim_cost_batch(&c, &b, &s1);
    CHECK_EQ_INT(kvl_sim_cost_init(sh, KVL_TYPE_F16, 512, &g0, 1, true, &c, &err), KVL_OK);
    kvl_sim_cost_batch(&c, &b, &s0);
    CHECK(s1.seconds == s0.seconds);
    CHECK(s1.t_attn == 0 && s1.t_other == 0);
    d->attn_s_per_pos = d->attn_head_dim = d->tok_s_per_layer = d->row_s_per_vocab = 0;
}

static void test_cost(void) {
    /* a 2-layer MHA shape with round numbers */
    kvl_model_shape sh;
    memset(&sh, 0, sizeof sh);
    snprintf(sh.name, sizeof sh.name, "t");
    sh.hp = (kvl_hparams){.n_vocab = 100,
                          .dim = 64,
                          .n_layers = 2,
                          .n_heads = 4,
                          .n_kv_heads = 4,
                          .head_dim = 16,
                          .ffn_dim = 128,
                          .ctx_len = 64,
                          .rope_dim = 16,
                          .rope_base = 10000,
                          .rms_eps = 1e-5f};
    sh.arch = KVL_ARCH_LLAMA;
    kvl_sim_device d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "unit");
    d.bandwidth = 1e9;
    d.flops = 1e9;
    d.mbu = d.mfu = 1;
    d.step_overhead_s = 0.5;
    kvl_sim_cost c;
    kvl_error err;
    /* KV: 2 x 2 layers x 4 heads x 16 x 2 bytes = 512 bytes per token */
    CHECK_EQ_INT(kvl_sim_cost_init(&sh, KVL_TYPE_F16, 512, &d, 1, true, &c, &err), KVL_OK);
    /* per layer: q 64x64, k 64x64, v 64x64, o 64x64, ffn 3 x 64x128 = 40960 */
    CHECK_NEAR(c.lin_params, 2 * 40960.0, 0);
    CHECK_NEAR(c.head_params, 6400.0, 0);
    /* seq 0: prefill positions 0..2 (logits on the last); seq 1: decode at pos 9 */
    int32_t tok[4] = {0}, seq[4] = {0, 0, 0, 1}, pos[4] = {0, 1, 2, 9};
    bool lg[4] = {false, false, true, true};
    kvl_batch b = {.n_tokens = 4, .tokens = tok, .seq = seq, .pos = pos, .logits = lg};
    kvl_sim_step s;
    kvl_sim_cost_batch(&c, &b, &s);
    CHECK_EQ_INT(s.n_logits, 2);
    CHECK_EQ_INT(s.n_runs, 2);
    /* FLOPs: 2 x 81920 x 4 + 2 x 6400 x 2 + 4 x 2 x 64 x (1+2+3+10) */
    CHECK_NEAR(s.flops, 655360.0 + 25600.0 + 8192.0, 0);
    /* bytes: weights 81920 x 2 + head 6400 x 2 + 4 embedding rows of 128;
     * KV read (3 + 10) x 512 x 1.2 (paged); KV written 4 x 512 */
    CHECK_NEAR(s.kv_read_bytes, 13 * 512.0, 0);
    CHECK_NEAR(s.bytes, 163840.0 + 12800.0 + 512.0 + 13 * 512.0 * 1.2 + 2048.0, 1e-6);
    CHECK_NEAR(s.seconds, s.flops / 1e9 + 0.5, 1e-12); /* compute-bound here */
    c.paged = false;
    kvl_sim_cost_batch(&c, &b, &s);
    CHECK_NEAR(s.bytes, 163840.0 + 12800.0 + 512.0 + 13 * 512.0 + 2048.0, 1e-6);
    /* tp 2: half of everything per device, plus 2 all-reduces per layer */
    d.link_bandwidth = 1e6;
    d.link_latency_s = 0;
    CHECK_EQ_INT(kvl_sim_cost_init(&sh, KVL_TYPE_F16, 512, &d, 2, true, &c, &err), KVL_OK);
    kvl_sim_cost_batch(&c, &b, &s);
    CHECK_NEAR(s.flops, (655360.0 + 25600.0 + 8192.0) / 2, 1e-6);
    CHECK_NEAR(s.t_comm, 2 * 2 * (2 * 0.5 * 4 * 64 * 2 / 1e6), 1e-12);
    CHECK_EQ_INT(kvl_sim_cost_init(&sh, KVL_TYPE_F16, 512, &d, 3, true, &c, &err), KVL_E_INVALID);
    /* a calibrated serial device: 10 decode tokens price the weights at the
     * rate halfway between the 4- and 16-token points (3e-9 s/byte) */
    d.serial = true;
    d.mm_s_per_byte[0] = 1e-9, d.mm_s_per_byte[3] = 2e-9; /* 1 and 4 tokens */
    d.mm_s_per_byte[5] = 4e-9, d.mm_s_per_byte[7] = 8e-9; /* 16 and 64 */
    CHECK_EQ_INT(kvl_sim_cost_init(&sh, KVL_TYPE_F16, 512, &d, 1, false, &c, &err), KVL_OK);
    int32_t t10[10] = {0}, s10[10], p10[10] = {0};
    for (int i = 0; i < 10; i++)
        s10[i] = i;
    kvl_batch b10 = {.n_tokens = 10, .tokens = t10, .seq = s10, .pos = p10, .logits = NULL};
    kvl_sim_cost_batch(&c, &b10, &s); /* logits NULL: the last token only */
    double attn = 4.0 * 2 * 64 * 10;  /* pos 0: context 1 each */
    CHECK_NEAR(s.t_compute, 163840.0 * 3e-9 + 12800.0 * 1e-9 + attn / 1e9, 1e-15);
    CHECK_NEAR(s.t_memory, (10 * 512.0 + 10 * 512.0 + 10 * 128.0) / 1e9, 1e-15);
    CHECK_NEAR(s.seconds, s.t_compute + s.t_memory + 0.5, 1e-12);
    int32_t s100[100] = {0}, p100[100], t100[100] = {0};
    for (int i = 0; i < 100; i++)
        p100[i] = i;
    kvl_batch b100 = {.n_tokens = 100, .tokens = t100, .seq = s100, .pos = p100, .logits = NULL};
    kvl_sim_cost_batch(&c, &b100, &s); /* past 64: proportional to tokens */
    CHECK_NEAR(s.t_compute, 163840.0 * 8e-9 * 100 / 64 + 12800.0 * 1e-9 + 4.0 * 2 * 64 * 5050 / 1e9,
               1e-12);
    /* a kernel that takes tokens in groups of 16: 100 tokens cost what 112
     * do, 20 what 32 do (a third of the way from the 16- to the 64-token
     * point), 10 (below one group) what 10 do */
    d.mm_token_group = 16;
    CHECK_EQ_INT(kvl_sim_cost_init(&sh, KVL_TYPE_F16, 512, &d, 1, false, &c, &err), KVL_OK);
    kvl_sim_cost_batch(&c, &b100, &s);
    CHECK_NEAR(s.t_compute, 163840.0 * 8e-9 * 112 / 64 + 12800.0 * 1e-9 + 4.0 * 2 * 64 * 5050 / 1e9,
               1e-12);
    kvl_sim_cost_batch(&c, &b10, &s);
    CHECK_NEAR(s.t_compute, 163840.0 * 3e-9 + 12800.0 * 1e-9 + attn / 1e9, 1e-15);
    kvl_batch b20 = {.n_tokens = 20, .tokens = t100, .seq = s100, .pos = p100, .logits = NULL};
    kvl_sim_cost_batch(&c, &b20, &s);
    CHECK_NEAR(s.t_compute,
               163840.0 * (4e-9 + (32.0 - 16) / 48 * 4e-9) + 12800.0 * 1e-9 +
                   4.0 * 2 * 64 * 210 / 1e9,
               1e-12);
    /* points at 2, 8 and 32 tokens, when measured, are used: 20 tokens (32
     * after grouping) cost the 32-token point; 10 interpolate between 8 and
     * 16; 3 between 2 and 4 */
    d.mm_s_per_byte[1] = 1.2e-9, d.mm_s_per_byte[4] = 2.5e-9, d.mm_s_per_byte[6] = 6e-9;
    CHECK_EQ_INT(kvl_sim_cost_init(&sh, KVL_TYPE_F16, 512, &d, 1, false, &c, &err), KVL_OK);
    kvl_sim_cost_batch(&c, &b20, &s);
    CHECK_NEAR(s.t_compute, 163840.0 * 6e-9 + 12800.0 * 1e-9 + 4.0 * 2 * 64 * 210 / 1e9, 1e-12);
    kvl_sim_cost_batch(&c, &b10, &s);
    CHECK_NEAR(s.t_compute,
               163840.0 * (2.5e-9 + (10.0 - 8) / 8 * 1.5e-9) + 12800.0 * 1e-9 + attn / 1e9, 1e-15);
    kvl_batch b3 = {.n_tokens = 3, .tokens = t10, .seq = s10, .pos = p10, .logits = NULL};
    kvl_sim_cost_batch(&c, &b3, &s);
    CHECK_NEAR(s.t_compute,
               163840.0 * (1.2e-9 + 0.5 * 0.8e-9) + 12800.0 * 1e-9 + 4.0 * 2 * 64 * 3 / 1e9, 1e-15);
    d.mm_s_per_byte[1] = d.mm_s_per_byte[4] = d.mm_s_per_byte[6] = 0;
    d.mm_token_group = 0;
    CHECK_CONTAINS(err.msg, "--tp 3");
    test_cost_cpu_terms(&sh, &d);
}

/* ---- the pinned scenario -------------------------------------------------- */

typedef struct rec {
    char buf[4096];
    size_t n;
} rec;

static void record(void *user, const kvl_sched_plan *pl, const kvl_sim_step *c,
                   const kvl_sim_kv *kv, double t) {
    (void)c;
    (void)kv;
    (void)t;
    rec *r = user;
    r->n += (size_t)snprintf(r->buf + r->n, sizeof r->buf - r->n, "|");
    for (int32_t i = 0; i < pl->n_items; i++)
        r->n += (size_t)snprintf(r->buf + r->n, sizeof r->buf - r->n, "%s%llu:%d@%d", i ? " " : "",
                                 (unsigned long long)pl->items[i].r->id, (int)pl->items[i].n_tokens,
                                 (int)pl->items[i].pos0);
}

/* n requests arriving together, each prompt prompts and output out tokens. */
static kvl_sim_workload burst(int64_t n, int32_t prompt, int32_t out) {
    kvl_sim_workload w = kvl_sim_workload_defaults();
    w.lengths = KVL_SIM_LEN_FIXED;
    w.arrivals = KVL_SIM_ARR_BURST;
    w.n_requests = n;
    w.prompt_lo = w.prompt_hi = prompt;
    w.output_lo = w.output_hi = out;
    return w;
}

static kvl_sim_params small_params(kvl_sched_reserve pol) {
    const kvl_model_shape *sh = kvl_catalog_shape_find("stories260K");
    kvl_sim_device d;
    kvl_error err;
    CHECK_EQ_INT(kvl_sim_device_from_catalog("A100-40GB", &d, &err), KVL_OK);
    kvl_sim_params p = kvl_sim_defaults();
    CHECK_EQ_INT(kvl_sim_cost_init(sh, KVL_TYPE_F16, 0, &d, 1, true, &p.cost, &err), KVL_OK);
    size_t bb;
    CHECK_EQ_INT(kvl_plan_kv_block_bytes(sh, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 4, &bb, &err), KVL_OK);
    p.block_size = 4;
    p.kv_budget = 12 * bb;
    p.max_seqs = 4;
    p.max_batch_tokens = 8;
    p.max_ctx = 24;
    p.policy = pol;
    return p;
}

static void test_pinned(void) {
    kvl_sim_workload w = burst(3, 6, 14); /* 20 positions = 5 blocks each; 3 do not fit 12 */
    kvl_error err;
    kvl_sim_result r;
    rec a = {.n = 0};
    kvl_sim_params p = small_params(KVL_RESERVE_PAGED);
    p.on_step = record;
    p.user = &a;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    /* Worked by hand (docs/sim.md): 0 and 1 admitted (1 with the budget's
     * last 2 tokens), 2 joins in step 2; at step 12 request 0 needs its 5th
     * block, the pool (12) is full, 2 (worst ranked) is preempted by
     * recompute; it comes back when 0 ends and its whole history (15
     * tokens + 1) fits with the watermark, re-fed in chunks of 7 and 8. */
    const char *want_paged =
        "|0:6@0 1:2@0|0:1@6 1:4@2 2:3@0|0:1@7 1:1@6 2:3@3|0:1@8 1:1@7 2:1@6|0:1@9 1:1@8 2:1@7"
        "|0:1@10 1:1@9 2:1@8|0:1@11 1:1@10 2:1@9|0:1@12 1:1@11 2:1@10|0:1@13 1:1@12 2:1@11"
        "|0:1@14 1:1@13 2:1@12|0:1@15 1:1@14 2:1@13|0:1@16 1:1@15|0:1@17 1:1@16|0:1@18 1:1@17"
        "|1:1@18 2:7@0|2:8@7|2:1@15|2:1@16|2:1@17|2:1@18";
    CHECK(!strcmp(a.buf, want_paged));
    if (strcmp(a.buf, want_paged))
        fprintf(stderr, "paged: %s\n", a.buf);
    CHECK_EQ_INT(r.n_done, 3);
    CHECK_EQ_INT(r.n_preemptions, 1);
    CHECK_EQ_INT(r.tokens_recomputed, 14); /* 2's KV positions when preempted */
    rec m = {.n = 0};
    p = small_params(KVL_RESERVE_MAX);
    p.buddy = false; /* the block count alone */
    p.on_step = record;
    p.user = &m;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    /* max: 6 blocks (24 positions) reserved each, so 2 never runs beside 0
     * and 1; admitted when 0 ends (7 free = its 6 + 1's unused 1). */
    const char *want_max =
        "|0:6@0 1:2@0|0:1@6 1:4@2|0:1@7 1:1@6|0:1@8 1:1@7|0:1@9 1:1@8|0:1@10 1:1@9"
        "|0:1@11 1:1@10|0:1@12 1:1@11|0:1@13 1:1@12|0:1@14 1:1@13|0:1@15 1:1@14"
        "|0:1@16 1:1@15|0:1@17 1:1@16|0:1@18 1:1@17|1:1@18 2:6@0|2:1@6|2:1@7|2:1@8|2:1@9"
        "|2:1@10|2:1@11|2:1@12|2:1@13|2:1@14|2:1@15|2:1@16|2:1@17|2:1@18";
    CHECK(!strcmp(m.buf, want_max));
    if (strcmp(m.buf, want_max))
        fprintf(stderr, "max: %s\n", m.buf);
    CHECK_EQ_INT(r.n_done, 3);
    CHECK_EQ_INT(r.n_preemptions, 0);
    /* max with the buddy allocator: 12 blocks = runs of 8 + 4; a 6-block
     * reservation takes a run of 8, so only one request runs at a time */
    rec b = {.n = 0};
    p = small_params(KVL_RESERVE_MAX);
    p.on_step = record;
    p.user = &b;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    char want_buddy[1024] = "";
    for (int q = 0; q < 3; q++) {
        size_t k = strlen(want_buddy);
        snprintf(want_buddy + k, sizeof want_buddy - k, "|%d:6@0", q);
        for (int pos = 6; pos <= 18; pos++) {
            k = strlen(want_buddy);
            snprintf(want_buddy + k, sizeof want_buddy - k, "|%d:1@%d", q, pos);
        }
    }
    CHECK(!strcmp(b.buf, want_buddy));
    if (strcmp(b.buf, want_buddy))
        fprintf(stderr, "max, buddy: %s\n", b.buf);
    CHECK_EQ_INT(r.n_done, 3);
    CHECK(r.kv_rounding > 0); /* 2 of the 8 blocks are never reserved */
}

/* The seconds of every step, in order. */
typedef struct secs_rec {
    double s[64];
    int n;
} secs_rec;

static void record_secs(void *user, const kvl_sched_plan *pl, const kvl_sim_step *c,
                        const kvl_sim_kv *kv, double t) {
    (void)pl;
    (void)kv;
    (void)t;
    secs_rec *r = user;
    if (r->n < 64)
        r->s[r->n++] = c->seconds;
}

/* --split-prefill on the pinned scenario: the same plans (a burst: pricing
 * cannot change them), and the three steps that mix prompt chunks with
 * decodes (steps 2, 3 and 15 of docs/sim.md's sequence) priced as a
 * prompt-only step then a decode-only step, each with the overhead. Step 2
 * is |0:1@6 1:4@2 2:3@0|: request 0 decodes at 6; 1 feeds positions 2-5
 * (the end of its prompt: logits), 2 positions 0-2. */
static void test_split_prefill(void) {
    kvl_sim_workload w = burst(3, 6, 14);
    kvl_error err;
    kvl_sim_result a, b;
    static secs_rec ra, rb;
    kvl_sim_params p = small_params(KVL_RESERVE_PAGED);
    p.on_step = record_secs;
    p.user = &ra;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &a, &err), KVL_OK);
    p.split_prefill = true;
    p.user = &rb;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &b, &err), KVL_OK);
    CHECK_EQ_INT(a.n_steps, 20);
    CHECK_EQ_INT(b.n_steps, 20 + 3);
    CHECK_EQ_INT(rb.n, 20); /* the callback sees each plan once */
    /* the prefill part: request 1's run then request 2's (slots 1 and 2) */
    int32_t pt[7] = {0}, pseq[7] = {1, 1, 1, 1, 2, 2, 2}, ppos[7] = {2, 3, 4, 5, 0, 1, 2};
    int32_t dseq[1] = {0}, dpos[1] = {6};
    bool pl[7] = {false, false, false, true, false, false, false}, dl[1] = {true};
    kvl_batch pre = {.n_tokens = 7, .tokens = pt, .seq = pseq, .pos = ppos, .logits = pl};
    kvl_batch dec = {.n_tokens = 1, .tokens = pt, .seq = dseq, .pos = dpos, .logits = dl};
    kvl_sim_step sp, sd;
    kvl_sim_cost c = p.cost;
    c.paged = true;
    kvl_sim_cost_batch(&c, &pre, &sp);
    kvl_sim_cost_batch(&c, &dec, &sd);
    CHECK_NEAR(rb.s[1], sp.seconds + sd.seconds, 1e-15);
    CHECK(rb.s[1] > ra.s[1] + 0.5 * c.dev.step_overhead_s); /* one more overhead, at least */
    CHECK_NEAR(rb.s[0], ra.s[0], 0); /* step 1 is prompt chunks only: unchanged */
    CHECK_NEAR(rb.s[4], ra.s[4], 0); /* a decode-only step: unchanged */
    CHECK_EQ_INT(b.n_done, 3);
    CHECK_EQ_INT(b.n_preemptions, a.n_preemptions);
    /* the running set, time-weighted: a lone request runs in every step */
    w.n_requests = 1;
    p.on_step = NULL;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &b, &err), KVL_OK);
    CHECK_NEAR(b.mean_running, 1, 1e-12);
    CHECK_NEAR(b.mean_batch, 1, 0);
    /* three: at most 3, and more than the per-step mean under split
     * pricing, whose prompt-only steps hold fewer requests than run */
    w.n_requests = 3;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &b, &err), KVL_OK);
    CHECK(b.mean_running <= 3 && b.mean_running > b.mean_batch);
}

/* ---- the buddy allocator -------------------------------------------------- */

static uint64_t xrand(uint64_t *x) { /* xorshift64 */
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static void test_buddy(void) {
    kvl_buddy b;
    kvl_error err;
    CHECK_EQ_INT(kvl_buddy_init(&b, 983, &err), KVL_OK);
    /* the paper's pool in blocks of 16: 7 runs of 2048 tokens (Orca Max) */
    int n128 = 0;
    while (kvl_buddy_alloc(&b, kvl_buddy_order(&b, 128)) >= 0)
        n128++;
    CHECK_EQ_INT(n128, 7);
    CHECK_EQ_INT(kvl_buddy_order(&b, 513), -1); /* past the largest run */
    CHECK_EQ_INT(kvl_buddy_order(&b, 5), 3);
    kvl_buddy_free_all(&b);
    CHECK_EQ_INT(kvl_buddy_init(&b, 0, &err), KVL_E_INVALID);
    /* random traffic: runs stay aligned, in the arena and disjoint; used
     * counts them; after all are released the whole arena is one run again */
    uint64_t rng = 12345;
    for (int round = 0; round < 20; round++) {
        uint32_t n = 1 + (uint32_t)(xrand(&rng) % 700);
        CHECK_EQ_INT(kvl_buddy_init(&b, n, &err), KVL_OK);
        static uint8_t owner[1024];
        static int64_t off[400];
        static int32_t ord[400];
        memset(owner, 0, sizeof owner);
        int live = 0;
        bool ok = true;
        for (int it = 0; it < 2000; it++) {
            if (live < 400 && (live == 0 || xrand(&rng) % 3)) {
                int32_t k = kvl_buddy_order(&b, 1 + xrand(&rng) % 40);
                int64_t o = kvl_buddy_alloc(&b, k);
                if (o < 0)
                    continue;
                ok = ok && o % (1 << k) == 0 && o + (1 << k) <= n;
                for (int64_t j = o; j < o + (1 << k) && j < 1024; j++)
                    ok = ok && !owner[j]++;
                off[live] = o;
                ord[live++] = k;
            } else {
                int i = (int)(xrand(&rng) % (uint64_t)live);
                for (int64_t j = off[i]; j < off[i] + (1 << ord[i]); j++)
                    owner[j] = 0;
                kvl_buddy_release(&b, (uint32_t)off[i], ord[i]);
                off[i] = off[--live];
                ord[i] = ord[live];
            }
            uint64_t used = 0;
            for (int i = 0; i < live; i++)
                used += 1u << ord[i];
            ok = ok && used == b.used;
        }
        CHECK(ok);
        while (live > 0) {
            live--;
            kvl_buddy_release(&b, (uint32_t)off[live], ord[live]);
        }
        CHECK_EQ_INT(b.used, 0);
        int32_t top = kvl_buddy_order(&b, 1u << b.top);
        CHECK_EQ_INT(kvl_buddy_alloc(&b, top), 0); /* merged back into the largest run */
        kvl_buddy_free_all(&b);
    }
}

/* ---- determinism, policies, workloads ------------------------------------ */

static void run_json(kvl_sched_reserve pol, char *buf, size_t cap, kvl_sim_result *r) {
    const kvl_model_shape *sh = kvl_catalog_shape_find("OPT-13B");
    kvl_sim_device d;
    kvl_error err;
    CHECK_EQ_INT(kvl_sim_device_from_catalog("A100-40GB", &d, &err), KVL_OK);
    kvl_sim_params p = kvl_sim_defaults();
    CHECK_EQ_INT(kvl_sim_cost_init(sh, KVL_TYPE_F16, 819200, &d, 1, true, &p.cost, &err), KVL_OK);
    p.kv_budget = (size_t)3 << 30; /* a quarter of the paper's pool: memory-bound */
    p.policy = pol;
    kvl_sim_workload w = kvl_sim_workload_defaults();
    w.rate = 4;
    w.n_requests = 300;
    w.seed = 7;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, r, &err), KVL_OK);
    FILE *f = fmemopen(buf, cap, "w");
    kvl_sim_result_json(r, f);
    fclose(f);
}

static void test_determinism(void) {
    static char a[4096], b[4096];
    kvl_sim_result ra, rb;
    run_json(KVL_RESERVE_PAGED, a, sizeof a, &ra);
    run_json(KVL_RESERVE_PAGED, b, sizeof b, &rb);
    CHECK(!strcmp(a, b));
    CHECK_EQ_INT(ra.n_done, 300);
    CHECK(ra.n_preemptions > 0); /* the pool is the bottleneck */
    CHECK_NEAR(ra.kv_reserved, 0, 0);
    for (int k = KVL_RESERVE_MAX; k <= KVL_RESERVE_POW2; k++) {
        kvl_sim_result r;
        run_json((kvl_sched_reserve)k, a, sizeof a, &r);
        CHECK_EQ_INT(r.n_done, 300);
        CHECK_EQ_INT(r.n_preemptions, 0); /* reservations cover every growth */
        CHECK(r.kv_reserved > 0);
        CHECK(r.mean_batch < ra.mean_batch); /* paged packs more requests */
    }
    /* goodput: at most the finished requests, all of them with loose SLOs */
    CHECK(ra.n_good <= ra.n_done);
    CHECK_NEAR(ra.goodput_rps * ra.makespan_s, (double)ra.n_good, 1e-6);
}

/* Shared prefixes through the engine's prefix cache: four requests, far
 * apart, 12-token prompts whose first 8 are shared (2 blocks of 4): every
 * request after the first finds those 2 blocks and feeds only 4 prompt
 * tokens; unique prompts find nothing. */
static void test_prefix(void) {
    kvl_sim_workload w = kvl_sim_workload_defaults();
    w.lengths = KVL_SIM_LEN_FIXED;
    w.prompt_lo = w.prompt_hi = 12;
    w.output_lo = w.output_hi = 3;
    w.n_requests = 4;
    w.rate = 0.001;
    kvl_error err;
    kvl_sim_result r;
    kvl_sim_params p = small_params(KVL_RESERVE_PAGED);
    p.shared_prefix = 8;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.n_done, 4);
    CHECK_EQ_INT(r.prefix_hit_tokens, 3 * 8);
    CHECK_EQ_INT(r.n_prefill_fed, 12 + 3 * 4);
    p.shared_prefix = 0;
    p.prefix_cache = true;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.prefix_hit_tokens, 0);
    CHECK_EQ_INT(r.n_prefill_fed, 4 * 12);
}

/* A trace with prefix ids: rows with the same id share their first
 * prefix_len tokens, and the cache serves whole blocks of them. Blocks of
 * 4; rows far apart (each ends before the next arrives):
 *   id 1, 10 shared: first of its id, no hit; second: 2 whole blocks (8)
 *   id 2,  8 shared: first, no hit; second: 8
 *   no id: nothing.  Hits 16 of 60 positions looked up; 44 fed. */
static void test_trace_prefix(void) {
    const char *dir = getenv("KVL_TMP");
    char path[512];
    snprintf(path, sizeof path, "%s/sim_trace_prefix.txt", dir ? dir : "/tmp");
    FILE *f = fopen(path, "w");
    fprintf(f, "# arrival prompt output prefix_id prefix_len\n0 12 3 1 10\n10 12 3 1 10\n"
               "20 12 3 2\n30 12 3 2\n40 12 3\n");
    fclose(f);
    kvl_sim_workload w = kvl_sim_workload_defaults();
    w.lengths = KVL_SIM_LEN_TRACE;
    w.trace_path = path;
    w.prefix_len = 8; /* for the rows of id 2, which give no length */
    kvl_error err;
    kvl_sim_result r;
    kvl_sim_params p = small_params(KVL_RESERVE_PAGED);
    p.prefix_cache = true;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.n_done, 5);
    CHECK_EQ_INT(r.prefix_hit_tokens, 16);
    CHECK_EQ_INT(r.prefix_lookup_tokens, 60);
    CHECK_NEAR(r.prefix_hit_rate, 16.0 / 60, 1e-12);
    CHECK_EQ_INT(r.n_prefill_fed, 60 - 16);
    p.prefix_cache = false; /* the same trace without the cache computes everything */
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.prefix_hit_tokens, 0);
    CHECK_EQ_INT(r.n_prefill_fed, 60);
    /* bad rows: named line and field, nothing run */
    static const char *const bad[][2] = {
        {"0 12 3 1 13\n", "line 1: prefix_len 13 not in [0, prompt 12]"},
        {"0 12 3 -2 4\n", "line 1: prefix_id -2 not in [0, 2^48)"},
        {"0 12 3\n1 12 3 7 4 9\n", "line 2: want 'arrival_s prompt output [prefix_id"},
        {"0 12 3 x\n", "line 1: want"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fopen(path, "w");
        fputs(bad[i][0], f);
        fclose(f);
        CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_E_FORMAT);
        CHECK_CONTAINS(err.msg, bad[i][1]);
    }
    f = fopen(path, "w");
    fputs("0 12 3 5\n", f);
    fclose(f);
    w.prefix_len = 0;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "prefix_id 5 without a prefix_len");
    remove(path);
}

/* Per request index: the start of its first step and the end of its last. */
typedef struct span_rec {
    double first[4096], last[4096];
} span_rec;

static void record_span(void *user, const kvl_sched_plan *pl, const kvl_sim_step *c,
                        const kvl_sim_kv *kv, double t) {
    (void)kv;
    span_rec *s = user;
    for (int32_t i = 0; i < pl->n_items; i++) {
        uint64_t id = pl->items[i].r->id;
        if (id >= 4096)
            continue;
        if (s->first[id] < 0)
            s->first[id] = t - c->seconds;
        s->last[id] = t;
    }
}

/* Sessions: turn 2's prompt is turn 1's prompt and answer plus a new
 * message. Turn 1 (6 + 5) feeds 10 positions (its last token is never
 * fed), so 2 whole blocks of 4 are cached; turn 2's prompt of 6 + 5 + 6 =
 * 17 finds those 8 and computes 9: the unfed last answer token, the new
 * message and the 2 positions of turn 1's partial block. A third turn (28
 * + 5) would pass max_total 30, so each session stops at two. */
static void test_sessions(void) {
    kvl_sim_workload w = kvl_sim_workload_defaults();
    w.lengths = KVL_SIM_LEN_FIXED;
    w.prompt_lo = w.prompt_hi = 6;
    w.output_lo = w.output_hi = 5;
    w.turns = 3;
    w.max_total = 30;
    w.n_requests = 3; /* sessions */
    w.rate = 0.001;
    kvl_error err;
    kvl_sim_result r;
    kvl_sim_params p = small_params(KVL_RESERVE_PAGED);
    p.prefix_cache = true;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.n_sessions, 3);
    CHECK_EQ_INT(r.n_done, 6);
    CHECK_EQ_INT(r.prefix_hit_tokens, 3 * 8);
    CHECK_EQ_INT(r.prefix_lookup_tokens, 3 * (6 + 17));
    CHECK_EQ_INT(r.n_prefill_fed, 3 * (6 + 9));
    p.prefix_cache = false;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.n_prefill_fed, 3 * (6 + 17));
    /* Under load, with think times: every later turn starts exactly its
     * think time after the turn before it ends (or later, when it must
     * wait for room), and the same seed gives the same report. */
    kvl_sim_workload u = kvl_sim_workload_defaults();
    u.lengths = KVL_SIM_LEN_UNIFORM;
    u.prompt_lo = 1, u.prompt_hi = 5, u.output_lo = 1, u.output_hi = 4;
    u.turns = 4;
    u.max_total = 24;
    u.think_s = 0.05;
    u.rate = 20;
    u.n_requests = 200;
    u.seed = 11;
    kvl_sim_request *v;
    int64_t n;
    CHECK_EQ_INT(kvl_sim_workload_make(&u, &v, &n, &err), KVL_OK);
    CHECK(n > 200 && n < 4096);
    static span_rec sp;
    for (int i = 0; i < 4096; i++)
        sp.first[i] = -1;
    p = small_params(KVL_RESERVE_PAGED);
    p.prefix_cache = true;
    p.on_step = record_span;
    p.user = &sp;
    CHECK_EQ_INT(kvl_sim_run(&p, &u, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.n_done, n);
    CHECK(r.prefix_hit_tokens > 0);
    int64_t exact = 0;
    bool ordered = true;
    for (int64_t i = 0; i < n; i++) {
        int64_t j = v[i].next_turn;
        if (j < 0)
            continue;
        /* the conversation so far plus a message of 1-5 tokens, all one stream */
        int32_t msg = v[j].n_prompt - v[i].n_prompt - v[i].n_output;
        CHECK(msg >= 1 && msg <= 5);
        CHECK(v[j].key == v[i].key && v[j].n_keyed == v[j].n_prompt + v[j].n_output);
        double due = sp.last[i] + v[j].think_s;
        ordered = ordered && sp.first[j] >= due - 1e-12;
        exact += sp.first[j] - due < 1e-12;
    }
    CHECK(ordered);
    CHECK(exact > 0);
    static char a[4096], b[4096];
    FILE *f = fmemopen(a, sizeof a, "w");
    kvl_sim_result_json(&r, f);
    fclose(f);
    p.on_step = NULL;
    CHECK_EQ_INT(kvl_sim_run(&p, &u, &r, &err), KVL_OK);
    f = fmemopen(b, sizeof b, "w");
    kvl_sim_result_json(&r, f);
    fclose(f);
    CHECK(!strcmp(a, b));
    free(v);
    u.lengths = KVL_SIM_LEN_TRACE;
    CHECK_EQ_INT(kvl_sim_workload_make(&u, &v, &n, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "sessions");
}

/* Swap preemption through the scheduler's real path on the metadata-only
 * ledger: the pinned scenario's one preemption (request 2, 14 positions =
 * 4 blocks of 4) goes to the swap area and back, nothing is recomputed,
 * and the 8 block copies are priced at the host link. */
static void test_swap(void) {
    kvl_sim_workload w = burst(3, 6, 14);
    kvl_error err;
    kvl_sim_result r;
    kvl_sim_params p = small_params(KVL_RESERVE_PAGED);
    size_t bb;
    CHECK_EQ_INT(kvl_plan_kv_block_bytes(kvl_catalog_shape_find("stories260K"), KVL_KV_FMT_F16,
                                         KVL_KV_FMT_F16, 4, &bb, &err),
                 KVL_OK);
    p.preempt = KVL_PREEMPT_SWAP;
    p.swap_mem = 16 * bb;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.n_done, 3);
    CHECK_EQ_INT(r.n_preemptions, 1);
    CHECK_EQ_INT(r.n_preempt_swap, 1);
    CHECK_EQ_INT(r.tokens_recomputed, 0);
    CHECK_NEAR(r.swap_bytes, 8.0 * (double)bb, 0);
    CHECK_NEAR(r.swap_s, r.swap_bytes / p.cost.dev.host_bandwidth, 1e-15);
    /* a swap area too small for 4 blocks: the scheduler falls back to recompute */
    p.swap_mem = 3 * bb;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.n_preempt_swap, 0);
    CHECK_EQ_INT(r.tokens_recomputed, 14);
    CHECK_NEAR(r.swap_s, 0, 0);
}

static void test_goodput(void) {
    kvl_sim_workload w = kvl_sim_workload_defaults();
    w.n_requests = 50;
    w.rate = 5;
    kvl_error err;
    kvl_sim_result r;
    kvl_sim_params p = small_params(KVL_RESERVE_PAGED);
    w.lengths = KVL_SIM_LEN_FIXED;
    w.prompt_lo = w.prompt_hi = 4;
    w.output_lo = w.output_hi = 4;
    p.slo_ttft = p.slo_tpot = 1e9;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.n_good, 50);
    p.slo_tpot = 0; /* no step is free */
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK_EQ_INT(r.n_good, 0);
    CHECK_NEAR(r.goodput_rps, 0, 0);
}

static void test_workloads(void) {
    kvl_sim_workload w = kvl_sim_workload_defaults();
    w.n_requests = 20000;
    kvl_sim_request *v;
    int64_t n;
    kvl_error err;
    for (int k = 0; k < 2; k++) {
        w.lengths = k ? KVL_SIM_LEN_ALPACA : KVL_SIM_LEN_SHAREGPT;
        CHECK_EQ_INT(kvl_sim_workload_make(&w, &v, &n, &err), KVL_OK);
        CHECK_EQ_INT(n, 20000);
        double sp = 0, so = 0;
        bool ok = true;
        for (int64_t i = 0; i < n; i++) {
            ok = ok && v[i].n_prompt >= 4 && v[i].n_output >= 4 && v[i].n_prompt <= 1024 &&
                 v[i].n_prompt + v[i].n_output <= 2048 &&
                 (i == 0 || v[i].arrival >= v[i - 1].arrival);
            sp += v[i].n_prompt;
            so += v[i].n_output;
        }
        CHECK(ok);
        /* the fitted means, within sampling error of 20000 draws */
        CHECK_NEAR(sp / (double)n, k ? 19 : 161, k ? 0.6 : 5);
        CHECK_NEAR(so / (double)n, k ? 58 : 338, k ? 2 : 10);
        CHECK_NEAR((double)n / v[n - 1].arrival, 1, 0.05); /* rate 1 */
        free(v);
    }
    w.lengths = KVL_SIM_LEN_FIXED;
    w.rate = -1;
    CHECK_EQ_INT(kvl_sim_workload_make(&w, &v, &n, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "rate");
}

static void test_calib_file(void) {
    const char *dir = getenv("KVL_TMP");
    char path[512];
    snprintf(path, sizeof path, "%s/sim_calib.txt", dir ? dir : "/tmp");
    FILE *f = fopen(path, "w");
    fprintf(f, "# comment\nname cpu-2t\nthreads 2\nbandwidth 3e9\nflops 9e10\nserial 1\n");
    fclose(f);
    kvl_sim_device d;
    kvl_error err;
    CHECK_EQ_INT(kvl_sim_device_from_file(path, &d, &err), KVL_OK);
    CHECK(!strcmp(d.name, "cpu-2t"));
    CHECK_NEAR(d.bandwidth, 3e9, 0);
    CHECK_NEAR(d.flops, 9e10, 0);
    CHECK(d.serial);
    CHECK_NEAR(d.mbu, 1, 0);
    CHECK_NEAR(d.attn_s_per_pos, 0, 0); /* an old file: the terms are off */
    CHECK_NEAR(d.row_s_per_vocab, 0, 0);
    f = fopen(path, "w");
    fprintf(f, "bandwidth 3e9\nflops 9e10\nserial 1\nattn_s_per_pos 5e-9\nattn_head_dim 64\n"
               "tok_s_per_layer 2e-5\nrow_s_per_vocab 2e-7\nstep_overhead_s 3e-5\n");
    fclose(f);
    CHECK_EQ_INT(kvl_sim_device_from_file(path, &d, &err), KVL_OK);
    CHECK_NEAR(d.attn_s_per_pos, 5e-9, 0);
    CHECK_NEAR(d.attn_head_dim, 64, 0);
    CHECK_NEAR(d.tok_s_per_layer, 2e-5, 0);
    CHECK_NEAR(d.row_s_per_vocab, 2e-7, 0);
    CHECK_NEAR(d.step_overhead_s, 3e-5, 0);
    CHECK_NEAR(d.mm_token_group, 0, 0); /* absent: no grouping */
    /* each new key's range, named with the key in the refusal */
    static const char *const bad[][2] = {
        {"attn_s_per_pos 0.5\nattn_head_dim 64\n",
         "line 3: attn_s_per_pos '0.5' is not a number in [0, 0.001]"},
        {"attn_s_per_pos 1e-9\nattn_head_dim 0\n",
         "line 4: attn_head_dim '0' is not a number in [1, 4096]"},
        {"tok_s_per_layer -1\n", "line 3: tok_s_per_layer '-1' is not a number in [0, 1]"},
        {"row_s_per_vocab 2x\n", "line 3: row_s_per_vocab '2x' is not a number in [0, 0.001]"},
        {"step_overhead_s 11\n", "line 3: step_overhead_s '11' is not a number in [0, 10]"},
        {"mm_token_group -16\n", "line 3: mm_token_group '-16' is not a number in [0, 4096]"},
        {"attn_s_per_pos 1e-9\n", "attn_s_per_pos needs attn_head_dim"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f = fopen(path, "w");
        fprintf(f, "bandwidth 3e9\nflops 9e10\n%s", bad[i][0]);
        fclose(f);
        d.row_s_per_vocab = 7;
        CHECK_EQ_INT(kvl_sim_device_from_file(path, &d, &err), KVL_E_FORMAT);
        CHECK_CONTAINS(err.msg, bad[i][1]);
        CHECK_NEAR(d.row_s_per_vocab, 7, 0); /* *out untouched */
    }
    f = fopen(path, "w");
    fprintf(f, "bandwidth fast\n");
    fclose(f);
    CHECK_EQ_INT(kvl_sim_device_from_file(path, &d, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "line 1: bandwidth 'fast'");
    f = fopen(path, "w");
    fprintf(f, "bandwidth 1e9\n");
    fclose(f);
    CHECK_EQ_INT(kvl_sim_device_from_file(path, &d, &err), KVL_E_FORMAT);
    CHECK_CONTAINS(err.msg, "flops");
    remove(path);
}

/* The sim's p50/p99 use numpy's (and kvllm bench serve's) definition:
 * linear interpolation between the closest ranks. */
static void test_quantile(void) {
    const double v[4] = {1, 2, 3, 10};
    CHECK(kvl_quantile(v, 4, 0.5) == 2.5); /* an even count: the middle two's mean */
    CHECK(kvl_quantile(v, 4, 0) == 1 && kvl_quantile(v, 4, 1) == 10);
    CHECK(fabs(kvl_quantile(v, 4, 0.99) - 9.79) < 1e-12); /* 3 + 7 x 0.97 */
    CHECK(kvl_quantile(v, 1, 0.5) == 1 && kvl_quantile(v, 0, 0.5) == 0);
    CHECK(kvl_quantile(v, 4, -1) == 1 && kvl_quantile(v, 4, 2) == 10); /* clamped */
    /* 2 requests in a burst, one step each at a time: the p50 of their TTFTs
     * lies halfway between them, not on either (nearest rank would say the
     * first). */
    kvl_sim_workload w = burst(2, 6, 2);
    kvl_sim_params p = small_params(KVL_RESERVE_PAGED);
    p.max_seqs = 1;
    kvl_sim_result r;
    kvl_error err;
    CHECK_EQ_INT(kvl_sim_run(&p, &w, &r, &err), KVL_OK);
    CHECK(r.ttft_p50 > 0 && r.ttft_p99 > r.ttft_p50);
    CHECK(fabs(r.ttft_p50 - r.ttft_mean) < 1e-12 * r.ttft_mean);
}

int main(void) {
    test_quantile();
    test_cost();
    test_calib_file();
    test_pinned();
    test_split_prefill();
    test_buddy();
    test_goodput();
    test_prefix();
    test_trace_prefix();
    test_sessions();
    test_swap();
    test_determinism();
    test_workloads();
    return kvt_finish("test_sim");
}
