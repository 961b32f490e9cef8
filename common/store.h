/* store: the run store, one SQLite database (WAL) holding experiments, runs, rounds, round
 * metrics and clients. The server writes; web threads and `fednas runs` read through their own
 * read-only handles. The schema is versioned with PRAGMA user_version and migrated on open. */
#ifndef FEDNAS_COMMON_STORE_H
#define FEDNAS_COMMON_STORE_H

#include <jansson.h>
#include <stdint.h>

#include "common/err.h"

typedef struct store store_t;

#define STORE_SCHEMA_VERSION 5

/* Opens (creating and migrating if needed) the store at path. read_only handles never migrate and
 * fail with FN_ENOTFOUND if the file does not exist. Each thread uses its own handle. */
int store_open(const char *path, int read_only, store_t **out, err_t *err);
void store_close(store_t *s);
int store_schema_version(store_t *s);

/* Steps a prepared statement to its end, appending one JSON object per row (column name ->
 * value) to arr; columns named in `nested` (NULL-terminated, or NULL) hold JSON text and are
 * embedded as values. Returns SQLITE_DONE's 0, or -1 when a step fails (the caller finalizes
 * st and reports). The one row converter of the store's readers, the dashboard's included. */
struct sqlite3_stmt;
int store_rows_json(struct sqlite3_stmt *st, const char *const *nested, json_t *arr);

/* Writing (server). Times are seconds since the epoch (double). */
int store_experiment_create(store_t *s, const char *name, const char *config_json, int64_t *id, err_t *err);
int store_run_create(store_t *s, int64_t experiment_id, int rounds_planned, int clients_planned, uint64_t seed,
                     const char *run_dir, int64_t *id, err_t *err);
/* status: "running", "done", "failed" or "stopped"; message may be NULL. */
int store_run_finish(store_t *s, int64_t run_id, const char *status, const char *message, err_t *err);

typedef struct store_round {
    int round;
    double started_at, ended_at;
    int selected, participants, dropped;
    double test_accuracy, test_loss, train_loss, train_accuracy;
    int64_t samples;
    int64_t bytes_down, bytes_up;
} store_round_t;
int store_round_insert(store_t *s, int64_t run_id, const store_round_t *r, err_t *err);
/* A run's latest model: the parameter vector, the server optimizer's state (opaque bytes) and a
 * JSON description of both (strategy, steps, vector names). */
typedef struct store_checkpoint {
    const void *params;
    size_t params_len;
    const void *state;
    size_t state_len;
    const char *meta;
} store_checkpoint_t;
/* Inserts the round and replaces the run's checkpoint in one transaction: either both are
 * committed or neither. ck may be NULL. Inside store_tx_begin/end it is a savepoint of that
 * transaction, so the round's metrics can join it. */
int store_round_commit(store_t *s, int64_t run_id, const store_round_t *r, const store_checkpoint_t *ck, err_t *err);
/* One transaction around several writes (a round, its checkpoint and its metrics: a server killed
 * in between must not leave a committed round without its epsilon). store_tx_end commits
 * (commit != 0) or rolls back; a failed commit is rolled back. */
int store_tx_begin(store_t *s, err_t *err);
int store_tx_end(store_t *s, int commit, err_t *err);
/* Loads the run's checkpoint (malloc'ed copies; store_checkpoint_free) and its round.
 * FN_ENOTFOUND when the run has none. */
int store_checkpoint_load(store_t *s, int64_t run_id, store_checkpoint_t *ck, int *round, err_t *err);
void store_checkpoint_free(store_checkpoint_t *ck);
/* For resuming: the run's experiment config (malloc'ed JSON text), and the run marked running
 * again. FN_ENOTFOUND for an unknown run, FN_ESTATE for a finished one. */
int store_run_reopen(store_t *s, int64_t run_id, char **config_json, int64_t *experiment_id, err_t *err);

/* Extra named per-round values (phase timings, privacy, ...). */
int store_metric_insert(store_t *s, int64_t run_id, int round, const char *name, double value, err_t *err);
/* One of them into *value (NULL: only whether it is there); FN_ENOTFOUND when it is not. */
int store_metric_get(store_t *s, int64_t run_id, int round, const char *name, double *value, err_t *err);

/* A client row is created on registration and updated as it contributes. */
int store_client_upsert(store_t *s, int64_t run_id, int client_id, const char *name, const char *public_key,
                        int64_t samples, const char *status, err_t *err);
int store_client_contributed(store_t *s, int64_t run_id, int client_id, int64_t bytes_up, int64_t bytes_down,
                             double latency_s, err_t *err);
int store_client_status(store_t *s, int64_t run_id, int client_id, const char *status, err_t *err);

/* Reading (web, CLI). Each returns a new JSON reference the caller decrefs. */
/* Array of runs, newest first: {id, experiment_id, experiment, status, rounds_planned, rounds_done,
 * clients_planned, best_accuracy, last_accuracy, started_at, ended_at, message}. */
int store_runs_json(store_t *s, json_t **out, err_t *err);
/* One run (same fields plus "config", the experiment JSON); FN_ENOTFOUND if absent. */
int store_run_json(store_t *s, int64_t run_id, json_t **out, err_t *err);
/* Array of rounds in order: {round, started_at, ended_at, duration, selected, participants, dropped,
 * test_accuracy, test_loss, train_loss, train_accuracy, samples, bytes_down, bytes_up}.
 * since_round > 0 returns only rounds after it (for polling). FN_ENOTFOUND if the run is absent. */
int store_rounds_json(store_t *s, int64_t run_id, int since_round, json_t **out, err_t *err);
/* Array of clients: {client_id, name, public_key, samples, status, joined_at, last_seen,
 * rounds_contributed, bytes_up, bytes_down, last_latency}. */
int store_clients_json(store_t *s, int64_t run_id, json_t **out, err_t *err);


/* ---- Reading for the dashboard (web/) ---------------------------------------------------- */
/* Array of experiments, newest first: {id, name, created_at, runs, config (JSON)}. */
int store_experiments_json(store_t *s, json_t **out, err_t *err);
/* A run's named per-round values in order: [{round, name, value}]; name NULL for all names,
 * only rounds after since_round. FN_ENOTFOUND if the run is absent. */
int store_metrics_json(store_t *s, int64_t run_id, const char *name, int since_round, json_t **out, err_t *err);
/* For /metrics: {"runs_by_status": {status: n}, "rounds_total": n,
 * "running": [{id, experiment, rounds_done, last_accuracy}]}. */
int store_summary_json(store_t *s, json_t **out, err_t *err);
/* SQLite's PRAGMA data_version of this handle: changes whenever another connection commits, so
 * a poller can skip its queries while nothing happened. */
int store_data_version(store_t *s, int64_t *out, err_t *err);
/* For event polling: rounds committed after rowid `after` in commit order, with their rowid:
 * [{rowid, run_id, round, participants, dropped, test_accuracy, test_loss, duration}]. */
int store_rounds_after_json(store_t *s, int64_t after, json_t **out, err_t *err);
/* Every run's {id, status, message, rounds_done, phase, phase_round}, and every client's
 * {run_id, client_id, name, status}: a poller diffs successive snapshots. */
int store_run_states_json(store_t *s, json_t **out, err_t *err);
int store_client_states_json(store_t *s, json_t **out, err_t *err);

/* Records the process serving a run (the server calls it when it starts or resumes the run),
 * so the dashboard can stop it. */
int store_run_set_pid(store_t *s, int64_t run_id, int64_t pid, err_t *err);
/* What the server serving a run is doing now: `phase` (see server.h for the names) in `round`,
 * with the time; the dashboard shows it live and pushes a round_phase event when it changes. */
int store_run_set_phase(store_t *s, int64_t run_id, int round, const char *phase, err_t *err);
/* The recorded pid (0 when none) and status of a run; FN_ENOTFOUND if absent. */
int store_run_pid(store_t *s, int64_t run_id, int64_t *pid, char status[16], err_t *err);

#endif
