/* AES-256-GCM for small secrets (see aead.h). One mbedTLS context per call: these run when the state file is
 * read or written, never per request, so nothing is kept between calls (no key material stays in memory
 * here). */
#include "common/aead.h"

#include <errno.h>
#include <mbedtls/gcm.h>
#include <mbedtls/platform_util.h>
#include <string.h>
#include <sys/random.h>

/* Fills buf with n bytes from the kernel's CSPRNG (getrandom; blocks only before the pool is first seeded).
 */
static int random_bytes(uint8_t *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -EIO;
        }
        got += (size_t)r;
    }
    return 0;
}

int sl_aead_seal_nonce(const uint8_t *key, const uint8_t *nonce, const uint8_t *aad, size_t aadlen,
                       const uint8_t *in, size_t len, uint8_t *out)
{
    mbedtls_gcm_context gcm;
    int rc = 0;

    if (!key || !nonce || !out || (!in && len) || (!aad && aadlen))
        return -EINVAL;
    mbedtls_gcm_init(&gcm);
    if (mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, SL_AEAD_KEY_LEN * 8) != 0) {
        rc = -EIO;
        goto out;
    }
    memmove(out, nonce, SL_AEAD_NONCE_LEN);
    if (mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, len, out, SL_AEAD_NONCE_LEN, aad, aadlen, in,
                                  out + SL_AEAD_NONCE_LEN, SL_AEAD_TAG_LEN,
                                  out + SL_AEAD_NONCE_LEN + len) != 0)
        rc = -EIO;
out:
    mbedtls_gcm_free(&gcm); /* zeroizes the key schedule */
    return rc;
}

int sl_aead_seal(const uint8_t *key, const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                 uint8_t *out)
{
    uint8_t nonce[SL_AEAD_NONCE_LEN];

    if (!out)
        return -EINVAL;
    if (random_bytes(nonce, sizeof(nonce)) != 0)
        return -EIO;
    return sl_aead_seal_nonce(key, nonce, aad, aadlen, in, len, out);
}

int sl_aead_open(const uint8_t *key, const uint8_t *aad, size_t aadlen, const uint8_t *in, size_t len,
                 uint8_t *out)
{
    mbedtls_gcm_context gcm;
    int rc = 0;

    if (!key || !in || len < SL_AEAD_OVERHEAD || (!out && len > SL_AEAD_OVERHEAD) || (!aad && aadlen))
        return -EINVAL;
    size_t n = len - SL_AEAD_OVERHEAD;
    mbedtls_gcm_init(&gcm);
    if (mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, SL_AEAD_KEY_LEN * 8) != 0) {
        rc = -EIO;
        goto out;
    }
    if (mbedtls_gcm_auth_decrypt(&gcm, n, in, SL_AEAD_NONCE_LEN, aad, aadlen, in + SL_AEAD_NONCE_LEN + n,
                                 SL_AEAD_TAG_LEN, in + SL_AEAD_NONCE_LEN, out) != 0) {
        if (n)
            mbedtls_platform_zeroize(out, n);
        rc = -EBADMSG;
    }
out:
    mbedtls_gcm_free(&gcm);
    return rc;
}
