-- ai-rag against the real gateway: `sluice rag build` over a folder, the prompt the upstream receives (OpenAI and
-- Anthropic clients), the sources header, index files replaced by good, corrupt and truncated ones, rebuild
-- through the Admin API, and an external retrieval endpoint.
local helpers = require("helpers")
local unit = require("unit_helpers")
local cjson = require("cjson.safe")

local DOCS = {
    ["security.md"] = "# Security\n\nHow the service is protected.\n\n## Key rotation\n\n"
        .. "API keys are rotated every 90 days with the keyctl rotate command; the old key stays valid for one day.\n\n"
        .. "## Audit log\n\nEvery admin action is written to the audit log, kept for seven years.\n",
    ["billing.md"] = "---\nteam: finance\n---\n# Billing\n\n## Refunds\n\nRefunds are paid within 14 days to the original card. "
        .. "Invoices are sent on the first day of each month.\n",
    ["ops/backups.txt"] = "Backups run nightly at 02:00 UTC to the cold storage bucket and are kept for 35 days.\n",
}

describe("ai-rag (gateway)", function()
    local mock, retr, gw, dir, idx_file, oa_port

    local function build_index(extra, name)
        local code, out = helpers.exec(string.format("SLUICE_HOME=%s %s rag build -c %s %s %s",
            helpers.shell_quote(helpers.ROOT), helpers.shell_quote(helpers.BIN), helpers.shell_quote(gw.file),
            extra or "", name or "docs"), 60)
        assert(code == 0, out)
        return out
    end

    local function chat(path, body, headers)
        local res = assert(helpers.http("POST", gw.url(path), { body = body, headers = headers }))
        assert.equal(200, res.status, res.body)
        return res, assert(cjson.decode(mock:last().body))
    end

    local function ask(q)
        return chat("/v1/chat/completions", { model = "m", messages = { { role = "user", content = q } } })
    end

    setup(function()
        dir = helpers.tmpdir()
        os.execute("mkdir -p " .. helpers.shell_quote(dir .. "/docs/ops"))
        for name, text in pairs(DOCS) do helpers.write_file(dir .. "/docs/" .. name, text) end
        idx_file = dir .. "/docs.idx"
        mock = helpers.mock_upstream({ body = unit.chat_completion("ok"), headers = { ["content-type"] = "application/json" } })
        retr = helpers.mock_upstream({ headers = { ["content-type"] = "application/json" }, body = {
            data = { matches = {
                { doc = { body = "The VPN endpoint is vpn.example.com.", path = "wiki/vpn.md", title = "VPN" }, sim = 0.91 },
                { doc = { body = "Unrelated low score text.", path = "wiki/x.md", title = "X" }, sim = 0.2 } } } } })
        oa_port = helpers.free_port() -- an OpenAI-style embeddings provider over HTTP (tests/mock/providers.js)
        local p = helpers.spawn(string.format("node %s %d > /dev/null 2>&1",
            helpers.shell_quote(helpers.ROOT .. "/tests/mock/providers.js"), oa_port))
        assert(helpers.wait_port(oa_port, p, 10))
        local index = { name = "docs", file = idx_file, source = dir .. "/docs", provider = "emb", chunk_size = 300,
                        overlap = 40 }
        gw = helpers.start_gateway({
            providers = { emb = { kind = "mock" },
                          oaemb = { kind = "openai", endpoint = "http://127.0.0.1:" .. oa_port, api_key = "sk-emb",
                                    models = { ["text-embedding-3-small"] = "text-embedding-3-small" } } },
            upstreams = { llm = { nodes = { mock.addr } } },
            routes = {
                { id = "rag", paths = { "/v1/chat/completions", "/v1/messages" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 2, check_interval = 0.1 } } },
                { id = "user", paths = { "/user/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 1, placement = "user_before", mode = "bm25",
                                             query_field = "search", chunk_template = "<{{n}}|{{source}}>{{text}}",
                                             template = "CONTEXT {{context}} END" } } },
                { id = "tiny", paths = { "/tiny/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 3, budget_tokens = 40 } } },
                { id = "missing", paths = { "/missing/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = { name = "nothing", file = dir .. "/none.idx",
                                                       source = dir .. "/docs", provider = "emb" } } } },
                { id = "strict", paths = { "/strict/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { on_error = "fail", index = { name = "nothing", file = dir .. "/none.idx",
                                                       source = dir .. "/docs", provider = "emb" } } } },
                { id = "http", paths = { "/http/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = { name = "httpdocs", file = dir .. "/http.idx",
                      source = dir .. "/docs", provider = "oaemb", model = "text-embedding-3-small" } } } },
                { id = "flt", paths = { "/flt/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 4, filter = { sources = { "ops/*" } } } } },
                { id = "meta", paths = { "/meta/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 4, mode = "bm25",
                                             filter = { meta = { team = "finance" } } } } },
                { id = "dims", paths = { "/dims/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = { name = "docs8", file = idx_file, source = dir .. "/docs",
                      provider = "oaemb", model = "text-embedding-3-small" } } } },
                { id = "brk", paths = { "/brk/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = { name = "broken", file = dir .. "/broken.idx",
                                                       source = dir .. "/docs", provider = "nope" } } } },
                { id = "fuse", paths = { "/fuse/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 1, weights = { bm25 = 2, dense = 0.5 },
                                             chunk_template = "<{{score}}>", template = "{{context}}" } } },
                { id = "rrf", paths = { "/rrf/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 1, fusion = "rrf", rrf_k = 10,
                                             weights = { bm25 = 2, dense = 0.5 },
                                             chunk_template = "<{{score}}>", template = "{{context}}" } } },
                { id = "ext", paths = { "/ext/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { min_score = 0.5, retrieval = {
                      url = retr.url("/search"), headers = { authorization = "Bearer vdb" },
                      body = { q = "{{query}}", limit = "{{k}}", ns = "prod" },
                      results = "data.matches", text = "doc.body", source = "doc.path", heading = "doc.title",
                      score = "sim" } } } },
            },
        })
        build_index()
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("puts the best chunks with numbered citations into an OpenAI system prompt", function()
        local res, got = ask("How often are API keys rotated?")
        assert.equal("ok", res.json.choices[1].message.content)
        local sys = got.messages[1]
        assert.equal("system", sys.role)
        assert.truthy(sys.content:find("[1] security.md (Security > Key rotation)", 1, true), sys.content)
        assert.truthy(sys.content:find("rotated every 90 days with the keyctl rotate command", 1, true))
        assert.truthy(sys.content:find("cite the sources", 1, true))
        assert.same({ role = "user", content = "How often are API keys rotated?" }, got.messages[2])
        assert.truthy(res.headers["x-sluice-rag-sources"]:find("[1] security.md#Security > Key rotation", 1, true),
            res.headers["x-sluice-rag-sources"])
    end)

    it("merges into the client's system prompt (OpenAI) and Anthropic's top-level system", function()
        local _, got = chat("/v1/chat/completions", { messages = {
            { role = "system", content = "Be brief." }, { role = "user", content = "When do backups run?" } } })
        assert.equal(2, #got.messages)
        assert.truthy(got.messages[1].content:find("^Answer with the help"), got.messages[1].content)
        assert.truthy(got.messages[1].content:find("[1] ops/backups.txt", 1, true), got.messages[1].content)
        assert.truthy(got.messages[1].content:find("\n\nBe brief.$"))

        local res
        res, got = chat("/v1/messages", { model = "claude", max_tokens = 5, system = "client rules",
            messages = { { role = "user", content = { { type = "text", text = "How fast are refunds paid?" } } } } })
        assert.truthy(got.system:find("[1] billing.md (Billing > Refunds)", 1, true), got.system)
        assert.truthy(got.system:find("within 14 days", 1, true))
        assert.truthy(got.system:find("\n\nclient rules$"))
        assert.equal(1, #got.messages)
        assert.truthy(res.headers["x-sluice-rag-sources"]:find("billing.md", 1, true))
    end)

    it("uses a query field, a user-message placement and its own templates", function()
        local _, got = chat("/user/v1/chat/completions", { search = "audit log retention", messages = {
            { role = "system", content = "S" }, { role = "user", content = "how long?" } } })
        assert.is_nil(got.search)
        assert.equal(3, #got.messages)
        assert.equal("user", got.messages[2].role)
        assert.truthy(got.messages[2].content:find("^CONTEXT <1|security.md>"), got.messages[2].content)
        assert.truthy(got.messages[2].content:find("seven years%. END$"), got.messages[2].content)
        assert.same({ role = "user", content = "how long?" }, got.messages[3])
    end)

    it("searches only the sources and metadata a filter lets through", function()
        local q = { messages = { { role = "user", content = "How often are API keys rotated? When do backups run? refunds" } } }
        local res, got = chat("/flt/v1/chat/completions", q)
        local sys = got.messages[1].content
        assert.truthy(sys:find("ops/backups.txt", 1, true), sys)
        assert.falsy(sys:find("security.md", 1, true) or sys:find("billing.md", 1, true), sys)
        assert.falsy(res.headers["x-sluice-rag-sources"]:find("security", 1, true))
        res, got = chat("/meta/v1/chat/completions", q)
        sys = got.messages[1].content
        assert.equal("[1] billing.md#Billing > Refunds", res.headers["x-sluice-rag-sources"])
        assert.truthy(sys:find("[1] billing.md (Billing > Refunds)", 1, true), sys)
        assert.falsy(sys:find("security.md", 1, true) or sys:find("ops/", 1, true), sys)
    end)

    it("keeps the context within the token budget", function()
        local _, got = ask("How often are API keys rotated?")
        local full = #got.messages[1].content
        _, got = chat("/tiny/v1/chat/completions", { messages = { { role = "user", content = "How often are API keys rotated?" } } })
        local tiny = got.messages[1].content
        assert.truthy(#tiny < full, tiny)
        assert.truthy(#tiny <= 40 * 5, tiny)
        assert.truthy(tiny:find("[1]", 1, true), tiny)
    end)

    it("serves without context when the index is missing, or fails with on_error: fail", function()
        local _, got = chat("/missing/v1/chat/completions", { messages = { { role = "user", content = "keys?" } } })
        assert.same({ { role = "user", content = "keys?" } }, got.messages)
        local res = assert(helpers.http("POST", gw.url("/strict/v1/chat/completions"),
            { body = { messages = { { role = "user", content = "keys?" } } } }))
        assert.equal(503, res.status)
        assert.truthy(gw:log():find("none.idx", 1, true))
    end)

    it("refuses a corrupt or truncated index file and keeps serving the previous one", function()
        local good = assert(helpers.read_file(idx_file))
        local _, first = ask("How often are API keys rotated?") -- the index is served (loaded) before it is damaged
        assert.truthy(first.messages[1].content:find("keyctl rotate", 1, true))
        local function replace(bytes)
            helpers.write_file(idx_file .. ".new", bytes)
            assert(os.rename(idx_file .. ".new", idx_file))
        end
        -- one flipped byte in the body: the checksum catches it
        local flipped = good:sub(1, #good - 100) .. string.char((good:byte(#good - 99) + 1) % 256) .. good:sub(#good - 98)
        for _, bad in ipairs({ flipped, good:sub(1, math.floor(#good / 2)), "not an index" }) do
            replace(bad)
            helpers.wait_until(function()
                local r = gw:admin("GET", "/admin/rag/docs")
                return r and r.status == 200 and r.json.error ~= nil
            end, 5, "the refused file is reported")
            local res, got = ask("How often are API keys rotated?")
            assert.truthy(got.messages[1].content:find("keyctl rotate", 1, true))
            assert.truthy(res.headers["x-sluice-rag-sources"])
            replace(good) -- a good file again (another inode): served, the error cleared
            helpers.wait_until(function()
                local r = gw:admin("GET", "/admin/rag/docs")
                return r and r.status == 200 and r.json.error == nil
            end, 5, "the good file is served again")
        end
        local r = gw:admin("GET", "/admin/rag/docs")
        assert.equal(3, r.json.sources)
        assert.truthy(gw:log():find("the new file is refused, the previous index keeps serving", 1, true))
    end)

    it("keeps serving when the served file is written over in place or cut short", function()
        local good = assert(helpers.read_file(idx_file))
        local _, first = ask("How often are API keys rotated?")
        assert.truthy(first.messages[1].content:find("keyctl rotate", 1, true))
        -- same inode: a file the gateway had only mapped would change (or vanish: SIGBUS) under the search
        local f = assert(io.open(idx_file, "r+b"))
        f:write(string.rep("\255", #good))
        f:close()
        for _ = 1, 5 do
            local res, got = ask("How often are API keys rotated?")
            assert.equal(200, res.status)
            assert.truthy(got.messages[1].content:find("keyctl rotate", 1, true))
        end
        f = assert(io.open(idx_file, "wb")) -- truncated to nothing, then a short write
        f:write("SLRAG")
        f:close()
        for _ = 1, 5 do
            local res, got = ask("How often are API keys rotated?")
            assert.equal(200, res.status)
            assert.truthy(got.messages[1].content:find("keyctl rotate", 1, true))
        end
        helpers.write_file(idx_file .. ".new", good)
        assert(os.rename(idx_file .. ".new", idx_file))
        helpers.wait_until(function()
            local r = gw:admin("GET", "/admin/rag/docs")
            return r and r.status == 200 and r.json.error == nil
        end, 5, "the good file is served again")
    end)

    it("rebuilds changed files through the Admin API and serves the new index", function()
        helpers.write_file(dir .. "/docs/billing.md", "# Billing\n\n## Refunds\n\nRefunds now take 30 days "
            .. "and go to a gift card.\n")
        local r = assert(gw:admin("POST", "/admin/rag/docs/rebuild"))
        assert.equal(200, r.status, r.body)
        assert.equal(3, r.json.stats.files)
        assert.equal(2, r.json.stats.reused_files)
        local _, got = ask("How fast are refunds paid?")
        assert.truthy(got.messages[1].content:find("gift card", 1, true), got.messages[1].content)
        assert.falsy(got.messages[1].content:find("14 days", 1, true))
        assert.equal(404, assert(gw:admin("POST", "/admin/rag/nope/rebuild")).status)
        assert.equal(405, assert(gw:admin("GET", "/admin/rag/docs/rebuild")).status)
        -- the CLI's incremental build: nothing changed, nothing embedded
        local out = build_index()
        assert.truthy(out:find('"embedded_chunks":0', 1, true), out)
    end)

    it("builds and queries with an embeddings provider over HTTP", function()
        local out = build_index(nil, "httpdocs")
        assert.truthy(out:find('"dims":8', 1, true), out)
        local _, got = chat("/http/v1/chat/completions", { messages = { { role = "user", content = "How fast are refunds paid?" } } })
        assert.truthy(got.messages[1].content:find("[1] billing.md (Billing > Refunds)", 1, true), got.messages[1].content)
        local res = assert(helpers.http("GET", "http://127.0.0.1:" .. oa_port .. "/__requests"))
        local calls = assert(cjson.decode(res.body))
        local last = calls[#calls]
        assert.equal("/v1/embeddings", last.path)
        assert.equal("Bearer sk-emb", last.headers.authorization)
        assert.same({ "How fast are refunds paid?" }, last.body.input) -- the query, embedded per request
    end)

    it("falls back to BM25 when the embedder's vectors do not fit the index", function()
        local _, got = chat("/dims/v1/chat/completions", { messages = { { role = "user", content = "How fast are refunds paid?" } } })
        assert.truthy(got.messages[1].content:find("[1] billing.md (Billing > Refunds)", 1, true), got.messages[1].content)
        assert.truthy(gw:log():find("vector has 8 dimensions, expected 256; BM25 alone", 1, true))
    end)

    it("keeps the old file when a rebuild fails", function()
        local good = assert(helpers.read_file(idx_file))
        helpers.write_file(dir .. "/broken.idx", good)
        local r = assert(gw:admin("POST", "/admin/rag/broken/rebuild?full=1"))
        assert.equal(500, r.status, r.body)
        assert.truthy(r.body:find("embedding failed", 1, true), r.body)
        assert.equal(good, helpers.read_file(dir .. "/broken.idx"))
        local _, got = chat("/brk/v1/chat/completions", { messages = { { role = "user", content = "How often are API keys rotated?" } } })
        -- the embedder is missing: hybrid search falls back to BM25 alone, and still finds the answer
        assert.truthy(got.messages[1].content:find("[1] security.md (Security > Key rotation)", 1, true))
        assert.truthy(gw:log():find("BM25 alone", 1, true))
    end)

    it("fuses the two lists by weighted scores (default) or weighted reciprocal ranks", function()
        -- the key rotation chunk leads both lists: by score it gets each weight in full (its BM25 and cosine are
        -- the lists' best), by RRF each weight over rrf_k + 1
        local body = { model = "m", messages = { { role = "user", content = "How often are API keys rotated?" } } }
        local res, got = chat("/fuse/v1/chat/completions", body)
        assert.equal("<2.5000>", got.messages[1].content)
        assert.truthy(res.headers["x-sluice-rag-sources"]:find("security.md#Security > Key rotation", 1, true))
        res, got = chat("/rrf/v1/chat/completions", body)
        assert.equal(string.format("<%.4f>", 2.5 / 11), got.messages[1].content)
        assert.truthy(res.headers["x-sluice-rag-sources"]:find("security.md#Security > Key rotation", 1, true))
    end)

    it("asks an external retrieval endpoint and maps its answer", function()
        local res, got = chat("/ext/v1/chat/completions", { messages = { { role = "user", content = "vpn host?" } } })
        local sys = got.messages[1].content
        assert.truthy(sys:find("[1] wiki/vpn.md (VPN)\nThe VPN endpoint is vpn.example.com.", 1, true), sys)
        assert.falsy(sys:find("Unrelated", 1, true))
        local q = retr:last()
        assert.equal("Bearer vdb", q.headers.authorization)
        assert.same({ q = "vpn host?", limit = 4, ns = "prod" }, cjson.decode(q.body))
        assert.equal("[1] wiki/vpn.md#VPN", res.headers["x-sluice-rag-sources"])
        retr:respond({ status = 500, body = "down" })
        res, got = chat("/ext/v1/chat/completions", { messages = { { role = "user", content = "vpn host?" } } })
        assert.same({ { role = "user", content = "vpn host?" } }, got.messages)
        assert.is_nil(res.headers["x-sluice-rag-sources"])
    end)

    it("rejects bad configs with a clear error", function()
        local res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" }, upstream = "llm",
            plugins = { ["ai-rag"] = { k = 3 } } }))
        assert.equal(400, res.status)
        assert.truthy(res.body:find("exactly one of index and retrieval", 1, true), res.body)
        res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" }, upstream = "llm",
            plugins = { ["ai-rag"] = { index = { name = "x", file = "f", source = "s", provider = "emb" },
                                      template = "no placeholder" } } }))
        assert.equal(400, res.status)
        assert.truthy(res.body:find("{{context}}", 1, true), res.body)
        for field, bad in pairs({ dense = { weights = { dense = 0 } }, bm25 = { weights = { bm25 = -1 } },
                                  fusion = { fusion = "max" }, rrf_k = { rrf_k = 0 } }) do
            bad.index = { name = "x", file = "f", source = "s", provider = "emb" }
            res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" }, upstream = "llm",
                plugins = { ["ai-rag"] = bad } }))
            assert.equal(400, res.status)
            assert.truthy(res.body:find(field, 1, true), res.body)
        end
    end)
end)
