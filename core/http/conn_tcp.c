/* The TCP transport of client connections (sl_conn_io_t over a uv_tcp_t; TLS runs above it, conn_tls.c), and
 * accepting: a connection accepted on a listener is served by conn.c with the worker's Lua VM as its handler.
 */
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/log.h"
#include "http/conn.h"
#include "lua/vm.h"
#include "tls/listener.h"

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sl__conn_on_alloc(h->data, buf);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sl__conn_on_read(s->data, nread, buf);
}

static int tcp_read_start(sl_conn_t *c)
{
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void tcp_read_stop(sl_conn_t *c)
{
    uv_read_stop((uv_stream_t *)&c->tcp);
}

static int tcp_try_write(sl_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    return uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
}

static void on_write(uv_write_t *w, int status)
{
    sl__conn_on_write((sl_conn_wreq_t *)w, status);
}

static int tcp_write(sl_conn_t *c, sl_conn_wreq_t *wr)
{
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)wr->len);
    return uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
}

/* What libuv still queues, and what the kernel's send queue holds. */
static uint64_t tcp_unsent(sl_conn_t *c)
{
    uint64_t n = c->tcp.write_queue_size;
    uv_os_fd_t fd;
    int queued = 0;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 && ioctl(fd, TIOCOUTQ, &queued) == 0 && queued > 0)
        n += (uint64_t)queued;
    return n;
}

/* Whether the kernel has seen the client's FIN or reset. */
static int tcp_peer_closed(sl_conn_t *c)
{
    uv_os_fd_t fd;
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return 0;
    return ti.tcpi_state == TCP_CLOSE_WAIT || ti.tcpi_state == TCP_CLOSE;
}

static void on_close(uv_handle_t *h)
{
    sl_conn_t *c = h->data;
    void (*done)(sl_conn_t *) = c->io_data;
    done(c);
}

static void tcp_close(sl_conn_t *c, void (*done)(sl_conn_t *c))
{
    c->io_data = (void *)done;
    uv_close((uv_handle_t *)&c->tcp, on_close);
}

static const sl_conn_io_t tcp_io = {.read_start = tcp_read_start,
                                    .read_stop = tcp_read_stop,
                                    .try_write = tcp_try_write,
                                    .write = tcp_write,
                                    .unsent = tcp_unsent,
                                    .peer_closed = tcp_peer_closed,
                                    .close = tcp_close};

void sl_conn_accept(sl_listener_t *l, int fd, const struct sockaddr *peer, int peer_len)
{
    sl_worker_t *w = l->w;
    sl_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        close(fd);
        return;
    }
    uv_tcp_init(&w->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_tcp_open(&c->tcp, fd) != 0) {
        close(fd);
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
        return;
    }
    if (l->tls_idx >= 0) {
        char err[512];
        sl_tls_server_ctx_t *ctx = sl_tls_listener_ctx(l->tls_idx, &l->tls, &l->tls_gen, err, sizeof(err));
        if (ctx == NULL || (c->tls = sl_tls_new_server(ctx)) == NULL) {
            sl_log(SL_LOG_ERROR, "worker %d: cannot start a TLS session: %s", w->id,
                   ctx ? "out of memory" : err);
            uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)free);
            return;
        }
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (peer_len > 0 && (size_t)peer_len <= sizeof(c->peer)) {
        memcpy(&c->peer, peer, (size_t)peer_len);
        c->peer_len = peer_len;
    }
    sl__conn_start(c, w, &tcp_io, &sl_vm_handler, l->is_admin);
}
