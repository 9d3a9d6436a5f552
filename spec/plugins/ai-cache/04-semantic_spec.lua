-- ai-cache semantic: through the gateway, with an OpenAI-wire embeddings provider played by
-- spec/support/embeddings.js (deterministic trigram embeddings) and the local mock provider answering with the
-- question it got (echo), so a semantic hit shows whose answer it served. The committed pairs
-- (spec/fixtures/semantic_pairs.json): paraphrases above the threshold hit, different questions below it miss.
-- A failing or slow embeddings call is a miss, never an error; the partition keeps different system prompts,
-- models and tenants apart.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local ROOT = helpers.ROOT
local fixture = assert(cjson.decode((assert(helpers.read_file(ROOT .. "/spec/fixtures/semantic_pairs.json")))))

describe("ai-cache semantic (gateway + mock embeddings)", function()
    local gw, emb

    local function ask(text, system, route, headers)
        local body = { model = "demo", temperature = 0,
                       messages = { { role = "system", content = system or "Be brief." }, { role = "user", content = text } } }
        return assert(helpers.http("POST", gw.url("/" .. (route or "sem") .. "/v1/chat/completions"),
            { body = body, headers = headers, timeout = 10 }))
    end
    local function embeddings_calls()
        return assert(helpers.http("GET", emb .. "/__count")).json.embeddings
    end

    setup(function()
        local port = helpers.free_port()
        local p = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/spec/support/embeddings.js") .. " " .. port
            .. " >/dev/null 2>&1")
        assert(helpers.wait_port(port, p, 10))
        emb = "http://127.0.0.1:" .. port
        local function route(id, sem, extra)
            local plugins = { ["ai-proxy"] = { provider = "echo" },
                              ["ai-cache"] = { scope = "consumer", semantic = sem } }
            for k, v in pairs(extra or {}) do plugins[k] = v end
            return { id = id, paths = { "/" .. id .. "/v1/*" }, plugins = plugins }
        end
        gw = helpers.start_gateway({
            node = { workers = 2, shared_dicts = { ["ai-cache"] = "4m" } },
            providers = {
                echo = { kind = "mock", models = { demo = "echo-model" }, options = { echo = true } },
                emb = { kind = "openai-compatible", endpoint = emb .. "/v1", api_key = "k" },
            },
            consumers = { { name = "alice", keys = { "alice-key" } }, { name = "bob", keys = { "bob-key" } } },
            routes = {
                route("sem", { provider = "emb", model = "mock-embed", threshold = fixture.threshold, timeout = 0.5 }),
                route("strict", { provider = "emb", model = "mock-embed" }), -- the default threshold: 0.95
                route("small", { provider = "emb", model = "mock-embed", threshold = fixture.threshold, max_entries = 2 }),
                route("auth", { provider = "emb", model = "mock-embed", threshold = fixture.threshold },
                      { ["key-auth"] = {} }),
            },
        })
    end)

    teardown(helpers.stop_all)

    it("hits paraphrases above the threshold and misses different questions (committed pairs)", function()
        for _, g in ipairs(fixture.groups) do
            local q, para, other = g[1], g[2], g[3]
            local a = ask(q)
            assert.equal("MISS", a.headers["x-sluice-cache"], q)
            assert.equal(q, a.json.choices[1].message.content)
            local b = ask(para)
            assert.equal("HIT", b.headers["x-sluice-cache"], para)
            assert.equal(q, b.json.choices[1].message.content, para) -- the answer to the stored question
            local c = ask(other)
            assert.equal("MISS", c.headers["x-sluice-cache"], other)
            assert.equal(other, c.json.choices[1].message.content)
        end
        -- the default threshold (0.95) is conservative: the same paraphrases miss there
        local g = fixture.groups[1]
        assert.equal("MISS", ask(g[1], nil, "strict").headers["x-sluice-cache"])
        assert.equal("MISS", ask(g[2], nil, "strict").headers["x-sluice-cache"])
        assert.equal("HIT", ask(g[1], nil, "strict").headers["x-sluice-cache"]) -- exact still hits
    end)

    it("keeps partitions apart: another system prompt or another tenant never matches", function()
        assert.equal("MISS", ask("Which plan suits a small team?", "You sell software.").headers["x-sluice-cache"])
        assert.equal("HIT", ask("Which plan suits a small team", "You sell software.").headers["x-sluice-cache"])
        assert.equal("MISS", ask("Which plan suits a small team", "You sell cars.").headers["x-sluice-cache"])
        local alice = { authorization = "Bearer alice-key" }
        local bob = { authorization = "Bearer bob-key" }
        assert.equal("MISS", ask("Where is my invoice?", nil, "auth", alice).headers["x-sluice-cache"])
        assert.equal("HIT", ask("Where is my invoice", nil, "auth", alice).headers["x-sluice-cache"])
        assert.equal("MISS", ask("Where is my invoice", nil, "auth", bob).headers["x-sluice-cache"])
    end)

    it("treats a failing or slow embeddings call as a miss, never an error", function()
        local before = embeddings_calls()
        local r = ask("[fail] please answer")
        assert.equal(200, r.status, r.body)
        assert.equal("MISS", r.headers["x-sluice-cache"])
        assert.equal("HIT", ask("[fail] please answer").headers["x-sluice-cache"]) -- the exact cache still works
        local t0 = os.time()
        local s = ask("[slow] please answer")
        assert.equal(200, s.status)
        assert.equal("MISS", s.headers["x-sluice-cache"])
        assert.equal("[slow] please answer", s.json.choices[1].message.content)
        assert.truthy(os.time() - t0 < 3) -- the 0.5 s timeout, not the provider's 3 s
        assert.truthy(embeddings_calls() > before)
        assert.matches("semantic lookup skipped", gw:log(), 1, true)
    end)

    it("keeps at most max_entries prompts per partition, dropping the oldest", function()
        assert.equal("MISS", ask("alpha question one", nil, "small").headers["x-sluice-cache"])
        assert.equal("MISS", ask("bravo question two", nil, "small").headers["x-sluice-cache"])
        assert.equal("MISS", ask("charlie question three", nil, "small").headers["x-sluice-cache"])
        assert.equal("HIT", ask("charlie question three please", nil, "small").headers["x-sluice-cache"])
        assert.equal("HIT", ask("bravo question two please", nil, "small").headers["x-sluice-cache"])
        -- alpha's prompt left the partition (its exact entry is still there)
        assert.equal("MISS", ask("alpha question one please", nil, "small").headers["x-sluice-cache"])
        assert.equal("HIT", ask("alpha question one", nil, "small").headers["x-sluice-cache"])
    end)
end)
