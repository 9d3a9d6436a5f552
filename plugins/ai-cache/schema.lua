-- ai-cache's config schema (docs/caching.md has every field).

return {
    type = "object",
    additionalProperties = false,
    properties = {
        -- how long an answer is kept (L1 and L2)
        ttl = { type = "duration", exclusiveMinimum = 0, maximum = 30 * 86400, default = "1h" },
        -- who may share an entry: everyone on the route(s) of the namespace, one consumer, one consumer group
        scope = { enum = { "global", "consumer", "consumer_group" }, default = "consumer" },
        -- entries are shared by the routes of one namespace (default: the route's id); purges go by namespace
        namespace = { type = "string", minLength = 1, maxLength = 64, pattern = "^[A-Za-z0-9_.-]+$" },
        -- top-level request fields left out of the key (besides stream, stream_options, user, metadata, ...)
        ignore_fields = { type = "array", default = {}, items = { type = "string", minLength = 1 } },
        -- requests whose temperature is above this are not cached (a request without one runs at
        -- default_temperature, the providers' default)
        max_temperature = { type = "number", minimum = 0, maximum = 2, default = 0 },
        default_temperature = { type = "number", minimum = 0, maximum = 2, default = 1 },
        -- also keep answers that call tools
        cache_tool_calls = { type = "boolean", default = false },
        -- L1: this node's shared dict (declare it under node.shared_dicts; it is ai-cache's alone)
        shared_dict = { type = "string", minLength = 1, ref = "shared_dicts", default = "ai-cache" },
        l1 = { type = "boolean", default = true },
        -- L2: memcached (node.memcached), shared by every gateway node; off when node.memcached has no servers
        l2 = { type = "boolean", default = true },
        -- the largest answer stored (its OpenAI JSON form); larger ones are served and not kept
        max_entry_size = { type = "size", minimum = 1024, maximum = 64 * 1024 * 1024, default = "1m" },
        -- answers from this size on are zlib-compressed
        compress_min = { type = "size", minimum = 64, maximum = 64 * 1024 * 1024, default = "8k" },
        -- identical misses on one node wait for the first one's answer, at most coalesce_timeout
        coalesce = { type = "boolean", default = true },
        coalesce_timeout = { type = "duration", exclusiveMinimum = 0, maximum = 600, default = "30s" },
        header = { type = "string", minLength = 1, format = "header_name", default = "x-sluice-cache" },
        -- the entry's key in a response header (what DELETE /admin/cache/keys/KEY takes)
        expose_key = { type = "boolean", default = true },
        key_header = { type = "string", minLength = 1, format = "header_name", default = "x-sluice-cache-key" },
        semantic = {
            type = "object",
            additionalProperties = false,
            required = { "provider" },
            properties = {
                provider = { type = "string", minLength = 1, ref = "providers" }, -- any kind with embeddings
                model = { type = "string", minLength = 1 },
                threshold = { type = "number", minimum = 0, maximum = 1, default = 0.95 }, -- cosine similarity
                max_entries = { type = "integer", minimum = 1, maximum = 100000, default = 1000 }, -- per partition
                -- prompts kept on this node in all (the vector store's size: capacity x dimensions x 4 bytes)
                capacity = { type = "integer", minimum = 1, maximum = 1000000, default = 10000 },
                timeout = { type = "duration", exclusiveMinimum = 0, maximum = 60, default = "1s" },
            },
        },
    },
}
