-- prompt-tagger (example): sets a request header from regular expressions over the prompt, so upstreams,
-- logs or later plugins can route on the topic of a request.
--
--   plugins:
--     prompt-tagger:
--       header: x-prompt-topic
--       rules:
--         - {pattern: '(?i)\b(invoice|refund|billing)\b', value: billing}
--         - {pattern: '(?i)\border\s+#?(\d+)', value: 'order-$1'}      # $1..$9: capture groups
--       default: general                                              # when nothing matches (else no header)
--
-- Rules are PCRE2 regexes (sluice.re, compiled once and cached: flag "jo"); the first rule that matches the
-- text of the last user message (or every message with scan: all) wins.
local sluice = require("sluice")

local type, ipairs, concat, gsub, tonumber = type, ipairs, table.concat, string.gsub, tonumber
local re, request = sluice.re, sluice.request

local _M = {
    name = "prompt-tagger", version = "1.0", priority = 1060,
    schema = {
        type = "object",
        required = { "rules" },
        properties = {
            header = { type = "string", pattern = "^[%w%-]+$", default = "x-prompt-topic" },
            rules = {
                type = "array", minItems = 1,
                items = { type = "object", required = { "pattern", "value" }, additionalProperties = false,
                          properties = { pattern = { type = "string", minLength = 1 }, value = { type = "string" } } },
            },
            default = { type = "string" },
            scan = { type = "string", enum = { "last_user", "all" }, default = "last_user" },
        },
    },
}

function _M.check(conf)
    for i, r in ipairs(conf.rules) do
        local _, err = re.find("", r.pattern, "jo")
        if err then
            return nil, "rules[" .. i .. "].pattern: " .. err
        end
    end
    return true
end

-- The text of one message's content: a string, or the text parts of an array of parts.
local function text_of(content)
    if type(content) == "string" then
        return content
    end
    local out = {}
    if type(content) == "table" then
        for _, part in ipairs(content) do
            if type(part) == "table" and type(part.text) == "string" then out[#out + 1] = part.text end
        end
    end
    return concat(out, "\n")
end

--- The text the rules look at (pure, for specs).
function _M.prompt_text(body, scan)
    local msgs = type(body) == "table" and body.messages
    if type(msgs) ~= "table" then
        return nil
    end
    if scan == "all" then
        local out = {}
        for _, m in ipairs(msgs) do
            if type(m) == "table" then out[#out + 1] = text_of(m.content) end
        end
        return concat(out, "\n")
    end
    for i = #msgs, 1, -1 do
        local m = msgs[i]
        if type(m) == "table" and m.role == "user" then
            return text_of(m.content)
        end
    end
    return nil
end

--- The tag for a text: the first matching rule's value with $N filled in, else conf.default.
function _M.tag(conf, text)
    if text then
        for _, r in ipairs(conf.rules) do
            local m = re.match(text, r.pattern, "jo")
            if m then
                return (gsub(r.value, "%$(%d)", function(n) return m[tonumber(n)] or "" end))
            end
        end
    end
    return conf.default
end

function _M.rewrite(conf, ctx)
    local tag = _M.tag(conf, _M.prompt_text(request.get_json(ctx), conf.scan))
    if tag then
        request.set_header(conf.header, tag, ctx)
        ctx.prompt_tag = tag
    end
end

return _M
