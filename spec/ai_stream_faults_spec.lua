-- AI streams from a provider that misbehaves (tests/mock/faulty_provider.js) through the real gateway, with raw
-- HTTP clients and curl: a stream without line ends, events over max_event_size, a clean close mid-event or
-- before the end, resets, stalls and garbage at every place of a stream, for OpenAI and Anthropic providers and
-- clients; the usage record of streams cut by the client or the upstream. (The official SDKs against the same
-- faults: tests/e2e/sdk_faults.sh.)
local helpers = require("helpers")
local cjson = require("cjson.safe")
local socket = require("socket")

local ROOT = helpers.ROOT
local format, concat = string.format, table.concat

-- A log-phase probe: appends the request's usage record as one JSON line to conf.file.
local PROBE = [[
local cjson = require("cjson.safe")
return { name = "ai-usage-probe", version = "1", priority = 1,
  log = function(conf, ctx)
    local f = io.open(conf.file, "a")
    f:write((cjson.encode(ctx.ai and ctx.ai.usage or { none = true }) or "{}") .. "\n")
    f:close()
  end }
]]

-- One request on its own connection, read until the gateway closes it (bounded): status, headers, body (chunked
-- framing removed, tolerating a cut), ended (the last chunk came).
local function post(port, path, body, timeout)
    local c = socket.tcp()
    c:settimeout(timeout or 10)
    assert(c:connect("127.0.0.1", port))
    body = type(body) == "table" and helpers.json(body) or body
    c:send("POST " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n" ..
        "anthropic-version: 2023-06-01\r\nContent-Length: " .. #body .. "\r\n\r\n" .. body)
    local data, _, partial = c:receive("*a")
    c:close()
    local raw = data or partial or ""
    local head, rest = raw:match("^(.-)\r\n\r\n(.*)$")
    assert(head, "no response head in " .. format("%q", raw:sub(1, 200)))
    local res = { status = tonumber(head:match("^HTTP/1%.1 (%d+)")), headers = {}, ended = false }
    for k, v in head:gmatch("\r\n([^:]+):%s*([^\r]*)") do res.headers[k:lower()] = v end
    if (res.headers["transfer-encoding"] or ""):find("chunked") then
        local parts, pos = {}, 1
        while true do
            local size_hex, after = rest:match("^(%x+)\r\n()", pos)
            if not size_hex then break end
            local size = tonumber(size_hex, 16)
            if size == 0 then res.ended = true break end
            parts[#parts + 1] = rest:sub(after, after + size - 1)
            pos = after + size + 2
        end
        res.body = concat(parts)
    else
        res.body = rest
        res.ended = true
    end
    if (res.headers["content-type"] or ""):find("json") then res.json = cjson.decode(res.body) end
    return res
end

local function sse_events(body)
    local out = {}
    for block in (body .. "\n\n"):gmatch("(.-)\n\n") do
        if block ~= "" then
            local ev = { event = block:match("^event: ([^\n]+)"), data = block:match("data: ([^\n]*)") }
            ev.json = ev.data and ev.data ~= "[DONE]" and cjson.decode(ev.data) or nil
            out[#out + 1] = ev
        end
    end
    return out
end

local FULL_TEXT = "w0 w1 w2 w3 w4 "

-- What the client of `api` made of a streamed answer: "complete" (the whole text, the terminal event last, no
-- error) or "error" (an HTTP error in the client's shape, or one error event last and no terminal event at all).
-- Anything else (a truncated answer that looks complete, a terminal event after an error, garbage) fails.
local function outcome(res, api)
    if res.status ~= 200 then
        assert.is_true(res.status >= 500, "status " .. res.status)
        assert.is_table(res.json, "an error body in JSON: " .. res.body)
        if api == "anthropic" then
            assert.equal("error", res.json.type)
        end
        assert.is_string(res.json.error.message)
        return "error"
    end
    assert.is_true(res.ended, "the response is framed to its end")
    local evs = sse_events(res.body)
    local text, errors, terminals, last = {}, 0, 0, evs[#evs]
    for _, e in ipairs(evs) do
        local j = e.json
        if api == "anthropic" then
            if e.event == "error" then errors = errors + 1
            elseif e.event == "message_stop" then terminals = terminals + 1
            elseif e.event == "content_block_delta" then text[#text + 1] = j.delta.text end
            assert.is_table(j, "every event is JSON: " .. tostring(e.data))
        else
            if e.data == "[DONE]" then terminals = terminals + 1
            else
                assert.is_table(j, "every event is JSON: " .. tostring(e.data))
                if j.error then errors = errors + 1
                elseif j.choices[1] and j.choices[1].delta.content then text[#text + 1] = j.choices[1].delta.content end
            end
        end
    end
    if errors > 0 then
        assert.equal(1, errors, res.body)
        assert.equal(0, terminals, "no terminal event with an error: " .. res.body)
        assert.is_true(last.event == "error" or (last.json and last.json.error ~= nil), "the error event is last")
        return "error"
    end
    assert.equal(1, terminals, "a stream without an error ends with its terminal event: " .. res.body)
    assert.is_true(last.data == "[DONE]" or last.event == "message_stop")
    assert.equal(FULL_TEXT, concat(text), "a complete stream has the whole text")
    return "complete"
end

describe("AI streams from a faulty provider (gateway + tests/mock/faulty_provider.js)", function()
    local gw, mock_port, usage_file

    local function mock_requests()
        return assert(helpers.http("GET", "http://127.0.0.1:" .. mock_port .. "/__requests")).json
    end
    local function usages()
        local out = {}
        for line in (helpers.read_file(usage_file) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
        return out
    end
    -- a request, then its usage record (the log phase runs after the response)
    local function call(path, body, timeout)
        helpers.write_file(usage_file, "")
        local res = post(gw.port, path, body, timeout)
        local u = helpers.wait_until(function() return usages()[1] end, 5, "no usage record")
        return res, u
    end
    local function chat(model, extra)
        local b = { model = model, stream = true, max_tokens = 50, messages = { { role = "user", content = "hi" } } }
        for k, v in pairs(extra or {}) do b[k] = v end
        return b
    end

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/ai-usage-probe.lua", PROBE)
        usage_file = dir .. "/usage.jsonl"
        mock_port = helpers.free_port()
        local mock = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/faulty_provider.js") .. " " ..
            mock_port .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        local up = "http://127.0.0.1:" .. mock_port
        local probe = { file = usage_file }
        local function route(id, provider, extra)
            local conf = { provider = provider }
            for k, v in pairs(extra or {}) do conf[k] = v end
            return { id = id, paths = { "/" .. id .. "/v1/*" },
                     plugins = { ["ai-proxy"] = conf, ["ai-usage-probe"] = probe } }
        end
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins", dir }, workers = 1 },
            providers = {
                -- the fault is in the model name (the mock reads it); read: the idle timeout of a stall
                oa = { kind = "openai", endpoint = up, api_key = "k", timeout = { read = 0.5 } },
                an = { kind = "anthropic", endpoint = up, api_key = "k", timeout = { read = 0.5 } },
            },
            routes = { route("oa", "oa"), route("an", "an"),
                       route("oasmall", "oa", { max_event_size = 4096 }), route("ansmall", "an", { max_event_size = 4096 }) },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- every pair of provider kind and client API: (route, client path, client api)
    local PAIRS = {
        { "oa", "/chat/completions", "openai" }, { "oa", "/messages", "anthropic" },
        { "an", "/chat/completions", "openai" }, { "an", "/messages", "anthropic" },
    }

    describe("bounds", function()
        it("10 MB without a line end: an error in the client's shape, the upstream connection closed", function()
            for _, pr in ipairs(PAIRS) do
                local what = pr[1] .. pr[2]
                local res, u = call("/" .. pr[1] .. "/v1" .. pr[2], chat("f/nolf/10"), 30)
                assert.equal("error", outcome(res, pr[3]), what)
                assert.is_true(#res.body < 1024, what .. ": the garbage is not forwarded")
                assert.matches("larger than 1048576 bytes", res.json.error.message, 1, true)
                assert.is_nil(res.body:find("[DONE]", 1, true), what)
                assert.equal(502, u.status, what)
                assert.equal("upstream", u.cut, what)
                local rec = mock_requests()
                assert.is_true(rec[#rec].aborted, what .. ": the gateway stopped reading and closed the connection")
            end
        end)

        it("max_event_size: an event over it ends the stream with an error event; under it passes", function()
            for _, pr in ipairs(PAIRS) do
                local what = pr[1] .. pr[2]
                -- 8 KiB event after the first one: over the 4 KiB bound of the *small routes
                local res, u = call("/" .. pr[1] .. "small/v1" .. pr[2], chat("f/bigevent/x/8"))
                assert.equal("error", outcome(res, pr[3]), what)
                assert.matches("larger than 4096 bytes", res.body, 1, true)
                assert.equal(502, u.status, what)
                -- the same through the default bound (1 MiB): whole, 8 KiB of text included
                res, u = call("/" .. pr[1] .. "/v1" .. pr[2], chat("f/bigevent/x/8"))
                assert.equal(200, res.status, what)
                assert.is_nil(res.body:find('"error"', 1, true), what)
                assert.truthy(res.body:find(string.rep("x", 8192), 1, true), what)
                assert.equal(200, u.status, what)
                assert.is_nil(u.cut, what)
            end
        end)

        it("max_event_size is checked by the plugin schema", function()
            local unit = require("unit_helpers")
            local plugin = unit.load_plugin("ai-proxy")
            assert.truthy(unit.validate(plugin, { provider = "p", max_event_size = 65536 }))
            assert.is_nil(unit.validate(plugin, { provider = "p", max_event_size = 0 }))
            assert.is_nil(unit.validate(plugin, { provider = "p", max_event_size = "lots" }))
            -- sizes as people write them (schema type `size`)
            assert.equal(1048576, unit.validate(plugin, { provider = "p", max_event_size = "1m" }).max_event_size)
        end)
    end)

    describe("a stream that ends early", function()
        it("a clean close in the middle of an event: one error event, no [DONE] / message_stop", function()
            for _, pr in ipairs(PAIRS) do
                local what = pr[1] .. pr[2]
                local res, u = call("/" .. pr[1] .. "/v1" .. pr[2], chat("f/partial/x"))
                assert.equal(200, res.status, what)
                assert.equal("error", outcome(res, pr[3]), what)
                assert.is_nil(res.body:find('chatcmpl-1', 1, true), what .. ": half an event is not forwarded")
                assert.equal(502, u.status, what)
                assert.equal("upstream", u.cut, what)
                assert.is_string(u.error)
            end
        end)

        it("without the provider's terminal event: cut, unless an OpenAI finish reason came", function()
            for _, pr in ipairs(PAIRS) do
                local what = pr[1] .. pr[2]
                -- Anthropic without message_stop: cut, whatever came before
                -- OpenAI without [DONE] after its finish reason and usage: the answer is whole (some servers omit it)
                local res, u = call("/" .. pr[1] .. "/v1" .. pr[2], chat("f/close/before_end"))
                local want = pr[1] == "an" and "error" or "complete"
                assert.equal(want, outcome(res, pr[3]), what)
                assert.equal(want == "error" and 502 or 200, u.status, what)
                -- OpenAI without finish reason nor [DONE]: cut
                res, u = call("/" .. pr[1] .. "/v1" .. pr[2], chat("f/close/mid_stream"))
                assert.equal("error", outcome(res, pr[3]), what)
                assert.equal(502, u.status, what)
            end
        end)
    end)

    describe("every fault at every place", function()
        local FAULTS = { "reset", "close", "stall", "garbage" }
        local PLACES = { "head", "first", "mid_first", "mid_stream", "mid_event", "before_end" }
        for _, fault in ipairs(FAULTS) do
            it(fault .. ": the client gets a whole answer or an error, never a cut answer that looks whole", function()
                for _, place in ipairs(PLACES) do
                    for _, pr in ipairs(PAIRS) do
                        local what = fault .. "/" .. place .. " " .. pr[1] .. pr[2]
                        local res, u = call("/" .. pr[1] .. "/v1" .. pr[2], chat("f/" .. fault .. "/" .. place))
                        local got = outcome(res, pr[3])
                        if got == "complete" then
                            assert.equal(200, u.status, what)
                            assert.is_nil(u.cut, what)
                        else
                            assert.equal(fault == "stall" and 504 or 502, u.status, what)
                            -- cut: a stream that began (the provider answered 2xx) and did not end
                            assert.equal(place ~= "head" and "upstream" or nil, u.cut, what)
                        end
                        -- before anything reached the client, the error is an HTTP status the SDKs retry on
                        if place == "head" or place == "first" or place == "mid_first" then
                            assert.equal(got == "error" and (fault == "stall" and 504 or 502) or 200, res.status, what)
                        end
                        -- a fault in the middle always shows
                        if place == "mid_stream" or place == "mid_event" then
                            assert.equal("error", got, what)
                        end
                    end
                end
            end)
        end
    end)

    describe("a fault in the same read as the events before it (the whole answer in one write)", function()
        -- the provider writes its whole stream, fault included, at once: what the gateway decoded of that read
        -- before the fault never reached the client, so the client's answer is an error, and it is the usage
        -- record's status (a translated stream's encoder may have finished its message meanwhile: that is not
        -- an answer the client got)
        for _, fault in ipairs({ "garbage", "close" }) do
            it(fault, function()
                for _, place in ipairs({ "first", "mid_first", "mid_stream", "mid_event", "before_end" }) do
                    for _, pr in ipairs(PAIRS) do
                        local what = fault .. "/" .. place .. "/one " .. pr[1] .. pr[2]
                        local res, u = call("/" .. pr[1] .. "/v1" .. pr[2], chat("f/" .. fault .. "/" .. place .. "/one"))
                        local got = outcome(res, pr[3])
                        if got == "complete" then
                            assert.equal(200, u.status, what)
                        else
                            assert.equal(502, u.status, what)
                            if res.status ~= 200 then
                                assert.equal(res.status, u.status, what)
                            end
                        end
                    end
                end
            end)
        end
    end)

    describe("usage of a cut stream", function()
        it("a client that gives up (curl -m 1): status 499, cut client, counted as far as it got, upstream cancelled", function()
            helpers.write_file(usage_file, "")
            local body = helpers.json(chat("f/none/end/n100/g50"))
            local _, out = helpers.exec("curl -s -N -m 1 -H 'content-type: application/json' --data-binary " ..
                helpers.shell_quote(body) .. " http://127.0.0.1:" .. gw.port .. "/oa/v1/chat/completions", 10)
            assert.truthy(out:find("w3 ", 1, true), "some of the stream reached curl")
            local u = helpers.wait_until(function() return usages()[1] end, 8, "no usage record")
            assert.equal(499, u.status)
            assert.equal("client", u.cut)
            assert.is_true(u.estimated)
            assert.is_true(u.completion_tokens > 0 and u.completion_tokens < 200,
                "counted what was sent, not the whole answer: " .. u.completion_tokens)
            assert.is_true(u.prompt_tokens > 0)
            local rec = mock_requests()
            assert.is_true(rec[#rec].aborted, "the upstream call is cancelled")
        end)

        it("a client that resets: the same, for a translated stream", function()
            helpers.write_file(usage_file, "")
            local c = socket.tcp()
            c:settimeout(5)
            assert(c:connect("127.0.0.1", gw.port))
            local body = helpers.json(chat("f/none/end/n100/g50"))
            c:send("POST /an/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" ..
                "Content-Length: " .. #body .. "\r\n\r\n" .. body)
            local got = ""
            while not got:find("w5 ", 1, true) do
                local data, err, partial = c:receive(64)
                got = got .. (data or partial or "")
                assert(not err or err == "timeout", err)
            end
            c:setoption("linger", { on = true, timeout = 0 })
            c:close() -- RST
            local u = helpers.wait_until(function() return usages()[1] end, 8, "no usage record")
            assert.equal(499, u.status)
            assert.equal("client", u.cut)
            assert.is_true(u.completion_tokens > 0 and u.completion_tokens < 200, tostring(u.completion_tokens))
            local rec = mock_requests()
            assert.is_true(rec[#rec].aborted, "the upstream call is cancelled")
        end)

        it("an upstream reset after 98 of 100 events: 502, cut upstream, the delivered text counted", function()
            for _, pr in ipairs(PAIRS) do
                local what = pr[1] .. pr[2]
                local res, u = call("/" .. pr[1] .. "/v1" .. pr[2], chat("f/reset/at98/n100"))
                assert.equal("error", outcome(res, pr[3]), what)
                assert.equal(502, u.status, what)
                assert.equal("upstream", u.cut, what)
                assert.is_true(u.estimated, what)
                -- about 96 words of "wNN " were sent (2-3 tokens each): far from 0, below the 200 of the whole
                assert.is_true(u.completion_tokens > 100 and u.completion_tokens < 400, what .. " " .. u.completion_tokens)
                assert.is_true(u.prompt_tokens > 0, what)
            end
        end)

        it("the provider's usage counts once the events before it reached the client", function()
            local _, u = call("/oa/v1/chat/completions", chat("f/reset/before_end"))
            assert.equal("upstream", u.cut)
            assert.is_false(u.estimated)
            assert.same({ 11, 10 }, { u.prompt_tokens, u.completion_tokens })
        end)
    end)
end)
