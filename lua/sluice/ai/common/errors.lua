-- sluice.ai.common.errors: error vocabularies of the client APIs and the error tables drivers return
-- ({status, type, message, code?, param?, retry_after?}).
local http = require("sluice.ai.common.http")
local json = require("sluice.ai.common.json")

local type, pairs, tostring, tonumber = type, pairs, tostring, tonumber
local sub = string.sub
local null = json.null

local _M = {}

local OPENAI_TYPE = {
    [400] = "invalid_request_error", [401] = "authentication_error", [403] = "permission_error",
    [404] = "not_found_error", [408] = "timeout", [409] = "conflict_error", [413] = "invalid_request_error",
    [422] = "invalid_request_error", [429] = "rate_limit_error",
}
local ANTHROPIC_TYPE = {
    [400] = "invalid_request_error", [401] = "authentication_error", [402] = "billing_error",
    [403] = "permission_error", [404] = "not_found_error", [408] = "timeout_error", [413] = "request_too_large",
    [422] = "invalid_request_error", [429] = "rate_limit_error", [503] = "overloaded_error",
    [529] = "overloaded_error", [504] = "timeout_error",
}
local ANTHROPIC_TYPES = {}
for _, v in pairs(ANTHROPIC_TYPE) do ANTHROPIC_TYPES[v] = true end
ANTHROPIC_TYPES.api_error = true

--- Error type for a status in the OpenAI vocabulary.
function _M.openai_error_type(status)
    status = tonumber(status) or 500
    return OPENAI_TYPE[status] or (status >= 500 and "server_error" or "invalid_request_error")
end

--- Error type for a status in the Anthropic vocabulary.
function _M.anthropic_error_type(status)
    status = tonumber(status) or 500
    return ANTHROPIC_TYPE[status] or (status >= 500 and "api_error" or "invalid_request_error")
end

--- Error body in the shape of the client's API.
---   openai:    {error = {message, type, param = null, code}}
---   anthropic: {type = "error", error = {type, message}}
function _M.error_body(api, status, message, typ, code)
    message = message or "error"
    if api == "anthropic" then
        if not (typ and ANTHROPIC_TYPES[typ]) then typ = _M.anthropic_error_type(status) end
        return { type = "error", error = { type = typ, message = message } }
    end
    return {
        error = {
            message = message,
            type = typ or _M.openai_error_type(status),
            param = null,
            code = code == nil and null or code,
        },
    }
end

--- Generic error table for a non-2xx response whose body we could not understand.
function _M.generic_error(status, headers, body, prefix)
    local msg = type(body) == "string" and body ~= "" and sub(body, 1, 500) or ("HTTP " .. tostring(status))
    return {
        status = tonumber(status) or 502,
        type = _M.openai_error_type(status),
        message = (prefix and (prefix .. ": ") or "") .. msg,
        retry_after = http.retry_after(headers),
    }
end

--- Error table for an upstream 2xx body that is not the JSON we expected.
function _M.bad_upstream(message)
    return { status = 502, type = "api_error", message = message or "invalid upstream response" }
end

return _M
