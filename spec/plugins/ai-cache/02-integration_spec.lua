-- ai-cache through the real gateway against tests/mock/providers.js (strict OpenAI and Anthropic providers) and the
-- local mock provider: misses and hits (streamed or not, across client formats), what is never stored, Cache-Control,
-- temperature, tenants, coalescing, purges, compression, and hits seen by header_filter and log like any answer.
-- Upstream calls are counted from the mock's /__requests. Every wait is bounded.
local helpers = require("helpers")
local cjson = require("cjson.safe")
local socket = require("socket")

local ROOT = helpers.ROOT

-- header_filter marks every answer, log writes the usage record: hits must pass both
local PROBE = [[
local cjson = require("cjson.safe")
local sluice = require("sluice")
return { name = "cache-probe", version = "1", priority = 1,
  header_filter = function(conf, ctx) sluice.response.set_header("x-probe", "seen", ctx) end,
  log = function(conf, ctx)
    local f = io.open(conf.file, "a")
    f:write((cjson.encode(ctx.ai and ctx.ai.usage or { none = true }) or "{}") .. "\n")
    f:close()
  end }
]]

local function sse_events(body)
    local out = {}
    for block in (body or ""):gmatch("(.-)\n\n") do
        local ev = { event = block:match("^event: ([^\n]+)"), data = block:match("data: ([^\n]*)") }
        out[#out + 1] = ev
    end
    return out
end

-- text and usage of an OpenAI stream
local function openai_stream(body)
    local text, usage, done = {}, nil, false
    for _, ev in ipairs(sse_events(body)) do
        if ev.data == "[DONE]" then
            done = true
        else
            local t = assert(cjson.decode(ev.data))
            local c = t.choices and t.choices[1]
            if c and c.delta and type(c.delta.content) == "string" then text[#text + 1] = c.delta.content end
            if type(t.usage) == "table" then usage = t.usage end
        end
    end
    return table.concat(text), usage, done
end

local function anthropic_stream(body)
    local text, names, usage = {}, {}, nil
    for _, ev in ipairs(sse_events(body)) do
        names[#names + 1] = ev.event
        local t = cjson.decode(ev.data)
        if ev.event == "content_block_delta" and t.delta.type == "text_delta" then text[#text + 1] = t.delta.text end
        if ev.event == "message_delta" then usage = t.usage end
    end
    return table.concat(text), usage, names
end

describe("ai-cache (gateway + mock providers)", function()
    local gw, mock, slow, usage_file, audit_file

    local function upstream_calls(m, text)
        local n = 0
        for _, r in ipairs(assert(helpers.http("GET", m .. "/__requests")).json) do
            local msgs = type(r.body) == "table" and r.body.messages
            local last = type(msgs) == "table" and msgs[#msgs]
            local c = last and last.content
            if type(c) == "table" then c = c[1] and c[1].text end
            if c == text then n = n + 1 end
        end
        return n
    end
    local function usages()
        local out = {}
        for line in (helpers.read_file(usage_file) or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
        return out
    end
    local function last_usage(n)
        return helpers.wait_until(function()
            local u = usages()
            return #u >= (n or 1) and u[#u]
        end, 5, "no usage record")
    end
    local function chat(route, text, extra, headers)
        local body = { model = "gpt-4o-mini", temperature = 0, max_tokens = 64,
                       messages = { { role = "system", content = "Be brief." }, { role = "user", content = text } } }
        for k, v in pairs(extra or {}) do body[k] = v end
        helpers.write_file(usage_file, "")
        return assert(helpers.http("POST", gw.url("/" .. route .. "/v1/chat/completions"),
            { body = body, headers = headers, timeout = 15 }))
    end
    local function messages(route, text, extra, model)
        local body = { model = model or "gpt-4o-mini", temperature = 0, max_tokens = 64, system = "Be brief.",
                       messages = { { role = "user", content = { { type = "text", text = text } } } } }
        for k, v in pairs(extra or {}) do body[k] = v end
        helpers.write_file(usage_file, "")
        return assert(helpers.http("POST", gw.url("/" .. route .. "/v1/messages"),
            { body = body, headers = { ["anthropic-version"] = "2023-06-01" }, timeout = 15 }))
    end

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/cache-probe.lua", PROBE)
        usage_file = dir .. "/usage.jsonl"
        audit_file = dir .. "/audit.jsonl"
        local function start_mock(name)
            local port = helpers.free_port()
            local p = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. port
                .. " >" .. helpers.shell_quote(dir .. "/" .. name .. ".log") .. " 2>&1")
            assert(helpers.wait_port(port, p, 10))
            return "http://127.0.0.1:" .. port
        end
        mock, slow = start_mock("mock"), start_mock("slow")
        assert.equal(200, helpers.http("POST", slow .. "/__config", { body = { latency_ms = 400 } }).status)
        local oa_models = { ["gpt-4o-mini"] = "gpt-4o-mini-2024-07-18" }
        local function oa(endpoint) return { kind = "openai", endpoint = endpoint, api_key = "k", models = oa_models,
                                             price = { ["gpt-4o-mini"] = { input = 1.5, output = 6 } } } end
        local function route(id, provider, cache, extra)
            local plugins = { ["ai-proxy"] = { provider = provider }, ["ai-cache"] = cache or { scope = "global" } }
            for k, v in pairs(extra or {}) do plugins[k] = v end
            return { id = id, paths = { "/" .. id .. "/v1/*" }, plugins = plugins }
        end
        local long = string.rep("All work and no play makes a long answer. ", 300) -- ~12 KB
        gw = helpers.start_gateway({
            node = { workers = 2, plugin_paths = { ROOT .. "/plugins", dir },
                     shared_dicts = { sluice = "1m", ["ai-cache"] = "8m" } },
            providers = {
                oa = oa(mock), fail = oa(mock .. "/s/midfail-event/v1"), slowsse = oa(mock .. "/s/slow/v1"), err = oa(mock .. "/s/500/v1"), slow = oa(slow),
                an = { kind = "anthropic", endpoint = mock, api_key = "k", models = { ["gpt-4o-mini"] = "claude-3-5-haiku-20241022" } },
                long = { kind = "mock", models = { ["gpt-4o-mini"] = "mock-long" }, options = { text = long } },
            },
            consumers = { { name = "alice", keys = { "alice-key" }, groups = { "team" } },
                          { name = "bob", keys = { "bob-key" }, groups = { "team" } },
                          { name = "carol", keys = { "carol-key" } } },
            consumer_groups = { team = {} },
            global_plugins = { ["cache-probe"] = { file = usage_file }, prometheus = {},
                               ["ai-audit-log"] = { file = { path = audit_file } } },
            routes = {
                route("oa", "oa"), route("an", "an"), route("slowsse", "slowsse"), route("fail", "fail"), route("err", "err"),
                route("slow", "slow", { scope = "global", coalesce_timeout = 10 }),
                route("warm", "oa", { scope = "global", max_temperature = 1 }),
                route("tools", "oa", { scope = "global", cache_tool_calls = true }),
                route("auth", "oa", { scope = "consumer" }, { ["key-auth"] = { anonymous = true } }),
                route("grp", "oa", { scope = "consumer_group" }, { ["key-auth"] = {} }),
                route("long", "long", { scope = "global", compress_min = 1024 }),
                route("small", "long", { scope = "global", max_entry_size = 2048 }),
                route("shared1", "oa", { scope = "global", namespace = "shared" }),
                { id = "multi", paths = { "/multi/v1/*" },
                  plugins = { ["ai-proxy-multi"] = { targets = { { provider = "oa" } } },
                              ["ai-cache"] = { scope = "global" } } },
                route("shared2", "oa", { scope = "global", namespace = "shared" }),
                route("plainns", "oa", { scope = "global", namespace = "deco" }),
                route("deco", "oa", { scope = "global", namespace = "deco" },
                      { ["ai-prompt-decorator"] = { prepend = { { role = "system", content = "Answer in English." } } } }),
            },
        })
    end)

    teardown(helpers.stop_all)

    it("answers a repeated request from the cache, with the same text and usage, and records what it saved", function()
        local a = chat("oa", "plain repeat")
        assert.equal(200, a.status, a.body)
        assert.equal("MISS", a.headers["x-sluice-cache"])
        assert.matches("^%x+$", a.headers["x-sluice-cache-key"])
        local miss = last_usage()
        assert.equal("MISS", miss.cache)
        assert.equal(17, miss.prompt_tokens)
        local b = chat("oa", "plain repeat")
        assert.equal(200, b.status)
        assert.equal("HIT", b.headers["x-sluice-cache"])
        assert.equal("seen", b.headers["x-probe"]) -- header_filter ran on the hit
        assert.equal(a.headers["x-sluice-cache-key"], b.headers["x-sluice-cache-key"])
        assert.equal(a.body, b.body)
        assert.equal(1, upstream_calls(mock, "plain repeat"))
        local u = last_usage()
        assert.same({ "HIT", "l1", "exact", 200, 0, 0, 0 }, { u.cache, u.cache_layer, u.cache_match, u.status,
            u.prompt_tokens, u.completion_tokens, u.cost })
        assert.same({ 17, 5, 22 }, { u.saved_prompt_tokens, u.saved_completion_tokens, u.saved_total_tokens })
        assert.near((17 * 1.5 + 5 * 6) / 1e6, u.saved_cost, 1e-12)
        -- the access log's ai object says it too
        local line = helpers.wait_until(function()
            for l in gw:access_log():gmatch("[^\n]+") do
                local t = cjson.decode(l)
                if t and t.ai and t.ai.cache == "HIT" and t.path == "/oa/v1/chat/completions" then return t end
            end
        end, 5, "no HIT in the access log")
        assert.equal(22, line.ai.saved_tokens)
        assert.near((17 * 1.5 + 5 * 6) / 1e6, line.ai.saved_cost, 1e-12)
        -- the audit log's record too
        local audit = helpers.wait_until(function()
            for l in (helpers.read_file(audit_file) or ""):gmatch("[^\n]+") do
                local t = cjson.decode(l)
                if t and t.cache == "HIT" and t.route == "oa" then return t end
            end
        end, 5, "no HIT in the audit log")
        assert.equal(22, audit.saved_tokens)
        assert.near((17 * 1.5 + 5 * 6) / 1e6, audit.saved_cost, 1e-9)
        -- and the metrics (summed into the shared dict once a second)
        local text = helpers.wait_until(function()
            local res = helpers.http("GET", gw.admin_url("/metrics"),
                { headers = { authorization = "Bearer " .. gw.admin_key } })
            return res and res.body and res.body:find('sluice_ai_cache_saved_tokens_total{route="oa"}', 1, true)
                and res.body
        end, 5, "no saved tokens in /metrics")
        assert.matches('sluice_ai_cache_total{route="oa",result="hit"} 1\n', text, 1, true)
        assert.matches('sluice_ai_cache_total{route="oa",result="miss"} 1\n', text, 1, true)
        assert.matches('sluice_ai_cache_saved_tokens_total{route="oa"} 22\n', text, 1, true)
        local usd = tonumber(text:match('sluice_ai_cache_saved_cost_usd_total{route="oa"} (%S+)'))
        assert.near((17 * 1.5 + 5 * 6) / 1e6, usd, 1e-9)
        -- and this node's counters for the route add it up (GET /admin/cache)
        local st = helpers.wait_until(function()
            local r = gw:admin("GET", "/admin/cache")
            for _, e in ipairs(r.json and r.json.routes or {}) do
                if e.route == "oa" and e.stats and e.stats.hits >= 1 then return e.stats end
            end
        end, 5, "no hit counted in GET /admin/cache")
        assert.same({ 1, 1, 0, 0, 17, 5 }, { st.hits, st.misses, st.bypasses, st.refreshes, st.saved_prompt_tokens,
            st.saved_completion_tokens })
        assert.near((17 * 1.5 + 5 * 6) / 1e6, st.saved_cost, 1e-12)
        assert.equal("BYPASS", chat("oa", "plain repeat", nil, { ["cache-control"] = "no-store" })
            .headers["x-sluice-cache"])
        assert.equal("REFRESH", chat("oa", "plain repeat", nil, { ["cache-control"] = "no-cache" })
            .headers["x-sluice-cache"])
        st = helpers.wait_until(function()
            local r = gw:admin("GET", "/admin/cache")
            for _, e in ipairs(r.json and r.json.routes or {}) do
                if e.route == "oa" and e.stats and e.stats.refreshes >= 1 then return e.stats end
            end
        end, 5, "no refresh counted in GET /admin/cache")
        assert.same({ 1, 1, 1, 1 }, { st.hits, st.misses, st.bypasses, st.refreshes })
    end)

    it("keys a body by what it asks, whatever its bytes, and keys a request a plugin changed by what is sent", function()
        local function raw(route, bytes)
            return assert(helpers.http("POST", gw.url("/" .. route .. "/v1/chat/completions"), { body = bytes,
                headers = { ["content-type"] = "application/json" }, timeout = 15 }))
        end
        local x = '{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"bytes or meaning"}]}'
        local a = raw("oa", x)
        assert.equal("MISS", a.headers["x-sluice-cache"])
        local k = a.headers["x-sluice-cache-key"]
        local b = raw("oa", x) -- the same bytes: the key memoised for them
        assert.same({ "HIT", k }, { b.headers["x-sluice-cache"], b.headers["x-sluice-cache-key"] })
        local y = '{ "messages": [ {"content": "bytes or meaning", "role": "user"} ], "temperature": 0.0,\n'
            .. ' "model": "gpt-4o-mini" }' -- other bytes, the same request
        local c = raw("oa", y)
        assert.same({ "HIT", k }, { c.headers["x-sluice-cache"], c.headers["x-sluice-cache-key"] })
        assert.equal(a.body, c.body)
        assert.equal(1, upstream_calls(mock, "bytes or meaning"))
        -- one namespace, two routes; the decorator changes the request: the same bytes are another request there
        local p = raw("plainns", x)
        assert.equal("MISS", p.headers["x-sluice-cache"])
        assert.equal("HIT", raw("plainns", x).headers["x-sluice-cache"])
        local d = raw("deco", x)
        assert.equal("MISS", d.headers["x-sluice-cache"])
        assert.not_equal(p.headers["x-sluice-cache-key"], d.headers["x-sluice-cache-key"])
        local d2 = raw("deco", x)
        assert.same({ "HIT", d.headers["x-sluice-cache-key"] }, { d2.headers["x-sluice-cache"],
            d2.headers["x-sluice-cache-key"] })
        assert.equal(p.headers["x-sluice-cache-key"], raw("plainns", x).headers["x-sluice-cache-key"])
    end)

    it("stores a streamed miss once complete and replays it in both formats, usage chunk when asked", function()
        local a = chat("oa", "stream me", { stream = true, stream_options = { include_usage = true } })
        assert.equal("MISS", a.headers["x-sluice-cache"])
        local text, usage, done = openai_stream(a.body)
        assert.equal("Hello from the mock.", text)
        assert.truthy(done)
        local b = chat("oa", "stream me", { stream = true, stream_options = { include_usage = true } })
        assert.equal("HIT", b.headers["x-sluice-cache"])
        assert.equal("text/event-stream", b.headers["content-type"])
        local text2, usage2, done2 = openai_stream(b.body)
        assert.same({ text, usage.prompt_tokens, usage.completion_tokens, true },
            { text2, usage2.prompt_tokens, usage2.completion_tokens, done2 })
        -- without include_usage: no usage chunk
        local c = chat("oa", "stream me", { stream = true })
        assert.equal("HIT", c.headers["x-sluice-cache"])
        local _, u3 = openai_stream(c.body)
        assert.is_nil(u3)
        -- not streamed, and to an Anthropic client, streamed and not
        local d = chat("oa", "stream me")
        assert.equal("HIT", d.headers["x-sluice-cache"])
        assert.equal("Hello from the mock.", d.json.choices[1].message.content)
        local e = messages("oa", "stream me", { stream = true })
        assert.equal("HIT", e.headers["x-sluice-cache"])
        local atext, ausage, names = anthropic_stream(e.body)
        assert.equal("Hello from the mock.", atext)
        assert.equal("message_start", names[1])
        assert.equal("message_stop", names[#names])
        assert.equal(5, ausage.output_tokens)
        local f = messages("oa", "stream me")
        assert.equal("HIT", f.headers["x-sluice-cache"])
        assert.equal("message", f.json.type)
        assert.equal("Hello from the mock.", f.json.content[1].text)
        assert.equal(1, upstream_calls(mock, "stream me"))
    end)

    -- The mock's slow scenario waits 150 ms after each event, [DONE] included, before it ends its response: a client
    -- that closes as soon as it has [DONE] (as SDKs do) leaves before the provider's stream ends.
    it("stores a stream whose client closed once it had [DONE], never one closed before", function()
        local function stream_until(text, marker)
            local b = assert(cjson.encode({ model = "gpt-4o-mini", temperature = 0, max_tokens = 64, stream = true,
                messages = { { role = "system", content = "Be brief." }, { role = "user", content = text } } }))
            helpers.write_file(usage_file, "")
            local c = socket.tcp()
            c:settimeout(5)
            assert(c:connect("127.0.0.1", gw.port))
            c:send("POST /slowsse/v1/chat/completions HTTP/1.1\r\nHost: spec\r\nContent-Type: application/json\r\n"
                .. "Content-Length: " .. #b .. "\r\n\r\n" .. b)
            local got = {}
            for _ = 1, 20000 do
                local ch = c:receive(1)
                if not ch then break end
                got[#got + 1] = ch
                if ch == "\n" and table.concat(got):find(marker, 1, true) then break end
            end
            c:close()
            assert.truthy(table.concat(got):find(marker, 1, true))
            return helpers.wait_until(function() -- its record (a late one of an earlier test may come first)
                for _, r in ipairs(usages()) do
                    if r.cut == "client" then return r end
                end
            end, 5, "no usage record of the closed stream")
        end
        local u = stream_until("closed after done", "data: [DONE]")
        assert.same({ "client", "MISS" }, { u.cut, u.cache })
        local hit = chat("slowsse", "closed after done", { stream = true })
        assert.equal("HIT", hit.headers["x-sluice-cache"])
        local text, _, done = openai_stream(hit.body)
        assert.same({ "Hello from the mock.", true }, { text, done })
        -- closed after the first words: not a whole answer, never stored
        u = stream_until("closed early", '"content":"Hello"')
        assert.same({ "client", "MISS" }, { u.cut, u.cache })
        assert.equal("MISS", chat("slowsse", "closed early", { stream = true }).headers["x-sluice-cache"])
    end)

    it("shares an entry between an Anthropic client (Anthropic provider) and an OpenAI client", function()
        local a = messages("an", "cross format")
        assert.equal(200, a.status, a.body)
        assert.equal("MISS", a.headers["x-sluice-cache"])
        local b = chat("an", "cross format")
        assert.equal("HIT", b.headers["x-sluice-cache"])
        assert.equal(a.json.content[1].text, b.json.choices[1].message.content)
        assert.equal(7, b.json.usage.completion_tokens)
        local c = chat("an", "cross format", { stream = true, stream_options = { include_usage = true } })
        local text, usage = openai_stream(c.body)
        assert.equal(a.json.content[1].text, text)
        assert.equal(7, usage.completion_tokens)
        -- an Anthropic stream miss is stored too
        local d = messages("an", "anthropic stream", { stream = true })
        assert.equal("MISS", d.headers["x-sluice-cache"])
        local e = chat("an", "anthropic stream")
        assert.equal("HIT", e.headers["x-sluice-cache"])
        assert.equal(anthropic_stream(d.body), e.json.choices[1].message.content)
        assert.equal(1, upstream_calls(mock, "cross format"))
        assert.equal(1, upstream_calls(mock, "anthropic stream"))
    end)

    it("caches the answers of ai-proxy-multi routes too", function()
        local a = chat("multi", "multi repeat")
        assert.equal(200, a.status, a.body)
        assert.equal("MISS", a.headers["x-sluice-cache"])
        local b = chat("multi", "multi repeat")
        assert.equal("HIT", b.headers["x-sluice-cache"])
        assert.equal(a.body, b.body)
        assert.equal(1, upstream_calls(mock, "multi repeat"))
        local u = last_usage()
        assert.same({ "HIT", 22 }, { u.cache, u.saved_total_tokens })
    end)

    it("follows Cache-Control: no-cache refreshes, no-store neither looks up nor stores", function()
        assert.equal("MISS", chat("oa", "control").headers["x-sluice-cache"])
        local r = chat("oa", "control", nil, { ["cache-control"] = "no-cache" })
        assert.equal("REFRESH", r.headers["x-sluice-cache"])
        assert.equal(2, upstream_calls(mock, "control"))
        assert.equal("HIT", chat("oa", "control").headers["x-sluice-cache"])
        local s = chat("oa", "store nothing", nil, { ["cache-control"] = "no-store" })
        assert.equal("BYPASS", s.headers["x-sluice-cache"])
        assert.is_nil(s.headers["x-sluice-cache-key"])
        assert.equal("MISS", chat("oa", "store nothing").headers["x-sluice-cache"])
        assert.equal("BYPASS", chat("oa", "control", nil, { ["cache-control"] = "no-store" }).headers["x-sluice-cache"])
    end)

    it("bypasses requests above max_temperature (and without one: the providers' default 1)", function()
        assert.equal("BYPASS", chat("oa", "warm", { temperature = 0.7 }).headers["x-sluice-cache"])
        assert.equal("BYPASS", chat("oa", "warm", { temperature = 0.7 }).headers["x-sluice-cache"])
        assert.equal("BYPASS", last_usage().cache)
        assert.equal(2, upstream_calls(mock, "warm"))
        local r = assert(helpers.http("POST", gw.url("/oa/v1/chat/completions"), { body = { model = "gpt-4o-mini",
            messages = { { role = "user", content = "no temperature" } } } }))
        assert.equal("BYPASS", r.headers["x-sluice-cache"])
        assert.equal("MISS", chat("warm", "warm route", { temperature = 0.7 }).headers["x-sluice-cache"])
        assert.equal("HIT", chat("warm", "warm route", { temperature = 0.7 }).headers["x-sluice-cache"])
        -- several choices are never cached, whatever the temperature (read by the lean scan, undecoded)
        assert.equal("BYPASS", chat("warm", "warm route", { temperature = 0.7, n = 2 }).headers["x-sluice-cache"])
        assert.equal("BYPASS", last_usage().cache)
        -- n = 1 is a cacheable request of its own (n is part of the key)
        assert.equal("MISS", chat("warm", "warm route", { temperature = 0.7, n = 1 }).headers["x-sluice-cache"])
        assert.equal("HIT", chat("warm", "warm route", { temperature = 0.7, n = 1 }).headers["x-sluice-cache"])
        assert.equal("MISS", chat("warm", "warm route", { temperature = 0.8 }).headers["x-sluice-cache"])
    end)

    it("never stores errors, errored streams or tool calls (unless the route says so)", function()
        local e = chat("err", "errors")
        assert.equal(500, e.status, e.body)
        assert.equal("MISS", chat("err", "errors").headers["x-sluice-cache"])
        assert.equal(2, upstream_calls(mock, "errors"))
        local f = chat("fail", "broken stream", { stream = true })
        assert.equal(200, f.status)
        assert.is_nil(f.body:find("[DONE]", 1, true))
        assert.equal("MISS", chat("fail", "broken stream", { stream = true }).headers["x-sluice-cache"])
        assert.equal("MISS", chat("fail", "broken stream").headers["x-sluice-cache"])
        local tools = { { type = "function", ["function"] = { name = "get_weather", parameters = { type = "object",
            properties = { location = { type = "string" } } } } } }
        local t = chat("oa", "call a tool", { tools = tools })
        assert.equal("tool_calls", t.json.choices[1].finish_reason)
        assert.equal("MISS", chat("oa", "call a tool", { tools = tools }).headers["x-sluice-cache"])
        assert.equal("MISS", chat("tools", "call a tool", { tools = tools }).headers["x-sluice-cache"])
        local hit = chat("tools", "call a tool", { tools = tools, stream = true })
        assert.equal("HIT", hit.headers["x-sluice-cache"])
        assert.truthy(hit.body:find('"get_weather"', 1, true))
    end)

    it("keeps tenants apart: a consumer-scoped entry is never served to another consumer", function()
        local function as(who, route, text)
            return chat(route or "auth", text or "tenant question", nil,
                who and { authorization = "Bearer " .. who .. "-key" } or nil)
        end
        assert.equal("MISS", as("alice").headers["x-sluice-cache"])
        assert.equal("HIT", as("alice").headers["x-sluice-cache"])
        assert.equal("MISS", as("bob").headers["x-sluice-cache"])
        assert.equal("MISS", as(nil).headers["x-sluice-cache"]) -- anonymous: its own partition
        assert.equal("HIT", as(nil).headers["x-sluice-cache"])
        assert.equal("HIT", as("bob").headers["x-sluice-cache"])
        assert.equal(3, upstream_calls(mock, "tenant question"))
        -- consumer_group: alice and bob (team) share, carol (no group) is alone
        assert.equal("MISS", as("alice", "grp", "group question").headers["x-sluice-cache"])
        assert.equal("HIT", as("bob", "grp", "group question").headers["x-sluice-cache"])
        assert.equal("MISS", as("carol", "grp", "group question").headers["x-sluice-cache"])
    end)

    it("makes one upstream call for 50 concurrent identical requests", function()
        local dir = helpers.tmpdir()
        local body = helpers.json({ model = "gpt-4o-mini", temperature = 0,
                                    messages = { { role = "user", content = "stampede" } } })
        helpers.write_file(dir .. "/body.json", body)
        local cmd = ("seq 50 | xargs -P 50 -I{} curl -s -m 20 -o %s/out.{} -D %s/head.{} -H 'content-type: application/json' "
            .. "--data-binary @%s/body.json %s"):format(dir, dir, dir, gw.url("/slow/v1/chat/completions"))
        local rc, out = helpers.exec(cmd, 60)
        assert.equal(0, rc, out)
        local statuses = {}
        for i = 1, 50 do
            local head = helpers.read_file(dir .. "/head." .. i) or ""
            assert.matches("HTTP/1.1 200", head, 1, true)
            local st = head:match("x%-sluice%-cache: (%u+)")
            statuses[st] = (statuses[st] or 0) + 1
            local t = cjson.decode(helpers.read_file(dir .. "/out." .. i))
            assert.equal("Hello from the mock.", t.choices[1].message.content)
        end
        assert.equal(1, upstream_calls(slow, "stampede"))
        assert.same({ MISS = 1, HIT = 49 }, statuses)
    end)

    it("purges everything, a route's namespace, or one key (Admin API)", function()
        assert.equal("MISS", chat("oa", "purge me").headers["x-sluice-cache"])
        assert.equal("HIT", chat("oa", "purge me").headers["x-sluice-cache"])
        local res = gw:admin("DELETE", "/admin/cache")
        assert.equal(200, res.status, res.body)
        assert.equal("MISS", chat("oa", "purge me").headers["x-sluice-cache"])
        assert.equal("HIT", chat("oa", "purge me").headers["x-sluice-cache"])
        -- a namespace shared by two routes: purging one route's purges both; other routes keep theirs
        assert.equal("MISS", chat("shared1", "shared ns").headers["x-sluice-cache"])
        assert.equal("HIT", chat("shared2", "shared ns").headers["x-sluice-cache"])
        assert.equal(200, gw:admin("DELETE", "/admin/cache/routes/shared2").status)
        assert.equal("MISS", chat("shared1", "shared ns").headers["x-sluice-cache"])
        assert.equal("HIT", chat("oa", "purge me").headers["x-sluice-cache"])
        -- one key
        local key = chat("oa", "purge me").headers["x-sluice-cache-key"]
        assert.equal("MISS", chat("oa", "purge key too").headers["x-sluice-cache"])
        assert.equal(200, gw:admin("DELETE", "/admin/cache/keys/" .. key).status)
        assert.equal("MISS", chat("oa", "purge me").headers["x-sluice-cache"])
        assert.equal("HIT", chat("oa", "purge key too").headers["x-sluice-cache"])
        -- what is not a purge
        assert.equal(400, gw:admin("DELETE", "/admin/cache/keys/xyz").status)
        assert.equal(404, gw:admin("DELETE", "/admin/cache/routes/nope").status)
        assert.equal(405, gw:admin("PUT", "/admin/cache", {}).status)
        local st = gw:admin("GET", "/admin/cache")
        assert.equal(200, st.status)
        assert.equal("ai-cache", st.json.shared_dicts[1].name)
        assert.equal(401, helpers.http("DELETE", gw.admin_url("/admin/cache")).status)
    end)

    it("compresses large answers and serves them whole; answers over max_entry_size are not kept", function()
        local a = chat("long", "long one")
        assert.equal("MISS", a.headers["x-sluice-cache"])
        local b = chat("long", "long one")
        assert.equal("HIT", b.headers["x-sluice-cache"])
        assert.equal(a.json.choices[1].message.content, b.json.choices[1].message.content)
        assert.truthy(#b.json.choices[1].message.content > 10000)
        local s = chat("long", "long one", { stream = true })
        assert.equal(a.json.choices[1].message.content, (openai_stream(s.body)))
        assert.equal("MISS", chat("small", "too big").headers["x-sluice-cache"])
        assert.equal("MISS", chat("small", "too big").headers["x-sluice-cache"])
    end)
end)
