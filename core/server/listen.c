/* A worker's listening sockets: bound with SO_REUSEPORT (the kernel spreads connections over the workers) and
 * accepted by hand from a poll handle rather than with uv_listen.
 *
 * By hand because of what libuv does when accept4 fails for lack of descriptors: it retries at once (1.44
 * loops inside one callback, calling back with EMFILE each time), so a worker at its open-files limit spun on
 * accept4, never got back to its loop (where closing connections would free descriptors and SIGTERM would be
 * seen) and only SIGKILL stopped it. Here, as in nginx, accepting pauses for SL_ACCEPT_PAUSE_MS instead:
 * connections wait in the kernel's queue, and the worker goes on serving the ones it has.
 *
 * Over the connection limit (limits.max_connections per worker; the Admin API listener has its own,
 * SL_ADMIN_MAX_CONNECTIONS) a connection is accepted, told 503 (best effort: one non-blocking send) and
 * closed. Refusals and pauses are logged once a second with a count, not once per connection. */
#include "server/listen.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "http/conn.h"
#include "server/settings.h"
#include "tls/listener.h"

#define ACCEPT_BATCH 64 /* per wake-up: other work on the loop gets its turn under a connection storm */

static void on_acceptable(uv_poll_t *h, int status, int events);

static int limit_of(int admin)
{
    if (admin)
        return SL_ADMIN_MAX_CONNECTIONS;
    int n = sl_settings.max_connections / (sl_settings.workers > 0 ? sl_settings.workers : 1);
    return n > 0 ? n : 1;
}

/* Answers 503 and closes. What the client already sent is read first: closing with unread bytes would reset
 * the connection, and the answer with it. One non-blocking try each; a TLS client gets only the close (a
 * plain text answer would be noise to it). */
static void refuse(const sl_listener_t *l, int fd)
{
#define BODY "{\"error\":{\"message\":\"too many connections\",\"type\":\"server_error\",\"code\":503}}\n"
    _Static_assert(sizeof(BODY) - 1 == 78, "the Content-Length below");
    static const char resp[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                               "Content-Length: 78\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" BODY;
#undef BODY
    if (l->tls_idx < 0) {
        char junk[4096];
        if (recv(fd, junk, sizeof(junk), MSG_DONTWAIT) != 0)
            (void)!send(fd, resp, sizeof(resp) - 1, MSG_DONTWAIT | MSG_NOSIGNAL);
    }
    close(fd);
}

static void on_resume(uv_timer_t *t)
{
    sl_listener_t *l = t->data;
    if (!l->closing)
        uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
}

static void pause_accept(sl_listener_t *l, int err)
{
    uv_poll_stop(&l->poll);
    uv_timer_start(&l->resume, on_resume, SL_ACCEPT_PAUSE_MS, 0);
    l->w->paused++;
    l->w->pause_errno = err;
}

static void on_acceptable(uv_poll_t *h, int status, int events)
{
    sl_listener_t *l = h->data;
    sl_worker_t *w = l->w;
    if (status < 0) {
        pause_accept(l, -status);
        return;
    }
    for (int i = 0; i < ACCEPT_BATCH && !l->closing; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
                return;
            case EINTR:
            case ECONNABORTED:
            case EPERM: /* a firewall rule */
            case EPROTO:
            case ENOPROTOOPT:
            case ENETDOWN:
            case ENETUNREACH:
            case EHOSTDOWN:
            case EHOSTUNREACH:
            case ENONET:
            case EOPNOTSUPP:
                continue; /* that connection's own trouble (Linux passes its network errors on): the next one
                           */
            default:
                pause_accept(l, errno); /* EMFILE, ENFILE, ENOBUFS, ENOMEM: retrying now would only spin */
                return;
            }
        }
        /* each of traffic, the Admin API and the keyless metrics listener has its own limit: a flood of one
         * does not shut the others out */
        int kind = l->is_admin; /* 0, SL_LISTEN_ADMIN or SL_LISTEN_METRICS */
        int n = kind == SL_LISTEN_ADMIN     ? w->nadmin
                : kind == SL_LISTEN_METRICS ? w->nmetrics
                                            : w->nconns - w->nadmin - w->nmetrics;
        if (w->stopping || n >= limit_of(kind != 0)) {
            refuse(l, fd);
            w->refused[kind]++;
            continue;
        }
        sl_conn_accept(l, fd, (struct sockaddr *)&ss, (int)len);
    }
}

void sl_listener_report(sl_worker_t *w)
{
    if (w->refused[0])
        sl_log(
            SL_LOG_WARN,
            "worker %d: limits.max_connections reached (%d per worker): refused %u connection(s) in the last "
            "second",
            w->id, limit_of(0), w->refused[0]);
    if (w->refused[1])
        sl_log(SL_LOG_WARN,
               "worker %d: Admin API connection limit (%d) reached: refused %u connection(s) in the "
               "last second",
               w->id, limit_of(1), w->refused[1]);
    if (w->refused[2])
        sl_log(SL_LOG_WARN,
               "worker %d: metrics listener connection limit (%d) reached: refused %u connection(s) in the "
               "last second",
               w->id, limit_of(1), w->refused[2]);
    if (w->paused)
        sl_log(SL_LOG_ERROR,
               "worker %d: accept: %s: accepting paused for %d ms (%u time(s) in the last second); raise the "
               "open-files limit or lower limits.max_connections",
               w->id, strerror(w->pause_errno), SL_ACCEPT_PAUSE_MS, w->paused);
    w->refused[0] = w->refused[1] = w->refused[2] = 0;
    w->paused = 0;
}

int sl_listener_open(sl_worker_t *w, sl_listener_t *l, int idx)
{
    const sl_listen_addr_t *a = &sl_settings.listen[idx];
    struct sockaddr_storage ss;
    int fd = -1, rc;
    l->tls_idx = -1;
    l->fd = -1;
    if (a->tls) {
        char err[512];
        if (sl_tls_listener_ctx(idx, &l->tls, &l->tls_gen, err, sizeof(err)) == NULL) {
            sl_log(SL_LOG_ERROR, "listen %s:%d: TLS: %s", a->host, a->port, err);
            return -EINVAL;
        }
        l->tls_idx = idx;
    }
    if (uv_ip4_addr(a->host, a->port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(a->host, a->port, (struct sockaddr_in6 *)&ss) != 0) {
        sl_log(SL_LOG_ERROR, "listen %s:%d: not an IP address", a->host, a->port);
        return -EINVAL;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t len = ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 511) != 0) {
        rc = -errno;
        sl_log(SL_LOG_ERROR, "listen %s:%d: %s", a->host, a->port, strerror(errno));
        goto fail;
    }
    if ((rc = uv_poll_init(&w->loop, &l->poll, fd)) != 0) {
        sl_log(SL_LOG_ERROR, "listen %s:%d: %s", a->host, a->port, uv_strerror(rc));
        goto fail;
    }
    l->poll.data = l;
    uv_timer_init(&w->loop, &l->resume);
    l->resume.data = l;
    l->fd = fd;
    l->w = w;
    l->is_admin = a->is_admin;
    l->open = 1;
    uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
    return 0;
fail:
    close(fd);
    return rc;
}

static void on_poll_closed(uv_handle_t *h)
{
    sl_listener_t *l = h->data;
    close(l->fd); /* only now: libuv may still watch it until the handle is closed */
    l->fd = -1;
}

void sl_listener_close(sl_listener_t *l)
{
    if (!l->open || l->closing)
        return;
    l->closing = 1;
    uv_close((uv_handle_t *)&l->resume, NULL);
    uv_close((uv_handle_t *)&l->poll, on_poll_closed);
}
