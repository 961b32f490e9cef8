/* The run store: migrations, writes from the server and the JSON the dashboard reads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/store.h"

static char g_dir[64], g_db[128];

static int setup(void **state)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/fednas-store-XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    snprintf(g_db, sizeof g_db, "%s/s.db", g_dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_create_migrate_and_reopen(void **state)
{
    store_t *s;
    err_t e = {0};
    assert_int_equal(store_open(g_db, 1, &s, &e), FN_ENOTFOUND); /* readers never create */
    assert_int_equal(store_open(g_db, 0, &s, &e), 0);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    store_close(s);
    assert_int_equal(store_open(g_db, 0, &s, &e), 0); /* reopening does not migrate twice */
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    store_close(s);
    assert_int_equal(store_open(g_db, 1, &s, &e), 0);
    store_close(s);
}

static void test_newer_schema_is_refused(void **state)
{
    store_t *s;
    err_t e = {0};
    char cmd[256];
    snprintf(cmd, sizeof cmd, "%s/new.db", g_dir);
    assert_int_equal(store_open(cmd, 0, &s, &e), 0);
    store_close(s);
    char sql[512];
    snprintf(sql, sizeof sql, "sqlite3 %s 'PRAGMA user_version = 99;'", cmd);
    if (system(sql) != 0)
        skip();
    assert_int_equal(store_open(cmd, 0, &s, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "newer"));
}

static void test_runs_rounds_clients_round_trip(void **state)
{
    store_t *s;
    err_t e = {0};
    int64_t exp, run;
    assert_int_equal(store_open(g_db, 0, &s, &e), 0);
    assert_int_equal(store_experiment_create(s, "exp-a", "{\"rounds\": 3}", &exp, &e), 0);
    assert_int_equal(store_run_create(s, exp, 3, 2, 7, "/tmp/x", &run, &e), 0);
    double acc[] = {0.5, 0.8, 0.7};
    for (int r = 1; r <= 3; r++) {
        store_round_t rr = {.round = r, .started_at = 100.0 + r, .ended_at = 100.5 + r, .selected = 2,
                            .participants = 2, .test_accuracy = acc[r - 1], .test_loss = 1.0 / r,
                            .train_loss = 1.0, .train_accuracy = 0.5, .samples = 100};
        assert_int_equal(store_round_insert(s, run, &rr, &e), 0);
    }
    store_round_t dup = {.round = 2};
    assert_int_equal(store_round_insert(s, run, &dup, &e), FN_EIO); /* one row per round */
    assert_int_equal(store_client_upsert(s, run, 1, "site-1", "KEY", 60, "joined", &e), 0);
    assert_int_equal(store_client_upsert(s, run, 1, "site-1", "KEY", 70, "joined", &e), 0);
    assert_int_equal(store_client_contributed(s, run, 1, 1000, 2000, 0.25, &e), 0);
    assert_int_equal(store_run_finish(s, run, "done", NULL, &e), 0);

    json_t *runs, *rounds, *clients, *one;
    assert_int_equal(store_runs_json(s, &runs, &e), 0);
    assert_int_equal(json_array_size(runs), 1);
    json_t *r0 = json_array_get(runs, 0);
    assert_string_equal(json_string_value(json_object_get(r0, "experiment")), "exp-a");
    assert_string_equal(json_string_value(json_object_get(r0, "status")), "done");
    assert_int_equal(json_integer_value(json_object_get(r0, "rounds_done")), 3);
    assert_true(fabs(json_real_value(json_object_get(r0, "best_accuracy")) - 0.8) < 1e-12);
    assert_true(fabs(json_real_value(json_object_get(r0, "last_accuracy")) - 0.7) < 1e-12);
    json_decref(runs);

    assert_int_equal(store_rounds_json(s, run, 1, &rounds, &e), 0);
    assert_int_equal(json_array_size(rounds), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(rounds, 0), "round")), 2);
    assert_true(fabs(json_real_value(json_object_get(json_array_get(rounds, 0), "duration")) - 0.5) < 1e-9);
    json_decref(rounds);
    assert_int_equal(store_rounds_json(s, run + 100, 0, &rounds, &e), FN_ENOTFOUND);

    assert_int_equal(store_clients_json(s, run, &clients, &e), 0);
    json_t *c0 = json_array_get(clients, 0);
    assert_int_equal(json_integer_value(json_object_get(c0, "samples")), 70);
    assert_int_equal(json_integer_value(json_object_get(c0, "rounds_contributed")), 1);
    assert_int_equal(json_integer_value(json_object_get(c0, "bytes_up")), 1000);
    json_decref(clients);

    assert_int_equal(store_run_json(s, run, &one, &e), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(one, "config"), "rounds")), 3);
    json_decref(one);
    assert_int_equal(store_run_json(s, 12345, &one, &e), FN_ENOTFOUND);
    store_close(s);
}

/* The live phase: set by the server, read back with the run and by the event poller, cleared
 * when the run ends. */
static void test_run_phase(void **state)
{
    store_t *s;
    err_t e = {0};
    int64_t exp, run;
    json_t *one, *states;
    assert_int_equal(store_open(g_db, 0, &s, &e), 0);
    assert_int_equal(store_experiment_create(s, "x", "{}", &exp, &e), 0);
    assert_int_equal(store_run_create(s, exp, 5, 2, 1, NULL, &run, &e), 0);
    assert_int_equal(store_run_json(s, run, &one, &e), 0);
    assert_true(json_is_null(json_object_get(one, "phase")));
    json_decref(one);
    assert_int_equal(store_run_set_phase(s, run, 3, "training", &e), 0);
    assert_int_equal(store_run_json(s, run, &one, &e), 0);
    assert_string_equal(json_string_value(json_object_get(one, "phase")), "training");
    assert_int_equal(json_integer_value(json_object_get(one, "phase_round")), 3);
    assert_true(json_real_value(json_object_get(one, "phase_at")) > 1e9);
    json_decref(one);
    assert_int_equal(store_run_states_json(s, &states, &e), 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(states, 0), "phase")), "training");
    json_decref(states);
    assert_int_equal(store_run_finish(s, run, "done", NULL, &e), 0);
    assert_int_equal(store_run_json(s, run, &one, &e), 0);
    assert_true(json_is_null(json_object_get(one, "phase")));
    json_decref(one);
    store_close(s);
}

static void test_bad_status_rejected(void **state)
{
    store_t *s;
    err_t e = {0};
    int64_t exp, run;
    assert_int_equal(store_open(g_db, 0, &s, &e), 0);
    assert_int_equal(store_experiment_create(s, "x", "{}", &exp, &e), 0);
    assert_int_equal(store_run_create(s, exp, 1, 1, 1, NULL, &run, &e), 0);
    assert_int_equal(store_run_finish(s, run, "exploded", NULL, &e), FN_EIO);
    store_close(s);
}

static void test_round_commit_is_atomic_and_resumable(void **state)
{
    store_t *s;
    err_t e = {0};
    int64_t exp, run, exp2;
    assert_int_equal(store_open(g_db, 0, &s, &e), 0);
    assert_int_equal(store_experiment_create(s, "x", "{\"rounds\": 5}", &exp, &e), 0);
    assert_int_equal(store_run_create(s, exp, 5, 1, 1, NULL, &run, &e), 0);
    store_checkpoint_t ck, got;
    int round;
    assert_int_equal(store_checkpoint_load(s, run, &got, &round, &e), FN_ENOTFOUND);
    float p1[3] = {1, 2, 3}, p2[3] = {4, 5, 6}, st[2] = {7, 8};
    store_round_t r1 = {.round = 1}, r2 = {.round = 2};
    ck = (store_checkpoint_t){p1, sizeof p1, st, sizeof st, "{\"steps\":1}"};
    assert_int_equal(store_round_commit(s, run, &r1, &ck, &e), 0);
    ck.params = p2;
    /* round 1 again: the round row fails, so the checkpoint must not move to p2 */
    assert_int_equal(store_round_commit(s, run, &r1, &ck, &e), FN_EIO);
    assert_int_equal(store_checkpoint_load(s, run, &got, &round, &e), 0);
    assert_int_equal(round, 1);
    assert_int_equal(got.params_len, sizeof p1);
    assert_memory_equal(got.params, p1, sizeof p1);
    assert_memory_equal(got.state, st, sizeof st);
    assert_string_equal(got.meta, "{\"steps\":1}");
    store_checkpoint_free(&got);
    assert_int_equal(store_round_commit(s, run, &r2, &ck, &e), 0);
    assert_int_equal(store_checkpoint_load(s, run, &got, &round, &e), 0);
    assert_int_equal(round, 2);
    assert_memory_equal(got.params, p2, sizeof p2);
    store_checkpoint_free(&got);

    char *cfg = NULL;
    assert_int_equal(store_run_finish(s, run, "failed", "killed", &e), 0);
    assert_int_equal(store_run_reopen(s, run, &cfg, &exp2, &e), 0);
    assert_string_equal(cfg, "{\"rounds\": 5}");
    assert_int_equal(exp2, exp);
    free(cfg);
    json_t *one;
    assert_int_equal(store_run_json(s, run, &one, &e), 0);
    assert_string_equal(json_string_value(json_object_get(one, "status")), "running");
    json_decref(one);
    assert_int_equal(store_run_finish(s, run, "done", NULL, &e), 0);
    assert_int_equal(store_run_reopen(s, run, &cfg, &exp2, &e), FN_ESTATE);
    assert_int_equal(store_run_reopen(s, 999, &cfg, &exp2, &e), FN_ENOTFOUND);
    store_close(s);
}

/* A round, its checkpoint and its metrics in one transaction (server/server.c round_commit): a
 * reader sees none of them until the end, a rolled-back one leaves nothing, and a failed round
 * commit inside it (a savepoint) leaves the transaction usable. */
static void test_round_and_metrics_in_one_transaction(void **state)
{
    store_t *s, *r;
    err_t e = {0};
    int64_t exp, run;
    assert_int_equal(store_open(g_db, 0, &s, &e), 0);
    assert_int_equal(store_experiment_create(s, "x", "{}", &exp, &e), 0);
    assert_int_equal(store_run_create(s, exp, 5, 1, 1, NULL, &run, &e), 0);
    assert_int_equal(store_open(g_db, 1, &r, &e), 0);
    float p1[3] = {1, 2, 3};
    store_checkpoint_t ck = {p1, sizeof p1, NULL, 0, "{}"}, got;
    store_round_t r1 = {.round = 1};
    json_t *rows;
    int round;

    assert_int_equal(store_tx_begin(s, &e), 0);
    assert_int_equal(store_round_commit(s, run, &r1, &ck, &e), 0);
    assert_int_equal(store_metric_insert(s, run, 1, "epsilon", 0.5, &e), 0);
    assert_int_equal(store_tx_end(s, 0, &e), 0); /* rolled back: nothing */
    assert_int_equal(store_checkpoint_load(s, run, &got, &round, &e), FN_ENOTFOUND);
    assert_int_equal(store_metrics_json(s, run, "epsilon", 0, &rows, &e), 0);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);

    assert_int_equal(store_tx_begin(s, &e), 0);
    assert_int_equal(store_round_commit(s, run, &r1, &ck, &e), 0);
    assert_int_equal(store_round_commit(s, run, &r1, &ck, &e), FN_EIO); /* duplicate: its savepoint only */
    assert_int_equal(store_metric_insert(s, run, 1, "epsilon", 0.5, &e), 0);
    assert_int_equal(store_rounds_json(r, run, 0, &rows, &e), 0); /* another reader: not yet */
    assert_int_equal(json_array_size(rows), 0);
    json_decref(rows);
    assert_int_equal(store_tx_end(s, 1, &e), 0);
    assert_int_equal(store_rounds_json(r, run, 0, &rows, &e), 0);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    assert_int_equal(store_metrics_json(r, run, "epsilon", 0, &rows, &e), 0);
    assert_int_equal(json_array_size(rows), 1);
    json_decref(rows);
    assert_int_equal(store_checkpoint_load(r, run, &got, &round, &e), 0);
    assert_int_equal(round, 1);
    store_checkpoint_free(&got);
    store_close(r);
    store_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_migrate_and_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_newer_schema_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs_rounds_clients_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_status_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_phase, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_commit_is_atomic_and_resumable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_and_metrics_in_one_transaction, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
