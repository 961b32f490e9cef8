/* secagg_mask.c: pair keys and the masking kernel. secagg_agree turns an X25519 agreement into
 * a symmetric per-round, per-pair key; secagg_prg_apply adds or subtracts ChaCha20 keystreams
 * (the masks) to a vector in the ring, chunk by chunk so it runs at memory speed. Used by the
 * client to mask and by the server to remove the masks of dropped clients and self masks. */
#include "crypto/secagg_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#define PRG_CHUNK 2048 /* words per keystream block: output chunk + keystream stay in L1 */

/* Symmetric pair key: BLAKE2b over context, round, the X25519 point and both public keys,
 * the smaller id's key first. -1 when the peer key is a low-order point. */
int secagg_agree(const char *context, uint64_t round, const uint8_t *my_sk, uint32_t my_id, const uint8_t *my_pk,
                 uint32_t peer_id, const uint8_t *peer_pk, uint8_t out[KEY])
{
    uint8_t q[crypto_scalarmult_BYTES], r[8];
    if (crypto_scalarmult(q, my_sk, peer_pk) != 0)
        return -1;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, KEY);
    crypto_generichash_update(&st, (const uint8_t *)context, 16);
    secagg_put64(r, round);
    crypto_generichash_update(&st, r, 8);
    crypto_generichash_update(&st, q, sizeof q);
    crypto_generichash_update(&st, my_id < peer_id ? my_pk : peer_pk, KEY);
    crypto_generichash_update(&st, my_id < peer_id ? peer_pk : my_pk, KEY);
    crypto_generichash_final(&st, out, KEY);
    sodium_memzero(q, sizeof q);
    sodium_memzero(&st, sizeof st);
    return 0;
}


/* Fixed-length, non-aliasing loops so the compiler vectorises them at any optimisation level. */
static void add_chunk(uint32_t *restrict y, const uint32_t *restrict k)
{
    for (size_t i = 0; i < PRG_CHUNK; i++)
        y[i] += k[i];
}
static void sub_chunk(uint32_t *restrict y, const uint32_t *restrict k)
{
    for (size_t i = 0; i < PRG_CHUNK; i++)
        y[i] -= k[i];
}

/* y += sign_j * PRG(key_j) for every key, mod 2^32, chunk by chunk so the output chunk and the
 * keystream stay in L1 while all the streams pass over them. */
void secagg_prg_apply(uint32_t *y, size_t m, const uint8_t *keys, const int8_t *sign, size_t nkeys)
{
    static const uint8_t zero[PRG_CHUNK * 4];
    static const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES];
    uint32_t ks[PRG_CHUNK] __attribute__((aligned(64)));
    for (size_t off = 0; off < m; off += PRG_CHUNK) {
        size_t len = m - off < PRG_CHUNK ? m - off : PRG_CHUNK;
        uint32_t *yc = y + off;
        for (size_t j = 0; j < nkeys; j++) {
            crypto_stream_chacha20_ietf_xor_ic((uint8_t *)ks, zero, len * 4, nonce, (uint32_t)(off / 16),
                                               keys + j * KEY);
#if SECAGG_BIG_ENDIAN
            for (size_t i = 0; i < len; i++)
                ks[i] = __builtin_bswap32(ks[i]);
#endif
            if (len == PRG_CHUNK)
                (sign[j] > 0 ? add_chunk : sub_chunk)(yc, ks);
            else if (sign[j] > 0)
                for (size_t i = 0; i < len; i++)
                    yc[i] += ks[i];
            else
                for (size_t i = 0; i < len; i++)
                    yc[i] -= ks[i];
        }
    }
    sodium_memzero(ks, sizeof ks);
}
