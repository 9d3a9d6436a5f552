/* Harness: the SSE parser of the AI runtime (lua/sluice/ai/sse.lua, through its Lua interface only:
 * sse.parser(), p:feed(bytes) -> events, p:finish() -> events, sse.encode(ev)), in an in-process LuaJIT VM.
 * The checks live in sse_check.lua; see there. Input: cut plan (fuzz.h), then the stream's bytes. */
#include <lua.h>

#include "fuzz.h"

static lua_State *L;
static int check;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = fz_lua_new();
    check = fz_lua_file(L, "tests/fuzz/sse_check.lua");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_lua_call_string(L, check, data, size);
    return 0;
}
