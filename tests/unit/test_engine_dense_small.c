/* The small-batch linear kernels (engine/ops_dense_small.c) against a double-precision product
 * and against the sgemm path, on random shapes: 1 to 16 rows (batch 1 included), odd widths,
 * column counts that are no multiple of the tiles, stored and added outputs, split over more
 * threads than a 2-core machine has. Then a linear layer's forward and backward through the
 * graph, with the kernels and with FEDNAS_DENSE_PORTABLE=1 (sgemm), which must agree. */
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
#include "engine/ops_cpu.h"
#include "tests/unit/cpu_kernels.h"

static int draw(rng_t *r, int lo, int hi) { return lo + (int)rng_below(r, (uint64_t)(hi - lo + 1)); }

static float *randn(rng_t *r, size_t n)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)rng_normal(r);
    return v;
}

/* Worst |got - want| over the largest |want|. */
static double rel(const float *got, const double *want, size_t n)
{
    double maxw = 1e-6, maxd = 0.0;
    for (size_t i = 0; i < n; i++) {
        maxw = fmax(maxw, fabs(want[i]));
        maxd = fmax(maxd, fabs(got[i] - want[i]));
    }
    return maxd / maxw;
}

/* Both kernels on random shapes, each output stored and added. */
static void test_kernels_random(void **state)
{
    (void)state;
    if (!have_avx512())
        skip(); /* the kernels decline: the sgemm path is the only one (covered by test_engine_ops) */
    rng_t r;
    rng_seed(&r, 31);
    engine_graph_t *g = engine_graph_create(0, 1);
    for (int ci = 0; ci < 40; ci++) {
        const int M = ci < 3 ? 1 : draw(&r, 1, DENSE_SMALL_M_DX), N = draw(&r, 17, 300);
        int K = draw(&r, 1, 1500);
        if ((double)N * K < DENSE_SMALL_MIN_W)
            K = (int)(DENSE_SMALL_MIN_W / N) + draw(&r, 1, 40);
        float *x = randn(&r, (size_t)M * K), *W = randn(&r, (size_t)N * K), *dy = randn(&r, (size_t)M * N);
        float *y0 = randn(&r, (size_t)M * N), *dx0 = randn(&r, (size_t)M * K);
        float *y = malloc((size_t)M * N * sizeof *y), *dx = malloc((size_t)M * K * sizeof *dx);
        double *wy = calloc((size_t)M * N, sizeof *wy), *wdx = calloc((size_t)M * K, sizeof *wdx);
        for (int add = 0; add < 2; add++) {
            for (int m = 0; m < M; m++)
                for (int n = 0; n < N; n++) {
                    double s = add ? y0[(size_t)m * N + n] : 0.0;
                    for (int k = 0; k < K; k++)
                        s += (double)x[(size_t)m * K + k] * W[(size_t)n * K + k];
                    wy[(size_t)m * N + n] = s;
                }
            for (int m = 0; m < M; m++)
                for (int k = 0; k < K; k++) {
                    double s = add ? dx0[(size_t)m * K + k] : 0.0;
                    for (int n = 0; n < N; n++)
                        s += (double)dy[(size_t)m * N + n] * W[(size_t)n * K + k];
                    wdx[(size_t)m * K + k] = s;
                }
            /* stored outputs start as garbage the kernels must not read */
            memcpy(y, add ? y0 : dy, (size_t)M * N * sizeof *y);
            for (size_t i = 0; i < (size_t)M * K; i++)
                dx[i] = add ? dx0[i] : NAN;
            assert_int_equal(cpu_dense_small_fwd(g, M, N, K, x, W, y, add), 1);
            assert_int_equal(cpu_dense_small_dx(g, M, N, K, dy, W, dx, add), 1);
            const double ey = rel(y, wy, (size_t)M * N), edx = rel(dx, wdx, (size_t)M * K);
            if (!(ey < 1e-5) || !(edx < 1e-5))
                fail_msg("case %d (M%d N%d K%d add%d): y error %.2e, dx error %.2e", ci, M, N, K, add, ey, edx);
        }
        free(x), free(W), free(dy), free(y0), free(dx0), free(y), free(dx), free(wy), free(wdx);
    }
    engine_graph_free(g);
}

/* Which products the kernels take: small row counts of large matrices; never more rows, never
 * small matrices, never with FEDNAS_DENSE_PORTABLE=1. Outputs are left alone when declined. */
static void test_kernels_decline(void **state)
{
    (void)state;
    engine_graph_t *g = engine_graph_create(0, 1);
    const int N = 512, K = 300;
    float *a = calloc((size_t)64 * K, sizeof *a), *W = calloc((size_t)N * K, sizeof *W);
    float *out = malloc((size_t)64 * K * sizeof *out);
    out[0] = 42.0f;
    assert_int_equal(cpu_dense_small_fwd(g, DENSE_SMALL_M_FWD + 1, N, K, a, W, out, 0), 0);
    assert_int_equal(cpu_dense_small_dx(g, DENSE_SMALL_M_DX + 1, N, K, a, W, out, 0), 0);
    assert_int_equal(cpu_dense_small_fwd(g, 4, 10, 10, a, W, out, 0), 0);
    assert_int_equal(cpu_dense_small_dx(g, 4, 10, 10, a, W, out, 0), 0);
    assert_true(out[0] == 42.0f);
    setenv("FEDNAS_DENSE_PORTABLE", "1", 1);
    assert_int_equal(cpu_dense_small_fwd(g, 4, N, K, a, W, out, 0), 0);
    assert_int_equal(cpu_dense_small_dx(g, 4, N, K, a, W, out, 0), 0);
    unsetenv("FEDNAS_DENSE_PORTABLE");
    assert_int_equal(cpu_dense_small_fwd(g, 4, N, K, a, W, out, 0), have_avx512());
    free(a), free(W), free(out);
    engine_graph_free(g);
}

typedef struct {
    float *y, *dx, *dW, *db;
} lin_t;

/* linear(x, W, b) forward and backward for L = sum(y * seed); x a leaf holding dx0 (added to). */
static void run_linear(int M, int IN, int OUT, const float *x, const float *W, const float *b, const float *seed,
                       const float *dx0, lin_t *o)
{
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t xs[2] = {M, IN}, ws[2] = {OUT, IN}, bs[1] = {OUT};
    o->dx = malloc((size_t)M * IN * sizeof(float));
    memcpy(o->dx, dx0, (size_t)M * IN * sizeof(float));
    o->dW = calloc((size_t)OUT * IN, sizeof(float));
    o->db = calloc((size_t)OUT, sizeof(float));
    engine_tensor_t *y = engine_linear(g, engine_graph_view(g, (void *)x, o->dx, ENGINE_F32, 2, xs),
                                       engine_graph_view(g, (void *)W, o->dW, ENGINE_F32, 2, ws),
                                       engine_graph_view(g, (void *)b, o->db, ENGINE_F32, 1, bs));
    assert_non_null(y);
    o->y = malloc((size_t)M * OUT * sizeof(float));
    memcpy(o->y, y->data, (size_t)M * OUT * sizeof(float));
    err_t e = {0};
    assert_int_equal(engine_graph_backward(g, y, seed, &e), 0);
    engine_graph_free(g);
}

static double rel_f(const float *got, const float *want, size_t n)
{
    double maxw = 1e-6, maxd = 0.0;
    for (size_t i = 0; i < n; i++) {
        maxw = fmax(maxw, fabs(want[i]));
        maxd = fmax(maxd, fabs((double)got[i] - want[i]));
    }
    return maxd / maxw;
}

/* A linear layer through the graph (the path training takes) agrees with the sgemm path. */
static void test_linear_layer(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 32);
    for (int ci = 0; ci < 12; ci++) {
        const int M = ci == 0 ? 1 : draw(&r, 1, DENSE_SMALL_M_FWD), OUT = draw(&r, 9, 257), IN = draw(&r, 300, 1100);
        float *x = randn(&r, (size_t)M * IN), *W = randn(&r, (size_t)OUT * IN), *b = randn(&r, (size_t)OUT);
        float *seed = randn(&r, (size_t)M * OUT), *dx0 = randn(&r, (size_t)M * IN);
        lin_t fast, slow;
        run_linear(M, IN, OUT, x, W, b, seed, dx0, &fast);
        setenv("FEDNAS_DENSE_PORTABLE", "1", 1);
        run_linear(M, IN, OUT, x, W, b, seed, dx0, &slow);
        unsetenv("FEDNAS_DENSE_PORTABLE");
        const double e[4] = {rel_f(fast.y, slow.y, (size_t)M * OUT), rel_f(fast.dx, slow.dx, (size_t)M * IN),
                             rel_f(fast.dW, slow.dW, (size_t)OUT * IN), rel_f(fast.db, slow.db, (size_t)OUT)};
        for (int k = 0; k < 4; k++)
            if (!(e[k] < 1e-5))
                fail_msg("case %d (M%d IN%d OUT%d): check %d relative error %.2e", ci, M, IN, OUT, k, e[k]);
        free(fast.y), free(fast.dx), free(fast.dW), free(fast.db);
        free(slow.y), free(slow.dx), free(slow.dW), free(slow.db);
        free(x), free(W), free(b), free(seed), free(dx0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kernels_random),
        cmocka_unit_test(test_kernels_decline),
        cmocka_unit_test(test_linear_layer),
    };
    setenv("FEDNAS_THREADS", "3", 0); /* more parts than a 2-core machine has cores */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
