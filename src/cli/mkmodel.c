/*
 * kvllm mkmodel: write a llama-architecture GGUF with random weights (from a
 * deterministic seed) in a real model's shape, with a valid tokenizer, for
 * tests and benchmarks beyond the tiny trained model.
 *
 * Invariants: every flag value is checked (range, divisibility, vocabulary
 * size) before anything is written; the same flags and vocabulary give the
 * same bytes; the output path holds either the complete file or what it
 * held before.
 *
 * Must not: guess at a bad flag (exit 2 with the flag, value and limit);
 * print progress unless stderr is a terminal; put anything but the summary
 * line on stdout.
 */
#include "cli/cli.h"

#include "core/core.h"
#include "model/mkmodel.h"
#include "plan/catalog.h"
#include "plan/planner.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void usage(FILE *f) {
    char names[512];
    fprintf(f,
            "usage: kvllm mkmodel -o FILE [flags]\n"
            "\n"
            "Write a llama GGUF with random weights in a real architecture's shape.\n"
            "Weights: std %.2f (bell-shaped, from splitmix64), norms 1.0; same seed, same file.\n"
            "\n"
            "  -o, --output FILE   the GGUF to write (required)\n"
            "  --preset NAME       a catalogue shape, case-insensitive (default stories260K):\n"
            "                      %s\n"
            "  --type T            f32, f16, bf16, q8_0, q4_0, q5_0, q5_1, q2_k, q3_k, q4_k,\n"
            "                      q5_k, q6_k (default f16),\n"
            "                      or q4_k_m / q5_k_m (llama.cpp's mixes: q6_k for output and\n"
            "                      for attn_v and ffn_down of some layers, q4_k / q5_k for the\n"
            "                      rest); 2-D weights whose row length is not a multiple of\n"
            "                      the type's block (32; 256 for the k types) stay f16; norms\n"
            "                      are f32\n"
            "  --seed N            RNG seed, 0..2^63-1 (default 0)\n"
            "  --layers N          override the preset's layer count\n"
            "  --dim N             embedding size\n"
            "  --heads N           query heads (must divide --dim; head dim must be even)\n"
            "  --kv-heads N        KV heads (must divide --heads)\n"
            "  --ffn N             feed-forward size\n"
            "  --vocab-size N      vocabulary size\n"
            "  --ctx N             context length\n"
            "  --rope-base X       RoPE frequency base\n"
            "  --eps X             RMSNorm epsilon\n"
            "  --name S            general.name (default: the preset's name)\n"
            "  --tied              no output.weight (the output shares token_embd)\n"
            "  --alignment N       data alignment, a power of two (default 32)\n"
            "  --vocab FILE        a llama2.c tokenizer file (e.g. tok512.bin, tokenizer.bin),\n"
            "                      or a GGUF whose tokenizer.* keys are copied (a model or a\n"
            "                      vocabulary-only file: byte-level BPE or SentencePiece);\n"
            "                      its size must equal the vocab size\n"
            "  --synth-vocab       synthesize the vocabulary even if a shipped one fits\n"
            "  -h, --help          this text\n"
            "\n"
            "Without --vocab, vocab 512 uses shared/models/tok512.bin and 32000\n"
            "shared/models/tokenizer.bin when found ($KVL_SHARED, ../shared, or next to\n"
            "the program); other sizes get <unk> <s> </s>, 256 byte tokens, then letters.\n"
            "\n"
            "examples:\n"
            "  kvllm mkmodel -o tiny.gguf --preset stories260K --type q8_0\n"
            "  kvllm mkmodel -o tl.gguf --preset tinyllama-1.1b --layers 2 --type q4_0\n"
            "  kvllm mkmodel -o l3.gguf --preset llama-3-8b --layers 4 --seed 7\n",
            KVL_MKMODEL_STD, kvl_catalog_mkmodel_names(names, sizeof names));
}

#define TYPE_NAMES KVL_PLAN_WEIGHT_NAMES

static const char *type_name(kvl_type t, bool mix) {
    static char buf[16];
    snprintf(buf, sizeof buf, "%s%s", kvl_type_name(t), mix ? "_m" : "");
    return buf;
}

/* Look for shared/models/<file>; true and the path in buf when found. */
static bool find_shared(const char *file, char *buf, size_t cap) {
    char dirs[4][4096];
    int n = 0;
    const char *env = getenv("KVL_SHARED");
    if (env && *env)
        snprintf(dirs[n++], sizeof dirs[0], "%s", env);
    snprintf(dirs[n++], sizeof dirs[0], "../shared");
    char exe[4096];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(dirs[n++], sizeof dirs[0], "%.4000s/../shared", exe);
            snprintf(dirs[n++], sizeof dirs[0], "%.4000s/../../shared", exe);
        }
    }
    for (int i = 0; i < n; i++) {
        snprintf(buf, cap, "%.4000s/models/%s", dirs[i], file);
        if (access(buf, R_OK) == 0)
            return true;
    }
    return false;
}

static void on_progress(void *ud, uint64_t done, uint64_t total) {
    kvl_progress_update(ud, done, total);
}

/* The vocabulary: --vocab FILE, else the shipped tokenizer whose size fits
 * (found is the buffer its path goes in), else synthesized. Returns 0, or
 * the exit status after printing why. */
static int load_vocab(const kvl_mkmodel_spec *s, const char *vocab_path, bool synth,
                      kvl_mkmodel_vocab *voc, char *found, size_t cap, const char **desc) {
    kvl_error err;
    int64_t n_vocab = s->shape.hp.n_vocab;
    if (!vocab_path && !synth) {
        if (n_vocab == 512 && find_shared("tok512.bin", found, cap))
            vocab_path = found;
        else if (n_vocab == 32000 && find_shared("tokenizer.bin", found, cap))
            vocab_path = found;
    }
    if (!vocab_path) {
        if (kvl_mkmodel_vocab_synth((int32_t)n_vocab, voc, &err) != KVL_OK) {
            fprintf(stderr, "kvllm mkmodel: %s\n", err.msg);
            return err.status == KVL_E_INVALID ? 2 : 1;
        }
        return 0;
    }
    int32_t n_file = 0;
    char magic[4] = {0};
    FILE *f = fopen(vocab_path, "rb");
    bool gguf = f && fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
    if (f)
        fclose(f);
    if (gguf) { /* another GGUF's tokenizer, copied as it is */
        if (kvl_mkmodel_vocab_from_gguf(vocab_path, voc, &err) != KVL_OK) {
            fprintf(stderr, "kvllm mkmodel: --vocab: %s\n", err.msg);
            return 2;
        }
        n_file = voc->n;
        if (n_file != n_vocab)
            kvl_mkmodel_vocab_free(voc);
    } else if (kvl_mkmodel_vocab_count(vocab_path, &n_file, &err) != KVL_OK) {
        fprintf(stderr, "kvllm mkmodel: --vocab: %s\n", err.msg);
        return 2;
    }
    if (n_file != n_vocab) {
        fprintf(stderr,
                "kvllm mkmodel: --vocab: '%s' holds %d pieces but the vocab size is %lld "
                "(set --vocab-size %d to use it)\n",
                vocab_path, n_file, (long long)n_vocab, n_file);
        return 2;
    }
    if (!gguf && kvl_mkmodel_vocab_load(vocab_path, (int32_t)n_vocab, voc, &err) != KVL_OK) {
        fprintf(stderr, "kvllm mkmodel: --vocab: %s\n", err.msg);
        return 2;
    }
    *desc = vocab_path;
    return 0;
}

int kvl_cli_mkmodel(int argc, char **argv) {
    const char *cmd = "mkmodel";
    const char *out = NULL, *preset = "stories260K", *vocab_path = NULL, *name = NULL;
    bool synth = false, tied = false;
    kvl_type type = KVL_TYPE_F16;
    bool mix = false;
    long long seed = 0, layers = -1, dim = -1, heads = -1, kv_heads = -1, ffn = -1, vocab_size = -1,
              ctx = -1, alignment = 0;
    double rope_base = -1, eps = -1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--tied")) {
            tied = true;
        } else if (!strcmp(a, "--synth-vocab")) {
            synth = true;
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            if (!kvl_cli_value(cmd, argc, argv, &i, &out))
                return 2;
        } else if (!strcmp(a, "--preset")) {
            if (!kvl_cli_value(cmd, argc, argv, &i, &preset))
                return 2;
        } else if (!strcmp(a, "--vocab")) {
            if (!kvl_cli_value(cmd, argc, argv, &i, &vocab_path))
                return 2;
        } else if (!strcmp(a, "--name")) {
            if (!kvl_cli_value(cmd, argc, argv, &i, &name))
                return 2;
        } else if (!strcmp(a, "--type")) {
            if (!kvl_cli_value(cmd, argc, argv, &i, &v))
                return 2;
            if (!kvl_plan_parse_weights(v, &type, &mix)) {
                fprintf(stderr, "kvllm mkmodel: --type: '%s' is not one of " TYPE_NAMES "\n", v);
                return 2;
            }
        } else if (!strcmp(a, "--seed")) {
            if (!kvl_cli_value(cmd, argc, argv, &i, &v) ||
                !kvl_cli_int(cmd, a, v, 0, INT64_MAX, &seed))
                return 2;
        } else if (!strcmp(a, "--rope-base")) {
            if (!kvl_cli_value(cmd, argc, argv, &i, &v) ||
                !kvl_cli_float(cmd, a, v, 1e-3, 1e12, &rope_base))
                return 2;
        } else if (!strcmp(a, "--eps")) {
            if (!kvl_cli_value(cmd, argc, argv, &i, &v) ||
                !kvl_cli_float(cmd, a, v, 1e-12, 0.1, &eps))
                return 2;
        } else {
            static const struct {
                const char *flag;
                long long lo, hi;
            } ints[] = {
                {"--layers", 1, KVL_MAX_LAYERS},
                {"--dim", 1, KVL_MAX_DIM},
                {"--heads", 1, KVL_MAX_HEADS},
                {"--kv-heads", 1, KVL_MAX_HEADS},
                {"--ffn", 1, 4 * (long long)KVL_MAX_DIM},
                {"--vocab-size", 3, KVL_MAX_VOCAB},
                {"--ctx", 1, KVL_MAX_CTX},
                {"--alignment", 1, KVL_GGUF_MAX_ALIGNMENT},
            };
            long long *dst[] = {&layers, &dim,        &heads, &kv_heads,
                                &ffn,    &vocab_size, &ctx,   &alignment};
            size_t k = 0;
            while (k < sizeof ints / sizeof ints[0] && strcmp(a, ints[k].flag))
                k++;
            if (k == sizeof ints / sizeof ints[0]) {
                kvl_cli_unknown(cmd, a, "the output goes after -o");
                return 2;
            }
            if (!kvl_cli_value(cmd, argc, argv, &i, &v) ||
                !kvl_cli_int(cmd, a, v, ints[k].lo, ints[k].hi, dst[k]))
                return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "kvllm mkmodel: -o FILE is required (see kvllm mkmodel --help)\n");
        return 2;
    }
    if (synth && vocab_path) {
        fprintf(stderr, "kvllm mkmodel: --vocab and --synth-vocab exclude each other\n");
        return 2;
    }

    kvl_mkmodel_spec s;
    kvl_error err;
    if (kvl_catalog_mkmodel_spec(preset, &s, &err) != KVL_OK) {
        fprintf(stderr, "kvllm mkmodel: --preset: %s\n", err.msg);
        return 2;
    }
    if (layers > 0)
        s.shape.hp.n_layers = layers;
    if (dim > 0)
        s.shape.hp.dim = dim;
    if (heads > 0)
        s.shape.hp.n_heads = heads;
    if (kv_heads > 0)
        s.shape.hp.n_kv_heads = kv_heads;
    if (ffn > 0)
        s.shape.hp.ffn_dim = ffn;
    if (vocab_size > 0)
        s.shape.hp.n_vocab = vocab_size;
    if (ctx > 0)
        s.shape.hp.ctx_len = ctx;
    if (rope_base > 0)
        s.shape.hp.rope_base = (float)rope_base;
    if (eps > 0)
        s.shape.hp.rms_eps = (float)eps;
    if (alignment > 0)
        s.alignment = (size_t)alignment;
    s.type = type;
    s.k_m = mix;
    s.seed = (uint64_t)seed;
    s.shape.tied_embd = tied;
    if (name) {
        if (strlen(name) >= sizeof s.shape.name) {
            fprintf(stderr, "kvllm mkmodel: --name: %zu bytes is longer than %zu\n", strlen(name),
                    sizeof s.shape.name - 1);
            return 2;
        }
        snprintf(s.shape.name, sizeof s.shape.name, "%s", name);
    }
    if (kvl_mkmodel_check(&s, &err) != KVL_OK) {
        fprintf(stderr, "kvllm mkmodel: %s\n", err.msg);
        return 2;
    }

    kvl_mkmodel_vocab voc;
    char found[4096];
    const char *vocab_desc = "synthesized";
    int rc = load_vocab(&s, vocab_path, synth, &voc, found, sizeof found, &vocab_desc);
    if (rc)
        return rc;

    kvl_progress pr; /* quiet unless stderr is a terminal */
    kvl_progress_begin(&pr, "kvllm mkmodel");
    kvl_mkmodel_stats stats;
    double t0 = kvl_now();
    kvl_status st = kvl_mkmodel_write(&s, &voc, out, on_progress, &pr, &stats, &err);
    kvl_progress_end(&pr);
    kvl_mkmodel_vocab_free(&voc);
    if (st != KVL_OK) {
        fprintf(stderr, "kvllm mkmodel: %s\n", err.msg);
        return st == KVL_E_INVALID ? 2 : 1;
    }
    printf("kvllm mkmodel: wrote %s: %llu bytes (%.1f MiB), %llu params, %llu tensors, "
           "%s, dim %lld, layers %lld, heads %lld/%lld, ffn %lld, vocab %lld (%s), ctx %lld, "
           "seed %llu, %.1f s\n",
           out, (unsigned long long)stats.file_bytes, (double)stats.file_bytes / 1048576.0,
           (unsigned long long)stats.n_params, (unsigned long long)stats.n_tensors,
           type_name(s.type, s.k_m), (long long)s.shape.hp.dim, (long long)s.shape.hp.n_layers,
           (long long)s.shape.hp.n_heads, (long long)s.shape.hp.n_kv_heads,
           (long long)s.shape.hp.ffn_dim, (long long)s.shape.hp.n_vocab, vocab_desc,
           (long long)s.shape.hp.ctx_len, (unsigned long long)s.seed, kvl_now() - t0);
    return 0;
}
