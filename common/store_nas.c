#include "common/store_nas.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

static int db_err(store_t *s, err_t *err, const char *what)
{
    return err_set(err, FN_EIO, "run store %s: %s: %s", store_path(s), what, sqlite3_errmsg(store_sqlite(s)));
}

static int prep(store_t *s, const char *sql, sqlite3_stmt **st, err_t *err)
{
    if (sqlite3_prepare_v2(store_sqlite(s), sql, -1, st, NULL) != SQLITE_OK)
        return db_err(s, err, "preparing a NAS statement");
    return 0;
}

static int done(store_t *s, sqlite3_stmt *st, err_t *err, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(s, err, what);
}

static void bind_text(sqlite3_stmt *st, int i, const char *t)
{
    if (t && *t)
        sqlite3_bind_text(st, i, t, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static void bind_opt_int(sqlite3_stmt *st, int i, int64_t v)
{
    if (v >= 0)
        sqlite3_bind_int64(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

static void bind_opt_time(sqlite3_stmt *st, int i, double v)
{
    if (v > 0)
        sqlite3_bind_double(st, i, v);
    else
        sqlite3_bind_null(st, i);
}

static void col_text(sqlite3_stmt *st, int i, char *dst, size_t n)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, n, "%s", t ? (const char *)t : "");
}

static int64_t col_opt_int(sqlite3_stmt *st, int i)
{
    return sqlite3_column_type(st, i) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, i);
}

int store_nas_run_create(store_t *s, int64_t run_id, const store_nas_run_t *r, err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(s,
                  "INSERT INTO nas_runs(run_id, strategy, split_seed, budget, workers, threads, device, created_at) "
                  "VALUES (?,?,?,?,?,?,?,?)",
                  &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    bind_text(st, 2, r->strategy);
    sqlite3_bind_int64(st, 3, (int64_t)r->split_seed);
    sqlite3_bind_int64(st, 4, r->budget);
    sqlite3_bind_int64(st, 5, r->workers);
    sqlite3_bind_int64(st, 6, r->threads);
    bind_text(st, 7, r->device);
    sqlite3_bind_double(st, 8, fn_now());
    return done(s, st, err, "recording the search");
}

/* sql with its ?1 and ?2 bound to a and b (a statement may use either or both). */
static int run_sql(store_t *s, const char *sql, int64_t a, int64_t b, err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(s, sql, &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    return done(s, st, err, "extending the search");
}

int store_nas_run_extend(store_t *s, int64_t run_id, int budget, err_t *err)
{
    sqlite3 *db = store_sqlite(s);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE;", NULL, NULL, NULL) != SQLITE_OK)
        return db_err(s, err, "extending the search");
    int rc = run_sql(s, "UPDATE nas_runs SET budget = ?2 WHERE run_id = ?1", run_id, budget, err);
    if (rc == 0)
        rc = run_sql(s,
                     "UPDATE runs SET rounds_planned = ?2, status = CASE status WHEN 'done' THEN 'stopped' ELSE "
                     "status END WHERE id = ?1",
                     run_id, budget, err);
    if (rc == 0 && sqlite3_exec(db, "COMMIT;", NULL, NULL, NULL) != SQLITE_OK)
        rc = db_err(s, err, "extending the search");
    if (rc < 0)
        sqlite3_exec(db, "ROLLBACK;", NULL, NULL, NULL);
    return rc;
}

int store_nas_run_get(store_t *s, int64_t run_id, store_nas_run_t *r, err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT strategy, split_seed, budget, workers, threads, device FROM nas_runs WHERE run_id = ?",
                  &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(r, 0, sizeof *r);
        col_text(st, 0, r->strategy, sizeof r->strategy);
        r->split_seed = (uint64_t)sqlite3_column_int64(st, 1);
        r->budget = sqlite3_column_int(st, 2);
        r->workers = sqlite3_column_int(st, 3);
        r->threads = sqlite3_column_int(st, 4);
        col_text(st, 5, r->device, sizeof r->device);
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = err_set(err, FN_ENOTFOUND, "run %lld is not a NAS search", (long long)run_id);
    } else {
        rc = db_err(s, err, "reading the search");
    }
    sqlite3_finalize(st);
    return rc;
}

int store_nas_candidate_put(store_t *s, int64_t run_id, const store_nas_candidate_t *c, err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(s,
                  "INSERT OR REPLACE INTO nas_candidates(run_id, seq, cand_id, rung, diverged, hash, genome, arch, parent, mutation, budget, "
                  "status, attempts, reason, worker, cached_from, tell_seq, queued_at, started_at, ended_at, seconds, "
                  "val_accuracy, val_loss, train_loss, params, flops, latency_ms, threads) "
                  "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  &st, err);
    if (rc < 0)
        return rc;
    int i = 1;
    sqlite3_bind_int64(st, i++, run_id);
    sqlite3_bind_int64(st, i++, c->seq);
    sqlite3_bind_int64(st, i++, c->cand_id);
    sqlite3_bind_int(st, i++, c->rung);
    sqlite3_bind_int(st, i++, c->diverged);
    sqlite3_bind_text(st, i++, c->hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, i++, c->genome ? c->genome : "null", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, i++, c->arch ? c->arch : "null", -1, SQLITE_TRANSIENT);
    bind_opt_int(st, i++, c->parent);
    bind_text(st, i++, c->mutation);
    sqlite3_bind_double(st, i++, c->budget);
    sqlite3_bind_text(st, i++, c->status, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, i++, c->attempts);
    bind_text(st, i++, c->reason);
    bind_text(st, i++, c->worker);
    bind_opt_int(st, i++, c->cached_from);
    bind_opt_int(st, i++, c->tell_seq);
    sqlite3_bind_double(st, i++, c->queued_at);
    bind_opt_time(st, i++, c->started_at);
    bind_opt_time(st, i++, c->ended_at);
    bind_opt_time(st, i++, c->seconds);
    if (c->has_metrics) {
        sqlite3_bind_double(st, i++, c->val_accuracy);
        sqlite3_bind_double(st, i++, c->val_loss);
        sqlite3_bind_double(st, i++, c->train_loss);
        sqlite3_bind_int64(st, i++, c->params);
        sqlite3_bind_double(st, i++, c->flops);
        sqlite3_bind_double(st, i++, c->latency_ms);
        sqlite3_bind_int(st, i++, c->threads);
    }
    return done(s, st, err, "writing a NAS candidate");
}

static char *dup_col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "null");
}

int store_nas_candidates_load(store_t *s, int64_t run_id, store_nas_candidate_t **out, int *n, err_t *err)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    int rc = prep(s,
                  "SELECT seq, hash, genome, arch, parent, mutation, budget, status, attempts, reason, worker, "
                  "cached_from, tell_seq, queued_at, started_at, ended_at, seconds, val_accuracy, val_loss, "
                  "train_loss, params, flops, latency_ms, threads, cand_id, rung, diverged FROM nas_candidates WHERE run_id = ? ORDER BY seq",
                  &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    int cap = 0;
    store_nas_candidate_t *v = NULL;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 64;
            store_nas_candidate_t *nv = realloc(v, (size_t)cap * sizeof *v);
            FN_CHECK(nv);
            v = nv;
        }
        store_nas_candidate_t *c = &v[(*n)++];
        memset(c, 0, sizeof *c);
        c->seq = sqlite3_column_int64(st, 0);
        col_text(st, 1, c->hash, sizeof c->hash);
        c->genome = dup_col(st, 2);
        c->arch = dup_col(st, 3);
        c->parent = col_opt_int(st, 4);
        col_text(st, 5, c->mutation, sizeof c->mutation);
        c->budget = sqlite3_column_double(st, 6);
        col_text(st, 7, c->status, sizeof c->status);
        c->attempts = sqlite3_column_int(st, 8);
        col_text(st, 9, c->reason, sizeof c->reason);
        col_text(st, 10, c->worker, sizeof c->worker);
        c->cached_from = col_opt_int(st, 11);
        c->tell_seq = col_opt_int(st, 12);
        c->queued_at = sqlite3_column_double(st, 13);
        c->started_at = sqlite3_column_double(st, 14);
        c->ended_at = sqlite3_column_double(st, 15);
        c->seconds = sqlite3_column_double(st, 16);
        c->has_metrics = sqlite3_column_type(st, 17) != SQLITE_NULL;
        c->val_accuracy = sqlite3_column_double(st, 17);
        c->val_loss = sqlite3_column_double(st, 18);
        c->train_loss = sqlite3_column_double(st, 19);
        c->params = sqlite3_column_int64(st, 20);
        c->flops = sqlite3_column_double(st, 21);
        c->latency_ms = sqlite3_column_double(st, 22);
        c->threads = sqlite3_column_int(st, 23);
        c->cand_id = sqlite3_column_int64(st, 24);
        c->rung = sqlite3_column_int(st, 25);
        c->diverged = sqlite3_column_int(st, 26);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        store_nas_candidates_free(v, *n);
        *n = 0;
        return db_err(s, err, "reading NAS candidates");
    }
    *out = v;
    return 0;
}

void store_nas_candidates_free(store_nas_candidate_t *c, int n)
{
    for (int i = 0; c && i < n; i++) {
        free(c[i].genome);
        free(c[i].arch);
    }
    free(c);
}

int store_nas_final_put(store_t *s, int64_t run_id, const store_nas_final_t *f, err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(s,
                  "INSERT OR REPLACE INTO nas_final(run_id, rank, seq, arch, test_accuracy, test_loss, val_accuracy, "
                  "params, flops, latency_ms, recipe, weights, seconds, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                  &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int(st, 2, f->rank);
    sqlite3_bind_int64(st, 3, f->seq);
    sqlite3_bind_text(st, 4, f->arch, -1, SQLITE_TRANSIENT);
    sqlite3_bind_double(st, 5, f->test_accuracy);
    sqlite3_bind_double(st, 6, f->test_loss);
    sqlite3_bind_double(st, 7, f->val_accuracy);
    sqlite3_bind_int64(st, 8, f->params);
    sqlite3_bind_double(st, 9, f->flops);
    sqlite3_bind_double(st, 10, f->latency_ms);
    sqlite3_bind_text(st, 11, f->recipe, -1, SQLITE_TRANSIENT);
    sqlite3_bind_blob64(st, 12, f->weights, f->n_weights * sizeof(float), SQLITE_STATIC);
    sqlite3_bind_double(st, 13, f->seconds);
    sqlite3_bind_double(st, 14, fn_now());
    return done(s, st, err, "writing a retrained NAS model");
}

int store_nas_final_get(store_t *s, int64_t run_id, int rank, store_nas_final_t *f, char **arch, char **recipe,
                        float **weights, err_t *err)
{
    sqlite3_stmt *st;
    int rc = prep(s,
                  "SELECT seq, arch, test_accuracy, test_loss, val_accuracy, params, flops, latency_ms, recipe, "
                  "weights, seconds FROM nas_final WHERE run_id = ? AND rank = ?",
                  &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int(st, 2, rank);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        memset(f, 0, sizeof *f);
        f->rank = rank;
        f->seq = sqlite3_column_int64(st, 0);
        *arch = dup_col(st, 1);
        f->test_accuracy = sqlite3_column_double(st, 2);
        f->test_loss = sqlite3_column_double(st, 3);
        f->val_accuracy = sqlite3_column_double(st, 4);
        f->params = sqlite3_column_int64(st, 5);
        f->flops = sqlite3_column_double(st, 6);
        f->latency_ms = sqlite3_column_double(st, 7);
        *recipe = dup_col(st, 8);
        int bytes = sqlite3_column_bytes(st, 9);
        f->n_weights = (size_t)bytes / sizeof(float);
        *weights = FN_MALLOC(bytes > 0 ? (size_t)bytes : 1);
        if (bytes > 0)
            memcpy(*weights, sqlite3_column_blob(st, 9), (size_t)bytes);
        f->seconds = sqlite3_column_double(st, 10);
        f->arch = *arch;
        f->recipe = *recipe;
        f->weights = *weights;
        rc = 0;
    } else if (rc == SQLITE_DONE) {
        rc = err_set(err, FN_ENOTFOUND, "run %lld has no retrained model at rank %d", (long long)run_id, rank);
    } else {
        rc = db_err(s, err, "reading a retrained NAS model");
    }
    sqlite3_finalize(st);
    return rc;
}

int store_nas_final_done(store_t *s, int64_t run_id, int64_t seq[64], err_t *err)
{
    for (int r = 0; r < 64; r++)
        seq[r] = STORE_NAS_NO_FINAL;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT rank, seq FROM nas_final WHERE run_id = ?", &st, err);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, run_id);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int r = sqlite3_column_int(st, 0);
        if (r >= 1 && r < 64)
            seq[r] = col_opt_int(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(s, err, "reading retrained NAS models");
}

/* One JSON object per row (column name -> value); columns named in `nested` hold JSON text and
 * are embedded as values. */
static int rows_json(store_t *s, sqlite3_stmt *st, const char *const *nested, json_t *arr, err_t *err)
{
    int rc = store_rows_json(st, nested, arr);
    sqlite3_finalize(st);
    return rc == 0 ? 0 : db_err(s, err, "reading a NAS search");
}

int store_nas_json(store_t *s, int64_t run_id, int64_t since_seq, json_t **out, err_t *err)
{
    *out = NULL;
    static const char *const nested[] = {"genome", "arch", "recipe", NULL};
    json_t *search = json_array(), *cands = json_array(), *final = json_array();
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT strategy, split_seed, budget, workers, threads, device FROM nas_runs WHERE run_id = ?", &st,
                  err);
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, run_id);
        rc = rows_json(s, st, nested, search, err);
    }
    if (rc == 0 && json_array_size(search) == 0)
        rc = err_set(err, FN_ENOTFOUND, "run %lld is not a NAS search", (long long)run_id);
    if (rc == 0 && (rc = prep(s,
                              "SELECT seq, cand_id, rung, hash, genome, parent, mutation, budget, status, attempts, "
                              "diverged, reason, worker, cached_from, tell_seq, queued_at, started_at, ended_at, seconds, "
                              "val_accuracy, val_loss, train_loss, params, flops, latency_ms, threads "
                              "FROM nas_candidates WHERE run_id = ? AND seq > ? ORDER BY seq",
                              &st, err)) == 0) {
        sqlite3_bind_int64(st, 1, run_id);
        sqlite3_bind_int64(st, 2, since_seq);
        rc = rows_json(s, st, nested, cands, err);
    }
    if (rc == 0 && (rc = prep(s,
                              "SELECT rank, seq, arch, test_accuracy, test_loss, val_accuracy, params, flops, latency_ms, "
                              "recipe, seconds, length(weights) / 4 AS n_weights FROM nas_final WHERE run_id = ? "
                              "ORDER BY rank",
                              &st, err)) == 0) {
        sqlite3_bind_int64(st, 1, run_id);
        rc = rows_json(s, st, nested, final, err);
    }
    if (rc == 0)
        *out = json_pack("{s:O, s:O, s:O}", "search", json_array_get(search, 0), "candidates", cands, "final", final);
    json_decref(search);
    json_decref(cands);
    json_decref(final);
    return rc;
}
