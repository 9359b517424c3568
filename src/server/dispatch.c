/*
 * The events fan-out: the engine has one event queue (kvl_engine_poll); one
 * dispatcher thread polls it and routes each event, by its request id, to
 * that request's mailbox (srv_req), which the HTTP thread serving the
 * connection drains. The registry maps ids to mailboxes; a request is
 * registered under the same lock as its submit, so its first event always
 * finds it, and leaves the registry with its FINAL.
 *
 * Invariants:
 *   - every FINAL polled reaches its mailbox (even past SRV_MAIL_MAX) or,
 *     when the client is gone, is dropped with the request's other mail;
 *   - a suspended connection is resumed by whoever adds mail, under the
 *     request's lock, and suspended only under that lock when its mailbox
 *     is empty: no wake-up is lost;
 *   - a client that hung up while its connection was suspended (queued, or
 *     waiting for a non-streamed answer) is found within 100 ms by
 *     poll(POLLRDHUP) on the socket, and its request cancelled. Only
 *     suspended connections are probed: libmicrohttpd neither reads nor
 *     closes them, so the descriptor is theirs.
 * Work per poll is bounded: at most SRV_POLL_MAX events, each routed with
 * one hash lookup; the hang-up probe visits each open request once; once a
 * second the dashboard's history takes one sample (dash.c).
 */
#include "core/core.h"
#include "server/server_impl.h"

#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SRV_POLL_MAX 64

/* ---- byte buffers ---- */

bool srv_buf_add(srv_buf *b, const void *data, size_t n) {
    if (n > SIZE_MAX / 2 - b->n)
        return false;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return true;
}

bool srv_buf_str(srv_buf *b, const char *s) { return srv_buf_add(b, s, strlen(s)); }

bool srv_buf_printf(srv_buf *b, const char *fmt, ...) {
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return false;
    if ((size_t)n < sizeof tmp)
        return srv_buf_add(b, tmp, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return false;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    bool ok = srv_buf_add(b, big, (size_t)n);
    free(big);
    return ok;
}

void srv_buf_free(srv_buf *b) {
    free(b->p);
    *b = (srv_buf){0};
}

/* ---- mailboxes ---- */

void srv_mail_free(srv_mail *m) {
    free(m->text);
    free(m->top);
    free(m->message);
    m->text = m->message = NULL;
}

srv_req *srv_req_new(void) {
    srv_req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->mu, NULL)) {
        free(r);
        return NULL;
    }
    r->refs = 1; /* the connection's */
    return r;
}

static void req_drop_mail(srv_req *r) {
    for (size_t i = 0; i < r->n_mail; i++)
        srv_mail_free(&r->mail[i]);
    r->n_mail = 0;
}

void srv_req_unref(srv_req *r) {
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    int left = --r->refs;
    pthread_mutex_unlock(&r->mu);
    if (left > 0)
        return;
    req_drop_mail(r);
    free(r->mail);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

size_t srv_req_take(srv_req *r, struct MHD_Connection *conn, srv_mail **out, bool *suspended) {
    *out = NULL;
    *suspended = false;
    pthread_mutex_lock(&r->mu);
    size_t n = r->n_mail;
    if (n) {
        *out = r->mail;
        r->mail = NULL;
        r->n_mail = r->cap_mail = 0;
    } else if (!r->final_routed) {
        r->suspended = true;
        MHD_suspend_connection(conn);
        *suspended = true;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

/* Append ev to r's mailbox (r->mu held). false when the client fell too far
 * behind (the event is dropped; the caller cancels the request). */
static bool req_push(srv_req *r, const kvl_event *ev) {
    if (r->gone)
        return true;
    if (ev->type != KVL_EV_FINAL && r->n_mail >= SRV_MAIL_MAX)
        return false;
    if (r->n_mail == r->cap_mail) {
        size_t cap = r->cap_mail ? r->cap_mail * 2 : 16;
        srv_mail *p = realloc(r->mail, cap * sizeof *p);
        if (!p)
            return ev->type != KVL_EV_FINAL; /* a FINAL must get in: see below */
        r->mail = p;
        r->cap_mail = cap;
    }
    srv_mail *m = &r->mail[r->n_mail];
    *m = (srv_mail){.type = ev->type,
                    .index = ev->index,
                    .token = ev->token,
                    .logprob = ev->logprob,
                    .reason = ev->reason,
                    .status = ev->status,
                    .usage = ev->usage};
    if (ev->text_len && (m->text = malloc(ev->text_len + 1))) {
        memcpy(m->text, ev->text, ev->text_len);
        m->text[ev->text_len] = '\0';
        m->text_len = (uint32_t)ev->text_len;
    }
    if (ev->type == KVL_EV_FINAL && ev->message[0])
        m->message = strdup(ev->message);
    if (ev->n_top && (m->top = malloc((size_t)ev->n_top * sizeof *m->top))) {
        memcpy(m->top, ev->top, (size_t)ev->n_top * sizeof *m->top);
        m->n_top = ev->n_top;
    }
    r->n_mail++;
    return true;
}

/* ---- the registry ---- */

static size_t bucket(uint64_t id) {
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 54) % SRV_BUCKETS;
}

kvl_status srv_submit(kvl_server *s, const kvl_request_params *p, srv_req *r, kvl_error *err) {
    pthread_mutex_lock(&s->reg_mu);
    uint64_t id = 0;
    r->t_submit = kvl_now();
    kvl_status st = kvl_engine_submit(s->e, p, &id, err);
    if (st == KVL_OK) {
        r->id = id;
        r->session = p->session;
        r->refs++; /* the registry's; nobody else sees r yet */
        size_t b = bucket(id);
        r->bucket_next = s->buckets[b];
        s->buckets[b] = r;
        r->prev = NULL;
        r->next = s->head;
        if (s->head)
            s->head->prev = r;
        s->head = r;
        s->n_open++;
    }
    pthread_mutex_unlock(&s->reg_mu);
    return st;
}

/* Find id; with unregister, remove it (its FINAL). Returns it with a
 * reference the caller drops (the registry's, when unregistered). */
static srv_req *reg_find(kvl_server *s, uint64_t id, bool unregister) {
    pthread_mutex_lock(&s->reg_mu);
    size_t b = bucket(id);
    srv_req **pp = &s->buckets[b], *r = NULL;
    while (*pp && (*pp)->id != id)
        pp = &(*pp)->bucket_next;
    r = *pp;
    if (r && unregister) {
        *pp = r->bucket_next;
        if (r->prev)
            r->prev->next = r->next;
        else
            s->head = r->next;
        if (r->next)
            r->next->prev = r->prev;
        s->n_open--;
    } else if (r) {
        pthread_mutex_lock(&r->mu);
        r->refs++;
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&s->reg_mu);
    return r;
}

int64_t srv_n_open(kvl_server *s) {
    pthread_mutex_lock(&s->reg_mu);
    int64_t n = s->n_open;
    pthread_mutex_unlock(&s->reg_mu);
    return n;
}

int srv_cancel_all(kvl_server *s) {
    int n = 0;
    pthread_mutex_lock(&s->reg_mu);
    for (srv_req *r = s->head; r; r = r->next) {
        pthread_mutex_lock(&r->mu);
        if (!r->cancel_sent) {
            r->cancel_sent = true;
            kvl_engine_cancel(s->e, r->id);
            n++;
        }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&s->reg_mu);
    return n;
}

void srv_resume_all(kvl_server *s) {
    pthread_mutex_lock(&s->reg_mu);
    for (srv_req *r = s->head; r; r = r->next) {
        pthread_mutex_lock(&r->mu);
        if (r->suspended && r->conn) {
            r->suspended = false;
            MHD_resume_connection(r->conn);
        }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&s->reg_mu);
}

void srv_session_seen(kvl_server *s, uint64_t session, const char *user) {
    if (!session)
        return;
    pthread_mutex_lock(&s->ses_mu);
    int i = 0;
    while (i < s->n_ses && s->ses_id[i] != session)
        i++;
    if (i == s->n_ses) { /* new: take a free entry, else the oldest */
        if (s->n_ses < SRV_SESSIONS)
            i = s->n_ses++;
        else {
            i = s->ses_next;
            s->ses_next = (s->ses_next + 1) % SRV_SESSIONS;
        }
        s->ses_id[i] = session;
        snprintf(s->ses_user[i], SRV_USER_MAX, "%s", user ? user : "");
    }
    pthread_mutex_unlock(&s->ses_mu);
}

/* ---- the dispatcher thread ---- */

static void route(kvl_server *s, const kvl_event *ev) {
    bool final = ev->type == KVL_EV_FINAL;
    if (final)
        srv_metrics_final(&s->met, ev);
    srv_req *r = reg_find(s, ev->id, final);
    if (!r) /* not ours (cannot happen: every request comes through srv_submit) */
        return;
    bool cancel = false;
    if (ev->type == KVL_EV_TOKEN) {
        double gap = -1, ttft = -1;
        if (ev->index == 0) { /* only the dispatcher touches t_tok */
            double now = kvl_now();
            if (r->t_tok > 0)
                srv_metrics_itl(&s->met, gap = now - r->t_tok);
            else
                ttft = now - r->t_submit;
            r->t_tok = now;
        }
        srv_dash_token(s, gap, ttft);
    }
    pthread_mutex_lock(&r->mu);
    if (!req_push(r, ev) && !r->cancel_sent)
        cancel = r->cancel_sent = true;
    if (final)
        r->final_routed = true;
    if (r->suspended && (r->n_mail || final) && r->conn) {
        r->suspended = false;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
    if (cancel)
        kvl_engine_cancel(s->e, r->id);
    srv_req_unref(r);
}

/* Cancel the requests whose suspended connection's peer has hung up. */
static void probe_hangups(kvl_server *s) {
    pthread_mutex_lock(&s->reg_mu);
    for (srv_req *r = s->head; r; r = r->next) {
        pthread_mutex_lock(&r->mu);
        if (r->suspended && r->conn && !r->cancel_sent) {
            const union MHD_ConnectionInfo *ci =
                MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            if (ci) {
                struct pollfd pf = {.fd = ci->connect_fd, .events = POLLRDHUP};
                if (poll(&pf, 1, 0) == 1 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
                    r->cancel_sent = true;
                    kvl_engine_cancel(s->e, r->id);
                    pthread_mutex_lock(&s->met.mu);
                    s->met.disconnects++;
                    pthread_mutex_unlock(&s->met.mu);
                }
            }
        }
        pthread_mutex_unlock(&r->mu);
    }
    pthread_mutex_unlock(&s->reg_mu);
}

static void *dispatcher(void *arg) {
    kvl_server *s = arg;
    double last_probe = kvl_now();
    /* keep routing until told to stop and nothing is open any more */
    while (!atomic_load(&s->disp_stop) || srv_n_open(s) > 0) {
        int n = kvl_engine_poll(s->e, s->evbuf, SRV_POLL_MAX, 0.1);
        for (int i = 0; i < n; i++)
            route(s, &s->evbuf[i]);
        double now = kvl_now();
        srv_dash_tick(s, now);
        if (now - last_probe >= 0.1) {
            probe_hangups(s);
            last_probe = now;
        }
    }
    return NULL;
}

kvl_status srv_dispatch_start(kvl_server *s, kvl_error *err) {
    if (!(s->evbuf = calloc(SRV_POLL_MAX, sizeof *s->evbuf)))
        return kvl_errorf(err, KVL_E_NOMEM, "serve: out of memory");
    srv_dash_init(s);
    atomic_store(&s->disp_stop, 0);
    int rc = pthread_create(&s->disp, NULL, dispatcher, s);
    if (rc) {
        srv_dash_free(s);
        free(s->evbuf);
        s->evbuf = NULL;
        return kvl_errorf(err, KVL_E_NOMEM, "serve: pthread_create: %s", strerror(rc));
    }
    s->disp_started = true;
    return KVL_OK;
}

void srv_dispatch_stop(kvl_server *s) {
    if (!s->disp_started)
        return;
    atomic_store(&s->disp_stop, 1);
    pthread_join(s->disp, NULL);
    s->disp_started = false;
    srv_dash_free(s);
    free(s->evbuf);
    s->evbuf = NULL;
}
