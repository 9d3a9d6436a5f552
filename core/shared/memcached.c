/* The memcached bridge: calls from Lua (sluice.memcached) go out on the calling worker's own connections, in
 * memcached's binary protocol, pipelined (mc_net.c): nothing blocks, nothing waits on another thread.
 * libmemcached parses the server list and hashes keys to servers (ketama consistent hashing), so keys land
 * where libmemcached clients put them.
 *
 * A circuit breaker shared by all workers keeps calls off the network while memcached is down: after
 * failure_threshold failures in a row it opens, calls fail at once with SL_MC_CIRCUIT, and every retry_after
 * seconds one call goes through as a probe; its success closes the circuit. */
#include "shared/memcached.h"

#include <errno.h>
#include <libmemcached/memcached.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "lua/vm.h"
#include "server/worker.h"
#include "shared/mc_internal.h"

static memcached_st *master;
static int threshold = 5;
static double retry_after = 5;
static atomic_int failures;
static atomic_int probing;
static _Atomic double open_until; /* 0: closed */

int sl_mc_configure(const char *servers, double timeout, int failure_threshold, double retry)
{
    if (servers == NULL || *servers == '\0')
        return -EINVAL;
    memcached_server_list_st list = memcached_servers_parse(servers);
    if (list == NULL)
        return -EINVAL;
    memcached_st *m = memcached_create(NULL);
    if (m == NULL) {
        memcached_server_list_free(list);
        return -ENOMEM;
    }
    int rc = memcached_server_push(m, list);
    memcached_server_list_free(list);
    if (rc != MEMCACHED_SUCCESS) {
        memcached_free(m);
        return -EINVAL;
    }
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    rc = sl__mc_net_configure(m, timeout);
    if (rc != 0) {
        memcached_free(m);
        return rc;
    }
    master = m;
    threshold = failure_threshold > 0 ? failure_threshold : 5;
    retry_after = retry > 0 ? retry : 5;
    return 0;
}

void sl_mc_shutdown(void)
{
    sl__mc_net_shutdown();
    if (master)
        memcached_free(master);
    master = NULL;
}

int sl_mc_circuit_state(void)
{
    double until = atomic_load(&open_until);
    if (until == 0)
        return 0;
    return atomic_load(&probing) ? 2 : 1;
}

/* May this call go out? Sets *probe when it is the half-open probe. */
static int circuit_allows(int *probe)
{
    *probe = 0;
    double until = atomic_load(&open_until);
    if (until == 0)
        return 1;
    if (sl_now() < until)
        return 0;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&probing, &expected, 1))
        return 0; /* another probe is out */
    *probe = 1;
    return 1;
}

static void circuit_result(int ok, int probe)
{
    if (ok) {
        atomic_store(&failures, 0);
        if (atomic_load(&open_until) != 0) {
            atomic_store(&open_until, 0);
            sl_log(SL_LOG_INFO, "memcached: circuit closed");
        }
    } else {
        int n = atomic_fetch_add(&failures, 1) + 1;
        if (probe || n >= threshold) {
            if (atomic_load(&open_until) == 0)
                sl_log(SL_LOG_WARN, "memcached: circuit open after %d failures (retry in %gs)", n,
                       retry_after);
            atomic_store(&open_until, sl_now() + retry_after);
        }
    }
    if (probe)
        atomic_store(&probing, 0);
}

void sl__mc_done(sl__mcwork_t *wk, int rc, const char *errmsg)
{
    sl_mcop_t *op = &wk->op;
    op->rc = rc;
    if (rc == SL_MC_ERR)
        snprintf(op->errmsg, sizeof(op->errmsg), "%s", errmsg ? errmsg : "memcached error");
    circuit_result(rc >= 0, wk->probe);
    free(wk->key);
    free(wk->val);
    free(wk->wire);
    wk->key = wk->val = NULL;
    wk->wire = NULL;
    op->done = 1;
    if (wk->detached) {
        sl_mc_free(op);
        return;
    }
    if (op->waiting) {
        op->waiting = 0;
        sl_vm_wake(wk->w, wk->req, op->wake_id);
    }
}

sl_mcop_t *sl_mc_start(sl_req_t *req, int kind, const char *key, size_t klen, const char *val, size_t vlen,
                       uint32_t flags, double exptime, uint64_t delta, uint64_t initial, int has_initial)
{
    sl_worker_t *w = sl_worker_current();
    sl__mcwork_t *wk = calloc(1, sizeof(*wk));
    if (wk == NULL || w == NULL) {
        free(wk);
        return NULL;
    }
    sl_mcop_t *op = &wk->op;
    wk->w = w;
    wk->req = req;
    if (req)
        req->refs++;
    if (master == NULL) {
        op->rc = SL_MC_NOT_CONFIGURED;
        snprintf(op->errmsg, sizeof(op->errmsg), "memcached is not configured (node.memcached.servers)");
        op->done = 1;
        return op;
    }
    if (!circuit_allows(&wk->probe)) {
        op->rc = SL_MC_CIRCUIT;
        snprintf(op->errmsg, sizeof(op->errmsg), "circuit open");
        op->done = 1;
        return op;
    }
    wk->kind = kind;
    wk->key = malloc(klen + 1);
    wk->val = vlen ? malloc(vlen) : NULL;
    if (wk->key == NULL || (vlen && wk->val == NULL)) {
        op->rc = SL_MC_ERR;
        snprintf(op->errmsg, sizeof(op->errmsg), "out of memory");
        op->done = 1;
        if (wk->probe)
            atomic_store(&probing, 0);
        return op;
    }
    memcpy(wk->key, key, klen);
    wk->key[klen] = '\0';
    wk->klen = klen;
    if (vlen)
        memcpy(wk->val, val, vlen);
    wk->vlen = vlen;
    wk->flags = flags;
    wk->exptime = (time_t)exptime;
    wk->delta = delta;
    wk->initial = initial;
    wk->has_initial = has_initial;
    if (sl__mc_net_send(wk) != 0) {
        op->rc = SL_MC_ERR;
        snprintf(op->errmsg, sizeof(op->errmsg), "out of memory");
        op->done = 1;
        if (wk->probe)
            atomic_store(&probing, 0);
    }
    return op;
}

void sl_mc_free(sl_mcop_t *op)
{
    sl__mcwork_t *wk = (sl__mcwork_t *)((char *)op - offsetof(sl__mcwork_t, op));
    if (!op->done)
        return; /* still queued on a connection: never freed under it */
    free(op->value);
    free(wk->key);
    free(wk->val);
    free(wk->wire);
    sl_req_t *r = wk->req;
    free(wk);
    if (r)
        sl_req_release(r);
}

void sl_mc_detach(sl_mcop_t *op)
{
    sl__mcwork_t *wk = (sl__mcwork_t *)((char *)op - offsetof(sl__mcwork_t, op));
    if (op->done)
        sl_mc_free(op);
    else
        wk->detached = 1;
}
