#ifndef SL_WORKER_H
#define SL_WORKER_H

#include <stdint.h>
#include <uv.h>

struct lua_State;
struct sl_conn;
struct sl_pool;
struct sl_tls_server_ctx;

/** A listening socket of one worker (core/server/listen.c). Accepted by hand rather than by uv_listen, so
 * that accepting can pause when the process runs out of descriptors. */
typedef struct sl_listener {
    uv_poll_t poll;    /* readable: connections wait in the accept queue */
    uv_timer_t resume; /* accepting paused (out of descriptors) until it fires */
    int fd;            /* the listening socket; closed with the poll handle */
    uint8_t open;      /* the handles are initialised (and closed by sl_listener_close) */
    uint8_t closing;
    struct sl_worker *w;
    int is_admin;
    int tls_idx;                   /* index in sl_settings.listen when the listener has TLS, else -1 */
    struct sl_tls_server_ctx *tls; /* this worker's context for it, rebuilt when certificates are reloaded */
    uint64_t tls_gen;
} sl_listener_t;

/** One worker thread: its loop, Lua VM, listeners and connections. Nothing in it is touched by other threads
 *  except through the async handle. */
typedef struct sl_worker {
    int id;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_async_t notify; /* config published, or stop requested */
    struct lua_State *L;
    sl_listener_t *listeners;
    int nlisteners;
    struct sl_conn *conns; /* doubly linked list of open client connections */
    int nconns;
    int nadmin;           /* of nconns, on the Admin API listener (limited apart: SL_ADMIN_MAX_CONNECTIONS) */
    int nmetrics;         /* of nconns, on the metrics listener (limited apart, as the Admin API) */
    unsigned refused[3];  /* refused over the limit since the last report: [0] traffic, [1] Admin API, [2]
                             metrics */
    unsigned paused;      /* times accepting paused for lack of descriptors since the last report */
    int pause_errno;      /* what the last pause was for (EMFILE, ENFILE, ...) */
    struct sl_pool *pool; /* idle upstream connections */
    uint64_t config_version;
    uint64_t next_req_id;
    int stop_mode; /* 0 running, 1 drain, 2 stop now (written by main under atomics) */
    int stopping;  /* 0 running, 1 draining, 3 closing connections, 2 closing handles */
    uv_timer_t drain_timer;
    int started; /* the thread ran its init successfully */
    int init_rc;
} sl_worker_t;

/** Starts n workers (each binds its listeners); returns 0 or a negative code after stopping those started. */
int sl_workers_start(int n);
/** Asks every worker to stop: drain (graceful, bounded by drain_timeout) or now; returns at once. */
void sl_workers_stop(int drain);
/** Waits for every worker thread to end and frees them. */
void sl_workers_join(void);
/** Wakes every worker to look at the config snapshot (called after a publish, from any thread). */
void sl_workers_notify(void);
/** Closes the Lua and request timers left on w's loop (everything else has an owner that closes it: upstream
 *  connections and their timers through sl__pool_close); for a worker stopping, or a command run in one. */
void sl__worker_close_timers(sl_worker_t *w);
/** Returns the worker running on the calling thread, or NULL outside workers. */
sl_worker_t *sl_worker_current(void);

#endif
