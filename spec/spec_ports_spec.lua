-- The spec helpers can be told which ports to use: SLUICE_SPEC_PORTS=LOW-HIGH makes the gateway's listeners, the
-- Admin API, mock upstreams and support servers bind in that range (specs beside other services). Checked by
-- running a small spec file under busted with the variable set.
local helpers = require("helpers")

local INNER = [[
local helpers = require("helpers")
local lo, hi = tonumber(os.getenv("SPEC_LO")), tonumber(os.getenv("SPEC_HI"))
local function in_range(p) return p >= lo and p <= hi end

describe("inside a port range", function()
    teardown(function() helpers.stop_all() end)

    it("binds everything in the range", function()
        local mock = helpers.mock_upstream()
        assert(in_range(mock.port), "mock upstream on " .. mock.port)
        local gw = helpers.start_gateway({ routes = { { id = "r", paths = { "/*" }, upstream = { nodes = { mock.addr } } } } })
        assert(in_range(gw.port), "gateway on " .. gw.port)
        assert(in_range(gw.admin_port), "admin on " .. gw.admin_port)
        assert.equal(200, assert(helpers.http("GET", gw.url("/x"))).status)
        local seen = {}
        for _ = 1, 20 do
            local p = helpers.free_port()
            assert(in_range(p), "free_port gave " .. p)
            assert(not seen[p], "port handed out twice: " .. p)
            seen[p] = true
        end
        -- a support server started with spawn() listens on the port it is given
        local dir = helpers.tmpdir()
        local up = helpers.spawn(string.format("node %s %s", helpers.shell_quote(helpers.ROOT .. "/spec/support/bad_upstream.js"),
            helpers.shell_quote(dir .. "/port")))
        local port = helpers.wait_until(function()
            assert(up:alive(), "bad_upstream exited")
            return tonumber(helpers.read_file(dir .. "/port"))
        end, 10, "support server")
        assert(in_range(port), "support server on " .. port)
    end)
end)
]]

describe("spec helpers: SLUICE_SPEC_PORTS", function()
    local dir

    setup(function()
        dir = helpers.tmpdir()
        helpers.write_file(dir .. "/inner_spec.lua", INNER)
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function busted(env)
        return helpers.exec(("cd %s && env %s luajit /usr/bin/busted -o TAP %s"):format(
            helpers.shell_quote(helpers.ROOT), env, helpers.shell_quote(dir .. "/inner_spec.lua")), 120)
    end

    it("keeps the gateway, mocks and support servers in the range", function()
        local lo = 30000 + math.random(0, 20000)
        local hi = lo + 99
        local code, out = busted(("SLUICE_SPEC_PORTS=%d-%d SPEC_LO=%d SPEC_HI=%d"):format(lo, hi, lo, hi))
        assert.equal(0, code, out)
        assert.matches("ok 1 ", out, 1, true)
    end)

    it("refuses a range it cannot read", function()
        local code, out = busted("SLUICE_SPEC_PORTS=9000-8000 SPEC_LO=1 SPEC_HI=2")
        assert.is_not.equal(0, code)
        assert.matches("SLUICE_SPEC_PORTS must look like 20000-20999", out, 1, true)
    end)
end)
