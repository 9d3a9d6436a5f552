/* The response heads of an upstream exchange: headers collected (core/http/hdrs.c), heads checked (see
 * uphdrs.h). Used by the exchange (exchange.c) for the proxy and the client alike, so both refuse the same
 * responses. */
#include "upstream/uphdrs.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http/field.h"

#define MAX_HEADERS 512

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
    int rc = sl__hdrs_name(&h->list, h->bytes.len, len, MAX_HEADERS);
    if (rc != 0) {
        h->why = rc == -E2BIG ? "more than 512 response headers" : "out of memory";
        return -1;
    }
    return add_bytes(h, at, len, max);
}

int sl__uphdrs_value(sl_uphdrs_t *h, const char *at, size_t len, size_t max)
{
    if (h->done)
        return trailer(h, len, max);
    /* a field needs a name (RFC 9110 5.1: a token): llhttp takes ": value", and a value after a whole field
     * with no name before it would run on into that field's value */
    sl_hdrs_t *l = &h->list;
    if (l->n == 0 || h->value_done || l->list[l->n - 1].name_len == 0) {
        h->why = "response header field without a name";
        return -1;
    }
    sl__hdrs_value(l, h->bytes.len, len);
    return add_bytes(h, at, len, max);
}

int sl__uphdrs_value_done(sl_uphdrs_t *h)
{
    h->value_done = 1;
    h->list.in_value = 1; /* the next name starts a new field, also after an empty value */
    return 0;
}

void sl__uphdrs_finish(sl_uphdrs_t *h)
{
    sl__hdrs_finish(&h->list, h->bytes.base);
    h->done = 1;
}

int sl__up_parser_eof(llhttp_t *hp)
{
    static const char none[1];
    if (llhttp_get_errno(hp) == HPE_OK && llhttp_execute(hp, none, 0) != HPE_OK &&
        llhttp_get_errno(hp) != HPE_PAUSED)
        return 0;
    llhttp_errno_t e = llhttp_finish(hp);
    return e == HPE_OK || e == HPE_PAUSED; /* our on_complete callbacks pause at the end of a message */
}

int sl__uphdrs_head_done(sl_uphdrs_t *h, const llhttp_t *hp)
{
    int status = hp->status_code;
    /* llhttp lets some names through that no field name may be (a space inside, for one): what the gateway
     * would forward, or refuse to write for the client, it refuses here, as the upstream's fault */
    for (uint32_t i = 0; i < h->list.n; i++)
        if (!sl_http_token(h->bytes.base + (uintptr_t)h->list.list[i].name, h->list.list[i].name_len)) {
            h->why = "response header name is not a token";
            return -1;
        }
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
    sl__hdrs_reset(&h->list);
    h->bytes.len = 0;
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
    sl__hdrs_free(&h->list);
    memset(h, 0, sizeof(*h));
}
