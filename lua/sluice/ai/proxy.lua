-- sluice.ai.proxy: the AI call runtime shared by ai-proxy (one provider) and ai-proxy-multi (several).
--
--   access phase:  local status, body = ai_proxy.prepare(ctx, conf)   -- parse, resolve provider/model
--                  sluice.upstream.take_over(ai_proxy.run, ctx)       -- the upstream stage then calls run()
--   upstream stage: ai_proxy.run(ctx)                                 -- build, send, translate, usage
--
-- Answers go out through sluice.response (deliver / stream_*), so the route's header_filter, body_filter and
-- log plugins see them; upstream calls through sluice.ai.upstream.
--
-- The client's API is recognized by the path suffix: OpenAI /chat/completions, /completions, /embeddings,
-- /models; Anthropic /messages. Inside, requests are OpenAI Chat Completions tables (canonical); drivers
-- (sluice.ai.drivers.<kind>) translate to and from each provider. Everything about one call lives in ctx.ai:
--   api ("openai" | "anthropic"), op ("chat" | "completions" | "embeddings" | "models"), request (canonical
--   table), stream, include_usage (the client asked for the usage chunk), provider_name, provider, driver,
--   requested_model, model (served), usage (the usage record, see new_usage / finish_usage).
--
-- Lean path (OpenAI client, OpenAI-wire provider): the upstream body is passed through as is; usage is read
-- from the `"usage":{...}` object alone (never the whole body). Streams are forwarded event by event the same
-- way. A chat request to a driver without body hooks is not even decoded: validate.chat_scan (C) checks and
-- reads it, and ai.request is decoded on first use only (LAZY below; docs/ai-proxy.md).
--
-- Files: this one (access: prepare; proxy stage: run, the non-streaming answer and errors), sluice.ai.stream
-- (streamed answers), sluice.ai.usage (the usage record); the public names of both are re-exported here.
local upstream = require("sluice.ai.upstream")
local request = require("sluice.pdk.request")
local response = require("sluice.pdk.response")
local base = require("sluice.pdk.base")
local common = require("sluice.ai.common")
local usage = require("sluice.ai.usage")
local stream_mod = require("sluice.ai.stream")
local validate = require("sluice.ai.validate")
local consumer = require("sluice.pdk.consumer")
local cjson = require("cjson.safe")

local C = base.C
local type, pairs, ipairs, tostring, pcall, require, setmetatable, rawget = type, pairs, ipairs, tostring, pcall,
    require, setmetatable, rawget
local find = string.find
local concat, sort = table.concat, table.sort
local tnew = require("table.new")
local tclone = require("table.clone")
local json_encode = common.json_encode
local new_usage, finish_usage, scan_usage = usage.new_usage, usage.finish_usage, usage.scan_usage
local completion_text_of = usage.completion_text_of
local stream = stream_mod.run

local MAX_RESPONSE = 64 * 1024 * 1024
-- shared, never changed: sluice.response.deliver copies the headers it is given
local JSON_HEADERS = { ["content-type"] = "application/json" }
local UPERR_TIMEOUT, UPERR_CLIENT_GONE = C.SL_UPERR_TIMEOUT, C.SL_UPERR_CLIENT_GONE

local _M = {}

-- Providers whose wire format is the canonical one (responses and streams pass through untouched); the table
-- lives in sluice.ai.stream, which uses it most.
local OPENAI_WIRE = stream_mod.OPENAI_WIRE
_M.OPENAI_WIRE = OPENAI_WIRE

-- the usage record (sluice.ai.usage), public here as it always was
_M.new_usage, _M.finish_usage, _M.scan_usage = new_usage, finish_usage, scan_usage
_M.log_usage = usage.log_access

---------------------------------------------------------------------------------------------------------------
-- small helpers

local drivers = {}

--- The driver module for a provider kind (cached), or nil, err.
function _M.driver(kind)
    local d = drivers[kind]
    if d then
        return d
    end
    local ok, m = pcall(require, "sluice.ai.drivers." .. tostring(kind))
    if not ok or type(m) ~= "table" then
        return nil, "no driver for provider kind " .. tostring(kind) .. (ok and "" or (": " .. tostring(m)))
    end
    drivers[kind] = m
    return m
end

local anthropic_api_mod
local function anthropic_api()
    if not anthropic_api_mod then
        anthropic_api_mod = require("sluice.ai.anthropic_api")
    end
    return anthropic_api_mod
end

local function ends_with(s, suffix)
    local n = #s - #suffix + 1
    return n >= 1 and find(s, suffix, n, true) == n
end

--- ("openai" | "anthropic", op) for a request path, or nil.
local function detect(path)
    if ends_with(path, "/chat/completions") then
        return "openai", "chat"
    elseif ends_with(path, "/completions") then
        return "openai", "completions"
    elseif ends_with(path, "/embeddings") then
        return "openai", "embeddings"
    elseif ends_with(path, "/models") then
        return "openai", "models"
    elseif ends_with(path, "/messages") then
        return "anthropic", "chat"
    end
    return nil
end
_M.detect = detect

--- An error response (status, body table) in the shape of api.
local function api_error(api, status, message, typ, code)
    return status, common.error_body(api, status, message, typ, code)
end
_M.api_error = api_error

--- Names a route can serve with this conf and provider (sorted), or nil when any name goes through.
local function served_names(conf, provider)
    if conf.model then
        return { conf.model }
    end
    local m = provider.models
    if type(m) ~= "table" or next(m) == nil then
        return nil
    end
    local list = {}
    for k in pairs(m) do
        list[#list + 1] = k
    end
    sort(list)
    return list
end
_M.served_names = served_names

--- requested name -> (name clients use, name sent upstream) | nil, list of names served.
local function resolve_model(conf, provider, requested)
    local name = conf.model or requested
    local map = provider.models
    local has_map = type(map) == "table" and next(map) ~= nil
    if name == nil and has_map then
        local only, n = nil, 0
        for k in pairs(map) do
            only, n = k, n + 1
        end
        if n == 1 then
            name = only
        end
    end
    if type(name) ~= "string" or name == "" then
        return nil, served_names(conf, provider) or {}
    end
    if not has_map then
        return name, name
    end
    local up = map[name]
    if up == nil then
        return nil, served_names(conf, provider)
    end
    return name, up
end
_M.resolve_model = resolve_model

local function models_body(ai, names, provider_name)
    names = names or {}
    local data = {}
    if ai.anthropic_models then
        for i, n in ipairs(names) do
            data[i] = { type = "model", id = n, display_name = n, created_at = "1970-01-01T00:00:00Z" }
        end
        return { data = common.array(data), has_more = false, first_id = names[1] or cjson.null,
                 last_id = names[#names] or cjson.null }
    end
    for i, n in ipairs(names) do
        data[i] = { id = n, object = "model", created = 0, owned_by = provider_name }
    end
    return { object = "list", data = common.array(data) }
end

---------------------------------------------------------------------------------------------------------------
-- access: parse the client request, resolve provider and model

--- The model a route serves for requested and the consumer's model roles: name, served | nil, status, body.
local function pick_model(ctx, api, conf, provider, requested)
    local name, served = resolve_model(conf, provider, requested)
    if not name then
        local list = served
        local msg = requested and ("model " .. requested .. " is not served here") or "model is required"
        if #list > 0 then
            msg = msg .. "; available: " .. concat(list, ", ")
        end
        local status, eb = api_error(api, requested and 404 or 400, msg, nil, requested and "model_not_found" or nil)
        eb.models = common.array(list)
        return nil, status, eb
    end
    -- one name when the route serves the name asked for (no table: a deny or allow of {n, n} is one of n)
    local mok, mwhy = consumer.allowed("model", served ~= name and { name, served } or name, ctx)
    if not mok then
        return nil, api_error(api, 403, mwhy, nil, "model_not_allowed")
    end
    return name, served
end

-- The lean path's ai table: ai.request is decoded from the client's bytes (ai.lean_body) on first use only. The
-- table it gives is the one sluice.request.get_json / peek_json then hand out (ctx.json), as when prepare decoded
-- it, unless the body or JSON was replaced since (then they keep the replacement, as before).
local LAZY = {}
LAZY.__index = function(ai, k)
    if k ~= "request" then
        return nil
    end
    setmetatable(ai, nil)
    local ctx, raw = ai.ctx, ai.lean_body
    local t = cjson.decode(raw) -- checked by validate.chat_scan: it decodes
    ai.request = t
    if rawget(ctx, "json") == nil and rawget(ctx, "body") == raw then
        ctx.json = t
    end
    return t
end

-- An OpenAI chat request to a driver with a lean path (drivers/openai.lua: lean_deny) whose body passes
-- validate.chat_scan: read there without decoding it (ai.request comes later, if anyone asks: LAZY). Returns false
-- when the lean path does not apply (the caller decodes and checks as usual), else what prepare returns.
local function lean_prepare(ctx, ai, conf, provider, d)
    local lean_deny = d.lean_deny
    if not lean_deny then
        return false
    end
    local deny, max_stop = lean_deny(provider)
    if not deny then
        return false
    end
    local raw = rawget(ctx, "body")
    if raw == nil then
        raw = request.get_body(ctx)
    end
    if not raw or raw == "" then
        return false
    end
    local model, streams, include_usage, stop_n, end_off, n, temperature = validate.chat_scan(raw, deny)
    if not model or (max_stop and stop_n > max_stop) then
        return false
    end
    if rawget(ctx, "_json_out") then
        ctx._json_out = nil
    end
    ai.requested_model = model
    local name, served, eb = pick_model(ctx, "openai", conf, provider, model)
    if not name then
        return served, eb
    end
    ai.raw, ai.raw_model, ai.lean_body, ai.ctx = raw, model, raw, ctx
    ai.lean, ai.lean_stop, ai.lean_end = deny, stop_n, end_off
    ai.lean_n, ai.lean_temperature = n, temperature -- sluice.ai.get_sampling without a decode
    ai.stream, ai.include_usage = streams, include_usage
    ai.requested_model, ai.model = model, served
    setmetatable(ai, LAZY)
    ai.usage = new_usage(ctx, ai)
    return nil
end

--- Prepares ctx.ai for conf = {provider, model?, timeout?}. Returns nothing when the call goes ahead (the caller
--- then takes over the upstream stage: sluice.upstream.take_over(run)), or status, body to answer right away
--- (errors, GET /models).
local function prepare(ctx, conf, provider_name)
    local api, op = detect(ctx.path)
    local st0 = ctx.req and ctx.req.start_time or 0
    local ai = tnew(0, 32) -- about 20 fields by the end of a call: made with room for them (no rehash)
    ai.api, ai.op, ai.conf, ai.t0 = api or "openai", op, conf, st0 > 0 and st0 or C.sl_time()
    ctx.ai = ai
    if not op then
        return api_error(ai.api, 404, "no AI API at " .. ctx.path ..
            " (known: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models, /v1/messages)")
    end
    provider_name = provider_name or conf.provider
    local providers = ctx.config and ctx.config.providers or {}
    local provider = providers[provider_name]
    if type(provider) ~= "table" then
        return api_error(ai.api, 500, "provider " .. tostring(provider_name) .. " is not configured")
    end
    local d, derr = _M.driver(provider.kind)
    if not d then
        return api_error(ai.api, 500, derr)
    end
    ai.provider_name, ai.provider, ai.driver = provider_name, provider, d
    -- roles of the consumer (sluice.consumer): providers and models it may use
    local pok, pwhy = consumer.allowed("provider", provider_name, ctx)
    if op == "models" then
        if ctx.method ~= "GET" and ctx.method ~= "HEAD" then
            return api_error(ai.api, 405, "use GET for /models")
        end
        ai.anthropic_models = request.get_header("anthropic-version", ctx) ~= nil
        local names = pok and consumer.filter("model", served_names(conf, provider) or {}, ctx) or {}
        return 200, models_body(ai, names, provider_name)
    end
    if not pok then
        return api_error(ai.api, 403, pwhy, nil, "provider_not_allowed")
    end
    if ctx.method ~= "POST" then
        return api_error(api, 405, "use POST for " .. ctx.path)
    end
    if op == "chat" and api == "openai" and rawget(ctx, "json") == nil then
        local status, eb = lean_prepare(ctx, ai, conf, provider, d)
        if status ~= false then
            return status, eb
        end
    end
    -- decoded here from ctx.body, or before only by readers (sluice.request.peek_json): nobody changed the table
    local fresh = rawget(ctx, "json") == nil or (not rawget(ctx, "_json_out") and not rawget(ctx, "json_changed"))
    local body, err = request.get_json(ctx)
    ctx._json_out = nil -- handed out again after this (sluice.request.get_json, sluice.ai.get_request): may change
    if type(body) ~= "table" then
        return api_error(api, 400, "request body must be a JSON object" .. (err and (": " .. err) or ""))
    end
    local valid, verr, param = validate.request(api, op, body, not rawget(ctx, "json_changed") and ctx.body or nil)
    if not valid then
        local status, eb = api_error(api, 400, verr)
        if api == "openai" and param then
            eb.error.param = param
        end
        return status, eb
    end
    local canon = body
    if api == "anthropic" then
        canon, err = anthropic_api().to_openai(body)
        if type(canon) ~= "table" then
            return api_error(api, 400, tostring(err or "invalid Messages request"))
        end
    end
    if op == "chat" and type(canon.messages) ~= "table" then
        return api_error(api, 400, "messages must be an array")
    elseif op == "completions" and canon.prompt == nil then
        return api_error(api, 400, "prompt is required")
    elseif op == "embeddings" and canon.input == nil then
        return api_error(api, 400, "input is required")
    end
    local requested = type(canon.model) == "string" and canon.model or nil
    ai.requested_model = requested
    local name, served, eb = pick_model(ctx, api, conf, provider, requested)
    if not name then
        return served, eb
    end
    ai.request = canon
    if fresh and api == "openai" then -- the client's bytes, sent as they are while the request is unchanged
        ai.raw, ai.raw_model = ctx.body, requested
    end
    ai.stream = op ~= "embeddings" and canon.stream == true
    local so = canon.stream_options
    ai.include_usage = api == "openai" and type(so) == "table" and so.include_usage == true
    ai.requested_model, ai.model = requested or name, served
    ai.usage = new_usage(ctx, ai)
end

function _M.prepare(ctx, conf, provider_name)
    local status, body = prepare(ctx, conf, provider_name)
    local ai = ctx.ai
    if status and status >= 400 and ai.provider and not ai.usage then
        -- refused before the call (bad JSON, unknown model): still one usage record, with the status
        ai.usage = new_usage(ctx, ai)
        finish_usage(ctx, ai, nil, status)
        ai.usage.error = type(body) == "table" and type(body.error) == "table" and body.error.message or nil
    end
    return status, body
end

---------------------------------------------------------------------------------------------------------------
-- the call

--- Answers with an error in the client's API shape (through the route's filters, as the gateway's own error).
local function send_error(ctx, ai, status, message, typ, code, retry_after)
    local _, body = api_error(ai.api, status, message, typ, code)
    local headers = { ["content-type"] = "application/json" }
    if retry_after then
        headers["retry-after"] = tostring(math.ceil(retry_after))
    end
    response.deliver(ctx, status, json_encode(body) or "{}", headers, true)
end
_M.send_error = send_error

-- why: what failed when the exchange itself did not (p.error 0: e.g. a body over the size bound)
local function upstream_failed(ctx, ai, p, why)
    if p.error == UPERR_CLIENT_GONE or ctx.req.client_gone ~= 0 then
        finish_usage(ctx, ai, nil, 499)
        return
    end
    local msg = "upstream " .. (p.error ~= 0 and upstream.error_text(p.error) or why or "failed")
    local status = p.error == UPERR_TIMEOUT and 504 or 502
    if ai.defer_errors then -- nothing reached the client: the caller may try elsewhere
        return false, { kind = p.error == UPERR_TIMEOUT and "timeout" or "error", status = status, message = msg }
    end
    finish_usage(ctx, ai, nil, status)
    send_error(ctx, ai, status, msg)
end

local function non_stream(ctx, ai, p)
    local body, err = upstream.read_all(ctx, p, MAX_RESPONSE)
    if not body then
        return upstream_failed(ctx, ai, p, err)
    end
    ai.first_byte = true
    local d, out, u = ai.driver, nil, nil
    if ai.api == "openai" and OPENAI_WIRE[ai.provider.kind] then
        u = scan_usage(body)
        if u then
            out = body
        end
    end
    if not out then
        local resp, e = d.parse_response(p.status, upstream.headers(p), body, ai.op)
        if not resp then
            e = e or {}
            finish_usage(ctx, ai, nil, e.status or 502)
            return send_error(ctx, ai, e.status or 502, e.message, e.type, e.code)
        end
        u = d.usage(resp)
        if ai.api == "anthropic" then
            resp = anthropic_api().from_openai_response(resp)
        end
        if not u then
            ai.completion_text = completion_text_of(resp)
        end
        out, err = json_encode(resp)
        if not out then
            finish_usage(ctx, ai, nil, 500)
            return send_error(ctx, ai, 500, "cannot encode the response: " .. tostring(err))
        end
    end
    finish_usage(ctx, ai, u, 200, ai.completion_text)
    ai.usage.ttft = ai.usage.latency
    response.deliver(ctx, 200, out, JSON_HEADERS)
end


-- Upstream call options for a route conf and provider, computed once per config version (conf tables are
-- rebuilt when config changes; the weak keys let old ones go).
local opts_cache = setmetatable({}, { __mode = "k" })
local function call_opts(ai)
    local conf, name = ai.conf, ai.provider_name
    local cache = opts_cache[conf]
    if not cache then
        cache = {}
        opts_cache[conf] = cache
    end
    local o = cache[name]
    if not o then
        local prov = ai.provider
        local t = conf.timeout or prov.timeout or {}
        o = { timeout = { connect = t.connect, send = t.send, read = t.read }, keepalive = prov.keepalive,
              tls = prov.tls, proxy = prov.proxy }
        cache[name] = o
    end
    return o
end

-- The lean request still fits the call's driver and provider (ai-proxy-multi may have switched them since the
-- scan): the same parameters refused, the stop sequences within bounds.
local function lean_fits(ai)
    local lean_deny = ai.driver.lean_deny
    if not lean_deny then
        return false
    end
    local deny, max_stop = lean_deny(ai.provider)
    return deny == ai.lean and not (max_stop and ai.lean_stop > max_stop)
end

--- The upstream stage of an AI call prepared by prepare(): sends it and answers the client.
--- With ai.defer_errors set (ai-proxy-multi), a failure before anything reached the client is not answered:
--- run returns false, {kind = "error" | "timeout" | "status", status, client_status?, message, type?, code?,
--- retry_after?} so the caller can try another provider (ai.call_opts, when set, replaces the call options).
local function run(ctx)
    local ai = ctx.ai
    -- the client's bytes still say what canon says: nobody was handed the table, the model sent is the one asked
    local raw = ai.raw
    if raw and (rawget(ctx, "_json_out") or rawget(ctx, "json_changed") or ai.model ~= ai.raw_model) then
        raw = nil
    end
    local req, err, req_body
    if raw and ai.lean and lean_fits(ai) then
        req, req_body = ai.driver.lean_request(ai.provider, raw, ai.stream, ai.include_usage, ai.lean_end)
        if not req then
            err, req_body = req_body, nil
        end
    else
        local canon = ai.request
        canon.model = ai.model
        req, err = ai.driver.build_request(ai.provider, ai.op, canon,
            { stream = ai.stream, include_usage = true, raw = raw })
    end
    if not req then
        finish_usage(ctx, ai, nil, 400)
        return send_error(ctx, ai, 400, tostring(err))
    end
    ai.upstream_request = req
    local ob = rawget(ctx, "ai_observer") -- unset on most requests: no call of ctx's __index
    if ob then -- a tracing plugin: one span per attempt, its traceparent in req.headers
        if req.fixed_headers then -- a shared request (lean path): the plugin gets its own copy
            req = tclone(req)
            req.headers, req.fixed_headers = tclone(req.headers), nil
            ai.upstream_request = req
        end
        ai.attempt_token = ob.start(ctx, ai, req)
    end
    local p, status, oerr
    if req.local_response then -- the mock provider answers in Lua
        p, status, oerr = upstream.local_open(ctx, req.local_response)
    else
        p, status, oerr = upstream.open(ctx, req, ai.call_opts or call_opts(ai), req_body)
    end
    if not p and status and ai.defer_errors then
        return false, { kind = status == 504 and "timeout" or "error", status = status, message = oerr }
    end
    if not p then
        finish_usage(ctx, ai, nil, status or 499)
        if status then
            send_error(ctx, ai, status, oerr)
        end
        return
    end
    if p.status >= 400 then
        local headers = upstream.headers(p)
        local body = upstream.read_all(ctx, p, MAX_RESPONSE) or ""
        local e = ai.driver.parse_error(p.status, headers, body) or {}
        local st = e.status or p.status
        if ai.api == "openai" and st == 529 then
            st = 503
        end
        if ai.defer_errors then
            return false, { kind = "status", status = p.status, client_status = st, message = e.message,
                            type = e.type, code = e.code, retry_after = e.retry_after }
        end
        finish_usage(ctx, ai, nil, st)
        ai.usage.error = e.message
        return send_error(ctx, ai, st, e.message, e.type, e.code, e.retry_after)
    end
    if ai.stream then
        return stream(ctx, ai, p)
    end
    return non_stream(ctx, ai, p)
end

-- ctx.ai_observer = {start = fn(ctx, ai, req) -> token, finish = fn(ctx, ai, token, res, fail)}: set by a plugin
-- (opentelemetry) before the upstream stage; sees every call of run (each attempt of ai-proxy-multi).
function _M.run(ctx)
    local ob = rawget(ctx, "ai_observer") -- unset on most requests: no call of ctx's __index
    if not ob then
        -- not a tail call: run's own tail calls (non_stream, stream) then return into this Lua frame, where a trace
        -- through them can end; returning straight into the caller's pcall is not compiled (NYI: return to lower
        -- frame), and the traces through the whole answer were thrown away
        local res, fail = run(ctx)
        return res, fail
    end
    local ai = ctx.ai
    ai.attempt_token = nil
    local res, fail = run(ctx)
    if ai.attempt_token then
        ob.finish(ctx, ai, ai.attempt_token, res, fail)
        ai.attempt_token = nil
    end
    return res, fail
end

return _M
