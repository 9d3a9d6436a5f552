local S = require("ai.support")
local anthropic = S.strict(require("sluice.ai.drivers.anthropic"))
local cjson = require("cjson.safe")

local provider = { kind = "anthropic", api_key = "sk-ant-test", models = {} }

local function build(body, opts, p)
    local req = assert(anthropic.build_request(p or provider, "chat", body, opts or {}))
    return req, cjson.decode(req.body)
end

describe("anthropic driver", function()
    describe("build_request", function()
        it("sets URL, version and x-api-key", function()
            local req = build({ model = "claude-3-5-haiku-latest", messages = { { role = "user", content = "hi" } } })
            assert.equals("api.anthropic.com", req.host)
            assert.equals("/v1/messages", req.path)
            assert.equals("sk-ant-test", req.headers["x-api-key"])
            assert.equals("2023-06-01", req.headers["anthropic-version"])
            assert.is_nil(req.headers["Authorization"])
            assert.is_false(req.stream)
        end)

        it("honours api_version, beta headers and endpoint override", function()
            local req = build({ model = "m", messages = { { role = "user", content = "x" } } }, { stream = true },
                { api_key = "k", api_version = "2024-01-01", endpoint = "http://127.0.0.1:9999",
                    options = { beta = { "prompt-caching-2024-07-31", "output-128k-2025-02-19" } } })
            assert.equals("2024-01-01", req.headers["anthropic-version"])
            assert.equals("prompt-caching-2024-07-31,output-128k-2025-02-19", req.headers["anthropic-beta"])
            assert.equals("/v1/messages", req.path)
            assert.equals(9999, req.port)
            assert.is_true(req.stream)
            assert.is_true(cjson.decode(req.body).stream)
        end)

        it("translates a full OpenAI request (system, images, tools, tool results, options)", function()
            local _, a = build(S.json("openai/chat_request.json"))
            assert.equals("gpt-4o-mini", a.model)
            assert.equals(300, a.max_tokens)
            assert.equals(0.2, a.temperature)
            assert.equals(0.9, a.top_p)
            assert.same({ "\n\n\n" }, a.stop_sequences)
            assert.same({ user_id = "user-1234" }, a.metadata)
            -- developer message + response_format instruction -> system blocks
            assert.equals("table", type(a.system))
            assert.equals("You are a helpful assistant.", a.system[1].text)
            assert.matches("JSON Schema", a.system[2].text)
            -- user text + image
            local u = a.messages[1]
            assert.equals("user", u.role)
            assert.equals("text", u.content[1].type)
            assert.same({ type = "base64", media_type = "image/png",
                data = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==" },
                u.content[2].source)
            -- assistant tool call
            local asst = a.messages[2]
            assert.equals("assistant", asst.role)
            assert.same({ type = "tool_use", id = "call_abc123", name = "get_current_weather",
                input = { location = "Boston, MA", unit = "celsius" } }, asst.content[1])
            -- tool result first, then the next user text, in ONE user turn
            local tr = a.messages[3]
            assert.equals("user", tr.role)
            assert.same({ type = "tool_result", tool_use_id = "call_abc123",
                content = '{"temperature":22,"condition":"sunny"}' }, tr.content[1])
            assert.equals("Thanks. Answer in JSON.", tr.content[2].text)
            assert.equals(3, #a.messages)
            -- tools and choice
            assert.equals("get_current_weather", a.tools[1].name)
            assert.equals("object", a.tools[1].input_schema.type)
            assert.same({ type = "auto", disable_parallel_tool_use = true }, a.tool_choice)
        end)

        it("defaults max_tokens and clamps temperature to Anthropic's range", function()
            local _, a = build({ model = "m", temperature = 1.7, messages = { { role = "user", content = "x" } } })
            assert.equals(4096, a.max_tokens)
            assert.equals(1, a.temperature)
            local _, b = build({ model = "m", max_completion_tokens = 77, messages = { { role = "user", content = "x" } } })
            assert.equals(77, b.max_tokens)
            local _, c = build({ model = "m", messages = { { role = "user", content = "x" } } }, {},
                { api_key = "k", options = { max_tokens = 1000 } })
            assert.equals(1000, c.max_tokens)
        end)

        it("maps tool_choice variants", function()
            local base = { model = "m", messages = { { role = "user", content = "x" } },
                tools = { { type = "function", ["function"] = { name = "f" } } } }
            local function tc(v) base.tool_choice = v; local _, a = build(base); return a end
            assert.same({ type = "any" }, tc("required").tool_choice)
            assert.same({ type = "none" }, tc("none").tool_choice)
            assert.same({ type = "tool", name = "f" }, tc({ type = "function", ["function"] = { name = "f" } }).tool_choice)
            -- tool without parameters gets an empty object schema
            assert.truthy(select(1, anthropic.build_request(provider, "chat", base)).body:find('"properties":{}', 1, true))
        end)

        it("keeps a single uncached system prompt as a string and drops empty text", function()
            local _, a = build({ model = "m", messages = {
                { role = "system", content = "Be brief." },
                { role = "user", content = "" },
                { role = "user", content = "hi" },
                { role = "assistant", content = "" , tool_calls = { { id = "t1", type = "function",
                    ["function"] = { name = "f", arguments = "" } } } },
            } })
            assert.equals("Be brief.", a.system)
            assert.equals(2, #a.messages)
            assert.same({ { type = "text", text = "hi" } }, a.messages[1].content)
            assert.same({ { type = "tool_use", id = "t1", name = "f", input = {} } }, a.messages[2].content)
        end)

        it("passes cache_control, image URLs, thinking and top_k", function()
            local _, a = build({ model = "m", top_k = 5, thinking = { type = "enabled", budget_tokens = 2048 },
                messages = {
                    { role = "system", content = { { type = "text", text = "long", cache_control = { type = "ephemeral" } } } },
                    { role = "user", content = { { type = "image_url", image_url = { url = "https://x/cat.png" } } } },
                } })
            assert.same({ { type = "text", text = "long", cache_control = { type = "ephemeral" } } }, a.system)
            assert.same({ type = "url", url = "https://x/cat.png" }, a.messages[1].content[1].source)
            assert.equals(5, a.top_k)
            assert.same({ type = "enabled", budget_tokens = 2048 }, a.thinking)
        end)

        it("rejects embeddings and bad roles", function()
            assert.is_nil(anthropic.build_request(provider, "embeddings", { input = "x" }, {}))
            local r, err = anthropic.build_request(provider, "chat", { messages = { { role = "wizard", content = "x" } } })
            assert.is_nil(r)
            assert.matches("role", err)
        end)
    end)

    describe("parse_response", function()
        it("translates a text message with cache usage", function()
            local r = assert(anthropic.parse_response(200, {}, S.fixture("anthropic/messages_response.json"), "chat"))
            assert.equals("msg_013Zva2CMHLNnXjNJJKqJ2EF", r.id)
            assert.equals("chat.completion", r.object)
            assert.equals("claude-3-5-sonnet-20241022", r.model)
            assert.equals("Hi! My name is Claude.", r.choices[1].message.content)
            assert.equals("stop", r.choices[1].finish_reason)
            assert.same({ prompt_tokens = 3895, completion_tokens = 503, total_tokens = 4398, cached_tokens = 1800 },
                anthropic.usage(r))
        end)

        it("translates tool_use and thinking", function()
            local r = assert(anthropic.parse_response(200, {}, S.fixture("anthropic/tool_use_response.json"), "chat"))
            local m = r.choices[1].message
            assert.equals("tool_calls", r.choices[1].finish_reason)
            assert.equals("I'll check the current weather in San Francisco for you.", m.content)
            assert.equals("toolu_01A09q90qw90lq917835lq9", m.tool_calls[1].id)
            assert.equals("get_weather", m.tool_calls[1]["function"].name)
            assert.same({ location = "San Francisco, CA", unit = "celsius" }, cjson.decode(m.tool_calls[1]["function"].arguments))
            assert.matches("weather", m.reasoning_content)
            assert.equals(572, r.usage.prompt_tokens)
            assert.equals(100, r.usage.prompt_tokens_details.cache_creation_tokens)
        end)

        it("maps max_tokens to length", function()
            local r = assert(anthropic.parse_response(200, {}, S.fixture("anthropic/max_tokens_response.json")))
            assert.equals("length", r.choices[1].finish_reason)
        end)

        it("maps errors", function()
            local _, e = anthropic.parse_response(529, {}, S.fixture("anthropic/error_529.json"))
            assert.same({ status = 529, type = "overloaded_error", message = "Overloaded", code = "overloaded_error" }, e)
            _, e = anthropic.parse_response(400, {}, S.fixture("anthropic/error_400.json"))
            assert.equals("invalid_request_error", e.type)
            assert.equals("max_tokens: Field required", e.message)
            _, e = anthropic.parse_response(429, { ["Retry-After"] = "12" }, S.fixture("anthropic/error_429.json"))
            assert.equals(12, e.retry_after)
            assert.equals("rate_limit_error", e.type)
        end)
    end)

    describe("new_stream", function()
        for _, size in ipairs({ 1, 5, 50, 100000 }) do
            it("translates every text-stream event type (feed size " .. size .. ")", function()
                local s = anthropic.new_stream("chat", {})
                local chunks = S.run_stream(s, S.fixture("anthropic/stream.sse"), size)
                assert.equals("Hello!", S.text(chunks))
                assert.equals("assistant", chunks[1].choices[1].delta.role)
                assert.equals("msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", chunks[1].id)
                assert.equals("claude-opus-4-1-20250805", chunks[1].model)
                assert.equals("stop", S.finish_reason(chunks))
                local last = chunks[#chunks]
                assert.same({}, last.choices)
                assert.same({ prompt_tokens = 35, completion_tokens = 15, total_tokens = 50,
                    prompt_tokens_details = { cached_tokens = 10 } }, last.usage)
                assert.same({ prompt_tokens = 35, completion_tokens = 15, total_tokens = 50, cached_tokens = 10 }, s.usage)
                assert.is_true(s.done)
                for _, c in ipairs(chunks) do
                    assert.equals("chat.completion.chunk", c.object)
                    assert.equals(chunks[1].id, c.id)
                end
            end)
        end

        it("translates tool_use with input_json_delta and thinking", function()
            local s = anthropic.new_stream("chat", {})
            local chunks = S.run_stream(s, S.fixture("anthropic/stream_tools.sse"), 17)
            local calls = S.tool_calls(chunks)
            assert.equals(1, #calls)
            assert.same({ id = "toolu_01T1x1fJ34qAmk2tNTrN7Up6", name = "get_weather",
                arguments = '{"location": "San Francisco, CA"}' }, calls[1])
            assert.equals("Okay, let's check the weather.", S.text(chunks))
            assert.equals("tool_calls", S.finish_reason(chunks))
            local reasoning = {}
            for _, c in ipairs(chunks) do
                local d = c.choices[1] and c.choices[1].delta
                if d and d.reasoning_content then reasoning[#reasoning + 1] = d.reasoning_content end
            end
            assert.equals("I need the weather tool.", table.concat(reasoning))
            assert.equals(89, s.usage.completion_tokens)
            assert.equals(472, s.usage.prompt_tokens)
        end)

        it("turns an error event into an error item", function()
            local s = anthropic.new_stream("chat", {})
            local items = S.run_stream(s, S.fixture("anthropic/stream_error.sse"))
            local last = items[#items]
            assert.same({ status = 529, type = "overloaded_error", message = "Overloaded", code = "overloaded_error" },
                last.error)
            assert.equals("Par", S.text(items))
        end)
    end)
end)
