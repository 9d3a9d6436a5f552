/* The live config, shared by all workers as an immutable JSON text with a version number. Each worker decodes
 * it in its own VM, so nothing Lua-side is shared between threads. Each worker reports back what it runs
 * after each snapshot (config version, plugin code version, why it refused), so the Admin API can tell the
 * truth about every worker, not only the one it runs on. */
#include "shared/snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPORT_ERR_MAX 1024

typedef struct {
    int set;
    uint64_t seen, config_version, code_version;
    char err[REPORT_ERR_MAX];
} report_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *cur_json;
static size_t cur_len;
static uint64_t cur_version;
static uint64_t code_version;
static report_t reports[SL_SNAPSHOT_MAX_WORKERS];
static void (*notify)(void);

int64_t sl_snapshot_publish(const char *json, size_t len)
{
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, json, len);
    copy[len] = '\0';
    pthread_mutex_lock(&lock);
    free(cur_json);
    cur_json = copy;
    cur_len = len;
    int64_t v = (int64_t)++cur_version;
    pthread_mutex_unlock(&lock);
    if (notify)
        notify();
    return v;
}

int sl_snapshot_fetch(uint64_t *version, char **json, size_t *len)
{
    int rc = 0;
    pthread_mutex_lock(&lock);
    if (cur_json == NULL || *version == cur_version)
        goto out;
    *json = malloc(cur_len + 1);
    if (*json == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(*json, cur_json, cur_len + 1);
    *len = cur_len;
    *version = cur_version;
    rc = 1;
out:
    pthread_mutex_unlock(&lock);
    return rc;
}

uint64_t sl_snapshot_next_code_version(void)
{
    pthread_mutex_lock(&lock);
    uint64_t v = ++code_version;
    pthread_mutex_unlock(&lock);
    return v;
}

void sl_snapshot_report(int worker, uint64_t seen, uint64_t config_version, uint64_t code, const char *err)
{
    if (worker < 0 || worker >= SL_SNAPSHOT_MAX_WORKERS)
        return;
    pthread_mutex_lock(&lock);
    report_t *r = &reports[worker];
    r->set = 1;
    r->seen = seen;
    r->config_version = config_version;
    r->code_version = code;
    snprintf(r->err, sizeof(r->err), "%s", err ? err : "");
    pthread_mutex_unlock(&lock);
}

int sl_snapshot_report_get(int worker, uint64_t *seen, uint64_t *config_version, uint64_t *code, char *err,
                           size_t errlen)
{
    if (worker < 0 || worker >= SL_SNAPSHOT_MAX_WORKERS)
        return -EINVAL;
    pthread_mutex_lock(&lock);
    const report_t *r = &reports[worker];
    int rc = r->set;
    *seen = r->seen;
    *config_version = r->config_version;
    *code = r->code_version;
    if (errlen > 0)
        snprintf(err, errlen, "%s", r->err);
    pthread_mutex_unlock(&lock);
    return rc;
}

void sl_snapshot_on_publish(void (*fn)(void))
{
    notify = fn;
}

void sl_snapshot_close(void)
{
    pthread_mutex_lock(&lock);
    free(cur_json);
    cur_json = NULL;
    pthread_mutex_unlock(&lock);
}
