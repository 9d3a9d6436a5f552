-- consumer-prompt (example, the worked example of docs/plugins.md): tells the model who is asking, from the
-- calling consumer's metadata.
--
--   consumers:
--     - {name: alice, keys: ["${ALICE_KEY}"], metadata: {team: payments, locale: de-DE}}
--   routes:
--     - id: chat
--       paths: ["/v1/chat/completions", "/v1/messages"]
--       plugins:
--         consumer-prompt:
--           text: "The user is {{name}} from the {{team}} team. Answer in {{locale}}."
--           defaults: {locale: en-US}
--           require_consumer: true
--
-- The consumer is ctx.consumer when an auth plugin set it; otherwise this plugin finds it itself from
-- `Authorization: Bearer KEY` or `x-api-key: KEY` among the configured consumers (ctx.config.consumers).
-- {{name}} is the consumer's name, {{x}} any metadata field x (or defaults.x, else empty).
-- The text is prepended as a system message (OpenAI) or in front of `system` (Anthropic /v1/messages).
local sluice = require("sluice")

local type, tostring, gsub, find, sub = type, tostring, string.gsub, string.find, string.sub
local request = sluice.request

local _M = {
    name = "consumer-prompt", version = "1.0", priority = 1065, -- after the template (1071) and decorator (1070)
    schema = {
        type = "object",
        required = { "text" },
        additionalProperties = false,
        properties = {
            text = { type = "string", minLength = 1 },
            defaults = { type = "object", additionalProperties = { type = "string" }, default = {} },
            require_consumer = { type = "boolean", default = false },
        },
    },
}

--- The key a client sent (Bearer token or x-api-key), or nil.
local function client_key(ctx)
    local auth = request.get_header("authorization", ctx)
    if auth and find(auth, "^[Bb]earer ") then
        return (gsub(sub(auth, 8), "^%s+", ""))
    end
    return request.get_header("x-api-key", ctx)
end

--- The calling consumer: ctx.consumer, or the configured consumer owning the request's key (cached in ctx).
function _M.consumer(ctx)
    if ctx.consumer then
        return ctx.consumer
    end
    local key = client_key(ctx)
    if not key or key == "" then
        return nil
    end
    -- keys are kept hashed: the PDK hashes the presented one and compares digests in constant time
    local c = sluice.consumer.find_by_key(key, ctx)
    if c then
        sluice.consumer.set(c, ctx)
    end
    return c
end

--- conf.text with {{name}} and {{field}} filled from consumer c (pure, for specs).
function _M.render(conf, c)
    local meta = c.metadata or {}
    return (gsub(conf.text, "{{%s*([%w_]+)%s*}}", function(k)
        if k == "name" then return c.name end
        local v = meta[k]
        if v == nil then v = conf.defaults[k] end
        return v ~= nil and tostring(v) or ""
    end))
end

function _M.rewrite(conf, ctx)
    local c = _M.consumer(ctx)
    if not c then
        if conf.require_consumer then
            return 401, { error = { message = "a valid API key is required", type = "invalid_request_error",
                                    code = "invalid_api_key" } }
        end
        return
    end
    local body = request.get_json(ctx)
    if type(body) ~= "table" or type(body.messages) ~= "table" then
        return
    end
    local text = _M.render(conf, c)
    if find(ctx.path, "/messages$") then -- Anthropic: system is top level
        local sys = body.system
        if type(sys) == "table" then
            table.insert(sys, 1, { type = "text", text = text })
        else
            body.system = (type(sys) == "string" and sys ~= "") and (text .. "\n\n" .. sys) or text
        end
    else
        table.insert(body.messages, 1, { role = "system", content = text })
    end
    request.set_json(body, ctx)
end

return _M
