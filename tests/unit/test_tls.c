/* core/tls/tls.c: a server and a client session talking entirely in memory (bytes pumped between them), with
 * a CA and certificates made by the openssl CLI in a temporary directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "tls/tls.h"

static char dir[64] = "/tmp/sluice-tls-test-XXXXXX";
static char path_buf[16][256];
static int npath;

static const char *P(const char *name)
{
    char *p = path_buf[npath++ % 16];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

static int sh(const char *fmt, const char *a)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), fmt, a, a, a, a, a, a, a, a);
    return system(cmd);
}

/* ca, rogue (another CA), good (good.test, *.good.test), other (CN other.test only, no SAN) */
static int make_certs(void)
{
    if (mkdtemp(dir) == NULL)
        return -1;
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    char cmd[1024];
    for (int i = 0; i < 2; i++) {
        const char *n = i ? "rogue" : "ca";
        snprintf(
            cmd, sizeof(cmd),
            "cd %s && openssl req -x509 %s -keyout %s.key -out %s.crt -days 2 -subj '/CN=%s' 2>/dev/null",
            dir, ec, n, n, n);
        if (system(cmd) != 0)
            return -1;
    }
    const char *sans[2] = {"subjectAltName=DNS:good.test,DNS:*.good.test", ""};
    const char *names[2] = {"good", "other"};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof(cmd),
                 "cd %s && openssl req %s -keyout %s.key -out %s.csr -subj '/CN=%s.test' 2>/dev/null && "
                 "printf '%s\\nbasicConstraints=CA:FALSE\\n' > %s.ext && "
                 "openssl x509 -req -in %s.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out %s.crt -days 2 "
                 "-extfile %s.ext 2>/dev/null",
                 dir, ec, names[i], names[i], names[i], sans[i], names[i], names[i], names[i], names[i]);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

/* Moves pending output of a into b and of b into a; returns the bytes moved. */
static size_t pump(sl_tls_t *a, sl_tls_t *b)
{
    size_t moved = 0;
    for (int dirn = 0; dirn < 2; dirn++) {
        sl_tls_t *from = dirn ? b : a, *to = dirn ? a : b;
        const char *p;
        size_t n = sl_tls_pending_out(from, &p);
        if (n) {
            sl_tls_feed(to, p, n);
            sl_tls_consume_out(from, n);
            moved += n;
        }
    }
    return moved;
}

/* Runs both handshakes to the end; returns the client's result, the server's in *srv. */
static int handshake(sl_tls_t *c, sl_tls_t *s, int *srv)
{
    int rc_c = SL_TLS_WANT, rc_s = SL_TLS_WANT;
    for (int i = 0; i < 100; i++) {
        if (rc_c == SL_TLS_WANT)
            rc_c = sl_tls_handshake(c);
        if (rc_s == SL_TLS_WANT)
            rc_s = sl_tls_handshake(s);
        size_t moved = pump(c, s);
        if (rc_c != SL_TLS_WANT && rc_s != SL_TLS_WANT)
            break;
        if (moved == 0 && (rc_c != SL_TLS_WANT || rc_s != SL_TLS_WANT)) {
            /* one side failed or finished and the other waits for bytes that will not come */
            if (rc_c == SL_TLS_WANT)
                rc_c = sl_tls_handshake(c);
            if (rc_s == SL_TLS_WANT)
                rc_s = sl_tls_handshake(s);
            break;
        }
    }
    *srv = rc_s;
    return rc_c;
}

static sl_tls_server_ctx_t *server_ctx(void)
{
    sl_tls_cert_src_t certs[2] = {{P("good.crt"), P("good.key"), NULL, NULL},
                                  {P("other.crt"), P("other.key"), NULL, NULL}};
    char err[256];
    sl_tls_server_ctx_t *s = sl_tls_server_ctx_new(certs, 2, err, sizeof(err));
    if (s == NULL)
        fprintf(stderr, "server ctx: %s\n", err);
    return s;
}

static void test_exchange(sl_tls_server_ctx_t *sctx, sl_tls_client_ctx_t *cctx)
{
    sl_tls_t *c = sl_tls_new_client(cctx, "good.test"), *s = sl_tls_new_server(sctx);
    int srv, rc = handshake(c, s, &srv);
    CHECK_INT(rc, 0);
    CHECK_INT(srv, 0);
    CHECK(sl_tls_established(c) && sl_tls_established(s));
    CHECK_STR(sl_tls_sni(s), "good.test");
    CHECK(sl_tls_cipher(c) && strstr(sl_tls_cipher(c), "ECDHE") && strstr(sl_tls_cipher(c), "GCM"));

    /* 100 kB client -> server: several records, read in pieces until WANT */
    size_t big = 100 * 1000;
    char *data = malloc(big), *got = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        data[i] = (char)('a' + i % 26);
    CHECK_INT(sl_tls_write(c, data, big), (long long)big);
    pump(c, s);
    size_t have = 0;
    int n;
    while ((n = sl_tls_read(s, got + have, 7000)) > 0)
        have += (size_t)n;
    CHECK_INT(n, SL_TLS_WANT);
    CHECK_INT(have, big);
    CHECK(memcmp(got, data, big) == 0);

    /* server -> client */
    CHECK_INT(sl_tls_write(s, "pong", 4), 4);
    pump(c, s);
    char buf[16];
    CHECK_INT(sl_tls_read(c, buf, sizeof(buf)), 4);
    CHECK(memcmp(buf, "pong", 4) == 0);
    CHECK_INT(sl_tls_read(c, buf, sizeof(buf)), SL_TLS_WANT);

    /* close_notify reads as end of stream */
    sl_tls_close(c);
    pump(c, s);
    CHECK_INT(sl_tls_read(s, buf, sizeof(buf)), 0);
    free(data);
    free(got);
    sl_tls_free(c);
    sl_tls_free(s);
}

static void test_sni(sl_tls_server_ctx_t *sctx, sl_tls_client_ctx_t *cctx, const char *host, int want)
{
    sl_tls_t *c = sl_tls_new_client(cctx, host), *s = sl_tls_new_server(sctx);
    int srv, rc = handshake(c, s, &srv);
    CHECK_INT(rc, want);
    if (rc != want) {
        char err[300];
        fprintf(stderr, "  SNI %s: %s\n", host, sl_tls_error(c, err, sizeof(err)));
    }
    CHECK_STR(sl_tls_sni(s), host);
    sl_tls_free(c);
    sl_tls_free(s);
}

static void test_reject(sl_tls_server_ctx_t *sctx, sl_tls_client_ctx_t *cctx, const char *host,
                        const char *why)
{
    sl_tls_t *c = sl_tls_new_client(cctx, host), *s = sl_tls_new_server(sctx);
    int srv, rc = handshake(c, s, &srv);
    CHECK_INT(rc, SL_TLS_E_VERIFY);
    CHECK(srv < 0 && srv != SL_TLS_WANT); /* the server saw the client's alert */
    char err[400];
    sl_tls_error(c, err, sizeof(err));
    CHECK(strstr(err, "certificate verification failed") != NULL);
    CHECK(strstr(err, why) != NULL);
    if (!strstr(err, why))
        fprintf(stderr, "  error was: %s\n", err);
    CHECK_INT(sl_tls_write(c, "x", 1), SL_TLS_E_CLOSED);
    sl_tls_free(c);
    sl_tls_free(s);
}

int main(void)
{
    if (make_certs() != 0) {
        fprintf(stderr, "cannot make test certificates with openssl\n");
        return 1;
    }
    char err[400];
    sl_tls_server_ctx_t *sctx = server_ctx();
    sl_tls_client_opts_t o = {.ca_file = P("ca.crt")};
    sl_tls_client_ctx_t *cctx = sl_tls_client_ctx_new(&o, err, sizeof(err));
    CHECK(sctx != NULL && cctx != NULL);
    if (!sctx || !cctx)
        return 1;

    test_exchange(sctx, cctx);
    test_sni(sctx, cctx, "good.test", 0);
    test_sni(sctx, cctx, "api.good.test", 0); /* wildcard */
    test_sni(sctx, cctx, "other.test", 0);    /* second certificate, matched by its CN */

    /* hostname mismatch: unknown SNI gets the default certificate (good.test) */
    test_reject(sctx, cctx, "bad.test", "expected CN");
    test_reject(sctx, cctx, "a.b.good.test", "expected CN"); /* a wildcard covers one label only */

    /* unknown CA */
    sl_tls_client_opts_t ro = {.ca_file = P("rogue.crt")};
    sl_tls_client_ctx_t *rogue = sl_tls_client_ctx_new(&ro, err, sizeof(err));
    CHECK(rogue != NULL);
    test_reject(sctx, rogue, "good.test", "not correctly signed by the trusted CA");

    /* verification off accepts it */
    sl_tls_client_opts_t io = {.ca_file = P("rogue.crt"), .insecure_no_verify = 1};
    sl_tls_client_ctx_t *insecure = sl_tls_client_ctx_new(&io, err, sizeof(err));
    test_sni(sctx, insecure, "bad.test", 0);

    /* client certificate presented (the server does not ask for one; this checks it loads) */
    sl_tls_client_opts_t co = {.ca_file = P("ca.crt"), .cert_file = P("good.crt"), .key_file = P("good.key")};
    sl_tls_client_ctx_t *withcert = sl_tls_client_ctx_new(&co, err, sizeof(err));
    CHECK(withcert != NULL);
    sl_tls_client_ctx_free(withcert);

    /* the default system bundle loads; the per-thread cache returns the same context */
    sl_tls_client_ctx_t *sys1 = sl_tls_client_ctx_get(NULL, err, sizeof(err));
    sl_tls_client_ctx_t *sys2 = sl_tls_client_ctx_get(NULL, err, sizeof(err));
    CHECK(sys1 != NULL && sys1 == sys2);

    /* plaintext to a server session fails the handshake */
    sl_tls_t *s = sl_tls_new_server(sctx);
    sl_tls_feed(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    int rc = sl_tls_handshake(s);
    CHECK(rc < 0 && rc != SL_TLS_WANT);
    sl_tls_free(s);

    /* bad files */
    CHECK_INT(sl_tls_check_files(P("good.crt"), P("good.key"), err, sizeof(err)), 0);
    CHECK_INT(sl_tls_check_files(P("good.crt"), P("other.key"), err, sizeof(err)), SL_TLS_E_CONFIG);
    CHECK(strstr(err, "does not match") != NULL);
    CHECK_INT(sl_tls_check_files(P("missing.crt"), P("good.key"), err, sizeof(err)), SL_TLS_E_CONFIG);
    CHECK(strstr(err, "missing.crt") != NULL);
    sl_tls_client_opts_t bad = {.ca_file = P("missing.crt")};
    CHECK(sl_tls_client_ctx_new(&bad, err, sizeof(err)) == NULL);

    /* a session keeps its context alive after the owner frees it */
    s = sl_tls_new_server(sctx);
    sl_tls_server_ctx_free(sctx);
    sl_tls_free(s);

    sl_tls_client_ctx_free(cctx);
    sl_tls_client_ctx_free(rogue);
    sl_tls_client_ctx_free(insecure);
    sl_tls_thread_cleanup();
    sh("rm -rf %s", dir);
    return sl_test_done();
}
