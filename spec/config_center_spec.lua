-- The config center (docs/cluster.md) against a real etcd (Debian's etcd-server) started here: entities loaded from
-- etcd and watched, Admin API writes as transactions on the entity's revision, invalid entries refused with the last
-- good config serving, etcd down (serving, status, 503 on writes, resync), start from the local snapshot or refusal
-- to start, a compacted revision, SIGHUP, `sluice etcd import`, TLS with client certificates, etcd users.
local helpers = require("helpers")
local cluster = require("support.cluster")
local cjson = require("cjson.safe")

local format = string.format

local describe_etcd = cluster.available() and describe or pending

describe_etcd("config center (etcd)", function()
    local e, mock

    -- A node: config_center over etcd (or extra.center), plugin paths as usual, its own dir.
    local function node_conf(extra)
        extra = extra or {}
        local node = { id = extra.id or "n1", workers = extra.workers or 2,
                       config_center = extra.center or e:center(extra.center_extra) }
        if extra.log_level then node.log_level = extra.log_level end
        return { node = node }
    end

    local function start(extra, opts)
        return helpers.start_gateway(node_conf(extra), opts)
    end

    local function status(gw)
        local res = assert(gw:admin("GET", "/admin/status"))
        assert.equal(200, res.status, res.body)
        return res.json
    end

    local function serves(gw, path, want)
        local res = helpers.http("GET", gw.url(path), { timeout = 2 })
        return res and res.status == (want or 200)
    end

    local function route(id, path, upstream)
        return cjson.encode({ paths = { path }, upstream = upstream or "mock" })
    end

    local function import(gw_file, text, args, env)
        local dir = helpers.tmpdir()
        local f = helpers.write_file(dir .. "/import.yaml", text)
        return helpers.exec(format("env %sSLUICE_HOME=%s %s -c %s etcd import %s%s", env and (env .. " ") or "",
            helpers.shell_quote(helpers.ROOT),
            helpers.shell_quote(helpers.BIN), helpers.shell_quote(gw_file), args and (args .. " ") or "",
            helpers.shell_quote(f)))
    end

    setup(function()
        e = cluster.etcd()
        mock = helpers.mock_upstream({ body = "ok" })
        e:put("/sluice/upstreams/mock", cjson.encode({ nodes = { mock.addr } }))
        e:put("/sluice/routes/a", route("a", "/a"))
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("loads entities from etcd and applies each change to every worker", function()
        local gw = start()
        assert.is_true(serves(gw, "/a"))
        local st = status(gw)
        assert.equal("etcd", st.config_center.kind)
        assert.equal("connected", st.config_center.state)
        assert.equal("etcd", st.config_center.started_from)
        assert.equal("n1", st.node_id)
        local rev = e:put("/sluice/routes/b", route("b", "/b"))
        helpers.wait_until(function() return serves(gw, "/b") end, 5, "route b not served")
        st = status(gw)
        assert.is_true(st.config_center.revision >= rev)
        for _, w in ipairs(st.worker_status) do -- every worker runs it
            assert.equal(st.config_version, w.config_version)
        end
        e:del("/sluice/routes/b")
        helpers.wait_until(function() return serves(gw, "/b", 404) end, 5, "route b still served")
        gw:stop()
    end)

    it("writes Admin API changes to etcd in a transaction on the entity's revision (409 when it moved)", function()
        local gw = start()
        local res = gw:admin("PUT", "/admin/routes/c", { paths = { "/c" }, upstream = "mock" })
        assert.equal(201, res.status, res.body)
        local rev = res.json.revision
        assert.is_number(rev)
        assert.is_number(res.json.version)
        assert.is_true(serves(gw, "/c")) -- the writer runs it when it answers (its own watch brought it back)
        local v, mod = e:get("/sluice/routes/c")
        assert.equal(rev, mod)
        assert.same({ "/c" }, cjson.decode(v).paths)
        assert.equal(rev, gw:admin("GET", "/admin/routes/c").json.revision)
        -- someone else changes it: a write based on the old revision is refused
        local rev2 = e:put("/sluice/routes/c", route("c", "/c2"))
        helpers.wait_until(function() return serves(gw, "/c2") end, 5)
        res = gw:admin("PUT", "/admin/routes/c", { paths = { "/c3" }, upstream = "mock" }, { ["if-match"] = tostring(rev) })
        assert.equal(409, res.status, res.body)
        assert.equal(rev2, res.json.revision)
        assert.matches("changed by another writer", res.json.error.message)
        assert.equal(400, gw:admin("PUT", "/admin/routes/c", { paths = { "/c3" } }, { ["if-match"] = "x" }).status)
        res = gw:admin("DELETE", "/admin/routes/c", nil, { ["if-match"] = '"' .. rev2 .. '"' })
        assert.equal(200, res.status, res.body)
        assert.is_nil((e:get("/sluice/routes/c")))
        assert.is_true(serves(gw, "/c2", 404))
        -- global plugins are one key
        res = gw:admin("PUT", "/admin/global_plugins", {})
        assert.equal(200, res.status, res.body)
        assert.equal("{}", (e:get("/sluice/global_plugins")))
        -- a generated consumer key: answered once, etcd gets its digest only
        res = gw:admin("POST", "/admin/consumers/carol/keys")
        assert.equal(201, res.status, res.body)
        local key = res.json.key
        assert.is_string(key)
        local stored = assert(e:get("/sluice/consumers/carol"))
        assert.is_nil(stored:find(key, 1, true))
        assert.matches("sha256:", stored)
        assert.equal(200, gw:admin("DELETE", "/admin/consumers/carol").status)
        gw:stop()
    end)

    it("refuses invalid entries written to etcd by hand; the last good config keeps serving", function()
        local gw = start()
        local good = e:put("/sluice/routes/d", route("d", "/d"))
        helpers.wait_until(function() return serves(gw, "/d") end, 5)
        e:put("/sluice/routes/d", cjson.encode({ paths = { "no-slash" }, upstream = "mock" })) -- a bad new version
        e:put("/sluice/routes/e", "{not json")
        e:put("/sluice/routes/f", route("f", "/f", "nowhere")) -- names an upstream that does not exist
        local last = e:del("/sluice/upstreams/mock") -- still used by every route
        helpers.wait_until(function() return status(gw).config_center.revision >= last end, 5)
        local refused = {}
        for _, r in ipairs(status(gw).config_center.refused) do refused[r.key] = r end
        assert.matches("paths%[1%]", refused["/sluice/routes/d"].error)
        assert.matches("not a JSON object", refused["/sluice/routes/e"].error)
        assert.matches('unknown upstream "nowhere"', refused["/sluice/routes/f"].error)
        assert.is_true(refused["/sluice/upstreams/mock"].deleted)
        assert.is_true(serves(gw, "/d")) -- the last good version of d, over the upstream etcd no longer has
        assert.is_true(serves(gw, "/a"))
        assert.is_true(serves(gw, "/f", 404))
        local log = gw:log()
        assert.matches("config center: /sluice/routes/d %(etcd revision %d+%) refused, the running config keeps", log)
        assert.matches("config center: the deletion of /sluice/upstreams/mock refused", log)
        assert.equal(good, gw:admin("GET", "/admin/routes/d").json.revision)
        -- the missing upstream appears: f is served now; fixing d and e clears their refusals
        e:put("/sluice/upstreams/nowhere", cjson.encode({ nodes = { mock.addr } }))
        helpers.wait_until(function() return serves(gw, "/f") end, 5, "f not served once its upstream exists")
        e:put("/sluice/upstreams/mock", cjson.encode({ nodes = { mock.addr } }))
        e:put("/sluice/routes/d", route("d", "/d"))
        local rev = e:del("/sluice/routes/e")
        helpers.wait_until(function() return status(gw).config_center.revision >= rev end, 5)
        assert.same({}, status(gw).config_center.refused)
        gw:stop()
    end)

    it("serves the last config while etcd is down, says so, refuses writes, and resyncs when it is back", function()
        local gw = start()
        assert.is_true(serves(gw, "/a"))
        e:stop()
        helpers.wait_until(function() return status(gw).config_center.state == "unreachable" end, 5)
        local st = status(gw).config_center
        assert.is_string(st.last_error)
        for _ = 1, 20 do assert.is_true(serves(gw, "/a")) end
        local res = gw:admin("PUT", "/admin/routes/g", { paths = { "/g" }, upstream = "mock" })
        assert.equal(503, res.status, res.body)
        assert.matches("nothing changed", res.json.error.message)
        e:start()
        helpers.wait_until(function() return status(gw).config_center.state == "connected" end, 10, "not back")
        e:put("/sluice/routes/g", route("g", "/g"))
        helpers.wait_until(function() return serves(gw, "/g") end, 5, "a change after etcd came back not applied")
        assert.matches("etcd unreachable", gw:log())
        e:del("/sluice/routes/g")
        gw:stop()
    end)

    it("starts from its local snapshot while etcd is down, and refuses to start without one", function()
        local gw = start()
        e:put("/sluice/routes/h", route("h", "/h"))
        helpers.wait_until(function() return serves(gw, "/h") end, 5)
        gw:stop()
        assert.is_truthy(helpers.read_file(gw.file .. ".etcd.json"))
        e:stop()
        local gw2 = gw:restart()
        assert.is_true(serves(gw2, "/h"))
        local st = status(gw2).config_center
        assert.equal("snapshot", st.started_from)
        assert.equal("unreachable", st.state)
        assert.matches("starting from the local snapshot", gw2:log())
        -- a node that never saw etcd has nothing to start from
        local ok, err = pcall(start, { id = "fresh" })
        assert.is_false(ok)
        assert.matches("etcd is unreachable .* and there is no snapshot of an earlier config", err)
        e:start()
        e:put("/sluice/routes/h2", route("h2", "/h2"))
        helpers.wait_until(function() return serves(gw2, "/h2") end, 10, "no resync after etcd came back")
        assert.equal("connected", status(gw2).config_center.state)
        gw2:stop()
    end)

    it("goes on to the next endpoint when one does not answer", function()
        local dead = "http://127.0.0.1:" .. helpers.free_port()
        local gw = start({ id = "eps", center = e:center({ endpoints = { dead, e.url } }) })
        assert.is_true(serves(gw, "/a"))
        local st = status(gw).config_center
        assert.equal("connected", st.state)
        assert.equal(e.url, st.endpoint)
        local res = gw:admin("PUT", "/admin/routes/ep", { paths = { "/ep" }, upstream = "mock" })
        assert.equal(201, res.status, res.body)
        e:put("/sluice/routes/ep2", route("ep2", "/ep2"))
        helpers.wait_until(function() return serves(gw, "/ep2") end, 5)
        e:del("/sluice/routes/ep")
        e:del("/sluice/routes/ep2")
        gw:stop()
    end)

    it("answers 504 when etcd takes a write and never answers, and says it does not know the outcome", function()
        local proxy = cluster.tcp_proxy(e.port)
        local gw = start({ id = "hold", center = { kind = "etcd", endpoints = { "http://127.0.0.1:" .. proxy.port },
                                                   timeout = "1s", watch_timeout = "2s" } })
        assert.is_true(serves(gw, "/a"))
        proxy:hold_all()
        local res = gw:admin("PUT", "/admin/routes/held", { paths = { "/held" }, upstream = "mock" })
        assert.equal(504, res.status, res.body)
        assert.matches("it may or may not have been made", res.json.error.message)
        assert.is_true(serves(gw, "/a")) -- the running config serves on
        helpers.wait_until(function() return status(gw).config_center.state == "unreachable" end, 10)
        proxy:close_frozen()
        helpers.wait_until(function() return status(gw).config_center.state == "connected" end, 10, "not back")
        res = gw:admin("PUT", "/admin/routes/held", { paths = { "/held" }, upstream = "mock" })
        -- 202 when its watch, opened again just now, brings it back after the 1 s this node waits
        assert.is_truthy(res.status == 201 or res.status == 202, res.body)
        helpers.wait_until(function() return serves(gw, "/held") end, 5)
        e:del("/sluice/routes/held")
        gw:stop()
        proxy:stop()
    end)

    it("reads everything again after a compacted revision", function()
        local proxy = cluster.tcp_proxy(e.port)
        local gw = start({ center = { kind = "etcd", endpoints = { "http://127.0.0.1:" .. proxy.port },
                                      timeout = "2s", watch_timeout = "1s" } })
        assert.is_true(serves(gw, "/a"))
        proxy:freeze() -- the watch goes quiet without closing: it ends at its 1 s deadline and is opened again
        e:put("/sluice/routes/i", route("i", "/i"))
        local rev = e:put("/sluice/routes/j", route("j", "/j"))
        assert(e:compact(rev))
        helpers.wait_until(function() return serves(gw, "/j") and serves(gw, "/i") end, 10, "not resynced")
        assert.matches("was compacted", gw:log())
        proxy:close_frozen()
        gw:stop()
    end)

    it("keeps etcd's entities over a SIGHUP of the node settings", function()
        local gw = start({ log_level = "info" })
        e:put("/sluice/routes/k", route("k", "/k"))
        helpers.wait_until(function() return serves(gw, "/k") end, 5)
        local conf = node_conf({ log_level = "debug" })
        conf.node.listen, conf.node.admin = { "127.0.0.1:" .. gw.port },
            { listen = "127.0.0.1:" .. gw.admin_port, key = gw.admin_key }
        conf.node.plugin_paths, conf.node.access_log = { helpers.ROOT .. "/plugins" }, { path = gw.dir .. "/access.log" }
        helpers.write_file(gw.file, helpers.json(conf))
        local before = status(gw).config_version
        gw:reload()
        helpers.wait_until(function() return status(gw).config_version > before end, 5)
        assert.is_true(serves(gw, "/k"))
        e:put("/sluice/routes/k2", route("k2", "/k2"))
        helpers.wait_until(function() return serves(gw, "/k2") end, 5)
        assert.is_true(serves(gw, "/k"))
        -- another config center, or none, needs a restart: the reload is refused, nothing changes
        for _, cc in ipairs({ e:center({ prefix = "/other" }), false }) do
            conf.node.config_center = cc or nil
            helpers.write_file(gw.file, helpers.json(conf))
            local v = status(gw).config_version
            gw:reload()
            helpers.wait_until(function()
                local _, n = gw:log():gsub("node.config_center: cannot be added, removed or changed by a reload", "")
                return n >= (cc and 1 or 2)
            end, 5, "reload not refused")
            assert.equal(v, status(gw).config_version)
            assert.is_true(serves(gw, "/k2"))
        end
        e:put("/sluice/routes/k3", route("k3", "/k3"))
        helpers.wait_until(function() return serves(gw, "/k3") end, 5, "still watching the same etcd")
        gw:stop()
    end)

    it("imports a YAML config into etcd (replace, or --merge), refusing an invalid one", function()
        local gw = start()
        local me = "/sluice/nodes/" .. status(gw).node_id -- the node's registration: not config
        helpers.wait_until(function() return e:get(me) ~= nil end, 5, "the node did not register")
        local code, out = import(gw.file, "routes:\n  - id: x\n    paths: [no-slash]\n")
        assert.equal(1, code, out)
        assert.matches("import.yaml:3: routes%[1%]%.paths%[1%]", out)
        assert.matches("nothing imported", out)
        code, out = import(gw.file, format("upstreams:\n  mock: {nodes: [\"%s\"]}\nroutes:\n  - {id: m1, paths: [/m1], "
            .. "upstream: mock}\n", mock.addr), "--merge")
        assert.equal(0, code, out)
        assert.matches("1 written, 0 deleted, 1 unchanged", out)
        helpers.wait_until(function() return serves(gw, "/m1") end, 5)
        assert.is_true(serves(gw, "/a")) -- merged: a stays
        code, out = import(gw.file, format("upstreams:\n  mock: {nodes: [\"%s\"]}\nroutes:\n  - {id: a, paths: [/a], "
            .. "upstream: mock}\n", mock.addr))
        assert.equal(0, code, out)
        assert.matches("deleted", out)
        helpers.wait_until(function() return serves(gw, "/m1", 404) end, 5)
        assert.is_true(serves(gw, "/a"))
        assert.is_not_nil((e:get(me))) -- a replacing import leaves the registrations alone
        gw:stop()
    end)

    it("keeps only digests of consumer keys, whether imported or written to etcd by hand", function()
        local gw = start()
        local code, out = import(gw.file, format("upstreams:\n  mock: {nodes: [\"%s\"]}\nconsumers:\n  - {name: alice, "
            .. "keys: [alice-plain-key]}\nroutes:\n  - {id: a, paths: [/a], upstream: mock}\n  - {id: ka, paths: [/ka], "
            .. "upstream: mock, plugins: {key-auth: {}}}\n", mock.addr))
        assert.equal(0, code, out)
        local stored = assert(e:get("/sluice/consumers/alice"))
        assert.not_matches("alice%-plain%-key", stored)
        assert.matches("sha256:", stored)
        e:put("/sluice/consumers/bob", cjson.encode({ keys = { "bob-plain-key" } })) -- by hand, in plain
        helpers.wait_until(function()
            local r = helpers.http("GET", gw.url("/ka"), { headers = { ["x-api-key"] = "bob-plain-key" } })
            return r and r.status == 200
        end, 5, "bob's key not accepted")
        local r = helpers.http("GET", gw.url("/ka"), { headers = { ["x-api-key"] = "alice-plain-key" } })
        assert.equal(200, r.status)
        assert.equal(401, helpers.http("GET", gw.url("/ka"), { headers = { ["x-api-key"] = "wrong" } }).status)
        e:del("/sluice/consumers/bob")
        e:del("/sluice/consumers/alice")
        e:del("/sluice/routes/ka")
        gw:stop()
    end)

    -- An OpenAI-wire provider that records what it gets (spec/support/echo_llm.js): proc, its URL.
    local function echo_llm()
        local pf = helpers.tmpdir() .. "/echo.port"
        local proc = helpers.spawn("node " .. helpers.shell_quote(helpers.ROOT .. "/spec/support/echo_llm.js") .. " "
            .. helpers.shell_quote(pf) .. " >/dev/null 2>&1")
        local port = helpers.wait_until(function() return tonumber(helpers.read_file(pf) or "") end, 10, "echo")
        assert(helpers.wait_port(port, proc, 10))
        return proc, "http://127.0.0.1:" .. port
    end

    -- The Authorization header the provider at endpoint got for a chat through gw on path (nil, status: no 200).
    local function chat(gw, path, endpoint)
        local res = helpers.http("POST", gw.url(path .. "/v1/chat/completions"),
            { body = { model = "m", messages = { { role = "user", content = "hi" } } }, timeout = 5 })
        if not (res and res.status == 200) then return nil, res and res.status end
        local list = cjson.decode(assert(helpers.http("GET", endpoint .. "/_requests")).body)
        return list[#list].headers.authorization
    end

    local function refusals(gw)
        local out = {}
        for _, r in ipairs(status(gw).config_center.refused) do out[r.key] = r.error end
        return out
    end

    it("seals secrets in etcd with the master key; nodes with it serve them, a node without refuses them", function()
        local secrets = require("sluice.secrets")
        local KEY1, KEY2 = string.rep("11", 32), string.rep("22", 32)
        local ID1, ID2 = secrets.key_id(secrets.parse_key(KEY1)), secrets.key_id(secrets.parse_key(KEY2))
        local SECRET, HAND, HAND2 = "sk-etcd-SEALED-5c1e", "sk-etcd-HAND-9b2f", "sk-etcd-HAND2-0d7a"
        local echo, endpoint = echo_llm()
        -- a provider with its api_key in the clear, written by hand, and a route to it
        e:put("/sluice/providers/hand", cjson.encode({ kind = "openai-compatible", endpoint = endpoint, api_key = HAND }))
        e:put("/sluice/routes/hand", cjson.encode({ paths = { "/hand/*" }, plugins = { ["ai-proxy"] = { provider = "hand" } } }))

        local gw1 = start({ id = "k1", log_level = "info" }, { env = { SLUICE_MASTER_KEY = KEY1 } })
        assert.equal("Bearer " .. HAND, chat(gw1, "/hand", endpoint)) -- read as plain
        assert.matches("/sluice/providers/hand %(etcd revision %d+%) holds 1 secret%(s%) in the clear "
            .. "%(providers%.hand%.api_key%) although a master key is configured", gw1:log())
        local snap = assert(helpers.read_file(gw1.file .. ".etcd.json")) -- sealed in the local snapshot
        assert.is_nil(snap:find(HAND, 1, true))
        assert.matches("enc:v1:" .. ID1 .. ":", snap, 1, true)

        -- the Admin API seals what it writes; a chat reaches the provider with the real key
        local res = gw1:admin("PUT", "/admin/providers/echo", { kind = "openai-compatible", endpoint = endpoint,
                                                                api_key = SECRET })
        assert.equal(201, res.status, res.body)
        assert.equal("***", res.json.item.api_key)
        res = gw1:admin("PUT", "/admin/routes/chat", { paths = { "/chat/*" }, plugins = { ["ai-proxy"] = { provider = "echo" } } })
        assert.equal(201, res.status, res.body)
        local raw = assert(e:get("/sluice/providers/echo"))
        assert.is_nil(raw:find(SECRET, 1, true))
        assert.matches('"api_key":"enc:v1:' .. ID1 .. ':%x+"', raw)
        assert.equal("Bearer " .. SECRET, chat(gw1, "/chat", endpoint))
        assert.equal("***", gw1:admin("GET", "/admin/providers/echo").json.item.api_key)
        -- a sealed value copied to another entity does not open there: refused, never served as a key
        e:put("/sluice/providers/copy", cjson.encode({ kind = "openai-compatible", endpoint = endpoint,
                                                       api_key = cjson.decode(raw).api_key }))

        -- another node with the same key serves it
        local gw2 = start({ id = "k2" }, { env = { SLUICE_MASTER_KEY = KEY1 } })
        assert.equal("Bearer " .. SECRET, chat(gw2, "/chat", endpoint))
        assert.equal("Bearer " .. HAND, chat(gw2, "/hand", endpoint))
        assert.matches("cannot be opened with key " .. ID1, refusals(gw2)["/sluice/providers/copy"])

        -- a node with another key, and one with none: the sealed entry is refused with the reason, the rest serves
        local gw3 = start({ id = "k3", log_level = "info" }, { env = { SLUICE_MASTER_KEY = KEY2 } })
        local gw4 = start({ id = "k4" })
        for _, gw in ipairs({ gw3, gw4 }) do
            local r = refusals(gw)
            assert.matches("a sealed secret does not open: providers%.echo%.api_key: sealed with key " .. ID1
                .. ", which is not configured", r["/sluice/providers/echo"])
            assert.matches('unknown provider "echo"', r["/sluice/routes/chat"])
            assert.matches("config center: /sluice/providers/echo %(etcd revision %d+%) refused", gw:log())
            assert.is_nil(chat(gw, "/chat", endpoint))
            assert.equal("Bearer " .. HAND, chat(gw, "/hand", endpoint))
            assert.is_true(serves(gw, "/a"))
        end
        assert.matches("have: " .. ID2, refusals(gw3)["/sluice/providers/echo"])
        assert.matches("have: none", refusals(gw4)["/sluice/providers/echo"])
        assert.matches("config center: 1 secret%(s%) in etcd are stored in the clear %(providers%.hand%.api_key%)",
            gw4:log())

        -- the Admin API writes a new version of the hand-written provider: sealed; the node with another key keeps
        -- the last good version (the plain one)
        res = gw1:admin("GET", "/admin/providers/hand")
        local item = res.json.item
        item.name, item.api_key = nil, HAND2
        res = gw1:admin("PUT", "/admin/providers/hand", item, { ["if-match"] = tostring(res.json.revision) })
        assert.equal(200, res.status, res.body)
        local hand_rev = res.json.revision
        raw = assert(e:get("/sluice/providers/hand"))
        assert.is_nil(raw:find(HAND2, 1, true))
        assert.matches("enc:v1:" .. ID1 .. ":", raw, 1, true)
        assert.equal("Bearer " .. HAND2, chat(gw1, "/hand", endpoint))
        helpers.wait_until(function() return chat(gw2, "/hand", endpoint) == "Bearer " .. HAND2 end, 5, "k2 did not take it")
        helpers.wait_until(function() return refusals(gw3)["/sluice/providers/hand"] ~= nil end, 5, "k3 took it")
        assert.equal("Bearer " .. HAND, chat(gw3, "/hand", endpoint))
        assert.matches("keeps the last good version", gw3:log())
        -- 409 on a stale revision as before
        res = gw1:admin("PUT", "/admin/providers/hand", item, { ["if-match"] = tostring(hand_rev - 1) })
        assert.equal(409, res.status, res.body)
        assert.equal(hand_rev, res.json.revision)

        -- rotation: k3 reloads with its key and the old one in previous_key_files; it serves everything, and
        -- what it writes is sealed with its own key, which a node holding both keys opens too
        local kdir = helpers.tmpdir()
        helpers.write_file(kdir .. "/new.key", KEY2 .. "\n")
        helpers.write_file(kdir .. "/old.key", KEY1 .. "\n")
        local conf = cjson.decode(helpers.read_file(gw3.file))
        conf.node.secrets = { key_file = kdir .. "/new.key", previous_key_files = { kdir .. "/old.key" } }
        helpers.write_file(gw3.file, helpers.json(conf))
        gw3:reload()
        helpers.wait_until(function() return chat(gw3, "/chat", endpoint) == "Bearer " .. SECRET end, 10, "k3 not rekeyed")
        assert.equal("Bearer " .. HAND2, chat(gw3, "/hand", endpoint))
        assert.is_nil(refusals(gw3)["/sluice/providers/echo"])
        res = gw3:admin("PUT", "/admin/providers/echo", { kind = "openai-compatible", endpoint = endpoint,
                                                          api_key = SECRET .. "-v2" })
        assert.equal(200, res.status, res.body)
        assert.matches("enc:v1:" .. ID2 .. ":", assert(e:get("/sluice/providers/echo")), 1, true)
        assert.equal("Bearer " .. SECRET .. "-v2", chat(gw3, "/chat", endpoint))
        helpers.wait_until(function() return refusals(gw1)["/sluice/providers/echo"] ~= nil end, 5)
        assert.equal("Bearer " .. SECRET, chat(gw1, "/chat", endpoint)) -- k1 (old key only) keeps the last good version

        -- no secret in the clear in any node's files (logs, audit logs, snapshots)
        gw1:stop() gw2:stop() gw3:stop() gw4:stop()
        for _, gw in ipairs({ gw1, gw2, gw3 }) do
            for _, v in ipairs({ SECRET, HAND, HAND2 }) do
                local code, out = helpers.exec("grep -rlF " .. helpers.shell_quote(v) .. " " .. helpers.shell_quote(gw.dir))
                assert.are_not.equal(0, code, out)
            end
        end
        for _, k in ipairs({ "/sluice/routes/chat", "/sluice/routes/hand", "/sluice/providers/echo",
                             "/sluice/providers/hand", "/sluice/providers/copy" }) do
            e:del(k)
        end
        echo:stop(2)
    end)

    it("seals secrets as `sluice etcd import` writes them; the same file again changes nothing", function()
        local secrets = require("sluice.secrets")
        local KEY = string.rep("33", 32)
        local ID = secrets.key_id(secrets.parse_key(KEY))
        local echo, endpoint = echo_llm()
        local gw = start({ id = "imp" }, { env = { SLUICE_MASTER_KEY = KEY } })
        local text = format("upstreams:\n  mock: {nodes: [\"%s\"]}\nproviders:\n  llm: {kind: openai-compatible, "
            .. "endpoint: \"%s\", api_key: sk-IMPORTED-77a1}\nroutes:\n  - {id: a, paths: [/a], upstream: mock}\n"
            .. "  - {id: ic, paths: [/ic/*], plugins: {ai-proxy: {provider: llm}}}\n", mock.addr, endpoint)
        e:put("/sluice/providers/llm", cjson.encode({ kind = "openai-compatible", endpoint = endpoint,
                                                      api_key = "sk-IMPORTED-77a1" })) -- the same, in the clear
        local code, out = import(gw.file, text, "--merge", "SLUICE_MASTER_KEY=" .. KEY)
        assert.equal(0, code, out)
        assert.matches("2 written, 0 deleted, 2 unchanged", out) -- llm again: now sealed
        local raw = assert(e:get("/sluice/providers/llm"))
        assert.is_nil(raw:find("sk-IMPORTED-77a1", 1, true))
        assert.matches("enc:v1:" .. ID .. ":", raw, 1, true)
        helpers.wait_until(function() return chat(gw, "/ic", endpoint) == "Bearer sk-IMPORTED-77a1" end, 5)
        code, out = import(gw.file, text, "--merge", "SLUICE_MASTER_KEY=" .. KEY)
        assert.equal(0, code, out)
        assert.matches("0 written, 0 deleted, 4 unchanged", out)
        assert.equal(raw, (e:get("/sluice/providers/llm")))
        -- another key cannot tell: it writes its own sealing; without a key the file is written in the clear
        code, out = import(gw.file, text, "--merge", "SLUICE_MASTER_KEY=" .. string.rep("44", 32))
        assert.equal(0, code, out)
        assert.matches("1 written", out)
        code, out = import(gw.file, text, "--merge", "SLUICE_MASTER_KEY=")
        assert.equal(0, code, out)
        assert.matches("1 written", out)
        assert.matches("sk%-IMPORTED%-77a1", (e:get("/sluice/providers/llm")))
        e:del("/sluice/routes/ic")
        e:del("/sluice/providers/llm")
        gw:stop()
        echo:stop(2)
    end)

    it("rotates the master key of the secrets in etcd with `sluice secrets rotate`", function()
        local secrets = require("sluice.secrets")
        local KEYA, KEYB = string.rep("55", 32), string.rep("66", 32)
        local IDA, IDB = secrets.key_id(secrets.parse_key(KEYA)), secrets.key_id(secrets.parse_key(KEYB))
        local kdir = helpers.tmpdir()
        helpers.write_file(kdir .. "/a.key", KEYA .. "\n")
        helpers.write_file(kdir .. "/b.key", KEYB .. "\n")
        local echo, endpoint = echo_llm()
        local gw = start({ id = "rot" }, { env = { SLUICE_MASTER_KEY = "" } })
        local conf = cjson.decode(helpers.read_file(gw.file))
        local function rekey(sec) -- new node.secrets, SIGHUP, until the node runs them
            conf.node.secrets = sec
            helpers.write_file(gw.file, helpers.json(conf))
            local v = status(gw).config_version
            gw:reload()
            helpers.wait_until(function() return status(gw).config_version > v end, 5, "reload not applied")
        end
        local function rotate(args)
            return helpers.exec(format("env SLUICE_MASTER_KEY= SLUICE_HOME=%s %s -c %s secrets rotate %s",
                helpers.shell_quote(helpers.ROOT), helpers.shell_quote(helpers.BIN), helpers.shell_quote(gw.file),
                args or ""), 20)
        end
        rekey({ key_file = kdir .. "/a.key" })
        local res = gw:admin("PUT", "/admin/providers/rot", { kind = "openai-compatible", endpoint = endpoint,
                                                              api_key = "sk-ROTATE-3f3f" })
        assert.equal(201, res.status, res.body)
        res = gw:admin("PUT", "/admin/routes/rot", { paths = { "/rot/*" }, plugins = { ["ai-proxy"] = { provider = "rot" } } })
        assert.equal(201, res.status, res.body)
        assert.matches("enc:v1:" .. IDA .. ":", assert(e:get("/sluice/providers/rot")), 1, true)
        -- a value that does not open stops the rotation before anything is written
        local copy = cjson.encode({ kind = "openai-compatible", endpoint = endpoint,
                                    api_key = cjson.decode((e:get("/sluice/providers/rot"))).api_key })
        e:put("/sluice/providers/rotcopy", copy)
        local code, out = rotate("--new-key-file " .. helpers.shell_quote(kdir .. "/b.key"))
        assert.equal(1, code, out)
        assert.matches("/sluice/providers/rotcopy: providers%.rotcopy%.api_key: cannot be opened with key " .. IDA, out)
        assert.matches("nothing written", out)
        assert.matches("enc:v1:" .. IDA .. ":", assert(e:get("/sluice/providers/rot")), 1, true)
        e:del("/sluice/providers/rotcopy")
        -- every node can open the new key first, then the values move to it; the node serves on
        rekey({ key_file = kdir .. "/a.key", previous_key_files = { kdir .. "/b.key" } })
        code, out = rotate("--new-key-file " .. helpers.shell_quote(kdir .. "/b.key"))
        assert.equal(0, code, out)
        assert.matches("1 secret value%(s%) in 1 entities sealed with key " .. IDB, out)
        local raw = assert(e:get("/sluice/providers/rot"))
        assert.matches("enc:v1:" .. IDB .. ":", raw, 1, true)
        assert.is_nil(raw:find("sk-ROTATE-3f3f", 1, true))
        helpers.wait_until(function() return status(gw).config_center.revision >= select(2, e:get("/sluice/providers/rot")) end, 5)
        assert.same({}, status(gw).config_center.refused)
        assert.equal("Bearer sk-ROTATE-3f3f", chat(gw, "/rot", endpoint))
        -- the node moves to the new key; a second run finds nothing left to seal; the old key can go
        rekey({ key_file = kdir .. "/b.key", previous_key_files = { kdir .. "/a.key" } })
        code, out = rotate()
        assert.equal(0, code, out)
        assert.matches("0 secret value%(s%) in 0 entities sealed with key " .. IDB .. " %(1 entities already sealed with it", out)
        rekey({ key_file = kdir .. "/b.key" })
        assert.same({}, status(gw).config_center.refused)
        assert.equal("Bearer sk-ROTATE-3f3f", chat(gw, "/rot", endpoint))
        e:del("/sluice/routes/rot")
        e:del("/sluice/providers/rot")
        gw:stop()
        echo:stop(2)
    end)

    it("answers If-Match with 400 on a node without a config center (the state file keeps no revisions)", function()
        local gw = helpers.start_gateway({ node = { workers = 1 }, upstreams = { mock = { nodes = { mock.addr } } } })
        local res = gw:admin("PUT", "/admin/routes/r", { paths = { "/r" }, upstream = "mock" }, { ["if-match"] = "3" })
        assert.equal(400, res.status, res.body)
        assert.matches("If%-Match needs a config center", res.json.error.message)
        assert.equal(201, gw:admin("PUT", "/admin/routes/r", { paths = { "/r" }, upstream = "mock" }).status)
        assert.is_nil(gw:admin("GET", "/admin/routes/r").json.revision)
        assert.equal("file", gw:admin("GET", "/admin/status").json.config_center.kind)
        gw:stop()
    end)

    it("refuses bad config_center settings with clear errors (sluice -t)", function()
        local dir = helpers.tmpdir()
        local file = helpers.write_file(dir .. "/bad.yaml", table.concat({
            "node:",
            "  config_center:",
            "    kind: etcd",
            "    endpoints: [\"ftp://x:1\", \"not a url\"]",
            "    prefix: /",
            "    timeout: -1",
            "    tls: {cert_file: c.crt}",
            "    auth: {user: \"a\\r\\nb\", password: p}",
            "    extra: 1",
        }, "\n") .. "\n")
        local code, out = helpers.exec(format("env SLUICE_HOME=%s %s -t -c %s", helpers.shell_quote(helpers.ROOT),
            helpers.shell_quote(helpers.BIN), helpers.shell_quote(file)), 15)
        assert.equal(1, code, out)
        for _, want in ipairs({ "node.config_center.endpoints%[2%]", "node.config_center.timeout",
                                "node.config_center.auth.user", "node.config_center.extra" }) do
            assert.matches(want, out)
        end
        helpers.write_file(file, "node:\n  config_center: {kind: etcd, endpoints: [\"ftp://x:1\"], prefix: /, "
            .. "tls: {cert_file: c.crt}}\n")
        code, out = helpers.exec(format("env SLUICE_HOME=%s %s -t -c %s", helpers.shell_quote(helpers.ROOT),
            helpers.shell_quote(helpers.BIN), helpers.shell_quote(file)), 15)
        assert.equal(1, code, out)
        assert.matches("node.config_center.endpoints%[1%]: expected an http:// or https:// URL", out)
        assert.matches("node.config_center.prefix: must not be \"/\" alone", out)
        assert.matches("node.config_center.tls: a client certificate needs both cert_file and key_file", out)
        -- a command it does not know
        code, out = helpers.exec(format("env SLUICE_HOME=%s %s -c %s etcd export", helpers.shell_quote(helpers.ROOT),
            helpers.shell_quote(helpers.BIN), helpers.shell_quote(file)), 15)
        assert.equal(2, code, out)
        assert.matches("unknown command etcd export", out)
    end)

    it("refuses keys that are not Sluice's and huge or deep values, without harm", function()
        local gw = start()
        e:put("/sluice/widgets/w1", "{}")
        e:put("/sluice/routes/bad id!", route("x", "/x"))
        e:put("/sluice/routes/deep", string.rep("[", 5000) .. string.rep("]", 5000))
        e:put("/sluice/routes/arr", "[1,2]")
        e:put("/sluice/routes/big", cjson.encode({ paths = { "/big" }, upstream = "mock", desc = string.rep("x", 60 * 1024) }))
        local rev = e:put("/sluice/routes/idmix", cjson.encode({ id = "other", paths = { "/idmix" }, upstream = "mock" }))
        helpers.wait_until(function() return status(gw).config_center.revision >= rev end, 5)
        local refused = {}
        for _, r in ipairs(status(gw).config_center.refused) do refused[r.key] = r.error end
        assert.matches("not a Sluice key", refused["/sluice/widgets/w1"])
        assert.matches("invalid id in the key", refused["/sluice/routes/bad id!"])
        assert.matches("not a JSON object", refused["/sluice/routes/deep"])
        assert.matches("not a JSON object", refused["/sluice/routes/arr"])
        assert.matches('does not match the id in the key %("idmix"%)', refused["/sluice/routes/idmix"])
        assert.is_true(serves(gw, "/a"))
        assert.is_true(serves(gw, "/big") or refused["/sluice/routes/big"] ~= nil)
        for _, k in ipairs({ "/sluice/widgets/w1", "/sluice/routes/bad id!", "/sluice/routes/deep", "/sluice/routes/arr",
                             "/sluice/routes/big", "/sluice/routes/idmix" }) do
            e:del(k)
        end
        gw:stop()
    end)

    it("refuses to start on an endpoint that is not etcd, or on a damaged snapshot", function()
        local ok, err = pcall(start, { id = "notetcd", center = { kind = "etcd", endpoints = { mock.url() },
                                                                  timeout = "2s" } })
        assert.is_false(ok)
        assert.matches("config center", err)
        -- a damaged snapshot while etcd is down: a clear refusal
        local gw = start()
        gw:stop()
        helpers.write_file(gw.file .. ".etcd.json", "{\"version\":1,\"revision\":\"x\"")
        e:stop()
        ok, err = pcall(gw.restart, gw)
        e:start()
        assert.is_false(ok)
        assert.matches("not a config center snapshot", err)
    end)

    it("authenticates as an etcd user, again when its token expired, and refuses a wrong password", function()
        local ae = cluster.etcd({ auth = { password = "root-pw", token_ttl = 2 } })
        assert.is_table(ae:call("/v3/kv/range", { key = "eA==" })) -- the spec's own calls work as root
        ae:call("/v3/auth/user/add", { name = "gw", password = "gw-pw" })
        ae:call("/v3/auth/role/add", { name = "gw" })
        assert(ae:call("/v3/auth/role/grant", { name = "gw", perm = { permType = "READWRITE",
            key = cluster.b64("/sluice/"), range_end = cluster.b64("/sluice0") } }))
        ae:call("/v3/auth/user/grant", { user = "gw", role = "gw" })
        ae:put("/sluice/upstreams/mock", cjson.encode({ nodes = { mock.addr } }))
        ae:put("/sluice/routes/u", route("u", "/u"))
        local gw = start({ id = "auth", center = ae:center({ auth = { user = "gw", password = "gw-pw" } }) })
        assert.is_true(serves(gw, "/u"))
        local res = gw:admin("PUT", "/admin/routes/u2", { paths = { "/u2" }, upstream = "mock" })
        assert.equal(201, res.status, res.body)
        helpers.sleep(4) -- the token (ttl 2 s) expires: the next call authenticates again
        res = gw:admin("PUT", "/admin/routes/u3", { paths = { "/u3" }, upstream = "mock" })
        assert.equal(201, res.status, res.body)
        ae:put("/sluice/routes/u4", route("u4", "/u4"))
        helpers.wait_until(function() return serves(gw, "/u4") end, 5, "the watch as user gw")
        gw:stop()
        -- a wrong password: nothing to start from
        local ok, err = pcall(start, { id = "badpw", center = ae:center({ auth = { user = "gw", password = "nope" } }) })
        assert.is_false(ok)
        assert.matches("authentication failed", err)
        ae:stop()
    end)

    it("talks TLS with a client certificate to etcd", function()
        local certs = helpers.tmpdir()
        assert.equal(0, (helpers.exec(format("sh %s %s etcd=localhost client=client", helpers.shell_quote(
            helpers.ROOT .. "/spec/support/certs.sh"), helpers.shell_quote(certs)))))
        local te = cluster.etcd({ tls = { dir = certs } })
        te:put("/sluice/upstreams/mock", cjson.encode({ nodes = { mock.addr } }))
        te:put("/sluice/routes/t", route("t", "/t"))
        local gw = start({ center = te:center({ tls = { ca_file = certs .. "/ca.crt", cert_file = certs .. "/client.crt",
                                                         key_file = certs .. "/client.key" } }) })
        assert.is_true(serves(gw, "/t")) -- the first load: the main thread's blocking client
        local res = gw:admin("PUT", "/admin/routes/t2", { paths = { "/t2" }, upstream = "mock" })
        assert.equal(201, res.status, res.body) -- worker 0: sluice.http with the client certificate
        assert.is_truthy((te:get("/sluice/routes/t2")))
        te:put("/sluice/routes/t3", route("t3", "/t3"))
        helpers.wait_until(function() return serves(gw, "/t3") end, 5) -- the watch
        gw:stop()
        -- without the client certificate etcd refuses: nothing to start from
        local ok, err = pcall(start, { id = "nocert", center = te:center({ tls = { ca_file = certs .. "/ca.crt" } }) })
        assert.is_false(ok)
        assert.matches("config center", err)
        te:stop()
    end)
end)
