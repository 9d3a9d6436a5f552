-- ai-pii: masks personal data and secrets in a chat request before it leaves for a provider, and puts the
-- originals back into the answer before it reaches the client.
--
--   ai-pii:
--     detectors: [all]                # email, phone, credit_card, iban, us_ssn, ipv4, ipv6, api_key,
--                                     # aws_access_key, github_token, jwt, private_key; groups: secrets, all
--     action: placeholder             # redact ([EMAIL]) | mask (keep the last 4) | hash | placeholder (<PII_EMAIL_1>)
--     actions: {secrets: redact, credit_card: mask}      # per detector or group
--     custom: [{name: employee_id, pattern: 'EMP-\d{6}', action: redact}]   # on with `all` (or named in detectors)
--     roles: [system, user, assistant, tool]             # whose text is masked (default: every role)
--     tool_calls: true                # also tool-call arguments (OpenAI) and tool_use inputs (Anthropic)
--     restore: true                   # placeholders in the answer become the originals again
--     response: {detectors: [credit_card, secrets], action: redact}   # also mask what the model writes (opt-in)
--     hash_salt: "${PII_HASH_SALT}"   # required with the hash action (a secret: encrypted at rest)
--
-- Placeholders and their originals live only in the request's memory (ctx); the log and the usage record get counts
-- per detector, never values. Runs in rewrite (1056: after ai-prompt-guard, which sees the originals, before
-- ai-moderation, whose provider then sees masked text) and in body_filter (restore: JSON and SSE answers in both
-- client formats, a placeholder split over any number of events included). See docs/ai-pii.md.
local sluice = require("sluice")
local pii = require("sluice.ai.safety.pii")
local sreq = require("sluice.ai.safety.request")
local rs = require("sluice.ai.safety.response")
local safety = require("sluice.ai.safety")
local json = require("sluice.ai.common.json")
local restore = require("ai-pii.restore")
local splice = require("sluice.ai.safety.splice")
local utf8 = require("sluice.ai.validate").utf8

local type, ipairs, pairs, tostring, pcall, next = type, ipairs, pairs, tostring, pcall, next
local new_tab = require("table.new")
local gsub, sub = string.gsub, string.sub

local ACTIONS = { "redact", "mask", "hash", "placeholder" }
local names = { type = "array", minItems = 1, uniqueItems = true, items = { type = "string", minLength = 1 } }

local _M = {
    name = "ai-pii",
    version = "1.0",
    priority = 1056,
    schema = {
        type = "object",
        additionalProperties = false,
        properties = {
            detectors = { type = "array", minItems = 1, uniqueItems = true, default = { "all" },
                          items = { type = "string", minLength = 1 } },
            action = { enum = ACTIONS, default = "placeholder" },
            actions = { type = "object", default = {}, additionalProperties = { enum = ACTIONS } },
            custom = { type = "array", default = {}, maxItems = 100, items = {
                type = "object", required = { "name", "pattern" }, additionalProperties = false,
                properties = {
                    name = { type = "string", pattern = "^[a-z][a-z0-9_]*$", maxLength = 64 },
                    pattern = { type = "string", minLength = 1, maxLength = 16384 },
                    action = { enum = ACTIONS },
                } } },
            roles = { type = "array", minItems = 1, uniqueItems = true,
                      default = { "system", "user", "assistant", "tool" },
                      items = { enum = { "system", "user", "assistant", "tool" } } },
            tool_calls = { type = "boolean", default = true },
            restore = { type = "boolean", default = true },
            response = { type = "object", additionalProperties = false, properties = {
                detectors = names,
                action = { enum = { "redact", "mask", "hash" }, default = "redact" },
            } },
            hash_salt = { type = "string", minLength = 8, maxLength = 1024, secret = true },
        },
    },
}

local log = sluice.log.named(_M.name)

---------------------------------------------------------------------------------------------------------------
-- config

-- detector name -> action, from `action`, `actions` (names and groups; a name beats its group) and custom ones
local function action_map(conf, scanner)
    local map = {}
    for _, d in ipairs(scanner:detectors()) do map[d.name] = conf.action end
    for k, a in pairs(conf.actions or {}) do
        if pii.GROUPS[k] then
            for _, n in ipairs(pii.GROUPS[k]) do
                if map[n] and not (conf.actions or {})[n] then map[n] = a end
            end
        end
    end
    for k, a in pairs(conf.actions or {}) do
        if not pii.GROUPS[k] and map[k] then map[k] = a end
    end
    for _, c in ipairs(conf.custom or {}) do
        if c.action and map[c.name] then map[c.name] = c.action end
    end
    return map
end

--- Compiles conf: {scanner, actions, response_scanner?, roles} | nil, err.
function _M.compile(conf)
    local sc, err = pii.scanner({ detectors = conf.detectors, custom = conf.custom })
    if not sc then return nil, err end
    for k in pairs(conf.actions or {}) do
        if not pii.GROUPS[k] and not sc.by_name[k] then
            return nil, "actions." .. tostring(k) .. ": not an enabled detector"
        end
    end
    local actions = action_map(conf, sc)
    for name, a in pairs(actions) do
        if a == "hash" and not conf.hash_salt then
            return nil, "hash_salt is required with the hash action (" .. name .. ")"
        end
    end
    local c = { scanner = sc, actions = actions, roles = {} }
    for _, r in ipairs(conf.roles or {}) do c.roles[r] = true end
    local resp = conf.response
    if resp then
        c.response_scanner, err = pii.scanner({ detectors = resp.detectors or conf.detectors, custom = conf.custom })
        if not c.response_scanner then return nil, "response: " .. tostring(err) end
        c.response_action = resp.action or "redact"
        if c.response_action == "hash" and not conf.hash_salt then
            return nil, "hash_salt is required with the hash action (response)"
        end
    end
    return c
end

function _M.check(conf)
    local _, err = _M.compile(conf)
    if err then return nil, err end
    return true
end

---------------------------------------------------------------------------------------------------------------
-- actions

--- value with every letter and digit but the last four turned into '*' (separators stay).
local function mask(value)
    local alnum = #gsub(value, "[^%w]", "")
    local keep = alnum - 4
    if keep <= 0 then return (gsub(value, "%w", "*")) end
    local n = 0
    return (gsub(value, "%w", function(c)
        n = n + 1
        if n <= keep then return "*" end
        return c
    end))
end
_M.mask = mask

local crypto
local function hash(label, value, salt)
    crypto = crypto or require("sluice.crypto")
    return "[" .. label .. ":" .. sub(crypto.hmac_sha256_hex(salt, value), 1, 16) .. "]"
end

--- The text for one detected value (det: the scanner's detector) under action; placeholders are recorded in st.
function _M.replace(st, det, value, action, salt)
    if action == "redact" then
        return "[" .. det.label .. "]"
    elseif action == "mask" then
        return mask(value)
    elseif action == "hash" then
        return hash(det.label, value, salt)
    end
    local ph = st.by_value[value]
    if not ph then
        local n = (st.per_label[det.label] or 0) + 1
        st.per_label[det.label] = n
        ph = "<PII_" .. det.label .. "_" .. n .. ">"
        st.by_value[value] = ph
        st.by_ph[ph] = value
        st.nph = st.nph + 1
    end
    return ph
end

-- The replacement of one detected value (st.c: the compiled conf, st.salt: conf.hash_salt, set by mask_text).
local function on_value(det, value, _, _, st)
    st.counts[det.name] = (st.counts[det.name] or 0) + 1
    return _M.replace(st, det, value, st.c.actions[det.name], st.salt)
end

-- Masks one string; returns the new string (the same one when nothing was found).
local function mask_text(c, st, text, salt)
    st.c, st.salt = c, salt -- no closure per string: on_value finds them in st
    local out, _, err = c.scanner:scan(text, on_value, st)
    if not out then
        error("pii scan failed: " .. tostring(err), 0)
    end
    return out
end

-- The JSON decoder's own nesting limit (lua-cjson's decode_max_depth default): nothing decoded is deeper, so no
-- string is left unmasked because of where it sits; deeper still (another decoder) refuses the request.
local MAX_DEPTH = 1000

-- Masks every string inside a JSON value; true when something changed.
local function mask_value(c, st, v, salt, depth)
    local changed = false
    if depth > MAX_DEPTH then error("tool arguments nest deeper than " .. MAX_DEPTH .. " levels", 0) end
    for k, x in pairs(v) do
        if type(x) == "string" then
            local y = mask_text(c, st, x, salt)
            if y ~= x then v[k] = y; changed = true end
        elseif type(x) == "table" then
            if mask_value(c, st, x, salt, depth + 1) then changed = true end
        end
    end
    return changed
end

-- Puts y in slot s (edits, when given, collects where and what for sluice.ai.safety.splice).
local function set(s, y, edits)
    s.t[s.k] = y
    if edits then edits[#edits + 1] = { path = s.path, from = s.from, to = s.to, text = y } end
end

--- Masks the slots of units (sluice.ai.safety.request) in place for compiled conf c; st collects placeholders and
--- counts, edits (when given) each changed string. True when something changed.
function _M.mask_units(c, conf, st, units, edits)
    local changed = false
    local salt = conf.hash_salt
    for _, u in ipairs(units) do
        if c.roles[u.role] then
            for _, s in ipairs(u.slots) do
                local text = s.t[s.k]
                if s.kind == "tool_args" or s.kind == "tool_input" then
                    if conf.tool_calls then
                        local v = s.kind == "tool_args" and json.json_decode(text) or nil
                        if type(v) == "table" then -- arguments are JSON text: mask the strings inside
                            if mask_value(c, st, v, salt, 0) then
                                set(s, json.json_encode(v) or text, edits)
                                changed = true
                            end
                        else
                            local y = mask_text(c, st, text, salt)
                            if y ~= text then set(s, y, edits); changed = true end
                        end
                    end
                else
                    local y = mask_text(c, st, text, salt)
                    if y ~= text then set(s, y, edits); changed = true end
                end
            end
        end
    end
    st.c, st.salt = nil, nil -- the state outlives the rewrite phase: no secret kept in it
    return changed
end

--- Masks a decoded request body in place for compiled conf c (see mask_units; pure apart from st: for specs).
function _M.mask_body(c, conf, st, body, api, edits)
    return _M.mask_units(c, conf, st, sreq.units(body, api), edits)
end

--- A new per-request state: placeholders (by value, by placeholder), counts per detector.
function _M.new_state()
    -- room for a few values from the start: a table grown one rehash at a time costs more than the masking
    return { by_value = new_tab(0, 8), by_ph = new_tab(0, 8), per_label = new_tab(0, 4), nph = 0,
             counts = new_tab(0, 4), restored = 0, response_counts = {} }
end

---------------------------------------------------------------------------------------------------------------
-- phases

local function build(conf)
    return _M.compile(conf)
end

-- The scan failed: fail closed, nothing unmasked leaves because of a match limit on hostile input.
local function scan_failed(ctx, api, err)
    log.warn("request refused (id ", ctx.request_id, "): ", err)
    return sreq.refusal(api, 400, "the request could not be checked for personal data", "pii_scan_failed")
end

local function done(ctx, st)
    ctx.pii = st
    local rec = safety.record(ctx, "pii")
    rec.detected = st.counts
    rec.placeholders = st.nph
end

function _M.rewrite(conf, ctx)
    local api = sreq.api(ctx.path)
    local c, err = safety.per_conf(conf, build)
    local raw = sluice.request.json_bytes(ctx) -- nil: the table was changed, only it says what goes upstream
    -- an OpenAI request whose bytes are plain JSON: its texts read where they sit, the masks spliced into them
    local units = raw and api == "openai" and sreq.raw_units(raw) or nil
    if units then
        if not c then
            log.err("cannot compile the detectors (id ", ctx.request_id, "): ", err)
            return sreq.refusal(api, 500, "PII masking is misconfigured (id " .. ctx.request_id .. ")")
        end
        local st, edits = _M.new_state(), {}
        local ok, res = pcall(_M.mask_units, c, conf, st, units, edits)
        if not ok then return scan_failed(ctx, api, res) end
        if not res then return done(ctx, st) end
        -- no UTF-8 check here (commit makes one): plain bytes repeat no key, so every string of them is one of the
        -- table's, and the bytes are UTF-8 exactly when the masked table's strings are (what validation checks)
        local out = splice.apply(raw, edits)
        if out then
            sluice.request.set_body(out, ctx)
            sreq.note_plain(out)
            return done(ctx, st)
        end
        -- not sure of the bytes: the decoded table masked again from the start (the same texts, the same result)
    end
    local body = sluice.request.peek_json(ctx) -- changed only with set_json: no mask, the bytes as sent
    if type(body) ~= "table" then
        return
    end
    if not c then
        log.err("cannot compile the detectors (id ", ctx.request_id, "): ", err)
        return sreq.refusal(api, 500, "PII masking is misconfigured (id " .. ctx.request_id .. ")")
    end
    local st = _M.new_state()
    raw = sluice.request.json_bytes(ctx) -- the bytes body was decoded from (nil: the table was changed)
    local edits = raw and {} or nil
    local ok, res = pcall(_M.mask_body, c, conf, st, body, api, edits)
    if not ok then return scan_failed(ctx, api, res) end
    done(ctx, st)
    if res then
        _M.commit(ctx, body, raw, edits)
    end
end

--- Hands the masked body on: the client's bytes with the masked strings spliced in (sluice.ai.safety.splice),
--- which then go upstream as they are, checked as UTF-8 in one pass; else (the splice not sure, or the bytes not
--- UTF-8: then the table is checked string by string, as before) the table, re-encoded. Either way what goes
--- upstream says what the masked table says.
function _M.commit(ctx, body, raw, edits)
    local out = edits and splice.apply(raw, edits)
    if out and utf8(out) then
        sluice.request.set_body_json(out, body, ctx)
    else
        sluice.request.set_json(body, ctx)
    end
end

function _M.header_filter(conf, ctx)
    safety.link(ctx)
end

function _M.body_filter(conf, ctx, chunk, eof)
    local st = ctx.pii
    if not st then return nil end
    local f = st.filter
    if f == nil then
        local c = safety.per_conf(conf, build)
        local want_restore = conf.restore and st.nph > 0
        if not c or not (want_restore or c.response_scanner) then
            st.filter = false
            return nil
        end
        f = rs.new(ctx, restore.handler(c, conf, st, want_restore, _M.replace))
        st.filter = f
    elseif f == false then
        return nil
    end
    return f:filter(chunk, eof)
end

function _M.log(conf, ctx)
    local st = ctx.pii
    if not st then return end
    local rec = ctx.safety and ctx.safety.pii
    if rec then
        rec.restored = st.restored
        rec.response_masked = next(st.response_counts) and st.response_counts or nil
    end
    if sluice.log.access_enabled() then
        sluice.log.access("pii", { detected = next(st.counts) and st.counts or nil, placeholders = st.nph,
                                   restored = st.restored,
                                   response_masked = next(st.response_counts) and st.response_counts or nil })
    end
end

return _M
