/* `fednas tune EXPERIMENT.json --trials N`: tunes the experiment's training recipe (nas/tune.h)
 * with the NAS workers and ASHA, records every trial as a NAS candidate of a run in the store,
 * retrains the best recipe (and the experiment's own) on all the training data, and writes
 * best.json, report.md and report.json into the run folder. `--resume RUN` continues one. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/search_cli.h"
#include "cli/tune_report.h"
#include "common/jsonpos.h"
#include "common/store.h"
#include "common/store_nas.h"
#include "common/util.h"
#include "nas/tune.h"

static const char *const k_help =
    "Usage: fednas tune EXPERIMENT.json [--trials N] [--workers W] [--db FILE] [--out DIR] [--quiet]\n"
    "                   [--sampler random|evolution] [--early-stopping asha|none]\n"
    "                   [--enqueue-default] [--no-baseline] [--check]\n"
    "       fednas tune --resume RUN [--db FILE] [--out DIR] [--quiet]\n"
    "\n"
    "Tunes the experiment's \"train\" recipe: trials are sampled from a search space, trained on\n"
    "50,000 training images and scored on the other 10,000 (the split of `fednas nas`, from\n"
    "data.split_seed); with ASHA a trial first trains for a few epochs and only the top 1/eta of\n"
    "each rung train longer, up to train.epochs. Every trial is a NAS candidate of the run (the\n"
    "recipe JSON is its genome): `fednas runs`, the dashboard's NAS page and `fednas nas export`\n"
    "show it. Then the best recipe, and the experiment's own beside it, are retrained on all\n"
    "60,000 images with the same seed and tested; the run folder (beside the store:\n"
    "fednas-runs/ID/ for fednas.db, or --out DIR) gets best.json (the experiment with the best\n"
    "recipe, runnable by `fednas train`), report.md and report.json.\n"
    "\n"
    "The \"tune\" block (every key optional; defaults derive from the experiment's train block):\n"
    "  \"trials\": 20, \"workers\": 1, \"retries\": 1, \"seed\": the experiment's,\n"
    "  \"sampler\": \"random\" | \"evolution\" | {\"type\":\"evolution\",\"population\":8,\"sample\":3},\n"
    "  \"early_stopping\": \"asha\" | \"none\" | {\"type\":\"asha\",\"eta\":3,\"min_epochs\":E/eta^2}\n"
    "                    (asha is the default when train.epochs >= 3),\n"
    "  \"enqueue_default\": false (true: trial 0 is the experiment's own recipe),\n"
    "  \"baseline\": true (retrain the experiment's own recipe beside the best, for the report),\n"
    "  \"space\": {PARAM: VALUE | [CHOICES] | {\"log_uniform\":[LO,HI]} | {\"uniform\":[LO,HI]}}\n"
    "    lr            default {\"log_uniform\": [lr/10, lr*10]}\n"
    "    batch_size    default [bs/2, bs, 2*bs]\n"
    "    accumulate    default [1, 2] (gradient accumulation: effective batch bs * accumulate)\n"
    "    optimizer     default the experiment's (\"sgd\", \"rmsprop\", \"adam\", \"adamw\")\n"
    "    momentum      default [0.8, 0.9, 0.95, the experiment's] (SGD and RMSprop)\n"
    "    nesterov      default [false, true] (SGD)\n"
    "    weight_decay  default [0, 1e-5, 1e-4, 5e-4, the experiment's]\n"
    "    schedule      default [the experiment's, \"constant\", \"cosine\", \"onecycle\"]\n"
    "    warmup        default [0, 1] (whole epochs of linear warmup)\n"
    "    label_smoothing  default the experiment's\n"
    "    precision     \"fp32\" only: this build trains on the CPU\n"
    "Ranges (uniform, log_uniform) are for lr, momentum, weight_decay and label_smoothing; the\n"
    "others take choices. Sampled floats keep 4 significant digits.\n"
    "\n"
    "  --trials N         recipes to try (overrides tune.trials)\n"
    "  --workers W        evaluation processes (overrides tune.workers), each with FEDNAS_THREADS\n"
    "                     engine threads (default: the cores divided among the workers)\n"
    "  --sampler S        random or evolution (overrides tune.sampler)\n"
    "  --early-stopping E asha or none (overrides tune.early_stopping)\n"
    "  --enqueue-default  trial 0 is the experiment's own recipe\n"
    "  --no-baseline      do not retrain the experiment's own recipe at the end\n"
    "  --db FILE          run store (default fednas.db)\n"
    "  --out DIR          where best.json and the reports go (default: the run folder)\n"
    "  --resume RUN       continue run RUN (finished trials are kept, the strategy replays them)\n"
    "  --check            validate the experiment, print the plan and exit\n"
    "  --quiet            no per-trial lines\n";

typedef struct exp {
    cli_search_exp_t x;
    const json_t *train;
    char *arch;
    nas_tune_config_t cfg;
    engine_train_config_t tc;
} exp_t;

static void exp_free(exp_t *e)
{
    cli_search_exp_free(&e->x);
    free(e->arch);
    e->arch = NULL;
}

/* Loads and validates an experiment into the exp_t ctx (owns text from here on). */
static int exp_load(void *ctx, const char *source, char *text, err_t *err)
{
    exp_t *e = ctx;
    memset(e, 0, sizeof *e);
    static const char *const known[] = {"name",    "description", "seed",     "data",    "model",  "train",
                                        "tune",    "compress",    "rounds",   "clients", "server", "strategy",
                                        "privacy", "secagg",      "nas",      NULL};
    int rc = cli_search_exp_load(&e->x, source, text, known, "tune", err);
    if (rc < 0)
        return rc;
    const json_t *model = json_object_get(e->x.root, "model");
    if (!json_is_object(model))
        return jsonpos_fail(err, source, text, "model", 0, "%s",
                            "expected the model to tune for, e.g. {\"type\": \"cnn\"} (see engine/nn.h)");
    e->arch = json_dumps(model, JSON_COMPACT);
    e->train = json_object_get(e->x.root, "train");
    if (!json_is_object(e->train))
        return jsonpos_fail(err, source, text, "train", 0, "%s",
                            "expected the train block whose recipe is tuned (see `fednas train --help`)");
    if ((rc = engine_train_config_from_json(e->train, &e->tc, err)) < 0)
        return cli_search_locate(&e->x, err);
    return nas_tune_config_parse(json_object_get(e->x.root, "tune"), e->train, source, text, "tune", e->x.seed, &e->cfg,
                                 err);
}

static void print_plan(const exp_t *e, const char *what)
{
    char strat[32], rungs[128] = "";
    nas_tune_config_describe(&e->cfg, strat, sizeof strat);
    for (int k = 0, n = 0; k < e->cfg.nrungs && n >= 0 && (size_t)n < sizeof rungs; k++)
        n += snprintf(rungs + n, sizeof rungs - (size_t)n, "%s%g", k ? ", " : "", e->cfg.rungs[k]);
    printf("%s: %s: %d trials, %s, epochs per rung [%s], %d worker%s, retries %d, seed %llu\n", what, e->x.source,
           e->cfg.trials, strat, rungs, e->cfg.workers, e->cfg.workers == 1 ? "" : "s", e->cfg.retries,
           (unsigned long long)e->cfg.seed);
    printf("space:");
    for (int p = 0; p < NAS_TUNE_NPARAMS; p++) {
        const nas_tune_dom_t *d = &e->cfg.space[p];
        if (d->kind == NAS_TUNE_DOM_FIXED)
            continue;
        printf("  %s ", nas_tune_param_name((nas_tune_param_t)p));
        if (d->kind == NAS_TUNE_DOM_CHOICE)
            printf("(%d choices)", d->n);
        else
            printf("%s[%g, %g]", d->kind == NAS_TUNE_DOM_LOG_UNIFORM ? "log" : "", d->lo, d->hi);
    }
    printf("\n");
    fflush(stdout);
}

typedef struct ui {
    int quiet;
    int trials;
} ui_t;

static void on_trial(void *ctx, const store_nas_candidate_t *c, const nas_progress_t *p)
{
    int told = p->told;
    double best = p->best;
    ui_t *u = ctx;
    if (u->quiet)
        return;
    json_error_t je;
    json_t *g = json_loads(c->genome, 0, &je);
    nas_tune_recipe_t r;
    err_t err = {0};
    char desc[200] = "?";
    if (g && nas_tune_recipe_parse(g, &r, &err) == 0)
        nas_tune_recipe_describe(&r, desc, sizeof desc);
    json_decref(g);
    if (strcmp(c->status, "done") == 0)
        printf("[%3d] trial %-3lld rung %d %5.3g ep  val %.4f  %6.1fs  %-8s  %s   (best %.4f)\n", told,
               (long long)c->cand_id, c->rung, c->budget, c->val_accuracy, c->seconds, c->worker, desc, best);
    else
        printf("[%3d] trial %-3lld rung %d %5.3g ep  FAILED after %d attempt%s: %s  (%s)\n", told, (long long)c->cand_id,
               c->rung, c->budget, c->attempts, c->attempts == 1 ? "" : "s", c->reason, desc);
    fflush(stdout);
}

static void on_final(void *ctx, const store_nas_final_t *f, const char *recipe)
{
    (void)ctx;
    (void)recipe;
    printf("retrained %s on all training images: test accuracy %.4f, test loss %.4f (%.1fs)\n",
           f->rank == 1 ? "the best recipe" : "the experiment's own recipe", f->test_accuracy, f->test_loss, f->seconds);
    fflush(stdout);
}

/* The run folder beside the store (fednas.db -> fednas-runs/ID), as `fednas run` names it. */
static void run_folder(const char *db, int64_t run, char *out, size_t cap)
{
    const char *slash = strrchr(db, '/');
    const char *base = slash ? slash + 1 : db;
    const char *dot = strrchr(base, '.');
    int len = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    int dl = slash ? (int)(slash - db) : 1;
    snprintf(out, cap, "%.*s/%.*s-runs/%lld", dl, slash ? db : ".", len, base, (long long)run);
}

typedef struct opts {
    const char *db, *out;
    long long resume;
    int trials, workers, quiet, check, enqueue, no_baseline;
    int sampler, stopping; /* -1: the tune block's; else nas_tune_sampler_t, and 1 asha / 0 none */
} opts_t;

/* The command line's settings become the stored experiment's "tune" block, so a resume sees them. */
static int apply_options(exp_t *e, const opts_t *o, err_t *err)
{
    json_t *tb = json_object_get(e->x.root, "tune");
    if (!tb) {
        tb = json_object();
        json_object_set_new(e->x.root, "tune", tb);
    }
    if (o->trials)
        e->cfg.trials = o->trials;
    if (o->workers)
        e->cfg.workers = o->workers;
    if (o->enqueue)
        e->cfg.enqueue_default = 1;
    if (o->no_baseline)
        e->cfg.baseline = 0;
    if (o->sampler >= 0) {
        e->cfg.sampler = (nas_tune_sampler_t)o->sampler;
        json_object_set_new(tb, "sampler", e->cfg.sampler == NAS_TUNE_SAMPLER_RANDOM
                                               ? json_string("random")
                                               : json_pack("{s:s, s:i, s:i}", "type", "evolution", "population",
                                                           e->cfg.population, "sample", e->cfg.sample));
    }
    if (o->stopping >= 0) {
        e->cfg.asha = o->stopping;
        if (nas_tune_config_rungs(&e->cfg, err) < 0)
            return FN_EINVAL;
        json_object_set_new(tb, "early_stopping", e->cfg.asha ? json_pack("{s:s, s:i, s:f}", "type", "asha", "eta",
                                                                          e->cfg.eta, "min_epochs", e->cfg.min_epochs)
                                                              : json_string("none"));
    }
    json_object_set_new(tb, "trials", json_integer(e->cfg.trials));
    json_object_set_new(tb, "workers", json_integer(e->cfg.workers));
    json_object_set_new(tb, "enqueue_default", json_boolean(e->cfg.enqueue_default));
    json_object_set_new(tb, "baseline", json_boolean(e->cfg.baseline));
    return 0;
}

static int tune(const char *path, const opts_t *o)
{
    err_t err = {0};
    exp_t e;
    memset(&e, 0, sizeof e);
    cli_search_run_t run = {0};
    store_nas_run_t *nr = &run.nr;
    int rc = cli_search_open(path, o->db, o->resume, 1, exp_load, &e, &e.x, &run, &err);
    if (rc < 0)
        goto out;
    if (!o->resume) {
        if ((rc = apply_options(&e, o, &err)) < 0)
            goto out;
        if (o->check) {
            print_plan(&e, "ok");
            goto out;
        }
        char *stored = json_dumps(e.x.root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        FN_CHECK(stored);
        nr->split_seed = e.x.data.split_seed;
        nr->budget = e.cfg.trials;
        nr->workers = e.cfg.workers;
        nr->threads = cli_search_threads(e.cfg.workers);
        char strat[32];
        nas_tune_config_describe(&e.cfg, strat, sizeof strat);
        snprintf(nr->strategy, sizeof nr->strategy, "tune:%s", strat);
        snprintf(nr->device, sizeof nr->device, "cpu");
        rc = cli_search_create(o->db, e.x.name, stored, e.cfg.trials, e.cfg.workers, e.cfg.seed, &run, &err);
        free(stored);
        if (rc < 0)
            goto out;
    }
    double t_load;
    if ((rc = cli_search_load(&run, &e.x.data, &t_load, &err)) < 0)
        goto out;
    char what[96];
    snprintf(what, sizeof what, "fednas tune: run %lld%s", (long long)run.run_id, o->resume ? " (resumed)" : "");
    print_plan(&e, what);
    printf("data: %d training / %d validation images (split seed %llu), %d test images, loaded in %.1fs; %d worker%s x "
           "%d thread%s\n",
           run.data.n_train, run.data.n_val, (unsigned long long)run.data.split_seed, run.data.n_test, t_load, nr->workers,
           nr->workers == 1 ? "" : "s", nr->threads, nr->threads == 1 ? "" : "s");
    fflush(stdout);
    e.cfg.workers = nr->workers;
    ui_t ui = {.quiet = o->quiet, .trials = e.cfg.trials};
    nas_tune_search_t s = {.cfg = &e.cfg,
                           .data = &run.data,
                           .base_train = e.train,
                           .arch = e.arch,
                           .eval = {.train = e.tc, .latency_reps = 0},
                           .threads = nr->threads,
                           .store = run.st,
                           .run_id = run.run_id,
                           .on_trial = on_trial,
                           .on_final = on_final,
                           .cb_ctx = &ui,
                           .stop = &cli_stop};
    cli_install_signals();
    double t0 = fn_mono();
    int64_t best_seq = -1;
    char msg[256] = "";
    rc = nas_tune_search_run(&s, &best_seq, &err);
    if (rc == 0) {
        char dir[1200];
        if (o->out)
            snprintf(dir, sizeof dir, "%s", o->out);
        else
            run_folder(o->db, run.run_id, dir, sizeof dir);
        cli_tune_report_t rep = {.db = o->db,
                                 .run_id = run.run_id,
                                 .source = o->resume ? NULL : path,
                                 .root = e.x.root,
                                 .cfg = &e.cfg,
                                 .data = &run.data,
                                 .best_seq = best_seq,
                                 .seconds = fn_mono() - t0};
        rc = cli_tune_report_write(run.st, &rep, dir, msg, sizeof msg, &err);
        if (rc == 0)
            printf("done in %.1fs: %s\nwrote %s/best.json, %s/report.md, %s/report.json\n", fn_mono() - t0, msg, dir, dir,
                   dir);
    }
    cli_search_finish(&run, rc, cli_stop, msg, &err);
out:
    if (rc < 0)
        rc = cli_fail(&err);
    exp_free(&e);
    cli_search_close(&run);
    return rc;
}

int cmd_tune(int argc, char **argv)
{
    static const struct option lo[] = {
        {"trials", required_argument, 0, 't'}, {"workers", required_argument, 0, 'w'},
        {"db", required_argument, 0, 'd'},     {"out", required_argument, 0, 'o'},
        {"resume", required_argument, 0, 'r'}, {"quiet", no_argument, 0, 'q'},
        {"check", no_argument, 0, 'c'},        {"enqueue-default", no_argument, 0, 'E'},
        {"no-baseline", no_argument, 0, 'B'},  {"help", no_argument, 0, 'h'},
        {"sampler", required_argument, 0, 'S'}, {"early-stopping", required_argument, 0, 'A'},
        {0, 0, 0, 0}};
    opts_t o = {.db = "fednas.db", .sampler = -1, .stopping = -1};
    int c;
    long v;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hq", lo, NULL)) != -1) {
        switch (c) {
        case 't':
            if (fn_parse_int(optarg, 1, 100000, &v) < 0)
                return cli_usage_error("tune", "--trials needs an integer in [1, 100000], not \"%s\"", optarg);
            o.trials = (int)v;
            break;
        case 'w':
            if (fn_parse_int(optarg, 1, 256, &v) < 0)
                return cli_usage_error("tune", "--workers needs an integer in [1, 256], not \"%s\"", optarg);
            o.workers = (int)v;
            break;
        case 'r':
            if (cli_search_parse_run(optarg, &o.resume) < 0)
                return cli_usage_error("tune", "--resume needs a run id >= 1, not \"%s\"", optarg);
            break;
        case 'd': o.db = optarg; break;
        case 'o': o.out = optarg; break;
        case 'q': o.quiet = 1; break;
        case 'c': o.check = 1; break;
        case 'E': o.enqueue = 1; break;
        case 'B': o.no_baseline = 1; break;
        case 'S':
            if (strcmp(optarg, "random") && strcmp(optarg, "evolution"))
                return cli_usage_error("tune", "--sampler takes \"random\" or \"evolution\", not \"%s\"", optarg);
            o.sampler = strcmp(optarg, "random") == 0 ? NAS_TUNE_SAMPLER_RANDOM : NAS_TUNE_SAMPLER_EVOLUTION;
            break;
        case 'A':
            if (strcmp(optarg, "asha") && strcmp(optarg, "none"))
                return cli_usage_error("tune", "--early-stopping takes \"asha\" or \"none\", not \"%s\"", optarg);
            o.stopping = strcmp(optarg, "asha") == 0;
            break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error("tune", "unknown option");
        }
    }
    const char *path;
    const char *why = cli_search_args(argc, argv, optind, o.resume, &path);
    if (why)
        return cli_usage_error("tune", "%s", why);
    if (o.resume && (o.trials || o.workers || o.enqueue || o.no_baseline || o.check || o.sampler >= 0 || o.stopping >= 0))
        return cli_usage_error("tune", "--resume continues a run with its own settings: drop --trials, --workers, "
                                       "--sampler, --early-stopping, --enqueue-default, --no-baseline and --check");
    return tune(path, &o);
}
