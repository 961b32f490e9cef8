/* secagg_internal: what the files of the secure-aggregation module share (not a public header;
 * only crypto/secagg_*.c include it). The module, by file:
 *   secagg_wire.c    message buffers and the 16-byte header codec
 *   secagg_graph.c   parameters, defaults, the round context and the SecAgg+ neighbour graph
 *   secagg_mask.c    pair-key agreement and the masking kernel (secagg_prg_apply)
 *   secagg_client.c  the client's phases
 *   secagg_server.c  the server's phases and the final unmasking
 *   secagg_encode.c  fixed-point encoding of float vectors into the ring
 *   secagg_params.c  SecAgg+ k and t_nb from the dropout and corruption rates, their bounds
 * The public API stays crypto/secagg.h. */
#ifndef FEDNAS_CRYPTO_SECAGG_INTERNAL_H
#define FEDNAS_CRYPTO_SECAGG_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "crypto/secagg.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define SECAGG_BIG_ENDIAN 1
#else
#define SECAGG_BIG_ENDIAN 0
#endif

#define SECAGG_VERSION 1
#define KEY SECAGG_KEY_LEN
#define ADVERT_ENTRY (4 + 2 * KEY)
#define SHARE_ENTRY (4 + SECAGG_NONCE_LEN + SECAGG_CT_LEN)
#define UNMASK_ENTRY (4 + 4 + SHAMIR_SHARE_LEN)
/* Pair-key contexts (16 bytes with the NUL): one key pair encrypts shares, the other masks. */
#define SECAGG_CTX_C "fednas-secagg-c"
#define SECAGG_CTX_S "fednas-secagg-s"

/* ---- little-endian helpers (the wire is little-endian whatever the host) ---- */
static inline void secagg_put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void secagg_put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t secagg_get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t secagg_get64(const uint8_t *p)
{
    return (uint64_t)secagg_get32(p) | (uint64_t)secagg_get32(p + 4) << 32;
}

/* ---- the codec (secagg_wire.c) ---- */
/* Allocates len bytes into b (aborts on out-of-memory, as FN_MALLOC). */
uint8_t *secagg_buf_alloc(secagg_buf_t *b, size_t len);
/* Writes the header at p; returns where the body starts. */
uint8_t *secagg_put_header(uint8_t *p, int type, uint32_t sender, uint64_t round);
const char *secagg_type_name(int type);
/* Checks length, type, version and round; gives the sender. FN_EPROTO otherwise. */
int secagg_get_header(const uint8_t *msg, size_t len, int type, uint64_t round, uint32_t *sender, err_t *err);

/* ---- the round context (secagg_graph.c) ---- */
typedef struct secagg_ctx {
    uint64_t round;
    uint32_t n, t, thr, m, bits, half; /* thr: Shamir threshold; half: k/2, 0 = complete graph */
    uint32_t mask;                     /* 2^bits - 1 */
    uint32_t *ids;                     /* sorted */
    uint32_t *pos;                     /* ring position of each index (SecAgg+) */
    uint32_t *at;                      /* index at each ring position (SecAgg+) */
} secagg_ctx_t;

/* Resolves defaults and validates p; fills c when given (free it with secagg_ctx_free). */
int secagg_ctx_resolve(const secagg_params_t *p, secagg_ctx_t *c, err_t *err);
void secagg_ctx_free(secagg_ctx_t *c);
/* Index of id in the sorted ids, or -1. */
int64_t secagg_ctx_index(const secagg_ctx_t *c, uint32_t id);
/* Whether indices i and j are neighbours (always, i != j, in full SecAgg). */
int secagg_ctx_is_nbr(const secagg_ctx_t *c, uint32_t i, uint32_t j);

/* ---- pair keys (secagg_mask.c) ---- */
/* Symmetric pair key from my secret and the peer's public key; -1 for a low-order peer key. */
int secagg_agree(const char *context, uint64_t round, const uint8_t *my_sk, uint32_t my_id, const uint8_t *my_pk,
                 uint32_t peer_id, const uint8_t *peer_pk, uint8_t out[KEY]);

#endif
