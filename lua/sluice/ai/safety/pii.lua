-- sluice.ai.safety.pii: PII and secret detectors, compiled into one PCRE2 pattern per config.
--
--   local pii = require("sluice.ai.safety.pii")
--   local sc, err = pii.scanner({ detectors = {"email", "credit_card", "secrets"},
--                                 custom = {{name = "employee_id", pattern = [[EMP-\d{6}]]}} })
--   local out, n = sc:scan(text, function(det, value) return "[" .. det.label .. "]" end)
--
-- Detectors (names in config; `secrets` stands for the five secret kinds, `all` for every one, custom ones too):
--   email, phone (E.164 and common national forms: +49 30 1234567, (415) 555-0100, 415-555-0100, 020 7946 0958),
--   credit_card (13-19 digits, spaces or dashes allowed, issuer prefix and Luhn checked), iban (country code,
--   check digits, the country's length where known, mod-97 checked), us_ssn (AAA-GG-SSSS, the never-issued ranges
--   left out), ipv4, ipv6 (checked as an address), api_key (OpenAI / Anthropic style sk-...), aws_access_key
--   (AKIA..., ASIA...), github_token (ghp_..., github_pat_...), jwt, private_key (PEM private key blocks).
-- A candidate that fails its check (a number failing Luhn or mod-97, an invalid address) is left alone whole: no
-- other detector gets a piece of it.
--
-- Every enabled detector is one named alternative of a single pattern, so a text is scanned once whatever the
-- number of detectors; alternatives start with a look-behind that fails inside a word, so each word costs one
-- attempt per alternative (no quadratic rescans). The scanner is built once per config (the caller keeps it).
local re = require("sluice.pdk.re")
require("sluice.pdk.re_set") -- declares sl_literals_find
local ffi = require("ffi")
local C = require("sluice.core")
local new_tab = require("table.new")

ffi.cdef [[
int sl_text_runs_match(const sl_regex_t *re, const char *text, size_t len, size_t start, const unsigned char cls[256],
                       int mark, int need, int *out, int triples, size_t *next);
]]

local type, ipairs, tostring, tonumber, setmetatable = type, ipairs, tostring, tonumber, setmetatable
local byte, sub, gsub, upper, find, concat = string.byte, string.sub, string.gsub, string.upper, string.find,
    table.concat

local _M = {}

---------------------------------------------------------------------------------------------------------------
-- checks

--- Luhn checksum over the digits of s.
local function luhn(digits)
    local sum, dbl = 0, false
    for i = #digits, 1, -1 do
        local d = byte(digits, i) - 48
        if dbl then
            d = d * 2
            if d > 9 then d = d - 9 end
        end
        sum = sum + d
        dbl = not dbl
    end
    return sum % 10 == 0
end
_M.luhn = luhn

-- The checks read the value's bytes in place (no digits-only copy made with gsub): they run on every candidate.

--- The number of ASCII digits in v, and the first one's value (nil when none).
local function digits_of(v)
    local n, first = 0, nil
    for i = 1, #v do
        local c = byte(v, i)
        if c >= 48 and c <= 57 then
            n = n + 1
            if not first then first = c - 48 end
        end
    end
    return n, first
end

local function card_ok(v)
    local n, first = digits_of(v)
    if n < 13 or n > 19 then return false end
    if first < 2 or first > 6 then return false end -- issuers: 2 (Mastercard), 3 (Amex, Diners, JCB), 4, 5, 6
    local sum, dbl = 0, false -- Luhn over the digits of v, skipping its separators
    for i = #v, 1, -1 do
        local d = byte(v, i) - 48
        if d >= 0 and d <= 9 then
            if dbl then
                d = d * 2
                if d > 9 then d = d - 9 end
            end
            sum = sum + d
            dbl = not dbl
        end
    end
    return sum % 10 == 0
end

-- IBAN lengths by country (ISO 13616 registry); a country not listed is checked by mod-97 alone (15..34).
local IBAN_LEN = {
    AD = 24, AE = 23, AL = 28, AT = 20, AZ = 28, BA = 20, BE = 16, BG = 22, BH = 22, BR = 29, BY = 28, CH = 21,
    CR = 22, CY = 28, CZ = 24, DE = 22, DK = 18, DO = 28, EE = 20, EG = 29, ES = 24, FI = 18, FO = 18, FR = 27,
    GB = 22, GE = 22, GI = 23, GL = 18, GR = 27, GT = 28, HR = 21, HU = 28, IE = 22, IL = 23, IQ = 23, IS = 26,
    IT = 27, JO = 30, KW = 30, KZ = 20, LB = 28, LC = 32, LI = 21, LT = 20, LU = 20, LV = 21, MC = 27, MD = 24,
    ME = 22, MK = 19, MR = 27, MT = 31, MU = 30, NL = 18, NO = 15, PK = 24, PL = 28, PS = 29, PT = 25, QA = 29,
    RO = 24, RS = 22, SA = 24, SC = 31, SE = 24, SI = 19, SK = 24, SM = 27, ST = 25, SV = 28, TL = 23, TN = 24,
    TR = 26, UA = 29, VA = 22, VG = 24, XK = 20,
}

--- mod-97 (ISO 7064) of an IBAN without spaces: the first four characters moved to the end, letters as 10..35.
local function mod97(s)
    local r = 0
    local n = #s
    for k = 5, n + 4 do
        local c = byte(s, k <= n and k or k - n)
        if c >= 48 and c <= 57 then
            r = (r * 10 + (c - 48)) % 97
        elseif c >= 65 and c <= 90 then
            r = (r * 100 + (c - 55)) % 97
        else
            return -1
        end
    end
    return r
end
_M.mod97 = mod97

local function iban_ok(v)
    local s = find(v, " ", 1, true) and gsub(v, " ", "") or v
    local n = #s
    if n < 15 or n > 34 then return false end
    local want = IBAN_LEN[sub(s, 1, 2)]
    if want and n ~= want then return false end
    return mod97(s) == 1
end

local function phone_ok(v)
    local digits = digits_of(v)
    if byte(v, 1) == 43 then -- '+': E.164 allows up to 15 digits with the country code
        return digits >= 8 and digits <= 15
    elseif byte(v, 1) == 40 or (byte(v, 1) ~= 48) then -- (415) 555-0100, 415-555-0100
        return digits == 10
    end
    return digits >= 9 and digits <= 12 -- national forms with a trunk 0
end

-- An IPv6 address in any of its text forms (RFC 4291 2.2), with at least two groups written.
local function ipv6_ok(v)
    local s = v
    local v4 = s:match("[:](%d+%.%d+%.%d+%.%d+)$")
    local groups_max = 8
    if v4 then
        for o in v4:gmatch("%d+") do
            if tonumber(o) > 255 or (#o > 1 and sub(o, 1, 1) == "0") then return false end
        end
        s = sub(s, 1, #s - #v4) .. "0:0" -- two groups' worth
    end
    local dbl = find(s, "::", 1, true)
    if dbl and find(s, "::", dbl + 1, true) then return false end
    if find(s, ":::", 1, true) then return false end
    local written = 0
    for g in (s .. ":"):gmatch("([^:]*):") do
        if g ~= "" then
            if #g > 4 or g:find("[^%x]") then return false end
            written = written + 1
        end
    end
    if dbl then
        if sub(s, 1, 1) == ":" and sub(s, 1, 2) ~= "::" then return false end
        if sub(s, -1) == ":" and sub(s, -2) ~= "::" then return false end
        return written < groups_max and written >= 2
    end
    if sub(s, 1, 1) == ":" or sub(s, -1) == ":" then return false end
    return written == groups_max
end

---------------------------------------------------------------------------------------------------------------
-- detectors

-- Four dotted octets (the pattern's shape): none past 255, none with a leading zero.
local function ipv4_ok(v)
    local o, len = 0, 0
    for i = 1, #v + 1 do
        local c = byte(v, i) or 46
        if c == 46 then
            if o > 255 or (len > 1 and byte(v, i - len) == 48) then return false end
            o, len = 0, 0
        else
            o, len = o * 10 + (c - 48), len + 1
        end
    end
    return true
end

local function ssn_ok(v)
    local a, g, s = v:match("^(%d%d%d)%-(%d%d)%-(%d%d%d%d)$")
    return a ~= nil and a ~= "000" and a ~= "666" and byte(a, 1) ~= 57 and g ~= "00" and s ~= "0000"
end

-- name -> {label, pattern, check, pass, need}. Patterns are PCRE2 alternatives without numbered groups. Each starts
-- with a definite character (a digit, '+', '(', an upper-case letter, a literal prefix) and looks behind only after it,
-- so PCRE2's JIT skips to candidate positions instead of trying every byte. pass: how the detector runs
--   "numbers": the digit-led detectors, one alternation, run only around digits; "own": a pattern of its own (its
--   literal prefix makes the scan a memchr-like skip); "at": e-mail, only around an '@'; "colon": IPv6, only around
--   colons (RUNS below). need: a literal every value holds (the "own" passes run only over a text that has theirs:
--   one vector pass per literal for all of them, core/common/literals.c, instead of a PCRE2 scan each).
local DETECTORS = {
    private_key = { label = "PRIVATE_KEY", pass = "own", need = "-----BEGIN",
        pattern = [[-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----[\s\S]{1,16384}?]]
            .. [[-----END (?:[A-Z0-9]+ ){0,3}PRIVATE KEY-----]] },
    jwt = { label = "JWT", pass = "own", need = "eyJ",
        pattern = [[eyJ(?<![\w-]eyJ)[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}(?![\w-])]] },
    api_key = { label = "API_KEY", pass = "own", need = "sk-",
        pattern = [[sk-(?<![\w-]sk-)[A-Za-z0-9_-]{20,}(?![\w-])]] },
    github_token = { label = "GITHUB_TOKEN", pass = "own", need = "_",
        pattern = [[g(?<!\wg)(?:h[pousr]_[A-Za-z0-9]{36,255}|ithub_pat_[A-Za-z0-9_]{22,255})(?![\w])]] },
    aws_access_key = { label = "AWS_ACCESS_KEY", pass = "own", need = "A",
        pattern = [[A(?<![A-Za-z0-9]A)(?:KIA|SIA|BIA|CCA|IDA|ROA|IPA|NPA|NVA|GPA|PKA)[A-Z0-9]{16}]]
            .. [[(?![A-Za-z0-9])]] },
    email = { label = "EMAIL", pass = "at",
        pattern = [[[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-][A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{0,63}@]]
            .. [[(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])]] },
    iban = { label = "IBAN", check = iban_ok, pass = "numbers",
        pattern = [[[A-Z]{2}\d\d(?<![A-Za-z0-9][A-Z]{2}\d\d)(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])]] },
    credit_card = { label = "CREDIT_CARD", check = card_ok, pass = "numbers",
        pattern = [[\d(?<![\w-]\d)(?:[ -]?\d){12,18}(?![\w-])]] },
    us_ssn = { label = "US_SSN", check = ssn_ok, pass = "numbers",
        pattern = [[\d(?<![\w-]\d)\d\d-\d\d-\d{4}(?![\w-])]] },
    phone = { label = "PHONE", check = phone_ok, pass = "numbers",
        -- +49 30 1234567 | (415) 555-0100 | 415-555-0100 | 030 1234567 (a trunk 0, then an area code)
        pattern = [[(?:\+(?<![\w+]\+)[1-9]\d{0,3}(?:[ .-]?\(?\d{1,4}\)?){2,6}]]
            .. [[|\((?<!\w\()\d{3}\)[ .-]?\d{3}[ .-]\d{4}]]
            .. [[|\d(?<![\w+]\d)(?:\d\d[.-]\d{3}[.-]\d{4}|(?<=0)[1-9]\d{0,3}(?:[ ./-]\d{2,8}){1,4}))(?![\w])]] },
    ipv6 = { label = "IPV6", check = ipv6_ok, pass = "colon",
        pattern = [[(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?]]
            .. [[(?![\w:]|\.\d)]] },
    ipv4 = { label = "IPV4", check = ipv4_ok, pass = "numbers",
        pattern = [[\d(?<![\w.]\d)\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w]|\.\d)]] },
}

-- Priority where two detectors find overlapping values (the earlier start wins; at one start, the earlier here):
-- the longest, most specific shapes first (a PEM block before anything in it, secrets before e-mail, an IBAN before
-- the digits in it, SSN and cards before phone numbers).
local ORDER = { "private_key", "jwt", "api_key", "github_token", "aws_access_key", "email", "iban", "credit_card",
                "us_ssn", "phone", "ipv6", "ipv4" }
_M.BUILTIN = ORDER

local GROUPS = {
    secrets = { "api_key", "aws_access_key", "github_token", "jwt", "private_key" },
    all = ORDER,
}
_M.GROUPS = GROUPS

--- The label a detector name gets in placeholders and counts (EMAIL, CREDIT_CARD, a custom name upper-cased).
function _M.label(name)
    local d = DETECTORS[name]
    if d then return d.label end
    return (gsub(upper(name), "[^%w]", "_"))
end

--- Expands detector names (groups included) into a set; nil, err for an unknown name.
function _M.expand(names, custom)
    local set = {}
    local known_custom = {}
    for _, c in ipairs(custom or {}) do known_custom[c.name] = true end
    for _, n in ipairs(names) do
        if GROUPS[n] then
            for _, m in ipairs(GROUPS[n]) do set[m] = true end
        elseif DETECTORS[n] or known_custom[n] then
            set[n] = true
        else
            return nil, "unknown detector " .. tostring(n) .. " (known: " .. concat(ORDER, ", ") ..
                ", secrets, all, or a custom name)"
        end
    end
    return set
end

local Scanner = {}
Scanner.__index = Scanner

-- A pass: one compiled pattern and the detectors that are its named alternatives.
local function new_pass(kind, list)
    local alts = {}
    for i, d in ipairs(list) do
        alts[i] = "(?<" .. d.group_name .. ">" .. (d.custom and ("(?:" .. d.pattern .. ")") or d.pattern) .. ")"
    end
    local r, err = re.compile(concat(alts, "|"))
    if not r then return nil, err end
    local by_group = {}
    for _, d in ipairs(list) do
        d.group = r:group_of(d.group_name)
        if not d.group then return nil, "internal: group " .. d.group_name .. " not found" end
        by_group[d.group] = d
    end
    return { kind = kind, re = r, dets = list, by_group = by_group }
end

--- Builds a scanner. opts: detectors (list of names, groups allowed; default all), custom ({name, pattern}: custom
--- detectors, enabled by `all` or by their own name in `detectors`), prefilter (default true; false runs the
--- digit-led, e-mail and IPv6 detectors over the whole text: the reference the pre-filters are tested against).
--- Returns scanner | nil, err.
function _M.scanner(opts)
    opts = opts or {}
    local custom = opts.custom or {}
    local names = opts.detectors or { "all" }
    local set, err = _M.expand(names, custom)
    if not set then return nil, err end
    local with_all = false -- `all` is every detector: the built-in ones and the custom ones
    for _, n in ipairs(names) do
        if n == "all" then with_all = true end
    end
    local dets, passes, own = {}, {}, {}
    local customs = {}
    for i, c in ipairs(custom) do
        if type(c.name) ~= "string" or not c.name:match("^[a-z][a-z0-9_]*$") then
            return nil, "custom[" .. i .. "].name must be lower-case letters, digits and _ (starting with a letter)"
        end
        if DETECTORS[c.name] or GROUPS[c.name] then
            return nil, "custom[" .. i .. "].name " .. c.name .. " is a built-in detector's name"
        end
        if type(c.pattern) ~= "string" or c.pattern == "" then
            return nil, "custom[" .. i .. "].pattern must be a non-empty string"
        end
        local alone, cerr = re.compile(c.pattern)
        if not alone then return nil, "custom[" .. i .. "].pattern: " .. tostring(cerr) end
        if set[c.name] or with_all then
            local d = { name = c.name, label = _M.label(c.name), group_name = "c_" .. c.name, custom = true,
                        pattern = c.pattern, prio = #dets + 1 }
            dets[#dets + 1] = d
            customs[#customs + 1] = d
        end
    end
    local numbers = {}
    for _, name in ipairs(ORDER) do
        if set[name] then
            local src = DETECTORS[name]
            local d = { name = name, label = src.label, check = src.check, group_name = name, pattern = src.pattern,
                        prio = #dets + 1 }
            dets[#dets + 1] = d
            if src.pass == "numbers" then
                numbers[#numbers + 1] = d
            else
                own[#own + 1] = { src.pass, d }
            end
        end
    end
    if #dets == 0 then return nil, "no detector enabled" end
    local p
    if #customs > 0 then
        -- a set, not one pasted alternation: each custom pattern keeps its own group numbers and names
        local members = {}
        for i, d in ipairs(customs) do members[i] = d.pattern end
        local cset
        cset, err = re.set(members)
        if not cset then return nil, "custom patterns: " .. tostring(err) end
        passes[#passes + 1] = { kind = "set", set = cset, dets = customs }
    end
    local needs = {}
    for _, o in ipairs(own) do
        p, err = new_pass(opts.prefilter == false and "own" or o[1], { o[2] })
        if not p then return nil, err end
        local need = DETECTORS[o[2].name].need
        if need and opts.prefilter ~= false then
            needs[#needs + 1] = need
            p.need = #needs - 1
        end
        passes[#passes + 1] = p
    end
    if #numbers > 0 then
        p, err = new_pass(opts.prefilter == false and "own" or "numbers", numbers)
        if not p then return nil, err end
        passes[#passes + 1] = p
    end
    local by_name = {}
    for _, d in ipairs(dets) do by_name[d.name] = d end
    local sc = { passes = passes, dets = dets, by_name = by_name }
    if #needs > 0 then
        local n = #needs
        sc.needs, sc.nneed = needs, n -- the strings anchor the pointers
        sc.nptrs, sc.nlens = ffi.new("const char *[?]", n), ffi.new("size_t[?]", n)
        sc.nfold, sc.nfound = ffi.new("unsigned char[?]", n), ffi.new("unsigned char[?]", n)
        for i, l in ipairs(needs) do sc.nptrs[i - 1], sc.nlens[i - 1] = l, #l end
    end
    return setmetatable(sc, Scanner)
end

-- Appends the candidate from..to of pass p to list (flat triples: from, to, det; det = false for a candidate that
-- failed its check: it still covers its bytes).
local function add(p, r, text, from, to, list)
    local det = p.dets[1]
    local dets = p.dets
    if #dets > 1 then
        for i = 1, #dets do
            local d = dets[i]
            if r:group(d.group) then det = d break end
        end
    end
    if det.check and not det.check(sub(text, from, to)) then det = false end
    local n = #list
    list[n + 1], list[n + 2], list[n + 3] = from, to, det
end

-- Pre-filters (core/common/runs.c): a pass runs only inside the maximal runs of the bytes its values are made of that
-- hold enough of its mark, with the subject cut one byte after the run (the byte that ends a run is not one of those
-- bytes, so no look-ahead of these patterns needs more: `\.\d` cannot start there), look-behinds still seeing the
-- text before. The same candidates as a scan of the whole text (spec/plugins/ai-pii/01-unit_spec.lua compares the two
-- on random text), for a fraction of the cost: prose has few digits, '@' and colons, and PCRE2 would otherwise stop
-- at every digit and capital letter (numbers), every letter (e-mail) or every byte (IPv6 has no first character).
--   numbers: digits, A-Z, space and + - . ( ) /, two digits at least (an IBAN: its check digits; a card, an SSN, a
--     phone number, an IPv4 address: more); e-mail: the local part's and the domain's bytes and one '@'; IPv6: hex
--     digits, ':' and '.' (an embedded IPv4 address), two colons at least.
local function class(ranges, chars)
    local cls = ffi.new("unsigned char[256]")
    for i = 1, #ranges, 2 do
        for c = byte(ranges, i), byte(ranges, i + 1) do cls[c] = 1 end
    end
    for i = 1, #chars do cls[byte(chars, i)] = 1 end
    return cls
end
local RUNS = {
    numbers = { class("09AZ", "+-.()/ "), -1, 2 },
    at = { class("09AZaz", "._%+-@"), byte("@"), 1 },
    colon = { class("09AFaf", ":."), byte(":"), 2 },
}
local TRIPLES = 64
local found = ffi.new("int[?]", TRIPLES * 3)
local next_p = ffi.new("size_t[1]")
local errbuf = ffi.new("char[?]", 256)

-- Candidates of a pass run inside the runs of cls (mark: a byte, or -1 for digits; need: how many of them): one call
-- into C for the whole text (core/common/runs.c), then the checks here.
local function run_in_runs(p, text, list, cls, mark, need)
    local len, start = #text, 0
    local by_group = p.by_group
    while true do
        local n = C.sl_text_runs_match(p.re.re, text, len, start, cls, mark, need, found, TRIPLES, next_p)
        if n < 0 then
            C.sl_regex_strerror(n, errbuf, 256)
            return ffi.string(errbuf)
        end
        for i = 0, n - 1 do
            local from, to = found[3 * i] + 1, found[3 * i + 1]
            local det = by_group[found[3 * i + 2]] or p.dets[1]
            if det.check and not det.check(sub(text, from, to)) then det = false end
            local k = #list
            list[k + 1], list[k + 2], list[k + 3] = from, to, det
        end
        if n < TRIPLES then return end
        start = tonumber(next_p[0])
    end
end

-- Candidates of one pass over text, appended to list. Returns nil, or an error (a match limit hit).
local function run_pass(p, text, list)
    local r, len = p.re, #text
    local run = RUNS[p.kind]
    if run then return run_in_runs(p, text, list, run[1], run[2], run[3]) end
    if p.kind == "set" then -- custom patterns: no check, the member says which detector
        local pos, set, dets = 1, p.set, p.dets
        while pos <= len do
            local from, to, i = set:exec(text, pos)
            if not from then
                return to
            elseif to < from then
                pos = from + 1
            else
                local n = #list
                list[n + 1], list[n + 2], list[n + 3] = from, to, dets[i]
                pos = to + 1
            end
        end
        return
    end
    -- the whole text: the pattern's first character lets the JIT skip to candidates
    local pos = 1
    while pos <= len do
        local from, to = r:exec(text, pos)
        if not from then
            return to
        elseif to < from then -- an empty match (a custom pattern that can match nothing)
            pos = from + 1
        else
            add(p, r, text, from, to, list)
            pos = to + 1
        end
    end
end

-- Candidates of every pass over text, appended to list; an "own" pass runs only when its literal is in the text.
-- Returns nil, or an error.
local function run_passes(self, text, list)
    local has = self.nfound
    if has then
        C.sl_literals_find(text, #text, self.nptrs, self.nlens, self.nfold, self.nneed, has)
    end
    local passes = self.passes
    for i = 1, #passes do
        local p = passes[i]
        local need = p.need
        if not need or has[need] ~= 0 then
            local err = run_pass(p, text, list)
            if err then return err end
        end
    end
end

-- Candidate a sorts before candidate b (offsets of their triples in list): by start, then priority.
local function before(list, a, b)
    if list[a] ~= list[b] then return list[a] < list[b] end
    local da, db = list[a + 2], list[b + 2]
    return (da and da.prio or 0) < (db and db.prio or 0)
end

--- Scans text; for each detected value calls fn(det, value, from, to, arg), whose string result replaces the value
--- (nil keeps it). Where values of two detectors overlap, the one that starts first wins (at one start, the first in
--- priority order); a candidate that failed its check (Luhn, mod-97, ...) keeps its bytes from every detector.
--- Returns the new text (the same string when nothing was replaced) and the number of values detected; nil, err on a
--- match error (a match limit hit on hostile input).
function Scanner:scan(text, fn, arg)
    local list = new_tab(24, 0) -- room for 8 candidates: a list grown a rehash at a time costs more than they do
    local err = run_passes(self, text, list)
    if err then return nil, err end
    local m = #list
    if m == 0 then return text, 0 end
    -- order candidates by start, then priority (insertion sort: lists are short)
    local idx = new_tab(m / 3, 0)
    for i = 1, m / 3 do idx[i] = i * 3 - 2 end
    for i = 2, #idx do
        local v, j = idx[i], i - 1
        while j >= 1 and before(list, v, idx[j]) do
            idx[j + 1] = idx[j]
            j = j - 1
        end
        idx[j + 1] = v
    end
    local out, k, copied, last, n = nil, 0, 1, 0, 0
    for i = 1, #idx do
        local a = idx[i]
        local from, to, det = list[a], list[a + 1], list[a + 2]
        if from > last then
            last = to
            if det then
                n = n + 1
                local rep = fn(det, sub(text, from, to), from, to, arg)
                if rep ~= nil then
                    out = out or {}
                    out[k + 1] = sub(text, copied, from - 1)
                    out[k + 2] = rep
                    k = k + 2
                    copied = to + 1
                end
            end
        end
    end
    if not out then return text, n end
    out[k + 1] = sub(text, copied)
    return concat(out, "", 1, k + 1), n
end

--- Every candidate of text before overlaps are settled: a list of {from, to, name} (name false for a candidate that
--- failed its check), in pass order; nil, err on a match error. For specs (the pre-filter against the plain scan).
function Scanner:candidates(text)
    local list = {}
    local err = run_passes(self, text, list)
    if err then return nil, err end
    local out = {}
    for i = 1, #list, 3 do
        out[#out + 1] = { list[i], list[i + 1], list[i + 2] and list[i + 2].name }
    end
    return out
end

--- The detectors of this scanner, in priority order.
function Scanner:detectors()
    return self.dets
end

_M.DETECTORS = DETECTORS

return _M
