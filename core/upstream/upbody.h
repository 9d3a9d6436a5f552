/* Private to core/upstream: a client's request body that goes upstream as it arrives (see upbody.c). */
#ifndef SL_UPBODY_H
#define SL_UPBODY_H

#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "http/request.h"

/** The streamed body of one exchange (zeroed: none). */
typedef struct sl_upbody {
    sl_req_t *req;   /* whose body it is; NULL when the exchange streams none */
    uint8_t chunked; /* re-framed as chunks (the client sent it chunked) */
    uint8_t all;     /* all of it is handed to the connection */
    uint8_t moved;   /* a piece went beyond the first write: the request cannot be replayed */
    char head[24];   /* framing of the pieces being written: chunk size line */
    char tail[8];    /* ... chunk end, last chunk */
} sl_upbody_t;

/** Starts streaming req's body (req->body_pending): what arrived so far is framed into out, the exchange's
 *  first write. Returns 0 or -1 on out of memory. */
int sl__upbody_start(sl_upbody_t *b, sl_req_t *req, sl_buf_t *out);
/** Whether more of the body is to be written (it streams and not all of it went). */
static inline int sl__upbody_open(const sl_upbody_t *b)
{
    return b->req != NULL && !b->all;
}
/** The pieces that carry what arrived since the last call (chunk-framed when the client chunked it, with the
 *  end once all of it arrived), up to 3, pointing into the request's body buffer and b: they must be written
 *  (or copied) before the client is read again. Marks them taken; returns how many. */
unsigned sl__upbody_pieces(sl_upbody_t *b, uv_buf_t iov[3]);
/** Back-pressure: the upstream took what it was given, so the client may be read again. */
void sl__upbody_resume(sl_upbody_t *b);

#endif
