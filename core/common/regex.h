/* PCRE2 regular expressions for the PDK (sluice.re): flag-letter options, JIT by default, a per-thread
 * LRU cache of compiled patterns ('o'), and per-thread match data so matching does not allocate. */
#ifndef SL_REGEX_H
#define SL_REGEX_H

#include <stddef.h>

#define SL_REGEX_CACHE_SIZE 256
/* Negative PCRE2 match errors are returned as SL_REGEX_PCRE_BASE + pcre2 code, apart from errno values. */
#define SL_REGEX_PCRE_BASE (-1000)

typedef struct sl_regex sl_regex_t;

/** Compiles pat with flag letters (i caseless, m multiline, s dotall, x extended, u utf, a anchored,
 *  D duplicate names, j JIT (always on), o cache per thread). *out holds a reference the caller drops
 *  with sl_regex_free, also for cached patterns. A regex must stay on the thread that compiled it.
 *  Returns 0, -EINVAL with a message in err (bad flag or pattern), -ENOMEM. */
int sl_regex_compile(const char *pat, size_t len, const char *flags, size_t flen, sl_regex_t **out, char *err,
                     size_t errlen);

/** Number of capture groups, group 0 not counted. */
int sl_regex_ncaptures(const sl_regex_t *re);

/** Number of named groups. */
int sl_regex_name_count(const sl_regex_t *re);

/** The i-th name (0-based; borrowed, not NUL-terminated for FFI use: *len bytes) and returns its group
 *  number, or -EINVAL when i is out of range. */
int sl_regex_name(const sl_regex_t *re, int i, const char **name, size_t *len);

/** Matches subj from byte offset start. Fills ovec with `pairs` (start, end) byte offset pairs, -1 for
 *  unset groups. Returns the number of pairs the match set (> 0), 0 for no match, -EINVAL / -E2BIG for
 *  bad arguments, or SL_REGEX_PCRE_BASE + a PCRE2 error (e.g. invalid UTF-8, match limit). */
int sl_regex_exec(const sl_regex_t *re, const char *subj, size_t len, size_t start, int *ovec, int pairs);

/** Writes the message for a negative sl_regex_exec code into buf (NUL-terminated); returns 0. */
int sl_regex_strerror(int code, char *buf, size_t len);

/** Drops a reference; the regex is freed when neither callers nor the cache hold it. NULL is fine. */
void sl_regex_free(sl_regex_t *re);

/** Frees the calling thread's cache and match data; call when a worker thread exits. */
void sl_regex_thread_cleanup(void);

#endif
