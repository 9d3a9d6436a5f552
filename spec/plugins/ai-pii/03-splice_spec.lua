-- ai-pii, the masked body handed on as the client's bytes with the masked strings spliced in
-- (sluice.ai.safety.splice) against the reference: the decoded table masked (mask_body) and encoded whole, as the
-- plugin did before. On hand-written and random bodies (escapes, surrogate pairs, invalid UTF-8, repeated and
-- escaped keys, deep nesting, every client format): the upstream gets the same value, the placeholders and counts
-- are the same, and validation (sluice.ai.validate) gives the same verdict.
local unit = require("unit_helpers")
local cjson = require("cjson.safe")
local validate = require("sluice.ai.validate")
local splice = require("sluice.ai.safety.splice")
local sreq = require("sluice.ai.safety.request")
local json = require("sluice.ai.common.json")

local plugin = unit.load_plugin("ai-pii")

local PII = { "bob@example.com", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "+44 20 7946 0958",
              "123-45-6789", "203.0.113.42", "2001:db8::1", "sk-" .. string.rep("a1B2", 6), "AKIAIOSFODNN7EXAMPLE",
              "EMP-123456" }
local CONF = { custom = { { name = "employee_id", pattern = [[EMP-\d{6}]] } } }

-- The reference: what the plugin sent before, the decoded table masked in place and encoded whole.
local function reference(conf, path, raw)
    local vconf = assert(unit.validate(plugin, conf))
    local c = assert(plugin.compile(vconf))
    local body = cjson.decode(raw)
    if type(body) ~= "table" then return nil end
    local st = plugin.new_state()
    local ok, changed = pcall(plugin.mask_body, c, vconf, st, body, path:find("/messages$") and "anthropic" or "openai")
    if not ok then return { error = changed } end
    return { json = body, changed = changed, st = st }
end

-- validate.request as sluice.ai.proxy calls it after the plugin: the bytes when they are still the body's
local function verdict(api, op, ctx)
    local raw = not ctx.json_changed and ctx.body or nil
    local t = ctx.json or cjson.decode(ctx.body)
    return { validate.request(api, op, t, raw) }
end

-- Runs the plugin on raw and checks it against the reference; returns "splice", "encode" or "same".
local function check(raw, conf, path)
    conf, path = conf or CONF, path or "/v1/chat/completions"
    local ref = reference(conf, path, raw)
    local res = unit.run(plugin, "rewrite", conf, { method = "POST", path = path, body = raw,
                                                    headers = { ["content-type"] = "application/json" } })
    if not ref then return "same" end
    if ref.error then
        assert.equal(400, res.status, raw)
        return "same"
    end
    assert.is_nil(res.error, raw)
    assert.same(ref.json, res.json, raw)
    assert.same(ref.st.counts, res.ctx.pii.counts, raw)
    assert.same(ref.st.by_ph, res.ctx.pii.by_ph, raw)
    if not ref.changed then
        assert.is_false(res.body_changed, raw)
        return "same"
    end
    local api = path:find("/messages$") and "anthropic" or "openai"
    local op = path:find("/messages$") and "messages" or path:match("([^/]+)$")
    -- the reference's verdict: the table alone (json_changed)
    local want = { validate.request(api, op, ref.json, nil) }
    assert.same(want, verdict(api, op, res.ctx), raw)
    if res.ctx.json_changed then return "encode" end
    assert.same(ref.json, cjson.decode(res.ctx.body), raw) -- the bytes sent say what the table says
    if json.plain_object(raw) then -- plain bytes stay plain (sluice.ai.safety.request.note_plain)
        assert.is_true(json.plain_object(res.ctx.body), res.ctx.body)
    end
    return "splice"
end

describe("ai-pii splice", function()
    it("hand-written bodies: escapes, surrogate pairs, whitespace, key order, parts and tool calls", function()
        local spliced = {
            [=[{"model":"m","messages":[{"role":"user","content":"I am bob@example.com"}]}]=],
            [=[ { "messages" : [ { "content" : "mail bob@example.com\nand card 4111 1111 1111 1111" , "role":"user" } ] } ]=],
            [=[{"messages":[{"role":"user","content":"caf\u00e9 bob@example.com \ud83d\ude00 \"q\" \\ \/ x"}]}]=],
            [=[{"messages":[{"role":"user","content":"\u0062ob@example.com"}]}]=], -- the value itself escaped
            [=[{"messages":[{"role":"system","content":"ann@example.org"},{"role":"user","content":[
                {"type":"text","text":"card 4111 1111 1111 1111"},{"type":"image_url","image_url":{"url":"x"}},
                {"type":"text","text":"mail bob@example.com"}]}]}]=],
            [=[{"messages":[{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"f",
                "arguments":"{\"to\":\"bob@example.com\",\"n\":[1,{\"c\":\"4111 1111 1111 1111\"}]}"}}]},
                {"role":"tool","tool_call_id":"1","content":"sent to bob@example.com"},{"role":"user","content":"ok"}]}]=],
            [=[{"messages":[{"role":"user","content":"x"}],"prompt":["call +44 20 7946 0958","plain"]}]=],
            [=[{"messages":[{"role":"user","content":"raw é ü 😀 then bob@example.com"}],"metadata":{"a":"b"}}]=],
            [=[{"messages":[{"role":"user","content":"EMP-123456 and bob@example.com"}],"x":[[[]]],"y":{"z":{}}}]=],
        }
        for _, raw in ipairs(spliced) do
            assert.equal("splice", check(raw), raw)
        end
        local anthropic = {
            [=[{"model":"c","max_tokens":5,"system":"ops ann@example.org","messages":[{"role":"user","content":
                [{"type":"text","text":"bob@example.com"},{"type":"tool_result","tool_use_id":"t","content":
                [{"type":"text","text":"ssn 123-45-6789"}]}]},{"role":"assistant","content":[{"type":"tool_use",
                "id":"t2","name":"f","input":{"to":["x","bob@example.com"],"deep":{"k":"4111 1111 1111 1111"}}}]},
                {"role":"user","content":"fine"}]}]=],
            [=[{"model":"c","max_tokens":5,"system":[{"type":"text","text":"ann@example.org"}],"messages":[
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"bob@example.com"}]}]}]=],
        }
        for _, raw in ipairs(anthropic) do
            assert.equal("splice", check(raw, CONF, "/v1/messages"), raw)
        end
        assert.equal("splice", check([=[{"model":"e","input":["bob@example.com","x"]}]=], CONF, "/v1/embeddings"))
        assert.equal("splice", check([=[{"model":"e","prompt":"bob@example.com"}]=], CONF, "/v1/completions"))
    end)

    it("falls back to encoding the table where the bytes do not say one value, with the same result", function()
        local encoded = {
            -- a repeated key on the path: cjson took the last one
            [=[{"messages":[{"role":"user","content":"bob@example.com","content":"ann@example.org"}]}]=],
            [=[{"messages":[{"role":"user","content":"a@example.com"}],"messages":[{"role":"user","content":"bob@example.com"}]}]=],
            -- an escaped key on the path: it may spell the key looked for
            [=[{"messages":[{"role":"user","con\u0074ent":"bob@example.com"}]}]=],
            [=[{"messages":[{"ro\u006ce":"user","content":"bob@example.com"}]}]=],
            -- not UTF-8 outside the masked value: the table is checked string by string, as before
            "{\"messages\":[{\"role\":\"user\",\"content\":\"bob@example.com\"}],\"x\":\"\255\",\"x\":\"ok\"}",
        }
        for _, raw in ipairs(encoded) do
            assert.equal("encode", check(raw), raw)
        end
        -- invalid UTF-8 kept in a masked value: refused alike either way (validate names the field)
        local r = check("{\"messages\":[{\"role\":\"user\",\"content\":\"bob@example.com \255\"}]}")
        assert.is_true(r == "encode" or r == "splice")
        -- a repeated key elsewhere: spliced, and the driver's plain-JSON check re-encodes what goes upstream
        assert.equal("splice", check([=[{"messages":[{"role":"user","content":"bob@example.com"}],"t":1,"t":2}]=]))
        -- deeper than a path is followed (tool_use input nested 100 levels): encoded
        local deep = '"bob@example.com"'
        for _ = 1, 100 do deep = '{"x":' .. deep .. "}" end
        assert.equal("encode", check('{"model":"c","max_tokens":5,"messages":[{"role":"assistant","content":'
            .. '[{"type":"tool_use","id":"t","name":"f","input":' .. deep .. '}]},{"role":"user","content":"x"}]}',
            CONF, "/v1/messages"))
        -- more changed strings than splice takes: encoded
        local msgs = {}
        for i = 1, splice.MAX_EDITS + 1 do msgs[i] = '{"role":"user","content":"u' .. i .. '@example.com"}' end
        assert.equal("encode", check('{"messages":[' .. table.concat(msgs, ",") .. "]}"))
        msgs[#msgs] = nil
        assert.equal("splice", check('{"messages":[' .. table.concat(msgs, ",") .. "]}"))
    end)

    it("a large body: 1 MB of text with values all through it", function()
        local parts = {}
        for i = 1, 4000 do
            parts[i] = "line " .. i .. " of the report, contact " .. PII[i % #PII + 1] .. " \\n and more text here."
        end
        local raw = '{"model":"m","messages":[{"role":"user","content":"' .. table.concat(parts, " ") .. '"}]}'
        assert.is_true(#raw > 250000)
        assert.equal("splice", check(raw))
    end)

    -- random bodies, encoded here with random escapes (\uXXXX, surrogate pairs, \/), whitespace, key order,
    -- invalid bytes, repeated and escaped keys
    local rng
    local WORDS = { "the", "order", "arrived", "late", "é", "😀", "\n", '"', "\\", "/", "\t", "ü", "日本",
                    "12", "0.5", "88231-44", ":", "@", " " }

    local function text()
        local out = {}
        for i = 1, rng(0, 12) do
            local r = rng(10)
            if r <= 3 then out[i] = PII[rng(#PII)]
            elseif r == 4 and rng(20) == 1 then out[i] = string.char(rng(128, 255)) -- invalid UTF-8, now and then
            else out[i] = WORDS[rng(#WORDS)] end
        end
        return table.concat(out, rng(2) == 1 and " " or "")
    end

    local function ws()
        local r = rng(6)
        return r == 1 and " " or r == 2 and "\n  " or ""
    end

    local function enc_string(s)
        local out, i, n = { '"' }, 1, #s
        while i <= n do
            local c = s:byte(i)
            local len = c < 0x80 and 1 or c >= 0xF0 and 4 or c >= 0xE0 and 3 or c >= 0xC2 and 2 or 1
            local ch = s:sub(i, i + len - 1)
            local cp
            if len > 1 and #ch == len and not ch:sub(2):find("[^\128-\191]") then
                cp = c % (len == 2 and 32 or len == 3 and 16 or 8)
                for k = 2, len do cp = cp * 64 + ch:byte(k) % 64 end
            else
                len, ch = 1, s:sub(i, i)
            end
            if ch == '"' then out[#out + 1] = rng(3) == 1 and "\\u0022" or '\\"'
            elseif ch == "\\" then out[#out + 1] = "\\\\"
            elseif ch == "\n" then out[#out + 1] = rng(2) == 1 and "\\n" or "\\u000a"
            elseif ch == "\t" then out[#out + 1] = "\\t"
            elseif ch == "/" and rng(2) == 1 then out[#out + 1] = "\\/"
            elseif cp and rng(3) == 1 then
                if cp >= 0x10000 then
                    local v = cp - 0x10000
                    out[#out + 1] = ("\\u%04x\\u%04x"):format(0xD800 + math.floor(v / 1024), 0xDC00 + v % 1024)
                else
                    out[#out + 1] = ("\\u%04X"):format(cp)
                end
            elseif len == 1 and c < 0x80 and c > 0x20 and rng(40) == 1 then
                out[#out + 1] = ("\\u%04x"):format(c)
            else
                out[#out + 1] = ch
            end
            i = i + len
        end
        out[#out + 1] = '"'
        return table.concat(out)
    end

    -- {k, v} pairs (v already JSON text) as an object, in random order, now and then a repeated or escaped key
    local function obj(pairs_)
        for i = #pairs_, 2, -1 do
            local j = rng(i)
            pairs_[i], pairs_[j] = pairs_[j], pairs_[i]
        end
        local out = {}
        for i, p in ipairs(pairs_) do
            local k = p[1]
            if rng(150) == 1 then k = k:sub(1, 1) .. ("\\u%04x"):format(k:byte(2) or 120) .. k:sub(3) end
            out[i] = ws() .. '"' .. k .. '"' .. ws() .. ":" .. ws() .. p[2]
            if rng(150) == 1 then out[#out + 1] = '"' .. k .. '":' .. enc_string(text()) end
        end
        return "{" .. table.concat(out, ",") .. ws() .. "}"
    end

    local function arr(list) return "[" .. ws() .. table.concat(list, "," .. ws()) .. "]" end

    local function openai_body()
        local msgs = {}
        for i = 1, rng(1, 5) do
            local role = ({ "system", "user", "assistant", "tool", "developer" })[rng(5)]
            local m = { { "role", enc_string(role) } }
            local r = rng(4)
            if r <= 2 then
                m[#m + 1] = { "content", enc_string(text()) }
            elseif r == 3 then
                local parts = {}
                for j = 1, rng(1, 3) do
                    parts[j] = rng(4) == 1 and obj({ { "type", '"image_url"' }, { "image_url", obj({ { "url", '"u"' } }) } })
                        or obj({ { "type", '"text"' }, { "text", enc_string(text()) } })
                end
                m[#m + 1] = { "content", arr(parts) }
            else
                local args = cjson.encode({ to = text(), list = { text(), 5, { deep = text() } } }) or "{}"
                if rng(5) == 1 then args = text() end -- arguments that are not JSON
                m[#m + 1] = { "tool_calls", arr({ obj({ { "id", '"c1"' }, { "type", '"function"' },
                    { "function", obj({ { "name", '"f"' }, { "arguments", enc_string(args) } }) } }) }) }
                m[#m + 1] = { "content", "null" }
            end
            msgs[i] = obj(m)
        end
        local top = { { "model", '"gpt"' }, { "messages", arr(msgs) }, { "temperature", "0.5" } }
        if rng(4) == 1 then top[#top + 1] = { "metadata", obj({ { "note", enc_string(text()) } }) } end
        return ws() .. obj(top) .. ws()
    end

    local function anthropic_body()
        local msgs = {}
        for i = 1, rng(1, 4) do
            local blocks = {}
            for j = 1, rng(1, 3) do
                local r = rng(3)
                if r == 1 then
                    blocks[j] = obj({ { "type", '"text"' }, { "text", enc_string(text()) } })
                elseif r == 2 then
                    blocks[j] = obj({ { "type", '"tool_use"' }, { "id", '"t"' }, { "name", '"f"' }, { "input",
                        obj({ { "a", enc_string(text()) }, { "b", arr({ enc_string(text()), "1", obj({ { "c", enc_string(text()) } }) }) } }) } })
                else
                    blocks[j] = obj({ { "type", '"tool_result"' }, { "tool_use_id", '"t"' }, { "content",
                        rng(2) == 1 and enc_string(text()) or arr({ obj({ { "type", '"text"' }, { "text", enc_string(text()) } }) }) } })
                end
            end
            msgs[i] = obj({ { "role", i % 2 == 1 and '"user"' or '"assistant"' },
                            { "content", rng(3) == 1 and enc_string(text()) or arr(blocks) } })
        end
        return obj({ { "model", '"c"' }, { "max_tokens", "5" }, { "system", enc_string(text()) }, { "messages", arr(msgs) } })
    end

    it("random bodies: the same value upstream, the same placeholders, the same verdict", function()
        math.randomseed(15)
        rng = math.random
        local seen = { splice = 0, encode = 0, same = 0 }
        local confs = { CONF, { action = "redact" }, { action = "mask", actions = { email = "redact" } },
                        { action = "hash", hash_salt = "pepper-pepper" }, { roles = { "user" }, tool_calls = false } }
        for round = 1, 600 do
            local conf = confs[round % #confs + 1]
            local raw, path = openai_body(), "/v1/chat/completions"
            if round % 3 == 0 then raw, path = anthropic_body(), "/v1/messages" end
            local how = check(raw, conf, path)
            seen[how] = seen[how] + 1
        end
        -- both ways taken, the splice most of the time
        assert.is_true(seen.splice > 300, "spliced " .. seen.splice)
        assert.is_true(seen.encode > 5, "encoded " .. seen.encode)
    end)

    -- units(decode(raw)) without the units that have no slot, slots as {kind, text}
    local function table_units(raw)
        local out = {}
        for _, u in ipairs(sreq.units(cjson.decode(raw), "openai")) do
            if #u.slots > 0 then
                local slots = {}
                for i, s in ipairs(u.slots) do slots[i] = { s.kind, s.t[s.k] } end
                out[#out + 1] = { role = u.role, index = u.index, slots = slots }
            end
        end
        return out
    end

    local function raw_units(raw)
        local units = sreq.raw_units(raw)
        if not units then return nil end
        local out = {}
        for i, u in ipairs(units) do
            local slots = {}
            for j, s in ipairs(u.slots) do
                slots[j] = { s.kind, s.t[s.k] }
                assert.equal(s.t[s.k], cjson.decode(raw:sub(s.from, s.to)), raw) -- where it sits
            end
            out[i] = { role = u.role, index = u.index, slots = slots }
        end
        return out
    end

    it("texts read from the bytes: the same units as from the decoded table, or none (then it is decoded)", function()
        math.randomseed(1502)
        rng = math.random
        local read = 0
        for _ = 1, 1500 do
            local raw = openai_body()
            if rng(4) == 1 then -- the odd shapes units() takes: roles and contents of other types, prompt, input
                raw = raw:gsub('"role"', rng(2) == 1 and '"x"' or '"role":5,"y"', 1)
                    :gsub('"content":null', rng(2) == 1 and '"content":{"text":"bob@example.com"}' or
                          '"content":[1,"a",{"type":"input_text","text":"ann@example.org"},{"type":"text"},'
                          .. '{"type":"image","text":"x"},{"text":"y"},{"type":"t\\u0065xt","text":5},'
                          .. '{"text":"z","type":"t\\u0065xt"}]', 1)
                raw = raw:gsub("^(%s*{)", rng(2) == 1 and '%1"prompt":["a@b.example.com",3,{"x":"y"}],' or
                    '%1"input":"bob@example.com",', 1)
            end
            local got = raw_units(raw)
            if cjson.decode(raw) and require("sluice.ai.common.json").plain_object(raw) then
                assert.is_table(got, raw)
            end
            if got then
                read = read + 1
                assert.same(table_units(raw), got, raw)
            end
        end
        assert.is_true(read > 1000, "read " .. read)
    end)

    it("the guard's verdict on texts read from the bytes is the verdict on the decoded table", function()
        local guard = unit.load_plugin("ai-prompt-guard")
        local c = assert(guard.compile(assert(unit.validate(guard, { deny = { "bob@", "ignore previous" },
            roles = { "user", "tool", "system" }, history = true }))))
        c.history = true
        math.randomseed(77)
        rng = math.random
        local denied = 0
        for _ = 1, 500 do
            local raw = openai_body()
            local units = sreq.raw_units(raw)
            if units then
                local v = guard.verdict_units(c, units)
                assert.same(guard.verdict(c, cjson.decode(raw), "openai"), v, raw)
                if v then denied = denied + 1 end
            end
        end
        assert.is_true(denied > 50, "denied " .. denied)
    end)
end)
