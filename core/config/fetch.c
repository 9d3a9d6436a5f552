/* One blocking HTTP/1.1 request (fetch.h): resolve, connect, TLS (core/tls sessions over memory buffers,
 * driven here over a blocking socket), write the request, parse the response with llhttp. Every wait is a
 * poll() bounded by the request's one deadline, so a server that stops answering costs at most the timeout.
 * The connection is not kept: `Connection: close`. */
#include "config/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/buf.h"
#include "lua/vm.h"
#include "tls/tls.h"
#include "upstream/url.h"

#define MAX_BODY_DEFAULT (64u << 20)

typedef struct fconn {
    int fd;
    sl_tls_client_ctx_t *ctx;
    sl_tls_t *tls;
    double deadline;
    sl_fetch_res_t *res;
} fconn_t;

typedef struct fparse {
    sl_buf_t body;
    size_t max_body;
    int done, too_big;
} fparse_t;

static int fail(sl_fetch_res_t *res, int rc, const char *fmt, const char *arg)
{
    snprintf(res->err, sizeof(res->err), fmt, arg ? arg : "");
    return rc;
}

/* Milliseconds left before the deadline (0 when past it). */
static int left_ms(double deadline)
{
    double ms = (deadline - sl_now()) * 1000.0;
    return ms <= 0 ? 0 : ms > 2e9 ? 2000000000 : (int)ms + 1;
}

static int wait_fd(fconn_t *c, short events)
{
    struct pollfd p = {.fd = c->fd, .events = events};
    for (;;) {
        int ms = left_ms(c->deadline);
        if (ms == 0)
            return fail(c->res, -ETIMEDOUT, "timed out%s", NULL);
        int n = poll(&p, 1, ms);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return fail(c->res, -errno, "poll: %s", strerror(errno));
    }
}

static int send_raw(fconn_t *c, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(c, POLLOUT);
            if (rc != 0)
                return rc;
        } else if (n < 0 && errno != EINTR) {
            return fail(c->res, -errno, "send: %s", strerror(errno));
        }
    }
    return 0;
}

/* Reads what the socket has (waiting for it): >0 bytes, 0 at EOF, or a negative code. */
static ssize_t recv_raw(fconn_t *c, char *buf, size_t cap)
{
    for (;;) {
        ssize_t n = recv(c->fd, buf, cap, 0);
        if (n >= 0)
            return n;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(c, POLLIN);
            if (rc != 0)
                return rc;
        } else if (errno != EINTR) {
            return fail(c->res, -errno, "recv: %s", strerror(errno));
        }
    }
}

static int flush_tls(fconn_t *c)
{
    const char *p;
    size_t n;
    while ((n = sl_tls_pending_out(c->tls, &p)) > 0) {
        int rc = send_raw(c, p, n);
        if (rc != 0)
            return rc;
        sl_tls_consume_out(c->tls, n);
    }
    return 0;
}

static int tls_error(fconn_t *c, const char *what)
{
    char why[200];
    sl_tls_error(c->tls, why, sizeof(why));
    snprintf(c->res->err, sizeof(c->res->err), "TLS %s: %.200s", what, why);
    return -EPROTO;
}

/* Feeds the session one read of ciphertext: 0, or a negative code (EOF counts as an error mid-handshake). */
static int feed_tls(fconn_t *c)
{
    char raw[16384];
    ssize_t n = recv_raw(c, raw, sizeof(raw));
    if (n < 0)
        return (int)n;
    if (n == 0)
        return fail(c->res, -ECONNRESET, "connection closed during the TLS exchange%s", NULL);
    return sl_tls_feed(c->tls, raw, (size_t)n) == 0 ? 0 : fail(c->res, -ENOMEM, "out of memory%s", NULL);
}

static int handshake(fconn_t *c)
{
    for (;;) {
        int rc = sl_tls_handshake(c->tls);
        int frc = flush_tls(c);
        if (rc == 0)
            return frc;
        if (rc != SL_TLS_WANT)
            return tls_error(c, "handshake");
        if (frc != 0)
            return frc;
        if ((rc = feed_tls(c)) != 0)
            return rc;
    }
}

static int conn_write(fconn_t *c, const char *p, size_t len)
{
    if (c->tls == NULL)
        return send_raw(c, p, len);
    if (sl_tls_write(c->tls, p, len) < 0)
        return tls_error(c, "write");
    return flush_tls(c);
}

/* Plaintext from the connection: >0 bytes, 0 at EOF (close_notify or the socket's end), or a negative code.
 */
static ssize_t conn_read(fconn_t *c, char *buf, size_t cap)
{
    if (c->tls == NULL)
        return recv_raw(c, buf, cap);
    for (;;) {
        int n = sl_tls_read(c->tls, buf, cap);
        if (n >= 0)
            return n;
        if (n != SL_TLS_WANT)
            return tls_error(c, "read");
        int rc = flush_tls(c);
        if (rc != 0)
            return rc;
        char raw[16384];
        ssize_t r = recv_raw(c, raw, sizeof(raw));
        if (r <= 0)
            return r; /* an EOF without close_notify: the HTTP framing says whether the body was whole */
        if (sl_tls_feed(c->tls, raw, (size_t)r) != 0)
            return fail(c->res, -ENOMEM, "out of memory%s", NULL);
    }
}

/* A non-blocking connect to one address, waited for until the deadline. */
static int connect_one(fconn_t *c, const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        return fail(c->res, -errno, "socket: %s", strerror(errno));
    c->fd = fd;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return 0;
    if (errno != EINPROGRESS)
        return fail(c->res, -errno, "connect: %s", strerror(errno));
    int rc = wait_fd(c, POLLOUT);
    if (rc != 0)
        return rc;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    return err == 0 ? 0 : fail(c->res, -err, "connect: %s", strerror(err));
}

static int open_conn(fconn_t *c, const sl_url_t *u)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", u->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *list = NULL;
    int grc = getaddrinfo(u->host, port, &hints, &list);
    if (grc != 0) {
        snprintf(c->res->err, sizeof(c->res->err), "cannot resolve %.200s: %s", u->host, gai_strerror(grc));
        return -EHOSTUNREACH;
    }
    int rc = -ECONNREFUSED;
    for (struct addrinfo *ai = list; ai; ai = ai->ai_next) {
        rc = connect_one(c, ai);
        if (rc == 0 || rc == -ETIMEDOUT)
            break;
        close(c->fd); /* the next address, if any */
        c->fd = -1;
    }
    freeaddrinfo(list);
    return rc;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    fparse_t *fp = p->data;
    if (fp->body.len + len > fp->max_body) {
        fp->too_big = 1;
        return HPE_USER;
    }
    return sl_buf_append(&fp->body, at, len) == 0 ? 0 : HPE_USER;
}

static int on_complete(llhttp_t *p)
{
    ((fparse_t *)p->data)->done = 1;
    return HPE_PAUSED; /* nothing after this response matters */
}

static int build_request(sl_buf_t *out, const sl_fetch_opts_t *o, const sl_url_t *u)
{
    char host[300], cl[64];
    sl_url_authority(host, sizeof(host), u->host, strlen(u->host), u->port, u->tls);
    snprintf(cl, sizeof(cl), "Content-Length: %zu\r\n", o->body ? o->blen : 0);
    int rc = sl_buf_appends(out, o->method ? o->method : "GET");
    rc |= sl_buf_appends(out, " ");
    rc |= sl_buf_append(out, u->target, u->target_len);
    rc |= sl_buf_appends(out, " HTTP/1.1\r\nHost: ");
    rc |= sl_buf_appends(out, host);
    rc |= sl_buf_appends(out, "\r\nConnection: close\r\nUser-Agent: sluice/");
    rc |= sl_buf_appends(out, sl_version());
    rc |= sl_buf_appends(out, "\r\n");
    rc |= sl_buf_appends(out, cl);
    if (o->headers)
        rc |= sl_buf_appends(out, o->headers);
    rc |= sl_buf_appends(out, "\r\n");
    if (o->body && o->blen)
        rc |= sl_buf_append(out, o->body, o->blen);
    return rc;
}

static int exchange(fconn_t *c, const sl_fetch_opts_t *o, const sl_url_t *u)
{
    sl_buf_t req = {0};
    if (build_request(&req, o, u) != 0) {
        sl_buf_free(&req);
        return fail(c->res, -ENOMEM, "out of memory%s", NULL);
    }
    int rc = conn_write(c, req.base, req.len);
    sl_buf_free(&req);
    if (rc != 0)
        return rc;
    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_body = on_body;
    settings.on_message_complete = on_complete;
    fparse_t fp = {.max_body = o->max_body ? o->max_body : MAX_BODY_DEFAULT};
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    parser.data = &fp;
    char buf[16384];
    while (!fp.done) {
        ssize_t n = conn_read(c, buf, sizeof(buf));
        if (n < 0) {
            rc = (int)n;
            break;
        }
        llhttp_errno_t e = n == 0 ? llhttp_finish(&parser) : llhttp_execute(&parser, buf, (size_t)n);
        if (fp.done)
            break;
        if (e != HPE_OK) {
            rc = fp.too_big ? fail(c->res, -EMSGSIZE, "response body over the size limit%s", NULL)
                            : fail(c->res, -EPROTO, "invalid HTTP response: %s", llhttp_errno_name(e));
            break;
        }
        if (n == 0) {
            rc = fail(c->res, -ECONNRESET, "connection closed before the response was complete%s", NULL);
            break;
        }
    }
    if (rc == 0 && fp.done) {
        c->res->status = parser.status_code;
        c->res->body_len = fp.body.len;
        c->res->body = fp.body.base ? fp.body.base : calloc(1, 1);
        if (c->res->body == NULL)
            rc = fail(c->res, -ENOMEM, "out of memory%s", NULL);
        return rc;
    }
    sl_buf_free(&fp.body);
    return rc;
}

int sl_fetch(const sl_fetch_opts_t *o, sl_fetch_res_t *res)
{
    memset(res, 0, sizeof(*res));
    if (o == NULL || o->url == NULL)
        return fail(res, -EINVAL, "no URL%s", NULL);
    sl_url_t u;
    if (sl_url_parse(o->url, strlen(o->url), &u) != 0)
        return fail(res, -EINVAL, "invalid URL %s (expected http[s]://host:port)", o->url);
    fconn_t c = {.fd = -1, .res = res, .deadline = sl_now() + (o->timeout > 0 ? o->timeout : 5)};
    int rc = open_conn(&c, &u);
    if (rc == 0 && u.tls) {
        char err[256] = "";
        sl_tls_client_opts_t to = {.ca_file = o->ca_file,
                                   .cert_file = o->cert_file,
                                   .key_file = o->key_file,
                                   .insecure_no_verify = !o->verify};
        c.ctx = sl_tls_client_ctx_new(&to, err, sizeof(err));
        if (c.ctx == NULL)
            rc = fail(res, -EINVAL, "TLS setup: %.200s", err);
        else if ((c.tls = sl_tls_new_client(c.ctx, u.host)) == NULL)
            rc = fail(res, -ENOMEM, "out of memory%s", NULL);
        else
            rc = handshake(&c);
    }
    if (rc == 0)
        rc = exchange(&c, o, &u);
    sl_tls_free(c.tls);
    sl_tls_client_ctx_free(c.ctx);
    if (c.fd >= 0)
        close(c.fd);
    return rc;
}

void sl_fetch_free(sl_fetch_res_t *res)
{
    if (res == NULL)
        return;
    free(res->body);
    res->body = NULL;
    res->body_len = 0;
}
