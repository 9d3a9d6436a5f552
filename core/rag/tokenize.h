#ifndef SL_RAG_TOKENIZE_H
#define SL_RAG_TOKENIZE_H

#include <stddef.h>

/** Longest term kept (bytes); longer words are dropped (hashes, base64, minified code). */
#define SL_RAG_TERM_MAX 48

/** Receives one term (not NUL-terminated; valid during the call only). */
typedef void (*sl_rag_term_fn)(const char *term, size_t len, void *arg);

/** Splits text into the terms BM25 indexes and queries alike: runs of ASCII letters and digits and of UTF-8
 *  bytes (so non-Latin words stay whole), ASCII lower-cased, split at '_', '-' and punctuation; one-byte
 *  terms, English stop words and terms over SL_RAG_TERM_MAX are dropped; English endings are stripped by a
 *  light stemmer (routes, routing, routed -> rout). Calls fn for each term in order; returns how many. */
size_t sl_rag_tokenize(const char *text, size_t len, sl_rag_term_fn fn, void *arg);

#endif
