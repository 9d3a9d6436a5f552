-- sluice.cache.capture: the answer a client got, as ai-cache saw it pass (body_filter), turned into the cache's
-- one format: an OpenAI chat.completion (JSON text). Only a whole answer becomes an entry: a stream must have its
-- end ([DONE] for OpenAI, message_stop for Anthropic) and no error event; a body must be a chat.completion or a
-- Message.
--
--   local value, why = capture.entry(api, stream, body, rec, allow_tools)
--     api: the client's API ("openai" | "anthropic"); stream: whether body is SSE; body: every byte sent;
--     rec: the usage record (fills in the usage when the client did not get it, e.g. a stream without
--     include_usage); allow_tools: keep answers that call tools.
--   -> the value to store, or nil and why not
-- The OpenAI non-streaming body is kept byte for byte (a later OpenAI hit sends it as it is); the others are
-- parsed with the AI runtime's own readers (sluice.ai.sse, the anthropic driver's response and stream parsers)
-- and assembled.
local common = require("sluice.ai.common")
local sse = require("sluice.ai.sse")
local cjson = require("cjson.safe")

local type, ipairs, tonumber, require = type, ipairs, tonumber, require
local find, byte = string.find, string.byte
local concat = table.concat
local decode = cjson.decode
local json_encode, nn, null = common.json_encode, common.nn, common.null

local _M = {}

-- True when s has a "usage" member with an object value (what sluice.ai.usage.scan_usage reads), found by plain
-- search without decoding it: a quote inside a JSON string is escaped, so '"usage"' then ':' can only be a key.
local function has_usage(s)
    local from = 1
    while true do
        local _, e = find(s, '"usage"', from, true)
        if not e then
            return false
        end
        local k = e + 1
        local c = byte(s, k)
        while c == 32 or c == 9 or c == 13 or c == 10 do k = k + 1; c = byte(s, k) end -- byte loops: JIT-compiled
        if c == 58 then -- ':'
            k = k + 1
            c = byte(s, k)
            while c == 32 or c == 9 or c == 13 or c == 10 do k = k + 1; c = byte(s, k) end
            if c == 123 then -- '{'
                return true
            end
        end
        from = e + 1
    end
end

local anthropic_driver
local function anthropic()
    anthropic_driver = anthropic_driver or require("sluice.ai.drivers.anthropic")
    return anthropic_driver
end

-- The usage of the record, in OpenAI shape (when the answer carried none).
local function record_usage(rec)
    if type(rec) ~= "table" then return nil end
    return common.openai_usage(tonumber(rec.prompt_tokens) or 0, tonumber(rec.completion_tokens) or 0,
        rec.cached_tokens, rec.reasoning_tokens)
end

local function has_tool_calls(t)
    local ch = type(t) == "table" and t.choices
    if type(ch) ~= "table" then return false end
    for _, c in ipairs(ch) do
        local m = type(c) == "table" and nn(c.message)
        local tc = type(m) == "table" and nn(m.tool_calls)
        if type(tc) == "table" and #tc > 0 then return true end
    end
    return false
end

local function is_completion(t)
    return type(t) == "table" and type(t.choices) == "table" and type(t.choices[1]) == "table"
        and type(nn(t.choices[1].message)) == "table"
end

-- A completion table -> value (usage filled in from rec when missing), or nil, why.
local function finish(t, rec, allow_tools)
    if not is_completion(t) then
        return nil, "not a chat completion"
    end
    if #t.choices ~= 1 then
        return nil, "several choices"
    end
    if not allow_tools and has_tool_calls(t) then
        return nil, "tool calls"
    end
    if type(nn(t.usage)) ~= "table" then
        t.usage = record_usage(rec)
    end
    return (json_encode(t))
end

--- Canonical chunks -> a chat.completion table, or nil, why (no finish reason: not a whole answer).
function _M.assemble(chunks)
    local id, created, model, fp, fr, u
    local text, reasoning, calls = {}, {}, {}
    for _, c in ipairs(chunks) do
        if type(c) == "table" then
            if c.error then
                return nil, "error event"
            end
            id = id or nn(c.id)
            created = created or nn(c.created)
            model = model or nn(c.model)
            fp = fp or nn(c.system_fingerprint)
            local cu = nn(c.usage)
            if type(cu) == "table" then u = cu end
            local ch = nn(c.choices)
            local choice = type(ch) == "table" and ch[1] or nil
            if type(choice) == "table" then
                if (tonumber(nn(choice.index)) or 0) ~= 0 then
                    return nil, "several choices"
                end
                local d = nn(choice.delta)
                if type(d) == "table" then
                    local s = nn(d.content)
                    if type(s) == "string" then text[#text + 1] = s end
                    s = nn(d.reasoning_content)
                    if type(s) == "string" then reasoning[#reasoning + 1] = s end
                    local tcs = nn(d.tool_calls)
                    if type(tcs) == "table" then
                        for _, tc in ipairs(tcs) do
                            local i = (tonumber(nn(tc.index)) or 0) + 1
                            local call = calls[i]
                            if not call then
                                call = { type = "function", ["function"] = { name = "", arguments = {} } }
                                calls[i] = call
                            end
                            local f = nn(tc["function"]) or {}
                            if nn(tc.id) then call.id = tc.id end
                            if type(nn(f.name)) == "string" and f.name ~= "" then call["function"].name = f.name end
                            if type(nn(f.arguments)) == "string" then
                                local a = call["function"].arguments
                                a[#a + 1] = f.arguments
                            end
                        end
                    end
                end
                local f = nn(choice.finish_reason)
                if f then fr = f end
            end
        end
    end
    if not fr then
        return nil, "no finish reason"
    end
    local msg = { role = "assistant", content = #text > 0 and concat(text) or null }
    if #reasoning > 0 then msg.reasoning_content = concat(reasoning) end
    if #calls > 0 then
        local list = {}
        for i = 1, #calls do
            local call = calls[i]
            if not call then return nil, "tool call indexes with a gap" end
            call["function"].arguments = concat(call["function"].arguments)
            list[i] = call
        end
        msg.tool_calls = list
    end
    return { id = id, object = "chat.completion", created = created or 0, model = model or "",
             system_fingerprint = fp, choices = { { index = 0, message = msg, finish_reason = fr, logprobs = null } },
             usage = u }
end

-- OpenAI SSE (as a client got it) -> chunks, or nil, why.
local function openai_chunks(body)
    local p = sse.parser()
    local evs = p:feed(body)
    local tail = p:finish()
    if type(evs) ~= "table" or p.err then
        return nil, "unreadable stream"
    end
    for _, ev in ipairs(tail or {}) do evs[#evs + 1] = ev end
    local chunks, done = {}, false
    for _, ev in ipairs(evs) do
        local data = ev.data
        if data == "[DONE]" then
            done = true
        elseif done then
            return nil, "events after [DONE]"
        elseif data and data ~= "" then
            local t = decode(data)
            if type(t) ~= "table" or ev.event == "error" or nn(t.error) ~= nil then
                return nil, "error event"
            end
            chunks[#chunks + 1] = t
        end
    end
    if not done then
        return nil, "no [DONE]"
    end
    return chunks
end

-- Anthropic SSE -> canonical chunks (the anthropic driver's stream reader), or nil, why.
local function anthropic_chunks(body)
    local s = anthropic().new_stream("chat")
    local chunks = s:feed(body)
    local stopped = s.done -- message_stop seen (finish() below says done whatever came)
    local tail = s:finish()
    for _, c in ipairs(tail) do chunks[#chunks + 1] = c end
    if s.failed then
        return nil, "error event"
    end
    if not stopped then
        return nil, "no message_stop"
    end
    return chunks
end

--- See the top of this file.
function _M.entry(api, stream, body, rec, allow_tools)
    if type(body) ~= "string" or body == "" then
        return nil, "empty"
    end
    if stream then
        local chunks, why
        if api == "anthropic" then
            chunks, why = anthropic_chunks(body)
        else
            chunks, why = openai_chunks(body)
        end
        if not chunks then return nil, why end
        local t
        t, why = _M.assemble(chunks)
        if not t then return nil, why end
        return finish(t, rec, allow_tools)
    end
    if api == "anthropic" then
        local t, err = anthropic().parse_response(200, nil, body, "chat")
        if not t then
            return nil, type(err) == "table" and err.message or "not a Message"
        end
        return finish(t, rec, allow_tools)
    end
    -- OpenAI: kept byte for byte unless something must be looked at or added
    local with_usage = has_usage(body)
    if not with_usage or find(body, '"tool_calls"', 1, true) or not find(body, '"choices"', 1, true) then
        local t = decode(body)
        if type(t) ~= "table" then
            return nil, "not JSON"
        end
        local value, why = finish(t, rec, allow_tools)
        if not value then return nil, why end
        if with_usage then
            return body -- looked at (tool calls allowed), nothing added
        end
        return value
    end
    return body
end

return _M
