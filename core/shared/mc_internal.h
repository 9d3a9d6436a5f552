#ifndef SL_MC_INTERNAL_H
#define SL_MC_INTERNAL_H

/* Between the memcached bridge (memcached.c: API; mc_ring.c: which server, circuit breakers) and its
 * transport (mc_net.c: binary protocol on each worker's loop). */

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "server/worker.h"
#include "shared/memcached.h"

/** One call: what Lua sees (op, first), what to send, where it waits on a connection. */
typedef struct sl__mcwork {
    sl_mcop_t op;
    sl_worker_t *w;
    sl_req_t *req;
    int kind;
    int server; /* the ring's choice (mc_ring.c) */
    int probe;
    char *key, *val; /* in the same allocation as wk, as wire is */
    size_t klen, vlen;
    uint32_t flags;
    time_t exptime;
    uint64_t delta, initial; /* delta: also the cas unique of SL_MC_CAS */
    int has_initial;
    int detached; /* nobody waits: freed by the bridge once answered (sl_mc_detach) */
    void *parent; /* one call of a group (mc_counters.c): its answer goes there, then it is freed */
    int slot;     /* its place in the group */
    /* transport */
    struct sl__mcwork *next; /* in its connection's queue */
    uint32_t opaque;
    int tries;       /* sends: a creation that lost a race is sent again */
    double deadline; /* sl_now() after which it times out */
    uint8_t *wire;   /* the encoded request (room made with wk) */
    size_t wlen;
} sl__mcwork_t;

/** Queues wk on the calling worker's connection to server wk->server, sending it as soon as the
 *  connection is up. The result comes through sl__mc_done (from a loop callback, never from inside this
 * call). 0, or a negative code when it cannot even be queued (out of memory): the caller finishes the op
 * itself. */
int sl__mc_net_send(sl__mcwork_t *wk);
/** Starts one call of a group (as sl_mc_start, without a request: the group holds it); NULL on out of memory.
 *  Done at once (circuit open, not configured) or later, when sl__mc_group_done gets its answer. */
sl__mcwork_t *sl__mc_start_child(void *parent, int slot, int kind, const char *key, size_t klen,
                                 double exptime, uint64_t delta, uint64_t initial, int has_initial);
/** Called with the answer of a call of a group (mc_counters.c); the call is freed after it. */
void sl__mc_group_done(void *parent, int slot, int rc, uint64_t num, const char *errmsg);
/** Called by the transport when wk has its answer (rc: SL_MC_*; errmsg for SL_MC_ERR). */
void sl__mc_done(sl__mcwork_t *wk, int rc, const char *errmsg);
/** Resolves the n configured servers (main thread, at configure; their order is the ring's): 0 or a negative
 *  code. */
int sl__mc_net_configure(const char *const *hosts, const int *ports, int n, double timeout);
/** Closes worker w's memcached connections (their waiting calls fail) as the worker stops. */
void sl__mc_net_close(sl_worker_t *w);
/** Frees what sl__mc_net_configure made (at exit). */
void sl__mc_net_shutdown(void);

#endif
