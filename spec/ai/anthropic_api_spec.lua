local api = require("sluice.ai.anthropic_api")
local S0 = require("ai.support")
local anthropic = S0.strict(require("sluice.ai.drivers.anthropic"))
local openai = S0.strict(require("sluice.ai.drivers.openai"))
local common = require("sluice.ai.common")
local S = require("ai.support")
local cjson = require("cjson.safe")

-- Applies Anthropic stream events the way the Anthropic SDK's MessageStream accumulates them.
local function accumulate(events)
    local msg
    local types = {}
    for _, ev in ipairs(events) do
        local d = ev.data
        types[#types + 1] = ev.event
        assert.equals(ev.event, d.type)
        if d.type == "message_start" then
            msg = d.message
            assert.same({}, msg.content)
        elseif d.type == "content_block_start" then
            assert.equals(#msg.content, d.index)
            msg.content[d.index + 1] = d.content_block
            if d.content_block.type == "tool_use" then d.content_block._json = "" end
        elseif d.type == "content_block_delta" then
            local b = msg.content[d.index + 1]
            if d.delta.type == "text_delta" then b.text = b.text .. d.delta.text
            elseif d.delta.type == "input_json_delta" then b._json = b._json .. d.delta.partial_json
            elseif d.delta.type == "thinking_delta" then b.thinking = b.thinking .. d.delta.thinking end
        elseif d.type == "content_block_stop" then
            local b = msg.content[d.index + 1]
            if b.type == "tool_use" then
                b.input = b._json ~= "" and cjson.decode(b._json) or {}
                b._json = nil
            end
        elseif d.type == "message_delta" then
            msg.stop_reason = d.delta.stop_reason
            for k, v in pairs(d.usage) do msg.usage[k] = v end
        end
    end
    return msg, types
end

describe("anthropic_api (client-facing Messages API)", function()
    describe("to_openai", function()
        it("translates a full request", function()
            local o = assert(api.to_openai(S.json("anthropic/client_request.json")))
            assert.equals("claude-3-5-sonnet-latest", o.model)
            assert.equals(1024, o.max_tokens)
            assert.is_true(o.stream)
            assert.same({ "END" }, o.stop)
            assert.equals(0.5, o.temperature)
            assert.equals(40, o.top_k)
            assert.equals("u-42", o.user)
            -- cached system prompt keeps its block
            assert.same({ role = "system", content = { { type = "text", text = "You are a weather bot.",
                cache_control = { type = "ephemeral" } } } }, o.messages[1])
            -- user text + image (data URL)
            local u = o.messages[2]
            assert.equals("user", u.role)
            assert.equals("What's the weather in SF? Here is a photo.", u.content[1].text)
            assert.same({ url = "data:image/jpeg;base64,/9j/4AAQSkZJRg==" }, u.content[2].image_url)
            -- assistant text + tool_use -> content + tool_calls
            local a = o.messages[3]
            assert.equals("Let me check.", a.content)
            assert.equals("toolu_01A09q90qw90lq917835lq9", a.tool_calls[1].id)
            assert.same({ location = "San Francisco, CA" }, cjson.decode(a.tool_calls[1]["function"].arguments))
            -- tool_result -> role tool (before the rest of the user turn)
            assert.same({ role = "tool", tool_call_id = "toolu_01A09q90qw90lq917835lq9", content = "15 degrees" }, o.messages[4])
            assert.same({ role = "user", content = "And tomorrow?" }, o.messages[5])
            -- tools
            assert.same({ type = "function", ["function"] = { name = "get_weather",
                description = "Get the current weather in a given location",
                parameters = { type = "object", properties = { location = { type = "string" } }, required = { "location" } } } },
                o.tools[1])
            assert.equals("required", o.tool_choice)
            assert.is_false(o.parallel_tool_calls)
        end)

        it("maps tool_choice tool/none/auto and string system", function()
            local base = { model = "m", max_tokens = 5, system = "sys", messages = { { role = "user", content = "x" } } }
            base.tool_choice = { type = "tool", name = "f" }
            local o = api.to_openai(base)
            assert.same({ type = "function", ["function"] = { name = "f" } }, o.tool_choice)
            assert.same({ role = "system", content = "sys" }, o.messages[1])
            base.tool_choice = { type = "none" }
            assert.equals("none", api.to_openai(base).tool_choice)
            base.tool_choice = { type = "auto" }
            assert.equals("auto", api.to_openai(base).tool_choice)
        end)

        it("rejects malformed requests", function()
            assert.is_nil(api.to_openai({ model = "m" }))
            local o, err = api.to_openai({ model = "m", messages = { { role = "system", content = "x" } } })
            assert.is_nil(o)
            assert.matches("role", err)
        end)

        it("round-trips through the anthropic driver (Anthropic client -> Anthropic provider)", function()
            local orig = S.json("anthropic/client_request.json")
            local req = assert(anthropic.build_request({ api_key = "k" }, "chat", api.to_openai(orig), { stream = true }))
            local a = cjson.decode(req.body)
            assert.same(orig.system, a.system)
            assert.same(orig.tools, a.tools)
            assert.same(orig.tool_choice, a.tool_choice)
            assert.same(orig.stop_sequences, a.stop_sequences)
            assert.same(orig.metadata, a.metadata)
            assert.equals(orig.top_k, a.top_k)
            assert.same(orig.messages[1], a.messages[1])
            assert.same(orig.messages[2], a.messages[2])
            assert.same({ type = "tool_result", tool_use_id = "toolu_01A09q90qw90lq917835lq9", content = "15 degrees" },
                a.messages[3].content[1])
            assert.same({ type = "text", text = "And tomorrow?" }, a.messages[3].content[2])
        end)
    end)

    describe("from_openai_response", function()
        it("translates text + usage (cached split out)", function()
            local r = api.from_openai_response(assert(openai.parse_response(200, {}, S.fixture("openai/chat_response.json"))))
            assert.equals("msg_B9MHDbslfkBeAs8l4bebGdFOJ6PeG", r.id)
            assert.equals("message", r.type)
            assert.equals("assistant", r.role)
            assert.equals("end_turn", r.stop_reason)
            assert.equals(cjson.null, r.stop_sequence)
            assert.same({ { type = "text", text = "The image shows a wooden boardwalk path running through a lush green field." } },
                r.content)
            assert.same({ input_tokens = 93, output_tokens = 46, cache_read_input_tokens = 1024,
                cache_creation_input_tokens = 0 }, r.usage)
        end)

        it("translates tool calls", function()
            local r = api.from_openai_response(assert(openai.parse_response(200, {}, S.fixture("openai/chat_tool_response.json"))))
            assert.equals("tool_use", r.stop_reason)
            assert.same({ type = "tool_use", id = "call_abc123", name = "get_current_weather",
                input = { location = "Boston, MA" } }, r.content[1])
            assert.equals(82, r.usage.input_tokens)
        end)

        it("round-trips an Anthropic upstream response (Anthropic provider -> Anthropic client)", function()
            local canon = anthropic.parse_response(200, {}, S.fixture("anthropic/tool_use_response.json"))
            local r = api.from_openai_response(canon)
            local orig = S.json("anthropic/tool_use_response.json")
            assert.equals(orig.id, r.id)
            assert.same(orig.content, r.content)
            assert.equals("tool_use", r.stop_reason)
            assert.same({ input_tokens = 472, output_tokens = 91, cache_read_input_tokens = 0,
                cache_creation_input_tokens = 100 }, r.usage)
        end)

        it("encodes empty content as []", function()
            local r = api.from_openai_response({ id = "x", model = "m", choices = { { message = { role = "assistant",
                content = cjson.null }, finish_reason = "length" } } })
            assert.truthy(common.json_encode(r):find('"content":[]', 1, true))
            assert.equals("max_tokens", r.stop_reason)
        end)
    end)

    describe("stream_encoder", function()
        local function encode(chunks, opts)
            local e = api.stream_encoder(opts)
            local out = {}
            for _, c in ipairs(chunks) do out[#out + 1] = e:chunk(c) end
            out[#out + 1] = e:finish()
            return S.sse_events(table.concat(out))
        end

        it("turns an OpenAI text stream into the Anthropic event sequence", function()
            local chunks = S.run_stream(openai.new_stream("chat"), S.fixture("openai/chat_stream.sse"))
            local msg, types = accumulate(encode(chunks))
            assert.same({ "message_start", "ping", "content_block_start", "content_block_delta", "content_block_delta",
                "content_block_stop", "message_delta", "message_stop" }, types)
            assert.equals("Hello! How can I help?", msg.content[1].text)
            assert.equals("end_turn", msg.stop_reason)
            assert.equals(9, msg.usage.output_tokens)
            assert.equals(9, msg.usage.input_tokens)
            assert.equals("msg_123", msg.id)
            assert.equals("gpt-4o-mini-2024-07-18", msg.model)
        end)

        it("turns OpenAI tool call deltas into tool_use blocks with input_json_delta", function()
            local chunks = S.run_stream(openai.new_stream("chat"), S.fixture("openai/chat_stream_tools.sse"))
            local msg = accumulate(encode(chunks))
            assert.equals(2, #msg.content)
            assert.same({ type = "tool_use", id = "call_DdmO9pD3xa9XTPNJ32zg2hcA", name = "get_current_weather",
                input = { location = "Boston, MA" } }, msg.content[1])
            assert.same({ type = "tool_use", id = "call_Ab12Cd34Ef56Gh78Ij90Kl12", name = "get_time",
                input = { tz = "EST" } }, msg.content[2])
            assert.equals("tool_use", msg.stop_reason)
            assert.equals(38, msg.usage.output_tokens)
        end)

        it("round-trips an Anthropic upstream stream to an Anthropic client", function()
            local chunks = S.run_stream(anthropic.new_stream("chat"), S.fixture("anthropic/stream_tools.sse"))
            local msg = accumulate(encode(chunks))
            assert.equals("thinking", msg.content[1].type)
            assert.equals("I need the weather tool.", msg.content[1].thinking)
            assert.equals("Okay, let's check the weather.", msg.content[2].text)
            assert.same({ location = "San Francisco, CA" }, msg.content[3].input)
            assert.equals("tool_use", msg.stop_reason)
            assert.equals(89, msg.usage.output_tokens)
            assert.equals(472, msg.usage.input_tokens)
            assert.equals("msg_014p7gG3wDgGV9EUtLvnow3U", msg.id)
        end)

        it("closes a stream that ended without a usage chunk in finish()", function()
            local st = { id = "chatcmpl-1", created = 1, model = "m" }
            local evs = encode({ common.chunk(st, { role = "assistant", content = "Hi" }), common.chunk(st, {}, "length") },
                { input_tokens = 7 })
            local msg, types = accumulate(evs)
            assert.equals("message_stop", types[#types])
            assert.equals("max_tokens", msg.stop_reason)
            assert.equals(7, msg.usage.input_tokens)
            assert.equals("Hi", msg.content[1].text)
        end)

        it("emits an error event for an error item and stops", function()
            local e = api.stream_encoder()
            local s = e:chunk(common.chunk({ id = "x", created = 1, model = "m" }, { content = "a" }))
            s = s .. e:chunk({ error = { status = 529, message = "Overloaded", type = "overloaded_error" } })
            s = s .. e:finish()
            local evs = S.sse_events(s)
            assert.equals("error", evs[#evs].event)
            assert.same({ type = "error", error = { type = "overloaded_error", message = "Overloaded" } }, evs[#evs].data)
        end)

        it("finish() alone produces a well-formed empty message", function()
            local msg, types = accumulate(encode({}))
            assert.same({ "message_start", "ping", "message_delta", "message_stop" }, types)
            assert.equals("end_turn", msg.stop_reason)
        end)
    end)
end)
