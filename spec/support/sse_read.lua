-- Reading streamed AI answers in specs: the events of an SSE body and what a client SDK would make of them.
--
--   local sse_read = require("support.sse_read")
--   local evs = sse_read.events(res.body)                  -- {{name, data (string), json (table | nil)}, ...}
--   local a = sse_read.openai(evs)     --> {text, finish_reason, tool_args, done, chunks}   (asserts well-formedness)
--   local b = sse_read.anthropic(evs)  --> {text, stop_reason, tool_json, blocks}
local cjson = require("cjson.safe")

local _M = {}

function _M.events(body)
    local out = {}
    body = body:gsub("\r\n", "\n")
    for block in body:gmatch("(.-)\n\n") do
        local name, data
        for line in block:gmatch("[^\n]+") do
            local f, v = line:match("^([^:]*):? ?(.*)$")
            if f == "event" then name = v elseif f == "data" then data = data and (data .. "\n" .. v) or v end
        end
        if data then out[#out + 1] = { name = name, data = data, json = cjson.decode(data) } end
    end
    return out
end

--- The OpenAI chunks as the SDK accumulates them; errors when the stream is not well formed (no [DONE] last,
--- a chunk after it, no finish reason).
function _M.openai(evs)
    local r = { text = "", tool_args = "", chunks = 0, done = false }
    for i, ev in ipairs(evs) do
        assert(not r.done, "an event after [DONE]")
        if ev.data == "[DONE]" then
            r.done = true
            assert(i == #evs, "[DONE] is not the last event")
        else
            local t = assert(ev.json, "not JSON: " .. ev.data)
            assert(t.error == nil, "an error event: " .. ev.data)
            r.chunks = r.chunks + 1
            for _, c in ipairs(t.choices or {}) do
                local d = c.delta or {}
                if type(d.content) == "string" then r.text = r.text .. d.content end
                if type(c.text) == "string" then r.text = r.text .. c.text end
                for _, tc in ipairs(type(d.tool_calls) == "table" and d.tool_calls or {}) do
                    local f = tc["function"]
                    if type(f) == "table" and type(f.arguments) == "string" then r.tool_args = r.tool_args .. f.arguments end
                end
                if c.finish_reason ~= nil and c.finish_reason ~= cjson.null then
                    assert(r.finish_reason == nil, "two finish reasons")
                    r.finish_reason = c.finish_reason
                end
            end
        end
    end
    assert(r.done, "no [DONE]")
    assert(r.finish_reason, "no finish reason")
    return r
end

--- The Anthropic events as the SDK accumulates them; errors when not well formed (message_start first,
--- message_stop last, blocks opened and closed in order, one message_delta with a stop reason).
function _M.anthropic(evs)
    local r = { text = "", tool_json = "", blocks = 0 }
    local open
    assert(evs[1] and evs[1].name == "message_start", "message_start is not first")
    for i, ev in ipairs(evs) do
        local t = ev.json
        assert(t and t.type == ev.name, "event name and type differ: " .. tostring(ev.name))
        assert(ev.name ~= "error", "an error event: " .. ev.data)
        if ev.name == "content_block_start" then
            assert(open == nil, "a block opened inside another")
            open = t.index
            r.blocks = r.blocks + 1
            if t.content_block.type == "text" then r.text = r.text .. (t.content_block.text or "") end
        elseif ev.name == "content_block_delta" then
            assert(open == t.index, "a delta outside its block")
            if t.delta.type == "text_delta" then r.text = r.text .. t.delta.text end
            if t.delta.type == "input_json_delta" then r.tool_json = r.tool_json .. t.delta.partial_json end
        elseif ev.name == "content_block_stop" then
            assert(open == t.index, "a stop for a block that is not open")
            open = nil
        elseif ev.name == "message_delta" then
            assert(open == nil, "message_delta inside a block")
            assert(r.stop_reason == nil, "two message_delta")
            r.stop_reason = t.delta.stop_reason
            assert(type(t.usage) == "table" and type(t.usage.output_tokens) == "number", "message_delta without usage")
        elseif ev.name == "message_stop" then
            assert(i == #evs, "message_stop is not last")
            r.stopped = true
        end
    end
    assert(r.stopped, "no message_stop")
    assert(r.stop_reason, "no stop reason")
    return r
end

return _M
