/* Candidate runs for digit-led patterns (common/runs.h). Prose has few digits: the search for the next one
 * goes 16 bytes (SSE2) or a word (8 bytes) at a time, and only around a digit are bytes looked up in the
 * class table. */
#include "common/runs.h"

#include "common/regex.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Non-zero when one of the 8 bytes of w is an ASCII digit: a byte is one when its high nibble is 3 and its
 * low nibble below 10; y has a zero byte exactly there, found by the usual zero-byte test (the lowest zero
 * byte is always flagged, so "none flagged" is exact). */
static uint64_t has_digit(uint64_t w)
{
    uint64_t hi = (w & 0xF0F0F0F0F0F0F0F0ull) ^ 0x3030303030303030ull;
    uint64_t lo = ((w & 0x0F0F0F0F0F0F0F0Full) + 0x0606060606060606ull) & 0x1010101010101010ull;
    uint64_t y = hi | lo;
    return (y - ONES) & ~y & HIGHS;
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int counted(unsigned char c, int mark)
{
    return mark >= 0 ? c == mark : is_digit(c);
}

/* Offset of the first counted byte in t[i..len) (mark, or an ASCII digit when mark < 0), or len. */
static size_t next_mark(const unsigned char *t, size_t i, size_t len, int mark)
{
    if (mark >= 0) {
        const unsigned char *p = i < len ? memchr(t + i, mark, len - i) : NULL;
        return p ? (size_t)(p - t) : len;
    }
#ifdef __SSE2__
    /* 16 bytes a step: a digit is a byte b with b - '0' below 10, unsigned (min(x, 9) == x) */
    const __m128i zero = _mm_set1_epi8('0'), nine = _mm_set1_epi8(9);
    while (i + 16 <= len) {
        __m128i x = _mm_sub_epi8(_mm_loadu_si128((const __m128i *)(t + i)), zero);
        if (_mm_movemask_epi8(_mm_cmpeq_epi8(_mm_min_epu8(x, nine), x)))
            break;
        i += 16;
    }
#endif
    while (i + 8 <= len) {
        uint64_t w;
        memcpy(&w, t + i, 8);
        if (has_digit(w))
            break;
        i += 8;
    }
    while (i < len && !is_digit(t[i]))
        i++;
    return i;
}

int sl_text_runs(const char *text, size_t len, size_t start, const unsigned char cls[256], int mark, int need,
                 int *out, int pairs)
{
    const unsigned char *t = (const unsigned char *)text;
    size_t pos = start, floor = start; /* a run never reaches back before floor: the end of the last one */
    int n = 0;

    if ((!text && len) || !cls || mark > 255 || need < 1 || start > len || pairs < 0 || (pairs && !out))
        return -EINVAL;
    if (len > INT_MAX)
        return -E2BIG;
    while (n < pairs) {
        size_t d = next_mark(t, pos, len, mark), from, to;
        int digits = 0;

        if (d >= len)
            break;
        if (!cls[t[d]]) { /* a counted byte outside the class: it splits runs, nothing more */
            pos = floor = d + 1;
            continue;
        }
        from = d;
        while (from > floor && cls[t[from - 1]])
            from--;
        to = d;
        while (to < len && cls[t[to]]) {
            digits += counted(t[to], mark);
            to++;
        }
        if (digits >= need) {
            out[2 * n] = (int)from;
            out[2 * n + 1] = (int)to;
            n++;
        }
        pos = floor = to;
    }
    return n;
}

int sl_text_runs_match(const sl_regex_t *re, const char *text, size_t len, size_t start,
                       const unsigned char cls[256], int mark, int need, int *out, int triples, size_t *next)
{
    int runs[2 * 16], ovec[2 * SL_RUNS_MAX_GROUPS], pairs, n = 0, rc = 0;
    size_t pos = start;

    if (!re || !next || triples < 1 || !out)
        return -EINVAL;
    pairs = sl_regex_ncaptures(re) + 1;
    if (pairs > SL_RUNS_MAX_GROUPS)
        return -E2BIG;
    *next = len;
    for (;;) {
        int nr = sl_text_runs(text, len, pos, cls, mark, need, runs, 16);
        if (nr < 0)
            return nr;
        for (int i = 0; i < nr; i++) {
            size_t at = (size_t)runs[2 * i], end = (size_t)runs[2 * i + 1];
            /* the byte after the run is not in it: look-aheads of one byte see the text as it is */
            size_t stop = end < len ? end + 1 : len;
            while (at < end) {
                int g = 1;
                if (n == triples) {
                    *next = at;
                    return n;
                }
                rc = sl_regex_exec(re, text, stop, at, ovec, pairs);
                if (rc < 0)
                    return rc;
                if (rc == 0 || (size_t)ovec[0] >= end)
                    break;
                while (g < rc && ovec[2 * g] < 0)
                    g++;
                out[3 * n] = ovec[0];
                out[3 * n + 1] = ovec[1];
                out[3 * n + 2] = g < rc ? g : 0;
                n++;
                /* an empty match moves on by one byte */
                at = (size_t)ovec[1] > (size_t)ovec[0] ? (size_t)ovec[1] : (size_t)ovec[0] + 1;
            }
        }
        if (nr < 16)
            return n;
        pos = (size_t)runs[2 * 15 + 1];
    }
}
