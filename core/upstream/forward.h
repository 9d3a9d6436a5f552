#ifndef SL_FORWARD_H
#define SL_FORWARD_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "http/request.h"

/** Whether the comma-separated token list v (a Connection header value) names the header name,
 *  case-insensitively: such headers are hop-by-hop too (RFC 9110 7.6.1). */
int sl__http_token_listed(const char *v, size_t vlen, const char *name, size_t nlen);
/* How the forwarded body is framed (sl__forward_headers). */
enum { SL_FWD_NO_BODY = 0, SL_FWD_LENGTH = 1, SL_FWD_CHUNKED = 2 };

/** Appends the client's headers as they go upstream, then the blank line: hop-by-hop ones (and those the
 *  Connection header names), Host, Content-Length, Expect and the names in skip ("\n"-separated, lower case:
 *  headers Lua sets itself) are left out; X-Forwarded-For gets the client's address, X-Forwarded-Proto is
 * set, framing adds Content-Length: body_len or Transfer-Encoding: chunked. Returns 0 or -ENOMEM. */
int sl__forward_headers(sl_buf_t *out, const sl_req_t *r, const char *skip, size_t skiplen, uint64_t body_len,
                        int framing, int https);

#endif
