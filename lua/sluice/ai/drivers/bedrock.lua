-- sluice.ai.drivers.bedrock: Amazon Bedrock Converse API behind the canonical OpenAI format.
--   chat:      POST https://bedrock-runtime.{region}.amazonaws.com/model/{modelId}/converse
--   streaming: POST .../model/{modelId}/converse-stream   (AWS event-stream framing: sluice.ai.aws.eventstream)
--   auth:      AWS Signature V4 (sluice.ai.aws.sigv4; service "bedrock", access_key/secret_key[/session_token]),
--              or a Bedrock API key as `Authorization: Bearer` when only api_key is configured.
-- Request: system -> system[{text}], messages -> content blocks (text, image bytes from data URLs, toolUse,
-- toolResult) in alternating user/assistant turns (a conversation that starts with the assistant gets a "."
-- user turn first), max_tokens/temperature/top_p/stop -> inferenceConfig (temperature clamped to Converse's
-- 0-1), tools -> toolConfig (toolSpec with inputSchema.json; a history with tool calls but no tools gets a
-- toolConfig naming the tools it used, as Converse requires), tool_choice -> toolChoice (auto/any/tool; "none"
-- omits it), response_format -> system instruction, options.additional_model_request_fields passed as
-- additionalModelRequestFields (e.g. top_k).
-- Response/stream: output.message content -> content / tool_calls / reasoning_content, stopReason mapped,
-- usage (prompt = inputTokens + cacheRead + cacheWrite).
-- No embeddings (Titan/Cohere embeddings use InvokeModel with model-specific bodies).
local common = require("sluice.ai.common")
local sigv4 = require("sluice.ai.aws.sigv4")
local eventstream = require("sluice.ai.aws.eventstream")
local stream_base = require("sluice.ai.common.stream_base")
local content_mod = require("sluice.ai.common.content")
local params = require("sluice.ai.common.params")

local type, ipairs, tostring, tonumber, next = type, ipairs, tostring, tonumber, next
local concat = table.concat
local json_encode, json_decode, nn, null = common.json_encode, common.json_decode, common.nn, common.null

local _M = { kind = "bedrock" }

-- the AWS pieces, under the names they had when they lived here
_M.sigv4, _M.canonical_uri, _M.canonical_query = sigv4.sign, sigv4.canonical_uri, sigv4.canonical_query
_M.eventstream = eventstream


-- ---------------------------------------------------------------------------------------------------------
-- request: OpenAI -> Converse

local IMAGE_FORMATS = { ["image/png"] = "png", ["image/jpeg"] = "jpeg", ["image/jpg"] = "jpeg",
    ["image/gif"] = "gif", ["image/webp"] = "webp" }

-- OpenAI content -> Converse content blocks | nil, err (Converse takes image bytes only, never URLs).
local function blocks_of(content)
    local blocks = {}
    for _, p in ipairs(content_mod.parts(content)) do
        if p.type == "text" then
            blocks[#blocks + 1] = { text = p.text }
        elseif p.type == "image" then
            if not p.mime or not IMAGE_FORMATS[p.mime] then
                return nil, "bedrock: images must be png/jpeg/gif/webp data: URLs (Converse does not fetch URLs)"
            end
            blocks[#blocks + 1] = { image = { format = IMAGE_FORMATS[p.mime], source = { bytes = p.data } } }
        end
    end
    return blocks
end

-- The chat parameters this driver translates; others are dropped (or refused: options.drop_params = false).
local ACCEPTS = params.set(params.BASE, { "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop",
    "tools", "tool_choice", "response_format" })
local PLACEHOLDER_USER = "."
local MAX_TEMPERATURE = 1 -- Converse's inferenceConfig.temperature is 0-1 (OpenAI's goes to 2)

local function clamp(v, lo, hi)
    v = tonumber(nn(v))
    if not v then return nil end
    return v < lo and lo or (v > hi and hi or v)
end

-- Converse rejects blank text ("The text field in the ContentBlock object ... is blank").
local function nonblank(blocks)
    local out = {}
    for _, b in ipairs(blocks) do
        if not (b.text and not b.text:find("%S")) then out[#out + 1] = b end
    end
    return out
end

-- toolConfig.tools from body.tools, or, when the request has none but its history uses tools, a minimal spec
-- for each tool named there (Converse: "The toolConfig field must be defined when using toolUse and
-- toolResult content blocks").
local function tool_specs(body, used)
    local tools = {}
    if type(body.tools) == "table" then
        for _, t in ipairs(body.tools) do
            if type(t) == "table" and t.type == "function" and type(t["function"]) == "table" then
                local f = t["function"]
                local p = nn(f.parameters)
                if type(p) ~= "table" then p = { type = "object", properties = {} } end
                local d = nn(f.description)
                tools[#tools + 1] = { toolSpec = { name = f.name, description = d ~= "" and d or nil,
                    inputSchema = { json = p } } }
            end
        end
    end
    if #tools > 0 then return tools, false end
    for _, name in ipairs(used) do
        local schema = { json = { type = "object", properties = {} } }
        tools[#tools + 1] = { toolSpec = { name = name, inputSchema = schema } }
    end
    return #tools > 0 and tools or nil, true
end

--- Canonical OpenAI chat request -> Converse request | nil, err.
function _M.to_converse_request(provider, body)
    provider = provider or {}
    local options = provider.options or {}
    if type(body.messages) ~= "table" then return nil, "bedrock: messages must be an array" end
    local ok, perr = params.check("bedrock", provider, body, ACCEPTS)
    if not ok then return nil, perr end
    local system, messages, last = {}, {}, nil
    local used, seen_tool = {}, {}
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
            for _, b in ipairs(nonblank(blocks)) do if b.text then system[#system + 1] = b end end
        elseif m.role == "user" then
            blocks, err = blocks_of(m.content)
            if not blocks then return nil, err end
            push("user", nonblank(blocks))
        elseif m.role == "assistant" then
            blocks, err = blocks_of(nn(m.content))
            if not blocks then return nil, err end
            blocks = nonblank(blocks)
            for _, tc in ipairs(type(m.tool_calls) == "table" and m.tool_calls or {}) do
                local f = tc["function"] or {}
                blocks[#blocks + 1] = { toolUse = { toolUseId = content_mod.call_id(tc.id), name = f.name,
                    input = content_mod.tool_args(tc) } }
                if type(f.name) == "string" and not seen_tool[f.name] then
                    seen_tool[f.name] = true
                    used[#used + 1] = f.name
                end
            end
            push("assistant", blocks)
        elseif m.role == "tool" or m.role == "function" then
            local text = content_mod.content_text(nn(m.content))
            local tr = { toolUseId = content_mod.call_id(m.tool_call_id), content = { { text = text } } }
            if m.is_error then tr.status = "error" end
            push("user", { { toolResult = tr } })
        else
            return nil, "bedrock: unsupported message role " .. tostring(m.role)
        end
    end
    if messages[1] and messages[1].role == "assistant" then
        -- "A conversation must start with a user message"
        table.insert(messages, 1, { role = "user", content = { { text = PLACEHOLDER_USER } } })
    end
    if #messages == 0 then return nil, "bedrock: the request has no message with content" end
    local out = { messages = messages }
    local rf = content_mod.response_format_instruction(nn(body.response_format))
    if rf then system[#system + 1] = { text = rf } end
    if #system > 0 then out.system = system end
    local stop = content_mod.stop_list(nn(body.stop))
    if stop then
        local keep = {}
        for _, x in ipairs(stop) do if type(x) == "string" and x ~= "" then keep[#keep + 1] = x end end
        stop = #keep > 0 and keep or nil
    end
    local ic = {
        maxTokens = nn(body.max_tokens) or nn(body.max_completion_tokens) or tonumber(options.max_tokens),
        temperature = clamp(body.temperature, 0, MAX_TEMPERATURE),
        topP = clamp(body.top_p, 0, 1),
        stopSequences = stop,
    }
    if next(ic) ~= nil then out.inferenceConfig = ic end
    local tools, synthesized = tool_specs(body, used)
    if tools then
        out.toolConfig = { tools = tools }
        local tc = nn(body.tool_choice)
        if synthesized then tc = nil end -- the client offered no tools: nothing to choose from
        if tc == "auto" then out.toolConfig.toolChoice = { auto = {} }
        elseif tc == "required" then out.toolConfig.toolChoice = { any = {} }
        elseif type(tc) == "table" and type(tc["function"]) == "table" then
            out.toolConfig.toolChoice = { tool = { name = tc["function"].name } }
        end
    end
    local amrf = options.additional_model_request_fields
    if type(amrf) == "table" then out.additionalModelRequestFields = amrf end
    if type(options.guardrail_config) == "table" then out.guardrailConfig = options.guardrail_config end
    return out
end

function _M.build_request(provider, op, body, opts)
    provider, opts, op = provider or {}, opts or {}, op or "chat"
    if op ~= "chat" then return nil, "bedrock: unsupported operation " .. tostring(op) .. " (only chat)" end
    if type(body) ~= "table" or type(body.model) ~= "string" then
        return nil, "bedrock: request body with a model is required"
    end
    local region = provider.region or (provider.options and provider.options.region)
    if not provider.endpoint and not region then return nil, "bedrock: provider.region is required" end
    local ep, err = common.parse_endpoint(provider.endpoint
        or ("https://bedrock-runtime." .. region .. ".amazonaws.com"))
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
        sigv4.sign(req, { access_key = provider.access_key, secret_key = provider.secret_key,
            session_token = provider.session_token }, region, "bedrock", sigv4.amz_date(opts.now))
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

local Stream = stream_base.class(handle)

function _M.new_stream(op, opts)
    opts = opts or {}
    return stream_base.new(Stream, eventstream.decoder(), {
        label = "bedrock: ",
        state = { id = common.new_id("chatcmpl-"), created = opts.created or os.time(), model = opts.model },
        tool_index = {}, ntools = 0,
    })
end

return _M
