-- An upstream TLS connection whose peer sent close_notify in the same read as the end of a
-- keep-alive response must not go back to the pool (core/upstream/pool.c tls_read); otherwise the next request
-- reuses a dead TLS session, and a POST, which is not replayed, fails. The connection is closed, the POST goes
-- on a fresh one and gets 200.
local helpers = require("helpers")
local q = helpers.shell_quote

-- Python TLS server: answers one request per connection with a keep-alive 200, puts close_notify in the same
-- TCP send, then keeps the socket open 1.5 s (ignoring further bytes) and closes it. Counts connections.
local SERVER = [[
import socket, ssl, sys, threading, time
port, crt, key, countf = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(crt, key)
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(("127.0.0.1", port)); ls.listen(16)
n = [0]
def serve(s):
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    o = ctx.wrap_bio(inc, out, server_side=True)
    s.settimeout(5)
    def pump():
        d = out.read()
        if d: s.sendall(d)
    try:
        while True:
            try: o.do_handshake(); break
            except ssl.SSLWantReadError:
                pump(); d = s.recv(65536)
                if not d: return
                inc.write(d)
        pump()
        buf = b""
        while b"\r\n\r\n" not in buf:
            try: buf += o.read(65536)
            except ssl.SSLWantReadError:
                d = s.recv(65536)
                if not d: return
                inc.write(d)
        o.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
        try: o.unwrap()
        except ssl.SSLWantReadError: pass
        s.sendall(out.read())          # response record + close_notify alert in one send
        end = time.time() + 1.5
        while time.time() < end:
            s.settimeout(max(0.01, end - time.time()))
            try:
                if not s.recv(65536): break
            except Exception: pass
    finally:
        s.close()
while True:
    c, _ = ls.accept()
    n[0] += 1
    open(countf, "w").write(str(n[0]))
    threading.Thread(target=serve, args=(c,), daemon=True).start()
]]

describe("upstream TLS close_notify", function()
    local dir, port, countf
    setup(function()
        dir = helpers.tmpdir()
        local code, out = helpers.exec("sh " .. q(helpers.ROOT .. "/spec/support/certs.sh") .. " " .. q(dir) .. " up.test", 30)
        assert(code == 0, out)
        port = helpers.free_port()
        countf = dir .. "/conns"
        local py = helpers.write_file(dir .. "/srv.py", SERVER)
        local p = helpers.spawn(("timeout 60 python3 %s %d %s %s %s >%s 2>&1"):format(q(py), port,
            q(dir .. "/up.test.crt"), q(dir .. "/up.test.key"), q(countf), q(dir .. "/srv.log")))
        assert(helpers.wait_port(port, p, 10))
    end)
    teardown(function() helpers.stop_all() end)

    it("does not pool a connection the upstream closed with close_notify", function()
        local gw = helpers.start_gateway({ node = { workers = 1 }, routes = { { id = "r", paths = { "/*" }, upstream = {
            nodes = { "127.0.0.1:" .. port }, scheme = "https", pass_host = "rewrite", host = "up.test",
            tls = { ca_file = dir .. "/ca.crt" } } } } })
        local before = tonumber(helpers.read_file(countf) or "0") or 0 -- wait_port's probe connected once
        local r1 = helpers.http("GET", gw.url("/a"), { timeout = 5 })
        assert.equal(200, r1.status, r1.body)
        helpers.sleep(0.2)
        local r2 = helpers.http("POST", gw.url("/b"), { body = "x", timeout = 8 })
        assert.equal(200, r2.status, "POST after close_notify: " .. tostring(r2.status) .. " " .. tostring(r2.body))
        assert.equal(before + 2, tonumber(helpers.read_file(countf)), "one fresh connection per request")
        gw:stop()
    end)
end)
