/* Finds one value in raw JSON bytes by its path (member names and element positions), so a plugin that
 * changed a few strings of a decoded request can splice them into the client's bytes instead of re-encoding
 * the whole table. The bytes were decoded before (by cjson): this reads them, it does not validate them;
 * anything it does not expect makes it answer SL_JSON_UNSURE, never read past len. */
#ifndef SL_JSON_LOCATE_H
#define SL_JSON_LOCATE_H

#include <stddef.h>

/* The path leads to no value. */
#define SL_JSON_ABSENT (-1)
/* The bytes do not say one value: a repeated or escaped key on the path, bytes that are not JSON. */
#define SL_JSON_UNSURE (-2)

/* One step of a path: an object's member (key) or an array's element (key NULL, index from 0). */
typedef struct sl_json_step {
    const char *key;
    size_t key_len;
    size_t index;
} sl_json_step_t;

/** The value at path[0..n) in s[0..len): 0 with *from at its first byte and *to past its last (a string's
 *  quotes included); SL_JSON_ABSENT when a member is missing, an index is past the end or a step meets a
 * value of another kind; SL_JSON_UNSURE when an object on the path repeats the key looked for or has a key
 * with an escape (it could be the one), or on bytes that are not JSON where they are read. */
int sl_json_locate(const char *s, size_t len, const sl_json_step_t *path, int n, size_t *from, size_t *to);

/* What a span of sl_chat_spans holds. */
enum {
    SL_CHAT_ROLE = 1,  /* messages[msg].role (any value) */
    SL_CHAT_CONTENT,   /* messages[msg].content, a string */
    SL_CHAT_PART_TYPE, /* messages[msg].content[sub].type (any value; the element is an object) */
    SL_CHAT_PART_TEXT, /* messages[msg].content[sub].text (any value; the element is an object) */
    SL_CHAT_TOOL_ARGS, /* messages[msg].tool_calls[sub].function.arguments, a string */
    SL_CHAT_FC_ARGS,   /* messages[msg].function_call.arguments, a string */
    SL_CHAT_PROMPT,    /* prompt (sub -1) or prompt[sub], a string */
    SL_CHAT_INPUT      /* input (sub -1) or input[sub], a string */
};

/* One value of a chat request: what it is, where (message and element from 0, -1 for none), its bytes. */
typedef struct sl_chat_span {
    int kind;
    int msg;
    int sub;
    size_t from, to;
} sl_chat_span_t;

/** The values of an OpenAI chat request s[0..len) that hold its texts (and the roles and part types that say
 *  what they are), in byte order, into out[0..max). s must be one JSON object without a repeated or escaped
 *  key (sl_json_plain_object): this reads it, it does not check it. Returns how many, or -1 when more than
 *  max or on bytes it cannot read. */
int sl_chat_spans(const char *s, size_t len, sl_chat_span_t *out, int max);

#endif
