/* Idle upstream connections of one worker. Workers never share connections, so no locking. */
#include "upstream/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sl_pool_t *pool_of(sl_worker_t *w)
{
    if (w->pool == NULL)
        w->pool = calloc(1, sizeof(sl_pool_t));
    return w->pool;
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

sl_upconn_t *sl__pool_get(sl_worker_t *w, const char *key)
{
    sl_pool_t *p = pool_of(w);
    if (p == NULL)
        return NULL;
    for (sl_upconn_t *uc = p->idle; uc; uc = uc->next_idle) {
        if (strcmp(uc->key, key) == 0) {
            unlink_idle(uc);
            uv_timer_stop(&uc->timer);
            uc->reused = 1;
            return uc;
        }
    }
    return NULL;
}

static void on_close(uv_handle_t *h)
{
    sl_upconn_t *uc = h->data;
    free(uc->rbuf);
    free(uc);
}

static void on_timer_close(uv_handle_t *h)
{
    sl_upconn_t *uc = h->data;
    uv_close((uv_handle_t *)&uc->tcp, on_close);
}

void sl__upconn_close(sl_upconn_t *uc)
{
    if (uc->closing)
        return;
    uc->closing = 1;
    unlink_idle(uc);
    uc->proxy = NULL;
    uv_close((uv_handle_t *)&uc->timer, on_timer_close);
}

static void on_idle_timeout(uv_timer_t *t)
{
    sl__upconn_close(t->data);
}

/* A connection keeps reading for its whole life, in use or idle: toggling epoll interest per request
 * costs syscalls. What arrives goes to the proxy using it; on an idle one, data or EOF means it is done. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    sl_upconn_t *uc = h->data;
    if (uc->rpos > 0 && uc->rpos == uc->rlen)
        uc->rpos = uc->rlen = 0;
    if (uc->rcap - uc->rlen < SL_UPCONN_READ / 4) {
        size_t cap = uc->rcap ? uc->rcap * 2 : SL_UPCONN_READ;
        char *nb = realloc(uc->rbuf, cap);
        if (nb == NULL) {
            buf->base = NULL;
            buf->len = 0;
            return;
        }
        uc->rbuf = nb;
        uc->rcap = cap;
    }
    buf->base = uc->rbuf + uc->rlen;
    buf->len = uc->rcap - uc->rlen;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    sl_upconn_t *uc = s->data;
    if (uc->proxy) {
        sl__proxy_on_read(uc, nread);
        return;
    }
    if (nread != 0)
        sl__upconn_close(uc);
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

void sl__pool_put(sl_upconn_t *uc, int max_per_key, double idle_timeout)
{
    sl_pool_t *p = pool_of(uc->w);
    if (p == NULL || max_per_key <= 0 || uc->closing) {
        sl__upconn_close(uc);
        return;
    }
    int same = 0;
    sl_upconn_t *last_same = NULL;
    for (sl_upconn_t *o = p->idle; o; o = o->next_idle)
        if (strcmp(o->key, uc->key) == 0) {
            same++;
            last_same = o;
        }
    if (same >= max_per_key && last_same)
        sl__upconn_close(last_same);
    uc->proxy = NULL;
    uc->rlen = uc->rpos = 0;
    uc->idle = 1;
    uc->next_idle = p->idle;
    uc->prev_idle = NULL;
    if (p->idle)
        p->idle->prev_idle = uc;
    p->idle = uc;
    p->nidle++;
    sl__upconn_read_start(uc);
    uv_timer_start(&uc->timer, on_idle_timeout, (uint64_t)(idle_timeout * 1000), 0);
}

sl_upconn_t *sl__upconn_new(sl_worker_t *w, const char *key)
{
    sl_upconn_t *uc = calloc(1, sizeof(*uc));
    if (uc == NULL)
        return NULL;
    uc->w = w;
    snprintf(uc->key, sizeof(uc->key), "%s", key);
    uv_tcp_init(&w->loop, &uc->tcp);
    uv_timer_init(&w->loop, &uc->timer);
    uc->tcp.data = uc;
    uc->timer.data = uc;
    return uc;
}

void sl__pool_close(sl_worker_t *w)
{
    sl_pool_t *p = w->pool;
    if (p == NULL)
        return;
    while (p->idle)
        sl__upconn_close(p->idle);
    free(p);
    w->pool = NULL;
}
