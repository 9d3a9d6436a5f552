-- key-auth: identifies the consumer from its API key and sets ctx.consumer for the plugins after it.
--
--   consumers:
--     - {name: alice, keys: ["${ALICE_KEY}"], groups: [staff], metadata: {team: payments}}
--   routes:
--     - id: chat
--       paths: ["/v1/chat/completions", "/v1/messages"]
--       plugins:
--         key-auth: {}                 # Authorization: Bearer KEY, or x-api-key: KEY
--
-- Without a valid key: 401 in the client's API shape (OpenAI, or Anthropic on /v1/messages), unless
-- `anonymous: true` lets the request go on without a consumer. The key headers are removed before the request
-- goes upstream (hide_credentials, default true), so a client's key never reaches a provider.
-- Runs in rewrite at priority 2500: before every prompt plugin, so they can read ctx.consumer.
local sluice = require("sluice")

local ipairs, find, sub, gsub = ipairs, string.find, string.sub, string.gsub
local request = sluice.request

local _M = {
    name = "key-auth", version = "1.0", priority = 2500,
    schema = {
        type = "object",
        additionalProperties = false,
        properties = {
            anonymous = { type = "boolean", default = false },
            hide_credentials = { type = "boolean", default = true },
        },
    },
}

-- key -> consumer, built once per config (ctx.config is one table per config version).
local index_cache = setmetatable({}, { __mode = "k" })
local function index_of(cfg)
    local idx = index_cache[cfg]
    if not idx then
        idx = {}
        for _, c in ipairs(cfg.consumers or {}) do
            for _, k in ipairs(c.keys or {}) do idx[k] = c end
        end
        index_cache[cfg] = idx
    end
    return idx
end

--- The key a request carries (Bearer token first, then x-api-key), or nil.
function _M.key_of(ctx)
    local auth = request.get_header("authorization", ctx)
    if auth and find(auth, "^[Bb]earer%s") then
        local k = gsub(sub(auth, 8), "^%s+", "")
        if k ~= "" then return k end
    end
    local k = request.get_header("x-api-key", ctx)
    if k and k ~= "" then return k end
    return nil
end

local function unauthorized(ctx, msg)
    if find(ctx.path, "/messages$") then
        return 401, { type = "error", error = { type = "authentication_error", message = msg } }
    end
    return 401, { error = { message = msg, type = "invalid_request_error", code = "invalid_api_key" } }
end

function _M.rewrite(conf, ctx)
    local key = _M.key_of(ctx)
    local consumer = key and ctx.config and index_of(ctx.config)[key]
    if conf.hide_credentials then
        request.clear_header("authorization", ctx)
        request.clear_header("x-api-key", ctx)
    end
    if consumer then
        ctx.consumer = consumer
        return
    end
    if conf.anonymous then
        return
    end
    return unauthorized(ctx, key and "invalid API key" or "missing API key (Authorization: Bearer KEY or x-api-key)")
end

return _M
