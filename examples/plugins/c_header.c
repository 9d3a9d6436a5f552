/* c_header: a small C plugin. In the access phase it sets a header on the request sent upstream; a request
 * carrying "x-block: 1" is refused with 403 and a JSON error body.
 *
 *   routes:
 *     - id: api
 *       paths: ["/api"]
 *       upstream: echo
 *       plugins:
 *         c_header: {header: "x-team", value: "search"}   # header defaults to "x-c-plugin"
 *
 * Build: cmake builds every examples/plugins/<name>.c into build/plugins/<name>.so; by hand:
 *   cc -shared -fPIC -O2 -I core -o c_header.so examples/plugins/c_header.c */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "plugin/plugin_abi.h"

/* Lua patterns, not regular expressions (docs/c-plugins.md). */
static const char schema[] =
    "{\"type\":\"object\",\"required\":[\"value\"],\"additionalProperties\":false,"
    "\"properties\":{"
    "\"header\":{\"type\":\"string\",\"default\":\"x-c-plugin\",\"pattern\":\"^[%w%-]+$\","
    "\"maxLength\":64},"
    "\"value\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":256}}}";

/* ---- a tiny reader for the flat JSON object the schema guarantees ---- */

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* Reads the JSON string at p (on its opening quote) into out (NUL-terminated, at most cap-1 bytes). Returns
 * the position after the closing quote, or NULL when malformed or too long. \uXXXX outside ASCII is refused,
 * which the schema's pattern would refuse anyway for names. */
static const char *read_string(const char *p, const char *end, char *out, size_t cap)
{
    size_t n = 0;
    if (p >= end || *p != '"')
        return NULL;
    for (p++; p < end && *p != '"'; p++) {
        char ch = *p;
        if (ch == '\\') {
            if (++p >= end)
                return NULL;
            /* clang-format off */
            switch (*p) {
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'r': ch = '\r'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'u': {
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    if (++p >= end)
                        return NULL;
                    char h = *p;
                    v = v * 16 + (unsigned)(h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                            : h >= 'A' && h <= 'F' ? h - 'A' + 10 : 99);
                }
                if (v > 127)
                    return NULL;
                ch = (char)v;
                break;
            }
            default: ch = *p; break; /* \" \\ \/ */
            }
            /* clang-format on */
        }
        if (n + 1 >= cap)
            return NULL;
        out[n++] = ch;
    }
    if (p >= end)
        return NULL;
    out[n] = '\0';
    return p + 1;
}

/* Skips one JSON value of any type (nested objects and arrays included). */
static const char *skip_value(const char *p, const char *end)
{
    int depth = 0;
    do {
        p = skip_ws(p, end);
        if (p >= end)
            return NULL;
        if (*p == '"') {
            /* strings are skipped without keeping them */
            for (p++; p < end && *p != '"'; p++)
                if (*p == '\\')
                    p++;
            if (p >= end)
                return NULL;
            p++;
        } else if (*p == '{' || *p == '[') {
            depth++;
            p++;
        } else if (*p == '}' || *p == ']') {
            depth--;
            p++;
        } else {
            while (p < end && !strchr(",}] \t\r\n", *p))
                p++;
        }
        p = skip_ws(p, end);
        if (depth > 0 && p < end && (*p == ',' || *p == ':'))
            p++;
    } while (depth > 0);
    return p;
}

/* Copies the top-level string field key of the object in json into out; returns 0 or -1 (absent/invalid). */
static int get_field(const char *json, size_t len, const char *key, char *out, size_t cap)
{
    const char *p = json, *end = json + len;
    char k[64];
    p = skip_ws(p, end);
    if (p >= end || *p != '{')
        return -1;
    p = skip_ws(p + 1, end);
    while (p < end && *p == '"') {
        p = read_string(p, end, k, sizeof(k));
        if (p == NULL)
            return -1;
        p = skip_ws(p, end);
        if (p >= end || *p != ':')
            return -1;
        p = skip_ws(p + 1, end);
        if (strcmp(k, key) == 0)
            return *p == '"' && read_string(p, end, out, cap) != NULL ? 0 : -1;
        p = skip_value(p, end);
        if (p == NULL)
            return -1;
        if (p < end && *p == ',')
            p = skip_ws(p + 1, end);
    }
    return -1;
}

/* ---- the plugin ---- */

static int check(const char *conf, size_t len, char *errbuf, size_t errlen)
{
    char header[80];
    if (get_field(conf, len, "header", header, sizeof(header)) != 0) {
        snprintf(errbuf, errlen, "header: cannot read the configured header name");
        return 1;
    }
    static const char *reserved[] = {"host", "content-length", "transfer-encoding", "connection", NULL};
    for (int i = 0; reserved[i]; i++) {
        if (strcasecmp(header, reserved[i]) == 0) {
            snprintf(errbuf, errlen, "header: %s is managed by the gateway and cannot be set", reserved[i]);
            return 1;
        }
    }
    return 0;
}

static int access(sl_plugin_req_t *req, const char *conf, size_t len)
{
    const char *v;
    size_t vlen;
    if (sl_plugin_get_header(req, "x-block", 7, &v, &vlen) == SL_PLUGIN_OK && vlen == 1 && v[0] == '1') {
        static const char body[] = "{\"error\":{\"message\":\"blocked by "
                                   "c_header\",\"type\":\"invalid_request_error\",\"code\":403}}";
        sl_plugin_set_body(req, body, sizeof(body) - 1, "application/json");
        sl_plugin_log(req, SL_PLUGIN_LOG_INFO, "blocked (x-block: 1)", 20);
        return 403;
    }
    char header[80], value[300];
    if (get_field(conf, len, "header", header, sizeof(header)) != 0 ||
        get_field(conf, len, "value", value, sizeof(value)) != 0)
        return -1; /* cannot happen with a validated config; -1 turns into a logged 500 */
    return sl_plugin_set_header(req, header, strlen(header), value, strlen(value)) == SL_PLUGIN_OK ? 0 : -1;
}

const sl_plugin_t sluice_plugin = {
    .abi_version = SL_PLUGIN_ABI_VERSION,
    .name = "c_header",
    .version = "1.0",
    .priority = 1000,
    .schema_json = schema,
    .check = check,
    .access = access,
};
