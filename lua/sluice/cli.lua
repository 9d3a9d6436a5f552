-- Command-line tools run by `sluice [-c FILE] COMMAND ...` on the main thread (core/main.c), instead of starting
-- the gateway:
--
--   sluice [-c FILE] secrets rotate ...: sluice.secrets.cli (docs/configuration.md, "Secrets at rest")
--
--   sluice [-c NODE.yaml] etcd import [--merge] FILE
--       Validates FILE as a config (its routes, upstreams, providers, consumers, consumer groups, global plugins
--       and plugin metadata, checked with NODE.yaml's node settings and plugins) and writes its entities to the
--       config center NODE.yaml names (node.config_center). Without --merge, keys under the prefix that FILE does
--       not have are deleted (etcd then holds exactly FILE's config); with --merge they stay, and the merged
--       config must validate. Nodes watching the prefix apply it within a second.
local config = require("sluice.config")

local _M = {}

local USAGE = "usage: sluice [-c NODE.yaml] etcd import [--merge] FILE\n"
    .. "       sluice [-c FILE] [-p PREFIX] secrets rotate [--new-key-file PATH | --new-key-env NAME]\n"

local function prefix()
    return SLUICE_HOME or os.getenv("SLUICE_HOME") or "."
end

local function import(node_path, args)
    local mode, file = "replace", nil
    for _, a in ipairs(args) do
        if a == "--merge" then mode = "merge"
        elseif a:sub(1, 1) == "-" or file then io.stderr:write(USAGE) return 2
        else file = a end
    end
    if not file then io.stderr:write(USAGE) return 2 end
    local master = require("sluice.master")
    local settings, ncfg, reg = master.load_checked(node_path)
    if not settings then
        io.stderr:write(tostring(ncfg or "invalid configuration"), "\n")
        return 1
    end
    local conf = ncfg.node.config_center
    if not conf then
        io.stderr:write("sluice: ", node_path, " has no node.config_center: say where etcd is (see docs/cluster.md)\n")
        return 1
    end
    local yaml = require("sluice.yaml")
    local doc, lines = yaml.load_file(file)
    if not doc then io.stderr:write(tostring(lines), "\n") return 1 end
    if type(doc) ~= "table" then io.stderr:write(file, ": expected a mapping of sections\n") return 1 end
    local node = master.to_doc(ncfg).node
    doc.node = node -- the entities are checked against the node that will serve them
    local cfg, errs = config.validate(doc, { plugins = reg.for_config, prefix = prefix(), file = file,
                                             lines = type(lines) == "table" and lines or nil })
    if not cfg then
        io.stderr:write(config.format_errors(errs, file), "\nsluice: nothing imported\n")
        return 1
    end
    local sum, err = require("sluice.config.import").run(conf, cfg, mode, reg, node)
    if not sum then
        io.stderr:write("sluice: etcd import: ", tostring(err), "\n")
        return 1
    end
    io.stdout:write(string.format("sluice: imported %s into etcd (%s, prefix %s): %d written, %d deleted, %d "
        .. "unchanged; etcd revision %d\n", file, conf.endpoints[1], conf.prefix, sum.put, sum.deleted, sum.unchanged,
        sum.revision))
    return 0
end

--- Runs a command; returns the process exit code.
function _M.main(config_path, ...)
    local args = { ... }
    local cmd, sub = args[1], args[2]
    if cmd == "etcd" and sub == "import" then
        return import(config_path, { select(3, ...) })
    elseif cmd == "secrets" then -- sluice secrets rotate ... (docs/configuration.md, "Secrets at rest")
        return require("sluice.secrets").cli(config_path, { select(2, ...) })
    end
    io.stderr:write("sluice: unknown command ", tostring(cmd), (sub and (" " .. sub) or ""), "\n", USAGE)
    return 2
end

return _M
