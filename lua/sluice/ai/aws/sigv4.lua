-- sluice.ai.aws.sigv4: AWS Signature Version 4 for requests to AWS services (Bedrock).
--
--   sigv4.sign(req, creds, region, service, amz_date) -> pieces      (signs req in place)
--   sigv4.canonical_uri(path), sigv4.canonical_query(query)
--
-- Checked against the AWS documented examples and the SigV4 test suite (spec/ai/bedrock_spec.lua).
local crypto = require("sluice.crypto")
local http = require("sluice.ai.common.http")

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local concat, sort = table.concat, table.sort
local sub, char, lower = string.sub, string.char, string.lower
local urlencode = http.urlencode

local _M = {}

local function trim(s)
    return (tostring(s):gsub("^%s+", ""):gsub("%s+$", ""):gsub("%s+", " "))
end

local function uri_decode(s)
    return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

--- Canonical URI for non-S3 services: every segment of the (already encoded) path is encoded again.
function _M.canonical_uri(path)
    if path == "" then return "/" end
    local out = {}
    for seg in (path .. "/"):gmatch("(.-)/") do out[#out + 1] = urlencode(seg) end
    local s = concat(out, "/")
    if sub(path, -1) == "/" and sub(s, -1) ~= "/" then s = s .. "/" end
    return s
end

function _M.canonical_query(q)
    if not q or q == "" then return "" end
    local params = {}
    for pair in q:gmatch("[^&]+") do
        local k, v = pair:match("^([^=]*)=?(.*)$")
        params[#params + 1] = { urlencode(uri_decode(k)), urlencode(uri_decode(v)) }
    end
    sort(params, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
    for i, p in ipairs(params) do params[i] = p[1] .. "=" .. p[2] end
    return concat(params, "&")
end

--- Signs req in place (adds X-Amz-Date, X-Amz-Security-Token, Authorization) and returns the pieces
--- {canonical_request, string_to_sign, signing_key, signature}.
--- req = {method, path (encoded, may hold ?query), headers (must include Host), body}
--- creds = {access_key, secret_key, session_token?}; amz_date = "YYYYMMDDTHHMMSSZ"
--- Signed headers: host, content-type and every x-amz-* header.
function _M.sign(req, creds, region, service, amz_date)
    local h = req.headers
    h["X-Amz-Date"] = amz_date
    if creds.session_token and creds.session_token ~= "" then h["X-Amz-Security-Token"] = creds.session_token end
    local path, query = req.path:match("^([^?]*)%??(.*)$")
    local names, values = {}, {}
    for k, v in pairs(h) do
        local lk = lower(k)
        if lk == "host" or lk == "content-type" or sub(lk, 1, 6) == "x-amz-" then
            if not values[lk] then names[#names + 1] = lk end
            values[lk] = trim(v)
        end
    end
    sort(names)
    local ch = {}
    for i, n in ipairs(names) do ch[i] = n .. ":" .. values[n] .. "\n" end
    local signed = concat(names, ";")
    local payload_hash = crypto.sha256_hex(req.body or "")
    local canonical = concat({ req.method, _M.canonical_uri(path), _M.canonical_query(query), concat(ch), signed,
        payload_hash }, "\n")
    local date = sub(amz_date, 1, 8)
    local scope = date .. "/" .. region .. "/" .. service .. "/aws4_request"
    local sts = "AWS4-HMAC-SHA256\n" .. amz_date .. "\n" .. scope .. "\n" .. crypto.sha256_hex(canonical)
    local k = crypto.hmac_sha256("AWS4" .. creds.secret_key, date)
    k = crypto.hmac_sha256(k, region)
    k = crypto.hmac_sha256(k, service)
    k = crypto.hmac_sha256(k, "aws4_request")
    local signature = crypto.hmac_sha256_hex(k, sts)
    h["Authorization"] = "AWS4-HMAC-SHA256 Credential=" .. creds.access_key .. "/" .. scope
        .. ", SignedHeaders=" .. signed .. ", Signature=" .. signature
    return { canonical_request = canonical, string_to_sign = sts, signing_key = k, signature = signature }
end

--- "YYYYMMDDTHHMMSSZ" for now (a number, a function returning one, or nil: the clock).
function _M.amz_date(now)
    local t = type(now) == "function" and now() or tonumber(now) or os.time()
    return os.date("!%Y%m%dT%H%M%SZ", t)
end

return _M
