/* SHA-256 (FIPS 180-4) for the AI response cache's keys: one call over one buffer, hex out, no context to set
 * up. mbedTLS 2.28's compression function costs about twice these instructions per block, and a key is hashed
 * on every cached request (sluice.cache.key). */
#ifndef SL_SHA256_H
#define SL_SHA256_H

#include <stddef.h>

/** Writes the 32-byte SHA-256 digest of p[0..len) to out. */
void sl_sha256(const void *p, size_t len, unsigned char out[32]);

/** Writes the SHA-256 digest of p[0..len) to out as 64 lowercase hex digits (no terminating NUL). */
void sl_sha256_hex(const void *p, size_t len, char out[64]);

/** Tests: on 1 / 0 turns the CPU's SHA extensions on / off (when it has them), -1 leaves it; returns the
 *  setting before (1 when they were in use). */
int sl__sha256_accel(int on);

#endif
