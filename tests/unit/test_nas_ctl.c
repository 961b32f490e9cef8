/* The NAS controller's parts: the store's NAS tables, the data split, one candidate's evaluation
 * (metrics, divergence as failure, determinism), evaluation seeds, and the local workers
 * (results over pipes, a killed worker reported and replaced). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/store.h"
#include "common/store_nas.h"
#include "common/util.h"
#include "nas/controller.h"
#include "nas/eval.h"
#include "nas/worker.h"

static nas_data_t g_data;
static char g_dir[64];

static int group_setup(void **state)
{
    /* One pool thread: the workers fork from this process after it has trained (see worker.h). */
    setenv("FEDNAS_THREADS", "1", 1);
    snprintf(g_dir, sizeof g_dir, "/tmp/fednas-nasctl-XXXXXX");
    if (!mkdtemp(g_dir))
        return -1;
    nas_data_opts_t o = {.split_seed = 42, .val_size = 10000, .train_subset = 600, .val_subset = 300,
                         .test_subset = 200};
    err_t e = {0};
    if (nas_data_load(&o, &g_data, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    nas_data_free(&g_data);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_split_is_disjoint_and_seeded(void **state)
{
    assert_int_equal(g_data.n_train, 600);
    assert_int_equal(g_data.n_val, 300);
    assert_int_equal(g_data.n_all, 900);
    assert_int_equal(g_data.n_test, 200);
    char *seen = calloc(60000, 1);
    for (int i = 0; i < g_data.n_val; i++)
        seen[g_data.val_idx[i]] = 1;
    for (int i = 0; i < g_data.n_train; i++)
        assert_int_equal(seen[g_data.train_idx[i]], 0); /* never validate on training images */
    free(seen);
    /* The same seed gives the same split; another seed another one. Full sizes: 50,000 / 10,000. */
    nas_data_t a, b;
    err_t e = {0};
    nas_data_opts_t o = {.split_seed = 42, .val_size = 10000};
    assert_int_equal(nas_data_load(&o, &a, &e), 0);
    o.split_seed = 43;
    assert_int_equal(nas_data_load(&o, &b, &e), 0);
    assert_int_equal(a.n_train, 50000);
    assert_int_equal(a.n_val, 10000);
    assert_int_equal(a.n_all, 60000);
    assert_int_equal(a.n_test, 10000);
    assert_memory_equal(a.val_idx, g_data.val_idx, 300 * sizeof(int));
    assert_memory_equal(a.train_idx, g_data.train_idx, 600 * sizeof(int));
    assert_memory_not_equal(a.val_idx, b.val_idx, 300 * sizeof(int));
    nas_data_free(&a);
    nas_data_free(&b);
    o.val_size = 60000;
    assert_int_equal(nas_data_load(&o, &a, &e), FN_EINVAL);
}

static json_t *softmax_arch(void)
{
    return json_pack("{s:s, s:[{s:s}, {s:s, s:i}]}", "type", "layers", "layers", "type", "flatten", "type", "linear",
                     "out", 10);
}

static nas_eval_opts_t opts(double lr)
{
    nas_eval_opts_t o = {.epochs = 1, .seed = 9, .latency_reps = 20};
    engine_train_config_default(&o.train);
    o.train.optim.lr = (float)lr;
    o.train.batch_size = 32;
    return o;
}

static void test_eval_metrics_and_determinism(void **state)
{
    json_t *arch = softmax_arch();
    nas_eval_opts_t o = opts(0.1);
    nas_eval_result_t r1, r2;
    err_t e = {0};
    assert_int_equal(nas_eval_run(arch, &g_data, &o, &r1, NULL, &e), 0);
    assert_true(r1.ok);
    assert_int_equal(r1.params, 7850);                  /* 784 x 10 + 10 */
    assert_true(fabs(r1.flops - 2.0 * 7840) < 1e-6);   /* a multiply-add counts 2 (bias adds not counted) */
    assert_true(r1.latency_ms > 0);
    assert_int_equal(r1.samples, 600);
    assert_string_equal(r1.device, "cpu");
    assert_int_equal(r1.threads, 1);
    /* 600 images, one epoch: far from converged, but well above chance (0.1). */
    assert_true(r1.accuracy > 0.4 && r1.accuracy <= 1.0);
    assert_int_equal(nas_eval_run(arch, &g_data, &o, &r2, NULL, &e), 0);
    assert_true(r1.accuracy == r2.accuracy && r1.loss == r2.loss);
    o.seed = 10;
    assert_int_equal(nas_eval_run(arch, &g_data, &o, &r2, NULL, &e), 0);
    assert_true(r1.loss != r2.loss);
    /* A fraction of an epoch sees that fraction of the images. */
    o.epochs = 0.25;
    assert_int_equal(nas_eval_run(arch, &g_data, &o, &r2, NULL, &e), 0);
    assert_int_equal(r2.samples, 150);
    /* and a whole number and a fraction, that many passes' worth: 1.5 x 600 */
    o.epochs = 1.5;
    assert_int_equal(nas_eval_run(arch, &g_data, &o, &r2, NULL, &e), 0);
    assert_int_equal(r2.samples, 900);
    assert_true(r2.ok);
    o.epochs = 0;
    assert_int_equal(nas_eval_run(arch, &g_data, &o, &r2, NULL, &e), FN_EINVAL);
    /* Final: trained on train + validation, scored on the test images; the model comes back. */
    o.epochs = 1;
    o.final = 1;
    engine_model_t *m = NULL;
    assert_int_equal(nas_eval_run(arch, &g_data, &o, &r2, &m, &e), 0);
    assert_non_null(m);
    assert_int_equal(r2.samples, 900);
    engine_model_free(m);
    json_decref(arch);
}

static void test_eval_divergence_is_a_failure(void **state)
{
    json_t *arch = json_pack("{s:s, s:[{s:s, s:i, s:i, s:s}, {s:s}, {s:s}, {s:s, s:i}]}", "type", "layers", "layers",
                             "type", "conv2d", "out", 8, "kernel", 3, "padding", "same", "type", "relu", "type",
                             "flatten", "type", "linear", "out", 10);
    nas_eval_opts_t o = opts(1e20);
    nas_eval_result_t r;
    err_t e = {0};
    assert_int_equal(nas_eval_run(arch, &g_data, &o, &r, NULL, &e), 0);
    assert_false(r.ok);
    assert_non_null(strstr(r.reason, "diverged"));
    json_decref(arch);
    /* A model that does not build is bad input, not a failed candidate. */
    json_t *bad = json_pack("{s:s, s:[{s:s, s:i}]}", "type", "layers", "layers", "type", "conv2d", "kernel", 3);
    assert_true(nas_eval_run(bad, &g_data, &o, &r, NULL, &e) < 0);
    json_decref(bad);
}

static void test_eval_seed(void **state)
{
    const char *h1 = "00112233445566778899aabbccddeeff", *h2 = "00112233445566778899aabbccddeef0";
    uint64_t a = nas_eval_seed(1, h1, 1, 0);
    assert_true(a == nas_eval_seed(1, h1, 1, 0));
    assert_true(a != nas_eval_seed(2, h1, 1, 0));
    assert_true(a != nas_eval_seed(1, "10112233445566778899aabbccddeeff", 1, 0));
    assert_true(a != nas_eval_seed(1, h1, 2, 0));
    assert_true(a != nas_eval_seed(1, h1, 1, 1));
    (void)h2;
}

static void test_store_nas_tables(void **state)
{
    char db[128];
    snprintf(db, sizeof db, "%s/s.db", g_dir);
    store_t *s;
    err_t e = {0};
    assert_int_equal(store_open(db, 0, &s, &e), 0);
    assert_int_equal(store_schema_version(s), 5);
    int64_t exp, run;
    assert_int_equal(store_experiment_create(s, "x", "{}", &exp, &e), 0);
    assert_int_equal(store_run_create(s, exp, 4, 2, 7, NULL, &run, &e), 0);
    store_nas_run_t nr = {.strategy = "evolution", .split_seed = 42, .budget = 4, .workers = 2, .threads = 1,
                          .device = "cpu"}, got;
    assert_int_equal(store_nas_run_get(s, run, &got, &e), FN_ENOTFOUND);
    assert_int_equal(store_nas_run_create(s, run, &nr, &e), 0);
    assert_int_equal(store_nas_run_get(s, run, &got, &e), 0);
    assert_string_equal(got.strategy, "evolution");
    assert_int_equal(got.split_seed, 42);
    assert_int_equal(got.workers, 2);
    store_nas_candidate_t c = {.seq = 0, .cand_id = 0, .hash = "abc", .genome = "{\"g\":1}", .arch = "{\"type\":\"layers\"}",
                               .parent = -1, .mutation = "random", .budget = 1, .status = "queued",
                               .cached_from = -1, .tell_seq = -1, .queued_at = 1.0};
    assert_int_equal(store_nas_candidate_put(s, run, &c, &e), 0);
    c.seq = 1;
    c.parent = 0;
    snprintf(c.status, sizeof c.status, "done");
    c.attempts = 2;
    c.diverged = 1;
    snprintf(c.reason, sizeof c.reason, "diverged: x");
    c.has_metrics = 1;
    c.val_accuracy = 0.8125;
    c.params = 1234;
    c.tell_seq = 0;
    assert_int_equal(store_nas_candidate_put(s, run, &c, &e), 0);
    snprintf(c.status, sizeof c.status, "bogus");
    assert_true(store_nas_candidate_put(s, run, &c, &e) < 0); /* the CHECK constraint */
    store_nas_candidate_t *v;
    int n;
    assert_int_equal(store_nas_candidates_load(s, run, &v, &n, &e), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].status, "queued");
    assert_false(v[0].has_metrics);
    assert_int_equal(v[0].parent, -1);
    assert_int_equal(v[0].tell_seq, -1);
    assert_string_equal(v[1].status, "done");
    assert_int_equal(v[1].attempts, 2);
    assert_int_equal(v[1].diverged, 1);
    assert_int_equal(v[1].parent, 0);
    assert_true(v[1].has_metrics && v[1].val_accuracy == 0.8125 && v[1].params == 1234);
    assert_string_equal(v[1].genome, "{\"g\":1}");
    store_nas_candidates_free(v, n);

    float w[5] = {1, 2, 3, 4.5f, -1};
    store_nas_final_t f = {.rank = 2, .seq = 1, .arch = "{}", .recipe = "{\"epochs\":1}", .test_accuracy = 0.75,
                           .weights = w, .n_weights = 5};
    assert_int_equal(store_nas_final_put(s, run, &f, &e), 0);
    int64_t have[64];
    assert_int_equal(store_nas_final_done(s, run, have, &e), 0);
    assert_int_equal(have[2], 1);
    assert_int_equal(have[1], STORE_NAS_NO_FINAL);
    assert_int_equal(have[3], STORE_NAS_NO_FINAL);
    store_nas_final_t g;
    char *arch, *recipe;
    float *wg;
    assert_int_equal(store_nas_final_get(s, run, 1, &g, &arch, &recipe, &wg, &e), FN_ENOTFOUND);
    assert_int_equal(store_nas_final_get(s, run, 2, &g, &arch, &recipe, &wg, &e), 0);
    assert_int_equal(g.n_weights, 5);
    assert_memory_equal(wg, w, sizeof w);
    assert_string_equal(recipe, "{\"epochs\":1}");
    free(arch);
    free(recipe);
    free(wg);

    /* The dashboard's view: nested JSON where the columns hold JSON, candidates after a seq. */
    json_t *j;
    assert_int_equal(store_nas_json(s, run + 1, -1, &j, &e), FN_ENOTFOUND);
    assert_int_equal(store_nas_json(s, run, -1, &j, &e), 0);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "search"), "strategy")), "evolution");
    json_t *cs = json_object_get(j, "candidates");
    assert_int_equal(json_array_size(cs), 2);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(json_array_get(cs, 1), "genome"), "g")), 1);
    assert_true(json_is_null(json_object_get(json_array_get(cs, 0), "val_accuracy")));
    json_t *fin = json_array_get(json_object_get(j, "final"), 0);
    assert_int_equal(json_integer_value(json_object_get(fin, "n_weights")), 5);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(fin, "recipe"), "epochs")), 1);
    json_decref(j);
    assert_int_equal(store_nas_json(s, run, 0, &j, &e), 0);
    assert_int_equal(json_array_size(json_object_get(j, "candidates")), 1);
    json_decref(j);
    store_close(s);
}

static void test_local_workers(void **state)
{
    nas_eval_opts_t o = opts(0.1);
    nas_workers_t *w;
    err_t e = {0};
    assert_int_equal(nas_workers_start_local(2, 1, &g_data, &o, &w, &e), 0);
    assert_int_equal(nas_workers_size(w), 2);
    json_t *arch = softmax_arch();
    char *text = json_dumps(arch, JSON_COMPACT);
    nas_job_t job = {.id = 5, .epochs = 1, .seed = 9, .arch = text};
    assert_int_equal(nas_workers_submit(w, &job, &e), 0);
    job.id = 6;
    job.final = 1;
    assert_int_equal(nas_workers_submit(w, &job, &e), 0);
    assert_int_equal(nas_workers_busy(w), 2);
    job.id = 7;
    assert_int_equal(nas_workers_submit(w, &job, &e), FN_ESTATE);
    /* The worker's result equals the same evaluation in this process. */
    nas_eval_result_t local;
    assert_int_equal(nas_eval_run(arch, &g_data, &o, &local, NULL, &e), 0);
    int got5 = 0, got6 = 0;
    for (int i = 0; i < 400 && !(got5 && got6); i++) {
        nas_job_done_t d;
        int rc = nas_workers_wait(w, 0.1, &d, &e);
        assert_true(rc >= 0);
        if (rc == 0)
            continue;
        assert_true(d.r.ok);
        if (d.id == 5) {
            got5 = 1;
            assert_false(d.final);
            assert_true(d.r.accuracy == local.accuracy && d.r.loss == local.loss);
            assert_null(d.weights);
        } else {
            assert_int_equal(d.id, 6);
            got6 = 1;
            assert_true(d.final);
            assert_int_equal(d.n_weights, 7850); /* the trained weights travel back */
            assert_true(isfinite(d.weights[0]));
        }
        nas_job_done_free(&d);
    }
    assert_true(got5 && got6);
    assert_int_equal(nas_workers_busy(w), 0);
    /* A worker killed mid-job: its job comes back failed, and a fresh worker takes the slot. */
    job.id = 8;
    job.final = 0;
    assert_int_equal(nas_workers_submit(w, &job, &e), 0);
    long pid = nas_workers_pid(w, 0);
    assert_true(pid > 0);
    kill((pid_t)pid, SIGKILL);
    nas_job_done_t d;
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++)
        rc = nas_workers_wait(w, 0.1, &d, &e);
    assert_int_equal(rc, 1);
    assert_int_equal(d.id, 8);
    assert_true(d.worker_died);
    assert_false(d.r.ok);
    assert_non_null(strstr(d.r.reason, "killed by signal 9"));
    assert_true(nas_workers_pid(w, 0) > 0 && nas_workers_pid(w, 0) != pid);
    assert_int_equal(nas_workers_submit(w, &job, &e), 0);
    rc = 0;
    for (int i = 0; i < 400 && rc == 0; i++)
        rc = nas_workers_wait(w, 0.1, &d, &e);
    assert_int_equal(rc, 1);
    assert_true(d.r.ok && d.id == 8);
    nas_workers_close(w);
    free(text);
    json_decref(arch);
}

/* A budget of 2.25 epochs over 8 samples: 18 indices, each sample twice and a seeded quarter
 * of them a third time; a per-epoch schedule becomes per-step with its shape kept. */
static void test_eval_fraction_list(void **state)
{
    (void)state;
    int idx[8] = {10, 11, 12, 13, 14, 15, 16, 17};
    engine_train_config_t tc;
    engine_train_config_default(&tc);
    tc.batch_size = 3; /* 3 steps an epoch */
    tc.schedule = engine_schedule_constant(0.1);
    tc.schedule.type = ENGINE_SCHED_MULTISTEP;
    tc.schedule.milestones[0] = 2;
    tc.schedule.num_milestones = 1;
    tc.schedule.total = 3;
    int *list = NULL, len = 0;
    err_t e = {0};
    assert_int_equal(nas_eval_fraction(idx, 8, 2.25, 4, &tc, &list, &len, &e), 0);
    assert_int_equal(len, 18);
    assert_int_equal(tc.epochs, 1);
    int seen[8] = {0}, thrice = 0;
    for (int i = 0; i < len; i++) {
        assert_true(list[i] >= 10 && list[i] < 18);
        seen[list[i] - 10]++;
    }
    for (int i = 0; i < 8; i++) {
        assert_true(seen[i] == 2 || seen[i] == 3);
        thrice += seen[i] == 3;
    }
    assert_int_equal(thrice, 2);
    assert_int_equal(tc.schedule.per_step, 1);
    assert_int_equal(tc.schedule.milestones[0], 6);
    assert_int_equal(tc.schedule.total, 9);
    /* the same seed, the same list; another seed, another */
    int *l2 = NULL, n2 = 0;
    engine_train_config_t t2;
    engine_train_config_default(&t2);
    assert_int_equal(nas_eval_fraction(idx, 8, 2.25, 4, &t2, &l2, &n2, &e), 0);
    assert_memory_equal(list, l2, 18 * sizeof *list);
    free(l2);
    assert_int_equal(nas_eval_fraction(idx, 8, 2.25, 5, &t2, &l2, &n2, &e), 0);
    assert_memory_not_equal(list, l2, 18 * sizeof *list);
    free(l2);
    free(list);
    assert_int_equal(nas_eval_fraction(idx, 8, 0, 4, &t2, &l2, &n2, &e), FN_EINVAL);
    assert_int_equal(nas_eval_fraction(idx, 0, 0.5, 4, &t2, &l2, &n2, &e), FN_EINVAL);
    assert_null(l2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_local_workers),
        cmocka_unit_test(test_split_is_disjoint_and_seeded),
        cmocka_unit_test(test_eval_metrics_and_determinism),
        cmocka_unit_test(test_eval_divergence_is_a_failure),
        cmocka_unit_test(test_eval_seed),
        cmocka_unit_test(test_eval_fraction_list),
        cmocka_unit_test(test_store_nas_tables),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
