-- fuzz_chat_scan: checks of the lean path's scan (sluice.ai.validate.chat_scan, core/common/chat_scan.c) on one
-- fuzz input, a raw request body. Any error raised here is a finding (fuzz_chat_scan aborts with it). When the
-- scan takes the body (for the openai and openai-compatible drivers' refused parameters):
--   * cjson decodes it and validate.request("openai", "chat", t, raw) passes: the lean path never lets through
--     what the decoding path refuses;
--   * model, stream, include_usage and the stop count are the decoded values;
--   * the driver's lean request sends the bytes build_request makes from the decoded table.
local cjson = require("cjson.safe")
local validate = require("sluice.ai.validate")
local type, tostring, error, pairs = type, tostring, error, pairs

local DRIVERS = { openai = require("sluice.ai.drivers.openai"),
                  ["openai-compatible"] = require("sluice.ai.drivers.openai-compatible") }
local PROVIDER = { openai = { kind = "openai", endpoint = "http://up:1", api_key = "k" },
                   ["openai-compatible"] = { kind = "openai-compatible", endpoint = "http://up:1/v1" } }

local function expect(cond, what, raw)
    if not cond then error(what .. " for " .. string.format("%q", raw:sub(1, 400)), 0) end
end

return function(raw)
    for kind, d in pairs(DRIVERS) do
        local provider = PROVIDER[kind]
        local deny, max_stop = d.lean_deny(provider)
        local model, stream, include_usage, stop_n, end_off = validate.chat_scan(raw, deny)
        if model then
            local t = cjson.decode(raw)
            expect(type(t) == "table", "taken but not decoded", raw)
            local ok, err = validate.request("openai", "chat", t, raw)
            expect(ok, "taken but refused: " .. tostring(err), raw)
            expect(t.model == model, "model differs", raw)
            expect((t.stream == true) == stream, "stream differs", raw)
            local so = t.stream_options
            expect((type(so) == "table" and so.include_usage == true) == include_usage, "include_usage differs", raw)
            expect((type(t.stop) == "table" and #t.stop or -1) == stop_n, "stop count differs", raw)
            if not (max_stop and stop_n > max_stop) then
                local req = d.build_request(provider, "chat", t, { stream = stream, include_usage = true, raw = raw })
                local lean, body = d.lean_request(provider, raw, stream, include_usage, end_off)
                expect(req and lean, "no request", raw)
                expect(req.body == body, "upstream bytes differ: " .. tostring(req.body) .. " vs " .. tostring(body),
                    raw)
            end
        end
    end
end
