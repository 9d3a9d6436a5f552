#ifndef SL_PROXY_H
#define SL_PROXY_H

#include <stddef.h>
#include <stdint.h>

#include "http/request.h"
#include "upstream/pool.h"

/* Back-pressure: an upstream stops being read while more than HIGH bytes wait for a slow client. */
#define SL_PROXY_HIGH_WATER (1024 * 1024)
#define SL_PROXY_LOW_WATER (256 * 1024)

/* How the response body travels: PASS streams it to the client inside C; FILTER hands each chunk to Lua. */
enum { SL_PROXY_PASS = 0, SL_PROXY_FILTER = 1 };
/* sl_proxy_start flags. */
enum {
    SL_PROXY_TLS = 1,
    SL_PROXY_NO_VERIFY = 2,
    SL_PROXY_FORWARD = 4,
    SL_PROXY_LENGTH = 8,
    SL_PROXY_STREAM = 16,
    SL_PROXY_ENV_PROXY = 32
};

/** What Lua reads of an upstream response (the first member of sl_proxy_t; declared again in Lua FFI). */
typedef struct sl_upresp {
    sl_header_t *headers;
    const char *chunk; /* FILTER mode: body bytes not yet taken by Lua */
    uint32_t nheaders;
    uint32_t chunk_len;
    int32_t status;
    int32_t error;          /* SL_UPERR_* */
    int64_t content_length; /* -1 when unknown */
    uint8_t headers_done;
    uint8_t done;   /* whole response read (or failed: see error) */
    uint8_t reused; /* went over a kept-alive connection */
} sl_upresp_t;

/** One proxied exchange, owned by its request (freed with it); its sl_upresp_t comes first (Lua casts the
 *  pointer). The rest is private to proxy.c. */
typedef struct sl_proxy sl_proxy_t;

/** How to proxy one request (sl_proxy_start; declared again in Lua FFI, lua/sluice/pdk/base.lua). The strings
 *  need only live through the call. */
typedef struct sl_proxy_opts {
    const char *host;    /* where to connect; also the SNI unless sni is given */
    const char *ca_file; /* HTTPS: CA bundle to verify against; NULL: the system's */
    const char *sni;     /* HTTPS: the name to send and check; NULL: host */
    const char *head;    /* request line and header lines (see sl_proxy_start) */
    const char *skip;    /* SL_PROXY_FORWARD: client headers not to forward, lower-case, "\n"-separated */
    const char *body;
    size_t hostlen, headlen, skiplen, bodylen;
    uint32_t
        nfields; /* header lines in head (Host and Content-Length included): sl_http_check_request_head */
    int32_t port, flags, mode, pool_size;
    double connect_timeout, send_timeout, read_timeout, header_timeout, idle_timeout;
} sl_proxy_opts_t;

/** Starts proxying req to o->host:port (SL_PROXY_FORWARD: head is the request line and the headers Lua sets;
 *  the client's own headers follow, filtered (sl__forward_headers, skipping o->skip), with SL_PROXY_LENGTH a
 *  Content-Length; SL_PROXY_STREAM: the client's body, still arriving (req->body_pending), is sent as it
 *  comes instead of body, framed as the client framed it; SL_PROXY_ENV_PROXY: through the HTTP(S)_PROXY of
 *  the environment unless NO_PROXY names host (CONNECT for HTTPS, absolute-form request line for HTTP);
 *  SL_PROXY_TLS for HTTPS, verified against ca_file or the system bundle unless SL_PROXY_NO_VERIFY), sending
 *  head (request line + headers, ending in a blank line) and body. The host and head are checked first
 *  (core/http/field.h: token method and names, no CR, LF or NUL in the target or a value, nfields lines): a
 *  bad one is logged with the request's id and never sent. The response head must be complete within
 *  header_timeout of the request's end being sent (or of its first byte, if earlier), whatever trickles in
 *  meanwhile; read_timeout bounds each wait for the upstream while it is read (not while the client or Lua
 *  holds the reading back). The request's coroutine must yield afterwards; it is resumed when the proxy has
 *  news (see sl_upresp_t). A request may start another call once the response to the client has not started:
 *  the previous call is given up (freed; its connection pooled when it ended cleanly). Returns the proxy
 *  (owned by req) or NULL on out of memory, a bad head or host (logged), or when the client response already
 *  started. Called from Lua: never calls back into Lua. */
sl_proxy_t *sl_proxy_start(sl_req_t *req, const sl_proxy_opts_t *o);
/** FILTER mode: marks the current chunk taken and asks for the next event (resumes the coroutine later). */
int sl_proxy_read(sl_proxy_t *p);
/** Changes the read timeout (seconds > 0) from the next read on: a stream's idle bound after its first token.
 */
void sl_proxy_set_read_timeout(sl_proxy_t *p, double seconds);
/** FILTER mode after the headers: stream the rest of the body to the client in C (after sl_resp_start). */
int sl_proxy_pass(sl_proxy_t *p);
/** Whether the proxy sends the client's body upstream as it arrives (SL_PROXY_STREAM). */
int sl__proxy_streams_body(const sl_proxy_t *p);
/** Called by the client connection when the client went away: cancels the upstream side. */
void sl__proxy_client_gone(sl_proxy_t *p);
/** Called by the client connection when more of a streamed request body arrived (or all of it). */
void sl__proxy_body_more(sl_proxy_t *p);
/** Called by the client connection when it drained below the low-water mark. */
void sl__proxy_unblock(sl_proxy_t *p);
/** Frees the proxy (from sl_req_release); a kept-alive connection goes back to the pool. */
void sl__proxy_free(sl_proxy_t *p);

#endif
