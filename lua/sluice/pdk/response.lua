-- sluice.response: what the client gets. Phases: rewrite, access (exit), header_filter (status/headers).
--
--   return sluice.response.exit(403, {error = {message = "forbidden"}})   -- table body -> JSON
--   sluice.response.set_header("x-served-by", "sluice")                    -- added to the client response
--
-- A phase function may also simply `return status, body` to end the request the same way.
local base = require("sluice.pdk.base")
local cjson = require("cjson.safe")

local get_ctx = base.get_ctx
local type, tostring, pairs, lower, error = type, tostring, pairs, string.lower, error

local _M = {}

--- Ends the request with status and body (string, or table sent as JSON); returns status, body so that
--- `return sluice.response.exit(...)` works in a phase function.
function _M.exit(status, body, headers, ctx)
    ctx = ctx or get_ctx()
    if type(status) ~= "number" or status < 100 or status > 599 then
        error("status must be a number between 100 and 599", 2)
    end
    ctx.exit = { status = status, body = body, headers = headers }
    return status, body
end

--- Response status: the upstream's (after header_filter began) or the one set by exit.
function _M.get_status(ctx)
    ctx = ctx or get_ctx()
    return ctx.response and ctx.response.status or (ctx.exit and ctx.exit.status) or nil
end

--- Changes the status sent to the client (header_filter).
function _M.set_status(status, ctx)
    ctx = ctx or get_ctx()
    if not ctx.response then
        error("set_status is for header_filter", 2)
    end
    if type(status) ~= "number" or status < 100 or status > 599 or status % 1 ~= 0 then
        error("status must be an integer between 100 and 599", 2)
    end
    ctx.response.status = status
end

--- A response header (from the upstream, or set by a plugin).
function _M.get_header(name, ctx)
    ctx = ctx or get_ctx()
    local lname = lower(name)
    local add = ctx.resp_headers
    if add and add[lname] ~= nil then
        return add[lname] or nil
    end
    return ctx.response and ctx.response.headers[lname] or nil
end

--- Sets (nil removes) a header on the client response; works in every phase before the head is sent. Raises for
--- a name that is not a token or a value with CR, LF or NUL.
function _M.set_header(name, value, ctx)
    ctx = ctx or get_ctx()
    if value == nil then
        base.check_header(name, "", 2)
    else
        value = base.check_header(name, value, 2)
    end
    ctx.resp_headers = ctx.resp_headers or {}
    ctx.resp_headers[lower(name)] = value ~= nil and value or false
end

--- Encodes a header table into "Name: value\r\n" lines, merging plugin-set headers (skips framing ones); returns
--- the lines and their number. Names and values go as they are: what header_filter plugins put in
--- ctx.response.headers is checked in C when the head is written (sl_resp_send / sl_resp_start, given the
--- number: a value with CR LF in it would make more lines), and a bad one gets the client a 500 with an error
--- id, never onto the wire.
local framing = { ["content-length"] = true, ["transfer-encoding"] = true, connection = true,
                  ["keep-alive"] = true, date = true, server = true }
function _M.header_lines(headers, extra)
    local out, n = {}, 0
    if headers then
        for k, v in pairs(headers) do
            if not framing[k] and not (extra and extra[k] ~= nil) then
                -- header_filter plugins may have put anything in ctx.response.headers
                if type(v) == "table" then
                    for i = 1, #v do
                        n = n + 1
                        out[n] = k .. ": " .. tostring(v[i]) .. "\r\n"
                    end
                else
                    n = n + 1
                    out[n] = k .. ": " .. tostring(v) .. "\r\n"
                end
            end
        end
    end
    if extra then
        for k, v in pairs(extra) do
            if v and not framing[k] then
                n = n + 1
                out[n] = k .. ": " .. v .. "\r\n"
            end
        end
    end
    return table.concat(out, "", 1, n), n
end

--- Turns an exit body into bytes and a content type.
function _M.encode_body(body)
    if body == nil then
        return "", nil
    end
    if type(body) == "table" then
        return cjson.encode(body) or "{}", "application/json"
    end
    return tostring(body), nil
end

return _M
