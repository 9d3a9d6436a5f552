/* The memcached bridge: libmemcached (binary protocol) called on the libuv thread pool, so a worker never
 * blocks on the network. Which server a key goes to is the ring's choice (mc_ring.c: ketama consistent
 * hashing with a circuit breaker per server); each server has its own memcached_st, and each call borrows a
 * clone of it from that server's locked free list (a clone is not thread-safe, the list is), and gives it
 * back after the call.
 *
 * While a server is down its circuit keeps calls off it: after failure_threshold failures in a row it opens
 * and its keys go to the next servers on the ring (the other keys stay where they are), and every retry_after
 * seconds one call goes to it as a probe, whose success closes the circuit. Only when every server's circuit
 * is open do calls fail at once with SL_MC_CIRCUIT. */
#include "shared/memcached.h"

#include <errno.h>
#include <libmemcached/memcached.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/log.h"
#include "lua/vm.h"
#include "server/worker.h"
#include "shared/mc_ring.h"

typedef struct mc_clone {
    struct mc_clone *next;
    memcached_st *mc;
} mc_clone_t;

typedef struct mc_work {
    uv_work_t work;
    sl_mcop_t op; /* Lua sees this */
    sl_worker_t *w;
    sl_req_t *req;
    int kind;
    int server; /* index in servers[] (the ring's choice) */
    int probe;
    char *key, *val;
    size_t klen, vlen;
    uint32_t flags;
    time_t exptime;
    uint64_t delta, initial;
    int has_initial;
} mc_work_t;

typedef struct mc_server {
    memcached_st *master; /* this server alone; calls use clones of it */
    mc_clone_t *free_clones;
} mc_server_t;

static mc_server_t *servers;
static int nservers;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static memcached_st *server_new(const char *name, uint64_t ms)
{
    memcached_server_list_st list = memcached_servers_parse(name);
    if (list == NULL)
        return NULL;
    memcached_st *m = memcached_create(NULL);
    if (m == NULL || memcached_server_list_count(list) != 1 ||
        memcached_server_push(m, list) != MEMCACHED_SUCCESS) {
        memcached_server_list_free(list);
        if (m)
            memcached_free(m);
        return NULL;
    }
    memcached_server_list_free(list);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, ms * 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SND_TIMEOUT, ms * 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 1);
    return m;
}

int sl_mc_configure(const char *list, double timeout, int failure_threshold, double retry)
{
    if (list == NULL || *list == '\0')
        return -EINVAL;
    char *copy = strdup(list), *save = NULL;
    const char *names[SL_MC_MAX_SERVERS];
    mc_server_t *sv = calloc(SL_MC_MAX_SERVERS, sizeof(*sv));
    int n = 0, rc = 0;
    uint64_t ms = timeout > 0 ? (uint64_t)(timeout * 1000) : 200;
    if (copy == NULL || sv == NULL)
        rc = -ENOMEM;
    for (char *t = copy ? strtok_r(copy, ", \t", &save) : NULL; rc == 0 && t;
         t = strtok_r(NULL, ", \t", &save)) {
        if (n == SL_MC_MAX_SERVERS || (sv[n].master = server_new(t, ms)) == NULL)
            rc = -EINVAL;
        else
            names[n++] = t;
    }
    if (rc == 0 && n == 0)
        rc = -EINVAL;
    if (rc == 0)
        rc = sl__mc_ring_init(names, n, failure_threshold, retry);
    if (rc != 0) {
        for (int i = 0; sv && i < n; i++)
            memcached_free(sv[i].master);
        free(sv);
        free(copy);
        return rc;
    }
    free(copy);
    servers = sv;
    nservers = n;
    return 0;
}

void sl_mc_shutdown(void)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nservers; i++) {
        while (servers[i].free_clones) {
            mc_clone_t *c = servers[i].free_clones;
            servers[i].free_clones = c->next;
            memcached_free(c->mc);
            free(c);
        }
        memcached_free(servers[i].master);
    }
    pthread_mutex_unlock(&lock);
    free(servers);
    servers = NULL;
    nservers = 0;
    sl__mc_ring_free();
}

static memcached_st *borrow(int s)
{
    pthread_mutex_lock(&lock);
    mc_clone_t *c = servers[s].free_clones;
    if (c)
        servers[s].free_clones = c->next;
    pthread_mutex_unlock(&lock);
    if (c) {
        memcached_st *m = c->mc;
        free(c);
        return m;
    }
    return memcached_clone(NULL, servers[s].master);
}

static void give_back(int s, memcached_st *m)
{
    mc_clone_t *c = malloc(sizeof(*c));
    if (c == NULL) {
        memcached_free(m);
        return;
    }
    c->mc = m;
    pthread_mutex_lock(&lock);
    c->next = servers[s].free_clones;
    servers[s].free_clones = c;
    pthread_mutex_unlock(&lock);
}

/* A fixed text per libmemcached return code. memcached_last_error_message() is not used: its text carries
 * source locations and, in some versions, pointer values, and it reaches logs and plugin callers. */
static const char *error_text(memcached_return_t rc)
{
    switch (rc) {
    case MEMCACHED_TIMEOUT:
        return "timeout";
    case MEMCACHED_CONNECTION_FAILURE:
    case MEMCACHED_CONNECTION_BIND_FAILURE:
        return "connection failed";
    case MEMCACHED_HOST_LOOKUP_FAILURE:
        return "host lookup failed";
    case MEMCACHED_WRITE_FAILURE:
        return "write to server failed";
    case MEMCACHED_READ_FAILURE:
    case MEMCACHED_UNKNOWN_READ_FAILURE:
    case MEMCACHED_PARTIAL_READ:
        return "read from server failed";
    case MEMCACHED_SERVER_MARKED_DEAD:
    case MEMCACHED_SERVER_TEMPORARILY_DISABLED:
        return "server marked dead (retrying later)";
    case MEMCACHED_NO_SERVERS:
        return "no servers available";
    case MEMCACHED_E2BIG:
        return "value too large for memcached";
    case MEMCACHED_KEY_TOO_BIG:
    case MEMCACHED_BAD_KEY_PROVIDED:
    case MEMCACHED_NO_KEY_PROVIDED:
        return "bad key";
    case MEMCACHED_MEMORY_ALLOCATION_FAILURE:
        return "out of memory";
    case MEMCACHED_SERVER_MEMORY_ALLOCATION_FAILURE:
        return "server out of memory";
    case MEMCACHED_PROTOCOL_ERROR:
        return "protocol error";
    case MEMCACHED_SERVER_ERROR:
    case MEMCACHED_ERROR:
        return "server error";
    case MEMCACHED_CLIENT_ERROR:
        return "client error";
    case MEMCACHED_AUTH_PROBLEM:
    case MEMCACHED_AUTH_FAILURE:
        return "authentication failed";
    case MEMCACHED_INVALID_ARGUMENTS:
        return "invalid arguments";
    case MEMCACHED_ERRNO:
        return "system error";
    default:
        return "memcached error";
    }
}

/* Runs on a thread-pool thread. */
static void do_work(uv_work_t *req)
{
    mc_work_t *wk = req->data;
    sl_mcop_t *op = &wk->op;
    memcached_st *m = borrow(wk->server);
    if (m == NULL) {
        op->rc = SL_MC_ERR;
        snprintf(op->errmsg, sizeof(op->errmsg), "out of memory");
        return;
    }
    memcached_return_t rc = MEMCACHED_SUCCESS;
    switch (wk->kind) {
    case SL_MC_GET: {
        size_t vlen = 0;
        uint32_t flags = 0;
        char *v = memcached_get(m, wk->key, wk->klen, &vlen, &flags, &rc);
        if (v) {
            op->value = v;
            op->value_len = (uint32_t)vlen;
            op->flags = flags;
        }
        break;
    }
    case SL_MC_SET:
        rc = memcached_set(m, wk->key, wk->klen, wk->val, wk->vlen, wk->exptime, wk->flags);
        break;
    case SL_MC_ADD:
        rc = memcached_add(m, wk->key, wk->klen, wk->val, wk->vlen, wk->exptime, wk->flags);
        break;
    case SL_MC_INCR:
    case SL_MC_DECR:
        if (wk->has_initial)
            rc = (wk->kind == SL_MC_INCR ? memcached_increment_with_initial
                                         : memcached_decrement_with_initial)(
                m, wk->key, wk->klen, wk->delta, wk->initial, wk->exptime, &op->num);
        else
            rc = (wk->kind == SL_MC_INCR ? memcached_increment : memcached_decrement)(
                m, wk->key, wk->klen, (uint32_t)wk->delta, &op->num);
        break;
    case SL_MC_DELETE:
        rc = memcached_delete(m, wk->key, wk->klen, 0);
        break;
    }
    if (rc == MEMCACHED_SUCCESS || rc == MEMCACHED_STORED || rc == MEMCACHED_DELETED) {
        op->rc = SL_MC_OK;
    } else if (rc == MEMCACHED_NOTFOUND) {
        op->rc = SL_MC_NOT_FOUND;
    } else if (rc == MEMCACHED_NOTSTORED || rc == MEMCACHED_DATA_EXISTS) {
        op->rc = SL_MC_NOT_STORED;
    } else {
        op->rc = SL_MC_ERR;
        snprintf(op->errmsg, sizeof(op->errmsg), "%s (code %d)", error_text(rc), (int)rc);
    }
    give_back(wk->server, m);
}

/* Back on the worker's loop. */
static void after_work(uv_work_t *req, int status)
{
    mc_work_t *wk = req->data;
    sl_mcop_t *op = &wk->op;
    if (status == UV_ECANCELED) {
        op->rc = SL_MC_ERR;
        snprintf(op->errmsg, sizeof(op->errmsg), "cancelled");
    }
    int ok = op->rc >= 0;
    if (!(op->rc == SL_MC_ERR && status == UV_ECANCELED))
        sl__mc_ring_result(wk->server, ok, wk->probe);
    else if (wk->probe)
        sl__mc_ring_unprobe(wk->server);
    free(wk->key);
    free(wk->val);
    wk->key = wk->val = NULL;
    op->done = 1;
    if (op->waiting) {
        op->waiting = 0;
        sl_vm_wake(wk->w, wk->req, op->wake_id);
    }
}

sl_mcop_t *sl_mc_start(sl_req_t *req, int kind, const char *key, size_t klen, const char *val, size_t vlen,
                       uint32_t flags, double exptime, uint64_t delta, uint64_t initial, int has_initial)
{
    sl_worker_t *w = sl_worker_current();
    mc_work_t *wk = calloc(1, sizeof(*wk));
    if (wk == NULL || w == NULL) {
        free(wk);
        return NULL;
    }
    sl_mcop_t *op = &wk->op;
    wk->w = w;
    wk->req = req;
    if (req)
        req->refs++;
    if (nservers == 0) {
        op->rc = SL_MC_NOT_CONFIGURED;
        snprintf(op->errmsg, sizeof(op->errmsg), "memcached is not configured (node.memcached.servers)");
        op->done = 1;
        return op;
    }
    wk->server = sl__mc_ring_pick(key, klen, &wk->probe);
    if (wk->server < 0) {
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
            sl__mc_ring_unprobe(wk->server);
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
    wk->work.data = wk;
    if (uv_queue_work(&w->loop, &wk->work, do_work, after_work) != 0) {
        op->rc = SL_MC_ERR;
        snprintf(op->errmsg, sizeof(op->errmsg), "cannot queue work");
        op->done = 1;
        if (wk->probe)
            sl__mc_ring_unprobe(wk->server);
    }
    return op;
}

void sl_mc_free(sl_mcop_t *op)
{
    mc_work_t *wk = (mc_work_t *)((char *)op - offsetof(mc_work_t, op));
    if (!op->done)
        return; /* still on the thread pool: never freed under it */
    free(op->value);
    free(wk->key);
    free(wk->val);
    sl_req_t *r = wk->req;
    free(wk);
    if (r)
        sl_req_release(r);
}
