/* Authenticated encryption of small secrets (state-file fields) with AES-256-GCM through mbedTLS. A sealed
 * value is nonce (12 random bytes from the kernel) || ciphertext || tag (16 bytes): SL_AEAD_OVERHEAD bytes
 * longer than the plaintext. Lua reaches these through FFI (lua/sluice/secrets.lua). */
#ifndef SL_AEAD_H
#define SL_AEAD_H

#include <stddef.h>
#include <stdint.h>

#define SL_AEAD_KEY_LEN 32
#define SL_AEAD_NONCE_LEN 12
#define SL_AEAD_TAG_LEN 16
#define SL_AEAD_OVERHEAD (SL_AEAD_NONCE_LEN + SL_AEAD_TAG_LEN)

/** Seals in[0..len) under key (32 bytes) with additional data aad (may be NULL when aadlen is 0) into out,
 * which the caller provides with len + SL_AEAD_OVERHEAD bytes. Returns 0, -EINVAL (bad arguments), -EIO (no
 * random bytes, a cipher failure). */
int sl_aead_seal(const uint8_t *key, const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                 uint8_t *out);

/** sl_aead_seal with a given nonce (SL_AEAD_NONCE_LEN bytes): for tests with published vectors only, since a
 *  nonce used twice under one key breaks GCM. Same contract otherwise. */
int sl_aead_seal_nonce(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
                       const uint8_t *in, size_t len, uint8_t *out);

/** Opens a value sl_aead_seal made (in: len bytes, at least SL_AEAD_OVERHEAD) into out (len -
 * SL_AEAD_OVERHEAD bytes, caller's). Returns 0, -EBADMSG when the key, the additional data or the bytes do
 * not match (nothing useful is left in out), -EINVAL for bad arguments. */
int sl_aead_open(const uint8_t *key, const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                 uint8_t *out);

#endif
