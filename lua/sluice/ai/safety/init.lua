-- sluice.ai.safety: what the content-safety plugins (ai-prompt-guard, ai-pii, ai-moderation) share: the outcome
-- record of a request, read by logs and metrics.
--
--   local safety = require("sluice.ai.safety")
--   local rec = safety.record(ctx, "pii")     -- ctx.safety.pii (created), linked to the AI usage record
--
-- ctx.safety (also sluice.ai.get_safety(ctx), and usage.safety on the AI usage record once ai-proxy made one) is
-- {guard = {...}, pii = {...}, moderation = {...}}, each section present only when its plugin ran
-- (docs/ai-safety.md, "The outcome record"). It never holds a detected value or a matched text.
local type = type

local _M = {}

--- Links ctx.safety to the AI usage record when there is one (idempotent).
function _M.link(ctx)
    local s = ctx.safety
    local ai = ctx.ai
    local u = ai and ai.usage
    if s and type(u) == "table" and u.safety ~= s then
        u.safety = s
    end
end

--- The section `name` of ctx.safety (created empty when missing), linked to the usage record.
function _M.record(ctx, name)
    local s = ctx.safety
    if not s then
        s = {}
        ctx.safety = s
    end
    local r = s[name]
    if not r then
        r = {}
        s[name] = r
    end
    _M.link(ctx)
    return r
end

-- Per-config caches (compiled patterns, scanners): keyed by the conf table, which a new config replaces.
local caches = setmetatable({}, { __mode = "k" })

--- The value build(conf) made for this conf table (built on first use, kept while the conf lives); build returns
--- value | nil, err, and an error is returned every time (the conf was validated, so this means a worker differs).
function _M.per_conf(conf, build)
    local v = caches[conf]
    if v == nil then
        local err
        v, err = build(conf)
        if v == nil then
            return nil, err
        end
        caches[conf] = v
    end
    return v
end

return _M
