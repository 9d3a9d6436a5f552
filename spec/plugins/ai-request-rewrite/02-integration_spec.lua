-- ai-request-rewrite against the real gateway: the prompt the upstream receives after the rewriting provider's
-- answer (OpenAI and Anthropic clients, multi-part content), the fallback to the original on timeout and
-- provider errors, on_error: fail, and the order with ai-rag (retrieval sees the rewritten question).
local helpers = require("helpers")
local unit = require("unit_helpers")
local cjson = require("cjson.safe")

describe("ai-request-rewrite (gateway)", function()
    local mock, rw_up, gw

    local function route(id, conf, extra)
        local plugins = { ["ai-request-rewrite"] = conf }
        for k, v in pairs(extra or {}) do plugins[k] = v end
        return { id = id, paths = { "/" .. id .. "/v1/chat/completions", "/" .. id .. "/v1/messages" },
                 upstream = "llm", plugins = plugins }
    end

    local function post(path, body)
        local res = assert(helpers.http("POST", gw.url(path), { body = body }))
        return res, res.status == 200 and assert(cjson.decode(mock:last().body)) or nil
    end

    setup(function()
        mock = helpers.mock_upstream({ body = unit.chat_completion("ok"), headers = { ["content-type"] = "application/json" } })
        rw_up = helpers.mock_upstream({ body = unit.chat_completion("Rewritten over HTTP."),
                                        headers = { ["content-type"] = "application/json" } })
        local prompt = "Translate the user's message to English."
        gw = helpers.start_gateway({
            providers = {
                rw = { kind = "mock", options = { text = "Where is the train station?" } },
                slow = { kind = "mock", options = { text = "late", latency_ms = 3000 } },
                broken = { kind = "mock", options = { error = { status = 500, message = "down" } } },
                remote = { kind = "openai", endpoint = rw_up.url(), api_key = "sk-rewriter",
                           models = { small = "gpt-4o-mini-2024-07-18" } },
            },
            upstreams = { llm = { nodes = { mock.addr } } },
            routes = {
                route("tr", { provider = "rw", prompt = prompt }),
                route("all", { provider = "rw", prompt = prompt, messages = "all_user" }),
                route("slow", { provider = "slow", prompt = prompt, timeout = 0.3 }),
                route("broken", { provider = "broken", prompt = prompt }),
                route("strict", { provider = "broken", prompt = prompt, on_error = "fail" }),
                route("nope", { provider = "missing", prompt = prompt }),
                route("remote", { provider = "remote", model = "small", prompt = prompt, max_tokens = 64 }),
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("replaces the last user message with the provider's answer (OpenAI and Anthropic)", function()
        local res, got = post("/tr/v1/chat/completions", { messages = {
            { role = "system", content = "S" }, { role = "user", content = "earlier" },
            { role = "assistant", content = "A" }, { role = "user", content = "Où est la gare ?" } } })
        assert.equal(200, res.status)
        assert.equal("1", res.headers["x-sluice-rewritten"])
        assert.same({ "S", "earlier", "A", "Where is the train station?" },
            { got.messages[1].content, got.messages[2].content, got.messages[3].content, got.messages[4].content })

        res, got = post("/tr/v1/messages", { model = "c", max_tokens = 5, messages = { { role = "user", content = {
            { type = "text", text = "Wo ist" }, { type = "image", source = { type = "base64", media_type = "image/png",
              data = "iVBORw0KGgo=" } }, { type = "text", text = "der Bahnhof?" } } } } })
        assert.equal(200, res.status)
        assert.same({ { type = "text", text = "Where is the train station?" }, { type = "image", source = {
            type = "base64", media_type = "image/png", data = "iVBORw0KGgo=" } } }, got.messages[1].content)
    end)

    it("calls a provider over HTTP (the provider's driver, key and model mapping)", function()
        local res, got = post("/remote/v1/chat/completions", { messages = { { role = "user", content = "hola" } } })
        assert.equal(200, res.status)
        assert.equal("Rewritten over HTTP.", got.messages[1].content)
        local call = assert(rw_up:last())
        assert.equal("Bearer sk-rewriter", call.headers.authorization)
        local sent = assert(cjson.decode(call.body))
        assert.equal("gpt-4o-mini-2024-07-18", sent.model)
        assert.equal(64, sent.max_tokens)
        assert.same({ { role = "system", content = "Translate the user's message to English." },
                      { role = "user", content = "hola" } }, sent.messages)
        rw_up:respond({ status = 401, body = { error = { message = "bad key", type = "invalid_request_error" } },
                        headers = { ["content-type"] = "application/json" } })
        res, got = post("/remote/v1/chat/completions", { messages = { { role = "user", content = "hola" } } })
        assert.equal("0", res.headers["x-sluice-rewritten"])
        assert.equal("hola", got.messages[1].content)
        assert.truthy(gw:log():find("provider remote: 401", 1, true), gw:log())
    end)

    it("rewrites every user message with messages: all_user", function()
        local _, got = post("/all/v1/chat/completions", { messages = {
            { role = "user", content = "un" }, { role = "assistant", content = "A" }, { role = "user", content = "deux" } } })
        assert.same({ "Where is the train station?", "A", "Where is the train station?" },
            { got.messages[1].content, got.messages[2].content, got.messages[3].content })
    end)

    it("keeps the original prompt on a timeout, a provider error or a missing provider", function()
        for _, id in ipairs({ "slow", "broken", "nope" }) do
            local res, got = post("/" .. id .. "/v1/chat/completions", { messages = { { role = "user", content = "bonjour" } } })
            assert.equal(200, res.status, id)
            assert.equal("0", res.headers["x-sluice-rewritten"], id)
            assert.same({ { role = "user", content = "bonjour" } }, got.messages, id)
        end
        assert.truthy(gw:log():find("timeout", 1, true))
    end)

    it("answers 502 with on_error: fail", function()
        local res = post("/strict/v1/chat/completions", { messages = { { role = "user", content = "bonjour" } } })
        assert.equal(502, res.status)
        assert.truthy(res.body:find("could not be rewritten", 1, true))
    end)

    it("rejects a config without provider or prompt", function()
        local res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" }, upstream = "llm",
            plugins = { ["ai-request-rewrite"] = { provider = "rw" } } }))
        assert.equal(400, res.status)
        assert.truthy(res.body:find("prompt", 1, true))
    end)
end)
