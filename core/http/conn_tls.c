/* TLS transport of a client connection: ciphertext in and out of the session, plaintext in rbuf and from the
 * writers. conn.c calls in here only when the connection has a TLS session. */
#include "http/conn_tls.h"

#include "common/log.h"
#include "server/settings.h"
#include "tls/listener.h"

/* Sends what the TLS session has produced (handshake messages, records, alerts). */
static int tls_flush(sl_conn_t *c)
{
    const char *p;
    size_t n = sl_tls_pending_out(c->tls, &p);
    if (n == 0)
        return 0;
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int rc = sl__conn_sock_write(c, &b, 1); /* takes all of it: written now or copied */
    sl_tls_consume_out(c->tls, n);
    return rc;
}

int sl__conn_tls_write(sl_conn_t *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->closing)
        return UV_EPIPE;
    for (unsigned i = 0; i < n; i++)
        if (bufs[i].len && sl_tls_write(c->tls, bufs[i].base, bufs[i].len) < 0)
            return UV_EPROTO;
    return tls_flush(c);
}

static void tls_fail(sl_conn_t *c, const char *what, int first_bytes_plain)
{
    char ip[64], err[256];
    const char *sni = sl_tls_sni(c->tls);
    sl_log(SL_LOG_INFO, "client %s: TLS %s failed (SNI %s): %s", sl__conn_peer_ip(c, ip, sizeof(ip)), what,
           sni ? sni : "none",
           first_bytes_plain ? "plain HTTP sent to an HTTPS port" : sl_tls_error(c->tls, err, sizeof(err)));
    if (first_bytes_plain) { /* say so in a language the client understands, instead of a TLS alert */
        static const char resp[] = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                                   "Content-Length: 96\r\nConnection: close\r\n\r\n"
                                   "{\"error\":{\"message\":\"plain HTTP request sent to an HTTPS port\","
                                   "\"type\":\"invalid_request_error\"}}\n";
        uv_buf_t b = uv_buf_init((char *)resp, sizeof(resp) - 1);
        c->io->try_write(c, &b, 1);
    } else {
        tls_flush(c); /* the alert, if any */
    }
    sl__conn_close(c);
}

int sl__conn_tls_on_read(sl_conn_t *c, const char *data, size_t len)
{
    if (sl_tls_feed(c->tls, data, len) != 0) {
        sl__conn_close(c);
        return -1;
    }
    if (!sl_tls_established(c->tls)) {
        int rc = sl_tls_handshake(c->tls);
        if (rc < 0 && rc != SL_TLS_WANT) {
            int plain = len >= 4 && data[0] >= 'A' && data[0] <= 'Z' && data[1] >= 'A' && data[1] <= 'Z' &&
                        sl_tls_sni(c->tls) == NULL;
            tls_fail(c, "handshake", plain);
            return -1;
        }
        if (tls_flush(c) != 0) {
            sl__conn_close(c);
            return -1;
        }
        if (rc == SL_TLS_WANT)
            return -1;
        sl__conn_timer(c, TIMER_IDLE, sl_settings.header_timeout); /* the request must follow in time */
    }
    for (;;) {
        if (sl__conn_rbuf_reserve(c) != 0) {
            sl__conn_close(c);
            return -1;
        }
        int n = sl_tls_read(c->tls, c->rbuf + c->rlen, c->rcap - c->rlen);
        if (n > 0) {
            c->rlen += (size_t)n;
            continue;
        }
        if (n == SL_TLS_WANT)
            break;
        if (n == 0) { /* close_notify: like EOF, but decrypted bytes before it still count */
            sl__conn_read_stop(c);
            c->eof = 1;
            break;
        }
        tls_fail(c, "read", 0);
        return -1;
    }
    if (tls_flush(c) != 0) {
        sl__conn_close(c);
        return -1;
    }
    return 0;
}

void sl__conn_tls_close_notify(sl_conn_t *c)
{
    const char *p;
    sl_tls_close(c->tls);
    size_t n = sl_tls_pending_out(c->tls, &p);
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    if (n)
        c->io->try_write(c, &b, 1);
}
