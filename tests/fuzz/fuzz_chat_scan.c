/* Harness: the AI lean path's scan of raw OpenAI chat bodies (core/common/chat_scan.c), against the path it
 * stands for. The checks live in chat_scan_check.lua (in-process LuaJIT, through
 * sluice.ai.validate.chat_scan): whatever the scan takes must decode, pass validate.request and read the same
 * values, and the driver's lean request must carry the bytes build_request would send. Input: the body's
 * bytes. */
#include <lua.h>

#include "fuzz.h"

static lua_State *L;
static int check;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = fz_lua_new();
    check = fz_lua_file(L, "tests/fuzz/chat_scan_check.lua");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_lua_call_string(L, check, data, size);
    return 0;
}
