/* Index slots per file path (registry.h). Loading happens outside the slot's lock, so a worker swapping to
 * the current index never waits for a large file being checked; only one load per slot runs at a time. */
#include "rag/registry.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

struct sl_rag_slot {
    struct sl_rag_slot *next;
    pthread_mutex_t lock;
    uint64_t gen; /* atomic */
    sl_rag_index_t *cur;
    struct stat st;  /* of the file cur was loaded from */
    struct stat bad; /* of the last file refused (not loaded again until it changes) */
    int bad_rc;
    int loading;
    double loaded_at;
    char error[256];
    char path[];
};

static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_rag_slot_t *slots;

sl_rag_slot_t *sl_rag_slot(const char *path, size_t len)
{
    if (len == 0 || len >= PATH_MAX || memchr(path, '\0', len))
        return NULL;
    pthread_mutex_lock(&slots_lock);
    sl_rag_slot_t *s = slots;
    while (s && !(strlen(s->path) == len && memcmp(s->path, path, len) == 0))
        s = s->next;
    if (s == NULL && (s = calloc(1, sizeof(*s) + len + 1)) != NULL) {
        pthread_mutex_init(&s->lock, NULL);
        memcpy(s->path, path, len);
        s->next = slots;
        slots = s;
    }
    pthread_mutex_unlock(&slots_lock);
    return s;
}

uint64_t sl_rag_slot_gen(const sl_rag_slot_t *s)
{
    return __atomic_load_n(&s->gen, __ATOMIC_ACQUIRE);
}

static double wall(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

int sl_rag_slot_reload(sl_rag_slot_t *s, int force, char *err, size_t errlen)
{
    char e[256] = "";
    struct stat st;
    if (stat(s->path, &st) != 0) {
        int code = -errno;
        snprintf(e, sizeof(e), "cannot open: %s", strerror(errno));
        pthread_mutex_lock(&s->lock);
        snprintf(s->error, sizeof(s->error), "%s", e);
        pthread_mutex_unlock(&s->lock);
        if (err && errlen)
            snprintf(err, errlen, "%s", e);
        return code;
    }
    pthread_mutex_lock(&s->lock);
    if (s->loading || (!force && s->cur && same_file(&st, &s->st))) {
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    if (!force && s->bad_rc &&
        same_file(&st, &s->bad)) { /* refused already: checking it again costs a read */
        int rc = s->bad_rc;
        if (err && errlen)
            snprintf(err, errlen, "%s", s->error);
        pthread_mutex_unlock(&s->lock);
        return rc;
    }
    s->loading = 1;
    pthread_mutex_unlock(&s->lock);

    sl_rag_index_t *idx = NULL;
    int rc = sl_rag_load(s->path, &idx, e, sizeof(e));
    sl_rag_index_t *old = NULL;
    pthread_mutex_lock(&s->lock);
    s->loading = 0;
    if (rc == 0) {
        old = s->cur;
        s->cur = idx;
        s->st = st; /* the stat before the load: a file replaced meanwhile is noticed by the next check */
        s->loaded_at = wall();
        s->error[0] = '\0';
        s->bad_rc = 0;
        __atomic_add_fetch(&s->gen, 1, __ATOMIC_RELEASE);
    } else {
        snprintf(s->error, sizeof(s->error), "%s", e);
        s->bad = st;
        s->bad_rc = rc;
    }
    pthread_mutex_unlock(&s->lock);
    sl_rag_release(old); /* workers still holding it keep it alive */
    if (rc != 0 && err && errlen)
        snprintf(err, errlen, "%s", e);
    return rc == 0 ? 1 : rc;
}

sl_rag_index_t *sl_rag_slot_acquire(sl_rag_slot_t *s, uint64_t *gen, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->lock);
    int empty = s->cur == NULL;
    pthread_mutex_unlock(&s->lock);
    if (empty)
        sl_rag_slot_reload(s, 0, NULL, 0);
    pthread_mutex_lock(&s->lock);
    sl_rag_index_t *idx = s->cur;
    if (idx)
        sl_rag_retain(idx);
    *gen = s->gen;
    if (idx == NULL && err && errlen)
        snprintf(err, errlen, "%s", s->error[0] ? s->error : "index is being loaded");
    pthread_mutex_unlock(&s->lock);
    return idx;
}

void sl_rag_slot_error(sl_rag_slot_t *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&s->lock);
    snprintf(err, errlen, "%s", s->error);
    pthread_mutex_unlock(&s->lock);
}

double sl_rag_slot_loaded_at(sl_rag_slot_t *s)
{
    pthread_mutex_lock(&s->lock);
    double t = s->loaded_at;
    pthread_mutex_unlock(&s->lock);
    return t;
}
