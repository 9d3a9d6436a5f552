-- sluice.ai.proxy: the AI call runtime shared by ai-proxy (one provider) and ai-proxy-multi (several).
--
--   access phase:  local status, body = ai_proxy.prepare(ctx, conf)   -- parse, resolve provider/model
--                  ctx.upstream_override = ai_proxy.upstream          -- the proxy stage then calls run()
--   proxy stage:   ai_proxy.run(ctx, up, pipe)                        -- build, send, translate, usage
--
-- The client's API is recognized by the path suffix: OpenAI /chat/completions, /completions, /embeddings,
-- /models; Anthropic /messages. Inside, requests are OpenAI Chat Completions tables (canonical); drivers
-- (sluice.ai.drivers.<kind>) translate to and from each provider. Everything about one call lives in ctx.ai:
--   api ("openai" | "anthropic"), op ("chat" | "completions" | "embeddings" | "models"), request (canonical
--   table), stream, include_usage (the client asked for the usage chunk), provider_name, provider, driver,
--   requested_model, model (served), usage (the usage record, see new_usage / finish_usage).
--
-- Lean path (OpenAI client, OpenAI-wire provider): the upstream body is passed through as is; usage is read
-- from the `"usage":{...}` object alone (never the whole body), so a request costs one JSON decode (the
-- client body) and one encode (the upstream body). Streams are forwarded event by event the same way.
local proxy = require("sluice.proxy")
local request = require("sluice.pdk.request")
local base = require("sluice.pdk.base")
local log = require("sluice.pdk.log")
local common = require("sluice.ai.common")
local sse = require("sluice.ai.sse")
local cjson = require("cjson.safe")

local C = base.C
local type, pairs, ipairs, tostring, tonumber, pcall, require = type, pairs, ipairs, tostring, tonumber, pcall,
    require
local find, sub, match, byte = string.find, string.sub, string.match, string.byte
local concat, sort = table.concat, table.sort
local decode = cjson.decode
local json_encode = common.json_encode

local MAX_RESPONSE = 64 * 1024 * 1024
local UPERR_CLIENT_GONE = 6

local _M = {}

-- Providers whose wire format is the canonical one (responses and streams pass through untouched).
local OPENAI_WIRE = { openai = true, ["openai-compatible"] = true, deepseek = true, ["azure-openai"] = true }
_M.OPENAI_WIRE = OPENAI_WIRE

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

local tokens_mod
local function tokens()
    if tokens_mod == nil then
        local ok, m = pcall(require, "sluice.ai.tokens")
        tokens_mod = ok and m or false
    end
    return tokens_mod or nil
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
-- usage record

--- A fresh usage record for ctx.ai (fields filled in as the call goes on).
local function new_usage(ctx, ai)
    local consumer = ctx.consumer
    return {
        consumer = type(consumer) == "table" and consumer.name or nil,
        route = ctx.route and ctx.route.id or nil,
        provider = ai.provider_name,
        provider_kind = ai.provider and ai.provider.kind or nil,
        api = ai.api,
        op = ai.op,
        stream = ai.stream or false,
        requested_model = ai.requested_model,
        model = ai.model,
        prompt_tokens = 0, completion_tokens = 0, total_tokens = 0,
        cached_tokens = nil, reasoning_tokens = nil,
        cost = 0, estimated = false,
        latency = nil, ttft = nil, status = nil,
        retries = 0, fallbacks = 0, cache = nil,
    }
end
_M.new_usage = new_usage

--- Price entry of a provider for the requested or served model name.
local function price_of(provider, ai)
    local price = provider and provider.price
    if type(price) ~= "table" then
        return nil
    end
    return price[ai.requested_model or ""] or price[ai.model or ""]
end

-- Fills token numbers (u: normalized usage or nil -> local estimate), cost, latency and status.
local function finish_usage(ctx, ai, u, status, completion_text)
    local rec = ai.usage
    if u then
        rec.prompt_tokens = u.prompt_tokens or 0
        rec.completion_tokens = u.completion_tokens or 0
        rec.total_tokens = u.total_tokens or (rec.prompt_tokens + rec.completion_tokens)
        rec.cached_tokens = u.cached_tokens
        rec.reasoning_tokens = u.reasoning_tokens
    elseif status and status < 400 and ai.request then
        local t = tokens()
        if t then
            local ok, p = pcall(t.count_request, ai.op, ai.request)
            local okc, c = pcall(t.count_text, completion_text or "")
            rec.prompt_tokens = ok and tonumber(p) or 0
            rec.completion_tokens = okc and tonumber(c) or 0
            rec.total_tokens = rec.prompt_tokens + rec.completion_tokens
            rec.estimated = true
        end
    end
    local price = price_of(ai.provider, ai)
    if price then
        rec.cost = (rec.prompt_tokens * (price.input or 0) + rec.completion_tokens * (price.output or 0)) / 1e6
    end
    rec.status = status
    rec.model = ai.model
    rec.latency = C.sl_time() - ai.t0
end

---------------------------------------------------------------------------------------------------------------
-- access: parse the client request, resolve provider and model

--- Prepares ctx.ai for conf = {provider, model?, timeout?}. Returns nothing when the call goes ahead (the caller
--- sets ctx.upstream_override = _M.upstream), or status, body to answer right away (errors, GET /models).
local function prepare(ctx, conf, provider_name)
    local api, op = detect(ctx.path)
    local st0 = ctx.req and ctx.req.start_time or 0
    local ai = { api = api or "openai", op = op, conf = conf, t0 = st0 > 0 and st0 or C.sl_time() }
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
    if op == "models" then
        if ctx.method ~= "GET" and ctx.method ~= "HEAD" then
            return api_error(ai.api, 405, "use GET for /models")
        end
        ai.anthropic_models = request.get_header("anthropic-version", ctx) ~= nil
        return 200, models_body(ai, served_names(conf, provider) or {}, provider_name)
    end
    if ctx.method ~= "POST" then
        return api_error(api, 405, "use POST for " .. ctx.path)
    end
    local body, err = request.get_json(ctx)
    if type(body) ~= "table" then
        return api_error(api, 400, "request body must be a JSON object" .. (err and (": " .. err) or ""))
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
    local name, served = resolve_model(conf, provider, requested)
    if not name then
        local list = served
        local msg = requested and ("model " .. requested .. " is not served here") or "model is required"
        if #list > 0 then
            msg = msg .. "; available: " .. concat(list, ", ")
        end
        local status, eb = api_error(api, requested and 404 or 400, msg, nil, requested and "model_not_found" or nil)
        eb.models = common.array(list)
        return status, eb
    end
    ai.request = canon
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

local function send_error(ctx, pipe, ai, status, message, typ, code, retry_after)
    local _, body = api_error(ai.api, status, message, typ, code)
    local headers = { ["content-type"] = "application/json" }
    if retry_after then
        headers["retry-after"] = tostring(math.ceil(retry_after))
    end
    proxy.respond(ctx, pipe, status, headers, json_encode(body) or "{}")
end
_M.send_error = send_error
_M.finish_usage = finish_usage

-- The `"usage":{...}` object of an OpenAI body or chunk, decoded and normalized (nil when absent or null).
-- Plain searches only (memchr speed): `"usage"` with unescaped quotes can only be a key, since quotes inside
-- JSON strings are escaped. The last one wins (the top-level usage comes last in OpenAI bodies).
local function scan_usage(s, from)
    local at
    from = from or 1
    while true do
        local j, e = find(s, '"usage"', from, true)
        if not j then
            break
        end
        local k = e + 1
        local c = byte(s, k)
        while c == 32 or c == 9 or c == 10 or c == 13 do k = k + 1; c = byte(s, k) end
        if c == 58 then -- ':'
            k = k + 1
            c = byte(s, k)
            while c == 32 or c == 9 or c == 10 or c == 13 do k = k + 1; c = byte(s, k) end
            if c == 123 then -- '{'
                at = k
            end
        end
        from = e + 1
    end
    if not at then
        return nil
    end
    local obj = match(s, "^%b{}", at)
    if not obj then
        return nil
    end
    return common.normalize_usage(decode(obj))
end
_M.scan_usage = scan_usage

local function completion_text_of(resp)
    local ch = type(resp) == "table" and resp.choices
    if type(ch) ~= "table" then
        return ""
    end
    local out = {}
    for _, c in ipairs(ch) do
        local m = type(c) == "table" and (c.message or c.delta)
        if type(m) == "table" then
            out[#out + 1] = common.content_text(m.content)
            if type(m.tool_calls) == "table" then
                for _, tc in ipairs(m.tool_calls) do
                    local f = type(tc) == "table" and tc["function"]
                    if type(f) == "table" and type(f.arguments) == "string" then
                        out[#out + 1] = f.arguments
                    end
                end
            end
        elseif type(c) == "table" and type(c.text) == "string" then
            out[#out + 1] = c.text
        end
    end
    return concat(out)
end

local function upstream_failed(ctx, pipe, ai, p)
    if p.error == UPERR_CLIENT_GONE or ctx.req.client_gone ~= 0 then
        finish_usage(ctx, ai, nil, 499)
        return
    end
    local msg = "upstream " .. proxy.error_name(p.error)
    local status = p.error == 3 and 504 or 502
    if ai.defer_errors then -- nothing reached the client: the caller may try elsewhere
        return false, { kind = p.error == 3 and "timeout" or "error", status = status, message = msg }
    end
    finish_usage(ctx, ai, nil, status)
    send_error(ctx, pipe, ai, status, msg)
end

local function non_stream(ctx, pipe, ai, p)
    local body, err = proxy.read_all(ctx, p, MAX_RESPONSE)
    if not body then
        return upstream_failed(ctx, pipe, ai, p)
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
        local resp, e = d.parse_response(p.status, proxy.headers(p), body, ai.op)
        if not resp then
            e = e or {}
            finish_usage(ctx, ai, nil, e.status or 502)
            return send_error(ctx, pipe, ai, e.status or 502, e.message, e.type, e.code)
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
            return send_error(ctx, pipe, ai, 500, "cannot encode the response: " .. tostring(err))
        end
    end
    finish_usage(ctx, ai, u, 200, ai.completion_text)
    ai.usage.ttft = ai.usage.latency
    proxy.respond(ctx, pipe, 200, { ["content-type"] = "application/json" }, out)
end

-- The event that ends a stream after a failure, in the client's API.
local function stream_error_event(ai, status, message, typ)
    local body = common.error_body(ai.api, status, message, typ)
    if ai.api == "anthropic" then
        return "event: error\ndata: " .. json_encode(body) .. "\n\n"
    end
    return "data: " .. json_encode(body) .. "\n\n"
end

local SSE_HEADERS = { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache" }

-- OpenAI-wire provider -> OpenAI client: bytes forwarded as they come, cut at event boundaries ("\n\n"); plain
-- searches find the usage chunk (read, and cut out when the client did not ask for it), [DONE] and errors.
-- A stream framed with "\r\n" goes through the SSE parser instead (pass_events).
local function pass_raw(ai, bytes, out, st)
    local buf = st.rest ~= "" and (st.rest .. bytes) or bytes
    local cut = nil
    local from = 1
    while true do -- the last event boundary
        local j = find(buf, "\n\n", from, true)
        if not j then
            break
        end
        cut, from = j + 1, j + 2
    end
    if not cut then
        st.rest = buf
        return
    end
    local done = buf
    if cut < #buf then
        done, st.rest = sub(buf, 1, cut), sub(buf, cut + 1)
    else
        st.rest = ""
    end
    local u = find(done, '"usage":{', 1, true) or find(done, '"usage": {', 1, true)
    if u then
        st.usage = scan_usage(done, u) or st.usage
        if not ai.include_usage then
            -- the usage-only chunk: the event around the match, when its choices are empty
            local s0 = 1
            local f = 1
            while true do
                local j = find(done, "\n\n", f, true)
                if not j or j > u then
                    break
                end
                s0, f = j + 2, j + 2
            end
            local e0 = find(done, "\n\n", u, true) or #done
            local ev = sub(done, s0, e0 + 1)
            if find(ev, '"choices":[]', 1, true) or find(ev, '"choices": []', 1, true) then
                done = sub(done, 1, s0 - 1) .. sub(done, e0 + 2)
            end
        end
    end
    if not st.done and find(done, "data: [DONE]", 1, true) then
        st.done = true
    end
    if find(done, '{"error"', 1, true) or find(done, '{ "error"', 1, true) then
        st.error = true
    end
    if not st.usage then
        st.raw[#st.raw + 1] = done -- for a local count, should no usage ever come
    end
    if done ~= "" then
        out[#out + 1] = done
    end
end

local function pass_events(ai, parser, bytes, out, st)
    local evs = parser:feed(bytes)
    for i = 1, #evs do
        local data = evs[i].data
        if data == "[DONE]" then
            st.done = true
            out[#out + 1] = "data: [DONE]\n\n"
        elseif data ~= "" then
            local keep = true
            if find(data, '"usage"%s*:%s*{') then
                st.usage = scan_usage(data) or st.usage
                if not ai.include_usage and find(data, '"choices"%s*:%s*%[%s*%]') then
                    keep = false
                end
            elseif find(data, '^%s*{%s*"error"') then
                st.error = true
            end
            if keep then
                if not st.usage then
                    st.raw[#st.raw + 1] = "data: " .. data .. "\n\n"
                end
                out[#out + 1] = "data: " .. data .. "\n\n"
            end
        end
    end
end

-- Canonical chunks -> bytes in the client's API.
local function encode_chunks(ai, chunks, out, st)
    for i = 1, #chunks do
        local c = chunks[i]
        if c.error then
            local e = c.error
            st.error = true
            out[#out + 1] = stream_error_event(ai, e.status or 502, e.message, e.type)
            return false
        end
        if ai.api == "anthropic" then
            local s = st.encoder:chunk(c)
            if s and s ~= "" then
                out[#out + 1] = s
            end
        else
            local ch = c.choices
            local usage_only = c.usage ~= nil and c.usage ~= cjson.null and (type(ch) ~= "table" or #ch == 0)
            if not usage_only or ai.include_usage then
                out[#out + 1] = common.encode_chunk_sse(c)
            end
        end
        if not st.usage_seen then
            st.text[#st.text + 1] = completion_text_of(c)
        end
    end
    return true
end

local function stream(ctx, pipe, ai, p)
    -- the head goes out with the first event: a stream that fails before it can still be retried elsewhere
    -- (ai.defer_errors, set by ai-proxy-multi)
    local started = false
    local st = { raw = {}, text = {}, rest = "" }
    local passthrough = ai.api == "openai" and OPENAI_WIRE[ai.provider.kind]
    local parser, s
    if not passthrough then
        s = ai.driver.new_stream(ai.op, { include_usage = true })
        if ai.api == "anthropic" then
            st.encoder = anthropic_api().stream_encoder({ model = ai.requested_model })
        end
    end
    local rec = ai.usage
    local ok = true
    while ok do
        local bytes = proxy.read(ctx, p)
        if not bytes then
            break
        end
        local out = {}
        if passthrough then
            if not parser and find(bytes, "\r", 1, true) then
                parser = sse.parser()
                bytes, st.rest = st.rest .. bytes, ""
            end
            if parser then
                pass_events(ai, parser, bytes, out, st)
            else
                pass_raw(ai, bytes, out, st)
            end
        else
            ok = encode_chunks(ai, s:feed(bytes), out, st)
        end
        if #out > 0 and not started then
            if ai.defer_errors and (st.error or not ok) then
                break -- an error event before anything else: nothing sent yet
            end
            if not proxy.stream_start(ctx, pipe, 200, SSE_HEADERS) then
                st.gone = true
                break
            end
            started = true
            ai.first_byte = true
            if ai.idle_timeout then
                C.sl_proxy_set_read_timeout(p, ai.idle_timeout)
            end
        end
        if #out > 0 then
            if not rec.ttft then
                rec.ttft = C.sl_time() - ai.t0
            end
            if not proxy.stream_write(ctx, pipe, concat(out)) then
                st.gone = true -- ending the request closes the upstream connection
                break
            end
        end
    end
    if st.gone or ctx.req.client_gone ~= 0 or p.error == UPERR_CLIENT_GONE then
        finish_usage(ctx, ai, st.usage or (s and s.usage), 499)
        return
    end
    if not started and ai.defer_errors and (p.error ~= 0 or not ok or st.error) then
        local status = p.error == 3 and 504 or 502
        return false, { kind = p.error == 3 and "timeout" or "error", status = status,
                        message = "upstream " .. (p.error ~= 0 and proxy.error_name(p.error) or "error event") ..
                            " before the first event" }
    end
    if not started then
        if not proxy.stream_start(ctx, pipe, 200, SSE_HEADERS) then
            finish_usage(ctx, ai, st.usage or (s and s.usage), 499)
            return
        end
        started = true
    end
    local out = {}
    local status = 200
    if p.error ~= 0 or not ok or st.error then
        -- the upstream broke off (or sent an error event, already forwarded): end with one error event
        status = 502
        if p.error ~= 0 and ok and not st.error then
            out[#out + 1] = stream_error_event(ai, 502, "upstream " .. proxy.error_name(p.error) ..
                " during the stream")
        end
    elseif passthrough then
        if parser then
            pass_events(ai, parser, "\n\n", out, st)
        elseif st.rest ~= "" then
            pass_raw(ai, "\n\n", out, st)
        end
        if not st.done then
            out[#out + 1] = "data: [DONE]\n\n"
        end
    else
        ok = encode_chunks(ai, s:finish(), out, st)
        if ok then
            if ai.api == "anthropic" then
                out[#out + 1] = st.encoder:finish() or ""
            else
                out[#out + 1] = common.done_sse()
            end
        else
            status = 502
        end
    end
    if #out > 0 then
        proxy.stream_write(ctx, pipe, concat(out))
    end
    proxy.stream_finish(ctx, pipe)
    local u = st.usage or (s and s.usage)
    local text
    if not u then
        if passthrough then
            local p2 = sse.parser()
            for _, raw in ipairs(st.raw) do
                for _, ev in ipairs(p2:feed(raw)) do
                    if ev.data ~= "[DONE]" then
                        st.text[#st.text + 1] = completion_text_of(decode(ev.data))
                    end
                end
            end
        end
        text = concat(st.text)
    end
    finish_usage(ctx, ai, u, status, text)
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
              tls = prov.tls }
        cache[name] = o
    end
    return o
end

--- The proxy stage of an AI call prepared by prepare(): sends it and answers the client. `up` is unused.
--- With ai.defer_errors set (ai-proxy-multi), a failure before anything reached the client is not answered:
--- run returns false, {kind = "error" | "timeout" | "status", status, client_status?, message, type?, code?,
--- retry_after?} so the caller can try another provider (ai.call_opts, when set, replaces the call options).
function _M.run(ctx, _, pipe)
    local ai = ctx.ai
    local canon = ai.request
    canon.model = ai.model
    local req, err = ai.driver.build_request(ai.provider, ai.op, canon,
        { stream = ai.stream, include_usage = true })
    if not req then
        finish_usage(ctx, ai, nil, 400)
        return send_error(ctx, pipe, ai, 400, tostring(err))
    end
    ai.upstream_request = req
    local p, status, oerr
    if req.local_response then -- the mock provider answers in Lua
        p, status, oerr = proxy.local_open(ctx, req.local_response)
    else
        p, status, oerr = proxy.open(ctx, req, ai.call_opts or call_opts(ai))
    end
    if not p and status and ai.defer_errors then
        return false, { kind = status == 504 and "timeout" or "error", status = status, message = oerr }
    end
    if not p then
        finish_usage(ctx, ai, nil, status or 499)
        if status then
            send_error(ctx, pipe, ai, status, oerr)
        end
        return
    end
    if p.status >= 400 then
        local headers = proxy.headers(p)
        local body = proxy.read_all(ctx, p, MAX_RESPONSE) or ""
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
        return send_error(ctx, pipe, ai, st, e.message, e.type, e.code, e.retry_after)
    end
    if ai.stream then
        return stream(ctx, pipe, ai, p)
    end
    return non_stream(ctx, pipe, ai, p)
end

--- What a plugin puts in ctx.upstream_override so the proxy stage runs the AI call.
_M.upstream = { run = _M.run }

return _M
