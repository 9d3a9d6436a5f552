#ifndef SL_RAG_REGISTRY_H
#define SL_RAG_REGISTRY_H

/* Which index each file path serves, for the whole process (every worker thread). A path has a slot, made on
 * first use and kept until exit; the slot holds the current index and a generation that changes whenever a
 * new index replaces it. A worker keeps its own reference and, before a search, compares the generation it
 * holds with the slot's (one atomic read): only when they differ does it take the slot's lock to swap. So a
 * rebuild replaces the index atomically, and a search never loses the index under it. */
#include <stddef.h>
#include <stdint.h>

#include "rag/index.h"

typedef struct sl_rag_slot sl_rag_slot_t;

/** The slot of path (created on first use, never freed); NULL for an empty path, one over PATH_MAX, or out of
 *  memory. Loads nothing. */
sl_rag_slot_t *sl_rag_slot(const char *path, size_t len);
/** The slot's generation: 0 until an index was loaded, then changed by every replacement. */
uint64_t sl_rag_slot_gen(const sl_rag_slot_t *s);
/** The slot's current index with one reference for the caller (release it), loading the file on first use;
 *  *gen gets the generation it belongs to. NULL when no index could ever be loaded (the reason in err). */
sl_rag_index_t *sl_rag_slot_acquire(sl_rag_slot_t *s, uint64_t *gen, char *err, size_t errlen);
/** Loads the file again if it changed on disk since the current index was loaded (inode, size, mtime), or
 *  always with force. Returns 1 when a new index replaced the old one, 0 when nothing changed, or a negative
 *  code when the new file was refused: the current index keeps serving and the reason is kept (slot_error).
 */
int sl_rag_slot_reload(sl_rag_slot_t *s, int force, char *err, size_t errlen);
/** The reason the last load of the slot failed ("" after a success); copied into err. */
void sl_rag_slot_error(sl_rag_slot_t *s, char *err, size_t errlen);
/** Wall-clock time of the current index's load (0: none). */
double sl_rag_slot_loaded_at(sl_rag_slot_t *s);

#endif
