-- Retrieval quality of the embedded RAG index, measured: `sluice rag build` over this project's docs/ with the
-- mock provider's embeddings (hashed bags of words), then `sluice rag eval` over the committed questions
-- (spec/fixtures/rag/docs_questions.json: each with the file and heading that answers it). The numbers are
-- printed; the spec fails when hybrid search finds the answer in its top 5 for fewer than 80% of the questions.
local helpers = require("helpers")
local cjson = require("cjson.safe")

describe("RAG retrieval quality over docs/", function()
    it("reaches recall@5 >= 0.8 with hybrid search", function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/c.yaml", "providers:\n  emb: {kind: mock}\nroutes: []\n")
        local function run(args)
            local code, out = helpers.exec(string.format("SLUICE_HOME=%s %s rag %s", helpers.shell_quote(helpers.ROOT),
                helpers.shell_quote(helpers.BIN), args), 120)
            assert(code == 0, out)
            return out
        end
        local q = helpers.shell_quote
        local built = run(string.format("build -c %s --source %s --out %s --provider emb", q(dir .. "/c.yaml"),
            q(helpers.ROOT .. "/docs"), q(dir .. "/docs.idx")))
        local stats = assert(cjson.decode(built:match("({.-})\n")), built)
        local out = run(string.format("eval -c %s --json %s %s", q(dir .. "/c.yaml"), q(dir .. "/docs.idx"),
            q(helpers.ROOT .. "/spec/fixtures/rag/docs_questions.json")))
        local r = assert(cjson.decode(out:match("({.*})")), out)
        assert.truthy(r.questions >= 30)
        print(string.format("\n[rag recall] %d questions over %d chunks of %d files (build %.2f s):",
            r.questions, stats.chunks, stats.files, stats.seconds))
        for _, mode in ipairs({ "bm25", "dense", "hybrid" }) do
            print(string.format("[rag recall]   %-6s recall@1 %.2f  recall@5 %.2f", mode, r[mode].recall_at_1,
                r[mode].recall_at_5))
        end
        assert(r.hybrid.recall_at_5 >= 0.8, "hybrid recall@5 " .. r.hybrid.recall_at_5 .. " < 0.8; misses: "
            .. table.concat(r.hybrid.misses, " | "))
        assert.truthy(r.bm25.recall_at_5 > 0 and r.dense.recall_at_5 > 0)
    end)
end)
