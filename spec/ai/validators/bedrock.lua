-- Strict validator of Amazon Bedrock Converse / ConverseStream requests, written from the Bedrock API
-- reference (docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_Converse.html and the types it links:
-- Message, ContentBlock, SystemContentBlock, InferenceConfiguration, ToolConfiguration, ToolResultBlock...)
-- and the ValidationExceptions Bedrock documents:
--   POST /model/{modelId}/converse | /converse-stream; SigV4 (service bedrock) or a Bedrock API key (Bearer)
--   unions (ContentBlock, ToolResultContentBlock, Tool, ToolChoice...) set exactly one member; unknown keys are
--   "extraneous key [x] is not permitted"
--   inferenceConfig.temperature and topP 0-1, maxTokens >= 1
--   "A conversation must start with a user message", "... must alternate between user and assistant roles"
--   "The toolConfig field must be defined when using toolUse and toolResult content blocks."
--   toolResult ids answer the toolUse ids of the assistant turn right before, all of them
--   "The text field in the ContentBlock object at messages.N.content.M is blank"
local C = require("ai.validators.check")

local str, num, int, arr, obj, map = C.str, C.num, C.int, C.arr, C.obj, C.map
local add, join = C.add, C.join

local _M = {}

local ID = "^[a-zA-Z0-9_%-]+$"
local DOC_NAME = "^[%w%-%(%)%[%] ]+$"
local document_value = function() end -- a JSON document: anything
local object = function(v, p, e) if not C.is_object(v) then add(e, p, "expected an object, got " .. C.describe(v)) end end

local function union(names, fields)
    return C.one_of_fields(names, fields)
end

local source = union({ "bytes", "s3Location" }, { bytes = str({ min = 1 }), s3Location = object })
local image = obj({ format = str({ enum = { "png", "jpeg", "gif", "webp" } }), source = source },
    { required = { "format", "source" } })
local document = obj({ format = str({ enum = { "pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md" } }),
    name = function(v, p, e)
        str({ min = 1, max = 200, pattern = DOC_NAME })(v, p, e)
        if type(v) == "string" and v:find("%s%s") then add(e, p, "must not contain consecutive whitespace") end
    end,
    source = union({ "bytes", "s3Location", "text", "content" }, { bytes = str({ min = 1 }), s3Location = object,
        text = str(), content = C.any() }), context = str(), citations = object },
    { required = { "name", "source" } })
local text = str({ nonblank = true })
local cache_point = obj({ type = C.const("default") }, { required = { "type" } })

local tool_result_content = union({ "json", "text", "image", "document", "video" }, {
    json = document_value, text = str(), image = image, document = document, video = object })

local CONTENT = { "text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint",
    "reasoningContent", "citationsContent", "searchResult" }
local content_block = union(CONTENT, {
    text = text, image = image, document = document, video = object,
    toolUse = obj({ toolUseId = str({ min = 1, max = 64, pattern = ID }), name = str({ min = 1, max = 64, pattern = ID }),
        input = document_value, type = str() }, { required = { "toolUseId", "name", "input" } }),
    toolResult = obj({ toolUseId = str({ min = 1, max = 64, pattern = ID }), content = arr(tool_result_content),
        status = str({ enum = { "success", "error" } }), type = str() }, { required = { "toolUseId", "content" } }),
    guardContent = object, cachePoint = cache_point, citationsContent = object, searchResult = object,
    reasoningContent = union({ "reasoningText", "redactedContent" }, {
        reasoningText = obj({ text = str(), signature = str() }, { required = { "text" } }), redactedContent = str() }),
})

local message = obj({ role = str({ enum = { "user", "assistant" } }), content = arr(content_block) },
    { required = { "role", "content" } })

local tool = union({ "toolSpec", "cachePoint", "systemTool" }, {
    toolSpec = obj({ name = str({ min = 1, max = 64, pattern = ID }), description = str({ min = 1 }),
        inputSchema = union({ "json" }, { json = object }), strict = C.bool() }, { required = { "name", "inputSchema" } }),
    cachePoint = cache_point, systemTool = object,
})

local body = obj({
    messages = arr(message, { min = 1 }),
    system = arr(union({ "text", "guardContent", "cachePoint" }, { text = text, guardContent = object,
        cachePoint = cache_point })),
    inferenceConfig = obj({ maxTokens = int({ min = 1 }), temperature = num({ min = 0, max = 1 }),
        topP = num({ min = 0, max = 1 }), stopSequences = arr(str({ min = 1 }), { max = 2500 }) }),
    toolConfig = obj({ tools = arr(tool, { min = 1 }), toolChoice = union({ "auto", "any", "tool" }, {
        auto = obj({}), any = obj({}), tool = obj({ name = str({ min = 1, max = 64, pattern = ID }) },
            { required = { "name" } }) }) }, { required = { "tools" } }),
    guardrailConfig = obj({ guardrailIdentifier = str(), guardrailVersion = str(),
        trace = str({ enum = { "enabled", "disabled", "enabled_full" } }),
        streamProcessingMode = str({ enum = { "sync", "async" } }) },
        { required = { "guardrailIdentifier", "guardrailVersion" } }),
    additionalModelRequestFields = document_value,
    additionalModelResponseFieldPaths = arr(str()),
    promptVariables = object,
    requestMetadata = map(str()),
    performanceConfig = obj({ latency = str({ enum = { "standard", "optimized" } }) }),
    serviceTier = obj({ type = str() }),
}, { required = { "messages" } })

local function blocks(m) return type(m) == "table" and type(m.content) == "table" and m.content or {} end

function _M.structure(b, errs)
    local msgs = type(b) == "table" and b.messages
    if not C.is_array(msgs) then return end
    local tool_blocks = false
    for i, m in ipairs(msgs) do
        local path = join("messages", i - 1)
        if type(m) == "table" then
            if i == 1 and m.role ~= "user" then
                add(errs, path, "A conversation must start with a user message. Try again with a conversation that "
                    .. "starts with a user message.")
            end
            local prev = msgs[i - 1]
            if type(prev) == "table" and prev.role == m.role then
                add(errs, path, "A conversation must alternate between user and assistant roles. Make sure the "
                    .. "conversation alternates between user and assistant roles and try again.")
            end
            local uses, nuses = {}, 0
            if type(prev) == "table" and prev.role == "assistant" then
                for _, bl in ipairs(blocks(prev)) do
                    if type(bl) == "table" and type(bl.toolUse) == "table" then
                        uses[bl.toolUse.toolUseId] = true
                        nuses = nuses + 1
                    end
                end
            end
            local nresults = 0
            for j, bl in ipairs(blocks(m)) do
                local bpath = join(join(path, "content"), j - 1)
                if type(bl) == "table" then
                    if bl.toolUse ~= nil or bl.toolResult ~= nil then tool_blocks = true end
                    if bl.toolUse ~= nil and m.role ~= "assistant" then add(errs, bpath, "toolUse is only allowed in assistant turns") end
                    if type(bl.toolResult) == "table" then
                        nresults = nresults + 1
                        if m.role ~= "user" then
                            add(errs, bpath, "toolResult is only allowed in user turns")
                        elseif not uses[bl.toolResult.toolUseId] then
                            add(errs, bpath, "toolResult " .. tostring(bl.toolResult.toolUseId) .. " answers no toolUse "
                                .. "of the previous turn")
                        else
                            uses[bl.toolResult.toolUseId] = nil
                        end
                    end
                end
            end
            if nresults > nuses then
                add(errs, join(path, "content"), "The number of toolResult blocks at " .. path .. ".content exceeds "
                    .. "the number of toolUse blocks of previous turn.")
            end
            if m.role == "user" and nuses > 0 and next(uses) then
                local ids = {}
                for id in pairs(uses) do ids[#ids + 1] = id end
                table.sort(ids)
                add(errs, join(path, "content"), "Expected toolResult blocks at " .. path .. ".content for the "
                    .. "following Ids: " .. table.concat(ids, ", "))
            end
        end
    end
    if tool_blocks and type(b.toolConfig) ~= "table" then
        add(errs, "toolConfig", "The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    end
end

--- Checks the Authorization header's form (the signature itself is checked by tests/mock/providers.js).
function _M.auth(h, errs)
    local a = h.authorization
    if type(a) == "string" and a:match("^Bearer %S+$") then return end
    local cred, signed, sig = (a or ""):match("^AWS4%-HMAC%-SHA256 Credential=(%S+), SignedHeaders=(%S+), Signature=(%x+)$")
    if not cred then return add(errs, "header authorization", "expected a SigV4 or Bearer authorization, got " .. tostring(a)) end
    local ak, date, region, service = cred:match("^([^/]+)/(%d+)/([^/]+)/([^/]+)/aws4_request$")
    if service ~= "bedrock" then add(errs, "header authorization", "credential scope must be for service bedrock") end
    if not (h["x-amz-date"] or ""):match("^" .. (date or "x") .. "T%d%d%d%d%d%dZ$") then
        add(errs, "header x-amz-date", "missing or not the credential's date")
    end
    for _, need in ipairs({ "host", "x-amz-date" }) do
        if not (";" .. signed .. ";"):find(";" .. need .. ";", 1, true) then
            add(errs, "header authorization", "SignedHeaders must include " .. need)
        end
    end
    if #sig ~= 64 then add(errs, "header authorization", "signature must be 64 hex digits") end
    if h["x-amz-security-token"] == "" then add(errs, "header x-amz-security-token", "empty") end
    return ak, region
end

function _M.check(req)
    local errs = {}
    local h = C.headers(req.headers)
    local path = C.split_query(req.path)
    local model, op = path:match("^/model/([^/]+)/([%a-]+)$")
    if not model or (op ~= "converse" and op ~= "converse-stream") then
        add(errs, "path", "no such endpoint: " .. tostring(req.path))
        return errs
    end
    if req.method ~= "POST" then add(errs, "method", "expected POST") end
    if not (h["content-type"] or ""):lower():find("^application/json") then
        add(errs, "header content-type", "expected application/json")
    end
    _M.auth(h, errs)
    body(req.body, "", errs, {})
    _M.structure(req.body, errs)
    return errs
end

return _M
