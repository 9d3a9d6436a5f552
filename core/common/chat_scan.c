/* The lean path's check of an OpenAI chat request (see chat_scan.h). It accepts a subset of what
 * lua/sluice/ai/validate.lua accepts (after cjson decodes the body): whatever it is unsure of goes to that
 * slower path, which gives the answer, so a refusal here is never wrong, only slower. The structure it walks
 * (top level, messages, content parts, tool calls, tools, tool_choice) is checked member by member; the
 * values it does not look into are scanned by sl_json_plain_value. */
#include "common/chat_scan.h"

#include <string.h>

#include "common/json_check.h"
#include "common/utf8.h"

#define MAX_MEMBERS 64 /* members of one walked object compared for repeats; more: the slow path */

typedef const char *(*member_fn)(void *st, const char *k, size_t kl, const char *v, const char *e);

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static int key_is(const char *k, size_t kl, const char *lit)
{
    size_t n = strlen(lit);
    return kl == n && memcmp(k, lit, n) == 0;
}

static const char *lit_end(const char *p, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(e - p) >= n && memcmp(p, lit, n) == 0 ? p + n : NULL;
}

/* The byte after a string value without escapes at p (*s, *sl: its bytes), or NULL. */
static const char *plain_string(const char *p, const char *e, const char **s, size_t *sl)
{
    int esc;
    const char *q = sl_json_string_end(p, e, &esc);
    if (q == NULL || esc)
        return NULL;
    *s = p + 1;
    *sl = (size_t)(q - p - 2);
    return q;
}

/* A string value at p, escapes or not; NULL for anything else. */
static const char *any_string(const char *p, const char *e)
{
    int esc;
    return sl_json_string_end(p, e, &esc);
}

static const char *null_or_string(const char *p, const char *e)
{
    return p < e && *p == 'n' ? lit_end(p, e, "null") : any_string(p, e);
}

/* A number (cjson: a Lua number), or null. */
static const char *null_or_number(const char *p, const char *e)
{
    return p < e && *p == 'n' ? lit_end(p, e, "null") : sl_json_number_end(p, e);
}

/* An integer as validate.lua's is_integer sees it, or null; only the plain form -?digits of at most 15 digits
 * (exact below 2^53): a fraction or exponent that still makes an integer goes to the slow path. */
static const char *null_or_integer(const char *p, const char *e)
{
    if (p < e && *p == 'n')
        return lit_end(p, e, "null");
    const char *q = sl_json_number_end(p, e);
    if (q == NULL)
        return NULL;
    const char *d = *p == '-' ? p + 1 : p;
    for (const char *c = d; c < q; c++)
        if (*c < '0' || *c > '9')
            return NULL;
    return q - d <= 15 ? q : NULL;
}

static const char *null_or_object(const char *p, const char *e)
{
    if (p < e && *p == 'n')
        return lit_end(p, e, "null");
    return p < e && *p == '{' ? sl_json_plain_value(p, e) : NULL;
}

/* The members of the object at p, each handed to fn with its value's first byte (fn returns the byte after
 * the value, or NULL); keys unescaped and unrepeated. Returns the byte after '}' or NULL. */
static const char *walk_object(const char *p, const char *e, member_fn fn, void *st)
{
    const char *key[MAX_MEMBERS];
    size_t klen[MAX_MEMBERS];
    int n = 0;
    if (p >= e || *p != '{')
        return NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == '}')
        return p + 1;
    for (;;) {
        const char *k;
        size_t kl;
        p = plain_string(p, e, &k, &kl);
        if (p == NULL || n == MAX_MEMBERS)
            return NULL;
        for (int i = 0; i < n; i++)
            if (klen[i] == kl && memcmp(key[i], k, kl) == 0)
                return NULL;
        key[n] = k;
        klen[n++] = kl;
        p = skip_ws(p, e);
        if (p >= e || *p != ':')
            return NULL;
        p = skip_ws(p + 1, e);
        if (p >= e) /* a member's value is never empty: every member function may look at its first byte */
            return NULL;
        p = fn(st, k, kl, p, e);
        if (p == NULL)
            return NULL;
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        return p < e && *p == '}' ? p + 1 : NULL;
    }
}

/* The elements of the array at p, each checked by fn (first byte -> byte after, or NULL); *count set. */
static const char *walk_array(const char *p, const char *e, const char *(*fn)(const char *, const char *),
                              int *count)
{
    *count = 0;
    if (p >= e || *p != '[')
        return NULL;
    p = skip_ws(p + 1, e);
    if (p < e && *p == ']')
        return p + 1;
    for (;;) {
        p = p < e ? fn(p, e) : NULL; /* nor is an element: each function may look at its first byte */
        if (p == NULL)
            return NULL;
        ++*count;
        p = skip_ws(p, e);
        if (p < e && *p == ',') {
            p = skip_ws(p + 1, e);
            continue;
        }
        return p < e && *p == ']' ? p + 1 : NULL;
    }
}

/* ---- content parts: {type, text | image_url{url} | input_audio | file}, no cache_control */

typedef struct part {
    const char *type;
    size_t type_len;
    int has_type, text_string, url_string, image_url, other_ok; /* other_ok: input_audio/file kinds fine */
    int audio, file;                                            /* 1: an object or null; 2: something else */
} part_t;

static const char *url_member(void *st, const char *k, size_t kl, const char *v, const char *e)
{
    part_t *pt = st;
    if (key_is(k, kl, "url")) {
        pt->url_string = 1;
        return any_string(v, e);
    }
    return sl_json_plain_value(v, e);
}

static const char *part_member(void *st, const char *k, size_t kl, const char *v, const char *e)
{
    part_t *pt = st;
    if (key_is(k, kl, "type")) {
        pt->has_type = 1;
        return plain_string(v, e, &pt->type, &pt->type_len);
    }
    if (key_is(k, kl, "text")) {
        const char *q = sl_json_plain_value(v, e);
        pt->text_string = q != NULL && *v == '"';
        return q;
    }
    if (key_is(k, kl, "image_url")) {
        pt->image_url = 1;
        return walk_object(v, e, url_member, pt);
    }
    if (key_is(k, kl, "input_audio") || key_is(k, kl, "file")) {
        int *slot = k[0] == 'f' ? &pt->file : &pt->audio;
        const char *q = null_or_object(v, e);
        *slot = q != NULL ? 1 : 2;
        return q != NULL ? q : sl_json_plain_value(v, e);
    }
    if (key_is(k, kl, "cache_control"))
        return NULL;
    return sl_json_plain_value(v, e);
}

static const char *content_part(const char *p, const char *e)
{
    part_t pt = {0};
    p = walk_object(p, e, part_member, &pt);
    if (p == NULL || !pt.has_type)
        return NULL;
    const char *t = pt.type;
    size_t tl = pt.type_len;
    if (key_is(t, tl, "text") || key_is(t, tl, "input_text"))
        return pt.text_string ? p : NULL;
    if (key_is(t, tl, "image_url"))
        return pt.image_url && pt.url_string ? p : NULL;
    if (key_is(t, tl, "input_audio"))
        return pt.audio == 2 ? NULL : p;
    if (key_is(t, tl, "file"))
        return pt.file == 2 ? NULL : p;
    return p;
}

/* ---- tool calls: {id?, type?, function: {name, arguments?}}, no extra_content, no "__ts__" id */

typedef struct call {
    int fn, name;
} call_t;

/* A string call id the OpenAI-wire drivers pass on unchanged (no Gemini signature to cut), or null. */
static const char *call_id(const char *p, const char *e)
{
    const char *s;
    size_t sl;
    if (p < e && *p == 'n')
        return lit_end(p, e, "null");
    const char *q = plain_string(p, e, &s, &sl);
    if (q == NULL)
        return NULL;
    for (size_t i = 0; i + 6 <= sl; i++)
        if (memcmp(s + i, "__ts__", 6) == 0)
            return NULL;
    return q;
}

static const char *function_member(void *st, const char *k, size_t kl, const char *v, const char *e)
{
    call_t *c = st;
    if (key_is(k, kl, "name")) {
        c->name = 1;
        return any_string(v, e);
    }
    if (key_is(k, kl, "arguments"))
        return null_or_string(v, e);
    return sl_json_plain_value(v, e);
}

static const char *call_member(void *st, const char *k, size_t kl, const char *v, const char *e)
{
    call_t *c = st;
    if (key_is(k, kl, "id"))
        return call_id(v, e);
    if (key_is(k, kl, "type"))
        return null_or_string(v, e);
    if (key_is(k, kl, "function")) {
        c->fn = 1;
        return walk_object(v, e, function_member, c);
    }
    if (key_is(k, kl, "extra_content"))
        return NULL;
    return sl_json_plain_value(v, e);
}

static const char *tool_call(const char *p, const char *e)
{
    call_t c = {0};
    p = walk_object(p, e, call_member, &c);
    return p != NULL && c.fn && c.name ? p : NULL;
}

/* ---- messages: {role, content, name?, tool_calls?, tool_call_id?} */

typedef struct msg {
    const char *role;
    size_t role_len;
    int content;    /* 0 absent or null, 1 string, 2 array of parts */
    int tool_calls; /* 0 absent or null, 1 array of calls */
    int call_id;    /* 1: tool_call_id is a string */
} msg_t;

static const char *msg_member(void *st, const char *k, size_t kl, const char *v, const char *e)
{
    msg_t *m = st;
    int n;
    if (key_is(k, kl, "role"))
        return plain_string(v, e, &m->role, &m->role_len);
    if (key_is(k, kl, "content")) {
        if (*v == 'n')
            return lit_end(v, e, "null");
        m->content = *v == '"' ? 1 : 2;
        return *v == '"' ? any_string(v, e) : walk_array(v, e, content_part, &n);
    }
    if (key_is(k, kl, "name"))
        return null_or_string(v, e);
    if (key_is(k, kl, "tool_calls")) {
        if (*v == 'n')
            return lit_end(v, e, "null");
        m->tool_calls = 1;
        return walk_array(v, e, tool_call, &n);
    }
    if (key_is(k, kl, "tool_call_id")) {
        m->call_id = *v == '"';
        return call_id(v, e);
    }
    if (key_is(k, kl, "reasoning_content") || key_is(k, kl, "reasoning_signature") ||
        key_is(k, kl, "is_error"))
        return NULL;
    return sl_json_plain_value(v, e);
}

static const char *message(const char *p, const char *e)
{
    msg_t m = {0};
    p = walk_object(p, e, msg_member, &m);
    if (p == NULL || m.role == NULL)
        return NULL;
    const char *r = m.role;
    size_t rl = m.role_len;
    int assistant = key_is(r, rl, "assistant"), function = key_is(r, rl, "function");
    int tool = key_is(r, rl, "tool");
    if (!assistant && !function && !tool && !key_is(r, rl, "system") && !key_is(r, rl, "developer") &&
        !key_is(r, rl, "user"))
        return NULL;
    if (m.content == 0 && !assistant && !function)
        return NULL;
    if (m.tool_calls && !assistant)
        return NULL; /* unchecked by validate.lua, but the drivers look at them: the slow path decides */
    if (tool && !m.call_id)
        return NULL;
    return p;
}

/* ---- tools and tool_choice */

typedef struct tool {
    const char *type;
    size_t type_len;
    int fn, name;
} tool_t;

static const char *tool_fn_member(void *st, const char *k, size_t kl, const char *v, const char *e)
{
    tool_t *t = st;
    if (key_is(k, kl, "name")) {
        t->name = 1;
        return any_string(v, e);
    }
    if (key_is(k, kl, "description"))
        return null_or_string(v, e);
    if (key_is(k, kl, "parameters"))
        return null_or_object(v, e);
    return sl_json_plain_value(v, e);
}

static const char *tool_member(void *st, const char *k, size_t kl, const char *v, const char *e)
{
    tool_t *t = st;
    if (key_is(k, kl, "type"))
        return plain_string(v, e, &t->type, &t->type_len);
    if (key_is(k, kl, "function")) {
        t->fn = 1;
        return walk_object(v, e, tool_fn_member, t);
    }
    if (key_is(k, kl, "cache_control"))
        return NULL;
    return sl_json_plain_value(v, e);
}

/* A tool (tools[i]) or a tool_choice object: {type, function?: {name, ...}}; a function type needs it. */
static const char *tool_object(const char *p, const char *e)
{
    tool_t t = {0};
    p = walk_object(p, e, tool_member, &t);
    if (p == NULL || t.type == NULL)
        return NULL;
    return !key_is(t.type, t.type_len, "function") || (t.fn && t.name) ? p : NULL;
}

/* ---- the top level */

typedef struct top {
    sl_chat_scan_t *out;
    const char *deny;
    size_t denylen;
    const char *model; /* its bytes, when a plain string */
    int messages, so;  /* so: members of stream_options */
    const char *n,
        *temp; /* the numbers of "n" and "temperature" (the last one, as a decoder keeps); NULL: null */
} top_t;

/* Where a number member's value is (*at), NULL when it is null; returns the scan's position after it. */
static const char *number_at(const char *q, const char *v, const char **at)
{
    if (q != NULL)
        *at = *v == 'n' ? NULL : v;
    return q;
}

static const char *so_member(void *st, const char *k, size_t kl, const char *v, const char *e)
{
    ((top_t *)st)->so++;
    return key_is(k, kl, "include_usage") ? lit_end(v, e, "true") : NULL;
}

static int denied(const top_t *t, const char *k, size_t kl)
{
    const char *d = t->deny, *end = t->deny + t->denylen;
    while (d < end) {
        const char *sp = memchr(d, ' ', (size_t)(end - d));
        const char *w = sp ? sp : end;
        if ((size_t)(w - d) == kl && memcmp(d, k, kl) == 0)
            return 1;
        d = w + 1;
    }
    return 0;
}

static const char *stop_string(const char *p, const char *e)
{
    return any_string(p, e);
}

static const char *top_member(void *st, const char *k, size_t kl, const char *v, const char *e)
{
    top_t *t = st;
    sl_chat_scan_t *o = t->out;
    const char *s;
    size_t sl;
    if (denied(t, k, kl))
        return NULL;
    if (key_is(k, kl, "model")) {
        const char *q = plain_string(v, e, &s, &sl);
        if (q != NULL) {
            t->model = s;
            o->model_len = sl;
        }
        return q;
    }
    if (key_is(k, kl, "messages")) {
        const char *q = walk_array(v, e, message, &t->messages);
        return t->messages > 0 ? q : NULL;
    }
    if (key_is(k, kl, "stream")) {
        o->stream = 1;
        return lit_end(v, e, "true");
    }
    if (key_is(k, kl, "stream_options")) {
        o->include_usage = 1;
        const char *q = walk_object(v, e, so_member, t);
        return t->so == 1 ? q : NULL; /* {} is not {"include_usage": true} */
    }
    if (key_is(k, kl, "n"))
        return number_at(null_or_integer(v, e), v, &t->n);
    if (key_is(k, kl, "temperature"))
        return number_at(null_or_number(v, e), v, &t->temp);
    if (key_is(k, kl, "max_tokens") || key_is(k, kl, "max_completion_tokens"))
        return null_or_integer(v, e);
    if (key_is(k, kl, "top_p") || key_is(k, kl, "presence_penalty") || key_is(k, kl, "frequency_penalty"))
        return null_or_number(v, e);
    if (key_is(k, kl, "stop")) {
        if (*v == '[')
            return walk_array(v, e, stop_string, &o->stop_n);
        return null_or_string(v, e);
    }
    if (key_is(k, kl, "response_format"))
        return null_or_object(v, e);
    if (key_is(k, kl, "tools")) {
        int n;
        return *v == 'n' ? lit_end(v, e, "null") : walk_array(v, e, tool_object, &n);
    }
    if (key_is(k, kl, "tool_choice")) {
        if (*v == '{')
            return tool_object(v, e);
        return null_or_string(v, e);
    }
    return sl_json_plain_value(v, e);
}

int sl_chat_scan(const char *s, size_t len, const char *deny, size_t denylen, sl_chat_scan_t *out)
{
    if (s == NULL || out == NULL || sl_utf8_valid(s, len, NULL) != 1)
        return 0;
    const char *e = s + len;
    memset(out, 0, sizeof(*out));
    out->stop_n = -1;
    top_t t = {out, deny != NULL ? deny : "", deny != NULL ? denylen : 0, NULL, 0, 0, NULL, NULL};
    const char *p = walk_object(skip_ws(s, e), e, top_member, &t);
    if (p == NULL || skip_ws(p, e) != e || t.model == NULL || t.messages == 0)
        return 0;
    if (out->include_usage && !out->stream)
        return 0; /* the drivers drop stream_options from a request that does not stream: re-encoded */
    out->model_off = (size_t)(t.model - s);
    out->end_off = (size_t)(p - 1 - s);
    if (t.n != NULL) {
        out->n_off = (size_t)(t.n - s);
        out->n_len = (size_t)(sl_json_number_end(t.n, e) - t.n);
    }
    if (t.temp != NULL) {
        out->temp_off = (size_t)(t.temp - s);
        out->temp_len = (size_t)(sl_json_number_end(t.temp, e) - t.temp);
    }
    return 1;
}
