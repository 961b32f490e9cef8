/* store.c: the run store (SQLite, WAL). Map: opening (PRAGMAs, the user_version migrations in
 * migrate(): the schema is store_schema.c), the 0600 mode of the store and its -wal/-shm files); the statement helpers
 * prepare/run_write/run_query that every public function goes through; writes by the server
 * (experiments, runs, rounds committed with their checkpoint in one transaction, metrics,
 * clients, phase and pid); then the reads the dashboard makes (JSON for the REST API and the
 * event poller's data_version/rowid queries). NAS tables live in store_nas.c. */
#include "common/store.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/store_schema.h"
#include "common/util.h"

struct store {
    sqlite3 *db;
    char path[1024];
};


/* What a failed write most likely means for the user, and what to do about it: the store's file
 * system is read-only or full, or the store is not writable by this user. Empty when the file
 * system shows none of these (the error is then SQLite's alone). */
static void io_hint(const char *path, int code, char *out, size_t cap)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else
        slash[slash == dir] = '\0';
    struct statvfs fs;
    int have = statvfs(dir, &fs) == 0;
    int prim = code & 0xff;
    out[0] = '\0';
    if (have && (fs.f_flag & ST_RDONLY))
        snprintf(out, cap,
                 " (the file system holding %s is mounted read-only: remount it read-write, or copy the store to a "
                 "writable disk and pass --db there; what was committed is kept)",
                 dir);
    else if (prim == SQLITE_FULL || (have && fs.f_bavail == 0 && (prim == SQLITE_IOERR || prim == SQLITE_CANTOPEN)))
        snprintf(out, cap,
                 " (the disk holding %s is full: %llu bytes free; free space there, or move the store and pass --db; "
                 "what was committed is kept)",
                 dir, have ? (unsigned long long)fs.f_bavail * fs.f_frsize : 0ULL);
    else if ((prim == SQLITE_READONLY || prim == SQLITE_CANTOPEN || prim == SQLITE_PERM) &&
             (access(dir, W_OK) != 0 || (access(path, F_OK) == 0 && access(path, W_OK) != 0)))
        snprintf(out, cap,
                 " (%s or its folder %s is not writable by this user: give write permission to both, and to its -wal "
                 "and -shm files)",
                 path, dir);
}

static int db_err(store_t *s, err_t *err, const char *what)
{
    char hint[512] = "";
    if (s && s->db)
        io_hint(s->path, sqlite3_extended_errcode(s->db), hint, sizeof hint);
    return err_set(err, FN_EIO, "run store %s: %s: %s%s", s ? s->path : "?", what,
                   s && s->db ? sqlite3_errmsg(s->db) : "no database", hint);
}

static int exec(store_t *s, const char *sql, err_t *err)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        char hint[512];
        io_hint(s->path, sqlite3_extended_errcode(s->db), hint, sizeof hint);
        err_set(err, FN_EIO, "run store %s: %s%s", s->path, msg ? msg : "error", hint);
        sqlite3_free(msg);
        return FN_EIO;
    }
    return 0;
}

sqlite3 *store_sqlite(store_t *s)
{
    return s->db;
}

const char *store_path(const store_t *s)
{
    return s->path;
}

int store_schema_version(store_t *s)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    return v;
}

static int migrate(store_t *s, err_t *err)
{
    int v = store_schema_version(s);
    if (v < 0)
        return db_err(s, err, "reading the schema version");
    if (v > store_n_migrations)
        return err_set(err, FN_EINVAL,
                       "run store %s has schema version %d, newer than this fednas understands (%d); "
                       "upgrade fednas or use another --db",
                       s->path, v, store_n_migrations);
    for (; v < store_n_migrations; v++) {
        char pragma[64];
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %d;", v + 1);
        if (exec(s, "BEGIN IMMEDIATE;", err) < 0)
            return err->code;
        if (exec(s, store_migrations[v], err) < 0 || exec(s, pragma, err) < 0) {
            sqlite3_exec(s->db, "ROLLBACK;", NULL, NULL, NULL);
            return err_wrap(err, "migrating to schema %d: ", v + 1);
        }
        if (exec(s, "COMMIT;", err) < 0)
            return err->code;
    }
    return 0;
}

/* The store holds experiment configs, client names and keys' fingerprints, and models: it is
 * created 0600 before SQLite opens it (SQLite gives its -wal, -shm and -journal files the
 * database file's mode, whatever the umask), and an existing one readable by others (made by
 * an older fednas) is narrowed to its owner, with its -wal and -shm files. A store that is a
 * symbolic link is followed, as SQLite follows it (users keep stores on other disks). */
static int make_private(const char *path, err_t *err)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int en = errno;
        char hint[512];
        io_hint(path, en == ENOSPC ? SQLITE_FULL : en == EROFS ? SQLITE_READONLY : SQLITE_PERM, hint, sizeof hint);
        return err_set(err, FN_EIO, "cannot open run store %s: %s%s", path, strerror(en),
                       hint[0] ? hint : " (check the directory exists and is writable)");
    }
    struct stat sb;
    if (fstat(fd, &sb) == 0 && (sb.st_mode & 077) && sb.st_uid == geteuid()) {
        fchmod(fd, 0600);
        static const char *const sfx[] = {"-wal", "-shm", "-journal"};
        for (int i = 0; i < 3; i++) {
            char side[1100];
            snprintf(side, sizeof side, "%s%s", path, sfx[i]);
            int sfd = open(side, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (sfd >= 0) {
                fchmod(sfd, 0600);
                close(sfd);
            }
        }
    }
    close(fd);
    return 0;
}

int store_open(const char *path, int read_only, store_t **out, err_t *err)
{
    *out = NULL;
    if (read_only) {
        struct stat sb;
        if (stat(path, &sb) != 0)
            return err_set(err, FN_ENOTFOUND, "run store %s does not exist; start a run first or pass --db PATH",
                           path);
    }
    if (!read_only && make_private(path, err) < 0)
        return err->code;
    store_t *s = FN_CALLOC(1, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    flags |= SQLITE_OPEN_NOMUTEX; /* one handle per thread */
    if (sqlite3_open_v2(path, &s->db, flags, NULL) != SQLITE_OK) {
        char hint[512] = " (check the directory exists and is writable)";
        if (s->db)
            io_hint(path, sqlite3_extended_errcode(s->db), hint, sizeof hint);
        int rc = err_set(err, FN_EIO, "cannot open run store %s: %s%s", path,
                         s->db ? sqlite3_errmsg(s->db) : "out of memory", hint[0] ? hint : " (check the directory exists and is writable)");
        store_close(s);
        return rc;
    }
    sqlite3_busy_timeout(s->db, 5000);
    int rc = 0;
    if (!read_only) {
        rc = exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", err);
        if (rc == 0)
            rc = migrate(s, err);
    } else if (exec(s, "PRAGMA cache_size=-256;", err) < 0) {
        /* Read-only handles are the dashboard's, one per web thread (16): each would otherwise
         * cache up to 2 MiB of the store, and the server's memory would grow with the store for
         * hours (the soak, tests/bench/soak.sh). The OS page cache keeps the reads cheap. */
        rc = err->code;
    } else if (store_schema_version(s) != STORE_SCHEMA_VERSION) {
        rc = err_set(err, FN_EINVAL, "run store %s has schema version %d, expected %d (is it a fednas store?)", path,
                     store_schema_version(s), STORE_SCHEMA_VERSION);
    }
    if (rc < 0) {
        store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void store_close(store_t *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    free(s);
}

/* Prepares sql and binds the arguments described by types: 'i' int64, 'd' double, 't' text
 * (NULL becomes SQL NULL). Keeps every write below a one-liner. */
static int prepare(store_t *s, sqlite3_stmt **st, err_t *err, const char *sql, const char *types, va_list ap)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK)
        return db_err(s, err, "preparing a statement");
    for (int i = 0; types[i]; i++) {
        int rc;
        if (types[i] == 'i')
            rc = sqlite3_bind_int64(*st, i + 1, va_arg(ap, int64_t));
        else if (types[i] == 'd')
            rc = sqlite3_bind_double(*st, i + 1, va_arg(ap, double));
        else {
            const char *t = va_arg(ap, const char *);
            rc = t ? sqlite3_bind_text(*st, i + 1, t, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(*st, i + 1);
        }
        if (rc != SQLITE_OK) {
            sqlite3_finalize(*st);
            *st = NULL;
            return db_err(s, err, "binding a value");
        }
    }
    return 0;
}

static int run_write(store_t *s, err_t *err, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st;
    va_list ap;
    va_start(ap, types);
    int rc = prepare(s, &st, err, sql, types, ap);
    va_end(ap);
    if (rc < 0)
        return rc;
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_err(s, err, "writing");
    return 0;
}

int store_rows_json(sqlite3_stmt *st, const char *const *nested, json_t *arr)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *row = json_object();
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            const char *name = sqlite3_column_name(st, c);
            json_t *v = NULL;
            switch (sqlite3_column_type(st, c)) {
            case SQLITE_INTEGER: v = json_integer(sqlite3_column_int64(st, c)); break;
            case SQLITE_FLOAT: v = json_real(sqlite3_column_double(st, c)); break;
            case SQLITE_TEXT: {
                const char *t = (const char *)sqlite3_column_text(st, c);
                for (int i = 0; nested && nested[i] && !v; i++)
                    if (strcmp(name, nested[i]) == 0)
                        v = json_loads(t, 0, NULL);
                if (!v)
                    v = json_string(t);
                break;
            }
            default: v = json_null(); break;
            }
            json_object_set_new(row, name, v ? v : json_null());
        }
        json_array_append_new(arr, row);
    }
    return rc == SQLITE_DONE ? 0 : -1;
}

/* Runs a query and appends one JSON object per row (column name -> value) to arr. */
static int run_query(store_t *s, json_t *arr, err_t *err, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st;
    va_list ap;
    va_start(ap, types);
    int rc = prepare(s, &st, err, sql, types, ap);
    va_end(ap);
    if (rc < 0)
        return rc;
    rc = store_rows_json(st, NULL, arr) == 0 ? SQLITE_DONE : SQLITE_ERROR;
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return db_err(s, err, "reading");
    return 0;
}

int store_experiment_create(store_t *s, const char *name, const char *config_json, int64_t *id, err_t *err)
{
    int rc = run_write(s, err, "INSERT INTO experiments(name, config, created_at) VALUES (?,?,?)", "ttd", name,
                       config_json, fn_now());
    if (rc == 0)
        *id = sqlite3_last_insert_rowid(s->db);
    return rc;
}

int store_run_create(store_t *s, int64_t experiment_id, int rounds_planned, int clients_planned, uint64_t seed,
                     const char *run_dir, int64_t *id, err_t *err)
{
    int rc = run_write(s, err,
                       "INSERT INTO runs(experiment_id, status, rounds_planned, clients_planned, seed, run_dir, "
                       "started_at) VALUES (?, 'running', ?, ?, ?, ?, ?)",
                       "iiiitd", experiment_id, (int64_t)rounds_planned, (int64_t)clients_planned, (int64_t)seed,
                       run_dir, fn_now());
    if (rc == 0)
        *id = sqlite3_last_insert_rowid(s->db);
    return rc;
}

int store_run_finish(store_t *s, int64_t run_id, const char *status, const char *message, err_t *err)
{
    return run_write(s, err, "UPDATE runs SET status = ?, message = ?, ended_at = ?, phase = NULL WHERE id = ?", "ttdi", status,
                     message, fn_now(), run_id);
}

int store_round_insert(store_t *s, int64_t run_id, const store_round_t *r, err_t *err)
{
    return run_write(s, err,
                     "INSERT INTO rounds(run_id, round, started_at, ended_at, selected, participants, dropped, "
                     "test_accuracy, test_loss, train_loss, train_accuracy, samples, bytes_down, bytes_up) "
                     "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                     "iiddiiiddddiii", run_id, (int64_t)r->round, r->started_at, r->ended_at, (int64_t)r->selected,
                     (int64_t)r->participants, (int64_t)r->dropped, r->test_accuracy, r->test_loss, r->train_loss,
                     r->train_accuracy, r->samples, r->bytes_down, r->bytes_up);
}

/* Binds a blob and runs; used for the checkpoint row. */
static int write_checkpoint(store_t *s, int64_t run_id, int round, const void *params, size_t params_len,
                            const void *state, size_t state_len, const char *meta, err_t *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "INSERT OR REPLACE INTO checkpoints(run_id, round, params, state, meta, created_at) "
                           "VALUES (?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "preparing a checkpoint");
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, round);
    sqlite3_bind_blob64(st, 3, params, params_len, SQLITE_STATIC);
    if (state && state_len)
        sqlite3_bind_blob64(st, 4, state, state_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 4);
    sqlite3_bind_text(st, 5, meta, -1, SQLITE_STATIC);
    sqlite3_bind_double(st, 6, fn_now());
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_err(s, err, "writing a checkpoint");
}

int store_round_commit(store_t *s, int64_t run_id, const store_round_t *r, const store_checkpoint_t *ck, err_t *err)
{
    /* A savepoint is a transaction of its own outside store_tx_begin and nests inside it. */
    int rc = exec(s, "SAVEPOINT round_commit;", err);
    if (rc < 0)
        return rc;
    rc = store_round_insert(s, run_id, r, err);
    if (rc == 0 && ck)
        rc = write_checkpoint(s, run_id, r->round, ck->params, ck->params_len, ck->state, ck->state_len, ck->meta, err);
    if (rc == 0 && (rc = exec(s, "RELEASE round_commit;", err)) == 0)
        return 0;
    sqlite3_exec(s->db, "ROLLBACK TO round_commit; RELEASE round_commit;", NULL, NULL, NULL);
    return rc;
}

int store_tx_begin(store_t *s, err_t *err)
{
    return exec(s, "BEGIN IMMEDIATE;", err);
}

int store_tx_end(store_t *s, int commit, err_t *err)
{
    int rc = commit ? exec(s, "COMMIT;", err) : 0;
    if (!commit || rc < 0)
        sqlite3_exec(s->db, "ROLLBACK;", NULL, NULL, NULL);
    return rc;
}

int store_checkpoint_load(store_t *s, int64_t run_id, store_checkpoint_t *ck, int *round, err_t *err)
{
    memset(ck, 0, sizeof *ck);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT round, params, state, meta FROM checkpoints WHERE run_id = ?", -1, &st,
                           NULL) != SQLITE_OK)
        return db_err(s, err, "reading a checkpoint");
    sqlite3_bind_int64(st, 1, run_id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        if (rc == SQLITE_DONE)
            return err_set(err, FN_ENOTFOUND, "run %lld has no committed round to resume from", (long long)run_id);
        return db_err(s, err, "reading a checkpoint");
    }
    *round = sqlite3_column_int(st, 0);
    size_t pl = (size_t)sqlite3_column_bytes(st, 1), sl = (size_t)sqlite3_column_bytes(st, 2);
    void *p = malloc(pl ? pl : 1), *q = malloc(sl ? sl : 1);
    const char *meta = (const char *)sqlite3_column_text(st, 3);
    char *m = strdup(meta ? meta : "{}");
    if (!p || !q || !m) {
        free(p);
        free(q);
        free(m);
        sqlite3_finalize(st);
        return err_set(err, FN_ENOMEM, "out of memory loading a checkpoint");
    }
    if (pl)
        memcpy(p, sqlite3_column_blob(st, 1), pl);
    if (sl)
        memcpy(q, sqlite3_column_blob(st, 2), sl);
    sqlite3_finalize(st);
    ck->params = p;
    ck->params_len = pl;
    ck->state = q;
    ck->state_len = sl;
    ck->meta = m;
    return 0;
}

void store_checkpoint_free(store_checkpoint_t *ck)
{
    free((void *)ck->params);
    free((void *)ck->state);
    free((void *)ck->meta);
    memset(ck, 0, sizeof *ck);
}

int store_run_reopen(store_t *s, int64_t run_id, char **config_json, int64_t *experiment_id, err_t *err)
{
    json_t *arr = json_array();
    int rc = run_query(s, arr, err,
                       "SELECT r.experiment_id, r.status, e.config FROM runs r JOIN experiments e ON "
                       "e.id = r.experiment_id WHERE r.id = ?",
                       "i", run_id);
    if (rc == 0 && json_array_size(arr) == 0)
        rc = err_set(err, FN_ENOTFOUND, "no run %lld in %s; `fednas runs --db %s` lists the runs", (long long)run_id,
                     s->path, s->path);
    if (rc == 0) {
        json_t *row = json_array_get(arr, 0);
        const char *status = json_string_value(json_object_get(row, "status"));
        if (strcmp(status, "done") == 0)
            rc = err_set(err, FN_ESTATE, "run %lld already finished; nothing to resume", (long long)run_id);
        else {
            *experiment_id = json_integer_value(json_object_get(row, "experiment_id"));
            *config_json = strdup(json_string_value(json_object_get(row, "config")));
            rc = run_write(s, err, "UPDATE runs SET status = 'running', ended_at = NULL, message = NULL WHERE id = ?",
                           "i", run_id);
        }
    }
    json_decref(arr);
    return rc;
}

int store_metric_insert(store_t *s, int64_t run_id, int round, const char *name, double value, err_t *err)
{
    return run_write(s, err, "INSERT OR REPLACE INTO round_metrics(run_id, round, name, value) VALUES (?,?,?,?)",
                     "iitd", run_id, (int64_t)round, name, value);
}

int store_metric_get(store_t *s, int64_t run_id, int round, const char *name, double *value, err_t *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM round_metrics WHERE run_id = ? AND round = ? AND name = ?", -1,
                           &st, NULL) != SQLITE_OK)
        return db_err(s, err, "reading a round metric");
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, round);
    sqlite3_bind_text(st, 3, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && value)
        *value = sqlite3_column_double(st, 0);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return 0;
    return rc == SQLITE_DONE ? err_set(err, FN_ENOTFOUND, "run %lld has no %s for round %d", (long long)run_id, name, round)
                             : db_err(s, err, "reading a round metric");
}

int store_client_upsert(store_t *s, int64_t run_id, int client_id, const char *name, const char *public_key,
                        int64_t samples, const char *status, err_t *err)
{
    double now = fn_now();
    return run_write(s, err,
                     "INSERT INTO clients(run_id, client_id, name, public_key, samples, status, joined_at, last_seen) "
                     "VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(run_id, client_id) DO UPDATE SET "
                     "name = excluded.name, public_key = excluded.public_key, samples = excluded.samples, "
                     "status = excluded.status, last_seen = excluded.last_seen",
                     "iittitdd", run_id, (int64_t)client_id, name, public_key, samples, status, now, now);
}

int store_client_contributed(store_t *s, int64_t run_id, int client_id, int64_t bytes_up, int64_t bytes_down,
                             double latency_s, err_t *err)
{
    return run_write(s, err,
                     "UPDATE clients SET rounds_contributed = rounds_contributed + 1, bytes_up = bytes_up + ?, "
                     "bytes_down = bytes_down + ?, last_latency = ?, last_seen = ? WHERE run_id = ? AND client_id = ?",
                     "iiddii", bytes_up, bytes_down, latency_s, fn_now(), run_id, (int64_t)client_id);
}

int store_client_status(store_t *s, int64_t run_id, int client_id, const char *status, err_t *err)
{
    return run_write(s, err, "UPDATE clients SET status = ?, last_seen = ? WHERE run_id = ? AND client_id = ?",
                     "tdii", status, fn_now(), run_id, (int64_t)client_id);
}

#define RUN_COLUMNS                                                                                             \
    "SELECT r.id, r.experiment_id, e.name AS experiment, r.status, r.rounds_planned, "                         \
    "(SELECT COUNT(*) FROM rounds x WHERE x.run_id = r.id) AS rounds_done, r.clients_planned, r.seed, "        \
    "(SELECT MAX(test_accuracy) FROM rounds x WHERE x.run_id = r.id) AS best_accuracy, "                       \
    "(SELECT test_accuracy FROM rounds x WHERE x.run_id = r.id ORDER BY round DESC LIMIT 1) AS last_accuracy, " \
    "r.started_at, r.ended_at, r.message, r.phase, r.phase_round, r.phase_at "

int store_runs_json(store_t *s, json_t **out, err_t *err)
{
    json_t *arr = json_array();
    int rc = run_query(s, arr, err,
                       RUN_COLUMNS "FROM runs r JOIN experiments e ON e.id = r.experiment_id ORDER BY r.id DESC", "");
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int store_run_json(store_t *s, int64_t run_id, json_t **out, err_t *err)
{
    json_t *arr = json_array();
    int rc = run_query(s, arr, err,
                       RUN_COLUMNS ", e.config AS config FROM runs r JOIN experiments e ON e.id = r.experiment_id "
                                   "WHERE r.id = ?",
                       "i", run_id);
    if (rc == 0 && json_array_size(arr) == 0)
        rc = err_set(err, FN_ENOTFOUND, "no run with id %lld", (long long)run_id);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    json_t *run = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    /* Serve the config as JSON, not as a string holding JSON. */
    json_t *cfg = json_loads(json_string_value(json_object_get(run, "config")), 0, NULL);
    json_object_set_new(run, "config", cfg ? cfg : json_null());
    *out = run;
    return 0;
}

static int run_exists(store_t *s, int64_t run_id, err_t *err)
{
    json_t *arr = json_array();
    int rc = run_query(s, arr, err, "SELECT id FROM runs WHERE id = ?", "i", run_id);
    if (rc == 0 && json_array_size(arr) == 0)
        rc = err_set(err, FN_ENOTFOUND, "no run with id %lld", (long long)run_id);
    json_decref(arr);
    return rc;
}

int store_rounds_json(store_t *s, int64_t run_id, int since_round, json_t **out, err_t *err)
{
    int rc = run_exists(s, run_id, err);
    if (rc < 0)
        return rc;
    json_t *arr = json_array();
    rc = run_query(s, arr, err,
                   "SELECT round, started_at, ended_at, ended_at - started_at AS duration, selected, participants, "
                   "dropped, test_accuracy, test_loss, train_loss, train_accuracy, samples, bytes_down, bytes_up "
                   "FROM rounds WHERE run_id = ? AND round > ? ORDER BY round",
                   "ii", run_id, (int64_t)since_round);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int store_clients_json(store_t *s, int64_t run_id, json_t **out, err_t *err)
{
    int rc = run_exists(s, run_id, err);
    if (rc < 0)
        return rc;
    json_t *arr = json_array();
    rc = run_query(s, arr, err,
                   "SELECT client_id, name, public_key, samples, status, joined_at, last_seen, rounds_contributed, "
                   "bytes_up, bytes_down, last_latency FROM clients WHERE run_id = ? ORDER BY client_id",
                   "i", run_id);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

/* ---- Reading for the dashboard (web/) ---------------------------------------------------- */

static int query_all(store_t *s, json_t **out, err_t *err, const char *sql)
{
    json_t *arr = json_array();
    int rc = run_query(s, arr, err, sql, "");
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int store_experiments_json(store_t *s, json_t **out, err_t *err)
{
    json_t *arr;
    int rc = query_all(s, &arr, err,
                       "SELECT e.id, e.name, e.created_at, (SELECT COUNT(*) FROM runs r WHERE r.experiment_id = e.id) "
                       "AS runs, e.config FROM experiments e ORDER BY e.id DESC");
    if (rc < 0)
        return rc;
    size_t i;
    json_t *row;
    json_array_foreach(arr, i, row) {
        json_t *cfg = json_loads(json_string_value(json_object_get(row, "config")), 0, NULL);
        json_object_set_new(row, "config", cfg ? cfg : json_null());
    }
    *out = arr;
    return 0;
}

int store_metrics_json(store_t *s, int64_t run_id, const char *name, int since_round, json_t **out, err_t *err)
{
    int rc = run_exists(s, run_id, err);
    if (rc < 0)
        return rc;
    json_t *arr = json_array();
    rc = run_query(s, arr, err,
                   "SELECT round, name, value FROM round_metrics WHERE run_id = ? AND (?2 IS NULL OR name = ?2) "
                   "AND round > ?3 ORDER BY round, name",
                   "iti", run_id, name, (int64_t)since_round);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int store_summary_json(store_t *s, json_t **out, err_t *err)
{
    json_t *by = NULL, *total = NULL, *running = NULL;
    int rc = query_all(s, &by, err, "SELECT status, COUNT(*) AS n FROM runs GROUP BY status");
    if (rc == 0)
        rc = query_all(s, &total, err, "SELECT COUNT(*) AS n FROM rounds");
    if (rc == 0)
        rc = query_all(s, &running, err,
                       "SELECT r.id, e.name AS experiment, (SELECT COUNT(*) FROM rounds x WHERE x.run_id = r.id) AS "
                       "rounds_done, (SELECT test_accuracy FROM rounds x WHERE x.run_id = r.id ORDER BY round DESC "
                       "LIMIT 1) AS last_accuracy FROM runs r JOIN experiments e ON e.id = r.experiment_id WHERE "
                       "r.status = 'running' ORDER BY r.id");
    if (rc < 0) {
        json_decref(by);
        json_decref(total);
        json_decref(running);
        return rc;
    }
    json_t *status = json_object();
    size_t i;
    json_t *row;
    json_array_foreach(by, i, row) {
        json_object_set(status, json_string_value(json_object_get(row, "status")), json_object_get(row, "n"));
    }
    json_t *o = json_object();
    json_object_set_new(o, "runs_by_status", status);
    json_object_set(o, "rounds_total", json_object_get(json_array_get(total, 0), "n"));
    json_object_set_new(o, "running", running);
    json_decref(by);
    json_decref(total);
    *out = o;
    return 0;
}

int store_data_version(store_t *s, int64_t *out, err_t *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "PRAGMA data_version", -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "preparing PRAGMA data_version");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : db_err(s, err, "reading PRAGMA data_version");
}

int store_rounds_after_json(store_t *s, int64_t after, json_t **out, err_t *err)
{
    json_t *arr = json_array();
    int rc = run_query(s, arr, err,
                       "SELECT rowid, run_id, round, participants, dropped, test_accuracy, test_loss, "
                       "ended_at - started_at AS duration FROM rounds WHERE rowid > ? ORDER BY rowid LIMIT 1000",
                       "i", after);
    if (rc < 0) {
        json_decref(arr);
        return rc;
    }
    *out = arr;
    return 0;
}

int store_run_states_json(store_t *s, json_t **out, err_t *err)
{
    return query_all(s, out, err,
                     "SELECT id, status, message, (SELECT COUNT(*) FROM rounds x WHERE x.run_id = r.id) AS rounds_done, "
                     "phase, phase_round FROM runs r ORDER BY id");
}

int store_client_states_json(store_t *s, json_t **out, err_t *err)
{
    return query_all(s, out, err, "SELECT run_id, client_id, name, status FROM clients ORDER BY run_id, client_id");
}

int store_run_set_pid(store_t *s, int64_t run_id, int64_t pid, err_t *err)
{
    return run_write(s, err, "UPDATE runs SET pid = ? WHERE id = ?", "ii", pid, run_id);
}

int store_run_set_phase(store_t *s, int64_t run_id, int round, const char *phase, err_t *err)
{
    return run_write(s, err, "UPDATE runs SET phase = ?, phase_round = ?, phase_at = ? WHERE id = ?", "tidi", phase,
                     (int64_t)round, fn_now(), run_id);
}

int store_run_pid(store_t *s, int64_t run_id, int64_t *pid, char status[16], err_t *err)
{
    json_t *arr = json_array();
    int rc = run_query(s, arr, err, "SELECT pid, status FROM runs WHERE id = ?", "i", run_id);
    if (rc == 0 && json_array_size(arr) == 0)
        rc = err_set(err, FN_ENOTFOUND, "no run with id %lld", (long long)run_id);
    if (rc == 0) {
        json_t *row = json_array_get(arr, 0);
        *pid = json_integer_value(json_object_get(row, "pid")); /* 0 when NULL */
        snprintf(status, 16, "%s", json_string_value(json_object_get(row, "status")));
    }
    json_decref(arr);
    return rc;
}
