/* Reading an embeddings answer (embjson.h) in one pass over its bytes. A query's embedding is hundreds of
 * numbers of about 20 characters each (OpenAI writes a float32 with 17 significant digits): decoded into a
 * Lua table first, each number costs a strtod, a table slot and then a copy into a float array. Here a number
 * goes straight into its float: up to 19 significant digits are read into an integer and scaled by an exact
 * power of ten in double arithmetic (Clinger's fast path, within a few units of the double's last place); the
 * float nearest to that double is the float nearest to the decimal unless the double lies within those few
 * units of the midpoint between two floats, and then (or for an exponent out of the fast range) strtof
 * decides. Anything this reader does not take in full returns -EINVAL, and the caller reads the answer the
 * general way (cjson), which reports what is wrong with it. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rag/embjson.h"

#define MAX_DEPTH 64
#define MAX_NUMBER 400 /* characters of a number handed to strtof */
#define MAX_COUNT 65536

typedef struct rd {
    const char *p, *end;
} rd_t;

static const double P10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                             1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static void ws(rd_t *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

/* Consumes c after white space; 0 or -1. */
static int eat(rd_t *r, char c)
{
    ws(r);
    if (r->p < r->end && *r->p == c) {
        r->p++;
        return 0;
    }
    return -1;
}

static int peek(rd_t *r)
{
    ws(r);
    return r->p < r->end ? (unsigned char)*r->p : -1;
}

/* The next character after white space, consumed (-1 at the end). */
static int sep(rd_t *r)
{
    int c = peek(r);
    if (c >= 0)
        r->p++;
    return c;
}

static int hex(char c)
{
    return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* A string at p (the quote); *s, *n: its raw bytes, *esc: whether it has escapes. 0 or -1. */
static int string(rd_t *r, const char **s, size_t *n, int *esc)
{
    if (eat(r, '"') != 0)
        return -1;
    const char *b = r->p;
    *esc = 0;
    while (r->p < r->end) {
        unsigned char c = (unsigned char)*r->p;
        if (c == '"') {
            *s = b;
            *n = (size_t)(r->p - b);
            r->p++;
            return 0;
        }
        if (c < 0x20)
            return -1;
        if (c == '\\') {
            *esc = 1;
            if (r->end - r->p < 2)
                return -1;
            char e = r->p[1];
            if (e == 'u') {
                if (r->end - r->p < 6 || !hex(r->p[2]) || !hex(r->p[3]) || !hex(r->p[4]) || !hex(r->p[5]))
                    return -1;
                r->p += 6;
                continue;
            }
            if (strchr("\"\\/bfnrt", e) == NULL || e == '\0')
                return -1;
            r->p += 2;
            continue;
        }
        r->p++;
    }
    return -1;
}

/* Whether a key is exactly lit (a key with escapes never is: such an answer goes the general way). */
static int key_is(const char *s, size_t n, int esc, const char *lit)
{
    return !esc && n == strlen(lit) && memcmp(s, lit, n) == 0;
}

/* Whether the 8 bytes at p are all ASCII digits (little-endian SWAR, as simdjson does). */
static int eight_digits(const char *p, uint64_t *v)
{
    memcpy(v, p, 8);
    return (((*v & 0xF0F0F0F0F0F0F0F0ull) | (((*v + 0x0606060606060606ull) & 0xF0F0F0F0F0F0F0F0ull) >> 4)) ==
            0x3333333333333333ull);
}

/* The value of 8 ASCII digits (eight_digits' v): three multiplications instead of eight steps. */
static uint64_t eight_value(uint64_t v)
{
    v -= 0x3030303030303030ull;
    v = (v * 10) + (v >> 8);
    return (((v & 0x000000FF000000FFull) * (100 + (1000000ull << 32))) +
            (((v >> 16) & 0x000000FF000000FFull) * (1 + (10000ull << 32)))) >>
           32;
}

/* strtof on the number's characters (a copy: the answer is not NUL-terminated); out of line, so the common
 * path keeps a small frame. 0 or -1 (too long, not finite). */
__attribute__((noinline)) static int slow_float(const char *start, const char *end, float *v)
{
    char buf[MAX_NUMBER + 1];
    size_t len = (size_t)(end - start);
    if (len > MAX_NUMBER)
        return -1;
    memcpy(buf, start, len);
    buf[len] = '\0';
    float f = strtof(buf, NULL);
    if (!isfinite(f))
        return -1;
    *v = f;
    return 0;
}

static inline int is_digit(const char *p, const char *end)
{
    return p < end && (unsigned)(*p - '0') <= 9;
}

/* A JSON number at p into *v (the nearest float), *ival (its value when a non-negative integer of at most 18
 * digits, else -1). 0 or -1. */
static int number(rd_t *r, float *v, int64_t *ival)
{
    ws(r);
    const char *p = r->p, *const end = r->end, *const start = p;
    int neg = 0, frac = 0, expo = 0, nd = 0, e10 = 0;
    uint64_t m = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (!is_digit(p, end))
        return -1;
    if (*p == '0') {
        if (is_digit(++p, end))
            return -1; /* no leading zeros in JSON */
    } else {
        for (; is_digit(p, end); p++) {
            if (nd < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                nd++;
            } else {
                e10++;
            }
        }
    }
    if (p < end && *p == '.') {
        if (!is_digit(++p, end))
            return -1;
        frac = 1;
        if (m == 0) /* leading zeros of the fraction are not significant */
            for (; p < end && *p == '0'; p++)
                e10--;
        uint64_t eight;
        while (nd <= 11 && end - p >= 8 && eight_digits(p, &eight)) {
            m = m * 100000000 + eight_value(eight);
            nd += 8;
            e10 -= 8;
            p += 8;
        }
        for (; is_digit(p, end); p++)
            if (nd < 19) {
                m = m * 10 + (uint64_t)(*p - '0');
                nd++;
                e10--;
            }
    }
    if (p < end && (*p | 0x20) == 'e') {
        p++;
        expo = 1;
        int eneg = 0, ex = 0;
        if (p < end && (*p == '+' || *p == '-'))
            eneg = *p++ == '-';
        if (!is_digit(p, end))
            return -1;
        for (; is_digit(p, end); p++)
            if (ex < 100000)
                ex = ex * 10 + (*p - '0');
        e10 += eneg ? -ex : ex;
    }
    r->p = p;
    *ival = !frac && !expo && !neg && e10 == 0 && nd <= 18 ? (int64_t)m : -1;
    if (m == 0) {
        *v = neg ? -0.0f : 0.0f;
        return 0;
    }
    if (e10 >= -22 && e10 <= 22) {
        double d = (double)m;
        d = e10 < 0 ? d / P10[-e10] : d * P10[e10];
        if (d > 1e-30 && d < 1e30) {
            /* the 29 bits a float drops from the double: away from the midpoint, the rounding is certain */
            uint64_t bits;
            memcpy(&bits, &d, sizeof(bits));
            int64_t low = (int64_t)(bits & ((1u << 29) - 1)) - (1 << 28);
            if (low > 16 || low < -16) {
                *v = (float)(neg ? -d : d);
                return 0;
            }
        }
    }
    return slow_float(start, p, v);
}

static int skip(rd_t *r, int depth);

static int skip_container(rd_t *r, int depth, char close)
{
    if (depth >= MAX_DEPTH)
        return -1;
    r->p++;
    if (peek(r) == close) {
        r->p++;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            const char *s;
            size_t n;
            int esc;
            if (string(r, &s, &n, &esc) != 0 || eat(r, ':') != 0)
                return -1;
        }
        if (skip(r, depth + 1) != 0)
            return -1;
        int c = sep(r);
        if (c == close)
            return 0;
        if (c != ',')
            return -1;
    }
}

static int literal(rd_t *r, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, lit, n) != 0)
        return -1;
    r->p += n;
    return 0;
}

/* Any value: checked, not kept. */
static int skip(rd_t *r, int depth)
{
    int c = peek(r);
    const char *s;
    size_t n;
    int esc;
    float f;
    int64_t i;
    switch (c) {
    case '{':
        return skip_container(r, depth, '}');
    case '[':
        return skip_container(r, depth, ']');
    case '"':
        return string(r, &s, &n, &esc);
    case 't':
        return literal(r, "true");
    case 'f':
        return literal(r, "false");
    case 'n':
        return literal(r, "null");
    default:
        return number(r, &f, &i);
    }
}

/* The reader's state across the items of "data". */
typedef struct acc {
    float *out;
    size_t cap;
    uint32_t count, items, dims;
    uint32_t *index; /* each item's "index" (or its place) */
    int err;         /* -ENOSPC, -ERANGE: not a shape problem */
} acc_t;

/* An "embedding" array into the next item's floats. */
static int embedding(rd_t *r, acc_t *a)
{
    if (eat(r, '[') != 0)
        return -1;
    size_t at = (size_t)a->items * a->dims, n = 0;
    if (peek(r) == ']')
        return -1; /* empty: the general way says so */
    for (;;) {
        float f;
        int64_t i;
        if (number(r, &f, &i) != 0)
            return -1;
        if (a->items > 0 && n >= a->dims) {
            a->err = -ERANGE;
            return -1;
        }
        if (at + n >= a->cap) {
            a->err = -ENOSPC;
            return -1;
        }
        a->out[at + n++] = f;
        int c = sep(r);
        if (c == ']')
            break;
        if (c != ',')
            return -1;
    }
    if (a->items == 0)
        a->dims = (uint32_t)n;
    else if (n != a->dims) {
        a->err = -ERANGE;
        return -1;
    }
    return 0;
}

/* One object of "data". */
static int item(rd_t *r, acc_t *a)
{
    if (a->items >= a->count || eat(r, '{') != 0)
        return -1;
    int have_emb = 0, have_index = 0;
    a->index[a->items] = a->items;
    if (peek(r) == '}')
        return -1;
    for (;;) {
        const char *s;
        size_t n;
        int esc;
        if (string(r, &s, &n, &esc) != 0 || eat(r, ':') != 0)
            return -1;
        if (key_is(s, n, esc, "embedding")) {
            if (have_emb++ || peek(r) != '[' || embedding(r, a) != 0)
                return -1;
        } else if (key_is(s, n, esc, "index")) {
            float f;
            int64_t i;
            if (have_index++ || peek(r) == '"' || number(r, &f, &i) != 0 || i < 0 || i >= a->count)
                return -1;
            a->index[a->items] = (uint32_t)i;
        } else if (skip(r, 2) != 0) {
            return -1;
        }
        int c = sep(r);
        if (c == '}')
            break;
        if (c != ',')
            return -1;
    }
    if (!have_emb)
        return -1;
    a->items++;
    return 0;
}

static int data(rd_t *r, acc_t *a)
{
    if (eat(r, '[') != 0)
        return -1;
    if (peek(r) == ']') {
        r->p++;
        return 0;
    }
    for (;;) {
        if (item(r, a) != 0)
            return -1;
        int c = sep(r);
        if (c == ']')
            return 0;
        if (c != ',')
            return -1;
    }
}

/* "usage": prompt_tokens when it is an object holding a number there, else skipped. */
static int usage(rd_t *r, int64_t *tokens)
{
    if (peek(r) != '{')
        return skip(r, 1);
    r->p++;
    if (peek(r) == '}') {
        r->p++;
        return 0;
    }
    for (;;) {
        const char *s;
        size_t n;
        int esc;
        if (string(r, &s, &n, &esc) != 0 || eat(r, ':') != 0)
            return -1;
        int c = peek(r);
        if (key_is(s, n, esc, "prompt_tokens") && c != '"' && c != '{' && c != '[' && c != 't' && c != 'f' &&
            c != 'n') {
            float f;
            if (number(r, &f, tokens) != 0)
                return -1;
        } else if (skip(r, 2) != 0) {
            return -1;
        }
        c = sep(r);
        if (c == '}')
            return 0;
        if (c != ',')
            return -1;
    }
}

/* Puts the vectors in index order: the indexes must be 0..count-1, once each. */
static int order(acc_t *a)
{
    uint32_t i;
    for (i = 0; i < a->count && a->index[i] == i; i++)
        ;
    if (i == a->count)
        return 0;
    size_t d = a->dims, bytes = (size_t)a->count * d * sizeof(float);
    float *tmp = malloc(bytes);
    uint8_t *seen = calloc(a->count, 1);
    int rc = -EINVAL;
    if (tmp == NULL || seen == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (i = 0; i < a->count; i++) {
        if (seen[a->index[i]]++)
            goto out;
        memcpy(tmp + a->index[i] * d, a->out + i * d, d * sizeof(float));
    }
    memcpy(a->out, tmp, bytes);
    rc = 0;
out:
    free(tmp);
    free(seen);
    return rc;
}

int sl_rag_embeddings_read(const char *json, size_t len, uint32_t count, float *out, size_t cap,
                           int64_t *tokens)
{
    rd_t r = {json, json + len};
    acc_t a = {out, cap, count, 0, 0, NULL, 0};
    int have_data = 0, have_usage = 0, rc = -EINVAL;
    *tokens = -1;
    if (json == NULL || count == 0 || count > MAX_COUNT)
        return -EINVAL;
    a.index = malloc(count * sizeof(*a.index));
    if (a.index == NULL)
        return -ENOMEM;
    if (eat(&r, '{') != 0 || peek(&r) == '}')
        goto out;
    for (;;) {
        const char *s;
        size_t n;
        int esc;
        if (string(&r, &s, &n, &esc) != 0 || eat(&r, ':') != 0)
            goto out;
        if (key_is(s, n, esc, "data")) {
            if (have_data++ || data(&r, &a) != 0)
                goto out;
        } else if (key_is(s, n, esc, "usage")) {
            if (have_usage++ || usage(&r, tokens) != 0)
                goto out;
        } else if (skip(&r, 1) != 0) {
            goto out;
        }
        int c = sep(&r);
        if (c == '}')
            break;
        if (c != ',')
            goto out;
    }
    ws(&r);
    if (r.p != r.end || a.items != count)
        goto out;
    rc = order(&a);
    if (rc == 0)
        rc = (int)a.dims;
out:
    if (rc == -EINVAL && a.err)
        rc = a.err;
    free(a.index);
    return rc;
}
