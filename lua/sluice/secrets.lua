-- sluice.secrets: secret fields kept encrypted in the state file (AES-256-GCM, core/common/aead.c), redacted in
-- Admin API answers, and the `sluice secrets rotate` command. docs/configuration.md, "Secrets at rest".
--
--   node.secrets: {key_file: /etc/sluice/master.key}   -- or the environment: SLUICE_MASTER_KEY (key_env names it)
--                  previous_key_files: [/etc/sluice/old.key]   -- still opened (values written before a rotation)
--   local kr, err = secrets.keyring(node)               -- nil without a key (then values are written in the clear)
--   local sealed = secrets.seal_entity(kr, "providers", "openai", obj, schema_of)
--   local plain, err = secrets.open_state(st, kr)       -- a copy of a state table with every sealed value opened
--
-- A key is 32 bytes written as 64 hex digits or base64 (a key file may also hold the 32 raw bytes); `openssl rand
-- -hex 32` makes one. Its id is the first 8 hex digits of its SHA-256. A sealed value is the string
-- "enc:v1:<key id>:<hex of nonce | ciphertext | tag>", sealed with the entity's kind, id and the field's path as
-- additional data, so a value moved to another field or entity does not open.
--
-- Which fields are secret: those a schema marks `secret = true`: provider api_key, secret_key and session_token
-- (sluice.config registers its entity schemas here), and fields of plugin configs whose plugin schema marks them
-- (routes, consumers, consumer groups, global plugins; plugin metadata with metadata_schema), and consumer
-- keys (the consumer schema marks its `keys` items).
local ffi = require("ffi")
local C = require("sluice.core")
local crypto = require("sluice.crypto")

local type, pairs, ipairs, tostring, tonumber, next, pcall = type, pairs, ipairs, tostring, tonumber, next, pcall
local byte, char, sub, fmt, find, concat = string.byte, string.char, string.sub, string.format, string.find,
    table.concat

pcall(ffi.cdef, [[
int sl_aead_seal(const uint8_t *key, const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len, uint8_t *out);
int sl_aead_open(const uint8_t *key, const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len, uint8_t *out);
]])

local OVERHEAD = 28 -- nonce + tag (core/common/aead.h)
local PREFIX = "enc:v1:"
local REDACTED = "***"

local _M = { PREFIX = PREFIX, REDACTED = REDACTED, DEFAULT_ENV = "SLUICE_MASTER_KEY" }

-- Entity schemas by kind (sluice.config registers PROVIDER and friends): the source of `secret = true` marks.
_M.ENTITY_SCHEMA = {}

---------------------------------------------------------------------------------------------------------------
-- keys

local function from_hex(h)
    if #h % 2 ~= 0 or find(h, "[^%x]") then return nil end
    return (h:gsub("%x%x", function(x) return char(tonumber(x, 16)) end))
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_VAL = {}
for i = 1, 64 do B64_VAL[byte(B64, i)] = i - 1 end
B64_VAL[byte("-")], B64_VAL[byte("_")] = 62, 63

local function from_b64(s)
    s = s:gsub("=+$", "")
    local out, acc, bits = {}, 0, 0
    for i = 1, #s do
        local v = B64_VAL[byte(s, i)]
        if not v then return nil end
        acc = acc * 64 + v
        bits = bits + 6
        if bits >= 8 then
            bits = bits - 8
            local b = math.floor(acc / 2 ^ bits)
            out[#out + 1] = char(b)
            acc = acc - b * 2 ^ bits
        end
    end
    return concat(out)
end

--- A key from its text (64 hex digits, base64 of 32 bytes, or 32 raw bytes): 32 bytes | nil, err. Never puts the
--- text into the error.
function _M.parse_key(text)
    if type(text) ~= "string" then return nil, "no key" end
    if #text == 32 and find(text, "[%z\1-\31\128-\255]") then return text end -- raw bytes from a key file
    local t = text:gsub("^%s+", ""):gsub("%s+$", "")
    local k
    if #t == 64 then
        k = from_hex(t)
    elseif #t == 43 or #t == 44 then
        k = from_b64(t)
    end
    if not k or #k ~= 32 then
        return nil, "a master key must be 32 bytes: 64 hex digits or base64 (openssl rand -hex 32), got " .. #t ..
            " characters"
    end
    return k
end

--- The id of a key: the first 8 hex digits of its SHA-256 (shown in errors and the rotate command; not secret).
function _M.key_id(key)
    return sub(crypto.sha256_hex(key), 1, 8)
end

local function read_key_file(path)
    local f, err = io.open(path, "rb")
    if not f then return nil, "cannot read the key file: " .. tostring(err) end
    local s = f:read("*a")
    f:close()
    local k, perr = _M.parse_key(s or "")
    if not k then return nil, path .. ": " .. perr end
    return k
end

--- The keys of node.secrets (a config's node section, as written or normalized): {current = {id, key}, by_id} |
--- nil when no key is configured | nil, err. The key comes from key_file, else from the environment variable
--- key_env (default SLUICE_MASTER_KEY); previous_key_files only open values.
function _M.keyring(node)
    local s = type(node) == "table" and type(node.secrets) == "table" and node.secrets or {}
    local key, err
    if type(s.key_file) == "string" then
        key, err = read_key_file(s.key_file)
        if not key then return nil, "node.secrets.key_file " .. err end
    else
        local env = type(s.key_env) == "string" and s.key_env or _M.DEFAULT_ENV
        local v = os.getenv(env)
        if v and v ~= "" then
            key, err = _M.parse_key(v)
            if not key then return nil, "environment variable " .. env .. ": " .. err end
        end
    end
    local by_id = {}
    for i, p in ipairs(type(s.previous_key_files) == "table" and s.previous_key_files or {}) do
        local k, perr = read_key_file(p)
        if not k then return nil, "node.secrets.previous_key_files[" .. i .. "] " .. perr end
        by_id[_M.key_id(k)] = k
    end
    if not key then
        if next(by_id) then return { current = nil, by_id = by_id } end
        return nil
    end
    local id = _M.key_id(key)
    by_id[id] = key
    return { current = { id = id, key = key }, by_id = by_id }
end

--- A keyring of one key (32 bytes) plus the keys of kr to open with (for rotation).
function _M.with_current(kr, key)
    local id = _M.key_id(key)
    local by_id = { [id] = key }
    for k, v in pairs(kr and kr.by_id or {}) do by_id[k] = by_id[k] or v end
    return { current = { id = id, key = key }, by_id = by_id }
end

---------------------------------------------------------------------------------------------------------------
-- sealing one value

local function hex(s)
    return (s:gsub(".", function(c) return fmt("%02x", byte(c)) end))
end

--- True when v is a sealed value.
function _M.is_sealed(v)
    return type(v) == "string" and sub(v, 1, #PREFIX) == PREFIX
end

--- Seals plain (a string) under the keyring's current key with additional data aad: the sealed string | nil, err.
function _M.seal(kr, aad, plain)
    local cur = kr and kr.current
    if not cur then return nil, "no master key" end
    local out = ffi.new("uint8_t[?]", #plain + OVERHEAD)
    local rc = C.sl_aead_seal(cur.key, aad, #aad, plain, #plain, out)
    if rc ~= 0 then return nil, "encryption failed (" .. tonumber(rc) .. ")" end
    return PREFIX .. cur.id .. ":" .. hex(ffi.string(out, #plain + OVERHEAD))
end

--- Opens a sealed value: the plain string | nil, err (an unknown key id, a wrong key, a value moved or changed).
function _M.open(kr, aad, v)
    local id, h = v:match("^enc:v1:(%x+):(%x*)$")
    if not id then return nil, "not a sealed value (enc:v1:<key id>:<hex>)" end
    local key = kr and kr.by_id[id]
    if not key then
        return nil, "sealed with key " .. id .. ", which is not configured (node.secrets; have: " ..
            (kr and kr.current and kr.current.id or "none") .. ")"
    end
    local raw = from_hex(h)
    if not raw or #raw < OVERHEAD then return nil, "a sealed value too short" end
    local n = #raw - OVERHEAD
    local out = ffi.new("uint8_t[?]", n > 0 and n or 1)
    local rc = C.sl_aead_open(key, aad, #aad, raw, #raw, out)
    if rc ~= 0 then return nil, "cannot be opened with key " .. id .. " (changed, or moved from another field)" end
    return ffi.string(out, n)
end

---------------------------------------------------------------------------------------------------------------
-- which fields are secret

local function join(path, k)
    if type(k) == "number" then return path .. "[" .. k .. "]" end
    if path == "" then return tostring(k) end
    return path .. "." .. tostring(k)
end

-- Calls fn(holder, key, path) for every string value of v that schema s marks secret.
local function walk_schema(s, v, path, fn, depth)
    if type(s) ~= "table" or depth > 32 then return end
    if s.secret and type(v) == "string" then return true end
    if type(v) ~= "table" then return end
    local props = s.properties
    for k, x in pairs(v) do
        local sub_s = props and props[k]
        if sub_s == nil then
            if type(k) == "number" and s.items then
                sub_s = s.items
            elseif type(k) == "string" and type(s.additionalProperties) == "table" then
                sub_s = s.additionalProperties
            end
        end
        local branches = sub_s and { sub_s } or {}
        for _, kw in ipairs({ "anyOf", "oneOf", "allOf" }) do
            for _, b in ipairs(type(s[kw]) == "table" and s[kw] or {}) do
                if type(b) == "table" and type(b.properties) == "table" and b.properties[k] then
                    branches[#branches + 1] = b.properties[k]
                end
            end
        end
        for _, b in ipairs(branches) do
            if walk_schema(b, x, join(path, k), fn, depth + 1) then
                fn(v, k, join(path, k))
                break
            end
        end
    end
end

local PLUGIN_HOLDERS = { routes = true, consumers = true, consumer_groups = true }

--- Calls fn(holder, key, path) for every secret string of entity obj of kind (path relative to the entity).
--- schema_of(plugin name) -> the plugin's schema (or metadata schema with meta = true) | nil.
function _M.each_secret(kind, obj, schema_of, fn)
    if type(obj) ~= "table" then return end
    local es = _M.ENTITY_SCHEMA[kind]
    if es then walk_schema(es, obj, "", fn, 0) end
    if not schema_of then return end
    local function plugin_map(map, base)
        if type(map) ~= "table" then return end
        for name, conf in pairs(map) do
            local ps = type(name) == "string" and schema_of(name)
            if ps and type(conf) == "table" then walk_schema(ps, conf, join(base, name), fn, 0) end
        end
    end
    if PLUGIN_HOLDERS[kind] then
        plugin_map(obj.plugins, "plugins")
    elseif kind == "global_plugins" then
        plugin_map(obj, "")
    elseif kind == "plugin_metadata" then
        -- the entity is one plugin's metadata: its id is the plugin's name (the caller passes it as schema_of's)
        local ms = schema_of(nil, true)
        if ms then walk_schema(ms, obj, "", fn, 0) end
    end
end

local function aad_of(kind, id, path)
    return "sluice-state|" .. kind .. "|" .. tostring(id or "") .. "|" .. path
end
_M.aad_of = aad_of

local function deep_copy(v, depth)
    if type(v) ~= "table" or (depth or 0) > 200 then return v end
    local c = {}
    for k, x in pairs(v) do c[k] = deep_copy(x, (depth or 0) + 1) end
    return setmetatable(c, getmetatable(v))
end

-- schema_of for one entity: plugin_metadata's id names the plugin whose metadata_schema applies.
local function entity_schema_of(kind, id, schema_of)
    if not schema_of then return nil end
    if kind == "plugin_metadata" then
        return function(_, meta) if meta then return schema_of(id, true) end end
    end
    return schema_of
end

--- each_secret for one entity (kind, id): plugin metadata's id names the plugin whose metadata_schema applies.
function _M.each_secret_of(kind, id, obj, schema_of, fn)
    return _M.each_secret(kind, obj, entity_schema_of(kind, id, schema_of), fn)
end

--- A copy of entity obj with every secret string sealed (a string that already is sealed stays as it is). With no
--- keyring, obj itself. Returns the copy | nil, err.
function _M.seal_entity(kr, kind, id, obj, schema_of)
    if not (kr and kr.current) or type(obj) ~= "table" then return obj end
    local out = deep_copy(obj)
    local err
    _M.each_secret(kind, out, entity_schema_of(kind, id, schema_of), function(holder, k, path)
        local v = holder[k]
        if err or _M.is_sealed(v) then return end
        local s, e = _M.seal(kr, aad_of(kind, id, path), v)
        if not s then err = path .. ": " .. e else holder[k] = s end
    end)
    if err then return nil, err end
    return out
end

-- Opens every sealed string inside entity value v (any field: a field no longer marked secret still opens).
local function open_all(kr, kind, id, v, path, errs, depth)
    if depth > 200 then return end
    for k, x in pairs(v) do
        local p = join(path, k)
        if type(x) == "string" then
            if _M.is_sealed(x) then
                local plain, err = _M.open(kr, aad_of(kind, id, p), x)
                if plain then
                    v[k] = plain
                else
                    errs[#errs + 1] = kind .. "." .. tostring(id or "") .. "." .. p .. ": " .. err
                end
            end
        elseif type(x) == "table" then
            open_all(kr, kind, id, x, p, errs, depth + 1)
        end
    end
end

-- The entities of a state table: fn(kind, id, obj) for each (global_plugins: id nil).
local function each_entity(st, fn)
    for kind, coll in pairs(st) do
        if kind == "global_plugins" then
            if type(coll) == "table" then fn(kind, nil, coll, function(nv) st.global_plugins = nv end) end
        elseif type(coll) == "table" then
            for id, obj in pairs(coll) do
                if type(obj) == "table" then fn(kind, id, obj, function(nv) coll[id] = nv end) end
            end
        end
    end
end
_M.each_entity = each_entity

--- A copy of state table st with every sealed value opened: copy | nil, err (every value that does not open).
function _M.open_state(st, kr)
    local out = deep_copy(st)
    local errs = {}
    each_entity(out, function(kind, id, obj)
        open_all(kr, kind, id, obj, "", errs, 0)
    end)
    if #errs > 0 then
        table.sort(errs)
        return nil, "cannot open secrets in the state file: " .. concat(errs, "; ")
    end
    return out
end

--- A copy of one entity's value v (kind, id) with every sealed string opened: copy | nil, err (every value that
--- does not open, named by kind.id.path, never by value). v itself when it holds nothing sealed.
function _M.open_entity(kr, kind, id, v)
    if type(v) ~= "table" then return v end
    local out = deep_copy(v)
    local errs = {}
    open_all(kr, kind, id, out, "", errs, 0)
    if #errs > 0 then
        table.sort(errs)
        return nil, concat(errs, "; ")
    end
    return out
end

--- The secret fields of one entity (kind, id) held in the clear, as paths (kind.id.path), or nil.
function _M.plain_in_entity(kind, id, obj, schema_of)
    local found
    _M.each_secret(kind, obj, entity_schema_of(kind, id, schema_of), function(holder, k, path)
        if not _M.is_sealed(holder[k]) and holder[k] ~= REDACTED then
            found = found or {}
            found[#found + 1] = kind .. "." .. tostring(id or "") .. "." .. path
        end
    end)
    if found then table.sort(found) end
    return found
end

--- Does state table st hold a secret in the clear (a secret field whose value is not sealed)? The paths, or nil.
function _M.plain_secrets(st, schema_of)
    local found
    each_entity(st, function(kind, id, obj)
        _M.each_secret(kind, obj, entity_schema_of(kind, id, schema_of), function(holder, k, path)
            if not _M.is_sealed(holder[k]) and holder[k] ~= REDACTED then
                found = found or {}
                found[#found + 1] = kind .. "." .. tostring(id or "") .. "." .. path
            end
        end)
    end)
    return found
end

--- A copy of an opened state table with every secret sealed under kr's current key: copy | nil, err; and the
--- number of values sealed.
function _M.seal_state(st, kr, schema_of)
    local out = deep_copy(st)
    local n, err = 0, nil
    each_entity(out, function(kind, id, obj, set)
        if err then return end
        local s, e = _M.seal_entity(kr, kind, id, obj, schema_of)
        if not s then err = e return end
        _M.each_secret(kind, s, entity_schema_of(kind, id, schema_of), function() n = n + 1 end)
        set(s)
    end)
    if err then return nil, err end
    return out, n
end

---------------------------------------------------------------------------------------------------------------
-- Admin API answers

--- A copy of entity obj with every secret replaced by "***" (obj itself when it has none).
function _M.redact(kind, obj, schema_of, id)
    local copy
    _M.each_secret(kind, obj, entity_schema_of(kind, id, schema_of), function() copy = true end)
    if not copy then return obj end
    copy = deep_copy(obj)
    _M.each_secret(kind, copy, entity_schema_of(kind, id, schema_of), function(holder, k) holder[k] = REDACTED end)
    return copy
end

-- The value at a path of keys in t, or nil.
local function at(t, keys)
    for _, k in ipairs(keys) do
        if type(t) ~= "table" then return nil end
        t = t[k]
    end
    return t
end

--- In a changed entity obj a client sent back, every secret that is "***" takes the stored value of old at the same
--- place (a GET then PUT keeps the secrets); in place.
function _M.unredact(kind, obj, old, schema_of, id)
    if type(old) ~= "table" then return end
    -- paths as key lists, found on obj, read on old
    local function keys_of(root, holder, k)
        local list = {}
        local function find_path(t, target, acc, depth)
            if depth > 64 or type(t) ~= "table" then return false end
            for kk, v in pairs(t) do
                acc[#acc + 1] = kk
                if t == target and kk == k then return true end
                if type(v) == "table" and find_path(v, target, acc, depth + 1) then return true end
                acc[#acc] = nil
            end
            return false
        end
        find_path(root, holder, list, 0)
        return list
    end
    _M.each_secret(kind, obj, entity_schema_of(kind, id, schema_of), function(holder, k)
        if holder[k] == REDACTED then
            local v = at(old, keys_of(obj, holder, k))
            if type(v) == "string" then holder[k] = v end
        end
    end)
end

--- A function schema_of(name, meta) -> the plugin's schema (metadata_schema with meta) over get(name) -> plugin
--- (a registry's lookup), never raising; nil without get.
function _M.schema_lookup(get)
    if not get then return nil end
    return function(name, meta)
        if type(name) ~= "string" then return nil end
        local ok, p = pcall(get, name)
        if not ok or type(p) ~= "table" then return nil end
        return meta and p.metadata_schema or p.schema
    end
end

---------------------------------------------------------------------------------------------------------------
-- `sluice [-c FILE] [-p PREFIX] secrets rotate [--new-key-file PATH | --new-key-env NAME] [--state-file PATH]`

local USAGE = [[usage: sluice [-c FILE] [-p PREFIX] secrets rotate [--new-key-file PATH | --new-key-env NAME]
                                                 [--state-file PATH]
  Opens every sealed secret of the state file with the configured keys (node.secrets: key_file or the variable
  key_env, default SLUICE_MASTER_KEY, and previous_key_files), seals every secret (also those still in the clear)
  under the new key, and rewrites the file atomically. Without a new key: under the configured one.
  Then point node.secrets at the new key (keep the old one in previous_key_files until every gateway runs with
  the new key) and restart, or send SIGHUP.
  With node.config_center: the same for every entity in etcd (each written back if unchanged meanwhile); the
  state file only with --state-file.
]]

local function read_new_key(args)
    if args.file then
        local k, err = read_key_file(args.file)
        if not k then return nil, "--new-key-file " .. err end
        return k
    elseif args.env then
        local v = os.getenv(args.env)
        if not v or v == "" then return nil, "--new-key-env: " .. args.env .. " is not set" end
        local k, err = _M.parse_key(v)
        if not k then return nil, "--new-key-env " .. args.env .. ": " .. err end
        return k
    end
    return nil
end

--- Runs `sluice secrets ...` (argv: the words after "secrets"); prints to stdout/stderr, returns the exit code.
function _M.cli(config_path, argv)
    local out, err_out = io.stdout, io.stderr
    if argv[1] ~= "rotate" then
        err_out:write(USAGE)
        return argv[1] == "help" and 0 or 2
    end
    local args = {}
    local i = 2
    while i <= #argv do
        local a = argv[i]
        if a == "--new-key-file" and argv[i + 1] then args.file, i = argv[i + 1], i + 2
        elseif a == "--new-key-env" and argv[i + 1] then args.env, i = argv[i + 1], i + 2
        elseif a == "--state-file" and argv[i + 1] then args.state, i = argv[i + 1], i + 2
        else
            err_out:write("sluice secrets rotate: unknown argument ", tostring(a), "\n", USAGE)
            return 2
        end
    end
    local config = require("sluice.config")
    local state = require("sluice.config.state")
    local doc, lines = require("sluice.yaml").load_file(config_path)
    if not doc then
        err_out:write("sluice: ", tostring(lines), "\n")
        return 1
    end
    local node = type(doc.node) == "table" and doc.node or {}
    local prefix = SLUICE_HOME or os.getenv("SLUICE_HOME") or "."
    local kr, kerr = _M.keyring(config.secrets_node(node, prefix))
    if kerr then
        err_out:write("sluice: ", kerr, "\n")
        return 1
    end
    local new_key, nerr = read_new_key(args)
    if nerr then
        err_out:write("sluice: ", nerr, "\n")
        return 1
    end
    if not new_key then
        if not (kr and kr.current) then
            err_out:write("sluice: no master key configured and none given (--new-key-file or --new-key-env)\n")
            return 1
        end
        new_key = kr.current.key
    end
    if type(node.config_center) == "table" and not args.state then -- the entities live in etcd
        return require("sluice.config.reseal").cli(config_path, kr, new_key, out, err_out)
    end
    local path = args.state or (type(node.state_file) == "string" and node.state_file) or (config_path .. ".state.json")
    local st, rerr, missing = state.read(path)
    if not st then
        err_out:write("sluice: ", rerr, "\n")
        return 1
    end
    if missing then
        out:write("sluice: ", path, " does not exist: nothing to rotate\n")
        return 0
    end
    local opened, oerr = _M.open_state(st, kr)
    if not opened then
        err_out:write("sluice: ", path, ": ", oerr, "\n")
        return 1
    end
    -- plugin schemas say which plugin config fields are secret: the registry of the config's plugin paths
    local paths = {}
    local list = type(node.plugin_paths) == "table" and node.plugin_paths or { "plugins" }
    for _, p in ipairs(list) do
        if type(p) == "string" then paths[#paths + 1] = config.resolve_path(prefix, p) end
    end
    local reg = require("sluice.plugins").stage(paths, {})
    local schema_of = _M.schema_lookup(function(n) return reg:get(n) end)
    local nkr = _M.with_current(kr, new_key)
    local sealed, n = _M.seal_state(opened, nkr, schema_of)
    if not sealed then
        err_out:write("sluice: ", tostring(n), "\n")
        return 1
    end
    local ok, werr = state.write(path, sealed)
    if not ok then
        err_out:write("sluice: ", tostring(werr), "\n")
        return 1
    end
    local before = {}
    for id in pairs(kr and kr.by_id or {}) do before[#before + 1] = id end
    table.sort(before)
    out:write(fmt("sluice: %s: %d secret value(s) sealed with key %s (keys configured before: %s)\n", path, n,
        nkr.current.id, #before > 0 and concat(before, ", ") or "none"))
    if not (kr and kr.current and kr.current.id == nkr.current.id) then
        out:write("sluice: now point node.secrets at the new key (key_file, or the variable key_env) and restart the ",
            "gateway or send it SIGHUP; keep the old key in previous_key_files until then\n")
    end
    return 0
end

return _M
