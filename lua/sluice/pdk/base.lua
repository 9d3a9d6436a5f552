-- What every PDK module shares: the FFI view of the C request (core/http/request.h, response.h,
-- upstream/proxy.h, upstream/pool.h, lua/vm.h) and the lookup of the running request's context.
-- The structs and enums below mirror C; spec/ffi_layout_spec.lua checks them against core/lua/ffi_layout.c.
-- Lua code names the constants through the cdef (C.SL_PROXY_TLS, C.SL_UPERR_TIMEOUT), never as copied numbers.
local ffi = require("ffi")
local C = require("sluice.core")

ffi.cdef [[
typedef struct sl_header { const char *name; const char *value; uint32_t name_len; uint32_t value_len; } sl_header_t;
typedef struct sl_req {
    const char *method; const char *path; const char *query; const char *host; const char *body;
    sl_header_t *headers; const char *client_ip;
    uint32_t method_len, path_len, query_len, host_len, body_len, nheaders, client_ip_len;
    uint16_t client_port;
    uint8_t http_minor, keepalive, resp_started, resp_done, client_gone, is_admin, body_pending;
    int32_t status;
    uint64_t id;
    uint64_t bytes_sent;
    double start_time;
    char route_id[64];
    uint32_t route_id_len;
    uint32_t upstream_status;
    double upstream_time;
    char upstream_addr[64];
} sl_req_t;
typedef struct sl_upresp {
    sl_header_t *headers; const char *chunk;
    uint32_t nheaders, chunk_len;
    int32_t status, error;
    int64_t content_length;
    uint8_t headers_done, done, reused;
} sl_upresp_t;
int sl_resp_send(sl_req_t *r, int status, const char *headers, size_t hlen, uint32_t nfields, const char *body,
    size_t blen);
int sl_resp_start(sl_req_t *r, int status, const char *headers, size_t hlen, uint32_t nfields,
    int64_t content_length);
int sl_resp_write(sl_req_t *r, const char *data, size_t len);
int sl_resp_finish(sl_req_t *r);
size_t sl_resp_pending(const sl_req_t *r);
int sl_resp_wait_drain(sl_req_t *r);
int sl_req_read_body(sl_req_t *r);
void sl_req_set_route(sl_req_t *r, const char *id, size_t len);
const sl_header_t *sl_req_header(const sl_req_t *req, const char *name, uint32_t len);
int sl_req_log_field(sl_req_t *r, const char *name, size_t nlen, const char *json, size_t jlen);
int sl_access_log_enabled(void);
typedef struct sl_log_ai {
    const char *provider, *model, *requested_model, *cut, *cache;
    uint32_t provider_len, model_len, requested_model_len, cut_len, cache_len;
    double status, prompt_tokens, completion_tokens, cost, ttft_ms, latency_ms, saved_tokens, saved_cost;
    int32_t estimated, stream;
} sl_log_ai_t;
int sl_req_log_ai(sl_req_t *r, const sl_log_ai_t *a);
int sl_resp_abort(sl_req_t *r);
enum { SL_PROXY_PASS = 0, SL_PROXY_FILTER = 1 };
enum { SL_PROXY_TLS = 1, SL_PROXY_NO_VERIFY = 2, SL_PROXY_FORWARD = 4, SL_PROXY_LENGTH = 8, SL_PROXY_STREAM = 16,
       SL_PROXY_ENV_PROXY = 32 };
enum { SL_UPERR_NONE = 0, SL_UPERR_CONNECT = 1, SL_UPERR_DNS = 2, SL_UPERR_TIMEOUT = 3, SL_UPERR_RESET = 4,
       SL_UPERR_BAD_RESPONSE = 5, SL_UPERR_CLIENT_GONE = 6, SL_UPERR_NOMEM = 7, SL_UPERR_TLS = 8,
       SL_UPERR_BAD_REQUEST = 9 };
const char *sl_uperr_name(int e);
const char *sl_uperr_text(int e);
typedef struct sl_proxy_opts {
    const char *host, *ca_file, *sni, *head, *skip, *body;
    size_t hostlen, headlen, skiplen, bodylen;
    uint32_t nfields;
    int32_t port, flags, mode, pool_size;
    double connect_timeout, send_timeout, read_timeout, header_timeout, idle_timeout;
} sl_proxy_opts_t;
sl_upresp_t *sl_proxy_start(sl_req_t *req, const sl_proxy_opts_t *o);
int sl_proxy_read(sl_upresp_t *p);
int sl_proxy_pass(sl_upresp_t *p);
void sl_proxy_set_read_timeout(sl_upresp_t *p, double seconds);
int sl_timer_start(double delay, int id);
int sl_req_sleep(sl_req_t *r, double delay);
sl_req_t *sl_vm_req(void);
int sl_worker_id(void);
int sl_worker_count(void);
double sl_now(void);
double sl_time(void);
void sl_log_write(int level, const char *msg, unsigned long len);
int sl_log_enabled(int level);
]]

local running = coroutine.running

local _M = { C = C }

-- Request contexts by coroutine. Weak keys: a finished request's coroutine takes its context with it.
local ctxs = setmetatable({}, { __mode = "k" })
_M.ctxs = ctxs

local ffi_string, lower, type = ffi.string, string.lower, type

--- Adds v under k; a repeated key turns into an array of values (headers, query arguments).
function _M.add_multi(t, k, v)
    local old = t[k]
    if old == nil then
        t[k] = v
    elseif type(old) == "table" then
        old[#old + 1] = v
    else
        t[k] = { old, v }
    end
end

--- A Lua table (lower-case name -> value or values) from a C header array.
function _M.headers_table(headers, n)
    local h, add = {}, _M.add_multi
    for i = 0, n - 1 do
        local hd = headers[i]
        add(h, lower(ffi_string(hd.name, hd.name_len)), ffi_string(hd.value, hd.value_len))
    end
    return h
end

local find, gsub, format, byte, sub, tostring = string.find, string.gsub, string.format, string.byte, string.sub,
    tostring

-- A name for an error message: quoted, at most 64 bytes, controls and quotes escaped (the log stays one line).
local function show(s)
    s = tostring(s)
    return '"' .. gsub(sub(s, 1, 64), '[%c"\\\127-\255]', function(c) return format("\\x%02x", byte(c)) end)
        .. (#s > 64 and '..."' or '"')
end

--- Checks a header a plugin sets (name an RFC 9110 token; value without CR, LF or NUL, which would add header
--- lines or a second request to the head); raises otherwise, at the plugin's call site. Returns the value as a
--- string. (What reaches the wire is checked again in C, whoever built it: core/http/field.c.)
-- Names that passed the token check (plugins set the same few names on every request; a pattern find is not
-- compiled by LuaJIT, a table look-up is). Bounded: cleared when it grows past 1024 names.
local good_names, ngood = {}, 0
function _M.check_header(name, value, level)
    if not good_names[name] then
        if type(name) ~= "string" or not find(name, "^[!#$%%&'*+%-.^_`|~%w]+$") then
            error("invalid header name " .. show(name), (level or 2) + 1)
        end
        if ngood >= 1024 then
            good_names, ngood = {}, 0
        end
        good_names[name], ngood = true, ngood + 1
    end
    if type(value) == "number" then -- no CR, LF or NUL in a number's digits
        return tostring(value)
    end
    value = tostring(value)
    if find(value, "\r", 1, true) or find(value, "\n", 1, true) or find(value, "\0", 1, true) then
        error("invalid value for header " .. show(name) .. ": CR, LF or NUL", (level or 2) + 1)
    end
    return value
end

--- Short name of an upstream error class (SL_UPERR_*: "connect", "timeout", ...), from C's one table.
function _M.uperr_name(code)
    return ffi_string(C.sl_uperr_name(code))
end

--- What an upstream error class means, for a client's message ("connect failed", "timed out", ...).
function _M.uperr_text(code)
    return ffi_string(C.sl_uperr_text(code))
end

--- The running request's context; raises when called outside a request.
function _M.get_ctx()
    local ctx = ctxs[running()]
    if ctx == nil then
        error("no request in this context (called from init or a timer?)", 3)
    end
    return ctx
end

--- The worker's live config state ({cfg, router, version, ...}) or nil before the first config; the request
--- path (sluice.worker) installs the getter.
function _M.live_state()
    return nil
end

--- The newest config version this worker has looked at (applied or refused); installed by sluice.worker.
function _M.seen_version()
    return 0
end

--- The running request's context or nil.
function _M.current_ctx()
    return ctxs[running()]
end

return _M
