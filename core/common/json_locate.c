/* Finds a value by its path in raw JSON bytes (see json_locate.h). Iterative: any depth costs no stack. */
#include "common/json_locate.h"

#include <string.h>

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

/* The string whose opening quote is at p: the byte after its closing quote, or NULL. A quote closes it when
 * an even number of backslashes precede it (each pair is one escaped backslash); memchr finds the candidates.
 */
static const char *skip_string(const char *p, const char *e)
{
    const char *from = ++p;
    while (p < e) {
        const char *q = memchr(p, '"', (size_t)(e - p));
        if (!q)
            return NULL;
        const char *b = q;
        while (b > from && b[-1] == '\\')
            b--;
        if (((q - b) & 1) == 0)
            return q + 1;
        p = q + 1;
        from = p; /* the escaped quote is no backslash: a run before the next one starts after it */
    }
    return NULL;
}

/* The value at p (no whitespace before it): the byte after it, or NULL. Containers are skipped by counting
 * brackets outside strings (the bytes were decoded before: they nest properly). */
static const char *skip_value(const char *p, const char *e)
{
    if (p >= e)
        return NULL;
    if (*p == '"')
        return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        size_t depth = 0;
        while (p < e) {
            char c = *p;
            if (c == '"') {
                p = skip_string(p, e);
                if (!p)
                    return NULL;
                continue;
            }
            if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return p + 1;
            }
            p++;
        }
        return NULL;
    }
    const char *v = p; /* a number or a literal: up to the next delimiter */
    while (p < e && !strchr(",}] \t\r\n[{\":", *p))
        p++;
    return p > v ? p : NULL;
}

/* In the object whose '{' is at p: the value of the member named key (*at), scanning every member (a repeat
 * makes it unsure). Returns 0, SL_JSON_ABSENT or SL_JSON_UNSURE. */
static int member(const char *p, const char *e, const char *key, size_t klen, const char **at)
{
    const char *hit = NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return SL_JSON_ABSENT;
    for (;;) {
        if (p >= e || *p != '"')
            return SL_JSON_UNSURE;
        const char *k = p + 1;
        const char *q = skip_string(p, e);
        if (!q)
            return SL_JSON_UNSURE;
        size_t n = (size_t)(q - 1 - k);
        if (memchr(k, '\\', n))
            return SL_JSON_UNSURE; /* it may spell key */
        p = skip_ws(q, e);
        if (p >= e || *p != ':')
            return SL_JSON_UNSURE;
        const char *v = skip_ws(p + 1, e);
        p = skip_value(v, e);
        if (!p)
            return SL_JSON_UNSURE;
        if (n == klen && memcmp(k, key, n) == 0) {
            if (hit)
                return SL_JSON_UNSURE;
            hit = v;
        }
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}')
            break;
        return SL_JSON_UNSURE;
    }
    if (!hit)
        return SL_JSON_ABSENT;
    *at = hit;
    return 0;
}

/* In the array whose '[' is at p: element index (*at). Returns 0, SL_JSON_ABSENT or SL_JSON_UNSURE. */
static int element(const char *p, const char *e, size_t index, const char **at)
{
    p = skip_ws(p + 1, e);
    if (p < e && *p == ']')
        return SL_JSON_ABSENT;
    for (size_t i = 0;; i++) {
        if (i == index) {
            *at = p;
            return 0;
        }
        p = skip_value(p, e);
        if (!p)
            return SL_JSON_UNSURE;
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == ']')
            return SL_JSON_ABSENT;
        return SL_JSON_UNSURE;
    }
}

int sl_json_locate(const char *s, size_t len, const sl_json_step_t *path, int n, size_t *from, size_t *to)
{
    const char *e = s + len;
    const char *p = skip_ws(s, e);
    for (int i = 0; i < n; i++) {
        if (p >= e)
            return SL_JSON_UNSURE;
        int rc;
        if (path[i].key) {
            if (*p != '{')
                return SL_JSON_ABSENT;
            rc = member(p, e, path[i].key, path[i].key_len, &p);
        } else {
            if (*p != '[')
                return SL_JSON_ABSENT;
            rc = element(p, e, path[i].index, &p);
        }
        if (rc != 0)
            return rc;
    }
    const char *end = skip_value(p, e);
    if (!end)
        return SL_JSON_UNSURE;
    *from = (size_t)(p - s);
    *to = (size_t)(end - s);
    return 0;
}
