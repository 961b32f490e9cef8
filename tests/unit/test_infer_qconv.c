/* INT8 convolutions read in place (engine/qgemm.c's block-offset products on AMX tiles and on
 * VNNI, engine/infer_qconv.c): each product equals a direct int32 sum bit for bit, plain and
 * with a convolution's block offsets (overlapping rows, C bytes apart), reading nothing past its
 * contract (guard pages); a quantized model gives the same logits bit for bit on AMX, VNNI (in
 * place), VNNI with im2row (FEDNAS_INFER_PORTABLE=1 keeps it) and the reference kernel, over random convolution
 * shapes (one channel, partial 16-channel and 64-byte blocks, kernels 1-5, padding, fused ReLU
 * and pool, odd maps, a stride-2 conv that keeps the im2row path) and batch sizes around 16.
 * Skips what this CPU cannot run (AMX: Sapphire Rapids or later, and a kernel that lends tile
 * data). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/rng.h"
#include "engine/infer.h"
#include "engine/infer_impl.h"
#include "engine/nn.h"
#include "engine/qgemm.h"

enum { CLS = 4, MAXB = 17 };

/* n bytes that end where an inaccessible page begins: a tile load past them faults (AddressSanitizer
 * does not see AMX's loads and stores). guard_free takes the returned pointer and n. */
static size_t page_round(size_t n)
{
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    return (n + pg - 1) / pg * pg;
}
static void *guarded(size_t n)
{
    size_t len = page_round(n), pg = (size_t)sysconf(_SC_PAGESIZE);
    char *b = mmap(NULL, len + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(b != MAP_FAILED);
    assert_int_equal(mprotect(b + len, pg, PROT_NONE), 0);
    return b + len - n;
}
static void guard_free(void *p, size_t n)
{
    size_t len = page_round(n);
    munmap((char *)p + n - len, len + (size_t)sysconf(_SC_PAGESIZE));
}

/* C[i][n] = sum over blocks b and bytes t < 64 of A[i*lda + koff[b] + t] * B[n][b*64 + t]. */
static void koff_case(rng_t *r, engine_qgemm_koff_fn f, int M, int N, int nkb, int lda, int offsets)
{
    long koff[16];
    size_t span = 0;
    for (int b = 0; b < nkb; b++) {
        koff[b] = offsets ? (long)(rng_next(r) % 300) : 64L * b;
        if ((size_t)koff[b] + 64 > span)
            span = (size_t)koff[b] + 64;
    }
    if (!offsets)
        lda = nkb * 64;
    size_t an = (size_t)(M - 1) * lda + span;
    int K = nkb * 64, NP = (N + 15) / 16 * 16;
    /* A as small as the kernel's contract allows and C exactly M x NP, each against a guard page */
    uint8_t *A = guarded(an);
    int8_t *B = malloc((size_t)N * K);
    int32_t *C = guarded((size_t)M * NP * sizeof *C);
    assert_non_null(A), assert_non_null(B), assert_non_null(C);
    for (size_t i = 0; i < an; i++) /* extremes included: 255 x -128 */
        A[i] = i % 7 == 0 ? 255 : (uint8_t)(rng_next(r) & 255);
    for (size_t i = 0; i < (size_t)N * K; i++)
        B[i] = i % 5 == 0 ? -128 : (int8_t)(rng_next(r) & 255);
    int8_t *Bp = engine_qgemm_pack(N, K, B, K);
    assert_non_null(Bp);
    memset(C, 0x55, (size_t)M * NP * sizeof *C);
    f(M, N, nkb, A, lda, offsets ? koff : NULL, Bp, C, NP);
    for (int i = 0; i < M; i++)
        for (int n = 0; n < N; n++) {
            int64_t s = 0;
            for (int b = 0; b < nkb; b++)
                for (int t = 0; t < 64; t++)
                    s += (int64_t)A[(size_t)i * lda + (size_t)koff[b] + t] * B[(size_t)n * K + b * 64 + t];
            if (s != C[(size_t)i * NP + n])
                fail_msg("product %dx%dx%d (lda %d, %s): C[%d][%d] = %d, the sum is %lld", M, N, K, lda,
                         offsets ? "offsets" : "plain", i, n, C[(size_t)i * NP + n], (long long)s);
        }
    guard_free(A, an), guard_free(C, (size_t)M * NP * sizeof *C);
    free(B), free(Bp);
}

static void test_koff_products(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 21);
    static const int Ms[] = {16, 32, 48, 80}, Ns[] = {1, 16, 17, 33, 64, 70}, nkbs[] = {1, 2, 5};
    for (int impl = ENGINE_QGEMM_VNNI; impl <= ENGINE_QGEMM_AMX; impl++) {
        engine_qgemm_koff_fn f = engine_qgemm_koff_get((engine_qgemm_impl_t)impl);
        if (!f) {
            print_message("no %s here: skipped\n", engine_qgemm_name((engine_qgemm_impl_t)impl));
            continue;
        }
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 6; b++)
                for (int c = 0; c < 3; c++) {
                    koff_case(&r, f, Ms[a], Ns[b], nkbs[c], 0, 0);
                    koff_case(&r, f, Ms[a], Ns[b], nkbs[c], 1 + (int)(rng_next(&r) % 40), 1);
                }
    }
    /* FEDNAS_QGEMM_AMX=0 turns the tiles off */
    setenv("FEDNAS_QGEMM_AMX", "0", 1);
    assert_null(engine_qgemm_amx_get());
    unsetenv("FEDNAS_QGEMM_AMX");
}

/* conv (C -> cout, k, pad, stride) [relu] [maxpool 2] conv 3x3 pad 1 relu flatten linear. */
static void model_case(rng_t *r, int C, int H, int W, int k, int pad, int stride, int cout, int relu, int pool)
{
    char text[768];
    int n = snprintf(text, sizeof text,
                     "{\"type\":\"layers\",\"layers\":[{\"type\":\"conv2d\",\"out\":%d,\"kernel\":%d,\"padding\":%d,"
                     "\"stride\":%d}",
                     cout, k, pad, stride);
    if (relu)
        n += snprintf(text + n, sizeof text - (size_t)n, ",{\"type\":\"relu\"}");
    if (pool)
        n += snprintf(text + n, sizeof text - (size_t)n, ",{\"type\":\"maxpool\",\"kernel\":2}");
    snprintf(text + n, sizeof text - (size_t)n,
             ",{\"type\":\"conv2d\",\"out\":19,\"kernel\":3,\"padding\":1},{\"type\":\"relu\"},"
             "{\"type\":\"flatten\"},{\"type\":\"linear\"}]}");
    json_error_t je;
    json_t *arch = json_loads(text, 0, &je);
    assert_non_null(arch);
    engine_net_t *net = NULL;
    err_t err = {0};
    if (engine_net_create(arch, C, H, W, CLS, &net, &err) != 0)
        fail_msg("input %dx%dx%d, %s: %s", C, H, W, text, err.msg);
    engine_net_init(net, rng_next(r));
    size_t np = engine_net_num_params(net);
    float *p = engine_net_params(net);
    for (size_t i = 0; i < np; i++)
        p[i] += (float)(0.05 * rng_normal(r));
    size_t in = (size_t)C * H * W;
    float *x = malloc(MAXB * in * sizeof *x), *ref = malloc(MAXB * CLS * sizeof *ref),
          *out = malloc(MAXB * CLS * sizeof *out);
    assert_non_null(x), assert_non_null(ref), assert_non_null(out);
    for (size_t i = 0; i < MAXB * in; i++)
        x[i] = (float)rng_normal(r);
    engine_infer_t *plan = NULL;
    if (engine_infer_create(arch, p, np + engine_net_num_buffers(net), C, H, W, CLS, &plan, &err) != 0 ||
        engine_infer_fold(plan, &err) != 0 || engine_infer_quantize(plan, x, MAXB, ENGINE_CALIB_MINMAX, 99.99, &err))
        fail_msg("input %dx%dx%d, %s: %s", C, H, W, text, err.msg);
    if (engine_qgemm_koff_get(ENGINE_QGEMM_VNNI) && (plan->L[0].qwi != NULL) != (stride == 1))
        fail_msg("%s: the first conv %s the in-place weights", text, stride == 1 ? "lacks" : "has");
    static const int sizes[] = {1, 5, 16, MAXB};
    for (int s = 0; s < 4; s++) {
        assert_int_equal(engine_infer_set_qgemm(plan, ENGINE_QGEMM_REF, &err), 0);
        assert_int_equal(engine_infer_forward(plan, x, sizes[s], ref, 1, &err), 0);
        /* VNNI with im2row (the portable switch), VNNI in place, AMX */
        for (int v = 0; v < 3; v++) {
            engine_qgemm_impl_t impl = v < 2 ? ENGINE_QGEMM_VNNI : ENGINE_QGEMM_AMX;
            if (engine_infer_set_qgemm(plan, impl, &err) < 0)
                continue;
            if (v == 0)
                setenv("FEDNAS_INFER_PORTABLE", "1", 1);
            memset(out, 0xff, MAXB * CLS * sizeof *out);
            assert_int_equal(engine_infer_forward(plan, x, sizes[s], out, 1, &err), 0);
            unsetenv("FEDNAS_INFER_PORTABLE");
            if (memcmp(out, ref, (size_t)sizes[s] * CLS * sizeof *out) != 0)
                fail_msg("input %dx%dx%d, %s, batch %d: the %s kernel's logits%s differ from the reference's (%g vs %g)",
                         C, H, W, text, sizes[s], engine_qgemm_name(impl), v == 0 ? " (im2row)" : "", (double)out[0],
                         (double)ref[0]);
        }
    }
    engine_infer_free(plan);
    engine_net_free(net);
    json_decref(arch);
    free(x), free(ref), free(out);
}

static void test_int8_model_same_on_every_kernel(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 23);
    /* the FedAvg CNN's first layer and a 32-channel 5x5 like its second */
    model_case(&r, 1, 28, 28, 5, 2, 1, 32, 1, 1);
    model_case(&r, 32, 14, 14, 5, 2, 1, 64, 1, 1);
    /* a partial 64-byte chunk (3*17 = 51 bytes a kernel row), no padding, no ReLU, no pool */
    model_case(&r, 17, 9, 11, 3, 0, 1, 20, 0, 0);
    /* 1x1 and 2x2 kernels, padding 1 on an even kernel, odd maps under the pool */
    model_case(&r, 40, 7, 9, 1, 0, 1, 70, 1, 1);
    model_case(&r, 3, 10, 13, 2, 1, 1, 16, 1, 1);
    /* stride 2 keeps im2row */
    model_case(&r, 5, 12, 12, 3, 1, 2, 24, 1, 0);
    for (int t = 0; t < 10; t++) {
        int k = 1 + (int)(rng_next(&r) % 5), pad = (int)(rng_next(&r) % (unsigned)k);
        int H = k + 1 + (int)(rng_next(&r) % 12), W = k + 1 + (int)(rng_next(&r) % 14);
        int C = 1 + (int)(rng_next(&r) % 40), cout = 1 + (int)(rng_next(&r) % 70);
        int pool = H + 2 * pad - k + 1 >= 2 && W + 2 * pad - k + 1 >= 2 && rng_next(&r) % 2;
        model_case(&r, C, H, W, k, pad, 1, cout, (int)(rng_next(&r) % 2), pool);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_koff_products),
        cmocka_unit_test(test_int8_model_same_on_every_kernel),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
