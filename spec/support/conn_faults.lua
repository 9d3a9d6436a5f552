-- Shared by the client-connection fault specs (spec/conn_*_spec.lua): the counting upstream
-- (spec/support/stream_upstream.js), the gateway's descriptors and memory from /proc, raw clients.
local helpers = require("helpers")
local socket = require("socket")
local cjson = require("cjson.safe")

local _M = {}

--- Starts stream_upstream.js; returns { addr, port, stats(), reset() }.
function _M.stream_upstream()
    local dir = helpers.tmpdir()
    local proc = helpers.spawn(string.format("node %s %s >%s 2>&1",
        helpers.shell_quote(helpers.ROOT .. "/spec/support/stream_upstream.js"),
        helpers.shell_quote(dir .. "/port"), helpers.shell_quote(dir .. "/out.log")))
    local port = helpers.wait_until(function()
        assert(proc:alive(), "stream upstream exited: " .. (helpers.read_file(dir .. "/out.log") or ""))
        return tonumber(helpers.read_file(dir .. "/port"))
    end, 10, "stream upstream did not start")
    local up = { proc = proc, port = port, addr = "127.0.0.1:" .. port }
    function up.stats()
        local res = assert(helpers.http("GET", "http://" .. up.addr .. "/_stats", { timeout = 5 }))
        return assert(cjson.decode(res.body))
    end
    function up.reset()
        assert(helpers.http("GET", "http://" .. up.addr .. "/_reset", { timeout = 5 }))
    end
    return up
end

--- Open descriptors of a process.
function _M.fds(pid)
    local h = io.popen("ls /proc/" .. pid .. "/fd 2>/dev/null | wc -l")
    local n = tonumber(h:read("*a"))
    h:close()
    return n or -1
end

--- Resident memory of a process, in KiB.
function _M.rss_kb(pid)
    local s = helpers.read_file("/proc/" .. pid .. "/status") or ""
    return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

--- CPU time (user + system) a process has used, in clock ticks.
function _M.cpu_ticks(pid)
    local s = helpers.read_file("/proc/" .. pid .. "/stat") or ""
    local rest = s:match("%) (.*)$") or ""
    local f = {}
    for x in rest:gmatch("%S+") do f[#f + 1] = x end
    return (tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)
end

--- What the descriptors of a process are (for failure messages).
function _M.fd_list(pid)
    local h = io.popen("ls -l /proc/" .. pid .. "/fd 2>/dev/null | sed 's/.* [0-9]* -> //' | sort | uniq -c")
    local out = h:read("*a")
    h:close()
    return out
end

--- Waits (bounded) until the gateway holds no more descriptors than `base`.
function _M.wait_fds(gw, base, timeout)
    local ok = pcall(helpers.wait_until, function() return _M.fds(gw.pid) <= base end, timeout or 10)
    if not ok then
        error(("gateway descriptors did not return to %d within %ds (now %d):\n%s"):format(base, timeout or 10,
            _M.fds(gw.pid), _M.fd_list(gw.pid)), 2)
    end
end

--- A connected raw client that has sent `bytes`.
function _M.send_raw(port, bytes, timeout)
    local c = socket.tcp()
    c:settimeout(timeout or 5)
    assert(c:connect("127.0.0.1", port))
    if bytes then assert(c:send(bytes)) end
    return c
end

--- Leaves like a client that closes normally: FIN (shutdown), then the socket is read until the gateway closes
--- its side too (it must: the request is over) and closed. Returns true when the gateway closed in time.
function _M.leave_fin(c, timeout)
    c:shutdown("send")
    c:settimeout(0.2)
    local deadline = socket.gettime() + (timeout or 5)
    local closed = false
    while socket.gettime() < deadline do
        local _, err = c:receive(65536)
        if err == "closed" then
            closed = true
            break
        end
    end
    c:close()
    return closed
end

--- Leaves like a killed client: RST (SO_LINGER 0).
function _M.leave_rst(c)
    c:setoption("linger", { on = true, timeout = 0 })
    c:close()
end

--- The access log lines (decoded) of a gateway started by the helpers.
function _M.access(gw)
    local out = {}
    for line in gw:access_log():gmatch("[^\n]+") do
        out[#out + 1] = cjson.decode(line) or { raw = line }
    end
    return out
end

--- Access log settings for helpers.start_gateway (with opts.dir = dir): the query is logged, so a spec can find
--- its request's line by a tag in it.
function _M.access_log_conf(dir)
    return { path = dir .. "/access.log", fields = { "time", "method", "path", "query", "status", "bytes", "route" } }
end

--- Waits (the log is flushed once a second) until the access log has the line of the request whose query holds
--- `tag`; returns it (decoded).
function _M.wait_logged(gw, tag, timeout)
    return helpers.wait_until(function()
        for _, l in ipairs(_M.access(gw)) do
            if l.query and l.query:find(tag, 1, true) then return l end
        end
    end, timeout or 5, "no access log line for " .. tag)
end

--- A body_filter plugin that passes every chunk through (puts a route in FILTER mode).
_M.FILTER_PLUGIN = [[
return {
    name = "conn-passthrough",
    priority = 10,
    schema = { type = "object" },
    body_filter = function(conf, ctx, chunk, eof) return chunk end,
}
]]

return _M
