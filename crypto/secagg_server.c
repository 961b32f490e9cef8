/* secagg_server.c: the server's side of a secure-aggregation round: collect adverts, route
 * encrypted shares it cannot read, sum masked inputs, gather unmasking shares, rebuild the
 * secrets it needs (the survivors' self-mask seeds, the dropped clients' mask keys) and remove
 * the masks. Every phase function validates a whole message before changing any state, so a
 * malformed message is dropped without harm (FN_EPROTO). */
#include "crypto/secagg_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

enum { S_ADVERTS = 1, S_SHARES, S_MASKED, S_UNMASK, S_DONE, S_ABORTED };

struct secagg_server {
    secagg_ctx_t ctx;
    int state;
    uint8_t *c_pk, *s_pk;      /* n x KEY */
    uint8_t *u1, *u2, *u3, *u4; /* n flags: advertised, shared, masked, answered unmask */
    uint32_t *list[4], count[4]; /* U1, U2, U3 ids (sorted) after each close; [0] unused */
    uint8_t **entries;          /* per sender: its SHARES entries (ascending recipient) */
    uint32_t *n_entries;
    uint32_t *sum;              /* m */
    shamir_share_t **got;       /* per owner: shares gathered in the unmask phase */
    uint32_t *n_got;
};

int secagg_server_new(const secagg_params_t *p, secagg_server_t **out, err_t *err)
{
    *out = NULL;
    if (sodium_init() < 0)
        return err_set(err, FN_EIO, "libsodium failed to initialise");
    secagg_server_t *s = FN_CALLOC(1, sizeof *s);
    int rc = secagg_ctx_resolve(p, &s->ctx, err);
    if (rc) {
        free(s);
        return rc;
    }
    size_t n = s->ctx.n;
    s->c_pk = FN_CALLOC(n, KEY);
    s->s_pk = FN_CALLOC(n, KEY);
    s->u1 = FN_CALLOC(n, 1);
    s->u2 = FN_CALLOC(n, 1);
    s->u3 = FN_CALLOC(n, 1);
    s->u4 = FN_CALLOC(n, 1);
    s->entries = FN_CALLOC(n, sizeof *s->entries);
    s->n_entries = FN_CALLOC(n, sizeof *s->n_entries);
    s->got = FN_CALLOC(n, sizeof *s->got);
    s->n_got = FN_CALLOC(n, sizeof *s->n_got);
    s->sum = FN_CALLOC(s->ctx.m, sizeof *s->sum);
    s->state = S_ADVERTS;
    *out = s;
    return 0;
}

void secagg_server_free(secagg_server_t *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->ctx.n; i++) {
        free(s->entries[i]);
        if (s->got[i]) {
            sodium_memzero(s->got[i], (size_t)s->n_got[i] * sizeof **s->got);
            free(s->got[i]);
        }
    }
    for (int k = 1; k < 4; k++)
        free(s->list[k]);
    free(s->c_pk);
    free(s->s_pk);
    free(s->u1);
    free(s->u2);
    free(s->u3);
    free(s->u4);
    free(s->entries);
    free(s->n_entries);
    free(s->got);
    free(s->n_got);
    free(s->sum);
    secagg_ctx_free(&s->ctx);
    free(s);
}

uint32_t secagg_server_survivors(const secagg_server_t *s, int phase, const uint32_t **ids)
{
    if (!s || phase < 1 || phase > 3) {
        if (ids)
            *ids = NULL;
        return 0;
    }
    if (ids)
        *ids = s->list[phase];
    return s->count[phase];
}

static void make_list(secagg_server_t *s, int phase, const uint8_t *flags)
{
    free(s->list[phase]);
    s->list[phase] = FN_MALLOC((size_t)s->ctx.n * sizeof(uint32_t));
    s->count[phase] = 0;
    for (uint32_t i = 0; i < s->ctx.n; i++)
        if (flags[i])
            s->list[phase][s->count[phase]++] = s->ctx.ids[i];
}

/* Sender of a client message: a selected id at the right phase, once. */
static int sender_idx(secagg_server_t *s, const uint8_t *msg, size_t len, int type, int state, const uint8_t *allowed,
                      const uint8_t *done, uint32_t *idx, err_t *err)
{
    *idx = 0; /* defined on every path: the compiler cannot see that err_set never returns 0 */
    if (s->state != state)
        return err_set(err, FN_ESTATE, "secagg: a %s message arrived outside its phase", secagg_type_name(type));
    uint32_t id;
    int rc = secagg_get_header(msg, len, type, s->ctx.round, &id, err);
    if (rc)
        return rc;
    int64_t i = secagg_ctx_index(&s->ctx, id);
    if (i < 0 || (allowed && !allowed[i]))
        return err_set(err, FN_EPROTO, "secagg: %s from client %u, %s", secagg_type_name(type), id,
                       i < 0 ? "who was not selected" : "who dropped in an earlier phase");
    if (done[i])
        return err_set(err, FN_EPROTO, "secagg: a second %s from client %u", secagg_type_name(type), id);
    *idx = (uint32_t)i;
    return 0;
}

int secagg_server_add_advert(secagg_server_t *s, const uint8_t *msg, size_t len, err_t *err)
{
    uint32_t i;
    int rc = sender_idx(s, msg, len, SECAGG_MSG_ADVERT, S_ADVERTS, NULL, s->u1, &i, err);
    if (rc)
        return rc;
    if (len != SECAGG_HEADER_LEN + 2 * KEY)
        return err_set(err, FN_EPROTO, "secagg: ADVERT of %zu bytes (expected %d)", len, SECAGG_HEADER_LEN + 2 * KEY);
    memcpy(s->c_pk + (size_t)i * KEY, msg + SECAGG_HEADER_LEN, KEY);
    memcpy(s->s_pk + (size_t)i * KEY, msg + SECAGG_HEADER_LEN + KEY, KEY);
    s->u1[i] = 1;
    return 0;
}

static int server_abort(secagg_server_t *s, err_t *err, const char *phase, uint32_t have, uint32_t need)
{
    s->state = S_ABORTED;
    return err_set(err, FN_ESTATE, "secagg: round %llu aborted: %u clients %s, below t = %u",
                   (unsigned long long)s->ctx.round, have, phase, need);
}

int secagg_server_close_adverts(secagg_server_t *s, secagg_buf_t *out, err_t *err)
{
    if (s->state != S_ADVERTS)
        return err_set(err, FN_ESTATE, "secagg: close_adverts out of order");
    make_list(s, 1, s->u1);
    uint32_t cnt = s->count[1];
    if (cnt < s->ctx.t)
        return server_abort(s, err, "advertised keys", cnt, s->ctx.t);
    uint8_t *q = secagg_put_header(secagg_buf_alloc(out, SECAGG_HEADER_LEN + 4 + (size_t)cnt * ADVERT_ENTRY),
                                   SECAGG_MSG_ADVERT_LIST, 0, s->ctx.round);
    secagg_put32(q, cnt);
    q += 4;
    for (uint32_t i = 0; i < s->ctx.n; i++) {
        if (!s->u1[i])
            continue;
        secagg_put32(q, s->ctx.ids[i]);
        memcpy(q + 4, s->c_pk + (size_t)i * KEY, KEY);
        memcpy(q + 4 + KEY, s->s_pk + (size_t)i * KEY, KEY);
        q += ADVERT_ENTRY;
    }
    s->state = S_SHARES;
    return 0;
}

int secagg_server_advert_list_for(secagg_server_t *s, uint32_t id, secagg_buf_t *out, err_t *err)
{
    if (s->state != S_SHARES)
        return err_set(err, FN_ESTATE, "secagg: advert_list_for is only valid between close_adverts and close_shares");
    const secagg_ctx_t *x = &s->ctx;
    int64_t v = secagg_ctx_index(x, id);
    if (v < 0 || !s->u1[v])
        return err_set(err, FN_EINVAL, "secagg: client %u is not in U1", id);
    uint32_t cnt = 0;
    for (uint32_t i = 0; i < x->n; i++)
        cnt += s->u1[i] && (i == (uint32_t)v || secagg_ctx_is_nbr(x, i, (uint32_t)v));
    uint8_t *q = secagg_put_header(secagg_buf_alloc(out, SECAGG_HEADER_LEN + 4 + (size_t)cnt * ADVERT_ENTRY),
                                   SECAGG_MSG_ADVERT_LIST, 0, x->round);
    secagg_put32(q, cnt);
    q += 4;
    for (uint32_t i = 0; i < x->n; i++) {
        if (!s->u1[i] || (i != (uint32_t)v && !secagg_ctx_is_nbr(x, i, (uint32_t)v)))
            continue;
        secagg_put32(q, x->ids[i]);
        memcpy(q + 4, s->c_pk + (size_t)i * KEY, KEY);
        memcpy(q + 4 + KEY, s->s_pk + (size_t)i * KEY, KEY);
        q += ADVERT_ENTRY;
    }
    return 0;
}

int secagg_server_add_shares(secagg_server_t *s, const uint8_t *msg, size_t len, err_t *err)
{
    uint32_t i;
    int rc = sender_idx(s, msg, len, SECAGG_MSG_SHARES, S_SHARES, s->u1, s->u2, &i, err);
    if (rc)
        return rc;
    const secagg_ctx_t *x = &s->ctx;
    uint32_t expect = 0;
    for (uint32_t j = 0; j < x->n; j++)
        expect += s->u1[j] && secagg_ctx_is_nbr(x, i, j);
    if (len < SECAGG_HEADER_LEN + 4 || secagg_get32(msg + SECAGG_HEADER_LEN) != expect ||
        len != SECAGG_HEADER_LEN + 4 + (size_t)expect * SHARE_ENTRY)
        return err_set(err, FN_EPROTO, "secagg: SHARES from client %u must hold exactly %u ciphertexts in %zu bytes",
                       x->ids[i], expect, SECAGG_HEADER_LEN + 4 + (size_t)expect * SHARE_ENTRY);
    const uint8_t *e = msg + SECAGG_HEADER_LEN + 4;
    uint32_t k = 0;
    for (uint32_t j = 0; j < x->n; j++) {
        if (!s->u1[j] || !secagg_ctx_is_nbr(x, i, j))
            continue;
        if (secagg_get32(e + (size_t)k * SHARE_ENTRY) != x->ids[j])
            return err_set(err, FN_EPROTO,
                           "secagg: SHARES from client %u: ciphertext %u is for %u, expected %u (ascending ids)",
                           x->ids[i], k, secagg_get32(e + (size_t)k * SHARE_ENTRY), x->ids[j]);
        k++;
    }
    s->entries[i] = FN_MALLOC((size_t)expect * SHARE_ENTRY + 1);
    memcpy(s->entries[i], e, (size_t)expect * SHARE_ENTRY);
    s->n_entries[i] = expect;
    s->u2[i] = 1;
    return 0;
}

int secagg_server_close_shares(secagg_server_t *s, err_t *err)
{
    if (s->state != S_SHARES)
        return err_set(err, FN_ESTATE, "secagg: close_shares out of order");
    make_list(s, 2, s->u2);
    if (s->count[2] < s->ctx.t)
        return server_abort(s, err, "shared keys", s->count[2], s->ctx.t);
    s->state = S_MASKED;
    return 0;
}

/* The entry sender i addressed to recipient id, by binary search (entries ascend). */
static const uint8_t *find_entry(const secagg_server_t *s, uint32_t i, uint32_t to)
{
    uint32_t lo = 0, hi = s->n_entries[i];
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        uint32_t id = secagg_get32(s->entries[i] + (size_t)mid * SHARE_ENTRY);
        if (id < to)
            lo = mid + 1;
        else if (id > to)
            hi = mid;
        else
            return s->entries[i] + (size_t)mid * SHARE_ENTRY;
    }
    return NULL;
}

int secagg_server_relay(secagg_server_t *s, uint32_t to_id, secagg_buf_t *out, err_t *err)
{
    if (s->state != S_MASKED)
        return err_set(err, FN_ESTATE, "secagg: relay is only valid between close_shares and close_masked");
    const secagg_ctx_t *x = &s->ctx;
    int64_t v = secagg_ctx_index(x, to_id);
    if (v < 0 || !s->u2[v])
        return err_set(err, FN_EINVAL, "secagg: client %u is not in U2; nothing to relay", to_id);
    uint32_t cnt = 0;
    for (uint32_t i = 0; i < x->n; i++)
        cnt += s->u2[i] && secagg_ctx_is_nbr(x, i, (uint32_t)v);
    uint8_t *q = secagg_put_header(secagg_buf_alloc(out, SECAGG_HEADER_LEN + 8 + (size_t)cnt * SHARE_ENTRY),
                                   SECAGG_MSG_RELAY, 0, x->round);
    secagg_put32(q, to_id);
    secagg_put32(q + 4, cnt);
    q += 8;
    for (uint32_t i = 0; i < x->n; i++) {
        if (!s->u2[i] || !secagg_ctx_is_nbr(x, i, (uint32_t)v))
            continue;
        const uint8_t *e = find_entry(s, i, to_id);
        FN_CHECK(e != NULL); /* add_shares checked every U1 neighbour is addressed */
        secagg_put32(q, x->ids[i]);
        memcpy(q + 4, e + 4, SHARE_ENTRY - 4);
        q += SHARE_ENTRY;
    }
    return 0;
}

int secagg_server_relayed(const secagg_server_t *s, uint32_t from, uint32_t to)
{
    if (s->state != S_MASKED)
        return 0;
    int64_t i = secagg_ctx_index(&s->ctx, from), v = secagg_ctx_index(&s->ctx, to);
    return i >= 0 && v >= 0 && s->u2[i] && s->u2[v] && secagg_ctx_is_nbr(&s->ctx, (uint32_t)i, (uint32_t)v);
}

int secagg_server_add_masked(secagg_server_t *s, const uint8_t *msg, size_t len, err_t *err)
{
    uint32_t i;
    int rc = sender_idx(s, msg, len, SECAGG_MSG_MASKED, S_MASKED, s->u2, s->u3, &i, err);
    if (rc)
        return rc;
    const secagg_ctx_t *x = &s->ctx;
    if (len != SECAGG_HEADER_LEN + 8 + (size_t)x->m * 4 || secagg_get32(msg + SECAGG_HEADER_LEN) != x->m ||
        secagg_get32(msg + SECAGG_HEADER_LEN + 4) != x->bits)
        return err_set(err, FN_EPROTO, "secagg: MASKED from client %u must hold m = %u values of %u bits", x->ids[i],
                       x->m, x->bits);
    const uint8_t *v = msg + SECAGG_HEADER_LEN + 8;
    if (x->bits < 32) {
        uint32_t over = 0;
        for (uint32_t k = 0; k < x->m; k++)
            over |= secagg_get32(v + 4 * (size_t)k) & ~x->mask;
        if (over)
            return err_set(err, FN_EPROTO, "secagg: MASKED from client %u has values outside Z_2^%u", x->ids[i],
                           x->bits);
    }
#if !SECAGG_BIG_ENDIAN
    for (uint32_t k = 0; k < x->m; k++) {
        uint32_t w;
        memcpy(&w, v + 4 * (size_t)k, 4);
        s->sum[k] += w;
    }
#else
    for (uint32_t k = 0; k < x->m; k++)
        s->sum[k] += secagg_get32(v + 4 * (size_t)k);
#endif
    s->u3[i] = 1;
    return 0;
}

int secagg_server_close_masked(secagg_server_t *s, secagg_buf_t *out, err_t *err)
{
    if (s->state != S_MASKED)
        return err_set(err, FN_ESTATE, "secagg: close_masked out of order");
    make_list(s, 3, s->u3);
    uint32_t ns = s->count[3], nd = s->count[2] - ns;
    if (ns < s->ctx.t)
        return server_abort(s, err, "sent masked input", ns, s->ctx.t);
    uint8_t *q = secagg_put_header(secagg_buf_alloc(out, SECAGG_HEADER_LEN + 8 + 4 * ((size_t)ns + nd)),
                                   SECAGG_MSG_UNMASK_REQ, 0, s->ctx.round);
    secagg_put32(q, ns);
    q += 4;
    for (uint32_t i = 0; i < ns; i++, q += 4)
        secagg_put32(q, s->list[3][i]);
    secagg_put32(q, nd);
    q += 4;
    for (uint32_t i = 0; i < s->ctx.n; i++)
        if (s->u2[i] && !s->u3[i]) {
            secagg_put32(q, s->ctx.ids[i]);
            q += 4;
        }
    s->state = S_UNMASK;
    return 0;
}

int secagg_server_add_unmask(secagg_server_t *s, const uint8_t *msg, size_t len, err_t *err)
{
    uint32_t r;
    int rc = sender_idx(s, msg, len, SECAGG_MSG_UNMASK, S_UNMASK, s->u3, s->u4, &r, err);
    if (rc)
        return rc;
    const secagg_ctx_t *x = &s->ctx;
    if (len < SECAGG_HEADER_LEN + 4)
        return err_set(err, FN_EPROTO, "secagg: UNMASK has no count");
    uint32_t cnt = secagg_get32(msg + SECAGG_HEADER_LEN);
    if (cnt > x->n || len != SECAGG_HEADER_LEN + 4 + (size_t)cnt * UNMASK_ENTRY)
        return err_set(err, FN_EPROTO, "secagg: UNMASK of %zu bytes does not hold %u shares", len, cnt);
    const uint8_t *e = msg + SECAGG_HEADER_LEN + 4;
    uint8_t *seen = FN_CALLOC(x->n, 1);
    uint32_t *owner = FN_MALLOC(((size_t)cnt + 1) * sizeof *owner);
    shamir_share_t *sh = FN_MALLOC(((size_t)cnt + 1) * sizeof *sh);
    for (uint32_t k = 0; k < cnt && !rc; k++, e += UNMASK_ENTRY) {
        uint32_t id = secagg_get32(e), kind = secagg_get32(e + 4);
        int64_t o = secagg_ctx_index(x, id);
        if (o < 0 || !s->u2[o] || seen[o] || ((uint32_t)o != r && !secagg_ctx_is_nbr(x, (uint32_t)o, r)))
            rc = err_set(err, FN_EPROTO, "secagg: UNMASK from client %u carries an unexpected share of client %u",
                         x->ids[r], id);
        else if (kind != (s->u3[o] ? SECAGG_SHARE_SEED : SECAGG_SHARE_KEY))
            rc = err_set(err, FN_EPROTO, "secagg: UNMASK from client %u carries the wrong kind of share of client %u",
                         x->ids[r], id);
        else
            rc = shamir_load(&sh[k], x->ids[r], e + 8, err);
        if (!rc) {
            seen[o] = 1;
            owner[k] = (uint32_t)o;
        }
    }
    if (!rc) {
        for (uint32_t k = 0; k < cnt; k++) {
            uint32_t o = owner[k];
            if (!s->got[o])
                s->got[o] = FN_MALLOC(((size_t)(x->half ? 2 * x->half : x->n - 1) + 1) * sizeof **s->got);
            s->got[o][s->n_got[o]++] = sh[k];
        }
        s->u4[r] = 1;
    }
    sodium_memzero(sh, ((size_t)cnt + 1) * sizeof *sh);
    free(sh);
    free(owner);
    free(seen);
    return rc;
}

int secagg_server_finish(secagg_server_t *s, uint32_t *sum, uint32_t *n_summed, err_t *err)
{
    if (s->state != S_UNMASK)
        return err_set(err, FN_ESTATE, "secagg: finish out of order");
    const secagg_ctx_t *x = &s->ctx;
    uint32_t responded = 0, nkeys = 0;
    uint32_t *pairs = FN_CALLOC(x->n, sizeof *pairs); /* survivors a dropped client masked with */
    for (uint32_t i = 0; i < x->n; i++) {
        responded += s->u4[i];
        if (s->u3[i])
            nkeys++;
        else if (s->u2[i])
            for (uint32_t j = 0; j < x->n; j++)
                pairs[i] += s->u3[j] && secagg_ctx_is_nbr(x, i, j);
        nkeys += pairs[i];
    }
    if (responded < x->t) {
        free(pairs);
        return server_abort(s, err, "answered the unmasking request", responded, x->t);
    }
    uint8_t *keys = sodium_malloc((size_t)nkeys * KEY + 1);
    uint8_t *ssk = sodium_malloc(KEY);
    int8_t *sign = FN_MALLOC((size_t)nkeys + 1);
    int rc = 0;
    if (!keys || !ssk) {
        rc = err_set(err, FN_ENOMEM, "secagg: out of secure memory");
        goto done;
    }
    uint32_t nk = 0;
    for (uint32_t i = 0; i < x->n && !rc; i++) {
        if (!s->u2[i] || (!s->u3[i] && !pairs[i])) /* a dropped client with no surviving neighbour: nothing to undo */
            continue;
        if (s->n_got[i] < x->thr) {
            s->state = S_ABORTED;
            rc = err_set(err, FN_ESTATE, "secagg: round %llu aborted: %u shares of client %u's %s, below %u",
                         (unsigned long long)x->round, s->n_got[i], x->ids[i], s->u3[i] ? "self seed" : "mask key",
                         x->thr);
            break;
        }
        if (s->u3[i]) { /* survivor: remove PRG(b_i) */
            if ((rc = shamir_combine(s->got[i], s->n_got[i], x->thr, keys + (size_t)nk * KEY, err)))
                break;
            sign[nk++] = -1;
            continue;
        }
        /* dropped after sharing: rebuild s_sk and cancel its pair masks with every survivor */
        uint8_t pk[KEY];
        if ((rc = shamir_combine(s->got[i], s->n_got[i], x->thr, ssk, err)))
            break;
        crypto_scalarmult_base(pk, ssk);
        if (sodium_memcmp(pk, s->s_pk + (size_t)i * KEY, KEY) != 0) {
            rc = err_set(err, FN_EPROTO, "secagg: the mask key rebuilt for client %u does not match its public key "
                                         "(a share was altered)", x->ids[i]);
            break;
        }
        for (uint32_t j = 0; j < x->n; j++) {
            if (!s->u3[j] || !secagg_ctx_is_nbr(x, i, j))
                continue;
            if (secagg_agree(SECAGG_CTX_S, x->round, ssk, x->ids[i], s->s_pk + (size_t)i * KEY, x->ids[j],
                             s->s_pk + (size_t)j * KEY, keys + (size_t)nk * KEY)) {
                rc = err_set(err, FN_EPROTO, "secagg: client %u advertised an invalid mask key", x->ids[j]);
                break;
            }
            /* survivor j added +PRG if its id is larger, -PRG if smaller: undo that */
            sign[nk++] = x->ids[j] > x->ids[i] ? -1 : 1;
        }
    }
    if (rc) {
        if (s->state != S_ABORTED)
            s->state = S_ABORTED;
        goto done;
    }
    FN_CHECK(nk == nkeys);
    memcpy(sum, s->sum, (size_t)x->m * 4);
    secagg_prg_apply(sum, x->m, keys, sign, nk);
    for (uint32_t k = 0; k < x->m; k++)
        sum[k] &= x->mask;
    if (n_summed)
        *n_summed = s->count[3];
    s->state = S_DONE;
done:
    if (keys)
        sodium_free(keys);
    if (ssk)
        sodium_free(ssk);
    free(sign);
    free(pairs);
    return rc;
}
