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
end)
