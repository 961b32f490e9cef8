/* The distillation loss (engine_distill_loss): alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) +
 * (1 - alpha) * CE. Its forward against an independent double-precision reference, its gradient
 * against central finite differences of that reference (double) and of the op's own float
 * forward, over temperatures, mixes, label smoothing, hard labels and soft targets; the identities
 * with the plain cross-entropy (alpha 0) and engine_kl_div (alpha 1); no gradient reaches the
 * teacher; and its errors. Each gradient check proves it can fail by corrupting one element. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "engine/graph.h"
#include "engine/ops.h"

enum { B = 5, C = 7 };

typedef struct {
    double T, alpha, sm;
    int soft; /* 0: hard labels y; 1: soft targets q */
} kd_t;

static double lse(const double *z, int n, double invT)
{
    double mx = z[0] * invT, s = 0.0;
    for (int c = 1; c < n; c++)
        mx = fmax(mx, z[c] * invT);
    for (int c = 0; c < n; c++)
        s += exp(z[c] * invT - mx);
    return mx + log(s);
}

/* Written from the definition, term by term, in double. */
static double ref_loss(const double *s, const float *t, const uint8_t *y, const float *q, const kd_t *k)
{
    double total = 0.0;
    for (int r = 0; r < B; r++) {
        const double *sr = s + r * C;
        double tr[C];
        for (int c = 0; c < C; c++)
            tr[c] = t[r * C + c];
        double ls_T = lse(sr, C, 1.0 / k->T), lt_T = lse(tr, C, 1.0 / k->T), ls_1 = lse(sr, C, 1.0);
        double kl = 0.0, ce = 0.0;
        for (int c = 0; c < C; c++) {
            double pt = exp(tr[c] / k->T - lt_T);
            kl += pt * log(pt / exp(sr[c] / k->T - ls_T));
            double target = k->soft ? q[r * C + c] : (double)(c == y[r]);
            target = (1.0 - k->sm) * target + k->sm / C;
            ce -= target * (sr[c] - ls_1);
        }
        total += k->alpha * k->T * k->T * kl + (1.0 - k->alpha) * ce;
    }
    return total / B;
}

/* The op on float logits; with grad, d(seed * loss)/ds into grad and d/dt into tgrad. */
static double op_loss(const float *s, const float *t, const uint8_t *y, const float *q, const kd_t *k, float seed,
                      float *grad, float *tgrad)
{
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t sh[2] = {B, C}, s1[1] = {B};
    if (grad)
        memset(grad, 0, sizeof(float) * B * C);
    engine_graph_set_grad(g, grad != NULL);
    engine_tensor_t *st = engine_graph_view(g, (void *)s, grad, ENGINE_F32, 2, sh);
    engine_tensor_t *tt = engine_graph_view(g, (void *)t, tgrad, ENGINE_F32, 2, sh);
    if (grad)
        st->requires_grad = 1, tt->requires_grad = tgrad != NULL;
    engine_tensor_t *lt = k->soft ? engine_graph_view(g, (void *)q, NULL, ENGINE_F32, 2, sh)
                                  : engine_graph_view(g, (void *)y, NULL, ENGINE_U8, 1, s1);
    engine_tensor_t *l = engine_distill_loss(g, st, tt, lt, (float)k->T, (float)k->alpha, (float)k->sm);
    err_t e = {0};
    if (engine_graph_error(g, &e))
        fail_msg("distill: %s", e.msg);
    assert_non_null(l);
    double v = ((const float *)l->data)[0];
    if (grad)
        assert_int_equal(engine_graph_backward(g, l, &seed, &e), 0);
    engine_graph_free(g);
    return v;
}

/* max|num - ana| / max|num|, after checking that a 5% corruption of one element exceeds tol. */
static double compare(const double *num, const float *ana, int n, double tol)
{
    double maxnum = 0.0, maxdiff = 0.0, corrupt = 0.0;
    for (int i = 0; i < n; i++)
        maxnum = fmax(maxnum, fabs(num[i]));
    assert_true(maxnum > 1e-3);
    for (int i = 0; i < n; i++) {
        maxdiff = fmax(maxdiff, fabs(num[i] - ana[i]));
        corrupt = fmax(corrupt, fabs(num[i] - (ana[i] + (i == n / 2 ? 0.05 * maxnum : 0.0))));
    }
    assert_true(corrupt / maxnum > tol);
    return maxdiff / maxnum;
}

static void make_case(uint64_t seed, float *s, double *sd, float *t, uint8_t *y, float *q)
{
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < B * C; i++) {
        s[i] = (float)(2.0 * rng_normal(&r));
        sd[i] = s[i];
        t[i] = (float)(3.0 * rng_normal(&r));
    }
    for (int i = 0; i < B; i++) {
        y[i] = (uint8_t)rng_below(&r, C);
        double z = 0.0;
        for (int c = 0; c < C; c++)
            z += (q[i * C + c] = (float)exp(rng_normal(&r)));
        for (int c = 0; c < C; c++)
            q[i * C + c] = (float)(q[i * C + c] / z);
    }
}

static void check_case(const kd_t *k, uint64_t seed)
{
    float s[B * C], t[B * C], q[B * C], grad[B * C], tgrad[B * C] = {0};
    double sd[B * C], num[B * C];
    uint8_t y[B];
    make_case(seed, s, sd, t, y, q);
    const float seedv = 0.6f;
    double ref = ref_loss(sd, t, y, q, k), got = op_loss(s, t, y, q, k, seedv, grad, tgrad);
    if (!(fabs(got - ref) <= 2e-6 * fmax(1.0, fabs(ref))))
        fail_msg("T=%g alpha=%g sm=%g soft=%d: loss %.9g, reference %.9g", k->T, k->alpha, k->sm, k->soft, got, ref);
    for (int i = 0; i < B * C; i++) /* the teacher is a constant */
        assert_true(tgrad[i] == 0.0f);

    const double h = 1e-6;
    for (int i = 0; i < B * C; i++) {
        double keep = sd[i];
        sd[i] = keep + h;
        double lp = ref_loss(sd, t, y, q, k);
        sd[i] = keep - h;
        double lm = ref_loss(sd, t, y, q, k);
        sd[i] = keep;
        num[i] = seedv * (lp - lm) / (2 * h);
    }
    double rel_d = compare(num, grad, B * C, 1e-4);

    const float eps = 1e-2f;
    for (int i = 0; i < B * C; i++) {
        float keep = s[i];
        s[i] = keep + eps;
        double lp = op_loss(s, t, y, q, k, 0, NULL, NULL);
        s[i] = keep - eps;
        double lm = op_loss(s, t, y, q, k, 0, NULL, NULL);
        s[i] = keep;
        num[i] = seedv * (lp - lm) / ((double)(keep + eps) - (double)(keep - eps));
    }
    double rel_f = compare(num, grad, B * C, 1e-2);
    print_message("T=%-4g alpha=%-4g smoothing=%-4g %s: grad rel. error vs double FD %.2e, vs op FD %.2e\n", k->T,
                  k->alpha, k->sm, k->soft ? "soft" : "hard", rel_d, rel_f);
    if (rel_d > 1e-4 || rel_f > 1e-2)
        fail_msg("gradient off: %.3e (double FD), %.3e (op FD)", rel_d, rel_f);
}

static void test_gradients(void **state)
{
    (void)state;
    const kd_t cases[] = {
        {1, 0.5, 0, 0}, {4, 0.9, 0, 0}, {4, 0.5, 0.1, 0}, {2, 1.0, 0, 0},  {8, 0.0, 0, 0},
        {3, 0.7, 0, 1}, {4, 0.5, 0.2, 1}, {0.5, 0.3, 0, 0}, {20, 0.9, 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        check_case(&cases[i], 100 + i);
}

/* alpha 0 is engine_softmax_xent, alpha 1 engine_kl_div: value and gradient. */
static void test_identities(void **state)
{
    (void)state;
    float s[B * C], t[B * C], q[B * C], g_kd[B * C], g_ref[B * C];
    double sd[B * C];
    uint8_t y[B];
    make_case(7, s, sd, t, y, q);
    int64_t sh[2] = {B, C}, s1[1] = {B};
    for (int which = 0; which < 2; which++) {
        kd_t k = {which ? 3.0 : 1.0, which ? 1.0 : 0.0, which ? 0.0 : 0.1, 0};
        double v = op_loss(s, t, y, q, &k, 1.0f, g_kd, NULL);
        engine_graph_t *g = engine_graph_create(0, 1);
        memset(g_ref, 0, sizeof g_ref);
        engine_tensor_t *st = engine_graph_view(g, s, g_ref, ENGINE_F32, 2, sh);
        st->requires_grad = 1;
        engine_tensor_t *l = which ? engine_kl_div(g, st, engine_graph_view(g, t, NULL, ENGINE_F32, 2, sh), 3.0f)
                                   : engine_softmax_xent(g, st, engine_graph_view(g, y, NULL, ENGINE_U8, 1, s1), 0.1f);
        assert_non_null(l);
        err_t e = {0};
        assert_int_equal(engine_graph_backward(g, l, NULL, &e), 0);
        assert_float_equal(v, ((float *)l->data)[0], 1e-5);
        for (int i = 0; i < B * C; i++)
            assert_float_equal(g_kd[i], g_ref[i], 1e-6);
        engine_graph_free(g);
    }
    /* and the mix matters: alpha 0.5 is neither */
    kd_t half = {3.0, 0.5, 0.0, 0};
    kd_t ce = {3.0, 0.0, 0.0, 0};
    assert_true(fabs(op_loss(s, t, y, q, &half, 1, NULL, NULL) - op_loss(s, t, y, q, &ce, 1, NULL, NULL)) > 1e-3);
}

/* A student equal to the teacher has zero KL: with alpha 1 the loss and gradient vanish. */
static void test_student_equals_teacher(void **state)
{
    (void)state;
    float s[B * C], t[B * C], q[B * C], g[B * C];
    double sd[B * C];
    uint8_t y[B];
    make_case(9, s, sd, t, y, q);
    kd_t k = {4.0, 1.0, 0.0, 0};
    double v = op_loss(t, t, y, q, &k, 1.0f, g, NULL);
    assert_true(fabs(v) < 1e-6);
    for (int i = 0; i < B * C; i++)
        assert_true(fabs(g[i]) < 1e-6);
}

static float zbuf[12], tbuf[12];
static uint8_t ybuf[3] = {0, 1, 9};
static engine_tensor_t *build(engine_graph_t *g, int tshape, int label_kind, float T, float alpha, float sm)
{
    int64_t s[2] = {3, 4}, t2[2] = {4, 3}, s1[1] = {3};
    engine_tensor_t *st = engine_graph_view(g, zbuf, NULL, ENGINE_F32, 2, s);
    engine_tensor_t *tt = engine_graph_view(g, tbuf, NULL, ENGINE_F32, 2, tshape ? t2 : s);
    engine_tensor_t *lab = label_kind == 0   ? engine_graph_view(g, ybuf, NULL, ENGINE_U8, 1, s1)
                           : label_kind == 1 ? engine_graph_view(g, tbuf, NULL, ENGINE_F32, 1, s1)
                                             : engine_graph_view(g, ybuf, NULL, ENGINE_U8, 1, s1);
    if (label_kind == 0)
        ybuf[2] = 2;
    else if (label_kind == 2)
        ybuf[2] = 9;
    return engine_distill_loss(g, st, tt, lab, T, alpha, sm);
}

static void expect_error(int tshape, int label_kind, float T, float alpha, float sm, const char *needle)
{
    engine_graph_t *g = engine_graph_create(0, 1);
    assert_null(build(g, tshape, label_kind, T, alpha, sm));
    err_t e = {0};
    assert_int_equal(engine_graph_error(g, &e), FN_EINVAL);
    if (!strstr(e.msg, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, e.msg);
    engine_graph_free(g);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error(1, 0, 4, 0.5f, 0, "logits must both be float32 [B, C]");
    expect_error(0, 1, 4, 0.5f, 0, "must be uint8 [B] or float32 soft targets");
    expect_error(0, 2, 4, 0.5f, 0, "label 9 of sample 2 is not below the 4 classes");
    expect_error(0, 0, 0, 0.5f, 0, "temperature 0 must be in (0, 1e4]");
    expect_error(0, 0, NAN, 0.5f, 0, "temperature nan");
    expect_error(0, 0, 4, 1.5f, 0, "alpha 1.5 in [0, 1]");
    expect_error(0, 0, 4, 0.5f, 1.0f, "label smoothing 1 in [0, 1)");
    /* and a good call on the same buffers succeeds (the errors above are not from the fixture) */
    engine_graph_t *g = engine_graph_create(0, 1);
    assert_non_null(build(g, 0, 0, 4, 0.5f, 0.1f));
    engine_graph_free(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_identities),
        cmocka_unit_test(test_student_equals_teacher),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
