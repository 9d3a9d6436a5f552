/* Drivers of the HTTP/1.1 parsers (see http_drive.h).
 *
 * Request side: the llhttp settings of core/http/parser.c on a server connection (sl_conn_t) that has a real
 * uv loop and timer but no socket; the connection is corked, so the one write the parser makes (the
 * "100 Continue" answer) lands in its write buffer instead of a socket. The read loop is that of conn.c's
 * parse_more; every piece is copied into a fresh buffer with the unparsed rest, so anything that kept a
 * pointer into an earlier read shows up as a use after free.
 *
 * Upstream side: the llhttp settings of core/upstream/proxy_parse.c (proxied responses, PASS and FILTER) and
 * of core/upstream/client.c (sluice.http), fed as proxy.c's and client.c's process() feed them. client.c
 * keeps its exchange type and settings private, so this file includes client.c itself (the real code,
 * compiled once here instead of from the core library; no copy of it). */
#include "http_drive.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/conn.h"
#include "http/parser.h"
#include "http/path.h"
#include "http/response.h"
#include "server/settings.h"
#include "upstream/proxy_parse.h"

/* The real client.c: its sl_http_t, callbacks and settings (csettings) are static. */
#include "upstream/client.c"

static sl_worker_t W;
static sl_conn_t C;

void fz_http_init(void)
{
    static int ready;
    if (ready)
        return;
    ready = 1;
    sl_settings_defaults();
    uv_loop_init(&W.loop);
    /* client.c sets its settings up in sl_http_start, which needs a running worker thread; the same
     * callbacks, set up the same way */
    llhttp_settings_init(&csettings);
    csettings.on_message_begin = on_begin;
    csettings.on_header_field = on_field;
    csettings.on_header_value = on_value;
    csettings.on_headers_complete = on_headers;
    csettings.on_body = on_body;
    csettings.on_message_complete = on_complete;
}

/* A fresh client connection, as sl_conn_accept leaves it (minus the socket), corked. */
static void conn_reset(void)
{
    if (C.req)
        sl_req_release(C.req);
    if (C.w) { /* the timer is linked into the loop: close it before its memory is reused */
        uv_close((uv_handle_t *)&C.timer, NULL);
        uv_run(&W.loop, UV_RUN_NOWAIT);
    }
    sl_buf_free(&C.wbuf);
    memset(&C, 0, sizeof(C));
    C.w = &W;
    uv_timer_init(&W.loop, &C.timer);
    C.timer.data = &C;
    llhttp_init(&C.parser, HTTP_REQUEST, sl__http_parser_settings());
    C.parser.data = &C;
    C.corked = 1;
}

static void set_limits(int small)
{
    sl_settings_defaults();
    if (small) {
        sl_settings.max_header_size = 256;
        sl_settings.max_url_length = 64;
        sl_settings.max_body_size = 64;
    }
}

/* ---- requests ---- */

static int within(const sl_buf_t *b, const char *p, size_t len)
{
    if (len == 0)
        return 1;
    return b->base && p >= b->base && p + len <= b->base + b->len;
}

/* A request the parser handed on (conn.c's dispatch): its invariants, then its fingerprint. */
static void check_request(sl_req_t *r, fz_req_result_t *res)
{
    FZ_CHECK(r != NULL);
    FZ_CHECK(r->head.len <= sl_settings.max_header_size);
    FZ_CHECK(r->url_len <= sl_settings.max_url_length);
    FZ_CHECK(r->nheaders <= 256);
    FZ_CHECK(r->nheaders == 0 || r->headers == r->hdr_alloc);
    FZ_CHECK(r->nheaders <= r->hdr_cap || r->nheaders == 0);
    /* the path lives in the head, or is a constant "/" or "*" (a target without path bytes of its own) */
    FZ_CHECK(within(&r->head, r->path, r->path_len) ||
             (r->path_len == 1 && (strcmp(r->path, "/") == 0 || strcmp(r->path, "*") == 0)));
    FZ_CHECK(within(&r->head, r->query, r->query_len));
    /* the path routes and upstreams see is normalised (normalising it again changes nothing: path.c), or "*";
     * the query is the raw target's, as sent */
    if (!(r->path_len == 1 && r->path[0] == '*')) {
        char *again = malloc(r->path_len + 1);
        size_t n = 0;
        FZ_CHECK(again != NULL);
        FZ_CHECK(sl_path_normalize(r->path, r->path_len, again, &n, SL_PATH_KEEP_ENCODED_SLASH) == 0);
        FZ_CHECK(n == r->path_len && memcmp(again, r->path, n) == 0);
        free(again);
    }
    const char *url = r->head.base + r->url_off;
    const char *q = memchr(url, '?', r->url_len);
    FZ_CHECK(q ? (r->query_len == (size_t)(url + r->url_len - q - 1) && memcmp(r->query, q + 1, r->query_len) == 0)
               : r->query_len == 0);
    FZ_CHECK(within(&r->head, r->host, r->host_len));
    FZ_CHECK(r->http_minor == 0 || r->host_len > 0 || sl_req_header(r, "host", 4) != NULL);
    FZ_CHECK(r->body_len <= sl_settings.max_body_size);
    FZ_CHECK(r->body_len == r->body_received);
    FZ_CHECK(r->body_expected < 0 || (uint64_t)r->body_expected == r->body_len);
    FZ_CHECK(r->method_len > 0 && strlen(r->method) == r->method_len);
    uint64_t h = res->fp;
    h = fz_hash(h, r->method, r->method_len);
    h = fz_hash(h, r->path, r->path_len);
    h = fz_hash(h, r->query, r->query_len);
    h = fz_hash(h, r->host, r->host_len);
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const sl_header_t *hd = &r->headers[i];
        if ((!within(&r->head, hd->name, hd->name_len) || !within(&r->head, hd->value, hd->value_len)) &&
            fz_known("request-trailers")) {
            C.wbuf.len = 0;
            if (res->nreq == 0) /* the body is intact: the chunked harness still compares it */
                sl_buf_append(&res->body0, r->body, r->body_len);
            res->nreq++;
            return; /* its headers cannot be read safely */
        }
        if (!within(&r->head, hd->name, hd->name_len) || !within(&r->head, hd->value, hd->value_len))
            fz_fail(
                "request header %u of %u points outside the request's head (name %p+%u, value %p+%u, head "
                "%p+%zu)",
                i, r->nheaders, (const void *)hd->name, hd->name_len, (const void *)hd->value, hd->value_len,
                (const void *)r->head.base, r->head.len);
        h = fz_hash(h, hd->name, hd->name_len);
        h = fz_hash(h, hd->value, hd->value_len);
    }
    h = fz_hash(h, r->body, r->body_len);
    h = fz_hash_int(h, r->keepalive * 4 + r->http_minor * 2 + (r->body_expected < 0));
    /* the one write of the parser: "100 Continue", for an HTTP/1.1 request that asked for it */
    const sl_header_t *expect = sl_req_header(r, "expect", 6);
    int wants = expect && r->http_minor >= 1 && expect->value_len == 12 &&
                strncasecmp(expect->value, "100-continue", 12) == 0;
    static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
    FZ_CHECK(C.wbuf.len == (wants ? sizeof(cont) - 1 : 0));
    FZ_CHECK(!wants || memcmp(C.wbuf.base, cont, sizeof(cont) - 1) == 0);
    C.wbuf.len = 0;
    if (res->nreq == 0)
        sl_buf_append(&res->body0, r->body, r->body_len);
    res->fp = h;
    res->nreq++;
}

/* conn.c's parse_more over rbuf[*rpos, rlen): returns 1 once the connection answered an error. */
static int parse_more(const char *rbuf, size_t rlen, size_t *rpos, fz_req_result_t *res)
{
    while (*rpos < rlen) {
        const char *start = rbuf + *rpos;
        llhttp_errno_t err = llhttp_execute(&C.parser, start, rlen - *rpos);
        if (err == HPE_OK) {
            *rpos = rlen;
            return 0;
        }
        if (err == HPE_PAUSED) {
            const char *pos = llhttp_get_error_pos(&C.parser);
            FZ_CHECK(pos >= start && pos <= rbuf + rlen);
            *rpos = (size_t)(pos - rbuf);
            llhttp_resume(&C.parser);
            if (C.parser.upgrade) {
                llhttp_init(&C.parser, HTTP_REQUEST, sl__http_parser_settings());
                C.parser.data = &C;
            }
            check_request(C.req, res); /* dispatch: the request is answered at once */
            sl_req_release(C.req);
            C.req = NULL;
            continue;
        }
        int status = C.err_status ? C.err_status : 400;
        if (err == HPE_PAUSED_UPGRADE)
            status = 501;
        FZ_CHECK(status == 400 || status == 413 || status == 414 || status == 431 || status == 501 ||
                 status == 503 || status == 505);
        res->status = status;
        return 1;
    }
    return 0;
}

void fz_req_run(const uint8_t *data, size_t len, const fz_cuts_t *cuts, int small, fz_req_result_t *res)
{
    fz_http_init();
    set_limits(small);
    conn_reset();
    res->fp = FZ_HASH0;
    res->nreq = 0;
    res->status = 0;
    char *rbuf = NULL;
    size_t rlen = 0, rpos = 0, off = 0;
    for (size_t i = 0; off < len; i++) {
        size_t piece = fz_cuts_piece(cuts, i);
        if (piece > len - off)
            piece = len - off;
        /* a new read buffer each time: the unparsed rest moves, as when conn.c's rbuf grows */
        char *nb = malloc(rlen - rpos + piece);
        FZ_CHECK(nb != NULL);
        if (rlen > rpos)
            memcpy(nb, rbuf + rpos, rlen - rpos);
        memcpy(nb + rlen - rpos, data + off, piece);
        rlen = rlen - rpos + piece;
        rpos = 0;
        free(rbuf);
        rbuf = nb;
        off += piece;
        if (parse_more(rbuf, rlen, &rpos, res))
            break;
    }
    free(rbuf);
    conn_reset();
}

/* A streaming parser may see a size limit pass before it sees the byte that makes the request malformed, or
 * the other way round, depending on where a read ended: both answers reject the same request. */
static int same_rejection(int a, int b)
{
    int la = a == 413 || a == 414 || a == 431, lb = b == 413 || b == 414 || b == 431;
    return a == b || (a == 400 && lb) || (b == 400 && la);
}

void fz_req_same(const fz_req_result_t *a, const fz_req_result_t *b)
{
    if (a->nreq != b->nreq || a->fp != b->fp || !same_rejection(a->status, b->status))
        fz_fail("request parser: whole feed gave %d request(s), status %d, fingerprint %016llx; cut feed "
                "gave %d, "
                "status %d, fingerprint %016llx",
                a->nreq, a->status, (unsigned long long)a->fp, b->nreq, b->status, (unsigned long long)b->fp);
}

/* ---- upstream responses ---- */

static sl_upconn_t UC;

/* Headers of a finished head must still point into the bytes they were copied to, whatever came after them
 * (trailers included): Lua reads them later. */
static int headers_ok(const sl_header_t *list, uint32_t n, const sl_uphdrs_t *h)
{
    if (n > 0 && list != h->list)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        if (!within(&h->bytes, list[i].name, list[i].name_len) ||
            !within(&h->bytes, list[i].value, list[i].value_len))
            return 0;
    return 1;
}

static void check_headers(const sl_header_t *list, uint32_t n, const sl_uphdrs_t *h)
{
    FZ_CHECK(h->bytes.len <= 65536);
    FZ_CHECK(h->n <= 512);
    if (!headers_ok(list, n, h) && (fz_known("upstream-trailers") || fz_known("upstream-empty-header-name")))
        return;
    if (n > 0 && list != h->list)
        fz_fail("upstream headers: the list handed on (%p) is not the parser's list (%p) any more",
                (const void *)list, (const void *)h->list);
    for (uint32_t i = 0; i < n; i++)
        if (!within(&h->bytes, list[i].name, list[i].name_len) ||
            !within(&h->bytes, list[i].value, list[i].value_len))
            fz_fail(
                "upstream header %u of %u points outside the header bytes (name %p+%u, value %p+%u, bytes "
                "%p+%zu)",
                i, n, (const void *)list[i].name, list[i].name_len, (const void *)list[i].value,
                list[i].value_len, (const void *)h->bytes.base, h->bytes.len);
}

static uint64_t head_fp(int status, const sl_header_t *list, uint32_t n, const sl_uphdrs_t *hd)
{
    uint64_t h = fz_hash_int(FZ_HASH0, status);
    if (!headers_ok(list, n, hd))
        return h; /* tolerated "upstream-trailers": the headers cannot be read */
    for (uint32_t i = 0; i < n; i++) {
        h = fz_hash(h, list[i].name, list[i].name_len);
        h = fz_hash(h, list[i].value, list[i].value_len);
    }
    return h;
}

/* What our client received in PASS mode must be one response, framed right, with the upstream's body. */
typedef struct out_check {
    int status, done, is_head;
    sl_buf_t body;
} out_check_t;

static int oc_headers(llhttp_t *p)
{
    out_check_t *oc = p->data;
    oc->status = llhttp_get_status_code(p);
    return oc->is_head ? 1 : 0;
}

static int oc_body(llhttp_t *p, const char *at, size_t len)
{
    out_check_t *oc = p->data;
    return sl_buf_append(&oc->body, at, len) == 0 ? 0 : -1;
}

static int oc_complete(llhttp_t *p)
{
    out_check_t *oc = p->data;
    oc->done++;
    return HPE_PAUSED;
}

static void check_client_output(const sl_buf_t *out, int is_head, int status, const sl_buf_t *body)
{
    static llhttp_settings_t s;
    if (s.on_message_complete == NULL) {
        llhttp_settings_init(&s);
        s.on_headers_complete = oc_headers;
        s.on_body = oc_body;
        s.on_message_complete = oc_complete;
    }
    out_check_t oc = {.is_head = is_head};
    llhttp_t p;
    llhttp_init(&p, HTTP_RESPONSE, &s);
    p.data = &oc;
    llhttp_errno_t err = llhttp_execute(&p, out->base ? out->base : "", out->len);
    const char *end = err == HPE_PAUSED ? llhttp_get_error_pos(&p) : NULL;
    if (err == HPE_OK) { /* a body delimited by the end of the connection (HTTP/1.0 client) */
        err = llhttp_finish(&p);
        if (err == HPE_PAUSED) /* oc_complete, from the finish */
            err = HPE_OK;
    }
    if ((err != HPE_OK && err != HPE_PAUSED) || oc.done != 1 || (end && end != out->base + out->len))
        fz_fail("PASS: the client got a badly framed response (%s: %s, %d message(s), %zu of %zu bytes "
                "read):\n%.*s",
                llhttp_errno_name(err), llhttp_get_error_reason(&p) ? llhttp_get_error_reason(&p) : "",
                oc.done, end ? (size_t)(end - out->base) : out->len, out->len,
                (int)(out->len > 2000 ? 2000 : out->len), out->base ? out->base : "");
    if (oc.status != status)
        fz_fail("PASS: the client got status %d for the upstream's %d", oc.status, status);
    if (oc.body.len != body->len || (body->len && memcmp(oc.body.base, body->base, body->len) != 0))
        fz_fail("PASS: the client got a body of %zu bytes for the upstream's %zu", oc.body.len, body->len);
    sl_buf_free(&oc.body);
}

/* Feeds the pieces to an upstream response parser as proxy.c's and client.c's process() do, calling after()
 * once per llhttp_execute (the user takes what arrived); returns 1 when the response ended (its end, or the
 * connection's end for a body without a length), 0 when it failed. */
static int feed_response(llhttp_t *hp, const uint8_t *msg_done, const uint8_t *headers_done,
                         const uint8_t *data, size_t len, const fz_cuts_t *cuts, void (*after)(void *),
                         void *arg)
{
    char *rbuf = NULL;
    size_t rlen = 0, rpos = 0, off = 0;
    int ok = -1;
    for (size_t i = 0; off < len && ok < 0; i++) {
        size_t piece = fz_cuts_piece(cuts, i);
        if (piece > len - off)
            piece = len - off;
        char *nb = malloc(rlen - rpos + piece);
        FZ_CHECK(nb != NULL);
        if (rlen > rpos)
            memcpy(nb, rbuf + rpos, rlen - rpos);
        memcpy(nb + rlen - rpos, data + off, piece);
        rlen = rlen - rpos + piece;
        rpos = 0;
        free(rbuf);
        rbuf = nb;
        off += piece;
        while (rpos < rlen && !*msg_done) {
            llhttp_errno_t err = llhttp_execute(hp, rbuf + rpos, rlen - rpos);
            if (err == HPE_OK) {
                rpos = rlen;
            } else if (err == HPE_PAUSED) {
                const char *pos = llhttp_get_error_pos(hp);
                FZ_CHECK(pos >= rbuf + rpos && pos <= rbuf + rlen);
                rpos = (size_t)(pos - rbuf);
                llhttp_resume(hp);
            } else {
                ok = 0; /* fail(SL_UPERR_BAD_RESPONSE) */
                break;
            }
            after(arg);
        }
        if (*msg_done && ok < 0)
            ok = 1;
    }
    free(rbuf);
    if (ok < 0) { /* the upstream closed the connection (on_up_read with UV_EOF) */
        llhttp_errno_t e = *headers_done ? llhttp_finish(hp) : HPE_USER;
        ok = *headers_done && (e == HPE_OK || e == HPE_PAUSED || *msg_done);
    }
    after(arg);
    return ok;
}

typedef struct proxy_ctx {
    sl_proxy_t p;
    sl_buf_t *pending, *taken;
} proxy_ctx_t;

static void proxy_after(void *arg)
{
    proxy_ctx_t *x = arg;
    if (x->p.resp.headers_done)
        check_headers(x->p.resp.headers, x->p.resp.nheaders, &x->p.hdrs);
    if (x->pending->len) { /* Lua took the chunk (sl_proxy_read), or the client's socket took the bytes */
        sl_buf_append(x->taken, x->pending->base, x->pending->len);
        x->pending->len = 0;
    }
}

/* proxy.c: the response to a proxied request; out gets what the client received (PASS). */
static void proxy_run(int mode, int is_head, int client_minor, const uint8_t *data, size_t len,
                      const fz_cuts_t *cuts, fz_resp_result_t *res, sl_buf_t *out)
{
    conn_reset();
    sl_req_t *r = sl_req_new(&C, 1);
    FZ_CHECK(r != NULL);
    r->method = is_head ? "HEAD" : "GET";
    r->method_len = (uint32_t)strlen(r->method);
    r->http_minor = (uint8_t)client_minor;
    r->keepalive = 1;
    C.req = r;
    static proxy_ctx_t x;
    memset(&x, 0, sizeof(x));
    sl_proxy_t *p = &x.p;
    p->req = r;
    p->mode = mode == FZ_RESP_PASS ? SL_PROXY_PASS : SL_PROXY_FILTER;
    p->is_head = (uint8_t)is_head;
    x.pending = mode == FZ_RESP_PASS ? &C.wbuf : &p->chunkbuf;
    x.taken = mode == FZ_RESP_PASS ? out : &res->body;
    memset(&UC, 0, sizeof(UC));
    UC.owner = p;
    llhttp_init(&UC.parser, HTTP_RESPONSE, sl__proxy_parser_settings());
    UC.parser.data = &UC;
    int ok = feed_response(&UC.parser, &p->msg_done, &p->resp.headers_done, data, len, cuts, proxy_after, &x);
    if (ok && mode == FZ_RESP_PASS) {
        FZ_CHECK(p->head_sent);
        sl_resp_finish(r); /* proxy.c end() */
        proxy_after(&x);
    }
    res->ok = ok;
    if (p->resp.headers_done) {
        res->odd_headers = !headers_ok(p->resp.headers, p->resp.nheaders, &p->hdrs);
        res->status = p->resp.status;
        check_headers(p->resp.headers, p->resp.nheaders, &p->hdrs);
        res->fp = head_fp(p->resp.status, p->resp.headers, p->resp.nheaders, &p->hdrs);
    }
    sl__uphdrs_free(&p->hdrs);
    sl_buf_free(&p->chunkbuf);
    conn_reset(); /* releases r */
}

typedef struct client_ctx {
    sl_http_t h;
    sl_buf_t *taken;
} client_ctx_t;

static void client_after(void *arg)
{
    client_ctx_t *x = arg;
    if (x->h.res.headers_done)
        check_headers(x->h.res.headers, x->h.res.nheaders, &x->h.hdrs);
    if ((x->h.flags & SL_HTTP_STREAM) && x->h.body.len) { /* Lua takes each piece (sl_http_take) */
        sl_buf_append(x->taken, x->h.body.base, x->h.body.len);
        x->h.body.len = 0;
    }
}

/* client.c: the response to a sluice.http request, buffered or streamed to Lua. */
static void client_run(int stream, int is_head, const uint8_t *data, size_t len, const fz_cuts_t *cuts,
                       fz_resp_result_t *res)
{
    static client_ctx_t x;
    memset(&x, 0, sizeof(x));
    sl_http_t *h = &x.h;
    h->flags = stream ? SL_HTTP_STREAM : 0;
    h->max_body = 16.0 * 1024 * 1024;
    h->is_head = (uint8_t)is_head;
    x.taken = &res->body;
    memset(&UC, 0, sizeof(UC));
    UC.owner = h;
    llhttp_init(&UC.parser, HTTP_RESPONSE, &csettings);
    UC.parser.data = &UC;
    int ok = feed_response(&UC.parser, &h->msg_done, &h->res.headers_done, data, len, cuts, client_after, &x);
    if (h->body.len)
        sl_buf_append(&res->body, h->body.base, h->body.len);
    res->ok = ok;
    if (h->res.headers_done) {
        res->status = h->res.status;
        check_headers(h->res.headers, h->res.nheaders, &h->hdrs);
        res->fp = head_fp(h->res.status, h->res.headers, h->res.nheaders, &h->hdrs);
    }
    sl_buf_free(&h->body);
    sl__uphdrs_free(&h->hdrs);
}

void fz_resp_run(int mode, int is_head, int client_minor, const uint8_t *data, size_t len,
                 const fz_cuts_t *cuts, fz_resp_result_t *res)
{
    fz_http_init();
    set_limits(0);
    memset(res, 0, sizeof(*res));
    res->fp = FZ_HASH0;
    if (mode == FZ_RESP_CLIENT || mode == FZ_RESP_CLIENT_STREAM) {
        client_run(mode == FZ_RESP_CLIENT_STREAM, is_head, data, len, cuts, res);
        return;
    }
    if (mode == FZ_RESP_FILTER) {
        proxy_run(mode, is_head, client_minor, data, len, cuts, res, NULL);
        return;
    }
    sl_buf_t out = {0};
    proxy_run(FZ_RESP_PASS, is_head, client_minor, data, len, cuts, res, &out);
    if (res->ok) {
        /* the body as the upstream framed it, from a FILTER run of the same bytes */
        fz_resp_result_t ref = {0};
        ref.fp = FZ_HASH0;
        proxy_run(FZ_RESP_FILTER, is_head, client_minor, data, len, cuts, &ref, NULL);
        if (!ref.ok && fz_known("filter-empty-body")) {
            sl_buf_free(&out);
            return;
        }
        if (!ref.ok)
            fz_fail("proxy: the response completes in PASS mode but not in FILTER mode (status %d)",
                    res->status);
        check_client_output(&out, is_head, res->status, &ref.body);
        sl_buf_append(&res->body, ref.body.base, ref.body.len);
        sl_buf_free(&ref.body);
    }
    sl_buf_free(&out);
}

void fz_resp_same(const fz_resp_result_t *a, const fz_resp_result_t *b, const char *what)
{
    /* "filter-empty-body": FILTER (a) stops at a body-less head that the others complete */
    if (!a->ok && b->ok && a->status == b->status && a->body.len == 0 && b->body.len == 0 &&
        fz_known("filter-empty-body"))
        return;
    if (a->ok != b->ok || a->status != b->status || (a->ok && a->fp != b->fp) ||
        (a->ok &&
         (a->body.len != b->body.len || (a->body.len && memcmp(a->body.base, b->body.base, a->body.len)))))
        fz_fail("%s differs from proxy FILTER fed whole: complete %d/%d, status %d/%d, head %016llx/%016llx, "
                "body %zu/%zu bytes",
                what, a->ok, b->ok, a->status, b->status, (unsigned long long)a->fp,
                (unsigned long long)b->fp, a->body.len, b->body.len);
}
