/* Opening an upstream connection: DNS (through the worker's cache), TCP connect, CONNECT through an HTTP
 * proxy, TLS handshake. Each step runs from a libuv callback; at the end the owner hears ops->ready, with 0
 * or the reason it failed. The connection itself (reading, writing, timer, close) and the idle pool are in
 * pool.c. */
#include "upstream/connect.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/vm.h"
#include "tls/tls.h"

static void opened(sl_upconn_t *uc)
{
    uc->state = ST_READY;
    uv_timer_stop(&uc->timer);
    if (uc->owner)
        uc->ops->ready(uc, 0, NULL);
}

static void tls_fail(sl_upconn_t *uc, const char *stage)
{
    char why[256], msg[600];
    sl_tls_error(uc->tls, why, sizeof(why));
    snprintf(msg, sizeof(msg), "TLS %s with %s:%d: %s", stage, uc->t.host, uc->t.port, why);
    sl__upconn_fail_open(uc, SL_UPERR_TLS, msg);
}

void sl__upconn_handshake(sl_upconn_t *uc)
{
    int rc = sl_tls_handshake(uc->tls);
    if (rc != 0 && rc != SL_TLS_WANT) {
        sl__upconn_flush_tls(uc); /* the alert, if any */
        tls_fail(uc, "handshake");
        return;
    }
    int w = sl__upconn_flush_tls(uc);
    if (w < 0) {
        sl__upconn_fail_open(uc, SL_UPERR_CONNECT, uv_strerror(w));
        return;
    }
    if (rc == 0)
        opened(uc);
}

static void start_tls(sl_upconn_t *uc)
{
    char err[256] = "";
    sl_tls_client_opts_t o = {.ca_file = uc->t.ca_file, .insecure_no_verify = !uc->t.verify};
    sl_tls_client_ctx_t *ctx = sl_tls_client_ctx_get(&o, err, sizeof(err));
    if (ctx == NULL) {
        char msg[300];
        snprintf(msg, sizeof(msg), "TLS client setup: %s", err);
        sl__upconn_fail_open(uc, SL_UPERR_TLS, msg);
        return;
    }
    uc->tls = sl_tls_new_client(ctx, uc->t.sni[0] ? uc->t.sni : uc->t.host);
    if (uc->tls == NULL) {
        sl__upconn_fail_open(uc, SL_UPERR_NOMEM, "out of memory");
        return;
    }
    uc->state = ST_HANDSHAKE;
    sl__upconn_handshake(uc);
}

void sl__upconn_tunnel_read(sl_upconn_t *uc, const char *data, size_t n)
{
    if (sl_buf_append(&uc->tunnel, data, n) != 0 || uc->tunnel.len > 16384) {
        sl__upconn_fail_open(uc, SL_UPERR_BAD_RESPONSE, "proxy CONNECT response too large");
        return;
    }
    const char *b = uc->tunnel.base;
    const char *end = memmem(b, uc->tunnel.len, "\r\n\r\n", 4);
    if (end == NULL)
        return;
    int ok = uc->tunnel.len > 12 && memcmp(b, "HTTP/1.", 7) == 0 && memcmp(b + 8, " 200", 4) == 0;
    if (!ok || end + 4 != b + uc->tunnel.len) {
        char msg[160];
        snprintf(
            msg, sizeof(msg), "proxy refused CONNECT: %.*s",
            (int)(memchr(b, '\r', uc->tunnel.len) ? (const char *)memchr(b, '\r', uc->tunnel.len) - b : 0),
            b);
        sl__upconn_fail_open(uc, SL_UPERR_CONNECT, msg);
        return;
    }
    sl_buf_free(&uc->tunnel);
    start_tls(uc);
}

static void on_connect(uv_connect_t *cr, int status)
{
    sl_upconn_t *uc = cr->data;
    if (uc->closing || status == UV_ECANCELED)
        return;
    if (status < 0) {
        char msg[400];
        snprintf(msg, sizeof(msg), "connect to %s:%d: %s",
                 uc->t.proxy_host[0] ? uc->t.proxy_host : uc->t.host,
                 uc->t.proxy_host[0] ? uc->t.proxy_port : uc->t.port, uv_strerror(status));
        sl__upconn_fail_open(uc, status == UV_ETIMEDOUT ? SL_UPERR_TIMEOUT : SL_UPERR_CONNECT, msg);
        return;
    }
    uv_tcp_nodelay(&uc->tcp, 1);
    sl__upconn_read_start(uc);
    if (uc->t.proxy_host[0] && uc->t.tls) {
        char req[700];
        int n = snprintf(req, sizeof(req), "CONNECT %s:%d HTTP/1.1\r\nHost: %s:%d\r\n\r\n", uc->t.host,
                         uc->t.port, uc->t.host, uc->t.port);
        uc->state = ST_TUNNEL;
        if (sl__upconn_raw_write(uc, req, (size_t)n) < 0)
            sl__upconn_fail_open(uc, SL_UPERR_CONNECT, "proxy CONNECT write failed");
        return;
    }
    if (uc->t.tls)
        start_tls(uc);
    else
        opened(uc);
}

static void connect_to(sl_upconn_t *uc, const struct sockaddr *sa)
{
    uc->state = ST_CONNECTING;
    uc->connect_req.data = uc;
    int rc = uv_tcp_connect(&uc->connect_req, &uc->tcp, sa, on_connect);
    if (rc != 0)
        sl__upconn_fail_open(uc, SL_UPERR_CONNECT, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    sl_upconn_t *uc = g->data;
    if (uc->closing == 2) {
        uv_freeaddrinfo(res);
        sl__upconn_free(uc);
        return;
    }
    uc->state = ST_CONNECTING;
    if (uc->closing) {
        uv_freeaddrinfo(res);
        return;
    }
    const char *host = uc->t.proxy_host[0] ? uc->t.proxy_host : uc->t.host;
    int port = uc->t.proxy_host[0] ? uc->t.proxy_port : uc->t.port;
    sl_pool_t *p = sl__pool(uc->w);
    if (status < 0 || res == NULL || p == NULL ||
        sl_dns_store(&p->dns, host, res, sl_now(), SL_DNS_TTL) != 0) {
        char msg[320];
        snprintf(msg, sizeof(msg), "resolve %s: %s", host, status < 0 ? uv_strerror(status) : "no address");
        uv_freeaddrinfo(res);
        sl__upconn_fail_open(uc, status == UV_ENOMEM ? SL_UPERR_NOMEM : SL_UPERR_DNS, msg);
        return;
    }
    uv_freeaddrinfo(res);
    struct sockaddr_storage ss;
    if (sl_dns_lookup(&p->dns, host, port, sl_now(), &ss) != 0) {
        sl__upconn_fail_open(uc, SL_UPERR_DNS, "resolve: no usable address");
        return;
    }
    connect_to(uc, (struct sockaddr *)&ss);
}

void sl__upconn_connect(sl_upconn_t *uc, sl_pool_t *p, const sl_uptarget_t *t)
{
    const char *host = t->proxy_host[0] ? t->proxy_host : t->host;
    int port = t->proxy_host[0] ? t->proxy_port : t->port;
    struct sockaddr_storage ss;
    if (sl_dns_literal(host, port, &ss) == 0 || sl_dns_lookup(&p->dns, host, port, sl_now(), &ss) == 0) {
        connect_to(uc, (struct sockaddr *)&ss);
        return;
    }
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    uc->gai.data = uc;
    uc->state = ST_RESOLVING;
    int rc = uv_getaddrinfo(&uc->w->loop, &uc->gai, on_resolved, host, portstr, &hints);
    if (rc != 0) {
        uc->state = ST_CONNECTING;
        sl__upconn_fail_open(uc, SL_UPERR_DNS, uv_strerror(rc));
    }
}
