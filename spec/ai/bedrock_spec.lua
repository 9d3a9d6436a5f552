local S = require("ai.support")
local bedrock = S.strict(require("sluice.ai.drivers.bedrock"))
local sigv4 = require("sluice.ai.aws.sigv4")
local cjson = require("cjson.safe")

local AK, SK = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

describe("bedrock driver", function()
    describe("build_request", function()
        local provider = { kind = "bedrock", region = "us-east-1", access_key = AK, secret_key = SK,
            session_token = "sess-token" }

        it("builds a signed converse request", function()
            local req = assert(bedrock.build_request(provider, "chat",
                { model = "anthropic.claude-3-haiku-20240307-v1:0", messages = { { role = "user", content = "Hello" } } },
                { now = 1440938160 }))
            assert.equals("bedrock-runtime.us-east-1.amazonaws.com", req.host)
            assert.equals("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", req.path)
            assert.equals("20150830T123600Z", req.headers["X-Amz-Date"])
            assert.equals("sess-token", req.headers["X-Amz-Security-Token"])
            assert.matches("^AWS4%-HMAC%-SHA256 Credential=AKIDEXAMPLE/20150830/us%-east%-1/bedrock/aws4_request, "
                .. "SignedHeaders=content%-type;host;x%-amz%-date;x%-amz%-security%-token, Signature=%x+$",
                req.headers["Authorization"])
            -- the signature is the one an independent recomputation gives
            local copy = { method = "POST", path = req.path, body = req.body, headers = {
                Host = req.headers.Host, ["Content-Type"] = "application/json" } }
            sigv4.sign(copy, { access_key = AK, secret_key = SK, session_token = "sess-token" }, "us-east-1",
                "bedrock", "20150830T123600Z")
            assert.equals(copy.headers.Authorization, req.headers.Authorization)
            assert.same({ messages = { { role = "user", content = { { text = "Hello" } } } } }, cjson.decode(req.body))
            req = assert(bedrock.build_request(provider, "chat", { model = "m", messages = { { role = "user", content = "x" } } },
                { stream = true }))
            assert.equals("/model/m/converse-stream", req.path)
            assert.is_true(req.stream)
        end)

        it("supports Bedrock API keys (bearer) and requires credentials and region", function()
            local req = assert(bedrock.build_request({ region = "eu-west-1", api_key = "ABSK-key" }, "chat",
                { model = "m", messages = { { role = "user", content = "x" } } }))
            assert.equals("Bearer ABSK-key", req.headers.Authorization)
            assert.equals("bedrock-runtime.eu-west-1.amazonaws.com", req.host)
            assert.is_nil(bedrock.build_request({ region = "eu-west-1" }, "chat", { model = "m", messages = {} }))
            assert.is_nil(bedrock.build_request({ api_key = "k" }, "chat", { model = "m", messages = {} }))
            assert.is_nil(bedrock.build_request(provider, "embeddings", { model = "m", input = "x" }))
        end)

        it("translates a full OpenAI request", function()
            local req = assert(bedrock.build_request(provider, "chat", S.json("openai/chat_request.json")))
            local c = cjson.decode(req.body)
            assert.equals("You are a helpful assistant.", c.system[1].text)
            assert.matches("JSON Schema", c.system[2].text)
            assert.same({ maxTokens = 300, temperature = 0.2, topP = 0.9, stopSequences = { "\n\n\n" } }, c.inferenceConfig)
            assert.equals(3, #c.messages)
            assert.same({ format = "png", source = { bytes =
                "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==" } },
                c.messages[1].content[2].image)
            assert.same({ toolUseId = "call_abc123", name = "get_current_weather",
                input = { location = "Boston, MA", unit = "celsius" } }, c.messages[2].content[1].toolUse)
            assert.same({ toolUseId = "call_abc123", content = { { text = '{"temperature":22,"condition":"sunny"}' } } },
                c.messages[3].content[1].toolResult)
            assert.equals("Thanks. Answer in JSON.", c.messages[3].content[2].text)
            local spec = c.toolConfig.tools[1].toolSpec
            assert.equals("get_current_weather", spec.name)
            assert.equals("object", spec.inputSchema.json.type)
            assert.same({ auto = {} }, c.toolConfig.toolChoice)
        end)

        it("rejects image URLs it cannot send", function()
            local r, err = bedrock.build_request(provider, "chat", { model = "m", messages = { { role = "user",
                content = { { type = "image_url", image_url = { url = "https://x/cat.png" } } } } } })
            assert.is_nil(r)
            assert.matches("data: URLs", err)
        end)
    end)

    describe("parse_response", function()
        it("translates text, tool use, stop reasons and usage", function()
            local r = assert(bedrock.parse_response(200, {}, S.fixture("bedrock/converse_response.json")))
            assert.matches("Elemental Hotel", r.choices[1].message.content)
            assert.equals("stop", r.choices[1].finish_reason)
            assert.same({ prompt_tokens = 125, completion_tokens = 60, total_tokens = 185, cached_tokens = 0 }, bedrock.usage(r))
            r = assert(bedrock.parse_response(200, {}, S.fixture("bedrock/converse_tool_response.json")))
            assert.equals("tool_calls", r.choices[1].finish_reason)
            assert.equals("tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", r.choices[1].message.tool_calls[1].id)
            assert.same({ sign = "WZPZ" }, cjson.decode(r.choices[1].message.tool_calls[1]["function"].arguments))
            assert.same({ prompt_tokens = 495, completion_tokens = 48, total_tokens = 543, cached_tokens = 100 }, bedrock.usage(r))
            r = assert(bedrock.parse_response(200, {}, S.fixture("bedrock/guardrail_response.json")))
            assert.equals("content_filter", r.choices[1].finish_reason)
        end)

        it("maps errors from x-amzn-errortype", function()
            local _, e = bedrock.parse_response(400, { ["x-amzn-ErrorType"] =
                "ValidationException:http://internal.amazon.com/coral/com.amazon.bedrock/" },
                S.fixture("bedrock/error_validation.json"))
            assert.same({ status = 400, type = "invalid_request_error", code = "ValidationException",
                message = "The provided model identifier is invalid." }, e)
            _, e = bedrock.parse_response(429, { ["x-amzn-errortype"] = "ThrottlingException" },
                S.fixture("bedrock/error_throttling.json"))
            assert.equals(429, e.status)
            assert.equals("ThrottlingException", e.code)
        end)
    end)

    describe("new_stream", function()
        for _, size in ipairs({ 1, 13, 100000 }) do
            it("translates converse-stream events (feed size " .. size .. ")", function()
                local s = bedrock.new_stream("chat", { model = "anthropic.claude-3-haiku" })
                local chunks = S.run_stream(s, S.fixture("bedrock/converse_stream.bin"), size)
                assert.equals("Hello from Bedrock!", S.text(chunks))
                assert.equals("assistant", chunks[1].choices[1].delta.role)
                assert.equals("stop", S.finish_reason(chunks))
                assert.same({}, chunks[#chunks].choices)
                assert.same({ prompt_tokens = 12, completion_tokens = 6, total_tokens = 18, cached_tokens = 0 }, s.usage)
                assert.is_true(s.done)
                assert.equals("anthropic.claude-3-haiku", chunks[1].model)
            end)
        end

        it("translates tool use input deltas and reasoning", function()
            local s = bedrock.new_stream("chat")
            local chunks = S.run_stream(s, S.fixture("bedrock/converse_stream_tools.bin"), 29)
            local calls = S.tool_calls(chunks)
            assert.same({ id = "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", name = "top_song", arguments = '{"sign": "WZPZ"}' }, calls[1])
            assert.equals("Checking.", S.text(chunks))
            assert.equals("tool_calls", S.finish_reason(chunks))
            assert.equals("Need weather.", chunks[2].choices[1].delta.reasoning_content)
            assert.equals(475, s.usage.prompt_tokens)
            assert.equals(100, s.usage.cached_tokens)
        end)

        it("turns an exception message into an error item", function()
            local s = bedrock.new_stream("chat")
            local items = S.run_stream(s, S.fixture("bedrock/converse_stream_error.bin"), 7)
            assert.equals("Par", S.text(items))
            local e = items[#items].error
            assert.same({ status = 429, type = "rate_limit_error", code = "ThrottlingException",
                message = "Too many requests, please wait before trying again." }, e)
        end)

        it("reports a truncated stream", function()
            local data = S.fixture("bedrock/converse_stream.bin")
            local items = S.run_stream(bedrock.new_stream("chat"), data:sub(1, #data - 10))
            assert.matches("ended inside a message", items[#items].error.message)
        end)
    end)
end)
