local S = require("ai.support")
local gemini = S.strict(require("sluice.ai.drivers.gemini"))
local cjson = require("cjson.safe")

local provider = { kind = "gemini", api_key = "AIza-test" }

describe("gemini driver", function()
    describe("build_request", function()
        it("uses generateContent / streamGenerateContent?alt=sse with x-goog-api-key", function()
            local body = { model = "gemini-2.0-flash", messages = { { role = "user", content = "hi" } } }
            local req = assert(gemini.build_request(provider, "chat", body, {}))
            assert.equals("generativelanguage.googleapis.com", req.host)
            assert.equals("/v1beta/models/gemini-2.0-flash:generateContent", req.path)
            assert.equals("AIza-test", req.headers["x-goog-api-key"])
            assert.is_false(req.stream)
            req = assert(gemini.build_request(provider, "chat", body, { stream = true }))
            assert.equals("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", req.path)
            assert.is_true(req.stream)
        end)

        it("translates a full OpenAI request", function()
            local req = assert(gemini.build_request(provider, "chat", S.json("openai/chat_request.json")))
            local g = cjson.decode(req.body)
            assert.same({ parts = { { text = "You are a helpful assistant." } } }, g.systemInstruction)
            assert.equals(3, #g.contents) -- user, model(functionCall), user(functionResponse + text)
            assert.equals("user", g.contents[1].role)
            assert.equals("What is in this image, and what's the weather in Boston?", g.contents[1].parts[1].text)
            assert.same({ mimeType = "image/png",
                data = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==" },
                g.contents[1].parts[2].inlineData)
            assert.equals("model", g.contents[2].role)
            assert.same({ name = "get_current_weather", args = { location = "Boston, MA", unit = "celsius" } },
                g.contents[2].parts[1].functionCall)
            assert.equals("user", g.contents[3].role)
            assert.same({ name = "get_current_weather", response = { temperature = 22, condition = "sunny" } },
                g.contents[3].parts[1].functionResponse)
            assert.equals("Thanks. Answer in JSON.", g.contents[3].parts[2].text)
            local gc = g.generationConfig
            assert.same({ temperature = 0.2, topP = 0.9, maxOutputTokens = 300, stopSequences = { "\n\n\n" },
                responseMimeType = "application/json",
                responseSchema = { type = "object", properties = { summary = { type = "string" } }, required = { "summary" } } },
                gc)
            local decl = g.tools[1].functionDeclarations[1]
            assert.equals("get_current_weather", decl.name)
            assert.is_nil(decl.parameters.additionalProperties)
            assert.same({ "celsius", "fahrenheit" }, decl.parameters.properties.unit.enum)
            assert.same({ functionCallingConfig = { mode = "AUTO" } }, g.toolConfig)
        end)

        it("maps tool_choice to functionCallingConfig and wraps non-object tool results", function()
            local body = { model = "m", tools = { { type = "function", ["function"] = { name = "f",
                parameters = { type = "object", properties = {} } } } },
                tool_choice = { type = "function", ["function"] = { name = "f" } },
                messages = { { role = "assistant", tool_calls = { { id = "c1", type = "function",
                    ["function"] = { name = "f", arguments = "{}" } } } },
                    { role = "tool", tool_call_id = "c1", content = "plain text" } } }
            local g = cjson.decode(gemini.build_request(provider, "chat", body).body)
            assert.same({ mode = "ANY", allowedFunctionNames = { "f" } }, g.toolConfig.functionCallingConfig)
            assert.is_nil(g.tools[1].functionDeclarations[1].parameters)
            -- a conversation must not open with a function call turn: a "." user turn goes first
            assert.same({ role = "user", parts = { { text = "." } } }, g.contents[1])
            assert.same({ name = "f", response = { content = "plain text" } }, g.contents[3].parts[1].functionResponse)
            body.tool_choice = "required"
            g = cjson.decode(gemini.build_request(provider, "chat", body).body)
            assert.equals("ANY", g.toolConfig.functionCallingConfig.mode)
        end)

        it("cleans JSON Schema to Gemini's subset (nullable types)", function()
            assert.same({ type = "string", nullable = true, description = "d" },
                gemini.clean_schema({ type = { "string", "null" }, description = "d", ["$schema"] = "x", strict = true }))
        end)

        it("builds batchEmbedContents", function()
            local req = assert(gemini.build_request(provider, "embeddings", { model = "text-embedding-004",
                input = { "a", "b" } }))
            assert.equals("/v1beta/models/text-embedding-004:batchEmbedContents", req.path)
            local g = cjson.decode(req.body)
            assert.same({ model = "models/text-embedding-004", content = { parts = { { text = "b" } } } }, g.requests[2])
        end)
    end)

    describe("parse_response", function()
        it("translates text and usage (thoughts counted as completion/reasoning)", function()
            local r = assert(gemini.parse_response(200, {}, S.fixture("gemini/response.json"), "chat"))
            assert.equals("AI learns patterns from data to make predictions.", r.choices[1].message.content)
            assert.equals("stop", r.choices[1].finish_reason)
            assert.equals("gemini-2.5-flash", r.model)
            assert.equals("uL9jaKzqL8qz1dkP7pDt0Aw", r.id)
            assert.same({ prompt_tokens = 8, completion_tokens = 33, total_tokens = 41, reasoning_tokens = 24 },
                gemini.usage(r))
        end)

        it("translates function calls with generated ids", function()
            local r = assert(gemini.parse_response(200, {}, S.fixture("gemini/function_call_response.json"), "chat"))
            local m = r.choices[1].message
            assert.equals("tool_calls", r.choices[1].finish_reason)
            assert.equals(2, #m.tool_calls)
            assert.equals("set_light_values", m.tool_calls[1]["function"].name)
            assert.same({ brightness = 25, color_temp = "warm" }, cjson.decode(m.tool_calls[1]["function"].arguments))
            assert.matches("^call_", m.tool_calls[1].id)
            assert.not_equals(m.tool_calls[1].id, m.tool_calls[2].id)
            assert.equals(50, gemini.usage(r).cached_tokens)
        end)

        it("reports a blocked prompt as content_filter", function()
            local r = assert(gemini.parse_response(200, {}, S.fixture("gemini/blocked_response.json"), "chat"))
            assert.equals("content_filter", r.choices[1].finish_reason)
            assert.equals(12, r.usage.prompt_tokens)
        end)

        it("translates embeddings", function()
            local r = assert(gemini.parse_response(200, {}, S.fixture("gemini/embeddings_response.json"), "embeddings"))
            assert.equals(2, #r.data)
            assert.equals(1, r.data[2].index)
            assert.equals(3, #r.data[1].embedding)
        end)

        it("maps errors incl. RetryInfo", function()
            local _, e = gemini.parse_response(429, {}, S.fixture("gemini/error_429.json"))
            assert.same({ status = 429, type = "rate_limit_error", code = "RESOURCE_EXHAUSTED", retry_after = 27,
                message = "You exceeded your current quota, please check your plan and billing details." }, e)
            _, e = gemini.parse_response(400, {}, S.fixture("gemini/error_400.json"))
            assert.equals("invalid_request_error", e.type)
            _, e = gemini.parse_response(503, {}, "[" .. S.fixture("gemini/error_400.json") .. "]")
            assert.equals(503, e.status)
        end)
    end)

    describe("new_stream", function()
        for _, size in ipairs({ 1, 10, 100000 }) do
            it("translates an alt=sse stream with CRLF framing (feed size " .. size .. ")", function()
                local s = gemini.new_stream("chat")
                local chunks = S.run_stream(s, S.fixture("gemini/stream.sse"), size)
                assert.equals("The quick brown fox jumps over the lazy dog.", S.text(chunks))
                assert.equals("stop", S.finish_reason(chunks))
                assert.equals("assistant", chunks[1].choices[1].delta.role)
                local last = chunks[#chunks]
                assert.same({}, last.choices)
                assert.same({ prompt_tokens = 9, completion_tokens = 10, total_tokens = 19 }, s.usage)
                local n = 0
                for _, c in ipairs(chunks) do if c.usage then n = n + 1 end end
                assert.equals(1, n)
                assert.is_true(s.done)
            end)
        end

        it("translates a streamed function call", function()
            local s = gemini.new_stream("chat")
            local chunks = S.run_stream(s, S.fixture("gemini/stream_tools.sse"))
            local calls = S.tool_calls(chunks)
            assert.equals("get_weather", calls[1].name)
            assert.same({ location = "Boston" }, cjson.decode(calls[1].arguments))
            assert.equals("tool_calls", S.finish_reason(chunks))
            assert.equals(46, s.usage.total_tokens)
        end)

        it("turns an in-stream error into an error item", function()
            local s = gemini.new_stream("chat")
            local items = S.run_stream(s, S.fixture("gemini/stream_error.sse"))
            assert.equals("Sure, here", S.text(items))
            local e = items[#items].error
            assert.equals(503, e.status)
            assert.equals("UNAVAILABLE", e.code)
        end)
    end)
end)
