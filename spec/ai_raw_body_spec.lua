-- ai-proxy sends the client's own bytes upstream when the request it would send says exactly what they say (an
-- OpenAI client, an OpenAI-wire provider, the model sent is the one asked, no parameter dropped, no plugin handed
-- the table): no decode-and-re-encode, which also kept numbers, escapes and empty arrays as the client wrote
-- them. Anything that changes the request, and bytes whose meaning could depend on the reader (a repeated key),
-- go re-encoded. Through the real gateway against tests/mock/providers.js, which records the raw body it got.
local helpers = require("helpers")

local ROOT = helpers.ROOT

-- An access plugin after ai-proxy that edits the canonical request through the PDK (sluice.ai.get_request).
local EDITOR = [[
local sluice = require("sluice")
return { name = "ai-req-editor", version = "1", priority = 1000,
  access = function(conf, ctx)
    local req = sluice.ai.get_request()
    if req then req.temperature = 0.25 end
  end }
]]

describe("ai-proxy: the client's bytes go upstream when nothing changes", function()
    local gw, mock_port

    local function last_upstream()
        local res = assert(helpers.http("GET", "http://127.0.0.1:" .. mock_port .. "/__requests"))
        local r = res.json
        return r[#r]
    end
    local function post(path, raw)
        local res = assert(helpers.http("POST", gw.url(path), { body = raw, timeout = 10,
                                                                 headers = { ["content-type"] = "application/json" } }))
        return res, last_upstream()
    end

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/ai-req-editor.lua", EDITOR)
        mock_port = helpers.free_port()
        local mock = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. mock_port
            .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        local up = "http://127.0.0.1:" .. mock_port
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins", dir }, workers = 1 },
            providers = {
                any = { kind = "openai", endpoint = up, api_key = "k" },
                mapped = { kind = "openai", endpoint = up, api_key = "k", models = { small = "gpt-4o-mini" } },
                compat = { kind = "openai-compatible", endpoint = up .. "/v1", api_key = "k" },
            },
            routes = {
                { id = "any", paths = { "/any/v1/*" }, plugins = { ["ai-proxy"] = { provider = "any" } } },
                { id = "mapped", paths = { "/mapped/v1/*" }, plugins = { ["ai-proxy"] = { provider = "mapped" } } },
                { id = "forced", paths = { "/forced/v1/*" },
                  plugins = { ["ai-proxy"] = { provider = "any", model = "gpt-4o" } } },
                { id = "compat", paths = { "/compat/v1/*" }, plugins = { ["ai-proxy"] = { provider = "compat" } } },
                { id = "edited", paths = { "/edited/v1/*" },
                  plugins = { ["ai-proxy"] = { provider = "any" }, ["ai-req-editor"] = {} } },
                { id = "safe", paths = { "/safe/v1/*" }, plugins = { ["ai-proxy"] = { provider = "any" },
                  ["ai-prompt-guard"] = { deny = { "ignore previous instructions" } }, ["ai-pii"] = {},
                  ["ai-moderation"] = { categories = { { name = "violence", keywords = { "kill" } } } } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- spacing, key order, a 20-digit integer, escaped characters, a trailing zero: a re-encoded body would differ
    -- in each (the seed would even change value)
    local RAW = '{ "model" : "gpt-4o-mini",\n  "messages": [ {"role": "user", "content": "caf\\u00e9 \\/ ok"} ],\n'
        .. '  "seed": 12345678901234567890, "temperature": 0.50, "metadata": {"tag": "a"} }'

    it("non-streaming: the upstream gets the client's bytes as they are", function()
        local res, up = post("/any/v1/chat/completions", RAW)
        assert.equal(200, res.status, res.body)
        assert.equal(RAW, up.raw)
    end)

    it("streaming: the same bytes with the stream_options the gateway adds spliced in", function()
        local raw = '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}  '
        local res, up = post("/compat/v1/chat/completions", raw)
        assert.equal(200, res.status)
        assert.equal('{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]'
            .. ',"stream_options":{"include_usage":true}}  ', up.raw)
        assert.matches("data: %[DONE%]", res.body)
    end)

    it("streaming with the client's own include_usage: its bytes as they are", function()
        local raw = '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},'
            .. '"messages":[{"role":"user","content":"hi"}]}'
        local res, up = post("/compat/v1/chat/completions", raw)
        assert.equal(200, res.status)
        assert.equal(raw, up.raw)
    end)

    it("the safety plugins only read the request: its bytes go as they are unless ai-pii masks something", function()
        local res, up = post("/safe/v1/chat/completions", RAW)
        assert.equal(200, res.status, res.body)
        assert.equal(RAW, up.raw)
        local raw = RAW:gsub("ok", "mail me at jane@example.com")
        res, up = post("/safe/v1/chat/completions", raw)
        assert.equal(200, res.status, res.body)
        assert.not_equal(raw, up.raw)
        assert.equal("caf\u{e9} / mail me at <PII_EMAIL_1>", up.body.messages[1].content)
        assert.not_matches("jane@", up.raw)
    end)

    it("a repeated key: re-encoded, so the upstream reads the value the gateway checked", function()
        local raw = '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini"}'
        local res, up = post("/mapped/v1/chat/completions", raw:gsub("gpt%-4o%-mini", "small"))
        assert.equal(200, res.status)
        assert.equal("gpt-4o-mini", up.body.model)
        assert.not_matches('"gpt%-4o"', up.raw) -- one model key, the last one's value mapped
        res, up = post("/any/v1/chat/completions", raw)
        assert.equal(200, res.status)
        assert.equal("gpt-4o-mini", up.body.model)
        assert.not_matches('"gpt%-4o"', up.raw)
    end)

    it("a change re-encodes: mapped model, forced model, a dropped parameter, an access plugin's edit", function()
        local raw = '{"model":"small","messages":[{"role":"user","content":"hi"}]}'
        local res, up = post("/mapped/v1/chat/completions", raw)
        assert.equal(200, res.status)
        assert.equal("gpt-4o-mini", up.body.model)
        res, up = post("/forced/v1/chat/completions", RAW)
        assert.equal(200, res.status)
        assert.equal("gpt-4o", up.body.model)
        assert.not_equal(RAW, up.raw)
        res, up = post("/any/v1/chat/completions",
            '{"model":"gpt-4o-mini","top_k":5,"messages":[{"role":"user","content":"hi"}]}')
        assert.equal(200, res.status)
        assert.is_nil(up.body.top_k) -- the openai kind drops what OpenAI rejects
        res, up = post("/edited/v1/chat/completions", RAW)
        assert.equal(200, res.status)
        assert.equal(0.25, up.body.temperature)
        assert.equal("gpt-4o-mini", up.body.model)
    end)

    it("bytes that are not strict JSON (a hex number cjson reads) go re-encoded, as valid JSON", function()
        local raw = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":0x10}'
        local res, up = post("/any/v1/chat/completions", raw)
        if res.status == 200 then -- cjson took the hex number: the upstream must get JSON it can read
            assert.equal(16, up.body.max_tokens)
            assert.not_matches("0x", up.raw)
        else
            assert.equal(400, res.status)
        end
    end)
end)
