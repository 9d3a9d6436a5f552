/* Input cursor, cut plans, fingerprints and failure reporting shared by the harnesses. */
#include "fuzz.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint8_t fz_byte(fz_in_t *in)
{
    if (in->n == 0)
        return 0;
    in->n--;
    return *in->p++;
}

void fz_cuts_read(fz_in_t *in, fz_cuts_t *c)
{
    c->n = fz_byte(in) % 17;
    for (int i = 0; i < c->n; i++)
        c->len[i] = (uint16_t)(fz_byte(in) + 1);
}

size_t fz_cuts_piece(const fz_cuts_t *c, size_t i)
{
    return c->n == 0 ? SIZE_MAX : c->len[i % (size_t)c->n];
}

void fz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("\n== FUZZ INVARIANT: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n", stderr);
    va_end(ap);
    abort();
}

uint64_t fz_hash(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return fz_hash_int(h, (int64_t)n); /* lengths too: "ab"+"c" differs from "a"+"bc" */
}

uint64_t fz_hash_int(uint64_t h, int64_t v)
{
    for (int i = 0; i < 8; i++)
        h = (h ^ (uint8_t)(v >> (8 * i))) * 1099511628211ull;
    return h;
}

int fz_known(const char *id)
{
    const char *list = getenv("SLUICE_FUZZ_KNOWN");
    size_t n = strlen(id);
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, id, n) == 0)
            return 1;
        p = end ? end + 1 : p + len;
    }
    return 0;
}
