-- sluice.re.set: many patterns matched as one, without the traps of pasting them into one alternation.
--
--   local set, err = sluice.re.set({ { pattern = [[ignore (all|any) previous]], flags = "i" }, [[(\w)\1{5}]] })
--   local from, to, i = set:exec(text, init)   -- the match that starts first (at one start, the lowest i) | nil
--                                              -- | nil, err (a match error: PCRE2's match limit)
--   set:members()                              -- {{combined, literals, why}}: how each pattern runs (specs, docs)
--
-- The answer is the one a single alternation `p1|p2|...` would give, with each pattern compiled as it is on its
-- own: group numbers, names, \G and verbs mean what they mean alone. How (sluice.pdk.re_syntax reads each pattern):
--   - patterns that refer to nothing outside themselves (no back-reference, named group, subroutine call,
--     recursion, verb, conditional) are alternatives of one combined pattern, each a named group with its flags;
--     the others are compiled and run alone, and the earliest match of all wins;
--   - a literal pre-filter: a pattern whose every match holds one of a few literals (`ignore all previous`...)
--     runs only when one of them is in the text (core/common/literals.c, one vector pass per literal), so a text
--     without any is not given to PCRE2 at all.
-- Flags: i m s (per pattern); others of sluice.re (u a D x) make a pattern run alone. Compiled once; keep the set
-- (per config) and call exec per text: the pre-filter's answer is kept for the last text.
local ffi = require("ffi")
local C = require("sluice.core")
local re = require("sluice.pdk.re")
local syn = require("sluice.pdk.re_syntax")

local type, ipairs, tostring, error, setmetatable = type, ipairs, tostring, error, setmetatable
local find, concat, gsub = string.find, table.concat, string.gsub

ffi.cdef [[
int sl_literals_find(const char *text, size_t len, const char *const *lits, const size_t *lens,
                     const unsigned char *fold, int n, unsigned char *found);
]]

local Set = {}
Set.__index = Set

local MAX_LITERALS = 32 -- past this, scanning for them costs more than the patterns they would spare
local SHORT = 256       -- a subject shorter than this is given to the patterns without the pre-filter

local function member_of(x, i)
    if type(x) == "string" then return x, "" end
    if type(x) ~= "table" or type(x.pattern) ~= "string" then
        error("bad set member " .. i .. ": a pattern string or {pattern, flags} expected", 3)
    end
    if x.flags ~= nil and type(x.flags) ~= "string" then
        error("bad set member " .. i .. ": flags must be a string", 3)
    end
    return x.pattern, x.flags or ""
end

--- re.set(list) -> set | nil, err. list: pattern strings or {pattern, flags}; err names the member ("[2]: ...").
local function new(list)
    if type(list) ~= "table" then error("bad list: table expected, got " .. type(list), 2) end
    local members, alts, comb = {}, {}, {}
    for i, x in ipairs(list) do
        local pat, flags = member_of(x, i)
        flags = gsub(flags, "[jo]", "")
        local alone, err = re.compile(pat, flags)
        if not alone then return nil, "[" .. i .. "]: " .. tostring(err) end
        local a = syn.analyze(pat, flags)
        local m = { index = i, re = alone, analysis = a, combined = false }
        if a.combinable and not find(flags, "[^ims]") then
            m.combined = true
            comb[#comb + 1] = m
            alts[#alts + 1] = "(?<r" .. i .. ">(?" .. flags .. ":" .. pat .. "))"
        end
        members[i] = m
    end
    local self = setmetatable({ list = members, comb = nil, comb_members = comb, alone = {}, last = nil,
                                maybe = {} }, Set)
    if #comb == 1 then
        comb[1].combined = false -- one alone is the same thing, without the wrapper
    elseif #comb > 1 then
        local r, err = re.compile(concat(alts, "|"))
        if not r then return nil, "combined: " .. tostring(err) end
        for _, m in ipairs(comb) do m.group = r:group_of("r" .. m.index) end
        self.comb = r
    end
    for _, m in ipairs(members) do
        if not m.combined then self.alone[#self.alone + 1] = m end
    end
    -- the pre-filter: each distinct literal once; a member with literals runs only when one is found
    local lits, by_key, nlit = {}, {}, 0
    for _, m in ipairs(members) do
        local l = m.analysis.literals
        if l then
            m.lits = {}
            for _, s in ipairs(l) do
                local key = (m.analysis.fold and "i:" or "c:") .. s
                local k = by_key[key]
                if not k then
                    nlit = nlit + 1
                    k = nlit
                    by_key[key] = k
                    lits[k] = { s, m.analysis.fold }
                end
                m.lits[#m.lits + 1] = k
            end
        end
    end
    if nlit > 0 and nlit <= MAX_LITERALS then
        local ptrs, lens, fold = ffi.new("const char *[?]", nlit), ffi.new("size_t[?]", nlit),
            ffi.new("unsigned char[?]", nlit)
        for k, l in ipairs(lits) do
            ptrs[k - 1], lens[k - 1], fold[k - 1] = l[1], #l[1], l[2] and 1 or 0
        end
        self.nlit, self.lit_strings = nlit, lits -- the strings anchor the pointers
        self.ptrs, self.lens, self.fold, self.found = ptrs, lens, fold, ffi.new("unsigned char[?]", nlit)
    else
        for _, m in ipairs(members) do m.lits = nil end
    end
    return self
end

-- Which members may match subject (maybe[i]), and whether the combined pattern needs running (maybe.comb).
local function prefilter(self, subject)
    local maybe = self.maybe
    local found = self.found
    if found and #subject < SHORT then found = nil end -- PCRE2 over a few hundred bytes costs less than the search
    if found then
        C.sl_literals_find(subject, #subject, self.ptrs, self.lens, self.fold, self.nlit, found)
    end
    local any_comb = false
    for _, m in ipairs(self.list) do
        local ok = true
        local l = m.lits
        if l and found then
            ok = false
            for j = 1, #l do
                if found[l[j] - 1] ~= 0 then ok = true break end
            end
        end
        maybe[m.index] = ok
        if ok and m.combined then any_comb = true end
    end
    maybe.comb = any_comb
    self.last = subject
    return maybe
end

--- set:exec(subject, init?) -> from, to, i of the match that starts first at or after byte init (1-based,
--- inclusive; at one start, the lowest member index) | nil | nil, err
function Set:exec(subject, init)
    if type(subject) ~= "string" then error("bad subject: string expected, got " .. type(subject), 2) end
    local maybe = self.maybe
    if self.last ~= subject then maybe = prefilter(self, subject) end
    local bf, bt, bi
    if self.comb and maybe.comb then
        local r = self.comb
        local from, to = r:exec(subject, init)
        if from then
            local cm = self.comb_members
            for k = 1, #cm do
                if r:group(cm[k].group) then
                    bf, bt, bi = from, to, cm[k].index
                    break
                end
            end
        elseif to then
            return nil, to
        end
    end
    local alone = self.alone
    for k = 1, #alone do
        local m = alone[k]
        if maybe[m.index] then
            local from, to = m.re:exec(subject, init)
            if from then
                if not bf or from < bf or (from == bf and m.index < bi) then
                    bf, bt, bi = from, to, m.index
                end
            elseif to then
                return nil, to
            end
        end
    end
    return bf, bt, bi
end

--- set:members() -> for each member {combined = bool, literals = {...} | nil, why = string | nil}: how it runs.
function Set:members()
    local out = {}
    for i, m in ipairs(self.list) do
        out[i] = { combined = m.combined, literals = m.lits and m.analysis.literals or nil, why = m.analysis.why }
    end
    return out
end

return { new = new }
