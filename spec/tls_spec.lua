-- HTTPS listeners with the real binary: certificates chosen by SNI, the default one for unknown names, plain
-- HTTP on the TLS port, certificate reload on SIGHUP, bad certificate files rejected by `sluice -t`.
-- Certificates are made at test time by spec/support/certs.sh (openssl CLI); clients are curl and openssl.
local helpers = require("helpers")

local q = helpers.shell_quote

local function certs(dir, ...)
    local code, out = helpers.exec("sh " .. q(helpers.ROOT .. "/spec/support/certs.sh") .. " " .. q(dir) .. " " ..
        table.concat({ ... }, " "), 30)
    assert(code == 0, "certs.sh failed: " .. out)
end

-- curl over HTTPS to 127.0.0.1:port for host; returns exit code, http status, verbose output, body.
local function curl(port, host, path, opts)
    opts = opts or {}
    local cmd = ("curl -sS -v --max-time 5 %s --resolve %s:%d:127.0.0.1 -w '\\n__status:%%{http_code}' %s %s"):format(
        opts.cacert and ("--cacert " .. q(opts.cacert)) or "-k", host, port, opts.args or "",
        q(("https://%s:%d%s"):format(host, port, path or "/")))
    local code, out = helpers.exec(cmd, 10)
    return code, tonumber(out:match("__status:(%d+)")), out
end

local function subject(out)
    return out:match("subject: ([^\r\n]*)")
end

describe("TLS listener", function()
    local dir, mock, gw, tls_port

    local function config(default, extra)
        return { node = { listen = { "127.0.0.1:" .. helpers.free_port(), { addr = "127.0.0.1:" .. tls_port, tls = {
                    cert = dir .. "/" .. default .. ".crt", key = dir .. "/" .. default .. ".key", certs = extra } } } },
                 routes = { { id = "all", paths = { "/*" }, upstream = { nodes = { mock.addr } } } } }
    end

    setup(function()
        dir = helpers.tmpdir()
        certs(dir, "a.test", "b.test=b.test,*.b.test", "c.test")
        mock = helpers.mock_upstream()
        tls_port = helpers.free_port()
        gw = helpers.start_gateway(config("a.test", { { cert = dir .. "/b.test.crt", key = dir .. "/b.test.key" } }))
        helpers.wait_port(tls_port, gw.proc, 5)
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("answers each SNI name with its certificate, verified against the test CA", function()
        local code, status, out = curl(tls_port, "a.test", "/hello", { cacert = dir .. "/ca.crt" })
        assert.equal(0, code, out)
        assert.equal(200, status)
        assert.matches("CN=a.test", subject(out), 1, true)
        assert.equal("/hello", mock:last().path)
        assert.matches("TLSv1.2", out, 1, true)

        code, status, out = curl(tls_port, "b.test", "/b", { cacert = dir .. "/ca.crt" })
        assert.equal(0, code, out)
        assert.equal(200, status)
        assert.matches("CN=b.test", subject(out), 1, true)

        code, status, out = curl(tls_port, "api.b.test", "/wild", { cacert = dir .. "/ca.crt" })
        assert.equal(0, code, out)
        assert.equal(200, status)
        assert.matches("CN=b.test", subject(out), 1, true)
    end)

    it("sends the default certificate for an unknown name", function()
        local code, _, out = curl(tls_port, "unknown.test", "/", { cacert = dir .. "/ca.crt" })
        assert.is_not.equal(0, code, out) -- curl: the name does not match
        code, _, out = curl(tls_port, "unknown.test", "/")
        assert.equal(0, code, out)
        assert.matches("CN=a.test", subject(out), 1, true)
    end)

    it("logs a failed handshake with the client address, SNI and reason", function()
        -- a client that does not trust our CA aborts the handshake with an alert
        local code = curl(tls_port, "a.test", "/", { cacert = dir .. "/rogue.crt" })
        assert.is_not.equal(0, code)
        helpers.wait_until(function()
            return gw:log():find("client 127.0.0.1: TLS handshake failed (SNI a.test): SSL - A fatal alert", 1, true)
        end, 5, "handshake failure not logged")
    end)

    it("keeps a connection alive across requests and carries large bodies both ways", function()
        local body = dir .. "/big.json"
        helpers.write_file(body, '{"x":"' .. string.rep("y", 1024 * 1024) .. '"}')
        local code, status, out = curl(tls_port, "a.test", "/big", { cacert = dir .. "/ca.crt",
            args = "-H 'content-type: application/json' --data-binary @" .. q(body) .. " -o /dev/null" })
        assert.equal(0, code, out)
        assert.equal(200, status)
        assert.equal(1024 * 1024 + 8, #mock:last().body)
        -- two URLs on one curl: the second reuses the TLS connection
        code, out = helpers.exec(("curl -sS -v --cacert %s --resolve a.test:%d:127.0.0.1 https://a.test:%d/one https://a.test:%d/two -o /dev/null -o /dev/null")
            :format(q(dir .. "/ca.crt"), tls_port, tls_port, tls_port), 10)
        assert.equal(0, code, out)
        assert.matches("Re%-using existing connection", out)
        assert.equal("/two", mock:last().path)
    end)

    it("answers plain HTTP on the TLS port with a 400 and keeps serving", function()
        local resp = helpers.raw(tls_port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert.matches("^HTTP/1.1 400", resp)
        assert.matches("plain HTTP request sent to an HTTPS port", resp, 1, true)
        -- garbage that is neither HTTP nor TLS just closes the connection
        helpers.raw(tls_port, "\1\2\3\4\5\6\7\8")
        -- a client that connects and says nothing is closed at header_timeout (not tested: 10 s); this one
        -- sends half a ClientHello and leaves
        helpers.raw(tls_port, "\22\3\1\0\200\1\0\0", { timeout = 0.2 })
        local code, status = curl(tls_port, "a.test", "/after", { cacert = dir .. "/ca.crt" })
        assert.equal(0, code)
        assert.equal(200, status)
        assert.truthy(gw.proc:alive())
    end)

    it("reloads certificates on SIGHUP: new connections get the new ones", function()
        -- the same config with another default certificate (listen addresses stay: changing them needs a restart)
        local doc = require("cjson").decode(helpers.read_file(gw.file))
        doc.node.listen[2].tls.cert, doc.node.listen[2].tls.key = dir .. "/c.test.crt", dir .. "/c.test.key"
        helpers.write_file(gw.file, helpers.json(doc))
        gw:reload()
        helpers.wait_until(function()
            return gw:log():find("TLS certificates reloaded", 1, true)
        end, 5, "no reload")
        local code, _, out = curl(tls_port, "unknown.test", "/")
        assert.equal(0, code, out)
        assert.matches("CN=c.test", subject(out), 1, true)
        code, _, out = curl(tls_port, "b.test", "/", { cacert = dir .. "/ca.crt" })
        assert.equal(0, code, out)
        assert.matches("CN=b.test", subject(out), 1, true)

        -- a broken certificate on reload: the config is rejected and the old certificates stay
        doc.node.listen[2].tls.cert = dir .. "/missing.crt"
        helpers.write_file(gw.file, helpers.json(doc))
        gw:reload()
        helpers.wait_until(function()
            return gw:log():find("missing.crt", 1, true)
        end, 5, "bad certificate not reported")
        code, _, out = curl(tls_port, "unknown.test", "/")
        assert.equal(0, code, out)
        assert.matches("CN=c.test", subject(out), 1, true)
    end)
end)

describe("TLS config", function()
    local dir

    setup(function()
        dir = helpers.tmpdir()
        certs(dir, "a.test", "b.test")
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function check(tls)
        local file = helpers.write_file(dir .. "/t.yaml", "node:\n  listen:\n    - addr: \"127.0.0.1:1\"\n      tls: " ..
            helpers.json(tls) .. "\nroutes: []\n")
        return file, helpers.exec(("env SLUICE_HOME=%s %s -t -c %s"):format(q(helpers.ROOT), q(helpers.BIN), q(file)), 15)
    end

    it("sluice -t accepts good certificate files", function()
        local _, code, out = check({ cert = dir .. "/a.test.crt", key = dir .. "/a.test.key",
                                     certs = { { cert = dir .. "/b.test.crt", key = dir .. "/b.test.key" } } })
        assert.equal(0, code, out)
    end)

    it("sluice -t rejects a missing certificate file, a key that does not match, with file:line", function()
        local file, code, out = check({ cert = dir .. "/nope.crt", key = dir .. "/a.test.key" })
        assert.is_not.equal(0, code)
        assert.matches(file .. ":4: node.listen[1].tls: certificate " .. dir .. "/nope.crt", out, 1, true)

        local _
        _, code, out = check({ cert = dir .. "/a.test.crt", key = dir .. "/a.test.key",
                               certs = { { cert = dir .. "/b.test.crt", key = dir .. "/a.test.key" } } })
        assert.is_not.equal(0, code)
        assert.matches("node.listen[1].tls.certs[1]: private key " .. dir .. "/a.test.key does not match", out, 1, true)
    end)

    it("sluice -t rejects a tls block without a key", function()
        local _, code, out = check({ cert = dir .. "/a.test.crt" })
        assert.is_not.equal(0, code)
        assert.matches("key", out)
    end)
end)
