/* Harness: chunked transfer coding through both HTTP parsers. A fixed head (a chunked request to the request
 * parser, or a chunked response to the upstream response parsers) comes first, so the fuzzer spends its time
 * in chunk sizes, extensions, data, trailers and what follows them (a pipelined request, a second response).
 *
 * Input: options byte (bit 0: response instead of request; bit 1: tight limits for requests / HEAD for
 * responses), cut plan (fuzz.h), then the bytes after the head.
 * Invariants: those of fuzz_request / fuzz_response, plus: when the parser accepts the body and a strict
 * reference decoder (below) accepts the same bytes, both decode the same body. */
#include <stdlib.h>
#include <string.h>

#include "http_drive.h"

static const char req_head[] = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
static const char resp_head[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* RFC 9112 7.1, strictly: 1*HEXDIG [chunk-ext] CRLF data CRLF ..., last-chunk, trailer lines, CRLF. Returns 0
 * with the body in out, or -1 when the bytes do not start with a complete chunked body. */
static int ref_dechunk(const uint8_t *p, size_t n, sl_buf_t *out)
{
    size_t i = 0;
    for (;;) {
        uint64_t size = 0;
        int digits = 0;
        while (i < n && hexval(p[i]) >= 0) {
            if (size >> 56)
                return -1;
            size = size * 16 + (uint64_t)hexval(p[i++]);
            digits++;
        }
        if (digits == 0)
            return -1;
        while (i < n && p[i] != '\r' && p[i] != '\n')
            i++;
        if (i + 1 >= n || p[i] != '\r' || p[i + 1] != '\n')
            return -1;
        i += 2;
        if (size == 0)
            break;
        if (n - i < size || n - i - size < 2)
            return -1;
        sl_buf_append(out, p + i, size);
        i += size;
        if (p[i] != '\r' || p[i + 1] != '\n')
            return -1;
        i += 2;
    }
    for (;;) { /* trailer section, then the empty line */
        size_t s = i;
        while (i < n && p[i] != '\r' && p[i] != '\n')
            i++;
        if (i + 1 >= n || p[i] != '\r' || p[i + 1] != '\n')
            return -1;
        i += 2;
        if (i - s == 2)
            return 0;
    }
}

static void same_body(const sl_buf_t *got, const uint8_t *p, size_t n)
{
    sl_buf_t ref = {0};
    if (ref_dechunk(p, n, &ref) == 0 &&
        (ref.len != got->len || (ref.len && memcmp(ref.base, got->base, ref.len) != 0)))
        fz_fail("chunked: the parser decoded %zu body bytes, the reference decoder %zu", got->len, ref.len);
    sl_buf_free(&ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in_t in = {data, size};
    uint8_t opts = fz_byte(&in);
    fz_cuts_t cuts, whole = {.n = 0};
    fz_cuts_read(&in, &cuts);
    int response = opts & 1;
    const char *head = response ? resp_head : req_head;
    size_t hlen = strlen(head);
    uint8_t *buf = malloc(hlen + in.n + 1);
    memcpy(buf, head, hlen);
    memcpy(buf + hlen, in.p, in.n);
    size_t len = hlen + in.n;
    if (!response) {
        fz_req_result_t a = {0}, b = {0};
        fz_req_run(buf, len, &whole, opts & 2, &a);
        fz_req_run(buf, len, &cuts, opts & 2, &b);
        fz_req_same(&a, &b);
        if (a.nreq > 0)
            same_body(&a.body0, in.p, in.n);
        sl_buf_free(&a.body0);
        sl_buf_free(&b.body0);
    } else {
        int is_head = (opts & 2) != 0;
        fz_resp_result_t ref, r;
        fz_resp_run(FZ_RESP_FILTER, is_head, 1, buf, len, &whole, &ref);
        if (ref.ok && !is_head)
            same_body(&ref.body, in.p, in.n);
        static const int modes[] = {FZ_RESP_FILTER, FZ_RESP_PASS, FZ_RESP_CLIENT_STREAM};
        for (unsigned i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
            if (modes[i] == FZ_RESP_PASS && ref.odd_headers && fz_known("upstream-empty-header-name"))
                continue;
            fz_resp_run(modes[i], is_head, 1, buf, len, &cuts, &r);
            fz_resp_same(&ref, &r, "chunked response, cut");
            sl_buf_free(&r.body);
        }
        sl_buf_free(&ref.body);
    }
    free(buf);
    return 0;
}
