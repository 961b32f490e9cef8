/* engine/sampler: class-balanced sampling equalises a heavily imbalanced label set (chi-square
 * against uniform), stays inside the given subset, reproduces from its seed; the shuffled
 * sampler is a permutation. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "engine/sampler.h"

#define N 10000
#define CLASSES 5

/* 9000 / 700 / 200 / 90 / 10 samples, interleaved so classes are not contiguous. */
static const int COUNTS[CLASSES] = {9000, 700, 200, 90, 10};
static uint8_t g_labels[N];

static int setup(void **state)
{
    (void)state;
    int left[CLASSES];
    memcpy(left, COUNTS, sizeof left);
    for (int i = 0, c = 0; i < N; i++) {
        while (left[c] == 0)
            c = (c + 1) % CLASSES;
        g_labels[i] = (uint8_t)c;
        left[c]--;
        c = (c + 1) % CLASSES;
    }
    return 0;
}

/* Pearson's chi-square statistic of `obs` against equal expected counts. */
static double chi2_uniform(const int *obs, int k, long total)
{
    double expect = (double)total / k, s = 0;
    for (int i = 0; i < k; i++)
        s += (obs[i] - expect) * (obs[i] - expect) / expect;
    return s;
}

static void test_balanced_frequencies(void **state)
{
    (void)state;
    enum { LEN = 50000 };
    int *out = malloc(LEN * sizeof *out);
    err_t e = {0};
    assert_int_equal(engine_sampler_balanced(g_labels, NULL, N, CLASSES, LEN, 42, out, &e), 0);
    int per_class[CLASSES] = {0};
    int *per_sample = calloc(N, sizeof *per_sample);
    for (int k = 0; k < LEN; k++) {
        assert_in_range(out[k], 0, N - 1);
        per_class[g_labels[out[k]]]++;
        per_sample[out[k]]++;
    }
    /* 4 degrees of freedom: P(chi2 > 33.38) = 1e-6 under the null, so the bound holds for any
     * seed and generator short of a broken one; the raw label set would score about 150000. */
    double chi2 = chi2_uniform(per_class, CLASSES, LEN);
    if (chi2 > 33.38)
        fail_msg("class counts %d %d %d %d %d: chi2 %.1f", per_class[0], per_class[1], per_class[2],
                 per_class[3], per_class[4], chi2);
    /* Inside the rarest class (10 samples, ~10000 draws) every sample is drawn about equally:
     * 9 degrees of freedom, P(chi2 > 44.5) = 1e-6. */
    int rare[10], nr = 0;
    for (int i = 0; i < N; i++)
        if (g_labels[i] == 4)
            rare[nr++] = per_sample[i];
    assert_int_equal(nr, 10);
    assert_true(chi2_uniform(rare, 10, per_class[4]) < 44.5);
    free(out);
    free(per_sample);
}

static void test_balanced_subset_and_default_length(void **state)
{
    (void)state;
    /* The subset: every third sample, minus all of class 3. */
    int idx[N], n = 0;
    for (int i = 0; i < N; i += 3)
        if (g_labels[i] != 3)
            idx[n++] = i;
    uint8_t *in_subset = calloc(N, 1);
    for (int i = 0; i < n; i++)
        in_subset[idx[i]] = 1;
    int *out = malloc(n * sizeof *out);
    err_t e = {0};
    assert_int_equal(engine_sampler_balanced(g_labels, idx, n, CLASSES, 0, 7, out, &e), 0);
    int per_class[CLASSES] = {0};
    for (int k = 0; k < n; k++) {
        assert_in_range(out[k], 0, N - 1);
        assert_true(in_subset[out[k]]);
        per_class[g_labels[out[k]]]++;
    }
    /* The subset holds 2965 / 196 / 139 / 0 / 3 samples of the five classes. */
    assert_int_equal(per_class[3], 0);
    int present[4] = {per_class[0], per_class[1], per_class[2], per_class[4]};
    if (chi2_uniform(present, 4, n) >= 30.66) /* 3 df, p = 1e-6 */
        fail_msg("n %d counts %d %d %d %d", n, present[0], present[1], present[2], present[3]);
    free(out);
    free(in_subset);
}

static void test_reproducible(void **state)
{
    (void)state;
    int *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b), *c = malloc(N * sizeof *c);
    err_t e = {0};
    assert_int_equal(engine_sampler_balanced(g_labels, NULL, N, CLASSES, 0, 5, a, &e), 0);
    assert_int_equal(engine_sampler_balanced(g_labels, NULL, N, CLASSES, 0, 5, b, &e), 0);
    assert_int_equal(engine_sampler_balanced(g_labels, NULL, N, CLASSES, 0, 6, c, &e), 0);
    assert_memory_equal(a, b, N * sizeof *a);
    assert_true(memcmp(a, c, N * sizeof *a) != 0);

    assert_int_equal(engine_sampler_shuffled(NULL, N, 5, a, &e), 0);
    assert_int_equal(engine_sampler_shuffled(NULL, N, 5, b, &e), 0);
    assert_int_equal(engine_sampler_shuffled(NULL, N, 6, c, &e), 0);
    assert_memory_equal(a, b, N * sizeof *a);
    assert_true(memcmp(a, c, N * sizeof *a) != 0);
    free(a), free(b), free(c);
}

static void test_shuffled_is_permutation(void **state)
{
    (void)state;
    int idx[100], out[100], seen[1000] = {0};
    for (int i = 0; i < 100; i++)
        idx[i] = 10 * i + 3;
    err_t e = {0};
    assert_int_equal(engine_sampler_shuffled(idx, 100, 1, out, &e), 0);
    int moved = 0;
    for (int i = 0; i < 100; i++) {
        assert_in_range(out[i], 0, 999);
        assert_int_equal(out[i] % 10, 3);
        seen[out[i]]++;
        moved += out[i] != idx[i];
    }
    for (int i = 0; i < 100; i++)
        assert_int_equal(seen[idx[i]], 1);
    assert_true(moved > 50);
}

static void test_errors(void **state)
{
    (void)state;
    int out[16];
    err_t e = {0};
    assert_int_equal(engine_sampler_balanced(g_labels, NULL, N, 4, 16, 1, out, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "label 4"));
    int bad_idx[2] = {0, -1};
    assert_int_equal(engine_sampler_balanced(g_labels, bad_idx, 2, CLASSES, 0, 1, out, &e), FN_EINVAL);
    assert_int_equal(engine_sampler_balanced(g_labels, NULL, 0, CLASSES, 0, 1, out, &e), FN_EINVAL);
    assert_int_equal(engine_sampler_balanced(g_labels, NULL, 4, 0, 0, 1, out, &e), FN_EINVAL);
    assert_int_equal(engine_sampler_balanced(g_labels, NULL, 4, CLASSES, -1, 1, out, &e), FN_EINVAL);
    assert_int_equal(engine_sampler_shuffled(NULL, 0, 1, out, &e), FN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_balanced_frequencies),
        cmocka_unit_test(test_balanced_subset_and_default_length),
        cmocka_unit_test(test_reproducible),
        cmocka_unit_test(test_shuffled_is_permutation),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
