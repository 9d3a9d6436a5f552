/* The in-process LuaJIT VM of the Lua harnesses, with Lua coverage for libFuzzer.
 *
 * libFuzzer only sees code compiled with -fsanitize=fuzzer; LuaJIT and the Lua runtime are not, so without
 * help every input would look alike to it. A line hook turns each step from one Lua line to the next (an
 * "edge", hashed AFL-style from source and line) into a hit on an extra 8-bit counter region registered with
 * libFuzzer, as atheris does for Python: inputs that reach new Lua code are kept and mutated further. The JIT
 * is off so that hooks see every line (traces would skip them). */
#include "fuzz.h"

#include <lauxlib.h>
#include <lua.h>
#include <luajit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lua/vm.h"
#include "server/settings.h"

#define COV_SIZE (1u << 14)

void __sanitizer_cov_8bit_counters_init(uint8_t *start, uint8_t *stop);
void __sanitizer_cov_pcs_init(const uintptr_t *pcs_beg, const uintptr_t *pcs_end);
extern int luaopen_cjson(lua_State *L);
extern int luaopen_cjson_safe(lua_State *L);
extern lua_CFunction sl__luaopen_cjson, sl__luaopen_cjson_safe;

/* LuaJIT's heap is not scanned by LeakSanitizer, so C memory that only Lua points to (lua-cjson's buffers,
 * userdata) would look leaked: no leak checks in the Lua harnesses (the C harnesses keep them). */
const char *__asan_default_options(void)
{
    return "detect_leaks=0";
}

static uint8_t lua_counters[COV_SIZE] __attribute__((aligned(64)));
/* One (pc, flags) pair per counter: libFuzzer wants a table the size of the counters; the "pcs" are made up.
 */
static uintptr_t lua_pcs[2 * COV_SIZE];
static uint32_t prev_loc;

__attribute__((constructor)) static void register_lua_coverage(void)
{
    for (uint32_t i = 0; i < COV_SIZE; i++) {
        lua_pcs[2 * i] = 0x10000000u + i;
        lua_pcs[2 * i + 1] = 0;
    }
    __sanitizer_cov_8bit_counters_init(lua_counters, lua_counters + COV_SIZE);
    __sanitizer_cov_pcs_init(lua_pcs, lua_pcs + 2 * COV_SIZE);
}

static void on_line(lua_State *L, lua_Debug *ar)
{
    int line = ar->currentline;
    if (!lua_getinfo(L, "S", ar))
        return;
    uint64_t h = ((uint64_t)(uintptr_t)ar->source * 0x9E3779B97F4A7C15ull) ^ (uint64_t)line * 0xC2B2AE3Du;
    uint32_t cur = (uint32_t)(h >> 40) & (COV_SIZE - 1);
    uint8_t *c = &lua_counters[(cur ^ prev_loc) & (COV_SIZE - 1)];
    if (*c < 255)
        (*c)++;
    prev_loc = cur >> 1;
}

void fz_lua_cov_reset(void)
{
    prev_loc = 0;
}

/* Shared Lua helpers of the harnesses (global `fz`): the cut plans of fuzz.h, in Lua. */
static const char lua_helpers[] =
    "local byte, sub = string.byte, string.sub\n"
    "fz = {}\n"
    "-- reads a cut plan at pos: returns the piece lengths and the next position\n"
    "function fz.read_cuts(s, pos)\n"
    "  local n = (byte(s, pos) or 0) % 17\n"
    "  local cuts = {}\n"
    "  for i = 1, n do cuts[i] = (byte(s, pos + i) or 0) + 1 end\n"
    "  return cuts, pos + 1 + n\n"
    "end\n"
    "-- data cut into pieces by the plan (whole when it is empty)\n"
    "function fz.pieces(data, cuts)\n"
    "  if #cuts == 0 then return { data } end\n"
    "  local out, pos, i = {}, 1, 0\n"
    "  while pos <= #data do\n"
    "    local len = cuts[i % #cuts + 1]\n"
    "    out[#out + 1] = sub(data, pos, pos + len - 1)\n"
    "    pos, i = pos + len, i + 1\n"
    "  end\n"
    "  return out\n"
    "end\n";

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

static int l_known(lua_State *L)
{
    lua_pushboolean(L, fz_known(luaL_checkstring(L, 1)));
    return 1;
}

lua_State *fz_lua_new(void)
{
    if (sl_settings.home[0] == '\0') {
        const char *home = getenv("SLUICE_HOME");
        snprintf(sl_settings.home, sizeof(sl_settings.home), "%s", home && *home ? home : SLUICE_HOME);
    }
    sl__luaopen_cjson = luaopen_cjson;
    sl__luaopen_cjson_safe = luaopen_cjson_safe;
    lua_State *L = sl_vm_new();
    if (L == NULL)
        fz_fail("cannot create a Lua VM");
    luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
    if (luaL_dostring(L, lua_helpers) != 0)
        fz_fail("fuzz Lua helpers: %s", lua_tostring(L, -1));
    lua_getglobal(L, "fz"); /* fz.known(id), as fz_known */
    lua_pushcfunction(L, l_known);
    lua_setfield(L, -2, "known");
    lua_pop(L, 1);
    lua_sethook(L, on_line, LUA_MASKLINE, 0);
    return L;
}

int fz_lua_function(lua_State *L, const char *code, const char *name)
{
    lua_pushcfunction(L, traceback);
    if (luaL_loadbuffer(L, code, strlen(code), name) != 0)
        fz_fail("%s: %s", name, lua_tostring(L, -1));
    if (lua_pcall(L, 0, 1, -2) != 0)
        fz_fail("%s: %s", name, lua_tostring(L, -1));
    if (lua_type(L, -1) != LUA_TFUNCTION)
        fz_fail("%s: does not return a function", name);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return ref;
}

int fz_lua_file(lua_State *L, const char *relpath)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", sl_settings.home, relpath);
    lua_pushcfunction(L, traceback);
    if (luaL_loadfile(L, path) != 0)
        fz_fail("%s", lua_tostring(L, -1));
    if (lua_pcall(L, 0, 1, -2) != 0)
        fz_fail("%s: %s", path, lua_tostring(L, -1));
    if (lua_type(L, -1) != LUA_TFUNCTION)
        fz_fail("%s: does not return a function", path);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pop(L, 1);
    return ref;
}

void fz_lua_call_string(lua_State *L, int ref, const uint8_t *data, size_t len)
{
    fz_lua_cov_reset();
    lua_settop(L, 0);
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_pushlstring(L, (const char *)data, len);
    if (lua_pcall(L, 1, 0, 1) != 0)
        fz_fail("Lua error: %s", lua_tostring(L, -1));
    lua_settop(L, 0);
    /* a step of collection per input keeps the heap bounded without a full collection each time */
    lua_gc(L, LUA_GCSTEP, 64);
}
