/* Request-target checks and path normalisation (RFC 3986 sections 2, 3.2.2, 5.2.4; RFC 9112 3.2).
 *
 * The path is normalised once, before routing, and the result is the only path anything sees (routes,
 * plugins, the upstream, the access log): an upstream that resolves "/pub/../private" itself would otherwise
 * serve a route other than the one the gateway matched and authorised. */
#include "http/path.h"

#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <strings.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* RFC 3986 2.3: the characters whose escapes mean the same as the characters themselves */
static int unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int sub_delim(unsigned char c)
{
    return c && strchr("!$&'()*+,;=", c) != NULL;
}

int sl_path_normalize(const char *in, size_t len, char *out, size_t *out_len, unsigned flags)
{
    static const char hex[] = "0123456789ABCDEF";
    if (len == 0 || in[0] != '/')
        return -EINVAL;
    /* Writing never overtakes reading (o <= i: every input byte gives at most one output byte, an escape of
     * three at most three), so out may be in. out[0, o) ends with '/' whenever a segment starts. */
    size_t i = 1, o = 1;
    out[0] = '/';
    for (;;) {
        size_t seg = o;
        while (i < len && in[i] != '/') {
            unsigned char ch = (unsigned char)in[i];
            if (ch == '%') {
                int hi, lo;
                if (len - i < 3 || (hi = hexval((unsigned char)in[i + 1])) < 0 ||
                    (lo = hexval((unsigned char)in[i + 2])) < 0)
                    return -EINVAL;
                unsigned char v = (unsigned char)(hi << 4 | lo);
                i += 3;
                if (v == 0)
                    return -EILSEQ;
                if (v == '/' && !(flags & SL_PATH_KEEP_ENCODED_SLASH))
                    return -EPERM;
                if (unreserved(v)) {
                    out[o++] = (char)v;
                } else {
                    out[o++] = '%';
                    out[o++] = hex[v >> 4];
                    out[o++] = hex[v & 15];
                }
            } else if (ch == 0) {
                return -EILSEQ;
            } else {
                out[o++] = (char)ch;
                i++;
            }
        }
        size_t n = o - seg;
        if (n == 0 || (n == 1 && out[seg] == '.')) {
            o = seg; /* an empty segment (merged slashes) or "." */
        } else if (n == 2 && out[seg] == '.' && out[seg + 1] == '.') {
            if (seg == 1)
                return -ERANGE;
            o = seg - 1; /* back over the '/' and the segment before it */
            while (out[o - 1] != '/')
                o--;
        } else if (i < len) {
            out[o++] = '/';
        }
        if (i >= len)
            break;
        i++;
    }
    *out_len = o;
    return 0;
}

int sl_authority_check(const char *s, size_t len)
{
    size_t i = 0, host;
    if (len == 0 || len > 65535)
        return -EINVAL;
    if (s[0] == '[') {
        const char *end = memchr(s, ']', len);
        char lit[INET6_ADDRSTRLEN];
        struct in6_addr a;
        size_t n = end ? (size_t)(end - s) - 1 : 0;
        if (n == 0 || n >= sizeof(lit))
            return -EINVAL;
        memcpy(lit, s + 1, n);
        lit[n] = '\0';
        if (inet_pton(AF_INET6, lit, &a) != 1) /* no IPvFuture, no zone id: no HTTP client sends those */
            return -EINVAL;
        i = host = n + 2;
    } else {
        /* reg-name (IPv4 is a subset) without pct-encoded: a host is routed by its bytes (and is compared as
         * bytes upstream), so an escape in it could only make a host match one way here and another there.
         * Nor an empty label (".a", "a..b": nginx refuses those too), which some upstreams put in file paths.
         */
        while (i < len && s[i] != ':') {
            unsigned char ch = (unsigned char)s[i];
            if ((!unreserved(ch) && !sub_delim(ch)) || (ch == '.' && (i == 0 || s[i - 1] == '.')))
                return -EINVAL;
            i++;
        }
        host = i;
        if (host == 0)
            return -EINVAL;
    }
    if (i < len) {
        if (s[i] != ':' || len - i - 1 > 5)
            return -EINVAL;
        for (i++; i < len; i++)
            if (s[i] < '0' || s[i] > '9')
                return -EINVAL;
    }
    return (int)host;
}

int sl_target_absolute(const char *t, size_t len, size_t *auth_off, size_t *auth_len, size_t *rest_off)
{
    size_t s;
    if (len >= 7 && strncasecmp(t, "http://", 7) == 0)
        s = 7;
    else if (len >= 8 && strncasecmp(t, "https://", 8) == 0)
        s = 8;
    else
        return -EINVAL;
    size_t e = s;
    while (e < len && t[e] != '/' && t[e] != '?' && t[e] != '#')
        e++;
    /* userinfo is an error in http(s) URIs (RFC 9110 4.2.4); sl_authority_check refuses the '@' */
    if (sl_authority_check(t + s, e - s) < 0)
        return -EINVAL;
    *auth_off = s;
    *auth_len = e - s;
    *rest_off = e;
    return 0;
}
