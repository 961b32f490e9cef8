/* Shamir sharing over GF(2^61 - 1): field arithmetic against 128-bit reference arithmetic,
 * reconstruction from any t of n shares, refusal below t, and detection of altered shares.
 * Structural randomness (n, t, points, subsets) comes from a fixed, printed seed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "common/rng.h"
#include "crypto/shamir.h"

#define SEED 20260505ULL
#define P SHAMIR_P

static uint64_t ref_mul(uint64_t a, uint64_t b) { return (uint64_t)(((unsigned __int128)a * b) % P); }

static void test_field(void **state)
{
    rng_t r;
    rng_seed(&r, SEED);
    const uint64_t edge[] = {0, 1, 2, P - 1, P - 2, 1ULL << 60, (1ULL << 32) - 1, 0x123456789ULL};
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++)
        for (size_t j = 0; j < sizeof edge / sizeof *edge; j++) {
            uint64_t a = edge[i], b = edge[j];
            assert_true(shamir_mul(a, b) == ref_mul(a, b));
            assert_true(shamir_add(a, b) == (a + b) % P);
            assert_true(shamir_sub(a, b) == (a + P - b) % P);
        }
    for (int i = 0; i < 100000; i++) {
        uint64_t a = rng_below(&r, P), b = rng_below(&r, P);
        assert_true(shamir_mul(a, b) == ref_mul(a, b));
        assert_true(shamir_add(a, b) == (a + b) % P);
        assert_true(shamir_sub(a, b) == (a + P - b) % P);
        if (i % 100 == 0 && a)
            assert_true(shamir_mul(a, shamir_inv(a)) == 1);
    }
    assert_true(shamir_mul(P - 1, shamir_inv(P - 1)) == 1);
}

/* n distinct ids in [1, 5000] */
static void random_ids(rng_t *r, uint32_t *xs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        int dup;
        do {
            v = 1 + (uint32_t)rng_below(r, 5000);
            dup = 0;
            for (size_t j = 0; j < i; j++)
                dup |= xs[j] == v;
        } while (dup);
        xs[i] = v;
    }
}

static void test_split_combine_any_t(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 1);
    err_t e = {0};
    for (int trial = 0; trial < 200; trial++) {
        size_t n = 1 + rng_below(&r, 60);
        uint32_t t = 1 + (uint32_t)rng_below(&r, n);
        uint32_t xs[64];
        int order[64];
        random_ids(&r, xs, n);
        uint8_t secret[32], back[32];
        randombytes_buf(secret, sizeof secret);
        if (trial == 0)
            memset(secret, 0xFF, sizeof secret); /* every chunk at its maximum */
        if (trial == 1)
            memset(secret, 0, sizeof secret);
        shamir_share_t sh[64], pick[64];
        assert_int_equal(shamir_split(secret, t, xs, n, sh, &e), 0);
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(sh[i].x, xs[i]);
            for (int k = 0; k < SHAMIR_WORDS; k++)
                assert_true(sh[i].y[k] < P);
            order[i] = (int)i;
        }
        /* a random subset of size t .. n, in random order */
        rng_shuffle_int(&r, order, (int)n);
        size_t c = t + rng_below(&r, n - t + 1);
        for (size_t i = 0; i < c; i++)
            pick[i] = sh[order[i]];
        memset(back, 0, sizeof back);
        assert_int_equal(shamir_combine(pick, c, t, back, &e), 0);
        assert_memory_equal(back, secret, 32);
        /* serialisation round trip */
        uint8_t buf[SHAMIR_SHARE_LEN];
        shamir_share_t s2;
        shamir_store(&sh[0], buf);
        assert_int_equal(shamir_load(&s2, sh[0].x, buf, &e), 0);
        assert_memory_equal(s2.y, sh[0].y, sizeof s2.y);
    }
}

static void test_below_threshold(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 2);
    err_t e = {0};
    for (int trial = 0; trial < 100; trial++) {
        size_t n = 3 + rng_below(&r, 30);
        uint32_t t = 2 + (uint32_t)rng_below(&r, n - 1), xs[40];
        random_ids(&r, xs, n);
        uint8_t secret[32], back[32];
        randombytes_buf(secret, sizeof secret);
        shamir_share_t sh[40];
        assert_int_equal(shamir_split(secret, t, xs, n, sh, &e), 0);
        /* fewer than t: refused */
        assert_int_equal(shamir_combine(sh, t - 1, t, back, &e), FN_EINVAL);
        assert_non_null(strstr(e.msg, "threshold"));
        /* forcing a degree t-2 interpolation of t-1 shares does not give the secret */
        memset(back, 0, sizeof back);
        int rc = shamir_combine(sh, t - 1, t - 1, back, &e);
        assert_true(rc == FN_EPROTO || memcmp(back, secret, 32) != 0);
    }
    /* t - 1 shares are uniform whatever the secret: the mean of a share word over many splits of
     * an all-zero secret sits near p/2 (a secret-dependent bias would move it) */
    uint8_t zero[32] = {0};
    uint32_t xs[3] = {7, 8, 9};
    double mean = 0;
    for (int i = 0; i < 4000; i++) {
        shamir_share_t sh[3];
        assert_int_equal(shamir_split(zero, 3, xs, 3, sh, &e), 0);
        mean += (double)sh[0].y[4] / (double)P / 4000;
    }
    assert_true(mean > 0.47 && mean < 0.53); /* sd of the mean is 0.0046 */
}

static void test_tamper_detected(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 3);
    err_t e = {0};
    for (int trial = 0; trial < 100; trial++) {
        size_t n = 4 + rng_below(&r, 30);
        uint32_t t = 2 + (uint32_t)rng_below(&r, n - 2), xs[40]; /* t < n: at least one extra share */
        random_ids(&r, xs, n);
        uint8_t secret[32], back[32];
        randombytes_buf(secret, sizeof secret);
        shamir_share_t sh[40];
        assert_int_equal(shamir_split(secret, t, xs, n, sh, &e), 0);
        size_t victim = rng_below(&r, n);
        int word = (int)rng_below(&r, SHAMIR_WORDS);
        sh[victim].y[word] = shamir_add(sh[victim].y[word], 1 + rng_below(&r, P - 1));
        memset(back, 0, sizeof back);
        assert_int_equal(shamir_combine(sh, n, t, back, &e), FN_EPROTO); /* any single altered share, t < count */
        uint8_t zero[32] = {0};
        assert_memory_equal(back, zero, 32); /* nothing written on failure */
    }
    /* exactly t shares: an altered share cannot be told apart, but never yields the secret */
    uint32_t xs[5] = {1, 2, 3, 4, 5};
    uint8_t secret[32], back[32];
    randombytes_buf(secret, sizeof secret);
    shamir_share_t sh[5];
    assert_int_equal(shamir_split(secret, 5, xs, 5, sh, &e), 0);
    sh[2].y[4] = shamir_add(sh[2].y[4], 12345);
    int rc = shamir_combine(sh, 5, 5, back, &e);
    assert_true(rc == FN_EPROTO || memcmp(back, secret, 32) != 0);
    sh[2].y[4] = shamir_add(sh[2].y[4], P - 12345);
    sh[2].y[4] = shamir_add(sh[2].y[4], 1ULL << 40); /* a gross change: out of the 4-byte chunk */
    assert_int_equal(shamir_combine(sh, 5, 5, back, &e), FN_EPROTO);
    /* a value >= p is refused at load and at combine */
    uint8_t buf[SHAMIR_SHARE_LEN];
    memset(buf, 0xFF, sizeof buf);
    shamir_share_t s2;
    assert_int_equal(shamir_load(&s2, 1, buf, &e), FN_EPROTO);
    sh[0].y[0] = P;
    assert_int_equal(shamir_combine(sh, 5, 5, back, &e), FN_EPROTO);
}

static void test_bad_points(void **state)
{
    err_t e = {0};
    uint8_t secret[32] = {1}, back[32];
    shamir_share_t sh[3];
    uint32_t zero_pt[3] = {1, 0, 2}, dup[3] = {1, 2, 1}, ok[3] = {1, 2, 3};
    assert_int_equal(shamir_split(secret, 2, zero_pt, 3, sh, &e), FN_EINVAL);
    assert_int_equal(shamir_split(secret, 2, dup, 3, sh, &e), FN_EINVAL);
    assert_int_equal(shamir_split(secret, 4, ok, 3, sh, &e), FN_EINVAL);
    assert_int_equal(shamir_split(secret, 0, ok, 3, sh, &e), FN_EINVAL);
    assert_int_equal(shamir_split(secret, 2, ok, 3, sh, &e), 0);
    sh[1].x = sh[0].x;
    assert_int_equal(shamir_combine(sh, 3, 2, back, &e), FN_EINVAL);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    printf("test_shamir: structural seed %llu\n", (unsigned long long)SEED);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_field),
        cmocka_unit_test(test_split_combine_any_t),
        cmocka_unit_test(test_below_threshold),
        cmocka_unit_test(test_tamper_detected),
        cmocka_unit_test(test_bad_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
