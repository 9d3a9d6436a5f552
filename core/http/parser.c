/* Request parsing: llhttp callbacks that copy the request line, headers and body of one request into its
 * sl_req_t (the read buffer moves, so nothing may point into it), enforcing the size limits on the way, then
 * checking the head as a whole (request target, Host, framing) once it is complete. A callback that rejects
 * the request sets conn->err_status (400, 413, 414, 431, 501, 503, 505) and req->reject_why (the message
 * sent) for the answer. */
#include "http/parser.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "http/conn.h"
#include "http/path.h"
#include "server/settings.h"

static llhttp_settings_t parser_settings;
static int parser_settings_ready;

/* Refuses the request: status is what the client gets, why (a static string) its message and the log's (kept
 * in the request: llhttp replaces its own error reason once a callback fails). */
static int reject(sl_conn_t *c, int status, const char *why)
{
    c->err_status = status;
    if (c->req)
        c->req->reject_why = why;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    sl_conn_t *c = p->data;
    sl_worker_t *w = c->w;
    c->req = sl_req_new(c, ((uint64_t)w->id << 48) | ++w->next_req_id);
    if (c->req == NULL)
        return reject(c, 503, "out of memory");
    sl__conn_timer(c, TIMER_HEADER, sl_settings.header_timeout);
    return 0;
}

static int head_append(sl_conn_t *c, const char *at, size_t len)
{
    sl_req_t *r = c->req;
    if (r->head.len + len > sl_settings.max_header_size)
        return reject(c, 431, "request header fields too large");
    if (sl_buf_append(&r->head, at, len) != 0)
        return reject(c, 503, "out of memory");
    return 0;
}

/* Trailer fields (after a chunked body) are dropped, as nginx does when proxying: the upstream gets the body
 * in its own framing, and no plugin reads trailers. They still count against max_header_size. */
static int trailer_bytes(sl_conn_t *c, size_t len)
{
    sl_req_t *r = c->req;
    r->trailer_len += len;
    if (r->head.len + r->trailer_len > sl_settings.max_header_size)
        return reject(c, 431, "trailer fields too large");
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    sl_conn_t *c = p->data;
    if (c->req->url_len + len > sl_settings.max_url_length)
        return reject(c, 414, "request URI too long");
    c->req->url_len += (uint32_t)len;
    return head_append(c, at, len);
}

/* Headers are collected as offsets into r->head until it stops growing (core/http/hdrs.h), turned into
 * pointers in on_headers_complete. */
#define MAX_HEADERS 256

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    if (r->headers) /* after the head: a trailer field */
        return trailer_bytes(c, len);
    /* RFC 9112 5.1: whitespace before the colon is a 400 (llhttp takes "Name :"): an upstream that read
     * "Transfer-Encoding : chunked" as the real thing would frame the body another way than we did */
    if (memchr(at, ' ', len))
        return reject(c, 400, "whitespace in a header name");
    if (sl__hdrs_name(&r->hdrs, r->head.len, len, MAX_HEADERS) != 0)
        return reject(c, 431, "request header fields too large");
    return head_append(c, at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    if (r->headers)
        return trailer_bytes(c, len);
    /* a value before any name: llhttp reports ": v" with an empty name, but not a promise */
    if (sl__hdrs_value(&r->hdrs, r->head.len, len) != 0)
        return reject(c, 400, "empty header name");
    return head_append(c, at, len);
}

/* RFC 9112 2.3: only HTTP/1.0 and 1.1 are spoken here. llhttp takes 0.9 and 2.0 too (a "HTTP/2.0" request
 * would be served as 1.x) and refuses other versions as malformed: each byte of the version is checked as it
 * comes (the span may arrive in pieces), and anything but "1.0" or "1.1" is answered 505, in 1.1, then the
 * connection closed. */
static int version_refused(sl_conn_t *c)
{
    c->req->http_minor = 1;
    return reject(c, 505, "HTTP version not supported");
}

static int on_version(llhttp_t *p, const char *at, size_t len)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    for (size_t i = 0; i < len; i++) {
        unsigned k = r->version_len++;
        if (k > 2 || (k < 2 && at[i] != "1."[k]) || (k == 2 && at[i] != '0' && at[i] != '1'))
            return version_refused(c);
    }
    return 0;
}

/* True when normalising cannot change the path (no escape, no "//", no dot segment): the common case, which
 * is left where it is. */
static int path_plain(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '%' || p[i] == '\0' || (p[i] == '/' && i + 1 < n && (p[i + 1] == '/' || p[i + 1] == '.')))
            return 0;
    return 1;
}

static const char *path_error(int rc)
{
    return rc == -ERANGE   ? "path climbs above the root"
           : rc == -EPERM  ? "encoded slash (%2F) in the path"
           : rc == -EILSEQ ? "NUL in the path"
                           : "malformed path";
}

/* Refuses a request target, saying which in the log (escaped there, as every log line is); the access log
 * line of the 400 shows the raw target as its path. */
static int bad_target(sl_conn_t *c, sl_req_t *r, const char *why)
{
    r->path = r->head.base + r->url_off; /* the head does not grow once refused */
    r->path_len = r->url_len;
    sl_log(SL_LOG_INFO, "client %s: bad request target (%s): %.*s", r->client_ip, why,
           (int)(r->url_len < 512 ? r->url_len : 512), r->head.base + r->url_off);
    return reject(c, 400, why);
}

/* Where the request target's parts are in r->head (offsets: the head may still grow). */
typedef struct target {
    size_t path_off, path_len, query_off, query_len, host_off, host_len;
    const char *fixed_path; /* "/" or "*" when the target has no path bytes of its own, else NULL */
} target_t;

/* The request target (RFC 9112 3.2): origin-form, absolute-form ("http[s]://authority/path": the authority
 * replaces the Host header, for routing and upstream) or "*" for OPTIONS; anything else is a 400. The path is
 * normalised once here (core/http/path.c): routes, plugins, the upstream and the access log all see only the
 * result. A normalised path that differs is written after the head, so a rejected request keeps its raw
 * target for the log. Works on offsets: it may grow r->head. Returns 0, or HPE_USER with the status to answer
 * set. */
static int request_target(sl_conn_t *c, sl_req_t *r, target_t *t)
{
    sl_header_t *host = NULL;
    int nhost = 0;
    for (uint32_t i = 0; i < r->hdrs.n; i++) {
        sl_header_t *h = &r->hdrs.list[i];
        if (h->name_len == 4 && strncasecmp(r->head.base + sl__hdrs_name_off(h), "host", 4) == 0 &&
            nhost++ == 0)
            host = h;
    }
    /* RFC 9112 3.2: an HTTP/1.1 request carries exactly one Host; two could route one way and be read another
     * way upstream */
    if (nhost > 1 || (nhost == 0 && r->http_minor >= 1))
        return reject(c, 400, nhost ? "more than one Host header" : "no Host header");
    if (host) {
        int hl =
            host->value ? sl_authority_check(r->head.base + sl__hdrs_value_off(host), host->value_len) : -1;
        if (hl < 0)
            return reject(c, 400, "invalid Host header");
        t->host_off = sl__hdrs_value_off(host);
        t->host_len = (size_t)hl;
    }
    if (r->method_len == 7 && memcmp(r->method, "CONNECT", 7) == 0)
        return reject(c, 501, "CONNECT is not supported");
    const char *url = r->head.base + r->url_off;
    size_t len = r->url_len, start = 0;
    t->fixed_path = NULL;
    if (len == 0) /* llhttp never gives an empty target; nothing below may read url[0] of one */
        return bad_target(c, r, "empty request target");
    /* llhttp lets a tab through, which an upstream may take for the end of the target; a fragment is never
     * part of a request target (RFC 9112 3.2) */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= ' ' || url[i] == 0x7f || url[i] == '#')
            return bad_target(c, r,
                              url[i] == '#' ? "fragment in the request target"
                                            : "control character in the request target");
    if (url[0] != '/') {
        size_t ao, al;
        if (len == 1 && url[0] == '*' && r->method_len == 7 && memcmp(r->method, "OPTIONS", 7) == 0) {
            t->fixed_path = "*";
            t->query_len = 0;
            return 0;
        }
        if (sl_target_absolute(url, len, &ao, &al, &start) != 0)
            return bad_target(c, r, "request target is not a path or an http(s) URL");
        t->host_off = r->url_off + ao;
        t->host_len = (size_t)sl_authority_check(url + ao, al);
        if (host) {
            sl__hdrs_set_value(host, t->host_off, al);
        } else { /* HTTP/1.0 without Host: the upstream learns the host the client asked for all the same */
            size_t name_off = r->head.len;
            if (sl_buf_append(&r->head, "Host", 4) != 0 ||
                sl__hdrs_add(&r->hdrs, name_off, 4, t->host_off, al, MAX_HEADERS) != 0)
                return reject(c, 503, "out of memory");
        }
    }
    url = r->head.base + r->url_off; /* the head may have moved */
    const char *q = memchr(url + start, '?', len - start);
    size_t plen = (size_t)((q ? q : url + len) - (url + start));
    t->query_off = q ? (size_t)(q + 1 - r->head.base) : 0;
    t->query_len = q ? (size_t)(url + len - q - 1) : 0;
    if (plen == 0) {
        t->fixed_path = "/"; /* "http://host" or "http://host?q" */
        return 0;
    }
    t->path_off = r->url_off + start;
    t->path_len = plen;
    if (path_plain(url + start, plen))
        return 0;
    if (sl_buf_reserve(&r->head, plen) != 0)
        return reject(c, 503, "out of memory");
    unsigned flags = sl_settings.allow_encoded_slashes ? SL_PATH_KEEP_ENCODED_SLASH : 0;
    size_t n;
    int rc = sl_path_normalize(r->head.base + t->path_off, plen, r->head.base + r->head.len, &n, flags);
    if (rc != 0)
        return bad_target(c, r, path_error(rc));
    t->path_off = r->head.len;
    t->path_len = n;
    r->head.len += n;
    return 0;
}

static void arm_body_timer(sl_conn_t *c, sl_req_t *r)
{
    /* body_timeout bounds each gap; body_deadline the whole body, however steadily it trickles */
    double s = sl_settings.body_timeout;
    if (r->body_deadline) {
        uint64_t now = uv_now(&c->w->loop);
        double left = now >= r->body_deadline ? 0.001 : (double)(r->body_deadline - now) / 1000;
        if (s <= 0 || left < s)
            s = left;
    }
    sl__conn_timer(c, TIMER_BODY, s);
}

static int on_headers_complete(llhttp_t *p)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    if (r->head.len == 0)
        return reject(c, 400, "empty request");
    const char *m = llhttp_method_name(llhttp_get_method(p));
    r->method = m;
    r->method_len = (uint32_t)strlen(m);
    r->http_minor = llhttp_get_http_minor(p);
    r->keepalive = llhttp_should_keep_alive(p);
    if (r->version_len != 3) /* an HTTP/0.9 request line (no version at all) */
        return version_refused(c);
    /* A field name is at least one character (llhttp takes ": v"); a value's trailing whitespace is not part
     * of it (llhttp keeps it) */
    for (uint32_t i = 0; i < r->hdrs.n; i++) {
        sl_header_t *h = &r->hdrs.list[i];
        const char *v = h->value ? r->head.base + sl__hdrs_value_off(h) : NULL;
        if (h->name_len == 0)
            return reject(c, 400, "empty header name");
        while (h->value && h->value_len > 0 && (v[h->value_len - 1] == ' ' || v[h->value_len - 1] == '\t'))
            h->value_len--;
    }
    target_t t = {0};
    if (request_target(c, r, &t) != 0)
        return HPE_USER;
    /* the head is complete: offsets become pointers */
    sl__hdrs_finish(&r->hdrs, r->head.base);
    r->headers = r->hdrs.list;
    r->nheaders = r->hdrs.n;
    /* RFC 9112 6.1: chunked is the only transfer coding understood; llhttp takes "gzip, chunked", whose body
     * would go upstream still gzip-coded and without a word about it */
    const sl_header_t *te =
        (p->flags & F_TRANSFER_ENCODING) ? sl_req_header(r, "transfer-encoding", 17) : NULL;
    if (te && r->http_minor == 0) /* RFC 9112 6.1: framing an HTTP/1.0 hop cannot be trusted to agree on */
        return reject(c, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (te && !(te->value_len == 7 && strncasecmp(te->value, "chunked", 7) == 0))
        return reject(c, 501, "transfer coding not supported");
    r->path = t.fixed_path ? t.fixed_path : r->head.base + t.path_off;
    r->path_len = t.fixed_path ? 1 : (uint32_t)t.path_len;
    r->query = t.query_len ? r->head.base + t.query_off : "";
    r->query_len = (uint32_t)t.query_len;
    r->host = t.host_len ? r->head.base + t.host_off : "";
    r->host_len = (uint32_t)t.host_len;
    if (p->content_length > sl_settings.max_body_size && (p->flags & F_CONTENT_LENGTH))
        return reject(c, 413, "request body too large");
    r->body_expected = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length
                       : (p->flags & F_CHUNKED)      ? -1
                                                     : 0;
    const sl_header_t *expect = sl_req_header(r, "expect", 6);
    if (expect && expect->value_len == 12 && strncasecmp(expect->value, "100-continue", 12) == 0 &&
        r->http_minor >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        sl__conn_write(c, &b, 1);
    }
    r->body_deadline = sl_settings.body_deadline > 0
                           ? uv_now(&c->w->loop) + (uint64_t)(sl_settings.body_deadline * 1000)
                           : 0;
    arm_body_timer(c, r);
    return 0;
}

/* A chunk that would take the body past max_body_size is refused when its size line arrives, not once its
 * bytes did (nor after a body timeout, for a size no client could send) */
static int on_chunk_header(llhttp_t *p)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    if (p->content_length > sl_settings.max_body_size - r->body_received)
        return reject(c, 413, "request body too large");
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    /* counted apart from bodybuf: a streamed body leaves it as it goes */
    if (r->body_received + len > sl_settings.max_body_size)
        return reject(c, 413, "request body too large");
    r->body_received += len;
    if (!r->body_discard && sl_buf_append(&r->bodybuf, at, len) != 0) /* a dropped rest is only counted */
        return reject(c, 503, "out of memory");
    arm_body_timer(c, r);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    if (!r->body_streamed) {
        r->body = r->bodybuf.base ? r->bodybuf.base : "";
        r->body_len = (uint32_t)r->bodybuf.len; /* max_body_size is capped below 4 GiB at start */
    }
    return HPE_PAUSED; /* one request at a time; see the comment at the top */
}

const llhttp_settings_t *sl__http_parser_settings(void)
{
    if (parser_settings_ready)
        return &parser_settings;
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_version = on_version;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_chunk_header = on_chunk_header;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
    parser_settings_ready = 1;
    return &parser_settings;
}
