-- Every provider kind exposes the same driver interface (the ai-proxy runtime codes against it).
local KINDS = { "openai", "azure-openai", "anthropic", "gemini", "deepseek", "openai-compatible", "bedrock", "mock" }

describe("driver interface", function()
    for _, kind in ipairs(KINDS) do
        it(kind, function()
            local d = require("sluice.ai.drivers." .. kind)
            assert.equals(kind, d.kind)
            for _, fn in ipairs({ "build_request", "parse_response", "new_stream", "usage", "parse_error" }) do
                assert.is_function(d[fn], kind .. "." .. fn)
            end
            local s = d.new_stream("chat", {})
            assert.is_function(s.feed)
            assert.is_function(s.finish)
            assert.same({}, s:feed(""))
            -- errors never raise, whatever the body
            for _, body in ipairs({ "", "null", "[]", "{}", "<html>", '{"error":null}' }) do
                local r, e = d.parse_response(500, {}, body, "chat")
                assert.is_nil(r)
                assert.equals(500, e.status)
                assert.is_string(e.message)
                assert.is_string(e.type)
            end
        end)
    end
end)
