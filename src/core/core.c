/*
 * core: error formatting, assertions, file mapping, clock and half-precision
 * conversion. Nothing here reads model data; it only moves bytes and numbers.
 */
#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *kvl_status_str(kvl_status s) {
    switch (s) {
    case KVL_OK: return "ok";
    case KVL_E_NOMEM: return "out of memory";
    case KVL_E_INVALID: return "invalid argument";
    case KVL_E_FORMAT: return "bad file format";
    case KVL_E_IO: return "i/o error";
    case KVL_E_LIMIT: return "limit exceeded";
    case KVL_E_NO_KV: return "not enough KV cache";
    case KVL_E_CANCELLED: return "cancelled";
    case KVL_E_UNSUPPORTED: return "unsupported";
    case KVL_E_BUSY: return "busy, retry later";
    case KVL_E_NOT_FOUND: return "not found";
    }
    return "unknown status";
}

kvl_status kvl_errorf(kvl_error *err, kvl_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->status = st;
    }
    return st;
}

void kvl_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "kvllm: internal invariant failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

/* Transparent huge pages switched off for the whole system (or absent). */
static bool thp_disabled(void) {
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f)
        return true;
    char buf[128] = {0};
    bool never = !fgets(buf, sizeof buf, f) || strstr(buf, "[never]") != NULL;
    fclose(f);
    return never;
}

/* "label (1.10 GiB)" for a file of KVL_PROGRESS_FILE_MIN bytes or more;
 * quiet for smaller ones (they take no time) or without a label. */
#define KVL_PROGRESS_FILE_MIN ((size_t)64 << 20)
static void progress_for_file(kvl_progress *pr, const char *label, size_t size) {
    char buf[96];
    snprintf(buf, sizeof buf, "%s (%.2f GiB)", label ? label : "", (double)size / (1u << 30));
    if (label && size >= KVL_PROGRESS_FILE_MIN)
        kvl_progress_begin(pr, buf);
    else
        kvl_progress_begin_to(pr, NULL, buf);
}

/* Bytes [begin, end) of a file into dst + begin (load_private). done: how
 * far it got; err: errno of a failed read (0 with done < end: the file
 * ended early). */
typedef struct read_part {
    int fd;
    uint8_t *dst;
    size_t begin, end, done;
    int err;
} read_part;

/* Read a part; with pr, show the share of total read (estimated from this
 * part's progress, one of n_parts reading at the same pace). */
static void read_range(read_part *rp, kvl_progress *pr, size_t total, int n_parts) {
    const size_t chunk = (size_t)64 << 20;
    rp->done = rp->begin;
    while (rp->done < rp->end) {
        const size_t want = rp->end - rp->done < chunk ? rp->end - rp->done : chunk;
        ssize_t r = pread(rp->fd, rp->dst + rp->done, want, (off_t)rp->done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            rp->err = r < 0 ? errno : 0;
            return;
        }
        rp->done += (size_t)r;
        if (pr)
            kvl_progress_update(pr, (rp->done - rp->begin) * (size_t)n_parts, total);
    }
}

static void *read_part_main(void *arg) {
    read_range(arg, NULL, 1, 1); /* the other part shows the progress */
    return NULL;
}

/* Copy the open file into a private region aligned to 2 MiB and advised
 * MADV_HUGEPAGE, then make it read-only. KVL_E_NOMEM / KVL_E_UNSUPPORTED
 * when the region cannot be had (the caller may map instead), KVL_E_IO
 * when reading fails. */
static kvl_status load_private(int fd, const char *path, size_t size, const char *label,
                               kvl_mapped_file *out, kvl_error *err) {
    const size_t huge = (size_t)2 << 20;
    size_t len;
    if (kvl_align_up(size, huge, &len) || len > SIZE_MAX - huge)
        return kvl_errorf(err, KVL_E_NOMEM, "%s: %zu bytes is too large to copy", path, size);
    uint8_t *raw =
        mmap(NULL, len + huge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return kvl_errorf(err, KVL_E_NOMEM, "%s: cannot allocate %zu bytes for the weights: %s",
                          path, len, strerror(errno));
    /* keep the 2 MiB-aligned [al, al + len) of the over-allocation */
    uint8_t *al = (uint8_t *)(((uintptr_t)raw + huge - 1) & ~(uintptr_t)(huge - 1));
    if (al > raw)
        munmap(raw, (size_t)(al - raw));
    if (raw + len + huge > al + len)
        munmap(al + len, (size_t)(raw + len + huge - (al + len)));
    if (madvise(al, len, MADV_HUGEPAGE) != 0) {
        int e = errno;
        munmap(al, len);
        return kvl_errorf(err, KVL_E_UNSUPPORTED, "%s: madvise(MADV_HUGEPAGE): %s", path,
                          strerror(e));
    }
    /* two readers for large files: most of the time goes to faulting in
     * and zeroing fresh pages, which runs in parallel */
    read_part parts[2] = {{.fd = fd, .dst = al, .begin = 0, .end = size},
                          {.fd = fd, .dst = al, .begin = size, .end = size, .done = size}};
    pthread_t th;
    bool two = false;
    if (size >= KVL_LOAD_HUGE_MIN) {
        const size_t mid = size / 2 / huge * huge;
        parts[0].end = parts[1].begin = mid;
        two = pthread_create(&th, NULL, read_part_main, &parts[1]) == 0;
        if (!two) { /* no second thread: read it all here */
            parts[0].end = size;
            parts[1].begin = size;
        }
    }
    kvl_progress pr;
    progress_for_file(&pr, label, size);
    read_range(&parts[0], &pr, size, two ? 2 : 1);
    if (two)
        pthread_join(th, NULL);
    kvl_progress_end(&pr);
    for (int i = 0; i < 2; i++) {
        const read_part *rp = &parts[i];
        if (rp->done == rp->end)
            continue;
        munmap(al, len);
        if (rp->err == 0)
            return kvl_errorf(err, KVL_E_IO, "%s: file ended after %zu of %zu bytes", path,
                              rp->done, size);
        return kvl_errorf(err, KVL_E_IO, "%s: read at byte %zu: %s", path, rp->done,
                          strerror(rp->err));
    }
    if (mprotect(al, len, PROT_READ) != 0) {
        int e = errno;
        munmap(al, len);
        return kvl_errorf(err, KVL_E_NOMEM, "%s: mprotect: %s", path, strerror(e));
    }
    out->data = al;
    out->size = size;
    out->anon_len = len;
    return KVL_OK;
}

kvl_status kvl_load_file(const char *path, kvl_load_mode mode, const char *label,
                         kvl_mapped_file *out, kvl_error *err) {
    if (mode != KVL_LOAD_AUTO && mode != KVL_LOAD_MMAP && mode != KVL_LOAD_HUGE)
        return kvl_errorf(err, KVL_E_INVALID, "%s: load mode %d is not auto, mmap or huge", path,
                          (int)mode);
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
     * writer before the regular-file check below could refuse it (it has
     * no effect on regular files) */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return kvl_errorf(err, KVL_E_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kvl_errorf(err, KVL_E_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kvl_errorf(err, KVL_E_IO, "%s: not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    *out = (kvl_mapped_file){0};
    if (size == 0) {
        close(fd);
        return KVL_OK;
    }
    if (mode == KVL_LOAD_HUGE ||
        (mode == KVL_LOAD_AUTO && size >= KVL_LOAD_HUGE_MIN && !thp_disabled())) {
        kvl_error e2 = {0};
        kvl_status s = load_private(fd, path, size, label, out, &e2);
        if (s == KVL_OK || mode == KVL_LOAD_HUGE || s == KVL_E_IO) {
            close(fd);
            if (s != KVL_OK && err)
                *err = e2;
            return s;
        }
        /* auto: no memory for a copy, or no huge pages; map the file */
    }
    void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        return kvl_errorf(err, KVL_E_IO, "%s: cannot map %zu bytes: %s", path, size, strerror(e));
    }
    close(fd);
    out->data = p;
    out->size = size;
    return KVL_OK;
}

kvl_status kvl_map_file(const char *path, kvl_mapped_file *out, kvl_error *err) {
    return kvl_load_file(path, KVL_LOAD_MMAP, NULL, out, err);
}

void kvl_unmap_file(kvl_mapped_file *f) {
    if (f && f->data)
        munmap((void *)f->data, f->anon_len ? f->anon_len : f->size);
    if (f)
        *f = (kvl_mapped_file){0};
}

long long kvl_proc_kb(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    const size_t kl = strlen(key);
    char line[256];
    long long kb = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':' && sscanf(line + kl + 1, "%lld", &kb) == 1)
            break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

double kvl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

double kvl_quantile(const double *v, size_t n, double q) {
    if (n == 0)
        return 0;
    q = q < 0 ? 0 : q > 1 ? 1 : q;
    double idx = q * (double)(n - 1);
    size_t lo = (size_t)floor(idx), hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (idx - (double)lo);
}

float kvl_fp16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while ((man & 0x400) == 0);
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t kvl_f32_to_fp16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t absu = u & 0x7fffffffu;
    if (absu > 0x7f800000u) /* NaN: keep it quiet */
        return sign | 0x7e00;
    if (absu >= 0x477ff000u) /* rounds to >= 65520: infinity */
        return sign | 0x7c00;
    if (absu < 0x38800000u) { /* below the smallest normal half: subnormal */
        /* value = absf; half subnormal unit is 2^-24 */
        float a;
        memcpy(&a, &absu, 4);
        float q = a * 16777216.0f; /* in units of 2^-24, exact scaling */
        float r = nearbyintf(q);   /* round to nearest even (default mode) */
        return sign | (uint16_t)r;
    }
    uint32_t exp = ((absu >> 23) - 127 + 15);
    uint32_t man = absu & 0x7fffff;
    uint32_t h = (exp << 10) | (man >> 13);
    uint32_t rest = man & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
        h++;
    return sign | (uint16_t)h;
}

uint16_t kvl_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fff + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

bool kvl_stderr_is_tty(void) { return isatty(2) != 0; }

void kvl_progress_begin_to(kvl_progress *p, FILE *f, const char *label) {
    p->f = f;
    snprintf(p->label, sizeof p->label, "%s", label ? label : "");
    p->shown = -1;
}

void kvl_progress_begin(kvl_progress *p, const char *label) {
    kvl_progress_begin_to(p, kvl_stderr_is_tty() ? stderr : NULL, label);
}

void kvl_progress_update(kvl_progress *p, uint64_t done, uint64_t total) {
    if (!p->f)
        return;
    const int pct = total == 0 || done >= total ? 100 : (int)((double)done * 100.0 / (double)total);
    if (pct == p->shown)
        return;
    fprintf(p->f, "\r%s: %3d%%", p->label, pct);
    fflush(p->f);
    p->shown = pct;
}

void kvl_progress_end(kvl_progress *p) {
    if (!p->f || p->shown < 0)
        return;
    fputs("\r\033[K", p->f); /* back to the start, erase to the end of the line */
    fflush(p->f);
    p->shown = -1;
}

void kvl_prefault_with_progress(const kvl_mapped_file *f, const char *label) {
    if (!f->data || f->anon_len || f->size < KVL_PROGRESS_FILE_MIN || !kvl_stderr_is_tty())
        return;
    kvl_progress pr;
    progress_for_file(&pr, label, f->size);
    const size_t page = 4096;
    volatile uint8_t sink = 0;
    for (size_t off = 0; off < f->size; off += page) {
        sink ^= f->data[off];
        if (off % ((size_t)1 << 24) == 0) /* every 16 MiB */
            kvl_progress_update(&pr, off, f->size);
    }
    (void)sink;
    kvl_progress_end(&pr);
}
