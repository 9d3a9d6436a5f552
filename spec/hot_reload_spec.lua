-- Hot reload of a user Lua plugin through the Admin API while clients keep their connections open:
-- the next request on an open keep-alive connection runs the new code, a request in flight finishes on the old.
local helpers = require("helpers")
local socket = require("socket")

-- v: version tag. The access phase sleeps when the request asks (x-slow), so a reload can happen mid-request;
-- header_filter tags the response, which shows which code finished the request.
local function plugin_source(v)
    return ([[
local sluice = require("sluice")
return {
    name = "reload-me", version = "%s", priority = 500,
    schema = { type = "object", properties = { prefix = { type = "string", default = "p" } } },
    access = function(conf, ctx)
        if sluice.request.get_header("x-slow", ctx) then sluice.sleep(0.6) end
        sluice.request.set_header("x-version", conf.prefix .. "-%s", ctx)
    end,
    header_filter = function(conf, ctx)
        sluice.response.set_header("x-finished-by", "%s", ctx)
    end,
}
]]):format(v, v, v)
end

describe("plugin hot reload (Admin API)", function()
    local mock, gw, dir

    setup(function()
        mock = helpers.mock_upstream() -- echoes the request as JSON
        dir = helpers.tmpdir()
        helpers.write_file(dir .. "/reload-me.lua", plugin_source("v1"))
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", dir } },
            routes = { { id = "r", paths = { "/r/*" }, upstream = { nodes = { mock.addr } },
                         plugins = { ["reload-me"] = { prefix = "conf" } } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- Waits until the (single) worker runs config version v.
    local function applied(v)
        helpers.wait_until(function()
            local s = gw:admin("GET", "/admin/status")
            return s and s.json and s.json.config_version >= v and not s.json.pending_version
        end, 5, "config version " .. v .. " applied")
    end

    local function reload(src, status)
        helpers.write_file(dir .. "/reload-me.lua", src)
        local res = assert(gw:admin("POST", "/admin/plugins/reload"))
        assert.equal(status or 200, res.status, res.body)
        return res
    end

    it("runs the new code on the next request of an open keep-alive connection", function()
        local client = assert(helpers.client(gw.port))
        finally(function() client:close() end)
        local res = assert(client:request("GET", "/r/1"))
        assert.equal(200, res.status)
        assert.equal("conf-v1", res.json.headers["x-version"])
        assert.equal("v1", res.headers["x-finished-by"])
        local conn = res.json.conn

        local r = reload(plugin_source("v2"))
        assert.is_true(r.json.reloaded)
        applied(r.json.version)

        res = assert(client:request("GET", "/r/2")) -- same socket: fails if the gateway had closed it
        assert.equal(200, res.status)
        assert.equal("conf-v2", res.json.headers["x-version"])
        assert.equal("v2", res.headers["x-finished-by"])
        assert.equal(conn, res.json.conn) -- and the upstream connection was kept too
        assert.matches('"version":"v2"', assert(gw:admin("GET", "/admin/plugins")).body, 1, true)
    end)

    it("finishes a request in flight on the old code", function()
        applied(reload(plugin_source("v3")).json.version)
        local slow = socket.tcp()
        slow:settimeout(5)
        assert(slow:connect("127.0.0.1", gw.port))
        finally(function() slow:close() end)
        assert(slow:send("GET /r/slow HTTP/1.1\r\nHost: x\r\nx-slow: 1\r\nConnection: close\r\n\r\n"))
        socket.sleep(0.2) -- the request is now sleeping in v3's access phase

        local r = reload(plugin_source("v4"))
        applied(r.json.version)
        local other = assert(helpers.http("GET", gw.url("/r/fast")))
        assert.equal("v4", other.headers["x-finished-by"])

        local raw = slow:receive("*a")
        assert.matches("HTTP/1.1 200", raw, 1, true)
        assert.matches("x%-finished%-by: v3", raw:lower())
        assert.matches('"x-version":"conf-v3"', raw, 1, true)
    end)

    it("keeps the old code when the new file does not load, on the same connection", function()
        local client = assert(helpers.client(gw.port))
        finally(function() client:close() end)
        applied(reload(plugin_source("v5")).json.version)
        assert.equal("v5", assert(client:request("GET", "/r/a")).headers["x-finished-by"])

        local r = reload("return { name = 'reload-me', priority = ", 422)
        assert.equal(1, #r.json.errors)
        assert.equal("reload-me", r.json.errors[1].plugin)
        assert.is_nil(r.json.version) -- nothing published
        local res = assert(client:request("GET", "/r/b"))
        assert.equal(200, res.status)
        assert.equal("v5", res.headers["x-finished-by"])
    end)
end)
