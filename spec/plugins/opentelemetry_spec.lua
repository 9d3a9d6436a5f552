-- opentelemetry plugin through the real gateway: spans received by a collector (spec/support/mock_upstream.js)
-- for a client that sent a traceparent, retries of ai-proxy-multi as sibling attempt spans, the traceparent each
-- upstream got, sluice.http calls as spans, sampling (ratio 0, always on error), a collector that is down.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local ROOT = helpers.ROOT
local CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
local TP = "00-" .. CLIENT_TRACE .. "-" .. CLIENT_SPAN .. "-01"

local HTTP_PROBE = [[
local sluice = require("sluice")
return { name = "http-probe", version = "1", priority = 3000,
  access = function(conf, ctx)
    local res, err = sluice.http.request({ url = conf.url, timeout = 5 })
    if not res then return 502, { error = { message = err } } end
  end }
]]

local function attr(span, key)
    for _, a in ipairs(span.attributes or {}) do
        if a.key == key then return a.value end
    end
    return nil
end

local function spans_of(collector)
    local out = {}
    for _, req in ipairs(collector:requests()) do
        local body = cjson.decode(req.body)
        if body then
            for _, rs in ipairs(body.resourceSpans or {}) do
                for _, ss in ipairs(rs.scopeSpans or {}) do
                    for _, sp in ipairs(ss.spans or {}) do out[#out + 1] = sp end
                end
            end
        end
    end
    return out
end

local function start_provider(dir, name)
    local port = helpers.free_port()
    local p = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. port
        .. " >" .. helpers.shell_quote(dir .. "/mock-" .. name .. ".log") .. " 2>&1")
    assert(helpers.wait_port(port, p, 10))
    return "http://127.0.0.1:" .. port
end

describe("opentelemetry plugin", function()
    local gw, collector, good, bad, plain, dir

    setup(function()
        dir = helpers.tmpdir()
        good = start_provider(dir, "good")
        bad = start_provider(dir, "bad")
        assert.equal(200, helpers.http("POST", bad .. "/__config", { body = { status = 500 } }).status)
        collector = helpers.mock_upstream({ status = 200, body = "{}" })
        plain = helpers.mock_upstream({ status = 200, body = "plain" })
        helpers.write_file(dir .. "/http-probe.lua", HTTP_PROBE)
        gw = helpers.start_gateway({
            node = { workers = 2, plugin_paths = { ROOT .. "/plugins", dir } },
            providers = {
                one = { kind = "openai", endpoint = bad, api_key = "k1" },
                two = { kind = "openai", endpoint = good, api_key = "k2" },
            },
            routes = {
                { id = "multi", paths = { "/v1/chat/completions" },
                  plugins = { ["ai-proxy-multi"] = { strategy = "priority", retries = 2,
                      backoff = { base = 0, max = 0 },
                      targets = { { provider = "one", priority = 10 }, { provider = "two", priority = 1 } } } } },
                { id = "plain", paths = { "/plain/*" }, upstream = { nodes = { plain.addr } },
                  plugins = { ["http-probe"] = { url = plain.url("/side") } } },
                { id = "sampled-out", paths = { "/rare/v1/chat/completions" },
                  plugins = { ["ai-proxy"] = { provider = "two" },
                              opentelemetry = { endpoint = collector.url("/v1/traces"),
                                                sampling = { ratio = 0 }, batch = { interval = 0.05 } } } },
                { id = "rare-error", paths = { "/rare-err/v1/chat/completions" },
                  plugins = { ["ai-proxy"] = { provider = "one" },
                              opentelemetry = { endpoint = collector.url("/v1/traces"),
                                                sampling = { ratio = 0 }, batch = { interval = 0.05 } } } },
            },
            global_plugins = { opentelemetry = { endpoint = collector.url("/v1/traces"), service_name = "gw-spec",
                                                 batch = { interval = 0.05 } } },
        })
    end)
    teardown(helpers.stop_all)

    it("makes the gateway's spans children of the client's; attempts are siblings with GenAI attributes", function()
        local res = assert(helpers.http("POST", gw.url("/v1/chat/completions"), {
            headers = { traceparent = TP, tracestate = "vendor=abc" },
            body = { model = "gpt-4o-mini", temperature = 1, max_tokens = 20,
                     messages = { { role = "user", content = "hi" } } } }))
        assert.equal(200, res.status, res.body)
        local spans = helpers.wait_until(function()
            local s = spans_of(collector)
            local n = 0
            for _, sp in ipairs(s) do if sp.traceId == CLIENT_TRACE then n = n + 1 end end
            return n >= 3 and s
        end, 5, "spans not exported")
        local server, attempts = nil, {}
        for _, sp in ipairs(spans) do
            if sp.traceId == CLIENT_TRACE then
                if sp.kind == 2 then server = sp else attempts[#attempts + 1] = sp end
            end
        end
        assert.truthy(server)
        assert.equal(CLIENT_SPAN, server.parentSpanId)
        assert.equal(2, #attempts)
        table.sort(attempts, function(a, b) return tonumber(a.startTimeUnixNano) < tonumber(b.startTimeUnixNano) end)
        for _, a in ipairs(attempts) do
            assert.equal(server.spanId, a.parentSpanId) -- siblings under the gateway's span
            assert.equal(3, a.kind)
            assert.equal("chat", attr(a, "gen_ai.operation.name").stringValue)
            assert.equal("openai", attr(a, "gen_ai.system").stringValue)
            assert.equal("20", attr(a, "gen_ai.request.max_tokens").intValue)
            assert.equal(1, attr(a, "gen_ai.request.temperature").doubleValue)
        end
        assert.equal(2, attempts[1].status.code) -- the failed attempt (500)
        assert.equal("500", attr(attempts[1], "error.type").stringValue)
        assert.equal(1, attempts[2].status.code)
        assert.equal("17", attr(attempts[2], "gen_ai.usage.input_tokens").intValue)
        assert.equal("5", attr(attempts[2], "gen_ai.usage.output_tokens").intValue)
        assert.same({ values = { { stringValue = "stop" } } }, attr(attempts[2], "gen_ai.response.finish_reasons").arrayValue)
        assert.equal("17", attr(server, "gen_ai.usage.input_tokens").intValue)
        assert.equal("200", attr(server, "http.response.status_code").intValue)
        assert.equal("multi", attr(server, "http.route").stringValue)
        -- each provider got the traceparent of its own attempt span, and the client's tracestate
        local function got(url)
            local reqs = helpers.http("GET", url .. "/__requests").json
            return reqs[#reqs].headers
        end
        local hb, hg = got(bad), got(good)
        assert.equal("00-" .. CLIENT_TRACE .. "-" .. attempts[1].spanId .. "-01", hb.traceparent)
        assert.equal("00-" .. CLIENT_TRACE .. "-" .. attempts[2].spanId .. "-01", hg.traceparent)
        assert.equal("vendor=abc", hg.tracestate)
    end)

    it("traces plugins' sluice.http calls and propagates to plain upstreams", function()
        local res = assert(helpers.http("GET", gw.url("/plain/x"), { headers = { traceparent = TP } }))
        assert.equal(200, res.status)
        local reqs = plain:requests()
        local side, main
        for _, r in ipairs(reqs) do
            if r.path == "/side" then side = r else main = r end
        end
        local spans = helpers.wait_until(function()
            local out = {}
            for _, sp in ipairs(spans_of(collector)) do
                if sp.traceId == CLIENT_TRACE and (attr(sp, "http.route") or {}).stringValue == "plain" then out.server = sp end
                if sp.traceId == CLIENT_TRACE and attr(sp, "sluice.plugin") then out.call = sp end
            end
            return out.server and out.call and out
        end, 5, "no spans for the plain route")
        assert.equal(spans.server.spanId, spans.call.parentSpanId)
        assert.equal("http-probe", attr(spans.call, "sluice.plugin").stringValue)
        assert.equal("00-" .. CLIENT_TRACE .. "-" .. spans.call.spanId .. "-01", side.headers.traceparent)
        assert.equal("00-" .. CLIENT_TRACE .. "-" .. spans.server.spanId .. "-01", main.headers.traceparent)
    end)

    it("samples by ratio, and always on error", function()
        collector:clear()
        local body = { model = "gpt-4o-mini", messages = { { role = "user", content = "hi" } } }
        for _ = 1, 3 do
            assert.equal(200, helpers.http("POST", gw.url("/rare/v1/chat/completions"), { body = body }).status)
        end
        assert.equal(500, helpers.http("POST", gw.url("/rare-err/v1/chat/completions"), { body = body }).status)
        helpers.wait_until(function() return #spans_of(collector) >= 1 end, 5, "the error was not traced")
        helpers.sleep(0.3)
        local spans = spans_of(collector)
        for _, sp in ipairs(spans) do
            assert.not_equal("sampled-out", (attr(sp, "http.route") or {}).stringValue)
        end
        local routes = {}
        for _, sp in ipairs(spans) do routes[(attr(sp, "http.route") or {}).stringValue or "-"] = true end
        assert.is_true(routes["rare-error"])
    end)

    it("drops spans past its queue when the collector is down, and counts them", function()
        local down = "http://127.0.0.1:" .. helpers.free_port() .. "/v1/traces"
        local g2 = helpers.start_gateway({
            node = { workers = 1 },
            providers = { two = { kind = "openai", endpoint = good, api_key = "k2" } },
            routes = { { id = "ai", paths = { "/v1/chat/completions" }, plugins = { ["ai-proxy"] = { provider = "two" } } } },
            global_plugins = { prometheus = {}, opentelemetry = { endpoint = down, batch = { max_queue = 4, interval = 0.05 },
                                                                  retry = { base = 0.05, max_delay = 0.1 } } },
        })
        local body = { model = "gpt-4o-mini", messages = { { role = "user", content = "hi" } } }
        for _ = 1, 10 do
            assert.equal(200, helpers.http("POST", g2.url("/v1/chat/completions"), { body = body }).status)
        end
        local text = helpers.wait_until(function()
            local r = helpers.http("GET", g2.admin_url("/metrics"), { headers = { ["x-api-key"] = g2.admin_key } })
            return r and r.body:find('sluice_otel_dropped_total{sink="otlp",reason="buffer_full"}', 1, true) and r.body
        end, 5, "no drop counted")
        assert.truthy(tonumber(text:match('sluice_otel_dropped_total{sink="otlp",reason="buffer_full"} (%d+)')) >= 10)
    end)
end)

describe("opentelemetry traceparent parsing", function()
    local unit = require("unit_helpers")
    local plugin = unit.load_plugin("opentelemetry")
    it("takes valid W3C traceparents and refuses the others", function()
        local t, p, f = plugin.parse_traceparent(TP)
        assert.equal(CLIENT_TRACE, t)
        assert.equal(CLIENT_SPAN, p)
        assert.equal(1, f)
        assert.is_nil(plugin.parse_traceparent("00-" .. CLIENT_TRACE .. "-" .. CLIENT_SPAN .. "-01-extra"))
        assert.is_nil(plugin.parse_traceparent("ff-" .. CLIENT_TRACE .. "-" .. CLIENT_SPAN .. "-01"))
        assert.is_nil(plugin.parse_traceparent("00-00000000000000000000000000000000-" .. CLIENT_SPAN .. "-01"))
        assert.is_nil(plugin.parse_traceparent("00-" .. CLIENT_TRACE .. "-0000000000000000-01"))
        assert.is_nil(plugin.parse_traceparent("00-abc-def-01"))
        assert.is_nil(plugin.parse_traceparent(nil))
        -- a future version may carry more fields
        assert.equal(CLIENT_TRACE, (plugin.parse_traceparent("01-" .. CLIENT_TRACE .. "-" .. CLIENT_SPAN .. "-01-xyz")))
    end)

    it("writes spans as valid JSON whatever the attribute values hold, the same on every call", function()
        local tr = { trace_id = CLIENT_TRACE }
        local values = { "gpt-4o", 'say "hi"', "a\\b", "line\nbreak", "tab\there", "\127", "caf\xc3\xa9",
                         string.rep("x", 200) .. '"' }
        for round = 1, 3 do -- the values seen before come from the cache of plain strings
            for _, v in ipairs(values) do
                local sp = { id = CLIENT_SPAN, kind = 3, name = v, start = 1, finish = 2,
                             attrs = { ["gen_ai.request.model"] = v, ["url.path"] = v, ["server.port"] = 443,
                                       ["gen_ai.response.finish_reasons"] = { v, "stop" } } }
                local j = assert(cjson.decode(plugin.span_json(tr, sp)), "round " .. round .. ": " .. v)
                assert.equal(v, j.name)
                assert.equal(v, j.attributes[1].value.stringValue)
                assert.equal(v, j.attributes[2].value.arrayValue.values[1].stringValue)
                assert.equal("443", j.attributes[3].value.intValue)
                assert.equal(v, j.attributes[4].value.stringValue)
            end
        end
    end)
end)
