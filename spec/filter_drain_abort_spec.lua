-- A client that stops reading and then resets the connection while the FILTER path (a body_filter
-- route, or sluice.ai streaming) waits for it to drain (sl_resp_wait_drain, commit 63d2dd6).
-- sl__conn_close drops the connection's reference on the request (which can free it: proxy client_gone has
-- already resumed and ended the coroutine) and then calls sl_req_sleep(c->drain_wait, 0) on it:
-- heap-use-after-free (ASan: vm.c sl_req_sleep <- conn.c sl__conn_close), and in the release build an abort
-- in uv_close / a double free when the timer fires.
local helpers = require("helpers")
local socket = require("socket")

local UPSTREAM = [[
import socket, sys, threading, os
port_file = sys.argv[1]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ.get("SLUICE_SPEC_PORT", "0")))); s.listen(16)
open(port_file + ".tmp", "w").write(str(s.getsockname()[1])); os.rename(port_file + ".tmp", port_file)
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d: return
        buf += d
    try:
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"10000\r\n" + b"x" * 65536 + b"\r\n"
        for _ in range(16384):
            c.sendall(piece)
        c.sendall(b"0\r\n\r\n")
    except OSError:
        pass
    c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
]]

local PLUGIN = [[
return { name = "spec-identity", priority = 10, schema = { type = "object" },
         body_filter = function(conf, ctx, chunk, eof) return nil end }
]]

describe("client reset while Lua waits for the client to drain", function()
    teardown(function()
        helpers.stop_all()
    end)

    it("keeps the worker alive", function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/up.py", UPSTREAM)
        helpers.write_file(dir .. "/spec-identity.lua", PLUGIN)
        helpers.spawn(string.format("timeout 60 python3 %s %s", dir .. "/up.py", dir .. "/port"))
        local port = helpers.wait_until(function() return tonumber(helpers.read_file(dir .. "/port")) end, 10)
        local gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { dir } },
            routes = { { id = "ff", paths = { "/ff" }, upstream = { nodes = { "127.0.0.1:" .. port } },
                         plugins = { ["spec-identity"] = {} } } },
        })
        for _ = 1, 3 do
            local c = socket.tcp()
            c:settimeout(2)
            if not c:connect("127.0.0.1", gw.port) then break end
            c:send("GET /ff HTTP/1.1\r\nHost: x\r\n\r\n")
            socket.sleep(1) -- read nothing: more than 1 MiB queues up and the coroutine waits for the drain
            c:setoption("linger", { on = true, timeout = 0 })
            c:close() -- RST
            socket.sleep(0.3)
        end
        socket.sleep(0.5)
        assert.is_true(gw.proc:alive(), "the gateway died:\n" .. gw:log():sub(-2000))
        local res = helpers.http("GET", gw.url("/nope"), { timeout = 2 })
        assert.equal(404, res and res.status)
    end)
end)
