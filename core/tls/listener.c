/* Listener certificates: PEM text published by the main thread, turned into per-worker contexts. */
#include "tls/listener.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/settings.h"

typedef struct bundle {
    int refs; /* under lock */
    int n;
    sl_tls_cert_src_t *pem; /* cert_pem and key_pem set; paths kept for messages */
} bundle_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static bundle_t *current[SL_MAX_LISTEN];
static atomic_uint_fast64_t gens[SL_MAX_LISTEN];

static void bundle_unref(bundle_t *b)
{
    if (b == NULL || --b->refs > 0)
        return;
    for (int i = 0; i < b->n; i++) {
        free((char *)b->pem[i].cert_pem);
        free((char *)b->pem[i].key_pem);
        free((char *)b->pem[i].cert_path);
        free((char *)b->pem[i].key_path);
    }
    free(b->pem);
    free(b);
}

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    char *s = NULL;
    long len;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0 ||
        len > 16 * 1024 * 1024 || (s = malloc((size_t)len + 1)) == NULL ||
        fread(s, 1, (size_t)len, f) != (size_t)len) {
        snprintf(err, errlen, "cannot read %s: %s", path, errno ? strerror(errno) : "read error");
        free(s);
        s = NULL;
    } else {
        s[len] = 0;
    }
    if (f)
        fclose(f);
    return s;
}

int sl_tls_listener_set(int idx, const sl_tls_cert_src_t *files, int n, char *err, size_t errlen)
{
    if (idx < 0 || idx >= SL_MAX_LISTEN || n < 1) {
        snprintf(err, errlen, "no certificate");
        return SL_TLS_E_CONFIG;
    }
    int rc = SL_TLS_E_NOMEM;
    bundle_t *b = calloc(1, sizeof(*b));
    if (b == NULL || (b->pem = calloc((size_t)n, sizeof(*b->pem))) == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    b->refs = 1;
    for (int i = 0; i < n; i++, b->n++) {
        sl_tls_cert_src_t *p = &b->pem[i];
        errno = 0;
        p->cert_path = strdup(files[i].cert_path);
        p->key_path = strdup(files[i].key_path);
        if (!p->cert_path || !p->key_path) {
            b->n++;
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        p->cert_pem = read_file(files[i].cert_path, err, errlen);
        p->key_pem = p->cert_pem ? read_file(files[i].key_path, err, errlen) : NULL;
        if (!p->key_pem) {
            b->n++;
            rc = SL_TLS_E_CONFIG;
            goto out;
        }
    }
    /* build one context now: a bad file is reported here, by the main thread, not by every worker later */
    sl_tls_server_ctx_t *check = sl_tls_server_ctx_new(b->pem, n, err, errlen);
    if (check == NULL) {
        rc = SL_TLS_E_CONFIG;
        goto out;
    }
    sl_tls_server_ctx_free(check);
    pthread_mutex_lock(&lock);
    bundle_t *old = current[idx];
    current[idx] = b;
    atomic_fetch_add(&gens[idx], 1);
    bundle_unref(old);
    pthread_mutex_unlock(&lock);
    return 0;
out:
    bundle_unref(b);
    return rc;
}

sl_tls_server_ctx_t *sl_tls_listener_ctx(int idx, sl_tls_server_ctx_t **cur, uint64_t *gen, char *err,
                                         size_t errlen)
{
    if (idx < 0 || idx >= SL_MAX_LISTEN)
        return NULL;
    uint64_t g = atomic_load(&gens[idx]);
    if (*cur && g == *gen)
        return *cur;
    pthread_mutex_lock(&lock);
    bundle_t *b = current[idx];
    if (b)
        b->refs++;
    g = atomic_load(&gens[idx]);
    pthread_mutex_unlock(&lock);
    if (b == NULL) {
        snprintf(err, errlen, "no certificates loaded");
        return *cur;
    }
    sl_tls_server_ctx_t *ctx = sl_tls_server_ctx_new(b->pem, b->n, err, errlen);
    pthread_mutex_lock(&lock);
    bundle_unref(b);
    pthread_mutex_unlock(&lock);
    if (ctx == NULL)
        return *cur; /* keep serving with the certificates we have */
    sl_tls_server_ctx_free(*cur);
    *cur = ctx;
    *gen = g;
    return ctx;
}

void sl_tls_listener_close_all(void)
{
    pthread_mutex_lock(&lock);
    for (int i = 0; i < SL_MAX_LISTEN; i++) {
        bundle_unref(current[i]);
        current[i] = NULL;
    }
    pthread_mutex_unlock(&lock);
}
