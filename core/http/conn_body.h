/* Private to core/http: the body of a request handled before it finished arriving (see conn_body.c). Only
 * conn.c and conn_body.c include this. */
#ifndef SL_CONN_BODY_H
#define SL_CONN_BODY_H

#include "http/conn.h"

/** Whether the request being parsed is to be handled now, before its body ends (the body outgrew
 *  node.limits.body_buffer_size); if so marks it body_pending. */
int sl__conn_body_outgrown(sl_conn_t *c);
/** After body bytes of a request being handled were parsed: hands them on, decides whether to read more. */
void sl__conn_body_flow(sl_conn_t *c);
/** The body of the request being handled is complete (the parser paused at its end). */
void sl__conn_body_done(sl_conn_t *c);
/** The response is complete but the body is not: 1 when the rest is to be read and dropped before the request
 *  finishes (the connection stays usable), 0 when it will never come (finish and close now). */
int sl__conn_body_discard(sl_conn_t *c);
/** The body will not be complete (error answered, client gone): an upstream call streaming it is cancelled, a
 *  coroutine waiting for it is woken (from a timer). */
void sl__req_body_fail(sl_req_t *r);

#endif
