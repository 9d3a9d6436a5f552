/* Response framing toward the client. Lua supplies status, header lines and body; framing is decided here so
 * that a plugin can never produce a response whose length disagrees with its headers. */
#include "http/response.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "http/conn.h"
#include "http/field.h"

const char *sl_status_text(int status)
{
    /* a table reads best one line per status */
    /* clang-format off */
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
    /* clang-format on */
}

static const char *http_date(void)
{
    static __thread char buf[40];
    static __thread time_t last;
    time_t now = time(NULL);
    if (now != last) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(buf, sizeof(buf), "%a, %d %b %Y %H:%M:%S GMT", &tm);
        last = now;
    }
    return buf;
}

size_t sl__resp_head_prefix(char *out, size_t cap, int http_minor, int status)
{
    /* built by hand: it runs for every response, and printf would cost more than the rest of the head */
    const char *text = sl_status_text(status), *date = http_date();
    size_t tlen = strlen(text), dlen = strlen(date);
    if (cap < 64 + tlen + dlen || status < 100 || status > 999)
        return 0;
    size_t n = 0;
    memcpy(out, http_minor ? "HTTP/1.1 " : "HTTP/1.0 ", 9);
    n = 9;
    n += sl_fmt_u64(out + n, (uint64_t)status);
    out[n++] = ' ';
    memcpy(out + n, text, tlen);
    n += tlen;
    static const char mid[] = "\r\nServer: sluice\r\nDate: ";
    memcpy(out + n, mid, sizeof(mid) - 1);
    n += sizeof(mid) - 1;
    memcpy(out + n, date, dlen);
    n += dlen;
    out[n++] = '\r';
    out[n++] = '\n';
    out[n] = '\0';
    return n;
}

static int content_length_line(char *out, uint64_t len)
{
    memcpy(out, "Content-Length: ", 16);
    size_t n = 16 + sl_fmt_u64(out + 16, len);
    out[n++] = '\r';
    out[n++] = '\n';
    return (int)n;
}

static int bodyless(const sl_req_t *r, int status)
{
    return status == 204 || status == 304 || (status >= 100 && status < 200) ||
           (r->method_len == 4 && memcmp(r->method, "HEAD", 4) == 0);
}

static int write_head(sl_req_t *r, int status, const char *headers, size_t hlen, const char *framing,
                      size_t flen)
{
    char pre[256];
    size_t plen = sl__resp_head_prefix(pre, sizeof(pre), r->http_minor, status);
    const char *conn_hdr =
        r->keepalive ? (r->http_minor ? "" : "Connection: keep-alive\r\n") : "Connection: close\r\n";
    uv_buf_t bufs[5] = {uv_buf_init(pre, (unsigned)plen), uv_buf_init((char *)headers, (unsigned)hlen),
                        uv_buf_init((char *)framing, (unsigned)flen),
                        uv_buf_init((char *)conn_hdr, (unsigned)strlen(conn_hdr)), uv_buf_init("\r\n", 2)};
    r->status = status;
    r->resp_started = 1;
    size_t total = plen + hlen + flen + bufs[3].len + 2;
    r->bytes_sent += total;
    return sl__conn_write(r->conn, bufs, 5) == 0 ? 0 : SL_ERR_GONE;
}

/* Header lines that must not reach the wire (core/http/field.h): the error log names the header, the client
 * gets a 500 with the request's id instead. */
static int refused(sl_req_t *r, const char *headers, size_t hlen, uint32_t nfields)
{
    sl_field_err_t e;
    if (sl_http_check_fields(headers, hlen, nfields, 0, &e) == 0)
        return 0;
    char what[200], msg[64];
    unsigned long long id = (unsigned long long)r->id;
    sl_log(SL_LOG_ERROR, "request %016llx: response head not sent: %s", id,
           sl_http_field_error(&e, what, sizeof(what)));
    snprintf(msg, sizeof(msg), "internal error (id %016llx)", id);
    sl_resp_send_error(r, 500, msg);
    return 1;
}

/* Why a head cannot start now (an SL_ERR_*), or 0: one already started, the client is gone, or a header line
 * is refused (then the client already has its 500). */
static int unsendable(sl_req_t *r, const char *headers, size_t hlen, uint32_t nfields)
{
    if (r->resp_started)
        return SL_ERR_STATE;
    if (r->conn == NULL || r->client_gone)
        return SL_ERR_GONE;
    if (refused(r, headers, hlen, nfields))
        return SL_ERR_HEADER;
    return 0;
}

int sl_resp_send(sl_req_t *r, int status, const char *headers, size_t hlen, uint32_t nfields,
                 const char *body, size_t blen)
{
    int rc = unsendable(r, headers, hlen, nfields);
    if (rc != 0)
        return rc;
    char framing[64] = "";
    int flen = 0;
    int nobody = bodyless(r, status);
    if (!(status == 204 || status == 304 || status < 200))
        flen = content_length_line(framing, blen);
    sl_conn_t *c = r->conn;
    sl__conn_cork(c);
    rc = write_head(r, status, headers, hlen, framing, (size_t)flen);
    if (rc == 0 && !nobody && blen > 0) {
        uv_buf_t b = uv_buf_init((char *)body, (unsigned)blen);
        rc = sl__conn_write(c, &b, 1) == 0 ? 0 : SL_ERR_GONE;
        r->bytes_sent += blen;
    }
    if (sl__conn_uncork(c) != 0)
        rc = SL_ERR_GONE;
    r->resp_done = 1;
    return rc;
}

int sl_resp_start(sl_req_t *r, int status, const char *headers, size_t hlen, uint32_t nfields,
                  int64_t content_length)
{
    int rc = unsendable(r, headers, hlen, nfields);
    if (rc != 0)
        return rc;
    char framing[64] = "";
    int flen = 0;
    if (bodyless(r, status)) {
        if (content_length >= 0 && status != 204 && status != 304)
            flen = content_length_line(framing, (uint64_t)content_length);
    } else if (content_length >= 0) {
        flen = content_length_line(framing, (uint64_t)content_length);
    } else if (r->http_minor >= 1) {
        flen = snprintf(framing, sizeof(framing), "Transfer-Encoding: chunked\r\n");
        r->chunked_resp = 1;
    } else {
        r->keepalive = 0; /* HTTP/1.0 without a length: the end of the body is the end of the connection */
    }
    return write_head(r, status, headers, hlen, framing, (size_t)flen);
}

int sl_resp_write(sl_req_t *r, const char *data, size_t len)
{
    if (!r->resp_started || r->resp_done)
        return SL_ERR_STATE;
    if (r->conn == NULL || r->client_gone)
        return SL_ERR_GONE;
    if (len == 0 || bodyless(r, r->status))
        return 0;
    r->bytes_sent += len;
    if (!r->chunked_resp) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        return sl__conn_write(r->conn, &b, 1) == 0 ? 0 : SL_ERR_GONE;
    }
    char size[24];
    int n = snprintf(size, sizeof(size), "%zx\r\n", len);
    uv_buf_t b[3] = {uv_buf_init(size, (unsigned)n), uv_buf_init((char *)data, (unsigned)len),
                     uv_buf_init("\r\n", 2)};
    return sl__conn_write(r->conn, b, 3) == 0 ? 0 : SL_ERR_GONE;
}

int sl_resp_finish(sl_req_t *r)
{
    if (!r->resp_started || r->resp_done)
        return SL_ERR_STATE;
    r->resp_done = 1;
    if (r->conn == NULL || r->client_gone)
        return SL_ERR_GONE;
    if (r->chunked_resp) {
        uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
        return sl__conn_write(r->conn, &b, 1) == 0 ? 0 : SL_ERR_GONE;
    }
    return 0;
}

int sl_resp_wait_drain(sl_req_t *r)
{
    sl_conn_t *c = r->conn;
    if (c == NULL || r->client_gone || c->closing)
        return SL_ERR_GONE;
    if (c->write_pending + c->wbuf.len < SL_RESP_HIGH_WATER)
        return 0;
    if (c->drain_wait == NULL) {
        c->drain_wait = r;
        r->refs++; /* the connection may close (and drop its own reference) before the client catches up */
    }
    r->drain_waiting = 1;
    return 1;
}

int sl_resp_abort(sl_req_t *r)
{
    r->abort = 1;
    r->resp_done = 1;
    return 0;
}

size_t sl_resp_pending(const sl_req_t *r)
{
    return r->conn ? r->conn->write_pending : 0;
}

int sl_resp_send_error(sl_req_t *r, int status, const char *message)
{
    char body[512];
    const char *type = status >= 500 ? "server_error" : "invalid_request_error";
    int n = snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"code\":%d}}",
                     message, type, status);
    static const char hdr[] = "Content-Type: application/json\r\n";
    r->keepalive = 0;
    return sl_resp_send(r, status, hdr, sizeof(hdr) - 1, 1, body, (size_t)n);
}
