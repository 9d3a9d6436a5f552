-- ai-pii's side of the response (a handler for sluice.ai.safety.response): placeholders become the originals again,
-- and, with `response`, values the model writes itself are masked.
--
-- A channel (a choice's content, a tool call's arguments, an Anthropic block) may end in the middle of a
-- placeholder ("<PII_EM" in one event, "AIL_1>" in the next): such a tail is kept back until the rest arrives or the
-- channel ends, so the client never sees half a placeholder. With response masking, the last word is kept back
-- the same way (a card number may come in pieces). In JSON text (tool arguments) an original is inserted
-- JSON-escaped, so the arguments stay valid JSON.
local cjson = require("cjson.safe")

local find, sub, gsub, byte, match = string.find, string.sub, string.gsub, string.byte, string.match
local concat = table.concat

local _M = {}

local PREFIX = "<PII_"
local MAX_PH = 64 -- the longest placeholder kept back: "<PII_" .. label .. "_" .. n .. ">"
local MAX_WORD = 512 -- the longest tail kept back for response masking

-- The start of a tail of s that may be the beginning of a placeholder, or nil.
local function placeholder_tail(s)
    local n = #s
    local lt
    local from = n - MAX_PH + 1
    if from < 1 then from = 1 end
    local i = from
    while true do
        local j = find(s, "<", i, true)
        if not j then break end
        lt = j
        i = j + 1
    end
    if not lt then return nil end
    local tail = sub(s, lt)
    if #tail <= #PREFIX then
        return sub(PREFIX, 1, #tail) == tail and lt or nil
    end
    return match(tail, "^<PII_[%u%d_]*$") and lt or nil
end
_M.placeholder_tail = placeholder_tail

-- The start of the last word of s (response masking keeps it back: a value may continue in the next piece), or nil
-- when s ends with a space. Spaces between digits belong to the word (card and phone numbers), also one at the end.
local function word_tail(s)
    local n = #s
    local i = n
    local limit = n - MAX_WORD
    while i > limit and i >= 1 do
        local c = byte(s, i)
        if c == 32 or c == 10 or c == 9 or c == 13 then
            -- a space after a digit (or ')') may be inside a number still arriving: "4111 1111 ...", "(415) 555-..."
            local prev, nxt = byte(s, i - 1), byte(s, i + 1)
            local digit_gap = c == 32 and prev and ((prev >= 48 and prev <= 57) or prev == 41)
                and (nxt == nil or (nxt >= 48 and nxt <= 57))
            if not digit_gap then
                return i < n and i + 1 or nil
            end
        end
        i = i - 1
    end
    return i >= 1 and i + 1 or 1
end
_M.word_tail = word_tail

local function json_escaped(s)
    local e = cjson.encode(s) or '""'
    return sub(e, 2, -2)
end

--- A handler for sluice.ai.safety.response. c: the compiled conf (response_scanner, response_action), conf, st:
--- the request's state (by_ph, restored, response_counts), restore: whether to put originals back, replace:
--- the plugin's replace(st, det, value, action, salt).
function _M.handler(c, conf, st, restore, replace)
    local pending = {}
    local by_ph = st.by_ph
    local scanner = c.response_scanner
    local h = { trigger = (not scanner) and "<" or nil }

    -- restores placeholders in s (no masking)
    local function put_back(s, is_json)
        if not restore or not find(s, PREFIX, 1, true) then return s end
        return (gsub(s, "<PII_[%u%d_]+>", function(ph)
            local v = by_ph[ph]
            if not v then return nil end
            st.restored = st.restored + 1
            return is_json and json_escaped(v) or v
        end))
    end

    -- masks values the model wrote in s, then restores placeholders (a restored original is never masked)
    local function process(s, is_json)
        if not scanner then return put_back(s, is_json) end
        local parts, pos = {}, 1
        while true do
            local a, b = find(s, "<PII_[%u%d_]+>", pos)
            local seg = sub(s, pos, a and a - 1 or #s)
            if seg ~= "" then
                local out = scanner:scan(seg, function(det, value)
                    st.response_counts[det.name] = (st.response_counts[det.name] or 0) + 1
                    return replace(st, det, value, c.response_action, conf.hash_salt)
                end)
                parts[#parts + 1] = out or seg
            end
            if not a then break end
            parts[#parts + 1] = put_back(sub(s, a, b), is_json)
            pos = b + 1
        end
        return concat(parts)
    end

    function h.text(_, key, s, is_json)
        local p = pending[key]
        if p then
            s = p .. s
            pending[key] = nil
        end
        local cut = placeholder_tail(s)
        if scanner then
            local w = word_tail(s)
            if w and (not cut or w < cut) then cut = w end
        end
        if cut then
            pending[key] = sub(s, cut)
            s = sub(s, 1, cut - 1)
        end
        if s == "" then return "" end
        return process(s, is_json)
    end

    function h.flush(_, key, is_json)
        local p = pending[key]
        if not p then return "" end
        pending[key] = nil
        return process(p, is_json)
    end

    function h.finish()
        return nil
    end

    return h
end

return _M
