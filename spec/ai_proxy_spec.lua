-- ai-proxy through the real gateway against tests/mock/providers.js (OpenAI and Anthropic wire formats):
-- non-streaming and streaming both ways between the APIs, usage records, error mapping, model 404, /models,
-- mid-stream failure, client disconnect.
local helpers = require("helpers")
local cjson = require("cjson.safe")
local socket = require("socket")

local ROOT = helpers.ROOT

-- A log-phase probe: appends the request's usage record as one JSON line to conf.file.
local PROBE = [[
local cjson = require("cjson.safe")
return { name = "ai-usage-probe", version = "1", priority = 1,
  log = function(conf, ctx)
    local f = io.open(conf.file, "a")
    f:write((cjson.encode(ctx.ai and ctx.ai.usage or { none = true }) or "{}") .. "\n")
    f:close()
  end }
]]

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

describe("ai-proxy (gateway + mock providers)", function()
    local gw, mock, mock_port, usage_file

    local function mock_requests()
        local res = assert(helpers.http("GET", "http://127.0.0.1:" .. mock_port .. "/__requests"))
        return res.json
    end
    local function last_upstream()
        local r = mock_requests()
        return r[#r]
    end
    local function usages()
        local out = {}
        for line in (helpers.read_file(usage_file) or ""):gmatch("[^\n]+") do
            out[#out + 1] = cjson.decode(line)
        end
        return out
    end
    local function last_usage()
        return helpers.wait_until(function()
            local u = usages()
            return #u > 0 and u[#u]
        end, 5, "no usage record")
    end
    local function post(path, body, headers)
        helpers.write_file(usage_file, "")
        local res = assert(helpers.http("POST", gw.url(path), { body = body, headers = headers, timeout = 10 }))
        -- the log phase runs after the response: wait for this request's record, so that it cannot land in the
        -- file after the next request cleared it
        helpers.wait_until(function() return #usages() > 0 end, 5, "no usage record")
        return res
    end

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/ai-usage-probe.lua", PROBE)
        usage_file = dir .. "/usage.jsonl"
        mock_port = helpers.free_port()
        mock = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. mock_port
            .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        local up = "http://127.0.0.1:" .. mock_port
        local probe = { file = usage_file }
        local function route(id, provider, extra)
            local conf = { provider = provider }
            for k, v in pairs(extra or {}) do conf[k] = v end
            return { id = id, paths = { "/" .. id .. "/v1/*" }, plugins = { ["ai-proxy"] = conf, ["ai-usage-probe"] = probe } }
        end
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins", dir }, workers = 1 },
            providers = {
                oa = { kind = "openai", endpoint = up, api_key = "sk-oa",
                       models = { ["gpt-4o-mini"] = "gpt-4o-mini-2024-07-18", emb = "text-embedding-3-small" },
                       price = { ["gpt-4o-mini"] = { input = 0.15, output = 0.6 } } },
                an = { kind = "anthropic", endpoint = up, api_key = "sk-an",
                       models = { claude = "claude-3-5-haiku-20241022" },
                       price = { claude = { input = 0.8, output = 4 } } },
                oa429 = { kind = "openai", endpoint = up .. "/s/429/v1", api_key = "k" },
                an500 = { kind = "anthropic", endpoint = up .. "/s/500/v1", api_key = "k" },
                oamid = { kind = "openai", endpoint = up .. "/s/midfail/v1", api_key = "k" },
                anmid = { kind = "anthropic", endpoint = up .. "/s/midfail-event/v1", api_key = "k" },
                oaslow = { kind = "openai", endpoint = up .. "/s/slow/v1", api_key = "k" },
                oanousage = { kind = "openai", endpoint = up .. "/s/nousage/v1", api_key = "k" },
                oahang = { kind = "openai", endpoint = up .. "/s/hang/v1", api_key = "k", timeout = { read = 0.5 } },
                gem = { kind = "gemini", endpoint = up, api_key = "gk", models = { gemini = "gemini-2.0-flash" } },
            },
            routes = {
                route("oa", "oa"), route("an", "an"), route("forced", "oa", { model = "gpt-4o-mini" }),
                route("oa429", "oa429"), route("an500", "an500"), route("oamid", "oamid"),
                route("anmid", "anmid"), route("oaslow", "oaslow"), route("oanousage", "oanousage"),
                route("oahang", "oahang"), route("gem", "gem"),
                { id = "deco", paths = { "/deco/v1/*" }, plugins = {
                    ["ai-prompt-decorator"] = { prepend = { { role = "system", content = "Answer briefly." } } },
                    ["ai-proxy"] = { provider = "an" }, ["ai-usage-probe"] = probe } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local CHAT = { model = "gpt-4o-mini", messages = { { role = "user", content = "Say hello" } } }

    describe("OpenAI client -> OpenAI provider", function()
        it("non-streaming: maps the model, sends the key, passes the answer and usage", function()
            local res = post("/oa/v1/chat/completions", CHAT, { authorization = "Bearer client-key" })
            assert.equal(200, res.status)
            assert.equal("Hello from the mock.", res.json.choices[1].message.content)
            assert.same(22, res.json.usage.total_tokens)
            local up = last_upstream()
            assert.equal("/v1/chat/completions", up.path)
            assert.equal("gpt-4o-mini-2024-07-18", up.body.model)
            assert.equal("Bearer sk-oa", up.headers.authorization) -- the provider key, never the client's
            local u = last_usage()
            assert.equal("oa", u.provider)
            assert.equal("oa", u.route)
            assert.equal("gpt-4o-mini", u.requested_model)
            assert.equal("gpt-4o-mini-2024-07-18", u.model)
            assert.same({ 17, 5, 22, 3 }, { u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens })
            assert.equal(200, u.status)
            assert.is_false(u.estimated)
            assert.near((17 * 0.15 + 5 * 0.6) / 1e6, u.cost, 1e-12)
            assert.is_true(u.latency > 0 and u.latency < 5)
        end)

        it("tools and response_format pass through; the tool call comes back", function()
            local body = helpers.deep_copy(CHAT)
            body.tools = { { type = "function", ["function"] = { name = "get_weather",
                parameters = { type = "object", properties = { location = { type = "string" } } } } } }
            body.response_format = { type = "json_object" }
            local res = post("/oa/v1/chat/completions", body)
            assert.equal(200, res.status)
            local tc = res.json.choices[1].message.tool_calls[1]
            assert.equal("get_weather", tc["function"].name)
            assert.equal("tool_calls", res.json.choices[1].finish_reason)
            local up = last_upstream()
            assert.equal("get_weather", up.body.tools[1]["function"].name)
            assert.equal("json_object", up.body.response_format.type)
        end)

        it("streaming: events pass through, include_usage forced upstream, usage chunk dropped when not asked", function()
            local body = helpers.deep_copy(CHAT)
            body.stream = true
            local res = post("/oa/v1/chat/completions", body)
            assert.equal(200, res.status)
            assert.matches("text/event-stream", res.headers["content-type"], 1, true)
            local evs = sse_events(res.body)
            assert.equal("[DONE]", evs[#evs].data)
            local text = {}
            for _, e in ipairs(evs) do
                if e.json then
                    assert.is_true(#e.json.choices > 0, "usage chunk must be dropped")
                    text[#text + 1] = e.json.choices[1].delta.content or ""
                end
            end
            assert.equal("Hello from the mock.", table.concat(text))
            assert.is_true(last_upstream().body.stream_options.include_usage)
            local u = last_usage()
            assert.same({ 17, 5 }, { u.prompt_tokens, u.completion_tokens })
            assert.is_true(u.stream)
            assert.is_true(u.ttft > 0 and u.ttft <= u.latency)
        end)

        it("streaming with include_usage: the usage chunk reaches the client", function()
            local body = helpers.deep_copy(CHAT)
            body.stream, body.stream_options = true, { include_usage = true }
            local evs = sse_events(post("/oa/v1/chat/completions", body).body)
            local last = evs[#evs - 1].json
            assert.same(0, #last.choices)
            assert.equal(22, last.usage.total_tokens)
        end)

        it("embeddings and completions", function()
            local res = post("/oa/v1/embeddings", { model = "emb", input = { "a", "b" } })
            assert.equal(200, res.status)
            assert.equal(2, #res.json.data)
            assert.equal("text-embedding-3-small", last_upstream().body.model)
            assert.equal(8, last_usage().prompt_tokens)
            res = post("/oa/v1/completions", { model = "gpt-4o-mini", prompt = "Say" })
            assert.equal(200, res.status)
            assert.equal("Hello from the mock.", res.json.choices[1].text)
            assert.equal(14, last_usage().total_tokens)
        end)

        it("GET /v1/models lists what the route serves (OpenAI and Anthropic shapes)", function()
            local res = assert(helpers.http("GET", gw.url("/oa/v1/models")))
            assert.equal(200, res.status)
            assert.equal("list", res.json.object)
            assert.same({ "emb", "gpt-4o-mini" }, { res.json.data[1].id, res.json.data[2].id })
            res = assert(helpers.http("GET", gw.url("/an/v1/models"), { headers = { ["anthropic-version"] = "2023-06-01" } }))
            assert.equal("claude", res.json.data[1].id)
            assert.equal("model", res.json.data[1].type)
            res = assert(helpers.http("GET", gw.url("/forced/v1/models")))
            assert.same("gpt-4o-mini", res.json.data[1].id)
        end)

        it("a route model override replaces what the client asks for", function()
            local body = helpers.deep_copy(CHAT)
            body.model = "whatever"
            assert.equal(200, post("/forced/v1/chat/completions", body).status)
            assert.equal("gpt-4o-mini-2024-07-18", last_upstream().body.model)
        end)

        it("no usage from the provider: counted locally and marked estimated", function()
            local res = post("/oanousage/v1/chat/completions", CHAT)
            assert.equal(200, res.status)
            local u = last_usage()
            assert.is_true(u.estimated)
            assert.is_true(u.prompt_tokens > 0 and u.completion_tokens > 0)
            local body = helpers.deep_copy(CHAT)
            body.stream = true
            post("/oanousage/v1/chat/completions", body)
            u = last_usage()
            assert.is_true(u.estimated)
            assert.is_true(u.completion_tokens > 0)
        end)
    end)

    describe("translation between APIs", function()
        it("OpenAI client -> Anthropic provider, non-streaming", function()
            local res = post("/an/v1/chat/completions", { model = "claude", messages = {
                { role = "system", content = "Be brief." }, { role = "user", content = "hi" } } })
            assert.equal(200, res.status)
            assert.equal("chat.completion", res.json.object)
            assert.equal("Hello from the mock.", res.json.choices[1].message.content)
            assert.equal("stop", res.json.choices[1].finish_reason)
            local up = last_upstream()
            assert.equal("/v1/messages", up.path)
            assert.equal("sk-an", up.headers["x-api-key"])
            assert.equal("claude-3-5-haiku-20241022", up.body.model)
            assert.equal("Be brief.", type(up.body.system) == "string" and up.body.system or up.body.system[1].text)
            local u = last_usage()
            assert.equal(7, u.completion_tokens)
            assert.equal(res.json.usage.prompt_tokens, u.prompt_tokens)
            assert.near((u.prompt_tokens * 0.8 + 7 * 4) / 1e6, u.cost, 1e-12)
        end)

        it("OpenAI client -> Anthropic provider, streaming with usage", function()
            local res = post("/an/v1/chat/completions", { model = "claude", stream = true,
                stream_options = { include_usage = true }, messages = { { role = "user", content = "hi" } } })
            local evs = sse_events(res.body)
            assert.equal("[DONE]", evs[#evs].data)
            local text, usage = {}, nil
            for _, e in ipairs(evs) do
                if e.json then
                    if e.json.usage and e.json.usage ~= cjson.null then usage = e.json.usage end
                    local c = e.json.choices[1]
                    if c and c.delta.content then text[#text + 1] = c.delta.content end
                end
            end
            assert.equal("Hello from the mock.", table.concat(text))
            assert.equal(7, usage.completion_tokens)
            assert.equal(7, last_usage().completion_tokens)
        end)

        it("Anthropic client -> OpenAI provider, non-streaming and streaming", function()
            local msg = { model = "gpt-4o-mini", max_tokens = 100, system = "Be brief.",
                          messages = { { role = "user", content = "hi" } } }
            local res = post("/oa/v1/messages", msg, { ["anthropic-version"] = "2023-06-01" })
            assert.equal(200, res.status)
            assert.equal("message", res.json.type)
            assert.equal("Hello from the mock.", res.json.content[1].text)
            assert.equal("end_turn", res.json.stop_reason)
            assert.equal(5, res.json.usage.output_tokens)
            local up = last_upstream()
            assert.equal("/v1/chat/completions", up.path)
            assert.equal("system", up.body.messages[1].role)
            msg.stream = true
            res = post("/oa/v1/messages", msg)
            local evs = sse_events(res.body)
            assert.equal("message_start", evs[1].event)
            assert.equal("message_stop", evs[#evs].event)
            local text = {}
            for _, e in ipairs(evs) do
                if e.event == "content_block_delta" then text[#text + 1] = e.json.delta.text end
            end
            assert.equal("Hello from the mock.", table.concat(text))
            local u = last_usage()
            assert.same({ 17, 5 }, { u.prompt_tokens, u.completion_tokens })
            assert.equal("anthropic", u.api)
        end)

        it("Anthropic client -> Anthropic provider, streaming", function()
            local res = post("/an/v1/messages", { model = "claude", max_tokens = 50, stream = true,
                messages = { { role = "user", content = "hi" } } })
            local evs = sse_events(res.body)
            assert.equal("message_start", evs[1].event)
            assert.equal("message_stop", evs[#evs].event)
            assert.equal(7, last_usage().completion_tokens)
        end)
    end)

    describe("with other AI plugins", function()
        it("ai-prompt-decorator's changes reach the provider, for both client APIs", function()
            assert.equal(200, post("/deco/v1/chat/completions", { model = "claude", messages = CHAT.messages }).status)
            assert.matches("Answer briefly.", helpers.json(last_upstream().body.system), 1, true)
            assert.equal(200, post("/deco/v1/messages", { model = "claude", max_tokens = 10, messages = CHAT.messages }).status)
            assert.matches("Answer briefly.", helpers.json(last_upstream().body.system), 1, true)
        end)
    end)

    describe("Gemini provider", function()
        it("OpenAI client, non-streaming and streaming", function()
            local res = post("/gem/v1/chat/completions", { model = "gemini", messages = CHAT.messages })
            assert.equal(200, res.status)
            assert.equal("Hello from the mock.", res.json.choices[1].message.content)
            local up = last_upstream()
            assert.equal("/v1beta/models/gemini-2.0-flash:generateContent", up.path)
            assert.equal("gk", up.headers["x-goog-api-key"])
            assert.same({ 13, 6 }, { last_usage().prompt_tokens, last_usage().completion_tokens })
            res = post("/gem/v1/chat/completions", { model = "gemini", stream = true, messages = CHAT.messages })
            local text = {}
            for _, e in ipairs(sse_events(res.body)) do
                local c = e.json and e.json.choices[1]
                if c and c.delta.content then text[#text + 1] = c.delta.content end
            end
            assert.equal("Hello from the mock.", table.concat(text))
            assert.matches(":streamGenerateContent%?alt=sse$", last_upstream().path)
            assert.equal(6, last_usage().completion_tokens)
        end)

        it("Anthropic client, streaming", function()
            local res = post("/gem/v1/messages", { model = "gemini", max_tokens = 20, stream = true, messages = CHAT.messages })
            local evs = sse_events(res.body)
            assert.equal("message_start", evs[1].event)
            assert.equal("message_stop", evs[#evs].event)
            assert.equal(6, last_usage().completion_tokens)
        end)
    end)

    describe("errors", function()
        it("invalid JSON -> 400 in the client's shape", function()
            local res = post("/oa/v1/chat/completions", "{not json")
            assert.equal(400, res.status)
            assert.equal("invalid_request_error", res.json.error.type)
            res = post("/oa/v1/messages", "{not json")
            assert.equal(400, res.status)
            assert.equal("error", res.json.type)
            assert.equal("invalid_request_error", res.json.error.type)
        end)

        it("a model the route does not serve -> 404 with the list", function()
            local res = post("/oa/v1/chat/completions", { model = "gpt-5", messages = CHAT.messages })
            assert.equal(404, res.status)
            assert.equal("model_not_found", res.json.error.code)
            assert.matches("gpt-4o-mini", res.json.error.message, 1, true)
            assert.same({ "emb", "gpt-4o-mini" }, res.json.models)
            local u = last_usage()
            assert.equal(404, u.status)
            assert.equal("gpt-5", u.requested_model)
            assert.equal(0, u.total_tokens)
        end)

        it("upstream 429 -> 429 with retry-after, OpenAI shape", function()
            local res = post("/oa429/v1/chat/completions", CHAT)
            assert.equal(429, res.status)
            assert.equal("7", res.headers["retry-after"])
            assert.equal("rate_limit_error", res.json.error.type)
            assert.equal(429, last_usage().status)
        end)

        it("upstream 500 -> 500 in the Anthropic shape for an Anthropic client", function()
            local res = post("/an500/v1/messages", { model = "x", max_tokens = 10, messages = CHAT.messages })
            assert.equal(500, res.status)
            assert.equal("error", res.json.type)
            assert.equal("api_error", res.json.error.type)
        end)

        it("upstream read timeout -> 504", function()
            local res = post("/oahang/v1/chat/completions", CHAT)
            assert.equal(504, res.status)
            assert.equal("server_error", res.json.error.type)
        end)

        it("the upstream cut mid-stream: the stream ends with an error event", function()
            local body = helpers.deep_copy(CHAT)
            body.stream = true
            local res = post("/oamid/v1/chat/completions", body)
            assert.equal(200, res.status)
            local evs = sse_events(res.body)
            assert.is_table(evs[#evs].json.error)
            assert.equal(502, last_usage().status)
        end)

        it("a provider error event mid-stream reaches an Anthropic client as event: error", function()
            local res = post("/anmid/v1/messages", { model = "x", max_tokens = 10, stream = true, messages = CHAT.messages })
            local evs = sse_events(res.body)
            assert.equal("error", evs[#evs].event)
            assert.equal("error", evs[#evs].json.type)
        end)

        it("a client that goes away cancels the upstream request", function()
            local c = socket.tcp()
            c:settimeout(5)
            assert(c:connect("127.0.0.1", gw.port))
            local body = helpers.json({ model = "m", stream = true, messages = CHAT.messages })
            c:send("POST /oaslow/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" ..
                "Content-Length: " .. #body .. "\r\n\r\n" .. body)
            assert(c:receive("*l")) -- status line: the stream has begun
            c:setoption("linger", { on = true, timeout = 0 }) -- an abrupt close (RST), as a killed client does
            c:close()                                           -- (a FIN does the same: spec/conn_faults_spec.lua)
            helpers.wait_until(function() return last_upstream().aborted end, 5, "upstream not cancelled")
            assert.equal(499, last_usage().status)
        end)
    end)
end)

describe("sluice.ai.proxy (unit)", function()
    local ai_proxy = require("sluice.ai.proxy")

    it("recognizes the client API by the path suffix", function()
        assert.same({ "openai", "chat" }, { ai_proxy.detect("/x/v1/chat/completions") })
        assert.same({ "openai", "completions" }, { ai_proxy.detect("/v1/completions") })
        assert.same({ "openai", "embeddings" }, { ai_proxy.detect("/v1/embeddings") })
        assert.same({ "openai", "models" }, { ai_proxy.detect("/v1/models") })
        assert.same({ "anthropic", "chat" }, { ai_proxy.detect("/claude/v1/messages") })
        assert.is_nil(ai_proxy.detect("/v1/files"))
    end)

    it("resolves models: map, override, single entry, pass-through", function()
        local prov = { models = { a = "up-a", b = "up-b" } }
        assert.same({ "a", "up-a" }, { ai_proxy.resolve_model({}, prov, "a") })
        local name, list = ai_proxy.resolve_model({}, prov, "zz")
        assert.is_nil(name)
        assert.same({ "a", "b" }, list)
        assert.same({ "b", "up-b" }, { ai_proxy.resolve_model({ model = "b" }, prov, "zz") })
        assert.same({ "only", "x" }, { ai_proxy.resolve_model({}, { models = { only = "x" } }, nil) })
        assert.same({ "free", "free" }, { ai_proxy.resolve_model({}, {}, "free") })
    end)

    it("reads usage from a body without decoding it, ignoring escaped text", function()
        local body = '{"choices":[{"message":{"content":"say \\"usage\\": {1}"}}],"usage": {"prompt_tokens":3,'
            .. '"completion_tokens":4,"total_tokens":7,"prompt_tokens_details":{"cached_tokens":1}}}'
        local u = ai_proxy.scan_usage(body)
        assert.same({ 3, 4, 7, 1 }, { u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cached_tokens })
        assert.is_nil(ai_proxy.scan_usage('{"usage":null}'))
    end)

    it("plugin schema: provider required, timeouts positive", function()
        local unit = require("unit_helpers")
        local plugin = unit.load_plugin("ai-proxy")
        assert.truthy(unit.validate(plugin, { provider = "p", model = "m", timeout = { read = 10 } }))
        assert.is_nil(unit.validate(plugin, {}))
        assert.is_nil(unit.validate(plugin, { provider = "p", timeout = { read = 0 } }))
        assert.is_nil(unit.validate(plugin, { provider = "p", extra = 1 }))
    end)
end)
