/* common/features.h: every rule fires on its pair, with its message and the key it points at;
 * compatible combinations pass; the experiment loader applies the same table. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/config.h"
#include "common/features.h"

static void expect_broken(const features_t *f, const char *want_path, const char *want_text)
{
    err_t e;
    const char *path = NULL;
    assert_int_equal(features_check(f, &path, &e), FN_EINVAL);
    assert_non_null(path);
    assert_string_equal(path, want_path);
    if (!strstr(e.msg, want_text))
        fail_msg("\"%s\" lacks \"%s\"", e.msg, want_text);
}

static void test_each_rule(void **state)
{
    (void)state;
    features_t f = {.dp = 1, .robust = 1, .strategy = "median"};
    expect_broken(&f, "strategy.name", "strategy median cannot be combined with differential privacy");
    f = (features_t){.secagg = 1, .robust = 1, .strategy = "krum"};
    expect_broken(&f, "secure_aggregation", "strategy krum cannot be combined with secure aggregation");
    f = (features_t){.secagg = 1, .compression = 1};
    expect_broken(&f, "compression", "cannot be combined with secure aggregation (masked inputs");
    f = (features_t){.secagg = 1, .dp = 1, .dp_adaptive = 1, .dp_clip = 1, .secagg_clip = 1};
    expect_broken(&f, "dp.adaptive", "adaptive clipping cannot be combined with secure aggregation");
    f = (features_t){.secagg = 1, .dp = 1, .dp_clip = 1, .secagg_clip = 2};
    expect_broken(&f, "secure_aggregation.clip", "clipped once, to dp.clip (1)");
    f = (features_t){.batchnorm = 1, .dp = 1};
    expect_broken(&f, "model", "batch norm cannot be combined with differential privacy");
    f = (features_t){.batchnorm = 1, .secagg = 1};
    expect_broken(&f, "model", "batch norm cannot be combined with secure aggregation");
    f = (features_t){.relay = 1, .secagg = 1, .robust = 1, .strategy = "median"};
    expect_broken(&f, "secure_aggregation", "a relay cannot honour");
    f = (features_t){.relay = 1, .dp = 1};
    expect_broken(&f, "dp", "clipping and accounting are per site");
    f = (features_t){.relay = 1, .robust = 1, .strategy = "trimmed_mean"};
    expect_broken(&f, "strategy.name", "strategy trimmed_mean needs every client's own update");
}

static void test_compatible(void **state)
{
    (void)state;
    err_t e;
    const features_t ok[] = {
        {0},
        {.dp = 1, .dp_adaptive = 1, .compression = 1, .dp_clip = 1},
        {.secagg = 1, .dp = 1, .dp_clip = 0.5, .secagg_clip = 0.5},
        {.robust = 1, .strategy = "median", .compression = 1, .batchnorm = 1},
        {.relay = 1, .compression = 1, .batchnorm = 1},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_int_equal(features_check(&ok[i], NULL, &e), 0);
}

/* The loader asks the same table: its error points at the key in the file. */
static void test_config_uses_rules(void **state)
{
    (void)state;
    config_t *c;
    err_t e;
    const char *text = "{\"name\": \"x\", \"rounds\": 1, \"model\": {\"type\": \"softmax\"}, \"data\": {},\n"
                       " \"clients\": {\"count\": 3}, \"train\": {\"epochs\": 1, \"lr\": 0.1},\n"
                       " \"secure_aggregation\": {\"mode\": \"secagg\", \"clip\": 1},\n"
                       " \"compression\": {\"quantize\": 8}}";
    assert_int_equal(config_load_string(text, "exp.json", &c, &e), FN_EINVAL);
    if (!strstr(e.msg, "exp.json:4:") || !strstr(e.msg, "compression") ||
        !strstr(e.msg, "cannot be combined with secure aggregation"))
        fail_msg("unexpected error: %s", e.msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_rule),
        cmocka_unit_test(test_compatible),
        cmocka_unit_test(test_config_uses_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
