/* Public keys and JWS signature checks through mbedTLS 2.28 (pk, rsa, ecdsa). Only verification: the gateway
 * never holds a private key for tokens. An ES* signature in a JWS is the two integers r and s side by side,
 * each as long as the curve's order, not the DER sequence X.509 uses, so it is checked with
 * mbedtls_ecdsa_verify on the two halves rather than through mbedtls_pk_verify. */
#include "common/pkey.h"

#include <errno.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/rsa.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sl_pkey {
    mbedtls_pk_context pk;
};

static void set_err(char *err, size_t errlen, const char *what, int rc)
{
    if (err == NULL || errlen == 0)
        return;
    if (rc != 0)
        snprintf(err, errlen, "%s (mbedTLS -0x%04x)", what, (unsigned)-rc);
    else
        snprintf(err, errlen, "%s", what);
}

static sl_pkey_t *new_key(void)
{
    sl_pkey_t *k = calloc(1, sizeof(*k));
    if (k)
        mbedtls_pk_init(&k->pk);
    return k;
}

void sl_pkey_free(sl_pkey_t *k)
{
    if (k == NULL)
        return;
    mbedtls_pk_free(&k->pk);
    free(k);
}

sl_pkey_t *sl_pkey_load(const char *data, size_t len, char *err, size_t errlen)
{
    sl_pkey_t *k = new_key();
    unsigned char *buf = NULL;
    int rc;

    if (k == NULL || (buf = malloc(len + 1)) == NULL) {
        set_err(err, errlen, "out of memory", 0);
        goto fail;
    }
    /* mbedTLS takes PEM with its terminating NUL counted, DER without */
    memcpy(buf, data, len);
    buf[len] = '\0';
    rc = mbedtls_pk_parse_public_key(&k->pk, buf, memmem(buf, len, "-----BEGIN", 10) ? len + 1 : len);
    if (rc != 0) {
        set_err(err, errlen, "not a public key in PEM or DER", rc);
        goto fail;
    }
    if (!mbedtls_pk_can_do(&k->pk, MBEDTLS_PK_RSA) && !mbedtls_pk_can_do(&k->pk, MBEDTLS_PK_ECKEY)) {
        set_err(err, errlen, "only RSA and EC keys are supported", 0);
        goto fail;
    }
    free(buf);
    return k;
fail:
    free(buf);
    sl_pkey_free(k);
    return NULL;
}

sl_pkey_t *sl_pkey_from_jwk(const char *kty, const char *crv, const uint8_t *a, size_t alen, const uint8_t *b,
                            size_t blen, char *err, size_t errlen)
{
    sl_pkey_t *k = new_key();
    unsigned char *point = NULL;
    int rc;

    if (k == NULL) {
        set_err(err, errlen, "out of memory", 0);
        return NULL;
    }
    if (kty && strcmp(kty, "RSA") == 0) {
        rc = mbedtls_pk_setup(&k->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_RSA));
        mbedtls_rsa_context *rsa = rc == 0 ? mbedtls_pk_rsa(k->pk) : NULL;
        if (rc == 0)
            rc = mbedtls_rsa_import_raw(rsa, a, alen, NULL, 0, NULL, 0, NULL, 0, b, blen);
        if (rc == 0)
            rc = mbedtls_rsa_complete(rsa);
        if (rc == 0)
            rc = mbedtls_rsa_check_pubkey(rsa);
        if (rc != 0) {
            set_err(err, errlen, "invalid RSA key (n, e)", rc);
            goto fail;
        }
        return k;
    }
    if (kty && strcmp(kty, "EC") == 0) {
        mbedtls_ecp_group_id gid = MBEDTLS_ECP_DP_NONE;
        size_t size = 0;
        if (crv && strcmp(crv, "P-256") == 0)
            gid = MBEDTLS_ECP_DP_SECP256R1, size = 32;
        else if (crv && strcmp(crv, "P-384") == 0)
            gid = MBEDTLS_ECP_DP_SECP384R1, size = 48;
        if (gid == MBEDTLS_ECP_DP_NONE) {
            set_err(err, errlen, "unsupported curve (P-256, P-384)", 0);
            goto fail;
        }
        if (alen != size || blen != size) {
            set_err(err, errlen, "x and y must each be as long as the curve's coordinates", 0);
            goto fail;
        }
        point = malloc(1 + 2 * size);
        if (point == NULL) {
            set_err(err, errlen, "out of memory", 0);
            goto fail;
        }
        point[0] = 0x04; /* uncompressed */
        memcpy(point + 1, a, size);
        memcpy(point + 1 + size, b, size);
        rc = mbedtls_pk_setup(&k->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
        mbedtls_ecp_keypair *kp = rc == 0 ? mbedtls_pk_ec(k->pk) : NULL;
        if (rc == 0)
            rc = mbedtls_ecp_group_load(&kp->grp, gid);
        if (rc == 0)
            rc = mbedtls_ecp_point_read_binary(&kp->grp, &kp->Q, point, 1 + 2 * size);
        if (rc == 0)
            rc = mbedtls_ecp_check_pubkey(&kp->grp, &kp->Q);
        free(point);
        if (rc != 0) {
            set_err(err, errlen, "invalid EC key (x, y not a point of the curve)", rc);
            goto fail;
        }
        return k;
    }
    set_err(err, errlen, "unsupported key type (RSA, EC)", 0);
fail:
    sl_pkey_free(k);
    return NULL;
}

const char *sl_pkey_kind(const sl_pkey_t *k, int *bits)
{
    *bits = 0;
    if (mbedtls_pk_can_do(&k->pk, MBEDTLS_PK_RSA)) {
        *bits = (int)mbedtls_pk_get_bitlen(&k->pk);
        return "RSA";
    }
    if (mbedtls_pk_can_do(&k->pk, MBEDTLS_PK_ECKEY)) {
        *bits = (int)mbedtls_pk_get_bitlen(&k->pk);
        return "EC";
    }
    return "";
}

static int verify_ecdsa(sl_pkey_t *k, mbedtls_ecp_group_id want, size_t size, const unsigned char *hash,
                        size_t hlen, const uint8_t *sig, size_t siglen)
{
    mbedtls_ecp_keypair *kp = mbedtls_pk_ec(k->pk);
    mbedtls_mpi r, s;
    int rc;

    if (kp->grp.id != want)
        return -EINVAL;
    if (siglen != 2 * size)
        return -EBADMSG;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    rc = mbedtls_mpi_read_binary(&r, sig, size);
    if (rc == 0)
        rc = mbedtls_mpi_read_binary(&s, sig + size, size);
    if (rc == 0)
        rc = mbedtls_ecdsa_verify(&kp->grp, hash, hlen, &kp->Q, &r, &s);
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    return rc == 0 ? 0 : -EBADMSG;
}

int sl_pkey_verify(sl_pkey_t *k, const char *alg, const uint8_t *msg, size_t len, const uint8_t *sig,
                   size_t siglen)
{
    mbedtls_md_type_t md;
    unsigned char hash[MBEDTLS_MD_MAX_SIZE];
    int rsa, ec_size = 0;
    mbedtls_ecp_group_id gid = MBEDTLS_ECP_DP_NONE;

    if (k == NULL || alg == NULL || strlen(alg) != 5)
        return -EINVAL;
    if (strcmp(alg, "RS256") == 0)
        md = MBEDTLS_MD_SHA256, rsa = 1;
    else if (strcmp(alg, "RS384") == 0)
        md = MBEDTLS_MD_SHA384, rsa = 1;
    else if (strcmp(alg, "RS512") == 0)
        md = MBEDTLS_MD_SHA512, rsa = 1;
    else if (strcmp(alg, "ES256") == 0)
        md = MBEDTLS_MD_SHA256, rsa = 0, gid = MBEDTLS_ECP_DP_SECP256R1, ec_size = 32;
    else if (strcmp(alg, "ES384") == 0)
        md = MBEDTLS_MD_SHA384, rsa = 0, gid = MBEDTLS_ECP_DP_SECP384R1, ec_size = 48;
    else
        return -EINVAL;
    if (rsa ? !mbedtls_pk_can_do(&k->pk, MBEDTLS_PK_RSA) : !mbedtls_pk_can_do(&k->pk, MBEDTLS_PK_ECKEY))
        return -EINVAL;
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(md);
    if (info == NULL || mbedtls_md(info, msg, len, hash) != 0)
        return -EINVAL;
    size_t hlen = mbedtls_md_get_size(info);
    if (!rsa)
        return verify_ecdsa(k, gid, (size_t)ec_size, hash, hlen, sig, siglen);
    if (siglen != mbedtls_pk_get_len(&k->pk))
        return -EBADMSG;
    return mbedtls_pk_verify(&k->pk, md, hash, hlen, sig, siglen) == 0 ? 0 : -EBADMSG;
}
