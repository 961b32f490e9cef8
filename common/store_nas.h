/* store_nas: the run store's NAS tables. A search is a run (runs row) plus its settings
 * (nas_runs), one row per candidate the strategy asked for (nas_candidates, in ask order) and the
 * top-k retrained on all the training data (nas_final). Only the NAS controller writes them. */
#ifndef FEDNAS_COMMON_STORE_NAS_H
#define FEDNAS_COMMON_STORE_NAS_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"
#include "common/store.h"

/* The schema step store.c applies (4 -> 5). */
#define STORE_NAS_MIGRATION                                                                          \
    "CREATE TABLE nas_runs ("                                                                        \
    "  run_id INTEGER PRIMARY KEY REFERENCES runs(id),"                                              \
    "  strategy TEXT NOT NULL,"                                                                      \
    "  split_seed INTEGER NOT NULL,"                                                                 \
    "  budget INTEGER NOT NULL,"                                                                     \
    "  workers INTEGER NOT NULL,"                                                                    \
    "  threads INTEGER NOT NULL,"                                                                    \
    "  device TEXT NOT NULL,"                                                                        \
    "  created_at REAL NOT NULL);"                                                                   \
    "CREATE TABLE nas_candidates ("                                                                  \
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"                                                 \
    "  seq INTEGER NOT NULL,"                                                                        \
    "  cand_id INTEGER NOT NULL,"                                                                    \
    "  rung INTEGER NOT NULL DEFAULT 0,"                                                             \
    "  hash TEXT NOT NULL,"                                                                          \
    "  genome TEXT NOT NULL,"                                                                        \
    "  arch TEXT NOT NULL,"                                                                          \
    "  parent INTEGER,"                                                                              \
    "  mutation TEXT,"                                                                               \
    "  budget REAL NOT NULL,"                                                                        \
    "  status TEXT NOT NULL CHECK (status IN ('queued','running','done','failed')),"                 \
    "  attempts INTEGER NOT NULL DEFAULT 0,"                                                         \
    "  diverged INTEGER NOT NULL DEFAULT 0,"                                                         \
    "  reason TEXT,"                                                                                 \
    "  worker TEXT,"                                                                                 \
    "  cached_from INTEGER,"                                                                         \
    "  tell_seq INTEGER,"                                                                            \
    "  queued_at REAL NOT NULL, started_at REAL, ended_at REAL, seconds REAL,"                       \
    "  val_accuracy REAL, val_loss REAL, train_loss REAL,"                                           \
    "  params INTEGER, flops REAL, latency_ms REAL, threads INTEGER,"                                \
    "  PRIMARY KEY (run_id, seq));"                                                                  \
    "CREATE INDEX nas_candidates_hash ON nas_candidates(run_id, hash, budget);"                      \
    "CREATE TABLE nas_final ("                                                                       \
    "  run_id INTEGER NOT NULL REFERENCES runs(id),"                                                 \
    "  rank INTEGER NOT NULL,"                                                                       \
    "  seq INTEGER NOT NULL,"                                                                        \
    "  arch TEXT NOT NULL,"                                                                          \
    "  test_accuracy REAL NOT NULL, test_loss REAL NOT NULL,"                                        \
    "  val_accuracy REAL, params INTEGER, flops REAL, latency_ms REAL,"                              \
    "  recipe TEXT NOT NULL,"                                                                        \
    "  weights BLOB NOT NULL,"                                                                       \
    "  seconds REAL,"                                                                                \
    "  created_at REAL NOT NULL,"                                                                    \
    "  PRIMARY KEY (run_id, rank));"

/* For store_nas.c: the handle behind a store (store.c owns it) and its file name. */
struct sqlite3 *store_sqlite(store_t *s);
const char *store_path(const store_t *s);

typedef struct store_nas_run {
    char strategy[32];
    uint64_t split_seed;
    int budget, workers, threads;
    char device[16];
} store_nas_run_t;

int store_nas_run_create(store_t *s, int64_t run_id, const store_nas_run_t *r, err_t *err);
/* FN_ENOTFOUND when the run is not a search. */
int store_nas_run_get(store_t *s, int64_t run_id, store_nas_run_t *r, err_t *err);
/* Raises a search's budget (nas_runs.budget and the run's planned count) to `budget`, in one
 * transaction: a finished run becomes "stopped" (resumable). Its retrained top k stay until the
 * final phase replaces the ranks whose candidate the longer search changed. The caller checks
 * that the budget grows. */
int store_nas_run_extend(store_t *s, int64_t run_id, int budget, err_t *err);

/* One candidate, as the controller keeps it. Text fields genome and arch are JSON; when loaded
 * they are malloc'ed (store_nas_candidates_free). -1 marks an absent parent, cache source or
 * tell position; has_metrics 0 leaves the metric columns NULL. */
typedef struct store_nas_candidate {
    int64_t seq;     /* ask order, from 0: the row's key */
    int64_t cand_id; /* the strategy's candidate id (an ASHA promotion repeats it at a higher rung) */
    int rung;
    char hash[80];
    char *genome, *arch;
    int64_t parent; /* the parent's cand_id (not seq); -1 for a random genome */
    char mutation[64];
    double budget;
    char status[8]; /* queued, running, done, failed */
    int attempts; /* finished evaluations (failures and the success) */
    int diverged; /* of which diverged (NaN): each moves the next attempt's seed */
    char reason[256];
    char worker[32];
    int64_t cached_from, tell_seq;
    double queued_at, started_at, ended_at, seconds;
    int has_metrics;
    double val_accuracy, val_loss, train_loss, flops, latency_ms;
    int64_t params;
    int threads;
} store_nas_candidate_t;

/* Inserts or replaces the row (run_id, c->seq). */
int store_nas_candidate_put(store_t *s, int64_t run_id, const store_nas_candidate_t *c, err_t *err);
/* The run's candidates in seq order; *out is malloc'ed (NULL when none). */
int store_nas_candidates_load(store_t *s, int64_t run_id, store_nas_candidate_t **out, int *n, err_t *err);
void store_nas_candidates_free(store_nas_candidate_t *c, int n);

typedef struct store_nas_final {
    int rank;
    int64_t seq;
    const char *arch, *recipe; /* JSON text */
    double test_accuracy, test_loss, val_accuracy, flops, latency_ms, seconds;
    int64_t params;
    const float *weights; /* the federated vector (parameters then buffers) */
    size_t n_weights;
} store_nas_final_t;

int store_nas_final_put(store_t *s, int64_t run_id, const store_nas_final_t *f, err_t *err);
/* The retrained model at rank (1-based): arch, recipe and weights malloc'ed into *arch, *recipe,
 * *weights (caller frees); FN_ENOTFOUND when absent. */
int store_nas_final_get(store_t *s, int64_t run_id, int rank, store_nas_final_t *f, char **arch, char **recipe,
                        float **weights, err_t *err);
/* The ranks already retrained: seq[r] is the candidate stored at rank r (1..63; -1 for a row
 * without one, as a tuning baseline), STORE_NAS_NO_FINAL where rank r has no row. A resumed
 * final phase skips a rank whose row is of the candidate it would retrain. */
#define STORE_NAS_NO_FINAL (-2)
int store_nas_final_done(store_t *s, int64_t run_id, int64_t seq[64], err_t *err);

/* For the dashboard and the CLI (read-only handles): a search as JSON,
 *   {"search": {strategy, split_seed, budget, workers, threads, device},
 *    "candidates": [{seq, cand_id, rung, hash, genome (object), parent, mutation, budget, status,
 *                    attempts, diverged, reason, worker, cached_from, tell_seq, queued_at,
 *                    started_at, ended_at, seconds, val_accuracy, val_loss, train_loss, params,
 *                    flops, latency_ms, threads}, ...] in ask order, those with seq > since_seq (-1: all),
 *    "final": [{rank, seq, arch (object), test_accuracy, test_loss, val_accuracy, params, flops,
 *               latency_ms, recipe (object), seconds, n_weights}, ...]}.
 * FN_ENOTFOUND when the run is not a search. */
int store_nas_json(store_t *s, int64_t run_id, int64_t since_seq, json_t **out, err_t *err);

#endif
