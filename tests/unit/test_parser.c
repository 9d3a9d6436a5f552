/* The llhttp glue of server connections (core/http/parser.c): requests, pipelining, chunked bodies, limits.
 */
#include <stdlib.h>
#include <string.h>

#include "http/conn.h"
#include "http/parser.h"
#include "server/settings.h"
#include "test.h"

static sl_worker_t w;
static sl_conn_t c;

static void conn_reset(void)
{
    if (c.req)
        sl_req_release(c.req);
    if (c.w) { /* the timer is linked into the loop: close it properly before reusing its memory */
        uv_close((uv_handle_t *)&c.timer, NULL);
        uv_run(&w.loop, UV_RUN_NOWAIT);
    }
    memset(&c, 0, sizeof(c));
    c.w = &w;
    uv_timer_init(&w.loop, &c.timer);
    c.timer.data = &c;
    llhttp_init(&c.parser, HTTP_REQUEST, sl__http_parser_settings());
    c.parser.data = &c;
}

/* Feeds data; returns the llhttp result and sets *used to the bytes consumed up to a pause. */
static llhttp_errno_t feed(const char *data, size_t len, size_t *used)
{
    llhttp_errno_t err = llhttp_execute(&c.parser, data, len);
    *used = err == HPE_PAUSED ? (size_t)(llhttp_get_error_pos(&c.parser) - data) : len;
    if (err == HPE_PAUSED)
        llhttp_resume(&c.parser);
    return err;
}

static int header_is(const sl_req_t *r, const char *name, const char *value)
{
    const sl_header_t *h = sl_req_header(r, name, (uint32_t)strlen(name));
    return h && h->value_len == strlen(value) && memcmp(h->value, value, h->value_len) == 0;
}

static void test_pipelined(void)
{
    static const char in[] = "GET /v1/models?x=1&y=2 HTTP/1.1\r\nHost: Api.Example.com:8080\r\nX-A: one\r\n"
                             "x-a: two\r\n\r\n"
                             "POST /v1/chat HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    size_t used;
    conn_reset();
    CHECK_INT(feed(in, sizeof(in) - 1, &used), HPE_PAUSED);
    sl_req_t *r = c.req;
    CHECK(r->method_len == 3 && memcmp(r->method, "GET", 3) == 0);
    CHECK(r->path_len == 10 && memcmp(r->path, "/v1/models", 10) == 0);
    CHECK(r->query_len == 7 && memcmp(r->query, "x=1&y=2", 7) == 0);
    CHECK(r->host_len == 15 && memcmp(r->host, "Api.Example.com", 15) == 0);
    CHECK_INT(r->nheaders, 3);
    CHECK(header_is(r, "x-a", "one")); /* the first of repeated headers */
    CHECK_INT(r->keepalive, 1);
    CHECK_INT(r->http_minor, 1);
    CHECK_INT(r->body_len, 0);
    sl_req_release(r);
    c.req = NULL;
    size_t off = used;
    CHECK_INT(feed(in + off, sizeof(in) - 1 - off, &used), HPE_PAUSED);
    r = c.req;
    CHECK(r->method_len == 4 && memcmp(r->method, "POST", 4) == 0);
    CHECK(r->body_len == 5 && memcmp(r->body, "hello", 5) == 0);
    CHECK_INT(off + used, sizeof(in) - 1);
}

static void test_split_reads_and_chunked(void)
{
    static const char in[] = "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                             "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    size_t used, total = sizeof(in) - 1;
    conn_reset();
    llhttp_errno_t err = HPE_OK;
    for (size_t i = 0; i < total && err == HPE_OK; i++) /* one byte at a time: nothing may point into reads */
        err = feed(in + i, 1, &used);
    CHECK_INT(err, HPE_PAUSED);
    CHECK(c.req->body_len == 11 && memcmp(c.req->body, "hello world", 11) == 0);
    CHECK(c.req->path_len == 2 && memcmp(c.req->path, "/c", 2) == 0);
    CHECK(header_is(c.req, "Transfer-Encoding", "chunked"));
}

static void expect_reject(const char *in, int status)
{
    size_t used;
    conn_reset();
    llhttp_errno_t err = feed(in, strlen(in), &used);
    CHECK(err != HPE_OK && err != HPE_PAUSED);
    CHECK_INT(c.err_status ? c.err_status : 400, status);
}

static void test_limits(void)
{
    sl_settings.max_header_size = 256;
    sl_settings.max_url_length = 64;
    sl_settings.max_body_size = 8;
    char big[1024];
    snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX-Big: %0300d\r\n\r\n", 0);
    expect_reject(big, 431);
    snprintf(big, sizeof(big), "GET /%0100d HTTP/1.1\r\n\r\n", 0);
    expect_reject(big, 414);
    expect_reject("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n", 413);
    expect_reject(
        "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n123456789\r\n0\r\n\r\n", 413);
    expect_reject("GET / HTTP/1.1\r\n\r\n", 400);                       /* no Host */
    expect_reject("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400); /* two */
    expect_reject("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400);
    expect_reject("NOT A REQUEST\r\n\r\n", 400);
    expect_reject("GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    sl_settings_defaults();
}

static void test_http10(void)
{
    size_t used;
    conn_reset();
    static const char in[] = "GET / HTTP/1.0\r\n\r\n";
    CHECK_INT(feed(in, sizeof(in) - 1, &used), HPE_PAUSED);
    CHECK_INT(c.req->keepalive, 0);
    CHECK_INT(c.req->http_minor, 0);
    CHECK_INT(c.req->host_len, 0);
    conn_reset();
    static const char v6[] = "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n";
    CHECK_INT(feed(v6, sizeof(v6) - 1, &used), HPE_PAUSED);
    CHECK(c.req->host_len == 5 && memcmp(c.req->host, "[::1]", 5) == 0);
}

/* Trailer fields after a chunked body were written through header offsets that had become pointers (a crash):
 * they are dropped, and bounded by max_header_size. */
static void test_trailers(void)
{
    size_t used;
    conn_reset();
    static const char in[] = "POST /t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
                             "3\r\nabc\r\n0\r\nX-T: 1\r\nX-U: two\r\n\r\n";
    CHECK_INT(feed(in, sizeof(in) - 1, &used), HPE_PAUSED);
    CHECK_INT(used, sizeof(in) - 1);
    CHECK_INT(c.req->nheaders, 3);
    CHECK(header_is(c.req, "x-a", "1"));
    CHECK(sl_req_header(c.req, "x-t", 3) == NULL);
    CHECK(c.req->body_len == 3 && memcmp(c.req->body, "abc", 3) == 0);
    conn_reset();
    char big[2048];
    sl_settings.max_header_size = 256;
    snprintf(big, sizeof(big),
             "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: %0300d\r\n\r\n", 0);
    expect_reject(big, 431);
    sl_settings_defaults();
}

static void expect_target(const char *in, const char *path, const char *query, const char *host)
{
    size_t used;
    conn_reset();
    llhttp_errno_t err = feed(in, strlen(in), &used);
    CHECK_INT(err, HPE_PAUSED);
    if (err != HPE_PAUSED) {
        fprintf(stderr, "  for %s\n", in);
        return;
    }
    sl_req_t *r = c.req;
    CHECK(r->path_len == strlen(path) && memcmp(r->path, path, r->path_len) == 0);
    CHECK(r->query_len == strlen(query) && memcmp(r->query, query, r->query_len) == 0);
    CHECK(r->host_len == strlen(host) && memcmp(r->host, host, r->host_len) == 0);
    if (r->path_len != strlen(path) || memcmp(r->path, path, r->path_len) != 0)
        fprintf(stderr, "  path \"%.*s\" for %s\n", (int)r->path_len, r->path, in);
}

static void test_targets(void)
{
    expect_target("GET /pub/../private/x?a=/../b HTTP/1.1\r\nHost: h\r\n\r\n", "/private/x", "a=/../b", "h");
    expect_target("GET /pub/%2e%2E/private//x HTTP/1.1\r\nHost: h\r\n\r\n", "/private/x", "", "h");
    expect_target("GET /%7Ea%3f HTTP/1.1\r\nHost: h:81\r\n\r\n", "/~a%3F", "", "h");
    expect_target("GET http://Api.Example:8080/a/./b?q HTTP/1.1\r\nHost: other\r\n\r\n", "/a/b", "q",
                  "Api.Example");
    CHECK(header_is(c.req, "host", "Api.Example:8080")); /* the authority replaces Host */
    expect_target("GET https://h?x=1 HTTP/1.1\r\nHost: h\r\n\r\n", "/", "x=1", "h");
    expect_target("GET http://[::1]:9/ HTTP/1.0\r\n\r\n", "/", "", "[::1]");
    CHECK(header_is(c.req, "host", "[::1]:9")); /* HTTP/1.0 without Host gets one */
    expect_target("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", "*", "", "h");
    expect_reject("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_reject("GET /../x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_reject("GET /a%00 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_reject("GET /a%2Fb HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_reject("GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_reject("GET /a#f HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_reject("GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_reject("GET http://u@h/x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_reject("GET x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    sl_settings.allow_encoded_slashes = 1;
    expect_target("GET /a%2fb/../c HTTP/1.1\r\nHost: h\r\n\r\n", "/c", "", "h");
    expect_target("GET /a/%2e%2e%2fb HTTP/1.1\r\nHost: h\r\n\r\n", "/a/..%2Fb", "", "h");
    sl_settings_defaults();
    /* a refused path keeps its raw bytes (the normalised copy goes after the head) */
    size_t used;
    conn_reset();
    static const char raw[] = "GET /a/%2e%2e/../x HTTP/1.1\r\nHost: h\r\n\r\n";
    CHECK(feed(raw, sizeof(raw) - 1, &used) != HPE_PAUSED);
    CHECK(c.req->url_len == 14 && memcmp(c.req->head.base + c.req->url_off, "/a/%2e%2e/../x", 14) == 0);
}

static void test_host_and_version(void)
{
    expect_reject("GET / HTTP/1.1\r\nHost:\r\n\r\n", 400);
    expect_reject("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    expect_reject("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
    expect_reject("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n", 400);
    expect_reject("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400);
    expect_reject("GET http://h/ HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    expect_reject("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
    CHECK_INT(c.req->http_minor, 1); /* answered in 1.1 */
    expect_reject("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 505);
    expect_reject("GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505);
    expect_reject("GET / HTTP/3.1\r\nHost: h\r\n\r\n", 505);
    expect_reject("GET /\r\nHost: h\r\n\r\n", 505); /* HTTP/0.9: no version */
    /* the version split over reads */
    size_t used;
    conn_reset();
    CHECK_INT(feed("GET / HTTP/1.", 13, &used), HPE_OK);
    CHECK(feed("2\r\nHost: h\r\n\r\n", 15, &used) != HPE_OK && c.err_status == 505);
    conn_reset();
    CHECK_INT(feed("GET / HTTP/1.", 13, &used), HPE_OK);
    CHECK_INT(feed("1\r\nHost: h\r\n\r\n", 15, &used), HPE_PAUSED);
    /* header syntax llhttp lets through */
    expect_reject("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400);
    expect_reject("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n", 400);
    expect_reject("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501);
    expect_reject("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 501);
    expect_reject("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", 400);
    expect_reject("GET / HTTP/1.1\r\n: v\r\nHost: h\r\n\r\n", 400);
    expect_reject("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
    expect_reject("GET / HTTP/1.1\r\nHost: a..b\r\n\r\n", 400);
    expect_reject("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_reject("GET /a?b\tc HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    expect_target("GET / HTTP/1.1\r\nHost: h:80 \t\r\nX-A: a \r\n  b\t\r\n\r\n", "/", "", "h");
    CHECK(header_is(c.req, "host", "h:80"));
    CHECK(header_is(c.req, "x-a", "a   b")); /* obs-fold: the line break is gone, its whitespace stays */
    expect_target("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n", "/", "", "h");
}

static void test_chunk_size_and_deadline(void)
{
    sl_settings.max_body_size = 100;
    /* refused at the size line, before any of its bytes */
    expect_reject("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n", 413);
    expect_reject("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n",
                  413);
    expect_reject("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n32\r\n"
                  "01234567890123456789012345678901234567890123456789\r\n33\r\n",
                  413);
    size_t used;
    conn_reset();
    static const char ok[] = "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n";
    CHECK_INT(feed(ok, sizeof(ok) - 1, &used), HPE_OK); /* exactly max_body_size is fine */
    /* the body timer never runs past the body's deadline */
    sl_settings.body_deadline = 0.5;
    conn_reset();
    CHECK_INT(feed(ok, sizeof(ok) - 1, &used), HPE_OK);
    CHECK_INT(c.timer_kind, TIMER_BODY);
    CHECK(c.req->body_deadline > 0 && uv_timer_get_due_in(&c.timer) <= 500);
    sl_settings.body_deadline = 0;
    conn_reset();
    CHECK_INT(feed(ok, sizeof(ok) - 1, &used), HPE_OK);
    CHECK(c.req->body_deadline == 0 && uv_timer_get_due_in(&c.timer) > 29000);
    sl_settings_defaults();
}

int main(void)
{
    sl_settings_defaults();
    uv_loop_init(&w.loop);
    test_pipelined();
    test_split_reads_and_chunked();
    test_limits();
    test_http10();
    test_trailers();
    test_targets();
    test_host_and_version();
    test_chunk_size_and_deadline();
    if (c.req)
        sl_req_release(c.req);
    uv_close((uv_handle_t *)&c.timer, NULL);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    uv_loop_close(&w.loop);
    return sl_test_done();
}
