/* The HTTP/1.1 client behind sluice.http: one exchange per sl_http_t, over the worker's upstream connections
 * (pool.c: keep-alive pool, DNS cache, proxy, TLS). The response is parsed with llhttp; its body is buffered
 * (up to max_body) or, streaming, handed to Lua as it arrives with reading paused while Lua holds more than
 * SL_HTTP_STREAM_HIGH bytes.
 *
 * As in proxy.c, nothing runs Lua from inside an FFI call: sl_http_start and sl_http_take continue from a
 * zero-delay timer, and coroutines are woken from libuv callbacks only. Lua may close the exchange while it
 * is being woken, so nothing touches it after a wake but the lua_closed check; memory goes in close
 * callbacks. */
#include "upstream/client.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "http/field.h"
#include "lua/vm.h"
#include "upstream/pool.h"
#include "upstream/uphdrs.h"
#include "upstream/url.h"

typedef struct sl_http {
    sl_httpres_t res; /* first: Lua casts the pointer */
    sl_req_t *req;
    sl_worker_t *w;
    sl_upconn_t *uc;
    struct sl_http *next, *prev; /* running exchanges of the worker */
    sl_uptarget_t target;
    char *ca_file;
    sl_buf_t out;
    sl_uphdrs_t hdrs;
    sl_buf_t body;
    uv_timer_t kick;     /* deferred work outside FFI calls */
    uv_timer_t deadline; /* the total deadline */
    double read_timeout, send_timeout, max_body, idle_timeout;
    int pool_size;
    int flags;
    int closed_timers;
    uint8_t linked, started, opening, msg_done, is_head, got_bytes, retried, lua_closed;
    uint8_t bad_proxy; /* HTTP(S)_PROXY is set but unusable: the request fails instead of going around it */
} sl_http_t;

static llhttp_settings_t csettings;
static void attempt(sl_http_t *h);

static sl_http_t **list_of(sl_worker_t *w)
{
    sl_pool_t *p = sl__pool(w);
    return p ? (sl_http_t **)&p->clients : NULL;
}

static void unlink_h(sl_http_t *h)
{
    if (!h->linked)
        return;
    h->linked = 0;
    sl_http_t **head = list_of(h->w);
    if (h->prev)
        h->prev->next = h->next;
    else if (head)
        *head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    h->next = h->prev = NULL;
}

/* Wakes the coroutine if it waits (libuv callbacks only). */
static void notify(sl_http_t *h)
{
    if (!h->res.waiting || h->lua_closed)
        return;
    h->res.waiting = 0;
    sl_vm_wake(h->w, h->req, h->res.wake_id);
}

static void detach(sl_http_t *h, int reusable)
{
    sl_upconn_t *uc = h->uc;
    if (uc == NULL)
        return;
    h->uc = NULL;
    uc->owner = NULL;
    uv_timer_stop(&uc->timer);
    if (reusable && uc->rpos == uc->rlen)
        sl__pool_put(uc, h->pool_size, h->idle_timeout);
    else
        sl__upconn_close(uc);
}

static void end(sl_http_t *h, int error, const char *why)
{
    if (h->res.done)
        return;
    h->res.done = 1;
    h->res.error = error;
    if (error && why)
        snprintf(h->res.errmsg, sizeof(h->res.errmsg), "%s", why);
    uv_timer_stop(&h->deadline);
    detach(h, error == 0 && h->uc && llhttp_should_keep_alive(&h->uc->parser));
    if (error == 0) {
        h->res.body = h->body.base;
        h->res.body_len = (uint32_t)h->body.len;
    }
    notify(h);
}

static void fail(sl_http_t *h, int error, const char *why)
{
    sl_upconn_t *uc = h->uc;
    if (uc && uc->reused && !h->got_bytes && !h->retried && error == SL_UPERR_RESET &&
        sl__http_replayable(h->out.base, h->out.len)) {
        h->retried = 1; /* a kept-alive connection the server had closed: once more on a fresh one (attempt
                           skips the pool: its other connections may be as stale) */
        detach(h, 0);
        attempt(h);
        return;
    }
    detach(h, 0);
    char msg[200];
    snprintf(msg, sizeof(msg), "%s: %s", sl_uperr_name(error), why ? why : "failed");
    sl_log(SL_LOG_DEBUG, "http client %s:%d: %s", h->target.host, h->target.port, msg);
    end(h, error, msg);
}

/* ---- response parsing ---- */

static sl_http_t *of(llhttp_t *hp)
{
    return ((sl_upconn_t *)hp->data)->owner;
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
    sl_http_t *h = of(hp);
    int interim = sl__uphdrs_head_done(&h->hdrs, hp);
    if (interim != 0)
        return interim < 0 ? -1 : 0; /* refused, or 1xx: the real response follows */
    h->res.status = llhttp_get_status_code(hp);
    sl__uphdrs_finish(&h->hdrs);
    h->res.headers = h->hdrs.list;
    h->res.nheaders = h->hdrs.n;
    h->res.headers_done = 1;
    return h->is_head || h->res.status == 204 || h->res.status == 304 ? 1 : 0;
}

static int on_body(llhttp_t *hp, const char *at, size_t len)
{
    sl_http_t *h = of(hp);
    if (!(h->flags & SL_HTTP_STREAM) && (double)(h->body.len + len) > h->max_body) {
        llhttp_set_error_reason(hp, "body larger than max_body");
        return -1;
    }
    return sl_buf_append(&h->body, at, len) == 0 ? 0 : -1;
}

static int on_complete(llhttp_t *hp)
{
    sl_http_t *h = of(hp);
    if (!h->res.headers_done)
        return 0; /* an interim response */
    h->msg_done = 1;
    return HPE_PAUSED;
}

static void process(sl_http_t *h)
{
    sl_upconn_t *uc = h->uc;
    while (uc && uc->rpos < uc->rlen && !h->msg_done) {
        if ((h->flags & SL_HTTP_STREAM) && h->body.len >= SL_HTTP_STREAM_HIGH)
            break;
        llhttp_errno_t err = llhttp_execute(&uc->parser, uc->rbuf + uc->rpos, uc->rlen - uc->rpos);
        if (err == HPE_OK) {
            uc->rpos = uc->rlen;
        } else if (err == HPE_PAUSED) {
            uc->rpos = (size_t)(llhttp_get_error_pos(&uc->parser) - uc->rbuf);
            llhttp_resume(&uc->parser);
        } else {
            char why[160];
            if (h->hdrs.why)
                snprintf(why, sizeof(why), "%s", h->hdrs.why);
            else
                snprintf(why, sizeof(why), "%s: %s", llhttp_errno_name(err) + 4,
                         llhttp_get_error_reason(&uc->parser));
            fail(h, SL_UPERR_BAD_RESPONSE, why);
            return;
        }
    }
    if (uc == NULL || h->res.done)
        return;
    if (h->msg_done && !(h->flags & SL_HTTP_STREAM && h->body.len > 0)) {
        end(h, 0, NULL);
        return;
    }
    if (uc->rpos == uc->rlen)
        uc->rpos = uc->rlen = 0;
    if (h->flags & SL_HTTP_STREAM) {
        if (h->body.len > 0) {
            h->res.body = h->body.base;
            h->res.body_len = (uint32_t)h->body.len;
            if (h->body.len >= SL_HTTP_STREAM_HIGH && h->uc)
                sl__upconn_hold(h->uc); /* Lua catches up: no read timeout meanwhile */
            notify(h);
        }
    }
}

/* ---- connection events ---- */

/* The end of the connection ends a body without a length (llhttp pauses in our on_complete). */
static int finish_ok(llhttp_t *hp)
{
    llhttp_errno_t e = llhttp_finish(hp);
    return e == HPE_OK || e == HPE_PAUSED;
}

static void on_up_read(sl_upconn_t *uc, ssize_t n)
{
    sl_http_t *h = uc->owner;
    if (n < 0) {
        if (n == UV_EOF && h->res.headers_done && finish_ok(&uc->parser)) {
            uc->rpos = uc->rlen = 0; /* body delimited by the end of the connection */
            h->msg_done = 1;
            detach(h, 0);
            if (!(h->flags & SL_HTTP_STREAM) || h->body.len == 0)
                end(h, 0, NULL);
            else {
                h->res.body = h->body.base;
                h->res.body_len = (uint32_t)h->body.len;
                notify(h);
            }
        } else {
            fail(h, SL_UPERR_RESET,
                 n == UV_EOF ? "connection closed before the response was complete" : uv_strerror((int)n));
        }
        return;
    }
    h->got_bytes = 1;
    sl__upconn_arm(uc, h->read_timeout);
    process(h);
}

static void on_up_written(sl_upconn_t *uc, int status)
{
    sl_http_t *h = uc->owner;
    if (status < 0)
        fail(h, SL_UPERR_RESET, uv_strerror(status));
    else
        sl__upconn_arm(uc, h->read_timeout);
}

static void on_up_timeout(sl_upconn_t *uc)
{
    sl_http_t *h = uc->owner;
    fail(h, SL_UPERR_TIMEOUT, h->got_bytes ? "read timed out" : "no response in time");
}

static void send_request(sl_http_t *h)
{
    sl_upconn_t *uc = h->uc;
    sl__uphdrs_restart(&h->hdrs);
    llhttp_init(&uc->parser, HTTP_RESPONSE, &csettings);
    uc->parser.data = uc;
    uc->rlen = uc->rpos = 0;
    h->res.reused = (uint8_t)uc->reused;
    sl__upconn_read_start(uc);
    int rc = sl__upconn_write(uc, h->out.base, h->out.len);
    if (rc < 0)
        fail(h, SL_UPERR_RESET, uv_strerror(rc));
    else
        sl__upconn_arm(uc, rc == 1 ? h->read_timeout : h->send_timeout);
}

static void on_up_ready(sl_upconn_t *uc, int error, const char *why)
{
    sl_http_t *h = uc->owner;
    h->opening = 0;
    if (error) {
        h->uc = NULL;
        fail(h, error, why);
        return;
    }
    h->uc = uc;
    send_request(h);
}

static const sl_upconn_ops_t client_ops = {
    .ready = on_up_ready, .read = on_up_read, .written = on_up_written, .timeout = on_up_timeout};

static void attempt(sl_http_t *h)
{
    h->got_bytes = 0;
    h->opening = 1;
    h->uc = NULL;
    sl_upconn_t *uc = sl__upconn_open(h->w, &h->target, &client_ops, h, h->retried);
    if (uc == NULL) {
        h->opening = 0;
        end(h, SL_UPERR_NOMEM, "nomem: out of memory");
        return;
    }
    if (h->opening)
        h->uc = uc;
}

static void on_kick(uv_timer_t *t)
{
    sl_http_t *h = t->data;
    if (h->lua_closed)
        return;
    if (!h->started) {
        h->started = 1;
        if (h->bad_proxy)
            fail(h, SL_UPERR_CONNECT,
                 h->target.tls ? "HTTPS_PROXY is not an http:// proxy URL or host:port"
                               : "HTTP_PROXY is not an http:// proxy URL or host:port");
        else
            attempt(h);
        return;
    }
    if (h->res.done) {
        notify(h);
        return;
    }
    if (h->msg_done && h->body.len == 0) {
        end(h, 0, NULL);
        return;
    }
    process(h);
    if (!h->res.done && !h->lua_closed && h->uc && !h->opening && h->body.len < SL_HTTP_STREAM_HIGH &&
        sl__upconn_unhold(h->uc))
        sl__upconn_arm(h->uc, h->read_timeout);
}

static void on_deadline(uv_timer_t *t)
{
    sl_http_t *h = t->data;
    if (!h->res.done && !h->lua_closed)
        fail(h, SL_UPERR_TIMEOUT, "deadline passed");
}

/* ---- Lua API ---- */

int sl_http_check_url(const char *url, size_t len)
{
    sl_url_t u;
    return sl_url_parse(url, len, &u) == 0 ? 0 : -EINVAL;
}

static void on_timer_closed(uv_handle_t *t)
{
    sl_http_t *h = t->data;
    if (++h->closed_timers < 2 || !h->lua_closed)
        return;
    sl_req_t *r = h->req;
    sl_buf_free(&h->out);
    sl_buf_free(&h->body);
    sl__uphdrs_free(&h->hdrs);
    free(h->ca_file);
    free(h);
    if (r)
        sl_req_release(r);
}

static void close_timers(sl_http_t *h)
{
    if (!uv_is_closing((uv_handle_t *)&h->kick)) {
        uv_close((uv_handle_t *)&h->kick, on_timer_closed);
        uv_close((uv_handle_t *)&h->deadline, on_timer_closed);
    }
}

sl_httpres_t *sl_http_start(sl_req_t *req, const sl_http_opts_t *o)
{
    const char *method = o->method, *url = o->url, *headers = o->headers, *body = o->body;
    size_t mlen = o->mlen, ulen = o->ulen, hlen = o->hlen, blen = o->blen;
    int flags = o->flags;
    sl_worker_t *w = sl_worker_current();
    sl_url_t u;
    if (w == NULL || w->stopping || sl_url_parse(url, ulen, &u) != 0 || list_of(w) == NULL)
        return NULL;
    sl_http_t *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    snprintf(h->target.host, sizeof(h->target.host), "%s", u.host);
    h->target.port = u.port;
    h->target.tls = u.tls;
    h->target.verify = !(flags & SL_HTTP_NO_VERIFY);
    h->target.connect_timeout = o->connect_timeout;
    if (o->ca_file && *o->ca_file) {
        h->ca_file = strdup(o->ca_file);
        h->target.ca_file = h->ca_file;
    }
    sl_url_t px;
    int proxy_rc = flags & SL_HTTP_NO_PROXY ? 0 : sl_env_proxy(u.tls, u.host, u.port, &px);
    int via_proxy = proxy_rc == 1;
    h->bad_proxy = proxy_rc < 0;
    if (h->bad_proxy) {
        static int warned;
        if (!__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
            sl_log(SL_LOG_WARN,
                   "%s is set but is not an http:// proxy URL or host:port: sluice.http requests "
                   "it applies to fail (only plain HTTP proxies are supported)",
                   u.tls ? "HTTPS_PROXY" : "HTTP_PROXY");
    }
    if (via_proxy) {
        snprintf(h->target.proxy_host, sizeof(h->target.proxy_host), "%s", px.host);
        h->target.proxy_port = px.port;
    }
    /* request line and head */
    sl_buf_t *out = &h->out;
    int rc = sl_buf_reserve(out, mlen + ulen + hlen + blen + 600);
    char hostport[300];
    sl_url_authority(hostport, sizeof(hostport), u.host, strlen(u.host), u.port, u.tls);
    rc |= sl_buf_append(out, method, mlen);
    rc |= sl_buf_append(out, " ", 1);
    if (via_proxy && !u.tls) { /* absolute-form through a plain HTTP proxy */
        rc |= sl_buf_appends(out, "http://");
        rc |= sl_buf_appends(out, hostport);
    }
    rc |= sl_buf_append(out, u.target, u.target_len);
    rc |= sl_buf_appends(out, " HTTP/1.1\r\n");
    if (!(flags & SL_HTTP_HAS_HOST)) {
        rc |= sl_buf_appends(out, "Host: ");
        rc |= sl_buf_appends(out, hostport);
        rc |= sl_buf_appends(out, "\r\n");
    }
    rc |= sl_buf_append(out, headers, hlen);
    int wants_len = blen > 0 || (mlen == 4 && memcmp(method, "POST", 4) == 0) ||
                    (mlen == 3 && memcmp(method, "PUT", 3) == 0) ||
                    (mlen == 5 && memcmp(method, "PATCH", 5) == 0);
    if (wants_len) {
        char cl[48];
        snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", blen);
        rc |= sl_buf_appends(out, cl);
    }
    rc |= sl_buf_append(out, "\r\n", 2);
    rc |= sl_buf_append(out, body, blen);
    if (rc != 0) {
        sl_buf_free(out);
        free(h->ca_file);
        free(h);
        return NULL;
    }
    if (!csettings.on_message_complete) {
        llhttp_settings_init(&csettings);
        csettings.on_message_begin = on_begin;
        csettings.on_header_field = on_field;
        csettings.on_header_value = on_value;
        csettings.on_header_value_complete = on_value_done;
        csettings.on_headers_complete = on_headers;
        csettings.on_body = on_body;
        csettings.on_message_complete = on_complete;
    }
    h->w = w;
    h->req = req;
    if (req)
        req->refs++;
    h->flags = flags;
    h->is_head = mlen == 4 && memcmp(method, "HEAD", 4) == 0;
    h->send_timeout = o->send_timeout;
    h->read_timeout = o->read_timeout;
    h->max_body = o->max_body > 0 ? o->max_body : 16.0 * 1024 * 1024;
    h->pool_size = o->pool_size;
    h->idle_timeout = o->idle_timeout;
    sl_http_t **head = list_of(w);
    h->next = *head;
    if (*head)
        (*head)->prev = h;
    *head = h;
    h->linked = 1;
    uv_timer_init(&w->loop, &h->kick);
    uv_timer_init(&w->loop, &h->deadline);
    h->kick.data = h->deadline.data = h;
    sl_field_err_t e;
    if (sl_http_check_fields(headers, hlen, o->nfields, 0, &e) != 0) {
        /* never sent: the exchange is over before it began, Lua reads why (and raises: a plugin's mistake) */
        h->res.done = 1;
        h->res.error = SL_UPERR_BAD_REQUEST;
        sl_http_field_error(&e, h->res.errmsg, sizeof(h->res.errmsg));
        return &h->res;
    }
    uv_timer_start(&h->kick, on_kick, 0, 0);
    if (o->deadline > 0)
        uv_timer_start(&h->deadline, on_deadline, (uint64_t)(o->deadline * 1000), 0);
    return &h->res;
}

int sl_http_take(sl_httpres_t *res)
{
    sl_http_t *h = (sl_http_t *)res;
    if (h->lua_closed)
        return -1;
    h->body.len = 0;
    res->body = NULL;
    res->body_len = 0;
    if (!uv_is_closing((uv_handle_t *)&h->kick))
        uv_timer_start(&h->kick, on_kick, 0, 0);
    return 0;
}

void sl_http_close(sl_httpres_t *res)
{
    sl_http_t *h = (sl_http_t *)res;
    if (h->lua_closed)
        return;
    h->lua_closed = 1;
    res->waiting = 0;
    detach(h, 0);
    unlink_h(h);
    if (h->closed_timers == 2) { /* the worker stopped and closed them already */
        h->closed_timers = 1;
        on_timer_closed((uv_handle_t *)&h->kick);
        return;
    }
    close_timers(h);
}

void sl__client_close_all(sl_worker_t *w)
{
    sl_pool_t *p = w->pool;
    if (p == NULL)
        return;
    for (;;) {
        sl_http_t *h = p->clients;
        while (h && h->res.done)
            h = h->next;
        if (h == NULL)
            break;
        fail(h, SL_UPERR_CLIENT_GONE, "worker stopping"); /* wakes Lua, which closes it */
        if (!h->res.done)
            end(h, SL_UPERR_CLIENT_GONE, "client_gone: worker stopping");
    }
    /* Whatever Lua did not close: stop the timers so the loop can end; sl_http_close frees them later. */
    while (p->clients) {
        sl_http_t *h = p->clients;
        unlink_h(h);
        detach(h, 0);
        close_timers(h);
    }
}
