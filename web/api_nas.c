/* api_nas.c: the REST side of the NAS page. store_nas_json (common/) serves a whole search; the
 * page also needs what a search of hundreds of candidates should not ship whole on every
 * update: the candidates sorted and filtered by the server (and as CSV), one candidate with its
 * decoded architecture and its lineage, the Pareto front against a chosen cost, and every search
 * with its hypervolume for comparing strategies. The NAS tables belong to the controller
 * (common/store_nas.c); the queries here are read-only and live here so that web/ needs nothing
 * more from it than the table layout.
 *
 * Every query parameter is checked: an unknown name, a bad value or an impossible range is a
 * 400 naming the parameter and what it accepts, never an empty or unfiltered answer. */
#include <civetweb.h>
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/store.h"
#include "common/store_nas.h"
#include "web/web_internal.h"

/* ---- the front and the hypervolume (pure; the unit test checks them by hand) ---------------- */

int web_nas_front(const double *acc, const double *x, int n, int *front)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        front[i] = isfinite(acc[i]) && isfinite(x[i]);
        for (int j = 0; j < n && front[i]; j++) {
            if (j == i || !isfinite(acc[j]) || !isfinite(x[j]))
                continue;
            if (acc[j] >= acc[i] && x[j] <= x[i] && (acc[j] > acc[i] || x[j] < x[i]))
                front[i] = 0;
        }
        k += front[i];
    }
    return k;
}

typedef struct hv_pt {
    double e, p;
} hv_pt_t;

static int by_e(const void *a, const void *b)
{
    const hv_pt_t *x = a, *y = b;
    return (x->e > y->e) - (x->e < y->e);
}

double web_nas_hypervolume(const double *acc, const double *params, int n)
{
    hv_pt_t *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
    if (!v)
        return NAN;
    int m = 0;
    for (int i = 0; i < n; i++) {
        double e = 1.0 - acc[i], p = params[i] / 100000.0;
        if (isfinite(e) && isfinite(p) && e < 1.0 && p < 1.0)
            v[m++] = (hv_pt_t){e, p};
    }
    /* Sweep by error: each point adds the strip between its parameters and the lowest
     * parameters seen so far, as wide as its distance to the reference error. */
    qsort(v, (size_t)m, sizeof *v, by_e);
    double area = 0, low = 1.0;
    for (int i = 0; i < m; i++) {
        if (v[i].p < low) {
            area += (1.0 - v[i].e) * (low - v[i].p);
            low = v[i].p;
        }
    }
    free(v);
    return area;
}

/* ---- rows as JSON ------------------------------------------------------------------------ */

int web_nas_rows_json(sqlite3_stmt *st, json_t *arr, int nest_json)
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
                if (nest_json && (strcmp(name, "genome") == 0 || strcmp(name, "arch") == 0))
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
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

/* ---- query parameters -------------------------------------------------------------------- */

/* Refuses a parameter not in names (NULL-terminated): a misspelt filter must not silently
 * return everything. */
static int only_params(const web_req_t *rq, const char *const *names)
{
    const char *q = rq->query;
    while (q && *q) {
        size_t n = strcspn(q, "&");
        size_t k = strcspn(q, "=&");
        char key[64];
        int kl = k < sizeof key ? mg_url_decode(q, (int)k, key, (int)sizeof key, 1) : -1;
        int ok = 0;
        for (int i = 0; kl >= 0 && names[i] && !ok; i++)
            ok = strcmp(key, names[i]) == 0;
        if (!ok && k > 0) {
            char list[256] = "";
            for (int i = 0; names[i]; i++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", names[i]);
            return web_send_error(rq, 400, "unknown query parameter \"%.*s\"; this endpoint takes %s",
                                  (int)(k > 40 ? 40 : k), q, list);
        }
        q += n;
        if (*q == '&')
            q++;
    }
    return 0;
}

/* The decoded value of name: 1 when present (in v), 0 when absent, -1 when too long. */
static int param(const web_req_t *rq, const char *name, char *v, size_t cap)
{
    if (!rq->query)
        return 0;
    int n = mg_get_var(rq->query, strlen(rq->query), name, v, cap);
    return n == -1 ? 0 : n < 0 ? -1 : 1;
}

/* A plain decimal number (digits, one '.', an exponent) in [lo, hi]. */
static int parse_number(const char *s, double lo, double hi, double *out)
{
    if (!*s || strlen(s) > 32)
        return -1;
    for (const char *p = s; *p; p++)
        if (!isdigit((unsigned char)*p) && !strchr(".eE+-", *p))
            return -1;
    if (!isdigit((unsigned char)s[0]) && s[0] != '.')
        return -1;
    char *end;
    double v = strtod(s, &end);
    if (*end || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* Each is one column the table may be sorted by; the names are the JSON fields'. */
static const char *const k_sort_cols[] = {"seq", "cand_id", "rung", "hash", "status", "budget", "attempts",
                                          "tell_seq", "started_at", "ended_at", "seconds", "val_accuracy",
                                          "val_loss", "train_loss", "params", "flops", "latency_ms", NULL};
static const char *const k_statuses[] = {"queued", "running", "done", "failed", NULL};

typedef struct filter {
    const char *sort; /* from k_sort_cols */
    int desc;
    int status_mask; /* bit i: k_statuses[i]; 0: all */
    double min_acc, max_acc;
    long long max_params;
    double max_flops, max_latency;
    char hash[65];
    long long rung, since, limit, offset;
} filter_t;

/* Reads the candidates filters; sends the 400 and returns its status on a bad one. */
static int read_filter(const web_req_t *rq, filter_t *f)
{
    static const char *const names[] = {"sort",      "order",          "status", "min_accuracy", "max_accuracy",
                                        "max_params", "max_flops", "max_latency_ms", "hash",   "rung",
                                        "since",      "limit",     "offset",         NULL};
    int rc = only_params(rq, names);
    if (rc)
        return rc;
    *f = (filter_t){.sort = "seq", .min_acc = -1, .max_acc = 2, .max_params = -1, .max_flops = -1,
                    .max_latency = -1, .rung = -1, .since = -1, .limit = 1000000};
    char v[96];
    if ((rc = param(rq, "sort", v, sizeof v)) != 0) {
        f->sort = NULL;
        for (int i = 0; rc > 0 && k_sort_cols[i] && !f->sort; i++)
            if (strcmp(v, k_sort_cols[i]) == 0)
                f->sort = k_sort_cols[i];
        if (!f->sort)
            return web_send_error(rq, 400, "sort must be one of seq, cand_id, rung, hash, status, budget, attempts, "
                                           "tell_seq, started_at, ended_at, seconds, val_accuracy, val_loss, "
                                           "train_loss, params, flops, latency_ms");
    }
    if ((rc = param(rq, "order", v, sizeof v)) != 0) {
        if (rc < 0 || (strcmp(v, "asc") != 0 && strcmp(v, "desc") != 0))
            return web_send_error(rq, 400, "order must be asc or desc");
        f->desc = strcmp(v, "desc") == 0;
    }
    if ((rc = param(rq, "status", v, sizeof v)) != 0) {
        /* A comma-separated subset: status=done,failed */
        for (const char *tok = v; rc > 0;) {
            size_t n = strcspn(tok, ",");
            int bit = -1;
            for (int i = 0; k_statuses[i]; i++)
                if (n == strlen(k_statuses[i]) && strncmp(tok, k_statuses[i], n) == 0)
                    bit = i;
            if (bit < 0)
                rc = -1; /* an unknown name, or an empty one ("done,") */
            else
                f->status_mask |= 1 << bit;
            if (!tok[n])
                break;
            tok += n + 1;
        }
        if (rc < 0 || f->status_mask == 0)
            return web_send_error(rq, 400, "status must be queued, running, done or failed, or a comma-separated "
                                           "list of them");
    }
    if ((rc = param(rq, "min_accuracy", v, sizeof v)) != 0 && (rc < 0 || parse_number(v, 0, 1, &f->min_acc) < 0))
        return web_send_error(rq, 400, "min_accuracy must be a number from 0 to 1 (e.g. 0.85)");
    if ((rc = param(rq, "max_accuracy", v, sizeof v)) != 0 && (rc < 0 || parse_number(v, 0, 1, &f->max_acc) < 0))
        return web_send_error(rq, 400, "max_accuracy must be a number from 0 to 1 (e.g. 0.95)");
    if (f->min_acc > f->max_acc && f->max_acc <= 1)
        return web_send_error(rq, 400, "min_accuracy (%g) is above max_accuracy (%g)", f->min_acc, f->max_acc);
    if ((rc = param(rq, "max_params", v, sizeof v)) != 0 &&
        (rc < 0 || web_parse_u64(v, strlen(v), INT64_MAX, &f->max_params) < 0))
        return web_send_error(rq, 400, "max_params must be a parameter count (digits only)");
    if ((rc = param(rq, "max_flops", v, sizeof v)) != 0 && (rc < 0 || parse_number(v, 0, 1e18, &f->max_flops) < 0))
        return web_send_error(rq, 400, "max_flops must be a number of FLOPs >= 0 (e.g. 2e6)");
    if ((rc = param(rq, "max_latency_ms", v, sizeof v)) != 0 &&
        (rc < 0 || parse_number(v, 0, 1e9, &f->max_latency) < 0))
        return web_send_error(rq, 400, "max_latency_ms must be a number of milliseconds >= 0");
    if ((rc = param(rq, "hash", v, sizeof v)) != 0) {
        size_t n = rc > 0 ? strlen(v) : 0;
        int hex = n >= 1 && n <= 64;
        for (size_t i = 0; hex && i < n; i++)
            hex = (v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f');
        if (!hex)
            return web_send_error(rq, 400, "hash must be 1 to 64 lowercase hex digits (a prefix of the genome hash)");
        memcpy(f->hash, v, n + 1);
    }
    if ((rc = param(rq, "rung", v, sizeof v)) != 0 && (rc < 0 || web_parse_u64(v, strlen(v), 1000, &f->rung) < 0))
        return web_send_error(rq, 400, "rung must be a rung number (digits only, 0..1000)");
    if ((rc = param(rq, "since", v, sizeof v)) != 0 &&
        (rc < 0 || web_parse_u64(v, strlen(v), INT64_MAX, &f->since) < 0))
        return web_send_error(rq, 400, "since must be a candidate seq (digits only): rows after it are returned");
    if ((rc = param(rq, "limit", v, sizeof v)) != 0 &&
        (rc < 0 || web_parse_u64(v, strlen(v), 1000000, &f->limit) < 0 || f->limit < 1))
        return web_send_error(rq, 400, "limit must be a row count from 1 to 1000000");
    if ((rc = param(rq, "offset", v, sizeof v)) != 0 &&
        (rc < 0 || web_parse_u64(v, strlen(v), INT_MAX, &f->offset) < 0))
        return web_send_error(rq, 400, "offset must be a row count (digits only)");
    return 0;
}

/* The WHERE clause of f (values bound by bind_filter in the same order). */
static void where_sql(const filter_t *f, char *w, size_t cap)
{
    snprintf(w, cap, "WHERE run_id = ?1");
#define ADD(s) snprintf(w + strlen(w), cap - strlen(w), "%s", s)
    if (f->status_mask) {
        ADD(" AND status IN (");
        for (int i = 0, first = 1; k_statuses[i]; i++)
            if (f->status_mask & (1 << i)) {
                snprintf(w + strlen(w), cap - strlen(w), "%s'%s'", first ? "" : ",", k_statuses[i]);
                first = 0;
            }
        ADD(")");
    }
    if (f->min_acc >= 0)
        ADD(" AND val_accuracy >= ?2");
    if (f->max_acc <= 1)
        ADD(" AND val_accuracy <= ?3");
    if (f->max_params >= 0)
        ADD(" AND params <= ?4");
    if (f->max_flops >= 0)
        ADD(" AND flops <= ?5");
    if (f->max_latency >= 0)
        ADD(" AND latency_ms <= ?6");
    if (f->hash[0])
        ADD(" AND substr(hash, 1, length(?7)) = ?7");
    if (f->rung >= 0)
        ADD(" AND rung = ?8");
    if (f->since >= 0)
        ADD(" AND seq > ?9");
#undef ADD
}

static void bind_filter(sqlite3_stmt *st, int64_t run, const filter_t *f)
{
    sqlite3_bind_int64(st, 1, run);
    sqlite3_bind_double(st, 2, f->min_acc);
    sqlite3_bind_double(st, 3, f->max_acc);
    sqlite3_bind_int64(st, 4, f->max_params);
    sqlite3_bind_double(st, 5, f->max_flops);
    sqlite3_bind_double(st, 6, f->max_latency);
    sqlite3_bind_text(st, 7, f->hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 8, f->rung);
    sqlite3_bind_int64(st, 9, f->since);
}

/* bind_filter binds ?1..?9 whichever the WHERE names: SQLite sizes a statement's parameters by
 * the largest ?N it uses, binding a slot nothing reads is harmless, and one past the largest
 * is an SQLITE_RANGE bind_filter ignores. */
static int prep(sqlite3 *db, const char *sql, sqlite3_stmt **st, err_t *e)
{
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) == SQLITE_OK)
        return 0;
    return err_set(e, FN_EIO, "reading a NAS search: %s", sqlite3_errmsg(db));
}

/* FN_ENOTFOUND unless run is a search. */
static int is_search(sqlite3 *db, int64_t run, err_t *e)
{
    sqlite3_stmt *st;
    int rc = prep(db, "SELECT 1 FROM nas_runs WHERE run_id = ?", &st, e);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, run);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return err_set(e, FN_ENOTFOUND, "run %lld is not a NAS search", (long long)run);
    return err_set(e, FN_EIO, "reading a NAS search: %s", sqlite3_errmsg(db));
}

/* The filtered, sorted candidates of run and how many match before limit/offset. */
static int query_candidates(sqlite3 *db, int64_t run, const filter_t *f, int nest, json_t **rows, long long *total,
                            err_t *e)
{
    int rc = is_search(db, run, e);
    if (rc < 0)
        return rc;
    char where[512], sql[1024];
    where_sql(f, where, sizeof where);
    sqlite3_stmt *st;
    snprintf(sql, sizeof sql, "SELECT count(*) FROM nas_candidates %s", where);
    if ((rc = prep(db, sql, &st, e)) < 0)
        return rc;
    bind_filter(st, run, f);
    *total = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    /* Missing values (a running candidate's accuracy) sort last either way; seq breaks ties. */
    snprintf(sql, sizeof sql,
             "SELECT " WEB_NAS_CANDIDATE_COLUMNS ", genome FROM nas_candidates %s ORDER BY %s IS NULL, %s %s, seq "
             "LIMIT %lld OFFSET %lld",
             where, f->sort, f->sort, f->desc ? "DESC" : "ASC", f->limit, f->offset);
    if ((rc = prep(db, sql, &st, e)) < 0)
        return rc;
    bind_filter(st, run, f);
    *rows = json_array();
    if (web_nas_rows_json(st, *rows, nest) < 0) {
        json_decref(*rows);
        *rows = NULL;
        return err_set(e, FN_EIO, "reading NAS candidates: %s", sqlite3_errmsg(db));
    }
    return 0;
}

int web_api_nas_candidates(const web_req_t *rq)
{
    int status = 500;
    int64_t id;
    filter_t f;
    if (web_api_run_id(rq, &id, &status) < 0)
        return status;
    if ((status = read_filter(rq, &f)) != 0)
        return status;
    store_t *s = web_api_store(rq, &status);
    if (!s)
        return status;
    json_t *rows = NULL;
    long long total = 0;
    err_t e = {0};
    int rc = query_candidates(store_sqlite(s), id, &f, 1, &rows, &total, &e);
    json_t *body = rc == 0 ? json_pack("{s:I, s:I, s:s, s:s, s:o}", "run_id", (json_int_t)id, "total",
                                       (json_int_t)total, "sort", f.sort, "order", f.desc ? "desc" : "asc",
                                       "candidates", rows)
                           : NULL;
    return web_api_reply(rq, rc, body, &e);
}

int web_api_nas_candidates_csv(const web_req_t *rq)
{
    static const char *const cols[] = {"seq",        "cand_id",      "rung",         "hash",       "parent",
                                       "mutation",   "budget",       "status",       "attempts",   "diverged",
                                       "reason",     "worker",       "cached_from",  "tell_seq",   "queued_at",
                                       "started_at", "ended_at",     "seconds",      "val_accuracy", "val_loss",
                                       "train_loss", "params",       "flops",        "latency_ms", "threads",
                                       "genome",     NULL};
    int status = 500;
    int64_t id;
    filter_t f;
    if (web_api_run_id(rq, &id, &status) < 0)
        return status;
    if ((status = read_filter(rq, &f)) != 0)
        return status;
    store_t *s = web_api_store(rq, &status);
    if (!s)
        return status;
    json_t *rows = NULL;
    long long total = 0;
    err_t e = {0};
    int rc = query_candidates(store_sqlite(s), id, &f, 0, &rows, &total, &e);
    if (rc < 0)
        return web_api_reply(rq, rc, NULL, &e);
    char name[64];
    snprintf(name, sizeof name, "run-%lld-candidates.csv", (long long)id);
    return web_api_send_csv(rq, rows, cols, name);
}

/* ---- one candidate: architecture and lineage ------------------------------------------------ */

static json_t *one_row(sqlite3 *db, const char *sql, int64_t a, int64_t b, err_t *e)
{
    sqlite3_stmt *st;
    if (prep(db, sql, &st, e) < 0)
        return NULL;
    sqlite3_bind_int64(st, 1, a);
    sqlite3_bind_int64(st, 2, b);
    json_t *arr = json_array();
    if (web_nas_rows_json(st, arr, 1) < 0)
        err_set(e, FN_EIO, "reading a NAS candidate: %s", sqlite3_errmsg(db));
    json_t *row = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    return row;
}

int web_api_nas_candidate(const web_req_t *rq)
{
    static const char *const names[] = {"seq", NULL};
    int status = 500;
    int64_t id;
    if (web_api_run_id(rq, &id, &status) < 0)
        return status;
    if ((status = only_params(rq, names)) != 0)
        return status;
    char v[32];
    long long seq;
    int got = param(rq, "seq", v, sizeof v);
    if (got <= 0 || web_parse_u64(v, strlen(v), INT64_MAX, &seq) < 0)
        return web_send_error(rq, 400, "seq must be a candidate's seq (digits only), e.g. ?seq=3");
    store_t *s = web_api_store(rq, &status);
    if (!s)
        return status;
    sqlite3 *db = store_sqlite(s);
    err_t e = {0};
    int rc = is_search(db, id, &e);
    json_t *cand = NULL, *lineage = json_array();
    if (rc == 0) {
        cand = one_row(db, "SELECT " WEB_NAS_CANDIDATE_COLUMNS ", genome, arch FROM nas_candidates "
                           "WHERE run_id = ?1 AND seq = ?2", id, seq, &e);
        if (!cand)
            rc = e.code ? e.code : err_set(&e, FN_ENOTFOUND, "run %lld has no candidate %lld", (long long)id, seq);
    }
    /* Parents are the strategy's candidate ids: each ancestor is the first row asked with that
     * id (an ASHA promotion repeats an id at a higher rung). A chain is at most as long as the
     * search; the visited bound only guards against a damaged store. */
    json_t *parent = json_object_get(cand, "parent");
    for (int steps = 0; rc == 0 && json_is_integer(parent) && steps < 100000; steps++) {
        json_t *p = one_row(db, "SELECT seq, cand_id, rung, hash, parent, mutation, status, val_accuracy, params, "
                                "flops, latency_ms FROM nas_candidates WHERE run_id = ?1 AND cand_id = ?2 "
                                "ORDER BY seq LIMIT 1", id, json_integer_value(parent), &e);
        if (!p)
            break;
        json_array_append_new(lineage, p);
        parent = json_object_get(p, "parent");
        if (json_integer_value(parent) >= json_integer_value(json_object_get(p, "cand_id")))
            break; /* parents are asked before their children: anything else is a loop */
    }
    json_t *body = rc == 0 ? json_pack("{s:I, s:O, s:O}", "run_id", (json_int_t)id, "candidate", cand, "lineage",
                                       lineage)
                           : NULL;
    json_decref(cand);
    json_decref(lineage);
    return web_api_reply(rq, rc, body, &e);
}

/* ---- the Pareto front -------------------------------------------------------------------- */

/* The points a front is drawn from: finished candidates with an accuracy, one per strategy
 * candidate id (its longest evaluation, as the controller's top-k ranks them: an ASHA rung-0
 * result of a promoted candidate is not a separate architecture), leaving out hash-cache copies
 * (an earlier evaluation of the same genome is already a point). */
typedef struct pts {
    json_t *rows;
    double *acc, *params, *x;
    int n;
} pts_t;

static void pts_free(pts_t *p)
{
    json_decref(p->rows);
    free(p->acc);
    free(p->params);
    free(p->x);
}

static int load_points(sqlite3 *db, int64_t run, const char *xcol, pts_t *p, err_t *e)
{
    memset(p, 0, sizeof *p);
    sqlite3_stmt *st;
    int rc = prep(db,
                  "SELECT seq, cand_id, rung, hash, mutation, budget, val_accuracy, params, flops, latency_ms "
                  "FROM nas_candidates WHERE run_id = ? AND status = 'done' AND cached_from IS NULL "
                  "AND val_accuracy IS NOT NULL ORDER BY cand_id, budget DESC, seq DESC",
                  &st, e);
    if (rc < 0)
        return rc;
    sqlite3_bind_int64(st, 1, run);
    json_t *all = json_array();
    if (web_nas_rows_json(st, all, 0) < 0) {
        json_decref(all);
        return err_set(e, FN_EIO, "reading NAS candidates: %s", sqlite3_errmsg(db));
    }
    size_t cap = json_array_size(all) ? json_array_size(all) : 1;
    p->rows = json_array();
    p->acc = malloc(cap * sizeof *p->acc);
    p->params = malloc(cap * sizeof *p->params);
    p->x = malloc(cap * sizeof *p->x);
    if (!p->acc || !p->params || !p->x) {
        json_decref(all);
        pts_free(p);
        return err_set(e, FN_ENOMEM, "out of memory");
    }
    size_t i;
    json_t *row;
    json_int_t last = -1;
    json_array_foreach(all, i, row) {
        json_int_t cid = json_integer_value(json_object_get(row, "cand_id"));
        if (i > 0 && cid == last)
            continue;
        last = cid;
        json_t *xv = json_object_get(row, xcol);
        p->acc[p->n] = json_number_value(json_object_get(row, "val_accuracy"));
        p->params[p->n] = json_is_number(json_object_get(row, "params")) ? json_number_value(json_object_get(row, "params"))
                                                                        : NAN;
        p->x[p->n] = json_is_number(xv) ? json_number_value(xv) : NAN;
        json_array_append(p->rows, row);
        p->n++;
    }
    json_decref(all);
    return 0;
}

int web_api_nas_pareto(const web_req_t *rq)
{
    static const char *const names[] = {"x", NULL};
    int status = 500;
    int64_t id;
    if (web_api_run_id(rq, &id, &status) < 0)
        return status;
    if ((status = only_params(rq, names)) != 0)
        return status;
    char v[16];
    const char *xname = "params", *xcol = "params";
    int got = param(rq, "x", v, sizeof v);
    if (got != 0) {
        if (got > 0 && strcmp(v, "params") == 0)
            ;
        else if (got > 0 && strcmp(v, "flops") == 0)
            xname = xcol = "flops";
        else if (got > 0 && strcmp(v, "latency") == 0)
            xname = "latency", xcol = "latency_ms";
        else
            return web_send_error(rq, 400, "x must be params, flops or latency (the cost the front is drawn "
                                           "against; accuracy is always the other axis)");
    }
    store_t *s = web_api_store(rq, &status);
    if (!s)
        return status;
    sqlite3 *db = store_sqlite(s);
    err_t e = {0};
    pts_t p = {0};
    int rc = is_search(db, id, &e);
    if (rc == 0)
        rc = load_points(db, id, xcol, &p, &e);
    if (rc < 0)
        return web_api_reply(rq, rc, NULL, &e);
    int *front = calloc((size_t)(p.n ? p.n : 1), sizeof *front);
    if (!front) {
        pts_free(&p);
        return web_send_error(rq, 500, "out of memory");
    }
    web_nas_front(p.acc, p.x, p.n, front);
    json_t *points = json_array(), *fr = json_array();
    for (int i = 0; i < p.n; i++) {
        json_t *row = json_array_get(p.rows, (size_t)i);
        json_object_set_new(row, "x", isfinite(p.x[i]) ? json_real(p.x[i]) : json_null());
        json_object_set_new(row, "front", json_boolean(front[i]));
        json_array_append(points, row);
    }
    /* The front in order of cost, the order it is drawn in. */
    for (int k = 0; k < p.n; k++) {
        int best = -1;
        for (int i = 0; i < p.n; i++)
            if (front[i] == 1 && (best < 0 || p.x[i] < p.x[best] || (p.x[i] == p.x[best] && p.acc[i] > p.acc[best])))
                best = i;
        if (best < 0)
            break;
        front[best] = 2;
        json_array_append(fr, json_object_get(json_array_get(p.rows, (size_t)best), "seq"));
    }
    double hv = web_nas_hypervolume(p.acc, p.params, p.n);
    json_t *body = json_pack("{s:I, s:s, s:o, s:o, s:o, s:{s:f, s:f}}", "run_id", (json_int_t)id, "x", xname,
                             "points", points, "front", fr, "hypervolume", isfinite(hv) ? json_real(hv) : json_null(),
                             "hypervolume_reference", "error", 1.0, "params", 100000.0);
    free(front);
    pts_free(&p);
    return web_send_json(rq, 200, body);
}

/* ---- every search -------------------------------------------------------------------------- */

int web_api_nas_searches(const web_req_t *rq)
{
    static const char *const names[] = {NULL};
    int status = only_params(rq, names);
    if (status)
        return status;
    store_t *s = web_api_store(rq, &status);
    if (!s)
        return status;
    sqlite3 *db = store_sqlite(s);
    err_t e = {0};
    sqlite3_stmt *st;
    int rc = prep(db,
                  "SELECT n.run_id, e.name AS experiment, r.status, n.strategy, n.budget, n.workers, n.device, "
                  "r.started_at, r.ended_at, r.message, "
                  "(SELECT count(*) FROM nas_candidates c WHERE c.run_id = n.run_id) AS candidates, "
                  "(SELECT count(*) FROM nas_candidates c WHERE c.run_id = n.run_id AND c.status = 'done') AS done, "
                  "(SELECT count(*) FROM nas_candidates c WHERE c.run_id = n.run_id AND c.status = 'failed') AS failed, "
                  "(SELECT count(*) FROM nas_candidates c WHERE c.run_id = n.run_id AND c.status = 'running') AS running, "
                  "(SELECT total(budget) FROM nas_candidates c WHERE c.run_id = n.run_id AND c.status IN ('done', "
                  "'failed')) AS epochs_done, "
                  "(SELECT max(val_accuracy) FROM nas_candidates c WHERE c.run_id = n.run_id AND c.status = 'done') "
                  "AS best_val_accuracy "
                  "FROM nas_runs n JOIN runs r ON r.id = n.run_id JOIN experiments e ON e.id = r.experiment_id "
                  "ORDER BY n.run_id DESC",
                  &st, &e);
    json_t *rows = json_array();
    if (rc == 0 && web_nas_rows_json(st, rows, 0) < 0)
        rc = err_set(&e, FN_EIO, "reading NAS searches: %s", sqlite3_errmsg(db));
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        pts_t p;
        if (rc < 0 || (rc = load_points(db, json_integer_value(json_object_get(row, "run_id")), "params", &p, &e)) < 0)
            break;
        json_object_set_new(row, "hypervolume", json_real(web_nas_hypervolume(p.acc, p.params, p.n)));
        pts_free(&p);
    }
    if (rc < 0) {
        json_decref(rows);
        return web_api_reply(rq, rc, NULL, &e);
    }
    return web_send_json(rq, 200, rows);
}
