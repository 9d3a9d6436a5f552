-- sluice.cache.replay: a stored answer (an OpenAI chat.completion, the cache's one format) told again in the
-- client's API, with the AI runtime's own encoders, so a hit reads like any answer of the gateway:
--
--   replay.body(api, stored, t)          -- non-streaming body: the stored bytes for OpenAI, the Message for
--                                        -- Anthropic (sluice.ai.anthropic_api.from_openai_response)
--   replay.stream(api, t, opts)          -- the whole SSE body: OpenAI chunks (role, reasoning, content, tool
--                                        -- calls, finish, the usage chunk when opts.include_usage) and
--                                        -- data: [DONE]; Anthropic message_start .. message_stop through
--                                        -- sluice.ai.anthropic_api's stream encoder (opts.model: the name the
--                                        -- client asked for, as the live stream says it)
--   replay.chunks(t)                     -- the canonical chunks of t, and its usage chunk (nil without usage)
local common = require("sluice.ai.common")
local anthropic_api = require("sluice.ai.anthropic_api")

local type, ipairs = type, ipairs
local concat = table.concat
local json_encode, nn, null = common.json_encode, common.nn, common.null
local chunk, usage_chunk, encode_chunk_sse, done_sse = common.chunk, common.usage_chunk, common.encode_chunk_sse,
    common.done_sse

local _M = {}

--- Canonical chat.completion.chunk tables for completion t (one choice), and the usage chunk (or nil).
function _M.chunks(t)
    local st = { id = nn(t.id) or common.new_id("chatcmpl-"), created = nn(t.created) or 0, model = nn(t.model) or "" }
    local choice = type(t.choices) == "table" and t.choices[1] or {}
    local m = type(choice) == "table" and nn(choice.message) or {}
    if type(m) ~= "table" then m = {} end
    local out = { chunk(st, { role = "assistant", content = "" }) }
    local rc = nn(m.reasoning_content)
    if type(rc) == "string" and rc ~= "" then
        out[#out + 1] = chunk(st, { reasoning_content = rc })
    end
    local text = nn(m.content)
    if type(text) == "table" then
        text = common.content_text(text)
    end
    if type(text) == "string" and text ~= "" then
        out[#out + 1] = chunk(st, { content = text })
    end
    local calls = nn(m.tool_calls)
    if type(calls) == "table" then
        for i, tc in ipairs(calls) do
            local f = type(tc) == "table" and nn(tc["function"]) or {}
            out[#out + 1] = chunk(st, { tool_calls = { {
                index = i - 1, id = nn(tc.id), type = "function",
                ["function"] = { name = nn(f.name) or "", arguments = nn(f.arguments) or "" },
            } } })
        end
    end
    local fr = type(choice) == "table" and nn(choice.finish_reason) or nil
    out[#out + 1] = chunk(st, {}, fr or "stop")
    local u = nn(t.usage)
    local uc = type(u) == "table" and usage_chunk(st, u) or nil
    if uc and nn(t.system_fingerprint) then
        uc.system_fingerprint = t.system_fingerprint
    end
    if nn(t.system_fingerprint) then
        for _, c in ipairs(out) do c.system_fingerprint = t.system_fingerprint end
    end
    return out, uc
end

--- The non-streaming body for api: stored (the bytes as kept) for OpenAI, else from the decoded t.
function _M.body(api, stored, t)
    if api ~= "anthropic" then
        return stored
    end
    return json_encode(anthropic_api.from_openai_response(t))
end

--- The SSE body of a streamed answer in api's format.
function _M.stream(api, t, opts)
    opts = opts or {}
    local chunks, uc = _M.chunks(t)
    local out = {}
    if api == "anthropic" then
        local enc = anthropic_api.stream_encoder({ model = opts.model })
        for i = 1, #chunks do
            out[#out + 1] = enc:chunk(chunks[i])
        end
        if uc then
            out[#out + 1] = enc:chunk(uc)
        end
        out[#out + 1] = enc:finish()
        return concat(out)
    end
    for i = 1, #chunks do
        out[i] = encode_chunk_sse(chunks[i])
    end
    if uc and opts.include_usage then
        out[#out + 1] = encode_chunk_sse(uc)
    end
    out[#out + 1] = done_sse()
    return concat(out)
end

_M.null = null

return _M
