/*
 * The swap area: one mapping of n_blocks * block_bytes bytes and a stack
 * of free ids. The mapping is anonymous, or a file of exactly that size
 * mapped shared (written back by the kernel as it likes; it is scratch,
 * never read by another process). Nothing here allocates after init.
 */
#include "kv/kv_swap.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

struct kvl_kv_swap {
    uint8_t *data; /* (n_blocks, block_bytes) */
    size_t map_bytes, block_bytes;
    uint32_t n_blocks, n_free;
    uint32_t *free_ids; /* (n_blocks) stack: free_ids[0..n_free) */
};

/* The ids of budget / block_bytes blocks, no bytes yet. */
static kvl_status swap_ids(size_t block_bytes, size_t budget, kvl_kv_swap **out, kvl_error *err) {
    if (block_bytes == 0)
        return kvl_errorf(err, KVL_E_INVALID, "swap: block_bytes is 0");
    size_t n = budget / block_bytes;
    if (n > UINT32_MAX - 1)
        return kvl_errorf(err, KVL_E_LIMIT, "swap: %zu blocks > %u", n, UINT32_MAX - 1);
    kvl_kv_swap *sw = calloc(1, sizeof *sw);
    if (!sw || !(sw->free_ids = malloc((n ? n : 1) * sizeof *sw->free_ids))) {
        free(sw);
        return kvl_errorf(err, KVL_E_NOMEM, "swap: out of memory for %zu block ids", n);
    }
    sw->block_bytes = block_bytes;
    sw->n_blocks = sw->n_free = (uint32_t)n;
    sw->map_bytes = n * block_bytes;
    for (uint32_t i = 0; i < sw->n_blocks; i++) /* pop order 0, 1, 2, ... */
        sw->free_ids[i] = sw->n_blocks - 1 - i;
    *out = sw;
    return KVL_OK;
}

kvl_status kvl_kv_swap_init_meta(size_t block_bytes, size_t budget, kvl_kv_swap **out,
                                 kvl_error *err) {
    return swap_ids(block_bytes, budget, out, err);
}

kvl_status kvl_kv_swap_init(size_t block_bytes, size_t budget, const char *path, kvl_kv_swap **out,
                            kvl_error *err) {
    kvl_kv_swap *sw;
    kvl_status st = swap_ids(block_bytes, budget, &sw, err);
    if (st)
        return st;
    size_t n = sw->n_blocks;
    if (n == 0) {
        *out = sw;
        return KVL_OK;
    }
    void *m = MAP_FAILED;
    if (!path) {
        m = mmap(NULL, sw->map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            free(sw->free_ids);
            free(sw);
            return kvl_errorf(err, KVL_E_NOMEM, "swap: cannot map %zu bytes: %s", n * block_bytes,
                              strerror(e));
        }
    } else {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        const char *what = "open";
        if (fd >= 0) {
            what = "ftruncate";
            if (ftruncate(fd, (off_t)sw->map_bytes) == 0) {
                what = "mmap";
                m = mmap(NULL, sw->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            }
        }
        int e = errno;
        if (fd >= 0)
            close(fd);
        if (m == MAP_FAILED) {
            free(sw->free_ids);
            free(sw);
            return kvl_errorf(err, KVL_E_IO, "swap file '%s': %s (%zu bytes): %s", path, what,
                              n * block_bytes, strerror(e));
        }
    }
    sw->data = m;
    *out = sw;
    return KVL_OK;
}

void kvl_kv_swap_free(kvl_kv_swap *sw) {
    if (!sw)
        return;
    if (sw->data)
        munmap(sw->data, sw->map_bytes);
    free(sw->free_ids);
    free(sw);
}

uint32_t kvl_kv_swap_n_blocks(const kvl_kv_swap *sw) { return sw ? sw->n_blocks : 0; }
uint32_t kvl_kv_swap_n_free(const kvl_kv_swap *sw) { return sw ? sw->n_free : 0; }
size_t kvl_kv_swap_block_bytes(const kvl_kv_swap *sw) { return sw ? sw->block_bytes : 0; }

kvl_status kvl_kv_swap_alloc(kvl_kv_swap *sw, uint32_t n, uint32_t *ids, kvl_error *err) {
    if (!sw || n > sw->n_free)
        return kvl_errorf(err, KVL_E_NO_KV, "swap: %u blocks needed, %u of %u free", n,
                          kvl_kv_swap_n_free(sw), kvl_kv_swap_n_blocks(sw));
    for (uint32_t i = 0; i < n; i++)
        ids[i] = sw->free_ids[--sw->n_free];
    return KVL_OK;
}

void kvl_kv_swap_release(kvl_kv_swap *sw, const uint32_t *ids, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        KVL_ASSERT(ids[i] < sw->n_blocks && sw->n_free < sw->n_blocks);
        sw->free_ids[sw->n_free++] = ids[i];
    }
}

uint8_t *kvl_kv_swap_block(kvl_kv_swap *sw, uint32_t id) {
    KVL_ASSERT(id < sw->n_blocks);
    return sw->data ? sw->data + (size_t)id * sw->block_bytes : NULL;
}
