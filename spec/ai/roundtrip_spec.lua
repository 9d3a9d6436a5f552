-- Randomized: OpenAI and Anthropic client requests (roles, parts, tool histories, tools with awkward schemas,
-- parameters), each one valid for its own API, translated for every provider kind and checked against that
-- provider's strict validator (spec/ai/validators). A driver either sends a request the provider takes, with
-- every text the client wrote, or refuses it with a clear "<kind>: ..." error from the known list below.
-- SLUICE_SPEC_SEED=n replays a run; the seed is in every failure message.
local V = require("ai.validators")
local api = require("sluice.ai.anthropic_api")
local cjson = require("cjson.safe")

local SEED = tonumber(os.getenv("SLUICE_SPEC_SEED")) or os.time()
local N = tonumber(os.getenv("SLUICE_SPEC_ROUNDS")) or 100
local null = cjson.null

local KINDS = { "openai", "azure-openai", "deepseek", "anthropic", "gemini", "bedrock", "openai-compatible" }
local DRIVERS = {}
for _, k in ipairs(KINDS) do DRIVERS[k] = require("sluice.ai.drivers." .. k) end
local PROVIDERS = {
    openai = { api_key = "sk" },
    ["azure-openai"] = { endpoint = "https://r.openai.azure.com", api_key = "az", deployment = "gpt4o" },
    deepseek = { api_key = "ds" },
    anthropic = { api_key = "an" },
    gemini = { api_key = "gk" },
    bedrock = { region = "us-east-1", access_key = "AKID", secret_key = "secret", session_token = "tok" },
    ["openai-compatible"] = { endpoint = "http://127.0.0.1:8000" },
}

-- Refusals a driver may answer with (anything else is a bug): what the provider cannot take at all.
local REFUSALS = {
    openai = { "stop sequences" },
    ["azure-openai"] = { "stop sequences" },
    bedrock = { "images must be png/jpeg/gif/webp data: URLs" },
    deepseek = { "content parts are not supported" },
    gemini = { "is recursive", "stop sequences", "candidates" },
}

local random = math.random
local function pick(t) return t[random(#t)] end
local function chance(p) return random() < p end
local WORDS = { "alpha", "bravo", "weather", "Paris", "please", "why", "list", "the", "numbers", "quick", "fox",
    "Zürich", "42", "café", "tomorrow", "rain" }
local function words(n)
    local t = {}
    for i = 1, n or random(1, 6) do t[i] = pick(WORDS) end
    return table.concat(t, " ")
end
local seq = 0
local function uniq(prefix) seq = seq + 1 return prefix .. seq end

local GEMINI = require("sluice.ai.drivers.gemini")
local SIGNATURE = ("CiQBjz1rX+/Xq0w3=" .. ("AbCd+/"):rep(60)):gsub("=", "") .. "=="
local PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

-- JSON Schemas clients really send: enums of numbers and null, $ref/$defs, const, oneOf, formats, nesting
local SCHEMAS = {
    function() return { type = "object", properties = { city = { type = "string", description = "a city" } },
        required = { "city" } } end,
    function() return { type = "object", properties = { level = { type = "integer", enum = { 1, 2, 3 } },
        mode = { type = { "string", "null" }, enum = { "a", "b", null } } }, additionalProperties = false } end,
    function() return { type = "object", ["$defs"] = { Pt = { type = "object", properties = {
        x = { type = "number" }, y = { type = "number" } }, required = { "x", "y" } } },
        properties = { from = { ["$ref"] = "#/$defs/Pt" }, to = { ["$ref"] = "#/$defs/Pt" } } } end,
    function() return { type = "object", properties = { kind = { const = "fixed" }, v = { oneOf = {
        { type = "string", format = "email" }, { type = "integer" } } }, when = { type = "string",
        format = "date-time" }, tags = { type = "array", items = { type = "string" }, uniqueItems = true } } } end,
    function() return { type = "object", properties = { opt = { anyOf = { { type = "boolean" }, { type = "null" } } },
        nested = { type = "object", properties = { deep = { type = "object", properties = {
            n = { type = "number", minimum = 0, exclusiveMaximum = 10 } } } } } }, required = { "opt", "missing" } } end,
    function() return { type = "object", properties = {} } end,
    function() return { type = "object", properties = { node = { ["$ref"] = "#/definitions/Node" } },
        definitions = { Node = { type = "object", properties = { kids = { type = "array",
            items = { ["$ref"] = "#/definitions/Node" } } } } } } end, -- recursive: Gemini cannot
}

local function args_json()
    return cjson.encode({ city = pick(WORDS), n = random(1, 9) })
end

-- ------------------------------------------------------------------------------------------ OpenAI clients

local function oa_text_content()
    if chance(0.5) then return words() end
    local parts = {}
    for i = 1, random(1, 3) do parts[i] = { type = "text", text = words() } end
    return parts
end

local function oa_user_content()
    if chance(0.6) then return oa_text_content() end
    local parts = { { type = "text", text = words() } }
    if chance(0.5) then parts[#parts + 1] = { type = "image_url", image_url = { url = PNG, detail = pick({ "auto", "low" }) } } end
    if chance(0.2) then parts[#parts + 1] = { type = "image_url", image_url = { url = "https://example.com/cat.jpg" } } end
    if chance(0.5) then parts[#parts + 1] = { type = "text", text = words() } end
    return parts
end

local function openai_request()
    local msgs, tools = {}, nil
    local tool_names = {}
    if chance(0.5) then
        local n = random(1, 2)
        for i = 1, n do tool_names[i] = "tool_" .. pick({ "weather", "search", "calc", "route" }) .. i end
        tools = {}
        for i, name in ipairs(tool_names) do
            tools[i] = { type = "function", ["function"] = { name = name, description = words(),
                parameters = pick(SCHEMAS)() } }
        end
    end
    if chance(0.6) then msgs[#msgs + 1] = { role = pick({ "system", "developer" }), content = oa_text_content() } end
    if chance(0.15) then msgs[#msgs + 1] = { role = "assistant", content = words() } end -- starts with the assistant
    for _ = 1, random(1, 4) do
        msgs[#msgs + 1] = { role = "user", content = oa_user_content() }
        if chance(0.15) then msgs[#msgs + 1] = { role = "user", content = words() } end -- two user turns in a row
        local history_tools = chance(0.5) and (tools and tool_names or { "old_tool" }) or nil
        if history_tools then
            local calls = {}
            for i = 1, random(1, 2) do
                local id = uniq("call_")
                if chance(0.3) then id = GEMINI.id_with_signature(id, SIGNATURE) end -- a call Gemini answered
                calls[i] = { id = id, type = "function", ["function"] = { name = pick(history_tools),
                    arguments = args_json() } }
            end
            msgs[#msgs + 1] = { role = "assistant", content = chance(0.5) and words() or null, tool_calls = calls }
            for _, c in ipairs(calls) do
                msgs[#msgs + 1] = { role = "tool", tool_call_id = c.id, content = chance(0.7) and words()
                    or { { type = "text", text = words() }, { type = "text", text = words() } } }
            end
            if chance(0.5) then msgs[#msgs + 1] = { role = "assistant", content = words() } end
        elseif chance(0.7) then
            msgs[#msgs + 1] = { role = "assistant", content = words() }
        end
    end
    if msgs[#msgs].role == "assistant" and chance(0.6) then msgs[#msgs + 1] = { role = "user", content = words() } end
    local b = { model = "m", messages = msgs, tools = tools }
    if tools and chance(0.6) then
        b.tool_choice = pick({ "auto", "none", "required", { type = "function", ["function"] = { name = tool_names[1] } } })
    end
    if tools and chance(0.3) then b.parallel_tool_calls = chance(0.5) end
    if chance(0.5) then b.temperature = random(0, 20) / 10 end
    if chance(0.3) then b.top_p = random(1, 10) / 10 end
    if chance(0.4) then b[pick({ "max_tokens", "max_completion_tokens" })] = random(1, 4000) end
    if chance(0.3) then b.stop = chance(0.5) and pick(WORDS) or { pick(WORDS), pick(WORDS) } end
    if chance(0.2) then b.n = random(1, 3) end
    if chance(0.2) then b.presence_penalty = random(-20, 20) / 10 end
    if chance(0.2) then b.frequency_penalty = random(-20, 20) / 10 end
    if chance(0.2) then b.seed = random(1, 1000) end
    if chance(0.2) then b.user = "user-" .. random(100) end
    if chance(0.15) then b.logit_bias = { ["50256"] = -100 } end
    if chance(0.15) then b.logprobs = true b.top_logprobs = random(0, 5) end
    if chance(0.2) then b.service_tier = pick({ "auto", "default", "flex" }) end
    if chance(0.2) then b.store = chance(0.5) end
    if chance(0.2) then b.metadata = { run = "r" .. random(9) } end
    if chance(0.2) then b.reasoning_effort = pick({ "minimal", "low", "medium", "high" }) end
    if chance(0.25) then
        local t = pick({ "text", "json_object", "json_schema" })
        b.response_format = { type = t }
        if t == "json_schema" then b.response_format.json_schema = { name = "out", schema = pick(SCHEMAS)() } end
    end
    return b
end

-- --------------------------------------------------------------------------------------- Anthropic clients

local function an_blocks(user)
    if chance(0.4) then return words() end
    local b = {}
    for _ = 1, random(1, 3) do b[#b + 1] = { type = "text", text = words() } end
    if user and chance(0.3) then
        b[#b + 1] = { type = "image", source = { type = "base64", media_type = "image/png", data = PNG:match(",(.*)$") } }
    end
    return b
end

local function anthropic_request()
    local tools
    if chance(0.5) then
        tools = {}
        for i = 1, random(1, 2) do
            tools[i] = { name = "tool_" .. i, description = words(), input_schema = pick(SCHEMAS)() }
        end
    end
    local msgs = {}
    for _ = 1, random(1, 4) do
        msgs[#msgs + 1] = { role = "user", content = an_blocks(true) }
        if tools and chance(0.5) then
            local content, uses = {}, {}
            if chance(0.5) then content[#content + 1] = { type = "text", text = words() } end
            for _ = 1, random(1, 2) do
                local u = { type = "tool_use", id = uniq("toolu_"), name = pick(tools).name,
                    input = { city = pick(WORDS) } }
                content[#content + 1] = u
                uses[#uses + 1] = u
            end
            msgs[#msgs + 1] = { role = "assistant", content = content }
            local results = {}
            for _, u in ipairs(uses) do
                results[#results + 1] = { type = "tool_result", tool_use_id = u.id, is_error = chance(0.3) or nil,
                    content = chance(0.5) and words() or { { type = "text", text = words() }, { type = "text", text = words() } } }
            end
            if chance(0.5) then results[#results + 1] = { type = "text", text = words() } end
            msgs[#msgs + 1] = { role = "user", content = results }
        end
        msgs[#msgs + 1] = { role = "assistant", content = an_blocks(false) }
    end
    if chance(0.7) then msgs[#msgs + 1] = { role = "user", content = an_blocks(true) } end
    local a = { model = "m", max_tokens = random(1, 4096), messages = msgs, tools = tools }
    if chance(0.5) then
        a.system = chance(0.5) and words() or { { type = "text", text = words() },
            { type = "text", text = words(), cache_control = { type = "ephemeral" } } }
    end
    if tools and chance(0.5) then
        a.tool_choice = pick({ { type = "auto" }, { type = "any" }, { type = "none" },
            { type = "tool", name = tools[1].name }, { type = "auto", disable_parallel_tool_use = true } })
    end
    if chance(0.5) then a.temperature = random(0, 10) / 10 end
    if chance(0.3) then a.top_p = random(1, 10) / 10 end
    if chance(0.3) then a.top_k = random(1, 100) end
    if chance(0.3) then
        a.stop_sequences = {}
        for i = 1, random(1, 6) do a.stop_sequences[i] = pick(WORDS) .. i end
    end
    if chance(0.3) then a.metadata = { user_id = "u-" .. random(100) } end
    return a
end

-- -------------------------------------------------------------------------------------------------- checks

-- every text a client wrote (user, system, tool results), to find in what the driver sends
local function texts_of(v, out)
    out = out or {}
    if type(v) == "table" then
        if type(v.text) == "string" then out[#out + 1] = v.text end
        if (v.role == "user" or v.role == "tool" or v.role == "system" or v.role == "developer")
            and type(v.content) == "string" then out[#out + 1] = v.content end
        if v.type == "tool_result" and type(v.content) == "string" then out[#out + 1] = v.content end
        for k, x in pairs(v) do
            if k ~= "tools" and k ~= "input_schema" and k ~= "parameters" then texts_of(x, out) end
        end
    elseif type(v) == "string" and false then
        out[#out + 1] = v
    end
    return out
end

local function refusal_ok(kind, err)
    if type(err) ~= "string" or err:sub(1, #kind + 2) ~= kind .. ": " then return false end
    for _, p in ipairs(REFUSALS[kind] or {}) do
        if err:find(p, 1, true) then return true end
    end
    return false
end

local function check_all(label, client_req, canon, i)
    local where = ("seed %d, %s request %d"):format(SEED, label, i)
    for _, kind in ipairs(KINDS) do
        local before = cjson.encode(canon)
        local req, err = DRIVERS[kind].build_request(PROVIDERS[kind], "chat", canon, { stream = chance(0.5) })
        assert.equal(before, cjson.encode(canon), where .. ": " .. kind .. " changed the canonical request")
        if not req then
            assert.is_true(refusal_ok(kind, err), where .. ": " .. kind .. " refused: " .. tostring(err)
                .. "\nclient request: " .. cjson.encode(client_req))
        else
            local errs = V.check(kind, req)
            assert.equal(0, #errs, where .. ": " .. kind .. " would reject:\n  " .. table.concat(errs, "\n  ")
                .. "\nclient request: " .. cjson.encode(client_req) .. "\nsent: " .. req.body)
            -- every text the client wrote reaches the provider (joined, wrapped, but there)
            for _, t in ipairs(texts_of(client_req.messages)) do
                local enc = cjson.encode(t):sub(2, -2)
                assert.truthy(req.body:find(enc, 1, true), where .. ": " .. kind .. " lost the text '" .. t
                    .. "'\nclient request: " .. cjson.encode(client_req) .. "\nsent: " .. req.body)
            end
        end
    end
end

describe("round trip (randomized, seed " .. SEED .. ")", function()
    it("OpenAI client requests, valid for OpenAI, are valid for every provider", function()
        math.randomseed(SEED)
        for i = 1, N do
            local b = openai_request()
            -- valid for OpenAI itself, but for the ids of calls Gemini answered (they carry its signature)
            local plain = cjson.encode(b):gsub("__ts__[%w_%-]+", "")
            local errs = V.check("openai", { method = "POST", path = "/v1/chat/completions",
                headers = { Authorization = "Bearer k", ["Content-Type"] = "application/json" }, body = plain })
            assert.equal(0, #errs, "the generator made an invalid OpenAI request (seed " .. SEED .. "): "
                .. table.concat(errs, "; ") .. "\n" .. cjson.encode(b))
            check_all("OpenAI", b, b, i)
        end
    end)

    it("Anthropic client requests, valid for Anthropic, are valid for every provider", function()
        math.randomseed(SEED + 1)
        for i = 1, N do
            local a = anthropic_request()
            local errs = V.check("anthropic", { method = "POST", path = "/v1/messages", headers = {
                ["x-api-key"] = "k", ["anthropic-version"] = "2023-06-01", ["Content-Type"] = "application/json" },
                body = cjson.encode(a) })
            assert.equal(0, #errs, "the generator made an invalid Anthropic request (seed " .. SEED .. "): "
                .. table.concat(errs, "; ") .. "\n" .. cjson.encode(a))
            local canon = assert(api.to_openai(a))
            check_all("Anthropic", a, canon, i)
        end
    end)
end)
