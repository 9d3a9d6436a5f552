/* A request body over node.limits.body_buffer_size is not waited for: the request is handled (routing, access
 * plugins) while the rest arrives, and each piece is parsed as it comes and goes to whoever takes it:
 *  - the upstream proxy, which streams it on (upstream/proxy.c): the client is not read while more than
 *    SL_BODY_HIGH_WATER waits for the upstream, so a slow upstream does not make the gateway buffer the
 * upload;
 *  - the request's coroutine, waiting in sl_req_read_body for all of it (a plugin that reads the body),
 * bounded by max_body_size;
 *  - nobody, once the response is out: the rest is read and dropped, so the connection stays usable and the
 *    response is not lost to a reset (closing with unread bytes would send one). */
#include "http/conn_body.h"

#include "server/settings.h"
#include "upstream/proxy.h"

int sl__conn_body_outgrown(sl_conn_t *c)
{
    sl_req_t *r = c->req;
    if (r == NULL || r->headers == NULL || c->err_status || r->bodybuf.len <= sl_settings.body_buffer_size)
        return 0;
    r->body_pending = 1;
    return 1;
}

void sl__conn_body_flow(sl_conn_t *c)
{
    sl_req_t *r = c->req;
    if (r->body_discard) {
        r->bodybuf.len = 0;
    } else if (r->proxy) {
        r->refs++; /* a failed upstream write ends the exchange, which resumes Lua, which may end the request
                    */
        sl__proxy_body_more(r->proxy);
        int gone = c->closing || c->req != r || !r->body_pending;
        sl_req_release(r);
        if (gone)
            return;
    }
    if (r->bodybuf.len >= SL_BODY_HIGH_WATER && !r->body_wait)
        sl__conn_read_stop(c);
    else
        sl__conn_read_start(c);
}

void sl__conn_body_done(sl_conn_t *c)
{
    sl_req_t *r = c->req;
    r->body_pending = 0;
    sl__conn_timer(c, c->write_pending ? TIMER_SEND : TIMER_NONE, sl_settings.send_timeout);
    r->refs++;
    if (r->proxy)
        sl__proxy_body_more(r->proxy); /* the tail, and the end of a chunked body */
    if (r->body_wait) {
        r->body_wait = 0;
        r->handler->resume(r); /* progresses the connection itself */
    } else if (c->req == r) {
        sl__conn_progress(c);
    }
    sl_req_release(r);
}

int sl__conn_body_discard(sl_conn_t *c)
{
    sl_req_t *r = c->req;
    if (r->body_failed)
        return 0;
    if (!r->body_discard) {
        r->body_discard = 1;
        sl_buf_free(&r->bodybuf);
        sl__conn_read_start(c);
    }
    return 1;
}

void sl__conn_body_resume(sl_conn_t *c)
{
    sl_req_t *r = c->req;
    if (r && r->body_pending && !c->closing && r->bodybuf.len < SL_BODY_HIGH_WATER)
        sl__conn_read_start(c);
}

void sl__req_body_fail(sl_req_t *r)
{
    if (!r->body_pending || r->body_failed)
        return;
    r->body_failed = 1;
    if (r->proxy && sl__proxy_streams_body(r->proxy))
        sl__proxy_client_gone(r->proxy); /* the upstream would wait for the rest of the body */
    if (r->body_wait) {
        r->body_wait = 0;
        r->handler->resume_later(r);
    }
}

int sl_req_read_body(sl_req_t *r)
{
    if (!r->body_pending)
        return 0;
    if (r->body_streamed || r->body_failed || r->conn == NULL || r->client_gone)
        return -1;
    r->body_wait = 1;
    sl__conn_read_start(r->conn);
    return 1;
}
