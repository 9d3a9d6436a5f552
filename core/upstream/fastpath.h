/* Routes that run no Lua: a route without plugins (and no global plugins) whose stage is a plain upstream is
 * matched and proxied here, in C, without a coroutine: the request head is built and forwarded by C, the
 * response streams through C (PASS), the access log line is written by C. The table is built per worker by
 * the Lua runtime when it applies a config (sluice.worker), for the same router Lua matches with, so both
 * always agree on which route a request takes. */
#ifndef SL_FASTPATH_H
#define SL_FASTPATH_H

#include <stddef.h>
#include <stdint.h>

#include "http/request.h"
#include "router/router.h"
#include "server/worker.h"

/* pass_host modes (an upstream's pass_host) */
enum { SL_FAST_HOST_PASS = 0, SL_FAST_HOST_NODE = 1, SL_FAST_HOST_REWRITE = 2 };

/** What a route's upstream stage needs (mirrored in Lua's cdef, lua/sluice/worker.lua). Strings are copied.
 */
typedef struct sl_fast_route_opts {
    const char *route_id; /* for the access log (cut at 63 bytes) */
    const char *host;     /* pass_host rewrite: the Host to send */
    const char *ca_file;  /* HTTPS: CA bundle, or NULL for the system's */
    const char *sni;      /* HTTPS: the name to send and verify, or NULL */
    int32_t pass_host, tls, verify, pool_size;
    double connect_timeout, send_timeout, read_timeout, header_timeout, idle_timeout;
} sl_fast_route_opts_t;

/** Starts a new table for the calling worker with room for routes 1..nroutes (router ids); replaces any table
 *  being built. Returns 0 or -ENOMEM. */
int sl_fast_begin(int nroutes);
/** Makes route id (as given to sl_router_add) a C route with o. Returns 0, -EINVAL (no table, bad id) or
 *  -ENOMEM. */
int sl_fast_route(int id, const sl_fast_route_opts_t *o);
/** Adds a node (weight >= 0) to route id. Returns 0, -EINVAL or -ENOMEM. */
int sl_fast_node(int id, const char *host, size_t hostlen, int port, int weight);
/** Adds a strip_prefix prefix (the "/api" of a path "/api/ *") to route id, in path order. 0, -EINVAL,
 * -ENOMEM. */
int sl_fast_prefix(int id, const char *prefix, size_t len);
/** Puts the table being built in service for router (the one Lua matches with) and frees the one before. A
 *  NULL router leaves no C routes. */
void sl_fast_commit(const sl_router_t *router);

/** Serves r if it matches a C route: 1 (proxied or answered, no Lua), or 0 (Lua handles it). */
int sl_fast_serve(sl_worker_t *w, sl_req_t *r);
/** The proxy of a request served here has news (it ended): answers an upstream failure before the head. */
void sl__fast_resume(sl_req_t *r);
/** Frees the calling worker's tables (worker stop). */
void sl_fast_close(void);

#endif
