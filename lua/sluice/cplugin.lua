-- C plugins: loads a shared object exporting `sluice_plugin` (core/plugin/plugin_abi.h) and wraps it in a plugin
-- table like a Lua plugin's, so the registry, config validation and pipelines treat both the same way.
--
--   local p, err = require("sluice.cplugin").load("c_header", "/path/plugins/c_header.so")
--
-- Calls go through FFI. A C function called through FFI must not re-enter the VM, so the accessors in
-- core/plugin/cplugin.c never call Lua: before each callback the request handle is filled from ctx (method,
-- path, client headers, headers set by earlier plugins), the plugin's setters record into the handle, and
-- after it returns the recorded headers, body and status are applied here through the PDK.
local ffi = require("ffi")
local base = require("sluice.pdk.base")
local request = require("sluice.pdk.request")
local response = require("sluice.pdk.response")
local cjson = require("cjson.safe")

local C = base.C
local ffi_string, ffi_new, ffi_gc = ffi.string, ffi.new, ffi.gc
local type, pairs, ipairs, tostring, tonumber, pcall, setmetatable = type, pairs, ipairs, tostring, tonumber, pcall,
    setmetatable
local format = string.format
local req_set_header, resp_set_header = request.set_header, response.set_header

ffi.cdef [[
typedef struct sl_plugin_req sl_plugin_req_t;
typedef int (*sl_plugin_phase_fn)(sl_plugin_req_t *req, const char *conf_json, size_t conf_len);
typedef struct sl_plugin {
    uint32_t abi_version;
    const char *name;
    const char *version;
    int32_t priority;
    const char *schema_json;
    int (*check)(const char *conf_json, size_t conf_len, char *errbuf, size_t errlen);
    sl_plugin_phase_fn rewrite, access, header_filter, log;
    void *reserved[8];
} sl_plugin_t;
typedef struct sl_cplugin_op { uint32_t kind, name_off, name_len, value_off, value_len; } sl_cplugin_op_t;
struct sl_plugin_req {
    const char *method;
    const char *path;
    const sl_header_t *headers;
    const sl_header_t *overlay;
    const char *plugin_name;
    const char *request_id;
    uint32_t method_len, path_len, nheaders, noverlay, plugin_name_len, request_id_len;
    int32_t status;
    sl_cplugin_op_t *ops;
    uint32_t nops, ops_cap;
    char *data;
    uint32_t data_len, data_cap;
    uint32_t body_off, body_len;
    uint32_t ctype_off, ctype_len;
    uint8_t body_set;
};
sl_plugin_req_t *sl_cplugin_req_new(void);
void sl_cplugin_req_free(sl_plugin_req_t *req);
extern const sl_plugin_t sluice_plugin;
]]

local ABI_VERSION = 1
local OP_REQ_HEADER, OP_RESP_HEADER = 1, 2
local REMOVE = 0xffffffff
local PHASES = { "rewrite", "access", "header_filter", "log" }
local CAN_END = { rewrite = true, access = true }

local _M = { ABI_VERSION = ABI_VERSION }

-- One handle per VM: a callback runs to completion without yielding, so calls never overlap.
local handle
local function get_handle()
    if handle == nil then
        local h = C.sl_cplugin_req_new()
        if h == nil then
            error("out of memory", 2)
        end
        handle = ffi_gc(h, C.sl_cplugin_req_free)
    end
    return handle
end

-- Config as JSON, encoded once per config table (a config version's tables live as long as its pipelines).
local conf_json = setmetatable({}, { __mode = "k" })
local function encode_conf(conf)
    local js = conf_json[conf]
    if js == nil then
        js = type(conf) == "table" and cjson.encode(conf) or "{}"
        conf_json[conf] = js
    end
    return js
end

-- Lua strings and cdata the handle points to, kept reachable for the duration of a call (written, never read:
-- holding them is the point).
local pin = {} -- luacheck: ignore 241

local function fill(h, ctx, pname, pname_len)
    local r = ctx.req
    local method, path = ctx.method, request.get_path(ctx)
    pin[1], pin[2] = method, path
    h.method, h.method_len = method, #method
    h.path, h.path_len = path, #path
    h.headers, h.nheaders = r.headers, r.nheaders
    local set, n = ctx.set_headers, 0
    if set then
        for _ in pairs(set) do
            n = n + 1
        end
    end
    if n > 0 then
        local arr, i = ffi_new("sl_header_t[?]", n), 0
        pin[3] = arr
        local keep = {}
        pin[4] = keep
        for name, v in pairs(set) do
            local hd = arr[i]
            keep[#keep + 1] = name
            hd.name, hd.name_len = name, #name
            if v then
                keep[#keep + 1] = v
                hd.value, hd.value_len = v, #v
            end -- else value stays NULL: removed
            i = i + 1
        end
        h.overlay, h.noverlay = arr, n
    else
        h.overlay, h.noverlay = nil, 0
    end
    local rid = ctx.request_id or ""
    pin[5] = rid
    h.plugin_name, h.plugin_name_len = pname, pname_len
    h.request_id, h.request_id_len = rid, #rid
    h.status = (ctx.response and ctx.response.status) or (ctx.exit and ctx.exit.status) or r.status
    h.nops, h.data_len, h.body_set = 0, 0, 0
end

local function unpin(h)
    pin[1], pin[2], pin[3], pin[4], pin[5] = nil, nil, nil, nil, nil
    h.method, h.path, h.headers, h.overlay, h.request_id = nil, nil, nil, nil, nil
    h.noverlay, h.nheaders = 0, 0
end

-- Applies the headers the plugin set, in the order it set them.
local function apply_ops(h, ctx)
    local data = h.data
    for i = 0, h.nops - 1 do
        local op = h.ops[i]
        local name = ffi_string(data + op.name_off, op.name_len)
        local value = op.value_len ~= REMOVE and ffi_string(data + op.value_off, op.value_len) or nil
        if op.kind == OP_REQ_HEADER then
            req_set_header(name, value, ctx)
        elseif op.kind == OP_RESP_HEADER then
            resp_set_header(name, value, ctx)
        end
    end
end

local function make_phase(fn, phase, pname)
    local pname_len = #pname
    return function(conf, ctx)
        local js = encode_conf(conf)
        local h = get_handle()
        fill(h, ctx, pname, pname_len)
        local rc = fn(h, js, #js)
        unpin(h)
        apply_ops(h, ctx)
        if rc == 0 or not CAN_END[phase] then
            return
        end
        if rc < 100 or rc > 599 then
            error(format("%s returned %d (expected 0 or an HTTP status)", phase, rc), 0)
        end
        local body, headers = "", nil
        if h.body_set ~= 0 then
            body = ffi_string(h.data + h.body_off, h.body_len)
            if h.ctype_len > 0 then
                headers = { ["content-type"] = ffi_string(h.data + h.ctype_off, h.ctype_len) }
            end
        end
        return response.exit(rc, body, headers, ctx)
    end
end

local function make_check(fn)
    return function(conf)
        local js = type(conf) == "table" and cjson.encode(conf) or "{}"
        local buf = ffi_new("char[512]")
        local rc = fn(js, #js, buf, 512)
        if rc ~= 0 then
            buf[511] = 0
            local msg = ffi_string(buf)
            return nil, msg ~= "" and msg or "invalid configuration"
        end
        return true
    end
end

local function cstr(p)
    return p ~= nil and ffi_string(p) or nil
end

-- dlopen returns the already loaded object for a path it has seen, so a changed file (hot reload) is loaded
-- from a private copy; the copy is unlinked at once (the mapping stays). file -> {bytes, plugin}.
local loaded = {}

local function open_lib(file, bytes)
    if not loaded[file] then
        return pcall(ffi.load, file)
    end
    local tmp = os.tmpname()
    local f = io.open(tmp, "wb")
    if not f then
        os.remove(tmp)
        return false, "cannot write a private copy to " .. tmp
    end
    f:write(bytes)
    f:close()
    local ok, lib = pcall(ffi.load, tmp)
    os.remove(tmp)
    return ok, lib
end

--- Loads the C plugin in file (expected to be called name); returns a plugin table or nil, err.
function _M.load(name, file)
    local f, ferr = io.open(file, "rb")
    if not f then
        return nil, ferr
    end
    local bytes = f:read("*a")
    f:close()
    local prev = loaded[file]
    if prev and prev.bytes == bytes then
        return prev.plugin
    end
    local ok, lib = open_lib(file, bytes)
    if not ok then
        return nil, format("%s: cannot load: %s", file, tostring(lib))
    end
    local dok, d = pcall(function() return lib.sluice_plugin end)
    if not dok then
        return nil, format("%s: does not export `sluice_plugin` (see core/plugin/plugin_abi.h)", file)
    end
    if d.abi_version ~= ABI_VERSION then
        return nil, format("%s: built for plugin ABI version %d, this sluice supports version %d; rebuild it "
            .. "against this sluice's core/plugin/plugin_abi.h", file, tonumber(d.abi_version), ABI_VERSION)
    end
    local pname = cstr(d.name)
    if pname == nil then
        return nil, format("%s: sluice_plugin.name is NULL", file)
    end
    local p = { name = pname, version = cstr(d.version), priority = tonumber(d.priority), c = true,
                -- the callbacks live in lib: the table keeps it loaded while a pipeline uses the plugin
                _lib = lib }
    local sj = cstr(d.schema_json)
    if sj then
        local schema, jerr = cjson.decode(sj)
        if type(schema) ~= "table" then
            return nil, format("%s: schema_json is not a JSON object: %s", file, tostring(jerr or sj))
        end
        p.schema = schema
    end
    if d.check ~= nil then
        p.check = make_check(d.check)
    end
    for _, ph in ipairs(PHASES) do
        local fn = d[ph]
        if fn ~= nil then
            p[ph] = make_phase(fn, ph, pname)
        end
    end
    loaded[file] = { bytes = bytes, plugin = p }
    return p
end

return _M
