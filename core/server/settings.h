#ifndef SL_SETTINGS_H
#define SL_SETTINGS_H

#include <limits.h>
#include <stddef.h>

#define SL_MAX_LISTEN 16

/* The Admin API listener's own connection limit (not counted in limits.max_connections, so that traffic at
 * the limit does not shut operators out). */
#define SL_ADMIN_MAX_CONNECTIONS 64

/** sl_listen_addr_t.is_admin of the Admin API listener (node.admin.listen). */
#define SL_LISTEN_ADMIN 1
/** sl_listen_addr_t.is_admin of the metrics listener (node.metrics.listen): GET /metrics only, no key. */
#define SL_LISTEN_METRICS 2

/** One listening address from node.listen (or node.admin.listen, node.metrics.listen). */
typedef struct sl_listen_addr {
    char host[64];
    int port;
    int is_admin; /* 0, SL_LISTEN_ADMIN or SL_LISTEN_METRICS: both served by worker 0, limited apart */
    int tls;      /* certificates in core/tls/listener.c under this entry's index */
} sl_listen_addr_t;

/** Node settings read once at start (a change to node.* other than log_level needs a restart). */
typedef struct sl_settings {
    int workers;
    sl_listen_addr_t listen[SL_MAX_LISTEN];
    int nlisten;
    size_t max_header_size;
    size_t max_body_size;
    size_t body_buffer_size; /* a body over this is not waited for: the request is handled while it arrives */
    size_t max_url_length;
    double header_timeout;
    double body_timeout;
    double body_deadline; /* a request body must be complete this long after its head (0: no limit) */
    double keepalive_timeout;
    double send_timeout;
    int max_connections;
    int keepalive_requests;
    double drain_timeout;
    int allow_encoded_slashes; /* %2F in a path is kept encoded instead of refused (core/http/path.h) */
    int access_log_fields;     /* bit set of SL_ALOG_* */
    char access_log_path[PATH_MAX];
    char home[PATH_MAX];
    char config_path[PATH_MAX];
} sl_settings_t;

extern sl_settings_t sl_settings;

/** Fills sl_settings with the built-in defaults. */
void sl_settings_defaults(void);

#endif
