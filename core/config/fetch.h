#ifndef SL_FETCH_H
#define SL_FETCH_H

/* One blocking HTTP/1.1 request, for code that runs without an event loop: the main thread before the workers
 * start (the config center's first load, lua/sluice/cluster.lua) and command-line tools (`sluice etcd
 * import`). Workers never call it: they have sluice.http. */

#include <stddef.h>

/** One request (declared again in Lua FFI, lua/sluice/config/etcd.lua). Strings need only live through the
 *  call. */
typedef struct sl_fetch_opts {
    const char *method, *url;
    const char *headers; /* "Name: value\r\n" lines (no Host, no Content-Length), or NULL */
    const char *body;
    size_t blen;
    const char *ca_file;   /* HTTPS: CA bundle; NULL: the system's */
    const char *cert_file; /* HTTPS: client certificate (PEM), with key_file; NULL: none */
    const char *key_file;
    int verify;      /* HTTPS: 1 check the certificate and the host name */
    double timeout;  /* the whole exchange (resolve, connect, TLS, request, response), seconds */
    size_t max_body; /* 0: 64 MiB */
} sl_fetch_opts_t;

/** What came back: status and body (malloc'd, freed by sl_fetch_free), or why nothing did. */
typedef struct sl_fetch_res {
    int status;
    char *body;
    size_t body_len;
    char err[256];
} sl_fetch_res_t;

/** Runs the request to completion or failure, within o->timeout. Returns 0 with res->status and res->body
 * set, or a negative code with the reason in res->err: -EINVAL (bad URL or options), -ETIMEDOUT,
 * -ECONNREFUSED and other connect errors, -EPROTO (TLS or not HTTP), -EMSGSIZE (body over max_body), -ENOMEM.
 */
int sl_fetch(const sl_fetch_opts_t *o, sl_fetch_res_t *res);
/** Frees what sl_fetch left in res (the body). */
void sl_fetch_free(sl_fetch_res_t *res);

#endif
