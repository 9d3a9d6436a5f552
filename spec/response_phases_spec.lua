-- The response contract through the real gateway: every response the gateway sends (proxied, a plugin's
-- `return status, body` or sluice.response.exit, an ai-proxy-multi degradation or static answer, a models list
-- made locally, a gateway error on a matched route, a 404 for no route) runs header_filter, body_filter over
-- its body (one chunk plus eof for a body made in memory), then log. A probe plugin records what it saw in
-- each phase; it runs as a global plugin so every route has it, and a route's own conf of it makes it fail.
local helpers = require("helpers")
local cjson = require("cjson.safe")
local socket = require("socket")

local ROOT = helpers.ROOT

-- header_filter sets x-probe and records the status it saw; body_filter collects the body and whether eof came;
-- log appends one JSON line per request. conf.fail = "header_filter" | "body_filter" makes that phase raise.
local PROBE = [[
local sluice = require("sluice")
local cjson = require("cjson.safe")
return { name = "phase-probe", version = "1", priority = 5, schema = { type = "object" },
  header_filter = function(conf, ctx)
    local p = ctx.probe or {}
    ctx.probe = p
    p.hf = (p.hf or 0) + 1
    p.hf_status = sluice.response.get_status(ctx)
    if conf.fail == "header_filter" then error("probe header_filter failure") end
    sluice.response.set_header("x-probe", "seen", ctx)
  end,
  body_filter = function(conf, ctx, chunk, eof)
    local p = ctx.probe or {}
    ctx.probe = p
    p.chunks = (p.chunks or 0) + 1
    p.body = (p.body or "") .. chunk
    if eof then p.eof = (p.eof or 0) + 1 end
    if conf.fail == "body_filter" and eof then error("probe body_filter failure") end
    if conf.fail == "body_filter_first" then error("probe body_filter failure") end
  end,
  log = function(conf, ctx)
    local p = ctx.probe or {}
    local f = io.open(conf.file, "a")
    f:write(cjson.encode({ path = ctx.path, hf = p.hf or 0, hf_status = p.hf_status, body = p.body,
                           eof = p.eof or 0, chunks = p.chunks or 0,
                           status = sluice.response.get_status(ctx) }) .. "\n")
    f:close()
  end }
]]

-- Ends the request in access: conf.how = "return" (return status, body) or "exit" (sluice.response.exit).
local EXITER = [[
local sluice = require("sluice")
return { name = "exiter", version = "1", priority = 3000, schema = { type = "object" },
  access = function(conf, ctx)
    if conf.how == "exit" then
      return sluice.response.exit(429, { error = { message = "slow down" } }, { ["retry-after"] = "7" })
    elseif conf.how == "crash" then
      error("exiter crashed")
    end
    return 418, "short and stout"
  end }
]]

describe("every response runs header_filter, body_filter and log", function()
    local gw, mock, mock_port, up, rec_file, dead

    local function records()
        local out = {}
        for line in (helpers.read_file(rec_file) or ""):gmatch("[^\n]+") do
            out[#out + 1] = cjson.decode(line)
        end
        return out
    end

    -- one request; waits for its log line (the log phase runs after the response)
    local function req(method, path, opts)
        helpers.write_file(rec_file, "")
        opts = opts or {}
        opts.timeout = opts.timeout or 10
        local res, err = helpers.http(method, gw.url(path), opts)
        assert(res, err)
        local rec = helpers.wait_until(function() local r = records() return #r > 0 and r[#r] end, 5,
            "no log phase for " .. path)
        return res, rec
    end

    local function filtered(res, rec, status)
        assert.equal(status, res.status, res.body)
        assert.equal("seen", res.headers["x-probe"], "header_filter did not run on the " .. status)
        assert.equal(1, rec.hf)
        assert.equal(status, rec.hf_status)
        assert.equal(1, rec.eof, "body_filter did not get eof")
        assert.equal(res.body, rec.body, "body_filter did not see the body sent")
        assert.equal(status, rec.status)
    end

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/phase-probe.lua", PROBE)
        helpers.write_file(dir .. "/exiter.lua", EXITER)
        rec_file = dir .. "/records.jsonl"
        mock_port = helpers.free_port()
        mock = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. mock_port
            .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        up = helpers.mock_upstream({ body = "plain upstream body", headers = { ["content-type"] = "text/plain" } })
        dead = "127.0.0.1:" .. helpers.free_port()
        local probe = { file = rec_file }
        local function probe_with(extra)
            local c = { file = rec_file }
            for k, v in pairs(extra) do c[k] = v end
            return c
        end
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins", dir }, workers = 1 },
            global_plugins = { ["phase-probe"] = probe },
            consumers = { { name = "alice", keys = { "alice-key" } } },
            providers = {
                mockp = { kind = "mock", models = { m = "m" } },
                oac = { kind = "openai-compatible", endpoint = "http://127.0.0.1:" .. mock_port, api_key = "k",
                        models = { gpt = "gpt-4o-mini" } },
                gone = { kind = "openai", endpoint = "http://" .. dead, api_key = "k" },
            },
            routes = {
                { id = "plain", paths = { "/plain" }, upstream = { nodes = { up.addr } } },
                { id = "refused", paths = { "/refused" }, upstream = { nodes = { dead } } },
                { id = "ka", paths = { "/ka/v1/*" },
                  plugins = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "mockp" } } },
                { id = "mock", paths = { "/mock/v1/*" }, plugins = { ["ai-proxy"] = { provider = "mockp" } } },
                { id = "oac", paths = { "/oac/v1/*" }, plugins = { ["ai-proxy"] = { provider = "oac" } } },
                { id = "ret", paths = { "/ret" }, upstream = { nodes = { up.addr } },
                  plugins = { exiter = { how = "return" } } },
                { id = "exit", paths = { "/exit" }, upstream = { nodes = { up.addr } },
                  plugins = { exiter = { how = "exit" } } },
                { id = "crash", paths = { "/crash" }, upstream = { nodes = { up.addr } },
                  plugins = { exiter = { how = "crash" } } },
                { id = "static", paths = { "/static/v1/*" }, plugins = { ["ai-proxy-multi"] = {
                    retries = 0, breaker = { failures = 1000 }, fallback = { response = "We are busy." },
                    targets = { { provider = "gone" } } } } },
                { id = "degrade", paths = { "/degrade/v1/*" }, plugins = { ["ai-proxy-multi"] = {
                    retries = 0, breaker = { failures = 1000 }, targets = { { provider = "gone" } } } } },
                { id = "hf-fail", paths = { "/hf-fail" }, upstream = { nodes = { up.addr } },
                  plugins = { ["phase-probe"] = probe_with({ fail = "header_filter" }) } },
                { id = "hf-fail-exit", paths = { "/hf-fail-exit" }, upstream = { nodes = { up.addr } },
                  plugins = { ["phase-probe"] = probe_with({ fail = "header_filter" }), exiter = { how = "return" } } },
                { id = "hf-fail-refused", paths = { "/hf-fail-refused" }, upstream = { nodes = { dead } },
                  plugins = { ["phase-probe"] = probe_with({ fail = "header_filter" }) } },
                { id = "bf-fail-exit", paths = { "/bf-fail-exit" }, upstream = { nodes = { up.addr } },
                  plugins = { ["phase-probe"] = probe_with({ fail = "body_filter" }), exiter = { how = "return" } } },
                { id = "bf-fail-refused", paths = { "/bf-fail-refused" }, upstream = { nodes = { dead } },
                  plugins = { ["phase-probe"] = probe_with({ fail = "body_filter" }) } },
                { id = "bf-fail-ai", paths = { "/bf-fail-ai/v1/*" },
                  plugins = { ["phase-probe"] = probe_with({ fail = "body_filter_first" }),
                              ["ai-proxy"] = { provider = "mockp" } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("a proxied response (the case that always worked)", function()
        local res, rec = req("GET", "/plain")
        filtered(res, rec, 200)
        assert.equal("plain upstream body", res.body)
    end)

    it("the 401 key-auth returns (return status, body from a plugin)", function()
        local res, rec = req("POST", "/ka/v1/chat/completions", { body = { model = "m", messages = {} } })
        filtered(res, rec, 401)
        assert.equal("invalid_api_key", res.json.error.code)
    end)

    it("a proxied chat completion through key-auth and ai-proxy (mock provider)", function()
        local res, rec = req("POST", "/ka/v1/chat/completions", { headers = { authorization = "Bearer alice-key" },
            body = { model = "m", messages = { { role = "user", content = "hi" } } } })
        filtered(res, rec, 200)
        assert.equal("chat.completion", res.json.object)
    end)

    it("a plugin's return status, body", function()
        local res, rec = req("GET", "/ret")
        filtered(res, rec, 418)
        assert.equal("short and stout", res.body)
    end)

    it("sluice.response.exit with headers", function()
        local res, rec = req("GET", "/exit")
        filtered(res, rec, 429)
        assert.equal("7", res.headers["retry-after"])
        assert.equal("slow down", res.json.error.message)
    end)

    it("the 500 for a plugin that failed in access", function()
        local res, rec = req("GET", "/crash")
        filtered(res, rec, 500)
        assert.truthy(res.json.error.message:find("internal error (id ", 1, true))
    end)

    it("GET /v1/models with the mock provider (answered by the gateway)", function()
        local res, rec = req("GET", "/mock/v1/models")
        filtered(res, rec, 200)
        assert.equal("list", res.json.object)
        assert.equal("m", res.json.data[1].id)
    end)

    it("GET /v1/models with an openai-compatible provider", function()
        local res, rec = req("GET", "/oac/v1/models")
        filtered(res, rec, 200)
        assert.equal("gpt", res.json.data[1].id)
    end)

    it("a chat completion through an openai-compatible provider", function()
        local res, rec = req("POST", "/oac/v1/chat/completions",
            { body = { model = "gpt", messages = { { role = "user", content = "hi" } } } })
        filtered(res, rec, 200)
    end)

    it("the 502 when the upstream refuses the connection", function()
        local res, rec = req("GET", "/refused")
        filtered(res, rec, 502)
        assert.truthy(res.json.error.message:find("upstream", 1, true))
    end)

    it("an ai-proxy-multi static answer, non-streaming and streaming", function()
        local res, rec = req("POST", "/static/v1/chat/completions",
            { body = { model = "x", messages = { { role = "user", content = "hi" } } } })
        filtered(res, rec, 200)
        assert.equal("We are busy.", res.json.choices[1].message.content)
        res, rec = req("POST", "/static/v1/chat/completions",
            { body = { model = "x", stream = true, messages = { { role = "user", content = "hi" } } } })
        filtered(res, rec, 200)
        assert.truthy(res.body:find("We are busy.", 1, true))
    end)

    it("an ai-proxy-multi degradation error (503)", function()
        local res, rec = req("POST", "/degrade/v1/chat/completions",
            { body = { model = "x", messages = { { role = "user", content = "hi" } } } })
        filtered(res, rec, 503)
        assert.truthy(res.headers["retry-after"])
    end)

    it("the 404 of a request that matched no route runs the global plugins", function()
        local res, rec = req("GET", "/nothing/here")
        filtered(res, rec, 404)
        assert.equal("/nothing/here", rec.path)
    end)

    describe("a filter that fails", function()
        local function error_ids(log)
            local ids = {}
            for id in log:gmatch("header_filter failed %(id (%x+)%)") do ids[#ids + 1] = id end
            for id in log:gmatch("body_filter failed %(id (%x+)%)") do ids[#ids + 1] = id end
            return ids
        end

        it("in header_filter of a proxied response: a 500 with an error id, filters not run again", function()
            local res, rec = req("GET", "/hf-fail")
            assert.equal(500, res.status)
            assert.is_nil(res.headers["x-probe"])
            local id = res.json.error.message:match("id (%x+)")
            assert.truthy(id, res.body)
            assert.equal(1, rec.hf, "header_filter ran again on the 500")
            assert.equal(0, rec.eof)
            local log = helpers.wait_until(function() local l = gw:log() return l:find(id, 1, true) and l end, 5,
                "the failure is not logged with the id")
            assert.truthy(log:find("probe header_filter failure", 1, true))
        end)

        it("in header_filter of a plugin's answer: a 500 with an error id", function()
            local res, rec = req("GET", "/hf-fail-exit")
            assert.equal(500, res.status)
            assert.truthy(res.json.error.message:find("id ", 1, true))
            assert.equal(1, rec.hf)
            assert.equal(500, rec.status)
        end)

        it("in header_filter of a gateway error (502): the error goes out as it is, no loop", function()
            local before = #error_ids(gw:log())
            local res, rec = req("GET", "/hf-fail-refused")
            assert.equal(502, res.status)
            assert.truthy(res.json.error.message:find("upstream", 1, true))
            assert.equal(1, rec.hf)
            helpers.wait_until(function() return #error_ids(gw:log()) == before + 1 end, 5,
                "the failure is not logged once with an id")
        end)

        it("in body_filter of a plugin's answer (head not sent yet): a 500 with an error id", function()
            local res, rec = req("GET", "/bf-fail-exit")
            assert.equal(500, res.status)
            assert.truthy(res.json.error.message:find("id ", 1, true))
            assert.equal(1, rec.eof)
        end)

        it("in body_filter of a gateway error: the error goes out as it is", function()
            local res, rec = req("GET", "/bf-fail-refused")
            assert.equal(502, res.status)
            assert.truthy(res.json.error.message:find("upstream", 1, true))
            assert.equal(1, rec.eof)
        end)

        it("in body_filter of a stream after the head went out: the stream is cut, never presented whole", function()
            helpers.write_file(rec_file, "")
            local c = socket.tcp()
            c:settimeout(5)
            assert(c:connect("127.0.0.1", gw.port))
            local body = cjson.encode({ model = "m", stream = true, messages = { { role = "user", content = "hi" } } })
            c:send("POST /bf-fail-ai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
            local data, err, partial = c:receive("*a")
            c:close()
            data = data or partial
            assert.equal("closed", err or "closed")
            assert.truthy(data:find("^HTTP/1.1 200"), data)
            assert.is_nil(data:find("\r\n0\r\n\r\n", 1, true), "a cut stream ended like a complete one:\n" .. data)
            local rec = helpers.wait_until(function() local r = records() return #r > 0 and r[#r] end, 5, "no log")
            assert.equal(1, rec.hf)
            helpers.wait_until(function() return gw:log():find("body_filter failed (id ", 1, true) end, 5,
                "the failure is not logged with the id")
        end)
    end)
end)
