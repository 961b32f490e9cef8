/* The soft-target cross-entropy (engine_softmax_xent_soft_smoothed), the loss of MixUp, CutMix
 * and mosaic batches: its forward against an independent double-precision reference, its
 * gradient against central finite differences of that reference (in double) and of the op
 * itself (float, as the other op tests), with and without label smoothing, for distributions,
 * MixUp-style two-label rows and rows that do not sum to 1; the identities with the hard-label
 * loss and with timm's smoothed mixup targets; and its errors. Each gradient check proves it can
 * fail by corrupting one element. */
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

enum { B = 6, C = 5 };

/* -mean_r sum_c ((1-s) q_rc + s/C) log softmax(z_r)_c, all in double. */
static double ref_loss(const double *z, const float *q, int nb, int nc, double s)
{
    double total = 0.0;
    for (int r = 0; r < nb; r++) {
        const double *zr = z + (size_t)r * nc;
        double mx = zr[0];
        for (int c = 1; c < nc; c++)
            mx = fmax(mx, zr[c]);
        double se = 0.0;
        for (int c = 0; c < nc; c++)
            se += exp(zr[c] - mx);
        double lse = mx + log(se);
        for (int c = 0; c < nc; c++)
            total -= ((1.0 - s) * q[(size_t)r * nc + c] + s / nc) * (zr[c] - lse);
    }
    return total / nb;
}

/* Runs the op on float logits; returns the loss and, with grad, d(seed * loss)/dz. */
static double op_loss(const float *z, const float *q, int nb, int nc, float s, float seed, float *grad)
{
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t sh[2] = {nb, nc};
    if (grad)
        memset(grad, 0, (size_t)nb * nc * sizeof *grad);
    engine_graph_set_grad(g, grad != NULL);
    engine_tensor_t *zt = engine_graph_view(g, (void *)z, grad, ENGINE_F32, 2, sh);
    if (grad)
        zt->requires_grad = 1;
    engine_tensor_t *qt = engine_graph_view(g, (void *)q, NULL, ENGINE_F32, 2, sh);
    engine_tensor_t *l = engine_softmax_xent_soft_smoothed(g, zt, qt, s);
    err_t e = {0};
    if (engine_graph_error(g, &e))
        fail_msg("softmax_xent_soft: %s", e.msg);
    assert_non_null(l);
    double v = ((const float *)l->data)[0];
    if (grad) {
        assert_int_equal(engine_graph_backward(g, l, &seed, &e), 0);
    }
    engine_graph_free(g);
    return v;
}

/* Worst relative error max|num - ana| / max|num|, after checking a 5% corruption of one element
 * would be caught at tol. */
static double compare(const double *num, const float *ana, int n, double tol)
{
    double maxnum = 0.0, maxdiff = 0.0, corrupt = 0.0;
    for (int k = 0; k < n; k++)
        maxnum = fmax(maxnum, fabs(num[k]));
    assert_true(maxnum > 1e-3); /* a vanishing gradient would check nothing */
    for (int k = 0; k < n; k++) {
        maxdiff = fmax(maxdiff, fabs(num[k] - ana[k]));
        corrupt = fmax(corrupt, fabs(num[k] - (ana[k] + (k == n / 2 ? 0.05 * maxnum : 0.0))));
    }
    assert_true(corrupt / maxnum > tol);
    return maxdiff / maxnum;
}

typedef enum { T_DIST, T_MIX2, T_UNNORM, T_ONEHOT } target_kind_t;

static void make_targets(float *q, int nb, int nc, target_kind_t kind, rng_t *r)
{
    memset(q, 0, (size_t)nb * nc * sizeof *q);
    for (int i = 0; i < nb; i++) {
        float *row = q + (size_t)i * nc;
        if (kind == T_DIST || kind == T_UNNORM) {
            double z = 0.0;
            for (int c = 0; c < nc; c++)
                z += (row[c] = (float)exp(rng_normal(r)));
            for (int c = 0; c < nc; c++)
                row[c] = (float)(row[c] / z * (kind == T_UNNORM ? 0.6 : 1.0));
        } else if (kind == T_MIX2) { /* what MixUp makes of two one-hot labels */
            double lam = rng_uniform(r);
            int a = (int)rng_below(r, (uint64_t)nc), b = (int)rng_below(r, (uint64_t)nc);
            row[a] += (float)lam;
            row[b] += (float)(1.0 - lam);
        } else {
            row[rng_below(r, (uint64_t)nc)] = 1.0f;
        }
    }
}

static void check_case(const char *name, target_kind_t kind, float s, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    float z[B * C], q[B * C], grad[B * C];
    double zd[B * C], num[B * C];
    for (int k = 0; k < B * C; k++) {
        z[k] = (float)(1.5 * rng_normal(&r));
        zd[k] = z[k];
    }
    make_targets(q, B, C, kind, &r);
    const float seedv = 0.7f; /* the upstream gradient scales the result */

    /* forward against the double reference */
    double ref = ref_loss(zd, q, B, C, s), got = op_loss(z, q, B, C, s, seedv, grad);
    assert_true(fabs(got - ref) <= 1e-6 * fmax(1.0, fabs(ref)));

    /* gradient against central differences of the double reference */
    const double h = 1e-6;
    for (int k = 0; k < B * C; k++) {
        double keep = zd[k];
        zd[k] = keep + h;
        double lp = ref_loss(zd, q, B, C, s);
        zd[k] = keep - h;
        double lm = ref_loss(zd, q, B, C, s);
        zd[k] = keep;
        num[k] = seedv * (lp - lm) / (2 * h);
    }
    double rel_d = compare(num, grad, B * C, 1e-4);

    /* gradient against central differences of the op's own (float) forward */
    const float eps = 1e-2f;
    for (int k = 0; k < B * C; k++) {
        float keep = z[k];
        z[k] = keep + eps;
        double lp = op_loss(z, q, B, C, s, 0, NULL);
        z[k] = keep - eps;
        double lm = op_loss(z, q, B, C, s, 0, NULL);
        z[k] = keep;
        num[k] = seedv * (lp - lm) / ((double)(keep + eps) - (double)(keep - eps));
    }
    double rel_f = compare(num, grad, B * C, 1e-2);
    print_message("%-34s grad rel. error vs double FD %.2e, vs op FD %.2e\n", name, rel_d, rel_f);
    if (rel_d > 1e-4)
        fail_msg("%s: gradient differs from the double-precision reference by %.3e", name, rel_d);
    if (rel_f > 1e-2)
        fail_msg("%s: gradient differs from the op's finite differences by %.3e", name, rel_f);
}

static void test_gradients(void **state)
{
    (void)state;
    check_case("distributions, no smoothing", T_DIST, 0.0f, 1);
    check_case("distributions, smoothing 0.1", T_DIST, 0.1f, 2);
    check_case("mixup two-label rows, smoothing 0.1", T_MIX2, 0.1f, 3);
    check_case("mixup two-label rows, smoothing 0.4", T_MIX2, 0.4f, 4);
    check_case("rows summing to 0.6, smoothing 0.2", T_UNNORM, 0.2f, 5);
    check_case("one-hot rows, smoothing 0.1", T_ONEHOT, 0.1f, 6);
}

/* One-hot soft targets with smoothing s are the hard-label loss with smoothing s, value and
 * gradient. */
static void test_matches_hard_labels(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 11);
    float z[B * C], q[B * C] = {0}, g_soft[B * C], g_hard[B * C] = {0};
    uint8_t y[B];
    for (int k = 0; k < B * C; k++)
        z[k] = (float)rng_normal(&r);
    for (int i = 0; i < B; i++) {
        y[i] = (uint8_t)rng_below(&r, C);
        q[i * C + y[i]] = 1.0f;
    }
    const float sm = 0.15f;
    double soft = op_loss(z, q, B, C, sm, 1.0f, g_soft);
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t s2[2] = {B, C}, s1[1] = {B};
    engine_tensor_t *zt = engine_graph_view(g, z, g_hard, ENGINE_F32, 2, s2);
    zt->requires_grad = 1;
    engine_tensor_t *l = engine_softmax_xent(g, zt, engine_graph_view(g, y, NULL, ENGINE_U8, 1, s1), sm);
    assert_non_null(l);
    err_t e = {0};
    assert_int_equal(engine_graph_backward(g, l, NULL, &e), 0);
    assert_float_equal(soft, ((float *)l->data)[0], 1e-6);
    for (int k = 0; k < B * C; k++)
        assert_float_equal(g_soft[k], g_hard[k], 1e-6);
    engine_graph_free(g);
}

/* timm's mixup_target smooths the one-hots, then mixes: lam * smooth(a) + (1-lam) * smooth(b).
 * The op smooths the mixed row instead; both give the same loss. */
static void test_timm_mixup_target(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 12);
    float z[B * C], mixed[B * C] = {0}, timm[B * C];
    for (int k = 0; k < B * C; k++)
        z[k] = (float)rng_normal(&r);
    const float sm = 0.1f, off = sm / C, on = 1.0f - sm + off;
    for (int i = 0; i < B; i++) {
        float lam = (float)rng_uniform(&r);
        int a = (int)rng_below(&r, C), b = (int)rng_below(&r, C);
        mixed[i * C + a] += lam;
        mixed[i * C + b] += 1.0f - lam;
        for (int c = 0; c < C; c++)
            timm[i * C + c] = lam * (c == a ? on : off) + (1.0f - lam) * (c == b ? on : off);
    }
    double ours = op_loss(z, mixed, B, C, sm, 1.0f, NULL), theirs = op_loss(z, timm, B, C, 0.0f, 1.0f, NULL);
    assert_float_equal(ours, theirs, 1e-5);
    /* and smoothing really changes the loss (so the comparison above is not vacuous) */
    assert_true(fabs(op_loss(z, mixed, B, C, 0.0f, 1.0f, NULL) - ours) > 1e-3);
}

static void expect_error(engine_tensor_t *(*build)(engine_graph_t *), const char *needle)
{
    engine_graph_t *g = engine_graph_create(0, 1);
    assert_null(build(g));
    err_t e = {0};
    assert_int_equal(engine_graph_error(g, &e), FN_EINVAL);
    if (!strstr(e.msg, needle))
        fail_msg("expected \"%s\" in \"%s\"", needle, e.msg);
    engine_graph_free(g);
}

static float zbuf[12], qbuf[12];
static engine_tensor_t *bad_smoothing(engine_graph_t *g)
{
    int64_t s[2] = {3, 4};
    return engine_softmax_xent_soft_smoothed(g, engine_graph_view(g, zbuf, NULL, ENGINE_F32, 2, s),
                                             engine_graph_view(g, qbuf, NULL, ENGINE_F32, 2, s), 1.0f);
}
static engine_tensor_t *bad_shape(engine_graph_t *g)
{
    int64_t s[2] = {3, 4}, t[2] = {4, 3};
    return engine_softmax_xent_soft_smoothed(g, engine_graph_view(g, zbuf, NULL, ENGINE_F32, 2, s),
                                             engine_graph_view(g, qbuf, NULL, ENGINE_F32, 2, t), 0.1f);
}
static engine_tensor_t *bad_dtype(engine_graph_t *g)
{
    int64_t s[2] = {3, 4};
    return engine_softmax_xent_soft_smoothed(g, engine_graph_view(g, zbuf, NULL, ENGINE_F32, 2, s),
                                             engine_graph_view(g, qbuf, NULL, ENGINE_U8, 2, s), 0.0f);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error(bad_smoothing, "label smoothing 1 must be in [0, 1)");
    expect_error(bad_shape, "must be equal");
    expect_error(bad_dtype, "float32");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_matches_hard_labels),
        cmocka_unit_test(test_timm_mixup_target),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
