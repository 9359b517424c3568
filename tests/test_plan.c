/*
 * test_plan: the memory planner against published facts and hand-derived
 * numbers (each derivation is written next to its check), the block
 * rounding, the capacity/sequences/context consistency, the reverse
 * question, input validation, the GGUF shape reader on stories260K.gguf, and
 * parity with the KV block pool: the planner's capacity for a budget is what
 * the pool allocates for it.
 */
#include "kv/block_pool.h"
#include "model/mkmodel.h"
#include "plan/catalog.h"
#include "plan/planner.h"
#include "testutil.h"

#include <stdlib.h>

static kvl_model_shape named(const char *n) {
    const kvl_model_shape *s = kvl_catalog_shape_find(n);
    CHECK(s != NULL);
    kvl_model_shape r;
    memset(&r, 0, sizeof r);
    if (s)
        r = *s;
    return r;
}

static size_t block_bytes(const kvl_model_shape *s, kvl_kv_format k, kvl_kv_format v, int b) {
    size_t out = 0;
    kvl_error err;
    kvl_status st = kvl_plan_kv_block_bytes(s, k, v, b, &out, &err);
    CHECK_EQ_INT(st, KVL_OK);
    return out;
}

static double token_bytes(const kvl_model_shape *s, kvl_kv_format k, kvl_kv_format v, int b) {
    double out = 0;
    CHECK_EQ_INT(kvl_plan_kv_token_bytes(s, k, v, b, &out, NULL), KVL_OK);
    return out;
}

static void test_published_facts(void) {
    /* Llama-3-8B fp16: 2 * 32 layers * 8 KV heads * 128 * 2 B = 131,072 B/token */
    kvl_model_shape l3 = named("Llama-3-8B");
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16), 131072.0, 0);
    CHECK_EQ_INT(block_bytes(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16), 16 * 131072);
    /* 128 MiB per 1,024 tokens */
    size_t kv;
    size_t bb = block_bytes(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16);
    CHECK_EQ_INT(kvl_plan_kv_bytes_for(bb, 16, 1, 1024, &kv, NULL), KVL_OK);
    CHECK_EQ_INT(kv, 128ull << 20);
    /* the formula holds for every block size with unscaled formats */
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 1), 131072.0, 0);
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_BF16, KVL_KV_FMT_BF16, 7), 131072.0, 0);
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_F32, KVL_KV_FMT_F32, 32), 262144.0, 0);

    /* Llama-3-70B at 131,072 tokens fp16: 2*80*8*128*2 * 131072 = 40 GiB */
    kvl_model_shape l70 = named("Llama-3-70B");
    bb = block_bytes(&l70, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16);
    CHECK_EQ_INT(bb, 16 * 327680);
    CHECK_EQ_INT(kvl_plan_kv_bytes_for(bb, 16, 1, 131072, &kv, NULL), KVL_OK);
    CHECK_EQ_INT(kv, 40ull << 30);

    /* Llama-2-7B, MHA with 32 KV heads: 2*32*32*128*2 = 524,288 B/token */
    kvl_model_shape l2 = named("Llama-2-7B");
    CHECK_EQ_INT(l2.hp.n_kv_heads, 32);
    CHECK_NEAR(token_bytes(&l2, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16), 524288.0, 0);

    /* GQA's saving: Llama-3-8B's shape with 32 KV heads (MHA) takes 4x */
    kvl_model_shape mha = l3;
    mha.hp.n_kv_heads = 32;
    CHECK_EQ_INT(block_bytes(&mha, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16),
                 4 * block_bytes(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16));
    /* MQA: one KV head, 1/8 of GQA-8 */
    kvl_model_shape mqa = l3;
    mqa.hp.n_kv_heads = 1;
    CHECK_NEAR(token_bytes(&mqa, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16), 131072.0 / 8, 0);

    /* Published parameter counts (model cards): Llama-2-7B 6,738,415,616;
     * TinyLlama 1.1B 1,100,048,384; Llama-3-8B 8.03B; Qwen2.5-7B 7.61B (with
     * q/k/v bias); Llama-3.1-405B 405B. */
    size_t np;
    CHECK_EQ_INT(kvl_plan_n_params(&l2, &np, NULL), KVL_OK);
    CHECK_EQ_INT(np, 6738415616ull);
    kvl_model_shape tl = named("TinyLlama-1.1B");
    CHECK_EQ_INT(kvl_plan_n_params(&tl, &np, NULL), KVL_OK);
    CHECK_EQ_INT(np, 1100048384ull);
    CHECK_EQ_INT(kvl_plan_n_params(&l3, &np, NULL), KVL_OK);
    CHECK_EQ_INT(np, 8030261248ull);
    kvl_model_shape q7 = named("Qwen2.5-7B");
    CHECK_EQ_INT(kvl_plan_n_params(&q7, &np, NULL), KVL_OK);
    CHECK(np >= 7610000000ull && np < 7620000000ull);
    kvl_model_shape l405 = named("Llama-3.1-405B");
    CHECK_EQ_INT(kvl_plan_n_params(&l405, &np, NULL), KVL_OK);
    CHECK(np >= 405000000000ull && np < 406000000000ull);
    kvl_model_shape q72 = named("Qwen2.5-72B");
    CHECK_EQ_INT(kvl_plan_n_params(&q72, &np, NULL), KVL_OK);
    CHECK(np >= 72700000000ull && np < 72800000000ull);

    /* every named shape validates and has head_dim = dim / heads */
    size_t n;
    const kvl_model_shape *all = kvl_catalog_shapes(&n);
    CHECK(n >= 11);
    for (size_t i = 0; i < n; i++) {
        CHECK_EQ_INT(kvl_plan_shape_validate(&all[i], NULL), KVL_OK);
        if (all[i].hp.arch != KVL_ARCH_QWEN3) /* qwen3's head_dim is its own */
            CHECK_EQ_INT(all[i].hp.head_dim * all[i].hp.n_heads, all[i].hp.dim);
        CHECK(all[i].source != NULL);
    }
    CHECK(kvl_catalog_shape_find("llama-3-8b") == kvl_catalog_shape_find("Llama-3-8B"));
    CHECK(kvl_catalog_shape_find("Llama-4") == NULL);
}

static void test_weight_bytes(void) {
    kvl_model_shape l3 = named("Llama-3-8B");
    size_t w;
    /* 8,030,261,248 params: 266,240 in norms (2*32*4096 + 4096) stay f32,
     * the 8,029,995,008 matrix weights take the type:
     *   f16:  8,029,995,008*2 + 266,240*4            = 16,061,054,976
     *   q8_0: 8,029,995,008/32*34 + 1,064,960        =  8,532,934,656
     *   q4_0: 8,029,995,008/32*18 + 1,064,960        =  4,517,937,152 */
    CHECK_EQ_INT(kvl_plan_weight_bytes(&l3, KVL_TYPE_F16, &w, NULL), KVL_OK);
    CHECK_EQ_INT(w, 16061054976ull);
    CHECK_EQ_INT(kvl_plan_weight_bytes(&l3, KVL_TYPE_BF16, &w, NULL), KVL_OK);
    CHECK_EQ_INT(w, 16061054976ull);
    CHECK_EQ_INT(kvl_plan_weight_bytes(&l3, KVL_TYPE_Q8_0, &w, NULL), KVL_OK);
    CHECK_EQ_INT(w, 8532934656ull);
    CHECK_EQ_INT(kvl_plan_weight_bytes(&l3, KVL_TYPE_Q4_0, &w, NULL), KVL_OK);
    CHECK_EQ_INT(w, 4517937152ull);
    /* stories260K f32 with tied embeddings: 260,032 params * 4 = 1,040,128 B,
     * which is stories260K.bin (1,056,540 B) minus its 28 B header and its
     * 16,384 B of freq_cis tables. */
    kvl_model_shape st = named("stories260K");
    CHECK_EQ_INT(kvl_plan_weight_bytes(&st, KVL_TYPE_F32, &w, NULL), KVL_OK);
    CHECK_EQ_INT(w, 1056540 - 28 - 16384);
    /* untying adds the output matrix once: 512*64*4 B */
    kvl_model_shape un = st;
    un.tied_embd = false;
    size_t w2;
    CHECK_EQ_INT(kvl_plan_weight_bytes(&un, KVL_TYPE_F32, &w2, NULL), KVL_OK);
    CHECK_EQ_INT(w2 - w, 512 * 64 * 4);
    /* q8_0 rounds rows up to 32: w_down rows of 172 take 6 blocks (204 B) */
    CHECK_EQ_INT(kvl_plan_weight_bytes(&st, KVL_TYPE_Q8_0, &w, NULL), KVL_OK);
    /* embd 512 rows*2 blk*34 = 34,816; per layer: wq 64*68 = 4352, wk+wv
     * 2*32*68 = 4352, wo 4352, gate+up 2*172*68 = 23,392, down 64*204 =
     * 13,056 -> 49,504 * 5 = 247,520; vectors (2*5*64 + 64)*4 = 2816 */
    CHECK_EQ_INT(w, 34816 + 247520 + 2816);
    kvl_error err;
    CHECK(kvl_plan_weight_bytes(&l3, (kvl_type)3, &w, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "weight type");
    kvl_type t;
    CHECK(kvl_type_parse("Q4_0", &t) && t == KVL_TYPE_Q4_0);
    CHECK(!kvl_type_parse("q4_1", &t));
}

static void test_quantized_formats(void) {
    kvl_model_shape l3 = named("Llama-3-8B");
    size_t h;
    /* per (head, block of 16) with head_dim 128:
     *   fp8 V: 16*128*1 + 4 (f32 scale per head per block)       = 2052
     *   fp8 K: the same + 128*2 (bf16 mean per channel)           = 2308
     *   int8: 16*128*1 + 16*2 (bf16 scale per token per head)    = 2080
     *   int4 K: 16*128/2 + 128*(2+1) (bf16 scale + int8 zero per channel) = 1408
     *   int4 V: 16*128/2 + 16*(2+1) (bf16 scale + int8 zero per token)  = 1072 */
    CHECK_EQ_INT(
        kvl_plan_kv_head_block_bytes(KVL_KV_FMT_FP8_E4M3, KVL_KV_ROLE_K, 128, 16, &h, NULL),
        KVL_OK);
    CHECK_EQ_INT(h, 2308);
    kvl_plan_kv_head_block_bytes(KVL_KV_FMT_FP8_E5M2, KVL_KV_ROLE_V, 128, 16, &h, NULL);
    CHECK_EQ_INT(h, 2052);
    kvl_plan_kv_head_block_bytes(KVL_KV_FMT_INT8, KVL_KV_ROLE_K, 128, 16, &h, NULL);
    CHECK_EQ_INT(h, 2080);
    kvl_plan_kv_head_block_bytes(KVL_KV_FMT_INT4, KVL_KV_ROLE_K, 128, 16, &h, NULL);
    CHECK_EQ_INT(h, 1408);
    kvl_plan_kv_head_block_bytes(KVL_KV_FMT_INT4, KVL_KV_ROLE_V, 128, 16, &h, NULL);
    CHECK_EQ_INT(h, 1072);
    /* whole blocks: 32 layers * 8 heads * (K + V) */
    CHECK_EQ_INT(block_bytes(&l3, KVL_KV_FMT_FP8_E4M3, KVL_KV_FMT_FP8_E4M3, 16), 256 * 4360);
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_FP8_E4M3, KVL_KV_FMT_FP8_E4M3, 16), 69760.0, 0);
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_INT8, KVL_KV_FMT_INT8, 16), 66560.0, 0);
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, 16), 39680.0, 0);
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_INT4, KVL_KV_FMT_INT8, 16), 55808.0, 0);
    /* K and V are independent: f16 K + int8 V = (4096 + 2080) * 256 / 16 */
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_INT8, 16), 98816.0, 0);
    /* the scales amortize over bigger blocks: fp8 at block 1 pays 4 B per
     * head per token, and K its 256 B of means: (128 + 4 + 256) + (128 + 4)
     * = 520 B per head, * 8 * 32 = 133,120 */
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_FP8_E4M3, KVL_KV_FMT_FP8_E4M3, 1), 133120.0, 0);
    /* int4 K at block 64: (64*64 + 384) / 64 = 70 B per head per token;
     * V: (64*64 + 192) / 64 = 67; * 256 = 35,072 B/token, 3.74x under f16 */
    CHECK_NEAR(token_bytes(&l3, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, 64), 35072.0, 0);
    /* odd sizes round the packed nibbles up to a byte per (head, block):
     * head_dim 3, block 1: ceil(12 bits / 8) = 2, + 3 channels * 3 = 11 */
    kvl_plan_kv_head_block_bytes(KVL_KV_FMT_INT4, KVL_KV_ROLE_K, 3, 1, &h, NULL);
    CHECK_EQ_INT(h, 11);
    /* the quantized formats' targets on TinyLlama-1.1B (head_dim 64, 4 KV heads, 22
     * layers): tokens per budget against f16 (22528 B/token).
     *   int8: (64 + 2) * 2 * 4 * 22 = 11616 B/token        -> 1.939x >= 1.9
     *   int4 at block 32: K (32*32 + 64*3) / 32 = 38, V 32 + 3 = 35
     *         -> 73 * 4 * 22 = 6424 B/token                  -> 3.507x >= 3.5
     *   int4 at block 64: K 32 + 3 = 35 -> 70 * 88 = 6160     -> 3.66x
     *   int4 at block 16: K 32 + 12 = 44 -> 79 * 88 = 6952    -> 3.24x */
    kvl_model_shape tl = named("TinyLlama-1.1B");
    double f16b = token_bytes(&tl, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16);
    CHECK_NEAR(f16b, 22528.0, 0);
    CHECK_NEAR(token_bytes(&tl, KVL_KV_FMT_INT8, KVL_KV_FMT_INT8, 16), 11616.0, 0);
    CHECK(f16b / token_bytes(&tl, KVL_KV_FMT_INT8, KVL_KV_FMT_INT8, 16) >= 1.9);
    CHECK_NEAR(token_bytes(&tl, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, 32), 6424.0, 0);
    CHECK(f16b / token_bytes(&tl, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, 32) >= 3.5);
    CHECK_NEAR(token_bytes(&tl, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, 64), 6160.0, 0);
    CHECK_NEAR(token_bytes(&tl, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4, 16), 6952.0, 0);
    CHECK_EQ_INT(kvl_kv_block_size(0, KVL_KV_FMT_INT4, KVL_KV_FMT_INT8), 32);
    CHECK_EQ_INT(kvl_kv_block_size(0, KVL_KV_FMT_INT8, KVL_KV_FMT_INT4), 16);
    CHECK_EQ_INT(kvl_kv_block_size(0, KVL_KV_FMT_F16, KVL_KV_FMT_F16), 16);
    /* stories260K f16: 2*5*4*8*2 = 640 B/token */
    kvl_model_shape st = named("stories260K");
    CHECK_NEAR(token_bytes(&st, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16), 640.0, 0);

    /* names */
    kvl_kv_format f;
    CHECK(kvl_kv_format_parse("FP8_E4M3", &f) && f == KVL_KV_FMT_FP8_E4M3);
    CHECK(kvl_kv_format_parse("e5m2", &f) && f == KVL_KV_FMT_FP8_E5M2);
    CHECK(kvl_kv_format_parse("q8_0", &f) && f == KVL_KV_FMT_INT8);
    CHECK(kvl_kv_format_parse("int4", &f) && f == KVL_KV_FMT_INT4);
    CHECK(!kvl_kv_format_parse("int3", &f));
    CHECK(!kvl_kv_format_parse("", &f));
    for (int i = 0; i < KVL_KV_FMT_COUNT; i++) {
        const kvl_kv_format_info *fi = kvl_kv_format_get((kvl_kv_format)i);
        CHECK(fi && (int)fi->fmt == i);
        CHECK(kvl_kv_format_parse(fi->name, &f) && (int)f == i);
    }
    CHECK(kvl_kv_format_get(KVL_KV_FMT_COUNT) == NULL);
    kvl_error err;
    CHECK(kvl_plan_kv_head_block_bytes(KVL_KV_FMT_COUNT, KVL_KV_ROLE_K, 128, 16, &h, &err) ==
          KVL_E_INVALID);
    CHECK(kvl_plan_kv_head_block_bytes(KVL_KV_FMT_F16, KVL_KV_ROLE_K, 128, 0, &h, &err) ==
          KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "block_size 0");
    CHECK(kvl_plan_kv_head_block_bytes(KVL_KV_FMT_F16, KVL_KV_ROLE_K, 128, KVL_MAX_BLOCK_SIZE + 1,
                                       &h, &err) == KVL_E_INVALID);
}

static void test_blocks_and_capacity(void) {
    /* rounding up to whole blocks */
    CHECK_EQ_INT(kvl_plan_blocks_for_tokens(17, 16), 2);
    CHECK_EQ_INT(kvl_plan_blocks_for_tokens(16, 16), 1);
    CHECK_EQ_INT(kvl_plan_blocks_for_tokens(1, 16), 1);
    CHECK_EQ_INT(kvl_plan_blocks_for_tokens(0, 16), 0);
    CHECK_EQ_INT(kvl_plan_blocks_for_tokens(33, 1), 33);
    kvl_model_shape l3 = named("Llama-3-8B");
    size_t bb = block_bytes(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16), kv;
    /* 17 tokens cost 2 whole blocks, not 17 * 131072 */
    CHECK_EQ_INT(kvl_plan_kv_bytes_for(bb, 16, 1, 17, &kv, NULL), KVL_OK);
    CHECK_EQ_INT(kv, 2 * bb);
    CHECK_EQ_INT(kvl_plan_kv_bytes_for(bb, 16, 3, 17, &kv, NULL), KVL_OK);
    CHECK_EQ_INT(kv, 6 * bb);
    kvl_error err;
    CHECK(kvl_plan_kv_bytes_for(SIZE_MAX / 2, 16, 3, 17, &kv, &err) == KVL_E_LIMIT);
    CHECK_CONTAINS(err.msg, "overflow");

    /* a budget one byte short of 11 blocks holds 10 */
    kvl_plan_capacity c;
    CHECK_EQ_INT(
        kvl_plan_capacity_for(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16, 11 * bb - 1, &c, NULL),
        KVL_OK);
    CHECK_EQ_INT(c.n_blocks, 10);
    CHECK_EQ_INT(c.n_tokens, 160);
    CHECK_EQ_INT(c.block_bytes, bb);
    CHECK_EQ_INT(kvl_plan_max_seqs(&c, 17), 5); /* 2 blocks each */
    CHECK_EQ_INT(kvl_plan_max_seqs(&c, 33), 3); /* 3 blocks each */
    CHECK_EQ_INT(kvl_plan_max_seqs(&c, 160), 1);
    CHECK_EQ_INT(kvl_plan_max_seqs(&c, 161), 0);
    CHECK_EQ_INT(kvl_plan_max_context(&c, 3), 48); /* floor(10/3) = 3 blocks */
    CHECK_EQ_INT(kvl_plan_max_context(&c, 1), 160);
    CHECK_EQ_INT(kvl_plan_max_context(&c, 11), 0);
    CHECK_EQ_INT(kvl_plan_max_context(&c, 0), 0);
    /* consistency: n sequences of their longest context fit, one more
     * token each does not; C-token sequences fit max_seqs(C) times */
    CHECK_EQ_INT(
        kvl_plan_capacity_for(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16, 29043 * bb + 5, &c, NULL),
        KVL_OK);
    for (size_t n = 1; n <= 300; n += 7) {
        size_t mc = kvl_plan_max_context(&c, n);
        CHECK(kvl_plan_max_seqs(&c, mc) >= n);
        CHECK(kvl_plan_max_seqs(&c, mc + 1) < n);
    }
    for (size_t ctx = 1; ctx <= 20000; ctx = ctx * 3 + 1) {
        size_t ms = kvl_plan_max_seqs(&c, ctx);
        CHECK(ms * kvl_plan_blocks_for_tokens(ctx, 16) <= c.n_blocks);
        CHECK((ms + 1) * kvl_plan_blocks_for_tokens(ctx, 16) > c.n_blocks);
        CHECK(kvl_plan_max_context(&c, ms) >= ctx);
    }
    /* zero budget: zero capacity, not an error */
    CHECK_EQ_INT(kvl_plan_capacity_for(&l3, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16, 0, &c, NULL),
                 KVL_OK);
    CHECK_EQ_INT(c.n_tokens, 0);
}

static kvl_plan_request h100_l3(void) {
    kvl_plan_request r;
    memset(&r, 0, sizeof r);
    r.shape = named("Llama-3-8B");
    CHECK_EQ_INT(kvl_plan_weight_bytes(&r.shape, KVL_TYPE_F16, &r.weight_bytes, NULL), KVL_OK);
    r.k_fmt = r.v_fmt = KVL_KV_FMT_F16;
    r.block_size = 16;
    const kvl_catalog_device *d = kvl_catalog_device_find("h100 80gb");
    CHECK(d != NULL);
    r.dev_bytes[0] = d ? d->bytes : 1;
    r.n_devices = 1;
    r.reserve_frac = 0.10;
    return r;
}

static void test_plan_and_reverse(void) {
    /* H100 80GB: nvidia-smi's 81559 MiB = 85,520,809,984 B */
    const kvl_catalog_device *d = kvl_catalog_device_find("H100-80GB");
    CHECK(d && d->bytes == 85520809984ull);
    CHECK(kvl_catalog_device_find("RTX4090-24GB") == kvl_catalog_device_find("rtx 4090 24gb"));
    CHECK(kvl_catalog_device_find("TPUv5") == NULL);

    /* Llama-3-8B f16 on one H100, 10% reserve:
     *   reserve  floor(85,520,809,984 * 0.1)             =  8,552,080,998
     *   budget   85,520,809,984 - 8,552,080,998 - 16,061,054,976 = 60,907,674,010
     *   blocks   floor(60,907,674,010 / 2,097,152)       =         29,043 */
    kvl_plan_request r = h100_l3();
    kvl_plan_result res;
    CHECK_EQ_INT(kvl_plan_compute(&r, &res, NULL), KVL_OK);
    CHECK_EQ_INT(res.reserve_total, 8552080998ull);
    CHECK_EQ_INT(res.kv_budget, 60907674010ull);
    CHECK(res.weights_fit);
    CHECK_EQ_INT(res.cap.n_blocks, 29043);
    CHECK_EQ_INT(res.cap.n_tokens, 29043 * 16);
    CHECK_EQ_INT(kvl_plan_max_seqs(&res.cap, 8192), 56);

    /* 64 users x 8192: KV 64 * 512 blocks * 2 MiB = 64 GiB; short by
     * 16,061,054,976 + 68,719,476,736 - 76,968,728,986 = 7,811,802,726 */
    kvl_plan_need n;
    CHECK_EQ_INT(kvl_plan_need_for(&r, 64, 8192, &n, NULL), KVL_OK);
    CHECK_EQ_INT(n.kv_bytes, 64ull << 30);
    CHECK(!n.fits);
    CHECK_EQ_INT(n.short_by, 7811802726ull);
    CHECK_EQ_INT(n.total_bytes, 16061054976ull + (64ull << 30) + 8552080998ull);
    CHECK_EQ_INT(n.max_seqs, 56);
    CHECK_EQ_INT(n.max_context, 29043 / 64 * 16);
    CHECK_EQ_INT(n.devices_needed, 2);
    kvl_kv_format k, v;
    CHECK(kvl_plan_suggest_format(&r, 64, 8192, &k, &v));
    CHECK(k == KVL_KV_FMT_INT8 && v == KVL_KV_FMT_INT8); /* 33 GiB of KV fits */
    /* 200 users need int4 for both */
    CHECK(kvl_plan_suggest_format(&r, 170, 8192, &k, &v));
    CHECK(k == KVL_KV_FMT_INT4 && v == KVL_KV_FMT_INT4);
    /* nothing makes 1000 users fit on one card */
    CHECK(!kvl_plan_suggest_format(&r, 1000, 8192, &k, &v));
    CHECK_EQ_INT(kvl_plan_need_for(&r, 1000, 8192, &n, NULL), KVL_OK);
    CHECK(n.devices_needed > 1);
    /* and the device count it gives does fit */
    kvl_plan_request r2 = r;
    r2.n_devices = n.devices_needed;
    for (int i = 0; i < r2.n_devices; i++)
        r2.dev_bytes[i] = r.dev_bytes[0];
    kvl_plan_need n2;
    CHECK_EQ_INT(kvl_plan_need_for(&r2, 1000, 8192, &n2, NULL), KVL_OK);
    CHECK(n2.fits);
    r2.n_devices--;
    CHECK_EQ_INT(kvl_plan_need_for(&r2, 1000, 8192, &n2, NULL), KVL_OK);
    CHECK(!n2.fits);
    /* a setting that fits needs no suggestion and reports it fits */
    CHECK_EQ_INT(kvl_plan_need_for(&r, 16, 8192, &n, NULL), KVL_OK);
    CHECK(n.fits && n.short_by == 0 && n.devices_needed == 1);

    /* fixed reserve per device: 8 x H100, 2 GiB each */
    kvl_plan_request r8 = r;
    r8.n_devices = 8;
    for (int i = 0; i < 8; i++)
        r8.dev_bytes[i] = r.dev_bytes[0];
    r8.reserve_frac = 0;
    r8.reserve_bytes = 2ull << 30;
    CHECK_EQ_INT(kvl_plan_compute(&r8, &res, NULL), KVL_OK);
    CHECK_EQ_INT(res.mem_total, 8 * 85520809984ull);
    CHECK_EQ_INT(res.reserve_total, 16ull << 30);

    /* Llama-3.1-405B in f16 does not fit 8 x H100 (weights ~812 GB) */
    r8.shape = named("Llama-3.1-405B");
    CHECK_EQ_INT(kvl_plan_weight_bytes(&r8.shape, KVL_TYPE_F16, &r8.weight_bytes, NULL), KVL_OK);
    r8.reserve_frac = 0.10;
    r8.reserve_bytes = 0;
    CHECK_EQ_INT(kvl_plan_compute(&r8, &res, NULL), KVL_OK);
    CHECK(!res.weights_fit);
    CHECK_EQ_INT(res.kv_budget, 0);
    CHECK_EQ_INT(res.cap.n_tokens, 0);
    CHECK_EQ_INT(kvl_plan_need_for(&r8, 1, 8192, &n, NULL), KVL_OK);
    CHECK(!n.fits && n.devices_needed > 8);

    /* validation names the field and the limit */
    kvl_error err;
    kvl_plan_request bad = r;
    bad.block_size = 0;
    CHECK(kvl_plan_compute(&bad, &res, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "block_size 0");
    bad = r;
    bad.n_devices = 0;
    CHECK(kvl_plan_compute(&bad, &res, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "devices");
    bad = r;
    bad.reserve_frac = 0;
    bad.reserve_bytes = bad.dev_bytes[0];
    CHECK(kvl_plan_compute(&bad, &res, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "reserve");
    bad = r;
    bad.reserve_frac = 1.5;
    CHECK(kvl_plan_compute(&bad, &res, &err) == KVL_E_INVALID);
    bad = r;
    bad.shape.hp.n_kv_heads = 5;
    CHECK(kvl_plan_compute(&bad, &res, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "n_kv_heads 5");
    bad = r;
    bad.shape.hp.head_dim = 0;
    CHECK(kvl_plan_compute(&bad, &res, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "head_dim 0");
    bad = r;
    bad.k_fmt = (kvl_kv_format)99;
    CHECK(kvl_plan_compute(&bad, &res, &err) == KVL_E_INVALID);
}

static void test_format_helpers(void) {
    char b[48];
    CHECK(!strcmp(kvl_plan_fmt_int(0, b, sizeof b), "0"));
    CHECK(!strcmp(kvl_plan_fmt_int(999, b, sizeof b), "999"));
    CHECK(!strcmp(kvl_plan_fmt_int(1000, b, sizeof b), "1,000"));
    CHECK(!strcmp(kvl_plan_fmt_int(85520809984ull, b, sizeof b), "85,520,809,984"));
    CHECK(!strcmp(kvl_plan_fmt_gib(40ull << 30, b, sizeof b), "40.00 GiB"));
}

static void test_gguf(void) {
    kvl_gguf *g = NULL;
    kvl_error err;
    const char *path = kvt_shared("models/stories260K.gguf");
    CHECK_EQ_INT(kvl_gguf_open(path, &g, &err), KVL_OK);
    if (!g)
        return;
    kvl_model_shape s;
    memset(&s, 0, sizeof s);
    snprintf(s.name, sizeof s.name, "stories260K.gguf");
    size_t wb = 0;
    CHECK_EQ_INT(kvl_plan_shape_from_gguf(g, &s, &wb, &err), KVL_OK);
    /* shared/models/README.md: 5 layers, 8 heads, 4 KV heads, dim 64,
     * ffn 172, 512 tokens, context_length 2048; output.weight stored apart */
    CHECK_EQ_INT(s.hp.n_layers, 5);
    CHECK_EQ_INT(s.hp.n_heads, 8);
    CHECK_EQ_INT(s.hp.n_kv_heads, 4);
    CHECK_EQ_INT(s.hp.head_dim, 8);
    CHECK_EQ_INT(s.hp.dim, 64);
    CHECK_EQ_INT(s.hp.ffn_dim, 172);
    CHECK_EQ_INT(s.hp.n_vocab, 512);
    CHECK_EQ_INT(s.hp.ctx_len, 2048);
    CHECK(!s.tied_embd);
    /* 48 f32 tensors: the tied 260,032 params plus the separate output
     * (512*64 = 32,768) = 292,800 params * 4 B */
    CHECK_EQ_INT(wb, 292800 * 4);
    size_t fw;
    CHECK_EQ_INT(kvl_plan_weight_bytes(&s, KVL_TYPE_F32, &fw, NULL), KVL_OK);
    CHECK_EQ_INT(fw, wb);
    kvl_model_shape named_s = named("stories260K");
    CHECK_EQ_INT(block_bytes(&s, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16),
                 block_bytes(&named_s, KVL_KV_FMT_F16, KVL_KV_FMT_F16, 16));
    kvl_gguf_free(g);
}

static kvl_hparams to_hparams(const kvl_model_shape *s) {
    kvl_hparams hp = {.n_vocab = s->hp.n_vocab,
                      .dim = s->hp.dim,
                      .n_layers = s->hp.n_layers,
                      .n_heads = s->hp.n_heads,
                      .n_kv_heads = s->hp.n_kv_heads,
                      .head_dim = s->hp.head_dim,
                      .ffn_dim = s->hp.ffn_dim,
                      .ctx_len = s->hp.ctx_len,
                      .rope_dim = s->hp.head_dim,
                      .rope_base = 10000.0f,
                      .rms_eps = 1e-5f};
    return hp;
}

/* With f32 K and V (the other formats have their parity in
 * test_kv_quant.c), for every named shape, block size and budget, its block bytes, block count and
 * token capacity equal the planner's. A real pool of a small budget is
 * allocated too, and holds exactly the planned number of blocks. */
static void test_pool_parity(void) {
    size_t n;
    const kvl_model_shape *all = kvl_catalog_shapes(&n);
    static const int bs[] = {1, 16, 32, 256};
    static const size_t budgets[] = {0, 1, 12345, 1u << 20, 3000000007u, 80ull << 30};
    for (size_t i = 0; i < n; i++) {
        kvl_hparams hp = to_hparams(&all[i]);
        for (size_t b = 0; b < sizeof bs / sizeof bs[0]; b++) {
            for (size_t j = 0; j < sizeof budgets / sizeof budgets[0]; j++) {
                kvl_kv_capacity kc;
                kvl_plan_capacity pc;
                kvl_status st = kvl_kv_capacity_compute(&hp, bs[b], budgets[j], 1, &kc, NULL);
                CHECK(st == KVL_OK || st == KVL_E_NO_KV);
                CHECK_EQ_INT(kvl_plan_capacity_for(&all[i], KVL_KV_FMT_F32, KVL_KV_FMT_F32, bs[b],
                                                   budgets[j], &pc, NULL),
                             KVL_OK);
                CHECK_EQ_INT(kc.block_bytes, pc.block_bytes);
                CHECK_EQ_INT(kc.n_blocks, pc.n_blocks);
                CHECK_EQ_INT(kc.token_capacity, pc.n_tokens);
                double tb;
                kvl_plan_kv_token_bytes(&all[i], KVL_KV_FMT_F32, KVL_KV_FMT_F32, bs[b], &tb, NULL);
                CHECK_NEAR(kc.bytes_per_token, tb, 0);
            }
        }
    }
    kvl_model_shape st = named("stories260K");
    kvl_hparams hp = to_hparams(&st);
    kvl_block_layout lay;
    CHECK_EQ_INT(kvl_block_layout_init(&hp, 16, &lay, NULL), KVL_OK);
    kvl_block_pool *pool = NULL;
    size_t budget = 1000000;
    CHECK_EQ_INT(kvl_block_pool_init(&lay, budget, &pool, NULL), KVL_OK);
    kvl_plan_capacity pc;
    CHECK_EQ_INT(kvl_plan_capacity_for(&st, KVL_KV_FMT_F32, KVL_KV_FMT_F32, 16, budget, &pc, NULL),
                 KVL_OK);
    /* 2*5*4*8*4 = 1280 B/token, 20,480 B/block: 48 blocks in 1,000,000 B */
    CHECK_EQ_INT(pc.n_blocks, 48);
    if (pool)
        CHECK_EQ_INT(kvl_block_pool_n_blocks(pool), pc.n_blocks);
    kvl_block_pool_free(pool);
}

/* The catalogue: what the simulator will need is there with its datasheet
 * figures; OPT's weights count as published; every llama shape mkmodel can
 * write passes its check; names and aliases resolve. */
static void test_catalog(void) {
    const char *shapes[] = {"OPT-13B",     "Llama-2-7B", "Llama-2-13B", "Llama-3-8B",
                            "Llama-3-70B", "Mistral-7B", "Qwen2.5-7B"};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        CHECK(kvl_catalog_shape_find(shapes[i]) != NULL);
    /* OPT-13B (MHA, 40 x 5120, ffn 20480, vocab 50272, 2048 + 2 positions, tied):
     *   embeddings 50272*5120 + 2050*5120                      =    267,888,640
     *   per layer: 4*5120^2 + 2*5120*20480                      =    314,572,800
     *             biases 4*5120 + 20480 + 5120, LN 4*5120       =         66,560
     *   40 layers + final LN 2*5120                             = 12,853,473,280 (card: 13B,
     *   the OPT paper's 12.85B) */
    kvl_model_shape opt = named("OPT-13B");
    size_t np = 0;
    CHECK_EQ_INT(kvl_plan_n_params(&opt, &np, NULL), KVL_OK);
    CHECK_EQ_INT(np, 12853473280ull);
    CHECK_EQ_INT(opt.hp.n_kv_heads, opt.hp.n_heads);
    /* bf16: matrices 2 B, vectors f32: (12,853,473,280 - 2,672,640) * 2 + 2,672,640 * 4 */
    size_t wb = 0;
    CHECK_EQ_INT(kvl_plan_weight_bytes(&opt, KVL_TYPE_BF16, &wb, NULL), KVL_OK);
    CHECK_EQ_INT(wb, (12853473280ull - 2672640ull) * 2 + 2672640ull * 4);
    opt.arch = (kvl_arch)7;
    kvl_error err;
    CHECK_EQ_INT(kvl_plan_shape_validate(&opt, &err), KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "arch id 7");

    size_t n;
    const kvl_model_shape *all = kvl_catalog_shapes(&n);
    for (size_t i = 0; i < n; i++) {
        kvl_mkmodel_spec sp;
        kvl_status st = kvl_catalog_mkmodel_spec(all[i].name, &sp, NULL);
        bool can =
            all[i].arch == KVL_ARCH_LLAMA && all[i].qkv_bias == (all[i].hp.arch == KVL_ARCH_QWEN2);
        CHECK_EQ_INT(st, can ? KVL_OK : KVL_E_INVALID);
        if (st == KVL_OK)
            CHECK_EQ_INT(kvl_mkmodel_check(&sp, NULL), KVL_OK);
    }

    /* datasheet figures (decimal), dense bf16 */
    const struct {
        const char *name;
        size_t mib;
        double bw, flops;
    } dev[] = {
        {"A100-40GB", 40960, 1.555e12, 312e12},      {"A100-80GB", 81920, 2.039e12, 312e12},
        {"H100-SXM-80GB", 81559, 3.35e12, 989.5e12}, {"H200-141GB", 143771, 4.8e12, 989.5e12},
        {"L40S", 46068, 864e9, 362.05e12},           {"L4", 23034, 300e9, 121e12},
    };
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++) {
        const kvl_catalog_device *d = kvl_catalog_device_find(dev[i].name);
        CHECK(d != NULL);
        if (!d)
            continue;
        CHECK_EQ_INT(d->bytes, dev[i].mib << 20);
        CHECK(d->bandwidth == dev[i].bw);
        CHECK(d->flops_bf16 == dev[i].flops);
        CHECK(d->source && d->spec_source);
    }
    CHECK(kvl_catalog_device_find("H100-80GB") == kvl_catalog_device_find("h100 sxm 80gb"));
    CHECK(kvl_catalog_device_find("l40s-48gb") == kvl_catalog_device_find("L40S"));
    CHECK(kvl_catalog_device_find("") == NULL);
    CHECK(kvl_catalog_device_find(NULL) == NULL);
}

/* K-quant weights: the super-block sizes (Q2_K 84, Q4_K 144, Q5_K 176, Q6_K
 * 210 B per 256), and the _K_M mixes sized exactly as mkmodel writes them. */
static void test_kquant_weights(void) {
    kvl_model_shape l3 = named("Llama-3-8B");
    size_t w;
    /* 8,029,995,008 matrix weights = 31,367,168 blocks of 256; norms
     * 1,064,960 B in f32 */
    static const struct {
        kvl_type t;
        size_t bb;
    } k[] = {{KVL_TYPE_Q2_K, 84}, {KVL_TYPE_Q4_K, 144}, {KVL_TYPE_Q5_K, 176}, {KVL_TYPE_Q6_K, 210}};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        CHECK_EQ_INT(kvl_plan_weight_bytes(&l3, k[i].t, &w, NULL), KVL_OK);
        CHECK_EQ_INT(w, 31367168ull * k[i].bb + 1064960);
    }
    /* Q4_K_M of Llama-3-8B: 4.58 GiB, the size llama.cpp reports for its
     * Meta-Llama-3-8B Q4_K_M files (4.89 bits per weight) */
    CHECK_EQ_INT(kvl_plan_weight_bytes_mix(&l3, KVL_TYPE_Q4_K, true, &w, NULL), KVL_OK);
    CHECK_NEAR((double)w / (1 << 30), 4.58, 0.005);
    CHECK_NEAR(8.0 * (double)w / 8030261248.0, 4.89, 0.01);
    /* without the mix: the plain type */
    size_t w2;
    CHECK_EQ_INT(kvl_plan_weight_bytes_mix(&l3, KVL_TYPE_Q4_K, false, &w2, NULL), KVL_OK);
    CHECK_EQ_INT(w2, 31367168ull * 144 + 1064960);
    kvl_error err;
    CHECK(kvl_plan_weight_bytes_mix(&l3, KVL_TYPE_Q8_0, true, &w, &err) == KVL_E_INVALID);
    CHECK_CONTAINS(err.msg, "_k_m mix");

    /* every mix and type against the tensors of the file mkmodel writes
     * (8 layers: use_more_bits picks layers 0, 2, 5, 7; ffn 320 is not
     * whole 256-blocks, so ffn_down stays f16) */
    static const char *const names[] = {"q4_k_m", "q5_k_m", "q4_k", "q6_k", "q2_k", "q8_0"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        kvl_mkmodel_spec spec = {.seed = 3};
        spec.shape = named("TinyLlama-1.1B");
        kvt_set_dims(&spec.shape.hp, (kvt_dims){.dim = 256,
                                                .n_heads = 4,
                                                .n_kv_heads = 2,
                                                .ffn_dim = 320,
                                                .n_layers = 8,
                                                .n_vocab = 300,
                                                .ctx_len = 256});
        CHECK(kvl_plan_parse_weights(names[i], &spec.type, &spec.k_m));
        const char *path = kvt_mkmodel_file(&spec, "plan_kquant.gguf");
        if (!path)
            continue;
        kvl_gguf *g = NULL;
        size_t file_bytes = 0;
        CHECK_EQ_INT(kvl_gguf_open(path, &g, &err), KVL_OK);
        for (uint64_t t = 0; g && t < g->n_tensors; t++)
            file_bytes += g->tensors[t].nbytes;
        kvl_gguf_free(g);
        CHECK_EQ_INT(kvl_plan_weight_bytes_mix(&spec.shape, spec.type, spec.k_m, &w, &err), KVL_OK);
        if (spec.k_m || spec.type == KVL_TYPE_Q8_0)
            CHECK_EQ_INT(w, file_bytes);
        else /* rows of 320 are rounded up to whole blocks (mkmodel: f16) */
            CHECK(w != file_bytes);
        remove(path);
    }
    kvl_type t;
    bool k_m;
    CHECK(kvl_plan_parse_weights("Q4_K_M", &t, &k_m) && t == KVL_TYPE_Q4_K && k_m);
    CHECK(kvl_plan_parse_weights("q6_k", &t, &k_m) && t == KVL_TYPE_Q6_K && !k_m);
    CHECK(!kvl_plan_parse_weights("q8_0_m", &t, &k_m));
    CHECK(!kvl_plan_parse_weights("q3_k_s", &t, &k_m));
}

int main(void) {
    test_published_facts();
    test_weight_bytes();
    test_kquant_weights();
    test_quantized_formats();
    test_blocks_and_capacity();
    test_plan_and_reverse();
    test_format_helpers();
    test_gguf();
    test_pool_parity();
    test_catalog();
    return kvt_finish("test_plan");
}
