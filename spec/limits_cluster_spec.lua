-- Limits across a cluster: three gateway processes with one config and one memcached (started here, Debian's
-- /usr/bin/memcached on a free loopback port), 600 concurrent requests spread over the three against limits of
-- 200: exactly 200 go through, for a request limit and for a token limit, with limit-req (leaky bucket) and with
-- limit-conn (requests in flight). Then memcached killed mid-way: fail_mode closed serves nothing more (503 in the
-- client's shape), fail_mode open serves on, counting on each node from where memcached was, and both log it and
-- count it in GET /admin/limits.
local helpers = require("helpers")
local cjson = require("cjson.safe")
local call = require("sluice.limits.call")

local MEMCACHED = "/usr/bin/memcached"
local BURST = helpers.ROOT .. "/spec/support/burst.js"

local function start_mc(port)
    local user = (os.getenv("USER") == "root" or io.popen("id -u"):read("*l") == "0") and " -u root" or ""
    local p = helpers.spawn(string.format("%s -l 127.0.0.1 -p %d -U 0 -m 16 -t 2%s", MEMCACHED, port, user))
    assert(helpers.wait_port(port, p, 5))
    return p
end

-- Runs spec/support/burst.js: n requests, c at a time, round-robin over urls; the decoded summary.
local function burst(urls, n, c, body, headers, collect)
    local spec = { urls = urls, n = n, concurrency = c, method = "POST", body = body, headers = headers, timeout_ms = 30000,
                   collect = collect }
    local code, out = helpers.exec("node " .. helpers.shell_quote(BURST) .. " " .. helpers.shell_quote(cjson.encode(spec)), 120)
    assert.equal(0, code, out)
    return assert(cjson.decode(out), out)
end

local MESSAGES = { { role = "user", content = "Tell me something about rate limits across a cluster." } }
local MAX_TOKENS = 20
local PROMPT = call.prompt_tokens("chat", { messages = MESSAGES }) -- what the gateway estimates; the mock reports it
local PER_CALL = PROMPT + MAX_TOKENS

local function config(mc_port, plugins, provider_opts)
    local opts = { prompt_tokens = PROMPT, completion_tokens = MAX_TOKENS }
    for k, v in pairs(provider_opts or {}) do opts[k] = v end
    return {
        node = { workers = 2, memcached = { servers = { "127.0.0.1:" .. mc_port }, timeout = 0.2, failure_threshold = 3,
                                            retry_after = 60 } },
        consumers = { { name = "alice", keys = { "alice-key" } } },
        providers = { m = { kind = "mock", options = opts } },
        routes = { { id = "chat", paths = { "/v1/*" },
                     plugins = (function()
                         local p = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "m" } }
                         for k, v in pairs(plugins) do p[k] = v end
                         return p
                     end)() } },
    }
end

local function cluster(cfg)
    local gws, urls = {}, {}
    for i = 1, 3 do
        gws[i] = helpers.start_gateway(cfg)
        urls[i] = gws[i].url("/v1/chat/completions")
    end
    return gws, urls
end

local BODY = { model = "m", max_tokens = MAX_TOKENS, messages = MESSAGES }
local AUTH = { authorization = "Bearer alice-key" }

local function count(r, status)
    return r.by_status[tostring(status)] or 0
end

local has_memcached = io.open(MEMCACHED) ~= nil
local describe_mc = has_memcached and describe or pending

describe_mc("limits across three gateways sharing one memcached", function()
    after_each(helpers.stop_all)

    it("600 requests against a limit of 200 requests: exactly 200 succeed", function()
        local port = helpers.free_port()
        start_mc(port)
        local _, urls = cluster(config(port, { ["ai-rate-limit"] = { policy = "memcached",
            limits = { { metric = "requests", limit = 200, window = "1h" } } } }))
        local r = burst(urls, 600, 30, BODY, AUTH, "x-ratelimit-remaining-requests")
        assert.equal(0, r.errors, cjson.encode(r.samples))
        local seen = {}
        for _, v in ipairs(r.collected["200"] or {}) do seen[#seen + 1] = tonumber(v) or -1 end
        table.sort(seen)
        assert.equal(200, count(r, 200), cjson.encode(r.by_status) .. " remaining seen: " .. cjson.encode(seen))
        for i = 1, 200 do
            assert.equal(i - 1, seen[i], "every count from 1 to 200 was given to exactly one request")
        end
        assert.equal(400, count(r, 429), cjson.encode(r.by_status))
        for i = 1, 3 do
            assert.is_true((r.by_url[i]["200"] or 0) > 0, "gateway " .. i .. " served some") -- all three took part
        end
        print(string.format("\n[cluster] request limit 200, 600 requests over 3 gateways: %d succeeded, %d refused",
            count(r, 200), count(r, 429)))
    end)

    it("600 requests against a token limit of 200 calls' worth: exactly 200 succeed", function()
        local port = helpers.free_port()
        start_mc(port)
        local _, urls = cluster(config(port, { ["ai-rate-limit"] = { policy = "memcached",
            limits = { { metric = "total_tokens", limit = 200 * PER_CALL, window = "1h" } } } }))
        local r = burst(urls, 600, 30, BODY, AUTH)
        assert.equal(0, r.errors)
        assert.equal(200, count(r, 200), cjson.encode(r.by_status))
        assert.equal(400, count(r, 429))
        local sample = cjson.decode(r.samples["429"].body)
        assert.equal("rate_limit_exceeded", sample.error.code)
        print(string.format("[cluster] token limit %d (200 calls of %d), 600 requests: %d succeeded, %d refused",
            200 * PER_CALL, PER_CALL, count(r, 200), count(r, 429)))
    end)

    it("limit-req: a bucket of 200 (burst 199, leaking once an hour) admits exactly 200 of 600", function()
        local port = helpers.free_port()
        start_mc(port)
        local _, urls = cluster(config(port, { ["limit-req"] = { policy = "memcached", rate = 1, per = "1h",
                                                                 burst = 199, nodelay = true } }))
        local r = burst(urls, 600, 30, BODY, AUTH)
        assert.equal(0, r.errors)
        assert.equal(200, count(r, 200), cjson.encode(r.by_status))
        assert.equal(400, count(r, 429))
        print(string.format("[cluster] limit-req burst 200, 600 requests: %d succeeded, %d refused",
            count(r, 200), count(r, 429)))
    end)

    it("limit-conn: 5 in flight at once across the three, whatever the spread", function()
        local port = helpers.free_port()
        start_mc(port)
        local _, urls = cluster(config(port, { ["limit-conn"] = { policy = "memcached", conn = 5 } },
            { latency_ms = 1500 }))
        local r = burst(urls, 15, 15, BODY, AUTH)
        assert.equal(0, r.errors)
        assert.equal(5, count(r, 200), cjson.encode(r.by_status))
        assert.equal(10, count(r, 429))
        -- all counted out again (in the log phase, just after each response): the next 5 at once go through
        helpers.wait_until(function() return count(burst(urls, 5, 5, BODY, AUTH), 200) == 5 end, 10, "slots back")
        print(string.format("[cluster] limit-conn 5, 15 at once: %d served, then 5 of 5", 5))
    end)

    local function killed_midway(mode)
        local port = helpers.free_port()
        local mc = start_mc(port)
        local gws, urls = cluster(config(port, { ["ai-rate-limit"] = { policy = "memcached", fail_mode = mode,
            limits = { { metric = "requests", limit = 200, window = "1h" } } } }))
        local first = burst(urls, 150, 30, BODY, AUTH)
        assert.equal(150, count(first, 200), cjson.encode(first.by_status) .. " " .. cjson.encode(first.samples))
        mc:stop()
        local rest = burst(urls, 450, 30, BODY, AUTH)
        assert.equal(0, rest.errors)
        for _, gw in ipairs(gws) do
            assert.matches("memcached unavailable", gw:log(), 1, true)
            local stats = assert(gw:admin("GET", "/admin/limits")).json.stats
            assert.is_true(stats.memcached_errors > 0)
            assert.is_true(stats["fail_" .. mode] > 0, cjson.encode(stats))
        end
        return first, rest
    end

    it("memcached killed mid-way, fail_mode closed: nothing more is served (503 in the client's shape)", function()
        local first, rest = killed_midway("closed")
        assert.equal(450, count(rest, 503), cjson.encode(rest.by_status))
        local body = cjson.decode(rest.samples["503"].body)
        assert.matches("rate limit store unavailable", body.error.message, 1, true)
        print(string.format("[cluster] memcached killed after 150, fail closed: %d + %d succeeded, %d answered 503",
            count(first, 200), count(rest, 200), count(rest, 503)))
    end)

    it("memcached killed mid-way, fail_mode open: served on, each node counting from where memcached was", function()
        local first, rest = killed_midway("open")
        assert.equal(0, count(rest, 503))
        assert.equal(450, count(rest, 200) + count(rest, 429))
        for i = 1, 3 do
            local ok, refused = rest.by_url[i]["200"] or 0, rest.by_url[i]["429"] or 0
            assert.is_true(ok > 0, "gateway " .. i .. " serves on")
            assert.is_true(refused > 0, "gateway " .. i .. " still limits")
            -- each node went on from the count it had seen (about 150), not from zero: at most ~50 more each
            assert.is_true(ok <= 80, "gateway " .. i .. " served " .. ok .. " after the outage")
        end
        print(string.format("[cluster] memcached killed after 150, fail open: %d + %d succeeded (per node after: %s)",
            count(first, 200), count(rest, 200), cjson.encode(rest.by_url)))
    end)
end)
