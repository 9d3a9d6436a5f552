#ifndef SL_UTF8_H
#define SL_UTF8_H

#include <stddef.h>

/** 1 when s[0..len) is well-formed UTF-8 (RFC 3629: shortest forms only, no surrogates, nothing past
 * U+10FFFF), else 0 with *bad (when not NULL) set to the offset of the first byte that is not. Runs of ASCII
 * go 8 bytes at a time: for checking whole request bodies (Lua calls it through FFI). */
int sl_utf8_valid(const char *s, size_t len, size_t *bad);

#endif
