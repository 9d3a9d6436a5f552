/* Private to core/config: the YAML loader's state, shared by yaml.c (events -> Lua tables) and yaml_scalar.c
 * (env expansion, scalar resolution). Only those two files include this. */
#ifndef SL_CONFIG_YAML_INTERNAL_H
#define SL_CONFIG_YAML_INTERNAL_H

#include <stddef.h>

#include <lua.h>
#include <yaml.h>

typedef struct {
    char *p;
    size_t len, cap;
} dynbuf;

typedef struct {
    lua_State *L;
    const char *name, *src;
    size_t src_len;
    yaml_parser_t parser;
    yaml_event_t ev;
    int parser_ready, have_ev;
    dynbuf path, tmp;
    size_t nodes;
    size_t alias_values, alias_bytes; /* what alias copies produced so far (bounded separately) */
    int doc_ref, lines_ref;
} loader;

/** Raises a Lua error "NAME:LINE:COL: msg" at mark m (yaml.c); does not return. */
void sl__yaml_fail(loader *ld, const yaml_mark_t *m, const char *msg);
/** Makes room for extra more bytes (and a NUL) in b (yaml.c); raises a Lua error on out of memory. */
void sl__yaml_buf_reserve(loader *ld, dynbuf *b, size_t extra);
/** Appends n bytes to b, keeping it NUL-terminated (yaml.c); raises a Lua error on out of memory. */
void sl__yaml_buf_add(loader *ld, dynbuf *b, const char *s, size_t n);
/** Writes s with ${VAR}, ${VAR:-default} and $${ expanded into ld->tmp, NUL-terminated (yaml_scalar.c); a bad
 *  or unset reference raises a Lua error at mark m. */
void sl__yaml_expand_env(loader *ld, const char *s, size_t n, const yaml_mark_t *m);
/** Pushes the value of a plain scalar (NUL-terminated s of length n), or nothing and returns 0 for null
 *  (yaml_scalar.c). */
int sl__yaml_push_plain(lua_State *L, const char *s, size_t n);

#endif
