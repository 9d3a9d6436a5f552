/* Head bytes checked before they go on the wire (see field.h): every writer of a head calls these, so a bad
 * name or value is refused in one place whatever produced it (config, Admin API, plugin, provider options).
 */
#include "http/field.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* RFC 9110 tchar */
static const uint8_t tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1,         ['&'] = 1,         ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,         ['^'] = 1,         ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

/* Bytes that end a value's scan: the CR of its CRLF, or a byte no value may hold (LF, NUL). */
static const uint8_t vstop[256] = {[0] = 1, ['\n'] = 1, ['\r'] = 1};

int sl_http_token(const char *p, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!tchar[(uint8_t)p[i]])
            return 0;
    return 1;
}

static int bad(sl_field_err_t *err, const char *at, size_t len, const char *why, const char *kind)
{
    err->kind = kind;
    err->at = at;
    err->len = len;
    err->why = why;
    return -EINVAL;
}

int sl_http_check_fields(const char *p, size_t len, uint32_t nfields, int flags, sl_field_err_t *err)
{
    size_t i = 0, end = len;
    uint32_t n = 0;
    while (i < len) {
        if (p[i] == '\r' && i + 1 < len && p[i + 1] == '\n') { /* the blank line */
            if (!(flags & SL_FIELDS_ENDED) || i + 2 != len)
                return bad(err, p + i, 0, "blank line inside the head", "header");
            end = i;
            break;
        }
        size_t name = i;
        while (i < len && tchar[(uint8_t)p[i]])
            i++;
        size_t nlen = i - name;
        if (i == len || p[i] != ':' || nlen == 0) {
            while (i < len && p[i] != ':' && p[i] != '\r' && p[i] != '\n')
                i++; /* the whole would-be name, for the log */
            return bad(err, p + name, i - name,
                       nlen == 0 && i < len && p[i] == ':' ? "empty name" : "name is not a token", "header");
        }
        i++;
        while (i < len && !vstop[(uint8_t)p[i]])
            i++;
        if (i + 1 >= len || p[i] != '\r' || p[i + 1] != '\n')
            return bad(err, p + name, nlen, i >= len ? "line not ended by CRLF" : "value has CR, LF or NUL",
                       "header");
        i += 2;
        n++;
    }
    if ((flags & SL_FIELDS_ENDED) && end == len)
        return bad(err, p + len, 0, "head not ended by a blank line", "header");
    if (n != nfields) /* CR LF inside a value: the lines after it look like headers of their own */
        return bad(err, p, end,
                   n > nfields ? "more lines than headers were set (a value holds CR LF)"
                               : "fewer lines than headers were set",
                   "header lines");
    return 0;
}

int sl_http_check_request_head(const char *p, size_t len, uint32_t nfields, int flags, sl_field_err_t *err)
{
    const char *eol = memchr(p, '\n', len);
    size_t line = eol ? (size_t)(eol - p) : len;
    size_t i = 0;
    while (i < line && tchar[(uint8_t)p[i]])
        i++;
    if (i == 0 || i == line || p[i] != ' ')
        return bad(err, p, line, "method is not a token", "request line");
    size_t target = ++i;
    while (i < line && (uint8_t)p[i] > ' ' && p[i] != 0x7f)
        i++;
    if (i == target || i == line || p[i] != ' ')
        return bad(err, p, line, "target is empty or has spaces or controls", "request line");
    i++;
    if (eol == NULL || line - i != 9 || memcmp(p + i, "HTTP/1.", 7) != 0 ||
        (p[i + 7] != '1' && p[i + 7] != '0') || p[i + 8] != '\r')
        return bad(err, p, line, "not ended by HTTP/1.0 or HTTP/1.1 and CRLF", "request line");
    return sl_http_check_fields(p + line + 1, len - line - 1, nfields, flags, err);
}

int sl_http_host_ok(const char *host, size_t len)
{
    if (len == 0 || len > 255)
        return 0;
    for (size_t i = 0; i < len; i++)
        if ((uint8_t)host[i] <= ' ' || host[i] == 0x7f)
            return 0;
    return 1;
}

/* Appends s (n bytes, at most max) to out at *at, quoted, bytes that are not printable as \xNN. */
static void quote(char *out, size_t cap, size_t *at, const char *s, size_t n, size_t max)
{
    size_t k = *at, show = n < max ? n : max;
    if (k + 1 < cap)
        out[k++] = '"';
    for (size_t i = 0; i < show && k + 5 < cap; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
            out[k++] = (char)c;
        else
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", c);
    }
    if (show < n && k + 4 < cap) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    if (k + 1 < cap)
        out[k++] = '"';
    *at = k;
}

const char *sl_http_field_error(const sl_field_err_t *err, char *out, size_t cap)
{
    if (cap == 0)
        return out;
    size_t k = (size_t)snprintf(out, cap, "%s ", err->kind);
    if (k >= cap)
        k = cap - 1;
    if (strcmp(err->kind, "header lines") == 0) {
        /* every name of the block: the one whose value holds CR LF, and what it smuggled in */
        const char *p = err->at, *end = err->at + err->len;
        for (int first = 1; p < end; first = 0) {
            const char *colon = memchr(p, ':', (size_t)(end - p));
            const char *eol = memchr(p, '\n', (size_t)(end - p));
            if (!first && k + 2 < cap) {
                memcpy(out + k, ", ", 2);
                k += 2;
            }
            quote(out, cap, &k, p, colon && (!eol || colon < eol) ? (size_t)(colon - p) : 0, 64);
            p = eol ? eol + 1 : end;
        }
    } else {
        quote(out, cap, &k, err->at, err->len, 64);
    }
    if (k < cap)
        snprintf(out + k, cap - k, ": %s", err->why);
    out[cap - 1] = '\0';
    return out;
}
