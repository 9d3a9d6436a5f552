-- sluice.ai.sse: incremental Server-Sent Events parser and encoder (WHATWG "event stream" format).
--
--   local p = sse.parser()
--   for _, ev in ipairs(p:feed(bytes)) do ... ev.event, ev.data, ev.id, ev.retry ... end
--   local rest = p:finish()          -- flushes an event the stream ended without a blank line after
--   sse.encode({event = "message_start", data = "{...}"}) -> "event: message_start\ndata: {...}\n\n"
--
-- Bytes may be split anywhere (inside a line, between "\r" and "\n"). Lines end with "\n", "\r\n" or "\r".
-- Comment lines (":...") are ignored; multiple "data:" lines are joined with "\n"; an event with no data
-- line is not dispatched (as in the spec). `event` is nil when the stream did not name it.
local find, sub, byte = string.find, string.sub, string.byte
local concat = table.concat
local setmetatable, tonumber = setmetatable, tonumber

local _M = {}

local Parser = {}
Parser.__index = Parser

function _M.parser()
    return setmetatable({ buf = "", data = nil, event = nil, id = nil, retry = nil, cr = false }, Parser)
end

local function field(self, line, out)
    if line == "" then
        if self.data then
            out[#out + 1] = { event = self.event, data = concat(self.data, "\n"), id = self.id, retry = self.retry }
        end
        self.data, self.event, self.retry = nil, nil, nil
        return
    end
    if byte(line, 1) == 58 then return end -- ':' comment
    local colon = find(line, ":", 1, true)
    local name, value
    if colon then
        name = sub(line, 1, colon - 1)
        value = sub(line, colon + 1)
        if byte(value, 1) == 32 then value = sub(value, 2) end
    else
        name, value = line, ""
    end
    if name == "data" then
        local d = self.data
        if not d then d = {}; self.data = d end
        d[#d + 1] = value
    elseif name == "event" then
        self.event = value
    elseif name == "id" then
        self.id = value
    elseif name == "retry" then
        self.retry = tonumber(value)
    end
end

--- Feeds bytes; returns the list of events completed by them (possibly empty).
function Parser:feed(chunk)
    local out = {}
    if not chunk or chunk == "" then return out end
    local buf = self.buf .. chunk
    local pos, n = 1, #buf
    -- a "\r" that ended the previous feed already terminated its line; skip a "\n" right after it
    if self.cr then
        self.cr = false
        if byte(buf, 1) == 10 then pos = 2 end
    end
    while pos <= n do
        local s = find(buf, "[\r\n]", pos)
        if not s then break end
        field(self, sub(buf, pos, s - 1), out)
        if byte(buf, s) == 13 then
            if s == n then
                self.cr = true
                pos = s + 1
                break
            elseif byte(buf, s + 1) == 10 then
                s = s + 1
            end
        end
        pos = s + 1
    end
    self.buf = pos > n and "" or sub(buf, pos)
    return out
end

--- Ends the stream: returns a last event left without its terminating blank line (lenient), marks done.
function Parser:finish()
    local out = {}
    if self.buf ~= "" then
        field(self, self.buf, out)
        self.buf = ""
    end
    field(self, "", out)
    self.done = true
    return out
end

--- Encodes one event. ev = {event=?, data=string, id=?, retry=?}
function _M.encode(ev)
    local parts = {}
    if ev.event then parts[#parts + 1] = "event: " .. ev.event .. "\n" end
    if ev.id then parts[#parts + 1] = "id: " .. ev.id .. "\n" end
    if ev.retry then parts[#parts + 1] = "retry: " .. ev.retry .. "\n" end
    local data = ev.data or ""
    if find(data, "[\r\n]") then
        data = data:gsub("\r\n", "\n"):gsub("\r", "\n")
        for line in (data .. "\n"):gmatch("(.-)\n") do
            parts[#parts + 1] = "data: " .. line .. "\n"
        end
    else
        parts[#parts + 1] = "data: " .. data .. "\n"
    end
    parts[#parts + 1] = "\n"
    return concat(parts)
end

return _M
