/* Checks and reads on raw JSON bytes, for the AI layer's hot path: what would otherwise be decoded into Lua
 * tables (a C API call LuaJIT does not compile, and garbage per request) just to look at a few values. */
#ifndef SL_JSON_CHECK_H
#define SL_JSON_CHECK_H

#include <stddef.h>

/** 1 when s[0..len) is one JSON object (RFC 8259: strict numbers, literals and escapes, surrogates paired,
 *  whitespace around it) in which no object repeats a key and no key has an escape; 0 otherwise (also when
 *  nested deeper than 64 or holding more than 256 keys on one path). Such bytes mean exactly what a decoder
 *  gives, whatever decoder reads them: they can be sent on instead of the same value re-encoded. */
int sl_json_plain_object(const char *s, size_t len);

/** The byte after the JSON value starting at p (no whitespace before it), checked as sl_json_plain_object
 *  checks an object (no repeated or escaped key in any object of it, nested at most 64 deep), or NULL. */
const char *sl_json_plain_value(const char *p, const char *end);

/** The byte after the JSON string whose opening quote is at p (strict escapes, paired surrogates), or NULL;
 *  *esc is set when it has an escape (then its bytes are not its value). */
const char *sl_json_string_end(const char *p, const char *end, int *esc);

/** The byte after the RFC 8259 number starting at p, or NULL. */
const char *sl_json_number_end(const char *p, const char *end);

/** Reads the OpenAI usage object at s[off..len) (off: its '{'), when it is a plain one: members numbers
 *  (integers of at most 15 digits), null, or objects of those (one level), keys without escapes or braces.
 *  Fills u[0..4] = prompt_tokens, completion_tokens, total_tokens, cached_tokens (prompt_tokens_details, else
 *  prompt_cache_hit_tokens), reasoning_tokens (completion_tokens_details); a repeated key: the last one
 * counts. Returns the set of those present (bit i for u[i]; null is absent), or -1 for any other object: the
 * caller decodes that one itself. */
int sl_json_usage(const char *s, size_t len, size_t off, double *u);

/** The offset of the '{' of the last `"usage"` key in s[from..len) followed by ':' and an object (whitespace
 *  allowed between them), or -1 when there is none. A plain search: quotes inside JSON strings are escaped,
 * so an unescaped `"usage"` can only be a key (the top-level usage comes last in OpenAI bodies). */
long sl_json_usage_at(const char *s, size_t len, size_t from);

#endif
