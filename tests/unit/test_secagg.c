/* Secure aggregation (SecAgg and SecAgg+): whole rounds driven through the message API with
 * dropouts at every phase, the threshold and refusal rules, tampering and malformed messages.
 * Structural randomness (n, t, m, bits, who drops) comes from a fixed seed printed at start;
 * keys, seeds and masks come from libsodium. The simulator: secagg_sim.h. The pieces (masks,
 * graph, parameters, kernel, encoding): test_secagg_parts.c. */
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
#include "secagg_sim.h"

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

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    printf("test_secagg: structural seed %llu\n", (unsigned long long)SEED);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_dropout),
        cmocka_unit_test(test_below_threshold_aborts),
        cmocka_unit_test(test_property_secagg),
        cmocka_unit_test(test_property_secagg_plus),
        cmocka_unit_test(test_tampered_ciphertext),
        cmocka_unit_test(test_tampered_share),
        cmocka_unit_test(test_client_refusals),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests_name("test_secagg", tests, NULL, NULL);
}
