/* The live config, shared by all workers as an immutable JSON text with a version number. Each worker decodes
 * it in its own VM, so nothing Lua-side is shared between threads. */
#include "shared/snapshot.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char *cur_json;
static size_t cur_len;
static uint64_t cur_version;
static uint64_t cur_plugin_gen;
static void (*notify)(void);

int64_t sl_snapshot_publish(const char *json, size_t len, int bump_plugins)
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
    if (bump_plugins)
        cur_plugin_gen++;
    pthread_mutex_unlock(&lock);
    if (notify)
        notify();
    return v;
}

int sl_snapshot_fetch(uint64_t *version, uint64_t *plugin_gen, char **json, size_t *len)
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
    *plugin_gen = cur_plugin_gen;
    rc = 1;
out:
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
