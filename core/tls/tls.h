#ifndef SL_TLS_H
#define SL_TLS_H

/* TLS sessions over memory buffers (mbedTLS 2.28), independent of the transport: the owner of the socket
 * feeds received ciphertext with sl_tls_feed, drives sl_tls_handshake / sl_tls_read / sl_tls_write, and sends
 * what sl_tls_pending_out returns. Nothing here does I/O or blocks.
 *
 * Threads: every object belongs to the thread that created it (workers are threads, and mbedTLS keys and
 * contexts are not safe to share). Random numbers come from a per-thread CTR_DRBG seeded on first use;
 * sl_tls_thread_cleanup frees it and the thread's client-context cache at thread exit.
 *
 * Protocol: TLS 1.2 only, ECDHE with AEAD cipher suites (AES-GCM, ChaCha20-Poly1305), no renegotiation;
 * see docs/tls.md for the list. */

#include <stddef.h>

/* Return codes (negative, errno-style; SL_TLS_WANT equals -EAGAIN). */
#define SL_TLS_WANT (-11)        /* nothing more to do until more ciphertext is fed (send pending output!) */
#define SL_TLS_E_HANDSHAKE (-71) /* protocol error, alert received, no shared cipher, ... (EPROTO) */
#define SL_TLS_E_VERIFY (-125)   /* peer certificate rejected: unknown CA, hostname mismatch, expired */
#define SL_TLS_E_CONFIG (-22)    /* bad certificate/key/CA file or option (EINVAL) */
#define SL_TLS_E_NOMEM (-12)     /* out of memory (ENOMEM) */
#define SL_TLS_E_CLOSED (-32)    /* session closed or failed earlier; no more I/O (EPIPE) */

typedef struct sl_tls_server_ctx sl_tls_server_ctx_t; /* certificates of one listener (chosen by SNI) */
typedef struct sl_tls_client_ctx sl_tls_client_ctx_t; /* trust anchors, client certificate, verify mode */
typedef struct sl_tls sl_tls_t;                       /* one session */

/** One certificate chain and its private key, PEM: either file paths or in-memory data (data wins). */
typedef struct sl_tls_cert_src {
    const char *cert_path, *key_path;
    const char *cert_pem, *key_pem; /* NUL-terminated PEM text, or NULL to read the paths */
} sl_tls_cert_src_t;

/** Options of a client context; NULL/0 fields take the defaults. */
typedef struct sl_tls_client_opts {
    const char *ca_file;    /* PEM bundle of trusted CAs; default /etc/ssl/certs/ca-certificates.crt */
    const char *cert_file;  /* client certificate chain (PEM), with key_file; optional */
    const char *key_file;   /* client private key (PEM) */
    int insecure_no_verify; /* 1: accept any peer certificate (tests, private networks); default 0 = verify */
} sl_tls_client_opts_t;

/** Builds a server context from n >= 1 certificates; certs[0] is the default, sent when the client's SNI
 *  matches no certificate's names (subjectAltName DNS entries, else CN; "*.example.com" wildcards match one
 *  label). The caller owns the result (sl_tls_server_ctx_free). NULL on error, with a reason in err. */
sl_tls_server_ctx_t *sl_tls_server_ctx_new(const sl_tls_cert_src_t *certs, int n, char *err, size_t errlen);
/** Frees a server context; sessions created from it must be freed first. */
void sl_tls_server_ctx_free(sl_tls_server_ctx_t *ctx);
/** Checks that a certificate and key file parse and belong together; 0 or SL_TLS_E_CONFIG with a reason in
 *  err (used by `sluice -t` and config reload). */
int sl_tls_check_files(const char *cert_path, const char *key_path, char *err, size_t errlen);

/** Builds a client context (opts may be NULL for the defaults). The caller owns it (sl_tls_client_ctx_free).
 *  NULL on error, with a reason in err. Loading the system CA bundle takes milliseconds: reuse contexts, or
 *  use sl_tls_client_ctx_get. */
sl_tls_client_ctx_t *sl_tls_client_ctx_new(const sl_tls_client_opts_t *opts, char *err, size_t errlen);
/** Frees a client context; sessions created from it must be freed first. */
void sl_tls_client_ctx_free(sl_tls_client_ctx_t *ctx);
/** Returns this thread's cached client context for these options (built on first use, kept until
 *  sl_tls_thread_cleanup; do not free it). NULL on error, with a reason in err. */
sl_tls_client_ctx_t *sl_tls_client_ctx_get(const sl_tls_client_opts_t *opts, char *err, size_t errlen);

/** Starts a server session (the handshake is driven by sl_tls_handshake). NULL on out of memory. */
sl_tls_t *sl_tls_new_server(sl_tls_server_ctx_t *ctx);
/** Starts a client session; sni_host is sent as SNI and, unless verification is off, must match the server's
 *  certificate DNS names or CN (mbedTLS 2.28 has no iPAddress matching, and sends an IP literal as SNI too).
 *  NULL on out of memory. */
sl_tls_t *sl_tls_new_client(sl_tls_client_ctx_t *ctx, const char *sni_host);
/** Frees a session (no close_notify: call sl_tls_close first to send one). NULL is ignored. */
void sl_tls_free(sl_tls_t *t);

/** Hands ciphertext received from the socket to the session (copied). 0 or SL_TLS_E_NOMEM. */
int sl_tls_feed(sl_tls_t *t, const char *data, size_t len);
/** Advances the handshake: 0 done (also when already done), SL_TLS_WANT (feed more input after sending the
 *  pending output), or a negative SL_TLS_E_* code (reason in sl_tls_error). */
int sl_tls_handshake(sl_tls_t *t);
/** Returns 1 once the handshake has completed. */
int sl_tls_established(const sl_tls_t *t);
/** Decrypts up to len bytes of application data into buf: >0 bytes, 0 when the peer sent close_notify,
 *  SL_TLS_WANT when no complete record is buffered, or a negative SL_TLS_E_* code. Call until SL_TLS_WANT:
 *  decrypted bytes may remain inside the session after one call. May produce output (alerts). */
int sl_tls_read(sl_tls_t *t, char *buf, size_t len);
/** Encrypts len bytes of application data (all of them, into the pending output): len, or a negative
 *  SL_TLS_E_* code. Only after the handshake. */
int sl_tls_write(sl_tls_t *t, const char *data, size_t len);
/** Queues a close_notify alert in the pending output (once; no-op before the handshake completes). */
void sl_tls_close(sl_tls_t *t);
/** Ciphertext waiting to be sent: sets *p and returns its length (0 when none). Valid until the next call on
 *  the session other than sl_tls_pending_out. */
size_t sl_tls_pending_out(sl_tls_t *t, const char **p);
/** Marks n bytes of the pending output as sent. */
void sl_tls_consume_out(sl_tls_t *t, size_t n);

/** Writes the reason of the last failure into buf (for logs), e.g. "certificate verification failed: the
 *  certificate's names do not match the expected host", "alert received: ...", mbedTLS's error text; returns
 *  buf. */
const char *sl_tls_error(const sl_tls_t *t, char *buf, size_t len);
/** The SNI host name the client asked for (server side), or NULL when it sent none. Owned by the session. */
const char *sl_tls_sni(const sl_tls_t *t);
/** The negotiated cipher suite name (after the handshake), e.g. "TLS-ECDHE-ECDSA-WITH-AES-128-GCM-SHA256". */
const char *sl_tls_cipher(const sl_tls_t *t);

/** Frees this thread's random generator and cached client contexts (at worker thread exit). */
void sl_tls_thread_cleanup(void);

#endif
