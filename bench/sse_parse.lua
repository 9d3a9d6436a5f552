-- SSE parsing speed: the parser the drivers use (sluice.ai.sse) and the OpenAI pass-through filter
-- (sluice.ai.stream), on a typical chat stream and on a pathological one (a line that never ends).
--
--   luajit bench/sse_parse.lua                 # from the repository root, after scripts/build.sh
-- SSE_MODULE=/tmp/old_sse.lua luajit bench/sse_parse.lua   # another sse.lua
--                                                        # (e.g. `git show REV:lua/sluice/ai/sse.lua`)
--
-- Prints MB/s and events/s per case (best of 5 runs). Not a test: speed goes here, specs check behaviour.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local ok_socket, socket = pcall(require, "socket")
local now = ok_socket and socket.gettime or os.clock

local sse
if os.getenv("SSE_MODULE") then
    sse = dofile(os.getenv("SSE_MODULE"))
    package.loaded["sluice.ai.sse"] = sse
else
    sse = require("sluice.ai.sse")
end

local function chat_stream(n)
    local ev = {}
    for i = 1, n do
        ev[i] = 'data: {"id":"chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT","object":"chat.completion.chunk",' ..
            '"created":1741569952,"model":"gpt-4o-mini-2024-07-18","service_tier":"default",' ..
            '"system_fingerprint":"fp_06737a9306","choices":' ..
            '[{"index":0,"delta":{"content":" word' .. i ..
            '"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    end
    ev[#ev + 1] = "data: [DONE]\n\n"
    return table.concat(ev)
end

local function chunks_of(s, size)
    local out = {}
    for i = 1, #s, size do out[#out + 1] = s:sub(i, i + size - 1) end
    return out
end

-- best of 5 runs of fn(), which returns the number of events it saw
local function measure(name, bytes, fn)
    local best, events = math.huge, 0
    for _ = 1, 5 do
        collectgarbage()
        local t0 = now()
        events = fn()
        local dt = now() - t0
        if dt < best then best = dt end
    end
    print(string.format("%-46s %9.1f MB/s %12.0f events/s %8.2f ms", name, bytes / best / 1e6, events / best,
        best * 1e3))
end

-- 40 answers of 500 events (a fresh parser each), and one answer of 20000 events: the events of one stream look
-- alike, and LuaJIT (2.1.0-beta3 here) hashes a long string from 4 samples, so their data strings collide in its
-- string table: the longer the stream (between two garbage collections), the more each new string costs. That is
-- LuaJIT's interning, not the parser's algorithm (the line that never ends below shows the parser alone).
local stream = chat_stream(500)
print(string.format("typical stream: %d events, %.1f MB per answer", 501, #stream / 1e6))
for _, size in ipairs({ 65536, 4096, 64 }) do
    local chunks = chunks_of(stream, size)
    measure("parser, 40 answers, " .. size .. "-byte reads", #stream * 40, function()
        local n = 0
        for _ = 1, 40 do
            local p = sse.parser()
            for i = 1, #chunks do n = n + #p:feed(chunks[i]) end
        end
        return n
    end)
end
local long = chat_stream(20000)
local long_chunks = chunks_of(long, 4096)
measure("parser, one answer of 20000 events, 4096", #long, function()
    local p, n = sse.parser(), 0
    for i = 1, #long_chunks do n = n + #p:feed(long_chunks[i]) end
    return n
end)

-- the pass-through filter (OpenAI client, OpenAI-wire provider) needs the gateway's FFI library
local ok_stream, stream_mod = pcall(require, "sluice.ai.stream")
if ok_stream and stream_mod.pass_through then
    local ai = { include_usage = false, driver = require("sluice.ai.drivers.openai") }
    for _, size in ipairs({ 65536, 4096, 64 }) do
        local chunks = chunks_of(stream, size)
        measure("pass-through, 40 answers, " .. size .. "-byte reads", #stream * 40, function()
            for _ = 1, 40 do
                local p, out = stream_mod.pass_through(ai, 1048576), {}
                for i = 1, #chunks do
                    p:feed(chunks[i], out)
                    if #out > 1000 then out = {} end
                end
            end
            return 501 * 40
        end)
    end
else
    print("pass-through: skipped (" .. tostring(stream_mod) .. ")")
end

-- a line without an end, fed in 64 KiB reads: linear time means twice the bytes take twice as long
print("a line that never ends (bound raised to 64 MiB so it is parsed whole):")
for _, mb in ipairs({ 2, 4, 8 }) do
    local chunk = string.rep("A", 65536)
    local n = mb * 16
    measure(string.format("parser, %d MiB without a line end", mb), mb * 1048576, function()
        local p = sse.parser({ max_size = 64 * 1048576 })
        for _ = 1, n do p:feed(chunk) end
        return 0
    end)
end
