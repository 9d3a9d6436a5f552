/* TLS sessions over memory buffers with mbedTLS 2.28.
 *
 * The session's BIO callbacks read from an input buffer the owner fills (sl_tls_feed) and append to an
 * output buffer the owner drains (sl_tls_pending_out / sl_tls_consume_out), so mbedTLS never touches a socket
 * and never blocks: when it needs bytes that are not there yet it returns WANT_READ and the owner calls again
 * after the next read. Contexts (certificates, trust anchors, the random generator) are in tls_ctx.c. */
#include "tls/tls.h"

#include <mbedtls/error.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "tls/tls_internal.h"

enum { ST_HANDSHAKE, ST_ESTABLISHED, ST_FAILED };

/* ---- sessions ---- */

static int bio_send(void *arg, const unsigned char *p, size_t len)
{
    sl_tls_t *t = arg;
    if (sl_buf_append(&t->out, p, len) != 0)
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    return (int)len;
}

static int bio_recv(void *arg, unsigned char *p, size_t len)
{
    sl_tls_t *t = arg;
    size_t have = t->in.len - t->in_pos;
    if (have == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    if (len > have)
        len = have;
    memcpy(p, t->in.base + t->in_pos, len);
    t->in_pos += len;
    if (t->in_pos == t->in.len)
        t->in_pos = t->in.len = 0;
    return (int)len;
}

static sl_tls_t *session_new(const mbedtls_ssl_config *conf)
{
    sl_tls_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    mbedtls_ssl_init(&t->ssl);
    if (mbedtls_ssl_setup(&t->ssl, conf) != 0) {
        mbedtls_ssl_free(&t->ssl);
        free(t);
        return NULL;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
    return t;
}

sl_tls_t *sl_tls_new_server(sl_tls_server_ctx_t *ctx)
{
    sl_tls_t *t = session_new(&ctx->conf);
    if (t) {
        t->sctx = ctx;
        ctx->refs++;
    }
    return t;
}

sl_tls_t *sl_tls_new_client(sl_tls_client_ctx_t *ctx, const char *sni_host)
{
    sl_tls_t *t = session_new(&ctx->conf);
    if (t == NULL)
        return NULL;
    t->cctx = ctx;
    ctx->refs++;
    /* mbedTLS 2.28 sends this name as SNI and checks it against the certificate's DNS names / CN */
    if (sni_host && *sni_host && mbedtls_ssl_set_hostname(&t->ssl, sni_host) != 0) {
        sl_tls_free(t);
        return NULL;
    }
    return t;
}

void sl_tls_free(sl_tls_t *t)
{
    if (t == NULL)
        return;
    mbedtls_ssl_free(&t->ssl);
    if (t->sctx)
        sl__tls_server_ctx_unref(t->sctx);
    if (t->cctx)
        sl__tls_client_ctx_unref(t->cctx);
    sl_buf_free(&t->in);
    sl_buf_free(&t->out);
    free(t->sni);
    free(t);
}

int sl_tls_feed(sl_tls_t *t, const char *data, size_t len)
{
    return sl_buf_append(&t->in, data, len) == 0 ? 0 : SL_TLS_E_NOMEM;
}

static int fail(sl_tls_t *t, int rc)
{
    t->state = ST_FAILED;
    t->err = rc;
    t->verify_flags = mbedtls_ssl_get_verify_result(&t->ssl);
    if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED)
        return SL_TLS_E_VERIFY;
    if (rc == MBEDTLS_ERR_SSL_ALLOC_FAILED)
        return SL_TLS_E_NOMEM;
    return SL_TLS_E_HANDSHAKE;
}

int sl_tls_handshake(sl_tls_t *t)
{
    if (t->state == ST_ESTABLISHED)
        return 0;
    if (t->state == ST_FAILED)
        return SL_TLS_E_CLOSED;
    int rc = mbedtls_ssl_handshake(&t->ssl);
    if (rc == 0) {
        t->state = ST_ESTABLISHED;
        return 0;
    }
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return SL_TLS_WANT;
    return fail(t, rc);
}

int sl_tls_established(const sl_tls_t *t)
{
    return t->state == ST_ESTABLISHED;
}

int sl_tls_read(sl_tls_t *t, char *buf, size_t len)
{
    if (t->state == ST_FAILED)
        return SL_TLS_E_CLOSED;
    int rc = mbedtls_ssl_read(&t->ssl, (unsigned char *)buf, len);
    if (rc > 0)
        return rc;
    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return SL_TLS_WANT;
    if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
        return 0;
    return fail(t, rc);
}

int sl_tls_write(sl_tls_t *t, const char *data, size_t len)
{
    if (t->state != ST_ESTABLISHED)
        return SL_TLS_E_CLOSED;
    size_t off = 0;
    while (off < len) {
        int rc = mbedtls_ssl_write(&t->ssl, (const unsigned char *)data + off, len - off);
        if (rc < 0)
            return fail(t, rc); /* WANT_WRITE cannot happen: bio_send always takes everything */
        off += (size_t)rc;
    }
    return (int)len;
}

void sl_tls_close(sl_tls_t *t)
{
    if (t->state != ST_ESTABLISHED || t->close_sent)
        return;
    t->close_sent = 1;
    mbedtls_ssl_close_notify(&t->ssl);
}

size_t sl_tls_pending_out(sl_tls_t *t, const char **p)
{
    *p = t->out.base + t->out_pos;
    return t->out.len - t->out_pos;
}

void sl_tls_consume_out(sl_tls_t *t, size_t n)
{
    t->out_pos += n;
    if (t->out_pos >= t->out.len) {
        t->out_pos = t->out.len = 0;
        if (t->out.cap > 256 * 1024)
            sl_buf_free(&t->out); /* a big response should not pin memory on an idle connection */
    }
}

const char *sl_tls_error(const sl_tls_t *t, char *buf, size_t len)
{
    if (len == 0)
        return buf;
    if (t->err == 0) {
        snprintf(buf, len, "no error");
        return buf;
    }
    if (t->err == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        char info[512];
        int n = mbedtls_x509_crt_verify_info(info, sizeof(info), "", t->verify_flags);
        /* one line per problem: join them for a log line */
        for (int i = 0; i < n; i++)
            if (info[i] == '\n')
                info[i] = i == n - 1 ? 0 : ';';
        snprintf(buf, len, "certificate verification failed: %s", n > 0 ? info : "unknown reason");
        return buf;
    }
    char m[200];
    mbedtls_strerror(t->err, m, sizeof(m));
    snprintf(buf, len, "%s (-0x%04x)", m, (unsigned)-t->err);
    return buf;
}

const char *sl_tls_sni(const sl_tls_t *t)
{
    return t->sni;
}

const char *sl_tls_cipher(const sl_tls_t *t)
{
    return mbedtls_ssl_get_ciphersuite(&t->ssl);
}
