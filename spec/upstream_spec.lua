-- The proxy path on the shared upstream layer: HTTPS upstreams (verified against a test CA made here with
-- openssl, hostname mismatch and unknown CA rejected), keep-alive reuse over TLS, sluice.http over HTTPS, and a
-- 100 MB response streamed through with flat gateway memory.
local helpers = require("helpers")
local socket = require("socket")
local cjson = require("cjson.safe")

local function sh(cmd)
    local code, out = helpers.exec(cmd, 30)
    assert(code == 0, cmd .. ": " .. out)
    return out
end

-- A CA and a certificate for localhost/127.0.0.1 signed by it, plus a second, unrelated CA.
local function make_pki(dir)
    local q = helpers.shell_quote
    local d = q(dir)
    local ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
    sh("cd " .. d .. " && openssl req -x509 " .. ec .. " -keyout ca.key -out ca.pem -days 2 -subj '/CN=Sluice Test CA'")
    sh("cd " .. d .. " && openssl req -x509 " .. ec .. " -keyout other.key -out other-ca.pem -days 2 -subj '/CN=Other CA'")
    sh("cd " .. d .. " && openssl req " .. ec .. " -keyout srv.key -out srv.csr -subj '/CN=localhost'")
    helpers.write_file(dir .. "/ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    sh("cd " .. d .. " && openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 2 -extfile ext")
    -- same CA, but for another name
    sh("cd " .. d .. " && openssl req " .. ec .. " -keyout wrong.key -out wrong.csr -subj '/CN=wrong.example'")
    helpers.write_file(dir .. "/ext2", "subjectAltName=DNS:wrong.example\n")
    sh("cd " .. d .. " && openssl x509 -req -in wrong.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out wrong.pem -days 2 -extfile ext2")
    return { ca = dir .. "/ca.pem", other_ca = dir .. "/other-ca.pem", cert = dir .. "/srv.pem", key = dir .. "/srv.key",
             wrong_cert = dir .. "/wrong.pem", wrong_key = dir .. "/wrong.key" }
end

local function start_tls_upstream(cert, key)
    local dir = helpers.tmpdir()
    helpers.spawn(string.format("node %s %s %s %s >%s 2>&1", helpers.shell_quote(helpers.ROOT .. "/spec/support/tls_upstream.js"),
        helpers.shell_quote(cert), helpers.shell_quote(key), helpers.shell_quote(dir .. "/port"),
        helpers.shell_quote(dir .. "/out.log")))
    return helpers.wait_until(function() return tonumber(helpers.read_file(dir .. "/port")) end, 10, "TLS upstream")
end

local function rss_kb(pid)
    -- the gateway runs under `sh -c exec`, so pid is the gateway itself
    local s = helpers.read_file("/proc/" .. pid .. "/status") or ""
    return tonumber(s:match("VmRSS:%s*(%d+)"))
end

describe("upstreams", function()
    local pki, tport, wport

    setup(function()
        pki = make_pki(helpers.tmpdir())
        tport = start_tls_upstream(pki.cert, pki.key)
        wport = start_tls_upstream(pki.wrong_cert, pki.wrong_key)
    end)

    teardown(function()
        helpers.stop_all()
    end)

    describe("HTTPS", function()
        local gw
        setup(function()
            gw = helpers.start_gateway({
                node = { workers = 1,
                         plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/http_plugins" } },
                upstreams = {
                    good = { scheme = "https", nodes = { "localhost:" .. tport }, tls = { ca_file = pki.ca } },
                    mismatch = { scheme = "https", nodes = { "localhost:" .. wport }, tls = { ca_file = pki.ca } },
                    unknown_ca = { scheme = "https", nodes = { "localhost:" .. tport } },
                    other_ca = { scheme = "https", nodes = { "localhost:" .. tport }, tls = { ca_file = pki.other_ca } },
                    insecure = { scheme = "https", nodes = { "localhost:" .. tport }, tls = { verify = false } },
                },
                routes = {
                    { id = "good", paths = { "/good/*" }, upstream = "good", strip_prefix = true },
                    { id = "mismatch", paths = { "/mismatch" }, upstream = "mismatch" },
                    { id = "unknown", paths = { "/unknown" }, upstream = "unknown_ca" },
                    { id = "other", paths = { "/other" }, upstream = "other_ca" },
                    { id = "insecure", paths = { "/insecure" }, upstream = "insecure" },
                    { id = "probe", paths = { "/probe" }, plugins = { ["http-probe"] = {} } },
                },
            })
        end)

        it("proxies to a verified HTTPS upstream and reuses the TLS connection", function()
            local c = assert(helpers.client(gw.port))
            local r1 = assert(c:request("GET", "/good/a"))
            local r2 = assert(c:request("GET", "/good/b"))
            c:close()
            assert.equal(200, r1.status, r1.body)
            assert.is_true(r1.json.tls)
            assert.equal("/a", r1.json.path)
            assert.equal("localhost", r1.json.sni)
            assert.equal(r1.json.conn, r2.json.conn) -- no new handshake for the second request
        end)

        it("rejects an unknown CA, a certificate of another CA, and a hostname mismatch", function()
            for _, p in ipairs({ "/unknown", "/other", "/mismatch" }) do
                local r = assert(helpers.http("GET", gw.url(p)))
                assert.equal(502, r.status)
                assert.matches("TLS", r.json.error.message)
            end
            assert.matches("TLS handshake with localhost:%d+", gw:log())
        end)

        it("skips verification when told to", function()
            assert.equal(200, assert(helpers.http("GET", gw.url("/insecure"))).status)
        end)

        it("verifies HTTPS from sluice.http too", function()
            local function probe(url, ca)
                local h = { ["x-target"] = url, ["x-mode"] = "buffer", ["x-ca"] = ca }
                local r = assert(helpers.http("GET", gw.url("/probe"), { headers = h }))
                return cjson.decode(r.body)
            end
            assert.equal("tls", probe("https://localhost:" .. tport .. "/x").err) -- the system bundle lacks the test CA
            assert.equal("tls", probe("https://localhost:" .. wport .. "/x", pki.ca).err) -- wrong name
            local r = probe("https://localhost:" .. tport .. "/x", pki.ca)
            assert.equal(200, r.status, cjson.encode(r))
            assert.is_true(cjson.decode(r.body).tls)
        end)
    end)

    describe("streaming", function()
        it("proxies a 100 MB response with flat gateway memory", function()
            local dir = helpers.tmpdir()
            helpers.spawn(string.format("node %s %s >/dev/null 2>&1",
                helpers.shell_quote(helpers.ROOT .. "/spec/support/bad_upstream.js"), helpers.shell_quote(dir .. "/port")))
            local bport = helpers.wait_until(function() return tonumber(helpers.read_file(dir .. "/port")) end, 10)
            local gw = helpers.start_gateway({
                node = { workers = 1 },
                routes = { { id = "big", paths = { "/big" }, upstream = { nodes = { "127.0.0.1:" .. bport } } } },
            })
            local base_rss = rss_kb(gw.pid)
            local total = 100 * 1024 * 1024
            local c = socket.tcp()
            c:settimeout(30)
            assert(c:connect("127.0.0.1", gw.port))
            c:send("GET /big?n=" .. total .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            local got, max_rss, t0 = 0, base_rss, socket.gettime()
            -- read slowly at first (a slow client: the gateway must not buffer the stream), then fast
            while true do
                local data, _, partial = c:receive(got < 8 * 1024 * 1024 and 16384 or 1048576)
                local piece = data or partial
                if piece and #piece > 0 then got = got + #piece end
                if got < 8 * 1024 * 1024 then socket.sleep(0.001) end
                max_rss = math.max(max_rss, rss_kb(gw.pid) or 0)
                if not data then break end
            end
            c:close()
            assert.is_true(got > total and got < total + 1024, "received " .. got)
            -- growth, not the absolute value: an ASan build (SLUICE_BIN=build-asan/sluice) starts higher
            assert.is_true(max_rss - base_rss < 40 * 1024, "gateway VmRSS reached " .. max_rss .. " kB (start " .. base_rss .. " kB)")
            print(string.format("\n100 MB proxied in %.2fs, gateway VmRSS %d kB -> max %d kB", socket.gettime() - t0,
                base_rss, max_rss))
            gw:stop()
        end)
    end)
end)
