#ifndef SL_RESPONSE_H
#define SL_RESPONSE_H

#include <stddef.h>
#include <stdint.h>

#include "http/request.h"

/* These are called from Lua through FFI: none of them calls back into Lua. They return 0, or a negative code:
 * SL_ERR_GONE when the client is gone, SL_ERR_STATE when the call does not fit the response's state. */
#define SL_ERR_GONE (-1)
#define SL_ERR_STATE (-2)
#define SL_ERR_NOMEM (-3)
#define SL_ERR_HEADER                                                                                        \
    (-4) /* a header line was refused (core/http/field.h): a 500 with an error id went instead */

#define SL_RESP_HIGH_WATER (1024 * 1024)
#define SL_RESP_LOW_WATER (256 * 1024)

/** Sends a whole response; headers are nfields "Name: value\r\n" lines without framing headers
 *  (Content-Length, Transfer-Encoding, Connection), which are added here. Header lines that fail
 *  sl_http_check_fields (a name that is not a token, CR, LF or NUL in a value, another number of lines than
 *  nfields) are refused here and in sl_resp_start: the error log names the header, the client gets a 500
 *  with the request's id instead, and SL_ERR_HEADER is returned. */
int sl_resp_send(sl_req_t *r, int status, const char *headers, size_t hlen, uint32_t nfields,
                 const char *body, size_t blen);
/** Starts a streamed response; content_length < 0 means unknown (chunked for HTTP/1.1, close for 1.0). */
int sl_resp_start(sl_req_t *r, int status, const char *headers, size_t hlen, uint32_t nfields,
                  int64_t content_length);
/** Sends part of a streamed response body. */
int sl_resp_write(sl_req_t *r, const char *data, size_t len);
/** Ends a streamed response. */
int sl_resp_finish(sl_req_t *r);
/** Bytes queued to the client and not yet written (for back-pressure in Lua). */
size_t sl_resp_pending(const sl_req_t *r);
/** Back-pressure for Lua writers: returns 0 when less than SL_RESP_HIGH_WATER bytes wait for the client;
 *  otherwise 1, and the coroutine must yield: it is resumed once the backlog is under SL_RESP_LOW_WATER (or
 * the client is gone). SL_ERR_GONE when the client is gone. */
int sl_resp_wait_drain(sl_req_t *r);
/** Cuts the response short: the connection is closed (no final chunk) once the coroutine yields or ends, so
 *  the client can tell the body is incomplete. */
int sl_resp_abort(sl_req_t *r);
/** Sends a JSON error {"error":{"message","type","code"}} with Connection: close. */
int sl_resp_send_error(sl_req_t *r, int status, const char *message);
/** Returns the reason phrase for a status ("Unknown" for others). */
const char *sl_status_text(int status);
/** Formats the status line and fixed headers (Date, Server) into out; returns the length. */
size_t sl__resp_head_prefix(char *out, size_t cap, int http_minor, int status);

#endif
