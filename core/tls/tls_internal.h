/* Private to core/tls: the objects that tls_ctx.c (contexts) and tls.c (sessions) both look into. Only those
 * two files include this. */
#ifndef SL_TLS_INTERNAL_H
#define SL_TLS_INTERNAL_H

#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <stdint.h>

#include "common/buf.h"
#include "tls/tls.h"

typedef struct cert_entry {
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    char **names; /* lower-case DNS names (SAN, else CN); "*.x" wildcards kept as written */
    int nnames;
} cert_entry_t;

struct sl_tls_server_ctx {
    mbedtls_ssl_config conf;
    cert_entry_t *certs;
    int ncerts;
    int refs; /* the owner's reference plus one per session */
};

struct sl_tls_client_ctx {
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    int refs;
    char *key;                      /* cache key (sl_tls_client_ctx_get) */
    struct sl_tls_client_ctx *next; /* in the thread's cache */
};

struct sl_tls {
    mbedtls_ssl_context ssl; /* first: the SNI callback gets the ssl context and finds the session from it */
    sl_tls_server_ctx_t *sctx;
    sl_tls_client_ctx_t *cctx;
    sl_buf_t in, out;
    size_t in_pos, out_pos;
    int state;
    int err; /* mbedTLS code of the failure */
    uint32_t verify_flags;
    int close_sent;
    char *sni;
};

/** Drops one reference to a server context (tls_ctx.c); the last one frees it and its certificates. */
void sl__tls_server_ctx_unref(sl_tls_server_ctx_t *ctx);
/** Drops one reference to a client context (tls_ctx.c); the last one frees it. */
void sl__tls_client_ctx_unref(sl_tls_client_ctx_t *ctx);

#endif
