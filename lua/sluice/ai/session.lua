-- Session memory of ai-context (docs/ai-context.md): where a conversation is kept, under which key, and how it
-- is trimmed. Used by plugins/ai-context.lua and by the Admin API's DELETE /admin/sessions/CONSUMER/SESSION.
--
-- A session is scoped to its consumer: the key is a SHA-256 of (namespace, consumer name, session id), and the
-- stored record repeats the consumer and the session id, which are compared on every read. So one consumer
-- naming another's session id reads nothing. Records are JSON {v = 1, c = consumer, s = session, m = messages}.
local sluice = require("sluice")
local crypto = require("sluice.crypto")
local tokens = require("sluice.ai.tokens")
local cjson = require("cjson.safe")

local type, ipairs, tostring = type, ipairs, tostring
local concat = table.concat

local _M = { ID_PATTERN = "^[%w_%.:%-]+$", MAX_ID = 128 }

--- The store key of a session.
function _M.key(conf, consumer, id)
    return (conf.key_prefix or "sluice:session:")
        .. crypto.sha256_hex(concat({ conf.namespace or "", consumer or "", id }, "\0"))
end

--- The text of an OpenAI or Anthropic message content (sluice.ai.text_of), "" for a list without text.
function _M.text_of(c)
    return sluice.ai.text_of(c) or (type(c) == "table" and "" or nil)
end

--- Reads a session's messages: list | nil, err (a store failure; a missing or foreign record is an empty list).
function _M.load(conf, key, consumer, id)
    local raw, err
    if conf.store == "memcached" then
        raw, err = sluice.memcached.get(key)
        if err then return nil, "memcached: " .. tostring(err) end
    else
        local d = sluice.shared.get(conf.shared_dict)
        if not d then return nil, "no shared dict " .. tostring(conf.shared_dict) end
        raw = d:get(key)
    end
    if raw == nil then return {} end
    local rec = cjson.decode(raw)
    if type(rec) ~= "table" or rec.v ~= 1 or rec.c ~= (consumer or "") or rec.s ~= id or type(rec.m) ~= "table" then
        return {} -- not this consumer's session (or damaged): nothing to remember
    end
    return rec.m
end

--- Writes a session's messages with the store's TTL: true | nil, err.
function _M.save(conf, key, consumer, id, messages)
    local raw = cjson.encode({ v = 1, c = consumer or "", s = id, m = messages })
    if conf.store == "memcached" then
        local ok, err = sluice.memcached.set(key, raw, conf.ttl)
        if not ok then return nil, "memcached: " .. tostring(err) end
        return true
    end
    local d = sluice.shared.get(conf.shared_dict)
    if not d then return nil, "no shared dict " .. tostring(conf.shared_dict) end
    local ok, err = d:set(key, raw, conf.ttl)
    if not ok then return nil, err end
    return true
end

--- Deletes a session: true (deleted or absent) | nil, err.
function _M.delete(conf, key)
    if conf.store == "memcached" then
        local ok, err = sluice.memcached.delete(key)
        if not ok and err ~= "not found" then return nil, "memcached: " .. tostring(err) end
        return true
    end
    local d = sluice.shared.get(conf.shared_dict)
    if not d then return nil, "no shared dict " .. tostring(conf.shared_dict) end
    d:delete(key)
    return true
end

local function cost(m)
    return tokens.count_text(_M.text_of(m.content) or "") + 4
end

--- The newest whole turns of messages (a turn starts at a user message) that fit budget tokens and max_turns;
--- the oldest go first. Returns a new list.
function _M.trim(messages, budget, max_turns)
    local turns, cur = {}, nil
    for _, m in ipairs(messages) do
        if m.role == "user" or not cur then
            cur = { n = 0, msgs = {} }
            turns[#turns + 1] = cur
        end
        cur.msgs[#cur.msgs + 1] = m
        cur.n = cur.n + cost(m)
    end
    local first, used = #turns + 1, 0
    for i = #turns, 1, -1 do
        if used + turns[i].n > budget or (max_turns and #turns - i + 1 > max_turns) then break end
        used = used + turns[i].n
        first = i
    end
    local out = {}
    for i = first, #turns do
        for _, m in ipairs(turns[i].msgs) do out[#out + 1] = m end
    end
    return out
end

--- DELETE /admin/sessions/CONSUMER/SESSION (CONSUMER "-": sessions without a consumer): removes the session
--- from the store of every ai-context conf of the live config. Returns status, body table.
function _M.admin(method, consumer, id)
    if method ~= "DELETE" then return 405, { error = { message = "method not allowed (DELETE)" } } end
    if consumer == "" or id == "" or #id > _M.MAX_ID or not id:find(_M.ID_PATTERN) then
        return 400, { error = { message = "use DELETE /admin/sessions/CONSUMER/SESSION (CONSUMER - for none)" } }
    end
    if consumer == "-" then consumer = nil end
    local done, seen, errs = 0, {}, {}
    for conf in sluice.each_conf("ai-context") do
        local s = conf.session
        if s then
            local where = s.store == "memcached" and "mc" or ("shared:" .. s.shared_dict)
            local key = _M.key(s, consumer, id)
            if not seen[where .. key] then
                seen[where .. key] = true
                local ok, err = _M.delete(s, key)
                if ok then done = done + 1 else errs[#errs + 1] = err end
            end
        end
    end
    if #errs > 0 then
        return 503, { error = { message = "cannot delete the session: " .. concat(errs, "; ") } }
    end
    return 200, { deleted = true, stores = done }
end

return _M
