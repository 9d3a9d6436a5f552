/* Private to core/upstream: how pool.c (the connection and its pool) and connect.c (opening it) share a
 * connection's state. Only those two files include this. */
#ifndef SL_UPSTREAM_CONNECT_H
#define SL_UPSTREAM_CONNECT_H

#include <stddef.h>

#include "upstream/pool.h"

/* sl_upconn_t.state: the opening steps, in order; ST_READY once the owner may write. ST_REOPENING: the socket
 * of a failed connect closes before the next address of the name is tried on a fresh one (libuv cannot
 * connect a handle twice); a close meanwhile leaves the freeing to connect.c (closing == 2). */
enum { ST_RESOLVING = 1, ST_CONNECTING, ST_REOPENING, ST_TUNNEL, ST_HANDSHAKE, ST_READY };

/** Starts opening a new connection to t (connect.c): a literal or cached address connects at once, else the
 *  name is resolved first. A refused or unreachable address of a name is followed by the next one, within
 *  the connect timeout. The outcome reaches the owner through ops->ready. */
void sl__upconn_connect(sl_upconn_t *uc, sl_pool_t *p, const sl_uptarget_t *t);
/** Advances the TLS handshake (connect.c) and sends what it produced; on completion the owner is told. */
void sl__upconn_handshake(sl_upconn_t *uc);
/** Takes bytes of the proxy's CONNECT response (connect.c); on a 200 starts TLS, else fails the opening. */
void sl__upconn_tunnel_read(sl_upconn_t *uc, const char *data, size_t n);

/** Opening failed (pool.c): the connection closes, the owner hears why (and must forget it). */
void sl__upconn_fail_open(sl_upconn_t *uc, int error, const char *why);
/** Sends bytes on the socket (pool.c): 1 all sent now, 0 queued, or a negative code. */
int sl__upconn_raw_write(sl_upconn_t *uc, const char *data, size_t len);
/** Sends what the TLS session produced (pool.c): 1 nothing pending or all sent, 0 queued, or a negative
 *  code. */
int sl__upconn_flush_tls(sl_upconn_t *uc);
/** Frees a closed connection's memory (pool.c); for the close callback, or the resolver once it returns. */
void sl__upconn_free(sl_upconn_t *uc);

#endif
