-- sluice.re: PCRE2 regular expressions (core/common/regex.c), shaped like ngx.re. Phases: all.
--
--   local re = require("sluice").re                              -- (the module itself: sluice.pdk.re)
--   local m, err = re.match("key=42", [[(?<k>\w+)=(\d+)]], "jo")  -- m[0], m[1], m[2], m.k
--   local from, to = re.find(s, "x+", "i", init)
--   for m in re.gmatch(s, [[\d+]]) do ... end
--   local out, n, err = re.gsub(s, [[(\w+)]], "<$1>")             -- or a function(m) -> string
--   local parts = re.split("a, b,c", [[\s*,\s*]])
--   local r = assert(re.compile([[(?<a>x+)|(?<b>y+)]], "i"))     -- compiled once (per config), kept by the caller
--   local from, to = r:exec(s, init)                              -- no table per match: r:group(i) -> from, to
--   local set = assert(re.set({ {pattern = "a+", flags = "i"}, [[(b)\1]] }))  -- patterns matched as one
--   local from, to, i = set:exec(s, init)                         -- the first match, and whose it is
--
-- Flags: i m s x u a D j o (o caches the compiled pattern per worker; use it for constant patterns).
-- Unmatched groups are false. A bad user regex returns nil, err; bad argument types raise.
local ffi = require("ffi")
local C = require("sluice.core")

local type, tostring, tonumber, error, find_plain = type, tostring, tonumber, error, string.find
local sub, byte, concat = string.sub, string.byte, table.concat
local ffi_new, ffi_string = ffi.new, ffi.string

ffi.cdef [[
typedef struct sl_regex sl_regex_t;
int sl_regex_compile(const char *pat, size_t len, const char *flags, size_t flen, sl_regex_t **out,
                     char *err, size_t errlen);
int sl_regex_ncaptures(const sl_regex_t *re);
int sl_regex_name_count(const sl_regex_t *re);
int sl_regex_name(const sl_regex_t *re, int i, const char **name, size_t *len);
int sl_regex_exec(const sl_regex_t *re, const char *subj, size_t len, size_t start, int *ovec, int pairs);
int sl_regex_strerror(int code, char *buf, size_t len);
void sl_regex_free(sl_regex_t *re);
]]

-- Scratch out-parameters, allocated once per VM.
local re_pp = ffi_new("sl_regex_t *[1]")
local name_pp = ffi_new("const char *[1]")
local len_p = ffi_new("size_t[1]")
local ERRLEN = 256
local errbuf = ffi_new("char[?]", ERRLEN)
local ov_pairs = 32
local ov = ffi_new("int[?]", ov_pairs * 2)

local _M = {}

local function check_args(subject, regex, flags)
    if type(subject) ~= "string" then
        if type(subject) ~= "number" then
            error("bad subject: string expected, got " .. type(subject), 3)
        end
        subject = tostring(subject)
    end
    if type(regex) ~= "string" then
        error("bad regex: string expected, got " .. type(regex), 3)
    end
    if flags ~= nil and type(flags) ~= "string" then
        error("bad flags: string expected, got " .. type(flags), 3)
    end
    return subject, flags or ""
end

local function compile(regex, flags)
    local rc = C.sl_regex_compile(regex, #regex, flags, #flags, re_pp, errbuf, ERRLEN)
    if rc ~= 0 then
        return nil, "failed to compile regex \"" .. regex .. "\": " .. ffi_string(errbuf)
    end
    local re = re_pp[0]
    local ncap = C.sl_regex_ncaptures(re)
    if ncap + 1 > ov_pairs then
        ov_pairs = ncap + 1
        ov = ffi_new("int[?]", ov_pairs * 2)
    end
    return re, ncap
end

-- Runs one match from byte offset start (0-based); returns rc (> 0 match, 0 none) or nil, err.
local function exec(re, subject, start, ncap)
    local rc = C.sl_regex_exec(re, subject, #subject, start, ov, ncap + 1)
    if rc < 0 then
        C.sl_regex_strerror(rc, errbuf, ERRLEN)
        return nil, ffi_string(errbuf)
    end
    return rc
end

local function captures(re, subject, ncap)
    local caps = {}
    for k = 0, ncap do
        local s = ov[2 * k]
        caps[k] = s >= 0 and sub(subject, s + 1, ov[2 * k + 1]) or false
    end
    for i = 0, C.sl_regex_name_count(re) - 1 do
        local g = C.sl_regex_name(re, i, name_pp, len_p)
        local name = ffi_string(name_pp[0], len_p[0])
        -- with duplicate names ('D') keep the first group that matched
        if not caps[name] then
            caps[name] = caps[g]
        end
    end
    return caps
end

-- Byte offset after an empty match at e: one byte, or one whole character in UTF mode.
local function step(subject, e, utf)
    e = e + 1
    if utf then
        local b = byte(subject, e + 1)
        while b and b >= 0x80 and b < 0xC0 do
            e = e + 1
            b = byte(subject, e + 1)
        end
    end
    return e
end

local function start_of(ctx)
    if ctx ~= nil then
        if type(ctx) ~= "table" then
            error("bad ctx: table expected", 3)
        end
        return (ctx.pos or 1) - 1
    end
    return 0
end

--- re.match(subject, regex, flags?, ctx?) -> captures | nil | nil, err ; ctx.pos (1-based) is read and advanced.
function _M.match(subject, regex, flags, ctx)
    local fl
    subject, fl = check_args(subject, regex, flags)
    local start = start_of(ctx)
    if start > #subject then
        return nil
    end
    local re, ncap = compile(regex, fl)
    if not re then
        return nil, ncap
    end
    local rc, err = exec(re, subject, start, ncap)
    local caps
    if rc and rc > 0 then
        caps = captures(re, subject, ncap)
        if ctx then
            ctx.pos = ov[1] + 1
        end
    end
    C.sl_regex_free(re)
    return caps, err
end

--- re.find(subject, regex, flags?, init?) -> from, to (1-based, inclusive) | nil | nil, err
function _M.find(subject, regex, flags, init)
    local fl
    subject, fl = check_args(subject, regex, flags)
    local start = 0
    if init ~= nil then
        if type(init) ~= "number" then
            error("bad init: number expected", 2)
        end
        start = init < 0 and #subject + init or init - 1
        if start < 0 then
            start = 0
        end
        if start > #subject then
            return nil
        end
    end
    local re, ncap = compile(regex, fl)
    if not re then
        return nil, ncap
    end
    local rc, err = exec(re, subject, start, 0)
    C.sl_regex_free(re)
    if rc and rc > 0 then
        return ov[0] + 1, ov[1]
    end
    return nil, err
end

--- re.gmatch(subject, regex, flags?) -> iterator returning captures | nil, err
function _M.gmatch(subject, regex, flags)
    local fl
    subject, fl = check_args(subject, regex, flags)
    local re, ncap = compile(regex, fl)
    if not re then
        return nil, ncap
    end
    re = ffi.gc(re, C.sl_regex_free)
    local utf = find_plain(fl, "u", 1, true) ~= nil
    local pos = 0
    return function()
        if pos > #subject then
            return nil
        end
        if ncap + 1 > ov_pairs then -- another compile may have replaced the scratch ovector
            ov_pairs = ncap + 1
            ov = ffi_new("int[?]", ov_pairs * 2)
        end
        local rc, err = exec(re, subject, pos, ncap)
        if not rc or rc == 0 then
            pos = #subject + 1
            return nil, err
        end
        local s, e = ov[0], ov[1]
        pos = s == e and step(subject, e, utf) or e
        return captures(re, subject, ncap)
    end
end

-- Compiles a replacement template into an array of literal strings and group numbers.
local function parse_template(tpl, re)
    local parts, i, n, lit = {}, 1, #tpl, 1
    local names
    while i <= n do
        local c = byte(tpl, i)
        if c == 36 then -- '$'
            if i > lit then
                parts[#parts + 1] = sub(tpl, lit, i - 1)
            end
            local nxt = sub(tpl, i + 1, i + 1)
            if nxt == "$" then
                parts[#parts + 1] = "$"
                i = i + 2
            else
                local ref, stop
                if nxt == "{" then
                    stop = find_plain(tpl, "}", i + 2, true)
                    if not stop then
                        return nil, "unmatched '{' in replacement template"
                    end
                    ref = sub(tpl, i + 2, stop - 1)
                else
                    local _, e = find_plain(tpl, "^%d+", i + 1)
                    if not e then
                        return nil, "invalid capturing variable name at offset " .. (i - 1)
                    end
                    ref, stop = sub(tpl, i + 1, e), e
                end
                local g = tonumber(ref)
                if not g then
                    if not names then
                        names = {}
                        for k = 0, C.sl_regex_name_count(re) - 1 do
                            local num = C.sl_regex_name(re, k, name_pp, len_p)
                            names[ffi_string(name_pp[0], len_p[0])] = num
                        end
                    end
                    g = names[ref]
                    if not g then
                        return nil, "unknown capture name '" .. ref .. "' in replacement template"
                    end
                end
                parts[#parts + 1] = g
                i = stop + 1
            end
            lit = i
        else
            i = i + 1
        end
    end
    if lit <= n then
        parts[#parts + 1] = sub(tpl, lit, n)
    end
    return parts
end

local function substitute(subject, regex, repl, flags, global)
    local fl
    subject, fl = check_args(subject, regex, flags)
    local trepl = type(repl)
    if trepl ~= "string" and trepl ~= "function" then
        error("bad replacement: string or function expected", 3)
    end
    local re, ncap = compile(regex, fl)
    if not re then
        return nil, nil, ncap
    end
    local parts, perr
    if trepl == "string" then
        parts, perr = parse_template(repl, re)
        if not parts then
            C.sl_regex_free(re)
            return nil, nil, perr
        end
    end
    local utf = find_plain(fl, "u", 1, true) ~= nil
    local out, count, pos, copied, len = {}, 0, 0, 0, #subject
    local err
    while pos <= len do
        local rc
        rc, err = exec(re, subject, pos, ncap)
        if not rc or rc == 0 then
            break
        end
        local s, e = ov[0], ov[1]
        out[#out + 1] = sub(subject, copied + 1, s)
        if parts then
            for i = 1, #parts do
                local p = parts[i]
                if type(p) == "number" then
                    local ps = p <= ncap and ov[2 * p] or -1
                    if ps >= 0 then
                        out[#out + 1] = sub(subject, ps + 1, ov[2 * p + 1])
                    end
                else
                    out[#out + 1] = p
                end
            end
        else
            local r = repl(captures(re, subject, ncap))
            out[#out + 1] = type(r) == "number" and tostring(r) or r or ""
        end
        count = count + 1
        copied = e
        if s == e then
            pos = step(subject, e, utf)
        else
            pos = e
        end
        if not global then
            break
        end
    end
    C.sl_regex_free(re)
    if err then
        return nil, nil, err
    end
    if count == 0 then
        return subject, 0
    end
    out[#out + 1] = sub(subject, copied + 1)
    return concat(out), count
end

--- re.sub(subject, regex, replacement, flags?) -> new, n | nil, nil, err ; first match only.
function _M.sub(subject, regex, repl, flags)
    return substitute(subject, regex, repl, flags, false)
end

--- re.gsub(subject, regex, replacement, flags?) -> new, n | nil, nil, err ; every match.
function _M.gsub(subject, regex, repl, flags)
    return substitute(subject, regex, repl, flags, true)
end

---------------------------------------------------------------------------------------------------------------
-- Compiled patterns: for code that matches one pattern many times (a plugin compiles its patterns once per
-- config and keeps them in the conf's cache). Matching allocates nothing: positions stay in the object's own
-- ovector until the next exec.

local Compiled = {}
Compiled.__index = Compiled

--- re.compile(regex, flags?) -> r | nil, err. r:exec(s, init?) -> from, to (1-based, inclusive; nil when none;
--- nil, err on a match error); then r:group(i) -> from, to of group i (nil when it did not take part) and
--- r:group_of(name) -> i. r.ncaptures: the number of groups. A compiled pattern belongs to the worker that
--- compiled it (keep it in per-worker state such as a conf table, never in a shared dict).
function _M.compile(regex, flags)
    if type(regex) ~= "string" then
        error("bad regex: string expected, got " .. type(regex), 2)
    end
    if flags ~= nil and type(flags) ~= "string" then
        error("bad flags: string expected, got " .. type(flags), 2)
    end
    flags = (flags or ""):gsub("o", "") -- the object is the cache; keep the worker's LRU for others
    local rc = C.sl_regex_compile(regex, #regex, flags, #flags, re_pp, errbuf, ERRLEN)
    if rc ~= 0 then
        return nil, "failed to compile regex \"" .. regex .. "\": " .. ffi_string(errbuf)
    end
    local re = ffi.gc(re_pp[0], C.sl_regex_free)
    local ncap = C.sl_regex_ncaptures(re)
    local names = {}
    for i = 0, C.sl_regex_name_count(re) - 1 do
        local g = C.sl_regex_name(re, i, name_pp, len_p)
        names[ffi_string(name_pp[0], len_p[0])] = g
    end
    return setmetatable({ re = re, ncaptures = ncap, names = names, ov = ffi_new("int[?]", (ncap + 1) * 2),
                          subject = nil }, Compiled)
end

--- r:exec(subject, init?) -> from, to of the first match at or after byte init (default 1) | nil | nil, err
function Compiled:exec(subject, init)
    local start = init and init - 1 or 0
    if start < 0 then start = 0 end
    if start > #subject then
        return nil
    end
    local o = self.ov
    local rc = C.sl_regex_exec(self.re, subject, #subject, start, o, self.ncaptures + 1)
    if rc < 0 then
        C.sl_regex_strerror(rc, errbuf, ERRLEN)
        return nil, ffi_string(errbuf)
    end
    if rc == 0 then
        return nil
    end
    return o[0] + 1, o[1]
end

--- r:group(i) -> from, to of group i in the last match (1-based, inclusive), nil when it did not take part.
function Compiled:group(i)
    local s = self.ov[2 * i]
    if s < 0 then
        return nil
    end
    return s + 1, self.ov[2 * i + 1]
end

--- r:group_of(name) -> the number of the named group, or nil.
function Compiled:group_of(name)
    return self.names[name]
end

--- re.set(list) -> set | nil, err: many patterns ({pattern, flags} or strings) matched as one alternation would,
--- each meaning what it means alone; set:exec(s, init?) -> from, to, i. See sluice/pdk/re_set.lua.
function _M.set(list)
    return require("sluice.pdk.re_set").new(list) -- a tail call: argument errors point at the caller
end

--- re.split(subject, regex, flags?, limit?) -> array of pieces | nil, err
function _M.split(subject, regex, flags, limit)
    local fl
    subject, fl = check_args(subject, regex, flags)
    local re, ncap = compile(regex, fl)
    if not re then
        return nil, ncap
    end
    local utf = find_plain(fl, "u", 1, true) ~= nil
    local res, pos, from, len = {}, 0, 0, #subject
    local err
    while pos < len and not (limit and limit > 0 and #res >= limit - 1) do
        local rc
        rc, err = exec(re, subject, pos, ncap)
        if not rc or rc == 0 then
            break
        end
        local s, e = ov[0], ov[1]
        if s == e then
            if s >= len then
                break
            end
            -- an empty separator splits between characters
            pos = step(subject, e, utf)
            if s > from then
                res[#res + 1] = sub(subject, from + 1, s)
                from = s
            end
        else
            res[#res + 1] = sub(subject, from + 1, s)
            from, pos = e, e
        end
    end
    C.sl_regex_free(re)
    if err then
        return nil, err
    end
    res[#res + 1] = sub(subject, from + 1)
    if not limit or limit <= 0 then -- like Perl and ngx.re.split: no trailing empty fields
        while res[#res] == "" do
            res[#res] = nil
        end
    end
    return res
end

return _M
