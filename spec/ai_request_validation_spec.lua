-- The client's AI request is checked before it is translated or forwarded (sluice.ai.validate, called by
-- sluice.ai.proxy.prepare): wrong types and shapes, and text that is not UTF-8, get a 400 in the client's API
-- naming the field; nothing reaches the provider. Unknown fields and part types pass. Raw bodies through the real
-- gateway, both client APIs, against tests/mock/providers.js.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local ROOT = helpers.ROOT

describe("AI request validation (gateway + tests/mock/providers.js)", function()
    local gw, mock_port

    local function upstream_count()
        return #assert(helpers.http("GET", "http://127.0.0.1:" .. mock_port .. "/__requests")).json
    end
    local function post(path, raw)
        return assert(helpers.http("POST", gw.url(path), { body = raw, headers = {
            ["content-type"] = "application/json", ["anthropic-version"] = "2023-06-01" } }))
    end

    setup(function()
        mock_port = helpers.free_port()
        local dir = helpers.tmpdir()
        -- lax: the provider mock takes unknown fields, so the spec sees what the gateway itself lets through
        local mock = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " ..
            mock_port .. " --lax >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        gw = helpers.start_gateway({
            node = { workers = 1 },
            providers = { oa = { kind = "openai", endpoint = "http://127.0.0.1:" .. mock_port, api_key = "k" } },
            routes = { { id = "ai", paths = { "/v1/*" }, plugins = { ["ai-proxy"] = { provider = "oa" } } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- A 400 in the client's shape whose message starts with `field` (and names what was expected); nothing sent.
    local function refused(path, raw, want)
        local before = upstream_count()
        local res = post(path, raw)
        assert.equal(400, res.status, raw)
        assert.is_table(res.json, res.body)
        local msg = res.json.error.message
        assert.equal(want, msg:sub(1, #want), "message " .. msg)
        assert.equal("invalid_request_error", res.json.error.type)
        if path:find("/messages$") then
            assert.equal("error", res.json.type)
        else
            assert.equal(want:match("^([^:]+):"), res.json.error.param, "param names the field")
        end
        assert.equal(before, upstream_count(), "nothing reaches the provider: " .. raw)
    end

    local BAD_UTF8 = '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"caf\xc3"}]}'

    it("OpenAI client: wrong shapes and types name the field", function()
        local P = "/v1/chat/completions"
        refused(P, '{"model":"m","messages":{"role":"user","content":"hi"}}', "messages: expected a non-empty array")
        refused(P, '{"model":"m","messages":[1,2,3]}', "messages[0]: expected object (got number)")
        refused(P, '{"model":"m","messages":[]}', "messages: expected a non-empty array")
        refused(P, '{"model":"m","stream":"yes","messages":[{"role":"user","content":"hi"}]}',
            "stream: expected boolean (got string)")
        refused(P, '{"model":"m","stream":1,"messages":[{"role":"user","content":"hi"}]}',
            "stream: expected boolean (got number)")
        refused(P, '{"model":"m","messages":[{"role":"system","content":"a"},{"role":"user","content":"b"},' ..
            '{"role":"user","content":{"text":"c"}}]}', "messages[2].content: expected string or array (got object)")
        refused(P, '{"model":"m","messages":[{"role":"robot","content":"hi"}]}', "messages[0].role: expected one of")
        refused(P, '{"model":"m","messages":[{"content":"hi"}]}', "messages[0].role: expected string (missing)")
        refused(P, '{"model":"m","messages":[{"role":"user","content":[{"text":"hi"}]}]}',
            "messages[0].content[0].type: expected string")
        refused(P, '{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}]}]}',
            "messages[0].content[0].image_url.url: expected string")
        refused(P, '{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":' ..
            '"function","function":{"arguments":"{}"}}]}]}', "messages[0].tool_calls[0].function.name: expected string")
        refused(P, '{"model":"m","messages":[{"role":"tool","content":"x"}]}', "messages[0].tool_call_id: expected string")
        refused(P, '{"model":7,"messages":[{"role":"user","content":"hi"}]}', "model: expected string (got number)")
        refused(P, '{"model":"m","max_tokens":1.5,"messages":[{"role":"user","content":"hi"}]}',
            "max_tokens: expected integer")
        refused(P, '{"model":"m","temperature":"hot","messages":[{"role":"user","content":"hi"}]}',
            "temperature: expected number")
        refused(P, '{"model":"m","tools":{"a":1},"messages":[{"role":"user","content":"hi"}]}', "tools: expected array")
        refused(P, '{"model":"m","tools":[{"type":"function","function":{"parameters":{}}}],' ..
            '"messages":[{"role":"user","content":"hi"}]}', "tools[0].function.name: expected string")
        refused(P, '{"model":"m","tool_choice":3,"messages":[{"role":"user","content":"hi"}]}',
            "tool_choice: expected string or object")
        refused(P, '{"model":"m","stream":true,"stream_options":{"include_usage":"yes"},' ..
            '"messages":[{"role":"user","content":"hi"}]}', "stream_options.include_usage: expected boolean")
        refused(P, BAD_UTF8, "messages[0].content: invalid UTF-8")
        refused("/v1/embeddings", '{"model":"m","input":5}', "input: expected string or array")
        refused("/v1/completions", '{"model":"m","prompt":{"a":1}}', "prompt: expected string or array")
    end)

    it("Anthropic client: wrong shapes and types name the field", function()
        local P = "/v1/messages"
        refused(P, '{"model":"m","max_tokens":5,"messages":{"role":"user","content":"hi"}}',
            "messages: expected a non-empty array")
        refused(P, '{"model":"m","max_tokens":5,"messages":[1,2,3]}', "messages[0]: expected object (got number)")
        refused(P, '{"model":"m","max_tokens":5,"stream":"yes","messages":[{"role":"user","content":"hi"}]}',
            "stream: expected boolean (got string)")
        refused(P, '{"model":"m","max_tokens":5,"stream":1,"messages":[{"role":"user","content":"hi"}]}',
            "stream: expected boolean (got number)")
        refused(P, '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"a"},{"role":"assistant",' ..
            '"content":"b"},{"role":"user","content":7}]}', "messages[2].content: expected string or array (got number)")
        refused(P, '{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"hi"}]}',
            "messages[0].role: expected user or assistant")
        refused(P, '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text"}]}]}',
            "messages[0].content[0].text: expected string (missing)")
        refused(P, '{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use",' ..
            '"name":"f","input":{}}]}]}', "messages[0].content[0].id: expected string")
        refused(P, '{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result",' ..
            '"tool_use_id":"t","content":{"x":1}}]}]}', "messages[0].content[0].content: expected string or array")
        refused(P, '{"model":"m","max_tokens":"5","messages":[{"role":"user","content":"hi"}]}',
            "max_tokens: expected integer (got string)")
        refused(P, '{"model":"m","max_tokens":5,"system":5,"messages":[{"role":"user","content":"hi"}]}',
            "system: expected string or array")
        refused(P, '{"model":"m","max_tokens":5,"tools":[{"input_schema":{}}],"messages":[{"role":"user","content":"hi"}]}',
            "tools[0].name: expected string")
        refused(P, '{"model":"m","max_tokens":5,"tool_choice":"auto","messages":[{"role":"user","content":"hi"}]}',
            "tool_choice: expected object")
        refused(P, BAD_UTF8, "messages[0].content: invalid UTF-8")
        refused(P, '{"model":"m","max_tokens":5,"metadata":{"\xff":1},"messages":[{"role":"user","content":"hi"}]}',
            "metadata.(a key): invalid UTF-8")
    end)

    it("unknown fields, part and block types pass; whole requests of every kind go through", function()
        local openai = {
            model = "m", stream = false, temperature = 0.2, max_tokens = 20, future_option = { deep = { 1, 2 } },
            messages = {
                { role = "developer", content = "Be brief." },
                { role = "user", content = { { type = "text", text = "look" },
                    { type = "image_url", image_url = { url = "data:image/png;base64,AAAA", detail = "low" } },
                    { type = "future_part", whatever = true } }, extra = "x" },
                { role = "assistant", content = cjson.null, tool_calls = { { id = "c1", type = "function",
                    ["function"] = { name = "f", arguments = "{}" } } } },
                { role = "tool", tool_call_id = "c1", content = "42" },
            },
            tools = { { type = "function", ["function"] = { name = "f", parameters = { type = "object" } } } },
            tool_choice = { type = "function", ["function"] = { name = "f" } },
        }
        local res = post("/v1/chat/completions", cjson.encode(openai))
        assert.equal(200, res.status, res.body)
        local anthropic = {
            model = "m", max_tokens = 20, top_k = 5, future_option = "x", system = { { type = "text", text = "Be brief." } },
            messages = {
                { role = "user", content = { { type = "text", text = "Grüße, 世界" },
                    { type = "image", source = { type = "base64", media_type = "image/png", data = "AAAA" } } } },
                { role = "assistant", content = { { type = "tool_use", id = "t1", name = "f", input = { a = 1 } },
                    { type = "server_tool_use_of_the_future", id = "s" } } },
                { role = "user", content = { { type = "tool_result", tool_use_id = "t1",
                    content = { { type = "text", text = "42" } } } } },
            },
            tools = { { name = "f", input_schema = { type = "object" } } },
            tool_choice = { type = "tool", name = "f" },
        }
        res = post("/v1/messages", cjson.encode(anthropic))
        assert.equal(200, res.status, res.body)
        assert.equal("message", res.json.type)
    end)
end)

describe("sluice.ai.validate (unit)", function()
    local validate = require("sluice.ai.validate")

    it("UTF-8 of the raw body, the field named from the table", function()
        assert.is_true(validate.utf8("plain"))
        assert.same({ false, 3 }, { validate.utf8("abc\xe2\x82") })
        local body = { model = "m", messages = { { role = "user", content = { { type = "text", text = "ok" },
            { type = "text", text = "\xed\xa0\x80" } } } } }
        local ok, err, param = validate.request("openai", "chat", body, '{"... \xed\xa0\x80 ..."}')
        assert.is_nil(ok)
        assert.equal("messages[0].content[1].text: invalid UTF-8", err)
        assert.equal("messages[0].content[1].text", param)
        -- without the raw body (a plugin replaced the table) the table alone is checked
        assert.is_nil((validate.request("openai", "chat", body, nil)))
        body.messages[1].content[2].text = "fine"
        assert.is_true(validate.request("openai", "chat", body, nil))
    end)

    it("a JSON value that is not an object is refused", function()
        assert.is_nil((validate.request("openai", "chat", { 1, 2 }, "[1,2]")))
        assert.is_nil((validate.request("anthropic", "chat", "x", '"x"')))
    end)
end)
