-- sluice.ai.aws.eventstream: the AWS event-stream binary framing (application/vnd.amazon.eventstream), as
-- Bedrock's ConverseStream and InvokeModelWithResponseStream send it.
--
--   message = prelude (total_length u32 BE | headers_length u32 BE | prelude_crc u32 = CRC32 of the first 8
--             bytes) | headers ((name_len u8, name, type u8, value)*) | payload | message_crc u32 (CRC32 of all
--             preceding bytes)
--
--   local d = eventstream.decoder()
--   d:feed(bytes) -> {{headers = {name = value}, payload = string}, ...} | nil, err   (bytes split anywhere)
--   d:finish() -> {} | nil, err                                                       (err: a message cut off)
--   eventstream.encode({{name, string value}, ...}, payload) -> bytes
local crypto = require("sluice.crypto")

local ipairs, tostring, setmetatable = ipairs, tostring, setmetatable
local concat = table.concat
local byte, sub, char = string.byte, string.sub, string.char
local floor = math.floor

local _M = {}

local function u32(s, i)
    local a, b, c, d = byte(s, i, i + 3)
    return ((a * 256 + b) * 256 + c) * 256 + d
end
local function u16(s, i)
    local a, b = byte(s, i, i + 1)
    return a * 256 + b
end
local function be32(n)
    return char(floor(n / 16777216) % 256, floor(n / 65536) % 256, floor(n / 256) % 256, n % 256)
end

-- Value sizes of the fixed-size header types (0/1: booleans without a value; 6/7: length-prefixed).
local FIXED = { [0] = 0, [1] = 0, [2] = 1, [3] = 2, [4] = 4, [5] = 8, [8] = 8, [9] = 16 }

-- Headers between i and last (inclusive); every read is bounded by last (a header running past the header
-- section is an error, never a read past the message).
local function parse_headers(s, i, last)
    local headers = {}
    while i <= last do
        local nlen = byte(s, i)
        if nlen == 0 or i + 1 + nlen > last then return nil, "bad header name" end
        local name = sub(s, i + 1, i + nlen)
        i = i + 1 + nlen
        local t = byte(s, i)
        i = i + 1
        local size = FIXED[t]
        if size == nil and (t == 6 or t == 7) then
            if i + 1 > last then return nil, "bad header value" end
            size = 2 + u16(s, i)
        elseif size == nil then
            return nil, "unknown header value type " .. tostring(t)
        end
        if i + size - 1 > last then return nil, "bad header value" end
        local v
        if t == 0 then v = true
        elseif t == 1 then v = false
        elseif t == 2 then v = byte(s, i)
        elseif t == 3 then v = u16(s, i)
        elseif t == 4 then v = u32(s, i)
        elseif t == 5 or t == 8 then v = u32(s, i) * 4294967296 + u32(s, i + 4)
        elseif t == 9 then v = sub(s, i, i + 15)
        else v = sub(s, i + 2, i + size - 1) end
        i = i + size
        headers[name] = v
    end
    return headers
end

local Decoder = {}
Decoder.__index = Decoder

--- Feeds bytes; returns a list of messages {headers = {name = value}, payload = string} | nil, err.
function Decoder:feed(bytes)
    local out = {}
    local buf = self.buf .. (bytes or "")
    local pos = 1
    while #buf - pos + 1 >= 12 do
        local total = u32(buf, pos)
        local hlen = u32(buf, pos + 4)
        if crypto.crc32(sub(buf, pos, pos + 7)) ~= u32(buf, pos + 8) then
            self.buf = ""
            return nil, "event-stream: prelude CRC mismatch"
        end
        if total < 16 or hlen > total - 16 then
            self.buf = ""
            return nil, "event-stream: bad lengths"
        end
        if #buf - pos + 1 < total then break end
        local msg_end = pos + total - 1
        if crypto.crc32(sub(buf, pos, msg_end - 4)) ~= u32(buf, msg_end - 3) then
            self.buf = ""
            return nil, "event-stream: message CRC mismatch"
        end
        local headers, err = parse_headers(buf, pos + 12, pos + 11 + hlen)
        if not headers then self.buf = ""; return nil, "event-stream: " .. err end
        out[#out + 1] = { headers = headers, payload = sub(buf, pos + 12 + hlen, msg_end - 4) }
        pos = msg_end + 1
    end
    self.buf = sub(buf, pos)
    return out
end

--- The end of the stream: nothing more to give, or an error when it ended inside a message.
function Decoder:finish()
    if self.buf ~= "" then
        self.buf = ""
        return nil, "stream ended inside a message"
    end
    return {}
end

function _M.decoder()
    return setmetatable({ buf = "" }, Decoder)
end

--- Encodes one message with string headers: headers = {{name, value}, ...} (order kept).
function _M.encode(headers, payload)
    local hs = {}
    for _, h in ipairs(headers) do
        hs[#hs + 1] = char(#h[1]) .. h[1] .. char(7) .. char(floor(#h[2] / 256), #h[2] % 256) .. h[2]
    end
    local hbytes = concat(hs)
    local total = 12 + #hbytes + #payload + 4
    local prelude = be32(total) .. be32(#hbytes)
    local msg = prelude .. be32(crypto.crc32(prelude)) .. hbytes .. payload
    return msg .. be32(crypto.crc32(msg))
end

return _M
