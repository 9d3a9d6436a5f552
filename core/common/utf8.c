/* UTF-8 well-formedness (RFC 3629, table 3-7 of the Unicode standard): the gateway checks the text a client
 * sends before it goes to a provider, which would reject it with a less helpful message, or worse, pass it
 * on. */
#include "common/utf8.h"

#include <stdint.h>
#include <string.h>

#define HIGH_BITS 0x8080808080808080ULL

int sl_utf8_valid(const char *s, size_t len, size_t *bad)
{
    const unsigned char *start = (const unsigned char *)s, *p = start, *end = start + len;
    while (p < end) {
        while (end - p >= 8) { /* ASCII, a word at a time */
            uint64_t w;
            memcpy(&w, p, sizeof(w));
            if (w & HIGH_BITS)
                break;
            p += 8;
        }
        if (p == end)
            break;
        unsigned c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        /* lead byte: how many continuation bytes, and the range of the first one (overlongs, surrogates and
         * code points past U+10FFFF are excluded there) */
        size_t n;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF)
            n = 1;
        else if (c == 0xE0)
            n = 2, lo = 0xA0;
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
            n = 2;
        else if (c == 0xED)
            n = 2, hi = 0x9F;
        else if (c == 0xF0)
            n = 3, lo = 0x90;
        else if (c >= 0xF1 && c <= 0xF3)
            n = 3;
        else if (c == 0xF4)
            n = 3, hi = 0x8F;
        else
            goto invalid;
        if ((size_t)(end - p) <= n || p[1] < lo || p[1] > hi)
            goto invalid;
        for (size_t i = 2; i <= n; i++)
            if ((p[i] & 0xC0) != 0x80)
                goto invalid;
        p += n + 1;
    }
    return 1;
invalid:
    if (bad)
        *bad = (size_t)(p - start);
    return 0;
}
