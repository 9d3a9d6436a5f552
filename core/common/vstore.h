#ifndef SL_VSTORE_H
#define SL_VSTORE_H

/* An in-memory vector store for one node: named, shared by every worker thread, updatable (add, replace,
 * remove, expire, evict the oldest when full) and searched by cosine with the same k-NN code as the RAG
 * index (vector.h). Made for the semantic cache: its keys are the cache's keys, its vectors the prompts'
 * embeddings. docs/vector.md is the reference; the Lua side is sluice.vector (lua/sluice/pdk/vector.lua). */
#include <stddef.h>
#include <stdint.h>

#include "common/vector.h"

/** Longest key (bytes). */
#define SL_VSTORE_KEY_MAX 250
/** Most entries one store may hold. */
#define SL_VSTORE_MAX_CAPACITY (1u << 24)

typedef struct sl_vstore sl_vstore_t;

/** One search result: the key (copied) and its cosine similarity. */
typedef struct sl_vstore_hit {
    char key[SL_VSTORE_KEY_MAX];
    uint32_t key_len;
    float score;
} sl_vstore_hit_t;

/** Quantised copies a store keeps beside its float rows (for large stores). */
enum { SL_VSTORE_I8 = 1, SL_VSTORE_BITS = 2 };

/** The store named name with these dimensions, capacity and copies (SL_VSTORE_*), with one reference for the
 *  caller (sl_vstore_release). The same name with the same settings gives the same store in every worker;
 * with other settings a new empty store replaces it under that name (holders of the old one keep it until
 * they release it). NULL and *err = -EINVAL (empty or long name, dims 0 or over SL_VEC_MAX_DIMS, capacity 0
 * or over SL_VSTORE_MAX_CAPACITY, unknown flags) or -ENOMEM. */
sl_vstore_t *sl_vstore_open(const char *name, size_t nlen, uint32_t dims, uint32_t capacity, uint32_t flags,
                            int *err);
/** Drops a reference; the last one frees the store. NULL is ignored. */
void sl_vstore_release(sl_vstore_t *s);
/** Adds key with vector v (dims floats, normalised here), replacing the key's old vector; ttl > 0: the entry
 *  expires after ttl seconds (wall clock). When the store is full the oldest entry (by insertion) is evicted
 *  and its key copied to evicted (SL_VSTORE_KEY_MAX bytes of room), its length to *evicted_len. Returns 0
 *  (added), 1 (replaced), 2 (added after evicting), or -EINVAL (bad key, a zero or NaN vector). */
int sl_vstore_add(sl_vstore_t *s, const char *key, size_t klen, const float *v, double ttl, char *evicted,
                  uint32_t *evicted_len);
/** sl_vstore_add with a bound per group: the group of key is its first glen bytes (glen <= klen); when gmax >
 * 0 and gmax live keys share them, the oldest of those is evicted (reported as for a full store) instead of
 * the store's oldest. glen 0 or gmax 0: sl_vstore_add. The group is found by a walk over the store's entries
 *  (linear in their number). Same returns as sl_vstore_add. */
int sl_vstore_add_in(sl_vstore_t *s, const char *key, size_t klen, size_t glen, uint32_t gmax, const float *v,
                     double ttl, char *evicted, uint32_t *evicted_len);
/** Removes key; returns 0, or -ENOENT when it is not there. */
int sl_vstore_remove(sl_vstore_t *s, const char *key, size_t klen);
/** The k entries nearest to q (dims floats, any length) with a score >= min_score, best first, expired ones
 *  left out; mode as sl_vec_search (SL_VEC_AUTO picks). Returns the count, or -EINVAL / -ENOMEM. */
int sl_vstore_search(sl_vstore_t *s, const float *q, uint32_t k, float min_score, int mode,
                     sl_vstore_hit_t *out);
/** sl_vstore_search over the keys that start with prefix (plen bytes; 0: every key) only. */
int sl_vstore_search_in(sl_vstore_t *s, const char *prefix, size_t plen, const float *q, uint32_t k,
                        float min_score, int mode, sl_vstore_hit_t *out);
/** Live entries (expired ones count until they are evicted or removed). */
uint32_t sl_vstore_count(sl_vstore_t *s);
/** Dimensions and capacity of the store. */
uint32_t sl_vstore_dims(const sl_vstore_t *s);
uint32_t sl_vstore_capacity(const sl_vstore_t *s);
/** Removes every entry. */
void sl_vstore_clear(sl_vstore_t *s);

#endif
