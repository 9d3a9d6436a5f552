#ifndef SL_TLS_LISTENER_H
#define SL_TLS_LISTENER_H

/* Certificates of the TLS listeners, shared between the main thread (which loads them at start and on SIGHUP)
 * and the workers (which each build their own server context from them, since mbedTLS keys must not be used
 * by two threads at once). A worker notices new certificates at its next accept on that listener; connections
 * already open keep the context they started with. */

#include <stddef.h>
#include <stdint.h>

#include "tls/tls.h"

/** Reads and checks the n certificate/key files of listener idx (main thread) and makes them the current
 *  ones; on error the previous ones stay and SL_TLS_E_CONFIG (or SL_TLS_E_NOMEM) comes back with a reason in
 *  err. */
int sl_tls_listener_set(int idx, const sl_tls_cert_src_t *files, int n, char *err, size_t errlen);
/** Worker side: the calling thread's context for listener idx. *cur (owned by the caller, NULL at first) is
 *  rebuilt when the certificates changed since *gen, the old one being released (sessions keep it alive).
 *  Returns *cur, or NULL when the listener has no certificates or the build failed (reason in err). */
sl_tls_server_ctx_t *sl_tls_listener_ctx(int idx, sl_tls_server_ctx_t **cur, uint64_t *gen, char *err,
                                         size_t errlen);
/** Frees every listener's stored certificates (at exit, after the workers stopped). */
void sl_tls_listener_close_all(void);

#endif
