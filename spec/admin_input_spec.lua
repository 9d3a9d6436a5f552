-- Surprising config and Admin API input gets a clear error: an empty config file, ids like "..", plugin
-- metadata for a plugin that does not exist, JSON numbers that cannot be written back (NaN, Infinity).
local helpers = require("helpers")

local function sluice(args)
    return helpers.exec(("env SLUICE_HOME=%s %s %s"):format(helpers.shell_quote(helpers.ROOT),
        helpers.shell_quote(helpers.BIN), args), 15)
end

describe("config input", function()
    local dir

    setup(function()
        dir = helpers.tmpdir()
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("refuses an empty config file (also one with only comments) at -t and at start", function()
        for name, text in pairs({ ["empty.yaml"] = "", ["comments.yaml"] = "# nothing here\n\n", ["blank.yaml"] = "\n  \n" }) do
            local file = helpers.write_file(dir .. "/" .. name, text)
            local code, out = sluice("-t -c " .. file)
            assert.is_not.equal(0, code, name)
            assert.matches(file .. ": (root): the config is empty", out, 1, true)
            code, out = sluice("-c " .. file)
            assert.is_not.equal(0, code, name)
            assert.matches("the config is empty", out, 1, true)
        end
    end)

    it("refuses unsafe ids and plugin metadata for unknown plugins in the file, with file:line", function()
        local file = helpers.write_file(dir .. "/ids.yaml", table.concat({
            'node: {plugin_paths: ["${SLUICE_HOME}/plugins"]}',
            'providers: {"..": {kind: mock}, "-x": {kind: mock}, ok: {kind: mock}}',
            'consumer_groups: {"a b": {}}',
            'plugin_metadata: {nope: {}, ai-proxy: {}}',
            'routes: [{id: "..", paths: ["/a"]}, {id: ".", paths: ["/b"]}]',
            "" }, "\n"))
        local code, out = sluice("-t -c " .. file)
        assert.is_not.equal(0, code)
        for _, want in ipairs({
            ':2: providers...: key must be an id',
            ':2: providers.-x: key must be an id',
            ':3: consumer_groups.a b: key must be an id',
            ':4: plugin_metadata.nope: unknown plugin "nope"',
            ':5: routes[1].id: must be an id',
            ':5: routes[2].id: must be an id',
        }) do
            assert.matches(file .. want, out, 1, true)
        end
        assert.is_nil(out:find("providers.ok", 1, true), out)
        assert.is_nil(out:find("plugin_metadata.ai-proxy", 1, true), out)
    end)
end)

describe("hostile YAML", function()
    teardown(function()
        helpers.stop_all()
    end)

    it("refuses alias bombs (many values, or one big string repeated) and deep nesting with a clear error", function()
        local dir = helpers.tmpdir()
        local laughs = { "a: &a [x, x, x, x, x, x, x, x, x, x]" }
        for i, c in ipairs({ "b", "c", "d", "e", "f", "g", "h", "i" }) do
            local prev = string.char(c:byte() - 1)
            laughs[#laughs + 1] = ("%s: &%s [%s]"):format(c, c, ("*" .. prev .. ", "):rep(9) .. "*" .. prev)
        end
        local cases = {
            { "laughs.yaml", table.concat(laughs, "\n") .. "\n", ":5:%d+: aliases expand to too many values %(limit: 100000%)" },
            { "string.yaml", 'a: &a "' .. ("s"):rep(1024 * 1024) .. '"\nroutes: [' .. ("*a, "):rep(40) .. "*a]\n",
              ":2:%d+: aliases expand to too much text %(limit: 16 MiB%)" },
            { "deep.yaml", "routes: " .. ("["):rep(5000) .. ("]"):rep(5000) .. "\n", ":1:%d+: nesting is too deep %(limit: 64 levels%)" },
            { "deepmap.yaml", "routes: " .. ("{a: "):rep(5000) .. "1" .. ("}"):rep(5000) .. "\n", ":1:%d+: nesting is too deep" },
        }
        for _, c in ipairs(cases) do
            local file = helpers.write_file(dir .. "/" .. c[1], c[2])
            local code, out = sluice("-t -c " .. file)
            assert.is_not.equal(0, code, c[1])
            assert.matches(file:gsub("%p", "%%%0") .. c[3], out)
            assert.is_true(#out < 4096, c[1] .. ": " .. #out .. " bytes of output")
        end
    end)
end)

describe("Admin API input", function()
    local gw

    setup(function()
        gw = helpers.start_gateway({
            node = { workers = 1 },
            providers = { p1 = { kind = "mock" } },
            routes = { { id = "base", paths = { "/base" }, plugins = { ["ai-proxy"] = { provider = "p1" } } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("answers 400 for ids that are not safe, on every kind and method", function()
        local long = ("a"):rep(257)
        local bodies = { routes = { paths = { "/x" } }, upstreams = { nodes = { "127.0.0.1:1" } },
                         providers = { kind = "mock" }, consumers = { keys = { "k" } }, consumer_groups = { desc = "d" } }
        for kind, body in pairs(bodies) do
            for _, id in ipairs({ "..", ".", "...", "-rf", ".hidden", long }) do
                for _, method in ipairs({ "PUT", "GET", "DELETE" }) do
                    local res = assert(gw:admin(method, "/admin/" .. kind .. "/" .. id, method == "PUT" and body or nil))
                    if id == "." or id == ".." then
                        -- dot segments are removed from every request path before anything sees it
                        -- (docs/request-normalisation.md): /admin/routes/.. is /admin/ (no endpoint: 404) and
                        -- /admin/routes/. the collection (no PUT or DELETE there: 405; GET lists it)
                        local want = id == ".." and 404 or (method == "GET" and 200 or 405)
                        assert.equal(want, res.status, method .. " " .. kind .. "/" .. id .. ": " .. res.body)
                    else
                        assert.equal(400, res.status, method .. " " .. kind .. "/" .. id:sub(1, 20) .. ": " .. res.body)
                        assert.matches("invalid id", res.json.error.message, 1, true)
                    end
                end
            end
        end
        -- nothing was created, and the state file holds no such key
        local state = helpers.read_file(gw.dir .. "/sluice.yaml.state.json") or ""
        assert.is_nil(state:find('"%.%."'), state)
        assert.equal(1, assert(gw:admin("GET", "/admin/routes")).json.total)
        -- the longest allowed id still works
        local ok = ("a"):rep(256)
        assert.equal(201, assert(gw:admin("PUT", "/admin/consumer_groups/" .. ok, {})).status)
        assert.equal(200, assert(gw:admin("DELETE", "/admin/consumer_groups/" .. ok)).status)
    end)

    it("answers 400 for plugin metadata of a plugin that does not exist", function()
        local res = assert(gw:admin("PUT", "/admin/plugin_metadata/no-such-plugin", { a = 1 }))
        assert.equal(400, res.status, res.body)
        assert.matches("unknown plugin \"no-such-plugin\"", res.json.error.details[1].message, 1, true)
        res = assert(gw:admin("PUT", "/admin/plugin_metadata/.hidden", { a = 1 }))
        assert.equal(400, res.status, res.body)
        assert.equal(201, assert(gw:admin("PUT", "/admin/plugin_metadata/ai-proxy", { a = 1 })).status)
        assert.equal(200, assert(gw:admin("DELETE", "/admin/plugin_metadata/ai-proxy")).status)
    end)

    it("answers 400 for JSON numbers that are not numbers (NaN, Infinity, hex), and keeps working", function()
        for _, body in ipairs({ '{"kind":"mock","price":{"m":{"input":NaN}}}',
                                '{"kind":"mock","price":{"m":{"input":Infinity}}}',
                                '{"kind":"mock","price":{"m":{"input":0x10}}}' }) do
            local res = assert(gw:admin("PUT", "/admin/providers/p2", body, { ["content-type"] = "application/json" }))
            assert.equal(400, res.status, body .. " -> " .. res.body)
            assert.matches("invalid JSON", res.json.error.message, 1, true)
        end
        local res = assert(gw:admin("PUT", "/admin/providers/p2", '{"kind":"mock","price":{"m":{"input":1e3}}}'))
        assert.equal(201, res.status, res.body)
        assert.equal(200, assert(gw:admin("DELETE", "/admin/providers/p2")).status)
    end)
end)
