-- ai-audit-log: one JSON record per AI interaction (who, what, which provider and model, status, tokens, cost,
-- timings, retries, cache and guard outcomes, optionally the payloads) to a file with rotation and/or an HTTP
-- collector in batches (Loki, Elasticsearch bulk, any webhook), and to the dashboard's list of recent records.
--
--   ai-audit-log:
--     file: {path: /var/log/sluice/audit.log, max_size: 100m, rotate_interval: 1d, max_files: 7}
--     http: {url: "http://collector:3100/loki/api/v1/push", format: loki, batch_size: 100, flush_interval: 1s}
--     include_payloads: true      # the request and the answer (streams assembled), cut at max_payload
--     max_payload: 16k
--
-- The record is built in the log phase (after the response went out) and handed to per-worker buffers; files are
-- written and batches sent by timers (sluice.obs.audit), so neither slows a request. Payloads go through
-- ctx.audit_redact(text, kind) when a plugin (PII masking) set it. Record schema: docs/observability.md.
local sluice = require("sluice")
local audit = require("sluice.obs.audit")
local cjson = require("cjson.safe")
local buffer = require("string.buffer")

local type, ipairs, tostring, pcall, floor = type, ipairs, tostring, pcall, math.floor
local find, sub, concat, format = string.find, string.sub, table.concat, string.format
local date = os.date
local encode = cjson.encode
local plain = audit.plain

local header_name = { type = "string", minLength = 1, format = "header_name" }

local schema = {
    type = "object",
    additionalProperties = false,
    properties = {
        file = {
            type = "object", required = { "path" }, additionalProperties = false,
            properties = {
                path = { type = "string", minLength = 1, maxLength = 1024 },
                max_size = { type = "size", minimum = 0, default = 104857600 },      -- 0: no size rotation
                rotate_interval = { type = "duration", minimum = 0, maximum = 31 * 86400, default = 0 },
                max_files = { type = "integer", minimum = 0, maximum = 1000, default = 5 },
                flush_interval = { type = "duration", minimum = 0.01, maximum = 60, default = 0.5 },
                max_buffer = { type = "integer", minimum = 1, maximum = 1000000, default = 10000 },
            },
        },
        http = {
            type = "object", required = { "url" }, additionalProperties = false,
            properties = {
                url = { type = "string", format = "url" },
                format = { enum = { "jsonl", "json_array", "es_bulk", "loki" }, default = "jsonl" },
                headers = { type = "object", propertyNames = header_name,
                            additionalProperties = { type = "string", format = "header_value" } },
                loki_labels = { type = "object", additionalProperties = { type = "string" } },
                batch_size = { type = "integer", minimum = 1, maximum = 10000, default = 100 },
                flush_interval = { type = "duration", minimum = 0.01, maximum = 60, default = 1 },
                timeout = { type = "duration", exclusiveMinimum = 0, maximum = 300, default = 5 },
                max_buffer = { type = "integer", minimum = 1, maximum = 1000000, default = 10000 },
                max_retries = { type = "integer", minimum = 0, maximum = 1000, default = 10 }, -- 0: forever
                backoff = { type = "object", additionalProperties = false, default = {},
                            properties = { base = { type = "duration", minimum = 0, maximum = 60, default = 0.2 },
                                           max = { type = "duration", minimum = 0, maximum = 3600, default = 30 } } },
                proxy = { type = "boolean" },
            },
        },
        include_payloads = { type = "boolean", default = false },
        max_payload = { type = "size", minimum = 0, maximum = 16777216, default = 16384 },
        recent = { type = "integer", minimum = 0, maximum = 1000, default = 50 }, -- records the dashboard keeps
    },
}

local _M = { name = "ai-audit-log", version = "1.0", priority = 390, schema = schema }

--- ISO 8601 UTC with milliseconds (the date part made once a second).
local last_sec, last_prefix = -1, ""
local function iso(t)
    local s = floor(t)
    if s ~= last_sec then
        last_sec, last_prefix = s, date("!%Y-%m-%dT%H:%M:%S", s)
    end
    return last_prefix .. format(".%03dZ", floor((t - s) * 1000))
end
_M.iso = iso

local function cut(s, n)
    if type(s) ~= "string" then return s, false end
    if #s <= n then return s, false end
    -- never split a UTF-8 sequence: back off over continuation bytes
    local k = n
    while k > 0 and find(sub(s, k + 1, k + 1), "^[\128-\191]") do k = k - 1 end
    return sub(s, 1, k), true
end
_M.cut = cut

-- The text of one SSE event's data (OpenAI chunk or Anthropic event), or nil.
local function event_text(data)
    if data == "[DONE]" or not find(data, "^%s*{") then return nil end
    local ev = cjson.decode(data)
    if type(ev) ~= "table" then return nil end
    local ch = type(ev.choices) == "table" and ev.choices[1]
    local d = type(ch) == "table" and (ch.delta or ch)
    if type(d) == "table" and type(d.content) == "string" then return d.content end
    if type(d) == "table" and type(d.text) == "string" then return d.text end
    if type(ev.delta) == "table" and type(ev.delta.text) == "string" then return ev.delta.text end -- Anthropic
    return nil
end

--- Feeds a piece of a streamed answer to the assembly state b = {text parts, size, carry}: the answer's text
--- is kept (up to limit bytes), the SSE framing is not.
local function assemble(b, chunk, limit)
    local s = b.carry .. chunk
    local from = 1
    while true do
        local nl = find(s, "\n", from, true)
        if not nl then break end
        local line = sub(s, from, nl - 1)
        from = nl + 1
        local data = line:match("^data:%s?(.-)%s*$")
        if data and b.size < limit then
            local t = event_text(data)
            if t and t ~= "" then
                b.n = b.n + 1
                b[b.n] = t
                b.size = b.size + #t
            end
        end
    end
    b.carry = sub(s, from)
    if #b.carry > 1048576 then b.carry = "" end -- a line that never ends: not an answer's text
end
_M.assemble = assemble

-- The phase runs in a function of its own, called (not tail-called) from the entry point: run_phase calls
-- plugins through pcall, and a LuaJIT trace cannot return through a pcall it did not start in, so a phase
-- function's own body never compiles; this one does.
local function body_filter_phase(conf, ctx, chunk)
    local ai = ctx.ai
    if not conf.include_payloads or not ai or chunk == "" then return end
    local b = ctx._audit_body
    if not b then
        b = { n = 0, size = 0, carry = "" }
        ctx._audit_body = b
    end
    local limit = conf.max_payload + 1
    if ai.stream then
        assemble(b, chunk, limit)
    elseif b.size < limit then
        local c = sub(chunk, 1, limit - b.size)
        b.n = b.n + 1
        b[b.n] = c
        b.size = b.size + #c
    end
end

function _M.body_filter(conf, ctx, chunk)
    local a, b = body_filter_phase(conf, ctx, chunk)
    return a, b
end

local function redact(ctx, text, kind)
    local f = ctx.audit_redact
    if type(f) == "function" and type(text) == "string" then
        local ok, out = pcall(f, text, kind)
        if ok and type(out) == "string" then return out, true end
        return "[redaction failed]", true
    end
    return text, false
end

--- The audit record of a request (a table), or nil outside an AI call.
function _M.record(conf, ctx)
    local ai = ctx.ai
    local u = ai and ai.usage
    if not u then return nil end
    local tr = ctx.trace
    local rec = {
        time = iso(sluice.time()),
        request_id = ctx.request_id,
        trace_id = tr and tr.trace_id or nil,
        consumer = u.consumer, route = u.route, provider = u.provider, provider_kind = u.provider_kind,
        api = u.api, operation = u.op, stream = u.stream or false,
        requested_model = u.requested_model, model = u.model,
        status = u.status,
        input_tokens = u.prompt_tokens, output_tokens = u.completion_tokens, cached_tokens = u.cached_tokens,
        reasoning_tokens = u.reasoning_tokens, estimated = u.estimated or nil,
        cost = u.cost,
        latency_ms = u.latency and floor(u.latency * 1000 + 0.5) or nil,
        ttft_ms = u.ttft and floor(u.ttft * 1000 + 0.5) or nil,
        retries = u.retries or 0, fallbacks = u.fallbacks or 0,
        route_target = u.route_target, degraded = u.degraded, cut = u.cut, error = u.error,
        cache = u.cache, guard = u.guard, moderation = u.moderation, pii = u.pii,
        saved_tokens = u.saved_total_tokens, saved_cost = u.saved_cost, -- ai-cache hits (docs/caching.md)
    }
    if u.attempts then
        local list = {}
        for i, a in ipairs(u.attempts) do
            list[i] = { target = a.target, status = a.status, kind = a.kind, error = a.error }
        end
        rec.attempts = list
    end
    if conf.include_payloads then
        local okb, body = pcall(sluice.request.get_body, ctx)
        local req_text = okb and body or nil
        local trunc, redacted
        req_text, redacted = redact(ctx, req_text, "request")
        req_text, trunc = cut(req_text, conf.max_payload)
        rec.request = req_text
        rec.request_truncated = trunc or nil
        local b = ctx._audit_body
        if b and b.n > 0 then
            local text = redact(ctx, concat(b, "", 1, b.n), "response")
            text, trunc = cut(text, conf.max_payload)
            rec.response = text
            rec.response_truncated = (trunc or b.size > conf.max_payload) or nil
        end
        rec.redacted = redacted or nil
    end
    return rec
end

-- The record's fields in the order they are written (a JSON object made by hand: cheaper than cjson over a hash,
-- and readable in a file).
local ORDER = { "time", "request_id", "trace_id", "consumer", "route", "provider", "provider_kind", "api", "operation",
                "stream", "requested_model", "model", "status", "input_tokens", "output_tokens", "cached_tokens",
                "reasoning_tokens", "estimated", "cost", "latency_ms", "ttft_ms", "retries", "fallbacks",
                "route_target", "degraded", "cut", "error", "attempts", "cache", "saved_tokens", "saved_cost",
                "guard", "moderation", "pii",
                "redacted", "request", "request_truncated", "response", "response_truncated" }
local KEY, FIRST = {}, {}
for _, k in ipairs(ORDER) do KEY[k], FIRST[k] = ',"' .. k .. '":', '{"' .. k .. '":' end

-- One value as JSON into buf.
local function put_value(buf, v)
    local t = type(v)
    if t == "string" then
        if plain(v) then buf:put('"', v, '"') else buf:put(encode(v)) end
    elseif t == "number" then
        if v == floor(v) and v > -1e15 and v < 1e15 then
            buf:putf("%d", v)
        elseif v ~= v or v == math.huge or v == -math.huge then
            buf:put("null")
        else
            buf:putf("%.10g", v)
        end
    elseif t == "boolean" then
        buf:put(v and "true" or "false")
    else
        buf:put(encode(v) or "null") -- tables from other plugins (guard, pii, ...)
    end
end

--- The record as one line of JSON into buf, fields in ORDER (absent ones left out).
local function put_json(buf, rec)
    local n = 0
    for i = 1, #ORDER do
        local k = ORDER[i]
        local v = rec[k]
        if v ~= nil then
            n = n + 1
            buf:put(n == 1 and FIRST[k] or KEY[k])
            put_value(buf, v)
        end
    end
    buf:put(n == 0 and "{}" or "}")
end

local function to_json(rec)
    local buf = buffer.new()
    put_json(buf, rec)
    return buf:tostring()
end
_M.to_json = to_json

local recbuf = buffer.new() -- one record at a time, copied into the sinks' buffers
local function log_phase(conf, ctx)
    local rec = _M.record(conf, ctx)
    if not rec then return end
    if conf.file or conf.http then
        recbuf:reset()
        put_json(recbuf, rec)
        if conf.file then audit.file_sink(conf.file):push(recbuf) end
        if conf.http then audit.http_sink(conf.http):push(recbuf) end
    end
    if conf.recent > 0 then
        if conf.include_payloads then -- the dashboard list never shows payloads
            rec.request, rec.response = nil, nil
        end
        audit.remember(rec, conf.recent, to_json) -- encoded by the ring's timer, if it is still among the last
    end
end

function _M.log(conf, ctx)
    local a, b = log_phase(conf, ctx)
    return a, b
end

function _M.check(conf)
    if conf.http and conf.http.backoff.max < conf.http.backoff.base then
        return nil, "http.backoff.max must be >= http.backoff.base"
    end
    return true
end

_M._tostring = tostring

return _M
