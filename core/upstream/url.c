/* URL parsing for the upstream client, and the proxy settings of the environment (HTTP_PROXY, HTTPS_PROXY,
 * NO_PROXY with curl's conventions: lower-case names first, a leading dot or none matches subdomains). */
#include "upstream/url.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int sl_url_parse(const char *s, size_t len, sl_url_t *u)
{
    memset(u, 0, sizeof(*u));
    size_t i;
    if (len >= 7 && strncasecmp(s, "http://", 7) == 0) {
        i = 7;
    } else if (len >= 8 && strncasecmp(s, "https://", 8) == 0) {
        i = 8;
        u->tls = 1;
    } else {
        return -EINVAL;
    }
    size_t auth_end = i;
    while (auth_end < len && s[auth_end] != '/' && s[auth_end] != '?' && s[auth_end] != '#')
        auth_end++;
    /* drop userinfo */
    for (size_t k = auth_end; k > i; k--)
        if (s[k - 1] == '@') {
            i = k;
            break;
        }
    const char *h = s + i;
    size_t hl;
    const char *portp = NULL;
    size_t portl = 0;
    if (i < auth_end && *h == '[') {
        const char *close = memchr(h, ']', auth_end - i);
        if (close == NULL)
            return -EINVAL;
        h++;
        hl = (size_t)(close - h);
        u->ipv6 = 1;
        if (close + 1 < s + auth_end) {
            if (close[1] != ':')
                return -EINVAL;
            portp = close + 2;
            portl = (size_t)(s + auth_end - portp);
        }
    } else {
        const char *colon = memchr(h, ':', auth_end - i);
        hl = colon ? (size_t)(colon - h) : auth_end - i;
        if (colon) {
            portp = colon + 1;
            portl = (size_t)(s + auth_end - portp);
        }
    }
    if (hl == 0)
        return -EINVAL;
    if (hl >= sizeof(u->host))
        return -ENAMETOOLONG;
    for (size_t k = 0; k < hl; k++) {
        char c = h[k];
        if (c <= ' ' || c == '/' || c == '\\' || c == '@' || (c == ':' && !u->ipv6) || c == 127)
            return -EINVAL;
    }
    memcpy(u->host, h, hl);
    u->port = u->tls ? 443 : 80;
    if (portp) {
        if (portl == 0 || portl > 5)
            return -EINVAL;
        int p = 0;
        for (size_t k = 0; k < portl; k++) {
            if (portp[k] < '0' || portp[k] > '9')
                return -EINVAL;
            p = p * 10 + (portp[k] - '0');
        }
        if (p < 1 || p > 65535)
            return -EINVAL;
        u->port = p;
    }
    size_t end = len;
    const char *hash = memchr(s + auth_end, '#', len - auth_end);
    if (hash)
        end = (size_t)(hash - s);
    for (size_t k = auth_end; k < end; k++)
        if ((unsigned char)s[k] <= ' ' || s[k] == 127)
            return -EINVAL; /* never let a space or CR/LF into the request line */
    if (auth_end < end && s[auth_end] == '/') {
        u->target = s + auth_end;
        u->target_len = end - auth_end;
    } else {
        /* "http://h?q" -> "/?q" is not expressible without a copy: only "/" or a path are accepted */
        if (auth_end < end)
            return -EINVAL;
        u->target = "/";
        u->target_len = 1;
    }
    return 0;
}

int sl_no_proxy_match(const char *np, const char *host, int port)
{
    if (np == NULL || *np == '\0')
        return 0;
    size_t hl = strlen(host);
    while (*np) {
        while (*np == ',' || *np == ' ')
            np++;
        const char *e = np;
        while (*e && *e != ',' && *e != ' ')
            e++;
        size_t n = (size_t)(e - np);
        if (n == 1 && *np == '*')
            return 1;
        if (n > 0) {
            const char *pat = np;
            size_t pl = n;
            int want_port = 0;
            const char *colon = memchr(pat, ':', pl);
            if (colon && memchr(colon + 1, ':', (size_t)(pat + pl - colon - 1)) == NULL && pat[0] != '[') {
                want_port = atoi(colon + 1);
                pl = (size_t)(colon - pat);
            }
            if (pl > 0 && pat[0] == '.') {
                pat++;
                pl--;
            }
            if (pl > 0 && (want_port == 0 || want_port == port)) {
                if (hl == pl && strncasecmp(host, pat, pl) == 0)
                    return 1;
                if (hl > pl && host[hl - pl - 1] == '.' && strncasecmp(host + hl - pl, pat, pl) == 0)
                    return 1;
            }
        }
        np = e;
    }
    return 0;
}

static const char *env2(const char *a, const char *b)
{
    const char *v = getenv(a);
    return v && *v ? v : getenv(b);
}

int sl_env_proxy(int tls, const char *host, int port, sl_url_t *proxy)
{
    const char *p = tls ? env2("https_proxy", "HTTPS_PROXY") : env2("http_proxy", "HTTP_PROXY");
    if (p == NULL || *p == '\0')
        return 0;
    if (sl_no_proxy_match(env2("no_proxy", "NO_PROXY"), host, port))
        return 0;
    if (strstr(p, "://") == NULL) {
        char tmp[600];
        size_t n = strlen(p);
        if (n + 8 > sizeof(tmp))
            return 0;
        memcpy(tmp, "http://", 7);
        memcpy(tmp + 7, p, n + 1);
        int rc = sl_url_parse(tmp, n + 7, proxy);
        proxy->target = "/";
        proxy->target_len = 1;
        return rc == 0;
    }
    if (sl_url_parse(p, strlen(p), proxy) != 0)
        return 0;
    if (proxy->tls)
        return 0; /* a TLS connection to the proxy itself is not supported */
    proxy->port = proxy->port ? proxy->port : 80;
    return 1;
}
