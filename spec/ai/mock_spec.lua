local mock = require("sluice.ai.drivers.mock")
local S = require("ai.support")
local cjson = require("cjson.safe")

local body = { model = "mock-model", messages = { { role = "user", content = "Tell me a joke" } } }

local function run(req)
    local lr = req.local_response
    if req.stream and lr.status == 200 then
        local s = mock.new_stream("chat")
        local items = {}
        for _, c in ipairs(lr.chunks) do for _, it in ipairs(s:feed(c)) do items[#items + 1] = it end end
        for _, it in ipairs(s:finish()) do items[#items + 1] = it end
        return items, s
    end
    return mock.parse_response(lr.status, lr.headers, lr.body, "chat")
end

describe("mock driver", function()
    it("answers locally with configured text, usage and latency", function()
        local p = { kind = "mock", options = { text = "Why did the gateway cross the road?", prompt_tokens = 11,
            completion_tokens = 7, latency_ms = 25 } }
        local req = assert(mock.build_request(p, "chat", body, {}))
        assert.is_table(req.local_response)
        assert.equals(25, req.local_response.latency_ms)
        local r = assert(run(req))
        assert.equals("Why did the gateway cross the road?", r.choices[1].message.content)
        assert.equals("mock-model", r.model)
        assert.same({ prompt_tokens = 11, completion_tokens = 7, total_tokens = 18 }, mock.usage(r))
    end)

    it("streams word by word with a usage chunk and [DONE]", function()
        local p = { options = { text = "one two three", prompt_tokens = 4, completion_tokens = 3, chunk_delay_ms = 5 } }
        local req = assert(mock.build_request(p, "chat", body, { stream = true }))
        assert.equals(5, req.local_response.chunk_delay_ms)
        assert.equals("data: [DONE]\n\n", req.local_response.chunks[#req.local_response.chunks])
        local chunks, s = run(req)
        assert.equals("one two three", S.text(chunks))
        assert.equals("stop", S.finish_reason(chunks))
        assert.same({ prompt_tokens = 4, completion_tokens = 3, total_tokens = 7 }, s.usage)
        assert.is_true(s.done)
    end)

    it("echoes and estimates tokens when no counts are configured", function()
        local r = assert(run(assert(mock.build_request({ options = { echo = true } }, "chat", body))))
        assert.equals("Tell me a joke", r.choices[1].message.content)
        assert.is_true(r.usage.prompt_tokens > 0)
        assert.is_true(r.usage.completion_tokens > 0)
    end)

    it("answers with tool calls, streaming argument deltas", function()
        local p = { options = { tool_calls = { { name = "get_weather", arguments = { city = "Paris" } } } } }
        local r = assert(run(assert(mock.build_request(p, "chat", body))))
        assert.equals("tool_calls", r.choices[1].finish_reason)
        assert.same({ city = "Paris" }, cjson.decode(r.choices[1].message.tool_calls[1]["function"].arguments))
        local chunks = run(assert(mock.build_request(p, "chat", body, { stream = true })))
        local calls = S.tool_calls(chunks)
        assert.equals("get_weather", calls[1].name)
        assert.same({ city = "Paris" }, cjson.decode(calls[1].arguments))
    end)

    it("returns configured errors (status, retry-after) for both modes", function()
        local p = { options = { error = { status = 429, message = "slow down", retry_after = 3 } } }
        for _, stream in ipairs({ false, true }) do
            local req = assert(mock.build_request(p, "chat", body, { stream = stream }))
            local r, e = mock.parse_response(req.local_response.status, req.local_response.headers, req.local_response.body)
            assert.is_nil(r)
            assert.same({ status = 429, message = "slow down", retry_after = 3 },
                { status = e.status, message = e.message, retry_after = e.retry_after })
        end
    end)

    it("fails mid-stream after n chunks", function()
        local p = { options = { text = "a b c d e", fail_after_chunks = 2 } }
        local items = run(assert(mock.build_request(p, "chat", body, { stream = true })))
        assert.equals("a b", S.text(items))
        assert.is_table(items[#items].error)
        assert.matches("after 2 chunks", items[#items].error.message)
    end)

    it("serves embeddings, completions and models", function()
        local req = assert(mock.build_request({ options = { embedding_dimensions = 4 } }, "embeddings",
            { model = "emb", input = { "a", "b" } }))
        local e = assert(mock.parse_response(200, {}, req.local_response.body))
        assert.equals(2, #e.data)
        assert.equals(4, #e.data[1].embedding)
        local again = assert(mock.parse_response(200, {}, mock.build_request({ options = { embedding_dimensions = 4 } },
            "embeddings", { model = "emb", input = { "a" } }).local_response.body))
        assert.same(e.data[1].embedding, again.data[1].embedding)
        local c = assert(mock.parse_response(200, {}, mock.build_request({ options = { text = "xyz" } }, "completions",
            { model = "m", prompt = "p" }).local_response.body))
        assert.equals("xyz", c.choices[1].text)
        local m = assert(mock.parse_response(200, {}, mock.build_request({ models = { b = "b", a = "a" } }, "models")
            .local_response.body))
        assert.same({ "a", "b" }, { m.data[1].id, m.data[2].id })
        assert.truthy(mock.build_request({ models = {} }, "models").local_response.body:find('"data":[]', 1, true))
    end)
end)
