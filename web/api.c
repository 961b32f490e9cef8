/* api.c: the REST handlers. Each civetweb worker thread keeps one read-only store handle,
 * opened on its first request and closed when the thread ends (web_api_thread_exit), so a
 * request costs its queries, not an open. Every query runs in its own read transaction, so a
 * request always sees the latest committed round. The rounds of a run, which a live page and
 * scripts poll, are cached per thread as JSON text and reused while the store's
 * PRAGMA data_version says nothing was committed since. */
#include <civetweb.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/store.h"
#include "common/store_live.h"
#include "common/store_nas.h"
#include "web/web_internal.h"

int web_parse_u64(const char *s, size_t n, long long max, long long *out)
{
    if (!s || n == 0)
        return -1;
    unsigned long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        unsigned d = (unsigned)(s[i] - '0');
        if (d > (unsigned long long)max || v > ((unsigned long long)max - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = (long long)v;
    return 0;
}

/* The largest rounds list a web thread keeps for the next poll (a few hundred rounds), and the
 * size from which the pages of the list's JSON tree go back to the OS once it is freed: else each
 * of the 16 web threads' malloc arenas keeps the peak of the largest list it built, and the server
 * grows with its rounds (tests/bench/soak.sh: 10-16 KiB a round, the run page reloaded each minute). */
enum { WEB_ROUNDS_CACHE_MAX = 256 * 1024, WEB_ROUNDS_TRIM_MIN = 32 * 1024 };

static _Thread_local store_t *t_store;
static _Thread_local char *t_store_path;
static _Thread_local struct {
    int64_t run, version;
    long long since;
    char *text;
    size_t len;
} t_rounds;

void web_api_thread_exit(void)
{
    store_close(t_store);
    t_store = NULL;
    free(t_store_path);
    t_store_path = NULL;
    free(t_rounds.text);
    memset(&t_rounds, 0, sizeof t_rounds);
}

/* This thread's handle on the store, or a 503 answer: the server may not have created it yet. */
static store_t *open_store(const web_req_t *rq, int *status)
{
    if (t_store && strcmp(t_store_path, rq->db_path) == 0)
        return t_store;
    web_api_thread_exit(); /* another server's store (tests run several) */
    store_t *s = NULL;
    err_t e = {0};
    if (store_open(rq->db_path, 1, &s, &e) < 0) {
        *status = web_send_error(rq, 503, "%s", e.msg);
        return NULL;
    }
    t_store_path = strdup(rq->db_path);
    if (!t_store_path) {
        store_close(s);
        *status = web_send_error(rq, 500, "out of memory");
        return NULL;
    }
    t_store = s;
    return s;
}

/* Handles stay open for the thread; nothing to do per request. */
static void release_store(store_t *s)
{
    (void)s;
}

/* The {id} segment as a run id, or a 400 answer. */
static int run_id(const web_req_t *rq, int64_t *id, int *status)
{
    long long v;
    if (web_parse_u64(rq->id, rq->id_len, INT64_MAX, &v) < 0) {
        int n = rq->id_len > 40 ? 40 : (int)rq->id_len;
        *status = web_send_error(rq, 400, "run id \"%.*s%s\" is not a run number (digits only, 0..%lld)", n,
                                 rq->id ? rq->id : "", rq->id_len > 40 ? "..." : "", (long long)INT64_MAX);
        return -1;
    }
    *id = v;
    return 0;
}

static int reply(const web_req_t *rq, int rc, json_t *body, const err_t *e)
{
    if (rc == 0)
        return web_send_json(rq, 200, body);
    if (rc == FN_ENOTFOUND)
        return web_send_error(rq, 404, "%s", e->msg);
    log_warn("web: %s: %s", rq->path, e->msg);
    return web_send_error(rq, 500, "%s", e->msg);
}

/* A route that answers with one store query: the whole store, or one run (id from the path). */
static int serve_query(const web_req_t *rq, int (*query)(store_t *, json_t **, err_t *))
{
    int status = 500;
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *body = NULL;
    err_t e = {0};
    int rc = query(s, &body, &e);
    release_store(s);
    return reply(rq, rc, body, &e);
}

static int serve_run_query(const web_req_t *rq, int (*query)(store_t *, int64_t, json_t **, err_t *))
{
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *body = NULL;
    err_t e = {0};
    int rc = query(s, id, &body, &e);
    release_store(s);
    return reply(rq, rc, body, &e);
}

int web_api_healthz(const web_req_t *rq)
{
    return web_send_json(rq, 200, json_pack("{s:s}", "status", "ok"));
}

/* Runs whose server is gone show as "interrupted" (common/store_live.h); t_store_path is the store of
 * the handle the query runs on. */
static int runs_query(store_t *s, json_t **out, err_t *e)
{
    int rc = store_runs_json(s, out, e);
    if (rc == 0)
        store_live_mark_interrupted(s, t_store_path, *out);
    return rc;
}

static int run_query(store_t *s, int64_t id, json_t **out, err_t *e)
{
    int rc = store_run_json(s, id, out, e);
    if (rc == 0)
        store_live_mark_interrupted(s, t_store_path, *out);
    return rc;
}

int web_api_runs(const web_req_t *rq) { return serve_query(rq, runs_query); }

int web_api_run(const web_req_t *rq) { return serve_run_query(rq, run_query); }

static int nas_search_json(store_t *s, int64_t id, json_t **out, err_t *e) { return store_nas_json(s, id, -1, out, e); }

int web_api_nas(const web_req_t *rq) { return serve_run_query(rq, nas_search_json); }

int web_api_rounds(const web_req_t *rq)
{
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    long long since = 0;
    if (rq->query) {
        char v[24];
        int n = mg_get_var(rq->query, strlen(rq->query), "since", v, sizeof v);
        if (n == -2 || (n >= 0 && web_parse_u64(v, (size_t)n, INT_MAX, &since) < 0))
            return web_send_error(rq, 400, "since must be a round number (digits only, 0..%d)", INT_MAX);
    }
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    err_t e = {0};
    int64_t version = -1;
    if (store_data_version(s, &version, &e) == 0 && t_rounds.text && t_rounds.run == id && t_rounds.since == since &&
        t_rounds.version == version)
        return web_send(rq, 200, "application/json", t_rounds.text, t_rounds.len, "no-store", NULL);
    json_t *body = NULL;
    int rc = store_rounds_json(s, id, (int)since, &body, &e);
    release_store(s);
    if (rc < 0)
        return reply(rq, rc, body, &e);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return web_send_error(rq, 500, "cannot encode the rounds as JSON");
    size_t len = strlen(text);
#ifdef __GLIBC__
    if (len > WEB_ROUNDS_TRIM_MIN)
        malloc_trim(0); /* the tree is freed: its pages go back (see WEB_ROUNDS_TRIM_MIN) */
#endif
    if (len > WEB_ROUNDS_CACHE_MAX) {
        /* A long run's whole list (400 bytes a round) is not kept by every thread. */
        int st = web_send(rq, 200, "application/json", text, len, "no-store", NULL);
        free(text);
        return st;
    }
    free(t_rounds.text);
    t_rounds.text = text;
    t_rounds.len = len;
    t_rounds.run = id;
    t_rounds.since = since;
    t_rounds.version = version;
    return web_send(rq, 200, "application/json", text, t_rounds.len, "no-store", NULL);
}

int web_api_clients(const web_req_t *rq) { return serve_run_query(rq, store_clients_json); }

int web_api_not_found(const web_req_t *rq)
{
    return web_send_error(rq, 404, "no API endpoint %.200s; the API is described in /openapi.json", rq->path);
}

/* ---- more of the store ------------------------------------------------------------------- */

int web_api_experiments(const web_req_t *rq) { return serve_query(rq, store_experiments_json); }

/* Metric names are short identifiers; anything else is a 400, not an empty answer. */
static int valid_metric_name(const char *n, size_t len)
{
    if (len == 0 || len > 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((n[i] >= 'a' && n[i] <= 'z') || (n[i] >= 'A' && n[i] <= 'Z') || (n[i] >= '0' && n[i] <= '9') ||
              n[i] == '_' || n[i] == '.' || n[i] == '-'))
            return 0;
    return 1;
}

int web_api_metrics(const web_req_t *rq)
{
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    char name[80], v[32];
    const char *pname = NULL;
    long long since = 0;
    if (rq->query) {
        int n = mg_get_var(rq->query, strlen(rq->query), "name", name, sizeof name);
        if (n == -2 || (n >= 0 && !valid_metric_name(name, (size_t)n)))
            return web_send_error(rq, 400, "name must be a metric name (1..64 of letters, digits, '_', '.', '-')");
        if (n >= 0)
            pname = name;
        n = mg_get_var(rq->query, strlen(rq->query), "since", v, sizeof v);
        if (n == -2 || (n >= 0 && web_parse_u64(v, (size_t)n, INT_MAX, &since) < 0))
            return web_send_error(rq, 400, "since must be a round number (digits only, 0..%d)", INT_MAX);
    }
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *body = NULL;
    err_t e = {0};
    int rc = store_metrics_json(s, id, pname, (int)since, &body, &e);
    release_store(s);
    return reply(rq, rc, body, &e);
}

/* Epsilon spent per round (round_metrics "epsilon") and the run's dp block, if its config has one. */
int web_api_privacy(const web_req_t *rq)
{
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *run = NULL, *eps = NULL;
    err_t e = {0};
    int rc = store_run_json(s, id, &run, &e);
    if (rc == 0)
        rc = store_metrics_json(s, id, "epsilon", 0, &eps, &e);
    release_store(s);
    if (rc < 0) {
        json_decref(run);
        return reply(rq, rc, NULL, &e);
    }
    json_t *dp = json_object_get(json_object_get(run, "config"), "dp");
    json_t *series = json_array();
    size_t i;
    json_t *row;
    json_array_foreach(eps, i, row) {
        json_array_append_new(series, json_pack("{s:O, s:O}", "round", json_object_get(row, "round"), "epsilon",
                                                json_object_get(row, "value")));
    }
    json_t *last = json_array_get(series, json_array_size(series) - 1);
    json_t *body = json_pack("{s:I, s:O, s:O, s:O, s:O, s:o}", "run_id", (json_int_t)id, "dp", dp ? dp : json_null(),
                             "target_epsilon", dp ? json_object_get(dp, "target_epsilon") ?: json_null() : json_null(),
                             "delta", dp ? json_object_get(dp, "delta") ?: json_null() : json_null(), "epsilon",
                             last ? json_object_get(last, "epsilon") : json_null(), "rounds", series);
    json_decref(run);
    json_decref(eps);
    return web_send_json(rq, 200, body);
}

static void add_event(json_t *arr, double t, const char *type, json_t *fields)
{
    if (!json_is_number(json_object_get(fields, "time")))
        json_object_set_new(fields, "time", json_real(t));
    json_object_set_new(fields, "type", json_string(type));
    json_array_append_new(arr, fields);
}

static int by_time(const void *a, const void *b)
{
    double x = json_number_value(json_object_get(*(json_t *const *)a, "time"));
    double y = json_number_value(json_object_get(*(json_t *const *)b, "time"));
    return (x > y) - (x < y);
}

/* The run's history as events (the same kinds the WebSocket pushes), oldest first, rebuilt
 * from the store: run started, client joined, round finished, run finished or budget reached. */
int web_api_events(const web_req_t *rq)
{
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *run = NULL, *rounds = NULL, *clients = NULL;
    err_t e = {0};
    int rc = store_run_json(s, id, &run, &e);
    if (rc == 0)
        rc = store_rounds_json(s, id, 0, &rounds, &e);
    if (rc == 0)
        rc = store_clients_json(s, id, &clients, &e);
    release_store(s);
    if (rc < 0) {
        json_decref(run);
        json_decref(rounds);
        return reply(rq, rc, NULL, &e);
    }
    json_t *ev = json_array();
    add_event(ev, json_number_value(json_object_get(run, "started_at")), "run_started",
              json_pack("{s:I}", "run_id", (json_int_t)id));
    size_t i;
    json_t *row;
    json_array_foreach(clients, i, row) {
        add_event(ev, json_number_value(json_object_get(row, "joined_at")), "client_joined",
                  json_pack("{s:I, s:O, s:O}", "run_id", (json_int_t)id, "client_id", json_object_get(row, "client_id"),
                            "name", json_object_get(row, "name")));
    }
    json_array_foreach(rounds, i, row) {
        add_event(ev, json_number_value(json_object_get(row, "ended_at")), "round_finished",
                  json_pack("{s:I, s:O, s:O, s:O, s:O}", "run_id", (json_int_t)id, "round", json_object_get(row, "round"),
                            "test_accuracy", json_object_get(row, "test_accuracy"), "participants",
                            json_object_get(row, "participants"), "dropped", json_object_get(row, "dropped")));
    }
    const char *st = json_string_value(json_object_get(run, "status"));
    const char *msg = json_string_value(json_object_get(run, "message"));
    if (st && strcmp(st, "running") != 0) {
        int budget = msg && strstr(msg, "privacy budget");
        add_event(ev, json_number_value(json_object_get(run, "ended_at")), budget ? "budget_reached" : "run_finished",
                  json_pack("{s:I, s:s, s:s?}", "run_id", (json_int_t)id, "status", st, "message", msg));
    }
    /* Sort by time (stable enough: ties keep their kinds' order above). */
    size_t n = json_array_size(ev);
    json_t **items = malloc((n ? n : 1) * sizeof *items);
    for (i = 0; i < n; i++)
        items[i] = json_incref(json_array_get(ev, i));
    qsort(items, n, sizeof *items, by_time);
    json_array_clear(ev);
    for (i = 0; i < n; i++)
        json_array_append_new(ev, items[i]);
    free(items);
    json_decref(run);
    json_decref(rounds);
    json_decref(clients);
    return web_send_json(rq, 200, ev);
}

/* ---- CSV export --------------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_str(buf_t *b, const char *s)
{
    buf_add(b, s, strlen(s));
}

/* RFC 4180 quoting; a leading = + - @ is prefixed with ' so a spreadsheet never runs a client's
 * name as a formula. */
static void csv_field(buf_t *b, json_t *v)
{
    char num[64];
    if (json_is_integer(v)) {
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        buf_str(b, num);
    } else if (json_is_real(v)) {
        snprintf(num, sizeof num, "%.17g", json_real_value(v));
        buf_str(b, num);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        buf_str(b, "\"");
        if (strchr("=+-@", s[0]) && s[0])
            buf_str(b, "'");
        for (; *s; s++) {
            if (*s == '"')
                buf_str(b, "\"\"");
            else
                buf_add(b, s, 1);
        }
        buf_str(b, "\"");
    }
}

static int send_csv(const web_req_t *rq, json_t *rows, const char *const *cols, const char *filename)
{
    buf_t b = {0};
    for (size_t c = 0; cols[c]; c++) {
        buf_str(&b, c ? "," : "");
        buf_str(&b, cols[c]);
    }
    buf_str(&b, "\r\n");
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        for (size_t c = 0; cols[c]; c++) {
            buf_str(&b, c ? "," : "");
            csv_field(&b, json_object_get(row, cols[c]));
        }
        buf_str(&b, "\r\n");
    }
    json_decref(rows);
    if (!b.p)
        return web_send_error(rq, 500, "out of memory");
    char disp[160];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", filename);
    int rc = web_send_download(rq, "text/csv; charset=utf-8", b.p, b.len, disp);
    free(b.p);
    return rc;
}

int web_api_rounds_csv(const web_req_t *rq)
{
    static const char *const cols[] = {"round", "started_at", "ended_at", "duration", "selected", "participants",
                                       "dropped", "test_accuracy", "test_loss", "train_loss", "train_accuracy",
                                       "samples", "bytes_down", "bytes_up", NULL};
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *rows = NULL;
    err_t e = {0};
    int rc = store_rounds_json(s, id, 0, &rows, &e);
    release_store(s);
    if (rc < 0)
        return reply(rq, rc, NULL, &e);
    char name[64];
    snprintf(name, sizeof name, "run-%lld-rounds.csv", (long long)id);
    return send_csv(rq, rows, cols, name);
}

int web_api_clients_csv(const web_req_t *rq)
{
    static const char *const cols[] = {"client_id", "name", "status", "samples", "joined_at", "last_seen",
                                       "rounds_contributed", "bytes_up", "bytes_down", "last_latency", NULL};
    int status = 500;
    int64_t id;
    if (run_id(rq, &id, &status) < 0)
        return status;
    store_t *s = open_store(rq, &status);
    if (!s)
        return status;
    json_t *rows = NULL;
    err_t e = {0};
    int rc = store_clients_json(s, id, &rows, &e);
    release_store(s);
    if (rc < 0)
        return reply(rq, rc, NULL, &e);
    char name[64];
    snprintf(name, sizeof name, "run-%lld-clients.csv", (long long)id);
    return send_csv(rq, rows, cols, name);
}

/* ---- Prometheus ---------------------------------------------------------------------------- */

static void prom_label(buf_t *b, const char *v)
{
    for (; v && *v; v++) {
        if (*v == '\\' || *v == '"')
            buf_add(b, "\\", 1);
        if (*v == '\n')
            buf_str(b, "\\n");
        else
            buf_add(b, v, 1);
    }
}

int web_api_prometheus(const web_req_t *rq)
{
    buf_t b = {0};
    char line[256];
    err_t e = {0};
    json_t *sum = NULL;
    store_t *s = t_store && strcmp(t_store_path, rq->db_path) == 0 ? t_store : NULL;
    if (!s) { /* open_store would answer 503; /metrics reports fednas_store_up 0 instead */
        web_api_thread_exit();
        if (store_open(rq->db_path, 1, &s, &e) == 0 && (t_store_path = strdup(rq->db_path)) != NULL)
            t_store = s;
        else if (s) {
            store_close(s);
            s = NULL;
        }
    }
    if (s && store_summary_json(s, &sum, &e) < 0)
        log_warn("web: /metrics: %s", e.msg);
    if (sum)
        store_live_mark_summary(s, rq->db_path, sum);
    buf_str(&b, "# HELP fednas_store_up Whether the run store could be read.\n# TYPE fednas_store_up gauge\n");
    snprintf(line, sizeof line, "fednas_store_up %d\n", sum ? 1 : 0);
    buf_str(&b, line);
    if (sum) {
        static const char *const statuses[] = {"running", "done", "failed", "stopped", "interrupted"};
        json_t *by = json_object_get(sum, "runs_by_status");
        buf_str(&b, "# HELP fednas_runs Runs in the store by status.\n# TYPE fednas_runs gauge\n");
        for (size_t i = 0; i < 5; i++) {
            snprintf(line, sizeof line, "fednas_runs{status=\"%s\"} %lld\n", statuses[i],
                     (long long)json_integer_value(json_object_get(by, statuses[i])));
            buf_str(&b, line);
        }
        buf_str(&b, "# HELP fednas_rounds_total Rounds committed in the store.\n# TYPE fednas_rounds_total counter\n");
        snprintf(line, sizeof line, "fednas_rounds_total %lld\n",
                 (long long)json_integer_value(json_object_get(sum, "rounds_total")));
        buf_str(&b, line);
        buf_str(&b, "# HELP fednas_run_last_accuracy Test accuracy of the latest round of each running run.\n"
                    "# TYPE fednas_run_last_accuracy gauge\n");
        size_t i;
        json_t *row;
        json_array_foreach(json_object_get(sum, "running"), i, row) {
            json_t *acc = json_object_get(row, "last_accuracy");
            if (!json_is_number(acc))
                continue;
            snprintf(line, sizeof line, "fednas_run_last_accuracy{run=\"%lld\",experiment=\"",
                     (long long)json_integer_value(json_object_get(row, "id")));
            buf_str(&b, line);
            prom_label(&b, json_string_value(json_object_get(row, "experiment")));
            snprintf(line, sizeof line, "\"} %.17g\n", json_number_value(acc));
            buf_str(&b, line);
        }
        json_decref(sum);
    }
    unsigned long long counts[6];
    web_request_counts(rq->w, counts);
    buf_str(&b, "# HELP fednas_http_requests_total HTTP requests answered by this dashboard, by status class.\n"
                "# TYPE fednas_http_requests_total counter\n");
    for (int c = 1; c <= 5; c++) {
        snprintf(line, sizeof line, "fednas_http_requests_total{code=\"%dxx\"} %llu\n", c, counts[c]);
        buf_str(&b, line);
    }
    if (!b.p)
        return web_send_error(rq, 500, "out of memory");
    int rc = web_send(rq, 200, "text/plain; version=0.0.4; charset=utf-8", b.p, b.len, "no-store", NULL);
    free(b.p);
    return rc;
}

/* ---- for api_nas.c: the same store handle, id parsing, answers and CSV writer --------------- */

store_t *web_api_store(const web_req_t *rq, int *status) { return open_store(rq, status); }

int web_api_run_id(const web_req_t *rq, int64_t *id, int *status) { return run_id(rq, id, status); }

int web_api_reply(const web_req_t *rq, int rc, json_t *body, const err_t *e) { return reply(rq, rc, body, e); }

int web_api_send_csv(const web_req_t *rq, json_t *rows, const char *const *cols, const char *filename)
{
    return send_csv(rq, rows, cols, filename);
}
