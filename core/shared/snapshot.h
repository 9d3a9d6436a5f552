#ifndef SL_SNAPSHOT_H
#define SL_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

/** Most workers a report slot is kept for (node.workers is at most 64). */
#define SL_SNAPSHOT_MAX_WORKERS 64

/** Publishes a new config snapshot (JSON) and returns its version (> 0), or a negative code on out of memory.
 *  Workers are woken through the registered notifier. */
int64_t sl_snapshot_publish(const char *json, size_t len);
/** Copies the current snapshot if its version differs from *version: returns 1 and a malloc'd copy the caller
 *  frees (and updates *version), 0 when nothing changed, negative on out of memory. */
int sl_snapshot_fetch(uint64_t *version, char **json, size_t *len);
/** Reserves the next plugin code version (1, 2, ...), for a snapshot that carries new plugin code. */
uint64_t sl_snapshot_next_code_version(void);
/** Records what worker id runs after it looked at snapshot `seen`: the config version and plugin code version
 * it serves, and why it did not take all of that snapshot (err, NULL or "" when it did). Out-of-range ids are
 *  ignored. */
void sl_snapshot_report(int worker, uint64_t seen, uint64_t config_version, uint64_t code_version,
                        const char *err);
/** Copies worker id's last report (err truncated to errlen): 1, 0 when it has not reported yet, -EINVAL for
 * an id out of range. */
int sl_snapshot_report_get(int worker, uint64_t *seen, uint64_t *config_version, uint64_t *code_version,
                           char *err, size_t errlen);
/** Registers the function called (from the publishing thread) after each publish. */
void sl_snapshot_on_publish(void (*fn)(void));
/** Frees the stored snapshot at exit. */
void sl_snapshot_close(void);

#endif
