/* Quantized model files (engine/infer_int8_file.c): a quantized plan saved with
 * engine_infer_save_int8 and read back with engine_infer_load_int8 gives the same int8 logits
 * bit for bit (convs with and without bias, fused ReLU and pool, a partial batch of 17); files
 * that are not int8 models, or whose tensors do not fit their architecture, are refused with a
 * message naming the file and the tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rng.h"
#include "engine/infer.h"
#include "engine/nn.h"
#include "engine/safetensors.h"

enum { CLS = 10, B = 17, C = 1, H = 28, W = 28 };

static const char *k_arch =
    "{\"type\":\"layers\",\"layers\":[{\"type\":\"conv2d\",\"out\":20,\"kernel\":5,\"padding\":2},"
    "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"maxpool\",\"kernel\":2},"
    "{\"type\":\"conv2d\",\"out\":24,\"kernel\":3,\"padding\":1,\"bias\":false},{\"type\":\"relu\"},"
    "{\"type\":\"maxpool\",\"kernel\":2},{\"type\":\"flatten\"},{\"type\":\"linear\",\"out\":40},{\"type\":\"relu\"},"
    "{\"type\":\"linear\"}]}";

static char g_dir[64];
static float g_x[B * C * H * W];

/* A quantized plan of k_arch with random weights, calibrated on g_x. */
static engine_infer_t *quantized_plan(void)
{
    json_error_t je;
    json_t *arch = json_loads(k_arch, 0, &je);
    assert_non_null(arch);
    engine_net_t *net = NULL;
    err_t err = {0};
    assert_int_equal(engine_net_create(arch, C, H, W, CLS, &net, &err), 0);
    engine_net_init(net, 5);
    rng_t r;
    rng_seed(&r, 9);
    size_t np = engine_net_num_params(net), nb = engine_net_num_buffers(net);
    float *buf = engine_net_buffers(net);
    for (size_t i = 0; i < nb; i++) /* running means, then variances (> 0) */
        buf[i] = (float)(0.5 + rng_uniform(&r));
    for (size_t i = 0; i < sizeof g_x / sizeof *g_x; i++)
        g_x[i] = (float)rng_uniform(&r);
    engine_infer_t *p = NULL;
    assert_int_equal(engine_infer_create(arch, engine_net_params(net), np + nb, C, H, W, CLS, &p, &err), 0);
    assert_int_equal(engine_infer_fold(p, &err), 0);
    assert_int_equal(engine_infer_quantize(p, g_x, B, ENGINE_CALIB_MINMAX, 99.99, &err), 0);
    engine_net_free(net);
    json_decref(arch);
    return p;
}

static void test_round_trip(void **state)
{
    (void)state;
    engine_infer_t *p = quantized_plan(), *q = NULL;
    err_t err = {0};
    char path[96];
    snprintf(path, sizeof path, "%s/model.int8.safetensors", g_dir);
    assert_int_equal(engine_infer_save_int8(p, path, &err), 0);
    if (engine_infer_load_int8(path, &q, &err) != 0)
        fail_msg("%s", err.msg);
    float a[B * CLS], b[B * CLS];
    static const int sizes[] = {1, 4, B};
    for (int s = 0; s < 3; s++) {
        assert_int_equal(engine_infer_forward(p, g_x, sizes[s], a, 1, &err), 0);
        memset(b, 0xff, sizeof b);
        assert_int_equal(engine_infer_forward(q, g_x, sizes[s], b, 1, &err), 0);
        assert_memory_equal(a, b, (size_t)sizes[s] * CLS * sizeof *a);
    }
    /* and saved again, the same file */
    char path2[96];
    snprintf(path2, sizeof path2, "%s/again.int8.safetensors", g_dir);
    assert_int_equal(engine_infer_save_int8(q, path2, &err), 0);
    FILE *f1 = fopen(path, "rb"), *f2 = fopen(path2, "rb");
    assert_non_null(f1), assert_non_null(f2);
    int c1, c2;
    do {
        c1 = fgetc(f1), c2 = fgetc(f2);
        assert_int_equal(c1, c2);
    } while (c1 != EOF);
    fclose(f1), fclose(f2);
    engine_infer_free(p);
    engine_infer_free(q);
}

/* Rewrites the saved model with tensor `name` replaced by (dtype, n elements of data) or, with
 * data NULL, dropped; a name the file lacks is added. Then loading must fail with FN_EINVAL and
 * say `want`. */
static void expect_refused(const char *name, engine_st_dtype_t dtype, uint64_t n, const void *data, const char *want)
{
    char path[96], bad[96];
    snprintf(path, sizeof path, "%s/model.int8.safetensors", g_dir);
    snprintf(bad, sizeof bad, "%s/bad.safetensors", g_dir);
    err_t err = {0};
    engine_safetensors_t *st = NULL;
    assert_int_equal(engine_safetensors_open(path, &st, &err), 0);
    int n_t = engine_safetensors_count(st), k = 0, found = 0;
    engine_st_tensor_t *t = calloc((size_t)n_t + 1, sizeof *t);
    for (int i = 0; i < n_t; i++) {
        engine_st_tensor_t x = *engine_safetensors_at(st, i);
        if (strcmp(x.name, name) == 0) {
            found = 1;
            if (!data)
                continue;
            x.dtype = dtype, x.ndim = 1, x.shape[0] = n, x.data = data;
        }
        t[k++] = x;
    }
    if (!found) /* a tensor the file did not have */
        t[k++] = (engine_st_tensor_t){.name = name, .dtype = dtype, .ndim = 1, .shape = {n}, .data = data};
    engine_st_kv_t meta[3];
    for (int i = 0; i < engine_safetensors_meta_count(st) && i < 3; i++)
        meta[i] = engine_safetensors_meta_at(st, i);
    if (engine_safetensors_save(bad, t, k, meta, engine_safetensors_meta_count(st), &err) != 0)
        fail_msg("%s", err.msg);
    free(t);
    engine_safetensors_close(st);
    engine_infer_t *q = NULL;
    if (engine_infer_load_int8(bad, &q, &err) != FN_EINVAL)
        fail_msg("%s replaced: loaded (%s)", name, err.msg);
    assert_null(q);
    if (!strstr(err.msg, want) || !strstr(err.msg, "bad.safetensors"))
        fail_msg("expected \"%s\" naming the file, got: %s", want, err.msg);
}

static void test_bad_files_refused(void **state)
{
    (void)state;
    engine_infer_t *p = quantized_plan();
    err_t err = {0};
    char path[96];
    snprintf(path, sizeof path, "%s/model.int8.safetensors", g_dir);
    assert_int_equal(engine_infer_save_int8(p, path, &err), 0);
    engine_infer_free(p);
    float f[40] = {0}, neg[24];
    for (int i = 0; i < 24; i++)
        neg[i] = i == 7 ? -1.0f : 0.5f;
    int32_t zp = 300;
    expect_refused("layers.0.weight_scale", ENGINE_ST_F32, 19, f, "tensor layers.0.weight_scale should be F32 [20]");
    expect_refused("layers.1.weight_scale", ENGINE_ST_F32, 24, neg, "expected a finite positive number");
    expect_refused("layers.3.input_scale", ENGINE_ST_F32, 0, NULL, "tensor layers.3.input_scale is missing");
    expect_refused("layers.0.input_zero_point", ENGINE_ST_I32, 1, &zp, "input_zero_point is 300, expected 0..255");
    expect_refused("layers.1.bias", ENGINE_ST_F32, 24, f, "parameters, the file's weights and biases"); /* layer 1 has none */
    expect_refused("extra", ENGINE_ST_F32, 3, f, "the file and its architecture do not match");
    /* an fp32 model file is not an int8 one */
    char fp[96];
    snprintf(fp, sizeof fp, "%s/fp32.safetensors", g_dir);
    assert_int_equal(engine_safetensors_save_vector(fp, "params", f, 40, NULL, 0, &err), 0);
    engine_infer_t *q = NULL;
    assert_int_equal(engine_infer_load_int8(fp, &q, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "not an int8 model"));
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/fednas-int8file-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_bad_files_refused),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
