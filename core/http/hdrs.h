/* Header lists collected from llhttp's pieces (a name or a value may come in several callbacks). Each entry
 * holds offsets into the caller's head bytes while the head grows (those bytes may move), then pointers once
 * it is complete. Shared by the request parser (parser.c) and upstream responses (upstream/uphdrs.c); the
 * caller appends the bytes and enforces its own size limit. */
#ifndef SL_HDRS_H
#define SL_HDRS_H

#include <stddef.h>
#include <stdint.h>

/** One header: pointers into the owning request's (or upstream response's) memory. */
typedef struct sl_header {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
} sl_header_t;

/** A list being collected. Before sl__hdrs_finish an entry's name is the offset of its first byte and its
 * value that offset plus one (NULL: no value yet, even at offset 0). Zeroed memory is an empty list. */
typedef struct sl_hdrs {
    sl_header_t *list;
    uint32_t n, cap;
    uint8_t in_value; /* the last piece was a value: the next name piece starts a new entry */
} sl_hdrs_t;

/** A name piece of len bytes the caller stores at offset off: starts a new entry first when a value came last
 *  (or none yet). 0, -E2BIG past max entries, or -ENOMEM. */
int sl__hdrs_name(sl_hdrs_t *h, size_t off, size_t len, uint32_t max);
/** A value piece of len bytes at offset off, for the last entry. 0, or -EINVAL when no name came first. */
int sl__hdrs_value(sl_hdrs_t *h, size_t off, size_t len);
/** Adds a whole entry (name and value at their offsets). 0, -E2BIG past max entries, or -ENOMEM. */
int sl__hdrs_add(sl_hdrs_t *h, size_t noff, size_t nlen, size_t voff, size_t vlen, uint32_t max);
/** Points an entry's value at offset off (before sl__hdrs_finish). */
static inline void sl__hdrs_set_value(sl_header_t *e, size_t off, size_t len)
{
    e->value = (const char *)(uintptr_t)(off + 1);
    e->value_len = (uint32_t)len;
}
/** The offset of an entry's value before sl__hdrs_finish (the entry must have one). */
static inline size_t sl__hdrs_value_off(const sl_header_t *e)
{
    return (size_t)(uintptr_t)e->value - 1;
}
/** The offset of an entry's name before sl__hdrs_finish. */
static inline size_t sl__hdrs_name_off(const sl_header_t *e)
{
    return (size_t)(uintptr_t)e->name;
}
/** Turns offsets into pointers into base (the complete head bytes); an entry without a value gets "". */
void sl__hdrs_finish(sl_hdrs_t *h, const char *base);
/** Empties the list (its memory is kept for the next head). */
void sl__hdrs_reset(sl_hdrs_t *h);
/** Frees the list (left empty). */
void sl__hdrs_free(sl_hdrs_t *h);

#endif
