/*
 * dtype.c: the tables behind dtype.h: ggml type layouts (with the CLI name
 * of the types kvllm computes with), the KV format table, and the
 * block-size rule.
 *
 * Invariants: the tables are const and each name is written once; every
 * lookup checks its index before use.
 * Must not: hold state, allocate, print, or assert on input.
 */
#include "core/dtype.h"

#include <strings.h>

/* ---- weight types ------------------------------------------------------ */

/* ggml type ids whose block layout is known; name NULL = unknown/removed.
 * cli is the lower-case name kvllm's flags take, only for the types it
 * computes with. */
static const struct {
    const char *name;
    const char *cli;
    uint16_t blck;      /* elements per block */
    uint16_t type_size; /* bytes per block */
} k_types[KVL_TYPE_COUNT] = {
    [0] = {"F32", "f32", 1, 4},        [1] = {"F16", "f16", 1, 2},
    [2] = {"Q4_0", "q4_0", 32, 18},    [3] = {"Q4_1", NULL, 32, 20},
    [6] = {"Q5_0", "q5_0", 32, 22},    [7] = {"Q5_1", "q5_1", 32, 24},
    [8] = {"Q8_0", "q8_0", 32, 34},    [9] = {"Q8_1", NULL, 32, 36},
    [10] = {"Q2_K", "q2_k", 256, 84},  [11] = {"Q3_K", "q3_k", 256, 110},
    [12] = {"Q4_K", "q4_k", 256, 144}, [13] = {"Q5_K", "q5_k", 256, 176},
    [14] = {"Q6_K", "q6_k", 256, 210}, [15] = {"Q8_K", NULL, 256, 292},
    [16] = {"IQ2_XXS", NULL, 256, 66}, [17] = {"IQ2_XS", NULL, 256, 74},
    [18] = {"IQ3_XXS", NULL, 256, 98}, [19] = {"IQ1_S", NULL, 256, 50},
    [20] = {"IQ4_NL", NULL, 32, 18},   [21] = {"IQ3_S", NULL, 256, 110},
    [22] = {"IQ2_S", NULL, 256, 82},   [23] = {"IQ4_XS", NULL, 256, 136},
    [24] = {"I8", NULL, 1, 1},         [25] = {"I16", NULL, 1, 2},
    [26] = {"I32", NULL, 1, 4},        [27] = {"I64", NULL, 1, 8},
    [28] = {"F64", NULL, 1, 8},        [29] = {"IQ1_M", NULL, 256, 56},
    [30] = {"BF16", "bf16", 1, 2},     [34] = {"TQ1_0", NULL, 256, 54},
    [35] = {"TQ2_0", NULL, 256, 66},   [39] = {"MXFP4", NULL, 32, 17},
};

/* The computed types in the order names and messages list them. */
static const kvl_type k_computed[] = {KVL_TYPE_F32,  KVL_TYPE_F16,  KVL_TYPE_BF16, KVL_TYPE_Q8_0,
                                      KVL_TYPE_Q4_0, KVL_TYPE_Q5_0, KVL_TYPE_Q5_1, KVL_TYPE_Q2_K,
                                      KVL_TYPE_Q3_K, KVL_TYPE_Q4_K, KVL_TYPE_Q5_K, KVL_TYPE_Q6_K};

bool kvl_type_info(uint32_t type, size_t *blck, size_t *type_size, const char **name) {
    if (type >= KVL_TYPE_COUNT || !k_types[type].name)
        return false;
    if (blck)
        *blck = k_types[type].blck;
    if (type_size)
        *type_size = k_types[type].type_size;
    if (name)
        *name = k_types[type].name;
    return true;
}

bool kvl_type_computed(kvl_type t) {
    return (int)t >= 0 && t < KVL_TYPE_COUNT && k_types[t].cli != NULL;
}

const char *kvl_type_name(kvl_type t) { return kvl_type_computed(t) ? k_types[t].cli : "?"; }

bool kvl_type_parse(const char *s, kvl_type *out) {
    if (!s)
        return false;
    for (size_t i = 0; i < sizeof k_computed / sizeof k_computed[0]; i++) {
        if (!strcasecmp(s, k_types[k_computed[i]].cli)) {
            *out = k_computed[i];
            return true;
        }
    }
    if (!strcasecmp(s, "fp32") || !strcasecmp(s, "fp16")) {
        *out = s[2] == '3' ? KVL_TYPE_F32 : KVL_TYPE_F16;
        return true;
    }
    return false;
}

const char *kvl_type_names(void) {
    return "f32, f16, bf16, q8_0, q4_0, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k";
}

/* ---- KV formats -------------------------------------------------------- */

/* Scales of int8 and int4 are bf16: two bytes like f16 but with f32's
 * exponent range, so 1e30 or 1e-30 still gets a finite, non-zero scale (an
 * f16 scale overflows past 65504 * 127). With f32 per-token int8 scales
 * TinyLlama (head_dim 64) would save only 1.88x against f16; with bf16 it
 * saves 1.94x. The int4 zero point is one int8 on the scale's grid, and the
 * int4 key group is one block: at --block-size 32 (kvl_kv_block_size) int4
 * K+V costs 73 B per token per head of 64, 3.51x less than f16, and keeps
 * perplexity within 3% where block 64 (3.66x) does not. fp8 keys add a bf16
 * mean per channel per block (2 * head_dim bytes), which cuts their error
 * several times (kv/kv_codec.c).
 * docs/kv_formats.md has every layout; src/kernels/kv_kern.h draws them. */
static const kvl_kv_format_info k_formats[KVL_KV_FMT_COUNT] = {
    {KVL_KV_FMT_F32, "f32", 32, {{0, 0, 0}, {0, 0, 0}}, "none"},
    {KVL_KV_FMT_F16, "f16", 16, {{0, 0, 0}, {0, 0, 0}}, "none"},
    {KVL_KV_FMT_BF16, "bf16", 16, {{0, 0, 0}, {0, 0, 0}}, "none"},
    {KVL_KV_FMT_FP8_E4M3,
     "fp8_e4m3",
     8,
     {{4, 0, 2}, {4, 0, 0}},
     "one f32 scale per head per block (amax / 448); K also a bf16 mean per channel per block"},
    {KVL_KV_FMT_FP8_E5M2,
     "fp8_e5m2",
     8,
     {{4, 0, 2}, {4, 0, 0}},
     "one f32 scale per head per block (amax / 57344); K also a bf16 mean per channel per block"},
    {KVL_KV_FMT_INT8,
     "int8",
     8,
     {{0, 2, 0}, {0, 2, 0}},
     "one bf16 scale per token per head, symmetric"},
    {KVL_KV_FMT_INT4,
     "int4",
     4,
     {{0, 0, 3}, {0, 3, 0}},
     "K: bf16 scale + int8 zero point per channel per head per block; "
     "V: bf16 scale + int8 zero point per token per head"},
};

const kvl_kv_format_info *kvl_kv_format_get(kvl_kv_format f) {
    if ((int)f < 0 || f >= KVL_KV_FMT_COUNT)
        return NULL;
    return &k_formats[f];
}

const char *kvl_kv_format_name(kvl_kv_format f) {
    const kvl_kv_format_info *fi = kvl_kv_format_get(f);
    return fi ? fi->name : "?";
}

bool kvl_kv_format_parse(const char *s, kvl_kv_format *out) {
    static const struct {
        const char *name;
        kvl_kv_format f;
    } alias[] = {
        {"fp32", KVL_KV_FMT_F32},     {"fp16", KVL_KV_FMT_F16},      {"e4m3", KVL_KV_FMT_FP8_E4M3},
        {"fp8", KVL_KV_FMT_FP8_E4M3}, {"e5m2", KVL_KV_FMT_FP8_E5M2}, {"q8", KVL_KV_FMT_INT8},
        {"q8_0", KVL_KV_FMT_INT8},    {"q4", KVL_KV_FMT_INT4},
    };
    if (!s)
        return false;
    for (int i = 0; i < KVL_KV_FMT_COUNT; i++) {
        if (!strcasecmp(s, k_formats[i].name)) {
            *out = (kvl_kv_format)i;
            return true;
        }
    }
    for (size_t i = 0; i < sizeof alias / sizeof alias[0]; i++) {
        if (!strcasecmp(s, alias[i].name)) {
            *out = alias[i].f;
            return true;
        }
    }
    return false;
}

const char *kvl_kv_format_names(void) { return "f32, f16, bf16, fp8_e4m3, fp8_e5m2, int8, int4"; }

int kvl_kv_block_size(int requested, kvl_kv_format k, kvl_kv_format v) {
    (void)v;
    if (requested != 0)
        return requested;
    return k == KVL_KV_FMT_INT4 ? 32 : 16;
}
