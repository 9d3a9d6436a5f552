local sse = require("sluice.ai.sse")

describe("sluice.ai.sse", function()
    it("parses named events with data", function()
        local p = sse.parser()
        local evs = p:feed("event: ping\ndata: {\"type\": \"ping\"}\n\n")
        assert.same({ { event = "ping", data = '{"type": "ping"}' } }, evs)
    end)

    it("handles bytes split anywhere, CRLF and lone CR line endings", function()
        local stream = "event: a\r\ndata: 1\r\n\r\ndata: 2\r\rdata:3\n\n: comment\n\nid: 7\ndata: x\ndata: y\n\n"
        for size = 1, 7 do
            local p = sse.parser()
            local got = {}
            for i = 1, #stream, size do
                for _, e in ipairs(p:feed(stream:sub(i, i + size - 1))) do got[#got + 1] = e end
            end
            assert.same({
                { event = "a", data = "1" },
                { data = "2" },
                { data = "3" },
                { data = "x\ny", id = "7" },
            }, got, "chunk size " .. size)
        end
    end)

    it("keeps the last event id and parses retry", function()
        local p = sse.parser()
        local evs = p:feed("retry: 3000\nid: 1\ndata: a\n\ndata: b\n\n")
        assert.equals(3000, evs[1].retry)
        assert.equals("1", evs[2].id)
    end)

    it("ignores events without data and a field without colon", function()
        local p = sse.parser()
        assert.same({}, p:feed("event: nothing\n\ndata\n"))
        assert.same({ { data = "" } }, p:feed("\n"))
    end)

    it("finish() flushes an unterminated last event", function()
        local p = sse.parser()
        assert.same({}, p:feed("data: [DONE]"))
        assert.same({ { data = "[DONE]" } }, p:finish())
    end)

    it("encodes events, splitting multi-line data", function()
        assert.equals("event: message_stop\ndata: {}\n\n", sse.encode({ event = "message_stop", data = "{}" }))
        assert.equals("data: a\ndata: b\n\n", sse.encode({ data = "a\nb" }))
        local p = sse.parser()
        assert.same({ { event = "e", data = "a\nb", id = "9" } }, p:feed(sse.encode({ event = "e", id = "9", data = "a\r\nb" })))
    end)
    it("joins a line split over many feeds, and splits many events in one feed, the same as fed whole", function()
        local long = string.rep("x", 100000)
        local stream = "data: " .. long .. "\n\n" .. string.rep("data: {\"a\":1}\n\n", 500) .. "event: e\r\ndata: z\r\n\r\n"
        local whole = sse.parser():feed(stream)
        assert.equal(502, #whole)
        assert.equal(long, whole[1].data)
        math.randomseed(7)
        for _ = 1, 20 do
            local p, got, i = sse.parser(), {}, 1
            while i <= #stream do
                local n = math.random(1, 3000)
                for _, e in ipairs(p:feed(stream:sub(i, i + n - 1))) do got[#got + 1] = e end
                i = i + n
            end
            assert.same(whole, got)
        end
    end)

    it("stops at a line longer than max_size, even one that never ends", function()
        local p = sse.parser({ max_size = 1000 })
        assert.same({ { data = "ok" } }, p:feed("data: ok\n\n" .. string.rep("A", 600)))
        assert.is_nil(p.err)
        assert.same({}, p:feed(string.rep("A", 600))) -- 1200 bytes without a line end
        assert.matches("a line larger than 1000 bytes", p.err, 1, true)
        assert.same({}, p:feed("\n\ndata: later\n\n"))
        assert.same({}, p:finish())
        -- a long line that comes in one piece
        p = sse.parser({ max_size = 1000 })
        assert.same({}, p:feed("data: " .. string.rep("A", 2000) .. "\n\n"))
        assert.is_string(p.err)
    end)

    it("stops at an event whose data lines add up past max_size", function()
        local p = sse.parser({ max_size = 1000 })
        local evs = p:feed("data: a\n\n" .. string.rep("data: " .. string.rep("b", 99) .. "\n", 9) .. "\n")
        assert.equal(2, #evs) -- 9 lines of 100 bytes: under the bound
        evs = p:feed(string.rep("data: " .. string.rep("b", 99) .. "\n", 11) .. "\n")
        assert.same({}, evs)
        assert.matches("an event larger than 1000 bytes", p.err, 1, true)
        -- empty data lines count too (each joins with a line end)
        p = sse.parser({ max_size = 1000 })
        assert.same({}, p:feed(string.rep("data\n", 2000)))
        assert.is_string(p.err)
    end)

    it("set_max_size changes the bound of a parser made with the default", function()
        local p = sse.parser()
        assert.equal(sse.DEFAULT_MAX_SIZE, p.max)
        p:set_max_size(10)
        p:feed("data: 0123456789abc")
        assert.is_string(p.err)
    end)

    it("pending() tells how many bytes wait for their line end", function()
        local p = sse.parser()
        p:feed("data: {\"id\":\"chatcmpl-1\",\"obj")
        assert.equal(29, p:pending())
        p:feed("ect\":1}\n")
        assert.equal(0, p:pending())
    end)
end)
