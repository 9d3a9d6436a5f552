-- sluice.ai.drivers.openai: OpenAI (api.openai.com) Chat Completions, Completions, Embeddings, Models.
--
-- The canonical format IS the OpenAI format, so this driver mostly sets the URL and auth, forces
-- `stream_options.include_usage` on streams, strips the few canonical extensions OpenAI would reject, and
-- parses SSE chunks into tables. `openai.family(spec)` builds the OpenAI-compatible drivers (azure-openai,
-- deepseek, openai-compatible, mock) from hooks, so the wire handling lives in one place.
local common = require("sluice.ai.common")
local sse = require("sluice.ai.sse")
local stream_base = require("sluice.ai.common.stream_base")

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local json_encode, json_decode, nn, null = common.json_encode, common.json_decode, common.nn, common.null

local OP_PATH = {
    chat = "/chat/completions",
    completions = "/completions",
    embeddings = "/embeddings",
    models = "/models",
}

-- Canonical-only request fields (from Anthropic clients) that OpenAI rejects as unknown parameters.
local STRIP_TOP = { thinking = true, top_k = true }

-- A copy of list whose tables carrying `field` are copied without it, or nil when none carries it (the client's
-- tables are never changed).
local function without_field(list, field)
    local out
    for i, v in ipairs(list) do
        if type(v) == "table" and v[field] ~= nil then
            out = out or common.shallow_copy(list)
            local nv = common.shallow_copy(v)
            nv[field] = nil
            out[i] = nv
        end
    end
    return out
end

-- Removes canonical extensions OpenAI would reject: `thinking`/`top_k` at the top, `cache_control` on content
-- parts and tools, `reasoning_content` on messages. Copies only what it changes.
local function sanitize(body, strip_top)
    for k in pairs(strip_top) do body[k] = nil end
    local msgs = body.messages
    if type(msgs) == "table" then
        local new
        for i, m in ipairs(msgs) do
            if type(m) == "table" then
                local nm
                if m.reasoning_content ~= nil or m.reasoning_signature ~= nil then
                    nm = common.shallow_copy(m)
                    nm.reasoning_content = nil
                    nm.reasoning_signature = nil
                end
                if type(m.content) == "table" then
                    local parts = without_field(m.content, "cache_control")
                    if parts then
                        nm = nm or common.shallow_copy(m)
                        nm.content = parts
                    end
                end
                if nm then
                    new = new or common.shallow_copy(msgs)
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
-- family factory

local _M = {}

--- Builds an OpenAI-wire driver. spec:
---   kind, default_endpoint, default_base ("/v1"), paths (op -> suffix, default OP_PATH),
---   auth(provider, headers), url(provider, op, body, opts, ep) -> path (optional full override),
---   transform(provider, op, body, opts) -> body | nil, err (after the common handling),
---   strip_top (fields removed), stream_usage(provider) -> bool (send stream_options),
---   filter_chunk(stream, chunk) -> chunk | nil, endpoint_required
function _M.family(spec)
    local d = { kind = spec.kind }
    local paths = spec.paths or OP_PATH
    local strip_top = spec.strip_top or STRIP_TOP

    function d.build_request(provider, op, body, opts)
        opts = opts or {}
        op = op or "chat"
        provider = provider or {}
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
            local base = ep.base ~= "" and ep.base or (spec.default_base or "/v1")
            path = base .. suffix
        end

        local headers = {
            ["Host"] = common.host_header(ep),
            ["Content-Type"] = "application/json",
            ["Accept"] = opts.stream and "text/event-stream" or "application/json",
        }
        spec.auth(provider, headers)
        common.extra_headers(provider, headers)

        if op == "models" then
            return { method = "GET", scheme = ep.scheme, host = ep.host, port = ep.port, path = path,
                headers = headers, body = nil, stream = false }
        end
        if type(body) ~= "table" then return nil, spec.kind .. ": request body must be a table" end

        local b = common.shallow_copy(body)
        local stream = opts.stream
        if stream == nil then stream = b.stream == true end
        if op ~= "embeddings" then
            if stream then
                b.stream = true
                local want = spec.stream_usage == nil or spec.stream_usage(provider)
                if want and (opts.include_usage ~= false) then
                    local so = type(b.stream_options) == "table" and common.shallow_copy(b.stream_options) or {}
                    so.include_usage = true
                    b.stream_options = so
                end
            else
                b.stream = nil
                b.stream_options = nil
            end
        end
        if op == "chat" then sanitize(b, strip_top) end
        if spec.transform then
            b, err = spec.transform(provider, op, b, opts)
            if not b then return nil, err end
        end
        local encoded
        encoded, err = json_encode(b)
        if not encoded then return nil, spec.kind .. ": cannot encode body: " .. tostring(err) end
        return {
            method = "POST", scheme = ep.scheme, host = ep.host, port = ep.port, path = path,
            headers = headers, body = encoded, stream = stream and op ~= "embeddings" or false,
        }
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

local driver = _M.family({
    kind = "openai",
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

return driver
