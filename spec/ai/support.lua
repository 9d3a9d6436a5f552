-- Shared helpers for the AI driver specs (not a spec itself).
local V = require("ai.validators")

local _M = {}

--- The driver, with every request its build_request returns checked by the strict validator of its kind
--- (spec/ai/validators/<kind>.lua): a request the provider would reject fails the spec.
function _M.strict(driver, kind)
    kind = kind or driver.kind
    local d = setmetatable({}, { __index = driver })
    function d.build_request(...)
        local req, err = driver.build_request(...)
        if req and not req.local_response then V.assert_valid(kind, req) end
        return req, err
    end
    return d
end

--- Reads spec/fixtures/ai/<path>.
function _M.fixture(path)
    local f = assert(io.open("spec/fixtures/ai/" .. path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
end

function _M.json(path)
    return assert(require("cjson.safe").decode(_M.fixture(path)))
end

--- Feeds data to a stream translator in pieces of `size` bytes (default: all at once), then finish().
--- Returns the list of every item produced.
function _M.run_stream(s, data, size)
    local out = {}
    size = size or #data
    for i = 1, #data, size do
        for _, c in ipairs(s:feed(data:sub(i, i + size - 1))) do out[#out + 1] = c end
    end
    for _, c in ipairs(s:finish()) do out[#out + 1] = c end
    return out
end

--- Concatenated delta.content of chunks.
function _M.text(chunks)
    local t = {}
    for _, c in ipairs(chunks) do
        local ch = c.choices and c.choices[1]
        if ch and type(ch.delta) == "table" and type(ch.delta.content) == "string" then t[#t + 1] = ch.delta.content end
    end
    return table.concat(t)
end

--- Reassembles tool calls from chunk deltas: list of {id, name, arguments} by index (1-based).
function _M.tool_calls(chunks)
    local calls = {}
    for _, c in ipairs(chunks) do
        local ch = c.choices and c.choices[1]
        local tcs = ch and type(ch.delta) == "table" and ch.delta.tool_calls
        if type(tcs) == "table" then
            for _, tc in ipairs(tcs) do
                local k = tc.index + 1
                calls[k] = calls[k] or { arguments = "" }
                if type(tc.id) == "string" then calls[k].id = tc.id end
                local f = tc["function"] or {}
                if type(f.name) == "string" then calls[k].name = f.name end
                if type(f.arguments) == "string" then calls[k].arguments = calls[k].arguments .. f.arguments end
            end
        end
    end
    return calls
end

--- finish_reason of the chunks (last non-null).
function _M.finish_reason(chunks)
    local fr
    for _, c in ipairs(chunks) do
        local ch = c.choices and c.choices[1]
        if ch and type(ch.finish_reason) == "string" then fr = ch.finish_reason end
    end
    return fr
end

--- Parses an SSE string into a list of {event=, data=decoded}.
function _M.sse_events(s)
    local sse = require("sluice.ai.sse")
    local p = sse.parser()
    local out = {}
    for _, ev in ipairs(p:feed(s)) do out[#out + 1] = { event = ev.event, data = require("cjson.safe").decode(ev.data) or ev.data } end
    return out
end

return _M
