-- ai-prompt-guard: refuses chat requests whose text matches a deny pattern (or, with allow patterns, matches none),
-- before anything leaves for a provider. Both client formats (OpenAI and Anthropic, see sluice.ai.safety.request
-- for what counts as text: string and part-array content, Anthropic system and blocks, tool calls and results).
--
--   ai-prompt-guard:
--     deny:                                   # PCRE2 (sluice.re), compiled once per config
--       - {name: ssn-request, pattern: '\bsocial security number\b', flags: i}
--       - 'ignore (all|any) previous instructions'          # a bare pattern is named deny[2]
--     allow: [{name: on-topic, pattern: '(?i)invoice|order|refund'}]   # optional: text must match one
--     roles: [user]                           # system, user, assistant, tool (default user)
--     history: false                          # true: every message of those roles; false: the last one
--     message: "Your request was blocked by the content policy."
--
-- A refusal is a 400 in the client's shape (OpenAI error code "prompt_blocked", Anthropic invalid_request_error)
-- with `message`; the log and ctx.safety.guard name the rule, never the text it matched. Runs in rewrite (1058):
-- after the prompt plugins built the final prompt, before ai-pii masks it (1056). See docs/ai-prompt-guard.md.
local sluice = require("sluice")
local sreq = require("sluice.ai.safety.request")
local safety = require("sluice.ai.safety")

local type, ipairs, tostring, tonumber = type, ipairs, tostring, tonumber

local rule = {
    type = { "string", "object" },
    additionalProperties = false,
    required = { "pattern" },
    minLength = 1,
    properties = {
        name = { type = "string", minLength = 1, maxLength = 128, pattern = "^[%w%._%-]+$" },
        pattern = { type = "string", minLength = 1, maxLength = 16384 },
        -- i caseless, m multiline, s dotall, x extended
        flags = { type = "string", pattern = "^[imsx]*$", default = "" },
    },
}

local _M = {
    name = "ai-prompt-guard",
    version = "1.0",
    priority = 1058,
    schema = {
        type = "object",
        additionalProperties = false,
        properties = {
            deny = { type = "array", items = rule, default = {}, maxItems = 1000 },
            allow = { type = "array", items = rule, default = {}, maxItems = 1000 },
            roles = { type = "array", minItems = 1, uniqueItems = true, default = { "user" },
                      items = { enum = { "system", "user", "assistant", "tool" } } },
            history = { type = "boolean", default = false },
            message = { type = "string", minLength = 1, maxLength = 4096,
                        default = "The request was blocked by the content policy." },
        },
    },
}

local log = sluice.log.named(_M.name)

-- {name, pattern, flags} for each rule of list (a bare string gets a positional name).
local function rules_of(list, what)
    local out = {}
    for i, r in ipairs(list) do
        if type(r) == "string" then
            out[i] = { name = what .. "[" .. i .. "]", pattern = r, flags = "" }
        else
            out[i] = { name = r.name or (what .. "[" .. i .. "]"), pattern = r.pattern, flags = r.flags or "" }
        end
    end
    return out
end

-- One set per list (sluice.re.set): matched as one alternation would be, each rule meaning what it means alone
-- (its own group numbers and names), and rules whose literals are absent from a text never run over it.
local function compile_list(list, what)
    if #list == 0 then return nil end
    local rules = rules_of(list, what)
    local members, names = {}, {}
    for i, r in ipairs(rules) do
        members[i] = { pattern = r.pattern, flags = r.flags }
        names[i] = r.name
    end
    local set, err = sluice.re.set(members)
    if not set then
        -- "[i]: ..." from the set: report the rule by its position and name
        local i = tonumber(tostring(err):match("^%[(%d+)%]"))
        if i and rules[i] then
            return nil, what .. "[" .. i .. "] (" .. rules[i].name .. "): " .. tostring(err):gsub("^%[%d+%]: ", "")
        end
        return nil, what .. ": " .. tostring(err)
    end
    return { set = set, names = names }
end

--- Compiles conf's patterns: {deny = compiled | nil, allow = compiled | nil, roles = set} | nil, err.
function _M.compile(conf)
    local deny, err = compile_list(conf.deny or {}, "deny")
    if err then return nil, err end
    local allow
    allow, err = compile_list(conf.allow or {}, "allow")
    if err then return nil, err end
    local roles = {}
    for _, r in ipairs(conf.roles or { "user" }) do roles[r] = true end
    return { deny = deny, allow = allow, roles = roles }
end

function _M.check(conf)
    local _, err = _M.compile(conf)
    if err then return nil, err end
    return true
end

-- The name of the rule of c that matches text (the match that starts first; at one start, the earlier rule), or
-- nil; nil, err on a match error.
local function first_match(c, text)
    local from, to_or_err, i = c.set:exec(text)
    if not from then return nil, to_or_err end
    return c.names[i]
end

--- The verdict for units (sluice.ai.safety.request): nil when they pass, else {kind = "deny" | "allow" | "error",
--- rule, role, index}.
function _M.verdict_units(compiled, units)
    local roles = compiled.roles
    local list = {}
    for _, u in ipairs(units) do
        if roles[u.role] and #u.slots > 0 then list[#list + 1] = u end
    end
    if not compiled.history and #list > 1 then
        list = { list[#list] }
    end
    for _, u in ipairs(list) do
        local text = sreq.unit_text(u)
        if compiled.deny then
            local name, err = first_match(compiled.deny, text)
            if err then return { kind = "error", rule = "match error: " .. tostring(err), role = u.role,
                                 index = u.index } end
            if name then return { kind = "deny", rule = name, role = u.role, index = u.index } end
        end
        if compiled.allow then
            local name, err = first_match(compiled.allow, text)
            if err then return { kind = "error", rule = "match error: " .. tostring(err), role = u.role,
                                 index = u.index } end
            if not name then return { kind = "allow", rule = "allow", role = u.role, index = u.index } end
        end
    end
    return nil
end

--- The verdict for a decoded request body (pure: for specs).
function _M.verdict(compiled, body, api)
    return _M.verdict_units(compiled, sreq.units(body, api))
end

local function build(conf)
    local c, err = _M.compile(conf)
    if not c then return nil, err end
    c.history = conf.history
    return c
end

function _M.rewrite(conf, ctx)
    local api = sreq.api(ctx.path)
    -- an OpenAI request whose bytes are plain JSON is read where its texts sit, without decoding it
    local units = api == "openai" and sreq.raw_units(sluice.request.json_bytes(ctx)) or nil
    if not units then
        local body = sluice.request.peek_json(ctx) -- read only: unchanged bytes still go upstream as sent
        if type(body) ~= "table" then
            return -- not JSON: not a chat request (ai-proxy answers it with its own 400)
        end
        units = sreq.units(body, api)
    end
    local compiled, err = safety.per_conf(conf, build)
    if not compiled then
        log.err("cannot compile the patterns (id ", ctx.request_id, "): ", err)
        return sreq.refusal(api, 500, "the prompt guard is misconfigured (id " .. ctx.request_id .. ")")
    end
    local v = _M.verdict_units(compiled, units)
    local rec = safety.record(ctx, "guard")
    if not v then
        rec.action = "pass"
        return
    end
    rec.action, rec.kind, rec.rule, rec.role, rec.message_index = "block", v.kind, v.rule, v.role, v.index
    if v.kind == "allow" then
        log.warn("request refused (id ", ctx.request_id, "): the ", v.role, " message ", v.index,
            " matches no allow rule")
    else
        log.warn("request refused (id ", ctx.request_id, "): ", v.kind, " rule \"", v.rule, "\" matched the ",
            v.role, " message ", v.index)
    end
    return sreq.refusal(api, 400, conf.message, "prompt_blocked")
end

function _M.log(conf, ctx)
    local s = ctx.safety and ctx.safety.guard
    if s and sluice.log.access_enabled() then
        sluice.log.access("prompt_guard", { action = s.action, rule = s.rule, kind = s.kind, role = s.role })
    end
end

return _M
