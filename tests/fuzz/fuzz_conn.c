/* Harness: the client connection's state machine (core/http/conn.c with parser.c, conn_body.c, conn_gone.c
 * and response.c) over the in-memory transport (tests/support/memconn.c): no sockets, a real uv loop. The
 * client's bytes arrive in fuzz-chosen reads, several pipelined requests at a time, and a stub handler in
 * place of the Lua VM answers each request as the answer plan says: at once, after more input, with a
 * streamed body (waiting for the client to drain when it must), or after reading the whole body. The client
 * may stop reading while answers stream, and leave (FIN or reset) when its bytes are sent.
 *
 * Input: options byte, cut plan (fuzz.h), answer plan (a count byte mod 9, then that many bytes), then the
 * bytes the client sends. Options: bit 0 tight size limits; bit 1 a small socket buffer (512 bytes); bit 2
 * the client reads nothing until its bytes are all sent; bit 3 FIN after them; bit 4 reset after them.
 * Invariants: no crash or sanitizer report (a use after free, a leak); answers leave in request order (each
 * carries its request's number); a request handed on points only into its own memory; once the client has
 * read everything and the connection closed, no request, queued write or connection is left. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fuzz.h"
#include "http/conn.h"
#include "http/response.h"
#include "memconn.h"
#include "server/settings.h"

#define MAX_HELD 64

enum { NOW, LATER, STREAM, WHOLE_BODY };

typedef struct held {
    sl_req_t *r;
    int mode, seq, rounds, parts;
    int resumed; /* the handler was resumed (drained client, whole body) */
} held_t;

static sl_worker_t W;
static held_t held[MAX_HELD];
static int nheld, nseq;
static uint8_t plan[8];
static int nplan;

static int within(const sl_buf_t *b, const char *p, size_t len)
{
    return len == 0 || (b->base && p >= b->base && p + len <= b->base + b->len);
}

static void check_request(const sl_req_t *r)
{
    FZ_CHECK(within(&r->head, r->path, r->path_len) || r->path_len == 1);
    FZ_CHECK(within(&r->head, r->query, r->query_len));
    FZ_CHECK(r->nheaders == 0 || r->headers != NULL);
    for (uint32_t i = 0; i < r->nheaders; i++)
        FZ_CHECK(within(&r->head, r->headers[i].name, r->headers[i].name_len) &&
                 within(&r->head, r->headers[i].value, r->headers[i].value_len));
}

/* The answer's number goes in a header (a HEAD answer has no body) and in the body. */
static int seq_header(char *hdr, size_t cap, int seq)
{
    return snprintf(hdr, cap, "X-Seq: #%d;\r\n", seq);
}

static void answer(sl_req_t *r, int seq)
{
    char body[32], hdr[48];
    int n = snprintf(body, sizeof(body), "#%d;", seq), hn = seq_header(hdr, sizeof(hdr), seq);
    sl_resp_send(r, 200, hdr, (size_t)hn, 1, body, (size_t)n);
}

static void on_handle(sl_worker_t *w, sl_req_t *r)
{
    (void)w;
    check_request(r);
    int seq = nseq++;
    int mode = nplan ? plan[seq % nplan] % 4 : NOW;
    if (mode == WHOLE_BODY && sl_req_read_body(r) != 1)
        mode = NOW;
    if (mode == NOW || nheld == MAX_HELD) {
        answer(r, seq);
        return;
    }
    r->refs++; /* the handler's, as a coroutine's */
    held[nheld++] =
        (held_t){.r = r, .mode = mode, .seq = seq, .parts = 1 + (nplan ? plan[(seq + 1) % nplan] % 5 : 0)};
    if (mode == STREAM) {
        char hdr[48];
        sl_resp_start(r, 200, hdr, (size_t)seq_header(hdr, sizeof(hdr), seq), 1, -1);
    }
}

static void on_resume(sl_req_t *r)
{
    for (int i = 0; i < nheld; i++)
        if (held[i].r == r)
            held[i].resumed = 1;
}

static int on_resume_later(sl_req_t *r)
{
    on_resume(r);
    return 0;
}

static const sl_handler_t stub = {.handle = on_handle, .resume = on_resume, .resume_later = on_resume_later};

/* The handler's end, as vm.c ends a coroutine: the response completed, the connection goes on. */
static void finish(int i)
{
    sl_req_t *r = held[i].r;
    if (!r->resp_started && r->conn)
        answer(r, held[i].seq);
    else if (!r->resp_done && r->conn)
        sl_resp_finish(r);
    held[i] = held[--nheld];
    if (r->conn)
        sl__conn_progress(r->conn);
    sl_req_release(r);
}

/* One round of the handler's work on the requests it holds; returns whether any moved (a request answered
 * later counts its rounds down: that is moving too). */
static int work(void)
{
    int ticking = 0;
    for (int i = 0; i < nheld; i++) {
        held_t *h = &held[i];
        h->rounds++;
        ticking |= h->mode == LATER;
        if (h->r->conn == NULL || (h->mode == LATER && h->rounds > h->parts) ||
            (h->mode == WHOLE_BODY && (h->resumed || !h->r->body_pending))) {
            finish(i);
            return 1;
        }
        if (h->mode == STREAM && (h->resumed || !h->r->drain_waiting)) {
            if (h->parts-- <= 0) {
                finish(i);
                return 1;
            }
            h->resumed = 0;
            char piece[600];
            int n = snprintf(piece, sizeof(piece), "#%d;", h->seq);
            memset(piece + n, 'x', sizeof(piece) - (size_t)n);
            sl_resp_write(h->r, piece, sizeof(piece));
            if (sl_resp_wait_drain(h->r) == 1)
                h->r->drain_waiting = 1; /* as the Lua side yields in wait_drain */
            return 1;
        }
    }
    return ticking;
}

/* Rounds of reads, loop turns and handler work until nothing moves; returns 1 when it came to rest. */
static int run(sl_memconn_t *m, const fz_cuts_t *cuts, size_t *nread, int rounds)
{
    int idle = 0;
    for (int i = 0; i < rounds && idle < 4; i++) {
        m->piece = fz_cuts_piece(cuts, (*nread)++);
        if (m->piece == SIZE_MAX)
            m->piece = 0;
        int did = sl_memconn_step(m);
        uv_run(&W.loop, UV_RUN_NOWAIT);
        did |= work();
        idle = did ? 0 : idle + 1;
    }
    return idle >= 4;
}

/* Answers are numbered in request order: the numbers the client got never go back. Returns how many distinct
 * answers it got. */
static int check_order(const sl_buf_t *out)
{
    int last = -1, distinct = 0;
    for (size_t i = 0; out->base && i < out->len; i++) {
        if (out->base[i] != '#')
            continue;
        char *end;
        long v = strtol(out->base + i + 1, &end, 10);
        if (end == out->base + i + 1 || (size_t)(end - out->base) >= out->len || *end != ';')
            continue;
        if (v < last)
            fz_fail("answer #%ld after #%d: out of request order", v, last);
        distinct += v != last;
        last = (int)v;
    }
    return distinct;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        ready = 1;
        uv_loop_init(&W.loop);
        sl_log_set_level(SL_LOG_ERROR);
    }
    fz_in_t in = {data, size};
    uint8_t opts = fz_byte(&in);
    fz_cuts_t cuts;
    fz_cuts_read(&in, &cuts);
    nplan = fz_byte(&in) % 9;
    for (int i = 0; i < nplan; i++)
        plan[i] = fz_byte(&in);
    sl_settings_defaults();
    if (opts & 1) {
        sl_settings.max_header_size = 256;
        sl_settings.max_url_length = 64;
        sl_settings.max_body_size = 4096;
        sl_settings.body_buffer_size = 64; /* bodies over this are handled while they arrive */
    }
    nheld = nseq = 0;
    sl_memconn_t *m = sl_memconn_open(&W, &stub);
    FZ_CHECK(m != NULL);
    m->room = (opts & 2) ? 512 : 0;
    m->client_reads = !(opts & 4);
    sl_memconn_send(m, in.p, in.n);
    size_t nread = 0;
    run(m, &cuts, &nread, 20000);
    m->client_reads = 1;
    m->eof = (opts & 8) != 0;
    m->reset = (opts & 16) != 0;
    int rest = run(m, &cuts, &nread, 20000);
    if (getenv("FUZZ_CONN_DEBUG")) /* what the client got, to follow a failing input */
        fprintf(stderr, "%d requests handed on, %d held, connection %s; the client got:\n%.*s\n", nseq, nheld,
                m->c ? "open" : "closed", (int)m->out.len, m->out.base ? m->out.base : "");
    int answers = check_order(&m->out);
    /* a connection still open at rest has answered every request it handed on, each once, but one that waits
     * for the rest of its body (the client sent no more: in the gateway its body timeout would end it) */
    int waiting = 0;
    for (int i = 0; i < nheld; i++)
        waiting += held[i].mode == WHOLE_BODY && held[i].r->body_pending;
    if (rest && m->c != NULL && answers != nseq - waiting)
        fz_fail("%d requests handed on, %d answered, %d waiting for their body, connection open", nseq,
                answers, waiting);
    /* a client that reads gets everything written: nothing stays queued on a connection at rest */
    FZ_CHECK(!rest || m->c == NULL || (m->queue == NULL && m->sockbuf.len == 0));
    sl_memconn_free(m, &W.loop);
    while (nheld > 0)
        finish(0); /* the connection is gone: the handler ends its requests */
    for (int i = 0; i < 4; i++)
        uv_run(&W.loop, UV_RUN_NOWAIT);
    FZ_CHECK(W.nconns == 0);
    FZ_CHECK(W.conns == NULL);
    return 0;
}
