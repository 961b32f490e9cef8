/* Tabular partner-site data: the experiment's "data" block for CSV (common/config.h) and the
 * site's CSV checked against it (client/trainer.h), with errors that name the file, the line
 * and what the experiment expects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/trainer.h"
#include "common/config.h"

static config_t *load(const char *data_block, err_t *e)
{
    char text[1024];
    snprintf(text, sizeof text,
             "{\n  \"name\": \"t\", \"rounds\": 2,\n  \"data\": %s,\n  \"model\": {\"type\": \"softmax\"},\n"
             "  \"clients\": {\"count\": 2},\n  \"train\": {\"lr\": 0.1}\n}\n",
             data_block);
    config_t *c = NULL;
    config_load_string(text, "exp.json", &c, e);
    return c;
}

static void test_config_csv_block(void **state)
{
    (void)state;
    err_t e = {0};
    config_t *c = load("{\"dataset\": \"csv\", \"features\": 4, \"classes\": 3}", &e);
    assert_non_null(c);
    assert_true(c->data.csv);
    assert_int_equal(c->data.features, 4);
    assert_int_equal(c->data.classes, 3);
    assert_null(c->data.test);
    assert_string_equal(c->data.path, "");
    /* No test set on the server: federated evaluation on every site is implied. */
    assert_true(c->evaluate.enabled);
    assert_true(c->evaluate.clients_fraction == 1.0);
    config_free(c);

    c = load("{\"dataset\": \"csv\", \"features\": 4, \"classes\": 3, \"test\": \"t.csv\"}", &e);
    assert_non_null(c);
    assert_string_equal(c->data.test, "t.csv");
    assert_false(c->evaluate.enabled); /* the server measures on its test table */
    config_free(c);

    c = load("{\"dataset\": \"csv\", \"features\": 4, \"classes\": 3, \"test\": \"t.csv\", "
             "\"partition\": {\"scheme\": \"iid\"}}", &e);
    assert_non_null(c);
    config_free(c);
}

static void test_config_csv_errors(void **state)
{
    (void)state;
    static const struct {
        const char *block, *want;
    } cases[] = {
        {"{\"dataset\": \"csv\", \"classes\": 3}", "exp.json:3:11: data: missing required key \"features\""},
        {"{\"dataset\": \"csv\", \"features\": 4}", "exp.json:3:11: data: missing required key \"classes\""},
        {"{\"dataset\": \"csv\", \"features\": 0, \"classes\": 3}", "data.features: expected an integer in [1, 1048576] (got 0)"},
        {"{\"dataset\": \"csv\", \"features\": 4, \"classes\": 1}", "data.classes: expected an integer in [2, 256] (got 1)"},
        {"{\"dataset\": \"csv\", \"features\": 4, \"classes\": 300}", "data.classes: expected an integer in [2, 256] (got 300)"},
        {"{\"dataset\": \"csv\", \"features\": 4.5, \"classes\": 3}", "data.features: expected an integer"},
        {"{\"dataset\": \"csv\", \"features\": 4, \"classes\": 3, \"test\": 7}", "data.test: expected a non-empty string"},
        {"{\"features\": 4}", "data.features: applies only to \"dataset\": \"csv\""},
        {"{\"dataset\": \"mnist\", \"test\": \"x.csv\"}", "data.test: applies only to \"dataset\": \"csv\""},
        {"{\"dataset\": \"tsv\"}", "data.dataset: expected one of: fashion-mnist, mnist, csv (got \"tsv\")"},
        {"{\"dataset\": \"csv\", \"features\": 4, \"classes\": 3, \"label\": 0}", "data.label: unknown key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err_t e = {0};
        config_t *c = load(cases[i].block, &e);
        if (c || !strstr(e.msg, cases[i].want))
            fail_msg("case %zu (%s): expected an error containing \"%s\", got \"%s\"", i, cases[i].block,
                     cases[i].want, c ? "(loaded)" : e.msg);
        assert_int_equal(e.code, FN_EINVAL);
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_site_csv_checked_against_experiment(void **state)
{
    (void)state;
    char dir[] = "/tmp/fednas-site-data-XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/site.csv", dir);
    /* A header, then rows with a blank line in between: line numbers must count both. */
    write_file(path, "age,bmi,bp,label\n"
                     "0.5,1.5,2.5,0\n"
                     "\n"
                     "1.5,2.5,3.5,1\n"
                     "2.5,3.5,4.5,2\n"
                     "3.5,4.5,5.5,1\n");
    trainer_data_t d;
    err_t e = {0};
    assert_int_equal(trainer_data_load(&d, path, &e), 0);
    assert_true(d.csv);
    assert_int_equal(d.src.count, 4);
    assert_int_equal(d.first_line, 2);
    assert_int_equal(trainer_data_check(&d, 3, 3, &e), 0);
    assert_int_equal(trainer_data_check(&d, 3, 5, &e), 0);

    /* Four features expected, three in the file: names the file, the first data line, both counts. */
    assert_int_equal(trainer_data_check(&d, 4, 3, &e), FN_EINVAL);
    char want[512];
    snprintf(want, sizeof want, "%s:2: 4 columns (3 features and the label), but the experiment's model takes 4 features", path);
    if (!strstr(e.msg, want))
        fail_msg("got \"%s\"", e.msg);

    /* Two classes: the label 2 on line 5 is out of range. */
    assert_int_equal(trainer_data_check(&d, 3, 2, &e), FN_EINVAL);
    snprintf(want, sizeof want, "%s:5: label 2 is out of range: the experiment has 2 classes (data.classes), so labels must be integers 0..1", path);
    if (!strstr(e.msg, want))
        fail_msg("got \"%s\"", e.msg);
    trainer_data_free(&d);

    /* Without a header the first data line is line 1. */
    write_file(path, "1,2,0\n3,4,7\n");
    assert_int_equal(trainer_data_load(&d, path, &e), 0);
    assert_int_equal(d.first_line, 1);
    assert_int_equal(trainer_data_check(&d, 2, 5, &e), FN_EINVAL);
    snprintf(want, sizeof want, "%s:2: label 7 is out of range", path);
    if (!strstr(e.msg, want))
        fail_msg("got \"%s\"", e.msg);
    trainer_data_free(&d);

    /* A ragged file is the engine's error, with the line; a missing one names the path. */
    write_file(path, "1,2,0\n3,4\n");
    assert_int_equal(trainer_data_load(&d, path, &e), FN_EINVAL);
    snprintf(want, sizeof want, "%s:2:", path);
    assert_non_null(strstr(e.msg, want));
    unlink(path);
    assert_int_equal(trainer_data_load(&d, path, &e), FN_ENOTFOUND);
    assert_non_null(strstr(e.msg, path));
    assert_int_equal(trainer_data_load(&d, "", &e), FN_EINVAL);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_csv_block),
        cmocka_unit_test(test_config_csv_errors),
        cmocka_unit_test(test_site_csv_checked_against_experiment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
