/* controller: the one search loop of `fednas nas` and `fednas tune`. It asks a strategy (anything
 * implementing nas_ctl_strategy_t: the architecture strategies of nas/strategy.h, the recipe
 * sampler of nas/tune.h) for candidates, has workers evaluate them, stores every candidate as a
 * nas_candidates row, serves a repeated (hash, budget) from the cache, tells results back in an
 * order that does not depend on the workers' timing (a virtual clock of epochs: so a search is
 * reproducible candidate for candidate; controller.c says why and how), resumes by replay, and
 * retrains the chosen candidates at the end. */
#ifndef FEDNAS_NAS_CONTROLLER_H
#define FEDNAS_NAS_CONTROLLER_H

#include <signal.h>
#include <stdint.h>

#include "common/err.h"
#include "common/store.h"
#include "common/store_nas.h"
#include "nas/config.h"
#include "nas/eval.h"
#include "nas/strategy.h"
#include "nas/worker.h"

/* Progress as the controller sees it, for the command's lines and bar. */
typedef struct nas_progress {
    int told;                 /* evaluations told to the strategy */
    double progress, budget;  /* done / planned, in `unit`: evaluations, or epochs for ASHA (fractions too) */
    const char *unit;
    int running, failed;      /* in flight now; failed for good so far */
    double best;              /* best validation accuracy so far (-1: none) */
    int64_t best_seq;
    double elapsed;           /* seconds of this session */
    int evaluated;            /* evaluations finished in this session (for the ETA) */
} nas_progress_t;

/* ---- the strategy interface ------------------------------------------------------------------ */

/* One proposal, ready for the store and a worker. */
typedef struct nas_ask {
    /* What the strategy fills of the candidate's row: cand_id (an ASHA promotion repeats it at
     * a higher rung), rung, hash (the cache key, with budget), parent (cand_id; -1), mutation,
     * budget (epochs), and genome and arch (the genome JSON, the model JSON a worker builds). */
    store_nas_candidate_t row;
    double progress; /* what telling it adds to nas_progress_t.progress */
    /* malloc'ed, owned by the controller from here on (as row.genome and row.arch): the job's
     * "train" block or NULL (the workers' base recipe), and the strategy's own record of the
     * proposal, handed back to tell. */
    char *recipe;
    void *proposal;
} nas_ask_t;

/* ask returns 0 with *out filled, NAS_ASK_WAIT (nas/strategy.h: nothing to propose until an
 * outstanding result is told) or NAS_ASK_DONE (the search's budget is spent: nothing more, ever).
 * tell gets the proposal back with its final row (status "done" or "failed" for good), in the
 * controller's tell order (the ask order when every budget is the same). A strategy is a pure
 * function of its settings, seed and ask/tell sequence: replaying the sequence reproduces every
 * proposal, which is how a search resumes. */
typedef struct nas_ctl_strategy {
    void *impl;
    int (*ask)(void *impl, nas_ask_t *out, err_t *err);
    int (*tell)(void *impl, const void *proposal, const store_nas_candidate_t *row, err_t *err);
    void (*free)(void *impl);
} nas_ctl_strategy_t;

/* ---- the loop ---------------------------------------------------------------------------------- */

typedef struct nas_ctl nas_ctl_t;

/* One retraining of the final phase (rank = its index + 1): on all the training data, scored on
 * the test set, stored in nas_final with its weights. */
typedef struct nas_ctl_final {
    int64_t seq;            /* the candidate it comes from (-1: none, e.g. a baseline) */
    double val_accuracy;    /* that candidate's (-1: none) */
    const char *arch;       /* model JSON */
    const char *recipe;     /* the job's train block, or NULL: the workers' base recipe */
    const char *stored_recipe; /* nas_final.recipe */
    const char *seed_key;   /* the seed derives from the search seed, this key and epochs */
    double epochs;
    char what[96];          /* for the log: "rank 2 (candidate #7)" */
} nas_ctl_final_t;

#define NAS_CTL_MAX_FINAL 63

typedef struct nas_ctl_opts {
    nas_ctl_strategy_t strategy; /* taken over: freed by nas_ctl_run */
    nas_workers_t *pool;         /* started by the caller, which closes them */
    /* The run's workers (stored with it): up to 2 x workers asks are outstanding, and the
     * virtual clock that orders the tells has this many workers. Part of the call sequence, so
     * the run's, whatever evaluates the candidates (MPI ranks, the supernet evaluator). */
    int workers;
    int retries;                 /* re-runs of a failed evaluation before it fails for good */
    uint64_t seed;               /* the search's: evaluation seeds derive from it */
    store_t *store;
    int64_t run_id;
    const char *command;         /* "nas", "tune": the resume hint names `fednas COMMAND --resume` */
    double budget;               /* nas_progress_t.budget and unit */
    const char *unit;
    /* Picks the final retrainings once the search is over (nas_ctl_top, nas_ctl_row help):
     * fills up to max jobs and returns how many, or a negative error. NULL: none. */
    int (*finals)(void *ctx, const nas_ctl_t *c, nas_ctl_final_t *jobs, int max, err_t *err);
    void *finals_ctx;
    /* Called (may be NULL) when a candidate is told (in tell order, with its final row), when
     * anything changes (for a live bar), and when a final model has been retrained. */
    void (*on_candidate)(void *ctx, const store_nas_candidate_t *c, const nas_progress_t *p);
    void (*on_tick)(void *ctx, const nas_progress_t *p);
    void (*on_final)(void *ctx, const store_nas_final_t *f, const char *recipe);
    void *cb_ctx;
    volatile sig_atomic_t *stop; /* set (SIGINT): stop dispatching, leave the run resumable */
} nas_ctl_opts_t;

/* Runs (or continues: the run's stored candidates are replayed first) the search and the final
 * retrainings. Returns 0 when the search finished, FN_ESTATE when *stop interrupted it (the run
 * is left resumable and the message says how to resume), another negative code on errors (a
 * replay that does not reproduce the stored candidates is FN_ESTATE with a message saying so).
 * The strategy is freed either way. */
int nas_ctl_run(const nas_ctl_opts_t *o, err_t *err);

/* For finals: the seqs of the best k distinct architectures/recipes (by hash) among the
 * evaluated (not cached) rows: the longest budget first (ASHA's highest rung), then validation
 * accuracy, then the earlier. Returns how many (<= k). */
int nas_ctl_top(const nas_ctl_t *c, int k, int64_t *seqs);
/* A row by seq, and its job's train block (NULL: the base recipe). */
const store_nas_candidate_t *nas_ctl_row(const nas_ctl_t *c, int64_t seq, const char **recipe);

/* The seed of an evaluation: a function of the search seed, the candidate's canonical hash and
 * its budget (so the cache is exact: the same genome at the same budget gives the same result),
 * and how many earlier attempts diverged (a retry after NaN starts elsewhere; a retry after a
 * worker died does not, so a killed worker never changes the results). */
uint64_t nas_eval_seed(uint64_t search_seed, const char *hash, double epochs, int diverged);

/* ---- `fednas nas`: an architecture search over nas/strategy.h --------------------------------- */

typedef struct nas_search {
    const nas_config_t *cfg;
    const nas_data_t *data;
    nas_eval_opts_t eval; /* the per-candidate recipe (epochs and seed set per job) */
    int threads;          /* FEDNAS_THREADS of each worker */
    const char *augment;  /* the experiment's train.augment as JSON text, or NULL: for the recipe */
    store_t *store;
    int64_t run_id;
    void (*on_candidate)(void *ctx, const store_nas_candidate_t *c, const nas_progress_t *p);
    void (*on_tick)(void *ctx, const nas_progress_t *p);
    void (*on_final)(void *ctx, const store_nas_final_t *f, const char *recipe);
    void *cb_ctx;
    volatile sig_atomic_t *stop;
    /* Workers started by the caller (MPI ranks: nas/mpi.h), which also closes them; NULL: the
     * controller forks cfg->workers local ones (or the weight-sharing evaluator). The tell order
     * follows cfg->workers either way, so a search gives the same candidates whatever evaluates
     * them. */
    nas_workers_t *workers;
} nas_search_t;

/* The search, then the top k (nas.top_k) retrained from scratch for nas.retrain_epochs. */
int nas_search_run(nas_search_t *s, err_t *err);

#endif
