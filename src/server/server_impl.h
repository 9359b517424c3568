/*
 * The server's private structures, shared by http.c (libmicrohttpd,
 * routing, streaming), dispatch.c (the registry of open requests and the
 * dispatcher thread that routes engine events into their mailboxes),
 * openai.c (the OpenAI JSON in and out) and metrics.c (Prometheus text
 * and the /v1/kv ledger).
 *
 * Threads and what they touch:
 *
 *   HTTP threads (libmicrohttpd's pool)        dispatcher thread
 *   - parse, submit (under reg_mu),            - kvl_engine_poll, route by id
 *     register the srv_req                     - push srv_mail under req->mu,
 *   - drain their req's mailbox (req->mu),       resume the connection when
 *     render, suspend when it is empty           it was suspended
 *   - cancel on disconnect                     - on FINAL: unregister, metrics
 *                                              - every 100 ms: a suspended
 *   engine thread (kvl_engine_start):            connection whose peer hung up
 *   steps; never touched by the server           gets its request cancelled
 *
 *   watchdog thread (http.c): every 100 ms, under conn_mu, shuts down the
 *   connections past a read deadline
 *
 * Lock order: reg_mu, then a req's mu, then libmicrohttpd's own locks;
 * conn_mu and met.mu are leaves (nothing is locked while holding them).
 * A srv_req is reference counted: one reference for the registry (dropped
 * when its FINAL is routed) and one for the connection (dropped when
 * libmicrohttpd reports the request completed).
 */
#ifndef KVL_SERVER_IMPL_H
#define KVL_SERVER_IMPL_H

#include "server/server.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* Routed events one request may hold unread before the server gives up on
 * its client (cancels it; the final event still gets through). */
#define SRV_MAIL_MAX 65536
#define SRV_BUCKETS 1024
#define SRV_SESSIONS 256 /* sessions the /v1/kv ledger lists (most recent) */
#define SRV_USER_MAX 64  /* bytes of a `user` string kept for the ledger */
#define SRV_HIST_MAX 24

/* A growable byte buffer; the append functions return false on OOM and
 * leave the buffer as it was. */
typedef struct srv_buf {
    char *p;
    size_t n, cap;
} srv_buf;
bool srv_buf_add(srv_buf *b, const void *data, size_t n);
bool srv_buf_str(srv_buf *b, const char *s);
bool srv_buf_printf(srv_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void srv_buf_free(srv_buf *b);

/* One routed engine event, compact. */
typedef struct srv_mail {
    kvl_event_type type;
    int32_t index, token;
    float logprob;
    int32_t n_top;
    kvl_token_logprob *top; /* malloc'd (n_top); NULL when none */
    kvl_finish_reason reason;
    kvl_status status;
    uint32_t text_len;
    char *text;      /* malloc'd; NULL when empty */
    char *message;   /* FINAL: malloc'd or NULL */
    kvl_usage usage; /* FINAL */
} srv_mail;
void srv_mail_free(srv_mail *m);

/* An engine request as the server tracks it: the mailbox between the
 * dispatcher and the connection. */
typedef struct srv_req {
    pthread_mutex_t mu;
    int refs; /* under mu */
    uint64_t id, session;
    struct MHD_Connection *conn; /* NULL once the connection completed */
    bool suspended;              /* the connection waits for mail (resume it) */
    bool final_routed;           /* the FINAL is in the mailbox (or was) */
    bool cancel_sent;            /* kvl_engine_cancel was called */
    bool gone;                   /* the connection completed: mail is dropped */
    double t_tok;                /* dispatcher: when sample 0's last token came; 0 = none yet */
    double t_submit;             /* kvl_now() at submit (the history's TTFT) */
    srv_mail *mail;              /* (cap_mail) ring-less queue, oldest first */
    size_t n_mail, cap_mail;
    struct srv_req *bucket_next, *prev, *next; /* the registry, under reg_mu */
} srv_req;

typedef struct srv_hist {
    const double *bounds;
    int n;
    uint64_t counts[SRV_HIST_MAX + 1]; /* per bucket (not cumulative); last: +Inf */
    uint64_t count;
    double sum;
} srv_hist;

/* One open TCP connection, tracked for the read deadlines and the
 * connection limit (libmicrohttpd's socket context; list under conn_mu). */
enum { SRV_PH_IDLE, SRV_PH_HEADERS, SRV_PH_BODY, SRV_PH_BUSY };
typedef struct srv_conn {
    struct srv_conn *prev, *next;
    int fd;
    int phase; /* SRV_PH_*: what the connection is waiting for */
    double t;  /* kvl_now() when the phase began */
    bool over; /* opened past --max-connections: its request gets 503 */
    bool cut;  /* shut down by the deadline watchdog */
} srv_conn;

/* One second of the dashboard's history (GET /v1/kv/history). Means are
 * NAN when the interval saw nothing to average. */
#define SRV_HISTORY 600
typedef struct srv_sample {
    double t; /* uptime seconds at the end of the interval */
    double occupancy;
    uint32_t blocks_used, blocks_cached, blocks_free;
    int32_t running, waiting, swapped;
    double batch_tokens;         /* tokens per engine step */
    double tpot_ms, ttft_ms;     /* means over the interval's tokens / first tokens */
    double prefix_hit_rate;      /* cumulative */
    int64_t prefix_tokens_saved; /* cumulative */
    double tokens_per_s;         /* generated tokens routed / the interval */
    uint32_t swap_used, tier_blocks;
    int64_t preemptions; /* cumulative */
} srv_sample;

/* The history ring and what the dispatcher accumulates for the current
 * interval, under mu (a leaf lock). */
typedef struct srv_dash {
    pthread_mutex_t mu;
    bool mu_ok;
    double t0, t_prev, t_next;       /* kvl_now() at start, at the last sample, of the next */
    int64_t steps_prev, tokens_prev; /* engine steps and batch tokens at the last sample */
    double gap_sum, ttft_sum;        /* this interval */
    int64_t n_gap, n_ttft, n_tokens;
    srv_sample ring[SRV_HISTORY];
    int head, n; /* oldest at head */
} srv_dash;

#define SRV_N_STATUS 12
typedef struct srv_metrics {
    pthread_mutex_t mu;
    uint64_t http[SRV_N_STATUS]; /* responses by status (srv_status_codes order) */
    uint64_t finished[5];        /* requests by kvl_finish_reason */
    uint64_t rejected_busy, rejected_invalid, rejected_limit;
    uint64_t prompt_tokens, generation_tokens, cached_tokens;
    uint64_t disconnects;
    uint64_t conn_refused;    /* 503: past --max-connections */
    uint64_t deadline_cut[3]; /* connections shut by deadline: idle, headers, body */
    srv_hist ttft, tpot, itl, e2e, queue;
} srv_metrics;
extern const unsigned srv_status_codes[SRV_N_STATUS];

struct kvl_server {
    kvl_server_params p;
    char host[64], model_id[128];
    char *api_key; /* owned copy; NULL: no key */
    struct MHD_Daemon *d;
    int32_t port;
    const kvl_model *m;
    kvl_engine *e;
    kvl_model_info mi;
    kvl_engine_config cfg;
    kvl_chat_params chat; /* the chat template; chat.tmpl NONE: chat_err says why */
    char chat_err[512];
    atomic_int ready, draining;
    double t_start;
    /* the dispatcher */
    pthread_t disp;
    bool disp_started, engine_started;
    atomic_int disp_stop;
    kvl_event *evbuf; /* (SRV_POLL_MAX) */
    /* the registry of open engine requests */
    pthread_mutex_t reg_mu;
    srv_req *buckets[SRV_BUCKETS];
    srv_req *head; /* all open requests, newest first */
    int64_t n_open;
    atomic_llong n_calls; /* generation calls whose connection has not completed */
    /* sessions seen (for the ledger), under ses_mu */
    pthread_mutex_t ses_mu;
    uint64_t ses_id[SRV_SESSIONS];
    char ses_user[SRV_SESSIONS][SRV_USER_MAX];
    int n_ses, ses_next;
    atomic_ullong counter; /* ids and default seeds */
    srv_metrics met;
    srv_dash dash;
    /* open connections (deadlines, the connection limit) and their watchdog */
    pthread_mutex_t conn_mu;
    srv_conn *conns;
    int32_t n_conns;
    pthread_t wd;
    bool wd_started;
    atomic_int wd_stop;
};

/* ---- dispatch.c ---- */
kvl_status srv_dispatch_start(kvl_server *s, kvl_error *err);
void srv_dispatch_stop(kvl_server *s);
srv_req *srv_req_new(void);
void srv_req_unref(srv_req *r);
/* Submit p and register the request under one lock, so that no event of
 * it can be polled before it is routable. On error nothing is registered. */
kvl_status srv_submit(kvl_server *s, const kvl_request_params *p, srv_req *r, kvl_error *err);
/* Cancel every open request (shutdown). Returns how many. */
int srv_cancel_all(kvl_server *s);
int64_t srv_n_open(kvl_server *s);
/* Resume every suspended connection (before the daemon stops, when an
 * open request did not end in time: libmicrohttpd must not stop with a
 * connection suspended). */
void srv_resume_all(kvl_server *s);
/* Move the mailbox's contents to *out (caller frees each and the array);
 * when it is empty and not final, suspend conn (under the lock, so that
 * the dispatcher resumes it) and return 0 items. */
size_t srv_req_take(srv_req *r, struct MHD_Connection *conn, srv_mail **out, bool *suspended);
/* Remember a session for the ledger. */
void srv_session_seen(kvl_server *s, uint64_t session, const char *user);

/* ---- dash.c: the dashboard's endpoints ---- */
void srv_dash_init(kvl_server *s);
void srv_dash_free(kvl_server *s);
/* The dispatcher, for each TOKEN it routes: gap_s (>= 0: seconds since the
 * previous token of sample 0) or ttft_s (>= 0: sample 0's first token). */
void srv_dash_token(kvl_server *s, double gap_s, double ttft_s);
/* The dispatcher, every pass: close the interval when a second is up. */
void srv_dash_tick(kvl_server *s, double now);
/* GET /v1/kv/map, /v1/kv/history, /v1/plan: an HTTP status and the body
 * (the OpenAI error object on 4xx/5xx). */
unsigned srv_dash_map(kvl_server *s, srv_buf *b);
unsigned srv_dash_history(kvl_server *s, struct MHD_Connection *conn, srv_buf *b);
unsigned srv_dash_plan(kvl_server *s, struct MHD_Connection *conn, srv_buf *b);

/* ---- http.c ---- */
int32_t srv_n_conns(kvl_server *s); /* open connections now */

/* ---- metrics.c ---- */
void srv_metrics_init(srv_metrics *m);
void srv_metrics_free(srv_metrics *m);
void srv_metrics_http(srv_metrics *m, unsigned status);
void srv_metrics_final(srv_metrics *m, const kvl_event *ev);
/* One inter-token gap (seconds) of a request's first sample. */
void srv_metrics_itl(srv_metrics *m, double gap_s);
/* The Prometheus text (metrics) and the ledger (kv) into b; false on OOM. */
bool srv_metrics_text(kvl_server *s, srv_buf *b);
bool srv_kv_json(kvl_server *s, srv_buf *b);
/* "waiting", "running", "swapped" or "finished". */
const char *srv_state_name(kvl_request_state st);

#endif
