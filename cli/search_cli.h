/* search_cli: what `fednas nas` and `fednas tune` share around the controller (nas/controller.h):
 * the experiment file's common part (name, seed, the "data" block of the train/validation
 * split), the run in the store (created, or reopened by --resume RUN), loading the data, the
 * run's end status, the threads per worker and the command line's RUN / EXPERIMENT arguments. */
#ifndef FEDNAS_CLI_SEARCH_CLI_H
#define FEDNAS_CLI_SEARCH_CLI_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"
#include "common/store.h"
#include "common/store_nas.h"
#include "nas/eval.h"

typedef struct cli_search_exp {
    json_t *root;
    char *text;         /* owned */
    const char *source; /* the file name, or "run N" */
    char name[128];
    uint64_t seed;      /* the experiment's "seed", 1 when absent */
    nas_data_opts_t data;
} cli_search_exp_t;

/* Parses text (taken over, freed by cli_search_exp_free even on error) as an experiment object
 * whose top-level keys are among known (NULL-terminated), with name (default dflt_name), seed
 * and "data": {"dataset": "fashion-mnist"|"mnist", "path", "split_seed" (42), "validation"
 * (10000), "train_subset", "val_subset", "test_subset"}. Errors are FN_EINVAL and read
 * "SOURCE:LINE:COL: PATH: what is wrong". */
int cli_search_exp_load(cli_search_exp_t *e, const char *source, char *text, const char *const *known,
                        const char *dflt_name, err_t *err);
void cli_search_exp_free(cli_search_exp_t *e);
/* An engine message that starts with a JSON path ("train.optimizer.momentum: ...") gets the
 * file, line and column of that path in front; returns err's code. */
int cli_search_locate(const cli_search_exp_t *e, err_t *err);

/* The run of a search in the store. */
typedef struct cli_search_run {
    store_t *st;
    int64_t run_id, exp_id;
    store_nas_run_t nr;
    char source[64]; /* "run N" (the resumed experiment's source) */
    nas_data_t data; /* cli_search_load's */
} cli_search_run_t;

/* --resume RUN: opens db (which must exist) and reopens the run, which must be a tuning run
 * (tune 1: nas_runs.strategy "tune:...") or an architecture search (tune 0); *text: the stored
 * experiment (malloc'ed). */
int cli_search_resume(const char *db, long long run, int tune, cli_search_run_t *r, char **text, err_t *err);
/* --resume RUN --budget N: raises search RUN's budget in db to N evaluations (store_nas_run_extend),
 * so that the resume goes on to N; a finished search is reopened. N must exceed the run's budget
 * (FN_EINVAL otherwise, naming it); tuning runs are refused. */
int cli_search_extend(const char *db, long long run, int budget, err_t *err);
/* The experiment of a search, parsed by load(ctx, source, text, err), which takes text over:
 * the file at path for a new run (resume 0; a load error is FN_EINVAL), else the run's own
 * from db (as cli_search_resume), whose split seed then replaces x's (x: the loaded
 * experiment's common part), so that a resumed search sees the same data. */
int cli_search_open(const char *path, const char *db, long long resume, int tune,
                    int (*load)(void *ctx, const char *source, char *text, err_t *err), void *ctx,
                    cli_search_exp_t *x, cli_search_run_t *r, err_t *err);
/* A new run: opens (creates) db and records the experiment (text), the run and r->nr (filled
 * by the caller). */
int cli_search_create(const char *db, const char *name, const char *text, int budget, int workers, uint64_t seed,
                      cli_search_run_t *r, err_t *err);
/* Marks the run as this process's and loads its data into r->data (*seconds: how long that
 * took); a failure ends the run "failed", so that none is left "running". */
int cli_search_load(cli_search_run_t *r, const nas_data_opts_t *o, double *seconds, err_t *err);
/* Ends the run: "done" with msg when rc is 0, else "stopped" (after Ctrl-C: cli_stop) or
 * "failed", with err's message. */
void cli_search_finish(cli_search_run_t *r, int rc, int stopped, const char *msg, err_t *err);
/* Frees the data and closes the store. */
void cli_search_close(cli_search_run_t *r);

/* FEDNAS_THREADS when set, else the cores divided among the workers (at least 1). */
int cli_search_threads(int workers);
/* --resume's RUN: an id >= 1 (0), or a usage error (-1). */
int cli_search_parse_run(const char *s, long long *out);
/* After the options: with --resume no EXPERIMENT argument, else exactly one (*path). NULL, or
 * what is wrong (for cli_usage_error). */
const char *cli_search_args(int argc, char **argv, int optind, long long resume, const char **path);

#endif
