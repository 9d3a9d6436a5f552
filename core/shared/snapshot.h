#ifndef SL_SNAPSHOT_H
#define SL_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

/** Publishes a new config snapshot (JSON) and returns its version (> 0), or a negative code on out of memory.
 *  bump_plugins also asks workers to reload plugin code. Workers are woken through the registered notifier. */
int64_t sl_snapshot_publish(const char *json, size_t len, int bump_plugins);
/** Copies the current snapshot if its version differs from *version: returns 1 and a malloc'd copy the caller
 *  frees (and updates *version and *plugin_gen), 0 when nothing changed, negative on out of memory. */
int sl_snapshot_fetch(uint64_t *version, uint64_t *plugin_gen, char **json, size_t *len);
/** Registers the function called (from the publishing thread) after each publish. */
void sl_snapshot_on_publish(void (*fn)(void));
/** Frees the stored snapshot at exit. */
void sl_snapshot_close(void);

#endif
