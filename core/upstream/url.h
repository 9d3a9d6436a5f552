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

/** Writes "host[:port]" as a Host header or an absolute URL names the target: IPv6 literals (host holds a
 * ':') in brackets, the port left out when it is the scheme's default. Returns dst (cut short to fit cap). */
char *sl_url_authority(char *dst, size_t cap, const char *host, size_t hostlen, int port, int tls);

/** True when host (port) is excluded from proxying by a NO_PROXY list ("*", "a.com,.b.org,*.c.net,c:8080,
 *  10.0.0.1,10.0.0.0/8,[::1]:8080,fd00::/8"); host is a name or an IP literal without brackets. */
int sl_no_proxy_match(const char *no_proxy, const char *host, int port);

/** The proxy from the environment for a request to host:port (tls: HTTPS_PROXY/https_proxy, else
 *  HTTP_PROXY/http_proxy; lower-case first), honouring NO_PROXY/no_proxy. Returns 1 with proxy filled (an
 *  HTTP proxy: plain requests go to it in absolute form, TLS ones through CONNECT), 0 for a direct
 *  connection, or -EINVAL when the variable is set but unusable (not an http:// URL or "host:port"): the
 *  caller fails the request rather than going around the proxy. */
int sl_env_proxy(int tls, const char *host, int port, sl_url_t *proxy);
/** Makes the calling thread's next sl_env_proxy read the environment again (it reads it once: for tests that
 *  change it). */
void sl_env_proxy_reread(void);

#endif
