/* Proxying one request to an upstream: the owner of an exchange (exchange.c) whose response is either
 * streamed to the client in C (PASS: head re-framed by core/http/response.c, body written as it is parsed,
 * the upstream not read while the client is slow) or handed to Lua chunk by chunk (FILTER: the coroutine
 * resumed with the head, then with each chunk, the upstream not read until Lua asks for more).
 *
 * Nothing here runs Lua while Lua is inside an FFI call: work that Lua starts (sl_proxy_start, sl_proxy_read,
 * sl_proxy_pass) continues from the exchange's kick, and the coroutine is resumed only from libuv callbacks,
 * each holding a reference on the request (resuming Lua may end the request and free the proxy). */
#include "upstream/proxy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "common/log.h"
#include "http/conn.h"
#include "http/field.h"
#include "http/response.h"
#include "upstream/exchange.h"
#include "upstream/forward.h"
#include "upstream/url.h"

struct sl_proxy {
    sl_upresp_t resp; /* first: Lua casts the pointer */
    sl_exchange_t ex;
    sl_req_t *req;
    char host[256];
    int port;
    char *ca_file;
    int mode;
    sl_buf_t chunkbuf; /* FILTER: body bytes parsed and not yet taken by Lua */
    sl_conn_t *corked; /* the client connection corked for the read being parsed */
    uint8_t blocked;   /* PASS: reading stopped for client back-pressure */
    uint8_t lua_wants; /* Lua asked for the next event */
    uint8_t head_sent; /* PASS: response head written to the client */
    uint8_t started;   /* the first kick began the exchange */
    uint8_t head_told; /* FILTER: Lua was resumed for the head; later wake-ups need a chunk or the end */
    uint8_t bad_proxy; /* SL_PROXY_ENV_PROXY and the variable is set but unusable: the call fails */
    double t_start;
};

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static sl_proxy_t *of(sl_exchange_t *x)
{
    return (sl_proxy_t *)((char *)x - offsetof(sl_proxy_t, ex));
}

/* Resumes the coroutine if it waits for us. Only from libuv callbacks. */
static void notify_lua(sl_proxy_t *p)
{
    if (!p->lua_wants)
        return;
    p->lua_wants = 0;
    p->req->handler->resume(p->req);
}

/* ---- the exchange's events ---- */

static void *on_hold(sl_exchange_t *x)
{
    sl_req_t *r = of(x)->req;
    r->refs++;
    return r;
}

static void on_release(void *token)
{
    sl_req_release(token);
}

static int hop_by_hop(const sl_header_t *h, const sl_header_t *conn)
{
    if (conn && sl__http_token_listed(conn->value, conn->value_len, h->name, h->name_len))
        return 1;
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                        "te",         "trailer",    "upgrade",          "content-length",
                                        "date",       "server"};
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (h->name_len == strlen(names[i]) && strncasecmp(h->name, names[i], h->name_len) == 0)
            return 1;
    return 0;
}

/* PASS mode: the upstream's head goes to the client, re-framed by our response code. */
static int send_head(sl_proxy_t *p)
{
    sl_req_t *r = p->req;
    if (r->conn == NULL)
        return -1;
    sl_buf_t h = {0};
    uint32_t n = 0;
    const sl_header_t *conn = NULL;
    for (uint32_t i = 0; i < p->resp.nheaders; i++)
        if (p->resp.headers[i].name_len == 10 && strncasecmp(p->resp.headers[i].name, "connection", 10) == 0)
            conn = &p->resp.headers[i];
    for (uint32_t i = 0; i < p->resp.nheaders; i++) {
        const sl_header_t *hd = &p->resp.headers[i];
        if (hop_by_hop(hd, conn))
            continue;
        sl_buf_append(&h, hd->name, hd->name_len);
        sl_buf_append(&h, ": ", 2);
        sl_buf_append(&h, hd->value, hd->value_len);
        sl_buf_append(&h, "\r\n", 2);
        n++;
    }
    int rc = sl_resp_start(r, p->resp.status, h.base ? h.base : "", h.len, n, p->resp.content_length);
    sl_buf_free(&h);
    p->head_sent = rc != SL_ERR_HEADER; /* refused: a whole 500 went out instead, not to be cut short */
    return rc;
}

static int on_head(sl_exchange_t *x)
{
    sl_proxy_t *p = of(x);
    p->resp.headers = x->hdrs.list.list;
    p->resp.nheaders = x->hdrs.list.n;
    p->resp.status = x->status;
    p->resp.content_length = x->content_length;
    p->resp.reused = x->reused;
    p->resp.headers_done = 1;
    if (p->mode == SL_PROXY_PASS)
        return send_head(p) == 0 ? 0 : -1;
    return SL_EXCHANGE_PAUSE; /* Lua sees the head before any of the body */
}

static int on_body(sl_exchange_t *x, const char *at, size_t len)
{
    sl_proxy_t *p = of(x);
    if (p->mode == SL_PROXY_PASS)
        return p->req->conn && sl_resp_write(p->req, at, len) == 0 ? 0 : -1;
    return sl_buf_append(&p->chunkbuf, at, len);
}

/* FILTER: no more is parsed while Lua has not taken the last event. */
static int on_room(sl_exchange_t *x)
{
    sl_proxy_t *p = of(x);
    return p->mode != SL_PROXY_FILTER || !(p->chunkbuf.len > 0 || (p->resp.headers_done && !p->lua_wants));
}

static void on_parsed(sl_exchange_t *x)
{
    sl_proxy_t *p = of(x);
    if (p->mode == SL_PROXY_FILTER) {
        if (p->chunkbuf.len > 0 && p->resp.chunk_len == 0) {
            p->resp.chunk = p->chunkbuf.base;
            p->resp.chunk_len = (uint32_t)p->chunkbuf.len;
        }
        /* Wake Lua for the head once, then only for a chunk (or the end): a wake-up with nothing new would
         * have Lua ask again at once, and a zero-delay kick started from the kick callback spins
         * (libuv 1.44). */
        if (p->resp.chunk_len > 0 || (p->resp.headers_done && !p->head_told)) {
            if (p->lua_wants)
                p->head_told = 1;
            notify_lua(p);
        }
        return;
    }
    sl_conn_t *c = p->req->conn;
    if (c && c->write_pending > SL_PROXY_HIGH_WATER && x->uc && x->uc->reading) {
        sl__exchange_hold(x);
        p->blocked = 1;
        c->blocked_proxy = p;
    }
}

/* Head and body pieces of one read leave in one write. */
static void on_read_begin(sl_exchange_t *x)
{
    sl_proxy_t *p = of(x);
    p->corked = p->req->conn;
    if (p->corked)
        sl__conn_cork(p->corked);
}

static void on_read_end(sl_exchange_t *x)
{
    sl_proxy_t *p = of(x);
    sl_conn_t *c = p->corked;
    p->corked = NULL;
    if (c && p->req->conn == c) {
        /* Lua's writes of this read were corked too: a failed flush is the news of a client that left, so the
         * connection closes and the upstream call is cancelled now, not at its end */
        if (sl__conn_uncork(c) != 0)
            sl__conn_close(c);
        else
            sl__conn_progress(c);
    }
    if (x->uc && !x->closed && !p->resp.done && p->mode == SL_PROXY_FILTER &&
        (p->chunkbuf.len > 0 || p->resp.headers_done) && !p->lua_wants)
        sl__exchange_hold(x); /* bounded buffering: wait until Lua asks for more */
}

static void on_end(sl_exchange_t *x, int error, const char *what, int code)
{
    sl_proxy_t *p = of(x);
    sl_req_t *r = p->req;
    /* a PASS write that found the client gone stops the parser too: not the upstream's fault */
    if (error == SL_UPERR_BAD_RESPONSE && r->client_gone)
        error = SL_UPERR_CLIENT_GONE;
    if (error && error != SL_UPERR_CLIENT_GONE && what)
        sl_log(SL_LOG_WARN, "upstream %s:%d: %s: %s%s%s", p->host, p->port, sl_uperr_name(error), what,
               code ? ": " : "", code ? uv_strerror(code) : "");
    p->resp.done = 1;
    p->resp.error = error;
    p->resp.reused = x->reused;
    r->upstream_time = now_s() - p->t_start;
    r->upstream_status = (uint32_t)p->resp.status;
    if (p->mode == SL_PROXY_FILTER && p->chunkbuf.len > 0) {
        p->resp.chunk = p->chunkbuf.base;
        p->resp.chunk_len = (uint32_t)p->chunkbuf.len;
    }
    if (p->mode == SL_PROXY_PASS && p->head_sent && r->conn) {
        if (error)
            sl__conn_close(r->conn); /* the only way left to tell the client its body is cut short */
        else
            sl_resp_finish(r);
    }
    p->lua_wants = 1; /* the end is always reported */
    notify_lua(p);
    if (r->conn)
        sl__conn_progress(r->conn);
}

static void on_kick(sl_exchange_t *x)
{
    sl_proxy_t *p = of(x);
    if (!p->started) {
        p->started = 1;
        if (p->bad_proxy)
            sl__exchange_fail(x, SL_UPERR_CONNECT, NULL, 0); /* warned about once, at the first call */
        else
            sl__exchange_open(x);
    } else if (p->resp.done) {
        notify_lua(p);
    } else {
        sl__exchange_process(x);
        /* Lua took what it had (FILTER), or streams in C now (sl_proxy_pass: it may have held the reads) */
        if (!p->resp.done && (p->mode == SL_PROXY_FILTER ? p->resp.chunk_len == 0 : !p->blocked))
            sl__exchange_resume_reads(x);
    }
}

static const sl_exchange_ops_t proxy_ops = {.hold = on_hold,
                                            .release = on_release,
                                            .kick = on_kick,
                                            .head = on_head,
                                            .body = on_body,
                                            .room = on_room,
                                            .parsed = on_parsed,
                                            .read_begin = on_read_begin,
                                            .read_end = on_read_end,
                                            .end = on_end};

/* ---- starting ---- */

/* The environment's proxy for this call (SL_PROXY_ENV_PROXY: provider calls leaving a company network), and
 * the request line: absolute-form through a plain HTTP proxy, as given otherwise (CONNECT tunnels the request
 * as it is). 0 or -1 on out of memory. */
static int via_env_proxy(sl_proxy_t *p, int flags, const char *host, size_t hostlen, int port,
                         const char *head, size_t headlen)
{
    sl_buf_t *out = &p->ex.out;
    const char *sp = memchr(head, ' ', headlen);
    sl_url_t px;
    char name[256];
    memcpy(name, host, hostlen); /* hostlen < sizeof(p->host) was checked */
    name[hostlen] = '\0';
    int tls = (flags & SL_PROXY_TLS) != 0;
    int rc = (flags & SL_PROXY_ENV_PROXY) ? sl_env_proxy(tls, name, port, &px) : 0;
    if (rc < 0) {
        static int warned;
        if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
            sl_log(SL_LOG_WARN, "%s is set but is not an http:// proxy URL or host:port: provider calls fail",
                   tls ? "HTTPS_PROXY" : "HTTP_PROXY");
        p->bad_proxy = 1;
    }
    if (rc != 1 || sp == NULL)
        return sl_buf_append(out, head, headlen);
    snprintf(p->ex.target.proxy_host, sizeof(p->ex.target.proxy_host), "%s", px.host);
    p->ex.target.proxy_port = px.port;
    if (tls)
        return sl_buf_append(out, head, headlen);
    char authority[300];
    int r = sl_buf_append(out, head, (size_t)(sp - head) + 1);
    r |= sl_buf_appends(out, "http://");
    r |= sl_buf_appends(out, sl_url_authority(authority, sizeof(authority), host, hostlen, port, 0));
    r |= sl_buf_append(out, sp + 1, headlen - (size_t)(sp - head) - 1);
    return r ? -1 : 0;
}

/* Whether what Lua built may go on the wire: the host (it goes into a request line or a CONNECT) and the head
 * (names, values, request line: core/http/field.h). A refusal is logged with the request's id, which the
 * client's 500 carries. */
static int refuse_head(sl_req_t *req, const sl_proxy_opts_t *o)
{
    sl_field_err_t e = {
        .at = o->host, .len = o->hostlen, .kind = "host", .why = "spaces or control characters"};
    char what[300];
    int ended = (o->flags & SL_PROXY_FORWARD) ? 0 : SL_FIELDS_ENDED;
    if (sl_http_host_ok(o->host, o->hostlen) &&
        sl_http_check_request_head(o->head, o->headlen, o->nfields, ended, &e) == 0)
        return 0;
    sl_log(SL_LOG_ERROR, "request %016llx: upstream request (port %d) not sent: %s",
           (unsigned long long)req->id, o->port, sl_http_field_error(&e, what, sizeof(what)));
    return 1;
}

/* The request bytes: head (through the environment's proxy), the client's headers when forwarding, then the
 * body (what arrived of a streamed one). 0 or -1 on out of memory. */
static int build_request(sl_proxy_t *p, sl_req_t *req, const sl_proxy_opts_t *o, int stream)
{
    sl_buf_t *out = &p->ex.out;
    int framing = stream && req->body_expected < 0         ? SL_FWD_CHUNKED
                  : stream || (o->flags & SL_PROXY_LENGTH) ? SL_FWD_LENGTH
                                                           : SL_FWD_NO_BODY;
    uint64_t length = stream ? (uint64_t)req->body_expected : o->bodylen;
    int rc = sl_buf_reserve(out, o->headlen + (stream ? req->bodybuf.len + 32 : o->bodylen));
    rc |= via_env_proxy(p, o->flags, o->host, o->hostlen, o->port, o->head, o->headlen);
    if (rc == 0 && (o->flags & SL_PROXY_FORWARD))
        rc = sl__forward_headers(out, req, o->skip, o->skiplen, length, framing, req->conn->tls != NULL);
    rc |= stream ? sl__upbody_start(&p->ex.body, req, out) : sl_buf_append(out, o->body, o->bodylen);
    return rc ? -1 : 0;
}

sl_proxy_t *sl_proxy_start(sl_req_t *req, const sl_proxy_opts_t *o)
{
    size_t hostlen = o->hostlen;
    if (hostlen == 0 || hostlen >= sizeof(((sl_proxy_t *)0)->host) || req->conn == NULL)
        return NULL;
    if (refuse_head(req, o))
        return NULL;
    if (req->proxy) {
        /* Another call for the same request (AI retries, before any response byte went to the client): the
         * previous one is given up, its connection back to the pool when it ended cleanly, closed otherwise.
         */
        if (req->resp_started)
            return NULL;
        sl__proxy_free(req->proxy);
        req->proxy = NULL;
    }
    int stream = (o->flags & SL_PROXY_STREAM) && req->body_pending;
    if (stream && (req->body_streamed || req->body_failed))
        return NULL; /* what arrived of it went to an earlier call */
    sl_proxy_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->req = req;
    if (build_request(p, req, o, stream) != 0) {
        sl_buf_free(&p->ex.out);
        free(p);
        return NULL;
    }
    req->body_streamed = (uint8_t)stream;
    memcpy(p->host, o->host, hostlen);
    p->port = o->port;
    size_t alen = hostlen < sizeof(req->upstream_addr) - 8 ? hostlen : sizeof(req->upstream_addr) - 8;
    memcpy(req->upstream_addr, o->host, alen);
    req->upstream_addr[alen++] = ':';
    req->upstream_addr[alen + sl_fmt_u64(req->upstream_addr + alen, (uint64_t)o->port)] = '\0';
    sl_exchange_t *x = &p->ex;
    sl_uptarget_t *t = &x->target;
    memcpy(t->host, o->host, hostlen);
    t->port = o->port;
    t->tls = (o->flags & SL_PROXY_TLS) != 0;
    t->verify = (o->flags & SL_PROXY_NO_VERIFY) == 0;
    t->connect_timeout = o->connect_timeout;
    if (o->sni && strlen(o->sni) < sizeof(t->sni))
        memcpy(t->sni, o->sni, strlen(o->sni) + 1);
    if (o->ca_file && *o->ca_file) {
        p->ca_file = strdup(o->ca_file);
        t->ca_file = p->ca_file;
    }
    sl__exchange_init(x, req->conn->w, &proxy_ops);
    x->send_timeout = o->send_timeout;
    x->read_timeout = o->read_timeout;
    x->header_timeout = o->header_timeout;
    x->pool_size = o->pool_size;
    x->idle_timeout = o->idle_timeout;
    x->is_head = o->headlen >= 5 && memcmp(o->head, "HEAD ", 5) == 0;
    p->mode = o->mode;
    p->resp.content_length = -1;
    p->t_start = now_s();
    p->lua_wants = 1;
    req->proxy = p;
    sl__exchange_kick(x);
    return p;
}

/* ---- Lua's side ---- */

int sl_proxy_read(sl_proxy_t *p)
{
    if (p->resp.chunk_len > 0) {
        p->chunkbuf.len = 0;
        p->resp.chunk_len = 0;
        p->resp.chunk = NULL;
    }
    p->lua_wants = 1;
    sl__exchange_kick(&p->ex);
    return 0;
}

void sl_proxy_set_read_timeout(sl_proxy_t *p, double seconds)
{
    if (seconds > 0)
        p->ex.read_timeout = seconds;
}

int sl_proxy_pass(sl_proxy_t *p)
{
    sl_req_t *r = p->req;
    if (p->mode != SL_PROXY_FILTER || !r->resp_started)
        return -1;
    p->mode = SL_PROXY_PASS;
    p->head_sent = 1;
    if (p->chunkbuf.len > 0 && sl_resp_write(r, p->chunkbuf.base, p->chunkbuf.len) != 0)
        return -1;
    p->chunkbuf.len = 0;
    p->resp.chunk_len = 0;
    p->lua_wants = 1;
    sl__exchange_kick(&p->ex);
    return 0;
}

/* ---- the client connection's side ---- */

int sl__proxy_streams_body(const sl_proxy_t *p)
{
    return p->ex.body.req != NULL;
}

void sl__proxy_client_gone(sl_proxy_t *p)
{
    if (p->resp.done)
        return;
    sl_req_t *r = p->req;
    r->refs++;
    sl__exchange_fail(&p->ex, SL_UPERR_CLIENT_GONE, "client gone", 0);
    sl_req_release(r);
}

void sl__proxy_body_more(sl_proxy_t *p)
{
    sl__exchange_body_more(&p->ex);
}

void sl__proxy_unblock(sl_proxy_t *p)
{
    sl_req_t *r = p->req;
    if (r->conn)
        r->conn->blocked_proxy = NULL;
    if (!p->blocked)
        return;
    p->blocked = 0;
    if (!p->resp.done)
        sl__exchange_resume_reads(&p->ex);
}

static void on_closed(sl_exchange_t *x)
{
    sl_proxy_t *p = of(x);
    sl__exchange_free(x);
    sl_buf_free(&p->chunkbuf);
    free(p->ca_file);
    free(p);
}

void sl__proxy_free(sl_proxy_t *p)
{
    if (p->req && p->req->conn && p->req->conn->blocked_proxy == p)
        p->req->conn->blocked_proxy = NULL;
    sl__exchange_close(&p->ex, on_closed);
}
