-- sluice.ai.common: the AI layer's shared helpers under one name, for the runtime (sluice.ai.proxy, .stream,
-- .usage), plugins and drivers. They live by topic in sluice.ai.common.*, which new code requires directly:
--   json      JSON encode/decode (empty arrays kept as []), cjson.null helpers (nn, is_null), table copies
--   http      endpoints, Host, header lookup, extra headers, URL encoding, Retry-After
--   errors    the OpenAI and Anthropic error vocabularies, error bodies, error tables
--   chunks    the canonical answer: finish reasons, usage tables, chat.completion.chunk, SSE lines, ids
--   content   the canonical request: message content parts, tool-call arguments, stop, response_format
--   params    which parameters a provider takes (drop_params)
--   stream_base  the stream translators' skeleton
local _M = {}

for _, name in ipairs({ "json", "http", "errors", "chunks", "content" }) do
    for k, v in pairs(require("sluice.ai.common." .. name)) do
        _M[k] = v
    end
end

return _M
