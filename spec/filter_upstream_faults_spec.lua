-- The FILTER path (routes with a body_filter plugin) against a misbehaving or fast upstream:
-- a body the upstream cuts short stays cut short, and a client that does not read is not buffered without bound
-- (both fixed in 63d2dd6; PASS mode checked alongside). A raw upstream (python) cuts its body short or floods.
local helpers = require("helpers")
local socket = require("socket")

local UPSTREAM = [[
import socket, sys, threading, os
port_file, mode = sys.argv[1], sys.argv[2]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ.get("SLUICE_SPEC_PORT", "0")))); s.listen(16)
open(port_file + ".tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename(port_file + ".tmp", port_file)
def serve(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d: return
        buf += d
    if mode == "truncate":
        # a chunked body cut short: one chunk, then the connection closes without the last chunk
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        c.close()
    else:
        # "flood": a chunked body of up to 1 GiB, written as fast as the gateway takes it
        c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"10000\r\n" + b"x" * 65536 + b"\r\n"
        try:
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
return {
    name = "spec-identity",
    priority = 10,
    schema = { type = "object" },
    body_filter = function(conf, ctx, chunk, eof) return nil end,
}
]]

local function raw_upstream(mode)
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/up.py", UPSTREAM)
    local p = helpers.spawn(string.format("timeout 120 python3 %s %s %s", dir .. "/up.py", dir .. "/port", mode))
    local port = helpers.wait_until(function() return tonumber(helpers.read_file(dir .. "/port")) end, 10,
        "raw upstream did not start")
    return { proc = p, addr = "127.0.0.1:" .. port }
end

local function rss_kb(pid)
    local s = helpers.read_file("/proc/" .. pid .. "/status") or ""
    return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

describe("FILTER mode against a misbehaving upstream", function()
    local gw, trunc, flood

    setup(function()
        local pdir = helpers.tmpdir()
        helpers.write_file(pdir .. "/spec-identity.lua", PLUGIN)
        trunc, flood = raw_upstream("truncate"), raw_upstream("flood")
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", pdir } },
            routes = {
                { id = "t-filter", paths = { "/tf" }, upstream = { nodes = { trunc.addr } },
                  plugins = { ["spec-identity"] = {} } },
                { id = "t-pass", paths = { "/tp" }, upstream = { nodes = { trunc.addr } } },
                { id = "f-filter", paths = { "/ff" }, upstream = { nodes = { flood.addr } },
                  plugins = { ["spec-identity"] = {} } },
                { id = "f-pass", paths = { "/fp" }, upstream = { nodes = { flood.addr } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function fetch(path)
        return helpers.raw(gw.port, "GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            { timeout = 3 }) or ""
    end

    it("PASS: an upstream body cut short reaches the client cut short (no last chunk)", function()
        local out = fetch("/tp")
        assert.truthy(out:find("hello", 1, true), out)
        assert.falsy(out:find("\r\n0\r\n\r\n", 1, true), "the client must be able to tell the body is incomplete")
    end)

    it("FILTER: an upstream body cut short must not be turned into a complete chunked body", function()
        local out = fetch("/tf")
        assert.truthy(out:find("hello", 1, true), out)
        assert.falsy(out:find("\r\n0\r\n\r\n", 1, true),
            "truncated upstream response was terminated with 0\\r\\n\\r\\n: the client takes it as complete")
    end)

    local function buffered_by_slow_client(path)
        local base = rss_kb(gw.pid)
        local c = socket.tcp()
        c:settimeout(2)
        assert(c:connect("127.0.0.1", gw.port))
        c:setoption("keepalive", true)
        assert(c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\n\r\n"))
        -- the client reads nothing for 4 seconds
        local peak, deadline = 0, socket.gettime() + 4
        while socket.gettime() < deadline do
            peak = math.max(peak, rss_kb(gw.pid) - base)
            socket.sleep(0.2)
        end
        assert.is_true(gw.proc:alive() and rss_kb(gw.pid) > 0, "the gateway must be running while measured")
        c:close()
        socket.sleep(0.5)
        return peak
    end

    it("PASS: a client that does not read makes the gateway buffer a bounded amount", function()
        local grown = buffered_by_slow_client("/fp")
        assert.is_true(grown < 64 * 1024, "VmRSS grew by " .. grown .. " kB")
    end)

    it("FILTER: a client that does not read makes the gateway buffer a bounded amount", function()
        local grown = buffered_by_slow_client("/ff")
        assert.is_true(grown < 64 * 1024, "VmRSS grew by " .. grown .. " kB (no back-pressure in FILTER mode)")
    end)
end)
