/* Counters of the limit plugins in memcached, a request's limits as one group of calls: one FFI call starts
 * them, Lua waits once, one FFI call reads the verdicts (counters.c's rule: all or nothing), instead of a Lua
 * table, a cdata and a finaliser per call in sluice.memcached.batch. */
#include "shared/mc_counters.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/vm.h"
#include "server/worker.h"
#include "shared/mc_internal.h"

#define MC_KEY_MAX 250
#define MONTH (30 * 86400.0) /* memcached takes a longer exptime as an absolute time */

typedef struct mc_group {
    sl_mcop_t op; /* first: Lua waits on it as on one call */
    sl_worker_t *w;
    sl_req_t *req;
    int n, pending, detached;
    double now;
    int32_t rc[SL_CTR_MAX];
    uint64_t num[SL_CTR_MAX];
    double amount[SL_CTR_MAX], idx[SL_CTR_MAX];
} mc_group_t;

static double exptime_of(double ttl)
{
    double t = floor(ttl + 0.5);
    if (t < 1)
        t = 1;
    return t > MONTH ? floor(sl_time()) + t : t;
}

static void group_free(mc_group_t *g)
{
    sl_req_t *r = g->req;
    free(g);
    if (r)
        sl_req_release(r);
}

void sl__mc_group_done(void *parent, int slot, int rc, uint64_t num, const char *errmsg)
{
    mc_group_t *g = parent;
    g->rc[slot] = rc;
    g->num[slot] = num;
    if (rc < 0 && g->op.errmsg[0] == '\0')
        snprintf(g->op.errmsg, sizeof(g->op.errmsg), "%s", errmsg && *errmsg ? errmsg : "memcached error");
    if (--g->pending > 0)
        return;
    g->op.done = 1;
    if (g->detached) {
        group_free(g);
        return;
    }
    if (g->op.waiting) {
        g->op.waiting = 0;
        sl_vm_wake(g->w, g->req, g->op.wake_id);
    }
}

/* Sends one INCR (delta > 0, created with it) or DECR (delta < 0) without waiting. */
static void send_delta(const char *key, size_t klen, double delta, double ttl)
{
    uint64_t v = (uint64_t)llround(fabs(delta));
    if (v == 0)
        return;
    sl_mcop_t *op = delta > 0 ? sl_mc_start(NULL, SL_MC_INCR, key, klen, NULL, 0, 0, exptime_of(ttl), v, v, 1)
                              : sl_mc_start(NULL, SL_MC_DECR, key, klen, NULL, 0, 0, 0, v, 0, 0);
    if (op)
        sl_mc_detach(op);
}

static double ttl_of(const sl_ctr_item_t *it)
{
    return (it->sliding ? 2 * it->window : it->window) + 1;
}

sl_mcop_t *sl_mc_ctr_start(sl_req_t *req, const sl_ctr_item_t *items, int n, double now)
{
    if (n <= 0 || n > SL_CTR_MAX || sl_worker_current() == NULL)
        return NULL;
    mc_group_t *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->w = sl_worker_current();
    g->req = req;
    if (req)
        req->refs++;
    g->n = g->pending = n;
    g->now = now;
    char key[SL_CTR_KEY_MAX];
    for (int i = 0; i < n; i++) {
        const sl_ctr_item_t *it = &items[i];
        double amount = it->amount, idx = floor(now / it->window);
        size_t klen = sl__ctr_key(key, it, idx);
        g->amount[i] = amount;
        g->idx[i] = idx;
        if (klen == 0 || klen > MC_KEY_MAX || !(amount >= 0 && amount < 1.8e19) || amount != floor(amount)) {
            sl__mc_group_done(g, i, SL_MC_ERR, 0, "counter key too long or amount not a whole number");
            continue;
        }
        uint64_t a = (uint64_t)amount;
        sl__mcwork_t *wk = sl__mc_start_child(g, i, SL_MC_INCR, key, klen, exptime_of(ttl_of(it)), a, a, 1);
        if (wk == NULL) {
            sl__mc_group_done(g, i, SL_MC_ERR, 0, "out of memory");
        } else if (wk->op.done) { /* never sent: circuit open, not configured */
            sl__mc_group_done(g, i, wk->op.rc, wk->op.num, wk->op.errmsg);
            sl_mc_free(&wk->op);
        }
    }
    return &g->op;
}

int sl_mc_ctr_finish(sl_mcop_t *op, sl_ctr_item_t *items, int n)
{
    mc_group_t *g = (mc_group_t *)op;
    if (!op->done || n != g->n)
        return -1;
    int failed = 0, refused = 0;
    for (int i = 0; i < n; i++) {
        sl_ctr_item_t *it = &items[i];
        it->amount = g->amount[i];
        it->idx = g->idx[i];
        if (g->rc[i] != SL_MC_OK) {
            if (g->rc[i] >= 0) /* NOT_STORED: the counter kept being created under it */
                snprintf(op->errmsg, sizeof(op->errmsg), "counter not stored (contention)");
            failed = 1;
            continue;
        }
        sl__ctr_settle(it, (double)g->num[i], 0, g->now);
        if (it->ok != 1 && refused == 0)
            refused = i + 1;
    }
    if (!failed && !refused)
        return 0;
    char key[SL_CTR_KEY_MAX];
    for (int i = 0; i < n; i++) { /* all or nothing */
        size_t klen = g->rc[i] == SL_MC_OK ? sl__ctr_key(key, &items[i], g->idx[i]) : 0;
        if (klen == 0)
            continue;
        send_delta(key, klen, -g->amount[i], 0);
        if (!failed && items[i].ok == 1)
            items[i].remaining += items[i].amount; /* what it would have left had the request gone */
    }
    return failed ? -1 : refused;
}

void sl_mc_ctr_free(sl_mcop_t *op)
{
    mc_group_t *g = (mc_group_t *)op;
    if (op->done)
        group_free(g);
    else
        g->detached = 1;
}

void sl_mc_ctr_adjust(const sl_ctr_item_t *items, const double *deltas, int n)
{
    char key[SL_CTR_KEY_MAX];
    for (int i = 0; i < n && i < SL_CTR_MAX; i++) {
        size_t klen = deltas[i] != 0 ? sl__ctr_key(key, &items[i], items[i].idx) : 0;
        if (klen > 0 && klen <= MC_KEY_MAX)
            send_delta(key, klen, deltas[i], ttl_of(&items[i]));
    }
}
