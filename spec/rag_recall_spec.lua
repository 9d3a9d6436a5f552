-- Retrieval quality of the embedded RAG index, measured: `sluice rag build` over this project's docs/ with the
-- mock provider's embeddings (hashed bags of words), then `sluice rag eval` over the committed questions
-- (spec/fixtures/rag/docs_questions.json: each with the file and heading that answers it). The numbers are
-- printed; the spec fails when hybrid search (default fusion: weighted scores) finds the answer in its top 5 for
-- fewer than 85% of the questions or ranks it first less often than BM25 alone, and when the weights
-- docs/ai-rag.md suggests for a weak embedder (bm25 1, dense 0.3) do not match BM25's recall@5.
local helpers = require("helpers")
local cjson = require("cjson.safe")

describe("RAG retrieval quality over docs/", function()
    it("reaches recall@5 >= 0.85 with hybrid search, and BM25's with the dense signal weighted down", function()
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
        local function eval(extra)
            local out = run(string.format("eval -c %s --json %s %s %s", q(dir .. "/c.yaml"), extra, q(dir .. "/docs.idx"),
                q(helpers.ROOT .. "/spec/fixtures/rag/docs_questions.json")))
            return assert(cjson.decode(out:match("({.*})")), out)
        end
        local r, low = eval(""), eval("--weights 1,0.3")
        assert.truthy(r.questions >= 30)
        print(string.format("\n[rag recall] %d questions over %d chunks of %d files (build %.2f s):",
            r.questions, stats.chunks, stats.files, stats.seconds))
        for _, mode in ipairs({ "bm25", "dense", "hybrid" }) do
            print(string.format("[rag recall]   %-6s recall@1 %.2f  recall@5 %.2f", mode, r[mode].recall_at_1,
                r[mode].recall_at_5))
        end
        print(string.format("[rag recall]   hybrid, weights bm25 1 dense 0.3: recall@1 %.2f  recall@5 %.2f",
            low.hybrid.recall_at_1, low.hybrid.recall_at_5))
        assert(r.hybrid.recall_at_5 >= 0.85, "hybrid recall@5 " .. r.hybrid.recall_at_5 .. " < 0.85; misses: "
            .. table.concat(r.hybrid.misses, " | "))
        assert(r.hybrid.recall_at_1 >= r.bm25.recall_at_1, "hybrid recall@1 below BM25's")
        assert(low.hybrid.recall_at_5 >= low.bm25.recall_at_5, "weighted hybrid recall@5 "
            .. low.hybrid.recall_at_5 .. " below BM25's " .. low.bm25.recall_at_5 .. "; misses: "
            .. table.concat(low.hybrid.misses, " | "))
        assert(low.hybrid.recall_at_1 >= low.bm25.recall_at_1, "weighted hybrid recall@1 below BM25's")
        assert.truthy(r.bm25.recall_at_5 > 0 and r.dense.recall_at_5 > 0)
    end)
end)
