-- sluice.ai.sse: incremental Server-Sent Events parser and encoder (WHATWG "event stream" format).
--
--   local p = sse.parser({max_size = 1048576})   -- opts optional; max_size: see below
--   for _, ev in ipairs(p:feed(bytes)) do ... ev.event, ev.data, ev.id, ev.retry ... end
--   if p.err then ... end            -- the stream broke the size bound: nothing more is parsed
--   local rest = p:finish()          -- flushes an event the stream ended without a blank line after
--   sse.encode({event = "message_start", data = "{...}"}) -> "event: message_start\ndata: {...}\n\n"
--
-- Bytes may be split anywhere (inside a line, between "\r" and "\n"). Lines end with "\n", "\r\n" or "\r".
-- Comment lines (":...") are ignored; multiple "data:" lines are joined with "\n"; an event with no data
-- line is not dispatched (as in the spec). `event` is nil when the stream did not name it.
--
-- Linear time and bounded memory, whatever the stream: each byte is searched once (a line split over many
-- feeds waits as a list of pieces, joined once when its end comes), and neither a line nor the data of an event
-- may grow past max_size bytes (default DEFAULT_MAX_SIZE). Past it the parser stops: p.err says why, feed and
-- finish return no more events, so an upstream sending megabytes without a line end costs one bounded buffer.
local find, sub, byte = string.find, string.sub, string.byte
local concat = table.concat
local setmetatable, tonumber = setmetatable, tonumber

local _M = {}

--- Default bound of a line and of an event's data (bytes).
_M.DEFAULT_MAX_SIZE = 1024 * 1024

local Parser = {}
Parser.__index = Parser

--- A new parser. opts.max_size: the largest line and the largest event data accepted (bytes).
function _M.parser(opts)
    return setmetatable({
        max = opts and opts.max_size or _M.DEFAULT_MAX_SIZE,
        pend = nil, plen = 0,            -- pieces of a line whose end has not come yet, and their length
        data = nil, more = nil, dlen = 0, -- first data line, further ones (list), their total length
        event = nil, id = nil, retry = nil, cr = false, err = nil,
    }, Parser)
end

--- Changes the bound (bytes) of a parser already made (the drivers make theirs with the default).
function Parser:set_max_size(n)
    self.max = n
end

local function fail(self, what)
    self.err = what .. " larger than " .. self.max .. " bytes in the upstream stream"
    self.pend, self.plen, self.data, self.more, self.dlen = nil, 0, nil, nil, 0
end

local function dispatch(self, out)
    local data = self.data
    if data then
        if self.more then
            data = data .. "\n" .. concat(self.more, "\n")
        end
        out[#out + 1] = { event = self.event, data = data, id = self.id, retry = self.retry }
    end
    self.data, self.more, self.dlen, self.event, self.retry = nil, nil, 0, nil, nil
end

-- The value of a data line. False when the event's data outgrew the bound.
local function data_line(self, value)
    local dlen = self.dlen + #value + 1 -- with the "\n" that joins it to the next one
    if dlen > self.max then
        return false
    end
    self.dlen = dlen
    if not self.data then
        self.data = value
    elseif self.more then
        self.more[#self.more + 1] = value
    else
        self.more = { value }
    end
    return true
end

-- One line (without its end). False when the event's data outgrew the bound.
local function field(self, line, out)
    local n = #line
    if n == 0 then
        dispatch(self, out)
        return true
    end
    local b1, b2, b3, b4, b5, b6 = byte(line, 1, 6)
    local name, value
    if b1 == 100 and b2 == 97 and b3 == 116 and b4 == 97 and b5 == 58 then -- "data:", the usual line
        return data_line(self, b6 == 32 and sub(line, 7) or sub(line, 6))
    end
    if b1 == 58 then return true end -- ':' comment
    local colon = find(line, ":", 1, true)
    if colon then
        name = sub(line, 1, colon - 1)
        value = sub(line, colon + 1)
        if byte(value, 1) == 32 then value = sub(value, 2) end
    else
        name, value = line, ""
    end
    if name == "data" then -- "data" without a colon: an empty data line
        self.dlen = self.dlen + 1
        if self.dlen > self.max then
            return false
        end
        if not self.data then
            self.data = ""
        elseif self.more then
            self.more[#self.more + 1] = ""
        else
            self.more = { "" }
        end
    elseif name == "event" then
        self.event = value
    elseif name == "id" then
        self.id = value
    elseif name == "retry" then
        self.retry = tonumber(value)
    end -- other names: ignored, as the spec says
    return true
end

--- Feeds bytes; returns the list of events completed by them (possibly empty). After a failure (p.err set)
--- the bytes are dropped.
function Parser:feed(chunk)
    local out = {}
    if self.err or not chunk or chunk == "" then return out end
    local n, pos = #chunk, 1
    -- a "\r" that ended the previous feed already terminated its line; skip a "\n" right after it
    if self.cr then
        self.cr = false
        if byte(chunk, 1) == 10 then pos = 2 end
    end
    local any_cr = find(chunk, "\r", pos, true) ~= nil -- else a plain search for "\n" finds every line end
    local max = self.max
    while pos <= n do
        local s
        if any_cr then s = find(chunk, "[\r\n]", pos) else s = find(chunk, "\n", pos, true) end
        if not s then
            local plen = self.plen + (n - pos + 1)
            if plen > max then
                fail(self, "a line")
                return out
            end
            local pend = self.pend
            if not pend then pend = {}; self.pend = pend end
            pend[#pend + 1] = pos == 1 and chunk or sub(chunk, pos)
            self.plen = plen
            break
        end
        local line
        if self.plen > 0 then
            if self.plen + (s - pos) > max then
                fail(self, "a line")
                return out
            end
            local pend = self.pend
            pend[#pend + 1] = sub(chunk, pos, s - 1)
            line = concat(pend)
            self.pend, self.plen = nil, 0
        else
            if s - pos > max then
                fail(self, "a line")
                return out
            end
            -- a data line makes one string, its value (LuaJIT interns every string it makes, and the lines of
            -- one stream look alike: each one less is worth it)
            local b1, b2, b3, b4, b5, b6 = byte(chunk, pos, pos + 5)
            if b1 == 100 and b2 == 97 and b3 == 116 and b4 == 97 and b5 == 58 and s - pos >= 5 then
                if not data_line(self, sub(chunk, b6 == 32 and s - pos >= 6 and pos + 6 or pos + 5, s - 1)) then
                    fail(self, "an event")
                    return out
                end
            elseif s == pos then
                dispatch(self, out)
            else
                line = sub(chunk, pos, s - 1)
            end
        end
        if line and not field(self, line, out) then
            fail(self, "an event")
            return out
        end
        if byte(chunk, s) == 13 then
            if s == n then
                self.cr = true
                break
            elseif byte(chunk, s + 1) == 10 then
                s = s + 1
            end
        end
        pos = s + 1
    end
    return out
end

--- Ends the stream: returns a last event left without its terminating blank line (lenient), marks done.
function Parser:finish()
    local out = {}
    if not self.err then
        if self.plen > 0 then
            local line = concat(self.pend)
            self.pend, self.plen = nil, 0
            if not field(self, line, out) then
                fail(self, "an event")
                self.done = true
                return out
            end
        end
        dispatch(self, out)
    end
    self.done = true
    return out
end

--- Bytes waiting for the end of their line (0 when the stream stopped at a line end).
function Parser:pending()
    return self.plen
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
