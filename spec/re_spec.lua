package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local re = require("sluice.pdk.re")

describe("sluice.re", function()
    it("matches with captures and named groups", function()
        local m = re.match("date: 2024-05-17", [[(?<year>\d{4})-(?<month>\d\d)-(\d\d)(x)?]], "jo")
        assert.equal("2024-05-17", m[0])
        assert.equal("2024", m[1])
        assert.equal("05", m[2])
        assert.equal("17", m[3])
        assert.is_false(m[4])
        assert.equal("2024", m.year)
        assert.equal("05", m.month)
        assert.is_nil(re.match("nothing here", [[\d+]]))
    end)

    it("supports flags", function()
        assert.equal("Hello", re.match("say Hello", "hello", "i")[0])
        assert.is_nil(re.match("say Hello", "hello"))
        assert.equal("b", re.match("a\nb", "^b$", "m")[0])
        assert.equal("a\nb", re.match("a\nb", "a.b", "s")[0])
        assert.equal("é", re.match("é", "^.$", "u")[0])
        assert.is_nil(re.match("é", "^.$"))
        assert.equal("ab", re.match("ab", "a b # c", "x")[0])
    end)

    it("advances ctx.pos", function()
        local ctx = { pos = 1 }
        assert.equal("1", re.match("1 2", [[\d]], "o", ctx)[0])
        assert.equal(2, ctx.pos)
        assert.equal("2", re.match("1 2", [[\d]], "o", ctx)[0])
        assert.is_nil(re.match("1 2", [[\d]], "o", ctx))
    end)

    it("returns errors for bad regexes and flags instead of throwing", function()
        local m, err = re.match("x", "(a")
        assert.is_nil(m)
        assert.matches("missing closing parenthesis", err)
        m, err = re.match("x", "x", "q")
        assert.is_nil(m)
        assert.matches("unknown flag", err)
        local from, ferr = re.find("x", "[")
        assert.is_nil(from)
        assert.is_string(ferr)
        local it, gerr = re.gmatch("x", "(")
        assert.is_nil(it)
        assert.is_string(gerr)
        local s, n, serr = re.gsub("x", "(", "y")
        assert.is_nil(s)
        assert.is_nil(n)
        assert.is_string(serr)
        m, err = re.match("\xff", ".", "u")
        assert.is_nil(m)
        assert.matches("UTF%-8", err)
        assert.has_error(function() re.match({}, "x") end)
    end)

    it("finds positions", function()
        assert.same({ 5, 7 }, { re.find("abc 123 456", [[\d+]]) })
        assert.same({ 9, 11 }, { re.find("abc 123 456", [[\d+]], "jo", 8) })
        assert.is_nil(re.find("abc", "x"))
        assert.same({ 1, 0 }, { re.find("abc", "") })
    end)

    it("iterates with gmatch, including empty matches", function()
        local got = {}
        for m in re.gmatch("a1b22c333", [[(\d+)]]) do
            got[#got + 1] = m[1]
        end
        assert.same({ "1", "22", "333" }, got)
        got = {}
        for m in re.gmatch("baaa", "a*") do
            got[#got + 1] = m[0]
        end
        assert.same({ "", "aaa", "" }, got)
        got = {}
        for m in re.gmatch("éé", "", "u") do
            got[#got + 1] = m[0]
        end
        assert.equal(3, #got)
    end)

    it("substitutes with templates", function()
        assert.same({ "x-[1]-2", 1 }, { re.sub("x-1-2", [[(\d)]], "[$1]") })
        assert.same({ "x-[1]-[2]", 2 }, { re.gsub("x-1-2", [[(\d)]], "[${1}]") })
        assert.same({ "k:v $", 1 }, { re.gsub("v=k", [[(?<a>\w)=(?<b>\w)]], "${b}:$1 $$") })
        assert.same({ "-a-b-c-", 4 }, { re.gsub("abc", "x*", "-") })
        assert.same({ "abc", 0 }, { re.gsub("abc", "z", "-") })
        local s, _, err = re.gsub("abc", "b", "$x")
        assert.is_nil(s)
        assert.matches("invalid capturing variable", err)
        s, _, err = re.gsub("abc", "b", "${nope}")
        assert.is_nil(s)
        assert.matches("unknown capture name", err)
    end)

    it("substitutes with a function", function()
        local out, n = re.gsub("hello world", [[(?<w>\w+)]], function(m)
            return m.w:upper() .. #m[0]
        end, "jo")
        assert.equal("HELLO5 WORLD5", out)
        assert.equal(2, n)
    end)

    it("splits", function()
        assert.same({ "a", "b", "c" }, re.split("a, b,c", [[\s*,\s*]]))
        assert.same({ "a", "b,c" }, re.split("a,b,c", ",", nil, 2))
        assert.same({ "a", "b" }, re.split("a,b,,", ","))
        assert.same({ "a", "b", "c" }, re.split("abc", ""))
    end)

    it("reuses cached patterns", function()
        for i = 1, 1000 do
            assert.equal(tostring(i), re.match("n=" .. i, [[n=(\d+)]], "jo")[1])
        end
        for i = 1, 300 do -- overflow the 256-entry cache while a gmatch iterator holds a pattern
            local it = re.gmatch("1 2", [[\d]], "o")
            it()
            re.match("x", "p" .. i, "o")
            assert.equal("2", it()[0])
        end
    end)
end)
