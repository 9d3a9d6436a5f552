/* Fake upstream connections for C tests (see fakeup.h). */
#include "fakeup.h"

#include <stdlib.h>
#include <string.h>

sl_fakeup_t sl_fakeup;

#define up sl_fakeup

static sl_upconn_t *f_open(sl_worker_t *w, const sl_uptarget_t *t, const sl_upconn_ops_t *ops, void *owner,
                           int fresh)
{
    (void)t;
    up.opens++;
    sl_upconn_t *uc = NULL;
    if (!fresh && up.idle) {
        uc = up.idle;
        up.idle = NULL;
        uc->reused = 1;
    } else {
        up.fresh_opens += fresh;
        uc = calloc(1, sizeof(*uc));
        uc->rcap = 1 << 20;
        uc->rbuf = malloc(uc->rcap);
        uc->w = w;
    }
    uc->owner = owner;
    uc->ops = ops;
    up.uc = uc;
    if (uc->reused)
        ops->ready(uc, 0, NULL); /* as the pool does for an idle connection */
    else
        up.connecting = uc; /* ready when the test says */
    return uc;
}

static int f_writev(sl_upconn_t *uc, const uv_buf_t *bufs, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        sl_buf_append(&up.sent, bufs[i].base, bufs[i].len);
    if (!up.queue_writes)
        return 1;
    uc->pending_writes++;
    return 0;
}

static void f_arm(sl_upconn_t *uc, double seconds)
{
    (void)uc;
    up.armed = seconds;
}

static void f_read_start(sl_upconn_t *uc)
{
    uc->reading = 1;
}

static void f_hold(sl_upconn_t *uc)
{
    uc->reading = 0;
    up.holds++;
}

static int f_unhold(sl_upconn_t *uc)
{
    int was = uc->reading;
    uc->reading = 1;
    up.unholds += !was;
    return !was;
}

static void f_free(sl_upconn_t *uc)
{
    free(uc->rbuf);
    free(uc);
}

static void f_release(sl_upconn_t *uc, int reusable, int max, double idle)
{
    (void)max;
    (void)idle;
    up.released++;
    up.reusable = reusable;
    if (up.uc == uc)
        up.uc = NULL;
    uc->owner = NULL;
    uc->rpos = uc->rlen = 0;
    if (reusable && up.idle == NULL)
        up.idle = uc;
    else
        f_free(uc);
}

const sl_upnet_t sl_fakeup_net = {.open = f_open,
                                  .writev = f_writev,
                                  .arm = f_arm,
                                  .read_start = f_read_start,
                                  .hold = f_hold,
                                  .unhold = f_unhold,
                                  .release = f_release};

void sl_fakeup_ready(int error)
{
    sl_upconn_t *uc = up.connecting;
    up.connecting = NULL;
    if (error) {
        up.uc = NULL;
        uc->ops->ready(uc, error, "refused");
        f_free(uc);
    } else {
        uc->ops->ready(uc, 0, NULL);
    }
}

void sl_fakeup_send(const char *s, size_t n)
{
    sl_upconn_t *uc = up.uc;
    memcpy(uc->rbuf + uc->rlen, s, n);
    uc->rlen += n;
    uc->ops->read(uc, (ssize_t)n);
}

void sl_fakeup_written(void)
{
    sl_upconn_t *uc = up.uc;
    uc->pending_writes = 0;
    uc->ops->written(uc, 0);
}

void sl_fakeup_reset(void)
{
    if (up.idle)
        f_free(up.idle);
    sl_buf_free(&up.sent);
    memset(&up, 0, sizeof(up));
}
