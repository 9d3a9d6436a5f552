/* The memcached bridge: calls from Lua (sluice.memcached) go out on the calling worker's own connections, in
 * memcached's binary protocol, pipelined (mc_net.c): nothing blocks, nothing waits on another thread.
 * libmemcached only parses the server list; which server a key goes to is the ring's choice (mc_ring.c:
 * ketama consistent hashing with a circuit breaker per server, shared by all workers).
 *
 * While a server is down its circuit keeps calls off it: after failure_threshold failures in a row it opens
 * and its keys go to the next servers on the ring (the other keys stay where they are), and every retry_after
 * seconds one call goes to it as a probe, whose success closes the circuit. Only when every server's circuit
 * is open do calls fail at once with SL_MC_CIRCUIT. */
#include "shared/memcached.h"

#include <errno.h>
#include <libmemcached/memcached.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "lua/vm.h"
#include "server/worker.h"
#include "shared/mc_internal.h"
#include "shared/mc_ring.h"

static int configured;

int sl_mc_configure(const char *list, double timeout, int failure_threshold, double retry)
{
    if (list == NULL || *list == '\0')
        return -EINVAL;
    memcached_server_list_st parsed = memcached_servers_parse(list);
    if (parsed == NULL)
        return -EINVAL;
    memcached_st *m = memcached_create(NULL);
    int rc = m ? 0 : -ENOMEM;
    if (rc == 0 && memcached_server_push(m, parsed) != MEMCACHED_SUCCESS)
        rc = -EINVAL;
    memcached_server_list_free(parsed);
    uint32_t n = rc == 0 ? memcached_server_count(m) : 0;
    if (rc == 0 && (n == 0 || n > SL_MC_MAX_SERVERS))
        rc = -EINVAL;
    static char names[SL_MC_MAX_SERVERS][300];
    const char *name_of[SL_MC_MAX_SERVERS], *host_of[SL_MC_MAX_SERVERS];
    int port_of[SL_MC_MAX_SERVERS];
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        const memcached_instance_st *inst = memcached_server_instance_by_position(m, i);
        host_of[i] = memcached_server_name(inst);
        port_of[i] = (int)memcached_server_port(inst);
        snprintf(names[i], sizeof(names[i]), "%s:%d", host_of[i], port_of[i]);
        name_of[i] = names[i];
    }
    if (rc == 0)
        rc = sl__mc_ring_init(name_of, (int)n, failure_threshold, retry);
    if (rc == 0) {
        rc = sl__mc_net_configure(host_of, port_of, (int)n, timeout);
        if (rc != 0)
            sl__mc_ring_free();
    }
    if (m)
        memcached_free(m); /* the list was only parsed: calls go out through mc_net.c */
    if (rc == 0)
        configured = 1;
    return rc;
}

void sl_mc_shutdown(void)
{
    sl__mc_net_shutdown();
    sl__mc_ring_free();
    configured = 0;
}

void sl__mc_done(sl__mcwork_t *wk, int rc, const char *errmsg)
{
    sl_mcop_t *op = &wk->op;
    op->rc = rc;
    if (rc == SL_MC_ERR)
        snprintf(op->errmsg, sizeof(op->errmsg), "%s", errmsg ? errmsg : "memcached error");
    sl__mc_ring_result(wk->server, rc >= 0, wk->probe);
    op->done = 1;
    if (wk->parent) {
        sl__mc_group_done(wk->parent, wk->slot, rc, op->num, op->errmsg);
        sl_mc_free(op);
        return;
    }
    if (wk->detached) {
        sl_mc_free(op);
        return;
    }
    if (op->waiting) {
        op->waiting = 0;
        sl_vm_wake(wk->w, wk->req, op->wake_id);
    }
}

/* A call on the calling worker: done at once (not configured, circuit open, out of memory) or queued. */
static sl__mcwork_t *start(sl_req_t *req, void *parent, int slot, int kind, const char *key, size_t klen,
                           const char *val, size_t vlen, uint32_t flags, double exptime, uint64_t delta,
                           uint64_t initial, int has_initial)
{
    sl_worker_t *w = sl_worker_current();
    /* one allocation with room for the key, the value and the encoded request (24-byte header, extras of 20
     * bytes at most): a call costs one malloc, not four */
    sl__mcwork_t *wk = w ? calloc(1, sizeof(*wk) + klen + 1 + vlen + 24 + 20 + klen + vlen) : NULL;
    if (wk == NULL)
        return NULL;
    wk->key = (char *)(wk + 1);
    wk->val = vlen ? wk->key + klen + 1 : NULL;
    wk->wire = (uint8_t *)wk->key + klen + 1 + vlen;
    sl_mcop_t *op = &wk->op;
    wk->w = w;
    wk->req = req;
    wk->parent = parent;
    wk->slot = slot;
    if (req)
        req->refs++;
    if (!configured) {
        op->rc = SL_MC_NOT_CONFIGURED;
        snprintf(op->errmsg, sizeof(op->errmsg), "memcached is not configured (node.memcached.servers)");
        op->done = 1;
        return wk;
    }
    wk->server = sl__mc_ring_pick(key, klen, &wk->probe);
    if (wk->server < 0) {
        op->rc = SL_MC_CIRCUIT;
        snprintf(op->errmsg, sizeof(op->errmsg), "circuit open");
        op->done = 1;
        return wk;
    }
    wk->kind = kind;
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
    int rc = sl__mc_net_send(wk);
    if (rc != 0) {
        op->rc = SL_MC_ERR;
        snprintf(op->errmsg, sizeof(op->errmsg), "%s",
                 rc == -ECANCELED ? "gateway stopping" : "out of memory");
        op->done = 1;
        if (wk->probe)
            sl__mc_ring_unprobe(wk->server);
    }
    return wk;
}

sl_mcop_t *sl_mc_start(sl_req_t *req, int kind, const char *key, size_t klen, const char *val, size_t vlen,
                       uint32_t flags, double exptime, uint64_t delta, uint64_t initial, int has_initial)
{
    sl__mcwork_t *wk =
        start(req, NULL, 0, kind, key, klen, val, vlen, flags, exptime, delta, initial, has_initial);
    return wk ? &wk->op : NULL;
}

sl__mcwork_t *sl__mc_start_child(void *parent, int slot, int kind, const char *key, size_t klen,
                                 double exptime, uint64_t delta, uint64_t initial, int has_initial)
{
    return start(NULL, parent, slot, kind, key, klen, NULL, 0, 0, exptime, delta, initial, has_initial);
}

void sl_mc_free(sl_mcop_t *op)
{
    sl__mcwork_t *wk = (sl__mcwork_t *)((char *)op - offsetof(sl__mcwork_t, op));
    if (!op->done)
        return; /* still queued on a connection: never freed under it */
    free(op->value);
    sl_req_t *r = wk->req;
    free(wk);
    if (r)
        sl_req_release(r);
}

void sl_mc_worker_stop(sl_worker_t *w)
{
    sl__mc_net_close(w);
}

void sl_mc_detach(sl_mcop_t *op)
{
    sl__mcwork_t *wk = (sl__mcwork_t *)((char *)op - offsetof(sl__mcwork_t, op));
    if (op->done)
        sl_mc_free(op);
    else
        wk->detached = 1;
}
