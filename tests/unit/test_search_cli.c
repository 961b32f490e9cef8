/* cli/search_cli.c: the experiment's common part, the run in the store and the arguments that
 * `fednas nas` and `fednas tune` share. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/search_cli.h"

static const char *const k_known[] = {"name", "seed", "data", "train", NULL};

/* Loads text (copied) as "exp.json"; rc, with e freed unless keep. */
static int load(const char *text, cli_search_exp_t *e, err_t *err, int keep)
{
    int rc = cli_search_exp_load(e, "exp.json", strdup(text), k_known, "dflt", err);
    if (!keep)
        cli_search_exp_free(e);
    return rc;
}

static void test_defaults_and_data(void **state)
{
    (void)state;
    cli_search_exp_t e;
    err_t err = {0};
    assert_int_equal(load("{}", &e, &err, 1), 0);
    assert_string_equal(e.name, "dflt");
    assert_int_equal(e.seed, 1);
    assert_int_equal(e.data.val_size, 10000);
    assert_int_equal(e.data.split_seed, 42);
    assert_null(e.data.dir);
    cli_search_exp_free(&e);
    assert_int_equal(load("{\"name\": \"x\", \"seed\": 7, \"data\": {\"dataset\": \"mnist\", \"path\": \"/d\", "
                          "\"split_seed\": 5, \"validation\": 500, \"train_subset\": 100, \"val_subset\": 50, "
                          "\"test_subset\": 20}}",
                          &e, &err, 1),
                     0);
    assert_string_equal(e.name, "x");
    assert_int_equal(e.seed, 7);
    assert_string_equal(e.data.dir, "/d");
    assert_int_equal(e.data.split_seed, 5);
    assert_int_equal(e.data.val_size, 500);
    assert_int_equal(e.data.train_subset, 100);
    assert_int_equal(e.data.val_subset, 50);
    assert_int_equal(e.data.test_subset, 20);
    cli_search_exp_free(&e);
}

static void test_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"{\n  \"nmae\": 1\n}", "exp.json:2:3: nmae: unknown key"},
        {"{\n  \"seed\": -1\n}", "exp.json:2:11: seed: expected an integer >= 0"},
        {"{\n  \"data\": 3\n}", "exp.json:2:11: data: expected an object"},
        {"{\n  \"data\": {\"trainsubset\": 3}\n}", "data.trainsubset: unknown key"},
        {"{\n  \"data\": {\"train_subset\": 0}\n}", "exp.json:2:28: data.train_subset: expected an integer in [1, "},
        {"{\n  \"data\": {\"validation\": 60000}\n}", "data.validation: expected an integer in [1, 59999]"},
        {"{\n  \"data\": {\"dataset\": \"cifar10\"}\n}", "exp.json:2:23: data.dataset: searches and tuning run on"},
        {"{\n  \"data\": {\"path\": 1}\n}", "data.path: expected a directory name"},
        {"{\n  \"name\": \"x\",\n}", "exp.json:3:"},
        {"[1]", "exp.json:1:1: expected an experiment object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cli_search_exp_t e;
        err_t err = {0};
        assert_int_equal(load(cases[i].text, &e, &err, 0), FN_EINVAL);
        if (!strstr(err.msg, cases[i].want))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err.msg, cases[i].want);
    }
}

static void test_locate(void **state)
{
    (void)state;
    cli_search_exp_t e;
    err_t err = {0};
    assert_int_equal(load("{\n  \"train\": {\n    \"lr\": -1\n  }\n}", &e, &err, 1), 0);
    err_set(&err, FN_EINVAL, "train.lr: expected a number > 0");
    assert_int_equal(cli_search_locate(&e, &err), FN_EINVAL);
    assert_string_equal(err.msg, "exp.json:3:11: train.lr: expected a number > 0");
    err_set(&err, FN_EINVAL, "train.nothere: bad");
    cli_search_locate(&e, &err);
    assert_string_equal(err.msg, "exp.json: train.nothere: bad");
    cli_search_exp_free(&e);
}

static char *run_status(const char *db, int64_t run)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_open(db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(h, "SELECT status FROM runs WHERE id = ?", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_int64(st, 1, run);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char *s = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(h);
    return s;
}

static void test_runs(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_search_cli_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[256];
    snprintf(db, sizeof db, "%s/s.db", dir);
    err_t err = {0};
    cli_search_run_t r = {0}, t = {0};
    char *text = NULL;
    assert_int_equal(cli_search_resume(db, 1, 0, &r, &text, &err), FN_ENOTFOUND);
    assert_non_null(strstr(err.msg, "does not exist"));
    /* a search (run 1) and a tuning run (run 2) */
    r.nr = (store_nas_run_t){.strategy = "evolution", .split_seed = 9, .budget = 12, .workers = 2, .threads = 1, .device = "cpu"};
    if (cli_search_create(db, "s", "{\"nas\": {}}", 12, 2, 3, &r, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(r.run_id, 1);
    cli_search_finish(&r, FN_ESTATE, 1, NULL, &err);
    char *s = run_status(db, 1);
    assert_string_equal(s, "stopped");
    free(s);
    cli_search_close(&r);
    t.nr = (store_nas_run_t){.strategy = "tune:random+asha", .split_seed = 4, .budget = 5, .workers = 1, .threads = 1, .device = "cpu"};
    assert_int_equal(cli_search_create(db, "t", "{\"tune\": {}}", 5, 1, 3, &t, &err), 0);
    assert_int_equal(t.run_id, 2);
    cli_search_close(&t);
    /* each command resumes only its own kind of run, and says which command does the other */
    assert_int_equal(cli_search_resume(db, 2, 0, &r, &text, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "run 2 is a tuning run, not a `fednas nas` search: resume it with `fednas tune "
                                    "--resume 2`"));
    assert_null(text);
    cli_search_close(&r);
    assert_int_equal(cli_search_resume(db, 1, 1, &r, &text, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "`fednas nas --resume 1`"));
    cli_search_close(&r);
    assert_int_equal(cli_search_resume(db, 1, 0, &r, &text, &err), 0);
    assert_string_equal(text, "{\"nas\": {}}");
    assert_string_equal(r.source, "run 1");
    assert_int_equal(r.nr.split_seed, 9);
    assert_int_equal(r.exp_id, 1);
    free(text);
    cli_search_finish(&r, 0, 0, "all done", &err);
    s = run_status(db, 1);
    assert_string_equal(s, "done");
    free(s);
    cli_search_close(&r);
    assert_int_equal(cli_search_resume(db, 2, 1, &t, &text, &err), 0);
    free(text);
    cli_search_finish(&t, FN_EIO, 0, NULL, &err);
    s = run_status(db, 2);
    assert_string_equal(s, "failed");
    free(s);
    cli_search_close(&t);
    /* a run the store does not hold: the store and where to find the runs are named */
    assert_int_equal(cli_search_resume(db, 7, 0, &r, &text, &err), FN_ENOTFOUND);
    assert_non_null(strstr(err.msg, "run 7 is not a NAS search in run store "));
    assert_non_null(strstr(err.msg, "`fednas runs --db "));
    assert_null(text);
    cli_search_close(&r);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static int loader(void *ctx, const char *source, char *text, err_t *err)
{
    return cli_search_exp_load(ctx, source, text, k_known, "dflt", err);
}

static void test_open(void **state)
{
    (void)state;
    char dir[] = "/tmp/test_search_cli_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char db[256], file[256], bad[256];
    snprintf(db, sizeof db, "%s/s.db", dir);
    snprintf(file, sizeof file, "%s/exp.json", dir);
    snprintf(bad, sizeof bad, "%s/bad.json", dir);
    FILE *f = fopen(file, "w");
    fputs("{\"name\": \"e\", \"data\": {\"split_seed\": 5}}", f);
    fclose(f);
    f = fopen(bad, "w");
    fputs("{\"nmae\": 1}", f);
    fclose(f);
    err_t err = {0};
    cli_search_exp_t x;
    cli_search_run_t r = {0};
    /* a new run: the file's; a bad file is FN_EINVAL (exit status 2), a missing one is not */
    assert_int_equal(cli_search_open(file, db, 0, 0, loader, &x, &x, &r, &err), 0);
    assert_string_equal(x.name, "e");
    assert_int_equal(x.data.split_seed, 5);
    assert_null(r.st);
    r.nr = (store_nas_run_t){.strategy = "random", .split_seed = 77, .budget = 1, .workers = 1, .threads = 1,
                             .device = "cpu"};
    assert_int_equal(cli_search_create(db, x.name, x.text, 1, 1, 1, &r, &err), 0);
    cli_search_close(&r);
    cli_search_exp_free(&x);
    assert_int_equal(cli_search_open(bad, db, 0, 0, loader, &x, &x, &r, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "nmae: unknown key"));
    cli_search_exp_free(&x);
    assert_true(cli_search_open(file + 1, db, 0, 0, loader, &x, &x, &r, &err) < 0);
    /* resumed: the stored experiment, with the run's split seed */
    assert_int_equal(cli_search_open(NULL, db, 1, 0, loader, &x, &x, &r, &err), 0);
    assert_string_equal(x.source, "run 1");
    assert_int_equal(x.data.split_seed, 77);
    cli_search_exp_free(&x);
    cli_search_close(&r);
    assert_int_equal(cli_search_open(NULL, db, 1, 1, loader, &x, &x, &r, &err), FN_EINVAL);
    cli_search_close(&r);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_args(void **state)
{
    (void)state;
    char *argv[] = {"nas", "a.json", "b.json"};
    const char *path;
    assert_null(cli_search_args(2, argv, 1, 0, &path));
    assert_string_equal(path, "a.json");
    assert_string_equal(cli_search_args(3, argv, 1, 0, &path), "expected one EXPERIMENT file, got more");
    assert_string_equal(cli_search_args(1, argv, 1, 0, &path), "missing the EXPERIMENT file");
    assert_null(cli_search_args(1, argv, 1, 4, &path));
    assert_null(path);
    assert_non_null(strstr(cli_search_args(2, argv, 1, 4, &path), "takes no experiment file"));
    long long run = 0;
    assert_int_equal(cli_search_parse_run("12", &run), 0);
    assert_int_equal(run, 12);
    assert_int_equal(cli_search_parse_run("0", &run), -1);
    assert_int_equal(cli_search_parse_run("1x", &run), -1);
    assert_int_equal(cli_search_parse_run("-3", &run), -1);
    setenv("FEDNAS_THREADS", "3", 1);
    assert_int_equal(cli_search_threads(4), 3);
    unsetenv("FEDNAS_THREADS");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_int_equal(cli_search_threads(1), cores);
    assert_int_equal(cli_search_threads(100000), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_and_data), cmocka_unit_test(test_errors), cmocka_unit_test(test_locate),
        cmocka_unit_test(test_runs), cmocka_unit_test(test_open), cmocka_unit_test(test_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
