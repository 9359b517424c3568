/*
 * The HTTP side of kvllm serve: a libmicrohttpd daemon (epoll, an internal
 * thread pool, suspend/resume; never a thread per connection), the routes,
 * the non-streamed and streamed generation calls, start-up and shutdown.
 *
 * A generation call: parse (openai.c) -> submit and register (dispatch.c)
 * -> then either
 *   non-streamed: the access handler drains the mailbox and suspends the
 *     connection while it is empty; the dispatcher resumes it when mail
 *     arrives; on the FINAL it answers once;
 *   streamed: 200 with a content-reader response; the reader drains the
 *     mailbox into SSE bytes, suspends while there is nothing to send, and
 *     ends after `data: [DONE]`.
 * No HTTP thread ever blocks on the engine: submit and cancel take the
 * engine's lock briefly, nothing waits for a step.
 *
 * A client that goes away: libmicrohttpd reports the request completed
 * with an error (a failed write), or the dispatcher's hang-up probe finds
 * the suspended socket closed; either way the engine request is cancelled
 * and its remaining events are dropped when the FINAL comes.
 *
 * Connections: a watchdog thread enforces the read deadlines (keep-alive,
 * headers, body) that libmicrohttpd lacks (it has one inactivity timeout,
 * which a client dribbling a byte at a time never trips), and a
 * connection opened past max_connections gets 503 for its request.
 *
 * Invariants: every call that submitted answers exactly once (one JSON
 * response, or one stream ending in [DONE]) unless its client is gone; no
 * connection is suspended when the daemon stops (shutdown waits for every
 * generation call to complete first).
 */
#include "core/core.h"
#include "server/openai.h"
#include "server/web.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    R_HEALTH = 1,
    R_MODELS,
    R_METRICS,
    R_KV,
    R_COMPLETIONS,
    R_CHAT,
    R_TOKENIZE,
    R_DETOKENIZE,
    R_KV_MAP,
    R_KV_HISTORY,
    R_PLAN,
    R_WEB,
    R_NOT_FOUND,
};

static const struct {
    const char *path, *method;
    int route;
} routes[] = {
    /* a path ending in '/' (but "/") names a folder: a prefix */
    {"/health", "GET", R_HEALTH},
    {"/v1/models", "GET", R_MODELS},
    {"/metrics", "GET", R_METRICS},
    {"/v1/kv", "GET", R_KV},
    {"/v1/completions", "POST", R_COMPLETIONS},
    {"/v1/chat/completions", "POST", R_CHAT},
    {"/tokenize", "POST", R_TOKENIZE},
    {"/detokenize", "POST", R_DETOKENIZE},
    {"/v1/kv/map", "GET", R_KV_MAP},
    {"/v1/kv/history", "GET", R_KV_HISTORY},
    {"/v1/plan", "GET", R_PLAN},
    {"/", "GET", R_WEB},
    {"/static/", "GET", R_WEB},
};
#define N_ROUTES ((int)(sizeof routes / sizeof routes[0]))

kvl_server_params kvl_server_defaults(void) {
    return (kvl_server_params){.host = "127.0.0.1",
                               .port = 8080,
                               .http_threads = 2,
                               .max_connections = 512,
                               .max_body = 1u << 20,
                               .max_header = 32u << 10,
                               .max_header_count = 100,
                               .timeout_s = 30,
                               .keepalive_s = 10,
                               .header_s = 10,
                               .body_s = 30,
                               .model_id = "kvllm"};
}

/* ---- connections: the limit and the read deadlines ----
 *
 * Each connection is in one phase; the watchdog thread shuts down (both
 * directions) a connection that stays in a phase with a deadline past it,
 * and libmicrohttpd then reads EOF and closes it:
 *
 *   accept / last response sent -- request line -- headers end -- body end -- response sent
 *   |<------ IDLE: keepalive_s ->|<- HEADERS: ->|<-- BODY: ---->|<-- BUSY: none -->|
 *                                   header_s        body_s
 *
 * libmicrohttpd calls the notify-connection callback with STARTED before
 * the connection's first request and with CLOSED before it closes the
 * socket, both under conn_mu here, so the watchdog never touches a
 * descriptor that was closed (and maybe reused). Connections past
 * max_connections are accepted (libmicrohttpd's own limit is higher, see
 * hard_conn_limit) so that their request can be answered 503. */

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    kvl_server *s = cls;
    srv_conn *k = *socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        if (!(k = calloc(1, sizeof *k)))
            return; /* untracked: no deadline but libmicrohttpd's inactivity timeout */
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        k->fd = ci ? ci->connect_fd : -1;
        k->phase = SRV_PH_IDLE;
        k->t = kvl_now();
        pthread_mutex_lock(&s->conn_mu);
        k->over = s->n_conns >= s->p.max_connections;
        k->next = s->conns;
        if (s->conns)
            s->conns->prev = k;
        s->conns = k;
        s->n_conns++;
        pthread_mutex_unlock(&s->conn_mu);
        *socket_context = k;
        return;
    }
    if (!k)
        return;
    pthread_mutex_lock(&s->conn_mu);
    if (k->prev)
        k->prev->next = k->next;
    else
        s->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    s->n_conns--;
    pthread_mutex_unlock(&s->conn_mu);
    free(k);
    *socket_context = NULL;
}

static srv_conn *conn_of(struct MHD_Connection *conn) {
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static void set_phase(kvl_server *s, struct MHD_Connection *conn, int phase) {
    srv_conn *k = conn_of(conn);
    if (!k)
        return;
    pthread_mutex_lock(&s->conn_mu);
    k->phase = phase;
    k->t = kvl_now();
    pthread_mutex_unlock(&s->conn_mu);
}

/* The request line is in: the headers' deadline starts. */
static void *on_request_line(void *cls, const char *uri, struct MHD_Connection *conn) {
    (void)uri;
    set_phase(cls, conn, SRV_PH_HEADERS);
    return NULL;
}

int32_t srv_n_conns(kvl_server *s) {
    pthread_mutex_lock(&s->conn_mu);
    int32_t n = s->n_conns;
    pthread_mutex_unlock(&s->conn_mu);
    return n;
}

static void cut_late_connections(kvl_server *s) {
    const double limit[3] = {s->p.keepalive_s, s->p.header_s, s->p.body_s};
    uint64_t cut[3] = {0};
    double now = kvl_now();
    pthread_mutex_lock(&s->conn_mu);
    for (srv_conn *k = s->conns; k; k = k->next)
        if (k->phase != SRV_PH_BUSY && !k->cut && k->fd >= 0 && now - k->t > limit[k->phase]) {
            shutdown(k->fd, SHUT_RDWR);
            k->cut = true;
            cut[k->phase]++;
        }
    pthread_mutex_unlock(&s->conn_mu);
    if (cut[0] + cut[1] + cut[2]) {
        pthread_mutex_lock(&s->met.mu);
        for (int i = 0; i < 3; i++)
            s->met.deadline_cut[i] += cut[i];
        pthread_mutex_unlock(&s->met.mu);
    }
}

static void *watchdog(void *arg) {
    kvl_server *s = arg;
    while (!atomic_load(&s->wd_stop)) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        cut_late_connections(s);
    }
    return NULL;
}

/* libmicrohttpd's own limit: room above max_connections for the 503s. */
static unsigned hard_conn_limit(int32_t max_connections) {
    return (unsigned)max_connections + (unsigned)max_connections / 8 + 16;
}

/* ---- the header limits ----
 *
 * kvllm's own limits (max_header bytes, max_header_count fields) are
 * checked when the headers are in, so that a request over them gets an
 * error object. libmicrohttpd must be able to hold such a request first:
 * its per-connection memory pool keeps the whole header block plus about
 * 64 bytes of its own per field (measured with 0.9.75: a 32 KiB pool took
 * one 32,486-byte header, or 441 fields of 10 bytes). Twice max_header
 * leaves room for up to max_header bytes plus hundreds of fields, and for
 * requests somewhat over both limits; only a request over the pool itself
 * still gets libmicrohttpd's own (HTML) 431. */
static size_t mhd_memory_limit(size_t max_header) { return 2 * max_header; }

typedef struct hdr_sum {
    size_t bytes;
    int32_t n;
} hdr_sum;

static enum MHD_Result add_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                  size_t key_size, const char *value, size_t value_size) {
    (void)key;
    (void)value;
    hdr_sum *h = cls;
    h->bytes += key_size + value_size + (kind == MHD_HEADER_KIND ? 4 : 2); /* ": " CRLF, "=&" */
    h->n += kind == MHD_HEADER_KIND;
    return MHD_YES;
}

/* When the request line (method, path, query arguments, version) and the
 * header fields ("name: value" CRLF each) are over max_header bytes, or
 * the fields over max_header_count: true, with the message in msg. */
static bool headers_over(const kvl_server *s, struct MHD_Connection *conn, const char *method,
                         const char *url, const char *version, char *msg, size_t cap) {
    hdr_sum h = {strlen(method) + strlen(url) + strlen(version) + 4, 0};
    MHD_get_connection_values_n(conn, MHD_HEADER_KIND | MHD_GET_ARGUMENT_KIND, add_header, &h);
    if (h.bytes > s->p.max_header)
        snprintf(msg, cap,
                 "the request line and headers are %zu bytes, over the limit of %zu bytes "
                 "(max_header)",
                 h.bytes, s->p.max_header);
    else if (h.n > s->p.max_header_count)
        snprintf(msg, cap,
                 "the request has %d header fields, over the limit of %d "
                 "(max_header_count)",
                 h.n, s->p.max_header_count);
    return h.bytes > s->p.max_header || h.n > s->p.max_header_count;
}

/* ---- answering ---- */

static enum MHD_Result reply(srv_call *c, struct MHD_Connection *conn, unsigned status,
                             const char *ctype, const srv_buf *b) {
    struct MHD_Response *r =
        MHD_create_response_from_buffer(b->n, b->p ? b->p : (char *)"", MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    if (status == 429)
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, "1");
    return srv_queue(c, conn, status, r);
}

enum MHD_Result srv_queue(srv_call *c, struct MHD_Connection *conn, unsigned status,
                          struct MHD_Response *r) {
    if (atomic_load(&c->s->draining) || c->close)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    c->answered = true;
    srv_metrics_http(&c->s->met, status);
    return ret;
}

static enum MHD_Result reply_json(srv_call *c, struct MHD_Connection *conn, unsigned status,
                                  const srv_buf *b) {
    return reply(c, conn, status, "application/json", b);
}

static enum MHD_Result reply_error(srv_call *c, struct MHD_Connection *conn, unsigned status,
                                   const char *type, const char *code, const char *msg) {
    srv_buf b = {0};
    oai_error(&b, type, NULL, code, "%s", msg);
    enum MHD_Result r = reply_json(c, conn, status, &b);
    srv_buf_free(&b);
    return r;
}

static void free_mail(srv_mail *m, size_t n) {
    for (size_t i = 0; i < n; i++)
        srv_mail_free(&m[i]);
    free(m);
}

/* The FINAL was routed but never reached the mailbox (it could not be
 * stored): end the call as an error rather than wait forever. */
static void lost_final(srv_call *c) {
    c->final_seen = true;
    c->reason = KVL_FINISH_ERROR;
    c->status = KVL_E_NOMEM;
    snprintf(c->message, sizeof c->message, "the server ran out of memory for its events");
}

static void cancel_call(srv_call *c) {
    srv_req *r = c->req;
    pthread_mutex_lock(&r->mu);
    bool cancel = !r->cancel_sent && !r->final_routed;
    r->cancel_sent = true;
    pthread_mutex_unlock(&r->mu);
    if (cancel)
        kvl_engine_cancel(c->s->e, r->id);
}

/* Non-streamed: drain; suspend while empty; answer on the FINAL. */
static enum MHD_Result wait_answer(srv_call *c, struct MHD_Connection *conn) {
    for (;;) {
        srv_mail *m = NULL;
        bool suspended = false;
        size_t n = srv_req_take(c->req, conn, &m, &suspended);
        if (suspended)
            return MHD_YES;
        bool ok = oai_consume(c, m, n);
        free_mail(m, n);
        if (!ok) {
            cancel_call(c);
            return reply_error(c, conn, 500, "server_error", NULL, "out of memory");
        }
        if (n == 0 && !c->final_seen)
            lost_final(c);
        if (c->final_seen) {
            srv_buf b = {0};
            unsigned st = oai_final(c, &b);
            enum MHD_Result r = reply_json(c, conn, st, &b);
            srv_buf_free(&b);
            return r;
        }
    }
}

/* Streamed: libmicrohttpd asks for bytes when the socket can take them. */
static ssize_t stream_reader(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    srv_call *c = cls;
    for (;;) {
        if (c->out_pos < c->out.n) {
            size_t k = c->out.n - c->out_pos < max ? c->out.n - c->out_pos : max;
            memcpy(buf, c->out.p + c->out_pos, k);
            c->out_pos += k;
            if (c->out_pos == c->out.n)
                c->out_pos = c->out.n = 0;
            return (ssize_t)k;
        }
        if (c->stream_done)
            return MHD_CONTENT_READER_END_OF_STREAM;
        srv_mail *m = NULL;
        bool suspended = false;
        size_t n = srv_req_take(c->req, c->conn, &m, &suspended);
        if (suspended)
            return 0;
        bool ok = oai_consume(c, m, n);
        free_mail(m, n);
        if (!ok) {
            cancel_call(c);
            return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (n == 0 && !c->final_seen) {
            lost_final(c);
            srv_buf e = {0};
            oai_error(&e, "server_error", NULL, NULL, "%s", c->message);
            if (!srv_buf_printf(&c->out, "data: %s\n\ndata: [DONE]\n\n", e.p ? e.p : "{}")) {
                srv_buf_free(&e);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
            srv_buf_free(&e);
            c->stream_done = true;
        }
    }
}

static enum MHD_Result generate(srv_call *c, struct MHD_Connection *conn, bool chat) {
    kvl_server *s = c->s;
    srv_buf out = {0};
    unsigned st = oai_parse(s, chat, c->body.p ? c->body.p : "", c->body.n, &c->o, &out);
    if (st == 200)
        st = oai_submit(c, conn, &out);
    if (st != 200) {
        enum MHD_Result r = reply_json(c, conn, st, &out);
        srv_buf_free(&out);
        return r;
    }
    srv_buf_free(&out);
    c->conn = conn;
    if (!c->o.stream)
        return wait_answer(c, conn);
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, stream_reader, c, NULL);
    if (!r) {
        cancel_call(c);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    return srv_queue(c, conn, 200, r);
}

/* "Bearer KEY" against the key, in time independent of where they differ. */
static bool key_ok(const char *key, const char *header) {
    const char *got = header && !strncmp(header, "Bearer ", 7) ? header + 7 : "";
    size_t kl = strlen(key), gl = strlen(got);
    unsigned diff = kl != gl;
    for (size_t i = 0; i < kl; i++)
        diff |= (unsigned)(unsigned char)key[i] ^ (unsigned char)(i < gl ? got[i] : 0);
    return diff == 0;
}

static enum MHD_Result serve_call(srv_call *c, struct MHD_Connection *conn) {
    kvl_server *s = c->s;
    srv_buf b = {0};
    unsigned st = 200;
    enum MHD_Result r;
    srv_conn *k = conn_of(conn);
    if (k && k->over) { /* set once at accept; read-only since */
        c->close = true;
        pthread_mutex_lock(&s->met.mu);
        s->met.conn_refused++;
        pthread_mutex_unlock(&s->met.mu);
        char msg[128];
        snprintf(msg, sizeof msg, "too many open connections: the limit is %d (--max-connections)",
                 s->p.max_connections);
        return reply_error(c, conn, 503, "server_error", "too_many_connections", msg);
    }
    if (c->route == R_NOT_FOUND)
        return reply_error(c, conn, 404, "invalid_request_error", "not_found",
                           "no such endpoint; see docs/server.md");
    if (c->route < 0) {
        char msg[96];
        snprintf(msg, sizeof msg, "method not allowed here; use %s", routes[-c->route - 1].method);
        return reply_error(c, conn, 405, "invalid_request_error", "method_not_allowed", msg);
    }
    if (c->too_big) {
        char msg[128];
        snprintf(msg, sizeof msg,
                 "the request body is larger than the limit of %zu bytes (--max-body)",
                 s->p.max_body);
        return reply_error(c, conn, 413, "invalid_request_error", "body_too_large", msg);
    }
    if (c->route == R_WEB) /* the page holds no data: no key needed */
        return srv_web_reply(c, conn);
    if (s->api_key && c->route != R_HEALTH && c->route != R_METRICS &&
        !key_ok(s->api_key,
                MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION)))
        return reply_error(c, conn, 401, "invalid_request_error", "invalid_api_key",
                           "a valid API key is required: Authorization: Bearer KEY (--api-key)");
    bool ready = atomic_load(&s->ready), draining = atomic_load(&s->draining);
    if (c->route == R_HEALTH) {
        srv_buf_str(&b, ready && !draining ? "{\"status\":\"ok\"}"
                        : draining         ? "{\"status\":\"shutting down\"}"
                                           : "{\"status\":\"loading\"}");
        r = reply_json(c, conn, ready && !draining ? 200 : 503, &b);
        srv_buf_free(&b);
        return r;
    }
    if (!ready)
        return reply_error(c, conn, 503, "server_error", "loading", "the model is loading");
    bool gen = c->route == R_COMPLETIONS || c->route == R_CHAT;
    if (gen && draining)
        return reply_error(c, conn, 503, "server_error", "shutting_down",
                           "the server is shutting down");
    switch (c->route) {
    case R_COMPLETIONS: return generate(c, conn, false);
    case R_CHAT: return generate(c, conn, true);
    case R_MODELS: st = oai_models(s, &b); break;
    case R_TOKENIZE: st = oai_tokenize(s, c->body.p ? c->body.p : "", c->body.n, &b); break;
    case R_DETOKENIZE: st = oai_detokenize(s, c->body.p ? c->body.p : "", c->body.n, &b); break;
    case R_KV:
        if (!srv_kv_json(s, &b))
            st = 500;
        break;
    case R_KV_MAP: st = srv_dash_map(s, &b); break;
    case R_KV_HISTORY: st = srv_dash_history(s, conn, &b); break;
    case R_PLAN: st = srv_dash_plan(s, conn, &b); break;
    case R_METRICS:
        if (!srv_metrics_text(s, &b))
            st = 500;
        else {
            r = reply(c, conn, 200, "text/plain; version=0.0.4; charset=utf-8", &b);
            srv_buf_free(&b);
            return r;
        }
        break;
    default: st = 500;
    }
    if (st == 500 && !b.n)
        oai_error(&b, "server_error", NULL, NULL, "out of memory");
    r = reply_json(c, conn, st, &b);
    srv_buf_free(&b);
    return r;
}

static bool is_folder(const char *path) {
    size_t n = strlen(path);
    return n > 1 && path[n - 1] == '/';
}

/* Route of (method, url): > 0 a route, R_NOT_FOUND, or -(index + 1) when
 * the path exists under another method. */
static int route_of(const char *method, const char *url) {
    for (int i = 0; i < N_ROUTES; i++)
        if (is_folder(routes[i].path) ? !strncmp(url, routes[i].path, strlen(routes[i].path))
                                      : !strcmp(url, routes[i].path))
            return !strcmp(method, routes[i].method) ? routes[i].route : -(i + 1);
    return R_NOT_FOUND;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls) {
    (void)version;
    kvl_server *s = cls;
    srv_call *c = *req_cls;
    if (!c) { /* headers are in */
        if (!(c = calloc(1, sizeof *c)))
            return MHD_NO;
        c->s = s;
        c->route = route_of(method, url);
        c->asset = c->route == R_WEB ? srv_web_find(url) : -1;
        *req_cls = c;
        char msg[160];
        if (headers_over(s, conn, method, url, version, msg, sizeof msg)) {
            c->close = true; /* the body, if any, is not read */
            set_phase(s, conn, SRV_PH_BUSY);
            return reply_error(c, conn, 431, "invalid_request_error", "headers_too_large", msg);
        }
        set_phase(s, conn, SRV_PH_BODY);
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->p.max_body) {
            c->too_big = true;
            set_phase(s, conn, SRV_PH_BUSY);
            return serve_call(c, conn); /* 413 before reading the body */
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!c->too_big && !c->answered) {
            if (c->body.n + *upload_size > s->p.max_body) {
                c->too_big = true;
                srv_buf_free(&c->body);
            } else if (!srv_buf_add(&c->body, upload, *upload_size))
                return MHD_NO;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (c->submitted && !c->o.stream) /* resumed: mail arrived */
        return wait_answer(c, conn);
    if (c->answered)
        return MHD_YES;
    set_phase(s, conn, SRV_PH_BUSY);
    return serve_call(c, conn);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)toe;
    kvl_server *s = cls;
    srv_call *c = *req_cls;
    set_phase(s, conn, SRV_PH_IDLE);
    if (!c)
        return;
    if (c->req) {
        srv_req *r = c->req;
        bool cancel = false;
        pthread_mutex_lock(&r->mu);
        r->gone = true;
        r->conn = NULL;
        if (c->submitted && !r->final_routed && !r->cancel_sent)
            cancel = r->cancel_sent = true;
        for (size_t i = 0; i < r->n_mail; i++)
            srv_mail_free(&r->mail[i]);
        r->n_mail = 0;
        pthread_mutex_unlock(&r->mu);
        if (cancel) {
            kvl_engine_cancel(s->e, r->id);
            pthread_mutex_lock(&s->met.mu);
            s->met.disconnects++;
            pthread_mutex_unlock(&s->met.mu);
        }
        srv_req_unref(r);
    }
    if (c->submitted)
        atomic_fetch_sub(&s->n_calls, 1);
    oai_call_free(c);
    free(c);
    *req_cls = NULL;
}

/* ---- life cycle ---- */

kvl_status kvl_server_init(const kvl_server_params *p, kvl_server **out, kvl_error *err) {
    *out = NULL;
    kvl_server_params sp = p ? *p : kvl_server_defaults();
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)sp.port)};
    const char *host = sp.host && strcmp(sp.host, "localhost") ? sp.host : "127.0.0.1";
    if (sp.port < 0 || sp.port > 65535)
        return kvl_errorf(err, KVL_E_INVALID, "--port: %d outside [0, 65535]", sp.port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
        return kvl_errorf(err, KVL_E_INVALID, "--host: '%s' is not an IPv4 address", host);
    /* bind once ourselves for a precise error (libmicrohttpd gives none) */
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd >= 0) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&sa, sizeof sa)) {
            int e = errno;
            close(fd);
            return kvl_errorf(err, KVL_E_IO, "cannot listen on %s:%d: %s", host, sp.port,
                              strerror(e));
        }
        close(fd);
    }
    kvl_server *s = calloc(1, sizeof *s);
    if (!s)
        return kvl_errorf(err, KVL_E_NOMEM, "serve: out of memory");
    s->p = sp;
    snprintf(s->host, sizeof s->host, "%s", host);
    snprintf(s->model_id, sizeof s->model_id, "%s", sp.model_id ? sp.model_id : "kvllm");
    s->p.host = s->host;
    s->p.model_id = s->model_id;
    if (sp.api_key && !(s->api_key = strdup(sp.api_key))) {
        free(s);
        return kvl_errorf(err, KVL_E_NOMEM, "serve: out of memory");
    }
    s->p.api_key = s->api_key;
    s->t_start = (double)time(NULL);
    pthread_mutex_init(&s->reg_mu, NULL);
    pthread_mutex_init(&s->ses_mu, NULL);
    pthread_mutex_init(&s->conn_mu, NULL);
    srv_metrics_init(&s->met);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME;
    if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) == MHD_YES)
        flags |= MHD_USE_EPOLL;
    s->d = MHD_start_daemon(
        flags, (uint16_t)sp.port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&sa, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)sp.http_threads,
        MHD_OPTION_CONNECTION_LIMIT, hard_conn_limit(sp.max_connections),
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)sp.timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        mhd_memory_limit(sp.max_header), MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s, MHD_OPTION_URI_LOG_CALLBACK,
        on_request_line, s, MHD_OPTION_END);
    if (!s->d) {
        kvl_server_free(s);
        return kvl_errorf(err, KVL_E_IO, "cannot start the HTTP server on %s:%d", host, sp.port);
    }
    int rc = pthread_create(&s->wd, NULL, watchdog, s);
    if (rc) {
        kvl_server_free(s);
        return kvl_errorf(err, KVL_E_NOMEM, "serve: pthread_create: %s", strerror(rc));
    }
    s->wd_started = true;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? (int32_t)di->port : sp.port;
    *out = s;
    return KVL_OK;
}

int32_t kvl_server_port(const kvl_server *s) { return s->port; }

kvl_status kvl_server_attach(kvl_server *s, const kvl_model *m, kvl_engine *e, kvl_error *err) {
    s->m = m;
    s->e = e;
    kvl_model_get_info(m, &s->mi);
    kvl_engine_get_config(e, &s->cfg);
    kvl_error cerr;
    kvl_status st = kvl_chat_params_for_model(m, s->p.chat_template, &s->chat, &cerr);
    if (st == KVL_E_INVALID)
        return kvl_errorf(err, st, "%s", cerr.msg);
    if (st) {
        s->chat.tmpl = KVL_CHAT_NONE;
        snprintf(s->chat_err, sizeof s->chat_err, "%s", cerr.msg);
    }
    st = kvl_engine_start(e, err);
    if (st)
        return st;
    s->engine_started = true;
    if ((st = srv_dispatch_start(s, err))) {
        kvl_engine_stop(e);
        s->engine_started = false;
        return st;
    }
    atomic_store(&s->ready, 1);
    return KVL_OK;
}

static void nap(void) {
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
}

void kvl_server_shutdown(kvl_server *s, double grace_s, FILE *log) {
    atomic_store(&s->draining, 1);
    if (s->d) {
        MHD_socket lfd = MHD_quiesce_daemon(s->d); /* stop accepting */
        if (lfd != MHD_INVALID_SOCKET)
            close(lfd);
    }
    if (s->disp_started) {
        int64_t open = srv_n_open(s);
        if (open > 0 && log)
            fprintf(log, "kvllm serve: %lld requests open; letting them finish for up to %g s\n",
                    (long long)open, grace_s);
        double t0 = kvl_now();
        while (srv_n_open(s) > 0 && kvl_now() - t0 < grace_s)
            nap();
        int n = srv_cancel_all(s);
        if (n > 0 && log)
            fprintf(log, "kvllm serve: cancelled %d requests (finish_reason abort)\n", n);
        /* every generation call answers (or its client is gone) */
        t0 = kvl_now();
        while ((atomic_load(&s->n_calls) > 0 || srv_n_open(s) > 0) && kvl_now() - t0 < 60)
            nap();
    }
    if (s->disp_started)
        srv_resume_all(s);
    if (s->d) {
        MHD_stop_daemon(s->d);
        s->d = NULL;
    }
    if (s->wd_started) {
        atomic_store(&s->wd_stop, 1);
        pthread_join(s->wd, NULL);
        s->wd_started = false;
    }
    srv_dispatch_stop(s);
    if (s->engine_started) {
        kvl_engine_stop(s->e);
        s->engine_started = false;
    }
    atomic_store(&s->ready, 0);
}

void kvl_server_free(kvl_server *s) {
    if (!s)
        return;
    if (s->d || s->disp_started || s->engine_started || s->wd_started)
        kvl_server_shutdown(s, 0, NULL);
    srv_metrics_free(&s->met);
    pthread_mutex_destroy(&s->reg_mu);
    pthread_mutex_destroy(&s->ses_mu);
    pthread_mutex_destroy(&s->conn_mu);
    free(s->api_key);
    free(s);
}
