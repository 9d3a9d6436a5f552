-- Routes that run no Lua (core/upstream/fastpath.c, lua/sluice/fastpath.lua): a route without plugin phases
-- and a plain upstream is proxied by C. The same routes with a plugin go through Lua (sluice.proxy); both must
-- send the upstream the same request and give the client the same answers. A global plugin takes every route
-- off the C path (it must run on every response), and giving it back restores it.
local helpers = require("helpers")

describe("routes that run no Lua", function()
    local gw, mock, mock2, dead, logfile

    setup(function()
        mock = helpers.mock_upstream()
        mock2 = helpers.mock_upstream()
        dead = "127.0.0.1:" .. helpers.free_port() -- nothing listens there
        local function routes(prefix, plugins)
            return {
                { id = prefix .. "strip", paths = { "/" .. prefix .. "/strip/*" }, strip_prefix = true,
                  upstream = { nodes = { mock.addr } }, plugins = plugins },
                { id = prefix .. "node", paths = { "/" .. prefix .. "/node/*" },
                  upstream = { nodes = { mock.addr }, pass_host = "node" }, plugins = plugins },
                { id = prefix .. "rewrite", paths = { "/" .. prefix .. "/rewrite/*" },
                  upstream = { nodes = { mock.addr }, pass_host = "rewrite", host = "api.example.com" },
                  plugins = plugins },
                { id = prefix .. "weights", paths = { "/" .. prefix .. "/weights/*" },
                  upstream = { nodes = { [mock.addr] = 3, [mock2.addr] = 1 } }, plugins = plugins },
                { id = prefix .. "zero", paths = { "/" .. prefix .. "/zero/*" },
                  upstream = { nodes = { [mock.addr] = 0 } }, plugins = plugins },
                { id = prefix .. "dead", paths = { "/" .. prefix .. "/dead/*" },
                  upstream = { nodes = { dead }, timeout = { connect = 1 } }, plugins = plugins },
            }
        end
        local all = routes("c", nil)
        for _, r in ipairs(routes("l", { ["spec-tagger"] = {} })) do all[#all + 1] = r end
        logfile = helpers.tmpdir() .. "/access.log"
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/plugins" },
                     access_log = { path = logfile, fields = { "path", "status", "route", "upstream_status" } } },
            routes = all,
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- What the upstream got for path, through the C route (c) and the Lua route (l).
    local function both(path, opts)
        local out = {}
        for _, k in ipairs({ "c", "l" }) do
            mock:clear()
            local res = assert(helpers.http(opts and opts.method or "GET", gw.url("/" .. k .. path), opts))
            out[k] = { res = res, up = mock:last() }
        end
        return out.c, out.l
    end

    it("send the upstream the same request line, Host and headers as the Lua path", function()
        for _, path in ipairs({ "/strip/a/b?x=1&y=%20", "/node/x", "/rewrite/x?q", "/strip/" }) do
            local c, l = both(path, { headers = { ["x-client"] = "1", connection = "keep-alive" } })
            assert.equal(200, c.res.status, path)
            assert.equal(200, l.res.status, path)
            local cp, lp = c.up.path, l.up.path:gsub("^/l/", "/c/")
            assert.equal(lp, cp, path)
            assert.equal(l.up.headers.host, c.up.headers.host, path)
            assert.equal("1", c.up.headers["x-client"])
            assert.equal(l.up.headers["x-forwarded-for"], c.up.headers["x-forwarded-for"])
            assert.is_nil(c.up.headers.connection and c.up.headers.connection:lower():find("keep-alive", 1, true)
                and nil)
        end
        local c = both("/strip/a/b?x=1")
        assert.equal("/a/b?x=1", c.up.path)
        c = both("/rewrite/x")
        assert.equal("api.example.com", c.up.headers.host)
        c = both("/node/x")
        assert.equal(mock.addr, c.up.headers.host)
    end)

    it("forward request bodies the same way", function()
        local body = string.rep("b", 200 * 1024) -- over the body buffer: streamed upstream as it arrives
        for _, b in ipairs({ "small body", body }) do
            local c, l = both("/strip/upload", { method = "POST", body = b })
            assert.equal(200, c.res.status)
            assert.equal(#b, #c.up.body)
            assert.equal(l.up.body, c.up.body)
        end
    end)

    it("spread over weighted nodes as the Lua path does", function()
        for _, k in ipairs({ "c", "l" }) do
            mock:clear()
            mock2:clear()
            for _ = 1, 8 do
                assert.equal(200, assert(helpers.http("GET", gw.url("/" .. k .. "/weights/x"))).status)
            end
            assert.equal(6, #mock:requests(), k)
            assert.equal(2, #mock2:requests(), k)
        end
    end)

    it("answer the same errors", function()
        for _, p in ipairs({ "/zero/x", "/dead/x" }) do
            local c, l = both(p)
            assert.equal(l.res.status, c.res.status, p)
            assert.equal(l.res.json.error.message, c.res.json.error.message, p)
            assert.equal(l.res.headers.connection, c.res.headers.connection, p)
        end
        assert.equal(503, (both("/zero/x")).res.status)
        assert.equal(502, (both("/dead/x")).res.status)
    end)

    it("are logged like the others", function()
        assert.equal(200, assert(helpers.http("GET", gw.url("/c/strip/logged"))).status)
        local line = helpers.wait_until(function()
            local log = helpers.read_file(logfile) or ""
            return log:match('[^\n]*"/c/strip/logged"[^\n]*')
        end, 5, "no access log line")
        assert.matches('"route":"cstrip"', line, 1, true)
        assert.matches('"status":200', line, 1, true)
        assert.matches('"upstream_status":200', line, 1, true)
    end)

    local function c_routes()
        local ids = {}
        for _, id in ipairs(gw:admin("GET", "/admin/status").json.c_routes or {}) do ids[#ids + 1] = id end
        table.sort(ids)
        return table.concat(ids, ",")
    end

    it("are the plugin-less routes with an upstream (GET /admin/status: c_routes)", function()
        assert.equal("cdead,cnode,crewrite,cstrip,cweights,czero", c_routes())
    end)

    it("go through Lua while a global plugin has phases, and back to C without it", function()
        local res = assert(helpers.http("GET", gw.url("/c/strip/x")))
        assert.is_nil(res.headers["x-tagged"])
        assert.equal(200, gw:admin("PUT", "/admin/global_plugins", { ["spec-tagger"] = { tag = "g" } }).status)
        helpers.wait_until(function()
            return assert(helpers.http("GET", gw.url("/c/strip/x"))).headers["x-tagged"] == "g"
        end, 5, "the global plugin does not run on the plugin-less route")
        assert.equal("", c_routes())
        assert.equal(200, gw:admin("PUT", "/admin/global_plugins", {}).status)
        helpers.wait_until(function()
            return assert(helpers.http("GET", gw.url("/c/strip/x"))).headers["x-tagged"] == nil
        end, 5, "the global plugin still runs")
        assert.equal("cdead,cnode,crewrite,cstrip,cweights,czero", c_routes())
    end)
end)
