#ifndef SL_POOL_H
#define SL_POOL_H

#include <llhttp.h>
#include <uv.h>

#include "common/buf.h"
#include "http/request.h"
#include "server/worker.h"
#include "upstream/dns.h"

#define SL_UPCONN_READ 65536
/* The longest pool key (sl_upconn_t.key): see make_key in pool.c. */
#define SL_UPCONN_KEY_MAX 2560

/* Upstream error classes, so retry and fallback logic can decide what to do (Lua sees this enum through its
 * cdef in lua/sluice/pdk/base.lua, and the names through sl_uperr_name / sl_uperr_text). */
enum {
    SL_UPERR_NONE = 0,
    SL_UPERR_CONNECT = 1,      /* refused or unreachable */
    SL_UPERR_DNS = 2,          /* name did not resolve */
    SL_UPERR_TIMEOUT = 3,      /* connect, send or read timeout, or the total deadline */
    SL_UPERR_RESET = 4,        /* reset or closed before the response was complete */
    SL_UPERR_BAD_RESPONSE = 5, /* not valid HTTP (or headers too large, or body over the limit) */
    SL_UPERR_CLIENT_GONE = 6,  /* our client went away (or the worker stops); the request was cancelled */
    SL_UPERR_NOMEM = 7,
    SL_UPERR_TLS = 8, /* handshake failed or certificate rejected */
    SL_UPERR_BAD_REQUEST =
        9, /* the request given cannot be sent (a header name or value: core/http/field.h) */
};

/** Where to connect: the pool key is derived from all of it, so connections are shared only among equals. */
typedef struct sl_uptarget {
    char host[256];
    int port;
    int tls;             /* 1: HTTPS */
    int verify;          /* 1: check the certificate against ca_file (default bundle when NULL) and host */
    const char *ca_file; /* per-upstream CA bundle, or NULL */
    const char *cert_file, *key_file; /* client certificate and key (PEM), or NULL */
    char sni[256];                    /* name sent as SNI and checked in the certificate; "" means host */
    char proxy_host[256];             /* "" for a direct connection; else an HTTP proxy (CONNECT for TLS) */
    int proxy_port;
    double connect_timeout; /* DNS + TCP connect + CONNECT + TLS handshake */
} sl_uptarget_t;

typedef struct sl_upconn sl_upconn_t;

/** What the user of a connection (proxy or client exchange) is told. */
typedef struct sl_upconn_ops {
    /** sl__upconn_open finished: error 0 (ready to write) or SL_UPERR_*, with a reason for the log. */
    void (*ready)(sl_upconn_t *uc, int error, const char *why);
    /** n > 0 new bytes were appended at rbuf + rlen - n; n < 0: read failed or ended (UV_EOF). */
    void (*read)(sl_upconn_t *uc, ssize_t n);
    /** A queued write finished (status 0) or failed. */
    void (*written)(sl_upconn_t *uc, int status);
    /** The timer armed with sl__upconn_arm fired. */
    void (*timeout)(sl_upconn_t *uc);
} sl_upconn_ops_t;

struct sl_tls;

/** A connection to an upstream; either used by one owner or idle in its worker's pool. */
struct sl_upconn {
    uv_tcp_t tcp; /* first: the handle's memory is the connection's */
    uv_timer_t timer;
    uv_connect_t connect_req;
    uv_getaddrinfo_t gai;
    sl_worker_t *w;
    void *owner;
    const sl_upconn_ops_t *ops;
    struct sl_upconn *next_idle, *prev_idle;
    char *rbuf; /* plaintext received, rpos..rlen not yet parsed */
    size_t rlen, rpos, rcap;
    struct sl_tls *tls;
    char *raw;       /* TLS: ciphertext read buffer */
    sl_buf_t tunnel; /* CONNECT response bytes */
    int state;
    int pending_writes;
    size_t key_len;
    uint64_t key_hash; /* compared first: pool scans run on every request */
    sl_uptarget_t t;
    struct sockaddr_storage addrs[SL_DNS_MAX_ADDRS]; /* connect.c: addresses to try in turn (a name's) */
    int naddrs, next_addr;
    int reused;
    int closing;
    int idle;
    int reading;
    /* host, port, TLS settings (CA path, client certificate, SNI), proxy: see make_key; key_len bytes,
     * allocated with the connection (at most SL_UPCONN_KEY_MAX: one per concurrent stream, so not a fixed
     * array) */
    char key[];
};

/** How an exchange (exchange.c) gets and uses its connections: the worker's pool (sl_upnet_pool, the
 * functions below) or, in C tests, a fake that answers from memory. The other half of the sl_upconn_ops_t
 * seam. */
typedef struct sl_upnet {
    /** As sl__upconn_open. */
    sl_upconn_t *(*open)(sl_worker_t *w, const sl_uptarget_t *t, const sl_upconn_ops_t *ops, void *owner,
                         int fresh);
    /** As sl__upconn_writev. */
    int (*writev)(sl_upconn_t *uc, const uv_buf_t *bufs, unsigned nbufs);
    /** As sl__upconn_arm. */
    void (*arm)(sl_upconn_t *uc, double seconds);
    /** As sl__upconn_read_start. */
    void (*read_start)(sl_upconn_t *uc);
    /** As sl__upconn_hold. */
    void (*hold)(sl_upconn_t *uc);
    /** As sl__upconn_unhold. */
    int (*unhold)(sl_upconn_t *uc);
    /** As sl__upconn_release. */
    void (*release)(sl_upconn_t *uc, int reusable, int max_per_key, double idle_timeout);
} sl_upnet_t;

/** The worker's pool as an sl_upnet_t. */
extern const sl_upnet_t sl_upnet_pool;

/** Per-worker upstream state: idle connections, the DNS cache, running client exchanges. */
typedef struct sl_pool {
    sl_upconn_t *idle; /* most recently used first */
    int nidle;
    sl_dns_cache_t dns;
    void *clients;         /* running sl_http_t exchanges (client.c), closed when the worker stops */
    const sl_upnet_t *net; /* how this worker's exchanges reach upstreams: &sl_upnet_pool, or a test's fake */
} sl_pool_t;

/** The worker's pool, created on first use; NULL on out of memory. */
sl_pool_t *sl__pool(sl_worker_t *w);
/** How the worker's exchanges reach upstreams (its pool's net; sl_upnet_pool without a pool). */
const sl_upnet_t *sl__upnet(sl_worker_t *w);
/** Gets a ready connection to t for owner: an idle one from the pool (ready called before returning, with
 *  uc->reused set) unless fresh is set, or a new one (DNS through the cache, connect, proxy CONNECT, TLS
 *  handshake; ready called later from a libuv callback). A retry after a kept-alive connection failed asks
 *  for a fresh one: the others idle since as long may be just as stale. Returns the connection or NULL on out
 *  of memory (ready not called). */
sl_upconn_t *sl__upconn_open(sl_worker_t *w, const sl_uptarget_t *t, const sl_upconn_ops_t *ops, void *owner,
                             int fresh);
/** Writes bytes (encrypted on TLS connections): returns 1 when all went out at once, 0 when queued
 *  (ops->written follows), or a negative code. */
int sl__upconn_write(sl_upconn_t *uc, const char *data, size_t len);
/** Writes several pieces in order, as sl__upconn_write (the caller's buffers are free again on return). */
int sl__upconn_writev(sl_upconn_t *uc, const uv_buf_t *bufs, unsigned nbufs);
/** Arms the connection's timer (ops->timeout fires); 0 stops it. */
void sl__upconn_arm(sl_upconn_t *uc, double seconds);
/** Returns a healthy connection to the pool (closing the oldest for its key past max); it closes by itself
 *  when the upstream closes it or idle_timeout passes. */
void sl__pool_put(sl_upconn_t *uc, int max_per_key, double idle_timeout);
/** Closes a connection; its memory is freed in the close callback. */
void sl__upconn_close(sl_upconn_t *uc);
/** Its owner is done with the connection: its timer stops, and it goes back to the pool (sl__pool_put) when
 *  reusable, else closes. */
void sl__upconn_release(sl_upconn_t *uc, int reusable, int max_per_key, double idle_timeout);
/** Starts reading (for the rest of the connection's life, unless stopped for back-pressure). */
void sl__upconn_read_start(sl_upconn_t *uc);
/** Stops reading (back-pressure); sl__upconn_read_start resumes. */
void sl__upconn_read_stop(sl_upconn_t *uc);
/** Back-pressure from the owner's side (its client or Lua has not taken what it has): stops reading, and the
 *  timer too, since nothing is being waited for from the upstream meanwhile (a queued write keeps its send
 *  timeout). */
void sl__upconn_hold(sl_upconn_t *uc);
/** Reads again after sl__upconn_hold. Returns 1 when the owner should arm its read timeout afresh (reading
 * had stopped and no write is queued), 0 otherwise. */
int sl__upconn_unhold(sl_upconn_t *uc);
/** Closes every idle connection of a worker and fails its client exchanges (at stop). */
void sl__pool_close(sl_worker_t *w);
/** Short name of an error class for logs and Lua ("connect", "dns", "timeout", ...; "error" when unknown). */
const char *sl_uperr_name(int error);
/** What an error class means, for a client's error message ("connect failed", "timed out", ...). */
const char *sl_uperr_text(int error);

#endif
