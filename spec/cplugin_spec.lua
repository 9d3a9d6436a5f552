-- C plugins (core/plugin/plugin_abi.h, lua/sluice/cplugin.lua, examples/plugins/c_header.c).
-- Needs `cmake --build build` (build/plugins/c_header.so, build/libsluice_ffi.so, build/sluice) and gcc.
local helpers = require("helpers")
local ffi = require("ffi")

local ROOT = helpers.ROOT
local EXAMPLE = ROOT .. "/build/plugins/c_header.so"

-- Test plugins compiled into the spec's temp dir.
local SOURCES = {
    -- built against another ABI version: must be refused at load
    c_old_abi = [[
#include "plugin/plugin_abi.h"
static int access(sl_plugin_req_t *req, const char *conf, size_t len) { return 0; }
const sl_plugin_t sluice_plugin = { .abi_version = 99, .name = "c_old_abi", .priority = 1, .access = access };
]],
    -- no descriptor at all
    c_nosym = [[
int something_else = 1;
]],
    -- hot reload: rebuilt with another VERSION by the spec
    c_reload = [[
#include "plugin/plugin_abi.h"
#ifdef VERSION_B
#define VERSION "B"
#else
#define VERSION "A"
#endif
static int access(sl_plugin_req_t *req, const char *conf, size_t len)
{
    sl_plugin_set_header(req, "x-reload", 8, VERSION, 1);
    return 0;
}
const sl_plugin_t sluice_plugin = { .abi_version = SL_PLUGIN_ABI_VERSION, .name = "c_reload", .priority = 1,
                                    .access = access };
]],
    -- exercises every accessor; the path selects what it does
    c_probe = [[
#include <stdio.h>
#include <string.h>
#include "plugin/plugin_abi.h"
static int rewrite(sl_plugin_req_t *req, const char *conf, size_t len)
{
    const char *m, *p, *v;
    size_t ml, pl, vl;
    char buf[512];
    sl_plugin_get_method(req, &m, &ml);
    sl_plugin_get_path(req, &p, &pl);
    int has = sl_plugin_get_header(req, "X-Probe", 7, &v, &vl) == SL_PLUGIN_OK;
    snprintf(buf, sizeof(buf), "%.*s %.*s probe=%.*s conf=%.*s", (int)ml, m, (int)pl, p, has ? (int)vl : 4,
             has ? v : "none", (int)len, conf);
    sl_plugin_set_header(req, "x-probe-seen", 12, buf, strlen(buf));
    sl_plugin_set_header(req, "x-remove-me", 11, NULL, 0);
    sl_plugin_set_resp_header(req, "x-probe-resp", 12, "yes", 3);
    if (sl_plugin_set_header(req, "bad name", 8, "v", 1) != SL_PLUGIN_INVALID ||
        sl_plugin_set_header(req, "x-inject", 8, "a\r\nx: y", 7) != SL_PLUGIN_INVALID)
        return 500;
    if (pl == 11 && memcmp(p, "/probe/fail", 11) == 0)
        return -5;
    if (pl == 13 && memcmp(p, "/probe/teapot", 13) == 0)
        return 418; /* no body set: empty body */
    return 0;
}
static int header_filter(sl_plugin_req_t *req, const char *conf, size_t len)
{
    char st[16];
    int n = snprintf(st, sizeof(st), "%d", sl_plugin_get_status(req));
    sl_plugin_set_resp_header(req, "x-probe-status", 14, st, (size_t)n);
    return 403; /* ignored in header_filter */
}
static int check(const char *conf, size_t len, char *errbuf, size_t errlen)
{
    if (strstr(conf, "\"forbidden\"") != NULL) {
        snprintf(errbuf, errlen, "mode: forbidden is not allowed here");
        return 1;
    }
    return 0;
}
const sl_plugin_t sluice_plugin = {
    .abi_version = SL_PLUGIN_ABI_VERSION, .name = "c_probe", .version = "0.1", .priority = 5000,
    .schema_json = "{\"type\":\"object\",\"properties\":{\"mode\":{\"type\":\"string\",\"default\":\"plain\"}}}",
    .check = check, .rewrite = rewrite, .header_filter = header_filter,
};
]],
}

-- Compiles dir/name.c into dir/name.so through a temp file and a rename: a library that a running gateway has
-- mapped must be replaced, never overwritten in place.
local function compile(dir, name, flags)
    local c, so = dir .. "/" .. name .. ".c", dir .. "/" .. name .. ".so"
    local code, out = helpers.exec(("gcc -shared -fPIC -O1 -Wall %s -I %s -o %s.tmp %s && mv %s.tmp %s"):format(
        flags or "", helpers.shell_quote(ROOT .. "/core"), helpers.shell_quote(so), helpers.shell_quote(c),
        helpers.shell_quote(so), helpers.shell_quote(so)))
    assert(code == 0, "gcc failed for " .. name .. ":\n" .. out)
end

local function build_plugins(dir)
    for name, src in pairs(SOURCES) do
        helpers.write_file(dir .. "/" .. name .. ".c", src)
        compile(dir, name)
    end
end

describe("C plugins: loader", function()
    local cplugin, schema, dir

    setup(function()
        cplugin = require("sluice.cplugin")
        -- plugins log through the core; keep the spec output quiet
        pcall(ffi.cdef, "void sl_log_set_level(int level);")
        require("sluice.core").sl_log_set_level(3)
        schema = require("sluice.schema")
        dir = helpers.tmpdir()
        build_plugins(dir)
    end)

    it("wraps the example plugin like a Lua plugin", function()
        local p = assert(cplugin.load("c_header", EXAMPLE))
        assert.equal("c_header", p.name)
        assert.equal("1.0", p.version)
        assert.equal(1000, p.priority)
        assert.is_function(p.access)
        assert.is_nil(p.rewrite)
        assert.is_true(schema.check_schema(p.schema))
        assert.is_true(require("sluice.plugins").check_module("c_header", p))
    end)

    it("validates config with the schema (defaults filled in) and check()", function()
        local p = assert(cplugin.load("c_header", EXAMPLE))
        local conf = { value = "v" }
        assert.is_true(schema.validate(p.schema, conf))
        assert.equal("x-c-plugin", conf.header)
        assert.is_true(p.check(conf))
        local ok, err = p.check({ header = "Content-Length", value = "1" })
        assert.is_nil(ok)
        assert.matches("content%-length is managed by the gateway", err)
        assert.is_nil((schema.validate(p.schema, { value = 5 })))
        assert.is_nil((schema.validate(p.schema, { header = "x y", value = "v" })))
        assert.is_nil((schema.validate(p.schema, {})))
    end)

    it("refuses a plugin built for another ABI version, naming both versions", function()
        local p, err = cplugin.load("c_old_abi", dir .. "/c_old_abi.so")
        assert.is_nil(p)
        assert.matches("built for plugin ABI version 99, this sluice supports version 1", err, 1, true)
    end)

    it("refuses a shared object without the descriptor, and a missing file", function()
        local p, err = cplugin.load("c_nosym", dir .. "/c_nosym.so")
        assert.is_nil(p)
        assert.matches("does not export `sluice_plugin`", err, 1, true)
        p, err = cplugin.load("nothere", dir .. "/nothere.so")
        assert.is_nil(p)
        assert.is_string(err)
    end)

    it("runs a phase: headers set by the plugin are applied through the PDK, exit carries the body", function()
        local p = assert(cplugin.load("c_header", EXAMPLE))
        local keep = { "X-Block", "1" }
        local hs = ffi.new("sl_header_t[1]")
        hs[0].name, hs[0].name_len, hs[0].value, hs[0].value_len = keep[1], 7, keep[2], 1
        local r = ffi.new("sl_req_t")
        r.headers, r.nheaders = hs, 0
        local ctx = { req = r, method = "GET", path = "/x", request_id = "0000000000000001" }
        local conf = { header = "x-team", value = "search" }
        assert.is_nil(p.access(conf, ctx))
        assert.equal("search", ctx.set_headers["x-team"])
        assert.is_nil(ctx.exit)

        r.nheaders = 1 -- now the request carries x-block: 1
        local status, body = p.access(conf, ctx)
        assert.equal(403, status)
        assert.equal(403, ctx.exit.status)
        assert.equal("application/json", ctx.exit.headers["content-type"])
        assert.equal("blocked by c_header", require("cjson").decode(body).error.message)

        -- a header removed by an earlier plugin is not seen by the next one
        ctx.exit, ctx.set_headers = nil, { ["x-block"] = false }
        assert.is_nil(p.access(conf, ctx))
        assert.equal("search", ctx.set_headers["x-team"])
    end)

    it("reloads a changed file from a private copy (dlopen would return the old one)", function()
        local file = dir .. "/c_header.so"
        helpers.write_file(file, helpers.read_file(EXAMPLE))
        local p1 = assert(cplugin.load("c_header", file))
        assert.equal(p1, cplugin.load("c_header", file)) -- unchanged: same table
        -- same name, other code: the probe plugin renamed would fail the name check, so rebuild the example
        -- with another priority
        local src = helpers.read_file(ROOT .. "/examples/plugins/c_header.c"):gsub("%.priority = 1000", ".priority = 1234")
        helpers.write_file(dir .. "/c_header2.c", src)
        local code, out = helpers.exec(("gcc -shared -fPIC -O1 -I %s -o %s %s"):format(
            helpers.shell_quote(ROOT .. "/core"), helpers.shell_quote(file), helpers.shell_quote(dir .. "/c_header2.c")))
        assert(code == 0, out)
        local p2 = assert(cplugin.load("c_header", file))
        assert.equal(1234, p2.priority)
        assert.equal(1000, p1.priority)
    end)
end)

describe("C plugins: in the gateway", function()
    local dir, mock, gw

    local function config(plugins_conf, extra_routes)
        local routes = {
            { id = "c", paths = { "/c" }, upstream = { nodes = { mock.addr } },
              plugins = { c_header = { header = "x-team", value = "search" } } },
            { id = "d", paths = { "/d" }, upstream = { nodes = { mock.addr } },
              plugins = { c_header = { value = "default-name" } } },
            { id = "probe", paths = { "/probe/*" }, upstream = { nodes = { mock.addr } },
              plugins = { c_probe = { mode = "x" } } },
            { id = "reload", paths = { "/reload" }, upstream = { nodes = { mock.addr } },
              plugins = { c_reload = {} } },
        }
        for _, r in ipairs(extra_routes or {}) do
            routes[#routes + 1] = r
        end
        return { node = { plugin_paths = { ROOT .. "/plugins", ROOT .. "/build/plugins", dir } },
                 routes = routes, global_plugins = plugins_conf }
    end

    local function sluice_t(cfg)
        local file = helpers.write_file(dir .. "/check-" .. math.random(1e9) .. ".yaml", helpers.json(cfg))
        return helpers.exec(("env SLUICE_HOME=%s %s -t -c %s"):format(helpers.shell_quote(ROOT),
            helpers.shell_quote(helpers.BIN), helpers.shell_quote(file)), 15)
    end

    setup(function()
        dir = helpers.tmpdir()
        build_plugins(dir)
        mock = helpers.mock_upstream()
        gw = helpers.start_gateway(config())
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("sets the configured header on the upstream request", function()
        local res = assert(helpers.http("GET", gw.url("/c")))
        assert.equal(200, res.status)
        assert.equal("search", res.json.headers["x-team"])
        res = assert(helpers.http("GET", gw.url("/d")))
        assert.equal(200, res.status)
        assert.equal("default-name", res.json.headers["x-c-plugin"])
    end)

    it("ends the request with 403 and a JSON body on x-block: 1, without reaching the upstream", function()
        mock:clear()
        local res = assert(helpers.http("POST", gw.url("/c"), { headers = { ["x-block"] = "1" }, body = "{}" }))
        assert.equal(403, res.status)
        assert.equal("application/json", res.headers["content-type"])
        assert.equal("blocked by c_header", res.json.error.message)
        assert.equal(0, #mock:requests())
        assert.matches("[c_header] blocked (x-block: 1)", gw:log(), 1, true)
    end)

    it("gives plugins method, path, headers and conf; applies request/response headers and removals", function()
        local res = assert(helpers.http("PUT", gw.url("/probe/a?q=1"), { body = "x",
            headers = { ["x-probe"] = "hi", ["x-remove-me"] = "gone" } }))
        assert.equal(200, res.status)
        local up = res.json.headers
        assert.equal('PUT /probe/a probe=hi conf={"mode":"x"}', up["x-probe-seen"])
        assert.is_nil(up["x-remove-me"])
        assert.is_nil(up["x-inject"])
        assert.equal("yes", res.headers["x-probe-resp"])
        assert.equal("200", res.headers["x-probe-status"]) -- header_filter saw the upstream status
    end)

    it("turns a bad return code into a logged 500 and a bare status into an empty-bodied response", function()
        local res = assert(helpers.http("GET", gw.url("/probe/fail")))
        assert.equal(500, res.status)
        assert.matches("c_probe rewrite failed: rewrite returned %-5", gw:log())
        res = assert(helpers.http("GET", gw.url("/probe/teapot")))
        assert.equal(418, res.status)
        assert.equal("", res.body)
    end)

    it("hot-reloads a changed .so on POST /admin/plugins/reload", function()
        for _ = 1, 4 do -- every worker
            local res = assert(helpers.http("GET", gw.url("/reload")))
            assert.equal("A", res.json.headers["x-reload"])
        end
        compile(dir, "c_reload", "-DVERSION_B")
        local res = assert(gw:admin("POST", "/admin/plugins/reload"))
        assert.equal(200, res.status)
        helpers.wait_until(function()
            for _ = 1, 4 do
                local r = assert(helpers.http("GET", gw.url("/reload")))
                if r.json.headers["x-reload"] ~= "B" then
                    return false
                end
            end
            return true
        end, 5, "workers did not switch to the rebuilt plugin")
    end)

    it("sluice -t accepts the config and rejects a bad value for the plugin's schema or check()", function()
        local code, out = sluice_t(config())
        assert.equal(0, code, out)

        local bad = config()
        bad.routes[1].plugins.c_header.value = 42
        code, out = sluice_t(bad)
        assert.is_not.equal(0, code)
        assert.matches("routes%[1%]%.plugins%.c_header%.value", out)

        bad = config()
        bad.routes[2].plugins.c_header.header = "Transfer-Encoding"
        code, out = sluice_t(bad)
        assert.is_not.equal(0, code)
        assert.matches("transfer-encoding is managed by the gateway", out, 1, true)

        bad = config()
        bad.routes[3].plugins.c_probe.mode = "forbidden"
        code, out = sluice_t(bad)
        assert.is_not.equal(0, code)
        assert.matches("mode: forbidden is not allowed here", out, 1, true)
    end)

    it("sluice -t rejects a plugin built for another ABI version", function()
        local cfg = config(nil, { { id = "old", paths = { "/old" }, upstream = { nodes = { mock.addr } },
                                    plugins = { c_old_abi = {} } } })
        local code, out = sluice_t(cfg)
        assert.is_not.equal(0, code)
        assert.matches("built for plugin ABI version 99, this sluice supports version 1", out, 1, true)
    end)
end)
