#ifndef SL_PKEY_H
#define SL_PKEY_H

#include <stddef.h>
#include <stdint.h>

/* Public keys and JWS signature checks (RS256/384/512: RSASSA-PKCS1-v1_5; ES256/384: ECDSA over P-256/P-384
 * with the signature as JWS writes it, r || s) through mbedTLS, for jwt-auth. Keys are parsed once per config
 * and verified against many times; one key is used by one worker thread only. */

typedef struct sl_pkey sl_pkey_t;

/** Parses a public key (PEM "PUBLIC KEY" / "RSA PUBLIC KEY", or DER) of data[0..len). Returns a new key the
 * caller frees with sl_pkey_free, or NULL with a message in err (errlen bytes, always terminated). */
sl_pkey_t *sl_pkey_load(const char *data, size_t len, char *err, size_t errlen);

/** A public key from JWK members, as raw big-endian bytes: kty "RSA" (a = n, b = e) or kty "EC" with crv
 *  "P-256" / "P-384" (a = x, b = y). NULL with a message in err when the parts do not make a valid key. */
sl_pkey_t *sl_pkey_from_jwk(const char *kty, const char *crv, const uint8_t *a, size_t alen, const uint8_t *b,
                            size_t blen, char *err, size_t errlen);

/** Checks a JWS signature sig[0..siglen) of msg[0..len) with key k for alg ("RS256", "RS384", "RS512",
 * "ES256", "ES384"). 0 when it is valid; -EBADMSG when it is not; -EINVAL when alg is unknown or not the
 * key's kind (an RSA key for ES256, a P-384 key for ES256). */
int sl_pkey_verify(sl_pkey_t *k, const char *alg, const uint8_t *msg, size_t len, const uint8_t *sig,
                   size_t siglen);

/** "RSA" or "EC" (the curve in *bits: 256, 384) for the key, for picking candidate keys by alg. */
const char *sl_pkey_kind(const sl_pkey_t *k, int *bits);

/** Frees a key (NULL is fine). */
void sl_pkey_free(sl_pkey_t *k);

#endif
