/* An in-memory transport for client connections (see memconn.h). */
#include "memconn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static sl_memconn_t *of(sl_conn_t *c)
{
    return c->io_data;
}

static int mem_read_start(sl_conn_t *c)
{
    of(c)->reading = 1;
    return 0;
}

static void mem_read_stop(sl_conn_t *c)
{
    of(c)->reading = 0;
}

static int mem_try_write(sl_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    sl_memconn_t *m = of(c);
    if (m->reset)
        return UV_ECONNRESET;
    if (m->queue)
        return UV_EAGAIN; /* bytes must not overtake those queued */
    size_t took = 0, room = m->room ? m->room - m->sockbuf.len : SIZE_MAX;
    for (unsigned i = 0; i < n && took < room; i++) {
        size_t k = bufs[i].len < room - took ? bufs[i].len : room - took;
        sl_buf_append(m->room ? &m->sockbuf : &m->out, bufs[i].base, k);
        took += k;
    }
    m->writes++;
    return took ? (int)took : UV_EAGAIN;
}

static int mem_write(sl_conn_t *c, sl_conn_wreq_t *wr)
{
    sl_memconn_t *m = of(c);
    if (m->reset)
        return UV_ECONNRESET;
    wr->w.data = NULL;
    if (m->queue_tail)
        m->queue_tail->w.data = wr;
    else
        m->queue = wr;
    m->queue_tail = wr;
    m->queued += wr->len;
    m->writes++;
    return 0;
}

static uint64_t mem_unsent(sl_conn_t *c)
{
    return of(c)->queued + of(c)->sockbuf.len;
}

static int mem_peer_closed(sl_conn_t *c)
{
    sl_memconn_t *m = of(c);
    return m->reset || (m->eof && m->in_pos == m->in.len);
}

static void mem_close(sl_conn_t *c, void (*done)(sl_conn_t *c))
{
    sl_memconn_t *m = of(c);
    /* queued writes are cancelled, as libuv cancels them when a handle closes */
    while (m->queue) {
        sl_conn_wreq_t *wr = m->queue;
        m->queue = wr->w.data;
        m->queued -= wr->len;
        sl__conn_on_write(wr, UV_ECANCELED);
    }
    m->queue_tail = NULL;
    m->closed = 1;
    m->reading = 0;
    m->c = NULL;
    done(c);
}

static const sl_conn_io_t mem_io = {.read_start = mem_read_start,
                                    .read_stop = mem_read_stop,
                                    .try_write = mem_try_write,
                                    .write = mem_write,
                                    .unsent = mem_unsent,
                                    .peer_closed = mem_peer_closed,
                                    .close = mem_close};

sl_memconn_t *sl_memconn_open(sl_worker_t *w, const sl_handler_t *handler)
{
    sl_memconn_t *m = calloc(1, sizeof(*m));
    sl_conn_t *c = calloc(1, sizeof(*c));
    if (m == NULL || c == NULL) {
        free(m);
        free(c);
        return NULL;
    }
    m->client_reads = 1;
    m->c = c;
    c->io_data = m;
    struct sockaddr_in peer;
    uv_ip4_addr("127.0.0.1", 40000, &peer);
    memcpy(&c->peer, &peer, sizeof(peer));
    c->peer_len = sizeof(peer);
    sl__conn_start(c, w, &mem_io, handler, 0);
    return m;
}

void sl_memconn_send(sl_memconn_t *m, const void *data, size_t len)
{
    sl_buf_append(&m->in, data, len);
}

static int deliver(sl_memconn_t *m)
{
    sl_conn_t *c = m->c;
    if (m->in_pos < m->in.len) {
        uv_buf_t buf;
        sl__conn_on_alloc(c, &buf);
        if (buf.base == NULL || buf.len == 0)
            return 0;
        size_t n = m->in.len - m->in_pos;
        if (m->piece && n > m->piece)
            n = m->piece;
        if (n > buf.len)
            n = buf.len;
        memcpy(buf.base, m->in.base + m->in_pos, n);
        m->in_pos += n;
        m->reads++;
        sl__conn_on_read(c, (ssize_t)n, &buf);
        return 1;
    }
    if (m->reset || m->eof) {
        uv_buf_t none = uv_buf_init(NULL, 0);
        m->reads++;
        sl__conn_on_read(c, m->reset ? UV_ECONNRESET : UV_EOF, &none);
        return 1;
    }
    return 0;
}

int sl_memconn_step(sl_memconn_t *m)
{
    if (m->c == NULL)
        return 0;
    if (m->reading && (m->in_pos < m->in.len || m->eof || m->reset) && deliver(m))
        return 1;
    if (m->sockbuf.len > 0 && m->client_reads && !m->reset) {
        sl_buf_append(&m->out, m->sockbuf.base, m->sockbuf.len);
        m->sockbuf.len = 0;
        return 1;
    }
    if (m->queue && (m->client_reads || m->reset)) {
        sl_conn_wreq_t *wr = m->queue;
        m->queue = wr->w.data;
        if (m->queue == NULL)
            m->queue_tail = NULL;
        m->queued -= wr->len;
        if (!m->reset)
            sl_buf_append(&m->out, wr->data, wr->len);
        sl__conn_on_write(wr, m->reset ? UV_ECONNRESET : 0);
        return 1;
    }
    return 0;
}

int sl_memconn_run(sl_memconn_t *m, uv_loop_t *loop, int max)
{
    int rounds = 0, idle = 0;
    while (rounds < max && idle < 3) { /* zero-delay timers started by a callback run on the next turn */
        int did = sl_memconn_step(m);
        uv_run(loop, UV_RUN_NOWAIT);
        rounds++;
        idle = did ? 0 : idle + 1;
    }
    return rounds;
}

void sl_memconn_free(sl_memconn_t *m, uv_loop_t *loop)
{
    if (m->c)
        sl__conn_close(m->c);
    for (int i = 0; i < 4 && !m->closed; i++)
        uv_run(loop, UV_RUN_NOWAIT); /* the timer's close, then the transport's */
    sl_buf_free(&m->in);
    sl_buf_free(&m->out);
    sl_buf_free(&m->sockbuf);
    free(m);
}
