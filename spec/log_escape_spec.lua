-- What a client (or an upstream) sends cannot forge error log lines nor drive the terminal that reads them:
-- the error log writer (core/common/log.c) escapes every byte that is not printable UTF-8 as \xNN, for C and
-- Lua callers alike; text that is several lines on purpose (config error lists) is written one line per entry;
-- the access log stays one valid JSON object per line. Driven with a raw TLS ClientHello carrying a crafted
-- SNI, raw request targets and headers, and a config reload.
local helpers = require("helpers")
local socket = require("socket")
local cjson = require("cjson.safe")
local bit = require("bit")

local char, rep, format = string.char, string.rep, string.format

local FORGED = "\n2099-01-01T00:00:00.000Z [error] forged line\27[31mred\27[0m"

-- A plugin that logs what the client sent: a header and a field of the JSON body.
local NOTE = [[
local sluice = require("sluice")
return { name = "log-note", version = "1.0", priority = 100, schema = { type = "object" },
    access = function(conf, ctx)
        local body = sluice.request.get_json(ctx) or {}
        sluice.log.warn("note header: ", sluice.request.get_header("x-note", ctx), " body: ", tostring(body.note))
        return 200, { ok = true }
    end }
]]

local function u16(n)
    return char(bit.band(bit.rshift(n, 8), 255), bit.band(n, 255))
end

local function u24(n)
    return char(bit.band(bit.rshift(n, 16), 255)) .. u16(n)
end

-- A TLS 1.2 ClientHello for name, offering only TLS_NULL_WITH_NULL_NULL: the server reads the SNI, finds no
-- cipher suite in common and fails the handshake (which it logs, with the SNI).
local function client_hello(name)
    local sni = u16(#name + 3) .. "\0" .. u16(#name) .. name
    local ext = u16(0) .. u16(#sni) .. sni
    local body = "\3\3" .. rep("\1", 32) .. "\0" .. u16(2) .. "\0\0" .. "\1\0" .. u16(#ext) .. ext
    local hs = "\1" .. u24(#body) .. body
    return "\22\3\1" .. u16(#hs) .. hs
end

local function send_raw(port, bytes)
    local s = socket.tcp()
    s:settimeout(3)
    assert(s:connect("127.0.0.1", port))
    s:send(bytes)
    local _, _, partial = s:receive("*a")
    s:close()
    return partial
end

-- Every line of the error log starts with a timestamp and a level, and no raw control byte is left.
local function assert_honest(log)
    for line in log:gmatch("[^\n]+") do
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ %[%a+%] ", line)
        assert.is_nil(line:find("^2099"), "forged line: " .. line)
    end
    assert.is_nil(log:find("[%z\1-\9\11-\31\127]"), "a raw control byte in the log")
    assert.is_nil(log:find("\194[\128-\159]"), "a raw C1 control in the log")
end

describe("logs and hostile input", function()
    local dir, gw, tls_port

    setup(function()
        dir = helpers.tmpdir()
        local code, out = helpers.exec("sh " .. helpers.shell_quote(helpers.ROOT .. "/spec/support/certs.sh") .. " " ..
            helpers.shell_quote(dir) .. " a.test", 30)
        assert(code == 0, out)
        helpers.write_file(dir .. "/log-note.lua", NOTE)
        tls_port = helpers.free_port()
        local gdir = helpers.tmpdir()
        gw = helpers.start_gateway({
            node = { plugin_paths = { helpers.ROOT .. "/plugins", dir }, log_level = "info",
                     listen = { "127.0.0.1:" .. helpers.free_port(),
                                { addr = "127.0.0.1:" .. tls_port,
                                  tls = { cert = dir .. "/a.test.crt", key = dir .. "/a.test.key" } } },
                     access_log = { path = gdir .. "/access.log", fields = { "method", "path", "status", "user_agent" } } },
            routes = { { id = "note", paths = { "/note/*" }, plugins = { ["log-note"] = {} } } },
        }, { dir = gdir })
        assert(helpers.wait_port(tls_port, gw.proc, 5))
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("escapes a crafted TLS SNI in the handshake failure line", function()
        send_raw(tls_port, client_hello("evil" .. FORGED))
        local log = helpers.wait_until(function()
            local l = gw:log()
            return l:find("TLS handshake failed", 1, true) and l
        end, 5, "no handshake failure logged")
        assert.matches("(SNI evil\\x0a2099-01-01T00:00:00.000Z [error] forged line\\x1b[31mred", log, 1, true)
        assert_honest(log)
    end)

    it("escapes a crafted request target in the bad-request line", function()
        send_raw(gw.port, "GET /note/../../\194\155" .. "31m\255x HTTP/1.1\r\nHost: x\r\n\r\n")
        local log = helpers.wait_until(function()
            local l = gw:log()
            return l:find("bad request target", 1, true) and l
        end, 5, "no bad request target logged")
        assert.matches("(path climbs above the root): /note/../../\\xc2\\x9b31m\\xffx", log, 1, true)
        -- its access log line has the raw target, escaped
        helpers.wait_until(function()
            return gw:access_log():find('"path":"/note/../../\\u009b31m\\\\xffx","status":400', 1, true)
        end, 5, "no access log line with the refused target")
        assert.is_nil(log:find("\255", 1, true))
        assert_honest(log)
    end)

    it("escapes a header and a body field a plugin logs (the Lua log path)", function()
        local body = cjson.encode({ note = "b" .. FORGED })
        local res = helpers.raw(gw.port, "POST /note/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
            "X-Note: h\t\194\155[2J\255h\r\nContent-Type: application/json\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
        assert.matches("^HTTP/1.1 200", res)
        local log = helpers.wait_until(function()
            local l = gw:log()
            return l:find("note header:", 1, true) and l
        end, 5, "the plugin's line is not in the log")
        assert.matches("note header: h\\x09\\xc2\\x9b[2J\\xffh body: b\\x0a2099-01-01T00:00:00.000Z [error] forged line" ..
            "\\x1b[31mred\\x1b[0m", log, 1, true)
        assert_honest(log)
    end)

    it("keeps each access log line one JSON object, control and non-UTF-8 bytes escaped", function()
        local res = helpers.raw(gw.port, "GET /note/\255\194\155\195\169 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
            "User-Agent: ua\t\255[31m\194\133\r\n\r\n")
        assert.matches("^HTTP/1.1 200", res)
        local entry = helpers.wait_until(function()
            for line in gw:access_log():gmatch("[^\n]+") do
                local j = cjson.decode(line)
                assert(j, "not JSON: " .. line)
                if j.user_agent and j.user_agent:find("^ua") then return { j = j, line = line } end
            end
        end, 5, "no access log line")
        assert.equal("/note/\\xff\194\155\195\169", entry.j.path) -- C1 as \u009b, é as it is
        assert.equal("ua\t\\xff[31m\194\133", entry.j.user_agent)
        assert.matches('"path":"/note/\\\\xff\\u009b\195\169"', entry.line, 1, true)
        assert.matches('"user_agent":"ua\\u0009\\\\xff[31m\\u0085"', entry.line, 1, true)
        assert.is_nil(entry.line:find("[%z\1-\31\127\255]"))
    end)

    it("escapes a byte at every offset of a long value (the access log copies plain ASCII 8 bytes at a time)", function()
        -- each byte to escape (or keep) at offsets 0..17 of a value longer than one 8-byte word, so that it
        -- falls in every lane of a word, in the first and second word, and in the tail after the last word
        local cases = { { '"', '\\"' }, { "\\", "\\\\" }, { "\t", "\\u0009" }, { "\255", "\\\\xff" },
                        { "\194\133", "\\u0085" }, { "\195\169", "\195\169" }, { "~", "~" } }
        local want = {}
        for ci, c in ipairs(cases) do
            for pos = 0, 17 do
                local tag = format("w%02d%02d", ci, pos)
                local ua = tag .. rep("a", pos) .. c[1] .. rep("b", 21 - pos)
                local res = helpers.raw(gw.port, "GET /note/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
                    "User-Agent: " .. ua .. "\r\n\r\n")
                assert.matches("^HTTP/1.1 200", res)
                want[tag] = '"user_agent":"' .. tag .. rep("a", pos) .. c[2] .. rep("b", 21 - pos) .. '"'
            end
        end
        helpers.wait_until(function()
            local n = 0
            for line in gw:access_log():gmatch("[^\n]+") do
                local tag = line:match('"user_agent":"(w%d%d%d%d)')
                if tag then
                    assert(cjson.decode(line), "not JSON: " .. line)
                    assert.matches(want[tag], line, 1, true)
                    n = n + 1
                end
            end
            return n == #cases * 18
        end, 10, "not every access log line was written")
    end)

    it("logs a request refused before its head was complete (user_agent in the fields: once a crash)", function()
        local res = helpers.raw(gw.port, "GET /note/x HTTP/1.1\r\nHost: x\r\nUser-Agent: big\r\nX-Big: " ..
            rep("b", 20000) .. "\r\n\r\n")
        assert.matches("^HTTP/1.%d 431", res)
        helpers.sleep(0.2)
        assert.is_true(gw.proc:alive(), "the gateway died")
        helpers.wait_until(function()
            return gw:access_log():find('"status":431,"user_agent":""', 1, true)
        end, 5, "no access log line for the 431")
    end)

    it("writes a rejected config's errors one log line each", function()
        local cfg = helpers.read_file(gw.file)
        helpers.write_file(gw.file, cfg:gsub('"routes":%[', '"upstreams":{"u":{"nodes":[]}},"routes":[{"id":"bad"},', 1))
        gw:reload()
        local log = helpers.wait_until(function()
            local l = gw:log()
            return l:find("config rejected", 1, true) and l
        end, 5, "the reload was not rejected")
        local after = log:sub((log:find("config rejected", 1, true)))
        local n = 0
        for line in after:gmatch("[^\n]+") do
            if line:match("^%S+ %[error%]   ") then n = n + 1 end
        end
        assert.is_true(n >= 2, "expected an error per line:\n" .. after)
        assert_honest(log)
        helpers.write_file(gw.file, cfg)
    end)
end)
