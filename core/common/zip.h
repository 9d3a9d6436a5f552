#ifndef SL_ZIP_H
#define SL_ZIP_H

#include <stddef.h>

/* zlib (deflate, zlib framing) over caller-owned buffers, for values kept in memory or sent to memcached (the
 * AI response cache compresses large entries). Lua calls these through FFI. */

/** The largest output sl_zip_deflate can write for n input bytes (zlib's compressBound). */
size_t sl_zip_bound(size_t n);

/** Compresses src[0..n) into dst (capacity *dlen; sl_zip_bound(n) always suffices) at level (1..9, out of
 * range: 6); on success *dlen is the compressed length. 0, -ENOBUFS when dst is too small, -EINVAL otherwise.
 */
int sl_zip_deflate(const char *src, size_t n, char *dst, size_t *dlen, int level);

/** Uncompresses src[0..n) into dst (capacity *dlen); on success *dlen is the length written. 0, -ENOBUFS when
 * the output does not fit in *dlen bytes, -EINVAL when src is not a whole zlib stream (corrupt or cut). */
int sl_zip_inflate(const char *src, size_t n, char *dst, size_t *dlen);

#endif
