#ifndef SL_CLIENT_H
#define SL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "http/request.h"
#include "server/worker.h"

/* sl_http_start flags. */
enum {
    SL_HTTP_STREAM = 1,    /* hand the body over as it arrives (sl_http_take), with bounded buffering */
    SL_HTTP_NO_VERIFY = 2, /* HTTPS: do not verify the certificate */
    SL_HTTP_NO_PROXY = 4,  /* ignore HTTP_PROXY / HTTPS_PROXY */
    SL_HTTP_HAS_HOST = 8,  /* the caller's headers carry Host */
};

/* Stream mode: reading stops while this many body bytes wait for Lua. */
#define SL_HTTP_STREAM_HIGH (256 * 1024)

/** What Lua reads of one client exchange (the first member of sl_http_t; declared again in Lua FFI). */
typedef struct sl_httpres {
    sl_header_t *headers;
    const char *body; /* body bytes received and not yet taken (all of it when not streaming) */
    uint32_t nheaders;
    uint32_t body_len;
    int32_t status;
    int32_t error;   /* SL_UPERR_* (core/upstream/pool.h) */
    int32_t wake_id; /* Lua: id to wake a timer coroutine with (request coroutines: 0) */
    uint8_t headers_done;
    uint8_t done;    /* complete, or failed (error set) */
    uint8_t reused;  /* went over a kept-alive connection */
    uint8_t waiting; /* Lua: set before yielding; C wakes the coroutine once, then clears it */
    char errmsg[200];
} sl_httpres_t;

/** Checks that url is an absolute http(s) URL the client can use; 0 or -EINVAL. */
int sl_http_check_url(const char *url, size_t len);
/** One request for sl_http_start (declared again in Lua FFI, lua/sluice/pdk/http.lua). The strings need only
 *  live through the call. */
typedef struct sl_http_opts {
    const char *method, *url;
    const char *headers; /* nfields "Name: value\r\n" lines (no Content-Length) */
    const char *body;
    const char *ca_file; /* HTTPS: CA bundle; NULL: the system's */
    size_t mlen, ulen, hlen, blen;
    uint32_t nfields;
    int32_t flags, pool_size;
    double connect_timeout, send_timeout, read_timeout;
    double deadline; /* the whole exchange, seconds */
    double max_body; /* bytes buffered when not streaming; 0: 16 MiB */
    double idle_timeout;
    const char *cert_file, *key_file; /* HTTPS: client certificate and key (PEM), or NULL */
} sl_http_opts_t;

/** Starts an HTTP/1.1 request on the calling worker (from Lua; it continues from a zero-delay timer, never
 *  calling Lua back from inside this call). The header lines are checked first (core/http/field.h): a bad one
 *  is never sent, the exchange comes back done already with SL_UPERR_BAD_REQUEST and errmsg naming the
 *  header. The coroutine is woken through sl_vm_wake(req or wake_id) when res.done is set or, streaming, when
 *  body bytes wait. Returns the exchange (the caller frees it with sl_http_close) or NULL (out of memory, bad
 *  URL, stopping). */
sl_httpres_t *sl_http_start(sl_req_t *req, const sl_http_opts_t *o);
/** Stream mode: marks the buffered body bytes taken and lets more arrive. */
int sl_http_take(sl_httpres_t *res);
/** Ends an exchange (cancelling it if it runs); its memory is freed later. */
void sl_http_close(sl_httpres_t *res);
/** Fails every running exchange of the worker (at stop), waking their coroutines. */
void sl__client_close_all(sl_worker_t *w);

#endif
