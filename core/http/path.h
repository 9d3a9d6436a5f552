/* The request target of a client request, checked and normalised once before routing: pure functions over
 * bytes (no allocation, no global state), so they can be unit-tested and fuzzed alone. */
#ifndef SL_PATH_H
#define SL_PATH_H

#include <stddef.h>

/* sl_path_normalize flags */
#define SL_PATH_KEEP_ENCODED_SLASH 1u /* %2F stays as "%2F" (never decoded) instead of being refused */

/** Normalises an origin-form path (no query) from in[0..len) into out (out == in is fine: the result is never
 *  longer) and sets *out_len: %XX of unreserved characters decoded, the hex of other escapes upper-cased,
 *  "//" merged, dot-segments removed (RFC 3986 5.2.4). Returns 0, -EINVAL (no leading '/', bad escape),
 *  -EILSEQ (NUL, raw or %00), -EPERM (%2F without SL_PATH_KEEP_ENCODED_SLASH) or -ERANGE (climbs above "/").
 */
int sl_path_normalize(const char *in, size_t len, char *out, size_t *out_len, unsigned flags);

/** Checks "uri-host[:port]" (RFC 3986 reg-name without escapes or empty labels, IPv4 or [IPv6], then ':' and
 * up to 5 digits) as a Host header or an absolute-form authority must be; returns the host part's length
 * (brackets kept) or -EINVAL. */
int sl_authority_check(const char *s, size_t len);

/** Splits an absolute-form target "http[s]://authority[/path][?query]" (scheme case-insensitive): the
 *  authority is t[*auth_off, *auth_off + *auth_len), what follows it starts at *rest_off (may be len).
 * Returns 0, or -EINVAL when it is not http(s), carries userinfo or its authority fails sl_authority_check.
 */
int sl_target_absolute(const char *t, size_t len, size_t *auth_off, size_t *auth_len, size_t *rest_off);

#endif
