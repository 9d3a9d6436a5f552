/* Unit tests for core/config/yaml.c: types, env expansion, line map, anchors, errors and limits. */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lualib.h>

#include "config/yaml.h"
#include "test.h"

static lua_State *L;

/* Loads s; leaves doc at 1 and lines at 2, or the error string at 1. */
static int load(const char *s)
{
    lua_settop(L, 0);
    return sl_yaml_load_string(L, s, strlen(s), "t.yaml");
}

/* Runs a Lua expression over doc (D) and lines (LN), returning its string form ("nil" for nil). */
static const char *eval(const char *expr)
{
    static char out[512];
    char code[512];

    snprintf(code, sizeof(code), "local D, LN = ...; local v = %s; return type(v) .. ':' .. tostring(v)",
             expr);
    if (luaL_loadstring(L, code) != 0)
        return lua_tostring(L, -1);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    if (lua_pcall(L, 2, 1, 0) != 0) {
        snprintf(out, sizeof(out), "error: %s", lua_tostring(L, -1));
    } else {
        snprintf(out, sizeof(out), "%s", lua_tostring(L, -1));
    }
    lua_pop(L, 1);
    return out;
}

static const char *err(const char *s)
{
    static char out[512];

    if (load(s) == 0)
        return "(no error)";
    snprintf(out, sizeof(out), "%s", lua_tostring(L, -1));
    return out;
}

static void test_types(void)
{
    CHECK_INT(load("a: 1\nb: -2.5\nc: true\nd: no\ne: '3'\nf: \"true\"\ng: ~\nh:\ni: 0x1F\nj: 0o17\n"
                   "k: 1e3\nl: 10m\nm: [1, x, null, 2]\nn: {}\no: []\np: .inf\nq: 127.0.0.1:80\n"),
              0);
    CHECK_STR(eval("D.a"), "number:1");
    CHECK_STR(eval("D.b"), "number:-2.5");
    CHECK_STR(eval("D.c"), "boolean:true");
    CHECK_STR(eval("D.d"), "string:no");
    CHECK_STR(eval("D.e"), "string:3");
    CHECK_STR(eval("D.f"), "string:true");
    CHECK_STR(eval("D.g"), "nil:nil");
    CHECK_STR(eval("D.h"), "nil:nil");
    CHECK_STR(eval("D.i"), "number:31");
    CHECK_STR(eval("D.j"), "number:15");
    CHECK_STR(eval("D.k"), "number:1000");
    CHECK_STR(eval("D.l"), "string:10m");
    CHECK_STR(eval("#D.m .. D.m[3]"), "string:32");
    CHECK_STR(eval("next(D.n) == nil and type(D.n) == 'table'"), "boolean:true");
    CHECK_STR(eval("#D.o"), "number:0");
    CHECK_STR(eval("D.p == math.huge"), "boolean:true");
    CHECK_STR(eval("D.q"), "string:127.0.0.1:80");
    CHECK_INT(load(""), 0);
    CHECK_STR(eval("next(D)"), "nil:nil");
    CHECK_INT(load("# only a comment\n"), 0);
    CHECK_INT(load("---\n"), 0);
    CHECK_STR(eval("type(D)"), "string:table");
}

static void test_env(void)
{
    setenv("SL_T_PORT", "8080", 1);
    setenv("SL_T_KEY", "s3cret", 1);
    setenv("SL_T_EMPTY", "", 1);
    unsetenv("SL_T_UNSET");
    CHECK_INT(load("port: ${SL_T_PORT}\nq: \"${SL_T_PORT}\"\nkey: k-${SL_T_KEY}-x\n"
                   "d: ${SL_T_UNSET:-dflt}\ne: ${SL_T_EMPTY:-7}\nlit: $${SL_T_KEY}\ndollar: a$b\n"),
              0);
    CHECK_STR(eval("D.port"), "number:8080");
    CHECK_STR(eval("D.q"), "string:8080");
    CHECK_STR(eval("D.key"), "string:k-s3cret-x");
    CHECK_STR(eval("D.d"), "string:dflt");
    CHECK_STR(eval("D.e"), "number:7");
    CHECK_STR(eval("D.lit"), "string:${SL_T_KEY}");
    CHECK_STR(eval("D.dollar"), "string:a$b");
    CHECK_STR(err("a: 1\nb: ${SL_T_UNSET}\n"), "t.yaml:2:4: environment variable SL_T_UNSET is not set");
    CHECK(strstr(err("a: ${SL_T_KEY\n"), "unterminated") != NULL);
    CHECK(strstr(err("a: ${1BAD}\n"), "bad environment variable name") != NULL);
}

static void test_lines(void)
{
    CHECK_INT(load("node:\n  listen:\n    - 127.0.0.1:8080\n    - addr: x\n      tls: {cert: c}\n"
                   "routes:\n  - id: a\n  - id: b\n    plugins:\n      ai-proxy:\n        provider: p\n"),
              0);
    CHECK_STR(eval("LN.node"), "number:1");
    CHECK_STR(eval("LN['node.listen']"), "number:2");
    CHECK_STR(eval("LN['node.listen[1]']"), "number:3");
    CHECK_STR(eval("LN['node.listen[2].tls.cert']"), "number:5");
    CHECK_STR(eval("LN['routes[2].id']"), "number:8");
    CHECK_STR(eval("LN['routes[2].plugins.ai-proxy.provider']"), "number:11");
    CHECK_STR(eval("D.routes[2].plugins['ai-proxy'].provider"), "string:p");
}

static void test_anchors(void)
{
    CHECK_INT(load("base: &b {nodes: [n1], timeout: 5}\ncopy: *b\nx: &s hello\ny: *s\n"
                   "merged:\n  <<: *b\n  timeout: 9\n"),
              0);
    CHECK_STR(eval("D.copy.nodes[1]"), "string:n1");
    CHECK_STR(eval("D.copy ~= D.base"), "boolean:true");
    CHECK_STR(eval("D.y"), "string:hello");
    CHECK_STR(eval("D.merged.timeout"), "number:9");
    CHECK_STR(eval("D.merged.nodes[1]"), "string:n1");
    CHECK_STR(eval("LN['copy.nodes[1]']"), "number:2");
    CHECK(strstr(err("a: *nope\n"), "t.yaml:1:4:") != NULL);
    /* a merge list of something other than mappings is refused where its key is (fuzz: yaml-merge-location)
     */
    CHECK_STR(err("x: 1\nm:\n  <<: [1, 2]\n"),
              "t.yaml:3:3: merge key '<<' needs a mapping or a list of mappings");
    CHECK_STR(err("b: &b {k: 1}\nm:\n  <<: [*b, x]\n"),
              "t.yaml:3:3: merge key '<<' needs a mapping or a list of mappings");
    CHECK_INT(load("b: &b {k: 1}\nc: &c {j: 2}\nm:\n  <<: [*b, *c]\n"), 0);
    CHECK_STR(eval("D.m.k + D.m.j"), "number:3");
}

static void test_errors(void)
{
    CHECK_STR(err("a: 1\nb: 2\na: 3\n"), "t.yaml:3:1: duplicate key 'a'");
    CHECK(strstr(err("a: ~\na: 3\n"), "duplicate key") != NULL);
    CHECK(strstr(err("a:\n  b: 1\n c: 2\n"), "t.yaml:3:") != NULL);
    CHECK(strstr(err("a: [1, 2\n"), "t.yaml:") != NULL);
    CHECK(strstr(err("- 1\n- 2\n"), "must be a mapping") != NULL);
    CHECK(strstr(err("just a string\n"), "must be a mapping") != NULL);
    CHECK(strstr(err("a: 1\n---\nb: 2\n"), "only one YAML document") != NULL);
    CHECK(strstr(err("? [a]\n: 1\n"), "keys must be scalars") != NULL);
    CHECK_INT(sl_yaml_load_file(L, "/nonexistent/sluice.yaml"), -1);
    CHECK(strstr(lua_tostring(L, -1), "/nonexistent/sluice.yaml:0:0: cannot open") != NULL);
}

static void test_limits(void)
{
    char deep[1024];
    size_t i, n = 0;

    for (i = 0; i < 100; i++)
        deep[n++] = '[';
    for (i = 0; i < 100; i++)
        deep[n++] = ']';
    deep[n] = '\0';
    {
        char doc[1100];
        snprintf(doc, sizeof(doc), "a: %s\n", deep);
        CHECK(strstr(err(doc), "nesting is too deep") != NULL);
    }
    /* billion laughs: each level doubles ten times */
    CHECK(strstr(err("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                     "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                     "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                     "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
                     "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n"),
                 "too many values") != NULL);
    CHECK(strstr(err("a: \"\\xff\\x00\"\nb: \x01\n"), "t.yaml:") != NULL);
    /* the same bomb stops at the alias budget, long before the document's value limit */
    CHECK(strstr(err("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                     "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                     "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                     "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"),
                 "t.yaml:5:") != NULL);
    CHECK(strstr(err("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                     "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
                     "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
                     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
                     "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"),
                 "aliases expand to too many values (limit: 100000)") != NULL);
    /* one big anchored string repeated by aliases: bounded in bytes, not only in values */
    {
        size_t big = 1024 * 1024, n = 0, i;
        char *doc = malloc(big + 64 + 40 * 4);
        n += (size_t)sprintf(doc + n, "a: &a \"");
        memset(doc + n, 's', big);
        n += big;
        n += (size_t)sprintf(doc + n, "\"\nb: [");
        for (i = 0; i < 20; i++)
            n += (size_t)sprintf(doc + n, "*a, ");
        n += (size_t)sprintf(doc + n, "*a]\n");
        lua_settop(L, 0);
        CHECK_INT(sl_yaml_load_string(L, doc, n, "t.yaml"), -1);
        CHECK(strstr(lua_tostring(L, -1), "aliases expand to too much text") != NULL);
        /* 15 copies of 1 MiB are still fine */
        n = 7 + big; /* right after the anchored string: `a: &a "` is 7 bytes */
        n += (size_t)sprintf(doc + n, "\"\nb: [");
        for (i = 0; i < 14; i++)
            n += (size_t)sprintf(doc + n, "*a, ");
        n += (size_t)sprintf(doc + n, "*a]\n");
        lua_settop(L, 0);
        CHECK_INT(sl_yaml_load_string(L, doc, n, "t.yaml"), 0);
        free(doc);
    }
    /* a flat sequence over the value limit */
    {
        size_t count = SL_YAML_MAX_NODES + 10, n = 0, i;
        char *doc = malloc(count * 2 + 16);
        n += (size_t)sprintf(doc + n, "a: [");
        for (i = 0; i < count; i++) {
            doc[n++] = '1';
            doc[n++] = ',';
        }
        doc[n++] = ']';
        lua_settop(L, 0);
        CHECK_INT(sl_yaml_load_string(L, doc, n, "t.yaml"), -1);
        CHECK(strstr(lua_tostring(L, -1), "too many values (limit: 1000000)") != NULL);
        free(doc);
    }
}

/* The standalone entry point: its own Lua state, no gateway, errors as text. */
static void test_check(void)
{
    char e[256];
    const char *deep = "a: [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[x"
                       "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n";

    CHECK_INT(sl_yaml_check("a: {b: [1, 2]}\n", 15, "f.yaml", e, sizeof(e)), 0);
    CHECK_INT(sl_yaml_check("a: [\n", 5, "f.yaml", e, sizeof(e)), -1);
    CHECK(strncmp(e, "f.yaml:", 7) == 0);
    CHECK_INT(sl_yaml_check(deep, strlen(deep), NULL, e, sizeof(e)), -1);
    CHECK(strstr(e, "<string>:1:") != NULL && strstr(e, "nesting is too deep (limit: 64 levels)") != NULL);
    CHECK_INT(sl_yaml_check("a: *nope\n", 9, "f.yaml", NULL, 0), -1);
    CHECK_INT(sl_yaml_check("", 0, "f.yaml", e, 4), 0);
    CHECK_INT(sl_yaml_check("\xff\xfe\x00", 3, "f.yaml", e, 4), -1);
    CHECK(strlen(e) == 3); /* truncated to errlen */
}

static void test_module(void)
{
    lua_settop(L, 0);
    luaopen_sluice_yaml(L);
    lua_setglobal(L, "Y");
    CHECK_INT(luaL_dostring(
                  L,
                  "local d, l = Y.load_string('a: {b: 2}', 'm.yaml'); assert(d.a.b == 2 and l['a.b'] == 1)\n"
                  "local d2, e = Y.load_string('a: [', 'm.yaml'); assert(d2 == nil and e:match('^m.yaml:'))\n"
                  "local d3, e3 = Y.load_file('/nonexistent'); assert(d3 == nil and type(e3) == 'string')"),
              0);
    if (lua_gettop(L))
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
}

int main(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    test_types();
    test_env();
    test_lines();
    test_anchors();
    test_errors();
    test_limits();
    test_check();
    test_module();
    lua_close(L);
    return sl_test_done();
}
