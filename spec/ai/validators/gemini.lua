-- Strict validator of Gemini API requests, written from the Gemini API reference
-- (ai.google.dev/api/generate-content, /api/caching#Content, #Part, #Schema, #FunctionDeclaration,
-- /api/embeddings) and the 400s the API documents:
--   POST /v1beta/models/{model}:generateContent | :streamGenerateContent?alt=sse | :batchEmbedContents
--   GET /v1beta/models; auth x-goog-api-key (or ?key=)
--   contents: role user | model, parts non-empty, each part sets exactly one data field (text, inlineData,
--     fileData, functionCall, functionResponse, executableCode, codeExecutionResult), text non-empty
--   Schema (an OpenAPI 3.0 subset): only its fields; enum an array of non-empty strings on a STRING type;
--     properties only on OBJECT, items only on ARRAY; required names among the properties
--   "function call turn comes immediately after a user turn or after a function response turn";
--   "function response turn comes immediately after a function call turn", one response per call;
--   Gemini 3 models: "Function call is missing a thought_signature in functionCall parts" for the first
--     functionCall part of every model turn of the current turn (docs: /gemini-api/docs/thought-signatures)
local C = require("ai.validators.check")

local str, num, int, bool, arr, obj, map = C.str, C.num, C.int, C.bool, C.arr, C.obj, C.map
local add, join = C.add, C.join

local _M = {}

local TYPES = { TYPE_UNSPECIFIED = true, STRING = true, NUMBER = true, INTEGER = true, BOOLEAN = true, ARRAY = true,
    OBJECT = true, NULL = true }
local FORMATS = { STRING = { enum = true, ["date-time"] = true }, NUMBER = { float = true, double = true },
    INTEGER = { int32 = true, int64 = true } }
local B64 = "^[A-Za-z0-9+/_%-]*=*$"

local schema -- forward
local SCHEMA_FIELDS = {
    type = function(v, p, e)
        if type(v) ~= "string" or not TYPES[v:upper()] then add(e, p, "Invalid value " .. C.describe(v) .. " (Type)") end
    end,
    format = str(), title = str(), description = str(), nullable = bool(),
    enum = arr(str({ min = 1 }), { min = 1 }),
    maxItems = C.any(), minItems = C.any(), minProperties = C.any(), maxProperties = C.any(),
    minLength = C.any(), maxLength = C.any(), pattern = str(), example = C.any(), default = C.any(),
    minimum = num(), maximum = num(),
    properties = function(v, p, e, ctx) map(schema)(v, p, e, ctx) end,
    required = arr(str()),
    propertyOrdering = arr(str()),
    items = function(v, p, e, ctx) schema(v, p, e, ctx) end,
    anyOf = function(v, p, e, ctx) arr(schema, { min = 1 })(v, p, e, ctx) end,
}
local schema_fields = obj(SCHEMA_FIELDS)
schema = function(v, path, errs, ctx)
    schema_fields(v, path, errs, ctx)
    if type(v) ~= "table" then return end
    local t = type(v.type) == "string" and v.type:upper() or nil
    if v.enum ~= nil and t ~= "STRING" then add(errs, join(path, "enum"), "only allowed for STRING type") end
    if v.properties ~= nil and t ~= "OBJECT" then add(errs, join(path, "properties"), "only allowed for OBJECT type") end
    if v.items ~= nil and t ~= "ARRAY" then add(errs, join(path, "items"), "only allowed for ARRAY type") end
    if type(v.format) == "string" and t and FORMATS[t] and not FORMATS[t][v.format] then
        add(errs, join(path, "format"), "unsupported format '" .. v.format .. "' for type " .. t)
    elseif type(v.format) == "string" and t and not FORMATS[t] then
        add(errs, join(path, "format"), "format is not supported for type " .. t)
    end
    if type(v.required) == "table" then
        for i, name in ipairs(v.required) do
            if type(v.properties) ~= "table" or v.properties[name] == nil then
                add(errs, join(join(path, "required"), i - 1), "property is not defined")
            end
        end
    end
end
_M.schema = schema

local object = function(v, p, e) if not C.is_object(v) then add(e, p, "expected an object, got " .. C.describe(v)) end end
local DATA = { "text", "inlineData", "fileData", "functionCall", "functionResponse", "executableCode",
    "codeExecutionResult" }
local part = C.one_of_fields(DATA, {
    text = str({ min = 1 }),
    inlineData = obj({ mimeType = str({ min = 1 }), data = str({ pattern = B64 }) }, { required = { "mimeType", "data" } }),
    fileData = obj({ mimeType = str(), fileUri = str({ min = 1 }) }, { required = { "fileUri" } }),
    functionCall = obj({ id = str(), name = str({ min = 1 }), args = object }, { required = { "name" } }),
    functionResponse = obj({ id = str(), name = str({ min = 1 }), response = object, parts = C.any(),
        willContinue = bool(), scheduling = str() }, { required = { "name", "response" } }),
    executableCode = object, codeExecutionResult = object,
    thought = bool(), thoughtSignature = str({ min = 1, pattern = B64 }), partMetadata = object,
    videoMetadata = object, mediaResolution = C.any(),
})
local content = obj({ role = str({ enum = { "user", "model" } }), parts = arr(part, { min = 1 }) },
    { required = { "role", "parts" } })
local system = obj({ role = str(), parts = arr(obj({ text = str({ min = 1 }) }, { required = { "text" } }), { min = 1 }) },
    { required = { "parts" } })

local decl = obj({
    name = str({ pattern = "^[a-zA-Z_][a-zA-Z0-9_.:%-]*$", max = 64 }), description = str(),
    behavior = str({ enum = { "UNSPECIFIED", "BLOCKING", "NON_BLOCKING" } }),
    parameters = schema, parametersJsonSchema = C.any(), response = schema, responseJsonSchema = C.any(),
}, { required = { "name" } })

local body = obj({
    contents = arr(content, { min = 1 }),
    systemInstruction = system,
    tools = arr(obj({ functionDeclarations = arr(decl, { min = 1 }), googleSearch = object,
        googleSearchRetrieval = object, codeExecution = object, urlContext = object, computerUse = object,
        fileSearch = object, googleMaps = object })),
    toolConfig = obj({ functionCallingConfig = obj({
        mode = str({ enum = { "MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED" } }),
        allowedFunctionNames = arr(str()) }), retrievalConfig = object }),
    safetySettings = arr(obj({ category = str({ pattern = "^HARM_CATEGORY_" }), threshold = str(), method = str() },
        { required = { "category", "threshold" } })),
    generationConfig = obj({
        stopSequences = arr(str(), { max = 5 }), responseMimeType = str(), responseSchema = schema,
        responseJsonSchema = C.any(), responseModalities = arr(str()), candidateCount = int({ min = 1, max = 8 }),
        maxOutputTokens = int({ min = 1 }), temperature = num({ min = 0, max = 2 }), topP = num({ min = 0, max = 1 }),
        topK = int({ min = 1 }), seed = int(), presencePenalty = num(), frequencyPenalty = num(),
        responseLogprobs = bool(), logprobs = int({ min = 0, max = 20 }), enableEnhancedCivicAnswers = bool(),
        speechConfig = object, imageConfig = object, mediaResolution = str(),
        thinkingConfig = obj({ includeThoughts = bool(), thinkingBudget = int({ min = -1 }),
            thinkingLevel = str({ enum = { "THINKING_LEVEL_UNSPECIFIED", "MINIMAL", "LOW", "MEDIUM", "HIGH",
                "minimal", "low", "medium", "high" } }) }),
    }),
    cachedContent = str(),
}, { required = { "contents" } })

local function has(c, field)
    for _, p in ipairs(type(c) == "table" and type(c.parts) == "table" and c.parts or {}) do
        if type(p) == "table" and p[field] ~= nil then return true end
    end
    return false
end
local function count(c, field)
    local n = 0
    for _, p in ipairs(type(c) == "table" and type(c.parts) == "table" and c.parts or {}) do
        if type(p) == "table" and p[field] ~= nil then n = n + 1 end
    end
    return n
end

--- Gemini 3 and later check thought signatures.
function _M.checks_signatures(model)
    local major = type(model) == "string" and tonumber(model:match("^gemini%-(%d+)"))
    return major ~= nil and major >= 3
end

function _M.structure(b, errs, model)
    local contents = type(b) == "table" and b.contents
    if not C.is_array(contents) then return end
    local current = 1 -- the current turn starts at the last user content that is not only function responses
    for i, c in ipairs(contents) do
        local path = join("contents", i - 1)
        if type(c) == "table" then
            if c.role == "user" and count(c, "functionResponse") < #(type(c.parts) == "table" and c.parts or {}) then
                current = i
            end
            if has(c, "functionCall") then
                local prev = contents[i - 1]
                if c.role ~= "model" then
                    add(errs, path, "functionCall parts are only allowed in model turns")
                elseif type(prev) ~= "table" or prev.role ~= "user" then
                    add(errs, path, "Please ensure that function call turn comes immediately after a user turn or "
                        .. "after a function response turn.")
                end
            end
            if has(c, "functionResponse") then
                local prev = contents[i - 1]
                if type(prev) ~= "table" or prev.role ~= "model" or not has(prev, "functionCall") then
                    add(errs, path, "Please ensure that function response turn comes immediately after a function "
                        .. "call turn.")
                elseif count(prev, "functionCall") ~= count(c, "functionResponse") then
                    add(errs, path, "Please ensure that the number of function response parts is equal to the "
                        .. "number of function call parts of the function call turn.")
                end
            end
        end
    end
    if _M.checks_signatures(model) then
        for i = current, #contents do
            local c = contents[i]
            if type(c) == "table" and c.role == "model" then
                for j, p in ipairs(type(c.parts) == "table" and c.parts or {}) do
                    if type(p) == "table" and p.functionCall ~= nil then
                        if p.thoughtSignature == nil then
                            add(errs, join(join(join("contents", i - 1), "parts"), j - 1), "Function call is missing a "
                                .. "thought_signature in functionCall parts.")
                        end
                        break -- only the first functionCall part of a step carries it
                    end
                end
            end
        end
    end
    local gc = b.generationConfig
    if type(gc) == "table" and gc.responseSchema ~= nil and gc.responseMimeType ~= "application/json"
        and gc.responseMimeType ~= "text/x.enum" then
        add(errs, "generationConfig.responseMimeType", "must be application/json (or text/x.enum) when "
            .. "responseSchema is set")
    end
    local tc = type(b.toolConfig) == "table" and b.toolConfig.functionCallingConfig
    if type(tc) == "table" and tc.allowedFunctionNames ~= nil and tc.mode ~= "ANY" and tc.mode ~= "VALIDATED" then
        add(errs, "toolConfig.functionCallingConfig.allowedFunctionNames", "should only be set when mode is ANY")
    end
end

local embed = obj({ requests = arr(obj({ model = str({ pattern = "^models/" }),
    content = obj({ role = str(), parts = arr(obj({ text = str() }), { min = 1 }) }, { required = { "parts" } }),
    taskType = str(), title = str(), outputDimensionality = int({ min = 1 }) }, { required = { "model", "content" } }),
    { min = 1, max = 100 }) }, { required = { "requests" } })

function _M.check(req)
    local errs = {}
    local h = C.headers(req.headers)
    local path, query = C.split_query(req.path)
    if not ((h["x-goog-api-key"] or "") ~= "" or (query.key or "") ~= "") then
        add(errs, "header x-goog-api-key", "API key not valid: x-goog-api-key or ?key= is required")
    end
    if path:match("^/v1[a-z%d]*/models$") then
        if req.method ~= "GET" then add(errs, "method", "expected GET") end
        return errs
    end
    local model, method = path:match("^/v1[a-z%d]*/models/([^/:]+):(%a+)$")
    if not model then
        add(errs, "path", "no such endpoint: " .. tostring(req.path))
        return errs
    end
    if req.method ~= "POST" then add(errs, "method", "expected POST") end
    if not (h["content-type"] or ""):lower():find("^application/json") then
        add(errs, "header content-type", "expected application/json")
    end
    if method == "generateContent" or method == "streamGenerateContent" then
        if method == "streamGenerateContent" and query.alt ~= "sse" then
            add(errs, "query alt", "streams are read as SSE: alt=sse is required")
        end
        body(req.body, "", errs, {})
        _M.structure(req.body, errs, model)
    elseif method == "batchEmbedContents" then
        embed(req.body, "", errs, {})
        for i, r in ipairs(type(req.body) == "table" and type(req.body.requests) == "table" and req.body.requests or {}) do
            if type(r) == "table" and r.model ~= "models/" .. model then
                add(errs, join(join("requests", i - 1), "model"), "must be the model of the path (models/" .. model .. ")")
            end
        end
    else
        add(errs, "path", "no such method: " .. method)
    end
    return errs
end

return _M
