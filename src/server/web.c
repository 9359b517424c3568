/*
 * GET / and GET /static/NAME: the built-in page (web/index.html, app.js,
 * style.css), served from the byte arrays compiled into the binary, so
 * that it works offline and needs no file beside kvllm.
 *
 * The page holds no data: it needs no API key (its /v1 calls do, and the
 * page asks the user for the key when one answers 401). Every answer
 * carries the asset's ETag and "Cache-Control: no-cache" (the browser
 * revalidates; an unchanged file costs a 304 with no body), nosniff, and
 * a Content-Security-Policy that allows only the server's own scripts,
 * styles and fetches. An unknown name is a 404.
 *
 * Work per call is one lookup in a table of a few rows; nothing here
 * touches the engine.
 */
#include "server/web.h"
#include "server/openai.h"

#include <string.h>

static const char *content_type(const char *name) {
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(dot, types[i].ext))
            return types[i].type;
    return "application/octet-stream";
}

int srv_web_find(const char *url) {
    const char *name = NULL;
    if (!strcmp(url, "/"))
        name = "index.html";
    else if (!strncmp(url, "/static/", 8))
        name = url + 8;
    for (int i = 0; name && i < srv_web_n_assets; i++)
        if (!strcmp(name, srv_web_assets[i].name))
            return i;
    return -1;
}

/* Does an If-None-Match header list etag (or say "*")? */
static bool etag_matches(const char *inm, const char *etag) {
    if (!inm)
        return false;
    size_t n = strlen(etag);
    for (const char *p = inm; *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (!strncmp(p, "W/", 2))
            p += 2;
        if (*p == '*' || (!strncmp(p, etag, n) && (p[n] == ',' || p[n] == ' ' || !p[n])))
            return true;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

enum MHD_Result srv_web_reply(srv_call *c, struct MHD_Connection *conn) {
    static const char missing[] = "404: no such page; the page is at /\n";
    const srv_web_asset *a = c->asset >= 0 ? &srv_web_assets[c->asset] : NULL;
    bool fresh = a && etag_matches(MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                               MHD_HTTP_HEADER_IF_NONE_MATCH),
                                   a->etag);
    unsigned status = !a ? 404 : fresh ? 304 : 200;
    size_t n = status == 200 ? a->size : status == 404 ? sizeof missing - 1 : 0;
    void *body = status == 200 ? (void *)a->data : (void *)missing;
    struct MHD_Response *r = MHD_create_response_from_buffer(n, body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                            a ? content_type(a->name) : "text/plain; charset=utf-8");
    if (a) {
        MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, a->etag);
        MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    }
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                            "base-uri 'none'; frame-ancestors 'none'");
    return srv_queue(c, conn, status, r);
}
