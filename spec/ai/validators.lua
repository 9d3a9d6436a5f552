-- Strict validators of the requests each provider kind accepts, written from the providers' API references
-- (one module per kind, see their headers). Used by the driver specs (every request a driver builds is
-- checked) and by tests/mock/providers.js in strict mode (through serve.lua), so the mock providers answer an
-- invalid request with the 400 the real one would give.
--
--   local V = require("ai.validators")
--   V.check(kind, {method, path, headers, body = string | table}) -> {"path: message", ...} (empty: valid)
--   V.assert_valid(kind, req)                                       raises with every error
local cjson = require("cjson.safe")

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local concat = table.concat

local _M = {}

local CHECK = {
    openai = function(req) return require("ai.validators.openai").check(req) end,
    ["openai-compatible"] = function(req) return require("ai.validators.openai").check_compatible(req) end,
    ["azure-openai"] = function(req) return require("ai.validators.azure-openai").check(req) end,
    deepseek = function(req) return require("ai.validators.deepseek").check(req) end,
    anthropic = function(req) return require("ai.validators.anthropic").check(req) end,
    gemini = function(req) return require("ai.validators.gemini").check(req) end,
    bedrock = function(req) return require("ai.validators.bedrock").check(req) end,
}
_M.KINDS = { "openai", "openai-compatible", "azure-openai", "deepseek", "anthropic", "gemini", "bedrock" }

-- Keys whose value is always an object / always an array in these APIs. Decoded JSON cannot tell [] from {},
-- so the raw text is searched: an empty table encoded with the wrong brackets is a 400 at the provider.
local OBJECT_KEYS = { "properties", "args", "input", "response", "parameters", "inputSchema", "json", "auto", "any",
    "toolChoice", "generationConfig", "inferenceConfig", "functionCallingConfig", "image_url", "function",
    "logit_bias", "stream_options", "thinkingConfig", "source", "input_schema", "metadata", "toolConfig",
    "responseSchema", "systemInstruction", "additionalModelRequestFields", "cache_control", "thinking" }
local ARRAY_KEYS = { "messages", "contents", "parts", "tools", "functionDeclarations", "stopSequences",
    "stop_sequences", "required", "enum", "anyOf", "tool_calls", "allowedFunctionNames", "safetySettings",
    "requests", "propertyOrdering" }

local function raw_shapes(raw, errs)
    for _, k in ipairs(OBJECT_KEYS) do
        if raw:find('"' .. k .. '":%[%]') then errs[#errs + 1] = k .. ": expected an object, got [] (JSON text)" end
    end
    for _, k in ipairs(ARRAY_KEYS) do
        if raw:find('"' .. k .. '":{}') then errs[#errs + 1] = k .. ": expected an array, got {} (JSON text)" end
    end
end

--- Every error of req for a provider of this kind (empty list: valid). req.body may be the JSON text.
function _M.check(kind, req)
    local check = CHECK[kind]
    if not check then return { "no validator for kind " .. tostring(kind) } end
    local errs = {}
    local r = {}
    for k, v in pairs(req) do r[k] = v end
    if type(r.body) == "string" then
        raw_shapes(r.body, errs)
        local t, err = cjson.decode(r.body)
        if t == nil then
            errs[#errs + 1] = "body: invalid JSON (" .. tostring(err) .. ")"
            return errs
        end
        r.body = t
    end
    if r.body == nil and r.method ~= "GET" then
        errs[#errs + 1] = "body: missing"
        return errs
    end
    for _, e in ipairs(check(r)) do errs[#errs + 1] = e end
    return errs
end

--- Raises (level 2) listing every error of req, if any.
function _M.assert_valid(kind, req)
    local errs = _M.check(kind, req)
    if #errs > 0 then
        error(kind .. " would reject " .. tostring(req.method) .. " " .. tostring(req.path) .. ":\n  "
            .. concat(errs, "\n  ") .. "\nbody: " .. tostring(type(req.body) == "string" and req.body:sub(1, 2000)
            or cjson.encode(req.body)), 2)
    end
    return req
end

return _M
