-- limit-conn: config, and requests in flight per key on one node: the limit holds under concurrency, every way
-- a request ends gives its slot back (answered, refused, upstream failure, the client leaving mid-request).
local unit = require("unit_helpers")
local helpers = require("helpers")
local cjson = require("cjson.safe")
local socket = require("socket")

local BURST = helpers.ROOT .. "/spec/support/burst.js"

describe("limit-conn", function()
    local plugin = unit.load_plugin("limit-conn")

    it("validates its config", function()
        local conf = assert(unit.validate(plugin, { conn = 2 }))
        assert.same({ "Concurrent", 429, 3600, "consumer" }, { conf.name, conf.status, conf.ttl, conf.by })
        assert.is_nil((unit.validate(plugin, { conn = 0 })))
        assert.is_nil((unit.validate(plugin, {})))
    end)

    describe("through the gateway", function()
        local gw, slow

        local function burst(n, c, path)
            local spec = { urls = { gw.url(path or "/slow/x") }, n = n, concurrency = c, method = "POST", body = {},
                           headers = { authorization = "Bearer ka" } }
            local code, out = helpers.exec("node " .. helpers.shell_quote(BURST) .. " " .. helpers.shell_quote(cjson.encode(spec)), 60)
            assert.equal(0, code, out)
            return cjson.decode(out)
        end

        setup(function()
            slow = helpers.mock_upstream({ body = { ok = true }, delay = 0.8 })
            gw = helpers.start_gateway({
                consumers = { { name = "a", keys = { "ka" } } },
                routes = {
                    { id = "slow", paths = { "/slow/*" }, upstream = { nodes = { slow.addr } }, plugins = {
                        ["key-auth"] = {}, ["limit-conn"] = { conn = 2 } } },
                    { id = "down", paths = { "/down/*" }, upstream = { nodes = { "127.0.0.1:" .. helpers.free_port() } },
                      plugins = { ["key-auth"] = {}, ["limit-conn"] = { conn = 1 } } },
                },
            })
        end)

        teardown(helpers.stop_all)

        it("serves `conn` at once and refuses the rest, then has every slot back", function()
            local r = burst(6, 6)
            assert.equal(2, r.by_status["200"], cjson.encode(r.by_status))
            assert.equal(4, r.by_status["429"])
            local s = r.samples["429"]
            assert.equal("1", s.headers["retry-after"])
            assert.equal("0", s.headers["x-ratelimit-remaining-concurrent"])
            assert.equal("2", s.headers["x-ratelimit-limit-concurrent"])
            r = burst(2, 2)
            assert.equal(2, r.by_status["200"], cjson.encode(r.by_status))
        end)

        it("gives the slot back when the upstream fails", function()
            -- the slot is given back in the log phase, just after the response went out: the next request may
            -- come a moment before it
            for _ = 1, 3 do
                helpers.wait_until(function()
                    local res = assert(helpers.http("POST", gw.url("/down/x"), { headers = { authorization = "Bearer ka" }, body = {} }))
                    assert(res.status == 502 or res.status == 429, res.status)
                    return res.status == 502
                end, 5, "the slot came back")
            end
        end)

        it("gives the slot back when the client leaves mid-request", function()
            for _ = 1, 3 do
                local c = socket.tcp()
                c:settimeout(2)
                assert(c:connect("127.0.0.1", gw.port))
                c:send("POST /slow/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ka\r\nContent-Length: 2\r\n\r\n{}")
                socket.sleep(0.1)
                c:close()
            end
            helpers.wait_until(function()
                local r = burst(2, 2)
                return r.by_status["200"] == 2
            end, 10, "the slots of the clients that left came back")
        end)
    end)
end)
