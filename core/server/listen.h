#ifndef SL_LISTEN_H
#define SL_LISTEN_H

#include "server/worker.h"

/* How long accepting pauses when accept4 fails for lack of descriptors or memory (nginx: 500 ms too). */
#define SL_ACCEPT_PAUSE_MS 500

/** Binds l to sl_settings.listen[idx] for worker w (SO_REUSEPORT) and starts accepting on w's loop; returns 0
 *  or a negative errno-style code (logged), l then holds nothing to close. */
int sl_listener_open(sl_worker_t *w, sl_listener_t *l, int idx);
/** Stops accepting and closes the socket (once its handle is closed); no-op when not open or already closing.
 */
void sl_listener_close(sl_listener_t *l);
/** Logs, once per call, what was refused or paused since the last call, with counts (called every second). */
void sl_listener_report(sl_worker_t *w);

#endif
