/*
 * Scalars for the YAML loader (yaml.c): ${ENV} expansion in every scalar, then resolution of plain scalars
 * per the YAML 1.2 core schema (only true/false are booleans, so `no` stays a string; null, ints in hex and
 * octal, floats, .inf and .nan).
 */
#include "config/yaml_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

/* Writes s with ${VAR}, ${VAR:-default} and $${ expanded into ld->tmp (NUL-terminated). */
void sl__yaml_expand_env(loader *ld, const char *s, size_t n, const yaml_mark_t *m)
{
    size_t i = 0;

    ld->tmp.len = 0;
    sl__yaml_buf_reserve(ld, &ld->tmp, n);
    ld->tmp.p[0] = '\0';
    while (i < n) {
        const char *close, *colon, *val;
        char var[256];
        size_t name_len, j;

        if (s[i] == '$' && i + 2 < n && s[i + 1] == '$' && s[i + 2] == '{') {
            sl__yaml_buf_add(ld, &ld->tmp, "${", 2);
            i += 3;
            continue;
        }
        if (!(s[i] == '$' && i + 1 < n && s[i + 1] == '{')) {
            sl__yaml_buf_add(ld, &ld->tmp, s + i, 1);
            i++;
            continue;
        }
        close = memchr(s + i + 2, '}', n - i - 2);
        if (!close)
            sl__yaml_fail(ld, m, "unterminated ${ (write $${ for a literal ${)");
        colon = memchr(s + i + 2, ':', (size_t)(close - (s + i + 2)));
        name_len = (size_t)((colon ? colon : close) - (s + i + 2));
        if (name_len == 0 || name_len >= sizeof(var) || (colon && colon[1] != '-'))
            sl__yaml_fail(ld, m, "bad environment reference: use ${NAME} or ${NAME:-default}");
        memcpy(var, s + i + 2, name_len);
        var[name_len] = '\0';
        for (j = 0; j < name_len; j++) {
            char c = var[j];
            int ok =
                c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (j && c >= '0' && c <= '9');
            if (!ok)
                sl__yaml_fail(ld, m, lua_pushfstring(ld->L, "bad environment variable name " LUA_QS, var));
        }
        val = getenv(var);
        if (colon && (!val || !*val))
            sl__yaml_buf_add(ld, &ld->tmp, colon + 2, (size_t)(close - colon - 2));
        else if (val)
            sl__yaml_buf_add(ld, &ld->tmp, val, strlen(val));
        else
            sl__yaml_fail(ld, m, lua_pushfstring(ld->L, "environment variable %s is not set", var));
        i = (size_t)(close - s) + 1;
    }
}

static int all_digits(const char *s, const char *digits)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!strchr(digits, *s))
            return 0;
    return 1;
}

/* YAML 1.2 core float: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
static int is_float(const char *s)
{
    int mant = 0;

    if (*s == '-' || *s == '+')
        s++;
    for (; *s >= '0' && *s <= '9'; s++)
        mant = 1;
    if (*s == '.')
        for (s++; *s >= '0' && *s <= '9'; s++)
            mant = 1;
    if (!mant)
        return 0;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '-' || *s == '+')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return 0;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return *s == '\0';
}

static int is_one_of(const char *s, const char *a, const char *b, const char *c)
{
    return strcmp(s, a) == 0 || strcmp(s, b) == 0 || strcmp(s, c) == 0;
}

/* Pushes the value of a plain scalar (NUL-terminated s), or nothing and returns 0 for null. */
int sl__yaml_push_plain(lua_State *L, const char *s, size_t n)
{
    const char *u = (*s == '-' || *s == '+') ? s + 1 : s;

    if (n == 0 || is_one_of(s, "~", "null", "Null") || strcmp(s, "NULL") == 0)
        return 0;
    if (is_one_of(s, "true", "True", "TRUE"))
        lua_pushboolean(L, 1);
    else if (is_one_of(s, "false", "False", "FALSE"))
        lua_pushboolean(L, 0);
    else if (s[0] == '0' && s[1] == 'x' && all_digits(s + 2, "0123456789abcdefABCDEF"))
        lua_pushnumber(L, (lua_Number)strtoull(s + 2, NULL, 16));
    else if (s[0] == '0' && s[1] == 'o' && all_digits(s + 2, "01234567"))
        lua_pushnumber(L, (lua_Number)strtoull(s + 2, NULL, 8));
    else if (is_float(s))
        lua_pushnumber(L, strtod(s, NULL));
    else if (is_one_of(u, ".inf", ".Inf", ".INF"))
        lua_pushnumber(L, *s == '-' ? -HUGE_VAL : HUGE_VAL);
    else if (is_one_of(s, ".nan", ".NaN", ".NAN"))
        lua_pushnumber(L, NAN);
    else
        lua_pushlstring(L, s, n);
    return 1;
}
