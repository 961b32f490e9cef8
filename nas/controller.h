/* controller: runs a NAS search as a run of the store: asks the strategy for candidates, has
 * workers evaluate them, tells the results back in ask order (so a search is reproducible
 * candidate for candidate), resumes by replay, and retrains the top k on all the training data. */
#ifndef FEDNAS_NAS_CONTROLLER_H
#define FEDNAS_NAS_CONTROLLER_H

#include <signal.h>
#include <stdint.h>

#include "common/err.h"
#include "common/store.h"
#include "common/store_nas.h"
#include "nas/config.h"
#include "nas/eval.h"
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

typedef struct nas_search {
    const nas_config_t *cfg;
    const nas_data_t *data;
    nas_eval_opts_t eval; /* the per-candidate recipe (epochs and seed set per job) */
    int threads;          /* FEDNAS_THREADS of each worker */
    const char *augment;  /* the experiment's train.augment as JSON text, or NULL: for the recipe */
    store_t *store;
    int64_t run_id;
    /* Called (may be NULL) when a candidate is told (in ask order, with its final row), when
     * anything changes (for a live bar), and when a top-k model has been retrained. */
    void (*on_candidate)(void *ctx, const store_nas_candidate_t *c, const nas_progress_t *p);
    void (*on_tick)(void *ctx, const nas_progress_t *p);
    void (*on_final)(void *ctx, const store_nas_final_t *f, const char *recipe);
    void *cb_ctx;
    volatile sig_atomic_t *stop; /* set (SIGINT): stop dispatching, leave the run resumable */
    /* Workers started by the caller (MPI ranks: nas/mpi.h), which also closes them; NULL: the
     * controller forks cfg->workers local ones. The ask window stays 2 x cfg->workers either
     * way, so a search gives the same candidates whatever evaluates them. */
    nas_workers_t *workers;
} nas_search_t;

/* The seed of an evaluation: a function of the search seed, the candidate's canonical hash and
 * its budget (so the cache is exact: the same genome at the same budget gives the same result),
 * and how many earlier attempts diverged (a retry after NaN starts elsewhere; a retry after a
 * worker died does not, so a killed worker never changes the results). */
uint64_t nas_eval_seed(uint64_t search_seed, const char *hash, double epochs, int diverged);

/* Runs (or continues: the run's stored candidates are replayed first) the search and the final
 * retraining. Returns 0 when the search finished, FN_ESTATE when *stop interrupted it (the run is
 * left resumable), another negative code on errors (a replay that does not reproduce the stored
 * candidates is FN_ESTATE with a message saying so). */
int nas_search_run(nas_search_t *s, err_t *err);

#endif
