-- sluice.ai.drivers.deepseek: DeepSeek (api.deepseek.com), OpenAI-compatible.
--   POST https://api.deepseek.com/chat/completions, `Authorization: Bearer <key>`;
--   completions -> /beta/completions (FIM); no embeddings.
-- Differences handled: `reasoning_content` (deepseek-reasoner) is kept in responses and chunks, and removed
-- from input messages (DeepSeek rejects it there); json_schema response_format -> json_object (DeepSeek has
-- JSON mode only); usage prompt_cache_hit_tokens -> cached_tokens.
local common = require("sluice.ai.common")
local openai = require("sluice.ai.drivers.openai")

return openai.family({
    kind = "deepseek",
    default_endpoint = "https://api.deepseek.com",
    default_base = "",
    paths = { chat = "/chat/completions", completions = "/beta/completions", models = "/models" },
    auth = function(provider, h)
        if provider.api_key and provider.api_key ~= "" then h["Authorization"] = "Bearer " .. provider.api_key end
    end,
    transform = function(provider, op, body)
        local rf = common.nn(body.response_format)
        if type(rf) == "table" and rf.type == "json_schema" then
            body.response_format = { type = "json_object" }
        end
        return body
    end,
})
