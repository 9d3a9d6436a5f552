-- Differential check of request handling against nginx (Debian's nginx-light; scripts/deps.sh installs it):
-- the same tricky requests (smuggling shapes, header syntax, dot segments and escapes, absolute form, trailers,
-- Host and version oddities, long heads) go to nginx proxying to one raw-byte-logging upstream and to Sluice
-- proxying to another (spec/support/raw_upstream.js). What each upstream received (request line, Host, the
-- test's X- headers, framing, body, how many requests) and the status each client got must be the same, or
-- differ exactly as listed in KNOWN below, each difference explained in docs/http-compat.md. A new difference,
-- or a listed one that went away, fails the spec. SLUICE_DIFF_REPORT=1 prints every case side by side.
local helpers = require("helpers")
local socket = require("socket")
local cjson = require("cjson.safe")

local format, concat, rep, lower = string.format, table.concat, string.rep, string.lower

local H = "Host: x\r\n"
local LONG = rep("v", 10000)

-- { name, raw request }: each is complete, so neither proxy waits for more bytes.
local CASES = {
    -- baseline
    { "get", "GET /pub/x HTTP/1.1\r\n" .. H .. "X-A: 1\r\n\r\n" },
    { "post_length", "POST /pub/x HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\n\r\nabc" },
    { "post_chunked", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
    { "http10", "GET /pub/x HTTP/1.0\r\n\r\n" },
    -- framing and smuggling shapes
    { "cl_te", "POST /pub/x HTTP/1.1\r\n" .. H .. "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG" },
    { "te_cl", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" },
    { "two_cl_same", "POST /pub/x HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc" },
    { "two_cl_differ", "POST /pub/x HTTP/1.1\r\n" .. H .. "Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd" },
    { "cl_list", "POST /pub/x HTTP/1.1\r\n" .. H .. "Content-Length: 3, 3\r\n\r\nabc" },
    { "cl_plus", "POST /pub/x HTTP/1.1\r\n" .. H .. "Content-Length: +3\r\n\r\nabc" },
    { "cl_trailing_space", "POST /pub/x HTTP/1.1\r\n" .. H .. "Content-Length: 3 \r\n\r\nabc" },
    { "te_case", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: Chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
    { "te_gzip_chunked", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
    { "te_chunked_gzip", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked, gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
    { "te_xchunked", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: xchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
    { "te_identity", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: identity\r\nContent-Length: 3\r\n\r\nabc" },
    { "te_twice", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n" ..
        "3\r\nabc\r\n0\r\n\r\n" },
    { "te_space_colon", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc" },
    { "te_tab_value", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding:\tchunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
    { "te_obs_fold", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding:\r\n chunked\r\nContent-Length: 3\r\n\r\nabc" },
    { "te_http10", "POST /pub/x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n" },
    { "chunk_ext", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3;a=b\r\nabc\r\n0\r\n\r\n" },
    { "chunk_zeros", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n003\r\nabc\r\n0\r\n\r\n" },
    { "chunk_bad_size", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3x\r\nabc\r\n0\r\n\r\n" },
    { "chunk_bare_lf", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n" },
    { "trailers", "POST /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n" },
    { "trailer_only", "GET /pub/x HTTP/1.1\r\n" .. H .. "Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n" },
    -- header syntax
    { "obs_fold", "GET /pub/x HTTP/1.1\r\n" .. H .. "X-Fold: a\r\n b\r\n\r\n" },
    { "bare_lf", "GET /pub/x HTTP/1.1\nHost: x\nX-A: 1\n\n" },
    { "bare_lf_request_line", "GET /pub/x HTTP/1.1\n" .. H .. "\r\n" },
    { "bare_cr", "GET /pub/x HTTP/1.1\r\n" .. H .. "X-A: 1\rX-B: 2\r\n\r\n" },
    { "space_before_colon", "GET /pub/x HTTP/1.1\r\n" .. H .. "X-Sp : v\r\n\r\n" },
    { "space_before_first_header", "GET /pub/x HTTP/1.1\r\n X-A: 1\r\n" .. H .. "\r\n" },
    { "value_trailing_space", "GET /pub/x HTTP/1.1\r\n" .. H .. "X-A: v \t\r\n\r\n" },
    { "value_utf8", "GET /pub/x HTTP/1.1\r\n" .. H .. "X-A: caf\195\169\r\n\r\n" },
    { "header_no_colon", "GET /pub/x HTTP/1.1\r\n" .. H .. "X-A\r\n\r\n" },
    { "header_empty_name", "GET /pub/x HTTP/1.1\r\n" .. H .. ": v\r\n\r\n" },
    { "duplicate_x_header", "GET /pub/x HTTP/1.1\r\n" .. H .. "X-D: 1\r\nX-D: 2\r\n\r\n" },
    { "connection_names_header", "GET /pub/x HTTP/1.1\r\n" .. H .. "Connection: x-secret\r\nX-Secret: 1\r\n\r\n" },
    { "long_header", "GET /pub/x HTTP/1.1\r\n" .. H .. "X-Long: " .. LONG .. "\r\n\r\n" },
    { "long_url", "GET /pub/" .. rep("u", 9000) .. " HTTP/1.1\r\n" .. H .. "\r\n" },
    { "lowercase_method", "get /pub/x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "two_spaces", "GET  /pub/x HTTP/1.1\r\n" .. H .. "\r\n" },
    -- Host
    { "no_host_11", "GET /pub/x HTTP/1.1\r\n\r\n" },
    { "two_hosts", "GET /pub/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" },
    { "host_empty", "GET /pub/x HTTP/1.1\r\nHost:\r\n\r\n" },
    { "host_space", "GET /pub/x HTTP/1.1\r\nHost: a b\r\n\r\n" },
    { "host_slash", "GET /pub/x HTTP/1.1\r\nHost: a/b\r\n\r\n" },
    { "host_userinfo", "GET /pub/x HTTP/1.1\r\nHost: u@a\r\n\r\n" },
    { "host_bad_port", "GET /pub/x HTTP/1.1\r\nHost: a:8o\r\n\r\n" },
    { "host_port", "GET /pub/x HTTP/1.1\r\nHost: a:8080\r\n\r\n" },
    { "host_ipv6", "GET /pub/x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n" },
    { "host_upper_dot", "GET /pub/x HTTP/1.1\r\nHost: A.Example.\r\n\r\n" },
    { "host_dotdot", "GET /pub/x HTTP/1.1\r\nHost: a..b\r\n\r\n" },
    -- versions
    { "http20", "GET /pub/x HTTP/2.0\r\n" .. H .. "\r\n" },
    { "http12", "GET /pub/x HTTP/1.2\r\n" .. H .. "\r\n" },
    { "http09_line", "GET /pub/x\r\n\r\n" },
    { "http30", "GET /pub/x HTTP/3.0\r\n" .. H .. "\r\n" },
    -- paths
    { "dot_dot", "GET /pub/../priv/x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "dot", "GET /pub/./x/. HTTP/1.1\r\n" .. H .. "\r\n" },
    { "dot_dot_escaped", "GET /pub/%2e%2E/priv/x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "dot_dot_half_escaped", "GET /pub/.%2e/priv/x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "above_root", "GET /../x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "above_root_escaped", "GET /pub/%2e%2e/%2e%2e/x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "double_slash", "GET //pub//x/ HTTP/1.1\r\n" .. H .. "\r\n" },
    { "double_slash_dot_dot", "GET /pub//../x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "encoded_slash", "GET /pub/a%2Fb HTTP/1.1\r\n" .. H .. "\r\n" },
    { "encoded_slash_dot_dot", "GET /pub/..%2f..%2fx HTTP/1.1\r\n" .. H .. "\r\n" },
    { "encoded_nul", "GET /pub/a%00b HTTP/1.1\r\n" .. H .. "\r\n" },
    { "encoded_percent", "GET /pub/%25 HTTP/1.1\r\n" .. H .. "\r\n" },
    { "double_encoded_dot", "GET /pub/%252e%252e/x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "encoded_unreserved", "GET /pub/%7Euser/%41%2d HTTP/1.1\r\n" .. H .. "\r\n" },
    { "encoded_sub_delim", "GET /pub/a%2ab%3Bc HTTP/1.1\r\n" .. H .. "\r\n" },
    { "encoded_space_query_mark", "GET /pub/a%20b%3fc HTTP/1.1\r\n" .. H .. "\r\n" },
    { "encoded_utf8", "GET /pub/caf%c3%a9 HTTP/1.1\r\n" .. H .. "\r\n" },
    { "raw_utf8", "GET /pub/caf\195\169 HTTP/1.1\r\n" .. H .. "\r\n" },
    { "bad_escape", "GET /pub/%zz HTTP/1.1\r\n" .. H .. "\r\n" },
    { "fragment", "GET /pub/a#f HTTP/1.1\r\n" .. H .. "\r\n" },
    { "tab_in_target", "GET /pub/a\tb HTTP/1.1\r\n" .. H .. "\r\n" },
    { "query_kept", "GET /pub/a/../b?x=/../y&z=%2e%2E%2F HTTP/1.1\r\n" .. H .. "\r\n" },
    { "relative_path", "GET pub/x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "asterisk_get", "GET * HTTP/1.1\r\n" .. H .. "\r\n" },
    { "asterisk_options", "OPTIONS * HTTP/1.1\r\n" .. H .. "\r\n" },
    -- absolute form
    { "absolute", "GET http://a.example:8080/pub/x?q=1 HTTP/1.1\r\n" .. H .. "\r\n" },
    { "absolute_https", "GET https://a.example/pub/./x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "absolute_no_path", "GET http://a.example HTTP/1.1\r\n" .. H .. "\r\n" },
    { "absolute_ftp", "GET ftp://a.example/pub/x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "absolute_userinfo", "GET http://u@a.example/pub/x HTTP/1.1\r\n" .. H .. "\r\n" },
    { "absolute_no_host_header", "GET http://a.example/pub/x HTTP/1.1\r\n\r\n" },
    { "absolute_http10_no_host", "GET http://a.example/pub/x HTTP/1.0\r\n\r\n" },
    -- methods and expectations
    { "connect", "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n" },
    { "expect_continue", "POST /pub/x HTTP/1.1\r\n" .. H .. "Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc" },
}

-- What one side got for a request it refused, or forwarded (one request upstream).
local function refused(status)
    return { status = status, forwarded = 0, line = "-", host = "-", headers = "-", framing = "-", body = "-" }
end
local function served(line, host, headers, framing, body, status)
    return { status = status or 200, forwarded = 1, line = line, host = host, headers = headers or "",
             framing = framing or "none", body = body or "" }
end

-- The differences that are meant (docs/http-compat.md says why, under the case's name): per case, the fields
-- that differ and the value each side must have; every other field must still be equal.
local KNOWN = {
    -- framing
    te_chunked_gzip = { nginx = { status = 501 }, sluice = { status = 400 } },
    te_identity = { nginx = { status = 501 }, sluice = { status = 400 } },
    te_tab_value = { nginx = refused(501), sluice = served("POST /pub/x HTTP/1.1", "x", "", "length", "abc") },
    chunk_bare_lf = { nginx = served("POST /pub/x HTTP/1.1", "x", "", "length", "abc"), sluice = refused(400) },
    trailer_only = { nginx = { framing = "length" }, sluice = { framing = "none" } },
    -- header syntax
    obs_fold = { nginx = refused(400), sluice = served("GET /pub/x HTTP/1.1", "x", "x-fold: a b") },
    bare_lf = { nginx = served("GET /pub/x HTTP/1.1", "x", "x-a: 1"), sluice = refused(400) },
    header_no_colon = { nginx = served("GET /pub/x HTTP/1.1", "x", "x-a: "), sluice = refused(400) },
    connection_names_header = { nginx = { headers = "x-secret: 1" }, sluice = { headers = "" } },
    long_header = { nginx = refused(400), sluice = served("GET /pub/x HTTP/1.1", "x", "x-long: " .. LONG) },
    -- Host
    http10 = { nginx = { host = "-" }, sluice = { host = "127.0.0.1" } },
    host_userinfo = { nginx = served("GET /pub/x HTTP/1.1", "u@a"), sluice = refused(400) },
    host_bad_port = { nginx = served("GET /pub/x HTTP/1.1", "a:8o"), sluice = refused(400) },
    -- versions
    http12 = { nginx = served("GET /pub/x HTTP/1.1", "x"), sluice = refused(505) },
    http09_line = { nginx = served("GET /pub/x HTTP/1.1", "-", "", "none", "", "none"), sluice = refused(505) },
    -- paths
    encoded_slash = { nginx = served("GET /pub/a/b HTTP/1.1", "x"), sluice = refused(400) },
    encoded_sub_delim = { nginx = { line = "GET /pub/a*b;c HTTP/1.1" }, sluice = { line = "GET /pub/a%2Ab%3Bc HTTP/1.1" } },
    fragment = { nginx = served("GET /pub/a HTTP/1.1", "x"), sluice = refused(400) },
    asterisk_options = { nginx = { status = 400 }, sluice = { status = 404 } },
    -- absolute form
    absolute = { nginx = { host = "x" }, sluice = { host = "a.example:8080" } },
    absolute_https = { nginx = { host = "x" }, sluice = { host = "a.example" } },
    absolute_no_path = { nginx = { host = "x" }, sluice = { host = "a.example" } },
    absolute_ftp = { nginx = served("GET /pub/x HTTP/1.1", "x"), sluice = refused(400) },
    absolute_http10_no_host = { nginx = { host = "-" }, sluice = { host = "a.example" } },
    connect = { nginx = { status = 400 }, sluice = { status = 501 } },
}

local FIELDS = { "status", "forwarded", "line", "host", "headers", "framing", "body" }

-- The raw-byte-logging upstream: returns it with :take() giving the requests received since the last call.
local function raw_upstream()
    local dir = helpers.tmpdir()
    local u = { log = dir .. "/requests.jsonl", seen = 0 }
    u.proc = helpers.spawn(format("node %s %s %s >%s 2>&1", helpers.shell_quote(helpers.ROOT .. "/spec/support/raw_upstream.js"),
        helpers.shell_quote(u.log), helpers.shell_quote(dir .. "/port"), helpers.shell_quote(dir .. "/out.log")))
    u.port = helpers.wait_until(function()
        assert(u.proc:alive(), "raw upstream exited: " .. (helpers.read_file(dir .. "/out.log") or ""))
        return tonumber(helpers.read_file(dir .. "/port"))
    end, 10, "raw upstream did not start")
    function u.take()
        local out, i = {}, 0
        for line in (helpers.read_file(u.log) or ""):gmatch("[^\n]+") do
            i = i + 1
            if i > u.seen then
                local rec = assert(cjson.decode(line))
                rec.bytes = rec.raw:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
                out[#out + 1] = rec
            end
        end
        u.seen = i
        return out
    end
    return u
end

local function start_nginx(up_port)
    local dir = helpers.tmpdir()
    local port = helpers.free_port()
    for _, d in ipairs({ "body", "proxy", "fastcgi", "uwsgi", "scgi" }) do os.execute("mkdir -p " .. dir .. "/" .. d) end
    helpers.write_file(dir .. "/nginx.conf", ([[
worker_processes 1;
pid %s/nginx.pid;
error_log %s/error.log info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %s/body;
    proxy_temp_path %s/proxy;
    fastcgi_temp_path %s/fastcgi;
    uwsgi_temp_path %s/uwsgi;
    scgi_temp_path %s/scgi;
    server {
        listen 127.0.0.1:%d;
        location / {
            # with a URI part, nginx sends the path it normalised and routed on (the one Sluice sends)
            proxy_pass http://127.0.0.1:%d/;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
        }
    }
}
]]):format(dir, dir, dir, dir, dir, dir, dir, port, up_port))
    local proc = helpers.spawn(format("nginx -p %s -c %s -e %s -g 'daemon off;' >%s 2>&1", dir .. "/", dir .. "/nginx.conf",
        dir .. "/error.log", dir .. "/out.log"))
    local ok, err = helpers.wait_port(port, proc, 10)
    assert(ok, "nginx did not start (" .. tostring(err) .. "): " .. (helpers.read_file(dir .. "/out.log") or "") ..
        (helpers.read_file(dir .. "/error.log") or ""))
    return { port = port, proc = proc, dir = dir }
end

-- Sends one raw request; the status of the first response (or "none" when nothing HTTP came back in time).
local function exchange(port, bytes)
    local s = socket.tcp()
    s:settimeout(2)
    assert(s:connect("127.0.0.1", port))
    s:send(bytes)
    local buf, deadline = "", socket.gettime() + 3
    while socket.gettime() < deadline do
        s:settimeout(0.1)
        local data, err, partial = s:receive(65536)
        buf = buf .. (data or partial or "")
        local e = buf:find("\r\n\r\n", 1, true)
        if e then
            local len = tonumber(buf:sub(1, e):lower():match("\ncontent%-length:%s*(%d+)")) or 0
            if #buf >= e + 3 + len then break end
        end
        if err == "closed" or err == "connection reset by peer" then break end
    end
    s:close()
    return tonumber(buf:match("^HTTP/%d%.%d (%d%d%d)")) or "none"
end

local function dechunk(s)
    local out, pos = {}, 1
    while true do
        local eol = s:find("\r\n", pos, true)
        if not eol then return concat(out) .. "<unterminated>" end
        local size = tonumber(s:sub(pos, eol - 1):match("^%x+"), 16)
        if not size then return concat(out) .. "<bad chunk>" end
        if size == 0 then return concat(out) end
        out[#out + 1] = s:sub(eol + 2, eol + 1 + size)
        pos = eol + 4 + size
    end
end

-- What an upstream request means, field by field (hop-by-hop and proxy-added headers left out).
local function meaning(rec)
    local raw = rec.bytes
    local e = raw:find("\r\n\r\n", 1, true)
    if not e or rec.unframed then return { line = "<unframed> " .. format("%q", raw:sub(1, 200)) } end
    local head, rest = raw:sub(1, e - 1), raw:sub(e + 4)
    local m = { headers = {}, framing = "none" }
    for l in (head .. "\r\n"):gmatch("(.-)\r\n") do
        if not m.line then
            m.line = l
        else
            local name, value = l:match("^([^:]+):[ \t]*(.-)[ \t]*$")
            local n = lower(name or "")
            if n == "host" then
                m.host = value
            elseif n == "content-length" then
                m.framing = "length"
            elseif n == "transfer-encoding" then
                m.framing = "chunked:" .. value
            elseif n:sub(1, 2) == "x-" and not n:find("^x%-forwarded") and n ~= "x-real-ip" then
                m.headers[#m.headers + 1] = n .. ": " .. value
            end
        end
    end
    m.headers = concat(m.headers, " | ")
    m.body = m.framing:find("^chunked") and dechunk(rest) or rest
    return m
end

local function outcome(status, recs)
    local o = { status = status, forwarded = #recs }
    local m = recs[1] and meaning(recs[1]) or {}
    for _, f in ipairs(FIELDS) do
        if o[f] == nil then o[f] = m[f] == nil and "-" or m[f] end
    end
    return o
end

local function show(v)
    v = tostring(v)
    return #v > 80 and (format("%q", v:sub(1, 60)) .. "..(" .. #v .. " bytes)") or format("%q", v)
end

describe("HTTP request handling compared with nginx", function()
    local nginx, gw, up_nginx, up_sluice
    local results = {}

    setup(function()
        local code, out = helpers.exec("command -v nginx")
        assert(code == 0, "nginx is not installed (scripts/deps.sh installs nginx-light): this differential " ..
            "check cannot run without it. " .. out)
        up_nginx, up_sluice = raw_upstream(), raw_upstream()
        nginx = start_nginx(up_nginx.port)
        gw = helpers.start_gateway({
            routes = { { id = "all", paths = { "/*" }, upstream = { nodes = { "127.0.0.1:" .. up_sluice.port } } } } })
        for _, c in ipairs(CASES) do
            local name, bytes = c[1], c[2]
            local a = outcome(exchange(nginx.port, bytes), up_nginx.take())
            local b = outcome(exchange(gw.port, bytes), up_sluice.take())
            results[name] = { nginx = a, sluice = b }
            if os.getenv("SLUICE_DIFF_REPORT") then
                local diff = {}
                for _, f in ipairs(FIELDS) do
                    if a[f] ~= b[f] then diff[#diff + 1] = format("    %-9s nginx %s\n    %-9s sluice %s", f, show(a[f]), "", show(b[f])) end
                end
                print(format("%-28s %s", name, #diff == 0 and ("same: " .. show(a.status) .. " " .. show(a.line)) or "DIFFERENT"))
                if #diff > 0 then print(concat(diff, "\n")) end
            end
        end
    end)

    teardown(function()
        helpers.stop_all()
    end)

    for _, c in ipairs(CASES) do
        local name = c[1]
        it(name .. ": " .. (KNOWN[name] and "differs only as listed" or "same as nginx"), function()
            local r = assert(results[name], "case did not run")
            local known = KNOWN[name]
            local differs = false
            for _, f in ipairs(FIELDS) do
                local a, b = r.nginx[f], r.sluice[f]
                if known and (known.nginx[f] ~= nil or known.sluice[f] ~= nil) then
                    assert.equal(known.nginx[f], a, name .. ": nginx " .. f)
                    assert.equal(known.sluice[f], b, name .. ": sluice " .. f)
                    differs = differs or a ~= b
                else
                    assert.equal(a, b, format("%s: %s differs (nginx %s, sluice %s)", name, f, show(a), show(b)))
                end
            end
            if known then
                assert.is_true(differs, name .. " is listed as a difference but nginx and Sluice now agree: " ..
                    "update KNOWN and docs/http-compat.md")
            end
        end)
    end

    it("explains every listed difference in docs/http-compat.md", function()
        local doc = assert(helpers.read_file(helpers.ROOT .. "/docs/http-compat.md"), "docs/http-compat.md is missing")
        for name in pairs(KNOWN) do
            assert.is_truthy(doc:find("`" .. name .. "`", 1, true), "docs/http-compat.md does not explain " .. name)
        end
    end)
end)
