/* shamir: t-of-n Shamir secret sharing of 32-byte secrets (keys, seeds) for secure aggregation.
 * Field: the Mersenne prime p = 2^61 - 1. A secret is cut into SHAMIR_WORDS field elements
 * (four 7-byte chunks and one 4-byte chunk, little-endian), each shared with the same points.
 * Evaluation points are client ids (>= 1, never 0); the secret is the polynomial at 0.
 *
 * Side channels: every operation on secret values (share generation, interpolation) is
 * branch-free and table-free: 64x64->128-bit multiplication, Mersenne folding and masked
 * conditional subtraction. Inverses (Fermat, x^(p-2)) are only taken of differences of public
 * evaluation points, with a public exponent. Scratch holding secrets lives in sodium_malloc
 * memory and is wiped.
 *
 * Detection: shamir_combine interpolates from the first t shares, then checks every extra share
 * lies on the same polynomial, so any altered share is caught when more than t are given. With
 * exactly t shares nothing can be checked (every t points fit some polynomial); the result is
 * then only checked to be a well-formed secret (each element fits its chunk), which catches gross
 * alterations but not small ones. secagg adds a public-key check for rebuilt mask keys. */
#ifndef FEDNAS_CRYPTO_SHAMIR_H
#define FEDNAS_CRYPTO_SHAMIR_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SHAMIR_P 0x1FFFFFFFFFFFFFFFULL /* 2^61 - 1 */
#define SHAMIR_SECRET_LEN 32
#define SHAMIR_WORDS 5
#define SHAMIR_SHARE_LEN (SHAMIR_WORDS * 8) /* serialised y values (x travels separately) */

typedef struct shamir_share {
    uint32_t x;                 /* evaluation point: the holder's client id, >= 1 */
    uint64_t y[SHAMIR_WORDS];   /* each < SHAMIR_P */
} shamir_share_t;

/* Splits secret into n shares at the distinct non-zero points xs[0..n) with threshold t
 * (1 <= t <= n). Random coefficients come from libsodium. */
int shamir_split(const uint8_t secret[SHAMIR_SECRET_LEN], uint32_t t, const uint32_t *xs, size_t n,
                 shamir_share_t *out, err_t *err);

/* Reconstructs from count >= t shares (distinct non-zero x, y < p). FN_EINVAL when count < t or
 * the points are bad; FN_EPROTO when the shares are inconsistent or the result is not a
 * well-formed secret (tampering). The secret is written only on success. */
int shamir_combine(const shamir_share_t *shares, size_t count, uint32_t t, uint8_t secret[SHAMIR_SECRET_LEN],
                   err_t *err);

/* Field arithmetic mod p on canonical values (< p), constant time; exposed for tests. */
uint64_t shamir_add(uint64_t a, uint64_t b);
uint64_t shamir_sub(uint64_t a, uint64_t b);
uint64_t shamir_mul(uint64_t a, uint64_t b);
/* a^(p-2): the inverse of a non-zero a (0 maps to 0). */
uint64_t shamir_inv(uint64_t a);

/* Serialises the y values little-endian (SHAMIR_SHARE_LEN bytes) and back; shamir_load rejects
 * values >= p with FN_EPROTO. */
void shamir_store(const shamir_share_t *s, uint8_t out[SHAMIR_SHARE_LEN]);
int shamir_load(shamir_share_t *s, uint32_t x, const uint8_t in[SHAMIR_SHARE_LEN], err_t *err);

#endif
