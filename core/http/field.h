/* Checks of the head bytes a writer is about to put on the wire: the request heads Lua builds for the
 * upstream proxy (sl_proxy_start) and the HTTP client (sl_http_start), and the response header lines given to
 * sl_resp_send / sl_resp_start. Names and values come from the config, the Admin API and plugins; one with
 * CR, LF or NUL in it (or a name that is not a token) would add header lines, or a whole second request, to
 * what the peer reads. One pass over the bytes, no allocation: it runs for every request. */
#ifndef SL_FIELD_H
#define SL_FIELD_H

#include <stddef.h>
#include <stdint.h>

/* sl_http_check_fields flags */
enum {
    SL_FIELDS_ENDED = 1, /* the block ends with the blank line that ends the head (and nothing follows it) */
};

/** Where a check failed, for the log: the offending header name (or request line) and what is wrong. */
typedef struct sl_field_err {
    const char *kind; /* "header", "header lines" (then at is the block), "request line" (or the caller's) */
    const char *at;   /* the header's name, the block, or the request line */
    size_t len;       /* its length */
    const char *why;  /* static text: "value has CR, LF or NUL", ... */
} sl_field_err_t;

/** Checks header lines "Name: value\r\n"...: every name an RFC 9110 token, no CR, LF or NUL in a value, every
 *  line ended by CRLF, and exactly nfields lines: the number of headers the block's builder wrote (a value
 *  with CR LF in it makes lines that each look fine, only their count gives them away). A blank line only at
 *  the very end, and there with SL_FIELDS_ENDED only (then it is required). Returns 0, or -EINVAL with *err
 *  filled. */
int sl_http_check_fields(const char *p, size_t len, uint32_t nfields, int flags, sl_field_err_t *err);
/** Checks a request head: the request line (token method, a target without spaces or controls, HTTP/1.0 or
 *  HTTP/1.1) followed by nfields header lines as sl_http_check_fields. Returns 0, or -EINVAL with *err
 *  filled. */
int sl_http_check_request_head(const char *p, size_t len, uint32_t nfields, int flags, sl_field_err_t *err);
/** Whether p[0, len) is a non-empty RFC 9110 token (a valid field name): 1 or 0. */
int sl_http_token(const char *p, size_t len);
/** Whether a host name may go into a request line or a Host header: 1 to 255 bytes, no spaces or controls. */
int sl_http_host_ok(const char *host, size_t len);
/** Describes err for a log line into out (always terminated): `header "x-a": value has CR, LF or NUL`, or for
 *  a count that does not match `header lines "x-a", "X-Injected": more lines than...`; bytes that are not
 *  printable escaped as \xNN, names cut at 64 bytes. Returns out. */
const char *sl_http_field_error(const sl_field_err_t *err, char *out, size_t cap);

#endif
