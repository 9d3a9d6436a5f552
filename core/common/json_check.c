/* Checks and reads on raw JSON bytes (see json_check.h). One recursive-descent pass each, no allocation. */
#include "common/json_check.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64
#define MAX_KEYS 256 /* keys of the objects open on the current path, compared for repeats */

typedef struct scan {
    const char *end;
    int depth;
    int nkeys;
    const char *key[MAX_KEYS];
    uint32_t klen[MAX_KEYS];
} scan_t;

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static int hex4(const char *p, const char *e, unsigned *v)
{
    if (e - p < 4)
        return 0;
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        x <<= 4;
        if (c >= '0' && c <= '9')
            x |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            x |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            x |= (unsigned)(c - 'A' + 10);
        else
            return 0;
    }
    *v = x;
    return 1;
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Nonzero when one of the 8 bytes of w is '"', '\\' or below 0x20: the bytes a string scan must look at. */
static uint64_t special8(uint64_t w)
{
    uint64_t q = w ^ (ONES * '"'), b = w ^ (ONES * '\\');
    return ((q - ONES) & ~q & HIGHS) | ((b - ONES) & ~b & HIGHS) | ((w - ONES * 0x20) & ~w & HIGHS);
}

/* The string whose opening quote is at p: the byte after its closing quote, or NULL. *esc: it has escapes. */
static const char *scan_string(const char *p, const char *e, int *esc)
{
    *esc = 0;
    for (p++; p < e;) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (e - p >= 8) {
            uint64_t w, m;
            memcpy(&w, p, 8);
            m = special8(w);
            if (m == 0) {
                p += 8; /* eight ordinary bytes */
                continue;
            }
            /* straight to the first byte to look at: the lowest flagged byte is always a real one (the
             * borrows of the tests only flag bytes above one) */
            p += __builtin_ctzll(m) >> 3;
        }
#endif
        unsigned char c = (unsigned char)*p;
        if (c == '"')
            return p + 1;
        if (c < 0x20)
            return NULL;
        if (c != '\\') {
            p++;
            continue;
        }
        *esc = 1;
        if (++p >= e)
            return NULL;
        switch (*p) {
        case '"':
        case '\\':
        case '/':
        case 'b':
        case 'f':
        case 'n':
        case 'r':
        case 't':
            p++;
            break;
        case 'u': {
            unsigned v, lo;
            if (!hex4(p + 1, e, &v))
                return NULL;
            p += 5;
            if (v >= 0xdc00 && v <= 0xdfff)
                return NULL; /* a low surrogate alone */
            if (v >= 0xd800 && v <= 0xdbff) {
                if (e - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, e, &lo) || lo < 0xdc00 ||
                    lo > 0xdfff)
                    return NULL;
                p += 6;
            }
            break;
        }
        default:
            return NULL;
        }
    }
    return NULL;
}

/* A number as RFC 8259 writes it: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static const char *scan_number(const char *p, const char *e)
{
    if (p < e && *p == '-')
        p++;
    if (p >= e)
        return NULL;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < e && *p >= '0' && *p <= '9')
            p++;
    } else {
        return NULL;
    }
    if (p < e && *p == '.') {
        const char *d = ++p;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return NULL;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < e && (*p == '+' || *p == '-'))
            p++;
        const char *d = p;
        while (p < e && *p >= '0' && *p <= '9')
            p++;
        if (p == d)
            return NULL;
    }
    return p;
}

static const char *scan_literal(const char *p, const char *e, const char *lit, size_t n)
{
    return (size_t)(e - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

static const char *scan_value(scan_t *sc, const char *p);

/* After a member or element (*p: its end, NULL when it failed): 1 with *p at the next one past a comma, 0
 * with *p at the closing bracket, -1 for anything else (a comma before the bracket is one). */
static int after_item(const char **p, const char *e, char close)
{
    const char *q = *p;
    if (q == NULL)
        return -1;
    q = skip_ws(q, e);
    if (q < e && *q == ',') {
        *p = skip_ws(q + 1, e);
        return 1;
    }
    *p = q;
    return q < e && *q == close ? 0 : -1;
}

static const char *scan_object(scan_t *sc, const char *p)
{
    const char *e = sc->end;
    if (++sc->depth > MAX_DEPTH)
        return NULL;
    int first = sc->nkeys;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        goto done;
    for (;;) {
        if (p >= e || *p != '"')
            return NULL;
        int esc;
        const char *k = p + 1, *q = scan_string(p, e, &esc);
        if (q == NULL || esc)
            return NULL; /* an escaped key could repeat another under a different spelling */
        uint32_t kl = (uint32_t)(q - 1 - k);
        for (int i = first; i < sc->nkeys; i++)
            if (sc->klen[i] == kl && memcmp(sc->key[i], k, kl) == 0)
                return NULL;
        if (sc->nkeys == MAX_KEYS)
            return NULL;
        sc->key[sc->nkeys] = k;
        sc->klen[sc->nkeys++] = kl;
        p = skip_ws(q, e);
        if (p >= e || *p != ':')
            return NULL;
        p = scan_value(sc, skip_ws(p + 1, e));
        int more = after_item(&p, e, '}');
        if (more < 0)
            return NULL;
        if (more == 0)
            goto done;
    }
done:
    sc->nkeys = first;
    sc->depth--;
    return p + 1;
}

static const char *scan_array(scan_t *sc, const char *p)
{
    const char *e = sc->end;
    if (++sc->depth > MAX_DEPTH)
        return NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == ']')
        goto done;
    for (;;) {
        p = scan_value(sc, p);
        int more = after_item(&p, e, ']');
        if (more < 0)
            return NULL;
        if (more == 0)
            goto done;
    }
done:
    sc->depth--;
    return p + 1;
}

static const char *scan_value(scan_t *sc, const char *p)
{
    const char *e = sc->end;
    int esc;
    if (p >= e)
        return NULL;
    switch (*p) {
    case '{':
        return scan_object(sc, p);
    case '[':
        return scan_array(sc, p);
    case '"':
        return scan_string(p, e, &esc);
    case 't':
        return scan_literal(p, e, "true", 4);
    case 'f':
        return scan_literal(p, e, "false", 5);
    case 'n':
        return scan_literal(p, e, "null", 4);
    default:
        return scan_number(p, e);
    }
}

const char *sl_json_plain_value(const char *p, const char *end)
{
    scan_t sc;
    sc.end = end;
    sc.depth = 0;
    sc.nkeys = 0;
    return p == NULL ? NULL : scan_value(&sc, p);
}

const char *sl_json_string_end(const char *p, const char *end, int *esc)
{
    return p < end && *p == '"' ? scan_string(p, end, esc) : NULL;
}

const char *sl_json_number_end(const char *p, const char *end)
{
    return scan_number(p, end);
}

int sl_json_plain_object(const char *s, size_t len)
{
    if (s == NULL)
        return 0;
    scan_t sc;
    sc.end = s + len;
    sc.depth = 0;
    sc.nkeys = 0;
    const char *p = skip_ws(s, sc.end);
    if (p >= sc.end || *p != '{')
        return 0;
    p = scan_object(&sc, p);
    return p != NULL && skip_ws(p, sc.end) == sc.end;
}

/* ---- usage */

enum { U_PROMPT, U_COMPLETION, U_TOTAL, U_CACHED, U_REASONING, U_HIT, U_PD_CACHED, U_CD_REASONING };

/* An integer member value of at most 15 digits (exact as a double, as a decoder reads it), or null (*null
 * set). */
static const char *usage_number(const char *p, const char *e, double *v, int *null)
{
    *null = 0;
    if (p < e && *p == 'n') {
        *null = 1;
        return scan_literal(p, e, "null", 4);
    }
    const char *q = scan_number(p, e);
    if (q == NULL)
        return NULL;
    const char *d = *p == '-' ? p + 1 : p;
    if (q - d > 15 || memchr(p, '.', (size_t)(q - p)) || memchr(p, 'e', (size_t)(q - p)) ||
        memchr(p, 'E', (size_t)(q - p)))
        return NULL;
    long long x = 0;
    for (const char *c = d; c < q; c++)
        x = x * 10 + (*c - '0');
    *v = *p == '-' ? -(double)x : (double)x;
    return q;
}

/* The members of a usage object (level 0) or of one object inside it (level 1, which: the field its number
 * goes to, or -1); returns the byte after its '}' or NULL. */
static const char *usage_object(const char *p, const char *e, int level, double *val, unsigned *have)
{
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return p + 1;
    for (;;) {
        int esc;
        if (p >= e || *p != '"')
            return NULL;
        const char *k = p + 1, *q = scan_string(p, e, &esc);
        if (q == NULL || esc)
            return NULL;
        size_t kl = (size_t)(q - 1 - k);
        if (memchr(k, '{', kl) || memchr(k, '}', kl))
            return NULL; /* the caller's fallback finds the object by counting braces, strings or not */
        p = skip_ws(q, e);
        if (p >= e || *p != ':')
            return NULL;
        p = skip_ws(p + 1, e);
        if (p >= e)
            return NULL;
#define KEY(lit) (kl == sizeof(lit) - 1 && memcmp(k, lit, kl) == 0)
        int field = -1, pd = 0, cd = 0;
        if (level == 0) {
            pd = KEY("prompt_tokens_details");
            cd = KEY("completion_tokens_details");
            field = pd                               ? U_PD_CACHED
                    : cd                             ? U_CD_REASONING
                    : KEY("prompt_tokens")           ? U_PROMPT
                    : KEY("completion_tokens")       ? U_COMPLETION
                    : KEY("total_tokens")            ? U_TOTAL
                    : KEY("prompt_cache_hit_tokens") ? U_HIT
                                                     : -1;
        } else if (level == 1 && KEY("cached_tokens")) {
            field = U_PD_CACHED;
        } else if (level == 2 && KEY("reasoning_tokens")) {
            field = U_CD_REASONING;
        }
#undef KEY
        if (field >= 0)
            *have &= ~(1u << field); /* a repeated key: the last value counts, whatever it is */
        if (*p == '{') {
            if (level > 0)
                return NULL; /* deeper than the caller's normalisation looks: let it decode */
            double inner[8] = {0};
            unsigned ih = 0;
            p = usage_object(p, e, pd ? 1 : cd ? 2 : 3, inner, &ih);
            if (p != NULL && (pd || cd) && (ih & (1u << field))) {
                val[field] = inner[field];
                *have |= 1u << field;
            } /* a number field given an object reads as absent */
        } else {
            double v = 0;
            int null;
            p = usage_number(p, e, &v, &null);
            if (p != NULL && !null && field >= 0 && !pd && !cd) {
                val[field] = v;
                *have |= 1u << field;
            }
        }
        if (p == NULL)
            return NULL;
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        if (p < e && *p == '}')
            return p + 1;
        return NULL;
    }
}

int sl_json_usage(const char *s, size_t len, size_t off, double *u)
{
    if (s == NULL || off >= len || s[off] != '{')
        return -1;
    double val[8] = {0};
    unsigned have = 0;
    if (usage_object(s + off, s + len, 0, val, &have) == NULL)
        return -1;
    int out = 0;
    u[U_PROMPT] = (have & (1u << U_PROMPT)) ? val[U_PROMPT] : 0;
    u[U_COMPLETION] = (have & (1u << U_COMPLETION)) ? val[U_COMPLETION] : 0;
    out |= (int)(have & ((1u << U_PROMPT) | (1u << U_COMPLETION) | (1u << U_TOTAL)));
    u[U_TOTAL] = (have & (1u << U_TOTAL)) ? val[U_TOTAL] : 0;
    if (have & (1u << U_PD_CACHED)) {
        u[U_CACHED] = val[U_PD_CACHED];
        out |= 1 << U_CACHED;
    } else if (have & (1u << U_HIT)) {
        u[U_CACHED] = val[U_HIT];
        out |= 1 << U_CACHED;
    }
    if (have & (1u << U_CD_REASONING)) {
        u[U_REASONING] = val[U_CD_REASONING];
        out |= 1 << U_REASONING;
    }
    return out;
}

long sl_json_usage_at(const char *s, size_t len, size_t from)
{
    static const char key[] = "\"usage\"";
    const size_t klen = sizeof(key) - 1;
    const char *e = s + len;
    long at = -1;
    if (s == NULL || from >= len || len - from < klen)
        return -1;
    /* from the end: the last one is the one wanted, and the top-level usage ends OpenAI bodies */
    for (const char *p = e - klen; p >= s + from; p--) {
        if (*p != '"' || memcmp(p, key, klen) != 0)
            continue;
        /* as a search from the front sees them: of keys sharing their quotes ("usage"usage"...), every other
         */
        int chain = 0;
        for (const char *q = p - (klen - 1); q >= s + from && memcmp(q, key, klen) == 0; q -= klen - 1)
            chain++;
        if (chain & 1)
            continue;
        const char *k = skip_ws(p + klen, e);
        if (k < e && *k == ':') {
            k = skip_ws(k + 1, e);
            if (k < e && *k == '{') {
                at = (long)(k - s);
                break;
            }
        }
    }
    return at;
}
