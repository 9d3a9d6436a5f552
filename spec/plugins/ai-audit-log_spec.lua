-- ai-audit-log through the real gateway: the record schema and payloads (streams assembled, truncated), the
-- file sink (rotation by size, reopen on SIGUSR1 after a move), the HTTP exporter against a collector that fails
-- its first attempts (nothing lost, order kept) and one that is down for longer than the buffer (drops counted
-- and logged, requests unaffected).
local helpers = require("helpers")
local cjson = require("cjson.safe")

local ROOT = helpers.ROOT
local SIGUSR1 = 10

local function lines(path)
    local out = {}
    for l in (helpers.read_file(path) or ""):gmatch("[^\n]+") do out[#out + 1] = assert(cjson.decode(l), l) end
    return out
end

local function start_provider()
    local dir = helpers.tmpdir()
    local port = helpers.free_port()
    local p = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. port
        .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
    assert(helpers.wait_port(port, p, 10))
    return "http://127.0.0.1:" .. port
end

local function chat(gw, body, key)
    return assert(helpers.http("POST", gw.url("/v1/chat/completions"), {
        headers = { authorization = "Bearer " .. (key or "alice-key") },
        body = body or { model = "gpt-4o-mini", messages = { { role = "user", content = "hello there" } } } }))
end

local function base_config(mock_url, plugin_conf, workers)
    return {
        node = { workers = workers or 2 },
        providers = { oai = { kind = "openai", endpoint = mock_url, api_key = "sk-test",
                              price = { ["gpt-4o-mini"] = { input = 0.15, output = 0.6 } } } },
        consumers = { { name = "alice", keys = { "alice-key" } } },
        routes = { { id = "chat", paths = { "/v1/chat/completions" },
                     plugins = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "oai" },
                                 ["ai-audit-log"] = plugin_conf } } },
    }
end

describe("ai-audit-log", function()
    local mock_url
    setup(function() mock_url = start_provider() end)
    teardown(helpers.stop_all)

    it("writes one record per AI interaction with the schema's fields and the payloads", function()
        local dir = helpers.tmpdir()
        local path = dir .. "/audit.log"
        local gw = helpers.start_gateway(base_config(mock_url, { file = { path = path, flush_interval = 0.05 },
            include_payloads = true, max_payload = 40 }))
        assert.equal(200, chat(gw).status)
        local res = chat(gw, { model = "gpt-4o-mini", stream = true,
                               messages = { { role = "user", content = "stream please" } } })
        assert.equal(200, res.status)
        local recs = helpers.wait_until(function() local l = lines(path) return #l == 2 and l end, 5, "no records")
        local r = recs[1].stream and recs[2] or recs[1]
        local s = recs[1].stream and recs[1] or recs[2]
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", r.time)
        assert.matches("^%x+$", r.request_id)
        assert.equal("alice", r.consumer)
        assert.equal("chat", r.route)
        assert.equal("oai", r.provider)
        assert.equal("gpt-4o-mini", r.requested_model)
        assert.equal(200, r.status)
        assert.equal(17, r.input_tokens)
        assert.equal(5, r.output_tokens)
        assert.equal(3, r.cached_tokens)
        assert.near((17 * 0.15 + 5 * 0.6) / 1e6, r.cost, 1e-12)
        assert.is_number(r.latency_ms)
        assert.is_number(r.ttft_ms)
        assert.equal(0, r.retries)
        -- payloads: the client's body cut at 40 bytes, the answer as sent
        assert.equal(40, #r.request)
        assert.is_true(r.request_truncated)
        assert.matches('^{"', r.request)
        assert.matches('^{"id"', r.response) -- a JSON answer as it was sent
        assert.equal(40, #r.response)
        assert.is_true(r.response_truncated)
        -- the stream's answer is assembled from its events
        assert.equal("Hello from the mock.", s.response)
        assert.is_true(s.stream)
        assert.falsy((helpers.read_file(path) or ""):find("alice-key", 1, true))
    end)

    it("keeps the last `recent` records, newest first and without payloads, for the dashboard", function()
        local dir = helpers.tmpdir()
        local gw = helpers.start_gateway(base_config(mock_url, { file = { path = dir .. "/audit.log" },
            include_payloads = true, recent = 3 }, 1))
        for i = 1, 7 do
            assert.equal(200, chat(gw, { model = "gpt-4o-mini", messages = { { role = "user", content = "n" .. i } } })
                .status)
        end
        local login = assert(helpers.http("POST", gw.admin_url("/dashboard/login"), { body = { key = gw.admin_key } }))
        assert.equal(200, login.status)
        local token = assert(cjson.decode(login.body)).token
        local res = assert(helpers.http("GET", gw.admin_url("/dashboard/data"),
            { headers = { authorization = "Bearer " .. token } }))
        assert.equal(200, res.status)
        local recent = assert(cjson.decode(res.body)).recent
        assert.equal(3, #recent)
        for i = 1, 3 do
            assert.equal("alice", recent[i].consumer)
            assert.is_nil(recent[i].request)
            assert.is_nil(recent[i].response)
            if i > 1 then
                assert.truthy(tonumber(recent[i - 1].request_id, 16) > tonumber(recent[i].request_id, 16))
            end
        end
        gw:stop()
    end)

    it("rotates by size and reopens the file on SIGUSR1 after a move", function()
        local dir = helpers.tmpdir()
        local path = dir .. "/audit.log"
        local gw = helpers.start_gateway(base_config(mock_url, { file = { path = path, flush_interval = 0.05,
            max_size = 1500, max_files = 2 } }, 1))
        helpers.wait_until(function()
            assert.equal(200, chat(gw).status)
            return helpers.read_file(path .. ".2") ~= nil
        end, 10, "no rotation", 0.1)
        assert.equal(200, chat(gw).status)
        helpers.wait_until(function() return helpers.read_file(path) ~= nil end, 5, "no file after the rotation")
        assert.is_nil(helpers.read_file(path .. ".3")) -- at most max_files rotated files are kept
        assert.truthy(#lines(path .. ".1") >= 2)
        -- logrotate-style: move the file away, signal, the next records go to a new file at path
        assert(os.rename(path, dir .. "/moved.log"))
        gw.proc:signal(SIGUSR1)
        helpers.wait_until(function() return gw:log():find("SIGUSR1", 1, true) end, 5)
        assert.equal(200, chat(gw).status)
        -- >= 1: a record still buffered when the file was moved may land in the new file too (a loaded machine)
        helpers.wait_until(function() return #lines(path) >= 1 end, 10, "no new file after SIGUSR1")
        assert.truthy(gw.proc:alive())
    end)

    it("rotates by time", function()
        local dir = helpers.tmpdir()
        local path = dir .. "/audit.log"
        local gw = helpers.start_gateway(base_config(mock_url, { file = { path = path, flush_interval = 0.05,
            max_size = 0, rotate_interval = 1, max_files = 3 } }, 1))
        helpers.wait_until(function()
            assert.equal(200, chat(gw).status)
            return helpers.read_file(path .. ".1") ~= nil
        end, 10, "no rotation after the interval")
        assert.truthy(#lines(path .. ".1") >= 1)
    end)

    it("delivers every record in order to a collector that fails its first attempts", function()
        local collector = helpers.mock_upstream({ status = 200, body = "ok", fail_first = 3 })
        local gw = helpers.start_gateway(base_config(mock_url, { http = { url = collector.url("/ingest"),
            batch_size = 3, flush_interval = 0.05, backoff = { base = 0.05, max = 0.2 } } }, 1))
        for _ = 1, 10 do assert.equal(200, chat(gw).status) end
        local got = helpers.wait_until(function()
            local recs = {}
            for _, req in ipairs(collector:requests()) do
                recs[#recs + 1] = req
            end
            local ok = {}
            local n = 0
            for i, req in ipairs(recs) do
                if i > 3 then -- the first 3 were refused: their records came again
                    for l in req.body:gmatch("[^\n]+") do
                        n = n + 1
                        ok[n] = cjson.decode(l)
                    end
                end
            end
            return n >= 10 and ok
        end, 10, "records lost")
        assert.equal(10, #got)
        for i = 2, #got do -- one worker: its order is the order of the requests
            assert.truthy(tonumber(got[i].request_id, 16) > tonumber(got[i - 1].request_id, 16))
        end
        assert.equal("application/x-ndjson", collector:requests()[4].headers["content-type"])
        local m = assert(helpers.http("GET", gw.admin_url("/metrics"), { headers = { ["x-api-key"] = gw.admin_key } }))
        assert.equal(200, m.status)
    end)

    it("frames batches in each collector format (json_array, es_bulk, loki), batch_size records at most", function()
        local decode = {
            json_array = function(body) return assert(cjson.decode(body)) end,
            es_bulk = function(body)
                local out, i = {}, 0
                for l in body:gmatch("[^\n]+") do
                    i = i + 1
                    if i % 2 == 1 then assert.equal('{"index":{}}', l) else out[#out + 1] = assert(cjson.decode(l)) end
                end
                assert.equal("\n", body:sub(-1))
                return out
            end,
            loki = function(body)
                local out = {}
                for _, v in ipairs(assert(cjson.decode(body)).streams[1].values) do
                    out[#out + 1] = assert(cjson.decode(v[2]))
                end
                return out
            end,
        }
        for fmt, dec in pairs(decode) do
            local collector = helpers.mock_upstream({ status = 200, body = "ok" })
            local gw = helpers.start_gateway(base_config(mock_url, { http = { url = collector.url("/ingest"),
                format = fmt, batch_size = 2, flush_interval = 0.05 } }, 1))
            for _ = 1, 5 do assert.equal(200, chat(gw).status) end
            local got = helpers.wait_until(function()
                local recs = {}
                for _, req in ipairs(collector:requests()) do
                    local list = dec(req.body)
                    assert.truthy(#list >= 1 and #list <= 2, fmt)
                    for _, r in ipairs(list) do recs[#recs + 1] = r end
                end
                return #recs >= 5 and recs
            end, 10, fmt .. ": records lost")
            assert.equal(5, #got, fmt)
            for i = 1, #got do assert.equal("alice", got[i].consumer, fmt) end
            gw:stop()
            collector:stop()
        end
    end)

    it("drops and counts records past the buffer while the collector is down; requests stay unaffected", function()
        local down = "http://127.0.0.1:" .. helpers.free_port() .. "/ingest" -- nothing listens there
        local cfg = base_config(mock_url, { http = { url = down, batch_size = 2, flush_interval = 0.05,
            max_buffer = 5, timeout = 1, backoff = { base = 0.05, max = 0.1 } } }, 1)
        cfg.global_plugins = { prometheus = {} }
        local gw = helpers.start_gateway(cfg)
        for _ = 1, 20 do assert.equal(200, chat(gw).status) end
        local text = helpers.wait_until(function()
            local res = helpers.http("GET", gw.admin_url("/metrics"), { headers = { ["x-api-key"] = gw.admin_key } })
            return res and res.body:find('sluice_audit_dropped_total{sink="http",reason="buffer_full"}', 1, true)
                and res.body:find('sluice_audit_export_failures_total{sink="http"}', 1, true) and res.body
        end, 5, "drops not counted")
        local n = tonumber(text:match('sluice_audit_dropped_total{sink="http",reason="buffer_full"} (%d+)'))
        assert.truthy(n >= 10, n)
        helpers.wait_until(function() return gw:log():find("buffer full: records dropped", 1, true) end, 5)
    end)
end)

describe("observability plugins' hostile config", function()
    local mock_url
    setup(function() mock_url = start_provider() end)
    teardown(helpers.stop_all)

    it("refuses bad confs of the three plugins with the field named, and keeps the running one", function()
        local dir = helpers.tmpdir()
        local path = dir .. "/audit.log"
        local cfg = base_config(mock_url, { file = { path = path, flush_interval = 0.05 } }, 1)
        cfg.global_plugins = { prometheus = {} }
        local gw = helpers.start_gateway(cfg)
        local bad = {
            { prometheus = { max_consumers = 0 } }, "max_consumers",
            { prometheus = { usage = { bucket = "1s" } } }, "bucket",
            { prometheus = { usage = { node_id = "a b\n" } } }, "node_id",
            { prometheus = { labels = { prompt = "x" } } }, "labels",
            { opentelemetry = { endpoint = "not a url" } }, "endpoint",
            { opentelemetry = { endpoint = "http://127.0.0.1:1/v1/traces", sampling = { ratio = 1.5 } } }, "ratio",
            { opentelemetry = { endpoint = "http://127.0.0.1:1/v1/traces", headers = { ["bad name"] = "x" } } },
            "headers",
            { opentelemetry = { endpoint = "http://127.0.0.1:1/v1/traces", headers = { x = "a\r\nb: c" } } },
            "headers",
            { opentelemetry = { endpoint = "http://127.0.0.1:1/v1/traces", retry = { base = 5, max_delay = 1 } } },
            "max_delay",
            { opentelemetry = { endpoint = "http://127.0.0.1:1/v1/traces", batch = { max_queue = -1 } } }, "max_queue",
            { ["ai-audit-log"] = { file = { path = "" } } }, "path",
            { ["ai-audit-log"] = { file = { path = path, max_size = "lots" } } }, "max_size",
            { ["ai-audit-log"] = { http = { url = "ftp://x/y" } } }, "url",
            { ["ai-audit-log"] = { http = { url = "http://127.0.0.1:1/x", format = "xml" } } }, "format",
            { ["ai-audit-log"] = { http = { url = "http://127.0.0.1:1/x", backoff = { base = 2, max = 1 } } } },
            "backoff",
            { ["ai-audit-log"] = { max_payload = "1g" } }, "max_payload",
        }
        for i = 1, #bad, 2 do
            local res = gw:admin("PUT", "/admin/global_plugins", bad[i])
            assert.equal(400, res.status, helpers.json(bad[i]))
            assert.truthy(res.body:find(bad[i + 1], 1, true), res.body)
        end
        -- the running config is untouched: prometheus still counts, the audit record still written
        assert.equal(200, chat(gw).status)
        helpers.wait_until(function() return #lines(path) == 1 end, 5, "no audit record")
        local res = helpers.http("GET", gw.admin_url("/metrics"), { headers = { ["x-api-key"] = gw.admin_key } })
        assert.truthy(res.body:find('sluice_http_requests_total{route="chat",status_class="2xx"} 1', 1, true),
            res.body)
        assert.same({ prometheus = {} }, gw:admin("GET", "/admin/global_plugins").json.global_plugins)
    end)

    it("keeps serving when the audit file cannot be opened: failures counted and logged, records kept", function()
        local dir = helpers.tmpdir() .. "/later"
        local path = dir .. "/audit.log"
        local cfg = base_config(mock_url, { file = { path = path, flush_interval = 0.05 } }, 1)
        cfg.global_plugins = { prometheus = {} }
        local gw = helpers.start_gateway(cfg)
        for _ = 1, 5 do assert.equal(200, chat(gw).status) end
        helpers.wait_until(function()
            local res = helpers.http("GET", gw.admin_url("/metrics"), { headers = { ["x-api-key"] = gw.admin_key } })
            return res.body:find('sluice_audit_export_failures_total{sink="file"} %d') -- retried every flush
        end, 5, "the failures were not counted")
        helpers.wait_until(function() return gw:log():find(path, 1, true) end, 5, "the open failure was not logged")
        assert.equal(200, chat(gw).status)
        -- the directory appears: the records kept meanwhile are written, in order
        assert(os.execute("mkdir -p " .. helpers.shell_quote(dir)))
        helpers.wait_until(function() return #lines(path) == 6 end, 5, "the kept records were not written")
    end)
end)

describe("ai-audit-log record encoding", function()
    local unit = require("unit_helpers")
    local plugin = unit.load_plugin("ai-audit-log")
    it("writes valid JSON in field order for every value type", function()
        local rec = { time = "2026-12-02T05:00:00.000Z", consumer = 'a"b\\c\n', model = "modèle", status = 200,
                      cost = 5.55e-06, stream = false, estimated = true, guard = { plugin = "g", reason = "x" },
                      attempts = { { target = "t", status = 500 } }, request = "\1\2 ctl" }
        local json
        for _ = 1, 3 do -- short values seen before are looked up in the cache of plain strings
            json = plugin.to_json(rec)
            assert.same(rec, assert(cjson.decode(json), json))
        end
        assert.matches('^{"time":', json)
        assert.truthy(json:find('"consumer":', 1, true) < json:find('"status":', 1, true))
        assert.equal("{}", plugin.to_json({}))
    end)
    it("cuts payloads on a UTF-8 boundary", function()
        local s, cut = plugin.cut("aé", 2) -- é is two bytes: never half of it
        assert.equal("a", s)
        assert.is_true(cut)
        assert.equal("abc", (plugin.cut("abc", 3)))
    end)
    it("assembles the text of OpenAI and Anthropic streams split anywhere", function()
        local stream = 'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\ndata: {"choices":[{"delta":{"content":"lo"}}]}\n\n'
            .. 'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"!"}}\n\n'
            .. "data: [DONE]\n\n"
        for step = 1, 7 do
            local b = { n = 0, size = 0, carry = "" }
            for i = 1, #stream, step do plugin.assemble(b, stream:sub(i, i + step - 1), 100) end
            assert.equal("Hello!", table.concat(b, "", 1, b.n))
        end
    end)
end)
