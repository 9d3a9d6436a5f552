-- An etcd v3 client over etcd's JSON gateway (POST /v3/kv/range, /v3/kv/txn, /v3/watch, /v3/lease/*,
-- /v3/auth/authenticate; etcd 3.4 and later), for the config center (lua/sluice/config/center.lua, docs/cluster.md)
-- and the nodes' registrations (lua/sluice/config/nodes.lua).
--
-- Two transports, one API:
--   "sync":  a blocking request (core/config/fetch.c) for the main thread before the workers run (a node's first
--            load) and for command-line tools (`sluice etcd import`). Never used on a worker.
--   "async": sluice.http (yields the coroutine), for worker 0 (the watch, Admin API writes).
--
--   local c = etcd.new(conf, "async")  -- conf: node.config_center as validated (endpoints, prefix, timeout, tls, auth)
--   local r, err = c:range_prefix()    -- {revision = n, kvs = {{key, value, create_revision, mod_revision}}}
--   local r, err = c:put_if(key, value, mod_revision) -- {ok = true, revision} | {ok = false, current = mod}
--   local r, err = c:delete_if(key, mod_revision)
--   local r, err = c:txn(ops)          -- {{put = key, value = text, lease = id?} | {delete = key}, ...}, no conditions
--   local id, err = c:lease_grant(ttl) -- c:lease_keepalive(id) -> remaining TTL (0: gone), c:lease_revoke(id)
--   local r, err = c:claim(key, value, lease) -- {ok = true, revision} | {ok = false, holder = kv}
--   local err, detail = c:watch(start_revision, fn, timeout) -- fn(msg) per watch message; false stops it
--
-- Keys and values are plain strings here (the gateway's base64 is this module's business); revisions are Lua
-- numbers (the gateway writes int64 as strings); lease ids stay decimal strings (they use all 64 bits). Errors:
-- nil, message; `unreachable` is true in a third return when no endpoint answered (as opposed to etcd answering
-- with an error).
local ffi = require("ffi")
local bit = require("bit")
local cjson = require("cjson.safe").new()
cjson.decode_max_depth(64)

local C = require("sluice.core")

local type, tostring, tonumber, ipairs, setmetatable = type, tostring, tonumber, ipairs, setmetatable
local byte, char, sub, format, concat = string.byte, string.char, string.sub, string.format, table.concat
local band, bor, lshift, rshift = bit.band, bit.bor, bit.lshift, bit.rshift

pcall(ffi.cdef, [[
typedef struct sl_fetch_opts {
    const char *method, *url, *headers, *body;
    size_t blen;
    const char *ca_file, *cert_file, *key_file;
    int verify;
    double timeout;
    size_t max_body;
} sl_fetch_opts_t;
typedef struct sl_fetch_res {
    int status;
    char *body;
    size_t body_len;
    char err[256];
} sl_fetch_res_t;
int sl_fetch(const sl_fetch_opts_t *o, sl_fetch_res_t *res);
void sl_fetch_free(sl_fetch_res_t *res);
]])

local _M = {}
local mt = { __index = _M }

---------------------------------------------------------------------------------------------------------------
-- base64 (the gateway's encoding of bytes fields)

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local enc, dec = {}, {}
for i = 1, 64 do
    enc[i - 1] = sub(B64, i, i)
    dec[byte(B64, i)] = i - 1
end

function _M.b64(s)
    local out, n = {}, #s
    for i = 1, n, 3 do
        local a, b, c = byte(s, i, i + 2)
        local v = bor(lshift(a, 16), lshift(b or 0, 8), c or 0)
        out[#out + 1] = enc[rshift(v, 18)] .. enc[band(rshift(v, 12), 63)]
            .. (b and enc[band(rshift(v, 6), 63)] or "=") .. (c and enc[band(v, 63)] or "=")
    end
    return concat(out)
end

--- Decodes base64 (nil on anything that is not).
function _M.unb64(s)
    if type(s) ~= "string" or #s % 4 ~= 0 then return nil end
    local out = {}
    for i = 1, #s, 4 do
        local a, b, c, d = byte(s, i, i + 3)
        local va, vb, vc, vd = dec[a], dec[b], c == 61 and 0 or dec[c], d == 61 and 0 or dec[d]
        if not (va and vb and vc and vd) then return nil end
        local v = bor(lshift(va, 18), lshift(vb, 12), lshift(vc, 6), vd)
        out[#out + 1] = char(rshift(v, 16)) .. (c ~= 61 and char(band(rshift(v, 8), 255)) or "")
            .. (d ~= 61 and char(band(v, 255)) or "")
    end
    return concat(out)
end

--- The end of the key range that holds every key starting with p (etcd's "prefix end").
function _M.prefix_end(p)
    for i = #p, 1, -1 do
        local b = byte(p, i)
        if b < 255 then return sub(p, 1, i - 1) .. char(b + 1) end
    end
    return "\0"
end

---------------------------------------------------------------------------------------------------------------
-- transports: (self, url, body text, header lines, timeout) -> status, body | nil, err

local function tls_of(conf)
    local t = conf.tls or {}
    return t.ca_file, t.cert_file, t.key_file, t.verify ~= false
end

local fopts, fres
local function sync_send(self, url, body, headers, timeout)
    fopts = fopts or ffi.new("sl_fetch_opts_t")
    fres = fres or ffi.new("sl_fetch_res_t")
    local ca, cert, key, verify = tls_of(self.conf)
    fopts.method, fopts.url, fopts.headers, fopts.body, fopts.blen = "POST", url, headers, body, #body
    fopts.ca_file, fopts.cert_file, fopts.key_file, fopts.verify = ca, cert, key, verify and 1 or 0
    fopts.timeout, fopts.max_body = timeout, 0
    local rc = C.sl_fetch(fopts, fres)
    if rc ~= 0 then return nil, ffi.string(fres.err) end
    local status, text = fres.status, ffi.string(fres.body, fres.body_len)
    C.sl_fetch_free(fres)
    return status, text
end

local function header_table(lines)
    local h = {}
    for name, value in lines:gmatch("([^:\r\n]+): ([^\r\n]*)\r\n") do h[name] = value end
    return h
end

local function http_opts(self, url, body, headers, timeout, stream)
    local ca, cert, key, verify = tls_of(self.conf)
    return { method = "POST", url = url, body = body, headers = header_table(headers), timeout = timeout,
             timeouts = { connect = math.min(timeout, self.conf.timeout or 5) }, ssl_verify = verify,
             ca_file = ca, cert_file = cert, key_file = key, proxy = false, stream = stream,
             keepalive = { size = 4, idle_timeout = 30 }, max_body = 256 * 1024 * 1024 }
end

local function async_send(self, url, body, headers, timeout)
    local res, err, detail = require("sluice.pdk.http").request(http_opts(self, url, body, headers, timeout))
    if not res then return nil, tostring(err) .. ((detail and detail ~= "") and (": " .. tostring(detail)) or "") end
    return res.status, res.body
end

--- A client for conf (node.config_center, validated); mode "sync" or "async" (see the top of this file).
function _M.new(conf, mode)
    local prefix = (conf.prefix or "/sluice"):gsub("/+$", "")
    return setmetatable({ conf = conf, mode = mode, send = mode == "sync" and sync_send or async_send, ep = 1,
                          prefix = prefix, token = nil }, mt)
end

--- The endpoint requests go to now.
function _M:endpoint()
    return self.conf.endpoints[self.ep]
end

local function etcd_error(status, text)
    local t = cjson.decode(text or "")
    local msg = type(t) == "table" and (t.message or t.error) or nil
    if type(msg) == "table" then msg = msg.message end
    return format("etcd answered %d: %s", status, msg and tostring(msg) or tostring(text):sub(1, 200)),
        type(t) == "table" and tonumber(t.code) or nil
end

-- A token etcd no longer takes (gRPC code 16, Unauthenticated; or its messages about tokens).
local function is_auth_error(code, msg)
    if code == 16 then return true end
    msg = tostring(msg or "")
    return msg:find("invalid auth token", 1, true) ~= nil or msg:find("user name is empty", 1, true) ~= nil
end

-- The Authorization line, authenticating first when auth is configured and no token is held.
function _M:auth_header(ep, force)
    local a = self.conf.auth
    if not a then return "" end
    if self.token and not force then return "Authorization: " .. self.token .. "\r\n" end
    local body = cjson.encode({ name = a.user, password = a.password })
    local status, text = self.send(self, ep .. "/v3/auth/authenticate", body,
        "Content-Type: application/json\r\n", self.conf.timeout or 5)
    if not status then return nil, text, true end
    if status ~= 200 then return nil, "authentication failed: " .. etcd_error(status, text) end
    local t = cjson.decode(text)
    local token = type(t) == "table" and t.token
    if type(token) ~= "string" or not token:match("^[%w%.%-_=+/]+$") or #token > 4096 then
        return nil, "authentication failed: etcd sent no usable token"
    end
    self.token = token
    return "Authorization: " .. token .. "\r\n"
end

-- One call to one endpoint: decoded JSON | nil, err, unreachable.
function _M:call_one(ep, path, body, timeout)
    for attempt = 1, 2 do
        local auth, aerr, unreachable = self:auth_header(ep, attempt == 2)
        if not auth then return nil, aerr, unreachable end
        local status, text = self.send(self, ep .. path, body, "Content-Type: application/json\r\n" .. auth,
            timeout or self.conf.timeout or 5)
        if not status then return nil, text, true end
        if status == 200 then
            local t = cjson.decode(text)
            if type(t) ~= "table" then return nil, "etcd sent invalid JSON" end
            return t
        end
        local msg, code = etcd_error(status, text)
        if not (self.conf.auth and attempt == 1 and is_auth_error(code, msg)) then
            return nil, msg, status >= 500 and status ~= 500 -- 502/503/504: a proxy in front without etcd behind
        end
        self.token = nil -- the token expired: authenticate again, once
    end
end

--- POSTs a JSON body (a table) to path on the current endpoint, then the others while none answers.
function _M:call(path, body, timeout)
    local text = cjson.encode(body)
    local eps = self.conf.endpoints
    local last
    for i = 0, #eps - 1 do
        local idx = (self.ep - 1 + i) % #eps + 1
        local t, err, unreachable = self:call_one(eps[idx], path, text, timeout)
        if t then
            self.ep = idx
            return t
        end
        if not unreachable then return nil, err end
        last = eps[idx] .. ": " .. tostring(err)
        self.token = nil -- tokens belong to the member that issued them (simple tokens)
    end
    return nil, last, true
end

local function kv_of(kv)
    return { key = _M.unb64(kv.key or ""), value = kv.value and _M.unb64(kv.value) or "",
             create_revision = tonumber(kv.create_revision) or 0, mod_revision = tonumber(kv.mod_revision) or 0,
             lease = type(kv.lease) == "string" and kv.lease ~= "0" and kv.lease or nil }
end
_M.kv_of = kv_of

local PAGE = 500

--- Every key under the prefix at one revision: {revision, kvs = {...} (by key)} | nil, err, unreachable.
function _M:range_prefix()
    local from, stop = self.prefix .. "/", _M.prefix_end(self.prefix .. "/")
    local out, rev = {}, nil
    while true do
        local t, err, unreachable = self:call("/v3/kv/range", { key = _M.b64(from), range_end = _M.b64(stop),
            limit = PAGE, revision = rev and tostring(rev) or nil, sort_order = "ASCEND", sort_target = "KEY" })
        if not t then return nil, err, unreachable end
        rev = rev or tonumber(type(t.header) == "table" and t.header.revision) or 0
        local kvs = type(t.kvs) == "table" and t.kvs or {}
        for _, kv in ipairs(kvs) do out[#out + 1] = kv_of(kv) end
        if not t.more or #kvs == 0 then break end
        from = out[#out].key .. "\0"
    end
    return { revision = rev, kvs = out }
end

--- The store's current revision (a cheap read: one key that need not exist) | nil, err, unreachable.
function _M:revision()
    local t, err, unreachable = self:call("/v3/kv/range", { key = _M.b64(self.prefix .. "/"), keys_only = true })
    if not t then return nil, err, unreachable end
    return tonumber(type(t.header) == "table" and t.header.revision) or 0
end

-- A transaction whose success branch is op when key's mod_revision is still rev (0: the key must not exist).
local function txn_if(self, key, rev, op)
    local k = _M.b64(key)
    local t, err, unreachable = self:call("/v3/kv/txn", {
        compare = { { key = k, target = "MOD", result = "EQUAL", mod_revision = tostring(rev or 0) } },
        success = { op },
        failure = { { request_range = { key = k } } },
    })
    if not t then return nil, err, unreachable end
    local revision = tonumber(type(t.header) == "table" and t.header.revision) or 0
    if t.succeeded then return { ok = true, revision = revision } end
    local cur = 0
    local r = type(t.responses) == "table" and t.responses[1]
    local kvs = type(r) == "table" and type(r.response_range) == "table" and r.response_range.kvs
    if type(kvs) == "table" and kvs[1] then cur = tonumber(kvs[1].mod_revision) or 0 end
    return { ok = false, current = cur, revision = revision }
end

--- Writes value at key when its mod_revision is still rev (0: create only): {ok, revision | current}.
function _M:put_if(key, value, rev)
    return txn_if(self, key, rev, { request_put = { key = _M.b64(key), value = _M.b64(value) } })
end

--- Deletes key when its mod_revision is still rev.
function _M:delete_if(key, rev)
    return txn_if(self, key, rev, { request_delete_range = { key = _M.b64(key) } })
end

--- Puts and deletes in one transaction, unconditionally: {revision} | nil, err.
function _M:txn(ops)
    local list = {}
    for i, o in ipairs(ops) do
        list[i] = o.put and { request_put = { key = _M.b64(o.put), value = _M.b64(o.value), lease = o.lease } }
            or { request_delete_range = { key = _M.b64(o.delete) } }
    end
    local t, err, unreachable = self:call("/v3/kv/txn", { success = list })
    if not t then return nil, err, unreachable end
    return { revision = tonumber(type(t.header) == "table" and t.header.revision) or 0 }
end

--- A lease of ttl seconds: its id (a decimal string), the TTL etcd granted | nil, err, unreachable.
function _M:lease_grant(ttl)
    local t, err, unreachable = self:call("/v3/lease/grant", { TTL = tostring(ttl) })
    if not t then return nil, err, unreachable end
    if type(t.error) == "string" and t.error ~= "" then return nil, t.error end
    if type(t.ID) ~= "string" or not t.ID:match("^%d+$") then return nil, "etcd granted no lease id" end
    return t.ID, tonumber(t.TTL) or ttl
end

--- Renews a lease once: the seconds it has left (0 when it expired or was revoked) | nil, err, unreachable.
function _M:lease_keepalive(id)
    -- a stream in gRPC, one request and one answer ({"result": {...}}) through the gateway
    local t, err, unreachable = self:call("/v3/lease/keepalive", { ID = id })
    if not t then return nil, err, unreachable end
    if type(t.error) == "table" then return nil, tostring(t.error.message) end
    local r = type(t.result) == "table" and t.result or t
    return tonumber(r.TTL) or 0
end

--- Revokes a lease, deleting the keys attached to it: true (also when it was gone already) | nil, err, unreachable.
function _M:lease_revoke(id, timeout)
    local t, err, unreachable = self:call("/v3/lease/revoke", { ID = id }, timeout)
    if not t then
        if tostring(err):find("lease not found", 1, true) then return true end
        return nil, err, unreachable
    end
    return true
end

--- Puts value at key attached to lease when the key is absent or already attached to that lease: {ok = true,
--- revision}; {ok = false, holder = kv (kv.lease: the lease of whoever holds it)} when another lease holds it.
--- An unknown lease (expired, revoked) is an error with "lease not found" in it.
function _M:claim(key, value, lease)
    local k = _M.b64(key)
    local put = { request_put = { key = k, value = _M.b64(value), lease = lease } }
    local conds = { { key = k, target = "LEASE", result = "EQUAL", lease = lease },  -- ours already
                    { key = k, target = "CREATE", result = "EQUAL", create_revision = "0" } } -- nobody's
    for _, cond in ipairs(conds) do
        local t, err, unreachable = self:call("/v3/kv/txn", { compare = { cond }, success = { put },
                                                               failure = { { request_range = { key = k } } } })
        if not t then return nil, err, unreachable end
        if t.succeeded then
            return { ok = true, revision = tonumber(type(t.header) == "table" and t.header.revision) or 0 }
        end
        local r = type(t.responses) == "table" and t.responses[1]
        local kvs = type(r) == "table" and type(r.response_range) == "table" and r.response_range.kvs
        if type(kvs) == "table" and type(kvs[1]) == "table" then
            local kv = kv_of(kvs[1])
            if kv.lease ~= lease then return { ok = false, holder = kv } end
        end
    end
    return { ok = false } -- taken and let go between the two: the caller tries again later
end

local MAX_LINE = 256 * 1024 * 1024

--- Watches the prefix from start_revision (async only): fn(msg) for each message of the stream (msg.result as
--- the gateway sends it: header, events, created, canceled, compact_revision; or msg.error); fn returning
--- false ends the watch. Returns when the stream ends: the reason (nil when fn stopped it), detail.
function _M:watch(start_revision, fn, timeout)
    local ep = self:endpoint()
    local auth, aerr = self:auth_header(ep)
    if not auth then return aerr end
    local body = cjson.encode({ create_request = { key = _M.b64(self.prefix .. "/"),
        range_end = _M.b64(_M.prefix_end(self.prefix .. "/")), start_revision = tostring(start_revision) } })
    local parts, plen, stopped = {}, 0, false -- the message being received, in pieces (no copy per chunk)
    local function on_chunk(chunk)
        plen = plen + #chunk
        if plen > MAX_LINE then return false end
        parts[#parts + 1] = chunk
        if not chunk:find("\n", 1, true) then return end
        local buf = concat(parts)
        while true do
            local nl = buf:find("\n", 1, true)
            if not nl then break end
            local line = sub(buf, 1, nl - 1)
            buf = sub(buf, nl + 1)
            if line:find("%S") then
                local msg = cjson.decode(line)
                if type(msg) ~= "table" or fn(msg) == false then
                    stopped = true
                    return false
                end
            end
        end
        parts, plen = { buf }, #buf
    end
    local opts = http_opts(self, ep .. "/v3/watch", body, "Content-Type: application/json\r\n" .. auth, timeout,
        on_chunk)
    local res, err, detail = require("sluice.pdk.http").request(opts)
    if stopped then return nil end
    if res then return "closed", "etcd closed the watch (status " .. tostring(res.status) .. ")" end
    return err, detail
end

--- Rotates to the next endpoint (after a failed watch).
function _M:next_endpoint()
    self.ep = self.ep % #self.conf.endpoints + 1
    self.token = nil
end

return _M
