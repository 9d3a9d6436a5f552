-- sluice.ai.common.params: which request parameters each provider takes, and what happens to the others.
--
-- A client speaks the OpenAI Chat Completions API (or the Anthropic one, translated to it); a provider takes a
-- subset of those parameters. Each driver names what it takes (`accepts`: sent as is or translated); any
-- other parameter the client set (not null) is dropped when the provider's `options.drop_params` is true
-- (the default) or refused with a 400 naming it when false, as LiteLLM's drop_params does.
local json = require("sluice.ai.common.json")

local type, pairs, ipairs, tostring, rawget, setmetatable = type, pairs, ipairs, tostring, rawget, setmetatable
local sort, concat = table.sort, table.concat
local nn = json.nn

local _M = {}

--- A set from a list (or several lists).
function _M.set(...)
    local s = {}
    for _, list in ipairs({ ... }) do
        for _, k in ipairs(list) do s[k] = true end
    end
    return s
end

-- Transport and identity fields every driver handles itself.
_M.BASE = { "model", "messages", "stream", "stream_options" }

--- Whether the provider drops the parameters it does not take (else it refuses them).
function _M.drops(provider)
    local o = provider and provider.options
    return not (type(o) == "table" and o.drop_params == false)
end

-- The key under which an all_but set keeps the names it excludes: unsupported() reads them directly instead of
-- calling the set's __index for every key of every request.
local EXCLUDED = {}

--- A set taking every parameter but `names` (a list).
function _M.all_but(names)
    local no = _M.set(names)
    return setmetatable({ [EXCLUDED] = no }, { __index = function(_, k) return not no[k] end })
end

-- The parameters of body that accepts does not cover (not null), sorted, or nil when there are none (most
-- requests: no table made).
local function extra_of(body, accepts)
    local no = rawget(accepts, EXCLUDED)
    local out
    for k, v in pairs(body) do
        local refused
        if no then
            refused = no[k]
        else
            refused = not accepts[k]
        end
        if refused and nn(v) ~= nil then
            out = out or {}
            out[#out + 1] = tostring(k)
        end
    end
    if out then
        sort(out)
    end
    return out
end

--- The names an all_but set excludes (a sorted list), or nil for any other set.
function _M.excluded(accepts)
    local no = rawget(accepts, EXCLUDED)
    if not no then return nil end
    local list = {}
    for k in pairs(no) do list[#list + 1] = k end
    sort(list)
    return list
end

--- The parameters of body (a chat request) that `accepts` (a set) does not cover, sorted.
function _M.unsupported(body, accepts)
    return extra_of(body, accepts) or {}
end

local function refusal(kind, extra)
    return kind .. ": " .. (#extra == 1 and "parameter " or "parameters ") .. concat(extra, ", ")
        .. (#extra == 1 and " is" or " are") .. " not supported by this provider"
        .. " (options.drop_params: true drops what a provider does not take)"
end

--- Applies the provider's policy to body: drops the parameters `accepts` does not cover (body is changed:
--- pass a copy) and returns body, or returns nil, err when the provider refuses them.
function _M.apply(kind, provider, body, accepts)
    local extra = extra_of(body, accepts)
    if not extra then return body end
    if not _M.drops(provider) then return nil, refusal(kind, extra) end
    for _, k in ipairs(extra) do body[k] = nil end
    return body
end

--- For drivers that translate (they send only what they map, so dropping costs nothing): true, or nil, err
--- when the provider refuses a parameter `accepts` does not cover. body is not changed.
function _M.check(kind, provider, body, accepts)
    if _M.drops(provider) then return true end
    local extra = extra_of(body, accepts)
    if not extra then return true end
    return nil, refusal(kind, extra)
end

return _M
