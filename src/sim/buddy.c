/*
 * The buddy allocator (buddy.h). Free runs are kept per order in plain
 * arrays; each order's array has room for every run of that order the
 * arena could hold (n_blocks >> order + 1), so no call allocates.
 */
#include "sim/buddy.h"

#include <stdlib.h>
#include <string.h>

static void push(kvl_buddy *b, int32_t k, uint32_t off) { b->free_[k][b->n_free[k]++] = off; }

/* Remove off from order k's free runs; false when it is not there. */
static bool take(kvl_buddy *b, int32_t k, uint32_t off) {
    for (uint32_t i = 0; i < b->n_free[k]; i++)
        if (b->free_[k][i] == off) {
            b->free_[k][i] = b->free_[k][--b->n_free[k]];
            return true;
        }
    return false;
}

kvl_status kvl_buddy_init(kvl_buddy *b, uint32_t n_blocks, kvl_error *err) {
    memset(b, 0, sizeof *b);
    if (n_blocks == 0)
        return kvl_errorf(err, KVL_E_INVALID, "buddy: the arena has no block");
    b->n_blocks = n_blocks;
    while (b->top + 1 < KVL_BUDDY_ORDERS && (n_blocks >> (b->top + 1)) > 0)
        b->top++;
    for (uint32_t k = 0; k <= b->top; k++)
        if (!(b->free_[k] = malloc(((size_t)(n_blocks >> k) + 1) * sizeof(uint32_t)))) {
            kvl_buddy_free_all(b);
            return kvl_errorf(err, KVL_E_NOMEM, "buddy: out of memory for %u blocks", n_blocks);
        }
    uint32_t off = 0; /* aligned chunks, largest first */
    for (int32_t k = (int32_t)b->top; k >= 0; k--)
        if (n_blocks & (1u << k)) {
            push(b, k, off);
            off += 1u << k;
        }
    return KVL_OK;
}

void kvl_buddy_free_all(kvl_buddy *b) {
    for (int k = 0; k < KVL_BUDDY_ORDERS; k++)
        free(b->free_[k]);
    memset(b, 0, sizeof *b);
}

int32_t kvl_buddy_order(const kvl_buddy *b, uint64_t n) {
    int32_t k = 0;
    while (k <= (int32_t)b->top && ((uint64_t)1 << k) < n)
        k++;
    return k <= (int32_t)b->top ? k : -1;
}

int64_t kvl_buddy_alloc(kvl_buddy *b, int32_t order) {
    if (order < 0 || order > (int32_t)b->top)
        return -1;
    int32_t k = order;
    while (k <= (int32_t)b->top && b->n_free[k] == 0)
        k++;
    if (k > (int32_t)b->top)
        return -1;
    uint32_t best = 0; /* the lowest offset of that order */
    for (uint32_t i = 1; i < b->n_free[k]; i++)
        if (b->free_[k][i] < b->free_[k][best])
            best = i;
    uint32_t off = b->free_[k][best];
    b->free_[k][best] = b->free_[k][--b->n_free[k]];
    while (k > order) { /* split: keep the low half, free the high one */
        k--;
        push(b, k, off + (1u << k));
    }
    b->used += 1u << order;
    return off;
}

void kvl_buddy_release(kvl_buddy *b, uint32_t off, int32_t order) {
    b->used -= 1u << order;
    int32_t k = order;
    while (k < (int32_t)b->top && take(b, k, off ^ (1u << k)))
        off &= ~(1u << k++); /* merged with its buddy */
    push(b, k, off);
}
