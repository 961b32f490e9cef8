/* The global average pool on the engine's pool against a double reference and its serial run;
 * the 2x2 stride-2 max pool's AVX-512 code (ops_pool.c) against its scalar loops
 * (FEDNAS_POOL_PORTABLE=1) and a plain reference: random shapes with odd and tiny sizes, rows
 * wider than one vector, batch 1, values drawn from a few levels so windows hold ties (the
 * first maximum in scan order must win, as in the scalar loop), the input gradient both stored
 * (an intermediate input) and added (a leaf already holding a gradient). On a CPU without
 * AVX-512 both runs take the scalar loops and the reference still checks them. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "engine/graph.h"
#include "engine/ops.h"

typedef struct {
    float *y, *dx;
} pool_out_t;

/* y and the input gradient of sum(y * seed); leaf: x holds dx0 and the pool adds to it. */
static void run_pool(int B, int C, int H, int W, const float *x, const float *seed, const float *dx0, int leaf,
                     pool_out_t *o)
{
    const size_t nx = (size_t)B * C * H * W, ny = (size_t)B * C * (H / 2) * (W / 2);
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t xs[4] = {B, C, H, W};
    float *ones = malloc(nx * sizeof(float)), *gx = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++)
        ones[i] = 1.0f;
    memcpy(gx, dx0, nx * sizeof(float));
    engine_tensor_t *xt = engine_graph_view(g, (void *)x, gx, ENGINE_F32, 4, xs);
    if (!leaf)
        xt = engine_mul(g, xt, engine_graph_view(g, ones, NULL, ENGINE_F32, 4, xs));
    engine_tensor_t *yt = engine_maxpool2d(g, xt, 2, 2, 0);
    assert_non_null(yt);
    o->y = malloc(ny * sizeof(float));
    memcpy(o->y, yt->data, ny * sizeof(float));
    err_t e = {0};
    assert_int_equal(engine_graph_backward(g, yt, seed, &e), 0);
    o->dx = malloc(nx * sizeof(float));
    memcpy(o->dx, leaf ? gx : xt->grad, nx * sizeof(float));
    engine_graph_free(g);
    free(ones);
    free(gx);
}

static void test_maxpool2_paths(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 41);
    for (int ci = 0; ci < 120; ci++) {
        const int B = rng_below(&r, 3) == 0 ? 1 : 1 + (int)rng_below(&r, 4), C = 1 + (int)rng_below(&r, 5);
        const int H = 2 + (int)rng_below(&r, 20), W = 2 + (int)rng_below(&r, ci % 3 ? 40 : 70), leaf = ci % 2;
        const int OH = H / 2, OW = W / 2;
        const size_t nx = (size_t)B * C * H * W, ny = (size_t)B * C * OH * OW;
        float *x = malloc(nx * sizeof(float)), *dx0 = malloc(nx * sizeof(float)), *seed = malloc(ny * sizeof(float));
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)rng_below(&r, 4) - 1.5f, dx0[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < ny; i++)
            seed[i] = (float)rng_normal(&r);
        pool_out_t fast, slow;
        unsetenv("FEDNAS_POOL_PORTABLE");
        run_pool(B, C, H, W, x, seed, dx0, leaf, &fast);
        setenv("FEDNAS_POOL_PORTABLE", "1", 1);
        run_pool(B, C, H, W, x, seed, dx0, leaf, &slow);
        unsetenv("FEDNAS_POOL_PORTABLE");
        /* reference: first maximum of each window in scan order gets the window's seed */
        for (int pl = 0; pl < B * C; pl++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    const float *in = x + (size_t)pl * H * W;
                    int best = 2 * oh * W + 2 * ow;
                    for (int i = 0; i < 2; i++)
                        for (int j = 0; j < 2; j++) {
                            const int at = (2 * oh + i) * W + 2 * ow + j;
                            if (in[at] > in[best])
                                best = at;
                        }
                    const size_t yo = ((size_t)pl * OH + oh) * OW + ow;
                    if (fast.y[yo] != in[best])
                        fail_msg("case %d (B%d C%d %dx%d): y[%zu] %g, want %g", ci, B, C, H, W, yo, fast.y[yo],
                                 in[best]);
                    for (int i = 0; i < 2; i++)
                        for (int j = 0; j < 2; j++) {
                            const int at = (2 * oh + i) * W + 2 * ow + j;
                            const size_t xo = (size_t)pl * H * W + at;
                            const float want = (leaf ? dx0[xo] : 0.0f) + (at == best ? seed[yo] : 0.0f);
                            if (fabsf(fast.dx[xo] - want) > 1e-6f)
                                fail_msg("case %d (B%d C%d %dx%d leaf%d): dx[%zu] %g, want %g", ci, B, C, H, W, leaf,
                                         xo, fast.dx[xo], want);
                        }
                }
        /* the last row and column of odd sizes are in no window: zero, or the leaf's own */
        for (int pl = 0; pl < B * C; pl++)
            for (int h = 0; h < H; h++)
                for (int w = 0; w < W; w++)
                    if (h >= 2 * OH || w >= 2 * OW) {
                        const size_t xo = ((size_t)pl * H + h) * W + w;
                        assert_true(fast.dx[xo] == (leaf ? dx0[xo] : 0.0f));
                    }
        assert_memory_equal(fast.y, slow.y, ny * sizeof(float));
        for (size_t i = 0; i < nx; i++)
            assert_true(fabsf(fast.dx[i] - slow.dx[i]) <= 1e-6f);
        free(fast.y), free(fast.dx), free(slow.y), free(slow.dx);
        free(x), free(dx0), free(seed);
    }
}

/* Global average pool y and the input gradient of sum(y * seed), run on the pool or (serial)
 * with FEDNAS_GAP_SERIAL=1; leaf: x holds dx0 and the pool adds to it. */
static void run_gap(int B, int C, int H, int W, const float *x, const float *seed, const float *dx0, int leaf,
                    int serial, pool_out_t *o)
{
    const size_t nx = (size_t)B * C * H * W, ny = (size_t)B * C;
    if (serial)
        setenv("FEDNAS_GAP_SERIAL", "1", 1);
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t xs[4] = {B, C, H, W};
    float *ones = malloc(nx * sizeof(float)), *gx = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++)
        ones[i] = 1.0f;
    memcpy(gx, dx0, nx * sizeof(float));
    engine_tensor_t *xt = engine_graph_view(g, (void *)x, gx, ENGINE_F32, 4, xs);
    if (!leaf)
        xt = engine_mul(g, xt, engine_graph_view(g, ones, NULL, ENGINE_F32, 4, xs));
    engine_tensor_t *yt = engine_global_avgpool(g, xt);
    assert_non_null(yt);
    o->y = malloc(ny * sizeof(float));
    memcpy(o->y, yt->data, ny * sizeof(float));
    err_t e = {0};
    assert_int_equal(engine_graph_backward(g, yt, seed, &e), 0);
    o->dx = malloc(nx * sizeof(float));
    memcpy(o->dx, leaf ? gx : xt->grad, nx * sizeof(float));
    engine_graph_free(g);
    free(ones);
    free(gx);
    unsetenv("FEDNAS_GAP_SERIAL");
}

/* The global average pool on the engine's pool against a double reference and against its
 * serial run (bit for bit: each plane is summed in a fixed order whatever the split), on random
 * shapes: batch 1, odd planes from 1x1 up, enough planes to be split over the threads. */
static void test_global_avgpool_paths(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 43);
    for (int ci = 0; ci < 80; ci++) {
        const int B = rng_below(&r, 3) == 0 ? 1 : 1 + (int)rng_below(&r, 40), C = 1 + (int)rng_below(&r, 70);
        const int H = 1 + (int)rng_below(&r, 15), W = 1 + (int)rng_below(&r, 15), leaf = ci % 2;
        const size_t nx = (size_t)B * C * H * W, ny = (size_t)B * C;
        float *x = malloc(nx * sizeof(float)), *dx0 = malloc(nx * sizeof(float)), *seed = malloc(ny * sizeof(float));
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)rng_normal(&r), dx0[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < ny; i++)
            seed[i] = (float)rng_normal(&r);
        pool_out_t par, ser;
        run_gap(B, C, H, W, x, seed, dx0, leaf, 0, &par);
        run_gap(B, C, H, W, x, seed, dx0, leaf, 1, &ser);
        for (size_t pl = 0; pl < ny; pl++) {
            double want = 0.0;
            for (int i = 0; i < H * W; i++)
                want += x[pl * H * W + i];
            want /= H * W;
            if (fabs(par.y[pl] - want) > 1e-6 * (1.0 + fabs(want)))
                fail_msg("case %d (B%d C%d %dx%d): y[%zu] %g, want %g", ci, B, C, H, W, pl, par.y[pl], want);
            for (int i = 0; i < H * W; i++) {
                const size_t xo = pl * H * W + i;
                const float g = (leaf ? dx0[xo] : 0.0f) + seed[pl] / (float)(H * W);
                if (fabsf(par.dx[xo] - g) > 1e-6f * (1.0f + fabsf(g)))
                    fail_msg("case %d (B%d C%d %dx%d leaf%d): dx[%zu] %g, want %g", ci, B, C, H, W, leaf, xo,
                             par.dx[xo], g);
            }
        }
        assert_memory_equal(par.y, ser.y, ny * sizeof(float));
        assert_memory_equal(par.dx, ser.dx, nx * sizeof(float));
        free(par.y), free(par.dx), free(ser.y), free(ser.dx);
        free(x), free(dx0), free(seed);
    }
}

/* Batch norm's channels split over the pool (3 threads, chunks of whole channels) against a
 * double reference, training and eval, forward and every gradient, on random shapes: batch 1,
 * one channel, 1x1 planes, and enough channels x samples to be split into several chunks. */
/* Channel c's batch statistics in double (x [B][C][HW]): the mean and the biased variance, and
 * the sum of squared deviations in *s2. */
static void bn_ref_stats(const float *x, int B, int C, size_t HW, int c, double *mean, double *var, double *s2)
{
    const double cnt = (double)B * (double)HW;
    double s = 0, q = 0;
    for (int n = 0; n < B; n++)
        for (size_t i = 0; i < HW; i++)
            s += x[((size_t)n * C + c) * HW + i];
    *mean = s / cnt;
    for (int n = 0; n < B; n++)
        for (size_t i = 0; i < HW; i++) {
            double d = x[((size_t)n * C + c) * HW + i] - *mean;
            q += d * d;
        }
    *s2 = q;
    *var = q / cnt;
}

static void test_batchnorm_paths(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 43);
    for (int ci = 0; ci < 40; ci++) {
        const int big = ci % 4 == 0, training = ci % 3 != 2;
        const int B = big ? 4 + (int)rng_below(&r, 5) : 1 + (int)rng_below(&r, 3);
        const int C = big ? 24 + (int)rng_below(&r, 40) : 1 + (int)rng_below(&r, 9);
        const int H = 1 + (int)rng_below(&r, big ? 15 : 6), W = 1 + (int)rng_below(&r, big ? 15 : 6);
        const size_t HW = (size_t)H * W, nx = (size_t)B * C * HW;
        float *x = malloc(nx * sizeof(float)), *gx = malloc(nx * sizeof(float)), *dx0 = malloc(nx * sizeof(float));
        float *seed = malloc(nx * sizeof(float)), ga[64], be[64], gga[64], gbe[64], rm[64], rv[64], rm0[64], rv0[64];
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)(rng_normal(&r) * 2 + 0.5), seed[i] = (float)rng_normal(&r), dx0[i] = (float)rng_normal(&r);
        for (int c = 0; c < C; c++) {
            ga[c] = (float)(1 + 0.3 * rng_normal(&r)), be[c] = (float)rng_normal(&r);
            gga[c] = (float)rng_normal(&r), gbe[c] = (float)rng_normal(&r);
            rm[c] = rm0[c] = (float)rng_normal(&r), rv[c] = rv0[c] = (float)(0.5 + rng_below(&r, 3));
        }
        const float mom = 0.1f, eps = 1e-5f;
        float g0[64], b0[64];
        memcpy(g0, gga, sizeof g0), memcpy(b0, gbe, sizeof b0), memcpy(gx, dx0, nx * sizeof(float));
        engine_graph_t *g = engine_graph_create(0, 1);
        int64_t xs[4] = {B, C, H, W}, cs[1] = {C};
        engine_tensor_t *xt = engine_graph_view(g, x, gx, ENGINE_F32, 4, xs);
        engine_tensor_t *gt = engine_graph_view(g, ga, gga, ENGINE_F32, 1, cs);
        engine_tensor_t *bt = engine_graph_view(g, be, gbe, ENGINE_F32, 1, cs);
        engine_tensor_t *yt = engine_batchnorm(g, xt, gt, bt, rm, rv, mom, eps, training);
        assert_non_null(yt);
        const float *y = yt->data;
        err_t e = {0};
        /* reference in double, channel by channel */
        const double cnt = (double)B * (double)HW;
        double worst = 0;
        for (int c = 0; c < C; c++) {
            double mean = rm0[c], var = rv0[c], s2 = 0;
            if (training) {
                bn_ref_stats(x, B, C, HW, c, &mean, &var, &s2);
                double erm = 0.9 * rm0[c] + 0.1 * mean, erv = 0.9 * rv0[c] + 0.1 * (cnt > 1 ? s2 / (cnt - 1) : var);
                worst = fmax(worst, fabs(rm[c] - erm) / (1 + fabs(erm)));
                worst = fmax(worst, fabs(rv[c] - erv) / (1 + fabs(erv)));
            }
            const double rstd = 1 / sqrt(var + eps);
            for (int n = 0; n < B; n++)
                for (size_t i = 0; i < HW; i++) {
                    size_t k = ((size_t)n * C + c) * HW + i;
                    double xh = (x[k] - mean) * rstd;
                    worst = fmax(worst, fabs(y[k] - (xh * ga[c] + be[c])) / (1 + fabs(xh * ga[c] + be[c])));
                }
        }
        if (worst >= 1e-4)
            fail_msg("batchnorm forward B=%d C=%d %dx%d training %d: worst relative error %g", B, C, H, W, training, worst);
        assert_int_equal(engine_graph_backward(g, yt, seed, &e), 0);
        for (int c = 0; c < C; c++) {
            double mean = rm0[c], var = rv0[c], s2 = 0;
            if (training)
                bn_ref_stats(x, B, C, HW, c, &mean, &var, &s2);
            const double rstd = 1 / sqrt(var + eps);
            double sdy = 0, sdyx = 0;
            for (int n = 0; n < B; n++)
                for (size_t i = 0; i < HW; i++) {
                    size_t k = ((size_t)n * C + c) * HW + i;
                    sdy += seed[k], sdyx += seed[k] * (x[k] - mean) * rstd;
                }
            worst = fmax(worst, fabs(gga[c] - (g0[c] + sdyx)) / (1 + fabs(g0[c] + sdyx)));
            worst = fmax(worst, fabs(gbe[c] - (b0[c] + sdy)) / (1 + fabs(b0[c] + sdy)));
            for (int n = 0; n < B; n++)
                for (size_t i = 0; i < HW; i++) {
                    size_t k = ((size_t)n * C + c) * HW + i;
                    double xh = (x[k] - mean) * rstd;
                    double d = training ? ga[c] * rstd * (seed[k] - sdy / cnt - xh * sdyx / cnt) : ga[c] * rstd * seed[k];
                    worst = fmax(worst, fabs(gx[k] - (dx0[k] + d)) / (1 + fabs(dx0[k] + d)));
                }
        }
        if (worst >= 1e-3)
            fail_msg("batchnorm B=%d C=%d %dx%d training %d: worst relative error %g", B, C, H, W, training, worst);
        engine_graph_free(g);
        free(x), free(gx), free(dx0), free(seed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_maxpool2_paths),
                                       cmocka_unit_test(test_global_avgpool_paths),
                                       cmocka_unit_test(test_batchnorm_paths)};
    setenv("FEDNAS_THREADS", "3", 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
