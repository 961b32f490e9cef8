/* Secure aggregation with distributed DP through the real drivers (server/secagg_round.h,
 * client/secagg_site.h) in memory: the "dp" parameters reach the sites, which recompute the plan
 * and its scale; the decoded sum is the plain sum plus noise of the planned variance, with and
 * without a dropout; the noise assumes max(t, min_summed); malformed parameters are refused.
 * Statistical checks allow 6 standard errors (false alarm about 2e-9 each). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "client/secagg_site.h"
#include "server/secagg_round.h"

#define N 7
#define M 4096

typedef struct outbox {
    int count;
    uint32_t id[4 * N];
    char type[4 * N][24];
    secagg_buf_t msg[4 * N];
} outbox_t;

static void collect(void *ctx, uint32_t id, const char *type, const uint8_t *data, size_t len)
{
    outbox_t *o = ctx;
    o->id[o->count] = id;
    strcpy(o->type[o->count], type);
    o->msg[o->count].data = malloc(len);
    memcpy(o->msg[o->count].data, data, len);
    o->msg[o->count].len = len;
    o->count++;
}

static void outbox_clear(outbox_t *o)
{
    for (int i = 0; i < o->count; i++)
        secagg_buf_free(&o->msg[i]);
    o->count = 0;
}

static const secagg_round_config_t k_cfg = {
    .threshold = 4, .bits = 32, .clip = 1.0, .dp = 1, .dp_sigma = 0.5, .dp_min_summed = 5};

static void test_info(void **state)
{
    (void)state;
    uint32_t ids[N] = {9, 3, 4, 12, 5, 6, 7};
    secagg_round_t *r;
    err_t e;
    assert_int_equal(secagg_round_new(&k_cfg, 77, 5, ids, N, M, &r, &e), 0);
    const dp_ddp_plan_t *plan = secagg_round_dp_plan(r);
    assert_non_null(plan);
    assert_int_equal(plan->assumed, 5); /* max(t = 4, min_summed = 5) */
    assert_int_equal(plan->clients, N);
    assert_true(plan->sigma == 0.5 && plan->dim == M);
    dp_ddp_plan_t again;
    assert_int_equal(secagg_round_plan_dp(&k_cfg, N, M, &again, &e), 0);
    assert_memory_equal(&again, plan, sizeof again);
    json_t *info = secagg_round_info(r, 12);
    secagg_params_t p;
    uint32_t *got, self;
    double clip, f;
    assert_int_equal(secagg_site_parse(info, &p, &got, &self, &clip, &f, &e), 0);
    free(got);
    assert_true(f == plan->scale); /* the site's own plan gives the server's scale */
    assert_true(f < secagg_choose_scale(N, 1.0, 32));
    /* the protocol threshold is raised to the count the noise assumes: no smaller sum unmasks */
    assert_int_equal(p.t, 5);
    /* refused: an assumed count above t (a sum of t inputs would carry less noise) or 0, a
     * negative multiplier, a missing count */
    json_t *dp = json_object_get(info, "dp");
    int bad[] = {0, 6, 8};
    for (int i = 0; i < 3; i++) {
        json_object_set_new(dp, "assumed", json_integer(bad[i]));
        assert_int_equal(secagg_site_parse(info, &p, &got, &self, &clip, &f, &e), FN_EPROTO);
    }
    json_object_set_new(dp, "assumed", json_integer(4)); /* fewer assumed: more noise each, allowed */
    assert_int_equal(secagg_site_parse(info, &p, &got, &self, &clip, &f, &e), 0);
    free(got);
    json_object_set_new(dp, "sigma", json_real(-1));
    assert_int_equal(secagg_site_parse(info, &p, &got, &self, &clip, &f, &e), FN_EPROTO);
    json_object_set_new(dp, "sigma", json_real(0.5));
    json_object_del(dp, "assumed");
    assert_int_equal(secagg_site_parse(info, &p, &got, &self, &clip, &f, &e), FN_EPROTO);
    json_decref(info);
    secagg_round_free(r);
    /* a ring that cannot hold the noise: the round is refused with the plan's reason */
    secagg_round_config_t small = k_cfg;
    small.bits = 8;
    small.clip = 1.0;
    assert_int_equal(secagg_round_new(&small, 78, 5, ids, N, M, &r, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "distributed DP"));
}

/* One round; site i stops after phase drop[i] (4: never). Fills the decoded sum's noise: the
 * decoded sum minus the plain sum of the inputs of the sites that sent their masked input.
 * Returns -1, or the phase whose close aborted the round (then nothing was decoded). */
static int run_round(const int drop[N], double *resid, uint32_t *n_summed, dp_ddp_plan_t *plan_out)
{
    static float inputs[N][M];
    static float sum[M];
    uint32_t ids[N];
    secagg_site_t *site[N] = {0};
    for (int i = 0; i < N; i++) {
        ids[i] = (uint32_t)(2 * i + 1);
        for (int j = 0; j < M; j++)
            inputs[i][j] = (float)(0.01 * sin(i * 7.0 + j)); /* norm 0.45, below the clip */
    }
    secagg_round_t *r;
    err_t e;
    assert_int_equal(secagg_round_new(&k_cfg, 91, 5, ids, N, M, &r, &e), 0);
    *plan_out = *secagg_round_dp_plan(r);
    for (int i = 0; i < N; i++) {
        json_t *info = secagg_round_info(r, ids[i]);
        secagg_buf_t adv;
        assert_int_equal(secagg_site_begin(info, inputs[i], M, &site[i], &adv, &e), 0);
        json_decref(info);
        assert_int_equal(secagg_round_add(r, ids[i], "sa_advert", adv.data, adv.len, &e), 0);
        secagg_buf_free(&adv);
    }
    outbox_t out = {0};
    int aborted = -1;
    for (int phase = 0; phase < 4; phase++) {
        outbox_clear(&out);
        if (secagg_round_close(r, collect, &out, sum, n_summed, &e) < 0) {
            aborted = phase;
            break;
        }
        if (phase == 3)
            break;
        for (int k = 0; k < out.count; k++) {
            int i = (int)(out.id[k] - 1) / 2;
            if (drop[i] <= phase + 1)
                continue;
            const char *type;
            secagg_buf_t reply;
            assert_int_equal(
                secagg_site_step(site[i], out.type[k], out.msg[k].data, out.msg[k].len, &type, &reply, &e), 0);
            assert_int_equal(secagg_round_add(r, ids[i], type, reply.data, reply.len, &e), 0);
            secagg_buf_free(&reply);
        }
    }
    outbox_clear(&out);
    for (int i = 0; i < N; i++)
        secagg_site_free(site[i]);
    for (int j = 0; j < M && aborted < 0; j++) {
        double want = 0;
        for (int i = 0; i < N; i++)
            if (drop[i] >= 3)
                want += inputs[i][j];
        resid[j] = sum[j] - want;
    }
    secagg_round_free(r);
    return aborted;
}

static void check_noise(const int drop[N], uint32_t want_n)
{
    static double resid[M];
    uint32_t n = 0;
    dp_ddp_plan_t plan;
    assert_int_equal(run_round(drop, resid, &n, &plan), -1);
    assert_int_equal(n, want_n);
    double s = 0, ss = 0;
    for (int j = 0; j < M; j++) {
        s += resid[j];
        ss += resid[j] * resid[j];
    }
    /* each survivor's share has variance s2 integer units; decoded: / f^2 */
    double mean = s / M, var = ss / M - mean * mean;
    double target = n * (double)plan.var_num / (double)plan.var_den / (plan.scale * plan.scale);
    double z = dp_ddp_noise_multiplier(&plan, n);
    print_message("  %u summed (noise assumes %u): noise variance / planned = %.4f (+-%.4f allowed), multiplier %.4f\n",
                  n, plan.assumed, var / target, 6 * sqrt(2.0 / M), z);
    assert_true(fabs(var / target - 1) < 6 * sqrt(2.0 / M));
    assert_true(fabs(mean) < 6 * sqrt(target / M));
    assert_true(fabs(z / (0.5 * sqrt(n / 5.0)) - 1) < 1e-9);
}

static void test_noise_in_sum(void **state)
{
    (void)state;
    const int all[N] = {4, 4, 4, 4, 4, 4, 4};
    check_noise(all, 7);
    /* one site leaves after its shares, one after its masked input (its input counts) */
    const int some[N] = {4, 2, 4, 3, 4, 4, 4};
    check_noise(some, 6);
}

/* The noise assumes 5 inputs (min_fit 5) while the configured threshold is 4: the round raises
 * its threshold to 5, so when only 4 masked inputs arrive nothing is unmasked (a sum of 4 would
 * carry less noise than accounted). */
static void test_no_sum_below_assumed(void **state)
{
    (void)state;
    static double resid[M];
    uint32_t n = 0;
    dp_ddp_plan_t plan;
    const int three_leave[N] = {4, 2, 4, 2, 4, 2, 4}; /* 3 leave after their shares */
    int aborted = run_round(three_leave, resid, &n, &plan);
    assert_int_equal(plan.assumed, 5);
    assert_true(aborted >= 2); /* at the masked-input or unmasking close, never a decoded sum */
    assert_int_equal(n, 0);
    /* fewer selected than a sum must hold: refused before any key is exchanged */
    uint32_t ids[4] = {1, 2, 3, 4};
    secagg_round_t *r;
    err_t e;
    secagg_round_config_t c = k_cfg;
    c.threshold = 3;
    assert_int_equal(secagg_round_new(&c, 92, 5, ids, 4, M, &r, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "min_fit"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_info),
        cmocka_unit_test(test_noise_in_sum),
        cmocka_unit_test(test_no_sum_below_assumed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
