/*
 * A loaded llama-family model: hyperparameters, weight views (pointing into
 * the read-only mapping of the file, never copied) and the tokenizer.
 */
#ifndef KVL_MODEL_H
#define KVL_MODEL_H

#include "core/dtype.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

/* The hard limits on hyperparameters (KVL_MAX_*) are in core/dtype.h. */

/* Architectures. Append only. kvllm computes LLAMA, QWEN2 and QWEN3 (the
 * GGUF general.architecture of a loaded model, kvl_hparams.arch); the
 * planner also counts the weights of OPT (learned positions, LayerNorm,
 * biases on every projection, a two-matrix ReLU FFN), and its shapes use
 * LLAMA for every llama-like family (kvl_model_shape.arch). */
typedef enum kvl_arch {
    KVL_ARCH_LLAMA = 0, /* Llama 1/2/3.x, Mistral, TinyLlama, SmolLM */
    KVL_ARCH_OPT = 1,   /* planner only */
    KVL_ARCH_QWEN2 = 2, /* Qwen2, Qwen2.5 */
    KVL_ARCH_QWEN3 = 3, /* Qwen3 (dense) */
    KVL_ARCH_COUNT
} kvl_arch;

/*
 * What sets the architectures apart, one row each (hparams.c, k_arch): the
 * loader binds the optional tensors a row names and refuses any other, and
 * forward.c's prepare_qk() is the one place that applies them. The rest of
 * the block (RMSNorm, SwiGLU FFN, residuals, GQA attention) is shared.
 */
typedef struct kvl_arch_info {
    const char *name; /* general.architecture; also the prefix of its keys */
    bool computed;    /* kvllm runs it (OPT: the planner only) */
    bool rope_neox;   /* rotate pairs (i, i + rope_dim/2) (GPT-NeoX), not (2i, 2i+1) */
    bool qkv_bias;    /* blk.N.attn_{q,k,v}.bias added after the projections */
    bool qk_norm;     /* blk.N.attn_{q,k}_norm.weight: RMSNorm of each q and k
                         head (head_dim) before the rotation */
    bool rope_freqs;  /* may carry rope_freqs.weight (rope_dim/2 divisors of the
                         rotary frequencies: Llama 3.1+'s long-context scaling) */
} kvl_arch_info;

/* The row of an architecture (a < KVL_ARCH_COUNT). */
const kvl_arch_info *kvl_arch_get(kvl_arch a);

typedef struct kvl_hparams {
    kvl_arch arch; /* what kvllm computes: LLAMA, QWEN2 or QWEN3 (0, llama,
                      for llama2.c files and hand-made shapes) */
    int64_t n_vocab;
    int64_t dim; /* embedding length */
    int64_t n_layers;
    int64_t n_heads;    /* query heads */
    int64_t n_kv_heads; /* MHA: == n_heads; GQA: divides n_heads; MQA: 1 */
    int64_t head_dim;
    int64_t ffn_dim;
    int64_t ctx_len;  /* the model's context length */
    int64_t rope_dim; /* rotated dims per head (<= head_dim, even) */
    float rope_base;
    float rope_scale; /* rope.scaling.factor (linear): positions are divided
                         by it; 0 or 1 = none */
    float rms_eps;
} kvl_hparams;

/* A model's shape: its hyperparameters and the facts that change the weight
 * count. The one shape struct: the planner, the catalogue of named shapes
 * (plan/catalog.h) and mkmodel's spec all hold one. */
typedef struct kvl_model_shape {
    char name[64];
    kvl_hparams hp;
    kvl_arch arch;
    bool tied_embd;     /* output shares the token embedding (counted once) */
    bool qkv_bias;      /* q, k, v projections carry a bias (Qwen2) */
    bool rope_freqs;    /* carries rope_freqs.weight (Llama 3.1+; mkmodel writes it) */
    const char *source; /* where the numbers come from; NULL for files */
} kvl_model_shape;

/* A weight matrix or vector: (ne1 rows, ne0 columns) of one kvl_type. */
typedef struct kvl_weight {
    const void *data;
    kvl_type type;
    int64_t ne0, ne1;
} kvl_weight;

typedef struct kvl_layer_weights {
    kvl_weight attn_norm; /* (dim) f32 */
    kvl_weight wq;        /* (n_heads*head_dim, dim) */
    kvl_weight wk;        /* (n_kv_heads*head_dim, dim) */
    kvl_weight wv;        /* (n_kv_heads*head_dim, dim) */
    kvl_weight bq;        /* (n_heads*head_dim) f32; data NULL unless qkv_bias */
    kvl_weight bk;        /* (n_kv_heads*head_dim) f32; likewise */
    kvl_weight bv;        /* (n_kv_heads*head_dim) f32; likewise */
    kvl_weight q_norm;    /* (head_dim) f32; data NULL unless qk_norm */
    kvl_weight k_norm;    /* (head_dim) f32; likewise */
    kvl_weight wo;        /* (dim, n_heads*head_dim) */
    kvl_weight ffn_norm;  /* (dim) f32 */
    kvl_weight w_gate;    /* (ffn_dim, dim) */
    kvl_weight w_down;    /* (dim, ffn_dim) */
    kvl_weight w_up;      /* (ffn_dim, dim) */
} kvl_layer_weights;

typedef enum kvl_model_format {
    KVL_MODEL_GGUF = 0,
    KVL_MODEL_LLAMA2C = 1,
} kvl_model_format;

typedef struct kvl_model {
    kvl_model_format format;
    kvl_hparams hp;
    kvl_weight tok_embd;       /* (n_vocab, dim) */
    kvl_weight output_norm;    /* (dim) f32 */
    kvl_weight output;         /* (n_vocab, dim); may alias tok_embd */
    kvl_weight rope_freqs;     /* (rope_dim/2) f32 divisors; data NULL when absent */
    kvl_layer_weights *layers; /* (n_layers) */
    kvl_tokenizer *tok;
    kvl_gguf *gguf;      /* GGUF: the parsed file (owns the mapping) */
    kvl_mapped_file map; /* llama2.c: the checkpoint mapping */
    size_t weight_bytes; /* bytes of all weights */
    float **owned;       /* (n_owned) F16/BF16 norms and biases converted to F32 at
                            load (the forward pass reads them as F32); freed with m */
    size_t n_owned;
    char name[64];
} kvl_model;

/* kvl_model_params, kvl_model_load and kvl_model_free are public (kvllm.h). */

/* Load a GGUF or llama2.c checkpoint (told apart by the magic). All header
 * fields are validated against each other and against every tensor's shape
 * before any pointer is formed. */
kvl_status kvl_model_load(const char *path, const kvl_model_params *p, kvl_model **out,
                          kvl_error *err);
/* The pieces, for tests and fuzzing on in-memory images. */
kvl_status kvl_model_from_gguf(kvl_gguf *g, kvl_model **out, kvl_error *err);
kvl_status kvl_llama2c_parse(const uint8_t *buf, size_t size, kvl_model **out, kvl_error *err);
void kvl_model_free(kvl_model *m);

/* Every weight row dequantized and checked for NaN and Inf (what
 * kvl_model_params.check_tensors asks of kvl_model_load): KVL_E_FORMAT naming
 * the tensor, row and column of the first. Reads all the weights. */
kvl_status kvl_model_check_tensors(const kvl_model *m, kvl_error *err);

/* Only the tokenizer of a model file (llama.cpp's vocab_only): a GGUF's
 * tokenizer.ggml.* keys, tensors neither needed nor read (vocabulary-only
 * files such as llama.cpp's ggml-vocab-*.gguf load); a llama2.c checkpoint
 * loads whole for its vocabulary size, then its tokenizer file (p's
 * tokenizer_path or beside it). On error *out is untouched. */
kvl_status kvl_model_load_tokenizer(const char *path, const kvl_model_params *p,
                                    kvl_tokenizer **out, kvl_error *err);

/* Read and validate the hyperparameters of a GGUF: general.architecture
 * (one of k_arch) and its <arch>.* keys (vocabulary size from
 * token_embd.weight). Keys that would change the math in ways kvllm does not
 * implement (sliding windows, YaRN/LongRoPE scaling, soft-capping, experts,
 * a value_length unlike key_length, ...) are KVL_E_UNSUPPORTED naming the
 * key and its value. Does not look at any other tensor. */
kvl_status kvl_hparams_from_gguf(const kvl_gguf *g, kvl_hparams *out, kvl_error *err);
/* Check that hyperparameters are within limits and consistent with each
 * other (heads divide, rope_dim even and <= head_dim, ...). */
kvl_status kvl_hparams_validate(const kvl_hparams *hp, kvl_error *err);

#endif
