/* nas_test.h: the NAS tests' shared fixture: a search space parsed from a "nas" block written
 * inline (STRATEGY closes the block with a random strategy), failing the test with the parser's
 * message when the block is refused. Include after cmocka.h. */
#ifndef FEDNAS_TESTS_NAS_TEST_H
#define FEDNAS_TESTS_NAS_TEST_H

#include <jansson.h>

#include "nas/config.h"

static inline nas_space_t space_from(const char *json)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    assert_non_null(j);
    nas_config_t cfg;
    err_t e = {0};
    int rc = nas_config_parse(j, "test.json", json, "", 1, &cfg, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    json_decref(j);
    return cfg.space;
}

#define STRATEGY ",\"strategy\":{\"name\":\"random\"}}"

#endif
