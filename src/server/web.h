/*
 * The web page's static files, compiled into the server (the table is
 * generated from web/ by cmake/embed_web.cmake), and the handler of
 * GET / and GET /static/NAME (web.c).
 */
#ifndef KVL_SERVER_WEB_H
#define KVL_SERVER_WEB_H

#include "server/openai.h"

#include <stddef.h>

typedef struct srv_web_asset {
    const char *name;          /* file name under web/ */
    const unsigned char *data; /* (size) bytes, then one 0 byte */
    size_t size;
    const char *etag; /* "\"<16 hex digits of the file's SHA-1>\"" */
} srv_web_asset;

extern const srv_web_asset srv_web_assets[];
extern const int srv_web_n_assets;

/* The asset a GET of url names ("/" is index.html; "/static/NAME"), its
 * index in srv_web_assets, or -1 when there is none. This function can't
 * fail. */
int srv_web_find(const char *url);
/* Answer c (route R_WEB, c->asset from srv_web_find): 200 with the bytes,
 * 304 when If-None-Match names its ETag, 404 when there is no such
 * asset. MHD_NO only when libmicrohttpd could not queue the answer. */
enum MHD_Result srv_web_reply(srv_call *c, struct MHD_Connection *conn);

/* http.c: queue r (released here) as c's answer with status, closing the
 * connection after it while the server drains or c asks to; c is then
 * answered and the status counted. MHD_NO when libmicrohttpd refuses. */
enum MHD_Result srv_queue(srv_call *c, struct MHD_Connection *conn, unsigned status,
                          struct MHD_Response *r);

#endif
