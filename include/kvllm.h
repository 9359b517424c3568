/*
 * kvllm: an LLM inference engine in C whose centre is the KV cache.
 *
 * This is the one public header. It is written as the user's manual.
 *
 * Example: load a model and generate greedily.
 *
 *     kvl_error err;
 *     kvl_model *m = NULL;
 *     if (kvl_model_load("stories260K.gguf", NULL, &m, &err) != KVL_OK) {
 *         fprintf(stderr, "%s\n", err.msg);
 *         return 1;
 *     }
 *     ... see src/cli/run.c for the generation loop ...
 *     kvl_model_free(m);
 *
 * Conventions
 *   - Fallible functions return kvl_status and, when given a kvl_error,
 *     fill it with a message that names the field, the value and the limit.
 *   - A failed call leaves every structure exactly as it was.
 *   - Pairs are _init/_free (or _load/_free); _free(NULL) does nothing.
 *   - Sizes are size_t, tensor dims int64_t, token ids int32_t, block ids
 *     uint32_t.
 */
#ifndef KVLLM_H
#define KVLLM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KVL_VERSION "0.1.0"

typedef enum kvl_status {
    KVL_OK = 0,
    KVL_E_NOMEM,       /* the heap could not satisfy a request */
    KVL_E_INVALID,     /* a caller's argument is out of range */
    KVL_E_FORMAT,      /* a file's contents break its format */
    KVL_E_IO,          /* open/read/write/mmap failed */
    KVL_E_LIMIT,       /* a value exceeds a documented limit */
    KVL_E_NO_KV,       /* not enough free KV blocks (recoverable) */
    KVL_E_CANCELLED,   /* the operation was cancelled */
    KVL_E_UNSUPPORTED, /* well-formed but not supported (type, arch) */
} kvl_status;

/* Error details. msg is always NUL-terminated. */
typedef struct kvl_error {
    kvl_status status;
    char msg[512];
} kvl_error;

/* A short, static name for a status: "ok", "out of memory", ... */
const char *kvl_status_str(kvl_status s);

/* ---- KV cache accounting -------------------------------------------------
 *
 * A KV cache holds the keys and values of every sequence. With the paged
 * layout (the default) its memory is one budget divided into blocks of
 * block_size token positions; sequences take blocks as they grow and share
 * them after a fork. With the contiguous layout (the pre-paging baseline)
 * every sequence slot reserves max_ctx positions up front.
 *
 *     kvl_kv_stats st;
 *     kvl_kv_cache_stats(cache, &st);
 *     printf("%u of %u blocks used, %.1f%% of reserved slots hold tokens\n",
 *            st.n_blocks_used, st.n_blocks_total, 100.0 * st.utilization);
 */
typedef struct kvl_kv_cache kvl_kv_cache;

typedef enum kvl_kv_layout {
    KVL_KV_LAYOUT_PAGED = 0,
    KVL_KV_LAYOUT_CONTIGUOUS = 1,
} kvl_kv_layout;

typedef struct kvl_kv_stats {
    kvl_kv_layout layout;
    int32_t block_size;       /* positions per block (contiguous: max_ctx) */
    size_t bytes_per_token;   /* K+V of one position, all layers, scales included */
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
} kvl_kv_stats;

/* One sequence's share. */
typedef struct kvl_kv_seq_stats_public {
    int32_t n_tokens;
    uint32_t n_blocks, n_blocks_own, n_blocks_shared;
    size_t bytes_own, bytes_shared;
} kvl_kv_seq_stats_public;

void kvl_kv_cache_stats(const kvl_kv_cache *c, kvl_kv_stats *out);
kvl_status kvl_kv_cache_seq_stats(const kvl_kv_cache *c, int32_t seq, kvl_kv_seq_stats_public *out,
                                  kvl_error *err);

#ifdef __cplusplus
}
#endif
#endif /* KVLLM_H */
