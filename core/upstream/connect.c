/* Opening an upstream connection: DNS (through the worker's cache), TCP connect (a name's addresses in turn
 * while they refuse or are unreachable, each on a fresh socket), CONNECT through an HTTP proxy, TLS
 * handshake. Each step runs from a libuv callback; at the end the owner hears ops->ready, with 0 or the
 * reason it failed. One timer (connect_timeout) bounds all of it. The connection itself (reading, writing,
 * timer, close) and the idle pool are in pool.c. */
#include "upstream/connect.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
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
    sl_tls_client_opts_t o = {.ca_file = uc->t.ca_file,
                              .cert_file = uc->t.cert_file,
                              .key_file = uc->t.key_file,
                              .insecure_no_verify = !uc->t.verify};
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
    /* any 2xx opens the tunnel (RFC 9110 9.3.6) */
    int ok = uc->tunnel.len > 12 && memcmp(b, "HTTP/1.", 7) == 0 && b[8] == ' ' && b[9] == '2' &&
             b[10] >= '0' && b[10] <= '9' && b[11] >= '0' && b[11] <= '9';
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

/* The host and port the socket goes to: the proxy's when there is one. */
static const char *dial_host(const sl_uptarget_t *t, int *port)
{
    *port = t->proxy_host[0] ? t->proxy_port : t->port;
    return t->proxy_host[0] ? t->proxy_host : t->host;
}

/* "10.0.0.1:80" or "[::1]:80", for the log. */
static void addr_name(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uv_ip6_name(a, ip, sizeof(ip));
        snprintf(out, n, "[%s]:%d", ip, ntohs(a->sin6_port));
    } else {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        uv_ip4_name(a, ip, sizeof(ip));
        snprintf(out, n, "%s:%d", ip, ntohs(a->sin_port));
    }
}

/* Connect errors after which another address of the same name may still work. */
static int worth_next(int status)
{
    return status == UV_ECONNREFUSED || status == UV_ENETUNREACH || status == UV_EHOSTUNREACH ||
           status == UV_EADDRNOTAVAIL || status == UV_EAFNOSUPPORT || status == UV_ETIMEDOUT ||
           status == UV_ECONNRESET || status == UV_ENETDOWN || status == UV_EHOSTDOWN;
}

static void on_connect(uv_connect_t *cr, int status);
static void connect_next(sl_upconn_t *uc);

static void on_reopened(uv_handle_t *h)
{
    sl_upconn_t *uc = h->data;
    if (uc->closing == 2) { /* closed meanwhile, its timer too */
        sl__upconn_free(uc);
        return;
    }
    uv_tcp_init(&uc->w->loop, &uc->tcp);
    uc->tcp.data = uc;
    uc->state = ST_CONNECTING;
    if (!uc->closing) /* else the close under way closes this fresh handle */
        connect_next(uc);
}

/* A connect failed: the name's next address on a fresh socket, or the opening fails with what happened. */
static void attempt_failed(sl_upconn_t *uc, int status)
{
    int port;
    const char *host = dial_host(&uc->t, &port);
    const struct sockaddr_storage *sa = &uc->addrs[uc->next_addr - 1];
    struct sockaddr_storage tmp;
    int named = sl_dns_literal(host, port, &tmp) != 0;
    char addr[64], msg[400];
    addr_name(sa, addr, sizeof(addr));
    if (named && uc->w->pool && worth_next(status))
        sl_dns_failed(&uc->w->pool->dns, host, (const struct sockaddr *)sa, sl_now());
    if (worth_next(status) && uc->next_addr < uc->naddrs) {
        sl_log(SL_LOG_WARN, "upstream %s:%d: connect to %s failed: %s; trying the next address", host, port,
               addr, uv_strerror(status));
        uc->state = ST_REOPENING;
        uv_close((uv_handle_t *)&uc->tcp, on_reopened);
        return;
    }
    if (!named)
        snprintf(msg, sizeof(msg), "connect to %s:%d: %s", host, port, uv_strerror(status));
    else if (uc->next_addr > 1)
        snprintf(msg, sizeof(msg), "connect to %s:%d (%d addresses tried, last %s): %s", host, port,
                 uc->next_addr, addr, uv_strerror(status));
    else
        snprintf(msg, sizeof(msg), "connect to %s:%d (%s): %s", host, port, addr, uv_strerror(status));
    sl__upconn_fail_open(uc, status == UV_ETIMEDOUT ? SL_UPERR_TIMEOUT : SL_UPERR_CONNECT, msg);
}

static void connect_next(sl_upconn_t *uc)
{
    uc->state = ST_CONNECTING;
    uc->connect_req.data = uc;
    const struct sockaddr *sa = (const struct sockaddr *)&uc->addrs[uc->next_addr++];
    int rc = uv_tcp_connect(&uc->connect_req, &uc->tcp, sa, on_connect);
    if (rc != 0)
        attempt_failed(uc, rc);
}

static void on_connect(uv_connect_t *cr, int status)
{
    sl_upconn_t *uc = cr->data;
    if (uc->closing || status == UV_ECANCELED)
        return;
    if (status < 0) {
        attempt_failed(uc, status);
        return;
    }
    uv_tcp_nodelay(&uc->tcp, 1);
    sl__upconn_read_start(uc);
    if (uc->t.proxy_host[0] && uc->t.tls) {
        /* an IPv6 literal goes in brackets, as in a URL */
        const char *lb = strchr(uc->t.host, ':') ? "[" : "", *rb = *lb ? "]" : "";
        char req[700];
        int n = snprintf(req, sizeof(req), "CONNECT %s%s%s:%d HTTP/1.1\r\nHost: %s%s%s:%d\r\n\r\n", lb,
                         uc->t.host, rb, uc->t.port, lb, uc->t.host, rb, uc->t.port);
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
    int port;
    const char *host = dial_host(&uc->t, &port);
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
    int n = sl_dns_lookup(&p->dns, host, port, sl_now(), uc->addrs, SL_DNS_MAX_ADDRS);
    if (n <= 0) {
        sl__upconn_fail_open(uc, SL_UPERR_DNS, "resolve: no usable address");
        return;
    }
    uc->naddrs = n;
    uc->next_addr = 0;
    connect_next(uc);
}

void sl__upconn_connect(sl_upconn_t *uc, sl_pool_t *p, const sl_uptarget_t *t)
{
    int port;
    const char *host = dial_host(t, &port);
    uc->next_addr = 0;
    uc->naddrs = sl_dns_literal(host, port, &uc->addrs[0]) == 0 ? 1 : 0;
    if (uc->naddrs == 0) {
        int n = sl_dns_lookup(&p->dns, host, port, sl_now(), uc->addrs, SL_DNS_MAX_ADDRS);
        uc->naddrs = n > 0 ? n : 0;
    }
    if (uc->naddrs > 0) {
        connect_next(uc);
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
