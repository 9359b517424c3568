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

#ifdef __cplusplus
}
#endif
#endif /* KVLLM_H */
