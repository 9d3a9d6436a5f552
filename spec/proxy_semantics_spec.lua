-- Proxying semantics (RFC 9110/9112) — retries of non-idempotent requests on a reused upstream
-- connection, and hop-by-hop headers nominated by the Connection header.
local helpers = require("helpers")

-- Raw upstream: answers the first request on a connection with 200 (keep-alive); on a connection's second
-- request it reads the request, logs it, and closes without answering (like an upstream that crashed while
-- processing it, or closed its idle keep-alive connection while the request was in flight).
-- Every request line is appended to LOG. In "hop" mode it answers with a Connection-nominated header.
local UPSTREAM = [[
import socket, sys, threading, os
port_file, log, mode = sys.argv[1], sys.argv[2], sys.argv[3]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ.get("SLUICE_SPEC_PORT", "0")))); s.listen(16)
open(port_file + ".tmp", "w").write(str(s.getsockname()[1])); os.rename(port_file + ".tmp", port_file)
lock = threading.Lock()
def read_req(c, buf):
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d: return None, b""
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    cl = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length": cl = int(v)
    while len(rest) < cl:
        d = c.recv(65536)
        if not d: break
        rest += d
    return head, rest[cl:]
def serve(c):
    buf, n = b"", 0
    while True:
        head, buf = read_req(c, buf)
        if head is None: break
        n += 1
        with lock:
            open(log, "ab").write(head.split(b"\r\n")[0] + b"\n")
        if mode == "hop":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive, X-Up-Hop\r\n"
                      b"X-Up-Hop: internal\r\n\r\nok")
        elif n == 1:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        else:
            c.close(); return
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
]]

local function raw_upstream(mode)
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/up.py", UPSTREAM)
    helpers.spawn(string.format("timeout 120 python3 %s %s %s %s", dir .. "/up.py", dir .. "/port", dir .. "/log", mode))
    local port = helpers.wait_until(function() return tonumber(helpers.read_file(dir .. "/port")) end, 10,
        "raw upstream did not start")
    return { addr = "127.0.0.1:" .. port, log = function() return helpers.read_file(dir .. "/log") or "" end }
end

describe("proxy semantics", function()
    local gw, dropper, hop, mock

    setup(function()
        dropper, hop = raw_upstream("drop"), raw_upstream("hop")
        mock = helpers.mock_upstream()
        gw = helpers.start_gateway({
            node = { workers = 1 },
            routes = {
                { id = "drop", paths = { "/drop/*" }, upstream = { nodes = { dropper.addr } } },
                { id = "hop", paths = { "/hop" }, upstream = { nodes = { hop.addr } } },
                { id = "echo", paths = { "/echo" }, upstream = { nodes = { mock.addr } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("does not send a POST twice when the reused upstream connection dies after taking it", function()
        local c = assert(helpers.client(gw.port))
        assert.equal(200, c:request("GET", "/drop/warm").status) -- leaves a kept-alive upstream connection
        local res = c:request("POST", "/drop/charge", { body = "amount=100" })
        c:close()
        local posts = select(2, dropper.log():gsub("POST /drop/charge", ""))
        assert.equal(1, posts, "upstream received the POST " .. posts .. " times (client got " ..
            tostring(res and res.status) .. ")")
    end)

    it("does not forward request headers nominated by the client's Connection header", function()
        local res = helpers.http("GET", gw.url("/echo"), {
            headers = { connection = "close, x-hop-secret", ["x-hop-secret"] = "for-the-gateway-only" } })
        assert.equal(200, res.status)
        assert.is_nil(mock:last().headers["x-hop-secret"], "x-hop-secret reached the upstream")
    end)

    it("does not pass on response headers nominated by the upstream's Connection header", function()
        local res = helpers.http("GET", gw.url("/hop"))
        assert.equal(200, res.status)
        assert.is_nil(res.headers["x-up-hop"], "x-up-hop reached the client")
    end)
end)
