-- The Admin API's RAG endpoints (lua/sluice/admin.lua hands /admin/rag/... here; docs/admin-api.md):
--   GET  /admin/rag                 the indexes the config's ai-rag plugins define, with what each serves
--   GET  /admin/rag/NAME            one of them: {name, file, source, chunks, sources, dims, generation,
--                                   loaded_at, build, error (the last refused file)}
--   POST /admin/rag/NAME/rebuild    builds it again (files that changed; ?full=1 every file), then swaps it in:
--                                   requests in flight finish on the old index. 200 {stats, index}; a failed
--                                   build leaves the old file serving (500 with the reason)
local sluice = require("sluice")
local build = require("sluice.rag.build")

local _M = {}

local building = {} -- name -> true while a rebuild runs (one at a time per index)

local function definitions()
    local defs, err = build.definitions(sluice.each_conf)
    if not defs then return nil, err end
    return defs
end

local function describe(def)
    local d = build.resolve(def)
    local h = sluice.rag.open(d.file)
    h:reload() -- a file replaced on disk is looked at now (a refused one is reported in `error`)
    local info = h:info()
    info.name, info.source, info.provider = def.name, d.source, def.provider
    return info
end

--- Handles /admin/rag[/NAME[/rebuild]]; returns status, body table (the caller encodes it).
function _M.handle(method, name, action, query)
    local defs, err = definitions()
    if not defs then return 500, { error = { message = err } } end
    if name == "" then
        if method ~= "GET" then return 405, { error = { message = "method not allowed (GET)" } } end
        local list = {}
        for _, def in pairs(defs) do list[#list + 1] = describe(def) end
        table.sort(list, function(a, b) return a.name < b.name end)
        return 200, { list = list }
    end
    local def = defs[name]
    if not def then return 404, { error = { message = "no index named " .. name .. " in the config" } } end
    if action == "" then
        if method ~= "GET" then return 405, { error = { message = "method not allowed (GET)" } } end
        return 200, describe(def)
    elseif action == "rebuild" then
        if method ~= "POST" then return 405, { error = { message = "method not allowed (POST)" } } end
        if building[name] then return 409, { error = { message = "a rebuild of " .. name .. " is running" } } end
        building[name] = true
        local d = build.resolve(def)
        local ok, stats, berr = pcall(build.run, d, { full = query and query:find("full=1", 1, true) ~= nil,
            log = function(m) sluice.log.info("[rag] ", name, ": ", m) end })
        building[name] = nil
        if not ok then stats, berr = nil, stats end
        if not stats then
            return 500, { error = { message = "rebuild of " .. name .. " failed (the old index keeps serving): "
                .. tostring(berr) } }
        end
        local rc, rerr = sluice.rag.open(d.file):reload(true)
        if not rc then
            return 500, { error = { message = "the new index of " .. name .. " was refused: " .. tostring(rerr) } }
        end
        return 200, { stats = stats, index = describe(def) }
    end
    return 404, { error = { message = "not found" } }
end

return _M
