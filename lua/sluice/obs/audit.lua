-- sluice.obs.audit: the sinks of the ai-audit-log plugin, per worker: a file with rotation and an HTTP batch
-- exporter, plus the ring of recent records the dashboard shows. Records are JSON text; nothing here runs on
-- the request path except push() (an append to the sink's buffer): writes and sends happen in timers.
--
--   local s = audit.file_sink(conf.file)      -- same path: same sink (the options follow the newest conf)
--   local h = audit.http_sink(conf.http)
--   s:push(json) ; h:push(json)                -- false when the buffer is full (the record is dropped, counted)
--   audit.remember(json, n)                    -- the dashboard's ring of the last n records (shared dict);
--   audit.remember(rec, n, encode)             -- a table, encoded by the ring's timer when it is kept
--
-- File: opened O_APPEND by every worker (one write(2) per flush, so lines of workers never interleave),
-- reopened when SIGUSR1 bumped the reopen generation or when the path no longer names the open file (moved by
-- logrotate or by another worker's rotation). Rotation (by max_size, by rotate_interval) renames path -> path.1
-- -> path.2 ... up to max_files, under a shared-dict lock so one worker rotates.
-- HTTP: one batch in flight per sink and worker, in order; a failed batch is retried with exponential backoff
-- and jitter before anything after it; past max_retries it is dropped. A full buffer drops new records. Drops and
-- failures are counted (sluice_audit_dropped_total, sluice_audit_export_failures_total) and logged at most every
-- 10 s with the count.
local ffi = require("ffi")
local buffer = require("string.buffer")
local shared = require("sluice.pdk.shared")
local timer = require("sluice.pdk.timer")
local log = require("sluice.pdk.log")
local metrics = require("sluice.pdk.metrics")
local base = require("sluice.pdk.base")

local C = base.C
local L = ffi.C -- libc
local type, pairs, ipairs, tostring, tonumber, pcall, min, floor, random = type, pairs, ipairs, tostring,
    tonumber, pcall, math.min, math.floor, math.random
local format = string.format

-- one declaration per cdef: other modules (sluice.config.state) declare some of them too
for _, decl in ipairs({ "int open(const char *path, int flags, ...);", "long write(int fd, const void *buf, size_t n);",
                        "int close(int fd);", "int rename(const char *from, const char *to);",
                        "int unlink(const char *path);", "int stat(const char *path, void *buf);",
                        "int fstat(int fd, void *buf);", "char *strerror(int errnum);" }) do
    pcall(ffi.cdef, decl)
end

local O_WRONLY, O_CREAT, O_APPEND, O_CLOEXEC = 1, 64, 1024, 524288
local statbuf = ffi.new("uint8_t[256]") -- struct stat; st_ino at 8, st_size at 48 (x86-64 and arm64 glibc)
local function ino_size(ok)
    if ok ~= 0 then return nil end
    local p = ffi.cast("uint64_t *", statbuf)
    return tonumber(p[1]), tonumber(ffi.cast("int64_t *", statbuf + 48)[0])
end

local _M = {}

-- Whether a string can go into JSON between quotes as it is (no control character, quote or backslash; bytes
-- over 127 pass, as cjson passes them). Remembered for short values, which come back on every record (models,
-- providers, routes, addresses): a pattern search per value costs more than the lookup.
local plain_cache, plain_n = {}, 0
function _M.plain(v)
    local p = plain_cache[v]
    if p == nil then
        p = not string.find(v, '[%c"\\]')
        if #v <= 64 then
            if plain_n >= 2048 then plain_cache, plain_n = {}, 0 end
            plain_cache[v], plain_n = p, plain_n + 1
        end
    end
    return p
end

-- Appends a record (a string, or a string buffer) to buf. A buffer's bytes are copied as they are (putcdata):
-- buf:put(buffer) goes through the buffer's __tostring, which makes and interns a string of the record each time
-- and ends the JIT trace there.
local function append(buf, rec)
    if type(rec) == "string" then
        buf:put(rec)
    else
        local p, n = rec:ref()
        buf:putcdata(p, n)
    end
end

-- the counters of a family of sinks: "audit" (ai-audit-log) or "otel" (opentelemetry spans)
local FAMILIES = {}
local function family(name)
    local f = FAMILIES[name]
    if not f then
        local what = name == "otel" and "Spans" or "Audit records"
        f = {
            written = metrics.counter("sluice_" .. name .. "_records_total", what .. " written or delivered, by sink",
                { "sink" }),
            dropped = metrics.counter("sluice_" .. name .. "_dropped_total", what .. " dropped, by sink and reason",
                { "sink", "reason" }),
            failures = metrics.counter("sluice_" .. name .. "_export_failures_total",
                "Failed deliveries (a file write, an HTTP batch attempt), by sink", { "sink" }),
        }
        FAMILIES[name] = f
    end
    return f
end
family("audit")

-- Kept across plugin reloads (this is a runtime module): one sink per path / URL and worker.
local sinks = {}
local sink_of_conf = setmetatable({}, { __mode = "k" }) -- conf table -> its sink

local function warn_every(s, what, n)
    local now = C.sl_now()
    s.warn_n = (s.warn_n or 0) + n
    if not s.warn_t or now - s.warn_t >= 10 then
        log.warn(s.label or "ai-audit-log", " ", s.name, ": ", what, " (", s.warn_n, " in the last 10 s)")
        s.warn_t, s.warn_n = now, 0
    end
end

---------------------------------------------------------------------------------------------------------------
-- file

local File = {}
File.__index = File

--- Queues one record (a JSON string, or a string buffer whose contents are copied) as a line of the file's next
--- write: false when the buffer is full (dropped, counted).
function File.push(s, rec)
    if s.n >= s.conf.max_buffer then
        s.fam.dropped:inc(1, s.kind, "buffer_full")
        warn_every(s, "buffer full: records dropped", 1)
        return false
    end
    s.n = s.n + 1
    local buf = s.buf
    append(buf, rec)
    buf:put("\n")
    return true
end

local function open_file(s)
    local fd = L.open(s.path, O_WRONLY + O_CREAT + O_APPEND + O_CLOEXEC, ffi.new("int", 420)) -- 0644
    if fd < 0 then
        return nil, "cannot open " .. s.path .. ": " .. ffi.string(L.strerror(ffi.errno()))
    end
    s.fd = fd
    s.gen = C.sl_reopen_generation()
    s.ino = ino_size(L.fstat(fd, statbuf))
    return true
end

local function close_file(s)
    if s.fd then
        L.close(s.fd)
        s.fd = nil
    end
end

-- path -> path.1 -> ... -> path.max_files (the oldest is replaced), by one worker
local function rotate(s, d)
    if d and not d:add("audit|rot|" .. s.path, 1, 5) then
        return -- another worker rotates now
    end
    local n = s.conf.max_files
    for i = n - 1, 1, -1 do
        L.rename(s.path .. "." .. i, s.path .. "." .. (i + 1))
    end
    if n >= 1 then
        L.rename(s.path, s.path .. ".1")
    else
        L.unlink(s.path)
    end
    close_file(s)
    if d then
        d:set("audit|at|" .. s.path, floor(C.sl_time()))
        d:delete("audit|rot|" .. s.path)
    end
end

function File.service(s)
    local conf = s.conf
    -- reopen: SIGUSR1, or the path now names another file (or none)
    if s.fd then
        local moved = s.gen ~= C.sl_reopen_generation()
        if not moved then
            local ino = ino_size(L.stat(s.path, statbuf))
            moved = ino ~= s.ino
        end
        if moved then close_file(s) end
    end
    local d = shared.get("sluice")
    local now = C.sl_time()
    if conf.rotate_interval and conf.rotate_interval > 0 and d then
        local at = d:get("audit|at|" .. s.path)
        if not at then
            d:add("audit|at|" .. s.path, floor(now))
        elseif floor(now / conf.rotate_interval) ~= floor(at / conf.rotate_interval) then
            if not s.fd then open_file(s) end
            local _, size = ino_size(L.stat(s.path, statbuf))
            if size and size > 0 then rotate(s, d) else d:set("audit|at|" .. s.path, floor(now)) end
        end
    end
    if s.n == 0 then return end
    if not s.fd then
        local ok, err = open_file(s)
        if not ok then
            s.fam.failures:inc(1, "file")
            warn_every(s, err, 1)
            return
        end
    end
    local n, buf = s.n, s.buf
    s.n = 0
    -- the lines go out of the buffer as they are (one write(2) unless the kernel takes less)
    while #buf > 0 do
        local p, len = buf:ref()
        local w = L.write(s.fd, p, len)
        if w <= 0 then
            buf:reset()
            s.fam.failures:inc(1, "file")
            s.fam.dropped:inc(n, "file", "write_error")
            warn_every(s, "write failed: " .. ffi.string(L.strerror(ffi.errno())), n)
            close_file(s)
            return
        end
        buf:skip(tonumber(w))
    end
    buf:reset()
    s.fam.written:inc(n, "file")
    if conf.max_size and conf.max_size > 0 then
        local _, size = ino_size(L.fstat(s.fd, statbuf))
        if size and size >= conf.max_size then rotate(s, d) end
    end
end

local function start(s, interval)
    local function loop()
        local ok, err = pcall(s.service, s)
        if not ok then log.err(s.label or "ai-audit-log", " ", s.name, ": ", err) end
        timer.at(s.conf.flush_interval or interval, loop)
    end
    timer.at(interval, loop)
end

--- The file sink of conf.path in this worker (made and started on first use).
function _M.file_sink(conf)
    local hit = sink_of_conf[conf] -- (no id string made per record)
    if hit then
        hit.conf = conf
        return hit
    end
    local id = "file:" .. conf.path
    local s = sinks[id]
    if s then
        s.conf = conf
        sink_of_conf[conf] = s
        return s
    end
    s = setmetatable({ kind = "file", name = "file " .. conf.path, path = conf.path, conf = conf, buf = buffer.new(),
                       n = 0, fam = family("audit") }, File)
    sinks[id] = s
    sink_of_conf[conf] = s
    start(s, conf.flush_interval)
    return s
end

---------------------------------------------------------------------------------------------------------------
-- HTTP

local Http = {}
Http.__index = Http

-- Batches are formed as records arrive, each one a string buffer with the format's framing already in place
-- (records are appended, never kept as strings of their own and joined at send time); loki batches keep a list,
-- since each record becomes a JSON string there. A batch holds at most batch_size records; sends take the oldest.
local SEP = { otlp = ",", json_array = ",", jsonl = "", es_bulk = "" }
local PRE = { es_bulk = '{"index":{}}\n' }
local POST = { jsonl = "\n", es_bulk = "\n" }

-- The batch to append to (a new one when the last is full): nil when the sink's buffer is full (counted).
local function batch_for(s)
    if s.n >= s.conf.max_buffer then
        s.fam.dropped:inc(1, s.kind, "buffer_full")
        warn_every(s, "buffer full: records dropped", 1)
        return nil
    end
    local b = s.q[s.tail]
    if not b or b.n >= s.conf.batch_size or b.sending then
        if b and b.buf and b.n > 0 then -- the next batch starts at the size this one would have had full
            s.hint = min(floor(#b.buf / b.n * s.conf.batch_size * 1.1), 16777216)
        end
        s.tail = s.tail + 1
        b = { n = 0 }
        if s.conf.format == "loki" then
            b.list = {}
        else
            -- sized from the last batch: a buffer that grows by doubling copies its bytes about twice more
            b.buf = buffer.new(s.hint or 0)
            local f = s.conf.format
            if f == "otlp" then b.buf:put(s.conf.envelope[1]) elseif f == "json_array" then b.buf:put("[") end
        end
        s.q[s.tail] = b
    end
    s.n = s.n + 1
    b.n = b.n + 1
    return b
end

local function put_record(s, b, rec)
    if b.list then
        b.list[b.n] = type(rec) == "string" and rec or rec:tostring()
        return
    end
    local f = s.conf.format
    local buf = b.buf
    if b.n > 1 then buf:put(SEP[f] or "") end
    local pre, post = PRE[f], POST[f]
    if pre then buf:put(pre) end
    append(buf, rec)
    if post then buf:put(post) end
end

--- Queues one record (a JSON string, or a string buffer whose contents are copied): false when the buffer is full.
function Http.push(s, rec)
    local b = batch_for(s)
    if not b then return false end
    put_record(s, b, rec)
    return true
end

local function body_of(s, b)
    local f = s.conf.format
    if f == "loki" then
        local vals, ts = {}, format("%.0f", C.sl_time() * 1e9)
        local cjson = require("cjson.safe")
        for i, r in ipairs(b.list) do vals[i] = { ts, r } end
        return cjson.encode({ streams = { { stream = s.conf.loki_labels or { job = "sluice-audit" },
                                            values = vals } } }), "application/json"
    end
    if not b.closed then -- the batch's opening went in with its first record
        b.closed = true
        if f == "otlp" then b.buf:put(s.conf.envelope[2]) elseif f == "json_array" then b.buf:put("]") end
    end
    return b.buf:tostring(), (f == "otlp" or f == "json_array") and "application/json" or "application/x-ndjson"
end

-- Sends the oldest batch; true when the queue moved on (sent, or dropped past the retries).
local function send_one(s)
    local conf = s.conf
    local b = s.q[s.head]
    local k = b.n
    b.sending = true -- nothing more is appended to a batch once it went out (a retry sends the same)
    local body, ctype = body_of(s, b)
    local headers = { ["content-type"] = ctype }
    for name, v in pairs(conf.headers or {}) do headers[name] = v end
    local http = require("sluice.pdk.http")
    local res, err, detail = http.request({ method = "POST", url = conf.url, headers = headers, body = body,
                                           timeout = conf.timeout, proxy = conf.proxy })
    local ok = res and res.status >= 200 and res.status < 300
    if not ok then
        s.fam.failures:inc(1, s.kind)
        s.attempts = s.attempts + 1
        local why = res and ("status " .. res.status) or (tostring(err) .. (detail and (": " .. detail) or ""))
        if conf.max_retries > 0 and s.attempts > conf.max_retries then
            s.fam.dropped:inc(k, s.kind, "retries_exhausted")
            warn_every(s, "batch of " .. k .. " dropped after " .. s.attempts .. " attempts (" .. why .. ")", k)
        else
            local bo = conf.backoff
            local delay = min(bo.max, bo.base * 2 ^ (s.attempts - 1)) * (0.5 + random() * 0.5)
            s.next_try = C.sl_now() + delay
            if s.attempts == 1 or s.attempts % 5 == 0 then
                log.warn(s.label or "ai-audit-log", " ", s.name, ": delivery failed (", why, "), attempt ", s.attempts,
                    ", retrying in ", format("%.2f", delay), " s")
            end
            return false
        end
    else
        s.fam.written:inc(k, s.kind)
    end
    s.q[s.head] = nil
    s.head, s.n, s.attempts = s.head + 1, s.n - k, 0
    return true
end

function Http.service(s)
    if s.busy then return end
    s.busy = true
    while s.n > 0 and C.sl_now() >= s.next_try do
        local ok, moved = pcall(send_one, s)
        if not ok then
            log.err(s.label or "ai-audit-log", " ", s.name, ": ", moved)
            break
        end
        if not moved then break end
    end
    s.busy = false
end

--- The HTTP sink of conf.url (and format) in this worker. fam: "audit" (default) or "otel" (the counters it
--- reports to; the otel family's sink label is "otlp").
function _M.http_sink(conf, fam)
    local hit = sink_of_conf[conf] -- (no id string made per record)
    if hit then
        hit.conf = conf
        return hit
    end
    fam = fam or "audit"
    local id = "http:" .. conf.url .. "|" .. conf.format
    local s = sinks[id]
    if s then
        s.conf = conf
        sink_of_conf[conf] = s
        return s
    end
    s = setmetatable({ kind = fam == "otel" and "otlp" or "http", name = (fam == "otel" and "otlp " or "http ")
                       .. conf.url, conf = conf, q = {}, head = 1, tail = 0, n = 0, attempts = 0, next_try = 0,
                       fam = family(fam), label = fam == "otel" and "opentelemetry" or "ai-audit-log" }, Http)
    sinks[id] = s
    sink_of_conf[conf] = s
    start(s, conf.flush_interval)
    return s
end

---------------------------------------------------------------------------------------------------------------
-- the dashboard's ring of recent records (shared by the workers)

-- The last `keep` records of this worker since the last flush (a circular list; tables are encoded by the flush,
-- so a record that a newer one replaces before it is never encoded).
local ring, ring_n, ring_keep, ring_enc = {}, 0, 50, nil
local ring_timer = false

local function ring_flush()
    local d = shared.get("sluice")
    local count, keep = ring_n, ring_keep
    ring_n = 0
    if not d or count == 0 then return end
    if d:get("audit|recent|keep") ~= keep then d:set("audit|recent|keep", keep) end
    for j = count > keep and count - keep + 1 or 1, count do
        local v = ring[(j - 1) % keep + 1]
        if type(v) ~= "string" then v = ring_enc(v) end
        local at = d:incr("audit|recent|n", 1, 0)
        if at then d:set("audit|recent|" .. (at % keep), v) end
    end
    ring = {}
end

--- Keeps a record among the last n records shown by the dashboard (written by a timer): its JSON text, or a
--- table and the function that encodes it (called by the timer, only for the records that are kept).
function _M.remember(rec, n, encode)
    if n ~= ring_keep and ring_n > 0 then ring_flush() end
    ring_keep, ring_enc = n, encode or ring_enc
    ring_n = ring_n + 1
    ring[(ring_n - 1) % n + 1] = rec
    if not ring_timer then
        ring_timer = true
        local ok = pcall(timer.every, 0.5, ring_flush)
        if not ok then ring_timer = false end
    end
end

--- The last n records (newest first), as JSON strings.
function _M.recent(n)
    ring_flush()
    local d = shared.get("sluice")
    if not d then return {} end
    local last = tonumber(d:get("audit|recent|n")) or 0
    local keep = tonumber(d:get("audit|recent|keep")) or n
    local out = {}
    for i = last, last - min(n, keep) + 1, -1 do
        if i < 1 then break end
        local v = d:get("audit|recent|" .. (i % keep))
        if type(v) == "string" then out[#out + 1] = v end
    end
    return out
end

--- Every sink of this worker (specs, shutdown).
function _M.sinks()
    return sinks
end

return _M
