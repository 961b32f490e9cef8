/* The experiment loader: good files load with defaults filled in; every kind of bad file is
 * refused with a message naming the file, line, column and key path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/jsonpos.h"

static const char *k_good =
    "{\n"
    "  \"name\": \"t\",\n"
    "  \"rounds\": 3,\n"
    "  \"data\": {\"partition\": {\"scheme\": \"dirichlet\", \"alpha\": 0.3}},\n"
    "  \"model\": {\"type\": \"mlp\", \"hidden\": [64]},\n"
    "  \"clients\": {\"count\": 4, \"min_fit\": 3},\n"
    "  \"train\": {\"lr\": 0.1}\n"
    "}\n";

static void test_good_file_and_defaults(void **state)
{
    config_t *c;
    err_t e = {0};
    assert_int_equal(config_load_string(k_good, "good.json", &c, &e), 0);
    assert_string_equal(c->name, "t");
    assert_int_equal(c->rounds, 3);
    assert_int_equal(c->data.partition, CONFIG_PARTITION_DIRICHLET);
    assert_true(c->data.alpha > 0.29 && c->data.alpha < 0.31);
    assert_int_equal(c->data.min_size, 10);
    assert_string_equal(c->data.path, CONFIG_DEFAULT_DATA_PATH);
    assert_int_equal(c->clients.count, 4);
    assert_int_equal(c->clients.min_fit, 3);
    assert_int_equal(c->train.epochs, 1);
    assert_int_equal(c->train.batch_size, 32);
    assert_int_equal((int)c->seed, 1);
    assert_true(c->server.round_timeout > 0);
    config_free(c);
}

static void test_quickstart_file_loads(void **state)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/experiments/quickstart.json", FEDNAS_SOURCE_DIR);
    config_t *c;
    err_t e = {0};
    int rc = config_load_file(path, &c, &e);
    if (rc != 0)
        fail_msg("%s", e.msg);
    assert_int_equal(c->clients.count, 8);
    assert_int_equal(c->rounds, 10);
    config_free(c);
}

/* Replaces the first occurrence of `from` in the good file by `to` and expects an error
 * containing each of the given fragments. */
static void expect_error(const char *from, const char *to, const char *frag1, const char *frag2)
{
    char text[2048];
    const char *at = strstr(k_good, from);
    assert_non_null(at);
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - k_good), k_good, to, at + strlen(from));
    config_t *c = NULL;
    err_t e = {0};
    assert_int_equal(config_load_string(text, "bad.json", &c, &e), FN_EINVAL);
    assert_null(c);
    if (!strstr(e.msg, frag1) || (frag2 && !strstr(e.msg, frag2)))
        fail_msg("message \"%s\" lacks \"%s\" / \"%s\"", e.msg, frag1, frag2 ? frag2 : "");
}

static void test_bad_values_name_path_line_column(void **state)
{
    expect_error("\"count\": 4", "\"count\": 0", "bad.json:6:24: clients.count", "expected an integer");
    expect_error("\"rounds\": 3", "\"rounds\": \"3\"", "bad.json:3:13: rounds", "got a string");
    expect_error("\"lr\": 0.1", "\"lr\": -1", "train.lr", "expected a number > 0");
    expect_error("\"alpha\": 0.3", "\"alpha\": 0", "data.partition.alpha", NULL);
    expect_error("\"dirichlet\"", "\"zipf\"", "data.partition.scheme", "iid, dirichlet");
    expect_error("\"min_fit\": 3", "\"min_fit\": 5", "clients.min_fit", "[1, 4]");
}

static void test_unknown_and_missing_keys(void **state)
{
    expect_error("\"rounds\": 3", "\"round\": 3", "bad.json:3:3: round: unknown key", "rounds");
    expect_error("\"min_fit\": 3", "\"min_fit\": 3, \"max\": 9", "clients.max: unknown key", "per_round");
    expect_error("\"train\": {\"lr\": 0.1}", "\"train\": {\"epochs\": 1}", "train: missing required key \"lr\"",
                 NULL);
    expect_error("\"model\": {\"type\": \"mlp\",", "\"model\": {", "model: missing required key \"type\"", NULL);
}

/* A search ("nas") needs no "model": its candidates are the models. Without one, "model" is required. */
static void test_model_optional_with_nas(void **state)
{
    (void)state;
    char text[2048];
    const char *from = "  \"model\": {\"type\": \"mlp\", \"hidden\": [64]},\n";
    const char *at = strstr(k_good, from);
    assert_non_null(at);
    snprintf(text, sizeof text, "%.*s  \"nas\": {},\n%s", (int)(at - k_good), k_good, at + strlen(from));
    config_t *c = NULL;
    err_t e = {0};
    assert_int_equal(config_load_string(text, "nas.json", &c, &e), 0);
    assert_null(c->model);
    assert_non_null(c->nas);
    config_free(c);
    expect_error(from, "", "missing required key \"model\"", NULL);
}

static void test_malformed_json(void **state)
{
    config_t *c;
    err_t e = {0};
    assert_int_equal(config_load_string("{\n  \"name\": \"x\",\n  \"rounds\": }", "m.json", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "m.json:3:"));
    assert_non_null(strstr(e.msg, "invalid JSON"));
    assert_int_equal(config_load_string("[1,2]", "a.json", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "must be a JSON object"));
    assert_int_equal(config_load_string("{\"name\":\"a\",\"name\":\"b\"}", "d.json", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "duplicate"));
    assert_int_equal(config_load_file("/nonexistent/x.json", &c, &e), FN_ENOTFOUND);
    assert_non_null(strstr(e.msg, "/nonexistent/x.json"));
}

/* A key holding '.' reads like a nested path: "a.b" names the nested value when there is one
 * (found by fuzz_config: it pointed at the dotted key), and the dotted key only otherwise. */
static void test_locate_dotted_keys(void **state)
{
    (void)state;
    int line = 0, col = 0;
    const char *both = "{\"a.b\": 1,\n \"a\": {\"b\": 2}}";
    assert_int_equal(jsonpos_locate(both, "a.b", 0, &line, &col), 0);
    assert_int_equal(line, 2);
    assert_int_equal(col, 13);
    const char *dotted = "{\"x\": 0, \"a.b\": 1}";
    assert_int_equal(jsonpos_locate(dotted, "a.b", 0, &line, &col), 0);
    assert_int_equal(line, 1);
    assert_int_equal(col, 17);
    assert_int_equal(jsonpos_locate(dotted, "a.c", 0, &line, &col), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_file_and_defaults),
        cmocka_unit_test(test_quickstart_file_loads),
        cmocka_unit_test(test_bad_values_name_path_line_column),
        cmocka_unit_test(test_unknown_and_missing_keys),
        cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_model_optional_with_nas),
        cmocka_unit_test(test_locate_dotted_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
