/* One pass over the raw bytes of an OpenAI Chat Completions request, for the AI route's lean path: the
 * client's body can go upstream as it is, so it is checked and read here instead of decoded into Lua tables.
 */
#ifndef SL_CHAT_SCAN_H
#define SL_CHAT_SCAN_H

#include <stddef.h>

/* What the scan read from a request it accepted. */
typedef struct sl_chat_scan {
    size_t model_off, model_len; /* the model string's bytes (it has no escape: they are its value) */
    int stream;                  /* 1: "stream": true; 0: no stream member */
    int include_usage;           /* 1: "stream_options" is exactly {"include_usage": true}; 0: no member */
    int stop_n;                  /* elements of an array "stop", else -1 */
    size_t end_off;              /* the offset of the object's closing brace */
    size_t n_off, n_len;         /* the number of "n" (n_len 0: absent or null) */
    size_t temp_off, temp_len;   /* the number of "temperature" (temp_len 0: absent or null) */
} sl_chat_scan_t;

/** 1 when s[0..len) is an OpenAI chat request the lean path can take without decoding it: well-formed UTF-8,
 *  one plain JSON object (sl_json_plain_object) that passes every check of sluice.ai.validate for chat, with
 * a model string without escapes, stream absent or true, stream_options absent or {"include_usage": true}
 * (and only with stream), no member named in deny (names separated by spaces: the parameters the provider
 * does not take) and none of the canonical extensions an OpenAI-wire driver removes (reasoning_content,
 *  reasoning_signature, is_error, cache_control, extra_content, "__ts__" call ids); *out filled. 0 for
 *  anything else, valid or not: the caller then decodes and checks the body the ordinary way (which also
 *  words the error). Never reads outside s[0..len). */
int sl_chat_scan(const char *s, size_t len, const char *deny, size_t denylen, sl_chat_scan_t *out);

#endif
