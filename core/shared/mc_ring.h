#ifndef SL_MC_RING_H
#define SL_MC_RING_H

/* Which memcached server a key goes to (core/shared/memcached.c asks before every call): a ketama ring over
 * the configured servers (160 points each, MD5 as in ketama), with a circuit breaker per server shared by all
 * workers. A key goes to the first server after its hash on the ring whose circuit lets calls through, so
 * while one server is down only its keys move (to the next servers on the ring), and they move back once it
 * answers again. */

#include <stddef.h>

#define SL_MC_MAX_SERVERS 64

/* A server's circuit, for sl_mc_server_info. */
enum { SL_MC_SERVER_UP = 0, SL_MC_SERVER_DOWN = 1, SL_MC_SERVER_PROBING = 2 };

/** Builds the ring over n server names ("host:port", hashed as given) and the circuits: one opens after
 *  threshold failures in a row and lets one probe call through every retry_after seconds. Main thread, before
 *  the workers; 0, -EINVAL (no servers, too many) or -ENOMEM. */
int sl__mc_ring_init(const char *const *names, int n, int threshold, double retry_after);
/** Frees the ring (at exit). */
void sl__mc_ring_free(void);
/** The server for a key: its index, with *probe set when this call is the probe of an open circuit; -1 when
 *  every server's circuit is open (nothing may go out). Any thread. */
int sl__mc_ring_pick(const char *key, size_t klen, int *probe);
/** The outcome of a call sent to server i (probe: as pick set it). Any thread. */
void sl__mc_ring_result(int i, int ok, int probe);
/** A call picked as a probe that was never sent: lets the next one probe. */
void sl__mc_ring_unprobe(int i);

/** The number of configured servers (0 without node.memcached). */
int sl_mc_server_count(void);
/** Server i's address (into addr, cut to len), circuit state (SL_MC_SERVER_*) and failures in a row; 0, or -1
 *  when there is no server i. */
int sl_mc_server_info(int i, char *addr, size_t len, int *state, int *failures);

#endif
