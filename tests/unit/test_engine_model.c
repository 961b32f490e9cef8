/* engine/model: gradients against a double-precision reference with central differences,
 * parameter layout, training to high accuracy on a separable problem, and argument errors. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "engine/model.h"
#include "engine/nn.h"

static engine_model_t *make_model(const char *arch_json, int in, int classes)
{
    json_error_t je;
    json_t *arch = json_loads(arch_json, 0, &je);
    assert_non_null(arch);
    engine_model_t *m = NULL;
    err_t e = {0};
    int rc = engine_model_create(arch, in, classes, &m, &e);
    json_decref(arch);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    return m;
}

static int create_err(const char *arch_json, int in, int classes, err_t *e)
{
    json_error_t je;
    json_t *arch = json_loads(arch_json, 0, &je);
    assert_non_null(arch);
    engine_model_t *m = (engine_model_t *)&je; /* must be reset to NULL on error */
    int rc = engine_model_create(arch, in, classes, &m, e);
    json_decref(arch);
    assert_null(m);
    return rc;
}

static engine_dataset_t random_dataset(int count, int rows, int cols, int classes, uint64_t seed)
{
    engine_dataset_t d = {0};
    rng_t r;
    rng_seed(&r, seed);
    d.count = count, d.rows = rows, d.cols = cols, d.num_classes = classes;
    d.images = malloc((size_t)count * rows * cols);
    d.labels = malloc((size_t)count);
    for (int i = 0; i < count * rows * cols; i++)
        d.images[i] = (uint8_t)rng_below(&r, 256);
    for (int i = 0; i < count; i++)
        d.labels[i] = (uint8_t)(i % classes); /* every class present */
    return d;
}

/* An independent double-precision forward pass over the documented layout (per layer W out x in
 * row-major, then b; ReLU between layers), as the oracle for loss and finite differences. */
static double ref_loss(const engine_model_t *m, const double *p, const engine_dataset_t *d)
{
    int L = engine_model_num_layers(m);
    double total = 0.0;
    double a[64], z[64];
    for (int s = 0; s < d->count; s++) {
        int width = engine_model_input_dim(m);
        for (int k = 0; k < width; k++)
            a[k] = d->images[(size_t)s * width + k] / 255.0;
        for (int l = 0; l < L; l++) {
            int in, out;
            size_t wo, bo;
            engine_model_layer(m, l, &in, &out, &wo, &bo);
            assert_true(out <= 64);
            for (int o = 0; o < out; o++) {
                double acc = p[bo + o];
                for (int k = 0; k < in; k++)
                    acc += p[wo + (size_t)o * in + k] * a[k];
                z[o] = l < L - 1 && acc < 0.0 ? 0.0 : acc;
            }
            memcpy(a, z, (size_t)out * sizeof *a);
            width = out;
        }
        double mx = a[0], sum = 0.0;
        for (int c = 1; c < width; c++)
            mx = a[c] > mx ? a[c] : mx;
        for (int c = 0; c < width; c++)
            sum += exp(a[c] - mx);
        total += log(sum) + mx - a[d->labels[s]];
    }
    return total / d->count;
}

/* Worst relative error of the engine's gradient against central differences of ref_loss. */
static double grad_check(const char *arch, int rows, int cols, int classes, int count, uint64_t seed)
{
    engine_model_t *m = make_model(arch, rows * cols, classes);
    engine_dataset_t d = random_dataset(count, rows, cols, classes, seed);
    engine_model_init(m, seed);
    size_t n = engine_model_num_params(m);
    float *params = engine_model_params(m);
    /* Non-zero biases, so their gradient paths are exercised away from the init point. */
    for (int l = 0; l < engine_model_num_layers(m); l++) {
        int out;
        size_t bo;
        engine_model_layer(m, l, NULL, &out, NULL, &bo);
        for (int o = 0; o < out; o++)
            params[bo + o] = 0.1f * (float)((o % 3) - 1);
    }
    float *g = malloc(n * sizeof *g);
    double loss;
    err_t e = {0};
    assert_int_equal(engine_model_loss_grad(m, &d, NULL, 0, &loss, g, &e), 0);
    double *p = calloc(n, sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = params[i];
    double ref = ref_loss(m, p, &d);
    assert_true(fabs(loss - ref) < 1e-5 * (1.0 + fabs(ref)));

    const double eps = 1e-6;
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double keep = p[i];
        p[i] = keep + eps;
        double lp = ref_loss(m, p, &d);
        p[i] = keep - eps;
        double lm = ref_loss(m, p, &d);
        p[i] = keep;
        double fd = (lp - lm) / (2 * eps);
        /* Floor the scale so float rounding on near-zero gradients does not count as error. */
        double rel = fabs(fd - g[i]) / fmax(fmax(fabs(fd), fabs(g[i])), 1e-3);
        worst = fmax(worst, rel);
    }
    /* The model's own gradient block and the parameters are untouched by a grad_out call. */
    for (size_t i = 0; i < n; i++)
        assert_true(params[i] == (float)p[i]);
    free(p);
    free(g);
    engine_dataset_free(&d);
    engine_model_free(m);
    return worst;
}

static void test_gradient_check(void **state)
{
    (void)state;
    double w1 = grad_check("{\"type\":\"mlp\",\"hidden\":[5]}", 2, 3, 3, 17, 1);
    double w2 = grad_check("{\"type\":\"mlp\",\"hidden\":[5,4]}", 2, 3, 3, 17, 2);
    double w3 = grad_check("{\"type\":\"softmax\"}", 2, 3, 4, 13, 3);
    /* 300 samples: more than one 256-row chunk, so chunked accumulation is checked too. */
    double w4 = grad_check("{\"type\":\"mlp\",\"hidden\":[7]}", 2, 3, 3, 300, 4);
    print_message("worst relative gradient error: 6-5-3 %.2e, 6-5-4-3 %.2e, 6-4 %.2e, 6-7-3 (n=300) %.2e\n", w1,
                  w2, w3, w4);
    assert_true(w1 < 1e-3);
    assert_true(w2 < 1e-3);
    assert_true(w3 < 1e-3);
    assert_true(w4 < 1e-3);
}

static void test_param_layout(void **state)
{
    (void)state;
    engine_model_t *m = make_model("{\"type\":\"mlp\",\"hidden\":[128]}", 784, 10);
    assert_int_equal(engine_model_num_params(m), 101770);
    assert_int_equal(engine_model_num_layers(m), 2);
    int in, out;
    size_t wo, bo;
    engine_model_layer(m, 1, &in, &out, &wo, &bo);
    assert_int_equal(in, 128);
    assert_int_equal(out, 10);
    assert_int_equal(wo, 784 * 128 + 128);
    assert_int_equal(bo, 784 * 128 + 128 + 1280);
    json_t *type = json_object_get(engine_model_arch(m), "type");
    assert_string_equal(json_string_value(type), "mlp");
    engine_model_free(m);

    m = make_model("{\"type\":\"softmax\"}", 784, 10);
    assert_int_equal(engine_model_num_params(m), 7850);
    engine_model_free(m);
    m = make_model("{\"type\":\"mlp\",\"hidden\":[200,100]}", 784, 10);
    assert_int_equal(engine_model_num_params(m), 784 * 200 + 200 + 200 * 100 + 100 + 100 * 10 + 10);
    engine_model_free(m);
}

static void test_init(void **state)
{
    (void)state;
    engine_model_t *a = make_model("{\"type\":\"mlp\",\"hidden\":[64]}", 100, 10);
    engine_model_t *b = make_model("{\"type\":\"mlp\",\"hidden\":[64]}", 100, 10);
    size_t n = engine_model_num_params(a);
    engine_model_init(a, 5);
    engine_model_init(b, 5);
    assert_memory_equal(engine_model_params(a), engine_model_params(b), n * sizeof(float));
    engine_model_init(b, 6);
    assert_memory_not_equal(engine_model_params(a), engine_model_params(b), n * sizeof(float));
    const float *p = engine_model_params(a);
    for (int l = 0; l < 2; l++) {
        int in, out;
        size_t wo, bo;
        engine_model_layer(a, l, &in, &out, &wo, &bo);
        double bound = sqrt(6.0 / in), sq = 0.0, sum = 0.0;
        for (size_t i = 0; i < (size_t)in * out; i++) {
            assert_true(fabs(p[wo + i]) <= bound);
            sq += (double)p[wo + i] * p[wo + i];
            sum += p[wo + i];
        }
        /* Symmetric around zero: the mean of in*out draws is within a few standard errors of 0. */
        assert_true(fabs(sum / ((double)in * out)) < 0.05 * bound);
        /* He-uniform: variance bound^2 / 3 = 2 / fan_in. */
        double var = sq / ((double)in * out);
        assert_true(fabs(var - 2.0 / in) < 0.2 * (2.0 / in));
        for (int o = 0; o < out; o++)
            assert_true(p[bo + o] == 0.0f);
    }
    engine_model_free(a);
    engine_model_free(b);
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
                int v = (int)rng_below(&r, 120) + (q == c ? 110 : 0);
                d.images[(size_t)i * 64 + y * 8 + x] = (uint8_t)v;
            }
    }
    return d;
}

/* The federated vector: parameters then batch-norm running statistics, contiguous; training
 * moves the statistics, so averaging the vector averages them too. */
static void test_federated_vector(void **state)
{
    (void)state;
    engine_model_t *m = make_model("{\"type\":\"mlp\",\"hidden\":[16]}", 64, 4);
    assert_int_equal(engine_model_num_federated(m), engine_model_num_params(m)); /* no BN: the same */
    engine_model_free(m);
    m = make_model("{\"type\":\"resnet\",\"widths\":[4,8],\"blocks\":1}", 64, 4);
    engine_net_t *net = engine_model_net(m);
    size_t P = engine_model_num_params(m), B = engine_net_num_buffers(net);
    assert_true(B > 0);
    assert_int_equal(engine_model_num_federated(m), P + B);
    assert_ptr_equal(engine_net_buffers(net), engine_model_params(m) + P);
    engine_model_init(m, 5);
    float *before = malloc(B * sizeof *before);
    memcpy(before, engine_net_buffers(net), B * sizeof *before);
    engine_dataset_t train = quadrants(64, 21);
    err_t e = {0};
    engine_train_stats_t st = {0};
    assert_int_equal(engine_model_train_epoch(m, &train, NULL, 0, 16, 0.05f, 1, &st, &e), 0);
    int moved = 0;
    for (size_t i = 0; i < B; i++)
        moved += engine_net_buffers(net)[i] != before[i];
    assert_true(moved > (int)B / 2); /* the running statistics live in the vector, and train */
    free(before);
    engine_dataset_free(&train);
    engine_model_free(m);
}

static void test_train_separable(void **state)
{
    (void)state;
    engine_dataset_t train = quadrants(800, 11), test = quadrants(400, 12);
    const char *archs[] = {"{\"type\":\"mlp\",\"hidden\":[16]}", "{\"type\":\"softmax\"}"};
    for (int a = 0; a < 2; a++) {
        engine_model_t *m = make_model(archs[a], 64, 4);
        engine_model_init(m, 3);
        err_t e = {0};
        double loss0, acc0;
        assert_int_equal(engine_model_evaluate(m, &test, NULL, 0, &loss0, &acc0, &e), 0);
        engine_train_stats_t st = {0}, first = {0};
        for (int epoch = 0; epoch < 10; epoch++) {
            int rc = engine_model_train_epoch(m, &train, NULL, 0, 16, 0.1f, (uint64_t)epoch, &st, &e);
            if (rc)
                print_error("%s\n", e.msg);
            assert_int_equal(rc, 0);
            if (epoch == 0)
                first = st;
        }
        assert_int_equal(st.samples, 800);
        assert_true(st.loss < first.loss);
        double loss, acc;
        assert_int_equal(engine_model_evaluate(m, &test, NULL, 0, &loss, &acc, &e), 0);
        print_message("%s: test accuracy %.3f -> %.3f, loss %.3f -> %.3f\n", archs[a], acc0, acc, loss0, loss);
        assert_true(acc > 0.95);
        assert_true(loss < loss0);
        engine_model_free(m);
    }
    engine_dataset_free(&train);
    engine_dataset_free(&test);
}

static void test_subset_and_reproducible(void **state)
{
    (void)state;
    engine_dataset_t d = quadrants(300, 21);
    engine_model_t *a = make_model("{\"type\":\"mlp\",\"hidden\":[8]}", 64, 4);
    engine_model_t *b = make_model("{\"type\":\"mlp\",\"hidden\":[8]}", 64, 4);
    size_t n = engine_model_num_params(a);
    engine_model_init(a, 1);
    engine_model_init(b, 1);
    int idx[100];
    for (int i = 0; i < 100; i++)
        idx[i] = 2 * i + 1;
    err_t e = {0};
    engine_train_stats_t sa, sb;
    assert_int_equal(engine_model_train_epoch(a, &d, idx, 100, 7, 0.05f, 9, &sa, &e), 0);
    assert_int_equal(engine_model_train_epoch(b, &d, idx, 100, 7, 0.05f, 9, &sb, &e), 0);
    assert_int_equal(sa.samples, 100);
    assert_memory_equal(engine_model_params(a), engine_model_params(b), n * sizeof(float));
    assert_true(sa.loss == sb.loss);
    /* A different shuffle seed gives a different trajectory. */
    engine_model_init(b, 1);
    assert_int_equal(engine_model_train_epoch(b, &d, idx, 100, 7, 0.05f, 10, &sb, &e), 0);
    assert_memory_not_equal(engine_model_params(a), engine_model_params(b), n * sizeof(float));
    /* Evaluation over an index list equals evaluation over the same samples as a whole set. */
    int all[300];
    for (int i = 0; i < 300; i++)
        all[i] = i;
    double l1, a1, l2, a2;
    assert_int_equal(engine_model_evaluate(a, &d, all, 300, &l1, &a1, &e), 0);
    assert_int_equal(engine_model_evaluate(a, &d, NULL, 0, &l2, &a2, &e), 0);
    assert_true(fabs(l1 - l2) < 1e-12 && a1 == a2);
    double lg;
    assert_int_equal(engine_model_loss_grad(a, &d, NULL, 0, &lg, NULL, &e), 0);
    assert_true(fabs(lg - l2) < 1e-9);
    engine_model_free(a);
    engine_model_free(b);
    engine_dataset_free(&d);
}

static void test_bad_data(void **state)
{
    (void)state;
    engine_dataset_t d = quadrants(50, 31);
    err_t e = {0};
    engine_train_stats_t st;
    engine_model_t *m = make_model("{\"type\":\"mlp\",\"hidden\":[8]}", 6, 4);
    engine_model_init(m, 1);
    size_t n = engine_model_num_params(m);
    float *before = malloc(n * sizeof *before);
    memcpy(before, engine_model_params(m), n * sizeof *before);
    /* The model takes 6 inputs, the data set has 8x8 images. */
    assert_int_equal(engine_model_train_epoch(m, &d, NULL, 0, 8, 0.1f, 1, &st, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "6 inputs"));
    assert_non_null(strstr(e.msg, "8x8"));
    assert_int_equal(engine_model_evaluate(m, &d, NULL, 0, NULL, NULL, &e), FN_EINVAL);
    assert_memory_equal(before, engine_model_params(m), n * sizeof *before);
    engine_model_free(m);
    free(before);

    m = make_model("{\"type\":\"softmax\"}", 64, 3); /* labels go up to 3 */
    assert_int_equal(engine_model_train_epoch(m, &d, NULL, 0, 8, 0.1f, 1, &st, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "label 3"));
    engine_model_free(m);

    m = make_model("{\"type\":\"softmax\"}", 64, 4);
    int idx[3] = {0, 50, 1};
    assert_int_equal(engine_model_train_epoch(m, &d, idx, 3, 8, 0.1f, 1, &st, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "idx[1]"));
    assert_int_equal(engine_model_train_epoch(m, &d, idx, 1, 0, 0.1f, 1, &st, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "batch_size"));
    assert_int_equal(engine_model_train_epoch(m, &d, idx, 1, 8, -1.0f, 1, &st, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "lr"));
    assert_int_equal(engine_model_train_epoch(m, &d, idx, 0, 8, 0.1f, 1, &st, &e), FN_EINVAL);
    /* A batch larger than the sample list is one short batch. */
    assert_int_equal(engine_model_train_epoch(m, &d, idx, 1, 1000, 0.1f, 1, &st, &e), 0);
    assert_int_equal(st.samples, 1);
    engine_model_free(m);
    engine_dataset_free(&d);
}

static void test_bad_arch(void **state)
{
    (void)state;
    err_t e = {0};
    assert_int_equal(create_err("{\"type\":\"transformer\"}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "type"));
    assert_non_null(strstr(e.msg, "\"transformer\""));
    assert_int_equal(create_err("{\"type\":\"mlp\",\"hidden\":[0]}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "hidden[0]"));
    assert_int_equal(create_err("{\"type\":\"mlp\",\"hidden\":[64,-2]}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "hidden[1]"));
    assert_int_equal(create_err("{\"type\":\"mlp\",\"hidden\":[\"128\"]}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "hidden[0]"));
    assert_int_equal(create_err("{\"type\":\"mlp\",\"hidden\":[]}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "hidden"));
    assert_int_equal(create_err("{\"type\":\"mlp\",\"hidden\":[128],\"dropout\":0.5}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "\"dropout\""));
    assert_int_equal(create_err("{\"type\":\"softmax\",\"hidden\":[128]}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "\"hidden\""));
    assert_int_equal(create_err("{\"type\":\"mlp\"}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "hidden"));
    assert_int_equal(create_err("{\"hidden\":[3]}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "type"));
    assert_int_equal(create_err("[1,2]", 784, 10, &e), FN_EINVAL);
    assert_int_equal(create_err("{\"type\":\"softmax\"}", 0, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "input_dim"));
    assert_int_equal(create_err("{\"type\":\"softmax\"}", 784, -1, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "num_classes"));
    /* Too large for one parameter vector: an error, not an abort. */
    assert_int_equal(create_err("{\"type\":\"mlp\",\"hidden\":[1048576,1048576,1048576]}", 784, 10, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "parameters"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradient_check),
        cmocka_unit_test(test_param_layout),
        cmocka_unit_test(test_federated_vector),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_train_separable),
        cmocka_unit_test(test_subset_and_reproducible),
        cmocka_unit_test(test_bad_data),
        cmocka_unit_test(test_bad_arch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
