/* Head checks before the wire (core/http/field.c). */
#include <errno.h>

#include "http/field.h"
#include "test.h"

/* The number of lines a builder would have written: one per "\r\n" up to the blank line. */
static uint32_t lines(const char *s)
{
    uint32_t n = 0;
    for (const char *p = s; (p = strstr(p, "\r\n")) != NULL && p != s && p[-1] != '\n'; p += 2)
        n++;
    return n;
}

static int fields(const char *s, int flags, sl_field_err_t *e)
{
    return sl_http_check_fields(s, strlen(s), lines(s), flags, e);
}

static int req(const char *s, int flags, sl_field_err_t *e)
{
    const char *eol = strstr(s, "\r\n");
    return sl_http_check_request_head(s, strlen(s), eol ? lines(eol + 2) : 0, flags, e);
}

static const char *why(const sl_field_err_t *e)
{
    static char out[200];
    return sl_http_field_error(e, out, sizeof(out));
}

static void test_fields(void)
{
    sl_field_err_t e;
    CHECK_INT(fields("", 0, &e), 0);
    CHECK_INT(fields("X-A: 1\r\n", 0, &e), 0);
    CHECK_INT(fields("X-A: 1\r\nx-b:\r\nc:\tv\x80\xff z\r\n", 0, &e), 0);
    CHECK_INT(fields("!#$%&'*+-.^_`|~09azAZ: v\r\n", 0, &e), 0);

    /* CR, LF, NUL in a value: named in the log, the value never shown */
    CHECK_INT(fields("X-A: 1\r\nX-Inj: a\r\nX-Injected: 1\r\n\r\nGET /x HTTP/1.1\r\n", 0, &e), -EINVAL);
    CHECK_INT(fields("X-Inj: a\rb\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"X-Inj\": value has CR, LF or NUL");
    CHECK_INT(fields("X-Inj: a\nb\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"X-Inj\": value has CR, LF or NUL");
    CHECK_INT(sl_http_check_fields("X-Nul: a\0b\r\n", 12, 1, 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"X-Nul\": value has CR, LF or NUL");
    CHECK_INT(fields("X-A: 1", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"X-A\": line not ended by CRLF");
    CHECK_INT(fields("X-A: 1\r", 0, &e), -EINVAL);

    /* names */
    CHECK_INT(fields("X A: 1\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"X A\": name is not a token");
    CHECK_INT(fields(": 1\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"\": empty name");
    CHECK_INT(fields("X-A 1\r\n", 0, &e), -EINVAL);
    CHECK_INT(fields("X\"A\": 1\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"X\\x22A\\x22\": name is not a token");
    CHECK_INT(fields("X\x01: 1\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"X\\x01\": name is not a token");
    CHECK_INT(fields("X\xc3\xa9: 1\r\n", 0, &e), -EINVAL);
    CHECK_INT(fields("\tX: 1\r\n", 0, &e), -EINVAL); /* obs-fold */
    CHECK_INT(fields("X: 1\r\n x\r\n", 0, &e), -EINVAL);

    /* the blank line: only at the end, and only where the block ends the head */
    CHECK_INT(fields("X: 1\r\n\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"\": blank line inside the head");
    CHECK_INT(fields("X: 1\r\n\r\n", SL_FIELDS_ENDED, &e), 0);
    CHECK_INT(fields("\r\n", SL_FIELDS_ENDED, &e), 0);
    CHECK_INT(fields("X: 1\r\n", SL_FIELDS_ENDED, &e), -EINVAL);
    CHECK_INT(fields("X: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n", SL_FIELDS_ENDED, &e), -EINVAL);
    CHECK_INT(fields("\r\nX: 1\r\n", 0, &e), -EINVAL);

    /* CR LF in a value followed by a well-formed line: only the count shows it */
    const char *inj = "X-A: 1\r\nX-B: v\r\nSet-Cookie: a=b\r\n";
    CHECK_INT(sl_http_check_fields(inj, strlen(inj), 3, 0, &e), 0);
    CHECK_INT(sl_http_check_fields(inj, strlen(inj), 2, 0, &e), -EINVAL);
    CHECK_STR(why(&e),
              "header lines \"X-A\", \"X-B\", \"Set-Cookie\": more lines than headers were set (a value "
              "holds CR LF)");
    CHECK_INT(sl_http_check_fields(inj, strlen(inj), 4, 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header lines \"X-A\", \"X-B\", \"Set-Cookie\": fewer lines than headers were set");
    const char *ended = "Host: a\r\nX: v\r\nY: z\r\n\r\n";
    CHECK_INT(sl_http_check_fields(ended, strlen(ended), 2, SL_FIELDS_ENDED, &e), -EINVAL);
    CHECK_INT(sl_http_check_fields(ended, strlen(ended), 3, SL_FIELDS_ENDED, &e), 0);
    CHECK_INT(sl_http_check_fields("", 0, 1, 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header lines : fewer lines than headers were set");

    /* a long name is cut in the log */
    char big[300];
    memset(big, 'n', sizeof(big));
    memcpy(big + 200, " : v\r\n", 6);
    CHECK_INT(sl_http_check_fields(big, 206, 1, 0, &e), -EINVAL);
    CHECK(strstr(why(&e), "nnn...\": name is not a token") != NULL);
    char tiny[8];
    CHECK(strlen(sl_http_field_error(&e, tiny, sizeof(tiny))) == 7);
    char small[40];
    CHECK(strlen(sl_http_field_error(&e, small, sizeof(small))) <= 39);
}

static void test_request_head(void)
{
    sl_field_err_t e;
    CHECK_INT(req("GET / HTTP/1.1\r\nHost: a\r\n", 0, &e), 0);
    CHECK_INT(req("POST /v1/x?y=%20 HTTP/1.0\r\nHost: a\r\nContent-Length: 0\r\n\r\n", SL_FIELDS_ENDED, &e),
              0);
    CHECK_INT(req("GET / HTTP/1.1\r\n", 0, &e), 0);
    CHECK_INT(req("GET / HTTP/1.1\r\nHost: a\r\n", SL_FIELDS_ENDED, &e), -EINVAL);

    /* the request line */
    CHECK_INT(req("GET /a b HTTP/1.1\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "request line \"GET /a b HTTP/1.1\\x0d\": not ended by HTTP/1.0 or HTTP/1.1 and CRLF");
    CHECK_INT(req("GET /a\rX: 1 HTTP/1.1\r\n", 0, &e), -EINVAL);
    CHECK_INT(req("GET /a\x7f HTTP/1.1\r\n", 0, &e), -EINVAL);
    CHECK_INT(req("G T / HTTP/1.1\r\n", 0, &e), -EINVAL);
    CHECK_INT(req(" / HTTP/1.1\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "request line \" / HTTP/1.1\\x0d\": method is not a token");
    CHECK_INT(req("GET  HTTP/1.1\r\n", 0, &e), -EINVAL);
    CHECK_INT(req("GET / HTTP/2.0\r\n", 0, &e), -EINVAL);
    CHECK_INT(req("GET / HTTP/1.1\n", 0, &e), -EINVAL);
    CHECK_INT(req("GET / HTTP/1.1", 0, &e), -EINVAL);
    CHECK_INT(req("GET /", 0, &e), -EINVAL);
    CHECK_INT(req("", 0, &e), -EINVAL);

    /* the rest of the head: the Host a config put CR/LF in */
    CHECK_INT(
        req("GET / HTTP/1.1\r\nHost: evil\r\nX-Injected: 1\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: y\r\n", 0,
            &e),
        -EINVAL);
    CHECK_STR(why(&e), "header \"\": blank line inside the head");
    CHECK_INT(req("GET / HTTP/1.1\r\nHost: evil\rX: 1\r\n", 0, &e), -EINVAL);
    CHECK_STR(why(&e), "header \"Host\": value has CR, LF or NUL");
    const char *host = "GET / HTTP/1.1\r\nHost: evil\r\nX-Injected: 1\r\nX-Set: a\r\n";
    CHECK_INT(sl_http_check_request_head(host, strlen(host), 2, 0, &e), -EINVAL);
    CHECK_STR(why(&e),
              "header lines \"Host\", \"X-Injected\", \"X-Set\": more lines than headers were set (a "
              "value holds CR LF)");
}

static void test_host(void)
{
    CHECK_INT(sl_http_host_ok("example.com", 11), 1);
    CHECK_INT(sl_http_host_ok("::1", 3), 1);
    CHECK_INT(sl_http_host_ok("", 0), 0);
    CHECK_INT(sl_http_host_ok("a b", 3), 0);
    CHECK_INT(sl_http_host_ok("a\r\nb", 4), 0);
    CHECK_INT(sl_http_host_ok("a\x7f", 2), 0);
    char big[256];
    memset(big, 'a', sizeof(big));
    CHECK_INT(sl_http_host_ok(big, 255), 1);
    CHECK_INT(sl_http_host_ok(big, 256), 0);
}

int main(void)
{
    test_fields();
    test_request_head();
    test_host();
    return sl_test_done();
}
