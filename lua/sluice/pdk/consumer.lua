-- sluice.consumer: who is calling, and what that caller may use. Phases: every request phase.
--
--   local c = sluice.consumer.find_by_key(key, ctx)   -- the consumer owning an API key, or nil
--   local c = sluice.consumer.find(name, ctx)         -- a consumer of the config by name, or nil
--   sluice.consumer.set(c, ctx, {"staff"})            -- ctx.consumer = c (+ groups an auth plugin found)
--   local c = sluice.consumer.get(ctx)                -- ctx.consumer or nil
--   for _, g in ipairs(sluice.consumer.groups(ctx)) do ... end    -- the caller's group names
--   local ok, why = sluice.consumer.allowed("model", "gpt-4o", ctx)   -- "route" | "provider" | "model"
--
-- Keys: consumers' keys are kept as SHA-256 digests ("sha256:<64 hex>"; the config loader and the Admin API hash
-- plain keys). find_by_key hashes the presented key once and looks the digest up in an index built once per
-- config version, then compares the digests in constant time: no plain key is held, and no comparison leaks how
-- much of a key matched.
--
-- Roles: a consumer and each consumer group may carry `allow` and `deny` lists of routes, providers and models
-- (names or globs: `gpt-4o*`, `claude-?-haiku`). A name matching any `deny` of the consumer or of one of its
-- groups is refused; otherwise, when some `allow` list of that kind exists among them, the name must match one
-- of them (allows add up over the consumer and its groups); with no `allow` list of that kind, everything is
-- allowed. Without a consumer nothing is restricted here (authentication plugins decide about anonymous callers).
local base = require("sluice.pdk.base")
local crypto = require("sluice.crypto")

local get_ctx = base.get_ctx
local type, ipairs, pairs, error, setmetatable, tostring = type, ipairs, pairs, error, setmetatable, tostring
local find, gsub, sub, lower = string.find, string.gsub, string.sub, string.lower

local _M = {}

local HASH_PREFIX = "sha256:"

--- True when k is a stored key digest ("sha256:" and 64 hex digits).
function _M.is_hashed(k)
    return type(k) == "string" and #k == 71 and sub(k, 1, 7) == HASH_PREFIX and not find(k, "[^%x]", 8)
end

--- The stored form of a key: its digest "sha256:<64 hex>" (a digest stays as it is).
function _M.hash_key(k)
    if _M.is_hashed(k) then
        return lower(k)
    end
    return HASH_PREFIX .. crypto.sha256_hex(k)
end

---------------------------------------------------------------------------------------------------------------
-- per config: key index, consumers by name, compiled roles

local per_config = setmetatable({}, { __mode = "k" })

-- A glob ("gpt-4o*", "claude-?-haiku") as an anchored Lua pattern.
local function glob_pattern(g)
    local p = gsub(g, "[%^%$%(%)%%%.%[%]%+%-]", "%%%0")
    p = gsub(p, "%*", ".*")
    p = gsub(p, "%?", ".")
    return "^" .. p .. "$"
end

-- {kind = {exact = {name = true}, patterns = {...}}} from an allow/deny object, or nil when it names nothing.
local KINDS = { routes = "route", providers = "provider", models = "model" }
local function compile_list(obj)
    if type(obj) ~= "table" then
        return nil
    end
    local out
    for field, kind in pairs(KINDS) do
        local list = obj[field]
        if type(list) == "table" and #list > 0 then
            local e = { exact = {}, patterns = {} }
            for _, name in ipairs(list) do
                if type(name) == "string" then
                    if find(name, "[%*%?]") then
                        e.patterns[#e.patterns + 1] = glob_pattern(name)
                    else
                        e.exact[name] = true
                    end
                end
            end
            out = out or {}
            out[kind] = e
        end
    end
    return out
end

local function compile_rules(entity)
    if type(entity) ~= "table" then
        return nil
    end
    local allow, deny = compile_list(entity.allow), compile_list(entity.deny)
    if not allow and not deny then
        return nil
    end
    return { allow = allow or {}, deny = deny or {} }
end

local function state_of(cfg)
    local st = per_config[cfg]
    if st then
        return st
    end
    st = { keys = {}, digests = {}, by_name = {}, rules = {}, group_rules = {}, any_rules = false }
    for _, c in ipairs(type(cfg.consumers) == "table" and cfg.consumers or {}) do
        if type(c) == "table" and type(c.name) == "string" then
            st.by_name[c.name] = c
            for _, k in ipairs(type(c.keys) == "table" and c.keys or {}) do
                if type(k) == "string" and k ~= "" then
                    local digest = crypto.from_hex(sub(_M.hash_key(k), 8))
                    if digest then
                        st.keys[digest] = c
                        local d = st.digests[c] or {}
                        d[#d + 1] = digest
                        st.digests[c] = d
                    end
                end
            end
            local r = compile_rules(c)
            if r then
                st.rules[c.name], st.any_rules = r, true
            end
        end
    end
    for name, g in pairs(type(cfg.consumer_groups) == "table" and cfg.consumer_groups or {}) do
        local r = compile_rules(g)
        if r then
            st.group_rules[name], st.any_rules = r, true
        end
    end
    per_config[cfg] = st
    return st
end

---------------------------------------------------------------------------------------------------------------
-- lookups

--- The consumer owning `key` (a client's API key, plain) in the request's config, or nil.
function _M.find_by_key(key, ctx)
    ctx = ctx or get_ctx()
    if type(key) ~= "string" or key == "" or type(ctx.config) ~= "table" then
        return nil
    end
    local digest = crypto.sha256(key)
    local st = state_of(ctx.config)
    local c = st.keys[digest]
    if not c then
        return nil
    end
    -- the table look-up found it by digest already; compare once more in constant time, digest to digest
    -- (the first digest outside the loop: a consumer has one key as a rule, and a loop of one round is never
    -- compiled by LuaJIT and keeps the caller's trace from compiling too)
    local ds = st.digests[c]
    local ok = crypto.equal(ds[1], digest)
    for i = 2, #ds do
        ok = crypto.equal(ds[i], digest) or ok
    end
    return ok and c or nil
end

--- The consumer called `name` in the request's config, or nil.
function _M.find(name, ctx)
    ctx = ctx or get_ctx()
    if type(name) ~= "string" or type(ctx.config) ~= "table" then
        return nil
    end
    return state_of(ctx.config).by_name[name]
end

local EMPTY = {}

-- The group names of lists a and b (either may be nil), strings only, each once.
local function merge_groups(a, b)
    local list, seen = {}, {}
    for _, src in ipairs({ a, b }) do
        if type(src) == "table" then
            for _, g in ipairs(src) do
                if type(g) == "string" and not seen[g] then
                    seen[g] = true
                    list[#list + 1] = g
                end
            end
        end
    end
    return list
end

-- A consumer's groups list (config tables do not change) -> its merged list, shared by the requests of that
-- consumer: groups() hands it out to be read, not changed.
local own_groups = setmetatable({}, { __mode = "k" })

--- Makes c the request's consumer (ctx.consumer); `groups` (optional) adds group names an authentication plugin
--- found (e.g. a token's claim) to the consumer's own. c may be a table made by the plugin ({name = ...}) for a
--- caller the config does not list.
function _M.set(c, ctx, groups)
    ctx = ctx or get_ctx()
    if type(c) ~= "table" or type(c.name) ~= "string" then
        error("consumer must be a table with a name", 2)
    end
    if groups ~= nil and type(groups) ~= "table" then
        error("groups must be a list of names", 2)
    end
    ctx.consumer = c
    ctx._groups_of = c
    if groups == nil then -- the consumer's own groups (key-auth on every request): merged once per groups list
        local own = c.groups
        if type(own) ~= "table" then
            ctx._consumer_groups = EMPTY
            return
        end
        local list = own_groups[own]
        if not list then
            list = merge_groups(own)
            own_groups[own] = list
        end
        ctx._consumer_groups = list
        return
    end
    ctx._consumer_groups = merge_groups(c.groups, groups)
end

--- The request's consumer, or nil.
function _M.get(ctx)
    ctx = ctx or get_ctx()
    return ctx.consumer
end

--- The caller's group names (the consumer's groups and those set with it); an empty list without a consumer. The
--- list is shared: read it, do not change it.
function _M.groups(ctx)
    ctx = ctx or get_ctx()
    local c = ctx.consumer
    if type(c) ~= "table" then
        return EMPTY
    end
    if ctx._groups_of == c then -- set() merged them
        return ctx._consumer_groups
    end
    return type(c.groups) == "table" and c.groups or EMPTY
end

---------------------------------------------------------------------------------------------------------------
-- roles

local function matches(e, names)
    if not e then
        return false
    end
    for i = 1, #names do
        local n = names[i]
        if e.exact[n] then
            return true
        end
        for _, p in ipairs(e.patterns) do
            if find(n, p) then
                return true
            end
        end
    end
    return false
end

-- The rule sets that apply to the caller: {label, rules} pairs.
local function rule_sets(st, ctx)
    local c = ctx.consumer
    local out = {}
    local r = st.rules[c.name]
    if r then
        out[#out + 1] = { "consumer " .. c.name, r }
    end
    for _, g in ipairs(_M.groups(ctx)) do
        local gr = st.group_rules[g]
        if gr then
            out[#out + 1] = { "group " .. g, gr }
        end
    end
    return out
end

--- May the caller use `name` of `kind` ("route", "provider", "model")? `name` may be a list of names (a model's
--- alias and the name sent upstream): a deny on any of them refuses, an allow of any of them admits.
--- true | false, why.
function _M.allowed(kind, name, ctx)
    ctx = ctx or get_ctx()
    if kind ~= "route" and kind ~= "provider" and kind ~= "model" then
        error("kind must be route, provider or model", 2)
    end
    local c = rawget(ctx, "consumer")
    if type(c) ~= "table" or type(ctx.config) ~= "table" or name == nil then
        return true
    end
    local st = state_of(ctx.config)
    if not st.any_rules then
        return true
    end
    local names = type(name) == "table" and name or { name }
    local sets = rule_sets(st, ctx)
    for _, s in ipairs(sets) do
        if matches(s[2].deny[kind], names) then
            return false, kind .. " " .. tostring(names[1]) .. " is denied to consumer " .. c.name
                .. " (" .. s[1] .. ")"
        end
    end
    local has_allow = false
    for _, s in ipairs(sets) do
        local a = s[2].allow[kind]
        if a then
            has_allow = true
            if matches(a, names) then
                return true
            end
        end
    end
    if has_allow then
        return false, kind .. " " .. tostring(names[1]) .. " is not allowed for consumer " .. c.name
    end
    return true
end

--- The names of `list` the caller may use as `kind` (the list itself when nothing is restricted).
function _M.filter(kind, list, ctx)
    ctx = ctx or get_ctx()
    if type(ctx.consumer) ~= "table" or type(ctx.config) ~= "table" or not state_of(ctx.config).any_rules then
        return list
    end
    local out = {}
    for _, n in ipairs(list) do
        if _M.allowed(kind, n, ctx) then
            out[#out + 1] = n
        end
    end
    return out
end

_M._glob_pattern = glob_pattern

return _M
