#ifndef SL_RAG_FORMAT_H
#define SL_RAG_FORMAT_H

/* The RAG index file (written by writer.c, loaded by index.c; docs/vector.md "Index file format").
 *
 *   header (sl_rag_hdr_t)       magic, version, sizes, counts, section table, two XXH64 checksums
 *   sections, each 64-byte aligned, in any order (the table says where):
 *     STR       bytes every text lives in (paths, headings, chunk text, metadata, terms, build info)
 *     SOURCES   nsources x sl_rag_source_t   files the chunks came from (path, metadata, content hash, mtime)
 *     CHUNKS    nchunks x sl_rag_chunk_t      source, heading, text, token count; a source's chunks are
 * adjacent TERMS     nterms x sl_rag_term_t        BM25 dictionary, sorted by bytes (memcmp, then length)
 *     POSTINGS  npostings x sl_rag_posting_t  (chunk, term frequency), each term's run by ascending chunk
 *     F32       nchunks x dims float32        unit vectors
 *     I8, I8S   nchunks x dims int8 + nchunks float32 scales          (optional: flag SL_RAG_HAS_I8)
 *     BITS      nchunks x ceil(dims/64) uint64 sign bits               (optional: flag SL_RAG_HAS_BITS)
 *     IVF_CENT  nlist x dims float32 unit centroids                     (optional: flag SL_RAG_HAS_IVF)
 *     IVF_OFFS  nlist + 1 uint32: list l holds IVF_IDS[offs[l] .. offs[l + 1])
 *     IVF_IDS   nchunks uint32: every chunk once, grouped by list (ascending within a list)
 *     IVF_I8, IVF_I8S  the I8 and I8S rows again in IVF_IDS order, so a probed list is read from contiguous
 *               memory                                                 (with SL_RAG_HAS_IVF and
 * SL_RAG_HAS_I8)
 *
 * Little-endian, fixed-size records, offsets from the start of the file. hdr_hash covers the header (with
 * hdr_hash itself zero), body_hash every byte after it. Nothing in a file is trusted before index.c checked
 * the checksums, every offset, length and count, and every cross reference.
 *
 * Version 2 added the three IVF sections and the header's nlist / nprobe after the section table; a version 1
 * file (its header ends after the BITS entry: SL_RAG_HDR_V1_SIZE bytes) still loads, searched by brute force.
 */
#include <stddef.h>
#include <stdint.h>

#define SL_RAG_MAGIC "SLRAGIX\x01"
#define SL_RAG_VERSION 2
#define SL_RAG_ALIGN 64

enum {
    SL_RAG_SEC_STR = 0,
    SL_RAG_SEC_SOURCES,
    SL_RAG_SEC_CHUNKS,
    SL_RAG_SEC_TERMS,
    SL_RAG_SEC_POSTINGS,
    SL_RAG_SEC_F32,
    SL_RAG_SEC_I8,
    SL_RAG_SEC_I8S,
    SL_RAG_SEC_BITS,
    SL_RAG_SEC_IVF_CENT,
    SL_RAG_SEC_IVF_OFFS,
    SL_RAG_SEC_IVF_IDS,
    SL_RAG_SEC_IVF_I8,
    SL_RAG_SEC_IVF_I8S,
    SL_RAG_NSEC
};
#define SL_RAG_NSEC_V1 (SL_RAG_SEC_BITS + 1)

enum { SL_RAG_HAS_I8 = 1, SL_RAG_HAS_BITS = 2, SL_RAG_HAS_IVF = 4 };

/** Bytes in the STR section. */
typedef struct sl_rag_str {
    uint64_t off;
    uint32_t len;
    uint32_t reserved;
} sl_rag_str_t;

/** Where a section lies in the file. */
typedef struct sl_rag_sec {
    uint64_t off;
    uint64_t size;
} sl_rag_sec_t;

/** The file's header, at offset 0. */
typedef struct sl_rag_hdr {
    char magic[8];
    uint32_t version;
    uint32_t hdr_size; /* sizeof(sl_rag_hdr_t) */
    uint64_t file_size;
    uint64_t hdr_hash;  /* XXH64 of the header with this field zero */
    uint64_t body_hash; /* XXH64 of bytes [hdr_size, file_size) */
    uint32_t dims, nchunks, nsources, nterms;
    uint64_t npostings;
    uint32_t flags;
    float avgdl;       /* mean chunk length in terms (BM25) */
    sl_rag_str_t info; /* build information (JSON text, from the builder) */
    sl_rag_sec_t sec[SL_RAG_NSEC];
    uint32_t nlist;  /* IVF lists (0 without SL_RAG_HAS_IVF) */
    uint32_t nprobe; /* lists a search probes by default */
} sl_rag_hdr_t;

/** Bytes of a version 1 header: up to the end of its section table (no IVF entries, no nlist / nprobe). */
#define SL_RAG_HDR_V1_SIZE (offsetof(sl_rag_hdr_t, sec) + SL_RAG_NSEC_V1 * sizeof(sl_rag_sec_t))

/** A file the index was built from. */
typedef struct sl_rag_source {
    sl_rag_str_t path; /* as given to the builder: relative to the folder */
    sl_rag_str_t meta; /* "key\0value\0" pairs (front matter), for filters */
    uint64_t hash;     /* XXH64 of the file's bytes: an unchanged file keeps its chunks on an update */
    int64_t mtime;
    uint64_t size;
    uint32_t first, count; /* its chunks */
} sl_rag_source_t;

/** One chunk of text. */
typedef struct sl_rag_chunk {
    sl_rag_str_t heading; /* "Title > Section > Subsection" */
    sl_rag_str_t text;
    uint32_t source;
    uint32_t length;  /* terms, for BM25 */
    uint32_t ordinal; /* number within its source */
    uint32_t reserved;
} sl_rag_chunk_t;

/** A BM25 term and its postings: POSTINGS[post .. post + df). */
typedef struct sl_rag_term {
    sl_rag_str_t term;
    uint64_t post;
    uint32_t df;
    uint32_t reserved;
} sl_rag_term_t;

/** A term's occurrence in a chunk. */
typedef struct sl_rag_posting {
    uint32_t chunk;
    uint32_t tf;
} sl_rag_posting_t;

#endif
