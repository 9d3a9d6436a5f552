-- ai-cache across gateway nodes: two gateway processes share one memcached (L2). A miss on node A is a hit on node
-- B; a purge made on A (all, a route, a key) reaches B through memcached within its sync interval; memcached
-- going away turns L2 off without errors for clients (L1 keeps serving).
local helpers = require("helpers")
local socket = require("socket")

local MEMCACHED = "/usr/bin/memcached"
local has_memcached = io.open(MEMCACHED) ~= nil
local describe_mc = has_memcached and describe or pending

local function start_mc(port)
    local user = (os.getenv("USER") == "root" or io.popen("id -u"):read("*l") == "0") and " -u root" or ""
    local p = helpers.spawn(string.format("%s -l 127.0.0.1 -p %d -U 0 -m 16%s", MEMCACHED, port, user))
    assert(helpers.wait_port(port, p, 5))
    return p
end

describe_mc("ai-cache with memcached (two gateway nodes)", function()
    local a, b, mc, mock, mc_port

    local function chat(gw, text, extra)
        local body = { model = "demo", temperature = 0, messages = { { role = "user", content = text } } }
        for k, v in pairs(extra or {}) do body[k] = v end
        return assert(helpers.http("POST", gw.url("/v1/chat/completions"), { body = body, timeout = 10 }))
    end
    local function calls(text)
        local n = 0
        for _, r in ipairs(assert(helpers.http("GET", mock .. "/__requests")).json) do
            local m = r.body and r.body.messages
            if m and m[#m].content == text then n = n + 1 end
        end
        return n
    end
    -- A miss is stored in the log phase, after its client got the answer: before another node (or an L1-less one)
    -- can hit, the entry must have reached memcached. Waits for it (memcached's text protocol), bounded.
    local function in_l2(res)
        local key = assert(res.headers["x-sluice-cache-key"], "no cache key")
        helpers.wait_until(function()
            local c = socket.tcp()
            c:settimeout(1)
            if not c:connect("127.0.0.1", mc_port) then return false end
            c:send("get sluice:cache:e:" .. key .. "\r\n")
            local line = c:receive("*l")
            c:close()
            return line and line:sub(1, 5) == "VALUE"
        end, 5, "entry not in memcached")
        return res
    end
    local function node(l1)
        return helpers.start_gateway({
            node = { workers = 2, shared_dicts = { ["ai-cache"] = "4m" },
                     memcached = { servers = { "127.0.0.1:" .. mc_port }, timeout = 0.5, failure_threshold = 2,
                                   retry_after = 1 } },
            providers = { p = { kind = "openai", endpoint = mock, api_key = "k", models = { demo = "gpt-4o-mini" } } },
            routes = { { id = "chat", paths = { "/v1/*" },
                         plugins = { ["ai-proxy"] = { provider = "p" }, ["ai-cache"] = { scope = "global", l1 = l1 } } } },
        })
    end

    setup(function()
        mc_port = helpers.free_port()
        mc = start_mc(mc_port)
        local port = helpers.free_port()
        local p = helpers.spawn("node " .. helpers.shell_quote(helpers.ROOT .. "/tests/mock/providers.js") .. " " .. port
            .. " >/dev/null 2>&1")
        assert(helpers.wait_port(port, p, 10))
        mock = "http://127.0.0.1:" .. port
        a, b = node(true), node(true)
    end)

    teardown(helpers.stop_all)

    it("serves on node B what node A stored (streamed or not)", function()
        assert.equal("MISS", in_l2(chat(a, "from A")).headers["x-sluice-cache"])
        local hit = in_l2(chat(b, "from B too"))
        assert.equal("MISS", hit.headers["x-sluice-cache"])
        local r = chat(b, "from A")
        assert.equal("HIT", r.headers["x-sluice-cache"])
        assert.equal("Hello from the mock.", r.json.choices[1].message.content)
        assert.equal("HIT", chat(b, "from A", { stream = true }).headers["x-sluice-cache"])
        assert.equal(1, calls("from A"))
        -- B's L1 has it now; A answers B's entry from its L1 or L2
        assert.equal("HIT", chat(a, "from B too").headers["x-sluice-cache"])
    end)

    it("reads L2 alone when L1 is off (l1: false)", function()
        local c = node(false)
        assert.equal("MISS", in_l2(chat(c, "l2 only")).headers["x-sluice-cache"])
        assert.equal("HIT", chat(c, "l2 only").headers["x-sluice-cache"])
        assert.equal("HIT", chat(a, "l2 only").headers["x-sluice-cache"])
        assert.equal(1, calls("l2 only"))
        c:stop()
    end)

    it("purges on every node: all, by route, by key", function()
        assert.equal("MISS", in_l2(chat(a, "purged everywhere")).headers["x-sluice-cache"])
        assert.equal("HIT", chat(b, "purged everywhere").headers["x-sluice-cache"]) -- now in B's L1 as well
        assert.equal(200, a:admin("DELETE", "/admin/cache").status)
        assert.equal("MISS", in_l2(chat(a, "purged everywhere")).headers["x-sluice-cache"]) -- at once on A
        -- B: within its sync interval (1 s), its L1 copy under the old generation is never found again
        helpers.wait_until(function()
            return chat(b, "purged everywhere").headers["x-sluice-cache"] == "HIT"
                and calls("purged everywhere") == 2
        end, 5, "B did not take the purge")
        assert.equal(2, calls("purged everywhere"))

        assert.equal("HIT", chat(b, "purged everywhere").headers["x-sluice-cache"])
        assert.equal(200, a:admin("DELETE", "/admin/cache/routes/chat").status)
        helpers.wait_until(function() return calls("purged everywhere") == 2
            and chat(b, "purged everywhere").headers["x-sluice-cache"] == "MISS" end, 5, "route purge not on B")

        local r = in_l2(chat(a, "one key"))
        assert.equal("MISS", r.headers["x-sluice-cache"])
        assert.equal("HIT", chat(b, "one key").headers["x-sluice-cache"]) -- B's L1 holds it
        assert.equal("MISS", in_l2(chat(a, "other key")).headers["x-sluice-cache"])
        assert.equal(200, a:admin("DELETE", "/admin/cache/keys/" .. r.headers["x-sluice-cache-key"]).status)
        helpers.wait_until(function() return chat(b, "one key").headers["x-sluice-cache"] == "MISS" end, 5,
            "key purge not on B")
        assert.equal("HIT", chat(b, "other key").headers["x-sluice-cache"])
    end)

    it("keeps serving from L1 when memcached goes away, and misses never fail", function()
        assert.equal("MISS", chat(a, "before the outage").headers["x-sluice-cache"])
        mc:stop()
        assert.equal("HIT", chat(a, "before the outage").headers["x-sluice-cache"])
        for i = 1, 3 do
            local r = chat(a, "during the outage " .. i)
            assert.equal(200, r.status)
            assert.equal("MISS", r.headers["x-sluice-cache"])
        end
        assert.equal("HIT", chat(a, "during the outage 1").headers["x-sluice-cache"])
        assert.equal(502, a:admin("DELETE", "/admin/cache").status) -- this node purged, the others not told
    end)
end)
