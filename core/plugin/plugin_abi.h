/* Sluice C plugin ABI, version 1. The only header a C plugin includes.
 *
 * A plugin is a shared object (built with -shared -fPIC, no libraries needed) exporting one symbol:
 *
 *     const sl_plugin_t sluice_plugin = { .abi_version = SL_PLUGIN_ABI_VERSION, .name = "my-plugin", ... };
 *
 * It is found like a Lua plugin, as <plugin_path>/<name>.so, and configured the same way (per route or in
 * global_plugins). Sluice validates each config against schema_json, then check(), when the config is
 * applied; phase callbacks receive the validated config (defaults filled in) as JSON and can trust it.
 *
 * Rules:
 * - The request handle is opaque and valid only during the callback; so are the strings the getters return
 *   (pointer + length, not NUL-terminated). Copy what you keep.
 * - Callbacks run on worker threads, several at once: no unsynchronized global mutable state. They must not
 *   block (no sleeping, no blocking I/O): a worker serves all its connections on one thread.
 * - Setters copy their arguments; the changes are applied after the callback returns.
 * - Stability: sl_plugin_t only grows into its reserved slots; accessors are only added, never changed.
 *   A plugin built for another abi_version is refused at load with a message naming both versions. */
#ifndef SL_PLUGIN_ABI_H
#define SL_PLUGIN_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SL_PLUGIN_ABI_VERSION 1

/* Return codes of the accessors (negative errno values, spelled out). */
#define SL_PLUGIN_OK 0
#define SL_PLUGIN_NOT_FOUND (-2) /* -ENOENT: no such header */
#define SL_PLUGIN_NOMEM (-12)    /* -ENOMEM: out of memory, or over the 16 MiB a callback may record */
#define SL_PLUGIN_INVALID (-22)  /* -EINVAL: NULL handle, bad header name/value (CR, LF, NUL, ':' in a name) \
                                  */

/* Log levels for sl_plugin_log. */
#define SL_PLUGIN_LOG_DEBUG 0
#define SL_PLUGIN_LOG_INFO 1
#define SL_PLUGIN_LOG_WARN 2
#define SL_PLUGIN_LOG_ERROR 3

/** The request as seen by a plugin; opaque, valid only during the callback it was passed to. */
typedef struct sl_plugin_req sl_plugin_req_t;

/** A phase callback. conf_json/conf_len: the route's config for this plugin as JSON (not NUL-terminated; the
 *  same bytes for every request of a config version). Returns 0 to let the request continue, or an HTTP
 *  status 100..599 to end it now with the body set by sl_plugin_set_body (empty if none). Only rewrite and
 *  access can end a request; the return value of header_filter and log is ignored. Any other value is a
 *  plugin failure: the request ends with 500 and the error is logged. */
typedef int (*sl_plugin_phase_fn)(sl_plugin_req_t *req, const char *conf_json, size_t conf_len);

/** The descriptor exported as `sluice_plugin`. Layout is the ABI: fields are never moved or removed. */
typedef struct sl_plugin {
    uint32_t abi_version; /* SL_PLUGIN_ABI_VERSION the plugin was built against; must stay first */
    const char *name;     /* must equal the file name without ".so" ([A-Za-z0-9_-]+) */
    const char *version;  /* free-form, e.g. "1.0" (may be NULL) */
    int32_t priority;     /* higher runs first, as for Lua plugins */
    const char
        *schema_json; /* config schema as JSON in Sluice's schema subset (docs/c-plugins.md), or NULL */
    /** Optional extra validation after the schema (defaults applied): returns 0 when valid, else non-zero
     *  with a NUL-terminated message written into errbuf (at most errlen bytes, errlen >= 256). */
    int (*check)(const char *conf_json, size_t conf_len, char *errbuf, size_t errlen);
    sl_plugin_phase_fn rewrite;       /* before routing decisions are final; may change headers or end */
    sl_plugin_phase_fn access;        /* auth, limits; may change headers or end */
    sl_plugin_phase_fn header_filter; /* upstream response head received; may set response headers */
    sl_plugin_phase_fn log;           /* after the response was sent; read-only */
    void *reserved[8];                /* zero: room for later phases without changing the size */
} sl_plugin_t;

/* ---- accessors, exported by the sluice binary ---- */

/** Request method ("GET"...): *out points to it, *len is its length. Returns 0 or SL_PLUGIN_INVALID. */
int sl_plugin_get_method(sl_plugin_req_t *req, const char **out, size_t *len);

/** Request path without the query (as rewritten by earlier plugins, not decoded). Returns 0 or INVALID. */
int sl_plugin_get_path(sl_plugin_req_t *req, const char **out, size_t *len);

/** First value of a request header, name case-insensitive; reflects headers set or removed by plugins that
 *  ran before this callback. Returns 0 (found), SL_PLUGIN_NOT_FOUND (*out NULL, *len 0) or INVALID. */
int sl_plugin_get_header(sl_plugin_req_t *req, const char *name, size_t name_len, const char **out,
                         size_t *len);

/** Response status: the upstream's in header_filter, the one sent in log, 0 before. Returns it (or -22). */
int sl_plugin_get_status(sl_plugin_req_t *req);

/** Sets a header on the request sent upstream (replacing any value); value NULL removes the header.
 *  Returns 0, SL_PLUGIN_INVALID or SL_PLUGIN_NOMEM. */
int sl_plugin_set_header(sl_plugin_req_t *req, const char *name, size_t name_len, const char *value,
                         size_t value_len);

/** Sets a header on the response to the client (any phase before the head is sent: rewrite, access,
 *  header_filter); value NULL removes it. Framing headers (Content-Length...) are ignored by the gateway.
 *  Returns 0, SL_PLUGIN_INVALID or SL_PLUGIN_NOMEM. */
int sl_plugin_set_resp_header(sl_plugin_req_t *req, const char *name, size_t name_len, const char *value,
                              size_t value_len);

/** Sets the body sent when the callback returns a status; content_type NULL-terminated or NULL (none).
 *  A second call replaces the first. Returns 0, SL_PLUGIN_INVALID or SL_PLUGIN_NOMEM. */
int sl_plugin_set_body(sl_plugin_req_t *req, const char *body, size_t len, const char *content_type);

/** Writes one line to the error log as "[plugin-name] msg (request ID)". Safe in every callback. */
void sl_plugin_log(sl_plugin_req_t *req, int level, const char *msg, size_t len);

#ifdef __cplusplus
}
#endif

#endif
