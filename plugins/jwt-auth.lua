-- jwt-auth: identifies the caller from a JSON Web Token (JWS compact form) and sets ctx.consumer.
--
--   jwt-auth:
--     algorithms: [RS256]                 # accepted `alg`s (default HS256, RS256, ES256); never "none"
--     public_key: "${IDP_PUBLIC_KEY_PEM}" # RS*/ES*: a PEM public key, or
--     jwks: {keys: [{kty: RSA, kid: k1, n: ..., e: AQAB}]}   # keys as JWKs (chosen by the token's kid)
--     secret: "${JWT_SECRET}"             # HS*: the shared secret (secret_base64: true when it is base64)
--     issuer: https://idp.example.com/    # `iss` must be this (or one of a list)
--     audience: sluice                    # `aud` must contain this (or one of a list)
--     leeway: 30s                         # clock skew allowed for exp / nbf
--     consumer_claim: sub                 # the claim naming the consumer
--     groups_claim: groups                # a claim with group names (list, or space-separated string)
--     require_consumer: true              # false: a caller the config does not list becomes {name = claim}
--
-- Signatures are checked through mbedTLS (HS256/384/512: HMAC; RS256/384/512: RSASSA-PKCS1-v1_5; ES256/384:
-- ECDSA P-256/P-384, r||s as JWS writes it). Then exp (required unless `require_exp: false`), nbf, iss and aud.
-- The consumer is the configured consumer named by `consumer_claim`; groups from `groups_claim` that the config
-- defines are added to the consumer's own (roles and limits by group see them). Failures are 401 in the client's
-- API shape (OpenAI, or Anthropic on /v1/messages) saying what was wrong, without echoing the token; a consumer
-- whose roles do not allow the route gets 403. The token header is removed before the request goes upstream
-- (hide_credentials, default true). Runs in rewrite at 2510, just before key-auth.
local sluice = require("sluice")
local crypto = require("sluice.crypto")

local type, ipairs, setmetatable = type, ipairs, setmetatable
local find, sub = string.find, string.sub
local request, consumer, json = sluice.request, sluice.consumer, sluice.json

local ALGS = { "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384" }
local HMAC = { HS256 = "SHA256", HS384 = "SHA384", HS512 = "SHA512" }
local str_or_list = { anyOf = { { type = "string", minLength = 1 },
                                { type = "array", minItems = 1, items = { type = "string", minLength = 1 } } } }

local _M = {
    name = "jwt-auth", version = "1.0", priority = 2510,
    schema = {
        type = "object",
        additionalProperties = false,
        properties = {
            algorithms = { type = "array", minItems = 1, uniqueItems = true, items = { enum = ALGS },
                           default = { "HS256", "RS256", "ES256" } },
            secret = { type = "string", minLength = 1 },
            secret_base64 = { type = "boolean", default = false },
            public_key = { type = "string", minLength = 1 },
            jwks = { type = "object", required = { "keys" }, properties = {
                keys = { type = "array", minItems = 1, items = { type = "object", required = { "kty" } } } } },
            issuer = str_or_list,
            audience = str_or_list,
            leeway = { type = "duration", minimum = 0, maximum = 3600, default = 0 },
            require_exp = { type = "boolean", default = true },
            header = { type = "string", format = "header_name", default = "authorization" },
            consumer_claim = { type = "string", minLength = 1, default = "sub" },
            groups_claim = { type = "string", minLength = 1 },
            require_consumer = { type = "boolean", default = true },
            anonymous = { type = "boolean", default = false },
            hide_credentials = { type = "boolean", default = true },
            max_token_size = { type = "size", minimum = 64, maximum = 1048576, default = 16384 },
        },
    },
}

---------------------------------------------------------------------------------------------------------------
-- keys, parsed once per conf

local keysets = setmetatable({}, { __mode = "k" })

-- {hmac = secret | nil, keys = {{key, kid, kind, bits}}} for a conf, or nil, err.
local function keyset(conf)
    local ks = keysets[conf]
    if ks then
        return ks
    end
    ks = { keys = {} }
    if conf.secret then
        if conf.secret_base64 then
            ks.hmac = crypto.b64_decode(conf.secret) or crypto.b64url_decode(conf.secret)
            if not ks.hmac then
                return nil, "secret: not base64"
            end
        else
            ks.hmac = conf.secret
        end
    end
    if conf.public_key then
        local k, err = crypto.public_key(conf.public_key)
        if not k then
            return nil, "public_key: " .. err
        end
        ks.keys[#ks.keys + 1] = { key = k }
    end
    for i, jwk in ipairs(conf.jwks and conf.jwks.keys or {}) do
        if jwk.use == nil or jwk.use == "sig" then
            local k, err = crypto.public_key_jwk(jwk)
            if not k then
                return nil, "jwks.keys[" .. i .. "]: " .. err
            end
            ks.keys[#ks.keys + 1] = { key = k, kid = type(jwk.kid) == "string" and jwk.kid or nil,
                                      alg = type(jwk.alg) == "string" and jwk.alg or nil }
        end
    end
    keysets[conf] = ks
    return ks
end

--- Config checks: the keys parse, and every accepted algorithm has a key that can check it.
function _M.check(conf)
    local ks, err = keyset(conf)
    if not ks then
        return nil, err
    end
    for _, alg in ipairs(conf.algorithms) do
        if HMAC[alg] then
            if not ks.hmac then
                return nil, "algorithms: " .. alg .. " needs `secret`"
            end
        else
            local kind, found = sub(alg, 1, 2) == "RS" and "RSA" or "EC", false
            for _, k in ipairs(ks.keys) do
                if k.key.kind == kind then found = true end
            end
            if not found then
                return nil, "algorithms: " .. alg .. " needs an " .. kind .. " key (public_key or jwks)"
            end
        end
    end
    return true
end

---------------------------------------------------------------------------------------------------------------
-- the token

local function contains(want, have)
    local wants = type(want) == "table" and want or { want }
    local haves = type(have) == "table" and have or { have }
    for _, w in ipairs(wants) do
        for _, h in ipairs(haves) do
            if w == h then
                return true
            end
        end
    end
    return false
end

--- Verifies a compact JWS against conf at time `now`: claims | nil, why (pure, for specs).
function _M.verify(conf, token, now)
    if #token > conf.max_token_size then
        return nil, "token too large"
    end
    local h64, p64, s64 = token:match("^([%w%-_]+)%.([%w%-_]+)%.([%w%-_]*)$")
    if not h64 then
        return nil, "malformed token (expected three base64url parts)"
    end
    local header = json.decode(crypto.b64url_decode(h64) or "")
    if type(header) ~= "table" then
        return nil, "malformed token header"
    end
    local alg = header.alg
    if type(alg) ~= "string" or not contains(conf.algorithms, alg) then
        return nil, "algorithm " .. (type(alg) == "string" and alg:sub(1, 16) or "?") .. " is not accepted"
    end
    local sig = crypto.b64url_decode(s64)
    if not sig or sig == "" then
        return nil, "malformed signature"
    end
    local ks, kerr = keyset(conf)
    if not ks then
        return nil, kerr
    end
    local signed = h64 .. "." .. p64
    local ok = false
    if HMAC[alg] then
        ok = ks.hmac ~= nil and crypto.equal(crypto.hmac(HMAC[alg], ks.hmac, signed) or "", sig)
    else
        local kind = sub(alg, 1, 2) == "RS" and "RSA" or "EC"
        local kid = type(header.kid) == "string" and header.kid or nil
        for _, k in ipairs(ks.keys) do
            if k.key.kind == kind and (kid == nil or k.kid == nil or k.kid == kid) and (k.alg == nil or k.alg == alg)
                and crypto.verify(k.key, alg, signed, sig) then
                ok = true
                break
            end
        end
    end
    if not ok then
        return nil, "invalid signature"
    end
    local claims = json.decode(crypto.b64url_decode(p64) or "")
    if type(claims) ~= "table" then
        return nil, "malformed claims"
    end
    local leeway = conf.leeway or 0
    local exp, nbf = claims.exp, claims.nbf
    if exp ~= nil and type(exp) ~= "number" then
        return nil, "exp is not a number"
    end
    if exp == nil and conf.require_exp then
        return nil, "the token has no exp"
    end
    if exp and now > exp + leeway then
        return nil, "token expired"
    end
    if nbf ~= nil and (type(nbf) ~= "number" or now + leeway < nbf) then
        return nil, "token not valid yet (nbf)"
    end
    if conf.issuer and not (type(claims.iss) == "string" and contains(conf.issuer, claims.iss)) then
        return nil, "issuer not accepted"
    end
    if conf.audience then
        local aud = claims.aud
        if not (type(aud) == "string" or type(aud) == "table") or not contains(conf.audience, aud) then
            return nil, "audience not accepted"
        end
    end
    return claims
end

-- Group names from the groups claim (a list, or a space-separated string), only those the config defines.
local function claim_groups(conf, ctx, claims)
    local v = conf.groups_claim and claims[conf.groups_claim]
    if v == nil then
        return nil
    end
    local list = {}
    if type(v) == "string" then
        for g in v:gmatch("%S+") do list[#list + 1] = g end
    elseif type(v) == "table" then
        for _, g in ipairs(v) do
            if type(g) == "string" then list[#list + 1] = g end
        end
    end
    local defined = ctx.config and ctx.config.consumer_groups or {}
    local out = {}
    for i = 1, #list do
        if i > 64 then break end
        if defined[list[i]] then out[#out + 1] = list[i] end
    end
    return out
end

local function refuse(ctx, status, msg)
    if find(ctx.path, "/messages$") then
        local typ = status == 401 and "authentication_error" or "permission_error"
        return status, { type = "error", error = { type = typ, message = msg } }
    end
    return status, { error = { message = msg, type = status == 401 and "invalid_request_error" or "permission_error",
                               code = status == 401 and "invalid_token" or "route_not_allowed" } }
end

function _M.rewrite(conf, ctx)
    local raw = request.get_header(conf.header, ctx)
    local token
    if raw then
        token = conf.header == "authorization" and raw:match("^[Bb]earer%s+(%S+)%s*$") or (not find(raw, "%s") and raw)
    end
    if conf.hide_credentials then
        request.clear_header(conf.header, ctx)
    end
    if not token then
        if conf.anonymous then
            return
        end
        return refuse(ctx, 401, "missing token (" .. conf.header .. (conf.header == "authorization"
            and ": Bearer <JWT>)" or ": <JWT>)"))
    end
    local claims, why = _M.verify(conf, token, sluice.time())
    if not claims then
        return refuse(ctx, 401, "invalid token: " .. why)
    end
    local name = claims[conf.consumer_claim]
    if type(name) ~= "string" or name == "" then
        return refuse(ctx, 401, "invalid token: no " .. conf.consumer_claim .. " claim")
    end
    local c = consumer.find(name, ctx)
    if not c then
        if conf.require_consumer then
            return refuse(ctx, 401, "invalid token: unknown consumer")
        end
        c = { name = name, groups = {}, metadata = { claims = claims } }
    end
    consumer.set(c, ctx, claim_groups(conf, ctx, claims))
    ctx.jwt_claims = claims
    local ok, why2 = consumer.allowed("route", ctx.route and ctx.route.id, ctx)
    if not ok then
        return refuse(ctx, 403, why2)
    end
end


return _M
