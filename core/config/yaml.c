/*
 * YAML -> Lua for the config loader.
 *
 * libyaml's event parser drives a recursive descent that builds Lua tables directly, so line numbers
 * are at hand for every value (the "lines" map that config errors quote). All Lua work runs inside
 * lua_cpcall: a Lua error (ours, or out of memory) unwinds to sl_yaml_load_string, which then frees
 * the libyaml parser and C buffers in one place, so hostile input can neither leak nor crash.
 *
 * Scalars resolve per the YAML 1.2 core schema (only true/false are booleans, so `no` stays a string):
 * see yaml_scalar.c, which also expands ${ENV} references.
 * Nulls leave the key absent; a null sequence item is dropped so the array stays dense.
 */
#include "config/yaml.h"
#include "config/yaml_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <yaml.h>

#define SL__XSTR(x) #x
#define SL__STR(x) SL__XSTR(x)

/* Marks an anchored null, since a nil cannot be stored in the anchors table. */
static char null_anchor;

enum { ANCHORS = 2, LINES = 3 }; /* fixed stack slots inside the protected call */

void sl__yaml_fail(loader *ld, const yaml_mark_t *m, const char *msg)
{
    lua_pushfstring(ld->L, "%s:%d:%d: %s", ld->name, (int)m->line + 1, (int)m->column + 1, msg);
    lua_error(ld->L);
}

void sl__yaml_buf_reserve(loader *ld, dynbuf *b, size_t extra)
{
    size_t need = b->len + extra + 1, cap = b->cap ? b->cap : 256;
    char *p;

    if (need <= b->cap)
        return;
    while (cap < need)
        cap *= 2;
    p = realloc(b->p, cap);
    if (!p)
        luaL_error(ld->L, "%s: out of memory", ld->name);
    b->p = p;
    b->cap = cap;
}

void sl__yaml_buf_add(loader *ld, dynbuf *b, const char *s, size_t n)
{
    sl__yaml_buf_reserve(ld, b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void next_event(loader *ld)
{
    if (ld->have_ev) {
        yaml_event_delete(&ld->ev);
        ld->have_ev = 0;
    }
    if (!yaml_parser_parse(&ld->parser, &ld->ev)) {
        const char *ctx = ld->parser.context;
        lua_pushfstring(ld->L, "%s%s%s%s", ld->parser.problem ? ld->parser.problem : "invalid YAML",
                        ctx ? " (" : "", ctx ? ctx : "", ctx ? ")" : "");
        sl__yaml_fail(ld, &ld->parser.problem_mark, lua_tostring(ld->L, -1));
    }
    ld->have_ev = 1;
}

static void record_line(loader *ld, size_t line)
{
    if (ld->path.len == 0)
        return;
    lua_pushlstring(ld->L, ld->path.p, ld->path.len);
    lua_pushinteger(ld->L, (lua_Integer)line + 1);
    lua_rawset(ld->L, LINES);
}

static void path_key(loader *ld, const char *k, size_t n)
{
    if (ld->path.len)
        sl__yaml_buf_add(ld, &ld->path, ".", 1);
    sl__yaml_buf_add(ld, &ld->path, k, n);
}

static void path_index(loader *ld, int i)
{
    char s[24];
    sl__yaml_buf_add(ld, &ld->path, s, (size_t)snprintf(s, sizeof(s), "[%d]", i));
}

static void count_node(loader *ld, int depth, const yaml_mark_t *m)
{
    if (depth > SL_YAML_MAX_DEPTH)
        sl__yaml_fail(ld, m, "nesting is too deep (limit: " SL__STR(SL_YAML_MAX_DEPTH) " levels)");
    if (++ld->nodes > SL_YAML_MAX_NODES)
        sl__yaml_fail(ld, m, "document has too many values (limit: " SL__STR(SL_YAML_MAX_NODES) ")");
}

/* Aliases are copies, so a few lines can stand for billions of values (or gigabytes of one repeated string,
 * once the config is copied or serialized): what copies produce has its own budgets, far below the
 * document's. */
static void count_alias_copy(loader *ld, size_t bytes, const yaml_mark_t *m)
{
    if (++ld->alias_values > SL_YAML_MAX_ALIAS_VALUES)
        sl__yaml_fail(ld, m,
                      "aliases expand to too many values (limit: " SL__STR(SL_YAML_MAX_ALIAS_VALUES) ")");
    ld->alias_bytes += bytes;
    if (ld->alias_bytes > SL_YAML_MAX_ALIAS_BYTES)
        sl__yaml_fail(ld, m, "aliases expand to too much text (limit: 16 MiB)");
}

static void parse_value(loader *ld, int depth);

/* Pushes a deep copy of the value at idx, recording every nested path at the alias' line. */
static void copy_value(loader *ld, int idx, int depth, const yaml_mark_t *m)
{
    lua_State *L = ld->L;
    int t;

    count_node(ld, depth, m);
    count_alias_copy(ld, lua_type(L, idx) == LUA_TSTRING ? lua_objlen(L, idx) : 0, m);
    record_line(ld, m->line);
    if (lua_type(L, idx) != LUA_TTABLE) {
        lua_pushvalue(L, idx);
        return;
    }
    luaL_checkstack(L, 8, "YAML too deep");
    lua_newtable(L);
    t = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        size_t saved = ld->path.len, klen;
        const char *k;

        if (lua_type(L, -2) == LUA_TNUMBER) {
            path_index(ld, (int)lua_tointeger(L, -2));
        } else {
            k = lua_tolstring(L, -2, &klen); /* keys are strings, so no lua_next confusion */
            path_key(ld, k, klen);
        }
        copy_value(ld, lua_gettop(L), depth + 1, m);
        lua_pushvalue(L, -3);
        lua_insert(L, -2);
        lua_rawset(L, t);
        lua_pop(L, 1);
        ld->path.len = saved;
    }
}

/* Fills keys of the mapping at t from merge sources (`<<`) that the mapping does not set itself. */
static void apply_merges(loader *ld, int t, int aux)
{
    lua_State *L = ld->L;
    int i, j;

    for (i = 1; lua_rawgeti(L, aux, i), !lua_isnil(L, -1); i++) {
        int src = lua_gettop(L), list = lua_objlen(L, src) > 0;

        for (j = 1; list ? (lua_rawgeti(L, src, j), !lua_isnil(L, -1)) : j == 1; j++) {
            int m = list ? lua_gettop(L) : src;
            lua_pushnil(L);
            while (lua_next(L, m)) {
                lua_pushvalue(L, -2);
                lua_rawget(L, t);
                lua_pushvalue(L, -3);
                lua_rawget(L, aux);
                if (lua_isnil(L, -1) && lua_isnil(L, -2) && lua_type(L, -4) == LUA_TSTRING) {
                    lua_pop(L, 2);
                    lua_pushvalue(L, -2);
                    lua_insert(L, -2);
                    lua_rawset(L, t);
                } else {
                    lua_pop(L, 3);
                }
            }
            lua_settop(L, src);
        }
        lua_settop(L, src);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

static void parse_mapping(loader *ld, int depth)
{
    lua_State *L = ld->L;
    int t;

    luaL_checkstack(L, 10, "YAML too deep");
    lua_newtable(L);
    t = lua_gettop(L);
    lua_newtable(L); /* aux: [i] = merge sources, [key] = true for keys whose value was null */
    for (;;) {
        size_t saved = ld->path.len;
        yaml_mark_t km;
        int merge;

        next_event(ld);
        if (ld->ev.type == YAML_MAPPING_END_EVENT)
            break;
        km = ld->ev.start_mark;
        if (ld->ev.type != YAML_SCALAR_EVENT)
            sl__yaml_fail(ld, &km, "mapping keys must be scalars");
        merge = ld->ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
                strcmp((char *)ld->ev.data.scalar.value, "<<") == 0;
        lua_pushlstring(L, (char *)ld->ev.data.scalar.value, ld->ev.data.scalar.length);
        if (!merge) {
            path_key(ld, (char *)ld->ev.data.scalar.value, ld->ev.data.scalar.length);
            lua_pushvalue(L, -1);
            lua_rawget(L, t);
            lua_pushvalue(L, -2);
            lua_rawget(L, t + 1);
            if (!lua_isnil(L, -1) || !lua_isnil(L, -2))
                sl__yaml_fail(ld, &km, lua_pushfstring(L, "duplicate key " LUA_QS, lua_tostring(L, -3)));
            lua_pop(L, 2);
        }
        next_event(ld);
        if (merge) {
            if (ld->ev.type == YAML_SCALAR_EVENT)
                sl__yaml_fail(ld, &ld->ev.start_mark, "merge key '<<' needs a mapping or a list of mappings");
            parse_value(ld, depth + 1);
            if (!lua_istable(L, -1))
                sl__yaml_fail(ld, &km, "merge key '<<' needs a mapping or a list of mappings");
            /* a list's members are checked here, where the key's line is known (apply_merges has none) */
            for (int k = 1, n = (int)lua_objlen(L, -1); k <= n; k++) {
                lua_rawgeti(L, -1, k);
                if (!lua_istable(L, -1))
                    sl__yaml_fail(ld, &km, "merge key '<<' needs a mapping or a list of mappings");
                lua_pop(L, 1);
            }
            lua_rawseti(L, t + 1, (int)lua_objlen(L, t + 1) + 1);
            lua_pop(L, 1);
            continue;
        }
        record_line(ld, km.line);
        parse_value(ld, depth + 1);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushboolean(L, 1);
            lua_rawset(L, t + 1);
        } else {
            lua_rawset(L, t);
        }
        ld->path.len = saved;
    }
    apply_merges(ld, t, t + 1);
    lua_settop(L, t);
}

static void parse_sequence(loader *ld, int depth)
{
    lua_State *L = ld->L;
    int t, n = 0;

    luaL_checkstack(L, 6, "YAML too deep");
    lua_newtable(L);
    t = lua_gettop(L);
    for (;;) {
        size_t saved = ld->path.len;

        next_event(ld);
        if (ld->ev.type == YAML_SEQUENCE_END_EVENT)
            break;
        path_index(ld, n + 1);
        record_line(ld, ld->ev.start_mark.line);
        parse_value(ld, depth + 1);
        if (lua_isnil(L, -1))
            lua_pop(L, 1);
        else
            lua_rawseti(L, t, ++n);
        ld->path.len = saved;
    }
}

static void parse_scalar(loader *ld)
{
    yaml_event_t *ev = &ld->ev;
    const char *tag = (const char *)ev->data.scalar.tag;

    sl__yaml_expand_env(ld, (char *)ev->data.scalar.value, ev->data.scalar.length, &ev->start_mark);
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE || (tag && strcmp(tag, YAML_STR_TAG) == 0))
        lua_pushlstring(ld->L, ld->tmp.p, ld->tmp.len);
    else if (!sl__yaml_push_plain(ld->L, ld->tmp.p, ld->tmp.len))
        lua_pushnil(ld->L);
}

/* Pushes the value whose first event is ld->ev (nil for null), registering its anchor if any. */
static void parse_value(loader *ld, int depth)
{
    lua_State *L = ld->L;
    yaml_mark_t m = ld->ev.start_mark;
    const char *anchor = NULL;

    count_node(ld, depth, &m);
    switch (ld->ev.type) {
    case YAML_ALIAS_EVENT:
        lua_pushstring(L, (char *)ld->ev.data.alias.anchor);
        lua_rawget(L, ANCHORS);
        if (lua_isnil(L, -1))
            sl__yaml_fail(ld, &m,
                          lua_pushfstring(L, "unknown anchor " LUA_QS, (char *)ld->ev.data.alias.anchor));
        if (lua_touserdata(L, -1) == &null_anchor) {
            lua_pop(L, 1);
            lua_pushnil(L);
            return;
        }
        copy_value(ld, lua_gettop(L), depth, &m);
        lua_remove(L, -2);
        return;
    case YAML_SCALAR_EVENT:
        anchor = (char *)ld->ev.data.scalar.anchor;
        break;
    case YAML_MAPPING_START_EVENT:
        anchor = (char *)ld->ev.data.mapping_start.anchor;
        break;
    case YAML_SEQUENCE_START_EVENT:
        anchor = (char *)ld->ev.data.sequence_start.anchor;
        break;
    default:
        sl__yaml_fail(ld, &m, "unexpected YAML event");
    }
    if (anchor)
        lua_pushstring(L, anchor); /* copied now: the event is freed by the next parse */
    if (ld->ev.type == YAML_SCALAR_EVENT)
        parse_scalar(ld);
    else if (ld->ev.type == YAML_MAPPING_START_EVENT)
        parse_mapping(ld, depth);
    else
        parse_sequence(ld, depth);
    if (anchor) {
        lua_pushvalue(L, -2);
        if (lua_isnil(L, -2))
            lua_pushlightuserdata(L, &null_anchor);
        else
            lua_pushvalue(L, -2);
        lua_rawset(L, ANCHORS);
        lua_remove(L, -2);
    }
}

static int do_load(lua_State *L)
{
    loader *ld = lua_touserdata(L, 1);

    lua_settop(L, 1);
    lua_newtable(L); /* ANCHORS */
    lua_newtable(L); /* LINES */
    if (!yaml_parser_initialize(&ld->parser))
        return luaL_error(L, "%s: out of memory", ld->name);
    ld->parser_ready = 1;
    yaml_parser_set_input_string(&ld->parser, (const unsigned char *)ld->src, ld->src_len);
    next_event(ld); /* STREAM_START */
    next_event(ld);
    if (ld->ev.type == YAML_STREAM_END_EVENT) {
        lua_newtable(L);
    } else {
        next_event(ld); /* past DOCUMENT_START */
        if (ld->ev.type == YAML_MAPPING_START_EVENT) {
            parse_value(ld, 0);
        } else if (ld->ev.type == YAML_SCALAR_EVENT && ld->ev.data.scalar.length == 0 &&
                   ld->ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
            lua_newtable(L);
        } else {
            sl__yaml_fail(ld, &ld->ev.start_mark, "the document must be a mapping (key: value pairs)");
        }
        next_event(ld); /* DOCUMENT_END */
        next_event(ld);
        if (ld->ev.type != YAML_STREAM_END_EVENT)
            sl__yaml_fail(ld, &ld->ev.start_mark,
                          "only one YAML document is allowed (remove the extra '---')");
    }
    ld->doc_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, LINES);
    ld->lines_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

int sl_yaml_load_string(lua_State *L, const char *s, size_t len, const char *name)
{
    loader ld;
    int rc = -1;

    memset(&ld, 0, sizeof(ld));
    ld.L = L;
    ld.name = name ? name : "<string>";
    ld.src = s;
    ld.src_len = len;
    ld.doc_ref = ld.lines_ref = LUA_NOREF;
    if (len > SL_YAML_MAX_SIZE) {
        lua_pushfstring(L, "%s:1:1: document is too large (%d bytes, limit %d)", ld.name,
                        (int)(len > 0x7fffffff ? 0x7fffffff : len), (int)SL_YAML_MAX_SIZE);
        goto done;
    }
    if (lua_cpcall(L, do_load, &ld) != 0) {
        if (!lua_isstring(L, -1)) {
            lua_pop(L, 1);
            lua_pushfstring(L, "%s:1:1: failed to load YAML", ld.name);
        }
        goto done;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, ld.doc_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ld.lines_ref);
    rc = 0;
done:
    luaL_unref(L, LUA_REGISTRYINDEX, ld.doc_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, ld.lines_ref);
    if (ld.have_ev)
        yaml_event_delete(&ld.ev);
    if (ld.parser_ready)
        yaml_parser_delete(&ld.parser);
    free(ld.path.p);
    free(ld.tmp.p);
    return rc;
}

int sl_yaml_load_file(lua_State *L, const char *path)
{
    FILE *f = fopen(path, "rb");
    struct stat st;
    char *buf = NULL;
    size_t n = 0;
    int rc = -1;

    if (!f) {
        lua_pushfstring(L, "%s:0:0: cannot open file: %s", path, strerror(errno));
        goto done;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        lua_pushfstring(L, "%s:0:0: not a regular file", path);
        goto done;
    }
    if ((size_t)st.st_size > SL_YAML_MAX_SIZE) {
        lua_pushfstring(L, "%s:0:0: file is too large (limit %d bytes)", path, (int)SL_YAML_MAX_SIZE);
        goto done;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        lua_pushfstring(L, "%s:0:0: out of memory", path);
        goto done;
    }
    n = fread(buf, 1, (size_t)st.st_size, f);
    if (ferror(f)) {
        lua_pushfstring(L, "%s:0:0: read error: %s", path, strerror(errno));
        goto done;
    }
    rc = sl_yaml_load_string(L, buf, n, path);
done:
    free(buf);
    if (f)
        fclose(f);
    return rc;
}

int sl_yaml_check(const char *s, size_t len, const char *name, char *err, size_t errlen)
{
    lua_State *L = luaL_newstate();
    int rc;

    if (!L) {
        if (err && errlen)
            snprintf(err, errlen, "%s: out of memory", name ? name : "<string>");
        return -1;
    }
    rc = sl_yaml_load_string(L, s, len, name);
    if (rc != 0 && err && errlen)
        snprintf(err, errlen, "%s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "failed to load YAML");
    lua_close(L);
    return rc;
}

static int l_load_file(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);

    lua_settop(L, 1);
    if (sl_yaml_load_file(L, path) != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
    }
    return 2;
}

static int l_load_string(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    const char *name = luaL_optstring(L, 2, "<string>");

    lua_settop(L, 2);
    if (sl_yaml_load_string(L, s, len, name) != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
    }
    return 2;
}

int luaopen_sluice_yaml(lua_State *L)
{
    static const luaL_Reg fns[] = {{"load_file", l_load_file}, {"load_string", l_load_string}, {NULL, NULL}};

    lua_newtable(L);
    luaL_register(L, NULL, fns);
    return 1;
}
