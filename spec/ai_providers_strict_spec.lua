-- The providers the gateway translates to, each played by tests/mock/providers.js in strict mode: every request
-- is checked by that provider's validator (spec/ai/validators) and answered with the provider's 400 when the
-- real one would reject it; Bedrock's SigV4 is verified by the mock on its own and its streams come in AWS
-- event-stream frames cut in 37-byte pieces; the Gemini 3 mock signs its function calls and accepts back only
-- the signatures it issued. Rows of the integrator's report: G1, G2 (gemini), B1-B3 (bedrock), A1, A2
-- (azure-openai), D1 (deepseek), X1, X2.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local ROOT = helpers.ROOT
local AK, SK = "AKIDMOCKPROVIDER", "MOCK/secret+KEY"

local function sse_events(body)
    local out = {}
    for block in (body .. "\n\n"):gmatch("(.-)\n\n") do
        if block ~= "" then
            local ev = { event = block:match("^event: ([^\n]+)"), data = block:match("data: ([^\n]*)") }
            ev.json = ev.data and ev.data ~= "[DONE]" and cjson.decode(ev.data) or nil
            out[#out + 1] = ev
        end
    end
    return out
end

-- OpenAI stream chunks -> {text, tool_calls (by index, 1-based), usage, chunks}
local function collect(body)
    local r = { text = "", calls = {}, chunks = {} }
    for _, ev in ipairs(sse_events(body)) do
        local c = ev.json
        if c then
            r.chunks[#r.chunks + 1] = c
            if c.usage and c.usage ~= cjson.null then r.usage = c.usage end
            local ch = c.choices and c.choices[1]
            local d = ch and ch.delta
            if type(d) == "table" then
                if type(d.content) == "string" then r.text = r.text .. d.content end
                for _, tc in ipairs(type(d.tool_calls) == "table" and d.tool_calls or {}) do
                    local k = tc.index + 1
                    r.calls[k] = r.calls[k] or { type = "function", ["function"] = { name = "", arguments = "" } }
                    if type(tc.id) == "string" then r.calls[k].id = tc.id end
                    local f = tc["function"] or {}
                    if type(f.name) == "string" then r.calls[k]["function"].name = f.name end
                    if type(f.arguments) == "string" then
                        r.calls[k]["function"].arguments = r.calls[k]["function"].arguments .. f.arguments
                    end
                end
            end
        end
    end
    return r
end

describe("providers through the gateway (strict mock providers)", function()
    local gw, mock_port

    local function mock_requests()
        return assert(helpers.http("GET", "http://127.0.0.1:" .. mock_port .. "/__requests")).json
    end
    local function last_upstream()
        local r = mock_requests()
        return r[#r]
    end
    local function post(path, body)
        return assert(helpers.http("POST", gw.url(path), { body = body, timeout = 10,
            headers = { authorization = "Bearer client-key" } }))
    end
    local function ok(res)
        local up = last_upstream()
        assert.equal(200, res.status, "gateway answered " .. res.status .. ": " .. tostring(res.body)
            .. "\nthe mock provider said: " .. cjson.encode(up and up.invalid or {}))
        assert.is_nil(up.invalid)
        return res
    end

    setup(function()
        local dir = helpers.tmpdir()
        mock_port = helpers.free_port()
        local mock = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. mock_port
            .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        local up = "http://127.0.0.1:" .. mock_port
        local function route(id, provider)
            return { id = id, paths = { "/" .. id .. "/v1/*" }, plugins = { ["ai-proxy"] = { provider = provider } } }
        end
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins" }, workers = 1 },
            providers = {
                gem3 = { kind = "gemini", endpoint = up, api_key = "gk", models = { gem = "gemini-3-pro-preview" } },
                gem25 = { kind = "gemini", endpoint = up, api_key = "gk", models = { gem = "gemini-2.5-flash" } },
                br = { kind = "bedrock", endpoint = up, region = "eu-west-1", access_key = AK, secret_key = SK,
                    models = { claude = "anthropic.claude-3-5-haiku-20241022-v1:0" } },
                brbad = { kind = "bedrock", endpoint = up, region = "eu-west-1", access_key = AK, secret_key = "wrong" },
                az = { kind = "azure-openai", endpoint = up, api_key = "az-key", deployment = "gpt4o" },
                ds = { kind = "deepseek", endpoint = up .. "/k/deepseek", api_key = "ds-key" },
                dss = { kind = "deepseek", endpoint = up .. "/k/deepseek", api_key = "ds-key",
                    options = { drop_params = false } },
            },
            routes = { route("gem3", "gem3"), route("gem25", "gem25"), route("br", "br"), route("brbad", "brbad"),
                route("az", "az"), route("ds", "ds"), route("dss", "dss") },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local USER = { { role = "user", content = "What is the weather in Paris?" } }
    local TOOLS = { { type = "function", ["function"] = { name = "get_weather", description = "Weather in a city",
        parameters = { type = "object", properties = { location = { type = "string" }, unit = { type = "string",
            enum = { "celsius", "fahrenheit" } } }, required = { "location" } } } } }

    -- the second turn of a tool loop: the assistant's calls as the client got them, and one result per call
    local function second_turn(calls)
        local msgs = { USER[1], { role = "assistant", content = cjson.null, tool_calls = calls } }
        for _, c in ipairs(calls) do msgs[#msgs + 1] = { role = "tool", tool_call_id = c.id, content = '{"temp":21}' } end
        return { model = "gem", messages = msgs, tools = TOOLS }
    end

    describe("G1 gemini 3 tool loop", function()
        it("OpenAI client, non-streaming: the second turn carries the call's signature back", function()
            local r1 = ok(post("/gem3/v1/chat/completions", { model = "gem", messages = USER, tools = TOOLS }))
            local calls = r1.json.choices[1].message.tool_calls
            assert.equal("get_weather", calls[1]["function"].name)
            local issued = last_upstream() -- the mock's answer is not recorded; its signature comes back below
            assert.is_nil(issued.invalid)
            local r2 = ok(post("/gem3/v1/chat/completions", second_turn(calls)))
            assert.equal("Hello from the mock.", r2.json.choices[1].message.content)
            local sent = last_upstream().body.contents[2].parts[1]
            assert.is_string(sent.thoughtSignature)
            assert.not_equal("skip_thought_signature_validator", sent.thoughtSignature)
        end)

        it("OpenAI client, streaming the first turn", function()
            local res = ok(post("/gem3/v1/chat/completions", { model = "gem", messages = USER, tools = TOOLS,
                stream = true }))
            local calls = collect(res.body).calls
            assert.equal(1, #calls)
            local r2 = ok(post("/gem3/v1/chat/completions", second_turn(calls)))
            assert.equal("Hello from the mock.", r2.json.choices[1].message.content)
        end)

        it("Anthropic client: tool_use id -> tool_result", function()
            local r1 = ok(post("/gem3/v1/messages", { model = "gem", max_tokens = 100,
                messages = { { role = "user", content = "Weather in Paris?" } },
                tools = { { name = "get_weather", input_schema = { type = "object", properties = {
                    location = { type = "string" } } } } } }))
            local use
            for _, b in ipairs(r1.json.content) do if b.type == "tool_use" then use = b end end
            assert.is_table(use)
            local r2 = ok(post("/gem3/v1/messages", { model = "gem", max_tokens = 100, messages = {
                { role = "user", content = "Weather in Paris?" },
                { role = "assistant", content = r1.json.content },
                { role = "user", content = { { type = "tool_result", tool_use_id = use.id, content = "21 degrees" } } } },
                tools = { { name = "get_weather", input_schema = { type = "object", properties = {
                    location = { type = "string" } } } } } }))
            assert.equal("Hello from the mock.", r2.json.content[1].text)
        end)

        it("a signature the client altered is refused by the provider, not hidden", function()
            local r1 = ok(post("/gem3/v1/chat/completions", { model = "gem", messages = USER, tools = TOOLS }))
            local calls = r1.json.choices[1].message.tool_calls
            calls[1].id = calls[1].id:sub(1, -3) .. (calls[1].id:sub(-2) == "AA" and "BB" or "AA")
            local r2 = post("/gem3/v1/chat/completions", second_turn(calls))
            assert.equal(400, r2.status)
            assert.matches("Corrupted thought signature", r2.json.error.message)
        end)
    end)

    describe("G2 gemini tool schemas", function()
        local function schema_tool(params)
            return { { type = "function", ["function"] = { name = "pick", parameters = params } } }
        end

        it("number and null enums, const, oneOf and $ref reach Gemini in its own terms", function()
            local res = ok(post("/gem25/v1/chat/completions", { model = "gem", messages = USER, tools = schema_tool({
                type = "object", ["$defs"] = { Unit = { type = "string", enum = { "c", "f" } } },
                properties = { level = { type = "integer", enum = { 1, 2, 3 } },
                    mode = { type = { "string", "null" }, enum = { "fast", cjson.null } }, kind = { const = "x" },
                    unit = { ["$ref"] = "#/$defs/Unit" }, v = { oneOf = { { type = "string" }, { type = "number" } } } },
                required = { "level" }, additionalProperties = false }) }))
            assert.equal("tool_calls", res.json.choices[1].finish_reason)
            local p = last_upstream().body.tools[1].functionDeclarations[1].parameters
            assert.same({ "1", "2", "3" }, p.properties.level.enum)
            assert.same({ type = "string", enum = { "c", "f" } }, p.properties.unit)
        end)

        it("what Gemini cannot express is a 400 naming the path, before any upstream call", function()
            local before = #mock_requests()
            local res = post("/gem25/v1/chat/completions", { model = "gem", messages = USER, tools = schema_tool({
                type = "object", properties = { tree = { ["$ref"] = "#/$defs/T" } },
                ["$defs"] = { T = { type = "object", properties = { kids = { type = "array", items = { ["$ref"] = "#/$defs/T" } } } } } }) })
            assert.equal(400, res.status)
            assert.matches("tools%[0%]%.function%.parameters%.properties%.tree%.properties%.kids%.items%.%$ref", res.json.error.message)
            assert.equal(before, #mock_requests())
        end)
    end)

    describe("bedrock", function()
        it("signs requests the provider verifies on its own (and a wrong secret is refused)", function()
            ok(post("/br/v1/chat/completions", { model = "claude", messages = USER }))
            local res = post("/brbad/v1/chat/completions", { model = "claude", messages = USER })
            assert.equal(403, res.status)
            assert.matches("signature we calculated does not match", res.json.error.message)
        end)

        it("B1 temperature 1.5 is clamped to Converse's 0-1", function()
            local res = ok(post("/br/v1/chat/completions", { model = "claude", temperature = 1.5, messages = USER }))
            assert.equal("Hello from the mock.", res.json.choices[1].message.content)
            assert.equal(1, last_upstream().body.inferenceConfig.temperature)
        end)

        it("B2 a tool history without tools gets a toolConfig", function()
            ok(post("/br/v1/chat/completions", { model = "claude", messages = { USER[1],
                { role = "assistant", tool_calls = { { id = "call_1", type = "function",
                    ["function"] = { name = "get_weather", arguments = '{"location":"Paris"}' } } } },
                { role = "tool", tool_call_id = "call_1", content = "21 degrees" } } }))
        end)

        it("B3 a conversation that starts with the assistant", function()
            ok(post("/br/v1/chat/completions", { model = "claude", messages = {
                { role = "assistant", content = "Hi, I am your weather bot." }, USER[1] } }))
        end)

        it("streams text and tool calls from event-stream frames cut in 37-byte pieces", function()
            local r = collect(ok(post("/br/v1/chat/completions", { model = "claude", messages = USER, stream = true,
                stream_options = { include_usage = true } })).body)
            assert.equal("Hello from the mock.", r.text)
            assert.equal(15, r.usage.total_tokens)
            r = collect(ok(post("/br/v1/chat/completions", { model = "claude", messages = USER, tools = TOOLS,
                stream = true })).body)
            assert.equal("get_weather", r.calls[1]["function"].name)
            assert.same({ location = "Paris", unit = "celsius" }, cjson.decode(r.calls[1]["function"].arguments))
        end)
    end)

    describe("azure-openai", function()
        it("A1 content-filter chunks (choices: []) never reach an OpenAI client", function()
            for _, include in ipairs({ false, true }) do
                local body = { model = "gpt-4o", messages = USER, stream = true }
                if include then body.stream_options = { include_usage = true } end
                local r = collect(ok(post("/az/v1/chat/completions", body)).body)
                assert.equal("Hello from the mock.", r.text)
                for i, c in ipairs(r.chunks) do
                    if not (include and i == #r.chunks) then
                        assert.is_table(c.choices[1], "chunk " .. i .. " has no choices[0]: " .. cjson.encode(c))
                    end
                end
                if include then assert.equal(22, r.usage.total_tokens) else assert.is_nil(r.usage) end
            end
        end)

        it("A2 an Anthropic tool_result with is_error becomes a plain tool message", function()
            ok(post("/az/v1/messages", { model = "gpt-4o", max_tokens = 50, messages = {
                { role = "user", content = "Run it" },
                { role = "assistant", content = { { type = "tool_use", id = "toolu_1", name = "run", input = {} } } },
                { role = "user", content = { { type = "tool_result", tool_use_id = "toolu_1", is_error = true,
                    content = "command not found" } } } } }))
            assert.same({ role = "tool", tool_call_id = "toolu_1", content = "Error: command not found" },
                last_upstream().body.messages[3])
        end)

        it("X1 two text blocks stay two lines", function()
            ok(post("/az/v1/messages", { model = "gpt-4o", max_tokens = 50, messages = { { role = "user", content = {
                { type = "text", text = "Say hi" }, { type = "text", text = "please" } } } } }))
            assert.equal("Say hi\nplease", last_upstream().body.messages[1].content)
        end)
    end)

    describe("deepseek", function()
        it("D1 max_completion_tokens and the developer role are mapped; metadata.user_id does not go", function()
            ok(post("/ds/v1/chat/completions", { model = "deepseek-chat", max_completion_tokens = 64, messages = {
                { role = "developer", content = "Be brief." }, USER[1] } }))
            local b = last_upstream().body
            assert.equal(64, b.max_tokens)
            assert.equal("system", b.messages[1].role)
            ok(post("/ds/v1/messages", { model = "deepseek-chat", max_tokens = 64, metadata = { user_id = "u-1" },
                messages = { { role = "user", content = { { type = "text", text = "Say hi" },
                    { type = "text", text = "please" } } } } }))
            b = last_upstream().body
            assert.is_nil(b.user)
            assert.equal("Say hi\nplease", b.messages[1].content)
        end)

        it("X2 OpenAI-only parameters: dropped by default, a 400 naming them with drop_params: false", function()
            local body = { model = "deepseek-chat", messages = USER, service_tier = "auto", store = true,
                metadata = { k = "v" }, parallel_tool_calls = false, logit_bias = { ["50256"] = -100 }, n = 1 }
            ok(post("/ds/v1/chat/completions", body))
            local before = #mock_requests()
            local res = post("/dss/v1/chat/completions", body)
            assert.equal(400, res.status)
            assert.matches("logit_bias, metadata, n, parallel_tool_calls, service_tier, store", res.json.error.message)
            assert.equal(before, #mock_requests())
        end)
    end)
end)
