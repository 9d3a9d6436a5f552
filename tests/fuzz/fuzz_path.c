/* Harness: the request path normaliser (core/http/path.c: sl_path_normalize, sl_authority_check,
 * sl_target_absolute). Pure functions over bytes, so the invariants are about the result itself.
 *
 * Input: byte 1 picks the flags (bit 0: SL_PATH_KEEP_ENCODED_SLASH) and whether the rest is a path, a Host
 * value or an absolute-form target (bits 1-2), then the bytes. Invariants (no crash or sanitizer report
 * besides):
 *   * a normalised path is never longer than its input, starts with '/', holds no "//", no "." or ".."
 *     segment, no NUL, no escape of an unreserved character, no lower-case hex in an escape, and an escaped
 *     slash only with SL_PATH_KEEP_ENCODED_SLASH (raw control characters are the parser's to refuse, before);
 *   * normalising it again gives the same bytes (idempotence), and normalising in place gives what
 *     normalising into another buffer gives;
 *   * whatever fails, fails with one of the documented codes;
 *   * an authority the checker accepts has a host part within the input, and an absolute-form target's
 *     authority passes the authority check and lies within the target. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "http/path.h"

static int unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1; /* lower case is not normalised output */
}

/* The invariants of a normalised path. */
static void check_normal(const char *p, size_t n, unsigned flags)
{
    FZ_CHECK(n >= 1 && p[0] == '/');
    size_t seg = 1; /* start of the current segment */
    for (size_t i = 1; i <= n; i++) {
        if (i == n || p[i] == '/') {
            size_t len = i - seg;
            FZ_CHECK(!(len == 1 && p[seg] == '.'));
            FZ_CHECK(!(len == 2 && p[seg] == '.' && p[seg + 1] == '.'));
            FZ_CHECK(i == n || len > 0); /* "//" merged (an empty last segment is the trailing slash) */
            seg = i + 1;
            continue;
        }
        unsigned char c = (unsigned char)p[i];
        FZ_CHECK(c != 0);
        if (c == '%') {
            FZ_CHECK(i + 2 < n);
            int hi = hexval((unsigned char)p[i + 1]), lo = hexval((unsigned char)p[i + 2]);
            FZ_CHECK(hi >= 0 && lo >= 0);
            unsigned char v = (unsigned char)(hi << 4 | lo);
            FZ_CHECK(!unreserved(v) && v != 0);
            FZ_CHECK(v != '/' || (flags & SL_PATH_KEEP_ENCODED_SLASH));
        }
    }
}

static void path(const char *s, size_t n, unsigned flags)
{
    char *out = malloc(n + 1), *again = malloc(n + 1), *inplace = malloc(n + 1);
    FZ_CHECK(out && again && inplace);
    size_t on = 0, an = 0, in_n = 0;
    int rc = sl_path_normalize(s, n, out, &on, flags);
    FZ_CHECK(rc == 0 || rc == -EINVAL || rc == -EILSEQ || rc == -EPERM || rc == -ERANGE);
    memcpy(inplace, s, n);
    int rc2 = sl_path_normalize(inplace, n, inplace, &in_n, flags);
    FZ_CHECK(rc2 == rc);
    if (rc == 0) {
        FZ_CHECK(on <= n);
        check_normal(out, on, flags);
        FZ_CHECK(in_n == on && memcmp(inplace, out, on) == 0);
        FZ_CHECK(sl_path_normalize(out, on, again, &an, flags) == 0);
        FZ_CHECK(an == on && memcmp(again, out, on) == 0);
    }
    free(out);
    free(again);
    free(inplace);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned mode = data[0];
    const char *s = (const char *)data + 1;
    size_t n = size - 1;
    switch ((mode >> 1) & 3) {
    case 1: { /* a Host header value */
        int h = sl_authority_check(s, n);
        FZ_CHECK(h == -EINVAL || (h > 0 && (size_t)h <= n));
        break;
    }
    case 2: { /* an absolute-form target */
        size_t ao = 0, al = 0, ro = 0;
        if (sl_target_absolute(s, n, &ao, &al, &ro) == 0) {
            FZ_CHECK(ao + al <= n && ro <= n && ao + al <= ro);
            FZ_CHECK(sl_authority_check(s + ao, al) > 0);
            if (ro < n && s[ro] == '/') { /* its path, without the query */
                const char *q = memchr(s + ro, '?', n - ro);
                path(s + ro, (q ? (size_t)(q - s) : n) - ro, mode & 1);
            }
        }
        break;
    }
    default:
        path(s, n, mode & 1);
        break;
    }
    return 0;
}
