-- limits.send_timeout must bound a *stalled* client, not the length of a download. A client that keeps
-- reading, only slower than the upstream sends, must get the whole body.
local helpers = require("helpers")
local socket = require("socket")

local UPSTREAM = [[
import socket, sys, threading, os
port_file = sys.argv[1]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ.get("SLUICE_SPEC_PORT", "0")))); s.listen(16)
open(port_file + ".tmp", "w").write(str(s.getsockname()[1])); os.rename(port_file + ".tmp", port_file)
SIZE = 6 * 1024 * 1024
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d: return
        buf += d
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE)
        piece = b"x" * 65536
        for _ in range(SIZE // 65536):
            c.sendall(piece)
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
]]

describe("send_timeout", function()
    local port

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/up.py", UPSTREAM)
        helpers.spawn(string.format("timeout 60 python3 %s %s", dir .. "/up.py", dir .. "/port"))
        port = helpers.wait_until(function() return tonumber(helpers.read_file(dir .. "/port")) end, 10)
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("still closes the connection of a client that stopped reading", function()
        local gw = helpers.start_gateway({
            node = { workers = 1, limits = { send_timeout = 1 } },
            routes = { { id = "big", paths = { "/big" }, upstream = { nodes = { "127.0.0.1:" .. port } } } },
        })
        local c = socket.tcp()
        c:settimeout(5)
        pcall(c.setoption, c, "recv-buffer-size", 32768)
        assert(c:connect("127.0.0.1", gw.port))
        assert(c:send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"))
        helpers.wait_until(function() return gw:log():find("send timeout", 1, true) end, 8,
            "a client that reads nothing was not timed out")
        c:close()
    end)

    it("does not cut a response to a client that reads steadily but slower than the upstream", function()
        local gw = helpers.start_gateway({
            node = { workers = 1, limits = { send_timeout = 2 } },
            routes = { { id = "big", paths = { "/big" }, upstream = { nodes = { "127.0.0.1:" .. port } } } },
        })
        local c = socket.tcp()
        c:settimeout(5)
        pcall(c.setoption, c, "recv-buffer-size", 32768)
        assert(c:connect("127.0.0.1", gw.port))
        assert(c:send("GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        -- about 600 kB/s: 6 MB take ~10 s, three times send_timeout, but the client never stalls for long
        local got, t0, err = 0, socket.gettime(), nil
        while socket.gettime() - t0 < 20 do
            local data, e, partial = c:receive(16384)
            local n = #(data or partial or "")
            got = got + n
            if not data then err = e break end
            socket.sleep(0.027)
        end
        c:close()
        local elapsed = socket.gettime() - t0
        assert.is_true(got >= 6 * 1024 * 1024, string.format(
            "connection ended (%s) after %.1f s with %d of %d body bytes; log:\n%s", tostring(err), elapsed, got,
            6 * 1024 * 1024, gw:log()))
    end)
end)
