/*
 * test_dtype: the element-type tables of core/dtype.h. Every name parses
 * back to its id; aliases and case are accepted; unknown names and ids are
 * refused without touching the output; the ggml layouts kvllm computes
 * with; the block-size rule that every store and the planner share.
 */
#include "core/dtype.h"
#include "testutil.h"

static void test_weight_types(void) {
    const kvl_type all[] = {KVL_TYPE_F32,  KVL_TYPE_F16,  KVL_TYPE_BF16, KVL_TYPE_Q8_0,
                            KVL_TYPE_Q4_0, KVL_TYPE_Q5_0, KVL_TYPE_Q5_1, KVL_TYPE_Q3_K};
    const char *names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q5_0", "q5_1", "q3_k"};
    for (int i = 0; i < 8; i++) {
        kvl_type t = KVL_TYPE_COUNT;
        CHECK(kvl_type_computed(all[i]));
        CHECK(!strcmp(kvl_type_name(all[i]), names[i]));
        CHECK(kvl_type_parse(names[i], &t) && t == all[i]);
        CHECK_CONTAINS(kvl_type_names(), names[i]);
    }
    kvl_type t = KVL_TYPE_COUNT;
    CHECK(kvl_type_parse("Q4_0", &t) && t == KVL_TYPE_Q4_0);
    CHECK(kvl_type_parse("FP16", &t) && t == KVL_TYPE_F16);
    CHECK(kvl_type_parse("fp32", &t) && t == KVL_TYPE_F32);
    t = KVL_TYPE_COUNT;
    CHECK(kvl_type_parse("Q5_K", &t) && t == KVL_TYPE_Q5_K);
    t = KVL_TYPE_COUNT;
    CHECK(!kvl_type_parse("q4_1", &t) && t == KVL_TYPE_COUNT);
    CHECK(!kvl_type_parse("fp8", &t) && t == KVL_TYPE_COUNT);
    CHECK(!kvl_type_parse("", &t));
    CHECK(!kvl_type_parse(NULL, &t));
    /* a known ggml type that kvllm does not compute with has no CLI name */
    CHECK(!kvl_type_computed((kvl_type)3)); /* Q4_1 */
    CHECK(!strcmp(kvl_type_name((kvl_type)3), "?"));
    CHECK(kvl_type_computed(KVL_TYPE_Q6_K) && !strcmp(kvl_type_name(KVL_TYPE_Q6_K), "q6_k"));
    CHECK(!strcmp(kvl_type_name(KVL_TYPE_COUNT), "?"));
    CHECK(!strcmp(kvl_type_name((kvl_type)-1), "?"));

    size_t blck = 0, ts = 0;
    const char *nm = NULL;
    CHECK(kvl_type_info(KVL_TYPE_Q8_0, &blck, &ts, &nm));
    CHECK_EQ_INT(blck, KVL_QK8_0);
    CHECK_EQ_INT(ts, sizeof(kvl_block_q8_0));
    CHECK(!strcmp(nm, "Q8_0"));
    CHECK(kvl_type_info(KVL_TYPE_Q4_0, &blck, &ts, &nm));
    CHECK_EQ_INT(blck, KVL_QK4_0);
    CHECK_EQ_INT(ts, sizeof(kvl_block_q4_0));
    CHECK(kvl_type_info(KVL_TYPE_BF16, &blck, &ts, NULL) && blck == 1 && ts == 2);
    CHECK(kvl_type_info(12, NULL, NULL, &nm) && !strcmp(nm, "Q4_K"));
    CHECK(!kvl_type_info(4, NULL, NULL, NULL)); /* removed Q4_2 */
    CHECK(!kvl_type_info(KVL_TYPE_COUNT, NULL, NULL, NULL));
}

static void test_kv_formats(void) {
    for (int i = 0; i < KVL_KV_FMT_COUNT; i++) {
        const kvl_kv_format_info *fi = kvl_kv_format_get((kvl_kv_format)i);
        CHECK(fi && fi->fmt == (kvl_kv_format)i);
        CHECK(!strcmp(kvl_kv_format_name((kvl_kv_format)i), fi->name));
        kvl_kv_format f = KVL_KV_FMT_COUNT;
        CHECK(kvl_kv_format_parse(fi->name, &f) && f == (kvl_kv_format)i);
        CHECK_CONTAINS(kvl_kv_format_names(), fi->name);
    }
    CHECK(kvl_kv_format_get(KVL_KV_FMT_COUNT) == NULL);
    CHECK(!strcmp(kvl_kv_format_name(KVL_KV_FMT_COUNT), "?"));
    CHECK(!strcmp(kvl_kv_format_name((kvl_kv_format)-1), "?"));
    kvl_kv_format f = KVL_KV_FMT_COUNT;
    CHECK(kvl_kv_format_parse("FP8", &f) && f == KVL_KV_FMT_FP8_E4M3);
    CHECK(kvl_kv_format_parse("q8_0", &f) && f == KVL_KV_FMT_INT8);
    CHECK(kvl_kv_format_parse("q4", &f) && f == KVL_KV_FMT_INT4);
    f = KVL_KV_FMT_COUNT;
    CHECK(!kvl_kv_format_parse("int2", &f) && f == KVL_KV_FMT_COUNT);
    CHECK(!kvl_kv_format_parse(NULL, &f));
    /* bits and scales: f16 has none; int8 one bf16 per token per head */
    CHECK_EQ_INT(kvl_kv_format_get(KVL_KV_FMT_F16)->elem_bits, 16);
    CHECK_EQ_INT(kvl_kv_format_get(KVL_KV_FMT_INT8)->ovh[KVL_KV_ROLE_V].token, 2);
    CHECK_EQ_INT(kvl_kv_format_get(KVL_KV_FMT_INT4)->elem_bits, 4);
}

static void test_block_size(void) {
    CHECK_EQ_INT(kvl_kv_block_size(0, KVL_KV_FMT_INT4, KVL_KV_FMT_INT8), 32);
    CHECK_EQ_INT(kvl_kv_block_size(0, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4), 32);
    CHECK_EQ_INT(kvl_kv_block_size(0, KVL_KV_FMT_INT8, KVL_KV_FMT_INT4), 16);
    CHECK_EQ_INT(kvl_kv_block_size(0, KVL_KV_FMT_F16, KVL_KV_FMT_F16), 16);
    CHECK_EQ_INT(kvl_kv_block_size(0, KVL_KV_FMT_F32, KVL_KV_FMT_F32), 16);
    /* a block size that is given is kept, whatever the formats */
    CHECK_EQ_INT(kvl_kv_block_size(8, KVL_KV_FMT_INT4, KVL_KV_FMT_INT4), 8);
    CHECK_EQ_INT(kvl_kv_block_size(64, KVL_KV_FMT_F16, KVL_KV_FMT_F16), 64);
}

int main(void) {
    test_weight_types();
    test_kv_formats();
    test_block_size();
    return kvt_finish("test_dtype");
}
