-- A cluster as users run it (docs/cluster.md): three gateway nodes behind nginx (the load balancer), one etcd
-- (the config center) and two memcached servers (shared limits), every part started here on free loopback
-- ports, with a bounded client load through the balancer the whole time (spec/support/load.js). Each scenario
-- reports its failed-request count ("[cluster] ..." lines):
--   a route added through node 1's Admin API serves on nodes 2 and 3 (the time it took is printed);
--   an invalid entry written to etcd by hand is refused by every node, the previous config serves;
--   two admins writing the same route at once: one gets 409;
--   etcd stopped for 10 s then started: no failed request, changes made after it is back are applied;
--   an AI answer cached on one node is a hit on the others (ai-cache, L2 in memcached);
--   one memcached stopped: the limits and the cache go on (fail_mode open; L2 misses), its keys move to the other
--   server, no node dies;
--   the nodes agree (the same etcd revision, the same routes);
--   the nodes list each other (registrations under /sluice/nodes/ with a lease): a node killed with SIGKILL leaves
--   the lists when its lease expires, two nodes with one id are both listed and marked, a lease revoked by hand is
--   granted again, etcd stopped and started: every node registered again;
--   a node SIGTERMed during the load: the balancer's clients see no failed request, and it leaves the others'
--   lists at once (its lease revoked).
-- The scenarios run in order over the same cluster.
local helpers = require("helpers")
local cluster = require("support.cluster")
local cjson = require("cjson.safe")
local socket = require("socket")

local format = string.format

local describe_cluster = cluster.available() and describe or pending

local LIMITED = 8 -- routes with their own memcached-backed limit: their keys spread over both servers
local NODE_TTL = 4 -- seconds: the lease of each node's registration (node.config_center.node_ttl)

describe_cluster("cluster: three nodes, nginx, etcd, two memcached", function()
    local e, mc, mock, gws, lb, load

    local function status(gw)
        local res = assert(gw:admin("GET", "/admin/status"))
        assert.equal(200, res.status, res.body)
        return res.json
    end

    -- The nodes gw lists: id -> entry (an id listed twice: a list of its entries).
    local function listed(gw)
        local out = {}
        for _, n in ipairs(status(gw).cluster.nodes) do
            if out[n.id] then
                out[n.id] = out[n.id][1] and out[n.id] or { out[n.id] }
                table.insert(out[n.id], n)
            else
                out[n.id] = n
            end
        end
        return out
    end

    local function listed_ids(gw)
        local list = {}
        for id in pairs(listed(gw)) do list[#list + 1] = id end
        table.sort(list)
        return table.concat(list, ",")
    end

    local function extra_node(id)
        return helpers.start_gateway({ node = { id = id, workers = 1, config_center = e:center({ node_ttl = NODE_TTL }) } })
    end

    local function serves(url, want)
        local res = helpers.http("GET", url, { timeout = 2 })
        return res ~= nil and res.status == (want or 200)
    end

    local function failed()
        return load:stats().failed or 0
    end

    -- The load's failures during fn, checked to be none (their last errors in the message when there are some).
    local function no_failures(name, fn)
        local before = load:stats()
        fn()
        helpers.sleep(0.3) -- answers to requests sent during fn are counted
        local after = load:stats()
        local n = (after.failed or 0) - (before.failed or 0)
        print(format("[cluster] %s: %d requests through the balancer, %d failed", name,
            (after.sent or 0) - (before.sent or 0), n))
        assert.equal(0, n, cjson.encode(after.errors))
    end

    local function route(path, extra)
        local r = { paths = { path }, upstream = "mock" }
        for k, v in pairs(extra or {}) do r[k] = v end
        return cjson.encode(r)
    end

    -- Route l<i>: requests in flight counted in memcached (its own key, on one of the two servers); a limit no
    -- load here reaches, and served on when memcached does not answer.
    local function limited(i)
        return route("/l" .. i, { plugins = { ["limit-conn"] = { conn = 100000, by = "global", policy = "memcached",
                                                                 fail_mode = "open" } } })
    end

    setup(function()
        e = cluster.etcd()
        mc = { cluster.memcached(), cluster.memcached() }
        mock = helpers.mock_upstream({ body = "ok" })
        e:put("/sluice/upstreams/mock", cjson.encode({ nodes = { mock.addr } }))
        e:put("/sluice/routes/live", route("/live"))
        for i = 1, LIMITED do
            e:put("/sluice/routes/l" .. i, limited(i))
        end
        -- an AI route whose answers are cached, L1 per node and L2 in memcached (shared by the nodes)
        e:put("/sluice/providers/m", cjson.encode({ kind = "mock" }))
        e:put("/sluice/routes/chat", cjson.encode({ paths = { "/v1/*" }, plugins = {
            ["ai-proxy"] = { provider = "m" }, ["ai-cache"] = { scope = "global" } } }))
        gws = {}
        for i = 1, 3 do
            gws[i] = helpers.start_gateway({ node = {
                id = "node" .. i, workers = 2, drain_timeout = 10, shared_dicts = { sluice = "10m", ["ai-cache"] = "4m" },
                config_center = e:center({ node_ttl = NODE_TTL }),
                memcached = { servers = { mc[1].addr, mc[2].addr }, timeout = 0.2, failure_threshold = 3,
                              retry_after = 1 },
            } })
        end
        lb = cluster.nginx(gws)
        local urls = { lb.url("/live") }
        for i = 1, LIMITED do urls[#urls + 1] = lb.url("/l" .. i) end
        load = cluster.load(urls, { concurrency = 4, pause_ms = 5, max_seconds = 300 })
    end)

    teardown(function()
        if load then
            local s = load:stop()
            print(format("[cluster] the whole run: %d requests through the balancer, %d failed", s.sent or 0,
                s.failed or 0))
        end
        helpers.stop_all()
    end)

    it("every node starts from etcd and says so in GET /admin/status", function()
        for i, gw in ipairs(gws) do
            local st = status(gw)
            assert.equal("node" .. i, st.node_id)
            assert.equal("connected", st.config_center.state)
            assert.equal(2, #st.memcached.servers)
            assert.is_true(serves(gw.url("/l1")))
        end
        assert.equal(0, failed(), cjson.encode(load:stats().errors))
    end)

    it("every node lists the three nodes (their registrations in etcd, under /sluice/nodes/)", function()
        for i, gw in ipairs(gws) do
            helpers.wait_until(function() return listed_ids(gw) == "node1,node2,node3" end, 5,
                "node " .. i .. " does not list the three nodes")
            local st = status(gw)
            assert.is_true(st.cluster.registered)
            assert.equal(NODE_TTL, st.cluster.ttl)
            assert.equal("/sluice/nodes/node" .. i, st.cluster.key)
            assert.same({}, st.config_center.refused) -- registrations are not config entries
            local l = listed(gw)
            for j = 1, 3 do
                local n = l["node" .. j]
                assert.equal(st.version, n.version)
                assert.equal(j == i or nil, n.self)
                assert.is_number(n.last_seen)
                assert.is_number(n.revision)
                assert.equal(2, n.memcached.servers)
                assert.same({ "127.0.0.1:" .. gws[j].port }, n.listen)
            end
            assert.equal(st.cluster.lease, l["node" .. i].lease)
        end
        local v = cjson.decode((e:get("/sluice/nodes/node2")))
        assert.equal("node2", v.id)
        assert.equal(gws[2].pid, v.pid)
        assert.equal("127.0.0.1:" .. gws[2].admin_port, v.admin)
        assert.not_matches("/sluice/nodes/[^\n]*refused", gws[1]:log())
    end)

    it("a node killed with SIGKILL leaves the others' lists when its lease expires", function()
        local n4 = extra_node("node4")
        for i, gw in ipairs(gws) do
            helpers.wait_until(function() return listed(gw).node4 ~= nil end, 5, "node " .. i .. " does not list node4")
        end
        n4.proc:signal(9)
        assert.is_true(n4.proc:wait(5))
        local t0 = socket.gettime()
        helpers.wait_until(function() return listed(gws[1]).node4 == nil end, NODE_TTL + 5,
            "node4 is still listed after its lease's TTL")
        local took = socket.gettime() - t0
        for _, gw in ipairs(gws) do
            helpers.wait_until(function() return listed_ids(gw) == "node1,node2,node3" end, 2)
        end
        print(format("[cluster] node4 killed (SIGKILL): gone from node 1's list after %.1f s (node_ttl %d s)", took,
            NODE_TTL))
        assert.is_true(took > NODE_TTL / 3, "gone before its lease could expire")
    end)

    it("two nodes with one id: both are listed and marked, a warning is logged, nothing stops", function()
        local dup = extra_node("node2")
        helpers.wait_until(function()
            local l = listed(gws[1]).node2
            return l[1] ~= nil and #l == 2
        end, 5, "node 1 does not list both nodes with id node2")
        for _, n in ipairs(listed(gws[1]).node2) do assert.is_true(n.conflict) end
        local st = status(dup)
        assert.equal("/sluice/nodes/node2", st.cluster.conflict.key)
        assert.equal(gws[2].pid, st.cluster.conflict.pid)
        assert.matches("^/sluice/nodes/node2@%d+$", st.cluster.key)
        assert.matches("nodes: another node is registered as node2", dup:log())
        helpers.wait_until(function() return status(gws[2]).cluster.conflict ~= nil end, 5)
        assert.matches("nodes: another node registered with this node's id node2", gws[2]:log())
        local v = cjson.decode((e:get("/sluice/nodes/node2"))) -- the first one keeps the key
        assert.equal(gws[2].pid, v.pid)
        assert.is_true(dup:stop(10))
        for i, gw in ipairs(gws) do
            assert.is_true(gw.proc:alive())
            helpers.wait_until(function()
                local n = listed(gw).node2
                return n.id == "node2" and not n.conflict
            end, 3, "node " .. i .. " still lists two nodes with id node2")
        end
    end)

    it("a node whose lease is revoked by hand registers again with a new one", function()
        local old = status(gws[2]).cluster.lease
        assert.matches("^%d+$", old)
        local r = assert(e:call("/v3/lease/revoke", { ID = old }))
        assert.is_nil(r.error, cjson.encode(r))
        helpers.wait_until(function()
            local n = listed(gws[1]).node2
            return n and n.lease and n.lease ~= old
        end, 5, "node2 did not register again")
        assert.matches("nodes: the lease of this node's registration is gone", gws[2]:log())
        assert.equal(listed(gws[1]).node2.lease, status(gws[2]).cluster.lease)
    end)

    local function chat(gw, text)
        return helpers.http("POST", gw.url("/v1/chat/completions"), { timeout = 10, body = {
            model = "demo", temperature = 0, messages = { { role = "user", content = text } } } })
    end

    it("an answer cached on one node is a hit on the others (L2 in memcached)", function()
        local first = chat(gws[1], "shared answer")
        assert.equal(200, first.status, first.body)
        assert.equal("MISS", first.headers["x-sluice-cache"])
        -- stored in the log phase, after the answer: the other nodes hit once it is in memcached
        for i = 2, 3 do
            helpers.wait_until(function()
                local r = chat(gws[i], "shared answer")
                return r and r.status == 200 and r.headers["x-sluice-cache"] == "HIT"
            end, 5, "node " .. i .. " does not hit the answer cached by node 1")
        end
    end)

    it("a route added through node 1's Admin API serves on nodes 2 and 3", function()
        no_failures("route added on node 1", function()
            local t0 = socket.gettime()
            local res = gws[1]:admin("PUT", "/admin/routes/added", { paths = { "/added" }, upstream = "mock" })
            assert.equal(201, res.status, res.body)
            assert.is_true(serves(gws[1].url("/added"))) -- the writer answers once it runs it
            local took = {}
            for i = 2, 3 do
                helpers.wait_until(function() return serves(gws[i].url("/added")) end, 5,
                    "node " .. i .. " does not serve the new route")
                took[i] = socket.gettime() - t0
            end
            print(format("[cluster] route added on node 1: served by node 2 after %.0f ms, node 3 after %.0f ms "
                .. "(from the PUT)", took[2] * 1000, took[3] * 1000))
        end)
    end)

    it("an invalid entry written to etcd by hand is refused by every node; the previous config serves", function()
        no_failures("invalid entries in etcd", function()
            e:put("/sluice/routes/live", cjson.encode({ paths = { "no-slash" }, upstream = "mock" }))
            e:put("/sluice/routes/junk", "{not json")
            local rev = e:put("/sluice/routes/l1", route("/l1", { plugins = { ["limit-conn"] = { conn = -1 } } }))
            for i, gw in ipairs(gws) do
                helpers.wait_until(function() return status(gw).config_center.revision >= rev end, 5,
                    "node " .. i .. " did not see the change")
                local refused = {}
                for _, r in ipairs(status(gw).config_center.refused) do refused[r.key] = r.error end
                assert.matches("paths", refused["/sluice/routes/live"])
                assert.matches("not a JSON object", refused["/sluice/routes/junk"])
                assert.matches("conn", refused["/sluice/routes/l1"])
                assert.matches("config center: /sluice/routes/live %(etcd revision %d+%) refused", gw:log())
                assert.is_true(serves(gw.url("/live")))
                assert.is_true(serves(gw.url("/l1")))
            end
            -- put right again
            e:put("/sluice/routes/live", route("/live"))
            e:del("/sluice/routes/junk")
            rev = e:put("/sluice/routes/l1", limited(1))
            for _, gw in ipairs(gws) do
                helpers.wait_until(function()
                    local st = status(gw).config_center
                    return st.revision >= rev and #st.refused == 0
                end, 5, "refusals not cleared")
            end
        end)
    end)

    it("two admins writing the same route at once: one gets 409", function()
        local got = gws[1]:admin("GET", "/admin/routes/added")
        assert.equal(200, got.status, got.body)
        local rev = got.json.revision
        -- both read revision rev, both write at the same moment (on two nodes), each based on it
        local dir = helpers.tmpdir()
        local cmds = {}
        for i = 1, 2 do
            cmds[i] = format("curl -s -o %s -w '%%{http_code}' -X PUT -H 'x-api-key: %s' -H 'if-match: %d' "
                .. "-H 'content-type: application/json' -d %s %s > %s", helpers.shell_quote(dir .. "/body" .. i),
                gws[i].admin_key, rev, helpers.shell_quote(cjson.encode({ paths = { "/added", "/by" .. i },
                upstream = "mock" })), helpers.shell_quote(gws[i].admin_url("/admin/routes/added")),
                helpers.shell_quote(dir .. "/code" .. i))
        end
        local code = helpers.exec(format("(%s) & (%s) & wait", cmds[1], cmds[2]), 20)
        assert.equal(0, code)
        local codes = { helpers.read_file(dir .. "/code1"), helpers.read_file(dir .. "/code2") }
        table.sort(codes)
        assert.same({ "200", "409" }, codes)
        local loser = helpers.read_file(dir .. "/code1") == "409" and 1 or 2
        local body = cjson.decode(helpers.read_file(dir .. "/body" .. loser))
        assert.matches("changed by another writer", body.error.message)
        -- without If-Match, a write is based on the revision the node saw: a node that has not seen the
        -- winner's write yet cannot overwrite it either (etcd compares), and once it has, it may
        local winner = 3 - loser
        for _, gw in ipairs(gws) do
            helpers.wait_until(function() return serves(gw.url("/by" .. winner)) end, 5)
        end
        print(format("[cluster] two admins writing route \"added\" at once (If-Match %d): %s", rev,
            table.concat(codes, " and ")))
    end)

    it("etcd stopped for 10 s then started: no failed request, later changes applied on every node", function()
        no_failures("etcd down for 10 s", function()
            e:stop()
            for i, gw in ipairs(gws) do
                helpers.wait_until(function() return status(gw).config_center.state == "unreachable" end, 10,
                    "node " .. i .. " does not say etcd is unreachable")
            end
            local res = gws[2]:admin("PUT", "/admin/routes/while-down", { paths = { "/while-down" }, upstream = "mock" })
            assert.equal(503, res.status, res.body)
            helpers.sleep(10)
            for _, gw in ipairs(gws) do assert.is_true(serves(gw.url("/live"))) end
            e:start()
            for i, gw in ipairs(gws) do
                helpers.wait_until(function() return status(gw).config_center.state == "connected" end, 15,
                    "node " .. i .. " did not reconnect")
            end
            for i, gw in ipairs(gws) do -- and registered: every node lists the three again, from etcd
                helpers.wait_until(function()
                    local c = status(gw).cluster
                    return c.registered and not c.stale and listed_ids(gw) == "node1,node2,node3"
                end, 10, "node " .. i .. " does not list the three nodes after etcd came back")
            end
            res = gws[3]:admin("PUT", "/admin/routes/after", { paths = { "/after" }, upstream = "mock" })
            assert.equal(201, res.status, res.body)
            for i, gw in ipairs(gws) do
                helpers.wait_until(function() return serves(gw.url("/after")) end, 5,
                    "node " .. i .. " did not apply a change made after etcd came back")
            end
        end)
    end)

    it("one memcached stopped: limits and cache go on, its keys move to the other server, no node dies", function()
        local direct, direct_failed = 0, 0
        -- the balancer may send a node only some of the routes (its round robin in step with the load's): every
        -- key from this node, directly
        local asked = 0
        local function touch(gw)
            for r = 1, LIMITED do
                local res = helpers.http("GET", gw.url("/l" .. r), { timeout = 2 })
                direct = direct + 1
                if not (res and res.status == 200) then direct_failed = direct_failed + 1 end
            end
            for _ = 1, 4 do -- cached answers: keys on both servers; a miss in memcached is answered anyway
                asked = asked + 1
                local res = chat(gw, "question " .. asked)
                direct = direct + 1
                if not (res and res.status == 200) then direct_failed = direct_failed + 1 end
            end
        end
        no_failures("one memcached stopped", function()
            mc[2]:stop()
            -- every node finds server 2 down (its keys' calls fail, then its circuit opens)
            for i, gw in ipairs(gws) do
                local seen = pcall(helpers.wait_until, function()
                    touch(gw)
                    for _, s in ipairs(status(gw).memcached.servers) do
                        if s.address == mc[2].addr then return s.state ~= "up" end
                    end
                end, 10)
                assert(seen, "node " .. i .. " does not see memcached 2 down: " .. cjson.encode(status(gw).memcached))
                assert.equal("degraded", status(gw).memcached.circuit)
                assert.is_true(gw.proc:alive())
            end
            -- the limited routes go on (the keys of server 2 counted on server 1: spec/memcached_spec.lua checks where)
            for i = 1, LIMITED do
                local res = helpers.http("GET", lb.url("/l" .. i))
                assert.equal(200, res.status)
            end
            mc[2]:start()
            for i, gw in ipairs(gws) do
                helpers.wait_until(function()
                    touch(gw)
                    return status(gw).memcached.circuit == "closed"
                end, 10, "node " .. i .. ": memcached 2 not back")
            end
            print(format("[cluster] one memcached stopped: %d requests sent to the nodes directly, %d failed", direct,
                direct_failed))
            assert.equal(0, direct_failed)
        end)
    end)

    it("the nodes agree: the same etcd revision, the same routes", function()
        local function view(gw)
            local ids = {}
            for _, r in ipairs(gw:admin("GET", "/admin/routes").json.list) do ids[#ids + 1] = r.id end
            table.sort(ids)
            return { revision = status(gw).config_center.revision, routes = table.concat(ids, ",") }
        end
        helpers.wait_until(function()
            local a, b, c = view(gws[1]), view(gws[2]), view(gws[3])
            return a.revision == b.revision and b.revision == c.revision and a.routes == b.routes
                and b.routes == c.routes
        end, 5, "the nodes do not agree")
        local v = view(gws[1])
        assert.matches("added", v.routes)
        assert.matches("after", v.routes)
        print(format("[cluster] the three nodes agree: etcd revision %d, routes %s", v.revision, v.routes))
    end)

    it("a node SIGTERMed during the load: no failed request, it leaves the others' lists at once", function()
        no_failures("node 3 SIGTERMed", function()
            helpers.sleep(0.5)
            local t0 = socket.gettime()
            gws[3].proc:signal(15)
            -- its lease is revoked as it starts draining: gone well before the lease could expire
            helpers.wait_until(function() return listed_ids(gws[1]) == "node1,node2" end, NODE_TTL / 2,
                "node 3 is still listed by node 1")
            local took = socket.gettime() - t0
            assert.is_true(gws[3].proc:wait(15))
            helpers.wait_until(function() return listed_ids(gws[2]) == "node1,node2" end, 1)
            print(format("[cluster] node 3 SIGTERMed: gone from node 1's list after %.0f ms (node_ttl %d s)",
                took * 1000, NODE_TTL))
            assert.matches("nodes: left the cluster's list", gws[3]:log())
            helpers.sleep(1)
            assert.is_true(gws[1].proc:alive() and gws[2].proc:alive())
        end)
    end)
end)
