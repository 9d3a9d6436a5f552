/* A client's request body that goes upstream as it arrives (SL_PROXY_STREAM): the pieces the client
 * connection parsed (core/http/conn_body.c) since the last write, re-framed as chunks when the client chunked
 * the body, and the back-pressure hook that lets the client be read again once the upstream took them. The
 * exchange (exchange.c) decides when to write: at most one write is queued upstream at a time. */
#include "upstream/upbody.h"

#include <stdio.h>
#include <string.h>

#include "http/conn.h"

unsigned sl__upbody_pieces(sl_upbody_t *b, uv_buf_t iov[3])
{
    sl_req_t *r = b->req;
    sl_buf_t *body = &r->bodybuf;
    unsigned n = 0;
    size_t tl = 0;
    if (body->len > 0) {
        if (b->chunked)
            iov[n++] =
                uv_buf_init(b->head, (unsigned)snprintf(b->head, sizeof(b->head), "%zx\r\n", body->len));
        iov[n++] = uv_buf_init(body->base, (unsigned)body->len);
        if (b->chunked) {
            memcpy(b->tail, "\r\n", 2);
            tl = 2;
        }
        body->len = 0; /* the bytes stay valid until the next append: callers copy or write them before */
    }
    if (!r->body_pending && !r->body_failed && !b->all) {
        if (b->chunked) {
            memcpy(b->tail + tl, "0\r\n\r\n", 5);
            tl += 5;
        }
        b->all = 1;
    }
    if (tl > 0)
        iov[n++] = uv_buf_init(b->tail, (unsigned)tl);
    return n;
}

int sl__upbody_start(sl_upbody_t *b, sl_req_t *req, sl_buf_t *out)
{
    memset(b, 0, sizeof(*b));
    b->req = req;
    b->chunked = req->body_expected < 0;
    uv_buf_t iov[3];
    unsigned n = sl__upbody_pieces(b, iov);
    int rc = 0;
    for (unsigned i = 0; i < n; i++)
        rc |= sl_buf_append(out, iov[i].base, iov[i].len);
    return rc ? -1 : 0;
}

void sl__upbody_resume(sl_upbody_t *b)
{
    if (b->req && b->req->conn)
        sl__conn_body_resume(b->req->conn);
}
