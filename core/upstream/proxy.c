/* Proxying one request to an upstream over a pooled connection, with the response either streamed to the
 * client in C (PASS) or handed to Lua chunk by chunk (FILTER).
 *
 * Nothing here runs Lua while Lua is inside an FFI call: work that Lua starts (sl_proxy_start, sl_proxy_read)
 * continues from a zero-delay timer ("kick"), and the coroutine is resumed only from libuv callbacks. Each
 * callback holds a reference on the request, since resuming Lua may end the request and free the proxy. */
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
#include "lua/vm.h"
#include "upstream/forward.h"
#include "upstream/pool.h"
#include "upstream/proxy_parse.h"
#include "upstream/url.h"

static void attempt(sl_proxy_t *p);
static void process(sl_proxy_t *p);
static void read_start(sl_proxy_t *p);
static const sl_upconn_ops_t proxy_ops;

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static sl_req_t *hold(sl_proxy_t *p)
{
    p->req->refs++;
    return p->req;
}

/* Resumes the coroutine if it waits for us. Only from libuv callbacks. */
static void notify_lua(sl_proxy_t *p)
{
    if (!p->lua_wants)
        return;
    p->lua_wants = 0;
    sl_vm_resume(p->req);
}

static void detach_conn(sl_proxy_t *p, int reusable)
{
    sl_upconn_t *uc = p->uc;
    if (uc == NULL)
        return;
    p->uc = NULL;
    uc->owner = NULL;
    uv_timer_stop(&uc->timer);
    if (reusable && uc->rpos == uc->rlen)
        sl__pool_put(uc, p->pool_size, p->idle_timeout);
    else
        sl__upconn_close(uc);
}

/* The exchange is over (error 0: complete). Tells the client side and Lua. */
static void end(sl_proxy_t *p, int error)
{
    if (p->resp.done)
        return;
    sl_req_t *r = p->req;
    p->resp.done = 1;
    p->resp.error = error;
    r->upstream_time = now_s() - p->t_start;
    r->upstream_status = (uint32_t)p->resp.status;
    /* an upstream that answered before it had the whole body may still be reading it: not reusable */
    detach_conn(p, error == 0 && p->uc && llhttp_should_keep_alive(&p->uc->parser) &&
                       (!p->body_stream || p->body_all));
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

static void fail(sl_proxy_t *p, int error, const char *what, int code)
{
    sl_upconn_t *uc = p->uc;
    /* A kept-alive connection the upstream had already closed: once more, on a fresh one (retried makes
     * attempt skip the pool, whose other connections may have gone stale just the same). */
    if (uc && uc->reused && !p->got_bytes && !p->retried && !p->body_moved && error == SL_UPERR_RESET &&
        sl__http_replayable(p->out.base, p->out.len)) {
        p->retried = 1;
        detach_conn(p, 0);
        attempt(p);
        return;
    }
    if (error != SL_UPERR_CLIENT_GONE)
        sl_log(SL_LOG_WARN, "upstream %s:%d: %s: %s%s%s", p->host, p->port, sl_uperr_name(error), what,
               code ? ": " : "", code ? uv_strerror(code) : "");
    detach_conn(p, 0);
    end(p, error);
}

static void on_timeout(sl_upconn_t *uc)
{
    sl_proxy_t *p = uc->owner;
    sl_req_t *r = hold(p);
    char what[80];
    if (p->head_armed)
        snprintf(what, sizeof(what), "response head not complete within %gs (timeout.header)",
                 p->header_timeout);
    fail(p, SL_UPERR_TIMEOUT, p->head_armed ? what : "timed out", 0);
    sl_req_release(r);
}

/* Arms the connection's timer (0 stops it). */
static void arm(sl_proxy_t *p, double seconds)
{
    p->head_armed = 0;
    if (p->uc)
        sl__upconn_arm(p->uc, seconds);
}

/* The head is due header_timeout after the request was sent or its first byte came, whichever is first. */
static void head_due(sl_proxy_t *p)
{
    if (p->head_by == 0 && p->header_timeout > 0 && !p->resp.headers_done)
        p->head_by = uv_now(&p->w->loop) + (uint64_t)(p->header_timeout * 1000);
}

/* Arms the wait for the upstream: the read timeout, or what is left of the head deadline if that is sooner
 * (each byte of a trickled head would restart a read timeout). */
static void arm_read(sl_proxy_t *p)
{
    double t = p->read_timeout;
    int head = 0;
    if (p->head_by && !p->resp.headers_done) {
        uint64_t now = uv_now(&p->w->loop);
        double left = p->head_by > now ? (double)(p->head_by - now) / 1000 : 0.001;
        if (left <= t) {
            t = left;
            head = 1;
        }
    }
    arm(p, t);
    p->head_armed = (uint8_t)head;
}

/* Reading again after back-pressure (sl__upconn_hold: the upstream is not read while the client (PASS) or Lua
 * (FILTER) catches up, and its read timeout does not run meanwhile): the read timeout starts over. */
static void resume_reads(sl_proxy_t *p)
{
    p->held = 0;
    if (p->uc && !p->opening && sl__upconn_unhold(p->uc))
        arm_read(p);
}

/* ---- response ---- */

/* Parses what is buffered on the upstream connection and acts on it. */
static void process(sl_proxy_t *p)
{
    sl_upconn_t *uc = p->uc;
    while (uc && uc->rpos < uc->rlen && !p->msg_done) {
        if (p->mode == SL_PROXY_FILTER &&
            (p->chunkbuf.len > 0 || (p->resp.headers_done && p->lua_wants == 0)))
            break; /* Lua has not taken the last event yet */
        llhttp_errno_t err = llhttp_execute(&uc->parser, uc->rbuf + uc->rpos, uc->rlen - uc->rpos);
        if (err == HPE_OK) {
            uc->rpos = uc->rlen;
        } else if (err == HPE_PAUSED) {
            uc->rpos = (size_t)(llhttp_get_error_pos(&uc->parser) - uc->rbuf);
            llhttp_resume(&uc->parser);
        } else {
            /* a PASS write that found the client gone stops the parser too: not the upstream's fault */
            fail(p, p->req->client_gone ? SL_UPERR_CLIENT_GONE : SL_UPERR_BAD_RESPONSE,
                 p->hdrs.why ? p->hdrs.why : llhttp_get_error_reason(&uc->parser), 0);
            return;
        }
    }
    if (uc == NULL || p->resp.done)
        return;
    if (p->msg_done) {
        end(p, 0);
        return;
    }
    if (uc->rpos == uc->rlen)
        uc->rpos = uc->rlen = 0;
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
    sl_req_t *r = p->req;
    if (r->conn && r->conn->write_pending > SL_PROXY_HIGH_WATER && uc->reading) {
        sl__upconn_hold(p->uc);
        p->blocked = 1;
        r->conn->blocked_proxy = p;
    }
}

/* ---- connection I/O ---- */

static void on_up_read(sl_upconn_t *uc, ssize_t nread)
{
    sl_proxy_t *p = uc->owner;
    if (nread == 0)
        return;
    sl_req_t *r = hold(p);
    if (nread < 0) {
        if (nread == UV_EOF && p->resp.headers_done && !p->resp.done &&
            (llhttp_finish(&uc->parser) == HPE_OK || p->msg_done)) {
            /* body delimited by the close of the connection */
            uc->rpos = uc->rlen = 0;
            p->msg_done = 1;
            end(p, 0);
        } else if (!p->resp.done) {
            fail(p, SL_UPERR_RESET, nread == UV_EOF ? "closed before the response was complete" : "read",
                 nread == UV_EOF ? 0 : (int)nread);
        }
        sl_req_release(r);
        return;
    }
    p->got_bytes = 1;
    head_due(p);
    arm_read(p);
    /* head and body pieces of one read leave in one write */
    sl_conn_t *c = r->conn;
    if (c)
        sl__conn_cork(c);
    process(p);
    if (c && r->conn == c) {
        /* Lua's writes of this read were corked too: a failed flush is the news of a client that left, so the
         * connection closes and the upstream call is cancelled now, not at its end */
        if (sl__conn_uncork(c) != 0)
            sl__conn_close(c);
        else
            sl__conn_progress(c);
    }
    if (p->uc && !p->resp.done && p->mode == SL_PROXY_FILTER &&
        (p->chunkbuf.len > 0 || p->resp.headers_done) && !p->lua_wants) {
        sl__upconn_hold(p->uc); /* bounded buffering: wait until Lua asks for more */
        p->held = 1;
    }
    sl_req_release(r);
}

static void read_start(sl_proxy_t *p)
{
    if (p->uc)
        sl__upconn_read_start(p->uc);
}

/* The environment's proxy for this call (SL_PROXY_ENV_PROXY: provider calls leaving a company network), and
 * the request line: absolute-form through a plain HTTP proxy, as given otherwise (CONNECT tunnels the request
 * as it is). 0 or -1 on out of memory. */
static int via_env_proxy(sl_proxy_t *p, int flags, const char *host, size_t hostlen, int port,
                         const char *head, size_t headlen)
{
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
        return sl_buf_append(&p->out, head, headlen);
    snprintf(p->target.proxy_host, sizeof(p->target.proxy_host), "%s", px.host);
    p->target.proxy_port = px.port;
    if (tls)
        return sl_buf_append(&p->out, head, headlen);
    char authority[300];
    int r = sl_buf_append(&p->out, head, (size_t)(sp - head) + 1);
    r |= sl_buf_appends(&p->out, "http://");
    r |= sl_buf_appends(&p->out, sl_url_authority(authority, sizeof(authority), host, hostlen, port, 0));
    r |= sl_buf_append(&p->out, sp + 1, headlen - (size_t)(sp - head) - 1);
    return r ? -1 : 0;
}

/* Arms the timer for what the exchange waits on once nothing is queued: the response, or (a body still
 * arriving) nothing from the upstream: the client's body_timeout bounds the wait then. */
static void after_write(sl_proxy_t *p)
{
    if (p->uc == NULL)
        return;
    if (!p->body_stream || p->body_all)
        head_due(p);
    if (p->blocked || p->held || (p->body_stream && !p->body_all))
        arm(p, 0);
    else
        arm_read(p);
}

/* The pieces that carry what the client sent of a streamed body since the last call: chunk-framed when the
 * client chunked it, with the end once all of it arrived (head and tail are the caller's scratch for the
 * framing). Marks the body taken; returns the number of pieces (up to 3). */
static unsigned body_pieces(sl_proxy_t *p, uv_buf_t iov[3], char head[24], char tail[8])
{
    sl_req_t *r = p->req;
    sl_buf_t *b = &r->bodybuf;
    unsigned n = 0;
    size_t tl = 0;
    if (b->len > 0) {
        if (p->body_chunked)
            iov[n++] = uv_buf_init(head, (unsigned)snprintf(head, 24, "%zx\r\n", b->len));
        iov[n++] = uv_buf_init(b->base, (unsigned)b->len);
        if (p->body_chunked) {
            memcpy(tail, "\r\n", 2);
            tl = 2;
        }
        b->len = 0; /* the bytes stay valid until the next append: callers copy or write them before */
    }
    if (!r->body_pending && !r->body_failed && !p->body_all) {
        if (p->body_chunked) {
            memcpy(tail + tl, "0\r\n\r\n", 5);
            tl += 5;
        }
        p->body_all = 1;
    }
    if (tl > 0)
        iov[n++] = uv_buf_init(tail, (unsigned)tl);
    return n;
}

/* Appends the pieces of body_pieces to out (the first write of the exchange). 0 or -1 on out of memory. */
static int frame_body(sl_proxy_t *p, sl_buf_t *out)
{
    uv_buf_t iov[3];
    char head[24], tail[8];
    unsigned n = body_pieces(p, iov, head, tail);
    int rc = 0;
    for (unsigned i = 0; i < n; i++)
        rc |= sl_buf_append(out, iov[i].base, iov[i].len);
    return rc ? -1 : 0;
}

void sl__proxy_body_more(sl_proxy_t *p)
{
    if (!p->body_stream || p->body_all || p->resp.done || !p->sent || p->uc == NULL ||
        p->uc->pending_writes > 0)
        return; /* sent when the connection is ready, or when the write before it finished */
    sl_req_t *r = hold(p);
    uv_buf_t iov[3];
    char head[24], tail[8];
    unsigned n = body_pieces(p, iov, head, tail);
    if (n > 0) {
        /* straight from the body buffer: only what the socket does not take now is copied */
        p->body_moved = 1;
        int rc = sl__upconn_writev(p->uc, iov, n);
        if (rc < 0)
            fail(p, SL_UPERR_RESET, "write", rc);
        else if (rc == 0)
            arm(p, p->send_timeout);
        else
            after_write(p);
    }
    if (!p->resp.done && r->conn)
        sl__conn_body_resume(r->conn);
    sl_req_release(r);
}

static void on_up_written(sl_upconn_t *uc, int status)
{
    sl_proxy_t *p = uc->owner;
    sl_req_t *r = hold(p);
    if (status < 0) {
        fail(p, SL_UPERR_RESET, "write", status);
    } else {
        after_write(p);
        sl__proxy_body_more(p);
    }
    sl_req_release(r);
}

static void send_request(sl_proxy_t *p)
{
    sl_upconn_t *uc = p->uc;
    sl__uphdrs_restart(&p->hdrs);
    llhttp_init(&uc->parser, HTTP_RESPONSE, sl__proxy_parser_settings());
    uc->parser.data = uc;
    uc->rlen = uc->rpos = 0;
    p->resp.reused = (uint8_t)uc->reused;
    p->sent = 1;
    read_start(p);
    int rc = sl__upconn_write(uc, p->out.base, p->out.len);
    if (rc < 0) {
        fail(p, SL_UPERR_RESET, "write", rc);
    } else if (rc == 0) {
        arm(p, p->send_timeout);
    } else {
        after_write(p);
        sl__proxy_body_more(p); /* what arrived of the body while connecting */
    }
}

static void on_up_ready(sl_upconn_t *uc, int error, const char *why)
{
    sl_proxy_t *p = uc->owner;
    sl_req_t *r = hold(p);
    p->opening = 0;
    if (error) {
        p->uc = NULL; /* closed by the pool */
        fail(p, error, why ? why : "connect", 0);
    } else {
        p->uc = uc;
        send_request(p);
    }
    sl_req_release(r);
}

static const sl_upconn_ops_t proxy_ops = {
    .ready = on_up_ready, .read = on_up_read, .written = on_up_written, .timeout = on_timeout};

static void attempt(sl_proxy_t *p)
{
    p->got_bytes = 0;
    p->sent = 0;
    p->opening = 1;
    p->uc = NULL;
    p->head_by = 0;
    sl_upconn_t *uc = sl__upconn_open(p->w, &p->target, &proxy_ops, p, p->retried);
    if (uc == NULL) {
        p->opening = 0;
        end(p, SL_UPERR_NOMEM);
        return;
    }
    if (p->opening)
        p->uc = uc; /* still connecting: kept so it can be cancelled */
}

static void on_kick(uv_timer_t *t)
{
    sl_proxy_t *p = t->data;
    sl_req_t *r = hold(p);
    if (!p->started) {
        p->started = 1;
        if (p->bad_proxy)
            end(p, SL_UPERR_CONNECT);
        else
            attempt(p);
    } else if (p->resp.done) {
        notify_lua(p);
    } else {
        process(p);
        /* Lua took what it had (FILTER), or streams in C now (sl_proxy_pass: it may have held the reads) */
        if (!p->resp.done && (p->mode == SL_PROXY_FILTER ? p->resp.chunk_len == 0 : !p->blocked))
            resume_reads(p);
    }
    sl_req_release(r);
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

sl_proxy_t *sl_proxy_start(sl_req_t *req, const sl_proxy_opts_t *o)
{
    const char *host = o->host, *head = o->head, *body = o->body;
    size_t hostlen = o->hostlen, headlen = o->headlen, bodylen = o->bodylen;
    int port = o->port, flags = o->flags;
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
    int stream = (flags & SL_PROXY_STREAM) && req->body_pending;
    if (stream && (req->body_streamed || req->body_failed))
        return NULL; /* what arrived of it went to an earlier call */
    sl_proxy_t *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return NULL;
    p->req = req;
    p->body_stream = (uint8_t)stream;
    p->body_chunked = (uint8_t)(stream && req->body_expected < 0);
    int framing = p->body_chunked                       ? SL_FWD_CHUNKED
                  : stream || (flags & SL_PROXY_LENGTH) ? SL_FWD_LENGTH
                                                        : SL_FWD_NO_BODY;
    uint64_t length = stream ? (uint64_t)req->body_expected : bodylen;
    int rc = sl_buf_reserve(&p->out, headlen + (stream ? req->bodybuf.len + 32 : bodylen));
    rc |= via_env_proxy(p, flags, host, hostlen, port, head, headlen);
    if (rc == 0 && (flags & SL_PROXY_FORWARD))
        rc = sl__forward_headers(&p->out, req, o->skip, o->skiplen, length, framing, req->conn->tls != NULL);
    rc |= stream ? frame_body(p, &p->out) : sl_buf_append(&p->out, body, bodylen);
    if (rc != 0) {
        sl_buf_free(&p->out);
        free(p);
        return NULL;
    }
    req->body_streamed = (uint8_t)stream;
    memcpy(p->host, host, hostlen);
    p->port = port;
    size_t alen = hostlen < sizeof(req->upstream_addr) - 8 ? hostlen : sizeof(req->upstream_addr) - 8;
    memcpy(req->upstream_addr, host, alen);
    req->upstream_addr[alen++] = ':';
    req->upstream_addr[alen + sl_fmt_u64(req->upstream_addr + alen, (uint64_t)port)] = '\0';
    memcpy(p->target.host, host, hostlen);
    p->target.port = port;
    p->target.tls = (flags & SL_PROXY_TLS) != 0;
    p->target.verify = (flags & SL_PROXY_NO_VERIFY) == 0;
    p->target.connect_timeout = o->connect_timeout;
    if (o->sni && strlen(o->sni) < sizeof(p->target.sni))
        memcpy(p->target.sni, o->sni, strlen(o->sni) + 1);
    if (o->ca_file && *o->ca_file) {
        p->ca_file = strdup(o->ca_file);
        p->target.ca_file = p->ca_file;
    }
    p->w = req->conn->w;
    p->mode = o->mode;
    p->connect_timeout = o->connect_timeout;
    p->send_timeout = o->send_timeout;
    p->read_timeout = o->read_timeout;
    p->header_timeout = o->header_timeout;
    p->pool_size = o->pool_size;
    p->idle_timeout = o->idle_timeout;
    p->resp.content_length = -1;
    p->is_head = headlen >= 5 && memcmp(head, "HEAD ", 5) == 0;
    p->t_start = now_s();
    p->lua_wants = 1;
    uv_timer_init(&p->w->loop, &p->kick);
    p->kick.data = p;
    req->proxy = p;
    uv_timer_start(&p->kick, on_kick, 0, 0);
    return p;
}

int sl_proxy_read(sl_proxy_t *p)
{
    if (p->resp.chunk_len > 0) {
        p->chunkbuf.len = 0;
        p->resp.chunk_len = 0;
        p->resp.chunk = NULL;
    }
    p->lua_wants = 1;
    uv_timer_start(&p->kick, on_kick, 0, 0);
    return 0;
}

void sl_proxy_set_read_timeout(sl_proxy_t *p, double seconds)
{
    if (seconds > 0)
        p->read_timeout = seconds;
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
    uv_timer_start(&p->kick, on_kick, 0, 0);
    return 0;
}

void sl__proxy_client_gone(sl_proxy_t *p)
{
    if (p->resp.done)
        return;
    sl_req_t *r = hold(p);
    fail(p, SL_UPERR_CLIENT_GONE, "client gone", 0);
    sl_req_release(r);
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
        resume_reads(p);
}

static void on_proxy_closed(uv_handle_t *h)
{
    sl_proxy_t *p = h->data;
    sl_buf_free(&p->out);
    sl__uphdrs_free(&p->hdrs);
    sl_buf_free(&p->chunkbuf);
    free(p->ca_file);
    free(p);
}

void sl__proxy_free(sl_proxy_t *p)
{
    if (p->uc)
        detach_conn(p, 0);
    if (p->req && p->req->conn && p->req->conn->blocked_proxy == p)
        p->req->conn->blocked_proxy = NULL;
    p->req = NULL;
    uv_close((uv_handle_t *)&p->kick, on_proxy_closed);
}
