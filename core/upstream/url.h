#ifndef SL_URL_H
#define SL_URL_H

#include <stddef.h>

/** An absolute http(s) URL split in place-independent parts (copied into fixed buffers). */
typedef struct sl_url {
    int tls;            /* https */
    char host[256];     /* without brackets for IPv6 literals */
    int port;           /* explicit or the scheme's default */
    const char *target; /* path and query inside the parsed string ("/" when absent: see target_len) */
    size_t target_len;
    int ipv6; /* host was a [bracketed] literal */
} sl_url_t;

/** Parses "http[s]://[user@]host[:port][/path][?query]"; returns 0, or -EINVAL (bad URL) or -ENAMETOOLONG.
 *  u->target points into s (or to a static "/"), so s must outlive its use. */
int sl_url_parse(const char *s, size_t len, sl_url_t *u);

/** True when host (port) is excluded from proxying by a NO_PROXY list ("*", "a.com,.b.org,10.0.0.1,c:8080").
 */
int sl_no_proxy_match(const char *no_proxy, const char *host, int port);

/** The proxy URL from the environment for a scheme (HTTPS_PROXY/https_proxy or HTTP_PROXY/http_proxy),
 * honouring NO_PROXY/no_proxy for host; fills proxy and returns 1, or returns 0 for a direct connection. */
int sl_env_proxy(int tls, const char *host, int port, sl_url_t *proxy);

#endif
