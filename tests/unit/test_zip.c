/* core/common/zip.c: round trips, buffers too small, corrupt and cut input. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/zip.h"
#include "test.h"

static void test_roundtrip(void)
{
    size_t n = 100000, clen, olen;
    char *src = malloc(n), *z, *out = malloc(n);
    for (size_t i = 0; i < n; i++)
        src[i] = "The quick brown fox jumps over the lazy dog. "[i % 45];
    clen = sl_zip_bound(n);
    z = malloc(clen);
    CHECK_INT(sl_zip_deflate(src, n, z, &clen, 6), 0);
    CHECK(clen < n / 10); /* repetitive text shrinks */
    olen = n;
    CHECK_INT(sl_zip_inflate(z, clen, out, &olen), 0);
    CHECK_INT(olen, n);
    CHECK(memcmp(src, out, n) == 0);
    /* output one byte too small: -ENOBUFS, never a partial value */
    olen = n - 1;
    CHECK_INT(sl_zip_inflate(z, clen, out, &olen), -ENOBUFS);
    /* cut short: not a whole stream */
    olen = n;
    CHECK_INT(sl_zip_inflate(z, clen / 2, out, &olen), -EINVAL);
    /* trailing garbage after a whole stream */
    {
        char *z2 = malloc(clen + 3);
        memcpy(z2, z, clen);
        memcpy(z2 + clen, "xyz", 3);
        olen = n;
        CHECK_INT(sl_zip_inflate(z2, clen + 3, out, &olen), -EINVAL);
        free(z2);
    }
    /* corrupt header */
    z[0] ^= 0x55;
    olen = n;
    CHECK_INT(sl_zip_inflate(z, clen, out, &olen), -EINVAL);
    free(src);
    free(z);
    free(out);
}

static void test_small_and_bad_args(void)
{
    char z[64], out[16];
    size_t clen = sizeof z, olen = sizeof out;
    CHECK_INT(sl_zip_deflate("", 0, z, &clen, 0), 0); /* empty input, level out of range: default */
    CHECK_INT(sl_zip_inflate(z, clen, out, &olen), 0);
    CHECK_INT(olen, 0);
    clen = 2;
    CHECK_INT(sl_zip_deflate("hello hello hello", 17, z, &clen, 9), -ENOBUFS);
    olen = sizeof out;
    CHECK_INT(sl_zip_inflate("not zlib at all", 15, out, &olen), -EINVAL);
    CHECK_INT(sl_zip_inflate(NULL, 0, out, &olen), -EINVAL);
    CHECK_INT(sl_zip_deflate("x", 1, z, NULL, 6), -EINVAL);
}

int main(void)
{
    test_roundtrip();
    test_small_and_bad_args();
    return sl_test_done();
}
