-- One worker's request path: config application (router + per-route plugin pipelines) and the request
-- coroutine: route match -> rewrite -> access -> upstream -> header_filter -> body_filter -> log.
local base = require("sluice.pdk.base")
local config = require("sluice.config")
local plugins = require("sluice.plugins")
local router_mod = require("sluice.router")
local response = require("sluice.pdk.response")
local timer = require("sluice.pdk.timer")
local log = require("sluice.pdk.log")
local proxy = require("sluice.proxy")
local fastpath = require("sluice.fastpath")
local cjson = require("cjson.safe")

local C = base.C
local ctxs = base.ctxs
local pairs, ipairs, type, pcall, tostring, tonumber, sort = pairs, ipairs, type, pcall, tostring, tonumber, table.sort
local running, format, gmatch = coroutine.running, string.format, string.gmatch
local tnew = require("table.new")
local deliver, send_error, error_body = response.deliver, response.send_error, response.error_body

local PHASES = { "rewrite", "access", "header_filter", "body_filter", "log" }

-- state: what requests run ({doc, cfg, router, version}); seen: the last snapshot version looked at (applied or
-- refused), so the Admin API knows when its change has been dealt with here.
local _M = { state = nil, id = -1, seen = 0 }

-- the live config for the PDK (sluice.each_conf) and the Admin API, without requiring this module
base.live_state = function()
    return _M.state
end
base.seen_version = function()
    return _M.seen
end

function _M.init(id)
    _M.id = id
    -- every worker its own sequence (ids, jitter, sampling), different on every start
    math.randomseed(os.time() + id * 7919 + math.floor((C.sl_now() % 1) * 1e6))
    -- Room for longer traces: the path of a request that a plugin answers (an ai-cache hit: lookup, usage record,
    -- header and body filters, the response) is one straight line through many functions, over LuaJIT's default
    -- limits of 500 IR constants and 4000 IR instructions per trace ("trace too long"): its traces were thrown
    -- away, then blacklisted, and that code stayed interpreted. More snapshots and machine code to go with them.
    require("jit.opt").start("maxirconst=2000", "maxrecord=12000", "maxsnap=1000", "maxmcode=4096")
    -- SLUICE_JIT_LOG=FILE: LuaJIT's trace log (compiled traces and why others aborted), for profiling
    local jitlog = os.getenv("SLUICE_JIT_LOG")
    if jitlog then
        package.path = package.path .. ";/usr/share/luajit-2.1.0-beta3/?.lua"
        require("jit.v").start(jitlog .. "." .. id)
    end
    -- SLUICE_JIT_PROFILE=SECONDS:FILE: LuaJIT's sampling profiler for the first SECONDS, by function and by VM
    -- state (interpreted, compiled, GC, C), for profiling
    local prof = os.getenv("SLUICE_JIT_PROFILE")
    if prof then
        local secs, file = prof:match("^(%d+):(.+)$")
        package.path = package.path .. ";/usr/share/luajit-2.1.0-beta3/?.lua"
        local p = require("jit.p")
        p.start(os.getenv("SLUICE_JIT_PROFILE_MODE") or "vfi1", file .. "." .. id)
        require("sluice.pdk.timer").at(tonumber(secs), function() p.stop() end)
    end
end

local function prefix()
    return SLUICE_HOME or "."
end

-- Plugins of a route in run order: global ones, then the route's (a route's conf replaces a global one of
-- the same name), by descending priority; `_meta.priority` overrides, `_meta.disable` removes.
local function build_pipeline(reg, route_plugins, global_plugins)
    local by_name = {}
    for name, conf in pairs(global_plugins or {}) do
        by_name[name] = conf
    end
    for name, conf in pairs(route_plugins or {}) do
        by_name[name] = conf
    end
    local list = {}
    for name, conf in pairs(by_name) do
        local meta = conf._meta
        if not (meta and meta.disable) then
            local p = reg:get(name)
            if p then
                list[#list + 1] = { plugin = p, conf = conf, name = name,
                                    priority = meta and meta.priority or p.priority,
                                    log = log.named(name) }
            end
        end
    end
    sort(list, function(a, b)
        if a.priority ~= b.priority then
            return a.priority > b.priority
        end
        return a.name < b.name
    end)
    local pipe = { all = list }
    for _, ph in ipairs(PHASES) do
        local arr = {}
        for _, item in ipairs(list) do
            if item.plugin[ph] then
                arr[#arr + 1] = item
            end
        end
        pipe[ph] = #arr > 0 and arr or false
    end
    return pipe
end

local inited = setmetatable({}, { __mode = "k" })

-- The plugin folders a document names, resolved as sluice.config does.
local function plugin_paths(doc)
    local list = type(doc.node) == "table" and type(doc.node.plugin_paths) == "table" and doc.node.plugin_paths
        or { "plugins" }
    local out = {}
    for i, p in ipairs(list) do
        out[i] = type(p) == "string" and config.resolve_path(prefix(), p) or ""
    end
    return out
end

-- The registry for a snapshot's plugin code ({version, code}): the current one when it is that code, else the
-- code loaded from disk now, checked against the hashes the publisher validated. Returns reg, why (when reg is
-- not exactly that code: the current registry is kept, or at start the code on disk is all there is).
local function registry_for(want, paths)
    local cur = plugins.current()
    local started = cur.version ~= 0
    if started and cur.version == want.version and cur:same_paths(paths) then
        local ok, err = cur:matches(want.code) -- plugins first used by this config are loaded now
        return cur, not ok and err or nil
    end
    local names = {}
    for name in pairs(want.code or {}) do names[#names + 1] = name end
    local staged = plugins.taken(want.version, paths) or plugins.stage(paths, names)
    local ok, err = staged:matches(want.code)
    if ok then
        staged.version = want.version
        return staged
    end
    local why = "plugin code version " .. tostring(want.version) .. " not loaded: " .. err
    if started then
        return cur, why .. "; plugin code version " .. cur.version .. " kept"
    end
    return staged, why .. "; running the code on disk"
end

local function report(version, err)
    local st = _M.state
    require("sluice.master").report(_M.id, version, st and st.version or 0, plugins.current().version, err)
end

--- Called by C when a config snapshot is published (and at start): the config and the plugin code it carries.
function _M.apply(json, version)
    _M.seen = version
    local snap, err = cjson.decode(json)
    local doc = type(snap) == "table" and snap.config
    if type(doc) ~= "table" then
        err = "config snapshot " .. version .. " is not a config: " .. tostring(err)
        log.err("worker ", _M.id, ": ", err)
        return report(version, err)
    end
    local want = type(snap.plugins) == "table" and snap.plugins or {}
    want.version = tonumber(want.version) or 0
    local reg, why = registry_for(want, plugin_paths(doc))
    if why then
        log.err("worker ", _M.id, ": ", why)
    end
    local cfg, errs = config.validate(doc, { plugins = reg.for_config, prefix = prefix() })
    if not cfg then
        local e = "config version " .. version .. " rejected by worker " .. _M.id .. ":\n" .. config.format_errors(errs)
        for line in gmatch(e, "[^\n]+") do -- one log line per error (the log escapes newlines)
            log.err(line)
        end
        return report(version, (why and (why .. "\n") or "") .. e)
    end
    local rt, rerr = router_mod.new(cfg.routes)
    if not rt then
        log.err("worker ", _M.id, ": config version ", version, ": ", rerr)
        return report(version, (why and (why .. "\n") or "") .. "config version " .. version .. ": " .. tostring(rerr))
    end
    for _, route in ipairs(cfg.routes) do
        route.pipeline = build_pipeline(reg, route.plugins, cfg.global_plugins)
        route.upstream_conf = route.upstream or (route.upstream_id and cfg.upstreams[route.upstream_id])
        route.id_c = route.id:sub(1, 63)
    end
    -- requests that match no route go through the global plugins alone
    local global_pipe = build_pipeline(reg, nil, cfg.global_plugins)
    if reg ~= plugins.current() then
        plugins.use(reg)
    end
    local pipes = { global_pipe }
    for _, route in ipairs(cfg.routes) do
        pipes[#pipes + 1] = route.pipeline
    end
    for _, pipe in ipairs(pipes) do
        for _, item in ipairs(pipe.all) do
            local p = item.plugin
            if p.init_worker and not inited[p] then
                inited[p] = true
                local ok, ierr = pcall(p.init_worker)
                if not ok then
                    log.err("plugin ", item.name, " init_worker: ", ierr)
                end
            end
        end
    end
    -- routes that run no Lua are served by C from here on (core/upstream/fastpath.c), matched with rt too
    local c_routes = fastpath.install(cfg, rt, global_pipe)
    _M.state = { doc = doc, cfg = cfg, router = rt, version = version, global_pipeline = global_pipe,
                 c_routes = c_routes }
    report(version, why)
    log.debug("worker ", _M.id, " applied config version ", version, ", plugin code version ", reg.version)
    if _M.id == 0 and cfg.node.config_center then -- worker 0 watches etcd (docs/cluster.md)
        require("sluice.config.center").on_apply(cfg, snap.center, version)
    end
end

--- Called by C when a Lua timer fires.
function _M.on_timer(id)
    timer.fire(id)
end

-- Runs one plugin of a phase; true when it ended the request (ctx.exit set).
local function run_item(ctx, item, phase)
    ctx.plugin_name = item.name
    local ok, status, body = pcall(item.plugin[phase], item.conf, ctx)
    if not ok then
        log.err("plugin ", item.name, " ", phase, " failed: ", status)
        ctx.exit = { status = 500, body = error_body(500, "internal error (id " .. ctx.request_id .. ")"),
                     failure = true }
        return true
    end
    -- rawget: an unset field of ctx goes through ctx_mt.__index, a call, on every plugin of every request
    if type(status) == "number" and not rawget(ctx, "exit") then
        ctx.exit = { status = status, body = body }
    end
    return rawget(ctx, "exit") and true or false
end

-- Runs one phase; true when a plugin ended the request (ctx.exit set). A phase has one or two plugins as a
-- rule: they run outside the loop, since LuaJIT never compiles a loop of one or two rounds (nor a trace through
-- it), and this runs for every phase of every request.
local function run_phase(ctx, items, phase)
    local n = #items
    if n >= 1 and run_item(ctx, items[1], phase) then return true end
    if n >= 2 and run_item(ctx, items[2], phase) then return true end
    for i = 3, n do
        if run_item(ctx, items[i], phase) then return true end
    end
    return false
end

local function log_item(ctx, item)
    local ok, err = pcall(item.plugin.log, item.conf, ctx)
    if not ok then
        log.err("plugin ", item.name, " log failed: ", err)
    end
end

-- Every log plugin runs, whatever the ones before it did; the first two outside a loop, as in run_phase.
local function run_log(ctx, pipe)
    local items = pipe and pipe.log
    if not items then
        return
    end
    local n = #items
    if n >= 1 then log_item(ctx, items[1]) end
    if n >= 2 then log_item(ctx, items[2]) end
    for i = 3, n do
        log_item(ctx, items[i])
    end
end

--- The request coroutine's body. The request comes from sl_vm_req(), not as an argument: turning a light
--- userdata into a pointer (ffi.cast) is not compiled by LuaJIT, and would keep this function interpreted. Its
--- method, path and host come as arguments, strings made in C: read field by field through the FFI they were
--- calls into the VM each (the request coroutine's start runs interpreted).
-- Fields of a request context made on first use: most requests never need them.
local ctx_mt = { __index = function(ctx, k)
    local v
    if k == "request_id" then
        v = format("%016x", tonumber(ctx.req.id))
    elseif k == "var" then
        v = {}
    else
        return nil
    end
    rawset(ctx, k, v)
    return v
end }

-- Every response of a request on a config goes through one pipeline's header_filter and body_filter
-- (sluice.response.deliver, or the proxy stage) and then its log phase: the route's, or the global plugins'
-- when no route matched.
local function serve(r, co, method, path, host, is_admin)
    local st = _M.state
    -- room for the fields a request gathers (route, config, plugin state, upstream...): grown from 4, the
    -- table was rehashed three times per request
    local ctx = tnew(0, 32)
    ctx.req, ctx.method, ctx.path, ctx.host = r, method, path, host
    setmetatable(ctx, ctx_mt)
    ctxs[co] = ctx
    if is_admin then
        local status, body, headers = require("sluice.admin").handle(ctx)
        return deliver(ctx, status, body, headers)
    end
    if not st then
        return send_error(ctx, 503, "no configuration loaded")
    end
    local route, params = st.router:match(ctx.method, ctx.path, ctx.host)
    if not route then
        local gp = st.global_pipeline
        ctx.config, ctx.pipeline = st.cfg, gp
        if params == "method_not_allowed" then
            send_error(ctx, 405, "method not allowed")
        else
            send_error(ctx, 404, "no route matches " .. ctx.path)
        end
        return run_log(ctx, gp)
    end
    local pipe = route.pipeline
    ctx.route, ctx.params, ctx.config, ctx.pipeline = route, params, st.cfg, pipe
    local rid = route.id_c
    C.sl_req_set_route(r, rid, #rid)
    local ended = (pipe.rewrite and run_phase(ctx, pipe.rewrite, "rewrite"))
        or (pipe.access and run_phase(ctx, pipe.access, "access"))
    if ended then
        local e = ctx.exit
        deliver(ctx, e.status, e.body, e.headers, e.failure)
    elseif rawget(ctx, "_upstream_handler") then
        local ok, err = pcall(ctx._upstream_handler, ctx)
        if not ok then
            log.err("plugin ", ctx._upstream_plugin or "?", " upstream stage failed (id ", ctx.request_id, "): ", err)
            if r.resp_started ~= 0 and r.resp_done == 0 then
                C.sl_resp_abort(r) -- a stream was under way: cut it, never end it as if it were whole
            else
                send_error(ctx, 500, "internal error (id " .. ctx.request_id .. ")")
            end
        elseif r.resp_started == 0 and r.client_gone == 0 then
            local e = ctx.exit -- the handler returned sluice.response.exit(...)
            if e then
                deliver(ctx, e.status, e.body, e.headers)
            else
                send_error(ctx, 502, "route " .. route.id .. ": the upstream stage sent no response")
            end
        end
    elseif route.upstream_conf then
        proxy.run(ctx, route.upstream_conf)
    else
        send_error(ctx, 502, "route " .. route.id .. " has no upstream and no plugin answered")
    end
    run_log(ctx, pipe)
end

--- The body of every request coroutine (C keeps finished coroutines for reuse: the context must not stay).
--- C passes the request's method, path, host (nil when it has none) and whether it is for the Admin API.
function _M.handle(method, path, host, is_admin)
    local co = running()
    serve(C.sl_vm_req(), co, method, path, host, is_admin)
    ctxs[co] = nil
end

return _M
