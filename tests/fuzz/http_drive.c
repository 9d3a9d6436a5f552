/* Drivers of the HTTP/1.1 parsers (see http_drive.h).
 *
 * Request side: the llhttp settings of core/http/parser.c on a server connection (sl_conn_t) that has a real
 * uv loop and timer but no socket; the connection is corked, so the one write the parser makes (the
 * "100 Continue" answer) lands in its write buffer instead of a socket. The read loop is that of conn.c's
 * parse_more; every piece is copied into a fresh buffer with the unparsed rest, so anything that kept a
 * pointer into an earlier read shows up as a use after free.
 *
 * Upstream side: the real owners of an upstream exchange (core/upstream/exchange.c), proxy.c (PASS and
 * FILTER, for a request that came in on a client connection over memory, tests/support/memconn.c, with a stub
 * handler playing proxy.lua) and client.c (sluice.http, buffered and streamed), over a fake upstream
 * connection (the sl_upnet_t seam) that hands them the fuzzed response in the cut plan's reads, each in a
 * fresh buffer with the unparsed rest, so a pointer kept into an earlier read is a use after free. */
#include "http_drive.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/conn.h"
#include "http/parser.h"
#include "http/path.h"
#include "http/response.h"
#include "lua/vm.h"
#include "memconn.h"
#include "server/settings.h"
#include "upstream/client.h"
#include "upstream/pool.h"
#include "upstream/proxy.h"

static sl_worker_t W;
static sl_conn_t C;
static const sl_upnet_t fake_net;

void fz_http_init(void)
{
    static int ready;
    if (ready)
        return;
    ready = 1;
    sl_settings_defaults();
    uv_loop_init(&W.loop);
    sl__vm_set_worker(&W); /* sl_http_start runs on "its" worker */
    sl__pool(&W)->net = &fake_net;
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
    /* the limit is on what the client sent; a normalised path (and the "Host" name an absolute-form HTTP/1.0
     * target adds) is written after it (parser.c request_target) */
    FZ_CHECK(r->head.len <= sl_settings.max_header_size + r->path_len + 4);
    FZ_CHECK(r->url_len <= sl_settings.max_url_length);
    FZ_CHECK(r->nheaders <= 256);
    FZ_CHECK(r->nheaders == 0 || r->headers == r->hdrs.list);
    FZ_CHECK(r->nheaders == r->hdrs.n && (r->nheaders <= r->hdrs.cap || r->nheaders == 0));
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
    FZ_CHECK(
        q ? (r->query_len == (size_t)(url + r->url_len - q - 1) && memcmp(r->query, q + 1, r->query_len) == 0)
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

/* The fake upstream connection: it is ready at once and takes every write; the fuzzed response arrives in
 * up_feed's reads. */
static sl_upconn_t *UC;

static sl_upconn_t *fu_open(sl_worker_t *w, const sl_uptarget_t *t, const sl_upconn_ops_t *ops, void *owner,
                            int fresh)
{
    (void)t;
    (void)fresh;
    sl_upconn_t *uc = calloc(1, sizeof(*uc));
    FZ_CHECK(uc != NULL);
    uc->w = w;
    uc->owner = owner;
    uc->ops = ops;
    UC = uc;
    ops->ready(uc, 0, NULL);
    return uc;
}

static int fu_writev(sl_upconn_t *uc, const uv_buf_t *bufs, unsigned n)
{
    (void)uc;
    (void)bufs;
    (void)n;
    return 1;
}

static void fu_arm(sl_upconn_t *uc, double seconds)
{
    (void)uc;
    (void)seconds;
}

static void fu_read_start(sl_upconn_t *uc)
{
    uc->reading = 1;
}

static void fu_hold(sl_upconn_t *uc)
{
    uc->reading = 0;
}

static int fu_unhold(sl_upconn_t *uc)
{
    int was = uc->reading;
    uc->reading = 1;
    return !was;
}

static void fu_release(sl_upconn_t *uc, int reusable, int max, double idle)
{
    (void)reusable;
    (void)max;
    (void)idle;
    if (UC == uc)
        UC = NULL;
    free(uc->rbuf);
    free(uc);
}

static const sl_upnet_t fake_net = {.open = fu_open,
                                    .writev = fu_writev,
                                    .arm = fu_arm,
                                    .read_start = fu_read_start,
                                    .hold = fu_hold,
                                    .unhold = fu_unhold,
                                    .release = fu_release};

/* Turns of the loop: zero-delay kicks (Lua asked for more), the client connection's I/O. */
static void settle(sl_memconn_t *m)
{
    for (int i = 0; i < 8; i++) {
        if (m)
            while (sl_memconn_step(m))
                ;
        uv_run(&W.loop, UV_RUN_NOWAIT);
    }
}

/* The upstream sends data in the pieces of cuts, then (end) closes the connection, unless the exchange ended
 * first (*done). Each read lands in a fresh buffer holding the unparsed rest. */
static void up_feed(const uint8_t *data, size_t len, const fz_cuts_t *cuts, sl_memconn_t *m,
                    const uint8_t *done, int end)
{
    size_t off = 0;
    for (size_t i = 0; off < len && UC && !*done; i++) {
        sl_upconn_t *uc = UC;
        size_t piece = fz_cuts_piece(cuts, i), rest = uc->rlen - uc->rpos;
        if (piece > len - off)
            piece = len - off;
        char *nb = malloc(rest + piece);
        FZ_CHECK(nb != NULL);
        if (rest)
            memcpy(nb, uc->rbuf + uc->rpos, rest);
        memcpy(nb + rest, data + off, piece);
        free(uc->rbuf);
        uc->rbuf = nb;
        uc->rpos = 0;
        uc->rlen = rest + piece;
        uc->rcap = rest + piece;
        off += piece;
        uc->ops->read(uc, (ssize_t)piece);
        settle(m);
    }
    if (end && UC && !*done) {
        UC->ops->read(UC, UV_EOF); /* the end of a body without a length, or a response cut short */
        settle(m);
    }
}

static uint64_t head_fp(int status, const sl_header_t *list, uint32_t n)
{
    FZ_CHECK(n <= 512);
    uint64_t h = fz_hash_int(FZ_HASH0, status);
    for (uint32_t i = 0; i < n; i++) { /* read at the end: a header left dangling is a use after free */
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

/* proxy.c: a stub handler plays proxy.lua for the request on the memory connection. */
static struct {
    int mode, is_head;
    sl_proxy_t *p;
    fz_resp_result_t *res;
    uint8_t done;
} PX;

static void px_end(sl_req_t *r)
{
    sl_upresp_t *u = (sl_upresp_t *)PX.p;
    PX.done = 1;
    PX.res->ok = u->error == 0;
    if (u->headers_done) {
        PX.res->status = u->status;
        PX.res->fp = head_fp(u->status, u->headers, u->nheaders);
    }
    if (u->error && !r->resp_started && r->conn)
        sl_resp_send_error(r, 502, "upstream failed");
    else if (!r->resp_started && r->conn)
        sl_resp_send_error(r, 500, "no response");
    else if (!r->resp_done && r->conn)
        u->error ? sl_resp_abort(r) : sl_resp_finish(r);
    if (r->abort && r->conn)
        sl__conn_close(r->conn);
    if (r->conn)
        sl__conn_progress(r->conn);
    sl_req_release(r);
}

static void px_handle(sl_worker_t *w, sl_req_t *r)
{
    (void)w;
    r->refs++; /* the coroutine's */
    static const char get[] = "GET /x HTTP/1.1\r\nHost: up.test\r\n\r\n",
                      head[] = "HEAD /x HTTP/1.1\r\nHost: up.test\r\n\r\n";
    sl_proxy_opts_t o = {.host = "up.test",
                         .hostlen = 7,
                         .port = 80,
                         .head = PX.is_head ? head : get,
                         .headlen = PX.is_head ? sizeof(head) - 1 : sizeof(get) - 1,
                         .nfields = 1,
                         .body = "",
                         .mode = PX.mode,
                         .pool_size = 4,
                         .connect_timeout = 5,
                         .send_timeout = 5,
                         .read_timeout = 60,
                         .header_timeout = 60,
                         .idle_timeout = 60};
    PX.p = sl_proxy_start(r, &o);
    FZ_CHECK(PX.p != NULL);
}

static void px_resume(sl_req_t *r)
{
    sl_upresp_t *u = (sl_upresp_t *)PX.p;
    if (PX.mode == SL_PROXY_PASS || u->done) {
        if (u->chunk_len > 0)
            sl_buf_append(&PX.res->body, u->chunk, u->chunk_len);
        px_end(r);
        return;
    }
    if (u->headers_done && !r->resp_started)
        sl_resp_start(r, u->status, "", 0, 0, -1);
    if (u->chunk_len > 0) /* a body_filter takes the chunk */
        sl_buf_append(&PX.res->body, u->chunk, u->chunk_len);
    sl_proxy_read(PX.p);
}

static int px_resume_later(sl_req_t *r)
{
    (void)r;
    return 0;
}

static const sl_handler_t px_stub = {
    .handle = px_handle, .resume = px_resume, .resume_later = px_resume_later};

/* proxy.c: the response to a proxied request; out gets what the client received (PASS). */
static void proxy_run(int mode, int is_head, int client_minor, const uint8_t *data, size_t len,
                      const fz_cuts_t *cuts, fz_resp_result_t *res, sl_buf_t *out)
{
    memset(&PX, 0, sizeof(PX));
    PX.mode = mode == FZ_RESP_PASS ? SL_PROXY_PASS : SL_PROXY_FILTER;
    PX.is_head = is_head;
    PX.res = res;
    sl_memconn_t *m = sl_memconn_open(&W, &px_stub);
    FZ_CHECK(m != NULL);
    char req[64];
    snprintf(req, sizeof(req), "%s / HTTP/1.%d\r\nHost: gw\r\n\r\n", is_head ? "HEAD" : "GET", client_minor);
    sl_memconn_send(m, req, strlen(req));
    settle(m);
    FZ_CHECK(PX.p != NULL && UC != NULL);
    up_feed(data, len, cuts, m, &PX.done, 1);
    FZ_CHECK(PX.done);
    if (out)
        sl_buf_append(out, m->out.base, m->out.len);
    /* a head our client cannot be given (a header name that is not a token: llhttp lets some through) is
     * answered 500 with an error id instead, and the exchange ends there; FILTER hands it to Lua, whose
     * sl_resp_start refuses it the same way */
    res->refused = m->out.base && memmem(m->out.base, m->out.len, "internal error (id ", 19) != NULL;
    sl_memconn_free(m, &W.loop);
    settle(NULL);
}

/* client.c: the response to a sluice.http request, buffered or streamed to Lua. */
static void client_run(int stream, int is_head, const uint8_t *data, size_t len, const fz_cuts_t *cuts,
                       fz_resp_result_t *res)
{
    sl_http_opts_t o = {.method = is_head ? "HEAD" : "GET",
                        .mlen = is_head ? 4 : 3,
                        .url = "http://up.test/x",
                        .ulen = 16,
                        .headers = "",
                        .body = "",
                        .flags = SL_HTTP_NO_PROXY | (stream ? SL_HTTP_STREAM : 0),
                        .pool_size = 4,
                        .connect_timeout = 5,
                        .send_timeout = 5,
                        .read_timeout = 60,
                        .idle_timeout = 60};
    sl_httpres_t *h = sl_http_start(NULL, &o);
    FZ_CHECK(h != NULL);
    settle(NULL);
    FZ_CHECK(UC != NULL);
    size_t off = 0;
    /* Lua takes each streamed piece as it comes (sl_http_take) */
    for (size_t i = 0; off < len && UC && !h->done; i++) {
        size_t piece = fz_cuts_piece(cuts, i);
        if (piece > len - off)
            piece = len - off;
        up_feed(data + off, piece, &(fz_cuts_t){.n = 0}, NULL, &h->done, 0);
        off += piece;
        if (stream && h->body_len) {
            sl_buf_append(&res->body, h->body, h->body_len);
            sl_http_take(h);
            settle(NULL);
        }
    }
    if (UC && !h->done) {
        UC->ops->read(UC, UV_EOF);
        settle(NULL);
    }
    for (int i = 0; i < 8 && !h->done && stream; i++) { /* the rest of a stream, after the end */
        if (h->body_len) {
            sl_buf_append(&res->body, h->body, h->body_len);
            sl_http_take(h);
        }
        settle(NULL);
    }
    FZ_CHECK(h->done);
    res->ok = h->error == 0;
    if (h->headers_done) {
        res->status = h->status;
        res->fp = head_fp(h->status, h->headers, h->nheaders);
    }
    if (h->error == 0 && h->body_len)
        sl_buf_append(&res->body, h->body, h->body_len);
    sl_http_close(h);
    settle(NULL);
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
    if (res->ok && !res->refused) {
        /* the body as the upstream framed it, from a FILTER run of the same bytes */
        fz_resp_result_t ref = {0};
        ref.fp = FZ_HASH0;
        proxy_run(FZ_RESP_FILTER, is_head, client_minor, data, len, cuts, &ref, NULL);
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
    if (b->refused)
        return; /* PASS ended at a head it could not forward (see proxy_run) */
    if (a->ok != b->ok || a->status != b->status || (a->ok && a->fp != b->fp) ||
        (a->ok &&
         (a->body.len != b->body.len || (a->body.len && memcmp(a->body.base, b->body.base, a->body.len)))))
        fz_fail("%s differs from proxy FILTER fed whole: complete %d/%d, status %d/%d, head %016llx/%016llx, "
                "body %zu/%zu bytes",
                what, a->ok, b->ok, a->status, b->status, (unsigned long long)a->fp,
                (unsigned long long)b->fp, a->body.len, b->body.len);
}
