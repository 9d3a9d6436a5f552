-- The lean path's scan (core/common/chat_scan.c through sluice.ai.validate.chat_scan) against the slow path it
-- stands for: whenever the scan takes a body, decoding it with cjson and checking it with validate.request must
-- pass too, the values it read must be the decoded ones, and the driver's lean request must be the request
-- build_request makes from the decoded table (same bytes upstream). Bodies: hand-written edge cases plus
-- random mutations of valid requests (fixed seed), most of which the scan must refuse.
local cjson = require("cjson.safe")
local validate = require("sluice.ai.validate")

local DRIVERS = { openai = require("sluice.ai.drivers.openai"),
                  ["openai-compatible"] = require("sluice.ai.drivers.openai-compatible") }
local PROVIDER = { ["openai"] = { kind = "openai", endpoint = "http://up:1", api_key = "k" },
                   ["openai-compatible"] = { kind = "openai-compatible", endpoint = "http://up:1/v1",
                                             api_key = "k" } }

local BASES = {
    '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},'
        .. '{"role":"user","content":"Say hello."}],"max_tokens":32,"temperature":0}',
    '{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}',
    '{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}',
    '{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"t"},{"type":"image_url",'
        .. '"image_url":{"url":"http://x/y.png"}}]},{"role":"assistant","content":null,"tool_calls":[{"id":"c1",'
        .. '"type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"c1",'
        .. '"content":"42"}],"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],'
        .. '"tool_choice":"auto","stop":["a","b"],"n":1,"seed":7,"user":"caf\\u00e9"}',
    ' {\n "model" : "m" ,"messages":[{"role":"developer","content":[]}],"response_format":{"type":"text"}} \n',
}

-- fragments spliced into a body: values of every type for the fields the checks look at, and bytes that break it
local PIECES = { '"stream":true,', '"stream":false,', '"stream":null,', '"stream_options":{"include_usage":true},',
    '"stream_options":{},', '"stream_options":{"include_usage":false},', '"top_k":3,', '"thinking":{"type":"x"},',
    '"max_tokens":1.0,', '"max_tokens":-3,', '"max_tokens":"3",', '"n":1e1,', '"temperature":null,',
    '"n":2,', '"n":null,', '"n":"2",', '"temperature":0.7,', '"temperature":1.5e0,', '"temperature":-0,',
    '"temperature":[],', '"stop":"s",', '"stop":["a","b","c","d","e"],', '"stop":[1],', '"response_format":[],',
    '"model":"dup",', '"model":null,', '"tools":null,', '"tools":[{"type":"function"}],', '"tool_choice":{},',
    '"x":{"a":1,"a":2},', '"mod\\u0065l":"z",', '"messages":[],', '"messages":[{"role":"tool","content":"x"}],',
    '"messages":[{"role":"assistant"}],', '"messages":[{"role":"user","content":"x","is_error":true}],',
    '"e":"\\ud800",', '"f":"\255",', '"g":1e999,', '"h":[[[[[[[[]]]]]]]],', ',', '{', '}', '"', ':', '1,', 'null,' }

-- the request build_request makes from the decoded table (the slow path's bytes)
local function slow_body(kind, raw, t)
    local d = DRIVERS[kind]
    local req = assert(d.build_request(PROVIDER[kind], "chat", t,
        { stream = t.stream == true, include_usage = true, raw = raw }))
    return req.body, req
end

local function check(raw)
    for kind, d in pairs(DRIVERS) do
        local deny, max_stop = d.lean_deny(PROVIDER[kind])
        assert.is_string(deny)
        local model, stream, include_usage, stop_n, end_off, n, temperature = validate.chat_scan(raw, deny)
        if model and not (max_stop and stop_n > max_stop) then
            local t = cjson.decode(raw)
            assert.is_table(t, raw)
            local ok, err = validate.request("openai", "chat", t, raw)
            assert.is_true(ok, tostring(err) .. " in " .. raw)
            assert.equal(t.model, model, raw)
            assert.equal(t.stream == true, stream, raw)
            assert.equal(type(t.stream_options) == "table" and t.stream_options.include_usage == true, include_usage)
            assert.equal(type(t.stop) == "table" and #t.stop or -1, stop_n, raw)
            -- what sluice.ai.get_sampling answers from the scan (ai-cache's bypass): the decoded numbers
            assert.equal(type(t.n) == "number" and t.n or nil, n, raw)
            assert.equal(type(t.temperature) == "number" and t.temperature or nil, temperature, raw)
            local lean, lean_body = d.lean_request(PROVIDER[kind], raw, stream, include_usage, end_off)
            assert.is_table(lean)
            local body, req = slow_body(kind, raw, t)
            assert.equal(body, lean_body, raw)
            for _, k in ipairs({ "method", "scheme", "host", "port", "path", "stream" }) do
                assert.equal(req[k], lean[k], k)
            end
            assert.same(req.headers, lean.headers)
            assert.is_true(lean.fixed_headers)
        end
    end
end

describe("chat_scan (lean path) against decode + validate.request + build_request", function()
    it("takes the plain requests the slow path sends as they are", function()
        for _, raw in ipairs(BASES) do
            local deny = DRIVERS.openai.lean_deny(PROVIDER.openai)
            assert.is_string(validate.chat_scan(raw, deny), raw)
            check(raw)
        end
    end)

    it("never takes what the slow path refuses or changes (random mutations, fixed seed)", function()
        math.randomseed(12345)
        local taken, n = 0, 0
        for _ = 1, 3000 do
            local raw = BASES[math.random(#BASES)]
            for _ = 1, math.random(3) do
                local r = math.random(3)
                if r == 1 then -- a piece after the opening brace
                    local at = raw:find("{", 1, true)
                    raw = raw:sub(1, at) .. PIECES[math.random(#PIECES)] .. raw:sub(at + 1)
                elseif r == 2 then -- a byte cut out
                    local at = math.random(#raw)
                    raw = raw:sub(1, at - 1) .. raw:sub(at + 1)
                else -- a byte replaced
                    local at = math.random(#raw)
                    raw = raw:sub(1, at - 1) .. string.char(math.random(0, 255)) .. raw:sub(at + 1)
                end
            end
            n = n + 1
            if validate.chat_scan(raw, "thinking top_k") then taken = taken + 1 end
            check(raw)
        end
        assert.is_true(taken > 50 and taken < n, taken .. " of " .. n)
    end)
end)
