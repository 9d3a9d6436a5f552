-- The state file under faults: only a missing file means "no Admin API changes yet". A state file that exists
-- but cannot be read stops the start (and `-t`) with an error naming it, and a SIGHUP with it is rejected (the
-- running config stays); a change that cannot be persisted is a 500 that applies nothing and leaves the old
-- file as it was. Afterwards the gateway serves the previous config.
-- (As root, mode 000 is still readable: the unreadable file here is a directory, or a path through a file.)
local helpers = require("helpers")

local function sluice(args)
    return helpers.exec(("env SLUICE_HOME=%s %s %s"):format(helpers.shell_quote(helpers.ROOT),
        helpers.shell_quote(helpers.BIN), args), 15)
end

describe("state file faults", function()
    local mock

    setup(function()
        mock = helpers.mock_upstream()
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function config()
        return { node = { workers = 1 }, routes = { { id = "yaml", paths = { "/yaml" }, upstream = { nodes = { mock.addr } } },
                                                      { id = "doomed", paths = { "/doomed" }, upstream = { nodes = { mock.addr } } } } }
    end

    local function eventually(gw, path, status)
        return helpers.wait_until(function()
            local res = helpers.http("GET", gw.url(path))
            return res and res.status == status
        end, 5, "GET " .. path .. " -> " .. status)
    end

    -- A gateway with one route added and one deleted through the Admin API (both persisted).
    local function with_changes()
        local gw = helpers.start_gateway(config())
        assert.equal(201, assert(gw:admin("PUT", "/admin/routes/api", { paths = { "/api" }, upstream = { nodes = { mock.addr } } })).status)
        assert.equal(200, assert(gw:admin("DELETE", "/admin/routes/doomed")).status)
        eventually(gw, "/api", 200)
        eventually(gw, "/doomed", 404)
        return gw, gw.dir .. "/sluice.yaml.state.json"
    end

    it("refuses to start (and -t refuses) when the state file is a directory, naming it", function()
        local gw, state = with_changes()
        gw:stop()
        local saved = assert(helpers.read_file(state))
        os.rename(state, state .. ".saved")
        assert(helpers.exec("mkdir " .. helpers.shell_quote(state)) == 0)
        local code, out = sluice("-t -c " .. helpers.shell_quote(gw.file))
        assert.is_not.equal(0, code)
        assert.matches(state .. ": cannot read the state file: Is a directory", out, 1, true)
        assert.has_error(function() gw:restart({ timeout = 3 }) end)
        assert.matches(state .. ": cannot read the state file", gw:log(), 1, true)
        -- with the file back, the API changes are all there again
        assert(helpers.exec("rmdir " .. helpers.shell_quote(state)) == 0)
        os.rename(state .. ".saved", state)
        local gw2 = gw:restart()
        eventually(gw2, "/api", 200)
        eventually(gw2, "/doomed", 404)
        assert.equal(saved, helpers.read_file(state))
        gw2:stop()
    end)

    it("refuses to start when the state file path goes through a regular file (ENOTDIR)", function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/notadir", "x")
        local cfg = config()
        cfg.node.state_file = dir .. "/notadir/state.json"
        local code, out = sluice("-t -c " .. helpers.shell_quote(helpers.write_file(dir .. "/s.yaml", helpers.json(cfg))))
        assert.is_not.equal(0, code)
        assert.matches(dir .. "/notadir/state.json: cannot read the state file: Not a directory", out, 1, true)
    end)

    it("rejects a SIGHUP reload while the state file is unreadable, and keeps serving the running config", function()
        local gw, state = with_changes()
        os.rename(state, state .. ".saved")
        assert(helpers.exec("mkdir " .. helpers.shell_quote(state)) == 0)
        gw:reload()
        helpers.wait_until(function() return gw:log():find("config rejected, the running one stays", 1, true) end, 5,
            "reload rejected")
        assert.matches(state .. ": cannot read the state file", gw:log(), 1, true)
        eventually(gw, "/api", 200)
        eventually(gw, "/doomed", 404)
        eventually(gw, "/yaml", 200)
        -- and Admin API writes are refused too (500, nothing applied): the file cannot be read to add to it
        local res = assert(gw:admin("PUT", "/admin/routes/more", { paths = { "/more" }, upstream = { nodes = { mock.addr } } }))
        assert.equal(500, res.status, res.body)
        assert.matches("nothing applied", res.json.error.message, 1, true)
        res = assert(gw:admin("DELETE", "/admin/routes/api"))
        assert.equal(500, res.status, res.body)
        eventually(gw, "/api", 200)
        assert.equal(404, assert(helpers.http("GET", gw.url("/more"))).status)
        assert.equal(404, assert(gw:admin("GET", "/admin/routes/more")).status)
        assert(helpers.exec("rmdir " .. helpers.shell_quote(state)) == 0)
        os.rename(state .. ".saved", state)
        gw:stop()
    end)

    it("answers 500 for a change it cannot write, leaves the file and the running config as they were", function()
        local gw, state = with_changes()
        local before = assert(helpers.read_file(state))
        -- the temp file the atomic write needs cannot be created
        assert(helpers.exec("mkdir " .. helpers.shell_quote(state .. ".tmp")) == 0)
        local res = assert(gw:admin("PUT", "/admin/routes/more", { paths = { "/more" }, upstream = { nodes = { mock.addr } } }))
        assert.equal(500, res.status, res.body)
        assert.matches("cannot persist the change, nothing applied", res.json.error.message, 1, true)
        assert.matches(state .. ".tmp", res.json.error.message, 1, true)
        res = assert(gw:admin("DELETE", "/admin/routes/api"))
        assert.equal(500, res.status, res.body)
        assert.equal(before, helpers.read_file(state))
        assert.equal(404, assert(gw:admin("GET", "/admin/routes/more")).status)
        assert.equal(404, assert(helpers.http("GET", gw.url("/more"))).status)
        eventually(gw, "/api", 200)
        -- once it can write again, changes go through and build on what was there
        assert(helpers.exec("rmdir " .. helpers.shell_quote(state .. ".tmp")) == 0)
        assert.equal(201, assert(gw:admin("PUT", "/admin/routes/more", { paths = { "/more" }, upstream = { nodes = { mock.addr } } })).status)
        eventually(gw, "/more", 200)
        gw:stop()
        local gw2 = gw:restart()
        eventually(gw2, "/more", 200)
        eventually(gw2, "/api", 200)
        eventually(gw2, "/doomed", 404)
        gw2:stop()
    end)

    it("refuses a change when the state file it wrote was removed behind its back (earlier changes would be lost)", function()
        local gw, state = with_changes()
        local saved = assert(helpers.read_file(state))
        os.remove(state)
        local res = assert(gw:admin("PUT", "/admin/routes/more", { paths = { "/more" }, upstream = { nodes = { mock.addr } } }))
        assert.equal(500, res.status, res.body)
        assert.matches("state file written by this gateway is gone", res.json.error.message, 1, true)
        assert.is_nil(helpers.read_file(state))
        eventually(gw, "/api", 200)
        assert.equal(404, assert(helpers.http("GET", gw.url("/more"))).status)
        -- restored, changes go through again
        helpers.write_file(state, saved)
        assert.equal(201, assert(gw:admin("PUT", "/admin/routes/more", { paths = { "/more" }, upstream = { nodes = { mock.addr } } })).status)
        assert.matches('"api"', helpers.read_file(state), 1, true)
        gw:stop()
    end)
end)

-- The same with a real permission error: the gateway runs as nobody (setpriv), the state file is mode 000.
local setpriv = io.open("/usr/bin/setpriv") and helpers.exec("id -u") == 0 and (helpers.exec("id -u nobody") == 0)
local describe_nobody = setpriv and describe or pending

describe_nobody("state file faults as an unprivileged user", function()
    teardown(function()
        helpers.stop_all()
    end)

    it("refuses to start on a mode 000 state file (EACCES), starts once it is readable", function()
        local mock = helpers.mock_upstream()
        local dir = helpers.tmpdir()
        local state = dir .. "/sluice.yaml.state.json"
        helpers.write_file(dir .. "/access.log", "")
        helpers.write_file(state, '{"version":1,"routes":{"api":{"paths":["/api"],"upstream":{"nodes":["' .. mock.addr .. '"]}}}}')
        assert(helpers.exec(("chmod 0777 %s && chmod 0666 %s && chmod 0000 %s && chown nobody %s"):format(
            helpers.shell_quote(dir), helpers.shell_quote(dir .. "/access.log"), helpers.shell_quote(state),
            helpers.shell_quote(state))) == 0)
        local cfg = { node = { workers = 1 }, routes = { { id = "yaml", paths = { "/yaml" }, upstream = { nodes = { mock.addr } } } } }
        local wrap = "setpriv --reuid=nobody --regid=nogroup --clear-groups"
        assert.has_error(function() helpers.start_gateway(cfg, { dir = dir, wrap = wrap, timeout = 3 }) end)
        local log = helpers.read_file(dir .. "/error.log") or ""
        assert.matches(state .. ": cannot read the state file: Permission denied", log, 1, true)
        assert(helpers.exec("chmod 0600 " .. helpers.shell_quote(state)) == 0)
        local gw = helpers.start_gateway(cfg, { dir = dir, wrap = wrap })
        assert.equal(200, assert(helpers.http("GET", gw.url("/api"))).status)
        -- a write as nobody works (temp file in the same directory, renamed over)
        assert.equal(201, assert(gw:admin("PUT", "/admin/routes/more", { paths = { "/more" }, upstream = { nodes = { mock.addr } } })).status)
        assert.matches('"more"', helpers.read_file(state), 1, true)
        -- a directory it may not write to: the change is refused (500), the file and the running config stay
        local before = helpers.read_file(state)
        assert(helpers.exec("chmod 0555 " .. helpers.shell_quote(dir)) == 0)
        local res = assert(gw:admin("PUT", "/admin/routes/denied", { paths = { "/denied" }, upstream = { nodes = { mock.addr } } }))
        assert.equal(500, res.status, res.body)
        assert.matches(state .. ".tmp: cannot create: Permission denied", res.json.error.message, 1, true)
        assert.equal(before, helpers.read_file(state))
        assert.equal(404, assert(gw:admin("GET", "/admin/routes/denied")).status)
        assert.equal(404, assert(helpers.http("GET", gw.url("/denied"))).status)
        assert.equal(200, assert(helpers.http("GET", gw.url("/more"))).status)
        assert(helpers.exec("chmod 0777 " .. helpers.shell_quote(dir)) == 0)
        gw:stop()
    end)
end)
