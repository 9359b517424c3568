/* The workloads of kvllm bench serve (bench_workload.h). Pure functions
 * of their seeds: no allocation, no I/O. */
#include "cli/bench_workload.h"

uint64_t kvl_wl_rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

long long kvl_wl_rng_range(uint64_t *s, long long lo, long long hi) {
    return lo + (long long)(kvl_wl_rng_next(s) % (uint64_t)(hi - lo + 1));
}

static int32_t draw_id(uint64_t *s, const kvl_model_info *mi) {
    int32_t t;
    do
        t = (int32_t)kvl_wl_rng_range(s, 0, mi->n_vocab - 1);
    while ((t == mi->bos || t == mi->eos) && mi->n_vocab > 2);
    return t;
}

static uint64_t own_stream(uint64_t seed, size_t i) {
    return seed * 0x100000001b3ull + (uint64_t)i + 1;
}

void kvl_wl_prompt(uint64_t seed, long long shared_prefix, const kvl_model_info *mi, size_t i,
                   int32_t *toks, int32_t n) {
    uint64_t s = own_stream(seed, i);
    uint64_t sp = seed * 0x100000001b3ull; /* the shared prefix's stream */
    toks[0] = mi->bos;
    for (int32_t k = 1; k < n; k++)
        toks[k] = draw_id(k < shared_prefix ? &sp : &s, mi);
}

int32_t kvl_wl_chat_prompt(uint64_t seed, long long shared_prefix, const kvl_model_info *mi,
                           size_t i, int32_t *hist, int32_t n_hist, const int32_t *answer,
                           int32_t n_answer, int32_t n_user) {
    int32_t n = n_hist;
    if (n == 0) { /* BOS and the system prompt */
        int32_t head = 1 + (int32_t)shared_prefix;
        kvl_wl_prompt(seed, shared_prefix, mi, i, hist, head);
        n = head;
    }
    for (int32_t k = 0; k < n_answer; k++)
        hist[n++] = answer[k];
    uint64_t s = own_stream(seed, i);
    for (int32_t k = 0; k < n_user; k++)
        hist[n++] = draw_id(&s, mi);
    return n;
}

int64_t kvl_wl_chat_len(long long shared_prefix, int64_t user_tokens_sum,
                        int64_t answer_tokens_sum) {
    return 1 + shared_prefix + user_tokens_sum + answer_tokens_sum;
}
