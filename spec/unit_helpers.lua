-- Unit-testing a plugin without the gateway: the real PDK (sluice.*) runs against a fake C request.
--
--   local unit = require("unit_helpers")
--   local plugin = unit.load_plugin("ai-prompt-decorator")            -- plugins/<name>.lua (or unit.load_plugin(name, dir))
--   local conf = assert(unit.validate(plugin, { prepend = { { role = "system", content = "Be brief." } } }))
--   local res = unit.run(plugin, "rewrite", conf, {
--       method = "POST", path = "/v1/chat/completions",
--       headers = { authorization = "Bearer k1" },
--       body = { messages = { { role = "user", content = "hi" } } },   -- table (sent as JSON) or string
--       consumer = { name = "alice", metadata = { team = "blue" } },   -- becomes ctx.consumer
--   })
--   res.json.messages[1].content          --> "Be brief."  (the JSON body the upstream would get)
--   res.status, res.body                  --> early response (nil when the request goes on)
--   res.headers["x-user"]                 --> request headers as the upstream would get them (lower-case)
--   res.logs                              --> { { level = "warn", message = "[name] ..." }, ... }
--
--   local conf, errs, path = unit.validate(plugin, { prepend = "x" })   --> nil, errors, "prepend"
--
-- The fake request is an `sl_req_t` made with ffi.new; every string it points to is kept alive in the
-- returned ctx (ctx._anchors), so it stays valid for as long as the ctx is referenced. Logs are captured by
-- pointing the C error log (sl_log_*) at a temp file for the duration of the call.
local ffi = require("ffi")
local cjson = require("cjson.safe")
local base = require("sluice.pdk.base")
local schema = require("sluice.schema")
local plugins = require("sluice.plugins")

local type, pairs, ipairs, tostring, pcall, error = type, pairs, ipairs, tostring, pcall, error
local format = string.format
local C = base.C

pcall(ffi.cdef, [[
int sl_log_open(const char *path);
void sl_log_close(void);
void sl_log_set_level(int level);
]])

local _M = {}

_M.ROOT = os.getenv("SLUICE_HOME") or os.getenv("PWD") or "."

local function deep_copy(v)
    if type(v) ~= "table" then return v end
    local out = {}
    for k, x in pairs(v) do out[k] = deep_copy(x) end
    return setmetatable(out, getmetatable(v))
end
_M.deep_copy = deep_copy

--- Loads a plugin file fresh (no cache): `dir/<name>.lua` or `dir/<name>/init.lua` (dir defaults to plugins/).
-- Raises when the file is missing or does not have the shape of a plugin (same checks as the registry).
function _M.load_plugin(name, dir)
    dir = dir or (_M.ROOT .. "/plugins")
    local file = dir .. "/" .. name .. ".lua"
    local f = io.open(file, "rb")
    if f then
        f:close()
    else
        file = dir .. "/" .. name .. "/init.lua"
    end
    local chunk, err = loadfile(file)
    if not chunk then
        error("cannot load plugin " .. name .. ": " .. tostring(err), 2)
    end
    -- a folder plugin requires its helpers as "<name>.helper" (the gateway puts plugin folders on the path)
    local entry = dir .. "/?.lua"
    if not package.path:find(entry, 1, true) then
        package.path = entry .. ";" .. package.path
    end
    local p = chunk(name)
    local ok, cerr = plugins.check_module(name, p)
    if not ok then
        error(file .. ": " .. cerr, 2)
    end
    return p
end

--- Validates conf (copied first) like the gateway does when config is applied: schema (defaults filled in),
-- then the plugin's check(). Returns conf | nil, errors ({path, message} list), path of the first error.
function _M.validate(plugin, conf)
    conf = deep_copy(conf == nil and {} or conf)
    if plugin.schema then
        local ok, res = schema.validate(plugin.schema, conf)
        if not ok then
            return nil, res, res[1].path
        end
        conf = res
    end
    if plugin.check then
        local ok, res, cerr = pcall(plugin.check, conf)
        if not ok then
            return nil, { { path = "", message = "check failed: " .. tostring(res) } }, ""
        end
        if not res then
            return nil, { { path = "", message = tostring(cerr or "invalid configuration") } }, ""
        end
    end
    return conf
end

--- Formats validation errors as "path: message" lines (for assertion messages).
_M.format_errors = schema.format_errors

local function anchor(ctx, s)
    local a = ctx._anchors
    a[#a + 1] = s
    return s
end

--- Builds a request context as the worker does, backed by a fake C request. opts:
--   method ("GET", or "POST" when a body is given), path ("/"), query ("a=1"), host, client_ip ("127.0.0.1"),
--   headers ({name = value | {values}}), body (string, or a table sent as JSON with content-type set),
--   consumer (ctx.consumer), config (ctx.config: {consumers = {...}, ...}), route (ctx.route, default {id = "unit"}),
--   ctx (extra fields copied into ctx), response ({status, headers}) for header_filter/body_filter.
function _M.new_ctx(opts)
    opts = opts or {}
    local ctx = { _anchors = {}, var = {} }
    local body = opts.body
    local headers = {}
    for k, v in pairs(opts.headers or {}) do headers[k] = v end
    if type(body) == "table" then
        body = assert(cjson.encode(body))
        local has_ct = false
        for k in pairs(headers) do
            if k:lower() == "content-type" then has_ct = true end
        end
        if not has_ct then headers["content-type"] = "application/json" end
    end
    local list = {}
    for k, v in pairs(headers) do
        if type(v) == "table" then
            for _, x in ipairs(v) do list[#list + 1] = { k, tostring(x), #list } end
        else
            list[#list + 1] = { k, tostring(v), #list }
        end
    end
    -- by name (stable order for specs), repeated values of one name in the order given
    table.sort(list, function(a, b)
        if a[1] ~= b[1] then return a[1] < b[1] end
        return a[3] < b[3]
    end)
    local r = ffi.new("sl_req_t")
    local hs = ffi.new("sl_header_t[?]", #list + 1)
    anchor(ctx, hs)
    for i, h in ipairs(list) do
        local e = hs[i - 1]
        e.name, e.name_len = anchor(ctx, h[1]), #h[1]
        e.value, e.value_len = anchor(ctx, h[2]), #h[2]
    end
    r.headers, r.nheaders = hs, #list
    local method = opts.method or (body and "POST" or "GET")
    local path = opts.path or "/"
    local query = opts.query or ""
    local ip = opts.client_ip or "127.0.0.1"
    r.method, r.method_len = anchor(ctx, method), #method
    r.path, r.path_len = anchor(ctx, path), #path
    r.query, r.query_len = anchor(ctx, query), #query
    if opts.host then
        r.host, r.host_len = anchor(ctx, opts.host), #opts.host
    end
    if body then
        r.body, r.body_len = anchor(ctx, body), #body
    end
    r.client_ip, r.client_ip_len = anchor(ctx, ip), #ip
    r.client_port = 40000
    r.http_minor, r.keepalive = 1, 1
    r.id = opts.id or 1
    r.start_time = C.sl_now()
    ctx.req = anchor(ctx, r)
    ctx.method, ctx.path, ctx.host = method, path, opts.host
    ctx.request_id = format("%016x", tonumber(r.id))
    ctx.route = opts.route or { id = "unit" }
    ctx.params = opts.params or {}
    ctx.config = opts.config or { consumers = {}, routes = {}, upstreams = {}, providers = {} }
    ctx.consumer = opts.consumer
    if opts.response then
        ctx.response = { status = opts.response.status or 200, headers = {} }
        for k, v in pairs(opts.response.headers or {}) do ctx.response.headers[k:lower()] = v end
    end
    for k, v in pairs(opts.ctx or {}) do ctx[k] = v end
    return ctx
end

-- Runs fn(...) in a coroutine registered as a request (so the PDK finds ctx), with the C log sent to a file.
local function in_request(ctx, fn, ...)
    local logfile = os.tmpname()
    C.sl_log_open(logfile)
    C.sl_log_set_level(0)
    local co = coroutine.create(fn)
    base.ctxs[co] = ctx
    local res = { coroutine.resume(co, ...) }
    if coroutine.status(co) ~= "dead" then
        res = { false, "the phase yielded (sleep or I/O): not supported in unit runs, use an integration spec" }
    end
    C.sl_log_close()
    C.sl_log_set_level(1)
    local logs = {}
    local f = io.open(logfile, "rb")
    if f then
        for line in f:lines() do
            local level, msg = line:match("^%S+ %[(%a+)%] (.*)$")
            if level then
                msg = msg:gsub(" %(request %x+%)$", "")
                logs[#logs + 1] = { level = level, message = msg }
            elseif #logs > 0 then
                logs[#logs].message = logs[#logs].message .. "\n" .. line
            end
        end
        f:close()
    end
    os.remove(logfile)
    return logs, unpack(res)
end

-- The request as the upstream would get it, after the plugins ran.
local function collect(ctx, res)
    local request = require("sluice.pdk.request")
    res.ctx = ctx
    res.headers = request.get_headers(ctx)
    res.path = request.get_path(ctx)
    if ctx.json_changed then
        res.raw_body = cjson.encode(ctx.json)
    else
        res.raw_body = request.get_body(ctx)
    end
    res.json = ctx.json_changed and ctx.json or cjson.decode(res.raw_body)
    res.body_changed = ctx.json_changed or ctx.body_changed or false
    res.response_headers = ctx.resp_headers or {}
    return res
end

--- Runs one phase of plugin with conf (validated first) on a context built from opts (see new_ctx; an existing
-- ctx may be passed as opts.ctx_table to run several phases or plugins on one request). Returns res:
--   status, body, exit_headers    the early response when the phase ended the request (nil otherwise)
--   json, raw_body, body_changed  the body the upstream would receive (decoded JSON or nil / bytes)
--   headers, path                 request headers (lower-case names, plugin changes applied) and path upstream
--   response_headers              headers set on the client response (sluice.response.set_header)
--   logs                          { {level, message} } written through sluice.log during the phase
--   error                         the error when the phase raised (the gateway would answer 500)
--   chunks                        body_filter only: the output chunks for opts.chunks (plus the eof call)
--   ctx                           the context
-- Raises when conf is invalid (use unit.validate to test invalid configs).
function _M.run(plugin, phase, conf, opts)
    opts = opts or {}
    local fn = plugin[phase]
    if type(fn) ~= "function" then
        error("plugin " .. tostring(plugin.name) .. " has no " .. tostring(phase) .. " phase", 2)
    end
    local vconf, errs = _M.validate(plugin, conf)
    if not vconf then
        error("invalid config for " .. plugin.name .. ":\n" .. schema.format_errors(errs), 2)
    end
    local ctx = opts.ctx_table or _M.new_ctx(opts)
    ctx.plugin_name = plugin.name
    local res = {}
    local logs, ok, status, body
    if phase == "body_filter" then
        res.chunks = {}
        local chunks = opts.chunks or {}
        logs, ok, status = in_request(ctx, function()
            for i = 1, #chunks + 1 do
                local chunk = chunks[i] or ""
                local out = fn(vconf, ctx, chunk, i > #chunks)
                if out == nil then out = chunk end
                if #out > 0 then res.chunks[#res.chunks + 1] = out end
            end
        end)
    else
        logs, ok, status, body = in_request(ctx, fn, vconf, ctx)
    end
    res.logs = logs
    if not ok then
        res.error = status
        return collect(ctx, res)
    end
    if (phase == "rewrite" or phase == "access") then
        if type(status) == "number" and not ctx.exit then
            ctx.exit = { status = status, body = body }
        end
        if ctx.exit then
            res.status, res.body, res.exit_headers = ctx.exit.status, ctx.exit.body, ctx.exit.headers
        end
    end
    return collect(ctx, res)
end

--- Runs rewrite then access of several {plugin, conf} pairs in priority order on one request, as a route's
-- pipeline would; stops at the first early response. Returns res as run() does.
function _M.run_chain(list, opts)
    local items = {}
    for _, it in ipairs(list) do
        items[#items + 1] = { plugin = it[1] or it.plugin, conf = it[2] or it.conf or {} }
    end
    table.sort(items, function(a, b) return a.plugin.priority > b.plugin.priority end)
    local ctx = _M.new_ctx(opts)
    local res, logs = nil, {}
    for _, phase in ipairs({ "rewrite", "access" }) do
        for _, it in ipairs(items) do
            if it.plugin[phase] then
                res = _M.run(it.plugin, phase, it.conf, { ctx_table = ctx })
                for _, l in ipairs(res.logs) do logs[#logs + 1] = l end
                if res.status or res.error then
                    res.logs = logs
                    return res
                end
            end
        end
    end
    res = res or collect(ctx, {})
    res.logs = logs
    return res
end

--- True when some log line at level (any level when nil) contains text (plain find).
function _M.logged(res, text, level)
    for _, l in ipairs(res.logs or {}) do
        if (level == nil or l.level == level) and l.message:find(text, 1, true) then
            return true
        end
    end
    return false
end

--- An OpenAI chat completion body (for mocks): unit.chat_completion("hello").
function _M.chat_completion(text, model)
    return { id = "chatcmpl-unit", object = "chat.completion", created = 0, model = model or "mock",
             choices = { { index = 0, finish_reason = "stop", message = { role = "assistant", content = text } } },
             usage = { prompt_tokens = 1, completion_tokens = 1, total_tokens = 2 } }
end

return _M
