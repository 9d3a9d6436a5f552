#include "common/buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int sl_buf_reserve(sl_buf_t *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    char *p = realloc(b->base, cap);
    if (p == NULL)
        return -ENOMEM;
    b->base = p;
    b->cap = cap;
    return 0;
}

int sl_buf_append(sl_buf_t *b, const void *p, size_t n)
{
    if (sl_buf_reserve(b, n) != 0)
        return -ENOMEM;
    if (n)
        memcpy(b->base + b->len, p, n);
    b->len += n;
    return 0;
}

int sl_buf_appends(sl_buf_t *b, const char *s)
{
    return sl_buf_append(b, s, strlen(s));
}

void sl_buf_consume(sl_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->base, b->base + n, b->len - n);
    b->len -= n;
}

size_t sl_fmt_u64(char *dst, uint64_t v)
{
    char tmp[21];
    size_t n = 0;
    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    for (size_t i = 0; i < n; i++)
        dst[i] = tmp[n - 1 - i];
    return n;
}

void sl_buf_free(sl_buf_t *b)
{
    free(b->base);
    b->base = NULL;
    b->len = b->cap = 0;
}

size_t sl_iov_gather(char *dst, const uv_buf_t *bufs, unsigned n, size_t skip)
{
    size_t off = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(dst + off, bufs[i].base + skip, len - skip);
        off += len - skip;
        skip = 0;
    }
    return off;
}
