/* The window counters of sluice.limits.counters in memcached (a cluster): every limit of a request counted by
 * one group of pipelined INCR calls that Lua waits on as on one call, the verdicts made in C as for the
 * shared dict (counters.c), the charges after the call sent in one FFI call without waiting. */
#ifndef SL_MC_COUNTERS_H
#define SL_MC_COUNTERS_H

#include "http/request.h"
#include "shared/counters.h"
#include "shared/memcached.h"

/** Starts the INCR of each item's counter in memcached (key: prefix .. window index of now; by its amount, a
 *  whole number; created with it and a ttl of the window plus 1 s) as one op, done once every answer is in
 * (Lua waits on it as on sl_mc_start's). The items are read now and not again until sl_mc_ctr_finish. NULL on
 * out of memory, outside a worker, or n out of 1..SL_CTR_MAX. Fixed windows only (a sliding one counts as
 * fixed). */
sl_mcop_t *sl_mc_ctr_start(sl_req_t *req, const sl_ctr_item_t *items, int n, double now);

/** The verdicts of a done sl_mc_ctr_start op written into items (amount, idx, ok, remaining, reset,
 * count...): 0 when every one fits, i + 1 for the first refused (every amount counted then goes back), or -1
 * when a call failed (op->errmsg says why; the amounts that were counted go back: nothing stays). */
int sl_mc_ctr_finish(sl_mcop_t *op, sl_ctr_item_t *items, int n);

/** Frees an sl_mc_ctr_start op (when its calls are still out, once the last one answers). */
void sl_mc_ctr_free(sl_mcop_t *op);

/** Sends deltas[i] (whole numbers; positive: INCR created with the window's ttl, negative: DECR, never below
 * 0; 0: nothing) to the window items[i].idx without waiting for the answers. */
void sl_mc_ctr_adjust(const sl_ctr_item_t *items, const double *deltas, int n);

#endif
