/*
 * The OpenAI-compatible JSON: requests in (completions, chat completions,
 * tokenize, detokenize), responses and server-sent events out, and the
 * OpenAI error object. One srv_call is one HTTP request; libmicrohttpd
 * serves a connection from one thread at a time, so a call's fields need
 * no lock (its srv_req mailbox has one).
 */
#ifndef KVL_SERVER_OPENAI_H
#define KVL_SERVER_OPENAI_H

#include "server/server_impl.h"

/* A parsed generation request (owns its strings and tokens). */
typedef struct oai_req {
    bool chat, stream, include_usage, logprobs, ignore_eos;
    int32_t n, max_tokens, top_k, priority;
    int32_t top_logprobs; /* alternatives per token (chat: top_logprobs; completions: logprobs) */
    float temperature, top_p, min_p, presence_penalty, frequency_penalty;
    uint64_t seed, session;
    char *stop[KVL_MAX_STOPS];
    int32_t n_stop;
    int32_t *toks; /* the prompt (BOS first), (n_toks) */
    size_t n_toks;
    char user[SRV_USER_MAX];
    char cache_salt[SRV_USER_MAX]; /* prefix-cache namespace; "" = none */
    bool has_salt;
    kvl_kv_policy kv_policy; /* kvllm extension "kv_policy" (docs/eviction.md); full by default */
} oai_req;

/* What one sample produced so far (non-streamed), or its stream state. */
typedef struct oai_sample {
    srv_buf text;
    kvl_finish_reason reason; /* NONE until its SAMPLE_END (or the FINAL) */
    bool role_sent;           /* stream, chat: the first chunk went out */
    char tail[4];             /* the start of a UTF-8 character cut by the last event */
    size_t n_tail;
    int32_t *toks; /* logprobs: the tokens and their log-probabilities */
    float *lps;
    kvl_token_logprob *tops; /* (cap_toks x the request's top_logprobs) */
    size_t n_toks, cap_toks;
} oai_sample;

typedef struct srv_call {
    kvl_server *s;
    int route;
    int asset; /* R_WEB: the page file asked for (web.h), -1 none */
    srv_buf body;
    bool too_big;
    bool close; /* answer with Connection: close */
    bool submitted, answered;
    oai_req o;
    srv_req *req;
    struct MHD_Connection *conn;
    oai_sample *smp; /* (o.n) */
    bool final_seen;
    kvl_finish_reason reason;
    kvl_status status;
    kvl_usage usage;
    char message[192];
    char id[48];
    long long created;
    srv_buf out; /* stream: rendered bytes not yet sent */
    size_t out_pos;
    bool stream_done; /* stream: [DONE] rendered */
} srv_call;

/* Each returns an HTTP status; on anything but 200, out holds the OpenAI
 * error object. */
unsigned oai_parse(kvl_server *s, bool chat, const char *body, size_t n, oai_req *o, srv_buf *out);
void oai_req_free(oai_req *o);
/* Submit c->o (after oai_parse): 200, or 429 (queue full), 400 (refused
 * with the engine's message), 500. */
unsigned oai_submit(srv_call *c, struct MHD_Connection *conn, srv_buf *out);
/* Take a batch of routed events: streamed calls render SSE into c->out,
 * others accumulate. false on OOM. */
bool oai_consume(srv_call *c, const srv_mail *m, size_t n);
/* The non-streamed answer once the FINAL was consumed. */
unsigned oai_final(srv_call *c, srv_buf *out);
void oai_call_free(srv_call *c);

unsigned oai_models(kvl_server *s, srv_buf *out);
unsigned oai_tokenize(kvl_server *s, const char *body, size_t n, srv_buf *out);
unsigned oai_detokenize(kvl_server *s, const char *body, size_t n, srv_buf *out);
/* The OpenAI error object. param and code may be NULL. false on OOM. */
bool oai_error(srv_buf *out, const char *type, const char *param, const char *code, const char *fmt,
               ...) __attribute__((format(printf, 5, 6)));

#endif
