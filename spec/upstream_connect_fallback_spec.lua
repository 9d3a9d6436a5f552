-- A connection to a name tries the name's next address when one refuses (core/upstream/connect.c), for
-- sluice.http and for route upstreams alike, within the one connect timeout.
--
-- The gateway runs in its own mount namespace (unshare -m) over an /etc/hosts of our own, where a name has
-- several loopback addresses and only 127.0.0.1 has a listener: [::1] and 127.0.0.2 refuse. This machine's
-- "localhost" has only 127.0.0.1, so it could not show a fallback. The error log proves the fallback
-- happened: "connect to [::1]:P failed ...; trying the next address" before the answer; and as the refusing
-- addresses go last in the DNS cache for a while, each is tried at most once, whatever getaddrinfo's order.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local q = helpers.shell_quote

local HOSTS = [[
127.0.0.1 localhost
::1 multi.test
127.0.0.2 multi.test
127.0.0.1 multi.test
::1 route.test
127.0.0.2 route.test
127.0.0.1 route.test
::1 dead.test
127.0.0.2 dead.test
]]

local function count(s, needle)
    local n, at = 0, 1
    while true do
        local i = s:find(needle, at, true)
        if not i then return n end
        n, at = n + 1, i + #needle
    end
end

describe("upstream connect over several addresses", function()
    local dir, hosts, wrap, up, gw, dead_port

    -- `unshare -m` + a bind mount need root (CI and the dev machines run as root)
    local function namespace_works()
        dir = helpers.tmpdir()
        hosts = helpers.write_file(dir .. "/hosts", HOSTS)
        wrap = "unshare -m sh -c " .. q("mount --bind " .. q(hosts) .. " /etc/hosts && exec \"$@\"") .. " sh"
        local code, out = helpers.exec(wrap .. " getent ahosts multi.test", 10)
        return code == 0 and out:find("127.0.0.2", 1, true) and out:find("::1", 1, true), out
    end

    local ok, why = namespace_works()
    if not ok then
        helpers.stop_all() -- removes the temp dir
        pending("needs unshare -m and mount (root): " .. tostring(why))
        return
    end

    setup(function()
        up = helpers.mock_upstream()
        dead_port = helpers.free_port()
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/http_plugins" } },
            routes = {
                { id = "call", paths = { "/call" }, plugins = { ["http-call"] = {} } },
                { id = "r", paths = { "/r/*" }, upstream = { nodes = { "route.test:" .. up.port }, keepalive = { size = 0 } } },
            },
        }, { wrap = wrap, env = { http_proxy = "", HTTP_PROXY = "" } })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function call(list)
        local res = assert(helpers.http("POST", gw.url("/call"), { body = list, timeout = 30 }))
        assert.equal(200, res.status, res.body)
        return res.json.results
    end

    it("sluice.http reaches the one address that listens, each refusing one tried at most once", function()
        local list = {}
        for i = 1, 6 do -- a fresh connection each: round robin starts at each address in turn
            list[i] = { url = "http://multi.test:" .. up.port .. "/m" .. i, keepalive = { size = 0 } }
        end
        local r = call(list)
        for i = 1, 6 do
            assert.equal(200, r[i].status, cjson.encode(r[i]))
            assert.is_false(r[i].reused)
        end
        assert.equal(6, #up:requests())
        local log = gw:log()
        local p = up.port
        local tried = count(log, "upstream multi.test:" .. p .. ": connect to ")
        assert.is_true(tried >= 1, "no fallback in the log:\n" .. log)
        assert.is_true(tried <= 2, log)
        assert.is_true(count(log, "connect to [::1]:" .. p .. " failed: connection refused; trying the next address") <= 1, log)
        assert.is_true(count(log, "connect to 127.0.0.2:" .. p .. " failed: connection refused; trying the next address") <= 1, log)
        assert.equal(0, count(log, "connect to 127.0.0.1:" .. p .. " failed"))
    end)

    it("a route upstream by name falls back the same way", function()
        up:clear()
        for i = 1, 4 do
            local res = assert(helpers.http("GET", gw.url("/r/" .. i)))
            assert.equal(200, res.status, res.body)
        end
        assert.equal(4, #up:requests())
        local log = gw:log()
        local tried = count(log, "upstream route.test:" .. up.port .. ": connect to ")
        assert.is_true(tried >= 1 and tried <= 2, log)
    end)

    it("fails with connect once every address refused, within the connect timeout", function()
        local t0 = os.time()
        local r = call({ { url = "http://dead.test:" .. dead_port .. "/", timeouts = { connect = 3 } } })[1]
        assert.equal("connect", r.err, cjson.encode(r))
        assert.matches("connect to dead.test:" .. dead_port .. " (2 addresses tried, last ", r.detail, 1, true)
        assert.matches("connection refused", r.detail, 1, true)
        assert.is_true(os.time() - t0 <= 2)
        assert.equal(1, count(gw:log(), "upstream dead.test:" .. dead_port .. ": connect to "))
    end)
end)
