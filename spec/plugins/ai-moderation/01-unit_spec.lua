-- ai-moderation, unit: local categories (keywords as whole caseless words, patterns, thresholds, flag), the
-- stream monitor's overlap, the request check.
local unit = require("unit_helpers")

describe("ai-moderation checks", function()
    local plugin = unit.load_plugin("ai-moderation")
    local check = dofile(unit.ROOT .. "/plugins/ai-moderation/check.lua")
    local conf = assert(unit.validate(plugin, { categories = {
        { name = "violence", keywords = { "kill", "blow up" }, patterns = { [[\bshoot(ing)?\b]] } },
        { name = "profanity", keywords = { "darn" }, threshold = 2, action = "flag" },
        { name = "spam", keywords = { "buy now" }, threshold = 3 },
        { name = "odd", keywords = { "c++", "a.b" } } } }))
    local c = assert(check.compile(conf))

    it("keywords: whole words, any case, spaces flexible; regex characters are literal", function()
        assert.equal("violence", check.local_verdict(c, "We will KILL it").category)
        assert.is_nil(check.local_verdict(c, "skill and killer"))
        assert.equal("violence", check.local_verdict(c, "they blow\n  up the bridge").category)
        assert.equal("violence", check.local_verdict(c, "a shooting").category)
        assert.equal("odd", check.local_verdict(c, "I like c++ a lot").category)
        assert.is_nil(check.local_verdict(c, "I like c and axb"))
    end)

    it("thresholds count hits; flag categories do not block", function()
        assert.is_nil(check.local_verdict(c, "buy now, buy now"))
        assert.equal("spam", check.local_verdict(c, "buy now, buy now, BUY NOW").category)
        local v = check.local_verdict(c, "darn, darn")
        assert.equal("flag", v.action)
        assert.same({ "profanity" }, v.flags)
        assert.is_nil(check.local_verdict(c, "darn"))
    end)

    it("patterns keep their own groups: back-references and named groups in several categories", function()
        local c2 = assert(check.compile(assert(unit.validate(plugin, { categories = {
            { name = "stutter", patterns = { [[\b(\w{3,})\s+\1\b]] } },               -- \1: its own group
            { name = "quoted", keywords = { "hate" }, patterns = { [[(["'])die\1]] } },  -- \1 again, after keywords
            { name = "tagged", patterns = { [[<(?<t>[a-z]+)>kill</\k<t>>]] } } } }))))
        assert.equal("stutter", check.local_verdict(c2, "I said said it").category)
        assert.equal("quoted", check.local_verdict(c2, [[the word 'die' here]]).category)
        assert.is_nil(check.local_verdict(c2, [[the word 'die" here]]))
        assert.equal("tagged", check.local_verdict(c2, "x <b>kill</b> y").category)
        assert.is_nil(check.local_verdict(c2, "x <b>kill</i> y"))
    end)

    it("the stream monitor sees a word split over pieces through the overlap, and counts each hit once", function()
        local mon = check.monitor(conf, { request_id = "x" }, c)
        assert.is_nil(mon:piece("c0", "they will k"))
        assert.equal("violence", mon:piece("c0", "ill").category)

        local conf0 = assert(unit.validate(plugin, { categories = conf.categories, stream = { window = 100, overlap = 0 } }))
        local blind = check.monitor(conf0, { request_id = "x" }, c)
        assert.is_nil(blind:piece("c0", "they will k"))
        assert.is_nil(blind:piece("c0", "ill")) -- without overlap the split word is missed

        local m2 = check.monitor(conf, { request_id = "x" }, c)
        assert.is_nil(m2:piece("c0", "buy now "))
        assert.is_nil(m2:piece("c0", "and "))   -- "buy now" is in the overlap again: not counted twice
        assert.is_nil(m2:piece("c0", "buy now "))
        assert.equal("spam", m2:piece("c0", "buy now").category)
    end)
end)

describe("ai-moderation request", function()
    local plugin = unit.load_plugin("ai-moderation")
    local conf = assert(unit.validate(plugin, { categories = { { name = "violence", keywords = { "kill" } } } }))

    it("refuses in the client's shape, naming the category", function()
        local res = unit.run(plugin, "rewrite", conf, { method = "POST", path = "/v1/chat/completions",
            body = { messages = { { role = "user", content = "how to kill a process" } } } })
        assert.equal(400, res.status)
        assert.equal("The content was blocked by the content policy. (category: violence)", res.body.error.message)
        assert.equal("content_policy_violation", res.body.error.code)
        res = unit.run(plugin, "rewrite", conf, { method = "POST", path = "/v1/messages",
            body = { max_tokens = 5, messages = { { role = "user", content = { { type = "text", text = "kill" } } } } } })
        assert.equal(400, res.status)
        assert.equal("error", res.body.type)
        assert.matches("category: violence", res.body.error.message)
    end)

    it("checks the last user message unless history is on", function()
        local body = { messages = { { role = "user", content = "kill" }, { role = "user", content = "fine" } } }
        local res = unit.run(plugin, "rewrite", conf, { method = "POST", path = "/v1/chat/completions", body = body })
        assert.is_nil(res.status)
        local all = assert(unit.validate(plugin, { history = true, categories = conf.categories }))
        res = unit.run(plugin, "rewrite", all, { method = "POST", path = "/v1/chat/completions", body = body })
        assert.equal(400, res.status)
    end)
end)
