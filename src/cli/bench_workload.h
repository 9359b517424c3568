/*
 * The workloads of kvllm bench serve, defined once so that a load
 * generator over HTTP can send exactly the same requests: the same token
 * ids from the same seeds.
 *
 * Token ids are BOS, then ids drawn uniformly from the vocabulary (never
 * BOS or EOS) from splitmix64 streams: one per request (seed, i), and one
 * for the shared prefix (seed) that every prompt starts with
 * (--shared-prefix: a system prompt).
 *
 * Multi-turn chat (--chat-sessions S --chat-turns T): request i is turn
 * i / S of session i % S (sessions interleaved, turn by turn). Its prompt
 * is the whole conversation so far, as a chat client resends it:
 *
 *   turn 0:  BOS | system (shared prefix) | user_0
 *   turn t:  prompt of turn t-1 | answer of turn t-1 | user_t
 *
 * where user_t is the request's own stream (its --input-len tokens) and
 * the answer is the tokens the model generated for the previous turn. So
 * a turn can be sent only after the previous one of its session ended.
 */
#ifndef KVL_CLI_BENCH_WORKLOAD_H
#define KVL_CLI_BENCH_WORKLOAD_H

#include "kvllm.h"

#include <stddef.h>
#include <stdint.h>

uint64_t kvl_wl_rng_next(uint64_t *s);
/* Uniform in [lo, hi]. */
long long kvl_wl_rng_range(uint64_t *s, long long lo, long long hi);

/* Request i's prompt of n tokens: BOS, the first shared_prefix ids from
 * the shared stream, the rest from request i's stream. */
void kvl_wl_prompt(uint64_t seed, long long shared_prefix, const kvl_model_info *mi, size_t i,
                   int32_t *toks, int32_t n);

/* A chat turn's prompt, built in place: hist holds the previous turn's
 * prompt (n_hist tokens; 0 for turn 0). Appends answer (n_answer tokens;
 * none for turn 0), then request i's user message of n_user tokens (turn
 * 0: BOS and the shared prefix first). Returns the new length. hist must
 * have room (kvl_wl_chat_len). */
int32_t kvl_wl_chat_prompt(uint64_t seed, long long shared_prefix, const kvl_model_info *mi,
                           size_t i, int32_t *hist, int32_t n_hist, const int32_t *answer,
                           int32_t n_answer, int32_t n_user);
/* The longest prompt of a session: its last turn's, with every answer at
 * its max_tokens. */
int64_t kvl_wl_chat_len(long long shared_prefix, int64_t user_tokens_sum,
                        int64_t answer_tokens_sum);

#endif
