/* conv_pw_gemm (ops_conv_pw.c), the AVX-512 product of pointwise convs, against a double-precision
 * loop on random shapes: row counts that leave 1-3 rows after the tiles of 4, pixel counts that
 * end mid-vector and mid-byte of the ReLU mask (1, 7, 9, 49, odd), strided operands, with and
 * without bias, ReLU and add; the weight gradient's product conv_pw_dw likewise over 1-4
 * samples; and a pointwise conv2d op through it against the same op with
 * FEDNAS_CONV_PW=0 (sgemm), forward and backward, batch 1 and odd batches. Skipped where the CPU
 * has no AVX-512 (the op then never takes it). */
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
#include "engine/ops_conv.h"

static int draw(rng_t *r, int lo, int hi) { return lo + (int)rng_below(r, (uint64_t)(hi - lo + 1)); }

static int have_512(void)
{
    const conv_dims_t d = {.C = 2, .H = 3, .W = 3, .OC = 2, .OH = 3, .OW = 3, .KH = 1, .KW = 1, .sh = 1, .sw = 1,
                           .dh = 1, .dw = 1, .G = 1, .Cg = 2, .OCg = 2, .K = 2, .OHW = 9};
    return conv_pw_usable(&d);
}

static void test_gemm_random(void **state)
{
    (void)state;
    if (!have_512())
        skip();
    rng_t r;
    rng_seed(&r, 71);
    for (int ci = 0; ci < 300; ci++) {
        const int M = draw(&r, 1, 70), K = draw(&r, 1, 70);
        static const int Ps[] = {1, 7, 8, 9, 15, 16, 17, 49, 63, 64, 65, 196};
        const int P = rng_below(&r, 2) ? Ps[rng_below(&r, 12)] : draw(&r, 1, 300);
        const int lda = K + draw(&r, 0, 3), ldx = P + draw(&r, 0, 20), ldy = P + draw(&r, 0, 5);
        const int bias = (int)rng_below(&r, 2), relu = (int)rng_below(&r, 2), add = (int)rng_below(&r, 2);
        const size_t mstride = (size_t)(P + 7) / 8 + (size_t)draw(&r, 0, 2);
        float *A = malloc(sizeof(float) * (size_t)M * lda), *X = malloc(sizeof(float) * (size_t)K * ldx);
        float *Y = malloc(sizeof(float) * (size_t)M * ldy), *Y0 = malloc(sizeof(float) * (size_t)M * ldy);
        float *b = malloc(sizeof(float) * (size_t)M);
        uint8_t *mask = malloc((size_t)M * mstride);
        for (int i = 0; i < M * lda; i++)
            A[i] = (float)rng_normal(&r);
        for (int i = 0; i < K * ldx; i++)
            X[i] = (float)rng_normal(&r);
        for (int i = 0; i < M * ldy; i++)
            Y[i] = Y0[i] = (float)rng_normal(&r);
        for (int i = 0; i < M; i++)
            b[i] = (float)rng_normal(&r);
        memset(mask, 0xa5, (size_t)M * mstride);
        conv_pw_gemm(M, K, P, A, lda, X, ldx, bias ? b : NULL, relu, relu ? mask : NULL, mstride, Y, ldy, add);
        for (int m = 0; m < M; m++) {
            for (int p = 0; p < P; p++) {
                double s = add ? Y0[(size_t)m * ldy + p] : 0.0;
                for (int k = 0; k < K; k++)
                    s += (double)A[(size_t)m * lda + k] * X[(size_t)k * ldx + p];
                if (bias)
                    s += b[m];
                if (relu && !(s > 0.0))
                    s = 0.0;
                const double got = Y[(size_t)m * ldy + p];
                if (!(fabs(got - s) <= 1e-4 * (1.0 + fabs(s))))
                    fail_msg("case %d M%d K%d P%d bias%d relu%d add%d: y[%d][%d] = %g, want %g", ci, M, K, P, bias,
                             relu, add, m, p, got, s);
                if (relu) {
                    const int bit = (mask[(size_t)m * mstride + (size_t)p / 8] >> (p % 8)) & 1;
                    if (bit != (got > 0.0))
                        fail_msg("case %d M%d P%d: mask bit [%d][%d] is %d for %g", ci, M, P, m, p, bit, got);
                }
            }
            for (int p = P; p < ldy; p++) /* past the row: untouched */
                assert_true(Y[(size_t)m * ldy + p] == Y0[(size_t)m * ldy + p]);
            if (relu) {
                if (P % 8) /* the last byte's bits past P are clear */
                    assert_int_equal(mask[(size_t)m * mstride + (size_t)P / 8] >> (P % 8), 0);
                for (size_t q = ((size_t)P + 7) / 8; q < mstride; q++) /* the next plane's bytes untouched */
                    assert_int_equal(mask[(size_t)m * mstride + q], 0xa5);
            }
        }
        free(A), free(X), free(Y), free(Y0), free(b), free(mask);
    }
}

/* conv_pw_dw: dW += sum over n samples and P pixels, against a double loop; dW's row stride
 * past K and its entries past K untouched. */
static void test_dw_random(void **state)
{
    (void)state;
    if (!have_512())
        skip();
    rng_t r;
    rng_seed(&r, 73);
    for (int ci = 0; ci < 200; ci++) {
        const int M = draw(&r, 1, 45), K = draw(&r, 1, 45), n = draw(&r, 1, 4);
        static const int Ps[] = {1, 7, 15, 16, 17, 49, 64, 196};
        const int P = rng_below(&r, 2) ? Ps[rng_below(&r, 8)] : draw(&r, 1, 260);
        const int ldd = P * n + draw(&r, 0, 5), ldx = P + draw(&r, 0, 5), ldw = K + draw(&r, 0, 3);
        const size_t ds = (size_t)P, xs = (size_t)K * ldx + (size_t)draw(&r, 0, 9);
        float *dy = malloc(sizeof(float) * (size_t)M * ldd), *x = malloc(sizeof(float) * xs * n);
        float *dW = malloc(sizeof(float) * (size_t)M * ldw), *dW0 = malloc(sizeof(float) * (size_t)M * ldw);
        for (int i = 0; i < M * ldd; i++)
            dy[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < xs * n; i++)
            x[i] = (float)rng_normal(&r);
        for (int i = 0; i < M * ldw; i++)
            dW[i] = dW0[i] = (float)rng_normal(&r);
        conv_pw_dw(M, K, P, n, dy, ldd, ds, x, ldx, xs, dW, ldw);
        for (int m = 0; m < M; m++)
            for (int k = 0; k < ldw; k++) {
                double want = dW0[(size_t)m * ldw + k], mag = fabs(want);
                if (k < K)
                    for (int sm = 0; sm < n; sm++)
                        for (int p = 0; p < P; p++) {
                            const double t = (double)dy[sm * ds + (size_t)m * ldd + p] * x[sm * xs + (size_t)k * ldx + p];
                            want += t;
                            mag += fabs(t);
                        }
                const double got = dW[(size_t)m * ldw + k];
                if (!(fabs(got - want) <= 1e-5 * (1.0 + mag)))
                    fail_msg("case %d M%d K%d P%d n%d: dW[%d][%d] = %g, want %g", ci, M, K, P, n, m, k, got, want);
            }
        free(dy), free(x), free(dW), free(dW0);
    }
}

typedef struct {
    float *y, *dx, *dW, *db;
} result_t;

/* One pointwise conv2d op, forward and backward with seed dy = seed; the input gradient stored
 * (leaf 0: x is an op's output) or added to dx0 (leaf 1). */
static void run_op(int B, int C, int H, int W, int OC, int relu, const float *x, const float *w, const float *b,
                   const float *seed, const float *dx0, int leaf, result_t *o)
{
    const size_t nx = (size_t)B * C * H * W, ny = (size_t)B * OC * H * W, nw = (size_t)OC * C;
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t xs[4] = {B, C, H, W}, ws[4] = {OC, C, 1, 1}, bs[1] = {OC};
    float *ones = malloc(nx * sizeof(float)), *gx = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++)
        ones[i] = 1.0f;
    memcpy(gx, dx0, nx * sizeof(float));
    o->dW = calloc(nw, sizeof(float));
    o->db = calloc((size_t)OC, sizeof(float));
    engine_tensor_t *xt = engine_graph_view(g, (void *)x, gx, ENGINE_F32, 4, xs);
    if (!leaf)
        xt = engine_mul(g, xt, engine_graph_view(g, ones, NULL, ENGINE_F32, 4, xs));
    const engine_conv2d_params_t p = {.stride_h = 1, .stride_w = 1, .dil_h = 1, .dil_w = 1, .groups = 1,
                                      .relu = relu};
    engine_tensor_t *yt = engine_conv2d(g, xt, engine_graph_view(g, (void *)w, o->dW, ENGINE_F32, 4, ws),
                                        engine_graph_view(g, (void *)b, o->db, ENGINE_F32, 1, bs), &p);
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

static double rel_f(const float *got, const float *want, size_t n)
{
    double maxw = 1e-6, maxd = 0.0;
    for (size_t i = 0; i < n; i++) {
        maxw = fmax(maxw, fabs(want[i]));
        maxd = fmax(maxd, fabs((double)got[i] - want[i]));
    }
    return maxd / maxw;
}

static void test_op_against_sgemm(void **state)
{
    (void)state;
    if (!have_512())
        skip();
    rng_t r;
    rng_seed(&r, 72);
    for (int ci = 0; ci < 40; ci++) {
        const int B = rng_below(&r, 3) == 0 ? 1 : draw(&r, 1, 7), C = draw(&r, 1, 40), OC = draw(&r, 1, 40);
        const int H = draw(&r, 1, 16), W = draw(&r, 1, 16), relu = (int)rng_below(&r, 2), leaf = ci % 2;
        const size_t nx = (size_t)B * C * H * W, ny = (size_t)B * OC * H * W, nw = (size_t)OC * C;
        float *x = malloc(nx * sizeof(float)), *dx0 = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float));
        float *b = malloc((size_t)OC * sizeof(float)), *seed = malloc(ny * sizeof(float));
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)rng_normal(&r), dx0[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < nw; i++)
            w[i] = (float)rng_normal(&r);
        for (int i = 0; i < OC; i++)
            b[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < ny; i++)
            seed[i] = (float)rng_normal(&r);
        result_t fast, slow;
        unsetenv("FEDNAS_CONV_PW");
        run_op(B, C, H, W, OC, relu, x, w, b, seed, dx0, leaf, &fast);
        setenv("FEDNAS_CONV_PW", "0", 1);
        run_op(B, C, H, W, OC, relu, x, w, b, seed, dx0, leaf, &slow);
        unsetenv("FEDNAS_CONV_PW");
        const double e[4] = {rel_f(fast.y, slow.y, ny), rel_f(fast.dx, slow.dx, nx), rel_f(fast.dW, slow.dW, nw),
                             rel_f(fast.db, slow.db, (size_t)OC)};
        for (int k = 0; k < 4; k++)
            if (!(e[k] < 1e-5))
                fail_msg("case %d (B%d C%d %dx%d OC%d relu%d leaf%d): check %d (y, dx, dW, db) relative error %.2e",
                         ci, B, C, H, W, OC, relu, leaf, k, e[k]);
        free(fast.y), free(fast.dx), free(fast.dW), free(fast.db);
        free(slow.y), free(slow.dx), free(slow.dW), free(slow.db);
        free(x), free(dx0), free(w), free(b), free(seed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_random),
        cmocka_unit_test(test_dw_random),
        cmocka_unit_test(test_op_against_sgemm),
    };
    setenv("FEDNAS_THREADS", "3", 0); /* more parts than a 2-core machine has cores */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
