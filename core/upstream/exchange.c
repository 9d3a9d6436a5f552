/* One HTTP/1.1 exchange with an upstream, shared by the proxy of a client request (proxy.c: PASS / FILTER)
 * and the plugins' HTTP client (client.c): a connection from the pool (or a fresh one), the request written
 * (one try-write; a streamed request body after it, upbody.c), replayed once on a fresh connection when a
 * kept-alive one turns out stale, the response head and body parsed by one set of llhttp callbacks (heads
 * checked by uphdrs.c), and the timers: send, read (paused while the owner holds the reading back) and the
 * deadline of the whole response head. The owner hears what happens through sl_exchange_ops_t and decides
 * what it means for its client or for Lua.
 *
 * Nothing here runs Lua while Lua is inside an FFI call: work that Lua starts continues from a zero-delay
 * timer (the kick), and the owner resumes Lua only from libuv callbacks, each bracketed by ops->hold /
 * ops->release, since resuming Lua may give the exchange up (its memory goes only in the kick timer's close
 * callback). */
#include "upstream/exchange.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static llhttp_settings_t settings;
static const sl_upconn_ops_t exchange_upconn_ops;

static void *hold(sl_exchange_t *x)
{
    return x->ops->hold ? x->ops->hold(x) : NULL;
}

static void release(sl_exchange_t *x, void *token)
{
    if (x->ops->release)
        x->ops->release(token);
}

/* Lets go of the connection: back to the pool when the exchange ended cleanly with nothing unread, else
 * closed. */
static void detach(sl_exchange_t *x, int reusable)
{
    sl_upconn_t *uc = x->uc;
    if (uc == NULL)
        return;
    x->uc = NULL;
    uc->owner = NULL;
    x->net->release(uc, reusable && uc->rpos == uc->rlen, x->pool_size, x->idle_timeout);
}

/* The exchange is over: the connection goes (pooled when the response was whole, the upstream keeps it open
 * and has the whole request body: one that answered early may still be reading it), then the owner hears. */
static void finish(sl_exchange_t *x, int error, const char *what, int code)
{
    if (x->done)
        return;
    x->done = 1;
    detach(x, error == 0 && x->uc && llhttp_should_keep_alive(&x->parser) && !sl__upbody_open(&x->body));
    x->ops->end(x, error, what, code);
}

void sl__exchange_fail(sl_exchange_t *x, int error, const char *what, int code)
{
    if (x->done)
        return;
    sl_upconn_t *uc = x->uc;
    /* A kept-alive connection the upstream had already closed: once more, on a fresh one (retried makes
     * sl__exchange_open skip the pool, whose other connections may have gone stale just the same). */
    if (uc && uc->reused && !x->got_bytes && !x->retried && !x->body.moved && error == SL_UPERR_RESET &&
        sl__http_replayable(x->out.base, x->out.len)) {
        x->retried = 1;
        detach(x, 0);
        sl__exchange_open(x);
        return;
    }
    detach(x, 0);
    finish(x, error, what, code);
}

/* ---- timers ---- */

/* Arms the connection's timer (0 stops it). */
static void arm(sl_exchange_t *x, double seconds)
{
    x->head_armed = 0;
    if (x->uc)
        x->net->arm(x->uc, seconds);
}

/* The head is due header_timeout after the request was sent or its first byte came, whichever is first. */
static void head_due(sl_exchange_t *x)
{
    if (x->head_by == 0 && x->header_timeout > 0 && !x->headers_done)
        x->head_by = uv_now(&x->w->loop) + (uint64_t)(x->header_timeout * 1000);
}

/* Arms the wait for the upstream: the read timeout, or what is left of the head deadline if that is sooner
 * (each byte of a trickled head would restart a read timeout). */
static void arm_read(sl_exchange_t *x)
{
    double t = x->read_timeout;
    int head = 0;
    if (x->head_by && !x->headers_done) {
        uint64_t now = uv_now(&x->w->loop);
        double left = x->head_by > now ? (double)(x->head_by - now) / 1000 : 0.001;
        if (left <= t) {
            t = left;
            head = 1;
        }
    }
    arm(x, t);
    x->head_armed = (uint8_t)head;
}

/* Arms the timer for what the exchange waits on once nothing is queued: the response, or (a body still
 * arriving) nothing from the upstream: the client's body_timeout bounds the wait then. */
static void after_write(sl_exchange_t *x)
{
    if (x->uc == NULL)
        return;
    int body_open = sl__upbody_open(&x->body);
    if (!body_open)
        head_due(x);
    if (x->held || body_open)
        arm(x, 0);
    else
        arm_read(x);
}

static void on_timeout(sl_upconn_t *uc)
{
    sl_exchange_t *x = uc->owner;
    void *t = hold(x);
    char what[80];
    if (x->head_armed)
        snprintf(what, sizeof(what), "response head not complete within %gs (timeout.header)",
                 x->header_timeout);
    sl__exchange_fail(x, SL_UPERR_TIMEOUT,
                      x->head_armed  ? what
                      : x->got_bytes ? "read timed out"
                                     : "no response in time",
                      0);
    release(x, t);
}

void sl__exchange_hold(sl_exchange_t *x)
{
    x->held = 1;
    if (x->uc)
        x->net->hold(x->uc);
}

void sl__exchange_resume_reads(sl_exchange_t *x)
{
    x->held = 0;
    if (x->uc && !x->opening && x->net->unhold(x->uc))
        arm_read(x);
}

/* ---- response ---- */

static sl_exchange_t *of(llhttp_t *hp)
{
    return hp->data;
}

static int on_begin(llhttp_t *hp)
{
    sl__uphdrs_reset(&of(hp)->hdrs);
    return 0;
}

static int on_field(llhttp_t *hp, const char *at, size_t len)
{
    return sl__uphdrs_field(&of(hp)->hdrs, at, len, SL_UP_MAX_HEAD);
}

static int on_value(llhttp_t *hp, const char *at, size_t len)
{
    return sl__uphdrs_value(&of(hp)->hdrs, at, len, SL_UP_MAX_HEAD);
}

static int on_value_done(llhttp_t *hp)
{
    return sl__uphdrs_value_done(&of(hp)->hdrs);
}

static int on_headers(llhttp_t *hp)
{
    sl_exchange_t *x = of(hp);
    int interim = sl__uphdrs_head_done(&x->hdrs, hp);
    if (interim != 0)
        return interim < 0 ? -1
                           : 0; /* refused, or 1xx (100 Continue, 103 Early Hints): the real one follows */
    sl__uphdrs_finish(&x->hdrs);
    x->status = llhttp_get_status_code(hp);
    x->content_length = (hp->flags & F_CONTENT_LENGTH) ? (int64_t)hp->content_length : -1;
    x->headers_done = 1;
    int rc = x->ops->head(x);
    if (rc < 0)
        return -1;
    if (x->is_head || x->status == 204 || x->status == 304)
        return 1; /* no body, whatever it says */
    x->head_paused = rc == SL_EXCHANGE_PAUSE;
    return rc;
}

static int on_body(llhttp_t *hp, const char *at, size_t len)
{
    sl_exchange_t *x = of(hp);
    return x->ops->body(x, at, len) == 0 ? 0 : -1;
}

static int on_complete(llhttp_t *hp)
{
    sl_exchange_t *x = of(hp);
    if (!x->headers_done)
        return 0; /* an interim response */
    x->msg_done = 1;
    return HPE_PAUSED; /* stop exactly at the end: bytes after it make the connection unusable */
}

static void settings_init(void)
{
    llhttp_settings_init(&settings);
    settings.on_message_begin = on_begin;
    settings.on_header_field = on_field;
    settings.on_header_value = on_value;
    settings.on_header_value_complete = on_value_done;
    settings.on_headers_complete = on_headers;
    settings.on_body = on_body;
    settings.on_message_complete = on_complete;
}

const llhttp_settings_t *sl__exchange_parser_settings(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, settings_init); /* workers start their first exchanges concurrently */
    return &settings;
}

void sl__exchange_process(sl_exchange_t *x)
{
    sl_upconn_t *uc = x->uc;
    /* after a pause at the head, the parser goes on even without a byte: an empty body ends right there */
    while (uc && (uc->rpos < uc->rlen || x->head_paused) && !x->msg_done) {
        if (x->ops->room && !x->ops->room(x))
            break; /* the owner has not taken what it was given yet */
        x->head_paused = 0;
        llhttp_errno_t err = llhttp_execute(&x->parser, uc->rbuf + uc->rpos, uc->rlen - uc->rpos);
        if (err == HPE_OK) {
            uc->rpos = uc->rlen;
        } else if (err == HPE_PAUSED) {
            uc->rpos = (size_t)(llhttp_get_error_pos(&x->parser) - uc->rbuf);
            llhttp_resume(&x->parser);
        } else {
            char why[160];
            if (x->hdrs.why)
                snprintf(why, sizeof(why), "%s", x->hdrs.why);
            else
                snprintf(why, sizeof(why), "%s: %s", llhttp_errno_name(err) + 4,
                         llhttp_get_error_reason(&x->parser));
            sl__exchange_fail(x, SL_UPERR_BAD_RESPONSE, why, 0);
            return;
        }
    }
    if (uc == NULL || x->done || x->closed)
        return;
    if (x->msg_done) {
        finish(x, 0, NULL, 0);
        return;
    }
    if (uc->rpos == uc->rlen)
        uc->rpos = uc->rlen = 0;
    if (x->ops->parsed)
        x->ops->parsed(x);
}

/* ---- connection events ---- */

static void on_up_read(sl_upconn_t *uc, ssize_t nread)
{
    sl_exchange_t *x = uc->owner;
    if (nread == 0)
        return;
    void *t = hold(x);
    if (nread < 0) {
        if (nread == UV_EOF && x->headers_done && !x->done &&
            (sl__up_parser_eof(&x->parser) || x->msg_done)) {
            /* a body delimited by the close of the connection (llhttp pauses in on_complete) */
            uc->rpos = uc->rlen = 0;
            x->msg_done = 1;
            detach(x, 0);
            finish(x, 0, NULL, 0);
        } else if (!x->done) {
            sl__exchange_fail(x, SL_UPERR_RESET,
                              nread == UV_EOF ? "connection closed before the response was complete" : "read",
                              nread == UV_EOF ? 0 : (int)nread);
        }
        release(x, t);
        return;
    }
    x->got_bytes = 1;
    head_due(x);
    arm_read(x);
    if (x->ops->read_begin)
        x->ops->read_begin(x);
    sl__exchange_process(x);
    if (x->ops->read_end)
        x->ops->read_end(x);
    release(x, t);
}

void sl__exchange_body_more(sl_exchange_t *x)
{
    sl_upconn_t *uc = x->uc;
    if (!sl__upbody_open(&x->body) || x->done || !x->sent || uc == NULL || uc->pending_writes > 0)
        return; /* sent when the connection is ready, or when the write before it finished */
    void *t = hold(x);
    uv_buf_t iov[3];
    unsigned n = sl__upbody_pieces(&x->body, iov);
    if (n > 0) {
        /* straight from the body buffer: only what the socket does not take now is copied */
        x->body.moved = 1;
        int rc = x->net->writev(uc, iov, n);
        if (rc < 0)
            sl__exchange_fail(x, SL_UPERR_RESET, "write", rc);
        else if (rc == 0)
            arm(x, x->send_timeout);
        else
            after_write(x);
    }
    if (!x->done)
        sl__upbody_resume(&x->body);
    release(x, t);
}

static void on_up_written(sl_upconn_t *uc, int status)
{
    sl_exchange_t *x = uc->owner;
    void *t = hold(x);
    if (status < 0) {
        sl__exchange_fail(x, SL_UPERR_RESET, "write", status);
    } else {
        after_write(x);
        sl__exchange_body_more(x);
    }
    release(x, t);
}

static void send_request(sl_exchange_t *x)
{
    sl_upconn_t *uc = x->uc;
    sl__uphdrs_restart(&x->hdrs);
    llhttp_init(&x->parser, HTTP_RESPONSE, sl__exchange_parser_settings());
    x->parser.data = x;
    uc->rlen = uc->rpos = 0;
    x->reused = (uint8_t)uc->reused;
    x->sent = 1;
    x->net->read_start(uc);
    uv_buf_t b = uv_buf_init(x->out.base, (unsigned)x->out.len);
    int rc = x->net->writev(uc, &b, 1);
    if (rc < 0) {
        sl__exchange_fail(x, SL_UPERR_RESET, "write", rc);
    } else if (rc == 0) {
        arm(x, x->send_timeout);
    } else {
        after_write(x);
        sl__exchange_body_more(x); /* what arrived of the body while connecting */
    }
}

static void on_up_ready(sl_upconn_t *uc, int error, const char *why)
{
    sl_exchange_t *x = uc->owner;
    void *t = hold(x);
    x->opening = 0;
    if (error) {
        x->uc = NULL; /* closed by the pool */
        sl__exchange_fail(x, error, why ? why : "connect", 0);
    } else {
        x->uc = uc;
        send_request(x);
    }
    release(x, t);
}

static const sl_upconn_ops_t exchange_upconn_ops = {
    .ready = on_up_ready, .read = on_up_read, .written = on_up_written, .timeout = on_timeout};

void sl__exchange_open(sl_exchange_t *x)
{
    x->got_bytes = 0;
    x->sent = 0;
    x->opening = 1;
    x->uc = NULL;
    x->head_by = 0;
    sl_upconn_t *uc = x->net->open(x->w, &x->target, &exchange_upconn_ops, x, x->retried);
    if (uc == NULL) {
        x->opening = 0;
        finish(x, SL_UPERR_NOMEM, "out of memory", 0);
        return;
    }
    if (x->opening)
        x->uc = uc; /* still connecting: kept so it can be cancelled */
}

/* ---- the owner's side ---- */

static void on_kick(uv_timer_t *timer)
{
    sl_exchange_t *x = timer->data;
    if (x->closed)
        return;
    void *t = hold(x);
    x->ops->kick(x);
    release(x, t);
}

void sl__exchange_kick(sl_exchange_t *x)
{
    if (!x->closed)
        uv_timer_start(&x->kick, on_kick, 0, 0);
}

int sl__exchange_init(sl_exchange_t *x, sl_worker_t *w, const sl_exchange_ops_t *ops)
{
    x->ops = ops;
    x->net = sl__upnet(w);
    x->w = w;
    x->content_length = -1;
    uv_timer_init(&w->loop, &x->kick);
    x->kick.data = x;
    return 0;
}

static void on_kick_closed(uv_handle_t *h)
{
    sl_exchange_t *x = h->data;
    x->on_closed(x);
}

void sl__exchange_close(sl_exchange_t *x, void (*on_closed)(sl_exchange_t *x))
{
    if (x->closed)
        return;
    x->closed = 1;
    detach(x, 0);
    x->on_closed = on_closed;
    uv_close((uv_handle_t *)&x->kick, on_kick_closed);
}

void sl__exchange_free(sl_exchange_t *x)
{
    sl_buf_free(&x->out);
    sl__uphdrs_free(&x->hdrs);
}

int sl__http_replayable(const char *head, size_t len)
{
    static const char *const methods[] = {"GET ", "HEAD ", "OPTIONS ", "TRACE ", "PUT ", "DELETE "};
    for (unsigned i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        size_t n = strlen(methods[i]);
        if (len >= n && memcmp(head, methods[i], n) == 0)
            return 1;
    }
    /* the head only: a body (in the same buffer) saying "\r\nIdempotency-Key:" makes nothing idempotent */
    const char *end = memmem(head, len, "\r\n\r\n", 4);
    if (end)
        len = (size_t)(end - head) + 2;
    static const char key[] = "\r\nidempotency-key:";
    size_t klen = sizeof(key) - 1;
    for (size_t i = 0; i + klen <= len; i++)
        if (head[i] == '\r' && strncasecmp(head + i, key, klen) == 0)
            return 1;
    return 0;
}
