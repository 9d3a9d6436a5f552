-- sluice.ai.aws: SigV4 signing (published AWS vectors) and the event-stream codec (bytes split anywhere,
-- CRCs, hostile frames).
local sigv4 = require("sluice.ai.aws.sigv4")
local eventstream = require("sluice.ai.aws.eventstream")
local crypto = require("sluice.crypto")
local S = require("ai.support")
local cjson = require("cjson.safe")

local AK, SK = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

describe("sluice.ai.aws", function()
    describe("SigV4", function()
        it("matches the AWS documented IAM ListUsers example", function()
            local req = { method = "GET", path = "/?Action=ListUsers&Version=2010-05-08", body = "",
                headers = { Host = "iam.amazonaws.com",
                    ["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8" } }
            local r = sigv4.sign(req, { access_key = AK, secret_key = SK }, "us-east-1", "iam", "20150830T123600Z")
            assert.equals(table.concat({ "GET", "/", "Action=ListUsers&Version=2010-05-08",
                "content-type:application/x-www-form-urlencoded; charset=utf-8", "host:iam.amazonaws.com",
                "x-amz-date:20150830T123600Z", "", "content-type;host;x-amz-date",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" }, "\n"), r.canonical_request)
            assert.equals("AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n"
                .. "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59", r.string_to_sign)
            assert.equals("c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9", crypto.to_hex(r.signing_key))
            assert.equals("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
                .. "SignedHeaders=content-type;host;x-amz-date, "
                .. "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7", req.headers.Authorization)
        end)

        it("matches the SigV4 test suite get-vanilla, post-vanilla and query-order vectors", function()
            local function sign(method, path)
                local req = { method = method, path = path, body = "", headers = { Host = "example.amazonaws.com" } }
                return sigv4.sign(req, { access_key = AK, secret_key = SK }, "us-east-1", "service",
                    "20150830T123600Z").signature
            end
            assert.equals("5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", sign("GET", "/"))
            assert.equals("5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b", sign("POST", "/"))
            assert.equals("b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
                sign("GET", "/?Param2=value2&Param1=value1"))
        end)

        it("double-encodes path segments (model ids with ':')", function()
            assert.equals("/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse",
                sigv4.canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"))
        end)
    end)

    describe("event-stream decoding", function()
        it("decodes frames split at every byte and checks CRCs", function()
            local data = S.fixture("bedrock/converse_stream.bin")
            local d = eventstream.decoder()
            local msgs = {}
            for i = 1, #data do
                for _, m in ipairs(assert(d:feed(data:sub(i, i)))) do msgs[#msgs + 1] = m end
            end
            assert.equals(6, #msgs)
            assert.equals("messageStart", msgs[1].headers[":event-type"])
            assert.equals("event", msgs[1].headers[":message-type"])
            assert.equals("application/json", msgs[1].headers[":content-type"])
            assert.equals("Hello", cjson.decode(msgs[2].payload).delta.text)
        end)

        it("round-trips its own encoder and rejects corrupted frames", function()
            local m = eventstream.encode({ { ":event-type", "x" } }, "{}")
            local got = assert(eventstream.decoder():feed(m))
            assert.same({ { headers = { [":event-type"] = "x" }, payload = "{}" } }, got)
            local bad = m:sub(1, -2) .. string.char((m:byte(-1) + 1) % 256)
            local r, err = eventstream.decoder():feed(bad)
            assert.is_nil(r)
            assert.matches("CRC", err)
            r, err = eventstream.decoder():feed(string.char(0, 0, 0, 20, 0, 0, 0, 0, 1, 2, 3, 4))
            assert.is_nil(r)
            assert.matches("prelude CRC", err)
        end)

        -- a frame whose CRCs are right but whose header section lies about its contents
        local function frame(hbytes, payload)
            local be32 = function(n)
                return string.char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256,
                    math.floor(n / 256) % 256, n % 256)
            end
            local prelude = be32(12 + #hbytes + #payload + 4) .. be32(#hbytes)
            local msg = prelude .. be32(crypto.crc32(prelude)) .. hbytes .. payload
            return msg .. be32(crypto.crc32(msg))
        end

        it("rejects header values that run past the header section, without raising", function()
            for _, h in ipairs({
                string.char(2) .. "ab" .. string.char(5),                -- int64 with no bytes
                string.char(2) .. "ab" .. string.char(7, 0, 200) .. "x", -- string longer than the section
                string.char(9) .. "ab",                                  -- name longer than the section
                string.char(0),                                          -- empty name
                string.char(2) .. "ab" .. string.char(42),               -- unknown type
            }) do
                local d = eventstream.decoder()
                local ok, r, err = pcall(d.feed, d, frame(h, "{}"))
                assert.is_true(ok, tostring(r))
                assert.is_nil(r)
                assert.matches("event%-stream", err)
            end
        end)

        it("reports a stream cut inside a message at finish", function()
            local d = eventstream.decoder()
            local m = eventstream.encode({ { ":event-type", "x" } }, "{}")
            assert.same({}, d:feed(m:sub(1, 20)))
            local r, err = d:finish()
            assert.is_nil(r)
            assert.matches("inside a message", err)
            assert.same({}, eventstream.decoder():finish())
        end)
    end)
end)
