/*
 * Token sampling from a logits vector: repetition penalty, then greedy
 * (temperature 0) or temperature + top-k + top-p + min-p with a seeded
 * generator. All buffers are allocated in kvl_sampler_init; sampling never
 * allocates.
 */
#ifndef KVL_SAMPLER_H
#define KVL_SAMPLER_H

#include "core/core.h"

typedef struct kvl_sampler_params {
    float temperature;       /* 0 = greedy (argmax); default 0.8 */
    int32_t top_k;           /* 0 = off; default 40 */
    float top_p;             /* 1 = off; default 0.95 */
    float min_p;             /* 0 = off; default 0.05 */
    float repeat_penalty;    /* 1 = off; default 1.0 */
    int32_t repeat_last_n;   /* how many recent tokens the penalty sees; default 64 */
    float presence_penalty;  /* [-2, 2], 0 = off: subtracted once from every token generated */
    float frequency_penalty; /* [-2, 2], 0 = off: subtracted once per time it was generated */
    uint64_t seed;
} kvl_sampler_params;

kvl_sampler_params kvl_sampler_defaults(void);
/* Checks every field's range; the message names the field and the range. */
kvl_status kvl_sampler_params_validate(const kvl_sampler_params *p, kvl_error *err);

typedef struct kvl_sampler kvl_sampler;

kvl_status kvl_sampler_init(const kvl_sampler_params *p, int32_t n_vocab, kvl_sampler **out,
                            kvl_error *err);
void kvl_sampler_free(kvl_sampler *s);
/* Pick the next token. logits (n_vocab) is modified in place (penalty and
 * temperature). recent: the last n_recent tokens of the sequence. */
int32_t kvl_sampler_sample(kvl_sampler *s, float *logits, const int32_t *recent, int32_t n_recent);
/* The OpenAI penalties over the tokens generated so far (gen, n_gen):
 * logit -= frequency_penalty * count + presence_penalty * (count > 0).
 * Call before kvl_sampler_sample; a no-op when both are 0. */
void kvl_sampler_penalize_output(kvl_sampler *s, float *logits, const int32_t *gen, int32_t n_gen);
/* Index of the largest value (the first on ties). */
int32_t kvl_argmax(const float *x, int32_t n);

#endif
