/* YAML -> Lua tables for the config loader (libyaml event parser, ${ENV} expansion, line map). */
#ifndef SL_CONFIG_YAML_H
#define SL_CONFIG_YAML_H

#include <stddef.h>

#include <lua.h>

/* Hostile or runaway input is refused with an error instead of exhausting memory or stack. */
#define SL_YAML_MAX_SIZE (16u * 1024 * 1024) /* bytes of YAML text */
#define SL_YAML_MAX_DEPTH 64                 /* nested mappings/sequences */
#define SL_YAML_MAX_NODES 1000000            /* values, counting alias copies */
#define SL_YAML_MAX_ALIAS_VALUES 100000      /* values created by expanding aliases (billion laughs) */
/* scalar bytes repeated by aliases (one big anchored string, many *a) */
#define SL_YAML_MAX_ALIAS_BYTES SL_YAML_MAX_SIZE

/** Parses YAML from a file and pushes (doc, lines) onto L; on error returns -1 and pushes one string
 * "FILE:LINE:COL: problem". */
int sl_yaml_load_file(lua_State *L, const char *path);

/** Same from memory; name is used in error messages. Returns 0 with (doc, lines) pushed, or -1 with the error
 * string pushed. */
int sl_yaml_load_string(lua_State *L, const char *s, size_t len, const char *name);

/** Parses YAML from memory in a Lua state of its own, with no gateway running (for fuzzers and tools): 0 when
 *  the document loads, -1 with the error ("NAME:LINE:COL: problem", truncated to errlen) in err (may be
 *  NULL). Every limit above applies; nothing outlives the call. */
int sl_yaml_check(const char *s, size_t len, const char *name, char *err, size_t errlen);

/** Lua module "sluice.yaml": load_file(path) and load_string(s, name?) -> doc, lines | nil, err. */
int luaopen_sluice_yaml(lua_State *L);

#endif
