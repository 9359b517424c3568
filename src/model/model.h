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

typedef struct kvl_hparams {
    int64_t n_vocab;
    int64_t dim;        /* embedding length */
    int64_t n_layers;
    int64_t n_heads;    /* query heads */
    int64_t n_kv_heads; /* MHA: == n_heads; GQA: divides n_heads; MQA: 1 */
    int64_t head_dim;
    int64_t ffn_dim;
    int64_t ctx_len; /* the model's context length */
    int64_t rope_dim; /* rotated dims per head (<= head_dim, even) */
    float rope_base;
    float rms_eps;
} kvl_hparams;

/* The architectures whose shapes kvllm knows. kvllm computes LLAMA only;
 * the planner also counts the weights of OPT (learned positions,
 * LayerNorm, biases on every projection, a two-matrix ReLU FFN). */
typedef enum kvl_arch { KVL_ARCH_LLAMA = 0, KVL_ARCH_OPT = 1 } kvl_arch;

/* A model's shape: its hyperparameters and the facts that change the weight
 * count. The one shape struct: the planner, the catalogue of named shapes
 * (plan/catalog.h) and mkmodel's spec all hold one. */
typedef struct kvl_model_shape {
    char name[64];
    kvl_hparams hp;
    kvl_arch arch;
    bool tied_embd;     /* output shares the token embedding (counted once) */
    bool qkv_bias;      /* q, k, v projections carry a bias (Qwen2) */
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
    kvl_weight tok_embd;    /* (n_vocab, dim) */
    kvl_weight output_norm; /* (dim) f32 */
    kvl_weight output;      /* (n_vocab, dim); may alias tok_embd */
    kvl_layer_weights *layers; /* (n_layers) */
    kvl_tokenizer *tok;
    kvl_gguf *gguf;       /* GGUF: the parsed file (owns the mapping) */
    kvl_mapped_file map;  /* llama2.c: the checkpoint mapping */
    size_t weight_bytes;  /* bytes of all weights */
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
kvl_status kvl_llama2c_parse(const uint8_t *buf, size_t size, kvl_model **out,
                             kvl_error *err);
void kvl_model_free(kvl_model *m);

/* Read and validate the llama.* hyperparameters of a GGUF (vocabulary size
 * from token_embd.weight). Does not look at any other tensor. */
kvl_status kvl_hparams_from_gguf(const kvl_gguf *g, kvl_hparams *out, kvl_error *err);
/* Check that hyperparameters are within limits and consistent with each
 * other (heads divide, rope_dim even and <= head_dim, ...). */
kvl_status kvl_hparams_validate(const kvl_hparams *hp, kvl_error *err);

#endif
