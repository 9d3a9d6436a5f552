-- azure-openai, deepseek and openai-compatible: OpenAI wire format with per-provider URL/auth/quirks.
local S = require("ai.support")
local cjson = require("cjson.safe")
local azure = S.strict(require("sluice.ai.drivers.azure-openai"))
local deepseek = S.strict(require("sluice.ai.drivers.deepseek"))
local compat = S.strict(require("sluice.ai.drivers.openai-compatible"))

local chat = { model = "gpt-4o", messages = { { role = "user", content = "hi" } } }

describe("azure-openai driver", function()
    local p = { kind = "azure-openai", endpoint = "https://my-res.openai.azure.com", api_key = "az-key",
        deployment = "gpt4o-prod", api_version = "2024-10-21" }

    it("builds the deployment URL with api-version and api-key header", function()
        local req = assert(azure.build_request(p, "chat", chat, { stream = true }))
        assert.equals("azure-openai", azure.kind)
        assert.equals("my-res.openai.azure.com", req.host)
        assert.equals("/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21", req.path)
        assert.equals("az-key", req.headers["api-key"])
        assert.is_nil(req.headers["Authorization"])
        assert.is_true(cjson.decode(req.body).stream_options.include_usage)
    end)

    it("falls back to the model as deployment, default api-version, bearer auth option, embeddings path", function()
        local q = { endpoint = "https://r.openai.azure.com/", api_key = "tok", options = { auth = "bearer" } }
        local req = assert(azure.build_request(q, "embeddings", { model = "text-embedding-3-small", input = "x" }))
        assert.equals("/openai/deployments/text-embedding-3-small/embeddings?api-version=2024-10-21", req.path)
        assert.equals("Bearer tok", req.headers["Authorization"])
        req = assert(azure.build_request(q, "models", nil))
        assert.equals("/openai/models?api-version=2024-10-21", req.path)
    end)

    it("requires an endpoint", function()
        local r, err = azure.build_request({ api_key = "k" }, "chat", chat)
        assert.is_nil(r)
        assert.matches("endpoint", err)
    end)

    it("drops content-filter-only chunks from streams and keeps usage", function()
        local s = azure.new_stream("chat")
        local chunks = S.run_stream(s, S.fixture("azure-openai/chat_stream.sse"), 11)
        assert.equals(4, #chunks)
        assert.equals("Hi there", S.text(chunks))
        assert.equals("stop", S.finish_reason(chunks))
        assert.equals(15, s.usage.total_tokens)
    end)

    it("maps content filter and 429 errors", function()
        local _, e = azure.parse_response(400, {}, S.fixture("azure-openai/error_content_filter.json"))
        assert.equals(400, e.status)
        assert.equals("content_filter", e.code)
        assert.equals("invalid_request_error", e.type)
        _, e = azure.parse_response(429, { ["retry-after"] = "6" }, S.fixture("azure-openai/error_429.json"))
        assert.equals(6, e.retry_after)
        assert.equals("429", e.code)
    end)
end)

describe("deepseek driver", function()
    local p = { kind = "deepseek", api_key = "ds-key" }

    it("uses api.deepseek.com/chat/completions and strips reasoning_content from input", function()
        local body = { model = "deepseek-reasoner", response_format = { type = "json_schema", json_schema = { schema = {} } },
            messages = { { role = "user", content = "a" }, { role = "assistant", content = "b", reasoning_content = "r" },
                { role = "user", content = "c" } } }
        local req = assert(deepseek.build_request(p, "chat", body))
        assert.equals("api.deepseek.com", req.host)
        assert.equals("/chat/completions", req.path)
        assert.equals("Bearer ds-key", req.headers["Authorization"])
        local sent = cjson.decode(req.body)
        assert.is_nil(sent.messages[2].reasoning_content)
        assert.same({ type = "json_object" }, sent.response_format)
        assert.equals("/beta/completions", deepseek.build_request(p, "completions", { model = "m", prompt = "x" }).path)
        assert.is_nil(deepseek.build_request(p, "embeddings", { model = "m", input = "x" }))
    end)

    it("keeps reasoning_content and reasoning token usage", function()
        local r = assert(deepseek.parse_response(200, {}, S.fixture("deepseek/reasoner_response.json")))
        assert.matches("9.11 < 9.8", r.choices[1].message.reasoning_content)
        assert.same({ prompt_tokens = 18, completion_tokens = 245, total_tokens = 263, cached_tokens = 0,
            reasoning_tokens = 226 }, deepseek.usage(r))
    end)

    it("streams reasoning deltas with usage on the finish chunk", function()
        local s = deepseek.new_stream("chat")
        local chunks = S.run_stream(s, S.fixture("deepseek/reasoner_stream.sse"), 9)
        assert.equals(4, #chunks)
        assert.equals("Compare the decimals.", chunks[2].choices[1].delta.reasoning_content)
        assert.equals("9.11 is smaller.", S.text(chunks))
        assert.equals(20, s.usage.reasoning_tokens)
    end)

    it("maps errors", function()
        local _, e = deepseek.parse_response(402, {}, S.fixture("deepseek/error_402.json"))
        assert.equals(402, e.status)
        assert.equals("Insufficient Balance", e.message)
    end)
end)

describe("openai-compatible driver", function()
    it("requires an endpoint and defaults to /v1", function()
        assert.is_nil(compat.build_request({}, "chat", chat))
        local req = assert(compat.build_request({ endpoint = "http://127.0.0.1:11434" }, "chat", chat, { stream = true }))
        assert.equals("/v1/chat/completions", req.path)
        assert.equals(11434, req.port)
        assert.equals("http", req.scheme)
        assert.is_nil(req.headers["Authorization"])
        assert.is_true(cjson.decode(req.body).stream_options.include_usage)
    end)

    it("uses the endpoint's base path, a key when given, and keeps top_k", function()
        local req = assert(compat.build_request({ endpoint = "http://vllm:8000/custom/v1", api_key = "tok" }, "chat",
            { model = "m", top_k = 20, messages = chat.messages }))
        assert.equals("/custom/v1/chat/completions", req.path)
        assert.equals("Bearer tok", req.headers["Authorization"])
        assert.equals(20, cjson.decode(req.body).top_k)
    end)

    it("can stop asking for stream usage", function()
        local req = compat.build_request({ endpoint = "http://h", options = { stream_usage = false } }, "chat", chat,
            { stream = true })
        assert.is_nil(cjson.decode(req.body).stream_options)
    end)

    it("parses an Ollama stream and vLLM/Ollama errors", function()
        local s = compat.new_stream("chat")
        local chunks = S.run_stream(s, S.fixture("openai-compatible/ollama_stream.sse"), 3)
        assert.equals("Hello world", S.text(chunks))
        assert.equals(29, s.usage.total_tokens)
        local _, e = compat.parse_response(404, {}, S.fixture("openai-compatible/vllm_error.json"))
        assert.equals(404, e.status)
        assert.equals("NotFoundError", e.type)
        assert.matches("does not exist", e.message)
        _, e = compat.parse_response(404, {}, S.fixture("openai-compatible/ollama_error.json"))
        assert.matches("try pulling", e.message)
    end)
end)
