-- The AI route's lean path (an OpenAI chat request to an OpenAI-wire provider, checked in C by
-- core/common/chat_scan.c and not decoded) answers exactly as the decoding path: same status and body for every
-- request, valid or not, same bytes upstream. The decoding path is forced on a twin route by a plugin that reads
-- the JSON before ai-proxy. After the lean path, the request table is still there for whoever asks: decoded
-- then, the same table through sluice.request.get_json and sluice.ai.get_request, and a change to it is what
-- goes upstream. Through the real gateway against tests/mock/providers.js (which records the raw body it got).
local helpers = require("helpers")

local ROOT = helpers.ROOT

-- before ai-proxy (priority 1040): reads the body as JSON, so ai-proxy finds it decoded (the slow path)
local PEEK_BEFORE = [[
local sluice = require("sluice")
return { name = "peek-before", version = "1", priority = 2000,
  access = function() sluice.request.peek_json() end }
]]

-- after ai-proxy: reads (peek) or edits (get) the request, and says what it saw in response headers
local AFTER = [[
local sluice = require("sluice")
return { name = "after", version = "1", priority = 1000,
  schema = { type = "object", properties = { edit = { type = "boolean" } } },
  access = function(conf, ctx)
    local t = conf.edit and sluice.request.get_json() or sluice.request.peek_json()
    ctx.seen = { n = t and #t.messages, same = conf.edit and t == sluice.ai.get_request() }
    if conf.edit then t.temperature = 0.25 end
  end,
  header_filter = function(conf, ctx)
    local s = ctx.seen
    if s then
      sluice.response.set_header("x-messages", tostring(s.n))
      sluice.response.set_header("x-same", tostring(s.same))
    end
  end }
]]

-- on every route: the usage record as the log phase will see it (filled before the answer's head goes out)
local USAGE = [[
local sluice = require("sluice")
local FIELDS = { "consumer", "route", "provider", "provider_kind", "api", "op", "stream", "requested_model", "model",
  "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens", "cost", "estimated",
  "status", "retries", "fallbacks", "cache", "error", "cut" }
return { name = "usage-echo", version = "1", priority = 10,
  header_filter = function()
    local u = sluice.ai.get_usage()
    if not u then return end
    local out = {}
    for i, k in ipairs(FIELDS) do out[i] = k .. "=" .. tostring(u[k]) end
    sluice.response.set_header("x-usage", table.concat(out, ";"))
  end }
]]

describe("ai-proxy lean path", function()
    local gw, mock_port

    local function last_upstream()
        local r = assert(helpers.http("GET", "http://127.0.0.1:" .. mock_port .. "/__requests")).json
        return r[#r], #r
    end
    local function post(path, raw)
        return assert(helpers.http("POST", gw.url(path), { body = raw, timeout = 10,
                                                        headers = { ["content-type"] = "application/json" } }))
    end

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/peek-before.lua", PEEK_BEFORE)
        helpers.write_file(dir .. "/after.lua", AFTER)
        helpers.write_file(dir .. "/usage-echo.lua", USAGE)
        mock_port = helpers.free_port()
        local mock = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " ..
            mock_port .. " --lax >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mock_port, mock, 10))
        local up = "http://127.0.0.1:" .. mock_port
        local function route(id, provider, more)
            local plugins = { ["ai-proxy"] = { provider = provider }, ["usage-echo"] = {} }
            for k, v in pairs(more or {}) do plugins[k] = v end
            return { id = id, paths = { "/" .. id .. "/v1/*" }, plugins = plugins }
        end
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins", dir }, workers = 1 },
            providers = {
                oa = { kind = "openai", endpoint = up, api_key = "k" },
                compat = { kind = "openai-compatible", endpoint = up .. "/v1", api_key = "k" },
                mapped = { kind = "openai", endpoint = up, api_key = "k", models = { small = "gpt-4o-mini" } },
            },
            routes = {
                route("lean", "oa"), route("slow", "oa", { ["peek-before"] = {} }),
                route("clean", "compat"), route("cslow", "compat", { ["peek-before"] = {} }),
                route("mlean", "mapped"), route("mslow", "mapped", { ["peek-before"] = {} }),
                route("reader", "oa", { after = {} }), route("editor", "oa", { after = { edit = true } }),
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local M = '"messages":[{"role":"user","content":"hi"}]'
    local BODIES = {
        -- taken by the lean path
        '{"model":"gpt-4o-mini",' .. M .. '}',
        '{"model":"gpt-4o-mini","stream":true,' .. M .. '}',
        '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},' .. M .. '}',
        '{"model":"small",' .. M .. ',"stop":["a","b","c","d"],"top_k":null}',
        '{"model":"gpt-4o-mini","messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":'
            .. '"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c",'
            .. '"content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"auto"}',
        -- valid, but for the decoding path: changed by the driver, or not plain
        '{"model":"gpt-4o-mini","stream":false,' .. M .. '}',
        '{"model":"gpt-4o-mini",' .. M .. ',"top_k":3}',
        '{"model":"gpt-4o-mini",' .. M .. ',"stop":["a","b","c","d","e"]}',
        '{"model":"gpt-4o-mini",' .. M .. ',"stream_options":{"include_usage":true}}',
        '{"model":"gpt-4o-mini",' .. M .. ',"x":1,"x":2}',
        '{"model":"gpt-4o-mini","messages":[{"role":"assistant","content":"a","reasoning_content":"r"},'
            .. '{"role":"user","content":[{"type":"text","text":"t","cache_control":{"type":"ephemeral"}}]}]}',
        '{"model":"unknown-model",' .. M .. '}',
        '{' .. M .. '}',
        -- refused
        '', '{}', '[]', 'null', '{"model":"gpt-4o-mini"}', '{"model":"gpt-4o-mini","messages":[]}',
        '{"model":"gpt-4o-mini","messages":{}}', '{"model":"gpt-4o-mini",' .. M .. ',}',
        '{"model":"gpt-4o-mini","messages":[{"role":"bot","content":"x"}]}',
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":{}}]}',
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":[{"type":"text"}]}]}',
        '{"model":"gpt-4o-mini","messages":[{"role":"tool","content":"x"}]}',
        '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"caf\233"}]}',
        '{"model":"gpt-4o-mini",' .. M .. ',"max_tokens":1.5}',
        '{"model":"gpt-4o-mini",' .. M .. ',"temperature":"hot"}',
        '{"model":"gpt-4o-mini",' .. M .. ',"stop":[1]}',
        '{"model":"gpt-4o-mini",' .. M .. ',"tools":[{"type":"function"}]}',
        '{"model":"gpt-4o-mini",' .. M .. ',"stream":"yes"}',
        '{"model":7,' .. M .. '}',
        '{"model":"gpt-4o-mini",' .. M .. '} trailing',
        '{"model":"gpt-4o-mini","messages":[' .. string.rep("[", 2000) .. string.rep("]", 2000) .. ']}',
    }

    it("answers every request as the decoding path does, and sends the same bytes upstream", function()
        for _, pair in ipairs({ { "lean", "slow" }, { "clean", "cslow" }, { "mlean", "mslow" } }) do
            for _, raw in ipairs(BODIES) do
                local _, n0 = last_upstream()
                local a = post("/" .. pair[1] .. "/v1/chat/completions", raw)
                local ua, na = last_upstream()
                local b = post("/" .. pair[2] .. "/v1/chat/completions", raw)
                local ub, nb = last_upstream()
                local what = pair[1] .. ": " .. raw:sub(1, 200)
                assert.equal(b.status, a.status, what)
                assert.equal(b.headers["content-type"], a.headers["content-type"], what)
                if a.status == 200 then
                    assert.matches("prompt_tokens=%d+", a.headers["x-usage"], what)
                end
                -- the usage record (the access log's ai object) says the same, route id aside
                assert.equal((tostring(b.headers["x-usage"]):gsub("route=%w+", "")),
                    (tostring(a.headers["x-usage"]):gsub("route=%w+", "")), what)
                -- the mock's answers differ in their ids and times only
                local function same_answer(x)
                    return (x:gsub('"id":"[^"]*"', ""):gsub('"created":%d+', ""))
                end
                assert.equal(same_answer(b.body), same_answer(a.body), what)
                assert.equal(na - n0, nb - na, what) -- both reached the upstream, or neither
                if na > n0 then
                    assert.equal(ub.raw, ua.raw, what)
                end
            end
        end
    end)

    it("a plugin reading the request after ai-proxy gets it, and the client's bytes still go", function()
        local raw = '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"s"},{"role":"user",'
            .. '"content":"hi"}],  "temperature":0.50}'
        local res = post("/reader/v1/chat/completions", raw)
        assert.equal(200, res.status, res.body)
        assert.equal("2", res.headers["x-messages"])
        assert.equal(raw, (last_upstream()).raw)
    end)

    it("a plugin editing it after ai-proxy: one table for get_json and get_request, its change goes up", function()
        local raw = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"temperature":0.50}'
        local res = post("/editor/v1/chat/completions", raw)
        assert.equal(200, res.status, res.body)
        assert.equal("1", res.headers["x-messages"])
        assert.equal("true", res.headers["x-same"])
        local up = last_upstream()
        assert.equal(0.25, up.body.temperature)
        assert.equal("gpt-4o-mini", up.body.model)
    end)
end)
