-- ai-cache.semantic: the semantic step of ai-cache's upstream stage. After an exact miss, the last user message is
-- embedded (sluice.cache.semantic) and compared with the prompts stored in its partition on this node (the
-- node's vector store, sluice.vector, through sluice.cache.semantic); the nearest one at or above
-- conf.semantic.threshold is a hit, answered with that prompt's entry. A miss keeps the embedding, and once the
-- answer is stored its prompt joins the partition. Any failure (the embeddings provider down or slow past
-- semantic.timeout, a bad answer) is a miss, logged, never an error for the client.
local sluice = require("sluice")
local semantic = require("sluice.cache.semantic")

local _M = {}

-- Embeds the request's last user text; fills cs.vector and cs.partition (nil when there is nothing to compare).
function _M.prepare(ctx, cs, prefix)
    local sconf = cs.conf.semantic
    local text, partition = semantic.split(prefix, ctx.ai.request, ctx.ai.model, cs.rt.ignore)
    if not text then
        return nil
    end
    local vec, err = semantic.embed(ctx, sconf, text)
    if not vec then
        sluice.log.warn("ai-cache: semantic lookup skipped (id ", ctx.request_id, "): ", err)
        return nil
    end
    cs.vector, cs.partition = vec, partition
    return vec
end

--- True when the request was answered with a semantically near entry (try_hit(ctx, cs, how, key)).
function _M.lookup(ctx, cs, prefix, try_hit)
    local vec = _M.prepare(ctx, cs, prefix)
    if not vec then
        return false
    end
    local sconf = cs.conf.semantic
    local key, sim = semantic.nearest(cs.rt.index, cs.partition, vec, sconf.threshold)
    if not key then
        return false
    end
    if try_hit(ctx, cs, "semantic", key) then
        local rec = sluice.ai.get_usage(ctx)
        if rec then rec.cache_similarity = sim end
        return true
    end
    return false
end

--- Adds the stored answer's prompt to its partition (log phase, after the entry was stored).
function _M.add(cs)
    local ok, err = semantic.add(cs.rt.index, cs.partition, cs.vector, cs.key, cs.conf.ttl)
    if not ok then
        sluice.log.warn("ai-cache: prompt not added to the semantic index: ", err)
    end
end

return _M
