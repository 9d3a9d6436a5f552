-- sluice.ai.common.chunks: the canonical (OpenAI Chat Completions) answer as drivers produce it: finish
-- reasons of each provider, usage tables, chat.completion.chunk tables and their SSE form, ids.
local json = require("sluice.ai.common.json")

local type, tonumber = type, tonumber
local concat = table.concat
local random = math.random
local sub = string.sub
local nn, null = json.nn, json.null

local _M = {}

_M.anthropic_to_finish = {
    end_turn = "stop", stop_sequence = "stop", max_tokens = "length", tool_use = "tool_calls",
    pause_turn = "stop", refusal = "content_filter", model_context_window_exceeded = "length",
}
_M.finish_to_anthropic = {
    stop = "end_turn", length = "max_tokens", tool_calls = "tool_use", function_call = "tool_use",
    content_filter = "refusal",
}
_M.gemini_to_finish = {
    STOP = "stop", MAX_TOKENS = "length", SAFETY = "content_filter", RECITATION = "content_filter",
    BLOCKLIST = "content_filter", PROHIBITED_CONTENT = "content_filter", SPII = "content_filter",
    IMAGE_SAFETY = "content_filter", LANGUAGE = "content_filter", MALFORMED_FUNCTION_CALL = "stop",
    OTHER = "stop", FINISH_REASON_UNSPECIFIED = "stop",
}
_M.bedrock_to_finish = {
    end_turn = "stop", stop_sequence = "stop", max_tokens = "length", tool_use = "tool_calls",
    guardrail_intervened = "content_filter", content_filtered = "content_filter",
    model_context_window_exceeded = "length",
}

local ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
--- A random id: prefix .. n alphanumerics (default 24).
function _M.new_id(prefix, n)
    local out = {}
    for i = 1, n or 24 do
        local r = random(1, #ID_CHARS)
        out[i] = sub(ID_CHARS, r, r)
    end
    return (prefix or "") .. concat(out)
end

--- Normalizes an OpenAI-shape usage table -> {prompt_tokens, completion_tokens, total_tokens, cached_tokens?,
--- reasoning_tokens?} | nil.
function _M.normalize_usage(u)
    u = nn(u)
    if type(u) ~= "table" then return nil end
    local p = tonumber(nn(u.prompt_tokens)) or 0
    local c = tonumber(nn(u.completion_tokens)) or 0
    local r = {
        prompt_tokens = p,
        completion_tokens = c,
        total_tokens = tonumber(nn(u.total_tokens)) or (p + c),
    }
    local pd, cd = nn(u.prompt_tokens_details), nn(u.completion_tokens_details)
    if type(pd) == "table" and tonumber(nn(pd.cached_tokens)) then
        r.cached_tokens = tonumber(pd.cached_tokens)
    elseif tonumber(nn(u.prompt_cache_hit_tokens)) then -- DeepSeek
        r.cached_tokens = tonumber(u.prompt_cache_hit_tokens)
    end
    if type(cd) == "table" and tonumber(nn(cd.reasoning_tokens)) then
        r.reasoning_tokens = tonumber(cd.reasoning_tokens)
    end
    return r
end

--- Builds an OpenAI-shape usage table from normalized numbers.
function _M.openai_usage(prompt, completion, cached, reasoning)
    prompt, completion = prompt or 0, completion or 0
    local u = { prompt_tokens = prompt, completion_tokens = completion, total_tokens = prompt + completion }
    if cached then u.prompt_tokens_details = { cached_tokens = cached } end
    if reasoning then u.completion_tokens_details = { reasoning_tokens = reasoning } end
    return u
end

--- A chat.completion.chunk with one choice. finish_reason nil -> JSON null.
function _M.chunk(state, delta, finish_reason)
    return {
        id = state.id,
        object = "chat.completion.chunk",
        created = state.created,
        model = state.model,
        choices = { { index = 0, delta = delta or {}, finish_reason = finish_reason or null, logprobs = null } },
    }
end

--- The final usage chunk (choices: []), as OpenAI sends with stream_options.include_usage.
function _M.usage_chunk(state, usage)
    return {
        id = state.id,
        object = "chat.completion.chunk",
        created = state.created,
        model = state.model,
        choices = json.array(),
        usage = usage,
    }
end

--- "data: {...}\n\n"
function _M.encode_chunk_sse(chunk)
    return "data: " .. (json.json_encode(chunk) or "{}") .. "\n\n"
end

function _M.done_sse()
    return "data: [DONE]\n\n"
end

return _M
