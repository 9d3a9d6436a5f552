/* Accessors for C plugins (plugin_abi.h) over the request handle filled by lua/sluice/cplugin.lua. Nothing
 * here calls into Lua: getters read what Lua put in the handle, setters record into its buffers (see
 * cplugin.h). */
#include "plugin/cplugin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"

sl_plugin_req_t *sl_cplugin_req_new(void)
{
    return calloc(1, sizeof(sl_plugin_req_t));
}

void sl_cplugin_req_free(sl_plugin_req_t *req)
{
    if (req == NULL)
        return;
    free(req->ops);
    free(req->data);
    free(req);
}

int sl_plugin_get_method(sl_plugin_req_t *req, const char **out, size_t *len)
{
    if (req == NULL || out == NULL || len == NULL)
        return SL_PLUGIN_INVALID;
    *out = req->method;
    *len = req->method_len;
    return SL_PLUGIN_OK;
}

int sl_plugin_get_path(sl_plugin_req_t *req, const char **out, size_t *len)
{
    if (req == NULL || out == NULL || len == NULL)
        return SL_PLUGIN_INVALID;
    *out = req->path;
    *len = req->path_len;
    return SL_PLUGIN_OK;
}

static int name_eq(const sl_header_t *h, const char *name, size_t len)
{
    return h->name_len == len && strncasecmp(h->name, name, len) == 0;
}

int sl_plugin_get_header(sl_plugin_req_t *req, const char *name, size_t name_len, const char **out,
                         size_t *len)
{
    if (req == NULL || name == NULL || out == NULL || len == NULL)
        return SL_PLUGIN_INVALID;
    *out = NULL;
    *len = 0;
    for (uint32_t i = 0; i < req->noverlay; i++) {
        const sl_header_t *h = &req->overlay[i];
        if (name_eq(h, name, name_len)) {
            if (h->value == NULL)
                return SL_PLUGIN_NOT_FOUND; /* removed by an earlier plugin */
            *out = h->value;
            *len = h->value_len;
            return SL_PLUGIN_OK;
        }
    }
    for (uint32_t i = 0; i < req->nheaders; i++) {
        const sl_header_t *h = &req->headers[i];
        if (name_eq(h, name, name_len)) {
            *out = h->value;
            *len = h->value_len;
            return SL_PLUGIN_OK;
        }
    }
    return SL_PLUGIN_NOT_FOUND;
}

int sl_plugin_get_status(sl_plugin_req_t *req)
{
    return req ? req->status : SL_PLUGIN_INVALID;
}

/* Appends bytes to the data buffer; returns the offset through *off, or SL_PLUGIN_NOMEM. */
static int data_put(sl_plugin_req_t *req, const char *p, size_t n, uint32_t *off)
{
    if (n > SL_CPLUGIN_MAX_DATA || req->data_len + n > SL_CPLUGIN_MAX_DATA)
        return SL_PLUGIN_NOMEM;
    if (req->data_len + n > req->data_cap) {
        size_t cap = req->data_cap ? req->data_cap : 1024;
        while (cap < req->data_len + n)
            cap *= 2;
        char *d = realloc(req->data, cap);
        if (d == NULL)
            return SL_PLUGIN_NOMEM;
        req->data = d;
        req->data_cap = (uint32_t)cap;
    }
    if (n > 0)
        memcpy(req->data + req->data_len, p, n);
    *off = req->data_len;
    req->data_len += (uint32_t)n;
    return SL_PLUGIN_OK;
}

/* RFC 9110 token characters, which is what a header name may contain. */
static int valid_name(const char *s, size_t n)
{
    if (s == NULL || n == 0 || n > 256)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= 32 || ch >= 127 || strchr("\"(),/:;<=>?@[\\]{}", ch) != NULL)
            return 0;
    }
    return 1;
}

/* No CR, LF or NUL: they would let a plugin inject headers or split the message. */
static int valid_value(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 0;
    }
    return n < SL_CPLUGIN_REMOVE;
}

static int record(sl_plugin_req_t *req, uint32_t kind, const char *name, size_t name_len, const char *value,
                  size_t value_len)
{
    if (req == NULL || !valid_name(name, name_len) || (value != NULL && !valid_value(value, value_len)))
        return SL_PLUGIN_INVALID;
    if (req->nops == req->ops_cap) {
        uint32_t cap = req->ops_cap ? req->ops_cap * 2 : 8;
        sl_cplugin_op_t *ops = realloc(req->ops, cap * sizeof(*ops));
        if (ops == NULL)
            return SL_PLUGIN_NOMEM;
        req->ops = ops;
        req->ops_cap = cap;
    }
    sl_cplugin_op_t op = {.kind = kind, .name_len = (uint32_t)name_len};
    uint32_t saved = req->data_len;
    int rc = data_put(req, name, name_len, &op.name_off);
    if (rc == 0 && value != NULL) {
        op.value_len = (uint32_t)value_len;
        rc = data_put(req, value, value_len, &op.value_off);
    } else {
        op.value_len = SL_CPLUGIN_REMOVE;
    }
    if (rc != 0) {
        req->data_len = saved;
        return rc;
    }
    req->ops[req->nops++] = op;
    return SL_PLUGIN_OK;
}

int sl_plugin_set_header(sl_plugin_req_t *req, const char *name, size_t name_len, const char *value,
                         size_t value_len)
{
    return record(req, SL_CPLUGIN_OP_REQ_HEADER, name, name_len, value, value_len);
}

int sl_plugin_set_resp_header(sl_plugin_req_t *req, const char *name, size_t name_len, const char *value,
                              size_t value_len)
{
    return record(req, SL_CPLUGIN_OP_RESP_HEADER, name, name_len, value, value_len);
}

int sl_plugin_set_body(sl_plugin_req_t *req, const char *body, size_t len, const char *content_type)
{
    if (req == NULL || (body == NULL && len > 0))
        return SL_PLUGIN_INVALID;
    size_t clen = content_type ? strlen(content_type) : 0;
    if (content_type != NULL && !valid_value(content_type, clen))
        return SL_PLUGIN_INVALID;
    uint32_t saved = req->data_len, boff = 0, coff = 0;
    int rc = data_put(req, body, len, &boff);
    if (rc == 0)
        rc = data_put(req, content_type, clen, &coff);
    if (rc != 0) {
        req->data_len = saved;
        return rc;
    }
    req->body_off = boff;
    req->body_len = (uint32_t)len;
    req->ctype_off = coff;
    req->ctype_len = (uint32_t)clen;
    req->body_set = 1;
    return SL_PLUGIN_OK;
}

void sl_plugin_log(sl_plugin_req_t *req, int level, const char *msg, size_t len)
{
    if (msg == NULL)
        return;
    if (level < SL_LOG_DEBUG)
        level = SL_LOG_DEBUG;
    if (level > SL_LOG_ERROR)
        level = SL_LOG_ERROR;
    if (!sl_log_enabled(level))
        return;
    if (len > 8192)
        len = 8192;
    if (req == NULL) {
        sl_log(level, "[c-plugin] %.*s", (int)len, msg);
        return;
    }
    sl_log(level, "[%.*s] %.*s (request %.*s)", (int)req->plugin_name_len,
           req->plugin_name ? req->plugin_name : "", (int)len, msg, (int)req->request_id_len,
           req->request_id ? req->request_id : "");
}
