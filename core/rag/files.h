#ifndef SL_RAG_FILES_H
#define SL_RAG_FILES_H

#include <stddef.h>

/** Lists the regular files under dir, recursively (names starting with '.' and symbolic links to folders are
 *  skipped; at most max files, 32 levels), as lines "relative/path\tsize\tmtime\n" in *out (malloc'd: free it
 *  with sl_rag_free), *len bytes. Returns the number of files, or a negative errno-style code (dir cannot be
 *  opened: -ENOENT, -ENOTDIR, -EACCES...; more than max files: -E2BIG). */
int sl_rag_list_files(const char *dir, size_t max, char **out, size_t *len);
/** Frees memory the RAG functions handed out. */
void sl_rag_free(void *p);

#endif
