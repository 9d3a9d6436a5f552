-- The OpenAI pass-through filter of sluice.ai.stream (OpenAI-wire provider -> OpenAI client) alone: what it
-- forwards for every framing a provider may use, fed in every chunking; what it refuses. (Through the gateway:
-- spec/ai_proxy_spec.lua, spec/ai_stream_faults_spec.lua.)
local stream = require("sluice.ai.stream")
local cjson = require("cjson.safe")

local AI = { include_usage = false, driver = require("sluice.ai.drivers.openai") }

local function chunk(content, extra)
    local t = { id = "c", object = "chat.completion.chunk", choices = { { index = 0, delta = { content = content },
        finish_reason = cjson.null } } }
    for k, v in pairs(extra or {}) do t[k] = v end
    return cjson.encode(t)
end
local FINISH = '{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'
local USAGE = '{"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}'

-- feeds s in pieces of size n (all at once when nil), then closes; returns output, fault, filter
local function run(s, n, ai)
    local p, out = stream.pass_through(ai or AI, 4096), {}
    local f
    local step = n or #s
    for i = 1, #s, step do
        f = p:feed(s:sub(i, i + step - 1), out)
        if f then return table.concat(out), f, p end
    end
    f = p:close(out)
    return table.concat(out), f, p
end

-- the data lines of an output
local function datas(out)
    local list = {}
    for d in out:gmatch("data: ([^\n]*)\n\n") do list[#list + 1] = d end
    return list
end

describe("sluice.ai.stream pass-through", function()
    it("forwards a plain stream byte for byte (usage chunk dropped when not asked), in any chunking", function()
        local s = "data: " .. chunk("a") .. "\n\ndata: " .. chunk("b") .. "\n\ndata: " .. FINISH .. "\n\ndata: " ..
            USAGE .. "\n\ndata: [DONE]\n\n"
        local want = s:gsub("data: " .. USAGE:gsub("%p", "%%%0") .. "\n\n", "")
        for _, n in ipairs({ 1, 2, 3, 7, 64, #s }) do
            local out, f, p = run(s, n)
            assert.is_nil(f)
            assert.equal(want, out, "chunk size " .. n)
            assert.same({ 3, 2 }, { p.usage.prompt_tokens, p.usage.completion_tokens })
        end
        local out = run(s, 5, { include_usage = true, driver = AI.driver })
        assert.equal(s, out)
    end)

    it("other framings come out as one-line data events: CRLF, comments, data without a space, several data lines", function()
        local s = ": keep-alive\r\n\r\ndata:" .. chunk("a") .. "\r\n\r\n" ..
            'data: {"id":"c","choices":[{"index":0,\ndata: "delta":{"content":"b"},"finish_reason":null}]}\n\n' ..
            ": OPENROUTER PROCESSING\n\nevent: message\ndata: " .. chunk("c") .. "\n\n\n\ndata: " .. FINISH ..
            "\n\ndata: [DONE]"
        for _, n in ipairs({ 1, 4, 9, #s }) do
            local out, f = run(s, n)
            assert.is_nil(f, n)
            local text = {}
            for _, d in ipairs(datas(out)) do
                if d ~= "[DONE]" then
                    local t = assert(cjson.decode(d), d)
                    text[#text + 1] = t.choices[1].delta.content or ""
                end
            end
            assert.equal("abc", table.concat(text), "chunk size " .. n)
            assert.is_nil(out:find("PROCESSING", 1, true))
            assert.equal("data: [DONE]\n\n", out:sub(-14))
        end
    end)

    it("a finish reason, then a clean end without [DONE]: whole, [DONE] added", function()
        local out, f = run("data: " .. chunk("a") .. "\n\ndata: " .. FINISH .. "\n\n", 10)
        assert.is_nil(f)
        assert.equal("data: [DONE]\n\n", out:sub(-14))
    end)

    it("faults: no end, half an event, garbage, an error event, an event over the bound; nothing after [DONE]", function()
        local _, f = run("data: " .. chunk("a") .. "\n\n")
        assert.matches("ended before its end", f.message)
        _, f = run("data: " .. chunk("a") .. "\n\ndata: {\"id\":\"c\",\"obj")
        assert.matches("in the middle of an event", f.message)
        _, f = run("data: " .. chunk("a") .. "\n\ndata: <html>502</html>\n\ndata: [DONE]\n\n")
        assert.matches("not JSON", f.message)
        _, f = run("data: " .. chunk("a") .. '\n\ndata: {"error":{"message":"overloaded","type":"server_error"}}\n\n')
        assert.equal("overloaded", f.message)
        assert.is_true(f.provider)
        _, f = run("event: error\ndata: {\"message\":\"x\"}\n\n")
        assert.is_true(f.provider)
        _, f = run("data: " .. chunk(string.rep("x", 5000)) .. "\n\n", 1000)
        assert.matches("larger than 4096 bytes", f.message)
        _, f = run(string.rep("A", 5000), 100) -- no line end at all
        assert.matches("larger than 4096 bytes", f.message)
        local out
        out, f = run("data: " .. FINISH .. "\n\ndata: [DONE]\n\ngarbage that does not matter\n\n")
        assert.is_nil(f)
        assert.is_nil(out:find("garbage", 1, true))
    end)
end)
