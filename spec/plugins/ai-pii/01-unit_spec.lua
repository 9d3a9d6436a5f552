-- ai-pii, unit: the detectors (a table of positives and negatives), the actions, what counts as text in both client
-- formats, and the restore of placeholders split anywhere.
local unit = require("unit_helpers")
local pii = require("sluice.ai.safety.pii")
local cjson = require("cjson.safe")

local PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    .. "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQ==\n-----END RSA PRIVATE KEY-----"
local GHP = "ghp_" .. string.rep("aB3dE5", 6)

-- input, what the scanner (every detector, action redact) makes of it
local CASES = {
    -- e-mail
    { "mail alice.smith+tag@example.co.uk now", "mail [EMAIL] now" },
    { "bob@example.com.", "[EMAIL]." },
    { "not an address: a@b, @handle, x@y.z", "not an address: a@b, @handle, x@y.z" },
    -- phone numbers
    { "call +49 30 1234567 today", "call [PHONE] today" },
    { "(415) 555-0100 or 415-555-0100", "[PHONE] or [PHONE]" },
    { "UK 020 7946 0958, DE 030 12345678", "UK [PHONE], DE [PHONE]" },
    { "E.164 +14155552671", "E.164 [PHONE]" },
    { "order 12345, room 0.5, 1 2 3", "order 12345, room 0.5, 1 2 3" },
    -- payment cards: Luhn and issuer checked
    { "visa 4111 1111 1111 1111", "visa [CREDIT_CARD]" },
    { "mc 5500-0000-0000-0004 amex 378282246310005", "mc [CREDIT_CARD] amex [CREDIT_CARD]" },
    { "discover 6011111111111117", "discover [CREDIT_CARD]" },
    { "fails Luhn 4111 1111 1111 1112", "fails Luhn 4111 1111 1111 1112" },
    { "fails Luhn 4111111111111112 and 1234567812345678", "fails Luhn 4111111111111112 and 1234567812345678" },
    { "Luhn-valid but no issuer 0000000000000000", "Luhn-valid but no issuer 0000000000000000" },
    -- IBAN: mod-97 and the country's length
    { "iban DE89 3704 0044 0532 0130 00", "iban [IBAN]" },
    { "GB82WEST12345698765432 and FR14 2004 1010 0505 0001 3M02 606", "[IBAN] and [IBAN]" },
    { "fails mod-97 DE89 3704 0044 0532 0130 01", "fails mod-97 DE89 3704 0044 0532 0130 01" },
    { "GB82WEST12345698765433", "GB82WEST12345698765433" },
    { "DE89370400440532013000123 (too long for DE)", "DE89370400440532013000123 (too long for DE)" },
    -- US SSN
    { "ssn 123-45-6789", "ssn [US_SSN]" },
    { "never issued 000-12-3456 666-12-3456 123-00-4567 123-45-0000 923-45-6789",
      "never issued 000-12-3456 666-12-3456 123-00-4567 123-45-0000 923-45-6789" },
    -- IP addresses
    { "hosts 192.168.1.20 and 8.8.8.8", "hosts [IPV4] and [IPV4]" },
    { "not 999.1.2.3, 1.2.3.4.5, v1.2.3", "not 999.1.2.3, 1.2.3.4.5, v1.2.3" },
    { "v6 2001:db8::8a2e:370:7334 and 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "v6 [IPV6] and [IPV6]" },
    { "mapped ::ffff:192.0.2.128", "mapped [IPV6]" },
    { "12:30:45, std::vector, a:b:c", "12:30:45, std::vector, a:b:c" },
    -- secrets
    { "key sk-proj-abcdefghijklmnopqrstuvwxyz0123 and sk-ant-api03-abcdefghijklmnopqrstuvwx",
      "key [API_KEY] and [API_KEY]" },
    { "ask-me-anything-about-this, sk-short", "ask-me-anything-about-this, sk-short" },
    { "aws AKIAIOSFODNN7EXAMPLE", "aws [AWS_ACCESS_KEY]" },
    { "token " .. GHP, "token [GITHUB_TOKEN]" },
    { "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
      "jwt [JWT]" },
    { "key:\n" .. PEM .. "\nend", "key:\n[PRIVATE_KEY]\nend" },
    { "-----BEGIN PUBLIC KEY-----\nMFww\n-----END PUBLIC KEY-----", "-----BEGIN PUBLIC KEY-----\nMFww\n-----END PUBLIC KEY-----" },
}

describe("ai-pii detectors", function()
    local sc = assert(pii.scanner({}))
    local function redact(text)
        return (assert(sc:scan(text, function(d) return "[" .. d.label .. "]" end)))
    end

    for i, c in ipairs(CASES) do
        it("case " .. i .. ": " .. c[1]:sub(1, 50):gsub("\n", " "), function()
            assert.equal(c[2], redact(c[1]))
        end)
    end

    it("finds nothing in prose and leaves it as the same string", function()
        local text = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. "):rep(70)
        local out, n = sc:scan(text, function() return "x" end)
        assert.equal(0, n)
        assert.equal(text, out)
    end)

    it("checks: Luhn and mod-97", function()
        assert.is_true(pii.luhn("4111111111111111"))
        assert.is_false(pii.luhn("4111111111111112"))
        assert.equal(1, pii.mod97("DE89370400440532013000"))
        assert.are_not.equal(1, pii.mod97("DE89370400440532013001"))
    end)

    it("custom detectors: named, before the built-in ones, bad patterns refused", function()
        local s = assert(pii.scanner({ custom = { { name = "employee_id", pattern = [[EMP-\d{6}]] } } }))
        local out = s:scan("EMP-123456 wrote to bob@example.com", function(d) return "[" .. d.label .. "]" end)
        assert.equal("[EMPLOYEE_ID] wrote to [EMAIL]", out)
        local only = assert(pii.scanner({ detectors = { "employee_id" },
                                          custom = { { name = "employee_id", pattern = [[EMP-\d{6}]] } } }))
        assert.equal("[EMPLOYEE_ID] bob@example.com", (only:scan("EMP-123456 bob@example.com",
            function(d) return "[" .. d.label .. "]" end)))
        assert.is_nil(pii.scanner({ custom = { { name = "x", pattern = "(" } } }))
        assert.is_nil(pii.scanner({ custom = { { name = "email", pattern = "x" } } }))
        assert.is_nil(pii.scanner({ detectors = { "nope" } }))
    end)

    it("custom patterns keep their own groups: back-references and named groups in several at once", function()
        local s = assert(pii.scanner({ detectors = { "dup_code", "quoted_ref", "ticket" }, custom = {
            { name = "dup_code", pattern = [[\b([A-Z]{2})-\d{3}-\1\b]] },          -- \1: its own group
            { name = "quoted_ref", pattern = [[(["'])REF\d{4}\1]] },                -- \1 again, not the first's
            { name = "ticket", pattern = [[(?<q>T)(?<n>\d{3})-\k<n>]] },            -- names and a named reference
        } }))
        local function scrub(text)
            return (s:scan(text, function(d) return "[" .. d.label .. "]" end))
        end
        assert.equal("[DUP_CODE] and AB-123-CD", scrub("AB-123-AB and AB-123-CD"))
        assert.equal("say [QUOTED_REF] not 'REF1234\"", scrub("say \"REF1234\" not 'REF1234\""))
        assert.equal("[TICKET] T123-124", scrub("T123-123 T123-124"))
    end)

    it("a hostile input ends (bounded patterns, no catastrophic backtracking)", function()
        local s = ("a."):rep(20000) .. "@" .. ("1 "):rep(20000) .. ("::"):rep(5000) .. ("4"):rep(5000)
        local t0 = os.clock()
        assert(sc:scan(s, function() return "x" end))
        assert.is_true(os.clock() - t0 < 5)
    end)
end)

describe("ai-pii rewrite", function()
    local plugin = unit.load_plugin("ai-pii")

    local function run(conf, path, body)
        local c = assert(unit.validate(plugin, conf))
        return unit.run(plugin, "rewrite", c, { method = "POST", path = path, body = body })
    end

    it("placeholders: one per value, numbered per kind, the same value the same placeholder", function()
        local res = run({}, "/v1/chat/completions", { model = "m", messages = {
            { role = "system", content = "Support for ann@example.org" },
            { role = "user", content = "I am bob@example.com, card 4111 1111 1111 1111, again bob@example.com" } } })
        assert.equal("Support for <PII_EMAIL_1>", res.json.messages[1].content)
        assert.equal("I am <PII_EMAIL_2>, card <PII_CREDIT_CARD_1>, again <PII_EMAIL_2>", res.json.messages[2].content)
        assert.same({ email = 3, credit_card = 1 }, res.ctx.pii.counts)
        assert.equal("bob@example.com", res.ctx.pii.by_ph["<PII_EMAIL_2>"])
        assert.same({ email = 3, credit_card = 1 }, res.ctx.safety.pii.detected)
    end)

    it("actions: redact, mask (the last 4 kept), hash (stable, salted), per detector and group", function()
        local conf = { action = "redact", actions = { credit_card = "mask", secrets = "hash", email = "placeholder" },
                       hash_salt = "pepper-0123" }
        local body = { messages = { { role = "user",
            content = "4111 1111 1111 1111 / +49 30 1234567 / AKIAIOSFODNN7EXAMPLE / bob@example.com" } } }
        local a = run(conf, "/v1/chat/completions", unit.deep_copy(body)).json.messages[1].content
        local b = run(conf, "/v1/chat/completions", unit.deep_copy(body)).json.messages[1].content
        assert.matches("^%*%*%*%* %*%*%*%* %*%*%*%* 1111 / %[PHONE%] / %[AWS_ACCESS_KEY:%x+%] / <PII_EMAIL_1>$", a)
        assert.equal(a, b) -- stable
        conf.hash_salt = "other-salt-99"
        local c = run(conf, "/v1/chat/completions", unit.deep_copy(body)).json.messages[1].content
        assert.are_not.equal(a:match("AWS_ACCESS_KEY:(%x+)"), c:match("AWS_ACCESS_KEY:(%x+)"))
        assert.not_matches("AKIA", a)
    end)

    it("OpenAI: part arrays, tool-call arguments (JSON kept valid), tool results; roles chosen", function()
        local res = run({ action = "redact" }, "/v1/chat/completions", { messages = {
            { role = "user", content = { { type = "text", text = "me: bob@example.com" },
                                         { type = "image_url", image_url = { url = "https://x/bob@example.com" } } } },
            { role = "assistant", content = cjson.null, tool_calls = { { id = "c1", type = "function",
                ["function"] = { name = "send", arguments = '{"to":"ann@example.org","n":1}' } } } },
            { role = "tool", tool_call_id = "c1", content = "sent to ann@example.org" } } })
        local m = res.json.messages
        assert.equal("me: [EMAIL]", m[1].content[1].text)
        assert.equal("https://x/bob@example.com", m[1].content[2].image_url.url) -- not text
        assert.same({ to = "[EMAIL]", n = 1 }, cjson.decode(m[2].tool_calls[1]["function"].arguments))
        assert.equal("sent to [EMAIL]", m[3].content)

        local only_user = run({ action = "redact", roles = { "user" }, tool_calls = false }, "/v1/chat/completions",
            { messages = { { role = "system", content = "a@example.com" }, { role = "user", content = "b@example.com" },
                           { role = "assistant", tool_calls = { { id = "1", type = "function",
                             ["function"] = { name = "f", arguments = '{"x":"c@example.com"}' } } } } } })
        assert.equal("a@example.com", only_user.json.messages[1].content)
        assert.equal("[EMAIL]", only_user.json.messages[2].content)
        assert.equal('{"x":"c@example.com"}', only_user.json.messages[3].tool_calls[1]["function"].arguments)
    end)

    it("Anthropic: system, text blocks, tool_use input, tool_result blocks", function()
        local res = run({ action = "redact" }, "/v1/messages", { model = "c", max_tokens = 5,
            system = { { type = "text", text = "ops: ops@example.com" } },
            messages = {
                { role = "user", content = "I am bob@example.com" },
                { role = "assistant", content = { { type = "tool_use", id = "t1", name = "lookup",
                    input = { email = "bob@example.com", nested = { phone = "+49 30 1234567" } } } } },
                { role = "user", content = { { type = "tool_result", tool_use_id = "t1",
                    content = { { type = "text", text = "card 4111 1111 1111 1111" } } },
                    { type = "text", text = "thanks" } } } } })
        local j = res.json
        assert.equal("ops: [EMAIL]", j.system[1].text)
        assert.equal("I am [EMAIL]", j.messages[1].content)
        assert.same({ email = "[EMAIL]", nested = { phone = "[PHONE]" } }, j.messages[2].content[1].input)
        assert.equal("card [CREDIT_CARD]", j.messages[3].content[1].content[1].text)
    end)

    it("masks strings nested deep in tool-call arguments and tool_use inputs", function()
        local function nest(leaf, n)
            local v = leaf
            for _ = 1, n do v = { x = v } end
            return v
        end
        local res = run({ action = "redact" }, "/v1/chat/completions", { messages = {
            { role = "assistant", tool_calls = { { id = "1", type = "function", ["function"] = { name = "f",
                arguments = cjson.encode(nest({ a = "bob@example.com" }, 60)) } } } },
            { role = "user", content = "hi" } } })
        local args = res.json.messages[1].tool_calls[1]["function"].arguments
        assert.not_matches("bob@example.com", args, 1, true)
        assert.matches("[EMAIL]", args, 1, true)
        res = run({ action = "redact" }, "/v1/messages", { model = "c", max_tokens = 5, messages = {
            { role = "assistant", content = { { type = "tool_use", id = "t1", name = "f",
                input = nest({ a = "bob@example.com" }, 60) } } },
            { role = "user", content = "hi" } } })
        local input = cjson.encode(res.json.messages[1].content[1].input)
        assert.not_matches("bob@example.com", input, 1, true)
        assert.matches("[EMAIL]", input, 1, true)
    end)

    it("leaves a body without PII byte for byte (no re-encoding)", function()
        local res = run({}, "/v1/chat/completions", { messages = { { role = "user", content = "hello there" } } })
        assert.is_false(res.body_changed)
    end)
end)

describe("ai-pii restore", function()
    local restore = dofile(unit.ROOT .. "/plugins/ai-pii/restore.lua")
    local st = { by_ph = { ["<PII_EMAIL_1>"] = "bob@example.com", ["<PII_PRIVATE_KEY_1>"] = 'a "quoted"\nkey' },
                 restored = 0, response_counts = {} }

    -- feeds text in pieces cut at the given positions; returns what the client gets
    local function feed(h, text, cuts, is_json)
        local out, from = {}, 1
        for _, c in ipairs(cuts) do
            out[#out + 1] = h:text("c0", text:sub(from, c), is_json)
            from = c + 1
        end
        out[#out + 1] = h:text("c0", text:sub(from), is_json)
        out[#out + 1] = h:flush("c0", is_json)
        return table.concat(out)
    end

    it("a placeholder cut at every byte position, into two and into three pieces", function()
        local text = "Write to <PII_EMAIL_1> soon."
        local a, b = text:find("<PII_EMAIL_1>", 1, true)
        for i = a - 1, b do
            local h = restore.handler({}, {}, st, true)
            assert.equal("Write to bob@example.com soon.", feed(h, text, { i }))
            for j = i + 1, b do
                h = restore.handler({}, {}, st, true)
                assert.equal("Write to bob@example.com soon.", feed(h, text, { i, j }))
            end
        end
    end)

    it("never lets half a placeholder out", function()
        local h = restore.handler({}, {}, st, true)
        assert.equal("Write to ", h:text("c0", "Write to <PII_EM"))
        assert.equal("", h:text("c0", "AIL"))
        assert.equal("bob@example.com!", h:text("c0", "_1>!"))
        assert.equal("a <b> c <PII_X", h:text("c0", "a <b> c <PII_X") .. h:flush("c0")) -- not one of ours
    end)

    it("inserts an original JSON-escaped into tool arguments", function()
        local h = restore.handler({}, {}, st, true)
        local out = feed(h, '{"key":"<PII_PRIVATE_KEY_1>"}', { 12 }, true)
        assert.same({ key = 'a "quoted"\nkey' }, cjson.decode(out))
    end)
end)

describe("ai-pii pre-filter", function()
    -- The digit-led, e-mail and IPv6 detectors run only inside runs of their bytes around digits, '@' and colons
    -- (core/common/runs.c); the reference is the same patterns over the whole text (prefilter = false). Same candidates, same order, on random
    -- text made of the bytes that matter (and PII-shaped pieces), short and long.
    local fast = assert(pii.scanner({}))
    local plain = assert(pii.scanner({ prefilter = false }))
    local PIECES = { "4111 1111 1111 1111", "4111-1111-1111-1112", "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432",
                     "+49 30 1234567", "(415) 555-0100", "415-555-0100", "020 7946 0958", "078-05-1120", "203.0.113.42",
                     "1.2.3.4.5", "10.0.0.256", "0.5", "12", "+1", "88231-44", "14:32", "DE89", "ID 12 34",
                     "jane.doe@example.com", "a@b", "x_y%z+q@mail.example.co.uk", "@", "-@-.de", "2001:db8::1",
                     "::ffff:192.0.2.1", "fe80::1:2", "ab:cd", "1:2:3:4:5:6:7:8", ":::", "dead:beef::cafe" }
    local BYTES = "0123456789012345678901234567890123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefxyz +-.()/ :::@@_%,;\n\t\"-"

    local function random_text(rng, n)
        local out = {}
        for i = 1, n do
            local r = rng(100)
            if r <= 8 then
                out[i] = PIECES[rng(#PIECES)]
            elseif r <= 50 then
                local k = rng(#BYTES)
                out[i] = BYTES:sub(k, k)
            elseif r <= 60 then
                out[i] = string.char(rng(0, 255))
            else
                out[i] = ("the quick brown fox "):sub(rng(20))
            end
        end
        return table.concat(out)
    end

    it("finds the same candidates as the plain scan on random text", function()
        math.randomseed(20261202)
        local rng = math.random
        local seen = 0
        for round = 1, 3000 do
            local text = random_text(rng, rng(1, round % 10 == 0 and 400 or 40))
            local a = assert(fast:candidates(text))
            local b = assert(plain:candidates(text))
            seen = seen + #a
            assert.same(b, a, text)
        end
        assert.is_true(seen > 1000) -- the texts do hold candidates
    end)

    it("more candidates than one call into C returns (resumed where it stopped)", function()
        local parts = {}
        for i = 1, 300 do parts[i] = "10.0." .. (i % 250) .. "." .. (i % 7) .. (i % 3 == 0 and " 4111 1111 1111 1111" or "") end
        local text = table.concat(parts, " ")
        local a = assert(fast:candidates(text))
        assert.is_true(#a > 300)
        assert.same(assert(plain:candidates(text)), a)
        local big = string.rep("1 ", 200) .. string.rep("7", 40000) .. " +44 20 7946 0958"
        assert.same(assert(plain:candidates(big)), assert(fast:candidates(big)))
    end)
end)
