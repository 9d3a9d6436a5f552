/* Server side of HTTP/1.1: one connection, requests parsed by llhttp one at a time and handed to its handler
 * (the Lua VM, or a test's stub), over a transport (the TCP socket, conn_tcp.c, or memory in tests).
 *
 * The parser is paused at the end of each message, so bytes of a pipelined request stay in the read buffer
 * until the current response is finished; responses therefore leave in request order without a queue. */
#include "http/conn.h"
#include "http/conn_body.h"
#include "http/conn_tls.h"
#include "http/parser.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/log.h"
#include "http/access_log.h"
#include "http/response.h"
#include "server/settings.h"
#include "tls/listener.h"
#include "upstream/proxy.h"

#define READ_CHUNK 16384

static void on_timer_closed(uv_handle_t *h);
static void parse_more(sl_conn_t *c);
static void on_timer(uv_timer_t *t);

/* Every read lands here, one per worker thread (libuv calls alloc and read callbacks back to back): TLS
 * ciphertext is decrypted at once into the connection's rbuf; plaintext is parsed where it lies and only what
 * is left unparsed (a pipelined request, a head cut by the read) moves to a buffer of the connection's own.
 * A connection thus holds no read buffer while its response streams, nor while it is idle. */
static __thread char shared_rbuf[4 * READ_CHUNK];

/* Bytes the client has received so far: handed to the transport, less what it still holds. */
static uint64_t delivered(sl_conn_t *c)
{
    uint64_t unsent = c->io->unsent(c);
    return unsent < c->wrote_total ? c->wrote_total - unsent : 0;
}

void sl__conn_timer(sl_conn_t *c, int kind, double seconds)
{
    if (c->timer_kind == TIMER_GONE)
        return; /* the connection closes on the next loop turn: nothing else is counted */
    if (kind == TIMER_GONE) {
        c->timer_kind = TIMER_GONE;
        uv_timer_start(&c->timer, on_timer, 0, 0);
        return;
    }
    if (kind == TIMER_SEND && c->timer_kind != TIMER_SEND)
        c->send_mark = delivered(c);
    c->timer_kind = kind;
    if (kind == TIMER_NONE || seconds <= 0) {
        uv_timer_stop(&c->timer);
        return;
    }
    uv_timer_start(&c->timer, on_timer, (uint64_t)(seconds * 1000), 0);
}

static void on_timer(uv_timer_t *t)
{
    sl_conn_t *c = t->data;
    switch (c->timer_kind) {
    case TIMER_HEADER:
        sl_log(SL_LOG_INFO, "client %s: header timeout", c->req ? c->req->client_ip : "?");
        sl__conn_send_error(c, 408, "request header timeout");
        break;
    case TIMER_BODY:
        sl__conn_send_error(c, 408, "request body timeout");
        break;
    case TIMER_SEND:
        /* The kernel's send buffer can hold megabytes, so a client that reads slowly but steadily may see no
         * write complete (nor the socket writable) for seconds: what counts is whether it received anything
         * since the last check. */
        if (delivered(c) > c->send_mark) {
            c->send_mark = delivered(c);
            sl__conn_timer(c, TIMER_SEND, sl_settings.send_timeout);
            break;
        }
        sl_log(SL_LOG_INFO, "send timeout, closing connection");
        sl__conn_close(c);
        break;
    case TIMER_GONE:
        sl__conn_close(c);
        break;
    default:
        if (c->tls && !sl_tls_established(c->tls)) {
            char ip[64];
            sl_log(SL_LOG_INFO, "client %s: TLS handshake timeout", sl__conn_peer_ip(c, ip, sizeof(ip)));
        }
        sl__conn_close(c);
        break;
    }
}

/* ---- reading ---- */

/* Makes room for READ_CHUNK more bytes in rbuf; 0 or -1 on out of memory. */
int sl__conn_rbuf_reserve(sl_conn_t *c)
{
    /* an upload being streamed is read in bigger pieces: fewer syscalls per megabyte */
    size_t want = c->req && c->req->body_pending ? 4 * READ_CHUNK : READ_CHUNK;
    if (c->rpos > 0 && (c->rpos == c->rlen || c->rcap - c->rlen < want)) {
        /* what is left (pipelined bytes) moves to the front, rather than the buffer growing behind it */
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    if (c->rcap - c->rlen < want) {
        size_t cap = c->rcap ? c->rcap * 2 : want;
        while (cap - c->rlen < want)
            cap *= 2;
        char *p = realloc(c->rbuf, cap);
        if (p == NULL)
            return -1;
        c->rbuf = p;
        c->rcap = cap;
    }
    return 0;
}

void sl__conn_on_alloc(sl_conn_t *c, uv_buf_t *buf)
{
    if (c->tls || c->rpos == c->rlen) {
        if (c->tls == NULL && c->rbuf) { /* empty: the shared buffer serves instead */
            free(c->rbuf);
            c->rbuf = NULL;
            c->rcap = c->rlen = c->rpos = 0;
        }
        *buf = uv_buf_init(shared_rbuf, sizeof(shared_rbuf));
        return;
    }
    if (sl__conn_rbuf_reserve(c) != 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = c->rbuf + c->rlen;
    buf->len = c->rcap - c->rlen;
}

void sl__conn_read_stop(sl_conn_t *c)
{
    if (c->reading) {
        c->io->read_stop(c);
        c->reading = 0;
    }
}

/* The end of a read into the shared buffer: what is left unparsed moves to a buffer of the connection's own
 * (the next read appends to it); 0, or -1 on out of memory (the connection is closed). */
static int settle(sl_conn_t *c)
{
    size_t left = c->rlen - c->rpos;
    const char *rest = c->rbuf + c->rpos;
    c->rbuf_shared = 0;
    c->rbuf = NULL;
    c->rcap = c->rlen = c->rpos = 0;
    if (left == 0 || c->closing)
        return 0;
    size_t cap = READ_CHUNK;
    while (cap < left + READ_CHUNK)
        cap *= 2;
    if ((c->rbuf = malloc(cap)) == NULL) {
        sl__conn_close(c);
        return -1;
    }
    memcpy(c->rbuf, rest, left);
    c->rcap = cap;
    c->rlen = left;
    return 0;
}

void sl__conn_on_read(sl_conn_t *c, ssize_t nread, const uv_buf_t *buf)
{
    if (nread < 0) {
        sl__conn_client_left(c); /* EOF or an error */
        return;
    }
    if (nread == 0)
        return;
    if (c->tls) {
        if (sl__conn_tls_on_read(c, buf->base, (size_t)nread) != 0)
            return;
    } else if (buf->base == shared_rbuf) { /* rbuf was empty (sl__conn_on_alloc): parsed where it lies */
        c->rbuf = shared_rbuf;
        c->rcap = sizeof(shared_rbuf);
        c->rpos = 0;
        c->rlen = (size_t)nread;
        c->rbuf_shared = 1;
    } else {
        c->rlen += (size_t)nread;
    }
    if (!c->busy || (c->req && c->req->body_pending))
        parse_more(c); /* a request, or the rest of the body of the request being handled */
    else if (c->rlen - c->rpos >= SL_PIPELINE_MAX)
        sl__conn_read_stop(c); /* pipelined requests wait for the answers before them, not without bound */
    if (c->rbuf_shared && settle(c) != 0)
        return;
    if (c->eof && !c->closing)
        sl__conn_client_left(c); /* TLS close_notify: the end of the client's side, as a FIN */
}

void sl__conn_read_start(sl_conn_t *c)
{
    if (!c->reading && !c->eof && !c->closing) {
        if (c->io->read_start(c) == 0)
            c->reading = 1;
    }
}

static void dispatch(sl_conn_t *c)
{
    sl_req_t *r = c->req;
    c->busy = 1;
    c->nrequests++;
    /* a body still arriving stays bounded by body_timeout between its pieces */
    sl__conn_timer(c, r->body_pending ? TIMER_BODY : TIMER_NONE, sl_settings.body_timeout);
    if (c->nrequests >= (unsigned)sl_settings.keepalive_requests || c->w->stopping)
        r->keepalive = 0;
    c->handler->handle(c->w, r);
    sl__conn_progress(c);
}

static void parse_more(sl_conn_t *c)
{
    /* while busy, only the body of the request being handled is parsed: it was handled before its end came */
    while ((!c->busy || (c->req && c->req->body_pending)) && !c->closing && c->rpos < c->rlen) {
        const char *start = c->rbuf + c->rpos;
        llhttp_errno_t err = llhttp_execute(&c->parser, start, c->rlen - c->rpos);
        if (err == HPE_OK) {
            c->rpos = c->rlen;
            break;
        }
        if (err == HPE_PAUSED) {
            c->rpos = (size_t)(llhttp_get_error_pos(&c->parser) - c->rbuf);
            llhttp_resume(&c->parser);
            if (c->parser.upgrade) {
                /* Upgrade is not supported and the request was answered as plain HTTP (Upgrade and Connection
                 * are hop-by-hop): a fresh parser reads what follows as HTTP again */
                llhttp_init(&c->parser, HTTP_REQUEST, sl__http_parser_settings());
                c->parser.data = c;
            }
            if (c->busy) {
                sl__conn_body_done(c); /* goes on with the connection itself */
                return;
            }
            dispatch(c);
            continue;
        }
        int status = c->err_status ? c->err_status : 400;
        if (err == HPE_PAUSED_UPGRADE)
            status = 501;
        const char *own = c->req ? c->req->reject_why : NULL; /* parser.c's own words */
        const char *why = own ? own : llhttp_get_error_reason(&c->parser);
        sl_log(SL_LOG_INFO, "bad request from client, answered %d: %s (%s)", status, llhttp_errno_name(err),
               why && *why ? why : "limit");
        sl__conn_send_error(c, status,
                            own             ? own
                            : status == 413 ? "request body too large"
                            : status == 414 ? "request URI too long"
                            : status == 431 ? "request header fields too large"
                            : status == 501 ? "protocol upgrade not supported"
                            : status == 503 ? "out of memory"
                                            : "malformed HTTP request");
        return;
    }
    if (c->rpos == c->rlen)
        c->rpos = c->rlen = 0;
    if (c->closing)
        return;
    if (!c->busy && sl__conn_body_outgrown(c))
        dispatch(c); /* the request goes on while the rest of its body arrives */
    if (c->busy && !c->closing && c->req && c->req->body_pending)
        sl__conn_body_flow(c);
    else if (!c->closing && (!c->busy || c->rlen - c->rpos < SL_PIPELINE_MAX))
        sl__conn_read_start(c); /* while busy too: a client that leaves is noticed at once */
}

/* ---- writing ---- */

void sl__conn_on_write(sl_conn_wreq_t *wr, int status)
{
    sl_conn_t *c = wr->c;
    c->write_pending -= wr->len;
    free(wr);
    if (status < 0) {
        sl__conn_client_left(c);
        return;
    }
    if (c->timer_kind == TIMER_SEND) /* send_timeout bounds a stall, not the whole download */
        sl__conn_timer(c, c->write_pending ? TIMER_SEND : TIMER_NONE, sl_settings.send_timeout);
    if (c->blocked_proxy && c->write_pending < SL_PROXY_LOW_WATER)
        sl__proxy_unblock(c->blocked_proxy);
    if (c->drain_wait && c->write_pending < SL_RESP_LOW_WATER) {
        sl_req_t *waiter = c->drain_wait;
        c->drain_wait = NULL;
        if (waiter->drain_waiting)
            waiter->handler->resume(waiter);
        sl_req_release(waiter);
        if (c->closing)
            return;
    }
    sl__conn_progress(c);
}

static int write_now(sl_conn_t *c, const uv_buf_t *bufs, unsigned n);

void sl__conn_cork(sl_conn_t *c)
{
    c->corked++;
}

int sl__conn_uncork(sl_conn_t *c)
{
    if (c->corked == 0 || --c->corked > 0 || c->wbuf.len == 0)
        return 0;
    uv_buf_t b = uv_buf_init(c->wbuf.base, (unsigned)c->wbuf.len);
    int rc = write_now(c, &b, 1);
    c->wbuf.len = 0;
    if (c->wbuf.cap > 256 * 1024)
        sl_buf_free(&c->wbuf); /* a big response should not pin memory on an idle connection */
    return rc;
}

int sl__conn_write(sl_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->closing || c->timer_kind == TIMER_GONE)
        return UV_EPIPE;
    if (c->corked) {
        for (unsigned i = 0; i < n; i++)
            if (sl_buf_append(&c->wbuf, bufs[i].base, bufs[i].len) != 0)
                return UV_ENOMEM;
        if (c->wbuf.len < 256 * 1024)
            return 0;
        uv_buf_t b = uv_buf_init(c->wbuf.base, (unsigned)c->wbuf.len);
        int rc = write_now(c, &b, 1);
        c->wbuf.len = 0;
        return rc;
    }
    return write_now(c, bufs, n);
}

/* Sends bytes as they are: at once when the transport takes them, else from a copy queued behind. */
int sl__conn_sock_write(sl_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->closing || c->timer_kind == TIMER_GONE)
        return UV_EPIPE;
    size_t total = 0, done = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    if (c->write_pending == 0) {
        int r = c->io->try_write(c, bufs, n);
        if (r >= 0) {
            done = (size_t)r;
            c->wrote_total += done;
        } else if (r != UV_EAGAIN) {
            sl__conn_write_failed(c); /* EPIPE, ECONNRESET: the client is gone */
            return r;
        }
        if (done == total)
            return 0;
    }
    sl_conn_wreq_t *wr = malloc(sizeof(*wr) + total - done);
    if (wr == NULL)
        return UV_ENOMEM;
    size_t off = sl_iov_gather(wr->data, bufs, n, done);
    wr->c = c;
    wr->len = off;
    int r = c->io->write(c, wr);
    if (r != 0) {
        free(wr);
        sl__conn_write_failed(c);
        return r;
    }
    c->write_pending += off;
    c->wrote_total += off;
    if (c->timer_kind == TIMER_NONE)
        sl__conn_timer(c, TIMER_SEND, sl_settings.send_timeout);
    return 0;
}

static int write_now(sl_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->tls == NULL)
        return sl__conn_sock_write(c, bufs, n);
    return sl__conn_tls_write(c, bufs, n);
}

const char *sl__conn_peer_ip(sl_conn_t *c, char *buf, size_t len)
{
    snprintf(buf, len, "?");
    if (c->peer.ss_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)&c->peer, buf, len);
    else if (c->peer.ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)&c->peer, buf, len);
    return buf;
}

/* ---- request lifecycle ---- */

void sl__conn_progress(sl_conn_t *c)
{
    sl_req_t *r = c->req;
    if (c->closing || !c->busy || r == NULL || !r->resp_done || c->write_pending > 0 || c->corked ||
        c->wbuf.len > 0)
        return;
    if (r->body_pending && sl__conn_body_discard(c))
        return; /* answered before its body ended: finished once the rest is read and dropped */
    /* a write found the client gone: the connection closes (a TLS close_notify after the response too) */
    int keep = r->keepalive && !r->client_gone && !c->w->stopping && !c->eof;
    if (r->co)
        r->log_pending = 1; /* written when the coroutine (its log phase) ends: see vm.c */
    else
        sl_access_log(c->w, r);
    c->req = NULL;
    c->busy = 0;
    r->conn = NULL;
    sl_req_release(r);
    if (!keep) {
        sl__conn_close(c);
        return;
    }
    sl__conn_timer(c, TIMER_IDLE, sl_settings.keepalive_timeout);
    if (c->rpos == c->rlen) {
        /* an idle keep-alive connection holds no buffer: 10k idle clients cost little memory */
        if (!c->rbuf_shared)
            free(c->rbuf);
        c->rbuf = NULL;
        c->rbuf_shared = 0;
        c->rcap = c->rlen = c->rpos = 0;
    }
    parse_more(c);
}

void sl__conn_send_error(sl_conn_t *c, int status, const char *message)
{
    if (c->closing)
        return;
    if (c->req == NULL) {
        c->req = sl_req_new(c, 0);
        if (c->req == NULL) {
            sl__conn_close(c);
            return;
        }
    }
    sl_req_t *r = c->req;
    if (r->resp_started) { /* too late for a status; all we can do is cut the connection */
        sl__conn_close(c);
        return;
    }
    r->keepalive = 0;
    c->busy = 1;
    sl__conn_read_stop(c);
    r->refs++;
    sl_resp_send_error(r, status, message);
    sl__req_body_fail(r); /* a request handled while its body arrived learns it will not get the rest */
    if (c->req == r)
        sl__conn_progress(c);
    sl_req_release(r);
}

void sl__conn_close(sl_conn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    sl__conn_read_stop(c);
    sl_req_t *drain_waiter = c->drain_wait; /* woken below, once the connection's own state is settled */
    c->drain_wait = NULL;
    if (c->req) {
        sl_req_t *r = c->req;
        c->req = NULL;
        r->client_gone = 1;
        r->conn = NULL;
        if (c->busy) { /* a request cut short is logged too (status 499 when nothing was sent) */
            if (r->co)
                r->log_pending = 1;
            else
                sl_access_log(c->w, r);
        }
        if (r->proxy)
            sl__proxy_client_gone(r->proxy);
        sl__req_body_fail(r);
        sl_req_release(r);
    }
    if (c->blocked_proxy)
        c->blocked_proxy = NULL;
    if (drain_waiter) {
        /* from a timer, since this may run inside Lua (an abort); only if nothing resumed it meanwhile */
        if (drain_waiter->drain_waiting)
            drain_waiter->handler->resume_later(drain_waiter);
        sl_req_release(drain_waiter);
    }
    sl_worker_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    w->nadmin -= c->is_admin == SL_LISTEN_ADMIN;
    w->nmetrics -= c->is_admin == SL_LISTEN_METRICS;
    if (c->tls && c->write_pending == 0) /* best effort close_notify; a client may not wait for it */
        sl__conn_tls_close_notify(c);
    /* the transport's close frees the connection, timer included: it comes after the timer's close */
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

static void on_io_closed(sl_conn_t *c)
{
    if (!c->rbuf_shared)
        free(c->rbuf);
    sl_buf_free(&c->wbuf);
    sl_tls_free(c->tls);
    free(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    sl_conn_t *c = h->data;
    c->io->close(c, on_io_closed);
}

void sl__conn_drain(sl_conn_t *c)
{
    if (!c->busy)
        sl__conn_close(c);
    else if (c->req)
        c->req->keepalive = 0;
}

void sl__conn_start(sl_conn_t *c, sl_worker_t *w, const sl_conn_io_t *io, const sl_handler_t *handler,
                    int is_admin)
{
    c->w = w;
    c->io = io;
    c->handler = handler;
    c->is_admin = (uint8_t)is_admin;
    llhttp_init(&c->parser, HTTP_REQUEST, sl__http_parser_settings());
    c->parser.data = c;
    uv_timer_init(&w->loop, &c->timer);
    c->timer.data = c;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    w->nadmin += c->is_admin == SL_LISTEN_ADMIN;
    w->nmetrics += c->is_admin == SL_LISTEN_METRICS;
    sl__conn_timer(c, TIMER_IDLE, sl_settings.header_timeout);
    sl__conn_read_start(c);
}
