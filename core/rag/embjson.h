#ifndef SL_RAG_EMBJSON_H
#define SL_RAG_EMBJSON_H

#include <stddef.h>
#include <stdint.h>

/** Reads an OpenAI-format embeddings answer ({"data": [{"index": i, "embedding": [numbers]}, ...], "usage":
 *  {"prompt_tokens": n}}, other keys skipped) straight into floats, without a JSON tree: the count vectors in
 *  index order, one after the other, into out (room for cap floats, owned by the caller); each number is the
 *  float nearest to its decimal. *tokens: usage.prompt_tokens, or -1 without it. Returns the dimensions (all
 *  vectors have them); -EINVAL when json is not such an answer (malformed, another shape, a repeated key, a
 *  base64 or empty embedding, not count items, indexes not 0..count-1 once each): the caller then reads it
 *  the general way, which says what is wrong; -ENOSPC when out is too small; -ERANGE when the vectors differ
 *  in length; -ENOMEM. */
int sl_rag_embeddings_read(const char *json, size_t len, uint32_t count, float *out, size_t cap,
                           int64_t *tokens);

#endif
