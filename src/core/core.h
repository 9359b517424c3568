/*
 * core: status and error messages, checked size arithmetic, read-only file
 * mapping, monotonic clock, half-precision conversion. Private to kvllm.
 */
#ifndef KVL_CORE_H
#define KVL_CORE_H

#include "kvllm.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* Fill err (may be NULL) with a printf-style message; return st. */
kvl_status kvl_errorf(kvl_error *err, kvl_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Always-on check of an internal invariant (never of input). */
#define KVL_ASSERT(c)                                                                              \
    do {                                                                                           \
        if (!(c))                                                                                  \
            kvl_assert_fail(#c, __FILE__, __LINE__);                                               \
    } while (0)
void kvl_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

/* Checked arithmetic: return true on overflow (result then undefined). */
static inline bool kvl_mul_overflow(size_t a, size_t b, size_t *r) {
    return __builtin_mul_overflow(a, b, r);
}
static inline bool kvl_add_overflow(size_t a, size_t b, size_t *r) {
    return __builtin_add_overflow(a, b, r);
}
/* Round x up to a multiple of align (a power of two); true on overflow. */
static inline bool kvl_align_up(size_t x, size_t align, size_t *r) {
    size_t t;
    if (__builtin_add_overflow(x, align - 1, &t))
        return true;
    *r = t & ~(align - 1);
    return false;
}

/* A whole file in memory, read-only: either mapped from the file (pages
 * shared with the page cache, read lazily) or copied into private memory. */
typedef struct kvl_mapped_file {
    const uint8_t *data; /* (size) bytes, read-only */
    size_t size;
    size_t anon_len; /* 0: a file mapping; else the length of the private
                        anonymous region holding the copy */
} kvl_mapped_file;

/* kvl_load_mode (public, kvllm.h): how a (model) file is brought into memory.
 * Decode streams every weight once per token; with 4 KiB pages that is a
 * TLB miss every 4 KiB, with 2 MiB pages one every 2 MiB. */

#define KVL_LOAD_HUGE_MIN ((size_t)64 << 20)

kvl_status kvl_map_file(const char *path, kvl_mapped_file *out, kvl_error *err);
/* Like kvl_map_file with a load mode; shows "label: NN%" on stderr while
 * copying a large file when stderr is a terminal (label may be NULL). */
kvl_status kvl_load_file(const char *path, kvl_load_mode mode, const char *label,
                         kvl_mapped_file *out, kvl_error *err);
void kvl_unmap_file(kvl_mapped_file *f);
/* The "KEY: N kB" line of a /proc file, in bytes: e.g. ("/proc/meminfo",
 * "MemAvailable"), or ("/proc/self/smaps_rollup", "AnonHugePages"): this
 * process's memory in transparent huge pages. -1 when the file or the key
 * is missing. */
long long kvl_proc_kb(const char *path, const char *key);

/* Seconds from an arbitrary fixed point (CLOCK_MONOTONIC). */
double kvl_now(void);

/* The q-quantile (0..1) of sorted v[0..n) by linear interpolation between
 * the closest ranks, as numpy's percentile and vLLM's benchmark compute it
 * (the median of an even count is the mean of the middle two); 0 when n is
 * 0. kvllm bench serve and kvllm sim both report with it, so their p50 and
 * p99 compare like with like. */
double kvl_quantile(const double *v, size_t n, double q);

/* IEEE half and bfloat16 <-> float (round to nearest even). */
float kvl_fp16_to_f32(uint16_t h);
uint16_t kvl_f32_to_fp16(float f);
static inline float kvl_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
uint16_t kvl_f32_to_bf16(float f);

/* Read every page of a mapping of 64 MiB or more once, showing
 * "label: NN%" on stderr when it is a terminal (loading a large model);
 * does nothing otherwise, so pipes and logs stay quiet and the mapping
 * stays lazy. */
void kvl_prefault_with_progress(const kvl_mapped_file *f, const char *label);

/* True when stderr is a terminal (progress output goes there). */
bool kvl_stderr_is_tty(void);

/*
 * A progress line for work that takes seconds or minutes (loading a model,
 * --kv-check, ppl, bench): "\rlabel: NN%" on stderr when stderr is a
 * terminal, nothing otherwise, so pipes and logs stay quiet.
 *
 *     kvl_progress pr;
 *     kvl_progress_begin(&pr, "kv check");
 *     for (...) kvl_progress_update(&pr, done, total);
 *     kvl_progress_end(&pr);
 *
 * A line is written only when the whole percentage changes (at most 101
 * per begin). end erases the line, so the next output starts clean; an
 * update after end draws it again (bench erases it before each table row).
 * None of these can fail.
 */
typedef struct kvl_progress {
    FILE *f; /* NULL: quiet */
    char label[96];
    int shown; /* percentage on the line now; -1: none drawn */
} kvl_progress;
/* On stderr when it is a terminal, else quiet. */
void kvl_progress_begin(kvl_progress *p, const char *label);
/* On f (NULL: quiet), whatever it is: for tests and callers that decide. */
void kvl_progress_begin_to(kvl_progress *p, FILE *f, const char *label);
void kvl_progress_update(kvl_progress *p, uint64_t done, uint64_t total);
void kvl_progress_end(kvl_progress *p);

#endif
