/* Request-target normalisation (core/http/path.c): RFC 3986 5.2.4 / 5.4 dot-segment examples adapted to
 * origin-form paths, nginx's defaults (merge_slashes, 400 above the root), escapes, authorities. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "http/path.h"
#include "test.h"

typedef struct {
    const char *in;
    const char *out; /* expected path, or NULL when rc is an error */
    int rc;
    unsigned flags;
} path_case_t;

static const path_case_t paths[] = {
    /* RFC 3986 5.4.1 (normal), each reference merged with the base path "/b/c/d;p" */
    {"/b/c/g", "/b/c/g", 0, 0},
    {"/b/c/./g", "/b/c/g", 0, 0},
    {"/b/c/g/", "/b/c/g/", 0, 0},
    {"/b/c/.", "/b/c/", 0, 0},
    {"/b/c/./", "/b/c/", 0, 0},
    {"/b/c/..", "/b/", 0, 0},
    {"/b/c/../", "/b/", 0, 0},
    {"/b/c/../g", "/b/g", 0, 0},
    {"/b/c/../..", "/", 0, 0},
    {"/b/c/../../", "/", 0, 0},
    {"/b/c/../../g", "/g", 0, 0},
    /* RFC 3986 5.4.2 (abnormal); above the root is refused, as nginx does (RFC: "/g") */
    {"/b/c/../../../g", NULL, -ERANGE, 0},
    {"/b/c/../../../../g", NULL, -ERANGE, 0},
    {"/./g", "/g", 0, 0},
    {"/../g", NULL, -ERANGE, 0},
    {"/b/c/g.", "/b/c/g.", 0, 0},
    {"/b/c/.g", "/b/c/.g", 0, 0},
    {"/b/c/g..", "/b/c/g..", 0, 0},
    {"/b/c/..g", "/b/c/..g", 0, 0},
    {"/b/c/./../g", "/b/g", 0, 0},
    {"/b/c/./g/.", "/b/c/g/", 0, 0},
    {"/b/c/g/./h", "/b/c/g/h", 0, 0},
    {"/b/c/g/../h", "/b/c/h", 0, 0},
    {"/b/c/g;x=1/./y", "/b/c/g;x=1/y", 0, 0},
    {"/b/c/g;x=1/../y", "/b/c/y", 0, 0},
    /* RFC 3986 5.2.4's own example */
    {"/a/b/c/./../../g", "/a/g", 0, 0},
    /* roots and edges */
    {"/", "/", 0, 0},
    {"/.", "/", 0, 0},
    {"/./", "/", 0, 0},
    {"/..", NULL, -ERANGE, 0},
    {"/...", "/...", 0, 0},
    {"/a/..", "/", 0, 0},
    {"/a/../..", NULL, -ERANGE, 0},
    {"/a/./b/../../c", "/c", 0, 0},
    {"", NULL, -EINVAL, 0},
    {"a/b", NULL, -EINVAL, 0},
    {"*", NULL, -EINVAL, 0},
    {"http://h/x", NULL, -EINVAL, 0},
    /* merged slashes (nginx merge_slashes on): before dot-segments, so "//.." climbs one real segment */
    {"//", "/", 0, 0},
    {"//a//b//", "/a/b/", 0, 0},
    {"/a//../b", "/b", 0, 0},
    {"/a/.//./b", "/a/b", 0, 0},
    {"//..", NULL, -ERANGE, 0},
    /* the route-bypass shapes */
    {"/pub/../private/x", "/private/x", 0, 0},
    {"/pub/%2e%2e/private/x", "/private/x", 0, 0},
    {"/pub/%2E%2E/private/x", "/private/x", 0, 0},
    {"/pub/.%2e/private/x", "/private/x", 0, 0},
    {"/pub/./../private/x", "/private/x", 0, 0},
    {"/pub/%2e/../private/x", "/private/x", 0, 0},
    {"/%70ub/x", "/pub/x", 0, 0},
    /* unreserved escapes decoded; others kept with upper-case hex; no double decoding */
    {"/%7euser", "/~user", 0, 0},
    {"/a%2db%5Fc%2E", "/a-b_c.", 0, 0},
    {"/%41%5a%30%39", "/AZ09", 0, 0},
    {"/a%3fb", "/a%3Fb", 0, 0},
    {"/a%20b", "/a%20b", 0, 0},
    {"/%c3%a9t%C3%A9", "/%C3%A9t%C3%A9", 0, 0},
    {"/%25", "/%25", 0, 0},
    {"/%252e%252e/x", "/%252e%252e/x", 0, 0},
    {"/%25%32%65", "/%252e", 0, 0},
    {"/caf\xc3\xa9", "/caf\xc3\xa9", 0, 0},
    /* bad escapes, NUL */
    {"/%zz", NULL, -EINVAL, 0},
    {"/%4", NULL, -EINVAL, 0},
    {"/a%", NULL, -EINVAL, 0},
    {"/a%g0", NULL, -EINVAL, 0},
    {"/a%00", NULL, -EILSEQ, 0},
    {"/a%00b", NULL, -EILSEQ, SL_PATH_KEEP_ENCODED_SLASH},
    /* encoded slash: refused, or kept encoded (never a separator, never decoded) */
    {"/a%2Fb", NULL, -EPERM, 0},
    {"/a%2fb", NULL, -EPERM, 0},
    {"/a%2fb", "/a%2Fb", 0, SL_PATH_KEEP_ENCODED_SLASH},
    {"/a/..%2f..%2fb", "/a/..%2F..%2Fb", 0, SL_PATH_KEEP_ENCODED_SLASH},
    {"/a/%2e%2e%2Fb", "/a/..%2Fb", 0, SL_PATH_KEEP_ENCODED_SLASH},
};

static void test_paths(void)
{
    for (size_t k = 0; k < sizeof(paths) / sizeof(paths[0]); k++) {
        const path_case_t *t = &paths[k];
        size_t len = strlen(t->in), n = 12345;
        /* into another buffer exactly as long as the input (the result is never longer) ... */
        char *out = malloc(len + 1);
        int rc = sl_path_normalize(t->in, len, out, &n, t->flags);
        if (rc != t->rc)
            fprintf(stderr, "case %zu \"%s\"\n", k, t->in);
        CHECK_INT(rc, t->rc);
        if (rc == 0 && t->out) {
            out[n] = '\0';
            if (strcmp(out, t->out) != 0)
                fprintf(stderr, "case %zu \"%s\"\n", k, t->in);
            CHECK_STR(out, t->out);
        }
        /* ... and in place */
        memcpy(out, t->in, len + 1);
        n = 12345;
        CHECK_INT(sl_path_normalize(out, len, out, &n, t->flags), t->rc);
        if (t->rc == 0) {
            out[n] = '\0';
            CHECK_STR(out, t->out);
        }
        free(out);
    }
    /* a NUL byte in the raw path (a fuzzer can send one, llhttp would not) */
    size_t n;
    char nul[] = "/a\0b";
    CHECK_INT(sl_path_normalize(nul, 4, nul, &n, 0), -EILSEQ);
    /* normalising a normalised path changes nothing */
    for (size_t k = 0; k < sizeof(paths) / sizeof(paths[0]); k++) {
        if (paths[k].rc != 0)
            continue;
        char buf[256];
        size_t len = strlen(paths[k].out), m;
        memcpy(buf, paths[k].out, len);
        CHECK_INT(sl_path_normalize(buf, len, buf, &m, paths[k].flags), 0);
        CHECK(m == len && memcmp(buf, paths[k].out, len) == 0);
    }
}

static void test_authority(void)
{
    static const struct {
        const char *in;
        int host_len; /* or -EINVAL */
    } cases[] = {
        {"example.com", 11},
        {"Example.COM:8080", 11},
        {"h", 1},
        {"h:", 1}, /* port = *DIGIT */
        {"h:65535", 1},
        {"127.0.0.1:80", 9},
        {"[::1]", 5},
        {"[::1]:8080", 5},
        {"[2001:db8::7]:443", 13},
        {"a-b_c~d.e!$&'()*+,;=", 20},
        {"", -EINVAL},
        {":80", -EINVAL},
        {"a b", -EINVAL},
        {"a/b", -EINVAL},
        {"a\\b", -EINVAL},
        {"a\tb", -EINVAL},
        {"user@h", -EINVAL},
        {"h:80:81", -EINVAL},
        {"h:8o", -EINVAL},
        {"h:123456", -EINVAL},
        {"a%2eb", -EINVAL},
        {"a..b", -EINVAL},
        {".a", -EINVAL},
        {"..", -EINVAL},
        {"a.", 2}, /* a fully qualified name */
        {"a.b.c:1", 5},
        {"[::1", -EINVAL},
        {"[]", -EINVAL},
        {"[::1]x", -EINVAL},
        {"[::g]", -EINVAL},
        {"[v1.x]", -EINVAL},
        {"[fe80::1%25eth0]", -EINVAL},
        {"h\"x", -EINVAL},
        {"h<x>", -EINVAL},
        {"caf\xc3\xa9", -EINVAL},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int rc = sl_authority_check(cases[k].in, strlen(cases[k].in));
        if (rc != cases[k].host_len)
            fprintf(stderr, "authority case \"%s\"\n", cases[k].in);
        CHECK_INT(rc, cases[k].host_len);
    }
    CHECK_INT(sl_authority_check("a\0b", 3), -EINVAL);
}

static void test_absolute(void)
{
    size_t ao, al, ro;
    static const char t1[] = "http://Host:8080/p/q?x=1";
    CHECK_INT(sl_target_absolute(t1, sizeof(t1) - 1, &ao, &al, &ro), 0);
    CHECK(al == 9 && memcmp(t1 + ao, "Host:8080", 9) == 0);
    CHECK_STR(t1 + ro, "/p/q?x=1");
    static const char t2[] = "HTTPS://[::1]?x";
    CHECK_INT(sl_target_absolute(t2, sizeof(t2) - 1, &ao, &al, &ro), 0);
    CHECK(al == 5 && memcmp(t2 + ao, "[::1]", 5) == 0);
    CHECK_STR(t2 + ro, "?x");
    static const char t3[] = "http://h";
    CHECK_INT(sl_target_absolute(t3, sizeof(t3) - 1, &ao, &al, &ro), 0);
    CHECK_INT(ro, sizeof(t3) - 1);
    static const char *bad[] = {"ftp://h/x",   "http:/h/x",  "http://", "http:///x",  "http://u:p@h/x",
                                "http://h h/", "httpx://h/", "//h/x",   "http://h:x/"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
        CHECK_INT(sl_target_absolute(bad[k], strlen(bad[k]), &ao, &al, &ro), -EINVAL);
}

int main(void)
{
    test_paths();
    test_authority();
    test_absolute();
    return sl_test_done();
}
