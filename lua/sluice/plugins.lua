-- Plugin registries: the plugin code of one VM, one generation at a time.
--
-- A Lua plugin is `<path>/<name>.lua` or `<path>/<name>/init.lua` returning
--   { name = "...", priority = 1000, version = "1.0", schema = {...}, check = fn?, rewrite/access/
--     header_filter/body_filter/log/init_worker = fn(conf, ctx) }
-- A C plugin is `<path>/<name>.so` exporting the descriptor described in core/plugin/plugin_abi.h.
--
-- A registry holds the code of the plugins a VM uses, each loaded once (when a config first names it, or all
-- at once for a reload: stage(paths, names)) with a hash of its files. The VM serves from one registry
-- (current(), switched with use()); a reload builds a new one beside it, and it only replaces the current one
-- once the config has been validated with it. A registry's `version` is the plugin code version it was published
-- as (sluice.master); its manifest() (name -> hash) travels in the config snapshot, so every worker can check it
-- runs the code that was validated.
local schema = require("sluice.schema")

local type, pairs, ipairs, pcall, loadfile, setmetatable, tostring = type, pairs, ipairs, pcall, loadfile,
    setmetatable, tostring
local sort, concat, format = table.sort, table.concat, string.format

local _M = {}

local PHASES = { "init_worker", "rewrite", "access", "header_filter", "body_filter", "log" }
_M.PHASES = PHASES

local function file_exists(p)
    local f = io.open(p, "rb")
    if f then
        f:close()
        return true
    end
    return false
end

local function read_file(p)
    local f = io.open(p, "rb")
    if not f then
        return nil
    end
    local s = f:read("*a")
    f:close()
    return s
end

local function quote(p)
    return "'" .. p:gsub("'", "'\\''") .. "'"
end

-- folder plugins may require their own modules: "<name>.driver" -> <path>/<name>/driver.lua
local function set_package_path(list)
    local extra = {}
    for _, p in ipairs(list) do
        extra[#extra + 1] = p .. "/?.lua;" .. p .. "/?/init.lua"
    end
    local base = package.path:gsub("^__plugins__;[^\n]-;__end__;", "")
    package.path = "__plugins__;" .. concat(extra, ";") .. ";__end__;" .. base
end

local function find(paths, name)
    if type(name) ~= "string" or not name:match("^[%w_%-]+$") then
        return nil, "invalid plugin name"
    end
    for _, p in ipairs(paths) do
        local base = p .. "/" .. name
        for _, f in ipairs({ base .. ".lua", base .. "/init.lua", base .. ".so" }) do
            if file_exists(f) then
                return f
            end
        end
    end
    return nil, format("plugin %q not found in plugin_paths (%s)", name, concat(paths, ", "))
end

-- What a plugin's code is: the file (a folder plugin: every .lua file under its folder), as a SHA-256 over paths
-- and contents. Equal hashes, equal code.
local function code_hash(file)
    local files = { file }
    if file:sub(-9) == "/init.lua" then
        files = {}
        local h = io.popen("find " .. quote(file:sub(1, -10)) .. " -type f -name '*.lua' 2>/dev/null")
        if h then
            for f in h:lines() do files[#files + 1] = f end
            h:close()
        end
        sort(files)
    end
    local parts = {}
    for i, f in ipairs(files) do
        parts[i] = f .. "\0" .. (read_file(f) or "(unreadable)")
    end
    local crypto = require("sluice.crypto")
    return crypto.sha256_hex(concat(parts, "\0\0"))
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
        -- submodules of a folder plugin are loaded again with it
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
    return p
end

--- Names of every plugin in the folders of paths (loaded or not), sorted.
local function available(paths)
    local names, seen = {}, {}
    for _, p in ipairs(paths) do
        local h = io.popen("ls -1 " .. quote(p) .. " 2>/dev/null")
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

---------------------------------------------------------------------------------------------------------------
-- registries

local Registry = {}
Registry.__index = Registry

-- Loads name from disk: an entry {plugin = p | nil, err = msg | nil, file, hash}, or nil, err when no file.
local function load_entry(paths, name)
    local file, err = find(paths, name)
    if not file then
        return nil, err
    end
    set_package_path(paths)
    local p, lerr = load_file(name, file)
    return { plugin = p, err = lerr, file = file, hash = code_hash(file) }
end

local function new(paths)
    local reg = setmetatable({ paths = paths, entries = {}, version = 0 }, Registry)
    -- what sluice.config wants as opts.plugins
    reg.for_config = { get = function(name) return reg:get(name) end }
    return reg
end

--- A new registry for paths (absolute folders, searched in order), with the plugins called names (a list; nil:
--- every plugin found on paths) loaded now; others load when first asked for. A plugin that fails to load is
--- kept as an error (a config that uses it is refused with it: see errors()).
function _M.stage(paths, names)
    local reg, saved = new(paths), package.path
    for _, name in ipairs(names or available(paths)) do
        reg.entries[name] = load_entry(paths, name)
    end
    package.path = saved -- the serving registry's folders until use(reg)
    return reg
end

--- Names of the plugins this registry has loaded (or tried to), sorted.
function Registry:loaded()
    local out = {}
    for name in pairs(self.entries) do out[#out + 1] = name end
    sort(out)
    return out
end

--- The plugin called name: p | nil, err. A name this registry has not seen (a file added since) is loaded now.
function Registry:get(name)
    local e = self.entries[name]
    if e == nil then
        local err
        e, err = load_entry(self.paths, name)
        if not e then
            return nil, err
        end
        self.entries[name] = e
    end
    if e.plugin then
        return e.plugin
    end
    return nil, e.err
end

--- The entry of name ({plugin, err, file, hash}) without loading anything, or nil.
function Registry:entry(name)
    return self.entries[name]
end

--- name -> code hash of every plugin that loaded.
function Registry:manifest()
    local m = {}
    for name, e in pairs(self.entries) do
        if e.plugin then m[name] = e.hash end
    end
    return m
end

--- The plugins that failed to load: { {plugin = name, message = err} }, sorted by name.
function Registry:errors()
    local out = {}
    for name, e in pairs(self.entries) do
        if not e.plugin then out[#out + 1] = { plugin = name, message = tostring(e.err) } end
    end
    sort(out, function(a, b) return a.plugin < b.plugin end)
    return out
end

--- Names whose code differs between this registry and other (changed, added, removed, or now loading / failing).
function Registry:changes(other)
    local out, seen = {}, {}
    local function differ(name)
        if seen[name] then return end
        seen[name] = true
        local a, b = self.entries[name], other and other.entries[name]
        if not a or not b or a.hash ~= b.hash or a.file ~= b.file or (a.plugin == nil) ~= (b.plugin == nil) then
            out[#out + 1] = name
        end
    end
    for name in pairs(self.entries) do differ(name) end
    for name in pairs(other and other.entries or {}) do differ(name) end
    sort(out)
    return out
end

--- True when this registry has exactly the code of manifest (name -> hash; plugins it has not loaded yet are
--- loaded now), else nil and why not.
function Registry:matches(manifest)
    local names = {}
    for name in pairs(manifest or {}) do names[#names + 1] = name end
    sort(names)
    for _, name in ipairs(names) do
        local p, err = self:get(name)
        local e = self.entries[name]
        if not p then
            return nil, format("plugin %s: %s", name, tostring(err))
        end
        if e.hash ~= manifest[name] then
            return nil, format("plugin %s: %s is not the code that was validated (it changed since)", name, e.file)
        end
    end
    return true
end

--- Same folders, same order?
function Registry:same_paths(paths)
    if #paths ~= #self.paths then return false end
    for i, p in ipairs(paths) do
        if self.paths[i] ~= p then return false end
    end
    return true
end

--- Names of every plugin on this registry's paths, plus those it holds.
function Registry:names()
    local names, seen = available(self.paths), {}
    for _, n in ipairs(names) do seen[n] = true end
    for n in pairs(self.entries) do
        if not seen[n] then names[#names + 1] = n end
    end
    sort(names)
    return names
end

--- Loads name from disk without keeping it (to show a file that appeared since): entry | nil, err.
function Registry:peek(name)
    return self.entries[name] or load_entry(self.paths, name)
end

---------------------------------------------------------------------------------------------------------------
-- the registry this VM serves from

local current = new({})

--- The registry requests run with.
function _M.current()
    return current
end

--- Makes reg the registry requests run with (after the config was validated with it).
function _M.use(reg)
    current = reg
    set_package_path(reg.paths)
end

--- Offers a registry this VM loaded and published (an Admin API reload), so applying its snapshot here does not
--- load the same files again. taken(version, paths) returns it once when it matches, else nil.
local offered
function _M.offer(reg)
    offered = reg
end

function _M.taken(version, paths)
    local reg = offered
    offered = nil
    if reg and reg.version == version and reg:same_paths(paths) then
        return reg
    end
    return nil
end

--- The plugin called name in the current registry: p | nil, err.
function _M.get(name)
    return current:get(name)
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

--- The current registry as sluice.config wants it (opts.plugins).
_M.for_config = { get = function(name) return current:get(name) end }

return _M
