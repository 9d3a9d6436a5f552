local common = require("sluice.ai.common")
local cjson = require("cjson.safe")

describe("sluice.ai.common", function()
    describe("json_encode", function()
        it("encodes marked and well-known empty arrays as []", function()
            local s = common.json_encode({ choices = {}, usage = { a = 1 }, extra = common.array(), obj = {} })
            local t = cjson.decode(s)
            assert.truthy(s:find('"choices":%[%]'))
            assert.truthy(s:find('"extra":%[%]'))
            assert.truthy(s:find('"obj":{}'))
            assert.equals(1, t.usage.a)
        end)

        it("keeps empty objects where the key is not an array key (tool input, parameters)", function()
            local s = common.json_encode({ input = {}, parameters = { type = "object", properties = {} } })
            assert.truthy(s:find('"input":{}'))
            assert.truthy(s:find('"properties":{}'))
        end)

        it("restores the table it encoded", function()
            local t = { messages = {}, content = common.empty_array }
            common.json_encode(t)
            assert.same({}, t.messages)
            assert.equals(common.empty_array, t.content)
        end)

        it("round-trips a decoded usage chunk with choices: []", function()
            local raw = '{"id":"x","choices":[],"usage":{"prompt_tokens":1}}'
            local s = common.json_encode(cjson.decode(raw))
            assert.truthy(s:find('"choices":%[%]'))
        end)

        it("encodes top-level empties", function()
            assert.equals("[]", common.json_encode(common.array()))
            assert.equals("{}", common.json_encode({}))
        end)
    end)

    it("parses endpoints", function()
        assert.same({ scheme = "https", host = "api.openai.com", port = 443, base = "" },
            common.parse_endpoint("https://api.openai.com"))
        assert.same({ scheme = "http", host = "localhost", port = 11434, base = "/v1" },
            common.parse_endpoint("http://localhost:11434/v1/"))
        assert.same({ scheme = "http", host = "[::1]", port = 8000, base = "/x" },
            common.parse_endpoint("http://[::1]:8000/x"))
        assert.is_nil(common.parse_endpoint("ftp://x"))
        assert.is_nil(common.parse_endpoint("localhost:80"))
        assert.equals("h:8080", common.host_header(common.parse_endpoint("http://h:8080")))
        assert.equals("h", common.host_header(common.parse_endpoint("https://h:443")))
    end)

    it("looks up headers case-insensitively and reads retry-after", function()
        assert.equals("5", common.header({ ["Retry-After"] = "5" }, "retry-after"))
        assert.equals(5, common.retry_after({ ["Retry-After"] = "5" }))
        assert.equals(1.5, common.retry_after({ ["retry-after-ms"] = "1500" }))
        assert.is_nil(common.retry_after({}))
    end)

    it("normalizes usage (OpenAI details, DeepSeek cache hits)", function()
        assert.same({ prompt_tokens = 10, completion_tokens = 5, total_tokens = 15, cached_tokens = 4, reasoning_tokens = 2 },
            common.normalize_usage({ prompt_tokens = 10, completion_tokens = 5, total_tokens = 15,
                prompt_tokens_details = { cached_tokens = 4 }, completion_tokens_details = { reasoning_tokens = 2 } }))
        assert.same({ prompt_tokens = 10, completion_tokens = 5, total_tokens = 15, cached_tokens = 7 },
            common.normalize_usage({ prompt_tokens = 10, completion_tokens = 5, prompt_cache_hit_tokens = 7 }))
        assert.is_nil(common.normalize_usage(cjson.null))
    end)

    it("builds client error bodies in each API's shape", function()
        local o = common.error_body("openai", 404, "no such model", nil, "model_not_found")
        assert.equals("not_found_error", o.error.type)
        assert.equals("model_not_found", o.error.code)
        assert.truthy(common.json_encode(o):find('"param":null', 1, true))
    end)

    it("maps statuses to Anthropic error types", function()
        assert.same({ type = "error", error = { type = "overloaded_error", message = "busy" } },
            common.error_body("anthropic", 529, "busy"))
        assert.equals("rate_limit_error", common.error_body("anthropic", 429, "x").error.type)
        assert.equals("invalid_request_error", common.error_body("anthropic", 400, "x", "bogus").error.type)
        assert.equals("api_error", common.error_body("anthropic", 502, "x").error.type)
    end)

    it("encodes SSE chunks and [DONE]", function()
        local c = common.usage_chunk({ id = "a", created = 1, model = "m" }, { prompt_tokens = 1 })
        local s = common.encode_chunk_sse(c)
        assert.truthy(s:match("^data: {.*}\n\n$"))
        assert.truthy(s:find('"choices":%[%]'))
        assert.equals("data: [DONE]\n\n", common.done_sse())
    end)

    it("parses data URLs", function()
        local m, d = common.parse_data_url("data:image/png;base64,AAAA")
        assert.equals("image/png", m)
        assert.equals("AAAA", d)
        assert.is_nil(common.parse_data_url("https://x/y.png"))
    end)
end)
