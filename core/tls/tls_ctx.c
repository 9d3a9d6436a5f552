/* TLS contexts with mbedTLS 2.28: server certificates (chosen by SNI), client trust anchors and certificates,
 * the per-thread cache of client contexts, and the per-thread random generator. Contexts are
 * reference-counted by their sessions (tls.c), so a listener can swap in new certificates while connections
 * that started with the old ones finish. */
#include "tls/tls.h"

#include <mbedtls/asn1.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tls/tls_internal.h"

#define DEFAULT_CA_FILE "/etc/ssl/certs/ca-certificates.crt"

/* TLS 1.2, forward secrecy (ECDHE) and AEAD only; ECDSA first (cheaper handshakes), then RSA. */
static const int ciphersuites[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                                   MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                                   MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                                   MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                                   MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                                   MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                                   0};

/* Key exchange groups, fastest first: mbedTLS would otherwise prefer secp521r1, several times slower. */
static const mbedtls_ecp_group_id curves[] = {MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1,
                                              MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE};

/* ---- per-thread random generator ---- */

static __thread struct {
    int ready;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} rng;

static __thread sl_tls_client_ctx_t *client_cache;

static int rng_cb(void *unused, unsigned char *out, size_t len)
{
    if (!rng.ready) {
        mbedtls_entropy_init(&rng.entropy);
        mbedtls_ctr_drbg_init(&rng.drbg);
        static const char pers[] = "sluice-tls";
        int rc = mbedtls_ctr_drbg_seed(&rng.drbg, mbedtls_entropy_func, &rng.entropy,
                                       (const unsigned char *)pers, sizeof(pers) - 1);
        if (rc != 0) {
            mbedtls_ctr_drbg_free(&rng.drbg);
            mbedtls_entropy_free(&rng.entropy);
            return rc;
        }
        rng.ready = 1;
    }
    return mbedtls_ctr_drbg_random(&rng.drbg, out, len);
}

void sl_tls_thread_cleanup(void)
{
    while (client_cache) {
        sl_tls_client_ctx_t *c = client_cache;
        client_cache = c->next;
        sl_tls_client_ctx_free(c);
    }
    if (rng.ready) {
        mbedtls_ctr_drbg_free(&rng.drbg);
        mbedtls_entropy_free(&rng.entropy);
        rng.ready = 0;
    }
}

static void errf(char *err, size_t errlen, const char *what, const char *path, int rc)
{
    char m[160];
    mbedtls_strerror(rc, m, sizeof(m));
    if (err && errlen)
        snprintf(err, errlen, "%s %s: %s", what, path ? path : "(inline PEM)", m);
}

static void conf_common(mbedtls_ssl_config *conf)
{
    mbedtls_ssl_conf_rng(conf, rng_cb, NULL);
    mbedtls_ssl_conf_min_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_max_version(conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_ciphersuites(conf, ciphersuites);
    mbedtls_ssl_conf_curves(conf, curves);
    mbedtls_ssl_conf_renegotiation(conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
}

/* ---- certificates ---- */

static int load_pair(mbedtls_x509_crt *crt, mbedtls_pk_context *pk, const char *cert_path,
                     const char *key_path, const char *cert_pem, const char *key_pem, char *err,
                     size_t errlen)
{
    int rc = cert_pem ? mbedtls_x509_crt_parse(crt, (const unsigned char *)cert_pem, strlen(cert_pem) + 1)
                      : mbedtls_x509_crt_parse_file(crt, cert_path);
    if (rc != 0) {
        errf(err, errlen, "certificate", cert_path, rc);
        return SL_TLS_E_CONFIG;
    }
    rc = key_pem ? mbedtls_pk_parse_key(pk, (const unsigned char *)key_pem, strlen(key_pem) + 1, NULL, 0)
                 : mbedtls_pk_parse_keyfile(pk, key_path, NULL);
    if (rc != 0) {
        errf(err, errlen, "private key", key_path, rc);
        return SL_TLS_E_CONFIG;
    }
    if (mbedtls_pk_check_pair(&crt->pk, pk) != 0) {
        if (err && errlen)
            snprintf(err, errlen, "private key %s does not match certificate %s",
                     key_path ? key_path : "(inline)", cert_path ? cert_path : "(inline)");
        return SL_TLS_E_CONFIG;
    }
    return 0;
}

int sl_tls_check_files(const char *cert_path, const char *key_path, char *err, size_t errlen)
{
    mbedtls_x509_crt crt;
    mbedtls_pk_context pk;
    mbedtls_x509_crt_init(&crt);
    mbedtls_pk_init(&pk);
    int rc = load_pair(&crt, &pk, cert_path, key_path, NULL, NULL, err, errlen);
    mbedtls_x509_crt_free(&crt);
    mbedtls_pk_free(&pk);
    return rc;
}

static int add_name(cert_entry_t *e, const char *p, size_t len)
{
    char **names = realloc(e->names, (size_t)(e->nnames + 1) * sizeof(*names));
    if (names == NULL)
        return SL_TLS_E_NOMEM;
    e->names = names;
    char *s = malloc(len + 1);
    if (s == NULL)
        return SL_TLS_E_NOMEM;
    for (size_t i = 0; i < len; i++)
        s[i] = (char)(p[i] >= 'A' && p[i] <= 'Z' ? p[i] + 32 : p[i]);
    s[len] = 0;
    e->names[e->nnames++] = s;
    return 0;
}

/* The names a certificate answers for: its subjectAltName DNS entries, or its CN when it has none. */
static int collect_names(cert_entry_t *e)
{
    for (const mbedtls_x509_sequence *s = &e->crt.subject_alt_names; s && s->buf.p; s = s->next) {
        int tag = s->buf.tag & (MBEDTLS_ASN1_TAG_CLASS_MASK | MBEDTLS_ASN1_TAG_VALUE_MASK);
        if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME) &&
            add_name(e, (const char *)s->buf.p, s->buf.len) != 0)
            return SL_TLS_E_NOMEM;
    }
    if (e->nnames > 0)
        return 0;
    for (const mbedtls_x509_name *n = &e->crt.subject; n; n = n->next)
        if (n->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0)
            return add_name(e, (const char *)n->val.p, n->val.len);
    return 0;
}

static int name_matches(const char *pattern, const char *host, size_t len)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        const char *dot = memchr(host, '.', len); /* the wildcard stands for exactly one label */
        if (dot == NULL || dot == host)
            return 0;
        size_t rest = len - (size_t)(dot - host);
        return strlen(pattern + 1) == rest && strncasecmp(pattern + 1, dot, rest) == 0;
    }
    return strlen(pattern) == len && strncasecmp(pattern, host, len) == 0;
}

static int on_sni(void *arg, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len)
{
    sl_tls_server_ctx_t *ctx = arg;
    sl_tls_t *t = (sl_tls_t *)ssl;
    free(t->sni);
    t->sni = malloc(len + 1);
    if (t->sni) {
        memcpy(t->sni, name, len);
        t->sni[len] = 0;
    }
    /* exact names first, so "api.example.com" beats "*.example.com" whatever the order of certificates */
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < ctx->ncerts; i++) {
            cert_entry_t *e = &ctx->certs[i];
            for (int j = 0; j < e->nnames; j++)
                if ((e->names[j][0] == '*') == pass && name_matches(e->names[j], (const char *)name, len))
                    return mbedtls_ssl_set_hs_own_cert(ssl, &e->crt, &e->pk);
        }
    return 0; /* unknown name: the default certificate */
}

void sl__tls_server_ctx_unref(sl_tls_server_ctx_t *ctx)
{
    if (--ctx->refs > 0)
        return;
    mbedtls_ssl_config_free(&ctx->conf);
    for (int i = 0; i < ctx->ncerts; i++) {
        cert_entry_t *e = &ctx->certs[i];
        mbedtls_x509_crt_free(&e->crt);
        mbedtls_pk_free(&e->pk);
        for (int j = 0; j < e->nnames; j++)
            free(e->names[j]);
        free(e->names);
    }
    free(ctx->certs);
    free(ctx);
}

sl_tls_server_ctx_t *sl_tls_server_ctx_new(const sl_tls_cert_src_t *certs, int n, char *err, size_t errlen)
{
    sl_tls_server_ctx_t *ctx = n < 1 ? NULL : calloc(1, sizeof(*ctx));
    if (ctx == NULL)
        goto fail_nomem;
    ctx->refs = 1;
    mbedtls_ssl_config_init(&ctx->conf);
    ctx->certs = calloc((size_t)n, sizeof(*ctx->certs));
    if (ctx->certs == NULL)
        goto fail_nomem;
    for (int i = 0; i < n; i++) {
        cert_entry_t *e = &ctx->certs[i];
        mbedtls_x509_crt_init(&e->crt);
        mbedtls_pk_init(&e->pk);
        ctx->ncerts = i + 1;
        if (load_pair(&e->crt, &e->pk, certs[i].cert_path, certs[i].key_path, certs[i].cert_pem,
                      certs[i].key_pem, err, errlen) != 0)
            goto fail;
        if (collect_names(e) != 0)
            goto fail_nomem;
    }
    int rc = mbedtls_ssl_config_defaults(&ctx->conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc == 0)
        rc = mbedtls_ssl_conf_own_cert(&ctx->conf, &ctx->certs[0].crt, &ctx->certs[0].pk);
    if (rc != 0) {
        errf(err, errlen, "server config", "", rc);
        goto fail;
    }
    conf_common(&ctx->conf);
    mbedtls_ssl_conf_authmode(&ctx->conf, MBEDTLS_SSL_VERIFY_NONE);
    mbedtls_ssl_conf_sni(&ctx->conf, on_sni, ctx);
    return ctx;
fail_nomem:
    if (err && errlen)
        snprintf(err, errlen, "%s", n < 1 ? "no certificate" : "out of memory");
fail:
    if (ctx)
        sl__tls_server_ctx_unref(ctx);
    return NULL;
}

void sl_tls_server_ctx_free(sl_tls_server_ctx_t *ctx)
{
    if (ctx)
        sl__tls_server_ctx_unref(ctx);
}

/* ---- client contexts ---- */

void sl__tls_client_ctx_unref(sl_tls_client_ctx_t *ctx)
{
    if (--ctx->refs > 0)
        return;
    mbedtls_ssl_config_free(&ctx->conf);
    mbedtls_x509_crt_free(&ctx->ca);
    mbedtls_x509_crt_free(&ctx->crt);
    mbedtls_pk_free(&ctx->pk);
    free(ctx->key);
    free(ctx);
}

sl_tls_client_ctx_t *sl_tls_client_ctx_new(const sl_tls_client_opts_t *opts, char *err, size_t errlen)
{
    static const sl_tls_client_opts_t none;
    if (opts == NULL)
        opts = &none;
    sl_tls_client_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ctx->refs = 1;
    mbedtls_ssl_config_init(&ctx->conf);
    mbedtls_x509_crt_init(&ctx->ca);
    mbedtls_x509_crt_init(&ctx->crt);
    mbedtls_pk_init(&ctx->pk);
    int rc = mbedtls_ssl_config_defaults(&ctx->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc != 0) {
        errf(err, errlen, "client config", "", rc);
        goto fail;
    }
    conf_common(&ctx->conf);
    if (opts->insecure_no_verify) {
        mbedtls_ssl_conf_authmode(&ctx->conf, MBEDTLS_SSL_VERIFY_NONE);
    } else {
        const char *ca = opts->ca_file ? opts->ca_file : DEFAULT_CA_FILE;
        /* > 0: some certificates of a system bundle did not parse; the others are still trusted */
        rc = mbedtls_x509_crt_parse_file(&ctx->ca, ca);
        if (rc < 0 || ctx->ca.version == 0) {
            errf(err, errlen, "CA file", ca, rc < 0 ? rc : MBEDTLS_ERR_X509_INVALID_FORMAT);
            goto fail;
        }
        mbedtls_ssl_conf_ca_chain(&ctx->conf, &ctx->ca, NULL);
        mbedtls_ssl_conf_authmode(&ctx->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    }
    if (opts->cert_file || opts->key_file) {
        if (!opts->cert_file || !opts->key_file) {
            if (err && errlen)
                snprintf(err, errlen, "a client certificate needs both cert and key files");
            goto fail;
        }
        if (load_pair(&ctx->crt, &ctx->pk, opts->cert_file, opts->key_file, NULL, NULL, err, errlen) != 0)
            goto fail;
        if ((rc = mbedtls_ssl_conf_own_cert(&ctx->conf, &ctx->crt, &ctx->pk)) != 0) {
            errf(err, errlen, "client certificate", opts->cert_file, rc);
            goto fail;
        }
    }
    return ctx;
fail:
    sl__tls_client_ctx_unref(ctx);
    return NULL;
}

void sl_tls_client_ctx_free(sl_tls_client_ctx_t *ctx)
{
    if (ctx)
        sl__tls_client_ctx_unref(ctx);
}

sl_tls_client_ctx_t *sl_tls_client_ctx_get(const sl_tls_client_opts_t *opts, char *err, size_t errlen)
{
    char key[4 * 1024];
    int n = snprintf(key, sizeof(key), "%s\n%s\n%s\n%d", opts && opts->ca_file ? opts->ca_file : "",
                     opts && opts->cert_file ? opts->cert_file : "",
                     opts && opts->key_file ? opts->key_file : "", opts ? opts->insecure_no_verify : 0);
    if (n < 0 || (size_t)n >= sizeof(key)) {
        if (err && errlen)
            snprintf(err, errlen, "TLS file paths too long");
        return NULL;
    }
    for (sl_tls_client_ctx_t *c = client_cache; c; c = c->next)
        if (strcmp(c->key, key) == 0)
            return c;
    sl_tls_client_ctx_t *c = sl_tls_client_ctx_new(opts, err, errlen);
    if (c == NULL)
        return NULL;
    if ((c->key = strdup(key)) == NULL) {
        sl_tls_client_ctx_free(c);
        if (err && errlen)
            snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->next = client_cache;
    client_cache = c;
    return c;
}
