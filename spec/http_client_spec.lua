-- sluice.http against a server that misbehaves on purpose (spec/support/bad_upstream.js), through the real
-- gateway: a test plugin (spec/fixtures/http_plugins/http-probe.lua) makes the calls and answers with what it saw.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local function start_bad()
    local dir = helpers.tmpdir()
    local proc = helpers.spawn(string.format("node %s %s >%s 2>&1",
        helpers.shell_quote(helpers.ROOT .. "/spec/support/bad_upstream.js"), helpers.shell_quote(dir .. "/port"),
        helpers.shell_quote(dir .. "/out.log")))
    local port = helpers.wait_until(function() return tonumber(helpers.read_file(dir .. "/port")) end, 10,
        "bad upstream did not start")
    return { proc = proc, port = port, url = function(p) return "http://127.0.0.1:" .. port .. p end }
end

describe("sluice.http", function()
    local gw, bad

    local function probe(target, mode, extra)
        local h = { ["x-target"] = target, ["x-mode"] = mode or "buffer" }
        for k, v in pairs(extra or {}) do h[k] = v end
        local res = assert(helpers.http("GET", gw.url("/probe"), { headers = h, timeout = 15 }))
        assert.equal(200, res.status, res.body)
        return assert(cjson.decode(res.body))
    end

    setup(function()
        bad = start_bad()
        gw = helpers.start_gateway({
            node = { workers = 1, shared_dicts = { probe = "1m" },
                     plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/http_plugins" } },
            routes = { { id = "probe", paths = { "/probe" }, plugins = { ["http-probe"] = {} } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("gets a response with a length, and reuses the connection", function()
        local a = probe(bad.url("/ok"))
        assert.equal(200, a.status)
        local b = probe(bad.url("/ok"))
        assert.equal(200, b.status)
        assert.is_true(b.reused)
        assert.equal(cjson.decode(a.body).conn, cjson.decode(b.body).conn)
        assert.equal(2, cjson.decode(b.body).n)
    end)

    it("reads chunked bodies and repeated headers", function()
        local r = probe(bad.url("/chunked"))
        assert.equal("hello world", r.body)
        assert.same({ "a", "b" }, r.headers["x-multi"])
    end)

    it("reads a body delimited by the end of the connection", function()
        local r = probe(bad.url("/close"))
        assert.equal("until the end", r.body, cjson.encode(r))
    end)

    it("sends method, headers and body", function()
        local r = probe(bad.url("/echo"), "buffer", { ["x-method"] = "PUT", ["x-body"] = "payload" })
        local e = cjson.decode(r.body)
        assert.equal("PUT", e.method)
        assert.equal("payload", e.body)
        assert.equal("7", e.headers["content-length"])
        assert.equal("1", e.headers["x-probe"])
        assert.equal("127.0.0.1:" .. bad.port, e.headers.host)
    end)

    it("classifies a refused connection", function()
        local r = probe("http://127.0.0.1:" .. helpers.free_port() .. "/")
        assert.equal("connect", r.err)
    end)

    it("classifies an unknown host", function()
        local r = probe("http://no-such-host.invalid/")
        assert.equal("dns", r.err)
    end)

    it("classifies a reset in the middle of the body", function()
        assert.equal("reset", probe(bad.url("/reset")).err)
    end)

    it("classifies a slow first byte as a timeout", function()
        local r = probe(bad.url("/slow"), "buffer", { ["x-timeout"] = "0.5" })
        assert.equal("timeout", r.err)
    end)

    it("classifies a slow body as a timeout", function()
        assert.equal("timeout", probe(bad.url("/slowbody"), "buffer", { ["x-timeout"] = "0.5" }).err)
    end)

    it("classifies a truncated chunked body", function()
        assert.equal("reset", probe(bad.url("/truncated")).err)
    end)

    it("classifies an invalid status line", function()
        assert.equal("bad_response", probe(bad.url("/badstatus")).err)
    end)

    it("classifies huge response headers", function()
        local r = probe(bad.url("/hugeheaders"))
        assert.equal("bad_response", r.err)
        assert.matches("headers larger", r.detail)
    end)

    it("rejects a URL it cannot use", function()
        assert.equal("invalid_url", probe("ftp://example.com/").err)
    end)

    it("streams a body to a callback in bounded pieces", function()
        local r = probe(bad.url("/big?n=5000000"), "stream", { ["x-timeout"] = "10" })
        assert.equal(200, r.status)
        assert.equal(5000000, r.bytes)
        assert.is_true(r.chunks > 1)
        assert.is_true(r.max_chunk <= 512 * 1024, "chunk of " .. r.max_chunk)
    end)

    it("runs requests concurrently with multi, results in order", function()
        local r = probe(table.concat({ bad.url("/slowbody"), bad.url("/ok"), bad.url("/chunked"),
            "http://127.0.0.1:" .. helpers.free_port() .. "/" }, ","), "multi", { ["x-timeout"] = "1" })
        assert.equal("timeout", r.results[1].err)
        assert.equal(200, r.results[2].status)
        assert.equal("hello world", r.results[3].body)
        assert.equal("connect", r.results[4].err)
        assert.is_true(r.elapsed < 1.8, "took " .. r.elapsed) -- one timeout, not a sum
    end)

    it("works from a timer", function()
        local r = probe(bad.url("/ok"), "timer")
        assert.equal(200, r.status, cjson.encode(r))
    end)

    it("works from the log phase, after the response", function()
        assert.is_true(probe(bad.url("/ok"), "log").queued)
        -- the log phase stores what it got in a shared dict
        helpers.wait_until(function()
            return probe("", "read-log").log_result == "status 200"
        end, 3, "log phase request")
    end)
end)
