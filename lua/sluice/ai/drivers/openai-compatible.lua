-- sluice.ai.drivers.openai-compatible: any server speaking the OpenAI API (vLLM, Ollama, LM Studio,
-- llama.cpp server, TGI, LiteLLM...).
--   endpoint (required): "http://host:port" -> /v1/chat/completions ; "http://host:port/base" -> /base/chat/completions
--   api_key optional (Authorization: Bearer). options.stream_usage = false stops sending
--   stream_options.include_usage for servers that reject it (usage is then estimated by the runtime).
-- Unlike the openai driver, `top_k` is kept (vLLM, Ollama and llama.cpp accept it).
local openai = require("sluice.ai.drivers.openai")

local ACCEPTS = openai.all_but({ "thinking" })

return openai.family({
    kind = "openai-compatible",
    endpoint_required = true,
    default_base = "/v1",
    accepts = function() return ACCEPTS end,
    auth = function(provider, h)
        if provider.api_key and provider.api_key ~= "" then h["Authorization"] = "Bearer " .. provider.api_key end
    end,
    stream_usage = function(provider)
        return not (provider.options and provider.options.stream_usage == false)
    end,
})
