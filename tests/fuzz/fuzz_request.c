/* Harness: the request parser of client connections (core/http/parser.c's llhttp settings), fed the way
 * conn.c feeds it, several pipelined requests at a time, whole and cut at fuzz-chosen points.
 *
 * Input: options byte (bit 0: tight size limits), cut plan (fuzz.h), then the bytes a client sends.
 * Invariants (http_drive.c): no crash or sanitizer report; every request handed on points only into its own
 * memory, within the limits, with its Host and body as framed; the "100 Continue" write only when asked for;
 * and the whole feed and the cut feed hand on the same requests and end the same way. */
#include <stdlib.h>

#include "http_drive.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in_t in = {data, size};
    uint8_t opts = fz_byte(&in);
    fz_cuts_t cuts, whole = {.n = 0};
    fz_cuts_read(&in, &cuts);
    fz_req_result_t a = {0}, b = {0};
    fz_req_run(in.p, in.n, &whole, opts & 1, &a);
    fz_req_run(in.p, in.n, &cuts, opts & 1, &b);
    fz_req_same(&a, &b);
    sl_buf_free(&a.body0);
    sl_buf_free(&b.body0);
    return 0;
}
