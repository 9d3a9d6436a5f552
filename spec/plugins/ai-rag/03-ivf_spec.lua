-- ai-rag with an inverted file (docs/vector.md "Inverted file"): `sluice rag build` of an index whose config
-- asks for IVF lists, `sluice rag info` showing them, and dense retrieval through the gateway that scans only the
-- probed lists yet finds the chunks of the question's topic; `lists: 0` keeps brute force.
local helpers = require("helpers")
local unit = require("unit_helpers")
local cjson = require("cjson.safe")

local TOPICS, FILES, SECTIONS = 8, 5, 4

-- Words of one topic: letters only (the tokenizer keeps them whole), distinct per topic, seeded.
local function topic_words(t)
    local syl = { "ka", "lo", "mi", "ner", "tos", "va", "qui", "ben", "dra", "sel", "um", "pra" }
    local words, x = {}, t * 7919 + 17
    for i = 1, 30 do
        local w = "t" .. string.char(96 + t)
        for _ = 1, 3 do
            x = (x * 1103515245 + 12345) % 2147483648
            w = w .. syl[x % #syl + 1]
        end
        words[i] = w .. string.char(96 + (i % 26) + 1)
    end
    return words
end

describe("ai-rag with an inverted file (gateway)", function()
    local mock, gw, dir

    local function rag(args)
        local code, out = helpers.exec(string.format("SLUICE_HOME=%s %s rag %s",
            helpers.shell_quote(helpers.ROOT), helpers.shell_quote(helpers.BIN), args), 120)
        assert(code == 0, out)
        return out
    end

    local function ask(path, q)
        local res = assert(helpers.http("POST", gw.url(path), {
            body = { model = "m", messages = { { role = "user", content = q } } } }))
        assert.equal(200, res.status, res.body)
        return res.headers["x-sluice-rag-sources"] or ""
    end

    setup(function()
        dir = helpers.tmpdir()
        os.execute("mkdir -p " .. helpers.shell_quote(dir .. "/docs"))
        for t = 1, TOPICS do
            local words = topic_words(t)
            for f = 1, FILES do
                local lines = { "# Topic " .. t .. " file " .. f, "" }
                for s = 1, SECTIONS do
                    lines[#lines + 1] = "## Part " .. s
                    local para = {}
                    for j = 1, 25 do para[j] = words[(j * s + f * 3) % #words + 1] end
                    lines[#lines + 1] = table.concat(para, " ") .. "."
                    lines[#lines + 1] = ""
                end
                helpers.write_file(string.format("%s/docs/t%d-f%d.md", dir, t, f), table.concat(lines, "\n"))
            end
        end
        mock = helpers.mock_upstream({ body = unit.chat_completion("ok"), headers = { ["content-type"] = "application/json" } })
        local index = { name = "topics", file = dir .. "/topics.idx", source = dir .. "/docs", provider = "emb",
                        ivf = { lists = 8, probes = 2 } }
        gw = helpers.start_gateway({
            providers = { emb = { kind = "mock" } },
            upstreams = { llm = { nodes = { mock.addr } } },
            routes = {
                { id = "ivf", paths = { "/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 4, mode = "dense", check_interval = 0.1 } } },
                { id = "all", paths = { "/all/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 4, mode = "dense", probes = 8 } } },
                { id = "one", paths = { "/one/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-rag"] = { index = index, k = 4, mode = "dense", probes = 1,
                                             filter = { sources = { "t3-*" } } } } },
            },
        })
        rag(string.format("build -c %s topics", helpers.shell_quote(gw.file)))
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("builds the lists the config asks for and `sluice rag info` shows them", function()
        local info = assert(cjson.decode(rag(string.format("info -c %s %s", helpers.shell_quote(gw.file),
            helpers.shell_quote(dir .. "/topics.idx")))))
        assert.equal(TOPICS * FILES * SECTIONS, info.chunks)
        assert.same({ lists = 8, probes = 2 }, info.ivf)
        assert.equal(2, info.format)
    end)

    it("finds the question's topic through the probed lists, as brute force does", function()
        for _, t in ipairs({ 1, 4, 7 }) do
            local w = topic_words(t)
            local q = table.concat({ w[2], w[5], w[9], w[11], w[17], w[23] }, " ")
            local probed, all = ask("/v1/chat/completions", q), ask("/all/v1/chat/completions", q)
            local n = 0
            for src in probed:gmatch("t(%d+)%-f%d+%.md") do
                assert.equal(tostring(t), src, probed)
                n = n + 1
            end
            assert.equal(4, n, probed)
            assert.equal(all, probed)
        end
    end)

    it("applies a filter that the nearest list does not hold: further lists are scanned", function()
        local w = topic_words(1)
        local got = ask("/one/v1/chat/completions", table.concat({ w[2], w[5], w[9] }, " "))
        local n = 0
        for name in got:gmatch("(t%d+%-f%d+%.md)") do
            assert.truthy(name:find("^t3%-"), got)
            n = n + 1
        end
        assert.equal(4, n, got)
    end)

    it("keeps brute force with lists 0, and for a small index by default", function()
        rag(string.format("build -c %s --full --ivf-lists 0 topics", helpers.shell_quote(gw.file)))
        local info = assert(cjson.decode(rag(string.format("info -c %s %s", helpers.shell_quote(gw.file),
            helpers.shell_quote(dir .. "/topics.idx")))))
        assert.equal(false, info.ivf)
        rag(string.format("build -c %s --source %s --out %s --provider emb", helpers.shell_quote(gw.file),
            helpers.shell_quote(dir .. "/docs"), helpers.shell_quote(dir .. "/plain.idx")))
        info = assert(cjson.decode(rag(string.format("info -c %s %s", helpers.shell_quote(gw.file),
            helpers.shell_quote(dir .. "/plain.idx")))))
        assert.equal(false, info.ivf)
        local out = rag(string.format("search -c %s --mode dense --probes 3 %s %s", helpers.shell_quote(gw.file),
            helpers.shell_quote(dir .. "/plain.idx"), topic_words(2)[3]))
        assert.truthy(out:find("t2%-f%d%.md"), out)
    end)
end)
