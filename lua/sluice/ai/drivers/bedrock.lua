-- sluice.ai.drivers.bedrock: Amazon Bedrock Converse API behind the canonical OpenAI format.
--   chat:      POST https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse
--   streaming: POST .../model/{modelId}/converse-stream   (AWS event-stream binary framing, decoded here)
--   auth:      AWS Signature V4 (service "bedrock", access_key/secret_key[/session_token]), or a Bedrock API key
--              as `Authorization: Bearer` when only api_key is configured.
-- Request: system -> system[{text}], messages -> content blocks (text, image bytes from data URLs, toolUse,
-- toolResult), max_tokens/temperature/top_p/stop -> inferenceConfig, tools -> toolConfig (toolSpec with
-- inputSchema.json), tool_choice -> toolChoice (auto/any/tool; "none" omits it), response_format -> system
-- instruction, options.additional_model_request_fields passed as additionalModelRequestFields (e.g. top_k).
-- Response/stream: output.message content -> content / tool_calls / reasoning_content, stopReason mapped,
-- usage (prompt = inputTokens + cacheRead + cacheWrite).
-- No embeddings (Titan/Cohere embeddings use InvokeModel with model-specific bodies).
local common = require("sluice.ai.common")
local crypto = require("sluice.crypto")

local type, pairs, ipairs, tostring, tonumber, setmetatable = type, pairs, ipairs, tostring, tonumber, setmetatable
local concat, sort = table.concat, table.sort
local byte, sub, char, lower, fmt = string.byte, string.sub, string.char, string.lower, string.format
local json_encode, json_decode, nn, null = common.json_encode, common.json_decode, common.nn, common.null

local _M = { kind = "bedrock" }

-- ---------------------------------------------------------------------------------------------------------
-- SigV4

local function trim(s)
    return (tostring(s):gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " "))
end

local function uri_decode(s)
    return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

--- Canonical URI for non-S3 services: every segment of the (already encoded) path is encoded again.
function _M.canonical_uri(path)
    if path == "" then return "/" end
    local out = {}
    for seg in (path .. "/"):gmatch("(.-)/") do out[#out + 1] = common.urlencode(seg) end
    local s = concat(out, "/")
    if sub(path, -1) == "/" and sub(s, -1) ~= "/" then s = s .. "/" end
    return s
end

function _M.canonical_query(q)
    if not q or q == "" then return "" end
    local params = {}
    for pair in q:gmatch("[^&]+") do
        local k, v = pair:match("^([^=]*)=?(.*)$")
        params[#params + 1] = { common.urlencode(uri_decode(k)), common.urlencode(uri_decode(v)) }
    end
    sort(params, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    for i, p in ipairs(params) do params[i] = p[1] .. "=" .. p[2] end
    return concat(params, "&")
end

--- Signs req in place (adds x-amz-date, x-amz-security-token, Authorization) and returns the pieces.
--- req = {method, path (encoded, may hold ?query), headers (must include Host), body}
--- creds = {access_key, secret_key, session_token?}; amz_date = "YYYYMMDDTHHMMSSZ"
--- sign_headers: list of lower-case header names to sign (default: host, content-type, x-amz-*)
function _M.sigv4(req, creds, region, service, amz_date)
    local h = req.headers
    h["X-Amz-Date"] = amz_date
    if creds.session_token and creds.session_token ~= "" then h["X-Amz-Security-Token"] = creds.session_token end
    local path, query = req.path:match("^([^?]*)%??(.*)$")
    local names, values = {}, {}
    for k, v in pairs(h) do
        local lk = lower(k)
        if lk == "host" or lk == "content-type" or sub(lk, 1, 6) == "x-amz-" then
            if not values[lk] then names[#names + 1] = lk end
            values[lk] = trim(v)
        end
    end
    sort(names)
    local ch = {}
    for i, n in ipairs(names) do ch[i] = n .. ":" .. values[n] .. "\n" end
    local signed = concat(names, ";")
    local payload_hash = crypto.sha256_hex(req.body or "")
    local canonical = concat({ req.method, _M.canonical_uri(path), _M.canonical_query(query), concat(ch), signed,
        payload_hash }, "\n")
    local date = sub(amz_date, 1, 8)
    local scope = date .. "/" .. region .. "/" .. service .. "/aws4_request"
    local sts = "AWS4-HMAC-SHA256\n" .. amz_date .. "\n" .. scope .. "\n" .. crypto.sha256_hex(canonical)
    local k = crypto.hmac_sha256("AWS4" .. creds.secret_key, date)
    k = crypto.hmac_sha256(k, region)
    k = crypto.hmac_sha256(k, service)
    k = crypto.hmac_sha256(k, "aws4_request")
    local signature = crypto.hmac_sha256_hex(k, sts)
    h["Authorization"] = "AWS4-HMAC-SHA256 Credential=" .. creds.access_key .. "/" .. scope
        .. ", SignedHeaders=" .. signed .. ", Signature=" .. signature
    return { canonical_request = canonical, string_to_sign = sts, signing_key = k, signature = signature }
end

-- ---------------------------------------------------------------------------------------------------------
-- AWS event-stream framing:
--   prelude: total_length u32 BE | headers_length u32 BE | prelude_crc u32 (CRC32 of the first 8 bytes)
--   headers: (name_len u8, name, type u8, value)*  ; payload ; message_crc u32 (CRC32 of all preceding bytes)

local function u32(s, i)
    local a, b, c, d = byte(s, i, i + 3)
    return ((a * 256 + b) * 256 + c) * 256 + d
end
local function u16(s, i)
    local a, b = byte(s, i, i + 1)
    return a * 256 + b
end
local function be32(n)
    return char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

local function parse_headers(s, i, last)
    local headers = {}
    while i <= last do
        local nlen = byte(s, i)
        local name = sub(s, i + 1, i + nlen)
        i = i + 1 + nlen
        local t = byte(s, i)
        i = i + 1
        local v
        if t == 0 then v = true
        elseif t == 1 then v = false
        elseif t == 2 then v = byte(s, i); i = i + 1
        elseif t == 3 then v = u16(s, i); i = i + 2
        elseif t == 4 then v = u32(s, i); i = i + 4
        elseif t == 5 or t == 8 then v = u32(s, i) * 4294967296 + u32(s, i + 4); i = i + 8
        elseif t == 6 or t == 7 then
            local len = u16(s, i)
            v = sub(s, i + 2, i + 1 + len)
            i = i + 2 + len
        elseif t == 9 then v = sub(s, i, i + 15); i = i + 16
        else
            return nil, "unknown header value type " .. tostring(t)
        end
        headers[name] = v
    end
    return headers
end

local Decoder = {}
Decoder.__index = Decoder

--- Feeds bytes; returns a list of messages {headers = {name = value}, payload = string} | nil, err.
function Decoder:feed(bytes)
    local out = {}
    local buf = self.buf .. (bytes or "")
    local pos = 1
    while #buf - pos + 1 >= 12 do
        local total = u32(buf, pos)
        local hlen = u32(buf, pos + 4)
        if crypto.crc32(sub(buf, pos, pos + 7)) ~= u32(buf, pos + 8) then
            self.buf = ""
            return nil, "event-stream: prelude CRC mismatch"
        end
        if total < 16 or hlen > total - 16 then
            self.buf = ""
            return nil, "event-stream: bad lengths"
        end
        if #buf - pos + 1 < total then break end
        local msg_end = pos + total - 1
        if crypto.crc32(sub(buf, pos, msg_end - 4)) ~= u32(buf, msg_end - 3) then
            self.buf = ""
            return nil, "event-stream: message CRC mismatch"
        end
        local headers, err = parse_headers(buf, pos + 12, pos + 11 + hlen)
        if not headers then self.buf = ""; return nil, "event-stream: " .. err end
        out[#out + 1] = { headers = headers, payload = sub(buf, pos + 12 + hlen, msg_end - 4) }
        pos = msg_end + 1
    end
    self.buf = sub(buf, pos)
    return out
end

_M.eventstream = {}

function _M.eventstream.decoder()
    return setmetatable({ buf = "" }, Decoder)
end

--- Encodes one message with string headers: headers = {{name, value}, ...} (order kept).
function _M.eventstream.encode(headers, payload)
    local hs = {}
    for _, h in ipairs(headers) do
        hs[#hs + 1] = char(#h[1]) .. h[1] .. char(7) .. char(math.floor(#h[2] / 256), #h[2] % 256) .. h[2]
    end
    local hbytes = concat(hs)
    local total = 12 + #hbytes + #payload + 4
    local prelude = be32(total) .. be32(#hbytes)
    local msg = prelude .. be32(crypto.crc32(prelude)) .. hbytes .. payload
    return msg .. be32(crypto.crc32(msg))
end

-- ---------------------------------------------------------------------------------------------------------
-- request: OpenAI -> Converse

local IMAGE_FORMATS = { ["image/png"] = "png", ["image/jpeg"] = "jpeg", ["image/jpg"] = "jpeg",
    ["image/gif"] = "gif", ["image/webp"] = "webp" }

local function blocks_of(content)
    local blocks = {}
    if type(content) == "string" then
        if content ~= "" then blocks[1] = { text = content } end
        return blocks
    end
    if type(content) ~= "table" then return blocks end
    for _, p in ipairs(content) do
        if type(p) == "table" then
            if p.type == "text" and type(p.text) == "string" and p.text ~= "" then
                blocks[#blocks + 1] = { text = p.text }
            elseif p.type == "image_url" then
                local url = type(p.image_url) == "table" and p.image_url.url or p.image_url
                local mime, data = common.parse_data_url(url)
                if not mime or not IMAGE_FORMATS[mime] then
                    return nil, "bedrock: images must be png/jpeg/gif/webp data: URLs (Converse does not fetch URLs)"
                end
                blocks[#blocks + 1] = { image = { format = IMAGE_FORMATS[mime], source = { bytes = data } } }
            end
        end
    end
    return blocks
end

--- Canonical OpenAI chat request -> Converse request | nil, err.
function _M.to_converse_request(provider, body)
    local options = (provider and provider.options) or {}
    if type(body.messages) ~= "table" then return nil, "bedrock: messages must be an array" end
    local system, messages, last = {}, {}, nil
    local function push(role, blocks)
        if #blocks == 0 then return end
        if last and last.role == role then
            for _, b in ipairs(blocks) do last.content[#last.content + 1] = b end
        else
            last = { role = role, content = blocks }
            messages[#messages + 1] = last
        end
    end
    for _, m in ipairs(body.messages) do
        if type(m) ~= "table" then return nil, "bedrock: each message must be an object" end
        local blocks, err
        if m.role == "system" or m.role == "developer" then
            blocks, err = blocks_of(m.content)
            if not blocks then return nil, err end
            for _, b in ipairs(blocks) do if b.text then system[#system + 1] = b end end
        elseif m.role == "user" then
            blocks, err = blocks_of(m.content)
            if not blocks then return nil, err end
            push("user", blocks)
        elseif m.role == "assistant" then
            blocks, err = blocks_of(nn(m.content))
            if not blocks then return nil, err end
            for _, tc in ipairs(type(m.tool_calls) == "table" and m.tool_calls or {}) do
                local f = tc["function"] or {}
                local input = type(f.arguments) == "string" and f.arguments ~= "" and json_decode(f.arguments)
                if type(input) ~= "table" then input = {} end
                blocks[#blocks + 1] = { toolUse = { toolUseId = tc.id, name = f.name, input = input } }
            end
            push("assistant", blocks)
        elseif m.role == "tool" or m.role == "function" then
            local text = common.content_text(nn(m.content))
            local tr = { toolUseId = m.tool_call_id, content = { { text = text } } }
            if m.is_error then tr.status = "error" end
            push("user", { { toolResult = tr } })
        else
            return nil, "bedrock: unsupported message role " .. tostring(m.role)
        end
    end
    local out = { messages = messages }
    local rf = common.response_format_instruction(nn(body.response_format))
    if rf then system[#system + 1] = { text = rf } end
    if #system > 0 then out.system = system end
    local ic = {
        maxTokens = nn(body.max_tokens) or nn(body.max_completion_tokens) or tonumber(options.max_tokens),
        temperature = nn(body.temperature),
        topP = nn(body.top_p),
        stopSequences = common.stop_list(nn(body.stop)),
    }
    if next(ic) ~= nil then out.inferenceConfig = ic end
    if type(body.tools) == "table" and #body.tools > 0 then
        local tools = {}
        for _, t in ipairs(body.tools) do
            if type(t) == "table" and t.type == "function" and type(t["function"]) == "table" then
                local f = t["function"]
                local params = nn(f.parameters)
                if type(params) ~= "table" then params = { type = "object", properties = {} } end
                tools[#tools + 1] = { toolSpec = { name = f.name, description = nn(f.description),
                    inputSchema = { json = params } } }
            end
        end
        if #tools > 0 then
            out.toolConfig = { tools = tools }
            local tc = nn(body.tool_choice)
            if tc == "auto" then out.toolConfig.toolChoice = { auto = {} }
            elseif tc == "required" then out.toolConfig.toolChoice = { any = {} }
            elseif type(tc) == "table" and type(tc["function"]) == "table" then
                out.toolConfig.toolChoice = { tool = { name = tc["function"].name } }
            end
        end
    end
    local amrf = options.additional_model_request_fields
    if type(amrf) == "table" then out.additionalModelRequestFields = amrf end
    if type(options.guardrail_config) == "table" then out.guardrailConfig = options.guardrail_config end
    return out
end

local function amz_date(now)
    local t = type(now) == "function" and now() or tonumber(now) or os.time()
    return os.date("!%Y%m%dT%H%M%SZ", t)
end

function _M.build_request(provider, op, body, opts)
    provider, opts, op = provider or {}, opts or {}, op or "chat"
    if op ~= "chat" then return nil, "bedrock: unsupported operation " .. tostring(op) .. " (only chat)" end
    if type(body) ~= "table" or type(body.model) ~= "string" then
        return nil, "bedrock: request body with a model is required"
    end
    local region = provider.region or (provider.options and provider.options.region)
    if not provider.endpoint and not region then return nil, "bedrock: provider.region is required" end
    local ep, err = common.parse_endpoint(provider.endpoint or ("https://bedrock-runtime." .. region .. ".amazonaws.com"))
    if not ep then return nil, "bedrock: " .. err end
    region = region or ep.host:match("^bedrock%-runtime%.([%w-]+)%.") or "us-east-1"
    local stream = opts.stream
    if stream == nil then stream = body.stream == true end
    local c
    c, err = _M.to_converse_request(provider, body)
    if not c then return nil, err end
    local encoded
    encoded, err = json_encode(c)
    if not encoded then return nil, "bedrock: cannot encode body: " .. tostring(err) end
    local req = {
        method = "POST", scheme = ep.scheme, host = ep.host, port = ep.port,
        path = ep.base .. "/model/" .. common.urlencode(body.model) .. (stream and "/converse-stream" or "/converse"),
        headers = {
            ["Host"] = common.host_header(ep),
            ["Content-Type"] = "application/json",
            ["Accept"] = stream and "application/vnd.amazon.eventstream" or "application/json",
        },
        body = encoded,
        stream = stream and true or false,
    }
    common.extra_headers(provider, req.headers)
    if provider.access_key and provider.secret_key then
        _M.sigv4(req, { access_key = provider.access_key, secret_key = provider.secret_key,
            session_token = provider.session_token }, region, "bedrock", amz_date(opts.now))
    elseif provider.api_key and provider.api_key ~= "" then
        req.headers["Authorization"] = "Bearer " .. provider.api_key
    else
        return nil, "bedrock: access_key and secret_key (or api_key) are required"
    end
    return req
end

-- ---------------------------------------------------------------------------------------------------------
-- responses

function _M.openai_usage(u)
    if type(u) ~= "table" then return nil end
    local input = tonumber(nn(u.inputTokens)) or 0
    local read = tonumber(nn(u.cacheReadInputTokens)) or 0
    local write = tonumber(nn(u.cacheWriteInputTokens)) or 0
    local r = common.openai_usage(input + read + write, tonumber(nn(u.outputTokens)) or 0, read)
    if write > 0 then r.prompt_tokens_details.cache_creation_tokens = write end
    return r
end

function _M.parse_response(status, headers, body, op)
    status = tonumber(status) or 0
    if status < 200 or status > 299 then return nil, _M.parse_error(status, headers, body) end
    local r, err = json_decode(body)
    if type(r) ~= "table" then return nil, common.bad_upstream("bedrock: invalid JSON response: " .. tostring(err)) end
    local msg = type(r.output) == "table" and r.output.message or {}
    local text, reasoning, calls = {}, {}, {}
    for _, b in ipairs(type(msg.content) == "table" and msg.content or {}) do
        if type(b.text) == "string" then
            text[#text + 1] = b.text
        elseif type(b.toolUse) == "table" then
            calls[#calls + 1] = { id = b.toolUse.toolUseId, type = "function", ["function"] = {
                name = b.toolUse.name, arguments = json_encode(b.toolUse.input or {}) or "{}" } }
        elseif type(b.reasoningContent) == "table" and type(b.reasoningContent.reasoningText) == "table" then
            reasoning[#reasoning + 1] = b.reasoningContent.reasoningText.text
        end
    end
    local m = { role = "assistant", content = #text > 0 and concat(text) or null }
    if #calls > 0 then m.tool_calls = calls end
    if #reasoning > 0 then m.reasoning_content = concat(reasoning) end
    return {
        id = common.new_id("chatcmpl-"),
        object = "chat.completion",
        created = os.time(),
        model = nil,
        choices = { { index = 0, message = m, logprobs = null,
            finish_reason = common.bedrock_to_finish[nn(r.stopReason) or "end_turn"] or "stop" } },
        usage = _M.openai_usage(r.usage),
    }
end

function _M.usage(resp)
    return type(resp) == "table" and common.normalize_usage(resp.usage) or nil
end

local EXCEPTION_STATUS = {
    ValidationException = 400, AccessDeniedException = 403, ResourceNotFoundException = 404,
    ThrottlingException = 429, ServiceQuotaExceededException = 429, ModelTimeoutException = 408,
    ModelErrorException = 424, ModelStreamErrorException = 424, ModelNotReadyException = 429,
    InternalServerException = 500, ServiceUnavailableException = 503, UnrecognizedClientException = 403,
    ExpiredTokenException = 403,
}

--- {"message": "..."} + x-amzn-errortype header -> error table.
function _M.parse_error(status, headers, body, exception_type)
    local t = type(body) == "string" and json_decode(body) or (type(body) == "table" and body) or nil
    local etype = exception_type or common.header(headers, "x-amzn-errortype")
    if type(etype) == "string" then
        etype = etype:match("^([^:]+)"):gsub("^%l", string.upper) -- stream headers say "throttlingException"
    end
    local msg = type(t) == "table" and (nn(t.message) or nn(t.Message)) or nil
    if not msg and not etype then return common.generic_error(status, headers, body, "bedrock") end
    local st = tonumber(status)
    if not st or st < 400 then st = EXCEPTION_STATUS[etype or ""] or 500 end
    return {
        status = st,
        type = common.openai_error_type(st),
        message = tostring(msg or etype),
        code = etype,
        retry_after = common.retry_after(headers),
    }
end

-- ---------------------------------------------------------------------------------------------------------
-- stream: event-stream messages -> OpenAI chunks

local Stream = {}
Stream.__index = Stream

local function handle(self, msg, out)
    local h = msg.headers
    local mtype = h[":message-type"]
    if mtype == "exception" or mtype == "error" then
        local etype = h[":exception-type"] or h[":error-code"]
        local payload = json_decode(msg.payload)
        local e = _M.parse_error(nil, nil, type(payload) == "table" and payload or { message = h[":error-message"] },
            etype)
        out[#out + 1] = { error = e }
        self.failed = true
        return
    end
    local ev = h[":event-type"]
    local t = json_decode(msg.payload)
    if type(t) ~= "table" then t = {} end
    local st = self.state
    if ev == "messageStart" then
        out[#out + 1] = common.chunk(st, { role = t.role or "assistant", content = "" })
    elseif ev == "contentBlockStart" then
        local s = type(t.start) == "table" and t.start.toolUse
        if type(s) == "table" then
            local ti = self.ntools
            self.ntools = ti + 1
            self.tool_index[t.contentBlockIndex or 0] = ti
            out[#out + 1] = common.chunk(st, { tool_calls = { { index = ti, id = s.toolUseId, type = "function",
                ["function"] = { name = s.name, arguments = "" } } } })
        end
    elseif ev == "contentBlockDelta" then
        local d = type(t.delta) == "table" and t.delta or {}
        if type(d.text) == "string" then
            out[#out + 1] = common.chunk(st, { content = d.text })
        elseif type(d.toolUse) == "table" then
            local ti = self.tool_index[t.contentBlockIndex or 0]
            if ti and type(d.toolUse.input) == "string" and d.toolUse.input ~= "" then
                out[#out + 1] = common.chunk(st, { tool_calls = { { index = ti,
                    ["function"] = { arguments = d.toolUse.input } } } })
            end
        elseif type(d.reasoningContent) == "table" and type(d.reasoningContent.text) == "string" then
            out[#out + 1] = common.chunk(st, { reasoning_content = d.reasoningContent.text })
        end
    elseif ev == "messageStop" then
        self.finish_reason = common.bedrock_to_finish[t.stopReason or "end_turn"] or "stop"
        out[#out + 1] = common.chunk(st, {}, self.finish_reason)
    elseif ev == "metadata" then
        local u = _M.openai_usage(t.usage)
        if u then
            self.usage = common.normalize_usage(u)
            out[#out + 1] = common.usage_chunk(st, u)
        end
        self.done = true
    end -- contentBlockStop: nothing to emit
end

function Stream:feed(bytes)
    local out = {}
    if self.failed then return out end
    local msgs, err = self.decoder:feed(bytes)
    if not msgs then
        self.failed = true
        out[1] = { error = { status = 502, type = "api_error", message = "bedrock: " .. err } }
        return out
    end
    for _, m in ipairs(msgs) do handle(self, m, out) end
    return out
end

function Stream:finish()
    local out = {}
    if self.decoder.buf ~= "" and not self.failed then
        out[1] = { error = { status = 502, type = "api_error", message = "bedrock: stream ended inside a message" } }
        self.failed = true
    end
    self.done = true
    return out
end

function _M.new_stream(op, opts)
    opts = opts or {}
    return setmetatable({
        decoder = _M.eventstream.decoder(),
        state = { id = common.new_id("chatcmpl-"), created = opts.created or os.time(), model = opts.model },
        tool_index = {}, ntools = 0, usage = nil, done = false,
    }, Stream)
end

return _M
