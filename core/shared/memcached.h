#ifndef SL_MEMCACHED_H
#define SL_MEMCACHED_H

#include <stddef.h>
#include <stdint.h>

#include "http/request.h"

/* Operations. */
/* GETS: as GET, and the item's cas unique in num. CAS: stores the value only when the item's cas unique is
 * still the one given (passed as `delta` to sl_mc_start); SL_MC_NOT_STORED when it changed, SL_MC_NOT_FOUND
 * when gone. */
enum { SL_MC_GET = 1, SL_MC_SET, SL_MC_ADD, SL_MC_INCR, SL_MC_DECR, SL_MC_DELETE, SL_MC_GETS, SL_MC_CAS };

/* Result codes in sl_mcop_t.rc. */
enum {
    SL_MC_OK = 0,
    SL_MC_NOT_FOUND = 1,  /* get/incr/decr/delete: no such key */
    SL_MC_NOT_STORED = 2, /* add: the key exists */
    SL_MC_ERR = -1,       /* memcached or network failure (errmsg says which) */
    SL_MC_CIRCUIT = -2,   /* the circuit is open: nothing was sent */
    SL_MC_NOT_CONFIGURED = -3,
};

/** One memcached call, sent on the calling worker's connection (Lua reads the first block through FFI). */
typedef struct sl_mcop {
    char *value; /* get: the value (malloc'd, freed by sl_mc_free) */
    uint32_t value_len;
    uint32_t flags;
    uint64_t num;    /* incr/decr: the new value; gets: the cas unique */
    int32_t rc;      /* SL_MC_* */
    int32_t wake_id; /* Lua: id to wake a timer coroutine with */
    uint8_t done;
    uint8_t waiting; /* Lua: set before yielding; cleared when woken */
    char errmsg[160];
} sl_mcop_t;

/** Configures the servers ("host:port,host:port", at most 64, resolved now), the per-call timeout (seconds,
 * from the call to its answer, connecting included), and each server's circuit breaker: it opens after
 *  failure_threshold failures in a row (that server's keys then go to the next servers on the ring), and lets
 * one probe call through every retry_after seconds while open. Called once at startup, before the workers; 0
 * or -EINVAL / -ENOMEM. */
int sl_mc_configure(const char *servers, double timeout, int failure_threshold, double retry_after);
/** Frees what sl_mc_configure built (at exit). */
void sl_mc_shutdown(void);
/** Starts a call on the calling worker (from Lua): `delta` is the amount of incr/decr and the cas unique of
 * SL_MC_CAS; returns an op that is either done at once (circuit open, not configured: never sent) or
 * completes from the worker's loop and then wakes the coroutine (req, or wake_id for timers) through
 * sl_vm_wake, never from inside this call. NULL on out of memory or outside a worker. The caller frees it
 * with sl_mc_free after done. */
sl_mcop_t *sl_mc_start(sl_req_t *req, int op, const char *key, size_t klen, const char *val, size_t vlen,
                       uint32_t flags, double exptime, uint64_t delta, uint64_t initial, int has_initial);
/** Frees a done op. */
void sl_mc_free(sl_mcop_t *op);
/** Lets go of an op nobody will wait for (a charge whose answer does not matter): freed now when done, else
 * by the bridge when its answer comes (its failure still counts for the circuit breaker). */
void sl_mc_detach(sl_mcop_t *op);
/** Closes worker w's connections as it stops (calls waiting on them fail; later calls fail at once). */
void sl_mc_worker_stop(struct sl_worker *w);
/** The servers' circuits together (mc_ring.h has each one's): 0 every one closed, 1 every one open (calls
 * fail at once), 2 some open or probing (their keys go to the other servers). */
int sl_mc_circuit_state(void);

#endif
