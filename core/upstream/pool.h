#ifndef SL_POOL_H
#define SL_POOL_H

#include <llhttp.h>
#include <uv.h>

#include "common/buf.h"
#include "server/worker.h"

struct sl_proxy;

#define SL_UPCONN_READ 65536

/** A TCP connection to an upstream; either in use by one proxy or idle in its worker's pool. */
typedef struct sl_upconn {
    uv_tcp_t tcp; /* first: the handle's memory is the connection's */
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai;
    sl_worker_t *w;
    struct sl_proxy *proxy;
    struct sl_upconn *next_idle, *prev_idle;
    llhttp_t parser;
    char *rbuf;
    size_t rlen, rpos, rcap;
    char key[300]; /* host:port */
    int reused;
    int closing;
    int idle;
    int reading;
} sl_upconn_t;

/** Per-worker pool of idle upstream connections keyed by host:port. */
typedef struct sl_pool {
    sl_upconn_t *idle; /* most recently used first */
    int nidle;
} sl_pool_t;

/** Takes an idle connection for key, or returns NULL. The caller owns it until sl__pool_put or close. */
sl_upconn_t *sl__pool_get(sl_worker_t *w, const char *key);
/** Returns a healthy connection to the pool (closing the oldest for key past max); it closes by itself when
 *  the upstream closes it or idle_timeout passes. */
void sl__pool_put(sl_upconn_t *uc, int max_per_key, double idle_timeout);
/** Allocates a connection (not yet connected) for key; NULL on out of memory. */
sl_upconn_t *sl__upconn_new(sl_worker_t *w, const char *key);
/** Closes a connection; its memory is freed in the close callback. */
void sl__upconn_close(sl_upconn_t *uc);
/** Starts reading (for the rest of the connection's life, unless stopped for back-pressure). */
void sl__upconn_read_start(sl_upconn_t *uc);
/** Stops reading (back-pressure); sl__upconn_read_start resumes. */
void sl__upconn_read_stop(sl_upconn_t *uc);
/** Handles bytes (or an error) that arrived for the proxy using uc; defined in proxy.c. */
void sl__proxy_on_read(sl_upconn_t *uc, ssize_t nread);
/** Closes every idle connection of a worker (at stop). */
void sl__pool_close(sl_worker_t *w);

#endif
