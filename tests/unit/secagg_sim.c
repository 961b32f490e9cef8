/* secagg_sim.c: the round simulator of the secure-aggregation tests (see secagg_sim.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "secagg_sim.h"

uint32_t thr_of(const secagg_params_t *p)
{
    if (p->k == 0)
        return p->t ? p->t : secagg_default_t(p->n);
    uint32_t k = p->k + (p->k & 1);
    if (k >= p->n - 1)
        return p->t ? p->t : secagg_default_t(p->n);
    return p->t_nb ? p->t_nb : secagg_default_t_nb(k);
}

int is_nb(const secagg_params_t *p, uint32_t a, uint32_t b)
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
outcome_t run_round(sim_t *s, const plan_t *pl, uint32_t *sum)
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

void sim_free(sim_t *s)
{
    for (uint32_t i = 0; i < s->p.n; i++) {
        secagg_client_free(s->cl[i]);
        secagg_buf_free(&s->masked[i]);
        free(s->x[i]);
    }
    free(s->x);
    secagg_server_free(s->srv);
}

void sim_init(sim_t *s, rng_t *r, uint32_t n, uint32_t t, uint32_t m, uint32_t bits, uint32_t k)
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

void check_sum(const sim_t *s, const uint32_t *sum)
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

void random_plan(rng_t *r, plan_t *pl, uint32_t n)
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

void put32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
