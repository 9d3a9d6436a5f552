-- prometheus: HTTP and AI metrics for Prometheus, summed over every worker, exposed at GET /metrics on the Admin
-- API listener (X-API-KEY or `Authorization: Bearer KEY`), and the usage/spend store behind GET /admin/usage.
--
--   global_plugins:
--     prometheus: {max_consumers: 100, max_models: 100, usage: {bucket: 1h, retention: 7d}}
--
-- The log phase of each request adds to this worker's tables (sluice.metrics: no shared-dict call per
-- request); a timer moves them into the shared dict once a second. Consumers and models past their limit are
-- counted as "other"; labels never hold prompt text, request paths or keys (a route is named by its id).
-- Other plugins report through sluice.metrics (refusals, cache) without touching this one. The metric list is in
-- docs/observability.md.
local sluice = require("sluice")
local usage = require("sluice.obs.usage")
local ffi = require("ffi")

local metrics = sluice.metrics
local bound = metrics.bound
local C = require("sluice.core")
local type, tonumber, tostring, ipairs, pcall, floor, find = type, tonumber, tostring, ipairs, pcall, math.floor,
    string.find

-- sl_worker_conn_stats: cdef in sluice.pdk.metrics (core/server/stats.h)

local TPOT_BUCKETS = { 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64 }

local R, P, M, CN = "route", "provider", "model", "consumer"

-- HTTP
local http_requests = metrics.counter("sluice_http_requests_total",
    "HTTP requests by route and status class", { R, "status_class" })
local http_duration = metrics.histogram("sluice_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response", { R })
local http_upstream = metrics.histogram("sluice_http_upstream_duration_seconds",
    "Time spent waiting on the upstream", { R })
local bytes_in = metrics.counter("sluice_http_request_body_bytes_total", "Request body bytes received", { R })
local bytes_out = metrics.counter("sluice_http_response_bytes_total", "Response bytes sent (head and body)", { R })
local conns = metrics.gauge("sluice_http_connections", "Client connections by state, per worker",
    { "state", "worker" }, { ttl = 5 })
local cfg_version = metrics.gauge("sluice_config_version", "Version of the config snapshot in use")
local cfg_reloads = metrics.counter("sluice_config_reloads_total",
    "Config or plugin snapshots applied since the start (worker 0)")
-- AI
local ai_requests = metrics.counter("sluice_ai_requests_total",
    "AI requests by route, provider, model, consumer and the status class the client got",
    { R, P, M, CN, "status_class" })
local ai_errors = metrics.counter("sluice_ai_errors_total",
    "Failed upstream attempts of AI requests by error type", { R, P, M, "type" })
local ai_tokens = metrics.counter("sluice_gen_ai_client_token_usage_total",
    "Tokens by type (input, output, cached): gen_ai.client.token.usage", { R, P, M, CN, "token_type" })
local ai_cost = metrics.counter("sluice_ai_cost_usd_total", "Cost in USD from the providers' price tables",
    { R, P, M, CN })
local ai_duration = metrics.histogram("sluice_gen_ai_client_operation_duration_seconds",
    "AI request duration: gen_ai.client.operation.duration", { R, P, M })
local ai_ttft = metrics.histogram("sluice_gen_ai_server_time_to_first_token_seconds",
    "Time to the first byte of the answer: gen_ai.server.time_to_first_token", { R, P, M })
local ai_tpot = metrics.histogram("sluice_gen_ai_server_time_per_output_token_seconds",
    "Time per output token after the first (streams): gen_ai.server.time_per_output_token", { R, P, M },
    TPOT_BUCKETS)
local ai_retries = metrics.counter("sluice_ai_retries_total", "Retries of AI requests (ai-proxy-multi)", { R })
local ai_fallbacks = metrics.counter("sluice_ai_fallbacks_total",
    "AI requests answered by another target than the first (ai-proxy-multi)", { R })
local ai_degraded = metrics.counter("sluice_ai_degradations_total",
    "AI requests degraded: fallback group, static answer or error (ai-proxy-multi)", { R, "kind" })
local ai_shed = metrics.counter("sluice_ai_qos_shed_total", "AI requests shed by QoS (queue full or timeout)",
    { R, "reason" })
local ai_qos_wait = metrics.histogram("sluice_ai_qos_wait_seconds", "Time AI requests waited for a QoS slot", { R })
local ai_queue = metrics.gauge("sluice_ai_qos_queue_depth", "AI requests waiting for a slot, per target and worker",
    { "target", "worker" }, { ttl = 5 })
local ai_inflight = metrics.gauge("sluice_ai_target_inflight", "AI requests in flight per target (all workers)",
    { "target" }, { ttl = 5 })
local ai_breaker = metrics.gauge("sluice_ai_breaker_state",
    "Availability of an ai-proxy-multi target: 1 for its current state", { "target", "state" }, { ttl = 5 })
-- reported by other plugins (declared here so they show up at 0 rate from the start; see docs/observability.md)
metrics.counter("sluice_ai_refusals_total", "Requests refused by rate-limit, budget and guard plugins",
    { R, "plugin", "reason" })
metrics.counter("sluice_ai_cache_total", "AI response cache lookups by result (hit, miss)", { R, "result" })

local CLASSES = { "1xx", "2xx", "3xx", "4xx", "5xx" }
local function class_of(status)
    return CLASSES[floor((status or 0) / 100)] or "other"
end

local schema = {
    type = "object",
    additionalProperties = false,
    properties = {
        max_consumers = { type = "integer", minimum = 1, maximum = 100000, default = 100 },
        max_models = { type = "integer", minimum = 1, maximum = 100000, default = 100 },
        usage = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                enabled = { type = "boolean", default = true },
                dict = { type = "string", minLength = 1, default = "sluice", ref = "shared_dicts" },
                bucket = { type = "duration", minimum = 60, maximum = 86400, default = 3600 },
                retention = { type = "duration", minimum = 60, maximum = 400 * 86400, default = 7 * 86400 },
                node_id = { type = "string", minLength = 1, maxLength = 128, pattern = "^[%w%.%-_:]+$" },
                publish_interval = { type = "duration", minimum = 1, maximum = 3600, default = 10 },
            },
        },
    },
}

local _M = { name = "prometheus", version = "1.0", priority = 400, schema = schema }

--- Error type of a failed attempt or outcome: timeout, rate_limit, 5xx, 4xx, connect, content_filter, network,
--- stream_cut, client_gone.
local function error_type(status, kind, message)
    if type(message) == "string" and (find(message, "content[_ ]filter") or find(message, "content_management")) then
        return "content_filter"
    end
    if kind == "timeout" or status == 504 then return "timeout" end
    if status == 429 then return "rate_limit" end
    if kind == "error" then
        if type(message) == "string" and find(message, "connect") then return "connect" end
        return "network"
    end
    if status == 499 then return "client_gone" end
    if status and status >= 500 then
        if type(message) == "string" and find(message, "connect") then return "connect" end
        return "5xx"
    end
    return "4xx"
end
_M.error_type = error_type

-- Hot path: the series a request adds to are found once per label set and kept in groups (one lookup per
-- label for the whole request, then plain additions: sluice.metrics.add / observe on handles).
local add, observe = metrics.add, metrics.observe

local http_groups = {} -- route -> {classes = {[n] = handle}, dur, up, bin, bout}
local function http_group(route)
    local g = { route = route, classes = {}, dur = http_duration:handle(route), up = http_upstream:handle(route),
                bin = bytes_in:handle(route), bout = bytes_out:handle(route) }
    http_groups[route] = g
    return g
end

local ai_groups = {} -- route -> provider -> model -> consumer -> group
local function ai_group(route, provider, model, consumer)
    local t = ai_groups
    for _, k in ipairs({ route, provider, model, consumer }) do
        local nx = t[k]
        if not nx then
            nx = {}
            t[k] = nx
        end
        t = nx
    end
    local g = {
        classes = {},
        tin = ai_tokens:handle(route, provider, model, consumer, "input"),
        tout = ai_tokens:handle(route, provider, model, consumer, "output"),
        tcached = ai_tokens:handle(route, provider, model, consumer, "cached"),
        cost = ai_cost:handle(route, provider, model, consumer),
        dur = ai_duration:handle(route, provider, model),
        ttft = ai_ttft:handle(route, provider, model),
        tpot = ai_tpot:handle(route, provider, model),
        slot = usage.slot(consumer, model, provider, route),
        key = { route, provider, model, consumer },
    }
    t[true] = g
    return g
end

local function ai_log(conf, u, route)
    local provider = u.provider or ""
    local model = bound(M, u.model or u.requested_model, conf.max_models)
    local consumer = bound(CN, u.consumer or "", conf.max_consumers)
    local g
    local t1 = ai_groups[route]
    local t2 = t1 and t1[provider]
    local t3 = t2 and t2[model]
    local t4 = t3 and t3[consumer]
    g = t4 and t4[true] or ai_group(route, provider, model, consumer)
    local st = u.status or 0
    local cls = floor(st / 100)
    local ch = g.classes[cls]
    if not ch then
        ch = ai_requests:handle(route, provider, model, consumer, class_of(st))
        g.classes[cls] = ch
    end
    add(ch, 1)
    local atts = u.attempts
    if atts then
        for i = 1, #atts do
            local a = atts[i]
            ai_errors:inc(1, route, a.target or provider, model, error_type(a.status, a.kind, a.error))
        end
    elseif st >= 400 or u.cut == "upstream" then
        ai_errors:inc(1, route, provider, model, u.cut == "upstream" and "stream_cut" or error_type(st, nil, u.error))
    end
    local inp, outp, cached = u.prompt_tokens or 0, u.completion_tokens or 0, u.cached_tokens or 0
    if inp > 0 then add(g.tin, inp) end
    if outp > 0 then add(g.tout, outp) end
    if cached > 0 then add(g.tcached, cached) end
    local cost = u.cost or 0
    if cost > 0 then add(g.cost, cost) end
    local lat, ttft = u.latency, u.ttft
    if lat then observe(g.dur, lat) end
    if ttft and st < 400 then
        observe(g.ttft, ttft)
        if u.stream and lat and outp > 1 then
            observe(g.tpot, (lat - ttft) / (outp - 1))
        end
    end
    local retries, fallbacks = u.retries or 0, u.fallbacks or 0
    if retries > 0 then ai_retries:inc(retries, route) end
    if fallbacks > 0 then ai_fallbacks:inc(fallbacks, route) end
    if u.degraded then ai_degraded:inc(1, route, u.degraded) end
    if u.shed then ai_shed:inc(1, route, u.shed) end
    if u.qos_wait then ai_qos_wait:observe(u.qos_wait, route) end
    if conf.usage.enabled then
        usage.record_slot(g.slot, inp, outp, cached, cost)
    end
end

local request_stats = metrics.request_stats

-- The phase runs in a function of its own, called (not tail-called) from the entry point: run_phase calls
-- plugins through pcall, and a LuaJIT trace cannot return through a pcall it did not start in, so a phase
-- function's own body never compiles; this one does.
local function log_phase(conf, ctx)
    local status, sent, st, ut, bin = request_stats(ctx)
    local route = ctx.route
    route = route and route.id or ""
    local g = http_groups[route] or http_group(route)
    local cls = floor(status / 100)
    local ch = g.classes[cls]
    if not ch then
        ch = http_requests:handle(route, class_of(status))
        g.classes[cls] = ch
    end
    add(ch, 1)
    if st > 0 then observe(g.dur, C.sl_time() - st) end
    if ut > 0 then observe(g.up, ut) end
    if bin > 0 then add(g.bin, bin) end
    add(g.bout, sent)
    local ai = ctx.ai
    local u = ai and ai.usage
    if u then
        ai_log(conf, u, route)
    end
end

function _M.log(conf, ctx)
    local a, b = log_phase(conf, ctx)
    return a, b
end

---------------------------------------------------------------------------------------------------------------
-- gauges, read once a second by each worker

local STATES = { "closed", "half_open", "open", "down", "cooling" }
local conn_out = ffi.new("int32_t[4]")
local last_version

local function multi_targets(now, worker)
    local ok, routing = pcall(require, "ai-proxy-multi.routing")
    if not ok then return end
    for conf, cfg in sluice.each_conf("ai-proxy-multi") do
        local rt = routing.runtime(conf, cfg)
        if rt then
            for _, t in ipairs(rt.targets) do
                ai_queue:set(rt.qos:waiting(t.key), t.name, worker)
                if worker == "0" then
                    local state = rt.br:state(t.key, now)
                    for _, s in ipairs(STATES) do
                        ai_breaker:set(s == state and 1 or 0, t.name, s)
                    end
                    local busy = rt.qos.d and rt.qos.d:get("aipm|" .. t.key .. "|busy")
                    ai_inflight:set(tonumber(busy) or 0, t.name)
                end
            end
        end
    end
end

local function tick()
    local wid = sluice.worker_id()
    local worker = tostring(wid)
    if C.sl_worker_conn_stats(conn_out) == 0 then
        conns:set(conn_out[0], "active", worker)
        conns:set(conn_out[1], "reading", worker)
        conns:set(conn_out[2], "writing", worker)
        conns:set(conn_out[3], "idle", worker)
    end
    if wid == 0 then
        local st = require("sluice.pdk.base").live_state()
        local v = st and st.version
        if v and v ~= last_version then
            if last_version then cfg_reloads:inc(1) end
            last_version = v
            cfg_version:set(v)
        end
    end
    local ok, err = pcall(multi_targets, sluice.now(), worker)
    if not ok then sluice.log.warn("prometheus: ai-proxy-multi gauges: ", err) end
end
_M.tick = tick

-- one gauge timer and one memcached publisher per worker, whatever the reloads (kept in a runtime module)
local state = package.loaded["sluice.obs.usage"]

function _M.init_worker()
    if state.prometheus_timer then
        return
    end
    state.prometheus_timer = true
    sluice.timer.every(1, function()
        local ok, err = pcall(tick)
        if not ok then sluice.log.warn("prometheus: gauges: ", err) end
    end)
    if sluice.worker_id() == 0 then
        local since = 0
        sluice.timer.every(1, function()
            local o = usage.options()
            since = since + 1
            if since >= (o.publish_interval or 10) then
                since = 0
                local ok, err = pcall(usage.publish)
                if not ok then sluice.log.warn("prometheus: usage publish: ", err) end
            end
        end)
    end
end

function _M.check(conf)
    usage.configure({ dict = conf.usage.dict, bucket = conf.usage.bucket, retention = conf.usage.retention,
                      node_id = conf.usage.node_id, publish_interval = conf.usage.publish_interval })
    return true
end

return _M
