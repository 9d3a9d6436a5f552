-- sluice.ai.safety.request: the texts of a chat request in either client format, as units a safety plugin can read
-- and replace, and refusals in the client's shape.
--
--   local sreq = require("sluice.ai.safety.request")
--   local api = sreq.api(ctx.path)                      -- "openai" | "anthropic" (/messages)
--   for _, u in ipairs(sreq.units(body, api)) do        -- in request order
--       -- u.role: "system" | "user" | "assistant" | "tool"; u.index: the message (0: Anthropic's system)
--       for _, s in ipairs(u.slots) do                  -- s.kind: "text" | "tool_args" (JSON text) | "tool_input"
--           local text = s.t[s.k]; s.t[s.k] = new_text  -- s.path: where it sits in the body ({"messages", 2,
--       end                                             -- "content"}: keys, and array positions from 1)
--   end
--
-- What counts as text:
--   OpenAI (/chat/completions): messages[].content (a string, or the `text` of text parts); `developer` is a system
--     role; tool results are `tool` (and legacy `function`) messages; assistant tool_calls[].function.arguments and
--     legacy function_call.arguments are tool_args (JSON text). /completions: `prompt`; /embeddings: `input`
--     (strings, as user text).
--   Anthropic (/messages): `system` (a string or text blocks), messages[].content (a string, text blocks);
--     tool_result blocks are units of their own with role "tool" (their content: a string or text blocks); tool_use
--     blocks' `input` objects give one tool_input slot per string value inside.
-- Images, documents, thinking blocks and everything else are not text here.
local errors = require("sluice.ai.common.errors")
local cjson = require("cjson.safe")
local splice = require("sluice.ai.safety.splice")
local plain_object = require("sluice.ai.common.json").plain_object

local type, ipairs, pairs, next, tonumber = type, ipairs, pairs, next, tonumber
local find, byte, sub = string.find, string.byte, string.sub

local _M = {}

local function ends_with(s, suffix)
    local n = #s - #suffix + 1
    return n >= 1 and find(s, suffix, n, true) == n
end

--- The client API of a request path: "anthropic" for .../messages, else "openai".
function _M.api(path)
    if type(path) == "string" and ends_with(path, "/messages") then
        return "anthropic"
    end
    return "openai"
end

local ROLE = { system = "system", developer = "system", user = "user", assistant = "assistant", tool = "tool",
               ["function"] = "tool" }

-- slots for an OpenAI content value (string or parts) held at t[k] (messages[i])
local function content_slots(t, k, slots, kind, i)
    local c = t[k]
    if type(c) == "string" then
        slots[#slots + 1] = { t = t, k = k, kind = kind, path = { "messages", i, k } }
    elseif type(c) == "table" then
        for j, p in ipairs(c) do
            if type(p) == "table" and (p.type == "text" or p.type == "input_text") and type(p.text) == "string" then
                slots[#slots + 1] = { t = p, k = "text", kind = kind, path = { "messages", i, k, j, "text" } }
            end
        end
    end
end

-- path with one more step
local function child(path, k)
    local p = {}
    for i = 1, #path do p[i] = path[i] end
    p[#path + 1] = k
    return p
end

-- one slot per string value inside a JSON value, however deep (up to the JSON decoder's own limit, lua-cjson's
-- decode_max_depth default 1000: a string deeper than a lower bound would go out unchecked and unmasked)
local function value_slots(t, slots, kind, depth, path)
    if depth > 1000 then return end
    for k, v in pairs(t) do
        if type(v) == "string" then
            slots[#slots + 1] = { t = t, k = k, kind = kind, path = path and child(path, k) }
        elseif type(v) == "table" then
            value_slots(v, slots, kind, depth + 1, path and child(path, k))
        end
    end
end
_M.value_slots = value_slots

local function openai_units(body, out)
    local msgs = body.messages
    if type(msgs) == "table" then
        for i, m in ipairs(msgs) do
            if type(m) == "table" then
                local role = ROLE[m.role] or "user"
                local slots = {}
                content_slots(m, "content", slots, role == "tool" and "tool_result" or "text", i)
                if type(m.tool_calls) == "table" then
                    for j, tc in ipairs(m.tool_calls) do
                        local f = type(tc) == "table" and tc["function"]
                        if type(f) == "table" and type(f.arguments) == "string" then
                            slots[#slots + 1] = { t = f, k = "arguments", kind = "tool_args",
                                                  path = { "messages", i, "tool_calls", j, "function", "arguments" } }
                        end
                    end
                end
                local fc = m.function_call
                if type(fc) == "table" and type(fc.arguments) == "string" then
                    slots[#slots + 1] = { t = fc, k = "arguments", kind = "tool_args",
                                          path = { "messages", i, "function_call", "arguments" } }
                end
                out[#out + 1] = { role = role, index = i, slots = slots }
            end
        end
    end
    for _, key in ipairs({ "prompt", "input" }) do
        local v = body[key]
        local slots = {}
        if type(v) == "string" then
            slots[1] = { t = body, k = key, kind = "text", path = { key } }
        elseif type(v) == "table" then
            for j, x in ipairs(v) do
                if type(x) == "string" then slots[#slots + 1] = { t = v, k = j, kind = "text", path = { key, j } } end
            end
        end
        if #slots > 0 then out[#out + 1] = { role = "user", index = 1, slots = slots } end
    end
end

-- text blocks of content (at path in the body)
local function anthropic_blocks(content, slots, path)
    for j, b in ipairs(content) do
        if type(b) == "table" and b.type == "text" and type(b.text) == "string" then
            local p = child(path, j)
            p[#p + 1] = "text"
            slots[#slots + 1] = { t = b, k = "text", kind = "text", path = p }
        end
    end
end

local function anthropic_units(body, out)
    local sys = body.system
    if type(sys) == "string" then
        out[#out + 1] = { role = "system", index = 0,
                          slots = { { t = body, k = "system", kind = "text", path = { "system" } } } }
    elseif type(sys) == "table" then
        local slots = {}
        anthropic_blocks(sys, slots, { "system" })
        out[#out + 1] = { role = "system", index = 0, slots = slots }
    end
    local msgs = body.messages
    if type(msgs) ~= "table" then return end
    for i, m in ipairs(msgs) do
        if type(m) == "table" then
            local role = m.role == "assistant" and "assistant" or "user"
            local c = m.content
            if type(c) == "string" then
                local slot = { t = m, k = "content", kind = "text", path = { "messages", i, "content" } }
                out[#out + 1] = { role = role, index = i, slots = { slot } }
            elseif type(c) == "table" then
                local slots = {}
                local unit = { role = role, index = i, slots = slots }
                out[#out + 1] = unit
                for j, b in ipairs(c) do
                    if type(b) == "table" then
                        if b.type == "text" and type(b.text) == "string" then
                            slots[#slots + 1] = { t = b, k = "text", kind = "text",
                                                  path = { "messages", i, "content", j, "text" } }
                        elseif b.type == "tool_use" and type(b.input) == "table" then
                            value_slots(b.input, slots, "tool_input", 0, { "messages", i, "content", j, "input" })
                        elseif b.type == "tool_result" then
                            local tslots = {}
                            if type(b.content) == "string" then
                                tslots[1] = { t = b, k = "content", kind = "tool_result",
                                              path = { "messages", i, "content", j, "content" } }
                            elseif type(b.content) == "table" then
                                anthropic_blocks(b.content, tslots, { "messages", i, "content", j, "content" })
                                for _, s in ipairs(tslots) do s.kind = "tool_result" end
                            end
                            out[#out + 1] = { role = "tool", index = i, slots = tslots }
                        end
                    end
                end
            end
        end
    end
end

--- The units of a request body (decoded JSON) for api, in request order (see the header). Never raises.
function _M.units(body, api)
    local out = {}
    if type(body) ~= "table" then return out end
    if api == "anthropic" then
        anthropic_units(body, out)
    else
        openai_units(body, out)
    end
    return out
end

-- sl_chat_spans kinds (core/common/json_locate.h)
local K_ROLE, K_CONTENT, K_PART_TYPE, K_PART_TEXT, K_TOOL_ARGS, K_FC_ARGS, K_PROMPT, K_INPUT = 1, 2, 3, 4, 5, 6, 7, 8
local TEXT_TYPE = { text = true, input_text = true }

-- The string whose JSON text is raw[from..to], or nil when the value there is not a string.
local function string_at(raw, from, to)
    if byte(raw, from) ~= 34 then return nil end
    local s = sub(raw, from + 1, to - 1)
    if find(s, "\\", 1, true) then s = cjson.decode(sub(raw, from, to)) end
    return s
end

local function raw_slot(raw, from, to, kind)
    local s = string_at(raw, from, to)
    if s == nil then return nil end
    return { t = { s }, k = 1, kind = kind, from = from, to = to }
end

--- The units of an OpenAI request (as units(body, "openai") makes them, but those without slots left out) read
--- from its raw bytes, without decoding them: the slots hold their text at t[k] and where it sits (from, to: its
--- JSON text, quotes included). nil when raw is not plain JSON (sluice.ai.common.json.plain_object: the bytes
--- must mean what a decoder makes of them) or too big a request for one pass: then decode it.
local plain_seen -- the last body found plain: the guard and ai-pii read one body in turn (strings are interned)

--- Notes that raw is plain JSON (sluice.ai.common.json.plain_object) without checking it: ai-pii's masks spliced
--- into plain bytes (strict JSON strings in place of strict JSON strings) leave them plain, for ai-moderation next.
function _M.note_plain(raw)
    plain_seen = raw
end

function _M.raw_units(raw)
    if type(raw) ~= "string" then return nil end
    if raw ~= plain_seen then
        if not plain_object(raw) then return nil end
        plain_seen = raw
    end
    local spans, n = splice.chat_spans(raw)
    if not spans then return nil end
    local msgs, last = {}, -1
    local prompt, input = {}, {}
    for i = 0, n - 1 do
        local sp = spans[i]
        local kind, from, to = sp.kind, tonumber(sp.from) + 1, tonumber(sp.to)
        if kind == K_PROMPT or kind == K_INPUT then
            local list = kind == K_PROMPT and prompt or input
            list[#list + 1] = raw_slot(raw, from, to, "text")
        else
            local mi = sp.msg
            local m = msgs[mi]
            if not m then
                m = { parts = {}, tools = {} }
                msgs[mi] = m
                if mi > last then last = mi end
            end
            if kind == K_ROLE then
                m.role = string_at(raw, from, to)
            elseif kind == K_CONTENT then
                m.content = { from, to }
            elseif kind == K_PART_TYPE or kind == K_PART_TEXT then
                local j = sp.sub + 1
                local p = m.parts[j]
                if not p then
                    p = {}
                    m.parts[j] = p
                    m.nparts = j > (m.nparts or 0) and j or m.nparts
                end
                if kind == K_PART_TYPE then p.type = string_at(raw, from, to) else p.from, p.to = from, to end
            elseif kind == K_TOOL_ARGS then
                m.tools[#m.tools + 1] = raw_slot(raw, from, to, "tool_args")
            elseif kind == K_FC_ARGS then
                m.fc = raw_slot(raw, from, to, "tool_args")
            end
        end
    end
    local out = {}
    for mi = 0, last do
        local m = msgs[mi]
        if m then
            local role = ROLE[m.role] or "user"
            local kind = role == "tool" and "tool_result" or "text"
            local slots = {}
            if m.content then
                slots[1] = raw_slot(raw, m.content[1], m.content[2], kind)
            end
            for j = 1, m.nparts or 0 do
                local p = m.parts[j]
                if p and TEXT_TYPE[p.type] and p.from then
                    slots[#slots + 1] = raw_slot(raw, p.from, p.to, kind)
                end
            end
            for _, s in ipairs(m.tools) do slots[#slots + 1] = s end
            slots[#slots + 1] = m.fc
            if #slots > 0 then out[#out + 1] = { role = role, index = mi + 1, slots = slots } end
        end
    end
    if #prompt > 0 then out[#out + 1] = { role = "user", index = 1, slots = prompt } end
    if #input > 0 then out[#out + 1] = { role = "user", index = 1, slots = input } end
    return out
end

--- The text of a unit: its slots' strings joined with "\n".
function _M.unit_text(u)
    local s = u.slots
    if #s == 1 then return s[1].t[s[1].k] end
    local parts = {}
    for i, x in ipairs(s) do parts[i] = x.t[x.k] end
    return table.concat(parts, "\n")
end

--- A refusal (default 400) in the client's shape: OpenAI {"error": {message, type, param, code}}, Anthropic
--- {"type": "error", "error": {type, message}}. Returns status, body table.
function _M.refusal(api, status, message, code)
    status = status or 400
    return status, errors.error_body(api, status, message, nil, code)
end

--- True when t has no key (a helper for plugins checking optional sections).
function _M.empty(t)
    return type(t) ~= "table" or next(t) == nil
end

return _M
