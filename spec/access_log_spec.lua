-- The access log through the real gateway: one JSON object per line, only the configured fields, fields added
-- by plugins (sluice.log.access), and ai-proxy's "ai" object (model, tokens, cost) for AI requests.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local PLUGIN = [[
local sluice = require("sluice")
return { name = "log-tag", version = "1", priority = 5,
  log = function(conf, ctx)
    sluice.log.access("tag", { route = ctx.route.id, n = 3 })
  end }
]]

describe("access log", function()
    local gw, upstream, mock_port

    local function lines()
        local out = {}
        for line in gw:access_log():gmatch("[^\n]+") do
            out[#out + 1] = assert(cjson.decode(line), "not JSON: " .. line)
        end
        return out
    end

    local function wait_line(pred)
        return helpers.wait_until(function()
            for _, l in ipairs(lines()) do
                if pred(l) then return l end
            end
        end, 5, "no such access log line")
    end

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/log-tag.lua", PLUGIN)
        upstream = helpers.mock_upstream()
        mock_port = helpers.free_port()
        local mock = helpers.spawn("node " .. helpers.shell_quote(helpers.ROOT .. "/tests/mock/providers.js") .. " "
            .. mock_port .. " >/dev/null 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        local gdir = helpers.tmpdir()
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", dir },
                     access_log = { path = gdir .. "/access.log",
                                    fields = { "method", "path", "status", "route", "request_id", "upstream_status",
                                               "upstream", "latency_ms" } } },
            providers = { oa = { kind = "openai", endpoint = "http://127.0.0.1:" .. mock_port, api_key = "k",
                                 price = { ["gpt-4o-mini"] = { input = 1, output = 2 } } } },
            routes = {
                { id = "plain", paths = { "/plain/*" }, upstream = { nodes = { upstream.addr } },
                  plugins = { ["log-tag"] = {} } },
                { id = "ai", paths = { "/ai/v1/*" }, plugins = { ["ai-proxy"] = { provider = "oa" } } },
            },
        }, { dir = gdir })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("writes one JSON object per request with the configured fields only", function()
        assert.equal(200, helpers.http("GET", gw.url("/plain/a?x=1")).status)
        assert.equal(404, helpers.http("GET", gw.url("/nowhere")).status)
        local l = wait_line(function(x) return x.path == "/plain/a" end)
        assert.equal("GET", l.method)
        assert.equal(200, l.status)
        assert.equal(200, l.upstream_status)
        assert.equal("plain", l.route)
        assert.equal(upstream.addr, l.upstream)
        assert.truthy(l.request_id:match("^%x+$"))
        assert.is_nil(l.time)
        assert.is_nil(l.client)
        assert.is_nil(l.query)
        local nf = wait_line(function(x) return x.path == "/nowhere" end)
        assert.equal(404, nf.status)
    end)

    it("carries fields that plugins add in the log phase", function()
        helpers.http("GET", gw.url("/plain/tagged"))
        local l = wait_line(function(x) return x.path == "/plain/tagged" end)
        assert.same({ route = "plain", n = 3 }, l.tag)
    end)

    it("carries ai-proxy's usage for AI requests", function()
        local res = helpers.http("POST", gw.url("/ai/v1/chat/completions"),
            { body = { model = "gpt-4o-mini", messages = { { role = "user", content = "hi" } } } })
        assert.equal(200, res.status, res.body)
        local l = wait_line(function(x) return x.path == "/ai/v1/chat/completions" end)
        assert.equal("oa", l.ai.provider)
        assert.equal(res.json.usage.prompt_tokens, l.ai.prompt_tokens)
        assert.equal(res.json.usage.completion_tokens, l.ai.completion_tokens)
        local cost = (l.ai.prompt_tokens * 1 + l.ai.completion_tokens * 2) / 1e6
        assert.is_true(math.abs(l.ai.cost - cost) < 1e-12)
        assert.is_number(l.ai.latency_ms)
    end)

    -- the raw text of the access log lines whose path is path (the checks below look at how numbers are written)
    local function raw_lines(path)
        local out = {}
        for line in gw:access_log():gmatch("[^\n]+") do
            local l = cjson.decode(line)
            if l and l.path == path then out[#out + 1] = line end
        end
        return out
    end

    -- sends an AI request and returns its response and its access log line (raw)
    local function ai_request(body)
        local path = "/ai/v1/chat/completions"
        local before = #raw_lines(path)
        local res = helpers.http("POST", gw.url(path), { body = body })
        local raw = helpers.wait_until(function()
            local all = raw_lines(path)
            return all[before + 1]
        end, 5, "no new access log line")
        return res, raw
    end

    it("writes the ai object with exactly the usage fields, a fractional cost and sub-ms latencies", function()
        local res, raw = ai_request({ model = "gpt-4o-mini", messages = { { role = "user", content = "hello there" } } })
        assert.equal(200, res.status, res.body)
        local l = assert(cjson.decode(raw))
        local p, c = res.json.usage.prompt_tokens, res.json.usage.completion_tokens
        local cost = (p * 1 + c * 2) / 1e6
        assert.is_true(math.abs(l.ai.cost - cost) < 1e-15 and l.ai.cost ~= math.floor(l.ai.cost), raw)
        -- latencies in ms with 3 decimals, as the line's own (a fast answer is not "0")
        assert.matches('"ai":{.*"ttft_ms":%d+%.%d%d%d.*}', raw)
        assert.matches('"ai":{.*"latency_ms":%d+%.%d%d%d.*}', raw)
        assert.is_true(l.ai.latency_ms > 0 and l.ai.latency_ms <= l.latency_ms, raw)
        assert.is_true(l.ai.ttft_ms > 0 and l.ai.ttft_ms <= l.ai.latency_ms, raw)
        assert.same({ provider = "oa", model = "gpt-4o-mini", requested_model = "gpt-4o-mini", status = 200,
                      prompt_tokens = p, completion_tokens = c, cost = l.ai.cost, ttft_ms = l.ai.ttft_ms,
                      latency_ms = l.ai.latency_ms }, l.ai)
    end)

    it("marks streams in the ai object", function()
        local res, raw = ai_request({ model = "gpt-4o-mini", stream = true,
                                      messages = { { role = "user", content = "hi" } } })
        assert.equal(200, res.status, res.body)
        local l = assert(cjson.decode(raw))
        assert.is_true(l.ai.stream)
        assert.equal(200, l.ai.status)
        assert.is_nil(l.ai.cut)
        assert.is_true(l.ai.ttft_ms > 0 and l.ai.ttft_ms <= l.ai.latency_ms)
    end)

    it("escapes a hostile model name in the ai object (the line stays one valid JSON object)", function()
        local evil = 'm"\\\1\n\127\194\133}{"x":1'
        local res, raw = ai_request({ model = evil, messages = { { role = "user", content = "hi" } } })
        assert.is_number(res.status)
        assert.is_nil(raw:find("\n", 1, true))
        local l = assert(cjson.decode(raw), raw)
        assert.equal(evil, l.ai.requested_model)
        assert.equal(res.status, l.ai.status)
        assert.is_nil(l.x)
    end)
end)
