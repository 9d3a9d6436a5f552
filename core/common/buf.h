#ifndef SL_BUF_H
#define SL_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/** A growable byte buffer; the owner frees it with sl_buf_free. */
typedef struct sl_buf {
    char *base;
    size_t len;
    size_t cap;
} sl_buf_t;

/** Makes room for extra more bytes after len; returns 0 or -ENOMEM (buffer unchanged). */
int sl_buf_reserve(sl_buf_t *b, size_t extra);
/** Appends n bytes; returns 0 or -ENOMEM. */
int sl_buf_append(sl_buf_t *b, const void *p, size_t n);
/** Appends a NUL-terminated string; returns 0 or -ENOMEM. */
int sl_buf_appends(sl_buf_t *b, const char *s);
/** Drops the first n bytes, keeping the rest. */
void sl_buf_consume(sl_buf_t *b, size_t n);
/** Writes v in decimal at dst (at least 21 bytes of room), no NUL; returns the length. For hot paths where
 *  printf costs more than the rest of the work. */
size_t sl_fmt_u64(char *dst, uint64_t v);
/** Copies what follows the first skip bytes of bufs[0..n) to dst (room for all of it); returns the bytes
 * copied. For the part of a vectored write that a try-write left unsent. */
size_t sl_iov_gather(char *dst, const uv_buf_t *bufs, unsigned n, size_t skip);
/** Frees the memory and empties the buffer. */
void sl_buf_free(sl_buf_t *b);

#endif
