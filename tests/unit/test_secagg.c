/* Secure aggregation (SecAgg and SecAgg+): whole rounds driven through the message API with
 * dropouts at every phase, the threshold and refusal rules, tampering, malformed messages,
 * uniformity of each masked vector, the neighbour graph, and the encoding's error bound.
 * Structural randomness (n, t, m, bits, who drops) comes from a fixed seed printed at start;
 * keys, seeds and masks come from libsodium. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "crypto/secagg.h"

#define SEED 5005ULL
#define MAXN 128

/* ---------- a round simulator ---------- */
typedef struct plan {
    uint8_t drop[4][MAXN]; /* drop[p][i]: client i sends nothing from phase p on */
} plan_t;

typedef struct outcome {
    int rc;            /* 0, or the error of the step that ended the round */
    int phase;         /* where it ended: 0..3 close calls, 4 finish */
    uint32_t n_summed;
    int expect_ok;     /* what the independent check of the rules predicts */
} outcome_t;

typedef struct sim {
    secagg_params_t p;
    uint32_t ids[MAXN];
    uint32_t **x;           /* inputs */
    secagg_client_t *cl[MAXN];
    secagg_server_t *srv;
    secagg_buf_t masked[MAXN]; /* kept for the uniformity test */
    uint8_t alive[MAXN];       /* still taking part */
    uint8_t in2[MAXN], in3[MAXN], in4[MAXN];
    int keep_masked;
} sim_t;

static uint32_t thr_of(const secagg_params_t *p)
{
    if (p->k == 0)
        return p->t ? p->t : secagg_default_t(p->n);
    uint32_t k = p->k + (p->k & 1);
    if (k >= p->n - 1)
        return p->t ? p->t : secagg_default_t(p->n);
    return p->t_nb ? p->t_nb : secagg_default_t_nb(k);
}

static int is_nb(const secagg_params_t *p, uint32_t a, uint32_t b)
{
    uint32_t nb[MAXN], c = 0;
    err_t e;
    if (secagg_neighbours(p, a, nb, &c, &e))
        return 0;
    for (uint32_t i = 0; i < c; i++)
        if (nb[i] == b)
            return 1;
    return 0;
}

/* Runs one round; the server's result goes to sum. */
static outcome_t run_round(sim_t *s, const plan_t *pl, uint32_t *sum)
{
    outcome_t o = {0};
    err_t e = {0};
    uint32_t n = s->p.n, t = s->p.t ? s->p.t : secagg_default_t(n);
    secagg_buf_t msg[MAXN] = {{0}}, list = {0}, req = {0};
    assert_int_equal(secagg_server_new(&s->p, &s->srv, &e), 0);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(secagg_client_new(&s->p, s->ids[i], &s->cl[i], &msg[i], &e), 0);
        s->alive[i] = !pl->drop[0][i];
        if (s->alive[i])
            assert_int_equal(secagg_server_add_advert(s->srv, msg[i].data, msg[i].len, &e), 0);
        secagg_buf_free(&msg[i]);
    }
    uint32_t cnt = 0;
    for (uint32_t i = 0; i < n; i++)
        cnt += s->alive[i];
    o.phase = 0;
    o.rc = secagg_server_close_adverts(s->srv, &list, &e);
    if (o.rc) {
        assert_int_equal(o.rc, FN_ESTATE);
        assert_true(cnt < t);
        return o;
    }
    assert_true(cnt >= t);
    /* phase 1 */
    for (uint32_t i = 0; i < n; i++) {
        if (!s->alive[i])
            continue;
        secagg_buf_t own = {0};
        if (s->p.k && (i & 1)) { /* SecAgg+: half the clients get only their neighbourhood */
            assert_int_equal(secagg_server_advert_list_for(s->srv, s->ids[i], &own, &e), 0);
            assert_true(own.len <= list.len);
        }
        const secagg_buf_t *l = own.data ? &own : &list;
        int rc = secagg_client_share_keys(s->cl[i], l->data, l->len, &msg[i], &e);
        secagg_buf_free(&own);
        if (rc) { /* SecAgg+: too few neighbours advertised; the client drops itself */
            assert_int_equal(rc, FN_ESTATE);
            assert_true(s->p.k > 0);
            s->alive[i] = 0;
            continue;
        }
        if (pl->drop[1][i]) {
            s->alive[i] = 0;
        } else {
            assert_int_equal(secagg_server_add_shares(s->srv, msg[i].data, msg[i].len, &e), 0);
            s->in2[i] = 1;
        }
        secagg_buf_free(&msg[i]);
    }
    secagg_buf_free(&list);
    cnt = 0;
    for (uint32_t i = 0; i < n; i++)
        cnt += s->in2[i];
    o.phase = 1;
    o.rc = secagg_server_close_shares(s->srv, &e);
    if (o.rc) {
        assert_int_equal(o.rc, FN_ESTATE);
        assert_true(cnt < t);
        return o;
    }
    /* phase 2 */
    for (uint32_t i = 0; i < n; i++) {
        if (!s->in2[i])
            continue;
        secagg_buf_t relay = {0};
        assert_int_equal(secagg_server_relay(s->srv, s->ids[i], &relay, &e), 0);
        if (pl->drop[2][i]) {
            secagg_buf_free(&relay);
            s->alive[i] = 0;
            continue;
        }
        int rc = secagg_client_masked_input(s->cl[i], relay.data, relay.len, s->x[i], &msg[i], &e);
        secagg_buf_free(&relay);
        if (rc) {
            assert_int_equal(rc, FN_ESTATE);
            assert_true(s->p.k > 0);
            s->alive[i] = 0;
            continue;
        }
        assert_int_equal(secagg_server_add_masked(s->srv, msg[i].data, msg[i].len, &e), 0);
        s->in3[i] = 1;
        if (s->keep_masked)
            s->masked[i] = msg[i];
        else
            secagg_buf_free(&msg[i]);
        msg[i].data = NULL;
    }
    cnt = 0;
    for (uint32_t i = 0; i < n; i++)
        cnt += s->in3[i];
    o.phase = 2;
    o.rc = secagg_server_close_masked(s->srv, &req, &e);
    if (o.rc) {
        assert_int_equal(o.rc, FN_ESTATE);
        assert_true(cnt < t);
        return o;
    }
    /* phase 3 */
    uint32_t thr = thr_of(&s->p);
    for (uint32_t i = 0; i < n; i++) {
        if (!s->in3[i])
            continue;
        int rc = secagg_client_unmask(s->cl[i], req.data, req.len, &msg[i], &e);
        if (rc) {
            assert_int_equal(rc, FN_ESTATE);
            assert_true(s->p.k > 0);
            continue;
        }
        if (!pl->drop[3][i]) {
            assert_int_equal(secagg_server_add_unmask(s->srv, msg[i].data, msg[i].len, &e), 0);
            s->in4[i] = 1;
        }
        secagg_buf_free(&msg[i]);
    }
    secagg_buf_free(&req);
    /* the rules, checked independently: t responses, and thr shares of every secret needed */
    uint32_t resp = 0;
    for (uint32_t i = 0; i < n; i++)
        resp += s->in4[i];
    o.expect_ok = resp >= t;
    for (uint32_t v = 0; v < n && o.expect_ok; v++) {
        if (!s->in2[v])
            continue;
        uint32_t surv_nb = 0;
        for (uint32_t u = 0; u < n; u++)
            surv_nb += s->in3[u] && is_nb(&s->p, s->ids[v], s->ids[u]);
        if (!s->in3[v] && !surv_nb)
            continue; /* dropped, and no survivor masked with it */
        uint32_t holders = 0;
        for (uint32_t r = 0; r < n; r++)
            holders += s->in4[r] && (r == v || is_nb(&s->p, s->ids[v], s->ids[r]));
        o.expect_ok = holders >= thr;
    }
    o.phase = 4;
    o.rc = secagg_server_finish(s->srv, sum, &o.n_summed, &e);
    if (o.rc)
        assert_int_equal(o.rc, FN_ESTATE);
    return o;
}

static void sim_free(sim_t *s)
{
    for (uint32_t i = 0; i < s->p.n; i++) {
        secagg_client_free(s->cl[i]);
        secagg_buf_free(&s->masked[i]);
        free(s->x[i]);
    }
    free(s->x);
    secagg_server_free(s->srv);
}

static void sim_init(sim_t *s, rng_t *r, uint32_t n, uint32_t t, uint32_t m, uint32_t bits, uint32_t k)
{
    memset(s, 0, sizeof *s);
    /* sparse, shuffled ids */
    uint32_t base = 1 + (uint32_t)rng_below(r, 1000);
    for (uint32_t i = 0; i < n; i++)
        s->ids[i] = base + 3 * i + (uint32_t)rng_below(r, 3);
    s->p = (secagg_params_t){.round_id = rng_next(r), .n = n, .ids = s->ids, .t = t, .m = m, .bits = bits, .k = k};
    for (int i = 0; i < 32; i++)
        s->p.graph_seed[i] = (uint8_t)rng_next(r);
    uint32_t mask = bits == 32 ? 0xFFFFFFFFu : (1u << bits) - 1;
    s->x = calloc(n, sizeof *s->x);
    for (uint32_t i = 0; i < n; i++) {
        s->x[i] = malloc((size_t)m * 4);
        for (uint32_t j = 0; j < m; j++)
            s->x[i][j] = (uint32_t)rng_next(r) & mask;
    }
}

static void check_sum(const sim_t *s, const uint32_t *sum)
{
    uint32_t bits = s->p.bits ? s->p.bits : 32, mask = bits == 32 ? 0xFFFFFFFFu : (1u << bits) - 1;
    for (uint32_t j = 0; j < s->p.m; j++) {
        uint32_t want = 0;
        for (uint32_t i = 0; i < s->p.n; i++)
            if (s->in3[i])
                want += s->x[i][j];
        if ((want & mask) != sum[j])
            fail_msg("coordinate %u: unmasked %u, plain sum %u", j, sum[j], want & mask);
    }
}

static void random_plan(rng_t *r, plan_t *pl, uint32_t n)
{
    memset(pl, 0, sizeof *pl);
    for (int ph = 0; ph < 4; ph++) {
        if (rng_below(r, 2))
            continue;
        double frac = rng_uniform(r) * 0.30;
        for (uint32_t i = 0; i < n; i++)
            if (rng_uniform(r) < frac)
                pl->drop[ph][i] = 1;
    }
}

static void property_rounds(uint64_t seed, int trials, int plus)
{
    rng_t r;
    rng_seed(&r, seed);
    int ok = 0, aborted = 0, where[5] = {0};
    for (int trial = 0; trial < trials; trial++) {
        uint32_t n = plus ? 12 + (uint32_t)rng_below(&r, 80) : 2 + (uint32_t)rng_below(&r, 39);
        uint32_t tmin = n / 2 + 1 < 2 ? 2 : n / 2 + 1, t = tmin + (uint32_t)rng_below(&r, n - tmin + 1);
        if (rng_below(&r, 3) == 0)
            t = 0; /* the default */
        uint32_t m = 1 + (uint32_t)rng_below(&r, 3000);
        static const uint32_t bitsv[] = {8, 16, 24, 31, 32, 0};
        uint32_t bits = bitsv[rng_below(&r, 6)];
        uint32_t k = plus ? (rng_below(&r, 2) ? 0 : 6 + 2 * (uint32_t)rng_below(&r, 4)) : 0;
        if (plus && rng_below(&r, 2))
            t = tmin; /* SecAgg+ leans on the neighbourhood threshold; keep the global one low */
        sim_t s;
        sim_init(&s, &r, n, t, m, bits, k);
        if (plus && k == 0)
            s.p.k = secagg_default_k(n);
        if (plus && rng_below(&r, 2)) { /* the smallest neighbourhood threshold allowed */
            uint32_t ke = s.p.k + (s.p.k & 1);
            s.p.t_nb = (ke + 1) / 2 + 1;
        }
        plan_t pl;
        random_plan(&r, &pl, n);
        uint32_t *sum = calloc(m, 4);
        outcome_t o = run_round(&s, &pl, sum);
        if (o.phase == 4) {
            if (o.expect_ok != (o.rc == 0))
                fail_msg("trial %d (n %u t %u k %u): finish returned %d, the rules predict %s", trial, n, t, s.p.k,
                         o.rc, o.expect_ok ? "success" : "abort");
            if (o.rc == 0) {
                check_sum(&s, sum);
                uint32_t c3 = 0;
                for (uint32_t i = 0; i < n; i++)
                    c3 += s.in3[i];
                assert_int_equal(o.n_summed, c3);
                ok++;
            } else {
                aborted++;
            }
        } else {
            aborted++;
        }
        where[o.phase] += o.rc != 0;
        free(sum);
        sim_free(&s);
    }
    printf("  %s: %d rounds summed exactly, %d aborted cleanly below threshold (at phase 0-3 / finish: %d %d %d %d / %d)\n",
           plus ? "SecAgg+" : "SecAgg", ok, aborted, where[0], where[1], where[2], where[3], where[4]);
    assert_true(ok >= trials / 3); /* most SecAgg+ aborts: a small neighbourhood lost too many */
    assert_true(aborted >= 1);
}

static void test_property_secagg(void **state) { property_rounds(SEED, 120, 0); }
static void test_property_secagg_plus(void **state) { property_rounds(SEED + 1, 80, 1); }

/* No dropouts: the sum of everyone, and each phase's survivor sets reported. */
static void test_no_dropout(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 2);
    sim_t s;
    sim_init(&s, &r, 10, 0, 1000, 32, 0);
    plan_t pl = {0};
    uint32_t sum[1000];
    outcome_t o = run_round(&s, &pl, sum);
    assert_int_equal(o.rc, 0);
    assert_int_equal(o.n_summed, 10);
    check_sum(&s, sum);
    const uint32_t *ids;
    assert_int_equal(secagg_server_survivors(s.srv, 3, &ids), 10);
    sim_free(&s);
}

/* Fewer than t at each phase aborts there; fewer than t unmasking answers fails at finish. */
static void test_below_threshold_aborts(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 3);
    for (int ph = 0; ph < 4; ph++) {
        sim_t s;
        sim_init(&s, &r, 9, 6, 100, 32, 0);
        plan_t pl = {0};
        for (int i = 0; i < 4; i++) /* 4 of 9 drop: 5 < t = 6 */
            pl.drop[ph][i * 2] = 1;
        uint32_t sum[100];
        outcome_t o = run_round(&s, &pl, sum);
        assert_int_equal(o.rc, FN_ESTATE);
        assert_int_equal(o.phase, ph == 3 ? 4 : ph);
        sim_free(&s);
        /* exactly t survive: fine */
        sim_init(&s, &r, 9, 6, 100, 32, 0);
        memset(&pl, 0, sizeof pl);
        for (int i = 0; i < 3; i++)
            pl.drop[ph][i * 3] = 1;
        o = run_round(&s, &pl, sum);
        assert_int_equal(o.rc, 0);
        check_sum(&s, sum);
        sim_free(&s);
    }
}

/* Runs phases 0-1 for n clients with nobody dropping; returns the relay for client index `who`. */
static void setup_to_relay(sim_t *s, secagg_buf_t *relays)
{
    err_t e = {0};
    secagg_buf_t msg = {0}, list = {0};
    uint32_t n = s->p.n;
    assert_int_equal(secagg_server_new(&s->p, &s->srv, &e), 0);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(secagg_client_new(&s->p, s->ids[i], &s->cl[i], &msg, &e), 0);
        assert_int_equal(secagg_server_add_advert(s->srv, msg.data, msg.len, &e), 0);
        secagg_buf_free(&msg);
    }
    assert_int_equal(secagg_server_close_adverts(s->srv, &list, &e), 0);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(secagg_client_share_keys(s->cl[i], list.data, list.len, &msg, &e), 0);
        assert_int_equal(secagg_server_add_shares(s->srv, msg.data, msg.len, &e), 0);
        secagg_buf_free(&msg);
    }
    secagg_buf_free(&list);
    assert_int_equal(secagg_server_close_shares(s->srv, &e), 0);
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(secagg_server_relay(s->srv, s->ids[i], &relays[i], &e), 0);
}

static void test_tampered_ciphertext(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 4);
    err_t e = {0};
    for (int where = 0; where < 4; where++) {
        sim_t s;
        sim_init(&s, &r, 6, 4, 64, 32, 0);
        secagg_buf_t relays[6] = {{0}}, out = {0};
        setup_to_relay(&s, relays);
        uint8_t *first = relays[0].data + SECAGG_HEADER_LEN + 8;
        switch (where) {
        case 0: first[4 + SECAGG_NONCE_LEN + 10] ^= 1; break; /* ciphertext body */
        case 1: first[5] ^= 0x80; break;                     /* nonce */
        case 2: first[4 + SECAGG_NONCE_LEN + SECAGG_CT_LEN - 1] ^= 1; break; /* tag */
        case 3: { /* swap the sender ids of two entries: associated data no longer matches */
            uint8_t *second = first + (4 + SECAGG_NONCE_LEN + SECAGG_CT_LEN);
            uint8_t tmp[4];
            memcpy(tmp, first, 4);
            memcpy(first, second, 4);
            memcpy(second, tmp, 4);
            break;
        }
        }
        assert_int_equal(secagg_client_masked_input(s.cl[0], relays[0].data, relays[0].len, s.x[0], &out, &e),
                         FN_EAUTH);
        assert_null(out.data);
        assert_non_null(strstr(e.msg, "authenticate"));
        /* the client is aborted: it will not take part any more */
        assert_int_equal(secagg_client_masked_input(s.cl[0], relays[0].data, relays[0].len, s.x[0], &out, &e),
                         FN_ESTATE);
        /* an untouched relay is accepted by another client */
        assert_int_equal(secagg_client_masked_input(s.cl[1], relays[1].data, relays[1].len, s.x[1], &out, &e), 0);
        secagg_buf_free(&out);
        for (int i = 0; i < 6; i++)
            secagg_buf_free(&relays[i]);
        sim_free(&s);
    }
}

/* Full round up to the unmask answers; then shares are altered before they reach the server. */
static uint64_t get64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* targeted: alter the share by 8 times the inverse of its Lagrange weight, so that the rebuilt
 * secret moves by exactly 8 and stays well-formed: only a check outside Shamir can see it. (By 8,
 * not 1: X25519 clears the scalar's low three bits, so +1 can leave the key itself unchanged.) */
static void tamper_round(uint32_t n, uint32_t t, int drop_one, int n_answers, int kind, int expect, int targeted)
{
    rng_t r;
    rng_seed(&r, SEED + 5 + (uint64_t)kind);
    err_t e = {0};
    sim_t s;
    sim_init(&s, &r, n, t, 256, 32, 0);
    secagg_buf_t relays[MAXN] = {{0}}, msg = {0}, req = {0}, ans[MAXN] = {{0}};
    setup_to_relay(&s, relays);
    for (uint32_t i = drop_one; i < n; i++) {
        assert_int_equal(secagg_client_masked_input(s.cl[i], relays[i].data, relays[i].len, s.x[i], &msg, &e), 0);
        assert_int_equal(secagg_server_add_masked(s.srv, msg.data, msg.len, &e), 0);
        s.in3[i] = 1;
        secagg_buf_free(&msg);
    }
    assert_int_equal(secagg_server_close_masked(s.srv, &req, &e), 0);
    for (uint32_t i = drop_one; i < n; i++)
        assert_int_equal(secagg_client_unmask(s.cl[i], req.data, req.len, &ans[i], &e), 0);
    /* alter, in the first answer, the share of the given kind: add 1 to its first word */
    uint32_t cnt = ans[drop_one].data[SECAGG_HEADER_LEN] | ans[drop_one].data[SECAGG_HEADER_LEN + 1] << 8;
    int done = 0;
    for (uint32_t k = 0; k < cnt && !done; k++) {
        uint8_t *ent = ans[drop_one].data + SECAGG_HEADER_LEN + 4 + (size_t)k * (8 + SHAMIR_SHARE_LEN);
        if (ent[4] != kind)
            continue;
        done = 1;
        if (!targeted) {
            ent[8] ^= 1; /* stays a field element */
            continue;
        }
        uint64_t xr = s.ids[drop_one], w = 1;
        for (int i = 1; i < n_answers; i++) {
            uint64_t xj = s.ids[drop_one + i];
            w = shamir_mul(w, shamir_mul(xj, shamir_inv(shamir_sub(xj, xr))));
        }
        uint64_t y = shamir_add(get64le(ent + 8), shamir_mul(8, shamir_inv(w)));
        for (int b = 0; b < 8; b++)
            ent[8 + b] = (uint8_t)(y >> (8 * b));
    }
    assert_true(done);
    for (int i = 0; i < n_answers; i++)
        assert_int_equal(secagg_server_add_unmask(s.srv, ans[drop_one + i].data, ans[drop_one + i].len, &e), 0);
    uint32_t sum[256], ns;
    int rc = secagg_server_finish(s.srv, sum, &ns, &e);
    if (expect && rc != expect)
        fail_msg("tamper n %u t %u answers %d kind %d targeted %d: finish gave %d (%s)", n, t, n_answers, kind, targeted,
                 rc, rc ? e.msg : "accepted");
    else if (rc == 0) { /* undetectable with exactly t seed shares: the sum is wrong, never silently right */
        int differs = 0;
        for (uint32_t j = 0; j < 256; j++) {
            uint32_t want = 0;
            for (uint32_t i = 0; i < n; i++)
                want += s.in3[i] ? s.x[i][j] : 0;
            differs |= want != sum[j];
        }
        assert_true(differs);
    }
    for (uint32_t i = 0; i < n; i++) {
        secagg_buf_free(&relays[i]);
        secagg_buf_free(&ans[i]);
    }
    secagg_buf_free(&req);
    sim_free(&s);
}

static void test_tampered_share(void **state)
{
    /* more answers than t: any altered seed share is inconsistent */
    tamper_round(8, 5, 0, 8, SECAGG_SHARE_SEED, FN_EPROTO, 0);
    tamper_round(8, 5, 0, 8, SECAGG_SHARE_SEED, FN_EPROTO, 1);
    /* a dropped client's key share, more than t answers */
    tamper_round(8, 5, 1, 7, SECAGG_SHARE_KEY, FN_EPROTO, 0);
    /* exactly t answers: a gross change leaves a malformed secret; a subtle one (the secret off by
     * 8) is caught because the rebuilt key no longer matches the advertised public key */
    tamper_round(8, 5, 1, 5, SECAGG_SHARE_KEY, FN_EPROTO, 0);
    tamper_round(8, 5, 1, 5, SECAGG_SHARE_KEY, FN_EPROTO, 1);
    /* exactly t seed shares: a subtle change cannot be detected, but cannot pass as the right sum */
    tamper_round(8, 5, 0, 5, SECAGG_SHARE_SEED, 0, 1);
}

static void put32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* A hand-made UNMASK_REQ. */
static void make_req(secagg_buf_t *b, uint64_t round, const uint32_t *surv, uint32_t ns, const uint32_t *drop,
                     uint32_t nd)
{
    b->len = SECAGG_HEADER_LEN + 8 + 4 * ((size_t)ns + nd);
    b->data = calloc(1, b->len);
    b->data[0] = SECAGG_MSG_UNMASK_REQ;
    b->data[1] = 1;
    for (int i = 0; i < 8; i++)
        b->data[8 + i] = (uint8_t)(round >> (8 * i));
    uint8_t *q = b->data + SECAGG_HEADER_LEN;
    put32le(q, ns);
    for (uint32_t i = 0; i < ns; i++)
        put32le(q + 4 + 4 * i, surv[i]);
    q += 4 + 4 * ns;
    put32le(q, nd);
    for (uint32_t i = 0; i < nd; i++)
        put32le(q + 4 + 4 * i, drop[i]);
}

static void test_client_refusals(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 6);
    err_t e = {0};
    sim_t s;
    sim_init(&s, &r, 7, 5, 32, 32, 0);
    secagg_buf_t relays[7] = {{0}}, msg = {0}, req = {0};
    setup_to_relay(&s, relays);
    for (uint32_t i = 0; i < 7; i++) {
        assert_int_equal(secagg_client_masked_input(s.cl[i], relays[i].data, relays[i].len, s.x[i], &msg, &e), 0);
        secagg_buf_free(&msg);
        secagg_buf_free(&relays[i]);
    }
    uint64_t round = s.p.round_id;
    const uint32_t *id = s.ids;
    /* both kinds for client id[3] */
    uint32_t surv[7] = {id[0], id[1], id[2], id[3], id[4]}, drop[2] = {id[3], id[5]};
    make_req(&req, round, surv, 5, drop, 2);
    assert_int_equal(secagg_client_unmask(s.cl[0], req.data, req.len, &msg, &e), FN_EPROTO);
    assert_non_null(strstr(e.msg, "both"));
    assert_null(msg.data);
    assert_int_equal(secagg_client_unmask(s.cl[0], req.data, req.len, &msg, &e), FN_ESTATE); /* aborted */
    secagg_buf_free(&req);
    /* fewer than t survivors */
    uint32_t drop2[3] = {id[4], id[5], id[6]};
    make_req(&req, round, surv, 4, drop2, 3);
    assert_int_equal(secagg_client_unmask(s.cl[1], req.data, req.len, &msg, &e), FN_ESTATE);
    secagg_buf_free(&req);
    /* not listed as a survivor / listed as dropped */
    uint32_t surv3[5] = {id[0], id[1], id[3], id[4], id[5]}, drop3[1] = {id[2]};
    make_req(&req, round, surv3, 5, drop3, 1);
    assert_int_equal(secagg_client_unmask(s.cl[2], req.data, req.len, &msg, &e), FN_EPROTO);
    secagg_buf_free(&req);
    /* a repeated id and a stranger */
    uint32_t surv4[6] = {id[0], id[1], id[3], id[4], id[5], id[5]};
    make_req(&req, round, surv4, 6, NULL, 0);
    assert_int_equal(secagg_client_unmask(s.cl[3], req.data, req.len, &msg, &e), FN_EPROTO);
    secagg_buf_free(&req);
    uint32_t surv5[6] = {id[0], id[1], id[3], id[4], id[5], 999999};
    make_req(&req, round, surv5, 6, NULL, 0);
    assert_int_equal(secagg_client_unmask(s.cl[4], req.data, req.len, &msg, &e), FN_EPROTO);
    secagg_buf_free(&req);
    /* a good request is answered once, and only with one kind per client */
    uint32_t surv6[5] = {id[0], id[1], id[3], id[5], id[6]}, drop6[2] = {id[2], id[4]};
    make_req(&req, round, surv6, 5, drop6, 2);
    assert_int_equal(secagg_client_unmask(s.cl[5], req.data, req.len, &msg, &e), 0);
    assert_int_equal(msg.len, SECAGG_HEADER_LEN + 4 + 7 * (8 + SHAMIR_SHARE_LEN));
    for (int k = 0; k < 7; k++) {
        const uint8_t *ent = msg.data + SECAGG_HEADER_LEN + 4 + k * (8 + SHAMIR_SHARE_LEN);
        uint32_t owner = ent[0] | ent[1] << 8 | ent[2] << 16 | (uint32_t)ent[3] << 24;
        int dropped = owner == id[2] || owner == id[4];
        assert_int_equal(ent[4], dropped ? SECAGG_SHARE_KEY : SECAGG_SHARE_SEED);
    }
    secagg_buf_free(&msg);
    assert_int_equal(secagg_client_unmask(s.cl[5], req.data, req.len, &msg, &e), FN_ESTATE);
    secagg_buf_free(&req);
    sim_free(&s);

    /* SecAgg+: the whole neighbourhood survives, but fewer than t clients overall: refused */
    sim_init(&s, &r, 12, 7, 32, 32, 4);
    secagg_buf_t rel[12] = {{0}};
    setup_to_relay(&s, rel);
    assert_int_equal(secagg_client_masked_input(s.cl[0], rel[0].data, rel[0].len, s.x[0], &msg, &e), 0);
    secagg_buf_free(&msg);
    uint32_t nb[12], cnt;
    assert_int_equal(secagg_neighbours(&s.p, s.ids[0], nb, &cnt, &e), 0);
    assert_int_equal(cnt, 4);
    uint32_t sv[6] = {s.ids[0], nb[0], nb[1], nb[2], nb[3]};
    make_req(&req, s.p.round_id, sv, 5, NULL, 0); /* 5 < t = 7 */
    assert_int_equal(secagg_client_unmask(s.cl[0], req.data, req.len, &msg, &e), FN_ESTATE);
    assert_null(msg.data);
    secagg_buf_free(&req);
    /* enough clients overall, but only 2 of the 4 neighbours: 3 < t_nb = 4 in the neighbourhood */
    assert_int_equal(secagg_client_masked_input(s.cl[1], rel[1].data, rel[1].len, s.x[1], &msg, &e), 0);
    secagg_buf_free(&msg);
    assert_int_equal(secagg_neighbours(&s.p, s.ids[1], nb, &cnt, &e), 0);
    uint32_t sv2[12], ns2 = 0, dr2[12], nd2 = 0;
    for (uint32_t i = 0; i < 12; i++) {
        int is_nb_ = 0;
        for (uint32_t j = 0; j < cnt; j++)
            is_nb_ |= nb[j] == s.ids[i];
        if (is_nb_ && (nb[0] == s.ids[i] || nb[1] == s.ids[i]))
            dr2[nd2++] = s.ids[i];
        else
            sv2[ns2++] = s.ids[i];
    }
    assert_int_equal(ns2, 10);
    make_req(&req, s.p.round_id, sv2, ns2, dr2, nd2);
    assert_int_equal(secagg_client_unmask(s.cl[1], req.data, req.len, &msg, &e), FN_ESTATE);
    assert_non_null(strstr(e.msg, "neighbourhood"));
    assert_null(msg.data);
    secagg_buf_free(&req);
    for (int i = 0; i < 12; i++)
        secagg_buf_free(&rel[i]);
    sim_free(&s);
}

/* Every truncation and many random corruptions of each message are refused without a crash,
 * and a refused message leaves the server able to take the genuine one. */
static void test_malformed(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 7);
    err_t e = {0};
    sim_t s;
    sim_init(&s, &r, 5, 3, 16, 16, 0);
    secagg_buf_t adv[5] = {{0}}, list = {0}, sh[5] = {{0}}, relay[5] = {{0}}, mk[5] = {{0}}, req = {0}, un[5] = {{0}};
    assert_int_equal(secagg_server_new(&s.p, &s.srv, &e), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(secagg_client_new(&s.p, s.ids[i], &s.cl[i], &adv[i], &e), 0);
    uint8_t buf[4096];
#define MANGLE(call_on, m)                                                                         \
    do {                                                                                           \
        for (size_t L = 0; L < (m).len; L++) {                                                     \
            memcpy(buf, (m).data, L);                                                              \
            assert_int_not_equal(call_on(buf, L), 0);                                              \
        }                                                                                          \
        memcpy(buf, (m).data, (m).len);                                                            \
        buf[(m).len] = 0;                                                                          \
        assert_int_not_equal(call_on(buf, (m).len + 1), 0);                                        \
        for (int z = 0; z < 300; z++) {                                                            \
            memcpy(buf, (m).data, (m).len);                                                        \
            size_t at = rng_below(&r, (m).len < 40 ? (m).len : 40); /* header, counts, ids */      \
            buf[at] ^= (uint8_t)(1 + rng_below(&r, 255));                                          \
            (void)call_on(buf, (m).len);                                                           \
        }                                                                                          \
    } while (0)
    /* server side: phase messages to a fresh server each time so corruptions that happen to
     * be valid cannot pollute the real one */
    secagg_server_t *tmp = NULL;
#define SRV_ADV(b, l) secagg_server_add_advert(tmp, b, l, &e)
    assert_int_equal(secagg_server_new(&s.p, &tmp, &e), 0);
    MANGLE(SRV_ADV, adv[0]);
    secagg_server_free(tmp);
    for (int i = 0; i < 5; i++)
        assert_int_equal(secagg_server_add_advert(s.srv, adv[i].data, adv[i].len, &e), 0);
    assert_int_equal(secagg_server_add_advert(s.srv, adv[0].data, adv[0].len, &e), FN_EPROTO); /* twice */
    assert_int_equal(secagg_server_close_adverts(s.srv, &list, &e), 0);
    /* client side: a corrupted ADVERT_LIST aborts a client; a spare client per attempt */
#define CL_SHARE(b, l) cl_share_fresh(&s, b, l)
    int cl_share_fresh(sim_t *ss, const uint8_t *b, size_t l);
    MANGLE(CL_SHARE, list);
    for (int i = 0; i < 5; i++)
        assert_int_equal(secagg_client_share_keys(s.cl[i], list.data, list.len, &sh[i], &e), 0);
#define SRV_SH(b, l) secagg_server_add_shares(s.srv, b, l, &e)
    {
        /* SHARES are checked against the expected recipients: corruptions of header, count and ids
         * are refused (a valid-looking one would only be accepted for the right sender) */
        for (size_t L = 0; L < sh[0].len; L += 7) {
            memcpy(buf, sh[0].data, L);
            assert_int_not_equal(SRV_SH(buf, L), 0);
        }
    }
    memcpy(buf, sh[0].data, sh[0].len);
    buf[sh[0].len] = 0;
    assert_int_equal(SRV_SH(buf, sh[0].len + 1), FN_EPROTO); /* a trailing byte */
    for (int i = 0; i < 5; i++)
        assert_int_equal(secagg_server_add_shares(s.srv, sh[i].data, sh[i].len, &e), 0);
    assert_int_equal(secagg_server_close_shares(s.srv, &e), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(secagg_server_relay(s.srv, s.ids[i], &relay[i], &e), 0);
    assert_int_not_equal(secagg_server_relay(s.srv, 999999, &relay[0], &e), 0);
    for (int i = 0; i < 5; i++) {
        if (i == 0) {
            /* truncated relays abort client 0 without a crash; it then counts as dropped */
            memcpy(buf, relay[0].data, relay[0].len - 1);
            assert_int_not_equal(secagg_client_masked_input(s.cl[0], buf, relay[0].len - 1, s.x[0], &mk[0], &e), 0);
            continue;
        }
        assert_int_equal(secagg_client_masked_input(s.cl[i], relay[i].data, relay[i].len, s.x[i], &mk[i], &e), 0);
    }
#define SRV_MK(b, l) secagg_server_add_masked(s.srv, b, l, &e)
    for (size_t L = 0; L < mk[1].len; L += 3) {
        memcpy(buf, mk[1].data, L);
        assert_int_not_equal(SRV_MK(buf, L), 0);
    }
    memcpy(buf, mk[1].data, mk[1].len);
    buf[mk[1].len] = 0;
    assert_int_equal(SRV_MK(buf, mk[1].len + 1), FN_EPROTO); /* a trailing byte */
    buf[SECAGG_HEADER_LEN + 8 + 1] = 0xFF; /* a value outside Z_2^16 */
    buf[SECAGG_HEADER_LEN + 8 + 2] = 0x01;
    assert_int_equal(SRV_MK(buf, mk[1].len), FN_EPROTO);
    for (int i = 1; i < 5; i++)
        assert_int_equal(secagg_server_add_masked(s.srv, mk[i].data, mk[i].len, &e), 0);
    assert_int_equal(secagg_server_add_masked(s.srv, mk[1].data, mk[1].len, &e), FN_EPROTO); /* twice */
    assert_int_equal(secagg_server_close_masked(s.srv, &req, &e), 0);
    for (int i = 1; i < 5; i++)
        assert_int_equal(secagg_client_unmask(s.cl[i], req.data, req.len, &un[i], &e), 0);
#define SRV_UN(b, l) secagg_server_add_unmask(s.srv, b, l, &e)
    for (size_t L = 0; L < un[1].len; L++) {
        memcpy(buf, un[1].data, L);
        assert_int_not_equal(SRV_UN(buf, L), 0);
    }
    memcpy(buf, un[1].data, un[1].len);
    buf[un[1].len] = 0;
    assert_int_equal(SRV_UN(buf, un[1].len + 1), FN_EPROTO); /* a trailing byte */
    for (int z = 0; z < 300; z++) {
        memcpy(buf, un[1].data, un[1].len);
        size_t at = SECAGG_HEADER_LEN + rng_below(&r, 12);
        buf[at] ^= (uint8_t)(1 + rng_below(&r, 255)); /* count, owner id or kind */
        assert_int_not_equal(SRV_UN(buf, un[1].len), 0);
    }
    for (int i = 1; i < 5; i++)
        assert_int_equal(secagg_server_add_unmask(s.srv, un[i].data, un[i].len, &e), 0);
    uint32_t sum[16], ns;
    assert_int_equal(secagg_server_finish(s.srv, sum, &ns, &e), 0);
    assert_int_equal(ns, 4);
    s.in3[1] = s.in3[2] = s.in3[3] = s.in3[4] = 1;
    check_sum(&s, sum);
    /* out-of-order calls */
    assert_int_equal(secagg_server_add_advert(s.srv, adv[0].data, adv[0].len, &e), FN_ESTATE);
    assert_int_equal(secagg_server_finish(s.srv, sum, &ns, &e), FN_ESTATE);
    for (int i = 0; i < 5; i++) {
        secagg_buf_free(&adv[i]);
        secagg_buf_free(&sh[i]);
        secagg_buf_free(&relay[i]);
        secagg_buf_free(&mk[i]);
        secagg_buf_free(&un[i]);
    }
    secagg_buf_free(&list);
    secagg_buf_free(&req);
    sim_free(&s);
}

/* A throwaway client of the same round gets the (possibly corrupted) ADVERT_LIST. It must
 * refuse anything but the genuine list; since its own keys are not in the list, even the
 * genuine list is refused, so every call must fail. */
int cl_share_fresh(sim_t *ss, const uint8_t *b, size_t l)
{
    secagg_client_t *c = NULL;
    secagg_buf_t a = {0}, out = {0};
    err_t e;
    if (secagg_client_new(&ss->p, ss->ids[0], &c, &a, &e))
        return -100;
    int rc = secagg_client_share_keys(c, b, l, &out, &e);
    secagg_buf_free(&a);
    secagg_buf_free(&out);
    secagg_client_free(c);
    return rc;
}

/* Chi-square of the top byte of each ring value over 256 bins. */
static double chi2_top_byte(const uint8_t *vals_le, uint32_t m, uint32_t bits)
{
    double cnt[256] = {0};
    for (uint32_t i = 0; i < m; i++) {
        const uint8_t *p = vals_le + 4 * (size_t)i;
        uint32_t v = p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
        cnt[(v >> (bits - 8)) & 0xFF]++;
    }
    double exp_ = m / 256.0, chi = 0;
    for (int b = 0; b < 256; b++)
        chi += (cnt[b] - exp_) * (cnt[b] - exp_) / exp_;
    return chi;
}

/* Each masked vector the server receives looks uniform, even for an all-zero input; the same
 * statistic flags the unmasked input and a vector whose masks cancel (the control that shows the
 * test can fail). Threshold 400 for 255 degrees of freedom: p < 1e-8 for uniform data. */
static void test_masked_uniform(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 8);
    for (int variant = 0; variant < 3; variant++) {
        uint32_t bits = variant == 2 ? 20 : 32, m = 16384;
        sim_t s;
        sim_init(&s, &r, 6, 4, m, bits, variant == 1 ? 2 : 0);
        if (variant == 1) { /* SecAgg+ with n = 6, k = 2 */
            s.p.t_nb = 0;
        }
        for (uint32_t i = 0; i < 6; i++)
            memset(s.x[i], 0, (size_t)m * 4);
        for (uint32_t j = 0; j < m; j++)
            s.x[0][j] = (j * 7) % 5; /* a structured input for client 0 */
        s.keep_masked = 1;
        plan_t pl = {0};
        pl.drop[2][5] = 1; /* one dropout so the recovery path is exercised too */
        uint32_t *sum = calloc(m, 4);
        outcome_t o = run_round(&s, &pl, sum);
        assert_int_equal(o.rc, 0);
        check_sum(&s, sum);
        for (uint32_t i = 0; i < 5; i++) {
            assert_non_null(s.masked[i].data);
            double chi = chi2_top_byte(s.masked[i].data + SECAGG_HEADER_LEN + 8, m, bits);
            if (chi > 400)
                fail_msg("variant %d client %u: masked vector chi-square %.1f (uniform: about 255)", variant, i, chi);
        }
        /* controls (what the statistic says when masking is off): the plain input, and the sum */
        uint8_t *plain = malloc((size_t)m * 4);
        for (uint32_t j = 0; j < m; j++)
            put32le(plain + 4 * j, s.x[0][j]);
        assert_true(chi2_top_byte(plain, m, bits) > 10000);
        for (uint32_t j = 0; j < m; j++)
            put32le(plain + 4 * j, sum[j]);
        assert_true(chi2_top_byte(plain, m, bits) > 10000); /* unmasked sum: structured again */
        free(plain);
        free(sum);
        sim_free(&s);
    }
}

static void test_graph(void **state)
{
    err_t e = {0};
    uint32_t ids[300], nb[300], cnt, nb2[300], cnt2;
    for (uint32_t i = 0; i < 300; i++)
        ids[i] = 1000 - 3 * i;
    secagg_params_t p = {.round_id = 1, .n = 300, .ids = ids, .m = 1, .k = secagg_default_k(300)};
    assert_int_equal(p.k, 18);
    for (int i = 0; i < 32; i++)
        p.graph_seed[i] = (uint8_t)i;
    uint32_t deg_total = 0;
    static uint8_t adj[300][300];
    memset(adj, 0, sizeof adj);
    for (uint32_t i = 0; i < 300; i++) {
        assert_int_equal(secagg_neighbours(&p, ids[i], nb, &cnt, &e), 0);
        assert_int_equal(cnt, 18); /* k-regular */
        deg_total += cnt;
        for (uint32_t j = 0; j < cnt; j++) {
            assert_true(nb[j] != ids[i]);
            if (j)
                assert_true(nb[j] > nb[j - 1]);
            adj[i][(1000 - nb[j]) / 3] = 1;
        }
    }
    for (int i = 0; i < 300; i++)
        for (int j = 0; j < 300; j++)
            assert_int_equal(adj[i][j], adj[j][i]); /* symmetric */
    /* deterministic in the seed, and the order of ids does not matter */
    uint32_t rev[300];
    for (int i = 0; i < 300; i++)
        rev[i] = ids[299 - i];
    secagg_params_t p2 = p;
    p2.ids = rev;
    assert_int_equal(secagg_neighbours(&p, ids[7], nb, &cnt, &e), 0);
    assert_int_equal(secagg_neighbours(&p2, ids[7], nb2, &cnt2, &e), 0);
    assert_int_equal(cnt, cnt2);
    assert_memory_equal(nb, nb2, cnt * 4);
    /* another seed, another graph */
    p2.graph_seed[0] ^= 1;
    int differ = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(secagg_neighbours(&p, ids[i], nb, &cnt, &e), 0);
        assert_int_equal(secagg_neighbours(&p2, ids[i], nb2, &cnt2, &e), 0);
        differ |= memcmp(nb, nb2, cnt * 4) != 0;
    }
    assert_true(differ);
    /* odd k rounds up; k >= n-1 is the complete graph */
    p.k = 5;
    assert_int_equal(secagg_neighbours(&p, ids[0], nb, &cnt, &e), 0);
    assert_int_equal(cnt, 6);
    p.n = 7;
    p.k = 6;
    assert_int_equal(secagg_neighbours(&p, ids[0], nb, &cnt, &e), 0);
    assert_int_equal(cnt, 6);
    p.k = 0;
    assert_int_equal(secagg_neighbours(&p, ids[0], nb, &cnt, &e), 0);
    assert_int_equal(cnt, 6);
    assert_int_equal(secagg_neighbours(&p, 4242, nb, &cnt, &e), FN_EINVAL);
}

static void test_params(void **state)
{
    err_t e = {0};
    uint32_t ids[6] = {1, 2, 3, 4, 5, 6};
    secagg_params_t p = {.n = 6, .ids = ids, .m = 10};
    assert_int_equal(secagg_params_check(&p, &e), 0);
    assert_int_equal(secagg_default_t(6), 4);
    assert_int_equal(secagg_default_t(100), 67);
    assert_int_equal(secagg_default_t(3), 2);
    assert_int_equal(secagg_default_t(2), 2);
    assert_int_equal(secagg_default_k(1000), 20);
    p.t = 3; /* not more than half */
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.t = 7;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.t = 4;
    ids[2] = 0;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    ids[2] = 2;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    ids[2] = 3;
    p.bits = 4;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.bits = 33;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.bits = 0;
    p.m = 0;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.m = 1;
    p.n = 1;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    /* a client outside the selection cannot join */
    p.n = 6;
    secagg_client_t *c;
    secagg_buf_t a = {0};
    assert_int_equal(secagg_client_new(&p, 9, &c, &a, &e), FN_EINVAL);
    assert_null(c);
}

/* The PRG is the plain ChaCha20-IETF keystream (nonce 0) as little-endian words, across the
 * kernel's chunk boundaries; a stream added and subtracted cancels. */
static void test_prg_kernel(void **state)
{
    uint32_t m = 5000 + 17;
    uint8_t keys[3 * 32], nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
    randombytes_buf(keys, sizeof keys);
    uint8_t *ks = malloc((size_t)m * 4);
    uint32_t *y = calloc(m, 4);
    crypto_stream_chacha20_ietf(ks, (size_t)m * 4, nonce, keys + 32);
    int8_t plus[1] = {1};
    secagg_prg_apply(y, m, keys + 32, plus, 1);
    for (uint32_t i = 0; i < m; i++) {
        uint32_t w = ks[4 * i] | ks[4 * i + 1] << 8 | ks[4 * i + 2] << 16 | (uint32_t)ks[4 * i + 3] << 24;
        if (y[i] != w)
            fail_msg("word %u: kernel %08x, keystream %08x", i, y[i], w);
    }
    /* + s0 - s1 + s2 - s2 - s0 + s1 is the identity */
    uint8_t k6[6 * 32];
    memcpy(k6, keys, 32);
    memcpy(k6 + 32, keys + 32, 32);
    memcpy(k6 + 64, keys + 64, 32);
    memcpy(k6 + 96, keys + 64, 32);
    memcpy(k6 + 128, keys, 32);
    memcpy(k6 + 160, keys + 32, 32);
    int8_t sg[6] = {1, -1, 1, -1, -1, 1};
    uint32_t *z = calloc(m, 4);
    memcpy(z, y, (size_t)m * 4);
    secagg_prg_apply(z, m, k6, sg, 6);
    assert_memory_equal(z, y, (size_t)m * 4);
    free(ks);
    free(y);
    free(z);
}

/* ---------- encoding ---------- */
static void test_encoding_bound(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 9);
    err_t e = {0};
    for (int trial = 0; trial < 40; trial++) {
        uint32_t n = 2 + (uint32_t)rng_below(&r, 200), m = 1 + (uint32_t)rng_below(&r, 500);
        uint32_t bits = rng_below(&r, 2) ? 32 : 16 + (uint32_t)rng_below(&r, 16);
        double clip = 0.1 + 10 * rng_uniform(&r);
        double f = secagg_choose_scale(n, clip, bits);
        assert_true(f > 0);
        float *x = malloc((size_t)m * 4), *dec = malloc((size_t)m * 4);
        uint32_t *enc = malloc((size_t)m * 4), *sum = calloc(m, 4);
        double *exact = calloc(m, sizeof *exact);
        for (uint32_t u = 0; u < n; u++) {
            double ss = 0, scale = rng_uniform(&r) * 3 * clip; /* about half get clipped */
            for (uint32_t j = 0; j < m; j++) {
                x[j] = (float)(rng_normal(&r) * scale / sqrt((double)m));
                if (trial == 0) /* extreme: every client at +clip in one coordinate */
                    x[j] = j == 0 ? (float)(2 * clip) : 0.0f;
                ss += (double)x[j] * x[j];
            }
            double sc = sqrt(ss) > clip ? clip / sqrt(ss) : 1.0;
            for (uint32_t j = 0; j < m; j++)
                exact[j] += x[j] * sc;
            assert_int_equal(secagg_encode(x, m, clip, f, bits, enc, &e), 0);
            for (uint32_t j = 0; j < m; j++)
                sum[j] += enc[j];
        }
        secagg_decode(sum, m, f, bits, dec);
        double bound = n / f, worst = 0;
        for (uint32_t j = 0; j < m; j++) {
            double err = fabs((double)dec[j] - exact[j]);
            double tol = bound + fabs(exact[j]) * 1.2e-7; /* the float32 result's own rounding */
            if (err > tol)
                fail_msg("trial %d coordinate %u: error %g above n/f = %g", trial, j, err, bound);
            if (err / bound > worst)
                worst = err / bound;
        }
        if (trial == 0)
            assert_true(fabs(dec[0] - n * clip) <= bound + n * clip * 1.2e-7); /* no wrap at the extreme */
        free(x);
        free(dec);
        free(enc);
        free(sum);
        free(exact);
    }
    /* the bound is tight enough to mean something: coarse scales show errors of that order */
    assert_true(secagg_choose_scale(100, 1.0, 32) > 2.1e7 && secagg_choose_scale(100, 1.0, 32) < 2.2e7);
    assert_true(secagg_choose_scale(1u << 20, 1.0, 16) == 0); /* no room */
}

static void test_encoding_unbiased_and_errors(void **state)
{
    err_t e = {0};
    /* 0.3 units between two integers: rounding up 30% of the time, mean exact */
    double f = 10.0;
    float x[4096];
    uint32_t enc[4096];
    for (int i = 0; i < 4096; i++)
        x[i] = 0.13f / 64; /* tiny values so no clipping: z = 0.0203 */
    assert_int_equal(secagg_encode(x, 4096, 100.0, f, 32, enc, &e), 0);
    double mean = 0;
    for (int i = 0; i < 4096; i++) {
        assert_true(enc[i] == 0 || enc[i] == 1);
        mean += enc[i] / 4096.0;
    }
    double z = (double)(0.13f / 64) * f;
    assert_true(fabs(mean - z) < 5 * sqrt(z * (1 - z) / 4096)); /* E[round(z)] = z */
    /* negative values wrap to the top of the ring and decode back */
    x[0] = -1.0f;
    assert_int_equal(secagg_encode(x, 1, 100.0, f, 24, enc, &e), 0);
    assert_int_equal(enc[0], (1u << 24) - 10);
    float d;
    secagg_decode(enc, 1, f, 24, &d);
    assert_true(d == -1.0f);
    /* bad input */
    x[1] = NAN;
    assert_int_equal(secagg_encode(x, 2, 1.0, f, 32, enc, &e), FN_EINVAL);
    x[1] = INFINITY;
    assert_int_equal(secagg_encode(x, 2, 1.0, f, 32, enc, &e), FN_EINVAL);
    assert_int_equal(secagg_encode(x, 1, 1.0, 1e10, 32, enc, &e), FN_EINVAL); /* C f does not fit */
    assert_int_equal(secagg_encode(x, 1, -1.0, f, 32, enc, &e), FN_EINVAL);
}

/* Encoded floats through a round: the decoded sum is within n/f of the clipped plain sum. */
static void test_encode_round_decode(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 10);
    err_t e = {0};
    uint32_t n = 12, m = 500, bits = 32;
    double clip = 1.0, f = secagg_choose_scale(n, clip, bits);
    sim_t s;
    sim_init(&s, &r, n, 0, m, bits, 0);
    double exact[500] = {0};
    float x[500];
    plan_t pl = {0};
    pl.drop[2][3] = pl.drop[2][7] = 1;
    for (uint32_t u = 0; u < n; u++) {
        double ss = 0;
        for (uint32_t j = 0; j < m; j++) {
            x[j] = (float)(rng_normal(&r) * 0.1);
            ss += (double)x[j] * x[j];
        }
        double sc = sqrt(ss) > clip ? clip / sqrt(ss) : 1.0;
        if (!pl.drop[2][u])
            for (uint32_t j = 0; j < m; j++)
                exact[j] += x[j] * sc;
        assert_int_equal(secagg_encode(x, m, clip, f, bits, s.x[u], &e), 0);
    }
    uint32_t sum[500];
    float dec[500];
    outcome_t o = run_round(&s, &pl, sum);
    assert_int_equal(o.rc, 0);
    check_sum(&s, sum);
    secagg_decode(sum, m, f, bits, dec);
    for (uint32_t j = 0; j < m; j++)
        assert_true(fabs(dec[j] - exact[j]) <= n / f + fabs(exact[j]) * 1.2e-7);
    sim_free(&s);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    printf("test_secagg: structural seed %llu\n", (unsigned long long)SEED);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_graph),
        cmocka_unit_test(test_prg_kernel),
        cmocka_unit_test(test_no_dropout),
        cmocka_unit_test(test_below_threshold_aborts),
        cmocka_unit_test(test_property_secagg),
        cmocka_unit_test(test_property_secagg_plus),
        cmocka_unit_test(test_tampered_ciphertext),
        cmocka_unit_test(test_tampered_share),
        cmocka_unit_test(test_client_refusals),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_masked_uniform),
        cmocka_unit_test(test_encoding_bound),
        cmocka_unit_test(test_encoding_unbiased_and_errors),
        cmocka_unit_test(test_encode_round_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
