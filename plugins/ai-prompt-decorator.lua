-- ai-prompt-decorator: adds messages before and after the client's messages in chat requests.
--
--   plugins:
--     ai-prompt-decorator:
--       prepend: [{role: system, content: "Answer in English."}]
--       append:  [{role: user, content: "Be concise."}]
--
-- OpenAI format (`messages`): prepend ++ messages ++ append.
-- Anthropic format (`POST .../v1/messages`, or `format: anthropic`): system messages go into the top-level
-- `system` (a string stays a string, joined with a blank line; an array of blocks gets text blocks), user and
-- assistant messages into `messages`.
-- Runs in rewrite at priority 1070: after ai-prompt-template (1071), so a filled-in template is decorated,
-- and before ai-proxy (access), which reads the changed body through sluice.request.get_json().
-- A request without a `messages` array (not a chat request, or not JSON) is passed on unchanged.
local sluice = require("sluice")

local type, ipairs = type, ipairs
local request, log = sluice.request, sluice.log
local find, concat = string.find, table.concat

local message = {
    type = "object",
    required = { "role", "content" },
    additionalProperties = false,
    properties = {
        role = { type = "string", enum = { "system", "user", "assistant" } },
        content = { type = "string", minLength = 1, maxLength = 100000 },
    },
}

local schema = {
    type = "object",
    properties = {
        prepend = { type = "array", items = message, maxItems = 100 },
        append = { type = "array", items = message, maxItems = 100 },
        format = { type = "string", enum = { "auto", "openai", "anthropic" }, default = "auto" },
    },
    anyOf = { { required = { "prepend" } }, { required = { "append" } } },
}

local _M = { name = "ai-prompt-decorator", version = "1.0", priority = 1070, schema = schema }

local function check_nonempty(conf)
    if #(conf.prepend or {}) + #(conf.append or {}) == 0 then
        return nil, "prepend or append must have at least one message"
    end
    return true
end
_M.check = check_nonempty

--- "anthropic" or "openai" for a request path and the configured format.
local function detect(conf_format, path)
    if conf_format ~= "auto" then
        return conf_format
    end
    if find(path, "/messages$") then
        return "anthropic"
    end
    return "openai"
end
_M.detect = detect

local function copy(m)
    return { role = m.role, content = m.content }
end

-- Anthropic: merges system texts into the body's `system` (before or after what is there).
local function add_system(body, texts, before)
    if #texts == 0 then
        return
    end
    local sys = body.system
    if type(sys) == "table" then
        local blocks = {}
        if not before then
            for _, b in ipairs(sys) do blocks[#blocks + 1] = b end
        end
        for _, t in ipairs(texts) do blocks[#blocks + 1] = { type = "text", text = t } end
        if before then
            for _, b in ipairs(sys) do blocks[#blocks + 1] = b end
        end
        body.system = blocks
    else
        local parts = {}
        if not before and type(sys) == "string" and sys ~= "" then parts[1] = sys end
        for _, t in ipairs(texts) do parts[#parts + 1] = t end
        if before and type(sys) == "string" and sys ~= "" then parts[#parts + 1] = sys end
        body.system = concat(parts, "\n\n")
    end
end

--- Decorates a decoded chat body in place for format ("openai" | "anthropic"); returns true when it changed.
function _M.decorate(conf, body, format)
    if type(body) ~= "table" or type(body.messages) ~= "table" then
        return false
    end
    local out = {}
    local sys_before, sys_after = {}, {}
    for _, m in ipairs(conf.prepend or {}) do
        if format == "anthropic" and m.role == "system" then
            sys_before[#sys_before + 1] = m.content
        else
            out[#out + 1] = copy(m)
        end
    end
    for _, m in ipairs(body.messages) do
        out[#out + 1] = m
    end
    for _, m in ipairs(conf.append or {}) do
        if format == "anthropic" and m.role == "system" then
            sys_after[#sys_after + 1] = m.content
        else
            out[#out + 1] = copy(m)
        end
    end
    body.messages = out
    add_system(body, sys_before, true)
    add_system(body, sys_after, false)
    return true
end

function _M.rewrite(conf, ctx)
    local body = request.get_json(ctx)
    if not _M.decorate(conf, body, detect(conf.format, ctx.path)) then
        log.debug("[ai-prompt-decorator] not a chat request, left unchanged")
        return
    end
    request.set_json(body, ctx)
end

return _M
