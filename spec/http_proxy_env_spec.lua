-- sluice.http through the proxies of the environment, end to end: HTTP_PROXY (absolute-form requests),
-- HTTPS_PROXY (a CONNECT tunnel, the certificate still verified against the target's name), NO_PROXY (by name,
-- by IP:port), `proxy = false`, a proxy that refuses CONNECT and one that is down.
-- The proxy (spec/support/forward_proxy.js) takes every name for 127.0.0.1 and logs what it was asked; the
-- targets use names like plain.test that only the proxy "resolves": when one answers, it went through the
-- proxy, and when the gateway itself tries such a name, it fails with "dns".
local helpers = require("helpers")
local cjson = require("cjson.safe")

local q = helpers.shell_quote

local function start_proxy()
    local dir = helpers.tmpdir()
    local px = { log_file = dir .. "/requests.jsonl" }
    px.proc = helpers.spawn(string.format("node %s %s %s >%s 2>&1",
        q(helpers.ROOT .. "/spec/support/forward_proxy.js"), q(px.log_file), q(dir .. "/port"), q(dir .. "/out.log")))
    px.port = helpers.wait_until(function()
        assert(px.proc:alive(), "proxy exited: " .. (helpers.read_file(dir .. "/out.log") or ""))
        return tonumber(helpers.read_file(dir .. "/port"))
    end, 10, "forward proxy did not start")
    function px.requests()
        local out = {}
        for line in (helpers.read_file(px.log_file) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
        return out
    end
    function px.clear() helpers.write_file(px.log_file, "") end
    return px
end

local function tls_upstream(dir)
    local proc = helpers.spawn(string.format("node %s %s %s %s >/dev/null 2>&1",
        q(helpers.ROOT .. "/spec/support/tls_upstream.js"), q(dir .. "/secure.test.crt"), q(dir .. "/secure.test.key"),
        q(dir .. "/tls_port")))
    local port = helpers.wait_until(function()
        assert(proc:alive(), "TLS upstream exited")
        return tonumber(helpers.read_file(dir .. "/tls_port"))
    end, 10, "TLS upstream did not start")
    return port
end

local function gateway(env)
    -- the runner's own proxy settings must not leak in: empty lower-case ones fall back to the upper-case
    local e = { http_proxy = "", https_proxy = "", no_proxy = "", HTTP_PROXY = "", HTTPS_PROXY = "", NO_PROXY = "" }
    for k, v in pairs(env) do e[k] = v end
    return helpers.start_gateway({
        node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/http_plugins" } },
        routes = { { id = "call", paths = { "/call" }, plugins = { ["http-call"] = {} } } },
    }, { env = e })
end

-- Runs sluice.http.request with each option table in turn inside the gateway; returns the results.
local function call(gw, list)
    local res = assert(helpers.http("POST", gw.url("/call"), { body = list, timeout = 30 }))
    assert.equal(200, res.status, res.body)
    return res.json.results
end

describe("sluice.http with HTTP_PROXY / HTTPS_PROXY / NO_PROXY", function()
    local dir, ca, px, up, other, tls_port, gw

    setup(function()
        dir = helpers.tmpdir()
        local code, out = helpers.exec("sh " .. q(helpers.ROOT .. "/spec/support/certs.sh") .. " " .. q(dir) .. " secure.test", 30)
        assert(code == 0, out)
        ca = dir .. "/ca.crt"
        tls_port = tls_upstream(dir)
        px = start_proxy()
        up = helpers.mock_upstream()
        other = helpers.mock_upstream()
        gw = gateway({
            HTTP_PROXY = "http://127.0.0.1:" .. px.port,
            https_proxy = "127.0.0.1:" .. px.port,                       -- no scheme; lower-case wins over
            HTTPS_PROXY = "http://127.0.0.1:" .. helpers.free_port(),     -- this dead one
            NO_PROXY = "localhost, .internal.test,127.0.0.1:" .. up.port,
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    before_each(function()
        px.clear()
        up:clear()
        other:clear()
    end)

    it("sends an http:// URL to HTTP_PROXY in absolute form, and keeps that connection alive", function()
        local url = "http://plain.test:" .. up.port .. "/a?x=1"
        local r = call(gw, { { url = url }, { url = url } })
        assert.equal(200, r[1].status, cjson.encode(r[1]))
        local seen = cjson.decode(r[1].body)
        assert.equal("/a?x=1", seen.path)
        assert.equal("plain.test:" .. up.port, seen.headers.host)
        assert.equal(200, r[2].status, cjson.encode(r[2]))
        assert.is_true(r[2].reused)
        local p = px.requests()
        assert.equal(2, #p)
        for _, x in ipairs(p) do
            assert.equal("GET", x.method)
            assert.is_false(x.connect)
            assert.equal(url, x.target)
            assert.equal("plain.test:" .. up.port, x.host)
        end
        assert.equal(p[1].conn, p[2].conn) -- one connection to the proxy for both
    end)

    it("tunnels an https:// URL through CONNECT, verifies the target's name, reuses the tunnel", function()
        local base = "https://secure.test:" .. tls_port
        local r = call(gw, { { url = base .. "/one", ca_file = ca }, { url = base .. "/two", ca_file = ca } })
        assert.equal(200, r[1].status, cjson.encode(r[1]))
        assert.equal(200, r[2].status, cjson.encode(r[2]))
        local one, two = cjson.decode(r[1].body), cjson.decode(r[2].body)
        assert.equal("/one", one.path)
        assert.equal("secure.test", one.sni)
        assert.is_true(r[2].reused)
        assert.equal(one.conn, two.conn) -- one TLS session
        local p = px.requests()
        assert.equal(1, #p, cjson.encode(p)) -- one CONNECT for both requests
        assert.is_true(p[1].connect)
        assert.equal("CONNECT", p[1].method)
        assert.equal("secure.test:" .. tls_port, p[1].target)
        assert.equal("secure.test:" .. tls_port, p[1].host)
    end)

    it("still rejects a certificate that does not carry the target's name", function()
        local r = call(gw, { { url = "https://other.test:" .. tls_port .. "/", ca_file = ca } })[1]
        assert.equal("tls", r.err, cjson.encode(r))
        local p = px.requests()
        assert.equal(1, #p)
        assert.equal("other.test:" .. tls_port, p[1].target) -- the tunnel was open; the handshake failed
    end)

    it("brackets an IPv6 literal in CONNECT", function()
        local r = call(gw, { { url = "https://[::1]:" .. tls_port .. "/v6", ssl_verify = false } })[1]
        assert.equal(200, r.status, cjson.encode(r))
        local p = px.requests()
        assert.equal(1, #p)
        assert.equal("[::1]:" .. tls_port, p[1].target)
        assert.equal("[::1]:" .. tls_port, p[1].host)
    end)

    it("goes direct for a NO_PROXY name (and its subdomains)", function()
        local r = call(gw, {
            { url = "http://localhost:" .. up.port .. "/b" },
            { url = "http://svc.internal.test:" .. up.port .. "/" }, -- the proxy would know it; the gateway does not
        })
        assert.equal(200, r[1].status, cjson.encode(r[1]))
        assert.equal("localhost:" .. up.port, cjson.decode(r[1].body).headers.host)
        assert.equal("dns", r[2].err, cjson.encode(r[2]))
        assert.same({}, px.requests())
        assert.equal("/b", up:last().path)
    end)

    it("goes direct for a NO_PROXY IP:port, and not for another port of that IP", function()
        local r = call(gw, {
            { url = "http://127.0.0.1:" .. up.port .. "/c" },
            { url = "http://127.0.0.1:" .. other.port .. "/d" },
        })
        assert.equal(200, r[1].status)
        assert.equal(200, r[2].status)
        local p = px.requests()
        assert.equal(1, #p, cjson.encode(p))
        assert.equal("http://127.0.0.1:" .. other.port .. "/d", p[1].target)
        assert.equal("/c", up:last().path)
        assert.equal("/d", other:last().path)
    end)

    it("goes direct with proxy = false", function()
        local r = call(gw, {
            { url = "http://127.0.0.1:" .. other.port .. "/e", proxy = false },
            { url = "http://plain.test:" .. up.port .. "/", proxy = false },
            { url = "https://secure.test:" .. tls_port .. "/", proxy = false, ca_file = ca },
        })
        assert.equal(200, r[1].status, cjson.encode(r[1]))
        assert.equal("/e", other:last().path)
        assert.equal("dns", r[2].err, cjson.encode(r[2]))
        assert.equal("dns", r[3].err, cjson.encode(r[3]))
        assert.same({}, px.requests())
    end)

    it("reports a refused CONNECT as a connect error with the proxy's answer", function()
        local r = call(gw, { { url = "https://denied.test:" .. tls_port .. "/", ca_file = ca } })[1]
        assert.equal("connect", r.err, cjson.encode(r))
        assert.matches("proxy refused CONNECT: HTTP/1.1 403 Forbidden", r.detail, 1, true)
        assert.equal(1, #px.requests())
    end)

    it("reports a proxy that is down as a connect error naming the proxy", function()
        local dead = helpers.free_port()
        local gw2 = gateway({ HTTP_PROXY = "http://127.0.0.1:" .. dead, HTTPS_PROXY = "http://127.0.0.1:" .. dead })
        local r = call(gw2, {
            { url = "http://plain.test:" .. up.port .. "/" },
            { url = "https://secure.test:" .. tls_port .. "/", ca_file = ca },
            { url = "http://127.0.0.1:" .. up.port .. "/direct", proxy = false },
        })
        for i = 1, 2 do
            assert.equal("connect", r[i].err, cjson.encode(r[i]))
            assert.matches("connect to 127.0.0.1:" .. dead, r[i].detail, 1, true)
        end
        assert.equal(200, r[3].status)
        gw2:stop()
    end)

    it("fails requests when a proxy variable is set but unusable, instead of going around the proxy", function()
        local gw3 = gateway({ HTTP_PROXY = "socks5://127.0.0.1:" .. px.port, HTTPS_PROXY = "https://127.0.0.1:" .. px.port })
        local r = call(gw3, {
            { url = "http://127.0.0.1:" .. up.port .. "/" },
            { url = "https://secure.test:" .. tls_port .. "/", ca_file = ca },
            { url = "http://127.0.0.1:" .. up.port .. "/direct", proxy = false },
        })
        assert.equal("connect", r[1].err, cjson.encode(r[1]))
        assert.matches("HTTP_PROXY is not an http:// proxy URL", r[1].detail, 1, true)
        assert.equal("connect", r[2].err, cjson.encode(r[2]))
        assert.matches("HTTPS_PROXY is not an http:// proxy URL", r[2].detail, 1, true)
        assert.equal(200, r[3].status)
        assert.same({}, px.requests())
        assert.equal("/direct", up:last().path) -- the only request that reached the upstream
        assert.equal(1, #up:requests())
        assert.matches("is set but is not an http:// proxy URL", gw3:log(), 1, true)
        gw3:stop()
    end)
end)
