#ifndef SL_RAG_INDEX_H
#define SL_RAG_INDEX_H

/* The RAG index: a file (format.h) read into memory, checked once, shared by every worker thread
 * and searched with BM25, cosine k-NN or both fused (search.c). Indexes are reference-counted: a new file
 * replaces the one a path serves (registry.c) while searches already holding the old one finish on it. */
#include <stddef.h>
#include <stdint.h>

#include "common/vector.h"
#include "rag/format.h"

/** A loaded, checked index (immutable; reference-counted). */
typedef struct sl_rag_index {
    const uint8_t *base;
    size_t size;
    int mapped;              /* 2: base is ours, freed when the last reference goes; 0: borrowed memory */
    int refs;                /* atomic */
    const sl_rag_hdr_t *hdr; /* &hdr_mem: a version 1 header read into this version's, IVF fields 0 */
    sl_rag_hdr_t hdr_mem;
    const char *str;
    uint64_t strsize;
    const sl_rag_source_t *sources;
    const sl_rag_chunk_t *chunks;
    const sl_rag_term_t *terms;
    const sl_rag_posting_t *postings;
    sl_vecset_t vecs; /* f32 always; i8, bits, ivf when the file has them */
    sl_ivf_t ivf;
    /* computed at load (search.c): each posting's BM25 weight without the idf, tf (k1 + 1) / (tf + k1 (1 - b
     * + b dl / avgdl)), and each term's largest one (the bound that lets a search skip what cannot rank) */
    float *impact, *term_max;
} sl_rag_index_t;

/** What Lua reads of a chunk (pointers into the index; valid while a reference is held). */
typedef struct sl_rag_chunk_view {
    const char *text, *heading, *source, *meta;
    uint32_t text_len, heading_len, source_len, meta_len;
    uint32_t source_id, ordinal;
} sl_rag_chunk_view_t;

/** What Lua reads of a source file. */
typedef struct sl_rag_source_view {
    const char *path, *meta;
    uint32_t path_len, meta_len;
    uint32_t first, count;
    uint64_t hash, size;
    int64_t mtime;
} sl_rag_source_view_t;

/** Load flags. */
enum { SL_RAG_NO_CHECKSUM = 1 }; /* skip the two checksums (fuzzing only: structure is still checked) */

/** Most bytes an index file may have (the offsets are 64-bit, this is a sanity bound). */
#define SL_RAG_MAX_FILE ((uint64_t)1 << 40)

/** Maps and checks the file at path; *out holds one reference. Returns 0, or a negative errno-style code with
 *  a one-line reason in err ("truncated: 1200 bytes, the header says 5000", "checksum mismatch ..."). */
int sl_rag_load(const char *path, sl_rag_index_t **out, char *err, size_t errlen);
/** Checks an index held in memory (not copied: the caller keeps p alive and unchanged while it is used, and
 *  frees it after the last release); flags: SL_RAG_NO_CHECKSUM. As sl_rag_load otherwise. */
int sl_rag_load_mem(const void *p, size_t n, unsigned flags, sl_rag_index_t **out, char *err, size_t errlen);
/** Takes one more reference. */
void sl_rag_retain(sl_rag_index_t *idx);
/** Drops a reference; the last one unmaps the file. NULL is ignored. */
void sl_rag_release(sl_rag_index_t *idx);

/** Counts: chunks, sources, terms, dimensions, flags (SL_RAG_HAS_*). */
uint32_t sl_rag_nchunks(const sl_rag_index_t *idx);
uint32_t sl_rag_nsources(const sl_rag_index_t *idx);
uint32_t sl_rag_nterms(const sl_rag_index_t *idx);
uint32_t sl_rag_dims(const sl_rag_index_t *idx);
uint32_t sl_rag_flags(const sl_rag_index_t *idx);
/** The inverted file's lists and default probes (0 and 0 without one), and the file's format version. */
uint32_t sl_rag_ivf_lists(const sl_rag_index_t *idx);
uint32_t sl_rag_ivf_probes(const sl_rag_index_t *idx);
uint32_t sl_rag_version(const sl_rag_index_t *idx);
/** The build information text (JSON from the builder); *len its length. */
const char *sl_rag_info(const sl_rag_index_t *idx, uint32_t *len);
/** Fills v for chunk i; returns 0 or -ERANGE. */
int sl_rag_chunk_get(const sl_rag_index_t *idx, uint32_t i, sl_rag_chunk_view_t *v);
/** Fills v for source i; returns 0 or -ERANGE. */
int sl_rag_source_get(const sl_rag_index_t *idx, uint32_t i, sl_rag_source_view_t *v);
/** Chunk i's unit vector (dims floats inside the index), or NULL when i is out of range. */
const float *sl_rag_chunk_vector(const sl_rag_index_t *idx, uint32_t i);

/* ---- search (search.c) ---- */

/** Computes idx->impact and idx->term_max (load time; idx is checked); also checks that each term's postings
 *  ascend by chunk. Returns 0, -ENOMEM or -EBADMSG with the reason in err. */
int sl__rag_prepare(sl_rag_index_t *idx, char *err, size_t errlen);

/** Search modes. */
enum { SL_RAG_BM25 = 1, SL_RAG_DENSE = 2, SL_RAG_HYBRID = 3 };

/** One search. Lengths of lists before fusion: `candidates` (0: max(4k, 20)). */
typedef struct sl_rag_query {
    const char *text; /* BM25 query (NULL: dense only) */
    size_t text_len;
    const float *vec;     /* dense query, dims floats, any length (normalised here; NULL: BM25 only) */
    const uint8_t *allow; /* NULL, or a bitmap of chunks to consider (sl_rag_filter) */
    uint32_t dims;
    uint32_t k;          /* results wanted (1..SL_VEC_MAX_K) */
    uint32_t candidates; /* per-signal list length before fusion */
    int32_t mode;        /* SL_RAG_BM25 / SL_RAG_DENSE / SL_RAG_HYBRID */
    int32_t quant;       /* SL_VEC_EXACT / INT8 / BINARY / AUTO, for the dense pass */
    float min_bm25;      /* a chunk enters the BM25 list only with at least this score */
    float min_dense;     /* ... the dense list only with at least this cosine */
    float rrf_k;         /* reciprocal rank fusion constant (0: 60) */
    uint32_t probes; /* IVF lists the dense pass probes (0: the index's default; its lists or more: all) */
    float w_bm25, w_dense; /* hybrid: each signal's weight in the fusion (0: the default, 1) */
    int32_t fusion;        /* hybrid: SL_RAG_FUSE_SCORE (0) or SL_RAG_FUSE_RRF */
} sl_rag_query_t;

/** Hybrid fusions: w_bm25 bm25 / best bm25 + w_dense cosine / best cosine (each over its own list; a negative
 *  cosine counts as 0), or reciprocal rank fusion, w / (rrf_k + rank) summed over the lists holding the
 * chunk. */
enum { SL_RAG_FUSE_SCORE = 0, SL_RAG_FUSE_RRF = 1 };

/** One result: its fused score (hybrid: per q->fusion; else the signal's own), both signals' scores (0 when
 * the chunk was not in that list) and ranks (1-based, 0 when absent). */
typedef struct sl_rag_hit {
    uint32_t chunk;
    float score, bm25, dense;
    uint32_t bm25_rank, dense_rank;
} sl_rag_hit_t;

/** Runs a query; fills at most q->k hits into out, best first. Returns the count, or -EINVAL (bad mode, k, or
 * a vector of other dimensions than the index's), -ENOMEM. Thread-safe (per-thread scratch memory). */
int sl_rag_search(const sl_rag_index_t *idx, const sl_rag_query_t *q, sl_rag_hit_t *out);

/** Builds the bitmap (ceil(nchunks/8) bytes) of chunks a filter lets through. spec: lines "source:GLOB"
 *  (fnmatch on the source path; any of them may match) and "meta:KEY=VALUE" (every one must match the
 *  source's metadata). Returns how many chunks pass, or -EINVAL for a line of another form. */
int sl_rag_filter(const sl_rag_index_t *idx, const char *spec, size_t len, uint8_t *bitmap);

/** Calls back each BM25 term of text (the tokenizer of the index, for tests and the builder's statistics);
 *  writes the terms separated by '\n' into out (at most cap bytes); returns the bytes written. */
size_t sl_rag_terms(const char *text, size_t len, char *out, size_t cap);

#endif
