/* engine/augment: each step checked against what it must do to pixels and labels (flip twice is
 * identity, crops move a ramp by the reported shift, erasing touches one box of the right area,
 * mixed labels equal the pixel proportions), reproducibility, and config errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/augment.h"

enum { B = 8, C = 3, H = 16, W = 12, IMG = C * H * W };

static float *random_batch(uint64_t seed)
{
    float *x = malloc(B * IMG * sizeof *x);
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < B * IMG; i++)
        x[i] = (float)rng_uniform(&r);
    return x;
}

/* Image i filled with the value i + 1, so every pixel tells which image it came from. */
static float *constant_batch(void)
{
    float *x = malloc(B * IMG * sizeof *x);
    for (int i = 0; i < B; i++)
        for (int k = 0; k < IMG; k++)
            x[i * IMG + k] = (float)(i + 1);
    return x;
}

/* Pixel k of image i holds (i + 1) * 1000 + k: its source image and its position. */
static float *coded_batch(void)
{
    float *x = malloc(B * IMG * sizeof *x);
    for (int i = 0; i < B; i++)
        for (int k = 0; k < IMG; k++)
            x[i * IMG + k] = (float)((i + 1) * 1000 + k);
    return x;
}

/* Every pixel came from the same position of some image, and soft[i][k] is the share of image
 * i's pixels that came from image k. */
static void check_coded_shares(const float *x, const float *soft)
{
    for (int i = 0; i < B; i++) {
        int count[B] = {0};
        for (int k = 0; k < IMG; k++) {
            int v = (int)x[i * IMG + k], src = v / 1000 - 1;
            assert_true(x[i * IMG + k] == (float)v && src >= 0 && src < B);
            assert_int_equal(v % 1000, k);
            count[src]++;
        }
        for (int k = 0; k < B; k++)
            assert_true(fabs(soft[i * B + k] - (double)count[k] / IMG) < 1e-6);
    }
}

static void test_hflip(void **state)
{
    (void)state;
    float *x = random_batch(1), *orig = random_batch(1);
    rng_t r;
    rng_seed(&r, 7);
    uint8_t flipped[B];
    err_t e = {0};
    assert_int_equal(engine_augment_hflip(x, B, C, H, W, 1.0, &r, flipped, &e), 0);
    for (int i = 0; i < B; i++) {
        assert_int_equal(flipped[i], 1);
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++)
                    assert_true(x[((i * C + c) * H + y) * W + xx] == orig[((i * C + c) * H + y) * W + (W - 1 - xx)]);
    }
    assert_int_equal(engine_augment_hflip(x, B, C, H, W, 1.0, &r, NULL, &e), 0);
    assert_memory_equal(x, orig, B * IMG * sizeof *x);

    /* p = 0.5: replaying the same stream flips the same images back. */
    rng_t r1, r2;
    rng_seed(&r1, 99);
    r2 = r1;
    assert_int_equal(engine_augment_hflip(x, B, C, H, W, 0.5, &r1, flipped, &e), 0);
    int n = 0;
    for (int i = 0; i < B; i++)
        n += flipped[i];
    assert_true(n > 0 && n < B); /* seed 99 flips some, not all */
    assert_true(memcmp(x, orig, B * IMG * sizeof *x) != 0);
    assert_int_equal(engine_augment_hflip(x, B, C, H, W, 0.5, &r2, NULL, &e), 0);
    assert_memory_equal(x, orig, B * IMG * sizeof *x);
    assert_int_equal(engine_augment_hflip(x, B, C, H, W, 1.5, &r2, NULL, &e), FN_EINVAL);
    free(x), free(orig);
}

static void test_crop(void **state)
{
    (void)state;
    float *x = random_batch(2), *orig = random_batch(2);
    rng_t r;
    rng_seed(&r, 3);
    int shifts[2 * B];
    err_t e = {0};
    assert_int_equal(engine_augment_random_crop(x, B, C, H, W, 0, &r, shifts, &e), 0);
    assert_memory_equal(x, orig, B * IMG * sizeof *x);
    for (int i = 0; i < 2 * B; i++)
        assert_int_equal(shifts[i], 0);

    /* A ramp: pixel (c, y, x) holds 1 + c*1000 + y*W + x, never 0. */
    for (int i = 0; i < B; i++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++)
                    x[((i * C + c) * H + y) * W + xx] = (float)(1 + c * 1000 + y * W + xx);
    const int pad = 4;
    assert_int_equal(engine_augment_random_crop(x, B, C, H, W, pad, &r, shifts, &e), 0);
    int moved = 0;
    for (int i = 0; i < B; i++) {
        int dy = shifts[2 * i], dx = shifts[2 * i + 1];
        assert_in_range(dy + pad, 0, 2 * pad);
        assert_in_range(dx + pad, 0, 2 * pad);
        moved += dy != 0 || dx != 0;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++) {
                    int sy = y - dy, sx = xx - dx;
                    float want = (sy >= 0 && sy < H && sx >= 0 && sx < W) ? (float)(1 + c * 1000 + sy * W + sx) : 0.0f;
                    assert_true(x[((i * C + c) * H + y) * W + xx] == want);
                }
    }
    assert_true(moved > 0);
    assert_int_equal(engine_augment_random_crop(x, B, C, H, W, -1, &r, NULL, &e), FN_EINVAL);
    free(x), free(orig);
}

static void test_erasing(void **state)
{
    (void)state;
    enum { BB = 200 };
    float *x = malloc(BB * IMG * sizeof *x);
    for (int i = 0; i < BB * IMG; i++)
        x[i] = 5.0f;
    engine_augment_config_t cfg;
    engine_augment_config_default(&cfg);
    cfg.erase_p = 1.0;
    engine_augment_box_t boxes[BB];
    rng_t r;
    rng_seed(&r, 11);
    err_t e = {0};
    assert_int_equal(engine_augment_random_erasing(x, BB, C, H, W, &cfg, &r, boxes, &e), 0);
    double lo = 0.02 * H * W, hi = 0.33 * H * W;
    int erased = 0, tall = 0, wide = 0;
    for (int i = 0; i < BB; i++) {
        engine_augment_box_t b = boxes[i];
        if (b.h == 0)
            continue;
        erased++;
        tall += b.h > b.w;
        wide += b.w > b.h;
        assert_true(b.h * b.w >= lo && b.h * b.w <= hi);
        assert_true(b.y >= 0 && b.x >= 0 && b.y + b.h <= H && b.x + b.w <= W);
        /* Exactly the box changed, in every channel. */
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++) {
                    int in = y >= b.y && y < b.y + b.h && xx >= b.x && xx < b.x + b.w;
                    assert_true(x[((i * C + c) * H + y) * W + xx] == (in ? 0.0f : 5.0f));
                }
    }
    assert_true(erased > BB * 9 / 10);
    assert_true(tall > BB / 5 && wide > BB / 5); /* log-uniform aspect: both shapes common */

    /* On a square image tall and wide boxes are equally likely (log-uniform aspect); a uniform
     * aspect in [0.3, 3.3] would make about 3 in 4 tall. */
    {
        enum { SB = 1000, S = 32 };
        float *sq = calloc(SB * S * S, sizeof *sq);
        engine_augment_box_t *sb = malloc(SB * sizeof *sb);
        assert_int_equal(engine_augment_random_erasing(sq, SB, 1, S, S, &cfg, &r, sb, &e), 0);
        int t2 = 0, w2 = 0;
        for (int i = 0; i < SB; i++)
            t2 += sb[i].h > sb[i].w, w2 += sb[i].w > sb[i].h;
        assert_true(t2 > 0.4 * (t2 + w2) && w2 > 0.4 * (t2 + w2));
        free(sq), free(sb);
    }

    /* p = 0 leaves the batch alone; value "random" fills from [0, 1). */
    for (int i = 0; i < BB * IMG; i++)
        x[i] = 5.0f;
    cfg.erase_p = 0.0;
    assert_int_equal(engine_augment_random_erasing(x, BB, C, H, W, &cfg, &r, boxes, &e), 0);
    for (int i = 0; i < BB * IMG; i++)
        assert_true(x[i] == 5.0f);
    cfg.erase_p = 1.0;
    cfg.erase_random = 1;
    assert_int_equal(engine_augment_random_erasing(x, BB, C, H, W, &cfg, &r, boxes, &e), 0);
    int changed = 0;
    for (int i = 0; i < BB * IMG; i++)
        if (x[i] != 5.0f) {
            assert_true(x[i] >= 0.0f && x[i] < 1.0f);
            changed++;
        }
    assert_true(changed > 0);
    cfg.erase_area[0] = 0.5, cfg.erase_area[1] = 0.4;
    assert_int_equal(engine_augment_random_erasing(x, BB, C, H, W, &cfg, &r, boxes, &e), FN_EINVAL);
    free(x);
}

static void test_beta(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 5);
    enum { N = 20000 };
    double s = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        double v = engine_augment_beta(&r, 2.0, 5.0);
        assert_true(v >= 0.0 && v <= 1.0);
        s += v, s2 += v * v;
    }
    double mean = s / N, var = s2 / N - mean * mean;
    /* Beta(2,5): mean 2/7, variance 10/392; the mean's standard error is about 0.0011. */
    assert_true(fabs(mean - 2.0 / 7.0) < 0.006);
    assert_true(fabs(var - 10.0 / 392.0) < 0.002);
    s = 0;
    for (int i = 0; i < N; i++)
        s += engine_augment_beta(&r, 0.2, 0.2);
    assert_true(fabs(s / N - 0.5) < 0.02);
}

/* Mixed soft labels are distributions. */
static void check_rows_sum_to_one(const float *soft, int K)
{
    for (int i = 0; i < B; i++) {
        double s = 0;
        for (int k = 0; k < K; k++) {
            assert_true(soft[i * K + k] >= 0.0f);
            s += soft[i * K + k];
        }
        assert_true(fabs(s - 1.0) < 1e-5);
    }
}

static void test_mixup(void **state)
{
    (void)state;
    float *x = constant_batch();
    uint8_t labels[B];
    for (int i = 0; i < B; i++)
        labels[i] = (uint8_t)i;
    float soft[B * B];
    err_t e = {0};
    assert_int_equal(engine_augment_one_hot(labels, B, B, soft, &e), 0);
    rng_t r;
    rng_seed(&r, 21);
    double lam;
    assert_int_equal(engine_augment_mixup(x, soft, B, C, H, W, B, 1.0, &r, &lam, &e), 0);
    assert_true(lam > 0.0 && lam < 1.0);
    check_rows_sum_to_one(soft, B);
    int mixed = 0;
    for (int i = 0; i < B; i++) {
        double want = 0;
        for (int k = 0; k < B; k++)
            want += soft[i * B + k] * (k + 1);
        mixed += soft[i * B + i] < 0.999f;
        for (int k = 0; k < IMG; k++)
            assert_true(fabs(x[i * IMG + k] - want) < 1e-4);
        /* Own label weight is lambda (or 1 when paired with itself). */
        assert_true(fabs(soft[i * B + i] - lam) < 1e-6 || soft[i * B + i] == 1.0f);
    }
    assert_true(mixed > 0);
    assert_int_equal(engine_augment_mixup(x, soft, B, C, H, W, B, 0.0, &r, &lam, &e), FN_EINVAL);
    free(x);
}

static void test_cutmix(void **state)
{
    (void)state;
    uint8_t labels[B];
    for (int i = 0; i < B; i++)
        labels[i] = (uint8_t)i;
    err_t e = {0};
    rng_t r;
    rng_seed(&r, 31);
    int boxed = 0;
    for (int rep = 0; rep < 20; rep++) {
        float *x = coded_batch();
        float soft[B * B];
        assert_int_equal(engine_augment_one_hot(labels, B, B, soft, &e), 0);
        engine_augment_box_t box;
        double lam;
        /* Replaying the stream gives the drawn lambda: the box, before clipping at the borders,
         * has sides sqrt(1 - lambda) of the image's (even-rounded, as the paper's code). */
        rng_t replay = r;
        double drawn = engine_augment_beta(&replay, 1.0, 1.0);
        int ch = (int)(H * sqrt(1.0 - drawn)) / 2 * 2, cw = (int)(W * sqrt(1.0 - drawn)) / 2 * 2;
        assert_int_equal(engine_augment_cutmix(x, soft, B, C, H, W, B, 1.0, &r, &box, &lam, &e), 0);
        assert_true(box.h <= ch && box.w <= cw);
        if (box.y > 0 && box.y + box.h < H)
            assert_int_equal(box.h, ch);
        if (box.x > 0 && box.x + box.w < W)
            assert_int_equal(box.w, cw);
        assert_true(fabs(lam - (1.0 - (double)box.h * box.w / (H * W))) < 1e-12);
        boxed += box.h * box.w > 0;
        check_rows_sum_to_one(soft, B);
        check_coded_shares(x, soft);
        free(x);
    }
    assert_true(boxed > 10);
}

static void test_mosaic(void **state)
{
    (void)state;
    uint8_t labels[B];
    for (int i = 0; i < B; i++)
        labels[i] = (uint8_t)i;
    err_t e = {0};
    rng_t r;
    rng_seed(&r, 41);
    float *x = coded_batch();
    float soft[B * B];
    assert_int_equal(engine_augment_one_hot(labels, B, B, soft, &e), 0);
    assert_int_equal(engine_augment_mosaic(x, soft, B, C, H, W, B, 1.0, &r, &e), 0);
    check_rows_sum_to_one(soft, B);
    check_coded_shares(x, soft);
    int mixed = 0;
    for (int i = 0; i < B; i++) {
        /* The top-left quadrant (at least a quarter of each side) keeps the image's own pixels. */
        assert_true(x[i * IMG] == (float)((i + 1) * 1000));
        assert_true(soft[i * B + i] >= (float)((H / 4) * (W / 4)) / (H * W) - 1e-6);
        mixed += soft[i * B + i] < 0.999f;
    }
    assert_true(mixed > 0);
    free(x);
}

static void test_apply_reproducible(void **state)
{
    (void)state;
    engine_augment_config_t cfg;
    err_t e = {0};
    int rc = engine_augment_config_parse("{\"random_crop\": {\"padding\": 4}, \"hflip\": true, "
                                         "\"random_erasing\": {\"p\": 0.5}, \"mosaic\": {\"p\": 0.3}, "
                                         "\"mixup\": {\"alpha\": 0.2}, \"cutmix\": {\"alpha\": 1.0}}",
                                         &cfg, &e);
    if (rc)
        fail_msg("%s", e.msg);
    assert_int_equal(cfg.crop_padding, 4);
    assert_true(cfg.hflip_p == 0.5 && cfg.erase_p == 0.5 && cfg.mosaic_p == 0.3);
    assert_true(cfg.mixup_alpha == 0.2 && cfg.cutmix_alpha == 1.0 && cfg.mixup_p == 1.0);
    uint8_t labels[B] = {0, 1, 2, 3, 0, 1, 2, 3};
    enum { K = 4 };
    float *a = random_batch(9), *b = random_batch(9), *c = random_batch(9), *orig = random_batch(9);
    float sa[B * K], sb[B * K], sc[B * K];
    rng_t r;
    rng_seed(&r, 1234);
    assert_int_equal(engine_augment_apply(&cfg, a, B, C, H, W, labels, K, &r, sa, &e), 0);
    rng_seed(&r, 1234);
    assert_int_equal(engine_augment_apply(&cfg, b, B, C, H, W, labels, K, &r, sb, &e), 0);
    rng_seed(&r, 1235);
    assert_int_equal(engine_augment_apply(&cfg, c, B, C, H, W, labels, K, &r, sc, &e), 0);
    assert_memory_equal(a, b, B * IMG * sizeof *a);
    assert_memory_equal(sa, sb, sizeof sa);
    assert_true(memcmp(a, c, B * IMG * sizeof *a) != 0);
    assert_true(memcmp(a, orig, B * IMG * sizeof *a) != 0);
    for (int i = 0; i < B; i++) {
        double s = 0;
        for (int k = 0; k < K; k++)
            s += sa[i * K + k];
        assert_true(fabs(s - 1.0) < 1e-5);
    }

    /* Nothing configured: the batch is untouched and the labels one-hot. */
    engine_augment_config_t none;
    assert_int_equal(engine_augment_config_parse("{}", &none, &e), 0);
    memcpy(a, orig, B * IMG * sizeof *a);
    assert_int_equal(engine_augment_apply(&none, a, B, C, H, W, labels, K, &r, sa, &e), 0);
    assert_memory_equal(a, orig, B * IMG * sizeof *a);
    for (int i = 0; i < B; i++)
        for (int k = 0; k < K; k++)
            assert_true(sa[i * K + k] == (k == labels[i] ? 1.0f : 0.0f));
    labels[3] = K;
    assert_int_equal(engine_augment_apply(&none, a, B, C, H, W, labels, K, &r, sa, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "label 4 of sample 3"));
    free(a), free(b), free(c), free(orig);
}

/* With both MixUp and CutMix configured each batch takes one: on constant images (image i holds
 * i + 1) MixUp leaves fractional pixels, CutMix only whole ones; both must show up. */
static void test_apply_switches_mixup_cutmix(void **state)
{
    (void)state;
    engine_augment_config_t cfg;
    err_t e = {0};
    assert_int_equal(engine_augment_config_parse("{\"mixup\": {\"alpha\": 1}, \"cutmix\": {\"alpha\": 1}}", &cfg, &e), 0);
    uint8_t labels[B];
    int seen_mixup = 0, seen_cutmix = 0;
    for (int i = 0; i < B; i++)
        labels[i] = (uint8_t)i;
    rng_t r;
    rng_seed(&r, 77);
    for (int rep = 0; rep < 40; rep++) {
        float *x = constant_batch();
        float soft[B * B];
        assert_int_equal(engine_augment_apply(&cfg, x, B, C, H, W, labels, B, &r, soft, &e), 0);
        int fractional = 0;
        for (int k = 0; k < B * IMG; k++)
            fractional |= x[k] != floorf(x[k]);
        seen_mixup += fractional;
        seen_cutmix += !fractional;
        free(x);
    }
    assert_true(seen_mixup >= 8 && seen_cutmix >= 8);
}

/* The batcher callback runs crop, flip and erasing, in that order, from the batcher's rng:
 * the same as calling the steps by hand on the same stream; the labels stay as they are. */
static void test_images_callback(void **state)
{
    (void)state;
    engine_augment_config_t cfg;
    err_t e = {0};
    assert_int_equal(engine_augment_config_parse("{\"random_crop\": {\"padding\": 2}, \"hflip\": true, "
                                                 "\"random_erasing\": {\"p\": 0.7}, \"mixup\": {\"alpha\": 1}}",
                                                 &cfg, &e),
                     0);
    float *a = random_batch(4), *b = random_batch(4), *orig = random_batch(4);
    uint8_t labels[B] = {1, 2, 3, 4, 5, 6, 7, 0};
    rng_t r1, r2;
    rng_seed(&r1, 8);
    r2 = r1;
    engine_augment_images(&cfg, a, labels, B, C, H, W, &r1);
    assert_int_equal(engine_augment_random_crop(b, B, C, H, W, 2, &r2, NULL, &e), 0);
    assert_int_equal(engine_augment_hflip(b, B, C, H, W, 0.5, &r2, NULL, &e), 0);
    assert_int_equal(engine_augment_random_erasing(b, B, C, H, W, &cfg, &r2, NULL, &e), 0);
    assert_memory_equal(a, b, B * IMG * sizeof *a);
    assert_true(memcmp(a, orig, B * IMG * sizeof *a) != 0);
    assert_int_equal(rng_next(&r1), rng_next(&r2)); /* MixUp is not the callback's business */
    free(a), free(b), free(orig);
}

static void expect_config_error(const char *json, const char *frag)
{
    engine_augment_config_t cfg;
    engine_augment_config_default(&cfg);
    cfg.crop_padding = 77;
    err_t e = {0};
    int rc = engine_augment_config_parse(json, &cfg, &e);
    if (rc != FN_EINVAL || !strstr(e.msg, frag))
        fail_msg("%s: expected FN_EINVAL mentioning \"%s\", got %d \"%s\"", json, frag, rc, e.msg);
    assert_int_equal(cfg.crop_padding, 77); /* untouched on error */
}

static void test_config_errors(void **state)
{
    (void)state;
    expect_config_error("{\"hflip\": true, \"rotate\": 15}", "unknown key \"rotate\"");
    expect_config_error("{\"random_crop\": {\"pad\": 4}}", "augment.random_crop: unknown key \"pad\"");
    expect_config_error("{\"random_crop\": {\"padding\": -1}}", "augment.random_crop.padding");
    expect_config_error("{\"random_crop\": 4}", "augment.random_crop");
    expect_config_error("{\"hflip\": {\"p\": 1.5}}", "augment.hflip.p");
    expect_config_error("{\"hflip\": \"yes\"}", "augment.hflip");
    expect_config_error("{\"random_erasing\": {\"area\": [0.5, 0.1]}}", "augment.random_erasing.area");
    expect_config_error("{\"random_erasing\": {\"aspect\": [0, 3]}}", "augment.random_erasing.aspect");
    expect_config_error("{\"random_erasing\": {\"value\": \"noise\"}}", "augment.random_erasing.value");
    expect_config_error("{\"mixup\": {\"alpha\": 0}}", "augment.mixup.alpha");
    expect_config_error("{\"mixup\": {}}", "augment.mixup.alpha");
    expect_config_error("{\"cutmix\": {\"alpha\": 1, \"beta\": 2}}", "augment.cutmix: unknown key \"beta\"");
    expect_config_error("{\"mosaic\": {\"p\": -0.1}}", "augment.mosaic.p");
    expect_config_error("[1, 2]", "expected an object");
    expect_config_error("{\"hflip\": true,", "invalid JSON");
    expect_config_error("{\"hflip\": true, \"hflip\": false}", "invalid JSON");

    engine_augment_config_t cfg;
    err_t e = {0};
    assert_int_equal(engine_augment_config_parse("{\"random_erasing\": {\"p\": 0.25, \"area\": [0.1, 0.2], "
                                                 "\"aspect\": [0.5, 2], \"value\": \"random\"}, \"hflip\": false, "
                                                 "\"mosaic\": true, \"random_crop\": {}}",
                                                 &cfg, &e),
                     0);
    assert_true(cfg.erase_p == 0.25 && cfg.erase_area[0] == 0.1 && cfg.erase_area[1] == 0.2);
    assert_true(cfg.erase_aspect[0] == 0.5 && cfg.erase_aspect[1] == 2.0 && cfg.erase_random == 1);
    assert_true(cfg.hflip_p == 0.0 && cfg.mosaic_p == 1.0 && cfg.crop_padding == 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hflip),      cmocka_unit_test(test_crop),
        cmocka_unit_test(test_erasing),    cmocka_unit_test(test_beta),
        cmocka_unit_test(test_mixup),      cmocka_unit_test(test_cutmix),
        cmocka_unit_test(test_mosaic),     cmocka_unit_test(test_apply_reproducible),
        cmocka_unit_test(test_apply_switches_mixup_cutmix),
        cmocka_unit_test(test_images_callback),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
