/* Shared dictionaries: named key/value stores shared by all worker threads of the process.
 * Each dict has a fixed memory budget split over shards (one mutex each) with a per-shard LRU and
 * per-entry TTLs on the monotonic clock. Values never leave the lock by pointer: reads copy out. */
#ifndef SL_SHDICT_H
#define SL_SHDICT_H

#include <stddef.h>
#include <stdint.h>

/* Value types. */
#define SL_SHDICT_NIL 0
#define SL_SHDICT_NUMBER 1
#define SL_SHDICT_STRING 2
#define SL_SHDICT_BOOLEAN 3

/* Return codes (negative errno values, spelled out so FFI users need no errno.h). */
#define SL_SHDICT_NOT_FOUND (-2)   /* -ENOENT */
#define SL_SHDICT_NOMEM (-12)      /* -ENOMEM: does not fit even after evicting everything */
#define SL_SHDICT_EXISTS (-17)     /* -EEXIST: add on a live key */
#define SL_SHDICT_TOOBIG (-27)     /* -EFBIG: key + value over sl_shdict_max_item (never fits, even empty) */
#define SL_SHDICT_INVALID (-22)    /* -EINVAL */
#define SL_SHDICT_NOT_NUMBER (-33) /* -EDOM: incr on a non-number */
#define SL_SHDICT_NOBUFS (-105)    /* -ENOBUFS: caller buffer too small; the needed size is reported */

#define SL_SHDICT_MAX_NAME 63
#define SL_SHDICT_MIN_SIZE 1024

typedef struct sl_shdict sl_shdict_t;

/** Creates dict `name` with a budget of `size` bytes; main thread only, before workers start. Owned by
 *  the registry until sl_shdict_close_all. Returns 0, -EEXIST, -EINVAL (name or size), -ENOSPC, -ENOMEM. */
int sl_shdict_create(const char *name, size_t size);

/** Looks a dict up by name; borrowed pointer valid until sl_shdict_close_all, NULL when unknown. */
sl_shdict_t *sl_shdict_find(const char *name, size_t len);

/** Copies the value of key out: *type, *num (numbers, booleans as 0/1), string bytes into buf with
 *  *vlen, *flags. Returns 0, SL_SHDICT_NOT_FOUND (absent or expired), or SL_SHDICT_NOBUFS with *vlen set
 *  to the size buf needs (nothing else filled; retry with a bigger buffer). */
int sl_shdict_get(sl_shdict_t *d, const char *key, size_t klen, int *type, double *num, char *buf,
                  size_t buflen, size_t *vlen, uint32_t *flags);

/** Stores a value (SL_SHDICT_NIL deletes); ttl in seconds, 0 = never expires. Evicts expired, then least
 *  recently used entries to make room, setting *forcible (may be NULL) when live entries were evicted.
 *  Returns 0, SL_SHDICT_TOOBIG (over sl_shdict_max_item; the old value stays), SL_SHDICT_NOMEM,
 *  SL_SHDICT_INVALID. */
int sl_shdict_set(sl_shdict_t *d, const char *key, size_t klen, int type, double num, const char *str,
                  size_t slen, double ttl, uint32_t flags, int *forcible);

/** As sl_shdict_set, only when the key is absent or expired; SL_SHDICT_EXISTS otherwise. */
int sl_shdict_add(sl_shdict_t *d, const char *key, size_t klen, int type, double num, const char *str,
                  size_t slen, double ttl, uint32_t flags, int *forcible);

/** As sl_shdict_set, only when the key is present and live; SL_SHDICT_NOT_FOUND otherwise. */
int sl_shdict_replace(sl_shdict_t *d, const char *key, size_t klen, int type, double num, const char *str,
                      size_t slen, double ttl, uint32_t flags, int *forcible);

/** Atomically adds delta to a number, writing the result to *out. An absent key is created as init + delta
 *  (ttl init_ttl) when has_init, else SL_SHDICT_NOT_FOUND. SL_SHDICT_NOT_NUMBER, SL_SHDICT_NOMEM. */
int sl_shdict_incr(sl_shdict_t *d, const char *key, size_t klen, double delta, int has_init, double init,
                   double init_ttl, double *out, int *forcible);

/** Compare-and-set of a number: stores num (ttl seconds, 0 = never) only when the live value is the number
 *  `old` (has_old), or when the key is absent or expired (!has_old); the state machines of rate limiters
 *  (leaky buckets) advance this way across workers. Returns 0 when stored, SL_SHDICT_EXISTS when the value
 * was something else (nothing changed; *cur is the live number, NAN when absent or not a number),
 * SL_SHDICT_NOMEM, SL_SHDICT_INVALID. *forcible (may be NULL) as sl_shdict_set. */
int sl_shdict_cas_num(sl_shdict_t *d, const char *key, size_t klen, int has_old, double old, double num,
                      double ttl, double *cur, int *forcible);

/** Removes key. Returns 0 or SL_SHDICT_NOT_FOUND. */
int sl_shdict_delete(sl_shdict_t *d, const char *key, size_t klen);

/** Remaining time to live of key in seconds in *ttl (0 = never expires). 0 or SL_SHDICT_NOT_FOUND. */
int sl_shdict_ttl(sl_shdict_t *d, const char *key, size_t klen, double *ttl);

/** Sets a new ttl (seconds, 0 = never) on a live key. 0, SL_SHDICT_NOT_FOUND, SL_SHDICT_INVALID. */
int sl_shdict_expire(sl_shdict_t *d, const char *key, size_t klen, double ttl);

/** Removes every entry. */
void sl_shdict_flush_all(sl_shdict_t *d);

/** Frees up to max expired entries (max <= 0: all); returns how many were freed. */
int sl_shdict_flush_expired(sl_shdict_t *d, int max);

/** Copies up to max live keys (max <= 0: all) into buf as [uint32 length][bytes]..., *count keys.
 *  SL_SHDICT_NOBUFS when buf is too small, with *needed the size it needs (retry bigger). */
int sl_shdict_get_keys(sl_shdict_t *d, int max, char *buf, size_t buflen, size_t *needed, int *count);

/** The budget in bytes given at creation. */
size_t sl_shdict_capacity(const sl_shdict_t *d);

/** Bytes still free for entries (summed over shards; a single entry must fit in one shard). */
size_t sl_shdict_free_space(sl_shdict_t *d);

/** The largest entry the dict can hold, key and value bytes together: one shard's budget less the entry
 *  header (a dict is split in up to 16 shards, each with 1/16 of the budget; 10m -> about 640 KiB). */
size_t sl_shdict_max_item(const sl_shdict_t *d);

/** Frees every dict; at exit, after the workers stopped. */
void sl_shdict_close_all(void);

/** Test hook: replaces the monotonic clock (nanoseconds); NULL restores it. Not thread-safe. */
void sl__shdict_set_clock(uint64_t (*now_ns)(void));

#endif
