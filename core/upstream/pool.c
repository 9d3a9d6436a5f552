/* Upstream connections of one worker: reading and writing (through TLS when it is on), their timer and close,
 * and the keep-alive pool of idle ones; opening a new one (DNS, connect, proxy CONNECT, TLS handshake) is in
 * connect.c. Workers never share connections, so no locking. Used by the proxy (proxy.c) and the HTTP client
 * (client.c). */
#include "upstream/pool.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "lua/vm.h"
#include "tls/tls.h"
#include "upstream/client.h"
#include "upstream/connect.h"

typedef struct upwrite {
    uv_write_t req;
    sl_upconn_t *uc;
    char data[];
} upwrite_t;

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

sl_pool_t *sl__pool(sl_worker_t *w)
{
    /* once the worker closes its handles the pool is gone for good: a new one would never be freed */
    if (w->pool == NULL && w->stopping != 2) {
        w->pool = calloc(1, sizeof(sl_pool_t));
        if (w->pool)
            w->pool->net = &sl_upnet_pool;
    }
    return w->pool;
}

const sl_upnet_t *sl__upnet(sl_worker_t *w)
{
    sl_pool_t *p = sl__pool(w);
    return p && p->net ? p->net : &sl_upnet_pool;
}

/* The one table of upstream error classes (SL_UPERR_*): a short name for logs and Lua code, and the text a
 * client reads after "upstream " in a 502/504. Lua reads both through sl_uperr_name / sl_uperr_text. */
static const struct {
    const char *name, *text;
} uperrs[] = {
    [SL_UPERR_NONE] = {"none", "no error"},
    [SL_UPERR_CONNECT] = {"connect", "connect failed"},
    [SL_UPERR_DNS] = {"dns", "DNS resolution failed"},
    [SL_UPERR_TIMEOUT] = {"timeout", "timed out"},
    [SL_UPERR_RESET] = {"reset", "connection reset"},
    [SL_UPERR_BAD_RESPONSE] = {"bad_response", "invalid response"},
    [SL_UPERR_CLIENT_GONE] = {"client_gone", "client gone"},
    [SL_UPERR_NOMEM] = {"nomem", "out of memory"},
    [SL_UPERR_TLS] = {"tls", "TLS handshake failed"},
    [SL_UPERR_BAD_REQUEST] = {"bad_request", "invalid request"},
};

const char *sl_uperr_name(int e)
{
    return e >= 0 && e < (int)(sizeof(uperrs) / sizeof(uperrs[0])) ? uperrs[e].name : "error";
}

const char *sl_uperr_text(int e)
{
    return e >= 0 && e < (int)(sizeof(uperrs) / sizeof(uperrs[0])) ? uperrs[e].text : "error";
}

static void unlink_idle(sl_upconn_t *uc)
{
    sl_pool_t *p = uc->w->pool;
    if (!uc->idle || p == NULL)
        return;
    if (uc->prev_idle)
        uc->prev_idle->next_idle = uc->next_idle;
    else
        p->idle = uc->next_idle;
    if (uc->next_idle)
        uc->next_idle->prev_idle = uc->prev_idle;
    uc->next_idle = uc->prev_idle = NULL;
    uc->idle = 0;
    p->nidle--;
}

void sl__upconn_free(sl_upconn_t *uc)
{
    sl_tls_free(uc->tls);
    sl_buf_free(&uc->tunnel);
    free(uc->raw);
    free(uc->rbuf);
    free(uc);
}

static void on_close(uv_handle_t *h)
{
    sl_upconn_t *uc = h->data;
    if (uc->state == ST_RESOLVING)
        uc->closing = 2; /* freed when the resolver returns */
    else
        sl__upconn_free(uc);
}

static void on_timer_close(uv_handle_t *h)
{
    sl_upconn_t *uc = h->data;
    if (uc->state == ST_REOPENING)
        uc->closing = 2; /* the socket of a failed attempt is closing: connect.c frees the connection then */
    else
        uv_close((uv_handle_t *)&uc->tcp, on_close);
}

void sl__upconn_close(sl_upconn_t *uc)
{
    if (uc->closing)
        return;
    uc->closing = 1;
    unlink_idle(uc);
    uc->owner = NULL;
    uv_close((uv_handle_t *)&uc->timer, on_timer_close);
}

void sl__upconn_release(sl_upconn_t *uc, int reusable, int max_per_key, double idle_timeout)
{
    uv_timer_stop(&uc->timer);
    if (reusable)
        sl__pool_put(uc, max_per_key, idle_timeout);
    else
        sl__upconn_close(uc);
}

/* Opening failed: the connection closes, the owner hears why (and must forget it). */
void sl__upconn_fail_open(sl_upconn_t *uc, int error, const char *why)
{
    void *owner = uc->owner;
    const sl_upconn_ops_t *ops = uc->ops;
    sl__upconn_close(uc);
    if (owner) {
        uc->owner = owner; /* for the callback only: the connection is closing */
        ops->ready(uc, error, why);
        uc->owner = NULL;
    }
}

static void on_uc_timer(uv_timer_t *t)
{
    sl_upconn_t *uc = t->data;
    if (uc->idle || uc->owner == NULL)
        sl__upconn_close(uc);
    else if (uc->state != ST_READY)
        sl__upconn_fail_open(uc, SL_UPERR_TIMEOUT, "connect timed out");
    else if (uc->ops->timeout)
        uc->ops->timeout(uc);
}

void sl__upconn_arm(sl_upconn_t *uc, double seconds)
{
    if (seconds > 0)
        uv_timer_start(&uc->timer, on_uc_timer, (uint64_t)(seconds * 1000), 0);
    else
        uv_timer_stop(&uc->timer);
}

/* ---- writing ---- */

static void on_write(uv_write_t *req, int status)
{
    upwrite_t *wr = (upwrite_t *)req;
    sl_upconn_t *uc = wr->uc;
    free(wr);
    uc->pending_writes--;
    if (uc->closing || uc->owner == NULL)
        return;
    if (uc->state != ST_READY) {
        if (status < 0)
            sl__upconn_fail_open(uc, uc->state == ST_HANDSHAKE ? SL_UPERR_TLS : SL_UPERR_CONNECT,
                                 uv_strerror(status));
        return;
    }
    if (uc->ops->written && (status < 0 || uc->pending_writes == 0))
        uc->ops->written(uc, status);
}

/* Sends pieces on the socket in order: 1 all sent now, 0 queued (copied), or a negative code. */
static int raw_writev(sl_upconn_t *uc, const uv_buf_t *bufs, unsigned nbufs)
{
    /* Most writes fit the socket buffer: try first, and only queue what is left (uv_write would toggle epoll
     * interest for every request). Nothing may be queued ahead, or bytes would go out of order. */
    size_t len = 0, n = 0;
    for (unsigned i = 0; i < nbufs; i++)
        len += bufs[i].len;
    if (uc->pending_writes == 0) {
        int r = uv_try_write((uv_stream_t *)&uc->tcp, bufs, nbufs);
        if (r >= 0 && (size_t)r == len)
            return 1;
        if (r < 0 && r != UV_EAGAIN)
            return r;
        n = r < 0 ? 0 : (size_t)r;
    }
    size_t rest = len - n;
    upwrite_t *wr = malloc(sizeof(*wr) + rest);
    if (wr == NULL)
        return UV_ENOMEM;
    size_t off = 0;
    for (unsigned i = 0; i < nbufs; i++) { /* the part not sent yet, skipping the first n bytes */
        size_t skip = n < bufs[i].len ? n : bufs[i].len;
        n -= skip;
        memcpy(wr->data + off, bufs[i].base + skip, bufs[i].len - skip);
        off += bufs[i].len - skip;
    }
    wr->uc = uc;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)rest);
    int rc = uv_write(&wr->req, (uv_stream_t *)&uc->tcp, &b, 1, on_write);
    if (rc != 0) {
        free(wr);
        return rc;
    }
    uc->pending_writes++;
    return 0;
}

int sl__upconn_raw_write(sl_upconn_t *uc, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return raw_writev(uc, &b, 1);
}

int sl__upconn_flush_tls(sl_upconn_t *uc)
{
    const char *p;
    size_t n = sl_tls_pending_out(uc->tls, &p);
    if (n == 0)
        return 1;
    int rc = sl__upconn_raw_write(uc, p, n);
    if (rc >= 0)
        sl_tls_consume_out(uc->tls, n);
    return rc;
}

int sl__upconn_writev(sl_upconn_t *uc, const uv_buf_t *bufs, unsigned nbufs)
{
    if (uc->tls == NULL)
        return raw_writev(uc, bufs, nbufs);
    for (unsigned i = 0; i < nbufs; i++)
        if (bufs[i].len > 0 && sl_tls_write(uc->tls, bufs[i].base, bufs[i].len) < 0)
            return UV_EPROTO;
    return sl__upconn_flush_tls(uc);
}

int sl__upconn_write(sl_upconn_t *uc, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return sl__upconn_writev(uc, &b, 1);
}

/* ---- reading ---- */

static int rbuf_room(sl_upconn_t *uc, size_t want)
{
    if (uc->rpos > 0 && uc->rpos == uc->rlen)
        uc->rpos = uc->rlen = 0;
    if (uc->rcap - uc->rlen >= want)
        return 0;
    size_t cap = uc->rcap ? uc->rcap : SL_UPCONN_READ;
    while (cap - uc->rlen < want)
        cap *= 2;
    char *nb = realloc(uc->rbuf, cap);
    if (nb == NULL)
        return -1;
    uc->rbuf = nb;
    uc->rcap = cap;
    return 0;
}

/* Plain connections read into this when nothing waits in their rbuf, one per worker thread (libuv calls alloc
 * and read callbacks back to back): the owner parses the bytes where they lie and only what it leaves (Lua
 * has not taken the last event yet) moves to the connection's own rbuf (settle). A connection thus holds no
 * read buffer while it waits for the next event of a stream, nor while it is idle in the pool. */
static __thread char shared_rbuf[SL_UPCONN_READ];

/* The end of a read into the shared buffer: what the owner left unparsed moves to an rbuf of the connection's
 * own; 0, or -1 on out of memory. */
static int settle(sl_upconn_t *uc)
{
    size_t left = uc->rlen - uc->rpos;
    const char *rest = uc->rbuf + uc->rpos;
    uc->rbuf = NULL;
    uc->rcap = uc->rlen = uc->rpos = 0;
    if (left == 0 || uc->closing)
        return 0;
    if (rbuf_room(uc, left) != 0)
        return -1;
    memcpy(uc->rbuf, rest, left);
    uc->rlen = left;
    return 0;
}

/* A connection keeps reading for its whole life, in use or idle: toggling epoll interest per request costs
 * syscalls. Plain connections read into the shared buffer (or, behind bytes still waiting, into rbuf); TLS
 * ones into raw, decrypted into rbuf. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sl_upconn_t *uc = h->data;
    if (uc->tls || uc->state != ST_READY) {
        if (uc->raw == NULL)
            uc->raw = malloc(SL_UPCONN_READ);
        buf->base = uc->raw;
        buf->len = uc->raw ? SL_UPCONN_READ : 0;
        return;
    }
    if (uc->rpos == uc->rlen) {
        free(uc->rbuf); /* empty: the shared buffer serves instead */
        uc->rbuf = NULL;
        uc->rcap = uc->rlen = uc->rpos = 0;
        *buf = uv_buf_init(shared_rbuf, sizeof(shared_rbuf));
        return;
    }
    if (rbuf_room(uc, SL_UPCONN_READ / 4) != 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = uc->rbuf + uc->rlen;
    buf->len = uc->rcap - uc->rlen;
}

/* TLS: decrypts what arrived into rbuf and tells the owner. */
static void tls_read(sl_upconn_t *uc, const char *data, size_t n)
{
    if (sl_tls_feed(uc->tls, data, n) != 0) {
        if (uc->owner)
            uc->ops->read(uc, UV_ENOMEM);
        else
            sl__upconn_close(uc);
        return;
    }
    if (uc->state == ST_HANDSHAKE) {
        sl__upconn_handshake(uc);
        if (uc->state != ST_READY || uc->closing)
            return;
    }
    size_t got = 0;
    int end = 0;
    for (;;) {
        if (rbuf_room(uc, 16384) != 0) {
            end = UV_ENOMEM;
            break;
        }
        int rc = sl_tls_read(uc->tls, uc->rbuf + uc->rlen, uc->rcap - uc->rlen);
        if (rc > 0) {
            uc->rlen += (size_t)rc;
            got += (size_t)rc;
            continue;
        }
        if (rc == 0)
            end = UV_EOF; /* close_notify */
        else if (rc != SL_TLS_WANT)
            end = UV_EPROTO;
        break;
    }
    sl__upconn_flush_tls(uc);
    if (uc->owner == NULL) {
        if (got || end)
            sl__upconn_close(uc);
        return;
    }
    if (got)
        uc->ops->read(uc, (ssize_t)got);
    if (end && !uc->closing) {
        /* the response and the peer's close_notify came in one read: the owner may have just put the
         * connection back in the pool, where it must not stay */
        if (uc->owner)
            uc->ops->read(uc, end);
        else
            sl__upconn_close(uc);
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sl_upconn_t *uc = s->data;
    if (nread == 0 || uc->closing)
        return;
    if (uc->state != ST_READY && uc->state != ST_HANDSHAKE && uc->state != ST_TUNNEL)
        return;
    if (nread < 0) {
        if (uc->state != ST_READY)
            sl__upconn_fail_open(uc, uc->state == ST_HANDSHAKE ? SL_UPERR_TLS : SL_UPERR_CONNECT,
                                 nread == UV_EOF ? "closed during the handshake" : uv_strerror((int)nread));
        else if (uc->owner)
            uc->ops->read(uc, nread);
        else
            sl__upconn_close(uc);
        return;
    }
    if (uc->state == ST_TUNNEL) {
        sl__upconn_tunnel_read(uc, buf->base, (size_t)nread);
    } else if (uc->tls) {
        tls_read(uc, buf->base, (size_t)nread);
    } else if (uc->owner && buf->base == shared_rbuf) {
        uc->rbuf = shared_rbuf;
        uc->rcap = sizeof(shared_rbuf);
        uc->rpos = 0;
        uc->rlen = (size_t)nread;
        uc->ops->read(uc, nread);
        if (settle(uc) != 0 && uc->owner)
            uc->ops->read(uc, UV_ENOMEM);
    } else if (uc->owner) {
        uc->rlen += (size_t)nread;
        uc->ops->read(uc, nread);
    } else {
        sl__upconn_close(uc); /* data or EOF on an idle connection: it is done */
    }
}

void sl__upconn_read_start(sl_upconn_t *uc)
{
    if (!uc->reading && !uc->closing && uv_read_start((uv_stream_t *)&uc->tcp, on_alloc, on_read) == 0)
        uc->reading = 1;
}

void sl__upconn_read_stop(sl_upconn_t *uc)
{
    if (uc->reading) {
        uv_read_stop((uv_stream_t *)&uc->tcp);
        uc->reading = 0;
    }
}

void sl__upconn_hold(sl_upconn_t *uc)
{
    sl__upconn_read_stop(uc);
    if (uc->pending_writes == 0)
        uv_timer_stop(&uc->timer);
}

int sl__upconn_unhold(sl_upconn_t *uc)
{
    int was_reading = uc->reading;
    sl__upconn_read_start(uc);
    return !was_reading && uc->reading && uc->pending_writes == 0;
}

static sl_upconn_t *pool_get(sl_pool_t *p, const char *key, size_t len, uint64_t hash)
{
    for (sl_upconn_t *uc = p->idle; uc; uc = uc->next_idle) {
        if (uc->key_hash == hash && uc->key_len == len && memcmp(uc->key, key, len) == 0) {
            unlink_idle(uc);
            uv_timer_stop(&uc->timer);
            uc->reused = 1;
            return uc;
        }
    }
    return NULL;
}

static size_t key_put(char *key, size_t at, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    memcpy(key + at, s, n);
    key[at + n] = '|';
    return at + n + 1;
}

static size_t key_int(char *key, size_t at, int v)
{
    char tmp[12];
    size_t n = 0;
    unsigned u = (unsigned)v;
    do
        tmp[n++] = (char)('0' + u % 10);
    while ((u /= 10) && n < sizeof(tmp));
    while (n)
        key[at++] = tmp[--n];
    key[at] = '|';
    return at + 1;
}

/* The pool key of a target (no printf: this runs on every request) and its FNV-1a hash. Never cut:
 * connections verified against one CA must not serve a target that names another (ca_file, cert_file and
 * key_file are bounded to 512
 * bytes, host, SNI and proxy names to 255, so the key always fits in SL_UPCONN_KEY_MAX). */
static size_t make_key(const sl_uptarget_t *t, char *key, uint64_t *hash)
{
    size_t n = key_put(key, 0, t->tls ? "https" : "http", 5);
    n = key_put(key, n, t->host, sizeof(t->host));
    n = key_int(key, n, t->port);
    n = key_int(key, n, t->verify);
    n = key_put(key, n, t->sni, sizeof(t->sni));
    n = key_put(key, n, t->proxy_host, sizeof(t->proxy_host));
    n = key_int(key, n, t->proxy_port);
    n = key_put(key, n, t->ca_file ? t->ca_file : "", 512);
    n = key_put(key, n, t->cert_file ? t->cert_file : "", 512);
    n = key_put(key, n, t->key_file ? t->key_file : "", 512);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    *hash = h;
    return n;
}

sl_upconn_t *sl__upconn_open(sl_worker_t *w, const sl_uptarget_t *t, const sl_upconn_ops_t *ops, void *owner,
                             int fresh)
{
    sl_pool_t *p = sl__pool(w);
    if (p == NULL || (t->ca_file && strlen(t->ca_file) > 512) ||
        (t->cert_file && strlen(t->cert_file) > 512) || (t->key_file && strlen(t->key_file) > 512))
        return NULL; /* the pool key must hold the whole CA and certificate paths (see make_key) */
    char key[SL_UPCONN_KEY_MAX];
    uint64_t hash;
    size_t klen = make_key(t, key, &hash);
    sl_upconn_t *uc = fresh ? NULL : pool_get(p, key, klen, hash);
    if (uc) {
        uc->owner = owner;
        uc->ops = ops;
        ops->ready(uc, 0, NULL);
        return uc;
    }
    uc = calloc(1, sizeof(*uc) + klen);
    if (uc == NULL)
        return NULL;
    uc->w = w;
    uc->t = *t;
    memcpy(uc->key, key, klen);
    uc->key_len = klen;
    uc->key_hash = hash;
    uc->owner = owner;
    uc->ops = ops;
    uv_tcp_init(&w->loop, &uc->tcp);
    uv_timer_init(&w->loop, &uc->timer);
    uc->tcp.data = uc;
    uc->timer.data = uc;
    if (t->connect_timeout > 0)
        uv_timer_start(&uc->timer, on_uc_timer, (uint64_t)(t->connect_timeout * 1000), 0);
    sl__upconn_connect(uc, p, t);
    return uc;
}

void sl__pool_put(sl_upconn_t *uc, int max_per_key, double idle_timeout)
{
    sl_pool_t *p = sl__pool(uc->w);
    if (p == NULL || max_per_key <= 0 || uc->closing || uc->state != ST_READY || uc->pending_writes > 0 ||
        uc->w->stopping) {
        sl__upconn_close(uc);
        return;
    }
    int same = 0;
    sl_upconn_t *last_same = NULL;
    for (sl_upconn_t *o = p->idle; o; o = o->next_idle)
        if (o->key_hash == uc->key_hash && o->key_len == uc->key_len &&
            memcmp(o->key, uc->key, uc->key_len) == 0) {
            same++;
            last_same = o;
        }
    if (same >= max_per_key && last_same)
        sl__upconn_close(last_same);
    uc->owner = NULL;
    uc->rlen = uc->rpos = 0;
    uc->idle = 1;
    uc->next_idle = p->idle;
    uc->prev_idle = NULL;
    if (p->idle)
        p->idle->prev_idle = uc;
    p->idle = uc;
    p->nidle++;
    sl__upconn_read_start(uc);
    uv_timer_start(&uc->timer, on_uc_timer, (uint64_t)(idle_timeout * 1000), 0);
}

void sl__pool_close(sl_worker_t *w)
{
    sl_pool_t *p = w->pool;
    if (p == NULL)
        return;
    sl__client_close_all(w);
    while (p->idle)
        sl__upconn_close(p->idle);
    sl_dns_clear(&p->dns);
    free(p);
    w->pool = NULL;
}

const sl_upnet_t sl_upnet_pool = {.open = sl__upconn_open,
                                  .writev = sl__upconn_writev,
                                  .arm = sl__upconn_arm,
                                  .read_start = sl__upconn_read_start,
                                  .hold = sl__upconn_hold,
                                  .unhold = sl__upconn_unhold,
                                  .release = sl__upconn_release};
