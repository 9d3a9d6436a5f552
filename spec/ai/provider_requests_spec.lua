-- What each driver sends, checked against the strict validator of its provider (spec/ai/validators): the rows
-- of the integrator's report (gemini G1-G2, bedrock B1-B3, azure-openai/deepseek A2, D1, X2, all X1) at the
-- driver level. The same rows through the gateway against the strict mock providers:
-- spec/ai_providers_strict_spec.lua.
local S = require("ai.support")
local V = require("ai.validators")
local api = require("sluice.ai.anthropic_api")
local cjson = require("cjson.safe")

local D = {}
for _, kind in ipairs({ "openai", "azure-openai", "deepseek", "anthropic", "gemini", "bedrock", "openai-compatible" }) do
    D[kind] = S.strict(require("sluice.ai.drivers." .. kind), kind)
end
local P = {
    openai = { api_key = "sk" },
    ["azure-openai"] = { endpoint = "https://r.openai.azure.com", api_key = "az", deployment = "gpt4o" },
    deepseek = { api_key = "ds" },
    anthropic = { api_key = "an" },
    gemini = { api_key = "gk" },
    bedrock = { region = "us-east-1", access_key = "AKID", secret_key = "secret" },
    ["openai-compatible"] = { endpoint = "http://127.0.0.1:11434" },
}

local function build(kind, body, opts, provider)
    local req, err = D[kind].build_request(provider or P[kind], "chat", body, opts or {})
    return req and cjson.decode(req.body), err, req
end

local WEATHER = { type = "function", ["function"] = { name = "get_weather", parameters = { type = "object",
    properties = { city = { type = "string" } }, required = { "city" } } } }

describe("provider requests", function()
    describe("G1 gemini thought signatures", function()
        local SIG = "CiQBjz1rX+/sig=="
        local RESP = cjson.encode({ candidates = { { content = { role = "model", parts = {
            { functionCall = { name = "get_weather", args = { city = "Paris" } }, thoughtSignature = SIG },
            { functionCall = { name = "get_weather", args = { city = "Rome" } } } } }, finishReason = "STOP" } },
            modelVersion = "gemini-3-pro-preview" })

        local function replay(calls, api_kind)
            local msgs = { { role = "user", content = "Weather in Paris and Rome?" },
                { role = "assistant", content = cjson.null, tool_calls = calls } }
            for _, c in ipairs(calls) do msgs[#msgs + 1] = { role = "tool", tool_call_id = c.id, content = "sunny" } end
            return build("gemini", { model = "gemini-3-pro-preview", messages = msgs })
        end

        it("carries the signature in the tool call id and puts it back on the replayed call", function()
            local r = assert(D.gemini.parse_response(200, {}, RESP, "chat"))
            local calls = r.choices[1].message.tool_calls
            assert.equals(2, #calls)
            assert.equals(SIG, require("sluice.ai.drivers.gemini").signature_of(calls[1].id))
            assert.matches("^[%w_%-]+$", calls[1].id) -- an id any client (and Anthropic's pattern) accepts
            assert.is_nil(require("sluice.ai.drivers.gemini").signature_of(calls[2].id))
            local g = replay(calls)
            local parts = g.contents[2].parts
            assert.equals(SIG, parts[1].thoughtSignature)
            assert.is_nil(parts[2].thoughtSignature) -- parallel calls: only the first carries one
        end)

        it("streams the signature in the id too", function()
            local s = D.gemini.new_stream("chat")
            local chunks = S.run_stream(s, "data: " .. RESP .. "\r\n\r\n", 7)
            local calls = S.tool_calls(chunks)
            assert.equals(SIG, require("sluice.ai.drivers.gemini").signature_of(calls[1].id))
            local g = replay({ { id = calls[1].id, type = "function", ["function"] = { name = calls[1].name,
                arguments = calls[1].arguments } } })
            assert.equals(SIG, g.contents[2].parts[1].thoughtSignature)
        end)

        it("survives the Anthropic API both ways (tool_use id -> tool_result tool_use_id)", function()
            local r = assert(D.gemini.parse_response(200, {}, RESP, "chat"))
            local msg = api.from_openai_response(r)
            local uses = {}
            for _, b in ipairs(msg.content) do if b.type == "tool_use" then uses[#uses + 1] = b end end
            local canon = assert(api.to_openai({ model = "gemini-3-pro-preview", max_tokens = 100, messages = {
                { role = "user", content = "Weather?" },
                { role = "assistant", content = msg.content },
                { role = "user", content = { { type = "tool_result", tool_use_id = uses[1].id, content = "sunny" },
                    { type = "tool_result", tool_use_id = uses[2].id, content = "rain" } } } } }))
            local g = build("gemini", canon)
            assert.equals(SIG, g.contents[2].parts[1].thoughtSignature)
        end)

        it("stays with Gemini: a conversation that moves to another provider sends the plain ids", function()
            local r = assert(D.gemini.parse_response(200, {}, RESP, "chat"))
            local calls = r.choices[1].message.tool_calls
            assert.is_true(#calls[1].id > 40)
            local msgs = { { role = "user", content = "Weather?" }, { role = "assistant", content = cjson.null,
                tool_calls = { calls[1], { id = calls[2].id, type = "function", ["function"] = calls[2]["function"],
                    extra_content = { google = { thought_signature = SIG } } } } },
                { role = "tool", tool_call_id = calls[1].id, content = "sunny" },
                { role = "tool", tool_call_id = calls[2].id, content = "rain" } }
            local base = calls[1].id:match("^(.-)__ts__")
            -- strict validators: OpenAI ids are at most 40 characters, Bedrock's 64, no unknown extra_content
            assert.equals(base, build("openai", { model = "m", messages = msgs }).messages[2].tool_calls[1].id)
            assert.equals(base, build("azure-openai", { model = "m", messages = msgs }).messages[3].tool_call_id)
            assert.equals(base, build("bedrock", { model = "m", messages = msgs }).messages[2].content[1].toolUse.toolUseId)
            assert.equals(base, build("anthropic", { model = "m", messages = msgs }).messages[3].content[1].tool_use_id)
            build("deepseek", { model = "m", messages = msgs })
        end)

        it("reads Gemini's OpenAI-compatibility field, and marks calls that lost theirs on Gemini 3", function()
            local g = replay({ { id = "call_1", type = "function", ["function"] = { name = "get_weather", arguments = "{}" },
                extra_content = { google = { thought_signature = SIG } } } })
            assert.equals(SIG, g.contents[2].parts[1].thoughtSignature)
            g = replay({ { id = "call_2", type = "function", ["function"] = { name = "get_weather", arguments = "{}" } } })
            assert.equals("skip_thought_signature_validator", g.contents[2].parts[1].thoughtSignature)
            -- older models are left alone
            local body = { model = "gemini-2.5-flash", messages = { { role = "user", content = "x" },
                { role = "assistant", tool_calls = { { id = "c", type = "function", ["function"] = { name = "f", arguments = "{}" } } } },
                { role = "tool", tool_call_id = "c", content = "y" } } }
            assert.is_nil(build("gemini", body).contents[2].parts[1].thoughtSignature)
        end)
    end)

    describe("G2 gemini tool schemas", function()
        local function tool(params)
            return { type = "function", ["function"] = { name = "pick", parameters = params } }
        end
        local function decl(params)
            local g, err = build("gemini", { model = "gemini-2.5-flash", messages = { { role = "user", content = "x" } },
                tools = { tool(params) } })
            return g and g.tools[1].functionDeclarations[1].parameters, err
        end

        it("turns number and null enums into string enums, const into an enum, oneOf into anyOf, inlines $ref", function()
            local p = assert(decl({ type = "object", ["$defs"] = { Unit = { type = "string", enum = { "c", "f" } } },
                properties = {
                    level = { type = "integer", enum = { 1, 2, 3 } },
                    mode = { type = { "string", "null" }, enum = { "a", "b", cjson.null } },
                    kind = { const = "fixed" },
                    unit = { ["$ref"] = "#/$defs/Unit" },
                    value = { oneOf = { { type = "string" }, { type = "number" } } },
                    maybe = { anyOf = { { type = "boolean" }, { type = "null" } } },
                    flag = { type = "boolean", enum = { true } },
                }, required = { "level", "ghost" }, additionalProperties = false }))
            assert.same({ type = "string", enum = { "1", "2", "3" } }, p.properties.level)
            assert.same({ type = "string", enum = { "a", "b" }, nullable = true }, p.properties.mode)
            assert.same({ type = "string", enum = { "fixed" } }, p.properties.kind)
            assert.same({ type = "string", enum = { "c", "f" } }, p.properties.unit)
            assert.same({ anyOf = { { type = "string" }, { type = "number" } } }, p.properties.value)
            assert.same({ type = "boolean", nullable = true }, p.properties.maybe)
            assert.same({ type = "string", enum = { "true" } }, p.properties.flag)
            assert.same({ "level" }, p.required)
            assert.is_nil(p["$defs"])
        end)

        it("refuses what Gemini cannot express with the path", function()
            local _, err = decl({ type = "object", properties = { node = { ["$ref"] = "#/$defs/Node" } },
                ["$defs"] = { Node = { type = "object", properties = { next = { ["$ref"] = "#/$defs/Node" } } } } })
            assert.matches("tools%[0%]%.function%.parameters%.properties%.node%.properties%.next%.%$ref", err)
            assert.matches("recursive", err)
            _, err = decl({ type = "object", properties = { e = { enum = { "", "x" } } } })
            assert.matches("properties%.e%.enum%[0%]", err)
            _, err = decl({ type = "object", properties = { r = { ["$ref"] = "https://example.com/s.json" } } })
            assert.matches("cannot be resolved", err)
        end)

        it("converts response_format schemas the same way", function()
            local g = build("gemini", { model = "gemini-2.5-flash", messages = { { role = "user", content = "x" } },
                response_format = { type = "json_schema", json_schema = { name = "r", schema = { type = "object",
                    properties = { n = { type = "number", enum = { 1.5, 2 } } } } } } })
            assert.same({ type = "string", enum = { "1.5", "2" } }, g.generationConfig.responseSchema.properties.n)
        end)
    end)

    describe("bedrock", function()
        it("B1 clamps temperature to Converse's 0-1", function()
            local c = build("bedrock", { model = "m", temperature = 1.5, top_p = 0.5,
                messages = { { role = "user", content = "hi" } } })
            assert.same({ temperature = 1, topP = 0.5 }, c.inferenceConfig)
        end)

        it("B2 declares the tools a history uses when the request offers none", function()
            local c = build("bedrock", { model = "m", tool_choice = "required", messages = {
                { role = "user", content = "weather?" },
                { role = "assistant", tool_calls = { { id = "t1", type = "function",
                    ["function"] = { name = "get_weather", arguments = '{"city":"Paris"}' } } } },
                { role = "tool", tool_call_id = "t1", content = "sunny" } } })
            assert.same({ tools = { { toolSpec = { name = "get_weather", inputSchema = { json = {
                type = "object", properties = {} } } } } } }, c.toolConfig)
        end)

        it("B3 opens a conversation that starts with the assistant with a user turn", function()
            local c = build("bedrock", { model = "m", messages = { { role = "system", content = "Be brief." },
                { role = "assistant", content = "Hello! How can I help?" }, { role = "user", content = "hi" } } })
            assert.same({ role = "user", content = { { text = "." } } }, c.messages[1])
            assert.equals("assistant", c.messages[2].role)
        end)
    end)

    describe("A2 a tool_result with is_error", function()
        local canon = assert(api.to_openai({ model = "m", max_tokens = 10, messages = {
            { role = "user", content = "run it" },
            { role = "assistant", content = { { type = "tool_use", id = "toolu_1", name = "run", input = {} } } },
            { role = "user", content = { { type = "tool_result", tool_use_id = "toolu_1", is_error = true,
                content = "command not found" } } } } }))
        for _, kind in ipairs({ "azure-openai", "deepseek", "openai", "openai-compatible" }) do
            it("becomes a plain OpenAI tool message for " .. kind, function()
                local b = build(kind, canon)
                assert.same({ role = "tool", tool_call_id = "toolu_1", content = "Error: command not found" }, b.messages[3])
            end)
        end
        it("keeps its flag where the provider has one", function()
            assert.is_true(build("anthropic", canon).messages[3].content[1].is_error)
            assert.equals("error", build("bedrock", canon).messages[3].content[1].toolResult.status)
            assert.same({ error = "command not found" }, build("gemini", canon).contents[3].parts[1].functionResponse.response)
        end)
    end)

    describe("D1 deepseek", function()
        it("maps max_completion_tokens and the developer role, and drops what DeepSeek does not take", function()
            local canon = assert(api.to_openai({ model = "deepseek-chat", max_tokens = 50, metadata = { user_id = "u1" },
                messages = { { role = "user", content = "hi" } } }))
            assert.equals("u1", canon.user)
            local b = build("deepseek", canon)
            assert.is_nil(b.user)
            b = build("deepseek", { model = "deepseek-chat", max_completion_tokens = 77, messages = {
                { role = "developer", content = "Be brief." }, { role = "user", content = "hi" } } })
            assert.equals(77, b.max_tokens)
            assert.is_nil(b.max_completion_tokens)
            assert.equals("system", b.messages[1].role)
        end)

        it("sends every content as a string and refuses images clearly", function()
            local b = build("deepseek", { model = "deepseek-chat", messages = { { role = "user", content = {
                { type = "text", text = "Say hi" }, { type = "text", text = "please" } } } } })
            assert.equals("Say hi\nplease", b.messages[1].content)
            local _, err = build("deepseek", { model = "deepseek-chat", messages = { { role = "user", content = {
                { type = "image_url", image_url = { url = "data:image/png;base64,AAAA" } } } } } })
            assert.matches("image_url content parts are not supported", err)
        end)
    end)

    describe("X1 several text blocks in one message", function()
        local canon = assert(api.to_openai({ model = "m", max_tokens = 10, system = { { type = "text", text = "Be brief." },
            { type = "text", text = "Be kind." } }, messages = { { role = "user", content = {
            { type = "text", text = "Say hi" }, { type = "text", text = "please" } } } } }))

        it("are joined with a newline, never glued", function()
            assert.equals("Say hi\nplease", canon.messages[2].content)
            assert.equals("Be brief.\nBe kind.", canon.messages[1].content)
            for _, kind in ipairs({ "openai", "azure-openai", "deepseek" }) do
                assert.equals("Say hi\nplease", build(kind, canon).messages[2].content)
            end
        end)

        it("join the same way in an OpenAI tool message with text parts", function()
            local body = { model = "m", messages = { { role = "user", content = "x" },
                { role = "assistant", tool_calls = { { id = "t1", type = "function", ["function"] = { name = "f", arguments = "{}" } } } },
                { role = "tool", tool_call_id = "t1", content = { { type = "text", text = "line one" },
                    { type = "text", text = "line two" } } } } }
            assert.equals("line one\nline two", build("bedrock", body).messages[3].content[1].toolResult.content[1].text)
            assert.same({ content = "line one\nline two" }, build("gemini", body).contents[3].parts[1].functionResponse.response)
            assert.equals("line one\nline two", build("deepseek", body).messages[3].content)
        end)
    end)

    describe("X2 OpenAI-only parameters", function()
        local body = { model = "m", messages = { { role = "user", content = "hi" } }, service_tier = "flex",
            store = true, metadata = { k = "v" }, parallel_tool_calls = false, logit_bias = { ["50256"] = -100 },
            prompt_cache_key = "k", tools = { WEATHER } }

        it("are dropped by default where the provider does not take them", function()
            local b = build("deepseek", body)
            for _, k in ipairs({ "service_tier", "store", "metadata", "parallel_tool_calls", "logit_bias",
                "prompt_cache_key" }) do
                assert.is_nil(b[k], k)
            end
            b = build("azure-openai", body)
            for _, k in ipairs({ "service_tier", "store", "metadata", "prompt_cache_key" }) do assert.is_nil(b[k], k) end
            assert.is_false(b.parallel_tool_calls) -- Azure 2024-10-21 takes these two
            assert.same({ ["50256"] = -100 }, b.logit_bias)
            -- newer api-versions take more
            b = build("azure-openai", body, nil, { endpoint = "https://r.openai.azure.com", api_key = "k",
                api_version = "2025-04-01-preview" })
            assert.is_true(b.store)
            assert.is_nil(b.service_tier)
            -- openai takes them all
            assert.equals("flex", build("openai", body).service_tier)
        end)

        it("are refused with a 400 naming them when drop_params is false", function()
            for _, kind in ipairs({ "deepseek", "azure-openai", "gemini", "bedrock", "anthropic" }) do
                local p = {}
                for k, v in pairs(P[kind]) do p[k] = v end
                p.options = { drop_params = false }
                local r, err = D[kind].build_request(p, "chat", body, {})
                assert.is_nil(r, kind)
                assert.matches("^" .. kind:gsub("%-", "%%-") .. ": parameters? .*service_tier", err)
                assert.matches("drop_params", err)
            end
        end)
    end)

    describe("hostile requests", function()
        local function each_kind(body) -- the drivers themselves: a hostile request may well be invalid upstream
            for kind in pairs(D) do
                local d = require("sluice.ai.drivers." .. kind)
                local ok, r, err = pcall(d.build_request, P[kind], "chat", body, {})
                assert.is_true(ok, kind .. " raised: " .. tostring(r))
                assert.is_true(r ~= nil or type(err) == "string", kind)
            end
        end

        it("never raise in a driver or in the Anthropic translation, whatever the values", function()
            for _, a in ipairs({
                { role = "user", content = { { type = "text", text = {} }, { type = "text", text = "x" } } },
                { role = "assistant", content = { { type = "text", text = 5 }, { type = "text", text = {} } } },
                { role = "user", content = { { type = "tool_result", tool_use_id = "a", content = { { type = "text", text = {} } } } } },
            }) do
                local ok, canon = pcall(api.to_openai, { model = "m", max_tokens = 5, system = { { type = "text", text = {} } },
                    messages = { a } })
                assert.is_true(ok, tostring(canon))
                if canon then each_kind(canon) end
            end
            for _, b in ipairs({
                { model = "m", messages = { { role = "user", content = { { type = "text", text = {} } } } } },
                { model = "m", messages = { { role = "tool", tool_call_id = "x", content = { { type = "text", text = 1 } } } } },
                { model = "m", messages = { { role = "assistant", tool_calls = { { id = {}, ["function"] = { name = {}, arguments = {} } } } } } },
                { model = "m", messages = { { role = "user", content = "x" } }, stop = { {} }, temperature = "hot",
                    tool_choice = { type = "function", ["function"] = { name = {} } }, reasoning_effort = {} },
                { model = "m", messages = { { role = "user", content = "x" } }, response_format = { type = "json_schema",
                    json_schema = { schema = "x" } } },
            }) do
                each_kind(b)
            end
        end)

        it("refuse a schema that $ref inlining would blow up", function()
            local defs = {}
            for i = 1, 30 do
                defs["D" .. i] = { type = "object", properties = { a = { ["$ref"] = "#/$defs/D" .. (i + 1) },
                    b = { ["$ref"] = "#/$defs/D" .. (i + 1) } } }
            end
            defs.D31 = { type = "string" }
            local _, err = build("gemini", { model = "gemini-2.5-flash", messages = { { role = "user", content = "x" } },
                tools = { { type = "function", ["function"] = { name = "f", parameters = { type = "object",
                    ["$defs"] = defs, properties = { root = { ["$ref"] = "#/$defs/D1" } } } } } } })
            assert.matches("too large", err)
        end)
    end)

    describe("the validators", function()
        -- they must fail what the providers reject, or they prove nothing
        it("reject the requests of the report", function()
            local function errs(kind, path, body, headers)
                return table.concat(V.check(kind, { method = "POST", path = path, headers = headers or {},
                    body = cjson.encode(body) }), "\n")
            end
            local bh = { Authorization = "Bearer k", ["Content-Type"] = "application/json" }
            assert.matches("temperature: 1.5 is greater than the maximum 1", errs("bedrock", "/model/m/converse",
                { messages = { { role = "user", content = { { text = "x" } } } }, inferenceConfig = { temperature = 1.5 } }, bh))
            assert.matches("must start with a user message", errs("bedrock", "/model/m/converse",
                { messages = { { role = "assistant", content = { { text = "x" } } } } }, bh))
            assert.matches("toolConfig field must be defined", errs("bedrock", "/model/m/converse", { messages = {
                { role = "user", content = { { text = "x" } } },
                { role = "assistant", content = { { toolUse = { toolUseId = "t", name = "f", input = {} } } } },
                { role = "user", content = { { toolResult = { toolUseId = "t", content = { { text = "y" } } } } } } } }, bh))
            local gh = { ["x-goog-api-key"] = "k", ["Content-Type"] = "application/json" }
            assert.matches("enum%[0%]: expected a string", errs("gemini", "/v1beta/models/g:generateContent", {
                contents = { { role = "user", parts = { { text = "x" } } } }, tools = { { functionDeclarations = {
                    { name = "f", parameters = { type = "object", properties = { n = { type = "integer", enum = { 1 } } } } } } } } }, gh))
            assert.matches("missing a thought_signature", errs("gemini", "/v1beta/models/gemini-3-pro-preview:generateContent", {
                contents = { { role = "user", parts = { { text = "x" } } },
                    { role = "model", parts = { { functionCall = { name = "f", args = {} } } } },
                    { role = "user", parts = { { functionResponse = { name = "f", response = { a = 1 } } } } } } }, gh))
            assert.matches("messages%[1%]%.is_error: unknown field", errs("deepseek", "/chat/completions", {
                model = "m", messages = { { role = "assistant", tool_calls = { { id = "c", type = "function",
                    ["function"] = { name = "f", arguments = "{}" } } } },
                    { role = "tool", tool_call_id = "c", content = "x", is_error = true } } }, bh))
            assert.matches("max_completion_tokens: unknown field", errs("deepseek", "/chat/completions", {
                model = "m", max_completion_tokens = 5, messages = { { role = "user", content = "x" } } }, bh))
            assert.matches("unexpected role string 'developer'", errs("deepseek", "/chat/completions", {
                model = "m", messages = { { role = "developer", content = "x" } } }, bh))
            assert.matches("service_tier: unknown field", errs("azure-openai",
                "/openai/deployments/d/chat/completions?api-version=2024-10-21", { messages = {
                    { role = "user", content = "x" } }, service_tier = "auto" }, { ["api-key"] = "k",
                    ["Content-Type"] = "application/json" }))
        end)
    end)
end)
