/* The C side of C plugins: the request handle passed to a plugin's callbacks and the accessors declared in
 * plugin_abi.h.
 *
 * LuaJIT forbids re-entering the VM from a C function called through FFI, so no accessor calls Lua. Instead
 * lua/sluice/cplugin.lua fills the handle from the request before each callback (method, path, headers and
 * the headers earlier plugins set), and the setters record what the plugin asks for into the handle's
 * buffers; Lua applies the recorded operations after the callback returns. One handle per VM is reused for
 * every call, so the buffers keep their capacity. */
#ifndef SL_CPLUGIN_H
#define SL_CPLUGIN_H

#include <stdint.h>

#include "http/request.h"
#include "plugin/plugin_abi.h"

/* Kinds of recorded operations. */
enum {
    SL_CPLUGIN_OP_REQ_HEADER =
        1, /* set (or with value_len == UINT32_MAX remove) an upstream request header */
    SL_CPLUGIN_OP_RESP_HEADER = 2, /* same for a client response header */
};

#define SL_CPLUGIN_REMOVE UINT32_MAX    /* value_len of a remove operation */
#define SL_CPLUGIN_MAX_DATA (16u << 20) /* bytes one callback may record */

/** One recorded setter call; name and value are offsets into the handle's data buffer. */
typedef struct sl_cplugin_op {
    uint32_t kind;
    uint32_t name_off, name_len;
    uint32_t value_off, value_len;
} sl_cplugin_op_t;

/* Mirrored by the ffi.cdef in lua/sluice/cplugin.lua: keep the two in step. */
struct sl_plugin_req {
    /* filled by Lua before the call; pointers stay valid (anchored by Lua) until it returns */
    const char *method;
    const char *path;
    const sl_header_t *headers; /* the client's request headers */
    const sl_header_t *overlay; /* headers set by earlier plugins (value NULL: removed); checked first */
    const char *plugin_name;
    const char *request_id;
    uint32_t method_len, path_len, nheaders, noverlay, plugin_name_len, request_id_len;
    int32_t status;
    /* filled by the plugin's setters, read by Lua after the call; Lua resets the counts before each call */
    sl_cplugin_op_t *ops;
    uint32_t nops, ops_cap;
    char *data; /* names, values, body, content type */
    uint32_t data_len, data_cap;
    uint32_t body_off, body_len;
    uint32_t ctype_off, ctype_len;
    uint8_t body_set;
};

/** Allocates an empty handle; the caller frees it with sl_cplugin_req_free. NULL on out of memory. */
sl_plugin_req_t *sl_cplugin_req_new(void);
/** Frees a handle and its buffers (NULL is fine). */
void sl_cplugin_req_free(sl_plugin_req_t *req);

#endif
