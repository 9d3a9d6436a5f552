/* zlib over caller-owned buffers: one call compresses or uncompresses a whole value (no streaming state is
 * kept between calls, so a value is never half-written). */
#include "common/zip.h"

#include <errno.h>
#include <limits.h>
#include <zlib.h>

size_t sl_zip_bound(size_t n)
{
    return (size_t)compressBound((uLong)n);
}

int sl_zip_deflate(const char *src, size_t n, char *dst, size_t *dlen, int level)
{
    uLongf out;
    int rc;
    if (!dlen || (n && !src) || (*dlen && !dst) || n > ULONG_MAX || *dlen > ULONG_MAX)
        return -EINVAL;
    if (level < 1 || level > 9)
        level = 6;
    out = (uLongf)*dlen;
    rc = compress2((Bytef *)dst, &out, (const Bytef *)src, (uLong)n, level);
    if (rc == Z_BUF_ERROR)
        return -ENOBUFS;
    if (rc != Z_OK)
        return -EINVAL;
    *dlen = (size_t)out;
    return 0;
}

int sl_zip_inflate(const char *src, size_t n, char *dst, size_t *dlen)
{
    uLongf out;
    uLong in;
    int rc;
    if (!dlen || !src || !n || (*dlen && !dst) || n > ULONG_MAX || *dlen > ULONG_MAX)
        return -EINVAL;
    out = (uLongf)*dlen;
    in = (uLong)n;
    /* uncompress2 reports how much input it used: a stream followed by trailing bytes is not a whole value */
    rc = uncompress2((Bytef *)dst, &out, (const Bytef *)src, &in);
    if (rc == Z_BUF_ERROR && out == (uLongf)*dlen)
        return -ENOBUFS; /* the output filled dst: more was coming */
    if (rc != Z_OK || in != (uLong)n)
        return -EINVAL; /* corrupt, cut short (Z_BUF_ERROR with room left), or trailing garbage */
    *dlen = (size_t)out;
    return 0;
}
