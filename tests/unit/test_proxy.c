/* The proxy of a client request (core/upstream/proxy.c over the exchange, exchange.c) without sockets: the
 * client connection runs over memory (tests/support/memconn.c), the upstream connections are fakes behind the
 * sl_upnet_t seam (this file), and a stub handler plays proxy.lua: it starts the call, then (FILTER) takes
 * the head and each chunk. Covers PASS and FILTER, pooling, the replay of a stale kept-alive connection,
 * interim responses, refused heads, timeouts, a client that leaves, and back-pressure both ways. */
#include <stdlib.h>
#include <string.h>

#include "http/conn.h"
#include "http/response.h"
#include "memconn.h"
#include "server/settings.h"
#include "test.h"
#include "fakeup.h"
#include "upstream/pool.h"
#include "upstream/proxy.h"

static sl_worker_t W;

/* the fake upstream connections (tests/support/fakeup.c) */
#define up sl_fakeup
#define up_ready sl_fakeup_ready
#define up_written sl_fakeup_written
#define up_send sl_fakeup_send
#define up_reset sl_fakeup_reset

static void up_sends(const char *s)
{
    up_send(s, strlen(s));
}

/* ---- the stub handler: proxy.lua's part ---- */

static int pmode, pflags;
static const char *phead = "GET /x HTTP/1.1\r\nHost: up.test\r\n";
static const char *pbody = "";
static sl_proxy_t *px;
static sl_req_t *cur;
static int nresumed, ended, last_error;
static int lazy; /* FILTER: a chunk is not followed by sl_proxy_read at once (the test asks later) */
static int head_check = -1; /* at the end: whether the head still reads X-H-i: value-i (-1: not asked) */

/* Reads the head at the end, as sluice.ai reads proxy.headers(p) after read_all. */
static int head_intact(const sl_upresp_t *u)
{
    int same = u->nheaders == 18;
    for (uint32_t i = 1; same && i < u->nheaders; i++) {
        char v[24];
        int n = snprintf(v, sizeof(v), "value-%u", i - 1);
        same &= u->headers[i].value_len == (uint32_t)n && memcmp(u->headers[i].value, v, (size_t)n) == 0;
    }
    return same;
}

static void end_request(sl_req_t *r)
{
    if (!r->resp_started && r->conn)
        sl_resp_send_error(r, 500, "no response");
    else if (!r->resp_done && r->conn)
        sl_resp_finish(r);
    if (r->abort && r->conn)
        sl__conn_close(r->conn);
    if (r->conn)
        sl__conn_progress(r->conn);
    ended++;
    cur = NULL;
    sl_req_release(r);
}

static void h_handle(sl_worker_t *w, sl_req_t *r)
{
    (void)w;
    r->refs++;
    cur = r;
    sl_proxy_opts_t o = {.host = "up.test",
                         .hostlen = 7,
                         .port = 8080,
                         .head = phead,
                         .headlen = strlen(phead),
                         .nfields = 1,
                         .body = pbody,
                         .bodylen = strlen(pbody),
                         .flags = SL_PROXY_FORWARD | pflags,
                         .mode = pmode,
                         .pool_size = 4,
                         .connect_timeout = 5,
                         .send_timeout = 5,
                         .read_timeout = 7,
                         .header_timeout = 9,
                         .idle_timeout = 60};
    px = sl_proxy_start(r, &o);
    if (px == NULL)
        end_request(r);
}

static void h_resume(sl_req_t *r)
{
    sl_upresp_t *u = (sl_upresp_t *)px;
    nresumed++;
    last_error = u->error;
    if (pmode == SL_PROXY_PASS) {
        if (u->error && !r->resp_started && r->conn)
            sl_resp_send_error(r, u->error == SL_UPERR_TIMEOUT ? 504 : 502, "upstream failed");
        end_request(r);
        return;
    }
    if (!r->resp_started) {
        if (!u->headers_done) {
            if (r->conn)
                sl_resp_send_error(r, u->error == SL_UPERR_TIMEOUT ? 504 : 502, "upstream failed");
            end_request(r);
            return;
        }
        if (sl_resp_start(r, u->status, "", 0, 0, -1) != 0) {
            end_request(r);
            return;
        }
    }
    if (u->chunk_len > 0) { /* a body filter: upper case */
        char *s = malloc(u->chunk_len);
        for (uint32_t i = 0; i < u->chunk_len; i++)
            s[i] = (char)(u->chunk[i] >= 'a' && u->chunk[i] <= 'z' ? u->chunk[i] - 32 : u->chunk[i]);
        sl_resp_write(r, s, u->chunk_len);
        free(s);
    }
    if (u->done) {
        if (head_check == 0)
            head_check = head_intact(u) ? 1 : 2;
        if (u->error)
            sl_resp_abort(r);
        end_request(r);
        return;
    }
    if (!lazy || u->chunk_len == 0)
        sl_proxy_read(px);
}

static int h_resume_later(sl_req_t *r)
{
    (void)r;
    return 0;
}

static const sl_handler_t stub = {.handle = h_handle, .resume = h_resume, .resume_later = h_resume_later};

/* ---- helpers ---- */

static sl_memconn_t *client(const char *req)
{
    nresumed = ended = last_error = 0;
    sl_memconn_t *m = sl_memconn_open(&W, &stub);
    sl_memconn_send(m, req, strlen(req));
    sl_memconn_run(m, &W.loop, 100);
    return m;
}

static void run(sl_memconn_t *m)
{
    sl_memconn_run(m, &W.loop, 10000);
}

static int has(const sl_buf_t *b, const char *needle)
{
    return b->base && memmem(b->base, b->len, needle, strlen(needle)) != NULL;
}

static const char *GET = "GET /x HTTP/1.1\r\nHost: gw\r\n\r\n";

/* ---- tests ---- */

static void test_pass(void)
{
    up_reset();
    pmode = SL_PROXY_PASS;
    sl_memconn_t *m = client(GET);
    CHECK(up.connecting != NULL);
    up_ready(0);
    CHECK(has(&up.sent, "GET /x HTTP/1.1\r\nHost: up.test\r\n"));
    CHECK(has(&up.sent, "X-Forwarded-For: 127.0.0.1\r\n"));
    CHECK_INT(up.armed, 7); /* the read timeout: the head deadline (9) is further */
    up_sends("HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Up: 1\r\nConnection: keep-alive\r\n\r\nhello");
    up_sends(" world");
    run(m);
    CHECK(has(&m->out, "HTTP/1.1 200 OK\r\n"));
    CHECK(has(&m->out, "X-Up: 1\r\n"));
    CHECK(!has(&m->out, "Connection: keep-alive")); /* hop-by-hop */
    CHECK(has(&m->out, "Content-Length: 11\r\n\r\nhello world"));
    CHECK_INT(ended, 1);
    CHECK_INT(up.released, 1);
    CHECK_INT(up.reusable, 1);
    CHECK(up.idle != NULL);
    sl_memconn_free(m, &W.loop);
}

static void test_pass_chunked_reframed(void)
{
    up_reset();
    pmode = SL_PROXY_PASS;
    sl_memconn_t *m = client(GET);
    up_ready(0);
    const char *resp =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n"
        "X-Trailer: t\r\n\r\n";
    size_t body = (size_t)(strstr(resp, "5\r\n") - resp);
    for (size_t i = 0; i < body; i++)
        up_send(resp + i, 1); /* the head a byte at a time */
    up_sends(resp + body);
    run(m);
    CHECK(has(&m->out, "Transfer-Encoding: chunked\r\n"));
    CHECK(has(&m->out, "hello"));
    CHECK(has(&m->out, " world"));
    CHECK(has(&m->out, "0\r\n\r\n"));
    CHECK(!has(&m->out, "X-Trailer")); /* trailers are dropped, the head stays as it was */
    CHECK_INT(up.reusable, 1);
    sl_memconn_free(m, &W.loop);
}

static void test_filter(void)
{
    up_reset();
    pmode = SL_PROXY_FILTER;
    sl_memconn_t *m = client(GET);
    up_ready(0);
    up_sends("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    run(m);
    CHECK(nresumed >= 1); /* with the head and the first chunk (in one read) */
    CHECK(has(&m->out, "ABC"));
    up_sends("defghij");
    run(m);
    CHECK(has(&m->out, "HTTP/1.1 200 OK"));
    CHECK(has(&m->out, "Transfer-Encoding: chunked")); /* a body filter: length unknown */
    CHECK(has(&m->out, "ABC"));
    CHECK(has(&m->out, "DEFGHIJ"));
    CHECK(has(&m->out, "0\r\n\r\n"));
    CHECK_INT(ended, 1);
    CHECK_INT(up.reusable, 1);
    sl_memconn_free(m, &W.loop);
}

/* Trailers after a chunked body with many headers: the head Lua reads at the end is the head it was given
 * (trailers grew the header list and bytes under it: freed memory, which the ASan build of this test sees).
 */
static void test_trailers_keep_head(void)
{
    up_reset();
    pmode = SL_PROXY_FILTER;
    sl_memconn_t *m = client(GET);
    up_ready(0);
    sl_buf_t resp = {0};
    sl_buf_appends(&resp, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n");
    for (int i = 0; i < 17; i++) {
        char h[48];
        snprintf(h, sizeof(h), "X-H-%d: value-%d\r\n", i, i);
        sl_buf_appends(&resp, h);
    }
    sl_buf_appends(&resp, "\r\n3\r\nabc\r\n0\r\n");
    for (int i = 0; i < 40; i++)
        sl_buf_appends(&resp, "X-Trailer-Field-With-A-Long-Name: and a long value to grow the bytes\r\n");
    sl_buf_appends(&resp, "\r\n");
    head_check = 0;
    up_send(resp.base, resp.len);
    run(m);
    CHECK(has(&m->out, "ABC"));
    CHECK_INT(ended, 1);
    CHECK_INT(head_check, 1);
    head_check = -1;
    sl_buf_free(&resp);
    sl_memconn_free(m, &W.loop);
}

/* FILTER with an empty body whose head ends where the read ends: the parser goes on after the pause at the
 * head without another byte, so the response ends at once (not at the read timeout). */
static void test_filter_empty_body(void)
{
    up_reset();
    pmode = SL_PROXY_FILTER;
    sl_memconn_t *m = client(GET);
    up_ready(0);
    up_sends("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    run(m);
    CHECK_INT(ended, 1);
    CHECK_INT(last_error, 0);
    CHECK(has(&m->out, "HTTP/1.1 200 OK"));
    CHECK(has(&m->out, "0\r\n\r\n"));
    CHECK_INT(up.reusable, 1);
    sl_memconn_free(m, &W.loop);
}

/* FILTER holds the upstream back until Lua took the last chunk (bounded buffering). */
static void test_filter_holds_reads(void)
{
    up_reset();
    pmode = SL_PROXY_FILTER;
    sl_memconn_t *m = client(GET);
    up_ready(0);
    lazy = 1;
    up_sends("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc");
    run(m);
    CHECK(has(&m->out, "ABC"));
    CHECK_INT(up.holds, 1); /* Lua has not asked for more: nothing more is read */
    CHECK(!up.uc->reading);
    up_sends("de"); /* what the socket had: it waits, unparsed */
    run(m);
    CHECK(!has(&m->out, "DE"));
    lazy = 0;
    sl_proxy_read(px);
    run(m);
    CHECK(has(&m->out, "DE"));
    CHECK_INT(up.unholds, 1); /* read again */
    CHECK(up.uc->reading);
    up_sends("f");
    run(m);
    CHECK(has(&m->out, "F"));
    CHECK_INT(ended, 1);
    sl_memconn_free(m, &W.loop);
}

/* A kept-alive connection the upstream had closed: the GET goes again on a fresh one; a POST does not, unless
 * its head has an Idempotency-Key (one in its body does not count). */
static void test_stale_replay(void)
{
    static const struct {
        const char *head, *body;
        int replayed;
    } cases[] = {
        {"GET /x HTTP/1.1\r\nHost: up.test\r\n", "", 1},
        {"POST /x HTTP/1.1\r\nHost: up.test\r\n", "", 0},
        {"POST /x HTTP/1.1\r\nIdempotency-Key: k1\r\n", "", 1},
        {"POST /x HTTP/1.1\r\nHost: up.test\r\n", "\r\nIdempotency-Key: k2\r\n", 0},
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        up_reset();
        pmode = SL_PROXY_PASS;
        phead = "GET /x HTTP/1.1\r\nHost: up.test\r\n";
        sl_memconn_t *m = client(GET); /* one exchange first, so that a connection is pooled */
        up_ready(0);
        up_sends("HTTP/1.1 204 No Content\r\n\r\n");
        run(m);
        CHECK(up.idle != NULL);
        phead = cases[i].head;
        pbody = cases[i].body;
        pflags = SL_PROXY_LENGTH;
        up.sent.len = 0;
        sl_memconn_send(m, GET, strlen(GET));
        run(m);
        CHECK(up.uc != NULL && up.uc->reused);
        up.uc->ops->read(up.uc, UV_EOF); /* closed before any byte of the response */
        run(m);
        CHECK_INT(up.fresh_opens, cases[i].replayed);
        if (cases[i].replayed) {
            up_ready(0);
            up_sends("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            run(m);
            CHECK(has(&m->out, "\r\n\r\nok"));
        } else {
            CHECK(has(&m->out, " 502 "));
            CHECK_INT(last_error, SL_UPERR_RESET);
        }
        CHECK_INT(ended, 2);
        pbody = "";
        pflags = 0;
        phead = "GET /x HTTP/1.1\r\nHost: up.test\r\n";
        sl_memconn_free(m, &W.loop);
    }
}

static void test_bad_heads(void)
{
    static const struct {
        const char *resp;
        int status;
    } cases[] = {
        {"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
         "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
         200},
        {"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", 502},
        {"HTTP/1.1 700 Odd\r\nContent-Length: 0\r\n\r\n", 502},
        {"NOT HTTP\r\n\r\n", 502},
    };
    for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        up_reset();
        pmode = SL_PROXY_PASS;
        sl_memconn_t *m = client(GET);
        up_ready(0);
        up_sends(cases[i].resp);
        run(m);
        char want[16];
        snprintf(want, sizeof(want), " %d ", cases[i].status);
        CHECK(has(&m->out, want));
        CHECK_INT(up.reusable, cases[i].status == 200);
        sl_memconn_free(m, &W.loop);
    }
    /* more than 16 interim responses */
    up_reset();
    sl_memconn_t *m = client(GET);
    up_ready(0);
    for (int i = 0; i < 17; i++)
        up_sends("HTTP/1.1 100 Continue\r\n\r\n");
    run(m);
    CHECK(has(&m->out, " 502 "));
    CHECK_INT(last_error, SL_UPERR_BAD_RESPONSE);
    sl_memconn_free(m, &W.loop);
}

/* An empty header name in the upstream's head: its value goes to the client as it was, not from elsewhere. */
static void test_empty_header_name(void)
{
    up_reset();
    pmode = SL_PROXY_PASS;
    sl_memconn_t *m = client(GET);
    up_ready(0);
    up_sends("HTTP/1.1 200 OK\r\n: AAAA\r\nContent-Length: 2\r\n\r\nok");
    run(m);
    CHECK_INT(ended, 1);
    CHECK(has(&m->out, " 502 ")); /* refused as a bad response, not read from elsewhere */
    CHECK_INT(last_error, SL_UPERR_BAD_RESPONSE);
    sl_memconn_free(m, &W.loop);
}

static void test_timeout_and_connect_error(void)
{
    up_reset();
    pmode = SL_PROXY_FILTER;
    sl_memconn_t *m = client(GET);
    up_ready(0);
    up_sends("HTTP/1.1 200 OK\r\n"); /* a head that never ends */
    up.uc->ops->timeout(up.uc);
    run(m);
    CHECK(has(&m->out, " 504 "));
    CHECK_INT(last_error, SL_UPERR_TIMEOUT);
    CHECK_INT(up.reusable, 0);
    sl_memconn_free(m, &W.loop);

    up_reset();
    m = client(GET);
    up_ready(SL_UPERR_CONNECT);
    run(m);
    CHECK(has(&m->out, " 502 "));
    CHECK_INT(last_error, SL_UPERR_CONNECT);
    sl_memconn_free(m, &W.loop);
}

/* The client leaves mid-body: the upstream call is cancelled (its connection closed, not pooled). */
static void test_client_leaves(void)
{
    for (int filter = 0; filter < 2; filter++) {
        up_reset();
        pmode = filter ? SL_PROXY_FILTER : SL_PROXY_PASS;
        sl_memconn_t *m = client(GET);
        up_ready(0);
        up_sends("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
        run(m);
        m->eof = 1;
        run(m);
        CHECK(m->closed);
        CHECK_INT(up.released, 1);
        CHECK_INT(up.reusable, 0);
        CHECK_INT(last_error, SL_UPERR_CLIENT_GONE);
        CHECK_INT(ended, 1);
        sl_memconn_free(m, &W.loop);
    }
}

/* PASS to a client that does not read: past the high-water mark the upstream is not read, then read again
 * once the client caught up. */
static void test_pass_backpressure(void)
{
    up_reset();
    pmode = SL_PROXY_PASS;
    sl_memconn_t *m = client(GET);
    m->room = 65536;
    m->client_reads = 0;
    up_ready(0);
    size_t total = 4 * SL_PROXY_HIGH_WATER;
    char head[96];
    snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", total);
    up_sends(head);
    static char piece[65536];
    memset(piece, 'z', sizeof(piece));
    size_t sent = 0;
    while (sent < total && up.uc->reading) {
        up_send(piece, sizeof(piece));
        sent += sizeof(piece);
        run(m);
    }
    CHECK(sent < total); /* held back */
    CHECK(up.holds >= 1);
    CHECK(m->c->write_pending > SL_PROXY_HIGH_WATER);
    m->client_reads = 1;
    run(m);
    CHECK(up.uc->reading); /* read again */
    while (sent < total) {
        up_send(piece, sizeof(piece));
        sent += sizeof(piece);
        run(m);
    }
    CHECK_INT(ended, 1);
    CHECK_INT(m->out.len > total, 1);
    sl_memconn_free(m, &W.loop);
}

/* A body over body_buffer_size goes upstream as it arrives (SL_PROXY_STREAM): with the client's length, or
 * re-framed as chunks; one write at a time, the client not read while 128 KiB wait. */
static void test_streamed_body(void)
{
    for (int chunked = 0; chunked < 2; chunked++) {
        up_reset();
        pmode = SL_PROXY_PASS;
        pflags = SL_PROXY_STREAM;
        size_t size = 300000;
        sl_buf_t in = {0};
        char head[160];
        snprintf(head, sizeof(head), "POST /up HTTP/1.1\r\nHost: gw\r\n%s\r\n\r\n",
                 chunked ? "Transfer-Encoding: chunked" : "Content-Length: 300000");
        sl_buf_appends(&in, head);
        static char piece[10000];
        memset(piece, 'b', sizeof(piece));
        for (size_t k = 0; k < size / sizeof(piece); k++) {
            if (chunked)
                sl_buf_appends(&in, "2710\r\n");
            sl_buf_append(&in, piece, sizeof(piece));
            if (chunked)
                sl_buf_appends(&in, "\r\n");
        }
        if (chunked)
            sl_buf_appends(&in, "0\r\n\r\n");
        nresumed = ended = last_error = 0;
        sl_memconn_t *m = sl_memconn_open(&W, &stub);
        m->piece = 16384;
        sl_memconn_send(m, in.base, in.len);
        phead = "POST /up HTTP/1.1\r\nHost: up.test\r\n";
        run(m);
        CHECK(cur != NULL && cur->body_pending); /* handled before its body ended */
        up.queue_writes = 1;
        up_ready(0);
        run(m);
        CHECK(m->in_pos < m->in.len); /* one write waits upstream: the client is not read on */
        for (int i = 0; i < 200 && up.uc && up.uc->pending_writes; i++) {
            up_written();
            run(m);
        }
        CHECK_INT(m->in_pos, m->in.len);
        const char *body = memmem(up.sent.base, up.sent.len, "\r\n\r\n", 4);
        CHECK(body != NULL);
        CHECK(has(&up.sent, chunked ? "Transfer-Encoding: chunked\r\n" : "Content-Length: 300000\r\n"));
        if (chunked) {
            CHECK(up.sent.len > size && memcmp(up.sent.base + up.sent.len - 5, "0\r\n\r\n", 5) == 0);
        } else {
            CHECK_INT(up.sent.base + up.sent.len - (body + 4), size);
        }
        up_sends("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        run(m);
        CHECK(has(&m->out, "\r\n\r\nok"));
        CHECK_INT(ended, 1);
        CHECK_INT(up.reusable, 1);
        sl_buf_free(&in);
        pflags = 0;
        phead = "GET /x HTTP/1.1\r\nHost: up.test\r\n";
        sl_memconn_free(m, &W.loop);
    }
}

int main(void)
{
    sl_settings_defaults();
    uv_loop_init(&W.loop);
    sl__pool(&W)->net = &sl_fakeup_net;
    test_pass();
    test_pass_chunked_reframed();
    test_filter();
    test_filter_empty_body();
    test_trailers_keep_head();
    test_filter_holds_reads();
    test_stale_replay();
    test_bad_heads();
    test_empty_header_name();
    test_timeout_and_connect_error();
    test_client_leaves();
    test_pass_backpressure();
    test_streamed_body();
    up_reset();
    for (int i = 0; i < 4; i++)
        uv_run(&W.loop, UV_RUN_NOWAIT); /* the proxies' close callbacks */
    CHECK_INT(W.nconns, 0);
    return sl_test_done();
}
