/* Update compression: 8-bit quantization stays within one step of each value per chunk and is
 * unbiased over many draws; top-k keeps exactly the k largest magnitudes with ties to the lower
 * index; every decoder refuses malformed input (counts, index order and range, scales). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/compress.h"
#include "common/rng.h"

static void fill(float *x, size_t n, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(rng_normal(&r) * (i % 7 == 0 ? 10.0 : 0.01)); /* chunks with wide ranges */
}

static void test_q8_round_trip_bound(void **state)
{
    (void)state;
    size_t n = 3 * COMPRESS_CHUNK + 17; /* a short last chunk */
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *sc = malloc(8 * sizeof *sc);
    uint8_t *codes = malloc(n);
    fill(x, n, 1);
    x[5] = 3.0f; /* one chunk with a constant tail does not matter; the last chunk is constant: */
    for (size_t i = 3 * COMPRESS_CHUNK; i < n; i++)
        x[i] = -0.25f;
    assert_int_equal(compress_q8_chunks(n), 4);
    assert_int_equal(compress_q8_encode(x, n, 42, codes, sc, NULL), 0);
    assert_int_equal(compress_q8_decode(codes, n, sc, 8, y, NULL), 0);
    for (size_t c = 0; c < 4; c++) {
        double step = ((double)sc[2 * c + 1] - sc[2 * c]) / 255.0;
        for (size_t i = c * COMPRESS_CHUNK; i < n && i < (c + 1) * COMPRESS_CHUNK; i++) {
            assert_true(sc[2 * c] <= x[i] && x[i] <= sc[2 * c + 1]);
            assert_true(fabs((double)y[i] - x[i]) <= step * (1 + 1e-5) + 1e-7);
        }
    }
    for (size_t i = 3 * COMPRESS_CHUNK; i < n; i++) /* a constant chunk decodes exactly */
        assert_true(y[i] == -0.25f);
    free(x);
    free(y);
    free(sc);
    free(codes);
}

/* The mean of many decodings of the same vector converges on the vector: unbiased rounding.
 * Deterministic rounding to nearest would miss by up to half a step at these points. */
static void test_q8_unbiased(void **state)
{
    (void)state;
    enum { N = 64, DRAWS = 20000 };
    float x[N], y[N], sc[2];
    uint8_t codes[N];
    double sum[N] = {0};
    for (int i = 0; i < N; i++)
        x[i] = (float)i / (N - 1) + (i ? 0.3f / 255 : 0); /* off the grid by 0.3 of a step */
    x[N - 1] = 1.0f + 0.3f / 255;
    for (int d = 0; d < DRAWS; d++) {
        assert_int_equal(compress_q8_encode(x, N, (uint64_t)d + 1, codes, sc, NULL), 0);
        assert_int_equal(compress_q8_decode(codes, N, sc, 2, y, NULL), 0);
        for (int i = 0; i < N; i++)
            sum[i] += y[i];
    }
    double step = ((double)sc[1] - sc[0]) / 255;
    for (int i = 0; i < N; i++) {
        double mean = sum[i] / DRAWS;
        /* std of one draw <= step/2; 6 standard errors */
        assert_true(fabs(mean - x[i]) < 6 * 0.5 * step / sqrt(DRAWS));
    }
    /* The same seed gives the same codes. */
    uint8_t c2[N];
    assert_int_equal(compress_q8_encode(x, N, 7, codes, sc, NULL), 0);
    assert_int_equal(compress_q8_encode(x, N, 7, c2, sc, NULL), 0);
    assert_memory_equal(codes, c2, N);
}

static void test_topk_exact(void **state)
{
    (void)state;
    size_t m = 5000, k = compress_topk_count(m, 0.01);
    assert_int_equal(k, 50);
    assert_int_equal(compress_topk_count(10, 1e-9), 1);
    assert_int_equal(compress_topk_count(10, 1.0), 10);
    float *x = malloc(m * sizeof *x), *val = malloc(k * sizeof *val), *y = malloc(m * sizeof *y);
    uint32_t *idx = malloc(k * sizeof *idx);
    fill(x, m, 3);
    assert_int_equal(compress_topk(x, m, k, idx, val, NULL), 0);
    /* Independent oracle: the k-th largest magnitude; everything kept is >= it, nothing
     * dropped is above it. */
    float *a = malloc(m * sizeof *a);
    for (size_t i = 0; i < m; i++)
        a[i] = fabsf(x[i]);
    for (size_t i = 0; i < k; i++) { /* partial selection sort, descending */
        size_t b = i;
        for (size_t j = i + 1; j < m; j++)
            if (a[j] > a[b])
                b = j;
        float t = a[i];
        a[i] = a[b];
        a[b] = t;
    }
    float kth = a[k - 1];
    char *kept = calloc(m, 1);
    for (size_t i = 0; i < k; i++) {
        if (i)
            assert_true(idx[i] > idx[i - 1]);
        assert_true(idx[i] < m);
        assert_true(val[i] == x[idx[i]]);
        assert_true(fabsf(val[i]) >= kth);
        kept[idx[i]] = 1;
    }
    for (size_t i = 0; i < m; i++)
        if (!kept[i])
            assert_true(fabsf(x[i]) <= kth);
    assert_int_equal(compress_topk_scatter(idx, val, k, m, y, NULL), 0);
    for (size_t i = 0; i < m; i++)
        assert_true(y[i] == (kept[i] ? x[i] : 0.0f));
    free(a);
    free(kept);
    free(x);
    free(val);
    free(y);
    free(idx);
}

static void test_topk_ties(void **state)
{
    (void)state;
    float x[8] = {1, -2, 2, 0, -2, 2, 1, 0.5f};
    uint32_t idx[3];
    float val[3];
    assert_int_equal(compress_topk(x, 8, 3, idx, val, NULL), 0);
    assert_int_equal(idx[0], 1); /* four of magnitude 2: the three lowest indices */
    assert_int_equal(idx[1], 2);
    assert_int_equal(idx[2], 4);
    assert_true(val[0] == -2 && val[1] == 2 && val[2] == -2);
    x[3] = NAN;
    err_t e;
    assert_int_equal(compress_topk(x, 8, 3, idx, val, &e), FN_EINVAL);
    assert_int_equal(compress_q8_encode(x, 8, 1, (uint8_t[8]){0}, (float[2]){0}, &e), FN_EINVAL);
}

static void test_decode_rejects(void **state)
{
    (void)state;
    err_t e;
    float out[16], sc[2] = {0, 1};
    uint8_t codes[16] = {0};
    /* scales: wrong count, NaN, inverted, infinite */
    assert_int_equal(compress_q8_decode(codes, 16, sc, 4, out, &e), FN_EPROTO);
    assert_int_equal(compress_q8_decode(codes, 16, (float[2]){NAN, 1}, 2, out, &e), FN_EPROTO);
    assert_int_equal(compress_q8_decode(codes, 16, (float[2]){1, 0}, 2, out, &e), FN_EPROTO);
    assert_int_equal(compress_q8_decode(codes, 16, (float[2]){0, INFINITY}, 2, out, &e), FN_EPROTO);
    assert_int_equal(compress_q8_decode(codes, 16, sc, 2, out, &e), 0);
    /* indices: repeated, decreasing, out of range; values: non-finite */
    float v[3] = {1, 2, 3};
    assert_int_equal(compress_topk_scatter((uint32_t[3]){1, 1, 2}, v, 3, 16, out, &e), FN_EPROTO);
    assert_int_equal(compress_topk_scatter((uint32_t[3]){3, 2, 5}, v, 3, 16, out, &e), FN_EPROTO);
    assert_int_equal(compress_topk_scatter((uint32_t[3]){1, 2, 16}, v, 3, 16, out, &e), FN_EPROTO);
    assert_int_equal(compress_topk_scatter((uint32_t[3]){1, 2, 3}, (float[3]){1, NAN, 3}, 3, 16, out, &e),
                     FN_EPROTO);
    assert_int_equal(compress_topk_scatter((uint32_t[3]){1, 2, 15}, v, 3, 16, out, &e), 0);
    assert_true(out[15] == 3 && out[0] == 0);
    /* compress_decode: counts must match what the spec and m imply */
    compress_spec_t both = {.quantize = 8, .topk = 0.2}; /* k = ceil(3.2) = 4 of 16 */
    float scratch[4];
    uint32_t idx[4] = {0, 3, 7, 9};
    assert_int_equal(compress_decode(&both, 16, idx, 4, NULL, 0, codes, 4, sc, 2, scratch, out, &e), 0);
    assert_int_equal(compress_decode(&both, 16, idx, 3, NULL, 0, codes, 3, sc, 2, scratch, out, &e), FN_EPROTO);
    assert_int_equal(compress_decode(&both, 16, idx, 4, NULL, 0, codes, 5, sc, 2, scratch, out, &e), FN_EPROTO);
    assert_int_equal(compress_decode(&both, 16, NULL, 0, NULL, 0, codes, 4, sc, 2, scratch, out, &e), FN_EPROTO);
    assert_int_equal(compress_decode(&both, 16, idx, 4, NULL, 0, codes, 4, NULL, 0, scratch, out, &e), FN_EPROTO);
    compress_spec_t q = {.quantize = 8};
    assert_int_equal(compress_decode(&q, 16, NULL, 0, NULL, 0, codes, 15, sc, 2, NULL, out, &e), FN_EPROTO);
    compress_spec_t t = {.topk = 0.2};
    assert_int_equal(compress_decode(&t, 16, idx, 4, v, 3, NULL, 0, NULL, 0, NULL, out, &e), FN_EPROTO);
}

/* Found by fuzz_compress: with max tiny next to min, min + 255 * step rounded past max (to
 * +0.0 for a negative max). Every decoded value must stay inside its chunk's [min, max]. */
static void test_q8_decode_within_range(void **state)
{
    (void)state;
    float sc[2] = {-3.125000238418579f, -9.677681971507976e-21f}, out[4];
    uint8_t codes[4] = {255, 0, 128, 255};
    assert_int_equal(compress_q8_decode(codes, 4, sc, 2, out, NULL), 0);
    for (int i = 0; i < 4; i++)
        assert_true(out[i] >= sc[0] && out[i] <= sc[1]);
    assert_true(out[0] == sc[1] && out[1] == sc[0]);
}

/* The whole path: encode then decode under each spec. */
static void test_encode_decode(void **state)
{
    (void)state;
    size_t m = 2500;
    float *x = malloc(m * sizeof *x), *y = malloc(m * sizeof *y), *scratch = malloc(m * sizeof *y);
    fill(x, m, 9);
    compress_spec_t specs[3] = {{.quantize = 8}, {.topk = 0.05}, {.quantize = 8, .topk = 0.05}};
    for (int s = 0; s < 3; s++) {
        compress_enc_t enc;
        assert_int_equal(compress_encode(&specs[s], x, m, 5, &enc, NULL), 0);
        size_t n = enc.n;
        assert_int_equal(n, specs[s].topk > 0 ? 125 : m);
        assert_int_equal(compress_decode(&specs[s], m, enc.indices, enc.indices ? n : 0, enc.values,
                                         enc.values ? n : 0, enc.codes, enc.codes ? n : 0, enc.scales, enc.nscales,
                                         scratch, y, NULL),
                         0);
        size_t nonzero = 0;
        for (size_t i = 0; i < m; i++)
            nonzero += y[i] != 0;
        if (specs[s].topk > 0)
            assert_true(nonzero <= n);
        if (s == 1)
            for (size_t i = 0; i < n; i++)
                assert_true(y[enc.indices[i]] == x[enc.indices[i]]);
        compress_enc_free(&enc);
    }
    free(x);
    free(y);
    free(scratch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q8_round_trip_bound), cmocka_unit_test(test_q8_unbiased),
        cmocka_unit_test(test_topk_exact),          cmocka_unit_test(test_topk_ties),
        cmocka_unit_test(test_decode_rejects),      cmocka_unit_test(test_encode_decode),
        cmocka_unit_test(test_q8_decode_within_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
