/* URL parsing for the upstream client, and the proxy settings of the environment (HTTP_PROXY, HTTPS_PROXY,
 * NO_PROXY with curl's conventions: lower-case names first, a leading dot or none matches subdomains, IPs
 * and CIDR blocks match literal IP hosts). */
#include "upstream/url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
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

/* Whether the literal IP host lies in "addr/bits" (IPv4 or IPv6, as curl's NO_PROXY). */
static int cidr_match(const char *pat, size_t pl, const char *host)
{
    const char *slash = memchr(pat, '/', pl);
    char net_s[INET6_ADDRSTRLEN];
    size_t nl = (size_t)(slash - pat);
    if (nl == 0 || nl >= sizeof(net_s) || slash + 1 == pat + pl || pat + pl - slash > 4)
        return 0;
    memcpy(net_s, pat, nl);
    net_s[nl] = '\0';
    int bits = 0;
    for (const char *d = slash + 1; d < pat + pl; d++) {
        if (*d < '0' || *d > '9')
            return 0;
        bits = bits * 10 + (*d - '0');
    }
    int fam = memchr(net_s, ':', nl) ? AF_INET6 : AF_INET;
    unsigned char net[16], ip[16];
    if (inet_pton(fam, net_s, net) != 1 || inet_pton(fam, host, ip) != 1 ||
        bits > (fam == AF_INET6 ? 128 : 32))
        return 0;
    int full = bits / 8, rest = bits % 8;
    if (memcmp(net, ip, (size_t)full) != 0)
        return 0;
    unsigned char mask = (unsigned char)(0xff00 >> rest);
    return rest == 0 || (net[full] & mask) == (ip[full] & mask);
}

/* One NO_PROXY entry: "*", "name", ".name", "*.name", "name:port", "1.2.3.4", "10.0.0.0/8", "::1",
 * "[::1]:8080", "fd00::/8". Names match themselves and their subdomains; IPs only themselves or their net. */
static int entry_match(const char *pat, size_t pl, const char *host, int host_is_ip, int port)
{
    if (pl == 1 && *pat == '*')
        return 1;
    int want_port = 0;
    const char *colon = memchr(pat, ':', pl);
    if (pat[0] == '[') {
        const char *close = memchr(pat, ']', pl);
        if (close == NULL)
            return 0;
        if (close + 1 < pat + pl) {
            if (close[1] != ':')
                return 0;
            want_port = atoi(close + 2);
        }
        pat++;
        pl = (size_t)(close - pat);
    } else if (colon && memchr(colon + 1, ':', (size_t)(pat + pl - colon - 1)) == NULL) {
        want_port = atoi(colon + 1); /* one colon: host:port (more: an IPv6 literal) */
        pl = (size_t)(colon - pat);
    }
    if (want_port != 0 && want_port != port)
        return 0;
    if (pl >= 2 && pat[0] == '*' && pat[1] == '.') {
        pat++;
        pl--;
    }
    if (pl > 0 && pat[0] == '.') {
        pat++;
        pl--;
    }
    if (pl == 0)
        return 0;
    if (memchr(pat, '/', pl))
        return host_is_ip && cidr_match(pat, pl, host);
    size_t hl = strlen(host);
    if (hl == pl && strncasecmp(host, pat, pl) == 0)
        return 1;
    return !host_is_ip && hl > pl && host[hl - pl - 1] == '.' && strncasecmp(host + hl - pl, pat, pl) == 0;
}

int sl_no_proxy_match(const char *np, const char *host, int port)
{
    if (np == NULL || *np == '\0')
        return 0;
    unsigned char tmp[16];
    int host_is_ip = inet_pton(AF_INET, host, tmp) == 1 || inet_pton(AF_INET6, host, tmp) == 1;
    while (*np) {
        while (*np == ',' || *np == ' ')
            np++;
        const char *e = np;
        while (*e && *e != ',' && *e != ' ')
            e++;
        if (e > np && entry_match(np, (size_t)(e - np), host, host_is_ip, port))
            return 1;
        np = e;
    }
    return 0;
}

static const char *env2(const char *a, const char *b)
{
    const char *v = getenv(a);
    return v && *v ? v : getenv(b);
}

/* The proxy variables, read once per thread: the environment does not change after start, and getenv walks
 * all of it (two calls on every upstream request). */
static __thread struct {
    int read;
    const char *http, *https, *no;
} env;

void sl_env_proxy_reread(void)
{
    env.read = 0;
}

int sl_env_proxy(int tls, const char *host, int port, sl_url_t *proxy)
{
    if (!env.read) {
        env.http = env2("http_proxy", "HTTP_PROXY");
        env.https = env2("https_proxy", "HTTPS_PROXY");
        env.no = env2("no_proxy", "NO_PROXY");
        env.read = 1;
    }
    const char *p = tls ? env.https : env.http;
    if (p == NULL || *p == '\0')
        return 0;
    if (sl_no_proxy_match(env.no, host, port))
        return 0;
    char tmp[600];
    size_t n = strlen(p);
    if (strstr(p, "://") == NULL) { /* "host:port": an HTTP proxy */
        if (n + 8 > sizeof(tmp))
            return -EINVAL;
        memcpy(tmp, "http://", 7);
        memcpy(tmp + 7, p, n + 1);
        p = tmp;
        n += 7;
    }
    /* only plain http:// proxies: TLS to the proxy itself, SOCKS and the rest would need more than this */
    if (sl_url_parse(p, n, proxy) != 0 || proxy->tls)
        return -EINVAL;
    proxy->target = "/";
    proxy->target_len = 1;
    return 1;
}

char *sl_url_authority(char *dst, size_t cap, const char *host, size_t hostlen, int port, int tls)
{
    int v6 = memchr(host, ':', hostlen) != NULL;
    int dflt = port == (tls ? 443 : 80);
    snprintf(dst, cap, "%s%.*s%s%s%.0d", v6 ? "[" : "", (int)hostlen, host, v6 ? "]" : "", dflt ? "" : ":",
             dflt ? 0 : port);
    return dst;
}
