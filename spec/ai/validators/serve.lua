-- The strict validators as a line protocol, for tests/mock/providers.js (strict mode): one JSON object per
-- line in, {id, kind, req = {method, path, headers, body (the JSON text)}}; one line out, {id, errors = [...]}
-- (an empty list: the provider would take the request). Run as `luajit spec/ai/validators/serve.lua`.
local dir = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local root = dir .. "/../../.."
package.path = root .. "/spec/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path

local cjson = require("cjson.safe")
local V = require("ai.validators")

io.stdout:setvbuf("line")
for line in io.stdin:lines() do
    local msg = cjson.decode(line)
    local out
    if type(msg) ~= "table" or type(msg.req) ~= "table" then
        out = { id = type(msg) == "table" and msg.id or cjson.null, errors = { "validator: bad request line" } }
    else
        local ok, errs = pcall(V.check, msg.kind, msg.req)
        if not ok then errs = { "validator raised: " .. tostring(errs) } end
        out = { id = msg.id, errors = errs }
    end
    local s = cjson.encode(out)
    if #out.errors == 0 then s = s:gsub('"errors":{}', '"errors":[]') end
    io.stdout:write(s, "\n")
end
