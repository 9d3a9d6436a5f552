-- Request bodies larger than node.limits.body_buffer_size: the request is handled while its body arrives, and the
-- body streams to the upstream (Content-Length kept, chunked bodies re-chunked) with back-pressure; a plugin that
-- reads the body waits for all of it; an early response drops the rest and keeps the connection; bodies over
-- max_body_size, clients that vanish and pipelined requests behind a streamed body.
local helpers = require("helpers")
local socket = require("socket")
local cjson = require("cjson.safe")

local MB = 1024 * 1024

local function sha256(data)
    local f = helpers.tmpdir() .. "/body"
    helpers.write_file(f, data)
    local code, out = helpers.exec("sha256sum " .. helpers.shell_quote(f), 30)
    assert(code == 0, out)
    return out:match("^(%x+)")
end

-- n bytes that do not repeat in short periods (a shifted or dropped piece changes the hash)
local function body_of(n)
    local parts, i, size = {}, 0, 0
    while size < n do
        i = i + 1
        parts[i] = string.format("%07d\n", i)
        size = size + 8
    end
    return table.concat(parts):sub(1, n)
end

local function chunked(data, piece)
    local out = {}
    for i = 1, #data, piece do
        local p = data:sub(i, i + piece - 1)
        out[#out + 1] = string.format("%x\r\n%s\r\n", #p, p)
    end
    return table.concat(out)
end

local function start_upstream()
    local dir = helpers.tmpdir()
    local up = { log = dir .. "/events.jsonl" }
    helpers.write_file(up.log, "")
    up.proc = helpers.spawn(string.format("node %s %s %s >%s 2>&1",
        helpers.shell_quote(helpers.ROOT .. "/spec/support/upload_upstream.js"), helpers.shell_quote(dir .. "/port"),
        helpers.shell_quote(up.log), helpers.shell_quote(dir .. "/out.log")))
    up.port = helpers.wait_until(function() return tonumber(helpers.read_file(dir .. "/port")) end, 10,
        "upload upstream did not start")
    function up.events(ev, path)
        local out = {}
        for line in (helpers.read_file(up.log) or ""):gmatch("[^\n]+") do
            local e = cjson.decode(line)
            if e and (ev == nil or e.ev == ev) and (path == nil or e.path == path) then out[#out + 1] = e end
        end
        return out
    end
    function up.clear() helpers.write_file(up.log, "") end
    return up
end

local function connect(port, timeout)
    local c = socket.tcp()
    c:settimeout(timeout or 20)
    assert(c:connect("127.0.0.1", port))
    return c
end

-- Reads one response: status, headers (lower-case names), body (Content-Length or chunked).
local function read_response(c)
    local line, err = c:receive("*l")
    if not line then return nil, "status line: " .. tostring(err) end
    local res = { status = tonumber(line:match("^HTTP/1%.1 (%d+)")), headers = {} }
    while true do
        local h = assert(c:receive("*l"))
        if h == "" then break end
        local k, v = h:match("^([^:]+):%s*(.-)%s*$")
        res.headers[k:lower()] = v
    end
    if res.headers["transfer-encoding"] then
        local parts = {}
        while true do
            local size = tonumber(assert(c:receive("*l")):match("^(%x+)"), 16)
            if size == 0 then assert(c:receive("*l")) break end
            parts[#parts + 1] = assert(c:receive(size))
            assert(c:receive("*l"))
        end
        res.body = table.concat(parts)
    else
        local n = tonumber(res.headers["content-length"] or 0)
        res.body = n > 0 and assert(c:receive(n)) or ""
    end
    res.json = cjson.decode(res.body)
    return res
end

-- Sends a chunked body of 52 MB (over the specs' 48m max_body_size) to path; returns the response or nil.
local function send_oversized(port, path)
    local piece = chunked(body_of(MB), 65536)
    local c = connect(port)
    c:settimeout(10)
    local ok = c:send("POST " .. path .. " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ = 1, 52 do
        ok = ok and c:send(piece)
    end
    local res = read_response(c)
    c:close()
    return res
end

local function rss_kb(pid)
    local s = helpers.read_file("/proc/" .. pid .. "/status") or ""
    return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

describe("request body streaming", function()
    local up, gw

    setup(function()
        up = start_upstream()
        local upstream = { nodes = { "127.0.0.1:" .. up.port } }
        gw = helpers.start_gateway({
            node = { workers = 1, limits = { body_buffer_size = "64k", max_body_size = "48m", body_timeout = 2 },
                     plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/body_plugins" } },
            routes = {
                { id = "sink", paths = { "/sink", "/slow", "/early" }, upstream = upstream },
                { id = "read", paths = { "/read" }, upstream = upstream, plugins = { ["body-reader"] = {} } },
                { id = "deny", paths = { "/deny" }, upstream = upstream,
                  plugins = { ["key-auth"] = {} } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    before_each(function()
        up.clear()
    end)

    it("sends a Content-Length body upstream before the client finished sending it", function()
        local body = body_of(4 * MB)
        local c = connect(gw.port)
        assert(c:send("POST /sink HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n" ..
            "Content-Length: " .. #body .. "\r\n\r\n" .. body:sub(1, MB)))
        -- a gateway that buffered the body would not have opened the upstream request yet
        helpers.wait_until(function() return #up.events("head", "/sink") == 1 end, 10,
            "the upstream did not see the request while its body was still arriving")
        assert.same({}, up.events("end", "/sink"))
        assert(c:send(body:sub(MB + 1)))
        local res = assert(read_response(c))
        assert.equal(200, res.status, res.body)
        assert.equal(#body, res.json.len)
        assert.equal(sha256(body), res.json.sha256)
        assert.equal(tostring(#body), res.json.cl)
        assert.equal(cjson.null, res.json.te)
        -- the connection goes on: a small request after it is buffered as before
        assert(c:send("POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"))
        local res2 = assert(read_response(c))
        assert.equal(5, res2.json.len)
        assert.equal("5", res2.json.cl)
        c:close()
    end)

    it("re-chunks a chunked body as it arrives", function()
        local body = body_of(3 * MB + 12345)
        local framed = chunked(body, 100000)
        local c = connect(gw.port)
        assert(c:send("POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" .. framed:sub(1, MB)))
        helpers.wait_until(function() return #up.events("head", "/sink") == 1 end, 10,
            "the upstream did not see the chunked request while its body was still arriving")
        assert(c:send(framed:sub(MB + 1) .. "0\r\n\r\n"))
        local res = assert(read_response(c))
        assert.equal(200, res.status, res.body)
        assert.equal("chunked", res.json.te)
        assert.equal(cjson.null, res.json.cl)
        assert.equal(#body, res.json.len)
        assert.equal(sha256(body), res.json.sha256)
        c:close()
    end)

    it("lets a plugin read the whole body, then sends it as it was", function()
        local body = body_of(2 * MB + 3)
        local c = connect(gw.port)
        assert(c:send("POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body:sub(1, MB)))
        socket.sleep(0.3) -- the plugin is waiting for the rest by now
        assert.same({}, up.events("head"))
        assert(c:send(body:sub(MB + 1)))
        local res = assert(read_response(c))
        assert.equal(200, res.status, res.body)
        assert.equal(tostring(#body), res.json.seen_len)
        assert.equal((body:sub(-8):gsub("\n", "%%0A")), res.json.seen_tail) -- the plugin escapes LF
        assert.equal(#body, res.json.len)
        assert.equal(sha256(body), res.json.sha256)
        assert.equal(tostring(#body), res.json.cl)
        c:close()
    end)

    it("answers 413 when a streamed chunked body outgrows max_body_size, and cancels the upstream request", function()
        local res = send_oversized(gw.port, "/sink")
        assert.equal(413, res and res.status)
        helpers.wait_until(function() return #up.events("aborted", "/sink") == 1 end, 10,
            "the upstream request was not cut off")
        assert.same({}, up.events("end", "/sink"))
        local after = assert(helpers.http("POST", gw.url("/sink"), { body = "still fine" }))
        assert.equal(10, after.json.len)
    end)

    it("wakes a plugin waiting for a body that ends in 413", function()
        local res = send_oversized(gw.port, "/read")
        assert.equal(413, res and res.status)
        assert.same({}, up.events("head"))
        -- its coroutine ran to its end: the access log line is written after the log phase
        helpers.wait_until(function()
            for line in (gw:access_log() or ""):gmatch("[^\n]+") do
                local e = cjson.decode(line)
                if e and e.route == "read" and e.status == 413 then return true end
            end
        end, 5, "the request waiting for its body never finished")
    end)

    it("drops the rest of the body after an early response and keeps the connection", function()
        local body = body_of(6 * MB)
        local c = connect(gw.port)
        assert(c:send("POST /early?status=401 HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n\r\n" ..
            body:sub(1, MB)))
        local res = assert(read_response(c))
        assert.equal(401, res.status)
        assert.is_true(res.json.early)
        assert(c:send(body:sub(MB + 1)))
        assert(c:send("POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"))
        local res2 = assert(read_response(c))
        assert.equal(200, res2.status)
        assert.equal(3, res2.json.len)
        c:close()
    end)

    it("answers a plugin's refusal before the body ended, then serves a pipelined request", function()
        local body = body_of(3 * MB)
        local c = connect(gw.port)
        assert(c:send("POST /deny HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body:sub(1, MB)))
        local res = assert(read_response(c))
        assert.equal(401, res.status)
        assert(c:send(body:sub(MB + 1) .. "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok"))
        local res2 = assert(read_response(c))
        assert.equal(2, res2.json.len)
        c:close()
        assert.same({}, up.events("head", "/deny"))
    end)

    it("serves a request pipelined right behind a streamed body", function()
        local body = body_of(MB + 7)
        local c = connect(gw.port)
        assert(c:send("POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body ..
            "GET /sink HTTP/1.1\r\nHost: x\r\n\r\n"))
        local a = assert(read_response(c))
        local b = assert(read_response(c))
        assert.equal(#body, a.json.len)
        assert.equal(sha256(body), a.json.sha256)
        assert.equal(0, b.json.len)
        c:close()
    end)

    it("cancels the upstream request when the client goes away mid-body", function()
        local c = connect(gw.port)
        assert(c:send("POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" .. body_of(MB)))
        helpers.wait_until(function() return #up.events("head", "/sink") == 1 end, 10)
        c:close()
        helpers.wait_until(function() return #up.events("aborted", "/sink") == 1 end, 10,
            "the upstream request was not cut off")
        local after = assert(helpers.http("GET", gw.url("/sink")))
        assert.equal(200, after.status)
        -- the cut request is logged as nginx does: 499, nothing sent
        helpers.wait_until(function()
            for line in (gw:access_log() or ""):gmatch("[^\n]+") do
                local e = cjson.decode(line)
                if e and e.route == "sink" and e.status == 499 then return e.bytes == 0 end
            end
        end, 5, "no access log line for the request the client abandoned")
    end)

    it("answers 408 when the body stalls, and cancels the upstream request", function()
        local c = connect(gw.port)
        assert(c:send("POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" .. body_of(MB)))
        local res = assert(read_response(c)) -- body_timeout is 2 s here
        assert.equal(408, res.status)
        c:close()
        helpers.wait_until(function() return #up.events("aborted", "/sink") == 1 end, 10,
            "the upstream request was not cut off")
    end)
end)

describe("request body streaming to a slow upstream", function()
    local up

    setup(function()
        up = start_upstream()
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("does not buffer an upload the upstream reads slowly (back-pressure)", function()
        -- a gateway of its own: RSS does not shrink after the big bodies of the tests above
        -- (under ASan, freed memory waits in a quarantine and would count as growth: keep it small)
        local asan = os.getenv("ASAN_OPTIONS")
        local gw = helpers.start_gateway({
            node = { workers = 1, limits = { body_buffer_size = "64k", max_body_size = "48m" } },
            routes = { { id = "slow", paths = { "/slow" }, upstream = { nodes = { "127.0.0.1:" .. up.port } } } },
        }, { env = { ASAN_OPTIONS = (asan and asan ~= "" and asan .. ":" or "") .. "quarantine_size_mb=1" } })
        local total = 40 * MB
        local body = body_of(total)
        local base = rss_kb(gw.pid)
        local c = connect(gw.port)
        assert(c:send("POST /slow?bps=" .. (10 * MB) .. " HTTP/1.1\r\nHost: x\r\nContent-Length: " .. total .. "\r\n\r\n"))
        c:settimeout(0.05)
        local sent, peak, deadline = 0, 0, socket.gettime() + 30
        while sent < total and socket.gettime() < deadline do
            local last, err, partial = c:send(body, sent + 1)
            sent = last or partial or sent
            assert(err == nil or err == "timeout", err)
            peak = math.max(peak, rss_kb(gw.pid) - base)
        end
        assert.equal(total, sent)
        c:settimeout(30)
        local res = assert(read_response(c))
        c:close()
        assert.equal(total, res.json.len)
        assert.equal(sha256(body), res.json.sha256)
        -- the upstream reads 10 MB/s, the client sends far faster: without back-pressure most of the 40 MB would
        -- sit in the gateway
        assert.is_true(peak < 16 * 1024, "gateway VmRSS grew by " .. peak .. " kB during the upload")
        print(string.format("\n40 MB upload to a 10 MB/s upstream: gateway VmRSS grew by at most %d kB", peak))
    end)
end)

describe("request body streaming over an HTTPS listener", function()
    local up, dir, tls_port
    local q = helpers.shell_quote

    setup(function()
        up = start_upstream()
        dir = helpers.tmpdir()
        local code, out = helpers.exec("sh " .. q(helpers.ROOT .. "/spec/support/certs.sh") .. " " .. q(dir) ..
            " gw.test", 30)
        assert(code == 0, out)
        tls_port = helpers.free_port()
        helpers.start_gateway({
            node = { workers = 1, limits = { body_buffer_size = "64k", max_body_size = "48m" },
                     listen = { "127.0.0.1:" .. helpers.free_port(), { addr = "127.0.0.1:" .. tls_port,
                                tls = { cert = dir .. "/gw.test.crt", key = dir .. "/gw.test.key" } } } },
            routes = { { id = "sink", paths = { "/sink" }, upstream = { nodes = { "127.0.0.1:" .. up.port } } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- curl sends Expect: 100-continue for bodies this large, so the interim response is exercised as well
    for _, mode in ipairs({ "length", "chunked" }) do
        it("streams a " .. mode .. " upload from curl to the upstream", function()
            local body = body_of(5 * MB + 321)
            local file = helpers.tmpdir() .. "/upload"
            helpers.write_file(file, body)
            local code, out = helpers.exec(("curl -sS --max-time 20 --cacert %s --resolve gw.test:%d:127.0.0.1 " ..
                "--data-binary @%s -H 'Content-Type: application/octet-stream' %s https://gw.test:%d/sink"):format(
                q(dir .. "/ca.crt"), tls_port, q(file), mode == "chunked" and "-H 'Transfer-Encoding: chunked'" or "",
                tls_port), 30)
            assert.equal(0, code, out)
            local res = assert(cjson.decode(out), out)
            assert.equal(#body, res.len)
            assert.equal(sha256(body), res.sha256)
            assert.equal(mode == "chunked" and "chunked" or cjson.null, res.te)
        end)
    end
end)
