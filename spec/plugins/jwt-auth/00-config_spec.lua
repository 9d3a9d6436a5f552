-- jwt-auth config: defaults, keys that must parse, every accepted algorithm needs a key that can check it.
local unit = require("unit_helpers")

local RFC_N = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"

describe("jwt-auth config", function()
    local plugin = unit.load_plugin("jwt-auth")

    it("fills defaults", function()
        local conf = assert(unit.validate(plugin, { secret = "s3cret", algorithms = { "HS256" } }))
        assert.equal("sub", conf.consumer_claim)
        assert.equal("authorization", conf.header)
        assert.is_true(conf.require_exp)
        assert.is_true(conf.require_consumer)
        assert.is_true(conf.hide_credentials)
        assert.equal(0, conf.leeway)
        assert.equal(16384, conf.max_token_size)
        conf = assert(unit.validate(plugin, { secret = "s", algorithms = { "HS256" }, leeway = "30s" }))
        assert.equal(30, conf.leeway)
    end)

    it("refuses an algorithm without a key that can check it, and unknown algorithms", function()
        local _, errs = unit.validate(plugin, { secret = "s3cret" }) -- default algorithms include RS256/ES256
        assert.matches("RS256 needs an RSA key", errs[1].message)
        _, errs = unit.validate(plugin, { algorithms = { "RS256" } })
        assert.matches("RS256 needs an RSA key", errs[1].message)
        _, errs = unit.validate(plugin, { algorithms = { "HS256" }, jwks = { keys = { { kty = "RSA", n = RFC_N, e = "AQAB" } } } })
        assert.matches("HS256 needs `secret`", errs[1].message)
        local _, _, path = unit.validate(plugin, { secret = "s", algorithms = { "none" } })
        assert.equal("algorithms[1]", path)
        assert(unit.validate(plugin, { algorithms = { "RS256" }, jwks = { keys = { { kty = "RSA", n = RFC_N, e = "AQAB" } } } }))
    end)

    it("refuses keys that do not parse, saying which", function()
        local _, errs = unit.validate(plugin, { algorithms = { "RS256" }, public_key = "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n" })
        assert.matches("public_key: not a public key", errs[1].message)
        _, errs = unit.validate(plugin, { algorithms = { "ES256" }, jwks = { keys = { { kty = "EC", crv = "P-256",
            x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5aw" } } } })
        assert.matches("jwks.keys%[1%]: invalid EC key", errs[1].message) -- y changed: not a point of the curve
        _, errs = unit.validate(plugin, { algorithms = { "ES256" }, jwks = { keys = { { kty = "EC", crv = "P-521", x = "AA", y = "AA" } } } })
        assert.matches("unsupported curve", errs[1].message)
        _, errs = unit.validate(plugin, { algorithms = { "RS256" }, jwks = { keys = { { kty = "RSA", n = "!!", e = "AQAB" } } } })
        assert.matches("invalid base64url", errs[1].message)
        _, errs = unit.validate(plugin, { algorithms = { "HS256" }, secret = "%%%", secret_base64 = true })
        assert.matches("secret: not base64", errs[1].message)
    end)
end)
