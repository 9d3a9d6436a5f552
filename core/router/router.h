/* Route matching: built once per config version, then matched read-only (and without allocating)
 * by every request of the worker that owns it. */
#ifndef SL_ROUTER_H
#define SL_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#define SL_ROUTER_NOT_FOUND (-404)
#define SL_ROUTER_METHOD_NOT_ALLOWED (-405)
#define SL_ROUTER_MAX_PARAMS 8

enum {
    SL_HTTP_GET = 1u << 0,
    SL_HTTP_POST = 1u << 1,
    SL_HTTP_PUT = 1u << 2,
    SL_HTTP_DELETE = 1u << 3,
    SL_HTTP_PATCH = 1u << 4,
    SL_HTTP_HEAD = 1u << 5,
    SL_HTTP_OPTIONS = 1u << 6,
    SL_HTTP_CONNECT = 1u << 7,
    SL_HTTP_TRACE = 1u << 8,
};

typedef struct sl_router sl_router_t;

/* Parameter i is named by the i-th `:name` / `*name` of the pattern added as `entry`; its value is
 * path[val_off, val_off + val_len) of the path given to sl_router_match. */
typedef struct {
    int id;    /* id given to sl_router_add */
    int entry; /* 0-based index of the sl_router_add call that matched (one per path) */
    int nparams;
    struct {
        uint16_t name_off, name_len; /* into the pattern of that entry */
        uint32_t val_off, val_len;   /* into the request path */
    } params[SL_ROUTER_MAX_PARAMS];
} sl_route_match_t;

/** Allocates an empty router; the caller owns it (sl_router_free). NULL when out of memory. */
sl_router_t *sl_router_new(void);

/** Adds one path of route `id` (strings are copied); methods 0 = any, host NULL/"" = any host.
 *  Returns 0, -EINVAL for a bad pattern or host, -E2BIG for too many params, -EBUSY after compile,
 *  -ENOMEM. */
int sl_router_add(sl_router_t *r, int id, const char *path, size_t path_len, unsigned methods,
                  const char *host, size_t host_len, int priority);

/** Builds the lookup structures; call once after the last add. Returns 0 or -ENOMEM. */
int sl_router_compile(sl_router_t *r);

/** Finds the best route for a request path (no query string, not decoded) and Host header (may be NULL,
 *  may carry a port). Returns 0 and fills m, SL_ROUTER_NOT_FOUND, SL_ROUTER_METHOD_NOT_ALLOWED when
 *  only the method failed, or -EINVAL before compile. Never allocates. */
int sl_router_match(const sl_router_t *r, unsigned method, const char *path, size_t path_len,
                    const char *host, size_t host_len, sl_route_match_t *m);

/** Frees the router and everything it owns; NULL is fine. */
void sl_router_free(sl_router_t *r);

/** Bit of an (upper-case) HTTP method name (SL_HTTP_GET ...); 0 when unknown. */
unsigned sl_http_method_bit(const char *m, size_t len);

#endif
