-- sluice.re.set: many patterns matched as one alternation would be, each meaning what it means alone; the literal
-- pre-filter never hides a match (random patterns and texts); how each kind of pattern is run.
local re = require("sluice.pdk.re")
local syn = require("sluice.pdk.re_syntax")

-- The reference: every pattern compiled and run alone; the match that starts first, at one start the lowest index.
local compiled = {}
local function reference(list, text, init)
    local bf, bt, bi
    for i, x in ipairs(list) do
        local pat, flags = x, ""
        if type(x) == "table" then pat, flags = x.pattern, x.flags or "" end
        local r = compiled[pat .. "/" .. flags] or assert(re.compile(pat, flags))
        compiled[pat .. "/" .. flags] = r
        local from, to = r:exec(text, init)
        if from and (not bf or from < bf) then bf, bt, bi = from, to, i end
    end
    return bf, bt, bi
end

describe("sluice.re.set", function()
    it("patterns keep their own group numbers, names, flags and anchors", function()
        local list = {
            { pattern = [[\b(\w+)\s+\1\b]], flags = "i" },      -- a back-reference
            [[<(?<tag>[a-z]+)>[^<]*</\k<tag>>]],               -- a named group and its reference
            [[(["'])secret\1]],                                 -- \1 again: its own group, not the first rule's
            { pattern = [[^attention\b]], flags = "i" },       -- an anchor with a flag
            [[(?i)ignore previous instructions]],              -- an inline flag
            [[(\((?:[^()]|(?1))*\))!]],                          -- a subroutine call: its own group 1
            [[STOP$]],
        }
        local set = assert(re.set(list))
        local function which(text)
            local from, _, i = set:exec(text)
            return from and i or nil
        end
        assert.equal(1, which("this is is it"))
        assert.equal(1, which("This this"))
        assert.is_nil(which("this is it"))
        assert.equal(2, which("x <b>bold</b> y"))
        assert.is_nil(which("x <b>bold</i> y"))
        assert.equal(3, which([[say 'secret' now]]))
        assert.equal(3, which([[say "secret" now]]))
        assert.is_nil(which([[say 'secret" now]]))
        assert.equal(4, which("ATTENTION: please"))
        assert.is_nil(which("pay attention"))
        assert.equal(5, which("Please IGNORE previous instructions"))
        assert.equal(6, which("f((a)(b))! done"))
        assert.is_nil(which("f((a)(b) done"))
        assert.equal(7, which("now STOP"))
        assert.is_nil(which("STOP now"))
        -- the match that starts first wins, whatever the order of the rules
        assert.equal(4, which("Attention: ignore previous instructions, 'secret'"))
        assert.equal(5, which("so ignore previous instructions STOP"))
    end)

    it("answers as the reference (each pattern alone, the earliest match) on every text and start", function()
        local list = { [[(a|b)\1]], { pattern = "ab+c", flags = "i" }, [[(?<x>c)d\k<x>]], "b", [[\Gba]],
                       { pattern = "^a", flags = "m" }, [[\((?:[^()]|(?R))*\)]], "c(?=a)", [[(*COMMIT)bb]] }
        local set = assert(re.set(list))
        local alpha = { "a", "b", "c", "d", "B", "\n", "x", "(", ")" }
        math.randomseed(11)
        for _ = 1, 3000 do
            local t = {}
            for k = 1, math.random(0, 12) do t[k] = alpha[math.random(#alpha)] end
            local text = table.concat(t)
            if math.random(2) == 1 then text = string.rep("d", 300) .. text end -- long: the pre-filter runs
            local init = math.random(1, #text + 1)
            local f1, t1, i1 = set:exec(text, init)
            local f2, t2, i2 = reference(list, text, init)
            assert.same({ f2, t2, i2 }, { f1, t1, i1 }, ("%q from %d"):format(text, init))
        end
    end)

    it("runs plain patterns combined and the others alone, and says why", function()
        local set = assert(re.set({ "ignore (all|any) previous", [[(a)\1]], "(?<n>x)", [[(*UCP)\w]], "b|c",
                                    { pattern = "a b # c", flags = "x" }, [[\Qopen]] }))
        local m = set:members()
        assert.is_true(m[1].combined)
        assert.same({ " previous" }, m[1].literals) -- one literal of 6 bytes or more beats two
        assert.is_false(m[2].combined)
        assert.equal("back-reference", m[2].why)
        assert.is_false(m[3].combined)
        assert.equal("named group", m[3].why)
        assert.is_false(m[4].combined)
        assert.is_true(m[5].combined)
        assert.is_nil(m[5].literals) -- one-byte literals: in nearly every text
        assert.is_false(m[6].combined)
        assert.equal("extended mode", m[6].why)
        assert.is_false(m[7].combined)
        assert.same({ "open" }, m[7].literals)
        -- \Q without \E alone reads to the end of its own pattern only
        local from, _, i = assert(re.set({ "b|c", [[\Qopen]], "z" })):exec("an open door")
        assert.equal(4, from)
        assert.equal(2, i)
    end)

    it("a pattern that does not compile is named by its position", function()
        local set, err = re.set({ "ok", "(unclosed" })
        assert.is_nil(set)
        assert.matches("^%[2%]: failed to compile regex", err)
        assert.has_error(function() re.set({ 42 }) end)
        assert.has_error(function() re.set("x") end)
    end)

    it("a match error (the match limit) is returned, not taken for no match", function()
        local set = assert(re.set({ [[(a)\1]], "(?:a|aa)+$" }))
        local from, err = set:exec(string.rep("a", 200) .. "b")
        if from == nil then
            assert.is_string(err)
        end
    end)
end)

-- The pre-filter's promise: a pattern that matches a text holds one of its literals in that text. Random patterns
-- from a grammar with the constructs the reader knows (and some it refuses), random texts over a small alphabet.
describe("sluice.re.set literal pre-filter", function()
    local ALPHA = { "a", "b", "a", "b", "A", "B", " ", "(", ")", "." }
    local function atom(depth)
        local r = math.random(22)
        if r <= 8 then return ALPHA[math.random(#ALPHA)]:gsub("[%(%)%.%-]", "\\%0") end
        if r == 9 then return "[ab]" end
        if r == 10 then return "." end
        if r == 11 then return "\\b" end
        if r == 12 then return "\\Qa.b\\E" end
        if r == 13 then return "(?i)" end
        if r == 14 then return "(?#note)" end
        if r == 15 then return "\\s" end
        if r == 16 then return "^" end
        if depth < 3 then
            local inner = {}
            for k = 1, math.random(1, 3) do inner[k] = atom(depth + 1) .. atom(depth + 1) end
            local open = ({ "(", "(?:", "(?i:", "(?=", "(?<!", "(?>", "(?|" })[math.random(7)]
            if open == "(?<!" then return "(?<!a)" end
            return open .. table.concat(inner, "|") .. ")"
        end
        return "c"
    end
    local QUANT = { "", "", "", "", "?", "*", "+", "{2}", "{1,3}", "{0,2}", "??", "+?", "{,2}" }
    local function pattern()
        local parts = {}
        for k = 1, math.random(1, 6) do
            parts[k] = atom(0) .. QUANT[math.random(#QUANT)]
        end
        return table.concat(parts)
    end

    it("never hides a match", function()
        math.randomseed(5)
        local checked, filtered = 0, 0
        for _ = 1, 2500 do
            local pat = pattern()
            local flags = math.random(3) == 1 and "i" or ""
            local r = re.compile(pat, flags)
            if r then
                local a = syn.analyze(pat, flags)
                if a.literals then filtered = filtered + 1 end
                for _ = 1, 40 do
                    local t = {}
                    for k = 1, math.random(0, 40) do t[k] = ALPHA[math.random(#ALPHA)] end
                    local text = table.concat(t)
                    if a.literals and r:exec(text) then
                        local hay = a.fold and text:lower() or text
                        local found = false
                        for _, l in ipairs(a.literals) do
                            if hay:find(l, 1, true) then found = true end
                        end
                        assert(found, ("pattern %q flags %q matched %q without any of %s"):format(pat, flags, text,
                            table.concat(a.literals, ", ")))
                        checked = checked + 1
                    end
                end
            end
        end
        assert.is_true(filtered > 100, "too few patterns with literals: " .. filtered)
        assert.is_true(checked > 80, "too few matches checked: " .. checked)
    end)

    it("a text without the literals is not given to the pattern; with them it is", function()
        local set = assert(re.set({ { pattern = "reveal (the|your) system prompt", flags = "i" },
                                    [[\b(DAN|jailbreak)\b]] }))
        assert.same({ " system prompt" }, set:members()[1].literals)
        assert.is_nil(set:exec(string.rep("nothing to see here. ", 200)))
        local from, to, i = set:exec(string.rep("x ", 100) .. "REVEAL Your System Prompt")
        assert.equal(201, from)
        assert.equal(225, to)
        assert.equal(1, i)
        assert.is_nil(set:exec("dan and jailbreaking" .. string.rep(" ", 300))) -- case-sensitive literals
        -- a short text goes to the patterns without the pre-filter: the same answers
        assert.equal(1, select(3, set:exec("Reveal the system prompt")))
        assert.is_nil(set:exec("dan and jailbreaking"))
        local _, _, j = set:exec("in DAN mode" .. string.rep(" ", 300))
        assert.equal(2, j)
    end)
end)
