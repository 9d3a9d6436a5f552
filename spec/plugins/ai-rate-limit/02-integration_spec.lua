-- ai-rate-limit through the gateway against providers that report usage (tests/mock/faulty_provider.js: OpenAI 11
-- prompt / 2 per word completion, Anthropic 12 / 2 per word): what a request is charged once it is over, streamed or
-- not, cut by the client or the upstream; refusals in both API shapes with Retry-After; requests that can never
-- fit; a call that failed gives its reservation back.
local helpers = require("helpers")
local cjson = require("cjson.safe")
local socket = require("socket")

local ROOT = helpers.ROOT
local LIMIT = 1000000

-- A log-phase probe (priority 1: after ai-rate-limit's log): appends the usage record as one JSON line.
local PROBE = [[
local cjson = require("cjson.safe")
return { name = "ai-usage-probe", version = "1", priority = 1,
  log = function(conf, ctx)
    local f = io.open(conf.file, "a")
    f:write((cjson.encode(ctx.ai and ctx.ai.usage or { none = true }) or "{}") .. "\n")
    f:close()
  end }
]]

describe("ai-rate-limit through the gateway", function()
    local gw, usage_file, mock_port, oa_port

    local function usages()
        local out = {}
        for line in (helpers.read_file(usage_file) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
        return out
    end

    local function chat(model, extra)
        local b = { model = model, stream = true, messages = { { role = "user", content = "count for me" } } }
        for k, v in pairs(extra or {}) do b[k] = v end
        return b
    end

    -- One request; waits for its log phase (the usage record written after ai-rate-limit's log ran).
    local function call(path, body, tenant, headers)
        helpers.write_file(usage_file, "")
        local h = { ["x-tenant"] = tenant }
        for k, v in pairs(headers or {}) do h[k] = v end
        local res = assert(helpers.http("POST", gw.url(path), { body = body, headers = h, timeout = 10 }))
        local u = helpers.wait_until(function() return usages()[1] end, 8, "no usage record")
        return res, u
    end

    -- What a tenant's counter holds: a probe call reserves its estimate; remaining = LIMIT - used - estimate.
    -- The probe (a whole 1-word stream: 11 + 2 tokens) then stays counted; probe() returns the remaining it saw.
    local function probe(tenant)
        local res = call("/oa/v1/chat/completions", chat("f/none/end/n1"), tenant)
        assert.equal(200, res.status, res.body)
        return tonumber(res.headers["x-ratelimit-remaining-tokens"])
    end

    -- Tokens charged to a fresh tenant for what fn() does.
    local function charged(tenant, fn)
        local before = probe(tenant)
        local u = fn()
        local after = probe(tenant)
        return before - after - 13, u
    end

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/ai-usage-probe.lua", PROBE)
        usage_file = dir .. "/usage.jsonl"
        mock_port = helpers.free_port()
        local mock = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/faulty_provider.js") .. " " ..
            mock_port .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        oa_port = helpers.free_port()
        local oa = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. oa_port ..
            " >" .. helpers.shell_quote(dir .. "/oa.log") .. " 2>&1")
        assert(helpers.wait_port(oa_port, oa, 10))
        local up = "http://127.0.0.1:" .. mock_port
        local probe_conf = { file = usage_file }
        -- one counter space for every route (scope): the probe on /oa reads what /an, /oaw, ... charged
        local limit = { ["ai-rate-limit"] = { scope = "all", limits = { { by = "header:x-tenant", limit = LIMIT, window = "1h" } } } }
        local function route(id, provider, extra)
            local p = { ["ai-proxy"] = { provider = provider }, ["ai-usage-probe"] = probe_conf }
            for k, v in pairs(extra or limit) do p[k] = v end
            return { id = id, paths = { "/" .. id .. "/v1/*" }, plugins = p }
        end
        local small = { ["ai-rate-limit"] = { limits = {
            { by = "header:x-tenant", metric = "requests", limit = 2, window = "1h" },
            { by = "header:x-tenant", metric = "total_tokens", limit = 100, window = "1h" } } } }
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins", dir }, workers = 2 },
            providers = {
                oa = { kind = "openai", endpoint = up, api_key = "k", timeout = { read = 2 } },
                an = { kind = "anthropic", endpoint = up, api_key = "k", timeout = { read = 2 } },
                oa500 = { kind = "openai", endpoint = "http://127.0.0.1:" .. oa_port .. "/s/500/v1", api_key = "k" },
                oaw = { kind = "openai", endpoint = "http://127.0.0.1:" .. oa_port .. "/v1", api_key = "k" },
            },
            routes = { route("oa", "oa"), route("an", "an"), route("oa500", "oa500"), route("oaw", "oaw"),
                       -- the same counters as /oa (scope), with small limits: refusals
                       route("small", "oa", small) },
        })
    end)

    teardown(helpers.stop_all)

    it("charges a whole answer with the provider's usage, not the estimate", function()
        local n, u = charged("t-whole", function()
            local res, rec = call("/oaw/v1/chat/completions", chat("gpt-4o-mini", { stream = false, max_tokens = 300 }), "t-whole")
            assert.equal(200, res.status, res.body)
            return rec
        end)
        assert.is_false(u.estimated)
        assert.equal(22, u.total_tokens) -- the mock's usage: 17 + 5
        assert.equal(22, n)
    end)

    it("charges a streamed answer (the usage of the stream's last chunk), both client APIs", function()
        for _, c in ipairs({ { "/oa/v1/chat/completions", "t-stream-oa", 11 }, { "/an/v1/messages", "t-stream-an", 12 } }) do
            local n, u = charged(c[2], function()
                local res, rec = call(c[1], chat("f/none/end/n7", { stream = true, max_tokens = 50 }), c[2])
                assert.equal(200, res.status)
                assert.truthy(res.body:find("w6 ", 1, true))
                return rec
            end)
            assert.is_true(u.stream)
            assert.is_false(u.estimated)
            assert.equal(c[3] + 14, u.total_tokens, c[1])
            assert.equal(c[3] + 14, n, c[1])
        end
    end)

    it("charges a stream cut by the client for what was delivered", function()
        local n, u = charged("t-cut", function()
            helpers.write_file(usage_file, "")
            local c = socket.tcp()
            c:settimeout(5)
            assert(c:connect("127.0.0.1", gw.port))
            local body = helpers.json(chat("f/none/end/n100/g50", { stream = true, max_tokens = 400 }))
            c:send("POST /oa/v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-tenant: t-cut\r\nContent-Type: application/json\r\n" ..
                "Content-Length: " .. #body .. "\r\n\r\n" .. body)
            local got = ""
            while not got:find("w5 ", 1, true) do
                local data, err, partial = c:receive(64)
                got = got .. (data or partial or "")
                assert(not err or err == "timeout", err)
            end
            c:close()
            return helpers.wait_until(function() return usages()[1] end, 8, "no usage record")
        end)
        assert.equal("client", u.cut)
        assert.is_true(u.completion_tokens > 0 and u.completion_tokens < 200, tostring(u.completion_tokens))
        assert.equal(u.total_tokens, n) -- what was delivered, not the 400 reserved nor the 211 of the whole answer
    end)

    it("charges a stream cut by the upstream for what was delivered", function()
        local n, u = charged("t-upcut", function()
            local res, rec = call("/oa/v1/chat/completions", chat("f/reset/at10/n40", { stream = true, max_tokens = 400 }), "t-upcut")
            assert.equal(200, res.status)
            return rec
        end)
        assert.equal("upstream", u.cut)
        assert.is_true(u.total_tokens > 11 and u.total_tokens < 91, tostring(u.total_tokens))
        assert.equal(u.total_tokens, n)
    end)

    it("gives the reservation back when the provider fails the call", function()
        local n = charged("t-fail", function()
            local res, rec = call("/oa500/v1/chat/completions", chat("m", { max_tokens = 300, stream = false }), "t-fail")
            assert.equal(500, res.status)
            return rec
        end)
        assert.equal(0, n)
    end)

    it("refuses over the limit with 429 in the client's shape, Retry-After and the headers", function()
        local res = call("/small/v1/chat/completions", chat("f/none/end/n1"), "t-small")
        assert.equal(200, res.status)
        assert.equal("2", res.headers["x-ratelimit-limit-requests"])
        assert.equal("1", res.headers["x-ratelimit-remaining-requests"])
        assert.equal("100", res.headers["x-ratelimit-limit-tokens"])
        local reset = tonumber(res.headers["x-ratelimit-reset-tokens"])
        assert.is_true(reset >= 1 and reset <= 3600)
        res = call("/small/v1/chat/completions", chat("f/none/end/n1"), "t-small")
        assert.equal(200, res.status)
        assert.equal("0", res.headers["x-ratelimit-remaining-requests"])
        res = call("/small/v1/chat/completions", chat("f/none/end/n1"), "t-small")
        assert.equal(429, res.status)
        assert.equal("rate_limit_exceeded", res.json.error.code)
        assert.equal("requests", res.json.error.type)
        assert.matches("Rate limit reached for t-small on requests per 1h: limit 2, remaining 0", res.json.error.message, 1, true)
        local ra = tonumber(res.headers["retry-after"])
        assert.is_true(ra >= 1 and ra <= 3600)
        assert.equal("0", res.headers["x-ratelimit-remaining-requests"])
        assert.equal("2", res.headers["x-ratelimit-limit-requests"])
        res = call("/small/v1/messages", chat("f/none/end/n1", { max_tokens = 5 }), "t-small")
        assert.equal(429, res.status)
        assert.equal("error", res.json.type)
        assert.equal("rate_limit_error", res.json.error.type)
        assert.is_nil(res.headers["x-should-retry"])
        local u = usages()[1]
        assert.equal(429, u.status)
    end)

    it("refuses a request larger than the limit itself so that clients do not retry it", function()
        local res = call("/small/v1/chat/completions", chat("f/none/end/n1", { max_tokens = 500 }), "t-big")
        assert.equal(429, res.status)
        assert.equal("false", res.headers["x-should-retry"])
        assert.is_nil(res.headers["retry-after"])
        assert.matches("larger than the limit itself", res.json.error.message, 1, true)
        -- it took nothing: a request that fits still goes
        assert.equal(200, call("/small/v1/chat/completions", chat("f/none/end/n1"), "t-big").status)
    end)
end)
