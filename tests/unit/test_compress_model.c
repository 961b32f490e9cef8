/* Model compression: every int8 GEMM kernel this CPU runs equals the int32 reference bit for
 * bit on odd shapes; per-channel weight quantization stays within half a step; calibrators
 * pick known thresholds; folding batch norm and fusing ReLU keeps the logits of the engine's
 * eval forward (and the exported model builds in the engine and gives them too); INT8
 * inference stays close to fp32 and is the same with every kernel. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "engine/graph.h"
#include "engine/infer.h"
#include "engine/nn.h"
#include "engine/qgemm.h"

static void test_qgemm_kernels_match_reference(void **state)
{
    (void)state;
    static const int Ms[] = {1, 3, 4, 5, 17, 33}, Ns[] = {1, 7, 16, 33, 50}, Ks[] = {1, 63, 64, 65, 200};
    rng_t r;
    rng_seed(&r, 7);
    int checked = 0;
    for (int impl = ENGINE_QGEMM_AVX2; impl <= ENGINE_QGEMM_VNNI; impl++) {
        engine_qgemm_fn f = engine_qgemm_get((engine_qgemm_impl_t)impl), ref = engine_qgemm_get(ENGINE_QGEMM_REF);
        if (!f)
            continue;
        for (int a = 0; a < 6; a++)
            for (int b = 0; b < 5; b++)
                for (int c = 0; c < 5; c++) {
                    int M = Ms[a], N = Ns[b], K = Ks[c], Kp = engine_qgemm_kpad(K);
                    uint8_t *A = calloc((size_t)M * Kp, 1);
                    int8_t *B = calloc((size_t)N * Kp, 1);
                    int32_t *C0 = malloc((size_t)M * N * 4), *C1 = malloc((size_t)M * N * 4);
                    for (int i = 0; i < M; i++)
                        for (int k = 0; k < K; k++) /* extremes included: 255 x -128 */
                            A[(size_t)i * Kp + k] = (k + i) % 5 == 0 ? 255 : (uint8_t)(rng_next(&r) & 255);
                    for (int j = 0; j < N; j++)
                        for (int k = 0; k < K; k++)
                            B[(size_t)j * Kp + k] = (k + j) % 3 == 0 ? -128 : (int8_t)(rng_next(&r) & 255);
                    ref(M, N, Kp, A, Kp, B, Kp, C0, N);
                    f(M, N, Kp, A, Kp, B, Kp, C1, N);
                    assert_memory_equal(C0, C1, (size_t)M * N * 4);
                    engine_qgemm_packed_fn pf = engine_qgemm_packed_get();
                    if (impl == ENGINE_QGEMM_VNNI && pf) {
                        int8_t *Bp = engine_qgemm_pack(N, Kp, B, Kp);
                        memset(C1, 0x55, (size_t)M * N * 4);
                        pf(M, N, Kp, A, Kp, Bp, C1, N);
                        assert_memory_equal(C0, C1, (size_t)M * N * 4);
                        free(Bp);
                    }
                    /* and the reference against a direct sum */
                    int64_t s = 0;
                    for (int k = 0; k < K; k++)
                        s += (int64_t)A[(size_t)(M - 1) * Kp + k] * B[(size_t)(N - 1) * Kp + k];
                    assert_int_equal(s, C0[(size_t)(M - 1) * N + N - 1]);
                    free(A), free(B), free(C0), free(C1);
                    checked++;
                }
    }
    print_message("qgemm: best kernel %s, %d shape checks\n", engine_qgemm_name(engine_qgemm_best()), checked);
    assert_non_null(engine_qgemm_get(ENGINE_QGEMM_REF));
}

static void test_quant_rows_error_bound(void **state)
{
    (void)state;
    enum { R = 5, C = 37, LD = 64 };
    float w[R * C], s[R];
    int8_t q[R * LD];
    rng_t r;
    rng_seed(&r, 3);
    for (int i = 0; i < R * C; i++)
        w[i] = (float)rng_normal(&r) * (float)(1 + i / C);
    for (int c = 0; c < C; c++)
        w[4 * C + c] = 0; /* an all-zero row */
    engine_quant_rows(w, R, C, q, LD, s);
    for (int i = 0; i < R; i++) {
        int hit = 0;
        for (int c = 0; c < C; c++) {
            float d = fabsf(w[i * C + c] - q[i * LD + c] * s[i]);
            assert_true(d <= 0.5f * s[i] * 1.0001f);
            hit |= abs(q[i * LD + c]) == 127;
        }
        for (int c = C; c < LD; c++)
            assert_int_equal(q[i * LD + c], 0);
        if (i < 4)
            assert_true(hit); /* the largest magnitude maps to +-127 */
    }
    assert_true(s[4] == 1.0f);
}

static void test_calibrators(void **state)
{
    (void)state;
    enum { NB = 2048 };
    double *h = calloc(NB, sizeof *h);
    for (int i = 0; i < 1000; i++)
        h[i] = 100;
    h[NB - 1] = 1; /* one outlier at the top */
    double p = engine_calib_percentile(h, NB, 2048.0, 99.0);
    assert_true(p > 980 && p < 1001);
    assert_true(engine_calib_percentile(h, NB, 2048.0, 100.0) == 2048.0);
    double t = engine_calib_entropy(h, NB, 2048.0, 128);
    assert_true(t > 2000); /* a lone outlier after an empty gap costs nothing: kept */
    for (int i = 0; i < NB; i++) /* a long thin tail (Laplace, scale 40 bins): clipped */
        h[i] = 1e6 * exp(-i / 40.0);
    t = engine_calib_entropy(h, NB, 2048.0, 128);
    print_message("entropy threshold %.1f for a Laplace histogram of scale 40 over 2048 bins\n", t);
    assert_true(t > 120 && t < 1024);
    for (int i = 0; i < NB; i++)
        h[i] = 10;
    t = engine_calib_entropy(h, NB, 2048.0, 128);
    assert_true(t > 1800); /* uniform: nothing to clip */
    free(h);
}

/* conv(bias off) BN relu maxpool conv BN relu gap? no: avgpool, flatten, linear BN relu, linear */
static const char *k_arch =
    "{\"type\":\"layers\",\"layers\":["
    "{\"type\":\"conv2d\",\"out\":6,\"kernel\":3,\"padding\":1,\"bias\":false},{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
    "{\"type\":\"maxpool\",\"kernel\":2},"
    "{\"type\":\"conv2d\",\"out\":5,\"kernel\":3,\"stride\":2},{\"type\":\"batchnorm\"},{\"type\":\"relu\"},"
    "{\"type\":\"avgpool\",\"kernel\":2},{\"type\":\"flatten\"},{\"type\":\"dropout\",\"p\":0.5},"
    "{\"type\":\"linear\",\"out\":12},{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"linear\"}]}";

enum { CH = 2, HH = 13, WW = 11, CLS = 4, BATCH = 9 };

static engine_net_t *random_net(json_t **arch, uint64_t seed)
{
    json_error_t je;
    *arch = json_loads(k_arch, 0, &je);
    assert_non_null(*arch);
    engine_net_t *n = NULL;
    err_t err = {0};
    assert_int_equal(engine_net_create(*arch, CH, HH, WW, CLS, &n, &err), 0);
    engine_net_init(n, seed);
    rng_t r;
    rng_seed(&r, seed + 1);
    float *p = engine_net_params(n), *b = engine_net_buffers(n);
    for (int i = 0; i < engine_net_num_tensors(n); i++) {
        const engine_param_info_t *t = engine_net_tensor(n, i);
        size_t cnt = 1;
        for (int d = 0; d < t->ndim; d++)
            cnt *= (size_t)t->shape[d];
        if (!t->fan_in) /* biases, BN gamma/beta: away from their init */
            for (size_t k = 0; k < cnt; k++)
                p[t->offset + k] = (float)(0.5 + 0.3 * rng_normal(&r));
    }
    static const int bn_channels[] = {6, 5, 12}; /* per batchnorm: running mean [C], then variance [C] */
    assert_int_equal(engine_net_num_buffers(n), 2 * (6 + 5 + 12));
    for (int i = 0; i < 3; i++) {
        int C = bn_channels[i];
        for (int c = 0; c < C; c++) {
            b[c] = (float)(0.3 * rng_normal(&r));
            b[C + c] = (float)(0.5 + rng_uniform(&r));
        }
        b += 2 * C;
    }
    return n;
}

static void engine_logits(engine_net_t *n, const float *x, int B, float *out)
{
    engine_graph_t *g = engine_graph_create(1 << 20, 1);
    engine_graph_set_grad(g, 0);
    int64_t shape[4] = {B, CH, HH, WW};
    engine_tensor_t *y = engine_net_forward(n, g, engine_graph_view(g, (void *)x, NULL, ENGINE_F32, 4, shape), 0);
    assert_non_null(y);
    memcpy(out, engine_tensor_f32(y), (size_t)B * CLS * sizeof *out);
    engine_graph_free(g);
}

static void assert_close(const float *a, const float *b, size_t n, float tol)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i]) || !isfinite(b[i]) || fabsf(a[i] - b[i]) > tol * (1 + fabsf(a[i])))
            fail_msg("logit %zu: %g vs %g", i, (double)a[i], (double)b[i]);
}

static void test_fold_matches_engine(void **state)
{
    (void)state;
    json_t *arch;
    engine_net_t *n = random_net(&arch, 11);
    size_t nv = engine_net_num_params(n) + engine_net_num_buffers(n);
    float x[BATCH * CH * HH * WW], ref[BATCH * CLS], out[BATCH * CLS];
    rng_t r;
    rng_seed(&r, 5);
    for (size_t i = 0; i < sizeof x / sizeof *x; i++)
        x[i] = (float)rng_normal(&r);
    engine_logits(n, x, BATCH, ref);
    engine_infer_t *p = NULL;
    err_t err = {0};
    assert_int_equal(engine_infer_create(arch, engine_net_params(n), nv, CH, HH, WW, CLS, &p, &err), 0);
    assert_int_equal(engine_infer_num_layers(p), 14);
    assert_int_equal(engine_infer_forward(p, x, BATCH, out, 0, &err), 0);
    assert_close(ref, out, BATCH * CLS, 1e-4f);
    assert_int_equal(engine_infer_fold(p, &err), 0);
    /* conv (+BN, ReLU, 2x2 max pool in its epilogue), conv (+BN, ReLU), avgpool, flatten, linear (+BN,
     * ReLU), linear */
    assert_int_equal(engine_infer_num_layers(p), 6);
    memset(out, 0, sizeof out);
    assert_int_equal(engine_infer_forward(p, x, BATCH, out, 0, &err), 0);
    assert_close(ref, out, BATCH * CLS, 1e-4f);
    /* every batch-size path of the kernels (one sample; the small-batch linear kernel's tail;
     * sgemm past it): the same logits sample by sample */
    enum { BIG = 21 };
    float xb[BIG * CH * HH * WW], rb[BIG * CLS], ob[BIG * CLS];
    for (size_t i = 0; i < sizeof xb / sizeof *xb; i++)
        xb[i] = (float)rng_normal(&r);
    engine_logits(n, xb, BIG, rb);
    static const int sizes[] = {1, 3, 8, 16, 17, BIG};
    for (int portable = 0; portable < 2; portable++) { /* the AVX-512 kernels, then the plain ones */
        if (portable)
            setenv("FEDNAS_INFER_PORTABLE", "1", 1);
        for (int k = 0; k < 6; k++) {
            memset(ob, 0, sizeof ob);
            assert_int_equal(engine_infer_forward(p, xb, sizes[k], ob, 0, &err), 0);
            assert_close(rb, ob, (size_t)sizes[k] * CLS, 1e-4f);
        }
    }
    unsetenv("FEDNAS_INFER_PORTABLE");
    /* the exported model is an ordinary engine model with the same function */
    json_t *farch = NULL;
    float *fv = NULL;
    size_t nf = 0;
    assert_int_equal(engine_infer_export(p, &farch, &fv, &nf, &err), 0);
    engine_net_t *fn = NULL;
    assert_int_equal(engine_net_create(farch, CH, HH, WW, CLS, &fn, &err), 0);
    assert_int_equal(engine_net_num_buffers(fn), 0);
    assert_int_equal(engine_net_num_params(fn), nf);
    assert_true(nf < nv);
    memcpy(engine_net_params(fn), fv, nf * sizeof *fv);
    engine_logits(fn, x, BATCH, out);
    assert_close(ref, out, BATCH * CLS, 1e-4f);

    /* INT8: calibrated on the inputs themselves, close to fp32; identical with every kernel */
    float q_ref[BATCH * CLS], q[BATCH * CLS];
    for (int cal = ENGINE_CALIB_MINMAX; cal <= ENGINE_CALIB_ENTROPY; cal++) {
        assert_int_equal(engine_infer_quantize(p, x, BATCH, (engine_calib_t)cal, 99.99, &err), 0);
        assert_int_equal(engine_infer_set_qgemm(p, ENGINE_QGEMM_REF, &err), 0);
        assert_int_equal(engine_infer_forward(p, x, BATCH, q_ref, 1, &err), 0);
        float maxl = 0, maxe = 0;
        for (int i = 0; i < BATCH * CLS; i++) {
            maxl = fmaxf(maxl, fabsf(ref[i]));
            maxe = fmaxf(maxe, fabsf(ref[i] - q_ref[i]));
        }
        print_message("calibrator %d: max |int8 - fp32| logit error %.4f of max |logit| %.3f\n", cal, (double)maxe,
                      (double)maxl);
        assert_true(isfinite(maxe) && maxe < 0.1f * maxl);
        for (int impl = ENGINE_QGEMM_AVX2; impl <= ENGINE_QGEMM_AMX; impl++) {
            if (engine_infer_set_qgemm(p, (engine_qgemm_impl_t)impl, &err) < 0)
                continue;
            assert_int_equal(engine_infer_forward(p, x, BATCH, q, 1, &err), 0);
            assert_memory_equal(q, q_ref, sizeof q);
        }
    }
    free(fv);
    json_decref(farch);
    engine_net_free(fn);
    engine_infer_free(p);
    engine_net_free(n);
    json_decref(arch);
}

/* Channels whose weights and bias are zero contribute nothing after ReLU: pruning exactly those
 * (the smallest L1 norms) must leave the logits as they were, and the smaller model must build
 * in the engine with the same function. */
static void test_prune_zero_channels_keeps_logits(void **state)
{
    (void)state;
    json_t *arch;
    engine_net_t *n = random_net(&arch, 21);
    size_t nv = engine_net_num_params(n) + engine_net_num_buffers(n);
    engine_infer_t *p = NULL;
    err_t err = {0};
    assert_int_equal(engine_infer_create(arch, engine_net_params(n), nv, CH, HH, WW, CLS, &p, &err), 0);
    assert_int_equal(engine_infer_fold(p, &err), 0);
    json_t *fa = NULL;
    float *fv = NULL;
    size_t nf = 0;
    assert_int_equal(engine_infer_export(p, &fa, &fv, &nf, &err), 0);
    engine_infer_free(p);
    /* folded layout: conv1 w[6][18] b[6], conv2 w[5][54] b[5], fc w[12][5] b[12], fc w[4][12] b[4] */
    static const int z1[] = {1, 4}, z2[] = {0, 3}, z3[] = {2, 5, 7, 11};
    for (int i = 0; i < 2; i++) {
        memset(fv + z1[i] * 18, 0, 18 * sizeof *fv);
        fv[108 + z1[i]] = 0;
    }
    for (int i = 0; i < 2; i++) {
        memset(fv + 114 + z2[i] * 54, 0, 54 * sizeof *fv);
        fv[114 + 270 + z2[i]] = 0;
    }
    for (int i = 0; i < 4; i++) {
        memset(fv + 389 + z3[i] * 5, 0, 5 * sizeof *fv);
        fv[389 + 60 + z3[i]] = 0;
    }
    assert_int_equal(nf, 389 + 72 + 48 + 4);
    float x[BATCH * CH * HH * WW], ref[BATCH * CLS], out[BATCH * CLS];
    rng_t r;
    rng_seed(&r, 9);
    for (size_t i = 0; i < sizeof x / sizeof *x; i++)
        x[i] = (float)rng_normal(&r);
    assert_int_equal(engine_infer_create(fa, fv, nf, CH, HH, WW, CLS, &p, &err), 0);
    assert_int_equal(engine_infer_forward(p, x, BATCH, ref, 0, &err), 0);
    assert_int_equal(engine_infer_prune(p, 2.0 / 3.0, &err), 0);
    assert_int_equal(engine_infer_forward(p, x, BATCH, out, 0, &err), 0);
    assert_close(ref, out, BATCH * CLS, 1e-5f);
    json_t *pa = NULL;
    float *pv = NULL;
    size_t np = 0;
    assert_int_equal(engine_infer_export(p, &pa, &pv, &np, &err), 0);
    assert_int_equal(np, 4 * 18 + 4 + 3 * 36 + 3 + 8 * 3 + 8 + 4 * 8 + 4);
    engine_net_t *pn = NULL;
    assert_int_equal(engine_net_create(pa, CH, HH, WW, CLS, &pn, &err), 0);
    assert_int_equal(engine_net_num_params(pn), np);
    memcpy(engine_net_params(pn), pv, np * sizeof *pv);
    engine_logits(pn, x, BATCH, out);
    assert_close(ref, out, BATCH * CLS, 1e-5f);
    /* schedules reach the target at the last step and grow monotonically */
    for (int s = ENGINE_PRUNE_LINEAR; s <= ENGINE_PRUNE_CUBIC; s++) {
        double prev = 0;
        for (int t = 1; t <= 4; t++) {
            double v = engine_prune_schedule((engine_prune_schedule_t)s, 0.5, t, 4);
            assert_true(v > prev && v <= 0.5 + 1e-12);
            prev = v;
        }
        assert_true(fabs(prev - 0.5) < 1e-12);
    }
    assert_true(engine_prune_schedule(ENGINE_PRUNE_CUBIC, 0.5, 1, 4) > engine_prune_schedule(ENGINE_PRUNE_LINEAR, 0.5, 1, 4));
    assert_int_equal(engine_infer_prune(p, 0, &err), FN_EINVAL);
    engine_net_free(pn);
    engine_infer_free(p);
    engine_net_free(n);
    json_decref(arch), json_decref(fa), json_decref(pa);
    free(fv), free(pv);
}

static void test_bad_input_named(void **state)
{
    (void)state;
    json_error_t je;
    json_t *a = json_loads("{\"type\":\"layers\",\"layers\":[{\"type\":\"flatten\"},{\"type\":\"lstm\",\"hidden\":4},"
                           "{\"type\":\"linear\"}]}", 0, &je);
    engine_net_t *n = NULL;
    err_t err = {0};
    assert_int_equal(engine_net_create(a, 1, 4, 4, 3, &n, &err), 0);
    size_t nv = engine_net_num_params(n);
    float *v = calloc(nv + 1, sizeof *v);
    engine_infer_t *p = NULL;
    assert_int_equal(engine_infer_create(a, v, nv, 1, 4, 4, 3, &p, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "layers[1] (lstm)"));
    assert_null(p);
    assert_int_equal(engine_infer_create(a, v, nv + 1, 1, 4, 4, 3, &p, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "needs"));
    float x[16] = {0}, l[3];
    json_decref(a);
    a = json_loads("{\"type\":\"softmax\"}", 0, &je);
    engine_net_free(n);
    assert_int_equal(engine_net_create(a, 1, 4, 4, 3, &n, &err), 0);
    assert_int_equal(engine_infer_create(a, v, engine_net_num_params(n), 1, 4, 4, 3, &p, &err), 0);
    assert_int_equal(engine_infer_forward(p, x, 1, l, 1, &err), FN_EINVAL); /* int8 before quantize */
    assert_int_equal(engine_infer_quantize(p, x, 1, ENGINE_CALIB_PERCENTILE, 0, &err), FN_EINVAL);
    engine_infer_free(p);
    engine_net_free(n);
    json_decref(a);
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qgemm_kernels_match_reference),
        cmocka_unit_test(test_quant_rows_error_bound),
        cmocka_unit_test(test_calibrators),
        cmocka_unit_test(test_fold_matches_engine),
        cmocka_unit_test(test_prune_zero_channels_keeps_logits),
        cmocka_unit_test(test_bad_input_named),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
