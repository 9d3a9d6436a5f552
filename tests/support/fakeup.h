/* Fake upstream connections for C tests (the sl_upnet_t seam, core/upstream/pool.h): an exchange opens,
 * writes and releases them as it would pooled ones; the test says when one is ready, what the upstream sends,
 * and when queued writes went out. One connection at a time, one kept idle for reuse. */
#ifndef SL_TEST_FAKEUP_H
#define SL_TEST_FAKEUP_H

#include "common/buf.h"
#include "upstream/pool.h"

/** What the fakes did and hold. */
typedef struct sl_fakeup {
    sl_upconn_t *uc;         /* in use by the exchange */
    sl_upconn_t *idle;       /* released as reusable (one is kept; opened again unless fresh is asked) */
    sl_upconn_t *connecting; /* opened, not ready yet: sl_fakeup_ready */
    sl_buf_t sent;           /* what the exchanges wrote, over all connections */
    int opens, fresh_opens, released, reusable, holds, unholds;
    int queue_writes; /* writes are queued (0) instead of taken at once: sl_fakeup_written completes them */
    double armed;     /* the timer's last arming, seconds (0: stopped) */
} sl_fakeup_t;

/** The fakes' state (one set per test process). */
extern sl_fakeup_t sl_fakeup;
/** The fakes as an sl_upnet_t: set it as a worker's pool net (sl__pool(w)->net). */
extern const sl_upnet_t sl_fakeup_net;

/** The connection being opened is ready (error 0) or failed to open (SL_UPERR_*). */
void sl_fakeup_ready(int error);
/** The upstream sends n bytes on the connection in use. */
void sl_fakeup_send(const char *s, size_t n);
/** The queued writes of the connection in use went out. */
void sl_fakeup_written(void);
/** Forgets everything (the idle connection freed). */
void sl_fakeup_reset(void);

#endif
