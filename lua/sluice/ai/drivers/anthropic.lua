-- sluice.ai.drivers.anthropic: Anthropic Messages API (POST /v1/messages) behind the canonical OpenAI format.
--
-- Request: system/developer messages -> `system`; user/assistant content parts -> content blocks (text, image
-- base64/url, document); assistant tool_calls -> tool_use blocks; role "tool" messages -> tool_result blocks
-- in one user turn; tools/tool_choice/parallel_tool_calls; stop -> stop_sequences; max_tokens defaulted
-- (Anthropic requires it); response_format -> a system instruction (no native JSON mode).
-- Response/stream: content blocks -> message content / tool_calls / reasoning_content, stop_reason ->
-- finish_reason, usage with cache tokens (prompt_tokens = input + cache_read + cache_creation, like OpenAI's
-- prompt_tokens which include cached ones).
local common = require("sluice.ai.common")
local sse = require("sluice.ai.sse")
local stream_base = require("sluice.ai.common.stream_base")
local content_mod = require("sluice.ai.common.content")
local params = require("sluice.ai.common.params")

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local concat = table.concat
local json_encode, json_decode, nn, null = common.json_encode, common.json_decode, common.nn, common.null

local _M = { kind = "anthropic" }

local DEFAULT_VERSION = "2023-06-01"
local DEFAULT_MAX_TOKENS = 4096

-- The chat parameters this driver translates; others are dropped (or refused: options.drop_params = false).
local ACCEPTS = params.set(params.BASE, { "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "stop", "tools", "tool_choice", "parallel_tool_calls", "user", "response_format", "thinking" })

-- ---------------------------------------------------------------------------------------------------------
-- request: OpenAI -> Anthropic

local function image_block(url)
    local mime, data = common.parse_data_url(url)
    if mime then
        return { type = "image", source = { type = "base64", media_type = mime, data = data } }
    end
    return { type = "image", source = { type = "url", url = url } }
end

-- Anthropic blocks a client of the Anthropic API sent, passed through by sluice.ai.anthropic_api.
local NATIVE = { image = true, document = true, tool_result = true, tool_use = true }

-- OpenAI content (string | parts) -> Anthropic blocks (list; may be empty).
local function to_blocks(content)
    local blocks = {}
    for _, p in ipairs(content_mod.parts(content)) do
        local b
        if p.type == "text" then
            -- "text content blocks must contain non-whitespace text"
            if p.text:find("%S") then b = { type = "text", text = p.text } end
        elseif p.type == "image" then
            b = image_block(p.url)
        elseif p.type == "file" then
            if p.mime then
                b = { type = "document", source = { type = "base64", media_type = p.mime, data = p.data } }
            end
        elseif p.type == "other" and NATIVE[p.part.type] then
            b = p.part
        end
        if b then
            if p.cache_control ~= nil and b ~= p.part then b.cache_control = p.cache_control end
            blocks[#blocks + 1] = b
        end
    end
    return blocks
end

local function tool_result_content(content)
    if type(content) == "string" then return content end
    local blocks = to_blocks(content)
    if #blocks == 0 then return "" end
    return blocks
end

local function map_tool_choice(tc, parallel)
    local r
    if tc == "auto" then r = { type = "auto" }
    elseif tc == "none" then r = { type = "none" }
    elseif tc == "required" then r = { type = "any" }
    elseif type(tc) == "table" and type(tc["function"]) == "table" then
        r = { type = "tool", name = tc["function"].name }
    end
    if parallel == false then
        r = r or { type = "auto" }
        if r.type ~= "none" then r.disable_parallel_tool_use = true end
    end
    return r
end

--- Canonical OpenAI chat request -> Anthropic Messages request table | nil, err.
function _M.to_anthropic_request(provider, body, opts)
    provider, opts = provider or {}, opts or {}
    local options = provider.options or {}
    local ok, perr = params.check("anthropic", provider, body, ACCEPTS)
    if not ok then return nil, perr end
    local out = {
        model = body.model,
        max_tokens = tonumber(nn(body.max_tokens)) or tonumber(nn(body.max_completion_tokens))
            or tonumber(options.max_tokens) or DEFAULT_MAX_TOKENS,
    }
    local system, system_cached = {}, false
    local messages = {}
    local last -- last Anthropic message
    local function push(role, blocks)
        if #blocks == 0 then return end
        if last and last.role == role then
            for _, b in ipairs(blocks) do last.content[#last.content + 1] = b end
        else
            last = { role = role, content = blocks }
            messages[#messages + 1] = last
        end
    end
    if type(body.messages) ~= "table" then return nil, "anthropic: messages must be an array" end
    for _, m in ipairs(body.messages) do
        if type(m) ~= "table" then return nil, "anthropic: each message must be an object" end
        local role = m.role
        if role == "system" or role == "developer" then
            for _, b in ipairs(to_blocks(m.content)) do
                if b.type == "text" then
                    if b.cache_control then system_cached = true end
                    system[#system + 1] = b
                end
            end
        elseif role == "user" then
            push("user", to_blocks(m.content))
        elseif role == "assistant" then
            local blocks = {}
            local rc = nn(m.reasoning_content)
            if type(rc) == "string" and rc ~= "" and type(m.reasoning_signature) == "string" then
                blocks[#blocks + 1] = { type = "thinking", thinking = rc, signature = m.reasoning_signature }
            end
            for _, b in ipairs(to_blocks(nn(m.content))) do blocks[#blocks + 1] = b end
            if type(m.tool_calls) == "table" then
                for _, tc in ipairs(m.tool_calls) do
                    local f = tc["function"] or {}
                    local input = content_mod.tool_args(tc)
                    blocks[#blocks + 1] = { type = "tool_use", id = content_mod.call_id(tc.id), name = f.name,
                                            input = input }
                end
            end
            push("assistant", blocks)
        elseif role == "tool" or role == "function" then
            local block = {
                type = "tool_result",
                tool_use_id = content_mod.call_id(m.tool_call_id) or m.name,
                content = tool_result_content(nn(m.content)),
            }
            if m.is_error then block.is_error = true end
            push("user", { block })
        else
            return nil, "anthropic: unsupported message role " .. tostring(role)
        end
    end
    -- a user turn must start with its tool_result blocks
    for _, msg in ipairs(messages) do
        if msg.role == "user" then
            local results, others = {}, {}
            for _, b in ipairs(msg.content) do
                if b.type == "tool_result" then results[#results + 1] = b else others[#others + 1] = b end
            end
            if #results > 0 and #others > 0 then
                for _, b in ipairs(others) do results[#results + 1] = b end
                msg.content = results
            end
        end
    end
    if #messages == 0 then return nil, "anthropic: the request has no message with content" end
    -- "final assistant content cannot end with trailing whitespace"
    local final = messages[#messages]
    if final.role == "assistant" then
        local b = final.content[#final.content]
        if b.type == "text" then
            local trimmed = b.text:gsub("%s+$", "")
            if trimmed == "" then
                table.remove(final.content)
                if #final.content == 0 then messages[#messages] = nil end
                if #messages == 0 then return nil, "anthropic: the request has no message with content" end
            elseif trimmed ~= b.text then
                final.content[#final.content] = common.shallow_copy(b)
                final.content[#final.content].text = trimmed
            end
        end
    end
    out.messages = messages

    local rf = common.response_format_instruction(nn(body.response_format))
    if rf then system[#system + 1] = { type = "text", text = rf } end
    if #system == 1 and not system_cached then
        out.system = system[1].text
    elseif #system > 0 then
        out.system = system
    end

    if nn(body.temperature) ~= nil then
        local t = tonumber(body.temperature)
        out.temperature = t and (t > 1 and 1 or t) or nil
    end
    out.top_p = nn(body.top_p)
    out.top_k = nn(body.top_k)
    out.stop_sequences = common.stop_list(nn(body.stop))
    if type(body.tools) == "table" and #body.tools > 0 then
        local tools = {}
        for _, t in ipairs(body.tools) do
            if type(t) == "table" and t.type == "function" and type(t["function"]) == "table" then
                local f = t["function"]
                local schema = nn(f.parameters)
                if type(schema) ~= "table" then schema = { type = "object", properties = {} } end
                tools[#tools + 1] = {
                    name = f.name, description = nn(f.description), input_schema = schema,
                    cache_control = t.cache_control,
                }
            elseif type(t) == "table" and t.type ~= "function" and t.name then
                tools[#tools + 1] = t -- Anthropic server tool passed through
            end
        end
        out.tools = tools
    end
    out.tool_choice = map_tool_choice(nn(body.tool_choice), nn(body.parallel_tool_calls))
    if type(body.user) == "string" then out.metadata = { user_id = body.user } end
    if type(body.thinking) == "table" then out.thinking = body.thinking end
    if opts.stream then out.stream = true end
    return out
end

function _M.build_request(provider, op, body, opts)
    opts = opts or {}
    provider = provider or {}
    if op ~= "chat" and op ~= nil then
        return nil, "anthropic: unsupported operation " .. tostring(op) .. " (only chat)"
    end
    if type(body) ~= "table" then return nil, "anthropic: request body must be a table" end
    local ep, err = common.parse_endpoint(provider.endpoint or "https://api.anthropic.com")
    if not ep then return nil, "anthropic: " .. err end
    local stream = opts.stream
    if stream == nil then stream = body.stream == true end
    local a
    a, err = _M.to_anthropic_request(provider, body, { stream = stream })
    if not a then return nil, err end
    local encoded
    encoded, err = json_encode(a)
    if not encoded then return nil, "anthropic: cannot encode body: " .. tostring(err) end
    local headers = {
        ["Host"] = common.host_header(ep),
        ["Content-Type"] = "application/json",
        ["Accept"] = stream and "text/event-stream" or "application/json",
        ["anthropic-version"] = provider.api_version or DEFAULT_VERSION,
    }
    if provider.api_key and provider.api_key ~= "" then headers["x-api-key"] = provider.api_key end
    local beta = provider.options and provider.options.beta
    if type(beta) == "table" then beta = concat(beta, ",") end
    if type(beta) == "string" and beta ~= "" then headers["anthropic-beta"] = beta end
    common.extra_headers(provider, headers)
    return {
        method = "POST", scheme = ep.scheme, host = ep.host, port = ep.port,
        path = (ep.base ~= "" and ep.base or "/v1") .. "/messages",
        headers = headers, body = encoded, stream = stream,
    }
end

-- ---------------------------------------------------------------------------------------------------------
-- response: Anthropic -> OpenAI

--- Anthropic usage -> OpenAI usage table.
function _M.openai_usage(u)
    if type(u) ~= "table" then return nil end
    local input = tonumber(nn(u.input_tokens)) or 0
    local read = tonumber(nn(u.cache_read_input_tokens)) or 0
    local write = tonumber(nn(u.cache_creation_input_tokens)) or 0
    local output = tonumber(nn(u.output_tokens)) or 0
    local r = common.openai_usage(input + read + write, output)
    r.prompt_tokens_details = { cached_tokens = read }
    if write > 0 then r.prompt_tokens_details.cache_creation_tokens = write end
    return r
end

function _M.parse_response(status, headers, body, op)
    status = tonumber(status) or 0
    if status < 200 or status > 299 then
        return nil, _M.parse_error(status, headers, body)
    end
    local m, err = json_decode(body)
    if type(m) ~= "table" then
        return nil, common.bad_upstream("anthropic: invalid JSON response: " .. tostring(err))
    end
    if m.type == "error" then
        return nil, _M.parse_error(500, headers, m)
    end
    local text, reasoning, signature, calls = {}, {}, nil, {}
    for _, b in ipairs(type(m.content) == "table" and m.content or {}) do
        if b.type == "text" then
            text[#text + 1] = b.text
        elseif b.type == "tool_use" then
            calls[#calls + 1] = {
                id = b.id, type = "function",
                ["function"] = { name = b.name, arguments = json_encode(b.input or {}) or "{}" },
            }
        elseif b.type == "thinking" then
            reasoning[#reasoning + 1] = b.thinking
            signature = b.signature
        end
    end
    local message = { role = "assistant", content = #text > 0 and concat(text) or null }
    if #calls > 0 then message.tool_calls = calls end
    if #reasoning > 0 then
        message.reasoning_content = concat(reasoning)
        message.reasoning_signature = signature
    end
    return {
        id = m.id,
        object = "chat.completion",
        created = os.time(),
        model = m.model,
        choices = { {
            index = 0,
            message = message,
            finish_reason = common.anthropic_to_finish[nn(m.stop_reason) or "end_turn"] or "stop",
            logprobs = null,
        } },
        usage = _M.openai_usage(m.usage),
    }
end

function _M.usage(resp)
    return type(resp) == "table" and common.normalize_usage(resp.usage) or nil
end

--- {"type":"error","error":{"type","message"}} -> {status, type, message, code, retry_after}
function _M.parse_error(status, headers, body)
    local t = type(body) == "string" and json_decode(body) or (type(body) == "table" and body) or nil
    local e = type(t) == "table" and nn(t.error) or nil
    if type(e) ~= "table" then
        return common.generic_error(status, headers, body, "anthropic")
    end
    local typ = nn(e.type)
    local st = tonumber(status)
    if not st or st < 400 then
        st = ({ overloaded_error = 529, rate_limit_error = 429, invalid_request_error = 400,
            authentication_error = 401, permission_error = 403, not_found_error = 404,
            request_too_large = 413 })[typ] or 500
    end
    return {
        status = st,
        type = typ or common.anthropic_error_type(st),
        message = tostring(nn(e.message) or ("HTTP " .. tostring(st))),
        code = typ,
        retry_after = common.retry_after(headers),
    }
end

-- ---------------------------------------------------------------------------------------------------------
-- stream: Anthropic SSE events -> OpenAI chunks

local function handle(self, ev, out)
    local t = json_decode(ev.data)
    if type(t) ~= "table" then
        if ev.data ~= "" then
            out[#out + 1] = stream_base.error_item("invalid JSON in upstream stream")
            self.failed = true
        end
        return
    end
    local typ = t.type or ev.event
    local st = self.state
    if typ == "message_start" then
        local m = t.message or {}
        st.id = m.id or st.id
        st.model = m.model or st.model
        self.raw_usage = {}
        for k, v in pairs(type(m.usage) == "table" and m.usage or {}) do self.raw_usage[k] = v end
        out[#out + 1] = common.chunk(st, { role = "assistant", content = "" })
    elseif typ == "content_block_start" then
        local b = t.content_block or {}
        if b.type == "tool_use" then
            local ti = self.ntools
            self.ntools = ti + 1
            self.tool_index[t.index] = ti
            out[#out + 1] = common.chunk(st, { tool_calls = { {
                index = ti, id = b.id, type = "function",
                ["function"] = { name = b.name, arguments = "" },
            } } })
        elseif b.type == "text" and type(b.text) == "string" and b.text ~= "" then
            out[#out + 1] = common.chunk(st, { content = b.text })
        end
    elseif typ == "content_block_delta" then
        local d = t.delta or {}
        if d.type == "text_delta" then
            out[#out + 1] = common.chunk(st, { content = d.text })
        elseif d.type == "input_json_delta" then
            local ti = self.tool_index[t.index]
            if ti and d.partial_json ~= "" then
                out[#out + 1] = common.chunk(st, { tool_calls = { {
                    index = ti, ["function"] = { arguments = d.partial_json },
                } } })
            end
        elseif d.type == "thinking_delta" then
            out[#out + 1] = common.chunk(st, { reasoning_content = d.thinking })
        end -- signature_delta, citations_delta: nothing to say in OpenAI terms
    elseif typ == "message_delta" then
        local d = t.delta or {}
        local u = t.usage
        if type(u) == "table" then
            for k, v in pairs(u) do if nn(v) ~= nil then self.raw_usage[k] = v end end
        end
        local sr = nn(d.stop_reason)
        if sr then
            self.finish_reason = common.anthropic_to_finish[sr] or "stop"
            out[#out + 1] = common.chunk(st, {}, self.finish_reason)
        end
    elseif typ == "message_stop" then
        local u = _M.openai_usage(self.raw_usage or {})
        self.usage = common.normalize_usage(u)
        out[#out + 1] = common.usage_chunk(st, u)
        self.done = true
    elseif typ == "error" then
        local e = _M.parse_error(nil, nil, t)
        out[#out + 1] = { error = e }
        self.failed = true
    end -- ping and unknown event types: ignored (Anthropic's versioning policy allows new ones)
end

local Stream = stream_base.class(handle)

function _M.new_stream(op, opts)
    opts = opts or {}
    return stream_base.new(Stream, sse.parser(), {
        state = { id = "msg", created = opts.created or os.time(), model = opts.model },
        tool_index = {},
        ntools = 0,
        raw_usage = {},
    })
end

return _M
