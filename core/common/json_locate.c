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

/* Members and elements one at a time. */
typedef struct iter {
    const char *p, *e;
    int first;
    char close;
} iter_t;

static void iter_begin(iter_t *it, const char *p, const char *e)
{
    it->close = *p == '{' ? '}' : ']';
    it->p = skip_ws(p + 1, e);
    it->e = e;
    it->first = 1;
}

/* The next member (key, when k is not NULL: an object) or element: 1 with *v..*vend its value, 0 at the end,
 * -1 on bytes it cannot read. */
static int iter_next(iter_t *it, const char **k, size_t *kl, const char **v, const char **vend)
{
    const char *p = it->p, *e = it->e;
    if (!it->first) {
        p = skip_ws(p, e);
        if (p < e && *p == it->close)
            return 0;
        if (p >= e || *p != ',')
            return -1;
        p = skip_ws(p + 1, e);
    } else {
        if (p < e && *p == it->close)
            return 0;
        it->first = 0;
    }
    if (k) {
        if (p >= e || *p != '"')
            return -1;
        const char *q = skip_string(p, e);
        if (!q)
            return -1;
        *k = p + 1;
        *kl = (size_t)(q - 1 - *k);
        p = skip_ws(q, e);
        if (p >= e || *p != ':')
            return -1;
        p = skip_ws(p + 1, e);
    }
    const char *end = skip_value(p, e);
    if (!end)
        return -1;
    *v = p;
    *vend = end;
    it->p = end;
    return 1;
}

typedef struct spans {
    const char *s;
    sl_chat_span_t *out;
    int n, max;
} spans_t;

static int emit(spans_t *sp, int kind, int msg, int sub, const char *v, const char *end)
{
    if (sp->n >= sp->max)
        return -1;
    sp->out[sp->n++] = (sl_chat_span_t){kind, msg, sub, (size_t)(v - sp->s), (size_t)(end - sp->s)};
    return 0;
}

static int is_key(const char *k, size_t kl, const char *name)
{
    size_t n = strlen(name);
    return kl == n && memcmp(k, name, n) == 0;
}

/* The string at obj.name (obj: an object's '{'), emitted as kind. */
static int member_string(spans_t *sp, const char *obj, const char *e, const char *name, int kind, int msg,
                         int sub)
{
    iter_t it;
    const char *k, *v, *ve;
    size_t kl;
    int rc;
    iter_begin(&it, obj, e);
    while ((rc = iter_next(&it, &k, &kl, &v, &ve)) == 1) {
        if (is_key(k, kl, name) && *v == '"' && emit(sp, kind, msg, sub, v, ve) < 0)
            return -1;
    }
    return rc;
}

/* The strings of an array (kind, sub: the element), or of a string alone (sub -1). */
static int strings(spans_t *sp, const char *v, const char *ve, const char *e, int kind)
{
    if (*v == '"')
        return emit(sp, kind, -1, -1, v, ve);
    if (*v != '[')
        return 0;
    iter_t it;
    const char *x, *xe;
    int rc, j = 0;
    iter_begin(&it, v, e);
    while ((rc = iter_next(&it, NULL, NULL, &x, &xe)) == 1) {
        if (*x == '"' && emit(sp, kind, -1, j, x, xe) < 0)
            return -1;
        j++;
    }
    return rc;
}

/* Each element of the array at v that is an object, handed to fn with its position. */
static int objects(spans_t *sp, const char *v, const char *e, int msg,
                   int (*fn)(spans_t *, const char *, const char *, int, int))
{
    if (*v != '[')
        return 0;
    iter_t it;
    const char *x, *xe;
    int rc, j = 0;
    iter_begin(&it, v, e);
    while ((rc = iter_next(&it, NULL, NULL, &x, &xe)) == 1) {
        if (*x == '{' && fn(sp, x, e, msg, j) < 0)
            return -1;
        j++;
    }
    return rc;
}

static int part(spans_t *sp, const char *obj, const char *e, int msg, int j)
{
    iter_t it;
    const char *k, *v, *ve;
    size_t kl;
    int rc;
    iter_begin(&it, obj, e);
    while ((rc = iter_next(&it, &k, &kl, &v, &ve)) == 1) {
        if (is_key(k, kl, "type") && emit(sp, SL_CHAT_PART_TYPE, msg, j, v, ve) < 0)
            return -1;
        if (is_key(k, kl, "text") && emit(sp, SL_CHAT_PART_TEXT, msg, j, v, ve) < 0)
            return -1;
    }
    return rc;
}

static int tool_call(spans_t *sp, const char *obj, const char *e, int msg, int j)
{
    iter_t it;
    const char *k, *v, *ve;
    size_t kl;
    int rc;
    iter_begin(&it, obj, e);
    while ((rc = iter_next(&it, &k, &kl, &v, &ve)) == 1) {
        if (is_key(k, kl, "function") && *v == '{' &&
            member_string(sp, v, e, "arguments", SL_CHAT_TOOL_ARGS, msg, j) < 0)
            return -1;
    }
    return rc;
}

static int message(spans_t *sp, const char *obj, const char *e, int unused, int msg)
{
    (void)unused;
    iter_t it;
    const char *k, *v, *ve;
    size_t kl;
    int rc, r = 0;
    iter_begin(&it, obj, e);
    while ((rc = iter_next(&it, &k, &kl, &v, &ve)) == 1) {
        if (is_key(k, kl, "role"))
            r = emit(sp, SL_CHAT_ROLE, msg, -1, v, ve);
        else if (is_key(k, kl, "content"))
            r = *v == '"' ? emit(sp, SL_CHAT_CONTENT, msg, -1, v, ve) : objects(sp, v, e, msg, part);
        else if (is_key(k, kl, "tool_calls"))
            r = objects(sp, v, e, msg, tool_call);
        else if (is_key(k, kl, "function_call") && *v == '{')
            r = member_string(sp, v, e, "arguments", SL_CHAT_FC_ARGS, msg, -1);
        if (r < 0)
            return -1;
    }
    return rc;
}

int sl_chat_spans(const char *s, size_t len, sl_chat_span_t *out, int max)
{
    const char *e = s + len, *p = skip_ws(s, e);
    spans_t sp = {s, out, 0, max};
    if (p >= e || *p != '{')
        return -1;
    iter_t it;
    const char *k, *v, *ve;
    size_t kl;
    int rc, r = 0;
    iter_begin(&it, p, e);
    while ((rc = iter_next(&it, &k, &kl, &v, &ve)) == 1) {
        if (is_key(k, kl, "messages"))
            r = objects(&sp, v, e, 0, message);
        else if (is_key(k, kl, "prompt"))
            r = strings(&sp, v, ve, e, SL_CHAT_PROMPT);
        else if (is_key(k, kl, "input"))
            r = strings(&sp, v, ve, e, SL_CHAT_INPUT);
        if (r < 0)
            return -1;
    }
    return rc < 0 ? -1 : sp.n;
}
