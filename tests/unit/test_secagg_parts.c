/* Secure aggregation, its pieces: each masked vector the server sees looks uniform (with
 * controls that show the statistic can fail), the SecAgg+ neighbour graph, parameter checks,
 * the masking kernel against a direct ChaCha20 computation, and the fixed-point encoding's error
 * bound, unbiasedness and round trip. Fixed structural seed, printed at start. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "crypto/secagg.h"
#include "secagg_sim.h"

/* Chi-square of the top byte of each ring value over 256 bins. */
static double chi2_top_byte(const uint8_t *vals_le, uint32_t m, uint32_t bits)
{
    double cnt[256] = {0};
    for (uint32_t i = 0; i < m; i++) {
        const uint8_t *p = vals_le + 4 * (size_t)i;
        uint32_t v = p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
        cnt[(v >> (bits - 8)) & 0xFF]++;
    }
    double exp_ = m / 256.0, chi = 0;
    for (int b = 0; b < 256; b++)
        chi += (cnt[b] - exp_) * (cnt[b] - exp_) / exp_;
    return chi;
}

/* Each masked vector the server receives looks uniform, even for an all-zero input; the same
 * statistic flags the unmasked input and a vector whose masks cancel (the control that shows the
 * test can fail). Threshold 400 for 255 degrees of freedom: p < 1e-8 for uniform data. */
static void test_masked_uniform(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 8);
    for (int variant = 0; variant < 3; variant++) {
        uint32_t bits = variant == 2 ? 20 : 32, m = 16384;
        sim_t s;
        sim_init(&s, &r, 6, 4, m, bits, variant == 1 ? 2 : 0);
        if (variant == 1) { /* SecAgg+ with n = 6, k = 2 */
            s.p.t_nb = 0;
        }
        for (uint32_t i = 0; i < 6; i++)
            memset(s.x[i], 0, (size_t)m * 4);
        for (uint32_t j = 0; j < m; j++)
            s.x[0][j] = (j * 7) % 5; /* a structured input for client 0 */
        s.keep_masked = 1;
        plan_t pl = {0};
        pl.drop[2][5] = 1; /* one dropout so the recovery path is exercised too */
        uint32_t *sum = calloc(m, 4);
        outcome_t o = run_round(&s, &pl, sum);
        assert_int_equal(o.rc, 0);
        check_sum(&s, sum);
        for (uint32_t i = 0; i < 5; i++) {
            assert_non_null(s.masked[i].data);
            double chi = chi2_top_byte(s.masked[i].data + SECAGG_HEADER_LEN + 8, m, bits);
            if (chi > 400)
                fail_msg("variant %d client %u: masked vector chi-square %.1f (uniform: about 255)", variant, i, chi);
        }
        /* controls (what the statistic says when masking is off): the plain input, and the sum */
        uint8_t *plain = malloc((size_t)m * 4);
        for (uint32_t j = 0; j < m; j++)
            put32le(plain + 4 * j, s.x[0][j]);
        assert_true(chi2_top_byte(plain, m, bits) > 10000);
        for (uint32_t j = 0; j < m; j++)
            put32le(plain + 4 * j, sum[j]);
        assert_true(chi2_top_byte(plain, m, bits) > 10000); /* unmasked sum: structured again */
        free(plain);
        free(sum);
        sim_free(&s);
    }
}

static void test_graph(void **state)
{
    err_t e = {0};
    uint32_t ids[300], nb[300], cnt, nb2[300], cnt2;
    for (uint32_t i = 0; i < 300; i++)
        ids[i] = 1000 - 3 * i;
    secagg_params_t p = {.round_id = 1, .n = 300, .ids = ids, .m = 1, .k = secagg_default_k(300)};
    assert_int_equal(p.k, 18);
    for (int i = 0; i < 32; i++)
        p.graph_seed[i] = (uint8_t)i;
    uint32_t deg_total = 0;
    static uint8_t adj[300][300];
    memset(adj, 0, sizeof adj);
    for (uint32_t i = 0; i < 300; i++) {
        assert_int_equal(secagg_neighbours(&p, ids[i], nb, &cnt, &e), 0);
        assert_int_equal(cnt, 18); /* k-regular */
        deg_total += cnt;
        for (uint32_t j = 0; j < cnt; j++) {
            assert_true(nb[j] != ids[i]);
            if (j)
                assert_true(nb[j] > nb[j - 1]);
            adj[i][(1000 - nb[j]) / 3] = 1;
        }
    }
    for (int i = 0; i < 300; i++)
        for (int j = 0; j < 300; j++)
            assert_int_equal(adj[i][j], adj[j][i]); /* symmetric */
    /* deterministic in the seed, and the order of ids does not matter */
    uint32_t rev[300];
    for (int i = 0; i < 300; i++)
        rev[i] = ids[299 - i];
    secagg_params_t p2 = p;
    p2.ids = rev;
    assert_int_equal(secagg_neighbours(&p, ids[7], nb, &cnt, &e), 0);
    assert_int_equal(secagg_neighbours(&p2, ids[7], nb2, &cnt2, &e), 0);
    assert_int_equal(cnt, cnt2);
    assert_memory_equal(nb, nb2, cnt * 4);
    /* another seed, another graph */
    p2.graph_seed[0] ^= 1;
    int differ = 0;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(secagg_neighbours(&p, ids[i], nb, &cnt, &e), 0);
        assert_int_equal(secagg_neighbours(&p2, ids[i], nb2, &cnt2, &e), 0);
        differ |= memcmp(nb, nb2, cnt * 4) != 0;
    }
    assert_true(differ);
    /* odd k rounds up; k >= n-1 is the complete graph */
    p.k = 5;
    assert_int_equal(secagg_neighbours(&p, ids[0], nb, &cnt, &e), 0);
    assert_int_equal(cnt, 6);
    p.n = 7;
    p.k = 6;
    assert_int_equal(secagg_neighbours(&p, ids[0], nb, &cnt, &e), 0);
    assert_int_equal(cnt, 6);
    p.k = 0;
    assert_int_equal(secagg_neighbours(&p, ids[0], nb, &cnt, &e), 0);
    assert_int_equal(cnt, 6);
    assert_int_equal(secagg_neighbours(&p, 4242, nb, &cnt, &e), FN_EINVAL);
}

static void test_params(void **state)
{
    err_t e = {0};
    uint32_t ids[6] = {1, 2, 3, 4, 5, 6};
    secagg_params_t p = {.n = 6, .ids = ids, .m = 10};
    assert_int_equal(secagg_params_check(&p, &e), 0);
    assert_int_equal(secagg_default_t(6), 4);
    assert_int_equal(secagg_default_t(100), 67);
    assert_int_equal(secagg_default_t(3), 2);
    assert_int_equal(secagg_default_t(2), 2);
    assert_int_equal(secagg_default_k(1000), 20);
    p.t = 3; /* not more than half */
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.t = 7;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.t = 4;
    ids[2] = 0;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    ids[2] = 2;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    ids[2] = 3;
    p.bits = 4;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.bits = 33;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.bits = 0;
    p.m = 0;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    p.m = 1;
    p.n = 1;
    assert_int_equal(secagg_params_check(&p, &e), FN_EINVAL);
    /* a client outside the selection cannot join */
    p.n = 6;
    secagg_client_t *c;
    secagg_buf_t a = {0};
    assert_int_equal(secagg_client_new(&p, 9, &c, &a, &e), FN_EINVAL);
    assert_null(c);
}

/* The PRG is the plain ChaCha20-IETF keystream (nonce 0) as little-endian words, across the
 * kernel's chunk boundaries; a stream added and subtracted cancels. */
static void test_prg_kernel(void **state)
{
    uint32_t m = 5000 + 17;
    uint8_t keys[3 * 32], nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
    randombytes_buf(keys, sizeof keys);
    uint8_t *ks = malloc((size_t)m * 4);
    uint32_t *y = calloc(m, 4);
    crypto_stream_chacha20_ietf(ks, (size_t)m * 4, nonce, keys + 32);
    int8_t plus[1] = {1};
    secagg_prg_apply(y, m, keys + 32, plus, 1);
    for (uint32_t i = 0; i < m; i++) {
        uint32_t w = ks[4 * i] | ks[4 * i + 1] << 8 | ks[4 * i + 2] << 16 | (uint32_t)ks[4 * i + 3] << 24;
        if (y[i] != w)
            fail_msg("word %u: kernel %08x, keystream %08x", i, y[i], w);
    }
    /* + s0 - s1 + s2 - s2 - s0 + s1 is the identity */
    uint8_t k6[6 * 32];
    memcpy(k6, keys, 32);
    memcpy(k6 + 32, keys + 32, 32);
    memcpy(k6 + 64, keys + 64, 32);
    memcpy(k6 + 96, keys + 64, 32);
    memcpy(k6 + 128, keys, 32);
    memcpy(k6 + 160, keys + 32, 32);
    int8_t sg[6] = {1, -1, 1, -1, -1, 1};
    uint32_t *z = calloc(m, 4);
    memcpy(z, y, (size_t)m * 4);
    secagg_prg_apply(z, m, k6, sg, 6);
    assert_memory_equal(z, y, (size_t)m * 4);
    free(ks);
    free(y);
    free(z);
}

/* ---------- encoding ---------- */
static void test_encoding_bound(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 9);
    err_t e = {0};
    for (int trial = 0; trial < 40; trial++) {
        uint32_t n = 2 + (uint32_t)rng_below(&r, 200), m = 1 + (uint32_t)rng_below(&r, 500);
        uint32_t bits = rng_below(&r, 2) ? 32 : 16 + (uint32_t)rng_below(&r, 16);
        double clip = 0.1 + 10 * rng_uniform(&r);
        double f = secagg_choose_scale(n, clip, bits);
        assert_true(f > 0);
        float *x = malloc((size_t)m * 4), *dec = malloc((size_t)m * 4);
        uint32_t *enc = malloc((size_t)m * 4), *sum = calloc(m, 4);
        double *exact = calloc(m, sizeof *exact);
        for (uint32_t u = 0; u < n; u++) {
            double ss = 0, scale = rng_uniform(&r) * 3 * clip; /* about half get clipped */
            for (uint32_t j = 0; j < m; j++) {
                x[j] = (float)(rng_normal(&r) * scale / sqrt((double)m));
                if (trial == 0) /* extreme: every client at +clip in one coordinate */
                    x[j] = j == 0 ? (float)(2 * clip) : 0.0f;
                ss += (double)x[j] * x[j];
            }
            double sc = sqrt(ss) > clip ? clip / sqrt(ss) : 1.0;
            for (uint32_t j = 0; j < m; j++)
                exact[j] += x[j] * sc;
            assert_int_equal(secagg_encode(x, m, clip, f, bits, enc, &e), 0);
            for (uint32_t j = 0; j < m; j++)
                sum[j] += enc[j];
        }
        secagg_decode(sum, m, f, bits, dec);
        double bound = n / f, worst = 0;
        for (uint32_t j = 0; j < m; j++) {
            double err = fabs((double)dec[j] - exact[j]);
            double tol = bound + fabs(exact[j]) * 1.2e-7; /* the float32 result's own rounding */
            if (err > tol)
                fail_msg("trial %d coordinate %u: error %g above n/f = %g", trial, j, err, bound);
            if (err / bound > worst)
                worst = err / bound;
        }
        if (trial == 0)
            assert_true(fabs(dec[0] - n * clip) <= bound + n * clip * 1.2e-7); /* no wrap at the extreme */
        free(x);
        free(dec);
        free(enc);
        free(sum);
        free(exact);
    }
    /* the bound is tight enough to mean something: coarse scales show errors of that order */
    assert_true(secagg_choose_scale(100, 1.0, 32) > 2.1e7 && secagg_choose_scale(100, 1.0, 32) < 2.2e7);
    assert_true(secagg_choose_scale(1u << 20, 1.0, 16) == 0); /* no room */
}

static void test_encoding_unbiased_and_errors(void **state)
{
    err_t e = {0};
    /* 0.3 units between two integers: rounding up 30% of the time, mean exact */
    double f = 10.0;
    float x[4096];
    uint32_t enc[4096];
    for (int i = 0; i < 4096; i++)
        x[i] = 0.13f / 64; /* tiny values so no clipping: z = 0.0203 */
    assert_int_equal(secagg_encode(x, 4096, 100.0, f, 32, enc, &e), 0);
    double mean = 0;
    for (int i = 0; i < 4096; i++) {
        assert_true(enc[i] == 0 || enc[i] == 1);
        mean += enc[i] / 4096.0;
    }
    double z = (double)(0.13f / 64) * f;
    assert_true(fabs(mean - z) < 5 * sqrt(z * (1 - z) / 4096)); /* E[round(z)] = z */
    /* negative values wrap to the top of the ring and decode back */
    x[0] = -1.0f;
    assert_int_equal(secagg_encode(x, 1, 100.0, f, 24, enc, &e), 0);
    assert_int_equal(enc[0], (1u << 24) - 10);
    float d;
    secagg_decode(enc, 1, f, 24, &d);
    assert_true(d == -1.0f);
    /* bad input */
    x[1] = NAN;
    assert_int_equal(secagg_encode(x, 2, 1.0, f, 32, enc, &e), FN_EINVAL);
    x[1] = INFINITY;
    assert_int_equal(secagg_encode(x, 2, 1.0, f, 32, enc, &e), FN_EINVAL);
    assert_int_equal(secagg_encode(x, 1, 1.0, 1e10, 32, enc, &e), FN_EINVAL); /* C f does not fit */
    assert_int_equal(secagg_encode(x, 1, -1.0, f, 32, enc, &e), FN_EINVAL);
}

/* Encoded floats through a round: the decoded sum is within n/f of the clipped plain sum. */
static void test_encode_round_decode(void **state)
{
    rng_t r;
    rng_seed(&r, SEED + 10);
    err_t e = {0};
    uint32_t n = 12, m = 500, bits = 32;
    double clip = 1.0, f = secagg_choose_scale(n, clip, bits);
    sim_t s;
    sim_init(&s, &r, n, 0, m, bits, 0);
    double exact[500] = {0};
    float x[500];
    plan_t pl = {0};
    pl.drop[2][3] = pl.drop[2][7] = 1;
    for (uint32_t u = 0; u < n; u++) {
        double ss = 0;
        for (uint32_t j = 0; j < m; j++) {
            x[j] = (float)(rng_normal(&r) * 0.1);
            ss += (double)x[j] * x[j];
        }
        double sc = sqrt(ss) > clip ? clip / sqrt(ss) : 1.0;
        if (!pl.drop[2][u])
            for (uint32_t j = 0; j < m; j++)
                exact[j] += x[j] * sc;
        assert_int_equal(secagg_encode(x, m, clip, f, bits, s.x[u], &e), 0);
    }
    uint32_t sum[500];
    float dec[500];
    outcome_t o = run_round(&s, &pl, sum);
    assert_int_equal(o.rc, 0);
    check_sum(&s, sum);
    secagg_decode(sum, m, f, bits, dec);
    for (uint32_t j = 0; j < m; j++)
        assert_true(fabs(dec[j] - exact[j]) <= n / f + fabs(exact[j]) * 1.2e-7);
    sim_free(&s);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    printf("test_secagg_parts: structural seed %llu\n", (unsigned long long)SEED);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_graph),
        cmocka_unit_test(test_prg_kernel),
        cmocka_unit_test(test_masked_uniform),
        cmocka_unit_test(test_encoding_bound),
        cmocka_unit_test(test_encoding_unbiased_and_errors),
        cmocka_unit_test(test_encode_round_decode),
    };
    return cmocka_run_group_tests_name("test_secagg_parts", tests, NULL, NULL);
}
