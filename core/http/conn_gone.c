/* A client that leaves while its request is served: it closed its side (FIN), reset the connection, or a
 * write to it failed. Mid-request this ends the request as nginx ends it: logged 499, the upstream call
 * cancelled (PASS or FILTER, before or after the head: sl__conn_close tells the proxy), pipelined requests
 * dropped with the connection. A FIN is not taken for a half-close to be answered: clients that leave (curl
 * -m, a closed browser tab, an SDK's timeout) send just that, and answering them kept whole upstream streams
 * running for nobody.
 *
 * How it is noticed:
 *  - a read: the connection is read while its request is served (up to SL_PIPELINE_MAX of pipelined requests
 *    behind it), so an EOF or a reset shows at once;
 *  - a write that fails (EPIPE, ECONNRESET) when the client is not being read;
 *  - sl_conn_sweep, once a second, when it is not being read and nothing is written (an answer still awaited
 *    from the upstream): the transport (the kernel's TCP state) tells whether the client's FIN or reset came.
 */
#include "http/conn.h"

void sl__conn_client_left(sl_conn_t *c)
{
    sl_req_t *r = c->req;
    if (c->busy && r && !c->closing && !(r->resp_done && c->write_pending == 0 && c->wbuf.len == 0))
        r->client_abort = 1;
    sl__conn_close(c);
}

void sl__conn_write_failed(sl_conn_t *c)
{
    if (c->closing || c->timer_kind == TIMER_GONE)
        return;
    sl_req_t *r = c->req;
    if (c->busy && r) {
        r->client_gone = 1; /* every later write fails, and Lua sees it: sluice.response writers stop */
        r->client_abort = 1;
    }
    sl__conn_read_stop(c);
    sl__conn_timer(c, TIMER_GONE, 0);
}

void sl_conn_sweep(sl_worker_t *w)
{
    int found = 0;
    for (sl_conn_t *c = w->conns; c; c = c->next) {
        c->peer_gone = c->busy && !c->reading && !c->closing && c->io->peer_closed(c);
        found |= c->peer_gone;
    }
    /* closing resumes Lua, which ends its own request only; the walk starts over anyway, the list having
     * changed */
    while (found) {
        found = 0;
        for (sl_conn_t *c = w->conns; c; c = c->next)
            if (c->peer_gone) {
                c->peer_gone = 0;
                sl__conn_client_left(c);
                found = 1;
                break;
            }
    }
}
