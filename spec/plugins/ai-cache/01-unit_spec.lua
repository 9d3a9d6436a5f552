-- ai-cache, unit: the key (what shares an entry and what does not), the stored form captured from each client
-- format and replayed into each (round trips), compression, the semantic cache's vector index. Plain LuaJIT with
-- the real FFI core.
local unit = require("unit_helpers")
package.path = unit.ROOT .. "/plugins/?.lua;" .. unit.ROOT .. "/plugins/?/init.lua;" .. package.path
local cjson = require("cjson.safe")
local keys = require("sluice.cache.key")
local capture = require("sluice.cache.capture")
local replay = require("sluice.cache.replay")
local anthropic_api = require("sluice.ai.anthropic_api")
local zip = require("sluice.zip")
local semantic = require("sluice.cache.semantic")

local function key(req, model, ignore)
    return keys.of("p", req, model or "m", ignore)
end

describe("ai-cache key", function()
    local base = { model = "gpt", messages = { { role = "system", content = "Be brief." },
                                               { role = "user", content = "Say hello" } },
                   max_tokens = 50, temperature = 0 }

    it("is 64 hex digits and the same for the same request, whatever the order of its fields", function()
        local k = key(base)
        assert.matches("^%x+$", k)
        assert.equal(64, #k)
        local again = cjson.decode('{"temperature":0,"max_tokens":50,"messages":[{"content":"Be brief.","role":"system"},'
            .. '{"role":"user","content":"Say hello"}],"model":"other-name"}')
        assert.equal(k, key(again))
    end)

    it("is SHA-256 of the prefix, the model and the canonical form, the same as earlier versions made", function()
        -- pinned: nodes of two versions share L2 entries, so the key of a request must not change
        local req = { model = "gpt", messages = { { role = "system", content = "Be brief." },
                      { role = "user", content = { { type = "text", text = "Say" }, { type = "text", text = "hello" } } } },
                      max_tokens = 50, temperature = 0.25, stop = "x", logit_bias = { ["7"] = -1 } }
        assert.equal("27519f42478d90a76bb54d8b3893013056a48cb5f083af9d2b42fa54c623b2d7", key(req))
        local crypto = require("sluice.crypto") -- mbedTLS's SHA-256, against core/common/sha256.c
        assert.equal(crypto.sha256_hex("p\0" .. "1:m\0" .. keys.serialize(req)), key(req))
        -- a request larger than the serialisation buffer keeps between keys, then a small one again
        local big = unit.deep_copy(req)
        big.messages[2].content = string.rep("0123456789abcdef", 20000)
        local kb = key(big)
        assert.equal(crypto.sha256_hex("p\0" .. "1:m\0" .. keys.serialize(big)), kb)
        assert.equal(kb, key(unit.deep_copy(big)))
        assert.equal("27519f42478d90a76bb54d8b3893013056a48cb5f083af9d2b42fa54c623b2d7", key(req))
    end)

    it("is shared by an OpenAI and an Anthropic client asking the same thing", function()
        local a = anthropic_api.to_openai({ model = "claude", system = "Be brief.", max_tokens = 50, temperature = 0,
            messages = { { role = "user", content = { { type = "text", text = "Say hello",
                                                         cache_control = { type = "ephemeral" } } } } } })
        assert.equal(key(base), key(a))
        local o = cjson.decode('{"model":"x","max_completion_tokens":50,"temperature":0,"stream":true,'
            .. '"stream_options":{"include_usage":true},"user":"u1","messages":[{"role":"system","content":"Be brief."},'
            .. '{"role":"user","content":[{"type":"text","text":"Say hello"}]}],"top_p":null}')
        assert.equal(key(base), key(o))
    end)

    it("differs for anything that changes the answer", function()
        local k = key(base)
        local function with(f, v)
            local r = unit.deep_copy(base)
            r[f] = v
            return key(r)
        end
        assert.not_equal(k, key(base, "other-model"))
        assert.not_equal(k, keys.of("q", base, "m"))
        assert.not_equal(k, with("temperature", 0.5))
        assert.not_equal(k, with("max_tokens", 51))
        assert.not_equal(k, with("seed", 1))
        assert.not_equal(k, with("top_p", 0.9))
        assert.not_equal(k, with("response_format", { type = "json_object" }))
        assert.not_equal(k, with("tools", { { type = "function", ["function"] = { name = "f" } } }))
        local r = unit.deep_copy(base)
        r.messages[2].content = "Say hello!"
        assert.not_equal(k, key(r))
        r = unit.deep_copy(base)
        r.messages[1].role = "user"
        assert.not_equal(k, key(r))
        -- strings are length-prefixed: moving a boundary changes the key
        assert.not_equal(key({ messages = { { role = "user", content = "ab" } }, stop = { "c" } }),
            key({ messages = { { role = "user", content = "a" } }, stop = { "bc" } }))
        assert.not_equal(key({ a = "1" }), key({ a = 1 }))
    end)

    it("leaves out ignored fields", function()
        local r = unit.deep_copy(base)
        r.seed = 42
        assert.not_equal(key(base), key(r))
        assert.equal(key(base, nil, { seed = true }), key(r, nil, { seed = true }))
    end)
end)

-- the canonical answer, as the mock and the drivers make it
local COMPLETION = {
    id = "chatcmpl-1", object = "chat.completion", created = 1700000000, model = "gpt-x",
    choices = { { index = 0, message = { role = "assistant", content = "Héllo wörld, twice: \"hi\"\n" },
                  finish_reason = "stop", logprobs = cjson.null } },
    usage = { prompt_tokens = 11, completion_tokens = 7, total_tokens = 18 },
}

describe("ai-cache capture and replay", function()
    local rec = { prompt_tokens = 3, completion_tokens = 4 }

    local function text_of(value)
        local t = cjson.decode(value)
        return t.choices[1].message.content, t.usage
    end

    it("keeps an OpenAI body byte for byte", function()
        local body = cjson.encode(COMPLETION)
        assert.equal(body, capture.entry("openai", false, body, rec))
        local spaced = '{"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, '
            .. '"finish_reason": "stop"}],\n "usage" :\n {"prompt_tokens": 1, "completion_tokens": 1}}'
        assert.equal(spaced, capture.entry("openai", false, spaced, rec))
    end)

    it("adds the record's usage to an OpenAI body without one (a usage text in the answer does not count)", function()
        local body = '{"choices":[{"index":0,"message":{"role":"assistant","content":"say \\"usage\\": {x}"},'
            .. '"finish_reason":"stop"}]}'
        local content, u = text_of(assert(capture.entry("openai", false, body, rec)))
        assert.equal('say "usage": {x}', content)
        assert.same({ 3, 4, 7 }, { u.prompt_tokens, u.completion_tokens, u.total_tokens })
    end)

    for _, api in ipairs({ "openai", "anthropic" }) do
        for _, stream in ipairs({ false, true }) do
            it(("replays into %s %s and captures back the same text and usage"):format(api,
                stream and "streams" or "bodies"), function()
                local stored = cjson.encode(COMPLETION)
                local t = cjson.decode(stored)
                local out = stream and replay.stream(api, t, { include_usage = true, model = "gpt" })
                    or replay.body(api, stored, t)
                local again, why = capture.entry(api, stream, out, rec)
                assert(again, why)
                local text, u = text_of(again)
                assert.equal(COMPLETION.choices[1].message.content, text)
                assert.equal(11, u.prompt_tokens)
                assert.equal(7, u.completion_tokens)
            end)
        end
    end

    it("replays an OpenAI stream without the usage chunk unless asked, ending with [DONE]", function()
        local t = cjson.decode(cjson.encode(COMPLETION))
        local s = replay.stream("openai", t, {})
        assert.is_nil(s:find('"usage"', 1, true))
        assert.matches("data: %[DONE%]\n\n$", s)
        assert.truthy(replay.stream("openai", t, { include_usage = true }):find('"choices":[]', 1, true))
        -- the Anthropic event sequence, message_start to message_stop with the usage
        local a = replay.stream("anthropic", t, { model = "claude" })
        local names = {}
        for ev in a:gmatch("event: ([%w_]+)") do names[#names + 1] = ev end
        assert.same({ "message_start", "ping", "content_block_start", "content_block_delta", "content_block_stop",
                      "message_delta", "message_stop" }, names)
        assert.truthy(a:find('"output_tokens":7', 1, true))
    end)

    it("fills in the usage from the record when the client got none (stream without include_usage)", function()
        local t = cjson.decode(cjson.encode(COMPLETION))
        local v = assert(capture.entry("openai", true, replay.stream("openai", t, {}), rec))
        local _, u = text_of(v)
        assert.same({ 3, 4 }, { u.prompt_tokens, u.completion_tokens })
    end)

    it("never keeps a partial or errored stream, nor tool calls unless allowed", function()
        local t = cjson.decode(cjson.encode(COMPLETION))
        local s = replay.stream("openai", t, { include_usage = true })
        assert.is_nil(capture.entry("openai", true, s:gsub("data: %[DONE%]\n\n$", ""), rec))
        local cut = s:sub(1, math.floor(#s / 2))
        assert.is_nil(capture.entry("openai", true, cut, rec))
        local errored = s:gsub("data: %[DONE%]\n\n$", 'data: {"error":{"message":"boom"}}\n\n')
        assert.is_nil(capture.entry("openai", true, errored, rec))
        local a = replay.stream("anthropic", t, {})
        assert.is_nil(capture.entry("anthropic", true, a:gsub("event: message_stop.*$", ""), rec))
        assert.is_nil(capture.entry("anthropic", true, a:gsub("event: message_stop.*$",
            'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"x"}}\n\n'), rec))
        local tc = unit.deep_copy(COMPLETION)
        tc.choices[1].message = { role = "assistant", content = cjson.null, tool_calls = { { id = "c1", type = "function",
            ["function"] = { name = "get_weather", arguments = "{\"city\":\"Paris\"}" } } } }
        tc.choices[1].finish_reason = "tool_calls"
        local body = cjson.encode(tc)
        local v, why = capture.entry("openai", false, body, rec)
        assert.is_nil(v)
        assert.equal("tool calls", why)
        assert.equal(body, capture.entry("openai", false, body, rec, true))
        -- and a streamed tool call is assembled whole when allowed
        local st = replay.stream("openai", cjson.decode(body), { include_usage = true })
        local got = cjson.decode((assert(capture.entry("openai", true, st, rec, true))))
        assert.equal("{\"city\":\"Paris\"}", got.choices[1].message.tool_calls[1]["function"].arguments)
        assert.equal("tool_calls", got.choices[1].finish_reason)
    end)
end)

describe("ai-cache storage helpers", function()
    it("compresses and inflates whole values only", function()
        local s = string.rep("The cache keeps answers. ", 2000)
        local z = assert(zip.deflate(s))
        assert.truthy(#z < #s / 10)
        assert.equal(s, zip.inflate(z, #s))
        assert.is_nil(zip.inflate(z, #s - 1))
        assert.is_nil(zip.inflate(z:sub(1, -5), #s))
        assert.is_nil(zip.inflate("garbage", 100))
    end)

    it("memoises the key of a body's bytes and hands it out for those bytes only", function()
        local req = { model = "gpt", messages = { { role = "user", content = "Say hello" } }, temperature = 0 }
        local body = cjson.encode(req)
        local k = keys.of("p", req, "m", {})
        local name = keys.raw_name("p", "m", "", body)
        assert.matches("^r:%x+$", name)
        local v = keys.raw_value(k)
        assert.equal(k, keys.raw_key(v))
        assert.equal(name, keys.raw_name("p", "m", "", body))
        for _, other in ipairs({ { "q", "m", "", body }, { "p", "m2", "", body }, { "p", "m", "5:top_p", body },
                                 { "p", "m", "", body .. " " }, { "p", "m", "", body:upper() } }) do
            assert.not_equal(name, keys.raw_name(unpack(other)))
            assert.is_nil(keys.raw_key(v), other[1] .. other[2] .. other[3] .. other[4]) -- made from other bytes
        end
        keys.raw_name("p", "m", "", body)
        assert.equal(k, keys.raw_key(v))
        assert.is_nil(keys.raw_key("x" .. v:sub(2))) -- one byte differs: never trusted
        assert.is_nil(keys.raw_key(v .. "0"))
        assert.is_nil(keys.raw_key(nil))
    end)

    it("reads a memo where the dict copies it out (raw_lookup) as raw_key reads the string", function()
        local shared = require("sluice.pdk.shared")
        local C = require("sluice.core")
        local rc = C.sl_shdict_create("unit_raw_memo", 4 * 1024 * 1024)
        assert(rc == 0 or rc == -17)
        local d = shared.unit_raw_memo
        d:flush_all()
        -- bodies below and above the lookup's first buffer (4 KB) and above what it keeps (64 KB)
        for _, size in ipairs({ 100, 5000, 70000 }) do
            local body = cjson.encode({ model = "gpt", messages = { { role = "user", content = ("x"):rep(size) } } })
            local req = cjson.decode(body)
            local k = keys.of("p", req, "m", {})
            local name = keys.raw_name("p", "m", "", body)
            assert.is_nil(keys.raw_lookup(d, name)) -- not memoised yet
            assert.is_true((d:set(name, keys.raw_value(k))))
            keys.raw_name("p", "m", "", body)
            assert.equal(k, keys.raw_lookup(d, name))
            assert.equal(k, keys.raw_key((d:get(name))))
            keys.raw_name("p", "m", "", body .. " ") -- other bytes: the memo is not theirs
            assert.is_nil(keys.raw_lookup(d, name))
            keys.raw_name("p", "m", "", body)
            d:set(name, "x" .. keys.raw_value(k):sub(2)) -- one byte differs: never trusted
            assert.is_nil(keys.raw_lookup(d, name))
            d:set(name, 12345) -- not a memo at all
            assert.is_nil(keys.raw_lookup(d, name))
        end
    end)

    it("finds the nearest prompt of a partition in the vector store and evicts the partition's oldest", function()
        local ix = semantic.index("unit-" .. os.time(), 10, 2)
        local p, q = string.rep("1", 64), string.rep("2", 64)
        local k1, k2, k3 = string.rep("a", 64), string.rep("b", 64), string.rep("c", 64)
        assert(semantic.add(ix, p, { 1, 0, 0 }, k1, 60))
        assert(semantic.add(ix, p, { 0, 1, 0 }, k2, 60))
        assert(semantic.add(ix, q, { 1, 0, 0 }, k3, 60)) -- another partition: counted apart
        local k, sim = semantic.nearest(ix, p, { 0.9, 0.1, 0 }, 0.5)
        assert.equal(k1, k)
        assert.truthy(sim > 0.99 and sim <= 1.0001)
        assert.is_nil(semantic.nearest(ix, p, { 0.9, 0.1, 0 }, 0.999)) -- below the threshold
        local ok, evicted = semantic.add(ix, p, { 0, 0, 1 }, k3, 60) -- p is full: k1, its oldest, goes
        assert.is_true(ok)
        assert.equal(p .. k1, evicted)
        k = semantic.nearest(ix, p, { 1, 0, 0 }, -1)
        assert.not_equal(k1, k)
        assert.equal(k3, (semantic.nearest(ix, p, { 0, 0, 2 }, 0.5)))
        assert.equal(k3, (semantic.nearest(ix, q, { 1, 0, 0 }, 0.5))) -- q kept its prompt
        assert.is_nil(semantic.nearest(ix, string.rep("3", 64), { 1, 0, 0 }, -1))
        assert.is_nil(semantic.nearest(ix, p, { 1, 0 }, -1)) -- other dimensions: another store, empty
        assert.is_nil(semantic.add(ix, p, { 0, 0, 0 }, k1, 60)) -- no direction
    end)

    it("splits a request into its last question and a partition of everything else", function()
        local a = { messages = { { role = "system", content = "S" }, { role = "user", content = "What is 2+2?" } } }
        local b = { messages = { { role = "system", content = "S" }, { role = "user", content = "what's two plus two" } } }
        local c = { messages = { { role = "system", content = "T" }, { role = "user", content = "What is 2+2?" } } }
        local ta, pa = semantic.split("x", a, "m")
        local tb, pb = semantic.split("x", b, "m")
        local _, pc = semantic.split("x", c, "m")
        assert.equal("What is 2+2?", ta)
        assert.equal("what's two plus two", tb)
        assert.equal(pa, pb)
        assert.not_equal(pa, pc)
        assert.not_equal(pa, select(2, semantic.split("x", a, "other-model")))
        assert.is_nil(semantic.split("x", { messages = { { role = "system", content = "S" } } }, "m"))
    end)
end)
