/* `fednas nas EXPERIMENT.json`: a neural-architecture search on this machine (nas/controller.h),
 * recorded as a run of the store; `--resume RUN` continues one after a crash or Ctrl-C, and
 * `fednas nas export RUN` writes the best architectures (JSON) with their retrained weights. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/search_cli.h"
#include "common/jsonpos.h"
#include "common/store.h"
#include "common/store_nas.h"
#include "common/util.h"
#include "engine/safetensors.h"
#include "nas/config.h"
#include "nas/controller.h"
#include "nas/eval.h"
#include "nas/mpi.h"

static const char *const k_help =
    "Usage: fednas nas EXPERIMENT.json [--db FILE] [--quiet]\n"
    "       fednas nas --resume RUN [--budget N] [--db FILE] [--quiet]\n"
    "       fednas nas export RUN [--top K] --out DIR [--db FILE]\n"
    "\n"
    "Searches the experiment's \"nas\" space with its strategy: candidates are trained on 50,000\n"
    "training images and scored on the other 10,000 (a split drawn once from data.split_seed and\n"
    "stored with the run); the top k are then retrained from scratch on all 60,000 and tested.\n"
    "Every candidate is recorded in the run store; a killed search continues with --resume RUN:\n"
    "finished candidates are kept, the ones in flight run again, and the strategy replays the\n"
    "recorded asks and tells, so the search ends as an uninterrupted one would.\n"
    "\n"
    "EXPERIMENT keys: \"name\", \"seed\", \"nas\" (see nas/config.h), \"train\" (the per-candidate\n"
    "recipe: optimizer, schedule, augment; nas.lr and nas.batch_size set its learning rate and\n"
    "batch size), \"data\": {\"dataset\":\"fashion-mnist\"|\"mnist\", \"path\":DIR, \"split_seed\":42,\n"
    "\"validation\":10000, \"train_subset\":N, \"val_subset\":N, \"test_subset\":N} (subsets: the first\n"
    "N images of each split, for smoke tests). Federated keys are ignored.\n"
    "\n"
    "  --db FILE     run store (default fednas.db)\n"
    "  --resume RUN  continue run RUN of the store\n"
    "  --budget N    with --resume: extend the search to N evaluations (more than its budget); a\n"
    "                finished search goes on, retrains the ranks of its top k whose candidate\n"
    "                changed, and ends as the same search with budget N from the start would\n"
    "  --quiet       no progress bar (lines only)\n"
    "  --check       validate the experiment, print the plan and exit (no store, no training)\n"
    "  export: --top K (default 3) --out DIR: DIR/rankN.json (the model, as \"model\" takes it)\n"
    "          and DIR/rankN.safetensors (\"params\", the weights; metadata fednas.arch)\n"
    "\n"
    "Workers: nas.workers processes, each with FEDNAS_THREADS engine threads (default: the cores\n"
    "divided among the workers). Results are reproducible for a fixed seed, workers and threads.\n"
    "Under mpirun or srun (`mpirun -n K fednas nas EXP`): rank 0 is the controller and owns the\n"
    "store, ranks 1..K-1 are the workers (a new run's nas.workers becomes K-1), each with\n"
    "FEDNAS_THREADS engine threads (default 1); --resume works with any K. With weight sharing\n"
    "every rank first trains a replica of the supernet on its shard of each batch (one all-reduce\n"
    "of the path's gradients a step; nas.batch_size >= 2K), then ranks 1..K-1 score with theirs;\n"
    "batch norm is per shard, so resume a weight-sharing search with the same K.\n";

typedef struct exp_cfg {
    cli_search_exp_t x;
    nas_config_t nas;
    engine_train_config_t train;
    char *augment;
} exp_cfg_t;

static void exp_free(exp_cfg_t *e)
{
    cli_search_exp_free(&e->x);
    free(e->augment);
    e->augment = NULL;
}

/* Loads and validates an experiment given as text (a file, or a run's stored config); e is an
 * exp_cfg_t (cli_search_open's loader). */
static int exp_load(void *ctx, const char *source, char *text, err_t *err)
{
    exp_cfg_t *e = ctx;
    memset(e, 0, sizeof *e);
    static const char *const known[] = {"name", "description", "seed", "data", "train", "nas", "model", "rounds",
                                        "clients", "server", "strategy", "privacy", "secagg", NULL};
    int rc = cli_search_exp_load(&e->x, source, text, known, "nas", err);
    if (rc < 0)
        return rc;
    const json_t *nas = json_object_get(e->x.root, "nas");
    if (!nas)
        return err_set(err, FN_EINVAL, "%s: no \"nas\" block: nothing to search (see `fednas nas --help`)", source);
    if ((rc = nas_config_parse(nas, source, text, "nas", e->x.seed, &e->nas, err)) < 0)
        return rc;
    const json_t *train = json_object_get(e->x.root, "train");
    if (train) {
        if ((rc = engine_train_config_from_json(train, &e->train, err)) < 0)
            return cli_search_locate(&e->x, err);
        const json_t *aug = json_object_get(train, "augment");
        if (aug)
            e->augment = json_dumps(aug, JSON_COMPACT);
    } else {
        engine_train_config_default(&e->train);
    }
    e->train.batch_size = e->nas.batch_size;
    e->train.optim.lr = (float)e->nas.lr;
    return 0;
}

/* ---- progress ------------------------------------------------------------------------------ */

typedef struct ui {
    int tty, quiet;
    double last_draw;
    int drawn;
} ui_t;

static void clear_bar(ui_t *u)
{
    if (u->drawn) {
        fprintf(stderr, "\r%*s\r", 100, "");
        u->drawn = 0;
    }
}

static void fmt_eta(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 1e7)
        snprintf(buf, n, "?");
    else if (s >= 3600)
        snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else
        snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static void on_tick(void *ctx, const nas_progress_t *p)
{
    ui_t *u = ctx;
    if (!u->tty || u->quiet)
        return;
    double t = fn_mono();
    if (t - u->last_draw < 0.2)
        return;
    u->last_draw = t;
    char bar[31], eta[32], best[48];
    int fill = p->budget > 0 ? (int)(30.0 * p->progress / p->budget) : 0;
    if (fill > 30)
        fill = 30;
    for (int i = 0; i < 30; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[30] = 0;
    /* Seconds per unit of budget so far in this session, times what is left. */
    fmt_eta(p->evaluated > 0 && p->progress > 0 ? p->elapsed / p->evaluated * p->told / p->progress * (p->budget - p->progress) : -1,
            eta, sizeof eta);
    if (p->best >= 0)
        snprintf(best, sizeof best, "%.4f (#%lld)", p->best, (long long)p->best_seq);
    else
        snprintf(best, sizeof best, "-");
    fprintf(stderr, "\r [%s] %g/%g %s  running %d  failed %d  best %s  ETA %s   ", bar, p->progress, p->budget,
            p->unit, p->running, p->failed, best, eta);
    fflush(stderr);
    u->drawn = 1;
}

static void on_candidate(void *ctx, const store_nas_candidate_t *c, const nas_progress_t *p)
{
    ui_t *u = ctx;
    clear_bar(u);
    if (strcmp(c->status, "done") == 0)
        printf("[%3g/%g] #%-3lld done    val %.4f  loss %.4f  params %7lld  MFLOP %7.2f  lat %6.2fms  %5.1fs  %-8s %s\n",
               p->progress, p->budget, (long long)c->seq, c->val_accuracy, c->val_loss, (long long)c->params,
               c->flops / 1e6, c->latency_ms, c->seconds, c->worker, c->mutation);
    else
        printf("[%3g/%g] #%-3lld FAILED  after %d attempt%s: %s\n", p->progress, p->budget, (long long)c->seq, c->attempts,
               c->attempts == 1 ? "" : "s", c->reason);
    fflush(stdout);
    u->last_draw = 0;
}

static void on_final(void *ctx, const store_nas_final_t *f, const char *recipe)
{
    ui_t *u = ctx;
    clear_bar(u);
    printf("retrained top %d: candidate #%lld  test accuracy %.4f  test loss %.4f  (validation %.4f)  params %lld  MFLOP %.2f  "
           "lat %.2fms  retrained in %.1fs\n",
           f->rank, (long long)f->seq, f->test_accuracy, f->test_loss, f->val_accuracy, (long long)f->params,
           f->flops / 1e6, f->latency_ms, f->seconds);
    (void)recipe;
    fflush(stdout);
}

/* ---- search ------------------------------------------------------------------------------- */

static int check_only(const char *path)
{
    err_t err = {0};
    exp_cfg_t e;
    memset(&e, 0, sizeof e);
    cli_search_run_t none = {0};
    if (cli_search_open(path, NULL, 0, 0, exp_load, &e, &e.x, &none, &err) == 0) {
        printf("%s: ok: %s search over the %s space, budget %d x %g epoch%s, %d worker%s, retries %d, top %d retrained "
               "for %d epochs; batch %d, lr %g, %s; split seed %llu, validation %d\n",
               path, nas_strategy_name(e.nas.strategy.kind), e.nas.space.kind == NAS_SPACE_CELL ? "cell" : "macro",
               e.nas.budget, e.nas.epochs, e.nas.epochs == 1 ? "" : "s", e.nas.workers, e.nas.workers == 1 ? "" : "s",
               e.nas.retries, e.nas.top_k, e.nas.retrain_epochs, e.train.batch_size, (double)e.train.optim.lr,
               engine_optim_type_name(e.train.optim.type), (unsigned long long)e.x.data.split_seed, e.x.data.val_size);
        exp_free(&e);
        return EXIT_OK;
    }
    exp_free(&e);
    return cli_fail(&err);
}

static int search(const char *path, long long resume, int budget, const char *db_path, int quiet, int mpi_size);

/* ---- MPI: rank 0 sends the experiment, ranks > 0 evaluate (nas/mpi.h) ----------------------- */

/* What a worker rank needs: the experiment text (a new file's or a resumed run's), the run's
 * split seed and threads; every rank then loads the data itself (nothing shared but files). */
static int send_setup(const exp_cfg_t *e, const store_nas_run_t *nr, nas_workers_t **ranks, err_t *err)
{
    json_t *j = json_pack("{s:s, s:I, s:i}", "experiment", e->x.text, "split_seed", (json_int_t)nr->split_seed,
                          "threads", nr->threads);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return err_set(err, FN_EINVAL, "MPI: cannot encode the setup");
    int rc = nas_mpi_send_setup(text, strlen(text), err);
    free(text);
    return rc < 0 ? rc : nas_workers_start_mpi(ranks, err);
}

static int serve_rank(int rank)
{
    err_t err = {0};
    exp_cfg_t e;
    memset(&e, 0, sizeof e);
    nas_data_t data;
    memset(&data, 0, sizeof data);
    char *blob = NULL;
    size_t n;
    int rc = nas_mpi_recv_setup(&blob, &n, &err);
    if (rc == 0)
        return EXIT_OK; /* rank 0 failed before the search began and said so */
    json_error_t je;
    json_t *j = rc > 0 ? json_loads(blob, 0, &je) : NULL;
    const char *text = json_string_value(json_object_get(j, "experiment"));
    const json_t *seed = json_object_get(j, "split_seed"), *threads = json_object_get(j, "threads");
    if (rc > 0 && (!text || !json_is_integer(seed) || !json_is_integer(threads) || json_integer_value(threads) < 1 ||
                   json_integer_value(threads) > 4096))
        rc = err_set(&err, FN_EPROTO, "MPI: unreadable setup from rank 0 (expected {\"experiment\": text, "
                     "\"split_seed\": integer, \"threads\": 1..4096}): every rank must run the same fednas build");
    if (rc > 0 && (rc = exp_load(&e, "rank 0's experiment", strdup(text), &err)) == 0) {
        e.x.data.split_seed = (uint64_t)json_integer_value(json_object_get(j, "split_seed"));
        char th[24];
        snprintf(th, sizeof th, "%lld", (long long)json_integer_value(json_object_get(j, "threads")));
        setenv("FEDNAS_THREADS", th, 1); /* before the engine's pool starts */
        rc = nas_data_load(&e.x.data, &data, &err);
    }
    nas_eval_opts_t base = {.train = e.train, .latency_reps = 20};
    if (rc == 0)
        rc = nas_mpi_serve(&e.nas, &data, &base, &err);
    json_decref(j);
    free(blob);
    nas_data_free(&data);
    exp_free(&e);
    if (rc < 0) /* which rank: every rank reads its own data and files */
        err_wrap(&err, "MPI rank %d (a worker; the job is aborted): ", rank);
    return rc < 0 ? cli_fail(&err) : EXIT_OK;
}

/* The search under a launcher: MPI only when one started us, and only a world of >= 2 ranks
 * splits controller and workers. */
static int search_launched(const char *path, long long resume, int budget, const char *db, int quiet)
{
    err_t err = {0};
    if (!nas_mpi_built()) {
        const char *k = getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
        if (k && atoi(k) > 1) {
            err_set(&err, FN_ESTATE, "started as one of %s ranks, but this fednas was built without MPI: every "
                                     "rank would run its own search (rebuild with libopenmpi-dev installed)", k);
            return cli_fail(&err);
        }
        return search(path, resume, budget, db, quiet, 1);
    }
    int rank, size;
    if (nas_mpi_init(&rank, &size, &err) < 0)
        return cli_fail(&err);
    int rc = size < 2 ? search(path, resume, budget, db, quiet, 1)
             : rank > 0 ? serve_rank(rank)
                        : search(path, resume, budget, db, quiet, size);
    nas_mpi_end(rc != EXIT_OK);
    return rc;
}

static int search(const char *path, long long resume, int budget, const char *db_path, int quiet, int mpi_size)
{
    err_t err = {0};
    exp_cfg_t e;
    memset(&e, 0, sizeof e);
    cli_search_run_t run = {0};
    store_nas_run_t *nr = &run.nr;
    nas_workers_t *ranks = NULL; /* MPI worker ranks, or NULL: local workers */
    /* A resumed search takes the run's split and threads: it must see the same data and sum in
     * the same order. */
    int rc = budget ? cli_search_extend(db_path, resume, budget, &err) : 0;
    if (rc == 0)
        rc = cli_search_open(path, db_path, resume, 0, exp_load, &e, &e.x, &run, &err);
    if (rc < 0)
        goto out;
    if (resume) /* the run's budget: the experiment's, or what --budget made it */
        e.nas.budget = nr->budget;
    else {
        nr->split_seed = e.x.data.split_seed;
        nr->budget = e.nas.budget;
        nr->workers = e.nas.workers;
        nr->threads = cli_search_threads(e.nas.workers);
        if (mpi_size > 1) {
            /* The job's worker ranks are the search's workers (its ask window); one engine
             * thread each unless FEDNAS_THREADS says otherwise: one rank per core. */
            if (nr->workers != mpi_size - 1)
                printf("fednas nas: %d worker ranks replace nas.workers %d\n", mpi_size - 1, nr->workers);
            nr->workers = mpi_size - 1;
            nr->threads = getenv("FEDNAS_THREADS") ? cli_search_threads(1) : 1;
        }
        snprintf(nr->strategy, sizeof nr->strategy, "%s", nas_strategy_name(e.nas.strategy.kind));
        snprintf(nr->device, sizeof nr->device, "%s", e.nas.device);
        if ((rc = cli_search_create(db_path, e.x.name, e.x.text, e.nas.budget, e.nas.workers, e.nas.seed, &run, &err)) < 0)
            goto out;
    }
    int64_t run_id = run.run_id;
    if (mpi_size > 1 && (rc = send_setup(&e, nr, &ranks, &err)) < 0)
        goto out;
    double t_load;
    if ((rc = cli_search_load(&run, &e.x.data, &t_load, &err)) < 0)
        goto out;
    printf("fednas nas: run %lld%s: %s search over the %s space, budget %d x %g epoch%s, seed %llu; %d worker%s x %d "
           "thread%s on %s%s\n",
           (long long)run_id, resume ? " (resumed)" : "", nas_strategy_name(e.nas.strategy.kind),
           e.nas.space.kind == NAS_SPACE_CELL ? "cell" : "macro", e.nas.budget, e.nas.epochs,
           e.nas.epochs == 1 ? "" : "s", (unsigned long long)e.nas.seed, nr->workers, nr->workers == 1 ? "" : "s",
           nr->threads, nr->threads == 1 ? "" : "s", nr->device, ranks ? " (MPI ranks)" : "");
    printf("data: %d training / %d validation images (split seed %llu), %d test images, loaded in %.1fs\n",
           run.data.n_train, run.data.n_val, (unsigned long long)run.data.split_seed, run.data.n_test, t_load);
    fflush(stdout);
    ui_t ui = {.tty = isatty(2), .quiet = quiet};
    nas_search_t s = {.cfg = &e.nas,
                      .data = &run.data,
                      .eval = {.train = e.train, .latency_reps = 20},
                      .threads = nr->threads,
                      .augment = e.augment,
                      .store = run.st,
                      .run_id = run_id,
                      .on_candidate = on_candidate,
                      .on_tick = on_tick,
                      .on_final = on_final,
                      .cb_ctx = &ui,
                      .stop = &cli_stop,
                      .workers = ranks};
    /* The workers and their settings are the run's (the tell order depends on the workers). */
    e.nas.workers = nr->workers;
    cli_install_signals();
    double t0 = fn_mono();
    /* weight sharing under mpirun: every rank trains its supernet replica first (nas/mpi.h) */
    rc = 0;
    if (ranks && e.nas.evaluation == NAS_EVAL_WEIGHT_SHARING)
        rc = nas_mpi_supernet_train(&e.nas, &run.data, &s.eval, nr->threads, &err);
    if (rc == 0)
        rc = nas_search_run(&s, &err);
    clear_bar(&ui);
    char msg[256] = "no architecture was retrained (top_k 0, or every retraining failed: see the log)";
    if (rc == 0) {
        /* Summary from the store, by rank: what a later `fednas nas export` sees. */
        int shown = 0;
        for (int r = 1; r <= e.nas.top_k && r < 64; r++) {
            store_nas_final_t f;
            char *arch = NULL, *recipe = NULL;
            float *w = NULL;
            if (store_nas_final_get(run.st, run_id, r, &f, &arch, &recipe, &w, &err) < 0) {
                printf("  rank %d: not retrained (it failed: see the log)\n", r);
                continue;
            }
            if (!shown++) {
                printf("retrained from scratch on %d images, tested on %d; recipe: %s\n", run.data.n_all, run.data.n_test,
                       recipe);
                snprintf(msg, sizeof msg, "best: candidate #%lld, validation %.4f, test %.4f after retraining",
                         (long long)f.seq, f.val_accuracy, f.test_accuracy);
            }
            printf("  rank %d: candidate #%lld  validation %.4f  test %.4f  params %lld  MFLOP %.2f  latency %.2f ms\n", r,
                   (long long)f.seq, f.val_accuracy, f.test_accuracy, (long long)f.params, f.flops / 1e6,
                   f.latency_ms);
            free(arch);
            free(recipe);
            free(w);
        }
        printf("done in %.1fs: %s\n", fn_mono() - t0, msg);
    }
    cli_search_finish(&run, rc, cli_stop, msg, &err);
out:
    nas_workers_close(ranks);
    if (rc < 0)
        rc = cli_fail(&err);
    exp_free(&e);
    cli_search_close(&run);
    return rc;
}

/* ---- export ------------------------------------------------------------------------------- */

static int export_run(long long run, int top, const char *dir, const char *db_path)
{
    err_t err = {0};
    store_t *st = NULL;
    int rc = store_open(db_path, 1, &st, &err);
    if (rc == 0)
        rc = fn_mkdirs(dir, 0755, &err);
    int written = 0;
    for (int r = 1; rc == 0 && r <= top; r++) {
        store_nas_final_t f;
        char *arch = NULL, *recipe = NULL;
        float *w = NULL;
        rc = store_nas_final_get(st, run, r, &f, &arch, &recipe, &w, &err);
        if (rc == FN_ENOTFOUND) {
            rc = 0; /* beyond top_k, or its retraining failed */
            continue;
        }
        char p[1200];
        json_error_t je;
        json_t *a = rc == 0 ? json_loads(arch, 0, &je) : NULL;
        if (rc == 0 && !a)
            rc = err_set(&err, FN_EINVAL, "run %lld rank %d: stored architecture unreadable: %s", run, r, je.text);
        if (rc == 0) {
            char *pretty = json_dumps(a, JSON_INDENT(2));
            snprintf(p, sizeof p, "%s/rank%d.json", dir, r);
            rc = fn_write_file(p, pretty, strlen(pretty), 0644, &err);
            free(pretty);
        }
        if (rc == 0) {
            snprintf(p, sizeof p, "%s/rank%d.safetensors", dir, r);
            rc = engine_safetensors_save_checkpoint(p, arch, w, NULL, NULL, f.n_weights, 0, &err);
        }
        if (rc == 0) {
            printf("rank %d: candidate #%lld  test accuracy %.4f  %s/rank%d.json  %s/rank%d.safetensors (%zu floats)\n",
                   r, (long long)f.seq, f.test_accuracy, dir, r, dir, r, f.n_weights);
            written++;
        }
        json_decref(a);
        free(arch);
        free(recipe);
        free(w);
    }
    if (rc == 0 && written == 0)
        rc = err_set(&err, FN_ENOTFOUND, "run %lld has no retrained model in %s (not a finished search?)", run, db_path);
    if (rc == 0 && written < top)
        printf("run %lld has %d retrained model%s (nas.top_k); exported them all\n", run, written,
               written == 1 ? "" : "s");
    store_close(st);
    return rc < 0 ? cli_fail(&err) : EXIT_OK;
}

int cmd_nas(int argc, char **argv)
{
    int is_export = argc > 1 && strcmp(argv[1], "export") == 0;
    static const struct option opts[] = {{"db", required_argument, 0, 'd'},  {"resume", required_argument, 0, 'r'},
                                         {"quiet", no_argument, 0, 'q'},     {"top", required_argument, 0, 't'},
                                         {"out", required_argument, 0, 'o'}, {"help", no_argument, 0, 'h'},
                                         {"check", no_argument, 0, 'c'},    {"budget", required_argument, 0, 'b'},
                                         {0, 0, 0, 0}};
    const char *db = "fednas.db", *out = NULL;
    long long resume = 0;
    long top = 3, budget = 0;
    int quiet = 0, check = 0, c;
    optind = 1;
    if (is_export) {
        argc--;
        argv++;
    }
    const char *cmd = is_export ? "nas export" : "nas";
    while ((c = getopt_long(argc, argv, "hq", opts, NULL)) != -1) {
        switch (c) {
        case 'd': db = optarg; break;
        case 'r':
            if (is_export || cli_search_parse_run(optarg, &resume) < 0)
                return cli_usage_error(cmd, "--resume needs a run id >= 1, not \"%s\"", optarg);
            break;
        case 'q': quiet = 1; break;
        case 'c': check = 1; break;
        case 'b':
            if (is_export || fn_parse_int(optarg, 1, 10000000, &budget) < 0)
                return cli_usage_error(cmd, "--budget needs a number of evaluations in [1, 10000000], not \"%s\"", optarg);
            break;
        case 't':
            if (!is_export || fn_parse_int(optarg, 1, 63, &top) < 0)
                return cli_usage_error(cmd, "--top needs an integer in [1, 63] (with export), not \"%s\"", optarg);
            break;
        case 'o':
            if (!is_export)
                return cli_usage_error(cmd, "--out belongs to `fednas nas export`");
            out = optarg;
            break;
        case 'h': fputs(k_help, stdout); return EXIT_OK;
        default: return cli_usage_error(cmd, "unknown option");
        }
    }
    if (is_export) {
        long long run;
        if (optind != argc - 1 || cli_search_parse_run(argv[optind], &run) < 0)
            return cli_usage_error(cmd, "expected one RUN id");
        if (!out)
            return cli_usage_error(cmd, "--out DIR is required");
        return export_run(run, (int)top, out, db);
    }
    const char *path;
    const char *why = cli_search_args(argc, argv, optind, resume, &path);
    if (why)
        return cli_usage_error(cmd, "%s", why);
    if (check && path)
        return check_only(path);
    if (budget && !resume)
        return cli_usage_error(cmd, "--budget extends a search with --resume RUN; a new search takes nas.budget");
    return nas_mpi_launched() ? search_launched(path, resume, (int)budget, db, quiet)
                              : search(path, resume, (int)budget, db, quiet, 1);
}
