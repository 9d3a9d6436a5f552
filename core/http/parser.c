/* Request parsing: llhttp callbacks that copy the request line, headers and body of one request into its
 * sl_req_t (the read buffer moves, so nothing may point into it), enforcing the size limits on the way. A
 * callback that rejects the request sets conn->err_status (413, 414, 431, 400, 503) for the answer. */
#include "http/parser.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/conn.h"
#include "server/settings.h"

static llhttp_settings_t parser_settings;
static int parser_settings_ready;

static int on_message_begin(llhttp_t *p)
{
    sl_conn_t *c = p->data;
    sl_worker_t *w = c->w;
    c->req = sl_req_new(c, ((uint64_t)w->id << 48) | ++w->next_req_id);
    if (c->req == NULL) {
        c->err_status = 503;
        return HPE_USER;
    }
    c->in_header_value = 0;
    sl__conn_timer(c, TIMER_HEADER, sl_settings.header_timeout);
    return 0;
}

static int head_append(sl_conn_t *c, const char *at, size_t len)
{
    sl_req_t *r = c->req;
    if (r->head.len + len > sl_settings.max_header_size) {
        c->err_status = 431;
        return HPE_USER;
    }
    if (sl_buf_append(&r->head, at, len) != 0) {
        c->err_status = 503;
        return HPE_USER;
    }
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    sl_conn_t *c = p->data;
    if (c->req->url_len + len > sl_settings.max_url_length) {
        c->err_status = 414;
        return HPE_USER;
    }
    c->req->url_len += (uint32_t)len;
    return head_append(c, at, len);
}

static int new_header(sl_req_t *r)
{
    if (r->nheaders == r->hdr_cap) {
        uint32_t cap = r->hdr_cap ? r->hdr_cap * 2 : 16;
        sl_header_t *h = realloc(r->hdr_alloc, cap * sizeof(*h));
        if (h == NULL)
            return -1;
        r->hdr_alloc = h;
        r->hdr_cap = cap;
    }
    sl_header_t *h = &r->hdr_alloc[r->nheaders++];
    /* offsets until the head stops growing; turned into pointers in on_headers_complete */
    h->name = (const char *)(uintptr_t)r->head.len;
    h->name_len = 0;
    h->value = NULL;
    h->value_len = 0;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    if (r->nheaders == 0 || c->in_header_value) {
        if (r->nheaders >= 256 || new_header(r) != 0) {
            c->err_status = 431;
            return HPE_USER;
        }
        c->in_header_value = 0;
    }
    r->hdr_alloc[r->nheaders - 1].name_len += (uint32_t)len;
    return head_append(c, at, len);
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    sl_header_t *h = &r->hdr_alloc[r->nheaders - 1];
    if (!c->in_header_value) {
        c->in_header_value = 1;
        h->value = (const char *)(uintptr_t)r->head.len;
    }
    h->value_len += (uint32_t)len;
    return head_append(c, at, len);
}

static void split_url(sl_req_t *r)
{
    const char *url = r->head.base + r->url_off;
    const char *q = memchr(url, '?', r->url_len);
    r->path = url;
    r->path_len = q ? (uint32_t)(q - url) : r->url_len;
    r->query = q ? q + 1 : "";
    r->query_len = q ? (uint32_t)(r->url_len - r->path_len - 1) : 0;
}

static int on_headers_complete(llhttp_t *p)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    if (r->head.len == 0) {
        c->err_status = 400;
        return HPE_USER;
    }
    for (uint32_t i = 0; i < r->nheaders; i++) {
        sl_header_t *h = &r->hdr_alloc[i];
        h->name = r->head.base + (uintptr_t)h->name;
        h->value = h->value ? r->head.base + (uintptr_t)h->value : "";
    }
    r->headers = r->hdr_alloc;
    split_url(r);
    const char *m = llhttp_method_name(llhttp_get_method(p));
    r->method = m;
    r->method_len = (uint32_t)strlen(m);
    r->http_minor = llhttp_get_http_minor(p);
    r->keepalive = llhttp_should_keep_alive(p);
    /* RFC 9112 3.2: an HTTP/1.1 request carries exactly one Host; two could route one way and be read another
     * way upstream */
    const sl_header_t *host = NULL;
    int nhost = 0;
    for (uint32_t i = 0; i < r->nheaders; i++)
        if (r->headers[i].name_len == 4 && strncasecmp(r->headers[i].name, "host", 4) == 0 && nhost++ == 0)
            host = &r->headers[i];
    if (nhost > 1 || (nhost == 0 && r->http_minor >= 1)) {
        c->err_status = 400;
        return HPE_USER;
    }
    if (host) {
        const char *v = host->value, *end = v + host->value_len;
        const char *stop = v[0] == '[' ? memchr(v, ']', host->value_len) : memchr(v, ':', host->value_len);
        if (v[0] == '[' && stop)
            stop++; /* keep the brackets of an IPv6 literal, drop the port */
        r->host = v;
        r->host_len = (uint32_t)((stop && stop < end ? stop : end) - v);
    }
    if (p->content_length > sl_settings.max_body_size && (p->flags & F_CONTENT_LENGTH)) {
        c->err_status = 413;
        return HPE_USER;
    }
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
    sl__conn_timer(c, TIMER_BODY, sl_settings.body_timeout);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    sl_conn_t *c = p->data;
    sl_req_t *r = c->req;
    /* counted apart from bodybuf: a streamed body leaves it as it goes */
    if (r->body_received + len > sl_settings.max_body_size) {
        c->err_status = 413;
        return HPE_USER;
    }
    r->body_received += len;
    if (!r->body_discard && sl_buf_append(&r->bodybuf, at, len) != 0) { /* a dropped rest is only counted */
        c->err_status = 503;
        return HPE_USER;
    }
    sl__conn_timer(c, TIMER_BODY, sl_settings.body_timeout);
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
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;
    parser_settings_ready = 1;
    return &parser_settings;
}
