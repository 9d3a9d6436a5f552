#ifndef SL_HASH_H
#define SL_HASH_H

#include <stddef.h>
#include <stdint.h>

/** XXH64 of n bytes with a seed (the published algorithm: same values as the reference implementation). For
 *  checksums of files and fingerprints, not for secrets. */
uint64_t sl_xxh64(const void *p, size_t n, uint64_t seed);

#endif
