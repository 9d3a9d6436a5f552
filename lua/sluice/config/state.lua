-- The state file: Admin API changes, kept next to the config and laid over it at every load.
-- JSON {version = 1, <kind> = {<id> = entity | false (deleted)}, global_plugins = map | false}.
-- Used through sluice.config (state_read, state_put); load() calls overlay().
local cjson = require("cjson")
local schema = require("sluice.schema")

local type, pairs, ipairs, tostring, pcall, next = type, pairs, ipairs, tostring, pcall, next
local sort = table.sort
local is_array = schema.is_array

local _M = {}

local function join(path, key)
    if type(key) == "number" then return path .. "[" .. key .. "]" end
    if path == "" then return tostring(key) end
    return path .. "." .. tostring(key)
end

local function strip_nulls(v, depth)
    if type(v) ~= "table" or depth > 100 then return v end
    local arr = next(v) ~= nil and is_array(v)
    local out, n = {}, 0
    for k, x in pairs(v) do
        if x ~= cjson.null then
            if arr then n = n + 1 end
            out[k] = strip_nulls(x, depth + 1)
        end
    end
    if arr then -- keep lists dense when nulls were dropped
        local dense = {}
        for i = 1, #v do if v[i] ~= cjson.null then dense[#dense + 1] = out[i] end end
        return dense
    end
    return out
end

local ENOENT = 2

-- The file's text; nil when it does not exist (ENOENT: no state yet); false, err for any other failure (a
-- directory, no permission, an I/O error), which must never be taken for "no state": starting from the YAML
-- alone would bring deleted entities back, and the next write would drop every earlier change.
local function read_file(path)
    local f, err, code = io.open(path, "rb")
    if not f then
        if code == ENOENT then return nil end
        local why = tostring(err):gsub("^" .. path:gsub("%p", "%%%0") .. ": ", "")
        return false, path .. ": cannot read the state file: " .. why
    end
    local s, rerr = f:read("*a")
    f:close()
    if s == nil then return false, path .. ": cannot read the state file: " .. tostring(rerr) end
    return s
end

--- Reads a state file; returns the state table ({version=1}, nil, true when the file does not exist) | nil, err.
--- A file that exists but cannot be read (or parsed) is an error, never "no state".
function _M.read(path)
    local s, err = read_file(path)
    if s == false then return nil, err end
    if not s then return { version = 1 }, nil, true end
    local ok, st = pcall(cjson.decode, s)
    if not ok or type(st) ~= "table" then return nil, path .. ": invalid JSON state file: " .. tostring(st) end
    if st.version ~= 1 then return nil, path .. ": unsupported state file version " .. tostring(st.version) end
    return strip_nulls(st, 0)
end

-- Applies the state file's entities over the YAML doc; marks overlaid entity paths with their origin.
-- KINDS: entity kinds in order; ID_FIELD: kind -> field holding the id for kinds written as lists.
function _M.overlay(doc, st, origin, KINDS, ID_FIELD)
    for _, kind in ipairs(KINDS) do
        local ch = st[kind]
        if kind == "global_plugins" then
            if ch ~= nil then
                doc.global_plugins = ch ~= false and ch or nil
                origin.global_plugins = true
            end
        elseif type(ch) == "table" then
            local idf = ID_FIELD[kind]
            local cur = doc[kind]
            if type(cur) ~= "table" then cur = kind == "routes" and {} or {} ; doc[kind] = cur end
            local list = next(cur) ~= nil and is_array(cur) or (kind == "routes")
            local ids = {}
            for id in pairs(ch) do ids[#ids + 1] = id end
            sort(ids)
            for _, id in ipairs(ids) do
                local o = ch[id]
                if type(o) == "table" and idf then o[idf] = id end
                if list then
                    local at
                    for i, e in ipairs(cur) do if type(e) == "table" and e[idf] == id then at = i end end
                    if not at and o ~= false then at = #cur + 1 end
                    if at then
                        cur[at] = o -- false keeps the slot so YAML line numbers of later entries stay right
                        origin[kind .. "[" .. at .. "]"] = true
                    end
                else
                    cur[id] = o ~= false and o or nil
                    origin[join(kind, id)] = true
                end
            end
        end
    end
end

local ffi = require("ffi")
pcall(ffi.cdef, [[
int open(const char *path, int flags, ...);
long write(int fd, const void *buf, size_t n);
int fsync(int fd);
int close(int fd);
int rename(const char *from, const char *to);
int unlink(const char *path);
char *strerror(int errnum);
]])

local EINTR = 4
local O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_DIRECTORY, O_CLOEXEC = 0, 1, 64, 128, 131072, 65536, 524288
if ffi.arch == "arm64" or ffi.arch == "arm" then O_DIRECTORY, O_NOFOLLOW = 16384, 32768 end -- x86 values above

local function oserr(what)
    return what .. ": " .. ffi.string(ffi.C.strerror(ffi.errno()))
end

-- Writes data to path atomically: a temp file in the same directory, written whole and fsynced, renamed over
-- path, then the directory fsynced so the rename itself survives a crash. Any failure before the rename
-- leaves path as it was (and removes the temp file); after the rename the new file is in place, so a failed
-- directory fsync is reported but the write counts as done (the data is already visible to every reader).
local function write_atomic(path, data)
    local C = ffi.C
    local tmp = path .. ".tmp"
    C.unlink(tmp) -- a left-over from a crash; O_EXCL below refuses anything that appears meanwhile
    local fd = C.open(tmp, O_WRONLY + O_CREAT + O_EXCL + O_NOFOLLOW + O_CLOEXEC, ffi.new("int", 384)) -- 0600: API keys
    if fd < 0 then return nil, oserr(tmp .. ": cannot create") end
    local off, err = 0, nil
    local p = ffi.cast("const char *", data)
    while off < #data do
        local n = tonumber(C.write(fd, p + off, #data - off))
        if n < 0 and ffi.errno() ~= EINTR then err = oserr("write failed") break end
        if n == 0 then err = "write failed: no progress" break end
        off = off + math.max(n, 0)
    end
    if not err and C.fsync(fd) ~= 0 then err = oserr("fsync failed") end
    if C.close(fd) ~= 0 and not err then err = oserr("close failed") end
    if not err and C.rename(tmp, path) ~= 0 then err = oserr("rename failed") end
    if err then C.unlink(tmp) return nil, path .. ": " .. err end
    local dfd = C.open(path:match("^(.*)/[^/]*$") or ".", O_RDONLY + O_DIRECTORY + O_CLOEXEC)
    if dfd < 0 or C.fsync(dfd) ~= 0 then
        local e = oserr("directory fsync failed")
        if dfd >= 0 then C.close(dfd) end
        io.stderr:write("sluice: warning: ", path, ": ", e, " (the file was written)\n")
        return true
    end
    C.close(dfd)
    return true
end

--- Writes data to path atomically (temp file, fsync, rename, directory fsync; mode 0600): true | nil, err.
_M.write_atomic = write_atomic

--- Writes a whole state table (a migration of its format), atomically. Returns true | nil, err.
function _M.write(state_path, st)
    local ok, data = pcall(cjson.encode, st)
    if not ok then return nil, "cannot encode state: " .. tostring(data) end
    return write_atomic(state_path, data)
end

-- Paths this process has written: if one of them is gone at the next change, it was removed behind our back,
-- and writing only the new change would drop every earlier one at the next start.
local written = {}

--- Records one change (obj, or false to delete); the caller checked kind and id. Returns true | nil, err.
--- seal(kind, id, entity) -> entity | nil, err, when given, turns every entity written into what is stored (secret
--- fields sealed, sluice.secrets): the changed one, and any the file still holds with secrets in the clear.
function _M.put(state_path, kind, id, obj, seal)
    local st, err, missing = _M.read(state_path)
    if not st then return nil, err end
    if missing and written[state_path] then
        return nil, state_path .. ": the state file written by this gateway is gone; not replacing it with only "
            .. "this change (restore it, or restart to start from the config file)"
    end
    if kind == "global_plugins" then
        st.global_plugins = obj
    else
        st[kind] = st[kind] or {}
        st[kind][tostring(id)] = obj
    end
    if seal then
        for k, coll in pairs(st) do
            if k == "global_plugins" then
                if type(coll) == "table" then
                    local s, serr = seal(k, nil, coll)
                    if not s then return nil, "cannot seal global_plugins: " .. tostring(serr) end
                    st.global_plugins = s
                end
            elseif type(coll) == "table" then
                for i, o in pairs(coll) do
                    if type(o) == "table" then
                        local s, serr = seal(k, i, o)
                        if not s then
                            return nil, "cannot seal " .. k .. "." .. tostring(i) .. ": " .. tostring(serr)
                        end
                        coll[i] = s
                    end
                end
            end
        end
    end
    local ok, data = pcall(cjson.encode, st)
    if not ok then return nil, "cannot encode state: " .. tostring(data) end
    local done, werr = write_atomic(state_path, data)
    if done then written[state_path] = true end
    return done, werr
end

return _M
