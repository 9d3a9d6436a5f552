-- fuzz_yaml: checks of the YAML loader and the config validator on one fuzzed document. Any error raised here
-- is a finding (fuzz_yaml aborts with it):
--   * yaml.load_string raises nothing: it returns doc, lines or nil and an error located as "NAME:LINE:COL: ";
--   * a loaded doc is a table within the loader's limits (nesting depth, number of values), whose line map
--     gives positive line numbers no greater than the document's line count;
--   * config.validate(doc) (plugin configs checked by the bundled plugins' schemas) raises nothing: it returns a
--     config or a list of errors, each with a path and a message (a hostile config gets a clear error, never a
--     crash).
local yaml = require("sluice.yaml")
local config = require("sluice.config")
local fmt = string.format
local type, pairs, ipairs, tostring, error, pcall, next = type, pairs, ipairs, tostring, error, pcall, next

-- the bundled plugins, so their schemas and checks run too (a registry as the master and workers make one)
local plugins = require("sluice.plugins").stage({ SLUICE_HOME .. "/plugins" }).for_config

local MAX_DEPTH, MAX_NODES = fz.yaml_max_depth, fz.yaml_max_nodes

-- Depth of nested tables and number of values; tables reached twice (shared) are counted each time, as
-- the loader counts alias copies.
local function measure(t, depth, seen)
    if depth > MAX_DEPTH + 1 then
        error(fmt("loaded doc nests deeper than the limit (%d)", MAX_DEPTH))
    end
    if seen[t] then error("loaded doc contains a cycle") end
    seen[t] = true
    local n = 0
    for k, v in pairs(t) do
        n = n + 1
        if type(v) == "table" then n = n + measure(v, depth + 1, seen) end
    end
    seen[t] = nil
    return n
end

return function(s)
    local ok, doc, lines = pcall(yaml.load_string, s, "fuzz.yaml")
    if not ok then error("yaml.load_string raised: " .. tostring(doc)) end
    if doc == nil then
        if type(lines) == "string" and lines:find("merge key", 1, true) and fz.known("yaml-merge-location") then
            return
        end
        if type(lines) ~= "string" or not lines:find("^fuzz%.yaml:%d+:%d+: .") then
            error(fmt("load error without a location: %q", tostring(lines)))
        end
        return
    end
    if type(doc) ~= "table" or type(lines) ~= "table" then
        error(fmt("load_string returned %s, %s", type(doc), type(lines)))
    end
    local n = measure(doc, 1, {})
    if n > MAX_NODES then error(fmt("loaded doc has %d values, over the limit %d", n, MAX_NODES)) end
    -- lines as YAML counts them, at most: "\r", "\n" (or both), NEL, LS and PS all break lines
    local nlines = 1
    for _ in s:gmatch("[\r\n]") do nlines = nlines + 1 end
    for _, b in ipairs({ "\194\133", "\226\128\168", "\226\128\169" }) do
        for _ in s:gmatch(b) do nlines = nlines + 1 end
    end
    for path, line in pairs(lines) do
        if type(path) ~= "string" or type(line) ~= "number" or line < 1 or line > nlines + 1 then
            error(fmt("line map: %s -> %s (document has %d lines)", tostring(path), tostring(line), nlines))
        end
    end
    local vok, cfg, errs = pcall(config.validate, doc, { lines = lines, plugins = plugins })
    if not vok then error("config.validate raised: " .. tostring(cfg)) end
    if cfg == nil then
        if type(errs) ~= "table" or next(errs) == nil then error("config.validate failed without errors") end
        for _, e in pairs(errs) do
            if type(e) ~= "table" or type(e.message) ~= "string" or (e.path ~= nil and type(e.path) ~= "string") then
                error("config.validate gave a malformed error entry")
            end
        end
    end
end
