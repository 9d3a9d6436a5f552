-- The plugin pipeline through the real gateway: per-route enabling, order by priority, early exit, a plugin
-- error answered with 500 while the worker lives on, header_filter/body_filter/log phases, global plugins.
local helpers = require("helpers")

describe("plugin pipeline", function()
    local mock, gw
    local fixtures = helpers.ROOT .. "/spec/fixtures/plugins"

    setup(function()
        mock = helpers.mock_upstream()
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", fixtures } },
            upstreams = { up = { nodes = { mock.addr } } },
            routes = {
                { id = "plain", paths = { "/plain/*" }, upstream = "up" },
                { id = "gated", paths = { "/gated/*" }, upstream = "up",
                  plugins = { ["spec-gate"] = { header = "x-block" }, ["spec-tagger"] = { tag = "g" } } },
                { id = "upper", paths = { "/upper/*" }, upstream = "up",
                  plugins = { ["spec-tagger"] = { tag = "u", upper = true } } },
                { id = "reordered", paths = { "/reordered/*" }, upstream = "up",
                  plugins = { ["spec-gate"] = { header = "x-block", _meta = { priority = 10 } },
                              ["spec-tagger"] = { tag = "r" } } },
                { id = "off", paths = { "/off/*" }, upstream = "up",
                  plugins = { ["spec-tagger"] = { _meta = { disable = true } } } },
            },
            global_plugins = { ["spec-tagger"] = { tag = "global" } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("runs only the plugins a route enables (plus global ones)", function()
        local res = helpers.http("GET", gw.url("/plain/x"))
        assert.equal(200, res.status)
        local seen = mock:last()
        assert.equal("global", seen.headers["x-tag"])
        assert.equal("global", res.headers["x-tagged"])
        res = helpers.http("GET", gw.url("/gated/x"))
        assert.equal(200, res.status)
        assert.equal("g", mock:last().headers["x-tag"], "a route's conf replaces the global one")
    end)

    it("orders plugins by priority, and a route can override it", function()
        helpers.http("GET", gw.url("/gated/x"))
        assert.equal("gate,tagger,", mock:last().headers["x-gate-order"])
        helpers.http("GET", gw.url("/reordered/x"))
        assert.equal("tagger,gate,", mock:last().headers["x-gate-order"])
    end)

    it("disables a plugin on a route with _meta.disable", function()
        helpers.http("GET", gw.url("/off/x"))
        assert.is_nil(mock:last().headers["x-tag"])
    end)

    it("ends the request early from access without calling the upstream", function()
        local before = #mock:requests()
        local res = helpers.http("GET", gw.url("/gated/x"), { headers = { ["x-block"] = "1" } })
        assert.equal(403, res.status)
        assert.equal("blocked by spec-gate", res.json.error.message)
        assert.equal(before, #mock:requests())
    end)

    it("answers 500 with an error id when a plugin throws, and the worker keeps serving", function()
        local res = helpers.http("GET", gw.url("/gated/x"), { headers = { ["x-throw"] = "1" } })
        assert.equal(500, res.status)
        local id = res.json.error.message:match("id (%x+)")
        assert.truthy(id, res.body)
        helpers.wait_until(function() return gw:log():find("spec-tagger was asked to throw", 1, true) end, 5)
        assert.truthy(gw:log():find(id, 1, true), "the log names the error id")
        assert.equal(200, helpers.http("GET", gw.url("/gated/x")).status)
    end)

    it("runs header_filter and body_filter on the response", function()
        local res = helpers.http("GET", gw.url("/upper/hello"))
        assert.equal(200, res.status)
        assert.equal("u", res.headers["x-tagged"])
        assert.truthy(res.body:find("/UPPER/HELLO", 1, true), res.body)
    end)

    it("runs the log phase after each response", function()
        local c = helpers.client(gw.port)
        local first = tonumber((c:request("GET", "/upper/a") and mock:last()).headers["x-logged"])
        for _ = 1, 3 do
            assert.equal(200, c:request("GET", "/upper/b").status)
        end
        c:close()
        -- each finished request counted once in the shared dict, seen by the next request's access phase
        helpers.wait_until(function()
            helpers.http("GET", gw.url("/upper/c"))
            return tonumber(mock:last().headers["x-logged"]) >= first + 4
        end, 5)
    end)
end)
