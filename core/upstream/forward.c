/* The client's request headers, filtered for the upstream hop. Done in C: for a plain proxied request this is
 * most of the per-request work, and Lua would have to turn every header into strings first. */
#include "upstream/forward.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

static int is_named(const char *name, size_t len, const char *list, size_t listlen)
{
    size_t i = 0;
    while (i < listlen) {
        size_t start = i;
        while (i < listlen && list[i] != '\n')
            i++;
        if (i - start == len && strncasecmp(list + start, name, len) == 0)
            return 1;
        i++;
    }
    return 0;
}

int sl__http_token_listed(const char *v, size_t vlen, const char *name, size_t nlen)
{
    size_t i = 0;
    while (i < vlen) {
        while (i < vlen && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < vlen && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (i - start == nlen && nlen > 0 && strncasecmp(v + start, name, nlen) == 0)
            return 1;
    }
    return 0;
}

static const char hop[] =
    "connection\nkeep-alive\nproxy-connection\nte\ntrailer\ntransfer-encoding\nupgrade\n"
    "content-length\nhost\nexpect\nx-forwarded-for\nx-forwarded-proto";

int sl__forward_headers(sl_buf_t *out, const sl_req_t *r, const char *skip, size_t skiplen, uint64_t body_len,
                        int framing, int https)
{
    const sl_header_t *conn = NULL, *xff = NULL;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const sl_header_t *h = &r->headers[i];
        if (h->name_len == 10 && strncasecmp(h->name, "connection", 10) == 0)
            conn = h;
        else if (h->name_len == 15 && strncasecmp(h->name, "x-forwarded-for", 15) == 0 && xff == NULL)
            xff = h;
    }
    if (sl_buf_reserve(out, r->head.len + r->nheaders * 4 + 160) != 0)
        return -ENOMEM;
    int rc = 0; /* every append is checked: a head cut short by a failed one must not be sent */
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const sl_header_t *h = &r->headers[i];
        if (is_named(h->name, h->name_len, hop, sizeof(hop) - 1) ||
            (skiplen && is_named(h->name, h->name_len, skip, skiplen)) ||
            (conn && sl__http_token_listed(conn->value, conn->value_len, h->name, h->name_len)))
            continue;
        rc |= sl_buf_append(out, h->name, h->name_len);
        rc |= sl_buf_append(out, ": ", 2);
        rc |= sl_buf_append(out, h->value, h->value_len);
        rc |= sl_buf_append(out, "\r\n", 2);
    }
    if (!(skiplen && is_named("x-forwarded-for", 15, skip, skiplen))) {
        rc |= sl_buf_append(out, "X-Forwarded-For: ", 17);
        if (xff) {
            rc |= sl_buf_append(out, xff->value, xff->value_len);
            rc |= sl_buf_append(out, ", ", 2);
        }
        rc |= sl_buf_append(out, r->client_ip, r->client_ip_len);
        rc |= sl_buf_append(out, "\r\n", 2);
    }
    if (!(skiplen && is_named("x-forwarded-proto", 17, skip, skiplen)))
        rc |= sl_buf_appends(out, https ? "X-Forwarded-Proto: https\r\n" : "X-Forwarded-Proto: http\r\n");
    if (framing == SL_FWD_CHUNKED)
        rc |= sl_buf_appends(out, "Transfer-Encoding: chunked\r\n");
    else if (framing == SL_FWD_LENGTH) {
        char n[24];
        rc |= sl_buf_append(out, "Content-Length: ", 16);
        rc |= sl_buf_append(out, n, sl_fmt_u64(n, body_len));
        rc |= sl_buf_append(out, "\r\n", 2);
    }
    rc |= sl_buf_append(out, "\r\n", 2);
    return rc ? -ENOMEM : 0;
}
