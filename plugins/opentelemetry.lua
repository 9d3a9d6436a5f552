-- opentelemetry: traces over OTLP/HTTP (JSON) to a collector. One SERVER span per request, one CLIENT span per
-- upstream attempt of an AI call (retries and fallbacks of ai-proxy-multi show as siblings) and per sluice.http
-- call a plugin makes; W3C traceparent/tracestate taken from the client and sent upstream; attributes by the
-- OpenTelemetry HTTP and GenAI semantic conventions.
--
--   global_plugins:
--     opentelemetry:
--       endpoint: "http://otel-collector:4318/v1/traces"
--       service_name: sluice
--       sampling: {ratio: 0.1, always_on_error: true}
--       batch: {size: 100, interval: 1s, max_queue: 2048}
--
-- Spans are built as plain tables on the request path and encoded once, in the log phase, when the trace is
-- sampled (the client's sampled flag when it sent a traceparent, else the ratio over the trace id; always on
-- error when asked); a per-worker exporter (sluice.obs.audit's HTTP sink, family "otel") sends batches from a
-- timer, retries with backoff, and drops with a counter when its queue is full. Attribute list:
-- docs/observability.md.
local sluice = require("sluice")
local audit = require("sluice.obs.audit")
local cjson = require("cjson.safe")
local buffer = require("string.buffer")
local tnew = require("table.new")

local request = sluice.request
local type, pairs, ipairs, tostring, tonumber, floor, random = type, pairs, ipairs, tostring, tonumber,
    math.floor, math.random
local find, sub, format, concat, match, lower = string.find, string.sub, string.format, table.concat,
    string.match, string.lower
local encode = cjson.encode

local header_name = { type = "string", minLength = 1, format = "header_name" }

local schema = {
    type = "object",
    required = { "endpoint" },
    additionalProperties = false,
    properties = {
        endpoint = { type = "string", format = "url" }, -- the collector's OTLP/HTTP traces URL (.../v1/traces)
        headers = { type = "object", propertyNames = header_name,
                    additionalProperties = { type = "string", format = "header_value" } },
        service_name = { type = "string", minLength = 1, maxLength = 256, default = "sluice" },
        resource = { type = "object", additionalProperties = { type = { "string", "number", "boolean" } } },
        sampling = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                ratio = { type = "number", minimum = 0, maximum = 1, default = 1 },
                always_on_error = { type = "boolean", default = true },
                parent_based = { type = "boolean", default = true }, -- follow the client's sampled flag
            },
        },
        batch = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                size = { type = "integer", minimum = 1, maximum = 10000, default = 100 },
                interval = { type = "duration", minimum = 0.01, maximum = 60, default = 1 },
                max_queue = { type = "integer", minimum = 1, maximum = 1000000, default = 2048 },
            },
        },
        timeout = { type = "duration", exclusiveMinimum = 0, maximum = 300, default = 5 },
        retry = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                max = { type = "integer", minimum = 0, maximum = 1000, default = 5 }, -- 0: forever
                base = { type = "duration", minimum = 0, maximum = 60, default = 0.2 },
                max_delay = { type = "duration", minimum = 0, maximum = 3600, default = 10 },
            },
        },
        propagate = { type = "boolean", default = true }, -- send traceparent/tracestate upstream
        proxy = { type = "boolean" },
    },
}

local _M = { name = "opentelemetry", version = "1.0", priority = 12000, schema = schema }

local KIND_SERVER, KIND_CLIENT = 2, 3
local STATUS_OK, STATUS_ERROR = 1, 2

-- gen_ai.system by provider kind (semantic conventions' well-known values)
local SYSTEMS = { openai = "openai", ["azure-openai"] = "az.ai.openai", anthropic = "anthropic",
                  gemini = "gcp.gemini", deepseek = "deepseek", bedrock = "aws.bedrock",
                  ["openai-compatible"] = "openai", mock = "mock" }
local OPERATIONS = { chat = "chat", completions = "text_completion", embeddings = "embeddings" }

local function new_span_id()
    return format("%08x%08x", random(0, 4294967295), random(1, 4294967295))
end
local function new_trace_id()
    return format("%08x%08x%08x%08x", random(0, 4294967295), random(0, 4294967295), random(0, 4294967295),
        random(1, 4294967295))
end

--- (trace_id, parent_span_id, flags) of a W3C traceparent header, or nil when it is not one.
local function parse_traceparent(h)
    if type(h) ~= "string" then return nil end
    local ver, tid, pid, flags = h:match("^%s*(%x%x)%-(%x+)%-(%x+)%-(%x%x)")
    if not ver or #tid ~= 32 or #pid ~= 16 or lower(ver) == "ff" then return nil end
    if ver == "00" and #h:match("^%s*(.-)%s*$") ~= 55 then return nil end
    tid, pid = lower(tid), lower(pid)
    if tid == "00000000000000000000000000000000" or pid == "0000000000000000" then return nil end
    return tid, pid, tonumber(flags, 16)
end
_M.parse_traceparent = parse_traceparent

local function ratio_sampled(trace_id, ratio)
    if ratio >= 1 then return true end
    if ratio <= 0 then return false end
    return tonumber(sub(trace_id, 17, 24), 16) / 4294967296 < ratio
end

local function traceparent(tr, span_id)
    return "00-" .. tr.trace_id .. "-" .. span_id .. (tr.sampled and "-01" or "-00")
end

-- Spans are written as JSON by hand (no table per attribute, no sort): attributes in the fixed order of ORDER,
-- straight into a string buffer (no string is made per attribute or per span: the sink's batch takes the bytes).
-- The attributes whose numbers are doubleValue even when whole (a temperature of 1, a cost of 0): known by key,
-- so no table wraps each such number on the request path.
local DOUBLES = { ["gen_ai.request.temperature"] = true, ["gen_ai.request.top_p"] = true,
                  ["sluice.cost_usd"] = true, ["sluice.ttft_s"] = true }
local function num(v) return type(v) == "number" and v or nil end

local plain = audit.plain -- a value that needs no escaping (cached)

local function jstr(v)
    if not plain(v) then return encode(v) end
    return '"' .. v .. '"'
end

-- a JSON string of v into buf
local function put_str(buf, v)
    if plain(v) then
        buf:put('"', v, '"')
    else
        buf:put(encode(v))
    end
end

-- OTLP AnyValue of a Lua value into buf (integers as intValue, other numbers doubleValue, lists arrayValue)
local function put_any(buf, v)
    local t = type(v)
    if t == "string" then
        buf:put('{"stringValue":')
        put_str(buf, v)
        buf:put("}")
    elseif t == "number" then
        if v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53 then
            buf:putf('{"intValue":"%d"}', v)
        elseif v ~= v or v == math.huge or v == -math.huge then
            buf:put('{"stringValue":"', tostring(v), '"}')
        else
            buf:putf('{"doubleValue":%.17g}', v)
        end
    elseif t == "boolean" then
        buf:put(v and '{"boolValue":true}' or '{"boolValue":false}')
    elseif t == "table" then
        buf:put('{"arrayValue":{"values":[')
        for i = 1, #v do
            if i > 1 then buf:put(",") end
            put_any(buf, v[i])
        end
        buf:put("]}}")
    else
        buf:put('{"stringValue":')
        put_str(buf, tostring(v))
        buf:put("}")
    end
end

local scratch = buffer.new()
local function any(v)
    scratch:reset()
    put_any(scratch, v)
    return scratch:tostring()
end

-- every attribute key a span may carry, in the order they are written
local ORDER = {
    "client.address", "error.type", "gen_ai.operation.name", "gen_ai.request.max_tokens", "gen_ai.request.model",
    "gen_ai.request.temperature", "gen_ai.request.top_p", "gen_ai.response.finish_reasons", "gen_ai.response.id",
    "gen_ai.response.model", "gen_ai.system", "gen_ai.usage.cache_read_input_tokens", "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens", "http.request.method", "http.response.status_code", "http.route",
    "server.address", "server.port", "sluice.consumer", "sluice.cost_usd", "sluice.fallbacks", "sluice.plugin",
    "sluice.provider", "sluice.request_id", "sluice.requested_model", "sluice.retries", "sluice.ttft_s",
    "url.full", "url.path",
}
local PREFIX = {}
for _, k in ipairs(ORDER) do PREFIX[k] = '{"key":"' .. k .. '","value":' end

local CPREFIX = {} -- the same after the first attribute
for _, k in ipairs(ORDER) do CPREFIX[k] = ',{"key":"' .. k .. '","value":' end

-- One attribute value (the part after "value":) and the closing brace of the attribute into buf.
local function put_value(buf, v, double)
    local t = type(v)
    if t == "string" and plain(v) then
        buf:put('{"stringValue":"', v, '"}}')
    elseif double and t == "number" and v == v and v ~= math.huge and v ~= -math.huge then
        buf:putf('{"doubleValue":%.17g}}', v)
    else
        put_any(buf, v)
        buf:put("}")
    end
end

-- Appends the attributes to buf: straight-line code made once from ORDER (one test per key, no loop), which
-- LuaJIT compiles into one trace per span shape; a loop over the keys takes a side exit at every present one.
local put_attrs
do
    local src = { "local PREFIX, CPREFIX, put_value = ...\nreturn function(buf, a)\nlocal first, v = true\n" }
    for i, k in ipairs(ORDER) do
        src[#src + 1] = format("v = a[%q] if v ~= nil then buf:put(first and PREFIX[%d] or CPREFIX[%d]) "
            .. "put_value(buf, v, %s) first = false end\n", k, i, i, DOUBLES[k] and "true" or "false")
    end
    src[#src + 1] = "end\n"
    local list, clist = {}, {}
    for i, k in ipairs(ORDER) do list[i], clist[i] = PREFIX[k], CPREFIX[k] end
    put_attrs = assert(load(concat(src), "=opentelemetry.put_attrs"))(list, clist, put_value)
end

-- resource attributes (any keys: the order of the config is kept sorted once per conf)
local function kv_json(a)
    local keys = {}
    for k in pairs(a) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = '{"key":' .. jstr(k) .. ',"value":' .. any(a[k]) .. "}" end
    return "[" .. concat(parts, ",") .. "]"
end

-- One span as OTLP JSON, appended to buf (times in nanoseconds, written as integers).
local function put_span(buf, tr, sp)
    buf:put('{"traceId":"', tr.trace_id, '","spanId":"', sp.id, '"')
    if sp.parent then
        buf:put(',"parentSpanId":"', sp.parent, '"')
    end
    buf:put(',"name":')
    put_str(buf, sp.name)
    -- %d of these whole doubles (under 2^63) writes the digits %.0f would, by the integer path (%.0f takes the
    -- arbitrary-precision one)
    buf:putf(',"kind":%d,"startTimeUnixNano":"%d","endTimeUnixNano":"%d","attributes":[', sp.kind,
        floor(sp.start * 1e9), floor((sp.finish or sp.start) * 1e9))
    put_attrs(buf, sp.attrs)
    if sp.error then
        buf:put('],"status":{"code":', STATUS_ERROR, ',"message":')
        put_str(buf, tostring(sp.error))
        buf:put("}}")
    else
        buf:put('],"status":{"code":', STATUS_OK, "}}")
    end
end

local function span_json(tr, sp)
    local buf = buffer.new()
    put_span(buf, tr, sp)
    return buf:tostring()
end
_M.span_json = span_json

---------------------------------------------------------------------------------------------------------------
-- per-request tracing state

local function start_trace(conf, ctx)
    local tr = ctx.trace
    if tr then return tr end
    local tid, pid, flags
    tid, pid, flags = parse_traceparent(request.get_header("traceparent", ctx))
    local sampled
    if tid then
        if conf.sampling.parent_based then
            sampled = flags % 2 == 1
        else
            sampled = ratio_sampled(tid, conf.sampling.ratio)
        end
    else
        tid = new_trace_id()
        sampled = ratio_sampled(tid, conf.sampling.ratio)
    end
    local _, _, st = sluice.metrics.request_stats(ctx)
    tr = { trace_id = tid, span_id = new_span_id(), parent = pid, sampled = sampled, spans = {}, conf = conf,
           start = st > 0 and st or sluice.time() }
    if pid then
        local ts = request.get_header("tracestate", ctx)
        if type(ts) == "string" and #ts <= 512 and not find(ts, "[%c]") then tr.tracestate = ts end
    end
    ctx.trace = tr
    return tr
end
_M.start_trace = start_trace

local function add_propagation(tr, headers, span_id)
    headers.traceparent = traceparent(tr, span_id)
    if tr.tracestate then headers.tracestate = tr.tracestate end
end

-- AI upstream attempts (sluice.ai.proxy run: ctx.ai_observer)
local ai_observer = {
    start = function(ctx, ai, req)
        local tr = ctx.trace
        if not tr then return nil end
        local sp = { id = new_span_id(), parent = tr.span_id, kind = KIND_CLIENT, start = sluice.time(),
                     attempt = #tr.spans + 1 }
        local op = OPERATIONS[ai.op] or ai.op or "chat"
        sp.name = op .. " " .. tostring(ai.model or ai.requested_model or "")
        local body = ai.request or {}
        -- sized for every attribute the span gets later (finish, usage): no rehash as they come
        local a = tnew(0, 32)
        a["gen_ai.operation.name"] = op
        a["gen_ai.system"] = SYSTEMS[ai.provider and ai.provider.kind or ""] or (ai.provider and ai.provider.kind)
        a["gen_ai.request.model"] = ai.model
        a["sluice.provider"] = ai.provider_name
        a["sluice.requested_model"] = ai.requested_model
        a["server.address"], a["server.port"] = req.host, req.port or (req.scheme == "https" and 443 or 80)
        a["http.request.method"] = req.method or "POST"
        a["gen_ai.request.max_tokens"] = type(body.max_tokens) == "number" and body.max_tokens or nil
        a["gen_ai.request.temperature"] = num(body.temperature)
        a["gen_ai.request.top_p"] = num(body.top_p)
        sp.attrs = a
        if tr.conf.propagate and type(req.headers) == "table" then
            add_propagation(tr, req.headers, sp.id)
        end
        tr.spans[#tr.spans + 1] = sp
        return sp
    end,
    finish = function(ctx, ai, sp, res, fail)
        sp.finish = sluice.time()
        local a = sp.attrs
        local u = ai.usage or {}
        if res == false and type(fail) == "table" then
            a["http.response.status_code"] = fail.status
            a["error.type"] = fail.kind == "status" and tostring(fail.status) or (fail.kind or "error")
            sp.error = fail.message or ("upstream " .. tostring(fail.kind))
        else
            local st = ctx.upstream_status or u.status
            a["http.response.status_code"] = st
            if u.status and u.status >= 400 then
                a["error.type"] = tostring(u.status)
                sp.error = u.error or ("status " .. u.status)
            elseif u.cut then
                a["error.type"] = "stream_cut"
                sp.error = u.error or ("stream cut (" .. u.cut .. ")")
            end
            sp.answered = true
        end
        ctx.trace.last_attempt = sp
    end,
}

-- sluice.http calls of the request's plugins (ctx.http_observer)
local http_observer = {
    start = function(ctx, opts)
        local tr = ctx.trace
        if not tr then return nil end
        local method = opts.method or (opts.body and "POST" or "GET")
        local sp = { id = new_span_id(), parent = tr.span_id, kind = KIND_CLIENT, start = sluice.time(),
                     name = method, attrs = { ["http.request.method"] = method,
                                              ["url.full"] = type(opts.url) == "string"
                                                  and (opts.url:gsub("%?.*$", "")) or nil,
                                              ["sluice.plugin"] = ctx.plugin_name } }
        tr.spans[#tr.spans + 1] = sp
        if not tr.conf.propagate then return opts, sp end
        local o2 = {}
        for k, v in pairs(opts) do o2[k] = v end
        local h = {}
        for k, v in pairs(opts.headers or {}) do h[k] = v end
        add_propagation(tr, h, sp.id)
        o2.headers = h
        return o2, sp
    end,
    finish = function(ctx, sp, res, err)
        if not sp then return end
        sp.finish = sluice.time()
        if res then
            sp.attrs["http.response.status_code"] = res.status
            if res.status >= 500 then sp.error = "status " .. res.status end
        else
            sp.attrs["error.type"] = tostring(err)
            sp.error = tostring(err)
        end
    end,
}

-- The phase runs in a function of its own, called (not tail-called) from the entry point: run_phase calls
-- plugins through pcall, and a LuaJIT trace cannot return through a pcall it did not start in, so a phase
-- function's own body never compiles; this one does.
local function rewrite_phase(conf, ctx)
    local tr = start_trace(conf, ctx)
    ctx.ai_observer = ai_observer
    ctx.http_observer = http_observer
    local route = ctx.route
    if conf.propagate and route and route.upstream ~= nil then -- proxied routes: the upstream's parent is ours
        request.set_header("traceparent", traceparent(tr, tr.span_id), ctx)
        if tr.tracestate then request.set_header("tracestate", tr.tracestate, ctx) end
    end
end

function _M.rewrite(conf, ctx)
    local a, b = rewrite_phase(conf, ctx)
    return a, b
end

-- Adds the values of "finish_reason" (OpenAI) and then of "stop_reason" (Anthropic) in chunk to list fr, at most 8
-- distinct. One plain search for '_reason"' finds both keys: a search for a key that starts with a quote stops at
-- every quote of the JSON (a memcmp each), one for "_" at the few keys that have one.
local stops = {}
local function reasons(chunk, fr)
    local from, ns = 1, 0
    while true do
        local s, e = find(chunk, '_reason"', from, true)
        if not s then break end
        from = e + 1
        local is_finish = s > 7 and sub(chunk, s - 7, s - 1) == '"finish'
        if is_finish or (s > 5 and sub(chunk, s - 5, s - 1) == '"stop') then
            local r = match(chunk, '^%s*:%s*"([%w_]+)"', e + 1)
            if r then
                if is_finish then
                    local dup = #fr >= 8
                    for i = 1, #fr do if fr[i] == r then dup = true end end
                    if not dup then fr[#fr + 1] = r end
                elseif ns < 8 then
                    ns = ns + 1
                    stops[ns] = r
                end
            end
        end
    end
    for j = 1, ns do
        local r = stops[j]
        local dup = #fr >= 8
        for i = 1, #fr do if fr[i] == r then dup = true end end
        if not dup then fr[#fr + 1] = r end
        stops[j] = nil
    end
end

-- finish reasons and the response id, found in what the client gets (OpenAI and Anthropic shapes)
local function body_filter_phase(conf, ctx, chunk)
    if chunk == "" or not ctx.ai then return end
    local tr = ctx.trace
    if not tr then return end
    if find(chunk, '_reason"', 1, true) then
        local fr = tr.finish_reasons or {}
        tr.finish_reasons = fr
        reasons(chunk, fr)
    end
    if not tr.response_id then
        local _, e = find(chunk, '"id"', 1, true)
        if e then
            local id = match(chunk, '^%s*:%s*"([%w_%-]+)"', e + 1)
            if id then tr.response_id = id end
        end
    end
end

function _M.body_filter(conf, ctx, chunk)
    local a, b = body_filter_phase(conf, ctx, chunk)
    return a, b
end

local function usage_attrs(a, u, tr)
    a["gen_ai.response.model"] = u.model
    a["gen_ai.usage.input_tokens"] = u.prompt_tokens
    a["gen_ai.usage.output_tokens"] = u.completion_tokens
    if u.cached_tokens then a["gen_ai.usage.cache_read_input_tokens"] = u.cached_tokens end
    if tr.finish_reasons and #tr.finish_reasons > 0 then
        a["gen_ai.response.finish_reasons"] = tr.finish_reasons
    end
    if tr.response_id then a["gen_ai.response.id"] = tr.response_id end
    if u.cost and u.cost > 0 then a["sluice.cost_usd"] = num(u.cost) end
    if u.ttft then a["sluice.ttft_s"] = num(u.ttft) end
end

local spanbuf = buffer.new() -- one span at a time, copied into the sink's batch
local envelopes = setmetatable({}, { __mode = "k" })
local function sink_of(conf)
    local e = envelopes[conf]
    if not e then
        local res = { ["service.name"] = conf.service_name, ["telemetry.sdk.name"] = "sluice",
                      ["telemetry.sdk.language"] = "lua" }
        for k, v in pairs(conf.resource or {}) do res[k] = v end
        e = {
            url = conf.endpoint, format = "otlp", headers = conf.headers, batch_size = conf.batch.size,
            flush_interval = conf.batch.interval, timeout = conf.timeout, max_buffer = conf.batch.max_queue,
            max_retries = conf.retry.max, backoff = { base = conf.retry.base, max = conf.retry.max_delay },
            proxy = conf.proxy,
            envelope = { '{"resourceSpans":[{"resource":{"attributes":' .. kv_json(res)
                .. '},"scopeSpans":[{"scope":{"name":"sluice","version":"1.0"},"spans":[', "]}]}]}" },
        }
        envelopes[conf] = e
    end
    return audit.http_sink(e, "otel")
end

local function log_phase(conf, ctx)
    local tr = ctx.trace or start_trace(conf, ctx)
    local status = sluice.metrics.request_stats(ctx)
    local ai = ctx.ai
    local u = ai and ai.usage
    local is_error = status >= 500 or (u and ((u.status or 0) >= 500 or u.cut == "upstream")) or false
    if not tr.sampled and not (is_error and conf.sampling.always_on_error) then
        return
    end
    local route = ctx.route and ctx.route.id
    local now = sluice.time()
    local a = tnew(0, 32) -- sized for every attribute the server span may carry: no rehash as they are added
    a["http.request.method"] = ctx.method
    a["url.path"] = ctx.path
    a["http.route"] = route
    a["http.response.status_code"] = status
    a["server.address"] = ctx.host
    a["client.address"] = request.get_client_ip(ctx)
    a["sluice.request_id"] = ctx.request_id
    local name = ctx.method .. (route and (" " .. route) or "")
    if u then
        local op = OPERATIONS[u.op] or u.op
        a["gen_ai.operation.name"] = op
        a["gen_ai.system"] = SYSTEMS[u.provider_kind or ""] or u.provider_kind
        a["gen_ai.request.model"] = u.requested_model
        a["sluice.provider"] = u.provider
        a["sluice.consumer"] = u.consumer
        a["sluice.retries"] = u.retries or 0
        a["sluice.fallbacks"] = u.fallbacks or 0
        usage_attrs(a, u, tr)
        -- the answered attempt carries the usage too (GenAI client span)
        local last = tr.last_attempt
        if last and last.answered then usage_attrs(last.attrs, u, tr) end
    end
    local server = { id = tr.span_id, parent = tr.parent, kind = KIND_SERVER, name = name, start = tr.start,
                     finish = now, attrs = a, error = status >= 500 and ("status " .. status) or nil }
    local sink = sink_of(conf)
    local buf = spanbuf
    buf:reset()
    put_span(buf, tr, server)
    sink:push(buf)
    local spans = tr.spans
    for i = 1, #spans do
        local sp = spans[i]
        sp.finish = sp.finish or now
        buf:reset()
        put_span(buf, tr, sp)
        sink:push(buf)
    end
end

function _M.log(conf, ctx)
    local a, b = log_phase(conf, ctx)
    return a, b
end

function _M.check(conf)
    if conf.retry.max_delay < conf.retry.base then
        return nil, "retry.max_delay must be >= retry.base"
    end
    return true
end

return _M
