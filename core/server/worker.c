/* Worker threads. Each binds its own SO_REUSEPORT sockets (listen.c), so the kernel spreads connections and
 * nothing is handed between threads; worker 0 also serves the Admin API. */
#include "server/worker.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/regex.h"
#include "http/access_log.h"
#include "http/conn.h"
#include "lua/vm.h"
#include "server/listen.h"
#include "server/settings.h"
#include "shared/memcached.h"
#include "tls/listener.h"
#include "upstream/pool.h"

extern char sl__lua_timer_tag, sl__req_timer_tag;
void sl__lua_timer_free(uv_handle_t *h);
void sl__req_timer_shutdown(uv_handle_t *h);

static sl_worker_t *workers;
static int nworkers;
static uv_sem_t ready;
static atomic_int stop_request; /* 0 none, 1 drain, 2 now */

typedef struct worker_timers {
    uv_timer_t flush;
    uv_timer_t drain_check;
    uv_tcp_t reserve; /* see worker_main */
} worker_timers_t;

static __thread worker_timers_t wt;

static void on_flush(uv_timer_t *t)
{
    sl_access_log_flush();
    sl_listener_report(t->data);
    sl_conn_sweep(t->data);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    if (uv_is_closing(h))
        return;
    if (h->type == UV_TIMER && h->data == &sl__lua_timer_tag)
        uv_close(h, sl__lua_timer_free);
    else if (h->type == UV_TIMER && h->data == &sl__req_timer_tag)
        uv_close(h, sl__req_timer_shutdown);
    else if (h->type == UV_TIMER && h->data == NULL)
        uv_close(h, NULL);
}

/* Closes what the worker owns; the loop ends once every handle is closed. */
static void shutdown_worker(sl_worker_t *w)
{
    if (w->stopping >= 2)
        return;
    /* 3 while connections close: a coroutine waiting on one is woken through a request timer, which the walk
     * below still finds; from 2 on nothing may start a timer */
    w->stopping = 3;
    for (int i = 0; i < w->nlisteners; i++)
        sl_listener_close(&w->listeners[i]);
    while (w->conns)
        sl__conn_close(w->conns);
    w->stopping = 2;
    sl__pool_close(w);
    sl_mc_worker_stop(w);
    sl_access_log_flush();
    uv_close((uv_handle_t *)&w->notify, NULL);
    uv_close((uv_handle_t *)&wt.flush, NULL);
    uv_close((uv_handle_t *)&wt.drain_check, NULL);
    sl__worker_close_timers(w);
}

void sl__worker_close_timers(sl_worker_t *w)
{
    uv_walk(&w->loop, close_walk, NULL);
}

static void on_drain_check(uv_timer_t *t)
{
    sl_worker_t *w = t->data;
    double waited = (double)(uv_now(&w->loop) - (uint64_t)(uintptr_t)w->drain_timer.data) / 1000.0;
    if (w->nconns == 0 || waited >= sl_settings.drain_timeout) {
        if (w->nconns)
            sl_log(SL_LOG_WARN, "worker %d: drain timeout, closing %d connections", w->id, w->nconns);
        shutdown_worker(w);
    }
}

static void on_notify(uv_async_t *a)
{
    sl_worker_t *w = a->data;
    int stop = atomic_load(&stop_request);
    if (stop == 2) {
        shutdown_worker(w);
        return;
    }
    if (stop == 1 && !w->stopping) {
        w->stopping = 1;
        for (int i = 0; i < w->nlisteners; i++)
            sl_listener_close(&w->listeners[i]);
        for (sl_conn_t *c = w->conns, *next; c; c = next) {
            next = c->next;
            sl__conn_drain(c);
        }
        w->drain_timer.data = (void *)(uintptr_t)uv_now(&w->loop);
        uv_timer_start(&wt.drain_check, on_drain_check, 0, 100);
        return;
    }
    if (!w->stopping)
        sl_vm_apply_snapshot(w);
}

static void worker_main(void *arg)
{
    sl_worker_t *w = arg;
    w->init_rc = -1;
    if (uv_loop_init(&w->loop) != 0) {
        uv_sem_post(&ready);
        return;
    }
    uv_async_init(&w->loop, &w->notify, on_notify);
    w->notify.data = w;
    uv_timer_init(&w->loop, &wt.flush);
    wt.flush.data = w;
    uv_timer_init(&w->loop, &wt.drain_check);
    wt.drain_check.data = w;
    /* libuv keeps a spare descriptor per loop (for its EMFILE trick, which our listeners do not use) and
     * opens it with the loop's first stream: taken now, the worker's own descriptors do not grow at its first
     * connection */
    uv_tcp_init(&w->loop, &wt.reserve);
    uv_close((uv_handle_t *)&wt.reserve, NULL);
    int n = 0;
    for (int i = 0; i < sl_settings.nlisten; i++)
        if (!sl_settings.listen[i].is_admin || w->id == 0)
            n++;
    w->listeners = calloc((size_t)n + 1, sizeof(sl_listener_t));
    int ok = w->listeners && sl_vm_open(w) == 0;
    for (int i = 0; ok && i < sl_settings.nlisten; i++) {
        const sl_listen_addr_t *a = &sl_settings.listen[i];
        if (a->is_admin && w->id != 0)
            continue;
        if (sl_listener_open(w, &w->listeners[w->nlisteners], i) != 0)
            ok = 0;
        else
            w->nlisteners++;
    }
    w->init_rc = ok ? 0 : -1;
    w->started = 1;
    uv_sem_post(&ready);
    if (ok) {
        uv_timer_start(&wt.flush, on_flush, 1000, 1000);
        uv_run(&w->loop, UV_RUN_DEFAULT);
    } else {
        shutdown_worker(w);
        uv_run(&w->loop, UV_RUN_DEFAULT);
    }
    for (int i = 0; w->listeners && i < n; i++)
        sl_tls_server_ctx_free(w->listeners[i].tls); /* connections are closed: no session holds them */
    sl_tls_thread_cleanup();
    sl_access_log_thread_close();
    sl_vm_close(w);
    sl_regex_thread_cleanup();
    if (uv_loop_close(&w->loop) != 0)
        sl_log(SL_LOG_DEBUG, "worker %d: loop closed with handles open", w->id);
    free(w->listeners);
}

int sl_workers_start(int n)
{
    workers = calloc((size_t)n, sizeof(sl_worker_t));
    if (workers == NULL)
        return -ENOMEM;
    nworkers = n;
    uv_sem_init(&ready, 0);
    int rc = 0;
    for (int i = 0; i < n; i++) {
        workers[i].id = i;
        if (uv_thread_create(&workers[i].thread, worker_main, &workers[i]) != 0) {
            rc = -EAGAIN;
            nworkers = i;
            break;
        }
        uv_sem_wait(&ready); /* one at a time: errors are reported in order and binding cannot race */
        if (workers[i].init_rc != 0) {
            rc = -1;
            nworkers = i + 1;
            break;
        }
    }
    if (rc != 0) {
        sl_workers_stop(0);
        sl_workers_join();
    }
    return rc;
}

void sl_workers_stop(int drain)
{
    atomic_store(&stop_request, drain ? 1 : 2);
    for (int i = 0; i < nworkers; i++)
        if (workers[i].started && workers[i].init_rc == 0)
            uv_async_send(&workers[i].notify);
}

void sl_workers_notify(void)
{
    for (int i = 0; i < nworkers; i++)
        if (workers[i].started && workers[i].init_rc == 0)
            uv_async_send(&workers[i].notify);
}

void sl_workers_join(void)
{
    for (int i = 0; i < nworkers; i++)
        uv_thread_join(&workers[i].thread);
    free(workers);
    workers = NULL;
    nworkers = 0;
    uv_sem_destroy(&ready);
}
