/* Optimizer steps and learning-rate schedules against values computed by hand (PyTorch's
 * formulas), gradient clipping, and the train config read from JSON with errors naming keys. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/model.h"
#include "engine/optim.h"
#include "engine/schedule.h"

/* Two steps on one parameter p0 = 1 with gradients g1, g2; returns p after each. */
static void two_steps(engine_optim_config_t c, float g1, float g2, float lr, float out[2])
{
    engine_optim_t *o = NULL;
    err_t e = {0};
    assert_int_equal(engine_optim_create(&c, 1, &o, &e), 0);
    float p = 1.0f, g = g1;
    engine_optim_step(o, &p, &g, lr);
    out[0] = p;
    g = g2;
    engine_optim_step(o, &p, &g, lr);
    out[1] = p;
    assert_int_equal(engine_optim_steps(o), 2);
    engine_optim_free(o);
}

static void test_sgd(void **state)
{
    (void)state;
    float p[2];
    engine_optim_config_t c = engine_optim_defaults(ENGINE_OPTIM_SGD, 0.1f);
    two_steps(c, 0.5f, 0.5f, 0.1f, p);
    assert_float_equal(p[0], 0.95f, 1e-6); /* 1 - 0.1*0.5 */
    assert_float_equal(p[1], 0.90f, 1e-6);
    c.momentum = 0.9f; /* buf1 = 0.5; buf2 = 0.9*0.5 + 0.5 = 0.95 */
    two_steps(c, 0.5f, 0.5f, 0.1f, p);
    assert_float_equal(p[0], 0.95f, 1e-6);
    assert_float_equal(p[1], 0.855f, 1e-6);
    c.nesterov = 1; /* g + 0.9*buf: 0.95, then 0.5 + 0.855 = 1.355 */
    two_steps(c, 0.5f, 0.5f, 0.1f, p);
    assert_float_equal(p[0], 0.905f, 1e-6);
    assert_float_equal(p[1], 0.7695f, 1e-6);
    c = engine_optim_defaults(ENGINE_OPTIM_SGD, 0.1f);
    c.weight_decay = 0.1f; /* g = 0.5 + 0.1*1 = 0.6; then 0.5 + 0.1*0.94 = 0.594 */
    two_steps(c, 0.5f, 0.5f, 0.1f, p);
    assert_float_equal(p[0], 0.94f, 1e-6);
    assert_float_equal(p[1], 0.94f - 0.0594f, 1e-6);
}

static void test_adam_rmsprop(void **state)
{
    (void)state;
    float p[2];
    engine_optim_config_t c = engine_optim_defaults(ENGINE_OPTIM_ADAM, 0.1f);
    two_steps(c, 0.5f, -0.25f, 0.1f, p);
    /* t1: mhat = 0.5, vhat = 0.25 -> 1 - 0.1; t2: m = 0.02, v = 3.1225e-4 -> 0.873366299 */
    assert_float_equal(p[0], 0.9f, 1e-6);
    assert_float_equal(p[1], 0.8733663f, 2e-6);
    c = engine_optim_defaults(ENGINE_OPTIM_ADAMW, 0.1f);
    c.weight_decay = 0.1f; /* decoupled: p *= 1 - 0.1*0.1 first, then the Adam step */
    two_steps(c, 0.5f, -0.25f, 0.1f, p);
    assert_float_equal(p[0], 0.99f - 0.1f, 1e-6);
    c = engine_optim_defaults(ENGINE_OPTIM_ADAM, 0.1f);
    c.weight_decay = 0.1f; /* coupled (L2): still the sign step at t1 */
    two_steps(c, 0.5f, -0.25f, 0.1f, p);
    assert_float_equal(p[0], 0.9f, 1e-6);
    assert_true(fabsf(p[1] - 0.8733663f) > 1e-3); /* the decay term changed the second step */
    c = engine_optim_defaults(ENGINE_OPTIM_RMSPROP, 0.01f);
    c.momentum = 0.9f; /* v = 0.0025 -> u = 10; v = 0.004975 -> u = 7.0888, buf = 16.0888 */
    two_steps(c, 0.5f, 0.5f, 0.01f, p);
    assert_float_equal(p[0], 0.9f, 1e-5);
    assert_float_equal(p[1], 0.7391119f, 1e-5);
}

/* A vector long enough to be split over the engine's pool steps each element exactly as a
 * one-element optimizer does (the serial path), for every optimizer, over three steps; the
 * pool's steps are engine_optim_step_zero, which must also leave the gradient all zero. */
static void test_parallel_step_matches_serial(void **state)
{
    (void)state;
    enum { N = 300001, STEPS = 3 };
    /* the last: SGD without momentum, plain SGD's own branch */
    engine_optim_type_t types[] = {ENGINE_OPTIM_SGD, ENGINE_OPTIM_RMSPROP, ENGINE_OPTIM_ADAM, ENGINE_OPTIM_ADAMW,
                                   ENGINE_OPTIM_SGD};
    float *p = malloc(N * sizeof *p), *g = malloc(N * sizeof *g);
    assert_non_null(p);
    assert_non_null(g);
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        engine_optim_config_t c = engine_optim_defaults(types[t], 0.05f);
        c.weight_decay = 0.01f;
        if ((types[t] == ENGINE_OPTIM_SGD && t == 0) || types[t] == ENGINE_OPTIM_RMSPROP)
            c.momentum = 0.9f;
        c.nesterov = types[t] == ENGINE_OPTIM_SGD && t == 0;
        engine_optim_t *big = NULL;
        err_t e = {0};
        assert_int_equal(engine_optim_create(&c, N, &big, &e), 0);
        for (int i = 0; i < N; i++)
            p[i] = 0.001f * (float)(i % 1000) - 0.5f;
        for (int s = 0; s < STEPS; s++) {
            for (int i = 0; i < N; i++)
                g[i] = 0.01f * (float)((i * 7 + s * 13) % 200) - 1.0f;
            /* the fused step-and-reset on the pool against the plain step alone */
            engine_optim_step_zero(big, p, g, 0.05f);
            for (int i = 0; i < N; i++)
                if (g[i] != 0.0f)
                    fail_msg("optimizer %zu: gradient element %d not reset (%g)", t, i, (double)g[i]);
        }
        for (int i = 0; i < N; i += i < 70000 ? 6997 : 29989) {
            engine_optim_t *one = NULL;
            assert_int_equal(engine_optim_create(&c, 1, &one, &e), 0);
            float q = 0.001f * (float)(i % 1000) - 0.5f;
            for (int s = 0; s < STEPS; s++) {
                float h = 0.01f * (float)((i * 7 + s * 13) % 200) - 1.0f;
                engine_optim_step(one, &q, &h, 0.05f);
            }
            if (q != p[i])
                fail_msg("optimizer %zu, element %d: %.9g on the pool, %.9g alone", t, i, (double)p[i], (double)q);
            engine_optim_free(one);
        }
        engine_optim_free(big);
    }
    free(p);
    free(g);
}

static void test_optim_errors(void **state)
{
    (void)state;
    err_t e = {0};
    engine_optim_t *o = (engine_optim_t *)&e;
    engine_optim_config_t c = engine_optim_defaults(ENGINE_OPTIM_SGD, 0.1f);
    c.nesterov = 1;
    assert_int_equal(engine_optim_create(&c, 4, &o, &e), FN_EINVAL);
    assert_null(o);
    assert_non_null(strstr(e.msg, "nesterov"));
    c = engine_optim_defaults(ENGINE_OPTIM_ADAM, -1.0f);
    assert_int_equal(engine_optim_create(&c, 4, &o, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "lr"));
    c = engine_optim_defaults(ENGINE_OPTIM_ADAM, 0.1f);
    c.beta2 = 1.0f;
    assert_int_equal(engine_optim_create(&c, 4, &o, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "betas"));
}

static void test_clip(void **state)
{
    (void)state;
    float g[2] = {3.0f, 4.0f};
    assert_float_equal(engine_clip_grad_norm(g, 2, 10.0), 5.0, 1e-9);
    assert_float_equal(g[0], 3.0f, 0); /* under the limit: untouched */
    assert_float_equal(engine_clip_grad_norm(g, 2, 1.0), 5.0, 1e-9);
    assert_float_equal(g[0], 0.6f, 1e-6);
    assert_float_equal(g[1], 0.8f, 1e-6);
}

static void test_schedules(void **state)
{
    (void)state;
    engine_schedule_t s = engine_schedule_constant(0.1);
    err_t e = {0};
    assert_float_equal(engine_schedule_lr(&s, 1000), 0.1, 1e-12);
    s.type = ENGINE_SCHED_STEP;
    s.step_size = 3;
    s.gamma = 0.5;
    assert_int_equal(engine_schedule_check(&s, &e), 0);
    assert_float_equal(engine_schedule_lr(&s, 2), 0.1, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 3), 0.05, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 6), 0.025, 1e-12);
    s = engine_schedule_constant(0.1);
    s.type = ENGINE_SCHED_MULTISTEP;
    s.milestones[0] = 2;
    s.milestones[1] = 5;
    s.num_milestones = 2;
    assert_float_equal(engine_schedule_lr(&s, 1), 0.1, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 2), 0.01, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 5), 0.001, 1e-12);
    s = engine_schedule_constant(0.1);
    s.type = ENGINE_SCHED_EXPONENTIAL;
    s.gamma = 0.9;
    assert_float_equal(engine_schedule_lr(&s, 2), 0.081, 1e-12);
    s = engine_schedule_constant(0.1);
    s.type = ENGINE_SCHED_COSINE;
    s.total = 10;
    assert_float_equal(engine_schedule_lr(&s, 0), 0.1, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 5), 0.05, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 10), 0.0, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 15), 0.0, 1e-12);
    s.min_lr = 0.02; /* 0.02 + 0.08 * (1 + cos(pi/2)) / 2 */
    assert_float_equal(engine_schedule_lr(&s, 5), 0.06, 1e-12);
    s = engine_schedule_constant(0.1);
    s.type = ENGINE_SCHED_LINEAR;
    s.total = 4;
    s.min_lr = 0.02;
    assert_float_equal(engine_schedule_lr(&s, 1), 0.08, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 4), 0.02, 1e-12);
    s = engine_schedule_constant(0.1);
    s.type = ENGINE_SCHED_POLYNOMIAL;
    s.total = 4;
    s.power = 2.0;
    assert_float_equal(engine_schedule_lr(&s, 2), 0.025, 1e-12);
    s = engine_schedule_constant(0.1);
    s.type = ENGINE_SCHED_ONECYCLE;
    s.total = 10; /* starts 0.1/25, peaks at t = 0.3*10 - 1 = 2, ends 0.004/1e4 at t = 9 */
    assert_int_equal(engine_schedule_check(&s, &e), 0);
    assert_float_equal(engine_schedule_lr(&s, 0), 0.004, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 1), 0.052, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 2), 0.1, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 9), 4e-7, 1e-15);
    /* halfway down (t = 5.5 is not a step; t = 9 - 3.5): check the cosine at 3/7 of phase 2 */
    assert_float_equal(engine_schedule_lr(&s, 5), 4e-7 + (0.1 - 4e-7) / 2 * (1 + cos(M_PI * 3.0 / 7.0)), 1e-12);
    s = engine_schedule_constant(0.1);
    s.warmup = 4; /* (t+1)/5 */
    assert_float_equal(engine_schedule_lr(&s, 0), 0.02, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 3), 0.08, 1e-12);
    assert_float_equal(engine_schedule_lr(&s, 4), 0.1, 1e-12);
    s.type = ENGINE_SCHED_COSINE;
    s.total = 10;
    assert_float_equal(engine_schedule_lr(&s, 1), 0.4 * (0.05 * (1 + cos(M_PI * 0.1))), 1e-12);
    /* errors */
    s = engine_schedule_constant(0.1);
    s.type = ENGINE_SCHED_STEP;
    assert_int_equal(engine_schedule_check(&s, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "step_size"));
    s.type = ENGINE_SCHED_COSINE;
    assert_int_equal(engine_schedule_check(&s, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "total"));
}

static int from_json(const char *text, engine_train_config_t *c, err_t *e)
{
    json_error_t je;
    json_t *j = json_loads(text, 0, &je);
    assert_non_null(j);
    int rc = engine_train_config_from_json(j, c, e);
    json_decref(j);
    return rc;
}

static void test_config_json(void **state)
{
    (void)state;
    engine_train_config_t c;
    err_t e = {0};
    assert_int_equal(from_json("{\"epochs\":1,\"batch_size\":32,\"lr\":0.05}", &c, &e), 0);
    assert_int_equal(c.optim.type, ENGINE_OPTIM_SGD);
    assert_float_equal(c.optim.lr, 0.05f, 0);
    assert_int_equal(c.batch_size, 32);
    assert_int_equal(
        from_json("{\"epochs\":3,\"batch_size\":64,\"lr\":0.001,\"clip_norm\":5,\"accumulate\":2,\"label_smoothing\":0.1,"
                  "\"prox_mu\":0.01,\"seed\":7,\"optimizer\":{\"type\":\"adamw\",\"betas\":[0.8,0.99],\"weight_decay\":0.05},"
                  "\"schedule\":{\"type\":\"cosine\",\"unit\":\"step\",\"warmup\":100,\"min_lr\":0.0001}}",
                  &c, &e),
        0);
    assert_int_equal(c.optim.type, ENGINE_OPTIM_ADAMW);
    assert_float_equal(c.optim.beta1, 0.8f, 0);
    assert_float_equal(c.optim.weight_decay, 0.05f, 0);
    assert_int_equal(c.schedule.type, ENGINE_SCHED_COSINE);
    assert_int_equal(c.schedule.per_step, 1);
    assert_int_equal(c.schedule.warmup, 100);
    assert_int_equal(c.accumulate, 2);
    assert_int_equal(c.seed, 7);
    assert_float_equal(c.prox_mu, 0.01f, 1e-9);
    assert_int_equal(from_json("{\"lr\":0.1,\"optimizer\":\"adam\",\"schedule\":\"onecycle\"}", &c, &e), 0);
    assert_int_equal(c.optim.type, ENGINE_OPTIM_ADAM);
    assert_int_equal(c.schedule.type, ENGINE_SCHED_ONECYCLE);
    /* errors name the key */
    assert_int_equal(from_json("{\"lr\":0.1,\"optimizer\":{\"type\":\"sgd\",\"momentun\":0.9}}", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "momentun"));
    assert_int_equal(from_json("{\"lr\":0.1,\"optimiser\":\"sgd\"}", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "optimiser"));
    assert_int_equal(from_json("{\"lr\":0.1,\"optimizer\":\"lion\"}", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "optimizer.type"));
    assert_int_equal(from_json("{\"lr\":-1}", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "train.lr"));
    assert_int_equal(from_json("{\"lr\":0.1,\"schedule\":{\"type\":\"step\"}}", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "step_size"));
    assert_int_equal(from_json("{\"lr\":0.1,\"optimizer\":{\"betas\":[0.9]}}", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "betas"));
    assert_int_equal(from_json("{\"lr\":0.1,\"optimizer\":{\"nesterov\":true}}", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "nesterov"));
    assert_int_equal(from_json("{\"lr\":0.1,\"schedule\":{\"type\":\"multistep\",\"milestones\":[5,2]}}", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "milestones"));
    assert_int_equal(from_json("{\"batch_size\":0}", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "batch_size"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgd),      cmocka_unit_test(test_adam_rmsprop), cmocka_unit_test(test_optim_errors),
        cmocka_unit_test(test_parallel_step_matches_serial),
        cmocka_unit_test(test_clip),     cmocka_unit_test(test_schedules),    cmocka_unit_test(test_config_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
