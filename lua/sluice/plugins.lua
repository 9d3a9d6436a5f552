-- The plugin registry of one VM: finds plugins on the plugin paths, loads and checks them once, reloads them.
--
-- A Lua plugin is `<path>/<name>.lua` or `<path>/<name>/init.lua` returning
--   { name = "...", priority = 1000, version = "1.0", schema = {...}, check = fn?, rewrite/access/
--     header_filter/body_filter/log/init_worker = fn(conf, ctx) }
-- A C plugin is `<path>/<name>.so` exporting the descriptor described in core/plugin/plugin_abi.h.
local schema = require("sluice.schema")

local type, pairs, ipairs, pcall, loadfile, setmetatable = type, pairs, ipairs, pcall, loadfile, setmetatable
local sort, concat, format = table.sort, table.concat, string.format

local _M = {}

local PHASES = { "init_worker", "rewrite", "access", "header_filter", "body_filter", "log" }
_M.PHASES = PHASES

local paths = {}
local loaded = {}   -- name -> plugin
local files = {}    -- name -> file it came from

local function file_exists(p)
    local f = io.open(p, "rb")
    if f then
        f:close()
        return true
    end
    return false
end

--- Sets the folders searched for plugins (absolute paths, searched in order).
function _M.set_paths(list)
    paths = list
    -- folder plugins may require their own modules: "<name>.driver" -> <path>/<name>/driver.lua
    local extra = {}
    for _, p in ipairs(list) do
        extra[#extra + 1] = p .. "/?.lua;" .. p .. "/?/init.lua"
    end
    local base = package.path:gsub("^__plugins__;[^\n]-;__end__;", "")
    package.path = "__plugins__;" .. concat(extra, ";") .. ";__end__;" .. base
end

local function find(name)
    if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
        return nil, "invalid plugin name"
    end
    for _, p in ipairs(paths) do
        for _, f in ipairs({ p .. "/" .. name .. ".lua", p .. "/" .. name .. "/init.lua", p .. "/" .. name .. ".so" }) do
            if file_exists(f) then
                return f
            end
        end
    end
    return nil, format("plugin %q not found in plugin_paths (%s)", name, concat(paths, ", "))
end

--- Checks that a loaded module has the shape of a plugin.
function _M.check_module(name, p)
    if type(p) ~= "table" then
        return nil, "plugin file must return a table"
    end
    if p.name ~= name then
        return nil, format("plugin declares name %q but is loaded as %q", tostring(p.name), name)
    end
    if type(p.priority) ~= "number" then
        return nil, "plugin must have a numeric priority"
    end
    for _, ph in ipairs(PHASES) do
        if p[ph] ~= nil and type(p[ph]) ~= "function" then
            return nil, "phase " .. ph .. " must be a function"
        end
    end
    if p.schema ~= nil then
        local ok, err = schema.check_schema(p.schema)
        if not ok then
            return nil, "invalid schema: " .. tostring(err)
        end
    end
    if p.check ~= nil and type(p.check) ~= "function" then
        return nil, "check must be a function"
    end
    return true
end

local function load_file(name, file)
    local p, err
    if file:sub(-3) == ".so" then
        p, err = require("sluice.cplugin").load(name, file)
        if not p then
            return nil, err
        end
    else
        -- submodules of a folder plugin are reloaded with it
        for mod in pairs(package.loaded) do
            if type(mod) == "string" and mod:sub(1, #name + 1) == name .. "." then
                package.loaded[mod] = nil
            end
        end
        local chunk
        chunk, err = loadfile(file)
        if not chunk then
            return nil, err
        end
        local ok
        ok, p = pcall(chunk, name)
        if not ok then
            return nil, file .. ": " .. tostring(p)
        end
    end
    local ok, cerr = _M.check_module(name, p)
    if not ok then
        return nil, file .. ": " .. cerr
    end
    p.log = p.log -- keep
    return p
end

--- Returns the plugin called name, loading it on first use; nil, err when missing or broken.
function _M.get(name)
    local p = loaded[name]
    if p then
        return p
    end
    local file, err = find(name)
    if not file then
        return nil, err
    end
    p, err = load_file(name, file)
    if not p then
        return nil, err
    end
    loaded[name], files[name] = p, file
    return p
end

--- Validates conf for plugin name (schema defaults are filled in); returns conf | nil, errors ({path, message}).
function _M.validate_conf(name, conf)
    local p, err = _M.get(name)
    if not p then
        return nil, { { path = "", message = err } }
    end
    if p.schema then
        local ok, errs = schema.validate(p.schema, conf)
        if not ok then
            return nil, errs
        end
    end
    if p.check then
        local ok, res, cerr = pcall(p.check, conf)
        if not ok then
            return nil, { { path = "", message = "check failed: " .. tostring(res) } }
        end
        if not res then
            return nil, { { path = "", message = tostring(cerr or "invalid configuration") } }
        end
    end
    return conf
end

--- Re-reads every loaded plugin's file; a plugin that fails keeps its previous version. Returns errors.
function _M.reload()
    local errs = {}
    for name in pairs(loaded) do
        local file = find(name) or files[name]
        local p, err = load_file(name, file)
        if p then
            loaded[name], files[name] = p, file
        else
            errs[#errs + 1] = name .. ": " .. tostring(err)
        end
    end
    sort(errs)
    return errs
end

--- Names of every plugin on the plugin paths (loaded or not).
function _M.available()
    local names, seen = {}, {}
    for _, p in ipairs(paths) do
        local h = io.popen("ls -1 '" .. p:gsub("'", "") .. "' 2>/dev/null")
        if h then
            for entry in h:lines() do
                local n = entry:match("^([%w_%-]+)%.lua$") or entry:match("^([%w_%-]+)%.so$")
                    or (file_exists(p .. "/" .. entry .. "/init.lua") and entry:match("^([%w_%-]+)$"))
                if n and not seen[n] then
                    seen[n] = true
                    names[#names + 1] = n
                end
            end
            h:close()
        end
    end
    sort(names)
    return names
end

--- The registry as config.lua wants it (opts.plugins).
_M.for_config = { get = function(name) return _M.get(name) end }

return _M
