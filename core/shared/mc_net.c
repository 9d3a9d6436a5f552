/* memcached's binary protocol on each worker's own loop: per worker one TCP connection to each server,
 * requests pipelined on it (memcached answers in order; the opaque field checks it), read and written by
 * libuv callbacks. No thread and no blocking call: a request costs a write and its share of a read, not a
 * thread-pool round trip (four context switches), which is what limits counting in memcached on every request
 * need.
 *
 * Servers are resolved once (at configure); which server a call goes to was chosen before it gets here
 * (wk->server: mc_ring.c, ketama with a circuit breaker per server). A connection that fails, times out or
 * answers out of order is closed; the calls queued on it fail (from its close callback: never inside the FFI
 * call that started one) and the next call opens a new one. A creation of a counter that lost the race to
 * another first call (NOT_STORED) is sent again. */
#include <errno.h>
#include <libmemcached/memcached.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/buf.h"
#include "common/log.h"
#include "lua/vm.h"
#include "shared/mc_internal.h"

#define MAX_WORKERS 64
#define MAX_BODY (64u * 1024 * 1024)
#define MAX_TRIES 4

enum { C_CONNECTING = 1, C_READY, C_CLOSING };
enum { OP_GET = 0x00, OP_SET = 0x01, OP_ADD = 0x02, OP_DELETE = 0x04, OP_INCR = 0x05, OP_DECR = 0x06 };

typedef struct mc_server {
    struct sockaddr_storage addr;
    int ok; /* resolved */
    char name[256];
} mc_server_t;

struct mc_net;

typedef struct mc_conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_timer_t timer;
    struct mc_net *net;
    int idx;
    int state;
    int open_handles;
    sl__mcwork_t *head, *tail; /* in the order sent (answers come in this order) */
    sl__mcwork_t *unsent;      /* first of the queue not written yet (the connection was not up) */
    uint8_t *rbuf;
    size_t rlen, rcap;
    uint32_t opaque;
    char fail[400];
} mc_conn_t;

typedef struct mc_net {
    sl_worker_t *w;
    mc_conn_t **conns;
    uv_timer_t
        flusher; /* writes what a loop turn queued, in one write per connection, at the next turn's start */
    int flush_pending;
} mc_net_t;

typedef struct mc_write {
    uv_write_t req;
    mc_conn_t *conn;
    uint8_t data[];
} mc_write_t;

static mc_server_t *servers;
static int nservers;
static double op_timeout = 0.2;
static mc_net_t *nets[MAX_WORKERS];

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, (uint16_t)(v >> 16));
    put16(p + 2, (uint16_t)v);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)(v >> 32));
    put32(p + 4, (uint32_t)v);
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return ((uint32_t)get16(p) << 16) | get16(p + 2);
}

static uint64_t get64(const uint8_t *p)
{
    return ((uint64_t)get32(p) << 32) | get32(p + 4);
}

int sl__mc_net_configure(const char *const *hosts, const int *ports, int n, double timeout)
{
    if (n <= 0)
        return -EINVAL;
    mc_server_t *sv = calloc((size_t)n, sizeof(*sv));
    if (sv == NULL)
        return -ENOMEM;
    for (int i = 0; i < n; i++) {
        char port[16];
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        snprintf(port, sizeof(port), "%d", ports[i]);
        snprintf(sv[i].name, sizeof(sv[i].name), "%s:%s", hosts[i], port);
        if (getaddrinfo(hosts[i], port, &hints, &res) == 0 && res) {
            memcpy(&sv[i].addr, res->ai_addr, res->ai_addrlen);
            sv[i].ok = 1;
        } else {
            sl_log(SL_LOG_WARN, "memcached: cannot resolve %s: calls to it fail", sv[i].name);
        }
        if (res)
            freeaddrinfo(res);
    }
    free(servers);
    servers = sv;
    nservers = n;
    op_timeout = timeout > 0 ? timeout : 0.2;
    return 0;
}

void sl__mc_net_shutdown(void)
{
    /* connections belong to worker loops, already gone; what is left is freed with the process */
    free(servers);
    servers = NULL;
    nservers = 0;
}

/* The calls queued on c get the failure (from a close callback: the loop, not an FFI call). */
static void fail_queue(mc_conn_t *c)
{
    sl__mcwork_t *wk = c->head;
    c->head = c->tail = c->unsent = NULL;
    while (wk) {
        sl__mcwork_t *next = wk->next;
        wk->next = NULL;
        sl__mc_done(wk, SL_MC_ERR, c->fail);
        wk = next;
    }
}

static void on_close(uv_handle_t *h)
{
    mc_conn_t *c = h->data;
    if (--c->open_handles > 0)
        return;
    fail_queue(c);
    free(c->rbuf);
    free(c);
}

/* Closes a connection that cannot go on; its calls fail with why. Texts stay fixed, with libmemcached's
 * return code for the failure (what callers and logs have always got: "connection failed (code 3)"). */
static void conn_fail(mc_conn_t *c, const char *why, memcached_return_t code)
{
    if (c->state == C_CLOSING)
        return;
    c->state = C_CLOSING;
    snprintf(c->fail, sizeof(c->fail), "%s (code %d)", why, (int)code);
    sl_log(SL_LOG_DEBUG, "memcached: %s: %s", servers[c->idx].name, c->fail);
    if (c->net->conns[c->idx] == c)
        c->net->conns[c->idx] = NULL; /* the next call opens a new one */
    uv_close((uv_handle_t *)&c->tcp, on_close);
    uv_close((uv_handle_t *)&c->timer, on_close);
}

static void on_write(uv_write_t *req, int status)
{
    mc_write_t *wr = (mc_write_t *)req;
    mc_conn_t *c = wr->conn;
    free(wr);
    if (status < 0 && status != UV_ECANCELED)
        conn_fail(c, "write to server failed", MEMCACHED_WRITE_FAILURE);
}

/* Writes the calls not written yet: what the socket takes at once, the rest through one queued write. */
static void flush(mc_conn_t *c)
{
    uv_buf_t bufs[64];
    while (c->unsent && c->state == C_READY) {
        unsigned n = 0;
        size_t total = 0;
        sl__mcwork_t *wk = c->unsent;
        for (; wk && n < 64; wk = wk->next, n++) {
            bufs[n] = uv_buf_init((char *)wk->wire, (unsigned)wk->wlen);
            total += wk->wlen;
        }
        c->unsent = wk;
        int r = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        size_t done = r > 0 ? (size_t)r : 0;
        if (r < 0 && r != UV_EAGAIN) {
            conn_fail(c, "write to server failed", MEMCACHED_WRITE_FAILURE);
            return;
        }
        if (done == total)
            continue;
        mc_write_t *wr = malloc(sizeof(*wr) + (total - done));
        if (wr == NULL) {
            conn_fail(c, "out of memory", MEMCACHED_MEMORY_ALLOCATION_FAILURE);
            return;
        }
        size_t off = sl_iov_gather((char *)wr->data, bufs, n, done);
        wr->conn = c;
        uv_buf_t b = uv_buf_init((char *)wr->data, (unsigned)off);
        if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
            free(wr);
            conn_fail(c, "write to server failed", MEMCACHED_WRITE_FAILURE);
            return;
        }
    }
}

static void on_timer(uv_timer_t *t)
{
    mc_conn_t *c = t->data;
    if (c->head == NULL) {
        uv_timer_stop(t);
        return;
    }
    if (sl_now() > c->head->deadline)
        conn_fail(c, c->state == C_CONNECTING ? "connect timeout" : "timeout", MEMCACHED_TIMEOUT);
}

/* memcached's error status as a fixed text and libmemcached's return code for it. */
static const char *status_text(uint16_t status, memcached_return_t *code)
{
    switch (status) {
    case 0x03:
        *code = MEMCACHED_E2BIG;
        return "value too large for memcached";
    case 0x04:
        *code = MEMCACHED_INVALID_ARGUMENTS;
        return "invalid arguments";
    case 0x06:
        *code = MEMCACHED_CLIENT_ERROR;
        return "value is not a number";
    case 0x82:
        *code = MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE;
        return "server out of memory";
    default:
        *code = MEMCACHED_SERVER_ERROR;
        return "server error";
    }
}

/* Puts wk at the end of the queue again with a new opaque (a creation that lost its race). */
static void resend(mc_conn_t *c, sl__mcwork_t *wk)
{
    wk->opaque = ++c->opaque;
    put32(wk->wire + 12, wk->opaque);
    wk->next = NULL;
    if (c->tail)
        c->tail->next = wk;
    else
        c->head = wk;
    c->tail = wk;
    if (c->unsent == NULL)
        c->unsent = wk;
    flush(c);
}

/* One answer for wk (its packet at p: header and body). */
static void answer(mc_conn_t *c, sl__mcwork_t *wk, const uint8_t *p, uint32_t bodylen)
{
    uint16_t status = get16(p + 6), keylen = get16(p + 2);
    uint8_t extlen = p[4];
    const uint8_t *body = p + 24;
    sl_mcop_t *op = &wk->op;

    if (status == 0x00) {
        if (wk->kind == SL_MC_GET || wk->kind == SL_MC_GETS) {
            size_t off = (size_t)extlen + keylen;
            size_t vlen = bodylen >= off ? bodylen - off : 0;
            char *v = malloc(vlen + 1);
            if (v == NULL) {
                char msg[48];
                snprintf(msg, sizeof(msg), "out of memory (code %d)",
                         (int)MEMCACHED_MEMORY_ALLOCATION_FAILURE);
                sl__mc_done(wk, SL_MC_ERR, msg);
                return;
            }
            memcpy(v, body + off, vlen);
            v[vlen] = '\0';
            op->value = v;
            op->value_len = (uint32_t)vlen;
            op->flags = extlen >= 4 ? get32(body) : 0;
            op->num = get64(p + 16); /* the cas unique */
        } else if ((wk->kind == SL_MC_INCR || wk->kind == SL_MC_DECR) && bodylen >= 8) {
            op->num = get64(body + extlen + keylen);
        }
        sl__mc_done(wk, SL_MC_OK, NULL);
    } else if (status == 0x01) {
        sl__mc_done(wk, SL_MC_NOT_FOUND, NULL);
    } else if (status == 0x02) {
        sl__mc_done(wk, SL_MC_NOT_STORED, NULL); /* add: the key exists; cas: the item changed */
    } else if (status == 0x05 && (wk->kind == SL_MC_INCR || wk->kind == SL_MC_DECR) && wk->has_initial &&
               ++wk->tries < MAX_TRIES) {
        resend(c, wk); /* another first call created the counter meanwhile: count on it */
    } else if (status == 0x05) {
        sl__mc_done(wk, SL_MC_NOT_STORED, NULL);
    } else {
        memcached_return_t code;
        const char *text = status_text(status, &code);
        char msg[96];
        snprintf(msg, sizeof(msg), "%s (code %d)", text, (int)code);
        sl__mc_done(wk, SL_MC_ERR, msg);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    mc_conn_t *c = h->data;
    if (c->rcap - c->rlen < 4096) {
        size_t cap = c->rcap ? c->rcap * 2 : 16384;
        uint8_t *nb = realloc(c->rbuf, cap);
        if (nb == NULL) {
            buf->base = NULL;
            buf->len = 0;
            return;
        }
        c->rbuf = nb;
        c->rcap = cap;
    }
    buf->base = (char *)c->rbuf + c->rlen;
    buf->len = c->rcap - c->rlen;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    mc_conn_t *c = s->data;
    size_t off = 0;
    if (nread < 0) {
        conn_fail(c, nread == UV_EOF ? "connection closed by server" : "read from server failed",
                  nread == UV_EOF ? MEMCACHED_CONNECTION_FAILURE : MEMCACHED_READ_FAILURE);
        return;
    }
    if (nread == 0 || c->state == C_CLOSING)
        return;
    c->rlen += (size_t)nread;
    while (c->rlen - off >= 24) {
        const uint8_t *p = c->rbuf + off;
        uint32_t bodylen = get32(p + 8);
        if (p[0] != 0x81 || bodylen > MAX_BODY) {
            conn_fail(c, "protocol error", MEMCACHED_PROTOCOL_ERROR);
            return;
        }
        if (c->rlen - off < 24 + (size_t)bodylen)
            break;
        sl__mcwork_t *wk = c->head;
        if (wk == NULL || wk == c->unsent || get32(p + 12) != wk->opaque) {
            conn_fail(c, "protocol error", MEMCACHED_PROTOCOL_ERROR); /* an answer to no call */
            return;
        }
        c->head = wk->next;
        if (c->head == NULL)
            c->tail = NULL;
        wk->next = NULL;
        answer(c, wk, p, bodylen);
        if (c->state == C_CLOSING)
            return;
        off += 24 + (size_t)bodylen;
    }
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    if (c->head == NULL)
        uv_timer_stop(&c->timer);
}

static void on_connect(uv_connect_t *req, int status)
{
    mc_conn_t *c = req->data;
    if (status == UV_ECANCELED || c->state == C_CLOSING)
        return;
    if (status < 0) {
        conn_fail(c, "connection failed", MEMCACHED_CONNECTION_FAILURE);
        return;
    }
    c->state = C_READY;
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_fail(c, "read from server failed", MEMCACHED_READ_FAILURE);
        return;
    }
    flush(c);
}

/* A zero-delay timer rather than a check handle: it runs at the start of the next loop turn whichever phase
 * queued the call, and a due timer keeps the loop from sleeping in poll meanwhile. */
static void on_flush(uv_timer_t *h)
{
    mc_net_t *net = h->data;
    net->flush_pending = 0;
    for (int i = 0; i < nservers; i++) {
        mc_conn_t *c = net->conns[i];
        if (c && c->unsent && c->state == C_READY)
            flush(c);
    }
}

static mc_net_t *net_of(sl_worker_t *w)
{
    if (w->id < 0 || w->id >= MAX_WORKERS)
        return NULL;
    mc_net_t *net = nets[w->id];
    if (net)
        return net;
    net = calloc(1, sizeof(*net));
    if (net == NULL)
        return NULL;
    net->conns = calloc((size_t)nservers, sizeof(*net->conns));
    if (net->conns == NULL) {
        free(net->conns);
        free(net);
        return NULL;
    }
    net->w = w;
    uv_timer_init(&w->loop, &net->flusher);
    net->flusher.data = net;
    uv_unref((uv_handle_t *)&net->flusher);
    nets[w->id] = net;
    return net;
}

/* The connection to server idx, opened when there is none. NULL on out of memory. */
static mc_conn_t *conn_of(mc_net_t *net, int idx)
{
    mc_conn_t *c = net->conns[idx];
    if (c)
        return c;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->net = net;
    c->idx = idx;
    c->state = C_CONNECTING;
    uv_tcp_init(&net->w->loop, &c->tcp);
    uv_timer_init(&net->w->loop, &c->timer);
    c->open_handles = 2;
    c->tcp.data = c->timer.data = c->creq.data = c;
    /* the loop may end with these open (a worker stopping): requests waiting keep it alive meanwhile */
    uv_unref((uv_handle_t *)&c->tcp);
    uv_unref((uv_handle_t *)&c->timer);
    net->conns[idx] = c;
    if (!servers[idx].ok)
        conn_fail(c, "host lookup failed", MEMCACHED_HOST_LOOKUP_FAILURE);
    else if (uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&servers[idx].addr, on_connect) != 0)
        conn_fail(c, "connection failed", MEMCACHED_CONNECTION_FAILURE);
    return c;
}

/* The request for wk in memcached's binary protocol (opaque filled by the caller). */
static int encode(sl__mcwork_t *wk)
{
    uint8_t opcode, extlen = 0;
    uint64_t cas = 0;
    switch (wk->kind) {
    case SL_MC_GET:
    case SL_MC_GETS:
        opcode = OP_GET;
        break;
    case SL_MC_SET:
    case SL_MC_CAS:
        opcode = OP_SET, extlen = 8, cas = wk->kind == SL_MC_CAS ? wk->delta : 0;
        break;
    case SL_MC_ADD:
        opcode = OP_ADD, extlen = 8;
        break;
    case SL_MC_DELETE:
        opcode = OP_DELETE;
        break;
    case SL_MC_INCR:
    case SL_MC_DECR:
        opcode = wk->kind == SL_MC_INCR ? OP_INCR : OP_DECR, extlen = 20;
        break;
    default:
        return -EINVAL;
    }
    size_t vlen = (opcode == OP_SET || opcode == OP_ADD) ? wk->vlen : 0;
    size_t len = 24 + extlen + wk->klen + vlen;
    uint8_t *p = wk->wire; /* room made with wk (sl_mc_start): 24 + 20 + key + value bytes at most */
    memset(p, 0, 24 + extlen);
    p[0] = 0x80;
    p[1] = opcode;
    put16(p + 2, (uint16_t)wk->klen);
    p[4] = extlen;
    put32(p + 8, (uint32_t)(extlen + wk->klen + vlen));
    put64(p + 16, cas);
    uint8_t *x = p + 24;
    if (extlen == 8) {
        put32(x, wk->flags);
        put32(x + 4, (uint32_t)wk->exptime);
    } else if (extlen == 20) {
        put64(x, wk->delta);
        put64(x + 8, wk->initial);
        put32(x + 16,
              wk->has_initial ? (uint32_t)wk->exptime : 0xffffffffu); /* no initial: fail when absent */
    }
    memcpy(x + extlen, wk->key, wk->klen);
    if (vlen)
        memcpy(x + extlen + wk->klen, wk->val, vlen);
    wk->wire = p;
    wk->wlen = len;
    return 0;
}

static void on_net_close(uv_handle_t *h)
{
    mc_net_t *net = h->data;
    free(net->conns);
    free(net);
}

void sl__mc_net_close(sl_worker_t *w)
{
    if (w->id < 0 || w->id >= MAX_WORKERS || nets[w->id] == NULL)
        return;
    mc_net_t *net = nets[w->id];
    nets[w->id] = NULL;
    for (int i = 0; i < nservers; i++)
        if (net->conns[i])
            conn_fail(net->conns[i], "gateway stopping", MEMCACHED_CONNECTION_FAILURE);
    uv_close((uv_handle_t *)&net->flusher, on_net_close);
}

int sl__mc_net_send(sl__mcwork_t *wk)
{
    if (wk->w->stopping >= 2) /* its connections are closed (sl__mc_net_close): none is opened again */
        return -ECANCELED;
    mc_net_t *net = net_of(wk->w);
    if (net == NULL || encode(wk) != 0)
        return -ENOMEM;
    int idx = wk->server;
    if (idx < 0 || idx >= nservers)
        return -EINVAL;
    mc_conn_t *c = conn_of(net, idx);
    if (c == NULL)
        return -ENOMEM;
    wk->deadline = sl_now() + op_timeout;
    wk->opaque = ++c->opaque;
    put32(wk->wire + 12, wk->opaque);
    if (c->tail)
        c->tail->next = wk;
    else
        c->head = wk;
    c->tail = wk;
    if (c->unsent == NULL)
        c->unsent = wk;
    if (c->state == C_CLOSING)
        return 0; /* failed at once (lookup, connect): its close callback fails the queue, this call too */
    if (!uv_is_active((uv_handle_t *)&c->timer)) {
        uint64_t every = (uint64_t)(op_timeout * 250);
        uv_timer_start(&c->timer, on_timer, every ? every : 1, every ? every : 1);
    }
    /* written at the end of this loop turn with every other call made meanwhile: one write for many calls */
    if (!net->flush_pending) {
        net->flush_pending = 1;
        uv_timer_start(&net->flusher, on_flush, 0, 0);
    }
    return 0;
}
