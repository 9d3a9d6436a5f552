/* Window counters of the limit plugins in a shared dict (sluice.limits, ai-rate-limit): every limit of a
 * request reserved in one call, all or nothing, with the window arithmetic done here instead of one FFI call
 * and a few tables per limit in Lua. Built on the shared dict's public calls only (shdict.h): same atomicity,
 * same keys
 * ("<prefix><window index>") and values as the Lua path, so both can count the same limit. */
#ifndef SL_COUNTERS_H
#define SL_COUNTERS_H

#include <stddef.h>
#include <stdint.h>

#include "shared/shdict.h"

/** One limit of a request: in, the key prefix, window, limit and amount; out, what the reservation found. */
typedef struct sl_ctr_item {
    const char *prefix; /* the counter key without its window index (owned by the caller) */
    uint32_t plen;
    int32_t sliding; /* 1: the previous window counts by the share of it still inside the last `window` s */
    double window;   /* seconds */
    double limit;
    double amount;      /* to reserve */
    double remaining;   /* out: left after this request (refused: what it had before it) */
    double reset;       /* out: seconds to the end of the window */
    double retry_after; /* out (refused, not never): seconds until the amount fits */
    double idx;         /* out: the window index counted in (for sl_ctr_adjust) */
    double count;       /* out: the window's count with the amount in it */
    int32_t ok;         /* out: 1 fits, 0 refused, 2 refused and never fits (amount over the limit) */
} sl_ctr_item_t;

/** Most items in one call (the limit plugins allow 16 limits per conf). */
#define SL_CTR_MAX 16

/** Reserves items[i].amount in the current window (now: wall-clock seconds) of each item, all or nothing:
 * each count is incremented (created with a ttl of one window, two for sliding, plus 1 s); if any is over its
 * limit every amount is taken back. Returns 0 when all fit, i + 1 for the first item refused, or a negative
 *  SL_SHDICT_* code (the dict failed; nothing stays counted). */
int sl_ctr_reserve(sl_shdict_t *d, sl_ctr_item_t *items, int n, double now);

/** Adds deltas[i] (negative: takes back, never below 0; 0: nothing) to the window items[i].idx that
 *  sl_ctr_reserve counted in; a counter gone meanwhile is created again for a positive delta. */
void sl_ctr_adjust(sl_shdict_t *d, const sl_ctr_item_t *items, const double *deltas, int n);

/** Writes item it's counter key for window idx into key (room for SL_CTR_KEY_MAX bytes): its length, or 0
 * when it does not fit. (For the memcached counters, mc_counters.c.) */
size_t sl__ctr_key(char *key, const sl_ctr_item_t *it, double idx);
/** Sets it's verdict (ok, remaining, reset, retry_after) from its window's count (amount included) and the
 *  previous window's weighted count (sliding; 0 otherwise), now it->idx is set. */
void sl__ctr_settle(sl_ctr_item_t *it, double count, double prev, double now);

#define SL_CTR_KEY_MAX 512

#endif
