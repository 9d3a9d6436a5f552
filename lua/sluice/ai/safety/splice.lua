-- sluice.ai.safety.splice: strings changed in a request's decoded table, written into the client's bytes in
-- place of re-encoding the whole table (ai-pii's masks: a few values changed in a body of kilobytes).
--
--   local splice = require("sluice.ai.safety.splice")
--   local raw2 = splice.apply(raw, { {path = {"messages", 2, "content"}, text = "masked"}, ... })
--   -- raw2 decodes to what raw decodes to with those strings replaced; nil when that cannot be made sure
--
-- Paths are keys and array positions from 1 (sluice.ai.safety.request's slot paths). Each value is found in the
-- bytes by core/common/json_locate.c; a repeated or escaped key on a path, bytes it cannot read or a value there
-- that is not a string make apply answer nil (the caller then encodes the table as before). Everything but the
-- changed strings stays the client's bytes, so the result is no stricter JSON than the client sent.
local ffi = require("ffi")
local C = require("sluice.core")
local cjson = require("cjson.safe")

ffi.cdef [[
typedef struct sl_json_step { const char *key; size_t key_len; size_t index; } sl_json_step_t;
int sl_json_locate(const char *s, size_t len, const sl_json_step_t *path, int n, size_t *from, size_t *to);
typedef struct sl_chat_span { int kind; int msg; int sub; size_t from, to; } sl_chat_span_t;
int sl_chat_spans(const char *s, size_t len, sl_chat_span_t *out, int max);
]]

local type, tonumber = type, tonumber
local byte, find, sub, concat = string.byte, string.find, string.sub, table.concat
local encode = cjson.encode

local _M = {}

-- More edits than this go back to the caller (each one reads the body up to its value: no quadratic cost on a
-- body of many small changed strings).
_M.MAX_EDITS = 64
local MAX_STEPS = 32

local steps = ffi.new("sl_json_step_t[?]", MAX_STEPS)
local from_p, to_p = ffi.new("size_t[1]"), ffi.new("size_t[1]")

--- The span of the string at path in raw: from, to (positions from 1, the quotes included), or nil.
function _M.locate(raw, path)
    local n = #path
    if n > MAX_STEPS then return nil end
    for i = 1, n do
        local k, st = path[i], steps[i - 1]
        if type(k) == "string" then
            st.key, st.key_len = k, #k -- the path table holds the strings for the call
        elseif type(k) == "number" and k >= 1 and k % 1 == 0 then
            st.key, st.index = nil, k - 1
        else
            return nil
        end
    end
    if C.sl_json_locate(raw, #raw, steps, n, from_p, to_p) ~= 0 then return nil end
    local from, to = tonumber(from_p[0]) + 1, tonumber(to_p[0])
    if byte(raw, from) ~= 34 then return nil end -- '"': not a string there
    return from, to
end

-- True when string s can stand as it is between the quotes of the span from..to of raw: the client's string
-- there had no escape and s needs none (what changed in it are replacements made of its own bytes or of
-- placeholder and label characters). Else it is encoded.
local function verbatim(raw, from, to, s)
    local bs = find(raw, "\\", from + 1, true)
    return (bs == nil or bs >= to) and not find(s, '"', 1, true) and not find(s, "\\", 1, true)
end

--- raw with each edit's string (edits[i].text) at edits[i].path (or at the span edits[i].from..to, quotes
--- included), or nil (see the header). Edits on one value at most once.
function _M.apply(raw, edits)
    local n = #edits
    if n == 0 then return raw end
    if n > _M.MAX_EDITS then return nil end
    local spans = {}
    for i = 1, n do
        local e = edits[i]
        local from, to = e.from, e.to -- found already (sluice.ai.safety.request.raw_units), else by path
        if not from and type(e.path) == "table" then from, to = _M.locate(raw, e.path) end
        if not from then return nil end
        -- insertion by position: edits come in request order, which is mostly the bytes' order
        local j = #spans - 2
        while j >= 1 and spans[j] > from do
            spans[j + 3], spans[j + 4], spans[j + 5] = spans[j], spans[j + 1], spans[j + 2]
            j = j - 3
        end
        spans[j + 3], spans[j + 4], spans[j + 5] = from, to, e.text
    end
    local out, k, copied = {}, 0, 1
    for j = 1, #spans, 3 do
        local from, to, text = spans[j], spans[j + 1], spans[j + 2]
        if from < copied then return nil end -- two edits of one value, or one inside another
        if verbatim(raw, from, to, text) then
            out[k + 1], out[k + 2], out[k + 3] = sub(raw, copied, from), text, '"'
            k = k + 3
        else
            local q = encode(text)
            if not q then return nil end
            out[k + 1], out[k + 2] = sub(raw, copied, from - 1), q
            k = k + 2
        end
        copied = to + 1
    end
    out[k + 1] = sub(raw, copied)
    return concat(out, "", 1, k + 1)
end

local MAX_SPANS = 4096
local spans = ffi.new("sl_chat_span_t[?]", MAX_SPANS)

--- The spans of raw's texts (core/common/json_locate.c: sl_chat_spans), raw being plain JSON (the caller checked):
--- the cdata array and their number, or nil (too many, or bytes it cannot read). The array is reused by the
--- next call.
function _M.chat_spans(raw)
    local n = C.sl_chat_spans(raw, #raw, spans, MAX_SPANS)
    if n < 0 then return nil end
    return spans, n
end

return _M
