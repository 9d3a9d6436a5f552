-- jwt-auth checks: the published RFC 7515 examples (A.1 HS256, A.2 RS256, A.3 ES256) verify with mbedTLS; a changed
-- byte, another algorithm than the key's, "none", and the claim checks (exp, nbf, iss, aud) are refused.
local unit = require("unit_helpers")
local crypto = require("sluice.crypto")

local PAYLOAD = "eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
local A1 = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9." .. PAYLOAD .. ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
local A1_KEY = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
local A2 = "eyJhbGciOiJSUzI1NiJ9." .. PAYLOAD .. ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
local A2_N = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ"
local A3 = "eyJhbGciOiJFUzI1NiJ9." .. PAYLOAD .. ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
local A3_JWK = { kty = "EC", crv = "P-256", x = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                 y = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" }
local EXP = 1300819380

describe("jwt-auth verification", function()
    local plugin = unit.load_plugin("jwt-auth")
    local hs = assert(unit.validate(plugin, { algorithms = { "HS256" }, secret = A1_KEY, secret_base64 = true }))
    local rs = assert(unit.validate(plugin, { algorithms = { "RS256" },
        jwks = { keys = { { kty = "RSA", kid = "2011-04-29", n = A2_N, e = "AQAB" } } } }))
    local es = assert(unit.validate(plugin, { algorithms = { "ES256" }, jwks = { keys = { A3_JWK } } }))

    it("verifies the RFC 7515 examples (HS256, RS256, ES256)", function()
        for _, case in ipairs({ { hs, A1 }, { rs, A2 }, { es, A3 } }) do
            local claims, why = plugin.verify(case[1], case[2], EXP - 10)
            assert.is_table(claims, why)
            assert.equal("joe", claims.iss)
            assert.is_true(claims["http://example.com/is_root"])
        end
    end)

    it("refuses a token changed by one character, in the payload or the signature", function()
        for _, case in ipairs({ { hs, A1 }, { rs, A2 }, { es, A3 } }) do
            local tok = case[2]
            local dot = tok:find(".", 1, true)
            local bad = tok:sub(1, dot + 5) .. (tok:sub(dot + 6, dot + 6) == "A" and "B" or "A") .. tok:sub(dot + 7)
            assert.same({ nil, "invalid signature" }, { plugin.verify(case[1], bad, EXP - 10) })
            local sig = tok:sub(-4, -4) == "A" and "B" or "A"
            bad = tok:sub(1, -5) .. sig .. tok:sub(-3)
            local claims, why = plugin.verify(case[1], bad, EXP - 10)
            assert.is_nil(claims)
            assert.truthy(why == "invalid signature" or why == "malformed signature", why)
        end
    end)

    it("refuses algorithms the conf does not accept: none, HS256 against RSA keys, ES256 with an RSA conf", function()
        local none = crypto.b64url_encode('{"alg":"none"}') .. "." .. PAYLOAD .. "."
        assert.matches("algorithm none is not accepted", select(2, plugin.verify(rs, none, EXP - 10)))
        -- the classic confusion: an HS256 token signed with the RSA public key as the secret
        local confused = crypto.b64url_encode('{"alg":"HS256"}') .. "." .. PAYLOAD
        confused = confused .. "." .. crypto.b64url_encode(crypto.hmac("SHA256", A2_N, confused))
        assert.matches("HS256 is not accepted", select(2, plugin.verify(rs, confused, EXP - 10)))
        assert.matches("ES256 is not accepted", select(2, plugin.verify(rs, A3, EXP - 10)))
        -- an RS256 conf whose keys do not include the token's signer
        assert.same({ nil, "invalid signature" }, { plugin.verify(es, A3:gsub("^[^.]+", crypto.b64url_encode('{"alg":"ES256","kid":"x"}')), EXP - 10) })
    end)

    it("checks exp (with leeway), nbf, iss and aud", function()
        assert.same({ nil, "token expired" }, { plugin.verify(hs, A1, EXP + 1) })
        local lenient = assert(unit.validate(plugin, { algorithms = { "HS256" }, secret = A1_KEY, secret_base64 = true, leeway = 5 }))
        assert.is_table(plugin.verify(lenient, A1, EXP + 4))
        assert.same({ nil, "token expired" }, { plugin.verify(lenient, A1, EXP + 6) })
        local function tok(claims, key)
            local input = crypto.b64url_encode('{"alg":"HS256"}') .. "." .. crypto.b64url_encode(require("cjson").encode(claims))
            return input .. "." .. crypto.b64url_encode(crypto.hmac("SHA256", key or "k", input))
        end
        local conf = assert(unit.validate(plugin, { algorithms = { "HS256" }, secret = "k", issuer = { "a", "b" }, audience = "gw" }))
        local now = 1000
        assert.is_table(plugin.verify(conf, tok({ exp = 2000, iss = "b", aud = { "x", "gw" } }), now))
        assert.same({ nil, "issuer not accepted" }, { plugin.verify(conf, tok({ exp = 2000, iss = "c", aud = "gw" }), now) })
        assert.same({ nil, "audience not accepted" }, { plugin.verify(conf, tok({ exp = 2000, iss = "a", aud = "other" }), now) })
        assert.same({ nil, "audience not accepted" }, { plugin.verify(conf, tok({ exp = 2000, iss = "a" }), now) })
        assert.same({ nil, "token not valid yet (nbf)" }, { plugin.verify(conf, tok({ exp = 2000, nbf = 1500, iss = "a", aud = "gw" }), now) })
        assert.same({ nil, "the token has no exp" }, { plugin.verify(conf, tok({ iss = "a", aud = "gw" }), now) })
        assert.same({ nil, "exp is not a number" }, { plugin.verify(conf, tok({ exp = "2000", iss = "a", aud = "gw" }), now) })
        assert.same({ nil, "invalid signature" }, { plugin.verify(conf, tok({ exp = 2000, iss = "a", aud = "gw" }, "other"), now) })
    end)

    it("refuses malformed tokens without raising", function()
        for _, t in ipairs({ "", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.", "bm90IGpzb24.e30.AAAA", A1 .. "\n",
                             string.rep("A", 20000) .. ".e30.AA" }) do
            local claims, why = plugin.verify(hs, t, 0)
            assert.is_nil(claims)
            assert.is_string(why)
        end
    end)
end)
