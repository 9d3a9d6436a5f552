#ifndef SL_FORWARD_H
#define SL_FORWARD_H

#include <stddef.h>

#include "common/buf.h"
#include "http/request.h"

/** Whether the comma-separated token list v (a Connection header value) names the header name,
 *  case-insensitively: such headers are hop-by-hop too (RFC 9110 7.6.1). */
int sl__http_token_listed(const char *v, size_t vlen, const char *name, size_t nlen);
/** Appends the client's headers as they go upstream, then the blank line: hop-by-hop ones (and those the
 *  Connection header names), Host, Content-Length, Expect and the names in skip ("\n"-separated, lower case:
 *  headers Lua sets itself) are left out; X-Forwarded-For gets the client's address, X-Forwarded-Proto is set,
 *  Content-Length is body_len when with_length. Returns 0 or -ENOMEM. */
int sl__forward_headers(sl_buf_t *out, const sl_req_t *r, const char *skip, size_t skiplen, size_t body_len,
                        int with_length, int https);

#endif
