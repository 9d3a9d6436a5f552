#ifndef SL_REQUEST_H
#define SL_REQUEST_H

#include <stdint.h>

#include "common/buf.h"
#include "http/hdrs.h"

struct sl_conn;
struct sl_proxy;
struct sl_worker;
struct lua_State;
struct sl_req;

/** Who runs the requests of a connection: the worker's Lua VM (sl_vm_handler, core/lua/vm.c) or, in C tests,
 *  a stub. Set per connection, kept by each of its requests (which may outlive it). */
typedef struct sl_handler {
    /** Runs a request whose head is complete (its body too, or still arriving: body_pending); the response
     * may come later. From libuv callbacks only. */
    void (*handle)(struct sl_worker *w, struct sl_req *r);
    /** The C work the request's handler waits for is done (a drained client, its body, upstream news): it
     * goes on. From libuv callbacks only. */
    void (*resume)(struct sl_req *r);
    /** As resume, from a zero-delay timer (the caller may be inside the handler). 0 or -1. */
    int (*resume_later)(struct sl_req *r);
} sl_handler_t;

/* The first block of sl_req_t is read directly by Lua through FFI (the ffi.cdef in lua/sluice/pdk/base.lua
 * declares the same fields in the same order; spec/ffi_layout_spec.lua compares the two through
 * core/lua/ffi_layout.c): keep them in step. */
typedef struct sl_req {
    const char *method;
    const char *path; /* without the query string, normalised (core/http/path.h) */
    const char *query;
    const char *host; /* Host header (or absolute-form authority) without port, or "" */
    const char *body;
    sl_header_t *headers;
    const char *client_ip;
    uint32_t method_len;
    uint32_t path_len;
    uint32_t query_len;
    uint32_t host_len;
    uint32_t body_len;
    uint32_t nheaders;
    uint32_t client_ip_len;
    uint16_t client_port;
    uint8_t http_minor;
    uint8_t keepalive;    /* client wants keep-alive; Lua may clear it */
    uint8_t resp_started; /* response head queued to the client */
    uint8_t resp_done;    /* whole response queued */
    uint8_t client_gone;  /* client connection closed or failed */
    uint8_t is_admin;     /* arrived on the Admin API (1) or metrics (2) listener: SL_LISTEN_* */
    uint8_t body_pending; /* handled before its body finished arriving (sl_req_read_body waits for it) */
    int32_t status;       /* response status sent (0 before) */
    uint64_t id;
    uint64_t bytes_sent;
    double start_time; /* seconds, wall clock */
    char route_id[64]; /* set by Lua for the access log */
    uint32_t route_id_len;
    uint32_t upstream_status;
    double upstream_time;   /* seconds spent waiting on the upstream */
    char upstream_addr[64]; /* host:port of the last upstream tried, for the access log */
    /* ---- end of the FFI-visible block ---- */

    int refs;   /* the connection and the Lua coroutine each hold one */
    int co_ref; /* registry ref of the coroutine while it runs, or LUA_NOREF */
    struct lua_State *co;
    struct sl_conn *conn;
    const sl_handler_t *handler; /* the connection's, for wake-ups after it is gone */
    struct sl_proxy *proxy;
    sl_buf_t head; /* url + header bytes */
    sl_buf_t bodybuf;
    sl_buf_t scratch; /* filled by calls that hand data to Lua (e.g. body chunks) */
    sl_hdrs_t hdrs;   /* headers as they are parsed (offsets); headers/nheaders once the head is complete */
    uint32_t url_off, url_len;
    uint8_t chunked_resp; /* response body sent with chunked framing */
    uint8_t waiting;      /* the coroutine is suspended waiting for C */
    uint8_t expect_continue;
    uint8_t abort;         /* the body is cut short: close the connection instead of ending the response */
    uint8_t drain_waiting; /* the coroutine yielded in sl_resp_wait_drain and nothing resumed it yet */
    uint8_t log_pending;   /* response written: the access log line waits for the coroutine's log phase */
    uint8_t body_wait;     /* the coroutine yielded in sl_req_read_body */
    uint8_t
        body_streamed;    /* body bytes went to the upstream as they arrived: the body cannot be read whole */
    uint8_t body_discard; /* the response is out before the body ended: the rest is read and dropped */
    uint8_t body_failed;  /* the body will never be complete (client error, gone, over max_body_size) */
    uint8_t client_abort; /* the client left before its response was written (logged as 499, as nginx does) */
    uint8_t fast;         /* served by a route that runs no Lua (core/upstream/fastpath.c): no coroutine */
    uint8_t version_len;  /* bytes of the request line's version seen so far (parser.c checks them) */
    const char *reject_why; /* why the parser refused the request (a static string), or NULL */
    int64_t body_expected;  /* Content-Length of the request, -1 when chunked (or no body: 0) */
    uint64_t body_received; /* body bytes received so far (streamed ones included) */
    uint64_t body_deadline; /* loop time (ms) by which the whole body must be in, or 0 */
    uint64_t trailer_len;   /* bytes of trailer fields after a chunked body (counted, then dropped) */
    sl_buf_t log_extra;     /* ,"name":json pairs plugins add to the access log line */
    char client_ip_buf[48];
} sl_req_t;

/** Allocates an empty request for conn; returns NULL on out of memory. The caller holds one reference. */
sl_req_t *sl_req_new(struct sl_conn *conn, uint64_t id);
/** Drops one reference; the request is freed with the last one. */
void sl_req_release(sl_req_t *req);
/** Adds "name": value (value already JSON) to the request's access log line; 0 or SL_ERR-style -1. */
int sl_req_log_field(sl_req_t *r, const char *name, size_t nlen, const char *json, size_t jlen);
/** Asks for the whole body of a request handled before its body arrived (FFI, from the request's coroutine):
 *  0 when r->body holds it, 1 when the caller must yield until it has arrived (or failed), -1 when it cannot
 * be had (already streamed to an upstream, or the request failed). */
int sl_req_read_body(sl_req_t *r);
/** Records the id of the route that serves r (FFI, for the access log; cut at 63 bytes): one call where Lua
 *  would store two fields, each a call into the VM when interpreted. */
void sl_req_set_route(sl_req_t *r, const char *id, size_t len);
/** Finds a request header by case-insensitive name; returns a pointer to it or NULL. */
const sl_header_t *sl_req_header(const sl_req_t *req, const char *name, uint32_t len);

#endif
