/* The HTTP/1.1 client behind sluice.http: an owner of one exchange (exchange.c: pooled connections, the
 * request written and replayed once on a fresh connection when a kept-alive one was stale, the response
 * parsed). The response body is buffered (up to max_body) or, streaming, handed to Lua as it arrives with
 * reading paused while Lua holds more than SL_HTTP_STREAM_HIGH bytes; a total deadline bounds the whole
 * exchange.
 *
 * As in proxy.c, nothing runs Lua from inside an FFI call: sl_http_start and sl_http_take continue from the
 * exchange's kick, and coroutines are woken from libuv callbacks only. Lua may close the exchange while it
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
#include "upstream/exchange.h"
#include "upstream/pool.h"
#include "upstream/url.h"

typedef struct sl_http {
    sl_httpres_t res; /* first: Lua casts the pointer */
    sl_exchange_t ex;
    sl_req_t *req;
    sl_worker_t *w;
    struct sl_http *next, *prev; /* running exchanges of the worker */
    char *ca_file, *cert_file, *key_file;
    sl_buf_t body;
    uv_timer_t deadline; /* the total deadline */
    double max_body;
    int flags;
    int closed_timers;
    uint8_t linked, started, lua_closed;
    uint8_t bad_proxy; /* HTTP(S)_PROXY is set but unusable: the request fails instead of going around it */
} sl_http_t;

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

static sl_http_t *of(sl_exchange_t *x)
{
    return (sl_http_t *)((char *)x - offsetof(sl_http_t, ex));
}

/* Wakes the coroutine if it waits (libuv callbacks only). */
static void notify(sl_http_t *h)
{
    if (!h->res.waiting || h->lua_closed)
        return;
    h->res.waiting = 0;
    sl_vm_wake(h->w, h->req, h->res.wake_id);
}

/* Tells Lua the exchange is over (error 0: the whole body is in res.body, or taken). */
static void report(sl_http_t *h, int error, const char *msg)
{
    if (h->res.done)
        return;
    h->res.done = 1;
    h->res.error = error;
    h->res.reused = h->ex.reused;
    if (error && msg)
        snprintf(h->res.errmsg, sizeof(h->res.errmsg), "%s", msg);
    uv_timer_stop(&h->deadline);
    if (error == 0) {
        h->res.body = h->body.base;
        h->res.body_len = (uint32_t)h->body.len;
    }
    notify(h);
}

/* Streaming: what waits goes to Lua. */
static void hand_body(sl_http_t *h)
{
    h->res.body = h->body.base;
    h->res.body_len = (uint32_t)h->body.len;
    notify(h);
}

/* ---- the exchange's events ---- */

static int on_head(sl_exchange_t *x)
{
    sl_http_t *h = of(x);
    h->res.status = x->status;
    h->res.headers = x->hdrs.list.list;
    h->res.nheaders = x->hdrs.list.n;
    h->res.reused = x->reused;
    h->res.headers_done = 1;
    return 0;
}

static int on_body(sl_exchange_t *x, const char *at, size_t len)
{
    sl_http_t *h = of(x);
    if (!(h->flags & SL_HTTP_STREAM) && (double)(h->body.len + len) > h->max_body) {
        llhttp_set_error_reason(&x->parser, "body larger than max_body");
        return -1;
    }
    return sl_buf_append(&h->body, at, len);
}

static int on_room(sl_exchange_t *x)
{
    sl_http_t *h = of(x);
    return !(h->flags & SL_HTTP_STREAM) || h->body.len < SL_HTTP_STREAM_HIGH;
}

static void on_parsed(sl_exchange_t *x)
{
    sl_http_t *h = of(x);
    if (!(h->flags & SL_HTTP_STREAM) || h->body.len == 0)
        return;
    if (h->body.len >= SL_HTTP_STREAM_HIGH)
        sl__exchange_hold(x); /* Lua catches up: no read timeout meanwhile */
    hand_body(h);
}

static void on_end(sl_exchange_t *x, int error, const char *what, int code)
{
    sl_http_t *h = of(x);
    if (error) {
        char msg[200];
        snprintf(msg, sizeof(msg), "%s: %s", sl_uperr_name(error),
                 code   ? uv_strerror(code)
                 : what ? what
                        : "failed");
        sl_log(SL_LOG_DEBUG, "http client %s:%d: %s", x->target.host, x->target.port, msg);
        report(h, error, msg);
    } else if ((h->flags & SL_HTTP_STREAM) && h->body.len > 0) {
        hand_body(h); /* done once Lua has taken the rest (on_kick) */
    } else {
        report(h, 0, NULL);
    }
}

static void on_kick(sl_exchange_t *x)
{
    sl_http_t *h = of(x);
    if (h->lua_closed)
        return;
    if (!h->started) {
        h->started = 1;
        if (h->bad_proxy)
            sl__exchange_fail(x, SL_UPERR_CONNECT,
                              x->target.tls ? "HTTPS_PROXY is not an http:// proxy URL or host:port"
                                            : "HTTP_PROXY is not an http:// proxy URL or host:port",
                              0);
        else
            sl__exchange_open(x);
        return;
    }
    if (h->res.done) {
        notify(h);
        return;
    }
    if (x->done && h->body.len == 0) {
        report(h, 0, NULL); /* streaming: the last of the body was taken */
        return;
    }
    sl__exchange_process(x);
    if (!h->res.done && !h->lua_closed && h->body.len < SL_HTTP_STREAM_HIGH)
        sl__exchange_resume_reads(x);
}

static const sl_exchange_ops_t client_ops = {
    .kick = on_kick, .head = on_head, .body = on_body, .room = on_room, .parsed = on_parsed, .end = on_end};

static void on_deadline(uv_timer_t *t)
{
    sl_http_t *h = t->data;
    if (!h->res.done && !h->lua_closed) {
        sl__exchange_fail(&h->ex, SL_UPERR_TIMEOUT, "deadline passed", 0);
        if (!h->res.done) /* the exchange had ended: streaming, Lua had not taken the rest */
            report(h, SL_UPERR_TIMEOUT, "timeout: deadline passed");
    }
}

/* ---- Lua API ---- */

int sl_http_check_url(const char *url, size_t len)
{
    sl_url_t u;
    return sl_url_parse(url, len, &u) == 0 ? 0 : -EINVAL;
}

/* The exchange's kick and the deadline timer are both closed: the memory goes once Lua let go too. */
static void timer_closed(sl_http_t *h)
{
    if (++h->closed_timers < 2 || !h->lua_closed)
        return;
    sl_req_t *r = h->req;
    sl__exchange_free(&h->ex);
    sl_buf_free(&h->body);
    free(h->ca_file);
    free(h->cert_file);
    free(h->key_file);
    free(h);
    if (r)
        sl_req_release(r);
}

static void on_deadline_closed(uv_handle_t *t)
{
    timer_closed(t->data);
}

static void on_exchange_closed(sl_exchange_t *x)
{
    timer_closed(of(x));
}

static void close_timers(sl_http_t *h)
{
    if (!h->ex.closed) {
        sl__exchange_close(&h->ex, on_exchange_closed);
        uv_close((uv_handle_t *)&h->deadline, on_deadline_closed);
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
    sl_uptarget_t *t = &h->ex.target;
    snprintf(t->host, sizeof(t->host), "%s", u.host);
    t->port = u.port;
    t->tls = u.tls;
    t->verify = !(flags & SL_HTTP_NO_VERIFY);
    t->connect_timeout = o->connect_timeout;
    if (o->ca_file && *o->ca_file) {
        h->ca_file = strdup(o->ca_file);
        t->ca_file = h->ca_file;
    }
    if (o->cert_file && *o->cert_file && o->key_file && *o->key_file) {
        t->cert_file = h->cert_file = strdup(o->cert_file);
        t->key_file = h->key_file = strdup(o->key_file);
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
        snprintf(t->proxy_host, sizeof(t->proxy_host), "%s", px.host);
        t->proxy_port = px.port;
    }
    /* request line and head */
    sl_buf_t *out = &h->ex.out;
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
        free(h->cert_file);
        free(h->key_file);
        free(h);
        return NULL;
    }
    h->w = w;
    h->req = req;
    if (req)
        req->refs++;
    h->flags = flags;
    sl_exchange_t *x = &h->ex;
    sl__exchange_init(x, w, &client_ops);
    x->is_head = mlen == 4 && memcmp(method, "HEAD", 4) == 0;
    x->send_timeout = o->send_timeout;
    x->read_timeout = o->read_timeout;
    x->pool_size = o->pool_size;
    x->idle_timeout = o->idle_timeout;
    h->max_body = o->max_body > 0 ? o->max_body : 16.0 * 1024 * 1024;
    sl_http_t **head = list_of(w);
    h->next = *head;
    if (*head)
        (*head)->prev = h;
    *head = h;
    h->linked = 1;
    uv_timer_init(&w->loop, &h->deadline);
    h->deadline.data = h;
    sl_field_err_t e;
    if (sl_http_check_fields(headers, hlen, o->nfields, 0, &e) != 0) {
        /* never sent: the exchange is over before it began, Lua reads why (and raises: a plugin's mistake) */
        h->res.done = 1;
        h->res.error = SL_UPERR_BAD_REQUEST;
        sl_http_field_error(&e, h->res.errmsg, sizeof(h->res.errmsg));
        return &h->res;
    }
    sl__exchange_kick(x);
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
    sl__exchange_kick(&h->ex);
    return 0;
}

void sl_http_close(sl_httpres_t *res)
{
    sl_http_t *h = (sl_http_t *)res;
    if (h->lua_closed)
        return;
    h->lua_closed = 1;
    res->waiting = 0;
    unlink_h(h);
    if (h->closed_timers == 2) { /* the worker stopped and closed them already */
        h->closed_timers = 1;
        timer_closed(h);
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
        sl__exchange_fail(&h->ex, SL_UPERR_CLIENT_GONE, "worker stopping",
                          0); /* wakes Lua, which closes it */
        if (!h->res.done)
            report(h, SL_UPERR_CLIENT_GONE, "client_gone: worker stopping");
    }
    /* Whatever Lua did not close: stop the timers so the loop can end; sl_http_close frees them later. */
    while (p->clients) {
        sl_http_t *h = p->clients;
        unlink_h(h);
        close_timers(h);
    }
}
