-- Config errors and reloads with the real binary: `sluice -t`, a bad config at start, SIGHUP.
local helpers = require("helpers")

local GOOD = [[
node:
  listen: ["127.0.0.1:${SLUICE_PORT}"]
  workers: 2
  admin: {listen: "127.0.0.1:${SLUICE_ADMIN_PORT}", key: "${SLUICE_ADMIN_KEY}"}
  plugin_paths: ["${SLUICE_HOME}/plugins"]
upstreams:
  up: {nodes: ["${SPEC_UPSTREAM}"]}
routes:
  - id: one
    paths: ["/one"]
    upstream: up
]]

-- Line numbers below are part of the expectations.
local BAD = [[
node:
  listen: ["127.0.0.1:8080"]
  workers: 0
routes:
  - id: r1
    paths: ["no-slash"]
  - id: r2
    paths: ["/r2"]
    upstream: missing
]]

describe("config checks", function()
    local dir

    setup(function()
        dir = helpers.tmpdir()
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function sluice(args, env)
        return helpers.exec(("env SLUICE_HOME=%s %s %s %s"):format(helpers.shell_quote(helpers.ROOT), env or "",
            helpers.shell_quote(helpers.BIN), args), 15)
    end

    it("sluice -t prints every error with file:line and exits non-zero", function()
        local file = helpers.write_file(dir .. "/bad.yaml", BAD)
        local code, out = sluice("-t -c " .. file)
        assert.is_not.equal(0, code)
        assert.matches(file .. ":3: node.workers: ", out, 1, true)
        assert.matches(file .. ":6: routes[1].paths[1]: ", out, 1, true)
        assert.matches(file .. ":9: routes[2].upstream: unknown upstream \"missing\"", out, 1, true)
    end)

    it("sluice -t reports a YAML syntax error with its line", function()
        local file = helpers.write_file(dir .. "/syntax.yaml", "node:\n  listen: [\"127.0.0.1:8080\"\nroutes: []\n")
        local code, out = sluice("-t -c " .. file)
        assert.is_not.equal(0, code)
        assert.matches(file:gsub("%p", "%%%0") .. ":3", out)
    end)

    it("sluice -t accepts a good config and exits 0", function()
        local file = helpers.write_file(dir .. "/good.yaml", GOOD)
        local code, out = sluice("-t -c " .. file, "SLUICE_PORT=1 SLUICE_ADMIN_PORT=2 SLUICE_ADMIN_KEY=0123456789 SPEC_UPSTREAM=127.0.0.1:3")
        assert.equal(0, code, out)
    end)

    it("refuses to start with a bad config, printing the error", function()
        local file = helpers.write_file(dir .. "/bad2.yaml", BAD)
        local code, out = sluice("-c " .. file)
        assert.is_not.equal(0, code)
        assert.is_not.equal(124, code) -- did not hang until the timeout
        assert.matches(file .. ":3: node.workers: ", out, 1, true)
    end)

    it("refuses to start when a required ${ENV} is unset", function()
        local file = helpers.write_file(dir .. "/env.yaml", GOOD)
        local code, out = sluice("-t -c " .. file, "SLUICE_PORT=1 SLUICE_ADMIN_PORT=2 SLUICE_ADMIN_KEY=0123456789")
        assert.is_not.equal(0, code)
        assert.matches("SPEC_UPSTREAM", out, 1, true)
    end)
end)

describe("SIGHUP", function()
    local mock, gw

    setup(function()
        mock = helpers.mock_upstream()
        gw = helpers.start_gateway(GOOD, { env = { SPEC_UPSTREAM = mock.addr } })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function status_of(path)
        local res = helpers.http("GET", gw.url(path))
        return res and res.status
    end

    it("serves the file's config", function()
        assert.equal(200, status_of("/one"))
        assert.equal("/one", mock:last().path)
    end)

    it("keeps the old config when the new file is broken, and logs why", function()
        helpers.write_file(gw.file, GOOD .. "  - id: two\n    paths: [\"/two\"]\n    upstream: nowhere\n")
        gw:reload()
        helpers.wait_until(function() return gw:log():find("nowhere", 1, true) end, 5, "rejection logged")
        assert.matches("unknown upstream \"nowhere\"", gw:log(), 1, true)
        assert.equal(200, status_of("/one"))
        assert.equal(404, status_of("/two"))
    end)

    it("keeps the old config when the file is not even YAML", function()
        helpers.write_file(gw.file, "routes: [\n")
        local before = #gw:log()
        gw:reload()
        helpers.wait_until(function() return #gw:log() > before end, 5, "rejection logged")
        assert.equal(200, status_of("/one"))
    end)

    it("applies a fixed file, without dropping keep-alive connections", function()
        local c = assert(helpers.client(gw.port))
        assert.equal(200, assert(c:request("GET", "/one")).status)
        helpers.write_file(gw.file, GOOD .. "  - id: two\n    paths: [\"/two\"]\n    upstream: up\n")
        gw:reload()
        helpers.wait_until(function() return status_of("/two") == 200 end, 5, "new route served")
        local res = assert(c:request("GET", "/two")) -- same connection as before the reload
        assert.equal(200, res.status)
        assert.equal("/two", mock:last().path)
        c:close()
        assert.equal(200, status_of("/one"))
    end)
end)
