-- sluice.ai.common.http: what drivers need to address a provider: endpoints, headers, URL encoding.
local type, pairs, tostring, tonumber, setmetatable = type, pairs, tostring, tonumber, setmetatable
local fmt, byte, lower, gsub = string.format, string.byte, string.lower, string.gsub

local _M = {}

--- Parses "scheme://host[:port][/base]" -> {scheme, host, port, base} | nil, err. base has no trailing "/".
local function parse_endpoint(endpoint)
    if type(endpoint) ~= "string" or endpoint == "" then
        return nil, "endpoint is required"
    end
    local scheme, rest = endpoint:match("^(%a[%w+.-]*)://(.+)$")
    if not scheme then
        return nil, "endpoint must look like scheme://host[:port][/path]: " .. endpoint
    end
    scheme = lower(scheme)
    if scheme ~= "http" and scheme ~= "https" then
        return nil, "endpoint scheme must be http or https: " .. endpoint
    end
    local hostport, base = rest:match("^([^/]+)(.*)$")
    if not hostport then return nil, "endpoint has no host: " .. endpoint end
    local host, port = hostport, nil
    if hostport:sub(1, 1) == "[" then -- [v6]:port
        host, port = hostport:match("^(%[.-%])(.*)$")
        port = port and port:match("^:(%d+)$")
    else
        local h, p = hostport:match("^(.-):(%d+)$")
        if h then host, port = h, p end
    end
    port = tonumber(port) or (scheme == "https" and 443 or 80)
    base = (base or ""):gsub("/+$", "")
    return { scheme = scheme, host = host, port = port, base = base }
end

-- Parsed endpoints by string: drivers parse the provider's endpoint on every call (four pattern matches and a
-- gsub), and the strings are the few of the config. Bounded: emptied when it fills up.
local ep_cache, ep_count = {}, 0

--- An endpoint "scheme://host[:port][/base]" -> {scheme, host, port, base} (shared: do not change it), or nil, err.
function _M.parse_endpoint(endpoint)
    local ep = ep_cache[endpoint]
    if ep then
        return ep
    end
    local err
    ep, err = parse_endpoint(endpoint)
    if ep then
        if ep_count >= 256 then
            ep_cache, ep_count = {}, 0
        end
        ep_cache[endpoint], ep_count = ep, ep_count + 1
    end
    return ep, err
end

-- Host header values by endpoint table (the parsed endpoints are shared: one string each, not one per call)
local host_of = setmetatable({}, { __mode = "k" })

--- Host header value for an endpoint (port only when not the scheme's default).
function _M.host_header(ep)
    local h = host_of[ep]
    if h then
        return h
    end
    if (ep.scheme == "https" and ep.port == 443) or (ep.scheme == "http" and ep.port == 80) then
        h = ep.host
    else
        h = ep.host .. ":" .. ep.port
    end
    host_of[ep] = h
    return h
end

--- Case-insensitive header lookup in a {name = value} table (value may be a list: first entry).
function _M.header(headers, name)
    if not headers then return nil end
    local v = headers[name]
    if v == nil then
        local ln = lower(name)
        v = headers[ln]
        if v == nil then
            for k, val in pairs(headers) do
                if type(k) == "string" and lower(k) == ln then v = val break end
            end
        end
    end
    if type(v) == "table" then v = v[1] end
    return v
end

--- Adds provider.options.headers (extra static headers) to h.
function _M.extra_headers(provider, h)
    local extra = provider.options and provider.options.headers
    if type(extra) == "table" then
        for k, v in pairs(extra) do h[k] = v end
    end
    return h
end

--- Percent-encodes s per RFC 3986 (unreserved characters kept).
function _M.urlencode(s)
    return (gsub(tostring(s), "[^%w%-%._~]", function(c) return fmt("%%%02X", byte(c)) end))
end

--- Retry-After (seconds) from response headers, or nil.
function _M.retry_after(headers)
    local ms = tonumber(_M.header(headers, "retry-after-ms"))
    if ms then return ms / 1000 end
    local v = _M.header(headers, "retry-after")
    if v == nil then return nil end
    return tonumber(v) -- HTTP-date form is left to the caller (nil here)
end

return _M
