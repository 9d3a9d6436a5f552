-- sluice.ai.anthropic_api: the client-facing Anthropic Messages API (POST /v1/messages) over the canonical
-- OpenAI format, so an Anthropic-SDK client (or coding agent) can use any provider.
--
--   anthropic_api.to_openai(anthropic_request)        -> canonical OpenAI chat request | nil, err
--   anthropic_api.from_openai_response(openai_resp)   -> Anthropic Message
--   local e = anthropic_api.stream_encoder({model=, id=, input_tokens=})
--   e:chunk(openai_chunk) -> SSE string (message_start, content_block_start/delta/stop, message_delta, ...)
--   e:error(status, message, type) -> SSE "error" event string ; e:finish() -> closing events (string)
--
-- Canonical extensions kept for an Anthropic upstream (other drivers strip or translate them): `top_k`,
-- `thinking`, `cache_control` on content parts and tools, image/document blocks, assistant
-- `reasoning_content`, `is_error` on tool messages. Several text blocks of one message are joined with "\n".
local common = require("sluice.ai.common")
local sse = require("sluice.ai.sse")

local type, ipairs, tostring, tonumber, setmetatable = type, ipairs, tostring, tonumber, setmetatable
local concat = table.concat
local json_encode, json_decode, nn, null = common.json_encode, common.json_decode, common.nn, common.null

local _M = {}

-- ---------------------------------------------------------------------------------------------------------
-- request: Anthropic -> OpenAI

local function block_to_part(b)
    if b.type == "text" then
        if type(b.text) ~= "string" then return nil end -- not a text: nothing to send (never a raise in concat)
        return { type = "text", text = b.text, cache_control = b.cache_control }
    elseif b.type == "image" and type(b.source) == "table" then
        local s = b.source
        local url
        if s.type == "base64" then
            url = "data:" .. tostring(s.media_type) .. ";base64," .. tostring(s.data)
        elseif s.type == "url" then
            url = s.url
        end
        if url then return { type = "image_url", image_url = { url = url }, cache_control = b.cache_control } end
    elseif b.type == "document" and type(b.source) == "table" and b.source.type == "base64" then
        return { type = "file", file = {
            file_data = "data:" .. tostring(b.source.media_type) .. ";base64," .. tostring(b.source.data),
            filename = b.title,
        } }
    end
    return nil
end

-- Parts list -> OpenAI content: a plain string when it is only uncached text (widest provider support), the
-- blocks' texts one per line ("Say hi" + "please" must not become "Say hiplease").
local function parts_to_content(parts)
    local simple = true
    for _, p in ipairs(parts) do
        if p.type ~= "text" or p.cache_control ~= nil then simple = false break end
    end
    if simple then
        local t = {}
        for i, p in ipairs(parts) do t[i] = p.text end
        return concat(t, "\n")
    end
    return parts
end

local function tool_result_text(content)
    if type(content) == "string" then return content end
    if type(content) ~= "table" then return "" end
    local t = {}
    for _, b in ipairs(content) do
        if type(b) == "table" and b.type == "text" and type(b.text) == "string" then t[#t + 1] = b.text end
    end
    return concat(t, "\n")
end

--- Anthropic Messages request -> canonical OpenAI chat request | nil, err.
function _M.to_openai(a)
    if type(a) ~= "table" then return nil, "request body must be a JSON object" end
    if type(a.messages) ~= "table" then return nil, "messages: field required" end
    local msgs = {}
    local sys = nn(a.system)
    if type(sys) == "string" and sys ~= "" then
        msgs[1] = { role = "system", content = sys }
    elseif type(sys) == "table" and #sys > 0 then
        local parts = {}
        for _, b in ipairs(sys) do
            if type(b) == "table" and b.type == "text" then parts[#parts + 1] = block_to_part(b) end -- nil: skipped
        end
        msgs[1] = { role = "system", content = parts_to_content(parts) }
    end
    for _, m in ipairs(a.messages) do
        if type(m) ~= "table" then return nil, "messages: each message must be an object" end
        local role = m.role
        if role ~= "user" and role ~= "assistant" then
            return nil, "messages: role must be user or assistant, got " .. tostring(role)
        end
        local content = m.content
        if type(content) == "string" then
            msgs[#msgs + 1] = { role = role, content = content }
        elseif type(content) == "table" then
            if role == "user" then
                local parts = {}
                for _, b in ipairs(content) do
                    if type(b) == "table" then
                        if b.type == "tool_result" then
                            -- is_error stays a canonical extension: Anthropic, Gemini and Bedrock have a flag
                            -- for it, the OpenAI-wire drivers fold it into the content
                            msgs[#msgs + 1] = { role = "tool", tool_call_id = b.tool_use_id,
                                content = tool_result_text(nn(b.content)), is_error = b.is_error == true or nil }
                        else
                            local p = block_to_part(b)
                            if p then parts[#parts + 1] = p end
                        end
                    end
                end
                if #parts > 0 then msgs[#msgs + 1] = { role = "user", content = parts_to_content(parts) } end
            else
                local text, calls, thinking, signature = {}, {}, {}, nil
                for _, b in ipairs(content) do
                    if type(b) == "table" then
                        if b.type == "text" then
                            if type(b.text) == "string" then text[#text + 1] = b.text end
                        elseif b.type == "tool_use" then
                            calls[#calls + 1] = { id = b.id, type = "function", ["function"] = {
                                name = b.name, arguments = json_encode(b.input or {}) or "{}",
                            } }
                        elseif b.type == "thinking" then
                            thinking[#thinking + 1] = b.thinking
                            signature = b.signature
                        end
                    end
                end
                local msg = { role = "assistant", content = #text > 0 and concat(text, "\n") or null }
                if #calls > 0 then msg.tool_calls = calls end
                if #thinking > 0 then
                    msg.reasoning_content = concat(thinking)
                    msg.reasoning_signature = signature
                end
                msgs[#msgs + 1] = msg
            end
        else
            return nil, "messages: content must be a string or an array of content blocks"
        end
    end

    local o = {
        model = a.model,
        messages = msgs,
        max_tokens = nn(a.max_tokens),
        temperature = nn(a.temperature),
        top_p = nn(a.top_p),
        top_k = nn(a.top_k),
        stream = a.stream == true or nil,
        thinking = type(a.thinking) == "table" and a.thinking or nil,
    }
    local ss = nn(a.stop_sequences)
    if type(ss) == "table" and #ss > 0 then o.stop = ss end
    if type(a.metadata) == "table" and type(a.metadata.user_id) == "string" then o.user = a.metadata.user_id end
    if type(a.tools) == "table" and #a.tools > 0 then
        local tools = {}
        for _, t in ipairs(a.tools) do
            if type(t) == "table" and t.name and (t.type == nil or t.type == "custom") then
                tools[#tools + 1] = {
                    type = "function",
                    ["function"] = { name = t.name, description = t.description, parameters = t.input_schema },
                    cache_control = t.cache_control,
                }
            end
        end
        if #tools > 0 then o.tools = tools end
    end
    local tc = nn(a.tool_choice)
    if type(tc) == "table" then
        if tc.type == "auto" then o.tool_choice = "auto"
        elseif tc.type == "any" then o.tool_choice = "required"
        elseif tc.type == "none" then o.tool_choice = "none"
        elseif tc.type == "tool" then o.tool_choice = { type = "function", ["function"] = { name = tc.name } }
        end
        if tc.disable_parallel_tool_use == true then o.parallel_tool_calls = false end
    end
    return o
end

-- ---------------------------------------------------------------------------------------------------------
-- response: OpenAI -> Anthropic

local function msg_id(id)
    if type(id) == "string" and id:sub(1, 4) == "msg_" then return id end
    if type(id) == "string" and id ~= "" then return "msg_" .. id:gsub("^chatcmpl%-", "") end
    return common.new_id("msg_")
end

--- OpenAI usage -> Anthropic usage (input_tokens excludes the cached ones, as Anthropic reports them).
function _M.anthropic_usage(u)
    u = nn(u)
    if type(u) ~= "table" then return { input_tokens = 0, output_tokens = 0 } end
    local n = common.normalize_usage(u)
    local cached = n.cached_tokens or 0
    local details = nn(u.prompt_tokens_details)
    local created = type(details) == "table" and tonumber(nn(details.cache_creation_tokens)) or 0
    return {
        input_tokens = n.prompt_tokens - cached - created,
        output_tokens = n.completion_tokens,
        cache_read_input_tokens = cached,
        cache_creation_input_tokens = created,
    }
end

function _M.stop_reason(finish_reason)
    finish_reason = nn(finish_reason)
    if finish_reason == nil then return null end
    return common.finish_to_anthropic[finish_reason] or "end_turn"
end

--- Canonical chat.completion -> Anthropic Message.
function _M.from_openai_response(resp)
    local choice = type(resp.choices) == "table" and resp.choices[1] or {}
    local m = type(choice) == "table" and nn(choice.message) or {}
    local content = common.array()
    local rc = nn(m.reasoning_content)
    if type(rc) == "string" and rc ~= "" then
        content[#content + 1] = { type = "thinking", thinking = rc, signature = m.reasoning_signature or "" }
    end
    local text = nn(m.content)
    if type(text) == "table" then text = common.content_text(text) end
    if type(text) == "string" and text ~= "" then
        content[#content + 1] = { type = "text", text = text }
    end
    for _, tc in ipairs(type(nn(m.tool_calls)) == "table" and m.tool_calls or {}) do
        local f = tc["function"] or {}
        local input = type(f.arguments) == "string" and json_decode(f.arguments)
        if type(input) ~= "table" then input = {} end
        content[#content + 1] = { type = "tool_use", id = tc.id or common.new_id("toolu_"), name = f.name,
            input = input }
    end
    local sr = _M.stop_reason(choice.finish_reason)
    if sr == null then sr = "end_turn" end
    return {
        id = msg_id(resp.id),
        type = "message",
        role = "assistant",
        model = resp.model,
        content = content,
        stop_reason = sr,
        stop_sequence = null,
        usage = _M.anthropic_usage(resp.usage),
    }
end

-- ---------------------------------------------------------------------------------------------------------
-- stream: OpenAI chunks -> Anthropic SSE events

local Enc = {}
Enc.__index = Enc

local function event(name, t)
    return sse.encode({ event = name, data = json_encode(t) })
end

local function start(self, chunk, out)
    if self.started then return end
    self.started = true
    local id = self.id or msg_id(chunk and chunk.id)
    self.id = id
    out[#out + 1] = event("message_start", { type = "message_start", message = {
        id = id, type = "message", role = "assistant",
        model = self.model or (chunk and chunk.model) or "",
        content = common.array(), stop_reason = null, stop_sequence = null,
        usage = { input_tokens = self.input_tokens or 0, output_tokens = 0 },
    } })
    out[#out + 1] = event("ping", { type = "ping" })
end

local function close_block(self, out)
    if self.block then
        out[#out + 1] = event("content_block_stop", { type = "content_block_stop", index = self.index })
        self.block = nil
    end
end

local function open_block(self, kind, block, out)
    close_block(self, out)
    self.index = self.index + 1
    self.block = kind
    out[#out + 1] = event("content_block_start", { type = "content_block_start", index = self.index,
        content_block = block })
end

local function stop(self, out)
    if self.stopped then return end
    self.stopped = true
    close_block(self, out)
    local u = self.usage and _M.anthropic_usage(self.usage) or { output_tokens = 0 }
    out[#out + 1] = event("message_delta", { type = "message_delta",
        delta = { stop_reason = self.stop_reason or "end_turn", stop_sequence = null },
        usage = u })
    out[#out + 1] = event("message_stop", { type = "message_stop" })
end

--- One canonical chunk -> the Anthropic events it implies (string, possibly "").
function Enc:chunk(c)
    local out = {}
    if type(c) ~= "table" or self.stopped then return "" end
    if c.error then
        return self:error(c.error.status, c.error.message, c.error.type)
    end
    start(self, c, out)
    if type(c.model) == "string" and c.model ~= "" then self.model = self.model or c.model end
    local u = nn(c.usage)
    if type(u) == "table" then self.usage = u end
    local choice = type(c.choices) == "table" and c.choices[1] or nil
    if type(choice) == "table" then
        local d = nn(choice.delta) or {}
        local rc = nn(d.reasoning_content)
        if type(rc) == "string" and rc ~= "" then
            if self.block ~= "thinking" then
                open_block(self, "thinking", { type = "thinking", thinking = "", signature = "" }, out)
            end
            out[#out + 1] = event("content_block_delta", { type = "content_block_delta", index = self.index,
                delta = { type = "thinking_delta", thinking = rc } })
        end
        local text = nn(d.content)
        if type(text) == "string" and text ~= "" then
            if self.block ~= "text" then
                open_block(self, "text", { type = "text", text = "" }, out)
            end
            out[#out + 1] = event("content_block_delta", { type = "content_block_delta", index = self.index,
                delta = { type = "text_delta", text = text } })
        end
        local tcs = nn(d.tool_calls)
        if type(tcs) == "table" then
            for _, tc in ipairs(tcs) do
                local f = nn(tc["function"]) or {}
                local ti = tonumber(nn(tc.index)) or 0
                if self.block ~= "tool" or self.tool ~= ti or (nn(tc.id) and tc.id ~= self.tool_id) then
                    self.tool, self.tool_id = ti, nn(tc.id)
                    open_block(self, "tool", { type = "tool_use", id = nn(tc.id) or common.new_id("toolu_"),
                        name = nn(f.name) or "", input = {} }, out)
                end
                local args = nn(f.arguments)
                if type(args) == "string" and args ~= "" then
                    out[#out + 1] = event("content_block_delta", { type = "content_block_delta",
                        index = self.index, delta = { type = "input_json_delta", partial_json = args } })
                end
            end
        end
        local fr = nn(choice.finish_reason)
        if fr then
            close_block(self, out)
            self.stop_reason = common.finish_to_anthropic[fr] or "end_turn"
            self.finished = true
        end
    end
    if self.finished and self.usage then
        stop(self, out)
    end
    return concat(out)
end

--- Closing events if the stream ended without them (string, possibly "").
function Enc:finish()
    local out = {}
    if not self.stopped then
        start(self, nil, out)
        stop(self, out)
    end
    return concat(out)
end

--- An Anthropic stream "error" event; ends the encoder.
function Enc:error(status, message, typ)
    self.stopped = true
    local b = common.error_body("anthropic", status or 500, message or "upstream error", typ)
    return event("error", b)
end

function _M.stream_encoder(opts)
    opts = opts or {}
    return setmetatable({
        started = false, stopped = false, finished = false, block = nil, index = -1,
        id = opts.id, model = opts.model, input_tokens = opts.input_tokens,
    }, Enc)
end

return _M
