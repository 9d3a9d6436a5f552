#ifndef SL_RAG_WRITER_H
#define SL_RAG_WRITER_H

/* Writing a RAG index file (format.h). The builder (lua/sluice/rag/build.lua) adds sources and their chunks
 * with their vectors; the writer tokenizes each chunk for BM25 (rag/tokenize.h), keeps the postings, and on
 * write lays out the sections, the checksums, and replaces the target file atomically (temporary file in the
 * same folder, fsync, rename, fsync of the folder): a reader sees the old file or the new one, never a part.
 */
#include <stddef.h>
#include <stdint.h>

typedef struct sl_rag_writer sl_rag_writer_t;

/** A new empty index of dims-dimensional vectors; flags: SL_RAG_HAS_I8 / SL_RAG_HAS_BITS (quantised copies to
 *  write too). NULL for dims 0 or over SL_VEC_MAX_DIMS, unknown flags, or out of memory. Free with
 *  sl_rag_writer_free. */
sl_rag_writer_t *sl_rag_writer_new(uint32_t dims, uint32_t flags);
/** Adds a source file (path, "key\0value\0" metadata, content hash, mtime, size); its chunks follow. Returns
 *  its id, or -ENOMEM / -E2BIG (too many). */
int sl_rag_writer_source(sl_rag_writer_t *w, const char *path, size_t plen, const char *meta, size_t mlen,
                         uint64_t hash, int64_t mtime, uint64_t size);
/** Adds a chunk of the last source added, with its vector (dims floats, normalised here; a zero vector stays
 *  zero). Returns the chunk id, or -EINVAL (no source yet), -ENOMEM, -E2BIG. */
int sl_rag_writer_chunk(sl_rag_writer_t *w, const char *heading, size_t hlen, const char *text, size_t tlen,
                        const float *vec);
/** Sets the inverted file (docs/vector.md) written with the vectors: lists < 0 the default for the chunk
 * count (none under SL_IVF_MIN_ROWS chunks, else about their square root), 0 none, else that many lists (none
 * when there are fewer than 2 chunks per list); probes the lists a search probes by default (0: the default
 * for the lists). Returns 0, or -EINVAL over SL_IVF_MAX_LISTS. */
int sl_rag_writer_ivf(sl_rag_writer_t *w, int32_t lists, uint32_t probes);
/** The lists the writer would write for its chunks now (0: none). */
uint32_t sl_rag_writer_lists(const sl_rag_writer_t *w);
/** Sets the build information (JSON text) stored in the header. Returns 0 or -ENOMEM. */
int sl_rag_writer_info(sl_rag_writer_t *w, const char *json, size_t len);
/** Writes the index to path (replacing it atomically). Returns 0, or a negative code with the reason in err.
 */
int sl_rag_writer_write(sl_rag_writer_t *w, const char *path, char *err, size_t errlen);
/** Writes the index into memory instead: *out (malloc'd, the caller frees) and *len. Returns 0 or -ENOMEM. */
int sl_rag_writer_bytes(sl_rag_writer_t *w, uint8_t **out, size_t *len);
/** Number of chunks added. */
uint32_t sl_rag_writer_count(const sl_rag_writer_t *w);
/** Frees the writer. */
void sl_rag_writer_free(sl_rag_writer_t *w);

#endif
