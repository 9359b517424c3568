/*
 * kvllm: an LLM inference and serving engine in C whose centre is the KV
 * cache. This is the one public header, written as the user's manual.
 *
 * A complete program (tests/test_api_example.c builds this very text
 * against the installed library and runs it):
 *
 * <example>
 *     #include <kvllm.h>
 *     #include <stdio.h>
 *
 *     int main(int argc, char **argv) {
 *         kvl_error err;
 *         kvl_model *m = NULL;
 *         kvl_engine *e = NULL;
 *         if (kvl_model_load(argc > 1 ? argv[1] : "stories260K.gguf", NULL, &m, &err)) {
 *             fprintf(stderr, "%s\n", err.msg);
 *             return 1;
 *         }
 *         kvl_engine_params ep = kvl_engine_defaults();
 *         ep.kv_mem = 16u << 20;              // 16 MiB of KV blocks
 *         if (kvl_engine_init(m, &ep, &e, &err)) {
 *             fprintf(stderr, "%s\n", err.msg);
 *             kvl_model_free(m);
 *             return 1;
 *         }
 *         const char *prompts[2] = {"Once upon a time", "Tom and his dog"};
 *         for (int i = 0; i < 2; i++) {
 *             kvl_request_params rp = kvl_request_defaults();
 *             rp.prompt = prompts[i];
 *             rp.max_tokens = 32;
 *             rp.temperature = 0;             // greedy
 *             uint64_t id;
 *             if (kvl_engine_submit(e, &rp, &id, &err))
 *                 fprintf(stderr, "refused: %s\n", err.msg);
 *         }
 *         int open = 2;
 *         while (open > 0) {
 *             kvl_engine_step(e, NULL, &err);  // or kvl_engine_start(e) for a thread
 *             kvl_event ev[16];
 *             int n = kvl_engine_poll(e, ev, 16, 0);
 *             for (int i = 0; i < n; i++) {
 *                 if (ev[i].type == KVL_EV_TOKEN)
 *                     printf("[%llu] %.*s\n", (unsigned long long)ev[i].id,
 *                            (int)ev[i].text_len, ev[i].text);
 *                 else if (ev[i].type == KVL_EV_FINAL) {
 *                     printf("[%llu] done: %s, %lld tokens\n", (unsigned long long)ev[i].id,
 *                            kvl_finish_reason_str(ev[i].reason),
 *                            (long long)ev[i].usage.completion_tokens);
 *                     open--;
 *                 }
 *             }
 *         }
 *         kvl_engine_free(e);
 *         kvl_model_free(m);
 *         return 0;
 *     }
 * </example>
 *
 * Conventions
 *   - Fallible functions return kvl_status and, when given a kvl_error,
 *     fill it with a message that names the field, the value and the limit.
 *   - A failed call leaves every structure exactly as it was.
 *   - Pairs are _init/_free (or _load/_free); _free(NULL) does nothing.
 *   - Params structs come from a _defaults() function; set only the fields
 *     you need, so that fields added later keep their defaults.
 *   - Enums are append-only: a value's number never changes.
 *   - Sizes are size_t, token ids int32_t, block ids uint32_t.
 */
#ifndef KVLLM_H
#define KVLLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVL_VERSION "0.2.0"

#if defined(_WIN32)
#define KVL_API __declspec(dllexport)
#elif defined(__GNUC__)
#define KVL_API __attribute__((visibility("default")))
#else
#define KVL_API
#endif

typedef enum kvl_status {
    KVL_OK = 0,
    KVL_E_NOMEM = 1,       /* the heap could not satisfy a request */
    KVL_E_INVALID = 2,     /* a caller's argument is out of range */
    KVL_E_FORMAT = 3,      /* a file's contents break its format */
    KVL_E_IO = 4,          /* open/read/write/mmap failed */
    KVL_E_LIMIT = 5,       /* a value exceeds a documented limit */
    KVL_E_NO_KV = 6,       /* not enough free KV blocks (recoverable) */
    KVL_E_CANCELLED = 7,   /* the operation was cancelled */
    KVL_E_UNSUPPORTED = 8, /* well-formed but not supported (type, arch) */
    KVL_E_BUSY = 9,        /* a bounded queue is full: retry later (HTTP 429) */
    KVL_E_NOT_FOUND = 10,  /* no such request (unknown or already finished) */
} kvl_status;

/* Error details. msg is always NUL-terminated. */
typedef struct kvl_error {
    kvl_status status;
    char msg[512];
} kvl_error;

/* A short, static name for a status: "ok", "out of memory", ... */
KVL_API const char *kvl_status_str(kvl_status s);

/* ---- Models and tokenizers ----------------------------------------------
 *
 * A model is loaded once, read-only, and may be shared by any number of
 * engines and threads. GGUF (v2/v3) and llama2.c checkpoints are told apart
 * by their magic; every header field is validated before use.
 */
typedef struct kvl_model kvl_model;

/* How a model file is brought into memory. */
typedef enum kvl_load_mode {
    KVL_LOAD_AUTO = 0, /* 2 MiB huge pages for files of 64 MiB and more when
                          the kernel allows, else a file mapping */
    KVL_LOAD_MMAP = 1, /* map the file (4 KiB pages, shared, read lazily) */
    KVL_LOAD_HUGE = 2, /* copy into private 2 MiB pages, then read-only */
} kvl_load_mode;

/* Load options; NULL means all defaults (zero-initialised is the default). */
typedef struct kvl_model_params {
    const char *tokenizer_path; /* llama2.c: the tokenizer file (default: tok<vocab>.bin
                                   or tokenizer.bin beside the checkpoint) */
    kvl_load_mode load;
    bool check_tensors; /* scan every weight row for NaN and Inf after loading and
                           refuse the model naming the tensor, row and column
                           (llama.cpp's --check-tensors; reads all the weights) */
} kvl_model_params;

KVL_API kvl_status kvl_model_load(const char *path, const kvl_model_params *p, kvl_model **out,
                                  kvl_error *err);
KVL_API void kvl_model_free(kvl_model *m);

/* Facts about a loaded model. */
typedef struct kvl_model_info {
    char name[64];
    const char *container;   /* "gguf" or "llama2.c" */
    const char *weight_type; /* of the attention weights: "f32", "q8_0", ... */
    int64_t n_vocab, dim, n_layers, n_heads, n_kv_heads, head_dim, ffn_dim;
    int64_t ctx_len; /* the model's context length */
    size_t weight_bytes;
    int32_t bos, eos; /* token ids */
} kvl_model_info;

/* This function can't fail. */
KVL_API void kvl_model_get_info(const kvl_model *m, kvl_model_info *out);

/* Text to token ids (with BOS first when add_bos). At most cap ids are
 * written; *n_out is the count. KVL_E_LIMIT when cap is too small (the
 * message has the count needed, which is never more than len + 2). */
KVL_API kvl_status kvl_tokenize(const kvl_model *m, const char *text, size_t len, bool add_bos,
                                int32_t *out, size_t cap, size_t *n_out, kvl_error *err);
/* Token ids to text, as the engine streams them (the leading space of the
 * first word after BOS is dropped). Writes at most cap bytes and a NUL when
 * room is left; *len_out is the full length (buf may be NULL with cap 0 to
 * ask only the length). KVL_E_INVALID on an id out of range; KVL_E_LIMIT
 * when cap is too small. */
KVL_API kvl_status kvl_detokenize(const kvl_model *m, const int32_t *ids, size_t n, char *buf,
                                  size_t cap, size_t *len_out, kvl_error *err);

/* ---- KV cache accounting -------------------------------------------------
 *
 * A KV cache holds the keys and values of every sequence. With the paged
 * layout (the default) its memory is one budget divided into blocks of
 * block_size token positions; sequences take blocks as they grow and share
 * them after a fork. With the contiguous layout (the pre-paging baseline)
 * every sequence slot reserves max_ctx positions up front.
 *
 * An engine's KV cache is read through kvl_engine_stats (below):
 *
 *     kvl_engine_stats st;
 *     kvl_engine_get_stats(engine, &st);
 *     printf("%u of %u blocks used, %.1f%% of reserved slots hold tokens\n",
 *            st.kv.n_blocks_used, st.kv.n_blocks_total, 100.0 * st.kv.utilization);
 */

typedef enum kvl_kv_layout {
    KVL_KV_LAYOUT_PAGED = 0,
    KVL_KV_LAYOUT_CONTIGUOUS = 1,
} kvl_kv_layout;

typedef struct kvl_kv_stats {
    kvl_kv_layout layout;
    int32_t block_size;     /* positions per block (contiguous: max_ctx) */
    size_t bytes_per_token; /* K+V of one position, all layers, scales included */
    size_t block_bytes;
    uint32_t n_blocks_total, n_blocks_free, n_blocks_used, n_blocks_shared;
    size_t bytes_total;       /* the whole budget that was allocated */
    size_t bytes_used;        /* held by sequences (contiguous: every slot, always) */
    size_t bytes_shared;      /* held by blocks that more than one sequence uses */
    size_t bytes_logical;     /* what the sequences would hold with nothing shared */
    int32_t n_seqs;           /* sequences holding at least one position */
    int64_t n_tokens;         /* positions stored, summed over sequences */
    int64_t n_slots_reserved; /* positions reserved in used memory */
    int64_t n_slots_frag;     /* reserved minus filled: internal fragmentation */
    double occupancy;         /* bytes_used / bytes_total */
    double utilization;       /* filled / reserved slots (1 when nothing is used) */
    int64_t n_blocks_copied;  /* copy-on-write copies since start */
    size_t bytes_residual;    /* quantized formats: the full-precision buffers that hold
                                 each sequence's newest, partly filled block (outside
                                 the block budget) */
    int64_t n_blocks_evicted; /* blocks an eviction policy took out of tables since start */
    int64_t n_tokens_evicted; /* the same in positions */
} kvl_kv_stats;

/* ---- KV eviction policy (docs/eviction.md) ------------------------------
 *
 * What a sequence keeps when its cache reaches budget_tokens positions.
 * full: everything (the budget is not used; the context limits the length).
 * window: the most recent positions. sinks: the first `sinks` positions
 * (rounded up to whole blocks; StreamingLLM's attention sinks) plus the most
 * recent ones. h2o: the sinks, a recent window and the "heavy hitter"
 * blocks, those with the most attention mass accumulated so far (summed
 * over layers and heads; by default per query that added to it, see
 * score). snapkv: a prompt longer than the budget
 * is compressed after its prefill to the sinks, the blocks its last
 * obs_window queries attended to most, and those queries' own blocks.
 * Whole blocks leave the sequence's table; positions are those within the
 * cache, so rotary angles stay inside the trained range and a stream can
 * run past the model's context. */
typedef enum kvl_kv_policy_kind {
    KVL_KV_POLICY_FULL = 0,
    KVL_KV_POLICY_WINDOW,
    KVL_KV_POLICY_SINKS,
    KVL_KV_POLICY_H2O,
    KVL_KV_POLICY_SNAPKV,
} kvl_kv_policy_kind;

typedef struct kvl_kv_policy {
    kvl_kv_policy_kind kind; /* default full */
    int32_t budget_tokens;   /* all but full: most positions held; >= sinks
                                (rounded to the block) + 2 blocks (snapkv: + the
                                observation window's blocks) */
    int32_t sinks;           /* sinks, h2o, snapkv: first positions always kept;
                                0 means the default: 4 for sinks, none for h2o and
                                snapkv (a sink block cost both quality on every
                                model measured, docs/eviction.md); the CLI and the
                                server default alike */
    float heavy;             /* h2o: share of the budget's non-sink blocks kept by
                                attention mass (the rest is the recent window);
                                0 means the default 0.5; else in (0, 1) */
    int32_t obs_window;      /* snapkv: the prompt's last positions whose attention
                                scores the blocks (always kept); 0 means 32 */
    int32_t score;           /* h2o: how a block's attention mass ranks it: 0 the
                                default (KVL_KV_SCORE_MEAN), KVL_KV_SCORE_SUM (the
                                mass summed over every query, the H2O paper's) or
                                KVL_KV_SCORE_MEAN (that sum over the number of queries
                                that added to it: older blocks are not favoured for
                                having been seen by more queries) */
    int32_t mass_stride;     /* h2o: only queries at a cache position that is a
                                multiple of mass_stride add attention mass (the
                                accumulation's cost / mass_stride); 0 means the
                                default KVL_KV_POLICY_DEFAULT_MASS_STRIDE (at most
                                the block size); 1 every query; at most the block
                                size */
    int32_t pool;            /* snapkv: each block is ranked by the largest score of
                                the pool blocks centred on it (SnapKV's pooling, at
                                block granularity; odd, 1: none); 0 means the
                                default KVL_KV_POLICY_DEFAULT_POOL */
} kvl_kv_policy;

/* kvl_kv_policy.score */
#define KVL_KV_SCORE_SUM 1
#define KVL_KV_SCORE_MEAN 2

#define KVL_KV_POLICY_DEFAULT_SINKS 4
#define KVL_KV_POLICY_DEFAULT_HEAVY 0.5f
#define KVL_KV_POLICY_DEFAULT_OBS_WINDOW 32
#define KVL_KV_POLICY_DEFAULT_MASS_STRIDE 4
#define KVL_KV_POLICY_DEFAULT_POOL 1
/* most max_tokens of an engine request under an evicting policy */
#define KVL_MAX_STREAM_TOKENS (1 << 24)

/* "full", "window", "sinks", "h2o", "snapkv"; NULL for a value out of range. */
KVL_API const char *kvl_kv_policy_str(kvl_kv_policy_kind k);
/* false for an unknown name (*out unchanged). */
KVL_API bool kvl_kv_policy_parse(const char *s, kvl_kv_policy_kind *out);

/* ---- The serving engine --------------------------------------------------
 *
 * An engine serves many requests at once on one model: continuous batching
 * (every step runs one flattened batch of decode tokens and prefill chunks
 * under a token budget), admission through the KV ledger (a request starts
 * only when its next blocks can be reserved), preemption by recompute or
 * swap when the pool runs dry, and exactly one final event per accepted
 * request. docs/engine.md has the state machine and the step algorithm.
 *
 * Threads: kvl_engine_submit, kvl_engine_cancel, kvl_engine_poll,
 * kvl_engine_get_stats, kvl_engine_request_info and kvl_engine_kv_map are
 * safe from any thread. Steps run either on the caller's thread (kvl_engine_step: tests,
 * benchmarks, single-threaded programs) or on the engine's own thread
 * (kvl_engine_start: servers); never both at once. Compute runs on the
 * engine's worker pool either way.
 */
typedef struct kvl_engine kvl_engine;

typedef enum kvl_preempt_mode {
    KVL_PREEMPT_AUTO = 0,      /* per victim, whichever the cost rule says is cheaper */
    KVL_PREEMPT_RECOMPUTE = 1, /* free the victim's blocks; prefill again later */
    KVL_PREEMPT_SWAP = 2,      /* copy its blocks to the swap area and back (recompute
                                  when the swap area is full) */
} kvl_preempt_mode;

/* "auto", "recompute" or "swap" ("?" out of range); parse with
 * kvl_preempt_mode_parse (false for an unknown name). */
KVL_API const char *kvl_preempt_mode_str(kvl_preempt_mode m);
KVL_API bool kvl_preempt_mode_parse(const char *s, kvl_preempt_mode *out);

/* The prefix cache's second tier: where cached blocks evicted from the
 * pool go instead of being dropped (docs/prefix_cache.md). It lives in the
 * swap area (swap_mem bytes), after swapped-out requests' needs. */
typedef enum kvl_prefix_tier_mode {
    KVL_PREFIX_TIER_OFF = 0,  /* evicted cached blocks are dropped (default) */
    KVL_PREFIX_TIER_HOST = 1, /* the swap area in anonymous memory (swap_file NULL) */
    KVL_PREFIX_TIER_FILE = 2, /* the swap area backed by swap_file */
} kvl_prefix_tier_mode;

/* "off", "host" or "file" ("?" out of range); parse with
 * kvl_prefix_tier_parse (false for an unknown name). */
KVL_API const char *kvl_prefix_tier_str(kvl_prefix_tier_mode m);
KVL_API bool kvl_prefix_tier_parse(const char *s, kvl_prefix_tier_mode *out);

typedef struct kvl_engine_params {
    int32_t n_threads; /* worker threads; 0 = one per core */
    /* KV cache */
    kvl_kv_layout kv_layout; /* default paged */
    const char *kv_type_k;   /* "f32", "f16", "bf16", "fp8_e4m3", "fp8_e5m2", "int8",
                                 "int4"; NULL = auto: f32 for f32 weights, else f16 */
    const char *kv_type_v;
    size_t kv_mem;          /* bytes of KV blocks; 0 = kv_mem_fraction of the
                                 available memory, or when that is 0 too, what
                                 max_seqs full contexts need, capped at half the
                                 available memory */
    double kv_mem_fraction; /* (0, 1] */
    int32_t block_size;     /* positions per block; 0 = the formats' default (16;
                                 32 with int4 keys) */
    int32_t max_ctx;        /* positions per sequence; 0 = the model's context */
    /* scheduling */
    int32_t max_seqs;                 /* sequences decoding at once (KV slots); default 16 */
    int32_t max_batch_tokens;         /* tokens per step (decodes + prefill chunks); default 256 */
    int32_t max_queue;                /* waiting requests; default 1024; over it submit is
                                 KVL_E_BUSY */
    int64_t max_queue_tokens;         /* prompt tokens waiting; default 1 << 20 */
    kvl_preempt_mode preempt;         /* default auto */
    size_t swap_mem;                  /* bytes of the swap area; default 0 (no swap) */
    const char *swap_file;            /* back the swap area with this file instead of
                                 anonymous memory (a tier larger than RAM) */
    int32_t event_capacity;           /* events buffered for kvl_engine_poll; default 4096 */
    bool prefix_cache;                /* find prompts' full blocks again by their tokens
                                 (docs/prefix_cache.md); default true */
    kvl_prefix_tier_mode prefix_tier; /* default off; host needs swap_mem and no
                                 swap_file, file needs both (KVL_E_INVALID
                                 otherwise) */
    bool batch_invariant;             /* every product takes one kernel path whatever the
                                 batch, so a request's tokens at temperature 0 do not
                                 depend on what else runs (slower decode: see
                                 docs/engine.md). Process-wide once set. */
} kvl_engine_params;

KVL_API kvl_engine_params kvl_engine_defaults(void);

/* Create an engine on m (which must outlive it): resolves the defaults,
 * allocates the KV pool, the swap area, the batch buffers and the event
 * queue up front, and prints nothing. On error nothing is allocated. */
KVL_API kvl_status kvl_engine_init(const kvl_model *m, const kvl_engine_params *p, kvl_engine **out,
                                   kvl_error *err);
/* Stop the engine thread if started, release every open request and free
 * everything. Events not yet polled are lost with the queue: to see every
 * request's final event, cancel what is open and poll until idle first
 * (kvllm's front ends do). */
KVL_API void kvl_engine_free(kvl_engine *e);

/* The resolved configuration (formats, budget, block size, limits). */
typedef struct kvl_engine_config {
    char kv_type_k[16], kv_type_v[16];
    kvl_kv_layout kv_layout;
    int32_t block_size, max_ctx, max_seqs, max_batch_tokens, max_queue;
    int64_t max_queue_tokens;
    size_t kv_mem, swap_mem;
    uint32_t n_blocks;       /* blocks in the pool */
    int64_t capacity_tokens; /* positions the pool holds */
    size_t bytes_per_token;
    int32_t n_threads;
    kvl_preempt_mode preempt;
    kvl_prefix_tier_mode prefix_tier; /* off when the prefix cache is off */
    char budget_reason[128];          /* how kv_mem was chosen */
} kvl_engine_config;
KVL_API void kvl_engine_get_config(const kvl_engine *e, kvl_engine_config *out);

/* One request. */
typedef struct kvl_request_params {
    const char *prompt;           /* text (tokenized with BOS), or */
    const int32_t *prompt_tokens; /* token ids, used as given when not NULL */
    size_t n_prompt_tokens;
    int32_t max_tokens;      /* tokens to generate per sample; default 256 */
    int32_t n;               /* samples sharing the prompt's blocks; default 1 */
    float temperature;       /* 0 = greedy; default 0.8 */
    int32_t top_k;           /* 0 = off; default 40 */
    float top_p;             /* 1 = off; default 0.95 */
    float min_p;             /* 0 = off; default 0.05 */
    float repeat_penalty;    /* 1 = off; default 1 */
    int32_t repeat_last_n;   /* default 64 */
    float presence_penalty;  /* [-2, 2]; default 0: subtracted from the logit of
                                     every token the sample has generated */
    float frequency_penalty; /* [-2, 2]; default 0: subtracted once per time the
                                     sample generated the token (OpenAI's rule) */
    int32_t top_logprobs;    /* 0..KVL_MAX_TOP_LOGPROBS alternatives in each TOKEN
                                     event; default 0 */
    uint64_t seed;           /* sample i uses seed + i */
    const char *const *stop; /* stop strings (never part of the output) */
    int32_t n_stop;          /* at most KVL_MAX_STOPS, each at most
                                     KVL_MAX_STOP_LEN bytes */
    int32_t priority;        /* higher runs first and is preempted last; default 0 */
    uint64_t session;        /* groups a conversation's requests in the ledger; 0 none */
    uint64_t tag;            /* the caller's, echoed in every event */
    const char *cache_salt;  /* prefix-cache namespace: blocks are shared only
                                     between requests with the same salt (NULL: none) */
    bool ignore_eos;         /* keep generating past end-of-sequence and BOS (benchmarks:
                                     every output runs to max_tokens) */
    kvl_kv_policy kv_policy; /* default full. window, sinks, h2o and snapkv
                                (sinks 0 means 4, heavy 0 means 0.5,
                                obs_window 0 means 32; out of range:
                                KVL_E_INVALID naming the field) keep the
                                request's cache within budget_tokens:
                                max_tokens may then pass the context (up to
                                KVL_MAX_STREAM_TOKENS), n must be 1, the paged
                                layout is required, the request takes no
                                prefix-cache hits and publishes no blocks, and
                                is preempted by recompute only (its whole
                                history fed again under the policy). snapkv
                                prefills a prompt longer than the budget
                                whole (its blocks must fit the pool) and cuts
                                it to the budget before the first decode.
                                docs/eviction.md, "In the engine" */
} kvl_request_params;

#define KVL_MAX_STOPS 16
#define KVL_MAX_STOP_LEN 128
#define KVL_MAX_SAMPLES 64
#define KVL_MAX_TOP_LOGPROBS 20

KVL_API kvl_request_params kvl_request_defaults(void);

/* Validate and queue a request; *id identifies it in events. Refused, with
 * nothing queued and a message with the numbers: KVL_E_INVALID (a field out
 * of range), KVL_E_LIMIT (prompt + max_tokens over the context, or more
 * blocks than the whole pool holds: it could never run), KVL_E_BUSY (the
 * waiting queue is at max_queue or max_queue_tokens: retry later). */
KVL_API kvl_status kvl_engine_submit(kvl_engine *e, const kvl_request_params *p, uint64_t *id,
                                     kvl_error *err);
/* Ask for a request to end; its final event (KVL_FINISH_CANCELLED) follows
 * within one step. KVL_E_NOT_FOUND when it is unknown or already ended. */
KVL_API kvl_status kvl_engine_cancel(kvl_engine *e, uint64_t id);

typedef enum kvl_event_type {
    KVL_EV_TOKEN = 1,      /* a generated token and the text it completes */
    KVL_EV_SAMPLE_END = 2, /* one of n > 1 samples ended (reason, leftover text) */
    KVL_EV_FINAL = 3,      /* the request ended: exactly one per accepted request */
} kvl_event_type;

typedef enum kvl_finish_reason {
    KVL_FINISH_NONE = 0,
    KVL_FINISH_STOP = 1,      /* end-of-sequence token or a stop string */
    KVL_FINISH_LENGTH = 2,    /* max_tokens, or the context is full */
    KVL_FINISH_CANCELLED = 3, /* kvl_engine_cancel or kvl_engine_free */
    KVL_FINISH_ERROR = 4,     /* see status and message */
} kvl_finish_reason;

KVL_API const char *kvl_finish_reason_str(kvl_finish_reason r);

typedef struct kvl_usage {
    int64_t prompt_tokens;
    int64_t completion_tokens;  /* over all samples, counting a sampled end-of-sequence
                                  token (which has no TOKEN event), as vLLM does */
    int64_t cached_tokens;      /* prompt tokens whose KV was reused, not computed */
    int64_t cached_tokens_tier; /* of those, promoted from the prefix cache's second tier
                                   (a copy); the rest were found in the pool */
    int64_t recomputed_tokens;  /* positions computed again after a preemption (prefix-cache
                                  hits on its own old blocks not counted) */
    int32_t n_preemptions;
    double queue_s;               /* submit to first scheduled */
    double ttft_s;                /* submit to first token */
    double tpot_s;                /* mean time per output token after the first */
    double e2e_s;                 /* submit to the final event */
    kvl_kv_policy_kind kv_policy; /* the request's KV policy */
    int64_t evicted_blocks;       /* blocks its policy took out of its cache (all
                                     admissions, recompute replays included) */
    int64_t evicted_tokens;       /* the same in positions */
} kvl_usage;

#define KVL_EVENT_TEXT_MAX 512

typedef struct kvl_token_logprob {
    int32_t token;
    float logprob;
} kvl_token_logprob;

typedef struct kvl_event {
    kvl_event_type type;
    uint64_t id, tag;
    int32_t index; /* sample, 0..n-1 */
    int32_t token; /* TOKEN: the id */
    float logprob; /* TOKEN: log p(token) under the model's distribution
                                 (the logits before penalties and temperature) */
    int32_t n_top; /* TOKEN: entries in top (the request's top_logprobs) */
    kvl_token_logprob top[KVL_MAX_TOP_LOGPROBS]; /* TOKEN: the most likely tokens, best first (ties:
                                    lower id first), same distribution as logprob */
    kvl_finish_reason reason;                    /* SAMPLE_END, FINAL */
    kvl_status status;                           /* FINAL with KVL_FINISH_ERROR */
    kvl_usage usage;                             /* FINAL */
    size_t text_len; /* bytes of text now final (stop strings held back) */
    char text[KVL_EVENT_TEXT_MAX];
    char message[192]; /* FINAL: why (error, or which limit ended it) */
} kvl_event;

/* Copy up to max events, oldest first, into out; waits up to timeout_s
 * seconds for the first one (0 = do not wait). Returns the number copied.
 * Events of one request come in order; its FINAL is its last. */
KVL_API int kvl_engine_poll(kvl_engine *e, kvl_event *out, int max, double timeout_s);

/* Run one step on the caller's thread: admit, schedule, run one batch,
 * sample, emit events. *n_tokens (may be NULL) is the batch size (0 when
 * idle). Errors of a request end that request with an ERROR event; the
 * step itself fails only when the engine cannot go on (KVL_E_INVALID when
 * the engine thread is running). A step waits when the event queue cannot
 * take what it would emit: poll between steps. */
KVL_API kvl_status kvl_engine_step(kvl_engine *e, int32_t *n_tokens, kvl_error *err);
/* Run steps on the engine's own thread until kvl_engine_stop or free. */
KVL_API kvl_status kvl_engine_start(kvl_engine *e, kvl_error *err);
KVL_API void kvl_engine_stop(kvl_engine *e);
/* True when nothing is waiting, running or swapped. */
KVL_API bool kvl_engine_idle(kvl_engine *e);

typedef struct kvl_engine_stats {
    kvl_kv_stats kv;         /* the pool (blocks, bytes, tokens) */
    int64_t capacity_tokens; /* positions the pool holds */
    int64_t free_tokens;     /* positions in free blocks */
    int32_t n_waiting, n_running, n_swapped;
    int64_t waiting_prompt_tokens;
    uint32_t n_swap_blocks_total, n_swap_blocks_used;
    int64_t n_steps, n_requests_accepted, n_requests_refused, n_requests_finished;
    int64_t n_preemptions, n_preempt_recompute, n_preempt_swap;
    int64_t tokens_recomputed;
    int64_t n_blocks_swapped_out, n_blocks_swapped_in;
    size_t bytes_swapped_out, bytes_swapped_in;
    int64_t tokens_prefilled, tokens_decoded;
    int64_t prefix_lookup_tokens;     /* prompt positions looked up in the prefix cache */
    int64_t prefix_hit_tokens;        /* of those, served from cached blocks */
    int64_t prefix_hit_tokens_self;   /* served on re-admission or swap-in after a
                                       preemption (its own blocks, or others') */
    int64_t prefix_hit_tokens_pool;   /* of hit + self, found in the pool */
    int64_t prefix_hit_tokens_tier;   /* of hit + self, promoted from the second tier */
    double prefix_hit_rate;           /* (hit + self) / lookup tokens; 0 before a lookup */
    int64_t prefix_hit_free_blocks;   /* hits on blocks that were free but still cached */
    int64_t prefix_swapin_hit_blocks; /* blocks of swapped-in requests found in the pool
                                         (attached, not copied back) */
    uint32_t prefix_cached_blocks;    /* blocks with a hash now */
    int64_t prefix_evicted_blocks;    /* cached blocks handed out for new data */
    int64_t prefix_evicted_unused;    /* cached blocks that left the cache (pool and
                                       tier) without ever being hit */
    uint32_t prefix_tier_blocks;      /* blocks in the second tier now */
    int64_t prefix_demoted_blocks;    /* pool -> tier copies */
    int64_t prefix_promoted_blocks;   /* tier -> pool copies (hits) */
    int64_t prefix_tier_dropped;      /* tier blocks dropped (LRU, or for swap) */
    int64_t prefix_tier_dropped_swap; /* of those, to make room for swapped requests */
    double prefix_tier_seconds;       /* time spent on demotion and promotion copies */
    double prefill_s_saved;           /* hit tokens / the measured prefill rate */
    double prefill_tok_s;             /* measured prefill rate (cost rule input) */
    double swap_bytes_s;              /* measured swap copy rate (cost rule input) */
} kvl_engine_stats;

/* A snapshot taken at the end of the last step. This function can't fail. */
KVL_API void kvl_engine_get_stats(kvl_engine *e, kvl_engine_stats *out);

typedef enum kvl_request_state {
    KVL_REQ_WAITING = 0, /* queued, nothing computed (or preempted to recompute) */
    KVL_REQ_RUNNING = 1, /* holds KV blocks: prefilling or decoding */
    KVL_REQ_SWAPPED = 2, /* its blocks are in the swap area */
    KVL_REQ_FINISHED = 3,
} kvl_request_state;

typedef struct kvl_request_info {
    uint64_t id, tag, session;
    kvl_request_state state;
    int32_t priority, n_samples;
    int64_t prompt_tokens, computed_tokens, generated_tokens;
    uint32_t n_blocks, n_blocks_shared, n_swap_blocks;
    size_t kv_bytes;
    int32_t n_preemptions;
    int64_t cached_tokens;      /* prompt positions served by the prefix cache at first
                                   admission (as in its usage) */
    int64_t cached_tokens_tier; /* of those, promoted from the second tier */
    int64_t cached_again;       /* positions found cached on re-admissions and swap-ins */
    double queue_s, age_s;
    kvl_kv_policy_kind kv_policy;           /* as in its usage */
    int64_t evicted_blocks, evicted_tokens; /* so far, as in its usage */
} kvl_request_info;

/* KVL_E_NOT_FOUND when id is unknown or finished. */
KVL_API kvl_status kvl_engine_request_info(kvl_engine *e, uint64_t id, kvl_request_info *out);

/* A conversation's ledger: the requests submitted with one session id
 * (kvl_request_params.session), what they hold now, and each finished
 * turn's footprint, the newest KVL_SESSION_TURNS of them (multi-turn creep
 * shows as kv_bytes growing turn by turn). The engine tracks up to
 * KVL_MAX_SESSIONS sessions; beyond that the least recently used idle one
 * is forgotten. */
#define KVL_SESSION_TURNS 16
#define KVL_MAX_SESSIONS 4096
typedef struct kvl_session_turn {
    uint64_t request_id;
    int64_t prompt_tokens, completion_tokens, cached_tokens;
    uint32_t n_blocks; /* blocks the turn held when it ended */
    size_t kv_bytes;
    kvl_finish_reason reason;
    int64_t cached_tokens_tier; /* of cached_tokens, promoted from the second tier */
} kvl_session_turn;

typedef struct kvl_session_info {
    uint64_t session;
    int64_t n_requests; /* submitted so far */
    int32_t n_open;     /* not yet ended */
    uint32_t n_blocks;  /* held now by its open requests */
    size_t kv_bytes;
    int32_t n_turns; /* entries in turns, oldest first */
    kvl_session_turn turns[KVL_SESSION_TURNS];
    uint32_t n_blocks_shared;  /* of n_blocks, those with more than one reference */
    int64_t n_blocks_demoted;  /* prefix-cache blocks its requests filled that the pool
                                  later demoted to the second tier (counted when it
                                  happens, also after the requests ended) */
    int64_t n_blocks_promoted; /* second-tier blocks its requests' admissions brought
                                  back (whoever filled them; a promoted block counts
                                  as this session's from then on) */
} kvl_session_info;

/* KVL_E_NOT_FOUND for a session never seen (or forgotten). */
KVL_API kvl_status kvl_engine_session_info(kvl_engine *e, uint64_t session, kvl_session_info *out);

/* ---- The KV block map ----------------------------------------------------
 *
 * Every block of the pool and of the swap area at one moment, with who
 * holds it: what a dashboard draws as a grid of cells (the PagedAttention
 * paper's picture). No token or text is in it, only ids and counts.
 *
 *     uint32_t nb, ns, nh;
 *     kvl_engine_kv_map_size(e, &nb, &ns, &nh);
 *     kvl_kv_map m = {.blocks = calloc(nb, sizeof *m.blocks), .cap_blocks = nb,
 *                     .swap = calloc(ns ? ns : 1, sizeof *m.swap), .cap_swap = ns,
 *                     .holders = calloc(nh, sizeof *m.holders), .cap_holders = nh};
 *     if (kvl_engine_kv_map(e, &m, &err) == KVL_OK)
 *         for (uint32_t b = 0; b < m.n_blocks; b++)
 *             if (m.blocks[b].state == KVL_KV_BLOCK_USED)
 *                 printf("block %u: request %llu, %u references\n", b,
 *                        (unsigned long long)m.holders[m.blocks[b].holder].request,
 *                        m.blocks[b].refcount);
 */
typedef enum kvl_kv_block_state {
    KVL_KV_BLOCK_FREE = 0,   /* no reference, no cached data */
    KVL_KV_BLOCK_CACHED = 1, /* no reference, but a prefix-cache entry: a hit reuses it,
                                an allocation may take it (it is counted free in stats) */
    KVL_KV_BLOCK_USED = 2,   /* referenced by at least one sequence's block table */
} kvl_kv_block_state;

typedef struct kvl_kv_block_info {
    kvl_kv_block_state state;
    uint32_t refcount; /* block tables that hold it (0 unless USED; > 1: shared) */
    int32_t holder;    /* USED: index in holders of its first holder (the lowest request
                          id whose tables hold it); -1 otherwise */
    bool hashed;       /* it has a prefix-cache entry (always when CACHED) */
} kvl_kv_block_info;

typedef enum kvl_kv_swap_state {
    KVL_KV_SWAP_FREE = 0, /* unused */
    KVL_KV_SWAP_TIER = 1, /* a prefix-cache block demoted to the second tier */
    KVL_KV_SWAP_HELD = 2, /* holds a swapped-out request's KV */
} kvl_kv_swap_state;

typedef struct kvl_kv_swap_info {
    kvl_kv_swap_state state;
    int32_t holder; /* HELD: index in holders of the swapped request; -1 otherwise */
} kvl_kv_swap_info;

/* A request that holds pool or swap blocks. Blocks are counted as in
 * kvl_request_info: table entries summed over its samples. */
typedef struct kvl_kv_holder {
    uint64_t request, session;
    kvl_request_state state; /* running or swapped */
    int32_t n_samples;
    uint32_t n_blocks, n_blocks_shared, n_swap_blocks;
    int64_t n_tokens; /* positions stored, summed over its samples */
} kvl_kv_holder;

typedef struct kvl_kv_map {
    /* in: arrays the caller owns, and their lengths */
    kvl_kv_block_info *blocks; /* (cap_blocks) one per pool block, by block id */
    uint32_t cap_blocks;
    kvl_kv_swap_info *swap; /* (cap_swap) one per swap-area block; may be NULL when 0 */
    uint32_t cap_swap;
    kvl_kv_holder *holders; /* (cap_holders) ascending request id */
    uint32_t cap_holders;
    /* out */
    uint32_t n_blocks, n_swap_blocks, n_holders; /* entries written */
    uint32_t n_free, n_cached, n_used, n_shared; /* pool blocks by state; shared: refcount > 1 */
    uint32_t n_swap_free, n_swap_tier, n_swap_held;
    kvl_kv_stats kv; /* the pool's stats taken at the same moment under the same lock:
                        n_blocks_used == n_used, n_blocks_free == n_free + n_cached,
                        n_blocks_shared == n_shared, occupancy = n_used / n_blocks */
    int32_t n_waiting, n_running, n_swapped; /* the queues at the same moment */
    int64_t n_steps;                         /* steps completed when it was taken */
    bool in_step; /* taken while a batch was computing: the blocks the scheduler
                     reserved for it are here, and kvl_engine_get_stats shows them
                     from the end of that step. false: kv equals get_stats's kv. */
} kvl_kv_map;

/* The lengths that make kvl_engine_kv_map never fail for room: pool
 * blocks, swap-area blocks, and the most holders there can be (max_seqs +
 * swap blocks: a running request holds a slot, a swapped one a swap
 * block). They never change. This function can't fail. */
KVL_API void kvl_engine_kv_map_size(kvl_engine *e, uint32_t *n_blocks, uint32_t *n_swap_blocks,
                                    uint32_t *max_holders);
/* Fill m (its out fields and arrays) under the engine's lock, in
 * O(pool blocks + swap blocks + open requests + table entries),
 * allocating nothing; safe from any thread. The cells, m->kv and the
 * queue counts are one moment; when m->in_step is false the blocks are
 * exactly those of the last kvl_engine_get_stats snapshot (its kv equals
 * m->kv; a submission since then shows in m->n_waiting first). On error m
 * is unchanged:
 * KVL_E_INVALID (NULL m or an array NULL with a non-zero length),
 * KVL_E_UNSUPPORTED (the contiguous layout has no blocks), KVL_E_LIMIT
 * (an array too short; the message says how many entries are needed). */
KVL_API kvl_status kvl_engine_kv_map(kvl_engine *e, kvl_kv_map *m, kvl_error *err);

/* ---- Chat templates ------------------------------------------------------
 *
 * A chat model was trained on conversations written in one fixed markup;
 * its GGUF file carries that markup as a Jinja program in the metadata key
 * tokenizer.chat_template. kvllm never runs that program (it is data from
 * a file): it recognises which of a fixed set of templates the text is by
 * its markers and renders that template with its own code, byte for byte
 * as the published Jinja template renders it (docs/chat.md names the model
 * each one comes from, and tests/test_chat_template.c holds the expected
 * strings).
 *
 *     kvl_chat_params cp;
 *     if (kvl_chat_params_for_model(m, NULL, &cp, &err))   // or "chatml", ...
 *         fprintf(stderr, "%s\n", err.msg);                 // none recognised
 *     kvl_chat_message msgs[2] = {{"system", "Be brief."}, {"user", "Hi"}};
 *     size_t len;
 *     kvl_chat_apply(&cp, msgs, 2, buf, sizeof buf, &len, &err);
 *     kvl_chat_tokenize(m, buf, len, ids, cap, &n_ids, &err);  // control tokens parsed
 */
typedef enum kvl_chat_template {
    KVL_CHAT_NONE = 0,    /* not recognised */
    KVL_CHAT_LLAMA2 = 1,  /* Llama 2 chat: <s>[INST] <<SYS>>...<</SYS>> ... [/INST] */
    KVL_CHAT_LLAMA3 = 2,  /* Llama 3 instruct: <|start_header_id|>role<|end_header_id|> */
    KVL_CHAT_CHATML = 3,  /* ChatML (Qwen2, Qwen2.5 with a system message, SmolLM) */
    KVL_CHAT_MISTRAL = 4, /* Mistral 7B Instruct v0.3: [INST] ...[/INST] */
    KVL_CHAT_ZEPHYR = 5,  /* Zephyr, TinyLlama chat: <|user|>\n...</s> */
    KVL_CHAT_PHI3 = 6,    /* Phi-3 / Phi-3.5: <|user|>\n...<|end|> */
    KVL_CHAT_GEMMA = 7,   /* Gemma: <start_of_turn>user ... <end_of_turn> */
    KVL_CHAT_PLAIN = 8,   /* no markup: BOS, then each message's text and a newline */
} kvl_chat_template;

/* One message: role "system" (or "developer", its newer OpenAI name),
 * "user" or "assistant"; content is UTF-8 text (NULL: empty). */
typedef struct kvl_chat_message {
    const char *role;
    const char *content;
} kvl_chat_message;

#define KVL_CHAT_MAX_MESSAGES 65536
#define KVL_CHAT_MAX_BYTES ((size_t)64 << 20) /* a rendered conversation, at most */

typedef struct kvl_chat_params {
    kvl_chat_template tmpl;
    bool add_generation_prompt; /* end with the assistant's header (default true) */
    char bos_token[64];         /* the texts the templates write for BOS and EOS: */
    char eos_token[64];         /* the model's, or each template's usual ones */
} kvl_chat_params;

/* tmpl's usual BOS/EOS texts and add_generation_prompt. This function can't fail. */
KVL_API kvl_chat_params kvl_chat_defaults(kvl_chat_template tmpl);
/* "llama2", "llama3", "chatml", "mistral", "zephyr", "phi3", "gemma", "plain"
 * ("none" for KVL_CHAT_NONE, "?" out of range). */
KVL_API const char *kvl_chat_template_name(kvl_chat_template t);
/* A name (as above) to its template; KVL_E_INVALID naming the accepted names
 * otherwise. On error *out is unchanged. */
KVL_API kvl_status kvl_chat_template_parse(const char *name, kvl_chat_template *out,
                                           kvl_error *err);
/* Which template a Jinja chat-template text is, by its markers (the text is
 * only searched, never run); KVL_CHAT_NONE when none fits. This function
 * can't fail. */
KVL_API kvl_chat_template kvl_chat_template_detect(const char *jinja, size_t len);
/* The parameters for chatting with m: the template named (name not NULL)
 * or else the one its file's tokenizer.chat_template is; BOS/EOS texts from
 * its vocabulary. KVL_E_NOT_FOUND when name is NULL and the file has no
 * template, KVL_E_UNSUPPORTED when it has one that is not recognised (both
 * messages name --chat-template), KVL_E_INVALID for a bad name. */
KVL_API kvl_status kvl_chat_params_for_model(const kvl_model *m, const char *name,
                                             kvl_chat_params *out, kvl_error *err);
/* Render n messages with p into buf (NUL-terminated when room is left);
 * *len_out is the full length (buf may be NULL with cap 0 to ask it: then
 * KVL_E_LIMIT with *len_out set; every other failure leaves it untouched).
 * KVL_E_INVALID naming messages[i].role for an unknown role or an order the
 * template refuses (llama2, mistral and gemma: after an optional first
 * system message, user and assistant alternate starting with user);
 * KVL_E_LIMIT for more than KVL_CHAT_MAX_MESSAGES messages, a result over
 * KVL_CHAT_MAX_BYTES, or cap too small (with the length needed). */
KVL_API kvl_status kvl_chat_apply(const kvl_chat_params *p, const kvl_chat_message *msgs, size_t n,
                                  char *buf, size_t cap, size_t *len_out, kvl_error *err);
/* Tokenize rendered chat text for m: control tokens written in it (<s>,
 * <|im_start|>, ...) become their ids, and no BOS is added (the template
 * wrote it). As kvl_tokenize: at most cap ids, KVL_E_LIMIT when cap is too
 * small (2 * len + 3 always suffice). Control-token text inside a message is
 * parsed too, as vLLM and llama.cpp do. */
KVL_API kvl_status kvl_chat_tokenize(const kvl_model *m, const char *text, size_t len, int32_t *out,
                                     size_t cap, size_t *n_out, kvl_error *err);

#ifdef __cplusplus
}
#endif
#endif /* KVLLM_H */
