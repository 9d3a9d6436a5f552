-- key-auth: identifies the consumer from its API key and sets ctx.consumer for the plugins after it.
--
--   consumers:
--     - {name: alice, keys: ["${ALICE_KEY}"], groups: [staff], metadata: {team: payments}}
--   routes:
--     - id: chat
--       paths: ["/v1/chat/completions", "/v1/messages"]
--       plugins:
--         key-auth: {}                 # Authorization: Bearer KEY (OpenAI clients), or x-api-key: KEY (Anthropic)
--
-- Keys are kept as SHA-256 digests (the config loader and the Admin API hash plain ones) and looked up through
-- sluice.consumer.find_by_key: the presented key is hashed once and compared digest to digest in constant time.
-- Without a valid key: 401 in the client's API shape (OpenAI, or Anthropic on /v1/messages), unless
-- `anonymous: true` lets the request go on without a consumer. A consumer whose roles do not allow the route
-- (allow/deny routes on the consumer or its groups) gets 403. The key headers are removed before the request
-- goes upstream (hide_credentials, default true), so a client's key never reaches a provider.
-- Runs in rewrite at priority 2500: before every prompt plugin, so they can read ctx.consumer.
local sluice = require("sluice")

local find, sub, byte = string.find, string.sub, string.byte
local request, consumer = sluice.request, sluice.consumer

local _M = {
    name = "key-auth", version = "1.1", priority = 2500,
    schema = {
        type = "object",
        additionalProperties = false,
        properties = {
            anonymous = { type = "boolean", default = false },
            hide_credentials = { type = "boolean", default = true },
        },
    },
}

--- The key a request carries (Bearer token first, then x-api-key), or nil.
-- (bytes compared one by one: pattern find and gsub are not compiled by LuaJIT, and this runs on every request)
local function space(b)
    return b == 32 or (b ~= nil and b >= 9 and b <= 13) -- %s: space, \t \n \v \f \r
end

function _M.key_of(ctx)
    local auth = request.get_header("authorization", ctx)
    if auth and #auth > 7 and (byte(auth, 1) == 66 or byte(auth, 1) == 98) and sub(auth, 2, 6) == "earer"
        and space(byte(auth, 7)) then
        local i = 8
        while space(byte(auth, i)) do
            i = i + 1
        end
        if i <= #auth then return sub(auth, i) end
    end
    local k = request.get_header("x-api-key", ctx)
    if k and k ~= "" then return k end
    return nil
end

local function refuse(ctx, status, msg)
    if find(ctx.path, "/messages$") then
        local typ = status == 401 and "authentication_error" or "permission_error"
        return status, { type = "error", error = { type = typ, message = msg } }
    end
    return status, { error = { message = msg, type = status == 401 and "invalid_request_error" or "permission_error",
                               code = status == 401 and "invalid_api_key" or "route_not_allowed" } }
end

-- The phase runs in a function of its own, called (not tail-called) from the entry point: run_phase calls
-- plugins through pcall, and a LuaJIT trace cannot return through a pcall it did not start in, so a phase
-- function's own body never compiles; this one does.
local function rewrite_phase(conf, ctx)
    local key = _M.key_of(ctx)
    local c = key and consumer.find_by_key(key, ctx)
    if conf.hide_credentials then
        request.clear_header("authorization", ctx)
        request.clear_header("x-api-key", ctx)
    end
    if c then
        consumer.set(c, ctx)
        local ok, why = consumer.allowed("route", ctx.route and ctx.route.id, ctx)
        if not ok then
            return refuse(ctx, 403, why)
        end
        return
    end
    if conf.anonymous then
        return
    end
    return refuse(ctx, 401, key and "invalid API key" or "missing API key (Authorization: Bearer KEY or x-api-key)")
end

function _M.rewrite(conf, ctx)
    local a, b = rewrite_phase(conf, ctx)
    return a, b
end

return _M
