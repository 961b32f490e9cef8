/* secagg_client.c: one client's side of a secure-aggregation round (secagg.h "Round flow"):
 * make the round's key pairs and ADVERT, encrypt Shamir shares of s_sk and b for each
 * neighbour, mask the encoded input with the pairwise and self masks, and answer the single
 * unmasking request. Secrets live in sodium_malloc memory; any bad input aborts the client,
 * which then reveals nothing more. */
#include "crypto/secagg_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

enum { C_ADVERTISED = 1, C_SHARED, C_MASKED, C_DONE, C_ABORTED };

typedef struct client_secrets {
    uint8_t c_sk[KEY], s_sk[KEY], b[KEY];
} client_secrets_t;

struct secagg_client {
    secagg_ctx_t ctx;
    uint32_t me, my_id;
    int state;
    client_secrets_t *sec; /* sodium_malloc */
    uint8_t c_pk[KEY], s_pk[KEY];
    uint8_t *peer_c_pk, *peer_s_pk; /* n x KEY, valid where in_u1 */
    uint8_t *in_u1;
    uint32_t *nb, n_nb;  /* neighbours in U1 (indices, ascending id) */
    uint8_t *aead_keys;  /* n_nb x KEY, sodium_malloc */
    uint64_t *held;      /* n x 2 x SHAMIR_WORDS: shares of s_sk and b held for each owner; sodium_malloc */
    uint8_t *have;       /* n flags: owner's shares are held (its ciphertext arrived, or self) */
    uint32_t *accused, n_accused; /* senders whose ciphertexts failed to authenticate (public) */
};

uint32_t secagg_client_id(const secagg_client_t *c) { return c ? c->my_id : 0; }

void secagg_client_free(secagg_client_t *c)
{
    if (!c)
        return;
    if (c->sec)
        sodium_free(c->sec);
    if (c->aead_keys)
        sodium_free(c->aead_keys);
    if (c->held)
        sodium_free(c->held);
    free(c->peer_c_pk);
    free(c->peer_s_pk);
    free(c->in_u1);
    free(c->nb);
    free(c->have);
    free(c->accused);
    secagg_ctx_free(&c->ctx);
    free(c);
}

static int client_abort(secagg_client_t *c, int rc)
{
    c->state = C_ABORTED;
    if (c->held)
        sodium_memzero(c->held, (size_t)c->ctx.n * 2 * SHAMIR_WORDS * sizeof *c->held);
    return rc;
}

int secagg_client_new(const secagg_params_t *p, uint32_t my_id, secagg_client_t **out_client, secagg_buf_t *advert,
                      err_t *err)
{
    *out_client = NULL;
    if (sodium_init() < 0)
        return err_set(err, FN_EIO, "libsodium failed to initialise");
    secagg_client_t *c = FN_CALLOC(1, sizeof *c);
    int rc = secagg_ctx_resolve(p, &c->ctx, err);
    if (rc) {
        free(c);
        return rc;
    }
    int64_t me = secagg_ctx_index(&c->ctx, my_id);
    if (me < 0) {
        secagg_ctx_free(&c->ctx);
        free(c);
        return err_set(err, FN_EINVAL, "secagg: client %u is not among the selected ids", my_id);
    }
    c->me = (uint32_t)me;
    c->my_id = my_id;
    size_t n = c->ctx.n;
    c->sec = sodium_malloc(sizeof *c->sec);
    c->held = sodium_malloc(n * 2 * SHAMIR_WORDS * sizeof *c->held);
    if (!c->sec || !c->held) {
        secagg_client_free(c);
        return err_set(err, FN_ENOMEM, "secagg: out of secure memory");
    }
    sodium_memzero(c->held, n * 2 * SHAMIR_WORDS * sizeof *c->held);
    crypto_box_keypair(c->c_pk, c->sec->c_sk);
    crypto_box_keypair(c->s_pk, c->sec->s_sk);
    randombytes_buf(c->sec->b, KEY);
    c->peer_c_pk = FN_CALLOC(n, KEY);
    c->peer_s_pk = FN_CALLOC(n, KEY);
    c->in_u1 = FN_CALLOC(n, 1);
    c->have = FN_CALLOC(n, 1);
    c->nb = FN_MALLOC(n * sizeof *c->nb);
    uint8_t *q = secagg_put_header(secagg_buf_alloc(advert, SECAGG_HEADER_LEN + 2 * KEY), SECAGG_MSG_ADVERT, my_id,
                                   c->ctx.round);
    memcpy(q, c->c_pk, KEY);
    memcpy(q + KEY, c->s_pk, KEY);
    c->state = C_ADVERTISED;
    *out_client = c;
    return 0;
}

static uint64_t *held_s(secagg_client_t *c, uint32_t i) { return c->held + (size_t)i * 2 * SHAMIR_WORDS; }
static uint64_t *held_b(secagg_client_t *c, uint32_t i) { return held_s(c, i) + SHAMIR_WORDS; }

int secagg_client_share_keys(secagg_client_t *c, const uint8_t *msg, size_t len, secagg_buf_t *out, err_t *err)
{
    if (!c || c->state != C_ADVERTISED)
        return err_set(err, FN_ESTATE, "secagg: share_keys called out of order");
    const secagg_ctx_t *x = &c->ctx;
    uint32_t sender;
    int rc = secagg_get_header(msg, len, SECAGG_MSG_ADVERT_LIST, x->round, &sender, err);
    if (rc)
        return client_abort(c, rc);
    if (len < SECAGG_HEADER_LEN + 4)
        return client_abort(c, err_set(err, FN_EPROTO, "secagg: ADVERT_LIST has no count"));
    uint32_t count = secagg_get32(msg + SECAGG_HEADER_LEN);
    if (count > x->n || len != SECAGG_HEADER_LEN + 4 + (size_t)count * ADVERT_ENTRY)
        return client_abort(c, err_set(err, FN_EPROTO, "secagg: ADVERT_LIST of %zu bytes does not hold %u entries",
                                       len, count));
    const uint8_t *e = msg + SECAGG_HEADER_LEN + 4;
    int saw_me = 0;
    for (uint32_t i = 0; i < count; i++, e += ADVERT_ENTRY) {
        uint32_t id = secagg_get32(e);
        int64_t j = secagg_ctx_index(x, id);
        if (j < 0 || c->in_u1[j])
            return client_abort(c, err_set(err, FN_EPROTO, "secagg: ADVERT_LIST names client %u %s", id,
                                           j < 0 ? "who was not selected" : "twice"));
        c->in_u1[j] = 1;
        memcpy(c->peer_c_pk + (size_t)j * KEY, e + 4, KEY);
        memcpy(c->peer_s_pk + (size_t)j * KEY, e + 4 + KEY, KEY);
        if ((uint32_t)j == c->me) {
            if (sodium_memcmp(e + 4, c->c_pk, KEY) || sodium_memcmp(e + 4 + KEY, c->s_pk, KEY))
                return client_abort(c,
                                    err_set(err, FN_EPROTO, "secagg: ADVERT_LIST carries wrong keys for this client"));
            saw_me = 1;
        }
    }
    if (!saw_me)
        return client_abort(c, err_set(err, FN_EPROTO, "secagg: ADVERT_LIST does not include this client"));
    /* a SecAgg+ client may be sent only its neighbourhood (secagg_server_advert_list_for), so
     * it can check the neighbourhood threshold only; the server enforces t on U1 */
    uint32_t need = x->half ? x->thr : x->t;
    if (count < need)
        return client_abort(c, err_set(err, FN_ESTATE, "secagg: only %u clients advertised keys, below %u", count,
                                       need));
    c->n_nb = 0;
    for (uint32_t j = 0; j < x->n; j++)
        if (c->in_u1[j] && secagg_ctx_is_nbr(x, c->me, j))
            c->nb[c->n_nb++] = j;
    uint32_t nh = c->n_nb + 1;
    if (nh < x->thr)
        return client_abort(c, err_set(err, FN_ESTATE,
                                       "secagg: %u of this client's neighbours advertised keys, below the threshold %u",
                                       c->n_nb, x->thr));
    /* holders: the neighbours, then this client */
    uint32_t *xs = FN_MALLOC((size_t)nh * sizeof *xs);
    for (uint32_t i = 0; i < c->n_nb; i++)
        xs[i] = x->ids[c->nb[i]];
    xs[c->n_nb] = c->my_id;
    shamir_share_t *sh = sodium_malloc(2 * (size_t)nh * sizeof *sh);
    uint8_t *pt = sodium_malloc(SECAGG_PT_LEN);
    c->aead_keys = sodium_malloc((size_t)(c->n_nb ? c->n_nb : 1) * KEY);
    if (!sh || !pt || !c->aead_keys) {
        rc = err_set(err, FN_ENOMEM, "secagg: out of secure memory");
        goto fail;
    }
    if ((rc = shamir_split(c->sec->s_sk, x->thr, xs, nh, sh, err)) ||
        (rc = shamir_split(c->sec->b, x->thr, xs, nh, sh + nh, err)))
        goto fail;
    uint8_t *q = secagg_put_header(secagg_buf_alloc(out, SECAGG_HEADER_LEN + 4 + (size_t)c->n_nb * SHARE_ENTRY),
                                   SECAGG_MSG_SHARES, c->my_id, x->round);
    secagg_put32(q, c->n_nb);
    q += 4;
    for (uint32_t i = 0; i < c->n_nb; i++, q += SHARE_ENTRY) {
        uint32_t j = c->nb[i], to = x->ids[j];
        uint8_t *key = c->aead_keys + (size_t)i * KEY, ad[16];
        if (secagg_agree(SECAGG_CTX_C, x->round, c->sec->c_sk, c->my_id, c->c_pk, to, c->peer_c_pk + (size_t)j * KEY,
                         key)) {
            secagg_buf_free(out);
            rc = err_set(err, FN_EPROTO, "secagg: client %u advertised an invalid public key", to);
            goto fail;
        }
        secagg_put32(pt, c->my_id);
        secagg_put32(pt + 4, to);
        secagg_put64(pt + 8, x->round);
        shamir_store(&sh[i], pt + 16);
        shamir_store(&sh[nh + i], pt + 16 + SHAMIR_SHARE_LEN);
        memcpy(ad, pt, 16);
        secagg_put32(q, to);
        randombytes_buf(q + 4, SECAGG_NONCE_LEN);
        crypto_aead_xchacha20poly1305_ietf_encrypt(q + 4 + SECAGG_NONCE_LEN, NULL, pt, SECAGG_PT_LEN, ad, sizeof ad,
                                                   NULL, q + 4, key);
    }
    memcpy(held_s(c, c->me), sh[c->n_nb].y, sizeof sh[0].y);
    memcpy(held_b(c, c->me), sh[nh + c->n_nb].y, sizeof sh[0].y);
    c->have[c->me] = 1;
    c->state = C_SHARED;
    free(xs);
    sodium_free(sh);
    sodium_free(pt);
    return 0;
fail:
    free(xs);
    if (sh)
        sodium_free(sh);
    if (pt)
        sodium_free(pt);
    return client_abort(c, rc);
}

/* Position of index j in the neighbour list, or -1. */
static int64_t nb_pos(const secagg_client_t *c, uint32_t j)
{
    uint32_t lo = 0, hi = c->n_nb;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->nb[mid] < j)
            lo = mid + 1;
        else if (c->nb[mid] > j)
            hi = mid;
        else
            return mid;
    }
    return -1;
}

int secagg_client_masked_input(secagg_client_t *c, const uint8_t *msg, size_t len, const uint32_t *xin,
                               secagg_buf_t *out, err_t *err)
{
    if (!c || c->state != C_SHARED)
        return err_set(err, FN_ESTATE, "secagg: masked_input called out of order");
    const secagg_ctx_t *x = &c->ctx;
    if (!xin)
        return err_set(err, FN_EINVAL, "secagg: no input vector");
    if (x->bits < 32)
        for (uint32_t i = 0; i < x->m; i++)
            if (xin[i] > x->mask)
                return err_set(err, FN_EINVAL, "secagg: input value %u at %u is outside Z_2^%u", xin[i], i, x->bits);
    uint32_t sender;
    int rc = secagg_get_header(msg, len, SECAGG_MSG_RELAY, x->round, &sender, err);
    if (rc)
        return client_abort(c, rc);
    if (len < SECAGG_HEADER_LEN + 8)
        return client_abort(c, err_set(err, FN_EPROTO, "secagg: RELAY is truncated"));
    uint32_t to = secagg_get32(msg + SECAGG_HEADER_LEN), count = secagg_get32(msg + SECAGG_HEADER_LEN + 4);
    if (to != c->my_id)
        return client_abort(c, err_set(err, FN_EPROTO, "secagg: RELAY addressed to client %u", to));
    if (count > c->n_nb || len != SECAGG_HEADER_LEN + 8 + (size_t)count * SHARE_ENTRY)
        return client_abort(c, err_set(err, FN_EPROTO, "secagg: RELAY of %zu bytes does not hold %u ciphertexts",
                                       len, count));
    if (count + 1 < x->thr)
        return client_abort(c, err_set(err, FN_ESTATE,
                                       "secagg: shares from %u neighbours arrived, below the threshold %u", count + 1,
                                       x->thr));
    uint8_t *pt = sodium_malloc(SECAGG_PT_LEN);
    uint8_t *keys = sodium_malloc(((size_t)count + 1) * KEY);
    int8_t *sign = FN_MALLOC((size_t)count + 1);
    uint32_t nk = 0;
    if (!pt || !keys) {
        rc = err_set(err, FN_ENOMEM, "secagg: out of secure memory");
        goto done;
    }
    memcpy(keys, c->sec->b, KEY);
    sign[nk++] = 1;
    const uint8_t *e = msg + SECAGG_HEADER_LEN + 8;
    for (uint32_t i = 0; i < count; i++, e += SHARE_ENTRY) {
        uint32_t from = secagg_get32(e);
        int64_t j = secagg_ctx_index(x, from), p = j < 0 ? -1 : nb_pos(c, (uint32_t)j);
        if (p < 0 || c->have[j]) {
            rc = err_set(err, FN_EPROTO, "secagg: RELAY carries a ciphertext from client %u, %s", from,
                         p < 0 ? "not a neighbour in U1" : "twice");
            goto done;
        }
        uint8_t ad[16];
        secagg_put32(ad, from);
        secagg_put32(ad + 4, c->my_id);
        secagg_put64(ad + 8, x->round);
        unsigned long long ptlen;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &ptlen, NULL, e + 4 + SECAGG_NONCE_LEN, SECAGG_CT_LEN, ad,
                                                       sizeof ad, e + 4, c->aead_keys + (size_t)p * KEY) != 0 ||
            ptlen != SECAGG_PT_LEN || sodium_memcmp(pt, ad, 16) != 0) {
            /* Go on reading the others: every sender of a bad ciphertext is reported. */
            if (!c->accused)
                c->accused = FN_MALLOC((size_t)count * sizeof *c->accused);
            c->accused[c->n_accused++] = from;
            continue;
        }
        shamir_share_t s;
        if ((rc = shamir_load(&s, c->my_id, pt + 16, err)))
            goto done;
        memcpy(held_s(c, (uint32_t)j), s.y, sizeof s.y);
        if ((rc = shamir_load(&s, c->my_id, pt + 16 + SHAMIR_SHARE_LEN, err)))
            goto done;
        memcpy(held_b(c, (uint32_t)j), s.y, sizeof s.y);
        sodium_memzero(&s, sizeof s);
        c->have[j] = 1;
        if (secagg_agree(SECAGG_CTX_S, x->round, c->sec->s_sk, c->my_id, c->s_pk, from, c->peer_s_pk + (size_t)j * KEY,
                         keys + (size_t)nk * KEY)) {
            rc = err_set(err, FN_EPROTO, "secagg: client %u advertised an invalid mask key", from);
            goto done;
        }
        sign[nk++] = c->my_id > from ? 1 : -1;
    }
    if (c->n_accused) {
        qsort(c->accused, c->n_accused, sizeof *c->accused, fn_cmp_u32); /* ACCUSE lists ids ascending */
        rc = err_set(err, FN_EAUTH, "secagg: the ciphertexts from %u client%s (client %u first) failed to authenticate",
                     c->n_accused, c->n_accused > 1 ? "s" : "", c->accused[0]);
        goto done;
    }
    uint8_t *q = secagg_put_header(secagg_buf_alloc(out, SECAGG_HEADER_LEN + 8 + (size_t)x->m * 4), SECAGG_MSG_MASKED,
                                   c->my_id, x->round);
    secagg_put32(q, x->m);
    secagg_put32(q + 4, x->bits);
    uint32_t *y = (uint32_t *)(q + 8); /* malloc'd storage, 4-aligned at offset 24 */
    memcpy(y, xin, (size_t)x->m * 4);
    secagg_prg_apply(y, x->m, keys, sign, nk);
    for (uint32_t i = 0; i < x->m; i++) {
        uint32_t v = y[i] & x->mask;
#if SECAGG_BIG_ENDIAN
        v = __builtin_bswap32(v);
#endif
        y[i] = v;
    }
    c->state = C_MASKED;
done:
    if (pt)
        sodium_free(pt);
    if (keys)
        sodium_free(keys);
    free(sign);
    return rc ? client_abort(c, rc) : 0;
}

int secagg_client_accusation(const secagg_client_t *c, secagg_buf_t *out, err_t *err)
{
    if (!c || !c->n_accused)
        return err_set(err, FN_ESTATE, "secagg: no ciphertext failed to authenticate");
    uint8_t *q = secagg_put_header(secagg_buf_alloc(out, SECAGG_HEADER_LEN + 4 + (size_t)c->n_accused * 4),
                                   SECAGG_MSG_ACCUSE, c->my_id, c->ctx.round);
    secagg_put32(q, c->n_accused);
    for (uint32_t i = 0; i < c->n_accused; i++)
        secagg_put32(q + 4 + 4 * (size_t)i, c->accused[i]);
    return 0;
}

/* Parses an id list at *p of *left bytes into flags (1 + which); FN_EPROTO on a repeat, a
 * stranger or an id already flagged by the other list. */
static int parse_ids(const secagg_ctx_t *x, const uint8_t **p, size_t *left, uint8_t *flags, uint8_t which,
                     uint32_t *count, err_t *err)
{
    if (*left < 4)
        return err_set(err, FN_EPROTO, "secagg: UNMASK_REQ is truncated");
    uint32_t k = secagg_get32(*p);
    *p += 4;
    *left -= 4;
    if (k > x->n || *left < (size_t)k * 4)
        return err_set(err, FN_EPROTO, "secagg: UNMASK_REQ list of %u ids does not fit", k);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t id = secagg_get32(*p + 4 * (size_t)i);
        int64_t j = secagg_ctx_index(x, id);
        if (j < 0)
            return err_set(err, FN_EPROTO, "secagg: UNMASK_REQ names client %u who was not selected", id);
        if (flags[j])
            return err_set(err, FN_EPROTO,
                           flags[j] == which ? "secagg: UNMASK_REQ lists client %u twice"
                                             : "secagg: UNMASK_REQ asks for both shares of client %u; refusing",
                           id);
        flags[j] = which;
    }
    *p += (size_t)k * 4;
    *left -= (size_t)k * 4;
    *count = k;
    return 0;
}

int secagg_client_unmask(secagg_client_t *c, const uint8_t *msg, size_t len, secagg_buf_t *out, err_t *err)
{
    if (!c || c->state != C_MASKED)
        return err_set(err, FN_ESTATE, "secagg: unmask called out of order (a client answers one request per round)");
    const secagg_ctx_t *x = &c->ctx;
    uint32_t sender, n_surv, n_drop;
    int rc = secagg_get_header(msg, len, SECAGG_MSG_UNMASK_REQ, x->round, &sender, err);
    if (rc)
        return client_abort(c, rc);
    uint8_t *flags = FN_CALLOC(x->n, 1); /* 1 survivor, 2 dropped */
    const uint8_t *p = msg + SECAGG_HEADER_LEN;
    size_t left = len - SECAGG_HEADER_LEN;
    if ((rc = parse_ids(x, &p, &left, flags, 1, &n_surv, err)) ||
        (rc = parse_ids(x, &p, &left, flags, 2, &n_drop, err)))
        goto done;
    if (left) {
        rc = err_set(err, FN_EPROTO, "secagg: UNMASK_REQ has %zu trailing bytes", left);
        goto done;
    }
    if (flags[c->me] != 1) {
        rc = err_set(err, FN_EPROTO, "secagg: UNMASK_REQ does not list this client as a survivor; refusing");
        goto done;
    }
    if (n_surv < x->t) {
        rc = err_set(err, FN_ESTATE, "secagg: %u survivors, below t = %u; refusing to unmask", n_surv, x->t);
        goto done;
    }
    uint32_t held_surv = 0, n_out = 0;
    for (uint32_t j = 0; j < x->n; j++) {
        held_surv += c->have[j] && flags[j] == 1;
        n_out += c->have[j] && flags[j];
    }
    if (held_surv < x->thr) {
        rc = err_set(err, FN_ESTATE, "secagg: %u survivors in this client's neighbourhood, below the threshold %u",
                     held_surv, x->thr);
        goto done;
    }
    uint8_t *q = secagg_put_header(secagg_buf_alloc(out, SECAGG_HEADER_LEN + 4 + (size_t)n_out * UNMASK_ENTRY),
                                   SECAGG_MSG_UNMASK, c->my_id, x->round);
    secagg_put32(q, n_out);
    q += 4;
    for (uint32_t j = 0; j < x->n; j++) {
        if (!c->have[j] || !flags[j])
            continue;
        shamir_share_t s = {.x = c->my_id};
        memcpy(s.y, flags[j] == 1 ? held_b(c, j) : held_s(c, j), sizeof s.y);
        secagg_put32(q, x->ids[j]);
        secagg_put32(q + 4, flags[j] == 1 ? SECAGG_SHARE_SEED : SECAGG_SHARE_KEY);
        shamir_store(&s, q + 8);
        sodium_memzero(&s, sizeof s);
        q += UNMASK_ENTRY;
    }
    c->state = C_DONE;
    sodium_memzero(c->held, (size_t)x->n * 2 * SHAMIR_WORDS * sizeof *c->held);
    sodium_memzero(c->sec, sizeof *c->sec);
done:
    free(flags);
    return rc ? client_abort(c, rc) : 0;
}
