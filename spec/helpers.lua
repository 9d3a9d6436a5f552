-- Helpers for specs that run the real gateway: start/stop it, talk HTTP to it, mock upstreams.
--
--   local helpers = require("helpers")
--   local mock = helpers.mock_upstream()                      -- echoes what it receives as JSON
--   local gw = helpers.start_gateway({ routes = { { id = "r", paths = { "/*" },
--                                      upstream = { nodes = { mock.addr } } } } })
--   local res = helpers.http("GET", gw.url("/hello"))         --> { status, headers, body, json }
--   assert.equal("/hello", mock:requests()[1].path)
--   gw:stop(); mock:stop()                                    -- or helpers.stop_all() in teardown
--
-- Everything binds to 127.0.0.1, every wait is bounded, every process started here is stopped by
-- stop_all() (and, as a last resort, when the Lua state closes).
--
-- Ports: free ones the kernel picks, or with SLUICE_SPEC_PORTS=LOW-HIGH (e.g. 20000-20999) only ports of that
-- range, so specs can run beside other services: free_port() takes them from it, and every process started with
-- spawn() (mock upstreams, support servers) gets one in SLUICE_SPEC_PORT to listen on.
local ffi = require("ffi")
local socket = require("socket")
local cjson = require("cjson.safe")

local type, pairs, ipairs, tostring, tonumber, error, assert = type, pairs, ipairs, tostring, tonumber, error, assert
local format, concat = string.format, table.concat

pcall(ffi.cdef, [[
int posix_spawn(int *pid, const char *path, const void *file_actions, const void *attrp,
                char *const argv[], char *const envp[]);
int waitpid(int pid, int *status, int options);
int kill(int pid, int sig);
char *mkdtemp(char *tmpl);
extern char **environ;
]])

local SIGHUP, SIGKILL, SIGTERM, WNOHANG = 1, 9, 15, 1

local _M = {}

_M.ROOT = os.getenv("SLUICE_HOME") or os.getenv("PWD") or "."
_M.BIN = os.getenv("SLUICE_BIN") or (_M.ROOT .. "/build/sluice")

local procs = {} -- pid -> process object still running
local tmpdirs = {} -- made by tmpdir(), removed by stop_all() unless SLUICE_SPEC_KEEP is set

---------------------------------------------------------------------------------------------------------------
-- small things

--- Sleeps s seconds.
_M.sleep = socket.sleep

--- Calls fn() until it returns a truthy value (returned) or timeout seconds pass (error with msg).
function _M.wait_until(fn, timeout, msg)
    local deadline = socket.gettime() + (timeout or 5)
    local last
    repeat
        local ok, v = pcall(fn)
        if ok and v then return v end
        last = v
        socket.sleep(0.05)
    until socket.gettime() > deadline
    error((msg or "condition not met") .. format(" within %ss", timeout or 5) .. (last and (": " .. tostring(last)) or ""), 2)
end

--- Reads a whole file; nil when missing.
function _M.read_file(path)
    local f = io.open(path, "rb")
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return s
end

--- Writes data to path.
function _M.write_file(path, data)
    local f = assert(io.open(path, "wb"))
    f:write(data)
    f:close()
    return path
end

--- Creates a fresh temporary directory.
function _M.tmpdir()
    local buf = ffi.new("char[?]", 64, "/tmp/sluice-spec-XXXXXX")
    assert(ffi.C.mkdtemp(buf) ~= nil, "mkdtemp failed")
    local dir = ffi.string(buf)
    tmpdirs[#tmpdirs + 1] = dir
    return dir
end

-- SLUICE_SPEC_PORTS=LOW-HIGH: the range ports come from (nil: any port the kernel gives).
local port_range = (function()
    local v = os.getenv("SLUICE_SPEC_PORTS")
    if not v or v == "" then return nil end
    local lo, hi = v:match("^%s*(%d+)%s*%-%s*(%d+)%s*$")
    lo, hi = tonumber(lo), tonumber(hi)
    if not lo or lo < 1 or hi > 65535 or lo > hi then
        error("SLUICE_SPEC_PORTS must look like 20000-20999 (1..65535, low <= high), got " .. v)
    end
    return { lo = lo, hi = hi }
end)()
_M.PORT_RANGE = port_range
local handed = {} -- ports of the range given out by this process, not handed out again
local next_port -- where the search in the range goes on (starts at a random place: several runs can share a range)

--- A free TCP port on 127.0.0.1 (bound, read, closed; another process could take it, rarely does). With
--- SLUICE_SPEC_PORTS, one of that range this process has not handed out yet.
function _M.free_port()
    if not port_range then
        local s = assert(socket.bind("127.0.0.1", 0))
        local _, port = s:getsockname()
        s:close()
        return tonumber(port)
    end
    local n = port_range.hi - port_range.lo + 1
    if not next_port then
        math.randomseed(os.time() + tonumber(tostring(socket.gettime()):match("%.(%d+)") or 0))
        next_port = math.random(0, n - 1)
    end
    for _ = 1, n do
        local port = port_range.lo + next_port
        next_port = (next_port + 1) % n
        if not handed[port] then
            local s = socket.bind("127.0.0.1", port)
            if s then
                s:close()
                handed[port] = true
                return port
            end
        end
    end
    error(format("no free port left in SLUICE_SPEC_PORTS=%d-%d", port_range.lo, port_range.hi), 2)
end

local function shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
_M.shell_quote = shell_quote

--- Runs a shell command (bounded by timeout seconds, default 20); returns exit code, output (stdout+stderr).
function _M.exec(cmd, timeout)
    local h = io.popen(format("timeout -k 2 %d sh -c %s 2>&1; echo \"__exit:$?\"", timeout or 20, shell_quote(cmd)))
    local out = h:read("*a")
    h:close()
    local code = tonumber(out:match("__exit:(%d+)%s*$"))
    return code, (out:gsub("__exit:%d+%s*$", ""))
end

--- Encodes a Lua table as JSON (which is also YAML flow style); "/" is not escaped.
function _M.json(t)
    return (assert(cjson.encode(t)):gsub("\\/", "/"))
end

---------------------------------------------------------------------------------------------------------------
-- processes

local Proc = {}
Proc.__index = Proc

-- The environment for a child: ours, plus SLUICE_SPEC_PORT (a port of the range) when SLUICE_SPEC_PORTS is set.
local function child_env(keep)
    if not port_range then return ffi.C.environ end
    local list = {}
    local i = 0
    while ffi.C.environ[i] ~= nil do
        local e = ffi.string(ffi.C.environ[i])
        if not e:match("^SLUICE_SPEC_PORT=") then list[#list + 1] = e end
        i = i + 1
    end
    list[#list + 1] = "SLUICE_SPEC_PORT=" .. _M.free_port()
    local envp = ffi.new("char *[?]", #list + 1)
    for j, e in ipairs(list) do
        keep[#keep + 1] = ffi.new("char[?]", #e + 1, e)
        envp[j - 1] = keep[#keep]
    end
    keep[#keep + 1] = envp
    return envp
end

-- Starts `sh -c "exec CMD"` as our own child, so it can be waited for and signalled by pid.
local function spawn(cmd)
    local argv = ffi.new("char *[4]")
    local strs = { "/bin/sh", "-c", "exec " .. cmd }
    local keep = {}
    for i, s in ipairs(strs) do
        keep[i] = ffi.new("char[?]", #s + 1, s)
        argv[i - 1] = keep[i]
    end
    local pid = ffi.new("int[1]")
    local rc = ffi.C.posix_spawn(pid, "/bin/sh", nil, nil, argv, child_env(keep))
    if rc ~= 0 then error("posix_spawn failed: " .. rc, 2) end
    local p = setmetatable({ pid = pid[0], cmd = cmd }, Proc)
    procs[p.pid] = p
    return p
end
_M.spawn = spawn

--- True while the process runs (reaps it when it has exited; p.exit_status is then set).
function Proc:alive()
    if self.exit_status then return false end
    local st = ffi.new("int[1]")
    local r = ffi.C.waitpid(self.pid, st, WNOHANG)
    if r == 0 then return true end
    self.exit_status = r == self.pid and st[0] or -1
    procs[self.pid] = nil
    return false
end

--- Exit code of a process that has exited (nil when killed by a signal or still running).
function Proc:exit_code()
    if self:alive() or self.exit_status < 0 then return nil end
    local s = self.exit_status
    if s % 128 ~= 0 then return nil end
    return math.floor(s / 256) % 256
end

function Proc:signal(sig)
    if self:alive() then ffi.C.kill(self.pid, sig) end
end

--- Waits up to timeout seconds for the process to exit; true when it did.
function Proc:wait(timeout)
    local deadline = socket.gettime() + (timeout or 5)
    while self:alive() do
        if socket.gettime() > deadline then return false end
        socket.sleep(0.02)
    end
    return true
end

--- SIGTERM, wait up to timeout (default 10 s), then SIGKILL.
function Proc:stop(timeout)
    if not self:alive() then return true end
    self:signal(SIGTERM)
    if self:wait(timeout or 10) then return true end
    self:signal(SIGKILL)
    self:wait(5)
    return false
end

--- Stops every process started by these helpers and removes their temp dirs (use in teardown).
-- Set SLUICE_SPEC_KEEP=1 to keep the dirs (configs, error logs, mock request logs) for a look.
function _M.stop_all()
    for _, p in pairs(procs) do
        if p.owner and p.owner.stop then p.owner:stop() else p:stop(5) end
    end
    if not os.getenv("SLUICE_SPEC_KEEP") then
        for _, d in ipairs(tmpdirs) do
            if d:match("^/tmp/sluice%-spec%-%w+$") then os.execute("rm -rf " .. shell_quote(d)) end
        end
        tmpdirs = {}
    end
end

-- Last resort when a spec errors out before its teardown: kill what is left when the Lua state closes.
_M._reaper = newproxy(true)
getmetatable(_M._reaper).__gc = function()
    for pid, p in pairs(procs) do
        ffi.C.kill(pid, SIGKILL)
        p:wait(1)
    end
end

-- Waits until something accepts connections on 127.0.0.1:port, or proc dies, or timeout.
local function wait_port(port, proc, timeout)
    local deadline = socket.gettime() + (timeout or 10)
    while socket.gettime() < deadline do
        if proc and not proc:alive() then return nil, "process exited" end
        local c = socket.tcp()
        c:settimeout(0.2)
        local ok = c:connect("127.0.0.1", port)
        c:close()
        if ok then return true end
        socket.sleep(0.05)
    end
    return nil, "port " .. port .. " not accepting after " .. (timeout or 10) .. "s"
end
_M.wait_port = wait_port

---------------------------------------------------------------------------------------------------------------
-- HTTP client (raw HTTP/1.1 over luasocket, so keep-alive and malformed requests can be tested)

local Client = {}
Client.__index = Client

--- A keep-alive connection to 127.0.0.1:port; client:request(method, path, opts) reuses it.
function _M.client(port, opts)
    opts = opts or {}
    local c = socket.tcp()
    c:settimeout(opts.timeout or 10)
    local ok, err = c:connect(opts.host or "127.0.0.1", port)
    if not ok then return nil, "connect to " .. port .. ": " .. tostring(err) end
    return setmetatable({ sock = c, port = port, timeout = opts.timeout or 10 }, Client)
end

local function read_body(sock, headers, method, status)
    if method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200) then return "" end
    local te = headers["transfer-encoding"]
    if te and te:lower():find("chunked", 1, true) then
        local parts = {}
        while true do
            local line, err = sock:receive("*l")
            if not line then return nil, "chunk size: " .. tostring(err) end
            local size = tonumber(line:match("^%s*(%x+)"), 16)
            if not size then return nil, "bad chunk size line " .. format("%q", line) end
            if size == 0 then
                repeat line = sock:receive("*l") until not line or line == "" -- trailers
                return concat(parts)
            end
            local data, derr = sock:receive(size)
            if not data then return nil, "chunk data: " .. tostring(derr) end
            parts[#parts + 1] = data
            sock:receive("*l")
        end
    end
    local len = tonumber(headers["content-length"])
    if len then
        if len == 0 then return "" end
        local data, err = sock:receive(len)
        if not data then return nil, "body: " .. tostring(err) end
        return data
    end
    local data, err, partial = sock:receive("*a")
    return data or partial, (not data and err ~= "closed") and err or nil
end

--- Sends one request and reads the response: { status, headers (lower-case names), body, json }.
-- opts: headers = {name = value}, body = string or table (sent as JSON), timeout = seconds.
function Client:request(method, path, opts)
    opts = opts or {}
    local body = opts.body
    local headers = { host = "127.0.0.1:" .. self.port }
    if type(body) == "table" then
        body = _M.json(body)
        headers["content-type"] = "application/json"
    end
    for k, v in pairs(opts.headers or {}) do headers[k:lower()] = v end
    if body and not headers["content-length"] and not headers["transfer-encoding"] then
        headers["content-length"] = tostring(#body)
    end
    local lines = { format("%s %s HTTP/1.1", method, path) }
    for k, v in pairs(headers) do lines[#lines + 1] = k .. ": " .. tostring(v) end
    local sock = self.sock
    sock:settimeout(opts.timeout or self.timeout)
    local ok, err = sock:send(concat(lines, "\r\n") .. "\r\n\r\n" .. (body or ""))
    if not ok then return nil, "send: " .. tostring(err) end
    local res
    repeat -- skip 1xx
        local status_line, serr = sock:receive("*l")
        if not status_line then return nil, "status line: " .. tostring(serr) end
        local status = tonumber(status_line:match("^HTTP/1%.%d (%d%d%d)"))
        if not status then return nil, "bad status line " .. format("%q", status_line) end
        res = { status = status, headers = {} }
        while true do
            local line, herr = sock:receive("*l")
            if not line then return nil, "headers: " .. tostring(herr) end
            if line == "" then break end
            local k, v = line:match("^([^:]+):%s*(.-)%s*$")
            if k then
                k = k:lower()
                res.headers[k] = res.headers[k] and (res.headers[k] .. ", " .. v) or v
            end
        end
    until status >= 200 or status == 101
    local b, berr = read_body(sock, res.headers, method, res.status)
    if not b then return nil, berr end
    res.body = b
    if (res.headers["content-type"] or ""):find("json", 1, true) then res.json = cjson.decode(b) end
    if (res.headers.connection or ""):lower() == "close" then self:close() end
    return res
end

function Client:close()
    if self.sock then self.sock:close() end
    self.sock = nil
end

--- One request on its own connection. url: "http://127.0.0.1:PORT/path". Returns res | nil, err.
function _M.http(method, url, opts)
    local port, path = url:match("^http://[^:/]+:(%d+)(.*)$")
    assert(port, "url must look like http://127.0.0.1:PORT/path")
    opts = opts or {}
    local c, err = _M.client(tonumber(port), opts)
    if not c then return nil, err end
    local h = { connection = "close" }
    for k, v in pairs(opts.headers or {}) do h[k] = v end
    local res, rerr = c:request(method, path ~= "" and path or "/",
        { headers = h, body = opts.body, timeout = opts.timeout })
    c:close()
    return res, rerr
end

--- Sends raw bytes to 127.0.0.1:port and returns what comes back until close or timeout (default 2 s).
function _M.raw(port, bytes, opts)
    opts = opts or {}
    local c = socket.tcp()
    c:settimeout(opts.timeout or 2)
    local ok, err = c:connect("127.0.0.1", port)
    if not ok then return nil, err end
    c:send(bytes)
    local data, _, partial = c:receive("*a")
    c:close()
    return data or partial
end

---------------------------------------------------------------------------------------------------------------
-- the gateway

local Gateway = {}
Gateway.__index = Gateway

--- Starts build/sluice with config (a Lua table, or YAML text) in a temp dir; returns gw.
-- A table gets node.listen, node.admin and plugin_paths filled in unless given; YAML text can use
-- ${SLUICE_PORT}, ${SLUICE_ADMIN_PORT}, ${SLUICE_ADMIN_KEY}, ${SLUICE_HOME} (set in the gateway's env).
-- opts: dir (reuse a dir, e.g. to restart on the same config), env = {NAME = value}, timeout (start, 10 s),
--       args (extra command-line arguments), wrap (a command prefix the gateway is run under, e.g. an
--       `unshare ...` that gives it its own /etc/hosts; it must exec the rest of its arguments).
function _M.start_gateway(config, opts)
    opts = opts or {}
    local gw = setmetatable({ dir = opts.dir or _M.tmpdir(), admin_key = opts.admin_key or "spec-admin-key-0123456789" }, Gateway)
    gw.file = gw.dir .. "/sluice.yaml"
    gw.log_file = gw.dir .. "/error.log"
    if type(config) == "table" then
        config = _M.deep_copy(config)
        local node = config.node or {}
        config.node = node
        node.listen = node.listen or { "127.0.0.1:" .. _M.free_port() }
        node.admin = node.admin or { listen = "127.0.0.1:" .. _M.free_port(), key = gw.admin_key }
        node.workers = node.workers or 2
        node.plugin_paths = node.plugin_paths or { _M.ROOT .. "/plugins" }
        node.access_log = node.access_log or { path = gw.dir .. "/access.log" }
        gw.admin_key = node.admin.key
        local l = node.listen[1]
        gw.port = tonumber((type(l) == "table" and l.addr or l):match(":(%d+)$"))
        gw.admin_port = tonumber(node.admin.listen:match(":(%d+)$"))
        _M.write_file(gw.file, _M.json(config) .. "\n")
    elseif type(config) == "string" then
        gw.port, gw.admin_port = opts.port or _M.free_port(), opts.admin_port or _M.free_port()
        _M.write_file(gw.file, config)
    elseif not opts.dir then
        error("config must be a table or YAML text (or nil with opts.dir to restart)", 2)
    else -- restart on an existing dir
        gw.port, gw.admin_port, gw.admin_key = opts.port, opts.admin_port, opts.admin_key or gw.admin_key
    end
    local env = { SLUICE_HOME = _M.ROOT, SLUICE_PORT = gw.port, SLUICE_ADMIN_PORT = gw.admin_port,
                  SLUICE_ADMIN_KEY = gw.admin_key }
    for k, v in pairs(opts.env or {}) do env[k] = v end
    local vars = {}
    for k, v in pairs(env) do vars[#vars + 1] = k .. "=" .. shell_quote(v) end
    gw.proc = spawn(format("%senv %s %s -c %s %s </dev/null >>%s 2>&1", opts.wrap and (opts.wrap .. " ") or "",
        concat(vars, " "), shell_quote(_M.BIN),
        shell_quote(gw.file), opts.args or "", shell_quote(gw.log_file)))
    gw.proc.owner = gw
    gw.pid = gw.proc.pid
    gw.url = function(path) return "http://127.0.0.1:" .. gw.port .. (path or "/") end
    gw.admin_url = function(path) return "http://127.0.0.1:" .. gw.admin_port .. (path or "/") end
    local ok, err = wait_port(gw.port, gw.proc, opts.timeout or 10)
    if ok and gw.admin_port then ok, err = wait_port(gw.admin_port, gw.proc, opts.timeout or 10) end
    if not ok then
        gw.proc:stop(2)
        error("gateway did not start (" .. err .. "):\n" .. (gw:log() or ""), 2)
    end
    return gw
end

--- Error log (stderr and stdout of the gateway) so far.
function Gateway:log()
    return _M.read_file(self.log_file) or ""
end

--- Access log so far (when the helpers chose its path).
function Gateway:access_log()
    return _M.read_file(self.dir .. "/access.log") or ""
end

--- SIGTERM (graceful), SIGKILL after timeout seconds (default 10). Returns true when it exited in time.
function Gateway:stop(timeout)
    return self.proc:stop(timeout)
end

--- SIGHUP: re-read the config file.
function Gateway:reload()
    self.proc:signal(SIGHUP)
end

--- Starts the gateway again on the same dir and config file (after stop()).
function Gateway:restart(opts)
    opts = opts or {}
    opts.dir, opts.port, opts.admin_port, opts.admin_key = self.dir, self.port, self.admin_port, self.admin_key
    return _M.start_gateway(nil, opts)
end

--- An Admin API call with the right key: gw:admin("PUT", "/admin/routes/r1", {paths = {"/x"}}).
function Gateway:admin(method, path, body, headers)
    local h = { ["x-api-key"] = self.admin_key }
    for k, v in pairs(headers or {}) do h[k] = v end
    return _M.http(method, self.admin_url(path), { headers = h, body = body })
end

---------------------------------------------------------------------------------------------------------------
-- mock upstream (spec/support/mock_upstream.js, run by node)

local Mock = {}
Mock.__index = Mock

--- Starts an HTTP server on 127.0.0.1 that records every request and answers as told.
-- opts (also settable later with mock:respond(opts)):
--   status (200), headers {name = value}, body (string or table as JSON; default: echo the request as JSON),
--   chunks = {"a", "b"} (send chunked, one write per chunk), delay (seconds before the response),
--   chunk_delay (seconds between chunks), paths = { ["/x"] = {status=..., ...} } (per-path overrides).
function _M.mock_upstream(opts)
    local m = setmetatable({ dir = _M.tmpdir() }, Mock)
    m.conf_file, m.log_file, m.port_file = m.dir .. "/conf.json", m.dir .. "/requests.jsonl", m.dir .. "/port"
    m:respond(opts or {})
    m.proc = spawn(format("node %s %s %s %s >%s 2>&1", shell_quote(_M.ROOT .. "/spec/support/mock_upstream.js"),
        shell_quote(m.conf_file), shell_quote(m.log_file), shell_quote(m.port_file), shell_quote(m.dir .. "/out.log")))
    m.proc.owner = m
    m.port = _M.wait_until(function()
        assert(m.proc:alive(), "mock upstream exited: " .. (_M.read_file(m.dir .. "/out.log") or ""))
        return tonumber(_M.read_file(m.port_file))
    end, 10, "mock upstream did not start")
    m.addr = "127.0.0.1:" .. m.port
    m.url = function(path) return "http://" .. m.addr .. (path or "/") end
    return m
end

--- Changes how the mock answers from the next request on.
function Mock:respond(opts)
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    if type(o.body) == "table" then o.body = _M.json(o.body) end
    _M.write_file(self.conf_file .. ".tmp", _M.json(o))
    os.rename(self.conf_file .. ".tmp", self.conf_file)
end

--- What the mock received: list of { method, path (with query), headers (lower-case), body, conn }.
-- conn numbers connections, so specs can check upstream keep-alive.
function Mock:requests()
    local out = {}
    for line in (_M.read_file(self.log_file) or ""):gmatch("[^\n]+") do
        out[#out + 1] = cjson.decode(line)
    end
    return out
end

--- The last request received (or nil).
function Mock:last()
    local r = self:requests()
    return r[#r]
end

--- Forgets recorded requests.
function Mock:clear()
    _M.write_file(self.log_file, "")
end

function Mock:stop()
    return self.proc:stop(5)
end

--- Deep copy of plain tables.
function _M.deep_copy(v)
    if type(v) ~= "table" then return v end
    local out = {}
    for k, x in pairs(v) do out[k] = _M.deep_copy(x) end
    return out
end

return _M
