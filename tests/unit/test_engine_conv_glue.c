/* The convolution backward's AVX-512 glue (ops_conv_direct.c): the fused ReLU's clamp-and-mask,
 * the mask applied to dy, and dy's transpose for the direct weight gradient, each against its
 * portable loop (ops_conv.h) on random lengths: 1 to 60 floats, so every tail from 1 to 15,
 * exact multiples of 16 and one and several vectors; and transposes of 1 to 40 channels (OCP
 * rounded up to 16 with zero lanes) over 1 to 60 pixels from rows longer than the plane (a chunk
 * of several samples). Values include exact zeros and negative zeros (the mask is > 0, so both
 * give 0 bits). The whole conv ops with the glue on and off are checked in
 * test_engine_conv_paths (test_glue_portable). On a CPU without AVX-512 there is nothing to
 * compare: the test says so and checks only that the dispatch is off. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "engine/ops_conv.h"

static float draw(rng_t *r)
{
    switch (rng_below(r, 6)) {
    case 0:
        return 0.0f;
    case 1:
        return -0.0f;
    default:
        return (float)(rng_uniform(r) * 2.0 - 1.0);
    }
}

static int have_512(void)
{
    if (conv_glue_avx512())
        return 1;
    print_message("no AVX-512 here (or FEDNAS_CONV_PORTABLE set): the portable loops only\n");
    return 0;
}

static void test_relu_mask(void **state)
{
    (void)state;
    if (!have_512())
        return;
    rng_t r;
    rng_seed(&r, 31);
    for (int rep = 0; rep < 400; rep++) {
        const int n = 1 + (int)rng_below(&r, 60);
        float v[64], a[64], b[64];
        uint8_t ma[10], mb[10];
        for (int i = 0; i < 64; i++)
            v[i] = draw(&r);
        memcpy(a, v, sizeof v);
        memcpy(b, v, sizeof v);
        memset(ma, 0xA5, sizeof ma);
        memset(mb, 0xA5, sizeof mb);
        for (int i = 0; i < n; i++)
            a[i] = a[i] > 0.0f ? a[i] : 0.0f;
        relu_mask(a, n, ma);
        conv_relu_mask_512(b, n, mb);
        for (int i = 0; i < 64; i++)
            if (memcmp(&a[i], &b[i], sizeof(float)) != 0 && !(i < n && a[i] == 0.0f && b[i] == 0.0f))
                fail_msg("n %d: v[%d] %g, want %g", n, i, (double)b[i], (double)a[i]);
        /* whole bytes of the mask, and nothing past mask_bytes(n) written */
        if (memcmp(ma, mb, sizeof ma) != 0)
            fail_msg("n %d: mask bytes differ (%02x %02x vs %02x %02x)", n, mb[0], mb[1], ma[0], ma[1]);
    }
}

static void test_relu_mask_apply(void **state)
{
    (void)state;
    if (!have_512())
        return;
    rng_t r;
    rng_seed(&r, 32);
    for (int rep = 0; rep < 400; rep++) {
        const int n = 1 + (int)rng_below(&r, 60);
        float dy[64], a[64], b[64];
        uint8_t m[8];
        for (int i = 0; i < 64; i++)
            dy[i] = draw(&r), a[i] = b[i] = 7.0f;
        for (int i = 0; i < 8; i++)
            m[i] = (uint8_t)rng_below(&r, 256);
        relu_mask_apply(dy, m, n, a);
        conv_relu_mask_apply_512(dy, m, n, b);
        if (memcmp(a, b, sizeof a) != 0)
            for (int i = 0; i < 64; i++)
                if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
                    fail_msg("n %d: o[%d] %g, want %g", n, i, (double)b[i], (double)a[i]);
    }
}

static void test_transpose(void **state)
{
    (void)state;
    if (!have_512())
        return;
    rng_t r;
    rng_seed(&r, 33);
    for (int rep = 0; rep < 200; rep++) {
        const int OC = 1 + (int)rng_below(&r, 40), OHW = 1 + (int)rng_below(&r, 60);
        const int ld = OHW * (1 + (int)rng_below(&r, 3)), OCP = (OC + 15) / 16 * 16;
        float *src = malloc((size_t)OC * ld * sizeof(float));
        float *a = calloc((size_t)OHW * OCP, sizeof(float)), *b = malloc((size_t)OHW * OCP * sizeof(float));
        assert_non_null(src);
        assert_non_null(a);
        assert_non_null(b);
        for (int i = 0; i < OC * ld; i++)
            src[i] = draw(&r);
        for (int i = 0; i < OHW * OCP; i++)
            b[i] = 9.0f; /* lanes past OC must come back zero */
        for (int oc = 0; oc < OC; oc++)
            for (int i = 0; i < OHW; i++)
                a[(size_t)i * OCP + oc] = src[(size_t)oc * ld + i];
        conv_transpose_dy_512(src, ld, OC, OHW, OCP, b);
        for (int i = 0; i < OHW * OCP; i++)
            if (memcmp(&a[i], &b[i], sizeof(float)) != 0)
                fail_msg("OC %d OHW %d ld %d: dyt[%d][%d] %g, want %g", OC, OHW, ld, i / OCP, i % OCP, (double)b[i],
                         (double)a[i]);
        free(src);
        free(a);
        free(b);
    }
}

/* FEDNAS_CONV_GLUE_PORTABLE=1 turns the dispatch off (the A/B switch). */
static void test_switch(void **state)
{
    (void)state;
    setenv("FEDNAS_CONV_GLUE_PORTABLE", "1", 1);
    assert_int_equal(conv_glue_avx512(), 0);
    unsetenv("FEDNAS_CONV_GLUE_PORTABLE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_relu_mask),
        cmocka_unit_test(test_relu_mask_apply),
        cmocka_unit_test(test_transpose),
        cmocka_unit_test(test_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
