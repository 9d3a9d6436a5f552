local tokens = require("sluice.ai.tokens")

-- "tiktoken is great!" = 6 tokens is the cl100k example from the tiktoken README; the prose reference (27) is a
-- hand count of cl100k's word-level splits (one token per common word with its leading space, one per
-- punctuation mark). The estimate must stay within the documented tolerance of those.
local function within(expected, got, tolerance)
    return math.abs(got - expected) <= math.max(1, expected * tolerance)
end

describe("sluice.ai.tokens (estimate)", function()
    it("counts nothing for empty input", function()
        assert.equals(0, tokens.count_text(""))
        assert.equals(0, tokens.count_text(nil))
    end)

    it("is close on short English prose", function()
        assert.equals(1, tokens.count_text("hello"))
        assert.equals(2, tokens.count_text("hello world"))
        -- "tiktoken is great!" -> 6 tokens in cl100k
        assert.is_true(within(6, tokens.count_text("tiktoken is great!"), 0.35))
        local prose = "The quick brown fox jumps over the lazy dog. It was a bright cold day in April, "
            .. "and the clocks were striking thirteen."
        -- ~27 tokens in cl100k
        assert.is_true(within(27, tokens.count_text(prose), 0.15), tostring(tokens.count_text(prose)))
    end)

    it("groups digits by three and counts CJK per character", function()
        assert.equals(3, tokens.count_text("1234567"))
        assert.equals(4, tokens.count_text("你好世界"))
    end)

    it("counts chat messages with the cookbook overheads", function()
        local n = tokens.count_messages({ { role = "system", content = "hello world" }, { role = "user", content = "hello" } })
        assert.equals(3 + (3 + 2) + (3 + 1), n)
        local with_tools = tokens.count_messages({ { role = "user", content = "hi" } },
            { { type = "function", ["function"] = { name = "get_weather", parameters = { type = "object" } } } })
        assert.is_true(with_tools > tokens.count_messages({ { role = "user", content = "hi" } }))
    end)

    it("counts requests per operation", function()
        assert.equals(2, tokens.count_request("embeddings", { input = "hello world" }))
        assert.equals(3, tokens.count_request("embeddings", { input = { "hello", "hello world" } }))
        assert.equals(1, tokens.count_request("completions", { prompt = "hello" }))
        assert.is_true(tokens.count_request("chat", { messages = { { role = "user", content = "hi" } } }) > 0)
    end)
end)
