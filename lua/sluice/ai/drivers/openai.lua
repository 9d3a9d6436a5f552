-- sluice.ai.drivers.openai: OpenAI (api.openai.com) Chat Completions, Completions, Embeddings, Models.
--
-- The canonical format IS the OpenAI format, so this driver mostly sets the URL and auth, forces
-- `stream_options.include_usage` on streams, removes the canonical extensions OpenAI would reject, and
-- parses SSE chunks into tables. `openai.family(spec)` builds the OpenAI-compatible drivers (azure-openai,
-- deepseek, openai-compatible, mock) from hooks, so the wire handling lives in one place.
--
-- Canonical extensions (set by sluice.ai.anthropic_api for Anthropic-API clients, or by other drivers'
-- answers) that no OpenAI-wire provider takes: `top_k`, `thinking` at the top; `cache_control` on content parts
-- and tools; `reasoning_content` / `reasoning_signature` on assistant messages; `is_error` on tool messages
-- (folded into the content: "Error: <text>"); Gemini thought signatures in tool call ids and
-- `extra_content` on tool calls.
local common = require("sluice.ai.common")
local json = require("sluice.ai.common.json")
local content_mod = require("sluice.ai.common.content")
local params = require("sluice.ai.common.params")
local sse = require("sluice.ai.sse")
local stream_base = require("sluice.ai.common.stream_base")

local type, pairs, ipairs, tostring, tonumber, next, setmetatable = type, pairs, ipairs, tostring, tonumber, next,
    setmetatable
local json_encode, json_decode, nn = json.json_encode, json.json_decode, json.nn
local shallow_copy, plain_object = json.shallow_copy, json.plain_object
local find, sub, byte, concat = string.find, string.sub, string.byte, table.concat
local nkeys = require("table.nkeys")
local tclone = require("table.clone")

local OP_PATH = {
    chat = "/chat/completions",
    completions = "/completions",
    embeddings = "/embeddings",
    models = "/models",
}

-- Request parameters of the OpenAI Chat Completions API (platform.openai.com/docs/api-reference/chat/create).
local OPENAI_PARAMS = {
    "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs", "max_completion_tokens",
    "max_tokens", "metadata", "modalities", "n", "parallel_tool_calls", "prediction", "presence_penalty",
    "prompt_cache_key", "prompt_cache_retention", "reasoning_effort", "response_format", "safety_identifier", "seed",
    "service_tier", "stop", "store", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user",
    "verbosity", "web_search_options",
}

-- Canonical-only request fields (from Anthropic clients) that OpenAI rejects as unknown parameters.
local NOT_OPENAI = { "thinking", "top_k" }

--- A parameter set taking everything but `names` (OpenAI adds parameters often: the openai kind forwards
--- what it does not know).
local all_but = params.all_but
local ALL_BUT_EXTENSIONS = all_but(NOT_OPENAI)

-- A copy of list whose tables carrying `field` are copied without it, or nil when none carries it (the client's
-- tables are never changed).
local function without_field(list, field)
    local out
    for i, v in ipairs(list) do
        if type(v) == "table" and v[field] ~= nil then
            out = out or shallow_copy(list)
            local nv = shallow_copy(v)
            nv[field] = nil
            out[i] = nv
        end
    end
    return out
end

-- One message without the canonical extensions (a copy when something changes, else m itself).
local function clean_message(m)
    local nm
    if m.reasoning_content ~= nil or m.reasoning_signature ~= nil then
        nm = shallow_copy(m)
        nm.reasoning_content = nil
        nm.reasoning_signature = nil
    end
    if type(m.content) == "table" then
        local parts = without_field(m.content, "cache_control")
        if parts then
            nm = nm or shallow_copy(m)
            nm.content = parts
        end
    end
    if type(m.tool_calls) == "table" then -- Gemini's signatures stay with Gemini
        local calls
        for i, tc in ipairs(m.tool_calls) do
            if type(tc) == "table" and (tc.extra_content ~= nil or content_mod.call_id(tc.id) ~= tc.id) then
                calls = calls or shallow_copy(m.tool_calls)
                local c = shallow_copy(tc)
                c.id, c.extra_content = content_mod.call_id(tc.id), nil
                calls[i] = c
            end
        end
        if calls then
            nm = nm or shallow_copy(m)
            nm.tool_calls = calls
        end
    end
    local tcid = m.tool_call_id
    if tcid ~= nil and content_mod.call_id(tcid) ~= tcid then
        nm = nm or shallow_copy(m)
        nm.tool_call_id = content_mod.call_id(tcid)
    end
    if m.is_error ~= nil then -- an OpenAI tool message is {role, content, tool_call_id}
        nm = nm or shallow_copy(m)
        nm.is_error = nil
        if m.is_error == true then
            nm.content = content_mod.tool_error_text(content_mod.content_text(nn(m.content)))
        end
    end
    return nm or m
end

-- Removes canonical extensions OpenAI-wire providers reject (see the header) from body (a shallow copy: the
-- client's tables are never changed); `message(m, i)`, when given, then maps each message (-> m | nil, err).
local function sanitize(body, message)
    local msgs = body.messages
    if type(msgs) == "table" then
        local new
        for i, m in ipairs(msgs) do
            if type(m) == "table" then
                local nm = clean_message(m)
                if message then
                    local err
                    nm, err = message(nm, i)
                    if not nm then return nil, err end
                end
                if nm ~= m then
                    new = new or shallow_copy(msgs)
                    new[i] = nm
                end
            end
        end
        if new then body.messages = new end
    end
    if type(body.tools) == "table" then
        local new = without_field(body.tools, "cache_control")
        if new then body.tools = new end
    end
    return body
end

--- OpenAI-shape error body -> {status, type, message, code, retry_after, param}.
local function parse_error(status, headers, body)
    local t = type(body) == "string" and json_decode(body) or (type(body) == "table" and body) or nil
    if type(t) == "table" and t[1] ~= nil and type(t[1]) == "table" then t = t[1] end -- some servers wrap in []
    local e = type(t) == "table" and nn(t.error) or nil
    if type(e) == "string" then -- vLLM / Ollama: {"error": "message"} or {"object":"error","message":...}
        e = { message = e }
    elseif e == nil and type(t) == "table" and t.object == "error" then
        e = t
    end
    if type(e) ~= "table" then
        return common.generic_error(status, headers, body, "upstream error")
    end
    local code = nn(e.code)
    return {
        status = tonumber(status) or tonumber(nn(e.status)) or 502,
        type = nn(e.type) or common.openai_error_type(status),
        message = tostring(nn(e.message) or ("HTTP " .. tostring(status))),
        code = code ~= nil and tostring(code) or nil,
        param = nn(e.param),
        retry_after = common.retry_after(headers),
    }
end

-- ---------------------------------------------------------------------------------------------------------
-- stream translator: OpenAI SSE -> chunk tables (the identity translation, plus usage and error capture)

local function handle_event(self, ev, out)
    local data = ev.data
    if data == "[DONE]" then
        self.done = true
        return
    end
    if data == "" then return end
    local t = json_decode(data)
    if type(t) ~= "table" then
        out[#out + 1] = stream_base.error_item("invalid JSON in upstream stream")
        self.failed = true
        return
    end
    if ev.event == "error" or nn(t.error) ~= nil then
        local e = parse_error(self.error_status or 500, nil, t)
        out[#out + 1] = { error = e }
        self.failed = true
        return
    end
    local u = nn(t.usage)
    if u ~= nil then
        self.usage = common.normalize_usage(u)
    end
    if self.filter then
        t = self.filter(self, t)
        if not t then return end
    end
    out[#out + 1] = t
end

local Stream = stream_base.class(handle_event)

-- ---------------------------------------------------------------------------------------------------------
-- the client's bytes instead of a re-encoded body

-- True when tables a and b have the same keys with the same (identical) values: every key of a is in b with its
-- value, and b has no more keys than a (nkeys: one C call instead of a second walk).
local function same_fields(a, b)
    for k, v in pairs(a) do
        if b[k] ~= v then return false end
    end
    return nkeys(a) == nkeys(b)
end

local INCLUDE_USAGE = ',"stream_options":{"include_usage":true}'
local STREAM_OPTS, EMPTY_OPTS = { stream = true }, {}

-- The body to send when b (built from the client's table `body`) says what the client's bytes `raw` say: raw
-- itself, or raw with the stream_options the gateway adds; nil when b differs (then it is encoded). Decoding and
-- re-encoding would give the same value in other bytes, and cost most of a request's time in Lua; the bytes
-- must be plain JSON (json.plain_object: no repeated key, whose reading would depend on the upstream's parser).
local function raw_body(raw, body, b)
    local bso, so = body.stream_options, b.stream_options
    local add = false
    if so ~= bso then
        if type(so) ~= "table" or type(bso) ~= "table" or not same_fields(so, bso) then
            -- the one change spliced in: stream_options = {include_usage = true} where the client sent none
            if bso ~= nil or type(so) ~= "table" or so.include_usage ~= true or next(so, next(so)) ~= nil then
                return nil
            end
            add = true
        end
        b.stream_options = bso -- compared as the client's below, put back after
    end
    local same = same_fields(b, body)
    b.stream_options = so
    if not same or not plain_object(raw) then
        return nil
    end
    if not add then
        return raw
    end
    local last = #raw
    while byte(raw, last) ~= 125 do last = last - 1 end -- '}' (plain_object: it ends the object)
    local first = find(raw, "[^ \t\r\n]", find(raw, "{", 1, true) + 1)
    return sub(raw, 1, last - 1) .. (first == last and sub(INCLUDE_USAGE, 2) or INCLUDE_USAGE) .. sub(raw, last)
end

-- ---------------------------------------------------------------------------------------------------------
-- family factory

local _M = {}

--- Builds an OpenAI-wire driver. spec:
---   kind, default_endpoint, default_base ("/v1"), paths (op -> suffix, default OP_PATH),
---   auth(provider, headers) (a function of provider.api_key and provider.options alone: the headers are made
---     once per provider), url(provider, op, body, opts, ep) -> path (optional full override),
---   accepts(provider) -> set of the chat parameters the provider takes (default: every OpenAI parameter
---     but the canonical extensions, NOT_OPENAI); the others are dropped or refused (options.drop_params),
---   message(provider, m, i) -> m | nil, err (maps one chat message, after the canonical extensions are gone),
---   transform(provider, op, body, opts) -> body | nil, err (after the common handling),
---   stream_options (set of the stream_options keys the provider takes; default all),
---   stream_usage(provider) -> bool (send stream_options), filter_chunk(stream, chunk) -> chunk | nil,
---   stream_passthrough (false: OpenAI clients get the stream through new_stream, never as raw bytes),
---   max_stop (the most stop sequences the provider takes; more is a 400),
---   endpoint_required
function _M.family(spec)
    local d = { kind = spec.kind, stream_passthrough = spec.stream_passthrough }
    local paths = spec.paths or OP_PATH
    local accepts = spec.accepts or function() return ALL_BUT_EXTENSIONS end
    local paths_of = setmetatable({}, { __mode = "k" }) -- endpoint table -> op -> path
    local headers_of = setmetatable({}, { __mode = "k" }) -- provider table -> {ep, key, options, [accept] = headers}
    -- the closure over provider is made here, not in build_request: a closure there would make every call of
    -- build_request close an upvalue on return (bytecode UCLO), which LuaJIT does not compile
    local function message_mapper(provider)
        return function(m, i) return spec.message(provider, m, i) end
    end

    -- Endpoint, path and a copy of the headers of a call (nil, err when the provider's endpoint is unusable).
    local function target(provider, op, opts, body)
        local endpoint = provider.endpoint or spec.default_endpoint
        if spec.endpoint_required and not provider.endpoint then
            return nil, spec.kind .. ": provider.endpoint is required"
        end
        local ep, err = common.parse_endpoint(endpoint)
        if not ep then return nil, spec.kind .. ": " .. err end
        local suffix = paths[op]
        if not suffix then return nil, spec.kind .. ": unsupported operation " .. tostring(op) end
        local path
        if spec.url then
            path, err = spec.url(provider, op, body, opts, ep)
            if not path then return nil, err end
        else
            local by_op = paths_of[ep] -- the parsed endpoint is shared: its paths are made once
            if not by_op then
                by_op = {}
                paths_of[ep] = by_op
            end
            path = by_op[op]
            if not path then
                local base = ep.base ~= "" and ep.base or (spec.default_base or "/v1")
                path = base .. suffix
                by_op[op] = path
            end
        end

        -- The headers are made once per provider table and Accept value, and copied for each call (the caller
        -- may add to its copy: a tracing plugin's traceparent). They depend on the provider's api_key and options
        -- alone (auth, options.headers): a provider whose key or options table changed gets them made again.
        local accept = opts.stream and "text/event-stream" or "application/json"
        local hc = headers_of[provider]
        if not hc or hc.ep ~= ep or hc.key ~= provider.api_key or hc.options ~= provider.options then
            hc = { ep = ep, key = provider.api_key, options = provider.options }
            headers_of[provider] = hc
        end
        local made = hc[accept]
        if not made then
            made = {
                ["Host"] = common.host_header(ep),
                ["Content-Type"] = "application/json",
                ["Accept"] = accept,
            }
            spec.auth(provider, made)
            common.extra_headers(provider, made)
            hc[accept] = made
        end
        return ep, path, made
    end

    function d.build_request(provider, op, body, opts)
        opts = opts or {}
        op = op or "chat"
        provider = provider or {}
        local ep, path, made = target(provider, op, opts, body)
        if not ep then return nil, path end
        local headers, err = tclone(made), nil

        if op == "models" then
            return { method = "GET", scheme = ep.scheme, host = ep.host, port = ep.port, path = path,
                headers = headers, body = nil, stream = false }
        end
        if type(body) ~= "table" then return nil, spec.kind .. ": request body must be a table" end

        local b = shallow_copy(body)
        local stream = opts.stream
        if stream == nil then stream = b.stream == true end
        if op ~= "embeddings" then
            if stream then
                b.stream = true
                local so = type(b.stream_options) == "table" and shallow_copy(b.stream_options) or {}
                if spec.stream_options then
                    for k in pairs(so) do if not spec.stream_options[k] then so[k] = nil end end
                end
                local want = spec.stream_usage == nil or spec.stream_usage(provider)
                if want and (opts.include_usage ~= false) then so.include_usage = true end
                b.stream_options = next(so) ~= nil and so or nil
            else
                b.stream = nil
                b.stream_options = nil
            end
        end
        if op == "chat" then
            b, err = params.apply(spec.kind, provider, b, accepts(provider))
            if not b then return nil, err end
            local stop = nn(b.stop)
            if spec.max_stop and type(stop) == "table" and #stop > spec.max_stop then
                return nil, spec.kind .. ": stop: at most " .. spec.max_stop .. " stop sequences (got " .. #stop .. ")"
            end
            b, err = sanitize(b, spec.message and message_mapper(provider))
            if not b then return nil, err end
        end
        if spec.transform then
            b, err = spec.transform(provider, op, b, opts)
            if not b then return nil, err end
        end
        local encoded = opts.raw and raw_body(opts.raw, body, b)
        if not encoded then
            encoded, err = json_encode(b)
        end
        if not encoded then return nil, spec.kind .. ": cannot encode body: " .. tostring(err) end
        return {
            method = "POST", scheme = ep.scheme, host = ep.host, port = ep.port, path = path,
            headers = headers, body = encoded, stream = stream and op ~= "embeddings" or false,
        }
    end

    -- The lean path (sluice.ai.proxy): an OpenAI chat request checked by validate.chat_scan is sent as the
    -- client's bytes without being decoded, when build_request would send those bytes anyway. That holds for a
    -- driver without hooks that change the body, whose parameter set is an all_but one: the scan then refuses
    -- the excluded names (and the canonical extensions sanitize removes).
    local lean_ok = not (spec.url or spec.message or spec.transform or spec.stream_options)
    local deny_of = setmetatable({}, { __mode = "k" }) -- accepts set -> deny string | false
    local lean_req = setmetatable({}, { __mode = "k" }) -- headers table (one per provider and Accept) -> req

    --- The deny string for validate.chat_scan with this provider, and the most stop sequences it takes (nil:
    --- any); nil when the lean path does not apply.
    function d.lean_deny(provider)
        if not lean_ok then return nil end
        local acc = accepts(provider)
        local deny = deny_of[acc]
        if deny == nil then
            local names = params.excluded(acc)
            deny = names and concat(names, " ") or false
            deny_of[acc] = deny
        end
        return deny or nil, spec.max_stop
    end

    --- The request build_request makes from a scanned chat body raw (the call's stream; include_usage: the
    --- client's stream_options is {"include_usage": true}; end_off: offset of raw's closing brace): raw itself,
    --- or raw with the stream_options the gateway adds.
    --- Returns req, body: req is made once per provider headers table and path, shared by every call and never
    --- changed (its headers neither: fixed_headers, see sluice.ai.upstream.open; a caller that adds one copies
    --- it first); body goes beside it. nil, err when the provider's endpoint is unusable.
    function d.lean_request(provider, raw, stream, include_usage, end_off)
        local ep, path, made = target(provider, "chat", stream and STREAM_OPTS or EMPTY_OPTS)
        if not ep then return nil, path end
        local req = lean_req[made]
        if not req or req.path ~= path or req.host ~= ep.host or req.port ~= ep.port or req.scheme ~= ep.scheme then
            req = { method = "POST", scheme = ep.scheme, host = ep.host, port = ep.port, path = path,
                    headers = made, stream = stream == true, fixed_headers = true }
            lean_req[made] = req
        end
        local body = raw
        if stream and not include_usage and (spec.stream_usage == nil or spec.stream_usage(provider)) then
            body = sub(raw, 1, end_off) .. INCLUDE_USAGE .. sub(raw, end_off + 1)
        end
        return req, body
    end

    function d.parse_response(status, headers, body, op)
        status = tonumber(status) or 0
        if status < 200 or status > 299 then
            return nil, d.parse_error(status, headers, body)
        end
        local t, err = json_decode(body)
        if type(t) ~= "table" then
            return nil, common.bad_upstream(spec.kind .. ": invalid JSON response: " .. tostring(err))
        end
        if spec.fix_response then t = spec.fix_response(t, op) end
        return t
    end

    d.parse_error = spec.parse_error or parse_error

    function d.new_stream(op, opts)
        return stream_base.new(Stream, sse.parser(), { filter = spec.filter_chunk, op = op, opts = opts or {} })
    end

    function d.usage(resp)
        return type(resp) == "table" and common.normalize_usage(resp.usage) or nil
    end

    return d
end

_M.parse_error = parse_error
_M.sanitize = sanitize
_M.OP_PATH = OP_PATH
_M.OPENAI_PARAMS = OPENAI_PARAMS

local driver = _M.family({
    kind = "openai",
    max_stop = 4,
    default_endpoint = "https://api.openai.com",
    default_base = "/v1",
    auth = function(provider, h)
        if provider.api_key and provider.api_key ~= "" then
            h["Authorization"] = "Bearer " .. provider.api_key
        end
        local o = provider.options or {}
        if o.organization then h["OpenAI-Organization"] = o.organization end
        if o.project then h["OpenAI-Project"] = o.project end
    end,
})
driver.family = _M.family
driver.parse_error = parse_error
driver.sanitize = sanitize
driver.OP_PATH = OP_PATH
driver.OPENAI_PARAMS = OPENAI_PARAMS
driver.NOT_OPENAI = NOT_OPENAI
driver.all_but = all_but

return driver
