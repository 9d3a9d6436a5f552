/* The client connection's state machine (core/http/conn.c with parser.c, conn_body.c, conn_gone.c) over the
 * in-memory transport (tests/support/memconn.c) with a stub handler in place of the Lua VM: pipelining in any
 * read split, answers now or later, streamed answers to a client that stops reading, bodies that arrive while
 * their request is handled, malformed input, and clients that leave. */
#include <stdlib.h>
#include <string.h>

#include "http/conn.h"
#include "http/response.h"
#include "memconn.h"
#include "server/settings.h"
#include "test.h"

static sl_worker_t W;

/* ---- the stub handler ---- */

enum { ANSWER_NOW, ANSWER_LATER, ANSWER_STREAM, READ_BODY };
static int mode;
static sl_req_t *held[8]; /* requests answered later, with a reference each */
static int nheld, nhandled, nresumed;
static char paths[8][32];

static void answer(sl_req_t *r)
{
    char body[64];
    int n = snprintf(body, sizeof(body), "%.*s:%u", (int)r->path_len, r->path, r->body_len);
    static const char hdr[] = "Content-Type: text/plain\r\n";
    sl_resp_send(r, 200, hdr, sizeof(hdr) - 1, 1, body, (size_t)n);
}

static void stub_handle(sl_worker_t *w, sl_req_t *r)
{
    (void)w;
    if (nhandled < 8)
        snprintf(paths[nhandled], sizeof(paths[0]), "%.*s", (int)r->path_len, r->path);
    nhandled++;
    if (mode == ANSWER_NOW) {
        answer(r);
        return;
    }
    if (mode == READ_BODY && sl_req_read_body(r) == 0) {
        answer(r);
        return;
    }
    r->refs++;
    held[nheld++] = r;
    if (mode == ANSWER_STREAM) {
        static const char hdr[] = "Content-Type: text/plain\r\n";
        sl_resp_start(r, 200, hdr, sizeof(hdr) - 1, 1, -1);
    }
}

static void stub_resume(sl_req_t *r)
{
    (void)r;
    nresumed++;
}

static int stub_resume_later(sl_req_t *r)
{
    (void)r;
    nresumed++;
    return 0;
}

static const sl_handler_t stub = {
    .handle = stub_handle, .resume = stub_resume, .resume_later = stub_resume_later};

/* Ends the handling of a held request: what vm.c does when a coroutine ends. */
static void finish_held(int i)
{
    sl_req_t *r = held[i];
    if (!r->resp_started && r->conn)
        answer(r);
    else if (!r->resp_done && r->conn)
        sl_resp_finish(r);
    if (r->conn)
        sl__conn_progress(r->conn);
    sl_req_release(r);
    held[i] = NULL;
}

static void reset_stub(int m)
{
    mode = m;
    nheld = nhandled = nresumed = 0;
    memset(held, 0, sizeof(held));
}

static sl_memconn_t *open_conn(size_t piece, const char *in)
{
    sl_memconn_t *m = sl_memconn_open(&W, &stub);
    m->piece = piece;
    sl_memconn_send(m, in, strlen(in));
    return m;
}

static int count(const sl_buf_t *b, const char *needle)
{
    int n = 0;
    size_t k = strlen(needle);
    for (size_t i = 0; b->base && i + k <= b->len; i++)
        n += memcmp(b->base + i, needle, k) == 0;
    return n;
}

static int has(const sl_buf_t *b, const char *needle)
{
    return count(b, needle) > 0;
}

/* ---- tests ---- */

static const char three[] =
    "GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    "POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"
    "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";

static void test_pipelined_any_split(void)
{
    static const size_t pieces[] = {0, 1, 2, 7, 64};
    for (unsigned i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        reset_stub(ANSWER_NOW);
        sl_memconn_t *m = open_conn(pieces[i], three);
        sl_memconn_run(m, &W.loop, 10000);
        CHECK_INT(nhandled, 3);
        CHECK_INT(count(&m->out, "HTTP/1.1 200 OK"), 3);
        const char *a = memmem(m->out.base, m->out.len, "/a:0", 4);
        const char *b = memmem(m->out.base, m->out.len, "/b:5", 4);
        const char *c = memmem(m->out.base, m->out.len, "/c:3", 4);
        CHECK(a && b && c && a < b && b < c); /* in request order, bodies as framed */
        CHECK(m->c != NULL && !m->closed);    /* kept alive */
        sl_memconn_free(m, &W.loop);
    }
}

static void test_answer_later_keeps_order(void)
{
    reset_stub(ANSWER_LATER);
    sl_memconn_t *m = open_conn(3, three);
    sl_memconn_run(m, &W.loop, 10000);
    CHECK_INT(nhandled, 1); /* the next request waits for the answer to this one */
    CHECK_INT(m->out.len, 0);
    finish_held(0);
    sl_memconn_run(m, &W.loop, 10000);
    CHECK_INT(nhandled, 2);
    CHECK_STR(paths[1], "/b");
    CHECK_INT(count(&m->out, "HTTP/1.1 200 OK"), 1);
    finish_held(1);
    sl_memconn_run(m, &W.loop, 10000);
    finish_held(2);
    sl_memconn_run(m, &W.loop, 10000);
    CHECK_INT(nhandled, 3);
    CHECK_INT(count(&m->out, "HTTP/1.1 200 OK"), 3);
    sl_memconn_free(m, &W.loop);
}

/* A streamed answer to a client that does not read: the writes queue up, the handler is told to wait
 * (wait_drain), and goes on once the client has read enough. */
static void test_stream_backpressure(void)
{
    reset_stub(ANSWER_STREAM);
    sl_memconn_t *m = open_conn(0, "GET /s HTTP/1.1\r\nHost: h\r\n\r\n");
    m->room = 4096;
    m->client_reads = 0;
    sl_memconn_run(m, &W.loop, 1000);
    CHECK_INT(nheld, 1);
    sl_req_t *r = held[0];
    static char chunk[64 * 1024];
    memset(chunk, 'x', sizeof(chunk));
    int waits = 0;
    for (int i = 0; i < 40 && !waits; i++) {
        CHECK_INT(sl_resp_write(r, chunk, sizeof(chunk)), 0);
        waits = sl_resp_wait_drain(r) == 1;
    }
    CHECK(waits);
    CHECK(sl_resp_pending(r) >= SL_RESP_HIGH_WATER);
    CHECK_INT(nresumed, 0);
    m->client_reads = 1;
    sl_memconn_run(m, &W.loop, 10000);
    CHECK_INT(nresumed, 1); /* resumed once below the low-water mark */
    CHECK_INT(sl_resp_pending(r), 0);
    finish_held(0);
    sl_memconn_run(m, &W.loop, 1000);
    CHECK(m->out.len > SL_RESP_HIGH_WATER);
    CHECK(m->out.len >= 5 && memcmp(m->out.base + m->out.len - 5, "0\r\n\r\n", 5) == 0);
    CHECK(!m->closed);
    sl_memconn_free(m, &W.loop);
}

/* A body over body_buffer_size: the request is handled before it ends, the handler waits for it whole. */
static void test_body_while_handled(void)
{
    reset_stub(READ_BODY);
    size_t size = sl_settings.body_buffer_size * 3;
    sl_buf_t in = {0};
    char head[128];
    snprintf(head, sizeof(head), "POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %zu\r\n\r\n", size);
    sl_buf_appends(&in, head);
    for (size_t i = 0; i < size; i++)
        sl_buf_append(&in, "y", 1);
    sl_memconn_t *m = sl_memconn_open(&W, &stub);
    m->piece = 16384;
    sl_memconn_send(m, in.base, in.len);
    sl_buf_free(&in);
    sl_memconn_run(m, &W.loop, 10000);
    CHECK_INT(nhandled, 1);
    CHECK_INT(nheld, 1);
    CHECK(nresumed >= 1); /* told when the whole body was in */
    sl_req_t *r = held[0];
    CHECK(!r->body_pending);
    CHECK_INT(r->body_received, size);
    CHECK_INT(sl_req_read_body(r), 0);
    finish_held(0);
    sl_memconn_run(m, &W.loop, 1000);
    CHECK(has(&m->out, "HTTP/1.1 200 OK"));
    sl_memconn_free(m, &W.loop);
}

static void test_malformed_closes(void)
{
    reset_stub(ANSWER_NOW);
    sl_memconn_t *m =
        open_conn(5, "GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGARBAGE\r\n\r\nGET /never HTTP/1.1\r\n\r\n");
    sl_memconn_run(m, &W.loop, 10000);
    CHECK_INT(nhandled, 1);
    CHECK(has(&m->out, "HTTP/1.1 200 OK"));
    CHECK(has(&m->out, " 400 Bad Request"));
    CHECK(m->closed);
    sl_memconn_free(m, &W.loop);

    reset_stub(ANSWER_NOW);
    m = open_conn(1, "GET / HTTP/2.0\r\nHost: h\r\n\r\n");
    sl_memconn_run(m, &W.loop, 10000);
    CHECK(has(&m->out, "505"));
    CHECK(m->closed);
    sl_memconn_free(m, &W.loop);
}

/* The client leaves while its request is handled: the request is marked (499), pipelined ones are dropped. */
static void test_client_leaves(void)
{
    for (int reset = 0; reset < 2; reset++) {
        reset_stub(ANSWER_LATER);
        sl_memconn_t *m = open_conn(0, three);
        sl_memconn_run(m, &W.loop, 1000);
        CHECK_INT(nheld, 1);
        sl_req_t *r = held[0];
        if (reset)
            m->reset = 1;
        else
            m->eof = 1;
        sl_memconn_run(m, &W.loop, 1000);
        CHECK(m->closed);
        CHECK(r->client_gone && r->client_abort);
        CHECK(r->conn == NULL);
        CHECK_INT(sl_resp_send(r, 200, "", 0, 0, "x", 1), SL_ERR_GONE);
        finish_held(0);
        CHECK_INT(nhandled, 1);
        sl_memconn_free(m, &W.loop);
    }
}

static void test_connection_close(void)
{
    reset_stub(ANSWER_NOW);
    sl_memconn_t *m =
        open_conn(0, "GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /y HTTP/1.1\r\n\r\n");
    sl_memconn_run(m, &W.loop, 1000);
    CHECK_INT(nhandled, 1);
    CHECK(has(&m->out, "Connection: close"));
    CHECK(m->closed);
    sl_memconn_free(m, &W.loop);
}

int main(void)
{
    sl_settings_defaults();
    uv_loop_init(&W.loop);
    test_pipelined_any_split();
    test_answer_later_keeps_order();
    test_stream_backpressure();
    test_body_while_handled();
    test_malformed_closes();
    test_client_leaves();
    test_connection_close();
    CHECK_INT(W.nconns, 0);
    return sl_test_done();
}
