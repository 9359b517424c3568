/*
 * kvllm serve: an OpenAI-compatible HTTP server over the engine's public
 * API (kvllm.h). The CLI (src/cli/serve.c) drives it:
 *
 *     kvl_server_init    bind the port, start the HTTP threads; every
 *                        endpoint answers 503 ("loading") until attached
 *     kvl_server_attach  start the engine thread and the event dispatcher;
 *                        /health turns 200
 *     kvl_server_shutdown  stop accepting, let open requests finish for the
 *                        grace period, cancel the rest, deliver every final
 *                        response, stop all threads (the engine thread too)
 *     kvl_server_free
 *
 * docs/server.md has the endpoints, the fields, the limits and the metrics.
 */
#ifndef KVL_SERVER_H
#define KVL_SERVER_H

#include "kvllm.h"

#include <stdint.h>
#include <stdio.h>

typedef struct kvl_server kvl_server;

typedef struct kvl_server_params {
    const char *host;          /* IPv4 address or "localhost"; default 127.0.0.1 */
    int32_t port;              /* 0 = any free port (the report says which) */
    int32_t http_threads;      /* libmicrohttpd's thread pool; default 2 */
    int32_t max_connections;   /* open connections; default 512 (503 beyond) */
    size_t max_body;           /* request body bytes; default 1 MiB (413 beyond) */
    size_t max_header;         /* request line + header fields, bytes; default 32 KiB (431) */
    int32_t max_header_count;  /* header fields; default 100 (431 beyond) */
    int32_t timeout_s;         /* inactivity (no byte moved) per connection; default 30 */
    int32_t keepalive_s;       /* idle between requests (to the next request line); default 10 */
    int32_t header_s;          /* request line to the end of the headers; default 10 */
    int32_t body_s;            /* end of the headers to the end of the body; default 30 */
    const char *model_id;      /* the name /v1/models lists and requests must use */
    const char *api_key;       /* when not NULL: the /v1 endpoints, /tokenize and /detokenize need
                                "Authorization: Bearer KEY" (401 otherwise) */
    const char *chat_template; /* a kvl_chat_template_name, or NULL: the model file's */
} kvl_server_params;

kvl_server_params kvl_server_defaults(void);

/* Bind and start serving "loading". On error nothing is left running and
 * err names the cause (e.g. the port in use). */
kvl_status kvl_server_init(const kvl_server_params *p, kvl_server **out, kvl_error *err);
/* The port actually bound. This function can't fail. */
int32_t kvl_server_port(const kvl_server *s);
/* Start serving model m with engine e (not yet started; the server starts
 * its thread and owns the stopping of it, never the freeing). */
kvl_status kvl_server_attach(kvl_server *s, const kvl_model *m, kvl_engine *e, kvl_error *err);
/* Stop accepting; wait up to grace_s for open requests to end; cancel what
 * is still open; wait until every client got its final response; stop the
 * HTTP threads, the dispatcher and the engine thread. Progress lines go to
 * log. This function can't fail. */
void kvl_server_shutdown(kvl_server *s, double grace_s, FILE *log);
void kvl_server_free(kvl_server *s);

#endif
