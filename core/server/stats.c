/* Connection states of a worker and the SIGUSR1 reopen generation (stats.h). */
#include "server/stats.h"

#include "http/conn.h"
#include "server/worker.h"

static uint64_t reopen_gen; /* written by the main thread, read by workers: atomics */

int sl_worker_conn_stats(int32_t out[4])
{
    sl_worker_t *w = sl_worker_current();
    if (w == NULL)
        return -1;
    int32_t active = 0, reading = 0, writing = 0, idle = 0;
    for (sl_conn_t *c = w->conns; c != NULL; c = c->next) {
        if (c->is_admin)
            continue;
        active++;
        if (c->busy)
            writing++;
        else if (c->timer_kind == TIMER_IDLE && c->rlen == c->rpos)
            idle++;
        else
            reading++;
    }
    out[0] = active;
    out[1] = reading;
    out[2] = writing;
    out[3] = idle;
    return 0;
}

uint64_t sl_reopen_generation(void)
{
    return __atomic_load_n(&reopen_gen, __ATOMIC_RELAXED);
}

void sl__reopen_bump(void)
{
    __atomic_add_fetch(&reopen_gen, 1, __ATOMIC_RELAXED);
}
