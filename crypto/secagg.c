/* Secure aggregation, the protocol: see secagg.h for the flow and the wire formats and
 * shared/specs/secure-aggregation.md for the specification. Client and server share the round
 * context (sorted ids, thresholds, the neighbour graph). Server phase functions validate a whole
 * message before changing any state; a client aborts itself on any bad input. */
#include "crypto/secagg.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define SECAGG_BIG_ENDIAN 1
#else
#define SECAGG_BIG_ENDIAN 0
#endif

#define VERSION 1
#define KEY SECAGG_KEY_LEN
#define ADVERT_ENTRY (4 + 2 * KEY)
#define SHARE_ENTRY (4 + SECAGG_NONCE_LEN + SECAGG_CT_LEN)
#define UNMASK_ENTRY (4 + 4 + SHAMIR_SHARE_LEN)
#define PRG_CHUNK 2048 /* words per keystream block: output chunk + keystream stay in L1 */

/* ---------- little-endian helpers ---------- */
static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32; }

void secagg_buf_free(secagg_buf_t *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

static uint8_t *buf_alloc(secagg_buf_t *b, size_t len)
{
    b->data = FN_MALLOC(len);
    b->len = len;
    return b->data;
}

static uint8_t *put_header(uint8_t *p, int type, uint32_t sender, uint64_t round)
{
    p[0] = (uint8_t)type;
    p[1] = VERSION;
    p[2] = p[3] = 0;
    put32(p + 4, sender);
    put64(p + 8, round);
    return p + SECAGG_HEADER_LEN;
}

static const char *type_name(int type)
{
    static const char *names[] = {"?", "ADVERT", "ADVERT_LIST", "SHARES", "RELAY", "MASKED", "UNMASK_REQ", "UNMASK"};
    return type >= 1 && type <= 7 ? names[type] : "?";
}

static int get_header(const uint8_t *msg, size_t len, int type, uint64_t round, uint32_t *sender, err_t *err)
{
    if (!msg || len < SECAGG_HEADER_LEN)
        return err_set(err, FN_EPROTO, "secagg: %s message of %zu bytes is shorter than its header", type_name(type),
                       len);
    if (msg[0] != type)
        return err_set(err, FN_EPROTO, "secagg: expected a %s message, got type %u", type_name(type), msg[0]);
    if (msg[1] != VERSION || msg[2] || msg[3])
        return err_set(err, FN_EPROTO, "secagg: %s message has version %u (expected %d)", type_name(type), msg[1],
                       VERSION);
    if (get64(msg + 8) != round)
        return err_set(err, FN_EPROTO, "secagg: %s message is for round %llu, this is round %llu", type_name(type),
                       (unsigned long long)get64(msg + 8), (unsigned long long)round);
    *sender = get32(msg + 4);
    return 0;
}

/* ---------- the round context ---------- */
typedef struct ctx {
    uint64_t round;
    uint32_t n, t, thr, m, bits, half; /* thr: Shamir threshold; half: k/2, 0 = complete graph */
    uint32_t mask;                     /* 2^bits - 1 */
    uint32_t *ids;                     /* sorted */
    uint32_t *pos;                     /* ring position of each index (SecAgg+) */
    uint32_t *at;                      /* index at each ring position (SecAgg+) */
} ctx_t;

uint32_t secagg_default_t(uint32_t n)
{
    uint32_t a = n / 2 + 1, b = (uint32_t)(((uint64_t)2 * n + 2) / 3), t = a > b ? a : b;
    if (t < 2)
        t = 2;
    return t > n ? n : t;
}

uint32_t secagg_default_k(uint32_t n)
{
    uint32_t l = 0;
    while (l < 32 && ((uint64_t)1 << l) < n)
        l++;
    return 2 * l;
}

uint32_t secagg_default_t_nb(uint32_t k)
{
    k += k & 1;
    return secagg_default_t(k + 1);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* ChaCha20 as a public, portable stream of uniform integers (the graph permutation). */
typedef struct pubrng {
    uint8_t key[32];
    uint8_t buf[64];
    uint32_t block, used;
} pubrng_t;

static uint64_t pubrng_u64(pubrng_t *r)
{
    static const uint8_t zero[64];
    static const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {'g', 'r', 'a', 'p', 'h'};
    if (r->used + 8 > 64) {
        crypto_stream_chacha20_ietf_xor_ic(r->buf, zero, 64, nonce, r->block++, r->key);
        r->used = 0;
    }
    uint64_t v = get64(r->buf + r->used);
    r->used += 8;
    return v;
}

static uint64_t pubrng_below(pubrng_t *r, uint64_t range)
{
    uint64_t floor_ = (0 - range) % range, v;
    do
        v = pubrng_u64(r);
    while (v < floor_);
    return v % range;
}

/* Resolves defaults and validates; fills ctx when given. */
static int resolve(const secagg_params_t *p, ctx_t *c, err_t *err)
{
    if (!p)
        return err_set(err, FN_EINVAL, "secagg: no parameters");
    if (p->n < 2 || p->n > SECAGG_MAX_N)
        return err_set(err, FN_EINVAL, "secagg: n = %u selected clients; need 2 to %u", p->n, SECAGG_MAX_N);
    if (!p->ids)
        return err_set(err, FN_EINVAL, "secagg: no client ids");
    uint32_t n = p->n, t = p->t ? p->t : secagg_default_t(n);
    if (t < 2 || t > n || 2 * (uint64_t)t <= n)
        return err_set(err, FN_EINVAL, "secagg: threshold t = %u must be more than n/2 = %u/2, at least 2 and at most n",
                       t, n);
    if (p->m < 1)
        return err_set(err, FN_EINVAL, "secagg: vector length m must be >= 1");
    uint32_t bits = p->bits ? p->bits : 32;
    if (bits < 8 || bits > 32)
        return err_set(err, FN_EINVAL, "secagg: ring bits = %u; need 8 to 32", bits);
    uint32_t half = 0, thr = t;
    if (p->k > 0) {
        uint32_t k = p->k + (p->k & 1);
        if (k < n - 1) {
            half = k / 2;
            thr = p->t_nb ? p->t_nb : secagg_default_t_nb(k);
            if (thr < 2 || thr > k + 1 || 2 * thr <= k + 1)
                return err_set(err, FN_EINVAL,
                               "secagg: neighbourhood threshold t_nb = %u must be more than (k+1)/2 = %u/2, at least 2 "
                               "and at most k+1",
                               thr, k + 1);
        }
    }
    uint32_t *ids = FN_MALLOC((size_t)n * sizeof *ids);
    memcpy(ids, p->ids, (size_t)n * sizeof *ids);
    qsort(ids, n, sizeof *ids, cmp_u32);
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == 0 || (i && ids[i] == ids[i - 1])) {
            uint32_t bad = ids[i];
            free(ids);
            return err_set(err, FN_EINVAL, "secagg: client id %u is %s", bad, bad ? "repeated" : "0 (ids start at 1)");
        }
    if (!c) {
        free(ids);
        return 0;
    }
    memset(c, 0, sizeof *c);
    c->round = p->round_id;
    c->n = n;
    c->t = t;
    c->thr = thr;
    c->m = p->m;
    c->bits = bits;
    c->mask = bits == 32 ? 0xFFFFFFFFu : (1u << bits) - 1;
    c->half = half;
    c->ids = ids;
    if (half) {
        c->pos = FN_MALLOC((size_t)n * sizeof *c->pos);
        c->at = FN_MALLOC((size_t)n * sizeof *c->at);
        pubrng_t r = {.used = 64};
        memcpy(r.key, p->graph_seed, 32);
        for (uint32_t i = 0; i < n; i++)
            c->at[i] = i;
        for (uint32_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            uint32_t j = (uint32_t)pubrng_below(&r, (uint64_t)i + 1), tmp = c->at[i];
            c->at[i] = c->at[j];
            c->at[j] = tmp;
        }
        for (uint32_t i = 0; i < n; i++)
            c->pos[c->at[i]] = i;
    }
    return 0;
}

int secagg_params_check(const secagg_params_t *p, err_t *err) { return resolve(p, NULL, err); }

static void ctx_free(ctx_t *c)
{
    free(c->ids);
    free(c->pos);
    free(c->at);
}

/* Index of id in the sorted ids, or -1. */
static int64_t idx_of(const ctx_t *c, uint32_t id)
{
    uint32_t lo = 0, hi = c->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->ids[mid] < id)
            lo = mid + 1;
        else if (c->ids[mid] > id)
            hi = mid;
        else
            return mid;
    }
    return -1;
}

static int is_nbr(const ctx_t *c, uint32_t i, uint32_t j)
{
    if (i == j)
        return 0;
    if (!c->half)
        return 1;
    uint32_t d = c->pos[i] > c->pos[j] ? c->pos[i] - c->pos[j] : c->pos[j] - c->pos[i];
    if (d > c->n - d)
        d = c->n - d;
    return d <= c->half;
}

/* Symmetric pair key: BLAKE2b over context, round, the X25519 point and both public keys,
 * the smaller id's key first. -1 when the peer key is a low-order point. */
static int agree(const char *context, uint64_t round, const uint8_t *my_sk, uint32_t my_id, const uint8_t *my_pk,
                 uint32_t peer_id, const uint8_t *peer_pk, uint8_t out[KEY])
{
    uint8_t q[crypto_scalarmult_BYTES], r[8];
    if (crypto_scalarmult(q, my_sk, peer_pk) != 0)
        return -1;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, KEY);
    crypto_generichash_update(&st, (const uint8_t *)context, 16);
    put64(r, round);
    crypto_generichash_update(&st, r, 8);
    crypto_generichash_update(&st, q, sizeof q);
    crypto_generichash_update(&st, my_id < peer_id ? my_pk : peer_pk, KEY);
    crypto_generichash_update(&st, my_id < peer_id ? peer_pk : my_pk, KEY);
    crypto_generichash_final(&st, out, KEY);
    sodium_memzero(q, sizeof q);
    sodium_memzero(&st, sizeof st);
    return 0;
}
static const char CTX_C[16] = "fednas-secagg-c";
static const char CTX_S[16] = "fednas-secagg-s";

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

/* ---------- client ---------- */
enum { C_ADVERTISED = 1, C_SHARED, C_MASKED, C_DONE, C_ABORTED };

typedef struct client_secrets {
    uint8_t c_sk[KEY], s_sk[KEY], b[KEY];
} client_secrets_t;

struct secagg_client {
    ctx_t ctx;
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
    ctx_free(&c->ctx);
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
    int rc = resolve(p, &c->ctx, err);
    if (rc) {
        free(c);
        return rc;
    }
    int64_t me = idx_of(&c->ctx, my_id);
    if (me < 0) {
        ctx_free(&c->ctx);
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
    uint8_t *q = put_header(buf_alloc(advert, SECAGG_HEADER_LEN + 2 * KEY), SECAGG_MSG_ADVERT, my_id, c->ctx.round);
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
    const ctx_t *x = &c->ctx;
    uint32_t sender;
    int rc = get_header(msg, len, SECAGG_MSG_ADVERT_LIST, x->round, &sender, err);
    if (rc)
        return client_abort(c, rc);
    if (len < SECAGG_HEADER_LEN + 4)
        return client_abort(c, err_set(err, FN_EPROTO, "secagg: ADVERT_LIST has no count"));
    uint32_t count = get32(msg + SECAGG_HEADER_LEN);
    if (count > x->n || len != SECAGG_HEADER_LEN + 4 + (size_t)count * ADVERT_ENTRY)
        return client_abort(c, err_set(err, FN_EPROTO, "secagg: ADVERT_LIST of %zu bytes does not hold %u entries",
                                       len, count));
    const uint8_t *e = msg + SECAGG_HEADER_LEN + 4;
    int saw_me = 0;
    for (uint32_t i = 0; i < count; i++, e += ADVERT_ENTRY) {
        uint32_t id = get32(e);
        int64_t j = idx_of(x, id);
        if (j < 0 || c->in_u1[j])
            return client_abort(c, err_set(err, FN_EPROTO, "secagg: ADVERT_LIST names client %u %s", id,
                                           j < 0 ? "who was not selected" : "twice"));
        c->in_u1[j] = 1;
        memcpy(c->peer_c_pk + (size_t)j * KEY, e + 4, KEY);
        memcpy(c->peer_s_pk + (size_t)j * KEY, e + 4 + KEY, KEY);
        if ((uint32_t)j == c->me) {
            if (sodium_memcmp(e + 4, c->c_pk, KEY) || sodium_memcmp(e + 4 + KEY, c->s_pk, KEY))
                return client_abort(c, err_set(err, FN_EPROTO, "secagg: ADVERT_LIST carries wrong keys for this client"));
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
        if (c->in_u1[j] && is_nbr(x, c->me, j))
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
    uint8_t *q = put_header(buf_alloc(out, SECAGG_HEADER_LEN + 4 + (size_t)c->n_nb * SHARE_ENTRY), SECAGG_MSG_SHARES,
                            c->my_id, x->round);
    put32(q, c->n_nb);
    q += 4;
    for (uint32_t i = 0; i < c->n_nb; i++, q += SHARE_ENTRY) {
        uint32_t j = c->nb[i], to = x->ids[j];
        uint8_t *key = c->aead_keys + (size_t)i * KEY, ad[16];
        if (agree(CTX_C, x->round, c->sec->c_sk, c->my_id, c->c_pk, to, c->peer_c_pk + (size_t)j * KEY, key)) {
            secagg_buf_free(out);
            rc = err_set(err, FN_EPROTO, "secagg: client %u advertised an invalid public key", to);
            goto fail;
        }
        put32(pt, c->my_id);
        put32(pt + 4, to);
        put64(pt + 8, x->round);
        shamir_store(&sh[i], pt + 16);
        shamir_store(&sh[nh + i], pt + 16 + SHAMIR_SHARE_LEN);
        memcpy(ad, pt, 16);
        put32(q, to);
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
    const ctx_t *x = &c->ctx;
    if (!xin)
        return err_set(err, FN_EINVAL, "secagg: no input vector");
    if (x->bits < 32)
        for (uint32_t i = 0; i < x->m; i++)
            if (xin[i] > x->mask)
                return err_set(err, FN_EINVAL, "secagg: input value %u at %u is outside Z_2^%u", xin[i], i, x->bits);
    uint32_t sender;
    int rc = get_header(msg, len, SECAGG_MSG_RELAY, x->round, &sender, err);
    if (rc)
        return client_abort(c, rc);
    if (len < SECAGG_HEADER_LEN + 8)
        return client_abort(c, err_set(err, FN_EPROTO, "secagg: RELAY is truncated"));
    uint32_t to = get32(msg + SECAGG_HEADER_LEN), count = get32(msg + SECAGG_HEADER_LEN + 4);
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
        uint32_t from = get32(e);
        int64_t j = idx_of(x, from), p = j < 0 ? -1 : nb_pos(c, (uint32_t)j);
        if (p < 0 || c->have[j]) {
            rc = err_set(err, FN_EPROTO, "secagg: RELAY carries a ciphertext from client %u, %s", from,
                         p < 0 ? "not a neighbour in U1" : "twice");
            goto done;
        }
        uint8_t ad[16];
        put32(ad, from);
        put32(ad + 4, c->my_id);
        put64(ad + 8, x->round);
        unsigned long long ptlen;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(pt, &ptlen, NULL, e + 4 + SECAGG_NONCE_LEN, SECAGG_CT_LEN, ad,
                                                       sizeof ad, e + 4, c->aead_keys + (size_t)p * KEY) != 0 ||
            ptlen != SECAGG_PT_LEN || sodium_memcmp(pt, ad, 16) != 0) {
            rc = err_set(err, FN_EAUTH, "secagg: the ciphertext from client %u failed to authenticate", from);
            goto done;
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
        if (agree(CTX_S, x->round, c->sec->s_sk, c->my_id, c->s_pk, from, c->peer_s_pk + (size_t)j * KEY,
                  keys + (size_t)nk * KEY)) {
            rc = err_set(err, FN_EPROTO, "secagg: client %u advertised an invalid mask key", from);
            goto done;
        }
        sign[nk++] = c->my_id > from ? 1 : -1;
    }
    uint8_t *q = put_header(buf_alloc(out, SECAGG_HEADER_LEN + 8 + (size_t)x->m * 4), SECAGG_MSG_MASKED, c->my_id,
                            x->round);
    put32(q, x->m);
    put32(q + 4, x->bits);
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

/* Parses an id list at *p of *left bytes into flags (1 + which); FN_EPROTO on a repeat, a
 * stranger or an id already flagged by the other list. */
static int parse_ids(const ctx_t *x, const uint8_t **p, size_t *left, uint8_t *flags, uint8_t which, uint32_t *count,
                     err_t *err)
{
    if (*left < 4)
        return err_set(err, FN_EPROTO, "secagg: UNMASK_REQ is truncated");
    uint32_t k = get32(*p);
    *p += 4;
    *left -= 4;
    if (k > x->n || *left < (size_t)k * 4)
        return err_set(err, FN_EPROTO, "secagg: UNMASK_REQ list of %u ids does not fit", k);
    for (uint32_t i = 0; i < k; i++) {
        uint32_t id = get32(*p + 4 * (size_t)i);
        int64_t j = idx_of(x, id);
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
    const ctx_t *x = &c->ctx;
    uint32_t sender, n_surv, n_drop;
    int rc = get_header(msg, len, SECAGG_MSG_UNMASK_REQ, x->round, &sender, err);
    if (rc)
        return client_abort(c, rc);
    uint8_t *flags = FN_CALLOC(x->n, 1); /* 1 survivor, 2 dropped */
    const uint8_t *p = msg + SECAGG_HEADER_LEN;
    size_t left = len - SECAGG_HEADER_LEN;
    if ((rc = parse_ids(x, &p, &left, flags, 1, &n_surv, err)) || (rc = parse_ids(x, &p, &left, flags, 2, &n_drop, err)))
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
    uint8_t *q = put_header(buf_alloc(out, SECAGG_HEADER_LEN + 4 + (size_t)n_out * UNMASK_ENTRY), SECAGG_MSG_UNMASK,
                            c->my_id, x->round);
    put32(q, n_out);
    q += 4;
    for (uint32_t j = 0; j < x->n; j++) {
        if (!c->have[j] || !flags[j])
            continue;
        shamir_share_t s = {.x = c->my_id};
        memcpy(s.y, flags[j] == 1 ? held_b(c, j) : held_s(c, j), sizeof s.y);
        put32(q, x->ids[j]);
        put32(q + 4, flags[j] == 1 ? SECAGG_SHARE_SEED : SECAGG_SHARE_KEY);
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

/* ---------- server ---------- */
enum { S_ADVERTS = 1, S_SHARES, S_MASKED, S_UNMASK, S_DONE, S_ABORTED };

struct secagg_server {
    ctx_t ctx;
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
    int rc = resolve(p, &s->ctx, err);
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
    ctx_free(&s->ctx);
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
    if (s->state != state)
        return err_set(err, FN_ESTATE, "secagg: a %s message arrived outside its phase", type_name(type));
    uint32_t id;
    int rc = get_header(msg, len, type, s->ctx.round, &id, err);
    if (rc)
        return rc;
    int64_t i = idx_of(&s->ctx, id);
    if (i < 0 || (allowed && !allowed[i]))
        return err_set(err, FN_EPROTO, "secagg: %s from client %u, %s", type_name(type), id,
                       i < 0 ? "who was not selected" : "who dropped in an earlier phase");
    if (done[i])
        return err_set(err, FN_EPROTO, "secagg: a second %s from client %u", type_name(type), id);
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
    uint8_t *q = put_header(buf_alloc(out, SECAGG_HEADER_LEN + 4 + (size_t)cnt * ADVERT_ENTRY), SECAGG_MSG_ADVERT_LIST,
                            0, s->ctx.round);
    put32(q, cnt);
    q += 4;
    for (uint32_t i = 0; i < s->ctx.n; i++) {
        if (!s->u1[i])
            continue;
        put32(q, s->ctx.ids[i]);
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
    const ctx_t *x = &s->ctx;
    int64_t v = idx_of(x, id);
    if (v < 0 || !s->u1[v])
        return err_set(err, FN_EINVAL, "secagg: client %u is not in U1", id);
    uint32_t cnt = 0;
    for (uint32_t i = 0; i < x->n; i++)
        cnt += s->u1[i] && (i == (uint32_t)v || is_nbr(x, i, (uint32_t)v));
    uint8_t *q = put_header(buf_alloc(out, SECAGG_HEADER_LEN + 4 + (size_t)cnt * ADVERT_ENTRY), SECAGG_MSG_ADVERT_LIST,
                            0, x->round);
    put32(q, cnt);
    q += 4;
    for (uint32_t i = 0; i < x->n; i++) {
        if (!s->u1[i] || (i != (uint32_t)v && !is_nbr(x, i, (uint32_t)v)))
            continue;
        put32(q, x->ids[i]);
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
    const ctx_t *x = &s->ctx;
    uint32_t expect = 0;
    for (uint32_t j = 0; j < x->n; j++)
        expect += s->u1[j] && is_nbr(x, i, j);
    if (len < SECAGG_HEADER_LEN + 4 || get32(msg + SECAGG_HEADER_LEN) != expect ||
        len != SECAGG_HEADER_LEN + 4 + (size_t)expect * SHARE_ENTRY)
        return err_set(err, FN_EPROTO, "secagg: SHARES from client %u must hold exactly %u ciphertexts in %zu bytes",
                       x->ids[i], expect, SECAGG_HEADER_LEN + 4 + (size_t)expect * SHARE_ENTRY);
    const uint8_t *e = msg + SECAGG_HEADER_LEN + 4;
    uint32_t k = 0;
    for (uint32_t j = 0; j < x->n; j++) {
        if (!s->u1[j] || !is_nbr(x, i, j))
            continue;
        if (get32(e + (size_t)k * SHARE_ENTRY) != x->ids[j])
            return err_set(err, FN_EPROTO,
                           "secagg: SHARES from client %u: ciphertext %u is for %u, expected %u (ascending ids)",
                           x->ids[i], k, get32(e + (size_t)k * SHARE_ENTRY), x->ids[j]);
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
        uint32_t id = get32(s->entries[i] + (size_t)mid * SHARE_ENTRY);
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
    const ctx_t *x = &s->ctx;
    int64_t v = idx_of(x, to_id);
    if (v < 0 || !s->u2[v])
        return err_set(err, FN_EINVAL, "secagg: client %u is not in U2; nothing to relay", to_id);
    uint32_t cnt = 0;
    for (uint32_t i = 0; i < x->n; i++)
        cnt += s->u2[i] && is_nbr(x, i, (uint32_t)v);
    uint8_t *q = put_header(buf_alloc(out, SECAGG_HEADER_LEN + 8 + (size_t)cnt * SHARE_ENTRY), SECAGG_MSG_RELAY, 0,
                            x->round);
    put32(q, to_id);
    put32(q + 4, cnt);
    q += 8;
    for (uint32_t i = 0; i < x->n; i++) {
        if (!s->u2[i] || !is_nbr(x, i, (uint32_t)v))
            continue;
        const uint8_t *e = find_entry(s, i, to_id);
        FN_CHECK(e != NULL); /* add_shares checked every U1 neighbour is addressed */
        put32(q, x->ids[i]);
        memcpy(q + 4, e + 4, SHARE_ENTRY - 4);
        q += SHARE_ENTRY;
    }
    return 0;
}

int secagg_server_add_masked(secagg_server_t *s, const uint8_t *msg, size_t len, err_t *err)
{
    uint32_t i;
    int rc = sender_idx(s, msg, len, SECAGG_MSG_MASKED, S_MASKED, s->u2, s->u3, &i, err);
    if (rc)
        return rc;
    const ctx_t *x = &s->ctx;
    if (len != SECAGG_HEADER_LEN + 8 + (size_t)x->m * 4 || get32(msg + SECAGG_HEADER_LEN) != x->m ||
        get32(msg + SECAGG_HEADER_LEN + 4) != x->bits)
        return err_set(err, FN_EPROTO, "secagg: MASKED from client %u must hold m = %u values of %u bits", x->ids[i],
                       x->m, x->bits);
    const uint8_t *v = msg + SECAGG_HEADER_LEN + 8;
    if (x->bits < 32) {
        uint32_t over = 0;
        for (uint32_t k = 0; k < x->m; k++)
            over |= get32(v + 4 * (size_t)k) & ~x->mask;
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
        s->sum[k] += get32(v + 4 * (size_t)k);
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
    uint8_t *q = put_header(buf_alloc(out, SECAGG_HEADER_LEN + 8 + 4 * ((size_t)ns + nd)), SECAGG_MSG_UNMASK_REQ, 0,
                            s->ctx.round);
    put32(q, ns);
    q += 4;
    for (uint32_t i = 0; i < ns; i++, q += 4)
        put32(q, s->list[3][i]);
    put32(q, nd);
    q += 4;
    for (uint32_t i = 0; i < s->ctx.n; i++)
        if (s->u2[i] && !s->u3[i]) {
            put32(q, s->ctx.ids[i]);
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
    const ctx_t *x = &s->ctx;
    if (len < SECAGG_HEADER_LEN + 4)
        return err_set(err, FN_EPROTO, "secagg: UNMASK has no count");
    uint32_t cnt = get32(msg + SECAGG_HEADER_LEN);
    if (cnt > x->n || len != SECAGG_HEADER_LEN + 4 + (size_t)cnt * UNMASK_ENTRY)
        return err_set(err, FN_EPROTO, "secagg: UNMASK of %zu bytes does not hold %u shares", len, cnt);
    const uint8_t *e = msg + SECAGG_HEADER_LEN + 4;
    uint8_t *seen = FN_CALLOC(x->n, 1);
    uint32_t *owner = FN_MALLOC(((size_t)cnt + 1) * sizeof *owner);
    shamir_share_t *sh = FN_MALLOC(((size_t)cnt + 1) * sizeof *sh);
    for (uint32_t k = 0; k < cnt && !rc; k++, e += UNMASK_ENTRY) {
        uint32_t id = get32(e), kind = get32(e + 4);
        int64_t o = idx_of(x, id);
        if (o < 0 || !s->u2[o] || seen[o] || ((uint32_t)o != r && !is_nbr(x, (uint32_t)o, r)))
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
    const ctx_t *x = &s->ctx;
    uint32_t responded = 0, nkeys = 0;
    uint32_t *pairs = FN_CALLOC(x->n, sizeof *pairs); /* survivors a dropped client masked with */
    for (uint32_t i = 0; i < x->n; i++) {
        responded += s->u4[i];
        if (s->u3[i])
            nkeys++;
        else if (s->u2[i])
            for (uint32_t j = 0; j < x->n; j++)
                pairs[i] += s->u3[j] && is_nbr(x, i, j);
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
            if (!s->u3[j] || !is_nbr(x, i, j))
                continue;
            if (agree(CTX_S, x->round, ssk, x->ids[i], s->s_pk + (size_t)i * KEY, x->ids[j], s->s_pk + (size_t)j * KEY,
                      keys + (size_t)nk * KEY)) {
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

int secagg_neighbours(const secagg_params_t *p, uint32_t id, uint32_t *out, uint32_t *count, err_t *err)
{
    ctx_t x;
    int rc = resolve(p, &x, err);
    if (rc)
        return rc;
    int64_t i = idx_of(&x, id);
    if (i < 0) {
        ctx_free(&x);
        return err_set(err, FN_EINVAL, "secagg: client %u is not among the selected ids", id);
    }
    uint32_t k = 0;
    for (uint32_t j = 0; j < x.n; j++)
        if (is_nbr(&x, (uint32_t)i, j))
            out[k++] = x.ids[j];
    *count = k;
    ctx_free(&x);
    return 0;
}
