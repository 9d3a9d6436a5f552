-- token-limit (example): rejects chat requests whose estimated size is over a token budget, with 413 in the
-- shape of the API the client called, before any upstream is paid for.
--
--   plugins:
--     token-limit: {max_tokens: 8000}            # prompt estimate + requested max_tokens
--
-- The estimate is cheap and deliberately rough: characters / chars_per_token (default 4) of every text in
-- messages (and Anthropic's system), plus 4 tokens per message; with count_completion (default true) the
-- requested max_tokens / max_completion_tokens is added. It is kept in ctx.token_estimate for later plugins.
local sluice = require("sluice")

local type, ipairs, pairs, ceil, find = type, ipairs, pairs, math.ceil, string.find
local request = sluice.request

local _M = {
    name = "token-limit", version = "1.0", priority = 1050, -- access, before ai-proxy (1040)
    schema = {
        type = "object",
        required = { "max_tokens" },
        properties = {
            max_tokens = { type = "integer", minimum = 1 },
            chars_per_token = { type = "number", exclusiveMinimum = 0, default = 4 },
            count_completion = { type = "boolean", default = true },
        },
    },
}

local function chars(v)
    if type(v) == "string" then
        return #v
    elseif type(v) == "table" then
        local n = 0
        for k, x in pairs(v) do
            if k == "text" or k == "content" or type(k) == "number" then n = n + chars(x) end
        end
        return n
    end
    return 0
end

--- Estimated tokens for a decoded chat body (pure, for specs); nil when it is not a chat body.
function _M.estimate(conf, body)
    if type(body) ~= "table" or type(body.messages) ~= "table" then
        return nil
    end
    local n = chars(body.system)
    for _, m in ipairs(body.messages) do
        n = n + chars(type(m) == "table" and m.content)
    end
    local tokens = ceil(n / conf.chars_per_token) + 4 * #body.messages
    if conf.count_completion then
        local mt = body.max_completion_tokens or body.max_tokens
        if type(mt) == "number" and mt > 0 then tokens = tokens + mt end
    end
    return tokens
end

function _M.access(conf, ctx)
    local tokens = _M.estimate(conf, request.get_json(ctx))
    if not tokens then
        return
    end
    ctx.token_estimate = tokens
    if tokens <= conf.max_tokens then
        return
    end
    local msg = ("request too large: about %d tokens, this route allows %d"):format(tokens, conf.max_tokens)
    sluice.log.info("[token-limit] ", msg)
    if find(ctx.path, "/messages$") then
        return 413, { type = "error", error = { type = "request_too_large", message = msg } }
    end
    return 413, { error = { message = msg, type = "invalid_request_error", code = "context_length_exceeded" } }
end

return _M
