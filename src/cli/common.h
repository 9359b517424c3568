/* Shared pieces of the model-running subcommands (run, ppl). */
#ifndef KVL_CLI_COMMON_H
#define KVL_CLI_COMMON_H

#include "model/model.h"

/* Path of the shipped default model (stories260K.gguf), looked up in
 * $KVL_SHARED/models, ../shared/models, and beside the executable's
 * checkout; NULL when none exists. Static buffer. */
const char *kvl_cli_default_model(void);

#endif

#include "core/pool.h"
#include "engine/sampler.h"
#include "kv/kv_cache.h"

/* KV cache flags shared by run, ppl and bench:
 *   --kv-layout paged|contiguous   --kv-mem BYTES|N%   --block-size N
 *   --kv-type F (both)  --kv-type-k F  --kv-type-v F
 *   --prefix-tier off|host|file (used by the engine commands: run, serve,
 *   bench serve) */
typedef struct kvl_cli_kv_opts {
    kvl_kv_cache_params p;
    double mem_fraction;              /* > 0 when --kv-mem was a percentage of available memory */
    bool check;                       /* --kv-check */
    bool k_set, v_set;                /* a format was given; otherwise "auto" */
    kvl_kv_policy policy;             /* --kv-policy, --kv-budget-tokens, --kv-sinks */
    bool sinks_set;                   /* --kv-sinks given; else sinks follows the policy:
                                         4 for sinks, 0 for h2o and snapkv (docs/eviction.md) */
    bool policy_ok;                   /* the subcommand runs policies (set before parsing); else
                             the policy flags are refused */
    kvl_prefix_tier_mode prefix_tier; /* --prefix-tier (the engine commands) */
    bool tier_ok;                     /* the subcommand gives prefix_tier to its engine (set before
                     parsing); else --prefix-tier is refused */
} kvl_cli_kv_opts;

void kvl_cli_kv_defaults(kvl_cli_kv_opts *o);

/* --load auto|mmap|huge (how the model file is brought into memory). 1: argv[*i]
 * was --load and was consumed with its value; 0: not --load; -1: a bad value
 * (message printed). */
int kvl_cli_load_flag(const char *cmd, int argc, char **argv, int *i, kvl_load_mode *out);
#define KVL_CLI_LOAD_USAGE                                                                         \
    "      --load MODE       how the model file is brought into memory: auto (default:\n"          \
    "                        huge for files of 64 MiB and more when the kernel allows),\n"         \
    "                        huge (copy into 2 MiB transparent huge pages: fewer TLB\n"            \
    "                        misses while decode streams the weights), mmap (map the\n"            \
    "                        file: 4 KiB pages shared with the page cache, read lazily)\n"

#define KVL_CLI_CHECK_USAGE                                                                        \
    "      --check-tensors   scan every weight for NaN and Inf after loading and refuse\n"         \
    "                        the model naming the tensor (reads all the weights)\n"

/* The flags run, ppl and bench share: -m/--model, --tokenizer, -t/--threads,
 * --load and the KV flags. */
typedef struct kvl_cli_common {
    const char *model, *tokenizer; /* NULL: the shipped model / beside the model */
    long long threads;             /* 0: one per core */
    kvl_load_mode load;
    bool check_tensors; /* --check-tensors */
    kvl_cli_kv_opts kvo;
} kvl_cli_common;

void kvl_cli_common_defaults(kvl_cli_common *c);
/* 1: argv[*i] was one of the shared flags and was consumed (with its
 * value); 0: not one of them; -1: a bad value (message printed). */
int kvl_cli_common_flag(const char *cmd, int argc, char **argv, int *i, kvl_cli_common *c);
/* The engine's worker threads and KV cache fields from the shared flags
 * (-t, --kv-layout, --kv-type*, --kv-mem, --block-size). This function
 * can't fail. */
void kvl_cli_engine_kv(const kvl_cli_common *c, kvl_engine_params *ep);
/* The same from the KV flags and a thread count held apart (bench serve). */
void kvl_cli_engine_kv_opts(const kvl_cli_kv_opts *kvo, long long threads, kvl_engine_params *ep);
/* The model the flags name (or the shipped one): NULL with a message when
 * none is given and the shipped one is missing. */
const char *kvl_cli_model_path(const char *cmd, const kvl_cli_common *c);
/* The whole of a text file ("-": stdin), at most 64 MiB, NUL-terminated
 * and malloc'd, its length in *len (may be NULL); NULL with a message
 * "kvllm <cmd>: -f: ..." when it cannot be read. */
char *kvl_cli_read_text(const char *cmd, const char *path, size_t *len);

/* The sampling flags run and chat share (value in v): --temp, --top-k,
 * --top-p, --min-p, --repeat-penalty, --repeat-last-n, -s/--seed. 1: a with
 * v was one of them and is stored in *sp; 0: not one of them; -1: a bad
 * value (message printed). */
int kvl_cli_sampler_flag(const char *cmd, const char *a, const char *v, kvl_sampler_params *sp);
#define KVL_CLI_SAMPLER_FLAGS                                                                      \
    "--temp", "--top-k", "--top-p", "--min-p", "--repeat-penalty", "--repeat-last-n",              \
        "--presence-penalty", "--frequency-penalty", "-s", "--seed"
#define KVL_CLI_SAMPLER_USAGE                                                                      \
    "      --temp T          temperature, 0 = greedy (default 0.8)\n"                              \
    "      --top-k K         0 = off (default 40)\n"                                               \
    "      --top-p P         (0, 1], 1 = off (default 0.95)\n"                                     \
    "      --min-p P         [0, 1], 0 = off (default 0.05)\n"                                     \
    "      --repeat-penalty R  (0, 10], 1 = off (default 1.0)\n"                                   \
    "      --repeat-last-n N   tokens the penalty looks back over (default 64)\n"                  \
    "      --presence-penalty X   [-2, 2], subtracted from every generated token (default 0)\n"    \
    "      --frequency-penalty X  [-2, 2], subtracted per time generated (default 0)\n"            \
    "  -s, --seed N          sampling seed (default fixed)\n"

/* --chat-template NAME (one of kvl_chat_template_name's). 1: consumed, the
 * name in *out; 0: not that flag; -1: a bad name (message printed). */
int kvl_cli_chat_template_flag(const char *cmd, int argc, char **argv, int *i, const char **out);
#define KVL_CLI_CHAT_TEMPLATE_USAGE                                                                \
    "      --chat-template NAME  llama2, llama3, chatml, mistral, zephyr, phi3, gemma or\n"        \
    "                        plain (default: the one the model file's tokenizer.chat_template\n"   \
    "                        is; docs/chat.md)\n"

/* 1: argv[*i] was a KV flag and was consumed (with its value); 0: not a KV
 * flag; -1: a bad value (message printed). */
int kvl_cli_kv_flag(const char *cmd, int argc, char **argv, int *i, kvl_cli_kv_opts *o);
/* Help text for those flags (and the policy flags when o->policy_ok). */
void kvl_cli_kv_usage(FILE *f);
void kvl_cli_kv_policy_usage(FILE *f);
/* --kv-check: measure the chosen formats against f32/f16 KV on the loaded
 * model and print the verdict (a warning names the setting to change).
 * Returns false only when the check itself could not run. */
bool kvl_cli_kv_check(const char *cmd, const kvl_cli_kv_opts *o, const kvl_model *m,
                      kvl_pool *pool);
/* Turn the options into cache params for this model, max_seqs and max_ctx.
 * The budget: --kv-mem, or a fraction of MemAvailable, or by default what
 * the request needs: max_seqs sequences of need_ctx positions (paged; 0 or
 * more than max_ctx means max_ctx), cut to KVL_CLI_KV_MEM_CAP of
 * MemAvailable; the contiguous layout always needs max_seqs full regions
 * of max_ctx and is refused when they pass that cap. With note, the default
 * budget is reported there in one line. Formats not given are "auto": f32
 * for a model whose weights are f32 (the exact reference) and for the
 * contiguous layout, f16 otherwise (as llama.cpp and vLLM default to the
 * model's 16-bit type). false with a message on failure. */
#define KVL_CLI_KV_MEM_CAP 0.8
bool kvl_cli_kv_params(const char *cmd, const kvl_cli_kv_opts *o, const kvl_model *m,
                       int32_t max_seqs, int32_t max_ctx, int32_t need_ctx, FILE *note,
                       kvl_kv_cache_params *out);
