/* Private to core/http: the TLS transport of a client connection (conn_tls.c), and the helpers of conn.c it
 * shares. Only conn.c and conn_tls.c include this. */
#ifndef SL_CONN_TLS_H
#define SL_CONN_TLS_H

#include <stddef.h>
#include <uv.h>

#include "http/conn.h"

/** Handles ciphertext from the socket: advances the handshake, decrypts into rbuf. Returns 0 when rbuf may
 *  have new bytes to parse, -1 when there is nothing more to do now (or the connection was closed). */
int sl__conn_tls_on_read(sl_conn_t *c, const char *data, size_t len);
/** Encrypts bytes into the session and sends the records; 0 or a negative code (UV_EPIPE when closing). */
int sl__conn_tls_write(sl_conn_t *c, const uv_buf_t *bufs, unsigned n);
/** Queues a close_notify and tries to send it at once (best effort, at close when nothing is pending). */
void sl__conn_tls_close_notify(sl_conn_t *c);

/** Sends bytes as they are (conn.c): at once when the socket takes them, else from a copy queued with
 *  uv_write. 0 or a negative code. */
int sl__conn_sock_write(sl_conn_t *c, const uv_buf_t *bufs, unsigned n);
/** Makes room for READ_CHUNK more bytes in rbuf (conn.c); 0 or -1 on out of memory. */
int sl__conn_rbuf_reserve(sl_conn_t *c);
/** Writes the client's IP address into buf, "?" when unknown (conn.c); returns buf. */
const char *sl__conn_peer_ip(sl_conn_t *c, char *buf, size_t len);

#endif
