/* Stop-string hold-back (detok.h). Work per token: O(stops x pending). */
#include "engine/detok.h"

#include <string.h>

static size_t hold_len(const char *p, size_t n, const char *const *stops, int32_t n_stops) {
    size_t hold = 0;
    for (int32_t i = 0; i < n_stops; i++) {
        size_t sl = strlen(stops[i]);
        for (size_t k = sl - 1; k > hold; k--)
            if (k <= n && memcmp(p + n - k, stops[i], k) == 0) {
                hold = k;
                break;
            }
    }
    return hold;
}

bool kvl_detok_push(kvl_detok *d, const char *piece, size_t n, const char *const *stops,
                    int32_t n_stops, char *out, size_t *n_out) {
    KVL_ASSERT(n <= KVL_DETOK_PIECE_MAX && d->n_pend < KVL_MAX_STOP_LEN);
    memcpy(d->pend + d->n_pend, piece, n);
    d->n_pend += n;
    size_t cut = SIZE_MAX;
    for (int32_t i = 0; i < n_stops; i++) {
        const char *hit = memmem(d->pend, d->n_pend, stops[i], strlen(stops[i]));
        if (hit && (size_t)(hit - d->pend) < cut)
            cut = (size_t)(hit - d->pend);
    }
    if (cut != SIZE_MAX) {
        memcpy(out, d->pend, cut);
        *n_out = cut;
        d->n_pend = 0;
        return true;
    }
    size_t keep = hold_len(d->pend, d->n_pend, stops, n_stops);
    size_t give = d->n_pend - keep;
    memcpy(out, d->pend, give);
    *n_out = give;
    memmove(d->pend, d->pend + give, keep);
    d->n_pend = keep;
    return false;
}

void kvl_detok_flush(kvl_detok *d, char *out, size_t *n_out) {
    memcpy(out, d->pend, d->n_pend);
    *n_out = d->n_pend;
    d->n_pend = 0;
}
