-- Strict validator of Anthropic Messages API requests (POST /v1/messages), written from the Anthropic API
-- reference (docs.anthropic.com/en/api/messages) and its documented 400s:
--   headers x-api-key (or Authorization: Bearer), anthropic-version, content-type: application/json
--   max_tokens required (>= 1); temperature and top_p 0-1; roles user and assistant only (system is a field);
--   text blocks non-empty; tool_result blocks only in user turns, answering the tool_use ids of the assistant
--   turn right before, and placed before any other block of their turn; every tool_use of an assistant turn
--   answered in the next turn; a final assistant turn does not end with whitespace; thinking.budget_tokens
--   >= 1024 and below max_tokens.
local C = require("ai.validators.check")

local str, num, int, bool, arr, obj, nullable, alt, union =
    C.str, C.num, C.int, C.bool, C.arr, C.obj, C.nullable, C.alt, C.union
local add, join = C.add, C.join

local _M = {}

local ID = "^[a-zA-Z0-9_%-]+$"
local cache_control = nullable(obj({ type = C.const("ephemeral"), ttl = str({ enum = { "5m", "1h" } }) },
    { required = { "type" } }))

local text = obj({ type = str(), text = str({ min = 1, nonblank = true }), cache_control = cache_control, citations = C.any() },
    { required = { "type", "text" } })
local image = obj({ type = str(), cache_control = cache_control, source = union("type", {
    base64 = obj({ type = str(), media_type = str({ enum = { "image/jpeg", "image/png", "image/gif", "image/webp" } }),
        data = str({ min = 1 }) }, { required = { "type", "media_type", "data" } }),
    url = obj({ type = str(), url = str({ pattern = "^https?://" }) }, { required = { "type", "url" } }),
    file = obj({ type = str(), file_id = str() }, { required = { "type", "file_id" } }),
}, "image source type") }, { required = { "type", "source" } })
local document = obj({ type = str(), title = nullable(str()), context = nullable(str()), citations = C.any(),
    cache_control = cache_control, source = union("type", {
        base64 = obj({ type = str(), media_type = C.const("application/pdf"), data = str({ min = 1 }) },
            { required = { "type", "media_type", "data" } }),
        text = obj({ type = str(), media_type = C.const("text/plain"), data = str() },
            { required = { "type", "media_type", "data" } }),
        content = obj({ type = str(), content = C.any() }, { required = { "type", "content" } }),
        url = obj({ type = str(), url = str({ pattern = "^https?://" }) }, { required = { "type", "url" } }),
        file = obj({ type = str(), file_id = str() }, { required = { "type", "file_id" } }),
    }, "document source type") }, { required = { "type", "source" } })
local tool_use = obj({ type = str(), id = str({ pattern = ID }), name = str({ min = 1 }), input = function(v, p, e)
    if not C.is_object(v) then add(e, p, "expected an object, got " .. C.describe(v)) end
end, cache_control = cache_control }, { required = { "type", "id", "name", "input" } })
local tool_result = obj({ type = str(), tool_use_id = str({ pattern = ID }), is_error = bool(),
    cache_control = cache_control,
    content = alt({ { test = C.is_string, check = str() },
        { test = C.is_array, check = arr(union("type", { text = text, image = image, document = document }, "block type")) } },
        "a string or an array of blocks") }, { required = { "type", "tool_use_id" } })
local thinking = obj({ type = str(), thinking = str(), signature = str() }, { required = { "type", "thinking", "signature" } })
local redacted = obj({ type = str(), data = str() }, { required = { "type", "data" } })

local USER = { text = text, image = image, document = document, tool_result = tool_result }
local ASSISTANT = { text = text, tool_use = tool_use, thinking = thinking, redacted_thinking = redacted }

local function message(role_blocks)
    return obj({ role = str(), content = alt({ { test = C.is_string, check = str() },
        { test = C.is_array, check = arr(union("type", role_blocks, "content block type"), { min = 1 }) } },
        "a string or an array of content blocks") }, { required = { "role", "content" } })
end

local tool = alt({
    { test = function(v) return type(v) == "table" and (v.type == nil or v.type == "custom") end,
      check = obj({ type = str(), name = str({ min = 1, max = 128, pattern = ID }), description = str(),
        input_schema = obj({ type = C.const("object") }, { open = true, required = { "type" } }),
        cache_control = cache_control }, { required = { "name", "input_schema" } }) },
    { test = function(v) return type(v) == "table" and type(v.type) == "string" and v.type:match("_%d%d%d%d%d%d%d%d$") end,
      check = obj({ type = str(), name = str() }, { open = true, required = { "type", "name" } }) },
}, "a custom tool or a server tool")

local body = obj({
    model = str({ min = 1 }),
    messages = arr(union("role", { user = message(USER), assistant = message(ASSISTANT) }, "role"), { min = 1 }),
    max_tokens = int({ min = 1 }),
    system = alt({ { test = C.is_string, check = str() }, { test = C.is_array, check = arr(text) } },
        "a string or an array of text blocks"),
    metadata = obj({ user_id = nullable(str({ max = 256 })) }),
    stop_sequences = arr(str()),
    stream = bool(),
    temperature = num({ min = 0, max = 1 }),
    top_p = num({ min = 0, max = 1 }),
    top_k = int({ min = 0 }),
    tools = arr(tool),
    tool_choice = union("type", {
        auto = obj({ type = str(), disable_parallel_tool_use = bool() }),
        any = obj({ type = str(), disable_parallel_tool_use = bool() }),
        tool = obj({ type = str(), name = str(), disable_parallel_tool_use = bool() }, { required = { "name" } }),
        none = obj({ type = str() }),
    }, "tool_choice type"),
    thinking = union("type", {
        enabled = obj({ type = str(), budget_tokens = int({ min = 1024 }) }, { required = { "budget_tokens" } }),
        disabled = obj({ type = str() }),
    }, "thinking type"),
    service_tier = str({ enum = { "auto", "standard_only" } }),
    container = nullable(str()),
    mcp_servers = C.any(),
}, { required = { "model", "messages", "max_tokens" } })

local function blocks(m)
    if type(m.content) == "table" then return m.content end
    return {}
end

function _M.structure(b, errs)
    local msgs = type(b) == "table" and b.messages
    if not C.is_array(msgs) then return end
    for i, m in ipairs(msgs) do
        local path = join("messages", i - 1)
        if type(m) == "table" then
            local prev = msgs[i - 1]
            local uses = {}
            if type(prev) == "table" and prev.role == "assistant" then
                for _, bl in ipairs(blocks(prev)) do
                    if type(bl) == "table" and bl.type == "tool_use" then uses[bl.id] = true end
                end
            end
            local seen_other = false
            for j, bl in ipairs(blocks(m)) do
                if type(bl) == "table" and bl.type == "tool_result" then
                    if m.role ~= "user" then
                        add(errs, join(join(path, "content"), j - 1), "tool_result blocks are only allowed in user turns")
                    elseif not uses[bl.tool_use_id] then
                        add(errs, join(join(path, "content"), j - 1), "unexpected tool_use_id found in tool_result "
                            .. "blocks: " .. tostring(bl.tool_use_id) .. ". Each tool_result block must have a "
                            .. "corresponding tool_use block in the previous message.")
                    end
                    if seen_other then
                        add(errs, join(join(path, "content"), j - 1), "tool_result blocks must come before any "
                            .. "other content in the user message")
                    end
                    uses[bl.tool_use_id] = nil
                else
                    seen_other = true
                end
            end
            if m.role == "user" and type(prev) == "table" and prev.role == "assistant" and next(uses) then
                local ids = {}
                for id in pairs(uses) do ids[#ids + 1] = id end
                table.sort(ids)
                add(errs, path, "tool_use ids were found without tool_result blocks immediately after: "
                    .. table.concat(ids, ", "))
            end
        end
    end
    local last = msgs[#msgs]
    if type(last) == "table" and last.role == "assistant" then
        local t = type(last.content) == "string" and last.content
        if type(last.content) == "table" then
            local lb = last.content[#last.content]
            t = type(lb) == "table" and lb.type == "text" and lb.text
        end
        if type(t) == "string" and t:find("%s$") then
            add(errs, join("messages", #msgs - 1), "final assistant content cannot end with trailing whitespace")
        end
    end
    local th = b.thinking
    if type(th) == "table" and th.type == "enabled" and type(th.budget_tokens) == "number"
        and type(b.max_tokens) == "number" and th.budget_tokens >= b.max_tokens then
        add(errs, "thinking.budget_tokens", "must be less than max_tokens")
    end
end

function _M.check(req)
    local errs = {}
    local h = C.headers(req.headers)
    local path = C.split_query(req.path)
    if path ~= "/v1/messages" then
        add(errs, "path", "no such endpoint: " .. tostring(req.path))
        return errs
    end
    if req.method ~= "POST" then add(errs, "method", "expected POST") end
    local ct = h["content-type"]
    if type(ct) ~= "string" or not ct:lower():find("^application/json") then
        add(errs, "header content-type", "expected application/json, got " .. tostring(ct))
    end
    if not (h["x-api-key"] and h["x-api-key"] ~= "") and not (type(h.authorization) == "string"
        and h.authorization:match("^Bearer %S+$")) then
        add(errs, "header x-api-key", "x-api-key header is required")
    end
    if not (h["anthropic-version"] or ""):match("^%d%d%d%d%-%d%d%-%d%d$") then
        add(errs, "header anthropic-version", "anthropic-version header is required")
    end
    body(req.body, "", errs, {})
    _M.structure(req.body, errs)
    return errs
end

_M.body = body
return _M
