/* The memcached bridge: libmemcached (binary protocol, ketama consistent hashing) called on the libuv thread
 * pool, so a worker never blocks on the network. Each pool thread borrows a memcached_st clone from a locked
 * free list (a clone is not thread-safe, the list is), and gives it back after the call.
 *
 * A circuit breaker shared by all workers keeps calls off the network while memcached is down: after
 * failure_threshold failures in a row it opens, calls fail at once with SL_MC_CIRCUIT, and every retry_after
 * seconds one call goes through as a probe; its success closes the circuit. */
#include "shared/memcached.h"

#include <errno.h>
#include <libmemcached/memcached.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "common/log.h"
#include "lua/vm.h"
#include "server/worker.h"

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
    int probe;
    char *key, *val;
    size_t klen, vlen;
    uint32_t flags;
    time_t exptime;
    uint64_t delta, initial;
    int has_initial;
} mc_work_t;

static memcached_st *master;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static mc_clone_t *free_clones;
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
    uint64_t ms = timeout > 0 ? (uint64_t)(timeout * 1000) : 200;
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RCV_TIMEOUT, ms * 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SND_TIMEOUT, ms * 1000);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_TCP_NODELAY, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_SUPPORT_CAS, 1);
    memcached_behavior_set(m, MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 1);
    master = m;
    threshold = failure_threshold > 0 ? failure_threshold : 5;
    retry_after = retry > 0 ? retry : 5;
    return 0;
}

void sl_mc_shutdown(void)
{
    pthread_mutex_lock(&lock);
    while (free_clones) {
        mc_clone_t *c = free_clones;
        free_clones = c->next;
        memcached_free(c->mc);
        free(c);
    }
    pthread_mutex_unlock(&lock);
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

static memcached_st *borrow(void)
{
    pthread_mutex_lock(&lock);
    mc_clone_t *c = free_clones;
    if (c)
        free_clones = c->next;
    pthread_mutex_unlock(&lock);
    if (c) {
        memcached_st *m = c->mc;
        free(c);
        return m;
    }
    return memcached_clone(NULL, master);
}

static void give_back(memcached_st *m)
{
    mc_clone_t *c = malloc(sizeof(*c));
    if (c == NULL) {
        memcached_free(m);
        return;
    }
    c->mc = m;
    pthread_mutex_lock(&lock);
    c->next = free_clones;
    free_clones = c;
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

/* A get that also reads the item's cas unique (into op->num): mget of one key, then every result fetched so
 * the connection is left clean for the next call. MEMCACHED_NOTFOUND on a miss. */
static memcached_return_t gets(memcached_st *m, mc_work_t *wk, sl_mcop_t *op)
{
    const char *keys[1] = {wk->key};
    size_t lens[1] = {wk->klen};
    memcached_return_t rc = memcached_mget(m, keys, lens, 1), frc;
    memcached_result_st *res;
    int found = 0;

    if (rc != MEMCACHED_SUCCESS)
        return rc;
    while ((res = memcached_fetch_result(m, NULL, &frc)) != NULL) {
        if (!found && frc == MEMCACHED_SUCCESS) {
            size_t vlen = memcached_result_length(res);
            char *v = malloc(vlen + 1);
            if (v == NULL) {
                rc = MEMCACHED_MEMORY_ALLOCATION_FAILURE;
            } else {
                memcpy(v, memcached_result_value(res), vlen);
                v[vlen] = '\0';
                op->value = v;
                op->value_len = (uint32_t)vlen;
                op->flags = memcached_result_flags(res);
                op->num = memcached_result_cas(res);
                found = 1;
            }
        }
        memcached_result_free(res);
    }
    if (rc != MEMCACHED_SUCCESS)
        return rc;
    if (frc != MEMCACHED_END && frc != MEMCACHED_NOTFOUND && frc != MEMCACHED_SUCCESS)
        return frc;
    return found ? MEMCACHED_SUCCESS : MEMCACHED_NOTFOUND;
}

/* Runs on a thread-pool thread. */
static void do_work(uv_work_t *req)
{
    mc_work_t *wk = req->data;
    sl_mcop_t *op = &wk->op;
    memcached_st *m = borrow();
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
    case SL_MC_GETS:
        rc = gets(m, wk, op);
        break;
    case SL_MC_CAS:
        rc = memcached_cas(m, wk->key, wk->klen, wk->val, wk->vlen, wk->exptime, wk->flags, wk->delta);
        break;
    case SL_MC_SET:
        rc = memcached_set(m, wk->key, wk->klen, wk->val, wk->vlen, wk->exptime, wk->flags);
        break;
    case SL_MC_ADD:
        rc = memcached_add(m, wk->key, wk->klen, wk->val, wk->vlen, wk->exptime, wk->flags);
        break;
    case SL_MC_INCR:
    case SL_MC_DECR:
        if (!wk->has_initial) {
            rc = (wk->kind == SL_MC_INCR ? memcached_increment : memcached_decrement)(
                m, wk->key, wk->klen, (uint32_t)wk->delta, &op->num);
            break;
        }
        /* Two first calls racing to create the counter: memcached stores one and answers the other
         * NOT_STORED without counting it (libmemcached gives UINT64_MAX as its value). The key exists
         * now: call again. */
        for (int attempt = 0; attempt < 4; attempt++) {
            rc = (wk->kind == SL_MC_INCR ? memcached_increment_with_initial
                                         : memcached_decrement_with_initial)(
                m, wk->key, wk->klen, wk->delta, wk->initial, wk->exptime, &op->num);
            if (rc != MEMCACHED_NOTSTORED)
                break;
        }
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
    give_back(m);
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
        circuit_result(ok, wk->probe);
    else if (wk->probe)
        atomic_store(&probing, 0);
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
    wk->work.data = wk;
    if (uv_queue_work(&w->loop, &wk->work, do_work, after_work) != 0) {
        op->rc = SL_MC_ERR;
        snprintf(op->errmsg, sizeof(op->errmsg), "cannot queue work");
        op->done = 1;
        if (wk->probe)
            atomic_store(&probing, 0);
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
