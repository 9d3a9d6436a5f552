/* The folder walk of the index builder (files.h): the Lua side has no directory listing of its own. */
#include "rag/files.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/buf.h"

#define MAX_DEPTH 32

typedef struct walk {
    sl_buf_t out;
    size_t n, max;
    size_t root_len;
} walk_t;

static int walk_dir(walk_t *w, char *path, size_t plen, int depth)
{
    if (depth > MAX_DEPTH)
        return 0;
    DIR *d = opendir(path);
    if (d == NULL)
        return depth == 0 ? -errno : 0; /* an unreadable subfolder is skipped */
    int rc = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.')
            continue;
        size_t nl = strlen(e->d_name);
        if (plen + 1 + nl >= PATH_MAX)
            continue;
        path[plen] = '/';
        memcpy(path + plen + 1, e->d_name, nl + 1);
        struct stat lst, st;
        if (lstat(path, &lst) != 0)
            continue;
        if (S_ISDIR(lst.st_mode)) {
            rc = walk_dir(w, path, plen + 1 + nl, depth + 1);
        } else if ((S_ISREG(lst.st_mode) ||
                    (S_ISLNK(lst.st_mode) && stat(path, &st) == 0 && S_ISREG(st.st_mode)))) {
            if (S_ISREG(lst.st_mode))
                st = lst;
            if (w->n == w->max) {
                rc = -E2BIG;
                break;
            }
            char line[64];
            int ll =
                snprintf(line, sizeof(line), "\t%lld\t%lld\n", (long long)st.st_size, (long long)st.st_mtime);
            const char *rel = path + w->root_len + 1;
            if (sl_buf_append(&w->out, rel, strlen(rel)) != 0 ||
                sl_buf_append(&w->out, line, (size_t)ll) != 0)
                rc = -ENOMEM;
            w->n++;
        }
    }
    path[plen] = '\0';
    closedir(d);
    return rc;
}

int sl_rag_list_files(const char *dir, size_t max, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    char path[PATH_MAX];
    size_t dl = strlen(dir);
    while (dl > 1 && dir[dl - 1] == '/')
        dl--;
    if (dl == 0 || dl >= PATH_MAX)
        return -ENAMETOOLONG;
    memcpy(path, dir, dl);
    path[dl] = '\0';
    walk_t w = {.max = max, .root_len = dl};
    int rc = walk_dir(&w, path, dl, 0);
    if (rc < 0) {
        sl_buf_free(&w.out);
        return rc;
    }
    *out = w.out.base;
    *len = w.out.len;
    return (int)w.n;
}

void sl_rag_free(void *p)
{
    free(p);
}
