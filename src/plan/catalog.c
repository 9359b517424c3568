/*
 * catalog.c: the tables of named model shapes and devices (catalog.h), and
 * the lookups over them.
 *
 * Invariants: every number carries its source; each shape passes
 * kvl_plan_shape_validate and each llama shape that mkmodel can write
 * passes kvl_mkmodel_check (tests/test_plan.c).
 * Must not: hold state, allocate, print.
 */
#include "plan/catalog.h"

#include <stdio.h>
#include <strings.h>

/* ---- shapes ------------------------------------------------------------ */

/* Facts from each model's config.json on Hugging Face (hidden_size,
 * num_hidden_layers, num_attention_heads, num_key_value_heads,
 * intermediate_size / ffn_dim, vocab_size, max_position_embeddings,
 * rope_theta, rms_norm_eps, tie_word_embeddings), and for stories260K the
 * llama2.c checkpoint header (../shared/models/README.md).
 * head_dim = hidden_size / num_attention_heads for all of them; RoPE turns
 * the whole head. */
#define LLAMA(nm, L, H, KV, HD, D, F, V, C, ROPE, EPS, TIED, BIAS, SRC)                            \
    {                                                                                              \
        .name = nm,                                                                                \
        .hp = {.n_vocab = V,                                                                       \
               .dim = D,                                                                           \
               .n_layers = L,                                                                      \
               .n_heads = H,                                                                       \
               .n_kv_heads = KV,                                                                   \
               .head_dim = HD,                                                                     \
               .ffn_dim = F,                                                                       \
               .ctx_len = C,                                                                       \
               .rope_dim = HD,                                                                     \
               .rope_base = ROPE,                                                                  \
               .rms_eps = EPS},                                                                    \
        .arch = KVL_ARCH_LLAMA, .tied_embd = TIED, .qkv_bias = BIAS, .source = SRC                 \
    }
/* Qwen2: the llama family for the planner, GGUF architecture qwen2 */
#define QWEN2(nm, L, H, KV, HD, D, F, V, C, ROPE, EPS, TIED, BIAS, SRC)                            \
    {                                                                                              \
        .name = nm,                                                                                \
        .hp = {.arch = KVL_ARCH_QWEN2,                                                             \
               .n_vocab = V,                                                                       \
               .dim = D,                                                                           \
               .n_layers = L,                                                                      \
               .n_heads = H,                                                                       \
               .n_kv_heads = KV,                                                                   \
               .head_dim = HD,                                                                     \
               .ffn_dim = F,                                                                       \
               .ctx_len = C,                                                                       \
               .rope_dim = HD,                                                                     \
               .rope_base = ROPE,                                                                  \
               .rms_eps = EPS},                                                                    \
        .arch = KVL_ARCH_LLAMA, .tied_embd = TIED, .qkv_bias = BIAS, .source = SRC                 \
    }
static const kvl_model_shape k_shapes[] = {
    /* OPT: MHA, learned positions, LayerNorm (eps 1e-5), ReLU FFN of two
     * matrices, biases everywhere, output tied to the embedding */
    {.name = "OPT-13B",
     .hp = {.n_vocab = 50272,
            .dim = 5120,
            .n_layers = 40,
            .n_heads = 40,
            .n_kv_heads = 40,
            .head_dim = 128,
            .ffn_dim = 20480,
            .ctx_len = 2048,
            .rope_dim = 0,
            .rope_base = 0,
            .rms_eps = 1e-5f},
     .arch = KVL_ARCH_OPT,
     .tied_embd = true,
     .qkv_bias = true,
     .source = "facebook/opt-13b config.json (learned positions, LayerNorm, ReLU FFN)"},
    LLAMA("Llama-2-7B", 32, 32, 32, 128, 4096, 11008, 32000, 4096, 10000.0f, 1e-5f, false, false,
          "meta-llama/Llama-2-7b-hf config.json"),
    LLAMA("Llama-2-13B", 40, 40, 40, 128, 5120, 13824, 32000, 4096, 10000.0f, 1e-5f, false, false,
          "meta-llama/Llama-2-13b-hf config.json"),
    LLAMA("Llama-2-70B", 80, 64, 8, 128, 8192, 28672, 32000, 4096, 10000.0f, 1e-5f, false, false,
          "meta-llama/Llama-2-70b-hf config.json"),
    LLAMA("Llama-3-8B", 32, 32, 8, 128, 4096, 14336, 128256, 8192, 500000.0f, 1e-5f, false, false,
          "meta-llama/Meta-Llama-3-8B config.json"),
    LLAMA("Llama-3-70B", 80, 64, 8, 128, 8192, 28672, 128256, 8192, 500000.0f, 1e-5f, false, false,
          "meta-llama/Meta-Llama-3-70B config.json"),
    LLAMA("Llama-3.1-405B", 126, 128, 8, 128, 16384, 53248, 128256, 131072, 500000.0f, 1e-5f, false,
          false, "meta-llama/Llama-3.1-405B config.json"),
    LLAMA("Mistral-7B", 32, 32, 8, 128, 4096, 14336, 32000, 32768, 10000.0f, 1e-5f, false, false,
          "mistralai/Mistral-7B-v0.1 config.json (sliding_window 4096 ignored: full KV)"),
    QWEN2("Qwen2.5-7B", 28, 28, 4, 128, 3584, 18944, 152064, 131072, 1000000.0f, 1e-6f, false, true,
          "Qwen/Qwen2.5-7B config.json (q/k/v bias)"),
    QWEN2("Qwen2.5-72B", 80, 64, 8, 128, 8192, 29568, 152064, 131072, 1000000.0f, 1e-6f, false,
          true, "Qwen/Qwen2.5-72B config.json (q/k/v bias)"),
    QWEN2("Qwen2.5-0.5B", 24, 14, 2, 64, 896, 4864, 151936, 32768, 1000000.0f, 1e-6f, true, true,
          "Qwen/Qwen2.5-0.5B config.json (q/k/v bias)"),
    {.name = "Qwen3-0.6B",
     .hp = {.arch = KVL_ARCH_QWEN3,
            .n_vocab = 151936,
            .dim = 1024,
            .n_layers = 28,
            .n_heads = 16,
            .n_kv_heads = 8,
            .head_dim = 128,
            .ffn_dim = 3072,
            .ctx_len = 40960,
            .rope_dim = 128,
            .rope_base = 1000000.0f,
            .rms_eps = 1e-6f},
     .arch = KVL_ARCH_LLAMA,
     .tied_embd = true,
     .qkv_bias = false,
     .source = "Qwen/Qwen3-0.6B config.json (head_dim 128, q/k norms)"},
    {.name = "Llama-3.2-1B",
     .hp = {.n_vocab = 128256,
            .dim = 2048,
            .n_layers = 16,
            .n_heads = 32,
            .n_kv_heads = 8,
            .head_dim = 64,
            .ffn_dim = 8192,
            .ctx_len = 131072,
            .rope_dim = 64,
            .rope_base = 500000.0f,
            .rms_eps = 1e-5f},
     .arch = KVL_ARCH_LLAMA,
     .tied_embd = true,
     .rope_freqs = true,
     .source = "meta-llama/Llama-3.2-1B config.json (rope_scaling llama3, factor 32)"},
    LLAMA("TinyLlama-1.1B", 22, 32, 4, 64, 2048, 5632, 32000, 2048, 10000.0f, 1e-5f, false, false,
          "TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T config.json"),
    LLAMA("stories260K", 5, 8, 4, 8, 64, 172, 512, 512, 10000.0f, 1e-5f, true, false,
          "karpathy/tinyllamas stories260K.bin header (shared/models/README.md)"),
};
#undef LLAMA
#undef QWEN2

const kvl_model_shape *kvl_catalog_shapes(size_t *n) {
    *n = sizeof k_shapes / sizeof k_shapes[0];
    return k_shapes;
}

const kvl_model_shape *kvl_catalog_shape_find(const char *name) {
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0]; i++)
        if (!strcasecmp(name, k_shapes[i].name))
            return &k_shapes[i];
    return NULL;
}

/* ---- devices ----------------------------------------------------------- */

/* bytes: memory.total as nvidia-smi reports it (MiB), which is below the
 * marketing figure: the runtime never gets the nominal "80GB". bandwidth
 * and flops_bf16: NVIDIA's datasheets (decimal units; dense bf16 tensor
 * throughput, i.e. half the "with sparsity" figure the sheets headline). */
#define MIB ((size_t)1 << 20)
static const kvl_catalog_device k_devices[] = {
    {"H100-80GB", "H100-SXM-80GB", 81559 * MIB, 3.35e12, 989.5e12,
     "nvidia-smi: NVIDIA H100 80GB HBM3, 81559MiB",
     "NVIDIA H100 datasheet (SXM): 3.35 TB/s, BF16 1,979 TFLOPS with sparsity"},
    {"H200-141GB", "H200", 143771 * MIB, 4.8e12, 989.5e12, "nvidia-smi: NVIDIA H200, 143771MiB",
     "NVIDIA H200 datasheet (SXM): 4.8 TB/s, BF16 1,979 TFLOPS with sparsity"},
    {"A100-40GB", NULL, 40960 * MIB, 1.555e12, 312e12, "nvidia-smi: NVIDIA A100 40GB, 40960MiB",
     "NVIDIA A100 datasheet (SXM 40GB): 1,555 GB/s, BF16 312 TFLOPS"},
    {"A100-80GB", NULL, 81920 * MIB, 2.039e12, 312e12, "nvidia-smi: NVIDIA A100 80GB, 81920MiB",
     "NVIDIA A100 datasheet (SXM 80GB): 2,039 GB/s, BF16 312 TFLOPS"},
    {"L40S-48GB", "L40S", 46068 * MIB, 864e9, 362.05e12, "nvidia-smi: NVIDIA L40S, 46068MiB",
     "NVIDIA L40S datasheet: 864 GB/s, BF16 362.05 TFLOPS (733 with sparsity)"},
    {"L4-24GB", "L4", 23034 * MIB, 300e9, 121e12, "nvidia-smi: NVIDIA L4, 23034MiB",
     "NVIDIA L4 datasheet: 300 GB/s, BF16 242 TFLOPS with sparsity"},
    {"RTX4090-24GB", "RTX4090", 24564 * MIB, 1.008e12, 165.2e12,
     "nvidia-smi: NVIDIA GeForce RTX 4090, 24564MiB",
     "NVIDIA Ada Lovelace architecture whitepaper: 1,008 GB/s, BF16 (FP32 accumulate) 165.2 "
     "TFLOPS"},
};
#undef MIB

const kvl_catalog_device *kvl_catalog_devices(size_t *n) {
    *n = sizeof k_devices / sizeof k_devices[0];
    return k_devices;
}

/* Compare ignoring case and any '-', ' ' or '_' so "h100 80gb", "H100_80GB"
 * and "RTX-4090-24GB" all match. */
static bool name_match(const char *a, const char *b) {
    for (;;) {
        while (*a == '-' || *a == ' ' || *a == '_')
            a++;
        while (*b == '-' || *b == ' ' || *b == '_')
            b++;
        if (!*a || !*b)
            return !*a && !*b;
        char ca = *a, cb = *b;
        if (ca >= 'a' && ca <= 'z')
            ca = (char)(ca - 'a' + 'A');
        if (cb >= 'a' && cb <= 'z')
            cb = (char)(cb - 'a' + 'A');
        if (ca != cb)
            return false;
        a++;
        b++;
    }
}

const kvl_catalog_device *kvl_catalog_device_find(const char *name) {
    if (!name)
        return NULL;
    for (size_t i = 0; i < sizeof k_devices / sizeof k_devices[0]; i++)
        if (name_match(name, k_devices[i].name) ||
            (k_devices[i].alias && name_match(name, k_devices[i].alias)))
            return &k_devices[i];
    return NULL;
}

/* ---- mkmodel presets --------------------------------------------------- */

/* mkmodel writes the llama family: llama without biases, qwen2 with them,
 * head_dim = dim / n_heads, except qwen3 (its own head_dim). */
static bool mkmodel_can_write(const kvl_model_shape *s) {
    return s->arch == KVL_ARCH_LLAMA && s->qkv_bias == (s->hp.arch == KVL_ARCH_QWEN2) &&
           (s->hp.head_dim * s->hp.n_heads == s->hp.dim || s->hp.arch == KVL_ARCH_QWEN3);
}

const char *kvl_catalog_mkmodel_names(char *buf, size_t n) {
    size_t o = 0;
    if (n == 0)
        return buf;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof k_shapes / sizeof k_shapes[0]; i++) {
        if (!mkmodel_can_write(&k_shapes[i]))
            continue;
        int w = snprintf(buf + o, n - o, "%s%s", o ? ", " : "", k_shapes[i].name);
        if (w < 0 || (size_t)w >= n - o)
            break;
        o += (size_t)w;
    }
    return buf;
}

kvl_status kvl_catalog_mkmodel_spec(const char *name, kvl_mkmodel_spec *out, kvl_error *err) {
    const kvl_model_shape *sh = kvl_catalog_shape_find(name);
    char names[512];
    if (!sh || !mkmodel_can_write(sh))
        return kvl_errorf(err, KVL_E_INVALID, "'%s' is not one of %s%s", name ? name : "(null)",
                          kvl_catalog_mkmodel_names(names, sizeof names),
                          sh ? " (mkmodel writes llama, qwen2 and qwen3 shapes)" : "");
    if (strlen(name) >= sizeof out->shape.name)
        return kvl_errorf(err, KVL_E_INVALID, "preset name is longer than %zu bytes",
                          sizeof out->shape.name - 1);
    kvl_mkmodel_spec s;
    memset(&s, 0, sizeof s);
    s.shape = *sh;
    snprintf(s.shape.name, sizeof s.shape.name, "%s", name);
    s.shape.tied_embd = false;
    s.shape.source = NULL;
    s.type = KVL_TYPE_F16;
    *out = s;
    return KVL_OK;
}
