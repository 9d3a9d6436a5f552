-- Specs for lua/sluice/config.lua. Self-contained: `SLUICE_FFI_LIB=build-cfg/libsluice_ffi.so luajit /usr/bin/busted spec/config_spec.lua`
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
if not package.preload["sluice.yaml"] and not package.loaded["sluice.yaml"] then
    package.preload["sluice.yaml"] = assert(package.loadlib(os.getenv("SLUICE_FFI_LIB") or "build/libsluice_ffi.so", "luaopen_sluice_yaml"))
end
local ffi = require("ffi")
pcall(ffi.cdef, "int setenv(const char *, const char *, int); int unsetenv(const char *);")
local config = require("sluice.config")
local yaml = require("sluice.yaml")
local cjson = require("cjson")

local FIX = "spec/fixtures/config/"

local function tmpfile(content)
    local p = os.tmpname()
    local f = assert(io.open(p, "wb"))
    f:write(content)
    f:close()
    return p
end

local function load_str(s, opts)
    local p = tmpfile(s)
    local cfg, err = config.load(p, opts)
    os.remove(p)
    os.remove(p .. ".state.json")
    return cfg, err and err:gsub(p:gsub("%p", "%%%0"), "F")
end

local plugins = { get = function(name)
    if name == "demo" then
        return { schema = { type = "object", properties = { n = { type = "integer", minimum = 1 }, mode = { default = "fast" } } },
                 check = function(conf) if conf.n == 13 then return nil, "13 is unlucky" end return true end }
    end
    return nil, "not found in plugin paths"
end }

describe("config.load", function()
    setup(function() ffi.C.setenv("SL_SPEC_ADMIN_KEY", "secret-key", 1) end)

    it("normalizes a full config", function()
        local cfg, err = config.load(FIX .. "full.yaml", { prefix = "/srv", plugins = plugins })
        assert.is_nil(err)
        local n = cfg.node
        assert.same({ host = "127.0.0.1", port = 8080 }, n.listen[1])
        assert.same({ host = "::1", port = 8443, tls = { cert = "c.pem", key = "k.pem" } }, n.listen[2])
        assert.equal(2, n.workers)
        assert.same({ listen = { host = "127.0.0.1", port = 9180 }, key = "secret-key",
                      keys = { { name = "admin", key = "secret-key" } },
                      audit_log = FIX .. "full.yaml.state.audit.jsonl" }, n.admin)
        assert.same({ "/srv/plugins", "/opt/plugins" }, n.plugin_paths)
        assert.same({ sluice = 10 * 1024 * 1024, cache = 512 * 1024 }, n.shared_dicts)
        assert.equal(1024 * 1024, n.limits.max_body_size)
        assert.equal(16384, n.limits.max_header_size)
        assert.equal(5, n.limits.header_timeout)
        assert.equal(10000, n.limits.max_connections)
        assert.equal(30, n.drain_timeout)
        assert.equal("info", n.log_level)
        assert.equal(FIX .. "full.yaml.state.json", n.state_file)
        assert.same({ { host = "127.0.0.1", port = 9000, weight = 1 } }, cfg.upstreams.echo.nodes)
        assert.same({ connect = 5, send = 30, read = 60 }, cfg.upstreams.echo.timeout)
        assert.same({ { host = "10.0.0.1", port = 80, weight = 3 }, { host = "10.0.0.2", port = 443, weight = 0 } },
                    cfg.upstreams.weighted.nodes)
        assert.equal("api", cfg.routes[1].id)
        assert.equal("echo", cfg.routes[1].upstream_id)
        assert.same({ { host = "example.com", port = 443, weight = 1 } }, cfg.routes[2].upstream.nodes)
        assert.same({ n = 2, mode = "fast" }, cfg.routes[2].plugins.demo)
        assert.equal("alice", cfg.consumers[1].name)
        assert.equal("openai", cfg.providers["openai-main"].kind)
        -- raw keeps what was written
        assert.equal("echo", cfg.raw.routes.api.upstream)
        assert.same({ n = 2 }, cfg.raw.routes.inline.plugins.demo)
        assert.is_nil(cfg.raw.upstreams.echo.scheme)
    end)

    it("fills node defaults for a minimal config", function()
        local cfg = assert(load_str("routes: []\n"))
        assert.same({ { host = "127.0.0.1", port = 8080 } }, cfg.node.listen)
        assert.is_true(cfg.node.workers >= 1 and cfg.node.workers_auto)
        assert.is_nil(cfg.node.admin)
        assert.equal("stdout", cfg.node.access_log.path)
        assert.equal(8 * 1024 * 1024, cfg.node.limits.max_body_size)
        assert.same({}, cfg.routes)
    end)

    it("reports every error as FILE:LINE: path: message", function()
        local cfg, err = config.load(FIX .. "errors.yaml")
        assert.is_nil(cfg)
        local F = FIX .. "errors.yaml"
        for _, want in ipairs({
            F .. ":2: node.listen[1]: invalid address \"nope\"",
            F .. ":3: node.workers: expected \"auto\" or an integer 1..64, got 100",
            F .. ":4: node.admin.key: must be at least 8 character(s) long",
            F .. ":5: node.log_level: expected one of: debug, info, warn, error; got \"loud\"",
            F .. ":7: upstreams.u1.nodes[1]: port 99999 is out of range",
            F .. ":11: routes[1].upstream: unknown upstream \"missing\"",
            F .. ":13: routes[2].paths: must have at least 1 item(s)",
            F .. ":14: routes[3].id: must be an id: letters, digits",
            F .. ":16: routes[3].methods[1]: expected one of: GET",
            F .. ":19: consumers[2].keys[1]: key is already used by consumer \"bob\"",
        }) do
            assert.truthy(err:find(want, 1, true), "missing: " .. want .. "\n---\n" .. err)
        end
    end)

    it("reports duplicate ids, unknown sections and unknown fields", function()
        local _, err = load_str("routes:\n  - {id: a, paths: [/a]}\n  - {id: a, paths: [/b]}\nroute: {}\n" ..
                                "upstreams:\n  u: {nodes: [\"h:1\"], retries: 2}\n")
        assert.matches("F:3: routes%[2%]%.id: duplicate id \"a\"", err)
        assert.matches("F:4: route: unknown section", err)
        assert.matches("F:6: upstreams%.u%.retries: unknown field", err)
    end)

    it("validates plugin configs with the registry", function()
        local _, err = load_str("routes:\n  - id: r\n    paths: [/]\n    plugins:\n      demo: {n: 0}\n      nope: {}\n" ..
                                "global_plugins:\n  demo: {n: 13}\n", { plugins = plugins })
        assert.matches("F:5: routes%[1%]%.plugins%.demo%.n: must be >= 1, got 0", err)
        assert.matches("F:6: routes%[1%]%.plugins%.nope: unknown plugin \"nope\" %(not found in plugin paths%)", err)
        assert.matches("F:8: global_plugins%.demo: 13 is unlucky", err)
        assert.truthy(load_str("routes:\n  - {id: r, paths: [/], plugins: {nope: {}}}\n")) -- no registry: not checked
    end)

    it("expands environment variables and reports unset ones", function()
        ffi.C.setenv("SL_SPEC_PORT", "8181", 1)
        ffi.C.unsetenv("SL_SPEC_UNSET")
        local cfg = assert(load_str("node:\n  listen: [\"0.0.0.0:${SL_SPEC_PORT}\"]\n  workers: ${SL_SPEC_W:-3}\n"))
        assert.equal(8181, cfg.node.listen[1].port)
        assert.equal(3, cfg.node.workers)
        local _, err = load_str("node:\n  admin: {key: \"${SL_SPEC_UNSET}\"}\n")
        assert.matches(":2:%d+: environment variable SL_SPEC_UNSET is not set", err)
    end)

    it("accepts list-form upstreams and map-form consumers", function()
        local cfg = assert(load_str("upstreams:\n  - {id: u, nodes: [\"a:1\"]}\nconsumers:\n  bob: {keys: [x]}\n" ..
                                    "routes:\n  - {id: r, paths: [/], upstream: u}\n"))
        assert.equal(1, cfg.upstreams.u.nodes[1].port)
        assert.equal("bob", cfg.consumers[1].name)
    end)

    it("never raises on hostile configs", function()
        local deep = string.rep("[", 80) .. string.rep("]", 80)
        local docs = {
            "node: 5\nroutes: {a: 1}\nupstreams: [1, 2]\nconsumers: 7\nglobal_plugins: []\nproviders: {p: {kind: x}}\n",
            "node: {listen: [1, {}], workers: -1, shared_dicts: {a: 1e300, b: huge, c: []}, limits: {max_body_size: -5}}\n",
            "node: {drain_timeout: 1e309, admin: {key: [1]}, access_log: {fields: [nope]}}\nroutes: [{}, 1, [], {id: [x]}]\n",
            "routes:\n  - {id: r, paths: [/a*b], upstream: {nodes: {\"h:1\": -1}}, plugins: {x: [1]}}\n",
            "node: {listen: " .. deep .. "}\n",
            "consumers: [{name: a, keys: [1, {}]}]\nconsumer_groups: {g: {plugins: 1}}\nplugin_metadata: {m: 1}\n",
        }
        for _, d in ipairs(docs) do
            local ok, cfg, err = pcall(load_str, d)
            assert.is_true(ok, tostring(cfg))
            assert.is_nil(cfg)
            assert.is_string(err)
        end
    end)
end)

describe("config.validate and validate_entity", function()
    it("validates a table from the Admin API", function()
        local cfg, errs = config.validate({ routes = { { id = "r", paths = { "/" }, upstream = "u" } },
                                            upstreams = { u = { nodes = { "127.0.0.1:1" } } } })
        assert.is_nil(errs)
        assert.equal("u", cfg.routes[1].upstream_id)
        local _, errs2 = config.validate({ routes = { { id = "r" } } })
        assert.same({ path = "routes[1].paths", message = "is required" }, errs2[1])
    end)

    it("validates one entity with relative paths and cross references", function()
        local cfg = assert(config.validate({ upstreams = { u = { nodes = { "h:1" } } },
                                             consumers = { { name = "a", keys = { "k1" } } } }))
        local r = assert(config.validate_entity("routes", "r1", { paths = { "/x" }, upstream = "u" }, cfg))
        assert.equal("r1", r.id)
        local _, errs = config.validate_entity("routes", "r1", { paths = { "/x" }, upstream = "nope" }, cfg)
        assert.same({ { path = "upstream", message = "unknown upstream \"nope\" (not defined under upstreams)" } }, errs)
        _, errs = config.validate_entity("routes", "r1", { id = "other", paths = { "/x" } }, cfg)
        assert.equal("id", errs[1].path)
        _, errs = config.validate_entity("consumers", "b", { keys = { "k1" } }, cfg)
        assert.equal("keys[1]", errs[1].path)
        assert.truthy(config.validate_entity("consumers", "a", { keys = { "k1" } }, cfg))
        _, errs = config.validate_entity("upstreams", "u2", { nodes = {} }, cfg)
        assert.equal("nodes", errs[1].path)
        _, errs = config.validate_entity("widgets", "x", {}, cfg)
        assert.matches("unknown entity kind", errs[1].message)
    end)
end)

describe("state file", function()
    it("puts, deletes and overlays entities", function()
        local p = tmpfile("upstreams:\n  u: {nodes: [\"h:1\"]}\nroutes:\n  - {id: a, paths: [/a]}\n  - {id: b, paths: [/b]}\n" ..
                          "  - {id: c, paths: [/c], upstream: nope}\n")
        local st = p .. ".state.json"
        assert.is_true(config.state_put(st, "routes", "a", false))
        assert.is_true(config.state_put(st, "routes", "b", { paths = { "/b2" }, upstream = "u" }))
        assert.is_true(config.state_put(st, "routes", "z", { paths = { "/z" } }))
        assert.is_true(config.state_put(st, "routes", "c", { paths = { "/c" } }))
        assert.is_true(config.state_put(st, "upstreams", "v", { nodes = { "h:2" } }))
        assert.is_true(config.state_put(st, "global_plugins", nil, { demo = { n = 1 } }))
        local data = cjson.decode(assert(io.open(st)):read("*a"))
        assert.equal(1, data.version)
        assert.is_false(data.routes.a)
        local cfg, err = config.load(p)
        assert.is_nil(err)
        assert.same({ "b", "c", "z" }, { cfg.routes[1].id, cfg.routes[2].id, cfg.routes[3].id })
        assert.same({ "/b2" }, cfg.routes[1].paths)
        assert.equal(2, cfg.upstreams.v.nodes[1].port)
        assert.same({ demo = { n = 1 } }, cfg.global_plugins)
        -- an invalid entity from the state file is reported against the state file
        assert.is_true(config.state_put(st, "routes", "z", { paths = "bad" }))
        local _, err2 = config.load(p)
        assert.matches(st:gsub("%p", "%%%0") .. ": routes%[4%]%.paths: expected array", err2)
        os.remove(p)
        os.remove(st)
    end)

    it("rejects a corrupt state file", function()
        local p = tmpfile("routes: []\n")
        local f = assert(io.open(p .. ".state.json", "w"))
        f:write("{oops")
        f:close()
        local cfg, err = config.load(p)
        assert.is_nil(cfg)
        assert.matches("invalid JSON state file", err)
        os.remove(p)
        os.remove(p .. ".state.json")
    end)
end)

describe("sluice.yaml module", function()
    it("returns doc and line map", function()
        local doc, lines = yaml.load_string("a:\n  b: [1, 2]\n")
        assert.same({ a = { b = { 1, 2 } } }, doc)
        assert.equal(2, lines["a.b[2]"])
    end)
end)
