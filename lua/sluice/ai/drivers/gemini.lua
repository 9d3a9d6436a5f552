-- sluice.ai.drivers.gemini: Google Gemini API (generativelanguage.googleapis.com, v1beta).
--   chat:       POST /v1beta/models/{model}:generateContent
--   streaming:  POST /v1beta/models/{model}:streamGenerateContent?alt=sse   (SSE, no [DONE]; ends with the body)
--   embeddings: POST /v1beta/models/{model}:batchEmbedContents
--   auth:       x-goog-api-key: <key>
-- Request: system -> systemInstruction; user/assistant -> contents with role user/model (a conversation that
-- starts with the model gets a "." user turn first); image data URLs -> inlineData (http(s) URLs -> fileData,
-- which Gemini accepts only for URIs it can fetch); tool_calls -> functionCall parts (with their thought
-- signature, see below); role "tool" -> functionResponse parts (the function name is looked up from the call
-- id; is_error -> {error: ...}); tools -> functionDeclarations (JSON Schema reduced to Gemini's subset by
-- sluice.ai.common.json_schema; what it cannot express is a 400 naming the path); tool_choice ->
-- toolConfig.functionCallingConfig; generation options -> generationConfig; response_format ->
-- responseMimeType (+ responseSchema). Response: candidates[0] parts -> content / tool_calls, `thought` parts ->
-- reasoning_content, finishReason mapped, usageMetadata -> usage.
--
-- Thought signatures: Gemini 2.5 and 3 put a `thoughtSignature` on functionCall parts, and Gemini 3 rejects the
-- next turn if the call comes back without it ("Function call is missing a thought_signature"). Every client
-- keeps tool call ids (they come back in the assistant history and in the tool results), so the signature rides
-- in the id: "<call id>__ts__<signature as base64url>", and goes back on the part when the call is replayed. A
-- signature in Gemini's OpenAI-compatibility field (tool_calls[].extra_content.google.thought_signature) is
-- read too. A replayed call without one (history from another model, or a client that rebuilt the ids) gets
-- the documented "skip_thought_signature_validator" placeholder on Gemini 3 models.
local common = require("sluice.ai.common")
local json = require("sluice.ai.common.json")
local content_mod = require("sluice.ai.common.content")
local params = require("sluice.ai.common.params")
local json_schema = require("sluice.ai.common.json_schema")
local sse = require("sluice.ai.sse")
local stream_base = require("sluice.ai.common.stream_base")

local type, ipairs, tostring, tonumber, next = type, ipairs, tostring, tonumber, next
local concat = table.concat
local rep = string.rep
local json_encode, json_decode, nn, null = json.json_encode, json.json_decode, json.nn, json.null

local _M = { kind = "gemini" }

-- The chat parameters this driver translates; others are dropped (or refused: options.drop_params = false).
local ACCEPTS = params.set(params.BASE, { "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens",
    "stop", "n", "presence_penalty", "frequency_penalty", "seed", "response_format", "reasoning_effort", "tools",
    "tool_choice" })
local MAX_STOP, MAX_CANDIDATES = 5, 8
local PLACEHOLDER_USER = "."
local SKIP_SIGNATURE = "skip_thought_signature_validator"
local THINKING_BUDGET = { none = 0, minimal = 0, low = 1024, medium = 8192, high = 24576, xhigh = 32768 }

-- ---------------------------------------------------------------------------------------------------------
-- thought signatures in tool call ids

local TS = "__ts__"

--- A tool call id carrying a thought signature (only a base64 one: it must come back byte for byte).
function _M.id_with_signature(id, sig)
    if type(sig) ~= "string" or not sig:match("^[A-Za-z0-9+/]+=*$") then return id end
    return id .. TS .. (sig:gsub("=+$", ""):gsub("[+/]", { ["+"] = "-", ["/"] = "_" }))
end

--- The thought signature an id carries, or nil.
function _M.signature_of(id)
    local b = type(id) == "string" and id:find(TS, 1, true)
    if not b then return nil end
    local s = id:sub(b + #TS)
    if s == "" or not s:match("^[A-Za-z0-9_%-]+$") then return nil end
    s = s:gsub("[-_]", { ["-"] = "+", ["_"] = "/" })
    return s .. rep("=", (4 - #s % 4) % 4)
end

local function signature_of_call(tc)
    local sig = _M.signature_of(tc.id)
    if sig then return sig end
    local ec = type(tc.extra_content) == "table" and tc.extra_content.google
    sig = type(ec) == "table" and ec.thought_signature
    return type(sig) == "string" and sig ~= "" and sig or nil
end

--- Gemini 3 and later reject replayed calls without a signature.
local function checks_signatures(model)
    local major = type(model) == "string" and tonumber(model:match("^gemini%-(%d+)"))
    return major ~= nil and major >= 3
end

-- ---------------------------------------------------------------------------------------------------------
-- request: OpenAI -> Gemini

--- JSON Schema -> Gemini Schema | nil, err (see sluice.ai.common.json_schema).
function _M.clean_schema(s, path)
    return json_schema.to_gemini(s, path)
end

local IMAGE_EXT = { png = "image/png", jpg = "image/jpeg", jpeg = "image/jpeg", webp = "image/webp",
    gif = "image/gif" }

-- OpenAI content -> Gemini parts: text, inlineData (data URLs), fileData (other URLs: Gemini fetches only
-- URIs it can reach, e.g. uploaded files).
local function parts_of(content)
    local parts = {}
    for _, p in ipairs(content_mod.parts(content)) do
        if p.type == "text" then
            parts[#parts + 1] = { text = p.text }
        elseif p.type == "image" then
            if p.mime then
                parts[#parts + 1] = { inlineData = { mimeType = p.mime, data = p.data } }
            else
                local ext = p.url:match("%.(%w+)$")
                parts[#parts + 1] = { fileData = { mimeType = IMAGE_EXT[ext and ext:lower() or ""] or "image/jpeg",
                    fileUri = p.url } }
            end
        elseif p.type == "file" and p.mime then
            parts[#parts + 1] = { inlineData = { mimeType = p.mime, data = p.data } }
        end
    end
    return parts
end

-- A tool message's content -> functionResponse.response: a JSON object as is, anything else under `content`
-- (under `error` for a failed call, the key Gemini documents for errors).
local function function_response(m)
    local text = content_mod.content_text(nn(m.content))
    local decoded = json_decode(text)
    if m.is_error == true then
        return { error = decoded ~= nil and decoded or (text ~= "" and text or "error") }
    end
    if type(decoded) == "table" and next(decoded) ~= nil and decoded[1] == nil then return decoded end
    return { content = decoded ~= nil and decoded or text }
end

local function tools_of(body)
    if type(body.tools) ~= "table" or #body.tools == 0 then return nil end
    local decls = {}
    for i, t in ipairs(body.tools) do
        if type(t) == "table" and t.type == "function" and type(t["function"]) == "table" then
            local f = t["function"]
            if type(f.name) ~= "string" or not f.name:match("^[%a_][%w_.:%-]*$") then
                return nil, "gemini: tools[" .. (i - 1) .. "].function.name " .. tostring(f.name)
                    .. ": Gemini function names start with a letter or an underscore"
            end
            local p = nn(f.parameters)
            local d = { name = f.name, description = nn(f.description) }
            if type(p) == "table" and type(p.properties) == "table" and next(p.properties) then
                local s, err = json_schema.to_gemini(p, "tools[" .. (i - 1) .. "].function.parameters")
                if not s then return nil, "gemini: " .. err end
                d.parameters = s
            end
            decls[#decls + 1] = d
        end
    end
    if #decls == 0 then return nil end
    return { { functionDeclarations = decls } }
end

--- Canonical OpenAI chat request -> Gemini GenerateContentRequest | nil, err.
function _M.to_gemini_request(provider, body)
    provider = provider or {}
    local options = provider.options or {}
    if type(body.messages) ~= "table" then return nil, "gemini: messages must be an array" end
    local ok, perr = params.check("gemini", provider, body, ACCEPTS)
    if not ok then return nil, perr end
    local contents, system = {}, {}
    local call_names = {}
    local last
    local function push(role, parts)
        if #parts == 0 then return end
        if last and last.role == role then
            for _, p in ipairs(parts) do last.parts[#last.parts + 1] = p end
        else
            last = { role = role, parts = parts }
            contents[#contents + 1] = last
        end
    end
    for _, m in ipairs(body.messages) do
        if type(m) ~= "table" then return nil, "gemini: each message must be an object" end
        if m.role == "system" or m.role == "developer" then
            for _, p in ipairs(parts_of(m.content)) do
                if p.text then system[#system + 1] = p end
            end
        elseif m.role == "user" then
            push("user", parts_of(m.content))
        elseif m.role == "assistant" then
            local parts = parts_of(nn(m.content))
            for _, tc in ipairs(type(m.tool_calls) == "table" and m.tool_calls or {}) do
                local f = tc["function"] or {}
                if tc.id then call_names[tc.id] = f.name end
                parts[#parts + 1] = { functionCall = { name = f.name, args = content_mod.tool_args(tc) },
                    thoughtSignature = signature_of_call(tc) }
            end
            push("model", parts)
        elseif m.role == "tool" or m.role == "function" then
            local name = call_names[m.tool_call_id] or m.name or m.tool_call_id
            push("user", { { functionResponse = { name = name, response = function_response(m) } } })
        else
            return nil, "gemini: unsupported message role " .. tostring(m.role)
        end
    end
    if contents[1] and contents[1].role == "model" then
        table.insert(contents, 1, { role = "user", parts = { { text = PLACEHOLDER_USER } } })
    end
    if #contents == 0 then return nil, "gemini: the request has no message with content" end
    if checks_signatures(body.model) then
        for _, c in ipairs(contents) do
            if c.role == "model" then
                for _, p in ipairs(c.parts) do
                    if p.functionCall then
                        p.thoughtSignature = p.thoughtSignature or SKIP_SIGNATURE
                        break
                    end
                end
            end
        end
    end
    local out = { contents = contents }
    if #system > 0 then out.systemInstruction = { parts = system } end

    local gc = {}
    gc.temperature = nn(body.temperature)
    gc.topP = nn(body.top_p)
    gc.topK = nn(body.top_k)
    gc.maxOutputTokens = nn(body.max_tokens) or nn(body.max_completion_tokens)
    local stop = content_mod.stop_list(nn(body.stop))
    if stop and #stop > MAX_STOP then
        return nil, "gemini: stop: at most " .. MAX_STOP .. " stop sequences (got " .. #stop .. ")"
    end
    gc.stopSequences = stop
    local n = nn(body.n)
    if type(n) == "number" and n > MAX_CANDIDATES then
        return nil, "gemini: n: at most " .. MAX_CANDIDATES .. " candidates (got " .. n .. ")"
    end
    gc.candidateCount = n
    gc.presencePenalty = nn(body.presence_penalty)
    gc.frequencyPenalty = nn(body.frequency_penalty)
    gc.seed = nn(body.seed)
    local rf = nn(body.response_format)
    if type(rf) == "table" then
        if rf.type == "json_object" then
            gc.responseMimeType = "application/json"
        elseif rf.type == "json_schema" and type(rf.json_schema) == "table" then
            gc.responseMimeType = "application/json"
            if type(rf.json_schema.schema) == "table" then
                local s, err = json_schema.to_gemini(rf.json_schema.schema, "response_format.json_schema.schema")
                if not s then return nil, "gemini: " .. err end
                gc.responseSchema = s
            end
        end
    end
    local budget = THINKING_BUDGET[nn(body.reasoning_effort) or ""]
    if budget then gc.thinkingConfig = { thinkingBudget = budget } end
    if next(gc) ~= nil then out.generationConfig = gc end

    local tools, terr = tools_of(body)
    if terr then return nil, terr end
    out.tools = tools
    local tc = nn(body.tool_choice)
    if tc ~= nil and out.tools then
        local fcc
        if tc == "auto" then fcc = { mode = "AUTO" }
        elseif tc == "none" then fcc = { mode = "NONE" }
        elseif tc == "required" then fcc = { mode = "ANY" }
        elseif type(tc) == "table" and type(tc["function"]) == "table" then
            fcc = { mode = "ANY", allowedFunctionNames = { tc["function"].name } }
        end
        if fcc then out.toolConfig = { functionCallingConfig = fcc } end
    end
    if type(options.safety_settings) == "table" then out.safetySettings = options.safety_settings end
    return out
end

local function embed_request(model, body)
    local input = body.input
    if type(input) == "string" then input = { input } end
    if type(input) ~= "table" or #input == 0 then return nil, "gemini: embeddings input must be a string or array" end
    local reqs = {}
    for i, text in ipairs(input) do
        if type(text) ~= "string" then return nil, "gemini: embeddings input must be text" end
        reqs[i] = { model = "models/" .. model, content = { parts = { { text = text } } },
            outputDimensionality = nn(body.dimensions) }
    end
    return { requests = reqs }
end

function _M.build_request(provider, op, body, opts)
    provider, opts, op = provider or {}, opts or {}, op or "chat"
    local ep, err = common.parse_endpoint(provider.endpoint or "https://generativelanguage.googleapis.com")
    if not ep then return nil, "gemini: " .. err end
    local base = ep.base ~= "" and ep.base or "/" .. (provider.api_version or "v1beta")
    local headers = { ["Host"] = common.host_header(ep), ["Content-Type"] = "application/json" }
    if provider.api_key and provider.api_key ~= "" then headers["x-goog-api-key"] = provider.api_key end
    common.extra_headers(provider, headers)
    if op == "models" then
        return { method = "GET", scheme = ep.scheme, host = ep.host, port = ep.port, path = base .. "/models",
            headers = headers, stream = false }
    end
    if type(body) ~= "table" or type(body.model) ~= "string" then
        return nil, "gemini: request body with a model is required"
    end
    local model = body.model:gsub("^models/", "")
    local path, g
    local stream = false
    if op == "chat" then
        stream = opts.stream
        if stream == nil then stream = body.stream == true end
        g, err = _M.to_gemini_request(provider, body)
        path = base .. "/models/" .. common.urlencode(model)
            .. (stream and ":streamGenerateContent?alt=sse" or ":generateContent")
    elseif op == "embeddings" then
        g, err = embed_request(model, body)
        path = base .. "/models/" .. common.urlencode(model) .. ":batchEmbedContents"
    else
        return nil, "gemini: unsupported operation " .. tostring(op)
    end
    if not g then return nil, err end
    headers["Accept"] = stream and "text/event-stream" or "application/json"
    local encoded
    encoded, err = json_encode(g)
    if not encoded then return nil, "gemini: cannot encode body: " .. tostring(err) end
    return { method = "POST", scheme = ep.scheme, host = ep.host, port = ep.port, path = path,
        headers = headers, body = encoded, stream = stream and true or false }
end

-- ---------------------------------------------------------------------------------------------------------
-- responses

--- usageMetadata -> OpenAI usage (completion includes thoughts, as OpenAI counts reasoning tokens).
function _M.openai_usage(um)
    if type(um) ~= "table" then return nil end
    local p = tonumber(nn(um.promptTokenCount)) or 0
    local thoughts = tonumber(nn(um.thoughtsTokenCount))
    local c = (tonumber(nn(um.candidatesTokenCount)) or 0) + (thoughts or 0)
    local u = common.openai_usage(p, c, tonumber(nn(um.cachedContentTokenCount)), thoughts)
    u.total_tokens = tonumber(nn(um.totalTokenCount)) or u.total_tokens
    return u
end

local function finish_of(fr, has_calls)
    fr = nn(fr)
    if fr == nil then return nil end
    if has_calls and fr == "STOP" then return "tool_calls" end
    return common.gemini_to_finish[fr] or "stop"
end

local call_seq = 0
local function call_id()
    call_seq = call_seq + 1
    return "call_" .. common.new_id("", 16) .. call_seq
end

-- Splits a candidate's parts -> text, reasoning, calls (OpenAI tool_calls).
local function read_parts(cand)
    local text, reasoning, calls = {}, {}, {}
    local content = type(cand) == "table" and nn(cand.content)
    for _, p in ipairs(type(content) == "table" and type(content.parts) == "table" and content.parts or {}) do
        if type(p.text) == "string" then
            if p.thought == true then reasoning[#reasoning + 1] = p.text else text[#text + 1] = p.text end
        elseif type(p.functionCall) == "table" then
            calls[#calls + 1] = { id = _M.id_with_signature(nn(p.functionCall.id) or call_id(), nn(p.thoughtSignature)),
                type = "function", ["function"] = {
                name = p.functionCall.name, arguments = json_encode(nn(p.functionCall.args) or {}) or "{}" } }
        end
    end
    return text, reasoning, calls
end

function _M.parse_response(status, headers, body, op)
    status = tonumber(status) or 0
    if status < 200 or status > 299 then return nil, _M.parse_error(status, headers, body) end
    local g, err = json_decode(body)
    if type(g) ~= "table" then return nil, common.bad_upstream("gemini: invalid JSON response: " .. tostring(err)) end
    if op == "embeddings" then
        local data = {}
        for i, e in ipairs(type(g.embeddings) == "table" and g.embeddings or {}) do
            data[i] = { object = "embedding", index = i - 1, embedding = e.values }
        end
        return { object = "list", data = data, model = nil, usage = { prompt_tokens = 0, total_tokens = 0 } }
    end
    if op == "models" then
        local data = common.array()
        for _, m in ipairs(type(g.models) == "table" and g.models or {}) do
            data[#data + 1] = { id = (tostring(m.name):gsub("^models/", "")), object = "model", owned_by = "google" }
        end
        return { object = "list", data = data }
    end
    local choices = {}
    for i, cand in ipairs(type(g.candidates) == "table" and g.candidates or {}) do
        local text, reasoning, calls = read_parts(cand)
        local msg = { role = "assistant", content = #text > 0 and concat(text) or null }
        if #calls > 0 then msg.tool_calls = calls end
        if #reasoning > 0 then msg.reasoning_content = concat(reasoning) end
        choices[#choices + 1] = { index = tonumber(cand.index) or (i - 1), message = msg,
            finish_reason = finish_of(cand.finishReason, #calls > 0) or "stop", logprobs = null }
    end
    if #choices == 0 then -- prompt blocked: promptFeedback.blockReason
        choices[1] = { index = 0, message = { role = "assistant", content = null }, finish_reason = "content_filter",
            logprobs = null }
    end
    return {
        id = g.responseId or common.new_id("chatcmpl-"),
        object = "chat.completion",
        created = os.time(),
        model = g.modelVersion,
        choices = choices,
        usage = _M.openai_usage(g.usageMetadata),
    }
end

function _M.usage(resp)
    return type(resp) == "table" and common.normalize_usage(resp.usage) or nil
end

local STATUS_TYPE = {
    INVALID_ARGUMENT = "invalid_request_error", FAILED_PRECONDITION = "invalid_request_error",
    UNAUTHENTICATED = "authentication_error", PERMISSION_DENIED = "permission_error",
    NOT_FOUND = "not_found_error", RESOURCE_EXHAUSTED = "rate_limit_error", INTERNAL = "api_error",
    UNAVAILABLE = "api_error", DEADLINE_EXCEEDED = "timeout",
}

--- {"error":{"code","message","status","details"}} (possibly wrapped in an array) -> error table.
function _M.parse_error(status, headers, body)
    local t = type(body) == "string" and json_decode(body) or (type(body) == "table" and body) or nil
    if type(t) == "table" and type(t[1]) == "table" then t = t[1] end
    local e = type(t) == "table" and nn(t.error) or nil
    if type(e) ~= "table" then return common.generic_error(status, headers, body, "gemini") end
    local st = tonumber(status)
    if not st or st < 400 then st = tonumber(nn(e.code)) or 500 end
    local retry = common.retry_after(headers)
    for _, d in ipairs(type(e.details) == "table" and e.details or {}) do
        if type(d) == "table" and type(d.retryDelay) == "string" then
            retry = retry or tonumber(d.retryDelay:match("^([%d.]+)s$"))
        end
    end
    return {
        status = st,
        type = STATUS_TYPE[nn(e.status) or ""] or common.openai_error_type(st),
        message = tostring(nn(e.message) or ("HTTP " .. st)),
        code = nn(e.status),
        retry_after = retry,
    }
end

-- ---------------------------------------------------------------------------------------------------------
-- stream: each SSE data is a whole GenerateContentResponse

local function handle(self, ev, out)
    if ev.data == "" then return end
    local g = json_decode(ev.data)
    if type(g) ~= "table" then
        out[#out + 1] = stream_base.error_item("invalid JSON in upstream stream")
        self.failed = true
        return
    end
    if nn(g.error) ~= nil then
        out[#out + 1] = { error = _M.parse_error(nil, nil, g) }
        self.failed = true
        return
    end
    local st = self.state
    st.id = st.id or g.responseId or common.new_id("chatcmpl-")
    st.model = g.modelVersion or st.model
    if not self.started then
        self.started = true
        out[#out + 1] = common.chunk(st, { role = "assistant", content = "" })
    end
    local cand = type(g.candidates) == "table" and g.candidates[1] or nil
    if cand then
        local text, reasoning, calls = read_parts(cand)
        if #reasoning > 0 then out[#out + 1] = common.chunk(st, { reasoning_content = concat(reasoning) }) end
        if #text > 0 then out[#out + 1] = common.chunk(st, { content = concat(text) }) end
        for _, c in ipairs(calls) do
            c.index = self.ncalls
            self.ncalls = self.ncalls + 1
            out[#out + 1] = common.chunk(st, { tool_calls = { c } })
        end
        local fr = finish_of(cand.finishReason, self.ncalls > 0)
        if fr then
            self.finish_reason = fr
            out[#out + 1] = common.chunk(st, {}, fr)
        end
    elseif type(g.promptFeedback) == "table" and g.promptFeedback.blockReason then
        self.finish_reason = "content_filter"
        out[#out + 1] = common.chunk(st, {}, "content_filter")
    end
    if type(g.usageMetadata) == "table" then
        self.raw_usage = _M.openai_usage(g.usageMetadata)
        self.usage = common.normalize_usage(self.raw_usage)
    end
    if self.finish_reason and self.raw_usage and not self.usage_sent then
        self.usage_sent = true
        out[#out + 1] = common.usage_chunk(st, self.raw_usage)
        self.done = true
    end
end

-- the stream ended: the usage chunk, if no event carried a finishReason after the usage
local function on_finish(self, out)
    if self.raw_usage and not self.usage_sent then
        self.usage_sent = true
        out[#out + 1] = common.usage_chunk(self.state, self.raw_usage)
    end
end

local Stream = stream_base.class(handle, on_finish)

function _M.new_stream(op, opts)
    opts = opts or {}
    return stream_base.new(Stream, sse.parser(), { state = { created = opts.created or os.time(), model = opts.model },
        ncalls = 0, started = false })
end

return _M
