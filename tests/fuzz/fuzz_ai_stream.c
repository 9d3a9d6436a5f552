/* Harness: the streaming half of an AI call (lua/sluice/ai/stream.lua run()) over each provider driver's
 * stream parser (lua/sluice/ai/drivers/<kind>.lua new_stream) and both client APIs (OpenAI chunks, Anthropic
 * events), in an in-process LuaJIT VM, with the upstream reads of sluice.proxy replaced by the fuzzed bytes.
 * The checks live in ai_stream_check.lua. Input: driver byte, options byte, cut plan (fuzz.h), then the
 * provider's stream bytes. */
#include <lua.h>

#include "fuzz.h"

static lua_State *L;
static int check;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = fz_lua_new();
    check = fz_lua_file(L, "tests/fuzz/ai_stream_check.lua");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_lua_call_string(L, check, data, size);
    return 0;
}
