-- ai-moderation's checks: local categories compiled into one regex set per config (sluice.re.set), the /v1/moderations
-- provider call, and the monitor that follows a streamed answer window by window.
local sluice = require("sluice")
local common_http = require("sluice.ai.common.http")
local json = require("sluice.ai.common.json")

local type, ipairs, pairs, tostring, tonumber, next, setmetatable = type, ipairs, pairs, tostring, tonumber, next,
    setmetatable
local gsub, sub, byte, lower, concat = string.gsub, string.sub, string.byte, string.lower, table.concat

local _M = {}

local log = sluice.log.named("ai-moderation")

-- A keyword as a pattern: literal, caseless, whole words where it starts or ends with a word character.
local function keyword_pattern(k)
    local lit = gsub(k, "[%^%$%(%)%%%.%[%]%*%+%-%?%{%}|\\/#]", "\\%0")
    lit = gsub(lit, "%s+", "\\s+") -- "i will hurt you" also across line breaks and double spaces
    local function word(c) return c and ((c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122)
        or c == 95) end
    local pre = word(byte(k, 1)) and "\\b" or ""
    local post = word(byte(k, -1)) and "\\b" or ""
    return pre .. lit .. post
end
_M.keyword_pattern = keyword_pattern

local function is_word(ch)
    return ch and ((ch >= 48 and ch <= 57) or (ch >= 65 and ch <= 90) or (ch >= 97 and ch <= 122) or ch == 95)
end

--- Where a tail of text that could be the start of a block keyword begins (at a word boundary), or nil.
function _M.keyword_tail(c, text)
    local n = #text
    if c.maxkw < 2 or n == 0 then return nil end
    local from = n - c.maxkw + 2
    if from < 1 then from = 1 end
    for i = from, n do
        if i == 1 or not is_word(byte(text, i - 1)) or not is_word(byte(text, i)) then
            if c.prefixes[lower(sub(text, i))] then return i end
        end
    end
    return nil
end

--- Compiles conf: {set (nil without categories), cats = {{name, threshold, action}}, cat_of (set member -> cat),
--- roles} | nil, err. The keywords of a category are one member of the set, each pattern one more: matched as one
--- alternation would be (sluice.re.set), each pattern with its own group numbers and names.
function _M.compile(conf)
    local members, cat_of, cats = {}, {}, {}
    for i, cat in ipairs(conf.categories or {}) do
        local kws = {}
        local entry = { name = cat.name, threshold = cat.threshold or 1, action = cat.action or "block" }
        for _, k in ipairs(cat.keywords or {}) do kws[#kws + 1] = keyword_pattern(k) end
        local before = #members
        if #kws > 0 then
            members[#members + 1] = "(?i:" .. concat(kws, "|") .. ")"
            cat_of[#members] = entry
        end
        for j, p in ipairs(cat.patterns or {}) do
            local ok, err = sluice.re.compile(p)
            if not ok then
                return nil, "categories[" .. i .. "] (" .. tostring(cat.name) .. ").patterns[" .. j .. "]: " ..
                    tostring(err)
            end
            members[#members + 1] = p
            cat_of[#members] = entry
        end
        if #members == before then
            return nil, "categories[" .. i .. "] (" .. tostring(cat.name) .. "): give keywords or patterns"
        end
        cats[#cats + 1] = entry
    end
    -- proper prefixes of the block keywords (lower case): a piece of a stream ending in one is kept back until the
    -- word is whole, so the start of a blocked word never reaches the client
    local prefixes, maxkw = {}, 0
    for _, cat in ipairs(conf.categories or {}) do
        if (cat.action or "block") == "block" then
            for _, k in ipairs(cat.keywords or {}) do
                local low = lower(k)
                if #low > maxkw then maxkw = #low end
                for j = 1, #low - 1 do prefixes[sub(low, 1, j)] = true end
            end
        end
    end
    local c = { cats = cats, cat_of = cat_of, roles = {}, prefixes = prefixes, maxkw = maxkw }
    for _, r in ipairs(conf.roles or { "user" }) do c.roles[r] = true end
    if #members > 0 then
        local set, err = sluice.re.set(members)
        if not set then return nil, "categories: " .. tostring(err) end
        c.set = set
    end
    return c
end

-- Counts the matches of each category in text that end after byte `after` into hits; nil or an error.
local function count(c, text, after, hits)
    local set = c.set
    local pos, len = 1, #text
    while pos <= len do
        local from, to, i = set:exec(text, pos)
        if not from then return to end
        if to >= from and to > after then
            local name = c.cat_of[i].name
            hits[name] = (hits[name] or 0) + 1
        end
        pos = (to >= from and to or from) + 1
    end
end

-- A verdict from hit counts: the first block category at its threshold, else flags; nil when nothing.
local function verdict_of(c, hits, flagged)
    local v
    for _, cat in ipairs(c.cats) do
        local n = hits[cat.name]
        if n and n >= cat.threshold then
            if cat.action == "block" then
                return { action = "block", category = cat.name, source = "local", hits = n, flags = v and v.flags }
            elseif not (flagged and flagged[cat.name]) then
                v = v or { action = "flag", source = "local", flags = {} }
                v.category = v.category or cat.name
                v.flags[#v.flags + 1] = cat.name
                if flagged then flagged[cat.name] = true end
            end
        end
    end
    return v
end

--- The local verdict over text (a request): nil, or {action, category, source = "local", hits, flags}.
function _M.local_verdict(c, text)
    if not c.set then return nil end
    local hits = {}
    local err = count(c, text, 0, hits)
    if err then
        return { action = "block", category = "moderation_error", source = "local", error = tostring(err) }
    end
    return verdict_of(c, hits, nil)
end

---------------------------------------------------------------------------------------------------------------
-- the provider

-- POSTs {model, input} to the provider's /v1/moderations; returns the first result table | nil, err.
local function call(conf, ctx, text)
    local providers = ctx.config and ctx.config.providers or {}
    local p = providers[conf.provider]
    if type(p) ~= "table" then return nil, "provider " .. tostring(conf.provider) .. " is not configured" end
    local body = { input = text, model = conf.model }
    local status, resp
    if p.kind == "mock" then
        local r = require("sluice.ai.drivers.mock").moderations(p, body)
        local wait = (r.latency_ms or 0) / 1000
        if wait > conf.timeout then
            sluice.sleep(conf.timeout)
            return nil, "timeout"
        end
        if wait > 0 then sluice.sleep(wait) end
        status, resp = r.status, r.body
    elseif p.kind == "openai" or p.kind == "openai-compatible" then
        local ep, err = common_http.parse_endpoint(p.endpoint or "https://api.openai.com")
        if not ep then return nil, err end
        local headers = { ["content-type"] = "application/json" }
        if p.api_key and p.api_key ~= "" then headers.authorization = "Bearer " .. p.api_key end
        common_http.extra_headers(p, headers)
        local base = ep.base ~= "" and ep.base or "/v1"
        local port = ((ep.scheme == "https" and ep.port == 443) or (ep.scheme == "http" and ep.port == 80)) and ""
            or (":" .. ep.port)
        local res, herr, detail = sluice.http.request({
            method = "POST", url = ep.scheme .. "://" .. ep.host .. port .. base .. "/moderations",
            headers = headers, body = json.json_encode(body), timeout = conf.timeout,
            ssl_verify = not (p.tls and p.tls.verify == false), ca_file = p.tls and p.tls.ca_file,
            proxy = p.proxy, max_body = 1048576,
        })
        if not res then return nil, tostring(herr) .. (detail and (" (" .. detail .. ")") or "") end
        status, resp = res.status, res.body
    else
        return nil, "provider kind " .. tostring(p.kind) .. " has no /v1/moderations (openai, openai-compatible, mock)"
    end
    if status ~= 200 then return nil, "status " .. tostring(status) end
    local t = json.json_decode(resp or "")
    local r1 = type(t) == "table" and type(t.results) == "table" and t.results[1] or nil
    if type(r1) ~= "table" then return nil, "no results in the answer" end
    return r1
end

--- The provider's verdict over text: nil, or {action, category, source = "provider", score, error?}.
function _M.provider_verdict(conf, ctx, text)
    local r, err = call(conf, ctx, text)
    if not r then
        if conf.on_error == "fail_open" then
            log.warn("provider ", conf.provider, " failed (id ", ctx.request_id, "): ", err,
                "; let through (fail_open)")
            return nil
        end
        return { action = "block", category = "moderation_unavailable", source = "provider", error = err }
    end
    local scores = type(r.category_scores) == "table" and r.category_scores or {}
    local th = conf.thresholds or {}
    local best, best_score
    if next(th) ~= nil then
        for cat, score in pairs(scores) do
            local limit = th[cat] or th["*"]
            score = tonumber(score)
            if limit and score and score >= limit and (not best_score or score > best_score) then
                best, best_score = cat, score
            end
        end
    elseif r.flagged == true then
        local cats = type(r.categories) == "table" and r.categories or {}
        for cat, on in pairs(cats) do
            local score = tonumber(scores[cat]) or 0
            if on == true and (not best_score or score > best_score) then best, best_score = cat, score end
        end
        best = best or "flagged"
    end
    if not best then return nil end
    return { action = conf.provider_action or "block", category = best, source = "provider", score = best_score }
end

---------------------------------------------------------------------------------------------------------------
-- the monitor of an answer (whole or streamed)

local Mon = {}
Mon.__index = Mon

--- A monitor over the channels of one answer.
function _M.monitor(conf, ctx, c)
    return setmetatable({ conf = conf, ctx = ctx, c = c, keys = {}, hits = {}, flagged = {},
                          window = conf.stream.window, overlap = conf.stream.overlap }, Mon)
end

local function tail(s, n)
    if n <= 0 then return "" end
    if #s <= n then return s end
    return sub(s, -n)
end

-- Asks the provider about the unchecked text of channel k (with the overlap before it).
local function ask(self, k)
    local text = k.ptail .. k.unchecked
    k.ptail = tail(text, self.overlap)
    k.unchecked = ""
    local v = _M.provider_verdict(self.conf, self.ctx, text)
    return v
end

--- A new piece s of channel key: the local categories over it (with the overlap before it), the provider when a
--- window is full. Returns a verdict or nil.
function Mon:piece(key, s)
    local k = self.keys[key]
    if not k then
        k = { tail = "", ptail = "", unchecked = "" }
        self.keys[key] = k
    end
    local c = self.c
    local v
    if c.set then
        local win = k.tail .. s
        local err = count(c, win, #k.tail, self.hits)
        if err then
            return { action = "block", category = "moderation_error", source = "local", error = tostring(err) }
        end
        k.tail = tail(win, self.overlap)
        v = verdict_of(c, self.hits, self.flagged)
        if v and v.action == "block" then return v end
    end
    if self.conf.provider then
        k.unchecked = k.unchecked .. s
        if #k.unchecked >= self.window then
            return ask(self, k) or v
        end
    end
    return v
end

--- The answer ends: the provider over what it has not seen yet. Returns a verdict or nil.
function Mon:finish()
    if not self.conf.provider then return nil end
    local parts = {}
    for _, k in pairs(self.keys) do
        if k.unchecked ~= "" then parts[#parts + 1] = k end
    end
    for _, k in ipairs(parts) do
        local v = ask(self, k)
        if v then return v end
    end
    return nil
end

return _M
