#include "cli/search_cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/jsonpos.h"
#include "common/store_live.h"
#include "common/util.h"

static int at(const cli_search_exp_t *e, const char *path, err_t *err, const char *msg)
{
    return jsonpos_fail(err, e->source, e->text, path, 0, "%s", msg);
}

static int data_int(const cli_search_exp_t *e, const json_t *d, const char *key, long lo, long hi, long dflt,
                    long *out, err_t *err)
{
    const json_t *v = json_object_get(d, key);
    *out = dflt;
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        char path[64], msg[96];
        snprintf(path, sizeof path, "data.%s", key);
        snprintf(msg, sizeof msg, "expected an integer in [%ld, %ld]", lo, hi);
        return at(e, path, err, msg);
    }
    *out = (long)json_integer_value(v);
    return 0;
}

static int parse_data(cli_search_exp_t *e, err_t *err)
{
    const json_t *d = json_object_get(e->root, "data");
    memset(&e->data, 0, sizeof e->data);
    e->data.val_size = 10000;
    e->data.split_seed = 42;
    if (!d)
        return 0;
    if (!json_is_object(d))
        return at(e, "data", err, "expected an object");
    static const char *const keys[] = {"dataset", "path", "split_seed", "validation", "train_subset", "val_subset",
                                       "test_subset", NULL};
    int rc = jsonpos_check_keys(err, e->source, e->text, d, "data", keys);
    if (rc < 0)
        return rc;
    const json_t *ds = json_object_get(d, "dataset");
    if (ds && (!json_is_string(ds) || (strcmp(json_string_value(ds), "fashion-mnist") != 0 &&
                                       strcmp(json_string_value(ds), "mnist") != 0)))
        return at(e, "data.dataset", err, "searches and tuning run on \"fashion-mnist\" or \"mnist\" (IDX files)");
    const json_t *p = json_object_get(d, "path");
    if (p && !json_is_string(p))
        return at(e, "data.path", err, "expected a directory name");
    e->data.dir = p ? json_string_value(p) : NULL;
    static const struct {
        const char *key;
        long lo, hi, dflt;
    } ints[] = {{"split_seed", 0, 0x7fffffffffffffffL, 42},
                {"validation", 1, 59999, 10000},
                {"train_subset", 1, 1 << 30, 0},
                {"val_subset", 1, 1 << 30, 0},
                {"test_subset", 1, 1 << 30, 0}};
    long v[5];
    for (int i = 0; i < 5; i++)
        if ((rc = data_int(e, d, ints[i].key, ints[i].lo, ints[i].hi, ints[i].dflt, &v[i], err)) < 0)
            return rc;
    e->data.split_seed = (uint64_t)v[0];
    e->data.val_size = (int)v[1];
    e->data.train_subset = (int)v[2];
    e->data.val_subset = (int)v[3];
    e->data.test_subset = (int)v[4];
    return 0;
}

int cli_search_exp_load(cli_search_exp_t *e, const char *source, char *text, const char *const *known,
                        const char *dflt_name, err_t *err)
{
    memset(e, 0, sizeof *e);
    e->text = text;
    e->source = source;
    e->seed = 1;
    json_error_t je;
    e->root = json_loads(text, 0, &je);
    if (!e->root)
        return err_set(err, FN_EINVAL, "%s:%d:%d: %s", source, je.line, je.column, je.text);
    if (!json_is_object(e->root))
        return err_set(err, FN_EINVAL, "%s:1:1: expected an experiment object", source);
    int rc = jsonpos_check_keys(err, source, text, e->root, "", known);
    if (rc < 0)
        return rc;
    const json_t *name = json_object_get(e->root, "name");
    snprintf(e->name, sizeof e->name, "%s", json_is_string(name) ? json_string_value(name) : dflt_name);
    const json_t *seed = json_object_get(e->root, "seed");
    if (seed && (!json_is_integer(seed) || json_integer_value(seed) < 0))
        return at(e, "seed", err, "expected an integer >= 0");
    if (seed)
        e->seed = (uint64_t)json_integer_value(seed);
    return parse_data(e, err);
}

void cli_search_exp_free(cli_search_exp_t *e)
{
    json_decref(e->root);
    free(e->text);
    e->root = NULL;
    e->text = NULL;
}

int cli_search_locate(const cli_search_exp_t *e, err_t *err)
{
    char path[160];
    const char *colon = strstr(err->msg, ": ");
    if (colon && (size_t)(colon - err->msg) < sizeof path && strchr(err->msg, ' ') >= colon) {
        memcpy(path, err->msg, (size_t)(colon - err->msg));
        path[colon - err->msg] = 0;
        int line = 1, col = 1;
        if (jsonpos_locate(e->text, path, 0, &line, &col) == 0)
            return err_wrap(err, "%s:%d:%d: ", e->source, line, col);
    }
    return err_wrap(err, "%s: ", e->source);
}

/* FN_ESTATE when run is "running" and its recorded process still holds the store: a second
 * process on the same search would race it (a stale "running" from a killed one does not count). */
static int not_live(store_t *st, const char *db, long long run, err_t *err)
{
    int64_t pid = 0;
    char status[16] = "";
    int rc = store_run_pid(st, run, &pid, status, err);
    if (rc == 0 && strcmp(status, "running") == 0 && pid > 0 && store_live_serves((long)pid, db) != 0)
        rc = err_set(err, FN_ESTATE, "run %lld is running (pid %lld holds %s); stop it first, then resume", run,
                     (long long)pid, db);
    return rc;
}

int cli_search_resume(const char *db, long long run, int tune, cli_search_run_t *r, char **text, err_t *err)
{
    memset(r, 0, sizeof *r);
    *text = NULL;
    r->run_id = run;
    snprintf(r->source, sizeof r->source, "run %lld", run);
    struct stat sb;
    if (stat(db, &sb) != 0)
        return err_set(err, FN_ENOTFOUND, "run store %s does not exist; pass the search's --db", db);
    int rc;
    if ((rc = store_open(db, 0, &r->st, err)) < 0)
        return rc;
    if ((rc = store_nas_run_get(r->st, run, &r->nr, err)) == FN_ENOTFOUND)
        return err_set(err, rc, "run %lld is not a NAS search in run store %s (`fednas runs --db %s` lists its runs; "
                       "pass the search's --db)", run, db, db);
    if (rc < 0)
        return rc;
    if ((strncmp(r->nr.strategy, "tune:", 5) == 0) != (tune != 0))
        return err_set(err, FN_EINVAL, "run %lld is a %s, not a %s: resume it with `fednas %s --resume %lld`", run,
                       tune ? "`fednas nas` search" : "tuning run", tune ? "tuning run" : "`fednas nas` search",
                       tune ? "nas" : "tune", run);
    if ((rc = not_live(r->st, db, run, err)) < 0)
        return rc;
    return store_run_reopen(r->st, run, text, &r->exp_id, err);
}

int cli_search_extend(const char *db, long long run, int budget, err_t *err)
{
    cli_search_run_t r = {0};
    struct stat sb;
    if (stat(db, &sb) != 0)
        return err_set(err, FN_ENOTFOUND, "run store %s does not exist; pass the search's --db", db);
    int rc = store_open(db, 0, &r.st, err);
    if (rc == 0 && (rc = store_nas_run_get(r.st, run, &r.nr, err)) == FN_ENOTFOUND)
        rc = err_set(err, rc, "run %lld is not a NAS search in run store %s (`fednas runs --db %s` lists its runs)", run,
                     db, db);
    if (rc == 0 && strncmp(r.nr.strategy, "tune:", 5) == 0)
        rc = err_set(err, FN_EINVAL, "run %lld is a tuning run: --budget extends `fednas nas` searches", run);
    if (rc == 0)
        rc = not_live(r.st, db, run, err);
    if (rc == 0 && budget <= r.nr.budget)
        rc = err_set(err, FN_EINVAL, "--budget %d: run %lld's budget is already %d; a search can only be extended", budget,
                     run, r.nr.budget);
    if (rc == 0)
        rc = store_nas_run_extend(r.st, run, budget, err);
    store_close(r.st);
    return rc;
}

int cli_search_open(const char *path, const char *db, long long resume, int tune,
                    int (*load)(void *ctx, const char *source, char *text, err_t *err), void *ctx,
                    cli_search_exp_t *x, cli_search_run_t *r, err_t *err)
{
    char *text = NULL;
    int rc;
    if (resume) {
        if ((rc = cli_search_resume(db, resume, tune, r, &text, err)) < 0 || (rc = load(ctx, r->source, text, err)) < 0)
            return rc;
        x->data.split_seed = r->nr.split_seed;
        return 0;
    }
    size_t len;
    if ((rc = fn_read_file(path, &text, &len, err)) < 0)
        return rc;
    return load(ctx, path, text, err) < 0 ? FN_EINVAL : 0;
}

int cli_search_create(const char *db, const char *name, const char *text, int budget, int workers, uint64_t seed,
                      cli_search_run_t *r, err_t *err)
{
    int rc;
    if ((rc = store_open(db, 0, &r->st, err)) < 0 || (rc = store_experiment_create(r->st, name, text, &r->exp_id, err)) < 0 ||
        (rc = store_run_create(r->st, r->exp_id, budget, workers, seed, NULL, &r->run_id, err)) < 0)
        return rc;
    return store_nas_run_create(r->st, r->run_id, &r->nr, err);
}

int cli_search_load(cli_search_run_t *r, const nas_data_opts_t *o, double *seconds, err_t *err)
{
    store_run_set_pid(r->st, r->run_id, (int64_t)getpid(), err);
    double t0 = fn_mono();
    int rc = nas_data_load(o, &r->data, err);
    if (rc < 0)
        store_run_finish(r->st, r->run_id, "failed", err->msg, NULL); /* no run is left "running" */
    *seconds = fn_mono() - t0;
    return rc;
}

void cli_search_finish(cli_search_run_t *r, int rc, int stopped, const char *msg, err_t *err)
{
    if (rc == 0)
        store_run_finish(r->st, r->run_id, "done", msg, err);
    else
        store_run_finish(r->st, r->run_id, stopped ? "stopped" : "failed", err->msg, NULL);
}

void cli_search_close(cli_search_run_t *r)
{
    nas_data_free(&r->data);
    store_close(r->st);
    r->st = NULL;
}

int cli_search_threads(int workers)
{
    const char *s = getenv("FEDNAS_THREADS");
    long v;
    if (s && fn_parse_int(s, 1, 4096, &v) == 0)
        return (int)v;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int t = (int)(cores / workers);
    return t < 1 ? 1 : t;
}

int cli_search_parse_run(const char *s, long long *out)
{
    long v;
    if (fn_parse_int(s, 1, 0x7fffffffL, &v) < 0)
        return -1;
    *out = v;
    return 0;
}

const char *cli_search_args(int argc, char **argv, int optind, long long resume, const char **path)
{
    *path = NULL;
    if (resume)
        return optind == argc ? NULL : "--resume RUN takes no experiment file (the run's own is used)";
    if (optind != argc - 1)
        return optind < argc ? "expected one EXPERIMENT file, got more" : "missing the EXPERIMENT file";
    *path = argv[optind];
    return NULL;
}
