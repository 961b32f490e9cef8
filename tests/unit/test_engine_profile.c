/* engine/profile.h: the trace it writes must load as a Chrome trace (checked with jansson:
 * fields, units, nesting of ops in forward/backward spans in steps), count the model's ops and
 * add up to the network's own FLOPs count. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/model.h"
#include "engine/nn.h"
#include "engine/profile.h"

enum { B = 8, STEPS = 2 };

static void run_steps(engine_model_t *m, engine_profiler_t *p, engine_graph_t *g)
{
    static float x[B * 784];
    static uint8_t y[B];
    for (int i = 0; i < B * 784; i++)
        x[i] = (float)((i * 37) % 101) / 101.0f;
    for (int i = 0; i < B; i++)
        y[i] = (uint8_t)i;
    for (int k = 0; k < STEPS; k++) {
        engine_profiler_begin(p, "step");
        engine_profiler_begin(p, "forward");
        int64_t xs[4] = {B, 1, 28, 28}, ys[1] = {B};
        engine_tensor_t *xt = engine_graph_view(g, x, NULL, ENGINE_F32, 4, xs);
        engine_tensor_t *yt = engine_graph_view(g, y, NULL, ENGINE_U8, 1, ys);
        engine_tensor_t *loss = engine_softmax_xent(g, engine_net_forward(engine_model_net(m), g, xt, 1), yt, 0.0f);
        engine_profiler_end(p);
        engine_profiler_begin(p, "backward");
        err_t e = {0};
        assert_int_equal(engine_graph_backward(g, loss, NULL, &e), 0);
        engine_profiler_end(p);
        engine_profiler_end(p);
        engine_graph_reset(g);
        engine_profiler_sample_memory(p);
    }
}

static int within(json_t *inner, json_t *outer)
{
    double a = json_real_value(json_object_get(inner, "ts")), d = json_real_value(json_object_get(inner, "dur"));
    double A = json_real_value(json_object_get(outer, "ts")), D = json_real_value(json_object_get(outer, "dur"));
    return a >= A - 1e-3 && a + d <= A + D + 1e-3;
}

static void check_arch(const char *arch_s)
{
    err_t e = {0};
    json_t *arch = json_loads(arch_s, 0, NULL);
    engine_model_t *m = NULL;
    assert_int_equal(engine_model_create(arch, 784, 10, &m, &e), 0);
    json_decref(arch);
    engine_model_init(m, 1);
    engine_graph_t *g = engine_graph_create(1 << 16, 1);
    engine_profiler_t *p = NULL;
    assert_int_equal(engine_profiler_create(4096, &p, &e), 0);
    engine_profiler_attach(p, g);
    run_steps(m, p, g);
    char path[] = "/tmp/fednas-profile-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(engine_profiler_write_trace(p, path, NULL, &e), 0);

    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    unlink(path);
    assert_non_null(root);
    json_t *evs = json_object_get(root, "traceEvents");
    assert_true(json_is_array(evs));
    size_t i;
    json_t *ev, *step = NULL, *phase = NULL;
    int steps = 0, gemm = 0, gemm_bwd = 0, counters = 0, ops = 0;
    double gemm_flops = 0;
    json_array_foreach(evs, i, ev) {
        const char *ph = json_string_value(json_object_get(ev, "ph"));
        const char *name = json_string_value(json_object_get(ev, "name"));
        assert_non_null(ph);
        assert_non_null(name);
        assert_true(json_is_integer(json_object_get(ev, "pid")));
        assert_true(json_is_integer(json_object_get(ev, "tid")));
        if (strcmp(ph, "M") == 0)
            continue;
        assert_true(json_is_number(json_object_get(ev, "ts")));
        if (strcmp(ph, "C") == 0) {
            json_t *args = json_object_get(ev, "args");
            json_int_t used = json_integer_value(json_object_get(args, "used"));
            assert_true(used >= 0 && used <= json_integer_value(json_object_get(args, "reserved")));
            counters++;
            continue;
        }
        assert_string_equal(ph, "X");
        assert_true(json_real_value(json_object_get(ev, "dur")) >= 0);
        const char *cat = json_string_value(json_object_get(ev, "cat"));
        if (strcmp(cat, "span") == 0) {
            if (strcmp(name, "step") == 0) {
                step = ev;
                steps++;
            } else {
                assert_non_null(step);
                assert_true(within(ev, step));
                phase = ev;
            }
            continue;
        }
        assert_string_equal(cat, "op");
        ops++;
        /* Spans come before their ops (they open first): the op lies in the latest phase. */
        assert_non_null(phase);
        assert_true(within(ev, phase));
        json_t *args = json_object_get(ev, "args");
        const char *pass = json_string_value(json_object_get(args, "pass"));
        assert_string_equal(pass, json_string_value(json_object_get(phase, "name")));
        const char *op = json_string_value(json_object_get(args, "op"));
        if (strcmp(op, "linear") == 0 || strcmp(op, "conv2d") == 0) {
            if (strcmp(pass, "forward") == 0) {
                gemm++;
                gemm_flops += json_real_value(json_object_get(args, "flops"));
            } else {
                gemm_bwd++;
            }
        }
    }
    assert_int_equal(steps, STEPS);
    assert_int_equal(gemm, STEPS * engine_model_num_layers(m));
    assert_int_equal(gemm_bwd, STEPS * engine_model_num_layers(m));
    assert_int_equal(counters, ops + STEPS); /* one per op, one after each reset */
    double want = engine_net_flops_per_sample(engine_model_net(m)) * B * STEPS;
    assert_true(gemm_flops > 0 && gemm_flops == want);
    engine_profile_row_t rows[2 * ENGINE_OP_COUNT];
    int n = engine_profiler_rows(p, rows);
    assert_true(n > 0);
    for (int r = 1; r < n; r++)
        assert_true(rows[r - 1].seconds >= rows[r].seconds);
    json_decref(root);
    engine_profiler_free(p);
    engine_graph_free(g);
    engine_model_free(m);
}

static void test_lenet(void **state)
{
    (void)state;
    check_arch("{\"type\":\"lenet\"}");
}

static void test_layers(void **state)
{
    (void)state;
    check_arch("{\"type\":\"layers\",\"layers\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3},{\"type\":\"batchnorm\"},"
               "{\"type\":\"relu\"},{\"type\":\"residual\",\"body\":[{\"type\":\"conv2d\",\"out\":4,\"kernel\":3,"
               "\"padding\":\"same\"}]},{\"type\":\"global_avgpool\"},{\"type\":\"linear\"}]}");
}

/* Detached, the graph runs without the hook and nothing is recorded. */
static void test_detach(void **state)
{
    (void)state;
    err_t e = {0};
    engine_profiler_t *p = NULL;
    assert_int_equal(engine_profiler_create(64, &p, &e), 0);
    engine_graph_t *g = engine_graph_create(1 << 16, 1);
    engine_profiler_attach(p, g);
    engine_profiler_attach(p, NULL);
    float w[4] = {1, 2, 3, 4}, gw[4] = {0};
    int64_t s[2] = {2, 2};
    engine_tensor_t *W = engine_graph_view(g, w, gw, ENGINE_F32, 2, s);
    assert_non_null(engine_relu(g, W));
    double fl;
    assert_true(engine_profiler_total(p, 0, &fl, NULL) == 0 && fl == 0);
    assert_int_equal(engine_profiler_create(3, &(engine_profiler_t *){NULL}, &e), FN_EINVAL);
    engine_graph_free(g);
    engine_profiler_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_lenet), cmocka_unit_test(test_layers),
                                       cmocka_unit_test(test_detach)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
