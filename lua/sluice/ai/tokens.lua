-- sluice.ai.tokens: local token count ESTIMATE, used when a provider reports no usage.
--
-- This is not a BPE tokenizer: the cl100k_base / o200k_base vocabularies are not shipped with Sluice. It splits
-- text the way those tokenizers' pre-tokenizer roughly does (letters with their leading space, digit groups,
-- punctuation runs, whitespace, non-ASCII code points) and charges each piece:
--   * a letter run of n bytes:        1 token up to 6 letters, then ceil(n / 4) (long/rare words split more)
--   * a digit run of n digits:        ceil(n / 3)             (cl100k/o200k group digits by up to three)
--   * a punctuation run of n chars:   ceil(n / 2)
--   * a whitespace run:               0 when it is a single space or tab (merged into the next word),
--                                     1 per newline group / long indent run otherwise
--   * each non-ASCII code point:      1 token for CJK/kana/hangul, 0.5 for other scripts (accented Latin,
--                                     Cyrillic... where BPE merges are rarer than English but common)
-- Accuracy (honest): designed to be within about +/-15% of cl100k on ordinary English prose and chat
-- messages, looser (+/-30%) on code, JSON, URLs, base64 and non-Latin scripts. It was not validated against
-- the real tokenizer in this repository's test environment (no vocabulary files available); treat it as an
-- estimate for budgets and rate limits, never for billing reconciliation.
local byte, ceil, floor = string.byte, math.ceil, math.floor
local type, ipairs = type, ipairs

local _M = {}

local function class(b)
    if not b then return nil end
    if (b >= 65 and b <= 90) or (b >= 97 and b <= 122) then return "L" end
    if b >= 48 and b <= 57 then return "D" end
    if b == 32 or b == 9 then return "S" end
    if b == 10 or b == 13 then return "N" end
    if b >= 128 then return "U" end
    return "P"
end

--- Estimated token count of a string.
function _M.count_text(s)
    if type(s) ~= "string" or s == "" then return 0 end
    local n, i, total = #s, 1, 0
    while i <= n do
        local b = byte(s, i)
        local c = class(b)
        local j = i + 1
        if c == "U" then
            -- one UTF-8 code point
            local len = b >= 240 and 4 or b >= 224 and 3 or b >= 192 and 2 or 1
            local cp_first = b
            j = i + len
            -- CJK, kana, hangul live in 3-byte sequences starting 0xE3..0xED (U+3000..U+D7FF)
            if len == 3 and cp_first >= 0xE3 and cp_first <= 0xED then
                total = total + 1
            elseif len == 4 then
                total = total + 1.5 -- emoji and rare symbols
            else
                total = total + 0.5
            end
        else
            while j <= n and class(byte(s, j)) == c do j = j + 1 end
            local len = j - i
            if c == "L" then
                total = total + (len <= 6 and 1 or ceil(len / 4))
            elseif c == "D" then
                total = total + ceil(len / 3)
            elseif c == "P" then
                total = total + ceil(len / 2)
            elseif c == "N" then
                total = total + 1
            elseif c == "S" then
                if len > 1 then total = total + ceil(len / 8) end
            end
        end
        i = j
    end
    return floor(total + 0.5)
end

local function content_tokens(content)
    if type(content) == "string" then return _M.count_text(content) end
    if type(content) ~= "table" then return 0 end
    local t = 0
    for _, p in ipairs(content) do
        if type(p) == "table" then
            if type(p.text) == "string" then
                t = t + _M.count_text(p.text)
            elseif p.type == "image_url" then
                t = t + 85 -- OpenAI's base cost of a low-detail image tile
            end
        end
    end
    return t
end

--- Estimated prompt tokens of an OpenAI chat request: per-message overhead of 3 tokens, +1 for a name,
--- +3 to prime the reply (OpenAI cookbook counting rules), tool calls and tool definitions counted as JSON.
function _M.count_messages(messages, tools)
    local total = 3
    if type(messages) == "table" then
        for _, m in ipairs(messages) do
            if type(m) == "table" then
                total = total + 3 + content_tokens(m.content)
                if type(m.name) == "string" then total = total + 1 end
                if type(m.tool_calls) == "table" then
                    for _, tc in ipairs(m.tool_calls) do
                        local f = type(tc) == "table" and tc["function"]
                        if type(f) == "table" then
                            total = total + 3 + _M.count_text(f.name) + _M.count_text(f.arguments)
                        end
                    end
                end
            end
        end
    end
    if type(tools) == "table" and #tools > 0 then
        local json = require("sluice.ai.common").json_encode(tools)
        total = total + _M.count_text(json or "")
    end
    return total
end

--- Estimated prompt tokens of a canonical request for op ("chat" | "completions" | "embeddings").
function _M.count_request(op, body)
    if type(body) ~= "table" then return 0 end
    if op == "chat" or op == nil then
        return _M.count_messages(body.messages, body.tools)
    end
    local input = op == "embeddings" and body.input or body.prompt
    if type(input) == "string" then return _M.count_text(input) end
    local t = 0
    if type(input) == "table" then
        for _, v in ipairs(input) do
            if type(v) == "string" then t = t + _M.count_text(v)
            elseif type(v) == "number" then t = t + 1 end -- pre-tokenized input
        end
    end
    return t
end

return _M
