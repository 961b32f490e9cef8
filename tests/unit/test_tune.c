/* nas/tune: the "tune" block (defaults from the train block, bad blocks refused with
 * "FILE:LINE:COL: path: message"), recipes (canonical JSON, hash, the train block they make,
 * which the engine accepts), and the strategy (deterministic in its seed, ASHA promotes the top
 * 1/eta of a rung and never a failure, evolution mutates one parameter of a population member). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "engine/optim.h"
#include "engine/schedule.h"
#include "nas/tune.h"
#include "nas/worker.h"

static const char *k_train = "{\"epochs\": 10, \"batch_size\": 64, \"lr\": 0.01, \"optimizer\": {\"type\": \"sgd\", "
                             "\"momentum\": 0.9}}";

/* Parses {"train": TRAIN, "tune": TUNE} laid out on lines as a file would be; rc. */
static int load(const char *tune, const char *train, nas_tune_config_t *out, err_t *e, char *text, size_t cap)
{
    snprintf(text, cap, "{\n  \"train\": %s,\n  \"tune\": %s\n}\n", train ? train : k_train, tune);
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    assert_non_null(root);
    int rc = nas_tune_config_parse(json_object_get(root, "tune"), json_object_get(root, "train"), "exp.json", text, "tune",
                               42, out, e);
    json_decref(root);
    return rc;
}

static void test_defaults(void **state)
{
    (void)state;
    nas_tune_config_t c;
    err_t e = {0};
    char text[2048];
    assert_int_equal(load("{}", NULL, &c, &e, text, sizeof text), 0);
    assert_int_equal(c.trials, 20);
    assert_int_equal(c.workers, 1);
    assert_int_equal(c.seed, 42);
    assert_int_equal(c.sampler, NAS_TUNE_SAMPLER_RANDOM);
    assert_true(c.asha);
    assert_int_equal(c.eta, 3);
    assert_int_equal(c.nrungs, 3); /* 10/9, 10/3, 10 */
    assert_true(fabs(c.rungs[0] - 1.111) < 1e-9);
    assert_true(fabs(c.rungs[1] - 3.333) < 1e-9);
    assert_true(c.rungs[2] == 10);
    const nas_tune_dom_t *lr = &c.space[NAS_TUNE_P_LR];
    assert_int_equal(lr->kind, NAS_TUNE_DOM_LOG_UNIFORM);
    assert_true(fabs(lr->lo - 0.001) < 1e-12 && fabs(lr->hi - 0.1) < 1e-12);
    const nas_tune_dom_t *bs = &c.space[NAS_TUNE_P_BATCH_SIZE];
    assert_int_equal(bs->kind, NAS_TUNE_DOM_CHOICE);
    assert_int_equal(bs->n, 3);
    assert_true(bs->choice[0] == 32 && bs->choice[1] == 64 && bs->choice[2] == 128);
    assert_int_equal(c.space[NAS_TUNE_P_OPTIMIZER].kind, NAS_TUNE_DOM_FIXED);
    assert_true(c.space[NAS_TUNE_P_OPTIMIZER].choice[0] == ENGINE_OPTIM_SGD);
    assert_int_equal(c.space[NAS_TUNE_P_LABEL_SMOOTHING].kind, NAS_TUNE_DOM_FIXED);
    /* no tune block at all: the same defaults */
    nas_tune_config_t d;
    json_t *tr = json_loads(k_train, 0, NULL);
    assert_int_equal(nas_tune_config_parse(NULL, tr, "exp.json", NULL, "tune", 42, &d, &e), 0);
    json_decref(tr);
    assert_memory_equal(&c, &d, sizeof c);
}

static void test_full_block(void **state)
{
    (void)state;
    nas_tune_config_t c;
    err_t e = {0};
    char text[4096];
    int rc = load("{\"trials\": 12, \"workers\": 3, \"retries\": 0, \"seed\": 5, \"enqueue_default\": true,\n"
                  "    \"baseline\": false, \"sampler\": {\"type\": \"evolution\", \"population\": 6, \"sample\": 2},\n"
                  "    \"early_stopping\": {\"type\": \"asha\", \"eta\": 2, \"min_epochs\": 2.5},\n"
                  "    \"space\": {\"lr\": {\"uniform\": [0.01, 0.05]}, \"batch_size\": [16, 32], \"optimizer\": [\"sgd\", \"adamw\"],\n"
                  "      \"momentum\": 0.9, \"nesterov\": true, \"weight_decay\": {\"log_uniform\": [1e-6, 1e-3]},\n"
                  "      \"schedule\": [\"cosine\", \"step\"], \"warmup\": [0, 2], \"label_smoothing\": [0, 0.1],\n"
                  "      \"accumulate\": 1, \"precision\": \"fp32\"}}",
                  NULL, &c, &e, text, sizeof text);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(c.trials, 12);
    assert_int_equal(c.workers, 3);
    assert_int_equal(c.retries, 0);
    assert_int_equal(c.seed, 5);
    assert_true(c.enqueue_default && !c.baseline);
    assert_int_equal(c.sampler, NAS_TUNE_SAMPLER_EVOLUTION);
    assert_int_equal(c.population, 6);
    assert_int_equal(c.sample, 2);
    assert_int_equal(c.eta, 2);
    assert_int_equal(c.nrungs, 3); /* 2.5, 5, 10 */
    assert_true(c.rungs[0] == 2.5 && c.rungs[1] == 5 && c.rungs[2] == 10);
    assert_int_equal(c.space[NAS_TUNE_P_LR].kind, NAS_TUNE_DOM_UNIFORM);
    assert_int_equal(c.space[NAS_TUNE_P_OPTIMIZER].n, 2);
    assert_true(c.space[NAS_TUNE_P_OPTIMIZER].choice[1] == ENGINE_OPTIM_ADAMW);
    assert_int_equal(c.space[NAS_TUNE_P_MOMENTUM].kind, NAS_TUNE_DOM_FIXED);
    assert_int_equal(c.space[NAS_TUNE_P_WEIGHT_DECAY].kind, NAS_TUNE_DOM_LOG_UNIFORM);
    assert_true(c.space[NAS_TUNE_P_SCHEDULE].choice[1] == ENGINE_SCHED_STEP);
    /* no early stopping: one rung, the whole budget */
    assert_int_equal(load("{\"early_stopping\": \"none\"}", NULL, &c, &e, text, sizeof text), 0);
    assert_int_equal(c.nrungs, 1);
    assert_true(c.rungs[0] == 10);
}

/* Each bad block fails with exactly this message prefix (file, line, column, path). */
static void test_bad_blocks(void **state)
{
    (void)state;
    static const struct {
        const char *tune, *want;
    } cases[] = {
        {"{\"trails\": 20}", "exp.json:3:12: tune.trails: unknown key"},
        {"{\"trials\": 0}", "exp.json:3:22: tune.trials: expected an integer in [1, 100000]"},
        {"{\"space\": {\"lr\": {\"log_uniform\": [0, 0.1]}}}", "exp.json:3:45: tune.space.lr.log_uniform[0]: 0: expected a learning rate"},
        {"{\"space\": {\"lr\": {\"log_uniform\": [0.1, 0.01]}}}", "exp.json:3:44: tune.space.lr.log_uniform: expected LO < HI"},
        {"{\"space\": {\"lr\": {\"uniform\": [0.1]}}}", "exp.json:3:40: tune.space.lr.uniform: expected [LO, HI]"},
        {"{\"space\": {\"lr\": {\"normal\": [0.1, 1]}}}", "exp.json:3:29: tune.space.lr.normal: unknown key"},
        {"{\"space\": {\"batch_size\": {\"uniform\": [16, 64]}}}", "exp.json:3:48: tune.space.batch_size.uniform: a range needs a real-valued"},
        {"{\"space\": {\"batch_size\": [32, 0]}}", "exp.json:3:41: tune.space.batch_size[1]: expected an integer in [1, 65536]"},
        {"{\"space\": {\"batch_size\": [32, 32]}}", "exp.json:3:41: tune.space.batch_size[1]: a repeated choice"},
        {"{\"space\": {\"batch_size\": []}}", "exp.json:3:36: tune.space.batch_size: expected 1 to 16 choices"},
        {"{\"space\": {\"optimizer\": [\"sgd\", \"lamb\"]}}", "exp.json:3:43: tune.space.optimizer[1]: expected \"sgd\""},
        {"{\"space\": {\"schedule\": \"multistep\"}}", "exp.json:3:34: tune.space.schedule: expected \"constant\""},
        {"{\"space\": {\"warmup\": [0, 10]}}", "exp.json:3:36: tune.space.warmup[1]: expected whole warmup epochs in [0, 10)"},
        {"{\"space\": {\"momentum\": 1.5}}", "exp.json:3:34: tune.space.momentum: 1.5: expected a momentum"},
        {"{\"space\": {\"nesterov\": \"yes\"}}", "exp.json:3:34: tune.space.nesterov: expected true or false"},
        {"{\"space\": {\"precision\": \"fp16\"}}", "exp.json:3:35: tune.space.precision: only \"fp32\" here"},
        {"{\"space\": {\"dropout\": [0.1]}}", "exp.json:3:22: tune.space.dropout: unknown key"},
        {"{\"sampler\": \"tpe\"}", "exp.json:3:23: tune.sampler: expected \"random\" or \"evolution\""},
        {"{\"sampler\": {\"type\": \"evolution\", \"population\": 2, \"sample\": 3}}", "exp.json:3:72: tune.sampler.sample: sample 3 exceeds population 2"},
        {"{\"early_stopping\": {\"type\": \"asha\", \"min_epochs\": 20}}", "exp.json:3:61: tune.early_stopping.min_epochs: expected epochs in (0, 10]"},
        {"{\"early_stopping\": {\"type\": \"asha\", \"eta\": 1}}", "exp.json:3:54: tune.early_stopping.eta: expected an integer in [2, 16]"},
        {"{\"early_stopping\": \"hyperband\"}", "exp.json:3:30: tune.early_stopping: expected \"asha\" or \"none\""},
        {"[1]", "exp.json:3:11: tune: expected an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        nas_tune_config_t c;
        err_t e = {0};
        char text[2048];
        int rc = load(cases[i].tune, NULL, &c, &e, text, sizeof text);
        if (rc != FN_EINVAL || strncmp(e.msg, cases[i].want, strlen(cases[i].want)) != 0)
            fail_msg("case %zu %s: rc %d, got \"%s\", want \"%s...\"", i, cases[i].tune, rc, e.msg, cases[i].want);
    }
}

static void test_recipe_train(void **state)
{
    (void)state;
    json_t *base = json_loads("{\"epochs\": 10, \"batch_size\": 64, \"lr\": 0.01, \"augment\": {\"hflip\": true},"
                              " \"optimizer\": {\"type\": \"sgd\", \"momentum\": 0.9}}",
                              0, NULL);
    assert_non_null(base);
    nas_tune_recipe_t b;
    nas_tune_recipe_from_train(base, &b);
    assert_true(b.v[NAS_TUNE_P_LR] == 0.01);
    assert_true(b.v[NAS_TUNE_P_MOMENTUM] == 0.9);
    assert_true(b.v[NAS_TUNE_P_SCHEDULE] == ENGINE_SCHED_CONSTANT);
    /* the experiment's own recipe gives back its own train block's settings */
    json_t *t = nas_tune_recipe_train(&b, base, 10);
    engine_train_config_t tc, ref;
    err_t e = {0};
    assert_int_equal(engine_train_config_from_json(t, &tc, &e), 0);
    assert_int_equal(engine_train_config_from_json(base, &ref, &e), 0);
    assert_true(tc.optim.lr == ref.optim.lr && tc.batch_size == ref.batch_size && tc.epochs == 10);
    assert_true(tc.optim.momentum == ref.optim.momentum && tc.schedule.type == ref.schedule.type);
    assert_true(json_is_true(json_object_get(json_object_get(t, "augment"), "hflip"))); /* kept */
    json_decref(t);
    /* a changed recipe: Adam drops momentum and nesterov; cosine with a warmup; accumulation */
    nas_tune_recipe_t r = b;
    r.v[NAS_TUNE_P_OPTIMIZER] = ENGINE_OPTIM_ADAMW;
    r.v[NAS_TUNE_P_MOMENTUM] = NAN;
    r.v[NAS_TUNE_P_NESTEROV] = NAN;
    r.v[NAS_TUNE_P_LR] = 0.002;
    r.v[NAS_TUNE_P_SCHEDULE] = ENGINE_SCHED_COSINE;
    r.v[NAS_TUNE_P_WARMUP] = 1;
    r.v[NAS_TUNE_P_ACCUMULATE] = 2;
    r.v[NAS_TUNE_P_WEIGHT_DECAY] = 1e-4;
    t = nas_tune_recipe_train(&r, base, 10);
    if (engine_train_config_from_json(t, &tc, &e) < 0)
        fail_msg("%s", e.msg);
    assert_int_equal(tc.optim.type, ENGINE_OPTIM_ADAMW);
    assert_true(fabsf(tc.optim.weight_decay - 1e-4f) < 1e-9f);
    assert_int_equal(tc.schedule.type, ENGINE_SCHED_COSINE);
    assert_int_equal(tc.schedule.warmup, 1);
    assert_int_equal(tc.accumulate, 2);
    assert_null(json_object_get(json_object_get(t, "optimizer"), "momentum"));
    json_decref(t);
    /* every schedule the space offers makes a train block the engine accepts */
    for (int s = 0; s < ENGINE_SCHED_COUNT; s++) {
        if (s == ENGINE_SCHED_MULTISTEP)
            continue;
        r.v[NAS_TUNE_P_SCHEDULE] = s;
        t = nas_tune_recipe_train(&r, base, 10);
        if (engine_train_config_from_json(t, &tc, &e) < 0)
            fail_msg("schedule %s: %s", engine_schedule_type_name((engine_schedule_type_t)s), e.msg);
        json_decref(t);
    }
    /* JSON round trip and the hash: canonical, and different recipes differ */
    json_t *j = nas_tune_recipe_json(&r);
    nas_tune_recipe_t back;
    assert_int_equal(nas_tune_recipe_parse(j, &back, &e), 0);
    json_decref(j);
    char h1[65], h2[65], h3[65];
    nas_tune_recipe_hash(&r, h1);
    nas_tune_recipe_hash(&back, h2);
    assert_string_equal(h1, h2);
    assert_int_equal(strlen(h1), 64);
    back.v[NAS_TUNE_P_LR] = 0.003;
    nas_tune_recipe_hash(&back, h3);
    assert_string_not_equal(h1, h3);
    json_decref(base);
}

/* Runs a strategy to the end, telling each proposal at once with acc(recipe); returns the
 * proposals in ask order (n of them). */
static int drive(const nas_tune_config_t *c, nas_tune_proposal_t *out, int cap, int fail_every)
{
    nas_tune_strategy_t *s = NULL;
    err_t e = {0};
    nas_tune_recipe_t base;
    json_t *tr = json_loads(k_train, 0, NULL);
    nas_tune_recipe_from_train(tr, &base);
    json_decref(tr);
    assert_int_equal(nas_tune_strategy_create(c, &base, &s, &e), 0);
    int n = 0;
    for (;;) {
        nas_tune_proposal_t p;
        int rc = nas_tune_strategy_ask(s, &p, &e);
        if (rc == NAS_TUNE_ASK_DONE)
            break;
        assert_int_equal(rc, 0);
        assert_true(n < cap);
        out[n] = p;
        /* a made-up response surface: best near lr 0.03, longer training better */
        double acc = 0.5 + 0.04 * p.epochs - 0.1 * fabs(log10(p.recipe.v[NAS_TUNE_P_LR] / 0.03));
        acc = acc < 0 ? 0 : acc > 1 ? 1 : acc;
        int ok = !(fail_every && p.trial % fail_every == fail_every - 1);
        assert_int_equal(nas_tune_strategy_tell(s, &p, ok, acc, &e), 0);
        n++;
    }
    /* a proposal is never told twice */
    assert_int_equal(nas_tune_strategy_tell(s, &out[0], 1, 0.5, &e), FN_ESTATE);
    nas_tune_strategy_free(s);
    return n;
}

static void test_strategy_asha(void **state)
{
    (void)state;
    nas_tune_config_t c;
    err_t e = {0};
    char text[2048];
    assert_int_equal(load("{\"trials\": 27, \"space\": {\"momentum\": [0.0, 0.9]}}", NULL, &c, &e, text, sizeof text), 0);
    nas_tune_proposal_t a[128], b[128];
    int n = drive(&c, a, 128, 5);
    assert_int_equal(n, drive(&c, b, 128, 5));
    int per_rung[3] = {0}, trials = 0;
    for (int i = 0; i < n; i++) {
        /* deterministic: the same seed asks the same sequence */
        assert_string_equal(a[i].hash, b[i].hash);
        assert_int_equal(a[i].rung, b[i].rung);
        per_rung[a[i].rung]++;
        trials += a[i].rung == 0;
        assert_true(a[i].epochs == c.rungs[a[i].rung]);
        /* failed trials (every 5th) are never promoted */
        if (a[i].rung > 0)
            assert_false(a[i].trial % 5 == 4);
        /* nesterov only with momentum */
        if (a[i].recipe.v[NAS_TUNE_P_MOMENTUM] == 0)
            assert_true(a[i].recipe.v[NAS_TUNE_P_NESTEROV] == 0);
        /* sampled floats keep 4 significant digits and stay in the range */
        double lr = a[i].recipe.v[NAS_TUNE_P_LR];
        char buf[32];
        snprintf(buf, sizeof buf, "%.4g", lr);
        assert_true(strtod(buf, NULL) == lr);
        assert_true(lr >= 0.001 * 0.9999 && lr <= 0.1 * 1.0001);
    }
    assert_int_equal(trials, 27);
    /* ASHA promotes at least floor(told / eta) of a rung (more when a promoted trial later
     * drops out of the top: promotions are never revoked), and the best of rung 0 among them */
    assert_true(per_rung[1] >= 27 / 3 && per_rung[1] < 27);
    assert_true(per_rung[2] >= per_rung[1] / 3 && per_rung[2] < per_rung[1]);
    int best = -1;
    double best_acc = -1;
    for (int i = 0; i < n; i++)
        if (a[i].rung == 0 && a[i].trial % 5 != 4) {
            double acc = 0.5 + 0.04 * a[i].epochs - 0.1 * fabs(log10(a[i].recipe.v[NAS_TUNE_P_LR] / 0.03));
            if (acc > best_acc)
                best_acc = acc, best = a[i].trial;
        }
    int promoted = 0;
    for (int i = 0; i < n; i++)
        promoted |= a[i].rung == 1 && a[i].trial == best;
    assert_true(promoted);
    /* a different seed samples differently */
    c.seed = 43;
    drive(&c, b, 128, 5);
    assert_string_not_equal(a[0].hash, b[0].hash);
}

static void test_strategy_evolution(void **state)
{
    (void)state;
    nas_tune_config_t c;
    err_t e = {0};
    char text[2048];
    assert_int_equal(load("{\"trials\": 16, \"early_stopping\": \"none\", \"enqueue_default\": true, "
                          "\"sampler\": {\"type\": \"evolution\", \"population\": 4, \"sample\": 2}}",
                          NULL, &c, &e, text, sizeof text),
                     0);
    nas_tune_proposal_t a[64];
    int n = drive(&c, a, 64, 0);
    assert_int_equal(n, 16);
    /* trial 0 is the experiment's own recipe */
    assert_string_equal(a[0].mutation, "the experiment's recipe");
    assert_true(a[0].recipe.v[NAS_TUNE_P_LR] == 0.01 && a[0].recipe.v[NAS_TUNE_P_BATCH_SIZE] == 64);
    for (int i = 1; i < 4; i++)
        assert_string_equal(a[i].mutation, "random");
    for (int i = 4; i < n; i++) {
        assert_true(a[i].parent >= 0 && a[i].parent < i);
        /* a child differs from its parent in at most one parameter */
        int diff = 0;
        for (int p = 0; p < NAS_TUNE_NPARAMS; p++) {
            double x = a[i].recipe.v[p], y = a[a[i].parent].recipe.v[p];
            diff += !(x == y || (isnan(x) && isnan(y)));
        }
        assert_true(diff <= 1);
        assert_true(a[i].epochs == 10);
    }
}


/* The workers train each job with the recipe it carries: the same result as the evaluation in
 * this process with that recipe, the pool's base recipe without one, and a clear failure for a
 * recipe the engine refuses. */
static void test_worker_recipe(void **state)
{
    (void)state;
    setenv("FEDNAS_THREADS", "1", 1); /* the workers fork from this process (worker.h) */
    nas_data_opts_t o = {.split_seed = 42, .val_size = 10000, .train_subset = 600, .val_subset = 300,
                         .test_subset = 200};
    nas_data_t d;
    err_t e = {0};
    if (nas_data_load(&o, &d, &e) < 0)
        fail_msg("%s", e.msg);
    json_t *base = json_loads(k_train, 0, NULL);
    nas_eval_opts_t bo = {.epochs = 1, .seed = 9};
    assert_int_equal(engine_train_config_from_json(base, &bo.train, &e), 0);
    nas_tune_recipe_t r;
    nas_tune_recipe_from_train(base, &r);
    r.v[NAS_TUNE_P_LR] = 0.2;
    r.v[NAS_TUNE_P_BATCH_SIZE] = 16;
    r.v[NAS_TUNE_P_SCHEDULE] = ENGINE_SCHED_COSINE;
    json_t *tj = nas_tune_recipe_train(&r, base, 1);
    char *rtext = json_dumps(tj, JSON_COMPACT);
    nas_eval_opts_t ro = bo;
    assert_int_equal(engine_train_config_from_json(tj, &ro.train, &e), 0);
    json_t *arch = json_pack("{s:s}", "type", "softmax");
    nas_eval_result_t want_base, want_recipe;
    assert_int_equal(nas_eval_run(arch, &d, &bo, &want_base, NULL, &e), 0);
    assert_int_equal(nas_eval_run(arch, &d, &ro, &want_recipe, NULL, &e), 0);
    assert_true(want_base.accuracy != want_recipe.accuracy || want_base.loss != want_recipe.loss);
    nas_workers_t *w = NULL;
    assert_int_equal(nas_workers_start_local(1, 1, &d, &bo, &w, &e), 0);
    const char *recipes[3] = {NULL, rtext, "{\"lr\": -1}"};
    for (int i = 0; i < 3; i++) {
        nas_job_t job = {.id = i, .epochs = 1, .seed = 9, .arch = "{\"type\":\"softmax\"}", .recipe = recipes[i]};
        assert_int_equal(nas_workers_submit(w, &job, &e), 0);
        nas_job_done_t done;
        int rc = 0;
        for (int k = 0; k < 6000 && rc == 0; k++)
            rc = nas_workers_wait(w, 0.1, &done, &e);
        assert_int_equal(rc, 1);
        assert_int_equal(done.id, i);
        if (i == 2) {
            assert_false(done.r.ok);
            if (strncmp(done.r.reason, "worker: bad recipe: train.lr", 28) != 0)
                fail_msg("reason: %s", done.r.reason);
        } else {
            const nas_eval_result_t *want = i == 0 ? &want_base : &want_recipe;
            assert_true(done.r.ok);
            assert_true(done.r.accuracy == want->accuracy && done.r.loss == want->loss);
        }
        nas_job_done_free(&done);
    }
    nas_workers_close(w);
    json_decref(arch);
    json_decref(tj);
    json_decref(base);
    free(rtext);
    nas_data_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),          cmocka_unit_test(test_full_block),
        cmocka_unit_test(test_bad_blocks),        cmocka_unit_test(test_recipe_train),
        cmocka_unit_test(test_strategy_asha),     cmocka_unit_test(test_strategy_evolution),
        cmocka_unit_test(test_worker_recipe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
