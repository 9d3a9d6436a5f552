-- Provider calls (the gateway's egress) through the proxies of the environment: HTTP_PROXY in absolute form,
-- HTTPS_PROXY through a CONNECT tunnel with the provider's certificate still verified, NO_PROXY and a provider's
-- `proxy: false` going direct; route upstreams never use these variables.
-- The proxy (spec/support/forward_proxy.js) takes every name for 127.0.0.1; endpoints use names only it
-- "resolves" (plain.test, secure.test), so an answer proves the call went through it.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local q, ROOT = helpers.shell_quote, helpers.ROOT

local function spawn_port(cmd, file, what)
    local proc = helpers.spawn(cmd)
    return helpers.wait_until(function()
        assert(proc:alive(), what .. " exited")
        return tonumber(helpers.read_file(file))
    end, 10, what .. " did not start")
end

describe("provider calls through HTTP(S)_PROXY", function()
    local dir, px_log, gw, mock_port, tls_port, px_port

    local function proxy_requests()
        local out = {}
        for line in (helpers.read_file(px_log) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
        return out
    end

    local function chat(route, body)
        return assert(helpers.http("POST", gw.url("/" .. route .. "/v1/chat/completions"), { timeout = 15,
            body = body or { model = "gpt-4o-mini", messages = { { role = "user", content = "hi" } } } }))
    end

    setup(function()
        dir = helpers.tmpdir()
        local code, out = helpers.exec("sh " .. q(ROOT .. "/spec/support/certs.sh") .. " " .. q(dir) .. " secure.test", 30)
        assert(code == 0, out)
        px_log = dir .. "/proxy.jsonl"
        px_port = spawn_port(string.format("node %s %s %s >/dev/null 2>&1", q(ROOT .. "/spec/support/forward_proxy.js"),
            q(px_log), q(dir .. "/px_port")), dir .. "/px_port", "forward proxy")
        tls_port = spawn_port(string.format("node %s %s %s %s >/dev/null 2>&1", q(ROOT .. "/spec/support/tls_upstream.js"),
            q(dir .. "/secure.test.crt"), q(dir .. "/secure.test.key"), q(dir .. "/tls_port")), dir .. "/tls_port",
            "TLS upstream")
        mock_port = helpers.free_port()
        local mock = helpers.spawn("node " .. q(ROOT .. "/tests/mock/providers.js") .. " " .. mock_port .. " >/dev/null 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        local function route(id, provider)
            return { id = id, paths = { "/" .. id .. "/v1/*" }, plugins = { ["ai-proxy"] = { provider = provider } } }
        end
        gw = helpers.start_gateway({
            node = { workers = 1 },
            providers = {
                viaproxy = { kind = "openai", endpoint = "http://plain.test:" .. mock_port, api_key = "k" },
                optout = { kind = "openai", endpoint = "http://plain.test:" .. mock_port, api_key = "k", proxy = false },
                direct = { kind = "openai", endpoint = "http://127.0.0.1:" .. mock_port, api_key = "k" },
                secure = { kind = "openai-compatible", endpoint = "https://secure.test:" .. tls_port, api_key = "k",
                           tls = { ca_file = dir .. "/ca.crt" } },
            },
            routes = {
                route("viaproxy", "viaproxy"), route("optout", "optout"), route("direct", "direct"),
                route("secure", "secure"),
                { id = "plain", paths = { "/plain/*" }, upstream = { nodes = { "plain.test:" .. mock_port } } },
            },
        }, { env = { http_proxy = "", https_proxy = "", no_proxy = "",
                     HTTP_PROXY = "http://127.0.0.1:" .. px_port, HTTPS_PROXY = "127.0.0.1:" .. px_port,
                     NO_PROXY = "127.0.0.1:" .. mock_port } })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    before_each(function()
        helpers.write_file(px_log, "")
    end)

    it("sends a plain http provider call to the proxy in absolute form", function()
        local res = chat("viaproxy")
        assert.equal(200, res.status, res.body)
        assert.equal("chat.completion", res.json.object)
        local seen = proxy_requests()
        assert.equal(1, #seen)
        assert.is_false(seen[1].connect)
        assert.equal("http://plain.test:" .. mock_port .. "/v1/chat/completions", seen[1].target)
        assert.equal("plain.test:" .. mock_port, seen[1].host)
    end)

    it("streams a completion through the proxy, reusing its connection", function()
        local res = chat("viaproxy", { model = "gpt-4o-mini", stream = true, messages = { { role = "user", content = "hi" } } })
        assert.equal(200, res.status, res.body)
        assert.truthy(res.body:find("data: [DONE]", 1, true))
        chat("viaproxy")
        local seen = proxy_requests()
        assert.equal(2, #seen)
        assert.equal(seen[1].conn, seen[2].conn)
    end)

    it("tunnels an https provider call with CONNECT and checks its certificate", function()
        local res = chat("secure")
        -- the TLS stand-in answers {path, tls, sni}; openai-compatible passes a body it does not know through
        assert.equal(200, res.status, res.body)
        assert.is_true(res.json.tls)
        assert.equal("secure.test", res.json.sni)
        assert.equal("/v1/chat/completions", res.json.path)
        local seen = proxy_requests()
        assert.equal(1, #seen)
        assert.is_true(seen[1].connect)
        assert.equal("secure.test:" .. tls_port, seen[1].target)
        assert.is_nil((gw:log() or ""):find("TLS handshake failed", 1, true))
        assert.is_nil((gw:log() or ""):find("resolve secure.test", 1, true))
    end)

    it("goes direct for NO_PROXY hosts and for providers with proxy: false", function()
        local res = chat("direct")
        assert.equal(200, res.status, res.body)
        local out = chat("optout") -- direct, so plain.test does not resolve
        assert.equal(502, out.status, out.body)
        assert.same({}, proxy_requests())
        assert.truthy((gw:log() or ""):find("plain.test", 1, true))
    end)

    it("does not send route upstreams through the proxy", function()
        local res = assert(helpers.http("GET", gw.url("/plain/x")))
        assert.equal(502, res.status, res.body)
        assert.same({}, proxy_requests())
    end)
end)

describe("provider calls with an unusable proxy variable", function()
    teardown(function()
        helpers.stop_all()
    end)

    it("fail with 502 instead of going around the proxy", function()
        local mock_port = helpers.free_port()
        local mock = helpers.spawn("node " .. q(ROOT .. "/tests/mock/providers.js") .. " " .. mock_port .. " >/dev/null 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        local gw = helpers.start_gateway({
            node = { workers = 1 },
            providers = { p = { kind = "openai", endpoint = "http://127.0.0.1:" .. mock_port, api_key = "k" } },
            routes = { { id = "p", paths = { "/p/v1/*" }, plugins = { ["ai-proxy"] = { provider = "p" } } } },
        }, { env = { http_proxy = "", no_proxy = "", NO_PROXY = "", HTTP_PROXY = "socks5://127.0.0.1:1080" } })
        local res = assert(helpers.http("POST", gw.url("/p/v1/chat/completions"),
            { body = { model = "m", messages = { { role = "user", content = "hi" } } } }))
        assert.equal(502, res.status, res.body)
        assert.truthy((gw:log() or ""):find("HTTP_PROXY is set but is not an http:// proxy URL", 1, true))
    end)
end)
