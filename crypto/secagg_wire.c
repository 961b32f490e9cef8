/* secagg_wire.c: the codec shared by the secure-aggregation client and server: message
 * buffers, the 16-byte header every message starts with (type, version, sender, round; see
 * secagg.h "Wire formats"), and its checked parse. The bodies are built and parsed where each
 * phase is handled (secagg_client.c, secagg_server.c), with the little-endian helpers of
 * secagg_internal.h. */
#include "crypto/secagg_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

void secagg_buf_free(secagg_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

uint8_t *secagg_buf_alloc(secagg_buf_t *b, size_t len)
{
    b->data = FN_MALLOC(len);
    b->len = len;
    return b->data;
}

uint8_t *secagg_put_header(uint8_t *p, int type, uint32_t sender, uint64_t round)
{
    p[0] = (uint8_t)type;
    p[1] = SECAGG_VERSION;
    p[2] = p[3] = 0;
    secagg_put32(p + 4, sender);
    secagg_put64(p + 8, round);
    return p + SECAGG_HEADER_LEN;
}

const char *secagg_type_name(int type)
{
    static const char *names[] = {"?", "ADVERT", "ADVERT_LIST", "SHARES", "RELAY", "MASKED", "UNMASK_REQ", "UNMASK",
                                  "ACCUSE"};
    return type >= 1 && type <= 8 ? names[type] : "?";
}

int secagg_get_header(const uint8_t *msg, size_t len, int type, uint64_t round, uint32_t *sender, err_t *err)
{
    if (!msg || len < SECAGG_HEADER_LEN)
        return err_set(err, FN_EPROTO, "secagg: %s message of %zu bytes is shorter than its header",
                       secagg_type_name(type), len);
    if (msg[0] != type)
        return err_set(err, FN_EPROTO, "secagg: expected a %s message, got type %u", secagg_type_name(type), msg[0]);
    if (msg[1] != SECAGG_VERSION || msg[2] || msg[3])
        return err_set(err, FN_EPROTO, "secagg: %s message has version %u (expected %d)", secagg_type_name(type),
                       msg[1], SECAGG_VERSION);
    if (secagg_get64(msg + 8) != round)
        return err_set(err, FN_EPROTO, "secagg: %s message is for round %llu, this is round %llu",
                       secagg_type_name(type), (unsigned long long)secagg_get64(msg + 8), (unsigned long long)round);
    *sender = secagg_get32(msg + 4);
    return 0;
}

int secagg_accusation_read(const uint8_t *msg, size_t len, uint64_t round, uint32_t *sender, uint32_t *ids,
                           uint32_t max, uint32_t *count, err_t *err)
{
    int rc = secagg_get_header(msg, len, SECAGG_MSG_ACCUSE, round, sender, err);
    if (rc)
        return rc;
    if (len < SECAGG_HEADER_LEN + 4)
        return err_set(err, FN_EPROTO, "secagg: ACCUSE has no count");
    uint32_t k = secagg_get32(msg + SECAGG_HEADER_LEN);
    if (k == 0 || k > max || len != SECAGG_HEADER_LEN + 4 + (size_t)k * 4)
        return err_set(err, FN_EPROTO, "secagg: ACCUSE of %zu bytes naming %u clients (1 to %u allowed)", len, k, max);
    for (uint32_t i = 0; i < k; i++) {
        ids[i] = secagg_get32(msg + SECAGG_HEADER_LEN + 4 + 4 * (size_t)i);
        if (ids[i] == 0 || ids[i] == *sender || (i && ids[i] <= ids[i - 1]))
            return err_set(err, FN_EPROTO, "secagg: ACCUSE ids must be ascending, distinct, not 0 nor the sender");
    }
    *count = k;
    return 0;
}
