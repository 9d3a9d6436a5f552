/* The response heads of an upstream exchange: headers collected, heads checked (see uphdrs.h). Shared by the
 * proxy (proxy_parse.c) and the client (client.c), so both refuse the same responses. */
#include "upstream/uphdrs.h"

#include <stdlib.h>
#include <string.h>

/* The cap counts the headers of the interim responses before this one: 1xx heads are bounded too. */
static int add_bytes(sl_uphdrs_t *h, const char *at, size_t len, size_t max)
{
    if (h->prior + h->bytes.len + len > max) {
        h->why = h->prior ? "response headers (with those of interim responses) larger than 64 KiB"
                          : "response headers larger than 64 KiB";
        return -1;
    }
    if (sl_buf_append(&h->bytes, at, len) != 0) {
        h->why = "out of memory";
        return -1;
    }
    return 0;
}

/* Trailer fields (after a chunked body) come through the same callbacks once the head's offsets became
 * pointers: storing them would move the bytes under those pointers. They are dropped, as nginx drops them,
 * within the head's cap. */
static int trailer(sl_uphdrs_t *h, size_t len, size_t max)
{
    h->trailer += len;
    if (h->trailer > max) {
        h->why = "response trailers larger than 64 KiB";
        return -1;
    }
    return 0;
}

int sl__uphdrs_field(sl_uphdrs_t *h, const char *at, size_t len, size_t max)
{
    if (h->done)
        return trailer(h, len, max);
    h->value_done = 0;
    if (h->n == 0 || h->in_value) {
        if (h->n == h->cap) {
            uint32_t cap = h->cap ? h->cap * 2 : 16;
            sl_header_t *l = cap > 512 ? NULL : realloc(h->list, cap * sizeof(*l));
            if (l == NULL) {
                h->why = cap > 512 ? "more than 512 response headers" : "out of memory";
                return -1;
            }
            h->list = l;
            h->cap = cap;
        }
        sl_header_t *x = &h->list[h->n++];
        x->name = (const char *)(uintptr_t)h->bytes.len;
        x->name_len = 0;
        x->value = NULL;
        x->value_len = 0;
        h->in_value = 0;
    }
    h->list[h->n - 1].name_len += (uint32_t)len;
    return add_bytes(h, at, len, max);
}

int sl__uphdrs_value(sl_uphdrs_t *h, const char *at, size_t len, size_t max)
{
    if (h->done)
        return trailer(h, len, max);
    /* a field needs a name (RFC 9110 5.1: a token); without one, its value's offset would also be 0, the
     * "no value" mark, and the value could not be found */
    if (h->n == 0 || h->value_done || h->list[h->n - 1].name_len == 0) {
        h->why = "response header field without a name";
        return -1;
    }
    sl_header_t *x = &h->list[h->n - 1];
    if (!h->in_value) {
        h->in_value = 1;
        x->value = (const char *)(uintptr_t)h->bytes.len;
    }
    x->value_len += (uint32_t)len;
    return add_bytes(h, at, len, max);
}

int sl__uphdrs_value_done(sl_uphdrs_t *h)
{
    h->value_done = 1;
    return 0;
}

void sl__uphdrs_finish(sl_uphdrs_t *h)
{
    h->done = 1;
    for (uint32_t i = 0; i < h->n; i++) {
        sl_header_t *x = &h->list[i];
        x->name = h->bytes.base + (uintptr_t)x->name;
        x->value = x->value ? h->bytes.base + (uintptr_t)x->value : "";
    }
}

int sl__uphdrs_head_done(sl_uphdrs_t *h, const llhttp_t *hp)
{
    int status = hp->status_code;
    if (hp->http_major != 1 || hp->http_minor > 1)
        h->why = "response version is not HTTP/1.0 or HTTP/1.1";
    else if (status < 100 || status > 599)
        h->why = "response status outside 100-599";
    else if (status >= 200)
        return 0;
    else if (++h->ninterim > SL_UP_MAX_INTERIM)
        h->why = "more than 16 interim (1xx) responses";
    if (h->why)
        return -1;
    h->prior += h->bytes.len;
    return 1;
}

void sl__uphdrs_reset(sl_uphdrs_t *h)
{
    h->n = 0;
    h->bytes.len = 0;
    h->in_value = 0;
    h->done = 0;
    h->trailer = 0;
    h->value_done = 0;
}

void sl__uphdrs_restart(sl_uphdrs_t *h)
{
    sl__uphdrs_reset(h);
    h->ninterim = 0;
    h->prior = 0;
    h->why = NULL;
}

void sl__uphdrs_free(sl_uphdrs_t *h)
{
    sl_buf_free(&h->bytes);
    free(h->list);
    memset(h, 0, sizeof(*h));
}
