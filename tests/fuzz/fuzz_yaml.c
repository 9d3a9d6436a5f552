/* Harness: the YAML config loader (core/config/yaml.c) through its Lua entry (luaopen_sluice_yaml, as
 * `sluice.yaml`.load_string), then the config validator (lua/sluice/config.lua validate(), with the real
 * plugin registry) on whatever loads. The checks live in yaml_check.lua. Input: a YAML document. */
#include <lua.h>

#include "config/yaml.h"
#include "fuzz.h"

static lua_State *L;
static int check;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = fz_lua_new();
    /* the loader's limits, for the checks (yaml.h) */
    lua_getglobal(L, "fz");
    lua_pushinteger(L, SL_YAML_MAX_DEPTH);
    lua_setfield(L, -2, "yaml_max_depth");
    lua_pushinteger(L, SL_YAML_MAX_NODES);
    lua_setfield(L, -2, "yaml_max_nodes");
    lua_pop(L, 1);
    check = fz_lua_file(L, "tests/fuzz/yaml_check.lua");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_lua_call_string(L, check, data, size);
    return 0;
}
