-- sluice.pdk.re_syntax: what a PCRE2 pattern means for a regex set (sluice.re.set), read from its text.
--
--   local syn = require("sluice.pdk.re_syntax")
--   local a = syn.analyze([[ignore (all|any) previous]], "i")
--   a.combinable   -- true: it may be one alternative of a combined pattern (nothing in it counts groups from the
--                  -- start of the pattern, names a group, or reaches outside its own alternative)
--   a.literals     -- {"ignore all previous", "ignore any previous"}: every match holds one of them (nil: no
--                  -- such set worth a pre-filter); a.fold: compared ASCII caseless (then in lower case)
--
-- Only the pattern's text is read, for a pattern that compiles: anything not understood here makes the pattern
-- neither combinable nor pre-filtered (it then runs as it is, on its own), so a mistake can cost speed, never a
-- match. Not combinable: numbered or named back-references and groups (numbers shift and names collide in a
-- combined pattern), subroutine calls and recursion, \G, an unterminated \Q. Not understood at all: (*VERB) and
-- (*OPTION) items, conditionals, callouts, extended mode (x: whitespace and # comments), POSIX classes, UTF mode
-- with caseless matching (Unicode case folding maps ASCII letters to other characters).
local type, ipairs, tonumber, error = type, ipairs, tonumber, error
local byte, sub, find, lower, match = string.byte, string.sub, string.find, string.lower, string.match

local _M = {}

local CAP = 16     -- the most strings a literal set may hold
local MAXLEN = 64  -- the longest literal kept whole
local MINLEN = 3   -- a shorter literal occurs in too much text to be worth a pre-filter

-- An info is {exact = {strings} | nil, req = {strings} | nil}: exact: the node matches exactly one of those
-- strings; req: every match of it holds one of them. {} knows nothing (a class, a back-reference, an optional
-- part); EMPTY is a zero-width item (an assertion, a look-around: it consumes nothing).
local NONE = {}
local EMPTY = { exact = { "" } }
local SKIP = { exact = { "" } } -- a comment or an option setting: a quantifier right after one is not understood

local function minlen(set)
    local m = math.huge
    for i = 1, #set do
        if #set[i] < m then m = #set[i] end
    end
    return m
end

-- The better of two literal sets (nil when neither is worth anything): longer shortest literals first (up to 6
-- bytes: past that a literal is rare enough), then fewer literals (one vector pass each), then longer ones.
local function better(a, b)
    if not a or #a == 0 or #a > CAP or minlen(a) < 1 then a = nil end
    if not b or #b == 0 or #b > CAP or minlen(b) < 1 then b = nil end
    if not a then return b end
    if not b then return a end
    local la, lb = math.min(minlen(a), 6), math.min(minlen(b), 6)
    if la ~= lb then return la > lb and a or b end
    if #a ~= #b then return #b < #a and b or a end
    return minlen(b) > minlen(a) and b or a
end

local function best(info)
    return better(info.exact, info.req)
end

-- Every concatenation of one string of a with one of b; nil past the caps.
local function product(a, b)
    if #a * #b > CAP then return nil end
    local out, seen = {}, {}
    for i = 1, #a do
        for j = 1, #b do
            local s = a[i] .. b[j]
            if #s > MAXLEN then return nil end
            if not seen[s] then
                seen[s] = true
                out[#out + 1] = s
            end
        end
    end
    return out
end

local function union(a, b)
    local out, seen = {}, {}
    for _, set in ipairs({ a, b }) do
        for i = 1, #set do
            if not seen[set[i]] then
                seen[set[i]] = true
                out[#out + 1] = set[i]
            end
        end
    end
    return out
end

-- A sequence of items: its exact set when every item has one, and the best required set among the items' own
-- and the products of runs of consecutive exact items.
local function sequence(items)
    local req
    local all = { "" }
    for i = 1, #items do
        local it = items[i]
        req = better(req, best(it))
        if all then
            all = it.exact and product(all, it.exact) or nil
        end
        if it.exact then
            local run = it.exact
            for j = i + 1, #items do
                local nx = items[j].exact
                if not nx then break end
                run = product(run, nx)
                if not run then break end
                req = better(req, run)
                if minlen(run) >= 32 then break end
            end
        end
    end
    return { exact = all, req = req }
end

local function alternation(branches)
    if #branches == 1 then return branches[1] end
    local exact, req = {}, {}
    for i = 1, #branches do
        local b = branches[i]
        if exact then
            exact = b.exact and union(exact, b.exact) or nil
            if exact and #exact > CAP then exact = nil end
        end
        if req then
            local bb = best(b)
            req = bb and union(req, bb) or nil
            if req and #req > CAP then req = nil end
        end
    end
    return { exact = exact, req = req }
end

local ESC_CHAR = { n = "\n", t = "\t", r = "\r", f = "\f", e = "\27", a = "\7" }
local ESC_ANY = { d = true, D = true, w = true, W = true, s = true, S = true, h = true, H = true, v = true,
                  V = true, R = true, X = true, C = true, N = true }
local ESC_EMPTY = { b = true, B = true, A = true, z = true, Z = true, K = true }

local function lit(c)
    return { exact = { c } }
end

-- The parser: p the pattern, i the next byte (1-based); st collects what was seen (bad, nocomb, fold).
local parse_alt

local function fail(st, why)
    st.bad = st.bad or why
    return NONE
end

-- A class [...] starting at st.i (at '['): its end; nothing known of what it matches.
local function class(st)
    local p, i = st.p, st.i + 1
    if sub(p, i, i) == "^" then i = i + 1 end
    if sub(p, i, i) == "]" then i = i + 1 end
    while true do
        local c = sub(p, i, i)
        if c == "" then
            st.i = i
            return fail(st, "unterminated class")
        elseif c == "]" then
            st.i = i + 1
            return NONE
        elseif c == "\\" then
            if sub(p, i + 1, i + 1) == "Q" then
                local e = find(p, "\\E", i + 2, true)
                if not e then
                    st.i = #p + 1
                    return fail(st, "\\Q in a class")
                end
                i = e + 2
            else
                i = i + 2
            end
        elseif c == "[" and find(":.=", sub(p, i + 1, i + 1), 1, true) and sub(p, i + 1, i + 1) ~= "" then
            st.i = i
            return fail(st, "POSIX class")
        else
            i = i + 1
        end
    end
end

-- An escape at st.i (at '\'): a list of items (\Q...\E gives one per byte).
local function escape(st, items)
    local p, i = st.p, st.i
    local c = sub(p, i + 1, i + 1)
    if c == "" then
        st.i = i + 1
        items[#items + 1] = fail(st, "trailing backslash")
        return
    end
    st.i = i + 2
    if match(c, "%d") then
        if c == "0" then -- \0 and up to two more octal digits: one byte
            local _, e = find(p, "^[0-7]?[0-7]?", st.i)
            st.i = e + 1
        else -- a back-reference (or an octal escape past the group count: nothing known either way)
            st.nocomb = "back-reference"
            local _, e = find(p, "^%d*", st.i)
            st.i = e + 1
        end
        items[#items + 1] = NONE
    elseif c == "g" or c == "k" then -- back-references and subroutine calls by number or name
        st.nocomb = "back-reference or subroutine call"
        local o = sub(p, st.i, st.i)
        local close = ({ ["{"] = "}", ["<"] = ">", ["'"] = "'" })[o]
        if close then
            local e = find(p, close, st.i + 1, true)
            if not e then return fail(st, "unterminated \\" .. c) end
            st.i = e + 1
        elseif c == "g" then
            local _, e = find(p, "^[+-]?%d+", st.i)
            if not e then return fail(st, "bad \\g") end
            st.i = e + 1
        else
            items[#items + 1] = fail(st, "bad \\k")
            return
        end
        items[#items + 1] = NONE
    elseif c == "Q" then
        local e = find(p, "\\E", st.i, true)
        if not e then -- to the end of the pattern: it would swallow what follows it in a combined one
            st.nocomb = "\\Q without \\E"
            e = #p + 1
        end
        for k = st.i, e - 1 do items[#items + 1] = lit(sub(p, k, k)) end
        st.i = e + 2
    elseif c == "E" then -- ignored (a quantifier after it then has nothing here to repeat: not understood)
        return
    elseif c == "G" then
        st.nocomb = "\\G" -- the start offset of the match call: the combined pattern's, not this alternative's
        items[#items + 1] = EMPTY
    elseif ESC_EMPTY[c] then
        items[#items + 1] = EMPTY
    elseif ESC_CHAR[c] then
        items[#items + 1] = lit(ESC_CHAR[c])
    elseif c == "x" or c == "o" or c == "p" or c == "P" or ESC_ANY[c] then
        if sub(p, st.i, st.i) == "{" then
            local e = find(p, "}", st.i, true)
            if not e then
                items[#items + 1] = fail(st, "unterminated \\" .. c)
                return
            end
            st.i = e + 1
        elseif c == "x" then
            local _, e = find(p, "^%x?%x?", st.i)
            st.i = e + 1
        elseif c == "p" or c == "P" then
            st.i = st.i + 1
        elseif c == "o" then
            items[#items + 1] = fail(st, "bad \\o")
            return
        end
        items[#items + 1] = NONE
    elseif c == "c" then
        st.i = st.i + 1
        items[#items + 1] = NONE
    elseif match(c, "%w") or byte(c) >= 128 then
        items[#items + 1] = fail(st, "escape \\" .. c)
    else
        items[#items + 1] = lit(c)
    end
end

-- Option letters of (?...) or (?...: at st.i (after "(?"); true when they were options.
local function options(st)
    local p = st.p
    local s, e, letters, close = find(p, "^([%a%^%-]*)([):])", st.i)
    if not s then return false end
    local on = match(letters, "^%^?([^%-]*)") or ""
    if find(letters, "[^imnsJU%^%-]") then
        if find(letters, "x", 1, true) then
            fail(st, "extended mode")
        else
            fail(st, "option " .. letters)
        end
    end
    if find(on, "i", 1, true) then st.fold = true end
    st.i = e + 1
    return true, close
end

-- A group at st.i (at '('): its info.
local function group(st)
    local p, i = st.p, st.i
    local c1, c2 = sub(p, i + 1, i + 1), sub(p, i + 2, i + 2)
    if c1 == "*" then
        st.i = i + 1
        return fail(st, "(*...) item")
    end
    local inner_kind = "group" -- group | look | call | named
    if c1 ~= "?" then
        st.i = i + 1
    elseif c2 == "#" then
        local e = find(p, ")", i + 3, true)
        if not e then
            st.i = #p + 1
            return fail(st, "unterminated comment")
        end
        st.i = e + 1
        return SKIP
    elseif c2 == ":" or c2 == "|" or c2 == ">" then
        st.i = i + 3
    elseif c2 == "=" or c2 == "!" then
        st.i, inner_kind = i + 3, "look"
    elseif c2 == "<" and (sub(p, i + 3, i + 3) == "=" or sub(p, i + 3, i + 3) == "!") then
        st.i, inner_kind = i + 4, "look"
    elseif c2 == "<" or c2 == "'" then
        local e = find(p, c2 == "<" and ">" or "'", i + 3, true)
        if not e or not match(sub(p, i + 3, e - 1), "^[%a_][%w_]*$") then return fail(st, "bad group name") end
        st.i, inner_kind = e + 1, "named"
    elseif c2 == "P" then
        local c3 = sub(p, i + 3, i + 3)
        if c3 == "<" then
            local e = find(p, ">", i + 4, true)
            if not e or not match(sub(p, i + 4, e - 1), "^[%a_][%w_]*$") then return fail(st, "bad group name") end
            st.i, inner_kind = e + 1, "named"
        elseif c3 == "=" or c3 == ">" then -- (?P=name) back-reference, (?P>name) call
            local e = find(p, ")", i + 4, true)
            if not e then return fail(st, "bad (?P") end
            st.nocomb = "back-reference or subroutine call"
            st.i = e + 1
            return NONE
        else
            return fail(st, "bad (?P")
        end
    elseif c2 == "R" or c2 == "&" or match(c2, "%d")
        or ((c2 == "+" or c2 == "-") and match(sub(p, i + 3, i + 3), "%d")) then
        local e = find(p, ")", i + 2, true) -- recursion and subroutine calls
        if not e then return fail(st, "bad call") end
        st.nocomb = "recursion or subroutine call"
        st.i = e + 1
        return NONE
    elseif c2 == "(" then
        return fail(st, "conditional")
    else
        st.i = i + 2
        local ok, close = options(st)
        if not ok then return fail(st, "(?" .. c2) end
        if st.bad then return NONE end
        if close == ")" then return SKIP end -- options for the rest of the enclosing group
    end
    if inner_kind == "named" then st.nocomb = "named group" end
    local info = parse_alt(st)
    if sub(p, st.i, st.i) ~= ")" then return fail(st, "missing )") end
    st.i = st.i + 1
    if inner_kind == "look" then return EMPTY end
    return info
end

-- A quantifier at st.i, or nil: min (the least number of repeats).
local function quantifier(st)
    local p, i = st.p, st.i
    local c = sub(p, i, i)
    local min
    if c == "*" or c == "?" then
        min, st.i = 0, i + 1
    elseif c == "+" then
        min, st.i = 1, i + 1
    elseif c == "{" then
        local s, e, n = find(p, "^{(%d+)}", i)
        if not s then s, e, n = find(p, "^{(%d+),%d*}", i) end
        if s then
            min, st.i = tonumber(n), e + 1
        else
            -- {,n} and forms with spaces are quantifiers in newer PCRE2 only, else literal: reading them as a
            -- repeat of at least nothing is right either way (less is known)
            local s2, e2 = find(p, "^{%s*%d*%s*,?%s*%d*%s*}", i)
            if not s2 then return nil end
            min, st.i = 0, e2 + 1
        end
    else
        return nil
    end
    local m = sub(p, st.i, st.i)
    if m == "+" or m == "?" then st.i = st.i + 1 end
    return min
end

-- A branch: items up to '|' or ')' or the end.
local function branch(st)
    local p, items = st.p, {}
    while st.i <= #p and not st.bad do
        local c = sub(p, st.i, st.i)
        if c == "|" or c == ")" then break end
        local at = #items
        if c == "\\" then
            escape(st, items)
        elseif c == "[" then
            items[#items + 1] = class(st)
        elseif c == "(" then
            items[#items + 1] = group(st)
        elseif c == "." then
            st.i = st.i + 1
            items[#items + 1] = NONE
        elseif c == "^" or c == "$" then
            st.i = st.i + 1
            items[#items + 1] = EMPTY
        elseif c == "*" or c == "+" or c == "?" then
            return { fail(st, "nothing to repeat") }
        elseif c == "{" and quantifier({ p = p, i = st.i }) then
            return { fail(st, "nothing to repeat") }
        else
            st.i = st.i + 1
            items[#items + 1] = lit(c)
        end
        if items[#items] == SKIP then
            items[#items] = EMPTY
            if find("*+?{", sub(p, st.i, st.i), 1, true) and st.i <= #p then
                return { fail(st, "quantifier after a comment or option setting") }
            end
        elseif #items > at and not st.bad then
            local min = quantifier(st)
            if min then
                local last = items[#items]
                if min == 0 then
                    items[#items] = NONE
                elseif last.exact and minlen(last.exact) == 0 and #last.exact == 1 then
                    items[#items] = EMPTY -- a repeated assertion
                else
                    items[#items] = { req = best(last) }
                end
            end
        end
    end
    return items
end

function parse_alt(st)
    local branches = {}
    while true do
        branches[#branches + 1] = sequence(branch(st))
        if st.bad or sub(st.p, st.i, st.i) ~= "|" then break end
        st.i = st.i + 1
    end
    if st.bad then return NONE end
    return alternation(branches)
end

--- What pattern (with sluice.re flags) means for a set: {combinable, literals = {strings} | nil, fold, why}
--- (why: what made it not combinable or not understood, for specs and logs).
function _M.analyze(pattern, flags)
    if type(pattern) ~= "string" then error("bad pattern: string expected, got " .. type(pattern), 2) end
    flags = flags or ""
    local st = { p = pattern, i = 1, bad = nil, nocomb = nil, fold = find(flags, "i", 1, true) ~= nil }
    if find(flags, "x", 1, true) then fail(st, "extended mode") end
    if not st.bad then
        local info = parse_alt(st)
        if not st.bad and st.i <= #pattern then fail(st, "unbalanced )") end
        if not st.bad then
            if st.fold and find(flags, "u", 1, true) then
                fail(st, "caseless UTF")
            else
                st.lits = best(info)
            end
        end
    end
    local a = { combinable = not st.bad and not st.nocomb, fold = st.fold, why = st.bad }
    if not st.bad and st.nocomb then a.why = st.nocomb end
    local lits = st.lits
    if lits and minlen(lits) >= MINLEN then
        if st.fold then
            local seen, out = {}, {}
            for i = 1, #lits do
                local l = lower(lits[i])
                if not seen[l] then seen[l] = true; out[#out + 1] = l end
            end
            lits = out
        end
        a.literals = lits
    end
    return a
end

return _M
