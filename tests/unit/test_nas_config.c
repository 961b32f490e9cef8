/* nas/config: the experiment's "nas" block: a full block read into the struct, defaults, and
 * bad blocks refused with "FILE:LINE:COL: path: message" pointing at the offending value or key
 * (positions checked against where the text actually is). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "nas/config.h"
#include "nas/genome.h"

static const char *k_head = "{\n  \"name\": \"n\",\n  \"seed\": 7,\n  \"rounds\": 1,\n"
                            "  \"data\": {\"dataset\": \"fashion-mnist\"},\n  \"model\": {\"type\": \"mlp\"},\n"
                            "  \"clients\": {\"count\": 1},\n  \"train\": {\"lr\": 0.1},\n  \"nas\": ";

/* Loads HEAD + nas + "\n}" as exp.json and parses its nas block; returns the rc. */
static int load(const char *nas, char *text, size_t cap, nas_config_t *out, err_t *e)
{
    snprintf(text, cap, "%s%s\n}\n", k_head, nas);
    config_t *c = NULL;
    int rc = config_load_string(text, "exp.json", &c, e);
    if (rc)
        return rc;
    assert_non_null(c->nas);
    rc = nas_config_parse(c->nas, c->source, c->text, "nas", c->seed, out, e);
    config_free(c);
    return rc;
}

static void test_full_block(void **state)
{
    (void)state;
    char text[4096];
    nas_config_t cfg;
    err_t e = {0};
    int rc = load("{\n    \"space\": {\"type\": \"macro\", \"layers\": 5, \"ops\": [\"conv3x3\", \"sepconv5x5\", "
                  "\"identity\"],\n      \"widths\": [8, 16], \"batchnorm\": \"search\", \"reductions\": 3},\n"
                  "    \"strategy\": {\"name\": \"nsga2\", \"mu\": 8, \"lambda\": 6, \"objectives\": [\"val_acc\", "
                  "\"flops\", \"latency\"], \"crossover\": 0.25},\n"
                  "    \"budget\": 64, \"epochs\": 3, \"workers\": 2, \"retries\": 0, \"seed\": 11, \"top_k\": 2,\n"
                  "    \"retrain_epochs\": 20, \"batch_size\": 128, \"lr\": 0.1, \"evaluation\": \"weight_sharing\", "
                  "\"device\": \"cpu\"\n  }",
                  text, sizeof text, &cfg, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.space.kind, NAS_SPACE_MACRO);
    assert_int_equal(cfg.space.layers, 5);
    assert_int_equal(cfg.space.nops, 3);
    assert_int_equal(cfg.space.ops[1], NAS_OP_SEP5);
    assert_int_equal(cfg.space.nwidths, 2);
    assert_int_equal(cfg.space.widths[1], 16);
    assert_int_equal(cfg.space.batchnorm, NAS_BN_SEARCH);
    assert_int_equal(cfg.space.reductions, 3);
    assert_int_equal(cfg.space.in_h, 28);
    assert_int_equal(cfg.space.classes, 10);
    assert_int_equal(cfg.strategy.kind, NAS_STRATEGY_NSGA2);
    assert_int_equal(cfg.strategy.mu, 8);
    assert_int_equal(cfg.strategy.lambda, 6);
    assert_int_equal(cfg.strategy.nobjectives, 3);
    assert_int_equal(cfg.strategy.objectives[2], NAS_OBJ_LATENCY);
    assert_float_equal(cfg.strategy.crossover, 0.25, 0);
    assert_int_equal(cfg.budget, 64);
    assert_int_equal(cfg.epochs, 3);
    assert_int_equal(cfg.workers, 2);
    assert_int_equal(cfg.retries, 0);
    assert_int_equal(cfg.seed, 11);
    assert_int_equal(cfg.top_k, 2);
    assert_int_equal(cfg.retrain_epochs, 20);
    assert_int_equal(cfg.batch_size, 128);
    assert_float_equal(cfg.lr, 0.1, 0);
    assert_int_equal(cfg.evaluation, NAS_EVAL_WEIGHT_SHARING);
    assert_string_equal(cfg.device, "cpu");

    /* defaults: the experiment's seed, a NAS-Bench-201 cell space */
    rc = load("{\"space\": {\"type\": \"cell\"}, \"strategy\": {\"name\": \"asha\"}}", text, sizeof text, &cfg, &e);
    assert_int_equal(rc, 0);
    assert_int_equal(cfg.seed, 7);
    assert_int_equal(cfg.space.nedge_ops, 5);
    assert_int_equal(cfg.space.cells[0], 5);
    assert_int_equal(cfg.space.widths[0], 16);
    assert_int_equal(cfg.space.stages, 3);
    assert_int_equal(cfg.strategy.r, 1);
    assert_int_equal(cfg.strategy.eta, 3);
    assert_int_equal(cfg.strategy.max_epochs, 9);
    /* fractional budgets: a quarter-epoch proxy, ASHA rungs from 0.25 epochs */
    {
        const char *t = "{\"space\": {\"type\": \"cell\"}, \"strategy\": {\"name\": \"asha\", \"r\": 0.25}, "
                        "\"epochs\": 0.25}";
        json_t *jf = json_loads(t, 0, NULL);
        nas_config_t cf;
        err_t ef = {0};
        assert_int_equal(nas_config_parse(jf, "f.json", t, "nas", 1, &cf, &ef), 0);
        assert_true(cf.epochs == 0.25 && cf.strategy.r == 0.25 && cf.strategy.max_epochs == 2.25);
        json_decref(jf);
    }
    assert_int_equal(cfg.evaluation, NAS_EVAL_STANDALONE);

    /* an experiment without a search has no block */
    config_t *c = NULL;
    snprintf(text, sizeof text, "%s{}\n}\n", k_head);
    char *cut = strstr(text, ",\n  \"nas\"");
    strcpy(cut, "\n}\n");
    assert_int_equal(config_load_string(text, "exp.json", &c, &e), 0);
    assert_null(c->nas);
    config_free(c);
}

typedef struct {
    const char *nas;    /* the block */
    const char *needle; /* where the error must point (first occurrence inside the block) */
    const char *path_and_msg;
} bad_t;

static void test_bad_blocks(void **state)
{
    (void)state;
    static const bad_t bad[] = {
        {"{\n    \"space\": {\"type\": \"macro\", \"widths\": []},\n    \"strategy\": {\"name\": \"random\"}\n  }", "[]",
         "nas.space.widths: expected a non-empty array of at most 16 integers in [1, 4096]"},
        {"{\n    \"space\": {\"type\": \"macro\", \"widths\": [8, 0]},\n    \"strategy\": {\"name\": \"random\"}\n  }",
         "0]", "nas.space.widths[1]: expected an integer in [1, 4096]"},
        {"{\n    \"space\": {\"type\": \"macro\"},\n    \"strategy\": {\"name\": \"evolution\",\n      \"populaton\": 5}\n  }",
         "\"populaton\"", "nas.strategy.populaton: unknown key (expected one of: name, population, sample)"},
        {"{\n    \"space\": {\"type\": \"macro\", \"ops\": [\"conv3x3\", \"conv7x7\"]},\n    \"strategy\": {\"name\": \"random\"}\n  }",
         "\"conv7x7\"", "nas.space.ops[1]: expected one of: conv3x3, conv5x5, sepconv3x3"},
        {"{\n    \"space\": {\"type\": \"cell\"},\n    \"strategy\": {\"name\": \"bayes\"}\n  }", "\"bayes\"",
         "nas.strategy.name: expected one of: random, evolution, nsga2, asha (got \"bayes\")"},
        {"{\n    \"strategy\": {\"name\": \"random\"}\n  }", "{", "nas: missing required key \"space\""},
        {"{\"space\": {\"type\": \"cell\"}, \"strategy\": {\"name\": \"random\"},\n    \"evaluation\": \"supernet\"}",
         "\"supernet\"", "nas.evaluation: expected one of: standalone, weight_sharing"},
        {"{\"space\": {\"type\": \"macro\", \"layers\": 10, \"reductions\": 5}, \"strategy\": {\"name\": \"random\"}}",
         "5}", "nas.space.reductions: expected an integer in [0, 4] (got 5)"},
        {"{\"space\": {\"type\": \"cell\"}, \"strategy\": {\"name\": \"nsga2\", \"objectives\": [\"val_acc\"]}}",
         "[\"val_acc\"]", "nas.strategy.objectives: expected at least two objectives"},
        {"{\"space\": {\"type\": \"cell\"}, \"strategy\": {\"name\": \"random\"}, \"budjet\": 5}", "\"budjet\"",
         "nas.budjet: unknown key"},
        {"{\"space\": {\"type\": \"cell\", \"ops\": [\"none\"]}, \"strategy\": {\"name\": \"random\"}}", "[\"none\"]",
         "nas.space.ops: expected at least one operation besides \"none\""},
        {"{\"space\": {\"type\": \"cell\"}, \"strategy\": {\"name\": \"evolution\", \"population\": 4, \"sample\": 5}}",
         "5}", "nas.strategy.sample: expected an integer in [1, 4]"},
        {"{\"space\": {\"type\": \"cell\", \"widths\": [16, 16]}, \"strategy\": {\"name\": \"random\"}}", "16]",
         "nas.space.widths[1]: 16 appears twice"},
        {"{\"space\": {\"type\": \"cell\"}, \"strategy\": {\"name\": \"random\"}, \"lr\": -1}", "-1",
         "nas.lr: expected a number > 0"},
        {"{\"space\": {\"type\": \"cell\"}, \"strategy\": {\"name\": \"random\"}, \"epochs\": 0}", "0}",
         "nas.epochs: expected a number > 0"},
        {"{\"space\": {\"type\": \"cell\"}, \"strategy\": {\"name\": \"asha\", \"r\": 0.5, \"max_epochs\": 0.25}}",
         "0.25", "nas.strategy.max_epochs: expected a number >= 0.5"},
    };
    char text[4096];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        nas_config_t cfg;
        err_t e = {0};
        int rc = load(bad[i].nas, text, sizeof text, &cfg, &e);
        assert_int_equal(rc, FN_EINVAL);
        /* the expected position: the needle's line and column in the whole file */
        const char *block = text + strlen(k_head), *at = strstr(block, bad[i].needle);
        assert_non_null(at);
        int line = 1, col = 1;
        for (const char *p = text; p < at; p++) {
            if (*p == '\n') {
                line++;
                col = 1;
            } else {
                col++;
            }
        }
        char want[512];
        snprintf(want, sizeof want, "exp.json:%d:%d: %s", line, col, bad[i].path_and_msg);
        if (i < 3)
            print_message("%s\n", e.msg);
        if (strncmp(e.msg, want, strlen(want)) != 0)
            print_error("case %zu:\n  got  %s\n  want %s...\n", i, e.msg, want);
        assert_int_equal(strncmp(e.msg, want, strlen(want)), 0);
    }
    /* not an object at all: refused by the experiment loader */
    config_t *c = NULL;
    err_t e = {0};
    snprintf(text, sizeof text, "%s5\n}\n", k_head);
    assert_int_equal(config_load_string(text, "exp.json", &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "nas: expected an object"));
}

static void test_names(void **state)
{
    (void)state;
    for (int op = 0; op < NAS_MACRO_OP_COUNT; op++)
        assert_int_equal(nas_macro_op_from_name(nas_macro_op_name((nas_macro_op_t)op)), op);
    for (int op = 0; op < NAS_EDGE_OP_COUNT; op++)
        assert_int_equal(nas_edge_op_from_name(nas_edge_op_name((nas_edge_op_t)op)), op);
    assert_null(nas_macro_op_name(NAS_MACRO_OP_COUNT));
    assert_int_equal(nas_edge_op_from_name("conv5x5"), -1);
    assert_string_equal(nas_strategy_name(NAS_STRATEGY_ASHA), "asha");
    assert_string_equal(nas_objective_name(NAS_OBJ_FLOPS), "flops");
}

/* The ready searches in experiments/: their blocks parse, and their spaces draw genomes that
 * build on the engine. */
static void test_ready_configs(void **state)
{
    (void)state;
    const char *files[] = {"nas-re-macro.json", "nas-random-macro.json", "nas-nsga2-macro.json", "nas-re-cell.json"};
    const nas_strategy_kind_t kinds[] = {NAS_STRATEGY_EVOLUTION, NAS_STRATEGY_RANDOM, NAS_STRATEGY_NSGA2,
                                         NAS_STRATEGY_EVOLUTION};
    for (int i = 0; i < 4; i++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/experiments/%s", FEDNAS_SOURCE_DIR, files[i]);
        json_error_t je;
        json_t *root = json_load_file(path, 0, &je);
        assert_non_null(root);
        nas_config_t cfg;
        err_t e = {0};
        int rc = nas_config_parse(json_object_get(root, "nas"), files[i], NULL, "nas", 1, &cfg, &e);
        if (rc)
            print_error("%s\n", e.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(cfg.strategy.kind, kinds[i]);
        rng_t r;
        rng_seed(&r, (uint64_t)i);
        for (int k = 0; k < 20; k++) {
            nas_genome_t g;
            double params, flops;
            assert_int_equal(nas_genome_random(&cfg.space, &r, &g, &e), 0);
            rc = nas_genome_cost(&cfg.space, &g, &params, &flops, &e);
            if (rc)
                print_error("%s\n", e.msg);
            assert_int_equal(rc, 0);
        }
        if (cfg.space.kind == NAS_SPACE_MACRO) {
            /* the largest candidate: every layer a 5x5 conv (the most weights of any op) at the
             * widest width with batch norm (2 parameters a channel, one more than a bias) */
            nas_genome_t big = {.kind = NAS_SPACE_MACRO, .nlayers = cfg.space.layers};
            int wmax = 0;
            for (int k = 0; k < cfg.space.nwidths; k++)
                wmax = cfg.space.widths[k] > wmax ? cfg.space.widths[k] : wmax;
            for (int k = 0; k < cfg.space.layers; k++)
                big.layer[k] = (nas_macro_layer_t){NAS_OP_CONV5, wmax, 1, k < cfg.space.reductions};
            double params, flops;
            assert_int_equal(nas_genome_cost(&cfg.space, &big, &params, &flops, &e), 0);
            print_message("%s: largest candidate %.0f parameters\n", files[i], params);
            assert_true(params <= 100000); /* the <= 100k space of specs/nas.md's hypervolume */
        }
        json_decref(root);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_block),
        cmocka_unit_test(test_bad_blocks),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_ready_configs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
