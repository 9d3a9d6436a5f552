/* Harness: the embeddings answer reader (core/rag/embjson.c: sl_rag_embeddings_read). An answer is untrusted
 * bytes from a provider.
 *
 * Input: a byte (the number of vectors asked for, 1 to 4, and a room of 1 to 64 floats), then the answer.
 * Invariants (besides no sanitizer report): the result is the dimensions or one of the documented errors;
 * accepted, the vectors fit the room and every number is finite; the same bytes give the same result. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "rag/embjson.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t count = (uint32_t)(data[0] & 3) + 1;
    size_t cap = (size_t)(data[0] >> 2) + 1;
    /* an exact-size copy: a read past the answer's end is caught */
    char *json = malloc(size - 1 ? size - 1 : 1);
    memcpy(json, data + 1, size - 1);
    float out[64], again[64];
    int64_t tokens, tokens2;
    int rc = sl_rag_embeddings_read(json, size - 1, count, out, cap, &tokens);
    FZ_CHECK(rc > 0 || rc == -EINVAL || rc == -ENOSPC || rc == -ERANGE || rc == -ENOMEM);
    if (rc > 0) {
        FZ_CHECK((size_t)rc * count <= cap);
        for (size_t i = 0; i < (size_t)rc * count; i++)
            FZ_CHECK(isfinite(out[i]));
        FZ_CHECK(tokens >= -1);
        FZ_CHECK(sl_rag_embeddings_read(json, size - 1, count, again, cap, &tokens2) == rc);
        FZ_CHECK(memcmp(out, again, (size_t)rc * count * sizeof(float)) == 0 && tokens == tokens2);
    }
    free(json);
    return 0;
}
