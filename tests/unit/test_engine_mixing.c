/* Label mixing end to end: the batcher's soft labels line up with the mixed images (MixUp's one
 * lambda per batch, CutMix's and mosaic's pixel areas), with and without the prefetch thread;
 * hard-label batches carry no soft labels; a failing mix step stops the batcher with its
 * error; the train block's "augment" object (paths in errors); and a small model trained with
 * MixUp and with CutMix learns (loss falls, hard-label test accuracy far above chance) while its
 * training loss stays above the hard-label one, as it must against mixed targets. */
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
#include "engine/augment.h"
#include "engine/data.h"
#include "engine/model.h"

/* n samples of constant 8x8 images: sample i has pixel value i and label i % K, so a pixel
 * names the sample it came from and, with batches of consecutive samples (no shuffling) no
 * larger than K, every label in a batch is distinct. */
enum { N = 40, K = 16, BS = 8, HW = 8 };

static engine_dataset_t id_images(void)
{
    engine_dataset_t d = {0};
    d.count = N, d.rows = HW, d.cols = HW, d.num_classes = K;
    d.images = malloc((size_t)N * HW * HW);
    d.labels = malloc(N);
    for (int i = 0; i < N; i++) {
        memset(d.images + (size_t)i * HW * HW, i, HW * HW);
        d.labels[i] = (uint8_t)(i % K);
    }
    return d;
}

static void check_rows_sum_to_one(const engine_batch_t *b)
{
    for (int i = 0; i < b->n; i++) {
        double s = 0;
        for (int k = 0; k < K; k++) {
            assert_true(b->soft[i * K + k] >= 0.0f);
            s += b->soft[i * K + k];
        }
        assert_true(fabs(s - 1.0) < 1e-5);
    }
}

/* MixUp: x_i = lam x_i + (1 - lam) x_j, soft_i = lam onehot(y_i) + (1 - lam) onehot(y_j), one lam
 * per batch. The soft label names j; the pixel must then be that mix of the two samples. */
static void mixup_batches(int prefetch, float *first_soft)
{
    engine_dataset_t d = id_images();
    engine_source_t s = engine_source_from_dataset(&d);
    engine_augment_config_t aug;
    err_t e = {0};
    assert_int_equal(engine_augment_config_parse("{\"mixup\": {\"alpha\": 1.0}}", &aug, &e), 0);
    engine_batcher_config_t bc = {.batch_size = BS, .seed = 7, .prefetch = prefetch, .mix = engine_augment_mix,
                                  .mix_ctx = &aug, .num_classes = K};
    engine_batcher_t *bt = NULL;
    assert_int_equal(engine_batcher_create(&s, NULL, 0, &bc, &bt, &e), 0);
    const engine_batch_t *b;
    int k = 0, mixed_rows = 0;
    double lams[N / BS];
    while ((b = engine_batcher_next(bt))) {
        assert_non_null(b->soft);
        check_rows_sum_to_one(b);
        if (k == 0)
            memcpy(first_soft, b->soft, (size_t)b->n * K * sizeof(float));
        double lam = -1;
        for (int i = 0; i < b->n; i++) {
            int id = k * BS + i;
            assert_int_equal(b->y[i], id % K); /* the hard labels are the loaded ones */
            const float *row = b->soft + (size_t)i * K;
            int other = -1;
            for (int c = 0; c < K; c++)
                if (c != b->y[i] && row[c] > 0.0f) {
                    assert_int_equal(other, -1); /* at most two labels per row */
                    other = c;
                }
            double px = b->x[(size_t)i * HW * HW] * 255.0;
            if (other < 0) { /* mixed with itself: the image is unchanged */
                assert_float_equal(row[b->y[i]], 1.0f, 1e-6);
                assert_float_equal(px, id, 1e-3);
                continue;
            }
            mixed_rows++;
            if (lam < 0)
                lam = row[b->y[i]];
            assert_float_equal(row[b->y[i]], lam, 1e-6); /* one lambda for the whole batch */
            int jd = k * BS + (other - (k * BS) % K + K) % K; /* the batch member with label `other` */
            assert_true(jd >= k * BS && jd < k * BS + b->n);
            for (int p = 0; p < HW * HW; p++)
                assert_float_equal(b->x[(size_t)i * HW * HW + p] * 255.0, lam * id + (1 - lam) * jd, 2e-3);
        }
        lams[k] = lam;
        k++;
    }
    assert_int_equal(engine_batcher_error(bt, &e), 0);
    assert_int_equal(k, N / BS);
    assert_true(mixed_rows > N / 2);
    /* lambda ~ Beta(1, 1) is drawn per batch: not all equal */
    int differ = 0;
    for (int i = 1; i < k; i++)
        differ |= fabs(lams[i] - lams[0]) > 1e-3;
    assert_true(differ);
    engine_batcher_free(bt);
    engine_dataset_free(&d);
}

static void test_batcher_mixup(void **state)
{
    (void)state;
    float a[BS * K], b[BS * K];
    mixup_batches(0, a);
    mixup_batches(3, b);
    /* the prefetch thread draws the same numbers as the caller's thread */
    assert_memory_equal(a, b, sizeof a);
}

/* CutMix and mosaic paste whole pixels: each label's share of the soft row is exactly the
 * fraction of pixels that came from the sample with that label. */
static void check_area_labels(const char *json)
{
    engine_dataset_t d = id_images();
    engine_source_t s = engine_source_from_dataset(&d);
    engine_augment_config_t aug;
    err_t e = {0};
    assert_int_equal(engine_augment_config_parse(json, &aug, &e), 0);
    engine_batcher_config_t bc = {.batch_size = BS, .seed = 3, .prefetch = 2, .mix = engine_augment_mix,
                                  .mix_ctx = &aug, .num_classes = K};
    engine_batcher_t *bt = NULL;
    assert_int_equal(engine_batcher_create(&s, NULL, 0, &bc, &bt, &e), 0);
    const engine_batch_t *b;
    int k = 0, mixed_rows = 0;
    while ((b = engine_batcher_next(bt))) {
        check_rows_sum_to_one(b);
        for (int i = 0; i < b->n; i++) {
            int count[K] = {0};
            for (int p = 0; p < HW * HW; p++) {
                int id = (int)lround(b->x[(size_t)i * HW * HW + p] * 255.0);
                assert_true(id >= k * BS && id < k * BS + b->n); /* pixels come from this batch only */
                count[id % K]++;
            }
            mixed_rows += count[b->y[i]] < HW * HW;
            for (int c = 0; c < K; c++)
                assert_float_equal(b->soft[(size_t)i * K + c], count[c] / (double)(HW * HW), 1e-6);
        }
        k++;
    }
    assert_int_equal(k, N / BS);
    assert_true(mixed_rows > 0);
    engine_batcher_free(bt);
    engine_dataset_free(&d);
}

static void test_batcher_cutmix_mosaic(void **state)
{
    (void)state;
    check_area_labels("{\"cutmix\": {\"alpha\": 1.0}}");
    check_area_labels("{\"mosaic\": true}");
}

static void test_batcher_hard_labels_and_errors(void **state)
{
    (void)state;
    engine_dataset_t d = id_images();
    engine_source_t s = engine_source_from_dataset(&d);
    err_t e = {0};
    /* no mix step: nothing extra */
    engine_batcher_config_t bc = {.batch_size = BS, .prefetch = 2};
    engine_batcher_t *bt = NULL;
    assert_int_equal(engine_batcher_create(&s, NULL, 0, &bc, &bt, &e), 0);
    const engine_batch_t *b = engine_batcher_next(bt);
    assert_non_null(b);
    assert_null(b->soft);
    engine_batcher_free(bt);
    /* a class count too small for the labels: the mix step fails on the first batch, and the
     * batcher reports it instead of handing out a batch */
    engine_augment_config_t aug;
    assert_int_equal(engine_augment_config_parse("{\"mixup\": {\"alpha\": 0.2}}", &aug, &e), 0);
    for (int pf = 0; pf < 2; pf++) {
        engine_batcher_config_t bm = {.batch_size = BS, .prefetch = pf ? 2 : 0, .mix = engine_augment_mix,
                                      .mix_ctx = &aug, .num_classes = 4};
        assert_int_equal(engine_batcher_create(&s, NULL, 0, &bm, &bt, &e), 0);
        assert_null(engine_batcher_next(bt)); /* labels 0..7 in the first batch, only 4 classes */
        assert_null(engine_batcher_next(bt));
        memset(&e, 0, sizeof e);
        assert_int_equal(engine_batcher_error(bt, &e), FN_EINVAL);
        assert_non_null(strstr(e.msg, "label 4 of sample 4 is not in [0, 4)"));
        engine_batcher_free(bt);
    }
    engine_dataset_free(&d);
}

static int train_json(const char *json, engine_train_config_t *c, err_t *e)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    assert_non_null(j);
    int rc = engine_train_config_from_json(j, c, e);
    json_decref(j);
    return rc;
}

static void expect_json_error(const char *json, const char *needle)
{
    engine_train_config_t c;
    err_t e = {0};
    assert_int_equal(train_json(json, &c, &e), FN_EINVAL);
    if (!strstr(e.msg, needle))
        fail_msg("%s: expected \"%s\" in \"%s\"", json, needle, e.msg);
}

static void test_train_config_augment(void **state)
{
    (void)state;
    engine_train_config_t c;
    err_t e = {0};
    assert_int_equal(train_json("{\"epochs\":1}", &c, &e), 0);
    assert_false(engine_augment_mixes_labels(&c.aug));
    assert_false(engine_augment_changes_images(&c.aug));
    assert_int_equal(train_json("{\"label_smoothing\":0.1,\"augment\":{\"mixup\":{\"alpha\":0.2},"
                                "\"cutmix\":{\"alpha\":1.0,\"p\":0.5},\"hflip\":true,\"random_crop\":{\"padding\":2}}}",
                                &c, &e),
                     0);
    assert_float_equal(c.aug.mixup_alpha, 0.2, 1e-12);
    assert_float_equal(c.aug.cutmix_alpha, 1.0, 1e-12);
    assert_float_equal(c.aug.cutmix_p, 0.5, 1e-12);
    assert_float_equal(c.aug.hflip_p, 0.5, 1e-12);
    assert_int_equal(c.aug.crop_padding, 2);
    assert_true(engine_augment_mixes_labels(&c.aug));
    assert_true(engine_augment_changes_images(&c.aug));
    expect_json_error("{\"augment\":3}", "train.augment: expected an object");
    expect_json_error("{\"augment\":{\"mixupp\":{\"alpha\":1}}}", "train.augment: unknown key \"mixupp\"");
    expect_json_error("{\"augment\":{\"mixup\":{\"alpha\":-1}}}", "train.augment.mixup.alpha: expected a number > 0");
    expect_json_error("{\"augment\":{\"cutmix\":{\"alpha\":1,\"p\":2}}}", "train.augment.cutmix.p");
    expect_json_error("{\"augment\":{\"mixup\":{\"alpha\":1,\"beta\":2}}}", "train.augment.mixup: unknown key \"beta\"");
}

/* Four classes of 8x8 images: class c lights quadrant c, on a noisy background. */
static engine_dataset_t quadrants(int count, uint64_t seed)
{
    engine_dataset_t d = {0};
    rng_t r;
    rng_seed(&r, seed);
    d.count = count, d.rows = 8, d.cols = 8, d.num_classes = 4;
    d.images = malloc((size_t)count * 64);
    d.labels = malloc((size_t)count);
    for (int i = 0; i < count; i++) {
        int c = (int)rng_below(&r, 4);
        d.labels[i] = (uint8_t)c;
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++) {
                int q = (y >= 4) * 2 + (x >= 4);
                d.images[(size_t)i * 64 + y * 8 + x] = (uint8_t)((int)rng_below(&r, 120) + (q == c ? 110 : 0));
            }
    }
    return d;
}

typedef struct {
    double loss[32], acc[32];
} history_t;

static void on_epoch(void *ctx, int epoch, const engine_train_stats_t *s)
{
    history_t *h = ctx;
    h->loss[epoch] = s->loss;
    h->acc[epoch] = s->accuracy;
}

/* Trains an MLP for 8 epochs with the given augment block; returns the final training loss. */
static double train_with(const char *augment, const engine_dataset_t *train, const engine_dataset_t *test)
{
    char json[512];
    snprintf(json, sizeof json,
             "{\"epochs\":8,\"batch_size\":16,\"lr\":0.1,\"optimizer\":{\"type\":\"sgd\",\"momentum\":0.9},"
             "\"label_smoothing\":0.05,\"seed\":5%s%s}",
             augment ? ",\"augment\":" : "", augment ? augment : "");
    engine_train_config_t c;
    err_t e = {0};
    if (train_json(json, &c, &e))
        fail_msg("%s", e.msg);
    history_t h = {0};
    c.on_epoch = on_epoch;
    c.cb_ctx = &h;
    json_t *arch = json_loads("{\"type\":\"mlp\",\"hidden\":[16]}", 0, NULL);
    engine_model_t *m = NULL;
    assert_int_equal(engine_model_create(arch, 64, 4, &m, &e), 0);
    json_decref(arch);
    engine_model_init(m, 3);
    double loss0, acc0, loss, acc;
    assert_int_equal(engine_model_evaluate(m, test, NULL, 0, &loss0, &acc0, &e), 0);
    engine_train_stats_t st;
    if (engine_model_train(m, train, NULL, 0, &c, &st, &e))
        fail_msg("train with %s: %s", augment ? augment : "no augment", e.msg);
    assert_int_equal(engine_model_evaluate(m, test, NULL, 0, &loss, &acc, &e), 0);
    print_message("%-42s train loss %.3f -> %.3f, train acc %.3f; test acc %.3f -> %.3f, test loss %.3f\n",
                  augment ? augment : "(hard labels)", h.loss[0], h.loss[7], h.acc[7], acc0, acc, loss);
    assert_int_equal(st.samples, 8 * train->count);
    assert_true(h.loss[7] < h.loss[0]); /* it learns ... */
    assert_true(acc > 0.9);             /* ... far above chance (0.25) on the true labels */
    assert_true(loss < loss0);
    assert_true(h.acc[7] > 0.5 && h.acc[7] <= 1.0);
    engine_model_free(m);
    return h.loss[7];
}

static void test_train_learns(void **state)
{
    (void)state;
    engine_dataset_t train = quadrants(800, 11), test = quadrants(400, 12);
    double hard = train_with(NULL, &train, &test);
    double mixup = train_with("{\"mixup\":{\"alpha\":0.4}}", &train, &test);
    double cutmix = train_with("{\"cutmix\":{\"alpha\":1.0},\"random_crop\":{\"padding\":1}}", &train, &test);
    /* Against mixed targets the loss cannot reach the hard-label loss: the targets' own entropy
     * is a floor. So the mixed runs really trained on soft labels. */
    assert_true(mixup > hard + 0.1);
    assert_true(cutmix > hard + 0.1);
    /* too many classes for uint8-based soft labels */
    engine_train_config_t c;
    err_t e = {0};
    assert_int_equal(train_json("{\"augment\":{\"mixup\":{\"alpha\":0.2}}}", &c, &e), 0);
    json_t *arch = json_loads("{\"type\":\"softmax\"}", 0, NULL);
    engine_model_t *m = NULL;
    assert_int_equal(engine_model_create(arch, 64, 300, &m, &e), 0);
    json_decref(arch);
    assert_int_equal(engine_model_train(m, &train, NULL, 0, &c, NULL, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "train.augment"));
    engine_model_free(m);
    engine_dataset_free(&train);
    engine_dataset_free(&test);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batcher_mixup),
        cmocka_unit_test(test_batcher_cutmix_mosaic),
        cmocka_unit_test(test_batcher_hard_labels_and_errors),
        cmocka_unit_test(test_train_config_augment),
        cmocka_unit_test(test_train_learns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
