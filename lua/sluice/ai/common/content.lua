-- sluice.ai.common.content: reading the canonical request: message content (string | parts), tool-call
-- arguments, stop sequences, response_format. Drivers map the normalized parts to their provider's blocks.
local json = require("sluice.ai.common.json")

local type, ipairs, next = type, ipairs, next
local concat = table.concat
local json_encode, json_decode = json.json_encode, json.json_decode

local _M = {}

--- "data:image/png;base64,AAAA" -> "image/png", "AAAA" (nil when not a base64 data URL).
function _M.parse_data_url(url)
    if type(url) ~= "string" then return nil end
    local mime, data = url:match("^data:([^;,]+);base64,(.*)$")
    return mime, data
end

--- The text of an OpenAI message content (string | parts array | nil): text parts joined with sep (default
--- "\n", so "Say hi" + "please" stays two lines, never "Say hiplease").
function _M.content_text(content, sep)
    if type(content) == "string" then return content end
    if type(content) ~= "table" then return "" end
    local out = {}
    for _, p in ipairs(content) do
        if type(p) == "table" and (p.type == "text" or p.type == "input_text") and type(p.text) == "string" then
            out[#out + 1] = p.text
        elseif type(p) == "string" then
            out[#out + 1] = p
        end
    end
    return concat(out, sep or "\n")
end

--- True when content has a part that is not text.
function _M.has_non_text(content)
    if type(content) ~= "table" then return false end
    for _, p in ipairs(content) do
        if type(p) ~= "table" or (p.type ~= "text" and p.type ~= "input_text") then return true end
    end
    return false
end

--- The parts of an OpenAI message content (string | parts array | nil), normalized for the drivers:
---   {type = "text", text}                                 empty texts are left out
---   {type = "image", url, mime?, data?}                   mime/data when url is a base64 data URL
---   {type = "file", mime?, data?, filename?}              from a file part's file_data data URL
---   {type = "other", part}                                anything else, as the client sent it
--- Each keeps the part's cache_control (an Anthropic-client extension) as .cache_control.
function _M.parts(content)
    local out = {}
    if type(content) == "string" then
        if content ~= "" then out[1] = { type = "text", text = content } end
        return out
    end
    if type(content) ~= "table" then return out end
    for _, p in ipairs(content) do
        local n
        if type(p) == "table" then
            if p.type == "text" or p.type == "input_text" then
                if type(p.text) == "string" and p.text ~= "" then n = { type = "text", text = p.text } end
            elseif p.type == "image_url" then
                local url = type(p.image_url) == "table" and p.image_url.url or p.image_url
                if type(url) == "string" then
                    local mime, data = _M.parse_data_url(url)
                    n = { type = "image", url = url, mime = mime, data = data }
                end
            elseif p.type == "file" and type(p.file) == "table" then
                local mime, data = _M.parse_data_url(p.file.file_data)
                n = { type = "file", mime = mime, data = data, filename = p.file.filename }
            else
                n = { type = "other", part = p }
            end
            if n then n.cache_control = p.cache_control end
        elseif type(p) == "string" and p ~= "" then
            n = { type = "text", text = p }
        end
        out[#out + 1] = n
    end
    return out
end

--- A tool call's arguments (a JSON string) as a table; {} when empty or not a JSON object.
function _M.tool_args(tc)
    local f = type(tc) == "table" and tc["function"] or nil
    local s = type(f) == "table" and f.arguments or nil
    local t = type(s) == "string" and s ~= "" and json_decode(s) or nil
    if type(t) ~= "table" or (next(t) ~= nil and t[1] ~= nil) then return {} end
    return t
end

--- A tool call id as providers other than Gemini take it: without the thought signature the gemini driver
--- appends ("<id>__ts__<signature>", see sluice.ai.drivers.gemini). OpenAI caps call ids at 40 characters and
--- Bedrock at 64, so a conversation that moves on from Gemini must not carry them.
function _M.call_id(id)
    if type(id) ~= "string" then return id end
    local b = id:find("__ts__", 1, true)
    return b and id:sub(1, b - 1) or id
end

--- Stop sequences as a list (OpenAI `stop` is a string or an array).
function _M.stop_list(stop)
    if type(stop) == "string" then return { stop } end
    if type(stop) == "table" and #stop > 0 then return stop end
    return nil
end

--- Text to add to a system prompt so providers without native JSON mode honour response_format.
function _M.response_format_instruction(rf)
    if type(rf) ~= "table" then return nil end
    if rf.type == "json_object" then
        return "Respond only with a single valid JSON object, no prose and no code fences."
    elseif rf.type == "json_schema" and type(rf.json_schema) == "table" then
        local schema = rf.json_schema.schema and json_encode(rf.json_schema.schema) or "{}"
        return "Respond only with a single valid JSON value matching this JSON Schema, no prose and no code fences: "
            .. schema
    end
    return nil
end

--- A tool result's text with the error folded in, for providers whose tool messages have no error flag.
function _M.tool_error_text(text)
    if type(text) ~= "string" or text == "" then return "Error" end
    return "Error: " .. text
end

return _M
