/* Numbers for the metrics exposition (plugins/prometheus.lua): the states of a worker's client connections
 * and the log-reopen generation bumped by SIGUSR1. Read through the FFI by sluice.pdk.metrics users. */
#ifndef SL_STATS_H
#define SL_STATS_H

#include <stdint.h>

/** Client connections of the calling worker thread, by state (as nginx's stub_status counts them): active =
 *  all open ones, reading = a request head or body being read, writing = a request handed to Lua whose
 *  response is not finished, idle = keep-alive connections waiting for the next request. Admin API
 *  connections are left out. Returns 0, or -1 outside a worker thread (nothing written). */
int sl_worker_conn_stats(int32_t out[4]);

/** How many times SIGUSR1 asked for log files to be reopened since the start (plugins that write files
 * compare it with the generation they opened at). */
uint64_t sl_reopen_generation(void);

/** Counts one SIGUSR1 (main thread). */
void sl__reopen_bump(void);

#endif
