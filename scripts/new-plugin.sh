#!/usr/bin/env bash
# Scaffolds a Lua plugin and its specs:
#   scripts/new-plugin.sh NAME [PLUGIN_DIR [SPEC_DIR]]
# writes PLUGIN_DIR/NAME.lua (default plugins/) and SPEC_DIR/NAME/{00-config,01-unit,02-integration}_spec.lua
# (default spec/plugins/). Run from the repo root; the generated specs pass as generated:
#   luajit /usr/bin/busted spec/plugins/NAME
# Relative directories are taken from the repo root. Existing files are never overwritten.
set -euo pipefail

usage() { echo "usage: $0 NAME [PLUGIN_DIR [SPEC_DIR]]   (NAME: lower-case letters, digits, - and _)" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 3 ] || usage
name=$1
[[ "$name" =~ ^[a-z0-9][a-z0-9_-]{0,63}$ ]] || usage

root=$(cd "$(dirname "$0")/.." && pwd)
plugin_dir=${2:-plugins}
spec_dir=${3:-spec/plugins}
abs() { case "$1" in /*) echo "$1" ;; *) echo "$root/$1" ;; esac; }
plugin_abs=$(abs "$plugin_dir")
spec_abs=$(abs "$spec_dir")/$name
plugin_file=$plugin_abs/$name.lua

for f in "$plugin_file" "$spec_abs/00-config_spec.lua" "$spec_abs/01-unit_spec.lua" "$spec_abs/02-integration_spec.lua"; do
    if [ -e "$f" ]; then echo "$f exists; not overwriting" >&2; exit 1; fi
done
mkdir -p "$plugin_abs" "$spec_abs"

# How the specs find the plugin folder: relative to the repo root when inside it, else absolute. The unit specs
# have unit_helpers (unit.ROOT), the integration spec has helpers (helpers.ROOT); the bundled folder is already in
# the gateway's plugin_paths.
case "$plugin_abs" in
    "$root"/*) rel=${plugin_abs#"$root"/}
               dir_expr="unit.ROOT .. \"/$rel\""
               gw_dir_expr="helpers.ROOT .. \"/$rel\"" ;;
    *) dir_expr="\"$plugin_abs\""
       gw_dir_expr=$dir_expr ;;
esac
if [ "$plugin_abs" = "$root/plugins" ]; then
    gw_paths="helpers.ROOT .. \"/plugins\""
else
    gw_paths="helpers.ROOT .. \"/plugins\", $gw_dir_expr"
fi
header="x-$name"

cat > "$plugin_file" <<EOF
-- $name: TODO one line on what it does.
--
--   plugins:
--     $name: {value: "hello"}
--
-- Phases run by descending priority; rewrite/access may end the request with \`return status, body\`.
-- See docs/plugins.md for the PDK (require("sluice")) and what each phase may do.
local sluice = require("sluice")

local request = sluice.request

local _M = {
    name = "$name",
    version = "0.1.0",
    priority = 1000,
    schema = {
        type = "object",
        additionalProperties = false,
        properties = {
            header = { type = "string", pattern = "^[%w%-]+\$", default = "$header" },
            value = { type = "string", default = "on" },
            deny = { type = "boolean", default = false },
        },
    },
}

-- Optional extra checks after the schema: return true | nil, "message".
function _M.check(conf)
    return true
end

-- Before routing decisions of other plugins: change the request here.
function _M.rewrite(conf, ctx)
end

-- Auth and limits: end the request here when needed.
function _M.access(conf, ctx)
    if conf.deny then
        return 403, { error = { message = "denied by $name", type = "invalid_request_error", code = "forbidden" } }
    end
    request.set_header(conf.header, conf.value, ctx)
end

-- After the upstream answered, before the client gets the head.
function _M.header_filter(conf, ctx)
    sluice.response.set_header(conf.header, conf.value, ctx)
end

-- After the response went out (never delays the client).
function _M.log(conf, ctx)
end

return _M
EOF

cat > "$spec_abs/00-config_spec.lua" <<EOF
-- $name: config validation.
local unit = require("unit_helpers")

describe("$name config", function()
    local plugin = unit.load_plugin("$name", $dir_expr)

    it("has the plugin shape", function()
        assert.equal("$name", plugin.name)
        assert.is_number(plugin.priority)
    end)

    it("fills defaults", function()
        local conf = assert(unit.validate(plugin, {}))
        assert.equal("$header", conf.header)
        assert.equal("on", conf.value)
    end)

    it("rejects a bad field with its path", function()
        local conf, errs, path = unit.validate(plugin, { value = 42 })
        assert.is_nil(conf)
        assert.equal("value", path)
        assert.is_string(errs[1].message)
        local _, _, upath = unit.validate(plugin, { nope = true })
        assert.equal("nope", upath)
    end)
end)
EOF

cat > "$spec_abs/01-unit_spec.lua" <<EOF
-- $name: phases on fake requests through the real PDK.
local unit = require("unit_helpers")

describe("$name", function()
    local plugin = unit.load_plugin("$name", $dir_expr)

    it("sets the header on the upstream request", function()
        local res = unit.run(plugin, "access", { value = "hello" }, {
            method = "POST", path = "/v1/chat/completions",
            headers = { authorization = "Bearer k" },
            body = { messages = { { role = "user", content = "hi" } } },
        })
        assert.is_nil(res.status)
        assert.is_nil(res.error)
        assert.equal("hello", res.headers["$header"])
        assert.equal("hi", res.json.messages[1].content)
    end)

    it("ends the request with 403 when deny is set", function()
        local res = unit.run(plugin, "access", { deny = true }, { path = "/x" })
        assert.equal(403, res.status)
        assert.equal("forbidden", res.body.error.code)
    end)

    it("sets the header on the response", function()
        local res = unit.run(plugin, "header_filter", {}, { path = "/x", response = { status = 200 } })
        assert.equal("on", res.response_headers["$header"])
    end)
end)
EOF

cat > "$spec_abs/02-integration_spec.lua" <<EOF
-- $name: through the real gateway (build/sluice) with a mock upstream.
local helpers = require("helpers")

describe("$name (gateway)", function()
    local mock, gw

    setup(function()
        mock = helpers.mock_upstream() -- echoes what it receives
        gw = helpers.start_gateway({
            node = { plugin_paths = { $gw_paths } },
            routes = {
                { id = "on", paths = { "/on/*" }, upstream = { nodes = { mock.addr } },
                  plugins = { ["$name"] = { value = "hello" } } },
                { id = "deny", paths = { "/deny/*" }, upstream = { nodes = { mock.addr } },
                  plugins = { ["$name"] = { deny = true } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("adds the header upstream and on the response", function()
        local res = assert(helpers.http("POST", gw.url("/on/v1/chat/completions"),
            { body = { messages = { { role = "user", content = "hi" } } } }))
        assert.equal(200, res.status)
        assert.equal("hello", mock:last().headers["$header"])
        assert.equal("hello", res.headers["$header"])
    end)

    it("denies without calling the upstream", function()
        mock:clear()
        local res = assert(helpers.http("GET", gw.url("/deny/x")))
        assert.equal(403, res.status)
        assert.equal(0, #mock:requests())
    end)
end)
EOF

echo "wrote $plugin_file"
echo "wrote $spec_abs/{00-config,01-unit,02-integration}_spec.lua"
echo "run:  luajit /usr/bin/busted ${spec_abs#"$root"/}"
