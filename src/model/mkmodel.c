/*
 * The random-weight llama model generator behind `kvllm mkmodel`: the spec
 * check (shapes come from the caller; named presets are resolved in the
 * catalogue, plan/catalog.c), a deterministic per-row RNG, the
 * vocabulary (loaded from a llama2.c tokenizer file or synthesized), and
 * the GGUF it streams through the writer. See mkmodel.h.
 *
 * Invariants: a generated model's bytes depend only on the spec and the
 * vocabulary; no tensor is held in memory beyond one row.
 * Must not: exit, abort or assert on a bad spec (status + message).
 */
#include "model/mkmodel.h"

#include "kernels/kernels.h"
#include "model/model.h"
#include "model/tokenizer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

kvl_status kvl_mkmodel_check(const kvl_mkmodel_spec *s, kvl_error *err) {
#define RANGE(field, flag, lo, hi)                                                                 \
    do {                                                                                           \
        if (s->shape.hp.field < (lo) || s->shape.hp.field > (hi))                                  \
            return kvl_errorf(err, KVL_E_INVALID, "%s %lld is outside [%lld, %lld]", flag,         \
                              (long long)s->shape.hp.field, (long long)(lo), (long long)(hi));     \
    } while (0)
    RANGE(dim, "--dim", 1, KVL_MAX_DIM);
    RANGE(n_layers, "--layers", 1, KVL_MAX_LAYERS);
    RANGE(n_heads, "--heads", 1, KVL_MAX_HEADS);
    RANGE(n_kv_heads, "--kv-heads", 1, KVL_MAX_HEADS);
    RANGE(ffn_dim, "--ffn", 1, 4 * (int64_t)KVL_MAX_DIM);
    RANGE(n_vocab, "--vocab-size", 3, KVL_MAX_VOCAB);
    RANGE(ctx_len, "--ctx", 1, KVL_MAX_CTX);
#undef RANGE
    const kvl_hparams *hp = &s->shape.hp;
    if (hp->arch < 0 || hp->arch >= KVL_ARCH_COUNT || !kvl_arch_get(hp->arch)->computed)
        return kvl_errorf(err, KVL_E_INVALID,
                          "shape '%s': architecture id %d is not one kvllm writes (llama 0, "
                          "qwen2 2, qwen3 3)",
                          s->shape.name, (int)hp->arch);
    const kvl_arch_info *ai = kvl_arch_get(hp->arch);
    if (s->shape.rope_freqs && !ai->rope_freqs)
        return kvl_errorf(err, KVL_E_INVALID, "shape '%s': architecture '%s' has no rope_freqs",
                          s->shape.name, ai->name);
    bool own_hd = hp->arch == KVL_ARCH_QWEN3 && hp->head_dim > 0;
    if (!own_hd && hp->dim % hp->n_heads)
        return kvl_errorf(err, KVL_E_INVALID, "--heads %lld does not divide --dim %lld",
                          (long long)hp->n_heads, (long long)hp->dim);
    int64_t hd = own_hd ? hp->head_dim : hp->dim / hp->n_heads;
    if (hd % 2)
        return kvl_errorf(err, KVL_E_INVALID,
                          "head_dim = --dim %lld / --heads %lld = %lld is odd (RoPE rotates pairs)",
                          (long long)s->shape.hp.dim, (long long)s->shape.hp.n_heads,
                          (long long)hd);
    if (hd > KVL_MAX_HEAD_DIM)
        return kvl_errorf(err, KVL_E_INVALID, "head_dim = --dim %lld / --heads %lld = %lld > %d",
                          (long long)s->shape.hp.dim, (long long)s->shape.hp.n_heads, (long long)hd,
                          KVL_MAX_HEAD_DIM);
    if (s->shape.hp.n_kv_heads > s->shape.hp.n_heads ||
        s->shape.hp.n_heads % s->shape.hp.n_kv_heads)
        return kvl_errorf(err, KVL_E_INVALID, "--kv-heads %lld does not divide --heads %lld",
                          (long long)s->shape.hp.n_kv_heads, (long long)s->shape.hp.n_heads);
    if (!(s->shape.hp.rope_base > 0.0f) || s->shape.hp.rope_base > 1e12f)
        return kvl_errorf(err, KVL_E_INVALID, "--rope-base %g is outside (0, 1e12]",
                          (double)s->shape.hp.rope_base);
    if (!(s->shape.hp.rms_eps > 0.0f) || s->shape.hp.rms_eps > 0.1f)
        return kvl_errorf(err, KVL_E_INVALID, "--eps %g is outside (0, 0.1]",
                          (double)s->shape.hp.rms_eps);
    if (!kvl_type_computed(s->type))
        return kvl_errorf(err, KVL_E_INVALID, "--type id %d is not one of %s", (int)s->type,
                          kvl_type_names());
    if (s->k_m && s->type != KVL_TYPE_Q4_K && s->type != KVL_TYPE_Q5_K)
        return kvl_errorf(err, KVL_E_INVALID,
                          "the _k_m mix needs type q4_k or q5_k, not type id %d", (int)s->type);
    if (s->alignment &&
        ((s->alignment & (s->alignment - 1)) || s->alignment > KVL_GGUF_MAX_ALIGNMENT))
        return kvl_errorf(err, KVL_E_INVALID, "--alignment %zu is not a power of two in [1, %u]",
                          s->alignment, (unsigned)KVL_GGUF_MAX_ALIGNMENT);
    if (s->shape.arch != KVL_ARCH_LLAMA || s->shape.qkv_bias != ai->qkv_bias)
        return kvl_errorf(err, KVL_E_INVALID,
                          "shape '%s': mkmodel writes llama-family models with q/k/v biases "
                          "exactly for qwen2 (shape arch id %d, '%s'%s)",
                          s->shape.name, (int)s->shape.arch, ai->name,
                          s->shape.qkv_bias ? ", q/k/v biases" : "");
    if (strnlen(s->shape.name, sizeof s->shape.name) == sizeof s->shape.name)
        return kvl_errorf(err, KVL_E_INVALID, "--name is longer than %zu bytes",
                          sizeof s->shape.name - 1);
    return KVL_OK;
}

kvl_type kvl_mkmodel_weight_type(const kvl_mkmodel_spec *s, int64_t ne0) {
    size_t blck = 1, tsize = 0;
    const char *nm = NULL;
    if (!kvl_type_info((uint32_t)s->type, &blck, &tsize, &nm) || blck == 0)
        return KVL_TYPE_F16;
    return ne0 % (int64_t)blck ? KVL_TYPE_F16 : s->type;
}

/* llama.cpp's use_more_bits: the layers a _M mix gives more bits */
static bool use_more_bits(int64_t i, int64_t n) {
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

kvl_type kvl_mkmodel_tensor_type(const kvl_mkmodel_spec *s, kvl_mkmodel_role role, int64_t layer,
                                 int64_t ne0) {
    if (!s->k_m)
        return kvl_mkmodel_weight_type(s, ne0);
    kvl_type t = s->type;
    if (role == KVL_MK_OUTPUT || (s->shape.tied_embd && role == KVL_MK_TOKEN_EMBD))
        t = KVL_TYPE_Q6_K;
    else if ((role == KVL_MK_ATTN_V || role == KVL_MK_FFN_DOWN) &&
             use_more_bits(layer, s->shape.hp.n_layers))
        t = KVL_TYPE_Q6_K;
    return ne0 % 256 ? KVL_TYPE_F16 : t;
}

uint32_t kvl_mkmodel_file_type(kvl_type t) {
    switch (t) {
    case KVL_TYPE_F32: return 0;
    case KVL_TYPE_F16: return 1;
    case KVL_TYPE_Q4_0: return 2;
    case KVL_TYPE_Q8_0: return 7;
    case KVL_TYPE_Q5_0: return 8;
    case KVL_TYPE_Q5_1: return 9;
    case KVL_TYPE_Q2_K: return 10; /* MOSTLY_Q2_K */
    case KVL_TYPE_Q3_K: return 12; /* MOSTLY_Q3_K_M, as llama-quantize --pure Q3_K_M */
    case KVL_TYPE_Q4_K: return 15; /* MOSTLY_Q4_K_M, as llama-quantize --pure Q4_K_M */
    case KVL_TYPE_Q5_K: return 17; /* MOSTLY_Q5_K_M */
    case KVL_TYPE_Q6_K: return 18;
    case KVL_TYPE_BF16: return 32;
    default: return 1;
    }
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* qwen3 keeps its own head_dim; the others have dim / n_heads */
static int64_t mk_head_dim(const kvl_mkmodel_spec *s) {
    const kvl_hparams *hp = &s->shape.hp;
    return hp->arch == KVL_ARCH_QWEN3 && hp->head_dim > 0 ? hp->head_dim : hp->dim / hp->n_heads;
}

static bool is_norm(const char *name) {
    size_t n = strlen(name);
    static const char suf[] = "_norm.weight";
    return n >= sizeof suf - 1 && !strcmp(name + n - (sizeof suf - 1), suf);
}

/* Llama 3.1's rotary divisors (its reference "apply_scaling"): long
 * wavelengths divided by factor, short ones kept, a smooth ramp between. */
static void llama3_rope_factors(const kvl_mkmodel_spec *s, float *out, int64_t n) {
    const double factor = 32, low = 1, high = 4, old_ctx = 8192, pi = 3.14159265358979323846;
    int64_t hd = mk_head_dim(s);
    for (int64_t i = 0; i < n; i++) {
        double freq = pow((double)s->shape.hp.rope_base, -(double)(2 * i) / (double)hd);
        double wavelen = 2 * pi / freq;
        double f;
        if (wavelen < old_ctx / high) {
            f = 1;
        } else if (wavelen > old_ctx / low) {
            f = factor;
        } else {
            double smooth = (old_ctx / wavelen - low) / (high - low);
            f = 1 / ((1 - smooth) / factor + smooth);
        }
        out[i] = (float)f;
    }
}

static bool is_qk_norm(const char *name) {
    size_t n = strlen(name);
    return (n >= 18 && !strcmp(name + n - 18, "attn_q_norm.weight")) ||
           (n >= 18 && !strcmp(name + n - 18, "attn_k_norm.weight"));
}

void kvl_mkmodel_row(const kvl_mkmodel_spec *s, const char *name, int64_t row, float *out,
                     int64_t n) {
    if (!strcmp(name, "rope_freqs.weight")) {
        llama3_rope_factors(s, out, n);
        return;
    }
    if (is_norm(name) && !is_qk_norm(name)) {
        for (int64_t i = 0; i < n; i++)
            out[i] = 1.0f;
        return;
    }
    uint64_t x = s->seed ^ fnv1a64(name);
    x = splitmix64(&x) ^ (uint64_t)row;
    uint64_t st = splitmix64(&x);
    /* four 16-bit uniforms on 0..65535: sum has mean 131070 and variance
     * 4 * (65536^2 - 1) / 12, i.e. std 65536/sqrt(3) up to 1e-10 */
    const double k = KVL_MKMODEL_STD * 1.7320508075688772 / 65536.0;
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = splitmix64(&st);
        int64_t sum = (int64_t)(r & 0xffff) + (int64_t)((r >> 16) & 0xffff) +
                      (int64_t)((r >> 32) & 0xffff) + (int64_t)(r >> 48);
        out[i] = (float)((double)(sum - 131070) * k);
    }
    if (is_qk_norm(name))
        for (int64_t i = 0; i < n; i++)
            out[i] = 1.0f + 10.0f * out[i];
}

/* -- vocabulary -- */

void kvl_mkmodel_vocab_free(kvl_mkmodel_vocab *v) {
    if (!v)
        return;
    if (v->pieces)
        for (int32_t i = 0; i < v->n; i++)
            free(v->pieces[i]);
    free(v->pieces);
    free(v->scores);
    free(v->types);
    kvl_gguf_free(v->src);
    memset(v, 0, sizeof *v);
}

static kvl_status vocab_alloc(int32_t n, kvl_mkmodel_vocab *v, kvl_error *err) {
    memset(v, 0, sizeof *v);
    v->pieces = calloc((size_t)n, sizeof *v->pieces);
    v->scores = calloc((size_t)n, sizeof *v->scores);
    v->types = calloc((size_t)n, sizeof *v->types);
    if (!v->pieces || !v->scores || !v->types) {
        free(v->pieces);
        free(v->scores);
        free(v->types);
        memset(v, 0, sizeof *v);
        return kvl_errorf(err, KVL_E_NOMEM, "mkmodel: vocabulary of %d: out of memory", n);
    }
    v->n = n;
    return KVL_OK;
}

static bool is_byte_piece(const char *p, size_t len) {
    static const char hex[] = "0123456789ABCDEF";
    return len == 6 && !memcmp(p, "<0x", 3) && p[5] == '>' && strchr(hex, p[3]) && p[3] &&
           strchr(hex, p[4]) && p[4];
}

kvl_status kvl_mkmodel_vocab_count(const char *path, int32_t *n, kvl_error *err) {
    kvl_mapped_file f;
    kvl_status st = kvl_map_file(path, &f, err);
    if (st != KVL_OK)
        return st;
    size_t off = 4;
    int64_t count = 0;
    if (f.size < 4) {
        kvl_unmap_file(&f);
        return kvl_errorf(err, KVL_E_FORMAT, "%s: %zu bytes is too short for a llama2.c tokenizer",
                          path, f.size);
    }
    while (off < f.size) {
        int32_t len;
        if (f.size - off < 8) {
            kvl_unmap_file(&f);
            return kvl_errorf(err, KVL_E_FORMAT, "%s: record %lld: header past the end of the file",
                              path, (long long)count);
        }
        memcpy(&len, f.data + off + 4, 4);
        if (len < 0 || (size_t)len > f.size - off - 8) {
            kvl_unmap_file(&f);
            return kvl_errorf(err, KVL_E_FORMAT,
                              "%s: record %lld: length %d past the end of the file", path,
                              (long long)count, len);
        }
        off += 8 + (size_t)len;
        if (++count > KVL_MAX_VOCAB) {
            kvl_unmap_file(&f);
            return kvl_errorf(err, KVL_E_LIMIT, "%s: more than %d records", path, KVL_MAX_VOCAB);
        }
    }
    kvl_unmap_file(&f);
    *n = (int32_t)count;
    return KVL_OK;
}

kvl_status kvl_mkmodel_vocab_load(const char *path, int32_t n_vocab, kvl_mkmodel_vocab *out,
                                  kvl_error *err) {
    int32_t n_file = 0;
    kvl_status st = kvl_mkmodel_vocab_count(path, &n_file, err);
    if (st != KVL_OK)
        return st;
    if (n_vocab && n_file != n_vocab)
        return kvl_errorf(err, KVL_E_INVALID, "%s holds %d pieces, the model's vocab size is %d",
                          path, n_file, n_vocab);
    if (n_file < 3)
        return kvl_errorf(err, KVL_E_FORMAT, "%s holds %d pieces, fewer than 3 (unk, bos, eos)",
                          path, n_file);
    kvl_tokenizer *tk = NULL;
    st = kvl_tokenizer_load_llama2c(path, n_file, &tk, err);
    if (st != KVL_OK)
        return st;
    kvl_mkmodel_vocab v;
    st = vocab_alloc(n_file, &v, err);
    if (st != KVL_OK) {
        kvl_tokenizer_free(tk);
        return st;
    }
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};
    for (int32_t id = 0; id < n_file && st == KVL_OK; id++) {
        const char *p = NULL;
        size_t len = 0;
        float score = 0.0f;
        int32_t type = 0;
        st = kvl_tokenizer_get(tk, id, &p, &len, &score, &type);
        if (st != KVL_OK) {
            st = kvl_errorf(err, st, "%s: piece %d unreadable", path, id);
            break;
        }
        if (id < 3) { /* llama2.c writes "\n<s>\n": GGUF has "<s>" */
            while (len && (*p == '\n' || *p == ' ')) {
                p++;
                len--;
            }
            while (len && (p[len - 1] == '\n' || p[len - 1] == ' '))
                len--;
            if (!len) {
                p = special[id];
                len = strlen(p);
            }
        }
        size_t spaces = 0;
        for (size_t i = 0; i < len; i++)
            spaces += p[i] == ' ';
        char *q = malloc(len + 2 * spaces + 1);
        if (!q) {
            st = kvl_errorf(err, KVL_E_NOMEM, "mkmodel: vocabulary: out of memory");
            break;
        }
        size_t m = 0;
        for (size_t i = 0; i < len; i++) {
            if (p[i] == ' ') {
                memcpy(q + m, "\xE2\x96\x81", 3);
                m += 3;
            } else {
                q[m++] = p[i];
            }
        }
        q[m] = 0;
        v.pieces[id] = q;
        v.scores[id] = score;
        v.types[id] = id == 0                 ? KVL_TOK_UNKNOWN
                      : id < 3                ? KVL_TOK_CONTROL
                      : is_byte_piece(p, len) ? KVL_TOK_BYTE
                                              : KVL_TOK_NORMAL;
    }
    kvl_tokenizer_free(tk);
    if (st != KVL_OK) {
        kvl_mkmodel_vocab_free(&v);
        return st;
    }
    *out = v;
    return KVL_OK;
}

kvl_status kvl_mkmodel_vocab_synth(int32_t n, kvl_mkmodel_vocab *out, kvl_error *err) {
    if (n < 259 || n > KVL_MAX_VOCAB)
        return kvl_errorf(err, KVL_E_INVALID,
                          "--vocab-size %d is outside [259, %d] for a synthesized vocabulary "
                          "(3 special + 256 byte tokens)",
                          n, KVL_MAX_VOCAB);
    kvl_mkmodel_vocab v;
    kvl_status st = vocab_alloc(n, &v, err);
    if (st != KVL_OK)
        return st;
    static const char *const special[3] = {"<unk>", "<s>", "</s>"};
    int32_t id = 0;
    char buf[64];
    /* pieces after the bytes: "▁", then for L = 1, 2, ...: the 26^L strings
     * of L letters a..z in order, then the same with a "▁" in front. Every
     * piece's prefix is an earlier piece, so BPE can build each one. */
    int32_t L = 1;
    int64_t k = -1, n_of_len = 26; /* k: index within the 2*26^L pieces of length L */
    while (id < n && st == KVL_OK) {
        const char *p;
        if (id < 3) {
            p = special[id];
            v.types[id] = id == 0 ? KVL_TOK_UNKNOWN : KVL_TOK_CONTROL;
            v.scores[id] = 0.0f;
        } else if (id < 259) {
            snprintf(buf, sizeof buf, "<0x%02X>", (unsigned)(id - 3));
            p = buf;
            v.types[id] = KVL_TOK_BYTE;
            v.scores[id] = 0.0f;
        } else {
            if (id == 259) {
                p = "\xE2\x96\x81";
            } else {
                if (++k == 2 * n_of_len) {
                    L++;
                    n_of_len *= 26;
                    k = 0;
                }
                size_t m = 0;
                if (k >= n_of_len) {
                    memcpy(buf, "\xE2\x96\x81", 3);
                    m = 3;
                }
                int64_t x = k % n_of_len;
                for (int32_t j = L - 1; j >= 0; j--) {
                    buf[m + (size_t)j] = (char)('a' + x % 26);
                    x /= 26;
                }
                buf[m + (size_t)L] = 0;
                p = buf;
            }
            v.types[id] = KVL_TOK_NORMAL;
            v.scores[id] = -(float)(id - 259);
        }
        v.pieces[id] = strdup(p);
        if (!v.pieces[id])
            st = kvl_errorf(err, KVL_E_NOMEM, "mkmodel: vocabulary: out of memory");
        id++;
    }
    if (st != KVL_OK) {
        kvl_mkmodel_vocab_free(&v);
        return st;
    }
    *out = v;
    return KVL_OK;
}

/* -- the model file -- */

typedef struct mk_tensor {
    char name[64]; /* ggml's GGML_MAX_NAME, NUL included */
    uint32_t n_dims;
    int64_t ne0, ne1; /* ne1 rows of ne0 values */
    kvl_type type;
} mk_tensor;

/* The tensors in file order: token_embd, per layer (attn_norm, attn_q,
 * attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down),
 * output_norm, output (unless tied). */
static size_t mk_tensors(const kvl_mkmodel_spec *s, mk_tensor *t) {
    const kvl_hparams *hp = &s->shape.hp;
    const int64_t hd = mk_head_dim(s);
    const kvl_arch_info *ai = kvl_arch_get(hp->arch);
    const int64_t q = hp->n_heads * hd, kv = hp->n_kv_heads * hd;
    size_t n = 0;
#define ADD(nd, a, b, role, l, fmt, ...)                                                           \
    do {                                                                                           \
        if (t) {                                                                                   \
            snprintf(t[n].name, sizeof t[n].name, fmt, __VA_ARGS__);                               \
            t[n].n_dims = nd;                                                                      \
            t[n].ne0 = a;                                                                          \
            t[n].ne1 = b;                                                                          \
            t[n].type = nd == 1 ? KVL_TYPE_F32 : kvl_mkmodel_tensor_type(s, role, l, a);           \
        }                                                                                          \
        n++;                                                                                       \
    } while (0)
    const kvl_mkmodel_role other = KVL_MK_OTHER;
    ADD(2, hp->dim, hp->n_vocab, KVL_MK_TOKEN_EMBD, 0, "%s", "token_embd.weight");
    if (s->shape.rope_freqs)
        ADD(1, hd / 2, 1, other, 0, "%s", "rope_freqs.weight");
    for (int64_t l = 0; l < hp->n_layers; l++) {
        ADD(1, hp->dim, 1, other, l, "blk.%lld.attn_norm.weight", (long long)l);
        ADD(2, hp->dim, q, other, l, "blk.%lld.attn_q.weight", (long long)l);
        ADD(2, hp->dim, kv, other, l, "blk.%lld.attn_k.weight", (long long)l);
        ADD(2, hp->dim, kv, KVL_MK_ATTN_V, l, "blk.%lld.attn_v.weight", (long long)l);
        if (ai->qkv_bias) {
            ADD(1, q, 1, other, l, "blk.%lld.attn_q.bias", (long long)l);
            ADD(1, kv, 1, other, l, "blk.%lld.attn_k.bias", (long long)l);
            ADD(1, kv, 1, other, l, "blk.%lld.attn_v.bias", (long long)l);
        }
        if (ai->qk_norm) {
            ADD(1, hd, 1, other, l, "blk.%lld.attn_q_norm.weight", (long long)l);
            ADD(1, hd, 1, other, l, "blk.%lld.attn_k_norm.weight", (long long)l);
        }
        ADD(2, q, hp->dim, other, l, "blk.%lld.attn_output.weight", (long long)l);
        ADD(1, hp->dim, 1, other, l, "blk.%lld.ffn_norm.weight", (long long)l);
        ADD(2, hp->dim, hp->ffn_dim, other, l, "blk.%lld.ffn_gate.weight", (long long)l);
        ADD(2, hp->dim, hp->ffn_dim, other, l, "blk.%lld.ffn_up.weight", (long long)l);
        ADD(2, hp->ffn_dim, hp->dim, KVL_MK_FFN_DOWN, l, "blk.%lld.ffn_down.weight", (long long)l);
    }
    ADD(1, s->shape.hp.dim, 1, other, 0, "%s", "output_norm.weight");
    if (!s->shape.tied_embd)
        ADD(2, s->shape.hp.dim, s->shape.hp.n_vocab, KVL_MK_OUTPUT, 0, "%s", "output.weight");
#undef ADD
    return n;
}

static kvl_status mk_metadata(kvl_gguf_writer *w, const kvl_mkmodel_spec *s,
                              const kvl_mkmodel_vocab *v, kvl_error *err) {
    const kvl_hparams *hp = &s->shape.hp;
    const int64_t hd = mk_head_dim(s);
    const char *arch = kvl_arch_get(hp->arch)->name;
    char key[96];
#define K(suffix) (snprintf(key, sizeof key, "%s." suffix, arch), key)
    char desc[160];
    snprintf(desc, sizeof desc, "random weights (kvllm mkmodel, seed %llu); not a trained model",
             (unsigned long long)s->seed);
    kvl_gguf_writer_add_str(w, "general.architecture", arch, NULL);
    kvl_gguf_writer_add_str(w, "general.name", s->shape.name[0] ? s->shape.name : "random-model",
                            NULL);
    kvl_gguf_writer_add_str(w, "general.description", desc, NULL);
    kvl_gguf_writer_add_u32(w, "general.file_type", kvl_mkmodel_file_type(s->type), NULL);
    kvl_gguf_writer_add_u64(w, "kvllm.mkmodel.seed", s->seed, NULL);
    kvl_gguf_writer_add_u32(w, K("context_length"), (uint32_t)hp->ctx_len, NULL);
    kvl_gguf_writer_add_u32(w, K("embedding_length"), (uint32_t)hp->dim, NULL);
    kvl_gguf_writer_add_u32(w, K("block_count"), (uint32_t)hp->n_layers, NULL);
    kvl_gguf_writer_add_u32(w, K("feed_forward_length"), (uint32_t)hp->ffn_dim, NULL);
    kvl_gguf_writer_add_u32(w, K("attention.head_count"), (uint32_t)hp->n_heads, NULL);
    kvl_gguf_writer_add_u32(w, K("attention.head_count_kv"), (uint32_t)hp->n_kv_heads, NULL);
    kvl_gguf_writer_add_u32(w, K("rope.dimension_count"), (uint32_t)hd, NULL);
    kvl_gguf_writer_add_f32(w, K("rope.freq_base"), hp->rope_base, NULL);
    kvl_gguf_writer_add_f32(w, K("attention.layer_norm_rms_epsilon"), hp->rms_eps, NULL);
    kvl_gguf_writer_add_u32(w, K("vocab_size"), (uint32_t)hp->n_vocab, NULL);
    if (hd * hp->n_heads != hp->dim) {
        kvl_gguf_writer_add_u32(w, K("attention.key_length"), (uint32_t)hd, NULL);
        kvl_gguf_writer_add_u32(w, K("attention.value_length"), (uint32_t)hd, NULL);
    }
#undef K
    if (v->src) /* another GGUF's tokenizer, copied (mkmodel_vocab.c) */
        return kvl_mkmodel_vocab_write_keys(w, v, err);
    kvl_gguf_writer_add_str(w, "tokenizer.ggml.model", "llama", NULL);
    kvl_gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)v->pieces, NULL,
                                (uint64_t)v->n, NULL);
    kvl_gguf_writer_add_arr(w, "tokenizer.ggml.scores", KVL_GGUF_FLOAT32, v->scores, (uint64_t)v->n,
                            NULL);
    kvl_gguf_writer_add_arr(w, "tokenizer.ggml.token_type", KVL_GGUF_INT32, v->types,
                            (uint64_t)v->n, NULL);
    kvl_gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0, NULL);
    kvl_gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1, NULL);
    kvl_gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2, NULL);
    kvl_gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true, NULL);
    return kvl_gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", false, err);
}

kvl_status kvl_mkmodel_write(const kvl_mkmodel_spec *s, const kvl_mkmodel_vocab *v,
                             const char *path, kvl_mkmodel_progress_fn progress, void *ud,
                             kvl_mkmodel_stats *stats, kvl_error *err) {
    kvl_status st = kvl_mkmodel_check(s, err);
    if (st != KVL_OK)
        return st;
    if (!v || v->n != s->shape.hp.n_vocab)
        return kvl_errorf(err, KVL_E_INVALID,
                          "the vocabulary has %d pieces but --vocab-size is %lld", v ? v->n : 0,
                          (long long)s->shape.hp.n_vocab);
    size_t nt = mk_tensors(s, NULL);
    mk_tensor *t = calloc(nt, sizeof *t);
    if (!t)
        return kvl_errorf(err, KVL_E_NOMEM, "mkmodel: out of memory");
    mk_tensors(s, t);

    kvl_gguf_writer *w = NULL;
    float *row = NULL;
    void *qrow = NULL;
    st = kvl_gguf_writer_init(&w, err);
    if (st != KVL_OK)
        goto done;
    if (s->alignment)
        kvl_gguf_writer_set_alignment(w, s->alignment, NULL);
    mk_metadata(w, s, v, NULL);
    int64_t max_cols = 0;
    uint64_t n_params = 0;
    for (size_t i = 0; i < nt; i++) {
        int64_t ne[2] = {t[i].ne0, t[i].ne1};
        kvl_gguf_writer_add_tensor(w, t[i].name, t[i].n_dims, ne, t[i].type, NULL);
        if (t[i].ne0 > max_cols)
            max_cols = t[i].ne0;
        n_params += (uint64_t)t[i].ne0 * (uint64_t)t[i].ne1;
    }
    /* a sticky error from any add above surfaces here */
    st = kvl_gguf_writer_begin(w, path, err);
    if (st != KVL_OK)
        goto done;
    row = malloc((size_t)max_cols * sizeof *row);
    qrow = malloc((size_t)max_cols * sizeof(float));
    if (!row || !qrow) {
        st = kvl_errorf(err, KVL_E_NOMEM, "mkmodel: out of memory");
        goto done;
    }
    /* progress counts file bytes: the header is written, the data follows */
    const uint64_t total = kvl_gguf_writer_file_size(w);
    const uint64_t header = total - kvl_gguf_writer_data_size(w);
    for (size_t i = 0; i < nt && st == KVL_OK; i++) {
        size_t rb = kvl_row_bytes(t[i].type, t[i].ne0);
        KVL_ASSERT(rb > 0 && rb <= (size_t)max_cols * sizeof(float));
        for (int64_t r = 0; r < t[i].ne1; r++) {
            kvl_mkmodel_row(s, t[i].name, r, row, t[i].ne0);
            kvl_quantize_row(t[i].type, row, qrow, t[i].ne0);
            st = kvl_gguf_writer_write(w, qrow, rb, err);
            if (st != KVL_OK)
                break;
            if (progress)
                progress(ud, header + kvl_gguf_writer_bytes_written(w), total);
        }
    }
    if (st == KVL_OK)
        st = kvl_gguf_writer_finish(w, err);
    if (st == KVL_OK && stats) {
        stats->file_bytes = total;
        stats->n_params = n_params;
        stats->n_tensors = nt;
    }
done:
    free(row);
    free(qrow);
    free(t);
    kvl_gguf_writer_free(w);
    return st;
}
