-- Cluster pieces for specs, each started here on free loopback ports and stopped by helpers.stop_all():
--
--   local cluster = require("support.cluster")
--   local e = cluster.etcd()                  -- Debian's etcd, its own data dir; e.url, e:put(k, v), e:get(k),
--                                             -- e:del(k), e:compact(rev), e:revision(), e:stop(), e:start()
--   local m = cluster.memcached()             -- m.port, m.addr, m:stop(), m:start()
--   local lb = cluster.nginx({gw1, gw2, gw3}) -- nginx balancing over the gateways' listen ports: lb.url(path)
--   local load = cluster.load({url1, ...})    -- spec/support/load.js: load:stats(), load:stop()
--   local p = cluster.tcp_proxy(port[, ms])   -- spec/support/tcp_proxy.js: p.port, p:freeze(), p:hold_all(),
--                                             -- p:close_frozen()
local helpers = require("helpers")
local cjson = require("cjson.safe")
local etcd_lib = require("sluice.config.etcd")

local format = string.format
local q = helpers.shell_quote

local _M = {}

_M.ETCD = "/usr/bin/etcd"
_M.b64 = etcd_lib.b64
_M.MEMCACHED = "/usr/bin/memcached"
_M.NGINX = "/usr/sbin/nginx"

--- True when every binary the cluster specs need is installed.
function _M.available()
    for _, b in ipairs({ _M.ETCD, _M.MEMCACHED, _M.NGINX }) do
        if not io.open(b) then return false, b end
    end
    return true
end

---------------------------------------------------------------------------------------------------------------
-- etcd

local Etcd = {}
Etcd.__index = Etcd

--- Starts etcd on two free ports (client, peer) with a fresh data dir. opts.tls = {dir = certs dir} serves
--- HTTPS with DIR/etcd.crt|key and requires client certificates signed by DIR/ca.crt (then e.url is
--- https://localhost:PORT). opts.auth = {password = ..., token_ttl = seconds} turns on etcd's users: user root
--- with that password (the spec's own calls authenticate as root), simple tokens that expire after token_ttl.
function _M.etcd(opts)
    opts = opts or {}
    local e = setmetatable({ dir = helpers.tmpdir(), port = helpers.free_port(), peer = helpers.free_port(),
                             tls = opts.tls, token_ttl = opts.auth and opts.auth.token_ttl }, Etcd)
    e.host = e.tls and "localhost" or "127.0.0.1"
    e.url = format("%s://%s:%d", e.tls and "https" or "http", e.host, e.port)
    e:start()
    if opts.auth then
        assert(e:call("/v3/auth/user/add", { name = "root", password = opts.auth.password }))
        assert(e:call("/v3/auth/user/grant", { user = "root", role = "root" }))
        local t = assert(e:call("/v3/auth/enable", {}))
        assert(t.header, helpers.json(t))
        e.password = opts.auth.password
    end
    return e
end

function Etcd:start()
    local scheme = self.tls and "https" or "http"
    local tls = ""
    if self.tls then
        local d = self.tls.dir
        tls = format(" --cert-file %s --key-file %s --client-cert-auth --trusted-ca-file %s",
            q(d .. "/etcd.crt"), q(d .. "/etcd.key"), q(d .. "/ca.crt"))
    end
    self.proc = helpers.spawn(format("%s --name spec --data-dir %s --listen-client-urls %s://127.0.0.1:%d "
        .. "--advertise-client-urls %s://127.0.0.1:%d --listen-peer-urls http://127.0.0.1:%d "
        .. "--initial-advertise-peer-urls http://127.0.0.1:%d --initial-cluster spec=http://127.0.0.1:%d "
        .. "--log-level error%s%s >>%s 2>&1", _M.ETCD, q(self.dir .. "/data"), scheme, self.port, scheme, self.port,
        self.peer, self.peer, self.peer, tls, self.token_ttl and (" --auth-token-ttl " .. self.token_ttl) or "",
        q(self.dir .. "/etcd.log")))
    self.proc.owner = self
    helpers.wait_until(function()
        assert(self.proc:alive(), "etcd exited: " .. (helpers.read_file(self.dir .. "/etcd.log") or ""))
        return self:revision() ~= nil
    end, 15, "etcd did not start")
end

function Etcd:stop()
    return self.proc:stop(10)
end

--- A v3 gateway call through curl (TLS with the test certificates when etcd has them; as root when etcd has
--- users): the decoded answer.
function Etcd:call(path, body)
    local tls = ""
    if self.tls then
        local d = self.tls.dir
        tls = format("--cacert %s --cert %s --key %s ", q(d .. "/ca.crt"), q(d .. "/client.crt"), q(d .. "/client.key"))
    end
    if self.password then
        local code, out = helpers.exec(format("curl -s -m 5 %s-X POST %s -d %s", tls, q(self.url .. "/v3/auth/authenticate"),
            q(helpers.json({ name = "root", password = self.password }))), 10)
        local t = code == 0 and cjson.decode(out)
        if not (t and t.token) then return nil, out end
        tls = tls .. "-H " .. q("Authorization: " .. t.token) .. " "
    end
    local code, out = helpers.exec(format("curl -s -m 5 %s-X POST %s -d %s", tls, q(self.url .. path),
        q(helpers.json(body))), 10)
    if code ~= 0 then return nil, out end
    return cjson.decode(out)
end

local b64, unb64 = etcd_lib.b64, etcd_lib.unb64

function Etcd:put(key, value)
    local t = assert(self:call("/v3/kv/put", { key = b64(key), value = b64(value) }))
    return tonumber(t.header.revision)
end

function Etcd:get(key)
    local t = assert(self:call("/v3/kv/range", { key = b64(key) }))
    local kv = t.kvs and t.kvs[1]
    return kv and unb64(kv.value), kv and tonumber(kv.mod_revision)
end

function Etcd:del(key)
    local t = assert(self:call("/v3/kv/deleterange", { key = b64(key) }))
    return tonumber(t.header.revision)
end

function Etcd:compact(rev)
    return self:call("/v3/kv/compaction", { revision = tostring(rev), physical = true })
end

--- The store's revision, or nil when etcd does not answer.
function Etcd:revision()
    local t = self:call("/v3/kv/range", { key = b64("/") })
    return t and t.header and tonumber(t.header.revision)
end

--- The node.config_center section for this etcd.
function Etcd:center(extra)
    local c = { kind = "etcd", endpoints = { self.url }, prefix = "/sluice", timeout = "2s" }
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
end

---------------------------------------------------------------------------------------------------------------
-- memcached

local Mc = {}
Mc.__index = Mc

function _M.memcached()
    local m = setmetatable({ port = helpers.free_port() }, Mc)
    m.addr = "127.0.0.1:" .. m.port
    m:start()
    return m
end

function Mc:start()
    local root = (os.getenv("USER") == "root" or io.popen("id -u"):read("*l") == "0") and " -u root" or ""
    self.proc = helpers.spawn(format("%s -l 127.0.0.1 -p %d -U 0 -m 16%s", _M.MEMCACHED, self.port, root))
    self.proc.owner = self
    assert(helpers.wait_port(self.port, self.proc, 5))
end

function Mc:stop()
    return self.proc:stop(5)
end

---------------------------------------------------------------------------------------------------------------
-- nginx in front of gateways

local Lb = {}
Lb.__index = Lb

--- nginx as the L7 balancer over the gateways (round robin, keep-alive upstream connections; a connection
--- error or a 502/503/504 goes on to the next gateway, as a production balancer is set up).
function _M.nginx(gateways)
    local lb = setmetatable({ dir = helpers.tmpdir(), port = helpers.free_port() }, Lb)
    local servers = {}
    for i, gw in ipairs(gateways) do servers[i] = format("    server 127.0.0.1:%d max_fails=0;", gw.port) end
    local conf = format([[
worker_processes 1;
error_log %s/error.log warn;
pid %s/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %s/tmp; proxy_temp_path %s/tmp; fastcgi_temp_path %s/tmp; uwsgi_temp_path %s/tmp;
  scgi_temp_path %s/tmp;
  upstream gateways {
%s
    keepalive 16;
  }
  server {
    listen 127.0.0.1:%d;
    location / {
      proxy_pass http://gateways;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_502 http_503 http_504;
      proxy_connect_timeout 1s;
    }
  }
}
]], lb.dir, lb.dir, lb.dir, lb.dir, lb.dir, lb.dir, lb.dir, table.concat(servers, "\n"), lb.port)
    os.execute("mkdir -p " .. q(lb.dir .. "/tmp"))
    helpers.write_file(lb.dir .. "/nginx.conf", conf)
    lb.proc = helpers.spawn(format("%s -p %s -c %s -g 'daemon off;' >>%s 2>&1", _M.NGINX, q(lb.dir),
        q(lb.dir .. "/nginx.conf"), q(lb.dir .. "/out.log")))
    lb.proc.owner = lb
    assert(helpers.wait_port(lb.port, lb.proc, 5), "nginx did not start: " .. (helpers.read_file(lb.dir .. "/out.log") or ""))
    lb.url = function(path) return "http://127.0.0.1:" .. lb.port .. (path or "/") end
    return lb
end

function Lb:stop()
    return self.proc:stop(5)
end

---------------------------------------------------------------------------------------------------------------
-- client load

local Load = {}
Load.__index = Load

--- Starts spec/support/load.js over urls (opts: concurrency (2), pause_ms (10), max_seconds (240)).
function _M.load(urls, opts)
    opts = opts or {}
    local l = setmetatable({ dir = helpers.tmpdir() }, Load)
    l.file = l.dir .. "/stats.json"
    local args = {}
    for i, u in ipairs(urls) do args[i] = q(u) end
    l.proc = helpers.spawn(format("env LOAD_CONCURRENCY=%d LOAD_PAUSE_MS=%d LOAD_MAX_SECONDS=%d node %s %s %s >%s 2>&1",
        opts.concurrency or 2, opts.pause_ms or 10, opts.max_seconds or 240,
        q(helpers.ROOT .. "/spec/support/load.js"), q(l.file), table.concat(args, " "), q(l.dir .. "/out.log")))
    l.proc.owner = l
    helpers.wait_until(function() return (l:stats().ok or 0) > 0 end, 10, "the load got no answer")
    return l
end

--- The counters so far: {sent, ok, failed, by_status, errors}.
function Load:stats()
    return cjson.decode(helpers.read_file(self.file) or "{}") or {}
end

function Load:stop()
    self.proc:stop(5)
    return self:stats()
end

---------------------------------------------------------------------------------------------------------------
-- a TCP proxy that can go quiet

local Proxy = {}
Proxy.__index = Proxy

--- (delay_ms: every chunk forwarded that much later, both ways: a server across a network.)
function _M.tcp_proxy(target_port, delay_ms)
    local p = setmetatable({ dir = helpers.tmpdir() }, Proxy)
    p.proc = helpers.spawn(format("node %s %s %d %d >%s 2>&1", q(helpers.ROOT .. "/spec/support/tcp_proxy.js"),
        q(p.dir .. "/port"), target_port, delay_ms or 0, q(p.dir .. "/out.log")))
    p.proc.owner = p
    p.port = helpers.wait_until(function()
        assert(p.proc:alive(), "tcp proxy exited: " .. (helpers.read_file(p.dir .. "/out.log") or ""))
        return tonumber(helpers.read_file(p.dir .. "/port"))
    end, 10, "tcp proxy did not start")
    return p
end

function Proxy:freeze()
    self.proc:signal(10) -- SIGUSR1
end

--- Every connection, open or new, forwards nothing (until close_frozen).
function Proxy:hold_all()
    self.proc:signal(1) -- SIGHUP
end

function Proxy:close_frozen()
    self.proc:signal(12) -- SIGUSR2
end

function Proxy:stop()
    return self.proc:stop(5)
end

return _M
